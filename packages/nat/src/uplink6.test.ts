/*
 * The uplink's IPv6 side (uplink6.ts) with route6.ts as the router wires them,
 * on fake wires: SLAAC and the default router from an RA, NS for its address
 * answered, next hop resolved by NS (the packet held), a VM's packet routed out
 * as is or with NPTv6 (checksums untouched and still right), the answer mapped
 * back in, an ICMPv6 error from outside about a translated packet mapped with
 * its quoted header, Packet Too Big and Time Exceeded towards the outside, a
 * source in none of the router's prefixes dropped (BCP 38), and the inside
 * prefix of a translated network unreachable from outside.
 */
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import {
  ETH_HLEN, ICMP6_TYPE, IP6, IP6_HLEN, ND_PREFIX_FLAG, VNET_HDR_LEN, checkIpv6, formatIp6, icmp6SumOk, ip6Upper,
  newIp6Upper, parseIp6, read32, readMac, write16, writeIcmp6Checksum, writeIcmp6Echo, writeIp6, writeMac, writeNa, writeNs,
  writeOptLla, writeOptPrefix, writeRa, type PortRx,
} from '@vswitch/switch';
import { RouterNetwork } from './network.js';
import { Route6 } from './route6.js';
import { DAD_WAIT_MS, Uplink6 } from './uplink6.js';
import { Router } from './router.js';

vi.setConfig({ testTimeout: 120_000 });
const RUNS = Number(process.env.FUZZ_RUNS ?? 1000);
const A = (s: string): Uint8Array => parseIp6(s)!;
const UP_MAC = 0x02000000aa01;
const ISP_MAC = 0x02000000bb01;
const GW10 = 0x02000a0a0a01;
const GW30 = 0x02000a0a1e01;
const VM_A = 0x525400000001;
const VM_D = 0x525400000004;
const ISP_LL = A('fe80::1');
const FAR = A('2001:db8:ffff::80');
const A6 = A('2001:db8:10::5054:ff:fe00:1');
const D6 = A('fd00:30::5054:ff:fe00:4');

function rig(opts: { slaac?: boolean; mtu?: number } = {}) {
  const clock = { now: 1000 };
  const route6 = new Route6(() => clock.now, () => false);
  const wire: { f: Uint8Array; vnet: boolean }[] = [];
  const up = new Uplink6({
    mac: UP_MAC, clock: () => clock.now, mtu: opts.mtu,
    ...(opts.slaac ? {} : { address: A('2001:db8:1::2'), prefixLen: 64, gateway: ISP_LL }),
  }, (b, o, l, v) => wire.push({ f: b.slice(o, o + l), vnet: v }));
  up.onForward = (buf, ipOff, ipLen, vnet) => route6.fromUplink(buf, ipOff, ipLen, vnet);
  route6.uplink = up;
  if (!opts.slaac) {
    // The static address's DAD probe goes unanswered: it is ours after DAD_WAIT_MS.
    expect(up.addressState).toBe('tentative');
    clock.now += DAD_WAIT_MS;
    up.tick();
    expect(up.addressState).toBe('preferred');
    wire.length = 0;
  }
  const out: Record<string, Uint8Array[]> = { net10: [], net30: [] };
  const nets: Record<string, RouterNetwork> = {};
  for (const [name, vlan, mac, addr, npt] of [['net10', 10, GW10, '2001:db8:10::1', undefined], ['net30', 30, GW30, 'fd00:30::1', A('2001:db8:130::')]] as const) {
    const net = new RouterNetwork({
      name, vlan, gatewayIp: 0x0a000001 + vlan * 256, prefix: 24, mac, clock: () => clock.now,
      ipv6: { address: A(addr), prefixLen: 64, mode: 'slaac', intervalSec: 600, validLifetime: 86400, preferredLifetime: 14400, rdnss: [], dnssl: [], npt },
    });
    const rx: PortRx = {
      batch: (buf, offs, lens, count) => { for (let i = 0; i < count; i++) out[name].push(buf.slice(offs[i], offs[i] + lens[i])); },
      frame: (buf, off, len) => out[name].push(buf.slice(off, off + len)),
      gone: () => {},
      link: () => {},
    };
    net.start(rx);
    route6.addNetwork(net);
    nets[name] = net;
  }
  return { route6, up, wire, out, nets, clock };
}

/** An IPv6 ICMPv6 frame; `build` writes the message at l4. */
function frame(dstMac: number, srcMac: number, src: Uint8Array, dst: Uint8Array, build: (b: Uint8Array, l4: number) => number, hl = 64): Uint8Array {
  const b = new Uint8Array(2000);
  const l4 = ETH_HLEN + IP6_HLEN;
  const n = build(b, l4);
  writeMac(b, 0, dstMac);
  writeMac(b, 6, srcMac);
  write16(b, 12, 0x86dd);
  writeIp6(b, ETH_HLEN, n, 58, hl, src, 0, dst, 0);
  writeIcmp6Checksum(b, ETH_HLEN, l4, n);
  return b.slice(0, l4 + n);
}

const echo = (extra = 8) => (b: Uint8Array, l4: number): number => {
  writeIcmp6Echo(b, l4, ICMP6_TYPE.ECHO_REQUEST, 9, 1);
  return 8 + extra;
};

function parse(f: Uint8Array) {
  expect(checkIpv6(f, ETH_HLEN, f.length - ETH_HLEN)).toBe(0);
  const u = newIp6Upper();
  expect(ip6Upper(f, ETH_HLEN, u)).toBe(0);
  if (u.proto === 58) expect(icmp6SumOk(f, ETH_HLEN, u.off, u.len)).toBe(true);
  return { ethDst: readMac(f, 0), src: formatIp6(f, ETH_HLEN + IP6.SRC), dst: formatIp6(f, ETH_HLEN + IP6.DST), type: f[u.off], code: f[u.off + 1], param: read32(f, u.off + 4), l4: u.off, hl: f[ETH_HLEN + IP6.HLIM] };
}

/** The ISP router answers the uplink's NS for fe80::1. */
function ispNa(): Uint8Array {
  return frame(UP_MAC, ISP_MAC, ISP_LL, A('fe80::ff:fe00:aa01'), (b, l4) => {
    let n = writeNa(b, l4, 0x80 | 0x40 | 0x20, ISP_LL, 0);
    n += writeOptLla(b, l4 + n, 2, ISP_MAC);
    return n;
  }, 255);
}

function send(net: RouterNetwork, f: Uint8Array): void {
  net.send(f, 0, f.length);
}

describe('uplink6 + route6: IPv6 to and from the uplink', () => {
  it('SLAAC and the default router from the uplink\'s RA; RS while none; NS for the address answered', () => {
    const { up, wire, clock } = rig({ slaac: true });
    up.tick();
    expect(parse(wire[0].f).type).toBe(ICMP6_TYPE.ROUTER_SOLICIT);
    const ra = frame(0x333300000001, ISP_MAC, ISP_LL, A('ff02::1'), (b, l4) => {
      let n = writeRa(b, l4, 64, 0, 1800, 0, 0);
      n += writeOptLla(b, l4 + n, 1, ISP_MAC);
      n += writeOptPrefix(b, l4 + n, 64, ND_PREFIX_FLAG.ON_LINK | ND_PREFIX_FLAG.AUTONOMOUS, 86400, 14400, A('2001:db8:1::'), 0);
      return n;
    }, 255);
    up.input(ra, 0, ra.length, false);
    // The SLAAC address is tentative: a DAD probe (NS from :: for it, to its solicited-node group), not used yet.
    expect([up.describe().address, up.describe().dad, up.ready]).toEqual(['', 'tentative', false]);
    const probe = parse(wire[1].f);
    expect([probe.type, probe.src, probe.dst, probe.ethDst]).toEqual([ICMP6_TYPE.NEIGHBOR_SOLICIT, '::', 'ff02::1:ff00:aa01', 0x3333ff00aa01]);
    clock.now += DAD_WAIT_MS;
    up.tick();
    const d = up.describe();
    expect(d.address).toBe('2001:db8:1::ff:fe00:aa01/64');
    expect(d.dad).toBe('preferred');
    expect(d.gateway).toBe('fe80::1');
    clock.now += 10_000;
    up.tick();
    expect(wire.length).toBe(2); // a router is known: no more RS (the RS and the DAD probe)
    const ns = frame(0x3333ff00aa01, ISP_MAC, ISP_LL, A('ff02::1:ff00:aa01'), (b, l4) => {
      let n = writeNs(b, l4, A('2001:db8:1::ff:fe00:aa01'), 0);
      n += writeOptLla(b, l4 + n, 1, ISP_MAC);
      return n;
    }, 255);
    up.input(ns, 0, ns.length, false);
    const na = parse(wire[2].f);
    expect(na.type).toBe(ICMP6_TYPE.NEIGHBOR_ADVERT);
    expect(na.ethDst).toBe(ISP_MAC);
    expect(na.src).toBe('2001:db8:1::ff:fe00:aa01');
    // The router's lifetime runs out: RS again.
    clock.now += 1800_000;
    up.tick();
    expect(parse(wire.at(-1)!.f).type).toBe(ICMP6_TYPE.ROUTER_SOLICIT);
  });

  it('DAD: an NA for the tentative address, or another node\'s probe, makes it duplicate: never used, reported, shown; our own probe looped back does not', () => {
    const OTHER = 0x02000000cc01;
    const ADDR = A('2001:db8:1::2');
    const mk = () => {
      const clock = { now: 1000 };
      const wire: Uint8Array[] = [];
      const events: unknown[] = [];
      const up = new Uplink6({ mac: UP_MAC, clock: () => clock.now, address: ADDR, prefixLen: 64, gateway: ISP_LL }, (b, o, l) => wire.push(Uint8Array.from(b.subarray(o, o + l)))); // a copy (Buffer.slice is a view)
      up.onEvent = (e) => events.push(e);
      return { up, clock, wire, events };
    };
    const nsFrom = (mac: number, src: Uint8Array) => frame(0x333300000000 + 0xff000002, mac, src, A('ff02::1:ff00:2'), (b, l4) => writeNs(b, l4, ADDR, 0), 255);
    // An NA claiming it.
    const a = mk();
    expect(parse(a.wire[0]).src).toBe('::'); // the probe
    const na = frame(0x333300000001, OTHER, A('fe80::cc'), A('ff02::1'), (b, l4) => {
      let n = writeNa(b, l4, 0x20, ADDR, 0);
      n += writeOptLla(b, l4 + n, 2, OTHER);
      return n;
    }, 255);
    a.up.input(na, 0, na.length, false);
    a.clock.now += DAD_WAIT_MS;
    a.up.tick();
    expect([a.up.addressState, a.up.ready, a.up.hasAddress, a.up.counters.dadConflicts]).toEqual(['duplicate', false, false, 1]);
    expect(a.up.describe()).toMatchObject({ address: '', dad: 'duplicate', tentativeAddress: '2001:db8:1::2/64', conflictMac: '02:00:00:00:cc:01' });
    expect(a.events).toEqual([{ event: 'uplink6_dad_failed', address: '2001:db8:1::2', mac: '02:00:00:00:cc:01', how: 'na' }]);
    // An NS for it is not answered (it is not ours).
    const before = a.wire.length;
    const ns = nsFrom(ISP_MAC, ISP_LL);
    a.up.input(ns, 0, ns.length, false);
    expect(a.wire.length).toBe(before);
    // Another node probing it at the same time.
    const b = mk();
    const probe = nsFrom(OTHER, new Uint8Array(16));
    b.up.input(probe, 0, probe.length, false);
    expect([b.up.addressState, (b.events[0] as { how: string }).how]).toEqual(['duplicate', 'dad_probe']);
    // Our own probe, seen again by the packet socket, and an ordinary NS for it while tentative: no conflict, no answer.
    const c = mk();
    const own = nsFrom(UP_MAC, new Uint8Array(16));
    c.up.input(own, 0, own.length, false);
    c.up.input(ns, 0, ns.length, false);
    expect(c.wire.length).toBe(1);
    // The link comes up while tentative: probed again (the first may have gone nowhere), and ours a DAD_WAIT_MS later.
    c.clock.now += 500;
    c.up.linkUp();
    expect(c.wire.map((f) => parse(f).type)).toEqual([ICMP6_TYPE.NEIGHBOR_SOLICIT, ICMP6_TYPE.ROUTER_SOLICIT, ICMP6_TYPE.NEIGHBOR_SOLICIT]);
    c.clock.now += DAD_WAIT_MS - 1;
    c.up.tick();
    expect(c.up.addressState).toBe('tentative');
    c.clock.now += 1;
    c.up.tick();
    expect([c.up.addressState, c.up.ready, c.events]).toEqual(['preferred', true, []]);
  });

  it('a SLAAC uplink is no default router until its RA: router lifetime 0 and no route before, 1800 s and an RA at once after', () => {
    const clock = { now: 1000 };
    const router = new Router({
      name: 'r', clock: () => clock.now,
      uplink: { ifname: 'nonexistent0', mac: UP_MAC, address: 0xc6336402, prefix: 24, gateway: 0 },
      uplink6: { mtu: 1500 },
    });
    const out: Uint8Array[] = [];
    const net = new RouterNetwork({
      name: 'net10', vlan: 10, gatewayIp: 0x0a000a01, prefix: 24, mac: GW10, clock: () => clock.now,
      ipv6: { address: A('2001:db8:10::1'), prefixLen: 64, mode: 'slaac', intervalSec: 600, validLifetime: 86400, preferredLifetime: 14400, rdnss: [], dnssl: [] },
    });
    net.start({ batch: () => {}, frame: (b, o, l) => out.push(b.slice(o, o + l)), gone: () => {}, link: () => {} });
    router.addNetwork(net);
    net.announce();
    net.nd!.poll(clock.now);
    expect(net.nd!.routerLifetime).toBe(0);
    send(net, frame(GW10, VM_A, A6, FAR, echo()));
    expect(parse(out.at(-1)!).type).toBe(ICMP6_TYPE.DEST_UNREACH);
    expect(router.route6.counters.noRoute).toBe(1);
    clock.now += 10_000;
    const ra = frame(0x333300000001, ISP_MAC, ISP_LL, A('ff02::1'), (b, l4) => {
      let n = writeRa(b, l4, 64, 0, 1800, 0, 0);
      n += writeOptLla(b, l4 + n, 1, ISP_MAC);
      n += writeOptPrefix(b, l4 + n, 64, ND_PREFIX_FLAG.ON_LINK | ND_PREFIX_FLAG.AUTONOMOUS, 86400, 14400, A('2001:db8:1::'), 0);
      return n;
    }, 255);
    router.uplink!.ipv6!.input(ra, 0, ra.length, false);
    // Not before the SLAAC address passed DAD.
    expect(net.nd!.routerLifetime).toBe(0);
    clock.now += DAD_WAIT_MS;
    router.uplink!.ipv6!.tick();
    expect(net.nd!.routerLifetime).toBe(1800);
    // The change is advertised now, not at the next periodic RA.
    expect(net.nd!.nextRaAt).toBe(clock.now);
    net.nd!.poll(clock.now);
    const o = out.at(-1)!;
    const p = parse(o);
    expect(p.type).toBe(ICMP6_TYPE.ROUTER_ADVERT);
    expect((o[p.l4 + 6] << 8) | o[p.l4 + 7]).toBe(1800);
    net.close();
    router.close();
  });

  it('routed: a VM\'s packet goes to the gateway (resolved by NS, held), unchanged but the hop limit; the answer comes back in', () => {
    const { nets, wire, out, route6 } = rig();
    send(nets.net10, frame(GW10, VM_A, A6, FAR, echo()));
    const ns = parse(wire[0].f);
    expect(ns.type).toBe(ICMP6_TYPE.NEIGHBOR_SOLICIT);
    expect(ns.dst).toBe('ff02::1:ff00:1');
    const na = ispNa();
    (route6.uplink as Uplink6).input(na, 0, na.length, false);
    const p = parse(wire[1].f);
    expect(p.ethDst).toBe(ISP_MAC);
    expect(p.src).toBe(formatIp6(A6));
    expect(p.hl).toBe(63);
    expect(route6.counters.toUplink).toBe(1);
    // The reply, to the uplink's MAC: to net10 (A resolved by an NA first).
    send(nets.net10, frame(GW10, VM_A, A6, A('2001:db8:10::1'), (b, l4) => {
      let n = writeNa(b, l4, 0x40, A6, 0);
      n += writeOptLla(b, l4 + n, 2, VM_A);
      return n;
    }, 255));
    const back = frame(UP_MAC, ISP_MAC, FAR, A6, (b, l4) => { writeIcmp6Echo(b, l4, ICMP6_TYPE.ECHO_REPLY, 9, 1); return 16; });
    (route6.uplink as Uplink6).input(back, 0, back.length, false);
    expect(out.net10.length).toBe(1);
    expect(readMac(out.net10[0], 0)).toBe(VM_A);
    expect(parse(out.net10[0]).hl).toBe(63);
  });

  it('NPTv6: the ULA source leaves as the outside prefix with the checksum untouched; answers and ICMPv6 errors map back', () => {
    const { nets, wire, out, up } = rig();
    const na = ispNa();
    up.input(na, 0, na.length, false);
    send(nets.net30, frame(GW30, VM_D, D6, FAR, echo()));
    const p = parse(wire[0].f);
    expect(p.src.startsWith('2001:db8:130:0:')).toBe(true);
    const outside = A(p.src);
    // The VM is known on net30 (its NS for the gateway carried its MAC).
    send(nets.net30, frame(GW30, VM_D, D6, A('fd00:30::1'), (b, l4) => { let n = writeNa(b, l4, 0x40, D6, 0); n += writeOptLla(b, l4 + n, 2, VM_D); return n; }, 255));
    const reply = frame(UP_MAC, ISP_MAC, FAR, outside, (b, l4) => { writeIcmp6Echo(b, l4, ICMP6_TYPE.ECHO_REPLY, 9, 1); return 16; });
    up.input(reply, 0, reply.length, false);
    expect(parse(out.net30[0]).dst).toBe(formatIp6(D6));
    // A Destination Unreachable from outside quoting the translated packet: outer and inner mapped, checksum still right.
    const quoted = wire[0].f.subarray(ETH_HLEN);
    const err = frame(UP_MAC, ISP_MAC, A('2001:db8:ffff::1'), outside, (b, l4) => {
      b[l4] = 1; b[l4 + 1] = 3; write16(b, l4 + 2, 0);
      b.set(quoted, l4 + 8);
      return 8 + quoted.length;
    });
    up.input(err, 0, err.length, false);
    const e = parse(out.net30[1]);
    expect([e.type, e.code, e.dst]).toEqual([1, 3, formatIp6(D6)]);
    expect(formatIp6(out.net30[1], e.l4 + 8 + IP6.SRC)).toBe(formatIp6(D6));
    // The inside prefix itself is not reachable from outside.
    const direct = frame(UP_MAC, ISP_MAC, FAR, D6, echo());
    up.input(direct, 0, direct.length, false);
    expect(out.net30.length).toBe(2);
    expect(parse(wire.at(-1)!.f).type).toBe(ICMP6_TYPE.DEST_UNREACH);
  });

  it('Packet Too Big at the uplink MTU towards the VM; towards the outside at the network\'s; Time Exceeded both ways; BCP 38', () => {
    const { nets, wire, out, up, route6 } = rig({ mtu: 1400 });
    up.input(ispNa(), 0, ispNa().length, false);
    send(nets.net10, frame(GW10, VM_A, A6, FAR, echo(1400)));
    const ptb = parse(out.net10[0]);
    expect([ptb.type, ptb.param, ptb.src]).toEqual([ICMP6_TYPE.PACKET_TOO_BIG, 1400, '2001:db8:10::1']);
    send(nets.net10, frame(GW10, VM_A, A6, FAR, echo(), 1));
    expect(parse(out.net10[1]).type).toBe(ICMP6_TYPE.TIME_EXCEEDED);
    send(nets.net10, frame(GW10, VM_A, A('2001:db8:99::1'), FAR, echo()));
    expect(route6.counters.badSource).toBe(1);
    const n = wire.length;
    const big = frame(UP_MAC, ISP_MAC, FAR, A6, echo(1500));
    up.input(big, 0, big.length, false);
    const e = parse(wire[n].f);
    expect([e.type, e.param, e.src, e.ethDst]).toEqual([ICMP6_TYPE.PACKET_TOO_BIG, 1500, '2001:db8:1::2', ISP_MAC]);
    const dying = frame(UP_MAC, ISP_MAC, FAR, A6, echo(), 1);
    up.input(dying, 0, dying.length, false);
    expect(parse(wire[n + 1].f).type).toBe(ICMP6_TYPE.TIME_EXCEEDED);
    expect(route6.counters).toMatchObject({ tooBig: 2, hopLimitExceeded: 2, toUplink: 0, fromUplink: 0 });
  });

  it('echo to the uplink\'s address is answered; frames for other MACs are ignored', () => {
    const { up, wire } = rig();
    const ping = frame(UP_MAC, ISP_MAC, FAR, A('2001:db8:1::2'), echo());
    up.input(ping, 0, ping.length, false);
    const r = parse(wire[0].f);
    expect([r.type, r.src, r.dst]).toEqual([ICMP6_TYPE.ECHO_REPLY, '2001:db8:1::2', formatIp6(FAR)]);
    const other = frame(0x020000000999, ISP_MAC, FAR, A6, echo());
    up.input(other, 0, other.length, false);
    expect(wire.length).toBe(1);
    expect(up.counters.ignored).toBe(1);
    void VNET_HDR_LEN;
  });

  it('a VM\'s echo to the uplink\'s address is answered from it on the VM\'s network, nothing leaves', () => {
    const { nets, wire, out } = rig();
    send(nets.net10, frame(GW10, VM_A, A6, A('2001:db8:1::2'), echo()));
    expect(wire).toEqual([]);
    const r = parse(out.net10[0]);
    expect([r.type, r.src, r.dst, r.ethDst]).toEqual([ICMP6_TYPE.ECHO_REPLY, '2001:db8:1::2', formatIp6(A6), VM_A]);
  });

  it('fuzz: random and mutated frames from the uplink never throw; what it writes verifies, what it forwards is whole IPv6', () => {
    const { up, wire, out, nets } = rig({ slaac: true });
    send(nets.net10, frame(GW10, VM_A, A6, A('2001:db8:10::1'), (b, l4) => { let n = writeNa(b, l4, 0x40, A6, 0); n += writeOptLla(b, l4 + n, 2, VM_A); return n; }, 255));
    out.net10.length = 0;
    const ra = frame(0x333300000001, ISP_MAC, ISP_LL, A('ff02::1'), (b, l4) => {
      let n = writeRa(b, l4, 64, 0, 1800, 0, 0);
      n += writeOptLla(b, l4 + n, 1, ISP_MAC);
      n += writeOptPrefix(b, l4 + n, 64, ND_PREFIX_FLAG.ON_LINK | ND_PREFIX_FLAG.AUTONOMOUS, 86400, 14400, A('2001:db8:1::'), 0);
      return n;
    }, 255);
    const seeds = [
      ra, ispNa(),
      frame(0x3333ff00aa01, ISP_MAC, ISP_LL, A('ff02::1:ff00:aa01'), (b, l4) => { let n = writeNs(b, l4, A('2001:db8:1::ff:fe00:aa01'), 0); n += writeOptLla(b, l4 + n, 1, ISP_MAC); return n; }, 255),
      frame(UP_MAC, ISP_MAC, FAR, A6, echo()), frame(UP_MAC, ISP_MAC, FAR, A6, echo(1500)), frame(UP_MAC, ISP_MAC, FAR, A('2001:db8:130::1'), echo()),
      frame(UP_MAC, ISP_MAC, FAR, A('2001:db8:1::ff:fe00:aa01'), echo()),
    ];
    fc.assert(fc.property(
      fc.constantFrom(...seeds), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }), fc.nat(),
      (seed, muts, cut) => {
        const f = seed.slice();
        for (const [i, v] of muts) f[ETH_HLEN + (i % (f.length - ETH_HLEN))] = v;
        const len = Math.max(0, f.length - (cut % 30));
        const w = wire.length;
        const o = out.net10.length;
        up.input(f, 0, len, false);
        // What it writes itself verifies; what it forwards is whole IPv6 (a router does not judge transit checksums).
        for (const x of wire.slice(w)) parse(x.f);
        for (const x of out.net10.slice(o)) expect(checkIpv6(x, ETH_HLEN, x.length - ETH_HLEN)).toBe(0);
      },
    ), { numRuns: RUNS });
  });
});
