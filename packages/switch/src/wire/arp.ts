/*
 * ARP for Ethernet and IPv4 (RFC 826), the only kind a switch's router speaks.
 * `checkArp` accepts exactly htype 1 / ptype 0x0800 / hlen 6 / plen 4; anything
 * else is not ours and is left to the caller to count. `checkArpIpv4` leaves the
 * hardware type out, for the guard, which judges a sender pair whatever hardware
 * type a neighbour would learn it under.
 */
import { ETH_ALEN, ETHERTYPE, readMac, writeMac } from './ethernet.js';
import { read16, read32, write16, write32 } from './bytes.js';

export const ARP = { HTYPE: 0, PTYPE: 2, HLEN: 4, PLEN: 5, OPER: 6, SHA: 8, SPA: 14, THA: 18, TPA: 24 } as const;
export const ARP_LEN = 28;
export const ARP_REQUEST = 1;
export const ARP_REPLY = 2;

export const ARP_HTYPE_ETHERNET = 1;

/** IPv4 over 6-byte hardware addresses, the fixed layout below, inside len bytes; any hardware type. */
export function checkArpIpv4(buf: Uint8Array, off: number, len: number): boolean {
  return len >= ARP_LEN && read16(buf, off + ARP.PTYPE) === ETHERTYPE.IPV4 && buf[off + ARP.HLEN] === ETH_ALEN &&
    buf[off + ARP.PLEN] === 4;
}

export function checkArp(buf: Uint8Array, off: number, len: number): boolean {
  return checkArpIpv4(buf, off, len) && read16(buf, off + ARP.HTYPE) === ARP_HTYPE_ETHERNET;
}

export const arpOper = (buf: Uint8Array, off: number): number => read16(buf, off + ARP.OPER);
export const arpSha = (buf: Uint8Array, off: number): number => readMac(buf, off + ARP.SHA);
export const arpSpa = (buf: Uint8Array, off: number): number => read32(buf, off + ARP.SPA);
export const arpTha = (buf: Uint8Array, off: number): number => readMac(buf, off + ARP.THA);
export const arpTpa = (buf: Uint8Array, off: number): number => read32(buf, off + ARP.TPA);

export function writeArp(buf: Uint8Array, off: number, oper: number, sha: number, spa: number, tha: number, tpa: number): void {
  write16(buf, off + ARP.HTYPE, ARP_HTYPE_ETHERNET);
  write16(buf, off + ARP.PTYPE, ETHERTYPE.IPV4);
  buf[off + ARP.HLEN] = ETH_ALEN;
  buf[off + ARP.PLEN] = 4;
  write16(buf, off + ARP.OPER, oper);
  writeMac(buf, off + ARP.SHA, sha);
  write32(buf, off + ARP.SPA, spa);
  writeMac(buf, off + ARP.THA, tha);
  write32(buf, off + ARP.TPA, tpa);
}
