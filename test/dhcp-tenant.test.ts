/*
 * DHCP under a hostile tenant (issue 12, items 1-3), through the real daemon: a
 * router network with DHCP on VLAN 10 (pool of 21, guards on by default for the
 * four VM ports, no DHCP options beyond the defaults) and four VM namespaces on
 * TAPs that take real leases with busybox udhcpc. vm1 is the attacker (scapy and a
 * raw AF_PACKET socket), vm2 the victim, vm3 a neighbour and observer, vm4 a VM
 * that renews its own lease flat out. The per-port DHCP rate limit (10/s by
 * default, rate-limits.test.ts) is off here, so that every attack frame reaches
 * the server: these tests are about what the server does with them. What each
 * test catches in the old code (main before this change):
 * (a) lease hijack: one broadcast REQUEST from vm1 with vm2's chaddr, client id
 *     and address (from 0.0.0.0, Ethernet source vm2's MAC or vm1's own) was ACKed
 *     and moved vm2's lease and IP source guard binding to vm1's port: vm1 saw the
 *     ACK, `dhcp leases` showed vm2's lease on vm1's port and vm2's pings to the
 *     gateway were dropped. Now: chaddr must be the frame's source
 *     (`chaddr_mismatch`), the lease belongs to (vm2's port, vm2's MAC)
 *     (`not_owner` NAK to the requester), and vm2 keeps lease, port and pings.
 * (b) spoofed RELEASE (and DECLINE) of vm2's address from vm1 deleted vm2's lease
 *     and binding. Now dropped (`not_owner`), vm2 keeps pinging.
 * (c) starvation: 100 SELECTING REQUESTs with random chaddrs bound the whole pool
 *     to vm1's port (no per-port cap by default) and 440 DISCOVERs with random
 *     client ids held the rest for 30 s: vm3 got no lease. Now the REQUESTs are
 *     refused (`chaddr_mismatch`), vm1's port holds at most 4 offers (its oldest
 *     reclaimed), and both vm3 and a real client on vm1 get leases.
 * (d) NAK storm: every REQUEST refused with a NAK was answered with an Ethernet
 *     broadcast that vm3 saw. Now the NAK goes to the requester's MAC only: vm1
 *     sees its NAKs, vm3 (tcpdump) sees none.
 * (e) renewal flood: each ACK was a synchronous lease-file write with two fsyncs
 *     on the forwarding loop (no `vswitch_dhcp_lease_writes_total` either). Now
 *     ACKs wait for a group commit off the loop: writes << ACKs, and vm2 <-> vm3
 *     pings go on during the flood.
 * (f) MAC hijack: frames from vm1 with vm2's MAC as their source that the IP
 *     source guard lets through (a DHCP DISCOVER from 0.0.0.0, IPv6, any other
 *     ethertype) moved vm2's MAC to vm1's port, and vm3's traffic to vm2 went to
 *     vm1 until vm2 spoke again. Now vm2's lease pins its MAC to its port
 *     (`bound_mac_conflict`): vm1 sees none of it and vm3 loses no ping. In (a) and
 *     (b) the same pin stops the frames with vm2's source MAC at the bridge.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, dropCount, findPort, macEntries, startDaemon } from './helpers/daemon.js';
import { type DhcpVm, leaseOf, leases, makeDhcpVm, udhcpcOnce } from './helpers/dhcp.js';
import { PREFIX, cleanup, freePort, ifname, nsExec, nsExecR, q, sleep, tempDir } from './helpers/run.js';
import { ping, tcpdump } from './helpers/vm.js';
import { PYTHON } from './helpers/scapy.js';

const X = 20 + (parseInt(PREFIX.slice(1), 16) % 200);
const ip4 = (host: number): string => `10.${X}.10.${host}`;
const GW = ip4(1);
const BR = 'br0';
const POOL = { lo: 100, hi: 120 };
const NET = { router: 'r1', network: 'net10', vlan: '10' };

/*
 * The attacker's tools: DHCP client messages built with scapy, sent on a raw
 * AF_PACKET socket (fast enough for the floods).
 *   hijack  VICTIM_MAC VICTIM_IP CID_HEX SRC(own|victim)       INIT-REBOOT, SELECTING and RENEWING REQUESTs as the victim
 *   release VICTIM_MAC VICTIM_IP CID_HEX GW_MAC SRC(own|victim) RELEASE (unicast to the server) and DECLINE of the victim's address
 *   starve  N_REQ N_DISC POOL_LO                                N SELECTING REQUESTs (random chaddr), N DISCOVERs (random client id)
 *   naks    GW_MAC OTHER_IP N                                   N unicast REQUESTs without a lease (wrong subnet; another's address)
 *   renew   MY_IP GW_MAC SECONDS                                RENEWING REQUESTs for our own lease, flat out
 *   spoof   VICTIM_MAC SECONDS                                  frames with the victim's source MAC: DHCP DISCOVER, IPv6, 0x88b5
 * Prints the number of frames sent.
 */
const ATTACK_PY = String.raw`
import os, random, socket, sys, time
from scapy.all import Ether, IP, UDP, BOOTP, DHCP, raw, conf
conf.verb = 0
iface, mode, gw, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
own = open('/sys/class/net/%s/address' % iface).read().strip()
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
BC = 'ff:ff:ff:ff:ff:ff'
def send(b):
    while True:
        try: s.send(b); return
        except OSError: time.sleep(0.0005)
def mb(m): return bytes.fromhex(m.replace(':', ''))
def rmac():
    m = bytearray(os.urandom(6)); m[0] = (m[0] & 0xfc) | 2
    return ':'.join('%02x' % b for b in m)
def msg(src, dst, ipsrc, ipdst, chaddr, opts, ciaddr='0.0.0.0'):
    return raw(Ether(src=src, dst=dst) / IP(src=ipsrc, dst=ipdst) / UDP(sport=68, dport=67) /
               BOOTP(op=1, chaddr=mb(chaddr) + b'\0' * 10, ciaddr=ciaddr, xid=random.getrandbits(32)) /
               DHCP(options=opts + ['end']))
n = 0
if mode == 'hijack':
    vmac, vip, cid, who = args
    src = own if who == 'own' else vmac
    cidb = bytes.fromhex(cid)
    for _ in range(3):
        for m in [
            msg(src, BC, '0.0.0.0', '255.255.255.255', vmac, [('message-type', 'request'), ('client_id', cidb), ('requested_addr', vip)]),
            msg(src, BC, '0.0.0.0', '255.255.255.255', vmac, [('message-type', 'request'), ('client_id', cidb), ('requested_addr', vip), ('server_id', gw)]),
            msg(src, BC, '0.0.0.0', '255.255.255.255', vmac, [('message-type', 'request'), ('client_id', cidb)], ciaddr=vip),
        ]:
            send(m); n += 1
        time.sleep(0.05)
elif mode == 'release':
    vmac, vip, cid, gwmac, who = args
    src = own if who == 'own' else vmac
    cidb = bytes.fromhex(cid)
    for _ in range(3):
        send(msg(src, gwmac, '0.0.0.0', gw, vmac, [('message-type', 'release'), ('client_id', cidb), ('server_id', gw)], ciaddr=vip)); n += 1
        send(msg(src, BC, '0.0.0.0', '255.255.255.255', vmac, [('message-type', 'decline'), ('client_id', cidb), ('requested_addr', vip), ('server_id', gw)])); n += 1
        time.sleep(0.05)
elif mode == 'starve':
    nreq, ndisc, lo = int(args[0]), int(args[1]), args[2]
    base = [int(x) for x in lo.split('.')]
    for i in range(nreq):
        ip = '.'.join(map(str, base[:3] + [base[3] + i % 21]))
        send(msg(own, BC, '0.0.0.0', '255.255.255.255', rmac(), [('message-type', 'request'), ('requested_addr', ip), ('server_id', gw)])); n += 1
        if i % 50 == 49: time.sleep(0.005)
    for i in range(ndisc):
        send(msg(own, BC, '0.0.0.0', '255.255.255.255', own, [('message-type', 'discover'), ('client_id', b'\xff' + os.urandom(8))])); n += 1
        if i % 50 == 49: time.sleep(0.005)
elif mode == 'naks':
    gwmac, other, count = args[0], args[1], int(args[2])
    for i in range(count):
        if i % 2 == 0:
            m = msg(own, gwmac, '0.0.0.0', gw, own, [('message-type', 'request'), ('requested_addr', '192.0.2.%d' % (10 + i))])
        else:
            m = msg(own, gwmac, '0.0.0.0', gw, own, [('message-type', 'request')], ciaddr=other)
        send(m); n += 1
        time.sleep(0.02)
elif mode == 'spoof':
    vmac, secs = args[0], float(args[1])
    bc6 = '33:33:00:00:00:01'
    frames = [
        msg(vmac, BC, '0.0.0.0', '255.255.255.255', vmac, [('message-type', 'discover')]),
        # A well-formed IPv6 packet (no next header) from an address the attacker's port may own:
        # the IPv6 guards let it pass, so what stops it is the victim's MAC pin.
        mb(bc6) + mb(vmac) + b'\x86\xdd' + b'\x60\0\0\0\0\0\x3b\x01' + b'\xfe\x80' + bytes(13) + b'\x66' + b'\xff\x02' + bytes(13) + b'\x01',
        mb(BC) + mb(vmac) + b'\x88\xb5' + b'vswitch-test' + bytes(34),
    ]
    end = time.time() + secs
    while time.time() < end:
        for f in frames:
            send(f); n += 1
        time.sleep(0.005)
elif mode == 'renew':
    myip, gwmac, secs = args[0], args[1], float(args[2])
    m = msg(own, gwmac, myip, gw, own, [('message-type', 'request'), ('client_id', b'\x01' + mb(own))], ciaddr=myip)
    end = time.time() + secs
    while time.time() < end:
        try: s.send(m); n += 1
        except OSError: time.sleep(0.0002)
print(n)
`;

/** Samples of one metric from a Prometheus text exposition, summed over series matching `labels`. */
function metric(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  let sum: number | undefined;
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum = (sum ?? 0) + Number(m[3]);
  }
  return sum;
}

describe('DHCP under a hostile tenant: hijack, release, starvation, NAK storms, renewal floods', () => {
  const T = { vm1: ifname('h1'), vm2: ifname('h2'), vm3: ifname('h3'), vm4: ifname('h4') };
  let d: Daemon;
  let base: string;
  let tool: string;
  const vm: Record<string, DhcpVm> = {};
  let gwMac = '';
  let victim = { ip: '', clientId: '' };

  const scrape = async (): Promise<string> => (await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(10_000) })).text();
  const dropped = async (reason: string): Promise<number> => metric(await scrape(), 'vswitch_dhcp_dropped_total', { ...NET, reason }) ?? 0;
  const portDrops = async (port: string, reason: string): Promise<number> =>
    dropCount(findPort((await d.ok(['stats', BR], { json: true })).json, port), reason);
  const attack = async (who: string, mode: string, args: (string | number)[], timeoutMs = 60_000): Promise<number> =>
    Number((await nsExec(vm[who].ns, [PYTHON, tool, vm[who].ifname, mode, GW, ...args].map((x) => q(String(x))).join(' '), { timeoutMs })).trim());
  const lease = async (k: string): Promise<string> => {
    const r = await udhcpcOnce(vm[k], { tries: 5 });
    expect(r.code, `${k} udhcpc: ${r.log}`).toBe(0);
    return r.lease!.ip;
  };
  const inPool = (ip: string): boolean => ip.startsWith(`10.${X}.10.`) && +ip.split('.')[3] >= POOL.lo && +ip.split('.')[3] <= POOL.hi;
  /** vm2's lease is where it belongs, and vm2 reaches the gateway from it (the IP source guard binding is on its port). */
  const victimIntact = async (): Promise<void> => {
    const row = await leaseOf(d, vm.vm2.mac);
    expect(row, `vm2's lease: ${JSON.stringify(await leases(d))}`).toMatchObject({ ip: victim.ip, state: 'bound', port: T.vm2 });
    expect((await leases(d)).filter((l) => l.port !== T.vm2 && (l.mac === vm.vm2.mac || l.ip === victim.ip))).toEqual([]);
    expect(await ping(vm.vm2.ns, GW, { count: 3, timeoutSec: 2 }), 'vm2 pings its gateway').toBe(true);
  };

  beforeAll(async () => {
    tool = join(tempDir('attack'), 'attack.py');
    writeFileSync(tool, ATTACK_PY);
    const metricsAddr = `127.0.0.1:${await freePort()}`;
    base = `http://${metricsAddr}`;
    const access = { type: 'tap', vlan: { mode: 'access', vid: 10 } };
    d = await startDaemon({
      stateDir: tempDir('state'),
      metrics: { listen: metricsAddr, cacheInterval: 0 }, // every scrape fresh: the tests compare before and after
      bridges: { [BR]: { ports: Object.fromEntries(Object.values(T).map((t) => [t, access])) } },
      routers: {
        [NET.router]: {
          limits: { dhcp: 0 },
          networks: {
            [NET.network]: { bridge: BR, vlan: 10, address: `${GW}/24`, dhcp: { pool: [`${ip4(POOL.lo)}-${ip4(POOL.hi)}`], leaseTime: 600 } },
          },
        },
      },
    });
    [vm.vm1, vm.vm2, vm.vm3, vm.vm4] = await Promise.all([
      makeDhcpVm('h1', T.vm1), makeDhcpVm('h2', T.vm2), makeDhcpVm('h3', T.vm3), makeDhcpVm('h4', T.vm4),
    ]);
    victim.ip = await lease('vm2');
    expect(inPool(victim.ip)).toBe(true);
    const row = await leaseOf(d, vm.vm2.mac);
    expect(row?.clientId, 'udhcpc sends a client id (61)').toMatch(/^01/);
    victim = { ip: victim.ip, clientId: row!.clientId };
    expect(await ping(vm.vm2.ns, GW)).toBe(true);
    gwMac = /lladdr (\S+)/.exec(await nsExec(vm.vm2.ns, `ip neigh show ${GW}`))![1];
  });

  afterAll(async () => {
    await d?.stop();
    await cleanup();
  });

  it('the default per-port lease cap of guarded ports shows in router show', async () => {
    const rv = (await d.ok(['router', 'show', '--json'], { json: true })).json;
    expect(rv[0].networks[0].dhcpPolicy).toMatchObject({ maxLeasesPerPort: { guarded: 4, unguarded: null } });
    expect((await d.ok(['router', 'show'])).stdout).toMatch(/4 leases\/guarded port/);
  });

  it('(a) a spoofed REQUEST from vm1 with vm2\'s chaddr, client id and address: vm1 gets no ACK, vm2 keeps lease, port and connectivity', async () => {
    const mismatch0 = await dropped('chaddr_mismatch');
    const pinned0 = await portDrops(T.vm1, 'bound_mac_conflict');
    const cap = await tcpdump(vm.vm1.ns, T.vm1, '-vv udp src port 67');
    let sent = 0;
    try {
      sent += await attack('vm1', 'hijack', [vm.vm2.mac, victim.ip, victim.clientId, 'own']);
      sent += await attack('vm1', 'hijack', [vm.vm2.mac, victim.ip, victim.clientId, 'victim']);
    } finally {
      await cap.stop(500);
    }
    expect(sent).toBe(18);
    const seen = cap.lines.join('\n');
    expect(seen, 'vm1 was ACKed nothing').not.toMatch(/DHCP-Message[^\n]*: ACK/);
    expect(await dropped('chaddr_mismatch') - mismatch0, 'REQUESTs whose chaddr is not the frame source').toBe(9);
    expect(await portDrops(T.vm1, 'bound_mac_conflict') - pinned0, 'REQUESTs with vm2\'s source MAC from vm1\'s port').toBe(9);
    await victimIntact();
  });

  it('(b) a spoofed RELEASE and DECLINE of vm2\'s address from vm1 change nothing', async () => {
    const mismatch0 = await dropped('chaddr_mismatch');
    const pinned0 = await portDrops(T.vm1, 'bound_mac_conflict');
    await attack('vm1', 'release', [vm.vm2.mac, victim.ip, victim.clientId, gwMac, 'victim']);
    await attack('vm1', 'release', [vm.vm2.mac, victim.ip, victim.clientId, gwMac, 'own']);
    await sleep(300);
    await victimIntact();
    expect(await portDrops(T.vm1, 'bound_mac_conflict') - pinned0, 'with vm2\'s source MAC: stopped at the bridge').toBe(6);
    expect(await dropped('chaddr_mismatch') - mismatch0, 'with vm1\'s own: refused by the server').toBe(6);
    // no declined address either
    expect((await leases(d)).filter((l) => l.state === 'declined')).toEqual([]);
  });

  it('(c) 100 SELECTING REQUESTs with random chaddrs and 440 DISCOVERs with random client ids from vm1 do not drain the pool', async () => {
    const sent = await attack('vm1', 'starve', [100, 440, ip4(POOL.lo)], 120_000);
    expect(sent).toBe(540);
    await sleep(300);
    const rows = await leases(d);
    const onVm1 = rows.filter((l) => l.port === T.vm1);
    const text = await scrape();
    console.log(`starvation: ${rows.length} leases/offers in all, ${onVm1.length} on vm1; ` +
      `offers reclaimed ${metric(text, 'vswitch_dhcp_offers_reclaimed_total', NET)}, chaddr_mismatch ${metric(text, 'vswitch_dhcp_dropped_total', { ...NET, reason: 'chaddr_mismatch' })}`);
    expect(onVm1.length, JSON.stringify(onVm1)).toBeLessThanOrEqual(4);
    expect(onVm1.filter((l) => l.state === 'bound'), JSON.stringify(rows)).toEqual([]);
    expect(rows.filter((l) => l.state === 'bound').length).toBe(1); // vm2's
    expect(metric(text, 'vswitch_dhcp_dropped_total', { ...NET, reason: 'pool_exhausted' })).toBe(0);
    // a real client on another port, and one on the flooding port itself, get leases
    const ip3 = await lease('vm3');
    const ip1 = await lease('vm1');
    expect(inPool(ip3) && inPool(ip1)).toBe(true);
    expect(new Set([ip1, ip3, victim.ip]).size).toBe(3);
    expect(await ping(vm.vm3.ns, GW)).toBe(true);
    expect(await ping(vm.vm1.ns, GW)).toBe(true);
    await victimIntact();
  });

  it('(d) unicast REQUESTs without a lease: the NAKs reach the requester only, never a third VM', async () => {
    const nak0 = metric(await scrape(), 'vswitch_dhcp_messages_total', { ...NET, type: 'nak' }) ?? 0;
    const third = await tcpdump(vm.vm3.ns, T.vm3, 'udp src port 67');
    const asker = await tcpdump(vm.vm1.ns, T.vm1, '-vv udp src port 67');
    try {
      expect(await attack('vm1', 'naks', [gwMac, victim.ip, 20])).toBe(20);
    } finally {
      await Promise.all([third.stop(800), asker.stop(800)]);
    }
    const nakked = (metric(await scrape(), 'vswitch_dhcp_messages_total', { ...NET, type: 'nak' }) ?? 0) - nak0;
    expect(nakked, 'the server NAKed them (wrong subnet; another VM\'s address)').toBe(20);
    expect(third.lines, 'vm3 saw no DHCP server frame').toEqual([]);
    expect(asker.lines.join('\n'), 'vm1 got its NAKs').toMatch(/NACK/);
    expect(asker.lines.filter((l) => new RegExp(`> ${vm.vm1.mac}`).test(l)).length, 'in frames to its own MAC').toBeGreaterThanOrEqual(20);
  });

  it('(e) a VM renewing its own lease flat out: far fewer lease writes than ACKs, and vm2 <-> vm3 keep pinging', async () => {
    const ip4v = await lease('vm4');
    const row3 = await leaseOf(d, vm.vm3.mac);
    const ip3 = row3?.state === 'bound' ? row3.ip : await lease('vm3');
    const before = await scrape();
    const pinging = nsExecR(vm.vm2.ns, `busybox ping -c 50 -i 0.1 -W 2 ${ip3}`, { timeoutMs: 30_000 });
    await sleep(200);
    const sent = await attack('vm4', 'renew', [ip4v, gwMac, 5]);
    const pr = await pinging;
    await sleep(500);
    const after = await scrape();
    const delta = (name: string, labels: Record<string, string> = {}): number =>
      (metric(after, name, { ...NET, ...labels }) ?? NaN) - (metric(before, name, { ...NET, ...labels }) ?? NaN);
    const acks = delta('vswitch_dhcp_messages_total', { type: 'ack' });
    const requests = delta('vswitch_dhcp_messages_total', { type: 'request' });
    const writes = delta('vswitch_dhcp_lease_writes_total');
    const replies = Number(/(\d+) packets received/.exec(pr.stdout)?.[1] ?? 0);
    const rtt = /= ([\d.]+)\/([\d.]+)\/([\d.]+) ms/.exec(pr.stdout);
    console.log(`renewal flood: ${sent} REQUESTs sent in 5 s, ${requests} seen, ${acks} ACKs, ${writes} lease writes, ` +
      `backlog drops ${delta('vswitch_dhcp_dropped_total', { reason: 'ack_backlog' })}; vm2 -> vm3 ${replies}/50, rtt min/avg/max ${rtt?.slice(1).join('/')} ms`);
    expect(acks).toBeGreaterThan(200);
    expect(writes).toBeGreaterThan(0);
    expect(writes * 5, `writes ${writes} vs ACKs ${acks}`).toBeLessThan(acks);
    expect(replies, pr.stdout).toBeGreaterThanOrEqual(48);
    expect(d.alive()).toBe(true);
    // the flooder still holds its lease, on its port
    expect(await leaseOf(d, vm.vm4.mac)).toMatchObject({ ip: ip4v, state: 'bound', port: T.vm4 });
  });

  it('(f) frames from vm1 with vm2\'s source MAC (DHCP from 0.0.0.0, IPv6, another ethertype) do not move vm2\'s MAC: vm3\'s pings reach vm2, not vm1', async () => {
    const row3 = await leaseOf(d, vm.vm3.mac);
    if (row3?.state !== 'bound') await lease('vm3');
    expect(await ping(vm.vm3.ns, victim.ip), 'vm3 -> vm2').toBe(true);
    const pinned0 = await portDrops(T.vm1, 'bound_mac_conflict');
    const stolen = await tcpdump(vm.vm1.ns, T.vm1, `icmp and dst host ${victim.ip}`);
    const pinging = nsExecR(vm.vm3.ns, `busybox ping -c 100 -i 0.02 -W 2 ${victim.ip}`, { timeoutMs: 30_000 });
    let sent = 0;
    try {
      sent = await attack('vm1', 'spoof', [vm.vm2.mac, 2]);
    } finally {
      await pinging;
      await stolen.stop(300);
    }
    const pr = await pinging;
    const replies = Number(/(\d+) packets received/.exec(pr.stdout)?.[1] ?? 0);
    const pinned = await portDrops(T.vm1, 'bound_mac_conflict') - pinned0;
    console.log(`MAC spoof: ${sent} frames as vm2 from vm1, ${pinned} dropped (bound_mac_conflict); vm3 -> vm2 ${replies}/100; vm1 saw ${stolen.lines.length} of vm3's pings`);
    expect(sent).toBeGreaterThan(100);
    expect(pinned, 'every spoofed frame stopped at the bridge').toBe(sent);
    expect(stolen.lines, 'vm1 saw none of vm3\'s pings to vm2').toEqual([]);
    expect(replies, pr.stdout).toBeGreaterThanOrEqual(98);
    const macs = macEntries((await d.ok(['showmacs', BR], { json: true })).json).filter((m) => m.mac === vm.vm2.mac.toLowerCase());
    expect(macs.map((m) => m.port)).toEqual([T.vm2]);
    await victimIntact();
  });
});
