#!/usr/bin/env python3
"""Medians per topology and ratios vswitch/peer from anchors.sh's raw TSV.

usage: report.py RAW.tsv [TOPOLOGY ...]   (the first topology, `ours` by default, is vswitch)

Every topology named ours* (run.sh's `ours-fc`: the flow cache on) is a vswitch
variant: each gets its own tables and targets, with the other topologies,
the other vswitch variants included, as its peers.

A fifth column `variant` (bench/run.sh --busy writes it: quiet, one, half)
splits the rows: each variant gets its own table and targets, then one table
puts quiet and each busy variant side by side ("quiet / busy" in each cell),
with the ratios vswitch/peer of each variant, both measured in the same run.
"""
import csv
import statistics as st
import sys

raw = sys.argv[1]
topos = sys.argv[2:] or ['ours', 'kbridge', 'vde', 'ovs-tap', 'ovs-tap-tso', 'pasta']
ourses = [t for t in topos if t.startswith('ours')] or topos[:1]

rows = list(csv.DictReader(open(raw), delimiter='\t'))
vals = {}
variants = []
for r in rows:
    v = r.get('variant') or 'quiet'
    if r['topo'] != 'meta' and v not in variants:
        variants.append(v)
    try:
        vals.setdefault((v, r['topo'], r['metric']), []).append(float(r['value']))
    except ValueError:
        pass
variants = variants or ['quiet']
meta = {r['metric']: r['value'] for r in rows if r['topo'] == 'meta'}


def med(v, t, m):
    x = vals.get((v, t, m))
    return st.median(x) if x else None


# metric, label, higher is better
METRICS = [
    ('tcp_gbps', 'TCP Gbit/s (1 stream)', True),
    ('tcp_sw_cpu_s', 'switch CPU s during TCP', False),
    ('tcp_frame_bytes', 'bytes/frame on VM1 (TCP)', True),
    ('tg_rx_kpps', 'trafgen 64 B rcvd kpps', True),
    ('udp_rx_kpps', 'iperf3 64 B UDP rcvd kpps', True),
    ('ping_avg_us', 'ping avg µs', False),
    ('ping_p99_us', 'ping p99 µs', False),
    ('sp_avg_us', 'sockperf RTT avg µs', False),
    ('sp_p99_us', 'sockperf RTT p99 µs', False),
    ('tcp_rev_gbps', 'TCP -R Gbit/s', True),
]
# what the run itself saw, per variant (bench/run.sh --busy)
CONTEXT = [
    ('load_cores', 'CPU the load got, cores'),
    ('bg_busy_pct', 'machine busy % at setup (load included)'),
    ('pre_busy_pct', 'machine busy % before (others)'),
    ('loadavg1', 'load average (1 min) at start'),
]


def fmt(x):
    if x is None:
        return '-'
    return f'{x:.0f}' if abs(x) >= 100 else f'{x:.2f}' if abs(x) < 10 else f'{x:.1f}'


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def rfmt(r):
    return '-' if r is None else f'{r:.2f}×'


def table(v, ours):
    peers = [t for t in topos if t != ours]
    # Rounds of whichever metric ran most (BA_MEASURE may leave TCP out).
    n = max([len(vals.get((v, ours, m), [])) for m, _, _ in METRICS] + [1])
    tag = '' if variants == ['quiet'] else f' — {v}'
    print(f'\n## vswitch ("{ours}") beside its peers{tag}: medians of {n} round(s), ratios vswitch/peer\n')
    print('| metric | ' + ' | '.join([ours] + peers) + ' | ' + ' | '.join(f'÷{p}' for p in peers) + ' |')
    print('|---' * (1 + 2 * len(peers) + 1) + '|')
    for m, label, _ in METRICS:
        if all(med(v, t, m) is None for t in topos):
            continue
        o = med(v, ours, m)
        cells = [fmt(med(v, t, m)) for t in [ours] + peers]
        rs = [ratio(o, med(v, p, m)) for p in peers]
        print(f'| {label} | ' + ' | '.join(cells) + ' | ' + ' | '.join(rfmt(r) for r in rs) + ' |')
    # CPU per gigabit: what a switch pays for the bytes it moves.
    print('\nswitch CPU seconds per Gbit/s of TCP (lower is better): ' + ', '.join(
        f'{t} {fmt(ratio(med(v, t, "tcp_sw_cpu_s"), med(v, t, "tcp_gbps")))}'
        for t in topos if med(v, t, 'tcp_sw_cpu_s') is not None))


# issue 19's targets (ratios in one run; quiet and busy variants both)
TARGETS = [
    ('ping avg ≤ 1.0× vde', 'ping_avg_us', 'vde', 1.0, False),
    ('sockperf RTT ≤ 1.0× vde', 'sp_avg_us', 'vde', 1.0, False),
    ('64 B frames rcvd ≥ 1.1× vde', 'tg_rx_kpps', 'vde', 1.1, True),
    ('64 B frames rcvd ≥ 1.1× ovs-tap', 'tg_rx_kpps', 'ovs-tap', 1.1, True),
    ('64 B frames rcvd ≥ 1.1× ovs-tap-tso', 'tg_rx_kpps', 'ovs-tap-tso', 1.1, True),
    ('TCP ≥ 1.0× ovs-tap-tso', 'tcp_gbps', 'ovs-tap-tso', 1.0, True),
    ('TCP ≥ 0.8× kbridge', 'tcp_gbps', 'kbridge', 0.8, True),
]


def targets(v, ours):
    tag = '' if variants == ['quiet'] else f' — {v}'
    print(f'\n### Targets (issue 19){tag}' + ('' if ours == 'ours' else f' ("{ours}")') + '\n')
    for label, m, peer, want, higher in TARGETS:
        if peer not in topos:
            continue
        r = ratio(med(v, ours, m), med(v, peer, m))
        if r is None:
            print(f'- {label}: not measured')
            continue
        ok = r >= want if higher else r <= want
        print(f'- {label}: {r:.2f}× — {"met" if ok else "MISSED"}')


for ours in ourses:
    for v in variants:
        table(v, ours)
        targets(v, ours)

for ours in ourses if len(variants) > 1 else []:
    peers = [t for t in topos if t != ours]
    for b in variants[1:]:
        print(f'\n## "{ours}": quiet / {b} side by side (each cell: quiet / {b}; ratios vswitch/peer within each variant)\n')
        print('| metric | ' + ' | '.join([ours] + peers) + ' | ' + ' | '.join(f'÷{p}' for p in peers) + ' |')
        print('|---' * (1 + 2 * len(peers) + 1) + '|')
        for m, label, _ in METRICS:
            if all(med(v, t, m) is None for v in ('quiet', b) for t in topos):
                continue
            cells = [f'{fmt(med("quiet", t, m))} / {fmt(med(b, t, m))}' for t in [ours] + peers]
            rs = [f'{rfmt(ratio(med("quiet", ours, m), med("quiet", p, m)))} / {rfmt(ratio(med(b, ours, m), med(b, p, m)))}'
                  for p in peers]
            print(f'| {label} | ' + ' | '.join(cells) + ' | ' + ' | '.join(rs) + ' |')
        for m, label in CONTEXT:
            if all(med(v, t, m) is None for v in ('quiet', b) for t in topos):
                continue
            cells = [f'{fmt(med("quiet", t, m))} / {fmt(med(b, t, m))}' for t in [ours] + peers]
            print(f'| *{label}* | ' + ' | '.join(cells) + ' |' + ' |' * len(peers))

if meta:
    print(f"\nloadavg start {meta.get('loadavg_start')} end {meta.get('loadavg_end')}, wall {meta.get('wall_s')} s")
