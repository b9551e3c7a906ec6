/*
 * One router network: the router's port on one VLAN of one bridge, with the
 * gateway's MAC and IPv4 address. It is a PortIo like a TAP, so the bridge floods
 * and forwards to it as to any VM. What it does with a frame:
 * - ARP: answers requests for the gateway address; learns from requests and
 *   replies that involve it (the ARP cache holds packets waiting for an answer);
 * - IPv4 to the gateway: ICMP echo is answered, UDP 67 goes to the DHCP server,
 *   with the bridge port the frame came from (`portOf` its source MAC, which the
 *   bridge learned just before), that port's guard state and the frame's source
 *   MAC (the server's port rules, dhcp/server.ts); its replies go back at once,
 *   except ACKs, which it hands back (`deliver`) once their lease is on disk;
 * - IPv4 to elsewhere: handed to the router (`route`), which decides between
 *   another network, NAPT to the uplink, or an ICMP error.
 * - IPv6 to the gateway's MAC for another address: to the router's IPv6
 *   forwarding (`route6`, route6.ts), with its virtio_net_hdr;
 * - IPv6 (with `ipv6` in its options): DHCPv6 client messages to the DHCPv6
 *   server (`dhcp6`, dhcp6/port.ts picks them out), the rest to nd.ts, the gateway's IPv6 side (its
 *   link-local and prefix addresses, Neighbor Discovery, echo, Router
 *   Advertisements); IPv6 group frames (33:33:...) reach it too, it picks its own.
 * Everything else is ignored and counted. When its router starts, the gateway
 * announces itself with a gratuitous ARP (`announce`), and starts advertising
 * its IPv6 prefix; `stopIpv6` sends the last RA (every lifetime 0) before the
 * network goes away.
 *
 * UDP to the gateway's port 53 goes to the router's DNS server (`dns`, dns/gateway.ts)
 * when it has one, which answers the network's own names and forwards the rest (or
 * hands them to `local`, the host NAT's forwarder). The same for UDP and TCP to
 * port 53 of the gateway's IPv6 addresses, taken before route6 and nd.ts see them.
 *
 * What the gateway does itself on a VM's behalf (ARP for it, echo replies, DHCP,
 * DNS, and the ICMP errors router.ts sends) spends a
 * token of the sending bridge port's bucket first (limits.ts, `limit`): one check
 * at each entry point; a frame without a token is dropped and counted
 * (`rateLimited`). Frames that pass through (routed, or flooded to us and ignored)
 * are not limited.
 *
 * The bridge calls `send` while it is forwarding a frame, perhaps in the middle of
 * a flood, so a frame arriving here is copied first (the bridge may still send the
 * same bytes to other ports, and NAPT rewrites in place). Answers go straight back
 * into the bridge, which holds them until its current frame is done.
 *
 * Offloads: the port takes frames with their virtio_net_hdr (`offload`, sendVnet),
 * so a VM's GSO super-frames and checksum-partial frames arrive whole; the header is
 * copied in front of the frame (VNET_HDR_LEN bytes of room in the receive buffer).
 * Routed, such a packet keeps its header when vnet.ts finds it of the one shape NAPT
 * can update (TCP/UDP, partial checksum at its place), and is emitted into the
 * bridge with it (`rx.batch(..., vnet)`), which sends it whole to offload ports and
 * segments it for the others. Frames for the gateway itself get their checksum
 * completed first; a GSO frame to the gateway is dropped (`offloadDropped`).
 */
import {
  ARP_REPLY, ARP_REQUEST, ETH_HLEN, formatIp6, ETHERTYPE, ICMP_TYPE, IPPROTO, IPV4_OK, MAC_BROADCAST, type PortIo, type PortRx, TCP,
  TCP_FLAG, arpOper, arpSha, arpSpa, arpTpa, checkArp, checkIcmp, checkIpv4, checkUdp, dstMac, etherType, formatIp4,
  formatMac, icmpType, ip4Dst, ip4HeaderLen, ip4IsFragment, ip4Proto, ip4TotalLen, isGroupAt, srcMac, tcpFlags, udpDport,
  udpLen, UDP, VNET_HDR_LEN, vnetGso, vnetWork, IP6, IP6_HLEN, IPV6_OK, checkIpv6, ip6Equal,
  ip6PayloadLen,
} from '@vswitch/switch';
import { ArpCache } from './arp-cache.js';
import { arpFrame, echoReplyInPlace, udpFrame, writeEth } from './frames.js';
import { DhcpMsg } from './dhcp/wire.js';
import { VNET_DROP, VNET_PARTIAL, holdCopy, vnetComplete, vnetPrepare } from './vnet.js';
import type { DhcpContext, DhcpPorts, DhcpReply, DhcpServer } from './dhcp/server.js';
import { LIMIT, RateLimiter, type RateLimitEvent, type RateLimits } from './limits.js';
import { Nd6, type Ipv6Options } from './nd.js';
import { Dhcp6Port } from './dhcp6/port.js';
import type { Dhcp6Server } from './dhcp6/server.js';

/** At most one log line per this many ms about failing lease-file writes (the rest are counted in it). */
export const STORE_WARN_INTERVAL_MS = 10_000;

export const MAX_FRAME = 65536 + 64;

/** The first two bytes of every IPv6 group MAC, 33:33 (RFC 2464 7). */
const IPV6_GROUP_MAC_HI = 0x3333;

export interface NetworkOptions {
  name: string;
  vlan: number;
  gatewayIp: number;
  prefix: number;
  mac: number;
  clock: () => number;
  /** Wall-clock ms for DHCP (leases outlive the process). */
  wallClock?: () => number;
  dhcp?: DhcpServer;
  /** Which bridge port a MAC was learned on, for per-port DHCP policy. */
  portOf?: (mac: number) => string;
  /** Guard state and liveness of bridge ports (by name), for the DHCP server's port rules. */
  ports?: DhcpPorts;
  /**
   * A lease was ACKed to `mac` on bridge port `port` (portOf; '' if unknown) until
   * `expiresAt` (wall-clock ms): the daemon binds it in that port's IP source guard.
   */
  onLease?: (port: string, mac: number, ip: number, expiresAt: number) => void;
  /** Lease granted or refused; the router bounds how many reach the log. */
  onEvent?: (e: NetworkEvent) => void;
  /** Per-port rate limits (limits.ts); absent: none (the daemon's config has the defaults). */
  limits?: Partial<RateLimits>;
  /** The gateway's IPv6 side (nd.ts); absent: IPv6 frames are ignored. */
  ipv6?: Ipv6Options;
  /** The DHCPv6 server (with `ipv6` only); its leases are bound through `onLease6`. */
  dhcp6?: Dhcp6Server;
  /** As `ports`, for the DHCPv6 server: guarded by the IPv6 guards (default: `ports`). */
  ports6?: DhcpPorts;
  onLease6?: (port: string, mac: number, address: Uint8Array, expiresAt: number) => void;
}

export type NetworkEvent =
  | { event: 'dhcp_ack'; network: string; ip: string; mac: string; port: string }
  | { event: 'dhcp_nak'; network: string; mac: string; port: string }
  | (RateLimitEvent & { network: string })
  /** Lease-file writes fail (no ACKs meanwhile): the first at once, then at most one per STORE_WARN_INTERVAL_MS. */
  | { event: 'dhcp_store_failed'; network: string; error: string; failures: number };

export interface NetworkCounters {
  rxFrames: number;
  txFrames: number;
  arpReplies: number;
  icmpEchoReplies: number;
  dhcpRequests: number;
  dhcpReplies: number;
  routed: number;
  ignored: number;
  malformed: number;
  /** Frames whose virtio_net_hdr could not be honoured: GSO to the gateway, GSO of a shape NAPT cannot update. */
  offloadDropped: number;
  /** Frames dropped by the per-port rate limits (by port and kind: `limiter`). */
  rateLimited: number;
}

/**
 * Where a network hands a packet that is not for the gateway. With `vnet`, its
 * virtio_net_hdr is at buf[ipOff-ETH_HLEN-VNET_HDR_LEN, ipOff-ETH_HLEN) and its L4
 * checksum is partial at the standard place (vnet.ts); without it the packet is complete.
 */
export type RouteFn = (from: RouterNetwork, buf: Uint8Array, ipOff: number, ipLen: number, vnet: boolean) => void;

/** Where a frame goes in the receive buffer: its virtio_net_hdr fits before it. */
const IN_OFF = VNET_HDR_LEN;

export class RouterNetwork implements PortIo {
  readonly kind = 'router' as const;
  readonly offload = true;
  readonly arp: ArpCache;
  readonly counters: NetworkCounters = {
    rxFrames: 0, txFrames: 0, arpReplies: 0, icmpEchoReplies: 0, dhcpRequests: 0, dhcpReplies: 0, routed: 0, ignored: 0, malformed: 0,
    offloadDropped: 0, rateLimited: 0,
  };
  /** Per-port token buckets on the work this network does for a VM (limits.ts). */
  readonly limiter: RateLimiter;
  readonly mask: number;
  readonly network: number;
  readonly broadcast: number;
  route: RouteFn = () => {};
  /**
   * TCP, and UDP other than DHCP, addressed to the gateway itself: the router's
   * host NAT takes them (its DNS forwarder, replies to host port forwards); unset,
   * they are ignored.
   */
  local: RouteFn | undefined;
  /**
   * UDP to the gateway's port 53 (after the port's DNS rate limit): the router's
   * DNS server (dns/gateway.ts) answers it or forwards it and returns true; false
   * hands it on to `local` (the host NAT's forwarder) as before. Unset: `local` only.
   */
  dns: ((net: RouterNetwork, f: Uint8Array, l4: number, udpLen: number) => boolean) | undefined;
  /**
   * IPv6 to the gateway's MAC (route6.ts): true when it forwarded (or refused) the
   * packet; false leaves it to nd.ts (one of the gateway's addresses, not routable).
   */
  route6: ((from: RouterNetwork, buf: Uint8Array, ipOff: number, len: number, vnet: boolean) => boolean) | undefined;
  /** The gateway's IPv6 side, when the network has IPv6. */
  readonly nd: Nd6 | undefined;
  /** The DHCPv6 server's link to this network, when it has one. */
  readonly dhcp6: Dhcp6Port | undefined;
  #raTimer: NodeJS.Timeout | undefined;

  #rx: PortRx | undefined;
  /** The received frame at IN_OFF, its virtio_net_hdr (if any) before it. */
  readonly #in = Buffer.alloc(IN_OFF + MAX_FRAME);
  /** The received frame, indexed from its first byte (what the local handlers read). */
  readonly #frame = this.#in.subarray(IN_OFF);
  /** One-frame batch for emitting a frame with its header. */
  readonly #offs = new Int32Array(1);
  readonly #lens = new Int32Array(1);
  readonly #out = Buffer.alloc(2048);
  readonly #dhcpOut = Buffer.alloc(1500);
  /** Reused for every request: the server reads it during `handle` only. */
  readonly #dhcpCtx: DhcpContext = { now: 0 };
  #storeFailures = 0;
  #storeWarnAt = -Infinity;

  constructor(readonly opts: NetworkOptions) {
    this.mask = opts.prefix === 0 ? 0 : (0xffffffff << (32 - opts.prefix)) >>> 0;
    this.network = (opts.gatewayIp & this.mask) >>> 0;
    this.broadcast = (this.network | ~this.mask) >>> 0;
    this.arp = new ArpCache(opts.clock);
    this.limiter = new RateLimiter(opts.limits, (e) => this.opts.onEvent?.({ ...e, network: this.name }));
    this.#dhcpCtx.ports = opts.ports;
    this.#attachDhcp(opts.dhcp);
    if (opts.ipv6 !== undefined) {
      const nd = new Nd6({
        mac: opts.mac,
        clock: opts.clock,
        emit: (buf, off, len) => this.emit(buf, off, len),
        limit: (kind, mac) => this.limit(kind, mac),
      }, opts.ipv6);
      nd.onSchedule = (at) => this.#armRa(at);
      this.nd = nd;
      if (opts.dhcp6 !== undefined) {
        this.dhcp6 = new Dhcp6Port({
          mac: opts.mac, linkLocal: nd.linkLocal, ports: opts.ports6 ?? opts.ports,
          emit: (buf, off, len) => this.emit(buf, off, len),
          limit: (kind, mac) => this.limit(kind, mac),
          portOfMac: (mac) => this.portOfMac(mac),
          wallClock: () => (this.opts.wallClock ?? Date.now)(),
          onLease: (port, mac, address, expiresAt) => this.opts.onLease6?.(port, mac, address, expiresAt),
        }, opts.dhcp6);
      }
    }
  }

  /** (Re)arms the RA timer for `at` (clock ms); one timer per network, unref'd. */
  #armRa(at: number): void {
    clearTimeout(this.#raTimer);
    this.#raTimer = undefined;
    if (!Number.isFinite(at)) return;
    const nd = this.nd!;
    this.#raTimer = setTimeout(() => {
      this.#raTimer = undefined;
      // A timer may fire a little before `at` on the router's clock: then it is armed again, never lost.
      const now = this.opts.clock();
      if (nd.poll(now) === at && at > now) this.#armRa(at);
    }, Math.max(0, at - this.opts.clock()));
    this.#raTimer.unref();
  }

  /** The last RA (lifetimes 0: prefix deprecated, DNS options withdrawn), while the port is still in its bridge. */
  stopIpv6(): void {
    this.nd?.stop();
    clearTimeout(this.#raTimer);
    this.#raTimer = undefined;
  }

  /**
   * Replaces the network's DHCP server (a reload that turns DHCP on or off, or
   * retries a lease file that failed); the old one is closed, writing what it holds.
   */
  setDhcp(dhcp: DhcpServer | undefined): void {
    if (this.opts.dhcp === dhcp) return;
    this.opts.dhcp?.close();
    this.opts.dhcp = dhcp;
    this.#attachDhcp(dhcp);
  }

  /** ACKs held for their lease write leave through this network once it is on disk. */
  #attachDhcp(dhcp: DhcpServer | undefined): void {
    dhcp?.attach({
      deliver: (r, payload) => this.#sendDhcp(r, payload, undefined),
      storeFailed: (err) => this.#storeFailed(err),
    });
  }

  get name(): string { return this.opts.name; }
  get mac(): number { return this.opts.mac; }
  get ip(): number { return this.opts.gatewayIp; }

  contains(ip: number): boolean {
    return ((ip & this.mask) >>> 0) === this.network;
  }

  /** The bridge port `srcMac` was learned on ('' when unknown). */
  portOfMac(srcMac: number): string {
    return this.opts.portOf?.(srcMac) ?? '';
  }

  /** The bridge port of the packet at buf[ipOff...), its Ethernet header before it (NAT's per-port budgets). */
  portAt(buf: Uint8Array, ipOff: number): string {
    return this.portOfMac(srcMac(buf, ipOff - ETH_HLEN));
  }

  /** Takes a token of `kind` (LIMIT) for the port `srcMac` came from; false: drop it (counted). */
  limit(kind: number, srcMac: number): boolean {
    const l = this.limiter;
    if (l.pps[kind] === 0) return true;
    if (l.allow(kind, this.portOfMac(srcMac), this.opts.clock())) return true;
    this.counters.rateLimited++;
    return false;
  }

  start(rx: PortRx): void {
    this.#rx = rx;
  }

  send(buf: Uint8Array, off: number, len: number): number {
    if (len > MAX_FRAME) return len;
    this.#in.set(buf.subarray(off, off + len), IN_OFF);
    this.#input(len, false);
    return len;
  }

  send2(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    if (alen + blen > MAX_FRAME) return alen + blen;
    this.#in.set(a.subarray(aoff, aoff + alen), IN_OFF);
    this.#in.set(b.subarray(boff, boff + blen), IN_OFF + alen);
    this.#input(alen + blen, false);
    return alen + blen;
  }

  sendVnet(buf: Uint8Array, off: number, len: number): number {
    if (len > MAX_FRAME) return len;
    this.#in.set(buf.subarray(off - VNET_HDR_LEN, off + len), IN_OFF - VNET_HDR_LEN);
    this.#input(len, vnetWork(this.#in, IN_OFF - VNET_HDR_LEN));
    return len;
  }

  send2Vnet(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    if (alen + blen > MAX_FRAME) return alen + blen;
    this.#in.set(a.subarray(aoff - VNET_HDR_LEN, aoff + alen), IN_OFF - VNET_HDR_LEN);
    this.#in.set(b.subarray(boff, boff + blen), IN_OFF + alen);
    this.#input(alen + blen, vnetWork(this.#in, IN_OFF - VNET_HDR_LEN));
    return alen + blen;
  }

  close(): void {
    clearTimeout(this.#raTimer);
    this.#raTimer = undefined;
    this.#rx = undefined;
  }

  describe(): Record<string, string | number | boolean> {
    return {
      network: this.name, address: `${formatIp4(this.ip)}/${this.opts.prefix}`,
      ...(this.nd !== undefined ? { ipv6: `${formatIp6(this.nd.address)}/${this.nd.opts.prefixLen}` } : {}),
    };
  }

  /**
   * Sends the IPv4 packet at buf[ipOff..ipOff+ipLen) to `nextHop` on this network;
   * there must be ETH_HLEN bytes of room before ipOff, and with `vnet` the packet's
   * virtio_net_hdr before those. Resolves the MAC by ARP, holding a copy of the
   * packet meanwhile (with its header, see vnet.ts `holdCopy`).
   */
  sendIp(buf: Uint8Array, ipOff: number, ipLen: number, nextHop: number, vnet = false): void {
    const frameOff = ipOff - ETH_HLEN;
    const mac = this.arp.lookup(nextHop);
    if (mac === undefined) {
      if (this.arp.hold(nextHop, holdCopy(buf, frameOff, ETH_HLEN + ipLen, vnet))) this.#arpRequest(nextHop);
      return;
    }
    writeEth(buf, mac, this.mac, ETHERTYPE.IPV4, frameOff);
    if (vnet) this.emitVnet(buf, frameOff, ETH_HLEN + ipLen);
    else this.emit(buf, frameOff, ETH_HLEN + ipLen);
  }

  /**
   * Gratuitous ARP for the gateway (as the uplink's announce): guests' ARP caches
   * take its MAC at once, also when that MAC changed across a restart or upgrade.
   */
  announce(): void {
    const n = arpFrame(this.#out, ARP_REQUEST, MAC_BROADCAST, this.mac, this.ip, 0, this.ip);
    this.emit(this.#out, 0, n);
    this.nd?.start();
  }

  /** Sends a frame into the bridge. */
  emit(buf: Uint8Array, off: number, len: number): void {
    const rx = this.#rx;
    if (rx === undefined) return;
    this.counters.txFrames++;
    rx.frame(buf, off, len);
  }

  /** Sends a frame with its virtio_net_hdr at buf[off-VNET_HDR_LEN, off) into the bridge. */
  emitVnet(buf: Uint8Array, off: number, len: number): void {
    const rx = this.#rx;
    if (rx === undefined) return;
    this.counters.txFrames++;
    this.#offs[0] = off;
    this.#lens[0] = len;
    rx.batch(buf, this.#offs, this.#lens, 1, true);
  }

  /** A held copy (holdCopy) whose next hop resolved to `mac`. */
  #emitHeld(copy: Uint8Array, mac: number): void {
    writeEth(copy, mac, this.mac, ETHERTYPE.IPV4, VNET_HDR_LEN);
    if (vnetWork(copy, 0)) this.emitVnet(copy, VNET_HDR_LEN, copy.length - VNET_HDR_LEN);
    else this.emit(copy, VNET_HDR_LEN, copy.length - VNET_HDR_LEN);
  }

  /** The frame at #in[IN_OFF, IN_OFF+len); `vnet`: its header asks for work. */
  #input(len: number, vnet: boolean): void {
    this.counters.rxFrames++;
    const f = this.#frame;
    if (len < ETH_HLEN) {
      this.counters.malformed++;
      return;
    }
    const type = etherType(f, 0);
    // Ours: to our MAC or broadcast, or an IPv6 group (nd.ts keeps the groups it is in).
    // Other unicast reaches us only by flooding.
    if (!isGroupAt(f, 0)) {
      if (dstMac(f, 0) !== this.mac) {
        this.counters.ignored++;
        return;
      }
    } else if (dstMac(f, 0) !== MAC_BROADCAST && !(type === ETHERTYPE.IPV6 && Math.floor(dstMac(f, 0) / 0x100000000) === IPV6_GROUP_MAC_HI)) {
      this.counters.ignored++;
      return;
    }
    if (type === ETHERTYPE.IPV6) {
      // DNS to the gateway's IPv6 addresses first (route6 leaves the gateway's own addresses to nd.ts anyway).
      if (this.nd !== undefined && !isGroupAt(f, 0) && this.#dns6(f, len, vnet)) return;
      // To our MAC for an address not ours: the router's IPv6 forwarding (route6.ts) takes it, header and all.
      if (this.route6 !== undefined && !isGroupAt(f, 0) && this.route6(this, this.#in, IN_OFF + ETH_HLEN, len - ETH_HLEN, vnet)) return;
      // GSO frames are TCP/UDP bulk, which the gateway does not serve over IPv6. A
      // checksum-partial one may be DHCPv6 (a client's UDP socket on a TAP): complete it first.
      if (this.nd !== undefined && !(vnet && vnetGso(this.#in, IN_OFF - VNET_HDR_LEN))) {
        if (vnet && !this.#completeLocal(len >= ETH_HLEN + IP6_HLEN ? Math.min(len, ETH_HLEN + IP6_HLEN + ip6PayloadLen(f, ETH_HLEN)) : len)) return;
        if (this.dhcp6 === undefined || !this.dhcp6.input(f, len)) this.nd.input(f, len);
      }
      else this.counters.ignored++;
      return;
    }
    if (type === ETHERTYPE.ARP) this.#onArp(f, len);
    else if (type === ETHERTYPE.IPV4) this.#onIpv4(f, len, vnet);
    else this.counters.ignored++;
  }

  #onArp(f: Uint8Array, len: number): void {
    const a = ETH_HLEN;
    if (!checkArp(f, a, len - a)) {
      this.counters.malformed++;
      return;
    }
    const oper = arpOper(f, a);
    const spa = arpSpa(f, a);
    const sha = arpSha(f, a);
    const tpa = arpTpa(f, a);
    // Limited: what we act on (a request for us, a reply); a VM's ARP for its neighbours is not.
    if ((oper === ARP_REQUEST ? tpa === this.ip : oper === ARP_REPLY) && !this.limit(LIMIT.arp, srcMac(f, 0))) return;
    // Learn senders in our subnet that talk to us (RFC 826 merge rule, limited to us).
    if (spa !== 0 && this.contains(spa) && spa !== this.ip && (tpa === this.ip || oper === ARP_REPLY)) {
      for (const pending of this.arp.learn(spa, sha)) this.#emitHeld(pending, sha);
    }
    if (oper === ARP_REQUEST && tpa === this.ip) {
      const n = arpFrame(this.#out, ARP_REPLY, sha, this.mac, this.ip, sha, spa);
      this.counters.arpReplies++;
      this.emit(this.#out, 0, n);
    } else if (oper !== ARP_REPLY) {
      this.counters.ignored++;
    }
  }

  #onIpv4(f: Uint8Array, len: number, vnet: boolean): void {
    const ip = ETH_HLEN;
    if (checkIpv4(f, ip, len - ip) !== IPV4_OK) {
      this.counters.malformed++;
      return;
    }
    const dst = ip4Dst(f, ip);
    const proto = ip4Proto(f, ip);
    const hl = ip4HeaderLen(f, ip);
    const total = ip4TotalLen(f, ip);
    const l4 = ip + hl;
    const l4len = total - hl;
    if (dst === this.ip || dst === 0xffffffff || dst === this.broadcast) {
      if (ip4IsFragment(f, ip)) {
        this.counters.ignored++;
        return;
      }
      if (dst === this.ip && this.dns !== undefined && proto === IPPROTO.UDP && checkUdp(f, l4, l4len) && udpDport(f, l4) === 53) {
        if (!this.limit(LIMIT.dns, srcMac(f, 0))) return;
        if (this.dns(this, f, l4, udpLen(f, l4))) return;
        if (this.local !== undefined) this.#hand(this.local, f, ip, total, vnet);
        else this.counters.ignored++;
        return;
      }
      if (dst === this.ip && this.local !== undefined && (proto === IPPROTO.TCP || (proto === IPPROTO.UDP && !(l4len >= 4 && udpDport(f, l4) === 67)))) {
        if (dnsQuery(f, l4, l4len, proto) && !this.limit(LIMIT.dns, srcMac(f, 0))) return;
        this.#hand(this.local, f, ip, total, vnet);
        return;
      }
      if (vnet && !this.#completeLocal(ETH_HLEN + total)) return;
      // The DHCP message is the UDP datagram's payload: UDP Length bounds it, not the IPv4 payload.
      if (proto === IPPROTO.UDP && checkUdp(f, l4, l4len) && udpDport(f, l4) === 67) {
        if (this.limit(LIMIT.dhcp, srcMac(f, 0))) this.#onDhcp(f, l4, udpLen(f, l4));
      } else if (dst === this.ip && proto === IPPROTO.ICMP && checkIcmp(l4len) && icmpType(f, l4) === ICMP_TYPE.ECHO_REQUEST) {
        if (this.limit(LIMIT.icmp, srcMac(f, 0))) this.#echoReply(f, ip, total);
      } else {
        this.counters.ignored++;
      }
      return;
    }
    if (this.contains(dst)) {
      // Same subnet: the bridge delivers it; we only saw it by flooding.
      this.counters.ignored++;
      return;
    }
    this.counters.routed++;
    this.#hand(this.route, f, ip, total, vnet);
  }

  /**
   * DNS to one of the gateway's IPv6 addresses (UDP or TCP port 53, no extension
   * headers), as for its IPv4 address: rate-limited per port, then UDP to `dns`
   * (which answers over IPv6, dns/gateway.ts), and what it hands back, and TCP, to
   * `local` (the host NAT's forwarder). True when taken (handled or dropped).
   */
  #dns6(f: Uint8Array, len: number, vnet: boolean): boolean {
    const nd = this.nd!;
    const ip = ETH_HLEN;
    if (checkIpv6(f, ip, len - ip) !== IPV6_OK) return false;
    const proto = f[ip + IP6.NEXT];
    const l4 = ip + IP6_HLEN;
    const l4len = ip6PayloadLen(f, ip);
    if ((proto !== IPPROTO.UDP && proto !== IPPROTO.TCP) || !dnsQuery6(f, l4, l4len, proto)) return false;
    if (!ip6Equal(f, ip + IP6.DST, nd.address, 0) && !ip6Equal(f, ip + IP6.DST, nd.linkLocal, 0)) return false;
    if (proto === IPPROTO.TCP && this.local === undefined) return false;
    if ((proto === IPPROTO.UDP || (tcpFlags(f, l4) & (TCP_FLAG.SYN | TCP_FLAG.ACK)) === TCP_FLAG.SYN) && !this.limit(LIMIT.dns, srcMac(f, 0))) return true;
    if (proto === IPPROTO.UDP) {
      if (vnet && !this.#completeLocal(ETH_HLEN + IP6_HLEN + l4len)) return true;
      if (!checkUdp(f, l4, l4len)) {
        this.counters.malformed++;
        return true;
      }
      if (this.dns !== undefined && this.dns(this, f, l4, udpLen(f, l4))) return true;
    }
    if (this.local !== undefined) this.#hand(this.local, f, ip, IP6_HLEN + l4len, vnet);
    else this.counters.ignored++;
    return true;
  }

  /**
   * Sends the IPv6 packet at buf[ipOff..ipOff+ipLen) to `mac` on this network
   * (ETH_HLEN bytes of room before ipOff; with `vnet` its virtio_net_hdr before those).
   */
  sendIp6(buf: Uint8Array, ipOff: number, ipLen: number, mac: number, vnet = false): void {
    const frameOff = ipOff - ETH_HLEN;
    writeEth(buf, mac, this.mac, ETHERTYPE.IPV6, frameOff);
    if (vnet) this.emitVnet(buf, frameOff, ETH_HLEN + ipLen);
    else this.emit(buf, frameOff, ETH_HLEN + ipLen);
  }

  /** Hands an IPv4 packet on, with its virtio_net_hdr kept when it has a usable one (vnet.ts). */
  #hand(to: RouteFn, f: Uint8Array, ip: number, total: number, vnet: boolean): void {
    let partial = false;
    if (vnet) {
      const v = vnetPrepare(this.#in, IN_OFF + ip, total);
      if (v === VNET_DROP) {
        this.counters.offloadDropped++;
        return;
      }
      partial = v === VNET_PARTIAL;
    }
    to(this, this.#in, IN_OFF + ip, total, partial);
  }

  /** A frame for the gateway whose header asks for work: complete its checksum, or drop a GSO frame (counted). */
  #completeLocal(len: number): boolean {
    if (vnetGso(this.#in, IN_OFF - VNET_HDR_LEN)) {
      this.counters.offloadDropped++;
      return false;
    }
    if (!vnetComplete(this.#in, IN_OFF, len)) {
      this.counters.malformed++;
      return false;
    }
    return true;
  }

  /** An echo request to the gateway (its destination), turned around in our private copy. */
  #echoReply(f: Uint8Array, ip: number, total: number): void {
    writeEth(f, srcMac(f, 0), this.mac, ETHERTYPE.IPV4);
    echoReplyInPlace(f, ip, total);
    this.counters.icmpEchoReplies++;
    this.emit(f, 0, ETH_HLEN + total);
  }

  #onDhcp(f: Uint8Array, l4: number, ulen: number): void {
    const dhcp = this.opts.dhcp;
    if (dhcp === undefined) {
      this.counters.ignored++;
      return;
    }
    this.counters.dhcpRequests++;
    const src = srcMac(f, 0);
    const port = this.portOfMac(src) || undefined;
    const ctx = this.#dhcpCtx;
    ctx.now = (this.opts.wallClock ?? Date.now)();
    ctx.port = port;
    ctx.srcMac = src;
    ctx.guarded = port !== undefined && this.opts.ports?.guarded(port) === true;
    const r = dhcp.handle(f, l4 + 8, ulen - 8, this.#dhcpOut, 0, ctx);
    // handled silently, refused (counted by the server), or an ACK held until its lease is on disk
    if (typeof r === 'string') return;
    this.#sendDhcp(r, this.#dhcpOut, port);
  }

  /**
   * Sends a server reply whose DHCP message is at payload[0, r.payloadLen); the
   * server resolved RFC 2131 4.1 addressing (unicast to ciaddr, broadcast, yiaddr
   * at chaddr, a NAK to the requester). An ACK also binds the lease on its port.
   */
  #sendDhcp(r: DhcpReply, payload: Uint8Array, port: string | undefined): void {
    const n = udpFrame(this.#out, r.dstMac, this.mac, this.ip, r.dstIp, 67, 68, payload, r.payloadLen);
    if (r.type === DhcpMsg.ACK && r.yiaddr !== 0) {
      this.arp.learn(r.yiaddr, r.chaddr);
      const lease = this.opts.dhcp?.lease(r.chaddr, r.yiaddr);
      const at = lease?.port ?? port ?? '';
      this.opts.onLease?.(at, r.chaddr, r.yiaddr, lease?.expiresAt ?? (this.opts.wallClock ?? Date.now)());
      this.opts.onEvent?.({ event: 'dhcp_ack', network: this.name, ip: formatIp4(r.yiaddr), mac: formatMac(r.chaddr), port: at });
    } else if (r.type === DhcpMsg.NAK) {
      this.opts.onEvent?.({ event: 'dhcp_nak', network: this.name, mac: formatMac(r.chaddr), port: port ?? '' });
    }
    this.counters.dhcpReplies++;
    this.emit(this.#out, 0, n);
  }

  #storeFailed(err: Error): void {
    this.#storeFailures++;
    const now = this.opts.clock();
    if (now - this.#storeWarnAt < STORE_WARN_INTERVAL_MS) return;
    this.#storeWarnAt = now;
    this.opts.onEvent?.({ event: 'dhcp_store_failed', network: this.name, error: err.message, failures: this.#storeFailures });
    this.#storeFailures = 0;
  }

  #arpRequest(target: number): void {
    const n = arpFrame(this.#out, ARP_REQUEST, MAC_BROADCAST, this.mac, this.ip, 0, target);
    this.emit(this.#out, 0, n);
  }
}

/**
 * A DNS query for the gateway's forwarder (host/dns.ts): a UDP datagram to port
 * 53, or a TCP SYN to port 53 (a new connection; its segments are TCP NAT's work).
 */
/** Any segment or datagram to port 53 (the TCP connection's later segments too: they must reach the same place). */
function dnsQuery6(f: Uint8Array, l4: number, l4len: number, proto: number): boolean {
  return l4len >= (proto === IPPROTO.UDP ? UDP.LEN + 2 : TCP.FLAGS + 1) && udpDport(f, l4) === 53;
}

function dnsQuery(f: Uint8Array, l4: number, l4len: number, proto: number): boolean {
  // The destination port is at the same place in TCP and UDP.
  if (l4len < UDP.LEN || udpDport(f, l4) !== 53) return false;
  return proto === IPPROTO.UDP ||
    (l4len > TCP.FLAGS && (tcpFlags(f, l4) & (TCP_FLAG.SYN | TCP_FLAG.ACK)) === TCP_FLAG.SYN);
}
