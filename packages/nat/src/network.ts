/*
 * One router network: the router's port on one VLAN of one bridge, with the
 * gateway's MAC and IPv4 address. It is a PortIo like a TAP, so the bridge floods
 * and forwards to it as to any VM. What it does with a frame:
 * - ARP: answers requests for the gateway address; learns from requests and
 *   replies that involve it (the ARP cache holds packets waiting for an answer);
 * - IPv4 to the gateway: ICMP echo is answered, UDP 67 goes to the DHCP server;
 * - IPv4 to elsewhere: handed to the router (`route`), which decides between
 *   another network, NAPT to the uplink, or an ICMP error.
 * Everything else is ignored and counted.
 *
 * The bridge calls `send` while it is forwarding a frame, perhaps in the middle of
 * a flood, so a frame arriving here is copied first (the bridge may still send the
 * same bytes to other ports, and NAPT rewrites in place). Answers go straight back
 * into the bridge, which holds them until its current frame is done.
 */
import {
  ARP_REPLY, ARP_REQUEST, ETH_HLEN, ICMP_TYPE, IPPROTO, IPV4_OK, MAC_BROADCAST, type PortIo, type PortRx,
  arpOper, arpSha, arpSpa, arpTpa, checkArp, checkIcmp, checkIpv4, checkUdp, checksum, etherType, formatIp4, formatMac,
  ip4Dst, ip4HeaderLen, ip4IsFragment, ip4Proto, ip4Src, ip4TotalLen, readMac, udpDport, udpLen, write16, write32,
} from '@vswitch/switch';
import { ArpCache } from './arp-cache.js';
import { arpFrame, udpFrame, writeEth } from './frames.js';
import { DhcpMsg } from './dhcp/wire.js';
import type { DhcpServer } from './dhcp/server.js';

export const MAX_FRAME = 65536 + 64;

export interface NetworkOptions {
  name: string;
  vlan: number;
  gatewayIp: number;
  prefix: number;
  mac: number;
  clock: () => number;
  /** Wall-clock ms for DHCP (leases outlive the process). */
  wallClock?: () => number;
  dhcp?: DhcpServer;
  /** Which bridge port a MAC was learned on, for per-port DHCP policy. */
  portOf?: (mac: number) => string;
  /**
   * A lease was ACKed to `mac` on bridge port `port` (portOf; '' if unknown) until
   * `expiresAt` (wall-clock ms): the daemon binds it in that port's IP source guard.
   */
  onLease?: (port: string, mac: number, ip: number, expiresAt: number) => void;
  /** Lease granted or refused; the router bounds how many reach the log. */
  onEvent?: (e: NetworkEvent) => void;
}

export type NetworkEvent =
  | { event: 'dhcp_ack'; network: string; ip: string; mac: string; port: string }
  | { event: 'dhcp_nak'; network: string; mac: string; port: string };

export interface NetworkCounters {
  rxFrames: number;
  txFrames: number;
  arpReplies: number;
  icmpEchoReplies: number;
  dhcpRequests: number;
  dhcpReplies: number;
  routed: number;
  ignored: number;
  malformed: number;
}

export type RouteFn = (from: RouterNetwork, buf: Uint8Array, ipOff: number, ipLen: number) => void;

export class RouterNetwork implements PortIo {
  readonly kind = 'router' as const;
  readonly arp: ArpCache;
  readonly counters: NetworkCounters = {
    rxFrames: 0, txFrames: 0, arpReplies: 0, icmpEchoReplies: 0, dhcpRequests: 0, dhcpReplies: 0, routed: 0, ignored: 0, malformed: 0,
  };
  readonly mask: number;
  readonly network: number;
  readonly broadcast: number;
  route: RouteFn = () => {};

  #rx: PortRx | undefined;
  readonly #in = Buffer.alloc(MAX_FRAME);
  readonly #out = Buffer.alloc(2048);
  readonly #dhcpOut = Buffer.alloc(1500);

  constructor(readonly opts: NetworkOptions) {
    this.mask = opts.prefix === 0 ? 0 : (0xffffffff << (32 - opts.prefix)) >>> 0;
    this.network = (opts.gatewayIp & this.mask) >>> 0;
    this.broadcast = (this.network | ~this.mask) >>> 0;
    this.arp = new ArpCache(opts.clock);
  }

  get name(): string { return this.opts.name; }
  get mac(): number { return this.opts.mac; }
  get ip(): number { return this.opts.gatewayIp; }

  contains(ip: number): boolean {
    return ((ip & this.mask) >>> 0) === this.network;
  }

  start(rx: PortRx): void {
    this.#rx = rx;
  }

  send(buf: Uint8Array, off: number, len: number): number {
    if (len > MAX_FRAME) return len;
    this.#in.set(buf.subarray(off, off + len), 0);
    this.#input(len);
    return len;
  }

  send2(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    if (alen + blen > MAX_FRAME) return alen + blen;
    this.#in.set(a.subarray(aoff, aoff + alen), 0);
    this.#in.set(b.subarray(boff, boff + blen), alen);
    this.#input(alen + blen);
    return alen + blen;
  }

  close(): void {
    this.#rx = undefined;
  }

  describe(): Record<string, string | number | boolean> {
    return { network: this.name, address: `${formatIp4(this.ip)}/${this.opts.prefix}` };
  }

  /**
   * Sends the IPv4 packet at buf[ipOff..ipOff+ipLen) to `nextHop` on this network;
   * there must be ETH_HLEN bytes of room before ipOff. Resolves the MAC by ARP,
   * holding a copy of the packet meanwhile.
   */
  sendIp(buf: Uint8Array, ipOff: number, ipLen: number, nextHop: number): void {
    const frameOff = ipOff - ETH_HLEN;
    const mac = this.arp.lookup(nextHop);
    if (mac === undefined) {
      const copy = Buffer.allocUnsafe(ETH_HLEN + ipLen);
      copy.set(buf.subarray(frameOff, ipOff + ipLen));
      if (this.arp.hold(nextHop, copy)) this.#arpRequest(nextHop);
      return;
    }
    writeEth(buf, mac, this.mac, 0x0800, frameOff);
    this.emit(buf, frameOff, ETH_HLEN + ipLen);
  }

  /** Sends a frame into the bridge. */
  emit(buf: Uint8Array, off: number, len: number): void {
    const rx = this.#rx;
    if (rx === undefined) return;
    this.counters.txFrames++;
    rx.frame(buf, off, len);
  }

  #input(len: number): void {
    this.counters.rxFrames++;
    const f = this.#in;
    if (len < ETH_HLEN) {
      this.counters.malformed++;
      return;
    }
    // Ours: to our MAC or broadcast. Other unicast reaches us only by flooding.
    if ((f[0] & 1) === 0) {
      if (readMac(f, 0) !== this.mac) {
        this.counters.ignored++;
        return;
      }
    } else if (readMac(f, 0) !== MAC_BROADCAST) {
      this.counters.ignored++;
      return;
    }
    const type = etherType(f, 0);
    if (type === 0x0806) this.#onArp(f, len);
    else if (type === 0x0800) this.#onIpv4(f, len);
    else this.counters.ignored++;
  }

  #onArp(f: Uint8Array, len: number): void {
    const a = ETH_HLEN;
    if (!checkArp(f, a, len - a)) {
      this.counters.malformed++;
      return;
    }
    const oper = arpOper(f, a);
    const spa = arpSpa(f, a);
    const sha = arpSha(f, a);
    const tpa = arpTpa(f, a);
    // Learn senders in our subnet that talk to us (RFC 826 merge rule, limited to us).
    if (spa !== 0 && this.contains(spa) && spa !== this.ip && (tpa === this.ip || oper === ARP_REPLY)) {
      for (const pending of this.arp.learn(spa, sha)) {
        writeEth(pending, sha, this.mac, 0x0800);
        this.emit(pending, 0, pending.length);
      }
    }
    if (oper === ARP_REQUEST && tpa === this.ip) {
      const n = arpFrame(this.#out, ARP_REPLY, sha, this.mac, this.ip, sha, spa);
      this.counters.arpReplies++;
      this.emit(this.#out, 0, n);
    } else if (oper !== ARP_REPLY) {
      this.counters.ignored++;
    }
  }

  #onIpv4(f: Uint8Array, len: number): void {
    const ip = ETH_HLEN;
    if (checkIpv4(f, ip, len - ip) !== IPV4_OK) {
      this.counters.malformed++;
      return;
    }
    const dst = ip4Dst(f, ip);
    const proto = ip4Proto(f, ip);
    const hl = ip4HeaderLen(f, ip);
    const total = ip4TotalLen(f, ip);
    const l4 = ip + hl;
    const l4len = total - hl;
    if (dst === this.ip || dst === 0xffffffff || dst === this.broadcast) {
      if (ip4IsFragment(f, ip)) {
        this.counters.ignored++;
        return;
      }
      // The DHCP message is the UDP datagram's payload: UDP Length bounds it, not the IPv4 payload.
      if (proto === IPPROTO.UDP && checkUdp(f, l4, l4len) && udpDport(f, l4) === 67) this.#onDhcp(f, l4, udpLen(f, l4));
      else if (dst === this.ip && proto === IPPROTO.ICMP && checkIcmp(l4len) && f[l4] === ICMP_TYPE.ECHO_REQUEST) this.#echoReply(f, ip, total);
      else this.counters.ignored++;
      return;
    }
    if (this.contains(dst)) {
      // Same subnet: the bridge delivers it; we only saw it by flooding.
      this.counters.ignored++;
      return;
    }
    this.counters.routed++;
    this.route(this, f, ip, total);
  }

  #echoReply(f: Uint8Array, ip: number, total: number): void {
    const src = ip4Src(f, ip);
    const l4 = ip + ip4HeaderLen(f, ip);
    // Turn the request around in our private copy: swap addresses, type 0, new checksums.
    const sha = readMac(f, 6);
    writeEth(f, sha, this.mac, 0x0800);
    write32(f, ip + 12, this.ip);
    write32(f, ip + 16, src);
    f[ip + 8] = 64;
    write16(f, ip + 10, 0);
    write16(f, ip + 10, checksum(f, ip, ip4HeaderLen(f, ip)));
    f[l4] = ICMP_TYPE.ECHO_REPLY;
    write16(f, l4 + 2, 0);
    write16(f, l4 + 2, checksum(f, l4, total - (l4 - ip)));
    this.counters.icmpEchoReplies++;
    this.emit(f, 0, ETH_HLEN + total);
  }

  #onDhcp(f: Uint8Array, l4: number, ulen: number): void {
    const dhcp = this.opts.dhcp;
    if (dhcp === undefined) {
      this.counters.ignored++;
      return;
    }
    this.counters.dhcpRequests++;
    const port = this.opts.portOf?.(readMac(f, 6)) || undefined;
    const now = (this.opts.wallClock ?? Date.now)();
    const r = dhcp.handle(f, l4 + 8, ulen - 8, this.#dhcpOut, 0, { now, port });
    if (typeof r === 'string') return; // handled silently, or refused (counted by the server)
    // The server resolved RFC 2131 4.1 addressing (unicast to ciaddr, broadcast, or yiaddr at chaddr).
    const n = udpFrame(this.#out, r.dstMac, this.mac, this.ip, r.dstIp, 67, 68, this.#dhcpOut, r.payloadLen);
    if (r.type === DhcpMsg.ACK && r.yiaddr !== 0) {
      this.arp.learn(r.yiaddr, r.chaddr);
      if (this.opts.onLease !== undefined) {
        const lease = dhcp.lease(r.chaddr, r.yiaddr);
        this.opts.onLease(lease?.port ?? port ?? '', r.chaddr, r.yiaddr, lease?.expiresAt ?? now);
      }
      this.opts.onEvent?.({ event: 'dhcp_ack', network: this.name, ip: formatIp4(r.yiaddr), mac: formatMac(r.chaddr), port: port ?? '' });
    } else if (r.type === DhcpMsg.NAK) {
      this.opts.onEvent?.({ event: 'dhcp_nak', network: this.name, mac: formatMac(r.chaddr), port: port ?? '' });
    }
    this.counters.dhcpReplies++;
    this.emit(this.#out, 0, n);
  }

  #arpRequest(target: number): void {
    const n = arpFrame(this.#out, ARP_REQUEST, MAC_BROADCAST, this.mac, this.ip, 0, target);
    this.emit(this.#out, 0, n);
  }
}
