#!/usr/bin/env python3
"""run.sh's table from its raw rows (one per round, topology and phase): python3 summary.py RAW.tsv "TOPO ..." SECONDS.
run.sh prints the raw file's path, so a run's table can be made again."""
import sys, statistics as st
rows = [l.rstrip('\n').split('\t') for l in open(sys.argv[1])]
topos, secs = sys.argv[2].split(), float(sys.argv[3])
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float('nan')
by = {}
for r, topo, ph, tcp, times, sent, rx, abg, load, cpu in rows:
    t = [float(x) for x in times.split()]
    run, wait = (float(x) for x in cpu.split('/')) if '/' in cpu else (float('nan'), float('nan'))
    by.setdefault((topo, ph), []).append(dict(g=float(tcp or 0), p50=pct(t, 50), p99=pct(t, 99), lost=secs * 100 - len(t),
                                              sent=float(sent or 0), rx=float(rx or 0), ab=float(abg or 0), load=float(load),
                                              run=run, wait=wait))
def med(topo, ph, k):
    xs = [x[k] for x in by.get((topo, ph), [])]
    return st.median(xs) if xs else float('nan')
def rng(topo, ph, k, f):
    xs = [x[k] for x in by.get((topo, ph), [])]
    return '–'.join(f.format(x) for x in (min(xs), max(xs))) if xs else ''
print('\nC -> D, medians over rounds (min–max); noisy: A floods B with 64-byte frames and runs TCP to it\n')
print('| topology | quiet TCP Gbit/s | noisy TCP Gbit/s | TCP noisy÷quiet | quiet ping p50 / p99 ms | noisy ping p50 / p99 ms | p99 noisy÷quiet | pings lost (noisy) | A flood sent / B rx kpps | A-B TCP Gbit/s | switch CPU run / runqueue wait, % of a core (quiet; noisy) | load avg (quiet, noisy) |')
print('|---|---|---|---|---|---|---|---|---|---|---|---|')
res = {}
for t in topos:
    if (t, 'quiet') not in by: continue
    qg, ng = med(t, 'quiet', 'g'), med(t, 'noisy', 'g')
    qp, np_ = med(t, 'quiet', 'p99'), med(t, 'noisy', 'p99')
    gr = [n['g'] / q['g'] if q['g'] else 0 for q, n in zip(by[(t, 'quiet')], by[(t, 'noisy')])]
    pr = [n['p99'] / q['p99'] if q['p99'] else float('inf') for q, n in zip(by[(t, 'quiet')], by[(t, 'noisy')])]
    res[t] = (st.median(gr), st.median(pr))
    print(f"| {t} | {qg:.2f} ({rng(t, 'quiet', 'g', '{:.2f}')}) | {ng:.2f} ({rng(t, 'noisy', 'g', '{:.2f}')}) | "
          f"**{st.median(gr):.2f}×** ({min(gr):.2f}–{max(gr):.2f}) | {med(t, 'quiet', 'p50'):.3f} / {qp:.3f} | "
          f"{med(t, 'noisy', 'p50'):.3f} / {np_:.3f} | **{st.median(pr):.2f}×** ({min(pr):.2f}–{max(pr):.2f}) | "
          f"{med(t, 'noisy', 'lost'):.0f} | {med(t, 'noisy', 'sent'):.0f} / {med(t, 'noisy', 'rx'):.0f} | {med(t, 'noisy', 'ab'):.2f} | "
          f"{med(t, 'quiet', 'run'):.0f} / {med(t, 'quiet', 'wait'):.0f}; {med(t, 'noisy', 'run'):.0f} / {med(t, 'noisy', 'wait'):.0f} | "
          f"{med(t, 'quiet', 'load'):.2f}, {med(t, 'noisy', 'load'):.2f} |")
print(f'\n(ratios: median over rounds of each round\'s noisy÷quiet; {len(by.get((topos[0], "quiet"), []))} rounds; '
      f'ping: {int(secs * 100)} × 10 ms after {secs:.0f} s of TCP)')
ours = lambda t: t.startswith('ours') or t.startswith('base')  # base: another build of ours (BASE_JS)
peers = [t for t in res if not ours(t)]
for t in [t for t in res if ours(t)]:
    g, p = res[t]
    ok = g >= 0.4 and p <= 3
    better = all(g > res[q][0] and p < res[q][1] for q in peers)
    print(f"target {t}: TCP >= 0.40x ({g:.2f}x) and ping p99 <= 3x ({p:.2f}x): {'met' if ok else 'missed'}; "
          f"better than {', '.join(peers) or 'no peer'} on both: {'yes' if better else 'no'}")
