/*
 * IPv6 forwarding (route6.ts) through a Router with real RouterNetworks on a
 * fake wire: between interconnected networks (the destination resolved by a
 * Neighbor Solicitation, the packet held meanwhile), refused with the right
 * ICMPv6 error otherwise (prohibited, no route, beyond scope), the hop limit
 * decremented and Time Exceeded at 1, Packet Too Big at the egress MTU (a GSO
 * super-frame judged by its segments), the quoting of the errors, the per-port
 * icmpErrors bucket, the RA's router lifetime; then random frames to the
 * gateway's MAC (fast-check): nothing throws, everything emitted verifies.
 */
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import {
  ETH_HLEN, ICMP6_TYPE, IP6, IP6_HLEN, VNET_GSO, VNET_HDR_LEN, checkIpv6, formatIp6, icmp6SumOk, ip6Upper, ndOptLla, ndOption,
  ndRaLifetime, newIp6Upper, parseIp6, read16, read32, readMac, write16, writeIcmp6Checksum, writeIcmp6Echo, writeIp6, writeMac,
  writeNa, writeOptLla, writeVnet, type PortRx,
} from '@vswitch/switch';
import { RouterNetwork } from './network.js';
import { Router } from './router.js';
import { ICMP6_QUOTE_MAX, mayAnswer, segmentSize } from './icmp6-error.js';

vi.setConfig({ testTimeout: 120_000 });
const RUNS = Number(process.env.FUZZ_RUNS ?? 1000);

const A = (s: string): Uint8Array => parseIp6(s)!;
const GW10 = 0x02000a0a0a01;
const GW20 = 0x02000a0a1401;
const VM_A = 0x525400000001;
const VM_C = 0x525400000003;
const A6 = A('fd00:10::5054:ff:fe00:1');
const C6 = A('fd00:20::5054:ff:fe00:3');

function rig(opts: { interconnect?: boolean; mtu20?: number; icmpErrors?: number } = {}) {
  const clock = { now: 1000 };
  const router = new Router({
    name: 'r1', clock: () => clock.now, interconnect: opts.interconnect === false ? [] : [['net10', 'net20']],
    limits: opts.icmpErrors !== undefined ? { icmpErrors: opts.icmpErrors } : undefined,
  });
  const out: Record<string, { f: Uint8Array; vnet: boolean }[]> = { net10: [], net20: [] };
  const nets: Record<string, RouterNetwork> = {};
  for (const [name, vlan, mac, pfx, mtu] of [['net10', 10, GW10, 'fd00:10::1', undefined], ['net20', 20, GW20, 'fd00:20::1', opts.mtu20]] as const) {
    const net = new RouterNetwork({
      name, vlan, gatewayIp: 0x0a000001 + vlan * 256, prefix: 24, mac, clock: () => clock.now,
      ipv6: { address: A(pfx), prefixLen: 64, mode: 'slaac', intervalSec: 600, validLifetime: 86400, preferredLifetime: 14400, rdnss: [], dnssl: [], mtu },
    });
    const rx: PortRx = {
      batch: (buf, offs, lens, count, vnet) => { for (let i = 0; i < count; i++) out[name].push({ f: buf.slice(offs[i] - VNET_HDR_LEN, offs[i] + lens[i]), vnet: vnet === true }); },
      frame: (buf, off, len) => out[name].push({ f: Uint8Array.of(...new Uint8Array(VNET_HDR_LEN), ...buf.subarray(off, off + len)), vnet: false }),
      gone: () => {},
      link: () => {},
    };
    net.start(rx);
    router.addNetwork(net);
    nets[name] = net;
  }
  return { router, nets, out, clock };
}

/** An echo request frame from VM a (at net10's gateway MAC) to `dst`, `extra` bytes of data, hop limit `hl`. */
function echo(dst: Uint8Array, opts: { hl?: number; extra?: number; src?: Uint8Array; srcMac?: number; dstMac?: number } = {}): Uint8Array {
  const extra = opts.extra ?? 8;
  const b = new Uint8Array(ETH_HLEN + IP6_HLEN + 8 + extra);
  const l4 = ETH_HLEN + IP6_HLEN;
  writeIcmp6Echo(b, l4, ICMP6_TYPE.ECHO_REQUEST, 7, 1);
  for (let i = 0; i < extra; i++) b[l4 + 8 + i] = i & 0xff;
  writeMac(b, 0, opts.dstMac ?? GW10);
  writeMac(b, 6, opts.srcMac ?? VM_A);
  write16(b, 12, 0x86dd);
  writeIp6(b, ETH_HLEN, 8 + extra, 58, opts.hl ?? 64, opts.src ?? A6, 0, dst, 0);
  writeIcmp6Checksum(b, ETH_HLEN, l4, 8 + extra);
  return b;
}

/** A Neighbor Advertisement from VM c for its address (the answer to the router's NS). */
function naFromC(): Uint8Array {
  const b = new Uint8Array(ETH_HLEN + IP6_HLEN + 32);
  const l4 = ETH_HLEN + IP6_HLEN;
  let n = writeNa(b, l4, 0x40 | 0x20, C6, 0);
  n += writeOptLla(b, l4 + n, 2, VM_C);
  writeMac(b, 0, GW20);
  writeMac(b, 6, VM_C);
  write16(b, 12, 0x86dd);
  writeIp6(b, ETH_HLEN, n, 58, 255, C6, 0, A('fe80::ff:fe0a:1401'), 0);
  // the router solicits from its link-local address: answer to it
  const ll = A('fe80::'); ll.set(linkLocalIid(GW20), 8);
  b.set(ll, ETH_HLEN + IP6.DST);
  writeIcmp6Checksum(b, ETH_HLEN, l4, n);
  return b.subarray(0, l4 + n);
}

function linkLocalIid(mac: number): Uint8Array {
  const hi = Math.floor(mac / 2 ** 32);
  const lo = mac >>> 0;
  return Uint8Array.of((hi >>> 8) ^ 2, hi & 0xff, lo >>> 24, 0xff, 0xfe, (lo >>> 16) & 0xff, (lo >>> 8) & 0xff, lo & 0xff);
}

/** An emitted frame (VNET_HDR_LEN bytes of header first): its ICMPv6 type, code, param and where the message is. */
function icmp(f: Uint8Array) {
  const e = VNET_HDR_LEN;
  expect(read16(f, e + 12)).toBe(0x86dd);
  expect(checkIpv6(f, e + ETH_HLEN, f.length - e - ETH_HLEN)).toBe(0);
  const u = newIp6Upper();
  expect(ip6Upper(f, e + ETH_HLEN, u)).toBe(0);
  expect(u.proto).toBe(58);
  expect(icmp6SumOk(f, e + ETH_HLEN, u.off, u.len)).toBe(true);
  return { type: f[u.off], code: f[u.off + 1], param: read32(f, u.off + 4), l4: u.off, len: u.len, ethDst: readMac(f, e), src: formatIp6(f, e + ETH_HLEN + IP6.SRC), dst: formatIp6(f, e + ETH_HLEN + IP6.DST) };
}

describe('route6: IPv6 between the networks of a router', () => {
  it('forwards between interconnected networks: NS for the unknown destination, packet held, sent on the NA with hop limit - 1', () => {
    const { nets, out, router } = rig();
    const p = echo(C6, { hl: 64 });
    nets.net10.send(p, 0, p.length);
    expect(out.net10).toEqual([]);
    expect(out.net20.length).toBe(1);
    const ns = icmp(out.net20[0].f);
    expect(ns.type).toBe(ICMP6_TYPE.NEIGHBOR_SOLICIT);
    expect(ns.dst).toBe('ff02::1:ff00:3');
    expect(ns.ethDst).toBe(0x3333ff000003);
    expect(formatIp6(out.net20[0].f, ns.l4 + 8)).toBe(formatIp6(C6));
    expect(ndOptLla(out.net20[0].f, ndOption(out.net20[0].f, ns.l4, ns.len, 1))).toBe(GW20);
    const na = naFromC();
    nets.net20.send(na, 0, na.length);
    expect(out.net20.length).toBe(2);
    const f = out.net20[1].f;
    expect(readMac(f, VNET_HDR_LEN)).toBe(VM_C);
    expect(readMac(f, VNET_HDR_LEN + 6)).toBe(GW20);
    expect(f[VNET_HDR_LEN + ETH_HLEN + IP6.HLIM]).toBe(63);
    expect(formatIp6(f, VNET_HDR_LEN + ETH_HLEN + IP6.SRC)).toBe(formatIp6(A6));
    // Resolved now: the next one goes at once.
    nets.net10.send(p, 0, p.length);
    expect(out.net20.length).toBe(3);
    expect(router.route6.counters.between).toBe(2);
    expect(router.route6.cacheOf(nets.net20)!.size).toBe(1);
  });

  it('refuses networks that are not interconnected: admin prohibited, quoting the packet, from the gateway\'s address', () => {
    const { nets, out, router } = rig({ interconnect: false });
    const p = echo(C6);
    nets.net10.send(p, 0, p.length);
    expect(out.net20).toEqual([]);
    const e = icmp(out.net10[0].f);
    expect([e.type, e.code]).toEqual([ICMP6_TYPE.DEST_UNREACH, 1]);
    expect(e.src).toBe('fd00:10::1');
    expect(e.dst).toBe(formatIp6(A6));
    expect(e.ethDst).toBe(VM_A);
    // The whole invoking packet is quoted (it is small).
    expect([...out.net10[0].f.subarray(e.l4 + 8)]).toEqual([...p.subarray(ETH_HLEN)]);
    expect(router.route6.counters.prohibited).toBe(1);
  });

  it('no route without an uplink; link-local sources are beyond scope; the gateway\'s own addresses and its link are nd.ts\'s', () => {
    const { nets, out, router } = rig();
    const p = echo(A('2001:db8::1'));
    nets.net10.send(p, 0, p.length);
    let e = icmp(out.net10[0].f);
    expect([e.type, e.code]).toEqual([ICMP6_TYPE.DEST_UNREACH, 0]);
    const ll = echo(C6, { src: A('fe80::5054:ff:fe00:1') });
    nets.net10.send(ll, 0, ll.length);
    e = icmp(out.net10[1].f);
    expect([e.type, e.code]).toEqual([ICMP6_TYPE.DEST_UNREACH, 2]);
    const gw = echo(A('fd00:10::1'));
    nets.net10.send(gw, 0, gw.length);
    e = icmp(out.net10[2].f);
    expect(e.type).toBe(ICMP6_TYPE.ECHO_REPLY);
    // Another network's gateway address (interconnected): answered from it, nothing goes to net20.
    const other = echo(A('fd00:20::1'));
    nets.net10.send(other, 0, other.length);
    e = icmp(out.net10[3].f);
    expect([e.type, e.src]).toEqual([ICMP6_TYPE.ECHO_REPLY, 'fd00:20::1']);
    expect(out.net20).toEqual([]);
    out.net10.pop();
    const same = echo(A('fd00:10::99'));
    nets.net10.send(same, 0, same.length);
    expect(out.net10.length).toBe(3);
    expect(router.route6.counters).toMatchObject({ noRoute: 1, scope: 1, between: 0 });
  });

  it('hop limit 1: Time Exceeded; hop limit 2 goes on with 1', () => {
    const { nets, out, router } = rig();
    const na = naFromC();
    nets.net20.send(na, 0, na.length);
    const p = echo(C6, { hl: 1 });
    nets.net10.send(p, 0, p.length);
    const e = icmp(out.net10[0].f);
    expect([e.type, e.code]).toEqual([ICMP6_TYPE.TIME_EXCEEDED, 0]);
    const q = echo(C6, { hl: 2 });
    nets.net10.send(q, 0, q.length);
    expect(out.net20.at(-1)!.f[VNET_HDR_LEN + ETH_HLEN + IP6.HLIM]).toBe(1);
    expect(router.route6.counters.hopLimitExceeded).toBe(1);
  });

  it('Packet Too Big at the egress network\'s MTU, the error itself at most 1280 bytes; exactly the MTU passes', () => {
    const { nets, out, router } = rig({ mtu20: 1280 });
    const na = naFromC();
    nets.net20.send(na, 0, na.length);
    const big = echo(C6, { extra: 1400 });
    nets.net10.send(big, 0, big.length);
    const e = icmp(out.net10[0].f);
    expect([e.type, e.code, e.param]).toEqual([ICMP6_TYPE.PACKET_TOO_BIG, 0, 1280]);
    expect(out.net10[0].f.length - VNET_HDR_LEN - ETH_HLEN).toBe(1280);
    expect(e.len - 8).toBe(ICMP6_QUOTE_MAX);
    const fits = echo(C6, { extra: 1280 - 48 });
    nets.net10.send(fits, 0, fits.length);
    expect(out.net20.length).toBe(1);
    expect(router.route6.counters.tooBig).toBe(1);
  });

  it('a GSO super-frame is judged by its segment size and forwarded whole with its header', () => {
    const { nets, out } = rig({ mtu20: 1400 });
    const na = naFromC();
    nets.net20.send(na, 0, na.length);
    const gso = (segment: number): Uint8Array => {
      const payload = 8000;
      const b = new Uint8Array(VNET_HDR_LEN + ETH_HLEN + IP6_HLEN + 20 + payload);
      const e = VNET_HDR_LEN;
      writeMac(b, e, GW10);
      writeMac(b, e + 6, VM_A);
      write16(b, e + 12, 0x86dd);
      writeIp6(b, e + ETH_HLEN, 20 + payload, 6, 64, A6, 0, C6, 0);
      b[e + ETH_HLEN + IP6_HLEN + 12] = 5 << 4;
      writeVnet(b, 0, 1, VNET_GSO.TCPV6, ETH_HLEN + IP6_HLEN + 20, segment, ETH_HLEN + IP6_HLEN, 16);
      return b;
    };
    let b = gso(1340);
    expect(segmentSize(b, VNET_HDR_LEN + ETH_HLEN, b.length - VNET_HDR_LEN - ETH_HLEN, true)).toBe(1400);
    nets.net10.sendVnet(b, VNET_HDR_LEN, b.length - VNET_HDR_LEN);
    expect(out.net20.length).toBe(1);
    expect(out.net20[0].vnet).toBe(true);
    expect(out.net20[0].f.length).toBe(b.length);
    b = gso(1341);
    nets.net10.sendVnet(b, VNET_HDR_LEN, b.length - VNET_HDR_LEN);
    const e = icmp(out.net10[0].f);
    expect([e.type, e.param]).toEqual([ICMP6_TYPE.PACKET_TOO_BIG, 1400]);
  });

  it('errors spend the port\'s icmpErrors tokens', () => {
    const { nets, out } = rig({ interconnect: false, icmpErrors: 2 });
    const p = echo(C6);
    for (let i = 0; i < 10; i++) nets.net10.send(p, 0, p.length);
    expect(out.net10.length).toBe(2);
    expect(nets.net10.counters.rateLimited).toBe(8);
  });

  it('RA router lifetime: 1800 s with somewhere to route to, 0 when isolated', () => {
    for (const interconnect of [true, false]) {
      const { nets, out } = rig({ interconnect });
      nets.net10.announce();
      nets.net10.nd!.poll(1000);
      nets.net10.close();
      const o = out.net10.find((x) => read16(x.f, VNET_HDR_LEN + 12) === 0x86dd)!;
      const ra = icmp(o.f);
      expect(ra.type).toBe(ICMP6_TYPE.ROUTER_ADVERT);
      expect(ndRaLifetime(o.f, ra.l4)).toBe(interconnect ? 1800 : 0);
      expect(nets.net10.nd!.describe().routerLifetime).toBe(interconnect ? 1800 : 0);
    }
  });

  it('with a host uplink (route6.host) off-link IPv6 with no other route goes to the host NAT, and the RAs advertise a router', () => {
    const { router, nets, out } = rig({ interconnect: false });
    const taken: { from: RouterNetwork; dst: string; ipLen: number; partial: boolean }[] = [];
    router.route6.host = (from, buf, ipOff, ipLen, partial) => taken.push({ from, dst: formatIp6(buf.slice(ipOff + IP6.DST, ipOff + IP6.DST + 16)), ipLen, partial });
    router.updateRouterLifetimes();
    expect(nets.net10.nd!.routerLifetime).toBe(1800);
    const p = echo(A('2001:db8::1'));
    nets.net10.send(p, 0, p.length);
    expect(taken).toEqual([{ from: nets.net10, dst: '2001:db8::1', ipLen: IP6_HLEN + 16, partial: false }]);
    // Still refused: another network not interconnected, and link-local sources (beyond scope).
    nets.net10.send(echo(C6), 0, p.length);
    nets.net10.send(echo(A('2001:db8::1'), { src: A('fe80::1') }), 0, p.length);
    expect(taken.length).toBe(1);
    expect(router.route6.counters.prohibited).toBe(1);
    expect(router.route6.counters.scope).toBe(1);
    expect(router.route6.counters.noRoute).toBe(0);
    expect(out.net10.length).toBe(2);
  });

  it('with a host uplink, a packet from the host NAT to a VM\'s IPv6 address goes out on its network and counts once in fromHost', () => {
    const clock = { now: 1000 };
    const router = new Router({ name: 'r1', clock: () => clock.now, host: { dns: [0x0a000001], icmp: false } });
    const out: Uint8Array[] = [];
    const net = new RouterNetwork({
      name: 'net10', vlan: 10, gatewayIp: 0x0a000a01, prefix: 24, mac: GW10, clock: () => clock.now,
      ipv6: { address: A('fd00:10::1'), prefixLen: 64, mode: 'slaac', intervalSec: 600, validLifetime: 86400, preferredLifetime: 14400, rdnss: [], dnssl: [] },
    });
    net.start({
      batch: (buf, offs, lens, count) => { for (let i = 0; i < count; i++) out.push(buf.slice(offs[i], offs[i] + lens[i])); },
      frame: (buf, off, len) => out.push(buf.slice(off, off + len)),
      gone: () => {},
      link: () => {},
    });
    router.addNetwork(net);
    try {
      // What the host NAT hands the router: an echo reply from outside to VM a, whose MAC it learnt.
      const p = echo(A6, { src: A('2001:db8::1') });
      const before = out.length;
      expect(router.host!.opts.toVm6!(Buffer.from(p), ETH_HLEN, p.length - ETH_HLEN, false, VM_A)).toBe(true);
      expect(out.length).toBe(before + 1);
      expect(readMac(out[out.length - 1], 0)).toBe(VM_A);
      expect(router.counters.fromHost).toBe(1);
    } finally {
      router.close();
    }
  });

  it('never answers an ICMPv6 error, ND, or a multicast source (RFC 4443 2.4 e)', () => {
    const p = echo(C6).subarray(ETH_HLEN);
    expect(mayAnswer(p, 0, ICMP6_TYPE.DEST_UNREACH)).toBe(true);
    for (const t of [1, 2, 3, 4, 127, 133, 134, 135, 136, 137]) {
      const q = p.slice();
      q[IP6_HLEN] = t;
      expect(mayAnswer(q, 0, ICMP6_TYPE.DEST_UNREACH)).toBe(false);
    }
    const m = p.slice();
    m[IP6.SRC] = 0xff;
    expect(mayAnswer(m, 0, ICMP6_TYPE.PACKET_TOO_BIG)).toBe(false);
    const g = p.slice();
    g[IP6.DST] = 0xff;
    expect(mayAnswer(g, 0, ICMP6_TYPE.DEST_UNREACH)).toBe(false);
    expect(mayAnswer(g, 0, ICMP6_TYPE.PACKET_TOO_BIG)).toBe(true);
  });

  it('fuzz: random and mutated frames at the gateway\'s MAC never throw; all it emits verifies and no error answers an error', () => {
    const { nets, out } = rig({ mtu20: 1300 });
    const na = naFromC();
    nets.net20.send(na, 0, na.length);
    const seeds = [echo(C6), echo(C6, { hl: 1 }), echo(C6, { extra: 1400 }), echo(A('2001:db8::1')), echo(C6, { src: A('fe80::1') })];
    fc.assert(fc.property(
      fc.oneof(
        fc.tuple(fc.constantFrom(...seeds), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }), fc.nat()).map(([s, muts, cut]) => {
          const f = s.slice();
          for (const [i, v] of muts) f[ETH_HLEN + (i % (f.length - ETH_HLEN))] = v;
          return f.subarray(0, Math.max(ETH_HLEN, f.length - (cut % 20)));
        }),
        fc.uint8Array({ minLength: 0, maxLength: 200 }).map((r) => {
          const f = new Uint8Array(ETH_HLEN + r.length);
          writeMac(f, 0, GW10);
          writeMac(f, 6, VM_A);
          write16(f, 12, 0x86dd);
          f.set(r, ETH_HLEN);
          if (r.length > 0) f[ETH_HLEN] = 0x60 | (f[ETH_HLEN] & 0xf);
          return f;
        }),
      ),
      (f) => {
        out.net10.length = 0;
        out.net20.length = 0;
        nets.net10.send(f, 0, f.length);
        for (const o of out.net10) {
          const e = icmp(o.f);
          if (e.type < 128) expect(o.f.length - VNET_HDR_LEN - ETH_HLEN).toBeLessThanOrEqual(1280);
        }
        for (const o of out.net20) expect(checkIpv6(o.f, VNET_HDR_LEN + ETH_HLEN, o.f.length - VNET_HDR_LEN - ETH_HLEN)).toBe(0);
      },
    ), { numRuns: RUNS });
  });
});
