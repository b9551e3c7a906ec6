/*
 * IPv4 -> MAC for the addresses a router interface talks to, with expiry, plus the
 * few packets held while an address resolves (as Linux's unres_qlen: 3 per address,
 * the oldest dropped first and counted, and at most `pendingBytes` in all: a held
 * frame may be a 64 KB GSO super-frame, so the byte bound, not the frame count, is
 * what bounds the memory; a frame over it is dropped and counted). Entries come from ARP requests and
 * replies addressed to us; an entry lives `ttlMs` (default 5 min) after it was last
 * confirmed. Built on lru-cache: this is the router's per-packet path, not the
 * switch's, and its size bound protects against a guest ARPing a whole /8.
 */
import { LRUCache } from 'lru-cache';

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
  readonly #pending = new Map<number, { frames: Uint8Array[]; lastRequest: number }>();
  readonly counters: ArpCounters = { resolved: 0, requestsSent: 0, pendingDropped: 0 };
  /** Bytes of the frames held, bounded by ARP_DEFAULTS.pendingBytes. */
  #pendingBytes = 0;

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
    const p = this.#pending.get(ip);
    if (p === undefined) return [];
    this.#pending.delete(ip);
    for (const f of p.frames) this.#pendingBytes -= f.length;
    return p.frames;
  }

  forget(ip: number): void {
    this.#cache.delete(ip);
  }

  /**
   * Holds a copy of `frame` until `ip` resolves. Returns true when an ARP request
   * should be sent now (first packet for this address, or the retry interval passed).
   */
  hold(ip: number, frame: Uint8Array): boolean {
    const now = this.clock();
    let p = this.#pending.get(ip);
    if (p === undefined) {
      if (this.#pending.size >= ARP_DEFAULTS.pendingIps) {
        const oldest = this.#pending.keys().next().value as number;
        const frames = this.#pending.get(oldest)!.frames;
        this.counters.pendingDropped += frames.length;
        for (const f of frames) this.#pendingBytes -= f.length;
        this.#pending.delete(oldest);
      }
      p = { frames: [], lastRequest: -Infinity };
      this.#pending.set(ip, p);
    }
    const full = p.frames.length >= ARP_DEFAULTS.pendingPerIp;
    if (this.#pendingBytes - (full ? p.frames[0].length : 0) + frame.length > ARP_DEFAULTS.pendingBytes) {
      this.counters.pendingDropped++; // over the byte bound: this frame is not held
    } else {
      if (full) {
        this.#pendingBytes -= p.frames.shift()!.length;
        this.counters.pendingDropped++;
      }
      p.frames.push(frame);
      this.#pendingBytes += frame.length;
    }
    if (now - p.lastRequest < ARP_DEFAULTS.retryMs) return false;
    p.lastRequest = now;
    this.counters.requestsSent++;
    return true;
  }

  entries(): { ip: number; mac: number }[] {
    return [...this.#cache.entries()].map(([ip, mac]) => ({ ip, mac }));
  }

  /** Bytes held for unresolved addresses. */
  get pendingBytes(): number {
    return this.#pendingBytes;
  }

  get size(): number {
    return this.#cache.size;
  }
}
