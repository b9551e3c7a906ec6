/*
 * Routers from config: each network becomes a RouterNetwork port on its bridge
 * (an access port in its VLAN, as a VM would be), with a DHCP server whose leases
 * live in the state directory; the uplink and NAPT come from the router's own
 * section. Port forwards from the config are fixed; forwards added at runtime are
 * kept in `forwards-<router>.json` in the state directory and come back at start.
 * An uplink with `address: dhcp` keeps its last lease in `uplink-<router>.json`
 * there, so that after a restart it asks for the same address (INIT-REBOOT).
 *
 * A DHCP server learns from the bridge which port a request came from, whether
 * that port is guarded and whether a lease's port is still up (dhcp/server.ts:
 * leases belong to (port, MAC)). Closing a router writes its lease files before
 * anything else (a store reopened by a reload must read everything).
 *
 * Degrade, don't die: a lease file that cannot be trusted (leases.ts
 * LeaseFileError: corrupt, symlinked...) disables that network's DHCP server only
 * (`dhcpFailed`): the gateway keeps routing for hosts that have addresses, no
 * address is handed out twice, and guarded ports of that VLAN stay guarded
 * (guards.ts counts the network as served, so they fail closed). A forwards file
 * that cannot be read disables the runtime forwards only (`forwardsFailed`): the
 * config's forwards still work, `nat forward add|del` is refused rather than
 * overwrite the file. Both are logged, shown in `router show`, exported as
 * vswitch_router_failed, and retried by every reload.
 *
 * Edits in place (`checkEdit` validates, `edit` applies; service.ts decides what
 * needs a rebuild, state.ts routerDiff): DHCP sections (options, pools,
 * reservations, lease time, maxLeasesPerPort; a DHCP server added or removed),
 * the config's forwards and the per-port rate limits. Leases, NAT sessions and counters stay.
 */
import { join } from 'node:path';
import {
  GatewayDns, parseRcvbuf,
  DhcpServer, Forwards, LeaseFileError, LeaseStore, Router, type Dhcp6Server, RouterNetwork, clientLeaseFileName, deserializeForwards, describeForward, ensureStateDir, formatForward,
  forwardInsideHi, parseClientLease, parseForward, readStateFile, removeStaleTemps, serializeClientLease, serializeForwards, writeStateFile,
  type DhcpPorts, type DhcpServerConfig, type Ipv6Options, type Uplink6Options, type PortForward, type RouterEvent, type UplinkDhcpOptions,
} from '@vswitch/nat';
import { type Bridge, VlanPolicy, parseCidr6, parseIp4, parseIp6, parseMac } from '@vswitch/switch';
import { type RouterConfig, type RouterNetworkConfig, maskOf, parseCidr, parseIpRange } from '../config.js';
import { VswitchError } from '../errors.js';
import { dhcp6ServerConfig, openDhcp6, servesDhcp6 } from './dhcp6.js';
import { gatewayAnswersDns, rdnssOf } from './dns6.js';
import { forward6Problem } from './forward6.js';
import { hostKey, macFor } from './machine-id.js';
import type { RouterEdit } from './state.js';

/**
 * The MAC of a router's uplink (`R/uplink`) or gateway (`R/NETWORK`) when the config
 * gives none: a hash of the host's machine id (keyed, see machine-id.ts) and the
 * name, so it is the same after every restart (guests' and neighbours' ARP caches
 * stay right) and differs between hosts whose routers have the same names. The
 * gateways take the machine id too: a bridge may be trunked to other hosts, and two
 * gateways with one MAC in a VLAN would pull each other's traffic.
 */
export function stableMac(stateDir: string, name: string): number {
  return macFor(hostKey(stateDir).key, name);
}

export interface LeaseHooks {
  bound(port: string, mac: number, ip: number): void;
  gone(port: string | undefined, mac: number, ip: number): void;
  /** A DHCPv6 lease was granted on `port` in VLAN `vid` (dhcp6.ts). */
  bound6?(port: string, vid: number, address: Uint8Array): void;
}

export class ManagedRouter {
  readonly router: Router;
  /** The gateways' DNS server (dns.enabled), shared by the router's networks. */
  readonly dns: GatewayDns | undefined;
  /** Forwards added at runtime (persisted); config forwards are not in here. */
  readonly runtimeForwards: PortForward[] = [];
  readonly #configForwards = new Set<string>();
  readonly #forwardsFile: string;
  /** Networks whose DHCP server is disabled because its lease file could not be opened: why. */
  readonly dhcpFailed = new Map<string, string>();
  /** Why the runtime forwards file could not be read (runtime forwards disabled), or undefined. */
  forwardsFailed: string | undefined;
  #rc: RouterConfig;
  readonly #leases: LeaseHooks | undefined;
  readonly #onEvent: (e: RouterEvent) => void;
  /** The rules: NAPT's, the host NAT's, or (no uplink) a table of their own that nothing reads. */
  readonly #forwards: Forwards;

  constructor(
    readonly name: string,
    rc: RouterConfig,
    readonly stateDir: string,
    bridgeOf: (name: string) => Bridge,
    addPort: (bridge: string, name: string, net: RouterNetwork, vlan: VlanPolicy) => void,
    onEvent: (e: RouterEvent) => void = () => {},
    /** IP source guard bindings: a lease ACKed on a port, and a lease gone (see guards.ts). */
    leases?: LeaseHooks,
  ) {
    ensureStateDir(stateDir);
    // Temp files a crashed daemon left between write and rename (ours, of writes in flight, stay).
    removeStaleTemps(stateDir);
    this.#rc = rc;
    this.#leases = leases;
    this.#onEvent = onEvent;
    this.#forwardsFile = join(stateDir, `forwards-${name}.json`);
    const clock = (): number => performance.now();
    const host = rc.uplink?.kind === 'host' ? rc.uplink : undefined;
    const ifUplink = rc.uplink?.kind === 'host' ? undefined : rc.uplink;
    const dhcpUplink = ifUplink?.address === 'dhcp';
    const up = ifUplink?.address !== undefined && !dhcpUplink ? parseCidr(ifUplink.address)! : undefined;
    const uplinkMac = rc.uplink?.mac ? parseMac(rc.uplink.mac) : stableMac(stateDir, `${name}/uplink`);
    let dhcp: UplinkDhcpOptions | undefined;
    if (ifUplink && dhcpUplink) {
      const leaseFile = join(stateDir, clientLeaseFileName(name));
      dhcp = {
        hostname: ifUplink.hostname,
        previous: parseClientLease(readStateFile(leaseFile), uplinkMac),
        save: (lease) => writeStateFile(leaseFile, lease ? serializeClientLease(uplinkMac, lease) : '{}\n'),
      };
    }
    this.router = new Router({
      name,
      clock,
      uplink: ifUplink ? {
        ifname: ifUplink.interface!,
        mac: uplinkMac,
        address: up?.ip ?? 0,
        prefix: up?.prefix ?? 0,
        gateway: ifUplink.gateway ? parseIp4(ifUplink.gateway) : 0,
        dhcp,
      } : undefined,
      uplink6: ifUplink?.ipv6 !== undefined ? uplink6Options(ifUplink.ipv6) : undefined,
      napt: {
        portRange: { lo: rc.nat.portRange[0], hi: rc.nat.portRange[1] },
        maxSessions: rc.nat.maxSessions,
        maxSessionsPerHost: rc.nat.maxSessionsPerHost,
        maxSessionsPerPort: rc.nat.maxSessionsPerPort ?? rc.nat.maxSessionsPerHost,
        udpTimeoutSec: rc.nat.udpTimeout,
        tcpEstablishedTimeoutSec: rc.nat.tcpEstablishedTimeout,
        tcpTransitoryTimeoutSec: rc.nat.tcpTransitoryTimeout,
        icmpTimeoutSec: rc.nat.icmpTimeout,
      },
      host: host ? {
        dns: host.dns?.map(parseIp4),
        resolvConf: host.resolvConf,
        icmp: host.icmp,
        rcvbuf: parseRcvbuf(host.rcvbuf),
        listen: host.listen,
        budget: { maxSessions: rc.nat.maxSessions, maxPerHost: rc.nat.maxSessionsPerHost, maxPerPort: rc.nat.maxSessionsPerPort ?? rc.nat.maxSessionsPerHost },
        udpIdleTimeoutMs: rc.nat.udpTimeout * 1000,
        // TCP's MSS and UDP/ICMP fragmentation towards the VMs: the smallest MTU their DHCP or RA hands out.
        mtu: Math.min(...Object.values(rc.networks).map((n) => Math.min(n.dhcp?.mtu ?? 1500, n.ipv6?.ra.mtu ?? 1500))),
      } : undefined,
      // Without a host uplink, DNS over TCP to the gateway is relayed to the gateway DNS's upstream servers.
      dnsTcp: !host && rc.dns.enabled ? {
        dns: rc.dns.upstream.length > 0 ? rc.dns.upstream.map(parseIp4) : undefined,
        resolvConf: rc.dns.resolvConf,
        mtu: Math.min(...Object.values(rc.networks).map((n) => n.dhcp?.mtu ?? 1500)),
      } : undefined,
      interconnect: rc.interconnect,
      limits: rc.limits,
      onEvent: (e) => onEvent(e),
    });
    for (const [nname, n] of Object.entries(rc.networks)) {
      const c = parseCidr(n.address)!;
      const br = bridgeOf(n.bridge);
      const ports: DhcpPorts = {
        // The DHCP server's port rules follow the IPv4 guards (a port with only IPv6 guards keeps the plain RFC behaviour).
        guarded: (p) => br.port(p)?.guard.v4 === true,
        live: (p) => br.port(p)?.up === true,
      };
      const dhcp = this.#openDhcp(nname, n);
      const gwMac = n.mac ? parseMac(n.mac) : stableMac(stateDir, `${name}/${nname}`);
      const dhcp6 = this.#openDhcp6(nname, n, gwMac);
      const net = new RouterNetwork({
        name: nname,
        vlan: n.vlan,
        gatewayIp: c.ip,
        prefix: c.prefix,
        mac: gwMac,
        clock,
        dhcp,
        dhcp6,
        onLease6: leases?.bound6 ? (port, _mac, address) => leases.bound6!(port, n.vlan, address) : undefined,
        portOf: (mac) => {
          const id = br.fdb.lookup(n.vlan, mac);
          return id < 0 ? '' : br.portName(id);
        },
        ports,
        // The DHCPv6 server's port rules follow the IPv6 guards.
        ports6: { guarded: (p) => br.port(p)?.guard.v6 === true, live: ports.live },
        onLease: leases ? (port, mac, ip) => leases.bound(port, mac, ip) : undefined,
        ipv6: ipv6Options(n, gatewayAnswersDns(rc)),
      });
      addPort(n.bridge, nname, net, VlanPolicy.from({ mode: 'access', vid: n.vlan }));
      this.router.addNetwork(net);
    }
    if (rc.dns.enabled) {
      const mtus = new Map(Object.entries(rc.networks).map(([nname, n]) => [nname, n.dhcp?.mtu ?? 1500]));
      const gw = new GatewayDns({
        clock,
        forward: host === undefined,
        upstream: rc.dns.upstream.map(parseIp4),
        resolvConf: rc.dns.resolvConf,
        maxOutstanding: rc.dns.maxOutstanding,
        maxOutstandingPerPort: rc.dns.maxOutstandingPerPort,
        timeoutMs: rc.dns.timeout * 1000,
        mtu: (net) => mtus.get(net.name) ?? 1500,
        onEvent: (e) => onEvent(e as RouterEvent),
      });
      this.dns = gw;
      for (const net of this.router.networks.values()) net.dns = (n, f, l4, ulen) => gw.handle(n, f, l4, ulen);
    }
    const forwards = this.router.napt?.forwards ?? this.router.host?.forwards ?? new Forwards();
    this.#forwards = forwards;
    for (const f of rc.forwards) {
      const pf = forwards.add(parseForward({ proto: f.proto, public: f.port, inside: f.to }));
      this.#configForwards.add(key(pf));
    }
    this.#loadRuntimeForwards(forwards);
  }

  /** The router config as applied (effective: the file's, with the CLI's DHCP reservations). */
  get config(): RouterConfig { return this.#rc; }

  /** What is disabled, for the log at start: one record per failed part. */
  failures(): { event: string; network?: string; file?: string; error: string }[] {
    return [
      ...[...this.dhcpFailed].map(([network, error]) => ({ event: 'dhcp_failed', network, error })),
      ...(this.forwardsFailed !== undefined ? [{ event: 'forwards_failed', file: this.#forwardsFile, error: this.forwardsFailed }] : []),
    ];
  }

  /** The DHCP server config of network `nname` from its config section. */
  #dhcpConfig(nname: string, n: RouterNetworkConfig): DhcpServerConfig {
    const c = parseCidr(n.address)!;
    const d = n.dhcp!;
    const leases = this.#leases;
    return {
      name: nname,
      serverIp: c.ip,
      subnet: maskOf(c.ip, c.prefix),
      prefixLen: c.prefix,
      pools: d.pool.map((r) => parseIpRange(r)!),
      reservations: d.reservations.map((r) => ({ mac: parseMac(r.mac), ip: parseIp4(r.ip), hostname: r.hostname })),
      leaseTimeSec: d.leaseTime,
      router: c.ip,
      // The gateway answers DNS (its DNS server, or a host uplink's forwarder): the default DNS server.
      dns: d.dns.length === 0 && (this.#rc.dns.enabled || this.#rc.uplink?.kind === 'host') ? [c.ip] : d.dns.map(parseIp4),
      domain: d.domain,
      mtu: d.mtu,
      routes: d.routes.map((r) => {
        const to = parseCidr(r.to)!;
        return { dest: maskOf(to.ip, to.prefix), prefixLen: to.prefix, gateway: parseIp4(r.via) };
      }),
      maxLeasesPerPort: d.maxLeasesPerPort,
      onRemove: leases ? (l) => leases.gone(l.port, l.mac, l.ip) : undefined,
    };
  }

  /**
   * The network's DHCP server, or undefined: none configured, or its lease file
   * cannot be trusted (then `dhcpFailed` says why). A bad config still throws.
   */
  #openDhcp(nname: string, n: RouterNetworkConfig): DhcpServer | undefined {
    this.dhcpFailed.delete(nname);
    if (n.dhcp === undefined) return undefined;
    const cfg = this.#dhcpConfig(nname, n);
    const now = Date.now();
    let store: LeaseStore;
    try {
      store = LeaseStore.open(this.stateDir, nname, now);
    } catch (e) {
      this.dhcpFailed.set(nname, (e as Error).message);
      return undefined;
    }
    return new DhcpServer(cfg, store, now);
  }

  /**
   * The network's DHCPv6 server (modes dhcpv6 and both), or undefined; a lease
   * file that cannot be trusted disables it (`dhcpFailed`, key `<network>/ipv6`),
   * as for IPv4. A bad config still throws.
   */
  #openDhcp6(nname: string, n: RouterNetworkConfig, mac: number): Dhcp6Server | undefined {
    const key = `${nname}/ipv6`;
    this.dhcpFailed.delete(key);
    if (!servesDhcp6(n.ipv6)) return undefined;
    const cfg = dhcp6ServerConfig(nname, n.ipv6, mac, gatewayAnswersDns(this.#rc));
    try {
      return openDhcp6(this.stateDir, cfg);
    } catch (e) {
      if (!(e instanceof LeaseFileError)) throw e;
      this.dhcpFailed.set(key, e.message);
      return undefined;
    }
  }

  /** Reads forwards-<router>.json; a file that cannot be read disables the runtime forwards only. */
  #loadRuntimeForwards(forwards: Forwards): void {
    this.forwardsFailed = undefined;
    let list: PortForward[];
    try {
      list = deserializeForwards(readStateFile(this.#forwardsFile) ?? '{"version":1,"forwards":[]}');
    } catch (e) {
      this.forwardsFailed = `${this.#forwardsFile}: ${(e as Error).message}`;
      return;
    }
    let dropped = false;
    for (const f of list) {
      // The config file wins over a runtime forward it now overlaps.
      const rule = [...forwards.list()].find((c) => this.#configForwards.has(key(c)) && overlaps(c, f));
      if (rule !== undefined) {
        this.#onEvent({ event: 'forward_dropped', forward: describeForward(f), reason: `overlaps ${describeForward(rule)} of the config file` } as unknown as RouterEvent);
        dropped = true;
        continue;
      }
      try {
        this.runtimeForwards.push(forwards.add(f));
      } catch (e) {
        this.#onEvent({ event: 'forward_dropped', forward: describeForward(f), reason: (e as Error).message } as unknown as RouterEvent);
        dropped = true;
      }
    }
    if (dropped) this.#trySave();
  }

  /** Throws if `edit(rc, e)` would fail; changes nothing. */
  checkEdit(rc: RouterConfig, e: RouterEdit): void {
    const now = Date.now();
    for (const nname of e.dhcp) {
      const n = rc.networks[nname];
      if (n?.dhcp !== undefined) new DhcpServer(this.#dhcpConfig(nname, n), LeaseStore.inMemory(nname), now);
    }
    if (e.forwards) {
      const scratch = new Forwards();
      for (const f of rc.forwards) scratch.add(parseForward({ proto: f.proto, public: f.port, inside: f.to }));
    }
  }

  /** Applies DHCP and forward changes in place (checked by checkEdit); returns what was done. */
  edit(rc: RouterConfig, e: RouterEdit): string[] {
    const done: string[] = [];
    const prev = this.#rc;
    this.#rc = rc;
    const now = Date.now();
    for (const nname of e.dhcp) {
      const net = this.router.networks.get(nname);
      const n = rc.networks[nname];
      if (net === undefined || n === undefined) continue;
      const server = net.opts.dhcp;
      if (n.dhcp === undefined) {
        net.setDhcp(undefined);
        this.dhcpFailed.delete(nname);
        done.push(`dhcp off ${this.name}/${nname}`);
      } else if (server !== undefined) {
        server.reconfigure(this.#dhcpConfig(nname, n), now);
        done.push(`dhcp ${this.name}/${nname} (in place: leases kept)`);
      } else {
        const was = this.dhcpFailed.get(nname);
        net.setDhcp(this.#openDhcp(nname, n));
        const why = this.dhcpFailed.get(nname);
        if (why !== undefined) {
          this.#onEvent({ event: 'dhcp_failed', network: nname, error: why } as unknown as RouterEvent);
          if (was === undefined) done.push(`dhcp ${this.name}/${nname} failed: ${why}`);
        } else {
          done.push(`dhcp on ${this.name}/${nname}`);
        }
      }
    }
    if (e.forwards) done.push(...this.#editForwards(prev, rc));
    if (e.limits) {
      // Rate limits change in place: sessions, leases and counters stay.
      this.router.setLimits(rc.limits);
      done.push(`limits ${this.name} ${JSON.stringify(rc.limits)}`);
    }
    return done;
  }

  #editForwards(prev: RouterConfig, rc: RouterConfig): string[] {
    const done: string[] = [];
    const forwards = this.#forwards;
    const parse = (f: RouterConfig['forwards'][number]): PortForward => parseForward({ proto: f.proto, public: f.port, inside: f.to });
    const want = rc.forwards.map(parse);
    const wantKeys = new Set(want.map(fwdId));
    for (const f of prev.forwards.map(parse)) {
      if (wantKeys.has(fwdId(f))) continue;
      forwards.del(f.proto, f.publicLo, f.publicHi);
      this.#configForwards.delete(key(f));
      done.push(`forward del ${describeForward(f)}`);
    }
    const have = new Set(prev.forwards.map(parse).map(fwdId));
    let dropped = false;
    for (const f of want) {
      if (have.has(fwdId(f))) continue;
      for (const r of [...this.runtimeForwards]) {
        if (!overlaps(r, f)) continue;
        forwards.del(r.proto, r.publicLo, r.publicHi);
        this.runtimeForwards.splice(this.runtimeForwards.indexOf(r), 1);
        dropped = true;
        done.push(`forward del ${describeForward(r)} (runtime; the config file's ${describeForward(f)} overlaps it)`);
      }
      this.#configForwards.add(key(forwards.add(f)));
      done.push(`forward add ${describeForward(f)}`);
    }
    if (dropped) this.#trySave();
    if (this.forwardsFailed !== undefined) {
      this.#loadRuntimeForwards(forwards);
      done.push(this.forwardsFailed === undefined ? `forwards file of ${this.name} read again` : `forwards file of ${this.name} still failed: ${this.forwardsFailed}`);
    }
    return done;
  }

  start(): void {
    this.router.start();
    for (const net of this.router.networks.values()) net.announce();
  }

  /** Writes every lease file now: a rebuild of this router opens them again (see LeaseStore.sync). */
  syncLeases(): void {
    for (const net of this.router.networks.values()) {
      net.opts.dhcp?.sync();
      net.opts.dhcp6?.sync();
    }
  }

  /** Closes a router that never served (a refused reload prepared it): its lease files stay the live router's. */
  discard(): void {
    this.dns?.close();
    for (const net of this.router.networks.values()) {
      net.opts.dhcp?.discard();
      net.opts.dhcp6?.discard();
    }
    this.router.close();
  }

  close(): void {
    this.dns?.close();
    // The last RAs (lifetimes 0) go out while the networks' ports are still in their bridges.
    for (const net of this.router.networks.values()) net.stopIpv6();
    for (const net of this.router.networks.values()) {
      net.opts.dhcp?.close();
      net.opts.dhcp6?.close();
    }
    this.router.close();
  }

  /** Adds a runtime forward and keeps it; one that cannot be kept is taken back (no rule, no listener stays) and refused. */
  addForward(rec: { proto: string; public: string | number; inside: string }): PortForward {
    const napt = this.#napt()!;
    this.#forwardsUsable();
    const inside = parseForward(rec);
    const why6 = inside.inside6 !== undefined ? forward6Problem(this.#rc, inside.inside6) : undefined;
    if (why6 !== undefined) throw new VswitchError('EINVAL', `${rec.inside}: ${why6}`);
    if (inside.inside6 === undefined && this.router.networkFor(inside.insideIp) === undefined) {
      throw new VswitchError('EINVAL', `${rec.inside} is not inside any network of router ${this.name}`);
    }
    const f = napt.forwards.add(inside);
    this.runtimeForwards.push(f);
    try {
      this.#save();
    } catch (e) {
      napt.forwards.del(f.proto, f.publicLo, f.publicHi);
      this.runtimeForwards.pop();
      throw new VswitchError('ESTATE', `cannot keep the forward in ${this.#forwardsFile}: ${(e as Error).message}; it was not added`);
    }
    return f;
  }

  /** Removes a runtime forward once the file without it is written; if that fails, nothing changes. */
  delForward(proto: 'tcp' | 'udp', lo: number, hi: number): PortForward {
    const napt = this.#napt()!;
    this.#forwardsUsable();
    const found = napt.forwards.list().find((f) => f.proto === proto && f.publicLo === lo && f.publicHi === hi);
    if (found === undefined) throw new VswitchError('ENOENT', `no ${proto} forward for public port ${lo === hi ? lo : `${lo}-${hi}`}`);
    if (this.#configForwards.has(key(found))) {
      throw new VswitchError('EPERM', `the ${proto} forward of port ${lo === hi ? lo : `${lo}-${hi}`} is defined in the config file; change it there`);
    }
    const rest = this.runtimeForwards.filter((x) => key(x) !== key(found));
    try {
      writeStateFile(this.#forwardsFile, serializeForwards(rest));
    } catch (e) {
      throw new VswitchError('ESTATE', `cannot keep the change in ${this.#forwardsFile}: ${(e as Error).message}; the forward stays`);
    }
    const f = napt.forwards.del(proto, lo, hi);
    this.runtimeForwards.splice(0, this.runtimeForwards.length, ...rest);
    return f;
  }

  #forwardsUsable(): void {
    if (this.forwardsFailed !== undefined) {
      throw new VswitchError('EIO', `runtime forwards of router ${this.name} are disabled: ${this.forwardsFailed}; move the file aside and reload`);
    }
  }

  forwardsView(): Record<string, unknown>[] {
    const host = this.router.host;
    const listeners = host?.listeners();
    return (this.#napt(false)?.forwards.list() ?? []).map((f) => {
      const row: Record<string, unknown> = { router: this.name, ...formatForward(f), source: this.#configForwards.has(key(f)) ? 'config' : 'runtime' };
      if (listeners !== undefined) {
        const mine = listeners.filter((l) => l.proto === f.proto && l.port >= f.publicLo && l.port <= f.publicHi);
        row.listen = mine.map((l) => l.listen).join(',');
        row.state = [...new Set(mine.map((l) => l.state))].join(',');
      }
      return row;
    });
  }

  /** Where the forwards live: NAPT's (interface uplink) or the host NAT's. */
  #napt(required = true): { forwards: Forwards } | undefined {
    const f = this.router.napt ?? this.router.host;
    if (f === undefined && required) throw new VswitchError('EINVAL', `router ${this.name} has no uplink, so no NAT`);
    return f;
  }

  #save(): void {
    writeStateFile(this.#forwardsFile, serializeForwards(this.runtimeForwards));
  }

  #trySave(): void {
    try {
      this.#save();
    } catch (e) {
      this.#onEvent({ event: 'forward_save_failed', file: this.#forwardsFile, error: (e as Error).message } as unknown as RouterEvent);
    }
  }
}

/** A network's IPv6 section as nd.ts takes it (validated by config.ts). */
function ipv6Options(n: RouterNetworkConfig, answersDns: boolean): Ipv6Options | undefined {
  const v = n.ipv6;
  if (v === undefined) return undefined;
  const c = parseCidr6(v.address)!;
  return {
    address: c.addr,
    prefixLen: c.prefix,
    mode: v.mode,
    intervalSec: v.ra.interval,
    validLifetime: v.ra.validLifetime,
    preferredLifetime: v.ra.preferredLifetime,
    mtu: v.ra.mtu,
    rdnss: rdnssOf(v, answersDns).map((a) => parseIp6(a)!),
    dnssl: v.ra.dnssl,
    npt: v.npt !== undefined ? parseCidr6(v.npt)!.addr : undefined,
  };
}

/** The uplink's IPv6 section as uplink6.ts takes it (validated by config.ts). */
function uplink6Options(v: NonNullable<NonNullable<RouterConfig['uplink']>['ipv6']>): Omit<Uplink6Options, 'clock' | 'mac'> {
  const c = v.address === 'slaac' ? undefined : parseCidr6(v.address)!;
  return { address: c?.addr, prefixLen: c?.prefix, gateway: v.gateway !== undefined ? parseIp6(v.gateway) : undefined, mtu: v.mtu };
}

function key(f: PortForward): string {
  return `${f.proto}/${f.publicLo}-${f.publicHi}`;
}

function fwdId(f: PortForward): string {
  return `${key(f)}>${f.inside6 ?? f.insideIp}:${f.insideLo}`;
}

/** Would `a` and `b` conflict (napt/forwards.ts): overlapping public ranges, or overlapping inside ranges of one host. */
function overlaps(a: PortForward, b: PortForward): boolean {
  if (a.proto !== b.proto) return false;
  if (a.publicLo <= b.publicHi && b.publicLo <= a.publicHi) return true;
  return a.insideIp === b.insideIp && a.inside6 === b.inside6 && a.insideLo <= forwardInsideHi(b) && b.insideLo <= forwardInsideHi(a);
}
