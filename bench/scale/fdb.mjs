// Forwarding cost of the bridge pipeline (ingress, learning, lookup, egress) with
// 10, 100,000 and 1,000,000 entries in the MAC table, in process: ports are
// in-memory sinks, so the figure is the switch's own per-frame cost without the
// kernel's read and write (which do not depend on the table size). Frames A -> B
// (known unicast) come in ring-style batches of 64 with a zeroed virtio_net_hdr in
// front, as from a TAP. The figure is CPU time per frame (process.cpuUsage: on a
// shared machine a run is descheduled now and then), median of the rounds; the
// wall-clock rate is printed beside it.
// Usage: node bench/scale/fdb.mjs [FRAMES] [ROUNDS] [ENTRIES,...]
// VSWITCH_SWITCH_DIST=DIR[,DIR...] runs each build of @vswitch/switch (e.g. a copy
// of packages/switch/dist saved before a change, then this tree's): every round
// runs each build in a child process of its own, builds alternating; with two,
// the second's cost is also given as a ratio to the first's.
import os from 'node:os';
import { BATCH, inChildren, isChild, loadedBridge, switchBuilds } from './bridge-load.mjs';

const FRAMES = Number(process.argv[2] ?? 4_000_000);
const ROUNDS = Number(process.argv[3] ?? 5);
const SIZES = (process.argv[4] ?? '10,100000,1000000').split(',').map(Number);
const builds = await switchBuilds();

function run(Bridge, entries) {
  const { sinkB: b, batch } = loadedBridge(Bridge, entries);
  const n = Math.floor(FRAMES / BATCH);
  for (let i = 0; i < 2000; i++) batch(); // warm up (JIT)
  b.frames = 0;
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) batch();
  const ns = Number(process.hrtime.bigint() - t0);
  const c = process.cpuUsage(c0);
  if (b.frames !== n * BATCH) throw new Error(`delivered ${b.frames} of ${n * BATCH}`);
  return { mfps: (n * BATCH) / ns * 1e3, cpuPerFrame: (c.user + c.system) * 1e3 / (n * BATCH) };
}

if (isChild) {
  const out = {};
  for (const e of SIZES) { out[e] = run(builds[0].mod.Bridge, e); globalThis.gc?.(); }
  console.log(JSON.stringify(out));
  process.exit(0);
}

const res = inChildren(import.meta.url, process.argv.slice(2), builds, ROUNDS);
const med = (xs) => xs.slice().sort((x, y) => x - y)[Math.floor(xs.length / 2)];
const ns = (i, e) => med(res[i].map((q) => q[e].cpuPerFrame));
console.log(`load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')} (${os.cpus().length} CPUs); medians of ${ROUNDS} rounds`);
for (const [i, b] of builds.entries()) {
  console.log(`${b.label} (${b.dir})`);
  for (const e of SIZES) {
    const all = res[i].map((q) => q[e].cpuPerFrame);
    console.log(`  ${String(e).padStart(7)} MAC entries: ${ns(i, e).toFixed(1)} CPU ns/frame (${Math.min(...all).toFixed(0)}-${Math.max(...all).toFixed(0)}; `
      + `wall: ${med(res[i].map((q) => q[e].mfps)).toFixed(2)} M frames/s), `
      + `${(ns(i, e) / ns(i, SIZES[0])).toFixed(2)}x the cost at ${SIZES[0]}`);
  }
}
if (builds.length === 2) {
  for (const e of SIZES) console.log(`after / before, cost per frame at ${e} entries: ${(ns(1, e) / ns(0, e)).toFixed(2)}x`);
}
