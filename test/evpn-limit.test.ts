/*
 * EVPN route limits in gobgpd (issue 16: "a flood of ... type-2 routes [is] refused or
 * bounded and counted"; daemon/evpn/prefix-limit.ts). Hosts A and C: a vswitch daemon
 * each with its managed gobgpd, peering in iBGP over a veth underlay, a TAP VM each in
 * VLAN 10 = VNI 100. A second neighbour of A, X (a second address in C's namespace),
 * is the hand-written speaker (scripts/bgp-evpn-inject.py) with `maxPrefixes: 50`: it
 * sends 30 routes (installed), then 100 more. gobgpd closes X's session with a
 * NOTIFICATION Cease / maximum prefixes (6/1), withdraws X's routes, and holds X down
 * (maxPrefixesRestart 0); A counts and shows it (evpn show, metrics, log). C's VM
 * keeps pinging A's throughout (C's routes are untouched), and gobgpd holds no more of
 * X's routes. A reload raising X's limit lets X connect again without touching C's session,
 * and a limit changed on an established session is applied without resetting it.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, startDaemon, toYaml } from './helpers/daemon.js';
import { loadAvg, pingLossSince } from './helpers/evpn.js';
import { addNamespace, cleanup, ifname, nsExec, nsExecR, nsname, REPO, sh, tempDir, waitFor } from './helpers/run.js';
import { Background, continuousPing, quietNamespace } from './helpers/vm.js';

const NET = '10.237';
const UNDER = { a: `${NET}.0.1`, c: `${NET}.0.3`, x: `${NET}.0.9` };
const VM = { a: `${NET}.1.11`, c: `${NET}.1.13` };
const ASN = 65000;
const LIMIT = 50;
const BR = 'br0';
const HOST = { a: nsname('la'), c: nsname('lc') };
const VM_NS = { a: nsname('lva'), c: nsname('lvc') };
const TAP = { a: ifname('lta'), c: ifname('ltc') };
const UL = { a: ifname('lua'), c: ifname('luc') };

const mk = (i: number): string => `02:ee:00:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}:01`;
const routes = (from: number, n: number): unknown[] => Array.from({ length: n }, (_, k) => ({ mac: mk(from + k), vni: 100, rt: `${ASN}:100`, rd: `${UNDER.x}:100`, seq: null }));

describe('EVPN: a neighbour past its route limit in gobgpd', () => {
  const d: Record<'a' | 'c', Daemon> = {} as never;
  const mac: Record<'a' | 'c', string> = { a: '', c: '' };
  let speaker: Background | undefined;

  beforeAll(async () => {
    for (const ns of [HOST.a, HOST.c, VM_NS.a, VM_NS.c]) {
      await addNamespace(ns);
      await quietNamespace(ns);
    }
    await sh(`ip link add ${UL.a} netns ${HOST.a} type veth peer name ${UL.c} netns ${HOST.c}`);
    for (const h of ['a', 'c'] as const) {
      await nsExec(HOST[h], `ip link set lo up && ip link set ${UL[h]} up && ip addr add ${UNDER[h]}/24 dev ${UL[h]}`);
    }
    await nsExec(HOST.c, `ip addr add ${UNDER.x}/24 dev ${UL.c}`);
    for (const h of ['a', 'c'] as const) {
      const neighbors = h === 'a'
        ? [{ address: UNDER.c, remoteAs: ASN }, { address: UNDER.x, remoteAs: ASN, maxPrefixes: LIMIT, maxPrefixesRestart: 0 }]
        : [{ address: UNDER.a, remoteAs: ASN }];
      d[h] = await startDaemon({
        metrics: { listen: '127.0.0.1:9464' },
        bridges: { [BR]: { ports: { [TAP[h]]: { type: 'tap', vlan: { mode: 'access', vid: 10 } } } } },
        vxlan: { local: UNDER[h], interface: UL[h], bridges: { [BR]: [{ vni: 100, vlan: 10, flood: [] }] } },
        evpn: { asn: ASN, neighbors },
      }, { netns: HOST[h] });
      await waitFor(`TAP ${TAP[h]}`, async () => (await nsExecR(HOST[h], `ip link show ${TAP[h]}`)).code === 0);
      await nsExec(HOST[h], `ip link set ${TAP[h]} netns ${VM_NS[h]}`);
      await nsExec(VM_NS[h], `ip link set ${TAP[h]} mtu 1450 up && ip addr add ${VM[h]}/16 dev ${TAP[h]}`);
      mac[h] = (await nsExec(VM_NS[h], `cat /sys/class/net/${TAP[h]}/address`)).trim();
    }
  }, 120_000);

  afterAll(async () => {
    await speaker?.stop();
    await d.a?.stop();
    await d.c?.stop();
    await cleanup();
  });

  const show = async (): Promise<any> => (await d.a.ok(['evpn', 'show'], { json: true })).json;
  const nb = (v: any, a: string): any => v.neighbors.find((n: any) => n.address === a);
  const fromX = (v: any): number => v.vnis[0].remoteMacList.filter((r: any) => r.remote === UNDER.x).length;
  const startSpeaker = (phases: unknown[]): Background => {
    const file = join(tempDir('lx'), 'phases.json');
    writeFileSync(file, JSON.stringify(phases));
    return new Background(HOST.c, `python3 ${REPO}/test/scripts/bgp-evpn-inject.py ${UNDER.x} ${UNDER.a} ${ASN} ${file}`);
  };

  it('closes the session (Cease 6/1), withdraws its routes, holds it down and counts it; the VMs keep forwarding; a reload lets it back', async () => {
    await waitFor('A: session with C', async () => nb(await show(), UNDER.c)?.state === 'established', { timeoutMs: 45_000 });
    expect(nb(await show(), UNDER.x).prefixLimit).toMatchObject({ maxPrefixes: LIMIT, exceeded: 0, heldDown: false });
    expect(nb(await show(), UNDER.c).prefixLimit).toMatchObject({ maxPrefixes: 20_000 });
    const go = join(tempDir('lg'), 'go');
    speaker = startSpeaker([{ wait: null, routes: routes(0, 30) }, { wait: go, routes: routes(30, 100) }]);
    await waitFor('X\'s 30 routes installed', async () => fromX(await show()) === 30, { timeoutMs: 45_000 });
    const ping = continuousPing(VM_NS.c, VM.a, 0.1);
    try {
      await waitFor('C\'s VM reaches A\'s', () => ping.pingSeqs().length >= 3, { timeoutMs: 20_000 });
      const s0 = Math.max(...ping.pingSeqs());
      const t0 = Date.now();
      writeFileSync(go, '');
      const v = await waitFor('X held down for its limit, its routes withdrawn', async () => {
        const w = await show();
        const x = nb(w, UNDER.x);
        // received: gobgpd's count for X (ListPeer, polled every 2 s): none of X's routes held any more.
        return x.prefixLimit.heldDown && x.state !== 'established' && fromX(w) === 0 && x.received === 0 ? w : undefined;
      }, { timeoutMs: 30_000 });
      const cut = Date.now() - t0;
      await waitFor('the speaker got the NOTIFICATION', () => /notification \d+\/\d+/.test(speaker!.out), { timeoutMs: 15_000 });
      expect(speaker.out).toMatch(/notification 6\/1/); // Cease, maximum number of prefixes reached
      const x = nb(v, UNDER.x);
      expect(x.prefixLimit).toMatchObject({ maxPrefixes: LIMIT, exceeded: 1, heldDown: true, restartAt: '' });
      expect(x.prefixLimit.lastExceeded).not.toBe('');
      expect(v.vnis[0].remoteMacList.find((r: any) => r.mac === mac.c)).toMatchObject({ remote: UNDER.c });
      expect(nb(v, UNDER.c).state).toBe('established');
      expect(d.a.logsMatching('evpn_prefix_limit_exceeded')).toHaveLength(1);
      const metrics = await nsExec(HOST.a, 'curl -sf http://127.0.0.1:9464/metrics');
      const q = UNDER.x.replace(/\./g, '\\.');
      expect(metrics).toMatch(new RegExp(`vswitch_evpn_neighbor_prefix_limit_exceeded_total\\{neighbor="${q}"\\} 1`));
      expect(metrics).toMatch(new RegExp(`vswitch_evpn_neighbor_prefix_limit_down\\{neighbor="${q}"\\} 1`));
      expect(metrics).toMatch(new RegExp(`vswitch_evpn_neighbor_max_prefixes\\{neighbor="${q}"\\} ${LIMIT}`));
      // Held down: past gobgpd's idle hold time (5 s) it still neither connects nor accepts X.
      await new Promise((r) => setTimeout(r, 7000));
      const later = nb(await show(), UNDER.x);
      expect(later.state).not.toBe('established');
      expect(later.prefixLimit).toMatchObject({ exceeded: 1, heldDown: true });
      const { lost, sent } = await pingLossSince(ping, s0);
      process.stdout.write(`evpn-limit: X past its limit (${LIMIT}): session cut and its routes withdrawn ${cut} ms after the excess went out; C's pings to A's VM (every 100 ms) lost ${lost} of ${sent} (load ${loadAvg()})\n`);
      expect(lost).toBeLessThanOrEqual(3);

      // A reload raising X's limit: gobgpd takes it in place and lets X connect again; C's session stays.
      await speaker.stop();
      const cfg = parse(readFileSync(d.a.configFile, 'utf8'));
      cfg.evpn.neighbors[1].maxPrefixes = 1000;
      writeFileSync(d.a.configFile, toYaml(cfg));
      const s1 = Math.max(...ping.pingSeqs());
      await d.a.ok(['reload']);
      await waitFor('gobgpd lets X connect again', async () => !nb(await show(), UNDER.x).prefixLimit.heldDown, { timeoutMs: 10_000 });
      expect(nb(await show(), UNDER.x).prefixLimit).toMatchObject({ maxPrefixes: 1000, exceeded: 1, heldDown: false });
      // gobgpd first waits its idle hold time (5 s; a connection before that is closed).
      await waitFor('gobgpd accepts X again', async () => nb(await show(), UNDER.x).state === 'active', { timeoutMs: 15_000 });
      speaker = startSpeaker([{ wait: null, routes: routes(0, 130) }]);
      // received: gobgpd's count (ListPeer, polled every 2 s) catches up with the installed routes.
      const back = await waitFor('X back with its 130 routes', async () => {
        const w = await show();
        return fromX(w) === 130 && nb(w, UNDER.x).received === 130 ? w : undefined;
      }, { timeoutMs: 45_000 });
      expect(nb(back, UNDER.x)).toMatchObject({ state: 'established', received: 130 });
      expect(nb(back, UNDER.x).prefixLimit).toMatchObject({ exceeded: 1, heldDown: false });
      expect(nb(back, UNDER.c).state).toBe('established');
      const after = await pingLossSince(ping, s1);
      expect(after.lost).toBeLessThanOrEqual(3);

      // A limit changed on an established session is applied without resetting it (gobgpd's UpdatePeer).
      const mark = d.a.logs.length;
      cfg.evpn.neighbors[1].maxPrefixes = 2000;
      writeFileSync(d.a.configFile, toYaml(cfg));
      await d.a.ok(['reload']);
      await waitFor('the update went to gobgpd', () => d.a.logs.slice(mark).some((l) => /update prefix limit configuration/.test(l.raw)), { timeoutMs: 10_000 });
      await new Promise((r) => setTimeout(r, 2000));
      const peerEvents = d.a.logs.slice(mark).filter((l) => l.obj?.event === 'evpn_peer_state' || /Peer Down/.test(l.raw));
      expect(peerEvents.map((l) => l.raw)).toEqual([]);
      expect(nb(await show(), UNDER.x)).toMatchObject({ state: 'established', received: 130, prefixLimit: { maxPrefixes: 2000 } });
    } finally {
      await ping.stop();
    }
  }, 150_000);
});
