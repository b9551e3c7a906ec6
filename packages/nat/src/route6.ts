/*
 * IPv6 forwarding of one router (the IPv6 twin of router.ts's IPv4 decisions):
 * a packet a VM sends to the gateway's MAC for an address that is not the
 * gateway's goes
 * - to another network of this router whose /64 holds the destination, if the
 *   `interconnect` pairs let those two networks route (the same rule as IPv4);
 *   else Destination Unreachable "administratively prohibited";
 * - else out of the uplink, when the uplink has IPv6 (uplink6.ts: routed, the
 *   VM prefixes routed to the uplink's address by the upstream, or NPTv6,
 *   npt6.ts, for ULA prefixes);
 * - else, with a host uplink (`host`, router.ts), to the host NAT (host/nat.ts),
 *   which ends the flow and opens it again as a socket of the host: not forwarded,
 *   so no hop limit or MTU rules here (the host NAT has its own);
 * - else nowhere: Destination Unreachable "no route".
 * Echo requests to another gateway's address (of an interconnected network) or
 * to the uplink's own address are answered from that address, as a router
 * answers for any of its addresses.
 * Packets from the uplink for a VM prefix (or, with NPTv6, for its external
 * prefix) go to that network. Link-local sources and destinations are never
 * forwarded (RFC 4291 2.5.6): "beyond scope of source address".
 *
 * Every forwarded packet has its hop limit decremented; at 1 the sender gets
 * Time Exceeded. A packet larger than the egress link's MTU (the network's
 * `ra.mtu`, 1500 without one; the uplink's `mtu`) is not fragmented (IPv6
 * routers never do, RFC 8200 5): the sender gets Packet Too Big with that MTU.
 * A GSO super-frame is judged by the size of its segments (icmp6-error.ts
 * segmentSize), and otherwise forwarded whole with its virtio_net_hdr: routing
 * changes neither the L4 checksum nor the header offsets, and NPTv6 is
 * checksum-neutral, so a partial checksum stays right.
 *
 * The ICMPv6 errors spend a token of the sending port's `icmpErrors` bucket
 * (limits.ts) first, as the IPv4 ones do; towards the uplink side uplink6.ts
 * bounds them (UPLINK6_ERRORS_PPS).
 *
 * Next hops on a network are resolved by Neighbor Discovery: each network has a
 * neighbour cache (neigh6.ts), fed by what nd.ts sees (NS with a source
 * link-layer address, NAs), and a miss holds the packet and solicits the
 * destination from the gateway's link-local address.
 *
 * Nothing is allocated per forwarded packet; errors and solicitations are written
 * into preallocated buffers.
 */
import {
  ETH_HLEN, ETHERTYPE, ICMP6_TYPE, IP6, IP6_HLEN, IP6_NEXT, IPV6_OK, NDOPT, checkIpv6, ip6InPrefix, ip6IsLinkLocal,
  ip6IsMulticast, ip6IsUnspecified, ip6PayloadLen, srcMac, writeIcmp6Checksum, writeIp6, writeNs, writeOptLla,
  writeSolicitedNode, ip6MulticastMac, VNET_HDR_LEN, vnetWork, ip6Upper, newIp6Upper,
} from '@vswitch/switch';
import { writeEth } from './frames.js';
import { ICMP6_UNREACH, icmp6ErrorFrame, mayAnswer, segmentSize } from './icmp6-error.js';
import { LIMIT } from './limits.js';
import { Neigh6Cache } from './neigh6.js';
import type { RouterNetwork } from './network.js';
import { Npt6 } from './npt6.js';
import { VNET_DROP, VNET_PARTIAL, holdCopy, vnetPrepare } from './vnet.js';

/** The MTU of a network without `ra.mtu`: Ethernet's. */
export const DEFAULT_MTU6 = 1500;

export interface Route6Counters {
  /** Forwarded between two networks of the router. */
  between: number;
  toUplink: number;
  fromUplink: number;
  /** Refused: networks not interconnected. */
  prohibited: number;
  noRoute: number;
  hopLimitExceeded: number;
  /** Packet Too Big sent (or due and rate-limited). */
  tooBig: number;
  /** Link-local source or destination, or a multicast destination: not forwarded. */
  scope: number;
  /** To the uplink from a source in none of the router's prefixes (BCP 38), or not translatable: dropped. */
  badSource: number;
}

/** What route6 needs of an uplink with IPv6 (uplink6.ts). */
export interface Uplink6Port {
  readonly mtu: number;
  /** It has an address and a default router: the networks may advertise a router lifetime for it. */
  readonly ready: boolean;
  /** Sends the packet (ETH_HLEN bytes of room before ipOff; with `vnet` its header before those) to its next hop. */
  send6(buf: Uint8Array, ipOff: number, ipLen: number, vnet: boolean): void;
  /** An ICMPv6 error about the packet at pkt[ipOff..) back to its sender (the uplink's address as source). */
  error(type: number, code: number, param: number, pkt: Uint8Array, ipOff: number): void;
  /** buf[a, a+16) is one of the uplink's own addresses. */
  isOurs(buf: Uint8Array, a: number): boolean;
  /** For `router show`. */
  describe(): Record<string, unknown>;
}

interface Net6 {
  net: RouterNetwork;
  /** NPTv6 to the uplink (the network's `ipv6.npt`); absent: routed. */
  npt: Npt6 | undefined;
  cache: Neigh6Cache;
  prefix: Uint8Array;
  prefixLen: number;
  mtu: number;
  /** The networks this one may route to (interconnect), resolved once: no string per packet. */
  peers: Set<Net6>;
}

export class Route6 {
  readonly counters: Route6Counters = {
    between: 0, toUplink: 0, fromUplink: 0, prohibited: 0, noRoute: 0, hopLimitExceeded: 0, tooBig: 0, scope: 0, badSource: 0,
  };
  readonly #nets: Net6[] = [];
  readonly #byNet = new Map<RouterNetwork, Net6>();
  readonly #out = Buffer.alloc(ETH_HLEN + 1280 + 64);
  readonly #ns = Buffer.alloc(128);
  readonly #group = new Uint8Array(16);
  readonly #upper = newIp6Upper();
  uplink: Uplink6Port | undefined;
  /**
   * The host NAT of a host uplink (no interface uplink then): takes what has no
   * other route, its virtio_net_hdr prepared (vnet.ts: `partial`, a checksum left
   * for it to complete). With it every network has somewhere to route to.
   */
  host: ((from: RouterNetwork, buf: Uint8Array, ipOff: number, ipLen: number, partial: boolean) => void) | undefined;

  constructor(private readonly clock: () => number, private readonly allowed: (a: string, b: string) => boolean) {}

  /** A network with `ipv6` joins: its neighbour cache, and its ND feeds it. */
  addNetwork(net: RouterNetwork): void {
    const nd = net.nd;
    if (nd === undefined) return;
    const npt = nd.opts.npt !== undefined ? new Npt6(nd.prefix, nd.opts.npt) : undefined;
    const n: Net6 = { net, npt, peers: new Set(), cache: new Neigh6Cache(this.clock), prefix: nd.prefix, prefixLen: nd.opts.prefixLen, mtu: nd.opts.mtu ?? DEFAULT_MTU6 };
    this.#nets.push(n);
    this.#byNet.set(net, n);
    for (const a of this.#nets) {
      a.peers.clear();
      for (const b of this.#nets) if (a !== b && this.allowed(a.net.name, b.net.name)) a.peers.add(b);
    }
    nd.onNeighbour = (f, a, mac) => {
      for (const held of n.cache.learn(f, a, mac)) this.#emitHeld(n, held, mac);
    };
    net.route6 = (from, buf, ipOff, ipLen, vnet) => this.fromNetwork(from, buf, ipOff, ipLen, vnet);
  }

  /**
   * Sends the IPv6 packet at buf[ipOff, ipOff+ipLen) (ETH_HLEN of room before it)
   * to its destination on `net`, resolving it by ND (held meanwhile): the host
   * NAT's packets to a VM it has not heard from. False: `net` has no IPv6 here.
   */
  sendResolving(net: RouterNetwork, buf: Uint8Array, ipOff: number, ipLen: number, vnet: boolean): boolean {
    const n = this.#byNet.get(net);
    if (n === undefined) return false;
    this.#sendOn(n, buf, ipOff, ipLen, vnet);
    return true;
  }

  /** The neighbour cache of a network (views, tests). */
  cacheOf(net: RouterNetwork): Neigh6Cache | undefined {
    return this.#byNet.get(net)?.cache;
  }

  /**
   * The RA router lifetime of `net`: non-zero (3 x the RA interval, at most
   * 9000 s, RFC 4861 6.2.1's default) when it has somewhere to route to: an
   * interconnected network with IPv6, an uplink with IPv6 that is ready (an
   * address and a default router: a SLAAC uplink before its first RA is not), or
   * the host NAT.
   */
  routerLifetime(net: RouterNetwork): number {
    const nd = net.nd;
    if (nd === undefined) return 0;
    const somewhere = this.host !== undefined || this.uplink?.ready === true || this.#nets.some((o) => o.net !== net && this.allowed(net.name, o.net.name));
    return somewhere ? Math.min(9000, nd.opts.intervalSec * 3) : 0;
  }

  #networkOf(buf: Uint8Array, a: number): Net6 | undefined {
    const nets = this.#nets;
    for (let i = 0; i < nets.length; i++) if (ip6InPrefix(buf, a, nets[i].prefix, 0, nets[i].prefixLen)) return nets[i];
    return undefined;
  }

  /**
   * An IPv6 packet at buf[ipOff..ipOff+len) that `from` received at the gateway's
   * MAC. Returns false when it is not for forwarding (to one of the gateway's
   * addresses, to a group, or malformed: nd.ts's business); true when taken.
   */
  fromNetwork(from: RouterNetwork, buf: Uint8Array, ipOff: number, len: number, vnet: boolean): boolean {
    if (checkIpv6(buf, ipOff, len) !== IPV6_OK) return false;
    const dst = ipOff + IP6.DST;
    if (ip6IsMulticast(buf, dst)) return false;
    const src6 = this.#byNet.get(from);
    if (src6 === undefined) return false;
    const nd = from.nd!;
    if (ip6IsLinkLocal(buf, dst) || nd.isOurs(buf, dst)) return false;
    // On our own link: the sender should have reached it directly; not ours to route.
    if (ip6InPrefix(buf, dst, src6.prefix, 0, src6.prefixLen)) return false;
    const ipLen = IP6_HLEN + ip6PayloadLen(buf, ipOff);
    const src = ipOff + IP6.SRC;
    if (ip6IsLinkLocal(buf, src) || ip6IsUnspecified(buf, src) || ip6IsMulticast(buf, src)) {
      this.counters.scope++;
      this.#errorBack(src6, ICMP6_TYPE.DEST_UNREACH, ICMP6_UNREACH.BEYOND_SCOPE, 0, buf, ipOff);
      return true;
    }
    const to = this.#networkOf(buf, dst);
    if (to !== undefined) {
      if (!src6.peers.has(to)) {
        this.counters.prohibited++;
        this.#errorBack(src6, ICMP6_TYPE.DEST_UNREACH, ICMP6_UNREACH.PROHIBITED, 0, buf, ipOff);
        return true;
      }
      if (to.net.nd!.isOurs(buf, dst)) {
        // The other gateway's own address: the router answers echo to it (no NS to itself).
        if (src6.net.limit(LIMIT.icmp, srcMac(buf, ipOff - ETH_HLEN))) this.#echoBack(src6, buf, ipOff);
        return true;
      }
      if (!this.#hop(src6, buf, ipOff, ipLen, vnet, to.mtu)) return true;
      this.counters.between++;
      this.#sendOn(to, buf, ipOff, ipLen, vnet);
      return true;
    }
    const up = this.uplink;
    const host = this.host;
    if (up === undefined && host !== undefined) {
      let partial = false;
      if (vnet) {
        const v = vnetPrepare(buf, ipOff, ipLen);
        if (v === VNET_DROP) {
          from.counters.offloadDropped++;
          return true;
        }
        partial = v === VNET_PARTIAL;
      }
      host(from, buf, ipOff, ipLen, partial);
      return true;
    }
    if (up === undefined) {
      this.counters.noRoute++;
      this.#errorBack(src6, ICMP6_TYPE.DEST_UNREACH, ICMP6_UNREACH.NO_ROUTE, 0, buf, ipOff);
      return true;
    }
    if (up.isOurs(buf, dst)) {
      // The uplink's own address, from inside: it answers echo as the gateways do (no NPTv6: nothing leaves).
      if (src6.net.limit(LIMIT.icmp, srcMac(buf, ipOff - ETH_HLEN))) this.#echoBack(src6, buf, ipOff);
      return true;
    }
    if (!up.ready) {
      this.counters.noRoute++;
      this.#errorBack(src6, ICMP6_TYPE.DEST_UNREACH, ICMP6_UNREACH.NO_ROUTE, 0, buf, ipOff);
      return true;
    }
    if (!this.#hop(src6, buf, ipOff, ipLen, vnet, up.mtu)) return true;
    if (!this.#outbound(buf, ipOff)) {
      this.counters.badSource++;
      return true;
    }
    this.counters.toUplink++;
    up.send6(buf, ipOff, ipLen, vnet);
    return true;
  }

  /**
   * An IPv6 packet the uplink received at its MAC that is not for the uplink's own
   * addresses: to a VM network (after NPTv6's inbound mapping), or refused.
   */
  fromUplink(buf: Uint8Array, ipOff: number, ipLen: number, vnet: boolean): void {
    const up = this.uplink!;
    const dst = ipOff + IP6.DST;
    if (ip6IsMulticast(buf, dst) || ip6IsLinkLocal(buf, dst) || ip6IsLinkLocal(buf, ipOff + IP6.SRC)) {
      this.counters.scope++;
      return;
    }
    const translated = this.#inbound(buf, ipOff);
    const to = this.#networkOf(buf, dst);
    // A translated network is reachable from outside at its outside prefix only.
    if (to === undefined || (to.npt !== undefined && !translated)) {
      this.counters.noRoute++;
      up.error(ICMP6_TYPE.DEST_UNREACH, ICMP6_UNREACH.NO_ROUTE, 0, buf, ipOff);
      return;
    }
    if (buf[ipOff + IP6.HLIM] <= 1) {
      this.counters.hopLimitExceeded++;
      up.error(ICMP6_TYPE.TIME_EXCEEDED, 0, 0, buf, ipOff);
      return;
    }
    if (segmentSize(buf, ipOff, ipLen, vnet) > to.mtu) {
      this.counters.tooBig++;
      up.error(ICMP6_TYPE.PACKET_TOO_BIG, 0, to.mtu, buf, ipOff);
      return;
    }
    buf[ipOff + IP6.HLIM]--;
    this.counters.fromUplink++;
    this.#sendOn(to, buf, ipOff, ipLen, vnet);
  }

  /**
   * The source of a packet to the uplink must be in one of the router's prefixes;
   * a network with NPTv6 has it mapped to its outside prefix, and the quoted
   * packet of an ICMPv6 error it sends (the inner destination) with it.
   */
  #outbound(buf: Uint8Array, ipOff: number): boolean {
    const src = ipOff + IP6.SRC;
    const n = this.#networkOf(buf, src);
    if (n === undefined) return false;
    const npt = n.npt;
    if (npt === undefined) return true;
    if (!npt.out(buf, src)) return false;
    const inner = this.#quoted(buf, ipOff);
    if (inner >= 0 && ip6InPrefix(buf, inner + IP6.DST, n.prefix, 0, 64)) npt.out(buf, inner + IP6.DST);
    return true;
  }

  /**
   * NPTv6 inbound: a destination in a network's outside prefix is mapped to its
   * inside address, and so is the quoted packet's source of an ICMPv6 error (the
   * VM's own packet, as it sent it). True when it was translated.
   */
  #inbound(buf: Uint8Array, ipOff: number): boolean {
    const dst = ipOff + IP6.DST;
    const nets = this.#nets;
    for (let i = 0; i < nets.length; i++) {
      const npt = nets[i].npt;
      if (npt === undefined || !ip6InPrefix(buf, dst, npt.outside, 0, 64)) continue;
      if (!npt.in(buf, dst)) return false;
      const inner = this.#quoted(buf, ipOff);
      if (inner >= 0 && ip6InPrefix(buf, inner + IP6.SRC, npt.outside, 0, 64)) npt.in(buf, inner + IP6.SRC);
      return true;
    }
    return false;
  }

  /** Where the quoted IPv6 header of an ICMPv6 error (types 1-4) starts, when the whole header is there; else -1. */
  #quoted(buf: Uint8Array, ipOff: number): number {
    const u = this.#upper;
    if (ip6Upper(buf, ipOff, u) !== IPV6_OK || u.proto !== IP6_NEXT.ICMPV6 || u.fragment || u.len < 8 + IP6_HLEN) return -1;
    const t = buf[u.off];
    return t >= ICMP6_TYPE.DEST_UNREACH && t <= ICMP6_TYPE.PARAM_PROBLEM ? u.off + 8 : -1;
  }

  /** An echo reply to the echo request at buf[ipOff..) (to the uplink's or another gateway's address), from that address, on `n`. */
  #echoBack(n: Net6, buf: Uint8Array, ipOff: number): void {
    const u = this.#upper;
    if (ip6Upper(buf, ipOff, u) !== IPV6_OK || u.proto !== IP6_NEXT.ICMPV6 || u.fragment || u.len < 8 || buf[u.off] !== ICMP6_TYPE.ECHO_REQUEST) return;
    const b = this.#out;
    if (ETH_HLEN + IP6_HLEN + u.len > b.length) return;
    const l4 = ETH_HLEN + IP6_HLEN;
    b.set(buf.subarray(u.off, u.off + u.len), l4);
    b[l4] = ICMP6_TYPE.ECHO_REPLY;
    writeEth(b, srcMac(buf, ipOff - ETH_HLEN), n.net.mac, ETHERTYPE.IPV6);
    writeIp6(b, ETH_HLEN, u.len, IP6_NEXT.ICMPV6, 64, buf, ipOff + IP6.DST, buf, ipOff + IP6.SRC);
    writeIcmp6Checksum(b, ETH_HLEN, l4, u.len);
    n.net.emit(b, 0, l4 + u.len);
  }

  /** Hop limit and MTU of a packet from a network: false (answered, counted) when it may not go on. */
  #hop(from: Net6, buf: Uint8Array, ipOff: number, ipLen: number, vnet: boolean, mtu: number): boolean {
    if (buf[ipOff + IP6.HLIM] <= 1) {
      this.counters.hopLimitExceeded++;
      this.#errorBack(from, ICMP6_TYPE.TIME_EXCEEDED, 0, 0, buf, ipOff);
      return false;
    }
    if (segmentSize(buf, ipOff, ipLen, vnet) > mtu) {
      this.counters.tooBig++;
      this.#errorBack(from, ICMP6_TYPE.PACKET_TOO_BIG, 0, mtu, buf, ipOff);
      return false;
    }
    buf[ipOff + IP6.HLIM]--;
    return true;
  }

  /** An ICMPv6 error to the sender of the packet, from the gateway's address on its network, after its port's token. */
  #errorBack(n: Net6, type: number, code: number, param: number, buf: Uint8Array, ipOff: number): void {
    if (!mayAnswer(buf, ipOff, type)) return;
    const sender = srcMac(buf, ipOff - ETH_HLEN);
    if (!n.net.limit(LIMIT.icmpErrors, sender)) return;
    const len = icmp6ErrorFrame(this.#out, sender, n.net.mac, n.net.nd!.address, type, code, param, buf, ipOff);
    n.net.emit(this.#out, 0, len);
  }

  /** Sends the packet to its destination on `n`, resolving it by ND (the packet held meanwhile). */
  #sendOn(n: Net6, buf: Uint8Array, ipOff: number, ipLen: number, vnet: boolean): void {
    const frameOff = ipOff - ETH_HLEN;
    const dst = ipOff + IP6.DST;
    const mac = n.cache.lookup(buf, dst);
    if (mac < 0) {
      if (n.cache.hold(buf, dst, holdCopy(buf, frameOff, ETH_HLEN + ipLen, vnet))) this.#solicit(n, buf, dst);
      return;
    }
    writeEth(buf, mac, n.net.mac, ETHERTYPE.IPV6, frameOff);
    if (vnet) n.net.emitVnet(buf, frameOff, ETH_HLEN + ipLen);
    else n.net.emit(buf, frameOff, ETH_HLEN + ipLen);
  }

  /** A held copy (vnet.ts holdCopy: header room, then the frame) whose destination resolved to `mac`. */
  #emitHeld(n: Net6, copy: Uint8Array, mac: number): void {
    const off = VNET_HDR_LEN;
    writeEth(copy, mac, n.net.mac, ETHERTYPE.IPV6, off);
    if (vnetWork(copy, 0)) n.net.emitVnet(copy, off, copy.length - off);
    else n.net.emit(copy, off, copy.length - off);
  }

  /** A Neighbor Solicitation for target buf[t, t+16) to its solicited-node group, from the gateway's link-local address. */
  #solicit(n: Net6, buf: Uint8Array, t: number): void {
    const b = this.#ns;
    const ip = ETH_HLEN;
    const l4 = ip + IP6_HLEN;
    writeSolicitedNode(this.#group, 0, buf, t);
    let len = writeNs(b, l4, buf, t);
    len += writeOptLla(b, l4 + len, NDOPT.SLLA, n.net.mac);
    writeEth(b, ip6MulticastMac(this.#group, 0), n.net.mac, ETHERTYPE.IPV6);
    writeIp6(b, ip, len, IP6_NEXT.ICMPV6, 255, n.net.nd!.linkLocal, 0, this.#group, 0);
    writeIcmp6Checksum(b, ip, l4, len);
    n.net.emit(b, 0, ip + IP6_HLEN + len);
  }

  /** For `router show`: the counters, and the uplink's IPv6 side. */
  describe(): Record<string, unknown> {
    return { counters: { ...this.counters }, uplink: this.uplink?.describe() ?? null };
  }
}
