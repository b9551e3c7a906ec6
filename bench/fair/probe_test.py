#!/usr/bin/env python3
"""Self-test of probe.py on synthetic logs with known answers.

usage: python3 bench/fair/probe_test.py   (exit 0 = pass)

Six noisy pings 10 ms apart from t = 1000 ms: the first three take 0.2 ms; the
fourth (t = 1030) overlaps a 12 ms lag in which the loop ran 4 ms and waited 10
(runqueue); the fifth (t = 1040) a 5 ms minor GC (gc wins over the lag it also
overlaps); the sixth (t = 1050) a 6 ms lag in which the loop ran 7 ms (running);
the seventh (t = 1060) takes 5 ms but its reply entered the stack after 0.3 ms
(pinger.py's kernel RTT: the pinger's own wait).

Then probe.cjs itself (node required): a process under `node -r probe.cjs` gains no
ArrayBuffer memory per 2 ms tick, over windows of 100 ticks with no GC in them. The
probe once read its schedstat with readFileSync, two 8 KB ArrayBuffers a tick, and
the daemon's major collections it reported under the flood were its own.
"""
import json
import os
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
with tempfile.TemporaryDirectory() as d:
    with open(os.path.join(d, '1-ours.probe'), 'w') as f:
        f.write('phase noisy 1000\n')
        f.write('lag 1044.000 12.000 4.000 10.000\n')  # stretch 1030 .. 1044
        f.write('gc 1042.000 5.000 minor\n')
        f.write('lag 1058.000 6.000 7.000 1.000\n')  # stretch 1050 .. 1058
        f.write('eld 1.0 9.0 12.0 100\n')
    with open(os.path.join(d, '1-ours-noisy.ping'), 'w') as f:
        for t, r in ((1000, 0.2), (1010, 0.2), (1020, 0.2), (1030, 11.0), (1040, 6.0), (1050, 7.5)):
            f.write(f'{t:.3f} {r:.3f}\n')
        f.write('1060.000 5.000 0.300\n')
    out = subprocess.run([sys.executable, os.path.join(here, 'probe.py'), d], capture_output=True, text=True, check=True).stdout
    want = ['1-ours noisy: 7 pings', 'GCs: minor 1x 5.0 ms (max 5.0)', '2 lags > 3 ms, 22 ms: ran 11, runqueue 11 ms',
            'pings > 2 ms: 4 (pinger 1, gc 1, runqueue 1, running 1, none 0)']
    missing = [w for w in want if w not in out]
    if missing:
        print(out)
        print('missing:', missing)
        sys.exit(1)

# ArrayBuffer bytes gained per tick of our own 2 ms interval (the probe's ticks as often),
# windows with a GC in them skipped: a GC frees what the window would show.
ALLOC = r"""
const { PerformanceObserver, performance } = require('node:perf_hooks');
const gcStarts = [];
new PerformanceObserver((l) => { for (const e of l.getEntries()) gcStarts.push(e.startTime); }).observe({ entryTypes: ['gc'] });
const ticks = (n) => new Promise((r) => { let k = 0; const i = setInterval(() => { if (++k === n) { clearInterval(i); r(); } }, 2); });
(async () => {
  await ticks(50);
  const per = [];
  for (let w = 0; w < 20 && per.length < 3; w++) {
    const t0 = performance.now(), a0 = process.memoryUsage().arrayBuffers;
    await ticks(100);
    const a1 = process.memoryUsage().arrayBuffers, t1 = performance.now();
    await new Promise((r) => setTimeout(r, 20));
    if (!gcStarts.some((s) => s >= t0 && s <= t1)) per.push((a1 - a0) / 100);
  }
  console.log(JSON.stringify(per));
})();
"""
with tempfile.TemporaryDirectory() as d:
    env = dict(os.environ, FAIR_PROBE_OUT=os.path.join(d, 'p.log'))
    out = subprocess.run(['node', '-r', os.path.join(here, 'probe.cjs'), '-e', ALLOC], capture_output=True, text=True,
                         check=True, env=env).stdout
    per = json.loads(out)
    if len(per) < 3 or max(per) > 64:
        print(f'probe.cjs: ArrayBuffer bytes per tick {per} (want 3 GC-free windows, each <= 64)')
        sys.exit(1)
print('ok')
