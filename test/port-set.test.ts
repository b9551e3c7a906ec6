/*
 * Port options at runtime (issue 18): `vswitch port set PORT guard on|off|dhcp-only|default,
 * storm PPS|off, max-macs N, persistent on|off` changes a running port in place and
 * goes through the daemon's runtime state like every CLI change:
 *   - the IP source guard switched on drops a VM's unleased address, off lets it
 *     through (real pings), without recreating the TAP (its ifindex stays);
 *   - `show` tells the options (text column, JSON) and that they are the CLI's
 *     (`config, guard, storm: runtime`), runtime.json keeps them;
 *   - a reload of the unchanged file keeps them, and so does a restart;
 *   - persistence on keeps the TAP after the daemon stops, off removes it;
 *   - the file changing the same setting wins at reload;
 *   - bad values are usage errors (exit 2) or one-line errors (exit 1).
 * On main there was no `port set`: these options changed only by editing the file.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, findPort, startDaemon, toYaml } from './helpers/daemon.js';
import { restartDaemon } from './helpers/dhcp.js';
import { cleanup, ifname, nsExec, sh, tempDir, trackLink } from './helpers/run.js';
import { linkExists, makeVm, ping, pingUntil, type Vm } from './helpers/vm.js';

const T = { a: ifname('pa'), b: ifname('pb') };

function config(stateDir: string, aMaxMacs = 0): Record<string, unknown> {
  return {
    stateDir,
    metrics: { listen: 'off' },
    bridges: {
      br0: {
        ports: {
          [T.a]: { type: 'tap', vlan: { mode: 'access', vid: 10 }, maxMacs: aMaxMacs },
          [T.b]: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
        },
      },
    },
  };
}

describe('port set: guards, storm control, MAC limit, persistence at runtime, kept', () => {
  let d: Daemon;
  let stateDir: string;
  let va: Vm, vb: Vm;

  const port = async (name: string): Promise<any> => findPort(await d.showJson(), name);
  const ifindex = async (vm: Vm): Promise<string> => (await nsExec(vm.ns, `cat /sys/class/net/${vm.ifname}/ifindex`)).trim();

  beforeAll(async () => {
    Object.values(T).forEach(trackLink);
    stateDir = tempDir('pstate');
    d = await startDaemon(config(stateDir));
    va = await makeVm('pa', T.a, '10.72.10.11/24');
    vb = await makeVm('pb', T.b, '10.72.10.12/24');
    expect(await pingUntil(va.ns, vb.ip)).toBe(true);
  });

  afterAll(async () => {
    await d?.stop();
    await cleanup();
  });

  it('guard on drops the VM\'s unleased address, off lets it through again; the TAP stays the same device', async () => {
    const before = await ifindex(vb);
    expect((await port(T.b)).guard, 'no guard by default here (no router DHCP in VLAN 10)').toBeUndefined();
    await d.ok(['port', 'set', T.b, 'guard', 'on']);
    expect((await port(T.b)).guard).toMatchObject({ dhcp: true, ipSource: true });
    // vb's address is neither leased nor configured: the IP source guard drops its ARP and IPv4.
    await sh(`ip -n ${va.ns} neigh flush all; ip -n ${vb.ns} neigh flush all`);
    expect(await ping(va.ns, vb.ip, { count: 3, timeoutSec: 2 })).toBe(false);
    const drops = findPort((await d.ok(['stats', '--json'], { json: true })).json, T.b).drops;
    expect((drops.ip_source_guard ?? 0) + (drops.arp_spoof ?? 0)).toBeGreaterThan(0);
    await d.ok(['port', 'set', T.b, 'guard', 'dhcp-only']);
    expect((await port(T.b)).guard).toMatchObject({ dhcp: true, ipSource: false });
    expect(await pingUntil(va.ns, vb.ip)).toBe(true);
    await d.ok(['port', 'set', T.b, 'guard', 'off']);
    expect((await port(T.b)).guard).toBeUndefined();
    expect(await ping(va.ns, vb.ip)).toBe(true);
    expect(await ifindex(vb), 'the TAP was not recreated').toBe(before);
  });

  it('storm control, MAC limit and persistence in one command; show tells them and that they are the CLI\'s', async () => {
    const before = await ifindex(va);
    await d.ok(['port', 'set', T.a, 'storm', '250', 'max-macs', '3', 'persistent', 'on', 'guard', 'on']);
    const p = await port(T.a);
    expect(p).toMatchObject({ stormControl: { pps: 250 }, maxMacs: 3, persistent: true, guard: { dhcp: true, ipSource: true }, source: 'config' });
    expect([...p.overrides].sort()).toEqual(['guard', 'maxMacs', 'persistent', 'storm']);
    const text = (await d.ok(['show'])).stdout;
    const row = text.split('\n').find((l) => l.includes(T.a))!;
    expect(row).toContain('guard, storm 250/s, max-macs 3, persistent');
    expect(row).toMatch(/config, (\w+, ){3}\w+: runtime/);
    expect(text.split('\n')[0]).toMatch(/\boptions\b/);
    const saved = JSON.parse(readFileSync(join(stateDir, 'runtime.json'), 'utf8'));
    expect(saved.settings[`${T.a}/storm`].value).toBe(250);
    expect(saved.settings[`${T.a}/maxMacs`]).toEqual({ value: 3, base: 0 });
    expect(saved.settings[`${T.a}/persistent`]).toEqual({ value: true, base: false });
    expect(await ifindex(va), 'persistence changed in place').toBe(before);
    await d.ok(['port', 'set', T.a, 'guard', 'default']);
    expect((await port(T.a)).overrides).not.toContain('guard');
  });

  it('a reload of the unchanged file keeps them; a restart brings them back', async () => {
    expect((await d.ok(['reload'])).stdout.trim()).toBe('no changes');
    expect(await port(T.a)).toMatchObject({ stormControl: { pps: 250 }, maxMacs: 3, persistent: true });
    await d.stop();
    // Persistent: the TAP outlives the daemon (still in its namespace); vb's is gone with it.
    expect(await linkExists(T.a, va.ns)).toBe(true);
    expect(await linkExists(T.b, vb.ns)).toBe(false);
    // The daemon reopens the persistent TAP by name in its own namespace: hand it back there.
    await sh(`ip -n ${va.ns} link set ${T.a} netns 1`);
    d = await restartDaemon(d);
    expect(await port(T.a)).toMatchObject({ stormControl: { pps: 250 }, maxMacs: 3, persistent: true, source: 'config' });
    expect([...(await port(T.a)).overrides].sort()).toEqual(['maxMacs', 'persistent', 'storm']);
    // The restart logged what it restored.
    expect(d.logsMatching('runtime_state_restored').length).toBe(1);
    // Persistence off again: the TAP goes with the daemon.
    await d.ok(['port', 'set', T.a, 'persistent', 'off']);
    const r = await d.stop();
    expect(r.killed).toBe(false);
    expect(await linkExists(T.a)).toBe(false);
    d = await restartDaemon(d);
  });

  it('the file changing the same setting wins at reload; the others stay', async () => {
    writeFileSync(d.configFile, toYaml(config(stateDir, 7)));
    const changes = (await d.ok(['reload'])).stdout;
    expect(changes).toMatch(/runtime: settings .*maxMacs: the config file changed it/);
    // The file's 7 replaces the CLI's 3; the CLI's storm control stays.
    const a = await port(T.a);
    expect(a).toMatchObject({ stormControl: { pps: 250 }, maxMacs: 7 });
    expect(a.overrides).toEqual(['storm']);
  });

  it('bad values: usage errors exit 2, refusals one line exit 1, nothing changed', async () => {
    for (const args of [['guard', 'maybe'], ['storm', 'fast'], ['max-macs', '-1'], ['colour', 'red'], []]) {
      const r = await d.cli(['port', 'set', T.a, ...args]);
      expect(r.code, `port set ${args.join(' ')}: ${r.stderr}`).toBe(2);
    }
    const socketPort = await d.cli(['port', 'set', ifname('none'), 'storm', '5']);
    expect(socketPort.code).toBe(1);
    expect(socketPort.stderr.trim().split('\n')).toHaveLength(1);
    expect(socketPort.stderr).toMatch(/no such port/);
    expect(await port(T.a)).toMatchObject({ stormControl: { pps: 250 }, maxMacs: 7 });
  });
});
