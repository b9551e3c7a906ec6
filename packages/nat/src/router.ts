/*
 * A router: its networks (one per VLAN, each a port on a bridge), an optional
 * uplink, and NAPT between them. It decides where an IPv4 packet that is not for
 * the gateway itself goes:
 * - to another network of this router, if the config lets those two networks
 *   route between each other (default: isolated; refused with ICMP "communication
 *   administratively prohibited", as a firewall would answer);
 * - else out of the uplink through NAPT;
 * - else nowhere: ICMP network unreachable.
 * TTL is decremented on every routed packet; at 1 the sender gets ICMP time exceeded.
 * The ICMP errors the router sends spend a token of the sending port's
 * `icmpErrors` bucket first (limits.ts; Linux rate-limits its own the same way,
 * icmp_ratelimit): without one the packet is dropped and counted as before, but
 * not answered. The per-port limits of all networks are set with `setLimits`.
 *
 * With a host uplink (`host`, host/nat.ts) there is no interface and no NAPT:
 * what would leave through the uplink goes to the host NAT, which turns each flow
 * into a socket of the host, and what it hands back is sent to the VM's network;
 * IPv6 from a network with `ipv6` too (network.ts route6; the RAs then advertise
 * a default router). Without one, a host NAT of its own (`dnsTcp`) relays DNS
 * over TCP to the gateway to the upstream resolver and takes nothing else.
 *
 * From the uplink, packets for the public address go through NAPT's inbound side
 * to the inside host's network. Echo requests to the public address are answered.
 *
 * A packet may carry a virtio_net_hdr (`vnet`: a GSO super-frame or a
 * checksum-partial packet, TCP/UDP with the checksum at its place, see vnet.ts),
 * from a VM or from the uplink. It is routed and translated once, NAPT updating its
 * partial checksum, and leaves whole with its header whichever way it goes; what
 * the router answers itself (echo replies, ICMP errors, which quote only the
 * header and 8 bytes that are there) is complete.
 *
 * IPv6 is route6.ts's (the same interconnect rules, the uplink's IPv6 side,
 * hop limit, Packet Too Big); the router hands it its networks and tells each
 * network's RAs the router lifetime route6 decides. With a host uplink, route6's
 * way out is the host NAT (`route6.host`), whose IPv6 answers come back through
 * `toVm6` to the VM's network.
 *
 * One timer (1 s) drives NAPT expiry, DHCP lease expiry, re-attaching an
 * uplink whose interface is missing or was lost, and the uplink's own DHCP client
 * (whose address becomes NAPT's public address when bound, 0 when lost).
 */
import {
  IP6, ip6Equal, ip6InPrefix, ETH_HLEN, ICMP_TYPE, IPPROTO, formatIp4, icmpType, ip4Dst, ip4HeaderLen, ip4Proto, ip4TotalLen, srcMac,
} from '@vswitch/switch';
import { echoReplyInPlace, icmpErrorFrame } from './frames.js';
import { type NetworkEvent, type RouterNetwork } from './network.js';
import { Napt, NaptResult, ip4DecrementTtl } from './napt/translate.js';
import type { NaptTableOptions } from './napt/table.js';
import { Uplink, type UplinkEvent, type UplinkOptions } from './uplink.js';
import { HostNat, type HostNatOptions } from './host/nat.js';
import { LIMIT, type RateLimits } from './limits.js';
import { Route6 } from './route6.js';
import { Uplink6, type Uplink6Event, type Uplink6Options } from './uplink6.js';

export interface RouterOptions {
  name: string;
  /** Monotonic ms (NAPT timeouts, ARP). */
  clock: () => number;
  /** Wall-clock ms (DHCP leases). */
  wallClock?: () => number;
  uplink?: Omit<UplinkOptions, 'clock' | 'wallClock'>;
  /** IPv6 on the uplink (uplink6.ts): routed, and NPTv6 for networks with `ipv6.npt`. Needs `uplink`. */
  uplink6?: Omit<Uplink6Options, 'clock' | 'mac'>;
  /**
   * NAT through the host's own address (host/nat.ts) instead of an uplink
   * interface: flows leave as sockets of the host. `mtu`: the networks' MTU (1500).
   */
  host?: Omit<HostNatOptions, 'clock' | 'gso' | 'mtu' | 'isGateway' | 'gatewayFor' | 'toVm6' | 'isGateway6'> & { mtu?: number };
  napt?: NaptTableOptions;
  /**
   * Without a host uplink: DNS over TCP to the gateway (port 53), spliced to the
   * upstream resolver through a socket of the host, by a host NAT of its own that
   * takes nothing but TCP to the gateway (`dnsTcp`). `dns`/`resolvConf`: the
   * gateway DNS's upstream servers. Absent: TCP to the gateway is ignored.
   */
  dnsTcp?: { dns?: number[]; resolvConf?: string; mtu?: number };
  /** Pairs of network names that may route to each other. */
  interconnect?: [string, string][];
  /** Per-port rate limits of every network (limits.ts); absent: the networks' own (none by default). */
  limits?: Partial<RateLimits>;
  /** Events worth a log line (leases granted, leases expired); at most EVENT_BUDGET_PER_SEC a second. */
  onEvent?: (e: RouterEvent) => void;
}

/** Host NAT events (host/*.ts): resolvers changed or failed, ICMP unavailable, a forward that cannot listen... */
export type HostNatEvent = { event: `dns_${string}` | `icmp_${string}` | `forward_${string}` | `tcp_${string}` | `udp_${string}`; [k: string]: unknown };

export type RouterEvent = NetworkEvent | UplinkEvent | Uplink6Event | HostNatEvent | { event: 'dhcp_expired'; network: string; count: number } | { event: 'events_suppressed'; count: number };

export const ROUTER_EVENT_BUDGET_PER_SEC = 20;

export interface RouterCounters {
  routedBetween: number;
  toUplink: number;
  fromUplink: number;
  hairpinned: number;
  prohibited: number;
  noRoute: number;
  ttlExceeded: number;
  naptDropped: number;
  /** To and from the host NAT's sockets. */
  toHost: number;
  fromHost: number;
}

export class Router {
  readonly networks = new Map<string, RouterNetwork>();
  readonly uplink: Uplink | undefined;
  readonly napt: Napt | undefined;
  readonly counters: RouterCounters = {
    routedBetween: 0, toUplink: 0, fromUplink: 0, hairpinned: 0, prohibited: 0, noRoute: 0, ttlExceeded: 0, naptDropped: 0,
    toHost: 0, fromHost: 0,
  };
  readonly host: HostNat | undefined;
  /** IPv6 forwarding (route6.ts). */
  readonly route6: Route6;
  /** DNS over TCP to the gateway without a host uplink (RouterOptions.dnsTcp). */
  readonly dnsTcp: HostNat | undefined;
  readonly #pairs = new Set<string>();
  readonly #icmp = Buffer.alloc(600);
  #eventBudget = ROUTER_EVENT_BUDGET_PER_SEC;
  #suppressed = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(readonly opts: RouterOptions) {
    for (const [a, b] of opts.interconnect ?? []) {
      this.#pairs.add(`${a}\0${b}`);
      this.#pairs.add(`${b}\0${a}`);
    }
    this.route6 = new Route6(opts.clock, (a, b) => this.#pairs.has(`${a}\0${b}`));
    if (opts.uplink) {
      this.uplink = new Uplink({ ...opts.uplink, clock: opts.clock, wallClock: opts.wallClock });
      // With DHCP the uplink has no address yet (0: NAPT counts no_public_address until it is bound).
      const napt = new Napt({ publicIp: this.uplink.ip, table: opts.napt });
      this.napt = napt;
      this.uplink.onIp = (buf, ipOff, ipLen, vnet) => this.#fromUplink(buf, ipOff, ipLen, vnet);
      this.uplink.onAddress = (ip) => { napt.publicIp = ip; };
      this.uplink.onEvent = (e) => this.#event(e);
      if (opts.uplink6 !== undefined) {
        const uplink = this.uplink;
        const up6 = new Uplink6({ ...opts.uplink6, mac: opts.uplink.mac, clock: opts.clock }, (b, o, l, v) => uplink.sendFrame(b, o, l, v));
        up6.onForward = (buf, ipOff, ipLen, vnet) => this.route6.fromUplink(buf, ipOff, ipLen, vnet);
        up6.onReady = () => this.updateRouterLifetimes();
        up6.onEvent = (e) => this.#event(e);
        uplink.ipv6 = up6;
        this.route6.uplink = up6;
      }
    } else if (opts.host) {
      this.host = this.#hostNat(opts.host);
      // The host NAT is the IPv6 way out too: off-link IPv6 with no other route leaves as the host's sockets.
      const hostNat = this.host;
      this.route6.host = (from, buf, ipOff, ipLen, partial) => {
        this.counters.toHost++;
        hostNat.fromVm(buf, ipOff, ipLen, partial, from);
      };
    }
    if (this.host === undefined && opts.dnsTcp !== undefined) {
      // Sessions: a DNS-over-TCP client holds one connection per query or a few; 64 per VM address is plenty.
      this.dnsTcp = this.#hostNat({ ...opts.dnsTcp, icmp: false, budget: { maxSessions: 1024, maxPerHost: 64 } });
    }
  }

  /** A host NAT delivering to this router's networks (the host uplink's, or the gateway's DNS-over-TCP relay). */
  #hostNat(opts: NonNullable<RouterOptions['host']>): HostNat {
    const { mtu = 1500, ...host } = opts;
    return new HostNat({
      ...host,
      clock: this.opts.clock,
      mtu,
      // Router networks are offload ports: TCP towards the VMs goes as 64 KB super-frames.
      gso: true,
      isGateway: (ip) => { for (const n of this.networks.values()) if (n.ip === ip) return true; return false; },
      gatewayFor: (ip) => this.networkFor(ip)?.ip ?? 0,
      onEvent: (e) => this.#event(e as RouterEvent),
      isGateway6: (buf, off) => {
        for (const n of this.networks.values()) {
          const nd = n.nd;
          if (nd !== undefined && (ip6Equal(buf, off, nd.address, 0) || ip6Equal(buf, off, nd.linkLocal, 0))) return true;
        }
        return false;
      },
      toVm6: (buf, ipOff, ipLen, vnet, mac) => {
        const net = this.#networkFor6(buf, ipOff + IP6.DST);
        if (net === undefined) {
          this.counters.noRoute++;
          return true;
        }
        this.counters.fromHost++;
        // The neighbour cache (fed by ND) knows where the address lives now; else where it last sent from;
        // else (a port forward to a VM that has not spoken) ND resolves it, the packet held meanwhile.
        const known = this.route6.cacheOf(net)?.lookup(buf, ipOff + IP6.DST) ?? -1;
        if (known >= 0 || mac !== 0) net.sendIp6(buf, ipOff, ipLen, known >= 0 ? known : mac, vnet);
        else return this.route6.sendResolving(net, buf, ipOff, ipLen, vnet);
        return true;
      },
    }, (buf, ipOff, ipLen, vnet) => {
      const dst = ip4Dst(buf, ipOff);
      const net = this.networkFor(dst);
      if (net === undefined) {
        this.counters.noRoute++;
        return;
      }
      this.counters.fromHost++;
      net.sendIp(buf, ipOff, ipLen, dst, vnet);
    });
  }

  get name(): string { return this.opts.name; }

  addNetwork(net: RouterNetwork): void {
    this.networks.set(net.name, net);
    if (this.opts.limits !== undefined) net.limiter.set(this.opts.limits);
    net.opts.onEvent = (e) => this.#event(e);
    net.route = (from, buf, ipOff, ipLen, vnet) => this.#route(from, buf, ipOff, ipLen, vnet);
    const host = this.host;
    const local = host ?? this.dnsTcp;
    if (local !== undefined) net.local = (from, buf, ipOff, ipLen, vnet) => local.fromVm(buf, ipOff, ipLen, vnet, from);
    this.route6.addNetwork(net);
    this.updateRouterLifetimes();
  }

  /** Each IPv6 network's RA router lifetime, as route6 decides; a change is advertised at once (nd.ts changed). */
  updateRouterLifetimes(): void {
    for (const n of this.networks.values()) {
      const nd = n.nd;
      if (nd === undefined) continue;
      const life = this.route6.routerLifetime(n);
      if (life === nd.routerLifetime) continue;
      nd.routerLifetime = life;
      nd.changed();
    }
  }

  /** New per-port rate limits for every network, in place (config reload); counters are kept. */
  setLimits(limits: Partial<RateLimits>): void {
    this.opts.limits = { ...limits };
    for (const net of this.networks.values()) net.limiter.set(limits);
  }

  /** The per-port rate limits as applied (of the first network; setLimits keeps them equal). */
  get limits(): RateLimits | undefined {
    for (const net of this.networks.values()) return net.limiter.limits;
    return undefined;
  }

  start(): void {
    this.uplink?.start();
    this.host?.start();
    this.#timer ??= setInterval(() => this.tick(), 1000);
    this.#timer.unref();
  }

  /** Expiry of NAPT sessions and DHCP leases; called every second. */
  tick(): void {
    this.uplink?.tick();
    this.uplink?.ipv6?.tick();
    this.napt?.table.expire(this.opts.clock());
    this.host?.tick(this.opts.clock());
    this.dnsTcp?.tick(this.opts.clock());
    for (const net of this.networks.values()) net.limiter.tick(this.opts.clock());
    const wall = (this.opts.wallClock ?? Date.now)();
    for (const net of this.networks.values()) {
      const n = (net.opts.dhcp?.expire(wall) ?? 0) + (net.opts.dhcp6?.expire(wall) ?? 0);
      if (n > 0) this.#event({ event: 'dhcp_expired', network: net.name, count: n });
    }
    if (this.#suppressed > 0) this.opts.onEvent?.({ event: 'events_suppressed', count: this.#suppressed });
    this.#suppressed = 0;
    this.#eventBudget = ROUTER_EVENT_BUDGET_PER_SEC;
  }

  #event(e: RouterEvent): void {
    if (this.#eventBudget <= 0) {
      this.#suppressed++;
      return;
    }
    this.#eventBudget--;
    this.opts.onEvent?.(e);
  }

  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.uplink?.close();
    this.host?.close();
    this.dnsTcp?.close();
  }

  /** The network whose IPv6 prefix holds the address at buf[a, a+16). */
  #networkFor6(buf: Uint8Array, a: number): RouterNetwork | undefined {
    for (const net of this.networks.values()) {
      const nd = net.nd;
      if (nd !== undefined && ip6InPrefix(buf, a, nd.prefix, 0, nd.opts.prefixLen)) return net;
    }
    return undefined;
  }

  networkFor(ip: number): RouterNetwork | undefined {
    for (const net of this.networks.values()) if (net.contains(ip)) return net;
    return undefined;
  }

  /** `vnet`: the packet's virtio_net_hdr is before its Ethernet header and its checksum is partial (RouteFn). */
  #route(from: RouterNetwork, buf: Uint8Array, ipOff: number, ipLen: number, vnet: boolean): void {
    const dst = ip4Dst(buf, ipOff);
    const to = this.networkFor(dst);
    if (to !== undefined) {
      if (!this.#pairs.has(`${from.name}\0${to.name}`)) {
        this.counters.prohibited++;
        this.#icmpBack(from, buf, ipOff, ICMP_TYPE.DEST_UNREACH, 13);
        return;
      }
      if (!ip4DecrementTtl(buf, ipOff)) {
        this.counters.ttlExceeded++;
        this.#icmpBack(from, buf, ipOff, ICMP_TYPE.TIME_EXCEEDED, 0);
        return;
      }
      this.counters.routedBetween++;
      to.sendIp(buf, ipOff, ipLen, dst, vnet);
      return;
    }
    const host = this.host;
    if (host !== undefined) {
      if (!ip4DecrementTtl(buf, ipOff)) {
        this.counters.ttlExceeded++;
        this.#icmpBack(from, buf, ipOff, ICMP_TYPE.TIME_EXCEEDED, 0);
        return;
      }
      this.counters.toHost++;
      host.fromVm(buf, ipOff, ipLen, vnet, from);
      return;
    }
    const napt = this.napt;
    const uplink = this.uplink;
    if (napt === undefined || uplink === undefined) {
      this.counters.noRoute++;
      this.#icmpBack(from, buf, ipOff, ICMP_TYPE.DEST_UNREACH, 0);
      return;
    }
    if (!ip4DecrementTtl(buf, ipOff)) {
      this.counters.ttlExceeded++;
      this.#icmpBack(from, buf, ipOff, ICMP_TYPE.TIME_EXCEEDED, 0);
      return;
    }
    const r = napt.outbound(buf, ipOff, this.opts.clock(), vnet, from);
    if (r === NaptResult.ok) {
      this.counters.toUplink++;
      uplink.sendIp(buf, ipOff, ipLen, dst, vnet);
    } else if (r === NaptResult.hairpin) {
      const inside = this.networkFor(napt.insideIp);
      if (inside === undefined) {
        this.counters.noRoute++;
        return;
      }
      this.counters.hairpinned++;
      inside.sendIp(buf, ipOff, ipLen, napt.insideIp, vnet);
    } else if (r === NaptResult.local) {
      if (from.limit(LIMIT.icmp, srcMac(buf, ipOff - ETH_HLEN))) this.#echoReply(buf, ipOff, ipLen, (b, o, l) => from.sendIp(b, o, l, ip4Dst(b, o), false));
    } else {
      this.counters.naptDropped++;
    }
  }

  #fromUplink(buf: Uint8Array, ipOff: number, ipLen: number, vnet: boolean): void {
    const napt = this.napt!;
    const r = napt.inbound(buf, ipOff, this.opts.clock(), vnet);
    if (r === NaptResult.ok) {
      const net = this.networkFor(napt.insideIp);
      if (net === undefined || !ip4DecrementTtl(buf, ipOff)) {
        this.counters.noRoute++;
        return;
      }
      this.counters.fromUplink++;
      net.sendIp(buf, ipOff, ipLen, napt.insideIp, vnet);
    } else if (r === NaptResult.local) {
      this.#echoReply(buf, ipOff, ipLen, (b, o, l) => this.uplink!.sendIp(b, o, l, ip4Dst(b, o), false));
    } else {
      this.counters.naptDropped++;
    }
  }

  /** Turns an ICMP echo request around in place (complete checksums) and sends it back the way it came. */
  #echoReply(buf: Uint8Array, ipOff: number, ipLen: number, send: (b: Uint8Array, o: number, l: number) => void): void {
    if (ip4Proto(buf, ipOff) !== IPPROTO.ICMP || icmpType(buf, ipOff + ip4HeaderLen(buf, ipOff)) !== ICMP_TYPE.ECHO_REQUEST) return;
    echoReplyInPlace(buf, ipOff, ipLen);
    send(buf, ipOff, ipLen);
  }

  #icmpBack(from: RouterNetwork, buf: Uint8Array, ipOff: number, type: number, code: number): void {
    // Never answer an ICMP error with one (RFC 1122 3.2.2); an ICMP packet too short
    // to carry a type is not answered either (its "type" would be foreign bytes).
    if (ip4Proto(buf, ipOff) === IPPROTO.ICMP) {
      const hl = ip4HeaderLen(buf, ipOff);
      if (ip4TotalLen(buf, ipOff) <= hl || icmpType(buf, ipOff + hl) !== ICMP_TYPE.ECHO_REQUEST) return;
    }
    const sender = srcMac(buf, ipOff - ETH_HLEN);
    if (!from.limit(LIMIT.icmpErrors, sender)) return;
    const n = icmpErrorFrame(this.#icmp, sender, from.mac, from.ip, type, code, buf, ipOff);
    from.emit(this.#icmp, 0, n);
  }

  describe(): Record<string, unknown> {
    return {
      name: this.name,
      uplink: this.uplink?.describe(),
      networks: [...this.networks.values()].map((n) => ({ name: n.name, ...n.describe() })),
      publicAddress: this.uplink ? (this.uplink.ip ? formatIp4(this.uplink.ip) : '') : undefined,
      ipv6: this.route6.describe(),
      limits: this.limits,
    };
  }
}
