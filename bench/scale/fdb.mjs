// Forwarding rate of the bridge pipeline (ingress, learning, lookup, egress) with
// 10 vs 100,000 entries in the MAC table, in process: ports are in-memory sinks,
// so the figure is the switch's own per-frame cost without the kernel's read and
// write (which do not depend on the table size). Frames come in ring-style
// batches of 64 with a zeroed virtio_net_hdr in front, as from a TAP.
// Usage: node bench/scale/fdb.mjs [FRAMES] [ROUNDS]
import { Bridge } from '../../packages/switch/dist/index.js';
import { BATCH, loadedBridge } from './bridge-load.mjs';

const FRAMES = Number(process.argv[2] ?? 4_000_000);
const ROUNDS = Number(process.argv[3] ?? 5);

function run(entries) {
  const { br, sinkB: b, batch } = loadedBridge(Bridge, entries);
  const n = Math.floor(FRAMES / BATCH);
  for (let i = 0; i < 2000; i++) batch(); // warm up (JIT)
  b.frames = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) batch();
  const ns = Number(process.hrtime.bigint() - t0);
  if (b.frames !== n * BATCH) throw new Error(`delivered ${b.frames} of ${n * BATCH}`);
  return { entries: br.fdb.size + 1, mfps: (n * BATCH) / ns * 1e3, nsPerFrame: ns / (n * BATCH) };
}

const res = { 10: [], 100000: [] };
for (let r = 0; r < ROUNDS; r++) for (const e of [10, 100000]) res[e].push(run(e));
const med = (xs) => xs.slice().sort((x, y) => x - y)[Math.floor(xs.length / 2)];
for (const e of [10, 100000]) {
  console.log(`${String(e).padStart(6)} MAC entries: ${med(res[e].map((x) => x.mfps)).toFixed(2)} M frames/s (${med(res[e].map((x) => x.nsPerFrame)).toFixed(0)} ns/frame), median of ${ROUNDS}`);
}
console.log(`ratio 100,000 / 10 entries: ${(med(res[100000].map((x) => x.mfps)) / med(res[10].map((x) => x.mfps))).toFixed(2)}x (target >= 0.9x)`);
