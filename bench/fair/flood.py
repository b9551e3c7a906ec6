#!/usr/bin/env python3
"""Flood: minimum-size Ethernet frames (60 bytes + FCS: IPv4/UDP to the discard
port, 18 bytes of payload) from IFNAME to DST_MAC as fast as one core sends them,
through the interface's qdisc like any VM traffic, for SECONDS. A full queue
(EAGAIN, ENOBUFS) is counted and skipped, never fatal: trafgen gives up on EAGAIN
once a TAP's queue is full. Prints "sent N busy M seconds S" at the end, also when
stopped early by SIGINT.

Usage: flood.py IFNAME SRC_MAC DST_MAC SRC_IP DST_IP SECONDS
"""
import socket
import struct
import sys
import time


def checksum(b: bytes) -> int:
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff


def frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str) -> bytes:
    payload = bytes(18)
    udp = struct.pack('!HHHH', 4000, 9, 8 + len(payload), 0) + payload
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    ip = ip[:10] + struct.pack('!H', checksum(ip)) + ip[12:]
    eth = bytes.fromhex(dst_mac.replace(':', '')) + bytes.fromhex(src_mac.replace(':', '')) + b'\x08\x00'
    return eth + ip + udp


def main() -> None:
    ifname, src_mac, dst_mac, src_ip, dst_ip, secs = sys.argv[1:7]
    f = frame(src_mac, dst_mac, src_ip, dst_ip)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    s.setblocking(False)
    send = s.send
    sent = busy = 0
    end = time.monotonic() + float(secs)
    try:
        while time.monotonic() < end:
            for _ in range(1000):
                try:
                    send(f)
                    sent += 1
                except (BlockingIOError, OSError):
                    busy += 1
    except KeyboardInterrupt:  # stopped early (SIGINT): still say how much was sent
        pass
    print(f'sent {sent} busy {busy} seconds {secs}', flush=True)


if __name__ == '__main__':
    main()
