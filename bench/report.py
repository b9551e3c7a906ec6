#!/usr/bin/env python3
"""Medians per topology and ratios vswitch/peer from anchors.sh's raw TSV.

usage: report.py RAW.tsv [TOPOLOGY ...]   (the first topology, `ours` by default, is vswitch)
"""
import csv
import statistics as st
import sys

raw = sys.argv[1]
topos = sys.argv[2:] or ['ours', 'kbridge', 'vde', 'ovs-tap', 'ovs-tap-tso', 'pasta']
ours = 'ours' if 'ours' in topos else topos[0]
peers = [t for t in topos if t != ours]

rows = list(csv.DictReader(open(raw), delimiter='\t'))
vals = {}
for r in rows:
    try:
        vals.setdefault((r['topo'], r['metric']), []).append(float(r['value']))
    except ValueError:
        pass


def med(t, m):
    v = vals.get((t, m))
    return st.median(v) if v else None


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
    ('tcp_rev_gbps', 'TCP -R Gbit/s', True),
]


def fmt(x):
    if x is None:
        return '-'
    return f'{x:.0f}' if abs(x) >= 100 else f'{x:.2f}' if abs(x) < 10 else f'{x:.1f}'


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


n = max((len(vals.get((ours, 'tcp_gbps'), [])), 1))
print(f'\n## vswitch ("{ours}") beside its peers: medians of {n} round(s), ratios vswitch/peer\n')
print('| metric | ' + ' | '.join([ours] + peers) + ' | ' + ' | '.join(f'÷{p}' for p in peers) + ' |')
print('|---' * (1 + 2 * len(peers) + 1) + '|')
for m, label, _ in METRICS:
    if all(med(t, m) is None for t in topos):
        continue
    o = med(ours, m)
    cells = [fmt(med(t, m)) for t in [ours] + peers]
    rs = [ratio(o, med(p, m)) for p in peers]
    print(f'| {label} | ' + ' | '.join(cells) + ' | ' + ' | '.join('-' if r is None else f'{r:.2f}×' for r in rs) + ' |')

# CPU per gigabit: what a switch pays for the bytes it moves.
print('\nswitch CPU seconds per Gbit/s of TCP (lower is better): ' + ', '.join(
    f'{t} {fmt(ratio(med(t, "tcp_sw_cpu_s"), med(t, "tcp_gbps")))}' for t in topos if med(t, 'tcp_sw_cpu_s') is not None))

TARGETS = [
    ('TCP ≥ 1.0× ovs-tap-tso', 'tcp_gbps', 'ovs-tap-tso', 1.0, True),
    ('TCP ≥ 0.8× kbridge', 'tcp_gbps', 'kbridge', 0.8, True),
    ('64 B frames rcvd ≥ 1.3× ovs-tap', 'tg_rx_kpps', 'ovs-tap', 1.3, True),
    ('64 B frames rcvd ≥ 1.3× vde', 'tg_rx_kpps', 'vde', 1.3, True),
    ('ping avg ≤ 1.0× vde', 'ping_avg_us', 'vde', 1.0, False),
]
print('\n### Targets (issue 5)\n')
for label, m, peer, want, higher in TARGETS:
    r = ratio(med(ours, m), med(peer, m))
    if r is None:
        print(f'- {label}: not measured')
        continue
    ok = r >= want if higher else r <= want
    print(f'- {label}: {r:.2f}× — {"met" if ok else "MISSED"}')
