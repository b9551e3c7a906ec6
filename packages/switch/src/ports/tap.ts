/*
 * A TAP the daemon owns: it creates the device (or reopens a persistent one of
 * that name), holds the fd, and brings the link up. The kernel side is the VM's
 * NIC: a hypervisor's guest, or in labs a network namespace the link is moved into
 * (the fd stays valid across the move).
 *
 * Lifecycle: deleting the device (or its namespace) surfaces as a read error; the
 * port then goes down and stays in the bridge until `delif`. Closing the port
 * deletes a non-persistent TAP (the kernel does, when the last fd closes) and
 * keeps a persistent one, which is what lets the daemon restart under a VM.
 *
 * Offloads (on unless `offload: false`): the TAP is opened with the virtio-net
 * header and TSO/checksum offloads, so the VM's side has TSO and tx-checksumming on
 * and hands the switch GSO super-frames of up to 64 KB with their header; frames
 * sent to it keep theirs (see port.ts and egress.ts). Off, the VM segments and
 * checksums in its own kernel and every frame is at most MTU-sized.
 */
import * as netdev from '@vswitch/netdev';
import type { PortIo, PortRx } from '../port.js';
import { errnoName } from './errno.js';
import { installNativeSegmenter } from './segment.js';

export interface TapPortOptions {
  persistent?: boolean;
  owner?: number;
  group?: number;
  /** Guest offloads through the virtio-net header (default true). */
  offload?: boolean;
}

export class TapIo implements PortIo {
  readonly kind = 'tap' as const;
  readonly ifname: string;
  readonly offload: boolean;
  readonly #handle: number;
  readonly #persistent: boolean;
  #closed = false;

  constructor(name: string, opts: TapPortOptions = {}) {
    this.offload = opts.offload ?? true;
    installNativeSegmenter();
    const info = netdev.openTap(name, { persist: opts.persistent, owner: opts.owner, group: opts.group, vnetHdr: this.offload });
    this.#handle = info.handle;
    this.ifname = info.name;
    this.#persistent = opts.persistent ?? false;
  }

  start(rx: PortRx): void {
    const ring = netdev.ring();
    netdev.start(this.#handle, (count) => {
      if (count >= 0) rx.batch(ring.arena, ring.offs, ring.lens, count, true);
      else rx.gone(-count, `TAP read failed (${errnoName(-count)}): device deleted?`);
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
    return { ifname: this.ifname, persistent: this.#persistent, offload: this.offload };
  }
}
