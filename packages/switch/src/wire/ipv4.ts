/*
 * IPv4 header view. `checkIpv4` is the only door for untrusted bytes: once it
 * returns IPV4_OK, the header (IHL bytes) and the payload up to Total Length are
 * inside the buffer, and accessors trust them. Payload is sliced by Total Length,
 * never by the buffer length (Ethernet pads short frames).
 * Addresses are unsigned 32-bit integers.
 */
import { read16, read32, write16, write32 } from './bytes.js';
import { finish, fold, sum16 } from './checksum.js';

export const IP4 = { VER_IHL: 0, TOS: 1, LEN: 2, ID: 4, FRAG: 6, TTL: 8, PROTO: 9, CSUM: 10, SRC: 12, DST: 16 } as const;
export const IP4_MIN_HLEN = 20;
/** The largest IPv4 packet: Total Length is 16 bits. */
export const IP4_MAX_LEN = 65535;
export const IPPROTO = { ICMP: 1, TCP: 6, UDP: 17 } as const;
/** Flag bits of the FRAG word (the rest is the fragment offset in 8-byte units). */
export const IP4_DF = 0x4000;
export const IP4_MF = 0x2000;

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

export const ip4Version = (buf: Uint8Array, off: number): number => buf[off + IP4.VER_IHL] >>> 4;
export const ip4HeaderLen = (buf: Uint8Array, off: number): number => (buf[off + IP4.VER_IHL] & 0x0f) * 4;
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

/**
 * Writes a 20-byte header without options, every field and its checksum: the one
 * IPv4 header builder. `frag` is the whole FRAG word (IP4_DF, IP4_MF | offset/8).
 * Positional, so the per-packet builders (host NAT, fragmenting) pass no object.
 */
export function writeIp4(
  buf: Uint8Array, off: number, totalLen: number, id: number, frag: number, ttl: number, proto: number, src: number, dst: number,
  tos = 0,
): void {
  buf[off + IP4.VER_IHL] = 0x45;
  buf[off + IP4.TOS] = tos;
  write16(buf, off + IP4.LEN, totalLen);
  write16(buf, off + IP4.ID, id);
  write16(buf, off + IP4.FRAG, frag);
  buf[off + IP4.TTL] = ttl;
  buf[off + IP4.PROTO] = proto;
  write16(buf, off + IP4.CSUM, 0);
  write32(buf, off + IP4.SRC, src);
  write32(buf, off + IP4.DST, dst);
  write16(buf, off + IP4.CSUM, finish(sum16(buf, off, IP4_MIN_HLEN)));
}

/** writeIp4 with named fields and defaults (id 0, TTL 64, TOS 0, DF clear), for the slow path. */
export function writeIpv4Header(
  buf: Uint8Array, off: number,
  h: { totalLen: number; id?: number; ttl?: number; proto: number; src: number; dst: number; tos?: number; dontFragment?: boolean },
): void {
  writeIp4(buf, off, h.totalLen, h.id ?? 0, h.dontFragment ? IP4_DF : 0, h.ttl ?? 64, h.proto, h.src, h.dst, h.tos ?? 0);
}

/** The header's checksum recomputed over its IHL bytes (after an edit that was not incremental). */
export function ip4UpdateChecksum(buf: Uint8Array, off: number): void {
  write16(buf, off + IP4.CSUM, 0);
  write16(buf, off + IP4.CSUM, finish(sum16(buf, off, ip4HeaderLen(buf, off))));
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
