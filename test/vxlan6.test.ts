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
 * over TCP each way intact (sha256); a datagram with a zero UDP checksum is refused
 * by default and taken once `udp6ZeroCsumRx` is set (reload).
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, dropCount, findPort, startDaemon, toYaml } from './helpers/daemon.js';
import { type Ovs, ovsVtep, startOvs } from './helpers/ovs.js';
import { addNamespace, cleanup, ifname, nsExec, nsExecR, nsname, sh, tempDir, trackLink, waitFor } from './helpers/run.js';
import { Background, captureDuring, pingCount, pingUntil, quietNamespace, tcpdump } from './helpers/vm.js';
import { PYTHON } from './helpers/scapy.js';

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

async function underlayLink(ns: string, name: string, addr?: string): Promise<void> {
  const peer = `${name}p`;
  await sh(`ip link add ${name} netns ${ns} type veth peer name ${peer} netns ${UNDERLAY}`);
  await nsExec(UNDERLAY, `ip link set ${peer} master ubr up`);
  // Real wires carry complete checksums: no checksum-partial frames leave a host.
  await nsExec(ns, `ethtool -K ${name} tx off tso off gso off >/dev/null && ip link set ${name} up`);
  if (addr !== undefined) await nsExec(ns, `ip -6 addr add ${addr}/64 dev ${name} nodad`);
}

/** A VM namespace on a veth (offloads off: OVS reads it without a vnet header) whose other end (returned) is in `host`. */
async function vethVm(host: string, n: string, ip: string): Promise<string> {
  const ns = vmNs(n);
  await addNamespace(ns);
  await quietNamespace(ns);
  const inner = ifname(`6v${n}`);
  const outer = ifname(`6h${n}`);
  await sh(`ip link add ${inner} netns ${ns} type veth peer name ${outer} netns ${host}`);
  await nsExec(ns, `ethtool -K ${inner} tx off tso off gso off >/dev/null && ip link set ${inner} mtu ${VM_MTU} up && ip addr add ${ip}/24 dev ${inner}`);
  await nsExec(host, `ethtool -K ${outer} tx off tso off gso off >/dev/null && ip link set ${outer} mtu ${VM_MTU} up`);
  return outer;
}

describe('VXLAN over an IPv6 underlay, against a Linux vxlan device', () => {
  let d: Daemon;
  let dd: Daemon;
  let ovs: Ovs;
  const show = async (): Promise<any> => (await d.ok(['vxlan', 'show'], { json: true })).json;

  beforeAll(async () => {
    // The hosts keep IPv6 (the underlay); the VMs and the underlay switch are quiet.
    for (const ns of [HOST_A, HOST_B, HOST_C, HOST_D, UNDERLAY]) await addNamespace(ns);
    await quietNamespace(UNDERLAY);
    await nsExec(UNDERLAY, 'ip link add ubr type bridge && ip link set ubr up');
    await underlayLink(HOST_A, UA, UNDER.a);
    await underlayLink(HOST_B, UB, UNDER.b);
    await underlayLink(HOST_C, UC);
    await underlayLink(HOST_D, UD, UNDER.d);
    for (const l of [UA, UB, UC, UD]) trackLink(l);
    const outer = await vethVm(HOST_B, 'b', VM.b);
    await nsExec(HOST_B, [
      `ip link add vx100 type vxlan id 100 local ${UNDER.b} dstport 4789 dev ${UB}`,
      'ip link add br100 type bridge',
      `ip link set vx100 master br100 && ip link set ${outer} mtu ${VM_MTU} master br100 up`,
      'ip link set vx100 up && ip link set br100 up',
      `bridge fdb append 00:00:00:00:00:00 dev vx100 dst ${UNDER.a}`,
    ].join(' && '));
    const c = await vethVm(HOST_C, 'c', VM.c);
    ovs = await startOvs(HOST_C);
    await ovsVtep(ovs, HOST_C, UC, `${UNDER.c}/64`, 'fd00:235::/64');
    await ovs.vsctl(`add-port brint ${c} -- add-port brint vx100 -- set interface vx100 type=vxlan options:remote_ip=${UNDER.a} options:key=100`);
    d = await startDaemon({
      bridges: { [BR]: { ports: { [TAP]: { type: 'tap', vlan: { mode: 'access', vid: 10 } } } } },
      vxlan: { local: UNDER.a, interface: UA, ttl: 33, bridges: { [BR]: [{ vni: 100, vlan: 10, flood: [UNDER.b, UNDER.c] }] } },
    }, { netns: HOST_A });
    const a = vmNs('a');
    await addNamespace(a);
    await quietNamespace(a);
    await waitFor(`TAP ${TAP}`, async () => (await nsExecR(HOST_A, `ip link show ${TAP}`)).code === 0);
    await nsExec(HOST_A, `ip link set ${TAP} netns ${a}`);
    await nsExec(a, `ip link set ${TAP} mtu ${VM_MTU} up && ip addr add ${VM.a}/24 dev ${TAP}`);
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
    let fdb = (await d.ok(['fdb', 'show', 'br', BR], { json: true })).json as any[];
    expect(fdb.find((e) => e.mac === '02:00:00:00:00:66')).toMatchObject({ port: PORT, vlan: 10, static: true });
    expect((await d.cli(['vxlan', 'fdb', 'add', '02:00:00:00:00:67', 'vni', '100', 'dst', '10.0.0.1'])).stderr).toMatch(/bad remote VTEP address '10\.0\.0\.1' \(the underlay is IPv6\)/);
    expect((await d.cli(['vxlan', 'add', BR, 'vni', '100', 'vlan', '10', 'flood', '10.0.0.1'])).stderr).toMatch(/10\.0\.0\.1 is not an IPv6 address/);
    await d.ok(['vxlan', 'fdb', 'del', '02:00:00:00:00:66', 'vni', '100']);
    expect((await show()).remotes.map((r: any) => r.port)).toEqual([PORT, PORT_C]);
    fdb = (await d.ok(['fdb', 'show', 'br', BR], { json: true })).json as any[];
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
    const fdb = (await d.ok(['fdb', 'show', 'br', BR], { json: true })).json as any[];
    expect(fdb.some((e) => e.port === PORT && e.vlan === 10)).toBe(true);
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
    await addNamespace(ns);
    await quietNamespace(ns);
    await waitFor(`TAP ${TAP_D}`, async () => (await nsExecR(HOST_D, `ip link show ${TAP_D}`)).code === 0);
    await nsExec(HOST_D, `ip link set ${TAP_D} netns ${ns}`);
    await nsExec(ns, `ip link set ${TAP_D} mtu ${VM_MTU} up && ip addr add ${VM.d}/24 dev ${TAP_D}`);
    // A remote added at runtime gets its own port (and loses it when dropped again, below).
    await d.ok(['vxlan', 'add', BR, 'vni', '100', 'vlan', '10', 'flood', `${UNDER.b},${UNDER.c},${UNDER.d}`]);
    expect((await show()).remotes.map((r: any) => r.port).sort()).toEqual([PORT, PORT_C, `vx-${UNDER.d}`]);
    try {
      expect(await pingUntil(ns, VM.a), 'd -> a').toBe(true);
      expect(await pingCount(vmNs('a'), VM.d, 5), 'a -> d').toBeGreaterThanOrEqual(4);
      expect((await nsExecR(ns, `busybox ping -c 2 -s 1402 -W 2 ${VM.a}`)).code).toBe(0);
      const fdb = (await dd.ok(['fdb', 'show', 'br', BR], { json: true })).json as any[];
      expect(fdb.some((e) => e.port === `vx-${UNDER.a}` && e.vlan === 11)).toBe(true);
    } finally {
      await d.ok(['vxlan', 'add', BR, 'vni', '100', 'vlan', '10', 'flood', `${UNDER.b},${UNDER.c}`]);
    }
    expect((await show()).remotes.map((r: any) => r.port)).toEqual([PORT, PORT_C]);
  }, 60_000);

  it('floods a broadcast to B and C once each over IPv6', async () => {
    const capB = await tcpdump(HOST_B, UB, 'ip6 and udp port 4789');
    const capC = await tcpdump(HOST_C, UC, 'ip6 and udp port 4789');
    await nsExecR(vmNs('a'), `busybox arping -c 1 -w 2 -I ${TAP} ${VM.b}`);
    const lb = await capB.stop(500);
    const lc = await capC.stop(0);
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
      const dir_ = tempDir('vx6');
      const src = join(dir_, 'in.bin');
      const dst = join(dir_, 'out.bin');
      const buf = randomBytes(SIZE);
      writeFileSync(src, buf);
      const want = createHash('sha256').update(buf).digest('hex');
      const server = new Background(vmNs(to), `socat -u TCP-LISTEN:5001,reuseaddr OPEN:${dst},creat,trunc`);
      try {
        await waitFor('socat listening', async () => (await nsExecR(vmNs(to), 'ss -ltn | grep -q :5001')).code === 0);
        const t0 = Date.now();
        const r = await nsExecR(vmNs(from), `socat -u OPEN:${src} TCP:${toIp}:5001,connect-timeout=5`, { timeoutMs: 90_000 });
        expect(r.code, r.stderr).toBe(0);
        await waitFor('socat server done', () => server.proc.exitCode !== null, { timeoutMs: 30_000 });
        const secs = (Date.now() - t0) / 1000;
        const load = (await sh('cut -d" " -f1-3 /proc/loadavg')).trim();
        process.stdout.write(`vxlan6 ${dir}: ${SIZE >> 20} MiB in ${secs.toFixed(1)} s = ${((SIZE * 8) / secs / 1e6).toFixed(0)} Mbit/s (load ${load})\n`);
      } finally {
        await server.stop();
      }
      expect((await sh(`sha256sum ${dst}`)).split(' ')[0]).toBe(want);
    }, 150_000);
  }

  it('refuses a zero UDP checksum by default and takes it once udp6ZeroCsumRx is set (reload)', async () => {
    const uaMac = (await nsExec(HOST_A, `cat /sys/class/net/${UA}/address`)).trim();
    const send = async (mac: string): Promise<void> => {
      const script = [
        'from scapy.all import *',
        'from scapy.layers.vxlan import VXLAN',
        'conf.verb = 0',
        `p = Ether(dst="${uaMac}")/IPv6(src="${UNDER.b}", dst="${UNDER.a}")/UDP(sport=40000, dport=4789, chksum=0)/VXLAN(flags=0x08, vni=100)/Ether(src="${mac}", dst="ff:ff:ff:ff:ff:ff")/ARP()`,
        `sendp([p, p], iface="${UB}")`,
      ].join('\n');
      await nsExec(HOST_B, `${PYTHON} -c '${script.replace(/'/g, `'\\''`)}'`, { timeoutMs: 60_000 });
    };
    const learned = async (mac: string): Promise<boolean> => ((await d.ok(['fdb', 'show', 'br', BR], { json: true })).json as any[])
      .some((e) => e.mac === mac && e.port === PORT);
    await send('02:00:00:6c:00:01');
    // The kernel drops it before the VTEP (Udp6InCsumErrors): nothing learned; a checksummed frame afterwards is.
    expect(await pingCount(vmNs('b'), VM.a, 2)).toBeGreaterThanOrEqual(1);
    expect(await learned('02:00:00:6c:00:01')).toBe(false);
    const cfg = parse(readFileSync(d.configFile, 'utf8'));
    cfg.vxlan.udp6ZeroCsumRx = true;
    writeFileSync(d.configFile, toYaml(cfg));
    await d.ok(['reload']);
    await send('02:00:00:6c:00:02');
    await waitFor('zero-checksum frame learned', () => learned('02:00:00:6c:00:02'), { timeoutMs: 5000 });
    expect(await pingUntil(vmNs('a'), VM.b)).toBe(true);
  }, 90_000);
});
