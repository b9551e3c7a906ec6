/*
 * IPv6 on router networks (issue 14, item 1) through the real daemon, with the
 * kernel's own SLAAC in the VM namespaces (IPv6 on, accept_ra 2, autoconf):
 *
 *   br0 VLAN 10 -- net10 10.X.10.1/24, ipv6 fd00:X:10::1/64 slaac, ra { interval 30, mtu 1400, rdnss, dnssl }
 *                  VMs a, b (TAP, access 10)
 *   br0 VLAN 20 -- net20 10.X.20.1/24, ipv6 fd00:X:20::1/64 dhcpv6
 *                  VM c (TAP, access 20)
 *
 * - a and b get their EUI-64 address in fd00:X:10::/64 from the kernel's SLAAC,
 *   the link MTU from the RA, the prefix on-link, and no default route (router
 *   lifetime 0: the two networks are not interconnected and there is no uplink,
 *   so the router has nowhere to route their IPv6);
 * - rdisc6 (ndisc6) sees the RA's flags, prefix, MTU, RDNSS and DNSSL; on VLAN 20
 *   the dhcpv6 mode's M/O flags and no A flag, and c makes no SLAAC address;
 * - ping -6 reaches the gateway's link-local and prefix addresses, and a reaches b;
 * - tcpdump in c (VLAN 20) sees none of VLAN 10's RS, NS or RA;
 * - `router show` shows the addresses, mode and counters, the metrics count RAs,
 *   RSs and NSs answered;
 * - a flood of RS and NS from one VM is cut to the port's `nd` rate (counted
 *   under its port) and costs at most one RA per 3 s; another VM still gets answers;
 * - a reload that removes net10's ipv6 sends the last RA: a's address turns
 *   deprecated (preferred lifetime 0) and rdisc6 has nothing to show any more;
 * - stopping the daemon sends the last RA on VLAN 20 too (tcpdump in c).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { Daemon, startDaemon, toYaml } from './helpers/daemon.js';
import { addrs6, canon, eui64, makeV6Vm, ping6, rdisc6, slaacAddr, waitAddr, waitLinkLocal, type V6Vm } from './helpers/ipv6.js';
import { join } from 'node:path';
import { PREFIX, cleanup, freePort, ifname, nsExec, nsExecR, q, sleep, tempDir, waitFor } from './helpers/run.js';
import { PYTHON } from './helpers/scapy.js';
import { tcpdump } from './helpers/vm.js';

const X = 20 + (parseInt(PREFIX.slice(1), 16) % 200);
const B10 = `fd00:${X}:10`;
const P10 = `fd00:${X}:10::`;
const P20 = `fd00:${X}:20::`;
const GW10 = `${P10}1`;
const DNS6 = `${P10}53`;
const BR = 'br0';

function config(withIpv6 = true): unknown {
  const access = (vid: number) => ({ type: 'tap', vlan: { mode: 'access', vid } });
  return {
    // c's TAP is persistent: it outlives the daemon, so the last RA at shutdown can be seen in c.
    bridges: { [BR]: { ports: { [T.a]: access(10), [T.b]: access(10), [T.c]: { ...access(20), persistent: true } } } },
    routers: {
      r1: {
        networks: {
          net10: {
            bridge: BR, vlan: 10, address: `10.${X}.10.1/24`, mac: '02:00:00:00:10:01',
            ...(withIpv6 ? { ipv6: { address: `${GW10}/64`, ra: { interval: 30, mtu: 1400, rdnss: [DNS6], dnssl: ['lab.example'] } } } : {}),
          },
          net20: { bridge: BR, vlan: 20, address: `10.${X}.20.1/24`, ipv6: { address: `${P20}1/64`, mode: 'dhcpv6' } },
        },
      },
    },
  };
}

const T = { a: ifname('6a'), b: ifname('6b'), c: ifname('6c') };

describe('IPv6 on router networks: SLAAC, RA options, ND, echo, VLAN isolation, the last RA', () => {
  let d: Daemon;
  let metricsPort: number;
  const vm: Record<'a' | 'b' | 'c', V6Vm> = {} as never;
  const gwLL = canon(`fe80::${eui64('02:00:00:00:10:01')}`);

  beforeAll(async () => {
    metricsPort = await freePort();
    d = await startDaemon({ ...(config() as object), metrics: { listen: `127.0.0.1:${metricsPort}` } });
    [vm.a, vm.b, vm.c] = await Promise.all([makeV6Vm('6a', T.a), makeV6Vm('6b', T.b), makeV6Vm('6c', T.c)]);
  });

  afterAll(async () => {
    await d?.stop();
    await cleanup();
  });

  it('the kernel\'s SLAAC: an EUI-64 address in the prefix, the RA\'s MTU, the prefix on-link, no default route', async () => {
    await waitAddr(vm.a, slaacAddr(B10, vm.a.mac));
    await waitAddr(vm.b, slaacAddr(B10, vm.b.mac));
    const a = (await addrs6(vm.a)).find((x) => x.local === slaacAddr(B10, vm.a.mac))!;
    expect(a.prefixlen).toBe(64);
    expect(a.dynamic).toBe(true);
    expect((await nsExec(vm.a.ns, `cat /proc/sys/net/ipv6/conf/${vm.a.ifname}/mtu`)).trim()).toBe('1400');
    const routes = await nsExec(vm.a.ns, 'ip -6 route show');
    expect(routes).toMatch(new RegExp(`^fd00:${X}:10::/64 dev ${vm.a.ifname} proto kernel`, 'm'));
    expect((await nsExec(vm.a.ns, 'ip -6 route show default')).trim()).toBe('');
  });

  it('rdisc6 sees the flags, prefix, MTU, RDNSS and DNSSL; the dhcpv6 network has M and O and no SLAAC', async () => {
    await waitLinkLocal(vm.a);
    const out = await rdisc6(vm.a);
    expect(out).toMatch(/Stateful address conf\.\s*:\s*No/);
    expect(out).toMatch(/Stateful other conf\.\s*:\s*No/);
    expect(out).toMatch(/Router lifetime\s+:\s+0 \(0x00000000\) seconds/);
    expect(out).toMatch(new RegExp(`Prefix\\s+:\\s+fd00:${X}:10::/64`));
    expect(out).toMatch(/On-link\s*:\s*Yes/);
    expect(out).toMatch(/Autonomous address conf\.\s*:\s*Yes/);
    expect(out).toMatch(/Valid time\s+:\s+86400/);
    expect(out).toMatch(/Pref\. time\s+:\s+14400/);
    expect(out).toMatch(/MTU\s+:\s+1400 bytes/);
    expect(out).toMatch(new RegExp(`Recursive DNS server\\s+:\\s+${DNS6.replace(/:/g, ':')}`));
    expect(out).toMatch(/DNS search list\s+:\s+lab\.example/);
    expect(out).toMatch(new RegExp(`from ${gwLL.replace(/:/g, ':')}`));
    await waitLinkLocal(vm.c);
    const c = await rdisc6(vm.c);
    expect(c).toMatch(/Stateful address conf\.\s*:\s*Yes/);
    expect(c).toMatch(/Stateful other conf\.\s*:\s*Yes/);
    expect(c).toMatch(new RegExp(`Prefix\\s+:\\s+fd00:${X}:20::/64`));
    expect(c).toMatch(/Autonomous address conf\.\s*:\s*No/);
    expect((await addrs6(vm.c)).filter((x) => x.local.startsWith(`fd00:${X}:20:`))).toEqual([]);
  });

  it('ping -6 reaches the gateway\'s link-local and prefix addresses, and the other VM', async () => {
    await waitLinkLocal(vm.a);
    expect(await ping6(vm.a, `${gwLL}%${vm.a.ifname}`)).toBe(true);
    expect(await ping6(vm.a, GW10)).toBe(true);
    expect(await ping6(vm.b, GW10)).toBe(true);
    expect(await ping6(vm.a, slaacAddr(B10, vm.b.mac))).toBe(true);
    // The gateway's neighbour entry came from its NA, with its MAC.
    expect(await nsExec(vm.a.ns, `ip -6 neigh show ${GW10}`)).toMatch(/lladdr 02:00:00:00:10:01 router/);
  });

  it('RS, NS and RAs of VLAN 10 never reach VLAN 20', async () => {
    const cap = await tcpdump(vm.c.ns, vm.c.ifname, 'icmp6');
    await rdisc6(vm.a);
    await nsExecR(vm.a.ns, `ndisc6 -1 -w 500 -r 2 ${q(GW10)} ${q(vm.a.ifname)}`, { timeoutMs: 10_000 });
    await nsExec(vm.a.ns, `ip -6 neigh flush dev ${q(vm.a.ifname)}`);
    expect(await ping6(vm.a, slaacAddr(B10, vm.b.mac), 1)).toBe(true);
    await rdisc6(vm.c); // the capture works: VLAN 20's own RS and RA are in it
    const lines = await cap.stop(1000);
    expect(lines.filter((l) => /router advertisement/.test(l)).length).toBeGreaterThan(0);
    const foreign = lines.filter((l) => l.includes(vm.a.mac) || l.includes(vm.b.mac) || l.includes('02:00:00:00:10:01') || l.includes(`fd00:${X}:10:`));
    expect(foreign).toEqual([]);
  });

  it('router show and the metrics show the IPv6 side and its counters', async () => {
    const show = (await d.ok(['router', 'show', 'r1'], { json: true })).json;
    const r = Array.isArray(show) ? show[0] : show;
    const n10 = r.networks.find((n: any) => n.name === 'net10');
    expect(n10.ipv6).toMatchObject({ address: `${GW10}/64`, linkLocal: gwLL, prefix: `${P10}/64`, mode: 'slaac', routerLifetime: 0, mtu: 1400, rdnss: [DNS6], dnssl: ['lab.example'] });
    expect(n10.ipv6.counters.raSent).toBeGreaterThan(0);
    expect(n10.ipv6.counters.rsReceived).toBeGreaterThan(0);
    expect(n10.ipv6.counters.nsAnswered).toBeGreaterThan(0);
    expect(n10.ipv6.counters.echoReplies).toBeGreaterThanOrEqual(6);
    expect(r.networks.find((n: any) => n.name === 'net20').ipv6.mode).toBe('dhcpv6');
    const text = (await d.ok(['router', 'show', 'r1'])).stdout;
    expect(text).toMatch(new RegExp(`net10\\s+${GW10}/64\\s+${gwLL}\\s+slaac\\s+10-30s\\s+${DNS6}\\s+lab\\.example`));
    expect(text).toMatch(new RegExp(`net20\\s+fd00:${X}:20::1/64\\s+\\S+\\s+dhcpv6`));
    expect(text).toContain('nd 100/s');
    const m = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const v = (name: string, labels: string): number => Number(new RegExp(`^${name}\\{${labels}\\} (\\S+)$`, 'm').exec(m)?.[1] ?? NaN);
    expect(v('vswitch_router_nd_total', 'router="r1",network="net10",vlan="10",kind="ra_sent"')).toBeGreaterThan(0);
    expect(v('vswitch_router_nd_total', 'router="r1",network="net10",vlan="10",kind="rs_received"')).toBeGreaterThan(0);
    expect(v('vswitch_router_nd_total', 'router="r1",network="net10",vlan="10",kind="ns_answered"')).toBeGreaterThan(0);
    expect(v('vswitch_router_nd_total', 'router="r1",network="net10",vlan="10",kind="echo_replies"')).toBeGreaterThanOrEqual(6);
  });

  it('a flood of Router and Neighbor Solicitations from one port is cut to its nd rate, and costs at most one RA per 3 s', async () => {
    const n10 = async (): Promise<any> => ((await d.ok(['router', 'show', 'r1'], { json: true })).json[0]).networks.find((n: any) => n.name === 'net10');
    const before = await n10();
    const file = join(tempDir('flood'), 'flood.py');
    writeFileSync(file, ['from scapy.all import *', 'conf.verb = 0',
      `ll = "fe80::" + in6_mactoifaceid("${vm.b.mac}")`,
      `rs = Ether(src="${vm.b.mac}", dst="33:33:00:00:00:02")/IPv6(src=ll, dst="ff02::2", hlim=255)/ICMPv6ND_RS()/ICMPv6NDOptSrcLLAddr(lladdr="${vm.b.mac}")`,
      `ns = Ether(src="${vm.b.mac}", dst="33:33:ff:00:00:01")/IPv6(src=ll, dst="ff02::1:ff00:1", hlim=255)/ICMPv6ND_NS(tgt="${GW10}")/ICMPv6NDOptSrcLLAddr(lladdr="${vm.b.mac}")`,
      `s = conf.L2socket(iface="${vm.b.ifname}")`,
      'for i in range(500): s.send(rs); s.send(ns)'].join('\n'));
    const t0 = Date.now();
    await nsExec(vm.b.ns, `${PYTHON} ${q(file)}`, { timeoutMs: 60_000 });
    const secs = (Date.now() - t0) / 1000;
    await sleep(500);
    const after = await n10();
    const answered = (after.ipv6.counters.rsReceived - before.ipv6.counters.rsReceived) + (after.ipv6.counters.nsAnswered - before.ipv6.counters.nsAnswered);
    // 100/s per port, a burst of 100: what got through is bounded by the bucket, the rest dropped and counted under b's port.
    expect(answered).toBeLessThanOrEqual(100 + 100 * (secs + 1));
    expect(after.rateLimited.nd - before.rateLimited.nd).toBeGreaterThanOrEqual(1000 - answered - 10);
    expect(after.rateLimited.ports.find((p: any) => p.port === T.b)?.dropped.nd).toBeGreaterThan(0);
    expect(after.ipv6.counters.raSent - before.ipv6.counters.raSent).toBeLessThanOrEqual(Math.ceil((secs + 0.5) / 3) + 2);
    // a, on another port, still gets its answers.
    await nsExec(vm.a.ns, `ip -6 neigh flush dev ${q(vm.a.ifname)}`);
    expect(await ping6(vm.a, GW10, 1)).toBe(true);
  });

  it('a reload without net10\'s ipv6 sends the last RA: a\'s address is deprecated, rdisc6 sees no prefix any more', async () => {
    const want = slaacAddr(B10, vm.a.mac);
    writeFileSync(d.configFile, toYaml({ ...(config(false) as object), metrics: { listen: `127.0.0.1:${metricsPort}` }, stateDir: `${d.dir}/state` }));
    await d.ok(['reload']);
    await waitFor('a\'s address deprecated', async () => (await addrs6(vm.a)).some((x) => x.local === want && x.deprecated === true), { timeoutMs: 10_000 });
    const out = await rdisc6(vm.a);
    expect(out).not.toMatch(new RegExp(`fd00:${X}:10::`));
    // VLAN 20 keeps its RAs.
    expect(await rdisc6(vm.c)).toMatch(new RegExp(`Prefix\\s+:\\s+fd00:${X}:20::/64`));
  });

  it('the daemon stopping sends the last RA (router and prefix lifetimes 0) on the networks that still have IPv6', async () => {
    // The prefix is on-link in c (a route with the RA's lifetime), though c makes no address in a dhcpv6 network.
    expect(await nsExec(vm.c.ns, `ip -6 route show fd00:${X}:20::/64`)).toMatch(/ expires \d+sec/);
    const cap = await tcpdump(vm.c.ns, vm.c.ifname, '-vv icmp6');
    const r = await d.stop();
    expect(r.code).toBe(0);
    const lines = (await cap.stop(500)).join('\n');
    expect(lines).toMatch(new RegExp(`router advertisement[^]*router lifetime 0s[^]*prefix info option[^\\n]*fd00:${X}:20::/64[^\\n]*valid time 0s, pref\\. time 0s`));
    // ... and the kernel took it: the on-link route is gone.
    expect((await nsExec(vm.c.ns, `ip -6 route show fd00:${X}:20::/64`)).trim()).toBe('');
  });
});
