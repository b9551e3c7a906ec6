/*
 * Preload for the daemon under bench/fair (node -r bench/fair/probe.cjs main.js daemon ...,
 * FAIR_PROBE=1 in run.sh): where does a frame wait inside the daemon while the loop is
 * busy? Logs to $FAIR_PROBE_OUT (one line each, epoch ms first):
 *   gc <start> <ms> <kind>          every V8 collection (perf_hooks 'gc' entries)
 *   lag <at> <ms> <run> <wait>      a 2 ms interval timer fired more than 3 ms late: the
 *                                   loop did not get back to its timers for that long;
 *                                   of the stretch since the previous tick, the main
 *                                   thread ran <run> ms and waited for a CPU <wait> ms
 *                                   (/proc/thread-self/schedstat); the rest it slept
 *   eld <p50> <p99> <max> <count>   monitorEventLoopDelay (1 ms resolution), at exit
 * Written synchronously at exit and every second (small appends), so a stretch of
 * the log matches a stretch of pings by time.
 */
'use strict';
const fs = require('node:fs');
const { PerformanceObserver, monitorEventLoopDelay, performance, constants } = require('node:perf_hooks');
const out = process.env.FAIR_PROBE_OUT || `/tmp/fair-probe.${process.pid}.log`;
const t0 = performance.timeOrigin;
let lines = [];
const kinds = { [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major', [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental', [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb' };
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    const k = e.detail ? e.detail.kind : e.kind;
    lines.push(`gc ${(t0 + e.startTime).toFixed(3)} ${e.duration.toFixed(3)} ${kinds[k] || k}`);
  }
}).observe({ entryTypes: ['gc'] });
const h = monitorEventLoopDelay({ resolution: 1 });
h.enable();
// The main thread's schedstat, read into one Buffer through one fd and parsed in place:
// the probe must allocate nothing per tick. readFileSync here (500 times a second) made
// two 8 KB ArrayBuffers a call, 8 MB/s of external memory, and V8 answered with a major
// collection every 2-3 s: the GCs the probe then reported were its own.
const schedFd = fs.openSync('/proc/thread-self/schedstat', 'r');
const schedBuf = Buffer.alloc(128);
let run = 0, wait = 0;
const sched = () => {
  const n = fs.readSync(schedFd, schedBuf, 0, schedBuf.length, 0);
  let i = 0;
  run = 0;
  for (; i < n && schedBuf[i] !== 32; i++) run = run * 10 + schedBuf[i] - 48;
  wait = 0;
  for (i++; i < n && schedBuf[i] >= 48 && schedBuf[i] <= 57; i++) wait = wait * 10 + schedBuf[i] - 48;
};
let last = performance.now();
sched();
let run0 = run, wait0 = wait;
setInterval(() => {
  const now = performance.now();
  sched();
  const late = now - last - 2;
  if (late > 3) lines.push(`lag ${(t0 + now).toFixed(3)} ${late.toFixed(3)} ${((run - run0) / 1e6).toFixed(3)} ${((wait - wait0) / 1e6).toFixed(3)}`);
  last = now;
  run0 = run;
  wait0 = wait;
}, 2).unref();
const flush = () => {
  if (lines.length) fs.appendFileSync(out, lines.join('\n') + '\n');
  lines = [];
};
setInterval(flush, 1000).unref();
process.on('exit', () => {
  lines.push(`eld ${(h.percentile(50) / 1e6).toFixed(3)} ${(h.percentile(99) / 1e6).toFixed(3)} ${(h.max / 1e6).toFixed(3)} ${h.count}`);
  flush();
});
