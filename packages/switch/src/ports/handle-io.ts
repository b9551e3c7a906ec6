/*
 * What TAP and attached ports share: a netdev handle that may be closed and
 * reopened while the port lives (a TAP recreated, an interface back), the read loop
 * that hands the shared receive ring to the bridge one batch at a time (at most the
 * port's read quantum per loop turn: netdev's fair share), and the writes. While
 * there is no handle (-1), writes report ENETDOWN, which egress counts as `link_down`.
 */
import * as netdev from '@vswitch/netdev';
import type { PortRx } from '../port.js';

const ENETDOWN = 100;

/** Services the read loop gave a sparse port ahead of a backlogged one (all ports; netdev stats().rxSparseFirst). */
export function addonSparseFirst(): number {
  return netdev.stats().rxSparseFirst;
}

export abstract class HandleIo {
  protected handle: number;
  protected rx: PortRx | undefined;
  protected closed = false;
  /** This port's share of each read-loop round (switch fair.ts, netdev fair.c); kept across reopened handles. */
  #quantum = netdev.FAIR_QUANTUM_DEFAULT;
  #frames = false;
  /** Sparse-first service (the bridge's readSparse; netdev setSparse); kept across reopened handles. */
  #sparse = false;
  /** readRoundsFull of the handles closed before the current one. */
  #fullBefore = 0;

  protected constructor(handle: number) {
    this.handle = handle;
  }

  /** The handle's device failed or vanished (`errno` positive). */
  protected abstract lost(errno: number): void;

  /** Starts reading the current handle; batches of a replaced handle are ignored. */
  protected read(): void {
    const h = this.handle;
    const ring = netdev.ring();
    const time = ring.time;
    const offset = netdev.PERF_NOW_OFFSET;
    const rx = this.rx!;
    netdev.setQuantum(h, this.#quantum, this.#frames);
    if (this.#sparse) netdev.setSparse(h, true);
    netdev.start(h, (count) => {
      if (h !== this.handle) return;
      if (count >= 0) rx.batch(ring.arena, ring.offs, ring.lens, count, true, time[0] + offset);
      else this.lost(-count);
    });
  }

  /** The handle the flow cache keys and writes on (flow-cache.ts); -1 while there is none. */
  get flowHandle(): number {
    return this.handle;
  }

  setReadQuantum(quantum: number, frames = false): void {
    this.#quantum = quantum;
    this.#frames = frames;
    if (this.handle >= 0) netdev.setQuantum(this.handle, quantum, frames);
  }

  setReadSparse(on: boolean): void {
    this.#sparse = on;
    if (this.handle >= 0) netdev.setSparse(this.handle, on);
  }

  /**
   * Read-loop rounds in which this port had more frames waiting than its quantum
   * (or the ring) took: the rest waited for a later round. Grows under a flood.
   */
  get readRoundsFull(): number {
    return this.#fullBefore + (this.handle >= 0 ? netdev.fairFull(this.handle) : 0);
  }

  protected closeHandle(): void {
    if (this.handle >= 0) this.#fullBefore += netdev.fairFull(this.handle);
    if (this.handle >= 0) netdev.close(this.handle);
    this.handle = -1;
  }

  send(buf: Uint8Array, off: number, len: number): number {
    if (this.handle < 0) return -ENETDOWN;
    return netdev.send(this.handle, buf, off, len);
  }

  send2(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    if (this.handle < 0) return -ENETDOWN;
    return netdev.send2(this.handle, a, aoff, alen, b, boff, blen);
  }

  sendRun(buf: Uint8Array, offs: Int32Array, lens: Int32Array, from: number, to: number, ref: number, hlen: number,
    strip: number, res: Int32Array): number {
    if (this.handle < 0) return -1;
    return netdev.sendRun(this.handle, buf, offs, lens, from, to, ref, hlen, strip, res);
  }

  sendVnet(buf: Uint8Array, off: number, len: number): number {
    if (this.handle < 0) return -ENETDOWN;
    return netdev.sendVnet(this.handle, buf, off, len);
  }

  send2Vnet(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    if (this.handle < 0) return -ENETDOWN;
    return netdev.send2Vnet(this.handle, a, aoff, alen, b, boff, blen);
  }
}
