/*
 * The DHCPv6 server's place on a router network: picks the client messages out
 * of the IPv6 frames the network receives and sends the server's replies back.
 *
 * A frame is ours (`input` returns true, whatever becomes of it) when it is IPv6
 * to All_DHCP_Relay_Agents_and_Servers (ff02::1:2) or to the gateway's link-local
 * address, UDP to port 547, not fragmented. Then, in order: a UDP length or
 * checksum that does not verify is counted `malformed`; a source that is not a
 * link-local address is counted `malformed` too (RFC 8415 13: clients send from
 * their link-local address, and we answer there); the sending port's `dhcp` rate
 * limit token is spent (limits.ts: DHCP and DHCPv6 share one bucket per port:
 * one kind of work, one budget); then the server (server.ts) decides.
 *
 * Replies go from the gateway's link-local address, UDP 547, to the request's
 * source address and port, in an Ethernet frame to the request's source MAC: one
 * client's lease is never multicast to the VLAN. A Reply held for the lease file
 * (server.ts) keeps that destination (address, port, MAC: 24 bytes copied when it
 * is held) and leaves through `deliver` once durable. A Reply that grants a lease
 * tells the daemon (`onLease`), which binds the address to the client's port in
 * the IPv6 source guard.
 *
 * Buffers are allocated once: the reply is written at its final offset in the
 * output frame, and the port allocates nothing per message but a held Reply's
 * destination (24 bytes). The server is a slow path (a writer and the client's key
 * string per message, as the IPv4 server); the rate limit bounds how often it runs.
 */
import {
  ETH, ETH_HLEN, ETHERTYPE, IP6, IP6_HLEN, IP6_NEXT, IPV6_OK, UDP, checkIpv6, checksum, fold, ip6Equal, ip6IsLinkLocal, ip6PseudoSum,
  ip6Upper, newIp6Upper, read16, readMac, srcMac, sum16, udpDport, udpLen, udpSport, write16, writeIp6,
} from '@vswitch/switch';
import { writeEth } from '../frames.js';
import { LIMIT } from '../limits.js';
import { DHCP6_SERVER_PORT } from './wire.js';
import type { Dhcp6Context, Dhcp6Reply, Dhcp6Server } from './server.js';

const ALL_DHCP_SERVERS = Uint8Array.of(0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2);
const HOP_LIMIT = 64;
/** Room for a reply: an Ethernet frame of the IPv6 minimum MTU. */
const OUT_MAX = ETH_HLEN + 1280;
const UDP_HLEN = 8;
/** A held Reply's destination, copied from its request: address, MAC, UDP port. */
const DST = { ADDR: 0, MAC: 16, PORT: 22, SIZE: 24 } as const;

export interface Dhcp6Host {
  readonly mac: number;
  readonly linkLocal: Uint8Array;
  emit(buf: Uint8Array, off: number, len: number): void;
  limit(kind: number, srcMac: number): boolean;
  portOfMac(mac: number): string;
  ports?: Dhcp6Context['ports'];
  wallClock(): number;
  /** A lease was granted (the Reply is on its way): bind `address` to `port`. */
  onLease?(port: string, mac: number, address: Uint8Array, expiresAt: number): void;
}

export interface Dhcp6PortCounters {
  /** Client messages handed to the server. */
  received: number;
  /** Replies (Advertise, Reply) sent. */
  sent: number;
  /** Failed a check (UDP length or checksum, not a link-local source). */
  malformed: number;
}

export class Dhcp6Port {
  readonly counters: Dhcp6PortCounters = { received: 0, sent: 0, malformed: 0 };
  readonly #out = Buffer.alloc(OUT_MAX);
  readonly #upper = newIp6Upper();
  readonly #ctx: Dhcp6Context = { now: 0 };
  #f: Uint8Array = this.#out;
  #ip = 0;
  #udp = 0;
  readonly #keepDst = (): unknown => this.#dstCopy();

  constructor(readonly host: Dhcp6Host, readonly server: Dhcp6Server) {
    this.#ctx.ports = host.ports;
    server.attach({ deliver: (r, payload, dst) => this.#deliverHeld(r, payload, dst as Uint8Array) });
  }

  /** The IPv6 frame f[0, len) (Ethernet at 0, checked by nobody yet): true if it was a DHCPv6 message to us. */
  input(f: Uint8Array, len: number): boolean {
    const ip = ETH_HLEN;
    if (checkIpv6(f, ip, len - ip) !== IPV6_OK) return false;
    const dst = ip + IP6.DST;
    if (!ip6Equal(f, dst, ALL_DHCP_SERVERS, 0) && !ip6Equal(f, dst, this.host.linkLocal, 0)) return false;
    const u = this.#upper;
    if (ip6Upper(f, ip, u) !== IPV6_OK || u.proto !== IP6_NEXT.UDP || u.fragment || u.len < UDP_HLEN) return false;
    const l4 = u.off;
    if (udpDport(f, l4) !== DHCP6_SERVER_PORT) return false;
    const ulen = udpLen(f, l4);
    // RFC 8200 8.1: the UDP checksum is mandatory over IPv6 (0 is not "none").
    if (ulen < UDP_HLEN || ulen > u.len || read16(f, l4 + UDP.CSUM) === 0 ||
      fold(sum16(f, l4, ulen, ip6PseudoSum(f, ip, ulen, IP6_NEXT.UDP))) !== 0xffff || !ip6IsLinkLocal(f, ip + IP6.SRC)) {
      this.counters.malformed++;
      return true;
    }
    const src = srcMac(f, 0);
    if (!this.host.limit(LIMIT.dhcp, src)) return true;
    this.counters.received++;
    const port = this.host.portOfMac(src) || undefined;
    const ctx = this.#ctx;
    ctx.now = this.host.wallClock();
    ctx.port = port;
    ctx.srcMac = src;
    ctx.guarded = port !== undefined && this.host.ports?.guarded(port) === true;
    this.#f = f;
    this.#ip = ip;
    this.#udp = l4;
    const o = this.#out;
    const payloadOff = ETH_HLEN + IP6_HLEN + UDP_HLEN;
    const r = this.server.handle(f, l4 + UDP_HLEN, ulen - UDP_HLEN, o, payloadOff, ctx, this.#keepDst);
    if (typeof r === 'string') return true;
    this.#send(r, src, f, ip + IP6.SRC, udpSport(f, l4), port);
    return true;
  }

  /** Where the current request's reply goes: its source address, MAC and UDP port (DST's layout). */
  #dstCopy(): Uint8Array {
    const d = new Uint8Array(DST.SIZE);
    d.set(this.#f.subarray(this.#ip + IP6.SRC, this.#ip + IP6.SRC + 16), DST.ADDR);
    d.set(this.#f.subarray(ETH.SRC, ETH.SRC + 6), DST.MAC);
    d.set(this.#f.subarray(this.#udp + UDP.SPORT, this.#udp + UDP.SPORT + 2), DST.PORT);
    return d;
  }

  #deliverHeld(r: Dhcp6Reply, payload: Uint8Array, dst: Uint8Array): void {
    const o = this.#out;
    o.set(payload, ETH_HLEN + IP6_HLEN + UDP_HLEN);
    this.#send(r, readMac(dst, DST.MAC), dst, DST.ADDR, read16(dst, DST.PORT), r.leased?.port);
  }

  /** Wraps the reply already at #out[payload] in UDP/IPv6/Ethernet to `dstMac`, `a[ao, ao+16)`, `dport`. */
  #send(r: Dhcp6Reply, dstMac: number, a: Uint8Array, ao: number, dport: number, port: string | undefined): void {
    const o = this.#out;
    const ip = ETH_HLEN;
    const l4 = ip + IP6_HLEN;
    const ulen = UDP_HLEN + r.payloadLen;
    writeEth(o, dstMac, this.host.mac, ETHERTYPE.IPV6);
    writeIp6(o, ip, ulen, IP6_NEXT.UDP, HOP_LIMIT, this.host.linkLocal, 0, a, ao);
    write16(o, l4 + UDP.SPORT, DHCP6_SERVER_PORT);
    write16(o, l4 + UDP.DPORT, dport);
    write16(o, l4 + UDP.LEN, ulen);
    write16(o, l4 + UDP.CSUM, 0);
    const sum = checksum(o, l4, ulen, ip6PseudoSum(o, ip, ulen, IP6_NEXT.UDP));
    write16(o, l4 + UDP.CSUM, sum === 0 ? 0xffff : sum);
    for (const l of r.leases ?? (r.leased !== undefined ? [r.leased] : [])) this.host.onLease?.(l.port ?? port ?? '', l.mac, l.address, l.expiresAt);
    this.counters.sent++;
    this.host.emit(o, 0, l4 + ulen);
  }
}
