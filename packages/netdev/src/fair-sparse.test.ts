/*
 * Sparse-first service (native/addon.c sparse_first, setSparse): two real UDP sockets
 * on the loopback of a namespace of the test's own (a node child under `ip netns
 * exec`, loading the built addon), both with a frame quantum of 4: A has a backlog of
 * 200 datagrams (a flooder), and A's batch callbacks send datagrams to B (a connected
 * socket: the send is synchronous, so B becomes readable during A's service). The
 * child numbers the loop turns (a setImmediate chain: one check phase per turn) and
 * reports every batch as [port, frames, turn]. Structure only, no clock: the order in
 * which the batches reached JS, and how many frames each port got per turn.
 */
import { describe, expect, it } from 'vitest';
import { childNs } from './test-env.js';

const NS = childNs('nds');
const Q = 4;
const FLOOD = 200;

type Batch = [port: 'A' | 'B', frames: number, turn: number];

/** `burst` datagrams to B from A's batches number 1, 4, 7, ... (1-based), up to 10 times. */
async function run(sparse: boolean, burst: number): Promise<{ log: Batch[]; sparseFirst: number }> {
  const script = `
    const dgram = require('node:dgram');
    const [sparse, burst, q, flood] = process.argv.slice(2).map(Number);
    const [a] = nd.openUdp(0x7f000001, 4789, '');
    const [b] = nd.openUdp(0x7f000001, 4790, '');
    for (const h of [a, b]) {
      nd.setQuantum(h, q, true);
      if (sparse && !nd.setSparse(h, true)) { console.log(JSON.stringify({ error: 'setSparse refused' })); process.exit(1); }
    }
    const tx = dgram.createSocket('udp4');
    const toB = dgram.createSocket('udp4');
    const payload = Buffer.alloc(100, 0xab);
    let turn = 0;
    const tick = () => { turn++; setImmediate(tick); };
    const log = [];
    let gotA = 0, gotB = 0, batchesA = 0, sentB = 0;
    const s0 = nd.stats().rxSparseFirst;
    const done = () => {
      console.log(JSON.stringify({ log, sparseFirst: nd.stats().rxSparseFirst - s0 }));
      process.exit(0);
    };
    const check = () => { if (gotA === flood && gotB === sentB) done(); };
    const go = () => {
      nd.start(a, (n) => {
        if (n < 0) { console.log(JSON.stringify({ error: n })); process.exit(1); }
        log.push(['A', n, turn]);
        gotA += n;
        batchesA++;
        if (batchesA % 3 === 1 && batchesA <= 28) {
          for (let i = 0; i < burst; i++) toB.send(payload);
          sentB += burst;
        }
        check();
      });
      nd.start(b, (n) => {
        if (n < 0) { console.log(JSON.stringify({ error: n })); process.exit(1); }
        log.push(['B', n, turn]);
        gotB += n;
        check();
      });
      tick();
    };
    let queued = 0;
    toB.connect(4790, '127.0.0.1', () => {
      for (let i = 0; i < flood; i++) tx.send(payload, 4789, '127.0.0.1', () => { if (++queued === flood) go(); });
    });
    setTimeout(() => { console.log(JSON.stringify({ error: 'timeout', log })); process.exit(1); }, 8000);
  `;
  return NS.run(script, [sparse ? '1' : '0', String(burst), String(Q), String(FLOOD)]);
}

/** For each of B's first batches after a send, how many of A's batches reached JS between the sending batch and it. */
function aBetween(log: Batch[]): number[] {
  const out: number[] = [];
  let aCount = 0;
  let sentAt = -1;
  for (const [port] of log) {
    if (port === 'A') {
      aCount++;
      if (aCount % 3 === 1 && aCount <= 28) sentAt = aCount;
    } else if (sentAt >= 0) {
      out.push(aCount - sentAt);
      sentAt = -1;
    }
  }
  return out;
}

/** Frames per turn of one port (turns in which it had any). */
function perTurn(log: Batch[], port: 'A' | 'B'): Map<number, number> {
  const m = new Map<number, number>();
  for (const [p, n, t] of log) if (p === port) m.set(t, (m.get(t) ?? 0) + n);
  return m;
}

describe('sparse-first service (setSparse)', () => {
  it('a port that turns readable beside a backlogged flooder reaches JS before the flooder\'s next batch', async () => {
    const on = await run(true, 1);
    const gaps = aBetween(on.log);
    expect(gaps).toHaveLength(10);
    // Each of B's datagrams is handed to JS before any further batch of A's: served
    // ahead of A's own service in the next turn.
    expect(gaps.every((g) => g === 0), `A batches between a send and B's batch: ${gaps.join(',')}`).toBe(true);
    expect(on.sparseFirst).toBeGreaterThanOrEqual(10);
    // Without it, libuv's epoll order serves A's 4 frames first in that turn.
    const off = await run(false, 1);
    const offGaps = aBetween(off.log);
    expect(offGaps).toHaveLength(10);
    expect(offGaps.some((g) => g > 0), `A batches between a send and B's batch: ${offGaps.join(',')}`).toBe(true);
    expect(off.sparseFirst).toBe(0);
  }, 60_000);

  it('the flooder still gets its quantum every turn, including the turns B was served first', async () => {
    const on = await run(true, 1);
    const a = perTurn(on.log, 'A');
    const aBatches = on.log.filter(([p]) => p === 'A').map(([, n]) => n);
    expect(aBatches.reduce((x, y) => x + y, 0)).toBe(FLOOD);
    expect(aBatches.length).toBe(FLOOD / Q);
    expect(aBatches.every((n) => n === Q)).toBe(true);
    // One batch of 4 per turn from A's first to its last: no turn skipped, none doubled.
    const turns = [...a.keys()];
    expect([...a.values()].every((n) => n === Q)).toBe(true);
    expect(turns.at(-1)! - turns[0] + 1).toBe(FLOOD / Q);
  }, 60_000);

  it('a sparse port gets one quantum ahead, then waits its turn like any backlogged port', async () => {
    const on = await run(true, 10); // 10 datagrams to B at once: more than its quantum of 4
    const b = perTurn(on.log, 'B');
    expect([...b.values()].reduce((x, y) => x + y, 0)).toBe(100);
    // Never two quanta in one turn: the early service and its own poll do not add up.
    expect(Math.max(...b.values()), `B frames per turn: ${[...b.values()].join(',')}`).toBeLessThanOrEqual(Q);
    const a = perTurn(on.log, 'A');
    expect([...a.values()].every((n) => n === Q)).toBe(true);
    // Its first 4 come ahead of A's next batch; once backlogged it is not served
    // early again while it stays so: fewer early services than B's batches.
    expect(on.log[1]).toEqual(['B', Q, 2]);
    expect(on.log[2]).toEqual(['A', Q, 2]);
    const bBatches = on.log.filter(([p]) => p === 'B').length;
    expect(on.sparseFirst).toBeGreaterThanOrEqual(1);
    expect(on.sparseFirst).toBeLessThan(bBatches / 2);
  }, 60_000);
});
