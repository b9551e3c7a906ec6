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
 */
import * as netdev from '@vswitch/netdev';
import type { PortIo, PortRx } from '../port.js';
import { errnoName } from './errno.js';

export interface TapPortOptions {
  persistent?: boolean;
  owner?: number;
  group?: number;
}

export class TapIo implements PortIo {
  readonly kind = 'tap' as const;
  readonly ifname: string;
  readonly #handle: number;
  readonly #persistent: boolean;
  #closed = false;

  constructor(name: string, opts: TapPortOptions = {}) {
    const info = netdev.openTap(name, { persist: opts.persistent, owner: opts.owner, group: opts.group });
    this.#handle = info.handle;
    this.ifname = info.name;
    this.#persistent = opts.persistent ?? false;
  }

  start(rx: PortRx): void {
    const ring = netdev.ring();
    netdev.start(this.#handle, (count) => {
      if (count >= 0) rx.batch(ring.arena, ring.offs, ring.lens, count);
      else rx.gone(-count, `TAP read failed (${errnoName(-count)}): device deleted?`);
    });
  }

  send(buf: Uint8Array, off: number, len: number): number {
    return netdev.send(this.#handle, buf, off, len);
  }

  send2(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    return netdev.send2(this.#handle, a, aoff, alen, b, boff, blen);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    netdev.close(this.#handle);
  }

  describe(): Record<string, string | number | boolean> {
    return { ifname: this.ifname, persistent: this.#persistent };
  }
}
