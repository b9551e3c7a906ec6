#!/usr/bin/env python3
"""ICMP echo every INTERVAL s to DST for COUNT pings; prints "<epoch send ms> <rtt ms>
<kernel rtt ms>" per reply (lost ones: "<send ms> -"), so a slow ping can be matched to
the daemon's probe log (probe.cjs) by time. busybox ping has no timestamps. The kernel
RTT ends when the reply entered this namespace's stack (SO_TIMESTAMPNS: the skb's receive
time, taken in the writer's context, i.e. inside the switch's write to the TAP), not when
this process got a CPU to read it: the difference is the pinger's own wait.

Usage: pinger.py DST COUNT INTERVAL
"""
import os, select, socket, struct, sys, time

SO_TIMESTAMPNS = 35  # asm-generic/socket.h; not in Python's socket module

def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff

dst, count, ivl = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
ident = os.getpid() & 0xffff
sent = {}
start = time.monotonic()
wall0 = time.time() - start
nxt = start
seq = 0
out = []
while seq < count or (sent and time.monotonic() < nxt + 1.0):
    now = time.monotonic()
    if seq < count and now >= nxt:
        hdr = struct.pack('!BBHHH', 8, 0, 0, ident, seq)
        pl = bytes(56)
        pkt = struct.pack('!BBHHH', 8, 0, csum(hdr + pl), ident, seq) + pl
        sent[seq] = time.monotonic()
        s.sendto(pkt, (dst, 0))
        seq += 1
        nxt += ivl
        continue
    r, _, _ = select.select([s], [], [], max(0, min(nxt, now + 0.05) - now) if seq < count else 0.05)
    if r:
        d, anc, _, _ = s.recvmsg(2048, 64)
        t = time.monotonic()
        kt = None  # the reply's arrival in the stack, on the monotonic clock
        for lvl, typ_, data in anc:
            if lvl == socket.SOL_SOCKET and typ_ == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack('qq', data[:16])
                kt = t - (time.time() - (sec + nsec / 1e9))
        ihl = (d[0] & 15) * 4
        typ, _, _, i, q = struct.unpack('!BBHHH', d[ihl:ihl + 8])
        if typ == 0 and i == ident and q in sent:
            ts = sent.pop(q)
            out.append((ts, (t - ts) * 1e3, None if kt is None else (kt - ts) * 1e3))
for ts in sent.values():
    out.append((ts, None, None))
for ts, rtt, krtt in sorted(out):
    if rtt is None:
        print(f'{(wall0 + ts) * 1e3:.3f} -')
    else:
        print(f'{(wall0 + ts) * 1e3:.3f} {rtt:.3f}' + ('' if krtt is None else f' {krtt:.3f}'))
