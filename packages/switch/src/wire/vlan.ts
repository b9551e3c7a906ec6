/*
 * IEEE 802.1Q tag view. A tag sits after the source MAC: TPID (0x8100) then TCI
 * = PCP(3) | DEI(1) | VID(12). VID 0 means "priority tag only" (the frame belongs
 * to the port's PVID) and 4095 is reserved and must not be forwarded (802.1Q
 * table 9-2). S-tags (0x88a8) and the pre-standard 0x9100 are recognised only so
 * that access ports can refuse them: this switch does not do QinQ.
 */
import { ETHERTYPE } from './ethernet.js';

export const VLAN = { TPID: 12, TCI: 14, INNER_TYPE: 16 } as const;
export const VLAN_HLEN = 4;
export const VLAN_TAGGED_HLEN = 18;
export const VID_MAX = 4094;
export const VID_RESERVED = 4095;

export const isTagTpid = (type: number): boolean =>
  type === ETHERTYPE.VLAN || type === ETHERTYPE.QINQ || type === ETHERTYPE.QINQ_OLD;

export const tci = (buf: Uint8Array, off: number): number => (buf[off + VLAN.TCI] << 8) | buf[off + VLAN.TCI + 1];
export const tciVid = (t: number): number => t & 0x0fff;
/** PCP and DEI, the top four bits of the TCI, kept in place. */
export const tciPrio = (t: number): number => t & 0xf000;
export const innerType = (buf: Uint8Array, off: number): number =>
  (buf[off + VLAN.INNER_TYPE] << 8) | buf[off + VLAN.INNER_TYPE + 1];

// For writeTaggedHeader, on egress's path for every frame it tags: module constants,
// not the exported table's properties (about 1 ns a load there, see vnet.ts).
const TPID_AT = VLAN.TPID;
const TCI_AT = VLAN.TCI;
const C_TAG = ETHERTYPE.VLAN;

/**
 * Writes dst/src from the frame at `off` and a C-tag with `tciValue` into
 * hdr[at, at+16): the header egress sends in front of the rest of a frame it tags.
 */
export function writeTaggedHeader(hdr: Uint8Array, frame: Uint8Array, off: number, tciValue: number, at = 0): void {
  for (let i = 0; i < TPID_AT; i++) hdr[at + i] = frame[off + i];
  hdr[at + TPID_AT] = C_TAG >>> 8;
  hdr[at + TPID_AT + 1] = C_TAG & 0xff;
  hdr[at + TCI_AT] = tciValue >>> 8;
  hdr[at + TCI_AT + 1] = tciValue & 0xff;
}
