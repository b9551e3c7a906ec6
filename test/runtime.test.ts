/*
 * Changes at runtime while traffic flows. vm1 pings vm2 continuously (every 0.2 s)
 * for the whole file; meanwhile ports are added (`addif`), moved to another VLAN
 * (`vlan add` / `vlan del`), removed (`delif`), and TAPs are deleted out from under
 * the daemon (`ip netns del`, `ip link del`). The running ping may lose at most 2
 * replies in all; the daemon stays up, reports the vanished ports down (port_down)
 * and recreates their TAPs in its own namespace (port_up, see faults.test.ts).
 * Last, SIGTERM shuts the daemon down cleanly.
 */
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, allObjects, findPort, portState, startDaemon } from './helpers/daemon.js';
import { cleanup, ifname, nsExec, sh, untrackNamespace, waitFor } from './helpers/run.js';
import {
  Background, continuousPing, linkExists, makeVm, missingSeqs, ping, pingUntil, type Vm,
} from './helpers/vm.js';

const BR = 'br0';
const T = { vm1: ifname('vm1'), vm2: ifname('vm2'), vm3: ifname('vm3'), vm4: ifname('vm4'), vm5: ifname('vm5') };

describe('runtime changes while traffic flows', () => {
  let d: Daemon;
  let vm1: Vm, vm2: Vm, vm3: Vm, vm4: Vm, vm5: Vm;
  let bg: Background;
  let firstSeq = 0;

  beforeAll(async () => {
    d = await startDaemon({
      bridges: {
        [BR]: {
          ports: {
            [T.vm1]: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
            [T.vm2]: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
          },
        },
      },
    });
    vm1 = await makeVm('vm1', T.vm1, '10.10.0.1/24');
    vm2 = await makeVm('vm2', T.vm2, '10.10.0.2/24');
    expect(await pingUntil(vm1.ns, vm2.ip)).toBe(true);
    bg = continuousPing(vm1.ns, vm2.ip, 0.2);
    await waitFor('the continuous ping to answer', () => bg.pingSeqs().length >= 2);
    firstSeq = bg.pingSeqs()[0];
  });

  afterAll(async () => {
    await bg?.stop();
    await d?.stop();
    await cleanup();
  });

  const portOf = async (name: string) => findPort(await d.showJson(BR), name);

  it('addif: a TAP added at runtime is reachable at once', async () => {
    await d.ok(['addif', BR, T.vm3, '--vlan', '10']);
    vm3 = await makeVm('vm3', T.vm3, '10.10.0.3/24');
    expect(await pingUntil(vm1.ns, vm3.ip), 'vm1 -> new vm3').toBe(true);
    expect(await ping(vm3.ns, vm2.ip, { count: 2 }), 'vm3 -> vm2').toBe(true);
    const p = await portOf(T.vm3);
    expect(p, 'vm3 in show --json').toBeDefined();
    expect(portState(p)).toBe('up');
  });

  it('vlan add/del moves a port to another VLAN at runtime', async () => {
    await d.ok(['vlan', 'add', 'dev', T.vm3, 'vid', '30', 'pvid', 'untagged']);
    await d.ok(['vlan', 'del', 'dev', T.vm3, 'vid', '10']);
    const vs = await d.ok(['vlan', 'show', 'dev', T.vm3], { json: true });
    const members = allObjects(vs.json).filter((o) => typeof o.vid === 'number');
    expect(members.map((m) => m.vid).sort(), `vlan show dev vm3: ${JSON.stringify(vs.json)}`).toEqual([30]);
    expect(members[0].pvid, 'VID 30 is the PVID').toBe(true);
    expect(members[0].untagged, 'VID 30 is untagged').toBe(true);
    // vm1's ARP entry for vm3 is still valid: the unicast must now be dropped by the switch.
    expect(await ping(vm1.ns, vm3.ip, { count: 3, timeoutSec: 2 }), 'vm1 (10) -> vm3 (now 30)').toBe(false);
    expect(await ping(vm3.ns, vm2.ip, { count: 2, timeoutSec: 2 }), 'vm3 (30) -> vm2 (10)').toBe(false);
    // A second port in VLAN 30 reaches vm3.
    await d.ok(['addif', BR, T.vm4, '--vlan', '30']);
    vm4 = await makeVm('vm4', T.vm4, '10.10.0.4/24');
    expect(await pingUntil(vm4.ns, vm3.ip), 'vm4 (30) -> vm3 (30)').toBe(true);
    expect(await ping(vm4.ns, vm1.ip, { count: 2, timeoutSec: 2 }), 'vm4 (30) -> vm1 (10)').toBe(false);
    // And back: VID 10 again on vm3 (pvid), 30 gone.
    await d.ok(['vlan', 'add', 'dev', T.vm3, 'vid', '10', 'pvid', 'untagged']);
    await d.ok(['vlan', 'del', 'dev', T.vm3, 'vid', '30']);
    expect(await pingUntil(vm3.ns, vm1.ip), 'vm3 back in VLAN 10 -> vm1').toBe(true);
    expect(await ping(vm4.ns, vm3.ip, { count: 2, timeoutSec: 2 }), 'vm4 (30) -> vm3 (10 again)').toBe(false);
  });

  it('delif removes a port and its TAP', async () => {
    await d.ok(['delif', BR, T.vm4]);
    await waitFor('vm4 TAP to disappear', async () => !(await linkExists(T.vm4, vm4.ns)) && !(await linkExists(T.vm4)));
    expect(await portOf(T.vm4), 'vm4 gone from show').toBeUndefined();
    // Its name is free again: another delif fails.
    const r = await d.cli(['delif', BR, T.vm4]);
    expect(r.code).not.toBe(0);
  });

  it('a TAP deleted under the daemon (netns deleted) turns its port down, is recreated; the rest forwards', async () => {
    const ups = d.logsMatching('port_up').length;
    await sh(`ip netns del ${vm3.ns}`);
    untrackNamespace(vm3.ns);
    const line = await d.waitForLog('port_down');
    expect(line.raw).toContain(T.vm3);
    expect(d.alive(), 'daemon alive').toBe(true);
    // The daemon recreates the TAP in its own namespace and the port comes back up.
    await waitFor('a port_up log line for vm3', () => d.logsMatching('port_up').slice(ups).some((l) => l.raw.includes(T.vm3)), { timeoutMs: 10_000 });
    await waitFor('vm3 TAP back in the root namespace', () => linkExists(T.vm3));
    const p = await portOf(T.vm3);
    expect(portState(p), JSON.stringify(p)).toBe('up');
    expect(p.recreated, JSON.stringify(p)).toBe(1);
    expect(await ping(vm1.ns, vm2.ip, { count: 3 }), 'vm1 -> vm2 after the deletion').toBe(true);
    expect(await ping(vm2.ns, vm1.ip, { count: 3 }), 'vm2 -> vm1 after the deletion').toBe(true);
    // The port (and its recreated TAP) can still be removed cleanly.
    await d.ok(['delif', BR, T.vm3]);
    expect(await portOf(T.vm3)).toBeUndefined();
    await waitFor('the recreated vm3 TAP removed by delif', async () => !(await linkExists(T.vm3)));
  });

  it('a TAP deleted under the daemon (ip link del in its netns) turns its port down, then is recreated', async () => {
    await d.ok(['addif', BR, T.vm5, '--vlan', '10']);
    vm5 = await makeVm('vm5', T.vm5, '10.10.0.5/24');
    expect(await pingUntil(vm5.ns, vm1.ip), 'new vm5 -> vm1').toBe(true);
    const before = d.logsMatching('port_down').length;
    const ups = d.logsMatching('port_up').length;
    await nsExec(vm5.ns, `ip link del ${T.vm5}`);
    await waitFor('a second port_down log line', () => d.logsMatching('port_down').length > before, { timeoutMs: 10_000 });
    expect(d.logsMatching('port_down').at(-1)!.raw).toContain(T.vm5);
    await waitFor('a port_up log line for vm5', () => d.logsMatching('port_up').slice(ups).some((l) => l.raw.includes(T.vm5)), { timeoutMs: 10_000 });
    await waitFor('vm5 TAP back in the root namespace', () => linkExists(T.vm5));
    expect(portState(await portOf(T.vm5))).toBe('up');
    expect(d.alive()).toBe(true);
    expect(await ping(vm2.ns, vm1.ip, { count: 2 })).toBe(true);
  });

  it('the continuous ping lost at most 2 replies throughout', async () => {
    await bg.stop();
    const seqs = bg.pingSeqs();
    const last = seqs[seqs.length - 1];
    expect(last - firstSeq, 'the ping ran the whole time').toBeGreaterThan(20);
    const miss = missingSeqs(seqs, firstSeq, last);
    expect(miss.length, `missing seqs ${miss.join(',')}`).toBeLessThanOrEqual(2);
  });

  it('SIGTERM shuts down cleanly: exit 0, socket removed, non-persistent TAPs removed', async () => {
    const r = await d.stop();
    expect(r.killed, 'needed SIGKILL').toBe(false);
    expect(r.code, `exit code (signal ${r.signal})`).toBe(0);
    expect(existsSync(d.socket), 'socket unlinked').toBe(false);
    await waitFor('vm1/vm2 TAPs removed', async () => !(await linkExists(T.vm1, vm1.ns)) && !(await linkExists(T.vm2, vm2.ns)), { timeoutMs: 5000 });
    await waitFor('the recreated vm5 TAP removed', async () => !(await linkExists(T.vm5)), { timeoutMs: 5000 });
  });
});
