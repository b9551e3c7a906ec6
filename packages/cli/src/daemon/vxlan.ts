/*
 * The daemon's VXLAN tunnel endpoint: the `vxlan` config section made into a Vtep
 * (packages/switch/src/vxlan.ts) over the addon's underlay sockets
 * (ports/vxlan-io.ts), the `vxlan` CLI verbs, and the numbers for `vxlan show` and
 * the metrics.
 *
 * What runs is the file's segments with the CLI's changes on top, by VNI (`vxlan
 * add` replaces or adds one, `vxlan del` hides one, `vxlan fdb add|del` edits a
 * segment's static entries). CLI changes are kept in the state directory
 * (`vxlan.json`, written atomically before the change is reported done) and come
 * back after a restart; a reload keeps them, except where the file changed the same
 * VNI since the change was made: then the file wins (as runtime.json's entries).
 *
 * The underlay sockets are opened when the section first appears and reopened
 * only when `local`, `port` or `interface` change; `mtu`, `ttl`, `tos`, `ecn`, `readQuantum`, `readShare`, `readFrames`
 * (the receive socket's fair share of the read loop) apply in place.
 * A change the Vtep refuses (a VNI or VLAN mapped twice, a bridge that does not
 * exist) throws before anything changes.
 */
import { readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { ensureStateDir, readStateFile, writeStateFile } from '@vswitch/nat';
import { type Bridge, formatMac, parseIp4, parseIp6, parseMac, type Segment, type SegmentSpec, TOS_INHERIT, type UnderlayIo, Vtep, VXLAN_DROP_REASONS } from '@vswitch/switch';
import { NativeUnderlay, NativeUnderlay6 } from '@vswitch/switch/ports';
import { VswitchError } from '../errors.js';
import type { VxlanConfig, VxlanSegmentConfig } from '../vxlan-config.js';
import type { Logger } from './log.js';

interface Running {
  conf: VxlanConfig;
  underlay: NativeUnderlay | NativeUnderlay6;
  vtep: Vtep;
}

/**
 * The VTEP and its underlay for `conf.local`'s family: IPv6 when it has a colon
 * (the Vtep then knows remotes by ids it interns from the addresses).
 */
function openUnderlay(conf: VxlanConfig, mtu: number): { underlay: NativeUnderlay | NativeUnderlay6; vtep: Vtep } {
  if (conf.local.includes(':')) {
    const local6 = parseIp6(conf.local)!;
    const underlay = new NativeUnderlay6({ local: local6, port: conf.port, ifname: conf.interface, zeroCsumRx: conf.udp6ZeroCsumRx });
    return { underlay, vtep: new Vtep(underlay as UnderlayIo, { local: 0, local6, port: conf.port, mtu, ttl: conf.ttl, tos: tosOf(conf), ecn: conf.ecn !== 'off' }) };
  }
  const underlay = new NativeUnderlay({ local: parseIp4(conf.local), port: conf.port, ifname: conf.interface });
  return { underlay, vtep: new Vtep(underlay, { local: parseIp4(conf.local), port: conf.port, mtu, ttl: conf.ttl, tos: tosOf(conf), ecn: conf.ecn !== 'off' }) };
}

/** The Vtep's `tos` for the section's (0-255, or TOS_INHERIT). */
function tosOf(conf: VxlanConfig): number {
  return conf.tos === 'inherit' ? TOS_INHERIT : conf.tos;
}

/** The underlay socket's read share: readQuantum bytes, or readFrames datagrams under `readShare: frames`. */
function setShare(u: NativeUnderlay | NativeUnderlay6, conf: VxlanConfig): void {
  if (conf.readShare === 'frames') u.setReadQuantum(conf.readFrames, true);
  else u.setReadQuantum(conf.readQuantum, false);
}

type SegmentConf = VxlanSegmentConfig & { bridge: string; source: 'config' | 'runtime' };

export class VxlanService {
  #run: Running | undefined;
  #file: VxlanConfig | undefined;
  /** CLI changes by VNI: a segment, or null for one `vxlan del` removed. */
  readonly #runtime = new Map<number, SegmentConf | null>();
  /** Per CLI change, the file's segment for that VNI when it was made (JSON, '' for none): a file that changes it wins. */
  readonly #baseline = new Map<number, string>();
  #stateDir: string | undefined;

  /** A segment's `learning` when it does not say (false while an evpn section places remote MACs). */
  learningDefault = true;
  /** Called after each change of the segments the Vtep carries (the EVPN control plane redoes its routes). */
  changed: (() => void) | undefined = undefined;

  constructor(private readonly log: Logger, private readonly bridges: () => ReadonlyMap<string, Bridge>) {}

  get vtep(): Vtep | undefined { return this.#run?.vtep; }

  /**
   * Applies the file's section (undefined: none), with the CLI's changes kept in
   * `stateDir` (read at the first call); returns what changed.
   */
  apply(conf: VxlanConfig | undefined, stateDir?: string): string[] {
    const notes: string[] = [];
    if (this.#stateDir === undefined && stateDir !== undefined) {
      this.#stateDir = stateDir;
      this.#load();
    }
    this.#file = conf;
    for (const [vni, base] of [...this.#baseline]) {
      if (this.#fileSegment(vni) !== base) {
        this.#runtime.delete(vni);
        this.#baseline.delete(vni);
        notes.push(`vxlan VNI ${vni}: the file changed it, the runtime change is dropped`);
      }
    }
    if (notes.length > 0) this.#save();
    return [...notes, ...this.#sync()];
  }

  /** The file's segment for `vni` as JSON, '' if none. */
  #fileSegment(vni: number): string {
    for (const [bridge, list] of Object.entries(this.#file?.bridges ?? {})) {
      const s = list.find((x) => x.vni === vni);
      if (s !== undefined) return JSON.stringify({ bridge, ...s });
    }
    return '';
  }

  #path(): string | undefined {
    return this.#stateDir === undefined ? undefined : join(this.#stateDir, 'vxlan.json');
  }

  #load(): void {
    const path = this.#path()!;
    try {
      ensureStateDir(this.#stateDir!);
      const text = readStateFile(path);
      if (text === undefined) return;
      const j = JSON.parse(text) as { vnis?: { vni: number; segment: SegmentConf | null; file: string }[] };
      if (!Array.isArray(j.vnis)) throw new Error('no vnis list');
      for (const e of j.vnis) {
        if (!Number.isInteger(e.vni) || typeof e.file !== 'string') throw new Error(`bad entry ${JSON.stringify(e)}`);
        this.#runtime.set(e.vni, e.segment === null ? null : { ...e.segment, source: 'runtime' });
        this.#baseline.set(e.vni, e.file);
      }
      this.log.info({ event: 'vxlan_runtime_restored', file: path, entries: j.vnis.length }, 'vxlan_runtime_restored');
    } catch (e) {
      this.#runtime.clear();
      this.#baseline.clear();
      const movedTo = `${path}.bad-${Date.now()}`;
      try {
        renameSync(path, movedTo);
      } catch { /* unreadable: left where it is */ }
      this.log.error({ event: 'runtime_state_failed', error: `${path}: ${(e as Error).message}`, movedTo }, 'runtime_state_failed');
    }
  }

  #save(): void {
    const path = this.#path();
    if (path === undefined) return;
    const vnis = [...this.#runtime].map(([vni, segment]) => ({ vni, segment, file: this.#baseline.get(vni) ?? '' }));
    writeStateFile(path, `${JSON.stringify({ vnis }, null, 2)}\n`);
  }

  close(): void {
    const r = this.#run;
    this.#run = undefined;
    if (r === undefined) return;
    r.vtep.close();
    r.underlay.close();
  }

  /** The segments wanted now: the file's, then the CLI's on top. */
  #wanted(): SegmentConf[] {
    const byVni = new Map<number, SegmentConf>();
    for (const [bridge, list] of Object.entries(this.#file?.bridges ?? {})) {
      for (const s of list) byVni.set(s.vni, { ...s, bridge, source: 'config' });
    }
    for (const [vni, s] of this.#runtime) {
      if (s === null) byVni.delete(vni);
      else byVni.set(vni, s);
    }
    return [...byVni.values()];
  }

  /** `changed`: the VNI a CLI change is about (its bridge must exist). */
  #sync(changed = -1): string[] {
    const conf = this.#file;
    const done: string[] = [];
    if (conf === undefined) {
      if (this.#run !== undefined) {
        this.close();
        done.push('vxlan off');
        this.log.info({ event: 'vxlan_stopped' }, 'vxlan_stopped');
      }
      return done;
    }
    let run = this.#run;
    const mtu = conf.mtu ?? interfaceMtu(conf.interface) ?? 1500;
    if (run !== undefined && (run.conf.local !== conf.local || run.conf.port !== conf.port || run.conf.interface !== conf.interface
      || run.conf.udp6ZeroCsumRx !== conf.udp6ZeroCsumRx)) {
      this.close();
      run = undefined;
      done.push('vxlan underlay reopened');
    }
    let opened: ReturnType<typeof openUnderlay> | undefined;
    if (run === undefined) {
      try {
        opened = openUnderlay(conf, mtu);
      } catch (e) {
        throw new VswitchError('EADDRNOTAVAIL', `vxlan: cannot open the underlay on ${conf.local}:${conf.port}${conf.interface ? ` (${conf.interface})` : ''}: ${(e as Error).message}`);
      }
    }
    const vtep = run?.vtep ?? opened!.vtep;
    let specs: SegmentSpec[];
    try {
      specs = this.#specs(vtep, changed, done);
    } catch (e) {
      opened?.underlay.close();
      throw e;
    }
    if (opened !== undefined) {
      const { underlay } = opened;
      try {
        vtep.set(specs);
      } catch (e) {
        underlay.close();
        throw new VswitchError('EINVAL', `vxlan: ${(e as Error).message}`);
      }
      setShare(underlay, conf);
      underlay.setOffload(conf.offload);
      this.#warnGro(underlay, conf.offload);
      this.#recvTos(underlay, conf);
      underlay.start(vtep, (errno) => {
        this.log.error({ event: 'vxlan_underlay_failed', errno }, 'vxlan_underlay_failed');
      });
      run = { conf, underlay, vtep };
      this.#run = run;
      this.log.info({ event: 'vxlan_started', local: conf.local, port: conf.port, mtu, vmMtu: mtu - vtep.overhead, vnis: specs.map((s) => s.vni) }, 'vxlan_started');
      done.push(`vxlan on ${conf.local}:${conf.port} (${specs.length} VNIs)`);
      this.changed?.();
      return done;
    }
    run = run!;
    try {
      run.vtep.set(specs);
    } catch (e) {
      throw new VswitchError('EINVAL', `vxlan: ${(e as Error).message}`);
    }
    run.vtep.mtu = mtu;
    run.vtep.ttl = conf.ttl;
    run.vtep.tos = tosOf(conf);
    run.vtep.ecn = conf.ecn !== 'off';
    setShare(run.underlay, conf);
    run.underlay.setOffload(conf.offload);
    this.#warnGro(run.underlay, conf.offload);
    this.#recvTos(run.underlay, conf);
    run.conf = conf;
    done.push(`vxlan ${specs.length} VNIs`);
    this.changed?.();
    return done;
  }

  /** With `ecn: off` the outer DS field is not needed: no control message per datagram. A refusal only costs that message. */
  #recvTos(underlay: NativeUnderlay | NativeUnderlay6, conf: VxlanConfig): void {
    if (!underlay.setRecvTos(conf.ecn !== 'off')) this.log.warn({ event: 'vxlan_recv_tos_refused', ecn: conf.ecn }, 'vxlan_recv_tos_refused');
  }

  /** A kernel that refuses UDP_GRO leaves the per-packet receive path: say so once per setting, not silently. */
  #warnGro(underlay: NativeUnderlay | NativeUnderlay6, offload: 'auto' | 'off'): void {
    if (offload === 'auto' && !underlay.rxGro.on) this.log.warn({ event: 'vxlan_udp_gro_refused' }, 'vxlan_udp_gro_refused');
  }

  /** The Vtep's segments for what is wanted now (remotes as `vtep` knows them); notes what is not carried in `done`. */
  #specs(vtep: Vtep, changed: number, done: string[]): SegmentSpec[] {
    const brs = this.bridges();
    const specs: SegmentSpec[] = [];
    for (const s of this.#wanted()) {
      const bridge = brs.get(s.bridge);
      if (bridge === undefined) {
        // A CLI change naming no bridge is refused; a bridge gone by delbr (or not running) leaves its VNIs idle.
        if (s.vni === changed) throw new VswitchError('ENOENT', `vxlan: no bridge ${s.bridge} (VNI ${s.vni})`);
        this.log.warn({ event: 'vxlan_bridge_missing', bridge: s.bridge, vni: s.vni }, 'vxlan_bridge_missing');
        done.push(`vxlan VNI ${s.vni}: no bridge ${s.bridge}, not carried`);
        continue;
      }
      // The file is checked (one family). A CLI change with a remote of the other family is
      // refused; a kept CLI change the file's new `local` made foreign is left idle, as above.
      const bad = [...s.flood, ...s.fdb.map((f) => f.dst)].find((a) => vtep.remoteOf(a) < 0);
      if (bad !== undefined) {
        const why = `${bad} is not an IPv${vtep.family} address (the underlay is IPv${vtep.family}, as local is)`;
        if (s.vni === changed) throw new VswitchError('EINVAL', `vxlan VNI ${s.vni}: ${why}`);
        this.log.warn({ event: 'vxlan_remote_family', vni: s.vni, remote: bad }, 'vxlan_remote_family');
        done.push(`vxlan VNI ${s.vni}: ${why}, not carried`);
        continue;
      }
      const remote = (a: string): number => vtep.remoteOf(a);
      specs.push({
        bridge, vni: s.vni, vid: s.vlan, flood: s.flood.map(remote),
        fdb: s.fdb.map((f) => ({ mac: parseMac(f.mac), remote: remote(f.dst) })),
        learning: s.learning ?? this.learningDefault,
      });
    }
    return specs;
  }

  /* ---------- CLI ---------- */

  add(bridge: string, vni: number, vlan: number, flood: string[]): void {
    this.#need();
    const cur = this.#wanted().find((s) => s.vni === vni);
    this.#change(vni, { vni, vlan, bridge, flood, fdb: cur !== undefined && cur.bridge === bridge && cur.vlan === vlan ? cur.fdb : [], source: 'runtime' });
  }

  del(vni: number): void {
    this.#need();
    if (!this.#wanted().some((s) => s.vni === vni)) throw new VswitchError('ENOENT', `vxlan: VNI ${vni} is not mapped`);
    this.#change(vni, null);
  }

  fdb(add: boolean, macText: string, vni: number, dst?: string): void {
    this.#need();
    const cur = this.#wanted().find((s) => s.vni === vni);
    if (cur === undefined) throw new VswitchError('ENOENT', `vxlan: VNI ${vni} is not mapped`);
    const mac = parseMac(macText);
    if (mac < 0) throw new VswitchError('EINVAL', `bad MAC address '${macText}'`);
    const m = formatMac(mac);
    const rest = cur.fdb.filter((f) => formatMac(parseMac(f.mac)) !== m);
    if (!add && rest.length === cur.fdb.length) throw new VswitchError('ENOENT', `vxlan: no static entry ${m} in VNI ${vni}`);
    const fam = this.#run?.vtep.family ?? (this.#file!.local.includes(':') ? 6 : 4);
    if (add && (dst === undefined || (fam === 6 ? !dst.includes(':') || parseIp6(dst) === undefined : parseIp4(dst) < 0))) {
      throw new VswitchError('EINVAL', `bad remote VTEP address '${dst ?? ''}' (the underlay is IPv${fam})`);
    }
    this.#change(vni, { ...cur, fdb: add ? [...rest, { mac: m, dst: dst! }] : rest, source: 'runtime' });
  }

  #need(): void {
    if (this.#file === undefined) throw new VswitchError('EINVAL', 'vxlan is not configured: add a vxlan section (local address) to the config file and reload');
  }

  #change(vni: number, s: SegmentConf | null): void {
    const had = this.#runtime.has(vni);
    const before = this.#runtime.get(vni);
    const base = this.#baseline.get(vni);
    const undo = (): void => {
      if (had) {
        this.#runtime.set(vni, before!);
        this.#baseline.set(vni, base!);
      } else {
        this.#runtime.delete(vni);
        this.#baseline.delete(vni);
      }
    };
    this.#runtime.set(vni, s);
    if (!had) this.#baseline.set(vni, this.#fileSegment(vni));
    try {
      this.#save();
    } catch (e) {
      undo();
      throw new VswitchError('ESTATE', `cannot keep the change in ${this.#path()}: ${(e as Error).message}; nothing was changed`);
    }
    try {
      this.#sync(vni);
    } catch (e) {
      undo();
      try {
        this.#save();
      } catch { /* the next change writes it again */ }
      throw e;
    }
  }

  /* ---------- views ---------- */

  show(): Record<string, unknown> {
    const run = this.#run;
    if (run === undefined) return { enabled: false };
    const v = run.vtep;
    const conf = new Map(this.#wanted().map((s) => [s.vni, s]));
    return {
      enabled: true,
      local: run.conf.local,
      port: run.conf.port,
      ...(run.conf.interface !== undefined ? { interface: run.conf.interface } : {}),
      mtu: v.mtu,
      family: v.family,
      vmMtu: v.mtu - v.overhead,
      ttl: v.ttl,
      tos: v.tos === TOS_INHERIT ? 'inherit' : v.tos,
      ecn: v.ecn ? 'rfc6040' : 'off',
      readQuantum: run.conf.readQuantum,
      readShare: run.conf.readShare,
      readFrames: run.conf.readFrames,
      readRoundsFull: run.underlay.readRoundsFull,
      txQueueErrors: run.underlay.txQueueErrors,
      offload: run.conf.offload,
      rxCoalesced: run.underlay.rxCoalesced,
      ...('rxGro' in run.underlay ? { rxGro: run.underlay.rxGro } : {}),
      ...('txGso' in run.underlay ? { txGso: run.underlay.txGso } : {}),
      vnis: v.segments().sort((a, b) => a.vni - b.vni).map((s) => segmentView(v, s, conf.get(s.vni)?.source ?? 'config')),
      remotes: v.bridgeTunnels().flatMap((bt) => bt.tunnels.map((t) => {
        const p = bt.bridge.port(v.portName(t.remote));
        return {
          bridge: bt.bridge.name, remote: v.remoteText(t.remote), port: p?.name ?? '',
          macs: p === undefined ? 0 : bt.bridge.fdb.portCount(p.id),
          rxFrames: p?.rxFrames ?? 0, txFrames: p?.txFrames ?? 0, rxBytes: p?.rxBytes ?? 0, txBytes: p?.txBytes ?? 0,
        };
      })),
      drops: v.dropCounts(),
    };
  }
}

function segmentView(v: Vtep, s: Segment, source: string): Record<string, unknown> {
  return {
    vni: s.vni, bridge: s.tunnels.bridge.name, vlan: s.vid, source, learning: s.learning,
    flood: [...s.flood].map((r) => v.remoteText(r)),
    ...(s.cpFlood.size > 0 ? { evpnFlood: [...s.cpFlood].map((r) => v.remoteText(r)) } : {}),
    fdb: s.fdb.map((f) => ({ mac: formatMac(f.mac), dst: v.remoteText(f.remote) })),
    rxPackets: s.rxPackets, rxBytes: s.rxBytes, txPackets: s.txPackets, txBytes: s.txBytes, txSegmented: s.txSegmented,
  };
}

function interfaceMtu(ifname: string | undefined): number | undefined {
  if (ifname === undefined) return undefined;
  try {
    const n = parseInt(readFileSync(`/sys/class/net/${ifname}/mtu`, 'utf8'), 10);
    return Number.isFinite(n) && n >= 576 ? n : undefined;
  } catch {
    return undefined;
  }
}

export { VXLAN_DROP_REASONS };

type Fill = (emit: (labels: Record<string, string | number>, value: number) => void) => void;

/**
 * The VTEP's metrics, through the registry's `counter` (metrics.ts): per VNI
 * packets and bytes each way (inner frames; each head-end copy counts), and drops
 * of underlay datagrams by reason, every reason exported, zeros included, once the
 * VTEP runs. Per remote VTEP, the tunnel ports are ports: vswitch_port_* with kind
 * "vxlan" (tunnel_mtu among their drop reasons).
 */
export function vxlanMetrics(vtep: () => Vtep | undefined, counter: (name: string, help: string, labels: readonly string[], fill: Fill) => void): void {
  const perVni = (name: string, help: string, value: (s: Segment) => number): void => {
    counter(name, help, ['vni', 'bridge', 'vlan'], (emit) => {
      for (const s of vtep()?.segments() ?? []) emit({ vni: String(s.vni), bridge: s.tunnels.bridge.name, vlan: String(s.vid) }, value(s));
    });
  };
  perVni('vswitch_vxlan_rx_packets_total', 'VXLAN packets decapsulated into the VNI\'s VLAN (before the bridge admits the inner frame).', (s) => s.rxPackets);
  perVni('vswitch_vxlan_rx_bytes_total', 'Bytes of the inner frames counted in vswitch_vxlan_rx_packets_total.', (s) => s.rxBytes);
  perVni('vswitch_vxlan_tx_packets_total', 'VXLAN packets sent for the VNI (one per remote VTEP a frame goes to).', (s) => s.txPackets);
  perVni('vswitch_vxlan_tx_bytes_total', 'Bytes of the inner frames counted in vswitch_vxlan_tx_packets_total.', (s) => s.txBytes);
  counter('vswitch_vxlan_read_rounds_full_total', 'Read-loop rounds in which the underlay socket had more datagrams waiting than its read quantum took.', [], (emit) => {
    const n = vtep()?.io.readRoundsFull;
    if (n !== undefined) emit({}, n);
  });
  counter('vswitch_vxlan_tx_queue_errors_total', 'Encapsulated packets queued for a batched send that the kernel refused at the flush (after the port counted them sent).', [], (emit) => {
    const n = vtep()?.io.txQueueErrors;
    if (n !== undefined) emit({}, n);
  });
  counter('vswitch_vxlan_rx_coalesced_total', 'Decapsulated TCP segments toward TAPs (vxlan.offload auto): super-frames written (what=frames), the segments they carry (what=segments), held segments whose write the TAP refused (what=errors).', ['what'], (emit) => {
    const c = vtep()?.io.rxCoalesced;
    if (c === undefined) return;
    emit({ what: 'frames' }, c.frames);
    emit({ what: 'segments' }, c.segments);
    emit({ what: 'errors' }, c.errors);
  });
  counter('vswitch_vxlan_rx_gro_total', 'UDP GRO on the underlay socket (vxlan.offload auto): datagrams of several packets read whole (what=bursts), the packets split from them (what=segments), packets of a burst dropped for want of room in the read batch (what=dropped).', ['what'], (emit) => {
    const g = vtep()?.io.rxGro;
    if (g === undefined) return;
    emit({ what: 'bursts' }, g.bursts);
    emit({ what: 'segments' }, g.segments);
    emit({ what: 'dropped' }, g.dropped);
  });
  counter('vswitch_vxlan_tx_gso_total', 'Super-frames\' segments sent as UDP GSO datagrams (vxlan.offload auto, IPv4 or IPv6): sendmsg calls (what=sends), the packets they carried (what=segments), kernel refusals after which sendmmsg took over (what=refused).', ['what'], (emit) => {
    const g = vtep()?.io.txGso;
    if (g === undefined) return;
    emit({ what: 'sends' }, g.sends);
    emit({ what: 'segments' }, g.segments);
    emit({ what: 'refused' }, g.refused);
  });
  perVni('vswitch_vxlan_tx_segmented_total', 'VM TSO/USO super-frames segmented and encapsulated in one batch (their packets count in vswitch_vxlan_tx_packets_total).', (s) => s.txSegmented);
  counter('vswitch_vxlan_drops_total', 'Datagrams from the underlay the VTEP dropped, by reason (README "VXLAN").', ['reason'], (emit) => {
    const v = vtep();
    if (v === undefined) return;
    VXLAN_DROP_REASONS.forEach((r, i) => emit({ reason: r }, v.drops[i]));
  });
}
