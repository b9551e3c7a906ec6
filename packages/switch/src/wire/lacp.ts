/*
 * LACPDU view and builder (IEEE 802.1AX-2014 clause 6.4.2, formerly 802.3ad): the
 * slow-protocols frame (EtherType 0x8809 to 01:80:C2:00:00:02) whose first byte
 * (subtype) is 1 for LACP and 2 for the Marker protocol. A LACPDU is 110 bytes
 * after the Ethernet header:
 *   subtype 1, version 1,
 *   actor TLV (type 1, length 20): system priority(2) system(6) key(2) port priority(2) port(2) state(1) reserved(3),
 *   partner TLV (type 2, length 20): the same fields, the sender's view of us,
 *   collector TLV (type 3, length 16): max delay(2) reserved(12),
 *   terminator (type 0, length 0), 50 reserved bytes.
 * A receiver needs the actor and partner TLVs only (as Linux and Open vSwitch):
 * `readLacpdu` checks those and fills one reused LacpduView, or says why the
 * frame is no LACPDU. A tagged slow-protocols frame is no LACPDU (802.1AX: they are
 * untagged), so it is malformed here.
 */
import { ETH, ETH_HLEN } from './ethernet.js';

export const ETHERTYPE_SLOW = 0x8809;
export const SUBTYPE_LACP = 1;
export const SUBTYPE_MARKER = 2;
/** 01:80:C2:00:00:02, the slow-protocols multicast address. */
export const SLOW_PROTOCOLS_MAC = 0x0180c2000002;
export const LACPDU_LEN = 110;
/** An Ethernet frame carrying a LACPDU (without FCS). */
export const LACP_FRAME_LEN = ETH_HLEN + LACPDU_LEN;

/** Actor/partner state bits (802.1AX 6.4.2.3). */
export const LACP_STATE = {
  ACTIVITY: 0x01,
  TIMEOUT: 0x02, // short timeout: the sender wants LACPDUs every second
  AGGREGATION: 0x04,
  SYNC: 0x08,
  COLLECTING: 0x10,
  DISTRIBUTING: 0x20,
  DEFAULTED: 0x40,
  EXPIRED: 0x80,
} as const;

/** One side of a LACPDU: an actor or partner TLV. */
export interface LacpInfo {
  sysPrio: number;
  /** The system id, a MAC as a number (wire/ethernet.ts readMac). */
  system: number;
  key: number;
  portPrio: number;
  port: number;
  state: number;
}

export interface LacpduView {
  actor: LacpInfo;
  partner: LacpInfo;
}

export const newLacpInfo = (): LacpInfo => ({ sysPrio: 0, system: 0, key: 0, portPrio: 0, port: 0, state: 0 });
export const newLacpduView = (): LacpduView => ({ actor: newLacpInfo(), partner: newLacpInfo() });

/** readLacpdu results. */
export const LACPDU_OK = 0;
/** Not a slow-protocols frame at all: data. */
export const LACPDU_NOT_SLOW = 1;
/** A Marker PDU (or another slow protocol such as OAM): not ours, dropped, never forwarded. */
export const LACPDU_OTHER_SLOW = 2;
/** Slow protocols, subtype LACP, but truncated or with bad TLVs. */
export const LACPDU_MALFORMED = 3;

const TLV_ACTOR = 1;
const TLV_PARTNER = 2;
const TLV_INFO_LEN = 20;
const TLV_COLLECTOR = 3;
const TLV_COLLECTOR_LEN = 16;
/** Subtype, version, actor and partner TLVs: what a receiver reads. */
const MIN_LEN = 2 + 2 * TLV_INFO_LEN;

/** True when the frame's EtherType is slow protocols (LACP, Marker, OAM...): never bridged data. */
export function isSlowProtocols(buf: Uint8Array, off: number, len: number): boolean {
  return len >= ETH_HLEN && buf[off + ETH.TYPE] === 0x88 && buf[off + ETH.TYPE + 1] === 0x09;
}

function readInfo(buf: Uint8Array, p: number, into: LacpInfo): void {
  into.sysPrio = (buf[p] << 8) | buf[p + 1];
  into.system = ((buf[p + 2] << 8) | buf[p + 3]) * 0x100000000 + (((buf[p + 4] << 24) | (buf[p + 5] << 16) | (buf[p + 6] << 8) | buf[p + 7]) >>> 0);
  into.key = (buf[p + 8] << 8) | buf[p + 9];
  into.portPrio = (buf[p + 10] << 8) | buf[p + 11];
  into.port = (buf[p + 12] << 8) | buf[p + 13];
  into.state = buf[p + 14];
}

/** Reads the frame buf[off, off+len) as a LACPDU into `view`; LACPDU_OK or why not. */
export function readLacpdu(buf: Uint8Array, off: number, len: number, view: LacpduView): number {
  if (!isSlowProtocols(buf, off, len)) return LACPDU_NOT_SLOW;
  if (len < ETH_HLEN + 1) return LACPDU_MALFORMED;
  const p = off + ETH_HLEN;
  if (buf[p] !== SUBTYPE_LACP) return LACPDU_OTHER_SLOW;
  if (len < ETH_HLEN + MIN_LEN) return LACPDU_MALFORMED;
  // Version 0 does not exist; later versions keep the v1 layout up front (802.1AX-2014 6.4.2.3 h).
  if (buf[p + 1] === 0) return LACPDU_MALFORMED;
  const a = p + 2;
  const b = a + TLV_INFO_LEN;
  if (buf[a] !== TLV_ACTOR || buf[a + 1] !== TLV_INFO_LEN || buf[b] !== TLV_PARTNER || buf[b + 1] !== TLV_INFO_LEN) return LACPDU_MALFORMED;
  readInfo(buf, a + 2, view.actor);
  readInfo(buf, b + 2, view.partner);
  return LACPDU_OK;
}

function writeMacAt(buf: Uint8Array, p: number, mac: number): void {
  const hi = Math.floor(mac / 0x100000000);
  const lo = mac >>> 0;
  buf[p] = hi >>> 8; buf[p + 1] = hi & 0xff;
  buf[p + 2] = lo >>> 24; buf[p + 3] = (lo >>> 16) & 0xff; buf[p + 4] = (lo >>> 8) & 0xff; buf[p + 5] = lo & 0xff;
}

function writeInfo(buf: Uint8Array, p: number, type: number, i: LacpInfo): void {
  buf[p] = type;
  buf[p + 1] = TLV_INFO_LEN;
  buf[p + 2] = i.sysPrio >>> 8; buf[p + 3] = i.sysPrio & 0xff;
  writeMacAt(buf, p + 4, i.system);
  buf[p + 10] = i.key >>> 8; buf[p + 11] = i.key & 0xff;
  buf[p + 12] = i.portPrio >>> 8; buf[p + 13] = i.portPrio & 0xff;
  buf[p + 14] = i.port >>> 8; buf[p + 15] = i.port & 0xff;
  buf[p + 16] = i.state;
  buf[p + 17] = 0; buf[p + 18] = 0; buf[p + 19] = 0;
}

/** Writes a whole LACP frame (LACP_FRAME_LEN bytes) from `src` at buf[off]; returns its length. */
export function writeLacpFrame(buf: Uint8Array, off: number, src: number, actor: LacpInfo, partner: LacpInfo): number {
  buf.fill(0, off, off + LACP_FRAME_LEN);
  writeMacAt(buf, off + ETH.DST, SLOW_PROTOCOLS_MAC);
  writeMacAt(buf, off + ETH.SRC, src);
  buf[off + ETH.TYPE] = 0x88;
  buf[off + ETH.TYPE + 1] = 0x09;
  let p = off + ETH_HLEN;
  buf[p++] = SUBTYPE_LACP;
  buf[p++] = 1;
  writeInfo(buf, p, TLV_ACTOR, actor);
  p += TLV_INFO_LEN;
  writeInfo(buf, p, TLV_PARTNER, partner);
  p += TLV_INFO_LEN;
  buf[p] = TLV_COLLECTOR;
  buf[p + 1] = TLV_COLLECTOR_LEN;
  // Max delay 0 (tens of microseconds); the rest, terminator and reserved, stay zero.
  return LACP_FRAME_LEN;
}

/** "ACT,TIMEOUT,AGG,SYNC,COL,DIST" style text of a state byte, for show and logs. */
export function lacpStateText(s: number): string {
  const names = ['activity', 'timeout', 'aggregation', 'synchronized', 'collecting', 'distributing', 'defaulted', 'expired'];
  const out: string[] = [];
  for (let i = 0; i < 8; i++) if ((s & (1 << i)) !== 0) out.push(names[i]);
  return out.join(',');
}
