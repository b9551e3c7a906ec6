/*
 * Tenant protection (issue 6, items 2 and 3) through the real daemon: a router
 * network with DHCP on VLAN 10 and three VM namespaces on TAP ports, whose guards
 * are on by default (VM ports of a VLAN with a router DHCP server). vm1 is the
 * hostile one (stormControl 200 pps):
 * - it runs a rogue DHCP server (dnsmasq): vm2 still gets its lease from the
 *   router, and vm1's offers are counted as `dhcp_guard`;
 * - with a static address it was not leased it reaches neither the gateway nor vm2
 *   (`ip_source_guard`, `arp_spoof`), while its leased address works;
 * - its gratuitous ARP and ARP replies claiming the gateway's and vm3's addresses
 *   are dropped (`arp_spoof`) and vm2's neighbour table keeps the right MACs;
 * - a 3 s broadcast storm is cut to its rate (`storm_control`) while vm2 and vm3
 *   keep pinging each other;
 * - 100,000 random source MACs keep the MAC table within maxMacs (8192), evicting
 *   vm1's own entries (fdb counters in `stats --json`), while vm2 and vm3 keep pinging;
 * - 3000 DHCPDISCOVERs with random chaddrs get at most maxLeasesPerPort (4) leases
 *   and offers, and a new client on vm3 still gets a lease.
 * Raw frames come from a small python script (AF_PACKET) inside vm1.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, dropCount, findPort, startDaemon } from './helpers/daemon.js';
import { type DhcpVm, leases, makeDhcpVm, udhcpcOnce } from './helpers/dhcp.js';
import { PREFIX, cleanup, ifname, nsExec, nsExecR, q, sleep, tempDir, waitFor } from './helpers/run.js';
import { Background, neigh, ping, pingCount } from './helpers/vm.js';
import { PYTHON } from './helpers/scapy.js';

const X = 20 + (parseInt(PREFIX.slice(1), 16) % 200);
const ip4 = (host: number): string => `10.${X}.10.${host}`;
const GW = ip4(1);
const BR = 'br0';
const POOL = { lo: 100, hi: 120 };
const MAX_LEASES = 4;

const RAW_PY = String.raw`
import os, random, socket, struct, sys, time
iface, mode = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
own = bytes.fromhex(open('/sys/class/net/%s/address' % iface).read().strip().replace(':', ''))
def mac():
    m = bytearray(os.urandom(6)); m[0] = (m[0] & 0xfc) | 0x02; return bytes(m)
def send(f):
    while True:
        try: s.send(f); return
        except OSError: time.sleep(0.0005)
def csum(b):
    if len(b) % 2: b += b'\0'
    t = sum(struct.unpack('!%dH' % (len(b) // 2), b)); t = (t >> 16) + (t & 0xffff); t += t >> 16
    return (~t) & 0xffff
n = 0
if mode == 'storm':
    end = time.time() + float(sys.argv[3])
    f = b'\xff' * 6 + own + b'\x88\xb5' + b'storm' * 10
    while time.time() < end:
        try: s.send(f); n += 1
        except OSError: pass
elif mode == 'macflood':
    for i in range(int(sys.argv[3])):
        send(b'\xff' * 6 + mac() + b'\x88\xb5' + b'macflood' * 6); n += 1
        if i % 100 == 99: time.sleep(0.001)
elif mode == 'starve':
    gw = bytes.fromhex(sys.argv[4].replace(':', ''))
    for i in range(int(sys.argv[3])):
        ch = mac()
        bootp = struct.pack('!BBBBIHHIIII', 1, 1, 6, 0, random.getrandbits(32), 0, 0, 0, 0, 0, 0) + ch + b'\0' * 10 + b'\0' * 192
        dhcp = bootp + b'\x63\x82\x53\x63' + b'\x35\x01\x01' + b'\xff'
        udp = struct.pack('!HHHH', 68, 67, 8 + len(dhcp), 0) + dhcp
        ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, b'\0' * 4, b'\xff' * 4)
        ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
        send(gw + ch + b'\x08\x00' + ip + udp); n += 1
        if i % 50 == 49: time.sleep(0.005)
print(n)
`;

/** ARP (scapy) sent from vm1: op, sender MAC/IP, target MAC/IP, Ethernet destination. */
async function sendArp(ns: string, iface: string, arps: { op: number; hwsrc: string; psrc: string; hwdst: string; pdst: string; dst: string }[]): Promise<void> {
  const frames = arps.map((a) => `Ether(src="${a.hwsrc}", dst="${a.dst}")/ARP(op=${a.op}, hwsrc="${a.hwsrc}", psrc="${a.psrc}", hwdst="${a.hwdst}", pdst="${a.pdst}")`);
  const script = ['from scapy.all import Ether, ARP, sendp, conf', 'conf.verb = 0', `sendp([${frames.join(', ')}] * 3, iface="${iface}", inter=0.05)`].join('\n');
  await nsExec(ns, `${PYTHON} -c ${q(script)}`, { timeoutMs: 30_000 });
}

describe('tenant protection: DHCP guard, IP source guard, ARP spoofing, storm control, MAC flood, DHCP starvation', () => {
  const T = { vm1: ifname('g1'), vm2: ifname('g2'), vm3: ifname('g3') };
  let d: Daemon;
  const vm: Record<string, DhcpVm> = {};
  const ips: Record<string, string> = {};
  const bg: Background[] = [];
  let raw: string;

  const stats = async (): Promise<any> => (await d.ok(['stats', BR], { json: true })).json;
  const drops = async (port: string, reason: string): Promise<number> => dropCount(findPort(await stats(), port), reason);
  const rawSend = async (args: (string | number)[], timeoutMs = 60_000): Promise<number> =>
    Number((await nsExec(vm.vm1.ns, [PYTHON, raw, T.vm1, ...args].map((x) => q(String(x))).join(' '), { timeoutMs })).trim());
  const lease = async (k: string): Promise<string> => {
    const r = await udhcpcOnce(vm[k], { tries: 5 });
    expect(r.code, `${k} udhcpc: ${r.log}`).toBe(0);
    return r.lease!.ip;
  };
  const inPool = (ip: string): boolean => ip.startsWith(`10.${X}.10.`) && +ip.split('.')[3] >= POOL.lo && +ip.split('.')[3] <= POOL.hi;

  beforeAll(async () => {
    raw = join(tempDir('raw'), 'raw.py');
    writeFileSync(raw, RAW_PY);
    const access = { type: 'tap', vlan: { mode: 'access', vid: 10 } };
    d = await startDaemon({
      stateDir: tempDir('state'),
      metrics: { listen: 'off' },
      bridges: {
        [BR]: {
          maxMacs: 8192,
          ports: { [T.vm1]: { ...access, stormControl: { pps: 200 } }, [T.vm2]: access, [T.vm3]: access },
        },
      },
      routers: {
        r1: {
          networks: {
            net10: {
              bridge: BR, vlan: 10, address: `${GW}/24`,
              dhcp: { pool: [`${ip4(POOL.lo)}-${ip4(POOL.hi)}`], maxLeasesPerPort: MAX_LEASES },
            },
          },
        },
      },
    });
    [vm.vm1, vm.vm2, vm.vm3] = await Promise.all([makeDhcpVm('g1', T.vm1), makeDhcpVm('g2', T.vm2), makeDhcpVm('g3', T.vm3)]);
  });

  afterAll(async () => {
    for (const b of bg) await b.stop();
    await d?.stop();
    await cleanup();
  });

  it('guards are on by default for the VM ports, and the show view says so', async () => {
    const show = await d.showJson(BR);
    for (const p of Object.values(T)) expect(findPort(show, p)?.guard, p).toMatchObject({ dhcp: true, ipSource: true });
    expect(findPort(show, T.vm1)?.stormControl).toEqual({ pps: 200 });
    expect(findPort(show, 'net10')?.guard).toBeUndefined();
  });

  it('a rogue DHCP server (dnsmasq) on vm1 hands out nothing: vm2 gets its lease from the router', async () => {
    await nsExec(vm.vm1.ns, `ip addr add ${ip4(2)}/24 dev ${T.vm1}`);
    const dir = tempDir('dnsmasq');
    const rogue = new Background(vm.vm1.ns, `/usr/sbin/dnsmasq -k -u root --port=0 --no-resolv --no-hosts --bind-interfaces --interface=${T.vm1} ` +
      `--dhcp-range=${ip4(50)},${ip4(60)},255.255.255.0,1h --dhcp-authoritative --no-ping --dhcp-leasefile=${join(dir, 'leases')} --pid-file=${join(dir, 'pid')} --log-dhcp --log-facility=-`);
    bg.push(rogue);
    await sleep(1000);
    try {
      ips.vm2 = await lease('vm2');
      expect(inPool(ips.vm2), `vm2 got ${ips.vm2}, not from the router's pool (dnsmasq: ${rogue.err})`).toBe(true);
      await waitFor('dnsmasq to offer', () => /DHCPOFFER/.test(rogue.err + rogue.out), { timeoutMs: 5000 }).catch(() => undefined);
      expect(rogue.err + rogue.out, 'dnsmasq saw the DISCOVER and offered').toMatch(/DHCPOFFER/);
      expect(await drops(T.vm1, 'dhcp_guard')).toBeGreaterThan(0);
    } finally {
      await rogue.stop();
      await nsExec(vm.vm1.ns, `ip addr flush dev ${T.vm1}`);
    }
    ips.vm3 = await lease('vm3');
    expect(inPool(ips.vm3)).toBe(true);
    expect(await ping(vm.vm2.ns, ips.vm3), 'vm2 pings vm3').toBe(true);
    expect(await ping(vm.vm2.ns, GW), 'vm2 pings the gateway').toBe(true);
  });

  it('a static address not leased to vm1 reaches no one; its leased address works', async () => {
    const gwMac = /lladdr (\S+)/.exec(await neigh(vm.vm2.ns, GW))![1];
    await nsExec(vm.vm1.ns, `ip addr add ${ip4(77)}/24 dev ${T.vm1}; ip neigh replace ${GW} lladdr ${gwMac} dev ${T.vm1} nud permanent`);
    const before = await drops(T.vm1, 'ip_source_guard');
    const arpBefore = await drops(T.vm1, 'arp_spoof');
    expect(await ping(vm.vm1.ns, GW, { count: 3, timeoutSec: 2 }), 'spoofed source to the gateway').toBe(false);
    expect(await ping(vm.vm1.ns, ips.vm2, { count: 2, timeoutSec: 2 }), 'spoofed source to vm2').toBe(false);
    expect(await drops(T.vm1, 'ip_source_guard') - before).toBeGreaterThanOrEqual(3);
    expect(await drops(T.vm1, 'arp_spoof') - arpBefore, 'its ARP for vm2 from the unleased address').toBeGreaterThan(0);
    await nsExec(vm.vm1.ns, `ip addr flush dev ${T.vm1}; ip neigh flush dev ${T.vm1}; ip neigh del ${GW} dev ${T.vm1} 2>/dev/null || true`);
    ips.vm1 = await lease('vm1');
    expect(inPool(ips.vm1)).toBe(true);
    expect(await ping(vm.vm1.ns, GW), 'leased address to the gateway').toBe(true);
    expect(await ping(vm.vm1.ns, ips.vm2), 'leased address to vm2').toBe(true);
  });

  it('ARP claiming the gateway or vm3 is dropped, and vm2\'s neighbour table is not poisoned', async () => {
    expect(await ping(vm.vm2.ns, GW)).toBe(true);
    expect(await ping(vm.vm2.ns, ips.vm3)).toBe(true);
    const gwBefore = /lladdr (\S+)/.exec(await neigh(vm.vm2.ns, GW))![1];
    const vm3Before = /lladdr (\S+)/.exec(await neigh(vm.vm2.ns, ips.vm3))![1];
    expect(vm3Before).toBe(vm.vm3.mac);
    await sleep(1500); // past the kernel's ARP locktime (1 s), when a reply would be taken
    const before = await drops(T.vm1, 'arp_spoof');
    const me = vm.vm1.mac;
    await sendArp(vm.vm1.ns, T.vm1, [
      { op: 2, hwsrc: me, psrc: GW, hwdst: 'ff:ff:ff:ff:ff:ff', pdst: GW, dst: 'ff:ff:ff:ff:ff:ff' }, // gratuitous: "I am the gateway"
      { op: 1, hwsrc: me, psrc: ips.vm3, hwdst: '00:00:00:00:00:00', pdst: ips.vm3, dst: 'ff:ff:ff:ff:ff:ff' }, // gratuitous request as vm3
      { op: 2, hwsrc: me, psrc: GW, hwdst: vm.vm2.mac, pdst: ips.vm2, dst: vm.vm2.mac }, // unicast reply to vm2
      { op: 2, hwsrc: me, psrc: ips.vm3, hwdst: vm.vm2.mac, pdst: ips.vm2, dst: vm.vm2.mac },
    ]);
    await sleep(300);
    expect(await drops(T.vm1, 'arp_spoof') - before).toBeGreaterThanOrEqual(12);
    expect(/lladdr (\S+)/.exec(await neigh(vm.vm2.ns, GW))?.[1], 'vm2 still has the gateway\'s MAC').toBe(gwBefore);
    expect(/lladdr (\S+)/.exec(await neigh(vm.vm2.ns, ips.vm3))?.[1], 'vm2 still has vm3\'s MAC').toBe(vm3Before);
    expect(await ping(vm.vm2.ns, GW)).toBe(true);
  });

  it('a 3 s broadcast storm from vm1 is cut to 200 pps while vm2 and vm3 keep pinging', async () => {
    const before = await drops(T.vm1, 'storm_control');
    const [sent, replies] = await Promise.all([rawSend(['storm', 3]), pingCount(vm.vm2.ns, ips.vm3, 30, 0.1)]);
    const dropped = await drops(T.vm1, 'storm_control') - before;
    console.log(`storm: ${sent} frames sent, ${dropped} dropped by storm control; vm2 -> vm3: ${replies}/30 replies`);
    expect(dropped).toBeGreaterThan(1000);
    expect(replies).toBeGreaterThanOrEqual(29);
  });

  it('100,000 random source MACs from vm1 keep the table within maxMacs, evicting vm1\'s own entries', async () => {
    const s0 = (await stats())[0];
    const bg2 = new Background(vm.vm2.ns, `busybox ping -i 0.1 -W 1 ${ips.vm3}`);
    bg.push(bg2);
    const sent = await rawSend(['macflood', 100_000], 120_000);
    await sleep(500);
    await bg2.stop();
    const s1 = (await stats())[0];
    console.log(`MAC flood: ${sent} frames; fdb ${JSON.stringify(s1.fdb)}; vm2 -> vm3 replies ${bg2.pingSeqs().length}`);
    expect(sent).toBe(100_000);
    expect(s1.fdb.size).toBeLessThanOrEqual(8192);
    // The limit was hit (more learned than fits), and what did not fit was evicted or refused.
    const learned = s1.fdb.learned - s0.fdb.learned;
    expect(learned).toBeGreaterThan(8192);
    expect(s1.fdb.evicted - s0.fdb.evicted + s1.fdb.refusedFull - s0.fdb.refusedFull).toBeGreaterThanOrEqual(learned - 8192);
    const seqs = bg2.pingSeqs();
    expect(seqs.length).toBeGreaterThan(0);
    const lost = Math.max(...seqs) + 1 - seqs.length;
    expect(lost, `pings lost during the flood: ${lost}`).toBeLessThanOrEqual(2);
    // The neighbours' entries survived (fair eviction): vm2 and vm3 are still unicast.
    const macs = (await d.ok(['showmacs', BR], { json: true })).json as any[];
    for (const m of [vm.vm2.mac, vm.vm3.mac]) expect(macs.some((e) => e.mac === m), m).toBe(true);
  });

  it('3000 DHCPDISCOVERs with random chaddrs from vm1 get at most maxLeasesPerPort, and a new client still gets a lease', async () => {
    const gwMac = /lladdr (\S+)/.exec(await neigh(vm.vm2.ns, GW))![1];
    const sent = await rawSend(['starve', 3000, gwMac], 120_000);
    expect(sent).toBe(3000);
    await sleep(500);
    const rows = await leases(d);
    const onVm1 = rows.filter((r) => r.port === T.vm1);
    console.log(`starvation: ${rows.length} leases/offers in all, ${onVm1.length} on ${T.vm1}`);
    // vm1's own lease plus offers to invented chaddrs.
    expect(onVm1.length).toBeLessThanOrEqual(MAX_LEASES);
    // A new client (vm3 with a new MAC) still gets an address.
    await nsExec(vm.vm3.ns, `ip addr flush dev ${T.vm3}; ip link set dev ${T.vm3} address 02:5e:${PREFIX.slice(1, 3)}:${PREFIX.slice(3, 5)}:00:33`);
    vm.vm3.mac = (await nsExec(vm.vm3.ns, `cat /sys/class/net/${T.vm3}/address`)).trim();
    const ip = await lease('vm3');
    expect(inPool(ip)).toBe(true);
    expect(await ping(vm.vm3.ns, GW)).toBe(true);
    expect(d.alive()).toBe(true);
    const r = await nsExecR(vm.vm2.ns, `busybox ping -c 2 -W 2 ${ip}`);
    expect(r.code).toBe(0);
  });
});
