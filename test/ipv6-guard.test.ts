/*
 * IPv6 tenant protection (issue 14, item 5) through the real daemon: a router
 * network with IPv6 (SLAAC) and no DHCP on VLAN 10, so the IPv4 guards are off
 * and the IPv6 ones on by default; three VMs with the kernel's SLAAC, a the
 * hostile one (scapy):
 * - its rogue RAs (a new prefix, a default route; one behind a Destination
 *   Options header, RFC 7113) change nothing on b: no address in the rogue
 *   prefix, no default route, no RA from a's MAC in b's capture ('ra_guard');
 * - its DHCPv6 Advertise/Reply (UDP 547 -> 546) reach nobody ('dhcpv6_guard');
 * - a spoofed NA claiming b's address does not reach the network: c's neighbour
 *   entry for b keeps b's MAC, c's capture has no NA from a ('nd_spoof'); echo
 *   requests from b's address sent by a reach nobody ('ipv6_source_guard');
 * - DAD between VMs works: c configuring b's address sees it dadfailed (b's
 *   defence reached c), and b keeps its address and reaches the gateway; the
 *   same for b's link-local address (c then still reaches b at it);
 * - c's DAD probe for the gateway's address is answered by the gateway, and a
 *   cannot send from the gateway's address (reserved for the router's port);
 * - `show --json` shows the guards and the addresses each port owns, and the
 *   metrics count the drops by reason.
 */
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, dropCount, findPort, startDaemon } from './helpers/daemon.js';
import { PREFIX, cleanup, freePort, ifname, nsExec, q, tempDir, waitFor } from './helpers/run.js';
import { PYTHON } from './helpers/scapy.js';
import { tcpdump } from './helpers/vm.js';
import { addrs6, canon, eui64, makeV6Vm, ping6, slaacAddr, waitAddr, waitLinkLocal, type V6Vm } from './helpers/ipv6.js';

const X = 20 + (parseInt(PREFIX.slice(1), 16) % 200);
const B10 = `fd00:${X}:10`;
const GW10 = `${B10}::1`;
const GW_MAC = '02:00:00:00:10:01';
const BR = 'br0';
const T = { a: ifname('ga'), b: ifname('gb'), c: ifname('gc') };

/** Sends scapy frame expressions (all of scapy.all imported) from `iface` in `ns`, `count` times each. */
async function scapy(ns: string, iface: string, frames: string[], count = 3): Promise<void> {
  const file = join(tempDir('scapy'), 'send.py');
  writeFileSync(file, ['from scapy.all import *', 'conf.verb = 0', `frames = [${frames.join(',\n  ')}]`,
    `sendp(frames * ${count}, iface=${JSON.stringify(iface)}, inter=0.02)`].join('\n'));
  await nsExec(ns, `${PYTHON} ${q(file)}`, { timeoutMs: 60_000 });
}

describe('IPv6 guards: rogue RA, rogue DHCPv6, spoofed NA and source, DAD between VMs', () => {
  let d: Daemon;
  let metricsPort: number;
  const vm: Record<'a' | 'b' | 'c', V6Vm> = {} as never;
  const addr: Record<'a' | 'b' | 'c', string> = {} as never;
  const ll = (v: V6Vm): string => canon(`fe80::${eui64(v.mac)}`);

  const stats = async (): Promise<any> => (await d.ok(['stats', BR], { json: true })).json;
  const drops = async (port: string, reason: string): Promise<number> => dropCount(findPort(await stats(), port), reason);

  beforeAll(async () => {
    metricsPort = await freePort();
    const access = { type: 'tap', vlan: { mode: 'access', vid: 10 } };
    d = await startDaemon({
      metrics: { listen: `127.0.0.1:${metricsPort}` },
      bridges: { [BR]: { ports: { [T.a]: access, [T.b]: access, [T.c]: access } } },
      routers: { r1: { networks: { net10: { bridge: BR, vlan: 10, address: `10.${X}.10.1/24`, mac: GW_MAC, ipv6: { address: `${GW10}/64`, ra: { interval: 30 } } } } } },
    });
    [vm.a, vm.b, vm.c] = await Promise.all([makeV6Vm('ga', T.a), makeV6Vm('gb', T.b), makeV6Vm('gc', T.c)]);
    for (const k of ['a', 'b', 'c'] as const) {
      addr[k] = slaacAddr(B10, vm[k].mac);
      await waitAddr(vm[k], addr[k]);
      await waitLinkLocal(vm[k]);
    }
    // c knows b before the attack.
    expect(await ping6(vm.c, addr.b)).toBe(true);
    expect(await ping6(vm.b, GW10)).toBe(true);
  });

  afterAll(async () => {
    await d?.stop();
    await cleanup();
  });

  it('the IPv6 guards are on by default for the VM ports (the IPv4 ones off: no DHCP), and show what each port owns', async () => {
    const show = await d.showJson(BR);
    for (const p of Object.values(T)) {
      expect(findPort(show, p)?.guard, p).toMatchObject({ dhcp: false, ipSource: false, ra: true, dhcpv6: true, ipv6Source: true, maxIpv6Addresses: 16 });
      expect(findPort(show, p)?.guard.ipv6Addresses, p).toBeGreaterThanOrEqual(2); // link-local and SLAAC
    }
    expect(findPort(show, 'net10')?.guard).toBeUndefined();
  });

  it('a rogue RA (new prefix, default route; also behind a Destination Options header) changes nothing on b', async () => {
    const before = await drops(T.a, 'ra_guard');
    const cap = await tcpdump(vm.b.ns, vm.b.ifname, 'icmp6');
    const ra = (ext: string) => `Ether(src="${vm.a.mac}", dst="33:33:00:00:00:01")/IPv6(src="${ll(vm.a)}", dst="ff02::1", hlim=255)${ext}`
      + '/ICMPv6ND_RA(routerlifetime=1800, prf=1)/ICMPv6NDOptSrcLLAddr(lladdr="' + vm.a.mac + '")'
      + '/ICMPv6NDOptPrefixInfo(prefix="2001:db8:bad::", prefixlen=64, L=1, A=1, validlifetime=86400, preferredlifetime=14400)'
      + '/ICMPv6NDOptRDNSS(dns=["2001:db8:bad::53"], lifetime=600)';
    await scapy(vm.a.ns, vm.a.ifname, [ra(''), ra('/IPv6ExtHdrDestOpt()')]);
    // A rogue Redirect too.
    await scapy(vm.a.ns, vm.a.ifname, [`Ether(src="${vm.a.mac}", dst="${vm.b.mac}")/IPv6(src="${ll(vm.a)}", dst="${ll(vm.b)}", hlim=255)/ICMPv6ND_Redirect(tgt="${ll(vm.a)}", dst="${GW10}")`], 2);
    const lines = await cap.stop(2000);
    expect(lines.filter((l) => l.includes(vm.a.mac) && /router advertisement|redirect/.test(l))).toEqual([]);
    expect((await addrs6(vm.b)).filter((x) => x.local.startsWith('2001:db8:bad:'))).toEqual([]);
    expect((await nsExec(vm.b.ns, 'ip -6 route show default')).trim()).toBe('');
    expect(await drops(T.a, 'ra_guard') - before).toBe(8);
  });

  it('a rogue DHCPv6 server (Advertise, Reply from UDP 547) reaches nobody', async () => {
    const before = await drops(T.a, 'dhcpv6_guard');
    const cap = await tcpdump(vm.b.ns, vm.b.ifname, 'udp port 546 or udp port 547');
    await scapy(vm.a.ns, vm.a.ifname, [
      `Ether(src="${vm.a.mac}", dst="${vm.b.mac}")/IPv6(src="${ll(vm.a)}", dst="${ll(vm.b)}")/UDP(sport=547, dport=546)/DHCP6_Advertise(trid=1)/DHCP6OptServerId(duid=DUID_LL(lladdr="${vm.a.mac}"))/DHCP6OptDNSServers(dnsservers=["2001:db8:bad::53"])`,
      `Ether(src="${vm.a.mac}", dst="33:33:00:01:00:02")/IPv6(src="${ll(vm.a)}", dst="ff02::1:2")/UDP(sport=547, dport=546)/DHCP6_Reply(trid=2)`,
    ]);
    expect(await cap.stop(1500)).toEqual([]);
    expect(await drops(T.a, 'dhcpv6_guard') - before).toBe(6);
  });

  it('a spoofed NA for b\'s address does not reach the network, nor do packets from b\'s address sent by a', async () => {
    const before = { nd: await drops(T.a, 'nd_spoof'), src: await drops(T.a, 'ipv6_source_guard') };
    const cap = await tcpdump(vm.c.ns, vm.c.ifname, 'icmp6');
    await scapy(vm.a.ns, vm.a.ifname, [
      // Unsolicited, override: "b's address is at a's MAC", from a's own address and from b's.
      `Ether(src="${vm.a.mac}", dst="33:33:00:00:00:01")/IPv6(src="${addr.a}", dst="ff02::1", hlim=255)/ICMPv6ND_NA(tgt="${addr.b}", R=0, S=0, O=1)/ICMPv6NDOptDstLLAddr(lladdr="${vm.a.mac}")`,
      `Ether(src="${vm.a.mac}", dst="${vm.c.mac}")/IPv6(src="${addr.b}", dst="${addr.c}", hlim=255)/ICMPv6ND_NA(tgt="${addr.b}", R=0, S=1, O=1)/ICMPv6NDOptDstLLAddr(lladdr="${vm.a.mac}")`,
      // An echo request "from b".
      `Ether(src="${vm.a.mac}", dst="${vm.c.mac}")/IPv6(src="${addr.b}", dst="${addr.c}")/ICMPv6EchoRequest(id=77, data="spoof")`,
    ]);
    const lines = await cap.stop(1500);
    expect(lines.filter((l) => l.includes(vm.a.mac))).toEqual([]);
    expect(await nsExec(vm.c.ns, `ip -6 neigh show ${addr.b}`)).toContain(vm.b.mac);
    expect(await nsExec(vm.c.ns, `ip -6 neigh show ${addr.b}`)).not.toContain(vm.a.mac);
    expect(await drops(T.a, 'nd_spoof') - before.nd).toBe(6);
    expect(await drops(T.a, 'ipv6_source_guard') - before.src).toBe(3);
    expect(await ping6(vm.c, addr.b)).toBe(true);
  });

  it('DAD between VMs: c configuring b\'s address sees it fail; b keeps it', async () => {
    await nsExec(vm.c.ns, `ip -6 addr add ${addr.b}/64 dev ${vm.c.ifname} nodad=off 2>/dev/null || ip -6 addr add ${addr.b}/64 dev ${vm.c.ifname}`);
    await waitFor('c sees b\'s address dadfailed', async () => (await addrs6(vm.c)).some((x) => x.local === addr.b && x.dadfailed === true), { timeoutMs: 10_000 });
    expect((await addrs6(vm.b)).some((x) => x.local === addr.b && !x.tentative && !x.dadfailed)).toBe(true);
    expect(await ping6(vm.b, GW10)).toBe(true);
    await nsExec(vm.c.ns, `ip -6 addr del ${addr.b}/64 dev ${vm.c.ifname}`);
  });

  it('link-local DAD between VMs: c configuring b\'s link-local address sees it fail; b keeps it', async () => {
    // The DAD probe (from ::, to b's solicited-node group) and b's defending NA (from that very link-local) pass the switch.
    await nsExec(vm.c.ns, `ip -6 addr add ${ll(vm.b)}/64 dev ${vm.c.ifname}`);
    await waitFor('c sees b\'s link-local address dadfailed', async () => (await addrs6(vm.c, true)).some((x) => x.local === ll(vm.b) && x.dadfailed === true), { timeoutMs: 10_000 });
    expect((await addrs6(vm.b, true)).some((x) => x.local === ll(vm.b) && !x.tentative && !x.dadfailed)).toBe(true);
    await nsExec(vm.c.ns, `ip -6 addr del ${ll(vm.b)}/64 dev ${vm.c.ifname}`);
    expect(await ping6(vm.c, `${ll(vm.b)}%${vm.c.ifname}`)).toBe(true);
  });

  it('the gateway defends its address against a VM\'s DAD, and no VM can send from it', async () => {
    await nsExec(vm.c.ns, `ip -6 addr add ${GW10}/64 dev ${vm.c.ifname}`);
    await waitFor('c sees the gateway\'s address dadfailed', async () => (await addrs6(vm.c)).some((x) => x.local === GW10 && x.dadfailed === true), { timeoutMs: 10_000 });
    await nsExec(vm.c.ns, `ip -6 addr del ${GW10}/64 dev ${vm.c.ifname}`);
    const before = await drops(T.a, 'ipv6_source_guard');
    const cap = await tcpdump(vm.b.ns, vm.b.ifname, 'icmp6');
    await scapy(vm.a.ns, vm.a.ifname, [`Ether(src="${vm.a.mac}", dst="${vm.b.mac}")/IPv6(src="${GW10}", dst="${addr.b}")/ICMPv6EchoRequest(id=78)`]);
    expect((await cap.stop(1000)).filter((l) => l.includes(vm.a.mac))).toEqual([]);
    expect(await drops(T.a, 'ipv6_source_guard') - before).toBe(3);
  });

  it('the metrics count the drops by reason on the attacker\'s port only', async () => {
    const m = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const v = (port: string, reason: string): number =>
      Number(new RegExp(`^vswitch_port_drops_total\\{[^}]*port="${port}"[^}]*reason="${reason}"[^}]*\\} (\\S+)$`, 'm').exec(m)?.[1] ?? 0);
    for (const r of ['ra_guard', 'dhcpv6_guard', 'nd_spoof', 'ipv6_source_guard']) {
      expect(v(T.a, r), r).toBeGreaterThan(0);
      expect(v(T.b, r), r).toBe(0);
    }
  });
  it('port set PORT guard off|dhcp-only|default switches the IPv6 guards at runtime too; vlan add names them before they go off', async () => {
    const guard = async (): Promise<any> => findPort(await d.showJson(BR), T.c)?.guard;
    await d.ok(['port', 'set', T.c, 'guard', 'off']);
    expect(await guard()).toBeUndefined(); // no guard on: show leaves the guard out
    // With its guards off, c's RA reaches b's port's capture.
    const cap = await tcpdump(vm.b.ns, vm.b.ifname, 'icmp6');
    await scapy(vm.c.ns, vm.c.ifname, [`Ether(src="${vm.c.mac}", dst="33:33:00:00:00:01")/IPv6(src="${ll(vm.c)}", dst="ff02::1", hlim=255)/ICMPv6ND_RA(routerlifetime=0)`]);
    expect((await cap.stop(2000)).filter((l) => l.includes(vm.c.mac) && /router advertisement/.test(l)).length).toBeGreaterThan(0);
    await d.ok(['port', 'set', T.c, 'guard', 'dhcp-only']);
    expect(await guard()).toMatchObject({ dhcp: true, ipSource: false, ra: true, dhcpv6: true, ipv6Source: false });
    await d.ok(['port', 'set', T.c, 'guard', 'default']);
    expect(await guard()).toMatchObject({ dhcp: false, ipSource: false, ra: true, dhcpv6: true, ipv6Source: true });
    // Turning c into a trunk would switch its IPv6 guards off: refused without --force, naming them.
    const r = await d.cli(['vlan', 'add', 'dev', T.c, 'vid', '20']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/RA guard, DHCPv6 guard and IPv6 source guard go off/);
    expect(await guard()).toMatchObject({ ra: true, dhcpv6: true, ipv6Source: true });
  });
});
