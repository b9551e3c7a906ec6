/*
 * The packets a router holds while it resolves a next hop (ARP for IPv4, Neighbor
 * Discovery for IPv6), as Linux's unres_qlen: at most `perAddress` per address,
 * the oldest dropped first; at most `maxBytes` in all (a held frame may be a 64 KB
 * GSO super-frame, so the byte bound, not the frame count, bounds the memory: a
 * frame over it is not held); at most `maxAddresses` waiting (a new one evicts the
 * oldest with its frames). Every frame given up is counted in the owner's
 * `pendingDropped`. `hold` also says when to ask again: the first packet for an
 * address, then once per `retryMs`. The copies are allocations: the miss path is
 * rare and bounded; the hit path never comes here.
 */

export interface HeldFramesLimits {
  readonly pendingPerIp: number;
  readonly pendingIps: number;
  readonly pendingBytes: number;
  readonly retryMs: number;
}

export class HeldFrames<K> {
  readonly #waiting = new Map<K, { frames: Uint8Array[]; lastRequest: number }>();
  #bytes = 0;

  constructor(private readonly limits: HeldFramesLimits, private readonly counters: { pendingDropped: number }) {}

  /** Holds `frame` for `key`; true when a request should be sent now. */
  hold(key: K, frame: Uint8Array, now: number): boolean {
    const l = this.limits;
    let p = this.#waiting.get(key);
    if (p === undefined) {
      if (this.#waiting.size >= l.pendingIps) {
        const oldest = this.#waiting.keys().next().value as K;
        this.counters.pendingDropped += this.take(oldest).length;
      }
      p = { frames: [], lastRequest: -Infinity };
      this.#waiting.set(key, p);
    }
    const full = p.frames.length >= l.pendingPerIp;
    if (this.#bytes - (full ? p.frames[0].length : 0) + frame.length > l.pendingBytes) {
      this.counters.pendingDropped++;
    } else {
      if (full) {
        this.#bytes -= p.frames.shift()!.length;
        this.counters.pendingDropped++;
      }
      p.frames.push(frame);
      this.#bytes += frame.length;
    }
    if (now - p.lastRequest < l.retryMs) return false;
    p.lastRequest = now;
    return true;
  }

  /** The frames that were waiting for `key` (to be sent now), no longer held. */
  take(key: K): Uint8Array[] {
    const p = this.#waiting.get(key);
    if (p === undefined) return NONE;
    this.#waiting.delete(key);
    for (const f of p.frames) this.#bytes -= f.length;
    return p.frames;
  }

  get size(): number {
    return this.#waiting.size;
  }

  /** Bytes held for unresolved addresses. */
  get bytes(): number {
    return this.#bytes;
  }
}

const NONE: Uint8Array[] = [];
