/*
 * Packets the host-socket NAT's engines (udp.ts, icmp.ts) hand to a VM, cut to the
 * VM's MTU. The host reassembled what the remote fragmented, and a datagram over
 * the network's MTU (a DNS answer over 1472 bytes, a big ping's reply) must still
 * reach a VM on a 1500-byte network: it goes as IPv4 fragments, cut in place in
 * the engine's buffer, so no fragment is copied. TCP needs none of this: its
 * segments are sized to the VM's MSS.
 */
import { IP4_MAX_LEN, IP4_MF, IP4_MIN_HLEN, ip4Dst, ip4Id, ip4Proto, ip4Src, ip4Ttl, writeIp4 } from '@vswitch/switch';
import type { ToVm } from './types.js';

/** The smallest MTU an IPv4 host must take (RFC 791). */
const MIN_MTU = 68;

/**
 * Hands the IPv4 packet buf[ipOff, ipOff+ipLen) (a 20-byte header without options,
 * as the engines build it) to the VM, as fragments of at most `mtu` bytes when it is
 * larger. The fragments are cut in place: each one's header (and the router's
 * Ethernet header before it) overwrites the tail of the previous fragment, which
 * toVm has consumed already. Returns the number of packets sent.
 */
export function sendIp4(toVm: ToVm, buf: Buffer, ipOff: number, ipLen: number, mtu: number): number {
  if (ipLen <= mtu) {
    toVm(buf, ipOff, ipLen, false);
    return 1;
  }
  const id = ip4Id(buf, ipOff);
  const ttl = ip4Ttl(buf, ipOff);
  const proto = ip4Proto(buf, ipOff);
  const src = ip4Src(buf, ipOff);
  const dst = ip4Dst(buf, ipOff);
  const dataLen = ipLen - IP4_MIN_HLEN;
  const chunk = (mtu - IP4_MIN_HLEN) & ~7;
  let n = 0;
  for (let o = 0; o < dataLen; o += chunk) {
    const len = Math.min(chunk, dataLen - o);
    const more = o + len < dataLen ? IP4_MF : 0;
    const h = ipOff + o; // the 20 bytes before this fragment's data
    writeIp4(buf, h, IP4_MIN_HLEN + len, id, more | (o >>> 3), ttl, proto, src, dst);
    toVm(buf, h, IP4_MIN_HLEN + len, false);
    n++;
  }
  return n;
}

/** The `mtu` option of an engine: 65535 (never fragment) when unset, else within [68, 65535]. */
export function clampMtu(mtu: number | undefined): number {
  if (mtu === undefined || !Number.isFinite(mtu)) return IP4_MAX_LEN;
  return Math.max(MIN_MTU, Math.min(IP4_MAX_LEN, Math.floor(mtu)));
}
