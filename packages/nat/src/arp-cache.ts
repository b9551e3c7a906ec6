/*
 * IPv4 -> MAC for the addresses a router interface talks to, with expiry, plus the
 * few packets held while an address resolves (held-frames.ts: 3 per address, at
 * most `pendingBytes` in all). Entries come from ARP requests and
 * replies addressed to us; an entry lives `ttlMs` (default 5 min) after it was last
 * confirmed. Built on lru-cache: this is the router's per-packet path, not the
 * switch's, and its size bound protects against a guest ARPing a whole /8.
 */
import { LRUCache } from 'lru-cache';
import { HeldFrames } from './held-frames.js';

export const ARP_DEFAULTS = Object.freeze({
  max: 4096, ttlMs: 300_000, pendingPerIp: 3, pendingIps: 256, retryMs: 1000, pendingBytes: 2 * 1024 * 1024,
});

export interface ArpCounters {
  resolved: number;
  requestsSent: number;
  pendingDropped: number;
}

export class ArpCache {
  readonly #cache: LRUCache<number, number>;
  readonly counters: ArpCounters = { resolved: 0, requestsSent: 0, pendingDropped: 0 };
  readonly #pending = new HeldFrames<number>(ARP_DEFAULTS, this.counters);

  constructor(private readonly clock: () => number, opts: { max?: number; ttlMs?: number } = {}) {
    this.#cache = new LRUCache<number, number>({
      max: opts.max ?? ARP_DEFAULTS.max,
      ttl: opts.ttlMs ?? ARP_DEFAULTS.ttlMs,
      perf: { now: clock },
    });
  }

  lookup(ip: number): number | undefined {
    return this.#cache.get(ip);
  }

  /** Records ip -> mac; returns the frames that were waiting for it (to be sent now). */
  learn(ip: number, mac: number): Uint8Array[] {
    if (this.#cache.get(ip) !== mac) this.counters.resolved++;
    this.#cache.set(ip, mac);
    return this.#pending.take(ip);
  }

  forget(ip: number): void {
    this.#cache.delete(ip);
  }

  /**
   * Holds a copy of `frame` until `ip` resolves. Returns true when an ARP request
   * should be sent now (first packet for this address, or the retry interval passed).
   */
  hold(ip: number, frame: Uint8Array): boolean {
    if (!this.#pending.hold(ip, frame, this.clock())) return false;
    this.counters.requestsSent++;
    return true;
  }

  entries(): { ip: number; mac: number }[] {
    return [...this.#cache.entries()].map(([ip, mac]) => ({ ip, mac }));
  }

  /** Bytes held for unresolved addresses. */
  get pendingBytes(): number {
    return this.#pending.bytes;
  }

  get size(): number {
    return this.#cache.size;
  }
}
