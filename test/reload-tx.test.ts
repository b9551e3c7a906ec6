/*
 * Reload as a transaction, router edits in place, and `dhcp reservation` at
 * runtime (issue 12, item 6), through the real daemon with a DHCP client (udhcpc)
 * and NAT to an "internet" namespace:
 *   - a DHCP `dns` edit and a new forward apply in place: the NAT session, the
 *     lease and the router's counters stay, and the next renewal carries the new DNS;
 *   - a reload whose new TAP cannot be opened (the name is taken by a veth)
 *     changes nothing, although it also edits and rebuilds the router: the router
 *     still routes with its old address, its lease is renewed, the error says so;
 *   - `dhcp reservation add` is refused for an address leased to someone else or
 *     outside the network; a good one applies in place: the VM's renewal is NAKed
 *     and it gets its reserved address, its NAT sessions' router untouched.
 * On main each fails: any router edit deleted and re-added the router (sessions
 * and counters gone), a failing TAP left the router deleted, and there was no
 * `dhcp reservation` verb.
 */
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, startDaemon, toYaml } from './helpers/daemon.js';
import { type DhcpVm, leaseOf, makeDhcpVm, udhcpcOnce } from './helpers/dhcp.js';
import { type Internet, makeInternet, udpSend, udpTool } from './helpers/inet.js';
import { cleanup, ifname, nsExec, q, sh, tempDir, trackLink, waitFor } from './helpers/run.js';
import { Background, pingUntil } from './helpers/vm.js';

const TAP = ifname('xa');
const TAKEN = ifname('xd');
const PEER = ifname('xe');
const PUB = '198.51.100.2';
const INET = '198.51.100.1';
const GW = '10.73.10.1';
const SPORT = 40111;

function config(stateDir: string, uplink: string, o: { dns?: string; forward?: string; extraPort?: boolean; pub?: string } = {}): object {
  return {
    stateDir,
    bridges: {
      br0: {
        ports: {
          [TAP]: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
          ...(o.extraPort ? { [TAKEN]: { type: 'tap', vlan: { mode: 'access', vid: 10 } } } : {}),
        },
      },
    },
    routers: {
      r0: {
        uplink: { interface: uplink, address: `${o.pub ?? PUB}/24`, gateway: INET },
        forwards: o.forward ? [{ proto: 'tcp', port: 8080, to: `${o.forward}:80` }] : [],
        networks: {
          net10: { bridge: 'br0', vlan: 10, address: `${GW}/24`, dhcp: { pool: ['10.73.10.100-10.73.10.120'], dns: [o.dns ?? '192.0.2.53'] } },
        },
      },
    },
  };
}

describe('reload: a transaction; router edits in place; reservations at runtime', () => {
  let d: Daemon;
  let inet: Internet;
  let vm: DhcpVm;
  let stateDir: string;
  let vmIp = '';
  let echo: Background;

  const routerView = async (): Promise<any> => (await d.ok(['router', 'show', 'r0'], { json: true })).json[0];
  const sessions = async (): Promise<any[]> => (await d.ok(['nat', 'sessions'], { json: true })).json;
  const mySession = async (): Promise<any> => (await sessions()).find((s) => s.proto === 'udp' && s.inside === `${vmIp}:${SPORT}`);

  beforeAll(async () => {
    trackLink(TAP);
    trackLink(TAKEN);
    trackLink(PEER);
    inet = await makeInternet('xi');
    stateDir = tempDir('xstate');
    d = await startDaemon(config(stateDir, inet.uplink));
    vm = await makeDhcpVm('xa', TAP);
    const l = await udhcpcOnce(vm, { tries: 5 });
    expect(l.code, l.log).toBe(0);
    vmIp = l.lease!.ip;
    expect(l.lease!.dns).toBe('192.0.2.53');
    echo = new Background(inet.ns, `/usr/bin/python3 -u ${q(udpTool())} serve 7`);
    await waitFor('udp echo', async () => /:7\s/.test(await nsExec(inet.ns, 'ss -Hlun')));
    await waitFor('the uplink to be up', async () => String((await routerView()).uplink?.state) === 'up');
    expect(await udpSend(vm.ns, INET, 7, { sport: SPORT, msg: 'before' })).toBe('reply before');
    expect(await mySession()).toBeDefined();
  }, 120_000);

  afterAll(async () => {
    await echo?.stop();
    await d?.stop();
    await cleanup();
  });

  it('a DHCP dns edit and a new forward apply in place: the NAT session, the lease and the counters stay', async () => {
    const session = await mySession();
    const toUplink = (await routerView()).counters.toUplink;
    const lease = await leaseOf(d, vm.mac);
    writeFileSync(d.configFile, toYaml({ ...config(stateDir, inet.uplink, { dns: '192.0.2.54', forward: vmIp }), metrics: { listen: 'off' } }));
    const r = await d.ok(['reload']);
    expect(r.stdout).toContain('dhcp r0/net10 (in place: leases kept)');
    expect(r.stdout).toContain('forward add tcp 8080');
    expect(r.stdout).not.toMatch(/rebuild|delrouter|addrouter/);
    expect(await mySession(), 'the NAT session survived').toMatchObject({ publicPort: session.publicPort });
    expect((await routerView()).counters.toUplink).toBeGreaterThanOrEqual(toUplink);
    expect((await leaseOf(d, vm.mac))?.expiresAt).toBe(lease?.expiresAt);
    expect(await udpSend(vm.ns, INET, 7, { sport: SPORT, msg: 'after' })).toBe('reply after');
    // The next renewal carries the new DNS server, for the same address.
    const renewed = await udhcpcOnce(vm, { requestIp: vmIp });
    expect(renewed.code, renewed.log).toBe(0);
    expect(renewed.lease).toMatchObject({ ip: vmIp, dns: '192.0.2.54' });
    expect((await d.ok(['nat', 'forward', 'show'], { json: true })).json).toEqual([
      expect.objectContaining({ proto: 'tcp', public: '8080', inside: `${vmIp}:80`, source: 'config' }),
    ]);
  });

  it('a reload whose new TAP cannot be opened changes nothing, although it also edits and rebuilds the router', async () => {
    await sh(`ip link add ${q(TAKEN)} type veth peer name ${q(PEER)}`);
    const before = await d.showJson();
    const session = await mySession();
    writeFileSync(d.configFile, toYaml({
      ...config(stateDir, inet.uplink, { dns: '192.0.2.55', forward: vmIp, extraPort: true, pub: '198.51.100.3' }), metrics: { listen: 'off' },
    }));
    const r = await d.cli(['reload']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`cannot open TAP ${TAKEN}`);
    expect(r.stderr).toContain('nothing was changed');
    expect(d.logsMatching('config_refused').length).toBeGreaterThan(0);
    expect(await d.showJson()).toEqual(before);
    const rv = await routerView();
    expect(rv.networks.map((n: any) => n.name)).toEqual(['net10']);
    expect(rv.uplink.address).toBe(`${PUB}/24`);
    expect(await mySession()).toMatchObject({ publicPort: session.publicPort });
    expect(await pingUntil(vm.ns, INET), 'still routed, from the old address').toBe(true);
    const renewed = await udhcpcOnce(vm, { requestIp: vmIp });
    expect(renewed.code, renewed.log).toBe(0);
    expect(renewed.lease).toMatchObject({ ip: vmIp, dns: '192.0.2.54' });
    await sh(`ip link del ${q(TAKEN)}`);
  });

  it('dhcp reservation add: refused for an address leased to another client or outside the network; a good one applies in place', async () => {
    // Back to the last good file.
    writeFileSync(d.configFile, toYaml({ ...config(stateDir, inet.uplink, { dns: '192.0.2.54', forward: vmIp }), metrics: { listen: 'off' } }));
    expect((await d.ok(['reload'])).stdout.trim()).toBe('no changes');
    const taken = await d.cli(['dhcp', 'reservation', 'add', 'net10', '02:00:00:00:88:01', vmIp]);
    expect(taken.code).toBe(1);
    expect(taken.stderr).toContain(`${vmIp} is leased to ${vm.mac}`);
    const outside = await d.cli(['dhcp', 'reservation', 'add', 'net10', '02:00:00:00:88:01', '10.99.0.5']);
    expect(outside.code).toBe(1);
    expect(outside.stderr).toMatch(/outside the network 10\.73\.10\.1\/24/);
    expect((await d.cli(['dhcp', 'reservation', 'add', 'nosuch', '02:00:00:00:88:01', '10.73.10.5'])).stderr).toMatch(/no such network/);
    expect((await d.ok(['dhcp', 'reservation', 'show'], { json: true })).json).toEqual([]);

    const session = await mySession();
    const r = await d.ok(['dhcp', 'reservation', 'add', 'net10', vm.mac, '10.73.10.50', '--hostname', 'resv']);
    expect(r.code).toBe(0);
    expect(await mySession(), 'router edited in place').toMatchObject({ publicPort: session.publicPort });
    // The VM's renewal of its old address is NAKed; it gets its reservation.
    const moved = await udhcpcOnce(vm, { requestIp: vmIp, tries: 5 });
    expect(moved.code, moved.log).toBe(0);
    expect(moved.lease).toMatchObject({ ip: '10.73.10.50', hostname: 'resv' });
    expect((await d.ok(['dhcp', 'reservation', 'show'], { json: true })).json).toEqual([
      { network: 'net10', mac: vm.mac, ip: '10.73.10.50', hostname: 'resv', source: 'runtime' },
    ]);
    await d.ok(['dhcp', 'reservation', 'del', 'net10', vm.mac]);
    expect((await d.ok(['dhcp', 'reservation', 'show'], { json: true })).json).toEqual([]);
    expect((await d.cli(['dhcp', 'reservation', 'del', 'net10', vm.mac])).code).toBe(1);
  });
});
