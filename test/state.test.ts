/*
 * Runtime state is kept (issue 12, items 6): what the CLI changes (a bridge, ports
 * with their options, VLANs, a static MAC entry, the ageing time, a DHCP
 * reservation, a file port deleted) is written to the state directory and comes
 * back after a restart; a reload of an unchanged file changes nothing (a VM behind
 * a runtime port keeps pinging through it, its port's counters keep counting);
 * `show --json` says what comes from the file and what from the CLI; a file that
 * later changes a setting the CLI changed wins, and a file that defines a port the
 * CLI made adopts it without recreating it.
 *
 * On main each of these fails: a reload deleted every runtime bridge, port, VLAN
 * and static entry (and the TAPs under the VMs), a restart forgot them all, `show`
 * had no source, and there was no `dhcp reservation`.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, findPort, startDaemon, toYaml } from './helpers/daemon.js';
import { cleanup, ifname, nsExec, q, sh, sleep, tempDir, trackLink, waitFor } from './helpers/run.js';
import { type Background, continuousPing, linkExists, makeVm, missingSeqs, pingUntil, type Vm } from './helpers/vm.js';

const T = { f1: ifname('sf1'), f2: ifname('sf2'), r1: ifname('sr1'), r2: ifname('sr2'), r3: ifname('sr3') };
const BRR = 'brR';
const RES_MAC = '02:00:00:00:77:02';
const FDB_MAC = '02:00:00:00:77:01';

function config(stateDir: string, f2Vlan = 10, withR3 = false): Record<string, unknown> {
  const ports: Record<string, unknown> = {
    [T.f1]: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
    [T.f2]: { type: 'tap', vlan: { mode: 'access', vid: f2Vlan } },
  };
  if (withR3) ports[T.r3] = { type: 'tap', vlan: { mode: 'access', vid: 10 } };
  return {
    stateDir,
    metrics: { listen: 'off' },
    bridges: { br0: { ports } },
    routers: {
      r0: { networks: { net10: { bridge: 'br0', vlan: 10, address: '10.71.10.1/24', dhcp: { pool: ['10.71.10.100-10.71.10.110'] } } } },
    },
  };
}

describe('runtime state: kept across reloads and restarts, shown with its source', () => {
  let d: Daemon;
  let stateDir: string;
  let vm1: Vm, vm2: Vm;
  let bg: Background | undefined;

  const show = async (): Promise<any[]> => d.showJson();
  const bridgeOf = (view: any[], name: string): any => view.find((b) => b.name === name);

  beforeAll(async () => {
    Object.values(T).forEach(trackLink);
    stateDir = tempDir('rstate');
    d = await startDaemon(config(stateDir));
  });

  afterAll(async () => {
    await bg?.stop();
    await d?.stop();
    await cleanup();
  });

  it('CLI changes are kept in runtime.json and shown as "runtime"; the file\'s objects as "config"', async () => {
    await d.ok(['addbr', BRR]);
    await d.ok(['addif', BRR, T.r1, '--vlan', '20', '--persistent']);
    await d.ok(['addif', BRR, T.r2, '--vlan', '20']);
    vm1 = await makeVm('sr1', T.r1, '10.72.0.1/24');
    vm2 = await makeVm('sr2', T.r2, '10.72.0.2/24');
    expect(await pingUntil(vm1.ns, vm2.ip)).toBe(true);
    await d.ok(['addif', 'br0', T.r3, '--vlan', '10', '--max-macs', '7']);
    // f2 is a guarded VM port (VLAN 10 has the router's DHCP): a tagged VLAN makes it a trunk and turns its guards
    // off, which vlan add refuses without --force (issue 18).
    await d.ok(['vlan', 'add', 'dev', T.f2, 'vid', '30', '--force']);
    await d.ok(['fdb', 'add', FDB_MAC, 'dev', T.r3, 'vlan', '10']);
    await d.ok(['setageing', 'br0', '77']);
    await d.ok(['dhcp', 'reservation', 'add', 'net10', RES_MAC, '10.71.10.50', '--hostname', 'res']);
    await d.ok(['delif', 'br0', T.f1]);

    const v = await show();
    expect(bridgeOf(v, BRR)).toMatchObject({ source: 'runtime' });
    expect(bridgeOf(v, 'br0')).toMatchObject({ source: 'config', overrides: ['ageing'], ageing: 77 });
    expect(findPort(v, T.r1)).toMatchObject({ source: 'runtime' });
    expect(findPort(v, T.r3)).toMatchObject({ source: 'runtime' });
    expect(findPort(v, T.f2)).toMatchObject({ source: 'config', overrides: ['vlan'] });
    expect(findPort(v, 'net10')).toMatchObject({ source: 'config', router: 'r0' });
    expect(findPort(v, T.f1)).toBeUndefined();
    const text = (await d.ok(['show'])).stdout;
    expect(text).toMatch(new RegExp(`${T.f2}.*config, vlan: runtime`));
    expect(text).toMatch(new RegExp(`${T.r1}.*runtime`));
    const fdb = (await d.ok(['fdb', 'show', 'br', 'br0'], { json: true })).json;
    expect(fdb.find((e: any) => e.mac === FDB_MAC)).toMatchObject({ static: true, source: 'runtime', port: T.r3 });
    const res = (await d.ok(['dhcp', 'reservation', 'show', '--network', 'net10'], { json: true })).json;
    expect(res).toEqual([{ network: 'net10', mac: RES_MAC, ip: '10.71.10.50', hostname: 'res', source: 'runtime' }]);

    const saved = JSON.parse(readFileSync(join(stateDir, 'runtime.json'), 'utf8'));
    expect(Object.keys(saved.bridges)).toEqual([BRR]);
    expect(Object.keys(saved.ports).sort()).toEqual([T.f1, T.r1, T.r2, T.r3].sort());
    expect(saved.ports[T.f1].value).toBeNull(); // a file port deleted: kept deleted
  });

  it('a reload of the unchanged file changes nothing: the VM behind a runtime port keeps pinging, its port keeps its counters', async () => {
    const before = await show();
    const stats = async (): Promise<number> => (await d.ok(['stats', BRR], { json: true })).json[0].ports.find((p: any) => p.name === T.r1).rxFrames;
    const rx0 = await stats();
    bg = continuousPing(vm1.ns, vm2.ip, 0.1);
    await waitFor('the ping stream', () => bg!.pingSeqs().length >= 3);
    const first = bg.pingSeqs()[0];
    const r = await d.ok(['reload']);
    expect(r.stdout.trim()).toBe('no changes');
    d.proc.kill('SIGHUP');
    await sleep(1500);
    const seqs = bg.pingSeqs();
    expect(missingSeqs(seqs, first, seqs[seqs.length - 1])).toEqual([]);
    expect(seqs[seqs.length - 1] - first).toBeGreaterThan(10);
    await bg.stop();
    bg = undefined;
    expect(await stats()).toBeGreaterThan(rx0);
    const after = await show();
    const shape = (v: any[]): unknown => v.map((b) => ({ ...b, macs: 0, ports: b.ports.map((p: any) => ({ ...p, state: '' })) }));
    expect(shape(after)).toEqual(shape(before));
    expect((await d.ok(['fdb', 'show', 'br', 'br0'], { json: true })).json.some((e: any) => e.mac === FDB_MAC)).toBe(true);
  });

  it('after a restart every runtime change is back', async () => {
    const configText = readFileSync(d.configFile, 'utf8');
    const stopped = await d.stop();
    expect(stopped.code).toBe(0);
    // The persistent TAP is reopened by name in the daemon's namespace, where a hypervisor's TAP lives.
    await sh(`ip -n ${q(vm1.ns)} link set ${q(T.r1)} netns 1`);
    d = await startDaemon(null, { configText });
    expect(d.logsMatching('runtime_state_restored').length).toBe(1);
    const v = await show();
    expect(bridgeOf(v, BRR)).toMatchObject({ source: 'runtime' });
    expect(bridgeOf(v, 'br0')).toMatchObject({ ageing: 77, overrides: ['ageing'] });
    expect(findPort(v, T.r1)).toMatchObject({ source: 'runtime', vlan: { mode: 'access', pvid: 20 } });
    expect(findPort(v, T.r2)).toMatchObject({ source: 'runtime', vlan: { mode: 'access', pvid: 20 } });
    expect(findPort(v, T.r3)).toMatchObject({ source: 'runtime', vlan: { mode: 'access', pvid: 10 } });
    expect(findPort(v, T.f2).vlan.members.map((m: any) => m.vid)).toEqual([10, 30]);
    expect(findPort(v, T.f1)).toBeUndefined();
    expect(await linkExists(T.f1)).toBe(false);
    const fdb = (await d.ok(['fdb', 'show', 'br', 'br0'], { json: true })).json;
    expect(fdb.find((e: any) => e.mac === FDB_MAC)).toMatchObject({ static: true, source: 'runtime', port: T.r3, vlan: 10 });
    const res = (await d.ok(['dhcp', 'reservation', 'show'], { json: true })).json;
    expect(res).toEqual([{ network: 'net10', mac: RES_MAC, ip: '10.71.10.50', hostname: 'res', source: 'runtime' }]);
    // The VMs plug into the restored ports (r2's TAP is a new one: it was not persistent) and talk again.
    await sh(`ip link set ${q(T.r1)} netns ${q(vm1.ns)}`);
    await nsExec(vm1.ns, `ip link set ${q(T.r1)} up; ip addr replace ${vm1.cidr} dev ${q(T.r1)}`);
    await waitFor('the new r2 TAP', () => linkExists(T.r2));
    await sh(`ip link set ${q(T.r2)} netns ${q(vm2.ns)}`);
    await nsExec(vm2.ns, `ip link set ${q(T.r2)} up; ip addr replace ${vm2.cidr} dev ${q(T.r2)}`);
    expect(await pingUntil(vm1.ns, vm2.ip)).toBe(true);
  });

  it('the file wins where it changed a setting the CLI changed, keeps the CLI\'s elsewhere, and adopts a runtime port it now defines', async () => {
    writeFileSync(d.configFile, toYaml(config(stateDir, 40, true)));
    const r = await d.ok(['reload']);
    expect(r.stdout).toContain(`vlan ${T.f2}`);
    expect(r.stdout).toMatch(/runtime: vlans .*the config file changed it/);
    // r3 kept its TAP: no delif/addif for it (its maxMacs changes in place to the file's 0).
    expect(r.stdout).not.toContain(`delif br0 ${T.r3}`);
    expect(r.stdout).not.toContain(`addif br0 ${T.r3}`);
    const v = await show();
    expect(findPort(v, T.f2)).toMatchObject({ source: 'config', overrides: [], vlan: { mode: 'access', pvid: 40 } });
    expect(findPort(v, T.r3)).toMatchObject({ source: 'config' });
    expect(bridgeOf(v, 'br0')).toMatchObject({ ageing: 77 });
    expect(findPort(v, T.f1)).toBeUndefined();
    const saved = JSON.parse(readFileSync(join(stateDir, 'runtime.json'), 'utf8'));
    expect(saved.vlans).toEqual({});
    expect(Object.keys(saved.ports).sort()).toEqual([T.f1, T.r1, T.r2].sort());
    // Reverting by the CLI leaves nothing behind: the ageing back to the file's value.
    await d.ok(['setageing', 'br0', '300']);
    expect(JSON.parse(readFileSync(join(stateDir, 'runtime.json'), 'utf8')).ageing).toEqual({});
    expect(existsSync(join(stateDir, 'runtime.json'))).toBe(true);
  });
});
