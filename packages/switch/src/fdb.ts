/*
 * The MAC table (forwarding database) of one bridge.
 *
 * What it maps: (VID, MAC) -> port id. Port ids are opaque small integers; the
 * table never touches port I/O, so it is tested with plain numbers and a fake clock.
 *
 * Learning: the caller learns only after VLAN admission and only from valid
 * unicast source MACs. `learn` returns what changed (NEW, REFRESHED, MOVED) or why
 * it refused (a negative code) so the caller can count and drop.
 *
 * Ageing: a dynamic entry not refreshed for `ageingMs` is removed by `expire(now)`,
 * which the bridge calls once a second (Linux and OVS default: 300 s). Ageing 0
 * disables learning: every unicast frame floods, the bridge behaves as a hub.
 * expire() costs what it ages, not the table's size (see "The ageing list").
 *
 * Static entries (`fdb add`) never age, are never evicted, and never move: a frame
 * from another port with that source MAC is refused (STATIC_CONFLICT), which is what
 * an operator pinning a MAC means. They do not count towards limits.
 *
 * Limits, and why this policy:
 * - Bridge-wide `maxEntries` (default 8192, as OVS). When full, a new MAC evicts the
 *   oldest-learned dynamic entry of the port that holds the most dynamic entries
 *   (OVS's "fair" eviction). A guest flooding random source MACs thereby evicts its
 *   own entries, not its neighbours': the neighbours' traffic keeps being unicast
 *   instead of being flooded to the attacker, which is the goal of a MAC flood.
 *   "Oldest-learned": a refresh does not make an entry younger; a move makes it the
 *   newest of its new port. Of ports holding equally many, the one that first held
 *   a dynamic entry loses. Each port keeps its dynamic entries on a list in learning
 *   order, and the ports sit in a binary heap by count, as OVS keeps per-port lists
 *   and a heap of ports by entry count (its lists are by last use; ours stay by
 *   learning, which is what this table has always done and its tests pin): the
 *   victim is the head of the top port's list, found without looking at other
 *   ports; the heap is re-ordered (O(log ports)) when a port gains or loses an
 *   entry, never on a refresh.
 * - Optional per-port `limit` (0 = none): a port at its limit cannot add a new MAC
 *   (nor move one in); the caller drops such frames ('port_mac_limit'), as port
 *   security's "restrict" mode does. Refreshing existing entries is unaffected.
 *
 * Moves: a MAC seen on another port is re-pointed (a VM migrated, or a cable moved)
 * and counted in `moved`. Each move also updates the entry's flap record, for loop
 * detection (loop.ts): `home`, the last port the MAC stayed on for FLAP_WINDOW_MS
 * without moving, and `flaps`, its moves in a window of FLAP_WINDOW_MS opened by
 * the first of them (windows opened before `flapEpoch` are void: the bridge sets it
 * when it blocks a port, so MACs that flapped through that loop start counting
 * anew). The move just made is left in `lastMove` (plain numbers, nothing
 * allocated): only moves pay for this, never a frame of a MAC that stays put.
 *
 * Bound MACs (`boundElsewhere`, set by the bridge): a MAC that another live port
 * holds by a binding (a DHCP lease or a configured binding of a guarded port,
 * guard.ts MacOwners) is neither learned nor moved in from any other port
 * (REFUSED_BOUND): otherwise one frame with a neighbour's MAC as its source (a DHCP
 * DISCOVER from 0.0.0.0, an IPv6 frame: what the IP source guard lets through)
 * would steal the neighbour's traffic until it sent again. Asked only when a frame
 * would add or move an entry, never on a refresh.
 *
 * Layout, and why: per VLAN, a Map keyed by a 30-bit small integer (a Smi) mixed
 * from the MAC's two 24-bit halves (`keyOf`), whose value heads a chain of the
 * entries with that key (`chain`; two MACs share a key with odds ~1e-9 per pair,
 * so chains are almost always one entry long). A 48-bit MAC as a Map key is a double, not a Smi:
 * V8 boxes it in a 16-byte HeapNumber on every get, two per frame (learn, then
 * lookup), which was all the forwarding path allocated. Here the MAC is split into
 * its halves as soon as it arrives and only Smis go further, so the table
 * allocates nothing per frame. The mix is seeded per process: with the key a fixed
 * function of the MAC (say its low 24 bits), a guest could flood source MACs that
 * all share one key and make every learn walk a chain thousands of entries long.
 * Chosen over a Map per VLAN keyed by the low half holding Maps keyed by the high
 * half (two gets per lookup and a Map per entry: in a micro-benchmark of the bare
 * layouts with 100,000 MACs, 260 vs 107 ns per random lookup, 301 vs 117 bytes per
 * entry).
 *
 * The callers' side: `lookup(vid, mac)` and `learn(vid, mac, ...)` take the MAC
 * as a number (a double), and a double passed to a call that the caller's
 * optimizer does not inline is boxed at the call; V8 decides that by a bytecode
 * budget per optimized function, so it varies with the caller's size and history.
 * `lookupAt` and `learnAt` read the MAC from the frame instead and box nothing
 * either way. Measured (bench/scale/fdb-alloc.mjs, bench/README.md "Allocation
 * check"): the bridge pipeline 32 bytes per frame before; 0 to 32 after, by run,
 * with lookup/learn; 0 with lookupAt/learnAt.
 *
 * The ageing list, and why this way: every dynamic entry is on one doubly linked
 * list (links in the entry: nothing is allocated to keep it) ordered by `filed`,
 * the second (counted from the table's first filing) in which the entry took its
 * place: learned, moved, or re-filed by a refresh. Invariants: `filed` never
 * decreases along the list, and the start of an entry's `filed` second is no later
 * than its `updated`. So every entry with updated <= deadline was filed in or
 * before the deadline's second and lies in the list's head; expire() walks from
 * the oldest end and stops at the first entry filed after that second. It ages
 * what is due and passes over the live entries it meets: those filed in the
 * deadline's second, and those refreshed within #refileMs of their filing (below).
 * Open vSwitch moves an entry to the list's tail on every update (lib/mac-learning.c),
 * which is fine where learning runs per flow setup; here it runs per frame, and a
 * move touches two other entries (two cache misses in a large table). So a refresh
 * only writes `updated`, and moves the entry to the newest end only when it was
 * filed #refileMs (1/16 of the ageing time, at least 1 s) ago or more: at most once
 * per 19 s for a MAC that sends steadily, with the default 300 s. The price: an entry
 * refreshed within #refileMs of its filing and then silent is passed over by the
 * sweeps of the last #refileMs of its life (about 19 with the defaults). Frames of
 * several ports carry their own read times and are not handled exactly in that order,
 * so `now` can step back a little: filing then goes in after the last entry filed in
 * the same second or before (a short walk back), and a refresh older than the entry's
 * filing re-files it, which keeps both invariants for any clock; ageing stays exact
 * to the millisecond (fdb.lru.test.ts checks it against a plain full-scan model).
 * `filed` is a small integer so it sits in the entry: a double would be a separate
 * box, one more cache miss per refresh.
 *
 * Remote entries (`addStatic(..., remote = true)`: MACs a control plane, EVPN,
 * says are behind a remote VTEP) are static entries with one difference: a frame
 * from a port that is not on the overlay (`overlayPort` false) replaces them with a
 * dynamic entry (Learn.NEW) instead of being refused, because a MAC the fabric
 * placed elsewhere that now sends from a local port has moved here (RFC 7432 §15
 * MAC mobility); from the overlay they are refused as static entries are.
 *
 * Change listener (`onChange`): called when an entry is added (learned or static),
 * moved, or removed (aged, evicted, flushed, deleted, replaced), with the entry and
 * what happened (FdbChange). Only those slow paths call it, never a refresh, and
 * unset it costs one comparison there: a control plane batches what it hears.
 *
 * Cost: lookup is one Map.get with a Smi key on a per-VLAN map and one or two
 * compares; a refresh adds a write and a compare of `filed`, and a move on the
 * ageing list at most once per #refileMs; no allocation in the table. An entry
 * object is allocated only when a MAC is first learned. expire() is O(what it
 * examines), eviction O(log ports).
 */

import { readMac } from './wire/ethernet.js';

export const FDB_DEFAULTS = Object.freeze({ ageingSec: 300, maxEntries: 8192 });
export const FDB_LIMITS = Object.freeze({ ageingSecMax: 1_000_000, maxEntriesMin: 1, maxEntriesMax: 1_000_000 });

export const Learn = Object.freeze({
  REFRESHED: 0,
  NEW: 1,
  MOVED: 2,
  REFUSED_PORT_LIMIT: -1,
  REFUSED_STATIC: -2,
  REFUSED_FULL: -3,
  DISABLED: -4,
  REFUSED_BOUND: -5,
});

/** What `onChange` reports. */
export const FdbChange = Object.freeze({ ADDED: 1, MOVED: 2, REMOVED: 3 });

/** The window in which a MAC's moves are counted, and how long it must stay on a port for that port to be its home. */
export const FLAP_WINDOW_MS = 1000;

/** The move learn() just made (Learn.MOVED): what loop detection reads. */
export interface LastMove {
  /** The port the MAC left, and its home (see the module comment). */
  from: number;
  home: number;
  /** Moves in the entry's current window, this one included. */
  flaps: number;
}

export interface FdbEntry {
  readonly vid: number;
  readonly mac: number;
  port: number;
  /** Time of the last frame from this MAC, in ms of the bridge clock. */
  updated: number;
  readonly isStatic: boolean;
  /** A static entry a control plane installed (see "Remote entries"). */
  readonly remote: boolean;
}

export interface FdbCounters {
  learned: number;
  moved: number;
  aged: number;
  evicted: number;
  refusedPortLimit: number;
  refusedStatic: number;
  refusedFull: number;
  /** New or moving MACs refused because another live port holds them by a binding. */
  refusedBound: number;
}

/**
 * The table's entry: an FdbEntry with its MAC split into two small integers, and
 * its links. V8 lays fields out in the order they are defined (parameter
 * properties first, in order): the ones a frame reads (lo, hi, port, updated,
 * filed) come first, side by side, and the list links, which only learning,
 * moves and the sweep touch, last.
 */
class Node implements FdbEntry {
  /** The next entry of this VLAN with the same key (rare: keys collide with odds ~1e-9 per pair). */
  chain: Node | undefined = undefined;
  /** Neighbours on the ageing list (dynamic entries only). */
  older: Node | undefined = undefined;
  newer: Node | undefined = undefined;
  /** Neighbours on its port's list (dynamic entries only). */
  portOlder: Node | undefined = undefined;
  portNewer: Node | undefined = undefined;
  /** The flap record (moves only): home port, time of the last move, start and count of the window. */
  home: number;
  movedAt = Number.NEGATIVE_INFINITY;
  flapSince = Number.NEGATIVE_INFINITY;
  flaps = 0;

  constructor(
    /** The MAC's low and high 24 bits. */
    readonly lo: number,
    readonly hi: number,
    public port: number,
    public updated: number,
    /**
     * The second (of the table's epoch) in which the entry took its place on the
     * ageing list; its start is <= updated. A small integer, so it sits in the entry
     * itself: a double would be a separate box, one more cache miss per refresh.
     */
    public filed: number,
    readonly vid: number,
    readonly mac: number,
    readonly isStatic: boolean,
    readonly remote = false,
  ) {
    this.home = port;
  }
}

// The MAC as two small integers: its low and high 24 bits.
const LO = 0xffffff;
const HI = 0x1000000;

/** The least time an entry stays where it was filed before a refresh moves it (see refileMs). */
const REFILE_MIN_MS = 1000;

// Per-process seeds of the key mix (so no one can pick MACs that share a key).
const SEED_LO = (Math.random() * 0x100000000) | 0;
const SEED_HI = (Math.random() * 0x100000000) | 0;

/**
 * The Map key of a MAC given as its low and high 24 bits: a small integer in
 * [0, 2^30), a Smi on every V8 build (31-bit Smis under pointer compression), so
 * Map.get boxes nothing. Each half is multiplied by an odd constant after a
 * seeded xor, and the top 30 bits of their xor are kept (a product's low bits
 * depend only on its inputs' low bits).
 */
function keyOf(lo: number, hi: number): number {
  return (Math.imul(lo ^ SEED_LO, 0x9e3779b1) ^ Math.imul(hi ^ SEED_HI, 0x85ebca6b)) >>> 2;
}

/** The entry for (lo, hi) in one VLAN's map, if any. Takes Smis only: a call that is not inlined boxes nothing. */
function find(t: Map<number, Node> | undefined, lo: number, hi: number): Node | undefined {
  if (t === undefined) return undefined;
  let e = t.get(keyOf(lo, hi));
  while (e !== undefined && (e.lo !== lo || e.hi !== hi)) e = e.chain;
  return e;
}

export class Fdb {
  /** Per VID: key (keyOf) -> the first entry with that key; the others chain through `chain`. */
  #byVid: (Map<number, Node> | undefined)[] = new Array(4096);
  /** The ageing list: every dynamic entry, by `filed`, oldest first (see the module comment). */
  #oldest: Node | undefined = undefined;
  #newest: Node | undefined = undefined;
  /** Each port's dynamic entries in learning order, by port id; records are kept for good (see PortMacs.seq). */
  #ports = new Map<number, PortMacs>();
  /** The records of #ports as a binary heap, busiest first (`busier`): the eviction choice. */
  #heap: PortMacs[] = [];
  #portLimit = new Map<number, number>();
  #size = 0;
  #staticCount = 0;
  #ageingMs: number;
  #refileMs: number;
  /** The clock's value at the table's first filing; `filed` counts seconds from it. */
  #epoch = Number.NaN;
  #maxEntries: number;
  #sweepVisited = 0;
  readonly counters: FdbCounters = {
    learned: 0, moved: 0, aged: 0, evicted: 0, refusedPortLimit: 0, refusedStatic: 0, refusedFull: 0, refusedBound: 0,
  };
  /** The last move (valid right after learn() returned Learn.MOVED). */
  readonly lastMove: LastMove = { from: -1, home: -1, flaps: 0 };
  /** Flap windows opened before this time are void (see "Moves"). */
  flapEpoch = Number.NEGATIVE_INFINITY;
  /** Does another live port than `port` hold `mac` by a binding? (see "Bound MACs"; unset: none do) */
  boundElsewhere: ((mac: number, port: number) => boolean) | undefined = undefined;
  /** Is `port` on the overlay (a tunnel)? Asked only when a frame meets a remote entry (unset: none is). */
  overlayPort: ((port: number) => boolean) | undefined = undefined;
  /** See "Change listener". */
  onChange: ((e: FdbEntry, how: number) => void) | undefined = undefined;
  /**
   * Bumped by every change but a refresh (an entry added, moved or removed; ageing,
   * size and port limits set): the flow cache's generation (flow-cache.ts), which the
   * bridge points at the backend's memory while its cache is on.
   */
  stamp: Float64Array = new Float64Array(1);

  constructor(opts: { ageingSec?: number; maxEntries?: number } = {}) {
    this.#ageingMs = clampAgeing(opts.ageingSec ?? FDB_DEFAULTS.ageingSec) * 1000;
    this.#refileMs = refileMs(this.#ageingMs);
    this.#maxEntries = clampMax(opts.maxEntries ?? FDB_DEFAULTS.maxEntries);
  }

  get size(): number { return this.#size; }
  get ageingSec(): number { return this.#ageingMs / 1000; }
  get maxEntries(): number { return this.#maxEntries; }
  /** How many entries the last expire() examined: those it aged and those it passed over (seen since they were filed). */
  get sweepVisited(): number { return this.#sweepVisited; }

  /** Returns the applied (clamped) value. Existing entries keep their last-seen time. */
  setAgeing(sec: number): number {
    this.stamp[0]++;
    this.#ageingMs = clampAgeing(sec) * 1000;
    this.#refileMs = refileMs(this.#ageingMs);
    return this.#ageingMs / 1000;
  }

  setMaxEntries(n: number): number {
    this.stamp[0]++;
    this.#maxEntries = clampMax(n);
    while (this.#size - this.#staticCount > this.#maxEntries && this.#evictOne()) { /* shrink */ }
    return this.#maxEntries;
  }

  /** Per-port dynamic MAC limit; 0 removes it. */
  setPortLimit(port: number, limit: number): void {
    this.stamp[0]++;
    if (limit > 0) this.#portLimit.set(port, limit);
    else this.#portLimit.delete(port);
  }

  portLimit(port: number): number { return this.#portLimit.get(port) ?? 0; }
  portCount(port: number): number { return this.#ports.get(port)?.count ?? 0; }

  /** The port for (vid, mac), or -1. Callers do not look up group addresses. */
  lookup(vid: number, mac: number): number {
    // Per frame. The MAC (a double) is split into Smis at once and passed on as
    // such: a double passed to a call that is not inlined is boxed, 16 bytes.
    const e = find(this.#byVid[vid], mac & LO, (mac / HI) | 0);
    return e === undefined ? -1 : e.port;
  }

  get(vid: number, mac: number): FdbEntry | undefined {
    const e = find(this.#byVid[vid], mac & LO, (mac / HI) | 0);
    // The halves of a number that is not a MAC (-1, 2^48, 1.5) name some MAC: not this one.
    return e !== undefined && e.mac === mac ? e : undefined;
  }

  learn(vid: number, mac: number, port: number, now: number): number {
    // Per frame: as lookup, and the refresh is done here; the rest is #learnSlow.
    const e = find(this.#byVid[vid], mac & LO, (mac / HI) | 0);
    if (e !== undefined && e.port === port) {
      this.#refresh(e, now);
      return Learn.REFRESHED;
    }
    return this.#learnSlow(vid, mac, port, now, e);
  }

  /**
   * lookup() of the MAC at buf[off..off+6) (a frame's destination: off is the
   * frame's start). Nothing on this path is a double, so nothing is boxed even
   * when the caller's optimizer does not inline the call; lookup(vid, mac) boxes
   * `mac` in that case (16 bytes), which happens when the caller has used up its
   * inlining budget.
   */
  lookupAt(vid: number, buf: Uint8Array, off: number): number {
    const e = find(this.#byVid[vid], (buf[off + 3] << 16) | (buf[off + 4] << 8) | buf[off + 5],
      (buf[off] << 16) | (buf[off + 1] << 8) | buf[off + 2]);
    return e === undefined ? -1 : e.port;
  }

  /** learn() of the MAC at buf[off..off+6) (a frame's source: off is the frame's start + 6); see lookupAt. */
  learnAt(vid: number, buf: Uint8Array, off: number, port: number, now: number): number {
    const e = find(this.#byVid[vid], (buf[off + 3] << 16) | (buf[off + 4] << 8) | buf[off + 5],
      (buf[off] << 16) | (buf[off + 1] << 8) | buf[off + 2]);
    if (e !== undefined && e.port === port) {
      this.#refresh(e, now);
      return Learn.REFRESHED;
    }
    return this.#learnSlow(vid, readMac(buf, off), port, now, e);
  }

  /**
   * A refresh the flow cache replayed (flow-cache.ts): as learn's REFRESHED at `at`,
   * if (vid, mac) is still an entry on `port`, and never back in time (a frame
   * the pipeline saw may have refreshed it later). False when there was nothing to do.
   */
  refreshAt(vid: number, mac: number, port: number, at: number): boolean {
    const e = find(this.#byVid[vid], mac & LO, (mac / HI) | 0);
    if (e === undefined || e.mac !== mac || e.port !== port || at <= e.updated) return false;
    this.#refresh(e, at);
    return true;
  }

  /** Adds or replaces a static entry (`remote`: see "Remote entries"). Static entries are not bounded by maxEntries. */
  addStatic(vid: number, mac: number, port: number, remote = false): void {
    if (!Number.isInteger(mac) || mac < 0 || mac > 0xffffffffffff) throw new RangeError(`not a 48-bit MAC: ${mac}`);
    const old = this.get(vid, mac) as Node | undefined;
    if (old !== undefined) this.#remove(old);
    const e = new Node(mac & LO, (mac / HI) | 0, port, 0, 0, vid, mac, true, remote);
    this.#insert(e);
    this.#staticCount++;
    this.onChange?.(e, FdbChange.ADDED);
  }

  /** Removes the entry for (vid, mac), static or dynamic. Returns whether one existed. */
  delete(vid: number, mac: number): boolean {
    const e = this.get(vid, mac) as Node | undefined;
    if (e === undefined) return false;
    this.#remove(e);
    return true;
  }

  /**
   * Removes expired dynamic entries; returns how many. Walks the ageing list from
   * its oldest end and stops at the first entry filed after the deadline: no
   * entry behind it can be older (the module comment says why).
   */
  expire(now: number): number {
    const deadline = now - this.#ageingMs;
    const last = Math.floor((deadline - this.#epoch) / 1000); // the last second whose filings may be due
    let n = 0;
    let visited = 0;
    let e = this.#oldest;
    while (e !== undefined && e.filed <= last) {
      const next = e.newer;
      visited++;
      if (e.updated <= deadline) {
        this.#remove(e);
        n++;
      }
      e = next;
    }
    this.#sweepVisited = visited;
    this.counters.aged += n;
    return n;
  }

  /**
   * Forgets a port's entries: dynamic ones when it goes down, all when it is removed
   * (as Linux does on link down / port deletion). `vid` restricts it to one VLAN.
   */
  flushPort(port: number, opts: { includeStatic?: boolean; vid?: number } = {}): number {
    let n = 0;
    const p = this.#ports.get(port);
    for (let e = p?.oldest; e !== undefined;) {
      const next = e.portNewer;
      if (opts.vid === undefined || e.vid === opts.vid) {
        this.#remove(e);
        n++;
      }
      e = next;
    }
    // Static entries are on no list: only a walk of the table finds them.
    if (opts.includeStatic && this.#staticCount > 0) {
      for (const e of this.#nodes()) {
        if (!e.isStatic || e.port !== port) continue;
        if (opts.vid !== undefined && e.vid !== opts.vid) continue;
        this.#remove(e);
        n++;
      }
    }
    return n;
  }

  /** Every entry (a snapshot, safe to modify the table while iterating). */
  entries(): FdbEntry[] {
    return this.#nodes();
  }

  #nodes(): Node[] {
    const out: Node[] = [];
    for (const t of this.#byVid) {
      if (t === undefined) continue;
      for (const head of t.values()) for (let e: Node | undefined = head; e !== undefined; e = e.chain) out.push(e);
    }
    return out;
  }

  /**
   * A frame from a known MAC on its own port. Per frame, so it writes `updated`
   * and moves the entry on the ageing list only when it was filed #refileMs ago
   * or more, or the clock stepped back past its filing (filed <= updated must hold).
   */
  #refresh(e: Node, now: number): void {
    e.updated = now;
    const age = now - this.#epoch - e.filed * 1000;
    if ((age >= this.#refileMs || age < 0) && !e.isStatic) {
      this.#unfile(e);
      this.#file(e, now);
    }
  }

  /** learn() for a MAC that is new, or seen on another port than its entry's. */
  #learnSlow(vid: number, mac: number, port: number, now: number, e: Node | undefined): number {
    if (e !== undefined && e.remote && !(this.overlayPort?.(port) ?? false)) {
      // A remote MAC now local: it moved here; learned anew below.
      this.#remove(e);
      e = undefined;
    }
    if (e !== undefined) {
      if (e.isStatic) {
        this.counters.refusedStatic++;
        return Learn.REFUSED_STATIC;
      }
      if (this.#bound(mac, port)) return Learn.REFUSED_BOUND;
      if (this.#atPortLimit(port)) {
        this.counters.refusedPortLimit++;
        return Learn.REFUSED_PORT_LIMIT;
      }
      this.stamp[0]++;
      this.#flapped(e, now);
      this.#leavePort(e);
      e.port = port;
      e.updated = now;
      this.#joinPort(e);
      this.#unfile(e);
      this.#file(e, now);
      this.counters.moved++;
      this.onChange?.(e, FdbChange.MOVED);
      return Learn.MOVED;
    }
    if (this.#ageingMs === 0) return Learn.DISABLED;
    if (this.#bound(mac, port)) return Learn.REFUSED_BOUND;
    if (this.#atPortLimit(port)) {
      this.counters.refusedPortLimit++;
      return Learn.REFUSED_PORT_LIMIT;
    }
    if (this.#size - this.#staticCount >= this.#maxEntries && !this.#evictOne()) {
      this.counters.refusedFull++;
      return Learn.REFUSED_FULL;
    }
    const entry = new Node(mac & LO, (mac / HI) | 0, port, now, 0, vid, mac, false);
    this.#insert(entry);
    this.#joinPort(entry);
    this.#file(entry, now);
    this.counters.learned++;
    this.onChange?.(entry, FdbChange.ADDED);
    return Learn.NEW;
  }

  /** Updates the entry's flap record for the move it is about to make and leaves it in lastMove. */
  #flapped(e: Node, now: number): void {
    if (now - e.movedAt >= FLAP_WINDOW_MS) e.home = e.port;
    if (now - e.flapSince >= FLAP_WINDOW_MS || e.flapSince < this.flapEpoch) {
      e.flapSince = now;
      e.flaps = 0;
    }
    e.flaps++;
    e.movedAt = now;
    const m = this.lastMove;
    m.from = e.port;
    m.home = e.home;
    m.flaps = e.flaps;
  }

  #bound(mac: number, port: number): boolean {
    const f = this.boundElsewhere;
    if (f === undefined || !f(mac, port)) return false;
    this.counters.refusedBound++;
    return true;
  }

  /** Links a new entry (whose (vid, mac) is not in the table) at the head of its key's chain. */
  #insert(e: Node): void {
    this.stamp[0]++;
    let t = this.#byVid[e.vid];
    if (t === undefined) t = this.#byVid[e.vid] = new Map();
    const key = keyOf(e.lo, e.hi);
    e.chain = t.get(key);
    t.set(key, e);
    this.#size++;
  }

  #atPortLimit(port: number): boolean {
    const limit = this.#portLimit.get(port);
    return limit !== undefined && this.portCount(port) >= limit;
  }

  #remove(e: Node): void {
    this.stamp[0]++;
    const t = this.#byVid[e.vid];
    if (t === undefined) return;
    const key = keyOf(e.lo, e.hi);
    const head = t.get(key);
    if (head === e) {
      if (e.chain === undefined) t.delete(key);
      else t.set(key, e.chain);
    } else {
      let p = head;
      while (p !== undefined && p.chain !== e) p = p.chain;
      if (p === undefined) return; // not in the table (already removed)
      p.chain = e.chain;
    }
    e.chain = undefined;
    if (t.size === 0) this.#byVid[e.vid] = undefined;
    this.#size--;
    if (e.isStatic) {
      this.#staticCount--;
    } else {
      this.#unfile(e);
      this.#leavePort(e);
    }
    this.onChange?.(e, FdbChange.REMOVED);
  }

  /** Evicts the oldest-learned dynamic entry of the port holding the most. */
  #evictOne(): boolean {
    const busiest = this.#heap[0];
    if (busiest === undefined || busiest.oldest === undefined) return false;
    this.#remove(busiest.oldest);
    this.counters.evicted++;
    return true;
  }

  // ---- the ageing list ----

  /**
   * Links `e` into the ageing list, filed at `now`: at the newest end, or, when the
   * clock has stepped back (frames of several ports are not handled exactly in the
   * order they were read), after the last entry filed no later than `now`.
   */
  #file(e: Node, now: number): void {
    if (this.#oldest === undefined) this.#epoch = now;
    const sec = Math.floor((now - this.#epoch) / 1000);
    e.filed = sec;
    let before = this.#newest;
    while (before !== undefined && before.filed > sec) before = before.older;
    const after = before === undefined ? this.#oldest : before.newer;
    e.older = before;
    e.newer = after;
    if (before === undefined) this.#oldest = e;
    else before.newer = e;
    if (after === undefined) this.#newest = e;
    else after.older = e;
  }

  /**
   * The port lists are linked the same way, through their own fields, in #joinPort
   * and #leavePort. One pair of functions taking the link fields' names served both
   * lists in a trial, and re-filing measured 1.45x slower (keyed property access).
   */
  #unfile(e: Node): void {
    const { older, newer } = e;
    if (older === undefined) this.#oldest = newer;
    else older.newer = newer;
    if (newer === undefined) this.#newest = older;
    else newer.older = older;
    e.older = e.newer = undefined;
  }

  // ---- the per-port lists and the heap of ports ----

  /** Appends a dynamic entry to its port's list (it is that port's newest-learned). */
  #joinPort(e: Node): void {
    let p = this.#ports.get(e.port);
    if (p === undefined) {
      p = new PortMacs(this.#ports.size, this.#heap.length);
      this.#ports.set(e.port, p);
      this.#heap.push(p);
    }
    e.portOlder = p.newest;
    e.portNewer = undefined;
    if (p.newest === undefined) p.oldest = e;
    else p.newest.portNewer = e;
    p.newest = e;
    p.count++;
    this.#reheap(p);
  }

  #leavePort(e: Node): void {
    const p = this.#ports.get(e.port);
    if (p === undefined) return;
    const { portOlder, portNewer } = e;
    if (portOlder === undefined) p.oldest = portNewer;
    else portOlder.portNewer = portNewer;
    if (portNewer === undefined) p.newest = portOlder;
    else portNewer.portOlder = portOlder;
    e.portOlder = e.portNewer = undefined;
    p.count--;
    this.#reheap(p);
  }

  /** Moves p to its place in the heap of ports after its count changed by one, either way. */
  #reheap(p: PortMacs): void {
    const h = this.#heap;
    let i = p.heapAt;
    for (;;) {
      // Up past a parent it is now busier than, else down past its busiest child if that is busier.
      let next = -1;
      if (i > 0 && busier(p, h[(i - 1) >> 1])) {
        next = (i - 1) >> 1;
      } else {
        let c = 2 * i + 1;
        if (c + 1 < h.length && busier(h[c + 1], h[c])) c++;
        if (c < h.length && busier(h[c], p)) next = c;
      }
      if (next < 0) break;
      h[i] = h[next];
      h[i].heapAt = i;
      i = next;
    }
    h[i] = p;
    p.heapAt = i;
  }
}

/** One port's dynamic entries, oldest-learned first, and its place in the heap of ports. */
class PortMacs {
  oldest: Node | undefined = undefined;
  newest: Node | undefined = undefined;
  count = 0;
  constructor(
    /** Order of first learning on this port: breaks ties, as the earlier scan of ports in insertion order did. */
    readonly seq: number,
    public heapAt: number,
  ) {}
}

/** The eviction order of ports: more dynamic entries first; of equal ones, the port recorded first. */
function busier(a: PortMacs, b: PortMacs): boolean {
  return a.count > b.count || (a.count === b.count && a.seq < b.seq);
}

/** How long a refreshed entry stays where it was filed on the ageing list (see the module comment). */
function refileMs(ageingMs: number): number {
  return Math.max(REFILE_MIN_MS, ageingMs / 16);
}

function clampAgeing(sec: number): number {
  if (!Number.isFinite(sec) || sec < 0) return FDB_DEFAULTS.ageingSec;
  return Math.min(Math.round(sec), FDB_LIMITS.ageingSecMax);
}

function clampMax(n: number): number {
  if (!Number.isFinite(n)) return FDB_DEFAULTS.maxEntries;
  return Math.max(FDB_LIMITS.maxEntriesMin, Math.min(Math.round(n), FDB_LIMITS.maxEntriesMax));
}
