/*
 * The daemon's state: named bridges and their ports, built from the config file and
 * changed by control-socket commands. It composes @vswitch/switch pieces and owns
 * the rules that span bridges (a port name belongs to at most one bridge). Every
 * command validates fully before it changes anything, so a refused command leaves
 * the running state exactly as it was.
 */
import {
  Bridge, type BridgeEvent, checkVid, formatMac, parseMac, type PortIo,
  VlanPolicy, type VlanSpec, VlanPolicyError,
} from '@vswitch/switch';
import { AttachIo, SocketIo, TapIo } from '@vswitch/switch/ports';
import { resolve } from 'node:path';
import type { Config, PortConfig, RouterConfig } from '../config.js';
import { ManagedRouter } from './routers.js';
import { applyGuard, leaseBound, leaseGone, type GuardSpec } from './guards.js';
import { VswitchError } from '../errors.js';
import type { Logger } from './log.js';

export interface AddPortSpec {
  type: 'tap' | 'attach' | 'socket';
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
}

export class Vswitch {
  readonly bridges = new Map<string, Bridge>();
  /** Port name -> bridge name. */
  readonly #owner = new Map<string, string>();
  readonly #specs = new Map<string, AddPortSpec>();
  readonly routers = new Map<string, ManagedRouter>();
  /** Router config as applied, to tell on reload whether a router changed. */
  readonly #routerConfigs = new Map<string, string>();

  constructor(private readonly log: Logger) {}

  /** Builds everything in `cfg`; on any failure undoes what it built and throws. */
  apply(cfg: Config): void {
    try {
      for (const [bname, b] of Object.entries(cfg.bridges)) {
        this.addBridge(bname, { ageing: b.ageing, maxMacs: b.maxMacs });
        for (const [pname, p] of Object.entries(b.ports)) {
          this.addPort(bname, pname, portSpec(p), `bridges.${bname}.ports.${pname}`);
        }
        for (const f of b.fdb) this.fdbAdd(f.mac, f.port, f.vlan);
      }
      for (const [rname, r] of Object.entries(cfg.routers)) this.addRouter(rname, r, cfg.stateDir);
    } catch (e) {
      this.close();
      throw e;
    }
  }

  /**
   * Makes the running state match `cfg`, touching only what differs: unchanged ports
   * keep their devices, MAC entries and counters; a VLAN or limit change is applied
   * in place; a port whose kind or persistence changed is recreated. Removals run
   * first so a port may move between bridges. Interfaces to attach are checked
   * before anything changes. Returns what was done.
   */
  reload(cfg: Config, exists: (ifname: string) => boolean): string[] {
    for (const [bname, b] of Object.entries(cfg.bridges)) {
      for (const [pname, p] of Object.entries(b.ports)) {
        const running = this.#owner.get(pname);
        if (p.type === 'attach' && running === undefined && !exists(pname)) {
          throw new VswitchError('ENODEV', `bridges.${bname}.ports.${pname}: no interface ${pname} to attach`);
        }
      }
    }
    const done: string[] = [];
    // 0. Routers whose section changed are rebuilt (leases are in the state directory;
    //    their NAT sessions are lost). Unchanged routers are not touched.
    for (const rname of [...this.routers.keys()]) {
      const want = cfg.routers[rname];
      const have = this.#routerConfigs.get(rname);
      if (want === undefined || JSON.stringify(want) !== have) {
        if (want !== undefined && have !== undefined && onlyLimitsDiffer(want, have)) {
          // Rate limits change in place: sessions, leases and counters stay.
          this.routers.get(rname)!.router.setLimits(want.limits);
          this.#routerConfigs.set(rname, JSON.stringify(want));
          done.push(`limits ${rname} ${JSON.stringify(want.limits)}`);
          continue;
        }
        this.delRouter(rname);
        done.push(`delrouter ${rname}`);
      }
    }
    for (const [bname, br] of [...this.bridges]) {
      const want = cfg.bridges[bname];
      if (want === undefined) {
        this.delBridge(bname);
        done.push(`delbr ${bname}`);
        continue;
      }
      for (const pname of [...br.ports.keys()]) {
        if (this.routerOfNetwork(pname) !== undefined) continue;
        const wantPort = want.ports[pname];
        const have = this.#specs.get(pname);
        if (wantPort === undefined || have === undefined || !samePortKind(have, portSpec(wantPort))) {
          this.delPort(bname, pname);
          done.push(`delif ${bname} ${pname}`);
        }
      }
    }
    // 2. Add or update.
    for (const [bname, b] of Object.entries(cfg.bridges)) {
      let br = this.bridges.get(bname);
      if (br === undefined) {
        br = this.addBridge(bname, { ageing: b.ageing, maxMacs: b.maxMacs });
        done.push(`addbr ${bname}`);
      } else {
        if (br.fdb.ageingSec !== b.ageing) {
          br.fdb.setAgeing(b.ageing);
          done.push(`setageing ${bname} ${b.ageing}`);
        }
        if (br.fdb.maxEntries !== b.maxMacs) {
          br.fdb.setMaxEntries(b.maxMacs);
          done.push(`maxmacs ${bname} ${b.maxMacs}`);
        }
      }
      for (const [pname, p] of Object.entries(b.ports)) {
        const spec = portSpec(p);
        const port = br.port(pname);
        if (port === undefined) {
          this.addPort(bname, pname, spec, `bridges.${bname}.ports.${pname}`);
          done.push(`addif ${bname} ${pname}`);
          continue;
        }
        const policy = spec.vlan ? policyFrom(spec.vlan) : VlanPolicy.defaultAccess();
        if (JSON.stringify(policy.members()) !== JSON.stringify(port.vlan.members()) || policy.pvid !== port.vlan.pvid) {
          br.setPortVlan(pname, policy);
          done.push(`vlan ${pname} ${JSON.stringify(policy.toSpec())}`);
        }
        if ((this.#specs.get(pname)?.maxMacs ?? 0) !== (spec.maxMacs ?? 0)) {
          br.setPortMaxMacs(pname, spec.maxMacs ?? 0);
          done.push(`maxmacs ${pname} ${spec.maxMacs ?? 0}`);
        }
        if ((this.#specs.get(pname)?.stormPps ?? 0) !== (spec.stormPps ?? 0)) {
          br.setPortStorm(pname, spec.stormPps ?? 0);
          done.push(`stormcontrol ${pname} ${spec.stormPps ?? 0}`);
        }
        this.#specs.set(pname, spec);
      }
      // Static entries: the file's set replaces the running set.
      const want = new Set(b.fdb.map((f) => `${f.vlan ?? br!.port(f.port)!.vlan.pvid}/${parseMac(f.mac)}/${f.port}`));
      for (const e of br.fdb.entries()) {
        if (e.isStatic && !want.has(`${e.vid}/${e.mac}/${br.portName(e.port)}`)) {
          br.fdb.delete(e.vid, e.mac);
          done.push(`fdb del ${formatMac(e.mac)} vlan ${e.vid}`);
        }
      }
      for (const f of b.fdb) {
        const vid = f.vlan ?? br.port(f.port)!.vlan.pvid;
        const e = br.fdb.get(vid, parseMac(f.mac));
        if (e === undefined || !e.isStatic || br.portName(e.port) !== f.port) {
          this.fdbAdd(f.mac, f.port, f.vlan);
          done.push(`fdb add ${f.mac} dev ${f.port} vlan ${vid}`);
        }
      }
    }
    for (const [rname, r] of Object.entries(cfg.routers)) {
      if (!this.routers.has(rname)) {
        this.addRouter(rname, r, cfg.stateDir);
        done.push(`addrouter ${rname}`);
      }
    }
    this.#applyGuards();
    this.log.info({ event: 'config_applied', changes: done }, 'config_applied');
    return done;
  }

  close(): void {
    for (const name of [...this.routers.keys()]) this.delRouter(name);
    for (const name of [...this.bridges.keys()]) this.delBridge(name);
  }

  addRouter(name: string, rc: RouterConfig, stateDir: string): ManagedRouter {
    if (this.routers.has(name)) throw new VswitchError('EEXIST', `router ${name} already exists`);
    const added: [string, string][] = [];
    let mr: ManagedRouter;
    try {
      mr = new ManagedRouter(name, rc, stateDir, (b) => this.bridge(b), (bname, pname, net, vlan) => {
        if (this.#owner.has(pname)) throw new VswitchError('EEXIST', `routers.${name}.networks.${pname}: ${pname} is already a port`);
        this.bridge(bname).addPort(pname, net, { vlan });
        this.#owner.set(pname, bname);
        added.push([bname, pname]);
      }, (e) => {
        // What an operator must act on (ICMP without CAP_NET_RAW, no resolver, a forward that cannot listen) is a warning.
        if (/_unavailable$|_failed$|^dns_no_resolver$|^forward_error$|^rate_limited$/.test(e.event)) this.log.warn({ router: name, ...e }, e.event);
        else this.log.info({ router: name, ...e }, e.event);
      }, {
        bound: (port, mac, ip) => leaseBound(this.bridges.values(), port, mac, ip),
        gone: (port, mac, ip) => leaseGone(this.bridges.values(), port, mac, ip),
      });
      mr.start();
    } catch (e) {
      for (const [bname, pname] of added) {
        this.bridge(bname).removePort(pname);
        this.#owner.delete(pname);
      }
      throw e;
    }
    this.routers.set(name, mr);
    this.#routerConfigs.set(name, JSON.stringify(rc));
    this.#applyGuards();
    this.log.info({ event: 'router_added', router: name, networks: [...mr.router.networks.keys()], uplink: mr.router.uplink?.describe() }, 'router_added');
    return mr;
  }

  delRouter(name: string): void {
    const mr = this.router(name);
    mr.close();
    for (const net of mr.router.networks.keys()) {
      const bname = this.#owner.get(net);
      if (bname !== undefined) this.bridges.get(bname)?.removePort(net);
      this.#owner.delete(net);
    }
    this.routers.delete(name);
    this.#routerConfigs.delete(name);
    this.#applyGuards();
    this.log.info({ event: 'router_deleted', router: name }, 'router_deleted');
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

  addBridge(name: string, opts: { ageing?: number; maxMacs?: number } = {}): Bridge {
    if (this.bridges.has(name)) throw new VswitchError('EEXIST', `bridge ${name} already exists`);
    if (!/^[A-Za-z0-9_.:-]{1,32}$/.test(name)) throw new VswitchError('EINVAL', `bad bridge name '${name}'`);
    const br = new Bridge(name, {
      ageingSec: opts.ageing,
      maxEntries: opts.maxMacs,
      onEvent: (e: BridgeEvent) => this.log[e.event === 'port_down' ? 'warn' : 'info'](e, e.event),
    });
    br.start();
    this.bridges.set(name, br);
    this.log.info({ event: 'bridge_added', bridge: name }, 'bridge_added');
    return br;
  }

  delBridge(name: string): void {
    const br = this.bridge(name);
    for (const p of br.ports.keys()) {
      const r = this.routerOfNetwork(p);
      if (r !== undefined) throw new VswitchError('EBUSY', `bridge ${name} carries network ${p} of router ${r.name}`);
    }
    for (const p of br.ports.keys()) {
      this.#owner.delete(p);
      this.#specs.delete(p);
    }
    br.close();
    this.bridges.delete(name);
    this.log.info({ event: 'bridge_deleted', bridge: name }, 'bridge_deleted');
  }

  bridge(name: string): Bridge {
    const br = this.bridges.get(name);
    if (br === undefined) throw new VswitchError('ENOENT', `no such bridge: ${name}`);
    return br;
  }

  addPort(bname: string, ifname: string, spec: AddPortSpec, where = ''): void {
    const br = this.bridge(bname);
    const other = this.#owner.get(ifname);
    if (other !== undefined) {
      throw new VswitchError('EEXIST', other === bname
        ? `${ifname} is already a port of bridge ${bname}`
        : `${ifname} is already a port of another bridge (${other})`);
    }
    if (!/^[A-Za-z0-9_.:@-]{1,15}$/.test(ifname)) throw new VswitchError('EINVAL', `bad interface name '${ifname}' (1-15 characters)`);
    const vlan = spec.vlan ? policyFrom(spec.vlan) : VlanPolicy.defaultAccess();
    let io: PortIo;
    try {
      if (spec.type === 'socket') {
        if (spec.path === undefined) throw new VswitchError('EINVAL', 'a socket port needs a path');
        for (const [name, other] of this.#specs) {
          if (other.type === 'socket' && other.path !== undefined && resolve(other.path) === resolve(spec.path)) {
            throw new VswitchError('EEXIST', `it is already the socket of port ${name}`);
          }
        }
        io = new SocketIo(ifname, {
          path: spec.path, connect: spec.connect, mode: parseInt(spec.mode ?? '0600', 8), owner: spec.owner, group: spec.group,
        });
      } else {
        io = spec.type === 'attach' ? new AttachIo(ifname, { keepGso: spec.offload ?? true, reattach: true }) : new TapIo(ifname, { persistent: spec.persistent, owner: spec.owner, group: spec.group, offload: spec.offload });
      }
    } catch (e) {
      const code = (e as { code?: string }).code ?? 'EIO';
      const what = spec.type === 'attach' ? `cannot attach ${ifname}` : spec.type === 'socket' ? `cannot ${spec.connect ? 'use' : 'listen on'} socket ${spec.path}` : `cannot open TAP ${ifname}`;
      throw new VswitchError(code, `${where ? where + ': ' : ''}${what}: ${(e as Error).message}`);
    }
    try {
      br.addPort(ifname, io, { vlan, maxMacs: spec.maxMacs, stormPps: spec.stormPps });
    } catch (e) {
      io.close();
      throw e;
    }
    this.#owner.set(ifname, bname);
    this.#specs.set(ifname, spec);
    this.#applyGuard(ifname);
    this.log.info({ event: 'port_added', bridge: bname, port: ifname, type: spec.type, vlan: vlan.toSpec(), ...(spec.type === 'socket' ? { path: spec.path, role: spec.connect ? 'connect' : 'listen' } : {}) }, 'port_added');
  }

  delPort(bname: string, ifname: string): void {
    const br = this.bridge(bname);
    if (br.port(ifname) === undefined) throw new VswitchError('ENOENT', `${ifname} is not a port of bridge ${bname}`);
    const r = this.routerOfNetwork(ifname);
    if (r !== undefined) throw new VswitchError('EBUSY', `${ifname} is network ${ifname} of router ${r.name}; change the router in the config`);
    br.removePort(ifname);
    this.#owner.delete(ifname);
    this.#specs.delete(ifname);
    this.log.info({ event: 'port_removed', bridge: bname, port: ifname }, 'port_removed');
  }

  /** The bridge holding port `ifname`. */
  bridgeOf(ifname: string): Bridge {
    const b = this.#owner.get(ifname);
    if (b === undefined) throw new VswitchError('ENOENT', `no such port: ${ifname}`);
    return this.bridge(b);
  }

  setAgeing(bname: string, seconds: number): number {
    if (!Number.isFinite(seconds) || seconds < 0 || seconds > 1_000_000) {
      throw new VswitchError('EINVAL', `ageing time must be 0-1000000 seconds, got ${seconds}`);
    }
    return this.bridge(bname).fdb.setAgeing(seconds);
  }

  vlanAdd(ifname: string, from: number, to: number, opts: { pvid?: boolean; untagged?: boolean }): void {
    const br = this.bridgeOf(ifname);
    checkRange(from, to);
    if (opts.pvid && from !== to) throw new VswitchError('EINVAL', 'pvid cannot be set on a VID range');
    for (let v = from; v <= to; v++) br.vlanAdd(ifname, v, opts);
    this.#applyGuard(ifname);
    this.log.info({ event: 'vlan_changed', port: ifname, add: [from, to], ...opts }, 'vlan_changed');
  }

  vlanDel(ifname: string, from: number, to: number): void {
    const br = this.bridgeOf(ifname);
    checkRange(from, to);
    let n = 0;
    for (let v = from; v <= to; v++) if (br.vlanDel(ifname, v)) n++;
    if (n === 0) throw new VswitchError('ENOENT', `${ifname} is not a member of VLAN ${from === to ? from : `${from}-${to}`}`);
    this.#applyGuard(ifname);
    this.log.info({ event: 'vlan_changed', port: ifname, del: [from, to] }, 'vlan_changed');
  }

  fdbAdd(macText: string, ifname: string, vlan?: number): void {
    const mac = needMac(macText);
    const br = this.bridgeOf(ifname);
    const vid = vlan ?? br.port(ifname)!.vlan.pvid;
    if (vid === 0) throw new VswitchError('EINVAL', `${ifname} has no PVID: give the VLAN`);
    if (mac === 0 || Math.floor(mac / 0x10000000000) & 1) throw new VswitchError('EINVAL', `${macText} is not a unicast MAC`);
    wrapVlan(() => checkVid(vid));
    br.addStatic(mac, ifname, vid);
  }

  fdbDel(macText: string, ifname: string, vlan?: number): void {
    const mac = needMac(macText);
    const br = this.bridgeOf(ifname);
    const port = br.port(ifname)!;
    const vids = vlan !== undefined ? [vlan] : port.vlan.members().map((m) => m.vid);
    let n = 0;
    for (const vid of vids) if (br.fdb.lookup(vid, mac) === port.id && br.fdb.delete(vid, mac)) n++;
    if (n === 0) throw new VswitchError('ENOENT', `no entry for ${formatMac(mac)} on ${ifname}${vlan !== undefined ? ` in VLAN ${vlan}` : ''}`);
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
    for (const name of this.#specs.keys()) this.#applyGuard(name);
  }

  portSpec(ifname: string): AddPortSpec | undefined {
    return this.#specs.get(ifname);
  }
}

function portSpec(p: PortConfig): AddPortSpec {
  return { type: p.type, persistent: p.persistent, owner: p.owner, group: p.group, offload: p.offload, path: p.path, mode: p.mode, connect: p.connect, vlan: p.vlan as VlanSpec | undefined, maxMacs: p.maxMacs, stormPps: p.stormControl?.pps, guard: p.guard };
}

function samePortKind(a: AddPortSpec, b: AddPortSpec): boolean {
  return a.type === b.type && (a.persistent ?? false) === (b.persistent ?? false) && a.owner === b.owner && a.group === b.group && (a.offload ?? true) === (b.offload ?? true)
    && a.path === b.path && parseInt(a.mode ?? '0600', 8) === parseInt(b.mode ?? '0600', 8) && (a.connect ?? false) === (b.connect ?? false);
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

/** A router's new section differs from the applied one (JSON) in `limits` only. */
function onlyLimitsDiffer(want: RouterConfig, have: string): boolean {
  return JSON.stringify({ ...want, limits: undefined }) === JSON.stringify({ ...(JSON.parse(have) as RouterConfig), limits: undefined });
}
