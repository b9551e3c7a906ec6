/*
 * VXLAN over an IPv6 underlay (issue 15 item 4's "a plus"): host A runs the vswitch
 * daemon with `vxlan.local` an IPv6 address (outer hop limit 33) and a VM on a TAP in
 * VLAN 10 = VNI 100; host B is plain Linux, a bridge with a `vxlan` device (IPv6
 * `local`, head-end replication to A's IPv6 address, UDP checksums on as Linux's
 * default) and a VM on a veth; host C is Open vSwitch's userspace datapath with a
 * `vxlan` port to A's IPv6 address (helpers/ovs.ts) and a VM on a veth; host D is a
 * second vswitch daemon (VNI 100 in its VLAN 11), named on A's flood list for its own
 * test. The underlay is a Linux bridge in a fifth namespace.
 *
 * Shows: the tunnel ports are `vx-<IPv6>`, the VM MTU is the underlay's minus 70;
 * IPv6 remotes at runtime (`vxlan fdb add`, `vxlan add ... flood`), IPv4 ones refused;
 * pings both ways with full-size frames, to Linux and to OVS; what A sends carries a
 * valid UDP checksum (tcpdump verifies it, and Linux, which requires one, takes it)
 * and hop limit 33; vswitch to vswitch over IPv6; a broadcast reaches B and C once
 * each; an inner frame
 * over MTU - 70 is dropped (`tunnel_mtu`), no IPv6 fragment on the underlay; 16 MiB
 * over TCP each way intact (sha256), A's VM's TSO super-frames leaving as UDP GSO
 * datagrams over IPv6 (`txGso`); a datagram with a zero UDP checksum is refused
 * by default and taken once `udp6ZeroCsumRx` is set (reload).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, dropCount, findPort, startDaemon } from './helpers/daemon.js';
import { type Ovs, ovsVtep, startOvs } from './helpers/ovs.js';
import { cleanup, ifname, nsExec, nsExecR, nsname, waitFor } from './helpers/run.js';
import { captureDuring, pingCount, pingUntil } from './helpers/vm.js';
import {
  captureEach, fdbEntries, linuxVtep, macOf, makeHosts, printTransfer, reloadWith, scapy, tapVm, tcpTransfer, underlayLink,
  vethVm as vethVmIn, vxlanShow,
} from './helpers/vxlan.js';

const UNDER = { a: 'fd00:235::1', b: 'fd00:235::2', c: 'fd00:235::3', d: 'fd00:235::4' };
const VM = { a: '10.235.1.11', b: '10.235.1.12', c: '10.235.1.13', d: '10.235.1.14' };
const HOST_A = nsname('6a');
const HOST_B = nsname('6b');
const HOST_C = nsname('6c');
const HOST_D = nsname('6d');
const UNDERLAY = nsname('6u');
const UA = ifname('6ua');
const UB = ifname('6ub');
const UC = ifname('6uc');
const UD = ifname('6ud');
const TAP_D = ifname('6d11');
const TAP = ifname('6a10');
const BR = 'br0';
const SIZE = 16 * 1024 * 1024;
const VM_MTU = 1430;
const PORT = `vx-${UNDER.b}`;
const PORT_C = `vx-${UNDER.c}`;

const vmNs = (n: string): string => nsname(`6vm${n}`);

/** A VM namespace on a veth (offloads off: OVS reads it without a vnet header) whose other end (returned) is in `host`. */
const vethVm = (host: string, n: string, ip: string): Promise<string> =>
  vethVmIn({ host, ns: vmNs(n), inner: ifname(`6v${n}`), outer: ifname(`6h${n}`), cidr: `${ip}/24`, mtu: VM_MTU, offloads: false });

describe('VXLAN over an IPv6 underlay, against a Linux vxlan device', () => {
  let d: Daemon;
  let dd: Daemon;
  let ovs: Ovs;
  const show = (): Promise<any> => vxlanShow(d);

  beforeAll(async () => {
    // The hosts keep IPv6 (the underlay); the VMs and the underlay switch are quiet.
    await makeHosts(UNDERLAY, [HOST_A, HOST_B, HOST_C, HOST_D], false);
    // Real wires carry complete checksums: no checksum-partial frames leave a host.
    await underlayLink(UNDERLAY, HOST_A, UA, { addr: UNDER.a, offloads: false });
    await underlayLink(UNDERLAY, HOST_B, UB, { addr: UNDER.b, offloads: false });
    await underlayLink(UNDERLAY, HOST_C, UC, { offloads: false });
    await underlayLink(UNDERLAY, HOST_D, UD, { addr: UNDER.d, offloads: false });
    const outer = await vethVm(HOST_B, 'b', VM.b);
    // Linux's default learning and UDP checksums.
    await linuxVtep(HOST_B, { dev: UB, local: UNDER.b, vni: 100, flood: [UNDER.a], port: outer });
    const c = await vethVm(HOST_C, 'c', VM.c);
    ovs = await startOvs(HOST_C);
    await ovsVtep(ovs, HOST_C, UC, `${UNDER.c}/64`, 'fd00:235::/64');
    await ovs.vsctl(`add-port brint ${c} -- add-port brint vx100 -- set interface vx100 type=vxlan options:remote_ip=${UNDER.a} options:key=100`);
    d = await startDaemon({
      bridges: { [BR]: { ports: { [TAP]: { type: 'tap', vlan: { mode: 'access', vid: 10 } } } } },
      vxlan: { local: UNDER.a, interface: UA, ttl: 33, bridges: { [BR]: [{ vni: 100, vlan: 10, flood: [UNDER.b, UNDER.c] }] } },
    }, { netns: HOST_A });
    await tapVm(HOST_A, TAP, vmNs('a'), `${VM.a}/24`, VM_MTU);
  }, 120_000);

  afterAll(async () => {
    await d?.stop();
    await dd?.stop();
    await cleanup();
  });

  it('shows an IPv6 VTEP: tunnel port vx-<IPv6>, VM MTU = underlay MTU - 70, the same as Linux gives its vxlan device', async () => {
    const v = await show();
    expect(v).toMatchObject({ enabled: true, family: 6, local: UNDER.a, mtu: 1500, vmMtu: 1430 });
    expect(v.remotes.map((r: any) => [r.port, r.remote])).toEqual([[PORT, UNDER.b], [PORT_C, UNDER.c]]);
    expect(v.vnis[0].flood).toEqual([UNDER.b, UNDER.c]);
    expect((await nsExec(HOST_B, 'cat /sys/class/net/vx100/mtu')).trim()).toBe(String(VM_MTU));
  });

  it('takes IPv6 remotes at runtime (static entry) and refuses IPv4 ones with the reason', async () => {
    await d.ok(['vxlan', 'fdb', 'add', '02:00:00:00:00:66', 'vni', '100', 'dst', UNDER.b]);
    let fdb = await fdbEntries(d, BR);
    expect(fdb.find((e) => e.mac === '02:00:00:00:00:66')).toMatchObject({ port: PORT, vlan: 10, static: true });
    expect((await d.cli(['vxlan', 'fdb', 'add', '02:00:00:00:00:67', 'vni', '100', 'dst', '10.0.0.1'])).stderr).toMatch(/bad remote VTEP address '10\.0\.0\.1' \(the underlay is IPv6\)/);
    expect((await d.cli(['vxlan', 'add', BR, 'vni', '100', 'vlan', '10', 'flood', '10.0.0.1'])).stderr).toMatch(/10\.0\.0\.1 is not an IPv6 address/);
    await d.ok(['vxlan', 'fdb', 'del', '02:00:00:00:00:66', 'vni', '100']);
    expect((await show()).remotes.map((r: any) => r.port)).toEqual([PORT, PORT_C]);
    fdb = await fdbEntries(d, BR);
    expect(fdb.some((e) => e.mac === '02:00:00:00:00:66')).toBe(false);
  });

  it('VMs ping each other both ways, full-size frames too; A\'s UDP checksums are valid', async () => {
    const lines = await captureDuring(HOST_B, UB, '-vv ip6 and udp port 4789', async () => {
      expect(await pingUntil(vmNs('a'), VM.b), 'a -> b').toBe(true);
      expect(await pingCount(vmNs('b'), VM.a, 5), 'b -> a').toBeGreaterThanOrEqual(4);
      // 1430-byte IP packets: the VM MTU on a 1500 IPv6 underlay, both ways.
      expect((await nsExecR(vmNs('a'), `busybox ping -c 2 -s 1402 -W 2 ${VM.b}`)).code).toBe(0);
      expect((await nsExecR(vmNs('b'), `busybox ping -c 2 -s 1402 -W 2 ${VM.a}`)).code).toBe(0);
    });
    // tcpdump -vv: the IPv6 header (hop limit) then the UDP ports and checksum verdict, on one line or two.
    const fromA = lines.flatMap((l, i) => (l.includes(`${UNDER.a}.`) && l.includes(`> ${UNDER.b}.4789`) ? [`${i > 0 ? lines[i - 1] : ''} | ${l}`] : []));
    expect(fromA.length, lines.join('\n')).toBeGreaterThan(4);
    expect(fromA.filter((l) => !/udp sum ok/.test(l)), lines.join('\n')).toEqual([]);
    expect(fromA.filter((l) => !/hlim 33,/.test(l)), lines.join('\n')).toEqual([]);
    expect((await fdbEntries(d, BR)).some((e) => e.port === PORT && e.vlan === 10)).toBe(true);
  });

  it('VMs behind vswitch and behind OVS ping each other both ways over IPv6, full-size frames too', async () => {
    expect(await pingUntil(vmNs('a'), VM.c), 'a -> c').toBe(true);
    expect(await pingCount(vmNs('c'), VM.a, 5), 'c -> a').toBeGreaterThanOrEqual(4);
    expect((await nsExecR(vmNs('a'), `busybox ping -c 2 -s 1402 -W 2 ${VM.c}`)).code).toBe(0);
    expect((await nsExecR(vmNs('c'), `busybox ping -c 2 -s 1402 -W 2 ${VM.a}`)).code).toBe(0);
    expect(await ovs.appctl('coverage/read-counter datapath_drop_tunnel_pop_error')).toMatch(/^0\s*$/);
  });

  it('a second vswitch over IPv6 (VNI 100 in its VLAN 11) and A reach each other once each names the other', async () => {
    dd = await startDaemon({
      bridges: { [BR]: { ports: { [TAP_D]: { type: 'tap', vlan: { mode: 'access', vid: 11 } } } } },
      vxlan: { local: UNDER.d, interface: UD, bridges: { [BR]: [{ vni: 100, vlan: 11, flood: [UNDER.a] }] } },
    }, { netns: HOST_D });
    const ns = vmNs('d');
    await tapVm(HOST_D, TAP_D, ns, `${VM.d}/24`, VM_MTU);
    // A remote added at runtime gets its own port (and loses it when dropped again, below).
    await d.ok(['vxlan', 'add', BR, 'vni', '100', 'vlan', '10', 'flood', `${UNDER.b},${UNDER.c},${UNDER.d}`]);
    expect((await show()).remotes.map((r: any) => r.port).sort()).toEqual([PORT, PORT_C, `vx-${UNDER.d}`]);
    try {
      expect(await pingUntil(ns, VM.a), 'd -> a').toBe(true);
      expect(await pingCount(vmNs('a'), VM.d, 5), 'a -> d').toBeGreaterThanOrEqual(4);
      expect((await nsExecR(ns, `busybox ping -c 2 -s 1402 -W 2 ${VM.a}`)).code).toBe(0);
      expect((await fdbEntries(dd, BR)).some((e) => e.port === `vx-${UNDER.a}` && e.vlan === 11)).toBe(true);
    } finally {
      await d.ok(['vxlan', 'add', BR, 'vni', '100', 'vlan', '10', 'flood', `${UNDER.b},${UNDER.c}`]);
    }
    expect((await show()).remotes.map((r: any) => r.port)).toEqual([PORT, PORT_C]);
  }, 60_000);

  it('floods a broadcast to B and C once each over IPv6', async () => {
    const [lb, lc] = await captureEach([[HOST_B, UB], [HOST_C, UC]], 'ip6 and udp port 4789', async () => {
      await nsExecR(vmNs('a'), `busybox arping -c 1 -w 2 -I ${TAP} ${VM.b}`);
    });
    const req = (ls: string[], dst: string): number => ls.filter((l, i) => l.includes(`> ${dst}.4789`) && (ls[i + 1] ?? '').includes(`Request who-has ${VM.b}`)).length;
    expect([req(lb, UNDER.b), req(lc, UNDER.c)], [...lb, ...lc].join('\n')).toEqual([1, 1]);
  });

  it('drops an inner frame over MTU - 70 on the tunnel port, never fragmenting it', async () => {
    const before = dropCount(findPort((await d.ok(['stats', BR], { json: true })).json, PORT), 'tunnel_mtu');
    await nsExec(vmNs('a'), `ip link set ${TAP} mtu 1500`);
    try {
      const frags = await captureDuring(HOST_B, UB, 'ip6 and ip6[6] == 44', async () => {
        expect((await nsExecR(vmNs('a'), `busybox ping -c 2 -s 1432 -W 1 ${VM.b}`)).code).not.toBe(0);
      });
      expect(frags, 'no IPv6 fragments on the underlay').toEqual([]);
      const after = dropCount(findPort((await d.ok(['stats', BR], { json: true })).json, PORT), 'tunnel_mtu');
      expect(after - before).toBeGreaterThanOrEqual(2);
    } finally {
      await nsExec(vmNs('a'), `ip link set ${TAP} mtu ${VM_MTU}`);
    }
  });

  for (const [dir, from, to, toIp] of [['vswitch -> Linux', 'a', 'b', VM.b], ['Linux -> vswitch', 'b', 'a', VM.a]] as const) {
    it(`moves ${SIZE >> 20} MiB over TCP ${dir} intact (sha256 both ends)`, async () => {
      const before = (await show()).txGso;
      const t = await tcpTransfer({ from: vmNs(from), to: vmNs(to), toIp, size: SIZE, timeoutMs: 90_000, tag: 'vx6' });
      expect(t.code, t.stderr).toBe(0);
      await printTransfer(`vxlan6 ${dir}`, SIZE, t.secs);
      expect(t.received).toBe(t.sent);
      if (from === 'a') {
        // The VM used TSO: its super-frames were segmented in the addon and their segments left as
        // UDP GSO datagrams over IPv6, cut by the kernel (checksum offload is off on A's underlay:
        // in software, complete checksums), which the Linux VTEP, requiring checksums, took (the sha256).
        const v = await show();
        expect(v.vnis.find((x: any) => x.vni === 100).txSegmented).toBeGreaterThan(20);
        const gso = v.txGso;
        expect(gso.segments - before.segments, '16 MiB is ~12,000 segments of 1378 bytes').toBeGreaterThan(5000);
        expect(gso.sends - before.sends).toBeLessThan((gso.segments - before.segments) / 4);
        expect(gso.refused).toBe(0);
      }
    }, 150_000);
  }

  it('refuses a zero UDP checksum by default and takes it once udp6ZeroCsumRx is set (reload)', async () => {
    const uaMac = await macOf(HOST_A, UA);
    const send = (mac: string): Promise<void> => scapy(HOST_B, [
      `p = Ether(dst="${uaMac}")/IPv6(src="${UNDER.b}", dst="${UNDER.a}")/UDP(sport=40000, dport=4789, chksum=0)/VXLAN(flags=0x08, vni=100)/Ether(src="${mac}", dst="ff:ff:ff:ff:ff:ff")/ARP()`,
      `sendp([p, p], iface="${UB}")`,
    ], 60_000);
    const learned = async (mac: string): Promise<boolean> => (await fdbEntries(d, BR)).some((e) => e.mac === mac && e.port === PORT);
    await send('02:00:00:6c:00:01');
    // The kernel drops it before the VTEP (Udp6InCsumErrors): nothing learned; a checksummed frame afterwards is.
    expect(await pingCount(vmNs('b'), VM.a, 2)).toBeGreaterThanOrEqual(1);
    expect(await learned('02:00:00:6c:00:01')).toBe(false);
    await reloadWith(d, (cfg) => { cfg.vxlan.udp6ZeroCsumRx = true; });
    await send('02:00:00:6c:00:02');
    await waitFor('zero-checksum frame learned', () => learned('02:00:00:6c:00:02'), { timeoutMs: 5000 });
    expect(await pingUntil(vmNs('a'), VM.b)).toBe(true);
  }, 90_000);
});
