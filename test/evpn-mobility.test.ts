/*
 * EVPN MAC mobility between two vswitch hosts (issue 16: "a VM moved from A to a
 * second vswitch host C is found through MAC mobility without waiting for ageing").
 * Hosts A and C: a vswitch daemon each with its managed gobgpd, a TAP port in VLAN
 * 10 = VNI 100. Host B: FRR (helpers/evpn.ts) as the route reflector for A and C
 * (iBGP, one AS), over a Linux bridge + `vxlan` device with `nolearning` and a veth
 * VM that pings the moving VM throughout. The underlay is a Linux bridge in B's
 * namespace (A, B and C on one subnet). Data-plane learning from the overlay is off
 * everywhere and the FDBs age after 600 s: only the routes can move the MAC.
 *
 * The move is a live migration's: the VM's namespace keeps its MAC and IP; its TAP
 * on A goes to a parking namespace (the paused source: A's port stays, A's FDB still
 * holds the MAC as local), a TAP of C's with the same MAC takes its place and the VM
 * announces itself (a gratuitous ARP, as QEMU does after migration). Shows: C
 * advertises the MAC with mobility sequence 1 (FRR's MM:1); A, holding it locally
 * with sequence 0, withdraws its route and installs the MAC toward C (RFC 7432 §15);
 * B's bridge points at C; the pings resume within seconds (time printed with the
 * load). Then back from C to A: sequence 2, C drops its local entry.
 *
 * Duplicate MAC detection (RFC 7432 §15.1, daemon/evpn/dup-detect.ts), A with the
 * defaults (5 moves in 180 s, held until cleared), C with detection off (a peer
 * without it): two VMs sharing one MAC, one behind C (first) and one behind A, each
 * announcing itself every 0.3 s, make the MAC ping-pong between the hosts with ever
 * higher sequences until A's 5th move (remote -> local, the odd ones are) flags it and
 * holds it local: C's next, higher route is refused (`duplicate_mac`) and the
 * sequences stop growing while both VMs go on; the flag is in `evpn show` and the
 * metrics. The duplicate VM on C removed and `evpn clear-dup` run on A, the MAC settles
 * behind A, and a move of the remaining VM to C is followed as before (not held). A
 * reload changes the settings in place.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { parse } from 'yaml';
import { Daemon, startDaemon, toYaml } from './helpers/daemon.js';
import { Frr, loadAvg, pingLossSince, startFrr } from './helpers/evpn.js';
import { addNamespace, cleanup, freePort, ifname, nsExec, nsExecR, nsname, sh, waitFor } from './helpers/run.js';
import { Background, continuousPing, quietNamespace } from './helpers/vm.js';

const NET = '10.234';
const UNDER = { a: `${NET}.0.1`, b: `${NET}.0.2`, c: `${NET}.0.3` };
const VM = { m: `${NET}.1.11`, b: `${NET}.1.12` };
/** The moving VM's MAC. */
const MAC = '02:00:0a:ea:01:0b';
const ASN = 65000;
const VM_MTU = 1450;
const BR = 'br0';
const AGEING_MS = 600_000;
const HOST = { a: nsname('ma'), b: nsname('mb'), c: nsname('mc') };
const VM_NS = nsname('mvm');
const VMB_NS = nsname('mvb');
const PARK = nsname('mpk');
const TAP = { a: ifname('mta'), c: ifname('mtc') };
const VMB_IF = ifname('mvb');
/** Duplicate detection: a second TAP per host, two VM namespaces sharing DUP_MAC. */
const DUP_MAC = '02:00:0a:ea:01:15';
const DUP_IP = { a: `${NET}.1.21`, c: `${NET}.1.22` };
const TAP2 = { a: ifname('mda'), c: ifname('mdc') };
const DUP_NS = { a: nsname('mdva'), c: nsname('mdvc') };

function daemonConfig(local: string, under: string, tap: string, tap2: string, metricsPort: number, dupDetect = {}): unknown {
  const access = { type: 'tap', vlan: { mode: 'access', vid: 10 } };
  return {
    bridges: { [BR]: { ageing: AGEING_MS / 1000, ports: { [tap]: access, [tap2]: access } } },
    vxlan: { local, interface: under, bridges: { [BR]: [{ vni: 100, vlan: 10, flood: [] }] } },
    evpn: { asn: ASN, neighbors: [{ address: UNDER.b, remoteAs: ASN }], dupDetect },
    metrics: { listen: `127.0.0.1:${metricsPort}` },
  };
}

/** Puts the daemon's TAP (in `host`, or parked) into a VM's namespace with the VM's MAC and IP, up, and announces it. */
async function plugVm(host: string, tap: string, vm = { ns: VM_NS, mac: MAC, ip: VM.m }): Promise<void> {
  await waitFor(`TAP ${tap}`, async () => (await nsExecR(host, `ip link show ${tap}`)).code === 0 || (await nsExecR(PARK, `ip link show ${tap}`)).code === 0);
  const from = (await nsExecR(host, `ip link show ${tap}`)).code === 0 ? host : PARK;
  await nsExec(from, `ip link set ${tap} netns ${vm.ns}`);
  await nsExec(vm.ns, `ip link set ${tap} address ${vm.mac} mtu ${VM_MTU} up && ip addr add ${vm.ip}/16 dev ${tap}`);
  // QEMU announces a migrated guest with a few RARPs 100-odd ms apart; gratuitous ARPs do the same for the FDBs.
  await nsExec(vm.ns, `for i in 1 2 3; do busybox arping -U -c 1 -w 1 -I ${tap} ${vm.ip} >/dev/null 2>&1; sleep 0.1; done; true`);
}

/** The source of a migration: its TAP leaves the VM (to the parking namespace), its daemon's port stays. */
async function unplugVm(tap: string, ns = VM_NS): Promise<void> {
  await nsExec(ns, `ip link set ${tap} netns ${PARK}`);
}

/** A VM announcing itself every 0.3 s (a gratuitous ARP), printing a line per announcement. */
function announcer(ns: string, tap: string, ip: string): Background {
  return new Background(ns, `bash -c 'while :; do busybox arping -U -c 1 -w 1 -I ${tap} ${ip} >/dev/null 2>&1; echo sent; sleep 0.3; done'`);
}
const sent = (b: Background): number => b.out.split('\n').length - 1;

describe('EVPN MAC mobility: a VM moves between two vswitch hosts, FRR reflecting', () => {
  const d: Record<'a' | 'c', Daemon> = {} as never;
  let frr: Frr;
  /** Each host's metrics listener, on its own loopback (one port, two namespaces). */
  let metricsPort = 0;

  beforeAll(async () => {
    for (const ns of [HOST.a, HOST.b, HOST.c, VM_NS, VMB_NS, PARK, DUP_NS.a, DUP_NS.c]) {
      await addNamespace(ns);
      await quietNamespace(ns);
    }
    // Underlay: a bridge in B holding B's address, a veth to A and one to C.
    const ul = { a: ifname('mua'), c: ifname('muc') };
    const peer = { a: ifname('mub'), c: ifname('mud') };
    await nsExec(HOST.b, `ip link set lo up && ip link add ubr type bridge && ip addr add ${UNDER.b}/24 dev ubr && ip link set ubr up`);
    for (const h of ['a', 'c'] as const) {
      await sh(`ip link add ${ul[h]} netns ${HOST[h]} type veth peer name ${peer[h]} netns ${HOST.b}`);
      await nsExec(HOST[h], `ip link set lo up && ip link set ${ul[h]} up && ip addr add ${UNDER[h]}/24 dev ${ul[h]}`);
      await nsExec(HOST.b, `ip link set ${peer[h]} master ubr && ip link set ${peer[h]} up`);
    }
    // Complete checksums on what B sends, as a NIC would (overlay.md: a veth passes them partial).
    await nsExec(HOST.b, 'ethtool -K ubr tx off tso off gso off >/dev/null');
    const outer = ifname('mhb');
    await sh(`ip link add ${VMB_IF} netns ${VMB_NS} type veth peer name ${outer} netns ${HOST.b}`);
    await nsExec(VMB_NS, `ip link set ${VMB_IF} mtu ${VM_MTU} up && ip addr add ${VM.b}/16 dev ${VMB_IF}`);
    await nsExec(HOST.b, [
      `ip link add vx100 type vxlan id 100 local ${UNDER.b} dstport 4789 dev ubr nolearning`,
      'ip link add br100 type bridge', 'ip link set vx100 master br100', `ip link set ${outer} master br100`,
      `ip link set ${outer} mtu ${VM_MTU} up`, 'ip link set vx100 up && ip link set br100 up',
    ].join(' && '));
    frr = await startFrr({ ns: HOST.b, routerId: UNDER.b, asn: ASN, neighbors: [UNDER.a, UNDER.c], rrClients: [UNDER.a, UNDER.c] });
    metricsPort = await freePort();
    d.a = await startDaemon(daemonConfig(UNDER.a, ul.a, TAP.a, TAP2.a, metricsPort), { netns: HOST.a });
    // C does not detect duplicates (a peer without it, as FRR without dup-addr-detection): A alone must stop the ping-pong.
    d.c = await startDaemon(daemonConfig(UNDER.c, ul.c, TAP.c, TAP2.c, metricsPort, { enabled: false }), { netns: HOST.c });
  }, 120_000);

  afterAll(async () => {
    await d.a?.stop();
    await d.c?.stop();
    await frr?.stop();
    await cleanup();
  });

  const show = async (h: 'a' | 'c'): Promise<any> => (await d[h].ok(['evpn', 'show'], { json: true })).json.vnis[0];
  const fdbPort = async (h: 'a' | 'c'): Promise<string | undefined> => ((await d[h].ok(['fdb', 'show', 'br', BR], { json: true })).json as any[]).find((e) => e.mac === MAC)?.port;
  const bFdb = async (): Promise<string> => (await nsExec(HOST.b, 'bridge fdb show dev vx100')).split('\n').filter((l) => l.startsWith(MAC)).join('\n');
  /** The MAC's paths in FRR (MAC-only routes), one per advertising host. */
  const frrPaths = async (): Promise<{ nextHop: string; seq: number }[]> => (await frr.macRoutes()).filter((r) => r.mac === MAC && r.ip === '').map(({ nextHop, seq }) => ({ nextHop, seq }));

  /** What the three hosts hold for the MAC (a failure's message). */
  const state = async (): Promise<string> => JSON.stringify({
    frr: await frrPaths(),
    a: { local: (await show('a')).localRoutes.filter((r: any) => r.mac === MAC), remote: (await show('a')).remoteMacList.filter((r: any) => r.mac === MAC), fdb: await fdbPort('a') },
    c: { local: (await show('c')).localRoutes.filter((r: any) => r.mac === MAC), remote: (await show('c')).remoteMacList.filter((r: any) => r.mac === MAC), fdb: await fdbPort('c') },
    b: await bFdb(),
  });
  const explain = async (e: Error): Promise<never> => { throw new Error(`${e.message}\n${await state()}`); };

  it('C advertises the moved VM\'s MAC with sequence 1; A withdraws its own and points at C; B follows; pings resume at once', async () => {
    for (const h of ['a', 'c'] as const) {
      await waitFor(`${h}: session with FRR`, async () => (await d[h].ok(['evpn', 'show'], { json: true })).json.neighbors[0]?.state === 'established', { timeoutMs: 45_000 });
    }
    // A and C find each other through the reflector's type-3 routes.
    await waitFor('A and C on each other\'s flood list', async () => (await show('a')).floodRemotes.includes(UNDER.c) && (await show('c')).floodRemotes.includes(UNDER.a), { timeoutMs: 20_000 });
    for (const h of ['a', 'c'] as const) expect((await d[h].ok(['vxlan', 'show'], { json: true })).json.vnis[0]).toMatchObject({ learning: false });

    await plugVm(HOST.a, TAP.a);
    await waitFor('FRR: the MAC behind A, sequence 0', async () => JSON.stringify(await frrPaths()) === JSON.stringify([{ nextHop: UNDER.a, seq: 0 }]), { timeoutMs: 15_000 });
    await waitFor('C: the MAC toward A', async () => (await show('c')).remoteMacList.some((m: any) => m.mac === MAC && m.remote === UNDER.a && m.seq === 0), { timeoutMs: 15_000 });
    await waitFor('B: the MAC toward A', async () => (await bFdb()).includes(`dst ${UNDER.a}`), { timeoutMs: 15_000 });
    const ping = continuousPing(VMB_NS, VM.m, 0.1);
    try {
      await waitFor('B\'s VM reaches the VM on A', () => ping.pingSeqs().length >= 3, { timeoutMs: 15_000 });

      // A -> C. A's port stays and still holds the MAC as local: only the route can move it.
      const seq0 = Math.max(...ping.pingSeqs());
      await unplugVm(TAP.a);
      expect(await fdbPort('a'), 'A still holds the MAC as local').toBe(TAP.a);
      await plugVm(HOST.c, TAP.c);
      const { lost } = await pingLossSince(ping, seq0);
      process.stdout.write(`evpn-mobility: A -> C, B's pings (every 100 ms) lost ${lost}: ~${lost * 100} ms, ${(lost * 100 / AGEING_MS).toFixed(5)} of the ageing time (load ${loadAvg()})\n`);
      expect(lost).toBeLessThanOrEqual(30);
      await waitFor('FRR: only C\'s route, sequence 1', async () => JSON.stringify(await frrPaths()) === JSON.stringify([{ nextHop: UNDER.c, seq: 1 }]), { timeoutMs: 10_000 }).catch(explain);
      const c = await show('c');
      expect(c.localRoutes.filter((r: any) => r.mac === MAC)).toEqual([{ mac: MAC, ip: '', seq: 1, sticky: false }]);
      const a = await show('a');
      expect(a.localRoutes.filter((r: any) => r.mac === MAC)).toEqual([]);
      expect(a.remoteMacList.filter((m: any) => m.mac === MAC)).toMatchObject([{ remote: UNDER.c, seq: 1 }]);
      expect(await fdbPort('a')).toBe(`vx-${UNDER.c}`);
      expect(await fdbPort('c')).toBe(TAP.c);
      await waitFor('B: the MAC toward C', async () => (await bFdb()).includes(`dst ${UNDER.c}`), { timeoutMs: 5000 });
      expect(await bFdb()).toMatch(/extern_learn/);

      // C -> A: sequence 2, C's local entry goes.
      const seq1 = Math.max(...ping.pingSeqs());
      await unplugVm(TAP.c);
      await plugVm(HOST.a, TAP.a);
      const { lost: lost2 } = await pingLossSince(ping, seq1);
      process.stdout.write(`evpn-mobility: C -> A, B's pings (every 100 ms) lost ${lost2}: ~${lost2 * 100} ms, ${(lost2 * 100 / AGEING_MS).toFixed(5)} of the ageing time (load ${loadAvg()})\n`);
      expect(lost2).toBeLessThanOrEqual(30);
      await waitFor('FRR: only A\'s route, sequence 2', async () => JSON.stringify(await frrPaths()) === JSON.stringify([{ nextHop: UNDER.a, seq: 2 }]), { timeoutMs: 10_000 }).catch(explain);
      expect((await show('a')).localRoutes.filter((r: any) => r.mac === MAC)).toEqual([{ mac: MAC, ip: '', seq: 2, sticky: false }]);
      const c2 = await show('c');
      expect(c2.localRoutes.filter((r: any) => r.mac === MAC)).toEqual([]);
      expect(c2.remoteMacList.filter((m: any) => m.mac === MAC)).toMatchObject([{ remote: UNDER.a, seq: 2 }]);
      expect(await fdbPort('c')).toBe(`vx-${UNDER.a}`);
      expect(await fdbPort('a')).toBe(TAP.a);
      await waitFor('B: the MAC toward A again', async () => (await bFdb()).includes(`dst ${UNDER.a}`), { timeoutMs: 5000 });
    } finally {
      await ping.stop();
    }
  }, 120_000);

  it('two VMs with one MAC behind A and C: A flags it at its 5th move and holds it, the sequences stop growing; clear-dup resumes mobility', async () => {
    // The CLI is a node process (about 2 s at load 12): polls read FRR (vtysh) and the metrics (curl) instead.
    const v = await waitFor('A: session with FRR', async () => {
      const j = (await d.a.ok(['evpn', 'show'], { json: true })).json;
      return j.neighbors[0]?.state === 'established' ? j : undefined;
    }, { timeoutMs: 45_000 });
    expect(v.dupDetect).toMatchObject({ enabled: true, maxMoves: 5, windowSeconds: 180, freeze: 'permanent', duplicates: 0 });
    await waitFor('C: session with FRR', async () => (await d.c.ok(['evpn', 'show'], { json: true })).json.neighbors[0]?.state === 'established', { timeoutMs: 45_000 });
    const metrics = (h: 'a' | 'c'): Promise<string> => nsExec(HOST[h], `curl -sf http://127.0.0.1:${metricsPort}/metrics`);
    const flaggedIn = async (h: 'a' | 'c'): Promise<boolean> => /vswitch_evpn_duplicate_macs\{vni="100"\} 1/.test(await metrics(h));
    const dups = async (h: 'a' | 'c'): Promise<any[]> => (await show(h)).duplicates.filter((e: any) => e.mac === DUP_MAC);
    /** The MAC's MAC-only paths in FRR: every host's advertisement reaches it. */
    const paths = async (): Promise<{ nextHop: string; seq: number }[]> => (await frr.macRoutes()).filter((r) => r.mac === DUP_MAC && r.ip === '').map(({ nextHop, seq }) => ({ nextHop, seq }));
    const maxSeq = async (): Promise<number> => Math.max(0, ...(await paths()).map((p) => p.seq));
    const dupState = async (): Promise<string> => JSON.stringify({
      frr: await paths(),
      a: { dups: await dups('a'), local: (await show('a')).localRoutes.filter((r: any) => r.mac === DUP_MAC), remote: (await show('a')).remoteMacList.filter((r: any) => r.mac === DUP_MAC) },
      c: { local: (await show('c')).localRoutes.filter((r: any) => r.mac === DUP_MAC), remote: (await show('c')).remoteMacList.filter((r: any) => r.mac === DUP_MAC) },
    });
    const why = async (e: Error): Promise<never> => { throw new Error(`${e.message}\n${await dupState()}`); };

    // C's VM first: the MAC is remote at A before A's VM appears (A's moves: 1 back, 2 away, ... 5 back).
    await plugVm(HOST.c, TAP2.c, { ns: DUP_NS.c, mac: DUP_MAC, ip: DUP_IP.c });
    await waitFor('FRR: the MAC behind C', async () => JSON.stringify(await paths()) === JSON.stringify([{ nextHop: UNDER.c, seq: 0 }]), { timeoutMs: 15_000 }).catch(why);
    await waitFor('A: the MAC toward C', async () => (await show('a')).remoteMacList.some((m: any) => m.mac === DUP_MAC && m.remote === UNDER.c), { timeoutMs: 15_000 }).catch(why);
    await plugVm(HOST.a, TAP2.a, { ns: DUP_NS.a, mac: DUP_MAC, ip: DUP_IP.a });
    const vm = { a: announcer(DUP_NS.a, TAP2.a, DUP_IP.a), c: announcer(DUP_NS.c, TAP2.c, DUP_IP.c) };
    try {
      const t0 = Date.now();
      await waitFor('A flags the MAC as a duplicate', () => flaggedIn('a'), { timeoutMs: 60_000, intervalMs: 100 }).catch(why);
      process.stdout.write(`evpn-mobility: duplicate MAC flagged on A after ${Date.now() - t0} ms of ping-pong, sequence ${await maxSeq()} (load ${loadAvg()})\n`);
      expect(await metrics('a')).toMatch(/vswitch_evpn_duplicate_macs_detected_total 1/);
      expect(d.a.logs.find((l) => l.obj?.event === 'evpn_duplicate_mac')?.obj).toMatchObject({ vni: 100, mac: DUP_MAC, to: 'local', moves: 5, windowSeconds: 180, action: 'held' });

      // Both VMs go on announcing: the route no longer ping-pongs. What was in flight at the
      // detection lands first: C (no detection) learns its VM once more over A's held route and
      // advertises one sequence above it, which A refuses. Waited for by its value, not by a
      // quiet second (a pause of a second was seen before C's move at load 4: CI run of s26).
      const aSeq = (await show('a')).localRoutes.find((r: any) => r.mac === DUP_MAC)?.seq;
      expect(aSeq, await dupState()).toBe(5);
      const seq = Number(aSeq) + 1;
      await waitFor(`C's one more move (sequence ${seq}) in FRR`, async () => (await maxSeq()) === seq, { timeoutMs: 20_000, intervalMs: 200 }).catch(why);
      const sentBefore = { a: sent(vm.a), c: sent(vm.c) };
      await waitFor('10 more announcements from each VM', () => sent(vm.a) >= sentBefore.a + 10 && sent(vm.c) >= sentBefore.c + 10, { timeoutMs: 30_000, intervalMs: 100 });
      expect(await maxSeq(), await dupState()).toBe(seq);
      const after = (await d.a.ok(['evpn', 'show'], { json: true })).json;
      expect(after.vnis[0].duplicates, 'flagged in evpn show --json').toMatchObject([{ mac: DUP_MAC, moves: 5, lastMoveTo: 'local', held: true }]);
      expect(after.dupDetect).toMatchObject({ duplicates: 1, detectedTotal: 1 });
      const heldMoves = after.vnis[0].duplicates[0].heldMoves;
      // Held local: C's higher route did not take the MAC (A's own route stays, C's is refused).
      expect(after.rejected.duplicate_mac, await dupState()).toBeGreaterThan(0);
      expect(heldMoves).toBeGreaterThan(0);
      expect(after.vnis[0].localRoutes.filter((r: any) => r.mac === DUP_MAC)).toMatchObject([{ seq: 5 }]);
      process.stdout.write(`evpn-mobility: held at sequence ${seq} while both VMs announced 10 more times: ${heldMoves} moves held, ${after.rejected.duplicate_mac} routes refused as duplicate_mac on A (load ${loadAvg()})\n`);

      // The corrective action: the duplicate VM on C goes, and each host's flag is cleared.
      await vm.c.stop();
      await unplugVm(TAP2.c, DUP_NS.c);
      expect((await d.a.ok(['evpn', 'clear-dup', DUP_MAC], { json: true })).json).toEqual({ cleared: 1, macs: [DUP_MAC] });
      await waitFor('the clear logged', () => d.a.logs.some((l) => l.obj?.event === 'evpn_duplicate_cleared' && l.obj.mac === DUP_MAC && l.obj.why === 'clear'), { timeoutMs: 5000 });
      expect(await flaggedIn('a')).toBe(false);
      await waitFor('FRR: only A\'s route for the MAC', async () => {
        const p = await paths();
        return p.length === 1 && p[0].nextHop === UNDER.a && p[0].seq >= seq;
      }, { timeoutMs: 15_000 }).catch(why);
      const settled = await maxSeq();

      // Normal mobility again: the remaining VM moves from A to C and is followed, not held.
      await vm.a.stop();
      await unplugVm(TAP2.a, DUP_NS.a);
      await plugVm(HOST.c, TAP2.c, { ns: DUP_NS.a, mac: DUP_MAC, ip: DUP_IP.a });
      await waitFor('FRR: only C\'s route, one sequence higher', async () => JSON.stringify(await paths()) === JSON.stringify([{ nextHop: UNDER.c, seq: settled + 1 }]), { timeoutMs: 15_000 }).catch(why);
      expect((await show('a')).remoteMacList.filter((m: any) => m.mac === DUP_MAC)).toMatchObject([{ remote: UNDER.c, seq: settled + 1 }]);
      expect(await flaggedIn('a')).toBe(false);

      // The settings are config keys a reload changes in place (gobgpd not restarted).
      const pid = after.gobgpd.pid;
      const cfg = parse(readFileSync(d.a.configFile, 'utf8'));
      cfg.evpn.dupDetect = { maxMoves: 3, windowSeconds: 60, freeze: 600 };
      writeFileSync(d.a.configFile, toYaml(cfg));
      await d.a.ok(['reload']);
      const re = (await d.a.ok(['evpn', 'show'], { json: true })).json;
      expect(re.dupDetect).toMatchObject({ enabled: true, maxMoves: 3, windowSeconds: 60, freeze: 600 });
      expect(re.gobgpd.pid).toBe(pid);
    } finally {
      await vm.a.stop();
      await vm.c.stop();
    }
  }, 120_000);
});
