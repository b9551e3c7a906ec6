/*
 * The daemon's BGP EVPN control plane (issue 16): the `evpn` config section made
 * into a GoBGP speaker (managed: gobgpd.ts; or an operator's gobgpd) that
 * advertises this VTEP's VNIs and local MACs and installs what the peers advertise
 * into the Vtep (packages/switch/src/vxlan.ts "Two owners").
 *
 * Advertise. Per VNI of the vxlan section, a type-3 route (PMSI: ingress
 * replication to the local VTEP address, label = VNI) and per local MAC a type-2
 * route: MAC only, and MAC/IP for each IPv4 address the MAC's port binds to it (a
 * DHCP lease or a configured binding of the IP source guard). "Local" is an FDB
 * entry in a mapped VLAN on a port that is not a tunnel; a static one is
 * advertised sticky (RFC 7432 §15.2). The bridges' FDBs report each add, move and
 * removal (fdb.ts "Change listener"); the listener only notes the (VLAN, MAC) in a
 * bounded set (PENDING_MAX; past it, one full pass replaces the set), and a timer
 * (BATCH_MS) turns the noted MACs into route changes, so a learning storm costs a
 * bounded queue and one pass, never a gRPC call per frame. Route changes go to
 * gobgpd one at a time, in order (a chain of calls), so an add and its withdrawal
 * never cross.
 *
 * MAC mobility: the highest sequence number seen in peers' installed routes is kept
 * per (VNI, MAC) while one stands; a MAC advertised from here carries that plus one
 * (0 if no peer's route stands for it). A peer's route for a MAC local here is installed (the local entry
 * dropped, our route withdrawn) only if its sequence is higher than ours: that is
 * the MAC moving away; otherwise it is refused ('local_newer').
 *
 * Install. The RIB's best paths (WatchEvent) from peers: a type-2 route becomes a
 * remote entry on the tunnel port to its next hop, a type-3 route puts its next hop
 * on the VNI's flood list; a withdrawal removes them at once. Routes are checked
 * (routes.ts EVPN_REJECT_REASONS) and refused ones counted by reason. Remote MACs
 * per VNI are bounded by maxRemoteMacs (refused: 'limit'), routes per MAC by
 * MAX_ROUTES_PER_MAC ('mac_routes'); the FDB's own limit does
 * not bound them (remote entries are static), this one does. Several routes naming
 * one MAC or one flood remote (MAC-only and MAC/IP, two RDs) are counted, and the
 * entry goes with the last of them. MAC/IP routes, installed peers' and our own
 * advertised ones, also fill the VNIs' ARP suppression tables (neighbours.ts).
 *
 * Duplicate MAC detection (dup-detect.ts): the two moves above (a peer's MAC learned
 * here and advertised over its sequence; a local MAC a peer's newer route takes) are
 * reported to a DupDetector; a MAC flagged and held keeps its state: no higher
 * sequence is advertised for it, a peer's newer route for it while it is local is
 * refused ('duplicate_mac'). A release (`evpn clear-dup`, the freeze time) judges the
 * MAC again: its FDB entry is reconciled and every route is read again from gobgpd.
 *
 * Routes refused for the limit are remembered (refused.ts) and judged again when a
 * reload raises it. `evpn show` counts remote MACs from the MAC table
 * (remote-count.ts): a local frame takes a route's MAC back while the route stands.
 *
 * Surviving the control plane: when the connection to gobgpd breaks (gobgpd died,
 * restarted), installed entries stay and forwarding goes on; after reconnecting,
 * every route is fetched again (ListPath) and what is still advertised is kept,
 * and entries no route renewed within STALE_MS of the break are removed (a
 * graceful-restart-like hold; BGP graceful restart is offered to the peers too:
 * gobgp.ts addPeer).
 */
import { type Bridge, type FdbEntry, formatMac, ip4Text, parseIp4, parseMac, type Segment, type Vtep } from '@vswitch/switch';
import { VswitchError } from '../../errors.js';
import type { EvpnConfig } from '../../evpn-config.js';
import type { Logger } from '../log.js';
import { type EvpnRoute, GobgpClient, GobgpError, loadGobgpApi, type PeerInfo } from './gobgp.js';
import { GobgpdProcess } from './gobgpd.js';
import { DupDetector, type DupEntry, type MoveResult } from './dup-detect.js';
import { arpSuppressMetrics, EvpnNeighbours } from './neighbours.js';
import { PrefixLimits, prefixLimitMetrics } from './prefix-limit.js';
import { LimitRefused } from './refused.js';
import { remoteMacsInFdb } from './remote-count.js';
import { checkRoute, derivePlans, EVPN_REJECT_REASONS, MAX_ROUTES_PER_MAC, type EvpnRejectReason, routeKey, type VniPlan } from './routes.js';

const BATCH_MS = 50;
const PENDING_MAX = 4096;
const STALE_MS = 120_000;
const PEER_POLL_MS = 2000;

interface Installed {
  type: 2 | 3;
  vni: number;
  mac: number;
  remote: number;
  seq: number;
  stale: boolean;
}

export interface EvpnContext {
  vtep: () => Vtep | undefined;
  /** The vxlan section's local address ('' none). */
  local: () => string;
}

export class EvpnService {
  #conf: EvpnConfig | undefined;
  #stateDir: string | undefined;
  #proc: GobgpdProcess | undefined;
  #client: GobgpClient | undefined;
  #api: ReturnType<typeof loadGobgpApi> | undefined;
  #apiDir: string | undefined;
  /** Bumped at each (re)connection and stop: work of an older one is dropped. */
  #session = 0;
  #connected = false;
  #lastError = '';
  #chain: Promise<unknown> = Promise.resolve();
  #plans = new Map<number, VniPlan>();
  /** Advertised routes by routeKey, and per `${vni}/${mac}` their keys. */
  readonly #adv = new Map<string, EvpnRoute>();
  readonly #advByMac = new Map<string, Set<string>>();
  /** Highest mobility sequence seen from peers per `${vni}/${mac}`. */
  readonly #remoteSeq = new Map<string, number>();
  readonly #installed = new Map<string, Installed>();
  readonly #byMac = new Map<string, Set<string>>();
  readonly #byFlood = new Map<string, Set<string>>();
  readonly #macsPerVni = new Map<number, number>();
  readonly #peers = new Map<string, PeerInfo>();
  #pending = new Set<string>();
  #pendingAll = false;
  #batch: NodeJS.Timeout | undefined;
  #poll: NodeJS.Timeout | undefined;
  #staleTimer: NodeJS.Timeout | undefined;
  #retry: NodeJS.Timeout | undefined;
  #retryMs = 1000;
  readonly #listened = new Set<Bridge>();
  readonly rejected = new Float64Array(EVPN_REJECT_REASONS.length);
  readonly received = { 2: 0, 3: 0 };
  readonly #recentRejects: { at: string; reason: string; route: string }[] = [];
  /** ARP suppression's tables, fed from MAC/IP routes (neighbours.ts). */
  readonly neighbours = new EvpnNeighbours((k) => k.startsWith('|')); // routeKey: ours have no neighbour
  /** Routes refused for maxRemoteMacs, judged again when it is raised (refused.ts). */
  readonly #refused = new LimitRefused(0);
  /** While a re-read (ListPath) runs, watch events wait here. */
  #held: Record<string, unknown>[][] | undefined;
  #rejectLogBudget = 20;
  /** Duplicate MAC detection (dup-detect.ts); configured by apply(). */
  readonly dup = new DupDetector(false);

  /** Neighbours this daemon added to gobgpd (not an operator's existing peer): their limits are ours to change. */
  readonly #ownPeers = new Set<string>();
  /** Per-neighbour route limits in gobgpd: hits counted, held-down sessions restarted (prefix-limit.ts). */
  readonly limits: PrefixLimits;

  constructor(private readonly log: Logger, private readonly ctx: EvpnContext) {
    this.limits = new PrefixLimits(log, (a) => this.#queue('enable_peer', (c) => c.enablePeer(a)), (a) => this.#ownPeers.has(a));
  }

  get enabled(): boolean { return this.#conf !== undefined; }

  /** Applies the section (undefined: none); returns what changed. Connection work goes on in the background. */
  apply(conf: EvpnConfig | undefined, stateDir?: string): string[] {
    if (stateDir !== undefined) this.#stateDir = stateDir;
    const before = this.#conf;
    if (conf === undefined) {
      if (before === undefined) return [];
      this.close();
      this.log.info({ event: 'evpn_stopped' }, 'evpn_stopped');
      return ['evpn off'];
    }
    const dir = conf.protoDir;
    if (this.#api === undefined || this.#apiDir !== dir) {
      try {
        this.#api = loadGobgpApi(dir);
        this.#apiDir = dir;
      } catch (e) {
        throw new GobgpError('ENOENT', `evpn: ${(e as Error).message}`);
      }
    }
    // In place: limits, ARP suppression, RD/RT overrides, duplicate detection, the neighbours' prefix limits.
    const inPlace = (c: EvpnConfig): string => JSON.stringify({ ...c, maxRemoteMacs: 0, arpSuppress: true, vnis: {}, dupDetect: 0, neighbors: c.neighbors.map((n) => ({ address: n.address, remoteAs: n.remoteAs })) });
    const same = before !== undefined && inPlace(before) === inPlace(conf);
    this.#conf = conf;
    const limitsChanged = this.limits.configure(conf.neighbors);
    const { enabled, ...dupConf } = conf.dupDetect;
    const now = Date.now();
    const wasHeld = this.dup.duplicates().filter((e) => this.dup.held(e.vni, e.mac, now));
    this.#dupReleased(this.dup.configure(enabled ? dupConf : false), 'config');
    // A freeze shortened or turned off lets flagged MACs go: judged again, still flagged.
    this.#dupRejudge(wasHeld.filter((e) => this.dup.flagged(e.vni, e.mac) && !this.dup.held(e.vni, e.mac, now)));
    this.#refused.max = conf.maxRemoteMacs;
    this.#replan();
    if (same) {
      // Limits, ARP suppression and RD/RT overrides apply in place; the routes are redone.
      this.#resync();
      if (conf.maxRemoteMacs > before.maxRemoteMacs) this.#retryRefused();
      for (const a of limitsChanged) this.#updateLimit(a);
      return [`evpn: ${this.#plans.size} VNIs, maxRemoteMacs ${conf.maxRemoteMacs}`];
    }
    this.#stop();
    this.#start();
    return [`evpn: AS ${conf.asn}, ${conf.neighbors.length} neighbours, gobgpd ${conf.gobgpd === 'managed' ? 'managed' : conf.gobgpd.address}`];
  }

  /** The vxlan section changed (segments rebuilt): VNIs replanned, routes redone. */
  vxlanChanged(): void {
    if (this.#conf === undefined) return;
    this.#replan();
    this.#resync();
  }

  close(): void {
    this.#stop();
    this.limits.close();
    this.#conf = undefined;
    for (const br of this.#listened) if (br.fdb.onChange === this.#onFdb) br.fdb.onChange = undefined;
    this.#listened.clear();
    this.#dropInstalled();
    this.neighbours.close();
    this.dup.clear();
  }

  #routerId(): string {
    return this.#conf?.routerId ?? this.ctx.local();
  }

  #replan(): void {
    const vtep = this.ctx.vtep();
    const vnis = vtep?.segments().map((s) => s.vni) ?? [];
    const c = this.#conf!;
    this.#plans = new Map(derivePlans(vnis, this.#routerId(), c.asn, c.vnis).map((p) => [p.vni, p]));
    this.neighbours.configure(vtep, (vni) => c.vnis[String(vni)]?.arpSuppress ?? c.arpSuppress, c.maxRemoteMacs);
    this.#listen();
  }

  /** Puts the FDB listener on each bridge carrying VNIs (a bridge rebuilt gets it again here). */
  #listen(): void {
    for (const s of this.ctx.vtep()?.segments() ?? []) {
      const br = s.tunnels.bridge;
      if (br.fdb.onChange !== this.#onFdb) br.fdb.onChange = this.#onFdb;
      this.#listened.add(br);
    }
  }

  /* ---------- connection ---------- */

  #start(): void {
    const c = this.#conf!;
    if (c.gobgpd === 'managed') {
      this.#proc = new GobgpdProcess(this.log, this.#stateDir, (address) => this.#connect(address));
      this.#proc.start();
    } else {
      this.#connect(c.gobgpd.address);
    }
    this.#poll = setInterval(() => void this.#pollPeers(), PEER_POLL_MS);
    this.#poll.unref();
  }

  #stop(): void {
    this.#session++;
    this.#connected = false;
    clearInterval(this.#poll);
    clearTimeout(this.#retry);
    clearTimeout(this.#batch);
    this.#batch = undefined;
    this.#client?.close();
    this.#client = undefined;
    this.#proc?.stop();
    this.#proc = undefined;
    this.#adv.clear();
    this.#advByMac.clear();
    this.#peers.clear();
    this.#refused.clear();
    this.limits.reset();
    this.#held = undefined;
  }

  #connect(address: string): void {
    const my = ++this.#session;
    this.#connected = false;
    this.#held = undefined;
    this.#client?.close();
    const client = new GobgpClient(address, this.#api!);
    this.#client = client;
    void this.#setup(client, my).catch((e: Error) => {
      if (my !== this.#session) return;
      this.#lastError = e.message;
      this.log.error({ event: 'evpn_gobgpd_failed', api: address, error: e.message }, 'evpn_gobgpd_failed');
      this.#lost(address, my);
    });
  }

  /** The connection broke: entries stay (stale), a later connection renews them. */
  #lost(address: string, my: number): void {
    if (my !== this.#session) return;
    this.#connected = false;
    this.limits.reset();
    for (const p of this.#peers.values()) p.state = 'unknown';
    this.#markStale();
    // The managed gobgpd calls #connect again when it restarts; an operator's is retried here.
    if (this.#conf !== undefined && this.#conf.gobgpd !== 'managed') {
      clearTimeout(this.#retry);
      this.#retry = setTimeout(() => this.#connect(address), this.#retryMs);
      this.#retry.unref();
      this.#retryMs = Math.min(this.#retryMs * 2, 30_000);
    }
  }

  async #setup(client: GobgpClient, my: number): Promise<void> {
    const c = this.#conf!;
    const local = this.ctx.local();
    let g: Awaited<ReturnType<GobgpClient['getBgp']>> | undefined;
    const deadline = Date.now() + 15_000;
    for (;;) {
      try {
        g = await client.getBgp(1000);
        break;
      } catch (e) {
        if (Date.now() > deadline || my !== this.#session) throw e;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    if (my !== this.#session) return;
    if (g.asn === 0) {
      await client.startBgp(c.asn, this.#routerId(), [local], c.gobgpd === 'managed' ? c.bgpPort : c.bgpPort);
    } else if (g.asn !== c.asn) {
      throw new GobgpError('EINVAL', `gobgpd at ${client.address} runs AS ${g.asn}, the config says ${c.asn}`);
    }
    // What this host advertises goes in before the peers (the gobgpd may be new): a
    // peer keeping our routes through a restart then gets them all before our End-of-RIB.
    this.#connected = true;
    this.#adv.clear();
    this.#advByMac.clear();
    this.#pendingAll = true;
    this.#flush();
    await this.#chain;
    if (my !== this.#session) return;
    this.#ownPeers.clear();
    for (const n of c.neighbors) {
      try {
        await client.addPeer(n.address, n.remoteAs, c.asn, local, n.maxPrefixes);
        this.#ownPeers.add(n.address);
      } catch (e) {
        if (!/existing peer/.test((e as Error).message)) throw e;
      }
    }
    if (my !== this.#session) return;
    // Routes from peers: the watch first (its events wait while the snapshot is applied), then the snapshot.
    const early: Record<string, unknown>[][] = [];
    let snapshotDone = false;
    client.watch((paths) => {
      if (my !== this.#session) return;
      if (!snapshotDone) early.push(paths);
      else if (this.#held !== undefined) this.#held.push(paths);
      else this.#onPaths(paths, false);
    }, (address, state, pfxDown) => {
      const p = this.#peers.get(address);
      if (p !== undefined) p.state = state;
      this.limits.observe(address, pfxDown);
      if (address !== '') this.log.info({ event: 'evpn_peer_state', neighbor: address, state }, 'evpn_peer_state');
    }, (err) => {
      if (my !== this.#session) return;
      this.log.warn({ event: 'evpn_gobgpd_lost', api: client.address, error: err?.message ?? 'stream ended' }, 'evpn_gobgpd_lost');
      this.#lost(client.address, my);
    });
    const snap = await client.listPaths();
    if (my !== this.#session) return;
    this.#refused.clear();
    this.#onRoutes(snap, true);
    snapshotDone = true;
    for (const paths of early) this.#onPaths(paths, false);
    this.#retryMs = 1000;
    this.#lastError = '';
    this.log.info({ event: 'evpn_connected', api: client.address, asn: c.asn, routerId: this.#routerId(), routes: snap.length }, 'evpn_connected');
    void this.#pollPeers();
  }

  async #pollPeers(): Promise<void> {
    const client = this.#client;
    if (client === undefined || !this.#connected) return;
    try {
      const ps = await client.listPeers();
      this.#peers.clear();
      for (const p of ps) {
        this.#peers.set(p.address, p);
        this.limits.observe(p.address, p.prefixLimitDown, p.received);
      }
    } catch { /* the watch notices a dead gobgpd */ }
  }

  /** A reload changed the neighbour's limit: gobgpd takes it in place; one held down for the old limit may connect again. */
  #updateLimit(address: string): void {
    const conf = this.#conf;
    const n = conf?.neighbors.find((x) => x.address === address);
    if (conf === undefined || n === undefined || !this.#ownPeers.has(address)) return;
    const local = this.ctx.local();
    this.#queue('update_peer', (c) => c.updatePeer(n.address, n.remoteAs, conf.asn, local, n.maxPrefixes));
    this.limits.release(address, 'reload');
  }

  /** Runs gRPC calls one at a time, in order; a call of an older connection is skipped. */
  #queue(what: string, f: (c: GobgpClient) => Promise<unknown>): void {
    const my = this.#session;
    this.#chain = this.#chain.then(async () => {
      const c = this.#client;
      if (my !== this.#session || c === undefined || !this.#connected) return;
      try {
        await f(c);
      } catch (e) {
        this.log.warn({ event: 'evpn_call_failed', what, error: (e as Error).message }, 'evpn_call_failed');
      }
    });
  }

  /* ---------- advertise ---------- */

  readonly #onFdb = (e: FdbEntry, _how: number): void => {
    if (this.#pendingAll) return;
    if (this.#pending.size >= PENDING_MAX) {
      this.#pendingAll = true;
      this.#pending.clear();
    } else {
      // The bridge is found again by the VLAN's segment at flush time.
      this.#pending.add(`${e.vid}/${e.mac}`);
    }
    this.#batch ??= setTimeout(() => this.#flush(), BATCH_MS);
  };

  /** Everything advertised and installed redone against the tables (after a (re)connection or a change of VNIs). */
  #resync(): void {
    this.#listen();
    this.#pendingAll = true;
    clearTimeout(this.#batch);
    this.#batch = setTimeout(() => this.#flush(), 0);
  }

  #flush(): void {
    this.#batch = undefined;
    const all = this.#pendingAll;
    const pending = this.#pending;
    this.#pending = new Set();
    this.#pendingAll = false;
    if (!this.#connected) {
      // Redone in full on connection.
      return;
    }
    const vtep = this.ctx.vtep();
    const segs = vtep?.segments() ?? [];
    if (all) {
      const want = new Set<string>();
      for (const seg of segs) {
        if (!this.#plans.has(seg.vni)) continue;
        want.add(this.#advertise(this.#imet(seg.vni)));
        for (const e of seg.tunnels.bridge.fdb.entries()) {
          if (e.vid === seg.vid) this.#reconcileMac(seg, e.mac, want);
        }
      }
      for (const [k, r] of [...this.#adv]) if (!want.has(k)) this.#withdraw(k, r);
      this.neighbours.retain((k) => this.#adv.has(k));
      this.#advByMac.clear();
      for (const [k, r] of this.#adv) {
        if (r.type !== 2) continue;
        const mk = `${r.vni}/${parseMac(r.mac!)}`;
        this.#advByMac.set(mk, (this.#advByMac.get(mk) ?? new Set()).add(k));
      }
      return;
    }
    const byVid = new Map<number, Segment[]>();
    for (const s of segs) byVid.set(s.vid, [...byVid.get(s.vid) ?? [], s]);
    for (const k of pending) {
      const i = k.indexOf('/');
      const vid = Number(k.slice(0, i));
      const mac = Number(k.slice(i + 1));
      for (const seg of byVid.get(vid) ?? []) this.#reconcileMac(seg, mac);
    }
  }

  #imet(vni: number): EvpnRoute {
    const p = this.#plans.get(vni)!;
    const local = this.ctx.local();
    return { type: 3, rd: p.rd, vni, originator: local, nextHop: local, rts: p.rts, encap: 8, seq: 0, sticky: false, neighbor: '' };
  }

  /** Makes the MAC's advertised routes in `seg` what the FDB says; `want` collects their keys in a full pass. */
  #reconcileMac(seg: Segment, mac: number, want?: Set<string>): void {
    const plan = this.#plans.get(seg.vni);
    if (plan === undefined) return;
    const br = seg.tunnels.bridge;
    const e = br.fdb.get(seg.vid, mac);
    const port = e === undefined ? undefined : br.port(br.portName(e.port));
    const local = e !== undefined && !e.remote && port !== undefined && port.horizon === 0;
    const mk = `${seg.vni}/${mac}`;
    const had = this.#advByMac.get(mk);
    const next = new Set<string>();
    if (local) {
      const macText = formatMac(mac);
      const ips = [''];
      for (const m of [port.guard.leased, port.guard.configured]) for (const [ip, bm] of m) if (bm === mac) ips.push(ip4Text(ip));
      // Our sequence stays while it is the highest; a peer's newer one is overtaken.
      let seq = 0;
      for (const k of had ?? []) seq = Math.max(seq, this.#adv.get(k)?.seq ?? 0);
      const seen = this.#remoteSeq.get(mk);
      // A peer's route stands and the MAC is here: it moved back (a move, dup-detect.ts).
      // Held as a duplicate: what is advertised stays as it is, nothing new goes out.
      const held = seen !== undefined && seen >= seq && this.#dupMove(seg.vni, mac, 'local') === 'held';
      if (held) for (const k of had ?? []) next.add(k);
      else if (seen !== undefined && seen >= seq) seq = seen + 1;
      const localIp = this.ctx.local();
      if (!held) for (const ip of ips) {
        const r: EvpnRoute = { type: 2, rd: plan.rd, vni: seg.vni, mac: macText, ip, nextHop: localIp, rts: plan.rts, encap: 8, seq, sticky: e.isStatic, neighbor: '' };
        next.add(this.#advertise(r));
      }
    }
    for (const k of had ?? []) {
      if (!next.has(k)) this.#withdraw(k, this.#adv.get(k)!);
    }
    if (next.size > 0) this.#advByMac.set(mk, next);
    else this.#advByMac.delete(mk);
    if (want !== undefined) for (const k of next) want.add(k);
  }

  /** Advertises `r` unless the same is advertised already; returns its key. */
  #advertise(r: EvpnRoute): string {
    const k = routeKey(r);
    const old = this.#adv.get(k);
    if (old !== undefined && old.seq === r.seq && old.sticky === r.sticky && old.rd === r.rd && old.rts.join() === r.rts.join()) return k;
    this.#adv.set(k, r);
    if (r.type === 2 && r.ip) this.neighbours.add(k, r.vni, r.ip, parseMac(r.mac!));
    this.#queue('add_path', (c) => c.addPath(r));
    return k;
  }

  #withdraw(k: string, r: EvpnRoute): void {
    this.#adv.delete(k);
    this.neighbours.remove(k);
    this.#queue('delete_path', (c) => c.deletePath(r));
  }

  /* ---------- install ---------- */

  /**
   * maxRemoteMacs was raised: the routes refused for it are judged again, and if some
   * were not kept (refused.ts) every route is read again from gobgpd, watch events
   * waiting meanwhile so that none is overtaken by the older snapshot.
   */
  #retryRefused(): void {
    // Not connected: the next connection judges every route again anyway.
    if (!this.#connected) {
      this.#refused.clear();
      return;
    }
    const { routes, reread } = this.#refused.drain();
    this.#onRoutes(routes, false, true);
    this.log.info({ event: 'evpn_limit_retry', kept: routes.length, reread }, 'evpn_limit_retry');
    if (reread) this.#reread('evpn_limit_retry_failed');
  }

  /** Every route read again from gobgpd and judged (not counted again), watch events waiting meanwhile. */
  #reread(failEvent: string): void {
    const client = this.#client;
    if (!this.#connected || client === undefined || this.#held !== undefined) return;
    const my = this.#session;
    this.#held = [];
    const release = (): void => {
      const held = this.#held ?? [];
      this.#held = undefined;
      for (const p of held) this.#onPaths(p, false);
    };
    client.listPaths().then((snap) => {
      if (my !== this.#session) return;
      this.#onRoutes(snap, false, true);
      release();
    }, (e: Error) => {
      if (my !== this.#session) return;
      this.log.warn({ event: failEvent, error: e.message }, failEvent);
      release();
    });
  }

  #onPaths(paths: Record<string, unknown>[], snapshot: boolean): void {
    const client = this.#client;
    if (client === undefined) return;
    const rs: EvpnRoute[] = [];
    for (const p of paths) {
      const r = client.decode(p);
      if (r !== undefined) rs.push(r);
    }
    this.#onRoutes(rs, snapshot);
  }

  /** `retry`: routes judged again (refused.ts): not counted as received, nor refused again. */
  #onRoutes(rs: EvpnRoute[], snapshot: boolean, retry = false): void {
    const vtep = this.ctx.vtep();
    if (vtep === undefined) return;
    const local = this.ctx.local();
    for (const r of rs) {
      if (r.neighbor === '' || r.neighbor === undefined) continue; // ours
      const k = routeKey(r);
      if (r.withdraw) {
        this.#refused.forget(k);
        this.#uninstall(vtep, k);
        continue;
      }
      const cur = this.#installed.get(k);
      if (cur !== undefined && cur.remote === (parseIp4(r.nextHop) | 0) && cur.seq === r.seq && cur.vni === r.vni) {
        cur.stale = false;
        continue;
      }
      if (cur !== undefined) this.#uninstall(vtep, k);
      if (!retry) this.received[r.type]++;
      const why = this.#install(vtep, r, k, local);
      if (why === 'limit') this.#refused.note(k, r);
      else this.#refused.forget(k);
      if (why !== undefined && !retry) this.#reject(why, r);
    }
    if (snapshot) { /* stale entries are swept by the timer #markStale set */ }
  }

  #install(vtep: Vtep, r: EvpnRoute, k: string, local: string): EvpnRejectReason | undefined {
    const plan = this.#plans.get(r.vni);
    const why = checkRoute(r, plan, local);
    if (why !== undefined) return why;
    const remote = parseIp4(r.nextHop) | 0;
    const seg = vtep.segment(r.vni)!;
    if (r.type === 3) {
      if (!vtep.addFloodRemote(r.vni, remote)) return 'unknown_vni';
      this.#installed.set(k, { type: 3, vni: r.vni, mac: 0, remote, seq: 0, stale: false });
      const fk = `${r.vni}/${remote}`;
      this.#byFlood.set(fk, (this.#byFlood.get(fk) ?? new Set()).add(k));
      return undefined;
    }
    const mac = parseMac(r.mac!);
    const mk = `${r.vni}/${mac}`;
    const br = seg.tunnels.bridge;
    const e = br.fdb.get(seg.vid, mac);
    if (e !== undefined && e.isStatic && !e.remote) return 'static_conflict';
    // The limit before a local entry is given up: a route that cannot be installed takes nothing away.
    const macs = this.#byMac.get(mk);
    if (macs === undefined && (this.#macsPerVni.get(r.vni) ?? 0) >= (this.#conf?.maxRemoteMacs ?? 0)) return 'limit';
    if (macs !== undefined && macs.size >= MAX_ROUTES_PER_MAC) return 'mac_routes';
    if (e !== undefined && !e.isStatic) {
      const p = br.port(br.portName(e.port));
      if (p !== undefined && p.horizon === 0) {
        let ours = 0;
        for (const ak of this.#advByMac.get(mk) ?? []) ours = Math.max(ours, this.#adv.get(ak)?.seq ?? 0);
        if (r.seq <= ours) return 'local_newer';
        if (this.#dupMove(r.vni, mac, r.nextHop) === 'held') return 'duplicate_mac';
        // The MAC moved away: the peer's newer route wins, ours goes (the FDB change brings the reconcile).
        br.fdb.delete(seg.vid, mac);
      }
    }
    const refused = vtep.addRemoteMac(r.vni, mac, remote);
    if (refused !== undefined) return refused;
    // Kept while a route for the MAC is installed (so bounded by maxRemoteMacs): with none
    // standing, a MAC learned here is advertised with 0, which no peer's route contests.
    if (r.seq > (this.#remoteSeq.get(mk) ?? -1)) this.#remoteSeq.set(mk, r.seq);
    this.#installed.set(k, { type: 2, vni: r.vni, mac, remote, seq: r.seq, stale: false });
    if (r.ip) this.neighbours.add(k, r.vni, r.ip, mac);
    if (macs === undefined) {
      this.#byMac.set(mk, new Set([k]));
      this.#macsPerVni.set(r.vni, (this.#macsPerVni.get(r.vni) ?? 0) + 1);
    } else {
      macs.add(k);
    }
    return undefined;
  }

  #uninstall(vtep: Vtep, k: string): void {
    const rec = this.#installed.get(k);
    if (rec === undefined) return;
    this.#installed.delete(k);
    if (rec.type === 3) {
      const fk = `${rec.vni}/${rec.remote}`;
      const set = this.#byFlood.get(fk);
      set?.delete(k);
      if (set === undefined || set.size === 0) {
        this.#byFlood.delete(fk);
        vtep.removeFloodRemote(rec.vni, rec.remote);
      }
      return;
    }
    this.neighbours.remove(k);
    const mk = `${rec.vni}/${rec.mac}`;
    const set = this.#byMac.get(mk);
    set?.delete(k);
    if (set !== undefined && set.size > 0) {
      // Another route still names the MAC: it points where that one says.
      const other = this.#installed.get([...set][0]);
      if (other !== undefined && other.remote !== rec.remote) vtep.addRemoteMac(rec.vni, rec.mac, other.remote);
      return;
    }
    this.#byMac.delete(mk);
    this.#remoteSeq.delete(mk);
    this.#macsPerVni.set(rec.vni, Math.max(0, (this.#macsPerVni.get(rec.vni) ?? 1) - 1));
    vtep.removeRemoteMac(rec.vni, rec.mac);
  }

  #reject(why: EvpnRejectReason, r: EvpnRoute): void {
    this.rejected[EVPN_REJECT_REASONS.indexOf(why)]++;
    const route = r.type === 2 ? `type-2 ${r.mac} vni ${r.vni} from ${r.nextHop}` : `type-3 vni ${r.vni} from ${r.nextHop}`;
    this.#recentRejects.push({ at: new Date().toISOString(), reason: why, route });
    if (this.#recentRejects.length > 10) this.#recentRejects.shift();
    if (this.#rejectLogBudget > 0) {
      this.#rejectLogBudget--;
      this.log.warn({ event: 'evpn_route_rejected', reason: why, route, neighbor: r.neighbor }, 'evpn_route_rejected');
    }
  }

  /** Every installed entry is stale until a route renews it; STALE_MS later the rest go. */
  #markStale(): void {
    for (const rec of this.#installed.values()) rec.stale = true;
    clearTimeout(this.#staleTimer);
    this.#staleTimer = setTimeout(() => {
      const vtep = this.ctx.vtep();
      if (vtep === undefined) return;
      let n = 0;
      for (const [k, rec] of [...this.#installed]) {
        if (!rec.stale) continue;
        this.#uninstall(vtep, k);
        n++;
      }
      if (n > 0) this.log.info({ event: 'evpn_stale_removed', count: n }, 'evpn_stale_removed');
    }, STALE_MS);
    this.#staleTimer.unref();
  }

  #dropInstalled(): void {
    clearTimeout(this.#staleTimer);
    const vtep = this.ctx.vtep();
    if (vtep !== undefined) for (const k of [...this.#installed.keys()]) this.#uninstall(vtep, k);
    this.#installed.clear();
    this.#byMac.clear();
    this.#byFlood.clear();
    this.#macsPerVni.clear();
    this.#remoteSeq.clear();
  }

  /** The reject log budget refills (called once a second by the daemon's ticker, or the metrics). */
  tick(): void {
    this.#rejectLogBudget = 20;
    this.#listen();
    this.#dupReleased(this.dup.sweep(Date.now()), 'freeze_expired');
  }

  /* ---------- duplicate MAC detection ---------- */

  /** Reports a move of (vni, mac) to `to` ('local' or the peer's address); logs a detection. */
  #dupMove(vni: number, mac: number, to: string): MoveResult {
    const res = this.dup.move(vni, mac, to, Date.now());
    if (res === 'detected') {
      const c = this.dup.config;
      const held = this.dup.held(vni, mac, Date.now());
      this.log.warn({
        event: 'evpn_duplicate_mac', vni, mac: formatMac(mac), to, moves: c === false ? 0 : c.maxMoves,
        windowSeconds: c === false ? 0 : c.windowSeconds, action: held ? 'held' : 'flagged',
      }, 'evpn_duplicate_mac');
    }
    return res;
  }

  /** Flagged MACs released (clear, freeze time, config): each judged again from the FDB and gobgpd's routes. */
  #dupReleased(es: DupEntry[], why: string): void {
    if (es.length === 0) return;
    for (const e of es) this.log.info({ event: 'evpn_duplicate_cleared', vni: e.vni, mac: formatMac(e.mac), why }, 'evpn_duplicate_cleared');
    this.#dupRejudge(es);
  }

  #dupRejudge(es: DupEntry[]): void {
    if (es.length === 0) return;
    const vtep = this.ctx.vtep();
    for (const e of es) {
      const seg = vtep?.segment(e.vni);
      if (seg !== undefined && !this.#pendingAll) this.#pending.add(`${seg.vid}/${e.mac}`);
    }
    this.#batch ??= setTimeout(() => this.#flush(), BATCH_MS);
    // Routes refused as duplicate_mac are not kept: gobgpd still holds them.
    this.#reread('evpn_duplicate_reread_failed');
  }

  /** `evpn clear-dup [MAC] [vni N]`: forgets the MAC's (every MAC's) detection state; returns the flagged ones released. */
  clearDup(mac?: string, vni?: number): { cleared: number; macs: string[] } {
    let m: number | undefined;
    if (mac !== undefined) {
      m = parseMac(mac);
      if (m < 0) throw new VswitchError('EINVAL', `evpn clear-dup: ${mac} is not a MAC`);
    }
    const es = this.dup.clear(m, vni);
    this.#dupReleased(es, 'clear');
    return { cleared: es.length, macs: es.map((e) => formatMac(e.mac)) };
  }

  /* ---------- views ---------- */

  show(): Record<string, unknown> {
    const c = this.#conf;
    if (c === undefined) return { enabled: false };
    const inFdb = remoteMacsInFdb(this.ctx.vtep(), this.#byMac.keys());
    const vnis = [...this.#plans.values()].sort((a, b) => a.vni - b.vni).map((p) => {
      const count = (type: 2 | 3, m: Map<string, Installed> | Map<string, EvpnRoute>): number => {
        let n = 0;
        for (const v of m.values()) if (v.type === type && v.vni === p.vni) n++;
        return n;
      };
      const flood: string[] = [];
      for (const fk of this.#byFlood.keys()) {
        const [v, r] = fk.split('/').map(Number);
        if (v === p.vni) flood.push(ip4Text(r));
      }
      // The first 1000 (a view, not a dump: `fdb show` has them all).
      const macs: { mac: string; remote: string; seq: number; stale: boolean }[] = [];
      const listed = new Set<number>();
      for (const rec of this.#installed.values()) {
        if (macs.length >= 1000) break;
        if (rec.type !== 2 || rec.vni !== p.vni || listed.has(rec.mac)) continue;
        listed.add(rec.mac);
        macs.push({ mac: formatMac(rec.mac), remote: ip4Text(rec.remote), seq: rec.seq, stale: rec.stale });
      }
      const local: { mac: string; ip: string; seq: number; sticky: boolean }[] = [];
      for (const r of this.#adv.values()) if (r.type === 2 && r.vni === p.vni && local.length < 1000) local.push({ mac: r.mac!, ip: r.ip ?? '', seq: r.seq, sticky: r.sticky });
      return {
        vni: p.vni, rd: p.rd, rt: p.rts,
        advertised: { type2: count(2, this.#adv), type3: count(3, this.#adv) },
        installed: { type2: count(2, this.#installed), type3: count(3, this.#installed) },
        remoteMacs: inFdb.get(p.vni) ?? 0,
        routedMacs: this.#macsPerVni.get(p.vni) ?? 0,
        arpSuppress: this.neighbours.view(p.vni),
        floodRemotes: flood.sort(),
        localRoutes: local,
        remoteMacList: macs,
        duplicates: this.dup.duplicates(p.vni).slice(0, 1000).map((e) => ({
          mac: formatMac(e.mac), moves: e.moves, detectedAt: new Date(e.detectedAt).toISOString(), lastMoveTo: e.to,
          held: this.dup.held(e.vni, e.mac, Date.now()), heldMoves: e.held,
        })),
      };
    });
    return {
      enabled: true,
      asn: c.asn,
      routerId: this.#routerId(),
      gobgpd: c.gobgpd === 'managed'
        ? { mode: 'managed', api: this.#proc?.address ?? '', pid: this.#proc?.pid ?? 0, restarts: this.#proc?.restarts ?? 0, lastExit: this.#proc?.lastExit ?? '' }
        : { mode: 'external', api: c.gobgpd.address },
      connected: this.#connected,
      ...(this.#lastError !== '' ? { error: this.#lastError } : {}),
      maxRemoteMacs: c.maxRemoteMacs,
      mobilitySeqs: this.#remoteSeq.size,
      dupDetect: { ...c.dupDetect, tracked: this.dup.size, max: this.dup.max, duplicates: this.dup.duplicates().length, detectedTotal: this.dup.detectedTotal, untracked: this.dup.untracked },
      neighbors: c.neighbors.map((n) => {
        const p = this.#peers.get(n.address);
        return { address: n.address, remoteAs: n.remoteAs, state: p?.state ?? 'unknown', received: p?.received ?? 0, advertised: p?.advertised ?? 0, gracefulRestart: p?.gr ?? null, prefixLimit: this.limits.view(n.address) ?? null };
      }),
      vnis,
      rejected: Object.fromEntries(EVPN_REJECT_REASONS.map((r, i) => [r, this.rejected[i]])),
      recentRejects: [...this.#recentRejects],
    };
  }

  /** For metrics: session up per neighbour; routes by type. */
  sessions(): { neighbor: string; up: boolean }[] {
    return (this.#conf?.neighbors ?? []).map((n) => ({ neighbor: n.address, up: this.#connected && this.#peers.get(n.address)?.state === 'established' }));
  }

  routeCounts(): { advertised: Record<2 | 3, number>; installed: Record<2 | 3, number>; macs: Map<number, number> } {
    const advertised = { 2: 0, 3: 0 };
    const installed = { 2: 0, 3: 0 };
    for (const r of this.#adv.values()) advertised[r.type]++;
    for (const r of this.#installed.values()) installed[r.type]++;
    return { advertised, installed, macs: remoteMacsInFdb(this.ctx.vtep(), this.#byMac.keys()) };
  }

  /** Routes each neighbour holds in gobgpd now (ListPeer's received; metrics). */
  neighbourReceived(address: string): number {
    return this.#peers.get(address)?.received ?? 0;
  }

  gobgpdRestarts(): number {
    return this.#proc?.restarts ?? 0;
  }
}

type Fill = (emit: (labels: Record<string, string | number>, value: number) => void) => void;
type Reg = (name: string, help: string, labels: readonly string[], fill: Fill) => void;

/** The control plane's metrics (README "EVPN"); nothing while the section is absent. */
export function evpnMetrics(evpn: () => EvpnService, gauge: Reg, counter: Reg): void {
  gauge('vswitch_evpn_session_up', '1 while the BGP session with the neighbour is established (through gobgpd), else 0.', ['neighbor'], (emit) => {
    for (const s of evpn().sessions()) emit({ neighbor: s.neighbor }, s.up ? 1 : 0);
  });
  gauge('vswitch_evpn_routes_advertised', 'EVPN routes this host advertises now, by route type (2 MAC/IP, 3 inclusive multicast).', ['type'], (emit) => {
    if (!evpn().enabled) return;
    const c = evpn().routeCounts();
    emit({ type: '2' }, c.advertised[2]);
    emit({ type: '3' }, c.advertised[3]);
  });
  gauge('vswitch_evpn_routes_installed', 'Peers\' EVPN routes installed now (MAC entries, flood-list members), by route type.', ['type'], (emit) => {
    if (!evpn().enabled) return;
    const c = evpn().routeCounts();
    emit({ type: '2' }, c.installed[2]);
    emit({ type: '3' }, c.installed[3]);
  });
  counter('vswitch_evpn_routes_received_total', 'Peers\' EVPN routes (and changes of them) received, installed or refused, by route type.', ['type'], (emit) => {
    if (!evpn().enabled) return;
    emit({ type: '2' }, evpn().received[2]);
    emit({ type: '3' }, evpn().received[3]);
  });
  gauge('vswitch_evpn_remote_macs', 'Remote MACs in the MAC table from type-2 routes, per VNI (bounded by evpn.maxRemoteMacs).', ['vni'], (emit) => {
    if (!evpn().enabled) return;
    for (const [vni, n] of evpn().routeCounts().macs) emit({ vni: String(vni) }, n);
  });
  counter('vswitch_evpn_routes_rejected_total', 'Peers\' EVPN routes refused, by reason (a closed set, README "EVPN").', ['reason'], (emit) => {
    if (!evpn().enabled) return;
    EVPN_REJECT_REASONS.forEach((r, i) => emit({ reason: r }, evpn().rejected[i]));
  });
  arpSuppressMetrics(() => (evpn().enabled ? evpn().neighbours : undefined), gauge, counter);
  gauge('vswitch_evpn_duplicate_macs', 'MACs flagged as duplicates now (moved evpn.dupDetect.maxMoves times within windowSeconds), per VNI.', ['vni'], (emit) => {
    if (!evpn().enabled) return;
    const per = new Map<number, number>();
    for (const e of evpn().dup.duplicates()) per.set(e.vni, (per.get(e.vni) ?? 0) + 1);
    for (const [vni, n] of per) emit({ vni: String(vni) }, n);
  });
  counter('vswitch_evpn_duplicate_macs_detected_total', 'MACs flagged as duplicates (RFC 7432 §15.1), since start.', [], (emit) => {
    if (evpn().enabled) emit({}, evpn().dup.detectedTotal);
  });
  counter('vswitch_evpn_duplicate_untracked_total', 'MAC moves not tracked for duplicate detection: its table was full.', [], (emit) => {
    if (evpn().enabled) emit({}, evpn().dup.untracked);
  });
  prefixLimitMetrics(() => (evpn().enabled ? evpn() : undefined), gauge, counter);
  counter('vswitch_evpn_gobgpd_restarts_total', 'Times the managed gobgpd exited and was restarted.', [], (emit) => {
    if (evpn().enabled) emit({}, evpn().gobgpdRestarts());
  });
}
