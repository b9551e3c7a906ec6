/*
 * The DS field (RFC 2474: DSCP in the upper 6 bits, ECN in the lower 2, RFC 3168) of
 * a tunnel's inner and outer IP headers, as a VTEP copies it: RFC 6040 "normal mode",
 * which is what Linux's ip_tunnel_ecn_encap / INET_ECN_decapsulate do for a `vxlan`
 * device (our interop peer).
 *
 * Encapsulation (`encapTos`): the outer DSCP is the configured one, or the inner
 * packet's (`tos inherit`); the outer ECN field is the inner one, except that an
 * inner CE becomes ECT(0) (a CE already on the inner header must not look like
 * congestion met on the underlay), whatever the configuration says. A frame that is
 * not IP gets the configured DSCP (inherit: 0) and Not-ECT.
 *
 * Decapsulation (`decapEcn`): RFC 6040 section 4.2's table. A CE mark the underlay
 * set on the outer header reaches the inner one if the inner packet is ECN-capable;
 * a CE on a Not-ECT inner packet cannot be passed on, so the packet is dropped (the
 * drop the congested router would have made); outer ECT(1) over inner ECT(0) gives
 * ECT(1). Only outer ECT(1) and CE change anything (both have the low bit set), so
 * the common case is one test. `ecnDecapFrame` applies it to an Ethernet frame in
 * place, fixing the inner IPv4 header checksum incrementally (RFC 1624).
 *
 * Pure functions over bytes; nothing allocates.
 */
import { read16, write16 } from './bytes.js';
import { csumReplace16 } from './checksum.js';

export const ECN_NOT_ECT = 0;
export const ECN_ECT1 = 1;
export const ECN_ECT0 = 2;
export const ECN_CE = 3;
/** `tos: inherit`: the outer DSCP is the inner packet's. */
export const TOS_INHERIT = -1;
/** ecnDecapFrame: the packet must be dropped (outer CE, inner Not-ECT). */
export const ECN_DROP = -1;

/**
 * The DS field (IPv4 TOS, IPv6 traffic class) of the IP packet in an Ethernet
 * frame given from its ethertype on, b[boff, boff+blen) (behind at most one 802.1Q
 * tag); -1 if it is not IPv4 or IPv6.
 */
export function innerDsfield(b: Uint8Array, boff: number, blen: number): number {
  const end = boff + blen;
  let p = boff;
  if (p + 4 > end) return -1;
  let type = read16(b, p);
  if (type === 0x8100 && p + 8 <= end) {
    p += 4;
    type = read16(b, p);
  }
  p += 2;
  if (type === 0x0800) return p + 2 <= end && (b[p] >> 4) === 4 ? b[p + 1] : -1;
  if (type === 0x86dd) return p + 2 <= end && (b[p] >> 4) === 6 ? ((b[p] & 15) << 4) | (b[p + 1] >> 4) : -1;
  return -1;
}

/**
 * The outer DS field for configured `tos` (0-255, or TOS_INHERIT) and the inner
 * packet's DS field `inner` (-1: not IP). RFC 6040 normal mode: the configured
 * value's ECN bits never count.
 */
export function encapTos(tos: number, inner: number): number {
  if (inner < 0) return tos < 0 ? 0 : tos & 0xfc;
  const e = inner & 3;
  return ((tos < 0 ? inner : tos) & 0xfc) | (e === ECN_CE ? ECN_ECT0 : e);
}

/** RFC 6040's decapsulation table: the inner ECN field to forward for `outer` and `inner` ECN fields, or ECN_DROP. */
export function decapEcn(outer: number, inner: number): number {
  const o = outer & 3;
  const i = inner & 3;
  if (i === ECN_NOT_ECT) return o === ECN_CE ? ECN_DROP : ECN_NOT_ECT;
  if (o === ECN_CE) return ECN_CE;
  if (o === ECN_ECT1 && i === ECN_ECT0) return ECN_ECT1;
  return i;
}

/**
 * Applies decapEcn to the frame buf[off, off+len) (its Ethernet header first,
 * behind at most one 802.1Q tag) under the outer DS field `outer`: the inner IPv4
 * TOS (checksum updated) or IPv6 traffic class rewritten in place if its ECN field
 * changes. 0, or ECN_DROP. A frame that is not IP, or too short to tell, is left
 * alone (0), as Linux does.
 */
export function ecnDecapFrame(buf: Uint8Array, off: number, len: number, outer: number): number {
  if ((outer & 1) === 0) return 0; // Not-ECT and ECT(0) outside change nothing
  const end = off + len;
  let p = off + 12;
  if (p + 2 > end) return 0;
  let type = read16(buf, p);
  if (type === 0x8100 && p + 6 <= end) {
    p += 4;
    type = read16(buf, p);
  }
  p += 2;
  if (type === 0x0800) {
    if (p + 20 > end || (buf[p] >> 4) !== 4) return 0;
    const tos = buf[p + 1];
    const e = decapEcn(outer, tos);
    if (e < 0) return ECN_DROP;
    if (e === (tos & 3)) return 0;
    const old = read16(buf, p);
    buf[p + 1] = (tos & 0xfc) | e;
    write16(buf, p + 10, csumReplace16(read16(buf, p + 10), old, read16(buf, p)));
    return 0;
  }
  if (type === 0x86dd) {
    if (p + 40 > end || (buf[p] >> 4) !== 6) return 0;
    const cur = (buf[p + 1] >> 4) & 3;
    const e = decapEcn(outer, cur);
    if (e < 0) return ECN_DROP;
    if (e !== cur) buf[p + 1] = (buf[p + 1] & 0xcf) | (e << 4);
    return 0;
  }
  return 0;
}
