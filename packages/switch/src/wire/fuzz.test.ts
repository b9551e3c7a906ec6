/*
 * Property-based tests (fast-check) for the wire views: ethernet, vlan, ipv4, arp,
 * l4 and checksum. What they pin down, for random and mutated frames:
 * - nothing throws;
 * - every check reads only inside the frame it is given, and every accessor a
 *   passing check unlocks reads only inside the frame: a Proxy over the buffer
 *   records each index read, and a frame is also dissected in two buffers whose
 *   bytes before and after it differ (guard regions); the results must be equal;
 * - what a passing check promises holds (header and Total Length inside the
 *   frame, UDP length and TCP data offset inside the IPv4 payload);
 * - the writers write only their own bytes, and the checksum helpers agree with a
 *   plain reference sum (RFC 1071) and with a full recomputation (RFC 1624).
 */
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { outside, tracked } from '../testing/tracked.js';

vi.setConfig({ testTimeout: 120_000 });
import {
  arpOper, arpSha, arpSpa, arpTha, arpTpa, ARP_LEN, checkArp, writeArp,
} from './arp.js';
import { read16, read32, write16, write32 } from './bytes.js';
import {
  checksum, csumReplace16, csumReplace32, finish, fold, pseudoSum, sum16,
} from './checksum.js';
import {
  dstMac, etherType, ETH_HLEN, ETHERTYPE, isGroupAt, linkLocalGroup, readMac, srcMac, writeMac,
} from './ethernet.js';
import {
  checkIpv4, ip4Checksum, ip4Dst, ip4FragOffset, ip4HeaderLen, ip4Id, ip4IsFragment, ip4Proto, ip4Src, ip4TotalLen,
  ip4Ttl, IPPROTO, IPV4_OK, Ipv4Error, writeIpv4Header,
} from './ipv4.js';
import {
  checkIcmp, checkTcp, checkUdp, icmpCode, icmpId, icmpSeq, icmpType, tcpAck, tcpChecksum, tcpDport, tcpFlags,
  tcpHeaderLen, tcpSeq, tcpSport, TCP_MIN_HLEN, udpChecksum, udpDport, udpLen, udpSport, UDP_HLEN,
} from './l4.js';
import { innerType, isTagTpid, tci, tciPrio, tciVid, VLAN_TAGGED_HLEN, writeTaggedHeader } from './vlan.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 3000);

// ---------------------------------------------------------------------------
// Buffers: a frame at an offset inside a larger buffer, with guard bytes around.

const LEAD = 7;
const TAIL = 64;

function placed(frame: Uint8Array, guard: number): Uint8Array {
  const buf = new Uint8Array(LEAD + frame.length + TAIL).fill(guard);
  buf.set(frame, LEAD);
  return buf;
}

// ---------------------------------------------------------------------------
// Dissection as the data plane does it: each accessor only behind the check that
// licenses it. Returns everything read, as plain data.

type Dissection = Record<string, unknown>;

function dissect(buf: Uint8Array, off: number, len: number): Dissection {
  const d: Dissection = { len };
  if (len < ETH_HLEN) {
    d.kind = 'runt';
    return d;
  }
  d.dst = dstMac(buf, off);
  d.src = srcMac(buf, off);
  d.group = isGroupAt(buf, off);
  d.linkLocal = linkLocalGroup(buf, off);
  let type = etherType(buf, off);
  d.type = type;
  let l3 = off + ETH_HLEN;
  let l3len = len - ETH_HLEN;
  // Up to two tags, each only when the frame holds it (ingress: len >= 18 before tci()).
  const tags: unknown[] = [];
  for (let depth = 0; depth < 2 && isTagTpid(type); depth++) {
    if (l3len < 4) {
      d.truncatedTag = depth;
      return d;
    }
    // The tag view is relative to the start of the frame for the outer tag; the
    // inner one is the same 4-byte layout shifted by 4.
    const t = depth === 0 ? tci(buf, off) : read16(buf, l3);
    const inner = depth === 0 ? (l3len >= 4 ? innerType(buf, off) : -1) : read16(buf, l3 + 2);
    tags.push({ tci: t, vid: tciVid(t), prio: tciPrio(t), inner });
    type = inner;
    l3 += 4;
    l3len -= 4;
  }
  d.tags = tags;
  d.l3type = type;
  if (type === ETHERTYPE.ARP) {
    d.arpOk = checkArp(buf, l3, l3len);
    if (d.arpOk) {
      d.arp = [arpOper(buf, l3), arpSha(buf, l3), arpSpa(buf, l3), arpTha(buf, l3), arpTpa(buf, l3)];
    }
  } else if (type === ETHERTYPE.IPV4) {
    const c = checkIpv4(buf, l3, l3len);
    const cNoSum = checkIpv4(buf, l3, l3len, false);
    d.ipv4 = c;
    d.ipv4NoSum = cNoSum;
    if (cNoSum === IPV4_OK) {
      const hl = ip4HeaderLen(buf, l3);
      const total = ip4TotalLen(buf, l3);
      // What IPV4_OK promises.
      expect(hl).toBeGreaterThanOrEqual(20);
      expect(hl).toBeLessThanOrEqual(total);
      expect(total).toBeLessThanOrEqual(l3len);
      d.ip = [hl, total, ip4Id(buf, l3), ip4Ttl(buf, l3), ip4Proto(buf, l3), ip4Src(buf, l3), ip4Dst(buf, l3),
        ip4Checksum(buf, l3), ip4IsFragment(buf, l3), ip4FragOffset(buf, l3)];
      const l4 = l3 + hl;
      const l4len = total - hl;
      const proto = ip4Proto(buf, l3);
      d.l4sum = checksum(buf, l4, l4len, pseudoSum(ip4Src(buf, l3), ip4Dst(buf, l3), proto, l4len));
      if (proto === IPPROTO.UDP) {
        d.udpOk = checkUdp(buf, l4, l4len);
        if (d.udpOk) {
          const ulen = udpLen(buf, l4);
          expect(ulen).toBeGreaterThanOrEqual(UDP_HLEN);
          expect(ulen).toBeLessThanOrEqual(l4len);
          d.udp = [udpSport(buf, l4), udpDport(buf, l4), ulen, udpChecksum(buf, l4)];
        }
      } else if (proto === IPPROTO.TCP) {
        d.tcpOk = checkTcp(buf, l4, l4len);
        if (d.tcpOk) {
          const thl = tcpHeaderLen(buf, l4);
          expect(thl).toBeGreaterThanOrEqual(TCP_MIN_HLEN);
          expect(thl).toBeLessThanOrEqual(l4len);
          d.tcp = [tcpSport(buf, l4), tcpDport(buf, l4), tcpSeq(buf, l4), tcpAck(buf, l4), thl, tcpFlags(buf, l4), tcpChecksum(buf, l4)];
        }
      } else if (proto === IPPROTO.ICMP) {
        d.icmpOk = checkIcmp(l4len);
        if (d.icmpOk) d.icmp = [icmpType(buf, l4), icmpCode(buf, l4), icmpId(buf, l4), icmpSeq(buf, l4)];
      }
    }
  }
  return d;
}

// ---------------------------------------------------------------------------
// Frame generators: structured frames that reach deep into the parsers, random
// bytes, and both mutated (byte edits, truncation, extension).

const u8 = fc.integer({ min: 0, max: 255 });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const mac = fc.oneof(
  fc.integer({ min: 0, max: 2 ** 48 - 1 }),
  fc.constantFrom(0, 0xffffffffffff, 0x0180c2000000, 0x0180c2000001, 0x0180c200000e, 0x01005e000001, 0x020000000001),
);
const tpid = fc.constantFrom(0x8100, 0x88a8, 0x9100);
const etype = fc.oneof(
  fc.constantFrom(0x0800, 0x0806, 0x86dd, 0x8100, 0x88a8, 0x9100, 0x0000, 0x05dc, 0x0600, 0xffff, 0x88cc, 0x8809),
  u16,
);

function bytes(...parts: (number[] | Uint8Array)[]): Uint8Array {
  const n = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

const be16 = (v: number): number[] => [(v >>> 8) & 0xff, v & 0xff];
const be32 = (v: number): number[] => [v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];

/** An L4 header + payload: TCP with any data offset, UDP with any length, ICMP, or raw. */
const l4Arb = fc.oneof(
  fc.record({ doff: fc.oneof(fc.constant(5), fc.integer({ min: 0, max: 15 })), flags: u8, body: fc.uint8Array({ maxLength: 60 }), sport: u16, dport: u16 })
    .map(({ doff, flags, body, sport, dport }) => ({
      proto: 6,
      bytes: bytes(be16(sport), be16(dport), be32(1), be32(2), [doff << 4, flags], be16(1024), [0, 0, 0, 0], body),
    })),
  fc.record({
    ulen: fc.oneof({ weight: 3, arbitrary: fc.constant(-1) }, { weight: 1, arbitrary: u16 }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 40 }) }),
    body: fc.uint8Array({ maxLength: 60 }),
    dport: fc.constantFrom(67, 68, 53, 0, 65535),
  }).map(({ ulen, body, dport }) => ({
    proto: 17, bytes: bytes(be16(68), be16(dport), be16(ulen < 0 ? 8 + body.length : ulen), [0, 0], body),
  })),
  fc.record({ type: fc.constantFrom(0, 3, 8, 11, 12, 255), body: fc.uint8Array({ maxLength: 60 }) })
    .map(({ type, body }) => ({ proto: 1, bytes: bytes([type, 0, 0, 0, 0, 1, 0, 1], body) })),
  fc.record({ proto: u8, body: fc.uint8Array({ maxLength: 40 }) }).map(({ proto, body }) => ({ proto, bytes: body })),
);

/** An IPv4 packet: any version/IHL/total length/checksum, options of any length, fragments. */
const ipv4Arb = fc.record({
  version: fc.oneof({ weight: 4, arbitrary: fc.constant(4) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 15 }) }),
  ihl: fc.oneof({ weight: 4, arbitrary: fc.constant(5) }, { weight: 2, arbitrary: fc.integer({ min: 0, max: 15 }) }),
  totalDelta: fc.oneof(
    { weight: 4, arbitrary: fc.constant(0) },
    { weight: 2, arbitrary: fc.integer({ min: -30, max: 30 }) },
    { weight: 1, arbitrary: fc.constant(70000) },
  ),
  frag: fc.constantFrom(0, 0x4000, 0x2000, 0x0001, 0x3fff),
  ttl: u8,
  src: u32,
  dst: u32,
  goodSum: fc.boolean(),
  l4: l4Arb,
  optFill: u8,
}).map((p) => {
  const hl = p.ihl * 4;
  const header = new Uint8Array(Math.max(20, hl)).fill(p.optFill);
  header[0] = (p.version << 4) | p.ihl;
  header[1] = 0;
  const total = p.totalDelta === 70000 ? 0xffff : Math.max(0, Math.min(0xffff, header.length + p.l4.bytes.length + p.totalDelta));
  write16(header, 2, total);
  write16(header, 4, 0x1234);
  write16(header, 6, p.frag);
  header[8] = p.ttl;
  header[9] = p.l4.proto;
  write32(header, 12, p.src);
  write32(header, 16, p.dst);
  write16(header, 10, 0);
  if (p.goodSum && hl >= 20) write16(header, 10, checksum(header, 0, hl));
  return bytes(header, p.l4.bytes);
});

/** ARP with any htype/ptype/hlen/plen and any length. */
const arpArb = fc.record({
  htype: fc.oneof({ weight: 5, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: u16 }),
  ptype: fc.oneof({ weight: 5, arbitrary: fc.constant(0x0800) }, { weight: 1, arbitrary: u16 }),
  hlen: fc.oneof({ weight: 5, arbitrary: fc.constant(6) }, { weight: 1, arbitrary: u8 }),
  plen: fc.oneof({ weight: 5, arbitrary: fc.constant(4) }, { weight: 1, arbitrary: u8 }),
  oper: fc.constantFrom(1, 2, 0, 3, 0xffff),
  rest: fc.oneof(fc.uint8Array({ minLength: 20, maxLength: 40 }), fc.uint8Array({ maxLength: 40 })),
}).map((a) => bytes(be16(a.htype), be16(a.ptype), [a.hlen, a.plen], be16(a.oper), a.rest));

/** A frame: Ethernet header, 0-3 tags, then IPv4 / ARP / anything. */
const structuredFrame = fc.record({
  dst: mac,
  src: mac,
  tags: fc.oneof(
    { weight: 3, arbitrary: fc.constant<{ tpid: number; tci: number }[]>([]) },
    { weight: 2, arbitrary: fc.array(fc.record({ tpid, tci: u16 }), { minLength: 1, maxLength: 3 }).map((t): { tpid: number; tci: number }[] => t) },
  ),
  body: fc.oneof(
    ipv4Arb.map((b) => ({ type: 0x0800, b })),
    arpArb.map((b) => ({ type: 0x0806, b })),
    fc.record({ type: etype, b: fc.uint8Array({ maxLength: 80 }) }),
  ),
}).map((f) => {
  const head = new Uint8Array(12);
  writeMac(head, 0, f.dst);
  writeMac(head, 6, f.src);
  const tagBytes = f.tags.flatMap((t) => [...be16(t.tpid), ...be16(t.tci)]);
  return bytes(head, tagBytes, be16(f.body.type), f.body.b);
});

/** Byte edits, then a cut or an extension. */
function mutated(base: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array> {
  return fc.record({
    f: base,
    edits: fc.array(fc.tuple(fc.nat(), u8), { maxLength: 6 }),
    cut: fc.oneof(fc.constant(-1), fc.nat(120)),
    extra: fc.uint8Array({ maxLength: 8 }),
  }).map(({ f, edits, cut, extra }) => {
    let out = f.slice();
    if (out.length > 0) for (const [pos, v] of edits) out[pos % out.length] = v;
    if (cut >= 0 && cut < out.length) out = out.slice(0, cut);
    return bytes(out, extra);
  });
}

export const anyFrame: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 4, arbitrary: structuredFrame },
  { weight: 4, arbitrary: mutated(structuredFrame) },
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 120 }) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 13 }) },
);

// ---------------------------------------------------------------------------

describe('frames through every view (fast-check)', () => {
  it('never throw, read only inside the frame, and do not depend on the bytes around it', () => {
    fc.assert(fc.property(anyFrame, fc.integer({ min: 0, max: 255 }), (frame, guard) => {
      // 1. Every index read lies in [LEAD, LEAD + len).
      const a = placed(frame, guard);
      const t = tracked(a);
      const da = dissect(t.view, LEAD, frame.length);
      expect(outside(t.reads, LEAD, LEAD + frame.length)).toEqual([]);
      expect(t.writes).toEqual([]);
      // 2. The same frame amid other bytes dissects the same.
      const b = placed(frame, guard ^ 0xff);
      b.fill(guard ^ 0x5a, 0, LEAD);
      expect(dissect(b, LEAD, frame.length)).toEqual(da);
      // 3. And at offset 0 of a buffer exactly its size (an out-of-range read gives undefined there).
      expect(dissect(Uint8Array.from(frame), 0, frame.length)).toEqual(da);
    }), { numRuns: RUNS });
  });

  it('the frame generator reaches the inner views, not only the early refusals', () => {
    // A claim about the generator, so it is checked on a fixed-seed sample: the random
    // property above explores anew each run, and a floor on its own counts failed about
    // one run in ten (tcp reached 13 times where 15 were asked).
    const reached = { ip: 0, udp: 0, tcp: 0, icmp: 0, arp: 0, tag: 0 };
    for (const frame of fc.sample(anyFrame, { numRuns: 3000, seed: 0x5eed })) {
      const da = dissect(Uint8Array.from(frame), 0, frame.length);
      for (const k of ['ip', 'udp', 'tcp', 'icmp', 'arp'] as const) if (da[k] !== undefined) reached[k]++;
      if (Array.isArray(da.tags) && da.tags.length > 0) reached.tag++;
    }
    expect(reached.ip).toBeGreaterThan(3000 / 25);
    for (const k of ['udp', 'tcp', 'icmp', 'arp', 'tag'] as const) expect(reached[k], k).toBeGreaterThan(3000 / 200);
  });

  it('checks given a shorter len than the buffer never look past len', () => {
    fc.assert(fc.property(anyFrame, fc.nat(80), (frame, cutAt) => {
      const len = Math.min(frame.length, cutAt);
      const t = tracked(placed(frame, 0xa5));
      const l3 = LEAD + ETH_HLEN;
      const l3len = len - ETH_HLEN;
      // The checks themselves, with any length (negative included), read nothing past it.
      checkIpv4(t.view, l3, l3len);
      checkIpv4(t.view, l3, l3len, false);
      checkArp(t.view, l3, l3len);
      checkUdp(t.view, l3, l3len);
      checkTcp(t.view, l3, l3len);
      checkIcmp(l3len);
      expect(outside(t.reads, l3, l3 + Math.max(0, l3len))).toEqual([]);
    }), { numRuns: RUNS });
  });
});

describe('checkIpv4 (fast-check)', () => {
  it('refuses exactly what RFC 791 says is broken, in a fixed order', () => {
    fc.assert(fc.property(ipv4Arb, fc.integer({ min: -4, max: 8 }), (pkt, slack) => {
      const len = Math.max(0, pkt.length + Math.min(0, slack));
      const r = checkIpv4(placed(pkt, 0), LEAD, len);
      const b = pkt;
      let want: number;
      if (len < 20) want = Ipv4Error.TRUNCATED;
      else if (b[0] >>> 4 !== 4) want = Ipv4Error.VERSION;
      else if ((b[0] & 15) * 4 < 20 || (b[0] & 15) * 4 > len) want = Ipv4Error.HEADER_LENGTH;
      else if (read16(b, 2) < (b[0] & 15) * 4 || read16(b, 2) > len) want = Ipv4Error.TOTAL_LENGTH;
      else if (refSum(b, 0, (b[0] & 15) * 4) % 0xffff !== 0) want = Ipv4Error.CHECKSUM;
      else want = IPV4_OK;
      expect(r).toBe(want);
    }), { numRuns: RUNS });
  });

  it('a header written by writeIpv4Header always passes, and no byte outside it is written', () => {
    fc.assert(fc.property(
      fc.record({ totalLen: fc.integer({ min: 20, max: 200 }), id: u16, ttl: u8, proto: u8, src: u32, dst: u32, tos: u8, dontFragment: fc.boolean() }),
      fc.integer({ min: 0, max: 9 }),
      (h, off) => {
        const buf = new Uint8Array(off + h.totalLen + 8).fill(0xa5);
        const t = tracked(buf);
        writeIpv4Header(t.view, off, h);
        expect(outside(t.writes, off, off + 20)).toEqual([]);
        expect(checkIpv4(buf, off, h.totalLen)).toBe(IPV4_OK);
        expect([ip4Src(buf, off), ip4Dst(buf, off), ip4Proto(buf, off), ip4Ttl(buf, off), ip4TotalLen(buf, off)])
          .toEqual([h.src, h.dst, h.proto, h.ttl, h.totalLen]);
        expect(ip4IsFragment(buf, off)).toBe(false);
      },
    ), { numRuns: RUNS });
  });
});

describe('ARP (fast-check)', () => {
  it('checkArp accepts only Ethernet/IPv4 with 28 bytes, and writeArp round-trips in its 28 bytes', () => {
    fc.assert(fc.property(arpArb, (a) => {
      const ok = checkArp(placed(a, 0xff), LEAD, a.length);
      const want = a.length >= ARP_LEN && read16(a, 0) === 1 && read16(a, 2) === 0x0800 && a[4] === 6 && a[5] === 4;
      expect(ok).toBe(want);
    }), { numRuns: RUNS });
    fc.assert(fc.property(fc.constantFrom(1, 2), mac, u32, mac, u32, fc.nat(10), (oper, sha, spa, tha, tpa, off) => {
      const buf = new Uint8Array(off + ARP_LEN + 6).fill(0x5a);
      const t = tracked(buf);
      writeArp(t.view, off, oper, sha, spa, tha, tpa);
      expect(outside(t.writes, off, off + ARP_LEN)).toEqual([]);
      expect(checkArp(buf, off, ARP_LEN)).toBe(true);
      expect([arpOper(buf, off), arpSha(buf, off), arpSpa(buf, off), arpTha(buf, off), arpTpa(buf, off)]).toEqual([oper, sha, spa, tha, tpa]);
    }), { numRuns: RUNS });
  });
});

describe('802.1Q tag views (fast-check)', () => {
  it('tci/innerType read only bytes 12..18 of the frame; writeTaggedHeader writes only 16 header bytes', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: VLAN_TAGGED_HLEN, maxLength: 64 }), u16, (frame, t) => {
      const tr = tracked(placed(frame, 0));
      tci(tr.view, LEAD);
      innerType(tr.view, LEAD);
      expect(outside(tr.reads, LEAD + 14, LEAD + VLAN_TAGGED_HLEN)).toEqual([]);
      const hdr = new Uint8Array(24).fill(0xa5);
      const th = tracked(hdr);
      const src = tracked(placed(frame, 0));
      writeTaggedHeader(th.view, src.view, LEAD, t);
      expect(outside(th.writes, 0, 16)).toEqual([]);
      expect(outside(src.reads, LEAD, LEAD + 12)).toEqual([]);
      expect(src.writes).toEqual([]);
    }), { numRuns: RUNS });
  });
});

// ---------------------------------------------------------------------------
// Checksums against a reference one's-complement sum.

/** RFC 1071 the slow way: 16-bit big-endian words, odd byte padded with zero, end-around carry at each step. */
function refSum(b: Uint8Array, off: number, len: number): number {
  let s = 0;
  for (let i = 0; i < len; i += 2) {
    const w = (b[off + i] << 8) | (i + 1 < len ? b[off + i + 1] : 0);
    s += w;
    if (s > 0xffff) s = (s & 0xffff) + 1;
  }
  return s;
}

/**
 * The incremental checksum equals the recomputed one, except that for data that is
 * now all zeros RFC 1624 gives 0x0000 where a full sum gives 0xffff (the two zeros
 * of one's complement; impossible for IPv4 headers and TCP/UDP with their pseudo header).
 */
function expectSameSum(incremental: number, data: Uint8Array): void {
  const full = checksum(data, 0, data.length);
  if (data.every((x) => x === 0)) expect([0, 0xffff]).toContain(incremental);
  else expect(incremental).toBe(full);
}

describe('checksum (fast-check)', () => {
  it('sum16 + fold agree with the reference sum, read exactly [off, off+len), and checksums verify', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(7), fc.integer({ min: 0, max: 0xffff }), (data, off, init) => {
      const buf = placed(data, 0xee).subarray(LEAD - off);
      const t = tracked(buf);
      const s = sum16(t.view, off, data.length);
      expect(outside(t.reads, off, off + data.length)).toEqual([]);
      expect(fold(s)).toBe(refSum(data, 0, data.length));
      expect(fold(s) % 0xffff).toBe(refSum(data, 0, data.length) % 0xffff);
      expect(fold(sum16(buf, off, data.length, init)) % 0xffff).toBe((refSum(data, 0, data.length) + init) % 0xffff);
      // Data followed by its checksum (even length) sums to 0xffff: "verifies".
      const even = data.length & ~1;
      const withSum = new Uint8Array(even + 2);
      withSum.set(data.subarray(0, even));
      write16(withSum, even, checksum(withSum, 0, even));
      expect(fold(sum16(withSum, 0, even + 2))).toBe(0xffff);
      expect(checksum(withSum, 0, even + 2)).toBe(0);
    }), { numRuns: RUNS });
  });

  it('fold always lands in 16 bits and keeps the value mod 0xffff; finish is its complement', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 2 ** 40 }), (s) => {
      const f = fold(s);
      expect(f).toBeGreaterThanOrEqual(0);
      expect(f).toBeLessThanOrEqual(0xffff);
      expect(f % 0xffff).toBe(s % 0xffff);
      if (s > 0) expect(f).toBeGreaterThan(0);
      expect(finish(s)).toBe(~f & 0xffff);
    }), { numRuns: RUNS });
  });

  it('csumReplace16/32 (RFC 1624 eqn. 3) equal a full recomputation after the edit', () => {
    fc.assert(fc.property(
      fc.uint8Array({ minLength: 4, maxLength: 80 }).map((d) => d.subarray(0, d.length & ~1)),
      fc.nat(), u16, u32,
      (data, at, now16, now32) => {
        const pos16 = (at % (data.length / 2)) * 2;
        const before = checksum(data, 0, data.length);
        const d16 = data.slice();
        const old16 = read16(d16, pos16);
        write16(d16, pos16, now16);
        expectSameSum(csumReplace16(before, old16, now16), d16);
        if (data.length >= 4) {
          const pos32 = (at % (data.length / 4 | 0 || 1)) * 4;
          const d32 = data.slice();
          const old32 = read32(d32, pos32);
          write32(d32, pos32, now32);
          expectSameSum(csumReplace32(before, old32, now32), d32);
        }
      },
    ), { numRuns: RUNS });
  });

  it('read/write 16/32 round-trip and touch only their bytes', () => {
    fc.assert(fc.property(u16, u32, fc.nat(8), (v16, v32, off) => {
      const buf = new Uint8Array(off + 8).fill(0x33);
      const t = tracked(buf);
      write16(t.view, off, v16);
      write32(t.view, off + 2, v32);
      expect(outside(t.writes, off, off + 6)).toEqual([]);
      expect(read16(buf, off)).toBe(v16);
      expect(read32(buf, off + 2)).toBe(v32);
      expect(readMac(buf, off)).toBe(v16 * 2 ** 32 + v32);
    }), { numRuns: RUNS });
  });
});
