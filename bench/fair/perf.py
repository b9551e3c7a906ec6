#!/usr/bin/env python3
"""Where the daemon's CPU goes under the flood (FAIR_PERF=1 bash bench/fair/run.sh ...).

For each window run.sh sampled (ROUND-TOPO: the noisy phase's C -> D TCP; ROUND-TOPO-flood:
A's flood alone, before any TCP), from its perf samples, its ports' counters and its
schedstat: the daemon's CPU per frame read (run time / frames read on all ports), split by
where each sample's leaf ran:
  kernel read / write / poll / other   the syscall it is under (the TAP read, the TAP
                                       write, epoll_wait) or none (interrupts, faults)
  receiver stack                       under netif_receive_skb: the receiving VM's own
                                       stack, which a TAP write runs in the writer's context
  C (addon)                            netdev.node: the drain, the flow cache's replay
  libc                                 syscall wrappers, memcpy
  JS (JIT)                             code in perf-PID.map (--perf-basic-prof)
  node                                 the node binary: V8's interpreter, builtins,
                                       runtime and GC, libuv, N-API
and per port: frames and bytes read, rounds in which the port had more than its share
(`vswitch_port_read_rounds_full_total`), so frames and bytes per full round.
Usage: python3 bench/fair/perf.py DIR
"""
import collections, glob, os, re, subprocess, sys

SYSCALL = re.compile(r'(?:__x64_sys|__se_sys|__do_sys|ksys)_(\w+)')


def metrics(path):
    out = collections.defaultdict(dict)
    for line in open(path):
        m = re.match(r'(vswitch_port_(?:rx_frames|rx_bytes|read_rounds_full)_total)\{([^}]*)\} (\S+)', line)
        if not m:
            continue
        port = re.search(r'port="([^"]*)"', m.group(2)).group(1)
        out[port][m.group(1).split('_', 2)[2].replace('_total', '')] = float(m.group(3))
    return out


def classify(stack):
    leaf_sym, leaf_dso = stack[0]
    if 'kernel' in leaf_dso:
        if any(sym.startswith('netif_receive_skb') for sym, _ in stack):
            return 'receiver stack'
        user = next((i for i, (sym, _) in enumerate(stack) if sym.startswith('entry_SYSCALL_64')), None)
        if user is None or user + 1 >= len(stack):
            return 'kernel other'
        name = stack[user + 1][0]
        if 'epoll' in name:
            return 'kernel poll'
        if 'read' in name or 'recv' in name:
            return 'kernel read'
        if 'write' in name or 'send' in name:
            return 'kernel write'
        return 'kernel other'
    if leaf_dso.endswith('.node'):
        return 'C (addon)'
    if 'libc' in leaf_dso:
        return 'libc'
    if 'perf-' in leaf_dso and leaf_dso.endswith('.map'):
        return 'JS (JIT)'
    return 'node'


def samples(data):
    r = subprocess.run(['perf', 'script', '-i', data, '-F', 'ip,sym,dso'], capture_output=True, text=True)
    stack = []
    for line in r.stdout.splitlines() + ['']:
        line = line.strip()
        if not line:
            if stack:
                yield stack
            stack = []
            continue
        m = re.match(r'[0-9a-f]+ (.*) \(([^)]*)\)$', line)
        if m:
            stack.append((m.group(1), os.path.basename(m.group(2))))


CLASSES = ['kernel read', 'kernel write', 'receiver stack', 'kernel poll', 'kernel other', 'C (addon)', 'libc', 'JS (JIT)', 'node']


def main(d):
    print('| window | load | CPU run / wait % of a core | frames read kpps | µs CPU per frame | ' +
          ' | '.join(f'{c} µs/frame' for c in CLASSES) + ' |')
    print('|---' * (5 + len(CLASSES)) + '|')
    ports_rows, split_rows, costs = [], [], {}
    for data in sorted(glob.glob(os.path.join(d, '*.data'))):
        base = data[:-5]
        name = os.path.basename(base)
        counts = collections.Counter(classify(s) for s in samples(data))
        total = sum(counts.values()) or 1
        try:
            sch = open(base + '.sched').read().split()
            run0, wait0, t0, run1, wait1, t1 = (float(x) for x in sch)
        except (OSError, ValueError):
            continue
        secs = t1 - t0
        m0, m1 = metrics(base + '.m0'), metrics(base + '.m1')
        frames = sum(m1[p].get('rx_frames', 0) - m0.get(p, {}).get('rx_frames', 0) for p in m1)
        us = (run1 - run0) / 1e3 / frames if frames else float('nan')
        load = open(base + '.load').read().strip() if os.path.exists(base + '.load') else '?'
        print(f'| {name} | {load} | {(run1 - run0) / 1e7 / secs:.0f} / {(wait1 - wait0) / 1e7 / secs:.0f} | '
              f'{frames / secs / 1e3:.1f} | {us:.2f} | ' +
              ' | '.join(f'{us * counts[c] / total:.2f}' for c in CLASSES) + ' |')
        costs[name] = us
        # Per VM, the processes alive at both ends of the window (a process that started or
        # exited inside it is left out: its counts would not be the window's).
        vms = {}
        if os.path.exists(base + '.vms0') and os.path.exists(base + '.vms1'):
            a = {(v, p): (float(r), float(w)) for v, p, r, w in (l.split() for l in open(base + '.vms0'))}
            for v, p, r, w in (l.split() for l in open(base + '.vms1')):
                if (v, p) in a:
                    run, wait = vms.get(v, (0.0, 0.0))
                    vms[v] = (run + (float(r) - a[(v, p)][0]) / 1e7 / secs, wait + (float(w) - a[(v, p)][1]) / 1e7 / secs)
        # The share per round: the flooding port (A, bAt1) is backlogged every round, so its
        # full rounds count the rounds; its frames cost what they cost alone (the -flood window).
        fa = m1.get('bAt1', {}).get('rx_frames', 0) - m0.get('bAt1', {}).get('rx_frames', 0)
        ra = m1.get('bAt1', {}).get('read_rounds_full', 0) - m0.get('bAt1', {}).get('read_rounds_full', 0)
        fl = costs.get(name + '-flood')
        if ra and fl and not name.endswith('-flood'):
            per_round = (run1 - run0) / 1e3 / ra
            a_us = fa / ra * fl
            cb = m1.get('bAt3', {}).get('rx_bytes', 0) - m0.get('bAt3', {}).get('rx_bytes', 0)
            cf = m1.get('bAt3', {}).get('rx_frames', 0) - m0.get('bAt3', {}).get('rx_frames', 0)
            split_rows.append(f'| {name} | {ra / secs / 1e3:.2f} | {per_round:.0f} | {fa / ra:.1f} × {fl:.2f} = {a_us:.0f} | '
                              f'{per_round - a_us:.0f} | {cf / ra:.1f} / {cb / ra / 1024:.0f} | '
                              + ' | '.join(f'{vms[k][0]:.0f} / {vms[k][1]:.0f}' if k in vms else '–' for k in '1234') + ' |')
        for p in sorted(m1):
            f = m1[p].get('rx_frames', 0) - m0.get(p, {}).get('rx_frames', 0)
            b = m1[p].get('rx_bytes', 0) - m0.get(p, {}).get('rx_bytes', 0)
            r = m1[p].get('read_rounds_full', 0) - m0.get(p, {}).get('read_rounds_full', 0)
            if f:
                ports_rows.append(f'| {name} | {p} | {f / secs / 1e3:.1f} | {b / f:.0f} | {b * 8 / secs / 1e9:.2f} | '
                                  f'{r / secs / 1e3:.2f} | {f / r if r else float("nan"):.1f} | {b / r / 1024 if r else float("nan"):.0f} |')
    print('\n| window | port | frames read kpps | bytes per frame | Gbit/s read | full rounds k/s | frames per full round | KiB per full round |')
    print('|---|---|---|---|---|---|---|---|')
    print('\n'.join(ports_rows))
    print('\n| window | rounds k/s (A full) | daemon µs per round | A: frames × µs (flood alone) = µs per round | '
          'the rest µs per round (C, D, B, A\'s TCP) | C frames / KiB per round | VM A run / wait % of a core | VM B | VM C | VM D |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    print('\n'.join(split_rows))


if __name__ == '__main__':
    main(sys.argv[1])
