#!/usr/bin/env python3
"""Splits one process's samples in a profile.sh perf.data by where the time goes.

usage: perf script -i OUT/TOPO/perf.data --pid PID -F comm,pid,tid,ip,sym | python3 split.py

Each sample is put in the first class whose frame appears in its call chain (leaf
first), so a receiving VM's TCP stack that runs inside our TAP write is counted as
such, not as the write. Classes (kernel function names of 6.x):
  write: VM stack      netif_receive_skb... under a TAP write (the receiver's IP/TCP)
  write: copy+alloc    the rest of tun_get_user (skb allocation, copy from user)
  read: copy           tun_do_read (copy to user, freeing the sender's skb)
  sched/wait           schedule, epoll (sleeping, switching)
  other kernel         any other kernel frame at the leaf
  user                 JS, V8, libuv, N-API, the addon, libc
Note: on a VM without a PMU perf samples cpu-clock, which lands late inside regions
with interrupts off (softirqs end at __local_bh_enable_ip): classes by call chain
are robust to that, leaf symbols are not.
"""
import collections
import sys


def classify(names):
    """names: one sample's call chain, leaf first; the leaf marked '[k]' when in the kernel."""
    joined = ' '.join(names)
    if 'tun_get_user' in joined or 'tun_chr_write_iter' in joined:
        if any(n.startswith(('netif_receive_skb', '__netif_receive_skb', 'ip_rcv', 'tcp_v4_rcv', 'do_softirq', '__local_bh_enable_ip')) for n in names):
            return 'write: VM stack (IP/TCP rx, wakeups)'
        return 'write: copy+alloc'
    if 'tun_do_read' in joined or 'tun_chr_read_iter' in joined:
        return 'read: copy+free'
    if any(n in ('schedule', '__schedule', 'finish_task_switch.isra.0', 'do_epoll_wait', 'ep_poll', 'epoll_pwait') for n in names):
        return 'sched/epoll'
    if names and names[0].startswith('[k]'):
        return 'other kernel'
    return 'user (JS, V8, libuv, addon)'


def stacks(lines):
    """Call chains (leaf first) from `perf script -F comm,pid,tid,ip,sym,dso` output."""
    stack = []
    for line in lines:
        if not line.startswith((' ', '\t')) or not line.strip():
            if stack:
                yield stack
            stack = []
            continue
        parts = line.split(None, 1)
        if len(parts) < 2:
            continue
        sym = parts[1].strip().rsplit(' (', 1)[0].split('+0x')[0]
        if not stack and '([kernel.kallsyms])' in line:
            sym = '[k]' + sym
        stack.append(sym)
    if stack:
        yield stack


def split(lines):
    classes = collections.Counter(classify(s) for s in stacks(lines))
    return classes, sum(classes.values())


if __name__ == '__main__':
    classes, total = split(sys.stdin)
    for k, v in classes.most_common():
        print(f'{k:40s} {v:6d} {100 * v / max(1, total):5.1f} %')
    print(f'{"samples":40s} {total:6d}')
