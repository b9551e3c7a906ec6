/*
 * The gateway's IPv6 side on one router network: its two addresses, Neighbor
 * Discovery for them, ICMPv6 echo, and Router Advertisements (RFC 4861, RFC 4862
 * SLAAC, RFC 8106 RDNSS/DNSSL).
 *
 * Addresses: the link-local fe80::/64 address from the gateway's MAC (modified
 * EUI-64) and the configured address in the network's /64. Nothing else is ours:
 * a Neighbor Solicitation for any other target (a VM's address, a DAD probe for
 * it) is never answered, so a VM's address is only ever defended by the VM.
 * - NS for one of ours: answered with an NA (R, S, O, our MAC as TLLA) to the
 *   solicitor, at the MAC it came from (its SLLA when it gave one); a DAD probe
 *   (source ::) for one of ours is defended with an NA to all-nodes (RFC 4862 5.4.3).
 * - Echo requests to either address are answered from that address.
 * - RS (to all-routers or to us): an RA to all-nodes, after a random delay of up
 *   to MAX_RA_DELAY_MS and never sooner than MIN_DELAY_BETWEEN_RAS_MS after the
 *   previous multicast RA (RFC 4861 6.2.6); one RA answers every RS that waits.
 * - Periodic RAs at a random interval in [MinRtrAdvInterval, MaxRtrAdvInterval]
 *   (`interval` is the max; the min is a third of it, RFC 4861 6.2.1), the first
 *   MAX_INITIAL_RAS of them at most MAX_INITIAL_INTERVAL_MS apart (6.2.4).
 * What the gateway does for a VM (answer an NS, an RS, an echo) spends a token of
 * that VM's port bucket first (`limit`, limits.ts: `nd` for NS and RS, `icmp` for
 * echo); without one the frame is dropped and counted by the network.
 *
 * The RA: the mode's flags (slaac: prefix A set, M/O clear; dhcpv6: M/O set, A
 * clear; both: M, O and A), the prefix on-link with its lifetimes, the MTU, RDNSS
 * and DNSSL when configured, our MAC as SLLA. Router Lifetime (`routerLifetime`)
 * is set by the router (route6.ts): non-zero when the network has somewhere to
 * route to (an interconnected IPv6 network, an uplink with IPv6), else 0: a
 * default router that drops everything would break a dual-stack guest's IPv6
 * (and its Happy Eyeballs) where no router at all leaves it on IPv4. So such
 * guests get an address on the link, reach each other and the gateway, and keep
 * their default route elsewhere (or none). `stop` sends a last RA with every lifetime 0
 * (router, prefix, RDNSS, DNSSL; RFC 4861 6.2.5): the prefix is deprecated and
 * the DNS options withdrawn when the network goes away or the daemon stops.
 *
 * Neighbours: an NS with a source link-layer address and an NA with a target
 * link-layer address (answers to the router's own NS, route6.ts) tell
 * `onNeighbour` where that address lives (the router's neighbour cache, neigh6.ts).
 *
 * Frames built here go out through `emit` into the bridge; everything is
 * written into one preallocated buffer (the RA is rebuilt in it each time: its
 * size is bounded by the config), nothing is allocated per frame.
 */
import {
  ETH_HLEN, ETHERTYPE, ICMP6, ICMP6_TYPE, IP6, IP6_HLEN, IP6_NEXT, IPV6_OK, ND_NA_FLAG, ND_PREFIX_FLAG, ND_RA_FLAG, NDOPT,
  NDP_OK, checkIcmp6, checkIpv6, checkNd, dnsNames, formatIp6, icmp6SumOk, icmp6Type, ip6Equal, ip6IsMulticast,
  ip6IsSolicitedNodeOf, ip6IsUnspecified, ip6Masked, ip6Upper, linkLocalFromMac, ndOptLla, ndOption, ndTarget, newIp6Upper,
  srcMac, writeIcmp6Checksum, writeIp6, writeNa, writeOptDnssl, writeOptLla, writeOptMtu, writeOptPrefix, writeOptRdnss,
  writeRa, ip6MulticastMac,
} from '@vswitch/switch';
import { writeEth } from './frames.js';
import { LIMIT } from './limits.js';

export type Ipv6Mode = 'slaac' | 'dhcpv6' | 'both';

export interface Ipv6Options {
  /** The gateway's address in the network's prefix (16 bytes). */
  address: Uint8Array;
  /** The prefix length: 64 (SLAAC needs it, RFC 4862 5.5.3). */
  prefixLen: number;
  mode: Ipv6Mode;
  /** MaxRtrAdvInterval, seconds (4-1800). */
  intervalSec: number;
  /** Prefix lifetimes in seconds (0xffffffff: infinity). */
  validLifetime: number;
  preferredLifetime: number;
  /** The MTU option; absent: none. It is also the network's MTU for routed IPv6 (route6.ts: Packet Too Big). */
  mtu?: number;
  /** The outside /64 (16 bytes) the network appears as through the uplink (NPTv6, npt6.ts); absent: routed as is. */
  npt?: Uint8Array;
  /** RDNSS addresses (16 bytes each) and DNSSL domains; empty: no option. */
  rdnss: Uint8Array[];
  dnssl: string[];
  /** Lifetime of RDNSS and DNSSL, seconds (default: 3 x interval, RFC 8106 5.1's advice). */
  dnsLifetime?: number;
}

/** What the gateway's IPv6 side needs of its network. */
export interface Nd6Host {
  readonly mac: number;
  clock(): number;
  emit(buf: Uint8Array, off: number, len: number): void;
  /** Takes a token of `kind` (LIMIT) for the port `srcMac` came from; false: drop (counted by the network). */
  limit(kind: number, srcMac: number): boolean;
}

export interface Nd6Counters {
  rxFrames: number;
  /** RAs sent: periodic, answers to RS, and the last one (lifetimes 0). */
  raSent: number;
  rsReceived: number;
  /** NS for one of our addresses answered (DAD defence included). */
  nsAnswered: number;
  echoReplies: number;
  /** Neighbor Advertisements to us (answers to the router's NS, route6.ts), valid. */
  naReceived: number;
  /** Not for us (another target, a multicast group we are not in, a message type the gateway does not serve). */
  ignored: number;
  /** Failed a check (header, extension chain, ND validity, checksum). */
  malformed: number;
}

/** RFC 4861 10: router constants. */
export const MAX_RA_DELAY_MS = 500;
export const MIN_DELAY_BETWEEN_RAS_MS = 3000;
export const MAX_INITIAL_RAS = 3;
export const MAX_INITIAL_INTERVAL_MS = 16_000;
const HOP_LIMIT_ND = 255;
/** Cur Hop Limit advertised, and the hop limit of the gateway's own packets. */
const HOP_LIMIT = 64;

const ALL_NODES = Uint8Array.of(0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS = Uint8Array.of(0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2);
const ALL_NODES_MAC = 0x333300000001;

export class Nd6 {
  readonly counters: Nd6Counters = { rxFrames: 0, raSent: 0, rsReceived: 0, nsAnswered: 0, echoReplies: 0, naReceived: 0, ignored: 0, malformed: 0 };
  readonly linkLocal: Uint8Array;
  readonly address: Uint8Array;
  readonly prefix: Uint8Array;
  /** When the next RA is due (clock ms), or Infinity when not started or stopped. */
  nextRaAt = Infinity;
  #lastMulticastRa = -Infinity;
  #initialLeft = MAX_INITIAL_RAS;
  #stopped = false;
  #started = false;
  readonly #out = Buffer.alloc(1600);
  readonly #upper = newIp6Upper();
  readonly #dnssl: Uint8Array | undefined;
  /** Scheduling of the RA timer (the network arms it); tests drive `poll` themselves. */
  onSchedule: ((at: number) => void) | undefined;
  readonly #random: () => number;
  /** The RA's Router Lifetime, seconds (route6.ts decides; 0: not a default router). */
  routerLifetime = 0;
  /** A neighbour's address f[a, a+16) is at `mac` (from an NS's SLLA or an NA's TLLA). */
  onNeighbour: ((f: Uint8Array, a: number, mac: number) => void) | undefined;

  constructor(readonly host: Nd6Host, readonly opts: Ipv6Options, random: () => number = Math.random) {
    this.linkLocal = linkLocalFromMac(host.mac);
    this.address = opts.address.slice(0, 16);
    this.prefix = ip6Masked(opts.address, opts.prefixLen);
    this.#random = random;
    const wire = opts.dnssl.length > 0 ? dnsNames(opts.dnssl) : undefined;
    if (opts.dnssl.length > 0 && wire === undefined) throw new Error(`bad DNSSL domain in ${opts.dnssl.join(', ')}`);
    this.#dnssl = wire;
    if (raSize(opts, wire?.length ?? 0) > this.#out.length) throw new Error('the RA would not fit in one frame');
  }

  /** The IPv6 frame f[0, len) (Ethernet header at 0, no VLAN tag: the router port is an access port). */
  input(f: Uint8Array, len: number): void {
    this.counters.rxFrames++;
    const ip = ETH_HLEN;
    // A multicast source is never valid (RFC 4291 2.7): nothing could be answered to it.
    if (checkIpv6(f, ip, len - ip) !== IPV6_OK || ip6IsMulticast(f, ip + IP6.SRC)) {
      this.counters.malformed++;
      return;
    }
    const dst = ip + IP6.DST;
    const toUs = ip6Equal(f, dst, this.linkLocal, 0) || ip6Equal(f, dst, this.address, 0);
    if (!toUs && !(ip6IsMulticast(f, dst) && this.#ourGroup(f, dst))) {
      this.counters.ignored++;
      return;
    }
    const u = this.#upper;
    if (ip6Upper(f, ip, u) !== IPV6_OK || u.proto !== IP6_NEXT.ICMPV6 || u.fragment || !checkIcmp6(u.len)) {
      this.counters.ignored++;
      return;
    }
    if (!icmp6SumOk(f, ip, u.off, u.len)) {
      this.counters.malformed++;
      return;
    }
    const type = icmp6Type(f, u.off);
    if (type === ICMP6_TYPE.ECHO_REQUEST) {
      if (!toUs) this.counters.ignored++;
      else if (this.host.limit(LIMIT.icmp, srcMac(f, 0))) this.#echoReply(f, ip, u.off, u.len);
      return;
    }
    if (type === ICMP6_TYPE.NEIGHBOR_ADVERT) {
      if (checkNd(f, ip, u.off, u.len) !== NDP_OK) {
        this.counters.malformed++;
        return;
      }
      this.counters.naReceived++;
      this.#learn(f, ndTarget(u.off), u.off, u.len, NDOPT.TLLA);
      return;
    }
    if (type !== ICMP6_TYPE.NEIGHBOR_SOLICIT && type !== ICMP6_TYPE.ROUTER_SOLICIT) {
      this.counters.ignored++;
      return;
    }
    if (checkNd(f, ip, u.off, u.len) !== NDP_OK) {
      this.counters.malformed++;
      return;
    }
    if (type === ICMP6_TYPE.NEIGHBOR_SOLICIT) {
      const t = ndTarget(u.off);
      const ours = ip6Equal(f, t, this.linkLocal, 0) ? this.linkLocal : ip6Equal(f, t, this.address, 0) ? this.address : undefined;
      if (ours === undefined) {
        this.counters.ignored++;
        return;
      }
      if (!this.host.limit(LIMIT.nd, srcMac(f, 0))) return;
      if (!ip6IsUnspecified(f, ip + IP6.SRC)) this.#learn(f, ip + IP6.SRC, u.off, u.len, NDOPT.SLLA);
      this.#neighborAdvert(f, ip, u.off, u.len, ours);
      return;
    }
    // Router Solicitation.
    if (!this.host.limit(LIMIT.nd, srcMac(f, 0))) return;
    this.counters.rsReceived++;
    if (this.#stopped) return;
    const now = this.host.clock();
    const at = Math.max(now + this.#random() * MAX_RA_DELAY_MS, this.#lastMulticastRa + MIN_DELAY_BETWEEN_RAS_MS);
    if (at < this.nextRaAt) this.#schedule(at);
  }

  /** Tells onNeighbour that f[a, a+16) is at the link-layer address of option `opt` of the ND message at f[l4, l4+n), if it has one. */
  #learn(f: Uint8Array, a: number, l4: number, n: number, opt: number): void {
    if (this.onNeighbour === undefined || ip6IsMulticast(f, a)) return;
    const p = ndOption(f, l4, n, opt);
    const mac = p >= 0 ? ndOptLla(f, p) : -1;
    if (mac >= 0) this.onNeighbour(f, a, mac);
  }

  /** f[a, a+16) is one of the gateway's two addresses. */
  isOurs(f: Uint8Array, a: number): boolean {
    return ip6Equal(f, a, this.linkLocal, 0) || ip6Equal(f, a, this.address, 0);
  }

  /** All-nodes, all-routers, or the solicited-node group of one of our addresses. */
  #ourGroup(f: Uint8Array, a: number): boolean {
    return ip6Equal(f, a, ALL_NODES, 0) || ip6Equal(f, a, ALL_ROUTERS, 0) ||
      ip6IsSolicitedNodeOf(f, a, this.linkLocal, 0) || ip6IsSolicitedNodeOf(f, a, this.address, 0);
  }

  /** Starts advertising: an RA now, then the initial ones, then periodic. */
  start(): void {
    if (this.#stopped) return;
    this.#started = true;
    this.#initialLeft = MAX_INITIAL_RAS;
    this.#schedule(this.host.clock());
  }

  /**
   * What the RA says changed (the router lifetime): advertise it now and, as at
   * start, a few more soon (RFC 4861 6.2.4), if advertising at all.
   */
  changed(): void {
    if (!this.#started || this.#stopped) return;
    this.#initialLeft = MAX_INITIAL_RAS;
    const at = Math.max(this.host.clock(), this.#lastMulticastRa + MIN_DELAY_BETWEEN_RAS_MS);
    if (at < this.nextRaAt) this.#schedule(at);
  }

  /** Sends the RA if one is due at `now`; returns when the next is due (Infinity: none). */
  poll(now: number): number {
    if (this.#stopped || now < this.nextRaAt) return this.nextRaAt;
    this.#sendRa(false);
    this.#lastMulticastRa = now;
    const max = this.opts.intervalSec * 1000;
    const min = this.opts.intervalSec >= 9 ? max / 3 : max * 0.75;
    let next = now + min + this.#random() * (max - min);
    if (this.#initialLeft > 0) {
      this.#initialLeft--;
      next = Math.min(next, now + MAX_INITIAL_INTERVAL_MS);
    }
    this.nextRaAt = next;
    this.onSchedule?.(next);
    return next;
  }

  /** The network goes away: the last RA, with every lifetime 0 (if it ever advertised); no more after it. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.nextRaAt = Infinity;
    if (this.#started) this.#sendRa(true);
  }

  get stopped(): boolean { return this.#stopped; }

  #schedule(at: number): void {
    this.nextRaAt = at;
    this.onSchedule?.(at);
  }

  /** Writes the RA to all-nodes into #out and emits it. */
  #sendRa(final: boolean): void {
    const o = this.opts;
    const b = this.#out;
    const ip = ETH_HLEN;
    const l4 = ip + IP6_HLEN;
    const managed = o.mode !== 'slaac';
    let n = writeRa(b, l4, HOP_LIMIT, managed ? ND_RA_FLAG.MANAGED | ND_RA_FLAG.OTHER : 0, final ? 0 : this.routerLifetime, 0, 0);
    n += writeOptLla(b, l4 + n, NDOPT.SLLA, this.host.mac);
    if (o.mtu !== undefined) n += writeOptMtu(b, l4 + n, o.mtu);
    const flags = ND_PREFIX_FLAG.ON_LINK | (o.mode !== 'dhcpv6' ? ND_PREFIX_FLAG.AUTONOMOUS : 0);
    n += writeOptPrefix(b, l4 + n, o.prefixLen, flags, final ? 0 : o.validLifetime, final ? 0 : o.preferredLifetime, this.prefix, 0);
    const dnsLife = final ? 0 : this.dnsLifetime;
    if (o.rdnss.length > 0) n += writeOptRdnss(b, l4 + n, dnsLife, o.rdnss);
    if (this.#dnssl !== undefined) n += writeOptDnssl(b, l4 + n, dnsLife, this.#dnssl);
    writeEth(b, ALL_NODES_MAC, this.host.mac, ETHERTYPE.IPV6);
    writeIp6(b, ip, n, IP6_NEXT.ICMPV6, HOP_LIMIT_ND, this.linkLocal, 0, ALL_NODES, 0);
    writeIcmp6Checksum(b, ip, l4, n);
    this.counters.raSent++;
    this.host.emit(b, 0, l4 + n);
  }

  get dnsLifetime(): number {
    return this.opts.dnsLifetime ?? Math.min(0xffffffff, this.opts.intervalSec * 3);
  }

  /** An NA for `ours` in answer to the NS at f[l4, l4+n) of the packet at ip. */
  #neighborAdvert(f: Uint8Array, ip: number, l4: number, n: number, ours: Uint8Array): void {
    const b = this.#out;
    const oip = ETH_HLEN;
    const ol4 = oip + IP6_HLEN;
    const dad = ip6IsUnspecified(f, ip + IP6.SRC);
    // A DAD probe gets its answer at all-nodes (the prober has no address yet); else the solicitor, at its SLLA if given.
    let ethDst: number;
    if (dad) {
      ethDst = ALL_NODES_MAC;
    } else {
      const slla = ndOption(f, l4, n, NDOPT.SLLA);
      const mac = slla >= 0 ? ndOptLla(f, slla) : -1;
      ethDst = mac >= 0 ? mac : srcMac(f, 0);
    }
    let len = writeNa(b, ol4, ND_NA_FLAG.ROUTER | ND_NA_FLAG.OVERRIDE | (dad ? 0 : ND_NA_FLAG.SOLICITED), ours, 0);
    len += writeOptLla(b, ol4 + len, NDOPT.TLLA, this.host.mac);
    writeEth(b, ethDst, this.host.mac, ETHERTYPE.IPV6);
    if (dad) writeIp6(b, oip, len, IP6_NEXT.ICMPV6, HOP_LIMIT_ND, ours, 0, ALL_NODES, 0);
    else writeIp6(b, oip, len, IP6_NEXT.ICMPV6, HOP_LIMIT_ND, ours, 0, f, ip + IP6.SRC);
    writeIcmp6Checksum(b, oip, ol4, len);
    this.counters.nsAnswered++;
    this.host.emit(b, 0, ol4 + len);
  }

  /** An echo reply from the address pinged to the sender, with the request's identifier, sequence and data. */
  #echoReply(f: Uint8Array, ip: number, l4: number, n: number): void {
    const b = this.#out;
    if (IP6_HLEN + n > b.length - ETH_HLEN) {
      this.counters.ignored++;
      return;
    }
    const oip = ETH_HLEN;
    const ol4 = oip + IP6_HLEN;
    b.set(f.subarray(l4, l4 + n), ol4);
    b[ol4 + ICMP6.TYPE] = ICMP6_TYPE.ECHO_REPLY;
    writeEth(b, srcMac(f, 0), this.host.mac, ETHERTYPE.IPV6);
    writeIp6(b, oip, n, IP6_NEXT.ICMPV6, HOP_LIMIT, f, ip + IP6.DST, f, ip + IP6.SRC);
    writeIcmp6Checksum(b, oip, ol4, n);
    this.counters.echoReplies++;
    this.host.emit(b, 0, ol4 + n);
  }

  describe(): Record<string, unknown> {
    return {
      linkLocal: formatIp6(this.linkLocal),
      address: `${formatIp6(this.address)}/${this.opts.prefixLen}`,
      prefix: `${formatIp6(this.prefix)}/${this.opts.prefixLen}`,
      mode: this.opts.mode,
      routerLifetime: this.routerLifetime,
      raInterval: this.opts.intervalSec,
      ...(this.opts.mtu !== undefined ? { mtu: this.opts.mtu } : {}),
      rdnss: this.opts.rdnss.map((a) => formatIp6(a)),
      dnssl: this.opts.dnssl,
    };
  }
}

/** The RA's length for these options and `dnsslWire` bytes of DNSSL names. */
function raSize(o: Ipv6Options, dnsslWire: number): number {
  return ETH_HLEN + IP6_HLEN + 16 + 8 + (o.mtu !== undefined ? 8 : 0) + 32 + (o.rdnss.length > 0 ? 8 + 16 * o.rdnss.length : 0) +
    (dnsslWire > 0 ? 8 + ((dnsslWire + 7) & ~7) : 0);
}

/** The Ethernet address of the IPv6 group `a` (16 bytes): for tests and views. */
export const groupMac = (a: Uint8Array): number => ip6MulticastMac(a, 0);
