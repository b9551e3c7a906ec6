/*
 * Builders for the frames the router originates: ARP requests and replies, ICMP
 * echo replies and errors, UDP datagrams (DHCP). Each writes a complete Ethernet
 * frame into a caller buffer and returns its length; every byte is written, every
 * checksum computed.
 */
import {
  ARP_LEN, ETH_HLEN, ICMP_HLEN, IPPROTO, UDP_HLEN, checksum, finish, ip4HeaderLen, ip4TotalLen,
  pseudoSum, sum16, write16, writeArp, writeIpv4Header, writeMac,
} from '@vswitch/switch';

export function writeEth(buf: Uint8Array, dst: number, src: number, type: number, off = 0): void {
  writeMac(buf, off, dst);
  writeMac(buf, off + 6, src);
  write16(buf, off + 12, type);
}

export function arpFrame(buf: Uint8Array, oper: number, ethDst: number, sha: number, spa: number, tha: number, tpa: number): number {
  writeEth(buf, ethDst, sha, 0x0806);
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
  const udp = ip + 20;
  writeEth(buf, ethDst, ethSrc, 0x0800);
  writeIpv4Header(buf, ip, { totalLen: 20 + UDP_HLEN + plen, proto: IPPROTO.UDP, src, dst, ttl: 64 });
  write16(buf, udp, sport);
  write16(buf, udp + 2, dport);
  write16(buf, udp + 4, UDP_HLEN + plen);
  write16(buf, udp + 6, 0);
  buf.set(payload.subarray(0, plen), udp + UDP_HLEN);
  let c = checksum(buf, udp, UDP_HLEN + plen, pseudoSum(src, dst, IPPROTO.UDP, UDP_HLEN + plen));
  if (c === 0) c = 0xffff;
  write16(buf, udp + 6, c);
  return udp + UDP_HLEN + plen;
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
  const icmp = ip + 20;
  const origSrc = ((pkt[ipOff + 12] << 24) | (pkt[ipOff + 13] << 16) | (pkt[ipOff + 14] << 8) | pkt[ipOff + 15]) >>> 0;
  writeEth(buf, ethDst, ethSrc, 0x0800);
  writeIpv4Header(buf, ip, { totalLen: 20 + ICMP_HLEN + quoted, proto: IPPROTO.ICMP, src, dst: origSrc, ttl: 64 });
  buf[icmp] = type;
  buf[icmp + 1] = code;
  write16(buf, icmp + 2, 0);
  write16(buf, icmp + 4, 0);
  write16(buf, icmp + 6, mtu);
  buf.set(pkt.subarray(ipOff, ipOff + quoted), icmp + ICMP_HLEN);
  write16(buf, icmp + 2, finish(sum16(buf, icmp, ICMP_HLEN + quoted)));
  return icmp + ICMP_HLEN + quoted;
}
