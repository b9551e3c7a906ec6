// The longest stretches a thread was busy, from a V8 CPU profile (node --cpu-prof, one
// .cpuprofile per thread): the gaps between two consecutive "(idle)" samples, i.e. how
// long the thread's event loop went without waiting for I/O. For the daemon's main
// thread that is how long a frame arriving on a TAP could wait for its read.
// Usage: node bench/isolation/busy.mjs FILE.cpuprofile [TOP [FROM TO]]
// Prints the sampling interval, the thread's busy share, the gap percentiles and the TOP
// longest gaps with the functions (self time) that filled them. FROM TO: only the samples
// between FROM and TO seconds after the profile began (e.g. leave out start and shutdown).
import { readFileSync } from 'node:fs';

const [file, topArg = '5', fromArg, toArg] = process.argv.slice(2);
if (!file) {
  console.error('usage: node busy.mjs FILE.cpuprofile [TOP [FROM TO]]');
  process.exit(2);
}
const p = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const name = (id) => {
  const f = byId.get(id).callFrame;
  const where = f.url ? ` ${f.url.replace(/^.*\/(packages|node_modules)\//, '$1/')}:${f.lineNumber + 1}` : '';
  return `${f.functionName || '(anonymous)'}${where}`;
};
const times = [];
let t = p.startTime;
for (const d of p.timeDeltas) times.push((t += d));
const idle = (i) => byId.get(p.samples[i]).callFrame.functionName === '(idle)';
const from = fromArg === undefined ? -Infinity : p.startTime + Number(fromArg) * 1e6;
const to = toArg === undefined ? Infinity : p.startTime + Number(toArg) * 1e6;
const inWindow = (i) => times[i] >= from && times[i] <= to;

const gaps = []; // { ms, from, to } between idle samples (indices)
let last = -1;
let busy = 0;
let n = 0;
for (let i = 0; i < p.samples.length; i++) {
  if (!inWindow(i)) continue;
  n++;
  if (!idle(i)) {
    busy++;
    continue;
  }
  if (last >= 0 && i - last > 1) gaps.push({ ms: (times[i] - times[last]) / 1000, from: last, to: i });
  last = i;
}
const ms = gaps.map((g) => g.ms).sort((a, b) => a - b);
const pct = (q) => (ms.length ? ms[Math.min(ms.length - 1, Math.round((q / 100) * (ms.length - 1)))] : 0);
const span = (Math.min(p.endTime, to) - Math.max(p.startTime, from)) / 1e6;
const interval = n ? (span * 1e6) / n : 0;
const window = fromArg === undefined ? '' : ` (${fromArg}-${toArg} s after its start)`;
console.log(`${file}${window}: ${span.toFixed(1)} s, ${n} samples (~${interval.toFixed(0)} µs apart), busy ${((100 * busy) / n).toFixed(1)} %`);
console.log(`busy stretches: ${gaps.length}; p50 ${pct(50).toFixed(1)} ms, p99 ${pct(99).toFixed(1)} ms, p99.9 ${pct(99.9).toFixed(1)} ms, max ${pct(100).toFixed(1)} ms`);
for (const g of [...gaps].sort((a, b) => b.ms - a.ms).slice(0, Number(topArg))) {
  const self = new Map();
  for (let i = g.from + 1; i < g.to; i++) self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + 1);
  const top = [...self].sort((a, b) => b[1] - a[1]).slice(0, 4).map(([id, n]) => `${name(id)} ×${n}`).join(', ');
  console.log(`  ${g.ms.toFixed(1)} ms at +${((times[g.from] - p.startTime) / 1e6).toFixed(2)} s: ${top}`);
}
