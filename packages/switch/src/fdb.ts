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
 * - Optional per-port `limit` (0 = none): a port at its limit cannot add a new MAC
 *   (nor move one in); the caller drops such frames ('port_mac_limit'), as port
 *   security's "restrict" mode does. Refreshing existing entries is unaffected.
 *
 * Moves: a MAC seen on another port is re-pointed (a VM migrated, or a cable moved)
 * and counted in `moved`.
 *
 * Cost: lookup and refresh are one Map.get on a per-VLAN map, no allocation. An
 * entry object is allocated only when a MAC is first learned.
 */

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
});

export interface FdbEntry {
  readonly vid: number;
  readonly mac: number;
  port: number;
  /** Time of the last frame from this MAC, in ms of the bridge clock. */
  updated: number;
  readonly isStatic: boolean;
}

export interface FdbCounters {
  learned: number;
  moved: number;
  aged: number;
  evicted: number;
  refusedPortLimit: number;
  refusedStatic: number;
  refusedFull: number;
}

export class Fdb {
  #byVid: (Map<number, FdbEntry> | undefined)[] = new Array(4096);
  /** Dynamic entries of each port, in learning order (oldest first): eviction and per-port counts. */
  #dynamicByPort = new Map<number, Set<FdbEntry>>();
  #portLimit = new Map<number, number>();
  #size = 0;
  #staticCount = 0;
  #ageingMs: number;
  #maxEntries: number;
  readonly counters: FdbCounters = {
    learned: 0, moved: 0, aged: 0, evicted: 0, refusedPortLimit: 0, refusedStatic: 0, refusedFull: 0,
  };

  constructor(opts: { ageingSec?: number; maxEntries?: number } = {}) {
    this.#ageingMs = clampAgeing(opts.ageingSec ?? FDB_DEFAULTS.ageingSec) * 1000;
    this.#maxEntries = clampMax(opts.maxEntries ?? FDB_DEFAULTS.maxEntries);
  }

  get size(): number { return this.#size; }
  get ageingSec(): number { return this.#ageingMs / 1000; }
  get maxEntries(): number { return this.#maxEntries; }

  /** Returns the applied (clamped) value. Existing entries keep their last-seen time. */
  setAgeing(sec: number): number {
    this.#ageingMs = clampAgeing(sec) * 1000;
    return this.#ageingMs / 1000;
  }

  setMaxEntries(n: number): number {
    this.#maxEntries = clampMax(n);
    while (this.#size - this.#staticCount > this.#maxEntries && this.#evictOne()) { /* shrink */ }
    return this.#maxEntries;
  }

  /** Per-port dynamic MAC limit; 0 removes it. */
  setPortLimit(port: number, limit: number): void {
    if (limit > 0) this.#portLimit.set(port, limit);
    else this.#portLimit.delete(port);
  }

  portLimit(port: number): number { return this.#portLimit.get(port) ?? 0; }
  portCount(port: number): number { return this.#dynamicByPort.get(port)?.size ?? 0; }

  /** The port for (vid, mac), or -1. Callers do not look up group addresses. */
  lookup(vid: number, mac: number): number {
    const t = this.#byVid[vid];
    if (t === undefined) return -1;
    const e = t.get(mac);
    return e === undefined ? -1 : e.port;
  }

  get(vid: number, mac: number): FdbEntry | undefined {
    return this.#byVid[vid]?.get(mac);
  }

  learn(vid: number, mac: number, port: number, now: number): number {
    let t = this.#byVid[vid];
    const e = t?.get(mac);
    if (e !== undefined) {
      if (e.port === port) {
        e.updated = now;
        return Learn.REFRESHED;
      }
      if (e.isStatic) {
        this.counters.refusedStatic++;
        return Learn.REFUSED_STATIC;
      }
      if (this.#atPortLimit(port)) {
        this.counters.refusedPortLimit++;
        return Learn.REFUSED_PORT_LIMIT;
      }
      this.#dynamicByPort.get(e.port)?.delete(e);
      e.port = port;
      e.updated = now;
      this.#portSet(port).add(e);
      this.counters.moved++;
      return Learn.MOVED;
    }
    if (this.#ageingMs === 0) return Learn.DISABLED;
    if (this.#atPortLimit(port)) {
      this.counters.refusedPortLimit++;
      return Learn.REFUSED_PORT_LIMIT;
    }
    if (this.#size - this.#staticCount >= this.#maxEntries && !this.#evictOne()) {
      this.counters.refusedFull++;
      return Learn.REFUSED_FULL;
    }
    // Re-read: eviction may have emptied (and dropped) this VLAN's map.
    t = this.#byVid[vid];
    if (t === undefined) t = this.#byVid[vid] = new Map();
    const entry: FdbEntry = { vid, mac, port, updated: now, isStatic: false };
    t.set(mac, entry);
    this.#portSet(port).add(entry);
    this.#size++;
    this.counters.learned++;
    return Learn.NEW;
  }

  /** Adds or replaces a static entry. Static entries are not bounded by maxEntries. */
  addStatic(vid: number, mac: number, port: number): void {
    const old = this.#byVid[vid]?.get(mac);
    if (old !== undefined) this.#remove(old);
    let t = this.#byVid[vid];
    if (t === undefined) t = this.#byVid[vid] = new Map();
    t.set(mac, { vid, mac, port, updated: 0, isStatic: true });
    this.#size++;
    this.#staticCount++;
  }

  /** Removes the entry for (vid, mac), static or dynamic. Returns whether one existed. */
  delete(vid: number, mac: number): boolean {
    const e = this.#byVid[vid]?.get(mac);
    if (e === undefined) return false;
    this.#remove(e);
    return true;
  }

  /** Removes expired dynamic entries; returns how many. */
  expire(now: number): number {
    if (this.#size === this.#staticCount) return 0;
    const deadline = now - this.#ageingMs;
    let n = 0;
    for (const set of this.#dynamicByPort.values()) {
      for (const e of set) {
        if (e.updated <= deadline) {
          this.#remove(e);
          n++;
        }
      }
    }
    this.counters.aged += n;
    return n;
  }

  /**
   * Forgets a port's entries: dynamic ones when it goes down, all when it is removed
   * (as Linux does on link down / port deletion). `vid` restricts it to one VLAN.
   */
  flushPort(port: number, opts: { includeStatic?: boolean; vid?: number } = {}): number {
    let n = 0;
    for (const e of this.entries()) {
      if (e.port !== port) continue;
      if (e.isStatic && !opts.includeStatic) continue;
      if (opts.vid !== undefined && e.vid !== opts.vid) continue;
      this.#remove(e);
      n++;
    }
    return n;
  }

  /** Every entry (a snapshot, safe to modify the table while iterating). */
  entries(): FdbEntry[] {
    const out: FdbEntry[] = [];
    for (const t of this.#byVid) if (t !== undefined) for (const e of t.values()) out.push(e);
    return out;
  }

  #atPortLimit(port: number): boolean {
    const limit = this.#portLimit.get(port);
    return limit !== undefined && this.portCount(port) >= limit;
  }

  #portSet(port: number): Set<FdbEntry> {
    let s = this.#dynamicByPort.get(port);
    if (s === undefined) {
      s = new Set();
      this.#dynamicByPort.set(port, s);
    }
    return s;
  }

  #remove(e: FdbEntry): void {
    const t = this.#byVid[e.vid];
    if (t === undefined || t.get(e.mac) !== e) return;
    t.delete(e.mac);
    if (t.size === 0) this.#byVid[e.vid] = undefined;
    this.#size--;
    if (e.isStatic) this.#staticCount--;
    else this.#dynamicByPort.get(e.port)?.delete(e);
  }

  /** Evicts the oldest-learned dynamic entry of the port holding the most. */
  #evictOne(): boolean {
    let busiest: Set<FdbEntry> | undefined;
    for (const s of this.#dynamicByPort.values()) if (busiest === undefined || s.size > busiest.size) busiest = s;
    if (busiest === undefined || busiest.size === 0) return false;
    const victim = busiest.values().next().value as FdbEntry;
    this.#remove(victim);
    this.counters.evicted++;
    return true;
  }
}

function clampAgeing(sec: number): number {
  if (!Number.isFinite(sec) || sec < 0) return FDB_DEFAULTS.ageingSec;
  return Math.min(Math.round(sec), FDB_LIMITS.ageingSecMax);
}

function clampMax(n: number): number {
  if (!Number.isFinite(n)) return FDB_DEFAULTS.maxEntries;
  return Math.max(FDB_LIMITS.maxEntriesMin, Math.min(Math.round(n), FDB_LIMITS.maxEntriesMax));
}
