/*
 * VXLAN interop (issue 15): four "hosts" as namespaces on one underlay segment (a
 * Linux bridge in a fifth namespace). Host A runs the vswitch daemon (in A's
 * namespace) with VMs on TAPs in VLAN 10 (VNI 100) and VLAN 20 (VNI 200). Hosts B
 * and C are plain Linux: a bridge per VNI with a `vxlan` device (B with `learning`,
 * C `nolearning`; head-end replication by `bridge fdb append 00:00:00:00:00:00 dst`)
 * and a VM on a veth. B
 * carries VNI 100 and 200, C only VNI 100. Host D is a second vswitch daemon with a
 * VM in its VLAN 11 mapped to VNI 100 (the triangle: vswitch to vswitch). All VMs
 * share one subnet, so only the VNIs keep them apart.
 *
 * Shows: pings both ways; 100 MB TCP each way intact (sha256); VNI isolation (the
 * underlay carries only VNI 200 for VLAN 20's traffic, and nothing of VLAN 20
 * reaches VNI 100's VMs); a broadcast reaches every VTEP on the VNI's flood list;
 * after learning, unicast goes only to the VTEP behind which the MAC is; truncated,
 * bad-flag, unknown-VNI and unknown-sender datagrams (scapy) are counted and the
 * daemon goes on; a flood of random VNIs and inner MACs leaves the MAC table within
 * its limit. The daemon only ever sends to addresses of these namespaces.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, dropCount, findPort, startDaemon } from './helpers/daemon.js';
import { cleanup, MAIN_JS, ifname, nsExec, nsExecR, nsname, sh, spawnTracked, tempDir, waitFor } from './helpers/run.js';
import { captureDuring, pingCount, pingUntil } from './helpers/vm.js';
import {
  captureEach, fdbEntries, linuxVtep, macOf, makeHosts, printTransfer, reloadWith, scapy, tapVm as tapVmIn, tcpTransfer,
  underlayLink, vethVm as vethVmIn, vxlanLines, vxlanShow,
} from './helpers/vxlan.js';

const NET = '10.231';
const UNDER = { a: `${NET}.0.1`, b: `${NET}.0.2`, c: `${NET}.0.3`, d: `${NET}.0.4` };
const VM = { a10: `${NET}.1.11`, b10: `${NET}.1.12`, c10: `${NET}.1.13`, d10: `${NET}.1.14`, a20: `${NET}.1.21`, b20: `${NET}.1.22` };
const HOST_A = nsname('hosta');
const HOST_B = nsname('hostb');
const HOST_C = nsname('hostc');
const HOST_D = nsname('hostd');
const UNDERLAY = nsname('under');
const UA = ifname('ua');
const UB = ifname('ub');
const UC = ifname('uc');
const UD = ifname('ud');
const TAPD = ifname('d11');
const TAP10 = ifname('a10');
const TAP20 = ifname('a20');
const BR = 'br0';
const SIZE = 100 * 1024 * 1024;
const VM_MTU = 1450;

const vmNs = (n: string): string => nsname(`vm${n}`);

/** A VM namespace on a veth whose other end is in `host` (returned, for a bridge there). */
const vethVm = (host: string, n: string, ip: string): Promise<string> =>
  vethVmIn({ host, ns: vmNs(n), inner: ifname(`v${n}`), outer: ifname(`h${n}`), cidr: `${ip}/16`, mtu: VM_MTU });

const tapVm = (tap: string, n: string, ip: string, host = HOST_A): Promise<void> => tapVmIn(host, tap, vmNs(n), `${ip}/16`, VM_MTU);

describe('VXLAN against Linux vxlan devices', () => {
  let d: Daemon;
  let dd: Daemon;
  let uaMac: string;

  beforeAll(async () => {
    await makeHosts(UNDERLAY, [HOST_A, HOST_B, HOST_C, HOST_D]);
    // A veth would hand the Linux VTEPs' packets over with their checksums still to
    // be filled (CHECKSUM_PARTIAL): a real wire carries complete ones, so the Linux
    // hosts complete them before sending, as a NIC would. A and D (vswitch) keep
    // theirs: the TSO/GSO tests below go through them.
    await underlayLink(UNDERLAY, HOST_A, UA, { addr: UNDER.a });
    await underlayLink(UNDERLAY, HOST_B, UB, { addr: UNDER.b, offloads: false });
    await underlayLink(UNDERLAY, HOST_C, UC, { addr: UNDER.c, offloads: false });
    await underlayLink(UNDERLAY, HOST_D, UD, { addr: UNDER.d });
    uaMac = await macOf(HOST_A, UA);

    const b10 = await vethVm(HOST_B, 'b10', VM.b10);
    const b20 = await vethVm(HOST_B, 'b20', VM.b20);
    const c10 = await vethVm(HOST_C, 'c10', VM.c10);
    await linuxVtep(HOST_B, { dev: UB, local: UNDER.b, vni: 100, flood: [UNDER.a, UNDER.c, UNDER.d], port: b10 });
    await linuxVtep(HOST_B, { dev: UB, local: UNDER.b, vni: 200, flood: [UNDER.a], port: b20 });
    // C does not learn remote MACs (nolearning): it floods its unicast to A and B, which must cope.
    await linuxVtep(HOST_C, { dev: UC, local: UNDER.c, vni: 100, flood: [UNDER.a, UNDER.b, UNDER.d], port: c10, learning: false });

    d = await startDaemon({
      // In host A's namespace: nobody else listens there.
      metrics: { listen: '127.0.0.1:9464' },
      bridges: {
        [BR]: {
          maxMacs: 512,
          ports: {
            [TAP10]: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
            [TAP20]: { type: 'tap', vlan: { mode: 'access', vid: 20 } },
          },
        },
      },
      vxlan: {
        local: UNDER.a,
        interface: UA,
        bridges: {
          [BR]: [
            { vni: 100, vlan: 10, flood: [UNDER.b, UNDER.c, UNDER.d] },
            { vni: 200, vlan: 20, flood: [UNDER.b] },
          ],
        },
      },
    }, { netns: HOST_A });
    await tapVm(TAP10, 'a10', VM.a10);
    await tapVm(TAP20, 'a20', VM.a20);
    // Host D: a second vswitch, VNI 100 in its VLAN 11 (hosts map a VNI to VLANs of their own).
    dd = await startDaemon({
      bridges: { [BR]: { ports: { [TAPD]: { type: 'tap', vlan: { mode: 'access', vid: 11 } } } } },
      vxlan: { local: UNDER.d, interface: UD, bridges: { [BR]: [{ vni: 100, vlan: 11, flood: [UNDER.a, UNDER.b, UNDER.c] }] } },
    }, { netns: HOST_D });
    await tapVm(TAPD, 'd10', VM.d10, HOST_D);
  }, 120_000);

  afterAll(async () => {
    await d?.stop();
    await dd?.stop();
    await cleanup();
  });

  it('shows the VTEP: underlay, VM MTU, VNIs and one tunnel port per remote VTEP', async () => {
    const v = await vxlanShow(d);
    expect(v).toMatchObject({ enabled: true, local: UNDER.a, port: 4789, mtu: 1500, vmMtu: 1450, readQuantum: 256 * 1024, offload: 'auto' });
    expect(v.rxCoalesced).toMatchObject({ errors: 0 });
    expect(v.rxGro).toMatchObject({ on: true, dropped: 0 });
    expect(v.vnis.map((s: any) => [s.vni, s.vlan, s.flood])).toEqual([[100, 10, [UNDER.b, UNDER.c, UNDER.d]], [200, 20, [UNDER.b]]]);
    expect(v.remotes.map((r: any) => r.port).sort()).toEqual([`vx-${UNDER.b}`, `vx-${UNDER.c}`, `vx-${UNDER.d}`]);
    const text = (await d.ok(['vxlan', 'show'])).stdout;
    expect(text).toMatch(/underlay MTU 1500 \(VM MTU 1450\) ttl 64 tos 0x00 ecn rfc6040 read-quantum 256kb/);
    expect(text).toMatch(/offload auto: \d+ segments coalesced into \d+ frames toward TAPs, 0 refused/);
    expect(text).toMatch(/; UDP GRO on: \d+ packets received in \d+ bursts, 0 dropped/);
  });

  it('VMs behind vswitch and behind Linux VTEPs ping each other, both ways, in each VNI', async () => {
    expect(await pingUntil(vmNs('a10'), VM.b10), 'a10 -> b10 (VNI 100)').toBe(true);
    expect(await pingCount(vmNs('b10'), VM.a10, 5), 'b10 -> a10').toBeGreaterThanOrEqual(4);
    expect(await pingUntil(vmNs('a10'), VM.c10), 'a10 -> c10 (VNI 100)').toBe(true);
    expect(await pingCount(vmNs('c10'), VM.a10, 5), 'c10 -> a10').toBeGreaterThanOrEqual(4);
    expect(await pingUntil(vmNs('a20'), VM.b20), 'a20 -> b20 (VNI 200)').toBe(true);
    expect(await pingCount(vmNs('b20'), VM.a20, 5), 'b20 -> a20').toBeGreaterThanOrEqual(4);
    // A second vswitch (D, VNI 100 in its VLAN 11) closes the triangle.
    expect(await pingUntil(vmNs('d10'), VM.a10), 'd10 -> a10 (vswitch to vswitch)').toBe(true);
    expect(await pingCount(vmNs('a10'), VM.d10, 5), 'a10 -> d10').toBeGreaterThanOrEqual(4);
    expect(await pingCount(vmNs('d10'), VM.b10, 5), 'd10 -> b10 (vswitch to Linux)').toBeGreaterThanOrEqual(4);
    expect(await pingCount(vmNs('c10'), VM.d10, 5), 'c10 -> d10 (Linux nolearning to vswitch)').toBeGreaterThanOrEqual(4);
    // Full-size frames: 1450-byte IP packets fit the 1500 underlay (DF, never fragmented).
    expect((await nsExecR(vmNs('a10'), `busybox ping -c 2 -s 1422 -W 2 ${VM.b10}`)).code).toBe(0);
  });

  it('keeps VNIs apart: VLAN 20 traffic crosses only as VNI 200 and reaches no VNI 100 VM', async () => {
    await nsExec(vmNs('a20'), 'ip neigh flush all');
    const lines = await captureDuring(HOST_B, UB, 'udp port 4789', async () => {
      expect(await pingCount(vmNs('a20'), VM.b20, 3), 'a20 -> b20').toBeGreaterThanOrEqual(2);
      // Same subnet, other VNI: unreachable.
      expect(await pingCount(vmNs('a20'), VM.b10, 2, 0.2)).toBe(0);
      expect(await pingCount(vmNs('a20'), VM.c10, 2, 0.2)).toBe(0);
    });
    const vx = vxlanLines(lines);
    // Everything VLAN 20's VM sent or was sent crossed as VNI 200, and only that.
    const vm20 = vx.filter((l) => l.inner.includes(VM.a20) || l.inner.includes(VM.b20));
    expect(vm20.filter((l) => /ICMP echo request/.test(l.inner)).length, lines.join('\n')).toBeGreaterThanOrEqual(2);
    expect(vm20.filter((l) => l.vni !== 200).map((l) => l.line)).toEqual([]);
  });

  it('floods a broadcast to every VTEP on the VNI\'s flood list, and unicast after learning to one', async () => {
    await nsExec(vmNs('a10'), 'ip neigh flush all');
    // An ARP broadcast from a10: B and C each get one copy (head-end replication).
    const [lines, linesC] = await captureEach([[HOST_B, UB], [HOST_C, UC]], 'udp port 4789', async () => {
      await nsExecR(vmNs('a10'), `busybox arping -c 1 -w 2 -I ${TAP10} ${VM.b10}`);
    });
    const toB = vxlanLines(lines).filter((l) => l.src === UNDER.a && l.dst === UNDER.b && l.vni === 100);
    const toC = vxlanLines(linesC).filter((l) => l.src === UNDER.a && l.dst === UNDER.c && l.vni === 100);
    expect(toB.length, lines.join('\n')).toBeGreaterThan(0);
    expect(toC.length).toBeGreaterThan(0);
    // One copy of the arping request each (head-end replication, no duplicates).
    const req = (ls: typeof toB): number => ls.filter((l) => l.inner.includes(`Request who-has ${VM.b10}`)).length;
    expect([req(toB), req(toC)], [...lines, ...linesC].join('\n')).toEqual([1, 1]);
    // b10's MAC is learned behind B: unicast to it goes to B only.
    expect((await fdbEntries(d, BR)).some((e) => e.port === `vx-${UNDER.b}`)).toBe(true);
    const onC = await captureDuring(HOST_C, UC, `udp port 4789 and src host ${UNDER.a}`, async () => {
      expect(await pingCount(vmNs('a10'), VM.b10, 10, 0.05)).toBeGreaterThanOrEqual(9);
    });
    // C may see a10's ARP broadcasts (flooded by design), never its pings to b10.
    expect(vxlanLines(onC).filter((l) => !/ARP/.test(l.inner)).map((l) => l.line)).toEqual([]);
  });

  it('drops a frame over the underlay MTU on its tunnel port (tunnel_mtu), never fragmenting it', async () => {
    const vx = async (): Promise<number> => dropCount(findPort((await d.ok(['stats', BR], { json: true })).json, `vx-${UNDER.b}`), 'tunnel_mtu');
    const before = await vx();
    // A VM left at MTU 1500: its full-size frames (1514 bytes) cannot fit a 1500-byte underlay packet.
    await nsExec(vmNs('a10'), `ip link set ${TAP10} mtu 1500`);
    try {
      const onB = await captureDuring(HOST_B, UB, `ip[6:2] & 0x1fff != 0 or ip[6] & 0x20 != 0`, async () => {
        expect((await nsExecR(vmNs('a10'), `busybox ping -c 2 -s 1472 -W 1 ${VM.b10}`)).code).not.toBe(0);
      });
      expect(onB, 'no IP fragments on the underlay').toEqual([]);
      expect(await vx() - before).toBeGreaterThanOrEqual(2);
    } finally {
      await nsExec(vmNs('a10'), `ip link set ${TAP10} mtu ${VM_MTU}`);
    }
    expect((await nsExecR(vmNs('a10'), `busybox ping -c 2 -s 1422 -W 2 ${VM.b10}`)).code).toBe(0);
  });

  it('changes at runtime: a VNI removed and re-added, a flood list edited, a static entry toward a remote', async () => {
    await d.ok(['vxlan', 'del', 'vni', '200']);
    expect(await pingCount(vmNs('a20'), VM.b20, 2, 0.2), 'VNI 200 gone').toBe(0);
    await d.ok(['vxlan', 'add', BR, 'vni', '200', 'vlan', '20', 'flood', UNDER.b]);
    expect(await pingUntil(vmNs('a20'), VM.b20), 'VNI 200 back').toBe(true);
    // VNI 100 without C on its flood list: a broadcast reaches B only.
    await d.ok(['vxlan', 'add', BR, 'vni', '100', 'vlan', '10', 'flood', UNDER.b]);
    const v = await vxlanShow(d);
    expect(v.vnis.find((s: any) => s.vni === 100)).toMatchObject({ flood: [UNDER.b], source: 'runtime' });
    const onC = await captureDuring(HOST_C, UC, `udp port 4789 and src host ${UNDER.a}`, async () => {
      await nsExecR(vmNs('a10'), `busybox arping -c 2 -w 2 -I ${TAP10} ${VM.b10}`);
    });
    expect(vxlanLines(onC).map((l) => l.line)).toEqual([]);
    // A static MAC behind C: a static entry on C's tunnel port (which exists again for it).
    await d.ok(['vxlan', 'fdb', 'add', '02:00:00:00:00:42', 'vni', '100', 'dst', UNDER.c]);
    const fdb = await fdbEntries(d, BR);
    expect(fdb.find((e) => e.mac === '02:00:00:00:00:42')).toMatchObject({ port: `vx-${UNDER.c}`, vlan: 10, static: true });
    expect((await d.cli(['vxlan', 'del', 'vni', '12345'])).stderr).toMatch(/VNI 12345 is not mapped/);
    expect((await d.cli(['vxlan', 'add', BR, 'vni', '300', 'vlan', '10'])).stderr).toMatch(/VLAN 10 is mapped to two VNIs|mapped twice|two VNIs/);
    // Back to the file's mapping for the tests that follow.
    await d.ok(['vxlan', 'fdb', 'del', '02:00:00:00:00:42', 'vni', '100']);
    await d.ok(['vxlan', 'add', BR, 'vni', '100', 'vlan', '10', 'flood', `${UNDER.b},${UNDER.c},${UNDER.d}`]);
    expect(await pingUntil(vmNs('a10'), VM.c10)).toBe(true);
    // show and stats list the tunnel ports like any port.
    expect((await d.ok(['show'])).stdout).toContain(`vx-${UNDER.b}`);
  });

  const coalesced = async (): Promise<{ frames: number; segments: number; errors: number; gsoSegments: number }> => {
    const v = await vxlanShow(d);
    return { ...v.rxCoalesced, gsoSegments: v.txGso.segments };
  };
  for (const [dir, from, to, toIp] of [['vswitch -> Linux', 'a10', 'b10', VM.b10], ['Linux -> vswitch', 'b10', 'a10', VM.a10]] as const) {
    it(`moves 100 MB over TCP ${dir} intact (sha256 both ends)`, async () => {
      const before = await coalesced();
      const t = await tcpTransfer({ from: vmNs(from), to: vmNs(to), toIp, size: SIZE, timeoutMs: 120_000, tag: 'vx' });
      expect(t.code, t.stderr).toBe(0);
      await printTransfer(`vxlan ${dir}`, SIZE, t.secs);
      expect(t.received).toBe(t.sent);
      if (from === 'a10') {
        // The VM used TSO: its super-frames were segmented and encapsulated in the addon, a batch each.
        const text = await nsExec(HOST_A, 'curl -sf http://127.0.0.1:9464/metrics');
        const segmented = Number(/^vswitch_vxlan_tx_segmented_total\{vni="100",bridge="br0",vlan="10"\} (\d+)/m.exec(text)?.[1] ?? NaN);
        expect(segmented).toBeGreaterThan(100);
        // vxlan.offload auto: their segments left as UDP GSO datagrams, which the Linux VTEP took whole (the sha256 above).
        const gso = (await vxlanShow(d)).txGso;
        expect(gso.segments - before.gsoSegments).toBeGreaterThan(10_000);
        expect(gso.refused).toBe(0);
      } else {
        // B's segments reached a10 coalesced (vxlan.offload auto): whole runs of them per TAP write, none refused.
        const after = await coalesced();
        expect(after.segments - before.segments).toBeGreaterThan(10_000);
        expect(after.segments - before.segments).toBeGreaterThan(4 * (after.frames - before.frames));
        expect(after.errors).toBe(0);
      }
    }, 240_000);
  }

  const rxGro = async (): Promise<{ bursts: number; segments: number; dropped: number }> => (await vxlanShow(d)).rxGro;

  it('takes a vswitch peer\'s UDP GSO datagrams whole (UDP GRO) and splits them in C: 8 MB D -> A intact, coalesced toward the TAP', async () => {
    const before = await rxGro();
    const co = await coalesced();
    const t = await tcpTransfer({ from: vmNs('d10'), to: vmNs('a10'), toIp: VM.a10, size: 8 << 20, port: 5003, timeoutMs: 60_000, tag: 'vxgro' });
    expect(t.code, t.stderr).toBe(0);
    expect(t.received).toBe(t.sent);
    const after = await rxGro();
    // D sends ~40 segments per UDP GSO datagram; A's socket took them as bursts, none dropped.
    expect(after.bursts - before.bursts).toBeGreaterThan(50);
    expect(after.segments - before.segments).toBeGreaterThan(4 * (after.bursts - before.bursts));
    expect(after.dropped).toBe(0);
    expect((await coalesced()).segments - co.segments).toBeGreaterThan(1000);
    const text = await nsExec(HOST_A, 'curl -sf http://127.0.0.1:9464/metrics');
    expect(Number(/^vswitch_vxlan_rx_gro_total\{what="segments"\} (\d+)/m.exec(text)?.[1])).toBeGreaterThanOrEqual(after.segments);
  }, 120_000);

  it('inside one UDP GRO burst, each bad packet is dropped and counted on its own (reserved flag, unknown VNI, truncated)', async () => {
    const before = await vxlanShow(d);
    const g0 = await rxGro();
    const rx100 = (v: any): number => v.vnis.find((s: any) => s.vni === 100).rxPackets;
    // From host D (a known remote; its underlay keeps its offloads, so the datagram
    // crosses whole): 7 segments of 100 bytes in one UDP_SEGMENT send, the last short.
    await scapy(HOST_D, [
      'import socket',
      'def seg(flags, vni, i):',
      '    p = bytes(VXLAN(flags=flags, vni=vni)/Ether(src="02:00:00:ab:00:%02x" % i, dst="ff:ff:ff:ff:ff:ff")/ARP())',
      '    return p + bytes(100 - len(p))',
      'body = seg(8, 100, 1) + seg(8, 100, 2) + seg(0x0c, 100, 3) + seg(8, 999, 4) + seg(8, 100, 5) + seg(8, 100, 6) + b"\\x08\\x00\\x00"',
      's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
      `s.bind(("${UNDER.d}", 0))`,
      's.setsockopt(socket.SOL_UDP, 103, 100)',  // UDP_SEGMENT
      `s.sendto(body, ("${UNDER.a}", 4789))`,
    ]);
    let now: Record<string, number> = {};
    let v: any;
    await waitFor('burst counted', async () => {
      v = await vxlanShow(d);
      now = Object.fromEntries(Object.keys(before.drops).map((k) => [k, v.drops[k] - before.drops[k]]));
      return v.rxGro.segments - g0.segments >= 7 && now.truncated >= 1;
    }, { timeoutMs: 10_000 }).catch(() => undefined);
    expect(v.rxGro.bursts - g0.bursts).toBe(1);
    expect(v.rxGro.segments - g0.segments).toBe(7);
    expect(now).toEqual({ truncated: 1, bad_flags: 1, unknown_vni: 1, unknown_remote: 0, ecn_not_ect: 0 });
    // The four good packets (and only they) were decapsulated into VLAN 10: their inner
    // source MACs are learned on D's tunnel port; the reserved-flag one (:03) and the
    // unknown VNI's (:04) are not. VNI 100's packet count is a lower bound only: other
    // hosts' background frames (ND, ARP) can land in the same window.
    const learned = new Set((await fdbEntries(d, BR)).filter((e) => e.port === `vx-${UNDER.d}` && e.vlan === 10).map((e) => e.mac));
    for (const i of ['01', '02', '05', '06']) expect(learned.has(`02:00:00:ab:00:${i}`), `:${i} learned`).toBe(true);
    for (const i of ['03', '04']) expect(learned.has(`02:00:00:ab:00:${i}`), `:${i} not learned`).toBe(false);
    expect(rx100(v) - rx100(before)).toBeGreaterThanOrEqual(4);
    expect(d.alive()).toBe(true);
  }, 60_000);

  it('vxlan.offload off (reload) writes every segment as it came, and the transfer is still intact; auto again coalesces', async () => {
    const size = 8 << 20;
    const move = async (): Promise<void> => {
      const t = await tcpTransfer({ from: vmNs('b10'), to: vmNs('a10'), toIp: VM.a10, size, port: 5002, timeoutMs: 60_000, tag: 'vxoff' });
      expect(t.code, t.stderr).toBe(0);
      expect(t.received).toBe(t.sent);
    };
    const setOffload = async (mode: string): Promise<void> => {
      await reloadWith(d, (cfg) => { cfg.vxlan.offload = mode; });
      expect((await vxlanShow(d)).offload).toBe(mode);
    };
    await setOffload('off');
    try {
      const before = await coalesced();
      await move();
      expect((await coalesced()).segments).toBe(before.segments);
      // UDP GRO is off too: a vswitch peer's UDP GSO datagrams reach the socket cut into packets, as before.
      const g = await rxGro();
      expect((await vxlanShow(d)).rxGro.on).toBe(false);
      const t = await tcpTransfer({ from: vmNs('d10'), to: vmNs('a10'), toIp: VM.a10, size: 2 << 20, port: 5004, timeoutMs: 60_000, tag: 'vxgroff' });
      expect(t.code, t.stderr).toBe(0);
      expect(t.received).toBe(t.sent);
      expect((await rxGro()).segments).toBe(g.segments);
    } finally {
      await setOffload('auto');
    }
    const before = await coalesced();
    await move();
    expect((await coalesced()).segments - before.segments).toBeGreaterThan(1000);
  }, 120_000);

  it('counts malformed, unknown-VNI and unknown-sender datagrams, bounds a random flood, and goes on', async () => {
    const before = (await vxlanShow(d)).drops;
    const outer = `Ether(dst="${uaMac}")/IP(src="${UNDER.b}", dst="${UNDER.a}")/UDP(sport=40000, dport=4789)`;
    const inner = 'Ether(src="02:00:00:aa:00:01", dst="ff:ff:ff:ff:ff:ff")/ARP()';
    await scapy(HOST_B, [
      `o = ${outer}`,
      'pk = [o/Raw(load=b"\\x08\\x00\\x00")]',                         // truncated
      `pk += [o/VXLAN(flags=0x0c, vni=100)/${inner}]`,                  // a reserved flag
      `pk += [o/VXLAN(flags=0x00, vni=100)/${inner}]`,                  // I flag clear
      `pk += [o/VXLAN(flags=0x08, vni=999)/${inner}]`,                              // unknown VNI
      `pk += [Ether(dst="${uaMac}")/IP(src="${NET}.0.99", dst="${UNDER.a}")/UDP(sport=40000, dport=4789)/VXLAN(flags=0x08, vni=100)/${inner}]`, // not a remote
      `sendp(pk, iface="${UB}", inter=0.01)`,
      // A flood: random VNIs and random inner source MACs in a mapped VNI.
      'import random',
      `fl = [o/VXLAN(flags=0x08, vni=random.randint(1000, 16777215))/Ether(src=RandMAC(), dst="ff:ff:ff:ff:ff:ff")/ARP() for i in range(1000)]`,
      `fl += [o/VXLAN(flags=0x08, vni=100)/Ether(src="02:%02x:%02x:00:00:01" % (i >> 8, i & 255), dst="ff:ff:ff:ff:ff:ff")/ARP() for i in range(1000)]`,
      `sendp(fl, iface="${UB}")`,
    ]);
    const delta = (v: any): Record<string, number> => Object.fromEntries(Object.keys(before).map((k) => [k, v[k] - before[k]]));
    let now: Record<string, number> = {};
    await waitFor('drops counted', async () => {
      now = delta((await vxlanShow(d)).drops);
      return now.truncated >= 1 && now.bad_flags >= 2 && now.unknown_vni >= 1001 && now.unknown_remote >= 1;
    }, { timeoutMs: 15_000 }).catch(() => undefined);
    // Exactly what was sent (the flood's 1000 random VNIs all differ from 100 and 200).
    expect(now).toEqual({ truncated: 1, bad_flags: 2, unknown_vni: 1001, unknown_remote: 1, ecn_not_ect: 0 });
    expect(d.alive()).toBe(true);
    // The same numbers in the metrics, which promtool accepts.
    const text = await nsExec(HOST_A, 'curl -sf http://127.0.0.1:9464/metrics');
    const metric = (re: RegExp): number => Number(re.exec(text)?.[1] ?? NaN);
    expect(metric(/^vswitch_vxlan_drops_total\{reason="unknown_vni"\} (\d+)/m)).toBeGreaterThanOrEqual(1001);
    expect(metric(/^vswitch_vxlan_rx_packets_total\{vni="100",bridge="br0",vlan="10"\} (\d+)/m)).toBeGreaterThan(1000);
    expect(metric(/^vswitch_vxlan_tx_packets_total\{vni="200",bridge="br0",vlan="20"\} (\d+)/m)).toBeGreaterThan(0);
    expect(text).toMatch(new RegExp(`^vswitch_port_drops_total\\{bridge="br0",port="vx-${UNDER.b.replace(/\./g, '\\.')}",kind="vxlan",reason="tunnel_mtu"\\} [1-9]`, 'm'));
    const file = join(tempDir('m'), 'metrics.txt');
    writeFileSync(file, text);
    const lint = await sh(`promtool check metrics < ${file} 2>&1 || true`);
    expect(lint.split('\n').filter((l) => /vxlan/.test(l))).toEqual([]);
    expect((await fdbEntries(d, BR)).length).toBeLessThanOrEqual(512);
    // The daemon carries on: VMs on both VNIs still reach each other.
    expect(await pingUntil(vmNs('a20'), VM.b20)).toBe(true);
    expect(await pingUntil(vmNs('a10'), VM.c10)).toBe(true);
  }, 180_000);
  it('a reload applies the file\'s changes (the file wins for a VNI the CLI changed too); CLI changes survive a restart', async () => {
    await d.ok(['vxlan', 'add', BR, 'vni', '300', 'vlan', '30']);
    // VNI 100 was last set by the CLI (previous test); the file now changes it: the file wins.
    await reloadWith(d, (cfg) => {
      cfg.vxlan.bridges[BR][0].flood = [UNDER.b];
      cfg.vxlan.readQuantum = '1mb';
      cfg.vxlan.readShare = 'frames';
      cfg.vxlan.readFrames = 16;
    });
    let v = await vxlanShow(d);
    expect(v.vnis.map((s: any) => [s.vni, s.flood, s.source])).toEqual([[100, [UNDER.b], 'config'], [200, [UNDER.b], 'runtime'], [300, [], 'runtime']]);
    // The underlay socket's read quantum changes with a reload.
    expect(v.readQuantum).toBe(1024 * 1024);
    // ... and so does its unit (readShare: frames, readFrames datagrams a round).
    expect([v.readShare, v.readFrames]).toEqual(['frames', 16]);
    expect((await d.ok(['vxlan', 'show'])).stdout).toMatch(/ttl 64 tos 0x00 ecn rfc6040 read-share frames 16/);
    // Restart (same config, socket and state directory): the CLI's VNIs come back.
    await d.stop();
    const env = { ...process.env };
    delete env.VSWITCH_SOCKET;
    const proc = spawnTracked('ip', ['netns', 'exec', HOST_A, process.execPath, MAIN_JS, 'daemon', '--config', d.configFile, '--socket', d.socket], {
      stdio: ['ignore', 'pipe', 'pipe'], env, cwd: d.dir,
    }, 'TERM');
    d = new Daemon(proc, d.socket, d.configFile, d.dir);
    await waitFor('the restarted daemon', async () => d.alive() && (await d.cli(['show', '--json'])).code === 0, { timeoutMs: 15_000 });
    v = await vxlanShow(d);
    expect(v.vnis.map((s: any) => [s.vni, s.flood, s.source])).toEqual([[100, [UNDER.b], 'config'], [200, [UNDER.b], 'runtime'], [300, [], 'runtime']]);
    expect(d.logs.some((l) => l.obj?.event === 'vxlan_runtime_restored')).toBe(true);
  }, 60_000);
});
