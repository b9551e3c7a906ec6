/*
 * IPv6 header view (RFC 8200) and its extension-header chain. `checkIpv6` is the
 * only door for untrusted bytes: once it returns IPV6_OK, the 40-byte header and
 * the payload up to Payload Length are inside the buffer, and accessors trust
 * them. As for IPv4, the packet ends at 40 + Payload Length, never at the buffer's
 * end (Ethernet pads short frames). Jumbograms (Payload Length 0 with a Jumbo
 * option) do not exist on Ethernet: such a packet is taken as empty.
 *
 * `ip6Upper` walks the extension headers to the upper-layer header without
 * allocating, into a caller's record. The walk is bounded (IP6_MAX_EXT headers):
 * a chain that is longer, truncated, has Hop-by-Hop anywhere but first, or is a
 * non-first fragment returns an error code, never a guess, because the guards
 * (RA guard, RFC 7113) must not be fooled by a chain hiding what follows it.
 *
 * Addresses are 16 bytes in place; the slow path (config, views) holds them as
 * 16-byte Uint8Arrays (parseIp6, formatIp6) and compares with ip6Equal.
 */
import * as bytes from './bytes.js';
import * as cs from './checksum.js';

// Module constants, not imported bindings (bytes.ts says why).
const { read16, read32, write16, write32 } = bytes;
const { sum16 } = cs;

const F = { VER_TC_FL: 0, PLEN: 4, NEXT: 6, HLIM: 7, SRC: 8, DST: 24 } as const;
const HLEN = 40;
export const IP6 = F;
export const IP6_HLEN = HLEN;
export const IP6_ALEN = 16;
/** The minimum link MTU of IPv6 (RFC 8200 5). */
export const IP6_MIN_MTU = 1280;

/** Next Header values: the extension headers the walk knows, and the upper layers used here. */
const NH = {
  HOP_BY_HOP: 0, TCP: 6, UDP: 17, ROUTING: 43, FRAGMENT: 44, ESP: 50, AH: 51, ICMPV6: 58, NONE: 59, DEST_OPTS: 60,
  MOBILITY: 135, HIP: 139, SHIM6: 140,
} as const;
export const IP6_NEXT = NH;
/** Extension headers followed at most; a longer chain is refused (no real stack sends more than a handful). */
const MAX_EXT = 8;
export const IP6_MAX_EXT = MAX_EXT;

const OK = 0;
export const IPV6_OK = OK;
const E = {
  TRUNCATED: 1,
  VERSION: 2,
  PAYLOAD_LENGTH: 3,
} as const;
export const Ipv6Error = E;

export function checkIpv6(buf: Uint8Array, off: number, len: number): number {
  if (len < HLEN) return E.TRUNCATED;
  if (buf[off] >>> 4 !== 6) return E.VERSION;
  if (HLEN + read16(buf, off + F.PLEN) > len) return E.PAYLOAD_LENGTH;
  return OK;
}

export const ip6Version = (buf: Uint8Array, off: number): number => buf[off + F.VER_TC_FL] >>> 4;
export const ip6TrafficClass = (buf: Uint8Array, off: number): number => (read16(buf, off + F.VER_TC_FL) >>> 4) & 0xff;
export const ip6FlowLabel = (buf: Uint8Array, off: number): number => read32(buf, off + F.VER_TC_FL) & 0xfffff;
export const ip6PayloadLen = (buf: Uint8Array, off: number): number => read16(buf, off + F.PLEN);
export const ip6NextHeader = (buf: Uint8Array, off: number): number => buf[off + F.NEXT];
export const ip6HopLimit = (buf: Uint8Array, off: number): number => buf[off + F.HLIM];

/** buf[a, a+16) equals b[bo, bo+16). */
export function ip6Equal(a: Uint8Array, ao: number, b: Uint8Array, bo: number): boolean {
  for (let i = 0; i < 16; i += 4) {
    if (a[ao + i] !== b[bo + i] || a[ao + i + 1] !== b[bo + i + 1] || a[ao + i + 2] !== b[bo + i + 2] || a[ao + i + 3] !== b[bo + i + 3]) return false;
  }
  return true;
}

/** The address at buf[a, a+16) is :: (the unspecified address: DAD probes, RS before an address). */
export function ip6IsUnspecified(buf: Uint8Array, a: number): boolean {
  for (let i = 0; i < 16; i++) if (buf[a + i] !== 0) return false;
  return true;
}

/** ff00::/8. */
/** ::ffff:a.b.c.d (RFC 4291 2.5.5.2): an IPv4 host written as IPv6, never an IPv6 host. */
export function ip6IsV4Mapped(buf: Uint8Array, a: number): boolean {
  for (let i = 0; i < 10; i++) if (buf[a + i] !== 0) return false;
  return buf[a + 10] === 0xff && buf[a + 11] === 0xff;
}

/** The Fragment extension header (RFC 8200 4.5): next header, reserved, offset|M, Identification. */
export const FRAG6_HLEN = 8;
/** Writes a Fragment header at o; `offset` in bytes (a multiple of 8: it is already the 13-bit field shifted by 3). */
export function writeFrag6(buf: Uint8Array, o: number, next: number, offset: number, more: boolean, id: number): void {
  buf[o] = next;
  buf[o + 1] = 0;
  write16(buf, o + 2, offset | (more ? 1 : 0));
  write32(buf, o + 4, id);
}

/** The Fragment header at o: the fragment's offset in bytes (a multiple of 8), its M flag, its Identification. */
export const frag6Offset = (buf: Uint8Array, o: number): number => read16(buf, o + 2) & 0xfff8;
export const frag6More = (buf: Uint8Array, o: number): boolean => (buf[o + 3] & 1) === 1;
export const frag6Id = (buf: Uint8Array, o: number): number => read32(buf, o + 4);

export const ip6IsMulticast = (buf: Uint8Array, a: number): boolean => buf[a] === 0xff;
/** fe80::/10. */
export const ip6IsLinkLocal = (buf: Uint8Array, a: number): boolean => buf[a] === 0xfe && (buf[a + 1] & 0xc0) === 0x80;

/** The first `prefixLen` bits of buf[a..) and p[po..) are equal. */
export function ip6InPrefix(buf: Uint8Array, a: number, p: Uint8Array, po: number, prefixLen: number): boolean {
  const whole = prefixLen >>> 3;
  for (let i = 0; i < whole; i++) if (buf[a + i] !== p[po + i]) return false;
  const bits = prefixLen & 7;
  if (bits === 0) return true;
  const m = (0xff << (8 - bits)) & 0xff;
  return (buf[a + whole] & m) === (p[po + whole] & m);
}

/**
 * The solicited-node multicast address of `target` (RFC 4291 2.7.1),
 * ff02::1:ffXX:XXXX, written at out[o, o+16).
 */
export function writeSolicitedNode(out: Uint8Array, o: number, target: Uint8Array, to: number): void {
  out.fill(0, o, o + 16);
  out[o] = 0xff;
  out[o + 1] = 0x02;
  out[o + 11] = 0x01;
  out[o + 12] = 0xff;
  out[o + 13] = target[to + 13];
  out[o + 14] = target[to + 14];
  out[o + 15] = target[to + 15];
}

/** Is buf[a..) the solicited-node multicast address of target[to..)? */
export function ip6IsSolicitedNodeOf(buf: Uint8Array, a: number, target: Uint8Array, to: number): boolean {
  if (buf[a] !== 0xff || buf[a + 1] !== 0x02 || buf[a + 11] !== 0x01 || buf[a + 12] !== 0xff) return false;
  for (let i = 2; i < 11; i++) if (buf[a + i] !== 0) return false;
  return buf[a + 13] === target[to + 13] && buf[a + 14] === target[to + 14] && buf[a + 15] === target[to + 15];
}

/** The Ethernet group address of an IPv6 multicast address (RFC 2464 7): 33:33 and its last 32 bits. */
export function ip6MulticastMac(buf: Uint8Array, a: number): number {
  return 0x3333 * 0x100000000 + read32(buf, a + 12);
}

/** An interface identifier from a MAC (modified EUI-64, RFC 4291 2.5.1), at out[o, o+8). */
export function writeEui64(out: Uint8Array, o: number, mac: number): void {
  const hi = Math.floor(mac / 0x100000000);
  const lo = mac >>> 0;
  out[o] = (hi >>> 8) ^ 0x02;
  out[o + 1] = hi & 0xff;
  out[o + 2] = lo >>> 24;
  out[o + 3] = 0xff;
  out[o + 4] = 0xfe;
  out[o + 5] = (lo >>> 16) & 0xff;
  out[o + 6] = (lo >>> 8) & 0xff;
  out[o + 7] = lo & 0xff;
}

/** fe80::/64 with the MAC's modified EUI-64 identifier: a link-local address (RFC 4862 5.3). */
export function linkLocalFromMac(mac: number): Uint8Array {
  const a = new Uint8Array(16);
  a[0] = 0xfe;
  a[1] = 0x80;
  writeEui64(a, 8, mac);
  return a;
}

/**
 * The upper-layer header of an IPv6 packet, as `ip6Upper` found it: its protocol
 * (the last Next Header), where it starts and how long it is (to the end of the
 * payload), and whether the packet is a first fragment (`fragment`; the upper
 * layer may then be cut short).
 */
export interface Ip6Upper {
  proto: number;
  off: number;
  len: number;
  fragment: boolean;
}

export function newIp6Upper(): Ip6Upper {
  return { proto: -1, off: 0, len: 0, fragment: false };
}

/** Why ip6Upper could not find the upper layer. */
const W = {
  /** An extension header runs past the payload. */
  TRUNCATED: 1,
  /** More than IP6_MAX_EXT extension headers. */
  TOO_LONG: 2,
  /** Hop-by-Hop Options not right after the IPv6 header (RFC 8200 4.1). */
  HOP_BY_HOP: 3,
  /** A fragment other than the first: its upper layer is in the first. */
  NOT_FIRST_FRAGMENT: 4,
} as const;
export const Ip6WalkError = W;

/**
 * Walks the extension headers of the IPv6 packet at buf[off..) (checked by
 * checkIpv6) to its upper layer, into `out`. Returns IPV6_OK or an Ip6WalkError.
 * Hop-by-Hop, Routing, Destination Options, Mobility, HIP and Shim6 are skipped
 * by their length in 8-octet units; AH by its length in 4-octet units (RFC 4302);
 * a first fragment continues into its next header. ESP, No Next Header and
 * anything else end the walk as the upper layer. `out` holds the answer on
 * IPV6_OK and NOT_FIRST_FRAGMENT (the fragment's payload), and is stale otherwise.
 */
export function ip6Upper(buf: Uint8Array, off: number, out: Ip6Upper): number {
  const end = off + HLEN + read16(buf, off + F.PLEN);
  let next = buf[off + F.NEXT];
  let p = off + HLEN;
  out.fragment = false;
  for (let n = 0; ; n++) {
    if (next === NH.HOP_BY_HOP) {
      if (n !== 0) return W.HOP_BY_HOP;
    } else if (next !== NH.ROUTING && next !== NH.DEST_OPTS && next !== NH.FRAGMENT && next !== NH.AH &&
      next !== NH.MOBILITY && next !== NH.HIP && next !== NH.SHIM6) {
      out.proto = next;
      out.off = p;
      out.len = end - p;
      return OK;
    }
    if (n >= MAX_EXT) return W.TOO_LONG;
    if (p + 8 > end) return W.TRUNCATED;
    const nh = buf[p];
    let hl: number;
    if (next === NH.FRAGMENT) {
      // Fragment Offset (13 bits) and M: a non-first fragment has no upper layer.
      if ((read16(buf, p + 2) & 0xfff8) !== 0) {
        out.proto = nh;
        out.off = p + 8;
        out.len = end - p - 8;
        out.fragment = true;
        return W.NOT_FIRST_FRAGMENT;
      }
      out.fragment = (read16(buf, p + 2) & 1) === 1;
      hl = 8;
    } else if (next === NH.AH) {
      hl = (buf[p + 1] + 2) * 4;
    } else {
      hl = (buf[p + 1] + 1) * 8;
    }
    if (p + hl > end) return W.TRUNCATED;
    next = nh;
    p += hl;
  }
}

/**
 * Sum of the IPv6 pseudo header (RFC 8200 8.1) of the packet at buf[ip..): source
 * and destination, upper-layer length (32 bits) and next header, for
 * checksum(buf, l4, l4len, ip6PseudoSum(...)).
 */
export function ip6PseudoSum(buf: Uint8Array, ip: number, l4len: number, proto: number): number {
  return sum16(buf, ip + F.SRC, 32) + (l4len >>> 16) + (l4len & 0xffff) + proto;
}

/**
 * Writes a 40-byte header: version 6, traffic class and flow label 0, the
 * addresses from src[so, so+16) and dst[do_, do_+16).
 */
export function writeIp6(
  buf: Uint8Array, off: number, payloadLen: number, next: number, hopLimit: number,
  src: Uint8Array, so: number, dst: Uint8Array, do_: number,
): void {
  write32(buf, off + F.VER_TC_FL, 0x60000000);
  write16(buf, off + F.PLEN, payloadLen);
  buf[off + F.NEXT] = next;
  buf[off + F.HLIM] = hopLimit;
  // Byte loops, not set(subarray()): no view object per header (the host NAT writes one per frame).
  for (let i = 0; i < 16; i++) buf[off + F.SRC + i] = src[so + i];
  for (let i = 0; i < 16; i++) buf[off + F.DST + i] = dst[do_ + i];
}

/** "fd00::1" -> 16 bytes, or undefined (RFC 4291 2.2 text forms, the embedded IPv4 form included; no zone). */
export function parseIp6(text: string): Uint8Array | undefined {
  let s = text.trim();
  if (s.length === 0 || s.length > 45 || !/^[0-9a-fA-F:.]+$/.test(s)) return undefined;
  const out = new Uint8Array(16);
  let tail: number[] = [];
  // An embedded IPv4 address in the last 32 bits.
  const v4 = /^(.*:)(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (v4) {
    const o = v4.slice(2).map(Number);
    if (o.some((x) => x > 255)) return undefined;
    tail = [(o[0] << 8) | o[1], (o[2] << 8) | o[3]];
    s = v4[1].endsWith('::') ? v4[1] : v4[1].slice(0, -1);
  }
  const halves = s.split('::');
  if (halves.length > 2) return undefined;
  const group = (part: string): number[] | undefined => {
    if (part === '') return [];
    const g = part.split(':');
    if (g.some((x) => !/^[0-9a-fA-F]{1,4}$/.test(x))) return undefined;
    return g.map((x) => parseInt(x, 16));
  };
  const head = group(halves[0]);
  const rest = halves.length === 2 ? group(halves[1]) : [];
  if (head === undefined || rest === undefined) return undefined;
  const words = halves.length === 2 ? [...head, ...rest, ...tail] : [...head, ...tail];
  if (halves.length === 2 ? words.length > 7 : words.length !== 8) return undefined;
  const fill = 8 - words.length;
  const all = halves.length === 2 ? [...head, ...new Array<number>(fill).fill(0), ...rest, ...tail] : words;
  for (let i = 0; i < 8; i++) write16(out, i * 2, all[i]);
  return out;
}

/** The address at buf[a, a+16) in RFC 5952 form (lower case, the longest run of two or more zero groups as ::). */
export function formatIp6(buf: Uint8Array, a = 0): string {
  const w: number[] = [];
  for (let i = 0; i < 8; i++) w.push(read16(buf, a + i * 2));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]): string => xs.map((x) => x.toString(16)).join(':');
  if (best < 0) return hex(w);
  return `${hex(w.slice(0, best))}::${hex(w.slice(best + bestLen))}`;
}

/** "fd00:1::1/64" -> {addr, prefix}, or undefined. */
export function parseCidr6(text: string): { addr: Uint8Array; prefix: number } | undefined {
  const m = /^([0-9a-fA-F:.]+)\/(\d{1,3})$/.exec(text.trim());
  if (!m) return undefined;
  const addr = parseIp6(m[1]);
  const prefix = Number(m[2]);
  return addr === undefined || prefix > 128 ? undefined : { addr, prefix };
}

/** A copy of `addr` with the bits after the first `prefixLen` cleared. */
export function ip6Masked(addr: Uint8Array, prefixLen: number): Uint8Array {
  const out = addr.slice(0, 16);
  for (let bit = prefixLen; bit < 128; bit++) out[bit >>> 3] &= ~(0x80 >>> (bit & 7));
  return out;
}
