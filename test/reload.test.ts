/*
 * Config reload (vswitch reload, SIGHUP): the file's difference is applied while a
 * ping stream between two untouched VMs keeps flowing; a broken file is refused and
 * the running state stays; SIGTERM then cleans up.
 */
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, findPort, startDaemon, toYaml } from './helpers/daemon.js';
import { cleanup, ifname, sleep, waitFor } from './helpers/run.js';
import { Background, continuousPing, makeVm, missingSeqs, ping, pingUntil, type Vm } from './helpers/vm.js';

const BR = 'br0';
const T = { vm1: ifname('rl1'), vm2: ifname('rl2'), vm3: ifname('rl3'), vm4: ifname('rl4'), vm5: ifname('rl5') };

function config(vm3Vlan: number, withVm5: boolean, ageing = 300): object {
  const ports: Record<string, object> = {
    [T.vm1]: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
    [T.vm2]: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
    [T.vm3]: { type: 'tap', vlan: { mode: 'access', vid: vm3Vlan } },
    [T.vm4]: { type: 'tap', vlan: { mode: 'access', vid: 20 } },
  };
  if (withVm5) ports[T.vm5] = { type: 'tap', vlan: { mode: 'access', vid: 20 } };
  return { metrics: { listen: 'off' }, bridges: { [BR]: { ageing, ports } } };
}

describe('config reload', () => {
  let d: Daemon;
  let vm1: Vm, vm2: Vm, vm3: Vm, vm4: Vm;
  let bg: Background;
  let firstSeq = 0;

  beforeAll(async () => {
    d = await startDaemon(config(20, false));
    vm1 = await makeVm('rl1', T.vm1, '10.30.0.1/24');
    vm2 = await makeVm('rl2', T.vm2, '10.30.0.2/24');
    vm3 = await makeVm('rl3', T.vm3, '10.30.0.3/24');
    vm4 = await makeVm('rl4', T.vm4, '10.30.0.4/24');
    expect(await pingUntil(vm1.ns, vm2.ip)).toBe(true);
    expect(await pingUntil(vm3.ns, vm4.ip)).toBe(true);
    bg = continuousPing(vm1.ns, vm2.ip, 0.1);
    await waitFor('the ping stream', () => bg.pingSeqs().length >= 3);
    firstSeq = bg.pingSeqs()[0];
  });

  afterAll(async () => {
    await bg?.stop();
    await d?.stop();
    await cleanup();
  });

  it('applies a VLAN move, a new port and a new ageing time without touching the others', async () => {
    const before = findPort(await d.showJson(BR), T.vm1);
    const rxBefore = (await d.ok(['stats', BR], { json: true })).json[0].ports.find((p: any) => p.name === T.vm1).rxFrames;
    writeFileSync(d.configFile, toYaml(config(10, true, 120)));
    const r = await d.ok(['reload']);
    expect(r.stdout).toContain(`vlan ${T.vm3}`);
    expect(r.stdout).toContain(`addif ${BR} ${T.vm5}`);
    expect(r.stdout).toContain(`setageing ${BR} 120`);
    expect(r.stdout).not.toContain(T.vm1);
    expect(r.stdout).not.toContain(T.vm2);

    const show = await d.showJson(BR);
    expect(show[0].ageing).toBe(120);
    expect(findPort(show, T.vm3).vlan).toMatchObject({ mode: 'access', pvid: 10 });
    expect(findPort(show, T.vm5)).toBeDefined();
    expect(findPort(show, T.vm1)).toEqual(before);
    // vm1's port was not recreated: its counters kept counting.
    const rxAfter = (await d.ok(['stats', BR], { json: true })).json[0].ports.find((p: any) => p.name === T.vm1).rxFrames;
    expect(rxAfter).toBeGreaterThan(rxBefore);

    expect(await pingUntil(vm3.ns, vm1.ip), 'vm3 moved into VLAN 10').toBe(true);
    expect(await ping(vm3.ns, vm4.ip, { count: 2 }), 'vm3 left VLAN 20').toBe(false);
    expect(d.logsMatching('config_applied').length).toBeGreaterThan(0);
  });

  it('a second reload of the same file changes nothing', async () => {
    const r = await d.ok(['reload']);
    expect(r.stdout.trim()).toBe('no changes');
  });

  it('a broken file is refused, by the CLI and by SIGHUP, and the running state stays', async () => {
    const good = await d.showJson(BR);
    writeFileSync(d.configFile, `bridges:\n  ${BR}:\n    ports:\n      ${T.vm3}: { type: tap, vlan: { mode: access, vid: 9999 } }\n`);
    const r = await d.cli(['reload']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`bridges\\.${BR}\\.ports\\.${T.vm3}\\.vlan\\.vid \\(line 4\\): must be 1-4094, got 9999`));
    d.proc.kill('SIGHUP');
    await waitFor('config_refused logged twice', () => d.logsMatching('config_refused').length >= 2);
    expect(d.alive()).toBe(true);
    expect(await d.showJson(BR)).toEqual(good);
    expect(await ping(vm3.ns, vm1.ip, { count: 2 })).toBe(true);
  });

  it('SIGHUP applies a good file', async () => {
    writeFileSync(d.configFile, toYaml(config(20, false, 120)));
    d.proc.kill('SIGHUP');
    await waitFor('vm3 back in VLAN 20', async () => findPort(await d.showJson(BR), T.vm3)?.vlan?.pvid === 20);
    expect(findPort(await d.showJson(BR), T.vm5)).toBeUndefined();
    expect(await pingUntil(vm3.ns, vm4.ip)).toBe(true);
  });

  it('the ping stream between vm1 and vm2 lost nothing across all reloads', async () => {
    await sleep(500);
    const seqs = bg.pingSeqs();
    const last = seqs[seqs.length - 1];
    expect(last - firstSeq).toBeGreaterThan(20);
    expect(missingSeqs(seqs, firstSeq, last)).toEqual([]);
  });
});
