/*
 * Validation (issue 12, item 7) through the real daemon and CLI:
 *   - `addif BR lo --attach` is refused (it would loop every frame back), as is a
 *     router's uplink interface and an interface already attached;
 *   - TAP names the kernel refuses (":" , "..", whitespace) or that read as an
 *     option (leading "-") are refused before any device is made;
 *   - a config with two DHCP servers on one bridge and VLAN (two routers, or two
 *     networks of one router) is refused at start and at reload, with the key path.
 * Each refusal leaves the running state and runtime.json as they were. On main,
 * `addif br0 lo --attach`, the uplink, `-evil` (a TAP "-evil" was made) and the
 * two-server files were accepted; `a:b` and `..` passed the name check and failed
 * only in the kernel (TUNSETIFF: EINVAL). `a b` and an interface already attached to
 * another bridge were refused on main too: they stay here as guards of the same rules.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, startDaemon, toYaml } from './helpers/daemon.js';
import { addVeth, cleanup, ifname, sh, tempDir, trackLink } from './helpers/run.js';
import { linkExists } from './helpers/vm.js';

const UP = ifname('vu');
const UP_PEER = ifname('vv');
const ATT = ifname('va');
const ATT_PEER = ifname('vb');

function config(stateDir: string, extraRouter = false, twoNets = false): Record<string, unknown> {
  const net = (third: number) => ({ bridge: 'br0', vlan: 10, address: `10.74.${third}.1/24`, dhcp: { pool: [`10.74.${third}.100-10.74.${third}.110`] } });
  return {
    stateDir,
    bridges: { br0: { ports: { [ATT]: { type: 'attach', vlan: { mode: 'access', vid: 20 } } } } },
    routers: {
      r0: {
        uplink: { interface: UP, address: '198.51.100.2/24' },
        networks: { n1: net(1), ...(twoNets ? { n3: net(3) } : {}) },
      },
      ...(extraRouter ? { r1: { networks: { n2: net(2) } } } : {}),
    },
  };
}

describe('validation: what may be attached, names, one DHCP server per VLAN', () => {
  let d: Daemon;
  let stateDir: string;
  const runtimeJson = (): string => (existsSync(join(stateDir, 'runtime.json')) ? readFileSync(join(stateDir, 'runtime.json'), 'utf8') : '');

  beforeAll(async () => {
    [UP, UP_PEER, ATT, ATT_PEER].forEach(trackLink);
    await addVeth(UP, UP_PEER);
    await addVeth(ATT, ATT_PEER);
    await sh(`ip link set ${UP} up; ip link set ${ATT} up`);
    stateDir = tempDir('vstate');
    d = await startDaemon(config(stateDir));
    await d.ok(['addbr', 'br9']); // a runtime.json to compare against
  });

  afterAll(async () => {
    await d?.stop();
    await cleanup();
  });

  it.each([
    [['addif', 'br0', 'lo', '--attach'], /lo is a loopback interface/],
    [['addif', 'br0', UP, '--attach'], new RegExp(`${UP} is the uplink of router r0`)],
    [['addif', 'br9', ATT, '--attach'], new RegExp(`${ATT} is already a port of another bridge \\(br0\\)`)],
    [['addif', 'br0', '--', '-evil'], /no leading "-"/],
    [['addif', 'br0', 'a:b'], /no "\/", ":" or whitespace/],
    [['addif', 'br0', '..'], /not "\." or "\.\."/],
    [['addif', 'br0', 'a b'], /no "\/", ":" or whitespace/],
  ])('refused: vswitch %j', async (args, message) => {
    const before = await d.showJson();
    const saved = runtimeJson();
    const r = await d.cli(args);
    expect(r.code, r.stdout).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(message);
    expect(await d.showJson()).toEqual(before);
    expect(runtimeJson()).toBe(saved);
  });

  it('no device was made for a refused name', async () => {
    expect(await linkExists('-evil')).toBe(false);
    expect(await linkExists('a:b')).toBe(false);
  });

  it('two routers serving DHCP on one bridge and VLAN: a reload is refused with the key path, and the state stays', async () => {
    const before = await d.showJson();
    writeFileSync(d.configFile, toYaml({ ...config(stateDir, true), metrics: { listen: 'off' } }));
    const r = await d.cli(['reload']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/routers\.r1\.networks\.n2\.dhcp \(line \d+\): VLAN 10 of bridge br0 already has a DHCP server \(routers\.r0\.networks\.n1\)/);
    expect(await d.showJson()).toEqual(before);
    writeFileSync(d.configFile, toYaml({ ...config(stateDir, false, true), metrics: { listen: 'off' } }));
    const r2 = await d.cli(['reload']);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toMatch(/routers\.r0\.networks\.n3\.dhcp \(line \d+\): VLAN 10 of bridge br0 already has a DHCP server/);
    expect(d.alive()).toBe(true);
  });

  it('and such a file does not start a daemon', async () => {
    const bad = await startDaemon(config(tempDir('vstate2'), true), { noWait: true });
    expect(await bad.waitExit(15_000)).toBe(true);
    expect(bad.exitCode).not.toBe(0);
    expect(bad.logText() + bad.stdout).toMatch(/routers\.r1\.networks\.n2\.dhcp .*already has a DHCP server/);
  });
});
