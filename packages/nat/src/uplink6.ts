/*
 * The uplink's IPv6 side (the IPv6 twin of uplink.ts's ARP and address): the
 * router is a host of its own on the uplink segment, with the link-local
 * address of the uplink's MAC and a global address, static from the config or
 * by SLAAC from the segment's Router Advertisements (RFC 4862: the first prefix
 * with the A flag, a /64, and the uplink MAC's EUI-64 identifier). The default
 * router is the configured gateway, or the source of the RAs (router lifetime >
 * 0; lost when that lifetime runs out). Without a router known it sends a
 * Router Solicitation every RS_INTERVAL_MS.
 *
 * Duplicate Address Detection (RFC 4862 5.4) for the global address, static or
 * SLAAC: it is tentative until one Neighbor Solicitation from :: to its
 * solicited-node group (sent when the address is configured or formed, and again
 * when the link comes up, `linkUp`, while it is tentative: a probe sent before
 * the uplink attached went nowhere) has gone unanswered for DAD_WAIT_MS.
 * Meanwhile it is not ours: no NS is answered for it, nothing is sent from it,
 * nothing is routed (not `ready`). An NA for it, or another node's DAD probe
 * for it (an NS from ::), makes it duplicate: never used, `uplink6_dad_failed`
 * reported with the other node's MAC, counted (`dadConflicts`) and shown
 * (`describe().dad`); a reload (a new router) tries again. The link-local
 * address (the MAC's EUI-64) is not probed: the MAC is the uplink's own.
 * Frames from our own MAC (a packet socket may see what we send) are ignored.
 *
 * It answers Neighbor Solicitations and echo requests for its two addresses,
 * resolves next hops (the gateway, or a destination on the uplink's prefix) by
 * Neighbor Solicitation with a neighbour cache (neigh6.ts), and hands every
 * other packet to its MAC to the router's IPv6 forwarding (`onForward`,
 * route6.ts fromUplink): the VM prefixes are routed to the uplink's address by
 * the upstream (README "IPv6 routing"), NPTv6 outside prefixes too.
 *
 * ICMPv6 errors it sends (route6.ts: no route, hop limit, Packet Too Big towards
 * the outside) come from its global address and are bounded by a token bucket
 * of ERRORS_PPS a second, refilled by `tick`.
 *
 * Frames go out through `send` (the uplink's packet socket; with `vnet` whole
 * with their virtio_net_hdr). Nothing is allocated per forwarded packet.
 */
import {
  ETH_HLEN, ETHERTYPE, ICMP6, ICMP6_TYPE, IP6, IP6_HLEN, IP6_NEXT, IPV6_OK, ND_NA_FLAG, ND_PREFIX_FLAG, NDOPT, NDP_OK,
  VNET_HDR_LEN, checkIcmp6, checkIpv6, checkNd, dstMac, formatIp6, icmp6SumOk, icmp6Type, ip6Equal, ip6InPrefix,
  ip6IsLinkLocal, ip6IsMulticast, ip6IsSolicitedNodeOf, ip6IsUnspecified, ip6MulticastMac, ip6PayloadLen, ip6Upper,
  linkLocalFromMac, ndFirstOption, ndNextOption, ndOptLla, ndOptType, ndOption, ndPrefixAt, ndPrefixFlags, ndPrefixLen,
  ndPrefixOk, ndPrefixValid, ndRaLifetime, ndTarget, newIp6Upper, srcMac, vnetWork, writeEui64, writeIcmp6Checksum, writeIp6,
  writeNa, writeNs, writeOptLla, writeRs, writeSolicitedNode,
} from '@vswitch/switch';
import { writeEth } from './frames.js';
import { icmp6ErrorFrame, mayAnswer } from './icmp6-error.js';
import { Neigh6Cache } from './neigh6.js';
import { holdCopy } from './vnet.js';
import type { Uplink6Port } from './route6.js';

export const RS_INTERVAL_MS = 4000;
/** ICMPv6 errors a second the uplink sends (to the outside), in all. */
export const UPLINK6_ERRORS_PPS = 100;

export interface Uplink6Options {
  mac: number;
  /** Static global address and prefix length; absent: SLAAC. */
  address?: Uint8Array;
  prefixLen?: number;
  /** The default router (link-local or global); absent: the RAs' source. */
  gateway?: Uint8Array;
  /** The uplink link's MTU (Packet Too Big towards it); default 1500. */
  mtu?: number;
  clock: () => number;
}

/** How long a DAD probe waits for an answer (RFC 4861 RetransTimer's default). */
export const DAD_WAIT_MS = 1000;

/** The global address's DAD state: none (no address yet), tentative, preferred (in use) or duplicate. */
export type Uplink6AddressState = 'none' | 'tentative' | 'preferred' | 'duplicate';

export interface Uplink6Event { event: 'uplink6_dad_failed'; address: string; mac: string; how: 'na' | 'dad_probe' }

export interface Uplink6Counters {
  /** NS probes sent for DAD. */
  dadProbes: number;
  /** DAD found the address in use (an NA for it, or another node's probe). */
  dadConflicts: number;
  rxFrames: number;
  nsAnswered: number;
  echoReplies: number;
  raReceived: number;
  rsSent: number;
  forwarded: number;
  /** Nothing to send it to: no address or no router yet. */
  noRoute: number;
  ignored: number;
  malformed: number;
}

const ALL_NODES = Uint8Array.of(0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS = Uint8Array.of(0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2);
const UNSPECIFIED = new Uint8Array(16);
const formatMacOf = (m: number): string => m.toString(16).padStart(12, '0').replace(/(..)(?!$)/g, '$1:');

export class Uplink6 implements Uplink6Port {
  readonly counters: Uplink6Counters = {
    rxFrames: 0, nsAnswered: 0, echoReplies: 0, raReceived: 0, rsSent: 0, forwarded: 0, noRoute: 0, ignored: 0, malformed: 0,
    dadProbes: 0, dadConflicts: 0,
  };
  readonly linkLocal: Uint8Array;
  readonly cache: Neigh6Cache;
  readonly mtu: number;
  /** The global address (16 bytes), all zero while SLAAC has none. */
  readonly address = new Uint8Array(16);
  prefixLen = 64;
  /** The address is usable: DAD passed (state preferred). */
  #hasAddress = false;
  #state: Uplink6AddressState = 'none';
  /** When the DAD probe's wait ends (clock ms); Infinity until a probe went out. */
  #dadUntil = Infinity;
  /** The MAC that claimed the address, for `describe`. */
  #conflictMac = '';
  readonly #gateway = new Uint8Array(16);
  #hasGateway = false;
  /** When the RA-learnt router's lifetime ends (clock ms); Infinity for a configured one. */
  #gatewayUntil = -Infinity;
  #lastRs = -Infinity;
  #tokens = UPLINK6_ERRORS_PPS;
  readonly #out = Buffer.alloc(ETH_HLEN + 1280 + 64);
  readonly #nd = Buffer.alloc(256);
  readonly #group = new Uint8Array(16);
  readonly #upper = newIp6Upper();
  /** `ready` changed (an address and a default router known, or lost): the router's RAs follow (route6.ts). */
  onReady: (ready: boolean) => void = () => {};
  #wasReady = false;
  /** Packets for forwarding (not to our addresses), at buf[ipOff..), with `vnet` their header before the frame. */
  onForward: (buf: Uint8Array, ipOff: number, ipLen: number, vnet: boolean) => void = () => {};
  /** uplink6_dad_failed. */
  onEvent: (e: Uplink6Event) => void = () => {};

  constructor(readonly opts: Uplink6Options, readonly send: (buf: Uint8Array, off: number, len: number, vnet: boolean) => void) {
    this.linkLocal = linkLocalFromMac(opts.mac);
    this.mtu = opts.mtu ?? 1500;
    this.cache = new Neigh6Cache(opts.clock);
    if (opts.address !== undefined) {
      this.address.set(opts.address.subarray(0, 16));
      this.prefixLen = opts.prefixLen ?? 64;
      this.#state = 'tentative';
      this.#probe();
    }
    if (opts.gateway !== undefined) {
      this.#gateway.set(opts.gateway.subarray(0, 16));
      this.#hasGateway = true;
      this.#gatewayUntil = Infinity;
    }
    this.#wasReady = this.ready;
  }

  get mode(): 'static' | 'slaac' { return this.opts.address !== undefined ? 'static' : 'slaac'; }
  get addressState(): Uplink6AddressState { return this.#state; }

  /** The uplink's link came up (attached): a Router Solicitation, and DAD for a tentative address. */
  linkUp(): void {
    this.solicitRouter();
    if (this.#state === 'tentative') this.#probe();
  }

  /** A DAD probe for the tentative address: NS from :: to its solicited-node group, no SLLA (RFC 4862 5.4.2). */
  #probe(): void {
    const b = this.#nd;
    const ip = ETH_HLEN;
    const l4 = ip + IP6_HLEN;
    writeSolicitedNode(this.#group, 0, this.address, 0);
    const len = writeNs(b, l4, this.address, 0);
    writeEth(b, ip6MulticastMac(this.#group, 0), this.opts.mac, ETHERTYPE.IPV6);
    writeIp6(b, ip, len, IP6_NEXT.ICMPV6, 255, UNSPECIFIED, 0, this.#group, 0);
    writeIcmp6Checksum(b, ip, l4, len);
    this.counters.dadProbes++;
    this.#dadUntil = this.opts.clock() + DAD_WAIT_MS;
    this.send(b, 0, l4 + len, false);
  }

  /** An NA for, or another node's DAD probe of, the tentative address at f[t, t+16): it is taken. */
  #dadConflict(f: Uint8Array, off: number, how: 'na' | 'dad_probe'): void {
    this.#state = 'duplicate';
    this.#dadUntil = Infinity;
    this.#conflictMac = formatMacOf(srcMac(f, off));
    this.counters.dadConflicts++;
    this.onEvent({ event: 'uplink6_dad_failed', address: formatIp6(this.address), mac: this.#conflictMac, how });
  }
  get hasAddress(): boolean { return this.#hasAddress; }
  /** An address and a default router: packets can leave (Uplink6Port). */
  get ready(): boolean { return this.#hasAddress && this.#hasGateway; }

  #changed(): void {
    const r = this.ready;
    if (r === this.#wasReady) return;
    this.#wasReady = r;
    this.onReady(r);
  }

  /** Every second (the router's timer): the error bucket, the RA router's lifetime, a Router Solicitation while none is known. */
  tick(): void {
    this.#tokens = UPLINK6_ERRORS_PPS;
    const now = this.opts.clock();
    if (this.#state === 'tentative' && now >= this.#dadUntil) {
      this.#state = 'preferred';
      this.#hasAddress = true;
      this.#changed();
    }
    if (this.#hasGateway && now >= this.#gatewayUntil) {
      this.#hasGateway = false;
      this.#changed();
    }
    if (!this.#hasGateway && now - this.#lastRs >= RS_INTERVAL_MS) this.solicitRouter();
  }

  /** A Router Solicitation to all-routers (on every attach, and while no router is known). */
  solicitRouter(): void {
    this.#lastRs = this.opts.clock();
    const b = this.#nd;
    const ip = ETH_HLEN;
    const l4 = ip + IP6_HLEN;
    let n = writeRs(b, l4);
    n += writeOptLla(b, l4 + n, NDOPT.SLLA, this.opts.mac);
    writeEth(b, ip6MulticastMac(ALL_ROUTERS, 0), this.opts.mac, ETHERTYPE.IPV6);
    writeIp6(b, ip, n, IP6_NEXT.ICMPV6, 255, this.linkLocal, 0, ALL_ROUTERS, 0);
    writeIcmp6Checksum(b, ip, l4, n);
    this.counters.rsSent++;
    this.send(b, 0, l4 + n, false);
  }

  /** Uplink6Port: f[a, a+16) is one of our addresses. */
  isOurs(f: Uint8Array, a: number): boolean {
    return this.#ours(f, a);
  }

  #ours(f: Uint8Array, a: number): boolean {
    return ip6Equal(f, a, this.linkLocal, 0) || (this.#hasAddress && ip6Equal(f, a, this.address, 0));
  }

  /** An IPv6 frame at buf[off, off+len) from the uplink (its virtio_net_hdr before it when `hdr`). */
  input(buf: Uint8Array, off: number, len: number, hdr: boolean): void {
    this.counters.rxFrames++;
    const ip = off + ETH_HLEN;
    if (checkIpv6(buf, ip, len - ETH_HLEN) !== IPV6_OK || ip6IsMulticast(buf, ip + IP6.SRC)) {
      this.counters.malformed++;
      return;
    }
    const mac = dstMac(buf, off);
    const unicast = mac === this.opts.mac;
    if (srcMac(buf, off) === this.opts.mac) {
      this.counters.ignored++; // our own frame, seen by the packet socket (our DAD probe must not fail itself)
      return;
    }
    if (!unicast && Math.floor(mac / 0x100000000) !== 0x3333) {
      this.counters.ignored++; // promiscuous socket: others' traffic
      return;
    }
    const dst = ip + IP6.DST;
    const toUs = this.#ours(buf, dst);
    if (!toUs && !ip6IsMulticast(buf, dst)) {
      if (!unicast) {
        this.counters.ignored++;
        return;
      }
      this.counters.forwarded++;
      this.onForward(buf, ip, IP6_HLEN + ip6PayloadLen(buf, ip), hdr && vnetWork(buf, off - VNET_HDR_LEN));
      return;
    }
    if (!toUs && !(ip6Equal(buf, dst, ALL_NODES, 0) || ip6IsSolicitedNodeOf(buf, dst, this.linkLocal, 0) ||
      (this.#state !== 'none' && ip6IsSolicitedNodeOf(buf, dst, this.address, 0)))) {
      this.counters.ignored++;
      return;
    }
    const u = this.#upper;
    if (ip6Upper(buf, ip, u) !== IPV6_OK || u.proto !== IP6_NEXT.ICMPV6 || u.fragment || !checkIcmp6(u.len)) {
      this.counters.ignored++;
      return;
    }
    if (!icmp6SumOk(buf, ip, u.off, u.len)) {
      this.counters.malformed++;
      return;
    }
    const type = icmp6Type(buf, u.off);
    if (type === ICMP6_TYPE.ECHO_REQUEST && toUs) {
      this.#echoReply(buf, off, ip, u.off, u.len);
      return;
    }
    if (type !== ICMP6_TYPE.NEIGHBOR_SOLICIT && type !== ICMP6_TYPE.NEIGHBOR_ADVERT && type !== ICMP6_TYPE.ROUTER_ADVERT) {
      this.counters.ignored++;
      return;
    }
    if (checkNd(buf, ip, u.off, u.len) !== NDP_OK) {
      this.counters.malformed++;
      return;
    }
    // NS and NA carry a target (checkNd: long enough); RAs do not.
    const tentative = type !== ICMP6_TYPE.ROUTER_ADVERT && this.#state === 'tentative' && ip6Equal(buf, ndTarget(u.off), this.address, 0);
    if (type === ICMP6_TYPE.NEIGHBOR_ADVERT) {
      if (tentative) this.#dadConflict(buf, off, 'na');
      else this.#learn(buf, ndTarget(u.off), u.off, u.len, NDOPT.TLLA);
    } else if (type === ICMP6_TYPE.NEIGHBOR_SOLICIT) {
      const t = ndTarget(u.off);
      if (tentative) {
        // Another node's probe for it (RFC 4862 5.4.3); an NS from an address for our tentative one is not answered.
        if (ip6IsUnspecified(buf, ip + IP6.SRC)) this.#dadConflict(buf, off, 'dad_probe');
        else this.counters.ignored++;
        return;
      }
      if (!this.#ours(buf, t)) {
        this.counters.ignored++;
        return;
      }
      if (!ip6IsUnspecified(buf, ip + IP6.SRC)) this.#learn(buf, ip + IP6.SRC, u.off, u.len, NDOPT.SLLA);
      this.#neighborAdvert(buf, off, ip, u.off, u.len, t);
    } else {
      this.#onRa(buf, ip, u.off, u.len);
    }
  }

  #learn(f: Uint8Array, a: number, l4: number, n: number, opt: number): void {
    const p = ndOption(f, l4, n, opt);
    const mac = p >= 0 ? ndOptLla(f, p) : -1;
    if (mac < 0 || ip6IsMulticast(f, a)) return;
    for (const held of this.cache.learn(f, a, mac)) {
      writeEth(held, mac, this.opts.mac, ETHERTYPE.IPV6, VNET_HDR_LEN);
      this.send(held, VNET_HDR_LEN, held.length - VNET_HDR_LEN, vnetWork(held, 0));
    }
  }

  /** A Router Advertisement: the default router (when not configured) and, for SLAAC, the address. */
  #onRa(f: Uint8Array, ip: number, l4: number, n: number): void {
    this.counters.raReceived++;
    const src = ip + IP6.SRC;
    this.#learn(f, src, l4, n, NDOPT.SLLA);
    if (this.opts.gateway === undefined) {
      const life = ndRaLifetime(f, l4);
      if (life > 0) {
        this.#gateway.set(f.subarray(src, src + 16));
        this.#hasGateway = true;
        this.#gatewayUntil = this.opts.clock() + life * 1000;
      } else if (this.#hasGateway && ip6Equal(f, src, this.#gateway, 0)) {
        this.#hasGateway = false;
      }
    }
    if (this.opts.address === undefined && this.#state === 'none') this.#slaac(f, l4, n);
    this.#changed();
  }

  /** The first /64 with the A flag of the RA at f[l4, l4+n): our address, with the MAC's EUI-64 identifier. */
  #slaac(f: Uint8Array, l4: number, n: number): void {
    const end = l4 + n;
    for (let p = ndFirstOption(f, l4, n); p >= 0; p = ndNextOption(f, p, end)) {
      if (ndOptType(f, p) !== NDOPT.PREFIX || !ndPrefixOk(f, p)) continue;
      if (ndPrefixLen(f, p) !== 64 || (ndPrefixFlags(f, p) & ND_PREFIX_FLAG.AUTONOMOUS) === 0 || ndPrefixValid(f, p) === 0) continue;
      const at = ndPrefixAt(p);
      if (ip6IsLinkLocal(f, at) || ip6IsMulticast(f, at)) continue;
      this.address.set(f.subarray(at, at + 8));
      writeEui64(this.address, 8, this.opts.mac);
      this.prefixLen = 64;
      this.#state = 'tentative';
      this.#probe();
      return;
    }
  }

  #neighborAdvert(f: Uint8Array, off: number, ip: number, l4: number, n: number, t: number): void {
    const b = this.#nd;
    const oip = ETH_HLEN;
    const ol4 = oip + IP6_HLEN;
    const dad = ip6IsUnspecified(f, ip + IP6.SRC);
    const slla = ndOption(f, l4, n, NDOPT.SLLA);
    const lla = slla >= 0 ? ndOptLla(f, slla) : -1;
    let len = writeNa(b, ol4, ND_NA_FLAG.ROUTER | ND_NA_FLAG.OVERRIDE | (dad ? 0 : ND_NA_FLAG.SOLICITED), f, t);
    len += writeOptLla(b, ol4 + len, NDOPT.TLLA, this.opts.mac);
    writeEth(b, dad ? 0x333300000001 : lla >= 0 ? lla : srcMac(f, off), this.opts.mac, ETHERTYPE.IPV6);
    if (dad) writeIp6(b, oip, len, IP6_NEXT.ICMPV6, 255, f, t, ALL_NODES, 0);
    else writeIp6(b, oip, len, IP6_NEXT.ICMPV6, 255, f, t, f, ip + IP6.SRC);
    writeIcmp6Checksum(b, oip, ol4, len);
    this.counters.nsAnswered++;
    this.send(b, 0, ol4 + len, false);
  }

  #echoReply(f: Uint8Array, off: number, ip: number, l4: number, n: number): void {
    const b = this.#out;
    if (IP6_HLEN + n > b.length - ETH_HLEN) return;
    const oip = ETH_HLEN;
    const ol4 = oip + IP6_HLEN;
    b.set(f.subarray(l4, l4 + n), ol4);
    b[ol4 + ICMP6.TYPE] = ICMP6_TYPE.ECHO_REPLY;
    writeEth(b, srcMac(f, off), this.opts.mac, ETHERTYPE.IPV6);
    writeIp6(b, oip, n, IP6_NEXT.ICMPV6, 64, f, ip + IP6.DST, f, ip + IP6.SRC);
    writeIcmp6Checksum(b, oip, ol4, n);
    this.counters.echoReplies++;
    this.send(b, 0, ol4 + n, false);
  }

  /** Uplink6Port: sends the packet at buf[ipOff..) (ETH_HLEN of room before it) to its next hop. */
  send6(buf: Uint8Array, ipOff: number, ipLen: number, vnet: boolean): void {
    const dst = ipOff + IP6.DST;
    let hop: Uint8Array;
    let ho: number;
    if (this.#hasAddress && ip6InPrefix(buf, dst, this.address, 0, this.prefixLen)) {
      hop = buf;
      ho = dst;
    } else if (this.#hasGateway) {
      hop = this.#gateway;
      ho = 0;
    } else {
      this.counters.noRoute++;
      return;
    }
    const frameOff = ipOff - ETH_HLEN;
    const mac = this.cache.lookup(hop, ho);
    if (mac < 0) {
      if (this.cache.hold(hop, ho, holdCopy(buf, frameOff, ETH_HLEN + ipLen, vnet))) this.#solicit(hop, ho);
      return;
    }
    writeEth(buf, mac, this.opts.mac, ETHERTYPE.IPV6, frameOff);
    this.send(buf, frameOff, ETH_HLEN + ipLen, vnet);
  }

  /** Uplink6Port: an ICMPv6 error to the sender of the packet at pkt[ipOff..) (arrived on the uplink), from our address. */
  error(type: number, code: number, param: number, pkt: Uint8Array, ipOff: number): void {
    if (!this.#hasAddress || this.#tokens <= 0 || !mayAnswer(pkt, ipOff, type)) return;
    this.#tokens--;
    // Back to whoever handed us the packet (the upstream router, or the sender on the segment).
    const len = icmp6ErrorFrame(this.#out, srcMac(pkt, ipOff - ETH_HLEN), this.opts.mac, this.address, type, code, param, pkt, ipOff);
    this.send(this.#out, 0, len, false);
  }

  /** A Neighbor Solicitation for hop[ho, ho+16), from our link-local address. */
  #solicit(hop: Uint8Array, ho: number): void {
    const b = this.#nd;
    const ip = ETH_HLEN;
    const l4 = ip + IP6_HLEN;
    writeSolicitedNode(this.#group, 0, hop, ho);
    let len = writeNs(b, l4, hop, ho);
    len += writeOptLla(b, l4 + len, NDOPT.SLLA, this.opts.mac);
    writeEth(b, ip6MulticastMac(this.#group, 0), this.opts.mac, ETHERTYPE.IPV6);
    writeIp6(b, ip, len, IP6_NEXT.ICMPV6, 255, this.linkLocal, 0, this.#group, 0);
    writeIcmp6Checksum(b, ip, l4, len);
    this.send(b, 0, l4 + len, false);
  }

  describe(): Record<string, unknown> {
    return {
      address: this.#hasAddress ? `${formatIp6(this.address)}/${this.prefixLen}` : '',
      // DAD: tentative while probing; duplicate: the address (shown here) is another node's and is not used.
      dad: this.#state,
      ...(this.#state === 'tentative' || this.#state === 'duplicate' ? { tentativeAddress: `${formatIp6(this.address)}/${this.prefixLen}` } : {}),
      ...(this.#state === 'duplicate' ? { conflictMac: this.#conflictMac } : {}),
      linkLocal: formatIp6(this.linkLocal),
      mode: this.mode,
      gateway: this.#hasGateway ? formatIp6(this.#gateway) : '',
      gatewaySource: this.opts.gateway !== undefined ? 'static' : 'ra',
      mtu: this.mtu,
      neighbours: this.cache.size,
      counters: { ...this.counters },
    };
  }
}
