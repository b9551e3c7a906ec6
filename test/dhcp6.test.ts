/*
 * The DHCPv6 server (issue 14, item 2) through the real daemon, with real clients:
 *
 *   br0 VLAN 10 -- net10 10.X.10.1/24, ipv6 fd00:X:10::1/64 mode dhcpv6,
 *                  pool ::100-::101 (2 addresses), a MAC reservation ::50 for c,
 *                  lease time 120 s, RDNSS ::53 and DNSSL lab.example (the DHCPv6 defaults)
 *                  VMs a (dhclient -6), b (dhcpcd -6), c (dhclient -6, reserved), d (dhclient -6, then hostile)
 *   br0 VLAN 20 -- net20 10.X.20.1/24, ipv6 fd00:X:20::1/64 slaac (no DHCPv6)
 *                  VM e (tcpdump)
 *
 * - a and b lease addresses from the pool (a's from dhclient's script, b's from
 *   dhcpcd after the RA's M flag), with the DNS server and search domain; `dhcp
 *   leases --json` lists them with family ipv6, their DUID, IAID and port; the
 *   text table has the family column;
 * - the pool is then exhausted: d gets no address (NoAddrsAvail counted), while
 *   c gets its reserved address all the same; d's Information-Request (dhclient
 *   -6 -S) still gets the DNS server and domain;
 * - b renews (dhcpcd SIGUSR1): its lease's expiry moves forward;
 * - d, on another port, sends a Request and a Release with a's DUID and IAID:
 *   a's lease is unchanged (not_owner counted);
 * - a releases (dhclient -6 -r): its lease is gone;
 * - e, on VLAN 20, saw no DHCPv6 message of VLAN 10 (tcpdump);
 * - metrics: vswitch_dhcp6_messages_total, statuses, dropped, active leases;
 * - a reload that changes the DHCPv6 section keeps the leases (the rebuilt
 *   router reads leases6-net10.json) and applies the new lease time;
 * - kill -9 of the daemon, then a restart: b's and c's leases are listed with the
 *   same addresses and expiries (they were on disk before their Replies).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { Daemon, startDaemon, toYaml } from './helpers/daemon.js';
import { type DhcpClient, type LeaseRow, leases, restartDaemon } from './helpers/dhcp.js';
import { dhclient6, dhclient6Release, dhcp6Hex, dhcpcd6, makeDhcp6Vm, sendDhcp6, type Dhcp6Vm } from './helpers/dhcp6.js';
import { addrs6, canon } from './helpers/ipv6.js';
import { PREFIX, cleanup, freePort, ifname, sleep, waitFor } from './helpers/run.js';
import { tcpdump, type Capture } from './helpers/vm.js';

const X = 20 + (parseInt(PREFIX.slice(1), 16) % 200);
const P10 = `fd00:${X}:10::`;
const BR = 'br0';
const GW_MAC = '02:00:00:00:10:01';
const C_MAC = '52:54:00:6c:00:0c';
const T = { a: ifname('6a'), b: ifname('6b'), c: ifname('6c'), d: ifname('6d'), e: ifname('6e') };

function config(): unknown {
  const access = (vid: number) => ({ type: 'tap', vlan: { mode: 'access', vid } });
  return {
    bridges: { [BR]: { ports: { [T.a]: access(10), [T.b]: access(10), [T.c]: access(10), [T.d]: access(10), [T.e]: access(20) } } },
    routers: {
      r1: {
        networks: {
          net10: {
            bridge: BR, vlan: 10, address: `10.${X}.10.1/24`, mac: GW_MAC,
            ipv6: {
              address: `${P10}1/64`, mode: 'dhcpv6', ra: { interval: 10, rdnss: [`${P10}53`], dnssl: ['lab.example'] },
              dhcpv6: { pool: `${P10}100-${P10}101`, leaseTime: 120, reservations: [{ mac: C_MAC, ip: `${P10}50` }] },
            },
          },
          net20: { bridge: BR, vlan: 20, address: `10.${X}.20.1/24`, ipv6: { address: `fd00:${X}:20::1/64` } },
        },
      },
    },
  };
}

const v6 = (rows: LeaseRow[]): (LeaseRow & { family: string; iaid: number })[] => rows.filter((l: any) => l.family === 'ipv6') as never;
const inPool = (ip: string): boolean => [`${P10}100`, `${P10}101`].map(canon).includes(canon(ip));

describe('DHCPv6 server: dhclient -6 and dhcpcd -6 lease, renew, release, a reservation, exhaustion, hostile clients, VLANs, kill -9', () => {
  let d: Daemon;
  let metricsPort: number;
  const vm: Record<'a' | 'b' | 'c' | 'd' | 'e', Dhcp6Vm> = {} as never;
  const clients: DhcpClient[] = [];
  let capE: Capture;
  const got: Record<string, string> = {};

  beforeAll(async () => {
    metricsPort = await freePort();
    d = await startDaemon({ ...(config() as object), metrics: { listen: `127.0.0.1:${metricsPort}` } });
    [vm.a, vm.b, vm.c, vm.d, vm.e] = await Promise.all([
      makeDhcp6Vm('6a', T.a), makeDhcp6Vm('6b', T.b), makeDhcp6Vm('6c', T.c, C_MAC), makeDhcp6Vm('6d', T.d), makeDhcp6Vm('6e', T.e),
    ]);
    capE = await tcpdump(vm.e.ns, vm.e.ifname, 'udp port 546 or udp port 547');
  }, 60_000);

  afterAll(async () => {
    for (const c of clients) await c.stop();
    await capE?.stop(0).catch(() => undefined);
    if (d?.alive()) await d.stop();
    await cleanup();
  });

  it('dhclient -6 and dhcpcd -6 lease pool addresses with the DNS server and domain; dhcp leases lists them as ipv6', async () => {
    const A = dhclient6(vm.a);
    const B = dhcpcd6(vm.b);
    clients.push(A, B);
    const [ea, eb] = await Promise.all([A.waitEvent(['BOUND6'], { timeoutMs: 30_000 }), B.waitEvent(['BOUND6', 'RENEW6', 'REBIND6'], { timeoutMs: 30_000 })])
      .catch(async (e) => {
        const net = (await d.ok(['router', 'show'], { json: true })).json[0].networks.find((x: any) => x.name === 'net10');
        throw new Error(`${(e as Error).message}\ndhclient: ${A.log.slice(-1500)}\ndhcpcd: ${B.log.slice(-1500)}\nnet10: ${JSON.stringify(net.ipv6)}`);
      });
    got.a = canon(ea.ip);
    got.b = canon(eb.ip);
    expect(inPool(got.a), `a got ${got.a}`).toBe(true);
    expect(inPool(got.b), `b got ${got.b}`).toBe(true);
    expect(got.a).not.toBe(got.b);
    expect(ea.dns).toBe(canon(`${P10}53`));
    expect(ea.domain).toMatch(/lab\.example/);
    expect(Number(ea.valid)).toBe(120);
    expect(eb.dns).toBe(canon(`${P10}53`));
    // Both addresses are configured in the VMs (a's by its script, b's by dhcpcd), DAD passed.
    await waitFor('b has its address', async () => (await addrs6(vm.b)).some((x) => x.local === got.b && !x.tentative), { timeoutMs: 10_000 });
    expect((await addrs6(vm.a)).some((x) => x.local === got.a)).toBe(true);
    const rows = v6(await leases(d));
    const ra = rows.find((l) => canon(l.ip) === got.a)!;
    const rb = rows.find((l) => canon(l.ip) === got.b)!;
    expect(ra).toMatchObject({ network: 'net10', family: 'ipv6', state: 'bound', port: T.a, mac: vm.a.mac });
    expect(rb).toMatchObject({ network: 'net10', family: 'ipv6', state: 'bound', port: T.b, mac: vm.b.mac });
    expect(ra.clientId).toMatch(/^0001/); // DUID-LLT
    expect(ra.expiresInSec).toBeGreaterThan(100);
    expect((await d.ok(['router', 'show'])).stdout).toContain(`dhcpv6 net10: pool ${P10}100-${P10}101, lease 120s, 2 bound`);
    const text = (await d.ok(['dhcp', 'leases'])).stdout;
    expect(text).toMatch(/network\s+ip\s+mac\s+state\s+hostname\s+expires in\s+family/);
    expect(text).toMatch(new RegExp(`net10\\s+${got.a}\\s+${vm.a.mac}\\s+bound\\s+-\\s+\\d+s\\s+ipv6`));
  }, 60_000);

  it('pool exhausted: d gets NoAddrsAvail and no address; c gets its MAC reservation all the same; stateless still works', async () => {
    const D = dhclient6(vm.d);
    const C = dhclient6(vm.c);
    clients.push(D, C);
    const ec = await C.waitEvent(['BOUND6'], { timeoutMs: 30_000 });
    got.c = canon(ec.ip);
    expect(got.c).toBe(canon(`${P10}50`));
    await waitFor('NoAddrsAvail counted', async () => {
      const n = (await d.ok(['router', 'show'], { json: true })).json[0].networks.find((x: any) => x.name === 'net10');
      return n.ipv6.dhcpv6.counters.no_addrs_avail > 0;
    }, { timeoutMs: 15_000 });
    await sleep(1000);
    expect(D.count(['BOUND6']), D.log).toBe(0);
    expect(await addrs6(vm.d)).toEqual([]);
    await D.stop();
    // Stateless: an Information-Request gets the DNS server and domain all the same (dhclient -6 -S).
    const S = dhclient6(vm.d, ['-S']);
    clients.push(S);
    const es = await S.waitEvent(['BOUND6', 'RENEW6', 'INFORM6'], { timeoutMs: 20_000 }).catch((e) => { throw new Error(`${(e as Error).message}\n${S.log.slice(-1500)}`); });
    expect(es.dns).toBe(canon(`${P10}53`));
    expect(es.domain).toMatch(/lab\.example/);
    await S.stop();
    expect(v6(await leases(d)).filter((l) => l.state === 'bound').map((l) => canon(l.ip)).sort()).toEqual([got.a, got.b, got.c].sort());
  }, 60_000);

  it('dhcpcd renews (SIGUSR1): the lease\'s expiry moves forward', async () => {
    const before = v6(await leases(d)).find((l) => canon(l.ip) === got.b)!;
    await sleep(1500);
    const B = clients[1];
    const n = B.count(['RENEW6']);
    B.signal('SIGUSR1');
    await B.waitEvent(['RENEW6'], { after: n, timeoutMs: 20_000 });
    const after = v6(await leases(d)).find((l) => canon(l.ip) === got.b)!;
    expect(Date.parse(after.expiresAt)).toBeGreaterThan(Date.parse(before.expiresAt));
    expect(after.port).toBe(T.b);
  }, 30_000);

  it('another port sending a Request and a Release with a\'s DUID and IAID changes nothing', async () => {
    const ra = v6(await leases(d)).find((l) => canon(l.ip) === got.a)!;
    const serverDuid = '00030001' + GW_MAC.replace(/:/g, '');
    const notOwner = async (): Promise<number> =>
      (await d.ok(['router', 'show'], { json: true })).json[0].networks.find((x: any) => x.name === 'net10').ipv6.dhcpv6.counters.dropped.not_owner;
    const n0 = await notOwner();
    await sendDhcp6(vm.d, [
      dhcp6Hex({ type: 8, duid: ra.clientId, serverDuid, iaid: ra.iaid, address: got.a }), // Release
      dhcp6Hex({ type: 3, duid: ra.clientId, serverDuid, iaid: ra.iaid, address: got.a }), // Request
      dhcp6Hex({ type: 6, duid: ra.clientId, iaid: ra.iaid, address: got.a }), // Rebind
    ]);
    await waitFor('3 not_owner drops', async () => (await notOwner()) >= n0 + 3, { timeoutMs: 10_000 });
    const after = v6(await leases(d)).find((l) => canon(l.ip) === got.a)!;
    expect(after).toMatchObject({ state: 'bound', port: T.a, expiresAt: ra.expiresAt, mac: vm.a.mac });
  }, 30_000);

  it('dhclient -6 -r releases a\'s lease', async () => {
    await dhclient6Release(vm.a);
    await waitFor('a\'s lease gone', async () => !v6(await leases(d)).some((l) => canon(l.ip) === got.a), { timeoutMs: 10_000 });
  }, 30_000);

  it('VLAN 20 saw no DHCPv6 message of VLAN 10; the metrics count messages, statuses and leases', async () => {
    const lines = await capE.stop(200);
    expect(lines.filter((l) => /dhcp6|546|547/.test(l)), lines.join('\n')).toEqual([]);
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const val = (re: RegExp): number => Number(re.exec(text)?.[1] ?? NaN);
    expect(val(/vswitch_dhcp6_messages_total\{[^}]*network="net10"[^}]*type="solicit"\} (\d+)/)).toBeGreaterThanOrEqual(3);
    expect(val(/vswitch_dhcp6_messages_total\{[^}]*network="net10"[^}]*type="release"\} (\d+)/)).toBeGreaterThanOrEqual(1);
    expect(val(/vswitch_dhcp6_messages_total\{[^}]*network="net10"[^}]*type="information_request"\} (\d+)/)).toBeGreaterThanOrEqual(1);
    expect(val(/vswitch_dhcp6_messages_total\{[^}]*network="net10"[^}]*type="renew"\} (\d+)/)).toBeGreaterThanOrEqual(1);
    expect(val(/vswitch_dhcp6_statuses_total\{[^}]*network="net10"[^}]*status="no_addrs_avail"\} (\d+)/)).toBeGreaterThanOrEqual(1);
    expect(val(/vswitch_dhcp6_dropped_total\{[^}]*network="net10"[^}]*reason="not_owner"\} (\d+)/)).toBeGreaterThanOrEqual(3);
    expect(val(/vswitch_dhcp6_active_leases\{[^}]*network="net10"[^}]*\} (\d+)/)).toBe(2);
    expect(val(/vswitch_dhcp6_pool_size\{[^}]*network="net10"[^}]*\} (\d+)/)).toBe(2);
  }, 30_000);

  it('a reload that changes ipv6.dhcpv6 rebuilds the router: the leases stay, the new lease time applies', async () => {
    const before = v6(await leases(d)).filter((l) => l.state === 'bound');
    const cfg = config() as any;
    cfg.routers.r1.networks.net10.ipv6.dhcpv6.leaseTime = 300;
    writeFileSync(d.configFile, toYaml({ ...cfg, metrics: { listen: `127.0.0.1:${metricsPort}` }, stateDir: `${d.dir}/state` }));
    await d.ok(['reload']);
    expect((await d.ok(['router', 'show'])).stdout).toContain(`dhcpv6 net10: pool ${P10}100-${P10}101, lease 300s, 2 bound`);
    const after = v6(await leases(d)).filter((l) => l.state === 'bound');
    expect(after.map((l) => [l.ip, l.expiresAt, l.port])).toEqual(before.map((l) => [l.ip, l.expiresAt, l.port]));
  }, 30_000);

  it('kill -9 and a restart: b\'s and c\'s leases are still there, same addresses and expiries', async () => {
    for (const c of clients) await c.stop();
    const before = v6(await leases(d)).filter((l) => l.state === 'bound');
    expect(before.length).toBe(2);
    d.proc.kill('SIGKILL');
    await d.waitExit(5000);
    d = await restartDaemon(d);
    const after = v6(await leases(d)).filter((l) => l.state === 'bound');
    expect(after.map((l) => [canon(l.ip), l.expiresAt, l.port, l.clientId]).sort())
      .toEqual(before.map((l) => [canon(l.ip), l.expiresAt, l.port, l.clientId]).sort());
  }, 40_000);
});
