/*
 * Builders for the frames the router originates: ARP requests and replies, ICMP
 * echo replies and errors, UDP datagrams (DHCP; DNS answers over IPv4 and IPv6). Each writes a complete Ethernet
 * frame into a caller buffer and returns its length; every byte is written, every
 * checksum computed. The header bytes themselves are the wire views' (@vswitch/switch).
 */
import {
  ARP_LEN, ETH, ETH_HLEN, ETHERTYPE, ICMP, ICMP_TYPE, IP4, IP4_MIN_HLEN, IPPROTO, UDP_HLEN, ip4Dst, ip4HeaderLen, ip4Src,
  ip4TotalLen, ip4UpdateChecksum, checksum, write16, write32, writeArp, writeIcmpError, writeIpv4Header, writeMac,
  writeUdpHeader, IP6_HLEN, UDP, ip6PseudoSum, writeIp6,
} from '@vswitch/switch';

export function writeEth(buf: Uint8Array, dst: number, src: number, type: number, off = 0): void {
  writeMac(buf, off + ETH.DST, dst);
  writeMac(buf, off + ETH.SRC, src);
  write16(buf, off + ETH.TYPE, type);
}

export function arpFrame(buf: Uint8Array, oper: number, ethDst: number, sha: number, spa: number, tha: number, tpa: number): number {
  writeEth(buf, ethDst, sha, ETHERTYPE.ARP);
  writeArp(buf, ETH_HLEN, oper, sha, spa, tha, tpa);
  buf.fill(0, ETH_HLEN + ARP_LEN, 60);
  return 60;
}

/** UDP/IPv4 frame around `payload[0..plen)`; the UDP checksum is computed. */
export function udpFrame(
  buf: Uint8Array, ethDst: number, ethSrc: number, src: number, dst: number,
  sport: number, dport: number, payload: Uint8Array, plen: number,
): number {
  const ip = ETH_HLEN;
  const udp = ip + IP4_MIN_HLEN;
  writeEth(buf, ethDst, ethSrc, ETHERTYPE.IPV4);
  writeIpv4Header(buf, ip, { totalLen: IP4_MIN_HLEN + UDP_HLEN + plen, proto: IPPROTO.UDP, src, dst, ttl: 64 });
  buf.set(payload.subarray(0, plen), udp + UDP_HLEN);
  writeUdpHeader(buf, udp, sport, dport, plen, src, dst);
  return udp + UDP_HLEN + plen;
}

/** UDP/IPv6 frame around `payload[0..plen)`, from src[so, so+16) to dst[do_, do_+16); the UDP checksum is computed. */
export function udp6Frame(
  buf: Uint8Array, ethDst: number, ethSrc: number, src: Uint8Array, so: number, dst: Uint8Array, do_: number,
  sport: number, dport: number, payload: Uint8Array, plen: number,
): number {
  const ip = ETH_HLEN;
  const udp = ip + IP6_HLEN;
  const ulen = UDP_HLEN + plen;
  writeEth(buf, ethDst, ethSrc, ETHERTYPE.IPV6);
  writeIp6(buf, ip, ulen, IPPROTO.UDP, 64, src, so, dst, do_);
  buf.set(payload.subarray(0, plen), udp + UDP_HLEN);
  write16(buf, udp + UDP.SPORT, sport);
  write16(buf, udp + UDP.DPORT, dport);
  write16(buf, udp + UDP.LEN, ulen);
  write16(buf, udp + UDP.CSUM, 0);
  const c = checksum(buf, udp, ulen, ip6PseudoSum(buf, ip, ulen, IPPROTO.UDP));
  write16(buf, udp + UDP.CSUM, c === 0 ? 0xffff : c);
  return udp + ulen;
}

/**
 * An ICMP error (type/code) about the IPv4 packet at pkt[ipOff..]: quotes its header
 * and the first 8 bytes of its payload (RFC 792), from `src` back to the sender.
 */
export function icmpErrorFrame(
  buf: Uint8Array, ethDst: number, ethSrc: number, src: number, type: number, code: number,
  pkt: Uint8Array, ipOff: number, mtu = 0,
): number {
  const quoted = Math.min(ip4HeaderLen(pkt, ipOff) + 8, ip4TotalLen(pkt, ipOff));
  const ip = ETH_HLEN;
  const icmp = ip + IP4_MIN_HLEN;
  writeEth(buf, ethDst, ethSrc, ETHERTYPE.IPV4);
  const n = writeIcmpError(buf, icmp, type, code, mtu, pkt, ipOff, quoted);
  writeIpv4Header(buf, ip, { totalLen: IP4_MIN_HLEN + n, proto: IPPROTO.ICMP, src, dst: ip4Src(pkt, ipOff), ttl: 64 });
  return icmp + n;
}

/**
 * Turns the ICMP echo request at buf[ipOff, ipOff+ipLen) around in place into its
 * reply: addresses swapped, TTL 64, type echo reply, both checksums recomputed
 * (complete). The caller checked it is an echo request and sends it back.
 */
export function echoReplyInPlace(buf: Uint8Array, ipOff: number, ipLen: number): void {
  const hl = ip4HeaderLen(buf, ipOff);
  const src = ip4Src(buf, ipOff);
  const dst = ip4Dst(buf, ipOff);
  write32(buf, ipOff + IP4.SRC, dst);
  write32(buf, ipOff + IP4.DST, src);
  buf[ipOff + IP4.TTL] = 64;
  ip4UpdateChecksum(buf, ipOff);
  const l4 = ipOff + hl;
  buf[l4 + ICMP.TYPE] = ICMP_TYPE.ECHO_REPLY;
  write16(buf, l4 + ICMP.CSUM, 0);
  write16(buf, l4 + ICMP.CSUM, checksum(buf, l4, ipLen - hl));
}
