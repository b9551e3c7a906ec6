/*
 * Frames that reach the router with a virtio_net_hdr (see port.ts in
 * @vswitch/switch): GSO super-frames of up to 64 KB and checksum-partial frames,
 * from VMs' TAPs through the bridge and from the uplink's packet socket. The
 * router translates their headers once and lets them travel on whole with the
 * header; the device (a TAP, a veth), the kernel or the segmenter (gso.c) makes
 * the wire frames and completes the L4 checksum later.
 *
 * The header is at buf[frameOff-VNET_HDR_LEN, frameOff); its fields are read and
 * written through the wire view (@vswitch/switch wire/vnet.ts).
 *
 * What the router forwards with its header is one shape only, checked here: IPv4
 * TCP or UDP with NEEDS_CSUM, csum_start at the L4 header and csum_offset at its
 * checksum field (what Linux produces), GSO type absent or matching the protocol
 * (TCPV4, UDP_L4). NAPT can then update the field as a partial sum (napt/
 * translate.ts). A frame that is not partial, or partial elsewhere (an odd
 * csum_start, ICMP), is completed here in JS and goes on as a complete one; a GSO
 * frame of any other shape is dropped (a guest's broken header: nothing the router
 * could segment correctly).
 */
import {
  ETH_HLEN, IPPROTO, IPV6_OK, TCP, UDP, VNET_GSO, ip6Upper, newIp6Upper, VNET_HDR_LEN, checksum, ip4HeaderLen, ip4Proto, vnetClearNeedsCsum, vnetCsumOffset,
  vnetCsumStart, vnetGsoType, vnetNeedsCsum, write16,
} from '@vswitch/switch';

/** vnetPrepare: forward without the header (it asked for nothing, or the checksum was completed here). */
export const VNET_COMPLETE = 0;
/** vnetPrepare: forward with the header; the L4 checksum is partial at its standard place. */
export const VNET_PARTIAL = 1;
/** vnetPrepare: drop (a GSO frame the router cannot forward correctly). */
export const VNET_DROP = -1;

/**
 * Completes the partial checksum of the frame buf[frameOff, frameOff+len) as a
 * device would (sum from csum_start to the end, complemented, 0 sent as 0xffff) and
 * clears NEEDS_CSUM. For a frame without GSO; `len` should end at the IPv4 Total
 * Length (no Ethernet padding). False if the header's offsets do not fit the frame.
 */
export function vnetComplete(buf: Uint8Array, frameOff: number, len: number): boolean {
  const h = frameOff - VNET_HDR_LEN;
  if (!vnetNeedsCsum(buf, h)) return true;
  const start = vnetCsumStart(buf, h);
  const at = vnetCsumOffset(buf, h);
  if (start >= len || at + 2 > len - start) return false;
  const c = checksum(buf, frameOff + start, len - start);
  write16(buf, frameOff + start + at, c === 0 ? 0xffff : c);
  vnetClearNeedsCsum(buf, h);
  return true;
}

const upper6 = newIp6Upper();

/**
 * Decides how the IPv4 packet buf[ipOff, ipOff+ipLen) (passed checkIpv4, or an
 * IPv6 one that passed checkIpv6: the same shapes with TCPV6; its
 * Ethernet header at ipOff-ETH_HLEN, untagged, and its virtio_net_hdr before that)
 * is forwarded: VNET_COMPLETE, VNET_PARTIAL or VNET_DROP (see the header comment).
 * May complete the checksum in place.
 */
export function vnetPrepare(buf: Uint8Array, ipOff: number, ipLen: number): number {
  const frameOff = ipOff - ETH_HLEN;
  const h = frameOff - VNET_HDR_LEN;
  const needsCsum = vnetNeedsCsum(buf, h);
  const gsoType = vnetGsoType(buf, h);
  if (!needsCsum && gsoType === VNET_GSO.NONE) return VNET_COMPLETE;
  // IPv6 (host NAT over IPv6): the upper layer past any extension headers; TCPV6 instead of TCPV4.
  const v6 = buf[ipOff] >>> 4 === 6;
  if (v6 && ip6Upper(buf, ipOff, upper6) !== IPV6_OK) return VNET_DROP;
  const proto = v6 ? upper6.proto : ip4Proto(buf, ipOff);
  const l4 = v6 ? upper6.off - frameOff : ETH_HLEN + ip4HeaderLen(buf, ipOff);
  const csumOffset = vnetCsumOffset(buf, h);
  const standard = needsCsum && vnetCsumStart(buf, h) === l4 &&
    ((proto === IPPROTO.TCP && csumOffset === TCP.CSUM) || (proto === IPPROTO.UDP && csumOffset === UDP.CSUM));
  if (gsoType !== VNET_GSO.NONE) {
    const gso = gsoType & ~VNET_GSO.ECN;
    if (!standard) return VNET_DROP;
    return (gso === (v6 ? VNET_GSO.TCPV6 : VNET_GSO.TCPV4) && proto === IPPROTO.TCP) || (gso === VNET_GSO.UDP_L4 && proto === IPPROTO.UDP) ? VNET_PARTIAL : VNET_DROP;
  }
  if (standard) return VNET_PARTIAL;
  return vnetComplete(buf, frameOff, ETH_HLEN + ipLen) ? VNET_COMPLETE : VNET_DROP;
}

/**
 * A copy of the frame buf[frameOff, frameOff+len) to hold while its next hop
 * resolves: VNET_HDR_LEN bytes of header, then the frame. With `vnet` the frame's
 * own header (at frameOff-VNET_HDR_LEN) comes along, so a GSO super-frame is held
 * as one and released whole; otherwise the header is zeros (a complete frame).
 * The ARP cache bounds what is held (arp-cache.ts: frames per address, bytes in all).
 */
export function holdCopy(buf: Uint8Array, frameOff: number, len: number, vnet: boolean): Buffer {
  const copy = Buffer.allocUnsafe(VNET_HDR_LEN + len);
  if (vnet) {
    copy.set(buf.subarray(frameOff - VNET_HDR_LEN, frameOff + len));
  } else {
    copy.fill(0, 0, VNET_HDR_LEN);
    copy.set(buf.subarray(frameOff, frameOff + len), VNET_HDR_LEN);
  }
  return copy;
}
