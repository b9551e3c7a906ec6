/*
 * ICMP, UDP and TCP header views: offsets and accessors over (buf, off) where off
 * is the start of the L4 header. Length checks are the caller's (`checkUdp`,
 * `checkTcp`, `checkIcmp` against the IPv4 payload length).
 */
import { read16, read32 } from './checksum.js';

export const ICMP = { TYPE: 0, CODE: 1, CSUM: 2, ID: 4, SEQ: 6 } as const;
export const ICMP_HLEN = 8;
export const ICMP_TYPE = { ECHO_REPLY: 0, DEST_UNREACH: 3, ECHO_REQUEST: 8, TIME_EXCEEDED: 11 } as const;

export const UDP = { SPORT: 0, DPORT: 2, LEN: 4, CSUM: 6 } as const;
export const UDP_HLEN = 8;

export const TCP = { SPORT: 0, DPORT: 2, SEQ: 4, ACK: 8, DOFF: 12, FLAGS: 13, WIN: 14, CSUM: 16, URG: 18 } as const;
export const TCP_MIN_HLEN = 20;
export const TCP_FLAG = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10, URG: 0x20, ECE: 0x40, CWR: 0x80 } as const;

export const checkIcmp = (l4len: number): boolean => l4len >= ICMP_HLEN;
export const icmpType = (buf: Uint8Array, off: number): number => buf[off + ICMP.TYPE];
export const icmpCode = (buf: Uint8Array, off: number): number => buf[off + ICMP.CODE];
export const icmpId = (buf: Uint8Array, off: number): number => read16(buf, off + ICMP.ID);
export const icmpSeq = (buf: Uint8Array, off: number): number => read16(buf, off + ICMP.SEQ);

/** UDP length field must cover the header and fit the IP payload. */
export function checkUdp(buf: Uint8Array, off: number, l4len: number): boolean {
  if (l4len < UDP_HLEN) return false;
  const ulen = read16(buf, off + UDP.LEN);
  return ulen >= UDP_HLEN && ulen <= l4len;
}
export const udpSport = (buf: Uint8Array, off: number): number => read16(buf, off + UDP.SPORT);
export const udpDport = (buf: Uint8Array, off: number): number => read16(buf, off + UDP.DPORT);
export const udpLen = (buf: Uint8Array, off: number): number => read16(buf, off + UDP.LEN);
export const udpChecksum = (buf: Uint8Array, off: number): number => read16(buf, off + UDP.CSUM);

/** Data offset must cover the minimum header and fit the IP payload. */
export function checkTcp(buf: Uint8Array, off: number, l4len: number): boolean {
  if (l4len < TCP_MIN_HLEN) return false;
  const hl = (buf[off + TCP.DOFF] >>> 4) * 4;
  return hl >= TCP_MIN_HLEN && hl <= l4len;
}
export const tcpSport = (buf: Uint8Array, off: number): number => read16(buf, off + TCP.SPORT);
export const tcpDport = (buf: Uint8Array, off: number): number => read16(buf, off + TCP.DPORT);
export const tcpSeq = (buf: Uint8Array, off: number): number => read32(buf, off + TCP.SEQ);
export const tcpAck = (buf: Uint8Array, off: number): number => read32(buf, off + TCP.ACK);
export const tcpHeaderLen = (buf: Uint8Array, off: number): number => (buf[off + TCP.DOFF] >>> 4) * 4;
export const tcpFlags = (buf: Uint8Array, off: number): number => buf[off + TCP.FLAGS];
export const tcpChecksum = (buf: Uint8Array, off: number): number => read16(buf, off + TCP.CSUM);
