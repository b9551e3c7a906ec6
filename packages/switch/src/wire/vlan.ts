/*
 * IEEE 802.1Q tag view. A tag sits after the source MAC: TPID (0x8100) then TCI
 * = PCP(3) | DEI(1) | VID(12). VID 0 means "priority tag only" (the frame belongs
 * to the port's PVID) and 4095 is reserved and must not be forwarded (802.1Q
 * table 9-2). S-tags (0x88a8) and the pre-standard 0x9100 are recognised only so
 * that access ports can refuse them: this switch does not do QinQ.
 */
import { ETHERTYPE } from './ethernet.js';

const F = { TPID: 12, TCI: 14, INNER_TYPE: 16 } as const;
/** The tag's offsets from the frame's first byte (module-local as F: bytes.ts says why). */
export const VLAN = F;
export const VLAN_HLEN = 4;
export const VLAN_TAGGED_HLEN = 18;
export const VID_MAX = 4094;
export const VID_RESERVED = 4095;

const { VLAN: C_TAG, QINQ: S_TAG, QINQ_OLD: OLD_TAG } = ETHERTYPE;

export const isTagTpid = (type: number): boolean => type === C_TAG || type === S_TAG || type === OLD_TAG;

export const tci = (buf: Uint8Array, off: number): number => (buf[off + F.TCI] << 8) | buf[off + F.TCI + 1];
export const tciVid = (t: number): number => t & 0x0fff;
/** PCP and DEI, the top four bits of the TCI, kept in place. */
export const tciPrio = (t: number): number => t & 0xf000;
export const innerType = (buf: Uint8Array, off: number): number =>
  (buf[off + F.INNER_TYPE] << 8) | buf[off + F.INNER_TYPE + 1];

/**
 * Writes dst/src from the frame at `off` and a C-tag with `tciValue` into
 * hdr[at, at+16): the header egress sends in front of the rest of a frame it tags.
 */
export function writeTaggedHeader(hdr: Uint8Array, frame: Uint8Array, off: number, tciValue: number, at = 0): void {
  for (let i = 0; i < F.TPID; i++) hdr[at + i] = frame[off + i];
  hdr[at + F.TPID] = C_TAG >>> 8;
  hdr[at + F.TPID + 1] = C_TAG & 0xff;
  hdr[at + F.TCI] = tciValue >>> 8;
  hdr[at + F.TCI + 1] = tciValue & 0xff;
}

/**
 * Whether the frames at buf[a] and buf[b] (each at least ETH_HLEN long) have the
 * same header as far as a bridge reads it: destination, source and ethertype, and
 * when that is a tag's TPID, the TCI and the inner ethertype too (the
 * VLAN_TAGGED_HLEN bytes; a frame shorter than that is malformed for a tag anyway).
 * Frames a bridge admits with equal heads are in one VLAN with one source and one
 * destination: one decision.
 */
export function sameTaggedHead(buf: Uint8Array, a: number, b: number): boolean {
  for (let k = 0; k < F.TCI; k++) if (buf[a + k] !== buf[b + k]) return false;
  if (!isTagTpid((buf[a + F.TPID] << 8) | buf[a + F.TPID + 1])) return true;
  for (let k = F.TCI; k < VLAN_TAGGED_HLEN; k++) if (buf[a + k] !== buf[b + k]) return false;
  return true;
}
