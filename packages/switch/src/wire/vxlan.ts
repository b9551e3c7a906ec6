/*
 * VXLAN (RFC 7348) on the wire, as a VTEP sends and receives it over an IPv4
 * underlay:
 *
 *   outer IPv4 (20, DF, no options) | UDP (8, checksum 0) | VXLAN (8) | inner Ethernet frame
 *
 * The VXLAN header is flags (0x08: the I flag, "VNI valid"), 3 reserved bytes,
 * the 24-bit VNI and one reserved byte. RFC 7348 says receivers ignore reserved
 * bits; Linux drops a packet with any flag or reserved bit it does not parse
 * (they announce extensions such as GBP or GPE that change the payload's meaning),
 * and so does this VTEP (`checkVxlan`): a frame is never misread as plain VXLAN.
 *
 * The outer UDP source port carries the inner flow's entropy (RFC 7348 section 5):
 * a hash of the inner MACs, and for IPv4/IPv6 the addresses and TCP/UDP ports, into
 * the dynamic range 49152-65535, so every packet of one inner flow takes the same
 * underlay ECMP path and different flows spread. The UDP checksum is 0 (RFC 7348
 * allows it over IPv4; Linux and OVS accept it). DF is set: the overlay never
 * relies on fragmentation, so an inner frame that does not fit the underlay MTU is
 * refused by the sender (VM MTU = underlay MTU - 50).
 *
 * Over an IPv6 underlay the VTEP writes only UDP + VXLAN (VXLAN_UDP_LEN bytes,
 * `writeVxlanUdp`): the kernel writes the outer IPv6 header and the UDP checksum,
 * which IPv6 requires (netdev udp6.c). The overhead is 40 + 8 + 8 + 14 = 70 bytes
 * (VXLAN6_OVERHEAD): VM MTU = underlay MTU - 70.
 *
 * Nothing here allocates: the header is written into a caller's scratch.
 */
import * as bytes from './bytes.js';
import * as cs from './checksum.js';

const { read16, read32, readI32, write16, write32 } = bytes;
const { sum16, finish } = cs;

export const VXLAN_PORT = 4789;
export const VXLAN_HLEN = 8;
/** IPv4 + UDP + VXLAN: what the VTEP writes before the inner frame. */
export const VXLAN_OUTER_LEN = 20 + 8 + VXLAN_HLEN;
/** Underlay MTU minus the VM's MTU: the outer headers plus the inner Ethernet header. */
export const VXLAN_OVERHEAD = VXLAN_OUTER_LEN + 14;
/** UDP + VXLAN: what the VTEP writes before the inner frame over IPv6 (the kernel adds the IPv6 header). */
export const VXLAN_UDP_LEN = 8 + VXLAN_HLEN;
/** Outer IPv6 + UDP + VXLAN. */
export const VXLAN6_OUTER_LEN = 40 + VXLAN_UDP_LEN;
/** Underlay MTU minus the VM's MTU over IPv6. */
export const VXLAN6_OVERHEAD = VXLAN6_OUTER_LEN + 14;
export const VXLAN_FLAG_I = 0x08;
export const VNI_MAX = 0xffffff;
/** The range RFC 7348 recommends for the outer source port. */
export const VXLAN_SPORT_MIN = 49152;

/** checkVxlan results: the VNI (>= 0), or one of these. */
export const VXLAN_TRUNCATED = -1;
export const VXLAN_BAD_FLAGS = -2;

/**
 * Checks the VXLAN header of a UDP payload at buf[off, off+len): the VNI if the
 * header is well formed and an inner Ethernet header follows, else
 * VXLAN_TRUNCATED (shorter than 8 + 14 bytes) or VXLAN_BAD_FLAGS (I flag clear, or
 * any other flag or reserved bit set).
 */
export function checkVxlan(buf: Uint8Array, off: number, len: number): number {
  if (len < VXLAN_HLEN + 14) return VXLAN_TRUNCATED;
  if (buf[off] !== VXLAN_FLAG_I || buf[off + 1] !== 0 || buf[off + 2] !== 0 || buf[off + 3] !== 0 || buf[off + 7] !== 0) {
    return VXLAN_BAD_FLAGS;
  }
  return (buf[off + 4] << 16) | (buf[off + 5] << 8) | buf[off + 6];
}

/** Writes the 8-byte VXLAN header for `vni` at buf[off]. */
export function writeVxlanHeader(buf: Uint8Array, off: number, vni: number): void {
  buf[off] = VXLAN_FLAG_I;
  buf[off + 1] = 0;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  buf[off + 4] = (vni >>> 16) & 0xff;
  buf[off + 5] = (vni >>> 8) & 0xff;
  buf[off + 6] = vni & 0xff;
  buf[off + 7] = 0;
}

/**
 * Writes outer IPv4 + UDP + VXLAN (VXLAN_OUTER_LEN bytes) at s[off] for an inner
 * frame of `innerLen` bytes (untagged, no FCS). The IPv4 ID is 0 (DF is set:
 * RFC 6864 lets atomic datagrams carry any ID) and the header checksum complete.
 */
export function writeVxlanOuter(
  s: Uint8Array, off: number, src: number, dst: number, sport: number, dport: number,
  vni: number, innerLen: number, ttl: number, tos = 0,
): void {
  const udpLen = 8 + VXLAN_HLEN + innerLen;
  s[off] = 0x45;
  s[off + 1] = tos;
  write16(s, off + 2, 20 + udpLen);
  write16(s, off + 4, 0);
  write16(s, off + 6, 0x4000);
  s[off + 8] = ttl;
  s[off + 9] = 17;
  write16(s, off + 10, 0);
  write32(s, off + 12, src);
  write32(s, off + 16, dst);
  write16(s, off + 10, finish(sum16(s, off, 20)));
  const u = off + 20;
  write16(s, u, sport);
  write16(s, u + 2, dport);
  write16(s, u + 4, udpLen);
  write16(s, u + 6, 0);
  writeVxlanHeader(s, u + 8, vni);
}

/**
 * Writes UDP + VXLAN (VXLAN_UDP_LEN bytes) at s[off] for an inner frame of
 * `innerLen` bytes, the checksum field 0 for the sender's kernel to fill (IPv6).
 */
export function writeVxlanUdp(s: Uint8Array, off: number, sport: number, dport: number, vni: number, innerLen: number): void {
  write16(s, off, sport);
  write16(s, off + 2, dport);
  write16(s, off + 4, VXLAN_UDP_LEN + innerLen);
  write16(s, off + 6, 0);
  writeVxlanHeader(s, off + 8, vni);
}

/**
 * The outer source port for an inner frame given as its MACs a[aoff, aoff+12) and
 * the rest b[boff, boff+blen) from the ethertype on (the frame may be in two
 * pieces: egress hands tunnels a tag-edited header and the rest). A hash of the
 * MACs, and when the frame is IPv4 or IPv6 (untagged, or behind one 802.1Q tag),
 * of its addresses and, for unfragmented TCP/UDP, its ports; in
 * VXLAN_SPORT_MIN..65535. Reads only bytes inside the pieces.
 */
export function vxlanSourcePort(a: Uint8Array, aoff: number, b: Uint8Array, boff: number, blen: number): number {
  let h = 0x811c9dc5;
  for (let i = aoff; i < aoff + 12; i++) h = Math.imul(h ^ a[i], 0x01000193);
  const end = boff + blen;
  let p = boff;
  if (p + 2 > end) return finishPort(h);
  let type = read16(b, p);
  if (type === 0x8100 && p + 6 <= end) {
    p += 4;
    type = read16(b, p);
  }
  p += 2;
  if (type === 0x0800 && p + 20 <= end && (b[p] >> 4) === 4) {
    h = mix(h, read32(b, p + 12));
    h = mix(h, read32(b, p + 16));
    const proto = b[p + 9];
    h = mix(h, proto);
    const ihl = (b[p] & 15) * 4;
    const frag = read16(b, p + 6) & 0x3fff;
    if ((proto === 6 || proto === 17) && frag === 0 && ihl >= 20 && p + ihl + 4 <= end) h = mix(h, read32(b, p + ihl));
  } else if (type === 0x86dd && p + 40 <= end && (b[p] >> 4) === 6) {
    for (let i = p + 8; i < p + 40; i += 4) h = mix(h, read32(b, i));
    const nh = b[p + 6];
    h = mix(h, nh);
    if ((nh === 6 || nh === 17) && p + 44 <= end) h = mix(h, read32(b, p + 40));
  }
  return finishPort(h);
}

function finishPort(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x45d9f3b);
  h ^= h >>> 16;
  return VXLAN_SPORT_MIN + ((h >>> 0) % (65536 - VXLAN_SPORT_MIN));
}

function mix(h: number, v: number): number {
  h = Math.imul(h ^ (v >>> 24), 0x01000193);
  h = Math.imul(h ^ ((v >>> 16) & 0xff), 0x01000193);
  h = Math.imul(h ^ ((v >>> 8) & 0xff), 0x01000193);
  return Math.imul(h ^ (v & 0xff), 0x01000193);
}

/** Where the underlay receiver (netdev udp.c) leaves a datagram's sender: this many bytes before it, IPv4 address then port. */
export const VXLAN_SENDER_BEFORE = 10;

/** Where the IPv6 underlay receiver (netdev udp6.c) leaves a datagram's sender: IPv6 address (16), port (2), zeros (4). */
export const VXLAN6_SENDER_BEFORE = 22;

/**
 * Where the underlay receiver (netdev udp.c, both families) leaves the outer packet's
 * DS field (IPv4 TOS, IPv6 traffic class): this many bytes before the payload, in the
 * sender layout's tail (0 if the kernel did not say).
 */
export const VXLAN_TOS_BEFORE = 4;

/** The sender's IPv4 address of the datagram at buf[off] (netdev udp.c layout), as int32. */
export function vxlanSender(buf: Uint8Array, off: number): number {
  return readI32(buf, off - VXLAN_SENDER_BEFORE);
}

/** The VID of an 802.1Q-tagged frame header at buf[off] (at least 16 bytes), or -1 if it carries no 0x8100 tag. */
export function taggedVid(buf: Uint8Array, off: number): number {
  if (buf[off + 12] !== 0x81 || buf[off + 13] !== 0) return -1;
  return ((buf[off + 14] << 8) | buf[off + 15]) & 0xfff;
}

/**
 * Turns the VXLAN payload at buf[off] (header, then the inner frame) into the inner
 * frame tagged with `vid`, in place: the MACs move 4 bytes back into the VXLAN
 * header's room and the tag follows them. Returns the tagged frame's offset
 * (off + 4); its length is the payload's minus 4.
 */
export function decapTagged(buf: Uint8Array, off: number, vid: number): number {
  const f = off + VXLAN_HLEN - 4;
  buf.copyWithin(f, f + 4, f + 16);
  buf[f + 12] = 0x81;
  buf[f + 13] = 0;
  buf[f + 14] = vid >> 8;
  buf[f + 15] = vid & 0xff;
  return f;
}
