/*
 * Control-socket commands: each takes the JSON `args` of a request, checks them, and
 * calls the service. Results are plain JSON; the CLI renders tables from the same data.
 */
import { BOND_MODES, DROP_REASONS, formatMac, type Bridge, type Port, type VlanSpec } from '@vswitch/switch';
import { BOND_SPEC_DEFAULTS, type BondSpec, bondViews } from './bond-port.js';
import { VswitchError } from '../errors.js';
import { formatIp4 } from '@vswitch/switch';
import os from 'node:os';
import { VERSION } from '../version.js';
import { memoryReducerOn, sessionInfo } from './session.js';
import { DNS_DROP_REASONS, DNS_RESULTS } from '@vswitch/nat';
import { Stream } from './control.js';
import type { ManagedRouter } from './routers.js';
import { dhcp6Leases, dhcp6View } from './dhcp6.js';
import type { PortSettings, Vswitch } from './service.js';
import type { GuardSwitches } from './state.js';
import { type LoopConf, trafficSettings, trafficView, type TrafficSet } from './traffic.js';

type Args = Record<string, unknown>;
export type Handler = (sw: Vswitch, a: Args) => unknown;

function str(a: Args, key: string): string {
  const v = a[key];
  if (typeof v !== 'string' || v === '') throw new VswitchError('EINVAL', `missing argument: ${key}`);
  return v;
}
function optStr(a: Args, key: string): string | undefined {
  return a[key] === undefined ? undefined : str(a, key);
}
function num(a: Args, key: string): number {
  const v = a[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new VswitchError('EINVAL', `argument ${key} must be a number`);
  return v;
}
function optNum(a: Args, key: string): number | undefined {
  return a[key] === undefined ? undefined : num(a, key);
}
function optBool(a: Args, key: string): boolean | undefined {
  const v = a[key];
  if (v !== undefined && typeof v !== 'boolean') throw new VswitchError('EINVAL', `argument ${key} must be true or false`);
  return v;
}

export function portView(p: Port, maxMacs?: number): Record<string, unknown> {
  return {
    name: p.name,
    kind: p.kind,
    state: p.up ? 'up' : 'down',
    ...(p.up ? {} : { downReason: p.downReason }),
    vlan: { mode: p.vlan.mode(), pvid: p.vlan.pvid, members: p.vlan.members() },
    ...(p.storm.pps > 0 ? { stormControl: { pps: p.storm.pps } } : {}),
    ...(p.guard.active ? {
      guard: {
        dhcp: p.guard.dhcp, ipSource: p.guard.ipSource, bindings: p.guard.leased.size + p.guard.configured.size,
        ra: p.guard.ra, dhcpv6: p.guard.dhcpv6, ipv6Source: p.guard.ipv6Source,
        ipv6Addresses: p.guard.ip6?.count(p.id) ?? 0, maxIpv6Addresses: p.guard.maxIpv6,
      },
    } : {}),
    ...(maxMacs !== undefined && maxMacs > 0 ? { maxMacs } : {}),
    ...trafficView(p),
    ...(p.io.readRoundsFull ? { readRoundsFull: p.io.readRoundsFull } : {}),
    ...p.io.describe(),
  };
}

/**
 * A bridge with its ports; `source`: "config" (the config file) or "runtime" (the
 * CLI, kept in the state directory), `overrides`: file settings the CLI changed;
 * `failed`: ports wanted but not running (retried at the next reload).
 */
export function bridgeView(br: Bridge, sw?: Vswitch): Record<string, unknown> {
  const src = sw?.bridgeSource(br.name);
  return {
    name: br.name,
    ...(src !== undefined ? { source: src.source, overrides: src.overrides } : {}),
    ageing: br.fdb.ageingSec,
    maxMacs: br.fdb.maxEntries,
    macs: br.fdb.size,
    loopProtection: br.loop.settings(),
    readQuantum: br.readQuantum,
    readShare: br.readShare,
    readFrames: br.readFrames,
    readSparse: br.readSparse,
    flowCache: br.flowCache,
    ports: [...br.ports.values()].map((p) => {
      const v = portView(p, br.fdb.portLimit(p.id));
      const ps = sw?.portSource(p.name);
      const mr = sw?.routerOfNetwork(p.name);
      if (mr !== undefined) return { ...v, source: 'config', overrides: [], router: mr.name };
      return ps === undefined ? v : { ...v, source: ps.source, overrides: ps.overrides };
    }),
    ...(sw !== undefined ? { failed: sw.failedPorts(br.name) } : {}),
  };
}

function statsView(br: Bridge): Record<string, unknown> {
  return {
    name: br.name,
    fdb: { size: br.fdb.size, ...br.fdb.counters },
    forwarding: { ...br.counters },
    flowCache: { on: br.flowCache, ...br.flowCacheCounters },
    eventsSuppressed: br.eventsSuppressed,
    deferredDropped: br.deferredDropped,
    ports: [...br.ports.values()].map((p) => ({
      name: p.name, state: p.up ? 'up' : 'down', downEvents: p.downEvents, macs: br.fdb.portCount(p.id),
      ...p.counters(),
    })),
  };
}

function bridges(sw: Vswitch, name: string | undefined): Bridge[] {
  return name === undefined ? [...sw.bridges.values()] : [sw.bridge(name)];
}

function fdbView(sw: Vswitch, br: Bridge, now: number): Record<string, unknown>[] {
  return br.fdb.entries()
    .sort((a, b) => a.vid - b.vid || a.mac - b.mac)
    .map((e) => ({
      bridge: br.name,
      mac: formatMac(e.mac),
      vlan: e.vid,
      port: br.portName(e.port),
      static: e.isStatic,
      ...(e.isStatic ? { source: sw.fdbSource(br.name, e.vid, e.mac) ?? 'runtime' } : { ageSec: Math.max(0, Math.round((now - e.updated) / 100) / 10) }),
    }));
}

/** The named router, or the only one when no name is given. */
function pickRouter(sw: Vswitch, name: string | undefined): ManagedRouter {
  if (name !== undefined) return sw.router(name);
  if (sw.routers.size === 1) return [...sw.routers.values()][0];
  throw new VswitchError(sw.routers.size === 0 ? 'ENOENT' : 'EINVAL',
    sw.routers.size === 0 ? 'no router is configured' : `several routers: name one (${[...sw.routers.keys()].join(', ')})`);
}

function routers(sw: Vswitch, name: string | undefined): ManagedRouter[] {
  return name === undefined ? [...sw.routers.values()] : [sw.router(name)];
}

function routerView(mr: ManagedRouter): Record<string, unknown> {
  const r = mr.router;
  const now = performance.now();
  return {
    name: mr.name,
    uplink: r.uplink?.describe() ?? r.host?.describe() ?? null,
    /** Per bridge port, packets per second (0 = off). */
    limits: r.limits ?? null,
    // state: "ok", or "dhcp failed: <why>" (its DHCP server disabled by a lease file that cannot be trusted).
    networks: [...r.networks.values()].map((n) => {
      const failed = mr.dhcpFailed.get(n.name);
      return {
        name: n.name, vlan: n.opts.vlan, address: `${formatIp4(n.ip)}/${n.opts.prefix}`, dhcp: n.opts.dhcp !== undefined,
        state: failed === undefined ? 'ok' : `dhcp failed: ${failed}`,
        ...(n.opts.dhcp !== undefined ? { dhcpPolicy: n.opts.dhcp.policy() } : {}),
        ...(n.nd !== undefined ? { ipv6: { ...n.nd.describe(), counters: { ...n.nd.counters }, neighbours: r.route6.cacheOf(n)?.size ?? 0, ...dhcp6View(mr, n) } } : {}),
        counters: { ...n.counters },
        rateLimited: { ...n.limiter.totals(), ports: n.limiter.view(now) },
      };
    }),
    forwards: mr.forwardsFailed === undefined ? 'ok' : `failed: ${mr.forwardsFailed}`,
    counters: { ...r.counters },
    // IPv6 forwarding (route6.ts): its counters, and the uplink's IPv6 side when it has one.
    ipv6: r.route6.describe(),
    nat: r.napt ? { ...r.napt.table.stats(), maxSessionsPerPort: r.napt.table.config.maxSessionsPerPort, ports: r.napt.table.portCounts() } : null,
    hostNat: r.host ? r.host.stats() : null,
    // DNS over TCP to the gateway without a host uplink (relayed to the upstream resolver).
    ...(r.dnsTcp ? { dnsTcp: r.dnsTcp.stats().tcp } : {}),
    // The gateways' DNS server: where non-local names go, and its counts.
    dns: mr.dns === undefined ? null : {
      forward: mr.dns.opts.forward ? (mr.dns.resolvers!.list().servers.map(formatIp4).join(', ') || 'no upstream') : 'host NAT (uplink.dns)',
      upstreamFrom: mr.dns.opts.forward ? (mr.dns.resolvers!.list().file ?? 'config') : 'uplink',
      outstanding: mr.dns.outstanding,
      results: Object.fromEntries(DNS_RESULTS.map((k, i) => [k, mr.dns!.results[i]])),
      dropped: Object.fromEntries(DNS_DROP_REASONS.map((k, i) => [k, mr.dns!.drops[i]])),
    },
  };
}

/** port.set's and port.traffic's BPDU guard and rate arguments, their types checked (values: traffic.ts). */
function trafficArgs(a: Args): TrafficSet {
  const set: TrafficSet = {};
  if (a.bpduGuard !== undefined) {
    if (typeof a.bpduGuard !== 'boolean') throw new VswitchError('EINVAL', 'argument bpduGuard must be true or false');
    set.bpduGuard = a.bpduGuard;
  }
  for (const k of ['ingressRate', 'ingressBurst', 'egressRate', 'egressBurst'] as const) {
    const v = a[k];
    if (v === undefined) continue;
    if (typeof v !== 'string' && typeof v !== 'number') throw new VswitchError('EINVAL', `argument ${k} must be a string such as "100mbit" or a number`);
    set[k] = v;
  }
  set.ingressPps = optNum(a, 'ingressPps');
  set.egressPps = optNum(a, 'egressPps');
  return set;
}

/**
 * `port set PORT guard MODE`: the guard switches each mode sets (default: the policy of
 * guards.ts decides). on and off take the IPv6 guards (RA, DHCPv6, IPv6 source) along
 * with the IPv4 ones; dhcp-only keeps the two server guards (DHCP, DHCPv6, and the RA
 * guard: a rogue router is a rogue server) and lets any source address through.
 */
const GUARD_MODES: Record<string, GuardSwitches> = {
  on: { dhcp: true, ipSource: true, ra: true, dhcpv6: true, ipv6Source: true },
  off: { dhcp: false, ipSource: false, ra: false, dhcpv6: false, ipv6Source: false },
  'dhcp-only': { dhcp: true, ipSource: false, ra: true, dhcpv6: true, ipv6Source: false },
  default: {},
};

export const handlers: Record<string, Handler> = {
  ping: (sw) => ({
    pid: process.pid, version: VERSION, session: sessionInfo(), nice: os.getPriority(0), memoryReducer: memoryReducerOn(), settings: sw.daemonView(),
  }),
  /** Daemon-wide settings, where each comes from, and poll before sleep's window and counters. */
  'daemon.show': (sw) => sw.daemonView(),
  /** args: any of pollBeforeSleepUs (0 = off, up to 1000), pollBeforeSleepBudgetMs (1-1000), tapWriteBatch (boolean), turnYieldUs (0 = off, up to 100000). Kept across restarts; returns daemon.show. */
  'daemon.set': (sw, a) => sw.daemonSet({
    pollBeforeSleepUs: optNum(a, 'pollBeforeSleepUs'), pollBeforeSleepBudgetMs: optNum(a, 'pollBeforeSleepBudgetMs'), tapWriteBatch: optBool(a, 'tapWriteBatch'),
    turnYieldUs: optNum(a, 'turnYieldUs'),
  }),

  addbr: (sw, a) => {
    sw.addBridge(str(a, 'bridge'));
    return null;
  },
  delbr: (sw, a) => {
    sw.delBridge(str(a, 'bridge'));
    return null;
  },
  addif: (sw, a) => {
    const vlan = a.vlan as VlanSpec | undefined;
    const path = optStr(a, 'socket');
    const mode = optStr(a, 'mode');
    if (path !== undefined && (!path.startsWith('/') || Buffer.byteLength(path) > 107)) {
      throw new VswitchError('EINVAL', `socket path must be absolute and at most 107 bytes: ${path}`);
    }
    if (mode !== undefined && !/^0?[0-7]{3}$/.test(mode)) throw new VswitchError('EINVAL', `bad socket mode '${mode}' (octal, such as 0660)`);
    if (path !== undefined && (a.attach === true || a.persistent === true)) throw new VswitchError('EINVAL', 'a socket port is neither attached nor persistent');
    if (a.connect === true && (path === undefined || mode !== undefined)) throw new VswitchError('EINVAL', 'connect needs a socket path and takes no mode');
    sw.addPort(str(a, 'bridge'), str(a, 'ifname'), {
      type: path !== undefined ? 'socket' : a.attach === true ? 'attach' : 'tap',
      ...(path !== undefined ? { path, mode, connect: a.connect === true } : {}),
      persistent: a.persistent === true,
      vlan,
      maxMacs: optNum(a, 'maxMacs'),
    });
    const br = sw.bridge(str(a, 'bridge'));
    const p = br.port(str(a, 'ifname'))!;
    return portView(p, br.fdb.portLimit(p.id));
  },
  /** args: bridge, bond, members (interface names), mode?, lacp? ('active'|'passive'), lacpRate? ('fast'|'slow'), vlan?. */
  'bond.add': (sw, a) => {
    const members = a.members;
    if (!Array.isArray(members) || members.length === 0 || !members.every((m) => typeof m === 'string' && m !== '')) {
      throw new VswitchError('EINVAL', 'members must be a non-empty list of interface names');
    }
    const mode = optStr(a, 'mode') ?? BOND_SPEC_DEFAULTS.mode;
    const lacp = optStr(a, 'lacp') ?? BOND_SPEC_DEFAULTS.lacp;
    const lacpRate = optStr(a, 'lacpRate') ?? BOND_SPEC_DEFAULTS.lacpRate;
    if (!(BOND_MODES as readonly string[]).includes(mode)) throw new VswitchError('EINVAL', `bad bond mode '${mode}' (${BOND_MODES.join(', ')})`);
    if (lacp !== 'active' && lacp !== 'passive') throw new VswitchError('EINVAL', `bad lacp '${lacp}' (active, passive)`);
    if (lacpRate !== 'fast' && lacpRate !== 'slow') throw new VswitchError('EINVAL', `bad lacpRate '${lacpRate}' (fast, slow)`);
    sw.addPort(str(a, 'bridge'), str(a, 'bond'), {
      type: 'bond', bond: { members: members as string[], mode: mode as BondSpec['mode'], lacp, lacpRate }, vlan: a.vlan as VlanSpec | undefined,
    });
    return bondViews([sw.bridge(str(a, 'bridge'))], str(a, 'bond'))[0];
  },
  'bond.del': (sw, a) => {
    const br = sw.bridge(str(a, 'bridge'));
    const p = br.port(str(a, 'bond'));
    if (p !== undefined && p.kind !== 'bond') throw new VswitchError('EINVAL', `${p.name} is a ${p.kind} port, not a bond (delif removes it)`);
    sw.delPort(str(a, 'bridge'), str(a, 'bond'));
    return null;
  },
  /** args: bond? (a bond's name): every bond of every bridge with its members. */
  'bond.show': (sw, a) => {
    const only = optStr(a, 'bond');
    const out = bondViews(sw.bridges.values(), only);
    if (only !== undefined && out.length === 0) throw new VswitchError('ENOENT', `no bond ${only}`);
    return out;
  },
  delif: (sw, a) => {
    sw.delPort(str(a, 'bridge'), str(a, 'ifname'));
    return null;
  },
  show: (sw, a) => bridges(sw, optStr(a, 'bridge')).map((br) => bridgeView(br, sw)),
  /**
   * args: ifname, and any of bpduGuard (boolean), ingressRate ("100mbit" or "off") with
   * ingressBurst ("1mb") and ingressPps, egressRate with egressBurst and egressPps. As port.set with
   * only these (kept the same way); returns what changed and the port.
   */
  'port.traffic': (sw, a) => {
    const ifname = str(a, 'ifname');
    const changed = sw.portTraffic(ifname, trafficArgs(a));
    return { changed, port: portView(sw.bridgeOf(ifname).port(ifname)!) };
  },
  /** args: bridge, and any of macFlapMoves, macFlapHold (seconds), bpduRecovery (seconds), readQuantum (bytes, 0 = off), readShare (bytes|frames), readFrames (0 = off), readSparse (boolean), flowCache (boolean). */
  'bridge.loop': (sw, a) => sw.bridgeLoop(str(a, 'bridge'), {
    macFlapMoves: optNum(a, 'macFlapMoves'), macFlapHold: optNum(a, 'macFlapHold'), bpduRecovery: optNum(a, 'bpduRecovery'),
    readQuantum: optNum(a, 'readQuantum'), readShare: optStr(a, 'readShare') as LoopConf['readShare'], readFrames: optNum(a, 'readFrames'),
    readSparse: a.readSparse as boolean | undefined, // checkLoop refuses a non-boolean
  }, optBool(a, 'flowCache')),
  /** args: ifname. Opens a port shut by the BPDU guard or loop detection before its time. */
  'port.recover': (sw, a) => ({ recovered: sw.recoverPort(str(a, 'ifname')) }),
  showmacs: (sw, a) => fdbView(sw, sw.bridge(str(a, 'bridge')), performance.now()),
  setageing: (sw, a) => ({ ageing: sw.setAgeing(str(a, 'bridge'), num(a, 'seconds')) }),

  'vlan.add': (sw, a) => sw.vlanAdd(str(a, 'ifname'), num(a, 'from'), num(a, 'to'), { pvid: a.pvid === true, untagged: a.untagged === true, force: a.force === true }),
  /**
   * args: ifname, and any of guard ("on", "off", "dhcp-only", "default"), storm (pps, 0 = off), maxMacs, persistent,
   * and port.traffic's bpduGuard, ingressRate (ingressBurst, ingressPps), egressRate (egressBurst, egressPps).
   */
  'port.set': (sw, a) => {
    const set: PortSettings = trafficSettings(trafficArgs(a));
    const guard = optStr(a, 'guard');
    if (guard !== undefined) {
      const g = GUARD_MODES[guard];
      if (g === undefined || !Object.hasOwn(GUARD_MODES, guard)) throw new VswitchError('EINVAL', `guard must be ${Object.keys(GUARD_MODES).join(', ')}; got ${guard}`);
      set.guard = g;
    }
    set.stormPps = optNum(a, 'storm');
    set.maxMacs = optNum(a, 'maxMacs');
    if (a.persistent !== undefined) {
      if (typeof a.persistent !== 'boolean') throw new VswitchError('EINVAL', 'argument persistent must be true or false');
      set.persistent = a.persistent;
    }
    const ifname = str(a, 'ifname');
    sw.portSet(ifname, set);
    const br = sw.bridgeOf(ifname);
    const p = br.port(ifname)!;
    return portView(p, br.fdb.portLimit(p.id));
  },
  'vlan.del': (sw, a) => {
    sw.vlanDel(str(a, 'ifname'), num(a, 'from'), num(a, 'to'));
    return null;
  },
  'vlan.show': (sw, a) => {
    const only = optStr(a, 'ifname');
    const brs = only === undefined ? [...sw.bridges.values()] : [sw.bridgeOf(only)];
    return brs.flatMap((br) => [...br.ports.values()]
      .filter((p) => only === undefined || p.name === only)
      .map((p) => ({ bridge: br.name, port: p.name, mode: p.vlan.mode(), pvid: p.vlan.pvid, vlans: p.vlan.members() })));
  },

  'fdb.add': (sw, a) => {
    sw.fdbAdd(str(a, 'mac'), str(a, 'ifname'), optNum(a, 'vlan'));
    return null;
  },
  'fdb.del': (sw, a) => {
    sw.fdbDel(str(a, 'mac'), str(a, 'ifname'), optNum(a, 'vlan'));
    return null;
  },
  'fdb.flush': (sw, a) => sw.fdbFlush({
    bridge: optStr(a, 'bridge'), port: optStr(a, 'ifname'), vlan: optNum(a, 'vlan'), dynamicOnly: a.dynamic === true,
  }),
  'fdb.show': (sw, a) => {
    const now = performance.now();
    return bridges(sw, optStr(a, 'bridge')).flatMap((br) => fdbView(sw, br, now));
  },

  'vxlan.show': (sw) => sw.vxlan.show(),
  'evpn.show': (sw) => sw.evpn.show(),
  'evpn.clear-dup': (sw, a) => sw.evpn.clearDup(optStr(a, 'mac'), optNum(a, 'vni')),
  'vxlan.add': (sw, a) => sw.vxlan.add(str(a, 'bridge'), num(a, 'vni'), num(a, 'vlan'), Array.isArray(a.flood) ? a.flood.map(String) : []),
  'vxlan.del': (sw, a) => sw.vxlan.del(num(a, 'vni')),
  'vxlan.fdb.add': (sw, a) => sw.vxlan.fdb(true, str(a, 'mac'), num(a, 'vni'), str(a, 'dst')),
  'vxlan.fdb.del': (sw, a) => sw.vxlan.fdb(false, str(a, 'mac'), num(a, 'vni')),
  'router.show': (sw, a) => routers(sw, optStr(a, 'router')).map(routerView),
  'dhcp.leases': (sw, a) => {
    const only = optStr(a, 'network');
    const now = Date.now();
    const out: Record<string, unknown>[] = [];
    for (const mr of sw.routers.values()) {
      for (const n of mr.router.networks.values()) {
        if (only !== undefined && n.name !== only) continue;
        for (const l of n.opts.dhcp?.leases(now) ?? []) {
          out.push({
            router: mr.name, network: n.name, family: 'ipv4', ip: formatIp4(l.ip), mac: formatMac(l.mac), state: l.state,
            hostname: l.hostname ?? '', clientId: l.clientId ?? '', port: l.port ?? '',
            expiresAt: new Date(l.expiresAt).toISOString(), expiresInSec: Math.max(0, Math.round((l.expiresAt - now) / 1000)),
          });
        }
        out.push(...dhcp6Leases(mr.name, n, now));
      }
    }
    if (only !== undefined && !out.length && ![...sw.routers.values()].some((r) => r.router.networks.has(only))) {
      throw new VswitchError('ENOENT', `no such network: ${only}`);
    }
    return out;
  },
  'nat.sessions': (sw, a) => routers(sw, optStr(a, 'router')).flatMap((mr): Record<string, unknown>[] => {
    const now = performance.now();
    const host = mr.router.host;
    // Host NAT sessions have no public port of their own: the host socket's local address stands for it.
    if (host !== undefined) return host.sessions(now).map((s) => ({ router: mr.name, ...s, publicPort: s.outside, idleSec: Math.round(s.idleMs / 1000) }));
    return (mr.router.napt?.table.sessions(now) ?? []).map((s) => ({ router: mr.name, ...s }));
  }),
  'nat.forward.add': (sw, a) => {
    const mr = pickRouter(sw, optStr(a, 'router'));
    mr.addForward({ proto: str(a, 'proto'), public: str(a, 'public'), inside: str(a, 'inside') });
    return mr.forwardsView();
  },
  'nat.forward.del': (sw, a) => {
    const mr = pickRouter(sw, optStr(a, 'router'));
    const proto = str(a, 'proto');
    if (proto !== 'tcp' && proto !== 'udp') throw new VswitchError('EINVAL', `protocol must be tcp or udp, got ${proto}`);
    const m = /^(\d+)(?:-(\d+))?$/.exec(str(a, 'public'));
    if (!m) throw new VswitchError('EINVAL', `bad public port '${str(a, 'public')}'`);
    mr.delForward(proto, Number(m[1]), Number(m[2] ?? m[1]));
    return null;
  },
  'nat.forward.show': (sw, a) => routers(sw, optStr(a, 'router')).flatMap((mr) => mr.forwardsView()),

  'dhcp.reservation.add': (sw, a) => {
    sw.reservationAdd(str(a, 'network'), str(a, 'mac'), str(a, 'ip'), optStr(a, 'hostname'));
    return sw.reservations(str(a, 'network'));
  },
  'dhcp.reservation.del': (sw, a) => {
    sw.reservationDel(str(a, 'network'), str(a, 'mac'));
    return null;
  },
  'dhcp.reservation.show': (sw, a) => sw.reservations(optStr(a, 'network')),

  stats: (sw, a) => bridges(sw, optStr(a, 'bridge')).map(statsView),
  /** The connection becomes a stream of events (monitor.ts); the `ok` reply comes first. */
  monitor: (sw) => new Stream((sock) => { sw.monitor.subscribe(sock); }),
  'monitor.stats': (sw) => sw.monitor.stats(),
  'drop.reasons': () => DROP_REASONS,
};
