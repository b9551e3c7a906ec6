/*
 * EVPN graceful restart between two vswitch hosts (issue 16 item 5: "stopping
 * gobgpd keeps existing flows forwarding"). Hosts A and C: a vswitch daemon each
 * with its managed gobgpd, peering directly in iBGP over a veth underlay, a TAP VM
 * each in VLAN 10 = VNI 100, learning from the overlay off. C's VM pings A's every
 * 100 ms while A's gobgpd is killed (-9) and restarted by A's daemon: C's gobgpd, a
 * graceful-restart helper, keeps A's routes (stale) through the restart, so C keeps
 * forwarding to A; A keeps what it installed (service.ts). Unlike FRR 8.4 (README
 * "BGP EVPN"), nothing is withdrawn: the MAC never leaves C's table and the loss is
 * bounded by a handful of pings (count printed with the load).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, startDaemon } from './helpers/daemon.js';
import { loadAvg, pingLossSince } from './helpers/evpn.js';
import { addNamespace, cleanup, ifname, nsExec, nsExecR, nsname, sh, waitFor } from './helpers/run.js';
import { continuousPing, quietNamespace } from './helpers/vm.js';

const NET = '10.236';
const UNDER = { a: `${NET}.0.1`, c: `${NET}.0.3` };
const VM = { a: `${NET}.1.11`, c: `${NET}.1.13` };
const ASN = 65000;
const VM_MTU = 1450;
const BR = 'br0';
const HOST = { a: nsname('ga'), c: nsname('gc') };
const VM_NS = { a: nsname('gva'), c: nsname('gvc') };
const TAP = { a: ifname('gta'), c: ifname('gtc') };
const UL = { a: ifname('gua'), c: ifname('guc') };

describe('EVPN graceful restart between two vswitch hosts', () => {
  const d: Record<'a' | 'c', Daemon> = {} as never;
  const mac: Record<'a' | 'c', string> = { a: '', c: '' };

  beforeAll(async () => {
    for (const ns of [HOST.a, HOST.c, VM_NS.a, VM_NS.c]) {
      await addNamespace(ns);
      await quietNamespace(ns);
    }
    await sh(`ip link add ${UL.a} netns ${HOST.a} type veth peer name ${UL.c} netns ${HOST.c}`);
    for (const h of ['a', 'c'] as const) {
      await nsExec(HOST[h], `ip link set lo up && ip link set ${UL[h]} up && ip addr add ${UNDER[h]}/24 dev ${UL[h]}`);
    }
    for (const h of ['a', 'c'] as const) {
      const other = h === 'a' ? UNDER.c : UNDER.a;
      d[h] = await startDaemon({
        bridges: { [BR]: { ports: { [TAP[h]]: { type: 'tap', vlan: { mode: 'access', vid: 10 } } } } },
        vxlan: { local: UNDER[h], interface: UL[h], bridges: { [BR]: [{ vni: 100, vlan: 10, flood: [] }] } },
        evpn: { asn: ASN, neighbors: [{ address: other, remoteAs: ASN }] },
      }, { netns: HOST[h] });
      await waitFor(`TAP ${TAP[h]}`, async () => (await nsExecR(HOST[h], `ip link show ${TAP[h]}`)).code === 0);
      await nsExec(HOST[h], `ip link set ${TAP[h]} netns ${VM_NS[h]}`);
      await nsExec(VM_NS[h], `ip link set ${TAP[h]} mtu ${VM_MTU} up && ip addr add ${VM[h]}/16 dev ${TAP[h]}`);
      mac[h] = (await nsExec(VM_NS[h], `cat /sys/class/net/${TAP[h]}/address`)).trim();
    }
  }, 120_000);

  afterAll(async () => {
    await d.a?.stop();
    await d.c?.stop();
    await cleanup();
  });

  const show = async (h: 'a' | 'c'): Promise<any> => (await d[h].ok(['evpn', 'show'], { json: true })).json;
  const remoteOf = async (h: 'a' | 'c', m: string): Promise<any> => (await show(h)).vnis[0].remoteMacList.find((r: any) => r.mac === m);

  it('kill -9 of A\'s gobgpd: C\'s gobgpd keeps A\'s routes (helper), C\'s VM keeps reaching A\'s', async () => {
    for (const h of ['a', 'c'] as const) {
      await waitFor(`${h}: session`, async () => (await show(h)).neighbors[0]?.state === 'established', { timeoutMs: 45_000 });
    }
    // Both ends offer graceful restart for l2vpn-evpn and see the other's (GoBGP lists the family;
    // under load its ListPeer may show the session before the peer's capability).
    await waitFor('C sees A\'s graceful restart', async () => {
      const gr = (await show('c')).neighbors[0].gracefulRestart;
      return gr?.advertised === true && gr?.received === true;
    }, { timeoutMs: 10_000 });
    expect((await show('c')).neighbors[0].gracefulRestart).toMatchObject({ advertised: true, received: true });
    const ping = continuousPing(VM_NS.c, VM.a, 0.1);
    try {
      await waitFor('C\'s VM reaches A\'s', () => ping.pingSeqs().length >= 3, { timeoutMs: 20_000 });
      await waitFor('C: A\'s VM MAC toward A', async () => (await remoteOf('c', mac.a))?.remote === UNDER.a, { timeoutMs: 10_000 });
      const s0 = Math.max(...ping.pingSeqs());
      const pid = (await show('a')).gobgpd.pid;
      const t0 = Date.now();
      await sh(`kill -9 ${pid}`);
      // Through the restart C never loses the MAC (a withdrawal would remove it at once).
      let gone = 0;
      await waitFor('A\'s gobgpd back, session established', async () => {
        if ((await remoteOf('c', mac.a))?.remote !== UNDER.a) gone++;
        const a = await show('a');
        return a.gobgpd.pid !== pid && a.connected && a.neighbors[0]?.state === 'established';
      }, { timeoutMs: 30_000, intervalMs: 100 });
      const back = Date.now() - t0;
      const { lost, sent } = await pingLossSince(ping, s0);
      process.stdout.write(`evpn-gr: kill -9 of A's gobgpd: session back after ${back} ms; C's pings to A (every 100 ms) lost ${lost} of ${sent}; C's entry for A's VM missing in ${gone} polls (load ${loadAvg()})\n`);
      expect(gone).toBe(0);
      expect(lost).toBeLessThanOrEqual(3);
      expect(await remoteOf('c', mac.a)).toMatchObject({ remote: UNDER.a });
      expect(await remoteOf('a', mac.c)).toMatchObject({ remote: UNDER.c });
    } finally {
      await ping.stop();
    }
  }, 90_000);
});
