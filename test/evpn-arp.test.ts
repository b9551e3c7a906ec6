/*
 * EVPN ARP suppression (issue 16 item 4), without FRR: host A is the daemon with
 * its managed gobgpd and a TAP VM (VLAN 10 = VNI 100, its IP bound by the port's
 * IP source guard, so A advertises it as MAC/IP); host B is a Linux bridge +
 * `vxlan` device (data-plane learning) with a veth VM, and, at the same underlay
 * address, the hand-written iBGP speaker (scripts/bgp-evpn-inject.py) that
 * advertises B's VM as a MAC/IP route: the route FRR would send for it once zebra
 * knows the VM's neighbour entry, sent here directly so the test does not wait on
 * zebra's neighbour learning. A floods to B by its static flood list.
 *
 * Shows: with a cold neighbour cache, A's VM's ARP request for B's VM is answered
 * by A with B's VM's MAC, and no ARP crosses the underlay (tcpdump on A's underlay
 * veth, VXLAN payloads whose inner ethertype is ARP); the VMs then ping; the
 * counters move (show, metrics). A DAD probe for B's IP is answered (a real
 * conflict); A's VM probing its own IP is not (`passed`). With `arpSuppress: false`
 * for the VNI (a reload, gobgpd not restarted) the request crosses and B's VM
 * answers it itself. ND: a solicitation for B's VM's IPv6 address (a MAC/IPv6
 * route) is answered and does not cross; one for an unrouted address does. A flood
 * of MAC/IP routes for one MAC stops at 16 routes per
 * MAC (`mac_routes`), and the ARP table with it.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, startDaemon, toYaml } from './helpers/daemon.js';
import { addNamespace, cleanup, ifname, nsExec, nsExecR, nsname, REPO, sh, tempDir, waitFor } from './helpers/run.js';
import { Background, captureDuring, flushNeigh, neigh, pingCount, quietNamespace } from './helpers/vm.js';

const NET = '10.233';
const UNDER = { a: `${NET}.0.1`, b: `${NET}.0.2` };
const VM = { a: `${NET}.1.11`, b: `${NET}.1.12` };
const VM6 = { a: 'fd00:e9::11', b: 'fd00:e9::12' };
const A_MAC = '02:00:0a:e9:01:0b';
const HOST_A = nsname('pa');
const HOST_B = nsname('pb');
const UA = ifname('pua');
const UB = ifname('pub');
const TAP = ifname('pta');
const BR = 'br0';
const ASN = 65000;
const VM_MTU = 1450;
const vmNs = (n: string): string => nsname(`pvm${n}`);
/** VXLAN datagrams (UDP 4789) whose inner frame is ARP: UDP 8 + VXLAN 8 + the inner ethertype at 12. */
const VXLAN_ARP = 'udp dst port 4789 and udp[28:2] = 0x0806';
/** VXLAN datagrams carrying a Neighbour Solicitation: inner IPv6 (next header at 16+14+6) with ICMPv6 type 135 (at 16+14+40). */
const VXLAN_NS = 'udp dst port 4789 and udp[28:2] = 0x86dd and udp[36] = 58 and udp[70] = 135';

describe('EVPN ARP suppression', () => {
  let d: Daemon;
  let bMac = '';
  let speaker: Background | undefined;
  let flood = '';

  beforeAll(async () => {
    for (const ns of [HOST_A, HOST_B, vmNs('a'), vmNs('b')]) {
      await addNamespace(ns);
      await quietNamespace(ns);
    }
    await sh(`ip link add ${UA} netns ${HOST_A} type veth peer name ${UB} netns ${HOST_B}`);
    await nsExec(HOST_A, `ip link set lo up && ip link set ${UA} up && ip addr add ${UNDER.a}/24 dev ${UA}`);
    await nsExec(HOST_B, `ip link set lo up && ip link set ${UB} up && ip addr add ${UNDER.b}/24 dev ${UB}`);
    await nsExec(HOST_B, `ethtool -K ${UB} tx off tso off gso off >/dev/null`);
    const inner = ifname('pvb');
    const outer = ifname('phb');
    await sh(`ip link add ${inner} netns ${vmNs('b')} type veth peer name ${outer} netns ${HOST_B}`);
    await nsExec(vmNs('b'), `ip link set ${inner} mtu ${VM_MTU} up && ip addr add ${VM.b}/16 dev ${inner}`);
    bMac = (await nsExec(vmNs('b'), `cat /sys/class/net/${inner}/address`)).trim();
    await nsExec(HOST_B, [
      `ip link add vx100 type vxlan id 100 local ${UNDER.b} dstport 4789 dev ${UB}`,
      'ip link add br100 type bridge', 'ip link set vx100 master br100', `ip link set ${outer} master br100`,
      `ip link set ${outer} mtu ${VM_MTU} up`, 'ip link set vx100 up && ip link set br100 up',
      `bridge fdb append 00:00:00:00:00:00 dev vx100 dst ${UNDER.a}`,
    ].join(' && '));

    d = await startDaemon({
      metrics: { listen: '127.0.0.1:9464' },
      bridges: {
        [BR]: {
          ports: { [TAP]: { type: 'tap', vlan: { mode: 'access', vid: 10 }, guard: { dhcp: false, ipSource: true, bindings: [{ mac: A_MAC, ip: VM.a }] } } },
        },
      },
      vxlan: { local: UNDER.a, interface: UA, bridges: { [BR]: [{ vni: 100, vlan: 10, flood: [UNDER.b] }] } },
      evpn: { asn: ASN, neighbors: [{ address: UNDER.b, remoteAs: ASN }] },
    }, { netns: HOST_A });
    await waitFor(`TAP ${TAP}`, async () => (await nsExecR(HOST_A, `ip link show ${TAP}`)).code === 0);
    await nsExec(HOST_A, `ip link set ${TAP} netns ${vmNs('a')}`);
    await nsExec(vmNs('a'), `ip link set ${TAP} address ${A_MAC} mtu ${VM_MTU} up && ip addr add ${VM.a}/16 dev ${TAP}`);

    // B's VM as a MAC/IP route (and MAC-only, as FRR sends both), next hop B.
    const dir = tempDir('pa');
    const file = join(dir, 'phases.json');
    const rd = `${UNDER.b}:100`;
    flood = join(dir, 'flood');
    writeFileSync(file, JSON.stringify([{ wait: null, routes: [
      { mac: bMac, vni: 100, rt: `${ASN}:100`, rd, seq: null },
      { mac: bMac, ip: VM.b, vni: 100, rt: `${ASN}:100`, rd, seq: null },
      { mac: bMac, ip: VM6.b, vni: 100, rt: `${ASN}:100`, rd, seq: null },
    ] }, {
      // Hostile: 100 more IPs for B's VM's MAC.
      wait: flood,
      routes: Array.from({ length: 100 }, (_, i) => ({ mac: bMac, ip: `${NET}.2.${i + 1}`, vni: 100, rt: `${ASN}:100`, rd, seq: null })),
    }]));
    speaker = new Background(HOST_B, `python3 ${REPO}/test/scripts/bgp-evpn-inject.py ${UNDER.b} ${UNDER.a} ${ASN} ${file}`);
  }, 120_000);

  afterAll(async () => {
    await speaker?.stop();
    await d?.stop();
    await cleanup();
  });

  const vni = async (): Promise<any> => (await d.ok(['evpn', 'show'], { json: true })).json.vnis[0];

  it('answers A\'s VM\'s ARP for B\'s VM from the MAC/IP route: nothing crosses the underlay, the VMs ping, the counters move', async () => {
    await waitFor('B\'s VM in the neighbour table', async () => {
      const v = await vni();
      return v?.remoteMacs === 1 && v.arpSuppress?.entries >= 1;
    }, { timeoutMs: 45_000, intervalMs: 250 });
    const before = await vni();
    expect(before.arpSuppress).toMatchObject({ on: true, suppressed: 0 });
    expect((await d.ok(['evpn', 'show'])).stdout).toMatch(/arp suppress[\s\S]*\n100\s+on\s+\d+\s+0\s/);
    await flushNeigh(vmNs('a'));
    const seen = await captureDuring(HOST_A, UA, VXLAN_ARP, async () => {
      const r = await nsExecR(vmNs('a'), `busybox arping -c 1 -w 2 -I ${TAP} ${VM.b}`);
      expect(r.stdout).toMatch(new RegExp(`reply from ${VM.b.replace(/\./g, '\\.')} \\[${bMac}\\]`, 'i'));
    });
    expect(seen.filter((l) => l.includes(`tell ${VM.a}`)), seen.join('\n')).toEqual([]);
    const after = await vni();
    expect(after.arpSuppress.suppressed).toBe(1);
    expect(after.arpSuppress.unknown).toBe(0);
    // The kernel's own resolution too (cold cache), then data crosses.
    await flushNeigh(vmNs('a'));
    const seen2 = await captureDuring(HOST_A, UA, VXLAN_ARP, async () => {
      expect(await pingCount(vmNs('a'), VM.b, 3), 'a -> b').toBeGreaterThanOrEqual(2);
    });
    expect(seen2.filter((l) => /Request/.test(l) && l.includes(`tell ${VM.a}`)), seen2.join('\n')).toEqual([]);
    expect(await neigh(vmNs('a'), VM.b)).toContain(bMac);
    const metrics = await nsExec(HOST_A, 'curl -sf http://127.0.0.1:9464/metrics');
    expect(metrics).toMatch(/vswitch_evpn_arp_suppressed_total\{vni="100"\} [2-9]/);
    // B's VM (IPv4 and IPv6) from the routes, and A's VM's own binding (advertised MAC/IP once its MAC is local).
    expect(metrics).toMatch(/vswitch_evpn_arp_entries\{vni="100"\} 3/);
  }, 90_000);

  it('DAD: a probe for B\'s IP is answered (a conflict); A\'s VM probing its own IP is not', async () => {
    const before = (await vni()).arpSuppress;
    // busybox arping -D: exit 1 when a reply (a duplicate) came.
    const conflict = await nsExecR(vmNs('a'), `busybox arping -D -c 1 -w 2 -I ${TAP} ${VM.b}`);
    expect(conflict.code, conflict.stdout).toBe(1);
    const own = await nsExecR(vmNs('a'), `busybox arping -D -c 1 -w 1 -I ${TAP} ${VM.a}`);
    expect(own.code, own.stdout).toBe(0);
    const after = (await vni()).arpSuppress;
    expect(after.suppressed - before.suppressed).toBe(1);
    expect(after.passed - before.passed).toBe(1);
  });

  it('ND: A\'s VM\'s neighbour solicitation for B\'s VM\'s IPv6 address is answered from the MAC/IPv6 route, none crosses', async () => {
    const ns = vmNs('a');
    await nsExec(ns, `sysctl -qw net.ipv6.conf.${TAP}.accept_dad=0 && sysctl -qw net.ipv6.conf.${TAP}.disable_ipv6=0 && ip addr add ${VM6.a}/64 dev ${TAP} nodad`);
    const before = (await vni()).arpSuppress;
    const seen = await captureDuring(HOST_A, UA, VXLAN_NS, async () => {
      const r = await nsExecR(ns, `ndisc6 -1 -r 2 -w 1000 ${VM6.b} ${TAP}`);
      expect(r.stdout, r.stderr).toMatch(new RegExp(`Target link-layer address: ${bMac}`, 'i'));
      // The control: a target no route names is solicited across, as without suppression.
      await nsExecR(ns, `ndisc6 -1 -r 1 -w 300 fd00:e9::99 ${TAP}`);
    });
    expect(seen.filter((l) => l.includes(`who has ${VM6.b}`)), seen.join('\n')).toEqual([]);
    expect(seen.some((l) => l.includes('who has fd00:e9::99')), seen.join('\n')).toBe(true);
    expect((await vni()).arpSuppress.suppressed).toBeGreaterThan(before.suppressed);
  });

  it('with arpSuppress off for the VNI (a reload, gobgpd kept), the request crosses and B\'s VM answers it', async () => {
    const cfg = parse(readFileSync(d.configFile, 'utf8'));
    cfg.evpn.vnis = { 100: { arpSuppress: false } };
    writeFileSync(d.configFile, toYaml(cfg));
    await d.ok(['reload']);
    const show = (await d.ok(['evpn', 'show'], { json: true })).json;
    expect(show.vnis[0].arpSuppress).toMatchObject({ on: false, entries: 3 });
    expect(show.gobgpd.restarts).toBe(0);
    const before = show.vnis[0].arpSuppress.suppressed;
    await flushNeigh(vmNs('a'));
    const seen = await captureDuring(HOST_A, UA, VXLAN_ARP, async () => {
      const r = await nsExecR(vmNs('a'), `busybox arping -c 1 -w 2 -I ${TAP} ${VM.b}`);
      expect(r.stdout).toMatch(new RegExp(`reply from ${VM.b.replace(/\./g, '\\.')} \\[${bMac}\\]`, 'i'));
    });
    expect(seen.some((l) => l.includes(`who-has ${VM.b}`)), seen.join('\n')).toBe(true);
    expect((await vni()).arpSuppress.suppressed).toBe(before);
  });

  it('a flood of MAC/IP routes for one MAC stops at 16 routes per MAC (mac_routes), the table with it', async () => {
    const before = await vni();
    writeFileSync(flood, '');
    await waitFor('flood sent', () => /sent 100\b/.test(speaker!.out), { timeoutMs: 30_000 });
    const show = await waitFor('flood judged', async () => {
      const w = (await d.ok(['evpn', 'show'], { json: true })).json;
      return w.rejected.mac_routes >= 87 ? w : undefined;
    }, { timeoutMs: 30_000, intervalMs: 250 });
    // B's MAC-only and two MAC/IP routes, and 13 of the 100.
    expect(show.rejected.mac_routes).toBe(87);
    expect(show.vnis[0].installed.type2).toBe(16);
    expect(show.vnis[0].arpSuppress.entries).toBe(before.arpSuppress.entries + 13);
    expect(show.vnis[0].remoteMacs).toBe(1);
  });
});
