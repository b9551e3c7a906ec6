/*
 * The ICMPv6 errors a router sends about a packet it will not forward (RFC 4443):
 * Destination Unreachable (no route, administratively prohibited, beyond the
 * scope of the source address), Packet Too Big (the egress MTU; IPv6 routers
 * never fragment, RFC 8200 5) and Time Exceeded (hop limit). The error quotes
 * as much of the invoking packet as fits in the minimum MTU (RFC 4443 2.4 c),
 * so the sender can match it to its flow (TCP's PMTU, traceroute).
 *
 * `mayAnswer` applies RFC 4443 2.4 e: never about an ICMPv6 error or a
 * redirect-like ND message, never to a multicast or unspecified source, and not
 * about a packet sent to a multicast group except Packet Too Big (PMTU for
 * multicast works that way). A packet whose extension chain cannot be walked is
 * not answered either: its upper layer might be an error in disguise.
 *
 * `segmentSize` is the size a packet has on the wire: its length, or for a GSO
 * super-frame (virtio_net_hdr, vnet.ts) the size of one of the segments it will
 * be cut into, which is what the egress MTU judges.
 */
import {
  ETH_HLEN, ETHERTYPE, ICMP6, ICMP6_TYPE, IP6, IP6_HLEN, IP6_MIN_MTU, IP6_NEXT, IPV6_OK, TCP, VNET_GSO, VNET_HDR_LEN,
  ip6IsMulticast, ip6IsUnspecified, ip6PayloadLen, ip6Upper, newIp6Upper, vnetGsoSize, vnetGsoType, write32,
  writeIcmp6Checksum, writeIp6,
} from '@vswitch/switch';
import { writeEth } from './frames.js';

/** Destination Unreachable codes (RFC 4443 3.1). */
export const ICMP6_UNREACH = { NO_ROUTE: 0, PROHIBITED: 1, BEYOND_SCOPE: 2, ADDRESS: 3, PORT: 4 } as const;

/** Hop limit of the errors the router originates. */
const HOP_LIMIT = 64;
/** Bytes of the invoking packet an error may quote: the whole error fits in 1280 (RFC 4443 2.4 c). */
export const ICMP6_QUOTE_MAX = IP6_MIN_MTU - IP6_HLEN - 8;

const upper = newIp6Upper();

/** May the router send an ICMPv6 error of `type` about the IPv6 packet at pkt[ipOff..) (checked by checkIpv6)? */
export function mayAnswer(pkt: Uint8Array, ipOff: number, type: number): boolean {
  if (ip6IsMulticast(pkt, ipOff + IP6.SRC) || ip6IsUnspecified(pkt, ipOff + IP6.SRC)) return false;
  if (ip6IsMulticast(pkt, ipOff + IP6.DST) && type !== ICMP6_TYPE.PACKET_TOO_BIG) return false;
  if (ip6Upper(pkt, ipOff, upper) !== IPV6_OK) return false;
  if (upper.proto === IP6_NEXT.ICMPV6) {
    if (upper.len < 1) return false;
    const t = pkt[upper.off];
    // Errors are types 0-127; of the informational ones, ND (133-137) is link-local business.
    if (t < 128 || (t >= ICMP6_TYPE.ROUTER_SOLICIT && t <= ICMP6_TYPE.REDIRECT)) return false;
  }
  return true;
}

/**
 * Writes into `out` an Ethernet frame carrying the ICMPv6 error type/code with
 * `param` (the MTU of Packet Too Big, the pointer of Parameter Problem, else 0)
 * from `src`[0,16) to the source of the packet at pkt[ipOff..), quoting it.
 * Returns the frame's length. `out` must hold ETH_HLEN + IP6_MIN_MTU bytes.
 */
export function icmp6ErrorFrame(
  out: Uint8Array, ethDst: number, ethSrc: number, src: Uint8Array, type: number, code: number, param: number,
  pkt: Uint8Array, ipOff: number,
): number {
  const quoted = Math.min(IP6_HLEN + ip6PayloadLen(pkt, ipOff), ICMP6_QUOTE_MAX);
  const ip = ETH_HLEN;
  const l4 = ip + IP6_HLEN;
  writeEth(out, ethDst, ethSrc, ETHERTYPE.IPV6);
  out[l4 + ICMP6.TYPE] = type;
  out[l4 + ICMP6.CODE] = code;
  // The MTU of Packet Too Big and the pointer of Parameter Problem share the field.
  write32(out, l4 + ICMP6.MTU, param >>> 0);
  out.set(pkt.subarray(ipOff, ipOff + quoted), l4 + 8);
  const n = 8 + quoted;
  writeIp6(out, ip, n, IP6_NEXT.ICMPV6, HOP_LIMIT, src, 0, pkt, ipOff + IP6.SRC);
  writeIcmp6Checksum(out, ip, l4, n);
  return l4 + n;
}

/**
 * The wire size of the IPv6 packet buf[ipOff, ipOff+ipLen): ipLen, or with a GSO
 * virtio_net_hdr (`vnet`, at buf[ipOff-ETH_HLEN-VNET_HDR_LEN..)) the size of its
 * segments: the headers up to the end of TCP's (or UDP's 8 bytes) plus gso_size.
 */
export function segmentSize(buf: Uint8Array, ipOff: number, ipLen: number, vnet: boolean): number {
  if (!vnet) return ipLen;
  const h = ipOff - ETH_HLEN - VNET_HDR_LEN;
  const gso = vnetGsoType(buf, h) & ~VNET_GSO.ECN;
  if (gso === VNET_GSO.NONE) return ipLen;
  if (ip6Upper(buf, ipOff, upper) !== IPV6_OK) return ipLen;
  let l4h = 8;
  if (upper.proto === IP6_NEXT.TCP) {
    if (upper.len <= TCP.DOFF) return ipLen;
    l4h = (buf[upper.off + TCP.DOFF] >>> 4) * 4;
  }
  return Math.min(ipLen, upper.off - ipOff + l4h + vnetGsoSize(buf, h));
}
