/*
 * A live daemon under malformed frames. Bridge br0: four TAP ports in VLAN 10
 * (the attacker fz, two VMs v1/v2, a DHCP client dc), one trunk TAP tr (allowed
 * 20, native 10: its namespace talks VLAN 10 untagged, as this kernel has no 8021q
 * module for a tagged subinterface), and router r0's network net10 (10.77.10.1/24,
 * DHCP) on VLAN 10.
 *
 * From fz's namespace a Python script writes frames through a raw AF_PACKET
 * socket (MTU raised to 65535 for oversized frames): runts (the kernel refuses
 * frames under 14 bytes: counted, not sent), short frames, truncated and
 * double/S/priority 802.1Q tags, bogus EtherTypes and link-local destinations,
 * oversized frames up to 64 KiB, IPv4 with bad versions / IHL / total lengths /
 * checksums / TTLs / fragments, TCP and UDP with bad offsets and lengths, DHCP to
 * the gateway with broken and looping options, ARP with wrong hlen/plen, ICMP,
 * IPv6 and ICMPv6 garbage to the gateway's IPv6 side (bad versions and payload
 * lengths, extension-header chains of any shape, ND messages with broken
 * options, rogue RAs, bad checksums, DHCPv6 from port 547), DHCPv6 client
 * messages to the gateway's DHCPv6 server (options that lie about their length,
 * empty, oversized and repeated DUIDs, IA_NAs of any shape; mostly good UDP
 * checksums so they reach it), and random bytes; at
 * least 20,000 of them must reach the daemon. The network has IPv6 (fd00:77:10::1/64, mode both: SLAAC and DHCPv6),
 * so the attacker's port has the IPv6 guards (on by default there). From tr's
 * namespace, frames a trunk can carry: truncated tags (malformed), VID 4095,
 * VIDs not allowed.
 *
 * Then: the daemon is alive and logged no error; `stats --json` counts the drops
 * by reason on both ports (the IPv6 guards' too); the router counted malformed
 * frames, its IPv6 side malformed ND and its DHCP server malformed messages (metrics); v1 and v2 ping each other, the trunk VM and the
 * gateway; a new DHCP client gets a lease.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, dropCount, findPort, num, RX_FRAMES, startDaemon } from './helpers/daemon.js';
import { makeDhcpVm, udhcpcOnce, type DhcpVm } from './helpers/dhcp.js';
import { cleanup, freePort, ifname, nsExec, q, tempDir } from './helpers/run.js';
import { PYTHON } from './helpers/scapy.js';
import { makeVm, pingUntil, type Vm } from './helpers/vm.js';

const T = { fz: ifname('fz'), v1: ifname('v1'), v2: ifname('v2'), dc: ifname('dc'), tr: ifname('tr') };
const GW = '10.77.10.1';
const IP = { fz: '10.77.10.66', v1: '10.77.10.11', v2: '10.77.10.12', tr: '10.77.10.13' };
const GW_MAC = '02:77:10:00:00:01';
const GW6 = 'fd00:77:10::1';
/** Frames that must reach the daemon from the attacker's port. */
const MIN_DELIVERED = 20_000;

/** Every port object of a `stats --json` view. */
function findPorts(view: any[]): any[] {
  return view.flatMap((b: any) => b.ports ?? []);
}

/*
 * The frame generator. Deterministic (seeded). Never uses the MACs or addresses
 * of v1/v2/the trunk VM as sources (that would be spoofing, which is another
 * test's subject) and keeps ARP senders to 10.77.10.200-250 so that no VM's ARP
 * cache is poisoned; DHCP clients are three fixed chaddrs, so the pool is not
 * starved (the network also has maxLeasesPerPort).
 */
const FUZZ_PY = String.raw`
import errno, json, random, socket, struct, sys, time

iface, mode, count, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
own_mac, gw_mac, peer_mac = (bytes.fromhex(m.replace(':', '')) for m in sys.argv[5:8])
own_ip, gw_ip, peer_ip = (socket.inet_aton(a) for a in sys.argv[8:11])
mtu = int(sys.argv[11])
R = random.Random(seed)
BC = b'\xff' * 6

def rb(n): return R.randbytes(n)
def be16(v): return struct.pack('!H', v & 0xffff)
def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s > 0xffff: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
def eth(dst, src, t): return dst + src + be16(t)
def ipv4(src, dst, proto, payload, ver=4, ihl=5, total=None, ttl=64, frag=0, good=True, opt=None):
    hl = max(ihl, 5) * 4
    opts = opt if opt is not None else rb(hl - 20)
    tot = 20 + len(opts) + len(payload) if total is None else total
    h = bytes([(ver << 4) | (ihl & 15), 0]) + be16(tot) + be16(R.getrandbits(16)) + be16(frag) + bytes([ttl, proto]) + b'\0\0' + src + dst + opts
    if good: h = h[:10] + be16(csum(h[:max(20, (ihl & 15) * 4)])) + h[12:]
    return h + payload
def udp(sport, dport, payload, ulen=None):
    return be16(sport) + be16(dport) + be16(8 + len(payload) if ulen is None else ulen) + b'\0\0' + payload
def tcp(sport, dport, doff, flags, payload=b''):
    return be16(sport) + be16(dport) + rb(8) + bytes([(doff & 15) << 4, flags]) + be16(8192) + b'\0\0\0\0' + payload
def icmp(t, code, body, good=True):
    m = bytes([t, code]) + b'\0\0' + body
    return m[:2] + be16(csum(m)) + m[4:] if good else m[:2] + rb(2) + m[4:]
def pick(*xs): return xs[R.randrange(len(xs))]
def src_mac():
    r = R.random()
    if r < 0.80: return own_mac
    if r < 0.88: return bytes([0x02, 0xfe]) + rb(4)           # many MACs: learning churn, bounded table
    if r < 0.94: return bytes([0x01]) + rb(5)                  # multicast source: bad_src_mac
    return b'\0' * 6                                           # zero source: bad_src_mac
def dst_mac(): return pick(gw_mac, gw_mac, BC, BC, peer_mac, bytes([0x01, 0x80, 0xc2, 0, 0, R.randrange(16)]), bytes([0x01, 0, 0x5e]) + rb(3), bytes([0x02, 0xfe]) + rb(4))
def far_ip(): return pick(gw_ip, gw_ip, b'\xff\xff\xff\xff', socket.inet_aton('10.77.10.255'), peer_ip, socket.inet_aton('8.8.8.8'), socket.inet_aton('10.77.20.5'), rb(4))
CHADDRS = [bytes([0x02, 0xfd, 0, 0, 0, i]) for i in (1, 2, 3)]

def eui64_ll(mac): return b'\xfe\x80' + b'\0' * 6 + bytes([mac[0] ^ 2, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]])
OWN_LL, GW_LL = eui64_ll(own_mac), eui64_ll(gw_mac)
GW6 = socket.inet_pton(socket.AF_INET6, 'fd00:77:10::1')
def sn(a): return socket.inet_pton(socket.AF_INET6, 'ff02::1:ff00:0')[:13] + a[13:]
def mc6(a): return b'\x33\x33' + a[12:]
ALL_NODES, ALL_ROUTERS = socket.inet_pton(socket.AF_INET6, 'ff02::1'), socket.inet_pton(socket.AF_INET6, 'ff02::2')
def ip6(src, dst, nh, payload, plen=None, hl=255, ver=6):
    return bytes([ver << 4, 0, 0, 0]) + be16(len(payload) if plen is None else plen) + bytes([nh, hl]) + src + dst + payload
def icmp6(src, dst, m, good=True):
    s = csum(src + dst + struct.pack('!I', len(m)) + b'\0\0\0\x3a' + m[:2] + b'\0\0' + m[4:])
    return m[:2] + (be16(s) if good else rb(2)) + m[4:]
def nd_opts():
    o = b''
    for _ in range(R.randrange(4)):
        k = R.randrange(7)
        if k == 0: o += bytes([1, 1]) + own_mac                                  # SLLA (ours)
        elif k == 1: o += bytes([2, 1]) + rb(6)                                  # TLLA (anyone's)
        elif k == 2: o += bytes([R.randrange(256), 0]) + rb(6)                   # zero length
        elif k == 3: o += bytes([R.randrange(256), R.randrange(2, 40)]) + rb(R.randrange(0, 30))  # past the end
        elif k == 4: o += bytes([3, 4, 64, 0xc0]) + rb(28)                       # prefix information
        elif k == 5: o += bytes([25, pick(1, 2, 3, 5)]) + rb(R.randrange(6, 40))  # RDNSS of any length
        else: o += bytes([31, 2]) + rb(14)                                       # DNSSL of garbage labels
    return o
def ext_chain(nh):
    hdrs = []
    for _ in range(pick(0, 0, 0, 1, 2, 9)):
        k = pick(0, 43, 44, 51, 60, 60)
        hdrs.append(k)
    body, nxt = b'', nh
    for k in reversed(hdrs):
        if k == 44: h = bytes([nxt, 0]) + be16(pick(0, 0, 1, 8, 0xfff9)) + rb(4)
        elif k == 51: h = bytes([nxt, pick(1, 2, 4)]); h += rb((h[1] + 2) * 4 - 2)
        else: h = bytes([nxt, pick(0, 0, 1, 200)]); h += rb(min((h[1] + 1) * 8, 40) - 2)
        body, nxt = h + body, k
    return nxt, body
def frame_ipv6():
    src = pick(OWN_LL, OWN_LL, OWN_LL, OWN_LL, b'\0' * 16, rb(16))
    dst = pick(GW_LL, GW6, GW6, ALL_NODES, ALL_ROUTERS, sn(GW_LL), sn(GW6), rb(16))
    edst = mc6(dst) if dst[0] == 0xff else pick(gw_mac, gw_mac, BC)
    k = R.randrange(10)
    if k < 6:   # ICMPv6: ND, echo, errors, MLD; fixed parts of any length, options of every shape
        t = pick(133, 133, 134, 135, 135, 135, 136, 137, 128, 128, 1, 2, 143, R.randrange(256))
        fixed = {133: 4, 134: 12, 135: 20, 136: 20, 137: 36}.get(t, R.randrange(4, 60))
        body = rb(fixed)
        if t in (135, 136) and R.random() < 0.6: body = rb(4) + pick(GW_LL, GW6, rb(16))
        m = bytes([t, pick(0, 0, 0, 1)]) + b'\0\0' + body[:pick(fixed, fixed, R.randrange(0, fixed + 1))] + nd_opts()
        m = icmp6(src, dst, m, good=R.random() < 0.75)
        nh, ext = ext_chain(58)
        p = ip6(src, dst, nh, ext + m, plen=pick(None, None, None, None, R.randrange(0, 200), 0xffff), hl=pick(255, 255, 255, 64, 1), ver=pick(6, 6, 6, 6, 6, 4, 0))
    elif k < 8:   # UDP, DHCPv6 among it (clients to 547; a rogue server from 547)
        pl = rb(R.randrange(0, 60))
        u = be16(pick(546, 547, R.getrandbits(16))) + be16(pick(547, 546, 53, R.getrandbits(16))) + be16(8 + len(pl)) + b'\0\0' + pl
        nh, ext = ext_chain(17)
        p = ip6(src, pick(socket.inet_pton(socket.AF_INET6, 'ff02::1:2'), dst), nh, ext + u, hl=64)
    else:
        p = ip6(src, dst, R.randrange(256), rb(R.randrange(0, 80)), plen=pick(None, R.randrange(0, 100)), hl=64)
    p = p[:pick(len(p), len(p), len(p), R.randrange(0, len(p) + 1))]
    return 'ipv6', eth(edst, own_mac, 0x86dd) + p

ALL_DHCP = socket.inet_pton(socket.AF_INET6, 'ff02::1:2')
def dhcp6_opt(code, data): return be16(code) + be16(len(data)) + data
def dhcp6_msg():
    m = bytes([pick(1, 1, 3, 5, 6, 8, 9, 11, 4, 12, 13, 2, 7, R.randrange(256))]) + rb(3)
    for _ in range(R.randrange(6)):
        k = R.randrange(9)
        if k == 0: m += dhcp6_opt(1, pick(b'\0\x01\0\x01' + rb(4) + own_mac, b'\0\x03\0\x01' + own_mac, rb(R.randrange(0, 140))))  # client id, empty or oversized too
        elif k == 1: m += dhcp6_opt(2, pick(b'\0\x03\0\x01' + gw_mac, rb(R.randrange(0, 20))))      # server id: ours or not
        elif k == 2: m += dhcp6_opt(3, rb(pick(0, 4, 11, 12)) + pick(b'', dhcp6_opt(5, rb(pick(24, 23, 40))), be16(5) + be16(0xffff)))  # IA_NA of any shape
        elif k == 3: m += be16(R.randrange(65536)) + be16(pick(0xffff, 200, 5)) + rb(R.randrange(0, 10))  # a length past the end
        elif k == 4: m += dhcp6_opt(14, b'')                                                           # rapid commit
        elif k == 5: m += dhcp6_opt(6, rb(R.randrange(0, 30)))                                         # ORO of any length
        elif k == 6: m += dhcp6_opt(25, rb(R.randrange(0, 40)))                                        # IA_PD (not served)
        elif k == 7: m += dhcp6_opt(1, b'\0\x03\0\x01' + own_mac) * 2                                # two client ids
        else: m += rb(R.randrange(0, 20))
    return m
def frame_dhcp6():   # DHCPv6 client messages to the server, checksums mostly right so they reach it
    m = dhcp6_msg()
    src, dst = OWN_LL, pick(ALL_DHCP, ALL_DHCP, GW_LL)
    u = be16(546) + be16(547) + be16(8 + len(m)) + b'\0\0' + m
    c = csum(src + dst + struct.pack('!I', len(u)) + b'\0\0\0\x11' + u)
    u = u[:6] + (be16(c or 0xffff) if R.random() < 0.8 else rb(2)) + u[8:]
    p = ip6(src, dst, 17, u, hl=pick(1, 64, 255))
    p = p[:pick(len(p), len(p), len(p), len(p), R.randrange(40, len(p) + 1))]
    return 'dhcp6', eth(mc6(dst) if dst[0] == 0xff else gw_mac, own_mac, 0x86dd) + p

def dhcp_msg():
    chaddr = pick(*CHADDRS)
    fixed = bytes([pick(1, 1, 1, 2, 0, 7), pick(1, 1, 1, 6), pick(6, 6, 6, 0, 16), 0]) + rb(4) + b'\0\0' + be16(pick(0, 0x8000))
    fixed += pick(b'\0' * 4, own_ip) + b'\0' * 8 + pick(b'\0' * 4, b'\0' * 4, rb(4)) + chaddr + b'\0' * 10
    fixed += pick(b'\0' * 192, bytes([52, 1, 3]) * 64, rb(192))              # sname/file: options if overloaded
    fixed += pick(b'\x63\x82\x53\x63', b'\x63\x82\x53\x63', b'\x63\x82\x53\x64')
    opts = b''
    r = R.random()
    if r < 0.7: opts += bytes([53, 1, pick(1, 1, 3, 3, 4, 7, 8, 2, 5, 0, 200)])
    for _ in range(R.randrange(8)):
        k = R.randrange(12)
        if k == 0: opts += b'\0' * R.randrange(1, 1500)                         # PAD flood
        elif k == 1: opts += bytes([R.randrange(1, 255), 0])                    # zero-length option
        elif k == 2: opts += bytes([R.randrange(1, 255), 255]) + rb(R.randrange(20))  # runs past the end
        elif k == 3: opts += bytes([52, 1, pick(1, 2, 3)])                      # overload (not read)
        elif k == 4: opts += bytes([53, 1, 1]) * R.randrange(1, 50)             # repeated 53: concatenated
        elif k == 5: opts += bytes([55, 255]) + bytes([55] * 255)               # PRL asking for itself
        elif k == 6: opts += bytes([57, 2]) + be16(pick(0, 1, 575, 576, 65535))
        elif k == 7: opts += bytes([50, pick(4, 3, 5)]) + socket.inet_aton('10.77.10.%d' % R.randrange(256))
        elif k == 8: opts += bytes([54, 4]) + pick(gw_ip, rb(4))
        elif k == 9: opts += bytes([61, 255]) + rb(255)
        elif k == 10: opts += bytes([12, 64]) + rb(64)
        else: opts += rb(R.randrange(30))
    if R.random() < 0.5: opts += b'\xff'
    return fixed + opts

def frame_access():
    k = R.randrange(100)
    src, dst = src_mac(), dst_mac()
    if k < 2:   return 'runt', rb(R.randrange(14))
    if k < 6:   return 'short', rb(R.randrange(14, 60))
    if k < 12:  # truncated, double, S- and priority-tagged 802.1Q on an access port
        tp = pick(0x8100, 0x8100, 0x88a8, 0x9100)
        f = eth(dst, src, tp) + rb(R.randrange(0, 4))
        if R.random() < 0.6: f = eth(dst, src, tp) + be16(R.randrange(0, 4096)) + be16(pick(0x8100, 0x88a8, 0x0800, 0x0806)) + rb(R.randrange(0, 64))
        return 'dot1q', f
    if k < 18:  return 'ethertype', eth(dst, src, pick(R.getrandbits(16), R.randrange(0, 0x600), 0x86dd, 0x88cc, 0x8809, 0x888e, 0x0000, 0xffff)) + rb(R.randrange(0, 100))
    if k < 20:  # oversized: past 1500, up to the interface MTU
        n = pick(1515, 1519, 1523, 4096, 9014, mtu + 14, R.randrange(1515, mtu + 15))
        return 'oversized', eth(pick(BC, gw_mac, peer_mac), own_mac, pick(0x0800, 0x0806, 0x1234)) + rb(n - 14)
    if k < 38:  # IPv4 with bad version, IHL, total length, checksum, TTL, fragments
        ihl = pick(5, 5, 0, 1, 4, 6, 15)
        ver = pick(4, 4, 4, 0, 6, 15)
        pl = rb(R.randrange(0, 80))
        total = pick(None, None, 0, 19, 20, 65535, 20 + len(pl) + 40, R.randrange(0, 200))
        proto = pick(1, 6, 17, 47, 255)
        p = ipv4(pick(own_ip, rb(4), b'\0' * 4), far_ip(), proto, pl, ver=ver, ihl=ihl, total=total, ttl=pick(64, 0, 1), frag=pick(0, 0x4000, 0x2000, 0x1fff), good=R.random() < 0.7)
        return 'ipv4', eth(dst, src, 0x0800) + p
    if k < 54:  # TCP/UDP with bad offsets and lengths inside a valid IPv4 header
        dip = far_ip()
        if R.random() < 0.5:
            l4 = tcp(R.getrandbits(16), pick(22, 80, 8080, R.getrandbits(16)), pick(0, 1, 4, 5, 6, 15), R.getrandbits(8), rb(R.randrange(0, 40)))
            l4 = l4[:pick(len(l4), len(l4), R.randrange(0, len(l4) + 1))]
            return 'tcp', eth(pick(gw_mac, peer_mac, BC), own_mac, 0x0800) + ipv4(own_ip, dip, 6, l4, ttl=pick(64, 1))
        pl = rb(R.randrange(0, 60))
        l4 = udp(R.getrandbits(16), pick(53, 67, 68, 123, R.getrandbits(16)), pl, ulen=pick(None, 0, 7, 8, 9 + len(pl), 65535, R.randrange(0, 80)))
        l4 = l4[:pick(len(l4), len(l4), R.randrange(0, len(l4) + 1))]
        return 'udp', eth(pick(gw_mac, peer_mac, BC), own_mac, 0x0800) + ipv4(own_ip, dip, 17, l4, ttl=pick(64, 1))
    if k < 74:  # DHCP to the gateway: broken and looping options
        m = dhcp_msg()
        u = udp(68, 67, m, ulen=pick(None, None, None, 8 + len(m) - R.randrange(0, 40), 8 + len(m) + 10))
        return 'dhcp', eth(pick(BC, gw_mac), own_mac, 0x0800) + ipv4(pick(b'\0' * 4, own_ip), pick(b'\xff' * 4, gw_ip), 17, u)
    if k < 82:  # ARP of every shape; senders never claim a VM's or the gateway's address
        htype, ptype = pick(1, 1, 1, 6, 0), pick(0x0800, 0x0800, 0x86dd, 0)
        hlen, plen = pick(6, 6, 6, 0, 8, 16, 255), pick(4, 4, 4, 0, 6, 16, 255)
        spa = pick(socket.inet_aton('10.77.10.%d' % R.randrange(200, 251)), b'\0' * 4, socket.inet_aton('192.0.2.9'))
        body = be16(htype) + be16(ptype) + bytes([hlen, plen]) + be16(pick(1, 2, 1, 3, 0)) + own_mac + spa + rb(6) + pick(gw_ip, gw_ip, rb(4))
        body = body[:pick(28, 28, 28, R.randrange(0, 28), 46)] + rb(pick(0, 0, 18))
        return 'arp', eth(pick(BC, gw_mac), own_mac, 0x0806) + body
    if k < 85:  return frame_ipv6()
    if k < 88:  return frame_dhcp6()
    if k < 92:  # ICMP to the gateway: echo of any size, bad checksums, errors, truncated
        t = pick(8, 8, 8, 0, 3, 11, 13, 255)
        m = icmp(t, pick(0, 1, 3), rb(R.randrange(0, 1400)), good=R.random() < 0.6)
        m = m[:pick(len(m), len(m), R.randrange(0, 9))]
        return 'icmp', eth(gw_mac, own_mac, 0x0800) + ipv4(own_ip, pick(gw_ip, gw_ip, socket.inet_aton('8.8.8.8')), 1, m, ttl=pick(64, 1))
    return 'random', rb(R.randrange(14, 200))

def frame_trunk():
    k = R.randrange(100)
    src, dst = pick(own_mac, own_mac, bytes([0x02, 0xfc]) + rb(4)), pick(BC, gw_mac, bytes([0x02, 0xfc]) + rb(4))
    if k < 30:  return 'trunc_tag', eth(dst, src, 0x8100) + rb(R.randrange(0, 4))          # 14..17 bytes: malformed
    if k < 45:  return 'vid4095', eth(dst, src, 0x8100) + be16((R.randrange(8) << 13) | 4095) + be16(0x0800) + rb(R.randrange(0, 60))
    if k < 65:  return 'not_allowed', eth(dst, src, 0x8100) + be16(pick(30, 40, 99, 4094)) + be16(0x0800) + rb(R.randrange(0, 60))
    if k < 80:  return 'prio_double', eth(dst, src, 0x8100) + be16(0) + be16(pick(0x8100, 0x88a8)) + be16(pick(20, 30)) + be16(0x0806) + rb(28)
    if k < 90:  return 'stag', eth(dst, src, 0x88a8) + be16(10) + be16(0x8100) + be16(10) + be16(0x0800) + rb(40)
    return 'random', rb(R.randrange(14, 80))

s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
s.bind((iface, 0))
gen = frame_access if mode == 'access' else frame_trunk
sent, refused, cats, bytes_sent = 0, {}, {}, 0
t0 = time.time()
for i in range(count):
    cat, f = gen()
    for attempt in range(200):
        try:
            s.send(f)
            sent += 1
            bytes_sent += len(f)
            cats[cat] = cats.get(cat, 0) + 1
            break
        except OSError as e:
            if e.errno in (errno.ENOBUFS, errno.EAGAIN):
                time.sleep(0.001)
                continue
            key = '%s:%s' % (cat, errno.errorcode.get(e.errno, e.errno))
            refused[key] = refused.get(key, 0) + 1
            break
    # Pace: the TAP's queue toward the daemon holds a few hundred frames.
    if i % 64 == 63: time.sleep(0.0015)
print(json.dumps({'sent': sent, 'refused': refused, 'categories': cats, 'bytes': bytes_sent, 'seconds': round(time.time() - t0, 2)}))
`;

describe('a live daemon under 20,000+ malformed frames', () => {
  let d: Daemon;
  let metricsPort: number;
  let fz: Vm, v1: Vm, v2: Vm;
  let dc: DhcpVm;
  let trNs: string;
  let trMac: string;
  let script: string;
  const results: Record<string, any> = {};

  const stats = async (): Promise<any> => (await d.ok(['stats'], { json: true })).json;
  const portStats = async (name: string): Promise<any> => {
    const p = findPort(await stats(), name);
    if (p === undefined) throw new Error(`no port ${name} in stats`);
    return p;
  };
  const net10 = async (): Promise<any> => {
    const r = (await d.ok(['router', 'show', 'r0'], { json: true })).json[0];
    return r.networks.find((n: any) => n.name === 'net10');
  };
  const metric = async (name: string, labels: Record<string, string>): Promise<number> => {
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    let total = 0;
    for (const line of text.split('\n')) {
      if (!line.startsWith(name + '{')) continue;
      if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) total += Number(line.split(/\s+/).pop());
    }
    return total;
  };

  beforeAll(async () => {
    metricsPort = await freePort();
    const access10 = { type: 'tap', vlan: { mode: 'access', vid: 10 } };
    const staticVm = { ...access10, guard: { dhcp: false, ipSource: false } };
    d = await startDaemon({
      stateDir: tempDir('state'),
      metrics: { listen: `127.0.0.1:${metricsPort}` },
      bridges: {
        br0: {
          maxMacs: 1024,
          ports: {
            // Static addresses in a VLAN with a router DHCP server: the guards (on by default there) are turned off.
            [T.fz]: staticVm, [T.v1]: staticVm, [T.v2]: staticVm, [T.dc]: access10,
            [T.tr]: { type: 'tap', vlan: { mode: 'trunk', allowed: [20], native: 10 } },
          },
        },
      },
      routers: {
        r0: {
          networks: {
            net10: {
              bridge: 'br0', vlan: 10, address: `${GW}/24`, mac: GW_MAC,
              dhcp: { pool: ['10.77.10.100-10.77.10.199'], leaseTime: 600, maxLeasesPerPort: 8 },
              // both: SLAAC and the DHCPv6 server, which gets its share of the garbage.
              ipv6: { address: `${GW6}/64`, mode: 'both' },
            },
          },
        },
      },
    });
    fz = await makeVm('fz', T.fz, `${IP.fz}/24`);
    v1 = await makeVm('v1', T.v1, `${IP.v1}/24`);
    v2 = await makeVm('v2', T.v2, `${IP.v2}/24`);
    dc = await makeDhcpVm('dc', T.dc);
    // The trunk VM talks VLAN 10 untagged (native); this kernel has no 8021q module for a tagged subinterface.
    const tr = await makeVm('tr', T.tr, `${IP.tr}/24`);
    trNs = tr.ns;
    trMac = tr.mac;
    // The attacker may send frames as large as a TAP allows.
    // (A TAP's largest MTU is 65535 less its Ethernet header.)
    const mtu = await nsExec(fz.ns, `for m in 65535 65521 9000; do ip link set dev ${q(T.fz)} mtu $m 2>/dev/null && break; done; cat /sys/class/net/${T.fz}/mtu`);
    results.mtu = Number(mtu.trim());
    script = join(tempDir('fuzz'), 'fuzz.py');
    writeFileSync(script, FUZZ_PY);
    // Everyone reachable before the storm.
    expect(await pingUntil(v1.ns, IP.v2)).toBe(true);
    expect(await pingUntil(v1.ns, IP.tr)).toBe(true);
    expect(await pingUntil(v1.ns, GW)).toBe(true);
  });

  afterAll(async () => {
    await d?.stop();
    await cleanup();
  });

  it('sends at least 20,000 malformed frames from an access port and more from a trunk, and the daemon stays up', async () => {
    const before = await portStats(T.fz);
    const trBefore = await portStats(T.tr);
    const run = async (ns: string, iface: string, mode: string, count: number, seed: number, mac: string, ip: string): Promise<any> => {
      const out = await nsExec(ns, [PYTHON, script, iface, mode, count, seed, mac, GW_MAC, v1.mac, ip, GW, IP.v1, results.mtu].map((x) => q(String(x))).join(' '), { timeoutMs: 60_000 });
      return JSON.parse(out.trim().split('\n').pop()!);
    };
    results.access = await run(fz.ns, T.fz, 'access', 24_000, 1, fz.mac, IP.fz);
    results.trunk = await run(trNs, T.tr, 'trunk', 4_000, 2, trMac, IP.tr);
    console.log('fuzz:', JSON.stringify(results));
    expect(d.alive()).toBe(true);
    // Runts are refused by the sending kernel (dev_validate_header: EINVAL under 14 bytes); everything else went.
    for (const k of Object.keys(results.access.refused)) expect(k).toMatch(/^runt:EINVAL$/);
    expect(results.access.sent).toBeGreaterThanOrEqual(MIN_DELIVERED);
    for (const c of ['short', 'dot1q', 'ethertype', 'oversized', 'ipv4', 'tcp', 'udp', 'dhcp', 'arp', 'icmp', 'ipv6', 'dhcp6', 'random']) {
      expect(results.access.categories[c], c).toBeGreaterThan(0);
    }
    // The daemon read them: the attacker's port counts at least 20,000 more received frames.
    const after = await portStats(T.fz);
    const delivered = num(after, ...RX_FRAMES)! - num(before, ...RX_FRAMES)!;
    results.delivered = delivered;
    console.log('delivered to the daemon:', delivered);
    expect(delivered).toBeGreaterThanOrEqual(MIN_DELIVERED);
    const trAfter = await portStats(T.tr);
    expect(num(trAfter, ...RX_FRAMES)! - num(trBefore, ...RX_FRAMES)!).toBeGreaterThanOrEqual(results.trunk.sent * 0.9);
    // Nothing logged at error level or above.
    expect(d.logs.filter((l) => ['error', 'fatal'].includes(l.obj?.level)).map((l) => l.raw)).toEqual([]);
  }, 120_000);

  it('counts the drops by reason', async () => {
    const a = await portStats(T.fz);
    for (const r of ['vlan_tagged_on_access', 'bad_src_mac', 'link_local']) expect(dropCount(a, r), `${T.fz} ${r}`).toBeGreaterThan(0);
    const t = await portStats(T.tr);
    for (const r of ['malformed', 'vlan_reserved', 'vlan_not_allowed']) expect(dropCount(t, r), `${T.tr} ${r}`).toBeGreaterThan(0);
    // The router network saw malformed and ignored frames, and DHCP requests; its server dropped malformed ones.
    const c = (await net10()).counters;
    expect(c.malformed).toBeGreaterThan(0);
    expect(c.ignored).toBeGreaterThan(0);
    expect(c.dhcpRequests).toBeGreaterThan(0);
    expect(c.icmpEchoReplies).toBeGreaterThan(0);
    expect(await metric('vswitch_dhcp_dropped_total', { network: 'net10', reason: 'malformed' })).toBeGreaterThan(0);
    // IPv6: the guards dropped rogue RAs and DHCPv6 server messages, and random sources past the port's limit;
    // the gateway's IPv6 side got the rest: malformed ND, answers to what was valid.
    for (const r of ['ra_guard', 'dhcpv6_guard', 'ipv6_source_guard']) expect(dropCount(a, r), `${T.fz} ${r}`).toBeGreaterThan(0);
    const v6 = (await net10()).ipv6.counters;
    expect(v6.malformed).toBeGreaterThan(0);
    expect(v6.ignored).toBeGreaterThan(0);
    expect(v6.nsAnswered + v6.echoReplies + v6.rsReceived).toBeGreaterThan(0);
    expect(await metric('vswitch_router_nd_total', { network: 'net10', kind: 'malformed' })).toBe(v6.malformed);
    // DHCPv6: bad checksums counted by the network's DHCPv6 port; what passed (within the port's dhcp rate) reached the
    // server, whose every silent outcome is a counted reason.
    const d6 = (await net10()).ipv6.dhcpv6;
    expect(d6.port.malformed).toBeGreaterThan(0);
    expect(d6.port.received).toBeGreaterThan(0);
    const silent = Object.values(d6.counters.dropped as Record<string, number>).reduce((x, y) => x + y, 0);
    expect(silent + d6.counters.advertise + d6.counters.reply).toBeGreaterThan(0);
    results.drops = Object.fromEntries((findPorts(await stats())).map((p: any) => [p.name, p.drops]));
    results.drops.net10 = c;
    console.log('drops:', JSON.stringify(results.drops));
  });

  it('still forwards: the VMs ping each other, the trunk VM and the gateway', async () => {
    expect(d.alive()).toBe(true);
    // The gateway's IPv6 side still answers: an NS for its address gets its NA.
    const na = await nsExec(fz.ns, `${PYTHON} -c ${q([
      'from scapy.all import *', 'conf.verb = 0',
      `ll = "fe80::" + in6_mactoifaceid("${fz.mac}")`,
      `a = srp1(Ether(src="${fz.mac}", dst="33:33:ff:00:00:01")/IPv6(src=ll, dst="ff02::1:ff00:1", hlim=255)/ICMPv6ND_NS(tgt="${GW6}")/ICMPv6NDOptSrcLLAddr(lladdr="${fz.mac}"), iface="${T.fz}", timeout=3, retry=2)`,
      'print(a[ICMPv6ND_NA].tgt if a is not None and ICMPv6ND_NA in a else "none")'].join('\n'))}`, { timeoutMs: 30_000 });
    expect(na.trim()).toBe(GW6);
    expect(await pingUntil(v1.ns, IP.v2)).toBe(true);
    expect(await pingUntil(v2.ns, IP.v1)).toBe(true);
    expect(await pingUntil(v2.ns, IP.tr)).toBe(true);
    expect(await pingUntil(trNs, IP.v1)).toBe(true);
    expect(await pingUntil(v1.ns, GW)).toBe(true);
    expect(await pingUntil(v2.ns, GW)).toBe(true);
  });

  it('still serves DHCP: a new client gets a lease', async () => {
    const r = await udhcpcOnce(dc, { tries: 5 });
    expect(r.code, r.log).toBe(0);
    expect(r.lease?.ip).toMatch(/^10\.77\.10\.(1\d\d)$/);
    expect(r.lease?.router).toBe(GW);
    expect(await pingUntil(dc.ns, GW)).toBe(true);
    expect(d.alive()).toBe(true);
  });
});
