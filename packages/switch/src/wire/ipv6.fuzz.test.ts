/*
 * Property-based tests (fast-check) for the IPv6, ICMPv6 and ND views, as
 * fuzz.test.ts does for IPv4: for random and mutated IPv6 frames (extension
 * header chains, ND messages with options, garbage),
 * - nothing throws;
 * - every check and every accessor a passing check unlocks reads only inside the
 *   frame (a Proxy records each index read), and the same frame amid other bytes
 *   dissects the same;
 * - what a passing check promises holds: the payload inside the frame, the
 *   upper layer inside the payload, every ND option inside the message;
 * - the writers write only their own bytes, and what they write passes the checks
 *   and verifies.
 */
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { outside, tracked } from '../testing/tracked.js';
import { write16 } from './bytes.js';
import {
  checkIcmp6, checkNd, dnsNames, icmp6SumOk, icmp6Type, ND_LEN, ND_PREFIX_FLAG, NDOPT, ndDnsLifetime, ndDnsslNames,
  ndFirstOption, ndMtu, ndMtuOk, ndNextOption, ndOptLen, ndOptLla, ndOptType, ndOption, ndPrefixAt, ndPrefixFlags,
  ndPrefixLen, ndPrefixOk, ndPrefixPreferred, ndPrefixValid, ndRaFlags, ndRaLifetime, ndRdnssAt, ndRdnssCount, NDP_OK,
  writeIcmp6Checksum, writeNa, writeNs, writeOptDnssl, writeOptLla, writeOptMtu, writeOptPrefix, writeOptRdnss, writeRa,
} from './icmp6.js';
import { ETH_HLEN } from './ethernet.js';
import {
  checkIpv6, ip6HopLimit, ip6NextHeader, ip6PayloadLen, ip6Upper, IP6_HLEN, IPV6_OK, Ip6WalkError, newIp6Upper, writeIp6,
} from './ipv6.js';

vi.setConfig({ testTimeout: 120_000 });
const RUNS = Number(process.env.FUZZ_RUNS ?? 3000);

const LEAD = 7;
const TAIL = 64;

function placed(frame: Uint8Array, guard: number): Uint8Array {
  const buf = new Uint8Array(LEAD + frame.length + TAIL).fill(guard);
  buf.set(frame, LEAD);
  return buf;
}

/** Everything the data plane and the router read of an IPv6 frame, each behind its check. */
function dissect(buf: Uint8Array, off: number, len: number): Record<string, unknown> {
  const d: Record<string, unknown> = {};
  const ip = off + ETH_HLEN;
  const l3len = len - ETH_HLEN;
  d.ip6 = checkIpv6(buf, ip, l3len);
  if (d.ip6 !== IPV6_OK) return d;
  const plen = ip6PayloadLen(buf, ip);
  expect(IP6_HLEN + plen).toBeLessThanOrEqual(l3len);
  d.hdr = [plen, ip6NextHeader(buf, ip), ip6HopLimit(buf, ip)];
  const u = newIp6Upper();
  d.walk = ip6Upper(buf, ip, u);
  // The record is the walk's answer only when it found something (ip6Upper says so).
  if (d.walk === IPV6_OK || d.walk === Ip6WalkError.NOT_FIRST_FRAGMENT) d.upper = [u.proto, u.off - ip, u.len, u.fragment];
  if (d.walk !== IPV6_OK) return d;
  expect(u.off).toBeGreaterThanOrEqual(ip + IP6_HLEN);
  expect(u.off + u.len).toBe(ip + IP6_HLEN + plen);
  if (u.proto !== 58 || !checkIcmp6(u.len)) return d;
  d.type = icmp6Type(buf, u.off);
  d.sum = icmp6SumOk(buf, ip, u.off, u.len);
  d.nd = checkNd(buf, ip, u.off, u.len);
  if (d.nd !== NDP_OK) return d;
  const end = u.off + u.len;
  const opts: unknown[] = [];
  const first = new Map<number, number>();
  for (let p = ndFirstOption(buf, u.off, u.len); p >= 0; p = ndNextOption(buf, p, end)) {
    expect(p + ndOptLen(buf, p)).toBeLessThanOrEqual(end);
    const t = ndOptType(buf, p);
    if (!first.has(t)) first.set(t, p);
    const o: unknown[] = [t, ndOptLen(buf, p)];
    if (t === NDOPT.SLLA || t === NDOPT.TLLA) o.push(ndOptLla(buf, p));
    else if (t === NDOPT.PREFIX && ndPrefixOk(buf, p)) o.push(ndPrefixLen(buf, p), ndPrefixFlags(buf, p), ndPrefixValid(buf, p), ndPrefixPreferred(buf, p), buf[ndPrefixAt(p) + 15]);
    else if (t === NDOPT.MTU && ndMtuOk(buf, p)) o.push(ndMtu(buf, p));
    else if (t === NDOPT.RDNSS) {
      const n = ndRdnssCount(buf, p);
      o.push(n, ndDnsLifetime(buf, p));
      for (let i = 0; i < n; i++) o.push(buf[ndRdnssAt(p, i) + 15]);
    } else if (t === NDOPT.DNSSL) o.push(ndDnsslNames(buf, p));
    opts.push(o);
  }
  d.opts = opts;
  // ndOption finds what the walk meets first.
  for (const t of [1, 2, 3, 5, 25, 31]) expect(ndOption(buf, u.off, u.len, t)).toBe(first.get(t) ?? -1);
  if (d.type === 134) d.ra = [ndRaFlags(buf, u.off), ndRaLifetime(buf, u.off)];
  return d;
}

const u8 = fc.integer({ min: 0, max: 255 });
const addr = fc.oneof(
  fc.uint8Array({ minLength: 16, maxLength: 16 }),
  fc.constantFrom('fe80::1', '::', 'ff02::1', 'ff02::2', 'ff02::1:ff00:42', 'fd00::42').map((s) => {
    const a = new Uint8Array(16);
    const m: Record<string, number[]> = {
      'fe80::1': [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], '::': [], 'ff02::1': [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
      'ff02::2': [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], 'ff02::1:ff00:42': [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0x42],
      'fd00::42': [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42],
    };
    a.set(m[s]);
    return a;
  }),
);

/** An ND option: well-formed of a known type, or any type and length. */
const option = fc.oneof(
  fc.tuple(fc.constantFrom(1, 2), fc.integer({ min: 0, max: 2 ** 48 - 1 })).map(([t, mac]) => { const b = new Uint8Array(8); writeOptLla(b, 0, t, mac); return b; }),
  fc.tuple(u8, fc.integer({ min: 0, max: 0xffffffff }), addr).map(([pl, v, a]) => { const b = new Uint8Array(32); writeOptPrefix(b, 0, pl, ND_PREFIX_FLAG.ON_LINK, v, v >>> 1, a, 0); return b; }),
  fc.integer({ min: 0, max: 0xffffffff }).map((m) => { const b = new Uint8Array(8); writeOptMtu(b, 0, m); return b; }),
  fc.array(addr, { maxLength: 3 }).map((as) => { const b = new Uint8Array(8 + 16 * as.length); writeOptRdnss(b, 0, 600, as); return b; }),
  fc.array(fc.stringMatching(/^[a-z]{1,8}(\.[a-z]{1,8}){0,2}$/), { maxLength: 3 }).map((ns) => {
    const w = dnsNames(ns)!;
    const b = new Uint8Array(8 + ((w.length + 7) & ~7));
    writeOptDnssl(b, 0, 600, w);
    return b;
  }),
  fc.tuple(u8, fc.integer({ min: 0, max: 4 }), fc.uint8Array({ maxLength: 40 })).map(([t, n, body]) => {
    const b = new Uint8Array(Math.max(2, Math.min(body.length + 2, n * 8)));
    b[0] = t;
    b[1] = n;
    b.set(body.subarray(0, b.length - 2), 2);
    return b;
  }),
);

/** An ICMPv6 message: an ND message of any of the five types with options, or any type with any bytes. */
const icmp6Msg = fc.oneof(
  fc.record({ type: fc.constantFrom(133, 134, 135, 136, 137), code: fc.oneof({ weight: 5, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: u8 }), fixed: fc.uint8Array({ minLength: 40, maxLength: 40 }), opts: fc.array(option, { maxLength: 5 }) })
    .map(({ type, code, fixed, opts }) => {
      const n = ND_LEN[({ 133: 'RS', 134: 'RA', 135: 'NS', 136: 'NA', 137: 'REDIRECT' } as const)[type as 133]];
      const head = fixed.slice(0, n);
      head[0] = type;
      head[1] = code;
      return concat(head, ...opts);
    }),
  fc.tuple(u8, fc.uint8Array({ maxLength: 60 })).map(([t, b]) => concat(Uint8Array.of(t, 0, 0, 0), b)),
);

/** A chain of 0-10 extension headers of any kind and length before the upper layer. */
const chain = fc.array(fc.record({ kind: fc.constantFrom(0, 43, 44, 51, 60, 135, 7), len: fc.integer({ min: 0, max: 3 }), frag: fc.constantFrom(0, 1, 8, 0xfff9) }), { maxLength: 10 });

const ipv6Frame = fc.record({
  src: addr, dst: addr, hl: fc.oneof({ weight: 5, arbitrary: fc.constant(255) }, { weight: 1, arbitrary: u8 }),
  chain: fc.oneof({ weight: 2, arbitrary: fc.constant([]) }, { weight: 1, arbitrary: chain }), upper: fc.oneof(icmp6Msg.map((b) => ({ p: 58, b })), fc.record({ p: u8, b: fc.uint8Array({ maxLength: 40 }) })),
  plenDelta: fc.oneof({ weight: 5, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: -20, max: 20 }) }),
  goodSum: fc.boolean(),
}).map((f) => {
  const exts: Uint8Array[] = [];
  const kinds = f.chain.map((c) => c.kind);
  f.chain.forEach((c, i) => {
    const next = i + 1 < kinds.length ? kinds[i + 1] : f.upper.p;
    let h: Uint8Array;
    if (c.kind === 44) {
      h = new Uint8Array(8);
      h[0] = next;
      write16(h, 2, c.frag);
    } else if (c.kind === 51) {
      h = new Uint8Array((c.len + 2) * 4);
      h[0] = next;
      h[1] = c.len;
    } else {
      h = new Uint8Array((c.len + 1) * 8);
      h[0] = next;
      h[1] = c.len;
    }
    exts.push(h);
  });
  const payload = concat(...exts, f.upper.b);
  const frame = new Uint8Array(ETH_HLEN + IP6_HLEN + payload.length);
  write16(frame, 12, 0x86dd);
  writeIp6(frame, ETH_HLEN, Math.max(0, Math.min(0xffff, payload.length + f.plenDelta)), kinds.length > 0 ? kinds[0] : f.upper.p, f.hl, f.src, 0, f.dst, 0);
  frame.set(payload, ETH_HLEN + IP6_HLEN);
  if (f.goodSum && kinds.length === 0 && f.upper.p === 58 && f.plenDelta === 0 && f.upper.b.length >= 4) {
    writeIcmp6Checksum(frame, ETH_HLEN, ETH_HLEN + IP6_HLEN, f.upper.b.length);
  }
  return frame;
});

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function mutated(base: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array> {
  return fc.record({ f: base, edits: fc.array(fc.tuple(fc.nat(), u8), { maxLength: 6 }), cut: fc.oneof(fc.constant(-1), fc.nat(200)) })
    .map(({ f, edits, cut }) => {
      let out = f.slice();
      for (const [pos, v] of edits) out[pos % out.length] = v;
      if (cut >= 0 && cut < out.length) out = out.slice(0, cut);
      return out;
    });
}

const anyIpv6Frame = fc.oneof(
  { weight: 4, arbitrary: ipv6Frame },
  { weight: 4, arbitrary: mutated(ipv6Frame) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 120 }).map((b) => { const f = concat(new Uint8Array(12), Uint8Array.of(0x86, 0xdd), b); if (f.length > 14) f[14] = 0x60 | (f[14] & 15); return f; }) },
);

describe('IPv6 frames through every view (fast-check)', () => {
  it('never throw, read only inside the frame, and do not depend on the bytes around it', () => {
    const reached = { ok: 0, walk: 0, nd: 0, opts: 0, sum: 0 };
    fc.assert(fc.property(anyIpv6Frame, u8, (frame, guard) => {
      const a = placed(frame, guard);
      const t = tracked(a);
      const da = dissect(t.view, LEAD, frame.length);
      expect(outside(t.reads, LEAD, LEAD + frame.length)).toEqual([]);
      expect(t.writes).toEqual([]);
      const b = placed(frame, guard ^ 0xff);
      expect(dissect(b, LEAD, frame.length)).toEqual(da);
      expect(dissect(Uint8Array.from(frame), 0, frame.length)).toEqual(da);
      if (da.ip6 === IPV6_OK) reached.ok++;
      if (da.walk === IPV6_OK) reached.walk++;
      if (da.nd === NDP_OK) reached.nd++;
      if (Array.isArray(da.opts) && da.opts.length > 0) reached.opts++;
      if (da.sum === true) reached.sum++;
    }), { numRuns: RUNS });
    expect(reached.ok).toBeGreaterThan(RUNS / 4);
    expect(reached.walk).toBeGreaterThan(RUNS / 10);
    for (const k of ['nd', 'opts', 'sum'] as const) expect(reached[k], k).toBeGreaterThan(RUNS / 200);
  });

  it('checks given a shorter len than the buffer never look past it', () => {
    fc.assert(fc.property(anyIpv6Frame, fc.nat(120), (frame, cutAt) => {
      const len = Math.min(frame.length, cutAt);
      const t = tracked(placed(frame, 0xa5));
      const ip = LEAD + ETH_HLEN;
      const l3len = len - ETH_HLEN;
      const r = checkIpv6(t.view, ip, l3len);
      const u = newIp6Upper();
      if (r === IPV6_OK) ip6Upper(t.view, ip, u);
      checkNd(t.view, ip, ip + IP6_HLEN, Math.min(l3len - IP6_HLEN, 0));
      if (l3len >= IP6_HLEN + 8) checkNd(t.view, ip, ip + IP6_HLEN, l3len - IP6_HLEN);
      expect(outside(t.reads, ip, ip + Math.max(0, l3len))).toEqual([]);
    }), { numRuns: RUNS });
  });
});

describe('ND writers (fast-check)', () => {
  it('an RA or NA written with any options touches only its bytes, passes checkNd and verifies', () => {
    fc.assert(fc.property(
      fc.boolean(), addr, fc.integer({ min: 0, max: 2 ** 48 - 1 }), fc.integer({ min: 0, max: 0xffff }), fc.array(addr, { maxLength: 3 }), fc.nat(9),
      (ra, target, mac, life, dns, at) => {
        const buf = new Uint8Array(at + IP6_HLEN + 200).fill(0x5a);
        const t = tracked(buf);
        const l4 = at + IP6_HLEN;
        let n: number;
        const src = new Uint8Array(16);
        src[0] = 0xfe; src[1] = 0x80; src[15] = 1;
        const dst = new Uint8Array(16);
        dst[0] = 0xff; dst[1] = 2; dst[15] = 1;
        target[0] = 0xfd; // not multicast
        if (ra) {
          n = writeRa(t.view, l4, 64, 0x40, life, 0, 0);
          n += writeOptLla(t.view, l4 + n, NDOPT.SLLA, mac);
          n += writeOptPrefix(t.view, l4 + n, 64, 0xc0, 100, 50, target, 0);
          if (dns.length > 0) n += writeOptRdnss(t.view, l4 + n, 300, dns);
        } else {
          n = writeNa(t.view, l4, 0x20, target, 0);
          n += writeOptLla(t.view, l4 + n, NDOPT.TLLA, mac);
        }
        writeIp6(t.view, at, n, 58, 255, src, 0, dst, 0);
        writeIcmp6Checksum(t.view, at, l4, n);
        expect(outside(t.writes, at, l4 + n)).toEqual([]);
        expect(checkNd(buf, at, l4, n)).toBe(NDP_OK);
        expect(icmp6SumOk(buf, at, l4, n)).toBe(true);
        expect(ndOptLla(buf, ndOption(buf, l4, n, ra ? NDOPT.SLLA : NDOPT.TLLA))).toBe(mac);
        if (ra) expect(ndRaLifetime(buf, l4)).toBe(life);
      },
    ), { numRuns: RUNS });
  });

  it('writeNs and a DAD probe to the solicited-node address pass checkNd', () => {
    fc.assert(fc.property(addr, (target) => {
      target[0] = 0xfd;
      const buf = new Uint8Array(IP6_HLEN + 24);
      const sn = new Uint8Array(16);
      sn[0] = 0xff; sn[1] = 2; sn[11] = 1; sn[12] = 0xff; sn.set(target.subarray(13), 13);
      writeNs(buf, IP6_HLEN, target, 0);
      writeIp6(buf, 0, 24, 58, 255, new Uint8Array(16), 0, sn, 0);
      expect(checkNd(buf, 0, IP6_HLEN, 24)).toBe(NDP_OK);
    }), { numRuns: RUNS });
  });
});
