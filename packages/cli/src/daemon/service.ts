/*
 * The daemon's state: named bridges, their ports and the routers, built from the
 * config file plus the runtime overlay (state.ts: what the CLI changed, kept in the
 * state directory) and changed by control-socket commands and reloads. It owns the
 * rules that span bridges (a port name belongs to at most one bridge, an interface
 * is attached once, never loopback or a router's uplink).
 *
 * Every change, a CLI command, a reload or the start itself, is one transaction
 * (`#transition`) from the running state to the one state.ts computes:
 *   1. prepare what is new: bridges, TAPs opened, interfaces attached, sockets
 *      bound, routers built (lease files read), in-place router edits validated;
 *      nothing running is touched, and on any failure what was prepared is closed
 *      and the error says that nothing was changed;
 *   2. a CLI change is written to runtime.json before it takes effect (a change
 *      that cannot be kept is not made);
 *   3. swap: removals first (so a port may move between bridges), then additions
 *      and in-place edits, which cannot fail any more.
 * Only what differs is touched: unchanged ports keep their devices, MAC entries
 * and counters; a port's VLANs and limits change in place; a port whose kind
 * changes (type, persistence, owner, offloads, socket path/role) is closed and
 * opened anew, the one step done during the swap (a same-named device cannot be
 * opened twice): if that fails, the port is left failed, logged and retried.
 * Runtime ports that cannot be restored at start are failed the same way, never fatal.
 *
 * Events worth watching (ports, MACs, leases, uplinks) also go to `monitor`
 * (monitor.ts), the hub `vswitch monitor` clients subscribe to.
 */
import { VxlanService } from './vxlan.js';
import { EvpnService } from './evpn/service.js';
import {
  Bridge, type BridgeEvent, checkVid, formatMac, parseIp4, parseMac, type Port, type PortIo,
  VlanPolicy, type VlanSpec, VlanPolicyError,
} from '@vswitch/switch';
import { addonFlowCache, AttachIo, nativeSegmenter, SocketIo, TapIo } from '@vswitch/switch/ports';
import { type BondSpec, bondOf, openBond } from './bond-port.js';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { ConfigSchema, checkIfName, type Config, type PortConfig, type RouterConfig } from '../config.js';
import { ManagedRouter } from './routers.js';
import { lease6Bound } from './dhcp6.js';
import { applyGuard, dhcpServed, ipv6Served, leaseBound, leaseGone, reserveGateways, type GuardSpec } from './guards.js';
import { GuardDropLog } from './guard-log.js';
import { EventBudget, LEARN_BUDGET_PER_SEC, Monitor, type MonitorEvent } from './monitor.js';
import {
  bpduGuardOf, checkLoop, LOOP_KEYS, type LoopConf, loopConf, loopSettings, type RateConf, rateSpec, rateText, type RateValue,
  type TrafficSet, trafficSettings,
} from './traffic.js';
import {
  BRIDGE_DEFAULTS, DAEMON_SETTINGS, type DaemonSetting, type DaemonSettings, daemonSettingProblem, type Desired, type DesiredPort, FLOW_CACHE_KEY, flowCacheOn, runtimeBridge, GUARD_SWITCHES, type GuardSwitches, type Overlay, type PortSetting, type RouterEdit, canonSpec,
  canonVlan, effective, emptyDesired, emptyOverlay, fdbKey, fileValue, loadOverlay, overlaySize, planChanges, reservationProblem,
  loopKey, resKey, routerDiff, runtimeFile, same, saveOverlay, settingKey, settingOf, withEntry, withSetting, withoutEntries,
} from './state.js';
import { VswitchError } from '../errors.js';
import type { Logger } from './log.js';
import { pollBeforeSleepStats, setPollBeforeSleep, setTapWriteBatch, setTurnYield, stats as netdevStats } from '@vswitch/netdev';

export interface AddPortSpec {
  type: 'tap' | 'attach' | 'socket' | 'bond';
  /** bond only: members, mode, LACP activity and rate (bond-port.ts). */
  bond?: BondSpec;
  /** socket only: the Unix socket to listen on, and its file mode (octal text, default "0600"). */
  path?: string;
  mode?: string;
  /** socket only: connect to `path` (QEMU listens) instead of listening. */
  connect?: boolean;
  persistent?: boolean;
  /** tap, attach: offloads (default on): GSO frames travel with their virtio-net header. */
  offload?: boolean;
  owner?: number;
  group?: number;
  vlan?: VlanSpec;
  maxMacs?: number;
  /** Storm control: flooded frames per second (absent = none). */
  stormPps?: number;
  /** Anti-spoofing; absent keys take the default (guards.ts). */
  guard?: GuardSpec;
  /** BPDU guard (absent: on for tap and socket ports, traffic.ts) and rate limits (absent: none). */
  bpduGuard?: boolean;
  ingressRate?: RateConf;
  egressRate?: RateConf;
}

type Mode = 'start' | 'reload' | 'cli';

/** What `port set` changes; absent: unchanged. */
export interface PortSettings {
  guard?: GuardSwitches;
  stormPps?: number;
  maxMacs?: number;
  persistent?: boolean;
  bpduGuard?: boolean;
  ingressRate?: RateValue;
  egressRate?: RateValue;
}

/** A router network's port, built with its router and placed on its bridge at the swap. */
interface NetPort { bridge: string; name: string; net: PortIo; vlan: VlanPolicy }

export class Vswitch {
  readonly bridges = new Map<string, Bridge>();
  /** Port name -> bridge name (running ports). */
  readonly #owner = new Map<string, string>();
  readonly #specs = new Map<string, AddPortSpec>();
  readonly routers = new Map<string, ManagedRouter>();
  /** The config file as last applied: a reload compares the new file with this one, not with the running state. */
  #file: Config = ConfigSchema.parse({});
  #overlay: Overlay = emptyOverlay();
  #desired: Desired = emptyDesired();
  /** Ports wanted but not running (could not be opened): why. Retried on reload. */
  readonly #failed = new Map<string, string>();
  /** Where runtime.json lives; undefined: changes are not kept (tests building a switch by hand). */
  #stateDir: string | undefined;
  /** Live events for `vswitch monitor` clients. */
  readonly monitor = new Monitor();
  /** Learned-MAC events per bridge (monitor.ts LEARN_BUDGET_PER_SEC). */
  readonly #learnBudget = new Map<string, EventBudget>();
  /** Each router uplink's state at the last tick, for uplink_up/uplink_down events. */
  readonly #uplinkUp = new Map<string, boolean>();
  /** Guard and storm-control drops as log lines, read from the counters each tick (guard-log.ts). */
  readonly #guardLog = new GuardDropLog((l) => this.log.warn(l, l.event));
  #ticker: NodeJS.Timeout | undefined;
  /**
   * Told of each router a transition rebuilt, once its successor is placed: the old
   * router (closed, its counters still readable), the new one, and the old router's
   * network ports by network name (removed from their bridges). The metrics carry
   * the old counters over (metrics.ts "Counters across a rebuild").
   */
  readonly routerRebuilt = new Set<(old: ManagedRouter, next: ManagedRouter, oldPorts: Map<string, Port>) => void>();

  /** The VXLAN tunnel endpoint (vxlan.ts): its tunnel ports live in the bridges, outside the desired state. */
  readonly vxlan: VxlanService;
  /** BGP EVPN for the VTEP's VNIs (evpn/service.ts). */
  readonly evpn: EvpnService;

  constructor(private readonly log: Logger) {
    this.vxlan = new VxlanService(log, () => this.bridges);
    this.evpn = new EvpnService(log, { vtep: () => this.vxlan.vtep, local: () => this.#file?.vxlan?.local ?? '' });
    this.vxlan.changed = () => this.evpn.vxlanChanged();
    this.monitor.onActive = (on) => {
      for (const br of this.bridges.values()) this.#watchLearning(br, on);
    };
  }

  /** Starts from `cfg` and the runtime state kept in its state directory; on a failure of the file's objects undoes everything and throws. */
  apply(cfg: Config): void {
    this.#stateDir = cfg.stateDir;
    const loaded = loadOverlay(cfg.stateDir);
    if (loaded.error !== undefined) {
      this.log.error({ event: 'runtime_state_failed', error: loaded.error, movedTo: loaded.movedTo },
        'runtime_state_failed: starting from the config file alone; the bad file was moved aside');
    }
    const { desired, overlay, notes } = effective(cfg, loaded.overlay);
    for (const note of notes) this.log.warn({ event: 'runtime_state_adjusted', note }, 'runtime_state_adjusted');
    const restored = overlaySize(overlay);
    this.#file = cfg;
    this.#ticker ??= setInterval(() => this.#tick(), 1000);
    this.#ticker.unref();
    try {
      this.#transition(desired, overlay, 'start');
      this.vxlan.learningDefault = cfg.evpn === undefined;
      this.vxlan.apply(cfg.vxlan, cfg.stateDir);
      this.evpn.apply(cfg.evpn, cfg.stateDir);
    } catch (e) {
      this.close();
      throw e;
    }
    if (restored > 0) this.log.info({ event: 'runtime_state_restored', file: runtimeFile(cfg.stateDir), entries: restored }, 'runtime_state_restored');
  }

  /**
   * Applies a new config file: what the file changed since the last one, and
   * nothing else (runtime changes stay unless the file changed the same setting).
   * All or nothing; returns what was done.
   */
  reload(cfg: Config): string[] {
    if (this.#stateDir !== undefined && cfg.stateDir !== this.#stateDir) {
      this.log.warn({ event: 'config_restart_needed', key: 'stateDir', running: this.#stateDir, file: cfg.stateDir }, 'config_restart_needed');
    }
    const { desired, overlay, notes } = effective(cfg, this.#overlay);
    const done = this.#transition(desired, overlay, 'reload', cfg);
    this.vxlan.learningDefault = cfg.evpn === undefined;
    done.push(...this.vxlan.apply(cfg.vxlan));
    done.push(...this.evpn.apply(cfg.evpn));
    for (const note of notes) {
      this.log.warn({ event: 'runtime_state_adjusted', note }, 'runtime_state_adjusted');
      done.push(`runtime: ${note}`);
    }
    this.log.info({ event: 'config_applied', changes: done }, 'config_applied');
    return done;
  }

  close(): void {
    // The addon's loop is the process's: a later Vswitch in it (tests) starts from off, as its desired state does.
    const off = emptyDesired().daemon;
    if (this.#desired.daemon.pollBeforeSleepUs !== 0 || this.#desired.daemon.pollBeforeSleepBudgetMs !== off.pollBeforeSleepBudgetMs) {
      setPollBeforeSleep(off.pollBeforeSleepUs, off.pollBeforeSleepBudgetMs);
    }
    this.#desired = { ...this.#desired, daemon: off };
    if (this.#tapWriteBatch.on) this.#tapWriteBatch = setTapWriteBatch(false);
    this.#tapWriteBatchSet = undefined;
    if (this.#turnYieldSet) setTurnYield(0);
    this.#turnYieldSet = undefined;
    this.evpn.close();
    this.vxlan.close();
    clearInterval(this.#ticker);
    this.#ticker = undefined;
    for (const name of [...this.routers.keys()]) this.#dropRouter(name);
    for (const name of [...this.bridges.keys()]) {
      const br = this.bridges.get(name)!;
      for (const p of br.ports.keys()) {
        this.#owner.delete(p);
        this.#specs.delete(p);
      }
      br.close();
      this.bridges.delete(name);
    }
  }

  /* ---------- views ---------- */

  /** Where a bridge, port or static entry comes from: the config file or the CLI, and which file settings the CLI overrides. */
  bridgeSource(name: string): { source: string; overrides: string[] } {
    const b = this.#desired.bridges.get(name);
    return { source: b?.source ?? 'runtime', overrides: b?.overrides ?? [] };
  }

  portSource(name: string): { source: string; overrides: string[] } | undefined {
    const p = this.#desired.ports.get(name);
    return p === undefined ? undefined : { source: p.source, overrides: p.overrides };
  }

  fdbSource(bridge: string, vid: number, mac: number): string | undefined {
    return this.#desired.fdb.get(fdbKey(bridge, vid, formatMac(mac)))?.source;
  }

  /** Ports wanted on `bridge` that are not running, and why. */
  failedPorts(bridge: string): { name: string; reason: string; source: string }[] {
    return [...this.#failed].filter(([n]) => this.#desired.ports.get(n)?.bridge === bridge)
      .map(([name, reason]) => ({ name, reason, source: this.#desired.ports.get(name)!.source }));
  }

  reservations(network?: string): { network: string; mac: string; ip: string; hostname?: string; source: string }[] {
    if (network !== undefined) this.#dhcpNetwork(network);
    return [...this.#desired.reservations.values()].filter((r) => network === undefined || r.network === network)
      .map((r) => ({ network: r.network, mac: r.mac, ip: r.ip, ...(r.hostname !== undefined ? { hostname: r.hostname } : {}), source: r.source }));
  }

  /* ---------- CLI changes: each one edits the overlay, then one transaction makes it so ---------- */

  addBridge(name: string, opts: { ageing?: number; maxMacs?: number } = {}): Bridge {
    if (this.#desired.bridges.has(name)) throw new VswitchError('EEXIST', `bridge ${name} already exists`);
    if (!/^[A-Za-z0-9_.:-]{1,32}$/.test(name)) throw new VswitchError('EINVAL', `bad bridge name '${name}'`);
    // A file bridge deleted by delbr comes back as the file's (its ports stay deleted: each has its own entry).
    const file = fileValue(this.#file, 'bridges', name);
    const value = file ?? { ageing: opts.ageing ?? BRIDGE_DEFAULTS.ageing, maxMacs: opts.maxMacs ?? BRIDGE_DEFAULTS.maxMacs };
    this.#change(withEntry(this.#overlay, this.#file, 'bridges', name, value), (d) => d.bridges.has(name));
    return this.bridge(name);
  }

  delBridge(name: string): void {
    const b = this.#desired.bridges.get(name);
    if (b === undefined) throw new VswitchError('ENOENT', `no such bridge: ${name}`);
    const nets = [...this.routers.values()].flatMap((r) => Object.entries(r.config.networks)
      .filter(([, n]) => n.bridge === name).map(([nname]) => ({ router: r.name, network: nname })));
    if (nets.length > 0) {
      const byRouter = [...new Set(nets.map((n) => n.router))].map((r) =>
        `${nets.filter((n) => n.router === r).map((n) => `routers.${r}.networks.${n.network}`).join(', ')}`);
      throw new VswitchError('EBUSY', `bridge ${name} carries router network${nets.length > 1 ? 's' : ''} `
        + `${nets.map((n) => `${n.network} (router ${n.router})`).join(', ')}: remove ${byRouter.join(', ')} from the config file `
        + `(or move ${nets.length > 1 ? 'them' : 'it'} to another bridge) and run vswitch reload first`);
    }
    let ov = withEntry(this.#overlay, this.#file, 'bridges', name, null);
    ov = withEntry(ov, this.#file, 'ageing', name, fileValue(this.#file, 'ageing', name));
    for (const [pname, p] of this.#desired.ports) {
      if (p.bridge !== name) continue;
      ov = withEntry(ov, this.#file, 'ports', pname, null);
      ov = withEntry(ov, this.#file, 'vlans', pname, fileValue(this.#file, 'vlans', pname));
      ov = withoutEntries(ov, 'settings', (k) => k.startsWith(`${pname}/`));
    }
    ov = withoutEntries(ov, 'loop', (k) => k.startsWith(`${name}/`));
    ov = withoutEntries(ov, 'fdb', (k) => k.startsWith(`${name}/`));
    this.#change(ov, (d) => !d.bridges.has(name));
  }

  bridge(name: string): Bridge {
    const br = this.bridges.get(name);
    if (br === undefined) throw new VswitchError('ENOENT', `no such bridge: ${name}`);
    return br;
  }

  addPort(bname: string, ifname: string, spec: AddPortSpec): void {
    if (!this.#desired.bridges.has(bname)) throw new VswitchError('ENOENT', `no such bridge: ${bname}`);
    const other = this.#desired.ports.get(ifname)?.bridge;
    if (other !== undefined) {
      throw new VswitchError('EEXIST', other === bname
        ? `${ifname} is already a port of bridge ${bname}`
        : `${ifname} is already a port of another bridge (${other})`);
    }
    const bad = checkIfName(ifname);
    if (bad !== undefined) throw new VswitchError('EINVAL', `bad interface name '${ifname}': ${bad}`);
    for (const r of this.#desired.routers.values()) {
      if (ifname in r.networks) throw new VswitchError('EEXIST', `${ifname} is a network of a router`);
    }
    if (spec.type === 'socket') {
      if (spec.path === undefined) throw new VswitchError('EINVAL', 'a socket port needs a path');
      for (const [name, p] of this.#desired.ports) {
        if (p.spec.type === 'socket' && p.spec.path !== undefined && resolve(p.spec.path) === resolve(spec.path)) {
          throw new VswitchError('EEXIST', `it is already the socket of port ${name}`);
        }
      }
    }
    wrapVlan(() => (spec.vlan ? VlanPolicy.from(spec.vlan) : undefined));
    let ov = withEntry(this.#overlay, this.#file, 'ports', ifname, { bridge: bname, spec: canonSpec(spec) });
    ov = withEntry(ov, this.#file, 'vlans', ifname, fileValue(this.#file, 'vlans', ifname));
    ov = withoutEntries(ov, 'settings', (k) => k.startsWith(`${ifname}/`));
    this.#change(ov, (d) => d.ports.get(ifname)?.bridge === bname);
  }

  delPort(bname: string, ifname: string): void {
    const p = this.#desired.ports.get(ifname);
    if (p === undefined || p.bridge !== bname) {
      if (this.routerOfNetwork(ifname) !== undefined && this.#owner.get(ifname) === bname) {
        throw new VswitchError('EBUSY', `${ifname} is network ${ifname} of router ${this.routerOfNetwork(ifname)!.name}; change the router in the config`);
      }
      const br = this.bridge(bname);
      if (br.port(ifname) === undefined) throw new VswitchError('ENOENT', `${ifname} is not a port of bridge ${bname}`);
      // A port put on the bridge by hand (unit tests), outside the model.
      br.removePort(ifname);
      this.#owner.delete(ifname);
      this.#specs.delete(ifname);
      return;
    }
    let ov = withEntry(this.#overlay, this.#file, 'ports', ifname, null);
    ov = withEntry(ov, this.#file, 'vlans', ifname, fileValue(this.#file, 'vlans', ifname));
    ov = withoutEntries(ov, 'settings', (k) => k.startsWith(`${ifname}/`));
    ov = withoutEntries(ov, 'fdb', (_k, e) => e.value === ifname);
    this.#change(ov, (d) => !d.ports.has(ifname));
  }

  /** The bridge holding port `ifname`. */
  bridgeOf(ifname: string): Bridge {
    const b = this.#owner.get(ifname);
    if (b === undefined) throw new VswitchError('ENOENT', `no such port: ${ifname}`);
    return this.bridge(b);
  }

  /**
   * Control command port.traffic: a port's BPDU guard and rate limits in the words of
   * the control socket (rates as text, burst and pps beside), done as `port set`.
   */
  portTraffic(ifname: string, set: TrafficSet): Record<string, unknown> {
    const s = trafficSettings(set);
    this.portSet(ifname, s);
    return Object.fromEntries(Object.entries(s).map(([k, v]) => [k, k === 'bpduGuard' ? v : rateText(v as RateValue)]));
  }

  /**
   * `bridge set` (control command bridge.loop): a bridge's loop detection and BPDU
   * recovery times, read share and flow cache switch, in place, kept like every CLI
   * change: for a file bridge as overlay entries over the file's values, for a
   * runtime bridge in its definition.
   */
  bridgeLoop(bname: string, c: LoopConf, flowCache?: boolean): Record<string, unknown> {
    checkLoop(c);
    const b = this.#desired.bridges.get(bname);
    if (b === undefined || !this.bridges.has(bname)) throw new VswitchError('ENOENT', `no such bridge: ${bname}`);
    const want = LOOP_KEYS.filter((k) => c[k] !== undefined).map((k) => [k, c[k]!] as const);
    if (want.length === 0 && flowCache === undefined) throw new VswitchError('EINVAL', `nothing to set (${LOOP_KEYS.join(', ')}, flowCache)`);
    let ov = this.#overlay;
    if (b.source === 'config') {
      for (const [k, v] of want) ov = withEntry(ov, this.#file, 'loop', loopKey(bname, k), v);
      if (flowCache !== undefined) ov = withEntry(ov, this.#file, 'loop', loopKey(bname, FLOW_CACHE_KEY), flowCache);
    } else {
      const loop = want.length === 0 ? b.loop : { ...loopConf(b.loop), ...Object.fromEntries(want) };
      ov = withEntry(ov, this.#file, 'bridges', bname, runtimeBridge({ ...b, loop, ...(flowCache === undefined ? {} : { flowCache }) }));
    }
    this.#change(ov, (d) => {
      const now = d.bridges.get(bname);
      return now !== undefined && want.every(([k, v]) => loopConf(now.loop)[k] === v) && (flowCache === undefined || flowCacheOn(now) === flowCache);
    });
    const br = this.bridge(bname);
    const s = { ...br.loop.settings(), readQuantum: br.readQuantum, readShare: br.readShare, readFrames: br.readFrames, readSparse: br.readSparse, flowCache: br.flowCache };
    this.log.info({ event: 'bridge_loop_set', bridge: bname, ...s }, 'bridge_loop_set');
    return s;
  }

  /**
   * Control command `set` (daemon-wide settings, kept across restarts as every
   * change): poll before sleep's window and budget, batched TAP writes. Returns the settings in force.
   */
  daemonSet(set: Partial<DaemonSettings>): Record<string, unknown> {
    const want = DAEMON_SETTINGS.filter((k) => set[k] !== undefined).map((k) => [k, set[k] as number | boolean] as const);
    if (want.length === 0) throw new VswitchError('EINVAL', `nothing to set (${DAEMON_SETTINGS.join(', ')})`);
    for (const [k, v] of want) {
      const why = daemonSettingProblem(k, v);
      if (why !== undefined) throw new VswitchError('EINVAL', why);
    }
    let ov = this.#overlay;
    for (const [k, v] of want) ov = withEntry(ov, this.#file, 'daemon', k, v);
    this.#change(ov, (d) => want.every(([k, v]) => d.daemon[k] === v));
    return this.daemonView();
  }

  /** The daemon-wide settings, where each comes from, and poll before sleep's state (`show`). */
  daemonView(): Record<string, unknown> {
    const d = this.#desired.daemon;
    const n = netdevStats();
    return {
      pollBeforeSleepUs: d.pollBeforeSleepUs, pollBeforeSleepBudgetMs: d.pollBeforeSleepBudgetMs,
      overrides: [...d.overrides], pollBeforeSleep: pollBeforeSleepStats(),
      tapWriteBatch: { want: d.tapWriteBatch, ...this.#tapWriteBatch, flushes: n.uringFlushes, writes: n.uringWrites, enters: n.uringEnters, unsent: n.uringUnsent },
      turnYield: { us: d.turnYieldUs, yields: n.turnYields, awayMs: n.turnYieldNs / 1e6 },
    };
  }

  /** What the addon has in force (`want` is the desired state's), and what it was last told (undefined: nothing yet). */
  #tapWriteBatch: { on: boolean; error: string | null } = { on: false, error: null };
  #tapWriteBatchSet: boolean | undefined;
  /** The turn yield's interval the addon was last told (undefined: nothing yet; at start it is off). */
  #turnYieldSet: number | undefined;

  /** The turn yield's interval in force, µs, 0 off (metrics). */
  get turnYieldUs(): number {
    return this.#turnYieldSet ?? 0;
  }

  /** Batched TAP writes in force (metrics). */
  get tapWriteBatchOn(): boolean {
    return this.#tapWriteBatch.on;
  }

  /** Control command port.recover: opens a port shut by loop protection now. */
  recoverPort(ifname: string): boolean {
    return this.bridgeOf(ifname).recoverPort(ifname);
  }

  setAgeing(bname: string, seconds: number): number {
    if (!Number.isFinite(seconds) || seconds < 0 || seconds > 1_000_000) {
      throw new VswitchError('EINVAL', `ageing time must be 0-1000000 seconds, got ${seconds}`);
    }
    const b = this.#desired.bridges.get(bname);
    if (b === undefined) throw new VswitchError('ENOENT', `no such bridge: ${bname}`);
    const ov = b.source === 'config'
      ? withEntry(this.#overlay, this.#file, 'ageing', bname, seconds)
      : withEntry(this.#overlay, this.#file, 'bridges', bname, runtimeBridge({ ...b, ageing: seconds }));
    this.#change(ov, (d) => d.bridges.get(bname)?.ageing === seconds);
    return this.bridge(bname).fdb.ageingSec;
  }

  /**
   * Adds VLAN membership, as `bridge vlan add`, telling what it does beyond adding a
   * VLAN. A change that switches a port's anti-spoofing guards off (a guarded access
   * port turning trunk or hybrid, or its PVID leaving the router's DHCP VLAN) is
   * refused unless `force`: it opens a tenant port to spoofing, which the operator
   * must ask for. A PVID move or a mode change that keeps the guards is done (it is
   * what `pvid` asks for, and the way bridge(8) moves an access port to another
   * VLAN) and returned as warnings; both kinds are logged.
   */
  vlanAdd(ifname: string, from: number, to: number, opts: { pvid?: boolean; untagged?: boolean; force?: boolean }): { warnings: string[] } {
    checkRange(from, to);
    if (opts.pvid && from !== to) throw new VswitchError('EINVAL', 'pvid cannot be set on a VID range');
    const before = this.#policyOf(ifname);
    const policy = this.#policyOf(ifname);
    for (let v = from; v <= to; v++) wrapVlan(() => policy.add(v, { pvid: opts.pvid, untagged: opts.untagged }));
    const { refuse, warn } = this.#vlanConsequences(ifname, before, policy);
    if (refuse.length > 0 && opts.force !== true) {
      throw new VswitchError('EPERM', `vlan add on ${ifname}: ${[...refuse, ...warn].join('; ')}; refused, nothing was changed `
        + `(vswitch port set ${ifname} guard on first keeps the guards; --force does it without them)`);
    }
    this.#setVlan(ifname, policy);
    this.log.info({ event: 'vlan_changed', port: ifname, add: [from, to], pvid: opts.pvid, untagged: opts.untagged }, 'vlan_changed');
    const warnings = [...refuse, ...warn];
    if (warnings.length > 0) {
      this.log.warn({ event: 'vlan_change_side_effects', port: ifname, forced: refuse.length > 0, consequences: warnings }, 'vlan_change_side_effects');
    }
    return { warnings };
  }

  /**
   * What going from `before` to `after` does to port `ifname` beyond adding VLANs:
   * `refuse`, its default guards going off; `warn`, its PVID moving, its mode changing.
   */
  #vlanConsequences(ifname: string, before: VlanPolicy, after: VlanPolicy): { refuse: string[]; warn: string[] } {
    const refuse: string[] = [];
    const warn: string[] = [];
    if (before.pvid !== 0 && after.pvid !== before.pvid) {
      warn.push(`its PVID moves from VLAN ${before.pvid} to ${after.pvid || 'none'} (its untagged frames, a VM's traffic, go to ${after.pvid ? `VLAN ${after.pvid}` : 'no VLAN'})`);
    }
    if (before.mode() !== after.mode()) warn.push(`the ${before.mode()} port becomes a ${after.mode()} port`);
    const port = this.bridgeOf(ifname).port(ifname);
    const spec = this.#specs.get(ifname);
    if (port !== undefined && spec !== undefined && port.guard.active) {
      const vm = (spec.type === 'tap' || spec.type === 'socket') && !after.acceptsTagged && after.pvid !== 0;
      const dflt = vm && dhcpServed(this.routers.values(), this.bridgeOf(ifname), after.pvid);
      const dflt6 = dflt || (vm && ipv6Served(this.routers.values(), this.bridgeOf(ifname), after.pvid));
      const g = spec.guard;
      const off = [
        port.guard.dhcp && !(g?.dhcp ?? dflt) ? 'DHCP guard' : '',
        port.guard.ipSource && !(g?.ipSource ?? dflt) ? 'IP source guard' : '',
        port.guard.ra && !(g?.ra ?? dflt6) ? 'RA guard' : '',
        port.guard.dhcpv6 && !(g?.dhcpv6 ?? dflt6) ? 'DHCPv6 guard' : '',
        port.guard.ipv6Source && !(g?.ipv6Source ?? dflt6) ? 'IPv6 source guard' : '',
      ].filter(Boolean);
      if (off.length > 0) refuse.push(`its ${off.length > 1 ? `${off.slice(0, -1).join(', ')} and ${off[off.length - 1]}` : off[0]} go off (on by default only for access ports of a VLAN with a router DHCP server or IPv6 network)`);
    }
    return { refuse, warn };
  }

  /**
   * `port set`: the port's guards, storm control, MAC limit, TAP persistence, BPDU
   * guard and rate limits (checked by traffic.ts trafficSettings), in
   * place (the device, its MAC entries and counters stay), kept like every CLI change:
   * for a file port as overlay entries over the file's values, for a runtime port in
   * its definition.
   */
  portSet(ifname: string, set: PortSettings): void {
    const p = this.#portOf(ifname);
    const want: [PortSetting, unknown][] = [];
    if (set.guard !== undefined) want.push(['guard', stableGuard(set.guard)]);
    if (set.stormPps !== undefined) {
      if (!Number.isInteger(set.stormPps) || set.stormPps < 0 || set.stormPps > 100_000_000) {
        throw new VswitchError('EINVAL', `storm control must be 0 (off) to 100000000 frames per second, got ${set.stormPps}`);
      }
      want.push(['storm', set.stormPps]);
    }
    if (set.maxMacs !== undefined) {
      if (!Number.isInteger(set.maxMacs) || set.maxMacs < 0 || set.maxMacs > 1_000_000) {
        throw new VswitchError('EINVAL', `MAC limit must be 0 (none) to 1000000, got ${set.maxMacs}`);
      }
      want.push(['maxMacs', set.maxMacs]);
    }
    if (set.persistent !== undefined) {
      if (p.spec.type !== 'tap') throw new VswitchError('EINVAL', `${ifname} is a ${p.spec.type} port: only TAPs are persistent or not`);
      want.push(['persistent', set.persistent]);
    }
    if (set.bpduGuard !== undefined) want.push(['bpduGuard', set.bpduGuard]);
    if (set.ingressRate !== undefined) want.push(['ingressRate', set.ingressRate]);
    if (set.egressRate !== undefined) want.push(['egressRate', set.egressRate]);
    if (want.length === 0) {
      throw new VswitchError('EINVAL', 'nothing to set (guard, storm, max-macs, persistent, bpdu-guard, ingress-rate, egress-rate)');
    }
    let ov = this.#overlay;
    if (p.source === 'config') {
      for (const [k, v] of want) ov = withEntry(ov, this.#file, 'settings', settingKey(ifname, k), v);
    } else {
      let spec = p.spec;
      for (const [k, v] of want) spec = withSetting(spec, k, v);
      ov = withEntry(ov, this.#file, 'ports', ifname, { bridge: p.bridge, spec });
    }
    this.#change(ov, (d) => {
      const now = d.ports.get(ifname);
      return now !== undefined && want.every(([k, v]) => same(settingOf(now.spec, k), v));
    });
    this.log.info({ event: 'port_set', port: ifname, ...Object.fromEntries(want) }, 'port_set');
  }

  /**
   * `fdb flush`: removes learned entries, and unless `dynamicOnly` static ones too
   * (kept removed, as `fdb del`), of one bridge, port and/or VLAN; returns how many.
   */
  fdbFlush(sel: { bridge?: string; port?: string; vlan?: number; dynamicOnly?: boolean }): { learned: number; static: number } {
    if (sel.vlan !== undefined) wrapVlan(() => checkVid(sel.vlan!));
    if (sel.bridge !== undefined) this.bridge(sel.bridge);
    if (sel.port !== undefined) {
      const b = this.bridgeOf(sel.port).name;
      if (sel.bridge !== undefined && sel.bridge !== b) throw new VswitchError('ENOENT', `${sel.port} is not a port of bridge ${sel.bridge}`);
    }
    const brs = sel.port !== undefined ? [this.bridgeOf(sel.port)] : sel.bridge !== undefined ? [this.bridge(sel.bridge)] : [...this.bridges.values()];
    let learned = 0;
    for (const br of brs) {
      for (const e of br.fdb.entries()) {
        if (e.isStatic || (sel.vlan !== undefined && e.vid !== sel.vlan)) continue;
        if (sel.port !== undefined && br.portName(e.port) !== sel.port) continue;
        if (br.fdb.delete(e.vid, e.mac)) learned++;
      }
    }
    const statics = sel.dynamicOnly ? [] : [...this.#desired.fdb.entries()].filter(([, f]) =>
      brs.some((b) => b.name === f.bridge) && (sel.port === undefined || f.port === sel.port) && (sel.vlan === undefined || f.vid === sel.vlan));
    if (statics.length > 0) {
      let ov = this.#overlay;
      for (const [key] of statics) ov = withEntry(ov, this.#file, 'fdb', key, null);
      this.#change(ov, (d) => statics.every(([k]) => !d.fdb.has(k)));
    }
    this.log.info({ event: 'fdb_flushed', ...sel, learned, static: statics.length }, 'fdb_flushed');
    return { learned, static: statics.length };
  }

  vlanDel(ifname: string, from: number, to: number): void {
    checkRange(from, to);
    const policy = this.#policyOf(ifname);
    let n = 0;
    for (let v = from; v <= to; v++) if (policy.del(v)) n++;
    if (n === 0) throw new VswitchError('ENOENT', `${ifname} is not a member of VLAN ${from === to ? from : `${from}-${to}`}`);
    this.#setVlan(ifname, policy);
    this.log.info({ event: 'vlan_changed', port: ifname, del: [from, to] }, 'vlan_changed');
  }

  fdbAdd(macText: string, ifname: string, vlan?: number): void {
    const mac = needMac(macText);
    const p = this.#portOf(ifname);
    const vid = vlan ?? VlanPolicy.from(p.spec.vlan ?? canonVlan(undefined)).pvid;
    if (vid === 0) throw new VswitchError('EINVAL', `${ifname} has no PVID: give the VLAN`);
    if (mac === 0 || Math.floor(mac / 0x10000000000) & 1) throw new VswitchError('EINVAL', `${macText} is not a unicast MAC`);
    wrapVlan(() => checkVid(vid));
    if (!VlanPolicy.from(p.spec.vlan ?? canonVlan(undefined)).isMember(vid)) throw new VswitchError('EVLAN', `port ${ifname} is not a member of VLAN ${vid}`);
    const key = fdbKey(p.bridge, vid, formatMac(mac));
    this.#change(withEntry(this.#overlay, this.#file, 'fdb', key, ifname), (d) => d.fdb.get(key)?.port === ifname);
  }

  /** Removes the entries of `mac` on `ifname` (in `vlan`, or every VLAN of the port): static ones for good, learned ones from the table. */
  fdbDel(macText: string, ifname: string, vlan?: number): void {
    const mac = needMac(macText);
    const p = this.#portOf(ifname);
    const br = this.bridgeOf(ifname);
    const port = br.port(ifname)!;
    const vids = vlan !== undefined ? [vlan] : port.vlan.members().map((m) => m.vid);
    let ov = this.#overlay;
    const statics: string[] = [];
    let learned = 0;
    for (const vid of vids) {
      const key = fdbKey(p.bridge, vid, formatMac(mac));
      if (this.#desired.fdb.get(key)?.port === ifname) {
        ov = withEntry(ov, this.#file, 'fdb', key, null);
        statics.push(key);
      } else {
        const e = br.fdb.get(vid, mac);
        if (e !== undefined && !e.isStatic && e.port === port.id && br.fdb.delete(vid, mac)) learned++;
      }
    }
    if (statics.length === 0 && learned === 0) {
      throw new VswitchError('ENOENT', `no entry for ${formatMac(mac)} on ${ifname}${vlan !== undefined ? ` in VLAN ${vlan}` : ''}`);
    }
    if (statics.length > 0) this.#change(ov, (d) => statics.every((k) => !d.fdb.has(k)));
  }

  /** Adds a DHCP reservation to a network at runtime (kept in runtime.json, applied in place: leases and sessions stay). */
  reservationAdd(network: string, macText: string, ipText: string, hostname?: string): void {
    const { mr, cidr } = this.#dhcpNetwork(network);
    const mac = needMac(macText);
    if (mac === 0 || Math.floor(mac / 0x10000000000) & 1) throw new VswitchError('EINVAL', `${macText} is not a unicast MAC`);
    if (hostname !== undefined && !/^[A-Za-z0-9]([A-Za-z0-9.-]{0,61}[A-Za-z0-9])?$/.test(hostname)) {
      throw new VswitchError('EINVAL', `bad hostname '${hostname}' (letters, digits, . and -, at most 63)`);
    }
    const problem = reservationProblem(cidr, ipText);
    if (problem !== undefined) throw new VswitchError('EINVAL', `cannot reserve ${ipText} in ${network}: ${problem}`);
    const ip = parseIp4(ipText);
    const ipText4 = ipText.trim();
    for (const r of this.#desired.reservations.values()) {
      if (r.network !== network) continue;
      if (parseMac(r.mac) === mac) throw new VswitchError('EEXIST', `${formatMac(mac)} already has a reservation in ${network} (${r.ip}, from the ${r.source === 'config' ? 'config file' : 'CLI'}); delete it first`);
      if (parseIp4(r.ip) === ip) throw new VswitchError('EEXIST', `${ipText4} is already reserved in ${network} for ${r.mac}`);
    }
    const failed = mr.dhcpFailed.get(network);
    if (failed !== undefined) throw new VswitchError('EIO', `the DHCP server of ${network} is disabled (${failed}): its leases are unknown, so no reservation can be checked`);
    const now = Date.now();
    for (const l of mr.router.networks.get(network)?.opts.dhcp?.leases(now) ?? []) {
      if (l.ip === ip && l.state !== 'declined' && l.mac !== mac) {
        throw new VswitchError('EBUSY', `${ipText4} is ${l.state === 'bound' ? 'leased' : 'offered'} to ${formatMac(l.mac)}`
          + `${l.port ? ` on port ${l.port}` : ''} until ${new Date(l.expiresAt).toISOString()}; reserve it once that lease has ended`);
      }
    }
    const key = resKey(network, formatMac(mac));
    const value = { ip: ipText4, ...(hostname !== undefined ? { hostname } : {}) };
    this.#change(withEntry(this.#overlay, this.#file, 'reservations', key, value), (d) => d.reservations.get(key)?.ip === ipText4);
  }

  reservationDel(network: string, macText: string): void {
    this.#dhcpNetwork(network);
    const mac = needMac(macText);
    const key = resKey(network, formatMac(mac));
    if (!this.#desired.reservations.has(key)) throw new VswitchError('ENOENT', `no reservation for ${formatMac(mac)} in ${network}`);
    this.#change(withEntry(this.#overlay, this.#file, 'reservations', key, null), (d) => !d.reservations.has(key));
  }

  /**
   * A router built straight from `rc`, outside the config model (unit tests, which
   * assemble a switch by hand). The daemon's routers come from apply/reload.
   */
  addRouter(name: string, rc: RouterConfig, stateDir: string): ManagedRouter {
    if (this.routers.has(name)) throw new VswitchError('EEXIST', `router ${name} already exists`);
    const built = this.#buildRouter(name, rc, stateDir, (b) => this.bridge(b));
    this.#placeRouter(name, built);
    this.#desired.routers.set(name, rc);
    this.#file = { ...this.#file, routers: { ...this.#file.routers, [name]: rc } };
    this.#applyGuards();
    return built.mr;
  }

  router(name: string): ManagedRouter {
    const r = this.routers.get(name);
    if (r === undefined) throw new VswitchError('ENOENT', `no such router: ${name}`);
    return r;
  }

  /** The router owning network port `name`, if any. */
  routerOfNetwork(name: string): ManagedRouter | undefined {
    for (const r of this.routers.values()) if (r.router.networks.has(name)) return r;
    return undefined;
  }

  portSpec(ifname: string): AddPortSpec | undefined {
    return this.#specs.get(ifname);
  }

  /* ---------- the transaction ---------- */

  /** Makes `overlay` the runtime state (kept first), or throws with nothing changed. */
  #change(overlay: Overlay, check: (d: Desired) => boolean): void {
    const { desired, overlay: clean, notes } = effective(this.#file, overlay);
    if (!check(desired)) throw new VswitchError('EINVAL', `the change cannot apply: ${notes.join('; ') || 'refused by the config file'}`);
    this.#transition(desired, clean, 'cli');
  }

  #transition(next: Desired, overlay: Overlay, mode: Mode, file?: Config): string[] {
    const prev = this.#desired;
    const plan = planChanges(prev, next, new Set(this.#failed.keys()));
    const done: string[] = [];
    const stateDir = this.#stateDir ?? (file ?? this.#file).stateDir;

    // Routers: gone, new, rebuilt, or edited in place.
    const rDel: string[] = [];
    const rNew: string[] = [];
    const rRebuild = new Map<string, string>();
    const rEdit = new Map<string, RouterEdit>();
    for (const name of this.routers.keys()) if (!next.routers.has(name)) rDel.push(name);
    for (const [name, rc] of next.routers) {
      const mr = this.routers.get(name);
      if (mr === undefined) {
        rNew.push(name);
        continue;
      }
      const e = routerDiff(mr.config, rc);
      // Ports of its networks' bridges changing do not matter; its networks' bridges going away do.
      const lostBridge = Object.values(rc.networks).find((n) => plan.bridgesDel.includes(n.bridge));
      if (e.rebuild !== undefined || lostBridge) {
        rRebuild.set(name, e.rebuild ?? `bridge ${lostBridge!.bridge}`);
        continue;
      }
      if (mode === 'reload') {
        // A reload retries what failed (a lease or forwards file moved aside by the operator), changed or not.
        for (const n of mr.dhcpFailed.keys()) if (!e.dhcp.includes(n)) e.dhcp.push(n);
        if (mr.forwardsFailed !== undefined) e.forwards = true;
      }
      if (e.dhcp.length > 0 || e.forwards || e.limits) rEdit.set(name, e);
    }

    // 1. Prepare.
    const newBridges = new Map<string, Bridge>();
    const ios = new Map<string, PortIo>();
    const failedNow = new Map<string, string>();
    const built = new Map<string, { mr: ManagedRouter; ports: NetPort[] }>();
    const dropPrepared = (): void => {
      for (const io of ios.values()) io.close();
      for (const b of built.values()) b.mr.discard();
      for (const br of newBridges.values()) br.close();
    };
    try {
      for (const name of plan.bridgesAdd) newBridges.set(name, this.#newBridge(name, next.bridges.get(name)!));
      for (const name of plan.portsAdd) {
        if (plan.recreate.has(name)) continue;
        const d = next.ports.get(name)!;
        try {
          ios.set(name, this.#openIo(name, d, next));
        } catch (e) {
          const tolerant = (mode === 'start' && d.source === 'runtime') || plan.retry.has(name);
          if (!tolerant) throw e;
          failedNow.set(name, (e as Error).message);
        }
      }
      const bridgeFor = (b: string): Bridge => newBridges.get(b) ?? this.bridge(b);
      // The routers built next read lease files the running ones may still be writing (group commit).
      if (rNew.length + rRebuild.size > 0) for (const mr of this.routers.values()) mr.syncLeases();
      for (const name of [...rNew, ...rRebuild.keys()]) built.set(name, this.#buildRouter(name, next.routers.get(name)!, stateDir, bridgeFor));
      for (const [name, e] of rEdit) this.routers.get(name)!.checkEdit(next.routers.get(name)!, e);
    } catch (e) {
      dropPrepared();
      const err = e as Error & { code?: string };
      throw new VswitchError(typeof err.code === 'string' ? err.code : 'EINVAL', `${err.message}${mode === 'start' ? '' : '; nothing was changed'}`);
    }

    // 2. Keep a CLI change before it takes effect.
    if (mode === 'cli' && this.#stateDir !== undefined) {
      try {
        saveOverlay(this.#stateDir, overlay);
      } catch (e) {
        dropPrepared();
        this.log.error({ event: 'runtime_state_save_failed', file: runtimeFile(this.#stateDir), error: (e as Error).message }, 'runtime_state_save_failed');
        throw new VswitchError('ESTATE', `cannot keep the change in ${runtimeFile(this.#stateDir)}: ${(e as Error).message}; nothing was changed`);
      }
    }

    // 3. Swap. Routers leaving first: their network ports leave the bridges.
    for (const name of rDel) {
      this.#dropRouter(name);
      done.push(`delrouter ${name}`);
    }
    const rebuilt = new Map<string, { old: ManagedRouter; ports: Map<string, Port> }>();
    for (const [name, why] of rRebuild) {
      const old = this.router(name);
      const ports = new Map<string, Port>();
      for (const net of old.router.networks.keys()) {
        const p = this.bridges.get(this.#owner.get(net) ?? '')?.port(net);
        if (p !== undefined) ports.set(net, p);
      }
      rebuilt.set(name, { old, ports });
      this.#dropRouter(name);
      done.push(`rebuild router ${name} (${why} changed)`);
    }
    for (const f of plan.fdbDel) {
      const br = this.bridges.get(f.bridge);
      const e = br?.fdb.get(f.vid, parseMac(f.mac));
      if (br !== undefined && e !== undefined && e.isStatic && br.portName(e.port) === f.port) br.fdb.delete(f.vid, parseMac(f.mac));
      done.push(`fdb del ${f.mac} dev ${f.port} vlan ${f.vid}`);
    }
    for (const name of plan.portsDel) {
      const bname = this.#owner.get(name);
      if (bname !== undefined) {
        this.bridges.get(bname)?.removePort(name);
        done.push(`delif ${bname} ${name}`);
        if (!plan.recreate.has(name)) this.#note('info', { event: 'port_removed', bridge: bname, port: name });
      }
      this.#owner.delete(name);
      this.#specs.delete(name);
      this.#failed.delete(name);
    }
    for (const name of plan.bridgesDel) {
      const br = this.bridges.get(name);
      if (br !== undefined) {
        for (const p of br.ports.keys()) {
          this.#owner.delete(p);
          this.#specs.delete(p);
        }
        br.close();
      }
      this.bridges.delete(name);
      done.push(`delbr ${name}`);
      this.#note('info', { event: 'bridge_deleted', bridge: name });
    }
    for (const [name, br] of newBridges) {
      br.start();
      this.bridges.set(name, br);
      done.push(`addbr ${name}`);
      this.#note('info', { event: 'bridge_added', bridge: name, flowCache: br.flowCache });
    }
    for (const name of plan.bridgesSet) {
      const br = this.bridges.get(name)!;
      const want = next.bridges.get(name)!;
      if (br.fdb.ageingSec !== want.ageing) {
        br.fdb.setAgeing(want.ageing);
        done.push(`setageing ${name} ${want.ageing}`);
      }
      if (br.fdb.maxEntries !== want.maxMacs) {
        br.fdb.setMaxEntries(want.maxMacs);
        done.push(`maxmacs ${name} ${want.maxMacs}`);
      }
      if (!same(prev.bridges.get(name)?.loop, want.loop)) {
        br.setLoopProtection(loopSettings(want.loop));
        done.push(`loopprotection ${name} ${JSON.stringify(br.loop.settings())}`);
        const lc = loopConf(want.loop);
        if (br.readQuantum !== lc.readQuantum) done.push(`readquantum ${name} ${br.setReadQuantum(lc.readQuantum)}`);
        if (br.readShare !== lc.readShare || br.readFrames !== lc.readFrames) {
          br.setReadShare(lc.readShare, lc.readFrames);
          done.push(`readshare ${name} ${lc.readShare} ${lc.readFrames}`);
        }
        if (br.readSparse !== lc.readSparse) {
          br.setReadSparse(lc.readSparse);
          done.push(`readsparse ${name} ${lc.readSparse ? 'on' : 'off'}`);
        }
      }
      if (br.flowCache !== flowCacheOn(want)) {
        br.setFlowCache(flowCacheOn(want) ? addonFlowCache() : undefined);
        done.push(`flowcache ${name} ${br.flowCache ? 'on' : 'off'}`);
      }
    }
    for (const name of plan.portsAdd) {
      const d = next.ports.get(name)!;
      let io = ios.get(name);
      if (plan.recreate.has(name)) {
        try {
          io = this.#openIo(name, d, next);
        } catch (e) {
          failedNow.set(name, (e as Error).message);
        }
      }
      if (io === undefined) continue;
      try {
        this.#attachPort(d.bridge, name, io, d.spec);
        done.push(`addif ${d.bridge} ${name}`);
      } catch (e) {
        io.close();
        failedNow.set(name, (e as Error).message);
      }
    }
    for (const name of plan.portsSet) {
      const before = prev.ports.get(name)!.spec;
      const after = next.ports.get(name)!.spec;
      done.push(...this.#updatePort(name, before, after));
    }
    for (const f of plan.fdbAdd) {
      const br = this.bridges.get(f.bridge);
      if (br === undefined || br.port(f.port) === undefined) continue;
      try {
        br.addStatic(parseMac(f.mac), f.port, f.vid);
        done.push(`fdb add ${f.mac} dev ${f.port} vlan ${f.vid}`);
      } catch (e) {
        this.log.warn({ event: 'fdb_failed', bridge: f.bridge, mac: f.mac, port: f.port, vlan: f.vid, error: (e as Error).message }, 'fdb_failed');
      }
    }
    for (const [name, b] of built) {
      this.#placeRouter(name, b);
      if (!rRebuild.has(name)) done.push(`addrouter ${name}`);
    }
    for (const [name, r] of rebuilt) for (const f of this.routerRebuilt) f(r.old, this.router(name), r.ports);
    for (const [name, e] of rEdit) done.push(...this.routers.get(name)!.edit(next.routers.get(name)!, e));

    for (const [name, why] of failedNow) {
      this.#failed.set(name, why);
      this.#note('error', { event: 'port_failed', port: name, bridge: next.ports.get(name)?.bridge, error: why }, 'port_failed: kept in the state, retried at the next reload');
      done.push(`failed ${name}: ${why}`);
    }
    for (const name of [...this.#failed.keys()]) if (!next.ports.has(name)) this.#failed.delete(name);
    const changedOverlay = !same(overlay, this.#overlay);
    done.push(...this.#applyDaemon(prev.daemon, next.daemon, mode));
    this.#desired = next;
    this.#overlay = overlay;
    if (file !== undefined) this.#file = file;
    // Guards depend on ports, their VLANs and the routers' DHCP networks: re-applied when one of those changed.
    if (plan.portsAdd.length + plan.portsSet.length + rDel.length + rNew.length + rRebuild.size + rEdit.size > 0) this.#applyGuards();
    // A reload or start that dropped runtime entries (the file won) writes them out; failing that, the next start drops them again.
    if (mode !== 'cli' && changedOverlay && this.#stateDir !== undefined) {
      try {
        saveOverlay(this.#stateDir, overlay);
      } catch (e) {
        this.log.warn({ event: 'runtime_state_save_failed', file: runtimeFile(this.#stateDir), error: (e as Error).message }, 'runtime_state_save_failed');
      }
    }
    return done;
  }

  /** Daemon-wide settings that changed: applied to the addon (nothing there can fail: the values were checked), logged. */
  #applyDaemon(prev: DaemonSettings, next: DaemonSettings & { overrides: DaemonSetting[] }, mode: Mode): string[] {
    const done = [...this.#applyTapWriteBatch(next, mode), ...this.#applyTurnYield(next, mode)];
    if (prev.pollBeforeSleepUs === next.pollBeforeSleepUs && prev.pollBeforeSleepBudgetMs === next.pollBeforeSleepBudgetMs) return done;
    setPollBeforeSleep(next.pollBeforeSleepUs, next.pollBeforeSleepBudgetMs);
    this.log.info({
      event: 'poll_before_sleep_set', maxUs: next.pollBeforeSleepUs, budgetMs: next.pollBeforeSleepBudgetMs, mode,
      source: next.overrides.length > 0 ? 'runtime' : 'config',
    }, 'poll_before_sleep_set');
    return [...done, `poll-before-sleep ${next.pollBeforeSleepUs === 0 ? 'off' : `${next.pollBeforeSleepUs}us`} budget ${next.pollBeforeSleepBudgetMs}ms`];
  }

  /**
   * Batched TAP writes (packages/netdev setTapWriteBatch, README "Batched TAP writes"): the
   * flow cache's replays of one read batch through io_uring in one call. Compared with what
   * the addon was last told, not with the previous desired state: at start the addon is off
   * whatever the default. When io_uring cannot be set up the writes stay on writev, logged
   * at warn with the reason and shown by `settings`.
   */
  #applyTapWriteBatch(next: DaemonSettings & { overrides: DaemonSetting[] }, mode: Mode): string[] {
    const on = next.tapWriteBatch;
    if (this.#tapWriteBatchSet === on) return [];
    this.#tapWriteBatchSet = on;
    this.#tapWriteBatch = setTapWriteBatch(on);
    const level = on && !this.#tapWriteBatch.on ? 'warn' : 'info';
    this.log[level]({
      event: 'tap_write_batch', want: on, ...this.#tapWriteBatch, mode, source: next.overrides.includes('tapWriteBatch') ? 'runtime' : 'config',
    }, 'tap_write_batch');
    return [`tap-write-batch ${on ? (this.#tapWriteBatch.on ? 'on' : `unavailable (${this.#tapWriteBatch.error})`) : 'off'}`];
  }

  /**
   * The turn yield (packages/netdev setTurnYield, README "The turn yield"): compared with
   * what the addon was last told, as the batched writes, since the addon starts off.
   */
  #applyTurnYield(next: DaemonSettings & { overrides: DaemonSetting[] }, mode: Mode): string[] {
    const us = next.turnYieldUs;
    if (this.#turnYieldSet === us) return [];
    this.#turnYieldSet = us;
    setTurnYield(us);
    this.log.info({ event: 'turn_yield', us, mode, source: next.overrides.includes('turnYieldUs') ? 'runtime' : 'config' }, 'turn_yield');
    return [`turn-yield ${us === 0 ? 'off' : `${us}us`}`];
  }

  #newBridge(name: string, b: { ageing: number; maxMacs: number; loop?: LoopConf; flowCache?: boolean }): Bridge {
    const br = new Bridge(name, {
      ageingSec: b.ageing,
      maxEntries: b.maxMacs,
      // Every bridge: the router's host NAT sends GSO frames too, into bridges without native ports.
      segmenter: nativeSegmenter(),
      onEvent: (e: BridgeEvent) => {
        this.log[e.event === 'port_down' || e.event === 'port_shut' ? 'warn' : 'info'](e, e.event);
        this.monitor.emit(e);
      },
    });
    br.setLoopProtection(loopSettings(b.loop));
    const lc = loopConf(b.loop);
    br.setReadQuantum(lc.readQuantum);
    br.setReadShare(lc.readShare, lc.readFrames);
    br.setReadSparse(lc.readSparse);
    if (flowCacheOn(b)) br.setFlowCache(addonFlowCache());
    this.#watchLearning(br, this.monitor.active);
    return br;
  }

  /** Learned MACs become monitor events while a client watches, within the bridge's budget. */
  #watchLearning(br: Bridge, on: boolean): void {
    if (!on) {
      br.onLearn = undefined;
      return;
    }
    let budget = this.#learnBudget.get(br.name);
    if (budget === undefined) this.#learnBudget.set(br.name, budget = new EventBudget(LEARN_BUDGET_PER_SEC));
    const b = budget;
    br.onLearn = (vid, mac, port) => {
      if (b.take()) this.monitor.emit({ event: 'mac_learned', bridge: br.name, vlan: vid, mac: formatMac(mac), port: port.name });
    };
  }

  /** Logs an event and hands it to the monitor. */
  #note(level: 'info' | 'warn' | 'error', e: MonitorEvent, msg: string = e.event): void {
    this.log[level](e, msg);
    this.monitor.emit(e);
  }

  /** Every second: the learned-MAC budgets' refusals, uplinks that went up or down (logged too), guard drops' log lines. */
  #tick(): void {
    this.evpn.tick();
    for (const [name, b] of this.#learnBudget) {
      const n = b.tick();
      if (n > 0) {
        this.monitor.suppressed(n);
        this.monitor.emit({ event: 'events_suppressed', kind: 'mac_learned', bridge: name, count: n });
      }
      if (!this.bridges.has(name)) this.#learnBudget.delete(name);
    }
    for (const [name, mr] of this.routers) {
      const up = mr.router.uplink;
      if (up === undefined) continue;
      const was = this.#uplinkUp.get(name);
      this.#uplinkUp.set(name, up.up);
      if (was === undefined || was === up.up) continue;
      if (up.up) this.#note('info', { event: 'uplink_up', router: name, interface: up.opts.ifname });
      else this.#note('warn', { event: 'uplink_down', router: name, interface: up.opts.ifname, reason: up.downReason });
    }
    for (const name of this.#uplinkUp.keys()) if (!this.routers.has(name)) this.#uplinkUp.delete(name);
    this.#guardLog.tick(this.bridges.values(), performance.now());
  }

  /** Opens a port's device (not yet on its bridge); throws a VswitchError saying where and why. */
  #openIo(ifname: string, d: DesiredPort, next: Desired): PortIo {
    const spec = d.spec;
    const where = d.source === 'config' ? `bridges.${d.bridge}.ports.${ifname}: ` : `runtime port ${ifname}: `;
    const bad = checkIfName(ifname);
    if (bad !== undefined) throw new VswitchError('EINVAL', `${where}bad interface name '${ifname}': ${bad}`);
    if (spec.type === 'attach') {
      for (const [rname, rc] of next.routers) {
        if (rc.uplink?.kind !== 'host' && rc.uplink?.interface === ifname) {
          throw new VswitchError('EBUSY', `${where}${ifname} is the uplink of router ${rname}; attaching it too would bridge the router's own traffic`);
        }
      }
      if (isLoopback(ifname)) throw new VswitchError('EINVAL', `${where}${ifname} is a loopback interface: attached, every frame sent to it would come back`);
      const bond = bondOf(ifname, next);
      if (bond !== undefined) throw new VswitchError('EBUSY', `${where}${ifname} is a member of bond ${bond}`);
    }
    if (spec.type === 'bond') return openBond(ifname, spec.bond!, where, next, (e) => this.#note(e.event === 'bond_member_down' || e.event === 'bond_failover' ? 'warn' : 'info', e));
    try {
      if (spec.type === 'socket') {
        return new SocketIo(ifname, {
          path: spec.path!, connect: spec.connect, mode: parseInt(spec.mode ?? '0600', 8), owner: spec.owner, group: spec.group,
        });
      }
      return spec.type === 'attach'
        ? new AttachIo(ifname, { keepGso: spec.offload ?? true, reattach: true })
        : new TapIo(ifname, { persistent: spec.persistent, owner: spec.owner, group: spec.group, offload: spec.offload });
    } catch (e) {
      const code = (e as { code?: string }).code ?? 'EIO';
      const what = spec.type === 'attach' ? `cannot attach ${ifname}` : spec.type === 'socket' ? `cannot ${spec.connect ? 'use' : 'listen on'} socket ${spec.path}` : `cannot open TAP ${ifname}`;
      // TUNSETIFF says EINVAL for a name another kind of device has: say which, and what to do.
      const other = spec.type === 'tap' ? nonTapKind(ifname) : undefined;
      if (other !== undefined) {
        throw new VswitchError('EEXIST', `${where}${what}: ${ifname} exists and is not a TAP${other ? ` (${other})` : ''}: use --attach to add an existing interface as a port`);
      }
      throw new VswitchError(code, `${where}${what}: ${(e as Error).message}`);
    }
  }

  #attachPort(bname: string, ifname: string, io: PortIo, spec: AddPortSpec): void {
    const br = this.bridge(bname);
    const vlan = spec.vlan ? policyFrom(spec.vlan) : VlanPolicy.defaultAccess();
    br.addPort(ifname, io, {
      vlan, maxMacs: spec.maxMacs, stormPps: spec.stormPps, bpduGuard: bpduGuardOf(spec.type, spec.bpduGuard),
      ingressRate: spec.ingressRate && rateSpec(spec.ingressRate, `${ifname}: ingressRate`),
      egressRate: spec.egressRate && rateSpec(spec.egressRate, `${ifname}: egressRate`),
    });
    this.#owner.set(ifname, bname);
    this.#specs.set(ifname, spec);
    this.#applyGuard(ifname);
    this.#note('info', { event: 'port_added', bridge: bname, port: ifname, type: spec.type, vlan: vlan.toSpec(), ...(spec.type === 'socket' ? { path: spec.path, role: spec.connect ? 'connect' : 'listen' } : {}) });
  }

  /** In-place changes of a running port: VLANs, MAC limit, storm control, guards. */
  #updatePort(name: string, before: AddPortSpec, after: AddPortSpec): string[] {
    const done: string[] = [];
    const bname = this.#owner.get(name);
    if (bname === undefined) return done;
    const br = this.bridge(bname);
    if (!same(canonVlan(before.vlan), canonVlan(after.vlan))) {
      const policy = policyFrom(after.vlan ?? canonVlan(undefined));
      br.setPortVlan(name, policy);
      done.push(`vlan ${name} ${JSON.stringify(policy.toSpec())}`);
    }
    if ((before.maxMacs ?? 0) !== (after.maxMacs ?? 0)) {
      br.setPortMaxMacs(name, after.maxMacs ?? 0);
      done.push(`maxmacs ${name} ${after.maxMacs ?? 0}`);
    }
    if ((before.stormPps ?? 0) !== (after.stormPps ?? 0)) {
      br.setPortStorm(name, after.stormPps ?? 0);
      done.push(`stormcontrol ${name} ${after.stormPps ?? 0}`);
    }
    if (!same(before.guard, after.guard)) done.push(`guard ${name}`);
    if ((before.persistent ?? false) !== (after.persistent ?? false)) {
      const io = br.port(name)?.io;
      try {
        if (io instanceof TapIo) io.setPersistent(after.persistent ?? false);
        done.push(`persistent ${name} ${after.persistent ? 'on' : 'off'}`);
      } catch (e) {
        this.log.error({ event: 'port_persist_failed', port: name, error: (e as Error).message }, 'port_persist_failed');
      }
    }
    if (before.bpduGuard !== after.bpduGuard) {
      br.setPortBpduGuard(name, bpduGuardOf(after.type, after.bpduGuard));
      done.push(`bpduguard ${name} ${bpduGuardOf(after.type, after.bpduGuard) ? 'on' : 'off'}`);
    }
    const inChanged = !same(before.ingressRate, after.ingressRate);
    const outChanged = !same(before.egressRate, after.egressRate);
    if (inChanged || outChanged) {
      br.setPortRate(name,
        inChanged ? (after.ingressRate ? rateSpec(after.ingressRate, `${name}: ingressRate`) : null) : undefined,
        outChanged ? (after.egressRate ? rateSpec(after.egressRate, `${name}: egressRate`) : null) : undefined);
      done.push(`rate ${name}`);
    }
    this.#specs.set(name, after);
    return done;
  }

  #buildRouter(name: string, rc: RouterConfig, stateDir: string, bridgeOf: (b: string) => Bridge): { mr: ManagedRouter; ports: NetPort[] } {
    const ports: NetPort[] = [];
    const mr = new ManagedRouter(name, rc, stateDir, bridgeOf, (bname, pname, net, vlan) => {
      ports.push({ bridge: bname, name: pname, net, vlan });
    }, (e) => {
      // What an operator must act on (ICMP without CAP_NET_RAW, no resolver, a forward that cannot listen) is a warning.
      if (/_unavailable$|_failed$|_dropped$|^dns_no_resolver$|^forward_error$|^rate_limited$/.test(e.event)) this.log.warn({ router: name, ...e }, e.event);
      else this.log.info({ router: name, ...e }, e.event);
      this.monitor.emit({ router: name, ...e } as MonitorEvent);
    }, {
      bound: (port, mac, ip) => leaseBound(this.bridges.values(), port, mac, ip),
      gone: (port, mac, ip) => leaseGone(this.bridges.values(), port, mac, ip),
      bound6: (port, vid, address) => lease6Bound(this.bridges.values(), port, vid, address),
    });
    // Its networks' names are no port's: the schema refuses such a file, effective() drops such runtime ports.
    return { mr, ports };
  }

  #placeRouter(name: string, b: { mr: ManagedRouter; ports: NetPort[] }): void {
    const mr = b.mr;
    for (const p of b.ports) {
      this.bridge(p.bridge).addPort(p.name, p.net, { vlan: p.vlan });
      this.#owner.set(p.name, p.bridge);
    }
    mr.start();
    this.routers.set(name, mr);
    for (const f of mr.failures()) this.log.error({ router: name, ...f }, `${f.event}: ${f.error}`);
    this.log.info({ event: 'router_added', router: name, networks: [...mr.router.networks.keys()], uplink: mr.router.uplink?.describe() }, 'router_added');
  }

  #dropRouter(name: string): void {
    const mr = this.router(name);
    mr.close();
    for (const net of mr.router.networks.keys()) {
      const bname = this.#owner.get(net);
      if (bname !== undefined) this.bridges.get(bname)?.removePort(net);
      this.#owner.delete(net);
    }
    this.routers.delete(name);
    this.log.info({ event: 'router_deleted', router: name }, 'router_deleted');
  }

  /* ---------- helpers ---------- */

  #portOf(ifname: string): DesiredPort {
    const p = this.#desired.ports.get(ifname);
    if (p === undefined || !this.#owner.has(ifname)) {
      if (this.routerOfNetwork(ifname) !== undefined) throw new VswitchError('EBUSY', `${ifname} is a router network; it is changed in the config file`);
      throw new VswitchError('ENOENT', `no such port: ${ifname}`);
    }
    return p;
  }

  #policyOf(ifname: string): VlanPolicy {
    return policyFrom(this.#portOf(ifname).spec.vlan ?? canonVlan(undefined));
  }

  #setVlan(ifname: string, policy: VlanPolicy): void {
    const p = this.#portOf(ifname);
    const spec = policy.toSpec();
    const ov = p.source === 'config'
      ? withEntry(this.#overlay, this.#file, 'vlans', ifname, spec)
      : withEntry(this.#overlay, this.#file, 'ports', ifname, { bridge: p.bridge, spec: { ...p.spec, vlan: spec } });
    this.#change(ov, (d) => same(d.ports.get(ifname)?.spec.vlan, spec));
  }

  #dhcpNetwork(network: string): { mr: ManagedRouter; cidr: string } {
    for (const [rname, rc] of this.#desired.routers) {
      const n = rc.networks[network];
      if (n === undefined) continue;
      if (n.dhcp === undefined) throw new VswitchError('EINVAL', `network ${network} of router ${rname} has no DHCP server`);
      return { mr: this.router(rname), cidr: n.address };
    }
    throw new VswitchError('ENOENT', `no such network: ${network}`);
  }

  /** Sets a port's anti-spoofing guards and bindings from its spec, the routers and the leases (guards.ts). */
  #applyGuard(ifname: string): void {
    const spec = this.#specs.get(ifname);
    const bname = this.#owner.get(ifname);
    const br = bname === undefined ? undefined : this.bridges.get(bname);
    const port = br?.port(ifname);
    if (spec === undefined || br === undefined || port === undefined) return;
    applyGuard(br, port, spec, this.routers.values());
  }

  #applyGuards(): void {
    // The gateways' IPv6 addresses first: no VM frame may claim them (guards.ts).
    reserveGateways(this.bridges.values(), this.routers.values());
    for (const name of this.#specs.keys()) this.#applyGuard(name);
  }
}

export function portSpec(p: PortConfig): AddPortSpec {
  return { type: p.type, persistent: p.persistent, owner: p.owner, group: p.group, offload: p.offload, path: p.path, mode: p.mode, connect: p.connect, ...(p.bond ? { bond: p.bond } : {}), vlan: p.vlan as VlanSpec | undefined, maxMacs: p.maxMacs, stormPps: p.stormControl?.pps, guard: p.guard, bpduGuard: p.bpduGuard, ingressRate: p.ingressRate, egressRate: p.egressRate };
}

/** The guard switches in their stored form: absent keys (the default) left out. */
function stableGuard(g: GuardSwitches): GuardSwitches {
  return Object.fromEntries(GUARD_SWITCHES.filter((k) => g[k] !== undefined).map((k) => [k, g[k]])) as GuardSwitches;
}

/**
 * What an existing interface `ifname` is when it is not a TUN/TAP device (sysfs:
 * a TUN/TAP has tun_flags): "a bridge", "a vlan" (uevent DEVTYPE), "a NIC" (a
 * device behind it), or "" when sysfs does not say (a veth); undefined when there
 * is no such interface or it is a TAP.
 */
function nonTapKind(ifname: string): string | undefined {
  const dir = `/sys/class/net/${ifname}`;
  try {
    readFileSync(`${dir}/type`, 'utf8');
  } catch {
    return undefined;
  }
  try {
    readFileSync(`${dir}/tun_flags`, 'utf8');
    return undefined;
  } catch { /* not a TUN/TAP */ }
  try {
    const m = /^DEVTYPE=(.+)$/m.exec(readFileSync(`${dir}/uevent`, 'utf8'));
    if (m) return `a ${m[1]}`;
  } catch { /* no uevent */ }
  try {
    readFileSync(`${dir}/device/uevent`, 'utf8');
    return 'a NIC';
  } catch { /* virtual */ }
  return '';
}

/** IFF_LOOPBACK in the interface's flags (sysfs), as ip-link(8) reports LOOPBACK. */
function isLoopback(ifname: string): boolean {
  try {
    return (parseInt(readFileSync(`/sys/class/net/${ifname}/flags`, 'utf8').trim(), 16) & 0x8) !== 0;
  } catch {
    return false;
  }
}

function policyFrom(spec: VlanSpec): VlanPolicy {
  return wrapVlan(() => VlanPolicy.from(spec));
}

function wrapVlan<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof VlanPolicyError) throw new VswitchError('EINVAL', e.message);
    throw e;
  }
}

function checkRange(from: number, to: number): void {
  wrapVlan(() => {
    checkVid(from);
    checkVid(to);
  });
  if (to < from) throw new VswitchError('EINVAL', `bad VID range ${from}-${to}`);
}

function needMac(text: string): number {
  const mac = parseMac(text);
  if (mac < 0) throw new VswitchError('EINVAL', `bad MAC address '${text}'`);
  return mac;
}
