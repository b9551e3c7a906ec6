/*
 * The IPv6 guards (guard6.ts) through a Bridge of in-memory ports, as guard.test.ts
 * does for IPv4: RA guard (RAs, Redirects, and what could hide one behind
 * extension headers or fragments), DHCPv6 guard, the first-come first-served
 * source guard (ownership, DAD between ports, NA spoofing, link-layer options,
 * the unspecified source, the per-port limit, an owner that goes away, the
 * router's reserved addresses), and the Ip6Bindings table itself (growth, reuse,
 * expiry) against a plain Map model (fast-check).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Bridge, type PortOptions } from './bridge.js';
import type { DropReason } from './drop.js';
import { CLAIM_FULL, CLAIM_OK, IP6_BINDING_IDLE_MS, Ip6Bindings } from './guard6.js';
import type { Port, PortIo, PortKind, PortRx } from './port.js';
import { VlanPolicy, type VlanSpec } from './vlan.js';
import { writeMac } from './wire/ethernet.js';
import { NDOPT, writeIcmp6Checksum, writeIcmp6Echo, writeNa, writeNs, writeOptLla, writeRa, writeRedirect, writeRs } from './wire/icmp6.js';
import { parseIp6, writeIp6, writeSolicitedNode } from './wire/ipv6.js';

class TestIo implements PortIo {
  readonly kind: PortKind = 'tap';
  rx!: PortRx;
  sent: Uint8Array[] = [];
  start(rx: PortRx): void { this.rx = rx; }
  send(buf: Uint8Array, off: number, len: number): number {
    this.sent.push(buf.slice(off, off + len));
    return len;
  }
  send2(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    const f = new Uint8Array(alen + blen);
    f.set(a.subarray(aoff, aoff + alen), 0);
    f.set(b.subarray(boff, boff + blen), alen);
    this.sent.push(f);
    return alen + blen;
  }
  close(): void {}
  describe(): Record<string, string | number | boolean> { return { kind: 'test' }; }
  take(): Uint8Array[] {
    const s = this.sent;
    this.sent = [];
    return s;
  }
}

const A = 0x020000000001;
const B = 0x020000000002;
const GW_MAC = 0x02000000000f;
const ALL_NODES_MAC = 0x333300000001;
const ip = (s: string): Uint8Array => parseIp6(s)!;
const A_LL = ip('fe80::1');
const A_G = ip('fd00::a');
const B_LL = ip('fe80::2');
const B_G = ip('fd00::b');
const GW = ip('fd00::1');
const ALL_NODES = ip('ff02::1');
const V6_GUARDS = { ra: true, dhcpv6: true, ipv6Source: true };

/** An IPv6 frame: Ethernet (an optional 802.1Q tag), IPv6 header, then `payload` written by `build` at its offset; ICMPv6 gets its checksum. */
function v6(dst: number, src: number, sa: Uint8Array, da: Uint8Array, next: number, build: (b: Uint8Array, p: number) => number, hl = 255): Uint8Array {
  const b = new Uint8Array(600);
  const n = build(b, 54);
  writeMac(b, 0, dst);
  writeMac(b, 6, src);
  b[12] = 0x86;
  b[13] = 0xdd;
  writeIp6(b, 14, n, next, hl, sa, 0, da, 0);
  if (next === 58) writeIcmp6Checksum(b, 14, 54, n);
  return b.slice(0, 54 + n);
}

const icmp = (dst: number, src: number, sa: Uint8Array, da: Uint8Array, build: (b: Uint8Array, p: number) => number) => v6(dst, src, sa, da, 58, build);
const echo = (dst: number, src: number, sa: Uint8Array, da: Uint8Array) => icmp(dst, src, sa, da, (b, p) => writeIcmp6Echo(b, p, 128, 1, 1) + 8);
const udp = (src: number, sa: Uint8Array, sport: number, dport: number) => v6(0x333300010002, src, sa, ip('ff02::1:2'), 17, (b, p) => {
  b[p] = sport >> 8; b[p + 1] = sport & 255; b[p + 2] = dport >> 8; b[p + 3] = dport & 255; b[p + 5] = 12;
  return 12;
});
const sn = (t: Uint8Array): Uint8Array => { const a = new Uint8Array(16); writeSolicitedNode(a, 0, t, 0); return a; };
const dad = (src: number, t: Uint8Array) => icmp(0x3333ff000000, src, ip('::'), sn(t), (b, p) => writeNs(b, p, t, 0));
const na = (src: number, sa: Uint8Array, t: Uint8Array, lla = src) => icmp(ALL_NODES_MAC, src, sa, ALL_NODES, (b, p) => writeNa(b, p, 0x20, t, 0) + writeOptLla(b, p + 24, NDOPT.TLLA, lla));
const ra = (src: number) => icmp(ALL_NODES_MAC, src, A_LL, ALL_NODES, (b, p) => writeRa(b, p, 64, 0, 1800, 0, 0) + writeOptLla(b, p + 16, NDOPT.SLLA, src));

function rig(ports: Record<string, { spec?: VlanSpec } & Omit<PortOptions, 'vlan'>>) {
  const clock = { now: 1000 };
  const br = new Bridge('br0', { clock: () => clock.now });
  const io: Record<string, TestIo> = {};
  const port: Record<string, Port> = {};
  for (const [name, o] of Object.entries(ports)) {
    io[name] = new TestIo();
    port[name] = br.addPort(name, io[name], { ...o, vlan: VlanPolicy.from(o.spec ?? { mode: 'access', vid: 10 }) });
  }
  const send = (name: string, f: Uint8Array) => io[name].rx.frame(f, 0, f.length);
  const got = (name: string): number => io[name].take().length;
  const drops = (name: string): Partial<Record<DropReason, number>> => port[name].counters().drops;
  /** Sends f from `from`; how many of the other ports got it. */
  const through = (from: string, f: Uint8Array): number => {
    for (const n of Object.keys(io)) io[n].take();
    send(from, f);
    return Object.keys(io).filter((n) => n !== from).reduce((s, n) => s + got(n), 0);
  };
  return { br, io, port, clock, send, got, drops, through };
}

describe('RA guard and DHCPv6 guard', () => {
  it('drop RAs and Redirects from a guarded port, not from an unguarded one', () => {
    const t = rig({ vm: { guard: V6_GUARDS }, other: {}, router: {} });
    expect(t.through('vm', ra(A))).toBe(0);
    const redirect = icmp(B, A, A_LL, B_LL, (b, p) => writeRedirect(b, p, ip('fe80::9'), 0, ip('2001:db8::1'), 0));
    expect(t.through('vm', redirect)).toBe(0);
    expect(t.drops('vm').ra_guard).toBe(2);
    expect(t.through('router', ra(GW_MAC))).toBe(2);
    // A guest's own RS, NS and echo pass.
    expect(t.through('vm', icmp(0x333300000002, A, A_LL, ip('ff02::2'), (b, p) => writeRs(b, p)))).toBe(2);
    expect(t.through('vm', echo(ALL_NODES_MAC, A, A_LL, ALL_NODES))).toBe(2);
  });

  it('drop an RA hidden behind extension headers or in a fragment, and a chain they cannot see through', () => {
    const t = rig({ vm: { guard: { ra: true } }, other: {} });
    const raBody = (b: Uint8Array, p: number): number => writeRa(b, p, 64, 0, 1800, 0, 0);
    const behind = (hdrs: number[][], next: number) => v6(ALL_NODES_MAC, A, A_LL, ALL_NODES, next, (b, p) => {
      let o = p;
      for (const h of hdrs) { b.set(h, o); o += h.length; }
      return o - p + raBody(b, o);
    });
    const dest = (n: number): number[] => [n, 0, 1, 4, 0, 0, 0, 0];
    expect(t.through('vm', behind([dest(58)], 60))).toBe(0);
    expect(t.through('vm', behind([dest(60), dest(58)], 0))).toBe(0); // Hop-by-Hop first, then Destination Options
    expect(t.through('vm', behind([[58, 0, 0, 0, 0, 0, 0, 9]], 44))).toBe(0); // whole first fragment
    expect(t.through('vm', behind([[58, 0, 0, 1, 0, 0, 0, 9]], 44))).toBe(0); // first of several
    expect(t.through('vm', behind([dest(0), dest(58)], 60))).toBe(0); // Hop-by-Hop out of place
    expect(t.through('vm', behind(Array.from({ length: 9 }, (_, i) => dest(i === 8 ? 58 : 60)), 60))).toBe(0); // too long
    expect(t.drops('vm').ra_guard).toBe(6);
    // A later fragment holds no header to judge: it passes (alone it is nothing).
    expect(t.through('vm', behind([[58, 0, 0x05, 0xa8, 0, 0, 0, 9]], 44))).toBe(1);
    // A fragmented echo request (a guest's ping after Packet Too Big) is no ND: it passes; a fragmented NS does not.
    const frag = (body: (b: Uint8Array, p: number) => number) => v6(ALL_NODES_MAC, A, A_LL, ALL_NODES, 44, (b, p) => {
      b.set([58, 0, 0, 1, 0, 0, 0, 9], p);
      return 8 + body(b, p + 8);
    });
    expect(t.through('vm', frag((b, p) => writeIcmp6Echo(b, p, 128, 1, 1)))).toBe(1);
    expect(t.through('vm', frag((b, p) => writeNs(b, p, A_LL, 0)))).toBe(0);
    expect(t.drops('vm').ra_guard).toBe(7);
  });

  it('DHCPv6: server and relay messages (from port 547) dropped, client messages pass', () => {
    const t = rig({ vm: { guard: { dhcpv6: true } }, other: {} });
    expect(t.through('vm', udp(A, A_LL, 547, 546))).toBe(0);
    expect(t.through('vm', udp(A, A_LL, 547, 547))).toBe(0);
    expect(t.through('vm', udp(A, A_LL, 546, 547))).toBe(1);
    expect(t.drops('vm').dhcpv6_guard).toBe(2);
    t.br.setPortGuard('vm', {});
    expect(t.through('vm', udp(A, A_LL, 547, 546))).toBe(1);
  });
});

describe('IPv6 source guard (first come, first served)', () => {
  it('the first port to use an address owns it; another port sending from it is dropped', () => {
    const t = rig({ a: { guard: V6_GUARDS }, b: { guard: V6_GUARDS }, c: {} });
    expect(t.through('a', echo(ALL_NODES_MAC, A, A_G, ALL_NODES))).toBe(2);
    expect(t.through('b', echo(ALL_NODES_MAC, B, A_G, ALL_NODES))).toBe(0);
    expect(t.drops('b').ipv6_source_guard).toBe(1);
    expect(t.through('b', echo(ALL_NODES_MAC, B, B_G, ALL_NODES))).toBe(2);
    expect(t.through('a', echo(ALL_NODES_MAC, A, A_G, ALL_NODES))).toBe(2);
    const owners = t.br.ip6Bindings.entries().map((e) => [e.vid, e.port]).sort();
    expect(owners).toEqual([[10, t.port.a.id], [10, t.port.b.id]]);
    // The same address in another VLAN is another link: no conflict.
    const t2 = rig({ a: { guard: V6_GUARDS }, b: { guard: V6_GUARDS, spec: { mode: 'access', vid: 20 } } });
    t2.send('a', echo(ALL_NODES_MAC, A, A_G, ALL_NODES));
    t2.send('b', echo(ALL_NODES_MAC, B, A_G, ALL_NODES));
    expect(t2.drops('b').ipv6_source_guard).toBeUndefined();
  });

  it('DAD: a probe for a free address claims it; a probe for an owned one reaches its owner, whose defence reaches the prober', () => {
    const t = rig({ a: { guard: V6_GUARDS }, b: { guard: V6_GUARDS } });
    expect(t.through('a', dad(A, A_G))).toBe(1);
    expect(t.br.ip6Bindings.entries()).toHaveLength(1);
    expect(t.through('b', dad(B, A_G))).toBe(1); // passes to a
    expect(t.br.ip6Bindings.count(t.port.b.id)).toBe(0);
    expect(t.through('a', na(A, A_G, A_G))).toBe(1); // a defends
    expect(t.through('b', echo(ALL_NODES_MAC, B, A_G, ALL_NODES))).toBe(0);
  });

  it('an NA claiming another port\'s address, or with a link-layer address not its own, is nd_spoof', () => {
    const t = rig({ a: { guard: V6_GUARDS }, b: { guard: V6_GUARDS }, c: {} });
    t.send('a', echo(ALL_NODES_MAC, A, A_G, ALL_NODES));
    expect(t.through('b', na(B, B_LL, A_G))).toBe(0); // claims a's address from b's own
    expect(t.through('b', na(B, B_G, B_G, A))).toBe(0); // its own address with a's MAC
    const ns = icmp(0x3333ff00000a, B, B_G, sn(A_G), (b, p) => writeNs(b, p, A_G, 0) + writeOptLla(b, p + 24, NDOPT.SLLA, A));
    expect(t.through('b', ns)).toBe(0);
    expect(t.drops('b').nd_spoof).toBe(3);
    expect(t.through('b', na(B, B_G, B_G))).toBe(2);
  });

  it('the unspecified source only for DAD, RS and MLD reports; never a multicast source', () => {
    const t = rig({ a: { guard: V6_GUARDS }, b: {} });
    const U = ip('::');
    expect(t.through('a', icmp(0x333300000002, A, U, ip('ff02::2'), (b, p) => writeRs(b, p)))).toBe(1);
    expect(t.through('a', icmp(0x333300000016, A, U, ip('ff02::16'), (b, p) => { b[p] = 143; return 8; }))).toBe(1);
    expect(t.through('a', echo(ALL_NODES_MAC, A, U, ALL_NODES))).toBe(0);
    expect(t.through('a', udp(A, U, 546, 547))).toBe(0);
    expect(t.through('a', echo(ALL_NODES_MAC, A, ip('ff02::5'), ALL_NODES))).toBe(0);
    expect(t.drops('a').ipv6_source_guard).toBe(3);
  });

  it('a port owns at most maxIpv6 addresses; a port that goes down or away frees its own', () => {
    const t = rig({ a: { guard: { ...V6_GUARDS, maxIpv6: 2 } }, b: { guard: V6_GUARDS } });
    for (const x of ['fd00::1:1', 'fd00::1:2', 'fd00::1:3']) t.send('a', echo(ALL_NODES_MAC, A, ip(x), ALL_NODES));
    expect(t.drops('a').ipv6_source_guard).toBe(1);
    expect(t.through('b', echo(ALL_NODES_MAC, B, ip('fd00::1:1'), ALL_NODES))).toBe(0);
    t.br.portGone(t.port.a, 'test');
    expect(t.through('b', echo(ALL_NODES_MAC, B, ip('fd00::1:1'), ALL_NODES))).toBe(0); // a is down: nobody gets it
    expect(t.drops('b').ipv6_source_guard).toBe(1);
    expect(t.br.ip6Bindings.count(t.port.b.id)).toBe(1); // b owns it now
    t.br.removePort('b');
    expect(t.br.ip6Bindings.count(t.port.b.id)).toBe(0);
  });

  it('the router\'s reserved addresses are never a VM\'s, and its unguarded port is never checked', () => {
    const t = rig({ a: { guard: V6_GUARDS }, router: {} });
    t.br.ip6Bindings.reserve(10, GW, t.port.router.id);
    expect(t.through('a', echo(ALL_NODES_MAC, A, GW, ALL_NODES))).toBe(0);
    expect(t.through('a', na(A, A_LL, GW))).toBe(0);
    expect(t.through('a', dad(A, GW))).toBe(1); // the probe passes: the gateway defends
    expect(t.through('router', echo(ALL_NODES_MAC, GW_MAC, GW, ALL_NODES))).toBe(1);
    t.br.setPortGuard('a', {});
    expect(t.through('a', echo(ALL_NODES_MAC, A, GW, ALL_NODES))).toBe(1);
  });

  it('frames too short or not version 6 are dropped under the source guard; IPv4 on an IPv6-only guarded port is untouched', () => {
    const t = rig({ a: { guard: V6_GUARDS }, b: {} });
    const f = echo(ALL_NODES_MAC, A, A_G, ALL_NODES);
    expect(t.through('a', f.slice(0, 40))).toBe(0);
    const bad = f.slice();
    bad[14] = 0x40;
    expect(t.through('a', bad)).toBe(0);
    expect(t.drops('a').ipv6_source_guard).toBe(2);
    const v4 = new Uint8Array(60);
    writeMac(v4, 0, 0xffffffffffff);
    writeMac(v4, 6, A);
    v4[12] = 8;
    v4[14] = 0x45;
    expect(t.through('a', v4)).toBe(1);
  });
});

describe('an ICMPv6 packet shorter than its header', () => {
  it('is dropped by the RA guard: the byte after a zero-length payload (padding) is no message type', () => {
    // fast-check's counterexample: payload length 0, next header ICMPv6, then one byte 134 (an RA's type) after the payload.
    const t = rig({ a: { guard: V6_GUARDS }, b: { guard: V6_GUARDS }, c: {} });
    const f = Uint8Array.from([51, 51, 0, 0, 0, 1, 2, 0, 0, 0, 0, 1, 134, 221, 96, 0, 0, 0, 0, 0, 58, 255, 254, 128, 0, 0, 0, 0, 0, 0,
      0, 0, 0, 0, 0, 0, 0, 1, 255, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 134]);
    expect(t.through('a', f)).toBe(0);
    expect(t.drops('a').ra_guard).toBe(1);
  });
});

describe('random IPv6 frames on guarded ports (fast-check)', () => {
  it('nothing throws; each frame is forwarded or dropped once, by an IPv6 reason; no RA ever passes', () => {
    const u8 = fc.integer({ min: 0, max: 255 });
    const base = fc.constantFrom(
      ra(A), echo(ALL_NODES_MAC, A, A_G, ALL_NODES), echo(ALL_NODES_MAC, A, B_G, ALL_NODES), dad(A, B_G), na(A, A_G, B_G), na(A, A_G, A_G, B),
      udp(A, A_LL, 547, 546), udp(A, A_LL, 546, 547), icmp(0x333300000002, A, ip('::'), ip('ff02::2'), (b, p) => writeRs(b, p)),
    );
    const frame = fc.record({ f: base, edits: fc.array(fc.tuple(fc.integer({ min: 12, max: 120 }), u8), { maxLength: 5 }), cut: fc.oneof(fc.constant(-1), fc.integer({ min: 14, max: 120 })) })
      .map(({ f, edits, cut }) => {
        let out = f.slice();
        for (const [pos, v] of edits) if (pos < out.length && pos !== 12 && pos !== 13) out[pos] = v;
        if (cut >= 0 && cut < out.length) out = out.slice(0, cut);
        return out;
      });
    const t = rig({ a: { guard: V6_GUARDS }, b: { guard: V6_GUARDS }, c: {} });
    t.send('b', echo(ALL_NODES_MAC, B, B_G, ALL_NODES));
    let passed = 0;
    fc.assert(fc.property(frame, (f) => {
      const before = { ...t.drops('a') };
      const n = t.through('a', f);
      const after = t.drops('a');
      const moved = (Object.keys(after) as DropReason[]).filter((r) => (after[r] ?? 0) !== (before[r] ?? 0));
      if (n > 0) {
        expect(moved).toEqual([]);
        passed++;
        // Nothing that is an RA or a Redirect at the first upper-layer byte passes.
        if (f.length > 54 && f[20] === 58) expect([134, 137]).not.toContain(f[54]);
      } else {
        expect(moved).toHaveLength(1);
        expect(['ra_guard', 'dhcpv6_guard', 'ipv6_source_guard', 'nd_spoof']).toContain(moved[0]);
      }
    }), { numRuns: 2000 });
    expect(passed).toBeGreaterThan(100);
  });
});

describe('Ip6Bindings', () => {
  it('claims, owners, limits, reserve, expiry', () => {
    let live = true;
    const b = new Ip6Bindings(() => live, 4);
    const x = ip('fd00::1');
    expect(b.claim(10, x, 0, 1, 100, 4)).toBe(CLAIM_OK);
    expect(b.claim(10, x, 0, 2, 100, 4)).toBe(1);
    expect(b.ownerElsewhere(10, x, 0, 2)).toBe(1);
    expect(b.ownerElsewhere(10, x, 0, 1)).toBe(-1);
    live = false;
    expect(b.claim(10, x, 0, 2, 200, 4)).toBe(CLAIM_OK);
    expect([b.count(1), b.count(2)]).toEqual([0, 1]);
    expect(b.claim(10, ip('fd00::2'), 0, 2, 200, 1)).toBe(CLAIM_FULL);
    b.reserve(10, x, 9);
    expect(b.claim(10, x, 0, 2, 300, 4)).toBe(9);
    expect([b.count(2), b.count(9)]).toEqual([0, 1]);
    b.claim(10, ip('fd00::3'), 0, 3, 1000, 4);
    expect(b.expire(1000 + IP6_BINDING_IDLE_MS)).toBe(1);
    expect(b.entries().map((e) => e.port)).toEqual([9]); // reserved entries never expire
  });

  it('behaves as a Map keyed by (vid, address) under random claims, forgets and expiry, growing as it needs (fast-check)', () => {
    const op = fc.oneof(
      fc.record({ k: fc.constant('claim' as const), vid: fc.integer({ min: 1, max: 3 }), a: fc.integer({ min: 0, max: 300 }), port: fc.integer({ min: 0, max: 5 }) }),
      fc.record({ k: fc.constant('forget' as const), port: fc.integer({ min: 0, max: 5 }) }),
      fc.record({ k: fc.constant('expire' as const) }),
    );
    fc.assert(fc.property(fc.array(op, { maxLength: 400 }), (ops) => {
      const b = new Ip6Bindings(() => true, 4);
      const model = new Map<string, { port: number; used: number }>();
      let now = 0;
      const addr = (n: number): Uint8Array => { const a = ip('fd00::')!; a[14] = n >> 8; a[15] = n & 255; return a; };
      for (const o of ops) {
        now += 1000;
        if (o.k === 'claim') {
          const key = `${o.vid}/${o.a}`;
          const m = model.get(key);
          const mine = [...model.values()].filter((v) => v.port === o.port).length;
          const want = m !== undefined ? (m.port === o.port ? CLAIM_OK : m.port) : mine >= 8 ? CLAIM_FULL : CLAIM_OK;
          expect(b.claim(o.vid, addr(o.a), 0, o.port, now, 8)).toBe(want);
          if (want === CLAIM_OK) model.set(key, { port: o.port, used: now });
        } else if (o.k === 'forget') {
          b.forgetPort(o.port);
          for (const [k, v] of model) if (v.port === o.port) model.delete(k);
        } else {
          now += 20_000;
          const n = b.expire(now, 60_000);
          let m = 0;
          for (const [k, v] of model) if (now - v.used >= 60_000) { model.delete(k); m++; }
          expect(n).toBe(m);
        }
        expect(b.size).toBe(model.size);
      }
      for (let p = 0; p <= 5; p++) expect(b.count(p)).toBe([...model.values()].filter((v) => v.port === p).length);
    }), { numRuns: 300 });
  });
});
