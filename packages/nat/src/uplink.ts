/*
 * The router's uplink: an existing interface (a NIC, or a veth in labs) read and
 * written through AF_PACKET, on which the router is a host of its own, with its
 * own MAC and IPv4 address, like a home router's WAN port. The host's network
 * stack is not touched: no address on the interface, no iptables, no ip_forward.
 *
 * It answers ARP for its address, resolves next hops (the gateway, or the
 * destination itself when it is on the uplink subnet), and announces itself with a
 * gratuitous ARP when it comes up. IPv4 packets addressed to it go to `onIp`
 * (NAPT's inbound side), translated in place in the receive ring.
 *
 * Offloads: the packet socket keeps GSO (`keepGso`), so the internet side's GSO
 * super-frames and checksum-partial frames arrive whole with their virtio_net_hdr;
 * vnet.ts decides whether one goes on with it (TCP/UDP with the partial checksum at
 * its place: `onIp`'s `vnet`, NAPT updates it as partial) or is completed here
 * first. `sendIp` with `vnet` writes such a packet out whole with its header
 * (sendVnet), so a VM's super-frame leaves as one and the kernel segments it, if
 * at all, for the NIC.
 *
 * IPv6 frames (to its MAC, or to an IPv6 group: 33:33:...) go to `ipv6`, the
 * uplink's IPv6 side (uplink6.ts), when the router has one; it sends through
 * `sendFrame`.
 *
 * The interface need not exist when the daemon starts, and may vanish and come
 * back (a NIC reset, a veth recreated): `poll()`, called every second by the
 * router, attaches whenever it is there and not yet attached; the uplink is
 * 'waiting' meanwhile, and every attach is announced with a gratuitous ARP.
 *
 * The address is static (address, prefix, gateway from the config) or, with
 * `dhcp`, obtained by the DHCP client of dhcp/client.ts, whose actions this class
 * carries out: while it has no address the uplink sends DHCP from 0.0.0.0 to the
 * broadcast address, takes UDP 67 -> 68 replies addressed to its MAC or to
 * broadcast (whatever their IP destination: yiaddr before it has one), answers no
 * ARP, and NAPT has no public address (`no_public_address`). When bound it takes
 * address, prefix and gateway (option 3) from the lease, tells `onAddress` (NAPT's
 * publicIp), announces itself with a gratuitous ARP and persists the lease
 * (`dhcp.save`); when the lease is lost the address goes back to 0. Renewals go
 * unicast to the server through sendIp (resolved by ARP like any next hop). The
 * first retransmission is after 2 s (RFC 2131 says 4 s) for a quick start; then
 * 4, 8, ... 64 s. Every attach (the first, and after the interface came back)
 * calls the client's linkUp: DISCOVER/REQUEST now, or renew a held lease now.
 */
import * as netdev from '@vswitch/netdev';
import {
  ARP_REPLY, ARP_REQUEST, ETH_HLEN, IPPROTO, IPV4_OK, MAC_BROADCAST, type PortRx, arpOper, arpSha, arpSpa, arpTpa,
  checkArp, checkIpv4, checkUdp, dstMac, etherType, formatIp4, formatMac, ip4Dst, ip4HeaderLen, ip4IsFragment, ip4Proto,
  ip4TotalLen, udpDport, udpLen, udpSport, VNET_HDR_LEN, vnetWork,
} from '@vswitch/switch';
import { AttachIo } from '@vswitch/switch/ports';
import { ArpCache } from './arp-cache.js';
import { arpFrame, udpFrame, writeEth } from './frames.js';
import { VNET_DROP, VNET_PARTIAL, holdCopy, vnetPrepare } from './vnet.js';
import { DhcpClient, type DhcpClientAction, type DhcpClientLease, type DhcpClientOptions } from './dhcp/client.js';
import { parseDhcp } from './dhcp/wire.js';
import type { Uplink6 } from './uplink6.js';

/** The uplink's own DHCP client. */
export interface UplinkDhcpOptions {
  /** Option 12. */
  hostname?: string;
  /** The lease persisted by the previous run: INIT-REBOOT asks for its address again. */
  previous?: DhcpClientLease;
  /** Persists the lease (null: forget it). A throw is counted (`dhcpSaveErrors`), not fatal. */
  save?: (lease: DhcpClientLease | null) => void;
  /** Retransmission tuning (tests); defaults: first retry 2 s, then RFC 2131's doubling to 64 s. */
  client?: Pick<DhcpClientOptions, 'firstRetransmitMs' | 'maxRetransmitMs' | 'jitterMs' | 'requestTries' | 'rebootTimeoutMs' |
    'minRenewRetransmitMs' | 'nakDelayMs' | 'random'>;
}

export type UplinkEvent =
  | { event: 'uplink_address'; source: 'dhcp'; address: string; gateway: string; server: string; leaseSec: number; renewed: boolean }
  | { event: 'uplink_address_lost'; source: 'dhcp'; address: string; reason: string }
  | { event: 'uplink_dhcp_save_failed'; error: string };

const DHCP_SERVER_PORT = 67;
const DHCP_CLIENT_PORT = 68;
const UPLINK_DHCP_FIRST_RETRANSMIT_MS = 2000;

export interface UplinkOptions {
  ifname: string;
  mac: number;
  /** Static address and prefix; ignored (0) with `dhcp`. */
  address: number;
  prefix: number;
  /** Default gateway on the uplink segment; 0 = only the uplink subnet is reachable. With `dhcp`: from option 3. */
  gateway: number;
  clock: () => number;
  /** Wall-clock ms for DHCP lease times (default Date.now). */
  wallClock?: () => number;
  /** Obtain address, prefix and gateway by DHCP on the uplink. */
  dhcp?: UplinkDhcpOptions;
}

export interface UplinkCounters {
  rxFrames: number;
  txFrames: number;
  txErrors: number;
  arpReplies: number;
  ignored: number;
  malformed: number;
  noRoute: number;
  /** DHCP replies (UDP 67 -> 68) that parseDhcp refused. */
  dhcpMalformed: number;
  dhcpSaveErrors: number;
  /** GSO frames whose virtio_net_hdr NAPT cannot honour (vnet.ts), dropped. */
  offloadDropped: number;
}

export class Uplink {
  readonly arp: ArpCache;
  readonly counters: UplinkCounters = {
    rxFrames: 0, txFrames: 0, txErrors: 0, arpReplies: 0, ignored: 0, malformed: 0, noRoute: 0, dhcpMalformed: 0, dhcpSaveErrors: 0,
    offloadDropped: 0,
  };
  mask: number;
  /** The DHCP client, when the address is obtained by DHCP. */
  readonly dhcp: DhcpClient | undefined;
  up = false;
  downReason = 'not started';
  /** Times the interface was attached, and lost. */
  attaches = 0;
  downEvents = 0;
  /**
   * IPv4 packets addressed to the uplink address: buf[ipOff..ipOff+ipLen), with room
   * for a header before. With `vnet` the packet's virtio_net_hdr is at
   * buf[ipOff-ETH_HLEN-VNET_HDR_LEN, ipOff-ETH_HLEN) and its L4 checksum is partial
   * (vnet.ts); without it the packet is complete.
   */
  onIp: (buf: Uint8Array, ipOff: number, ipLen: number, vnet: boolean) => void = () => {};
  /** The address changed (DHCP bound, renewed to another, or lost: 0). */
  onAddress: (ip: number) => void = () => {};
  onEvent: (e: UplinkEvent) => void = () => {};
  /** The uplink's IPv6 side (uplink6.ts), when the router has IPv6 on its uplink. */
  ipv6: Uplink6 | undefined;
  #io: AttachIo | undefined;
  readonly #out = Buffer.alloc(128);
  readonly #dhcpOut = Buffer.alloc(1600);
  #ip: number;
  #prefix: number;
  #gateway: number;
  readonly #wall: () => number;

  constructor(readonly opts: UplinkOptions) {
    this.#wall = opts.wallClock ?? Date.now;
    const d = opts.dhcp;
    this.#ip = d ? 0 : opts.address;
    this.#prefix = d ? 0 : opts.prefix;
    this.#gateway = d ? 0 : opts.gateway;
    this.mask = prefixMask(this.#prefix);
    this.arp = new ArpCache(opts.clock);
    this.dhcp = d ? new DhcpClient({
      mac: opts.mac, hostname: d.hostname, previous: d.previous, firstRetransmitMs: UPLINK_DHCP_FIRST_RETRANSMIT_MS, ...d.client,
    }) : undefined;
  }

  get ip(): number { return this.#ip; }
  get prefix(): number { return this.#prefix; }
  get gateway(): number { return this.#gateway; }

  /** Attaches now if the interface exists; otherwise `poll()` keeps trying. */
  start(): void {
    this.poll();
  }

  /** Attaches the interface if it is present and we are not attached. Returns whether up. */
  poll(): boolean {
    if (this.up) return true;
    if (netdev.ifIndex(this.opts.ifname) === 0) {
      this.downReason = `waiting for interface ${this.opts.ifname}`;
      return false;
    }
    this.#io?.close();
    let io: AttachIo;
    try {
      io = new AttachIo(this.opts.ifname, { keepGso: true });
    } catch (e) {
      this.downReason = `cannot attach ${this.opts.ifname}: ${(e as Error).message}`;
      return false;
    }
    this.#io = io;
    // Attached again: the neighbours may have changed (a veth recreated has a new
    // peer MAC), so forget what ARP learnt and ask again.
    if (this.attaches > 0) for (const e of this.arp.entries()) this.arp.forget(e.ip);
    const rx: PortRx = {
      batch: (buf, offs, lens, count, vnet) => {
        const hdr = vnet === true;
        for (let i = 0; i < count; i++) this.#input(buf, offs[i], lens[i], hdr);
      },
      frame: (buf, off, len) => this.#input(buf, off, len, false),
      gone: (_errno, why) => {
        this.up = false;
        this.downReason = why;
        this.downEvents++;
      },
      link: () => {}, // packet sockets report only a vanished interface (gone)
    };
    io.start(rx);
    this.up = true;
    this.downReason = '';
    this.attaches++;
    this.announce();
    this.ipv6?.linkUp();
    if (this.dhcp) this.#dhcpRun(this.dhcp.linkUp(this.#wall()));
    return true;
  }

  /** Called every second by the router: attach if needed, then the DHCP client's timers. */
  tick(): void {
    this.poll();
    if (this.dhcp) this.#dhcpRun(this.dhcp.tick(this.#wall()));
  }

  close(): void {
    this.#io?.close();
    this.#io = undefined;
    this.up = false;
  }

  /** Gratuitous ARP: tells the segment (and switches on it) where our address lives. */
  announce(): void {
    if (this.ip === 0) return;
    const n = arpFrame(this.#out, ARP_REQUEST, MAC_BROADCAST, this.opts.mac, this.ip, 0, this.ip);
    this.#send(this.#out, 0, n);
  }

  describe(): Record<string, unknown> {
    return {
      interface: this.opts.ifname, mac: formatMac(this.opts.mac), address: this.ip ? `${formatIp4(this.ip)}/${this.#prefix}` : '',
      gateway: this.#gateway ? formatIp4(this.#gateway) : '', state: this.up ? 'up' : `down (${this.downReason})`,
      addressSource: this.dhcp ? 'dhcp' : 'static',
      ...(this.dhcp ? { dhcp: this.dhcp.describe(this.#wall()) } : {}),
      counters: { ...this.counters },
    };
  }

  /**
   * Sends buf[ipOff..ipOff+ipLen) towards `dst`; ETH_HLEN bytes before ipOff are
   * overwritten. With `vnet`, the packet's virtio_net_hdr is before those and goes
   * out with it.
   */
  sendIp(buf: Uint8Array, ipOff: number, ipLen: number, dst: number, vnet = false): void {
    const nextHop = ((dst & this.mask) >>> 0) === ((this.ip & this.mask) >>> 0) ? dst : this.#gateway;
    if (nextHop === 0) {
      this.counters.noRoute++;
      return;
    }
    const frameOff = ipOff - ETH_HLEN;
    const mac = this.arp.lookup(nextHop);
    if (mac === undefined) {
      if (this.arp.hold(nextHop, holdCopy(buf, frameOff, ETH_HLEN + ipLen, vnet))) {
        const n = arpFrame(this.#out, ARP_REQUEST, MAC_BROADCAST, this.opts.mac, this.ip, 0, nextHop);
        this.#send(this.#out, 0, n);
      }
      return;
    }
    writeEth(buf, mac, this.opts.mac, 0x0800, frameOff);
    if (vnet) this.#sendVnet(buf, frameOff, ETH_HLEN + ipLen);
    else this.#send(buf, frameOff, ETH_HLEN + ipLen);
  }

  /** A whole frame out of the uplink (uplink6.ts); with `vnet` its virtio_net_hdr before it. */
  sendFrame(buf: Uint8Array, off: number, len: number, vnet: boolean): void {
    if (vnet) this.#sendVnet(buf, off, len);
    else this.#send(buf, off, len);
  }

  #send(buf: Uint8Array, off: number, len: number): void {
    const io = this.#io;
    if (io === undefined) return;
    if (io.send(buf, off, len) < 0) this.counters.txErrors++;
    else this.counters.txFrames++;
  }

  /** The frame with its virtio_net_hdr at buf[off-VNET_HDR_LEN, off), whole (the packet socket speaks the header). */
  #sendVnet(buf: Uint8Array, off: number, len: number): void {
    const io = this.#io;
    if (io === undefined) return;
    if (io.sendVnet(buf, off, len) < 0) this.counters.txErrors++;
    else this.counters.txFrames++;
  }

  /** `hdr`: the frame's virtio_net_hdr is at buf[off-VNET_HDR_LEN, off). */
  #input(buf: Uint8Array, off: number, len: number, hdr: boolean): void {
    this.counters.rxFrames++;
    if (len < ETH_HLEN) {
      this.counters.malformed++;
      return;
    }
    const type = etherType(buf, off);
    if (type === 0x86dd && this.ipv6 !== undefined) {
      this.ipv6.input(buf, off, len, hdr);
      return;
    }
    const dst = dstMac(buf, off);
    if (dst !== this.opts.mac && dst !== MAC_BROADCAST) return; // promiscuous socket: others' traffic
    if (type === 0x0806) this.#onArp(buf, off + ETH_HLEN, len - ETH_HLEN);
    else if (type === 0x0800 && (dst === this.opts.mac || this.dhcp !== undefined)) {
      const ip = off + ETH_HLEN;
      if (checkIpv4(buf, ip, len - ETH_HLEN) !== IPV4_OK) {
        this.counters.malformed++;
        return;
      }
      // DHCP replies: to our MAC or broadcast, any IP destination (yiaddr, broadcast, our address).
      if (this.dhcp !== undefined && ip4Proto(buf, ip) === IPPROTO.UDP && this.#dhcpInput(buf, ip)) return;
      if (dst !== this.opts.mac || this.ip === 0 || ip4Dst(buf, ip) !== this.ip) {
        this.counters.ignored++;
        return;
      }
      const total = ip4TotalLen(buf, ip);
      let partial = false;
      if (hdr && vnetWork(buf, off - VNET_HDR_LEN)) {
        const v = vnetPrepare(buf, ip, total);
        if (v === VNET_DROP) {
          this.counters.offloadDropped++;
          return;
        }
        partial = v === VNET_PARTIAL;
      }
      this.onIp(buf, ip, total, partial);
    } else this.counters.ignored++;
  }

  #onArp(buf: Uint8Array, a: number, len: number): void {
    if (!checkArp(buf, a, len)) {
      this.counters.malformed++;
      return;
    }
    const oper = arpOper(buf, a);
    const spa = arpSpa(buf, a);
    const sha = arpSha(buf, a);
    const tpa = arpTpa(buf, a);
    const mine = this.ip !== 0 && tpa === this.ip;
    if (spa !== 0 && spa !== this.ip && (mine || oper === ARP_REPLY || this.arp.lookup(spa) !== undefined)) {
      for (const pending of this.arp.learn(spa, sha)) {
        // A held copy: header, then the frame (vnet.ts holdCopy).
        writeEth(pending, sha, this.opts.mac, 0x0800, VNET_HDR_LEN);
        if (vnetWork(pending, 0)) this.#sendVnet(pending, VNET_HDR_LEN, pending.length - VNET_HDR_LEN);
        else this.#send(pending, VNET_HDR_LEN, pending.length - VNET_HDR_LEN);
      }
    }
    if (oper === ARP_REQUEST && mine && spa !== this.ip) {
      const n = arpFrame(this.#out, ARP_REPLY, sha, this.opts.mac, this.ip, sha, spa);
      this.counters.arpReplies++;
      this.#send(this.#out, 0, n);
    }
  }

  /** A UDP 67 -> 68 datagram is the DHCP client's (true: consumed). */
  #dhcpInput(buf: Uint8Array, ip: number): boolean {
    if (ip4IsFragment(buf, ip)) return false;
    const hl = ip4HeaderLen(buf, ip);
    const udp = ip + hl;
    const l4len = ip4TotalLen(buf, ip) - hl;
    if (!checkUdp(buf, udp, l4len) || udpDport(buf, udp) !== DHCP_CLIENT_PORT || udpSport(buf, udp) !== DHCP_SERVER_PORT) return false;
    // The UDP checksum is not verified: frames from a veth peer may carry a partial one (checksum offload).
    const m = parseDhcp(buf, udp + 8, udpLen(buf, udp) - 8);
    if (typeof m === 'number') this.counters.dhcpMalformed++;
    else this.#dhcpRun(this.dhcp!.receive(m, this.#wall()));
    return true;
  }

  #dhcpRun(actions: DhcpClientAction[]): void {
    for (const a of actions) {
      switch (a.kind) {
        case 'send': {
          const n = udpFrame(this.#dhcpOut, MAC_BROADCAST, this.opts.mac, a.srcIp, a.dstIp, DHCP_CLIENT_PORT, DHCP_SERVER_PORT,
            a.payload, a.payload.length);
          if (a.broadcast) this.#send(this.#dhcpOut, 0, n);
          else this.sendIp(this.#dhcpOut, ETH_HLEN, n - ETH_HLEN, a.dstIp);
          break;
        }
        case 'bound': {
          const l = a.lease;
          const changed = l.ip !== this.#ip;
          this.#ip = l.ip;
          this.#prefix = l.prefix;
          this.mask = prefixMask(l.prefix);
          this.#gateway = l.router;
          this.onEvent({
            event: 'uplink_address', source: 'dhcp', address: `${formatIp4(l.ip)}/${l.prefix}`,
            gateway: l.router ? formatIp4(l.router) : '', server: formatIp4(l.serverId), leaseSec: l.leaseSec, renewed: !changed,
          });
          if (changed) {
            this.onAddress(l.ip);
            this.announce();
          }
          break;
        }
        case 'lost':
          this.onEvent({ event: 'uplink_address_lost', source: 'dhcp', address: formatIp4(a.ip), reason: a.reason });
          this.#ip = 0;
          this.#prefix = 0;
          this.mask = 0;
          this.#gateway = 0;
          this.onAddress(0);
          break;
        case 'persist':
          try {
            this.opts.dhcp?.save?.(a.lease);
          } catch (e) {
            this.counters.dhcpSaveErrors++;
            this.onEvent({ event: 'uplink_dhcp_save_failed', error: (e as Error).message });
          }
          break;
      }
    }
  }
}

function prefixMask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}
