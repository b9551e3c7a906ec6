/*
 * ICMPv6 (RFC 4443) and Neighbor Discovery (RFC 4861, options of RFC 4861 4.6,
 * RFC 8106 RDNSS/DNSSL) views over (buf, off) where off is the ICMPv6 header
 * (ipv6.ts ip6Upper finds it). The checksum covers the IPv6 pseudo header
 * (ip6PseudoSum), so the functions that verify or write it take the IPv6
 * header's offset too.
 *
 * `checkNd` is the door for an ND message: RFC 4861's validity checks that need
 * no state (hop limit 255, code 0, the type's length, every option's length
 * non-zero and inside the message, the per-type address rules). Once it returns
 * ND_OK the option walk (`ndOption`) and the option accessors stay inside the
 * message. The checksum is verified apart (`icmp6SumOk`): the switch's guards
 * judge a frame by its type without it, the router verifies it before answering.
 *
 * The option writers return the bytes written (a multiple of 8); the message
 * writers write their fixed part with a zero checksum, which
 * `writeIcmp6Checksum` fills in once the options are there.
 */
import * as bytes from './bytes.js';
import * as cs from './checksum.js';
import * as ipv6 from './ipv6.js';

// Module constants, not imported bindings (bytes.ts says why).
const { read16, read32, write16, write32 } = bytes;
const { checksum, fold, sum16 } = cs;
const { ip6PseudoSum, ip6IsUnspecified, ip6IsMulticast, ip6IsLinkLocal, ip6IsSolicitedNodeOf } = ipv6;
const FIP = ipv6.IP6;
const P_ICMPV6 = ipv6.IP6_NEXT.ICMPV6;

const FI = { TYPE: 0, CODE: 1, CSUM: 2, ID: 4, SEQ: 6, MTU: 4, POINTER: 4 } as const;
const FI_HLEN = 8;
export const ICMP6 = FI;
export const ICMP6_HLEN = FI_HLEN;
export const ICMP6_TYPE = {
  DEST_UNREACH: 1, PACKET_TOO_BIG: 2, TIME_EXCEEDED: 3, PARAM_PROBLEM: 4, ECHO_REQUEST: 128, ECHO_REPLY: 129,
  MLD_QUERY: 130, MLD_REPORT: 131, MLD_DONE: 132, ROUTER_SOLICIT: 133, ROUTER_ADVERT: 134, NEIGHBOR_SOLICIT: 135,
  NEIGHBOR_ADVERT: 136, REDIRECT: 137, MLD2_REPORT: 143,
} as const;
const T = ICMP6_TYPE;

export const checkIcmp6 = (l4len: number): boolean => l4len >= FI_HLEN;
export const icmp6Type = (buf: Uint8Array, off: number): number => buf[off + FI.TYPE];
export const icmp6Code = (buf: Uint8Array, off: number): number => buf[off + FI.CODE];
export const icmp6Checksum = (buf: Uint8Array, off: number): number => read16(buf, off + FI.CSUM);
export const icmp6Id = (buf: Uint8Array, off: number): number => read16(buf, off + FI.ID);
export const icmp6Seq = (buf: Uint8Array, off: number): number => read16(buf, off + FI.SEQ);

/** The ICMPv6 message buf[l4, l4+l4len) of the IPv6 packet at ip verifies (its checksum with the pseudo header). */
export function icmp6SumOk(buf: Uint8Array, ip: number, l4: number, l4len: number): boolean {
  return fold(sum16(buf, l4, l4len, ip6PseudoSum(buf, ip, l4len, P_ICMPV6))) === 0xffff;
}

/** Computes and writes the checksum of the ICMPv6 message buf[l4, l4+l4len) (addresses from the IPv6 header at ip). */
export function writeIcmp6Checksum(buf: Uint8Array, ip: number, l4: number, l4len: number): void {
  write16(buf, l4 + FI.CSUM, 0);
  write16(buf, l4 + FI.CSUM, checksum(buf, l4, l4len, ip6PseudoSum(buf, ip, l4len, P_ICMPV6)));
}

// ---------------------------------------------------------------------------
// Neighbor Discovery messages.

/** Fields of the ND messages, from the ICMPv6 header. */
const FN = {
  RA_HOP_LIMIT: 4, RA_FLAGS: 5, RA_LIFETIME: 6, RA_REACHABLE: 8, RA_RETRANS: 12,
  NA_FLAGS: 4, TARGET: 8, REDIRECT_DST: 24,
} as const;
export const ND = FN;
/** Fixed lengths (where the options start) of RS, RA, NS, NA and Redirect. */
const LEN_RS = 8;
const LEN_RA = 16;
const LEN_NS = 24;
const LEN_NA = 24;
const LEN_REDIRECT = 40;
export const ND_LEN = { RS: LEN_RS, RA: LEN_RA, NS: LEN_NS, NA: LEN_NA, REDIRECT: LEN_REDIRECT } as const;
export const ND_RA_FLAG = { MANAGED: 0x80, OTHER: 0x40 } as const;
export const ND_NA_FLAG = { ROUTER: 0x80, SOLICITED: 0x40, OVERRIDE: 0x20 } as const;
/** ND requires this hop limit (RFC 4861 6.1, 7.1): the message cannot have crossed a router. */
export const ND_HOP_LIMIT = 255;

/** Where the options of an ND message of `type` start, or -1 if it is not one. */
export function ndFixedLen(type: number): number {
  if (type === T.ROUTER_SOLICIT) return LEN_RS;
  if (type === T.ROUTER_ADVERT) return LEN_RA;
  if (type === T.NEIGHBOR_SOLICIT) return LEN_NS;
  if (type === T.NEIGHBOR_ADVERT) return LEN_NA;
  if (type === T.REDIRECT) return LEN_REDIRECT;
  return -1;
}

const ND_OK = 0;
export const NDP_OK = ND_OK;
const NE = {
  /** Not an ND message type. */
  TYPE: 1,
  HOP_LIMIT: 2,
  CODE: 3,
  /** Shorter than the type's fixed part. */
  TRUNCATED: 4,
  /** An option of length 0 or running past the message. */
  OPTION: 5,
  /** The per-type address rules (multicast target, RA not from link-local, DAD NS with a link-layer address...). */
  ADDRESS: 6,
} as const;
export const NdError = NE;

export const NDOPT = { SLLA: 1, TLLA: 2, PREFIX: 3, REDIRECTED: 4, MTU: 5, RDNSS: 25, DNSSL: 31 } as const;
const O = NDOPT;

/**
 * RFC 4861's stateless validity checks of the ND message buf[l4, l4+l4len) in the
 * IPv6 packet at ip (6.1.1, 6.1.2, 7.1.1, 7.1.2, 8.1), the checksum aside.
 */
export function checkNd(buf: Uint8Array, ip: number, l4: number, l4len: number): number {
  if (l4len < FI_HLEN) return NE.TRUNCATED;
  const type = buf[l4 + FI.TYPE];
  const fixed = ndFixedLen(type);
  if (fixed < 0) return NE.TYPE;
  if (buf[ip + FIP.HLIM] !== ND_HOP_LIMIT) return NE.HOP_LIMIT;
  if (buf[l4 + FI.CODE] !== 0) return NE.CODE;
  if (l4len < fixed) return NE.TRUNCATED;
  const end = l4 + l4len;
  let slla = false;
  for (let p = l4 + fixed; p < end;) {
    if (p + 2 > end) return NE.OPTION;
    const n = buf[p + 1] * 8;
    if (n === 0 || p + n > end) return NE.OPTION;
    if (buf[p] === O.SLLA) slla = true;
    p += n;
  }
  const src = ip + FIP.SRC;
  const dst = ip + FIP.DST;
  if (type === T.NEIGHBOR_SOLICIT) {
    if (ip6IsMulticast(buf, l4 + FN.TARGET)) return NE.ADDRESS;
    // A DAD probe: to the target's solicited-node address, without a link-layer address.
    if (ip6IsUnspecified(buf, src) && (slla || !ip6IsSolicitedNodeOf(buf, dst, buf, l4 + FN.TARGET))) return NE.ADDRESS;
  } else if (type === T.NEIGHBOR_ADVERT) {
    if (ip6IsMulticast(buf, l4 + FN.TARGET)) return NE.ADDRESS;
    if (ip6IsMulticast(buf, dst) && (buf[l4 + FN.NA_FLAGS] & ND_NA_FLAG.SOLICITED) !== 0) return NE.ADDRESS;
  } else if (type === T.ROUTER_ADVERT || type === T.REDIRECT) {
    if (!ip6IsLinkLocal(buf, src)) return NE.ADDRESS;
  } else if (type === T.ROUTER_SOLICIT) {
    if (ip6IsUnspecified(buf, src) && slla) return NE.ADDRESS;
  }
  return ND_OK;
}

export const ndTarget = (l4: number): number => l4 + FN.TARGET;
export const ndRedirectDst = (l4: number): number => l4 + FN.REDIRECT_DST;
export const ndRaHopLimit = (buf: Uint8Array, l4: number): number => buf[l4 + FN.RA_HOP_LIMIT];
export const ndRaFlags = (buf: Uint8Array, l4: number): number => buf[l4 + FN.RA_FLAGS];
export const ndRaLifetime = (buf: Uint8Array, l4: number): number => read16(buf, l4 + FN.RA_LIFETIME);
export const ndRaReachable = (buf: Uint8Array, l4: number): number => read32(buf, l4 + FN.RA_REACHABLE);
export const ndRaRetrans = (buf: Uint8Array, l4: number): number => read32(buf, l4 + FN.RA_RETRANS);
export const ndNaFlags = (buf: Uint8Array, l4: number): number => buf[l4 + FN.NA_FLAGS];

/** An option of whole length at p inside [.., end), or -1. */
function optionAt(buf: Uint8Array, p: number, end: number): number {
  if (p + 2 > end) return -1;
  const n = buf[p + 1] * 8;
  return n === 0 || p + n > end ? -1 : p;
}

/** The first option of the ND message buf[l4, l4+l4len), or -1 (none, or not an ND message). */
export function ndFirstOption(buf: Uint8Array, l4: number, l4len: number): number {
  const fixed = ndFixedLen(buf[l4 + FI.TYPE]);
  return fixed < 0 ? -1 : optionAt(buf, l4 + fixed, l4 + l4len);
}

/** The option after the one at p in a message ending at `end`, or -1. */
export function ndNextOption(buf: Uint8Array, p: number, end: number): number {
  return optionAt(buf, p + buf[p + 1] * 8, end);
}

/**
 * The offset of the first option of `type` in the ND message buf[l4, l4+l4len),
 * or -1. The walk stops at a malformed option (checkNd refuses those).
 */
export function ndOption(buf: Uint8Array, l4: number, l4len: number, type: number): number {
  const end = l4 + l4len;
  for (let p = ndFirstOption(buf, l4, l4len); p >= 0; p = ndNextOption(buf, p, end)) if (buf[p] === type) return p;
  return -1;
}

export const ndOptType = (buf: Uint8Array, p: number): number => buf[p];
/** The option's length in bytes. */
export const ndOptLen = (buf: Uint8Array, p: number): number => buf[p + 1] * 8;

/** The MAC of a source/target link-layer address option at p (Ethernet: 8 bytes), or -1 for another length. */
export function ndOptLla(buf: Uint8Array, p: number): number {
  if (buf[p + 1] !== 1) return -1;
  return ((buf[p + 2] << 8) | buf[p + 3]) * 0x100000000 +
    (((buf[p + 4] << 24) | (buf[p + 5] << 16) | (buf[p + 6] << 8) | buf[p + 7]) >>> 0);
}

/** Prefix Information (RFC 4861 4.6.2): 32 bytes. */
const FP = { PREFIX_LEN: 2, FLAGS: 3, VALID: 4, PREFERRED: 8, PREFIX: 16 } as const;
const LEN_PREFIX = 32;
export const NDOPT_PREFIX = FP;
export const NDOPT_PREFIX_LEN = LEN_PREFIX;
export const ND_PREFIX_FLAG = { ON_LINK: 0x80, AUTONOMOUS: 0x40 } as const;
/** Lifetimes of 0xffffffff mean infinity. */
export const ND_INFINITY = 0xffffffff;
/** The option is well formed (length 4). */
export const ndPrefixOk = (buf: Uint8Array, p: number): boolean => buf[p + 1] * 8 === LEN_PREFIX;
export const ndPrefixLen = (buf: Uint8Array, p: number): number => buf[p + FP.PREFIX_LEN];
export const ndPrefixFlags = (buf: Uint8Array, p: number): number => buf[p + FP.FLAGS];
export const ndPrefixValid = (buf: Uint8Array, p: number): number => read32(buf, p + FP.VALID);
export const ndPrefixPreferred = (buf: Uint8Array, p: number): number => read32(buf, p + FP.PREFERRED);
/** Where the prefix's 16 bytes are. */
export const ndPrefixAt = (p: number): number => p + FP.PREFIX;

/** MTU (RFC 4861 4.6.4): 8 bytes. */
const FM = { MTU: 4 } as const;
const LEN_MTU = 8;
export const NDOPT_MTU = FM;
export const ndMtuOk = (buf: Uint8Array, p: number): boolean => buf[p + 1] * 8 === LEN_MTU;
export const ndMtu = (buf: Uint8Array, p: number): number => read32(buf, p + FM.MTU);

/** RDNSS and DNSSL (RFC 8106 5.1, 5.2): lifetime, then addresses or names from byte 8. */
const FD = { LIFETIME: 4, DATA: 8 } as const;
export const NDOPT_DNS = FD;
export const ndDnsLifetime = (buf: Uint8Array, p: number): number => read32(buf, p + FD.LIFETIME);
/** Addresses in an RDNSS option (RFC 8106 5.1: length 3 + 2n); -1 if its length is not of that form. */
export function ndRdnssCount(buf: Uint8Array, p: number): number {
  const n = buf[p + 1];
  return n >= 3 && (n & 1) === 1 ? (n - 1) >>> 1 : -1;
}
export const ndRdnssAt = (p: number, i: number): number => p + FD.DATA + 16 * i;

/**
 * The domain names of a DNSSL option (RFC 8106 5.2: DNS wire names without
 * compression, then zero padding), or undefined when they are malformed. Slow
 * path (tests, views): it builds strings.
 */
export function ndDnsslNames(buf: Uint8Array, p: number): string[] | undefined {
  const end = p + buf[p + 1] * 8;
  const names: string[] = [];
  let q = p + FD.DATA;
  while (q < end && buf[q] !== 0) {
    const labels: string[] = [];
    while (q < end && buf[q] !== 0) {
      const n = buf[q];
      if (n > 63 || q + 1 + n > end) return undefined;
      labels.push(String.fromCharCode(...buf.subarray(q + 1, q + 1 + n)));
      q += 1 + n;
    }
    if (q >= end) return undefined;
    q++;
    names.push(labels.join('.'));
  }
  for (; q < end; q++) if (buf[q] !== 0) return undefined;
  return names;
}

// ---------------------------------------------------------------------------
// Writers. Each returns the bytes written; the message's checksum is 0 until
// writeIcmp6Checksum.

function head(buf: Uint8Array, l4: number, type: number): void {
  buf[l4 + FI.TYPE] = type;
  buf[l4 + FI.CODE] = 0;
  write16(buf, l4 + FI.CSUM, 0);
}

export function writeRs(buf: Uint8Array, l4: number): number {
  head(buf, l4, T.ROUTER_SOLICIT);
  write32(buf, l4 + 4, 0);
  return LEN_RS;
}

export function writeRa(
  buf: Uint8Array, l4: number, hopLimit: number, flags: number, routerLifetime: number, reachable: number, retrans: number,
): number {
  head(buf, l4, T.ROUTER_ADVERT);
  buf[l4 + FN.RA_HOP_LIMIT] = hopLimit;
  buf[l4 + FN.RA_FLAGS] = flags;
  write16(buf, l4 + FN.RA_LIFETIME, routerLifetime);
  write32(buf, l4 + FN.RA_REACHABLE, reachable);
  write32(buf, l4 + FN.RA_RETRANS, retrans);
  return LEN_RA;
}

export function writeNs(buf: Uint8Array, l4: number, target: Uint8Array, to: number): number {
  head(buf, l4, T.NEIGHBOR_SOLICIT);
  write32(buf, l4 + 4, 0);
  buf.set(target.subarray(to, to + 16), l4 + FN.TARGET);
  return LEN_NS;
}

export function writeNa(buf: Uint8Array, l4: number, flags: number, target: Uint8Array, to: number): number {
  head(buf, l4, T.NEIGHBOR_ADVERT);
  write32(buf, l4 + 4, 0);
  buf[l4 + FN.NA_FLAGS] = flags;
  buf.set(target.subarray(to, to + 16), l4 + FN.TARGET);
  return LEN_NA;
}

export function writeRedirect(buf: Uint8Array, l4: number, target: Uint8Array, to: number, dst: Uint8Array, do_: number): number {
  head(buf, l4, T.REDIRECT);
  write32(buf, l4 + 4, 0);
  buf.set(target.subarray(to, to + 16), l4 + FN.TARGET);
  buf.set(dst.subarray(do_, do_ + 16), l4 + FN.REDIRECT_DST);
  return LEN_REDIRECT;
}

/** An echo request or reply header (the data after it is the caller's). */
export function writeIcmp6Echo(buf: Uint8Array, l4: number, type: number, id: number, seq: number): number {
  head(buf, l4, type);
  write16(buf, l4 + FI.ID, id);
  write16(buf, l4 + FI.SEQ, seq);
  return FI_HLEN;
}

/** Source (NDOPT.SLLA) or target (NDOPT.TLLA) link-layer address option for an Ethernet MAC. */
export function writeOptLla(buf: Uint8Array, p: number, type: number, mac: number): number {
  buf[p] = type;
  buf[p + 1] = 1;
  const hi = Math.floor(mac / 0x100000000);
  write16(buf, p + 2, hi);
  write32(buf, p + 4, mac >>> 0);
  return 8;
}

export function writeOptPrefix(
  buf: Uint8Array, p: number, prefixLen: number, flags: number, valid: number, preferred: number, prefix: Uint8Array, po: number,
): number {
  buf[p] = O.PREFIX;
  buf[p + 1] = LEN_PREFIX / 8;
  buf[p + FP.PREFIX_LEN] = prefixLen;
  buf[p + FP.FLAGS] = flags;
  write32(buf, p + FP.VALID, valid);
  write32(buf, p + FP.PREFERRED, preferred);
  write32(buf, p + 12, 0);
  buf.set(prefix.subarray(po, po + 16), p + FP.PREFIX);
  return LEN_PREFIX;
}

export function writeOptMtu(buf: Uint8Array, p: number, mtu: number): number {
  buf[p] = O.MTU;
  buf[p + 1] = 1;
  write16(buf, p + 2, 0);
  write32(buf, p + FM.MTU, mtu);
  return LEN_MTU;
}

export function writeOptRdnss(buf: Uint8Array, p: number, lifetime: number, addrs: readonly Uint8Array[]): number {
  const n = 8 + 16 * addrs.length;
  buf[p] = O.RDNSS;
  buf[p + 1] = n / 8;
  write16(buf, p + 2, 0);
  write32(buf, p + FD.LIFETIME, lifetime);
  addrs.forEach((a, i) => buf.set(a.subarray(0, 16), p + FD.DATA + 16 * i));
  return n;
}

/** The DNS wire form of `names` (RFC 1035 3.1, no compression), or undefined if a label is empty or over 63 bytes, or a name over 255. */
export function dnsNames(names: readonly string[]): Uint8Array | undefined {
  const out: number[] = [];
  for (const name of names) {
    const start = out.length;
    for (const label of name.replace(/\.$/, '').split('.')) {
      if (label.length === 0 || label.length > 63 || !/^[\x21-\x7e]+$/.test(label)) return undefined;
      out.push(label.length, ...[...label].map((c) => c.charCodeAt(0)));
    }
    out.push(0);
    if (out.length - start > 255) return undefined;
  }
  return Uint8Array.from(out);
}

/** A DNSSL option with the wire names `wire` (dnsNames), zero-padded to 8 bytes. */
export function writeOptDnssl(buf: Uint8Array, p: number, lifetime: number, wire: Uint8Array): number {
  const n = 8 + ((wire.length + 7) & ~7);
  buf[p] = O.DNSSL;
  buf[p + 1] = n / 8;
  write16(buf, p + 2, 0);
  write32(buf, p + FD.LIFETIME, lifetime);
  buf.set(wire, p + FD.DATA);
  buf.fill(0, p + FD.DATA + wire.length, p + n);
  return n;
}
