#!/usr/bin/env python3
"""Who got the CPU in the fair bench's C -> D TCP windows (FAIR_PERF=1), every topology.

vms.py PERF_DIR RAW_TSV "TOPO ..." reads PERF_DIR/ROUND-TOPO-PHASE.vw (run.sh vms_window:
"tN <time>" then "N VM PID COMMAND RUN_NS WAIT_NS" per process of each VM's namespace at
both ends of the window) and RAW_TSV (run.sh's per-phase rows) and prints, per topology,
medians over rounds of:
  C's iperf3 sender (VM 3), D's receiver (VM 4): run / runqueue wait, % of one core,
  quiet and noisy; A's flooder (VM 1, flood.py) and A's iperf3 sender, noisy;
  C -> D TCP noisy / quiet, and C's run noisy / quiet beside it.
The question it answers: is C -> D's noisy/quiet ratio set by how much CPU C's sender
gets under the flood, for every switch alike? Per-round pairs (C run ratio, TCP ratio)
follow the table, so the two can be compared round by round.
A process counts when it is alive at both ends of the window (the iperf3 ends are).
"""
import os
import re
import statistics
import sys

ROLES = [  # (name, VM, command prefix)
    ('C sender', 3, 'iperf3'),
    ('D receiver', 4, 'iperf3'),
    ('A flooder', 1, 'python3'),
    ('A iperf3', 1, 'iperf3'),
]


def window(path):
    """{(vm, command): (run %, wait %)} of one .vw file, summed over the processes of that command."""
    t = {}
    snap = {0: {}, 1: {}}
    for line in open(path):
        f = line.split()
        if not f:
            continue
        if f[0] in ('t0', 't1'):
            t[int(f[0][1])] = float(f[1])
            continue
        if len(f) != 6:
            continue
        at, vm, pid, comm, run, wait = f
        snap[int(at)][(int(vm), pid)] = (comm, int(run), int(wait))
    if 0 not in t or 1 not in t or t[1] <= t[0]:
        return None
    span = (t[1] - t[0]) * 1e9
    out = {}
    for key, (comm, r1, w1) in snap[1].items():
        if key not in snap[0]:
            continue
        _, r0, w0 = snap[0][key]
        k = (key[0], comm)
        r, w = out.get(k, (0.0, 0.0))
        out[k] = (r + (r1 - r0) / span * 100, w + (w1 - w0) / span * 100)
    return out


def role(win, vm, prefix):
    if win is None:
        return None
    hits = [v for (m, c), v in win.items() if m == vm and c.startswith(prefix)]
    if not hits:
        return None
    return (sum(h[0] for h in hits), sum(h[1] for h in hits))


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_rw(vals):
    r = med([v[0] for v in vals if v is not None])
    w = med([v[1] for v in vals if v is not None])
    return '-' if r is None else f'{r:.0f} / {w:.0f}'


def main():
    pdir, raw = sys.argv[1], sys.argv[2]
    topos = sys.argv[3].split() if len(sys.argv) > 3 else []
    tcp = {}  # (round, topo, phase) -> Gbit/s
    for line in open(raw):
        f = line.rstrip('\n').split('\t')
        if len(f) >= 4:
            try:
                tcp[(f[0], f[1], f[2])] = float(f[3])
            except ValueError:
                pass
    wins = {}  # (topo, round, phase) -> window
    for name in os.listdir(pdir):
        m = re.match(r'^(\d+)-(.+)-(quiet|noisy)\.vw$', name)
        if m:
            wins[(m.group(2), m.group(1), m.group(3))] = window(os.path.join(pdir, name))
    if not topos:
        topos = sorted({k[0] for k in wins})
    print()
    print('VMs\' CPU in the C -> D TCP windows (FAIR_PERF), run / runqueue wait, % of one core, medians over rounds:')
    print()
    print('| topology | C sender quiet | C sender noisy | D receiver quiet | D receiver noisy | A flooder noisy | A iperf3 noisy '
          '| C run noisy÷quiet | TCP noisy÷quiet |')
    print('|---|---|---|---|---|---|---|---|---|')
    pairs = []
    for topo in topos:
        rounds = sorted({k[1] for k in wins if k[0] == topo}, key=int)
        if not rounds:
            continue
        cols = {}
        for ph in ('quiet', 'noisy'):
            for rname, vm, pre in ROLES:
                cols[(rname, ph)] = [role(wins.get((topo, r, ph)), vm, pre) for r in rounds]
        cratio, tratio = [], []
        for i, r in enumerate(rounds):
            cq, cn = cols[('C sender', 'quiet')][i], cols[('C sender', 'noisy')][i]
            tq, tn = tcp.get((r, topo, 'quiet')), tcp.get((r, topo, 'noisy'))
            c = cn[0] / cq[0] if cq and cn and cq[0] > 0 else None
            t = tn / tq if tq and tn is not None and tq > 0 else None
            cratio.append(c)
            tratio.append(t)
            pairs.append((topo, r, c, t))
        mc, mt = med(cratio), med(tratio)
        print(f'| {topo} | {fmt_rw(cols[("C sender", "quiet")])} | {fmt_rw(cols[("C sender", "noisy")])} '
              f'| {fmt_rw(cols[("D receiver", "quiet")])} | {fmt_rw(cols[("D receiver", "noisy")])} '
              f'| {fmt_rw(cols[("A flooder", "noisy")])} | {fmt_rw(cols[("A iperf3", "noisy")])} '
              f'| {"-" if mc is None else f"{mc:.2f}×"} | {"-" if mt is None else f"{mt:.2f}×"} |')
    print()
    print('Per round (topology round: C sender run noisy÷quiet, C -> D TCP noisy÷quiet):')
    for topo, r, c, t in pairs:
        cs = '-' if c is None else f'{c:.2f}'
        ts = '-' if t is None else f'{t:.2f}'
        print(f'  {topo} {r}: C run {cs}, TCP {ts}')


if __name__ == '__main__':
    main()
