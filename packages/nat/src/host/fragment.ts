/*
 * Packets the host-socket NAT's engines (udp.ts, icmp.ts) hand to a VM, cut to the
 * VM's MTU. The host reassembled what the remote fragmented, and a datagram over
 * the network's MTU (a DNS answer over 1472 bytes, a big ping's reply) must still
 * reach a VM on a 1500-byte network: it goes as IPv4 fragments, or IPv6 ones
 * (RFC 8200 4.5: a Fragment header after the IPv6 header), cut in place in the
 * engine's buffer, so no fragment is copied. TCP needs none of this: its
 * segments are sized to the VM's MSS.
 *
 * IPv6: the host NAT is the source of these packets towards the VM (it
 * terminates the flows on the host's sockets), so it may fragment them, as any
 * source host does; routers never do (route6.ts sends Packet Too Big instead).
 * Every fragmentable part is 8-byte aligned but the last, each fragment (IPv6
 * header, Fragment header, data) is at most the MTU (never below 1280, IPv6's
 * minimum), and all fragments of one datagram carry one Identification, taken
 * from a counter that starts at a random value (RFC 7739: not predictable from
 * outside) and is shared by every engine of the process, so no two datagrams in
 * flight to one VM share one.
 */
import { randomInt } from 'node:crypto';
import {
  FRAG6_HLEN, IP4_MAX_LEN, IP4_MF, IP4_MIN_HLEN, IP6, IP6_HLEN, ip4Dst, ip4Id, ip4Proto, ip4Src, ip4Ttl, write16, writeFrag6, writeIp4,
} from '@vswitch/switch';
import type { ToVm } from './types.js';

/** RFC 8200 4.5: the Fragment header's length and next-header value. */
export { FRAG6_HLEN };
export const NH_FRAGMENT = 44;
/** The smallest MTU of an IPv6 link (RFC 8200 5). */
export const IP6_MIN_MTU = 1280;

let nextId6 = randomInt(0x100000000);
/** The original IPv6 header while its place is taken by the first fragment's. */
const saved6 = new Uint8Array(IP6_HLEN);

/**
 * Hands the IPv6 packet buf[ipOff, ipOff+ipLen) (a 40-byte header and no
 * extension headers, as the engines build it) to the VM, as fragments of at
 * most `mtu` (at least 1280) bytes when it is larger. In place, as sendIp4: the
 * first fragment's headers start FRAG6_HLEN bytes before ipOff (so the caller
 * leaves FRAG6_HLEN + ETH_HLEN bytes of room before it), and each later one's
 * overwrite the tail of the fragment before, which toVm has consumed. Returns the
 * number of packets sent.
 */
export function sendIp6(toVm: ToVm, buf: Buffer, ipOff: number, ipLen: number, mtu: number): number {
  const max = Math.max(IP6_MIN_MTU, mtu);
  if (ipLen <= max) {
    toVm(buf, ipOff, ipLen, false);
    return 1;
  }
  saved6.set(buf.subarray(ipOff, ipOff + IP6_HLEN));
  const next = saved6[IP6.NEXT];
  const dataLen = ipLen - IP6_HLEN;
  const chunk = (max - IP6_HLEN - FRAG6_HLEN) & ~7;
  const id = nextId6;
  nextId6 = (nextId6 + 1) >>> 0;
  let n = 0;
  for (let o = 0; o < dataLen; o += chunk) {
    const len = Math.min(chunk, dataLen - o);
    const h = ipOff - FRAG6_HLEN + o; // the 48 bytes before this fragment's data
    buf.set(saved6, h);
    write16(buf, h + IP6.PLEN, FRAG6_HLEN + len);
    buf[h + IP6.NEXT] = NH_FRAGMENT;
    writeFrag6(buf, h + IP6_HLEN, next, o, o + len < dataLen, id);
    toVm(buf, h, IP6_HLEN + FRAG6_HLEN + len, false);
    n++;
  }
  return n;
}

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
