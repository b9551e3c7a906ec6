/*
 * A TAP the daemon owns: it creates the device (or reopens a persistent one of
 * that name), holds the fd, and brings the link up. The kernel side is the VM's
 * NIC: a hypervisor's guest, or in labs a network namespace the link is moved into
 * (the fd stays valid across the move).
 *
 * Lifecycle: deleting the device (or its namespace) surfaces as a read error; the
 * port then goes down (link down, reason in `show`) and the daemon recreates the
 * TAP (same name and options, in its own namespace) at once, retrying after 1 s,
 * 2 s ... up to 30 s if that fails (the name taken, say); see recover.ts. Once it
 * exists again the port comes back up, and the hypervisor (or the lab) moves or
 * opens the new device as it did the first. `recreate: false` keeps the old
 * behaviour: the port stays down until `delif`. Closing the port
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
import { HandleIo } from './handle-io.js';
import { Retrier, backoffMs, nextStreak, recoveringText } from './recover.js';

export interface TapPortOptions {
  persistent?: boolean;
  owner?: number;
  group?: number;
  /** Guest offloads through the virtio-net header (default true). */
  offload?: boolean;
  /** Recreate the device when it is deleted from under the daemon (default true). */
  recreate?: boolean;
}

export class TapIo extends HandleIo implements PortIo {
  readonly kind = 'tap' as const;
  readonly ifname: string;
  readonly offload: boolean;
  /** Times the device was recreated after it vanished. */
  recreated = 0;
  #persistent: boolean;
  readonly #opts: TapPortOptions;
  readonly #recover: Retrier;
  #recoveredAt = -Infinity;
  #streak = 0;

  constructor(name: string, opts: TapPortOptions = {}) {
    const offload = opts.offload ?? true;
    const info = openTap(name, opts, offload);
    super(info.handle);
    this.offload = offload;
    this.#opts = { ...opts };
    this.ifname = info.name;
    this.#persistent = opts.persistent ?? false;
    this.#recover = new Retrier(() => this.#recreate(), (n) => backoffMs(n));
  }

  start(rx: PortRx): void {
    this.rx = rx;
    this.read();
  }

  protected lost(errno: number): void {
    const why = `TAP read failed (${errnoName(errno)}): device deleted?`;
    if (this.#opts.recreate === false) {
      this.rx!.gone(errno, why);
      return;
    }
    this.closeHandle();
    this.rx!.link(false, `${why} recreating it`);
    this.#streak = nextStreak(this.#streak, Date.now() - this.#recoveredAt);
    this.#recover.begin(this.#streak);
  }

  #recreate(): true | string {
    if (this.closed) return true;
    let info: netdev.TapInfo;
    try {
      info = openTap(this.ifname, this.#opts, this.offload);
    } catch (e) {
      return (e as Error).message;
    }
    this.handle = info.handle;
    this.recreated++;
    this.#recoveredAt = Date.now();
    this.read();
    this.rx!.link(true, 'TAP recreated');
    return true;
  }

  /**
   * Keeps the device after the daemon closes it (or not), in place: TUNSETPERSIST on
   * the open fd, so the VM's NIC stays. While the device is being recreated there is
   * no fd: the recreated one gets the new setting.
   */
  setPersistent(on: boolean): void {
    if (this.handle >= 0) netdev.setPersist(this.handle, on);
    this.#persistent = on;
    this.#opts.persistent = on;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.#recover.cancel();
    this.closeHandle();
  }

  describe(): Record<string, string | number | boolean> {
    const d: Record<string, string | number | boolean> = { ifname: this.ifname, persistent: this.#persistent, offload: this.offload };
    if (this.recreated > 0) d.recreated = this.recreated;
    if (this.#recover.active) d.recovering = recoveringText(this.#recover, 'recreating the TAP');
    return d;
  }
}

function openTap(name: string, o: TapPortOptions, offload: boolean): netdev.TapInfo {
  return netdev.openTap(name, { persist: o.persistent, owner: o.owner, group: o.group, vnetHdr: offload });
}
