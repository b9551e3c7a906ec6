/*
 * Runtime state: what the CLI changed, kept in the state directory
 * (`runtime.json`, written atomically by state-file.ts) so that it comes back after
 * a restart, and the model that combines it with the config file. Pure: no I/O
 * besides load/save at the bottom, no daemon objects; service.ts executes what
 * this module decides.
 *
 * Model: running state = the config file's objects + a runtime overlay. The
 * overlay holds one entry per object or setting the CLI made differ from the file:
 *   bridges       a bridge made by `addbr` (its settings), or a file bridge removed by `delbr` (null)
 *   ageing        a file bridge's ageing set by `setageing`
 *   loop          a file bridge's loop protection setting or read share after `bridge set`,
 *                 keyed bridge/setting: macFlapMoves, macFlapHold, bpduRecovery, readQuantum,
 *                 readShare, readFrames (traffic.ts); and flowCache (a boolean: the flow cache
 *                 on or off, README "Flow cache")
 *   ports         a port made by `addif` (bridge and spec), or a file port removed by `delif` (null)
 *   vlans         a file port's VLAN membership after `vlan add|del` (the whole membership)
 *   settings      a file port's option after `port set`, keyed port/setting: guard (the
 *                 DHCP and IP source guard switches; the file's bindings stay), storm
 *                 (storm control pps, 0 = off), maxMacs, persistent (TAPs), bpduGuard
 *                 (the guard in force: the type's default spelled out), ingressRate and
 *                 egressRate (traffic.ts RateValue: "off" or numbers, default burst spelled out)
 *   fdb           a static entry made by `fdb add` (its port), or a file entry removed by `fdb del` (null),
 *                 keyed bridge/VID/MAC
 *   reservations  a DHCP reservation made by `dhcp reservation add`, or a file one removed (null), keyed network/MAC
 *   daemon        a daemon-wide setting after `vswitch set`, keyed by its config key:
 *                 pollBeforeSleepUs, pollBeforeSleepBudgetMs (README "Poll before sleep"),
 *                 tapWriteBatch (README "Batched TAP writes"), turnYieldUs (README "The turn yield")
 * (Runtime port forwards keep their own file, forwards-<router>.json, see routers.ts.)
 *
 * Every entry also records `base`: the file's value of the same thing when the
 * entry was made (null: the file did not have it). One rule settles every
 * conflict: when the file's current value differs from an entry's base, the file
 * changed that setting since, and the file wins: the entry is dropped, at start and
 * at reload alike. So:
 *   - the file later defines an object the CLI made (a bridge, a port, a
 *     reservation): the file's definition applies and the object becomes the
 *     file's (a port whose kind is unchanged keeps its device: the VM stays up);
 *   - `delbr`/`delif` of a file object keeps it deleted across reloads and
 *     restarts until the file changes that object (then it comes back as the file
 *     says); `addbr`/`addif` with the file's definition brings it back as the file's;
 *     `delbr` also deletes the bridge's ports (each one's own entry), as the kernel's
 *     bridge does, so `addbr` of a deleted file bridge brings it back empty;
 *   - a CLI change reverted (back to the file's value) leaves no entry.
 * An entry that can no longer apply (a port whose bridge the file removed, a static
 * entry whose VLAN the port left, a reservation outside its network's new subnet,
 * a runtime port named like a router network) is dropped too, with a note for the log.
 */
import { VlanPolicy, type VlanSpec, formatMac, parseIp4, parseMac } from '@vswitch/switch';
import { ensureStateDir, readStateFile, writeStateFile } from '@vswitch/nat';
import { renameSync } from 'node:fs';
import { join } from 'node:path';
import { type Config, type RouterConfig, maskOf, parseCidr, TAP_WRITE_BATCH_DEFAULT, TURN_YIELD_US_DEFAULT } from '../config.js';
import { type AddPortSpec, portSpec } from './service.js';
import {
  bpduGuardOf, checkLoop, fileLoopConf, LOOP_KEYS, type LoopConf, type LoopKey, loopConf, type RateValue, rateValue, rateValueProblem,
} from './traffic.js';

export const RUNTIME_FILE = 'runtime.json';
export const RUNTIME_VERSION = 1;

export type Source = 'config' | 'runtime';
/** `loop`: a runtime bridge's loop protection set by `bridge set` (absent: the defaults). */
/** flowCache: the exact-match flow cache (README "Flow cache"); absent = on (the default since s27), false = off. */
export interface BridgeSettings { ageing: number; maxMacs: number; loop?: LoopConf; flowCache?: boolean }

/** Whether a bridge's settings want the flow cache: on unless turned off (an overlay written before the default changed has no key). */
export const flowCacheOn = (b: { flowCache?: boolean }): boolean => b.flowCache !== false;

/** A runtime bridge's definition as the overlay keeps it: its settings, the flow cache only when off (absent = the default). */
export function runtimeBridge(b: BridgeSettings): BridgeSettings {
  return { ageing: b.ageing, maxMacs: b.maxMacs, ...(b.loop === undefined ? {} : { loop: b.loop }), ...(flowCacheOn(b) ? {} : { flowCache: false }) };
}
export interface PortDef { bridge: string; spec: AddPortSpec }
export interface ReservationDef { ip: string; hostname?: string }
export interface Entry<T> { value: T; base: unknown }

export interface Overlay {
  bridges: Record<string, Entry<BridgeSettings | null>>;
  ageing: Record<string, Entry<number>>;
  loop: Record<string, Entry<number | string | boolean>>;
  ports: Record<string, Entry<PortDef | null>>;
  vlans: Record<string, Entry<VlanSpec>>;
  settings: Record<string, Entry<unknown>>;
  fdb: Record<string, Entry<string | null>>;
  reservations: Record<string, Entry<ReservationDef | null>>;
  daemon: Record<string, Entry<number | boolean>>;
}
export type Kind = keyof Overlay;
export const KINDS: readonly Kind[] = ['bridges', 'ageing', 'loop', 'ports', 'vlans', 'settings', 'fdb', 'reservations', 'daemon'];

/** Daemon-wide settings `vswitch set` changes (the event loop is one), by config key. */
export const DAEMON_SETTINGS = ['pollBeforeSleepUs', 'pollBeforeSleepBudgetMs', 'tapWriteBatch', 'turnYieldUs'] as const;
export type DaemonSetting = typeof DAEMON_SETTINGS[number];
export interface DaemonSettings { pollBeforeSleepUs: number; pollBeforeSleepBudgetMs: number; tapWriteBatch: boolean; turnYieldUs: number }
/** The numeric ones' ranges (config.ts's schema says the same); a value outside is refused with this message. */
export const DAEMON_LIMITS: Record<Exclude<DaemonSetting, 'tapWriteBatch'>, { min: number; max: number; unit: string }> = {
  pollBeforeSleepUs: { min: 0, max: 1000, unit: 'µs (0: off)' },
  pollBeforeSleepBudgetMs: { min: 1, max: 1000, unit: 'ms per second' },
  turnYieldUs: { min: 0, max: 100000, unit: 'µs (0: off)' },
};
export function daemonSettingProblem(setting: DaemonSetting, v: unknown): string | undefined {
  if (setting === 'tapWriteBatch') return typeof v === 'boolean' ? undefined : `tapWriteBatch must be true or false, got ${String(v)}`;
  const l = DAEMON_LIMITS[setting];
  return Number.isInteger(v) && (v as number) >= l.min && (v as number) <= l.max ? undefined
    : `${setting} must be a whole number ${l.min}-${l.max} ${l.unit}, got ${String(v)}`;
}

/** The port options `port set` changes (README "Port options at runtime"). */
export const PORT_SETTINGS = ['guard', 'storm', 'maxMacs', 'persistent', 'bpduGuard', 'ingressRate', 'egressRate'] as const;
export type PortSetting = typeof PORT_SETTINGS[number];
/** The guard switches of `port set PORT guard ...`; an absent key takes the default (guards.ts). */
export interface GuardSwitches { dhcp?: boolean; ipSource?: boolean; ra?: boolean; dhcpv6?: boolean; ipv6Source?: boolean }
/** Its keys, in the stored order. */
export const GUARD_SWITCHES = ['dhcp', 'ipSource', 'ra', 'dhcpv6', 'ipv6Source'] as const;

/** A port option's value in `spec`, canonical (the overlay's `settings` entries hold these). */
export function settingOf(spec: AddPortSpec, setting: PortSetting): unknown {
  switch (setting) {
    case 'guard': return stable(Object.fromEntries(GUARD_SWITCHES.map((k) => [k, spec.guard?.[k]])));
    case 'storm': return spec.stormPps ?? 0;
    case 'maxMacs': return spec.maxMacs ?? 0;
    case 'persistent': return spec.persistent ?? false;
    case 'bpduGuard': return bpduGuardOf(spec.type, spec.bpduGuard);
    case 'ingressRate': return rateValue(spec.ingressRate, 'ingressRate');
    case 'egressRate': return rateValue(spec.egressRate, 'egressRate');
  }
}

/** `spec` with a port option set (the guard's configured bindings are kept). */
export function withSetting(spec: AddPortSpec, setting: PortSetting, value: unknown): AddPortSpec {
  switch (setting) {
    case 'guard': {
      const g = value as GuardSwitches;
      const guard = stable({ ...spec.guard, ...Object.fromEntries(GUARD_SWITCHES.map((k) => [k, g[k]])) }) as AddPortSpec['guard'];
      return stable({ ...spec, guard: Object.keys(guard!).length > 0 ? guard : undefined }) as AddPortSpec;
    }
    case 'storm': return stable({ ...spec, stormPps: (value as number) > 0 ? value : undefined }) as AddPortSpec;
    case 'maxMacs': return { ...spec, maxMacs: value as number };
    case 'persistent': return { ...spec, persistent: value as boolean };
    case 'bpduGuard': return { ...spec, bpduGuard: value as boolean };
    case 'ingressRate':
    case 'egressRate': {
      const { [setting]: _old, ...rest } = spec;
      return (value as RateValue) === 'off' ? rest : { ...rest, [setting]: value as Exclude<RateValue, 'off'> };
    }
  }
}

/** The `loop` entry that holds a file bridge's flow cache switch (`bridge set BR flow-cache on|off`). */
export const FLOW_CACHE_KEY = 'flowCache';

export function loopKey(bridge: string, setting: LoopKey | typeof FLOW_CACHE_KEY): string {
  return `${bridge}/${setting}`;
}

export function settingKey(port: string, setting: PortSetting): string {
  return `${port}/${setting}`;
}

export const BRIDGE_DEFAULTS: BridgeSettings = { ageing: 300, maxMacs: 8192 };

export function emptyOverlay(): Overlay {
  return { bridges: {}, ageing: {}, loop: {}, ports: {}, vlans: {}, settings: {}, fdb: {}, reservations: {}, daemon: {} };
}

export function overlaySize(ov: Overlay): number {
  return KINDS.reduce((n, k) => n + Object.keys(ov[k]).length, 0);
}

/* ---------- canonical values: one spelling per meaning, so "equal" means equal ---------- */

/** JSON with sorted keys and no undefined members. */
export function stable(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(stable);
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) {
      const x = (v as Record<string, unknown>)[k];
      if (x !== undefined) out[k] = stable(x);
    }
    return out;
  }
  return v;
}

export function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(stable(a ?? null)) === JSON.stringify(stable(b ?? null));
}

export function canonVlan(spec: VlanSpec | undefined): VlanSpec {
  return (spec === undefined ? VlanPolicy.defaultAccess() : VlanPolicy.from(spec)).toSpec();
}

/** A port spec with defaults spelled out: persistent false, offload true, maxMacs 0, mode "0NNN", VLAN canonical. */
export function canonSpec(s: AddPortSpec): AddPortSpec {
  const out = stable({
    ...s,
    persistent: s.type === 'socket' ? undefined : s.persistent ?? false,
    offload: s.type === 'socket' ? undefined : s.offload ?? true,
    maxMacs: s.maxMacs ?? 0,
    mode: s.mode === undefined ? undefined : s.mode.padStart(4, '0'),
    connect: s.type === 'socket' ? s.connect ?? false : undefined,
    vlan: canonVlan(s.vlan),
  }) as AddPortSpec;
  return out;
}

/**
 * The fields a port cannot change in place: a difference recreates it (closes its
 * device, opens a new one). Persistence is not one: TUNSETPERSIST on the open TAP.
 */
export const PORT_KIND_KEYS = ['type', 'owner', 'group', 'offload', 'path', 'mode', 'connect', 'bond'] as const;

export function samePortKind(a: AddPortSpec, b: AddPortSpec): boolean {
  const ca = canonSpec(a) as unknown as Record<string, unknown>;
  const cb = canonSpec(b) as unknown as Record<string, unknown>;
  return PORT_KIND_KEYS.every((k) => same(ca[k], cb[k]));
}

export function fdbKey(bridge: string, vid: number, mac: string): string {
  return `${bridge}/${vid}/${formatMac(parseMac(mac))}`;
}

export function resKey(network: string, mac: string): string {
  return `${network}/${formatMac(parseMac(mac))}`;
}

/* ---------- the file's value of each kind of entry ---------- */

function filePort(file: Config, name: string): { bridge: string; spec: AddPortSpec } | undefined {
  for (const [bname, b] of Object.entries(file.bridges)) {
    const p = b.ports[name];
    if (p !== undefined) return { bridge: bname, spec: canonSpec(portSpec(p)) };
  }
  return undefined;
}

function fileNetwork(file: Config, name: string): { router: string; net: RouterConfig['networks'][string] } | undefined {
  for (const [rname, r] of Object.entries(file.routers)) {
    const n = r.networks[name];
    if (n !== undefined) return { router: rname, net: n };
  }
  return undefined;
}

/** Static entries of a file bridge, keyed as the overlay keys them (VID: the entry's, else the file port's PVID). */
function fileFdb(file: Config, bname: string): Map<string, string> {
  const out = new Map<string, string>();
  const b = file.bridges[bname];
  if (b === undefined) return out;
  for (const f of b.fdb) {
    const p = b.ports[f.port];
    const vid = f.vlan ?? (p === undefined ? 0 : VlanPolicy.from(canonVlan(p.vlan as VlanSpec | undefined)).pvid);
    out.set(fdbKey(bname, vid, f.mac), f.port);
  }
  return out;
}

export function fileValue(file: Config, kind: Kind, key: string): unknown {
  switch (kind) {
    case 'daemon':
      return (DAEMON_SETTINGS as readonly string[]).includes(key) ? file[key as DaemonSetting] : null;
    case 'bridges': {
      const b = file.bridges[key];
      return b === undefined ? null : { ageing: b.ageing, maxMacs: b.maxMacs };
    }
    case 'ageing':
      return file.bridges[key]?.ageing ?? null;
    case 'loop': {
      const [bname, setting] = key.split('/');
      const b = file.bridges[bname];
      if (b !== undefined && setting === FLOW_CACHE_KEY) return flowCacheOn(b);
      return b === undefined || !(LOOP_KEYS as readonly string[]).includes(setting) ? null : loopConf(fileLoopConf(b))[setting as LoopKey];
    }
    case 'ports':
      return filePort(file, key) ?? null;
    case 'vlans': {
      const p = filePort(file, key);
      return p === undefined ? null : p.spec.vlan;
    }
    case 'settings': {
      const [name, setting] = key.split('/');
      const p = filePort(file, name);
      return p === undefined || !(PORT_SETTINGS as readonly string[]).includes(setting) ? null : settingOf(p.spec, setting as PortSetting);
    }
    case 'fdb':
      return fileFdb(file, key.split('/')[0]).get(key) ?? null;
    case 'reservations': {
      const [network, mac] = key.split('/');
      const r = fileNetwork(file, network)?.net.dhcp?.reservations.find((x) => parseMac(x.mac) === parseMac(mac));
      return r === undefined ? null : stable({ ip: r.ip, hostname: r.hostname });
    }
  }
}

/**
 * The overlay with entry kind/key set to `value` (copy on write): kept with the
 * file's current value as its base, or removed when `value` is the file's value.
 */
export function withEntry(ov: Overlay, file: Config, kind: Kind, key: string, value: unknown): Overlay {
  const out = { ...ov, [kind]: { ...ov[kind] } } as Overlay;
  const base = fileValue(file, kind, key);
  const section = out[kind] as Record<string, Entry<unknown>>;
  if (same(value, base)) delete section[key];
  else section[key] = { value: stable(value), base: stable(base) };
  return out;
}

export function withoutEntries(ov: Overlay, kind: Kind, drop: (key: string, e: Entry<unknown>) => boolean): Overlay {
  const section = ov[kind] as Record<string, Entry<unknown>>;
  const keep = Object.entries(section).filter(([k, e]) => !drop(k, e));
  if (keep.length === Object.keys(section).length) return ov;
  return { ...ov, [kind]: Object.fromEntries(keep) } as Overlay;
}

/** Drops the entries whose base no longer matches the file (the file changed that setting: it wins) or whose value now equals it. */
export function rebase(ov: Overlay, file: Config): { overlay: Overlay; notes: string[] } {
  const notes: string[] = [];
  const out = emptyOverlay();
  for (const kind of KINDS) {
    for (const [key, e] of Object.entries(ov[kind] as Record<string, Entry<unknown>>)) {
      const now = fileValue(file, kind, key);
      if (!same(now, e.base)) {
        notes.push(`${kind} ${key}: the config file changed it since the CLI did; the file's ${now === null ? 'removal' : 'value'} applies`);
        continue;
      }
      if (same(now, e.value)) continue;
      (out[kind] as Record<string, Entry<unknown>>)[key] = e;
    }
  }
  return { overlay: out, notes };
}

/* ---------- the running state the daemon aims at ---------- */

/** `loop`: the file's loopProtection with the CLI's settings over it, or a runtime bridge's (absent: the defaults, traffic.ts). */
export interface DesiredBridge extends BridgeSettings { source: Source; overrides: string[] }
export interface DesiredPort extends PortDef { source: Source; overrides: string[] }
export interface DesiredFdb { bridge: string; vid: number; mac: string; port: string; source: Source }
export interface DesiredReservation { network: string; mac: string; ip: string; hostname?: string; source: Source }

export interface Desired {
  bridges: Map<string, DesiredBridge>;
  ports: Map<string, DesiredPort>;
  /** Static MAC entries by fdbKey. */
  fdb: Map<string, DesiredFdb>;
  /** The file's routers, each network's DHCP reservations being the effective ones (file + CLI). */
  routers: Map<string, RouterConfig>;
  reservations: Map<string, DesiredReservation>;
  /** Daemon-wide settings, and which of them the CLI set. */
  daemon: DaemonSettings & { overrides: DaemonSetting[] };
}

export function emptyDesired(): Desired {
  return { bridges: new Map(), ports: new Map(), fdb: new Map(), routers: new Map(), reservations: new Map(),
    daemon: { pollBeforeSleepUs: 0, pollBeforeSleepBudgetMs: 200, tapWriteBatch: TAP_WRITE_BATCH_DEFAULT, turnYieldUs: TURN_YIELD_US_DEFAULT, overrides: [] } };
}

/**
 * The running state for `file` and `ov`: the overlay rebased on the file, cleaned
 * of entries that cannot apply, and notes saying what was dropped and why.
 */
export function effective(file: Config, ovIn: Overlay): { desired: Desired; overlay: Overlay; notes: string[] } {
  const rb = rebase(ovIn, file);
  const notes = rb.notes;
  let ov = rb.overlay;
  const d = emptyDesired();
  const networks = new Map<string, { router: string; bridge: string }>();
  for (const [rname, r] of Object.entries(file.routers)) {
    for (const [nname, n] of Object.entries(r.networks)) networks.set(nname, { router: rname, bridge: n.bridge });
  }
  const neededBridges = new Set([...networks.values()].map((n) => n.bridge));

  // Daemon-wide settings.
  d.daemon.pollBeforeSleepUs = file.pollBeforeSleepUs;
  d.daemon.pollBeforeSleepBudgetMs = file.pollBeforeSleepBudgetMs;
  d.daemon.tapWriteBatch = file.tapWriteBatch;
  d.daemon.turnYieldUs = file.turnYieldUs;
  for (const [k, e] of Object.entries(ov.daemon)) {
    (d.daemon as Record<DaemonSetting, number | boolean>)[k as DaemonSetting] = e.value;
    d.daemon.overrides.push(k as DaemonSetting);
  }

  // Bridges.
  for (const [name, b] of Object.entries(file.bridges)) {
    d.bridges.set(name, { ageing: b.ageing, maxMacs: b.maxMacs, loop: fileLoopConf(b), source: 'config', overrides: [], flowCache: flowCacheOn(b) });
  }
  for (const [name, e] of Object.entries(ov.ageing)) {
    const b = d.bridges.get(name);
    if (b !== undefined) {
      b.ageing = e.value;
      b.overrides.push('ageing');
    }
  }
  for (const [key, e] of Object.entries(ov.loop)) {
    const [name, setting] = key.split('/');
    const b = d.bridges.get(name);
    if (b !== undefined && setting === FLOW_CACHE_KEY) {
      b.flowCache = e.value === true;
      b.overrides.push(setting);
    } else if (b !== undefined) {
      b.loop = stable({ ...b.loop, [setting]: e.value }) as LoopConf;
      b.overrides.push(setting);
    }
  }
  for (const [name, e] of Object.entries(ov.bridges)) {
    if (e.value === null) {
      if (neededBridges.has(name)) {
        notes.push(`bridge ${name}: a router network of the config file is on it; it is not deleted`);
        ov = withoutEntries(ov, 'bridges', (k) => k === name);
        continue;
      }
      d.bridges.delete(name);
    } else {
      d.bridges.set(name, { ...e.value, flowCache: flowCacheOn(e.value), source: 'runtime', overrides: [] });
    }
  }

  // Ports.
  for (const [bname, b] of Object.entries(file.bridges)) {
    for (const [pname, p] of Object.entries(b.ports)) {
      d.ports.set(pname, { bridge: bname, spec: canonSpec(portSpec(p)), source: 'config', overrides: [] });
    }
  }
  for (const [name, e] of Object.entries(ov.vlans)) {
    const p = d.ports.get(name);
    if (p !== undefined) {
      p.spec = { ...p.spec, vlan: e.value };
      p.overrides.push('vlan');
    }
  }
  for (const [key, e] of Object.entries(ov.settings)) {
    const [name, setting] = key.split('/');
    const p = d.ports.get(name);
    if (p !== undefined) {
      p.spec = withSetting(p.spec, setting as PortSetting, e.value);
      p.overrides.push(setting);
    }
  }
  for (const [name, e] of Object.entries(ov.ports)) {
    if (e.value === null) d.ports.delete(name);
    else d.ports.set(name, { bridge: e.value.bridge, spec: canonSpec(e.value.spec), source: 'runtime', overrides: [] });
  }
  for (const [name, p] of [...d.ports]) {
    const why = !d.bridges.has(p.bridge) ? `its bridge ${p.bridge} is gone`
      : networks.has(name) ? `the name is a network of router ${networks.get(name)!.router} in the config file` : undefined;
    if (why === undefined) continue;
    d.ports.delete(name);
    if (p.source === 'runtime') {
      notes.push(`port ${name}: dropped, ${why}`);
      ov = withoutEntries(ov, 'ports', (k) => k === name);
    }
  }

  // Static MAC entries.
  for (const bname of Object.keys(file.bridges)) {
    for (const [key, port] of fileFdb(file, bname)) {
      const [, vid, mac] = key.split('/');
      d.fdb.set(key, { bridge: bname, vid: Number(vid), mac, port, source: 'config' });
    }
  }
  for (const [key, e] of Object.entries(ov.fdb)) {
    const [bridge, vid, mac] = key.split('/');
    if (e.value === null) d.fdb.delete(key);
    else d.fdb.set(key, { bridge, vid: Number(vid), mac, port: e.value, source: 'runtime' });
  }
  for (const [key, f] of [...d.fdb]) {
    const p = d.ports.get(f.port);
    if (p !== undefined && p.bridge === f.bridge && VlanPolicy.from(p.spec.vlan ?? canonVlan(undefined)).isMember(f.vid)) continue;
    d.fdb.delete(key);
    if (f.source === 'runtime') {
      notes.push(`fdb ${f.mac} vlan ${f.vid}: dropped, port ${f.port} is not in VLAN ${f.vid} of bridge ${f.bridge}`);
      ov = withoutEntries(ov, 'fdb', (k) => k === key);
    }
  }

  // DHCP reservations: the file's first, then the CLI's that still fit.
  const resOf = new Map<string, DesiredReservation[]>();
  for (const [nname] of networks) {
    const n = fileNetwork(file, nname)!.net;
    const list = (n.dhcp?.reservations ?? []).map((r): DesiredReservation => ({
      network: nname, mac: formatMac(parseMac(r.mac)), ip: r.ip, hostname: r.hostname, source: 'config',
    }));
    resOf.set(nname, list);
  }
  for (const [key, e] of Object.entries(ov.reservations)) {
    const [nname, mac] = key.split('/');
    const list = resOf.get(nname);
    const drop = (why: string): void => {
      notes.push(`reservation ${mac} in ${nname}: dropped, ${why}`);
      ov = withoutEntries(ov, 'reservations', (k) => k === key);
    };
    if (list === undefined) { drop('no such network in the config file'); continue; }
    const i = list.findIndex((r) => parseMac(r.mac) === parseMac(mac));
    if (e.value === null) {
      if (i >= 0) list.splice(i, 1);
      continue;
    }
    const net = fileNetwork(file, nname)!.net;
    if (net.dhcp === undefined) { drop('the network has no DHCP server'); continue; }
    const why = reservationProblem(net.address, e.value.ip);
    if (why !== undefined) { drop(why); continue; }
    const other = list.find((r) => r.ip === e.value!.ip && parseMac(r.mac) !== parseMac(mac));
    if (other !== undefined) { drop(`${e.value.ip} is reserved for ${other.mac}`); continue; }
    const r: DesiredReservation = { network: nname, mac: formatMac(parseMac(mac)), ip: e.value.ip, hostname: e.value.hostname, source: 'runtime' };
    if (i >= 0) list[i] = r;
    else list.push(r);
  }
  for (const list of resOf.values()) for (const r of list) d.reservations.set(resKey(r.network, r.mac), r);

  for (const [rname, r] of Object.entries(file.routers)) {
    const rc = structuredClone(r);
    for (const [nname, n] of Object.entries(rc.networks)) {
      if (n.dhcp !== undefined) {
        n.dhcp.reservations = (resOf.get(nname) ?? []).map((x) => stable({ mac: x.mac, ip: x.ip, hostname: x.hostname }) as typeof n.dhcp.reservations[number]);
      }
    }
    d.routers.set(rname, rc);
  }
  return { desired: d, overlay: ov, notes };
}

/** Why `ip` cannot be reserved in a network with gateway/prefix `cidr`, or undefined. */
export function reservationProblem(cidr: string, ipText: string): string | undefined {
  const c = parseCidr(cidr)!;
  const ip = parseIp4(ipText);
  if (ip < 0) return `${ipText} is not an IPv4 address`;
  const net = maskOf(c.ip, c.prefix);
  const bcast = (net | ~((0xffffffff << (32 - c.prefix)) >>> 0)) >>> 0;
  if (maskOf(ip, c.prefix) !== net) return `${ipText} is outside the network ${cidr}`;
  if (ip === c.ip) return `${ipText} is the gateway's own address`;
  if (ip === net || ip === bcast) return `${ipText} is the network's ${ip === net ? 'network' : 'broadcast'} address`;
  return undefined;
}

/* ---------- from one running state to another ---------- */

export interface Plan {
  bridgesDel: string[];
  bridgesAdd: string[];
  /** Bridges whose ageing or MAC table size changes. */
  bridgesSet: string[];
  /** Ports removed, recreated ones included (closed first, then opened anew). */
  portsDel: string[];
  /** Ports opened: new, recreated (`recreate`), or retried after they failed (`retry`). */
  portsAdd: string[];
  recreate: Set<string>;
  retry: Set<string>;
  /** Ports changed in place (VLANs, limits, guards): the device and its counters stay. */
  portsSet: string[];
  fdbDel: DesiredFdb[];
  fdbAdd: DesiredFdb[];
}

/**
 * What changes from `prev` to `next` (bridges, ports, static entries; routers are
 * compared by routerDiff). `failed`: ports of `prev` that are not running (they
 * could not be opened): they are opened again if `next` still wants them.
 */
export function planChanges(prev: Desired, next: Desired, failed: ReadonlySet<string> = new Set()): Plan {
  const p: Plan = {
    bridgesDel: [], bridgesAdd: [], bridgesSet: [], portsDel: [], portsAdd: [], recreate: new Set(), retry: new Set(), portsSet: [], fdbDel: [], fdbAdd: [],
  };
  for (const name of prev.bridges.keys()) if (!next.bridges.has(name)) p.bridgesDel.push(name);
  for (const [name, b] of next.bridges) {
    const old = prev.bridges.get(name);
    if (old === undefined) p.bridgesAdd.push(name);
    else if (old.ageing !== b.ageing || old.maxMacs !== b.maxMacs || !same(old.loop, b.loop) || flowCacheOn(old) !== flowCacheOn(b)) p.bridgesSet.push(name);
  }
  const bridgesGone = new Set(p.bridgesDel);
  for (const [name, old] of prev.ports) {
    const now = next.ports.get(name);
    if (now === undefined) {
      if (!failed.has(name)) p.portsDel.push(name);
    } else if (failed.has(name)) {
      p.portsAdd.push(name);
      p.retry.add(name);
    } else if (old.bridge !== now.bridge || !samePortKind(old.spec, now.spec) || bridgesGone.has(old.bridge)) {
      p.portsDel.push(name);
      p.portsAdd.push(name);
      p.recreate.add(name);
    } else if (!same(old.spec, now.spec)) {
      p.portsSet.push(name);
    }
  }
  for (const name of next.ports.keys()) if (!prev.ports.has(name)) p.portsAdd.push(name);
  const opened = new Set(p.portsAdd);
  const closed = new Set(p.portsDel);
  for (const [key, f] of prev.fdb) {
    const now = next.fdb.get(key);
    if ((now === undefined || now.port !== f.port) && !closed.has(f.port) && !failed.has(f.port)) p.fdbDel.push(f);
  }
  for (const [key, f] of next.fdb) {
    const old = prev.fdb.get(key);
    if (old === undefined || old.port !== f.port || opened.has(f.port)) p.fdbAdd.push(f);
  }
  return p;
}

export interface RouterEdit {
  /** Why the router must be rebuilt (its NAT sessions and counters are lost), or undefined: edited in place. */
  rebuild?: string;
  /** Networks whose DHCP section changed (options, pools, reservations, lease time, limits; added or removed). */
  dhcp: string[];
  forwards: boolean;
  /** The per-port rate limits (`limits`). */
  limits: boolean;
}

/** Per network, what only a rebuild can change. */
const NETWORK_FIXED = ['bridge', 'vlan', 'address', 'mac'];

/**
 * How a router goes from `a` to `b`: in place (DHCP of its networks, its forwards,
 * its per-port rate limits) or rebuilt (uplink, NAT limits, interconnect, the set of networks, a network's
 * bridge/VLAN/address/MAC, the MTU a host uplink uses, any key not known here).
 */
export function routerDiff(a: RouterConfig, b: RouterConfig): RouterEdit {
  const e: RouterEdit = { dhcp: [], forwards: !same(a.forwards, b.forwards), limits: !same(a.limits, b.limits) };
  const rest = (r: RouterConfig): Record<string, unknown> => {
    const { forwards: _f, networks: _n, limits: _l, ...others } = r;
    return others;
  };
  const ra = rest(a);
  const rb = rest(b);
  for (const k of new Set([...Object.keys(ra), ...Object.keys(rb)])) {
    if (!same(ra[k], rb[k])) return { ...e, rebuild: k };
  }
  const na = Object.keys(a.networks).sort();
  const nb = Object.keys(b.networks).sort();
  if (!same(na, nb)) return { ...e, rebuild: 'networks' };
  for (const name of na) {
    const x = a.networks[name] as Record<string, unknown>;
    const y = b.networks[name] as Record<string, unknown>;
    for (const k of new Set([...Object.keys(x), ...Object.keys(y)])) {
      if (k === 'dhcp') continue;
      if (!same(x[k], y[k])) return { ...e, rebuild: `networks.${name}.${k}` };
    }
    if (!same(x.dhcp, y.dhcp)) e.dhcp.push(name);
  }
  // A host uplink sizes TCP segments to the VMs by the smallest MTU its DHCP hands out (routers.ts).
  const mtu = (r: RouterConfig): number => Math.min(...Object.values(r.networks).map((n) => n.dhcp?.mtu ?? 1500));
  if (b.uplink?.kind === 'host' && mtu(a) !== mtu(b)) return { ...e, rebuild: 'dhcp.mtu (host uplink MSS)' };
  return e;
}

/* ---------- the file ---------- */

export class RuntimeStateError extends Error {
  readonly code = 'ESTATE';
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Parses runtime.json; throws RuntimeStateError naming what is wrong. */
export function parseOverlay(text: string): Overlay {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new RuntimeStateError(`not valid JSON (${(e as Error).message})`);
  }
  if (!isRecord(doc)) throw new RuntimeStateError('not a JSON object');
  if (doc.version !== RUNTIME_VERSION) throw new RuntimeStateError(`unsupported version ${JSON.stringify(doc.version)} (expected ${RUNTIME_VERSION})`);
  const ov = emptyOverlay();
  for (const kind of KINDS) {
    const section = doc[kind] ?? {};
    if (!isRecord(section)) throw new RuntimeStateError(`"${kind}" is not an object`);
    for (const [key, e] of Object.entries(section)) {
      if (!isRecord(e) || !('value' in e) || !('base' in e)) throw new RuntimeStateError(`${kind} ${key}: not an entry {value, base}`);
      const why = checkEntry(kind, key, e.value);
      if (why !== undefined) throw new RuntimeStateError(`${kind} ${key}: ${why}`);
      (ov[kind] as Record<string, Entry<unknown>>)[key] = { value: e.value, base: e.base };
    }
  }
  return ov;
}

const NAME = /^[^/\s]{1,32}$/;
const int = (v: unknown, lo: number, hi: number): boolean => Number.isInteger(v) && (v as number) >= lo && (v as number) <= hi;

function checkVlan(v: unknown): string | undefined {
  try {
    VlanPolicy.from(v as VlanSpec);
    return isRecord(v) && ['access', 'trunk', 'hybrid'].includes(v.mode as string) ? undefined : 'bad VLAN spec';
  } catch (e) {
    return `bad VLAN spec: ${(e as Error).message}`;
  }
}

function checkEntry(kind: Kind, key: string, v: unknown): string | undefined {
  switch (kind) {
    case 'daemon':
      if (!(DAEMON_SETTINGS as readonly string[]).includes(key)) return `unknown daemon setting ${JSON.stringify(key)}`;
      return daemonSettingProblem(key as DaemonSetting, v);
    case 'bridges':
      if (!NAME.test(key)) return 'bad bridge name';
      if (v === null) return undefined;
      if (!isRecord(v) || !int(v.ageing, 0, 1_000_000) || !int(v.maxMacs, 1, 1_000_000)) return 'bad bridge settings';
      if (v.flowCache !== undefined && typeof v.flowCache !== 'boolean') return 'bad flow cache switch';
      if (v.loop === undefined) return undefined;
      if (!isRecord(v.loop) || Object.keys(v.loop).some((k) => !(LOOP_KEYS as readonly string[]).includes(k))) return 'bad loop protection';
      return loopProblem(v.loop);
    case 'ageing':
      return int(v, 0, 1_000_000) ? undefined : 'bad ageing';
    case 'loop': {
      const [b, setting, ...rest] = key.split('/');
      if (rest.length || !b || !NAME.test(b)) return 'bad key (bridge/setting)';
      if (setting === FLOW_CACHE_KEY) return typeof v === 'boolean' ? undefined : 'bad flow cache switch';
      if (!(LOOP_KEYS as readonly string[]).includes(setting)) return `unknown loop protection setting ${JSON.stringify(setting)}`;
      return loopProblem({ [setting]: v });
    }
    case 'ports':
      if (!NAME.test(key)) return 'bad port name';
      if (v === null) return undefined;
      if (!isRecord(v) || typeof v.bridge !== 'string' || !isRecord(v.spec) || !['tap', 'attach', 'socket', 'bond'].includes(v.spec.type as string)) return 'bad port';
      return v.spec.vlan === undefined ? undefined : checkVlan(v.spec.vlan);
    case 'vlans':
      return checkVlan(v);
    case 'settings': {
      const [port, setting, ...rest] = key.split('/');
      if (rest.length || !port || !NAME.test(port)) return 'bad key (port/setting)';
      switch (setting) {
        case 'guard':
          return isRecord(v) && Object.entries(v).every(([k, x]) => (GUARD_SWITCHES as readonly string[]).includes(k) && typeof x === 'boolean') ? undefined : 'bad guard switches';
        case 'storm': return int(v, 0, 100_000_000) ? undefined : 'bad storm control rate';
        case 'maxMacs': return int(v, 0, 1_000_000) ? undefined : 'bad MAC limit';
        case 'persistent': return typeof v === 'boolean' ? undefined : 'bad persistence';
        case 'bpduGuard': return typeof v === 'boolean' ? undefined : 'bad BPDU guard';
        case 'ingressRate':
        case 'egressRate': {
          const why = rateValueProblem(v);
          return why === undefined ? undefined : `bad ${setting}: ${why}`;
        }
        default: return `unknown port setting ${JSON.stringify(setting)}`;
      }
    }
    case 'fdb': {
      const [b, vid, mac, ...rest] = key.split('/');
      if (rest.length || !b || !int(Number(vid), 1, 4094) || parseMac(mac ?? '') < 0) return 'bad key (bridge/VID/MAC)';
      return v === null || typeof v === 'string' ? undefined : 'bad port';
    }
    case 'reservations': {
      const [n, mac, ...rest] = key.split('/');
      if (rest.length || !n || parseMac(mac ?? '') < 0) return 'bad key (network/MAC)';
      if (v === null) return undefined;
      return isRecord(v) && typeof v.ip === 'string' && parseIp4(v.ip) >= 0 && (v.hostname === undefined || typeof v.hostname === 'string') ? undefined : 'bad reservation';
    }
  }
}

function loopProblem(c: Record<string, unknown>): string | undefined {
  try {
    checkLoop(c as LoopConf);
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

export function serializeOverlay(ov: Overlay): string {
  return JSON.stringify({ version: RUNTIME_VERSION, ...(stable(ov) as object) }, null, 2) + '\n';
}

export function runtimeFile(stateDir: string): string {
  return join(stateDir, RUNTIME_FILE);
}

/**
 * Loads the overlay. A file that cannot be trusted (symlink, not a regular file,
 * bad JSON or content) is renamed aside to `runtime.json.bad-<ms>` (kept for the
 * operator) and the daemon starts from the config file alone; `error` says why.
 */
export function loadOverlay(stateDir: string): { overlay: Overlay; error?: string; movedTo?: string } {
  ensureStateDir(stateDir);
  const path = runtimeFile(stateDir);
  try {
    const text = readStateFile(path);
    return { overlay: text === undefined ? emptyOverlay() : parseOverlay(text) };
  } catch (e) {
    const movedTo = `${path}.bad-${Date.now()}`;
    try {
      renameSync(path, movedTo);
    } catch {
      return { overlay: emptyOverlay(), error: `${path}: ${(e as Error).message}` };
    }
    return { overlay: emptyOverlay(), error: `${path}: ${(e as Error).message}`, movedTo };
  }
}

export function saveOverlay(stateDir: string, ov: Overlay): void {
  ensureStateDir(stateDir);
  writeStateFile(runtimeFile(stateDir), serializeOverlay(ov));
}
