#!/usr/bin/env python3
"""Self-test of timeline.py on a synthetic trace with known stretches.

usage: python3 bench/latency/timeline_test.py   (exit 0 = pass)

Two round trips of a thread 100 that sleeps in epoll_wait (NR 232), is woken
by another thread, reads (NR 0), writes (NR 1) the request, reads the reply,
writes it, and sleeps again; one round trip is preempted for 5 µs between its
reply's read and write, and a timer turn that writes nothing must not count.
Every stretch is chosen so that the medians are exact; the preempted round
trip's span is 80 µs and its user time still 17 (preemption is not user time;
`decide` is wall time, 11 µs there).
"""
import os
import subprocess
import sys
import tempfile

TID = 100


def ev(tid, t_us, name, rest):
    return f'{tid:>8} {t_us / 1e6:.9f}: {name}: {rest}'


def sysenter(t, nr):
    return ev(TID, t, 'raw_syscalls:sys_enter', f'NR {nr} (0, 0, 0, 0, 0, 0)')


def sysexit(t, nr):
    return ev(TID, t, 'raw_syscalls:sys_exit', f'NR {nr} = 0')


def round_trip(t0, preempt):
    """Woken at t0: rq 10, kret 4, user 3+6+2(+...) , reads 2+2, writes 20+20."""
    lines = [
        ev(7, t0, 'sched:sched_wakeup', f'comm=node pid={TID} prio=120 target_cpu=001'),
        ev(7, t0 + 10, 'sched:sched_switch', f'prev_comm=x prev_pid=7 prev_prio=120 prev_state=S ==> next_comm=node next_pid={TID} next_prio=120'),
        sysexit(t0 + 14, 232),            # kret 4
        sysenter(t0 + 17, 0),             # user 3
        sysexit(t0 + 19, 0),              # read 2
        sysenter(t0 + 25, 1),             # decide 6
        sysexit(t0 + 45, 1),              # write 20
        sysenter(t0 + 47, 0),             # user 2
        sysexit(t0 + 49, 0),              # read 2
    ]
    t = t0 + 49
    if preempt:
        lines += [
            ev(TID, t + 1, 'sched:sched_switch', f'prev_comm=node prev_pid={TID} prev_prio=120 prev_state=R ==> next_comm=y next_pid=8 next_prio=120'),
            ev(8, t + 6, 'sched:sched_switch', f'prev_comm=y prev_pid=8 prev_prio=120 prev_state=S ==> next_comm=node next_pid={TID} next_prio=120'),
        ]
        t += 5
    lines += [
        sysenter(t + 6, 1),               # decide 6 (+5 preempted)
        sysexit(t + 26, 1),               # write 20
        sysenter(t + 30, 232),            # back to sleep
    ]
    return lines


trace = [sysenter(500.0, 232)]  # asleep when the trace starts (a wakeup before any wait entry is ignored)
trace += round_trip(1000.0, False)
# a timer turn: woken, no write
trace += [ev(7, 5000.0, 'sched:sched_wakeup', f'comm=node pid={TID} prio=120 target_cpu=001'),
          ev(7, 5001.0, 'sched:sched_switch', f'prev_comm=x prev_pid=7 prev_prio=120 prev_state=S ==> next_comm=node next_pid={TID} next_prio=120'),
          sysexit(5002.0, 232), sysenter(5003.0, 232)]
trace += round_trip(11000.0, True)
trace += round_trip(21000.0, False)

with tempfile.NamedTemporaryFile('w', suffix='.txt', delete=False) as f:
    f.write('\n'.join(trace) + '\n')
    path = f.name
here = os.path.dirname(os.path.abspath(__file__))
out = subprocess.run([sys.executable, os.path.join(here, 'timeline.py'), path, str(TID)],
                     capture_output=True, text=True, check=True).stdout
os.unlink(path)
rows = {l.split('|')[1].strip(): l.split('|')[2].strip() for l in out.splitlines() if l.startswith('| ') and '---' not in l}
want = {
    'rq: woken -> on a CPU': '10.0',
    'kret: on a CPU -> wait returns': '4.0',
    'user': '17.0',          # 3 + 6 + 2 + 6
    'reads': '4.0',
    "writes (run the VMs' stacks)": '40.0',
    'preempted': '0.0',      # median of 0, 5, 0
    '**span: woken -> last write returns**': '75.0',  # 10 + 4 + 17 + 4 + 40
    'decide: read returns -> next write (per frame)': '6.0',
}
bad = []
for k, v in want.items():
    got = rows.get(k, '').split(' ')[0]
    if got != v:
        bad.append(f'{k}: want {v}, got {got!r}')
# p90s: the preempted round trip's span is 80, its user time still 17
for k, v in (('user', '17.0 (17.0)'), ('**span: woken -> last write returns**', '75.0 (80.0)'), ('preempted', '0.0 (5.0)')):
    if rows.get(k) != v:
        bad.append(f'{k}: want {v}, got {rows.get(k)!r}')
if 'episodes that wrote: 3 of 4 wakeups' not in out:
    bad.append('episode count: ' + out.splitlines()[0])
if bad:
    print(out)
    print('\n'.join(bad))
    sys.exit(1)
print('timeline.py: ok')
