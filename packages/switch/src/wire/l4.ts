/*
 * ICMP, UDP and TCP header views: offsets and accessors over (buf, off) where off
 * is the start of the L4 header. Length checks are the caller's (`checkUdp`,
 * `checkTcp`, `checkIcmp` against the IPv4 payload length). The writers set every
 * byte of the header they build; those that compute a checksum say over what.
 */
import * as bytes from './bytes.js';
import * as cs from './checksum.js';
import * as ipv4 from './ipv4.js';

// Module constants, not imported bindings (bytes.ts says why).
const { read16, read32, write16, write32 } = bytes;
const { checksum, pseudoSum } = cs;
const { checkIpv4, IPV4_OK: IP_OK, IP4: FIP } = ipv4;
const P_UDP = ipv4.IPPROTO.UDP;
const P_TCP = ipv4.IPPROTO.TCP;

const FI = { TYPE: 0, CODE: 1, CSUM: 2, ID: 4, SEQ: 6 } as const;
const FI_HLEN = 8;
export const ICMP = FI;
export const ICMP_HLEN = FI_HLEN;
export const ICMP_TYPE = { ECHO_REPLY: 0, DEST_UNREACH: 3, ECHO_REQUEST: 8, TIME_EXCEEDED: 11, PARAMETER_PROBLEM: 12 } as const;

const FU = { SPORT: 0, DPORT: 2, LEN: 4, CSUM: 6 } as const;
const FU_HLEN = 8;
export const UDP = FU;
export const UDP_HLEN = FU_HLEN;

const FT = { SPORT: 0, DPORT: 2, SEQ: 4, ACK: 8, DOFF: 12, FLAGS: 13, WIN: 14, CSUM: 16, URG: 18 } as const;
const FT_MIN_HLEN = 20;
export const TCP = FT;
export const TCP_MIN_HLEN = FT_MIN_HLEN;
export const TCP_FLAG = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10, URG: 0x20, ECE: 0x40, CWR: 0x80 } as const;
/** TCP option kinds (RFC 9293 3.2, RFC 7323 2.2) and the lengths of those with one. */
const OPT = { EOL: 0, NOP: 1, MSS: 2, WSCALE: 3 } as const;
const OPT_MSS_LEN = 4;
const OPT_WSCALE_LEN = 3;
/** RFC 7323 2.3: a larger window-scale shift is taken as 14. */
const MAX_WSCALE = 14;
export const TCP_OPT = OPT;
export const TCP_OPT_MSS_LEN = OPT_MSS_LEN;
export const TCP_OPT_WSCALE_LEN = OPT_WSCALE_LEN;
export const TCP_MAX_WSCALE = MAX_WSCALE;

export const checkIcmp = (l4len: number): boolean => l4len >= FI_HLEN;
export const icmpType = (buf: Uint8Array, off: number): number => buf[off + FI.TYPE];
export const icmpCode = (buf: Uint8Array, off: number): number => buf[off + FI.CODE];
export const icmpId = (buf: Uint8Array, off: number): number => read16(buf, off + FI.ID);
export const icmpSeq = (buf: Uint8Array, off: number): number => read16(buf, off + FI.SEQ);
export const icmpChecksum = (buf: Uint8Array, off: number): number => read16(buf, off + FI.CSUM);

/**
 * An ICMP error (type/code, RFC 792) at buf[off..): the 8-byte header, its second
 * word 0 but for `mtu` in the low half (fragmentation needed, RFC 1191), then the
 * quote src[qoff, qoff+qlen) (the offending IPv4 header and 8 bytes of its
 * payload), and the checksum over all of it. Returns the ICMP length.
 */
export function writeIcmpError(
  buf: Uint8Array, off: number, type: number, code: number, mtu: number, src: Uint8Array, qoff: number, qlen: number,
): number {
  buf[off + FI.TYPE] = type;
  buf[off + FI.CODE] = code;
  write16(buf, off + FI.CSUM, 0);
  write16(buf, off + FI.ID, 0);
  write16(buf, off + FI.SEQ, mtu);
  buf.set(src.subarray(qoff, qoff + qlen), off + FI_HLEN);
  const n = FI_HLEN + qlen;
  write16(buf, off + FI.CSUM, checksum(buf, off, n));
  return n;
}

/** UDP length field must cover the header and fit the IP payload. */
export function checkUdp(buf: Uint8Array, off: number, l4len: number): boolean {
  if (l4len < FU_HLEN) return false;
  const ulen = read16(buf, off + FU.LEN);
  return ulen >= FU_HLEN && ulen <= l4len;
}
export const udpSport = (buf: Uint8Array, off: number): number => read16(buf, off + FU.SPORT);
export const udpDport = (buf: Uint8Array, off: number): number => read16(buf, off + FU.DPORT);
export const udpLen = (buf: Uint8Array, off: number): number => read16(buf, off + FU.LEN);
export const udpChecksum = (buf: Uint8Array, off: number): number => read16(buf, off + FU.CSUM);

/**
 * A UDP header at buf[off..) for `plen` payload bytes already at off+UDP_HLEN,
 * with the checksum over both and the IPv4 pseudo header (src, dst); a computed 0
 * is sent as 0xffff (RFC 768: 0 means none).
 */
export function writeUdpHeader(buf: Uint8Array, off: number, sport: number, dport: number, plen: number, src: number, dst: number): void {
  const ulen = FU_HLEN + plen;
  write16(buf, off + FU.SPORT, sport);
  write16(buf, off + FU.DPORT, dport);
  write16(buf, off + FU.LEN, ulen);
  write16(buf, off + FU.CSUM, 0);
  const c = checksum(buf, off, ulen, pseudoSum(src, dst, P_UDP, ulen));
  write16(buf, off + FU.CSUM, c === 0 ? 0xffff : c);
}

/** Data offset must cover the minimum header and fit the IP payload. */
function tcpOk(buf: Uint8Array, off: number, l4len: number): boolean {
  if (l4len < FT_MIN_HLEN) return false;
  const hl = (buf[off + FT.DOFF] >>> 4) * 4;
  return hl >= FT_MIN_HLEN && hl <= l4len;
}
export const checkTcp = tcpOk;
export const tcpSport = (buf: Uint8Array, off: number): number => read16(buf, off + FT.SPORT);
export const tcpDport = (buf: Uint8Array, off: number): number => read16(buf, off + FT.DPORT);
export const tcpSeq = (buf: Uint8Array, off: number): number => read32(buf, off + FT.SEQ);
export const tcpAck = (buf: Uint8Array, off: number): number => read32(buf, off + FT.ACK);
export const tcpHeaderLen = (buf: Uint8Array, off: number): number => (buf[off + FT.DOFF] >>> 4) * 4;
export const tcpFlags = (buf: Uint8Array, off: number): number => buf[off + FT.FLAGS];
export const tcpChecksum = (buf: Uint8Array, off: number): number => read16(buf, off + FT.CSUM);
export const tcpWindow = (buf: Uint8Array, off: number): number => read16(buf, off + FT.WIN);

/**
 * A TCP header at buf[off..) of `hlen` bytes (options, if any, are the caller's,
 * after the first 20): every fixed field, the checksum and urgent pointer 0.
 */
export function writeTcpHeader(
  buf: Uint8Array, off: number, sport: number, dport: number, seq: number, ack: number, hlen: number, flags: number, win: number,
): void {
  write16(buf, off + FT.SPORT, sport);
  write16(buf, off + FT.DPORT, dport);
  write32(buf, off + FT.SEQ, seq);
  write32(buf, off + FT.ACK, ack);
  buf[off + FT.DOFF] = (hlen >>> 2) << 4;
  buf[off + FT.FLAGS] = flags;
  write16(buf, off + FT.WIN, win);
  write16(buf, off + FT.CSUM, 0);
  write16(buf, off + FT.URG, 0);
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
  let p = off + FT_MIN_HLEN;
  const end = off + hlen;
  while (p < end) {
    const kind = buf[p];
    if (kind === OPT.EOL) break;
    if (kind === OPT.NOP) {
      p++;
      continue;
    }
    if (p + 1 >= end) break;
    const len = buf[p + 1];
    if (len < 2 || p + len > end) break;
    if (kind === OPT.MSS && len === OPT_MSS_LEN) out.mss = read16(buf, p + 2);
    else if (kind === OPT.WSCALE && len === OPT_WSCALE_LEN) out.wscale = Math.min(buf[p + 2], MAX_WSCALE);
    p += len;
  }
}

/**
 * Writes a SYN's options at buf[p..): MSS, then (wscale >= 0) NOP and window
 * scale, so the header stays a multiple of 4. Returns the bytes written (4 or 8).
 */
export function writeTcpSynOptions(buf: Uint8Array, p: number, mss: number, wscale: number): number {
  buf[p] = OPT.MSS;
  buf[p + 1] = OPT_MSS_LEN;
  write16(buf, p + 2, mss);
  if (wscale < 0) return OPT_MSS_LEN;
  buf[p + 4] = OPT.NOP;
  buf[p + 5] = OPT.WSCALE;
  buf[p + 6] = OPT_WSCALE_LEN;
  buf[p + 7] = wscale;
  return 8;
}

/**
 * The fields of a TCP segment in IPv4 as an endpoint reads them: readTcpSegment
 * fills a record the caller keeps, so a segment costs no object.
 */
export interface TcpSegment {
  src: number;
  dst: number;
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  flags: number;
  win: number;
  /** Where the TCP header starts in the buffer, and the segment's length (header and payload, to Total Length). */
  off: number;
  len: number;
  /** The TCP header's length (data offset), options included. */
  hlen: number;
}

/**
 * Checks the IPv4 packet buf[ipOff, ipOff+ipLen) as one TCP segment and reads it
 * into `seg`: checkIpv4 without the header checksum (the caller's layer verified
 * it), protocol TCP, not a fragment, checkTcp on the IPv4 payload. False (and
 * `seg` partly written) when a check fails. The TCP checksum is the caller's to
 * verify: it may be partial (virtio-net NEEDS_CSUM).
 */
export function readTcpSegment(buf: Uint8Array, ipOff: number, ipLen: number, seg: TcpSegment): boolean {
  if (checkIpv4(buf, ipOff, ipLen, false) !== IP_OK) return false;
  if (buf[ipOff + FIP.PROTO] !== P_TCP || (read16(buf, ipOff + FIP.FRAG) & 0x3fff) !== 0) return false;
  const ihl = (buf[ipOff + FIP.VER_IHL] & 0x0f) * 4;
  const th = ipOff + ihl;
  const tl = read16(buf, ipOff + FIP.LEN) - ihl;
  if (!tcpOk(buf, th, tl)) return false;
  seg.src = read32(buf, ipOff + FIP.SRC);
  seg.dst = read32(buf, ipOff + FIP.DST);
  seg.sport = read16(buf, th + FT.SPORT);
  seg.dport = read16(buf, th + FT.DPORT);
  seg.seq = read32(buf, th + FT.SEQ);
  seg.ack = read32(buf, th + FT.ACK);
  seg.flags = buf[th + FT.FLAGS];
  seg.win = read16(buf, th + FT.WIN);
  seg.off = th;
  seg.len = tl;
  seg.hlen = (buf[th + FT.DOFF] >>> 4) * 4;
  return true;
}
