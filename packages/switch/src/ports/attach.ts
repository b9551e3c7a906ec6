/*
 * An existing interface joined to the switch through an AF_PACKET socket: a
 * physical NIC as the bridged uplink, a veth end, or a TAP whose fd a hypervisor
 * holds. The socket is promiscuous and ignores its own transmissions; the addon
 * restores VLAN tags the kernel moved into metadata, so this port delivers
 * wire-format frames like any other (GSO frames: see Offloads below).
 *
 * Why AF_PACKET rather than libpcap (`cap`): see packages/netdev/README.md.
 *
 * A link going down and up is absorbed by the addon (the socket keeps its binding);
 * the port goes down only when the interface is deleted or leaves the namespace.
 * With `reattach` (bridge ports) it then reports its link down and looks for an
 * interface of that name every second (recover.ts); when one exists again it
 * reopens the socket with the same options and reports the link up. Without it
 * (the router's uplink, which polls for itself) it reports the port gone.
 *
 * Offloads: the socket takes frames with their virtio_net_hdr on transmit
 * (PACKET_VNET_HDR), so a VM's GSO super-frame leaves whole and the kernel passes it
 * on to a GSO-capable device (a veth) or segments it for the NIC. On receive, with
 * `keepGso` (bridge ports), GSO and checksum-partial frames arrive whole with their
 * header too, and egress completes them only for ports that need it (the router's
 * uplink asks for it as well, and NATs them whole); without it the addon delivers
 * complete frames.
 */
import * as netdev from '@vswitch/netdev';
import type { PortIo, PortRx } from '../port.js';
import { errnoName } from './errno.js';
import { HandleIo } from './handle-io.js';
import { REATTACH_POLL_MS, Retrier, recoveringText } from './recover.js';

export interface AttachPortOptions {
  /** Receive GSO / checksum-partial frames whole, with their header (default false). */
  keepGso?: boolean;
  /** When the interface vanishes, report link down and reattach when it is back (default false). */
  reattach?: boolean;
}

export class AttachIo extends HandleIo implements PortIo {
  readonly kind = 'attach' as const;
  readonly offload = true;
  #ifindex: number;
  /** Times the socket was reopened after the interface came back. */
  reattached = 0;
  readonly #opts: AttachPortOptions;
  readonly #recover: Retrier;
  #watch: NodeJS.Timeout | undefined;

  constructor(readonly ifname: string, opts: AttachPortOptions = {}) {
    const info = netdev.openPacket(ifname, { keepGso: opts.keepGso });
    super(info.handle);
    this.#opts = opts;
    this.#ifindex = info.ifindex;
    this.#recover = new Retrier(() => this.#reattach(), () => REATTACH_POLL_MS);
  }

  get ifindex(): number { return this.#ifindex; }

  start(rx: PortRx): void {
    this.rx = rx;
    this.read();
    // The addon reports a vanished interface from the socket's error, but a deletion
    // racing a read can leave the socket unbound with no error left to report (the
    // kernel raises it at NETDEV_DOWN, unbinds at NETDEV_UNREGISTER). So once a second
    // check that an interface of that name with our ifindex still exists.
    this.#watch = setInterval(() => {
      if (this.handle >= 0 && netdev.ifIndex(this.ifname) !== this.#ifindex) {
        netdev.stop(this.handle);
        this.lost(19 /* ENODEV */);
      }
    }, REATTACH_POLL_MS);
    this.#watch.unref();
  }

  protected lost(errno: number): void {
    const why = `interface ${this.ifname} gone (${errnoName(errno)})`;
    if (this.#opts.reattach !== true) {
      if (this.#watch !== undefined) clearInterval(this.#watch);
      this.#watch = undefined;
      this.rx!.gone(errno, why);
      return;
    }
    this.closeHandle();
    this.rx!.link(false, `${why}; waiting for it to come back`);
    this.#recover.begin();
  }

  #reattach(): true | string {
    if (this.closed) return true;
    if (netdev.ifIndex(this.ifname) === 0) return `no interface ${this.ifname}`;
    let info: netdev.PacketInfo;
    try {
      info = netdev.openPacket(this.ifname, { keepGso: this.#opts.keepGso });
    } catch (e) {
      return (e as Error).message;
    }
    this.handle = info.handle;
    this.#ifindex = info.ifindex;
    this.reattached++;
    this.read();
    this.rx!.link(true, 'interface back');
    return true;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.#watch !== undefined) clearInterval(this.#watch);
    this.#recover.cancel();
    this.closeHandle();
  }

  describe(): Record<string, string | number | boolean> {
    const d: Record<string, string | number | boolean> = { ifname: this.ifname, ifindex: this.#ifindex };
    if (this.reattached > 0) d.reattached = this.reattached;
    if (this.#recover.active) d.recovering = recoveringText(this.#recover, `waiting for ${this.ifname}`);
    return d;
  }
}
