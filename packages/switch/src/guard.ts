/*
 * Tenant protection on ingress, per port: anti-spoofing (storm control, which
 * limits what the port floods, is forward.ts's StormBucket).
 *
 * The guards are checked by ingress after VLAN admission, before learning, so a
 * refused frame teaches the MAC table nothing:
 * - DHCP guard: IPv4 UDP 67 -> 68 (a DHCP server's reply), untagged or inside one
 *   802.1Q tag, is dropped ('dhcp_guard'). Only the router's own network port,
 *   which is never guarded, answers DHCP.
 * - IP source guard: an IPv4 frame's (source MAC, source IP) must be a binding of
 *   the port ('ip_source_guard'); an ARP frame's sender (SHA, SPA) must be a binding
 *   and SHA must be the frame's source MAC ('arp_spoof'). Allowed without a
 *   binding, so that clients can get a lease: IPv4 from 0.0.0.0 to UDP 67 from 68
 *   (DHCP client), and ARP with sender IP 0.0.0.0 (RFC 5227 probes) whose SHA is
 *   the source MAC. ARP that is not for IPv4 with 6-byte MACs (ptype, hlen, plen)
 *   or is truncated is 'arp_spoof'; the hardware type is not checked (Linux takes
 *   1 and 6 on Ethernet, and the sender pair is checked either way). Other
 *   ethertypes are not checked; IPv6 has guards of its own (guard6.ts: RA guard,
 *   DHCPv6 guard, first-come first-served IPv6 source guard).
 * Bindings are ip -> mac: leases the router's DHCP server ACKed to a client on the
 * port (added on ACK, removed on release, decline or expiry by the daemon) and the
 * port's configured ones. The check is one Map lookup per IPv4/ARP frame on a
 * guarded port; an unguarded port pays one boolean test.
 *
 * A binding also pins its MAC to the port (MacOwners, the MAC table's
 * `boundElsewhere`): while the port is up and guarded, no other port can learn or
 * move that MAC (fdb.ts "Bound MACs", 'bound_mac_conflict'). The IP source guard
 * alone would let a neighbour's MAC through as the source of a DHCP DISCOVER from
 * 0.0.0.0 or of any non-IPv4 frame, and the MAC table would then send the
 * neighbour's traffic to the spoofer until the neighbour spoke again. The binding
 * maps keep the index: every set, delete and clear updates it.
 */
import { Drop } from './drop.js';
import { guard6Check, IP6_BINDINGS_PER_PORT, type Guard6, type Ip6Bindings } from './guard6.js';
import * as arp from './wire/arp.js';
import * as ethernet from './wire/ethernet.js';
import * as ipv4 from './wire/ipv4.js';
import * as l4 from './wire/l4.js';

// guardCheck reads frames through the wire views as module constants, not imported
// bindings (a check at every use: wire/bytes.ts says why).
const { arpSha, arpSpa, checkArpIpv4 } = arp;
const { etherType, ETH_HLEN } = ethernet;
const { ip4FragOffset, ip4HeaderLen, ip4Proto, ip4Src, ip4Version, IP4_MIN_HLEN } = ipv4;
const { udpDport, udpSport } = l4;
const T_IPV4 = ethernet.ETHERTYPE.IPV4;
const T_ARP = ethernet.ETHERTYPE.ARP;
const T_IPV6 = ethernet.ETHERTYPE.IPV6;
const check6 = guard6Check;
const P_UDP = ipv4.IPPROTO.UDP;
/** The UDP ports are inside the frame when the length field's offset is. */
const UDP_PORTS = l4.UDP.LEN;

export const ADMIT_GUARD = -1;

/**
 * Which ports hold a MAC by a binding (per bridge): mac -> port id -> bindings.
 * Bindings of a port with two addresses for one MAC count twice.
 */
export class MacOwners {
  readonly #byMac = new Map<number, Map<number, number>>();

  add(mac: number, port: number): void {
    let ports = this.#byMac.get(mac);
    if (ports === undefined) this.#byMac.set(mac, ports = new Map());
    ports.set(port, (ports.get(port) ?? 0) + 1);
  }

  remove(mac: number, port: number): void {
    const ports = this.#byMac.get(mac);
    const n = ports?.get(port);
    if (ports === undefined || n === undefined) return;
    if (n > 1) ports.set(port, n - 1);
    else if (ports.delete(port) && ports.size === 0) this.#byMac.delete(mac);
  }

  /** Does a port other than `port` that `live` accepts hold `mac`? */
  elsewhere(mac: number, port: number, live: (port: number) => boolean): boolean {
    const ports = this.#byMac.get(mac);
    if (ports === undefined) return false;
    for (const p of ports.keys()) if (p !== port && live(p)) return true;
    return false;
  }

  /** The ports holding `mac` (tests, views). */
  holders(mac: number): number[] {
    return [...(this.#byMac.get(mac)?.keys() ?? [])];
  }
}

/** ip -> mac bindings that report every MAC they gain or lose (to keep MacOwners right). */
export class BindingMap extends Map<number, number> {
  constructor(private readonly changed: (mac: number, delta: 1 | -1) => void) {
    super();
  }

  override set(ip: number, mac: number): this {
    const prev = super.get(ip);
    if (prev === mac) return this;
    super.set(ip, mac);
    if (prev !== undefined) this.changed(prev, -1);
    this.changed(mac, 1);
    return this;
  }

  override delete(ip: number): boolean {
    const prev = super.get(ip);
    if (prev === undefined) return false;
    super.delete(ip);
    this.changed(prev, -1);
    return true;
  }

  override clear(): void {
    const macs = [...super.values()];
    super.clear();
    for (const mac of macs) this.changed(mac, -1);
  }
}

export interface GuardOptions {
  dhcp?: boolean;
  ipSource?: boolean;
  /** IPv6 (guard6.ts): RA guard, DHCPv6 guard, IPv6 source guard, and the addresses a port may own. */
  ra?: boolean;
  dhcpv6?: boolean;
  ipv6Source?: boolean;
  maxIpv6?: number;
}

export class PortGuard implements Guard6 {
  /** Any guard on: the only field the fast path reads for an unguarded port. */
  active = false;
  dhcp = false;
  ipSource = false;
  ra = false;
  dhcpv6 = false;
  ipv6Source = false;
  /** Either IPv4 guard on: what "guarded" means to the bindings' MAC pins and the DHCP server's port rules. */
  v4 = false;
  /** Any IPv6 guard on. */
  v6 = false;
  maxIpv6 = IP6_BINDINGS_PER_PORT;
  /** The bridge's IPv6 address owners, and this port's id there (guard6.ts). */
  ip6: Ip6Bindings | undefined;
  portId = -1;
  /** Leased bindings: ip -> mac. */
  readonly leased = new BindingMap((mac, d) => this.#count(mac, d));
  /** Configured bindings: ip -> mac. */
  readonly configured = new BindingMap((mac, d) => this.#count(mac, d));
  #owners: MacOwners | undefined;
  #port = -1;
  /**
   * Called after every set and every binding gained or lost (the bridge's flow cache
   * invalidation): a guard switched on in place must end the replays of decisions taken
   * while the port was unguarded, whoever sets it (Bridge.setPortGuard, or the daemon's
   * applyGuard on the port); a binding removed must end the replays of its source's
   * frames, and one added pins its MAC (other ports' learning changes). Every path that
   * changes bindings (leases bound and gone, applyGuard) goes through the BindingMaps,
   * whose `set` of the binding already there (a renewal's re-ACK) changes nothing and
   * calls nothing.
   */
  onChange: (() => void) | undefined = undefined;

  /**
   * Called before a set changes anything (the bridge's flow cache fold): frames replayed
   * under the old options are accounted as the old options would have (an IPv6 source
   * claim's last use is refreshed only while the IPv6 source guard is on).
   */
  beforeSet: (() => void) | undefined = undefined;

  set(opts: GuardOptions): void {
    this.beforeSet?.();
    this.dhcp = opts.dhcp === true;
    this.ipSource = opts.ipSource === true;
    this.ra = opts.ra === true;
    this.dhcpv6 = opts.dhcpv6 === true;
    this.ipv6Source = opts.ipv6Source === true;
    this.maxIpv6 = opts.maxIpv6 ?? IP6_BINDINGS_PER_PORT;
    this.v4 = this.dhcp || this.ipSource;
    this.v6 = this.ra || this.dhcpv6 || this.ipv6Source;
    this.active = this.v4 || this.v6;
    this.onChange?.();
  }

  bound(ip: number, mac: number): boolean {
    return this.leased.get(ip) === mac || this.configured.get(ip) === mac;
  }

  /** Counts this port's bindings, as port `port`, in its bridge's `owners` (the bridge adds the port); `ip6`: its IPv6 owners. */
  attach(owners: MacOwners, port: number, ip6?: Ip6Bindings): void {
    this.detach();
    this.#owners = owners;
    this.#port = port;
    this.ip6 = ip6;
    this.portId = port;
    for (const mac of this.leased.values()) owners.add(mac, port);
    for (const mac of this.configured.values()) owners.add(mac, port);
  }

  /** The port left its bridge: its bindings pin nothing any more, its IPv6 addresses are released. */
  detach(): void {
    this.ip6?.forgetPort(this.portId);
    this.ip6 = undefined;
    const owners = this.#owners;
    if (owners === undefined) return;
    for (const mac of this.leased.values()) owners.remove(mac, this.#port);
    for (const mac of this.configured.values()) owners.remove(mac, this.#port);
    this.#owners = undefined;
  }

  #count(mac: number, delta: 1 | -1): void {
    this.onChange?.();
    const owners = this.#owners;
    if (owners === undefined) return;
    if (delta > 0) owners.add(mac, this.#port);
    else owners.remove(mac, this.#port);
  }
}

/** DHCP's UDP ports (RFC 2131 4.1). */
const DHCP_SERVER_PORT = 67;
const DHCP_CLIENT_PORT = 68;

/**
 * The guards' verdict on a frame already admitted: ADMIT_GUARD or a Drop index.
 * `tagLen` is 4 when the frame carries one 802.1Q tag (ingress's meta.tagLen),
 * `src` its source MAC, `vid` its VLAN and `now` the bridge clock (IPv6's owners).
 */
export function guardCheck(g: PortGuard, buf: Uint8Array, off: number, len: number, tagLen: number, src: number, vid: number, now: number): number {
  const l3 = off + ETH_HLEN + tagLen;
  const end = off + len;
  if (l3 > end) return ADMIT_GUARD;
  // The EtherType right before L3: the tag's inner type when there is a tag.
  const type = etherType(buf, off + tagLen);
  if (type === T_IPV4) {
    if (l3 + IP4_MIN_HLEN > end || ip4Version(buf, l3) !== 4) return g.ipSource ? Drop.ip_source_guard : ADMIT_GUARD;
    const ihl = ip4HeaderLen(buf, l3);
    const l4Off = l3 + ihl;
    let sport = -1;
    let dport = -1;
    // The ports, when the first fragment of a UDP datagram holds them.
    if (ip4Proto(buf, l3) === P_UDP && ip4FragOffset(buf, l3) === 0 && ihl >= IP4_MIN_HLEN && l4Off + UDP_PORTS <= end) {
      sport = udpSport(buf, l4Off);
      dport = udpDport(buf, l4Off);
    }
    if (g.dhcp && sport === DHCP_SERVER_PORT && dport === DHCP_CLIENT_PORT) return Drop.dhcp_guard;
    if (g.ipSource) {
      const sip = ip4Src(buf, l3);
      if (sip === 0) return sport === DHCP_CLIENT_PORT && dport === DHCP_SERVER_PORT ? ADMIT_GUARD : Drop.ip_source_guard;
      if (!g.bound(sip, src)) return Drop.ip_source_guard;
    }
    return ADMIT_GUARD;
  }
  if (type === T_ARP && g.ipSource) {
    // ARP for IPv4 with 6-byte hardware addresses, whatever its hardware type: Linux
    // takes IEEE 802 (6) as well as Ethernet (1) on an Ethernet device, and either
    // way the sender pair read here is the one a neighbour would learn.
    if (!checkArpIpv4(buf, l3, end - l3)) return Drop.arp_spoof;
    const sha = arpSha(buf, l3);
    if (sha !== src) return Drop.arp_spoof;
    const spa = arpSpa(buf, l3);
    if (spa === 0) return ADMIT_GUARD;
    return g.bound(spa, sha) ? ADMIT_GUARD : Drop.arp_spoof;
  }
  if (type === T_IPV6 && g.v6) return check6(g, buf, l3, end, src, vid, now);
  return ADMIT_GUARD;
}
