// What the MAC table's ageing sweep costs with a large table, and what learning
// from known MACs costs there, in process (the table alone, `Fdb`; ageing 300 s).
// N entries (default 1,000,000) are learned at times spread evenly over one ageing
// period, 0.3 ms apart for N = 1,000,000, as a table that has filled over time.
// 1. Sweep, nothing due: expire() one second before the oldest entry would age.
// 2. Sweep, churn: expire() once a simulated second for SWEEPS seconds after the
//    oldest entry's ageing time: each ages the 1/300 of the table learned in that
//    second (3,333 entries for 1,000,000).
// 3. Learning (refresh) of random known MACs (2^20 probes in a fixed random order,
//    so most miss the CPU caches), with the clock standing still, and with the clock
//    20 s further on every pass: the first refresh of an entry in a pass then moves
//    it on the ageing list (fdb.ts; about 600,000 of the 2^20 for N = 1,000,000).
// Usage: node --expose-gc bench/scale/fdb-sweep.mjs [N] [ROUNDS] [SWEEPS]
// VSWITCH_SWITCH_DIST=DIR[,DIR...]: builds to compare, each round a child process per build (as fdb.mjs).
import os from 'node:os';
import { getHeapStatistics } from 'node:v8';
import { inChildren, isChild, switchBuilds } from './bridge-load.mjs';

const N = Number(process.argv[2] ?? 1_000_000);
const ROUNDS = Number(process.argv[3] ?? 3);
const SWEEPS = Math.min(30, Number(process.argv[4] ?? 10));
const AGEING_MS = 300_000;
const PROBES = 1 << 20;
const builds = await switchBuilds();

// Distinct unicast MACs: three OUIs, the NIC part an odd multiple of i mod 2^24 (a bijection).
const macs = new Float64Array(N);
for (let i = 0; i < N; i++) macs[i] = [0x525400, 0x020000, 0x0a1b2c][i % 3] * 0x1000000 + (Math.imul(i, 0x9e3779b1) & 0xffffff);
const order = new Int32Array(PROBES);
const TENTH = Math.floor(N / 10);
let x = 0x2545f491;
// Probes of the MACs step 2 leaves (it ages the first SWEEPS/300 of them): the last nine tenths.
for (let i = 0; i < PROBES; i++) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; order[i] = TENTH + ((x >>> 0) % (N - TENTH)); }
const step = AGEING_MS / N; // ms between learnings
const med = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
// CPU time (process.cpuUsage), not wall time: on a shared machine a run is descheduled now and then.
const now0 = () => process.cpuUsage();
const ms = (t0) => { const c = process.cpuUsage(t0); return (c.user + c.system) / 1e3; };

function round(Fdb) {
  globalThis.gc?.();
  const heap0 = getHeapStatistics().used_heap_size;
  let t0 = now0();
  const f = new Fdb({ ageingSec: AGEING_MS / 1000, maxEntries: N });
  for (let i = 0; i < N; i++) f.learn(1, macs[i], i & 7, i * step);
  const fillMs = ms(t0);
  if (f.size !== N) throw new Error(`table has ${f.size} entries`);
  globalThis.gc?.();
  const heapMB = (getHeapStatistics().used_heap_size - heap0) / 1e6;

  // 1. nothing due (twice: the first may still be warming up)
  f.expire(AGEING_MS - 1000);
  t0 = now0();
  const none = f.expire(AGEING_MS - 1000);
  const idleMs = ms(t0);
  if (none !== 0) throw new Error(`aged ${none} with nothing due`);

  // 2. churn: a sweep a second
  const sweep = [];
  let aged = 0;
  for (let s = 1; s <= SWEEPS; s++) {
    t0 = now0();
    aged += f.expire(AGEING_MS + s * 1000);
    sweep.push(ms(t0));
  }
  const visited = f.sweepVisited;
  return { f, r: { fillMs, heapMB, idleMs, churnMs: med(sweep), aged: aged / SWEEPS, visited: visited ?? null } };
}

// 3. learning of known MACs: those the churn left (order[] skips the first tenth).
const NOW = AGEING_MS + SWEEPS * 1000;
const PASSES = 5;
let sink = 0;
function pass(f, now) {
  const t = now0();
  for (let k = 0; k < PROBES; k++) { const i = order[k]; sink += f.learn(1, macs[i], i & 7, now); }
  return (ms(t) * 1e6) / PROBES;
}

if (isChild) {
  const { f, r } = round(builds[0].mod.Fdb);
  pass(f, NOW); // warm up; re-files what was filed long before NOW
  r.still = med(Array.from({ length: PASSES }, () => pass(f, NOW)));
  // Each pass 20 s later: the refreshed entries are then 20 s past their filing.
  r.moving = med(Array.from({ length: PASSES }, (_, k) => pass(f, NOW + (k + 1) * 20_000)));
  if (sink !== 0) throw new Error('a probe was not a refresh');
  console.log(JSON.stringify(r));
  process.exit(0);
}

const res = inChildren(import.meta.url, process.argv.slice(2), builds, ROUNDS);
console.log(`load average ${os.loadavg().map((v) => v.toFixed(2)).join(' ')} (${os.cpus().length} CPUs); ${N} entries, medians of ${ROUNDS} rounds (learning: each round the median of ${PASSES} passes)`);
const m = (i, k) => med(res[i].map((q) => q[k]));
for (const [i, b] of builds.entries()) {
  console.log(`${b.label} (${b.dir})`);
  console.log(`  fill ${m(i, 'fillMs').toFixed(0)} ms, heap ${m(i, 'heapMB').toFixed(1)} MB (${(m(i, 'heapMB') * 1e6 / N).toFixed(0)} B/entry)`);
  console.log(`  sweep, nothing due: ${m(i, 'idleMs').toFixed(3)} ms`);
  console.log(`  sweep, churn: ${m(i, 'churnMs').toFixed(3)} ms per sweep, ${m(i, 'aged').toFixed(0)} aged per sweep`
    + (res[i][0].visited == null ? '' : `, last sweep examined ${m(i, 'visited')}`));
  const span = (k) => `${Math.min(...res[i].map((q) => q[k])).toFixed(0)}-${Math.max(...res[i].map((q) => q[k])).toFixed(0)}`;
  console.log(`  learn (refresh), random known MACs: ${m(i, 'still').toFixed(1)} ns clock still (${span('still')}), `
    + `${m(i, 'moving').toFixed(1)} ns clock +20 s a pass (${span('moving')})`);
}
if (builds.length === 2) {
  const r = (k) => (m(1, k) / m(0, k)).toFixed(k.endsWith('Ms') ? 4 : 2);
  console.log(`after / before: sweep nothing due ${r('idleMs')}x, sweep churn ${r('churnMs')}x, refresh clock still ${r('still')}x, `
    + `clock moving ${r('moving')}x, heap ${r('heapMB')}x`);
}
