/*
 * What a per-packet session lookup costs, measured before choosing the table's
 * structure; table.ts's header has the figures and the decision (no lru-cache).
 *   npx vitest bench --project unit --run packages/nat/src/napt/lookup.bench.ts
 * 100,000 entries; each bench iteration does LOOKUPS random hit lookups over 2^20
 * probes (cold caches), so one lookup costs the reported mean / LOOKUPS. Two
 * figures are printed instead of benched, because each needs its own set-up:
 * expire(now) removing 1% of a 100,000-session table whose every entry is due for
 * a look at once (the worst case), and the heap growth per translated packet pair
 * of an established session (0 bytes means the translate path allocates nothing).
 * Not part of `vitest run`: the unit project only collects *.test.ts.
 */
import { getHeapStatistics } from 'node:v8';
import { LRUCache } from 'lru-cache';
import { bench, describe } from 'vitest';
import { DIR_OUT, NaptTable } from './table.js';
import { Napt } from './translate.js';

const N = 100_000;
const LOOKUPS = 1000;
const BASE_IP = 0x0a000000; // 10.0.0.0
const REMOTE = 0xc6336407; // 198.51.100.7

interface Entry { ip: number; port: number; hits: number }

// N inside endpoints: 400 hosts x 250 ports.
const ips = new Int32Array(N);
const ports = new Int32Array(N);
for (let i = 0; i < N; i++) {
  ips[i] = BASE_IP + Math.floor(i / 250) + 1;
  ports[i] = 1024 + (i % 250);
}
// A fixed random probe order, so every variant does the same work.
const order = new Int32Array(1 << 20); // far larger than the caches: every lookup is a cold one
let x = 0x2545f491;
for (let i = 0; i < order.length; i++) {
  x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
  order[i] = (x >>> 0) % N;
}
let cursor = 0;
const next = (): number => {
  const i = order[cursor];
  cursor = cursor + 1 === order.length ? 0 : cursor + 1;
  return i;
};

// A Smi key that is unique here: 400 hosts fit in 9 bits above a 16-bit port.
const smiKey = (i: number): number => ((ips[i] - BASE_IP) << 16) | ports[i];
// The composed key one would write first: 48 bits, a double, not a small integer.
const wideKey = (i: number): number => ips[i] * 65536 + ports[i];

const bySmi = new Map<number, Entry>();
const byWide = new Map<number, Entry>();
const lru = new LRUCache<number, Entry>({ max: N });
for (let i = 0; i < N; i++) {
  const e = { ip: ips[i], port: ports[i], hits: 0 };
  bySmi.set(smiKey(i), e);
  byWide.set(wideKey(i), e);
  lru.set(smiKey(i), e);
}

const table = new NaptTable({ seed: 1, maxSessions: N, maxSessionsPerHost: N });
const publicPorts = new Int32Array(N);
for (let i = 0; i < N; i++) {
  // Two sessions per mapping (two remote ports) keep the mappings within one protocol's 64,512 ports.
  const s = table.open(17, ips[i], ports[i] & ~1, REMOTE, 53 + (ports[i] & 1), 0);
  if (typeof s === 'string') throw new Error(s);
  table.track(s, DIR_OUT, 0, (i % 300) * 1000);
  publicPorts[i] = s.mapping.publicPort;
}
table.expire(0);

let sink = 0;

describe(`one lookup x ${LOOKUPS}, ${N} entries`, () => {
  bench('Map<int32 key>.get', () => {
    for (let k = 0; k < LOOKUPS; k++) sink += (bySmi.get(smiKey(next())) as Entry).port;
  });
  bench('LRUCache<int32 key>.get (lru-cache 11)', () => {
    for (let k = 0; k < LOOKUPS; k++) sink += (lru.get(smiKey(next())) as Entry).port;
  });
  bench('Map<48-bit double key>.get', () => {
    for (let k = 0; k < LOOKUPS; k++) sink += (byWide.get(wideKey(next())) as Entry).port;
  });
  bench('NaptTable.lookupOut (host map -> port map -> session)', () => {
    for (let k = 0; k < LOOKUPS; k++) {
      const i = next();
      sink += table.lookupOut(17, ips[i], ports[i] & ~1, REMOTE, 53 + (ports[i] & 1)) === undefined ? 0 : 1;
    }
  });
  bench('NaptTable.lookupIn (port array -> session)', () => {
    for (let k = 0; k < LOOKUPS; k++) {
      const i = next();
      sink += table.lookupIn(17, publicPorts[i], REMOTE, 53 + (ports[i] & 1)) === undefined ? 0 : 1;
    }
  });
});

describe(`expire(now), ${N} sessions`, () => {
  bench('nothing due', () => {
    sink += table.expire(1000);
  });
});

// 1% of the sessions due: timed by hand, since each run needs a fresh table.
function expireDueMs(runs: number): number {
  const ms: number[] = [];
  for (let r = 0; r < runs; r++) {
    const t = new NaptTable({ seed: 2, maxSessions: N, maxSessionsPerHost: N });
    for (let i = 0; i < N; i++) {
      const s = t.open(17, ips[i], ports[i] & ~1, REMOTE, 53 + (ports[i] & 1), 0);
      if (typeof s === 'string') throw new Error(s);
      t.track(s, DIR_OUT, 0, i % 100 === 0 ? 0 : 800_000);
    }
    t.expire(1); // the first pass after opening requeues nothing: every deadline is already exact
    const a = performance.now();
    const n = t.expire(300_000);
    ms.push(performance.now() - a);
    if (n !== N / 100) throw new Error(`expired ${n}`);
  }
  ms.sort((a, b) => a - b);
  return ms[ms.length >> 1];
}
// eslint-disable-next-line no-console
console.log(`napt: expire(now) removing 1,000 of ${N} sessions, all due for a look: ${expireDueMs(9).toFixed(3)} ms (median of 9)`);

// Steady state: 100,000 UDP sessions opened evenly over 300 s; each simulated
// second some random sessions see traffic, expire(now) runs, and as many new
// sessions open as expired, for 900 simulated seconds.
function expireSteadyMs(): { mean: number; p99: number; perSec: number } {
  const t = new NaptTable({ seed: 9, maxSessions: 2 * N, maxSessionsPerHost: 2 * N });
  const live: NonNullable<ReturnType<NaptTable['lookupOut']>>[] = [];
  let y = 12345;
  const rnd = (): number => { y ^= y << 13; y ^= y >>> 17; y ^= y << 5; return (y >>> 0) / 4294967296; };
  let opened = 0;
  const openOne = (now: number): void => {
    const i = opened++ % N;
    const s = t.open(17, ips[i], ports[i] & ~1, 0xc6000000 + (opened >>> 1), 53 + (ports[i] & 1), now);
    if (typeof s !== 'string') {
      t.track(s, DIR_OUT, 0, now);
      live.push(s);
    }
  };
  for (let k = 0; k < N; k++) openOne(k * 3);
  const ms: number[] = [];
  let expired = 0;
  for (let sec = 300; sec < 1200; sec++) {
    const now = sec * 1000;
    for (let j = 0; j < 330; j++) {
      const s = live[Math.floor(rnd() * live.length)];
      if (s.alive) t.track(s, DIR_OUT, 0, now);
    }
    const a = performance.now();
    const n = t.expire(now);
    ms.push(performance.now() - a);
    expired += n;
    for (let j = 0; j < n; j++) openOne(now);
    if (live.length > 4 * N) {
      const keep = live.filter((s) => s.alive);
      live.length = 0;
      live.push(...keep);
    }
  }
  const mean = ms.reduce((p, q) => p + q, 0) / ms.length;
  ms.sort((p, q) => p - q);
  return { mean, p99: ms[Math.floor(ms.length * 0.99)], perSec: expired / 900 };
}
const steady = expireSteadyMs();
// eslint-disable-next-line no-console
console.log(`napt: expire(now) once a second, ~${N} sessions, ~${steady.perSec.toFixed(0)} expiring/s: mean ${steady.mean.toFixed(3)} ms, p99 ${steady.p99.toFixed(3)} ms`);

// ---- Whole packets ----

const PUB = 0xc0000201; // 192.0.2.1
function udpPacket(src: number, dst: number, sport: number, dport: number): Uint8Array {
  const p = new Uint8Array(20 + 8 + 32);
  p[0] = 0x45; p[2] = 0; p[3] = p.length; p[6] = 0x40; p[8] = 64; p[9] = 17;
  for (let k = 0; k < 4; k++) { p[12 + k] = (src >>> (24 - 8 * k)) & 0xff; p[16 + k] = (dst >>> (24 - 8 * k)) & 0xff; }
  p[20] = sport >>> 8; p[21] = sport & 0xff; p[22] = dport >>> 8; p[23] = dport & 0xff; p[25] = 40;
  p[26] = 0x12; p[27] = 0x34; // any checksum: NAPT updates it incrementally, never verifies it
  return p;
}
const napt = new Napt({ publicIp: PUB, table: { seed: 3 } });
const outPkt = udpPacket(BASE_IP + 1, REMOTE, 5000, 53);
const inPkt = udpPacket(REMOTE, PUB, 53, 5000);
napt.outbound(outPkt.slice(), 0, 0);
const work = new Uint8Array(outPkt.length);

describe(`translate x ${LOOKUPS}, established UDP session`, () => {
  bench('outbound + inbound', () => {
    for (let k = 0; k < LOOKUPS; k++) {
      work.set(outPkt);
      sink += napt.outbound(work, 0, 1000);
      work.set(inPkt);
      sink += napt.inbound(work, 0, 1000);
    }
  });
});

// Heap bytes per packet pair: used-heap growth over a run short enough that no
// scavenge is likely (a run with a GC shows as a drop and is skipped).
function bytesPerPacket(runs: number, packets: number): number {
  const samples: number[] = [];
  for (let r = 0; r < runs; r++) {
    const before = getHeapStatistics().used_heap_size;
    for (let k = 0; k < packets; k++) {
      work.set(outPkt);
      sink += napt.outbound(work, 0, 1000 + k);
      work.set(inPkt);
      sink += napt.inbound(work, 0, 1000 + k);
    }
    const grew = getHeapStatistics().used_heap_size - before;
    if (grew >= 0) samples.push(grew / packets);
  }
  samples.sort((a, b) => a - b);
  return samples.length > 0 ? samples[samples.length >> 1] : Number.NaN;
}
bytesPerPacket(20, 20_000); // warm up, let the optimizer settle
// eslint-disable-next-line no-console
console.log(`napt: heap growth per outbound+inbound packet pair (median): ${bytesPerPacket(15, 20_000).toFixed(2)} bytes; sink ${sink & 1}`);
