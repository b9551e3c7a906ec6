/*
 * Duplicate MAC detection for EVPN MAC mobility (RFC 7432 §15.1; FRR's
 * `dup-addr-detection`, Junos' `duplicate-mac-detection`). Pure logic: a table of
 * (VNI, MAC) entries fed with move events and the time; service.ts reports the moves
 * and asks whether a MAC is held. No I/O, no timers here.
 *
 * A move is a MAC changing sides at this VTEP: a MAC a peer's route pointed at that
 * is learned on a local port (remote -> local: it is advertised with a higher
 * sequence), or a local MAC a peer's newer route takes away (local -> remote). A MAC
 * going from one peer to another is not counted here (each VTEP detects its own
 * side, as FRR does): two VMs sharing a MAC behind two hosts, or a loop, make both
 * hosts count.
 *
 * Window (FRR's): the first move starts it; moves within `windowSeconds` of that
 * start are counted; a move after it starts a new window at 1. The `maxMoves`-th
 * move within one window flags the MAC as a duplicate (that move itself is carried
 * out, as FRR's `max-moves N` allows N moves; RFC 7432 §15.1's "more than N" counts
 * the same N transitions with the initial location as the first). An entry that is
 * not flagged goes when its window has passed (sweep()).
 *
 * Flagged, then (`freeze`):
 * - 'permanent' (the default, RFC 7432 §15.1: "stop sending and processing any BGP
 *   MAC/IP Advertisement routes for that MAC address until a corrective action is
 *   taken", Junos without auto-recovery): the MAC is held where it is when flagged.
 *   A local MAC keeps its local entry and its route at the sequence it has; a peer's
 *   newer route for it is refused (`duplicate_mac`). A MAC flagged as remote keeps
 *   pointing at its peer; a local learn of it is not advertised (the data plane still
 *   learns it: frames are not dropped). Until `evpn clear-dup`.
 * - a number of seconds: the same hold, released by itself that long after the
 *   detection (Junos' auto-recovery-time, FRR's `freeze N`).
 * - false: flagged and logged only, mobility goes on (FRR's default without
 *   `freeze`); the flag stays until cleared.
 * A release (clear, or the freeze time) forgets the entry: the next move starts a
 * new window, and service.ts judges the MAC's routes again.
 *
 * Bounded: at most `max` entries; a move of a MAC not in the table when it is full
 * is not tracked and counted (`untracked`). Flagged entries count toward the bound.
 */

export interface DupDetectConfig {
  maxMoves: number;
  windowSeconds: number;
  freeze: 'permanent' | number | false;
}

export const DUP_DETECT_DEFAULTS: Readonly<DupDetectConfig> = Object.freeze({ maxMoves: 5, windowSeconds: 180, freeze: 'permanent' });
/** Entries (MACs being counted or flagged) at most. */
export const DUP_TABLE_MAX = 8192;

export interface DupEntry {
  vni: number;
  mac: number;
  /** Start of the window (ms, the caller's clock). */
  start: number;
  moves: number;
  /** When flagged (ms), else -1. */
  detectedAt: number;
  /** Where the last counted move went: 'local' or the peer's address. */
  to: string;
  /** Moves refused or not advertised while held. */
  held: number;
}

export type MoveResult = 'counted' | 'detected' | 'held' | 'flagged' | 'untracked' | 'off';

const key = (vni: number, mac: number): string => `${vni}/${mac}`;

export class DupDetector {
  readonly #entries = new Map<string, DupEntry>();
  #conf: DupDetectConfig | false;
  /** MACs flagged since start (a counter). */
  detectedTotal = 0;
  /** Moves not tracked because the table was full. */
  untracked = 0;

  constructor(conf: DupDetectConfig | false = DUP_DETECT_DEFAULTS, readonly max = DUP_TABLE_MAX) {
    this.#conf = conf;
  }

  get config(): DupDetectConfig | false { return this.#conf; }

  /** A reload: new values apply to later moves; off forgets everything (returns the released flagged entries). */
  configure(conf: DupDetectConfig | false): DupEntry[] {
    this.#conf = conf;
    if (conf !== false) return [];
    return this.clear();
  }

  get size(): number { return this.#entries.size; }

  /**
   * A move of (vni, mac) to `to` ('local' or a peer's address) at `now` (ms).
   * 'held': flagged and held, the move must not be carried out; 'flagged': flagged,
   * not held (freeze off), carry it out; 'detected': this move flags it (carried out).
   */
  move(vni: number, mac: number, to: string, now: number): MoveResult {
    const c = this.#conf;
    if (c === false) return 'off';
    const k = key(vni, mac);
    let e = this.#entries.get(k);
    if (e !== undefined && e.detectedAt >= 0) {
      if (this.#holding(e, now)) {
        e.held++;
        return 'held';
      }
      if (c.freeze === false) return 'flagged';
      // The freeze ran out and no sweep has released it yet: a fresh window.
      this.#entries.delete(k);
      e = undefined;
    }
    if (e === undefined || now - e.start > c.windowSeconds * 1000) {
      if (e === undefined && this.#entries.size >= this.max) {
        this.untracked++;
        return 'untracked';
      }
      e = { vni, mac, start: now, moves: 0, detectedAt: -1, to, held: 0 };
      this.#entries.set(k, e);
    }
    e.moves++;
    e.to = to;
    if (e.moves >= c.maxMoves) {
      e.detectedAt = now;
      this.detectedTotal++;
      return 'detected';
    }
    return 'counted';
  }

  /** Whether moves of (vni, mac) are held now (flagged, freeze on and not run out). */
  held(vni: number, mac: number, now: number): boolean {
    const e = this.#entries.get(key(vni, mac));
    return e !== undefined && e.detectedAt >= 0 && this.#holding(e, now);
  }

  flagged(vni: number, mac: number): boolean {
    return (this.#entries.get(key(vni, mac))?.detectedAt ?? -1) >= 0;
  }

  #holding(e: DupEntry, now: number): boolean {
    const c = this.#conf;
    if (c === false || c.freeze === false) return false;
    return c.freeze === 'permanent' || now < e.detectedAt + c.freeze * 1000;
  }

  /** Drops counting entries whose window has passed; releases flagged ones whose freeze ran out (returned). */
  sweep(now: number): DupEntry[] {
    const c = this.#conf;
    if (c === false) return [];
    const released: DupEntry[] = [];
    for (const [k, e] of this.#entries) {
      if (e.detectedAt < 0) {
        if (now - e.start > c.windowSeconds * 1000) this.#entries.delete(k);
      } else if (typeof c.freeze === 'number' && now >= e.detectedAt + c.freeze * 1000) {
        this.#entries.delete(k);
        released.push(e);
      }
    }
    return released;
  }

  /** Forgets the entries of `mac` (every MAC if undefined), in `vni` if given; returns the flagged ones among them. */
  clear(mac?: number, vni?: number): DupEntry[] {
    const released: DupEntry[] = [];
    for (const [k, e] of this.#entries) {
      if (mac !== undefined && e.mac !== mac) continue;
      if (vni !== undefined && e.vni !== vni) continue;
      this.#entries.delete(k);
      if (e.detectedAt >= 0) released.push(e);
    }
    return released;
  }

  /** Flagged entries, per VNI if given. */
  duplicates(vni?: number): DupEntry[] {
    const out: DupEntry[] = [];
    for (const e of this.#entries.values()) if (e.detectedAt >= 0 && (vni === undefined || e.vni === vni)) out.push(e);
    return out;
  }
}
