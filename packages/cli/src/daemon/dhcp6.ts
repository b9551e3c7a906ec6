/*
 * The daemon's side of the DHCPv6 servers (nat/src/dhcp6): a network's
 * `ipv6.dhcpv6` section turned into a server config, its lease file opened
 * (`leases6-<network>.json` in the state directory, with the IPv4 lease files'
 * durability and refusal rules), and its leases bound in the IPv6 source guard.
 *
 * Which networks serve DHCPv6: those with `ipv6.mode` dhcpv6 or both (their RA
 * sets M and O), with or without a `dhcpv6` section (the defaults: pool
 * <prefix>::1000-<prefix>::1fff, lease time 3600 s, DNS and domains from the RA's
 * rdnss/dnssl, dns6.ts). Mode slaac serves none (config.ts refuses a `dhcpv6` section there).
 *
 * Bindings: a granted lease claims its address for the client's port in the
 * bridge's IPv6 owners (switch/guard6.ts, first come first served), so from the
 * Reply on, no other guarded port may send from it or claim it in an NA. A
 * binding then lives as the FCFS ones do (released when unused for an hour, or
 * when the port goes); an address another live port already owns is not taken
 * from it (the client's DAD finds the conflict and declines the address).
 */
import { type Bridge, formatIp6, formatMac, parseIp6, parseMac } from '@vswitch/switch';
import { Dhcp6Server, LeaseStore, dhcp6Addr, dhcp6Codec, type Dhcp6ServerConfig, type RouterNetwork } from '@vswitch/nat';
import type { RouterNetworkConfig } from '../config.js';
import { dhcp6DnsOf } from './dns6.js';

type Ipv6Config = NonNullable<RouterNetworkConfig['ipv6']>;

/** Does this network serve DHCPv6? */
export const servesDhcp6 = (v: Ipv6Config | undefined): v is Ipv6Config => v !== undefined && v.mode !== 'slaac';

/** The server config of a network's IPv6 section (not validated: the server's constructor does that). */
export function dhcp6ServerConfig(name: string, v: Ipv6Config, serverMac: number, answersDns = false): Dhcp6ServerConfig {
  const [addr, len] = v.address.split('/');
  const gateway = parseIp6(addr)!;
  const prefixLen = Number(len);
  const prefix = gateway.slice();
  for (let i = 8; i < 16; i++) prefix[i] = 0;
  const d = v.dhcpv6;
  const range = d?.pool?.split('-').map((a) => parseIp6(a)!);
  return {
    name,
    serverMac,
    prefix,
    prefixLen,
    gateway,
    pool: range !== undefined ? { start: range[0], end: range[1] } : undefined,
    reservations: (d?.reservations ?? []).map((r) => ({
      duid: r.duid?.replace(/:/g, '').toLowerCase(),
      mac: r.mac !== undefined ? parseMac(r.mac) : undefined,
      address: parseIp6(r.ip)!,
    })),
    leaseTimeSec: d?.leaseTime,
    dns: dhcp6DnsOf(v, answersDns).map((a) => parseIp6(a)!),
    domains: d?.domains ?? v.ra.dnssl,
    maxLeasesPerPort: d?.maxLeasesPerPort,
  };
}

/** Why the network's DHCPv6 config cannot be served, or undefined (config.ts's check). */
export function checkDhcp6(name: string, v: Ipv6Config): string | undefined {
  if (!/\/64$/.test(v.address)) return undefined; // the address check reports it
  try {
    const cfg = dhcp6ServerConfig(name, v, 0x020000000001);
    new Dhcp6Server(cfg, LeaseStore.inMemory('check', dhcp6Codec(poolBase(cfg))), Date.now());
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

/** The 96 bits every address of the pool shares. */
export function poolBase(cfg: Dhcp6ServerConfig): Uint8Array {
  return (cfg.pool?.start ?? dhcp6Addr(cfg.prefix, 0)).slice(0, 12);
}

/**
 * Opens the network's server and its lease file; a file that cannot be trusted
 * throws LeaseFileError (the caller disables the server and says why, as for IPv4).
 */
export function openDhcp6(stateDir: string, cfg: Dhcp6ServerConfig, now = Date.now()): Dhcp6Server {
  const store = LeaseStore.open(stateDir, cfg.name, now, dhcp6Codec(poolBase(cfg)));
  try {
    return new Dhcp6Server(cfg, store, now);
  } catch (e) {
    store.discard();
    throw e;
  }
}

/** A lease was granted to `portName` in VLAN `vid`: it owns the address in the IPv6 source guard. */
export function lease6Bound(bridges: Iterable<Bridge>, portName: string, vid: number, address: Uint8Array): void {
  for (const br of bridges) {
    const p = br.port(portName);
    if (p === undefined) continue;
    br.ip6Bindings.claim(vid, address, 0, p.id, performance.now(), p.guard.maxIpv6);
  }
}

/** `router show`'s DHCPv6 part of a network's ipv6 (none in mode slaac). */
export function dhcp6View(mr: { dhcpFailed: Map<string, string> }, n: RouterNetwork): Record<string, unknown> {
  const s = n.opts.dhcp6;
  const failed = mr.dhcpFailed.get(`${n.name}/ipv6`);
  if (s === undefined) return failed === undefined ? {} : { dhcpv6: { state: `failed: ${failed}` } };
  return {
    dhcpv6: {
      state: 'ok', pool: s.poolText, leaseTime: s.leaseTimeSec, dns: s.dnsServers.map((a) => formatIp6(a)), leases: s.leases(Date.now()).filter((l) => l.state === 'bound').length,
      counters: { ...s.counters.messages, ...s.counters.statuses, dropped: { ...s.counters.dropped } },
      port: { ...n.dhcp6?.counters },
    },
  };
}

/** `vswitch dhcp leases` rows of a network's DHCPv6 server (family ipv6). */
export function dhcp6Leases(router: string, n: RouterNetwork, now: number): Record<string, unknown>[] {
  return (n.opts.dhcp6?.leases(now) ?? []).map((l) => ({
    router, network: n.name, family: 'ipv6', ip: formatIp6(l.address), mac: l.mac === 0 ? '' : formatMac(l.mac), state: l.state,
    hostname: l.hostname ?? '', clientId: l.duid ?? '', iaid: l.iaid ?? null, port: l.port ?? '',
    expiresAt: new Date(l.expiresAt).toISOString(), expiresInSec: Math.max(0, Math.round((l.expiresAt - now) / 1000)),
  }));
}
