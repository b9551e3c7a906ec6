/*
 * ICMP, UDP and TCP header views: offsets and accessors over (buf, off) where off
 * is the start of the L4 header. Length checks are the caller's (`checkUdp`,
 * `checkTcp`, `checkIcmp` against the IPv4 payload length). The writers set every
 * byte of the header they build; those that compute a checksum say over what.
 */
import { read16, read32, write16, write32 } from './bytes.js';
import { checksum, pseudoSum } from './checksum.js';
import { IPPROTO } from './ipv4.js';

export const ICMP = { TYPE: 0, CODE: 1, CSUM: 2, ID: 4, SEQ: 6 } as const;
export const ICMP_HLEN = 8;
export const ICMP_TYPE = { ECHO_REPLY: 0, DEST_UNREACH: 3, ECHO_REQUEST: 8, TIME_EXCEEDED: 11, PARAMETER_PROBLEM: 12 } as const;

export const UDP = { SPORT: 0, DPORT: 2, LEN: 4, CSUM: 6 } as const;
export const UDP_HLEN = 8;

export const TCP = { SPORT: 0, DPORT: 2, SEQ: 4, ACK: 8, DOFF: 12, FLAGS: 13, WIN: 14, CSUM: 16, URG: 18 } as const;
export const TCP_MIN_HLEN = 20;
export const TCP_FLAG = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10, URG: 0x20, ECE: 0x40, CWR: 0x80 } as const;
/** TCP option kinds (RFC 9293 3.2, RFC 7323 2.2) and the lengths of those with one. */
export const TCP_OPT = { EOL: 0, NOP: 1, MSS: 2, WSCALE: 3 } as const;
export const TCP_OPT_MSS_LEN = 4;
export const TCP_OPT_WSCALE_LEN = 3;
/** RFC 7323 2.3: a larger window-scale shift is taken as 14. */
export const TCP_MAX_WSCALE = 14;

export const checkIcmp = (l4len: number): boolean => l4len >= ICMP_HLEN;
export const icmpType = (buf: Uint8Array, off: number): number => buf[off + ICMP.TYPE];
export const icmpCode = (buf: Uint8Array, off: number): number => buf[off + ICMP.CODE];
export const icmpId = (buf: Uint8Array, off: number): number => read16(buf, off + ICMP.ID);
export const icmpSeq = (buf: Uint8Array, off: number): number => read16(buf, off + ICMP.SEQ);
export const icmpChecksum = (buf: Uint8Array, off: number): number => read16(buf, off + ICMP.CSUM);

/**
 * An ICMP error (type/code, RFC 792) at buf[off..): the 8-byte header, its second
 * word 0 but for `mtu` in the low half (fragmentation needed, RFC 1191), then the
 * quote src[qoff, qoff+qlen) (the offending IPv4 header and 8 bytes of its
 * payload), and the checksum over all of it. Returns the ICMP length.
 */
export function writeIcmpError(
  buf: Uint8Array, off: number, type: number, code: number, mtu: number, src: Uint8Array, qoff: number, qlen: number,
): number {
  buf[off + ICMP.TYPE] = type;
  buf[off + ICMP.CODE] = code;
  write16(buf, off + ICMP.CSUM, 0);
  write16(buf, off + ICMP.ID, 0);
  write16(buf, off + ICMP.SEQ, mtu);
  buf.set(src.subarray(qoff, qoff + qlen), off + ICMP_HLEN);
  const n = ICMP_HLEN + qlen;
  write16(buf, off + ICMP.CSUM, checksum(buf, off, n));
  return n;
}

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

/**
 * A UDP header at buf[off..) for `plen` payload bytes already at off+UDP_HLEN,
 * with the checksum over both and the IPv4 pseudo header (src, dst); a computed 0
 * is sent as 0xffff (RFC 768: 0 means none).
 */
export function writeUdpHeader(buf: Uint8Array, off: number, sport: number, dport: number, plen: number, src: number, dst: number): void {
  const ulen = UDP_HLEN + plen;
  write16(buf, off + UDP.SPORT, sport);
  write16(buf, off + UDP.DPORT, dport);
  write16(buf, off + UDP.LEN, ulen);
  write16(buf, off + UDP.CSUM, 0);
  const c = checksum(buf, off, ulen, pseudoSum(src, dst, IPPROTO.UDP, ulen));
  write16(buf, off + UDP.CSUM, c === 0 ? 0xffff : c);
}

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
export const tcpWindow = (buf: Uint8Array, off: number): number => read16(buf, off + TCP.WIN);

/**
 * A TCP header at buf[off..) of `hlen` bytes (options, if any, are the caller's,
 * after the first 20): every fixed field, the checksum and urgent pointer 0.
 */
export function writeTcpHeader(
  buf: Uint8Array, off: number, sport: number, dport: number, seq: number, ack: number, hlen: number, flags: number, win: number,
): void {
  write16(buf, off + TCP.SPORT, sport);
  write16(buf, off + TCP.DPORT, dport);
  write32(buf, off + TCP.SEQ, seq);
  write32(buf, off + TCP.ACK, ack);
  buf[off + TCP.DOFF] = (hlen >>> 2) << 4;
  buf[off + TCP.FLAGS] = flags;
  write16(buf, off + TCP.WIN, win);
  write16(buf, off + TCP.CSUM, 0);
  write16(buf, off + TCP.URG, 0);
}

/** What a SYN's options say about the connection; -1/0 for an option absent. */
export interface TcpSynOptions {
  /** MSS option, 0 when absent. */
  mss: number;
  /** Window scale shift (at most TCP_MAX_WSCALE), -1 when absent. */
  wscale: number;
}

/**
 * Reads MSS and window scale from the options of the TCP header at off (hlen from
 * its data offset, checked by checkTcp) into `out`; anything else (SACK-permitted,
 * timestamps) is skipped. A truncated or malformed option ends the walk, an
 * option of the wrong length is ignored (not trusted).
 */
export function tcpSynOptions(buf: Uint8Array, off: number, hlen: number, out: TcpSynOptions): void {
  out.mss = 0;
  out.wscale = -1;
  let p = off + TCP_MIN_HLEN;
  const end = off + hlen;
  while (p < end) {
    const kind = buf[p];
    if (kind === TCP_OPT.EOL) break;
    if (kind === TCP_OPT.NOP) {
      p++;
      continue;
    }
    if (p + 1 >= end) break;
    const len = buf[p + 1];
    if (len < 2 || p + len > end) break;
    if (kind === TCP_OPT.MSS && len === TCP_OPT_MSS_LEN) out.mss = read16(buf, p + 2);
    else if (kind === TCP_OPT.WSCALE && len === TCP_OPT_WSCALE_LEN) out.wscale = Math.min(buf[p + 2], TCP_MAX_WSCALE);
    p += len;
  }
}

/**
 * Writes a SYN's options at buf[p..): MSS, then (wscale >= 0) NOP and window
 * scale, so the header stays a multiple of 4. Returns the bytes written (4 or 8).
 */
export function writeTcpSynOptions(buf: Uint8Array, p: number, mss: number, wscale: number): number {
  buf[p] = TCP_OPT.MSS;
  buf[p + 1] = TCP_OPT_MSS_LEN;
  write16(buf, p + 2, mss);
  if (wscale < 0) return TCP_OPT_MSS_LEN;
  buf[p + 4] = TCP_OPT.NOP;
  buf[p + 5] = TCP_OPT.WSCALE;
  buf[p + 6] = TCP_OPT_WSCALE_LEN;
  buf[p + 7] = wscale;
  return 8;
}
