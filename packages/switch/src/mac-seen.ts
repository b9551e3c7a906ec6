/*
 * The source MACs a bond has sent from, with the VID and the second each was last
 * sent in (bond.ts: RARP announcements after a failover, balance-slb reflection
 * checks). Open addressing with linear probing over typed arrays, the MAC held as
 * two 24-bit halves read straight from the frame: a lookup or refresh per frame
 * allocates nothing (a Map keyed by a 48-bit number would box it each time).
 * At most `max` entries (the table has 2 x max slots, at least half empty, so a
 * probe ends quickly); a MAC beyond that is not remembered and `refused` counts it.
 * Ageing rebuilds the table (control plane, every few seconds).
 */
import { macHi, macLo } from './wire/l2hash.js';

export class MacSeen {
  readonly #mask: number;
  /** hi + 1 (0: empty slot), lo, and sec * 4096 + vid. */
  #hi: Int32Array;
  #lo: Int32Array;
  #val: Float64Array;
  #size = 0;
  refused = 0;

  constructor(readonly max: number) {
    let slots = 16;
    while (slots < 2 * max) slots *= 2;
    this.#mask = slots - 1;
    this.#hi = new Int32Array(slots);
    this.#lo = new Int32Array(slots);
    this.#val = new Float64Array(slots);
  }

  get size(): number { return this.#size; }

  #slot(hi: number, lo: number): number {
    let i = Math.imul(lo ^ Math.imul(hi, 0x9e3779b1), 0x85ebca6b) & this.#mask;
    const h = hi + 1;
    while (this.#hi[i] !== 0 && (this.#hi[i] !== h || this.#lo[i] !== lo)) i = (i + 1) & this.#mask;
    return i;
  }

  /** Records the MAC at buf[at, at+6) as sent now in `vid`. */
  touch(buf: Uint8Array, at: number, vid: number, sec: number): void {
    const hi = macHi(buf, at);
    const lo = macLo(buf, at);
    const i = this.#slot(hi, lo);
    const v = sec * 4096 + vid;
    if (this.#hi[i] !== 0) {
      if (this.#val[i] !== v) this.#val[i] = v;
      return;
    }
    if (this.#size >= this.max) {
      this.refused++;
      return;
    }
    this.#hi[i] = hi + 1;
    this.#lo[i] = lo;
    this.#val[i] = v;
    this.#size++;
  }

  has(buf: Uint8Array, at: number): boolean {
    return this.#hi[this.#slot(macHi(buf, at), macLo(buf, at))] !== 0;
  }

  /** Each entry: the MAC as a number, its VID. */
  forEach(fn: (mac: number, vid: number) => void): void {
    for (let i = 0; i <= this.#mask; i++) {
      if (this.#hi[i] !== 0) fn((this.#hi[i] - 1) * 0x1000000 + this.#lo[i], this.#val[i] % 4096);
    }
  }

  /** Forgets the MACs last sent before second `before`; returns how many. */
  expire(before: number): number {
    const hi = this.#hi, lo = this.#lo, val = this.#val;
    let gone = 0;
    for (let i = 0; i <= this.#mask; i++) if (hi[i] !== 0 && Math.floor(val[i] / 4096) < before) gone++;
    if (gone === 0) return 0;
    this.#hi = new Int32Array(hi.length);
    this.#lo = new Int32Array(lo.length);
    this.#val = new Float64Array(val.length);
    this.#size = 0;
    for (let i = 0; i < hi.length; i++) {
      if (hi[i] === 0 || Math.floor(val[i] / 4096) < before) continue;
      const j = this.#slot(hi[i] - 1, lo[i]);
      this.#hi[j] = hi[i];
      this.#lo[j] = lo[i];
      this.#val[j] = val[i];
      this.#size++;
    }
    return gone;
  }
}
