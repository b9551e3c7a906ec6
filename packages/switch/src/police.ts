/*
 * Per-port rate limits: ingress policing and egress shaping, in the units tc users know.
 *
 * Model. Both directions use a token bucket in bytes (rate R bytes/s, depth B bytes),
 * refilled lazily from the time the frame is handled (the bridge clock), so nothing
 * runs while a port is idle and nothing is allocated per frame. A frame conforms when
 * the bucket holds at least one token; it then takes its whole length, and the bucket
 * may go into debt. So a GSO super-frame (up to 64 KB, read whole from a TAP with
 * offloads) is charged its real size even when it is larger than the burst, and the
 * long-run rate is exactly R whatever the frame sizes; the price is that one frame
 * may exceed the burst (tc's police instead never passes a frame larger than its
 * burst, which would stop a TSO guest for good under a small burst).
 * - Ingress policing (`ingress-rate R burst B`, optional `pps N`): a frame the
 *   bucket (or the packet bucket) refuses is dropped, counted `ingress_rate` on the
 *   port. TCP backs off on the drops; the burst is what it may send at once.
 * - Egress shaping toward the port's device (`egress-rate R burst B`, optional
 *   `pps N`, for a guest that pays per packet): frames the bucket (or the packet
 *   bucket) refuses wait in a small bounded FIFO (a byte ring allocated once when the
 *   rate is set: 50 ms at the rate, at least 128 KiB, at most 8 MiB; at most
 *   MAX_QUEUED frames) and leave on a 1 ms timer as tokens come back, in order; a
 *   frame that does not fit is dropped, counted `egress_rate`. The shaper stands in
 *   for the port's device on the egress path (Port.tx): egress calls it exactly as
 *   it calls the device, so the queued bytes are the final frame (tag edits, virtio
 *   header) and a port without a shaper pays nothing. A frame is counted in tx when
 *   it is accepted (sent or queued); a queued frame the device later refuses counts
 *   as tx_error/link_down on the port.
 *
 * Units (parseRate, parseSize) are tc(8)'s: rates in bit, kbit, mbit, gbit, tbit
 * (powers of 1000; kibit, mibit, gibit: of 1024) or bps, kbps, mbps, gbps (bytes per
 * second); a plain number is bits per second. Sizes in b (bytes), k/kb, m/mb, g/gb
 * (powers of 1024, as tc) or kbit, mbit (bits); a plain number is bytes.
 */
import { VNET_HDR_LEN } from './wire/vnet.js';
import type { PortIo } from './port.js';

/** Accepted ranges, checked by the parsers and the setters. */
export const RATE_LIMITS = Object.freeze({
  minBitsPerSec: 8_000, // 8 kbit: below that a single full-size frame takes seconds
  maxBitsPerSec: 1_000_000_000_000, // 1 tbit
  minBurstBytes: 1_500,
  maxBurstBytes: 1 << 30,
  maxPps: 100_000_000,
});

/** Egress queue bounds (see the module comment). */
export const SHAPER_QUEUE = Object.freeze({ latencySec: 0.05, minBytes: 128 * 1024, maxBytes: 8 * 1024 * 1024, maxFrames: 4096, tickMs: 1 });

/** What a write refused by the shaper returns: not an errno (egress counts it as egress_rate). */
export const E_RATE = -10_000;

export class RateError extends Error {}

const RATE_UNITS: Record<string, number> = {
  '': 1, bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9, tbit: 1e12,
  kibit: 1024, mibit: 1024 ** 2, gibit: 1024 ** 3, tibit: 1024 ** 4,
  bps: 8, kbps: 8e3, mbps: 8e6, gbps: 8e9, tbps: 8e12,
};
const SIZE_UNITS: Record<string, number> = {
  '': 1, b: 1, k: 1024, kb: 1024, m: 1024 ** 2, mb: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3,
  kbit: 1000 / 8, mbit: 1e6 / 8, gbit: 1e9 / 8,
};

/** "100mbit" -> 100000000 (bits per second); a number is taken as bits per second. Throws RateError. */
export function parseRate(v: string | number): number {
  const bits = parseUnit(v, RATE_UNITS, 'rate', 'bit, kbit, mbit, gbit, tbit, or bps, kbps, mbps, gbps');
  if (bits < RATE_LIMITS.minBitsPerSec || bits > RATE_LIMITS.maxBitsPerSec) {
    throw new RateError(`rate ${String(v)} is out of range: 8kbit to 1tbit`);
  }
  return Math.round(bits);
}

/** "1mb" -> 1048576 (bytes); a number is taken as bytes. Throws RateError. */
export function parseSize(v: string | number): number {
  const bytes = parseUnit(v, SIZE_UNITS, 'burst', 'b, k, kb, m, mb, g, gb, or kbit, mbit');
  if (bytes < RATE_LIMITS.minBurstBytes || bytes > RATE_LIMITS.maxBurstBytes) {
    throw new RateError(`burst ${String(v)} is out of range: 1500 bytes to 1gb`);
  }
  return Math.round(bytes);
}

function parseUnit(v: string | number, units: Record<string, number>, what: string, names: string): number {
  if (typeof v === 'number') {
    if (!Number.isFinite(v) || v <= 0) throw new RateError(`${what} must be a positive number, got ${v}`);
    return v;
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(String(v));
  const unit = m?.[2].toLowerCase();
  if (m === null || unit === undefined || !Object.hasOwn(units, unit)) {
    throw new RateError(`bad ${what} '${String(v)}': a number with a unit (${names})`);
  }
  const n = Number(m[1]) * units[unit];
  if (!(n > 0)) throw new RateError(`${what} must be more than 0, got '${String(v)}'`);
  return n;
}

/** 100000000 -> "100mbit", for show and logs. */
export function formatRate(bitsPerSec: number): string {
  for (const [u, f] of [['tbit', 1e12], ['gbit', 1e9], ['mbit', 1e6], ['kbit', 1e3]] as const) {
    if (bitsPerSec >= f && bitsPerSec % (f / 1000) === 0) return `${+(bitsPerSec / f).toFixed(3)}${u}`;
  }
  return `${bitsPerSec}bit`;
}

/** 1048576 -> "1mb". */
export function formatSize(bytes: number): string {
  if (bytes >= 1024 ** 2 && bytes % 1024 === 0) return `${+(bytes / 1024 ** 2).toFixed(3)}mb`;
  if (bytes >= 1024) return `${+(bytes / 1024).toFixed(3)}kb`;
  return `${bytes}b`;
}

/** The burst when none is given: 100 ms at the rate, at least 64 KiB (a GSO super-frame). */
export function defaultBurst(bitsPerSec: number): number {
  return Math.min(RATE_LIMITS.maxBurstBytes, Math.max(64 * 1024, Math.round(bitsPerSec / 8 / 10)));
}

/** A rate limit as configured (bits/s, bytes, packets/s; pps 0 = none). */
export interface RateSpec {
  rate: number;
  burst: number;
  pps?: number;
}

/** A token bucket in bytes, with an optional one in packets; lazily refilled. */
export class Bucket {
  /** Bytes per millisecond, and the depth in bytes. */
  readonly #perMs: number;
  readonly burst: number;
  #tokens: number;
  #last: number;
  readonly #ppsPerMs: number;
  readonly #pktBurst: number;
  #pkts: number;

  constructor(readonly spec: RateSpec, now: number) {
    this.#perMs = spec.rate / 8 / 1000;
    this.burst = spec.burst;
    this.#tokens = spec.burst;
    this.#last = now;
    const pps = spec.pps ?? 0;
    this.#ppsPerMs = pps / 1000;
    // A tenth of a second's worth of packets, at least 16.
    this.#pktBurst = pps > 0 ? Math.max(16, Math.round(pps / 10)) : 0;
    this.#pkts = this.#pktBurst;
  }

  /** Adds the tokens earned since the last call; `now` may step back a little (frames of several ports). */
  refill(now: number): void {
    const dt = now - this.#last;
    if (dt <= 0) return;
    this.#last = now;
    const t = this.#tokens + dt * this.#perMs;
    this.#tokens = t > this.burst ? this.burst : t;
    if (this.#pktBurst > 0) {
      const p = this.#pkts + dt * this.#ppsPerMs;
      this.#pkts = p > this.#pktBurst ? this.#pktBurst : p;
    }
  }

  /** Takes `bytes` (and a packet) if the bucket conforms (see the module comment). */
  take(bytes: number, now: number): boolean {
    this.refill(now);
    if (this.#tokens <= 0) return false;
    if (this.#pktBurst > 0) {
      if (this.#pkts < 1) return false;
      this.#pkts -= 1;
    }
    this.#tokens -= bytes;
    return true;
  }

  /** Would a frame conform now (after refill)? Both buckets, as take. */
  ready(now: number): boolean {
    this.refill(now);
    return this.#tokens > 0 && (this.#pktBurst === 0 || this.#pkts >= 1);
  }

  /** Spends a frame without checking (after ready: a frame sent or leaving the queue). */
  spend(bytes: number): void {
    this.#tokens -= bytes;
    if (this.#pktBurst > 0) this.#pkts -= 1;
  }

  get tokens(): number { return this.#tokens; }
}

/** A port's ingress policer: the bucket and how many frames it refused. */
export class Policer {
  readonly bucket: Bucket;
  constructor(readonly spec: RateSpec, now: number) {
    this.bucket = new Bucket(spec, now);
  }

  /** Per frame: does it conform? */
  admit(bytes: number, now: number): boolean {
    return this.bucket.take(bytes, now);
  }
}

/**
 * Egress shaping: stands in for a port's device (PortIo's send functions) on the
 * egress path. Writes that conform go straight to the device; the rest are copied
 * into the ring and sent by the timer. Counts on the port it shapes through `drop`.
 */
export class Shaper {
  readonly bucket: Bucket;
  /** The ring: frames back to back; a frame never wraps (the writer skips to 0 instead). */
  readonly #ring: Buffer;
  /** Per queued frame: its start in the ring, its length, and whether a virtio_net_hdr precedes it. */
  readonly #offs: Int32Array;
  readonly #lens: Int32Array;
  readonly #vnet: Uint8Array;
  #head = 0; // next frame to send (index into offs)
  #count = 0;
  #wr = 0; // byte position where the next frame goes
  #rd = 0; // byte position of the oldest queued frame
  #used = 0; // bytes held, skipped tail space included
  #timer: NodeJS.Timeout | undefined;
  #armed = false;
  /** Frames queued, frames dropped for lack of room, bytes sent by the timer. */
  queued = 0;
  dropped = 0;
  readonly kind: PortIo['kind'];
  readonly offload: boolean;

  constructor(
    readonly spec: RateSpec,
    readonly io: PortIo,
    now: number,
    /** Called with a negative errno when a queued frame's write fails later (the port counts it). */
    private readonly failed: (errno: number) => void,
    private readonly clock: () => number = () => performance.now(),
  ) {
    this.bucket = new Bucket(spec, now);
    const bytes = Math.min(SHAPER_QUEUE.maxBytes, Math.max(SHAPER_QUEUE.minBytes, Math.round(spec.rate / 8 * SHAPER_QUEUE.latencySec)));
    this.#ring = Buffer.alloc(bytes);
    this.#offs = new Int32Array(SHAPER_QUEUE.maxFrames);
    this.#lens = new Int32Array(SHAPER_QUEUE.maxFrames);
    this.#vnet = new Uint8Array(SHAPER_QUEUE.maxFrames);
    this.kind = io.kind;
    this.offload = io.offload === true;
  }

  get capacity(): number { return this.#ring.length; }
  get backlog(): number { return this.#count; }
  get backlogBytes(): number { return this.#used; }

  send(buf: Uint8Array, off: number, len: number): number {
    if (this.#count === 0 && this.bucket.ready(this.clock())) {
      const r = this.io.send(buf, off, len);
      if (r >= 0) this.bucket.spend(len);
      return r;
    }
    const at = this.#reserve(len, 0);
    if (at < 0) return E_RATE;
    this.#ring.set(buf.subarray(off, off + len), at);
    return len;
  }

  send2(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    if (this.#count === 0 && this.bucket.ready(this.clock())) {
      const r = this.io.send2(a, aoff, alen, b, boff, blen);
      if (r >= 0) this.bucket.spend(alen + blen);
      return r;
    }
    const at = this.#reserve(alen + blen, 0);
    if (at < 0) return E_RATE;
    this.#ring.set(a.subarray(aoff, aoff + alen), at);
    this.#ring.set(b.subarray(boff, boff + blen), at + alen);
    return alen + blen;
  }

  sendVnet(buf: Uint8Array, off: number, len: number): number {
    if (this.#count === 0 && this.bucket.ready(this.clock())) {
      const r = this.io.sendVnet!(buf, off, len);
      if (r >= 0) this.bucket.spend(len);
      return r;
    }
    const at = this.#reserve(len, VNET_HDR_LEN);
    if (at < 0) return E_RATE;
    this.#ring.set(buf.subarray(off - VNET_HDR_LEN, off + len), at - VNET_HDR_LEN);
    return len;
  }

  send2Vnet(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    if (this.#count === 0 && this.bucket.ready(this.clock())) {
      const r = this.io.send2Vnet!(a, aoff, alen, b, boff, blen);
      if (r >= 0) this.bucket.spend(alen + blen);
      return r;
    }
    const at = this.#reserve(alen + blen, VNET_HDR_LEN);
    if (at < 0) return E_RATE;
    this.#ring.set(a.subarray(aoff - VNET_HDR_LEN, aoff + alen), at - VNET_HDR_LEN);
    this.#ring.set(b.subarray(boff, boff + blen), at + alen);
    return alen + blen;
  }

  /**
   * Room for a frame of `len` bytes with `hdr` header bytes before it; returns where
   * the frame starts, or -1 (dropped: counted here, the caller returns E_RATE).
   */
  #reserve(len: number, hdr: number): number {
    const need = len + hdr;
    const size = this.#ring.length;
    if (this.#count >= SHAPER_QUEUE.maxFrames || need > size) {
      this.dropped++;
      return -1;
    }
    let at = this.#wr;
    let skip = 0;
    if (at + need > size) {
      skip = size - at; // the tail cannot hold it: the frame goes to the ring's start
      at = 0;
    }
    if (this.#used + skip + need > size) {
      this.dropped++;
      return -1;
    }
    this.#used += skip + need;
    this.#wr = at + need;
    const slot = (this.#head + this.#count) % SHAPER_QUEUE.maxFrames;
    this.#offs[slot] = at + hdr;
    this.#lens[slot] = len;
    this.#vnet[slot] = hdr;
    this.#count++;
    this.queued++;
    if (!this.#armed) this.#arm();
    return at + hdr;
  }

  #arm(): void {
    this.#armed = true;
    if (this.#timer === undefined) {
      this.#timer = setTimeout(() => this.#drain(), SHAPER_QUEUE.tickMs);
      this.#timer.unref();
    } else {
      this.#timer.refresh();
    }
  }

  /** Sends what the tokens allow, oldest first; re-arms while frames wait. */
  #drain(): void {
    this.#armed = false;
    const now = this.clock();
    const ring = this.#ring;
    while (this.#count > 0 && this.bucket.ready(now)) {
      const slot = this.#head;
      const off = this.#offs[slot];
      const len = this.#lens[slot];
      const hdr = this.#vnet[slot];
      const r = hdr !== 0 ? this.io.sendVnet!(ring, off, len) : this.io.send(ring, off, len);
      this.bucket.spend(len);
      if (r < 0) this.failed(r);
      this.#head = (slot + 1) % SHAPER_QUEUE.maxFrames;
      this.#count--;
      // Free up to the end of this frame, plus any skipped tail before it.
      const start = off - hdr;
      const freed = (start >= this.#rd ? start - this.#rd : ring.length - this.#rd + start) + hdr + len;
      this.#used -= freed;
      this.#rd = off + len;
    }
    if (this.#count === 0) {
      this.#used = 0;
      this.#rd = this.#wr = 0;
    } else {
      this.#arm();
    }
  }

  /** Drops what waits and stops the timer (the port leaves, or the rate changes). */
  close(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#armed = false;
    this.#count = 0;
    this.#used = 0;
    this.#rd = this.#wr = 0;
  }
}
