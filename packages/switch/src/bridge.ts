/*
 * A bridge: ports, one MAC table, and the pipeline that joins them
 *   port -> ingress (admit, classify VLAN, guards: guard.ts, guard6.ts, learn: ingress.ts)
 *        -> ARP suppression (arp-suppress.ts; only while a control plane set it)
 *        -> forward (unicast / flood, storm control, canEgress: forward.ts) -> egress -> port,
 * as Linux's br_handle_frame_finish. Everything per frame is synchronous from the
 * buffer the frame arrived in, and allocates nothing: per-frame decisions live in
 * one reused FrameMeta, tag edits in one scratch header (virtio_net_hdr + tagged
 * Ethernet header). A frame's virtio_net_hdr, when its port delivers one, travels
 * with it to egress (port.ts); a frame whose header asks for work is completed for
 * ports without offload by the bridge's `segmenter` (BridgeOptions, egress.ts).
 *
 * Control-plane changes (ports, VLANs, static MACs, ageing) take effect at once and
 * touch only what they name; flood lists are rebuilt on each such change.
 *
 * Re-entrancy: an in-process port (the router) may answer a frame while the bridge
 * is still forwarding it, perhaps in the middle of a flood. Such a frame is copied
 * and forwarded right after the current one finishes, never nested inside it: the
 * per-frame state is shared. At most MAX_DEFERRED wait; more are dropped and counted.
 *
 * Loop protection and rate limits (gate.ts, loop.ts, police.ts): before admission a
 * port's gate (one test when it has none) may drop the frame: the port is shut, the
 * frame is a BPDU on a guarded port, or over the ingress rate; a MAC move may block
 * a loop port (loop.ts). canEgress (forward.ts) refuses shut ports; egress writes
 * through the shaper.
 *
 * Fair share: each port's device is read at most `readQuantum` bytes (or, with
 * `readShare: frames`, `readFrames` frames) per event-loop turn (fair.ts; the
 * scheduler is the addon's), so one port that floods cannot keep the loop from the
 * others; the bridge only hands its ports the setting. `readSparse` (on by
 * default) serves a port whose queue had emptied ahead of the backlogged ones.
 *
 * Flow cache (flow-cache.ts; off unless setFlowCache): known unicast decisions of
 * the narrowest exact class are installed for the addon's read loop to replay; every
 * change here that could alter a decision bumps the generation (#invalidate), and
 * the replayed frames' counts are folded back (foldFlowCache) before anything reads
 * or changes them.
 *
 * Runs (#receiveRuns): a batch of complete frames (a tunnel's decapsulated segments)
 * is decided once per run of frames with the same header; the others get the
 * pipeline's per-frame effects only (counters, egress), exactly as one by one
 * (bridge.run.test.ts); `runFrames` counts them.
 *
 * Events (port down, MAC moved, MAC limit reached) go to `onEvent` for logging,
 * bounded to EVENT_BUDGET_PER_SEC per bridge so that a flapping MAC or a flood of
 * refused MACs can never produce a log line per frame; the rest are counted in
 * `eventsSuppressed`. New MAC entries go to `onLearn` only while it is set (the
 * daemon sets it while a `vswitch monitor` client watches, and bounds it itself).
 */
import { Drop } from './drop.js';
import { Fdb, FDB_DEFAULTS, Learn } from './fdb.js';
import { type Egress, egress, newEgress, type Segmenter, txDrop } from './egress.js';
import { canEgress, forward, type ForwardCounters } from './forward.js';
import { ADMIT, admit, type FrameMeta, ingress, newFrameMeta, setOffloadMeta } from './ingress.js';
import { Port, type PortIo, type PortRx } from './port.js';
import { VNET_HDR_LEN } from './wire/vnet.js';
import { ETH, ETH_HLEN, formatMac } from './wire/ethernet.js';
import { MacOwners, type GuardOptions } from './guard.js';
import { Ip6Bindings } from './guard6.js';
import { read16, write32 } from './wire/bytes.js';
import { isTagTpid, sameTaggedHead, tci, tciVid, VID_MAX, VLAN_TAGGED_HLEN } from './wire/vlan.js';
import { VlanPolicy } from './vlan.js';
import { GATE_BPDU, GATE_PASS, gateIn, updateGate } from './gate.js';
import { LoopGuard, type LoopEvent, type LoopSettings } from './loop.js';
import { Policer, Shaper, type RateSpec } from './police.js';
import { READ_FRAMES_DEFAULT, READ_QUANTUM_DEFAULT, READ_SHARE_DEFAULT, READ_SPARSE_DEFAULT, type ReadShare, readFramesProblem, readQuantumProblem, readShareProblem } from './fair.js';
import type { ArpSuppress } from './arp-suppress.js';
import { arpClass, FOLD, FOLD_C_TAG, FOLD_L3_IPV6, type FlowCacheCounters, type FlowCacheHub, type FlowHandleIo, ip4Class, ip6Class } from './flow-cache.js';

// The per-frame pipeline through module constants: an imported binding is checked
// on every use (see ingress.ts).
const offloadMeta = setOffloadMeta;
const runIngress = ingress;
const runForward = forward;
const MOVED = Learn.MOVED;
const NEW = Learn.NEW;
const REFRESHED = Learn.REFRESHED;
const DISABLED = Learn.DISABLED;
const HDR = VNET_HDR_LEN;
const sameHead = sameTaggedHead;
const runAdmit = admit;
const runCanEgress = canEgress;
const runEgress = egress;
const SRC_AT = ETH.SRC;
const TPID_AT = ETH.TYPE;
const isTag = isTagTpid;
const rd16 = read16;
const inIp4Class = ip4Class;
const inArpClass = arpClass;
const inIp6Class = ip6Class;
/** The shortest frame admit takes (4 more with a tag). */
const ETH_MIN = ETH_HLEN;

/**
 * How egress (sendPlain, egress.ts) writes a complete frame of VLAN `vid` with a
 * `tagLen`-byte tag to `to`, as PortIo.sendRun's strip: 0 as it is, 4 without its
 * tag; -1 when it edits the tag (inserts or rewrites one), which sendRun does not.
 */
function runStrip(to: Port, vid: number, tagLen: number, buf: Uint8Array, off: number): number {
  if (to.vlan.isUntagged(vid)) return tagLen === 0 ? 0 : 4;
  return tagLen === 4 && tciVid(tci(buf, off)) === vid ? 0 : -1;
}

export const EVENT_BUDGET_PER_SEC = 20;
export const MAX_DEFERRED = 1024;
const SWEEP_MS = 1000;

export type BridgeEvent =
  | { event: 'port_down'; bridge: string; port: string; reason: string }
  | { event: 'port_up'; bridge: string; port: string; reason: string }
  | { event: 'mac_moved'; bridge: string; vlan: number; mac: string; port: string }
  | { event: 'mac_limit'; bridge: string; port: string; vlan: number; mac: string; limit: number }
  | { event: 'mac_aged'; bridge: string; count: number }
  | (LoopEvent & { bridge: string });

export interface BridgeOptions {
  ageingSec?: number;
  maxEntries?: number;
  /** Milliseconds, monotonic; tests pass a fake clock. */
  clock?: () => number;
  onEvent?: (e: BridgeEvent) => void;
  /**
   * Makes complete frames of those whose virtio_net_hdr asks for work (GSO, partial
   * checksum) for ports that cannot take the header (egress.ts). The daemon passes
   * the addon's (ports/segment.ts); absent, such frames to such ports are dropped
   * as tx_error.
   */
  segmenter?: Segmenter;
}

export interface PortOptions {
  vlan?: VlanPolicy;
  /** Dynamic MAC limit for this port; 0 or absent = none. */
  maxMacs?: number;
  /** Flooded frames per second this port may send (forward.ts); 0 or absent = no limit. */
  stormPps?: number;
  /** Anti-spoofing guards (guard.ts, guard6.ts); absent = off. */
  guard?: GuardOptions;
  /** BPDU guard (loop.ts); absent = off. */
  bpduGuard?: boolean;
  /** Ingress policing and egress shaping (police.ts); absent = none. */
  ingressRate?: RateSpec;
  egressRate?: RateSpec;
}

export class BridgeError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

export class Bridge {
  readonly fdb: Fdb;
  readonly counters: ForwardCounters = { floodedGroup: 0, floodedUnknown: 0, forwarded: 0 };
  eventsSuppressed = 0;
  /** Frames re-entering the bridge from a port while it was forwarding, dropped because too many waited. */
  deferredDropped = 0;

  readonly #ports = new Map<string, Port>();
  readonly #byId: (Port | undefined)[] = [];
  #floodLists: (Port[] | undefined)[] = new Array(VID_MAX + 1);
  /** Frames of a batch that took the decision of the run's first frame (#receiveRuns) instead of the whole pipeline. */
  runFrames = 0;
  /** Egress calls (PortIo.sendRun) that each wrote several of those frames. */
  runCalls = 0;
  /** sendRun's results: [bytes taken, bytes written, errno of a failed last write]. */
  readonly #runRes = new Int32Array(3);
  readonly #meta = newFrameMeta();
  readonly #egress: Egress;
  readonly #clock: () => number;
  /** The default clock (performance.now()), on which ports report batch times (PortRx.batch `at`). */
  readonly #portTime: boolean;
  readonly #onEvent: (e: BridgeEvent) => void;
  /** BPDU guard and MAC-flap loop detection (loop.ts): settings and shut ports. */
  readonly loop: LoopGuard;
  #readQuantum = READ_QUANTUM_DEFAULT;
  #readShare: ReadShare = READ_SHARE_DEFAULT;
  #readFrames = READ_FRAMES_DEFAULT;
  #readSparse = READ_SPARSE_DEFAULT;
  #eventBudget = EVENT_BUDGET_PER_SEC;
  #timer: NodeJS.Timeout | undefined;
  #depth = 0;
  #deferred: { port: Port; frame: Buffer; hdr: number }[] = [];
  /** The flow cache, while on: its hub and this bridge's id there. */
  #fc: FlowCacheHub | undefined = undefined;
  #fcId = -1;
  /** #cacheable's verdict that the decision also depended on the frame's IPv4 class and source (#install). */
  #fcL3 = false;
  readonly flowCacheCounters: FlowCacheCounters = { installs: 0, installRefused: 0, invalidations: 0, hits: 0 };
  /**
   * Each MAC the table learns anew (not a refresh, not a move: those are `mac_moved`
   * events), while set. Unset, a learning frame pays one comparison.
   */
  onLearn: ((vid: number, mac: number, port: Port) => void) | undefined = undefined;
  /**
   * ARP suppression (arp-suppress.ts), set by a control plane while some VLAN has it
   * on: ARP requests from local ports in those VLANs may be answered instead of forwarded.
   * (An accessor for the flow cache: a unicast ARP request or NS must meet it, so in a
   * VLAN where it answers only IPv4 frames are installed, keyed by their class
   * (#cacheable); setting it, and any VLAN's answering turned on or off, invalidates.)
   */
  get arpSuppress(): ArpSuppress | undefined { return this.#arpSuppress; }
  set arpSuppress(a: ArpSuppress | undefined) {
    if (a !== undefined || this.#arpSuppress !== undefined) this.#invalidate();
    if (this.#arpSuppress !== undefined && this.#arpSuppress !== a) this.#arpSuppress.onChange = undefined;
    if (a !== undefined) a.onChange = () => this.#invalidate();
    this.#arpSuppress = a;
  }
  #arpSuppress: ArpSuppress | undefined = undefined;
  /** Which ports hold which MACs by their guards' bindings. */
  readonly macOwners = new MacOwners();
  /** Which port owns which IPv6 address, per VLAN (guard6.ts): an owner pins it while up with its IPv6 source guard on. */
  readonly ip6Bindings = new Ip6Bindings((id) => {
    const p = this.#byId[id];
    return p !== undefined && p.up && p.guard.ipv6Source;
  });
  /** A binding pins its MAC only while its port is up and guarded (a migrated VM takes its MAC along once the old port goes). */
  readonly #pins = (id: number): boolean => {
    const p = this.#byId[id];
    return p !== undefined && p.up && p.guard.v4;
  };

  constructor(readonly name: string, opts: BridgeOptions = {}) {
    this.fdb = new Fdb({ ageingSec: opts.ageingSec ?? FDB_DEFAULTS.ageingSec, maxEntries: opts.maxEntries });
    // A MAC bound to a guarded port pins it there while that port is up (guard.ts, fdb.ts "Bound MACs").
    this.fdb.boundElsewhere = (mac, port) => this.macOwners.elsewhere(mac, port, this.#pins);
    this.fdb.overlayPort = (id) => (this.#byId[id]?.horizon ?? 0) !== 0;
    this.#clock = opts.clock ?? (() => performance.now());
    this.#portTime = opts.clock === undefined;
    this.#onEvent = opts.onEvent ?? (() => {});
    this.loop = new LoopGuard((e) => {
      // A port shut or recovered: decisions to it change.
      this.#invalidate();
      this.#emit({ ...e, bridge: this.name } as BridgeEvent, true);
    }, formatMac);
    this.#egress = newEgress(opts.segmenter);
    // A claim expired, an address reserved for the router, a port's claims forgotten: the
    // verdict on a replayed IPv6 frame (its port owns its source) may change.
    this.ip6Bindings.onChange = () => this.#invalidate();
  }

  /** Starts the ageing sweep. Not needed in tests that drive `sweep(now)` themselves. */
  start(): void {
    this.#timer ??= setInterval(() => this.sweep(this.#clock()), SWEEP_MS);
    this.#timer.unref();
  }

  /** Ages out MAC entries and refills the event budget; returns the number aged. */
  sweep(now: number): number {
    this.foldFlowCache(); // ageing sees the replayed frames' refreshes
    this.#eventBudget = EVENT_BUDGET_PER_SEC;
    this.loop.sweep(this.#ports.values(), now);
    const n = this.fdb.expire(now);
    if (n > 0) this.#emit({ event: 'mac_aged', bridge: this.name, count: n });
    this.ip6Bindings.expire(now);
    return n;
  }

  /** Removes every port (closing their devices) and stops timers. */
  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    for (const name of [...this.#ports.keys()]) this.removePort(name);
    this.setFlowCache(undefined);
  }

  /**
   * Turns the flow cache on (a hub: the daemon's is the addon's) or off (undefined):
   * off folds what was replayed and flushes the bridge's entries.
   */
  setFlowCache(hub: FlowCacheHub | undefined): void {
    if (hub === this.#fc) return;
    if (this.#fc !== undefined) {
      this.#fc.detach(this.#fcId);
      this.#fc = undefined;
      this.#fcId = -1;
      this.fdb.stamp = new Float64Array(1);
    }
    if (hub !== undefined) {
      this.#fcId = hub.attach((rows, at) => this.#fold(rows, at));
      this.#fc = hub;
      this.fdb.stamp = hub.backend.generations.subarray(this.#fcId, this.#fcId + 1);
      this.fdb.stamp[0]++;
    }
  }

  get flowCache(): boolean { return this.#fc !== undefined; }

  /** Adds what the flow cache replayed to the counters and the MAC table; before reading them. */
  foldFlowCache(): void {
    this.#fc?.fold();
  }

  /** A change that could alter a cached decision: counts so far folded, then every entry stale. */
  #invalidate(): void {
    const fc = this.#fc;
    if (fc === undefined) return;
    fc.fold();
    this.fdb.stamp[0]++;
    this.flowCacheCounters.invalidations++;
  }

  /** A fold row's IPv6 source address, as bytes. */
  readonly #src6 = new Uint8Array(16);

  /** One fold row (flow-cache.ts FOLD): what the pipeline would have counted for those frames. */
  #fold(r: Float64Array, at: number): void {
    const inP = this.#byId[r[at + FOLD.IN_PORT]];
    const outP = this.#byId[r[at + FOLD.OUT_PORT]];
    const n = r[at + FOLD.FRAMES];
    this.flowCacheCounters.hits += n;
    this.counters.forwarded += n;
    if (inP !== undefined) {
      inP.rxFrames += n;
      inP.rxBytes += r[at + FOLD.BYTES];
      const mac = r[at + FOLD.SRC_HI] * 0x100000000 + r[at + FOLD.SRC_LO];
      // A C-tag's VID (only frames admitted on it are installed), else the port's PVID
      // (unchanged since: a change folds first).
      const tag = r[at + FOLD.TAG];
      const vid = tag >= 0 && tag >>> 16 === FOLD_C_TAG ? tciVid(tag & 0xffff) : inP.vlan.pvid;
      const last = r[at + FOLD.LAST] + this.#fc!.backend.clockOffset;
      this.fdb.refreshAt(vid, mac, inP.id, last);
      // An IPv6 source the port's IPv6 source guard claims: its last use, as each frame's claim would have.
      if (r[at + FOLD.L3] === FOLD_L3_IPV6 && inP.guard.ipv6Source) {
        const a = this.#src6;
        for (let w = 0; w < 4; w++) write32(a, w * 4, r[at + FOLD.SRC6 + w]);
        this.ip6Bindings.refresh(vid, a, 0, inP.id, last);
      }
    }
    if (outP !== undefined) {
      const down = r[at + FOLD.LINK_DOWN], err = r[at + FOLD.TX_ERROR];
      outP.txFrames += n - down - err;
      outP.txBytes += r[at + FOLD.TX_BYTES];
      outP.drops[Drop.link_down] += down;
      outP.drops[Drop.tx_error] += err;
    }
  }

  get ports(): ReadonlyMap<string, Port> { return this.#ports; }
  port(name: string): Port | undefined { return this.#ports.get(name); }

  addPort(name: string, io: PortIo, opts: PortOptions = {}): Port {
    if (this.#ports.has(name)) throw new BridgeError('EEXIST', `port ${name} is already in bridge ${this.name}`);
    this.#invalidate();
    let id = this.#byId.indexOf(undefined);
    if (id < 0) id = this.#byId.length;
    const port = new Port(id, name, io, opts.vlan ?? VlanPolicy.defaultAccess());
    this.#byId[id] = port;
    port.guard.attach(this.macOwners, id, this.ip6Bindings);
    this.#ports.set(name, port);
    this.fdb.setPortLimit(id, opts.maxMacs ?? 0);
    port.storm.set(opts.stormPps ?? 0, this.#clock());
    if (opts.guard !== undefined) port.guard.set(opts.guard);
    port.guard.onChange = () => this.#invalidate();
    port.guard.beforeSet = () => this.foldFlowCache();
    port.bpduGuard = opts.bpduGuard === true;
    this.#setRates(port, opts.ingressRate, opts.egressRate);
    this.#rebuildFloodLists();
    try {
      this.#applyShare(io);
      io.start(this.#rxFor(port));
    } catch (e) {
      this.#forget(port);
      throw e;
    }
    if (io.linkUp === false) {
      // Down from the start (no client yet): not an event, nothing went wrong.
      port.up = false;
      port.downReason = io.linkDownReason ?? 'link down';
    }
    return port;
  }

  /** Removes a port and everything it held: its device, its MAC entries (static too), its flood slots. */
  removePort(name: string): void {
    const port = this.#ports.get(name);
    if (port === undefined) throw new BridgeError('ENOENT', `no port ${name} in bridge ${this.name}`);
    this.#invalidate();
    port.up = false;
    port.guard.onChange = undefined;
    port.guard.beforeSet = undefined;
    this.#forget(port);
    port.io.close();
  }

  setPortMaxMacs(name: string, max: number): void {
    this.#invalidate();
    this.fdb.setPortLimit(this.#need(name).id, max);
  }

  /** Sets a port's storm-control rate (flooded frames per second; 0 = off). */
  setPortStorm(name: string, pps: number): void {
    this.#invalidate();
    this.#need(name).storm.set(pps, this.#clock());
  }

  /** Turns a port's anti-spoofing guards on or off; bindings are kept. */
  setPortGuard(name: string, opts: GuardOptions): void {
    this.#need(name).guard.set(opts); // invalidates the flow cache (guard.onChange, set in addPort)
  }

  /** Turns a port's BPDU guard on or off (a port it shut stays shut until its time is up, or recoverPort). */
  setPortBpduGuard(name: string, on: boolean): void {
    this.#invalidate();
    const p = this.#need(name);
    p.bpduGuard = on;
    updateGate(p);
  }

  /**
   * Sets a port's rate limits; `null` removes one, `undefined` leaves it. A new
   * egress rate drops what waited in the old shaper's queue.
   */
  setPortRate(name: string, ingress: RateSpec | null | undefined, egress: RateSpec | null | undefined): void {
    const p = this.#need(name);
    this.#setRates(p, ingress === undefined ? p.police?.spec : ingress ?? undefined, egress === undefined ? p.shaper?.spec : egress ?? undefined,
      ingress !== undefined, egress !== undefined);
  }

  /** Loop detection and BPDU guard timing for the whole bridge (loop.ts). */
  setLoopProtection(s: Partial<LoopSettings>): LoopSettings {
    this.loop.set(s);
    return this.loop.settings();
  }

  /** Each port's share of a read-loop round, in bytes (fair.ts). */
  get readQuantum(): number { return this.#readQuantum; }

  /** Sets every port's read quantum, now and for ports added later; throws BridgeError EINVAL when out of range. */
  setReadQuantum(bytes: number): number {
    const why = readQuantumProblem(bytes);
    if (why !== undefined) throw new BridgeError('EINVAL', why);
    this.#readQuantum = bytes;
    for (const p of this.#ports.values()) this.#applyShare(p.io);
    return bytes;
  }

  /** What each port's share of a round counts: bytes (readQuantum) or frames (readFrames); fair.ts. */
  get readShare(): ReadShare { return this.#readShare; }

  /** Each port's frames per read-loop round under `readShare: frames` (0: no limit). */
  get readFrames(): number { return this.#readFrames; }

  /**
   * Sets the read share's unit and/or its frame quantum, now and for ports added
   * later; throws BridgeError EINVAL naming the key when a value is out of range
   * (nothing changes then).
   */
  setReadShare(share: ReadShare | undefined, frames?: number): void {
    const why = (share === undefined ? undefined : readShareProblem(share)) ?? (frames === undefined ? undefined : readFramesProblem(frames));
    if (why !== undefined) throw new BridgeError('EINVAL', why);
    if (share !== undefined) this.#readShare = share;
    if (frames !== undefined) this.#readFrames = frames;
    for (const p of this.#ports.values()) this.#applyShare(p.io);
  }

  /** Sparse-first service of the read loop (fair.ts `readSparse`). */
  get readSparse(): boolean { return this.#readSparse; }

  /** Turns sparse-first service on or off for every port, now and for ports added later. */
  setReadSparse(on: boolean): void {
    this.#readSparse = on;
    for (const p of this.#ports.values()) this.#applyShare(p.io);
  }

  #applyShare(io: PortIo): void {
    io.setReadSparse?.(this.#readSparse);
    if (this.#readShare === 'frames') io.setReadQuantum?.(this.#readFrames, true);
    else io.setReadQuantum?.(this.#readQuantum, false);
  }

  /** Opens a port shut by loop protection now; false if it was not shut. */
  recoverPort(name: string): boolean {
    return this.loop.recover(this.#need(name));
  }

  #setRates(p: Port, ingress: RateSpec | undefined, egress: RateSpec | undefined, newIn = true, newOut = true): void {
    this.#invalidate();
    const now = this.#clock();
    if (newIn) p.police = ingress === undefined ? undefined : new Policer(ingress, now);
    if (newOut) {
      p.shaper?.close();
      p.shaper = egress === undefined ? undefined : new Shaper(egress, p.io, now, (r) => { p.drops[txDrop(r)]++; }, this.#clock);
      p.tx = p.shaper ?? p.io;
    }
    updateGate(p);
  }

  /** Replaces a port's VLAN policy; MAC entries in VLANs it leaves are flushed. */
  setPortVlan(name: string, policy: VlanPolicy): void {
    this.#invalidate();
    const port = this.#need(name);
    const before = port.vlan.members().map((m) => m.vid);
    port.vlan.assign(policy);
    for (const vid of before) if (!port.vlan.isMember(vid)) this.fdb.flushPort(port.id, { vid, includeStatic: true });
    this.#rebuildFloodLists();
  }

  vlanAdd(name: string, vid: number, opts: { pvid?: boolean; untagged?: boolean }): void {
    this.#invalidate();
    this.#need(name).vlan.add(vid, opts);
    this.#rebuildFloodLists();
  }

  vlanDel(name: string, vid: number): boolean {
    this.#invalidate();
    const port = this.#need(name);
    const existed = port.vlan.del(vid);
    if (existed) {
      this.fdb.flushPort(port.id, { vid, includeStatic: true });
      this.#rebuildFloodLists();
    }
    return existed;
  }

  addStatic(mac: number, portName: string, vid: number): void {
    const port = this.#need(portName);
    if (!port.vlan.isMember(vid)) {
      throw new BridgeError('EVLAN', `port ${portName} is not a member of VLAN ${vid}`);
    }
    this.fdb.addStatic(vid, mac, port.id);
  }

  portName(id: number): string {
    return this.#byId[id]?.name ?? `#${id}`;
  }

  /**
   * The fast path for one frame. `hdr` is VNET_HDR_LEN when the frame's
   * virtio_net_hdr is at buf[off-hdr, off), else 0.
   */
  receive(port: Port, buf: Uint8Array, off: number, len: number, now: number, hdr = 0): void {
    if (this.#depth > 0) {
      this.#defer(port, buf, off, len, hdr);
      return;
    }
    this.#depth++;
    try {
      this.#receive(port, buf, off, len, now, hdr);
    } finally {
      this.#depth--;
    }
    if (this.#deferred.length > 0) this.#drainDeferred(now);
  }

  #receive(port: Port, buf: Uint8Array, off: number, len: number, now: number, hdr: number): void {
    port.rxFrames++;
    port.rxBytes += len;
    if (!port.up) return;
    let r: number;
    const g = port.gate;
    if (g !== 0 && (g !== GATE_BPDU || buf[off] === 0x01)) {
      // Shut, a BPDU on a guarded port, or over the ingress rate (gate.ts).
      r = gateIn(this.loop, port, buf, off, len, now);
      if (r !== GATE_PASS) {
        port.drops[r]++;
        return;
      }
    }
    const meta = this.#meta;
    offloadMeta(meta, buf, off, hdr);
    r = runIngress(port, this.fdb, buf, off, len, now, meta);
    if (r !== ADMIT) {
      port.drops[r]++;
      if (r === Drop.port_mac_limit) this.#limitEvent(port);
      return;
    }
    const l = meta.learned;
    if (l === MOVED) {
      const loop = this.loop;
      if (loop.flapMoves > 0 && this.fdb.lastMove.flaps > loop.flapMoves && loop.flap(this.fdb, this.#byId, port, meta.vid, meta.src, now)) {
        // A loop (loop.ts): this port is the one blocked.
        port.drops[Drop.loop_blocked]++;
        return;
      }
      // In a loop every frame is a move: the event is built only when the budget lets it be logged.
      if (this.#eventBudget > 0) this.#emit({ event: 'mac_moved', bridge: this.name, vlan: meta.vid, mac: formatMac(meta.src), port: port.name });
      else this.eventsSuppressed++;
    } else if (l === NEW && this.onLearn !== undefined) {
      this.onLearn(meta.vid, meta.src, port);
    }
    const sup = this.#arpSuppress;
    if (sup !== undefined && sup.on[meta.vid] === 1 && port.horizon === 0 && sup.answer(port, meta.vid, meta.tagLen, buf, off, len)) return;
    const to = this.#fc !== undefined && l === REFRESHED ? this.#cacheable(port, buf, off, len, hdr, g, meta) : undefined;
    const tx = to !== undefined ? to.txFrames : 0;
    runForward(this.fdb, this.#byId, this.#floodLists[meta.vid] ?? [], port, buf, off, len, meta, this.#egress, this.counters, now);
    if (to !== undefined && to.txFrames === tx + 1) this.#install(port, buf, off, len, to);
  }

  /**
   * The port a frame whose source learning refreshed goes to, if its decision is of
   * the class the flow cache replays exactly (flow-cache.ts); else undefined. Only
   * while the cache is on.
   */
  #cacheable(port: Port, buf: Uint8Array, off: number, len: number, hdr: number, gate: number, meta: FrameMeta): Port | undefined {
    // A BPDU guard alone never looks at a unicast frame (#receive); a BPDU's key (its group address) never hits.
    if ((gate !== 0 && gate !== GATE_BPDU) || hdr !== HDR || (buf[off] & 1) !== 0 || port.horizon !== 0) return undefined;
    // Tagged in: only a C-tag carrying the frame's VLAN on a port that takes tagged frames
    // (not an access port's priority tag, whose admission reads the inner type too).
    const tagged = meta.tagLen !== 0;
    if (tagged && (!port.vlan.acceptsTagged || tciVid(tci(buf, off)) !== meta.vid)) return undefined;
    if (((port.io as FlowHandleIo).flowHandle ?? -1) < 0) return undefined;
    // An active guard judged the frame by its EtherType, IPv4 header, DHCP ports and
    // source address, its ARP body's sender pair, or its IPv6 header chain, upper layer
    // and source claim; ARP/ND suppression answering in the VLAN, by its EtherType (and
    // ARP/NS bodies, opcode, target, its table). Only the IPv4 class (ip4Class) and, from
    // a guarded port in a VLAN that does not answer, the ARP and IPv6 classes (arpClass,
    // ip6Class), within which those verdicts depend on nothing but the source MAC and
    // the IPv4 source, ARP sender or IPv6 source address, are installed, keyed with the
    // address; the generation covers bindings, claims changing owner, guard options and
    // suppression turned on or off, and the fold refreshes an IPv6 claim's last use.
    const sup = this.#arpSuppress;
    const answers = sup !== undefined && sup.on[meta.vid] === 1;
    const l3 = port.guard.active || answers;
    if (l3 && !inIp4Class(buf, off, len, tagged) &&
      (answers || (!inArpClass(buf, off, len, tagged) && !inIp6Class(buf, off, len, tagged)))) return undefined;
    this.#fcL3 = l3;
    let plain = true;
    for (let i = off - HDR; i < off; i++) if (buf[i] !== 0) plain = false;
    const id = this.fdb.lookupAt(meta.vid, buf, off);
    const p = id >= 0 ? this.#byId[id] : undefined;
    if (p === undefined || p === port || !p.up || p.shut !== 0 || p.shaper !== undefined || p.horizon !== 0) return undefined;
    // A header that says anything (GSO, NEEDS_CSUM, DATA_VALID) goes out as it came only to
    // a port that takes headers (egress.ts sendWithHeader); to any other, egress completes,
    // segments or strips it: work the replay does not do.
    if (!plain && !p.offload) return undefined;
    // Out as it came: untagged to an untagged member; tagged to a tagged member of the same
    // VLAN (egress keeps the tag, PCP and DEI included). Tag edits are not replayed.
    if (!p.vlan.isMember(meta.vid) || p.vlan.isUntagged(meta.vid) === tagged || ((p.io as FlowHandleIo).flowHandle ?? -1) < 0) return undefined;
    return p;
  }

  /**
   * A batch of complete frames from `port` (a tunnel's decapsulated segments: a GRO
   * burst of one TCP flow is ~23 of them), decided once per run. A run is consecutive
   * frames with the same first 16 bytes (destination, source, tag: sameTaggedHead).
   * Its first frame takes the whole pipeline; when the outcome is of a class whose
   * repetition is exact (#runTo), each following frame only gets what the pipeline
   * would have done to it: the ingress port's rx counters, `forwarded`, and egress
   * (the same function, so tx counters, shapers, tag edits and write errors stay per
   * frame). Learning is the same refresh at the same `now`, which changes nothing a
   * second time. Anything a frame's egress could change under the decision (the
   * ingress port's state or gate, the MAC table: Fdb.stamp, the egress port's
   * canEgress, a re-entrant frame deferred) ends the replay: the next frame takes the
   * whole pipeline again. bridge.run.test.ts compares both ways frame by frame.
   */
  #receiveRuns(port: Port, buf: Uint8Array, offs: Int32Array, lens: Int32Array, count: number, now: number): void {
    let i = 0;
    while (i < count) {
      const first = offs[i];
      this.receive(port, buf, first, lens[i], now, 0);
      i++;
      if (i === count || !sameHead(buf, first, offs[i])) continue;
      const to = this.#runTo(port, buf, first, lens[i - 1]);
      if (to === undefined) continue;
      const meta = this.#meta;
      const vid = meta.vid;
      const stamp = this.fdb.stamp[0];
      const min = meta.tagLen === 0 ? ETH_MIN : ETH_MIN + 4;
      const tx = to.tx;
      // The run's egress in one call where the device can (PortIo.sendRun: its writes
      // never call back here, so what the loop below checks per frame cannot change
      // between them); it stops where the loop would, or earlier, and the frame it
      // stopped at takes the whole pipeline.
      const strip = tx.sendRun === undefined ? -1 : runStrip(to, vid, meta.tagLen, buf, first);
      if (strip >= 0 && port.up && port.gate === 0 && runCanEgress(to, port, vid) === ADMIT) {
        const res = this.#runRes;
        // The bytes sameHead compares, and never fewer than `min`: sendRun stops where the loop would, or sooner.
        const hlen = min > ETH_MIN || isTag(rd16(buf, first + TPID_AT)) ? VLAN_TAGGED_HLEN : ETH_MIN;
        let k = tx.sendRun!(buf, offs, lens, i, count, first, hlen, strip, res);
        while (k > 0) {
          port.rxFrames += k;
          port.rxBytes += res[0];
          this.counters.forwarded += k;
          this.runFrames += k;
          this.runCalls++;
          const err = res[2];
          to.txFrames += err === 0 ? k : k - 1;
          to.txBytes += res[1];
          if (err !== 0) to.drops[txDrop(err)]++;
          i += k;
          if (err === 0 || i === count) break;
          k = tx.sendRun!(buf, offs, lens, i, count, first, hlen, strip, res);
        }
        if (k !== -1) continue;
      }
      for (; i < count; i++) {
        const off = offs[i];
        const len = lens[i];
        if (len < min || !sameHead(buf, first, off) || !port.up || port.gate !== 0 || this.fdb.stamp[0] !== stamp ||
          runCanEgress(to, port, vid) !== ADMIT) break;
        port.rxFrames++;
        port.rxBytes += len;
        this.counters.forwarded++;
        this.runFrames++;
        offloadMeta(meta, buf, off, 0);
        this.#depth++;
        try {
          runEgress(to, buf, off, len, meta, this.#egress);
        } finally {
          this.#depth--;
        }
        if (this.#deferred.length > 0) {
          // The frame's egress fed the bridge again (a router port): those frames in order, then the whole pipeline.
          this.#drainDeferred(now);
          i++;
          break;
        }
      }
    }
  }

  /**
   * After the pipeline decided the complete frame buf[off, off+len) from `port`: the
   * one port that identical frames go to, if repeating that decision for them is
   * exact; else undefined. Fills #meta as ingress did. Exact: the ingress port is up,
   * ungated (not shut, no policer, no BPDU guard), has no active guard and no ARP/ND
   * suppression looks at it; the destination is unicast and known on a port
   * canEgress admits; the source's entry is on this port (a refresh) or the VLAN
   * does not learn on it. Not called while frames are deferred (depth > 0).
   */
  #runTo(port: Port, buf: Uint8Array, off: number, len: number): Port | undefined {
    if (this.#depth !== 0 || !port.up || port.gate !== 0 || port.guard.active || (buf[off] & 1) !== 0) return undefined;
    const meta = this.#meta;
    if (runAdmit(port, buf, off, len, meta) !== ADMIT) return undefined;
    const vid = meta.vid;
    const sup = this.#arpSuppress;
    if (sup !== undefined && sup.on[vid] === 1 && port.horizon === 0) return undefined;
    const nl = port.noLearn;
    if (nl !== undefined && nl[vid] === 1) meta.learned = DISABLED;
    else if (this.fdb.lookupAt(vid, buf, off + SRC_AT) === port.id) meta.learned = REFRESHED;
    else return undefined;
    const id = this.fdb.lookupAt(vid, buf, off);
    const p = id >= 0 ? this.#byId[id] : undefined;
    if (p === undefined || runCanEgress(p, port, vid) !== ADMIT) return undefined;
    return p;
  }

  #install(port: Port, buf: Uint8Array, off: number, len: number, to: Port): void {
    const ok = this.#fc!.backend.install(this.#fcId, (port.io as FlowHandleIo).flowHandle!, port.id, buf, off, len,
      (to.io as FlowHandleIo).flowHandle!, to.id, this.#fcL3);
    if (ok) this.flowCacheCounters.installs++;
    else this.flowCacheCounters.installRefused++;
  }

  #defer(port: Port, buf: Uint8Array, off: number, len: number, hdr: number): void {
    if (this.#deferred.length >= MAX_DEFERRED) {
      this.deferredDropped++;
      return;
    }
    this.#deferred.push({ port, frame: Buffer.from(buf.subarray(off - hdr, off + len)), hdr });
  }

  #drainDeferred(now: number): void {
    // Frames forwarded here may defer more; the loop takes them too, in order.
    for (let i = 0; i < this.#deferred.length; i++) {
      const d = this.#deferred[i];
      this.#depth++;
      try {
        this.#receive(d.port, d.frame, d.hdr, d.frame.length - d.hdr, now, d.hdr);
      } finally {
        this.#depth--;
      }
    }
    this.#deferred.length = 0;
  }

  /** The port's link came back (a client reconnected); it forwards again. */
  portUp(port: Port, why: string): void {
    this.#invalidate();
    if (port.up || this.#byId[port.id] !== port) return;
    port.up = true;
    port.downReason = '';
    this.#emit({ event: 'port_up', bridge: this.name, port: port.name, reason: why }, true);
  }

  /** The port turned unusable (device deleted, fatal I/O error), or its link went down. */
  portGone(port: Port, why: string): void {
    this.#invalidate();
    if (!port.up) return;
    port.up = false;
    port.downReason = why;
    port.downEvents++;
    this.fdb.flushPort(port.id);
    this.#emit({ event: 'port_down', bridge: this.name, port: port.name, reason: why }, true);
  }

  #rxFor(port: Port): PortRx {
    return {
      batch: (buf, offs, lens, count, vnet, at) => {
        const now = at !== undefined && this.#portTime ? at : this.#clock();
        if (vnet !== true) this.#receiveRuns(port, buf, offs, lens, count, now);
        else for (let i = 0; i < count; i++) this.receive(port, buf, offs[i], lens[i], now, HDR);
      },
      frame: (buf, off, len) => this.receive(port, buf, off, len, this.#clock()),
      gone: (_errno, why) => this.portGone(port, why),
      link: (up, why) => (up ? this.portUp(port, why) : this.portGone(port, why)),
    };
  }

  #need(name: string): Port {
    const p = this.#ports.get(name);
    if (p === undefined) throw new BridgeError('ENOENT', `no port ${name} in bridge ${this.name}`);
    return p;
  }

  #forget(port: Port): void {
    this.#invalidate();
    port.guard.detach();
    this.loop.forget(port);
    port.shaper?.close();
    this.fdb.flushPort(port.id, { includeStatic: true });
    this.fdb.setPortLimit(port.id, 0);
    this.#ports.delete(port.name);
    this.#byId[port.id] = undefined;
    this.#rebuildFloodLists();
  }

  /** Rebuilds the flood lists after a port's PortIo.floods answers changed. */
  refreshFloodLists(): void {
    this.#rebuildFloodLists();
  }

  #rebuildFloodLists(): void {
    this.#invalidate();
    const lists: (Port[] | undefined)[] = new Array(VID_MAX + 1);
    for (const p of this.#ports.values()) {
      const io = p.io;
      for (const m of p.vlan.members()) if (io.floods === undefined || io.floods(m.vid)) (lists[m.vid] ??= []).push(p);
    }
    this.#floodLists = lists;
  }

  #limitEvent(port: Port): void {
    this.#emit({
      event: 'mac_limit', bridge: this.name, port: port.name, vlan: this.#meta.vid,
      mac: formatMac(this.#meta.src), limit: this.fdb.portLimit(port.id),
    });
  }

  #emit(e: BridgeEvent, always = false): void {
    if (!always) {
      if (this.#eventBudget <= 0) {
        this.eventsSuppressed++;
        return;
      }
      this.#eventBudget--;
    }
    this.#onEvent(e);
  }
}
