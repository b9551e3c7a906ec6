// What the MAC table allocates and costs per frame, in process (the "Allocation
// check" of bench/README.md):
// 1. The bridge pipeline as in fdb.mjs (frames A -> B, known unicast, batches of
//    64, with 10 and with 100,000 entries): heap bytes per frame, and the minor GCs
//    (scavenges) during a timed run of FRAMES frames.
// 2. The table alone, 100,000 entries in one VLAN: `lookup` and `learn` (refresh) of
//    random known MACs, 2^20 probes in a fixed random order so most lookups miss
//    the CPU caches: ns and heap bytes per call.
// Bytes are used-heap growth over runs short enough to see no GC (runs with a GC
// are skipped), median of the runs; 0.00 means nothing is allocated per frame.
// Usage: node --expose-gc bench/scale/fdb-alloc.mjs [FRAMES] [ROUNDS]   (without
// --expose-gc the table's heap size is not printed)
// VSWITCH_SWITCH_DIST=/path/to/dist compares another build of @vswitch/switch
// (e.g. a copy of packages/switch/dist saved before a change).
import { PerformanceObserver, constants, performance } from 'node:perf_hooks';
import { getHeapStatistics } from 'node:v8';
import { BATCH, loadedBridge, switchBuilds } from './bridge-load.mjs';

const [{ dir: dist, mod: { Bridge, Fdb } }] = await switchBuilds();

const FRAMES = Number(process.argv[2] ?? 4_000_000);
const ROUNDS = Number(process.argv[3] ?? 5);

// ---- minor GCs, from the gc performance entries ----
const minor = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR) minor.push(e.startTime);
}).observe({ entryTypes: ['gc'] });
const flushObserver = () => new Promise((r) => setTimeout(r, 20));
const scavengesBetween = (a, b) => minor.filter((t) => t >= a && t <= b).length;

const med = (xs) => xs.slice().sort((x, y) => x - y)[Math.floor(xs.length / 2)];

/** Median used-heap growth per call of fn(k) over `runs` runs of `calls`, skipping runs with a GC. */
function bytesPer(fn, runs, calls) {
  const s = [];
  for (let r = 0; r < runs; r++) {
    const before = getHeapStatistics().used_heap_size;
    for (let k = 0; k < calls; k++) fn(k);
    const grew = getHeapStatistics().used_heap_size - before;
    if (grew >= 0) s.push(grew / calls);
  }
  return s.length > 0 ? med(s) : Number.NaN;
}

// ---- 1. the bridge pipeline ----
async function pipeline(entries) {
  const { batch } = loadedBridge(Bridge, entries);
  for (let i = 0; i < 2000; i++) batch(); // warm up (JIT)
  const bytes = bytesPer(batch, 30, 200) / BATCH; // 12,800 frames a run
  globalThis.gc?.();
  await flushObserver();
  const n = Math.floor(FRAMES / BATCH);
  const t0 = performance.now();
  for (let i = 0; i < n; i++) batch();
  const t1 = performance.now();
  await flushObserver();
  return { bytes, scavenges: scavengesBetween(t0, t1), nsPerFrame: ((t1 - t0) * 1e6) / (n * BATCH), frames: n * BATCH };
}

// ---- 2. the table alone ----
const N = 100_000;
const PROBES = 1 << 20;
const macs = new Float64Array(N);
for (let i = 0; i < N; i++) {
  // Three OUIs, NIC parts spread over 24 bits, as VMs' MACs look (52:54:00 is QEMU's).
  const oui = [0x525400, 0x020000, 0x0a1b2c][i % 3];
  macs[i] = oui * 0x1000000 + ((i * 2654435761) >>> 8);
}
const order = new Int32Array(PROBES);
let x = 0x2545f491;
for (let i = 0; i < PROBES; i++) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; order[i] = (x >>> 0) % N; }

function table() {
  globalThis.gc?.();
  const heap0 = getHeapStatistics().used_heap_size;
  const f = new Fdb({ maxEntries: N + 1000, ageingSec: 3600 });
  for (let i = 0; i < N; i++) f.learn(1, macs[i], i & 7, 0);
  globalThis.gc?.();
  const heapMB = (getHeapStatistics().used_heap_size - heap0) / 1e6;
  if (f.size !== N) throw new Error(`table has ${f.size} entries (MACs collide?)`);
  let sink = 0;
  const lookup = (k) => { sink += f.lookup(1, macs[order[k & (PROBES - 1)]]); };
  const learn = (k) => { const i = order[k & (PROBES - 1)]; sink += f.learn(1, macs[i], i & 7, 1000); };
  const timed = (fn) => {
    for (let k = 0; k < PROBES; k++) fn(k); // warm up
    const t0 = process.hrtime.bigint();
    for (let k = 0; k < PROBES; k++) fn(k);
    return Number(process.hrtime.bigint() - t0) / PROBES;
  };
  const r = {
    lookupNs: timed(lookup), learnNs: timed(learn),
    lookupBytes: bytesPer(lookup, 30, 10_000), learnBytes: bytesPer(learn, 30, 10_000), heapMB,
  };
  if (sink < 0) throw new Error('lookups missed');
  return r;
}

const res = { 10: [], 100000: [] };
const tab = [];
for (let r = 0; r < ROUNDS; r++) {
  for (const e of [10, 100000]) res[e].push(await pipeline(e));
  tab.push(table());
}
console.log(`@vswitch/switch from ${dist}`);
for (const e of [10, 100000]) {
  const rs = res[e];
  console.log(`pipeline, ${String(e).padStart(6)} MAC entries: ${med(rs.map((q) => q.nsPerFrame)).toFixed(1)} ns/frame, `
    + `${med(rs.map((q) => q.bytes)).toFixed(2)} heap bytes/frame, ${med(rs.map((q) => q.scavenges))} scavenges `
    + `in ${rs[0].frames} frames (median of ${ROUNDS})`);
}
console.log(`table, ${N} entries, random known MACs: lookup ${med(tab.map((q) => q.lookupNs)).toFixed(1)} ns, `
  + `${med(tab.map((q) => q.lookupBytes)).toFixed(2)} bytes; learn (refresh) ${med(tab.map((q) => q.learnNs)).toFixed(1)} ns, `
  + `${med(tab.map((q) => q.learnBytes)).toFixed(2)} bytes (median of ${ROUNDS})`);
if (globalThis.gc) console.log(`table, ${N} entries: ${med(tab.map((q) => q.heapMB)).toFixed(1)} MB of heap`);
