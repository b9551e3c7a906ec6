/*
 * Layer-2 frame facts a bond needs per frame (bond.ts): the 8-bit bucket of a
 * frame's source MAC (balance-slb) or of its source and destination MACs (lacp,
 * as Linux's layer2 transmit hash), and the VID of a tagged frame; plus the RARP
 * a bond announces a MAC with after a failover (as QEMU's self-announce: a
 * reverse request with sender and target hardware address the MAC, addresses 0).
 */
import { ETH, ETHERTYPE, etherType, writeMac } from './ethernet.js';
import { tci, tciVid } from './vlan.js';

/** The bucket (0..255) of the frame's source MAC, mixed with its destination MAC when `withDst`. */
export function l2Bucket(buf: Uint8Array, off: number, withDst: boolean): number {
  const s = off + ETH.SRC;
  let x = ((buf[s + 2] << 24) | (buf[s + 3] << 16) | (buf[s + 4] << 8) | buf[s + 5]) ^ ((buf[s] << 8) | buf[s + 1]);
  if (withDst) x ^= ((buf[off + 2] << 24) | (buf[off + 3] << 16) | (buf[off + 4] << 8) | buf[off + 5]) ^ ((buf[off] << 8) | buf[off + 1]);
  return Math.imul(x, 0x9e3779b1) >>> 24;
}

/** The VID of an 802.1Q-tagged frame (at least 18 bytes), else 0. */
export function frameVid(buf: Uint8Array, off: number): number {
  return etherType(buf, off) === ETHERTYPE.VLAN ? tciVid(tci(buf, off)) : 0;
}

export const RARP_LEN = 60;
const ETHERTYPE_RARP = 0x8035;
const RARP_REQUEST_REVERSE = 3;

/** A RARP request announcing `mac`, tagged when vid > 0; returns its length (RARP_LEN, +4 tagged). */
export function writeRarp(buf: Uint8Array, off: number, mac: number, vid: number): number {
  const tag = vid > 0 ? 4 : 0;
  buf.fill(0, off, off + RARP_LEN + tag);
  writeMac(buf, off + ETH.DST, 0xffffffffffff);
  writeMac(buf, off + ETH.SRC, mac);
  let p = off + ETH.TYPE;
  if (tag) {
    buf[p] = ETHERTYPE.VLAN >> 8; buf[p + 1] = ETHERTYPE.VLAN & 0xff; buf[p + 2] = vid >>> 8; buf[p + 3] = vid & 0xff;
    p += 4;
  }
  buf[p] = ETHERTYPE_RARP >> 8; buf[p + 1] = ETHERTYPE_RARP & 0xff;
  p += 2;
  buf[p + 1] = 1; // htype Ethernet
  buf[p + 2] = ETHERTYPE.IPV4 >> 8; // ptype IPv4
  buf[p + 4] = 6; buf[p + 5] = 4; // hlen, plen
  buf[p + 7] = RARP_REQUEST_REVERSE;
  writeMac(buf, p + 8, mac); // sender hardware address
  writeMac(buf, p + 18, mac); // target hardware address
  return RARP_LEN + tag;
}

/** The high and low 24 bits of the MAC at buf[at, at+6): a MAC as two Smis, no heap number per frame. */
export const macHi = (buf: Uint8Array, at: number): number => (buf[at] << 16) | (buf[at + 1] << 8) | buf[at + 2];
export const macLo = (buf: Uint8Array, at: number): number => (buf[at + 3] << 16) | (buf[at + 4] << 8) | buf[at + 5];
