/*
 * IPv4 header view. `checkIpv4` is the only door for untrusted bytes: once it
 * returns IPV4_OK, the header (IHL bytes) and the payload up to Total Length are
 * inside the buffer, and accessors trust them. Payload is sliced by Total Length,
 * never by the buffer length (Ethernet pads short frames).
 * Addresses are unsigned 32-bit integers.
 */
import { read16, read32, sum16, fold, write16, write32 } from './checksum.js';

export const IP4 = { VER_IHL: 0, TOS: 1, LEN: 2, ID: 4, FRAG: 6, TTL: 8, PROTO: 9, CSUM: 10, SRC: 12, DST: 16 } as const;
export const IP4_MIN_HLEN = 20;
export const IPPROTO = { ICMP: 1, TCP: 6, UDP: 17 } as const;

export const IPV4_OK = 0;
export const Ipv4Error = {
  TRUNCATED: 1,
  VERSION: 2,
  HEADER_LENGTH: 3,
  TOTAL_LENGTH: 4,
  CHECKSUM: 5,
} as const;

export function checkIpv4(buf: Uint8Array, off: number, len: number, verifyChecksum = true): number {
  if (len < IP4_MIN_HLEN) return Ipv4Error.TRUNCATED;
  const vi = buf[off];
  if (vi >>> 4 !== 4) return Ipv4Error.VERSION;
  const hlen = (vi & 0x0f) * 4;
  if (hlen < IP4_MIN_HLEN || hlen > len) return Ipv4Error.HEADER_LENGTH;
  const total = read16(buf, off + IP4.LEN);
  if (total < hlen || total > len) return Ipv4Error.TOTAL_LENGTH;
  if (verifyChecksum && fold(sum16(buf, off, hlen)) !== 0xffff) return Ipv4Error.CHECKSUM;
  return IPV4_OK;
}

export const ip4HeaderLen = (buf: Uint8Array, off: number): number => (buf[off] & 0x0f) * 4;
export const ip4TotalLen = (buf: Uint8Array, off: number): number => read16(buf, off + IP4.LEN);
export const ip4Id = (buf: Uint8Array, off: number): number => read16(buf, off + IP4.ID);
export const ip4Ttl = (buf: Uint8Array, off: number): number => buf[off + IP4.TTL];
export const ip4Proto = (buf: Uint8Array, off: number): number => buf[off + IP4.PROTO];
export const ip4Src = (buf: Uint8Array, off: number): number => read32(buf, off + IP4.SRC);
export const ip4Dst = (buf: Uint8Array, off: number): number => read32(buf, off + IP4.DST);
export const ip4Checksum = (buf: Uint8Array, off: number): number => read16(buf, off + IP4.CSUM);
/** More-fragments set or a non-zero offset: a fragment (the first one included). */
export const ip4IsFragment = (buf: Uint8Array, off: number): boolean => (read16(buf, off + IP4.FRAG) & 0x3fff) !== 0;
export const ip4FragOffset = (buf: Uint8Array, off: number): number => (read16(buf, off + IP4.FRAG) & 0x1fff) * 8;

/** Writes a 20-byte header without options and its checksum. */
export function writeIpv4Header(
  buf: Uint8Array, off: number,
  h: { totalLen: number; id?: number; ttl?: number; proto: number; src: number; dst: number; tos?: number; dontFragment?: boolean },
): void {
  buf[off] = 0x45;
  buf[off + IP4.TOS] = h.tos ?? 0;
  write16(buf, off + IP4.LEN, h.totalLen);
  write16(buf, off + IP4.ID, h.id ?? 0);
  write16(buf, off + IP4.FRAG, h.dontFragment ? 0x4000 : 0);
  buf[off + IP4.TTL] = h.ttl ?? 64;
  buf[off + IP4.PROTO] = h.proto;
  write16(buf, off + IP4.CSUM, 0);
  write32(buf, off + IP4.SRC, h.src);
  write32(buf, off + IP4.DST, h.dst);
  write16(buf, off + IP4.CSUM, ~fold(sum16(buf, off, 20)) & 0xffff);
}

/** "10.0.0.1" -> integer, or -1. */
export function parseIp4(text: string): number {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text.trim());
  if (!m) return -1;
  let v = 0;
  for (let i = 1; i <= 4; i++) {
    const o = Number(m[i]);
    if (o > 255) return -1;
    v = v * 256 + o;
  }
  return v;
}

export function formatIp4(ip: number): string {
  return `${ip >>> 24}.${(ip >>> 16) & 0xff}.${(ip >>> 8) & 0xff}.${ip & 0xff}`;
}
