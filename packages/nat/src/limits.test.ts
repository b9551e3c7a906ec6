import { describe, expect, it } from 'vitest';
import { ARP_REPLY, ARP_REQUEST, ETH_HLEN, ICMP_TYPE, IPPROTO, type PortRx, checksum, parseIp4, write16, writeIpv4Header } from '@vswitch/switch';
import { IDLE_MS, LIMIT, LIMIT_KINDS, MAX_PORTS, OVERFLOW_PORT, QUIET_MS, RATE_LIMIT_DEFAULTS, RateLimiter, type RateLimitEvent } from './limits.js';
import { RouterNetwork } from './network.js';
import { Router, type RouterEvent } from './router.js';
import { DhcpServer } from './dhcp/server.js';
import { LeaseStore } from './dhcp/leases.js';
import { arpFrame, writeEth } from './frames.js';

const ip = (s: string): number => parseIp4(s);

describe('RateLimiter: token buckets per (port, kind)', () => {
  it('lets a burst of one second through, then refills at pps', () => {
    const l = new RateLimiter({ arp: 10 });
    let ok = 0;
    for (let i = 0; i < 100; i++) if (l.allow(LIMIT.arp, 'tap1', 1000)) ok++;
    expect(ok).toBe(10);
    expect(l.allow(LIMIT.arp, 'tap1', 1050)).toBe(false); // half a token
    expect(l.allow(LIMIT.arp, 'tap1', 1100)).toBe(true); // one token after 100 ms
    expect(l.allow(LIMIT.arp, 'tap1', 1100)).toBe(false);
    // Never more than the burst after a long pause.
    ok = 0;
    for (let i = 0; i < 100; i++) if (l.allow(LIMIT.arp, 'tap1', 1_000_000)) ok++;
    expect(ok).toBe(10);
    expect(l.totals().arp).toBe(90 + 1 + 1 + 90);
  });

  it('holds a sustained flood to pps: 5 s at 1000 frames/s against 50 pps', () => {
    const l = new RateLimiter({ icmp: 50 });
    let ok = 0;
    for (let t = 0; t < 5000; t++) if (l.allow(LIMIT.icmp, 'tap1', 10_000 + t)) ok++;
    expect(ok).toBeGreaterThanOrEqual(50 * 5);
    expect(ok).toBeLessThanOrEqual(50 * 5 + 50);
  });

  it('keeps ports and kinds apart; 0 is off', () => {
    const l = new RateLimiter({ dhcp: 2, arp: 0 });
    expect([l.allow(LIMIT.dhcp, 'a', 0), l.allow(LIMIT.dhcp, 'a', 0), l.allow(LIMIT.dhcp, 'a', 0)]).toEqual([true, true, false]);
    expect(l.allow(LIMIT.dhcp, 'b', 0)).toBe(true);
    for (let i = 0; i < 1000; i++) expect(l.allow(LIMIT.arp, 'a', 0)).toBe(true);
    expect(l.allow(LIMIT.icmp, 'a', 0)).toBe(true); // not given: off
    expect(l.view(0)).toEqual([{ port: 'a', dropped: { dhcp: 1, arp: 0, icmp: 0, dns: 0, icmp_errors: 0, nd: 0 }, limited: ['dhcp'] }]);
  });

  it('set() applies new rates in place, buckets full at the new burst, counters kept', () => {
    const l = new RateLimiter({ dns: 1 });
    expect([l.allow(LIMIT.dns, 'a', 0), l.allow(LIMIT.dns, 'a', 0)]).toEqual([true, false]);
    l.set({ dns: 5 });
    expect(l.limits).toEqual({ dhcp: 0, arp: 0, icmp: 0, dns: 5, icmpErrors: 0, nd: 0 });
    let ok = 0;
    for (let i = 0; i < 10; i++) if (l.allow(LIMIT.dns, 'a', 0)) ok++;
    expect(ok).toBe(5);
    expect(l.totals().dns).toBe(1 + 5);
    l.set({});
    expect(l.allow(LIMIT.dns, 'a', 0)).toBe(true);
  });

  it('a rate below 1 still passes one packet (the bucket holds at least one token)', () => {
    const l = new RateLimiter({ dhcp: 0.5 });
    expect([l.allow(LIMIT.dhcp, 'a', 0), l.allow(LIMIT.dhcp, 'a', 0)]).toEqual([true, false]);
    expect(l.allow(LIMIT.dhcp, 'a', 2000)).toBe(true);
  });

  it('reports a port once when it starts being limited, and once when the episode ends', () => {
    const events: RateLimitEvent[] = [];
    const l = new RateLimiter({ arp: 5 }, (e) => events.push(e));
    for (let i = 0; i < 50; i++) l.allow(LIMIT.arp, 'tap1', 0);
    for (let i = 0; i < 50; i++) l.allow(LIMIT.arp, 'tap1', 500);
    expect(events).toEqual([{ event: 'rate_limited', port: 'tap1', kind: 'arp', pps: 5 }]);
    l.tick(QUIET_MS - 1);
    expect(events.length).toBe(1);
    l.tick(500 + QUIET_MS);
    expect(events[1]).toEqual({ event: 'rate_limit_ended', port: 'tap1', kind: 'arp', pps: 5, dropped: 45 + 48 });
    // A new episode is reported again.
    for (let i = 0; i < 50; i++) l.allow(LIMIT.arp, 'tap1', 20_000);
    expect(events.map((e) => e.event)).toEqual(['rate_limited', 'rate_limit_ended', 'rate_limited']);
  });

  it('memory stays bounded whatever the keys: at most MAX_PORTS entries and one overflow entry', () => {
    const l = new RateLimiter({ icmp: 1 });
    for (let i = 0; i < MAX_PORTS * 3; i++) l.allow(LIMIT.icmp, `p${i}`, 0);
    expect(l.ports).toBe(MAX_PORTS + 1);
    // The overflow entry is one shared bucket.
    expect(l.allow(LIMIT.icmp, 'another', 0)).toBe(false);
    expect(l.view(0).some((v) => v.port === OVERFLOW_PORT)).toBe(true);
    // Entries idle past QUIET_MS make room for new ports.
    expect(l.allow(LIMIT.icmp, 'fresh', QUIET_MS + 1)).toBe(true);
    expect(l.view(QUIET_MS + 1).length).toBeLessThanOrEqual(2);
    // tick forgets idle entries.
    l.tick(IDLE_MS + QUIET_MS + 2);
    l.tick(IDLE_MS + 2 * QUIET_MS + 60_000);
    expect(l.ports).toBe(0);
  });

  it('the kinds are one closed set, in LIMIT order', () => {
    expect(LIMIT_KINDS).toEqual(['dhcp', 'arp', 'icmp', 'dns', 'icmp_errors', 'nd']);
    expect(Object.values(LIMIT)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(Object.keys(RATE_LIMIT_DEFAULTS)).toEqual(['dhcp', 'arp', 'icmp', 'dns', 'icmpErrors', 'nd']);
  });
});

// ---- Through a router network: each entry point checks the sending port ----

const GW = ip('10.0.10.1');
const GW_MAC = 0x02000a0a0001;
const MAC_B = 0x525400000b0b;
/** Source MACs the "attacker" rotates; portOf puts them all on port tapA. */
const rand = (i: number): number => 0x0200_0000_0000 + 0x1000 + i;

function rig(limits = { dhcp: 5, arp: 10, icmp: 10, dns: 10, icmpErrors: 5 }) {
  const clock = { mono: 10_000 };
  const wall = 1_700_000_000_000;
  const events: RouterEvent[] = [];
  const router = new Router({ name: 'r0', clock: () => clock.mono, wallClock: () => wall, limits, onEvent: (e) => events.push(e) });
  const dhcp = new DhcpServer({
    name: 'net10', serverIp: GW, subnet: ip('10.0.10.0'), prefixLen: 24, pools: [[ip('10.0.10.100'), ip('10.0.10.199')]],
  }, LeaseStore.inMemory('net10'), wall);
  const out: Uint8Array[] = [];
  const net = new RouterNetwork({
    name: 'net10', vlan: 10, gatewayIp: GW, prefix: 24, mac: GW_MAC, clock: () => clock.mono, wallClock: () => wall, dhcp,
    portOf: (m) => (m === MAC_B ? 'tapB' : 'tapA'),
  });
  const rx: PortRx = {
    batch: () => { throw new Error('unexpected batch'); },
    frame: (buf, off, len) => { out.push(buf.slice(off, off + len)); },
    gone: () => {},
    link: () => {},
  };
  net.start(rx);
  router.addNetwork(net);
  const local: number[] = [];
  net.local = (_from, buf, ipOff) => { local.push(buf[ipOff + 9]); };
  return { router, net, out, clock, events, local };
}

const send = (net: RouterNetwork, f: Uint8Array): number => net.send(f, 0, f.length);

function ipFrame(srcMac: number, src: number, dst: number, proto: number, l4: number[]): Uint8Array {
  const f = new Uint8Array(ETH_HLEN + 20 + l4.length);
  writeEth(f, GW_MAC, srcMac, 0x0800);
  writeIpv4Header(f, ETH_HLEN, { totalLen: 20 + l4.length, proto, src, dst, ttl: 64 });
  f.set(l4, ETH_HLEN + 20);
  return f;
}

function echo(srcMac: number, src: number, dst = GW): Uint8Array {
  const f = ipFrame(srcMac, src, dst, IPPROTO.ICMP, [ICMP_TYPE.ECHO_REQUEST, 0, 0, 0, 0, 1, 0, 1, 1, 2, 3, 4]);
  write16(f, ETH_HLEN + 22, checksum(f, ETH_HLEN + 20, 12));
  return f;
}

function discover(srcMac: number, chaddr: number): Uint8Array {
  const bootp = new Uint8Array(240 + 4);
  bootp[0] = 1; bootp[1] = 1; bootp[2] = 6;
  bootp[4] = 0x12; bootp[7] = chaddr & 0xff;
  for (let i = 0; i < 6; i++) bootp[28 + i] = Math.floor(chaddr / 2 ** (8 * (5 - i))) & 0xff;
  bootp.set([0x63, 0x82, 0x53, 0x63], 236);
  bootp.set([53, 1, 1, 255], 240);
  const udp = [0, 68, 0, 67, (8 + bootp.length) >> 8, (8 + bootp.length) & 0xff, 0, 0, ...bootp];
  const f = ipFrame(srcMac, 0, 0xffffffff, IPPROTO.UDP, udp);
  writeEth(f, 0xffffffffffff, srcMac, 0x0800);
  return f;
}

function arp(oper: number, ethDst: number, sha: number, spa: number, tha: number, tpa: number): Uint8Array {
  const f = new Uint8Array(60);
  arpFrame(f, oper, ethDst, sha, spa, tha, tpa);
  return f;
}
const arpReq = (srcMac: number, spa: number): Uint8Array => arp(ARP_REQUEST, 0xffffffffffff, srcMac, spa, 0, GW);

describe('RouterNetwork and Router: one check per entry point, keyed by the sending port', () => {
  it('ARP for the gateway: a port rotating source MACs is cut to its rate, another port is answered', () => {
    const r = rig();
    for (let i = 0; i < 100; i++) send(r.net, arpReq(rand(i), ip('10.0.10.50') + i));
    expect(r.net.counters.arpReplies).toBe(10);
    expect(r.net.counters.rateLimited).toBe(90);
    send(r.net, arpReq(MAC_B, ip('10.0.10.7')));
    expect(r.net.counters.arpReplies).toBe(11);
    // ARP between VMs (not for the gateway) is not the router's work: never limited.
    for (let i = 0; i < 100; i++) send(r.net, arp(ARP_REQUEST, 0xffffffffffff, rand(i), ip('10.0.10.50'), 0, ip('10.0.10.9')));
    expect(r.net.counters.rateLimited).toBe(90);
    // A second later the port has its rate again.
    r.clock.mono += 1000;
    for (let i = 0; i < 100; i++) send(r.net, arpReq(rand(i), ip('10.0.10.50')));
    expect(r.net.counters.arpReplies).toBe(21);
    // Replies to the gateway count too (they feed the ARP cache).
    for (let i = 0; i < 20; i++) send(r.net, arp(ARP_REPLY, GW_MAC, rand(i), ip('10.0.10.60'), GW_MAC, GW));
    expect(r.net.limiter.totals().arp).toBe(90 + 90 + 20);
  });

  it('ICMP echo to the gateway', () => {
    const r = rig();
    for (let i = 0; i < 50; i++) send(r.net, echo(rand(i), ip('10.0.10.50')));
    expect(r.net.counters.icmpEchoReplies).toBe(10);
    send(r.net, echo(MAC_B, ip('10.0.10.7')));
    expect(r.net.counters.icmpEchoReplies).toBe(11);
    expect(r.net.limiter.totals().icmp).toBe(40);
  });

  it('DHCP: DISCOVERs with random chaddrs from one port get its rate of answers; another port still gets an offer', () => {
    const r = rig();
    for (let i = 0; i < 200; i++) send(r.net, discover(rand(i), rand(i)));
    expect(r.net.counters.dhcpRequests).toBe(5);
    expect(r.net.opts.dhcp!.counters.offers).toBe(5);
    r.out.length = 0;
    send(r.net, discover(MAC_B, MAC_B));
    expect(r.net.opts.dhcp!.counters.offers).toBe(6);
    expect(r.out.length).toBe(1);
    expect(r.net.limiter.view(r.clock.mono)).toEqual([
      { port: 'tapA', dropped: { dhcp: 195, arp: 0, icmp: 0, dns: 0, icmp_errors: 0, nd: 0 }, limited: ['dhcp'] },
    ]);
  });

  it('DNS to the gateway\'s forwarder: UDP queries and TCP SYNs to port 53; other traffic to the gateway is not limited', () => {
    const r = rig();
    const udp53 = (mac: number): Uint8Array => ipFrame(mac, ip('10.0.10.50'), GW, IPPROTO.UDP, [0x30, 0x39, 0, 53, 0, 12, 0, 0, 1, 2, 3, 4]);
    const tcp53 = (mac: number, flags: number): Uint8Array => ipFrame(mac, ip('10.0.10.50'), GW, IPPROTO.TCP,
      [0x30, 0x39, 0, 53, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    for (let i = 0; i < 30; i++) send(r.net, udp53(rand(i)));
    expect(r.local.length).toBe(10);
    send(r.net, udp53(MAC_B));
    expect(r.local.length).toBe(11);
    for (let i = 0; i < 10; i++) send(r.net, tcp53(rand(i), 0x02));
    expect(r.local.length).toBe(11); // the SYNs: out of tokens
    for (let i = 0; i < 10; i++) send(r.net, tcp53(rand(i), 0x10));
    expect(r.local.length).toBe(21); // segments of a connection: TCP NAT's, not limited here
    expect(r.net.limiter.totals().dns).toBe(20 + 10);
  });

  it('the ICMP errors the router sends (network unreachable here) are limited; the packets are still counted', () => {
    const r = rig();
    const udpOut = (mac: number): Uint8Array => ipFrame(mac, ip('10.0.10.50'), ip('198.51.100.7'), IPPROTO.UDP, [0x30, 0x39, 0, 9, 0, 8, 0, 0]);
    for (let i = 0; i < 40; i++) send(r.net, udpOut(rand(i)));
    expect(r.router.counters.noRoute).toBe(40);
    expect(r.out.length).toBe(5);
    send(r.net, udpOut(MAC_B));
    expect(r.out.length).toBe(6);
    expect(r.net.limiter.totals().icmp_errors).toBe(35);
  });

  it('logs through the router\'s event budget, and setLimits changes the rates in place', () => {
    const r = rig();
    for (let i = 0; i < 50; i++) send(r.net, echo(rand(i), ip('10.0.10.50')));
    expect(r.events).toEqual([{ event: 'rate_limited', port: 'tapA', kind: 'icmp', pps: 10, network: 'net10' }]);
    r.router.setLimits({ ...RATE_LIMIT_DEFAULTS, icmp: 0 });
    expect(r.router.limits).toEqual({ ...RATE_LIMIT_DEFAULTS, icmp: 0 });
    const before = r.net.counters.icmpEchoReplies;
    for (let i = 0; i < 500; i++) send(r.net, echo(rand(i), ip('10.0.10.50')));
    expect(r.net.counters.icmpEchoReplies - before).toBe(500);
    r.clock.mono += QUIET_MS;
    r.router.tick();
    expect(r.events.at(-1)).toMatchObject({ event: 'rate_limit_ended', port: 'tapA', kind: 'icmp', dropped: 40, network: 'net10' });
  });

  it('a router without limits limits nothing (the library default; the daemon\'s config sets RATE_LIMIT_DEFAULTS)', () => {
    const r = rig({ dhcp: 0, arp: 0, icmp: 0, dns: 0, icmpErrors: 0 });
    for (let i = 0; i < 300; i++) send(r.net, echo(rand(i), ip('10.0.10.50')));
    expect(r.net.counters.icmpEchoReplies).toBe(300);
    expect(r.net.counters.rateLimited).toBe(0);
  });
});
