/*
 * ARP for Ethernet and IPv4 (RFC 826), the only kind a switch's router speaks.
 * `checkArp` accepts exactly htype 1 / ptype 0x0800 / hlen 6 / plen 4; anything
 * else is not ours and is left to the caller to count. `checkArpIpv4` leaves the
 * hardware type out, for the guard, which judges a sender pair whatever hardware
 * type a neighbour would learn it under.
 */
import * as bytes from './bytes.js';
import * as ethernet from './ethernet.js';

// Module constants, not imported bindings (bytes.ts says why).
const { read16, read32, write16, write32 } = bytes;
const { readMac, writeMac, ETH_ALEN: HLEN_ETH } = ethernet;
const PTYPE_IPV4 = ethernet.ETHERTYPE.IPV4;

const F = { HTYPE: 0, PTYPE: 2, HLEN: 4, PLEN: 5, OPER: 6, SHA: 8, SPA: 14, THA: 18, TPA: 24 } as const;
const LEN = 28;
export const ARP = F;
export const ARP_LEN = LEN;
export const ARP_REQUEST = 1;
export const ARP_REPLY = 2;

const HTYPE_ETHERNET = 1;
export const ARP_HTYPE_ETHERNET = HTYPE_ETHERNET;

/** IPv4 over 6-byte hardware addresses, the fixed layout below, inside len bytes; any hardware type. */
export function checkArpIpv4(buf: Uint8Array, off: number, len: number): boolean {
  return len >= LEN && read16(buf, off + F.PTYPE) === PTYPE_IPV4 && buf[off + F.HLEN] === HLEN_ETH &&
    buf[off + F.PLEN] === 4;
}

export function checkArp(buf: Uint8Array, off: number, len: number): boolean {
  return checkArpIpv4(buf, off, len) && read16(buf, off + F.HTYPE) === HTYPE_ETHERNET;
}

export const arpOper = (buf: Uint8Array, off: number): number => read16(buf, off + F.OPER);
export const arpSha = (buf: Uint8Array, off: number): number => readMac(buf, off + F.SHA);
export const arpSpa = (buf: Uint8Array, off: number): number => read32(buf, off + F.SPA);
export const arpTha = (buf: Uint8Array, off: number): number => readMac(buf, off + F.THA);
export const arpTpa = (buf: Uint8Array, off: number): number => read32(buf, off + F.TPA);

export function writeArp(buf: Uint8Array, off: number, oper: number, sha: number, spa: number, tha: number, tpa: number): void {
  write16(buf, off + F.HTYPE, HTYPE_ETHERNET);
  write16(buf, off + F.PTYPE, PTYPE_IPV4);
  buf[off + F.HLEN] = HLEN_ETH;
  buf[off + F.PLEN] = 4;
  write16(buf, off + F.OPER, oper);
  writeMac(buf, off + F.SHA, sha);
  write32(buf, off + F.SPA, spa);
  writeMac(buf, off + F.THA, tha);
  write32(buf, off + F.TPA, tpa);
}
