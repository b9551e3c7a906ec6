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
 * Offloads (`setOffload`, vxlan.offload): with "auto" the addon sends a super-frame's
 * segments as UDP GSO datagrams (native/vxlan_gso.c; sendmmsg if the kernel refuses)
 * and coalesces the TCP segments a batch from the underlay sends to one TAP into one
 * super-frame (native/tap_gro.c); both are the addon's, one per process. The receive
 * socket takes the peer's UDP GSO datagrams whole (UDP_GRO, native/udp_gro.c: split
 * into the same ring frames in C, so `receive` sees one call per packet as before).
 * A read batch is staged (Vtep.stage) and flushed at its end: each tunnel port gets
 * its consecutive frames as one batch, whose runs of one inner flow the bridge decides once.
 * NativeUnderlay6 is the same over IPv6 (netdev udp6.c): the sender's address is
 * looked up in the Vtep's remote table straight from the ring, and the kernel
 * writes the outer IPv6 header and the UDP checksum; super-frames go the same way
 * (sendVxlan6: UDP GSO over IPv6 sockets, or sendmmsg through the raw IPv6 socket),
 * and other packets are queued as over IPv4 (queueIp6x3).
 */
import * as netdev from '@vswitch/netdev';
import type { UnderlayIo, Vtep } from '../vxlan.js';
import * as wire from '../wire/vxlan.js';

const sender = wire.vxlanSender;
const SENDER6 = wire.VXLAN6_SENDER_BEFORE;
const TOS = wire.VXLAN_TOS_BEFORE;

export interface UnderlayOptions {
  /** Local IPv4 address (u32) to bind; 0: any. */
  local: number;
  port: number;
  /** Bind both sockets to this interface (SO_BINDTODEVICE); '' or absent: routed. */
  ifname?: string;
}

/** What the coalescing toward TAPs did (netdev tap_gro.c; the addon's counts: one underlay per process). */
export interface UnderlayCoalesced {
  /** Super-frames written to TAPs, and the decapsulated TCP segments they carry. */
  frames: number;
  segments: number;
  /** Held segments whose write the TAP refused (the port had counted them sent). */
  errors: number;
}

/** The UDP GSO sends of super-frames (netdev vxlan_gso.c; the addon's counts). */
export interface UnderlayGso {
  /** sendmsg calls with UDP_SEGMENT, and the outer packets they carried. */
  sends: number;
  segments: number;
  /** Times the kernel refused UDP GSO (sendmmsg from then on, until the offload is set again). */
  refused: number;
}

/** What UDP GRO on the receive socket did (netdev udp_gro.c; the addon's counts). */
export interface UnderlayGro {
  /** Datagrams of several packets the kernel handed over whole, and the packets split from them. */
  bursts: number;
  segments: number;
  /** Packets of a burst beyond what the read batch had room for (dropped). */
  dropped: number;
  /** UDP_GRO is on for the receive socket (false: offload off, or the kernel refused it). */
  on: boolean;
}

function gro(on: boolean): UnderlayGro {
  const s = netdev.stats();
  return { bursts: s.udpGroBursts, segments: s.udpGroSegments, dropped: s.udpGroDropped, on };
}

function gso(): UnderlayGso {
  const s = netdev.stats();
  return { sends: s.vxlanTxGsoSends, segments: s.vxlanTxGsoSegments, refused: s.vxlanTxGsoRefused };
}

function coalesced(): UnderlayCoalesced {
  const s = netdev.stats();
  return { frames: s.tapGroFrames, segments: s.tapGroSegments, errors: s.tapGroErrors };
}

/** The addon's send queue (queueIp3, queueIp6x3) flushed by one microtask per batch, scheduled by its first packet. */
class QueueFlush {
  #pending = false;
  /** Made once: scheduling it per batch allocates nothing. */
  readonly #run = (): void => {
    this.#pending = false;
    netdev.flushIp();
  };

  /** A queue call's result `r`, passed on; a packet queued schedules the flush. */
  after(r: number): number {
    if (r > 0 && !this.#pending) {
      this.#pending = true;
      queueMicrotask(this.#run);
    }
    return r;
  }
}

export class NativeUnderlay implements UnderlayIo {
  readonly #rxHandle: number;
  readonly #txHandle: number;
  #closed = false;
  readonly #queue = new QueueFlush();
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
        vtep.stage(arena, o, lens[i], sender(arena, o), arena[o - TOS]);
      }
      vtep.flush();
    });
  }

  /** `tos` is already in the IPv4 header `a` starts with. */
  send3(dst: number, a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number,
    c: Uint8Array, coff: number, clen: number, _tos: number): number {
    if (this.#closed) return -100;
    return this.#queue.after(netdev.queueIp3(this.#txHandle, dst, a, aoff, alen, b, boff, blen, c, coff, clen));
  }

  sendVxlan(dst: number, outer: Uint8Array, mtu: number, a: Uint8Array, aoff: number, b: Uint8Array, boff: number,
    blen: number, res: Int32Array, _tos: number): number {
    if (this.#closed) return -100;
    return netdev.sendVxlan(this.#txHandle, dst, outer, mtu, a, aoff, b, boff, blen, res);
  }

  /** The receive socket's share of each read-loop round, in bytes or frames (netdev setQuantum; 0: no limit). */
  setReadQuantum(quantum: number, frames = false): void {
    if (!this.#closed) netdev.setQuantum(this.#rxHandle, quantum, frames);
  }

  /** Read-loop rounds in which the receive socket had more datagrams waiting than its quantum took. */
  get readRoundsFull(): number {
    return this.#closed ? 0 : netdev.fairFull(this.#rxHandle);
  }

  /** Queued packets the kernel refused at the flush (the addon's count: one underlay per process). */
  get txQueueErrors(): number {
    return netdev.stats().vxlanTxQueueErrors;
  }

  #offload: string | undefined;

  /**
   * vxlan.offload: "auto" sends a super-frame's segments as UDP GSO datagrams
   * (netdev setUdpGso) and coalesces TCP segments toward TAPs (setTapGro); "off"
   * sends by sendmmsg and writes each frame as it came. Set again only on a change
   * (setUdpGso reopens its sockets, which moves flows to new source ports).
   */
  setOffload(mode: 'auto' | 'off'): void {
    if (this.#closed || mode === this.#offload) return;
    this.#offload = mode;
    netdev.setTapGro(mode !== 'off');
    netdev.setUdpGso(mode !== 'off');
    this.#groOn = netdev.setUdpGro(this.#rxHandle, mode !== 'off') && mode !== 'off';
  }

  /** vxlan.ecn: the outer DS field of each datagram is read only while the VTEP applies it (the kernel's control message costs per datagram). */
  setRecvTos(on: boolean): boolean {
    return !this.#closed && netdev.setUdpRecvTos(this.#rxHandle, on);
  }

  #groOn = false;

  get rxCoalesced(): UnderlayCoalesced { return coalesced(); }

  get rxGro(): UnderlayGro { return gro(this.#groOn); }

  get txGso(): UnderlayGso { return gso(); }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    netdev.close(this.#rxHandle);
    netdev.close(this.#txHandle);
  }
}

export interface Underlay6Options {
  /** Local IPv6 address (16 bytes) to bind. */
  local: Uint8Array;
  port: number;
  ifname?: string;
  /** Accept datagrams with a zero UDP checksum (RFC 6936; Linux vxlan's udp6zerocsumrx). */
  zeroCsumRx?: boolean;
}

/** The IPv6 underlay: `send3`'s `dst` is a remote id of the Vtep it was started with. */
export class NativeUnderlay6 implements UnderlayIo {
  readonly #rxHandle: number;
  readonly #txHandle: number;
  #closed = false;
  #vtep: Vtep | undefined;
  readonly #queue = new QueueFlush();
  failed = 0;

  constructor(opts: Underlay6Options) {
    const rx = netdev.openUdp6(opts.local, opts.port, opts.ifname ?? '', opts.zeroCsumRx ?? false);
    try {
      this.#txHandle = netdev.openRawIp6(opts.local, opts.ifname ?? '').handle;
    } catch (e) {
      netdev.close(rx.handle);
      throw e;
    }
    this.#rxHandle = rx.handle;
  }

  start(vtep: Vtep, onError: (errno: number) => void): void {
    this.#vtep = vtep;
    const table = vtep.remotes6;
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
        vtep.stage(arena, o, lens[i], table.find(arena, o - SENDER6), arena[o - TOS]);
      }
      vtep.flush();
    });
  }

  /** The kernel writes IPv6: the hop limit and the traffic class `tos` go to the addon as one number (netdev queueIp6x3). */
  send3(dst: number, a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number,
    c: Uint8Array, coff: number, clen: number, tos: number): number {
    const v = this.#vtep;
    if (this.#closed || v === undefined) return -100;
    const addr = v.remotes6.addrs[dst];
    if (addr === undefined || dst === 0) return -22;
    return this.#queue.after(netdev.queueIp6x3(this.#txHandle, addr, 0, v.ttl | (tos << 8), a, aoff, alen, b, boff, blen, c, coff, clen));
  }

  /** As NativeUnderlay's: `outer` is UDP + VXLAN (16 bytes), `dst` a remote id; the hop limit is the Vtep's, the traffic class `tos`. */
  sendVxlan(dst: number, outer: Uint8Array, mtu: number, a: Uint8Array, aoff: number, b: Uint8Array, boff: number,
    blen: number, res: Int32Array, tos: number): number {
    const v = this.#vtep;
    if (this.#closed || v === undefined) return -100;
    const addr = v.remotes6.addrs[dst];
    if (addr === undefined || dst === 0) return -22;
    return netdev.sendVxlan6(this.#txHandle, addr, 0, v.ttl | (tos << 8), outer, mtu, a, aoff, b, boff, blen, res);
  }

  /** As NativeUnderlay's: the receive socket's share of each read-loop round (udp6.c drains under it too). */
  setReadQuantum(quantum: number, frames = false): void {
    if (!this.#closed) netdev.setQuantum(this.#rxHandle, quantum, frames);
  }

  get readRoundsFull(): number {
    return this.#closed ? 0 : netdev.fairFull(this.#rxHandle);
  }

  get txQueueErrors(): number {
    return netdev.stats().vxlanTxQueueErrors;
  }

  #offload: string | undefined;

  /** As NativeUnderlay's: UDP GSO for super-frames (over IPv6 sockets), the coalescing toward TAPs, UDP GRO. */
  setOffload(mode: 'auto' | 'off'): void {
    if (this.#closed || mode === this.#offload) return;
    this.#offload = mode;
    netdev.setTapGro(mode !== 'off');
    netdev.setUdpGso(mode !== 'off');
    this.#groOn = netdev.setUdpGro(this.#rxHandle, mode !== 'off') && mode !== 'off';
  }

  /** vxlan.ecn: the outer DS field of each datagram is read only while the VTEP applies it (the kernel's control message costs per datagram). */
  setRecvTos(on: boolean): boolean {
    return !this.#closed && netdev.setUdpRecvTos(this.#rxHandle, on);
  }

  #groOn = false;

  get rxCoalesced(): UnderlayCoalesced { return coalesced(); }

  get rxGro(): UnderlayGro { return gro(this.#groOn); }

  get txGso(): UnderlayGso { return gso(); }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    netdev.close(this.#rxHandle);
    netdev.close(this.#txHandle);
  }
}
