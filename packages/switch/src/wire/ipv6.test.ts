/*
 * The IPv6, ICMPv6 and ND views on hand-built packets: text forms, the header
 * check, the extension-header walk and its refusals, the checksum against a
 * plain reference sum over the pseudo header, checkNd's RFC 4861 rules, and the
 * option writers read back through the accessors.
 */
import { describe, expect, it } from 'vitest';
import { read16, write16 } from './bytes.js';
import {
  checkIcmp6, checkNd, dnsNames, ICMP6, ICMP6_TYPE, icmp6SumOk, ND, ND_NA_FLAG, ND_PREFIX_FLAG, ND_RA_FLAG, NDOPT, NdError,
  ndDnsLifetime, ndDnsslNames, ndFirstOption, ndMtu, ndMtuOk, ndNaFlags, ndNextOption, ndOptLen, ndOptLla, ndOptType, ndOption,
  ndPrefixAt, ndPrefixFlags, ndPrefixLen, ndPrefixOk, ndPrefixPreferred, ndPrefixValid, ndRaFlags, ndRaLifetime, ndRdnssAt,
  ndRdnssCount, ndTarget, NDP_OK, writeIcmp6Checksum, writeIcmp6Echo, writeNa, writeNs, writeOptDnssl, writeOptLla,
  writeOptMtu, writeOptPrefix, writeOptRdnss, writeRa, writeRedirect, writeRs,
} from './icmp6.js';
import {
  checkIpv6, formatIp6, ip6Equal, ip6HopLimit, ip6InPrefix, ip6IsLinkLocal, ip6IsMulticast, ip6IsSolicitedNodeOf,
  ip6IsUnspecified, ip6Masked, ip6MulticastMac, ip6NextHeader, ip6PayloadLen, ip6Upper, IP6_HLEN, IP6_MAX_EXT, IP6_NEXT,
  IPV6_OK, Ipv6Error, Ip6WalkError, ip6Version, linkLocalFromMac, newIp6Upper, parseCidr6, parseIp6, writeIp6,
  writeSolicitedNode,
} from './ipv6.js';

const A = (s: string): Uint8Array => parseIp6(s)!;
const LL_A = A('fe80::1');
const ALL_NODES = A('ff02::1');

/** A packet: IPv6 header (next header `next`, hop limit hl) at `at`, then `payload`. */
function packet(next: number, payload: number[] | Uint8Array, src = LL_A, dst = ALL_NODES, hl = 255, at = 3): { buf: Uint8Array; ip: number; l4: number } {
  const buf = new Uint8Array(at + IP6_HLEN + payload.length + 5).fill(0xa5);
  writeIp6(buf, at, payload.length, next, hl, src, 0, dst, 0);
  buf.set(payload, at + IP6_HLEN);
  return { buf, ip: at, l4: at + IP6_HLEN };
}

/** RFC 1071 the slow way over the IPv6 pseudo header and the message. */
function refIcmp6Sum(buf: Uint8Array, ip: number, l4: number, n: number): number {
  const bytes = [...buf.subarray(ip + 8, ip + 40), 0, 0, n >>> 8, n & 0xff, 0, 0, 0, 58, ...buf.subarray(l4, l4 + n)];
  if (bytes.length & 1) bytes.push(0);
  let s = 0;
  for (let i = 0; i < bytes.length; i += 2) {
    s += (bytes[i] << 8) | bytes[i + 1];
    if (s > 0xffff) s = (s & 0xffff) + 1;
  }
  return s;
}

describe('IPv6 addresses', () => {
  it('parse and format in RFC 5952 form', () => {
    for (const [text, want] of [
      ['::', '::'], ['::1', '::1'], ['fe80::1', 'fe80::1'], ['FD00:1:2:3::1', 'fd00:1:2:3::1'],
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], ['2001:0db8:0000:0000:0000:0000:0002:0001', '2001:db8::2:1'],
      ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], ['::ffff:192.0.2.1', '::ffff:c000:201'], ['1::', '1::'],
      ['ff02::1:ff00:1', 'ff02::1:ff00:1'],
    ]) {
      const a = parseIp6(text);
      expect(a, text).toBeDefined();
      expect(formatIp6(a!), text).toBe(want);
      expect(formatIp6(parseIp6(want)!)).toBe(want);
    }
    for (const bad of ['', ':', ':::', '1::2::3', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7', 'g::1', '12345::', '1.2.3.4', '::1.2.3.256', 'fe80::1%eth0', '1:2:3:4:5:6:7::8']) {
      expect(parseIp6(bad), bad).toBeUndefined();
    }
    expect(parseCidr6('fd00:1::1/64')?.prefix).toBe(64);
    expect(parseCidr6('fd00:1::1/129')).toBeUndefined();
    expect(parseCidr6('fd00:1::1')).toBeUndefined();
    expect(formatIp6(ip6Masked(A('fd00:1:2:3:4:5:6:7'), 64))).toBe('fd00:1:2:3::');
    expect(formatIp6(ip6Masked(A('fd00:1:2:3:4:5:6:7'), 52))).toBe('fd00:1:2::');
    expect(ip6InPrefix(A('fd00:1:2:3::9'), 0, A('fd00:1:2:3::'), 0, 64)).toBe(true);
    expect(ip6InPrefix(A('fd00:1:2:4::9'), 0, A('fd00:1:2:3::'), 0, 64)).toBe(false);
    expect(ip6InPrefix(A('fd00:1:2:3::9'), 0, A('fd00:1:2:0::'), 0, 62)).toBe(true);
  });

  it('link-local from a MAC (modified EUI-64), solicited-node, multicast MAC, classes', () => {
    expect(formatIp6(linkLocalFromMac(0x525400123456))).toBe('fe80::5054:ff:fe12:3456');
    expect(formatIp6(linkLocalFromMac(0x020000000001))).toBe('fe80::ff:fe00:1');
    const sn = new Uint8Array(16);
    writeSolicitedNode(sn, 0, A('fd00::12:3456:789a'), 0);
    expect(formatIp6(sn)).toBe('ff02::1:ff56:789a');
    expect(ip6IsSolicitedNodeOf(sn, 0, A('fe80::1:56:789a'), 0)).toBe(true);
    expect(ip6IsSolicitedNodeOf(sn, 0, A('fe80::1:56:789b'), 0)).toBe(false);
    expect(ip6IsSolicitedNodeOf(ALL_NODES, 0, A('::1'), 0)).toBe(false);
    expect(ip6MulticastMac(sn, 0)).toBe(0x3333ff56789a);
    expect(ip6IsUnspecified(A('::'), 0)).toBe(true);
    expect(ip6IsUnspecified(A('::1'), 0)).toBe(false);
    expect(ip6IsLinkLocal(A('febf::1'), 0)).toBe(true);
    expect(ip6IsLinkLocal(A('fec0::1'), 0)).toBe(false);
    expect(ip6IsMulticast(A('ff05::2'), 0)).toBe(true);
    expect(ip6Equal(A('fd00::1'), 0, A('fd00:0::1'), 0)).toBe(true);
    expect(ip6Equal(A('fd00::1'), 0, A('fd00::2'), 0)).toBe(false);
  });
});

describe('checkIpv6 and writeIp6', () => {
  it('writes 40 bytes and reads them back; refuses what is short, not version 6, or longer than the frame', () => {
    const { buf, ip } = packet(IP6_NEXT.UDP, [1, 2, 3, 4, 5, 6, 7, 8], A('fd00::1'), A('fd00::2'), 64);
    expect(buf.subarray(0, 3).every((b) => b === 0xa5)).toBe(true);
    expect(checkIpv6(buf, ip, 48)).toBe(IPV6_OK);
    expect([ip6Version(buf, ip), ip6PayloadLen(buf, ip), ip6NextHeader(buf, ip), ip6HopLimit(buf, ip)]).toEqual([6, 8, 17, 64]);
    expect(formatIp6(buf, ip + 8)).toBe('fd00::1');
    expect(formatIp6(buf, ip + 24)).toBe('fd00::2');
    expect(checkIpv6(buf, ip, 47)).toBe(Ipv6Error.PAYLOAD_LENGTH);
    expect(checkIpv6(buf, ip, 39)).toBe(Ipv6Error.TRUNCATED);
    buf[ip] = 0x40;
    expect(checkIpv6(buf, ip, 48)).toBe(Ipv6Error.VERSION);
  });
});

describe('ip6Upper', () => {
  const ext = (next: number, len8: number, fill = 0): number[] => [next, len8, ...new Array(len8 * 8 + 6).fill(fill)];
  const frag = (next: number, offset: number, more: boolean): number[] => [next, 0, (offset >>> 5) & 0xff, ((offset << 3) & 0xf8) | (more ? 1 : 0), 0, 0, 0, 1];
  const walk = (next: number, payload: number[]): { r: number; u: ReturnType<typeof newIp6Upper>; l4: number } => {
    const { buf, ip, l4 } = packet(next, payload);
    const u = newIp6Upper();
    return { r: ip6Upper(buf, ip, u), u, l4 };
  };

  it('finds the upper layer directly or behind Hop-by-Hop, Destination Options, Routing, AH and a first fragment', () => {
    let w = walk(IP6_NEXT.ICMPV6, [135, 0, 0, 0]);
    expect([w.r, w.u.proto, w.u.off - w.l4, w.u.len, w.u.fragment]).toEqual([IPV6_OK, 58, 0, 4, false]);
    w = walk(IP6_NEXT.HOP_BY_HOP, [...ext(IP6_NEXT.DEST_OPTS, 0), ...ext(IP6_NEXT.ROUTING, 1), ...ext(IP6_NEXT.ICMPV6, 0), 134, 0, 0, 0]);
    expect([w.r, w.u.proto, w.u.off - w.l4, w.u.len]).toEqual([IPV6_OK, 58, 32, 4]);
    // AH counts in 4-octet units, minus 2.
    w = walk(IP6_NEXT.AH, [IP6_NEXT.UDP, 4, ...new Array(22).fill(0), 1, 2]);
    expect([w.r, w.u.proto, w.u.off - w.l4, w.u.len]).toEqual([IPV6_OK, 17, 24, 2]);
    w = walk(IP6_NEXT.FRAGMENT, [...frag(IP6_NEXT.ICMPV6, 0, true), 134, 0]);
    expect([w.r, w.u.proto, w.u.off - w.l4, w.u.fragment]).toEqual([IPV6_OK, 58, 8, true]);
    w = walk(IP6_NEXT.NONE, []);
    expect([w.r, w.u.proto, w.u.len]).toEqual([IPV6_OK, 59, 0]);
  });

  it('refuses Hop-by-Hop not first, a truncated header, a chain too long, a non-first fragment', () => {
    expect(walk(IP6_NEXT.DEST_OPTS, [...ext(IP6_NEXT.HOP_BY_HOP, 0), ...ext(58, 0)]).r).toBe(Ip6WalkError.HOP_BY_HOP);
    expect(walk(IP6_NEXT.DEST_OPTS, [58, 1, 0, 0, 0, 0, 0, 0, 0, 0]).r).toBe(Ip6WalkError.TRUNCATED);
    expect(walk(IP6_NEXT.DEST_OPTS, [58, 0, 0, 0]).r).toBe(Ip6WalkError.TRUNCATED);
    const chain: number[] = [];
    for (let i = 0; i < IP6_MAX_EXT; i++) chain.push(...ext(IP6_NEXT.DEST_OPTS, 0));
    expect(walk(IP6_NEXT.DEST_OPTS, [...chain, ...ext(58, 0)]).r).toBe(Ip6WalkError.TOO_LONG);
    const ok = chain.slice(0, -8 * 1);
    expect(walk(IP6_NEXT.DEST_OPTS, [...ok, ...ext(58, 0), 128, 0, 0, 0]).r).toBe(IPV6_OK);
    const w = walk(IP6_NEXT.FRAGMENT, [...frag(IP6_NEXT.ICMPV6, 1448, false), 1, 2, 3]);
    expect([w.r, w.u.proto, w.u.fragment]).toEqual([Ip6WalkError.NOT_FIRST_FRAGMENT, 58, true]);
  });
});

describe('ICMPv6 checksum', () => {
  it('agrees with a reference sum over the pseudo header, and a flipped byte fails it', () => {
    for (const n of [8, 9, 24, 77]) {
      const body = Array.from({ length: n }, (_, i) => (i * 37 + n) & 0xff);
      body[0] = 128;
      const { buf, ip, l4 } = packet(58, body, A('fd00::7'), A('fd00:1::9'), 64);
      writeIcmp6Checksum(buf, ip, l4, n);
      expect(refIcmp6Sum(buf, ip, l4, n)).toBe(0xffff);
      expect(icmp6SumOk(buf, ip, l4, n)).toBe(true);
      buf[l4 + n - 1] ^= 1;
      expect(icmp6SumOk(buf, ip, l4, n)).toBe(false);
      buf[l4 + n - 1] ^= 1;
      buf[ip + 8] ^= 0x10; // the source is covered
      expect(icmp6SumOk(buf, ip, l4, n)).toBe(false);
    }
    expect(checkIcmp6(7)).toBe(false);
    expect(checkIcmp6(8)).toBe(true);
  });

  it('an echo header and its fields', () => {
    const { buf, ip, l4 } = packet(58, new Array(12).fill(0), A('fd00::7'), A('fd00::1'), 64);
    expect(writeIcmp6Echo(buf, l4, ICMP6_TYPE.ECHO_REQUEST, 0x1234, 7)).toBe(8);
    writeIcmp6Checksum(buf, ip, l4, 12);
    expect([buf[l4 + ICMP6.TYPE], read16(buf, l4 + ICMP6.ID), read16(buf, l4 + ICMP6.SEQ)]).toEqual([128, 0x1234, 7]);
    expect(icmp6SumOk(buf, ip, l4, 12)).toBe(true);
  });
});

describe('Neighbor Discovery', () => {
  /** An ND message built by `write` into a 200-byte scratch, then placed in a packet. */
  function nd(write: (b: Uint8Array) => number, src = LL_A, dst = ALL_NODES, hl = 255): { buf: Uint8Array; ip: number; l4: number; n: number } {
    const s = new Uint8Array(200);
    const n = write(s);
    const p = packet(58, s.subarray(0, n), src, dst, hl);
    writeIcmp6Checksum(p.buf, p.ip, p.l4, n);
    return { ...p, n };
  }

  it('an RA with every option reads back, verifies and passes checkNd', () => {
    const wire = dnsNames(['lab.example', 'b.example.'])!;
    const m = nd((b) => {
      let n = writeRa(b, 0, 64, ND_RA_FLAG.MANAGED | ND_RA_FLAG.OTHER, 0, 0, 0);
      n += writeOptLla(b, n, NDOPT.SLLA, 0x02aabbccddee);
      n += writeOptMtu(b, n, 1400);
      n += writeOptPrefix(b, n, 64, ND_PREFIX_FLAG.ON_LINK | ND_PREFIX_FLAG.AUTONOMOUS, 86400, 14400, A('fd00:1:2:3::'), 0);
      n += writeOptRdnss(b, n, 1800, [A('fd00::53'), A('fd00::54')]);
      n += writeOptDnssl(b, n, 1800, wire);
      return n;
    });
    const { buf, ip, l4, n } = m;
    expect(checkNd(buf, ip, l4, n)).toBe(NDP_OK);
    expect(icmp6SumOk(buf, ip, l4, n)).toBe(true);
    expect([ndRaFlags(buf, l4), ndRaLifetime(buf, l4)]).toEqual([0xc0, 0]);
    expect(ndOptLla(buf, ndOption(buf, l4, n, NDOPT.SLLA))).toBe(0x02aabbccddee);
    const mtu = ndOption(buf, l4, n, NDOPT.MTU);
    expect([ndMtuOk(buf, mtu), ndMtu(buf, mtu)]).toEqual([true, 1400]);
    const pi = ndOption(buf, l4, n, NDOPT.PREFIX);
    expect([ndPrefixOk(buf, pi), ndPrefixLen(buf, pi), ndPrefixFlags(buf, pi), ndPrefixValid(buf, pi), ndPrefixPreferred(buf, pi),
      formatIp6(buf, ndPrefixAt(pi))]).toEqual([true, 64, 0xc0, 86400, 14400, 'fd00:1:2:3::']);
    const rd = ndOption(buf, l4, n, NDOPT.RDNSS);
    expect([ndRdnssCount(buf, rd), ndDnsLifetime(buf, rd), formatIp6(buf, ndRdnssAt(rd, 0)), formatIp6(buf, ndRdnssAt(rd, 1))])
      .toEqual([2, 1800, 'fd00::53', 'fd00::54']);
    const ds = ndOption(buf, l4, n, NDOPT.DNSSL);
    expect(ndOptLen(buf, ds) % 8).toBe(0);
    expect(ndDnsslNames(buf, ds)).toEqual(['lab.example', 'b.example']);
    expect(ndOption(buf, l4, n, NDOPT.TLLA)).toBe(-1);
    const types: number[] = [];
    for (let p = ndFirstOption(buf, l4, n); p >= 0; p = ndNextOption(buf, p, l4 + n)) types.push(ndOptType(buf, p));
    expect(types).toEqual([1, 5, 3, 25, 31]);
  });

  it('NS, NA, RS and Redirect are written whole and pass checkNd', () => {
    const t = A('fd00::42');
    const sn = new Uint8Array(16);
    writeSolicitedNode(sn, 0, t, 0);
    let m = nd((b) => writeNs(b, 0, t, 0), A('::'), sn);
    expect(checkNd(m.buf, m.ip, m.l4, m.n)).toBe(NDP_OK);
    expect(formatIp6(m.buf, ndTarget(m.l4))).toBe('fd00::42');
    m = nd((b) => writeNa(b, 0, ND_NA_FLAG.SOLICITED | ND_NA_FLAG.OVERRIDE, t, 0) + writeOptLla(b, 24, NDOPT.TLLA, 0x020000000002), A('fd00::42'), A('fd00::9'));
    expect(checkNd(m.buf, m.ip, m.l4, m.n)).toBe(NDP_OK);
    expect(ndNaFlags(m.buf, m.l4)).toBe(0x60);
    expect(ndOptLla(m.buf, ndOption(m.buf, m.l4, m.n, NDOPT.TLLA))).toBe(0x020000000002);
    m = nd((b) => writeRs(b, 0), A('::'), A('ff02::2'));
    expect(checkNd(m.buf, m.ip, m.l4, m.n)).toBe(NDP_OK);
    m = nd((b) => writeRedirect(b, 0, A('fe80::9'), 0, A('2001:db8::1'), 0));
    expect(checkNd(m.buf, m.ip, m.l4, m.n)).toBe(NDP_OK);
    expect(formatIp6(m.buf, m.l4 + ND.REDIRECT_DST)).toBe('2001:db8::1');
  });

  it('checkNd refuses what RFC 4861 says a node must discard', () => {
    const t = A('fd00::42');
    const sn = new Uint8Array(16);
    writeSolicitedNode(sn, 0, t, 0);
    const check = (m: ReturnType<typeof nd>): number => checkNd(m.buf, m.ip, m.l4, m.n);
    expect(check(nd((b) => writeNs(b, 0, t, 0), A('fd00::1'), sn, 64))).toBe(NdError.HOP_LIMIT);
    expect(check(nd((b) => { const n = writeNs(b, 0, t, 0); b[1] = 1; return n; }, A('fd00::1'), sn))).toBe(NdError.CODE);
    expect(check(nd((b) => writeNs(b, 0, t, 0) - 1, A('fd00::1'), sn))).toBe(NdError.TRUNCATED);
    expect(check(nd((b) => writeNs(b, 0, t, 0) + 8, A('fd00::1'), sn))).toBe(NdError.OPTION); // option of length 0
    expect(check(nd((b) => { const n = writeNs(b, 0, t, 0) + writeOptLla(b, 24, 1, 2); b[25] = 2; return n; }, A('fd00::1'), sn))).toBe(NdError.OPTION);
    expect(check(nd((b) => writeNs(b, 0, ALL_NODES, 0), A('fd00::1'), sn))).toBe(NdError.ADDRESS);
    // DAD: from :: only to the target's solicited-node address, and without SLLA.
    expect(check(nd((b) => writeNs(b, 0, t, 0), A('::'), ALL_NODES))).toBe(NdError.ADDRESS);
    expect(check(nd((b) => writeNs(b, 0, t, 0) + writeOptLla(b, 24, NDOPT.SLLA, 2), A('::'), sn))).toBe(NdError.ADDRESS);
    expect(check(nd((b) => writeNa(b, 0, ND_NA_FLAG.SOLICITED, t, 0), A('fd00::42'), ALL_NODES))).toBe(NdError.ADDRESS);
    expect(check(nd((b) => writeRa(b, 0, 64, 0, 1800, 0, 0), A('fd00::1')))).toBe(NdError.ADDRESS);
    expect(check(nd((b) => writeRs(b, 0) + writeOptLla(b, 8, NDOPT.SLLA, 2), A('::'), A('ff02::2')))).toBe(NdError.ADDRESS);
    expect(check(nd((b) => { b.fill(0, 0, 8); b[0] = 128; return 8; }))).toBe(NdError.TYPE);
    expect(checkNd(new Uint8Array(60), 0, 40, 4)).toBe(NdError.TRUNCATED);
  });

  it('dnsNames refuses empty and over-long labels; ndDnsslNames refuses a label past the option', () => {
    expect(dnsNames(['a..b'])).toBeUndefined();
    expect(dnsNames(['x'.repeat(64)])).toBeUndefined();
    expect(dnsNames([`${'x'.repeat(63)}.`.repeat(5)])).toBeUndefined();
    expect([...dnsNames(['a.bc'])!]).toEqual([1, 97, 2, 98, 99, 0]);
    const b = new Uint8Array(16);
    writeOptDnssl(b, 0, 60, Uint8Array.from([9, 97, 0]));
    expect(ndDnsslNames(b, 0)).toBeUndefined();
    write16(b, 8, 0x0161); // "a" then a non-zero pad byte
    b[10] = 0; b[11] = 5;
    expect(ndDnsslNames(b, 0)).toBeUndefined();
  });
});

describe('Fragment header (RFC 8200 4.5)', () => {
  it('reads back what writeFrag6 wrote: offset in bytes, M flag, Identification', async () => {
    const { frag6Id, frag6More, frag6Offset, writeFrag6, FRAG6_HLEN } = await import('./ipv6.js');
    const b = new Uint8Array(2 + FRAG6_HLEN);
    writeFrag6(b, 2, 17, 0xfff8, true, 0xdeadbeef);
    expect([frag6Offset(b, 2), frag6More(b, 2), frag6Id(b, 2), b[2]]).toEqual([0xfff8, true, 0xdeadbeef, 17]);
    writeFrag6(b, 2, 6, 1448, false, 1);
    expect([frag6Offset(b, 2), frag6More(b, 2), frag6Id(b, 2)]).toEqual([1448, false, 1]);
    b[5] |= 6; // the two reserved bits beside M are not part of the offset
    expect([frag6Offset(b, 2), frag6More(b, 2)]).toEqual([1448, false]);
  });
});
