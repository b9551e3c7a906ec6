#!/usr/bin/python3
"""Traffic for the functional checks of bench/attach-io (run with Debian's /usr/bin/python3).

  traffic.py gso   DST_IP          UDP GSO (UDP_SEGMENT=1400): one 14000-byte send -> dport 9001
  traffic.py small DST_IP          one 100-byte UDP datagram (checksum offloaded) -> dport 9002
  traffic.py raw   IFNAME N        N raw frames from a plain AF_PACKET socket -> dport 9005
  traffic.py rawbypass IFNAME N    same with PACKET_QDISC_BYPASS (as netdev sends) -> dport 9011
  traffic.py vnet  IFNAME          through a PACKET_VNET_HDR socket, as a VM/virtio would: an 802.1Q-tagged
                                   (vid 7) UDP GSO super-frame, 14000 B, gso_size 1400 (9009) and a tagged
                                   100 B checksum-partial UDP frame (9010)
  traffic.py tcp   IFNAME          through a PACKET_VNET_HDR socket: a TCPv4 TSO super-frame (14000 B, mss 1400,
                                   flags CWR|PSH|ACK|FIN, 9012) and a TCPv6 one whose sequence number wraps (9013)
  traffic.py vlan  IFNAME          802.1Q vid 42 pcp 3 (9006), QinQ 88a8 vid 100 + 8100 vid 42 (9007),
                                   priority tag vid 0 pcp 5 (9008), with scapy
"""
import socket
import struct
import sys

SOL_UDP = 17
UDP_SEGMENT = 103
DST_MAC = bytes.fromhex('02ba00000004')
SRC_MAC = bytes.fromhex('02ba00000005')


def csum(b):
    if len(b) % 2:
        b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def udp_frame(dport, payload):
    src, dst = socket.inet_aton('198.18.0.1'), socket.inet_aton('198.18.0.2')
    ulen = 8 + len(payload)
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + ulen, 0, 0, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
    udp = struct.pack('!HHHH', dport, dport, ulen, 0) + payload
    c = csum(src + dst + struct.pack('!BBH', 0, 17, ulen) + udp) or 0xffff
    udp = udp[:6] + struct.pack('!H', c) + udp[8:]
    return DST_MAC + SRC_MAC + b'\x08\x00' + ip + udp


def main():
    mode = sys.argv[1]
    if mode == 'gso':
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(('0.0.0.0', 9001))
        s.setsockopt(SOL_UDP, UDP_SEGMENT, 1400)
        s.sendto(b'BAGSO' + bytes(13995), (sys.argv[2], 9001))
    elif mode == 'small':
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(('0.0.0.0', 9002))
        s.sendto(b'BASMALL' + bytes(93), (sys.argv[2], 9002))
    elif mode in ('raw', 'rawbypass'):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        if mode == 'rawbypass':
            s.setsockopt(263, 20, 1)  # SOL_PACKET, PACKET_QDISC_BYPASS
        s.bind((sys.argv[2], 0))
        f = udp_frame(9005 if mode == 'raw' else 9011, b'BARAW' + bytes(59))
        for _ in range(int(sys.argv[3])):
            s.send(f)
    elif mode == 'vnet':
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.setsockopt(263, 15, 1)  # SOL_PACKET, PACKET_VNET_HDR
        s.bind((sys.argv[2], 0))
        for dport, payload, gso in ((9009, b'BAVGSO' + bytes(13994), 1400), (9010, b'BAVCSUM' + bytes(93), 0)):
            f = bytearray(udp_frame(dport, payload))
            f[12:14] = b'\x81\x00\x00\x07\x08\x00'  # insert tag vid 7 (frame grows by 4)
            l4 = 18 + 20
            ulen = 8 + len(payload)
            # checksum-partial: the field holds the folded pseudo-header sum, not complemented
            ps = sum(struct.unpack('!4H', socket.inet_aton('198.18.0.1') + socket.inet_aton('198.18.0.2'))) + 17 + ulen
            while ps >> 16:
                ps = (ps & 0xffff) + (ps >> 16)
            f[l4 + 6:l4 + 8] = struct.pack('!H', ps)
            # virtio_net_hdr: flags NEEDS_CSUM, gso_type UDP_L4 (5) or NONE, hdr_len, gso_size, csum_start, csum_offset
            vh = struct.pack('<BBHHHH', 1, 5 if gso else 0, l4 + 8, gso, l4, 6)
            s.send(vh + bytes(f))
    elif mode == 'tcp':
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.setsockopt(263, 15, 1)  # SOL_PACKET, PACKET_VNET_HDR
        s.bind((sys.argv[2], 0))
        pay = bytes((i * 7) & 0xff for i in range(14000))
        src, dst = socket.inet_aton('198.18.0.1'), socket.inet_aton('198.18.0.2')
        ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 40 + len(pay), 0x1234, 0x4000, 64, 6, 0, src, dst)
        ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
        ps = ~csum(src + dst + struct.pack('!BBH', 0, 6, 20 + len(pay))) & 0xffff
        tcp = struct.pack('!HHIIBBHHH', 9012, 9012, 1000, 5, 0x50, 0x80 | 0x18 | 0x01, 65535, ps, 0)
        # gso_type TCPV4|ECN, hdr_len 54, gso_size 1400, csum_start 34, csum_offset 16
        s.send(struct.pack('<BBHHHH', 1, 0x81, 54, 1400, 34, 16) + DST_MAC + SRC_MAC + b'\x08\x00' + ip + tcp + pay)
        src, dst = socket.inet_pton(socket.AF_INET6, 'fd00::1'), socket.inet_pton(socket.AF_INET6, 'fd00::2')
        ip6 = struct.pack('!IHBB16s16s', 6 << 28, 20 + len(pay), 6, 64, src, dst)
        ps = ~csum(src + dst + struct.pack('!IxxxB', 20 + len(pay), 6)) & 0xffff
        tcp = struct.pack('!HHIIBBHHH', 9013, 9013, 0xfffff000, 5, 0x50, 0x18, 65535, ps, 0)
        s.send(struct.pack('<BBHHHH', 1, 4, 74, 1400, 54, 16) + DST_MAC + SRC_MAC + b'\x86\xdd' + ip6 + tcp + pay)
    elif mode == 'vlan':
        from scapy.all import Ether, Dot1Q, Dot1AD, IP, UDP, Raw, sendp
        base = dict(dst='02:ba:00:00:00:04', src='02:ba:00:00:00:05')
        l3 = lambda port: IP(src='198.18.0.1', dst='198.18.0.2') / UDP(sport=port, dport=port) / Raw(b'BAVLAN' + bytes(58))
        frames = [
            Ether(**base) / Dot1Q(vlan=42, prio=3) / l3(9006),
            Ether(**base, type=0x88a8) / Dot1AD(vlan=100) / Dot1Q(vlan=42) / l3(9007),
            Ether(**base) / Dot1Q(vlan=0, prio=5) / l3(9008),
        ]
        sendp(frames, iface=sys.argv[2], verbose=False)
    else:
        raise SystemExit('unknown mode ' + mode)


main()
