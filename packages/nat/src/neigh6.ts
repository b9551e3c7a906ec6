/*
 * IPv6 -> MAC for the neighbours a router interface forwards to (the VMs of a
 * network, the uplink's next hop): the IPv6 twin of arp-cache.ts, without a
 * per-packet allocation on the hit path. Addresses are 16 bytes in place, so
 * the table is open-addressed over preallocated arrays: an address hashes to a
 * window of PROBE slots, is found in it or takes a free, expired or the oldest
 * slot of it (that eviction is what bounds the table: `max` slots, whatever a
 * guest sends). An entry lives `ttlMs` (default 5 min, as ARP) after it was last
 * confirmed (an NA to our NS, an NS or NA carrying the neighbour's link-layer
 * address); after that it is a miss, and the next packet asks again.
 *
 * A miss holds a copy of the packet until the neighbour answers (held-frames.ts,
 * as ARP's: 3 per address, at most `pendingBytes` in all, at most `pendingIps`
 * addresses waiting) and says when to send a Neighbor Solicitation (the first
 * miss, then once per `retryMs`). The held copies are allocations: the miss
 * path is rare and bounded, the hit path is not allowed to allocate.
 */
import { HeldFrames } from './held-frames.js';

export const NEIGH6_DEFAULTS = Object.freeze({
  max: 4096, ttlMs: 300_000, pendingPerIp: 3, pendingIps: 256, retryMs: 1000, pendingBytes: 2 * 1024 * 1024,
});

/** Slots looked at for one address. */
const PROBE = 8;

export interface Neigh6Counters {
  /** Addresses learnt or whose MAC changed. */
  resolved: number;
  /** Neighbor Solicitations asked for (hold returned true). */
  solicitations: number;
  /** Held packets dropped: over a bound, or their address evicted while waiting. */
  pendingDropped: number;
  /** Entries that took the slot of a live one (the table is full around that hash). */
  evicted: number;
}

export class Neigh6Cache {
  readonly counters: Neigh6Counters = { resolved: 0, solicitations: 0, pendingDropped: 0, evicted: 0 };
  readonly #cap: number;
  readonly #addrs: Uint8Array;
  readonly #macs: Float64Array;
  /** When the slot's entry was last confirmed (clock ms); -Infinity: free. */
  readonly #seen: Float64Array;
  readonly #ttl: number;
  readonly #pending = new HeldFrames<string>(NEIGH6_DEFAULTS, this.counters);

  constructor(private readonly clock: () => number, opts: { max?: number; ttlMs?: number } = {}) {
    // A power of two at least `max` (and PROBE), so the hash is a mask.
    let cap = PROBE;
    while (cap < (opts.max ?? NEIGH6_DEFAULTS.max)) cap *= 2;
    this.#cap = cap;
    this.#addrs = new Uint8Array(cap * 16);
    this.#macs = new Float64Array(cap);
    this.#seen = new Float64Array(cap).fill(-Infinity);
    this.#ttl = opts.ttlMs ?? NEIGH6_DEFAULTS.ttlMs;
  }

  /** FNV-1a over the 16 bytes, masked to the table. */
  #hash(a: Uint8Array, o: number): number {
    let h = 0x811c9dc5;
    for (let i = 0; i < 16; i++) h = Math.imul(h ^ a[o + i], 0x01000193);
    return (h >>> 0) & (this.#cap - 1);
  }

  #slot(a: Uint8Array, o: number, now: number): number {
    const h = this.#hash(a, o);
    for (let k = 0; k < PROBE; k++) {
      const s = (h + k) & (this.#cap - 1);
      if (now - this.#seen[s] <= this.#ttl && this.#same(s, a, o)) return s;
    }
    return -1;
  }

  #same(s: number, a: Uint8Array, o: number): boolean {
    const b = this.#addrs;
    const p = s * 16;
    for (let i = 0; i < 16; i++) if (b[p + i] !== a[o + i]) return false;
    return true;
  }

  /** The MAC of the address at a[o, o+16), or -1 (unknown or expired). */
  lookup(a: Uint8Array, o: number): number {
    const s = this.#slot(a, o, this.clock());
    return s < 0 ? -1 : this.#macs[s];
  }

  /**
   * Records a[o, o+16) -> mac, confirmed now; returns the packets that were waiting
   * for it (held copies, see vnet.ts holdCopy), to be sent now.
   */
  learn(a: Uint8Array, o: number, mac: number): Uint8Array[] {
    const now = this.clock();
    let s = this.#slot(a, o, now);
    if (s < 0) {
      const h = this.#hash(a, o);
      let oldest = h;
      for (let k = 0; k < PROBE; k++) {
        const c = (h + k) & (this.#cap - 1);
        if (this.#seen[c] < this.#seen[oldest]) oldest = c;
      }
      if (now - this.#seen[oldest] <= this.#ttl) this.counters.evicted++;
      s = oldest;
      this.#addrs.set(a.subarray(o, o + 16), s * 16);
      this.#macs[s] = -1;
    }
    if (this.#macs[s] !== mac) this.counters.resolved++;
    this.#macs[s] = mac;
    this.#seen[s] = now;
    if (this.#pending.size === 0) return NONE;
    return this.#pending.take(keyOf(a, o));
  }

  /** Entries past their lifetime are misses already; this frees their slots' memory of them (views). */
  forget(a: Uint8Array, o: number): void {
    const s = this.#slot(a, o, this.clock());
    if (s >= 0) this.#seen[s] = -Infinity;
  }

  /**
   * Holds `frame` until a[o, o+16) resolves. True when a Neighbor Solicitation
   * should be sent now (first packet for it, or `retryMs` since the last one).
   */
  hold(a: Uint8Array, o: number, frame: Uint8Array): boolean {
    if (!this.#pending.hold(keyOf(a, o), frame, this.clock())) return false;
    this.counters.solicitations++;
    return true;
  }

  /** Live entries (views: `router show`). */
  entries(): { ip: Uint8Array; mac: number }[] {
    const now = this.clock();
    const out: { ip: Uint8Array; mac: number }[] = [];
    for (let s = 0; s < this.#cap; s++) {
      if (now - this.#seen[s] <= this.#ttl) out.push({ ip: this.#addrs.slice(s * 16, s * 16 + 16), mac: this.#macs[s] });
    }
    return out;
  }

  get size(): number {
    return this.entries().length;
  }

  get pendingBytes(): number {
    return this.#pending.bytes;
  }
}

const NONE: Uint8Array[] = [];

function keyOf(a: Uint8Array, o: number): string {
  let s = '';
  for (let i = 0; i < 16; i++) s += String.fromCharCode(a[o + i]);
  return s;
}
