/*
 * Per-port rate limits on the router's own work, and the NAT session limit per
 * bridge port (issue 12), through the real daemon. Every test here fails on the
 * main branch before issue 12: there are no limits (a flood is answered in full,
 * and `routers.*.limits` / `nat.maxSessionsPerPort` are unknown config keys, so
 * that daemon refuses this config at start).
 *
 * The daemon runs in its own namespace H (as in host-nat.test.ts: H stands for
 * the hypervisor host whose sockets the host NAT uses):
 *
 *   br0 VLAN 10 -- router r0 net10 10.88.10.1/24, DHCP .100-.150, uplink kind host,
 *                  limits { dhcp 5, arp 50, icmp 50, dns 20, icmpErrors 10, nd 50 } per port,
 *                  nat { maxSessionsPerHost 100, maxSessionsPerPort 150 }
 *     a (attacker): MAC fixed, static 10.88.10.21 and .22, both guard bindings
 *     b (victim):   DHCP (udhcpc)
 *   br0 VLAN 20 -- router r1 net20 10.88.20.1/24, no DHCP (guards off), default limits,
 *                  uplink interface hU 192.0.2.2/24 (NAPT) to S 192.0.2.1,
 *                  nat { maxSessionsPerHost 100, maxSessionsPerPort 150 }
 *     c (attacker): static 10.88.20.21 and .22;  d (victim): 10.88.20.30
 *   H: 198.51.100.1/24 to S; S: 198.51.100.2 (dnsmasq for svc.test, UDP sink :9),
 *      203.0.113.7 on its loopback.
 *
 * a floods the gateway from an AF_PACKET socket (~4000 frames/s for 3 s each):
 * ARP requests, ICMP echo requests, DHCPDISCOVERs with random source MACs and
 * chaddrs, DNS queries to the gateway, and UDP with TTL 1 (the router's time
 * exceeded errors). Each is cut to its port's rate (replies counted by the daemon,
 * drops in `router show` and the metrics under a's port) while b, on another port,
 * gets its ARP answer, its pings, a DHCP lease, its DNS answers and its own ICMP
 * error. Then a and c open UDP flows from both their addresses: the port gets at
 * most maxSessionsPerPort sessions (port_limit), not twice maxSessionsPerHost,
 * through the host NAT (r0) and NAPT (r1), while b and d still open theirs.
 * Last, a reload that changes only r0's limits applies them in place.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, startDaemon, toYaml } from './helpers/daemon.js';
import { type DhcpVm, makeDhcpVm, udhcpcOnce } from './helpers/dhcp.js';
import { udpSend, udpTool } from './helpers/inet.js';
import { PREFIX, addNamespace, cleanup, ifname, nsExec, nsExecR, nsname, q, sh, sleep, tempDir, trackLink, waitFor } from './helpers/run.js';
import { tcpTool } from './helpers/tcp-tool.js';
import { Background, arping, pingCount, pingUntil, quietNamespace } from './helpers/vm.js';
import { PYTHON } from './helpers/scapy.js';

const T = { a: ifname('la'), b: ifname('lb'), c: ifname('lc'), d: ifname('ld') };
const A_MAC = `02:5e:${PREFIX.slice(1, 3)}:${PREFIX.slice(3, 5)}:00:0a`;
const net10 = (h: number): string => `10.88.10.${h}`;
const net20 = (h: number): string => `10.88.20.${h}`;
const GW10 = net10(1);
const GW20 = net20(1);
const H_IP = '198.51.100.1';
const S_IP = '198.51.100.2';
const FAR = '203.0.113.7';
const UP_S = '192.0.2.1';
const UP_R = '192.0.2.2';
const LIMITS = { dhcp: 5, arp: 50, icmp: 50, dns: 20, icmpErrors: 10, nd: 50 };
const DEFAULTS = { dhcp: 10, arp: 100, icmp: 200, dns: 200, icmpErrors: 50, nd: 100 };
const PER_HOST = 100;
const PER_PORT = 150;
const FLOOD_SEC = 3;

/*
 * Raw frames from an AF_PACKET socket, in bursts of 20 with a 5 ms pause (at most
 * ~4000/s, so the TAP's queue does not drop them before the daemon sees them), for
 * SECS seconds; prints "sent N in S". Modes: arp GWIP MYIP | echo GWMAC GWIP MYIP |
 * dhcp | dns GWMAC GWIP MYIP | ttl1 GWMAC MYIP DST.
 */
const FLOOD_PY = String.raw`
import os, random, socket, struct, sys, time
iface, mode, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
a = sys.argv[4:]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
own = bytes.fromhex(open('/sys/class/net/%s/address' % iface).read().strip().replace(':', ''))
def rmac():
    m = bytearray(os.urandom(6)); m[0] = (m[0] & 0xfc) | 0x02; return bytes(m)
def mac(t): return bytes.fromhex(t.replace(':', ''))
def ip(t): return socket.inet_aton(t)
def csum(b):
    if len(b) % 2: b += b'\0'
    t = sum(struct.unpack('!%dH' % (len(b) // 2), b)); t = (t >> 16) + (t & 0xffff); t += t >> 16
    return (~t) & 0xffff
def ipv4(src, dst, proto, payload, ttl=64):
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), random.getrandbits(16), 0, ttl, proto, 0, src, dst)
    return h[:10] + struct.pack('!H', csum(h)) + h[12:] + payload
def udp(src, dst, sport, dport, data):
    u = struct.pack('!HHHH', sport, dport, 8 + len(data), 0) + data
    c = csum(src + dst + struct.pack('!BBH', 0, 17, len(u)) + u) or 0xffff
    return u[:6] + struct.pack('!H', c) + u[8:]
def pad(f): return f + b'\0' * max(0, 60 - len(f))
if mode == 'arp':
    f = pad(b'\xff' * 6 + own + b'\x08\x06' + struct.pack('!HHBBH', 1, 0x0800, 6, 4, 1) + own + ip(a[1]) + b'\0' * 6 + ip(a[0]))
    make = lambda i: f
elif mode == 'echo':
    def make(i):
        e = struct.pack('!BBHHH', 8, 0, 0, 0x4242, i & 0xffff) + b'rate-limits-test' * 2
        e = e[:2] + struct.pack('!H', csum(e)) + e[4:]
        return mac(a[0]) + own + b'\x08\x00' + ipv4(ip(a[2]), ip(a[1]), 1, e)
elif mode == 'dhcp':
    def make(i):
        ch = rmac()
        bootp = struct.pack('!BBBBIHHIIII', 1, 1, 6, 0, random.getrandbits(32), 0, 0x8000, 0, 0, 0, 0) + ch + b'\0' * 10 + b'\0' * 192
        d = bootp + b'\x63\x82\x53\x63' + b'\x35\x01\x01' + b'\xff'
        return b'\xff' * 6 + ch + b'\x08\x00' + ipv4(b'\0' * 4, b'\xff' * 4, 17, udp(b'\0' * 4, b'\xff' * 4, 68, 67, d))
elif mode == 'dns':
    def make(i):
        q = struct.pack('!HHHHHH', i & 0xffff, 0x0100, 1, 0, 0, 0) + b'\x03svc\x04test\x00' + struct.pack('!HH', 1, 1)
        return mac(a[0]) + own + b'\x08\x00' + ipv4(ip(a[2]), ip(a[1]), 17, udp(ip(a[2]), ip(a[1]), 5353, 53, q))
elif mode == 'ttl1':
    def make(i):
        return mac(a[0]) + own + b'\x08\x00' + ipv4(ip(a[1]), ip(a[2]), 17, udp(ip(a[1]), ip(a[2]), 40000, 33434, b'probe'), ttl=1)
n = 0
start = time.time()
end = start + secs
while time.time() < end:
    for _ in range(20):
        try:
            s.send(make(n)); n += 1
        except OSError:
            time.sleep(0.001)
    time.sleep(0.005)
print('sent %d in %.2f' % (n, time.time() - start), flush=True)
`;

/* One datagram from each of N source ports of address SRC: a NAT session each. */
const FLOWS_PY = String.raw`
import socket, sys, time
src, host, dport, base, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
sent = 0
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((src, base + i))
    try:
        s.sendto(b'flow', (host, dport)); sent += 1
    except OSError:
        pass
    s.close()
    if i % 50 == 49: time.sleep(0.005)
print('sent %d' % sent, flush=True)
`;

/* The victim's own probe with TTL 1: prints the ICMP type that came back, or "none". */
const TTL1_PY = String.raw`
import sys
from scapy.all import IP, UDP, ICMP, sr1, conf
conf.verb = 0
r = sr1(IP(dst=sys.argv[1], ttl=1) / UDP(sport=41000, dport=33434), timeout=3, retry=2)
print(('type %d from %s' % (r[ICMP].type, r[IP].src)) if r is not None and ICMP in r else 'none')
`;

let H: string;
let S: string;
let d: Daemon;
let dir: string;
let floodPy: string;
let flowsPy: string;
let ttl1Py: string;
let gwMac10 = '';
const vm: Record<'a' | 'b' | 'c' | 'd', DhcpVm> = {} as never;
let bIp = '';
const bg: Background[] = [];

function config(limitsR0: object): object {
  const access = (vid: number): object => ({ type: 'tap', vlan: { mode: 'access', vid } });
  return {
    stateDir: join(dir, 'state'),
    metrics: { listen: '127.0.0.1:9464' },
    bridges: {
      br0: {
        ports: {
          [T.a]: { ...access(10), guard: { bindings: [{ mac: A_MAC, ip: net10(21) }, { mac: A_MAC, ip: net10(22) }] } },
          [T.b]: access(10),
          [T.c]: access(20),
          [T.d]: access(20),
        },
      },
    },
    routers: {
      r0: {
        uplink: { kind: 'host', dns: [S_IP] },
        nat: { maxSessionsPerHost: PER_HOST, maxSessionsPerPort: PER_PORT },
        limits: limitsR0,
        networks: { net10: { bridge: 'br0', vlan: 10, address: `${GW10}/24`, dhcp: { pool: [`${net10(100)}-${net10(150)}`] } } },
      },
      r1: {
        uplink: { interface: ifname('hU'), address: `${UP_R}/24`, gateway: UP_S },
        nat: { maxSessionsPerHost: PER_HOST, maxSessionsPerPort: PER_PORT },
        networks: { net20: { bridge: 'br0', vlan: 20, address: `${GW20}/24` } },
      },
    },
  };
}

const routerShow = async (r: string): Promise<any> => (await d.ok(['router', 'show', r], { json: true })).json[0];
/** r0's net10: counters and rate-limited drops of port `port` ({} when none). */
async function net10Stats(port: string = T.a): Promise<{ counters: any; dropped: Record<string, number>; limited: string[] }> {
  const n = (await routerShow('r0')).networks[0];
  const p = n.rateLimited.ports.find((x: any) => x.port === port);
  return { counters: n.counters, dropped: p?.dropped ?? {}, limited: p?.limited ?? [] };
}

async function flood(mode: string, ...args: string[]): Promise<{ sent: number; secs: number }> {
  const out = await nsExec(vm.a.ns, [PYTHON, floodPy, T.a, mode, FLOOD_SEC, ...args].map((x) => q(String(x))).join(' '), { timeoutMs: 60_000 });
  const m = /sent (\d+) in ([\d.]+)/.exec(out);
  expect(m, out).not.toBeNull();
  return { sent: Number(m![1]), secs: Number(m![2]) };
}

/**
 * The most a bucket of `pps` lets through in `secs` of flood: the burst (one
 * second's worth) plus the refill, with 10% for the daemon's clock running on a
 * little while it drains the flood's backlog.
 */
const through = (pps: number, secs: number): number => Math.ceil(pps * (secs + 1) * 1.1) + 3;

/** Lets the daemon drain what the flood queued, so the counters are final. */
const settle = (): Promise<void> => sleep(700);

async function metrics(): Promise<string> {
  return nsExec(H, 'curl -sS --max-time 5 http://127.0.0.1:9464/metrics');
}
const metric = (text: string, name: string, labels: Record<string, string>): number | undefined => {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.split(' ').pop());
  }
  return undefined;
};

beforeAll(async () => {
  dir = tempDir('limits');
  floodPy = join(dir, 'flood.py');
  flowsPy = join(dir, 'flows.py');
  ttl1Py = join(dir, 'ttl1.py');
  writeFileSync(floodPy, FLOOD_PY);
  writeFileSync(flowsPy, FLOWS_PY);
  writeFileSync(ttl1Py, TTL1_PY);
  H = nsname('lh');
  S = nsname('ls');
  await addNamespace(H);
  await quietNamespace(H);
  await addNamespace(S);
  await quietNamespace(S);
  const [hS, sH, hU, sU] = [ifname('hS'), ifname('sH'), ifname('hU'), ifname('sU')];
  for (const l of [hS, sH, hU, sU]) trackLink(l);
  await sh(`ip -n ${q(H)} link add ${q(hS)} type veth peer name ${q(sH)} netns ${q(S)}`);
  await sh(`ip -n ${q(H)} link add ${q(hU)} type veth peer name ${q(sU)} netns ${q(S)}`);
  await nsExec(H, `ip link set ${q(hS)} up && ip addr add ${H_IP}/24 dev ${q(hS)} && ip route add 203.0.113.0/24 via ${S_IP} && ip link set ${q(hU)} up`);
  await nsExec(S, `ip link set ${q(sH)} up && ip addr add ${S_IP}/24 dev ${q(sH)} && ip link set ${q(sU)} up && ip addr add ${UP_S}/24 dev ${q(sU)} `
    + `&& ip addr add ${FAR}/32 dev lo && ip route add default via ${H_IP}`);
  bg.push(new Background(S, `/usr/sbin/dnsmasq -k -u root --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces --listen-address=${S_IP} `
    + `--port=53 --address=/svc.test/${FAR} --pid-file=${join(dir, 'dnsmasq.pid')} --log-facility=-`));
  bg.push(new Background(S, 'socat -u UDP4-RECV:9,reuseaddr /dev/null'));
  bg.push(new Background(S, `${PYTHON} -u ${q(udpTool())} serve 7`));

  d = await startDaemon(config(LIMITS), { netns: H });
  [vm.a, vm.b, vm.c, vm.d] = await Promise.all([
    makeDhcpVm('la', T.a, A_MAC, H), makeDhcpVm('lb', T.b, undefined, H), makeDhcpVm('lc', T.c, undefined, H), makeDhcpVm('ld', T.d, undefined, H),
  ]);
  await nsExec(vm.a.ns, `ip addr add ${net10(21)}/24 dev ${T.a} && ip addr add ${net10(22)}/24 dev ${T.a} && ip route add default via ${GW10}`);
  await nsExec(vm.c.ns, `ip addr add ${net20(21)}/24 dev ${T.c} && ip addr add ${net20(22)}/24 dev ${T.c} && ip route add default via ${GW20}`);
  await nsExec(vm.d.ns, `ip addr add ${net20(30)}/24 dev ${T.d} && ip route add default via ${GW20}`);
  const lease = await udhcpcOnce(vm.b, { tries: 5 });
  expect(lease.code, lease.log).toBe(0);
  bIp = lease.lease!.ip;
  for (const [v, gw] of [[vm.a, GW10], [vm.b, GW10], [vm.c, GW20], [vm.d, GW20]] as const) expect(await pingUntil(v.ns, gw), `${v.name} -> ${gw}`).toBe(true);
  gwMac10 = /lladdr (\S+)/.exec(await nsExec(vm.a.ns, `ip neigh show ${GW10}`))![1];
  await waitFor('r1\'s uplink to be up', async () => String((await routerShow('r1')).uplink?.state) === 'up');
}, 120_000);

afterAll(async () => {
  for (const b of bg) await b.stop();
  await d?.stop();
  await cleanup();
}, 60_000);

describe('per-port rate limits on the router\'s own work (issue 12)', () => {
  it('router show (JSON and text) and the metrics show each router\'s limits; r1 has the defaults', async () => {
    expect((await routerShow('r0')).limits).toEqual(LIMITS);
    expect((await routerShow('r1')).limits).toEqual(DEFAULTS);
    const text = (await d.ok(['router', 'show', 'r1'])).stdout;
    expect(text).toContain('limits per port: dhcp 10/s, arp 100/s, icmp 200/s, dns 200/s, icmp errors 50/s');
    const m = await metrics();
    expect(metric(m, 'vswitch_router_rate_limit_pps', { router: 'r0', kind: 'arp' })).toBe(50);
    expect(metric(m, 'vswitch_router_rate_limit_pps', { router: 'r1', kind: 'icmp_errors' })).toBe(50);
    expect(metric(m, 'vswitch_router_rate_limited_total', { router: 'r0', port: T.b, kind: 'dhcp' })).toBe(0);
  });

  it('an ARP flood at the gateway is cut to 50/s; another port\'s ARP is answered', async () => {
    const before = await net10Stats();
    await nsExec(vm.b.ns, `ip neigh flush dev ${T.b}`);
    const [f, answered] = await Promise.all([
      flood('arp', GW10, net10(21)),
      sleep(1000).then(() => arping(vm.b.ns, T.b, GW10, { count: 3, timeoutSec: 3 })),
    ]);
    await settle();
    const after = await net10Stats();
    const replies = after.counters.arpReplies - before.counters.arpReplies;
    const dropped = (after.dropped.arp ?? 0) - (before.dropped.arp ?? 0);
    console.log(`[rate-limits] ARP: ${f.sent} requests in ${f.secs} s; ${replies} replies (all ports), ${dropped} dropped on ${T.a}`);
    expect(answered, 'vm b gets ARP replies from the gateway during the flood').toBe(true);
    expect(dropped).toBeGreaterThan(f.sent / 2);
    expect(replies).toBeLessThanOrEqual(through(LIMITS.arp, f.secs) + 6);
    expect(replies).toBeGreaterThanOrEqual(LIMITS.arp * f.secs * 0.5);
    expect(after.limited).toContain('arp');
  });

  it('an ICMP echo flood at the gateway is cut to 50/s; another port\'s pings are all answered', async () => {
    const before = await net10Stats();
    const [f, got] = await Promise.all([flood('echo', gwMac10, GW10, net10(21)), sleep(300).then(() => pingCount(vm.b.ns, GW10, 20, 0.1))]);
    await settle();
    const after = await net10Stats();
    const replies = after.counters.icmpEchoReplies - before.counters.icmpEchoReplies;
    const dropped = (after.dropped.icmp ?? 0) - (before.dropped.icmp ?? 0);
    console.log(`[rate-limits] echo: ${f.sent} requests in ${f.secs} s; ${replies} replies (all ports), ${dropped} dropped; vm b ${got}/20`);
    expect(got).toBeGreaterThanOrEqual(19);
    expect(dropped).toBeGreaterThan(f.sent / 2);
    expect(replies - got).toBeLessThanOrEqual(through(LIMITS.icmp, f.secs));
    expect(replies - got).toBeGreaterThanOrEqual(LIMITS.icmp * f.secs * 0.5);
  });

  it('DHCPDISCOVERs with random source MACs and chaddrs are cut to 5/s; another port gets its lease meanwhile', async () => {
    const before = await net10Stats();
    const [f, lease] = await Promise.all([flood('dhcp'), sleep(500).then(() => udhcpcOnce(vm.b, { tries: 3 }))]);
    await settle();
    const after = await net10Stats();
    const handled = after.counters.dhcpRequests - before.counters.dhcpRequests;
    const dropped = (after.dropped.dhcp ?? 0) - (before.dropped.dhcp ?? 0);
    console.log(`[rate-limits] DHCP: ${f.sent} DISCOVERs in ${f.secs} s; ${handled} handled by the server (all ports), ${dropped} dropped`);
    expect(lease.code, `vm b's udhcpc during the flood: ${lease.log}`).toBe(0);
    expect(lease.lease!.ip).toBe(bIp);
    expect(dropped).toBeGreaterThan(f.sent / 2);
    expect(handled).toBeLessThanOrEqual(through(LIMITS.dhcp, f.secs) + 6);
  });

  it('DNS queries to the gateway are cut to 20/s; another port resolves over UDP and TCP', async () => {
    const before = await net10Stats();
    const toHost0 = (await routerShow('r0')).hostNat.udp.toHost;
    const [f, udp, tcp] = await Promise.all([
      flood('dns', gwMac10, GW10, net10(21)),
      sleep(500).then(() => nsExecR(vm.b.ns, `timeout 10 busybox nslookup -type=a svc.test ${GW10}`)),
      sleep(1000).then(() => nsExecR(vm.b.ns, `${PYTHON} ${q(tcpTool())} dnstcp ${GW10} svc.test`, { timeoutMs: 20_000 })),
    ]);
    await settle();
    const after = await net10Stats();
    const dropped = (after.dropped.dns ?? 0) - (before.dropped.dns ?? 0);
    const forwarded = (await routerShow('r0')).hostNat.udp.toHost - toHost0;
    console.log(`[rate-limits] DNS: ${f.sent} queries in ${f.secs} s; ${forwarded} forwarded (all ports), ${dropped} dropped on ${T.a}`);
    expect(udp.stdout, udp.stderr).toContain(FAR);
    expect(tcp.stdout.trim(), tcp.stderr).toBe(FAR);
    expect(dropped).toBeGreaterThan(f.sent / 2);
    expect(forwarded, 'UDP datagrams forwarded to the resolver').toBeLessThanOrEqual(through(LIMITS.dns, f.secs) + 4);
    expect(forwarded).toBeGreaterThanOrEqual(LIMITS.dns * f.secs * 0.5);
  });

  it('the time-exceeded errors the router sends are cut to 10/s per port; another port still gets its own', async () => {
    const before = await net10Stats();
    const r0 = (await routerShow('r0')).counters.ttlExceeded;
    const [f, probe] = await Promise.all([
      flood('ttl1', gwMac10, net10(21), FAR),
      sleep(800).then(() => nsExec(vm.b.ns, `${PYTHON} ${q(ttl1Py)} ${FAR}`, { timeoutMs: 30_000 })),
    ]);
    await settle();
    const after = await net10Stats();
    const exceeded = (await routerShow('r0')).counters.ttlExceeded - r0;
    const dropped = (after.dropped.icmp_errors ?? 0) - (before.dropped.icmp_errors ?? 0);
    console.log(`[rate-limits] TTL 1: ${f.sent} packets in ${f.secs} s; ${exceeded} expired at the router, ${dropped} errors not sent; vm b: ${probe.trim()}`);
    expect(probe.trim()).toBe(`type 11 from ${GW10}`);
    expect(exceeded).toBeGreaterThan(f.sent / 2);
    expect(exceeded - dropped, 'errors sent').toBeLessThanOrEqual(through(LIMITS.icmpErrors, f.secs) + 3);
    expect(dropped).toBeGreaterThan(f.sent / 2);
  });

  it('the drops are in the metrics under the flooding port, the other port has none; a limited port is logged once (warn)', async () => {
    const m = await metrics();
    for (const kind of ['dhcp', 'arp', 'icmp', 'dns', 'icmp_errors']) {
      const v = metric(m, 'vswitch_router_rate_limited_total', { router: 'r0', network: 'net10', port: T.a, kind });
      expect(v, kind).toBeGreaterThan(100);
      expect(metric(m, 'vswitch_router_rate_limited_total', { router: 'r0', network: 'net10', port: T.b, kind }), kind).toBe(0);
    }
    const text = (await d.ok(['router', 'show', 'r0'])).stdout;
    expect(text).toContain('limits per port: dhcp 5/s, arp 50/s, icmp 50/s, dns 20/s, icmp errors 10/s');
    expect(text).toMatch(new RegExp(`net10\\s+${T.a}\\s+\\d+\\s+\\d+`));
    const lines = d.logsMatching('rate_limited').filter((l) => l.obj?.event === 'rate_limited' && l.obj.port === T.a);
    expect([...new Set(lines.map((l) => l.obj.kind))].sort()).toEqual(['arp', 'dhcp', 'dns', 'icmp', 'icmp_errors']);
    expect(lines.every((l) => l.obj.level === 'warn' && l.obj.router === 'r0' && l.obj.network === 'net10')).toBe(true);
  });
});

describe('the NAT session limit holds per bridge port (issue 12)', () => {
  /** Opens PER_HOST + 50 UDP flows from each of two addresses of one VM. */
  async function twoAddressFlood(v: DhcpVm, srcs: string[], dst: string): Promise<void> {
    for (const [i, src] of srcs.entries()) {
      const r = await nsExec(v.ns, `${PYTHON} ${q(flowsPy)} ${src} ${dst} 9 ${20000 + i * 1000} ${PER_HOST + 50}`, { timeoutMs: 30_000 });
      expect(r).toContain(`sent ${PER_HOST + 50}`);
    }
    await settle();
  }

  it(`host NAT: a port with two addresses gets ${PER_PORT} sessions, not 2 x ${PER_HOST}; refused as port_limit; another port still opens flows`, async () => {
    // The DNS test's forwarder sessions of vm a expire 10 s after it (UDP_DNS_IDLE_TIMEOUT_MS):
    // one expiring in the middle of this test would make the counts below off by one.
    await waitFor('vm a\'s earlier host NAT sessions to expire', async () => ((await routerShow('r0')).hostNat.ports?.[T.a] ?? 0) === 0,
      { timeoutMs: 30_000, intervalMs: 500 });
    await twoAddressFlood(vm.a, [net10(21), net10(22)], S_IP);
    const h = (await routerShow('r0')).hostNat;
    console.log(`[rate-limits] host NAT: sessions ${h.sessions}, per port ${JSON.stringify(h.ports)}, refused ${JSON.stringify(h.refused)}`);
    expect(h.maxSessionsPerPort).toBe(PER_PORT);
    expect(h.ports[T.a]).toBe(PER_PORT);
    expect(h.refused.host_limit).toBeGreaterThanOrEqual(50);
    expect(h.refused.port_limit).toBeGreaterThanOrEqual(100);
    expect(await udpSend(vm.b.ns, S_IP, 7, { sport: 41010, msg: 'b-echo' })).toBe('reply b-echo');
    // One more flow from the address that is under its own limit: refused for the port.
    await nsExec(vm.a.ns, `${PYTHON} ${q(flowsPy)} ${net10(22)} ${S_IP} 9 30000 1`);
    await settle();
    const h2 = (await routerShow('r0')).hostNat;
    expect(h2.refused.port_limit).toBe(h.refused.port_limit + 1);
    const m = await metrics();
    expect(metric(m, 'vswitch_host_nat_sessions_refused_total', { router: 'r0', reason: 'port_limit' })).toBe(h2.refused.port_limit);
  });

  it(`NAPT: a port with two addresses gets ${PER_PORT} sessions, not 2 x ${PER_HOST}; refused as port_limit; another port still opens flows`, async () => {
    await twoAddressFlood(vm.c, [net20(21), net20(22)], UP_S);
    const n = (await routerShow('r1')).nat;
    console.log(`[rate-limits] NAPT: sessions ${n.sessions}, per port ${JSON.stringify(n.ports)}, refused ${JSON.stringify(n.refused)}`);
    expect(n.maxSessionsPerPort).toBe(PER_PORT);
    expect(n.ports[T.c]).toBe(PER_PORT);
    expect(n.refused.host_limit).toBeGreaterThanOrEqual(50);
    expect(n.refused.port_limit).toBeGreaterThanOrEqual(100);
    expect(await udpSend(vm.d.ns, UP_S, 7, { sport: 41020, msg: 'd-echo' })).toBe('reply d-echo');
    await nsExec(vm.c.ns, `${PYTHON} ${q(flowsPy)} ${net20(22)} ${UP_S} 9 30000 1`);
    await settle();
    const n2 = (await routerShow('r1')).nat;
    expect(n2.refused.port_limit).toBe(n.refused.port_limit + 1);
    const m = await metrics();
    expect(metric(m, 'vswitch_nat_sessions_refused_total', { router: 'r1', reason: 'port_limit' })).toBe(n2.refused.port_limit);
  });
});

describe('limits change at runtime', () => {
  it('a reload that changes only r0\'s limits applies them in place: sessions and counters stay', async () => {
    const before = await routerShow('r0');
    expect(before.hostNat.sessions).toBeGreaterThan(0);
    writeFileSync(d.configFile, toYaml(config({ ...LIMITS, icmp: 0, arp: 80 })));
    const r = await d.ok(['reload']);
    expect(r.stdout + r.stderr).not.toContain('delrouter');
    const after = await routerShow('r0');
    expect(after.limits).toEqual({ ...LIMITS, icmp: 0, arp: 80 });
    expect(after.hostNat.sessions, 'host NAT sessions kept').toBeGreaterThan(0);
    expect(after.networks[0].counters.arpReplies).toBeGreaterThanOrEqual(before.networks[0].counters.arpReplies);
    expect(d.logsMatching('config_applied').at(-1)?.obj?.changes.join(' ')).toContain('limits r0');
    // icmp 0: off. The flood is answered in full now.
    const s0 = await net10Stats();
    const f = await flood('echo', gwMac10, GW10, net10(21));
    await settle();
    const s1 = await net10Stats();
    expect(s1.dropped.icmp).toBe(s0.dropped.icmp);
    const replies = s1.counters.icmpEchoReplies - s0.counters.icmpEchoReplies;
    console.log(`[rate-limits] echo with icmp: 0 (off): ${f.sent} requests, ${replies} replies`);
    expect(replies).toBeGreaterThan(Math.max(f.sent * 0.5, LIMITS.icmp * (f.secs + 1)));
    expect(d.alive()).toBe(true);
  });
});
