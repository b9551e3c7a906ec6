/*
 * The TCP engine's frame blocks, pool and send queue, alone: no socket, no
 * engine. Reads are simulated as `onread` does them (target(), fill, commit(n)),
 * 'data' chunks with append(); a model byte array says what the queue must hold.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  BLOCK_DATA, BLOCK_HDR, BLOCK_SMALL, Block, BlockPool, POOL_LARGE, POOL_SMALL, SendQueue, TCP_IP_HLEN,
} from './tcp-queue.js';
import { IP4_MAX_LEN } from '@vswitch/switch';
import { HOST_HEADROOM } from './types.js';

const MSS = 1460;

/** A read of `data` into the queue's target, as onread does; returns the bytes taken (at most the target's room). */
function read(q: SendQueue, data: Uint8Array): number {
  const t = q.target();
  const n = Math.min(t.length, data.length);
  t.set(data.subarray(0, n));
  q.commit(n);
  return n;
}

function bytes(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

function contents(q: SendQueue): Uint8Array {
  const out = Buffer.alloc(q.bytes);
  if (q.bytes > 0) q.copy(0, q.bytes, out, 0);
  return Uint8Array.from(out);
}

describe('layout', () => {
  it('leaves room for the virtio_net_hdr, Ethernet, IP (IPv6: the longer) and TCP headers before a block payload', () => {
    expect(TCP_IP_HLEN).toBe(40);
    expect(BLOCK_HDR).toBe(HOST_HEADROOM + 60);
    expect(BLOCK_DATA).toBe(IP4_MAX_LEN - 40);
  });
});

describe('BlockPool', () => {
  it('allocates (counted) when empty, then hands back the same blocks', () => {
    const ctr = { blocks: 0 };
    const pool = new BlockPool(ctr);
    const a = pool.take(true);
    const b = pool.take(false);
    expect(ctr.blocks).toBe(2);
    expect([a.large, a.pooled, a.start, a.buf.length]).toEqual([true, true, BLOCK_HDR, BLOCK_HDR + BLOCK_DATA]);
    expect([b.large, b.pooled, b.start, b.buf.length]).toEqual([false, true, BLOCK_HDR, BLOCK_SMALL]);
    pool.give(a);
    pool.give(b);
    expect(pool.take(true)).toBe(a);
    expect(pool.take(false)).toBe(b);
    expect(ctr.blocks).toBe(2);
  });

  it('keeps at most POOL_LARGE / POOL_SMALL free blocks', () => {
    const ctr = { blocks: 0 };
    const pool = new BlockPool(ctr);
    const small = Array.from({ length: POOL_SMALL + 5 }, () => pool.take(false));
    for (const b of small) pool.give(b);
    const again = Array.from({ length: POOL_SMALL + 5 }, () => pool.take(false));
    expect(ctr.blocks).toBe(2 * (POOL_SMALL + 5) - POOL_SMALL);
    expect(new Set(again).size).toBe(POOL_SMALL + 5);
    expect(POOL_LARGE).toBeLessThan(POOL_SMALL);
  });

  it('trim lets go of the blocks that stayed free since the last trim', () => {
    const ctr = { blocks: 0 };
    const pool = new BlockPool(ctr);
    const bs = [pool.take(false), pool.take(false), pool.take(false)];
    for (const b of bs) pool.give(b);
    pool.trim(); // the low-water mark starts at 0: nothing known unused yet
    pool.take(false); // 2 of 3 stayed free since
    pool.trim(); // ... and go
    pool.take(false); // so this one is new
    expect(ctr.blocks).toBe(4);
  });
});

describe('SendQueue (onread)', () => {
  it('reads into a small block first, its cap a multiple of the MSS, at the payload offset', () => {
    const q = new SendQueue(new BlockPool({ blocks: 0 }), MSS);
    const t = q.target();
    const smallCap = Math.floor((BLOCK_SMALL - BLOCK_HDR) / MSS) * MSS;
    expect(t.length).toBe(smallCap);
    expect(t.byteOffset - (q.blocks[0] as Block).buf.byteOffset).toBe(BLOCK_HDR);
    t.set(bytes(100));
    q.commit(100);
    expect(q.bytes).toBe(100);
    expect(q.seek(0)).toBe(100);
    expect(q.curOff).toBe(0);
    expect(q.curBlock.large).toBe(false);
    expect(contents(q)).toEqual(bytes(100));
  });

  it('a read that fills its target moves the next to a large block; a short one keeps filling', () => {
    const q = new SendQueue(new BlockPool({ blocks: 0 }), MSS);
    const first = q.target().length;
    expect(read(q, bytes(first))).toBe(first);
    const t = q.target();
    expect(q.blocks.length).toBe(2);
    expect((q.blocks[1] as Block).large).toBe(true);
    expect(t.length).toBe(Math.floor(BLOCK_DATA / MSS) * MSS);
    read(q, bytes(5000, 2));
    expect(q.target().length).toBe(t.length - 5000); // same block, more room than an MSS
    expect(q.blocks.length).toBe(2);
  });

  it('a trickle into a large block with nothing else queued goes back to small blocks', () => {
    const q = new SendQueue(new BlockPool({ blocks: 0 }), MSS);
    read(q, bytes(q.target().length));
    q.target();
    q.consume(q.bytes); // the VM took everything
    read(q, bytes(10)); // a short read into the large block, alone in the queue
    q.target();
    expect((q.blocks[q.blocks.length - 1] as Block).large).toBe(false);
  });

  it('seek gives the bytes left in the block at a position; copy crosses blocks', () => {
    const q = new SendQueue(new BlockPool({ blocks: 0 }), MSS);
    const first = q.target().length;
    const data = bytes(first + 3000, 7);
    read(q, data);
    read(q, data.subarray(first));
    expect(q.bytes).toBe(first + 3000);
    expect(q.seek(0)).toBe(first);
    expect(q.seek(first - 10)).toBe(10);
    expect(q.seek(first)).toBe(3000);
    expect(q.curOff).toBe(0);
    expect(q.seek(first + 1000)).toBe(2000); // forward from the cursor
    expect(q.seek(5)).toBe(first - 5); // back: rewinds
    const out = Buffer.alloc(200);
    q.copy(first - 100, 200, out, 0);
    expect(out).toEqual(Buffer.from(data.subarray(first - 100, first + 100)));
  });

  it('consume gives finished blocks back to the pool, never the one being read into', () => {
    const ctr = { blocks: 0 };
    const pool = new BlockPool(ctr);
    const q = new SendQueue(pool, MSS);
    const first = q.target().length;
    read(q, bytes(first));
    read(q, bytes(100));
    const smallBlock = q.blocks[0];
    q.consume(first);
    expect(q.bytes).toBe(100);
    expect(pool.take(false)).toBe(smallBlock); // back in the pool
    q.consume(100);
    expect(q.bytes).toBe(0);
    expect(q.blocks.length - q.head).toBe(1); // the read block stays
    read(q, bytes(50));
    expect(contents(q)).toEqual(bytes(50));
  });

  it('clear gives every pooled block back and forgets the read block', () => {
    const ctr = { blocks: 0 };
    const pool = new BlockPool(ctr);
    const q = new SendQueue(pool, MSS);
    read(q, bytes(q.target().length));
    read(q, bytes(10));
    q.clear();
    expect([q.bytes, q.blocks.length, q.head, q.headOff]).toEqual([0, 0, 0, 0]);
    const n = ctr.blocks;
    pool.take(true);
    pool.take(false);
    expect(ctr.blocks).toBe(n);
    expect(q.target().length).toBeGreaterThan(0); // starts over with a small block
  });

  it('a new MSS sizes the blocks that follow', () => {
    const q = new SendQueue(new BlockPool({ blocks: 0 }), MSS);
    q.mss = 1000;
    expect(q.target().length).toBe(Math.floor((BLOCK_SMALL - BLOCK_HDR) / 1000) * 1000);
  });
});

describe('SendQueue (data chunks)', () => {
  it('queues chunks as they are and copies frames across them', () => {
    const q = new SendQueue(new BlockPool({ blocks: 0 }), MSS);
    const a = Buffer.from(bytes(700, 3));
    const b = Buffer.from(bytes(900, 4));
    q.append(a);
    q.append(Buffer.alloc(0)); // nothing
    q.append(b);
    expect(q.bytes).toBe(1600);
    expect(q.blocks.length).toBe(2);
    expect(q.seek(0)).toBe(700);
    expect(q.curBlock.pooled).toBe(false);
    expect(contents(q)).toEqual(Uint8Array.from(Buffer.concat([a, b])));
    q.consume(750);
    expect(contents(q)).toEqual(Uint8Array.from(b.subarray(50)));
  });

  it('compacts its block list now and then under many small chunks', () => {
    const q = new SendQueue(new BlockPool({ blocks: 0 }), MSS);
    const all: Buffer[] = [];
    for (let i = 0; i < 200; i++) {
      const c = Buffer.from(bytes(10, i));
      all.push(c);
      q.append(c);
      if (i % 2 === 1) q.consume(10);
    }
    expect(q.bytes).toBe(1000);
    expect(q.blocks.length).toBeLessThan(200);
    expect(contents(q)).toEqual(Uint8Array.from(Buffer.concat(all.slice(100))));
  });
});

describe('SendQueue against a model', () => {
  it('holds exactly the bytes read and not yet consumed, whatever reads, consumes and seeks come', () => {
    const op = fc.oneof(
      fc.record({ k: fc.constant('read' as const), n: fc.integer({ min: 1, max: 70_000 }) }),
      fc.record({ k: fc.constant('chunk' as const), n: fc.integer({ min: 1, max: 5000 }) }),
      fc.record({ k: fc.constant('consume' as const), f: fc.double({ min: 0, max: 1, noNaN: true }) }),
      fc.record({ k: fc.constant('seek' as const), f: fc.double({ min: 0, max: 1, noNaN: true }) }),
    );
    const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(a, b) === 0;
    fc.assert(fc.property(fc.array(op, { maxLength: 40 }), fc.integer({ min: 64, max: 9000 }), (ops, mss) => {
      const pool = new BlockPool({ blocks: 0 });
      const q = new SendQueue(pool, mss);
      // The model: what was queued and not consumed is model[from, to).
      const model = new Uint8Array(40 * 70_000);
      let from = 0;
      let to = 0;
      let seed = 0;
      let onread = true; // a socket is either onread or 'data', never both
      for (const o of ops) {
        if (o.k === 'read' && onread) {
          const d = bytes(o.n, ++seed);
          const n = read(q, d);
          model.set(d.subarray(0, n), to);
          to += n;
        } else if (o.k === 'chunk' && (!onread || to === from)) {
          onread = false;
          const d = Buffer.from(bytes(o.n, ++seed));
          q.append(d);
          model.set(d, to);
          to += d.length;
        } else if (o.k === 'consume') {
          const n = Math.floor(o.f * (to - from));
          q.consume(n);
          from += n;
        } else if (o.k === 'seek' && to > from) {
          const pos = Math.min(to - from - 1, Math.floor(o.f * (to - from)));
          const left = q.seek(pos);
          expect(left).toBeGreaterThan(0);
          expect(pos + left).toBeLessThanOrEqual(to - from);
          const blk = q.curBlock;
          const at = blk.start + q.curOff;
          expect(same(blk.buf.subarray(at, at + left), model.subarray(from + pos, from + pos + left))).toBe(true);
        }
        expect(q.bytes).toBe(to - from);
      }
      expect(same(contents(q), model.subarray(from, to))).toBe(true);
      q.clear();
      expect(q.bytes).toBe(0);
    }), { numRuns: 100 });
  }, 60_000);
});
