#!/usr/bin/env python3
"""Self-test of report.py: a raw TSV without variants (anchors.sh's) and one
with (run.sh --busy) give the medians, ratios, targets and side-by-side cells
they should. usage: python3 bench/report_test.py   (exit 0 = pass)"""
import os
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))


def report(rows, topos, variant_col):
    with tempfile.NamedTemporaryFile('w', suffix='.tsv', delete=False) as f:
        f.write('round\ttopo\tmetric\tvalue' + ('\tvariant' if variant_col else '') + '\n')
        for r in rows:
            f.write('\t'.join(map(str, r if variant_col else r[:4])) + '\n')
        path = f.name
    out = subprocess.run([sys.executable, os.path.join(here, 'report.py'), path, *topos],
                         capture_output=True, text=True, check=True).stdout
    os.unlink(path)
    return out


bad = []
rows = []
for rnd, (o, v, bo, bv) in enumerate([(100, 80, 300, 200), (120, 100, 500, 250), (110, 90, 400, 260)], 1):
    rows += [(rnd, 'ours', 'ping_avg_us', o, 'quiet'), (rnd, 'vde', 'ping_avg_us', v, 'quiet'),
             (rnd, 'ours', 'ping_avg_us', bo, 'one'), (rnd, 'vde', 'ping_avg_us', bv, 'one'),
             (rnd, 'ours', 'load_cores', 0.9, 'one'), (rnd, 'ours', 'tcp_gbps', 'FAIL', 'quiet')]
rows.append((0, 'meta', 'loadavg_start', '1.0 1.0 1.0', 'all'))

out = report(rows, ['ours', 'vde'], True)
for want in ['| ping avg µs | 110 | 90.0 | 1.22× |',            # quiet: medians 110 / 90
             '| ping avg µs | 400 | 250 | 1.60× |',              # one: 400 / 250
             '- ping avg ≤ 1.0× vde: 1.22× — MISSED',
             '- ping avg ≤ 1.0× vde: 1.60× — MISSED',
             '| ping avg µs | 110 / 400 | 90.0 / 250 | 1.22× / 1.60× |',
             '| *CPU the load got, cores* | - / 0.90 | - / - |',
             'loadavg start 1.0 1.0 1.0']:
    if want not in out:
        bad.append(f'with variants: missing {want!r}')
if 'meta' in out.split('loadavg start')[0]:
    bad.append('the meta rows became a topology or variant')

out = report([r for r in rows if r[4] == 'quiet'], ['ours', 'vde'], False)
if '| ping avg µs | 110 | 90.0 | 1.22× |' not in out or 'side by side' in out or '— quiet' in out:
    bad.append('without variants: not the plain single table')

# run.sh's `ours-fc` (flow cache on): a vswitch variant with its own table and
# targets beside the same peers, and the ratio to `ours` in it
fc = [r for r in rows if r[4] == 'quiet'] + [(rnd, 'ours-fc', 'ping_avg_us', x, 'quiet')
                                            for rnd, x in enumerate([80, 90, 85], 1)]
out = report(fc, ['ours', 'ours-fc', 'vde'], False)
for want in ['## vswitch ("ours-fc") beside its peers',
             '| ping avg µs | 85.0 | 110 | 90.0 | 0.77× | 0.94× |',   # ours-fc ÷ours, ÷vde
             '### Targets (issue 19) ("ours-fc")',
             '- ping avg ≤ 1.0× vde: 0.94× — met',
             '- ping avg ≤ 1.0× vde: 1.22× — MISSED']:          # ours's own targets still there
    if want not in out:
        bad.append(f'with ours-fc: missing {want!r}')

if bad:
    print(out)
    print('\n'.join(bad))
    sys.exit(1)
print('report.py: ok')
