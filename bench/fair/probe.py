#!/usr/bin/env python3
"""Match slow pings to what the daemon did meanwhile (run.sh's FAIR_PROBE=1 logs).

Usage: probe.py [-v] DIR   (every ROUND-TOPO.probe with its ROUND-TOPO-PHASE.ping; a peer's
pings without a probe log too)

Per log and phase: the pings' p50/p99/max; the GCs (count, total and longest ms by
kind); the event-loop lags > 3 ms and how their time splits into the loop's own run
time and its runqueue wait (runnable, not on a CPU; the rest it slept); and each ping
slower than SLOW ms (env, default 2) put in one class, first match wins:
  pinger    the reply entered C's stack within SLOW ms (pinger.py's kernel timestamp):
            the rest is the pinger process waiting to run, not the network path
  gc        a GC overlaps its round trip
  runqueue  a lag overlaps it in which the loop waited for a CPU more than it ran
  running   a lag overlaps it in which the loop ran more than it waited (a long turn)
  none      nothing the probe saw (a lag under 3 ms, or outside the daemon)
-v lists the slow pings one by one.
"""
import glob
import os
import sys


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))] if xs else float('nan')


def read_probe(path):
    gcs, lags = [], []
    for line in open(path):
        f = line.split()
        if not f:
            continue
        if f[0] == 'gc':  # gc START MS KIND
            gcs.append((float(f[1]), float(f[2]), f[3]))
        elif f[0] == 'lag':  # lag AT LATE RUN WAIT: the stretch began LATE + 2 ms before AT
            at, late = float(f[1]), float(f[2])
            lags.append((at - late - 2, at, late, float(f[3]), float(f[4])))
    return gcs, lags


def classify(t, r, gcs, lags):
    og = [g for g in gcs if g[0] + g[1] >= t and g[0] <= t + r]
    ol = [x for x in lags if x[1] >= t and x[0] <= t + r]
    if og:
        return 'gc', og, ol
    if any(x[4] > x[3] for x in ol):
        return 'runqueue', og, ol
    if ol:
        return 'running', og, ol
    return 'none', og, ol


def main(argv):
    verbose = '-v' in argv
    args = [a for a in argv if a != '-v']
    slow = float(os.environ.get('SLOW', '2'))
    # A topology without the daemon's probe (a peer) still has its pings: no GCs or lags then.
    bases = {pf[:-6] for pf in glob.glob(os.path.join(args[0], '*.probe'))}
    bases |= {pp.rsplit('-', 1)[0] for pp in glob.glob(os.path.join(args[0], '*.ping'))}
    for base in sorted(bases):
        gcs, lags = read_probe(base + '.probe') if os.path.exists(base + '.probe') else ([], [])
        for ph in ('quiet', 'noisy'):
            pp = f'{base}-{ph}.ping'
            if not os.path.exists(pp):
                continue
            # "<send> <rtt> [<kernel rtt>]": the kernel RTT where pinger.py had one
            rows_ = [l.split() for l in open(pp)]
            pings = [(float(f[0]), float(f[1])) for f in rows_ if len(f) > 1 and f[1] != '-']
            krtt = {float(f[0]): float(f[2]) for f in rows_ if len(f) > 2}
            if not pings:
                continue
            a, b = pings[0][0], pings[-1][0] + pings[-1][1]
            g = [x for x in gcs if a <= x[0] <= b]
            lg = [x for x in lags if x[1] >= a and x[0] <= b]
            rt = [r for _, r in pings]
            kinds = sorted({x[2] for x in g})
            gtxt = ', '.join(f'{k} {sum(1 for x in g if x[2] == k)}x {sum(x[1] for x in g if x[2] == k):.1f} ms '
                             f'(max {max(x[1] for x in g if x[2] == k):.1f})' for k in kinds) or 'none'
            cls = {'pinger': 0, 'gc': 0, 'runqueue': 0, 'running': 0, 'none': 0}
            rows = []
            for t, r in pings:
                if r < slow:
                    continue
                c, og, ol = classify(t, r, gcs, lags)
                if krtt.get(t, slow) < slow:
                    c = 'pinger'
                cls[c] += 1
                kr = f' (kernel {krtt[t]:.2f})' if t in krtt else ''
                rows.append(f'    @{t - a:7.1f} ms {r:6.2f} ms{kr} {c:8s} ' + '; '.join(
                    [f'{x[2]} GC {x[1]:.1f} ms' for x in og] +
                    [f'lag {x[2]:.1f} ms (ran {x[3]:.1f}, runqueue {x[4]:.1f})' for x in ol]))
            print(f'{os.path.basename(base)} {ph}: {len(pings)} pings p50 {pct(rt, 50):.3f} p99 {pct(rt, 99):.3f} '
                  f'max {max(rt):.2f} ms; GCs: {gtxt}; {len(lg)} lags > 3 ms, {sum(x[2] + 2 for x in lg):.0f} ms: '
                  f'ran {sum(x[3] for x in lg):.0f}, runqueue {sum(x[4] for x in lg):.0f} ms; '
                  f'pings > {slow:g} ms: {sum(cls.values())} (' + ', '.join(f'{k} {v}' for k, v in cls.items()) + ')')
            if verbose:
                print('\n'.join(rows))


if __name__ == '__main__':
    main(sys.argv[1:])
