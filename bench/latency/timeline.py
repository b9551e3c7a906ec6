#!/usr/bin/env python3
"""Cut a switch thread's trace into wakeups and time each stretch of them.

usage: timeline.py TRACE.txt TID
TRACE.txt: `perf script --ns -F tid,time,event,trace` of sched_wakeup,
sched_switch and raw_syscalls (bench/latency/trace.sh records it).

An *episode* starts when the thread, asleep in its wait (epoll_wait, poll), is
woken, and lasts until it is woken from sleep again; with pings 10 ms apart one
episode is one ping's round trip through the switch (request and reply: a
switch that reads the reply in the same turn, as vswitch's follow-up reads do,
forwards both in one loop turn; one that goes back to epoll first needs a turn
more, usually without sleeping). Only episodes that wrote a frame count. Each
is timed from the wakeup to the exit of its LAST write (when the reply is
handed to the pinging VM), split into:
  rq       woken -> on a CPU (runqueue wait)
  kret     on a CPU -> the wait returns (the kernel's return path)
  user     user time (libuv, N-API, V8, JS; for C switches their loop)
  reads    time inside read system calls
  writes   time inside write system calls (they run the receiving VM's stack:
           the request's write runs VM2's ICMP echo, in the switch's context)
  other    other system calls, and waits that returned at once
  off      preempted (sched_switch away while runnable) before the last write
plus `decide`: each user stretch from a read's return to the next write's
entry (for vswitch: V8's entry and the bridge pipeline, per frame).
Medians (p90) in µs over the episodes.
"""
import re
import statistics as st
import sys

WAIT = {7, 23, 232, 270, 271, 281, 441}      # poll select epoll_wait pselect6 ppoll epoll_pwait epoll_pwait2
READ = {0, 17, 19, 45, 47, 295, 299}         # read pread64 readv recvfrom recvmsg preadv recvmmsg
WRITE = {1, 18, 20, 44, 46, 296, 307}        # write pwrite64 writev sendto sendmsg pwritev sendmmsg

path, tid = sys.argv[1], int(sys.argv[2])
line_re = re.compile(r'^\s*(\d+)\s+([\d.]+):\s+(\S+):\s*(.*)$')
eps = []
ep = None
sleeping = False   # inside a wait that blocked (a wakeup came for us)
in_wait = False
woke = on = None
in_sys = None
last_read_exit = None
off_at = None
for line in open(path):
    m = line_re.match(line)
    if not m:
        continue
    ctx, t, ev, rest = int(m.group(1)), float(m.group(2)) * 1e6, m.group(3), m.group(4)
    if ev == 'sched:sched_wakeup':
        if in_wait and woke is None:
            woke = t
        continue
    if ev == 'sched:sched_switch':
        pp = re.search(r'prev_pid=(\d+)\s.*prev_state=(\S+)', rest)
        np_ = re.search(r'next_pid=(\d+)', rest)
        if np_ and int(np_.group(1)) == tid:
            on = t
            if off_at is not None and ep is not None:
                ep['off_run'] += t - off_at
            off_at = None
        elif pp and int(pp.group(1)) == tid and not in_wait:
            off_at = t   # preempted while running
        continue
    if ctx != tid:
        continue
    mm = re.search(r'NR (\d+)', rest)
    if not mm:
        continue
    nr = int(mm.group(1))
    if ev == 'raw_syscalls:sys_enter':
        in_sys = (nr, t)
        if nr in WAIT:
            in_wait = True
        elif ep is not None and nr in WRITE and last_read_exit is not None:
            ep['decide'].append(t - last_read_exit)
            last_read_exit = None
        continue
    if in_sys is None or in_sys[0] != nr:
        in_sys = None
        continue
    dt = t - in_sys[1]
    in_sys = None
    if nr in WAIT:
        in_wait = False
        if woke is not None and on is not None and on >= woke:
            ep = {'woke': woke, 'rq': on - woke, 'kret': t - on, 'sys_run': {'r': 0.0, 'w': 0.0, 'o': 0.0},
                  'off_run': 0.0, 'decide': [], 'last': None, 'nw': 0}
            eps.append(ep)
        elif ep is not None:
            ep['sys_run']['o'] += dt      # a wait that returned without sleeping
        woke = on = None
        last_read_exit = None
        continue
    if ep is None:
        continue
    if nr in READ:
        ep['sys_run']['r'] += dt
        last_read_exit = t
    elif nr in WRITE:
        ep['sys_run']['w'] += dt
        ep['nw'] += 1
        # snapshot at the last write's exit: what counts for the round trip
        ep['last'] = {'t': t, 'r': ep['sys_run']['r'], 'w': ep['sys_run']['w'], 'o': ep['sys_run']['o'],
                      'off': ep['off_run'], 'decide': list(ep['decide'])}
    else:
        ep['sys_run']['o'] += dt

fw = [e for e in eps if e['last'] is not None]
if not fw:
    print('no episode wrote a frame')
    sys.exit(0)
for e in fw:
    L = e['last']
    e['span'] = L['t'] - e['woke']
    e['user'] = e['span'] - e['rq'] - e['kret'] - L['r'] - L['w'] - L['o'] - L['off']


def stat(xs):
    xs = sorted(xs)
    if not xs:
        return '-'
    return f'{st.median(xs):.1f} ({xs[min(len(xs) - 1, int(0.9 * len(xs)))]:.1f})'


print(f'episodes that wrote: {len(fw)} of {len(eps)} wakeups; writes per episode {st.median(e["nw"] for e in fw):.0f}')
# The longest spans, split: a ping's average is often theirs (one 10 ms stretch in 300 pings is 33 us of it).
worst = sorted(fw, key=lambda e: -e['span'])[:3]
print('longest spans (µs: span = rq + kret + user + reads + writes + other + preempted): ' + '; '.join(
    f"{e['span']:.0f} = {e['rq']:.0f} + {e['kret']:.0f} + {e['user']:.0f} + {e['last']['r']:.0f} + {e['last']['w']:.0f} + {e['last']['o']:.0f} + {e['last']['off']:.0f}" for e in worst))
print()
print('| stretch (wakeup -> last write returns) | median (p90) µs |')
print('|---|---|')
for label, xs in [
    ('rq: woken -> on a CPU', [e['rq'] for e in fw]),
    ('kret: on a CPU -> wait returns', [e['kret'] for e in fw]),
    ('user', [e['user'] for e in fw]),
    ('reads', [e['last']['r'] for e in fw]),
    ('writes (run the VMs\' stacks)', [e['last']['w'] for e in fw]),
    ('other system calls', [e['last']['o'] for e in fw]),
    ('preempted', [e['last']['off'] for e in fw]),
    ('**span: woken -> last write returns**', [e['span'] for e in fw]),
    ('decide: read returns -> next write (per frame)', [d for e in fw for d in e['last']['decide']]),
]:
    print(f'| {label} | {stat(xs)} |')
