#!/usr/bin/env python3
"""Paired per-round ratios of two topologies in one bench run (bench/run.sh -o RAW.tsv).

usage: ab.py RAW.tsv A B [METRIC ...]   (default metrics: tcp_gbps tcp_sw_cpu_s)

Rounds on this shared machine swing by more than the effects we look for, so each
round's A is compared with the same round's B (they ran seconds apart): per-round
ratios A/B, their median and geometric mean, and how many rounds A was above B. For
the switch's CPU it also prints CPU seconds per Gbit/s (lower is better).
"""
import math
import statistics
import sys
from collections import defaultdict

if len(sys.argv) < 4:
    sys.exit(__doc__)
raw, a, b = sys.argv[1:4]
metrics = sys.argv[4:] or ['tcp_gbps', 'tcp_sw_cpu_s']
vals = defaultdict(dict)  # (variant, metric, topo) -> {round: value}
for line in open(raw):
    f = line.rstrip('\n').split('\t')
    if len(f) < 4 or f[0] == 'round' or f[1] == 'meta':
        continue
    v = f[4] if len(f) > 4 else 'quiet'
    try:
        vals[(v, f[2], f[1])][int(f[0])] = float(f[3])
    except ValueError:
        pass


def paired(v, m, x, y):
    xs, ys = vals.get((v, m, x), {}), vals.get((v, m, y), {})
    return [(r, xs[r], ys[r]) for r in sorted(xs) if r in ys and ys[r] > 0 and xs[r] > 0]


variants = sorted({k[0] for k in vals})
for v in variants:
    extra = []
    if all(vals.get((v, m, t)) for m in ('tcp_gbps', 'tcp_sw_cpu_s') for t in (a, b)):
        for t in (a, b):
            g, c = vals[(v, 'tcp_gbps', t)], vals[(v, 'tcp_sw_cpu_s', t)]
            for r in g:
                if r in c and g[r] > 0:
                    vals[(v, 'cpu_s_per_gbit', t)][r] = c[r] / g[r]
        extra = ['cpu_s_per_gbit']
    for m in metrics + extra:
        p = paired(v, m, a, b)
        if not p:
            continue
        rs = [x / y for _, x, y in p]
        gm = math.exp(sum(math.log(r) for r in rs) / len(rs))
        wins = sum(1 for r in rs if r > 1)
        print(f'[{v}] {m}: {a} {statistics.median(x for _, x, _ in p):.3g} vs {b} {statistics.median(y for _, _, y in p):.3g} (medians); '
              f'{a}/{b} per round ' + ' '.join(f'{r:.2f}' for r in rs) +
              f'; median {statistics.median(rs):.3f}, geomean {gm:.3f}, {a} above in {wins}/{len(rs)}')
