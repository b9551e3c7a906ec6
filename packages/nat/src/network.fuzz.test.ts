/*
 * The router's networks under random and mutated frames (fast-check). A Router
 * with three networks (net10 with a DHCP server on an in-memory LeaseStore, net20
 * interconnected with it, net30 not) and an uplink that is never attached (NAPT
 * runs; what it would send goes nowhere), each network started with a PortRx that
 * records what it emits into the bridge. Frames: ARP of every shape, IPv4 with bad
 * versions / IHL / total lengths / checksums / TTLs / fragments, UDP to 67 with
 * broken and looping DHCP options, ICMP, TCP with bad offsets, random bytes, all
 * mutated; plus packets from the uplink into NAPT's inbound side.
 *
 * What must hold:
 * - nothing throws;
 * - every frame received is counted once: malformed, ignored, an ARP or echo
 *   reply, a DHCP request, or routed (valid ARP replies excepted: they only teach
 *   the ARP cache and no counter says so);
 * - what the router emits is well formed: from the network's MAC, IPv4 with a
 *   header checksum that verifies, and frames the router made itself (echo replies,
 *   ICMP errors, DHCP) with L4 checksums that verify and DHCP that parses;
 * - nothing depends on bytes outside the frame: a twin router fed the same frames,
 *   split in two pieces (send2, as the bridge does when it strips a tag) and with
 *   other bytes left in its receive buffer from a junk frame in between, emits
 *   exactly the same frames and ends with the same counters and leases;
 * - no address is leased twice.
 */
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import {
  checkArp, checkIpv4, checksum, fold, IPV4_OK, parseIp4, pseudoSum, read16, readMac, sum16, write16, write32, writeMac,
  type PortRx,
} from '@vswitch/switch';
import { LeaseStore } from './dhcp/leases.js';
import { DhcpServer } from './dhcp/server.js';
import { BOOTREPLY, BOOTREQUEST, DhcpMsg, DhcpWriter, Opt, parseDhcp } from './dhcp/wire.js';
import { parseForward } from './napt/forwards.js';
import { RouterNetwork } from './network.js';
import { Router } from './router.js';

vi.setConfig({ testTimeout: 120_000 });
const RUNS = Number(process.env.FUZZ_RUNS ?? 150);

const ip = (s: string): number => parseIp4(s);
const T0 = Date.UTC(2025, 0, 1);
const PUB = ip('198.51.100.2');
const UPGW = ip('198.51.100.1');
const NETS = {
  net10: { gw: ip('10.0.10.1'), mac: 0x02000a0a0a01, vlan: 10 },
  net20: { gw: ip('10.0.20.1'), mac: 0x02000a0a1401, vlan: 20 },
  net30: { gw: ip('10.0.30.1'), mac: 0x02000a0a1e01, vlan: 30 },
} as const;
type NetName = keyof typeof NETS;
const CLIENT_MACS = [0x525400000001, 0x525400000002, 0x525400000003, 0x525400000004, 0x525400000050];
const HOST20 = ip('10.0.20.5');
const HOST20_MAC = 0x525400002005;

interface Emitted { net: NetName; frame: Uint8Array }

function rig() {
  const clock = { mono: 10_000, wall: T0 };
  const out: Emitted[] = [];
  const router = new Router({
    name: 'r0',
    clock: () => clock.mono,
    wallClock: () => clock.wall,
    uplink: { ifname: 'vsfuzz-none0', mac: 0x02000a0a6401, address: PUB, prefix: 24, gateway: UPGW },
    interconnect: [['net10', 'net20']],
    // One NAPT port seed for both twins (the default seeds from the clock: two rigs made a
    // millisecond apart would map the same flow to different public ports).
    napt: { seed: 0x5eed },
  });
  const nets = {} as Record<NetName, RouterNetwork>;
  for (const [name, n] of Object.entries(NETS) as [NetName, (typeof NETS)[NetName]][]) {
    const subnet = (n.gw & 0xffffff00) >>> 0;
    const dhcp = name === 'net10'
      ? new DhcpServer({
        name, serverIp: n.gw, subnet, prefixLen: 24,
        pools: [[subnet + 100, subnet + 103]],
        reservations: [{ mac: 0x525400000050, ip: subnet + 50, hostname: 'web' }],
        dns: [ip('192.0.2.53')], domain: 'lab.example', mtu: 1400,
        routes: [{ dest: ip('172.16.0.0'), prefixLen: 12, gateway: n.gw }],
        maxLeasesPerPort: 3,
      }, LeaseStore.inMemory(name), clock.wall)
      : undefined;
    const net = new RouterNetwork({
      name, vlan: n.vlan, gatewayIp: n.gw, prefix: 24, mac: n.mac, clock: () => clock.mono, wallClock: () => clock.wall,
      dhcp, portOf: (m) => (m % 2 === 0 ? 'p-even' : 'p-odd'),
    });
    const rx: PortRx = {
      batch: () => { throw new Error('a router network emits frames one by one'); },
      frame: (buf, off, len) => { out.push({ net: name, frame: buf.slice(off, off + len) }); },
      gone: () => { throw new Error('a router network never goes away'); },
      link: () => { throw new Error('a router network has no link to lose'); },
    };
    net.start(rx);
    router.addNetwork(net);
    nets[name] = net;
  }
  router.napt!.forwards.add(parseForward({ proto: 'tcp', public: '8080', inside: '10.0.10.50:80' }));
  router.napt!.forwards.add(parseForward({ proto: 'udp', public: '5353', inside: '10.0.20.5:53' }));
  nets.net20.arp.learn(HOST20, HOST20_MAC);
  nets.net10.arp.learn(ip('10.0.10.50'), 0x525400000050);
  return { router, nets, clock, out };
}
type Rig = ReturnType<typeof rig>;

// ---------------------------------------------------------------------------
// Builders

const be16 = (v: number): number[] => [(v >>> 8) & 0xff, v & 0xff];
const be32 = (v: number): number[] => [v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];

function cat(...parts: ArrayLike<number>[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

function eth(dst: number, src: number, type: number): Uint8Array {
  const h = new Uint8Array(14);
  writeMac(h, 0, dst);
  writeMac(h, 6, src);
  write16(h, 12, type);
  return h;
}

interface IpSpec {
  version: number; ihl: number; totalDelta: number; frag: number; ttl: number; src: number; dst: number;
  proto: number; goodSum: boolean; optByte: number;
}

function ipv4(s: IpSpec, l4: Uint8Array): Uint8Array {
  const hl = Math.max(20, s.ihl * 4);
  const h = new Uint8Array(hl).fill(s.optByte);
  h[0] = (s.version << 4) | s.ihl;
  h[1] = 0;
  write16(h, 2, Math.max(0, Math.min(0xffff, hl + l4.length + s.totalDelta)));
  write16(h, 4, 0x4242);
  write16(h, 6, s.frag);
  h[8] = s.ttl;
  h[9] = s.proto;
  write16(h, 10, 0);
  write32(h, 12, s.src);
  write32(h, 16, s.dst);
  if (s.goodSum) write16(h, 10, checksum(h, 0, Math.min(hl, s.ihl * 4 || 20)));
  return cat(h, l4);
}

function udp(src: number, dst: number, sport: number, dport: number, payload: Uint8Array, ulenDelta: number, sum: boolean): Uint8Array {
  const u = cat(be16(sport), be16(dport), be16(Math.max(0, 8 + payload.length + ulenDelta)), [0, 0], payload);
  if (sum) {
    let c = checksum(u, 0, u.length, pseudoSum(src, dst, 17, u.length));
    if (c === 0) c = 0xffff;
    write16(u, 6, c);
  }
  return u;
}

// ---------------------------------------------------------------------------
// Arbitraries

const u8 = fc.integer({ min: 0, max: 255 });
const u16 = fc.integer({ min: 0, max: 0xffff });
const w = <T>(weight: number, arbitrary: fc.Arbitrary<T>) => ({ weight, arbitrary });

const clientMac = fc.oneof(w(6, fc.constantFrom(...CLIENT_MACS)), w(1, fc.constantFrom(0, 0xffffffffffff, 0x01005e000001)), w(1, fc.integer({ min: 0, max: 2 ** 48 - 1 })));
const anyIp = fc.oneof(
  w(6, fc.constantFrom(
    ip('10.0.10.1'), ip('10.0.10.100'), ip('10.0.10.101'), ip('10.0.10.50'), ip('10.0.10.7'), ip('10.0.10.255'),
    ip('10.0.20.1'), HOST20, ip('10.0.20.99'), ip('10.0.30.5'), ip('8.8.8.8'), PUB, UPGW, 0, 0xffffffff, ip('224.0.0.1'),
  )),
  w(1, fc.integer({ min: 0, max: 0xffffffff })),
);

/** A DHCP message: a plausible request, then a tail of broken, repeated and looping options. */
const dhcpArb = fc.record({
  type: fc.oneof(w(6, fc.constantFrom(1, 3, 4, 7, 8)), w(1, fc.constantFrom(0, 2, 5, 6, 9, 255))),
  op: fc.oneof(w(8, fc.constant(BOOTREQUEST)), w(1, fc.constantFrom(BOOTREPLY, 0, 3))),
  chaddr: clientMac,
  ciaddr: fc.oneof(w(4, fc.constant(0)), w(1, anyIp)),
  giaddr: fc.oneof(w(8, fc.constant(0)), w(1, anyIp)),
  flags: fc.constantFrom(0, 0x8000, 0xffff),
  requested: fc.option(anyIp),
  serverId: fc.option(fc.oneof(fc.constant(ip('10.0.10.1')), anyIp)),
  clientId: fc.option(fc.uint8Array({ maxLength: 20 })),
  maxSize: fc.option(fc.constantFrom(0, 1, 575, 576, 577, 1500, 0xffff)),
  hostname: fc.option(fc.uint8Array({ maxLength: 70 })),
  prl: fc.option(fc.uint8Array({ maxLength: 255 })),
  // The tail: PAD runs, zero-length options, lengths past the end, overload (52)
  // pointing at sname/file full of options, repeated 53 (RFC 3396 concatenation), no END.
  tail: fc.array(fc.oneof(
    fc.uint8Array({ maxLength: 8 }).map((b) => [...b]),
    fc.integer({ min: 1, max: 300 }).map((n) => new Array<number>(n).fill(0)),
    u8.map((c) => [c, 0]),
    u8.map((c) => [c, 255, 1, 2, 3]),
    fc.constantFrom([52, 1, 1], [52, 1, 2], [52, 1, 3], [52, 0], [53, 1, 3], [53, 2, 1, 1], [53, 0], [55, 0], [61, 0], [61, 1, 7], [12, 1, 0], [255], [57, 2, 0, 1], [57, 1, 2]),
  ), { maxLength: 8 }),
  snameFill: fc.oneof(fc.constant(0), u8),
  end: fc.boolean(),
}).map((d) => {
  const buf = new Uint8Array(1400);
  const wr = new DhcpWriter(buf);
  wr.header({ op: d.op, xid: 0x1234abcd, flags: d.flags, ciaddr: d.ciaddr, yiaddr: 0, siaddr: 0, giaddr: d.giaddr, chaddr: d.chaddr });
  buf.fill(d.snameFill, 44, 236); // sname and file: options, if overload says so
  wr.u8(Opt.MESSAGE_TYPE, d.type);
  if (d.clientId !== null) wr.option(Opt.CLIENT_ID, d.clientId);
  if (d.requested !== null) wr.u32(Opt.REQUESTED_IP, d.requested);
  if (d.serverId !== null) wr.u32(Opt.SERVER_ID, d.serverId);
  if (d.maxSize !== null) wr.u16(Opt.MAX_MESSAGE_SIZE, d.maxSize);
  if (d.hostname !== null) wr.option(Opt.HOSTNAME, d.hostname);
  if (d.prl !== null) wr.option(Opt.PARAM_LIST, d.prl);
  const len = wr.finish(); // END + padding to 300: the tail goes over the END
  const tail = d.tail.flat();
  const optEnd = 240 + (buf.indexOf(255, 240) - 240);
  const msg = cat(buf.subarray(0, d.end ? len : optEnd), tail);
  if (d.op !== BOOTREQUEST) msg[0] = d.op;
  return msg;
});

const ipSpec = (proto: fc.Arbitrary<number>, dst: fc.Arbitrary<number> = anyIp): fc.Arbitrary<IpSpec> => fc.record({
  version: fc.oneof(w(12, fc.constant(4)), w(1, fc.integer({ min: 0, max: 15 }))),
  ihl: fc.oneof(w(8, fc.constant(5)), w(1, fc.integer({ min: 6, max: 15 })), w(1, fc.integer({ min: 0, max: 4 }))),
  totalDelta: fc.oneof(w(8, fc.constant(0)), w(1, fc.integer({ min: -24, max: 24 })), w(1, fc.constant(0x10000))),
  frag: fc.oneof(w(6, fc.constantFrom(0, 0x4000)), w(1, fc.constantFrom(0x2000, 0x0001, 0x2001, 0x1fff))),
  ttl: fc.oneof(w(6, fc.constant(64)), w(1, fc.constantFrom(0, 1, 2, 255))),
  src: fc.oneof(w(4, fc.constantFrom(ip('10.0.10.100'), ip('10.0.10.7'), ip('10.0.10.50'))), w(1, anyIp)),
  dst,
  proto,
  goodSum: fc.oneof(w(8, fc.constant(true)), w(1, fc.constant(false))),
  optByte: fc.constantFrom(0, 1, 0x44, 0x94, 0xff),
});

const l4Udp = fc.record({
  sport: fc.constantFrom(68, 67, 53, 1234),
  dport: fc.oneof(w(6, fc.constant(67)), w(1, fc.constantFrom(68, 53, 5353, 9))),
  payload: fc.oneof(w(5, dhcpArb), w(1, fc.uint8Array({ maxLength: 300 }))),
  ulenDelta: fc.oneof(w(8, fc.constant(0)), w(1, fc.integer({ min: -300, max: 30 }))),
  sum: fc.boolean(),
});
const l4Tcp = fc.record({
  sport: u16, dport: fc.constantFrom(80, 8080, 443, 22),
  doff: fc.oneof(w(4, fc.constant(5)), w(1, fc.integer({ min: 0, max: 15 }))),
  flags: fc.oneof(w(3, fc.constantFrom(0x02, 0x12, 0x10, 0x11, 0x04)), w(1, u8)),
  body: fc.uint8Array({ maxLength: 40 }),
}).map((t) => cat(be16(t.sport), be16(t.dport), be32(1000), be32(0), [t.doff << 4, t.flags], be16(512), [0, 0, 0, 0], t.body));
const l4Icmp = fc.record({
  type: fc.oneof(w(4, fc.constant(8)), w(1, fc.constantFrom(0, 3, 5, 11, 12, 13, 255))),
  code: fc.constantFrom(0, 1, 3, 4),
  id: u16,
  body: fc.oneof(fc.uint8Array({ maxLength: 64 }), fc.constant(new Uint8Array(0))),
  good: fc.oneof(w(4, fc.constant(true)), w(1, fc.constant(false))),
  short: fc.oneof(w(8, fc.constant(-1)), w(1, fc.constant(0)), w(1, fc.integer({ min: 1, max: 7 }))),
}).map((i) => {
  const m = cat([i.type, i.code, 0, 0], be16(i.id), be16(1), i.body);
  if (i.good) write16(m, 2, checksum(m, 0, m.length));
  return i.short >= 0 ? m.subarray(0, i.short) : m;
});

const ipv4Packet: fc.Arbitrary<Uint8Array> = fc.oneof(
  w(4, fc.tuple(ipSpec(fc.constant(17), fc.oneof(w(3, fc.constantFrom(ip('10.0.10.1'), 0xffffffff, ip('10.0.10.255'))), w(1, anyIp))), l4Udp)
    .map(([s, u]) => ipv4(s, udp(s.src, s.dst, u.sport, u.dport, u.payload, u.ulenDelta, u.sum)))),
  w(2, fc.tuple(ipSpec(fc.constant(6)), l4Tcp).map(([s, t]) => ipv4(s, t))),
  w(3, fc.tuple(ipSpec(fc.constant(1)), l4Icmp).map(([s, i]) => ipv4(s, i))),
  w(1, fc.tuple(ipSpec(fc.oneof(fc.constantFrom(0, 2, 47, 50, 255), u8)), fc.uint8Array({ maxLength: 40 })).map(([s, b]) => ipv4(s, b))),
);

const arpBody = fc.record({
  htype: fc.oneof(w(6, fc.constant(1)), w(1, u16)),
  ptype: fc.oneof(w(6, fc.constant(0x0800)), w(1, u16)),
  hlen: fc.oneof(w(6, fc.constant(6)), w(1, u8)),
  plen: fc.oneof(w(6, fc.constant(4)), w(1, u8)),
  oper: fc.oneof(w(6, fc.constantFrom(1, 2)), w(1, u16)),
  sha: clientMac,
  spa: anyIp,
  tpa: fc.oneof(w(3, fc.constant(ip('10.0.10.1'))), w(1, anyIp)),
  len: fc.oneof(w(6, fc.constant(28)), w(1, fc.integer({ min: 0, max: 46 }))),
}).map((a) => {
  const b = cat(be16(a.htype), be16(a.ptype), [a.hlen, a.plen], be16(a.oper), [0, 0, 0, 0, 0, 0], be32(a.spa), [0, 0, 0, 0, 0, 0], be32(a.tpa), new Uint8Array(18));
  writeMac(b, 8, a.sha);
  return b.subarray(0, a.len);
});

/** Well-formed up to UDP: a DHCP message (itself broken often) from a client to the server. */
const dhcpFrame: fc.Arbitrary<Uint8Array> = fc.record({
  src: clientMac,
  dst: fc.constantFrom(0xffffffffffff, NETS.net10.mac),
  ipDst: fc.constantFrom(0xffffffff, NETS.net10.gw, ip('10.0.10.255')),
  ipSrc: fc.constantFrom(0, ip('10.0.10.100'), ip('10.0.10.101')),
  msg: dhcpArb,
}).map((d) => cat(eth(d.dst, d.src, 0x0800), ipv4({
  version: 4, ihl: 5, totalDelta: 0, frag: 0, ttl: 64, src: d.ipSrc, dst: d.ipDst, proto: 17, goodSum: true, optByte: 0,
}, udp(d.ipSrc, d.ipDst, 68, 67, d.msg, 0, true))));

/** An echo request to the gateway, any size. */
const echoFrame = (net: NetName): fc.Arbitrary<Uint8Array> => fc.record({ src: clientMac, body: fc.uint8Array({ maxLength: 1400 }) })
  .map((e) => {
    const m = cat([8, 0, 0, 0, 0, 7, 0, 1], e.body);
    write16(m, 2, checksum(m, 0, m.length));
    return cat(eth(NETS[net].mac, e.src, 0x0800), ipv4({
      version: 4, ihl: 5, totalDelta: 0, frag: 0, ttl: 64, src: ip('10.0.10.100'), dst: NETS[net].gw, proto: 1, goodSum: true, optByte: 0,
    }, m));
  });

/** A frame to a network: Ethernet to the gateway or broadcast, then ARP / IPv4 / other, mutated sometimes. */
const frameTo = (net: NetName): fc.Arbitrary<Uint8Array> => {
  const base = fc.record({
    dst: fc.oneof(w(5, fc.constant(NETS[net].mac)), w(3, fc.constant(0xffffffffffff)), w(1, fc.constantFrom(0x525400000009, 0x01005e000001))),
    src: clientMac,
    body: fc.oneof(
      w(6, ipv4Packet.map((p) => ({ type: 0x0800, p }))),
      w(3, arpBody.map((p) => ({ type: 0x0806, p }))),
      w(1, fc.record({ type: fc.constantFrom(0x86dd, 0x8100, 0x0000, 0xffff), p: fc.uint8Array({ maxLength: 60 }) })),
    ),
    pad: fc.oneof(w(4, fc.constant(0)), w(1, fc.integer({ min: 1, max: 40 }))),
  }).map((f) => cat(eth(f.dst, f.src, f.body.type), f.body.p, new Uint8Array(f.pad)));
  return fc.oneof(
    w(6, base),
    w(net === 'net10' ? 3 : 0, dhcpFrame),
    w(1, echoFrame(net)),
    w(2, fc.tuple(base, fc.array(fc.tuple(fc.nat(), u8), { minLength: 1, maxLength: 4 }), fc.boolean()).map(([f, edits, fixSum]) => {
      const g = f.slice();
      for (const [p, v] of edits) g[14 + (p % Math.max(1, g.length - 14))] = v;
      // Re-seal the IPv4 header checksum so that the edit reaches the layers behind it.
      if (fixSum && g.length >= 34 && g[12] === 0x08 && g[13] === 0 && (g[14] & 0x0f) >= 5 && 14 + (g[14] & 0x0f) * 4 <= g.length) {
        write16(g, 24, 0);
        write16(g, 24, checksum(g, 14, (g[14] & 0x0f) * 4));
      }
      return g.subarray(0, g.length);
    })),
    w(1, fc.tuple(base, fc.nat(60)).map(([f, n]) => f.subarray(0, Math.min(f.length, n)))),
    w(1, fc.uint8Array({ maxLength: 100 })),
  );
};

/** A packet from the uplink: to the public address, as the uplink hands it on (IPv4 checked, dst ours). */
const fromUplink: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.tuple(ipSpec(fc.constant(6), fc.constant(PUB)), l4Tcp).map(([s, t]) => ipv4({ ...s, src: ip('203.0.113.9') }, t)),
  fc.tuple(ipSpec(fc.constant(17), fc.constant(PUB)), l4Udp).map(([s, u]) => ipv4({ ...s, src: ip('203.0.113.9') }, udp(ip('203.0.113.9'), PUB, u.sport, 5353, u.payload, u.ulenDelta, u.sum))),
  fc.tuple(ipSpec(fc.constant(1), fc.constant(PUB)), l4Icmp).map(([s, i]) => ipv4(s, i)),
).map((p) => cat(eth(0x02000a0a6401, 0x02000a0a6402, 0x0800), p));

type Op =
  | { op: 'frame'; net: NetName; frame: Uint8Array; split: number; stale: [number, number] }
  | { op: 'uplink'; frame: Uint8Array }
  | { op: 'tick'; dt: number };

/** Stale bytes that change an outcome if read: PAD, ICMP echo request / DHCP option 8, END, a second option 53 ... */
const STALE = [[0], [8], [255], [53, 1, 1], [53, 1, 3, 50, 4, 10, 0, 10, 100], [0x45, 0, 0, 20], [1, 2, 3, 4, 5, 6, 7, 8, 9]];
/** The stale-byte patterns the two twins see after a frame (always different ones). */
const stale = fc.tuple(fc.nat(STALE.length - 1), fc.integer({ min: 1, max: STALE.length - 1 }))
  .map(([x, d]) => [x, (x + d) % STALE.length] as [number, number]);

const opArb: fc.Arbitrary<Op> = fc.oneof(
  w(10, fc.record({ op: fc.constant('frame' as const), net: fc.constant('net10' as NetName), frame: frameTo('net10'), split: fc.nat(400), stale })),
  w(2, fc.record({ op: fc.constant('frame' as const), net: fc.constant('net20' as NetName), frame: frameTo('net20'), split: fc.nat(400), stale })),
  w(1, fc.record({ op: fc.constant('frame' as const), net: fc.constant('net30' as NetName), frame: frameTo('net30'), split: fc.nat(400), stale })),
  w(2, fc.record({ op: fc.constant('uplink' as const), frame: fromUplink })),
  w(1, fc.record({ op: fc.constant('tick' as const), dt: fc.constantFrom(1_000, 31_000, 700_000, 4_000_000) })),
);

// ---------------------------------------------------------------------------
// Checks

const outcomes = (n: RouterNetwork): number => {
  const c = n.counters;
  return c.malformed + c.ignored + c.arpReplies + c.icmpEchoReplies + c.dhcpRequests + c.routed;
};

/** A valid ARP reply addressed to the network (it only teaches the ARP cache). */
function isArpReplyFor(f: Uint8Array, mac: number): boolean {
  if (f.length < 14 || read16(f, 12) !== 0x0806) return false;
  const dst = readMac(f, 0);
  if (dst !== mac && dst !== 0xffffffffffff) return false;
  return checkArp(f, 14, f.length - 14) && read16(f, 20) === 2;
}

/**
 * Checks a frame the router emitted. `local`: emitted on the network the input came
 * in on, where a packet from the gateway's address can only be the router's own.
 */
function checkEmitted(e: Emitted, local: boolean): void {
  const f = e.frame;
  const net = NETS[e.net];
  expect(f.length).toBeGreaterThanOrEqual(34);
  expect(readMac(f, 6)).toBe(net.mac);
  const type = read16(f, 12);
  expect([0x0800, 0x0806]).toContain(type);
  if (type === 0x0806) {
    expect(f.length).toBeGreaterThanOrEqual(42);
    expect(checkArp(f, 14, f.length - 14)).toBe(true);
    return;
  }
  expect(checkIpv4(f, 14, f.length - 14)).toBe(IPV4_OK);
  const hl = (f[14] & 0x0f) * 4;
  const total = read16(f, 16);
  const src = (f[26] << 24 | f[27] << 16 | f[28] << 8 | f[29]) >>> 0;
  if (!local || src !== net.gw) return; // forwarded: its L4 is the sender's business
  // Made by the router: every checksum verifies.
  const l4 = 14 + hl;
  const proto = f[23];
  if (proto === 1) expect(fold(sum16(f, l4, total - hl))).toBe(0xffff);
  else if (proto === 17) {
    const dst = (f[30] << 24 | f[31] << 16 | f[32] << 8 | f[33]) >>> 0;
    expect(fold(sum16(f, l4, total - hl, pseudoSum(src, dst, 17, total - hl)))).toBe(0xffff);
    expect(read16(f, l4)).toBe(67);
    const m = parseDhcp(f, l4 + 8, read16(f, l4 + 4) - 8);
    expect(typeof m).toBe('object');
    if (typeof m === 'object') expect(m.op).toBe(BOOTREPLY);
  } else throw new Error(`the router made a packet of protocol ${proto}`);
}

/** Feeds a frame as the bridge would: into a guarded buffer, whole or in two pieces (send2). */
function feed(net: RouterNetwork, frame: Uint8Array, split: number, guard: number): void {
  const buf = new Uint8Array(frame.length + 16).fill(guard);
  buf.set(frame, 5);
  if (split <= 0 || split >= frame.length) net.send(buf, 5, frame.length);
  else {
    const b = new Uint8Array(frame.length - split + 9).fill(guard ^ 0xff);
    b.set(frame.subarray(split), 4);
    net.send2(buf, 5, split, b, 4, frame.length - split);
  }
}

/**
 * A frame the network ignores after copying it whole into its receive buffer, so
 * that the bytes after the next frame (of length `len`) repeat `pattern` from its
 * end on: bytes that change the outcome if anything reads them (a second option
 * 53, an ICMP type 8, an END, a PAD ...).
 */
function junk(len: number, pattern: readonly number[]): Uint8Array {
  const j = new Uint8Array(4000);
  for (let i = 0; i < j.length; i++) j[i] = pattern[(((i - len) % pattern.length) + pattern.length) % pattern.length];
  writeMac(j, 0, 0x52540000dead);
  return j;
}

function state(r: Rig): unknown {
  return {
    nets: Object.fromEntries(Object.entries(r.nets).map(([k, n]) => [k, { ...n.counters, rxFrames: undefined, ignored: undefined }])),
    router: r.router.counters,
    napt: r.router.napt!.resultCounts(),
    dhcp: r.nets.net10.opts.dhcp!.counters,
    leases: r.nets.net10.opts.dhcp!.leases(r.clock.wall),
    sessions: r.router.napt!.table.size,
  };
}

describe('router networks under random frames (fast-check)', () => {
  it('never throw, count every frame, emit well-formed frames, and read nothing outside the frame', () => {
    const seen = { dhcpReplies: 0, echo: 0, arp: 0, routed: 0, uplinkOk: 0, frames: 0 };
    fc.assert(fc.property(fc.array(opArb, { minLength: 1, maxLength: 40 }), (ops) => {
      const a = rig();
      const b = rig();
      for (const o of ops) {
        a.out.length = 0;
        b.out.length = 0;
        if (o.op === 'tick') {
          for (const r of [a, b]) {
            r.clock.mono += o.dt;
            r.clock.wall += o.dt;
            r.router.tick();
          }
          expect(b.out.map((e) => [...e.frame])).toEqual(a.out.map((e) => [...e.frame]));
          continue;
        }
        if (o.op === 'uplink') {
          const f = o.frame;
          if (checkIpv4(f, 14, f.length - 14) !== IPV4_OK) continue; // the uplink drops those itself
          for (const [r, g] of [[a, 0x00], [b, 0xff]] as const) {
            const buf = new Uint8Array(f.length + 40).fill(g);
            buf.set(f, 20);
            r.router.uplink!.onIp(buf, 34, read16(f, 16), false);
          }
        } else {
          seen.frames++;
          const net = a.nets[o.net];
          net.send(junk(o.frame.length, STALE[o.stale[0]]), 0, 4000);
          net.counters.rxFrames--;
          net.counters.ignored--;
          const before = outcomes(net);
          const rxBefore = net.counters.rxFrames;
          feed(net, o.frame, 0, 0x00);
          expect(net.counters.rxFrames - rxBefore).toBe(1);
          const counted = outcomes(net) - before;
          expect(counted).toBe(isArpReplyFor(o.frame, NETS[o.net].mac) ? 0 : 1);
          // The twin: other bytes in its receive buffer, the frame in two pieces.
          const twin = b.nets[o.net];
          twin.send(junk(o.frame.length, STALE[o.stale[1]]), 0, 4000);
          twin.counters.rxFrames--;
          twin.counters.ignored--;
          feed(twin, o.frame, o.split, 0xff);
        }
        // Frames the router made itself show up on the network the frame came in on.
        for (const e of a.out) checkEmitted(e, o.op === 'frame' && e.net === o.net);
        expect(b.out.map((e) => `${e.net}:${Buffer.from(e.frame).toString('hex')}`))
          .toEqual(a.out.map((e) => `${e.net}:${Buffer.from(e.frame).toString('hex')}`));
        const leases = a.nets.net10.opts.dhcp!.leases(a.clock.wall).filter((l) => l.state !== 'declined');
        expect(new Set(leases.map((l) => l.ip)).size).toBe(leases.length);
      }
      expect(state(b)).toEqual(state(a));
      seen.dhcpReplies += a.nets.net10.counters.dhcpReplies;
      seen.echo += a.nets.net10.counters.icmpEchoReplies;
      seen.arp += a.nets.net10.counters.arpReplies;
      seen.routed += a.nets.net10.counters.routed;
      seen.uplinkOk += a.router.counters.fromUplink;
    }), { numRuns: RUNS });
    // The frames reached every part of the router, not only its early refusals.
    if (process.env.FUZZ_VERBOSE) console.log(seen);
    for (const [k, v] of Object.entries(seen)) expect(v, k).toBeGreaterThan(0);
  });
});

// ---------------------------------------------------------------------------
// Regressions found by the properties above, as plain examples.

/** net10's gateway MAC <- a client: IPv4 (20-byte header, good checksum) carrying `l4`, then `trailer` inside the frame. */
function clientFrame(p: { src: number; dst: number; proto: number; ttl?: number; l4: ArrayLike<number>; trailer?: ArrayLike<number> }, dstMac: number = NETS.net10.mac): Uint8Array {
  return cat(eth(dstMac, CLIENT_MACS[0], 0x0800), ipv4({
    version: 4, ihl: 5, totalDelta: 0, frag: 0, ttl: p.ttl ?? 64, src: p.src, dst: p.dst, proto: p.proto, goodSum: true, optByte: 0,
  }, cat(p.l4, p.trailer ?? [])));
}

describe('regressions', () => {
  it('a DHCP message is read within its UDP length, not up to the end of the IPv4 payload', () => {
    // A DISCOVER whose options (53 = DISCOVER) lie after the UDP datagram's end but
    // inside the IPv4 packet: the datagram itself has no message type, so it is malformed.
    const buf = new Uint8Array(600);
    const wr = new DhcpWriter(buf);
    wr.header({ op: BOOTREQUEST, xid: 7, flags: 0x8000, ciaddr: 0, yiaddr: 0, siaddr: 0, giaddr: 0, chaddr: CLIENT_MACS[0] });
    const fixed = buf.subarray(0, 240); // fixed part + cookie, no options
    const u = cat(be16(68), be16(67), be16(8 + fixed.length), [0, 0], fixed);
    const f = clientFrame({ src: 0, dst: 0xffffffff, proto: 17, l4: u, trailer: [53, 1, DhcpMsg.DISCOVER, 255] }, 0xffffffffffff);
    const r = rig();
    feed(r.nets.net10, f, 0, 0);
    expect(r.out).toEqual([]);
    expect(r.nets.net10.opts.dhcp!.counters.dropped.malformed).toBe(1);
    // The same options inside the datagram get an OFFER.
    const u2 = cat(be16(68), be16(67), be16(8 + fixed.length + 4), [0, 0], fixed, [53, 1, DhcpMsg.DISCOVER, 255]);
    feed(r.nets.net10, clientFrame({ src: 0, dst: 0xffffffff, proto: 17, l4: u2 }, 0xffffffffffff), 0, 0);
    expect(r.out.length).toBe(1);
  });

  it('whether an ICMP error is sent does not depend on bytes past the packet (ICMP with no header, TTL 1)', () => {
    // IPv4 header only (Total Length 20, protocol ICMP), TTL 1, to the Internet: the
    // router must decide about time-exceeded from the packet alone. Before it, the
    // network's receive buffer held a frame whose byte 34 was 8 (or 0).
    const emitted: number[] = [];
    for (const stale of [[0], [8]]) {
      const r = rig();
      const f = clientFrame({ src: ip('10.0.10.100'), dst: ip('8.8.8.8'), proto: 1, ttl: 1, l4: [] });
      expect(f.length).toBe(34);
      r.nets.net10.send(junk(f.length, stale), 0, 4000);
      feed(r.nets.net10, f, 0, 0);
      emitted.push(r.out.length);
    }
    expect(emitted[1]).toBe(emitted[0]);
  });
});
