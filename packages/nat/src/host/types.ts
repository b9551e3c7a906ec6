/*
 * What the host-socket NAT's protocol engines (tcp.ts, udp.ts, icmp.ts, dns.ts)
 * share: how they hand packets to a VM, how sessions are listed, and one budget of
 * sessions per inside host, per bridge port and in total, so a VM cannot exhaust
 * the host's sockets whatever protocol it floods with, nor multiply its share by
 * holding many addresses (several leases, or guards off).
 *
 * Frames towards a VM are built by the engines in their own preallocated buffers
 * with HOST_HEADROOM bytes free before the IPv4 header: the router writes the
 * Ethernet header (ETH_HLEN) there, and, for a GSO super-frame or a
 * checksum-partial packet, the engine has written the virtio_net_hdr in the
 * VNET_HDR_LEN bytes before that.
 */
import { ETH_HLEN, VNET_HDR_LEN } from '@vswitch/switch';
import type { PacketPort } from '../napt/translate.js';

export const HOST_HEADROOM = ETH_HLEN + VNET_HDR_LEN;

/**
 * Sends the IPv4 packet buf[ipOff, ipOff+ipLen) to the VM that owns its destination
 * address; the router resolves the VM's MAC and writes the Ethernet header at
 * ipOff-ETH_HLEN. With `vnet`, a virtio_net_hdr is at buf[ipOff-HOST_HEADROOM,
 * ipOff-ETH_HLEN) (offsets in it are from the Ethernet header). Consumed
 * synchronously: the buffer may be reused as soon as it returns.
 */
export type ToVm = (buf: Buffer, ipOff: number, ipLen: number, vnet: boolean) => void;

/** One translated flow, as `vswitch nat sessions` shows it. */
export interface HostSession {
  proto: 'tcp' | 'udp' | 'icmp';
  /** 'out': a VM opened it; 'in': a host port forward opened it towards the VM. */
  direction: 'out' | 'in';
  /** The VM's address and port (ICMP: identifier), "10.0.0.5:43210". */
  inside: string;
  /** The far end as the VM sees it, "192.0.2.7:80". */
  remote: string;
  /** The host socket's local address and port ('' before it is bound). */
  outside: string;
  /** TCP: syn_sent, established, fin_wait, close_wait, closing...; UDP/ICMP: 'active'. */
  state: string;
  /** ms since the last packet either way. */
  idleMs: number;
  /** Payload bytes VM -> host and host -> VM. */
  txBytes: number;
  rxBytes: number;
}

export interface HostBudgetOptions {
  /** All host-socket sessions of the router (TCP + UDP + ICMP). */
  maxSessions: number;
  /** Sessions of one inside address. */
  maxPerHost: number;
  /** Sessions opened from one bridge port (default: maxPerHost). */
  maxPerPort?: number;
}

export const HOST_BUDGET_DEFAULTS: HostBudgetOptions = { maxSessions: 65536, maxPerHost: 4096 };

/**
 * Counts sessions per inside address, per bridge port and in total; refusals are
 * counted by reason. The bridge port is the one of the VM packet being handled
 * (`from`, set by HostNat around each packet), asked only when a session is
 * taken; a session opened from the outside (a host port forward) has none and
 * counts against its address only. take() returns the port charged, which the
 * session keeps and gives back to release().
 */
export class HostBudget {
  readonly opts: Required<HostBudgetOptions>;
  #total = 0;
  readonly #perHost = new Map<number, number>();
  readonly #perPort = new Map<string, number>();
  refusedGlobal = 0;
  refusedPerHost = 0;
  refusedPerPort = 0;
  #from: PacketPort | undefined;
  #buf: Uint8Array | undefined;
  #off = 0;

  constructor(opts: Partial<HostBudgetOptions> = {}) {
    const o = { ...HOST_BUDGET_DEFAULTS, ...opts };
    this.opts = { ...o, maxPerPort: o.maxPerPort ?? o.maxPerHost };
  }

  get total(): number { return this.#total; }

  /** The VM packet being handled (its bridge port is charged for sessions it opens); undefined: none. */
  from(from: PacketPort | undefined, buf?: Uint8Array, ipOff = 0): void {
    this.#from = from;
    this.#buf = buf;
    this.#off = ipOff;
  }

  /**
   * Takes one session for `insideIp`: the bridge port charged ('' for none), or
   * null (and counted) when a limit is reached.
   */
  take(insideIp: number): string | null {
    if (this.#total >= this.opts.maxSessions) {
      this.refusedGlobal++;
      return null;
    }
    const n = this.#perHost.get(insideIp) ?? 0;
    if (n >= this.opts.maxPerHost) {
      this.refusedPerHost++;
      return null;
    }
    const port = this.#from === undefined || this.#buf === undefined ? '' : this.#from.portAt(this.#buf, this.#off);
    if (port !== '') {
      const p = this.#perPort.get(port) ?? 0;
      if (p >= this.opts.maxPerPort) {
        this.refusedPerPort++;
        return null;
      }
      this.#perPort.set(port, p + 1);
    }
    this.#perHost.set(insideIp, n + 1);
    this.#total++;
    return port;
  }

  /** Gives back a session taken for `insideIp` on `port` (take's answer; exactly once per successful take). */
  release(insideIp: number, port = ''): void {
    const n = this.#perHost.get(insideIp) ?? 0;
    if (n <= 0) return;
    if (n === 1) this.#perHost.delete(insideIp);
    else this.#perHost.set(insideIp, n - 1);
    this.#total--;
    if (port !== '') {
      const p = this.#perPort.get(port) ?? 0;
      if (p <= 1) this.#perPort.delete(port);
      else this.#perPort.set(port, p - 1);
    }
  }

  perHost(insideIp: number): number { return this.#perHost.get(insideIp) ?? 0; }
  perPort(port: string): number { return this.#perPort.get(port) ?? 0; }
  portCounts(): Record<string, number> { return Object.fromEntries(this.#perPort); }
}
