/*
 * IPv4 header view. `checkIpv4` is the only door for untrusted bytes: once it
 * returns IPV4_OK, the header (IHL bytes) and the payload up to Total Length are
 * inside the buffer, and accessors trust them. Payload is sliced by Total Length,
 * never by the buffer length (Ethernet pads short frames).
 * Addresses are unsigned 32-bit integers.
 */
import * as bytes from './bytes.js';
import * as cs from './checksum.js';

// Module constants, not imported bindings (bytes.ts says why).
const { read16, read32, write16, write32 } = bytes;
const { finish, fold, sum16 } = cs;

const F = { VER_IHL: 0, TOS: 1, LEN: 2, ID: 4, FRAG: 6, TTL: 8, PROTO: 9, CSUM: 10, SRC: 12, DST: 16 } as const;
const MIN_HLEN = 20;
export const IP4 = F;
export const IP4_MIN_HLEN = MIN_HLEN;
/** The largest IPv4 packet: Total Length is 16 bits. */
export const IP4_MAX_LEN = 65535;
export const IPPROTO = { ICMP: 1, TCP: 6, UDP: 17 } as const;
/** Flag bits of the FRAG word (the rest is the fragment offset in 8-byte units). */
export const IP4_DF = 0x4000;
export const IP4_MF = 0x2000;
const DF = IP4_DF;

const OK = 0;
export const IPV4_OK = OK;
const E = {
  TRUNCATED: 1,
  VERSION: 2,
  HEADER_LENGTH: 3,
  TOTAL_LENGTH: 4,
  CHECKSUM: 5,
} as const;
export const Ipv4Error = E;

export function checkIpv4(buf: Uint8Array, off: number, len: number, verifyChecksum = true): number {
  if (len < MIN_HLEN) return E.TRUNCATED;
  const vi = buf[off];
  if (vi >>> 4 !== 4) return E.VERSION;
  const hlen = (vi & 0x0f) * 4;
  if (hlen < MIN_HLEN || hlen > len) return E.HEADER_LENGTH;
  const total = read16(buf, off + F.LEN);
  if (total < hlen || total > len) return E.TOTAL_LENGTH;
  if (verifyChecksum && fold(sum16(buf, off, hlen)) !== 0xffff) return E.CHECKSUM;
  return OK;
}

export const ip4Version = (buf: Uint8Array, off: number): number => buf[off + F.VER_IHL] >>> 4;
export const ip4HeaderLen = (buf: Uint8Array, off: number): number => (buf[off + F.VER_IHL] & 0x0f) * 4;
export const ip4TotalLen = (buf: Uint8Array, off: number): number => read16(buf, off + F.LEN);
export const ip4Id = (buf: Uint8Array, off: number): number => read16(buf, off + F.ID);
export const ip4Ttl = (buf: Uint8Array, off: number): number => buf[off + F.TTL];
export const ip4Proto = (buf: Uint8Array, off: number): number => buf[off + F.PROTO];
export const ip4Src = (buf: Uint8Array, off: number): number => read32(buf, off + F.SRC);
export const ip4Dst = (buf: Uint8Array, off: number): number => read32(buf, off + F.DST);
export const ip4Checksum = (buf: Uint8Array, off: number): number => read16(buf, off + F.CSUM);
/** More-fragments set or a non-zero offset: a fragment (the first one included). */
export const ip4IsFragment = (buf: Uint8Array, off: number): boolean => (read16(buf, off + F.FRAG) & 0x3fff) !== 0;
export const ip4FragOffset = (buf: Uint8Array, off: number): number => (read16(buf, off + F.FRAG) & 0x1fff) * 8;

/**
 * Writes a 20-byte header without options, every field and its checksum: the one
 * IPv4 header builder. `frag` is the whole FRAG word (IP4_DF, IP4_MF | offset/8).
 * Positional, so the per-packet builders (host NAT, fragmenting) pass no object.
 */
export function writeIp4(
  buf: Uint8Array, off: number, totalLen: number, id: number, frag: number, ttl: number, proto: number, src: number, dst: number,
  tos = 0,
): void {
  buf[off + F.VER_IHL] = 0x45;
  buf[off + F.TOS] = tos;
  write16(buf, off + F.LEN, totalLen);
  write16(buf, off + F.ID, id);
  write16(buf, off + F.FRAG, frag);
  buf[off + F.TTL] = ttl;
  buf[off + F.PROTO] = proto;
  write16(buf, off + F.CSUM, 0);
  write32(buf, off + F.SRC, src);
  write32(buf, off + F.DST, dst);
  write16(buf, off + F.CSUM, finish(sum16(buf, off, MIN_HLEN)));
}

/** writeIp4 with named fields and defaults (id 0, TTL 64, TOS 0, DF clear), for the slow path. */
export function writeIpv4Header(
  buf: Uint8Array, off: number,
  h: { totalLen: number; id?: number; ttl?: number; proto: number; src: number; dst: number; tos?: number; dontFragment?: boolean },
): void {
  writeIp4(buf, off, h.totalLen, h.id ?? 0, h.dontFragment ? DF : 0, h.ttl ?? 64, h.proto, h.src, h.dst, h.tos ?? 0);
}

/** The header's checksum recomputed over its IHL bytes (after an edit that was not incremental). */
export function ip4UpdateChecksum(buf: Uint8Array, off: number): void {
  write16(buf, off + F.CSUM, 0);
  write16(buf, off + F.CSUM, finish(sum16(buf, off, ip4HeaderLen(buf, off))));
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
