#!/usr/bin/env python3
"""A minimal iBGP speaker for tests: opens one session (l2vpn-evpn) from LOCAL to
PEER:179 and sends EVPN type-2 routes written by hand, many to an UPDATE (a
gobgpd fed through its API takes minutes for 10,000 paths on a busy 2-core
machine; these go out in about a hundred UPDATEs). Then it keeps the session up
(keepalives) until killed, so the routes stand.

Usage: bgp-evpn-inject.py LOCAL PEER ASN PHASES.json
PHASES.json: a list of phases, each {"wait": FILE or null, "routes": [{"mac",
"vni", "rt": "ASN:N", "rd": "IP:N", "seq": N or null, "ip": IPv4 or IPv6
(optional: a MAC/IP route)}, ...]}; a phase with "wait"
starts when FILE exists. Prints "sent N" after each phase, and "notification C/S" for a
NOTIFICATION the peer sends (6/1: its prefix limit closed the session).
"""
import json
import os
import socket
import struct
import sys
import time

local, peer, asn, phases_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
phases = json.load(open(phases_file))


def msg(kind, body):
    return b'\xff' * 16 + struct.pack('!HB', 19 + len(body), kind) + body


def open_msg():
    caps = bytes([1, 4, 0, 25, 0, 70])  # multiprotocol l2vpn/evpn
    caps += bytes([65, 4]) + struct.pack('!I', asn)  # four-octet AS
    opt = bytes([2, len(caps)]) + caps
    return msg(1, struct.pack('!BHH4sB', 4, asn if asn < 65536 else 23456, 90, socket.inet_aton(local), len(opt)) + opt)


def rd_bytes(rd):
    ip, n = rd.split(':')
    return struct.pack('!H4sH', 1, socket.inet_aton(ip), int(n))


def nlri(r):
    mac = bytes(int(x, 16) for x in r['mac'].split(':'))
    vni = r['vni']
    ip = bytes([0])
    if r.get('ip'):
        ip = bytes([128]) + socket.inet_pton(socket.AF_INET6, r['ip']) if ':' in r['ip'] else bytes([32]) + socket.inet_aton(r['ip'])
    body = rd_bytes(r['rd']) + bytes(10) + struct.pack('!I', 0) + bytes([48]) + mac + ip + bytes([(vni >> 16) & 255, (vni >> 8) & 255, vni & 255])
    return bytes([2, len(body)]) + body


def update(routes, rt, seq):
    a, n = rt.split(':')
    ext = struct.pack('!BBHI', 0x00, 0x02, int(a), int(n))  # route target
    ext += bytes([0x03, 0x0c, 0, 0, 0, 0, 0, 8])  # encapsulation: VXLAN
    if seq is not None:
        ext += struct.pack('!BBBBI', 0x06, 0x00, 0, 0, seq)  # MAC mobility
    nl = b''.join(nlri(r) for r in routes)
    mp = struct.pack('!HBB4sB', 25, 70, 4, socket.inet_aton(local), 0) + nl
    attrs = bytes([0x40, 1, 1, 0])  # ORIGIN IGP
    attrs += bytes([0x40, 2, 0])  # AS_PATH empty (iBGP)
    attrs += bytes([0x40, 5, 4]) + struct.pack('!I', 100)  # LOCAL_PREF
    attrs += bytes([0xc0, 16, len(ext)]) + ext
    attrs += bytes([0x90, 14]) + struct.pack('!H', len(mp)) + mp  # MP_REACH_NLRI, extended length
    return msg(2, struct.pack('!H', 0) + struct.pack('!H', len(attrs)) + attrs)


def read_msg(s):
    hdr = b''
    while len(hdr) < 19:
        c = s.recv(19 - len(hdr))
        if not c:
            raise SystemExit('peer closed')
        hdr += c
    length, kind = struct.unpack('!HB', hdr[16:19])
    body = b''
    while len(body) < length - 19:
        c = s.recv(length - 19 - len(body))
        if not c:
            raise SystemExit('peer closed')
        body += c
    return kind, body


s = None
for _ in range(60):
    try:
        s = socket.create_connection((peer, 179), timeout=5, source_address=(local, 0))
        break
    except OSError:
        time.sleep(0.5)
if s is None:
    raise SystemExit('cannot connect')
s.sendall(open_msg())
kind, _ = read_msg(s)
if kind != 1:
    raise SystemExit('expected OPEN, got %d' % kind)
s.sendall(msg(4, b''))
while True:
    kind, body = read_msg(s)
    if kind == 3:
        raise SystemExit('NOTIFICATION %s' % body.hex())
    if kind == 4:
        break
s.setblocking(False)
last = time.time()


inbuf = b''


def drain():
    """Reads what the peer sends; a NOTIFICATION is printed ("notification CODE/SUBCODE",
    e.g. 6/1 Cease, maximum number of prefixes reached), the rest dropped."""
    global inbuf
    try:
        while True:
            c = s.recv(65536)
            if not c:
                break
            inbuf += c
    except (BlockingIOError, ConnectionResetError):
        pass
    while len(inbuf) >= 19:
        length, kind = struct.unpack('!HB', inbuf[16:19])
        if len(inbuf) < length:
            break
        if kind == 3 and length >= 21:
            print('notification %d/%d' % (inbuf[19], inbuf[20]), flush=True)
        inbuf = inbuf[length:]


def keepalive():
    global last
    drain()
    if time.time() - last > 10:
        s.setblocking(True)
        s.sendall(msg(4, b''))
        s.setblocking(False)
        last = time.time()


for ph in phases:
    while ph.get('wait') and not os.path.exists(ph['wait']):
        keepalive()
        time.sleep(0.1)
    groups = {}
    for r in ph['routes']:
        groups.setdefault((r['rt'], r.get('seq')), []).append(r)
    sent = 0
    s.setblocking(True)
    try:
        for (rt, seq), rs in groups.items():
            for i in range(0, len(rs), 100):  # 100 NLRIs of 35 bytes: one UPDATE under 4096 bytes
                s.sendall(update(rs[i:i + 100], rt, seq))
                sent += len(rs[i:i + 100])
    except (BrokenPipeError, ConnectionResetError):
        # The peer closed the session mid-phase (its prefix limit): say why and how far.
        s.setblocking(False)
        drain()
        print('closed after sent %d' % sent, flush=True)
        raise SystemExit(0)
    # End-of-RIB for l2vpn-evpn: an UPDATE whose only attribute is an empty MP_UNREACH_NLRI.
    eor = bytes([0x80, 15, 3]) + struct.pack('!HB', 25, 70)
    s.sendall(msg(2, struct.pack('!HH', 0, len(eor)) + eor))
    s.setblocking(False)
    print('sent %d' % sent, flush=True)
while True:
    keepalive()
    time.sleep(0.5)
