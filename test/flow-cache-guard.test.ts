/*
 * The flow cache on guarded ports (README "Flow cache"), through the real daemon in
 * the default routed deployment: a router network with DHCP on VLAN 10, two VMs on
 * TAP ports that take leases with udhcpc, so their ports carry the DHCP guard and
 * the IPv4 source guard bound to the leases (the default). Pings and a TCP stream
 * between them are replayed by the addon (hits grow) while the port counters balance
 * as the pipeline would make them; a source address the VM was not leased is still
 * dropped and counted (`ip_source_guard`) right after its leased one was replayed;
 * ARP between the VMs (arping's unicast requests and the replies) replays too, and a
 * spoofed ARP right after (an unleased sender address, or the leased one with another
 * MAC in the body) is dropped and counted (`arp_spoof`); so does IPv6 between them (the
 * IPv6 guards on, addresses added by hand), and another VM's IPv6 address right after
 * is dropped and counted (`ipv6_source_guard`);
 * a flood of 5000 unleased sources from one VM is dropped and counted, installs nothing,
 * and neither the neighbour's pings nor the daemon's RSS notice it;
 * a renewal (udhcpc RENEWING) that re-ACKs the same lease invalidates nothing, and a
 * release ends the replays of the released address at once.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, dropCount, findPort, startDaemon } from './helpers/daemon.js';
import { type DhcpVm, makeDhcpVm, udhcpcBackground, udhcpcOnce } from './helpers/dhcp.js';
import { PREFIX, cleanup, freePort, ifname, nsExec, nsExecR, q, tempDir, waitFor } from './helpers/run.js';
import { listening, tool } from './helpers/tcp-tool.js';
import { scapy } from './helpers/vxlan.js';
import { Background, pingCount, pingUntil } from './helpers/vm.js';

const X = 20 + (parseInt(PREFIX.slice(1), 16) % 200);
const ip4 = (host: number): string => `10.${X}.11.${host}`;
const BR = 'br0';
const T = [ifname('gc1'), ifname('gc2')];

describe('flow cache on guarded ports (DHCP VMs, the default guards)', () => {
  let d: Daemon;
  const vm: DhcpVm[] = [];
  const ip: string[] = [];

  const stats = async (): Promise<any> => JSON.parse((await d.ok(['stats', '--json'])).stdout)[0];
  const port = (s: any, name: string): any => s.ports.find((p: any) => p.name === name);

  beforeAll(async () => {
    const access = { type: 'tap', vlan: { mode: 'access', vid: 10 } };
    d = await startDaemon({
      stateDir: tempDir('state'),
      metrics: { listen: 'off' },
      bridges: { [BR]: { ports: { [T[0]]: access, [T[1]]: access } } },
      routers: { r1: { networks: { net10: { bridge: BR, vlan: 10, address: `${ip4(1)}/24`, dhcp: { pool: [`${ip4(100)}-${ip4(120)}`] } } } } },
    });
    vm.push(...await Promise.all([makeDhcpVm('gc1', T[0]), makeDhcpVm('gc2', T[1])]));
    for (const v of vm) {
      const r = await udhcpcOnce(v, { tries: 5 });
      expect(r.code, `${v.name} udhcpc: ${r.log}`).toBe(0);
      ip.push(r.lease!.ip);
    }
  });

  afterAll(async () => {
    await d?.stop();
    await cleanup();
  });

  it('the VM ports are guarded and bound to their leases; pings between them are replayed, the counters balance', async () => {
    const show = await d.showJson(BR);
    for (const p of T) expect(findPort(show, p)?.guard, p).toMatchObject({ dhcp: true, ipSource: true, bindings: 1 });
    expect(show[0].flowCache).toBe(true);
    expect(await pingUntil(vm[0].ns, ip[1])).toBe(true);
    const s0 = await stats();
    expect(await pingCount(vm[0].ns, ip[1], 30, 0.05)).toBe(30);
    const s1 = await stats();
    expect(s1.flowCache.hits - s0.flowCache.hits, 'frames from guarded ports replayed').toBeGreaterThan(20);
    const dl = (k: string, p: string): number => port(s1, p)[k] - port(s0, p)[k];
    expect(dl('rxFrames', T[0])).toBeGreaterThanOrEqual(30);
    expect(dl('rxFrames', T[0])).toBe(dl('txFrames', T[1]));
    expect(dl('rxFrames', T[1])).toBe(dl('txFrames', T[0]));
    expect(dl('rxBytes', T[0])).toBe(dl('txBytes', T[1]));
    for (const p of T) expect(port(s1, p).drops ?? {}, p).toEqual(port(s0, p).drops ?? {});
  });

  it('TCP between the two VMs is replayed (super-frames with their header) and arrives whole', async () => {
    const file = join(tempDir('gc'), 'up.bin');
    const data = randomBytes(8 << 20);
    writeFileSync(file, data);
    const portNo = await freePort();
    const sink = new Background(vm[1].ns, tool(`serve ${portNo} sink`));
    try {
      await listening(sink, 'sink');
      const s0 = await stats();
      const got = await nsExec(vm[0].ns, tool(`put ${ip[1]} ${portNo} ${q(file)}`), { timeoutMs: 60_000 });
      expect(got.trim()).toBe(`got ${data.length} ${createHash('sha256').update(data).digest('hex')}`);
      const s1 = await stats();
      const dl = (k: string, p: string): number => port(s1, p)[k] - port(s0, p)[k];
      expect(s1.flowCache.hits - s0.flowCache.hits).toBeGreaterThan((dl('rxFrames', T[0]) + dl('rxFrames', T[1])) / 2);
      expect(dl('rxFrames', T[0])).toBe(dl('txFrames', T[1]));
      expect(dl('rxBytes', T[0])).toBe(dl('txBytes', T[1]));
    } finally {
      await sink.stop();
    }
  });

  it('a source address the VM was not leased is still dropped and counted right after its leased one replayed', async () => {
    expect(await pingCount(vm[0].ns, ip[1], 5, 0.05)).toBe(5); // the leased source: installed, replayed
    const spoof = ip4(250);
    await nsExec(vm[0].ns, `ip addr add ${spoof}/24 dev ${T[0]}`);
    try {
      const s0 = await stats();
      const r = await nsExecR(vm[0].ns, `busybox ping -c 5 -i 0.05 -W 1 -I ${spoof} ${ip[1]}`);
      expect(r.code, 'no reply to a spoofed source').not.toBe(0);
      const s1 = await stats();
      expect(dropCount(port(s1, T[0]), 'ip_source_guard') - dropCount(port(s0, T[0]), 'ip_source_guard')).toBeGreaterThanOrEqual(5);
      expect(port(s1, T[1]).txFrames - port(s0, T[1]).txFrames, 'nothing reached the other VM').toBe(0);
    } finally {
      await nsExec(vm[0].ns, `ip addr del ${spoof}/24 dev ${T[0]}`);
    }
    expect(await pingCount(vm[0].ns, ip[1], 5, 0.05), 'the leased source still works').toBe(5);
  });

  it('ARP between the two leased VMs replays after the first; a spoofed ARP right after is still dropped and counted', async () => {
    const mac1 = (await nsExec(vm[1].ns, `cat /sys/class/net/${T[1]}/address`)).trim();
    const s0 = await stats();
    // busybox arping broadcasts its first request and, once answered, asks by unicast: requests 2..5 and
    // replies 1..5 are unicast between guarded ports, the first of each way installed, the rest replayed.
    const r = await nsExecR(vm[0].ns, `busybox arping -c 5 -w 8 -I ${T[0]} ${ip[1]}`);
    expect(r.code, `arping: ${r.stdout}${r.stderr}`).toBe(0);
    const s1 = await stats();
    expect(s1.flowCache.hits - s0.flowCache.hits, 'ARP from guarded ports replayed').toBeGreaterThanOrEqual(6);
    const dl = (k: string, p: string): number => port(s1, p)[k] - port(s0, p)[k];
    expect(dl('rxFrames', T[0])).toBeGreaterThanOrEqual(5);
    expect(dl('rxFrames', T[0])).toBe(dl('txFrames', T[1]));
    expect(dl('rxFrames', T[1])).toBe(dl('txFrames', T[0]));
    for (const p of T) expect(port(s1, p).drops ?? {}, p).toEqual(port(s0, p).drops ?? {});
    // Right after, on the same MACs: a sender address vm1 was not leased, and the leased address with
    // another MAC in the body (the key arping's unicast requests installed, but for the sender MAC).
    await scapy(vm[0].ns, [
      `src = get_if_hwaddr("${T[0]}")`,
      `a = [Ether(src=src, dst="${mac1}")/ARP(op=1, hwsrc=src, psrc="${ip4(250)}", hwdst="${mac1}", pdst="${ip[1]}")] * 5`,
      `b = [Ether(src=src, dst="${mac1}")/ARP(op=1, hwsrc="02:00:00:00:00:99", psrc="${ip[0]}", hwdst="${mac1}", pdst="${ip[1]}")] * 5`,
      `sendp(a + b, iface="${T[0]}")`,
    ]);
    const s2 = await stats();
    expect(dropCount(port(s2, T[0]), 'arp_spoof') - dropCount(port(s1, T[0]), 'arp_spoof')).toBe(10);
    expect(port(s2, T[1]).txFrames - port(s1, T[1]).txFrames, 'nothing reached the other VM').toBe(0);
    const again = await nsExecR(vm[0].ns, `busybox arping -c 3 -w 6 -I ${T[0]} ${ip[1]}`);
    expect(again.code, 'the leased pair still resolves').toBe(0);
    expect((await stats()).flowCache.hits - s2.flowCache.hits, 'and is replayed').toBeGreaterThanOrEqual(3);
  });

  it('IPv6 between the two VMs (the IPv6 guards on) replays, each VM\'s claim kept; another VM\'s address right after is still dropped and counted', async () => {
    const a6 = (i: number): string => `2001:db8:${X}::${10 + i}`;
    const mac1 = (await nsExec(vm[1].ns, `cat /sys/class/net/${T[1]}/address`)).trim();
    try {
      for (const [i, v] of vm.entries()) {
        await nsExec(v.ns, `sysctl -qw net.ipv6.conf.${T[i]}.disable_ipv6=0 && ip -6 addr add ${a6(i)}/64 dev ${T[i]} nodad`);
      }
      const show = await d.showJson(BR);
      for (const p of T) expect(findPort(show, p)?.guard, p).toMatchObject({ ipv6Source: true });
      expect(await pingUntil(vm[0].ns, a6(1)), 'IPv6 between the VMs').toBe(true);
      const s0 = await stats();
      expect(await pingCount(vm[0].ns, a6(1), 30, 0.05)).toBe(30);
      const s1 = await stats();
      expect(s1.flowCache.hits - s0.flowCache.hits, 'IPv6 from guarded ports replayed').toBeGreaterThan(40);
      const dl = (k: string, p: string): number => port(s1, p)[k] - port(s0, p)[k];
      expect(dl('rxFrames', T[0])).toBe(dl('txFrames', T[1]));
      expect(dl('rxFrames', T[1])).toBe(dl('txFrames', T[0]));
      for (const p of T) expect(port(s1, p).drops ?? {}, p).toEqual(port(s0, p).drops ?? {});
      const owned = findPort(await d.showJson(BR), T[1])?.guard?.ipv6Addresses;
      expect(owned, 'vm2 owns its address (and its link-local one)').toBeGreaterThanOrEqual(1);
      // vm1 sending from vm2's address: another port's claim, dropped however often vm1's own address was replayed.
      const echos = async (): Promise<number> => Number(/Icmp6InEchos\s+(\d+)/.exec(await nsExec(vm[1].ns, 'cat /proc/net/snmp6'))![1]);
      const e0 = await echos();
      await scapy(vm[0].ns, [
        `src = get_if_hwaddr("${T[0]}")`,
        `sendp([Ether(src=src, dst="${mac1}")/IPv6(src="${a6(1)}", dst="${a6(1)}")/ICMPv6EchoRequest()] * 5, iface="${T[0]}")`,
      ]);
      const s2 = await stats();
      expect(dropCount(port(s2, T[0]), 'ipv6_source_guard') - dropCount(port(s1, T[0]), 'ipv6_source_guard')).toBe(5);
      // (Its port may have sent it the odd MLD report or ND of vm1's since: none of the echo requests.)
      expect(await echos() - e0, 'no echo request reached vm2').toBe(0);
    } finally {
      for (const [i, v] of vm.entries()) await nsExecR(v.ns, `sysctl -qw net.ipv6.conf.${T[i]}.disable_ipv6=1`);
    }
  });

  it('a flood of spoofed sources (IPv4 and ARP) from one VM is dropped and counted, installs nothing, and neither the neighbour nor the daemon\'s memory notices', async () => {
    const rss = (): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${d.proc.pid}/status`, 'utf8'))![1]);
    expect(await pingCount(vm[0].ns, ip[1], 5, 0.05)).toBe(5); // the leased flow installed
    const mac1 = (await nsExec(vm[1].ns, `cat /sys/class/net/${T[1]}/address`)).trim();
    const s0 = await stats();
    const rss0 = rss();
    const N = 5000;
    // 5000 UDP datagrams to vm2, each from another unleased source address (and port), while vm2 pings the gateway.
    const [, neighbour] = await Promise.all([
      scapy(vm[0].ns, [
        `src = get_if_hwaddr("${T[0]}")`,
        `ps = [Ether(src=src, dst="${mac1}")/IP(src="10.${X}.%d.%d" % (12 + i // 250, 1 + i % 250), dst="${ip[1]}")/UDP(sport=1024 + i, dport=9)/Raw(b"x" * 18) for i in range(${N})]`,
        // And as many unicast ARP replies to vm2 from unleased sender addresses (the ARP class the cache now takes).
        `ps += [Ether(src=src, dst="${mac1}")/ARP(op=2, hwsrc=src, psrc="10.${X}.%d.%d" % (40 + i // 250, 1 + i % 250), hwdst="${mac1}", pdst="${ip[1]}") for i in range(${N})]`,
        `sendp(ps, iface="${T[0]}")`,
      ]),
      pingCount(vm[1].ns, ip4(1), 40, 0.05),
    ]);
    expect(neighbour, 'the neighbour\'s pings to the gateway during the flood').toBe(40);
    const s1 = await stats();
    expect(dropCount(port(s1, T[0]), 'ip_source_guard') - dropCount(port(s0, T[0]), 'ip_source_guard')).toBe(N);
    expect(dropCount(port(s1, T[0]), 'arp_spoof') - dropCount(port(s0, T[0]), 'arp_spoof')).toBe(N);
    // vm2's port sent it only its 40 replies and the odd ARP: none of the N.
    expect(port(s1, T[1]).txFrames - port(s0, T[1]).txFrames, 'none of the flood reached vm2').toBeLessThan(50);
    expect(s1.flowCache.installs - s0.flowCache.installs, 'a refused frame is never installed').toBeLessThanOrEqual(2);
    expect(rss() - rss0, 'the daemon\'s RSS (kB)').toBeLessThan(32 * 1024);
    expect(await pingCount(vm[0].ns, ip[1], 10, 0.05), 'the leased flow still works').toBe(10);
    expect((await stats()).flowCache.hits - s1.flowCache.hits, 'and is replayed').toBeGreaterThan(5);
  });

  it('a renewal (RENEWING: the same lease re-ACKed) invalidates nothing and replays go on; a release ends them at once', async () => {
    const client = udhcpcBackground(vm[0]);
    try {
      await client.waitEvent(['bound', 'renew']);
      expect(await pingCount(vm[0].ns, ip[1], 5, 0.05)).toBe(5);
      const s0 = await stats();
      client.proc.kill('SIGUSR1'); // renew: a unicast REQUEST from the leased address, ACKed with the same binding
      const ev = await client.waitEvent(['bound', 'renew'], { after: 1 });
      expect(ev.ip).toBe(ip[0]);
      expect(await pingCount(vm[0].ns, ip[1], 10, 0.05)).toBe(10);
      const s1 = await stats();
      expect(s1.flowCache.invalidations - s0.flowCache.invalidations, 'the same binding: no bump').toBe(0);
      expect(s1.flowCache.hits - s0.flowCache.hits, 'replays went on').toBeGreaterThan(5);
      // The RELEASE is a unicast to the server, sent once and followed at once by the client's
      // deconfig (its address flushed): a neighbour entry still to be resolved then could lose
      // it. A ping to the gateway first makes that entry fresh, as any recent traffic would.
      expect(await pingCount(vm[0].ns, ip4(1), 1, 0.05), 'the gateway answers').toBe(1);
      const deconfigs = client.count(['deconfig']);
      client.proc.kill('SIGUSR2'); // release: the server removes the lease, the daemon the binding
      await client.waitEvent(['deconfig'], { after: deconfigs, timeoutMs: 10_000 });
      await waitFor('the lease released: the binding gone', async () => findPort(await d.showJson(BR), T[0])?.guard?.bindings === 0
        ? true : undefined, { timeoutMs: 10_000 }).catch((e: Error) => {
        throw new Error(`${e.message}; udhcpc's log:\n${client.log}`);
      });
      const s2 = await stats();
      expect(s2.flowCache.invalidations - s1.flowCache.invalidations, 'the binding removed: a bump').toBeGreaterThan(0);
      // The VM keeps using the address (its client's script removed it: put back by hand, as a misbehaving VM would).
      // Its neighbour entry too (gone with the address): otherwise only its ARP requests go out (dropped as arp_spoof).
      const mac1 = (await nsExec(vm[1].ns, `cat /sys/class/net/${T[1]}/address`)).trim();
      await nsExec(vm[0].ns, `ip addr replace ${ip[0]}/24 dev ${T[0]} && ip neigh replace ${ip[1]} lladdr ${mac1} dev ${T[0]} nud permanent`);
      const r = await nsExecR(vm[0].ns, `busybox ping -c 5 -i 0.05 -W 1 ${ip[1]}`);
      expect(r.code, 'no reply: the frames are dropped').not.toBe(0);
      const s3 = await stats();
      expect(dropCount(port(s3, T[0]), 'ip_source_guard') - dropCount(port(s2, T[0]), 'ip_source_guard')).toBeGreaterThanOrEqual(5);
      expect(port(s3, T[1]).txFrames - port(s2, T[1]).txFrames, 'nothing replayed to the other VM').toBe(0);
      expect(s3.flowCache.hits).toBe(s2.flowCache.hits);
    } finally {
      await client.stop();
    }
  });
});
