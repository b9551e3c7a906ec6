/*
 * Uplink bonds (issue 17, item 4) through the real daemon against Open vSwitch's
 * own bond. Topology: a VM namespace on a TAP port of br0; a bond port (bd0) over
 * two veths whose peers sit in a namespace running a private ovsdb-server and
 * ovs-vswitchd (userspace datapath, datapath_type=netdev; own run directory and
 * database); a host namespace behind the OVS bridge.
 * - lacp: OVS bonds its two veths with lacp=active, lacp-time=fast; the session comes
 *   up (ovs-appctl lacp/show says negotiated, both members current and attached, with
 *   our system id as partner; `vswitch bond show --json` says both distributing, with
 *   OVS's system id), the VM pings the host, and cutting a member (`ip link set
 *   ... down` on the OVS side) loses at most a bounded part of a 10/s ping stream.
 * - active-backup (`vswitch bond del` / `bond add --mode active-backup`): OVS is a
 *   plain learning switch with the two veths as separate ports; cutting the active
 *   member moves traffic to the other, and a RARP for the VM's MAC is seen on the
 *   new member (tcpdump), so OVS relearns it at once.
 * - OVS's LACPDUs on one member dropped (tc, link up): the member expires after
 *   3 fast periods and carries nothing, OVS sees it out of sync; back when they flow.
 * - balance-slb against the plain OVS switch: its floods reach the VM once, the VM's own
 *   broadcasts reflected by OVS are dropped and its MAC stays on its TAP port.
 * - a malformed LACPDU is counted and dropped; the VM keeps pinging.
 * - a bond added at runtime comes back after a daemon restart (runtime.json).
 * - a bond over a missing interface and an attach port over a member are refused;
 *   a member deleted under the bond is counted and logged, the bond goes on.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, startDaemon } from './helpers/daemon.js';
import { metric, scrape } from './helpers/direct.js';
import { PREFIX, addNamespace, addVeth, cleanup, freePort, ifname, nsExec, nsExecR, nsname, sh, sleep, spawnTracked, tempDir, toolFile, waitFor } from './helpers/run.js';
import { type Vm, continuousPing, makeVm, pingUntil, plumb, tcpdump, waitLink } from './helpers/vm.js';
import { PYTHON } from './helpers/scapy.js';

const X = 20 + (parseInt(PREFIX.slice(1), 16) % 200);
const ip = (h: number): string => `10.${X}.34.${h}`;
const BR = 'br0';
const BOND = ifname('bd0');
const vmTap = ifname('bdv');
/** Our ends (root namespace, the bond's members) and OVS's ends. */
const m1 = ifname('bd1a');
const m2 = ifname('bd2a');
const o1 = ifname('bd1b');
const o2 = ifname('bd2b');
const hostIf = ifname('bdh');
const hostOvs = ifname('bdho');
const ovsNs = nsname('ovs');
const hostNs = nsname('bdhost');
const OVSBR = 'bdovs';

let d: Daemon;
let vm: Vm;
let metricsPort: number;
let ovsDir: string;

async function vsctl(args: string): Promise<string> {
  return nsExec(ovsNs, `ovs-vsctl --db=unix:${ovsDir}/db.sock --timeout=20 ${args}`);
}
async function appctl(args: string): Promise<string> {
  return nsExec(ovsNs, `ovs-appctl -t ${ovsDir}/ovs-vswitchd.ctl ${args}`);
}
async function bondShow(): Promise<any> {
  const r = await d.ok(['bond', 'show', BOND], { json: true });
  return r.json[0];
}
const metrics = (): Promise<string> => scrape(metricsPort);

/** Pings at 10/s from the VM while `cut` runs and for `afterMs`; returns [sent, lost]. */
async function pingThrough(cut: () => Promise<void>, afterMs: number): Promise<{ last: number; lost: number; out: string }> {
  const p = continuousPing(vm.ns, ip(2), 0.1);
  await sleep(1000);
  await cut();
  await sleep(afterMs);
  const out = await p.stop();
  const seqs = p.pingSeqs();
  const last = Math.max(...seqs);
  return { last, lost: last + 1 - new Set(seqs).size, out };
}

const config = (extra: Record<string, unknown> = {}) => ({
  metrics: { listen: `127.0.0.1:${metricsPort}` },
  bridges: {
    [BR]: {
      ports: {
        [vmTap]: { type: 'tap', vlan: { mode: 'access', vid: 1 } },
        [BOND]: { type: 'bond', bond: { members: [m1, m2], mode: 'lacp', lacp: 'active', lacpRate: 'fast' } },
      },
    },
  },
  ...extra,
});

beforeAll(async () => {
  metricsPort = await freePort();
  // Veths first (the bond's members must exist), OVS's ends in its namespace.
  await addVeth(m1, o1);
  await addVeth(m2, o2);
  await addVeth(hostIf, hostOvs);
  await addNamespace(ovsNs);
  await addNamespace(hostNs);
  for (const n of [o1, o2, hostOvs]) await sh(`ip link set ${n} netns ${ovsNs}`);
  await sh(`ip link set ${hostIf} netns ${hostNs}`);
  // OVS's netdev datapath reads veths through AF_PACKET without a vnet header: no offloads that leave work undone.
  for (const n of [o1, o2, hostOvs]) await nsExec(ovsNs, `ethtool -K ${n} tx off tso off gso off >/dev/null 2>&1; sysctl -qw net.ipv6.conf.${n}.disable_ipv6=1; ip link set ${n} up`);
  for (const n of [m1, m2]) await sh(`sysctl -qw net.ipv6.conf.${n}.disable_ipv6=1; ip link set ${n} up`);
  await nsExec(hostNs, `sysctl -qw net.ipv6.conf.all.disable_ipv6=1; ethtool -K ${hostIf} tx off >/dev/null 2>&1; ip link set ${hostIf} up && ip addr add ${ip(2)}/24 dev ${hostIf}`);

  // A private Open vSwitch: its own database, sockets, logs (nothing shared with another instance).
  ovsDir = tempDir('ovs');
  const env = { ...process.env, OVS_RUNDIR: ovsDir, OVS_DBDIR: ovsDir, OVS_LOGDIR: ovsDir, OVS_SYSCONFDIR: ovsDir };
  await sh(`ovsdb-tool create ${ovsDir}/conf.db /usr/share/openvswitch/vswitch.ovsschema`);
  spawnTracked('ip', ['netns', 'exec', ovsNs, 'ovsdb-server', `${ovsDir}/conf.db`, `--remote=punix:${ovsDir}/db.sock`,
    `--unixctl=${ovsDir}/ovsdb-server.ctl`, `--log-file=${ovsDir}/ovsdb-server.log`], { env }, 'TERM');
  await waitFor('ovsdb-server socket', async () => (await sh(`test -S ${ovsDir}/db.sock && echo y || echo n`)).trim() === 'y', { timeoutMs: 10_000 });
  await vsctl('--no-wait init');
  spawnTracked('ip', ['netns', 'exec', ovsNs, 'ovs-vswitchd', `unix:${ovsDir}/db.sock`, `--unixctl=${ovsDir}/ovs-vswitchd.ctl`,
    `--log-file=${ovsDir}/ovs-vswitchd.log`], { env }, 'TERM');
  await vsctl(`add-br ${OVSBR} -- set bridge ${OVSBR} datapath_type=netdev`);
  await vsctl(`add-port ${OVSBR} ${hostOvs}`);
  await vsctl(`add-bond ${OVSBR} ovsbond ${o1} ${o2} lacp=active bond_mode=balance-slb other_config:lacp-time=fast`);

  d = await startDaemon(config());
  vm = await makeVm('bdvm', vmTap, `${ip(1)}/24`);
}, 120_000);

afterAll(async () => {
  await d?.stop();
  await cleanup();
});

describe('lacp against Open vSwitch (lacp=active, fast)', () => {
  it('negotiates: ovs-appctl lacp/show and vswitch bond show agree', async () => {
    const st = await waitFor('both members distributing', async () => {
      const b = await bondShow();
      return b.members.every((m: any) => m.lacp.distributing) ? b : undefined;
    }, { timeoutMs: 15_000 });
    const show = await waitFor('OVS negotiated', async () => {
      const t = await appctl('lacp/show ovsbond');
      return /status: active negotiated/.test(t) && (t.match(/current attached/g) ?? []).length === 2 ? t : undefined;
    }, { timeoutMs: 15_000 });
    const ovsSys = /\bsys_id: ([0-9a-f:]{17})/.exec(show)![1];
    const partnerSys = [...show.matchAll(/partner sys_id: ([0-9a-f:]{17})/g)].map((m) => m[1]);
    expect(st.mode).toBe('lacp');
    expect(st.state).toBe('up');
    expect(partnerSys).toEqual([st.lacp.system, st.lacp.system]);
    for (const m of st.members) {
      expect(m.lacp).toMatchObject({ status: 'current', attached: true, collecting: true, distributing: true, partnerSystem: ovsSys });
    }
    // OVS sees us synchronized, collecting and distributing on both.
    expect((show.match(/partner state: activity timeout aggregation synchronized collecting distributing/g) ?? []).length).toBe(2);
    const text = (await d.ok(['bond', 'show'])).stdout;
    expect(text).toMatch(new RegExp(`${BOND}.*lacp.*${m1}.*current distributing`));
  }, 40_000);

  it('carries the VM\'s traffic to the host behind OVS', async () => {
    expect(await pingUntil(vm.ns, ip(2), 15_000)).toBe(true);
  }, 30_000);

  it('cutting a member fails over within a few LACP periods with a bounded loss of a 10/s ping stream', async () => {
    const r = await pingThrough(() => nsExec(ovsNs, `ip link set ${o1} down`), 4000);
    console.log(`lacp member cut: ${r.lost} of ${r.last + 1} pings lost (load ${(await sh('cat /proc/loadavg')).trim()})`);
    expect(r.last).toBeGreaterThan(30);
    // Carrier loss is seen within 100 ms; the bound leaves room for OVS's own failover (one fast period and more).
    expect(r.lost, r.out.slice(-500)).toBeLessThanOrEqual(10);
    const b = await bondShow();
    expect(b.members[0]).toMatchObject({ link: 'down', enabled: false });
    expect(b.members[1].lacp.distributing).toBe(true);
    expect(d.logs.some((l) => l.obj?.event === 'bond_member_down' && l.obj.member === m1)).toBe(true);
    const m = await metrics();
    expect(metric(m, 'vswitch_bond_member_up', { bond: BOND, member: m1 })).toBe(0);
    expect(metric(m, 'vswitch_bond_member_lacpdus_total', { bond: BOND, member: m2, direction: 'rx' })).toBeGreaterThan(2);
    expect(metric(m, 'vswitch_bond_member_tx_frames_total', { bond: BOND, member: m2 })).toBeGreaterThan(0);
    // The member back: it rejoins the aggregation.
    await nsExec(ovsNs, `ip link set ${o1} up`);
    await waitFor('member back distributing', async () => (await bondShow()).members[0].lacp.distributing === true, { timeoutMs: 15_000 });
  }, 60_000);

  it('a member whose partner falls silent (LACPDUs lost, link up) expires after 3 fast periods and carries nothing', async () => {
    // OVS's LACPDUs on o2 are dropped on their way out (its AF_PACKET sends pass the egress hook); data still passes.
    // A classic BPF program in direct-action mode returning TC_ACT_SHOT: no action modules needed.
    await nsExec(ovsNs, `tc qdisc add dev ${o2} clsact && tc filter add dev ${o2} egress protocol 0x8809 bpf da bytecode '1,6 0 0 2'`);
    try {
      const t0 = Date.now();
      await waitFor('m2 expired', async () => (await bondShow()).members[1].lacp.status === 'expired', { timeoutMs: 8000, intervalMs: 100 });
      const ms = Date.now() - t0;
      console.log(`LACP silence: member expired after ${ms} ms (load ${(await sh('cat /proc/loadavg')).trim()})`);
      expect(ms).toBeGreaterThan(1500);
      // 3 s after the last PDU (sent up to 1 s before the filter), plus polling through the CLI under load.
      expect(ms).toBeLessThan(6500);
      const b = await bondShow();
      expect(b.members[1]).toMatchObject({ link: 'up', enabled: false, lacp: { distributing: false, collecting: false } });
      expect(b.members[0].lacp.distributing).toBe(true);
      expect(await pingUntil(vm.ns, ip(2), 5000)).toBe(true);
      // OVS hears us say so: its member is no longer attached (we are out of sync on it).
      await waitFor('OVS sees us out of sync on o2', async () => {
        const block = (await appctl('lacp/show ovsbond')).split(/\nmember: /).find((b) => b.startsWith(`${o2}:`)) ?? '';
        const partner = /partner state: (.*)/.exec(block)?.[1] ?? '';
        return partner !== '' && !partner.includes('synchronized');
      }, { timeoutMs: 5000 });
    } finally {
      await nsExec(ovsNs, `tc qdisc del dev ${o2} clsact`);
    }
    await waitFor('m2 back distributing', async () => (await bondShow()).members[1].lacp.distributing === true, { timeoutMs: 10_000 });
  }, 40_000);

  it('counts a malformed LACPDU and drops it; traffic goes on', async () => {
    const py = toolFile('bond-bad-lacpdu.py', [
      'import socket, sys',
      's = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)',
      's.bind((sys.argv[1], 0))',
      // Slow protocols, subtype LACP, version 1, actor TLV with length 7: malformed.
      "s.send(bytes.fromhex('0180c2000002' + '020000000bad' + '8809' + '0101' + '0107') + bytes(100))",
    ].join('\n'));
    await nsExec(ovsNs, `${PYTHON} ${py} ${o2}`);
    await waitFor('lacp_malformed counted', async () => (await bondShow()).members[1].drops.lacp_malformed === 1, { timeoutMs: 5000 });
    expect((await bondShow()).members.every((m: any) => m.lacp.distributing)).toBe(true);
    expect(await pingUntil(vm.ns, ip(2), 5000)).toBe(true);
  }, 30_000);
});

describe('active-backup against a plain OVS learning switch', () => {
  it('bond del / bond add --mode active-backup; failover sends a RARP for the VM on the new member', async () => {
    await d.ok(['bond', 'del', BR, BOND]);
    await vsctl(`del-port ${OVSBR} ovsbond -- add-port ${OVSBR} ${o1} -- add-port ${OVSBR} ${o2}`);
    await d.ok(['bond', 'add', BR, BOND, m1, m2, '--mode', 'active-backup']);
    expect(await bondShow()).toMatchObject({ mode: 'active-backup', active: m1, state: 'up' });
    expect(await pingUntil(vm.ns, ip(2), 15_000)).toBe(true);
    const cap = await tcpdump(ovsNs, o2, 'ether proto 0x8035');
    const r = await pingThrough(() => nsExec(ovsNs, `ip link set ${o1} down`), 3000);
    const lines = await cap.stop();
    console.log(`active-backup cut: ${r.lost} of ${r.last + 1} pings lost (load ${(await sh('cat /proc/loadavg')).trim()}); RARP: ${lines.join(' | ')}`);
    expect(lines.some((l) => l.includes(vm.mac) && /Reverse Request|rarp/i.test(l)), lines.join('\n')).toBe(true);
    expect(r.lost, r.out.slice(-500)).toBeLessThanOrEqual(5);
    const b = await bondShow();
    expect(b).toMatchObject({ active: m2, failovers: 1 });
    expect(b.announced).toBeGreaterThanOrEqual(1);
    const ev = d.logs.find((l) => l.obj?.event === 'bond_failover');
    expect(ev?.obj).toMatchObject({ bond: BOND, from: m1, to: m2 });
    const m = await metrics();
    expect(metric(m, 'vswitch_bond_failovers_total', { bond: BOND })).toBe(1);
    // OVS learned the VM's MAC on the new member from the RARP.
    const fdb = await appctl(`fdb/show ${OVSBR}`);
    const port2 = (await vsctl(`get Interface ${o2} ofport`)).trim();
    expect(fdb).toMatch(new RegExp(`^\\s*${port2}\\s+\\d+\\s+${vm.mac}`, 'm'));
  }, 60_000);
});

describe('balance-slb against a plain OVS learning switch (no cooperation)', () => {
  it('takes a flood from the upstream once, and its own broadcasts reflected by the upstream are not learned on the bond', async () => {
    await nsExec(ovsNs, `ip link set ${o1} up`);
    await d.ok(['bond', 'del', BR, BOND]);
    await d.ok(['bond', 'add', BR, BOND, m1, m2, '--mode', 'balance-slb']);
    await waitFor('both members up', async () => (await bondShow()).members.every((m: any) => m.link === 'up'), { timeoutMs: 10_000 });
    expect(await pingUntil(vm.ns, ip(2), 15_000)).toBe(true);
    // The host's broadcast ARP requests reach OVS, which floods them to both members: the VM must see each once.
    const cap = await tcpdump(vm.ns, vm.ifname, `arp and ether src ${(await nsExec(hostNs, `cat /sys/class/net/${hostIf}/address`)).trim()} and ether dst ff:ff:ff:ff:ff:ff`);
    const sent = Number(/Sent (\d+) probe/.exec((await nsExecR(hostNs, `busybox arping -b -c 3 -w 5 -I ${hostIf} ${ip(1)}`)).stdout)?.[1]);
    const lines = await cap.stop();
    expect(sent).toBeGreaterThanOrEqual(2);
    expect(lines, lines.join('\n')).toHaveLength(sent);
    // The VM's broadcasts come back from OVS on the other member: dropped, the VM's MAC stays on its TAP port.
    const sentVm = Number(/Sent (\d+) probe/.exec((await nsExecR(vm.ns, `busybox arping -b -c 3 -w 5 -I ${vm.ifname} ${ip(2)}`)).stdout)?.[1]);
    const macs = (await d.ok(['showmacs', BR], { json: true })).json as any[];
    expect(macs.filter((e) => e.mac === vm.mac).map((e) => e.port)).toEqual([vmTap]);
    const b = await bondShow();
    const drops = b.members.map((m: any) => m.drops);
    const total = (k: string): number => drops.reduce((n: number, x: any) => n + (x[k] ?? 0), 0);
    // Each host broadcast once on the non-primary member; each VM broadcast once back from OVS (on the primary: a
    // reflection; on the other: a flood from a non-primary member), whichever member its MAC hashes to.
    expect(total('slb_flood') + total('slb_reflection')).toBeGreaterThanOrEqual(sent + sentVm);
    expect(b.members.reduce((n: number, m: any) => n + m.buckets, 0)).toBe(256);
    expect(d.logs.some((l) => l.obj?.event === 'mac_moved' && l.obj.mac === vm.mac)).toBe(false);
  }, 60_000);
});

describe('across a restart', () => {
  it('a bond added at runtime comes back as it was (runtime.json), and carries traffic', async () => {
    const stateDir = join(d.dir, 'state');
    await d.stop();
    d = await startDaemon(config({ stateDir }));
    // The VM's TAP went with the old daemon: the new one's goes into the VM's namespace.
    await waitLink(vmTap);
    vm = { ...vm, mac: await plumb(vm.ns, vmTap, vm.cidr, false) };
    const b = await waitFor('the bond up', async () => { const x = await bondShow(); return x.state === 'up' ? x : undefined; }, { timeoutMs: 15_000 });
    expect(b).toMatchObject({ mode: 'balance-slb', members: [{ name: m1 }, { name: m2 }] });
    expect(await pingUntil(vm.ns, ip(2), 15_000)).toBe(true);
  }, 60_000);
});

describe('bad input and vanishing members', () => {
  it('refuses a bond over a missing interface and an attach port over a member, changing nothing', async () => {
    const bad = await d.cli(['bond', 'add', BR, ifname('bdx'), ifname('bdnone')]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/cannot attach member/);
    const busy = await d.cli(['addif', BR, m1, '--attach']);
    expect(busy.code).not.toBe(0);
    expect(busy.stderr).toMatch(new RegExp(`${m1} is a member of bond ${BOND}`));
    expect((await d.ok(['bond', 'show'], { json: true })).json.map((b: any) => b.name)).toEqual([BOND]);
  }, 30_000);

  it('a member that vanishes is counted and logged; the bond goes on with the rest', async () => {
    await d.ok(['bond', 'del', BR, BOND]);
    await d.ok(['bond', 'add', BR, BOND, m1, m2, '--mode', 'active-backup']);
    await waitFor('m1 active', async () => (await bondShow()).active === m1, { timeoutMs: 10_000 });
    // Make m2 the active member (m1 down and back: no preemption), then delete it.
    await sh(`ip link set ${m1} down`);
    await waitFor('m2 active', async () => (await bondShow()).active === m2, { timeoutMs: 5000 });
    await sh(`ip link set ${m1} up`);
    await waitFor('m2 active, m1 up', async () => { const b = await bondShow(); return b.active === m2 && b.members[0].link === 'up'; }, { timeoutMs: 5000 });
    const r = await pingThrough(() => sh(`ip link del ${m2}`), 3000);
    console.log(`active member deleted: ${r.lost} of ${r.last + 1} pings lost`);
    expect(r.lost, r.out.slice(-500)).toBeLessThanOrEqual(5);
    const b = await bondShow();
    expect(b.members[1]).toMatchObject({ link: 'down', vanished: 1 });
    expect(b).toMatchObject({ active: m1, state: 'up' });
    expect(d.logs.some((l) => l.obj?.event === 'bond_member_down' && l.obj.member === m2 && l.obj.level === 'warn')).toBe(true);
    expect(d.alive()).toBe(true);
  }, 40_000);
});
