/*
 * Per-neighbour route limits (issue 16: "a flood of 100,000 type-2 routes [is] refused
 * or bounded and counted", for gobgpd itself). The daemon bounds what it installs
 * (maxRemoteMacs), but gobgpd keeps every route a peer sends and compares each
 * received MAC route with every EVPN path it holds (MAC mobility), so a flood costs it
 * O(N^2) CPU and O(N) memory. gobgpd's own per-peer prefix limit (AddPeer
 * afiSafis[].prefixLimits on l2vpn-evpn; gobgp.ts peerRequest) stops that at the
 * session. What gobgpd 3.10 does with it (pkg/server/peer.go doPrefixLimit,
 * handleUpdate; server.go handleFSMMessage; fsm.go), checked in
 * test/evpn-limit.test.ts:
 *   - after each UPDATE is stored in the peer's Adj-RIB-In it counts the family's
 *     paths; past the limit it sends a NOTIFICATION Cease / Maximum Number of Prefixes
 *     Reached (6/1) and does not judge that UPDATE's paths (those of earlier UPDATEs
 *     were judged: at most the limit, plus one UPDATE's worth stored);
 *   - the session closes as a non-graceful one (a NOTIFICATION we sent, not a hold
 *     timer), so every path of that peer is withdrawn at once, here too;
 *   - the peer then stays Idle with admin state PFX_CT: gobgpd neither connects nor
 *     accepts its connections (it closes them) until EnablePeer. No flap loop, and
 *     nothing comes back by itself: FRR's `maximum-prefix N` without `restart` and
 *     Junos' `prefix-limit teardown` behave the same.
 * This module watches for that state (ListPeer's and WatchEvent's admin state),
 * counts and logs each time a neighbour hits its limit, and after
 * `maxPrefixesRestart` seconds (0: never) calls EnablePeer so the session may come
 * back (gobgpd waits its idle hold time, 5 s, then connects), as FRR's `restart`.
 * A neighbour that hits its limit again within REPEAT_WINDOW_MS of being let back is
 * a repeat offender (a flooder, or a route reflector whose table outgrew the limit):
 * each such hit doubles the wait, up to BACKOFF_CAP× maxPrefixesRestart, so a peer
 * that floods after every restart costs gobgpd one judged limit per hour or so instead
 * of one per maxPrefixesRestart (RFC 4271 §8.1.1's DampPeerOscillations, in spirit).
 * A neighbour that stays connected longer than that window starts over at 1×; a reload
 * that changes its limit does too. `evpn show` prints the wait (`restartInS`).
 * A reload that changes a neighbour's limit updates it in gobgpd in place (no session
 * reset: gobgp.ts peerRequest) and lets a held-down neighbour connect again (service.ts);
 * gobgpd first waits its idle hold time, 5 s, and closes connections until then. With an
 * operator's gobgpd, a peer the daemon did not add (it existed) keeps the operator's
 * limit: its hits are counted and shown, but neither its limit nor its hold-down is
 * touched from here.
 */
import type { Logger } from '../log.js';

/** A hit sooner than this after the neighbour was let back counts as a repeat. */
export const REPEAT_WINDOW_MS = 30 * 60_000;
/** The wait grows at most to this many times maxPrefixesRestart. */
export const BACKOFF_CAP = 16;

export interface NeighbourLimitConf {
  address: string;
  maxPrefixes: number;
  maxPrefixesRestart: number;
}

export interface NeighbourLimitView {
  maxPrefixes: number;
  maxPrefixesRestart: number;
  /** Times gobgpd closed the session for the limit (since the daemon started). */
  exceeded: number;
  /** ISO time of the last one ('' never). */
  lastExceeded: string;
  /** gobgpd holds the session down for the limit now. */
  heldDown: boolean;
  /** ISO time the daemon lets it connect again ('' not scheduled). */
  restartAt: string;
  /** Seconds of the last (or current) wait: maxPrefixesRestart doubled per repeat, capped. */
  restartInS: number;
  /** Hits in a row, each within REPEAT_WINDOW_MS of being let back (1: the first). */
  repeats: number;
}

interface State extends NeighbourLimitView {
  timer: NodeJS.Timeout | undefined;
  /** When the daemon last let it connect again (ms, 0 never). */
  releasedAt: number;
}

export class PrefixLimits {
  readonly #n = new Map<string, State>();

  /**
   * `enable(address)` lets gobgpd connect to the neighbour again (EnablePeer); `owns(address)`:
   * the daemon added that peer to gobgpd (an operator's gobgpd may hold peers it made
   * itself: their hits are counted, never restarted from here).
   */
  constructor(private readonly log: Logger, private readonly enable: (address: string) => void, private readonly owns: (address: string) => boolean = () => true, private readonly now: () => number = Date.now) {}

  /**
   * Takes the neighbours' limits; returns the addresses (kept ones) whose limit or
   * restart changed. Counts survive a reload; a neighbour that goes is forgotten.
   */
  configure(ns: readonly NeighbourLimitConf[]): string[] {
    const changed: string[] = [];
    const keep = new Set(ns.map((n) => n.address));
    for (const [a, s] of this.#n) if (!keep.has(a)) {
      clearTimeout(s.timer);
      this.#n.delete(a);
    }
    for (const n of ns) {
      const s = this.#n.get(n.address);
      if (s === undefined) {
        this.#n.set(n.address, { maxPrefixes: n.maxPrefixes, maxPrefixesRestart: n.maxPrefixesRestart, exceeded: 0, lastExceeded: '', heldDown: false, restartAt: '', restartInS: 0, repeats: 0, timer: undefined, releasedAt: 0 });
        continue;
      }
      if (s.maxPrefixes === n.maxPrefixes && s.maxPrefixesRestart === n.maxPrefixesRestart) continue;
      s.maxPrefixes = n.maxPrefixes;
      s.maxPrefixesRestart = n.maxPrefixesRestart;
      s.repeats = 0;
      s.releasedAt = 0;
      changed.push(n.address);
    }
    return changed;
  }

  /**
   * What gobgpd says of the neighbour now (`down`: admin state PFX_CT). Its first
   * `down` is one limit hit: counted, logged, the restart scheduled.
   */
  observe(address: string, down: boolean, received = -1): void {
    const s = this.#n.get(address);
    if (s === undefined || s.heldDown === down) return;
    s.heldDown = down;
    clearTimeout(s.timer);
    s.timer = undefined;
    s.restartAt = '';
    if (!down) return;
    s.exceeded++;
    const now = this.now();
    s.lastExceeded = new Date(now).toISOString();
    s.repeats = s.releasedAt > 0 && now - s.releasedAt < REPEAT_WINDOW_MS ? s.repeats + 1 : 1;
    const restartS = s.maxPrefixesRestart * Math.min(2 ** (s.repeats - 1), BACKOFF_CAP);
    s.restartInS = restartS;
    this.log.warn({ event: 'evpn_prefix_limit_exceeded', neighbor: address, maxPrefixes: s.maxPrefixes, ...(received >= 0 ? { received } : {}), restartInS: restartS, repeats: s.repeats, count: s.exceeded }, 'evpn_prefix_limit_exceeded');
    if (restartS > 0 && this.owns(address)) this.#schedule(address, s, restartS * 1000);
  }

  #schedule(address: string, s: State, ms: number): void {
    s.restartAt = new Date(this.now() + ms).toISOString();
    s.timer = setTimeout(() => {
      s.timer = undefined;
      this.release(address, 'restart timer');
    }, ms);
    s.timer.unref();
  }

  /** Lets a held-down neighbour connect again now (restart timer, or a reload that changed its limit). */
  release(address: string, why: string): void {
    const s = this.#n.get(address);
    if (s === undefined || !s.heldDown || !this.owns(address)) return;
    clearTimeout(s.timer);
    s.timer = undefined;
    s.restartAt = '';
    s.releasedAt = this.now();
    this.log.info({ event: 'evpn_prefix_limit_restart', neighbor: address, why }, 'evpn_prefix_limit_restart');
    this.enable(address);
  }

  /** gobgpd went away (a new one holds nobody down): timers stop, counts stay. */
  reset(): void {
    for (const s of this.#n.values()) {
      clearTimeout(s.timer);
      s.timer = undefined;
      s.heldDown = false;
      s.restartAt = '';
    }
  }

  close(): void {
    this.reset();
    this.#n.clear();
  }

  view(address: string): NeighbourLimitView | undefined {
    const s = this.#n.get(address);
    if (s === undefined) return undefined;
    const { timer: _t, releasedAt: _r, ...v } = s;
    return v;
  }

  entries(): [string, NeighbourLimitView][] {
    return [...this.#n.keys()].map((a) => [a, this.view(a)!]);
  }
}

type Fill = (emit: (labels: Record<string, string | number>, value: number) => void) => void;
type Reg = (name: string, help: string, labels: readonly string[], fill: Fill) => void;

/** The neighbours' route limits as metrics (README "BGP EVPN"); nothing while the section is absent. */
export function prefixLimitMetrics(src: () => { limits: PrefixLimits; neighbourReceived(a: string): number } | undefined, gauge: Reg, counter: Reg): void {
  const each = (emit: Parameters<Fill>[0], pick: (a: string, v: NeighbourLimitView) => number): void => {
    const s = src();
    if (s !== undefined) for (const [a, v] of s.limits.entries()) emit({ neighbor: a }, pick(a, v));
  };
  gauge('vswitch_evpn_neighbor_routes_received', 'EVPN routes the neighbour holds in gobgpd now (its Adj-RIB-In), what evpn.neighbors[].maxPrefixes bounds.', ['neighbor'], (emit) => each(emit, (a) => src()!.neighbourReceived(a)));
  gauge('vswitch_evpn_neighbor_max_prefixes', 'The neighbour\'s route limit in gobgpd (evpn.neighbors[].maxPrefixes; 0 none).', ['neighbor'], (emit) => each(emit, (_a, v) => v.maxPrefixes));
  counter('vswitch_evpn_neighbor_prefix_limit_exceeded_total', 'Times gobgpd closed the neighbour\'s session because it sent more than maxPrefixes EVPN routes.', ['neighbor'], (emit) => each(emit, (_a, v) => v.exceeded));
  gauge('vswitch_evpn_neighbor_prefix_limit_down', '1 while gobgpd holds the neighbour\'s session down for its route limit (until maxPrefixesRestart or a reload).', ['neighbor'], (emit) => each(emit, (_a, v) => (v.heldDown ? 1 : 0)));
}
