/*
 * The VXLAN underlay's receive socket (native/udp.c) under the read loop's fair
 * share (fair.c): a flood from the underlay is read one quantum per round, like a
 * port's, so it cannot starve the local ports. The socket lives in a namespace of
 * the test's own (a node child under `ip netns exec`, loading the built addon),
 * which queues a backlog of datagrams to itself on its loopback before it starts
 * reading, then reports the size of every batch the loop handed it; with the frame
 * share too (a quantum of datagrams; a UDP GRO burst counts as its segments).
 */
import { describe, expect, it } from 'vitest';
import { FAIR_FRAME_COST, FAIR_QUANTUM_DEFAULT } from './index.js';
import { childNs } from './test-env.js';

const NS = childNs('ndu');
/** The sender's own (queueIp3, flushIp). */
const NSQ = childNs('nduq');

/** In NS: `count` datagrams of `size` bytes queued to an underlay socket, then read with quantum `q`. */
async function drain(count: number, size: number, q: number, frames = false): Promise<{ batches: number[]; full: number; got: number }> {
  const script = `
    const dgram = require('node:dgram');
    const [count, size, q, frames] = process.argv.slice(2).map(Number);
    const [h] = nd.openUdp(0x7f000001, 4789, '');
    nd.setQuantum(h, q, frames === 1);
    const tx = dgram.createSocket('udp4');
    const payload = Buffer.alloc(size, 0xab);
    let queued = 0;
    const batches = [];
    let got = 0;
    const done = () => {
      console.log(JSON.stringify({ batches, full: nd.fairFull(h), got }));
      process.exit(0);
    };
    const go = () => nd.start(h, (n) => {
      if (n < 0) { console.log(JSON.stringify({ error: n })); process.exit(1); }
      batches.push(n);
      got += n;
      if (got >= count) done();
    });
    for (let i = 0; i < count; i++) tx.send(payload, 4789, '127.0.0.1', () => { if (++queued === count) go(); });
    setTimeout(done, 8000);
  `;
  return NS.run(script, [String(count), String(size), String(q), frames ? '1' : '0']);
}

/**
 * In NS, with UDP GRO on: `bursts` UDP GSO datagrams of `segs` segments of 1000 bytes
 * queued to an underlay socket, then read with a frame quantum of `q`.
 */
async function groDrain(bursts: number, segs: number, q: number): Promise<{ batches: number[]; full: number; got: number; bursts: number }> {
  const script = `
    const { execFileSync } = require('node:child_process');
    const [bursts, segs, q] = process.argv.slice(2).map(Number);
    const [h] = nd.openUdp(0x7f000001, 4789, '');
    if (!nd.setUdpGro(h, true)) { console.log(JSON.stringify({ error: 'refused' })); process.exit(1); }
    nd.setQuantum(h, q, true);
    const py = 'import socket, sys\\n' +
      'b, n = map(int, sys.argv[1:])\\n' +
      's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\\n' +
      's.setsockopt(socket.SOL_UDP, 103, 1000)\\n' +
      'for _ in range(b): s.sendto(bytes(1000 * n), ("127.0.0.1", 4789))\\n';
    execFileSync('python3', ['-c', py, String(bursts), String(segs)]);
    const s0 = nd.stats();
    const batches = [];
    let got = 0;
    const done = () => {
      console.log(JSON.stringify({ batches, full: nd.fairFull(h), got, bursts: nd.stats().udpGroBursts - s0.udpGroBursts }));
      process.exit(0);
    };
    nd.start(h, (n) => {
      if (n < 0) { console.log(JSON.stringify({ error: n })); process.exit(1); }
      batches.push(n);
      got += n;
      if (got >= bursts * segs) done();
    });
    setTimeout(done, 8000);
  `;
  return NS.run(script, [String(bursts), String(segs), String(q)]);
}

describe('the underlay socket takes its fair share of the read loop', () => {
  it('reads a backlog one quantum per round, not until the socket is empty', async () => {
    const size = 1400;
    const r = await drain(2000, size, FAIR_QUANTUM_DEFAULT);
    expect(r.got).toBe(2000);
    // Each round reads while the budget is positive; recvmmsg asks for at most
    // ceil(budget / FAIR_FRAME_COST) datagrams, so a round overshoots by less than that.
    const perRound = Math.ceil(FAIR_QUANTUM_DEFAULT / FAIR_FRAME_COST);
    expect(Math.max(...r.batches)).toBeLessThanOrEqual(perRound);
    expect(Math.max(...r.batches)).toBeGreaterThanOrEqual(Math.floor(FAIR_QUANTUM_DEFAULT / (size + FAIR_FRAME_COST)));
    expect(r.full, 'services that left datagrams for a later round').toBeGreaterThan(10);
    // Quantum 0: no limit, the loop drains the socket (up to the ring's 256 frames) as before.
    const off = await drain(2000, size, 0);
    expect(off.got).toBe(2000);
    expect(Math.max(...off.batches)).toBeGreaterThan(perRound * 4);
  }, 60_000);
});

describe('the underlay socket under the frame share (readShare: frames)', () => {
  it('reads a backlog exactly its quantum of datagrams per round, whatever their size', async () => {
    const r = await drain(500, 1400, 10, true);
    expect(r.got).toBe(500);
    // recvmmsg asks for no more than the frames left: every service reads exactly 10.
    expect(new Set(r.batches)).toEqual(new Set([10]));
    expect(r.full).toBeGreaterThanOrEqual(49);
  }, 60_000);

  it('a UDP GRO burst counts as its segments: a quantum of 32 takes about 32 packets a round', async () => {
    const bursts = 30, segs = 20;
    const g = await groDrain(bursts, segs, 32);
    expect(g.bursts, 'read as GRO bursts').toBeGreaterThan(0);
    expect(g.got).toBe(bursts * segs);
    // A read takes whole bursts (up to 4 a batch: the ring's room), so a round may
    // overshoot; the debt in segments then skips rounds. Services that left packets
    // waiting therefore count ~ packets / 32, far more than the batches read: with a
    // burst charged once (as bytes do) no round would be skipped and they would be
    // about as many as the batches.
    expect(g.full).toBeGreaterThanOrEqual(Math.floor((bursts * segs) / 32) - 3);
    expect(g.full).toBeGreaterThan(g.batches.length + 3);
    expect(Math.max(...g.batches)).toBeLessThanOrEqual(4 * segs);
  }, 60_000);
});

describe('the underlay sender queues complete packets and sends them in batches', () => {
  it('queueIp3 holds packets until flushIp (or 64 are queued), then sends them all, in order', async () => {
    const script = `
      const [rx] = nd.openUdp(0x7f000001, 4789, '');
      const [tx] = nd.openRawIp('');
      const ring = nd.ring();
      const got = [];
      nd.start(rx, (n) => { for (let i = 0; i < n; i++) got.push(ring.arena.readUInt32BE(ring.offs[i])); });
      // Outer IPv4 + UDP to 127.0.0.1:4789 (DF, UDP checksum 0), then a 4-byte sequence number in two pieces.
      const hdr = Buffer.alloc(28);
      hdr[0] = 0x45; hdr.writeUInt16BE(32, 2); hdr.writeUInt16BE(0x4000, 6); hdr[8] = 64; hdr[9] = 17;
      hdr.writeUInt32BE(0x7f000001, 12); hdr.writeUInt32BE(0x7f000001, 16);
      hdr.writeUInt16BE(50000, 20); hdr.writeUInt16BE(4789, 22); hdr.writeUInt16BE(12, 24);
      const body = Buffer.alloc(4);
      const before = nd.stats();
      const queued = [];
      const send = (i) => { body.writeUInt32BE(i); queued.push(nd.queueIp3(tx, 0x7f000001, hdr, 0, 28, body, 0, 2, body, 2, 2)); };
      for (let i = 0; i < 10; i++) send(i);
      setTimeout(() => {
        const early = got.length;
        const flushed = nd.flushIp();
        for (let i = 10; i < 80; i++) send(i); // the 64th fills the queue: sent at once
        setTimeout(() => {
          const mid = got.length;
          nd.flushIp();
          setTimeout(() => {
            const after = nd.stats();
            console.log(JSON.stringify({ early, flushed, mid, got, queued: queued.every((q) => q === 32),
              nQueued: after.vxlanTxQueued - before.vxlanTxQueued, batches: after.vxlanTxBatches - before.vxlanTxBatches,
              errors: after.vxlanTxQueueErrors - before.vxlanTxQueueErrors }));
            process.exit(0);
          }, 200);
        }, 200);
      }, 200);
    `;
    const r = await NSQ.run<Record<string, unknown>>(script, []);
    expect(r.queued).toBe(true);
    expect(r.early, 'nothing leaves before the flush').toBe(0);
    expect(r.flushed).toBe(10);
    expect(r.mid, 'a full queue (64) goes out at once').toBe(10 + 64);
    expect(r.got).toEqual([...Array(80).keys()]);
    expect([r.nQueued, r.batches, r.errors]).toEqual([80, 3, 0]);
  }, 30_000);
});
