/*
 * An existing interface joined to the switch through an AF_PACKET socket: a
 * physical NIC as the bridged uplink, a veth end, or a TAP whose fd a hypervisor
 * holds. The socket is promiscuous and ignores its own transmissions; the addon
 * restores VLAN tags the kernel moved into metadata and segments GSO frames, so
 * this port delivers wire-format frames like any other.
 *
 * Why AF_PACKET rather than libpcap (`cap`): see packages/netdev/README.md.
 *
 * A link going down and up is absorbed by the addon (the socket keeps its binding);
 * the port goes down only when the interface is deleted or leaves the namespace.
 *
 * Offloads: the socket takes frames with their virtio_net_hdr on transmit
 * (PACKET_VNET_HDR), so a VM's GSO super-frame leaves whole and the kernel passes it
 * on to a GSO-capable device (a veth) or segments it for the NIC. On receive, with
 * `keepGso` (bridge ports), GSO and checksum-partial frames arrive whole with their
 * header too, and egress completes them only for ports that need it; without it
 * (the router's uplink, which parses frames) the addon delivers complete frames.
 */
import * as netdev from '@vswitch/netdev';
import type { PortIo, PortRx } from '../port.js';
import { errnoName } from './errno.js';
import { installNativeSegmenter } from './segment.js';

export interface AttachPortOptions {
  /** Receive GSO / checksum-partial frames whole, with their header (default false). */
  keepGso?: boolean;
}

export class AttachIo implements PortIo {
  readonly kind = 'attach' as const;
  readonly offload = true;
  readonly ifindex: number;
  readonly #handle: number;
  #closed = false;

  constructor(readonly ifname: string, opts: AttachPortOptions = {}) {
    installNativeSegmenter();
    const info = netdev.openPacket(ifname, { keepGso: opts.keepGso });
    this.#handle = info.handle;
    this.ifindex = info.ifindex;
  }

  start(rx: PortRx): void {
    const ring = netdev.ring();
    netdev.start(this.#handle, (count) => {
      if (count >= 0) rx.batch(ring.arena, ring.offs, ring.lens, count, true);
      else rx.gone(-count, `interface ${this.ifname} gone (${errnoName(-count)})`);
    });
  }

  send(buf: Uint8Array, off: number, len: number): number {
    return netdev.send(this.#handle, buf, off, len);
  }

  send2(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    return netdev.send2(this.#handle, a, aoff, alen, b, boff, blen);
  }

  sendVnet(buf: Uint8Array, off: number, len: number): number {
    return netdev.sendVnet(this.#handle, buf, off, len);
  }

  send2Vnet(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    return netdev.send2Vnet(this.#handle, a, aoff, alen, b, boff, blen);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    netdev.close(this.#handle);
  }

  describe(): Record<string, string | number | boolean> {
    return { ifname: this.ifname, ifindex: this.ifindex };
  }
}
