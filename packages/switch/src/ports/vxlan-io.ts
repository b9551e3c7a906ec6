/*
 * The VXLAN underlay over the addon (netdev udp.c): a UDP socket bound to the
 * VTEP's local address and port receives the tunnel's datagrams in batches
 * (recvmmsg, through the shared ring), and a raw IPv4 socket sends the packets
 * Vtep.encap builds (outer header, then the inner frame's pieces, gathered by one
 * sendmsg). This is the only part of the VTEP that needs the addon: the Vtep core
 * (vxlan.ts) sees it as an UnderlayIo and a stream of `receive` calls. Super-frames
 * (sendVxlan) are segmented, encapsulated and sent in one sendmmsg by the addon
 * (native/vxlan_tx.c). Other packets (send3) are queued in the addon and sent in one
 * sendmmsg per batch: the queue is flushed by one microtask scheduled by the first
 * packet a batch queues (it runs when the read loop's turn ends its poll phase), or
 * earlier when it fills up or a super-frame goes out, so packets keep their order.
 */
import * as netdev from '@vswitch/netdev';
import type { UnderlayIo, Vtep } from '../vxlan.js';
import * as wire from '../wire/vxlan.js';

const sender = wire.vxlanSender;

export interface UnderlayOptions {
  /** Local IPv4 address (u32) to bind; 0: any. */
  local: number;
  port: number;
  /** Bind both sockets to this interface (SO_BINDTODEVICE); '' or absent: routed. */
  ifname?: string;
}

export class NativeUnderlay implements UnderlayIo {
  readonly #rxHandle: number;
  readonly #txHandle: number;
  #closed = false;
  #flushPending = false;
  /** Made once: scheduling it per batch allocates nothing. */
  readonly #flush = (): void => {
    this.#flushPending = false;
    netdev.flushIp();
  };
  /** Errors that stopped the receive socket (it is then dead; the daemon logs it). */
  failed = 0;

  constructor(opts: UnderlayOptions) {
    const rx = netdev.openUdp(opts.local, opts.port, opts.ifname ?? '');
    try {
      this.#txHandle = netdev.openRawIp(opts.ifname ?? '').handle;
    } catch (e) {
      netdev.close(rx.handle);
      throw e;
    }
    this.#rxHandle = rx.handle;
  }

  /** Delivers every received datagram to `vtep.receive`; `onError` when the socket fails for good. */
  start(vtep: Vtep, onError: (errno: number) => void): void {
    const ring = netdev.ring();
    const arena = ring.arena;
    const offs = ring.offs;
    const lens = ring.lens;
    netdev.start(this.#rxHandle, (count) => {
      if (count < 0) {
        this.failed++;
        onError(-count);
        return;
      }
      for (let i = 0; i < count; i++) {
        const o = offs[i];
        vtep.receive(arena, o, lens[i], sender(arena, o));
      }
    });
  }

  send3(dst: number, a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number,
    c: Uint8Array, coff: number, clen: number): number {
    if (this.#closed) return -100;
    const r = netdev.queueIp3(this.#txHandle, dst, a, aoff, alen, b, boff, blen, c, coff, clen);
    if (r > 0 && !this.#flushPending) {
      this.#flushPending = true;
      queueMicrotask(this.#flush);
    }
    return r;
  }

  sendVxlan(dst: number, outer: Uint8Array, mtu: number, a: Uint8Array, aoff: number, b: Uint8Array, boff: number,
    blen: number, res: Int32Array): number {
    if (this.#closed) return -100;
    return netdev.sendVxlan(this.#txHandle, dst, outer, mtu, a, aoff, b, boff, blen, res);
  }

  /** The receive socket's share of each read-loop round, in bytes (netdev setQuantum; 0: no limit). */
  setReadQuantum(bytes: number): void {
    if (!this.#closed) netdev.setQuantum(this.#rxHandle, bytes);
  }

  /** Read-loop rounds in which the receive socket had more datagrams waiting than its quantum took. */
  get readRoundsFull(): number {
    return this.#closed ? 0 : netdev.fairFull(this.#rxHandle);
  }

  /** Queued packets the kernel refused at the flush (the addon's count: one underlay per process). */
  get txQueueErrors(): number {
    return netdev.stats().vxlanTxQueueErrors;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    netdev.close(this.#rxHandle);
    netdev.close(this.#txHandle);
  }
}
