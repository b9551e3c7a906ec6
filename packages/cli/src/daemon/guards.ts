/*
 * Anti-spoofing policy of the daemon: which ports are guarded, and their bindings.
 *
 * Default: both guards (DHCP guard and IP source guard, see switch/guard.ts) are on
 * for VM ports — tap and socket ports in access mode — whose VLAN has a router
 * network with a DHCP server on the same bridge: there the router is the only DHCP
 * server and every legitimate address is a lease (or a configured binding). Every
 * other port is unguarded: attach ports (uplinks, bridged LANs with their own
 * servers and addresses), trunks and hybrid ports (other switches), ports of VLANs
 * without a router DHCP server (static addressing). `guard.dhcp`/`guard.ipSource`
 * in the port's config win over the default. The policy is re-applied whenever a
 * port, its VLANs or a router change, so ports added at runtime follow it too.
 *
 * IPv6 (switch/guard6.ts): the RA guard, the DHCPv6 guard and the IPv6 source
 * guard (first come, first served) default to on for the same VM ports, and for
 * VM ports of VLANs whose router network has `ipv6` (a VLAN where the router is
 * the one legitimate RA source); `guard.ra`/`dhcpv6`/`ipv6Source` win. The
 * routers' gateway addresses are reserved in the bridge's IPv6 owners
 * (`reserveGateways`), so no VM can take them first.
 *
 * Bindings: the port's configured `guard.bindings`, and the bound leases of the
 * routers' DHCP servers recorded on that port. They are rebuilt from the leases
 * when the policy is applied (e.g. at start, from the lease files), added when the
 * server ACKs and removed when it releases, declines or expires a lease.
 */
import { type Bridge, type Port, parseIp4, parseMac } from '@vswitch/switch';
import type { ManagedRouter } from './routers.js';

export interface GuardSpec {
  dhcp?: boolean;
  ipSource?: boolean;
  ra?: boolean;
  dhcpv6?: boolean;
  ipv6Source?: boolean;
  maxIpv6Addresses?: number;
  bindings?: { mac: string; ip: string }[];
}

/**
 * Does a router network with DHCP serve VLAN `vid` on bridge `br`? A network whose
 * DHCP server is disabled by a bad lease file counts: its ports stay guarded
 * (fail closed) rather than open to spoofing while the leases are unknown.
 */
export function dhcpServed(routers: Iterable<ManagedRouter>, br: Bridge, vid: number): boolean {
  for (const mr of routers) {
    for (const net of mr.router.networks.values()) {
      if ((net.opts.dhcp !== undefined || mr.dhcpFailed.has(net.name)) && net.opts.vlan === vid && br.port(net.name)?.io === net) return true;
    }
  }
  return false;
}

/** Does a router network with IPv6 (router advertisements) serve VLAN `vid` on bridge `br`? */
export function ipv6Served(routers: Iterable<ManagedRouter>, br: Bridge, vid: number): boolean {
  for (const mr of routers) {
    for (const net of mr.router.networks.values()) {
      if (net.nd !== undefined && net.opts.vlan === vid && br.port(net.name)?.io === net) return true;
    }
  }
  return false;
}

/** Reserves every router gateway's IPv6 addresses (link-local and prefix) for its port in its bridge. */
export function reserveGateways(bridges: Iterable<Bridge>, routers: Iterable<ManagedRouter>): void {
  const list = [...routers];
  for (const br of bridges) {
    for (const mr of list) {
      for (const net of mr.router.networks.values()) {
        const port = br.port(net.name);
        if (net.nd === undefined || port?.io !== net) continue;
        br.ip6Bindings.reserve(net.opts.vlan, net.nd.linkLocal, port.id);
        br.ip6Bindings.reserve(net.opts.vlan, net.nd.address, port.id);
      }
    }
  }
}

/** Sets `port`'s guards from its spec and the default, and rebuilds its bindings. */
export function applyGuard(
  br: Bridge, port: Port, spec: { type: string; guard?: GuardSpec }, routers: Iterable<ManagedRouter>, now = Date.now(),
): void {
  const list = [...routers];
  const vm = (spec.type === 'tap' || spec.type === 'socket') && !port.vlan.acceptsTagged && port.vlan.pvid !== 0;
  const dflt = vm && dhcpServed(list, br, port.vlan.pvid);
  const dflt6 = dflt || (vm && ipv6Served(list, br, port.vlan.pvid));
  const g = spec.guard;
  port.guard.set({
    dhcp: g?.dhcp ?? dflt, ipSource: g?.ipSource ?? dflt,
    ra: g?.ra ?? dflt6, dhcpv6: g?.dhcpv6 ?? dflt6, ipv6Source: g?.ipv6Source ?? dflt6, maxIpv6: g?.maxIpv6Addresses,
  });
  port.guard.configured.clear();
  for (const b of spec.guard?.bindings ?? []) port.guard.configured.set(parseIp4(b.ip), parseMac(b.mac));
  port.guard.leased.clear();
  for (const mr of list) {
    for (const net of mr.router.networks.values()) {
      for (const l of net.opts.dhcp?.leases(now) ?? []) {
        if (l.state === 'bound' && l.port === port.name) port.guard.leased.set(l.ip, l.mac);
      }
    }
  }
}

/** A lease was ACKed on port `portName`: bind it there (and only there). */
export function leaseBound(bridges: Iterable<Bridge>, portName: string, mac: number, ip: number): void {
  for (const br of bridges) {
    for (const p of br.ports.values()) {
      const g = p.guard.leased;
      if (p.name === portName) {
        for (const [bip, bmac] of g) if (bmac === mac && bip !== ip) g.delete(bip);
        g.set(ip, mac);
      } else if (g.has(ip)) {
        g.delete(ip);
      }
    }
  }
}

/** A lease went away: unbind it. */
export function leaseGone(bridges: Iterable<Bridge>, portName: string | undefined, mac: number, ip: number): void {
  for (const br of bridges) {
    for (const p of br.ports.values()) {
      if ((portName === undefined || p.name === portName) && p.guard.leased.get(ip) === mac) p.guard.leased.delete(ip);
    }
  }
}
