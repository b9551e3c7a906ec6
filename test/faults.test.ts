/*
 * Faults the daemon recovers from by itself (issue 6, item 4).
 *
 * One daemon: bridge br0 with an attach port (a veth whose peer is in a "lan"
 * namespace, VLAN 1), TAP VMs vm1 and vm2 (VLAN 1), and n1 (VLAN 10) on router r0's
 * network net10, whose uplink is a veth to an "internet" namespace (NAT).
 *
 * - The attached veth is deleted while vm1 pings the lan: the port goes down
 *   (link down, reason in `show`), and when a veth of that name is created again
 *   (its peer in a fresh namespace) it comes back up by itself within seconds and
 *   the new namespace reaches vm1.
 * - vm2's TAP is deleted in its namespace: the daemon recreates it in its own
 *   namespace at once (port down, then up, both logged); the test moves the new
 *   TAP into a fresh namespace and pings through it.
 * - The uplink's root-side veth set down: NAT from n1 to the internet stops; set
 *   up: it works again. The uplink veth deleted: NAT stops and the uplink shows
 *   down; recreated: the router re-attaches (uplink.poll) and NAT works again.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, findPort, portState, startDaemon } from './helpers/daemon.js';
import { makeInternet, type Internet } from './helpers/inet.js';
import {
  addNamespace, addVeth, cleanup, ifname, nsExec, nsname, q, sh, tempDir, untrackLink, waitFor,
} from './helpers/run.js';
import {
  Background, continuousPing, linkExists, makeVm, plumb, ping, pingUntil, quietNamespace, waitLink, type Vm,
} from './helpers/vm.js';

const BR = 'br0';
const UP = ifname('att');
const LAN_IF = ifname('lan');
const LAN_IP = '10.0.0.100';
const T = { vm1: ifname('vm1'), vm2: ifname('vm2'), n1: ifname('n1') };
const PUB = '198.51.100.2';
const INET = '198.51.100.1';
const GW10 = '10.60.10.1';

/** A veth UP (root, up, no IPv6) <-> LAN_IF in namespace `ns` (created) with LAN_IP. */
async function makeLan(ns: string): Promise<void> {
  await addVeth(UP, LAN_IF);
  await addNamespace(ns);
  await quietNamespace(ns);
  await sh(`ip link set ${LAN_IF} netns ${ns}`);
  untrackLink(LAN_IF);
  await nsExec(ns, `ip link set ${LAN_IF} up && ip addr add ${LAN_IP}/24 dev ${LAN_IF}`);
  await sh(`sysctl -qw net.ipv6.conf.${UP}.disable_ipv6=1; ip link set ${UP} up`);
}

/** The internet's veth again, with the same names and addresses as makeInternet made. */
async function remakeInternetLink(inet: Internet): Promise<void> {
  await addVeth(inet.uplink, inet.ifname);
  await sh(`sysctl -qw net.ipv6.conf.${inet.uplink}.disable_ipv6=1; ip link set ${q(inet.uplink)} up`);
  await sh(`ip link set ${q(inet.ifname)} netns ${q(inet.ns)}`);
  untrackLink(inet.ifname);
  await nsExec(inet.ns, `ip link set ${q(inet.ifname)} up && ip addr add ${INET}/24 dev ${q(inet.ifname)}`);
}

describe('faults: devices deleted and recreated, uplink down and up', () => {
  let d: Daemon;
  let vm1: Vm, vm2: Vm, n1: Vm;
  let inet: Internet;
  const lan = nsname('lan');
  const lan2 = nsname('lan2');
  let bg: Background | undefined;
  let vm2ns = '';

  const portOf = async (name: string) => findPort(await d.showJson(BR), name);
  const uplinkView = async (): Promise<any> => (await d.ok(['router', 'show', 'r0'], { json: true })).json[0].uplink;

  beforeAll(async () => {
    await makeLan(lan);
    inet = await makeInternet('inet');
    d = await startDaemon({
      stateDir: tempDir('state'),
      bridges: {
        [BR]: {
          ports: {
            [UP]: { type: 'attach' },
            [T.vm1]: { type: 'tap' },
            [T.vm2]: { type: 'tap' },
            [T.n1]: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
          },
        },
      },
      routers: {
        r0: {
          uplink: { interface: inet.uplink, address: `${PUB}/24`, gateway: INET },
          networks: { net10: { bridge: BR, vlan: 10, address: `${GW10}/24` } },
        },
      },
    });
    vm1 = await makeVm('vm1', T.vm1, '10.0.0.1/24');
    vm2 = await makeVm('vm2', T.vm2, '10.0.0.2/24');
    n1 = await makeVm('n1', T.n1, '10.60.10.11/24');
    await nsExec(n1.ns, `ip route add default via ${GW10}`);
  });

  afterAll(async () => {
    await bg?.stop();
    await d?.stop();
    await cleanup();
  });

  it('an attached veth deleted and recreated: the port goes down, then back up by itself, and forwards', async () => {
    expect(await pingUntil(vm1.ns, LAN_IP), 'vm1 -> lan').toBe(true);
    bg = continuousPing(vm1.ns, LAN_IP, 0.2);
    await waitFor('the continuous ping to answer', () => bg!.pingSeqs().length >= 3);

    const downs = d.logsMatching('port_down').length;
    await nsExec(lan, `ip link del ${LAN_IF}`);
    untrackLink(UP);
    await waitFor('the attach port down', async () => portState(await portOf(UP)) === 'down', { timeoutMs: 10_000, intervalMs: 100 });
    const down = await portOf(UP);
    expect(String(down.downReason), JSON.stringify(down)).toMatch(/gone/);
    expect(String(down.recovering ?? ''), JSON.stringify(down)).toMatch(/waiting for/);
    await waitFor('a port_down log line', () => d.logsMatching('port_down').length > downs);
    expect(d.logsMatching('port_down').at(-1)!.raw).toContain(UP);
    // Still down a while later: nothing to attach to.
    await new Promise((r) => setTimeout(r, 1500));
    expect(portState(await portOf(UP))).toBe('down');
    expect(await ping(vm1.ns, vm2.ip, { count: 2 }), 'vm1 -> vm2 meanwhile').toBe(true);

    const t0 = Date.now();
    await makeLan(lan2);
    await waitFor('the attach port back up', async () => portState(await portOf(UP)) === 'up', { timeoutMs: 5000, intervalMs: 100 });
    console.log(`attach port up again ${Date.now() - t0} ms after the veth was recreated`);
    const p = await portOf(UP);
    expect(p.reattached, JSON.stringify(p)).toBe(1);
    expect(d.logsMatching('port_up').some((l) => l.raw.includes(UP) && l.raw.includes('interface back'))).toBe(true);
    expect(await pingUntil(lan2, vm1.ip), 'new lan namespace -> vm1').toBe(true);
    expect(await pingUntil(vm1.ns, LAN_IP, 15_000), 'vm1 -> new lan namespace').toBe(true);
    // The ping that ran all along answers again.
    const n = bg!.pingSeqs().length;
    await waitFor('the continuous ping to answer again', () => bg!.pingSeqs().length > n + 2, { timeoutMs: 15_000 });
    await bg!.stop();
    bg = undefined;
    expect(d.alive()).toBe(true);
  });

  it('a TAP deleted from under the daemon is recreated, and works once moved into a namespace', async () => {
    const downs = d.logsMatching('port_down').length;
    const ups = d.logsMatching('port_up').length;
    await nsExec(vm2.ns, `ip link del ${T.vm2}`);
    await waitFor('a port_down log line for vm2', () => d.logsMatching('port_down').slice(downs).some((l) => l.raw.includes(T.vm2)));
    await waitFor('a port_up log line for vm2 (TAP recreated)', () => d.logsMatching('port_up').slice(ups).some((l) => l.raw.includes(T.vm2) && l.raw.includes('TAP recreated')));
    await waitLink(T.vm2);
    const p = await portOf(T.vm2);
    expect(portState(p), JSON.stringify(p)).toBe('up');
    expect(p.recreated, JSON.stringify(p)).toBe(1);
    expect(d.alive()).toBe(true);
    // The "hypervisor" moves the new TAP into a fresh VM.
    const ns = nsname('vm2b');
    await plumb(ns, T.vm2, '10.0.0.2/24');
    expect(await pingUntil(ns, vm1.ip), 'new vm2 -> vm1').toBe(true);
    expect(await pingUntil(ns, LAN_IP), 'new vm2 -> lan (through the reattached port)').toBe(true);
    // And again: the recreated TAP recovers too (its namespace deleted this time).
    const downs2 = d.logsMatching('port_down').length;
    await sh(`ip netns del ${ns}`);
    await waitFor('vm2 down again', () => d.logsMatching('port_down').slice(downs2).some((l) => l.raw.includes(T.vm2)), { timeoutMs: 10_000 });
    await waitLink(T.vm2);
    await waitFor('vm2 up again', async () => portState(await portOf(T.vm2)) === 'up');
    expect((await portOf(T.vm2)).recreated).toBe(2);
    const ns3 = nsname('vm2c');
    vm2ns = ns3;
    await plumb(ns3, T.vm2, '10.0.0.2/24');
    expect(await pingUntil(ns3, vm1.ip), 'third vm2 -> vm1').toBe(true);
  });

  it('the uplink veth down stops NAT, up resumes it', async () => {
    expect(await pingUntil(n1.ns, INET), 'n1 -> internet through NAT').toBe(true);
    await sh(`ip link set ${q(inet.uplink)} down`);
    expect(await ping(n1.ns, INET, { count: 3, timeoutSec: 1 }), 'n1 -> internet with the uplink down').toBe(false);
    await sh(`ip link set ${q(inet.uplink)} up`);
    const t0 = Date.now();
    expect(await pingUntil(n1.ns, INET, 15_000), 'n1 -> internet after up').toBe(true);
    console.log(`NAT back ${Date.now() - t0} ms after link up`);
    expect(d.alive()).toBe(true);
  });

  it('the uplink veth deleted and recreated: the router re-attaches and NAT resumes', async () => {
    const before = await uplinkView();
    await sh(`ip link del ${q(inet.uplink)}`);
    await waitFor('the uplink down', async () => /^down/.test(String((await uplinkView()).state)), { timeoutMs: 10_000, intervalMs: 100 });
    expect(await ping(n1.ns, INET, { count: 2, timeoutSec: 1 }), 'n1 -> internet without an uplink').toBe(false);
    await remakeInternetLink(inet);
    const t0 = Date.now();
    await waitFor('the uplink up again', async () => (await uplinkView()).state === 'up', { timeoutMs: 10_000, intervalMs: 100 });
    expect(await pingUntil(n1.ns, INET, 15_000), 'n1 -> internet after the veth came back').toBe(true);
    console.log(`NAT back ${Date.now() - t0} ms after the uplink veth was recreated`);
    const after = await uplinkView();
    if (typeof before.attaches === 'number') expect(after.attaches, JSON.stringify(after)).toBe(before.attaches + 1);
    expect(d.alive()).toBe(true);
  });

  it('close cancels recovery: delif of a port waiting for its interface, and shutdown', async () => {
    await sh(`ip link del ${UP}`);
    untrackLink(UP);
    await waitFor('the attach port down', async () => portState(await portOf(UP)) === 'down', { timeoutMs: 10_000, intervalMs: 100 });
    await d.ok(['delif', BR, UP]);
    expect(await portOf(UP)).toBeUndefined();
    await makeLan(nsname('lan3'));
    await new Promise((r) => setTimeout(r, 2000));
    expect(await portOf(UP), 'a removed port stays removed').toBeUndefined();
    const r = await d.stop();
    expect(r.code, `exit code (signal ${r.signal})`).toBe(0);
    await waitFor('the recreated non-persistent TAP removed on shutdown', async () => !(await linkExists(T.vm2, vm2ns)) && !(await linkExists(T.vm2)), { timeoutMs: 5000 });
  });
});
