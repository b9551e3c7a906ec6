#!/usr/bin/env python3
"""Where and behind whom C's pinger waits (run.sh's FAIR_TRACE=1 logs).

Usage: wakeups.py [-v] DIR   (every ROUND-TOPO-noisy.trace with its .pid and .procs)

Per ping, from the tracefs log alone (one clock): the request leaving C (net_dev_queue on
C's interface, by the pinger), the reply entering C's stack (netif_receive_skb, 84 bytes:
inside the switch's write to C's TAP), the pinger's wake-up (sched_waking: by whom, on
which CPU, for which target CPU) and the switch that put it on a CPU. A ping whose
wake-to-run wait is over WAIT ms (env, default 1) is listed with -v, with what ran on the
pinger's CPU meanwhile (task and ms) and whether it migrated. Summary per log: the wait's
p50/p99/max, the slow waits' count by waker (the switch's thread, a kworker, ...) and by
where they landed (the waker's CPU or the other), and the tasks that ran during the slow
waits, by total ms; and how many pings over 2 ms (request out to the pinger on a CPU) owe
more to the wait to run than to the network part.
"""
import collections
import glob
import os
import re
import sys

LINE = re.compile(r'^\s*(.+)-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+):\s+(\w+):\s+(.*)$')
KV = re.compile(r'(\w+)=(\S+)')


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))] if xs else float('nan')


def parse(path):
    ev = []
    for line in open(path, errors='replace'):
        m = LINE.match(line)
        if not m:
            continue
        comm, pid, cpu, ts, name, rest = m.groups()
        if name == 'sched_switch':
            a, _, b = rest.partition(' ==> ')
            pa, pb = dict(KV.findall(a)), dict(KV.findall(b))
            f = {'prev_pid': int(pa.get('prev_pid', -1)), 'prev_comm': pa.get('prev_comm', '?'),
                 'prev_state': pa.get('prev_state', '?'),
                 'next_pid': int(pb.get('next_pid', -1)), 'next_comm': pb.get('next_comm', '?')}
        else:
            f = dict(KV.findall(rest))
        ev.append((float(ts) * 1e3, int(cpu), name, comm, int(pid), f))
    return ev


def who(pid, names, comm):
    return names.get(pid, comm) + f'-{pid}'


def analyse(base, verbose, wait_ms):
    ev = parse(base + '.trace')
    pinger = int(open(base + '.pid').read().split()[0])
    names = {}
    if os.path.exists(base + '.procs'):
        lines = open(base + '.procs').read().splitlines()
        sw = lines[0].split()[1:] if lines else []
        for l in lines[1:]:
            f = l.split()
            if len(f) == 5 and f[0].isdigit() and f[0] in '1234':
                names[int(f[1])] = f'vm{"ABCD"[int(f[0]) - 1]}:{f[2]}'
            elif f and all(x.isdigit() for x in f):  # the switch's thread IDs
                for t in f:
                    names.setdefault(int(t), 'switch')
    names[pinger] = 'pinger'
    cur = {}          # cpu -> (pid, comm, since)
    pings = []        # dicts per request
    pend = collections.deque()  # requests in flight, oldest first (replies come back in order)
    waking = None     # (t, waker pid, waker comm, waker cpu, target cpu, ping)
    ran_on = collections.defaultdict(list)  # cpu -> [(t0, t1, pid, comm)]
    migr = []
    for t, cpu, name, comm, pid, f in ev:
        if name == 'sched_switch':
            if cpu in cur:
                p0, c0, s0 = cur[cpu]
                ran_on[cpu].append((s0, t, p0, c0))
            cur[cpu] = (f['next_pid'], f['next_comm'], t)
            if f['next_pid'] == pinger and waking:
                wt, wpid, wcomm, wcpu, tcpu, pg = waking
                rec = {'t': wt, 'wait': t - wt, 'waker': who(wpid, names, wcomm), 'wcpu': wcpu,
                       'tcpu': tcpu, 'cpu': cpu, 'ping': pg}
                if pg is not None:
                    pg['wake'] = rec
                    while pend and 'wake' in pend[0]:
                        pend.popleft()
                else:
                    pings.append({'other': rec})
                waking = None
        elif name == 'sched_waking' and int(f.get('pid', -1)) == pinger:
            pg = next((p for p in pend if 'rx' in p and 'wake' not in p), None)
            waking = (t, pid, comm, cpu, int(f.get('target_cpu', -1)), pg)
        elif name == 'sched_migrate_task' and int(f.get('pid', -1)) == pinger:
            migr.append((t, f.get('orig_cpu'), f.get('dest_cpu')))
        elif name == 'net_dev_queue' and f.get('len') == '98' and pid == pinger:
            pend.append({'tx': t})
            pings.append(pend[-1])
            while len(pend) > 64:
                pend.popleft()
        elif name == 'netif_receive_skb' and f.get('len') == '84':
            p = next((p for p in pend if 'rx' not in p), None)
            if p is not None:
                p['rx'] = t
                p['rx_by'] = who(pid, names, comm)
                p['rx_cpu'] = cpu
    reqs = [p for p in pings if 'tx' in p and 'rx' in p and 'wake' in p]
    # A reply that found the pinger awake (running, or runnable after its timer's wake-up): no wake-up to time.
    awake = sum(1 for p in pings if 'tx' in p and 'rx' in p and 'wake' not in p)
    waits = [p['wake']['wait'] for p in reqs]
    if not reqs:
        print(f'{os.path.basename(base)}: no complete pings in the trace ({len(ev)} events)')
        return
    net = [p['rx'] - p['tx'] for p in reqs]
    slow = [p for p in reqs if p['wake']['wait'] > wait_ms]
    by_waker = collections.Counter(p['wake']['waker'].rsplit('-', 1)[0] for p in slow)
    land = collections.Counter(('waker CPU' if p['wake']['cpu'] == p['wake']['wcpu'] else 'other CPU') for p in slow)
    land_all = collections.Counter(('waker CPU' if p['wake']['cpu'] == p['wake']['wcpu'] else 'other CPU') for p in reqs)
    culprits = collections.Counter()
    detail = []
    for p in slow:
        w = p['wake']
        t0, t1 = w['t'], w['t'] + w['wait']
        ran = collections.Counter()
        for s0, s1, rp, rc in ran_on[w['cpu']]:
            if s1 > t0 and s0 < t1 and rp != pinger:
                ran[who(rp, names, rc)] += min(s1, t1) - max(s0, t0)
        for k, v in ran.items():
            culprits[k.rsplit('-', 1)[0]] += v
        mg = [m for m in migr if t0 - 0.001 <= m[0] <= t1]
        detail.append(f'    +{p["tx"] - reqs[0]["tx"]:8.1f} ms net {p["rx"] - p["tx"]:.3f} (reply by {p["rx_by"]} on cpu{p["rx_cpu"]}) '
                      f'wait {w["wait"]:.3f} ms: woken by {w["waker"]} on cpu{w["wcpu"]}, target cpu{w["tcpu"]}, ran on cpu{w["cpu"]}'
                      f'{" migrated " + str(mg) if mg else ""}; meanwhile on cpu{w["cpu"]}: '
                      + ', '.join(f'{k} {v:.2f}' for k, v in ran.most_common()))
    rtt = [p['rx'] - p['tx'] + p['wake']['wait'] for p in reqs]
    tail = [p for p in reqs if p['rx'] - p['tx'] + p['wake']['wait'] > 2]
    tail_wait = sum(1 for p in tail if p['wake']['wait'] > p['rx'] - p['tx'])
    ovr = open(base + '.overrun').read().strip() if os.path.exists(base + '.overrun') else '?'
    print(f'{os.path.basename(base)}: {len(reqs)} pings woken by their reply (+{awake} found the pinger awake); net (request out to reply in C) p50 {pct(net, 50):.3f} '
          f'p99 {pct(net, 99):.3f}; RTT (to the pinger on a CPU) p99 {pct(rtt, 99):.3f}, {len(tail)} > 2 ms, '
          f'{tail_wait} of them mostly the wait to run; wake-to-run p50 {pct(waits, 50):.3f} p99 {pct(waits, 99):.3f} max {max(waits):.2f} ms; '
          f'landed ' + ', '.join(f'{k} {v}' for k, v in land_all.items()) + f'; waits > {wait_ms:g} ms: {len(slow)} ('
          + ', '.join(f'{k} {v}' for k, v in land.items()) + '), woken by ' + ', '.join(f'{k} {v}' for k, v in by_waker.most_common())
          + '; ran meanwhile: ' + ', '.join(f'{k} {v:.1f} ms' for k, v in culprits.most_common(6)) + f' [{ovr}]')
    if verbose:
        print('\n'.join(detail))


def main(argv):
    verbose = '-v' in argv
    args = [a for a in argv if a != '-v']
    wait_ms = float(os.environ.get('WAIT', '1'))
    for tr in sorted(glob.glob(os.path.join(args[0], '*.trace'))):
        analyse(tr[:-6], verbose, wait_ms)


if __name__ == '__main__':
    main(sys.argv[1:])
