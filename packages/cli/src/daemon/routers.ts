/*
 * Routers from config: each network becomes a RouterNetwork port on its bridge
 * (an access port in its VLAN, as a VM would be), with a DHCP server whose leases
 * live in the state directory; the uplink and NAPT come from the router's own
 * section. Port forwards from the config are fixed; forwards added at runtime are
 * kept in `forwards-<router>.json` in the state directory and come back at start.
 * An uplink with `address: dhcp` keeps its last lease in `uplink-<router>.json`
 * there, so that after a restart it asks for the same address (INIT-REBOOT).
 * A DHCP server learns from the bridge which port a request came from, whether
 * that port is guarded and whether a lease's port is still up (dhcp/server.ts:
 * leases belong to (port, MAC)). Closing a router writes its lease files before
 * anything else (a store reopened by a reload must read everything).
 */
import { join } from 'node:path';
import {
  DhcpServer, Forwards, LeaseStore, Router, RouterNetwork, clientLeaseFileName, deserializeForwards, ensureStateDir, formatForward,
  parseClientLease, parseForward, readStateFile, removeStaleTemps, serializeClientLease, serializeForwards, writeStateFile,
  type DhcpPorts, type PortForward, type RouterEvent, type UplinkDhcpOptions,
} from '@vswitch/nat';
import { type Bridge, VlanPolicy, parseIp4, parseMac } from '@vswitch/switch';
import { type RouterConfig, maskOf, parseCidr, parseIpRange } from '../config.js';
import { VswitchError } from '../errors.js';
import { hostKey, macFor } from './machine-id.js';

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

export class ManagedRouter {
  readonly router: Router;
  /** Forwards added at runtime (persisted); config forwards are not in here. */
  readonly runtimeForwards: PortForward[] = [];
  readonly #configForwards = new Set<string>();
  readonly #forwardsFile: string;

  constructor(
    readonly name: string,
    rc: RouterConfig,
    readonly stateDir: string,
    bridgeOf: (name: string) => Bridge,
    addPort: (bridge: string, name: string, net: RouterNetwork, vlan: VlanPolicy) => void,
    onEvent: (e: RouterEvent) => void = () => {},
    /** IP source guard bindings: a lease ACKed on a port, and a lease gone (see guards.ts). */
    leases?: {
      bound(port: string, mac: number, ip: number): void;
      gone(port: string | undefined, mac: number, ip: number): void;
    },
  ) {
    ensureStateDir(stateDir);
    // Temp files a crashed daemon left between write and rename (ours, of writes in flight, stay).
    removeStaleTemps(stateDir);
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
        listen: host.listen,
        budget: { maxSessions: rc.nat.maxSessions, maxPerHost: rc.nat.maxSessionsPerHost, maxPerPort: rc.nat.maxSessionsPerPort ?? rc.nat.maxSessionsPerHost },
        udpIdleTimeoutMs: rc.nat.udpTimeout * 1000,
        // TCP's MSS and UDP/ICMP fragmentation towards the VMs: the smallest MTU their DHCP hands out.
        mtu: Math.min(...Object.values(rc.networks).map((n) => n.dhcp?.mtu ?? 1500)),
      } : undefined,
      interconnect: rc.interconnect,
      limits: rc.limits,
      onEvent: (e) => onEvent(e),
    });
    for (const [nname, n] of Object.entries(rc.networks)) {
      const c = parseCidr(n.address)!;
      const br = bridgeOf(n.bridge);
      const now = Date.now();
      const ports: DhcpPorts = {
        guarded: (p) => br.port(p)?.guard.active === true,
        live: (p) => br.port(p)?.up === true,
      };
      const dhcp = n.dhcp ? new DhcpServer({
        name: nname,
        serverIp: c.ip,
        subnet: maskOf(c.ip, c.prefix),
        prefixLen: c.prefix,
        pools: n.dhcp.pool.map((r) => parseIpRange(r)!),
        reservations: n.dhcp.reservations.map((r) => ({ mac: parseMac(r.mac), ip: parseIp4(r.ip), hostname: r.hostname })),
        leaseTimeSec: n.dhcp.leaseTime,
        router: c.ip,
        // A host uplink's gateway forwards DNS to the host's resolvers: the default DNS server.
        dns: n.dhcp.dns.length === 0 && host ? [c.ip] : n.dhcp.dns.map(parseIp4),
        domain: n.dhcp.domain,
        mtu: n.dhcp.mtu,
        routes: n.dhcp.routes.map((r) => {
          const to = parseCidr(r.to)!;
          return { dest: maskOf(to.ip, to.prefix), prefixLen: to.prefix, gateway: parseIp4(r.via) };
        }),
        maxLeasesPerPort: n.dhcp.maxLeasesPerPort,
        onRemove: leases ? (l) => leases.gone(l.port, l.mac, l.ip) : undefined,
      }, LeaseStore.open(stateDir, nname, now), now) : undefined;
      const net = new RouterNetwork({
        name: nname,
        vlan: n.vlan,
        gatewayIp: c.ip,
        prefix: c.prefix,
        mac: n.mac ? parseMac(n.mac) : stableMac(stateDir, `${name}/${nname}`),
        clock,
        dhcp,
        portOf: (mac) => {
          const id = br.fdb.lookup(n.vlan, mac);
          return id < 0 ? '' : br.portName(id);
        },
        ports,
        onLease: leases ? (port, mac, ip) => leases.bound(port, mac, ip) : undefined,
      });
      addPort(n.bridge, nname, net, VlanPolicy.from({ mode: 'access', vid: n.vlan }));
      this.router.addNetwork(net);
    }
    const forwards = this.router.napt?.forwards ?? this.router.host?.forwards ?? new Forwards();
    for (const f of rc.forwards) {
      const pf = forwards.add(parseForward({ proto: f.proto, public: f.port, inside: f.to }));
      this.#configForwards.add(key(pf));
    }
    for (const f of deserializeForwards(readStateFile(this.#forwardsFile) ?? '{"version":1,"forwards":[]}')) {
      this.runtimeForwards.push(forwards.add(f));
    }
  }

  start(): void {
    this.router.start();
    for (const net of this.router.networks.values()) net.announce();
  }

  close(): void {
    for (const net of this.router.networks.values()) net.opts.dhcp?.close();
    this.router.close();
  }

  addForward(rec: { proto: string; public: string | number; inside: string }): PortForward {
    const napt = this.#napt()!;
    const inside = parseForward(rec);
    if (this.router.networkFor(inside.insideIp) === undefined) {
      throw new VswitchError('EINVAL', `${rec.inside} is not inside any network of router ${this.name}`);
    }
    const f = napt.forwards.add(inside);
    this.runtimeForwards.push(f);
    this.#save();
    return f;
  }

  delForward(proto: 'tcp' | 'udp', lo: number, hi: number): PortForward {
    const napt = this.#napt()!;
    const found = napt.forwards.list().find((f) => f.proto === proto && f.publicLo === lo && f.publicHi === hi);
    if (found === undefined) throw new VswitchError('ENOENT', `no ${proto} forward for public port ${lo === hi ? lo : `${lo}-${hi}`}`);
    if (this.#configForwards.has(key(found))) {
      throw new VswitchError('EPERM', `the ${proto} forward of port ${lo === hi ? lo : `${lo}-${hi}`} is defined in the config file; change it there`);
    }
    const f = napt.forwards.del(proto, lo, hi);
    this.runtimeForwards.splice(this.runtimeForwards.findIndex((x) => key(x) === key(f)), 1);
    this.#save();
    return f;
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
}

function key(f: PortForward): string {
  return `${f.proto}/${f.publicLo}-${f.publicHi}`;
}
