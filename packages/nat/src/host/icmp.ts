/*
 * ICMP echo of the host-socket NAT: a VM's pings leave through one raw ICMP socket
 * of the host (the raw-socket package; CAP_NET_RAW). Node has no ICMP sockets, and
 * raw-socket opens SOCK_RAW only, so the unprivileged ping sockets of Linux
 * (SOCK_DGRAM, net.ipv4.ping_group_range) are out of reach.
 *
 * Model. A *mapping* is one (VM address, echo identifier): its requests leave with
 * an identifier unique among live mappings (the VM's own when free, as the NAPT
 * preserves ports, else the next free one), so two VMs pinging with the same
 * identifier (iputils ping sends its pid, and containers' pids are small and
 * alike) are told apart by the replies. It remembers the addresses it pinged (a
 * few, oldest out): a reply must carry our identifier *and* come from one of
 * them, since the raw socket sees every ICMP packet of the host, other programs'
 * pings included. Their identifiers may still collide with ours (the kernel
 * assigns ping-socket identifiers without knowing ours): a reply of theirs from
 * an address our VM pings too reaches the VM as a stray echo, which ping ignores.
 * Mappings idle out after 60 s in tick(), each holding one session of the shared
 * budget; the 65536 identifiers bound the table too.
 *
 * What comes back is matched and turned around: echo replies (checksum verified,
 * identifier restored, checksum updated), and the errors that quote one of our
 * requests (destination unreachable, time exceeded, parameter problem): the quote
 * is translated back (source = the VM, the VM's identifier, both quoted checksums
 * updated incrementally; RFC 5508) so `ping` reports "unreachable" and
 * `traceroute -I`/`mtr` work, for which the VM's TTL is passed on (IP_TTL, set
 * before each send when it changes). A reply keeps its TTL, so the VM sees the
 * real hop distance. The socket's ICMP_FILTER keeps all other types (the host's
 * own echo requests...) in the kernel. Everything the raw socket delivers is
 * checked before it is read.
 *
 * Nothing from a VM is trusted: IPv4 header, fragments (dropped, `fragment`), ICMP
 * length and checksum; other ICMP from VMs (timestamps, errors about inbound
 * traffic, which never came through a socket of ours) is counted and dropped.
 *
 * Without the socket (no CAP_NET_RAW, or the addon not built) the router still
 * works: start() returns false and reports `icmp_unavailable` once, and echo
 * requests are counted `unavailable`. The addon is loaded in start(), not at
 * import, so a missing build cannot take the rest of the NAT down with it. Its
 * sends are queued until the socket is writable; a request is therefore copied
 * (once) into a Buffer of its own, and the queue is bounded (`maxPending`).
 * raw-socket polls on libuv's default loop: HostIcmp runs on the main thread.
 *
 * ICMPv6 echo (a VM's IPv6 address, family.ts's numbers): the same mappings
 * (one identifier space for both families), through a second raw socket,
 * IPPROTO_ICMPV6. Such a socket reads and writes the ICMPv6 message without the
 * IPv6 header: the kernel fills in the checksum of what we send (RFC 3542 3.1)
 * and verifies what we receive; the source of a packet is the socket's address
 * text (parsed without allocation, family.ts). Its ICMP6_FILTER passes echo
 * replies and the errors we translate (destination unreachable, packet too big,
 * time exceeded, parameter problem: their quote is the IPv6 header and our
 * request, whose source and identifier are put back as the VM sent them, the
 * quoted checksum updated incrementally). The VM's hop limit is passed on
 * (IPV6_UNICAST_HOPS); replies reach the VM with hop limit 64 (the socket does
 * not tell the received one). A reply larger than the MTU (at least 1280) goes
 * as IPv6 fragments (fragment.ts sendIp6). The IPv6 socket opens separately: without it
 * IPv6 echo requests are counted `unavailable`, `icmp6_unavailable` reported.
 */
import { createRequire } from 'node:module';
import {
  ICMP, ICMP_HLEN, ICMP_TYPE, IP4, IP4_MAX_LEN, IP4_MIN_HLEN, IPPROTO, IPV4_OK, ICMP6_TYPE, IP6, IP6_HLEN, icmp6Id, icmp6SumOk,
  icmp6Type, ip6HopLimit, read16, writeIcmp6Checksum, checkIcmp, checkIpv4, checksum, csumReplace16, csumReplace32, fold,
  icmpChecksum, icmpId, icmpType, ip4Checksum, ip4Dst, ip4HeaderLen, ip4Proto, ip4Src, ip4TotalLen, ip4Ttl, ip4Version, sum16,
  write16, write32, writeIp4,
} from '@vswitch/switch';
import { clampMtu, sendIp4, sendIp6 } from './fragment.js';
import { HOST_HEADROOM, type HostBudget, type HostSession, type ToVm } from './types.js';
import { Addrs, ICMPV6, IP6_BASE, READ, readIp, type IpPacket } from './family.js';

export const ICMP_IDLE_TIMEOUT_MS = 60_000;
/** Addresses one mapping admits replies from (ping pings one; a script reusing an id, a few). */
export const ICMP_MAX_REMOTES = 16;
export const ICMP_MAX_PENDING = 1024;

// Linux socket option numbers (raw-socket exports some, not SOL_RAW).
const IPPROTO_IP = 0;
const IP_TTL = 2;
const SOL_RAW = 255;
const ICMP_FILTER = 1;
const IPPROTO_IPV6 = 41;
const IPV6_UNICAST_HOPS = 16;
const ICMP6_FILTER = 1;
const T6 = ICMP6_TYPE;
/** ICMPv6 errors that quote a request of ours. */
const T6_ERRORS: number[] = [T6.DEST_UNREACH, T6.PACKET_TOO_BIG, T6.TIME_EXCEEDED, T6.PARAM_PROBLEM];
/** struct icmp6_filter: 256 bits, a set bit *blocks* its type (Linux): all but replies and those errors. */
const ICMP6_FILTER_BUF = ((): Buffer => {
  const b = Buffer.alloc(32, 0xff);
  for (const t of [T6.ECHO_REPLY, ...T6_ERRORS]) b.writeUInt32LE((b.readUInt32LE((t >>> 5) * 4) & ~(1 << (t & 31))) >>> 0, (t >>> 5) * 4);
  return b;
})();
const { ECHO_REPLY, DEST_UNREACH, ECHO_REQUEST, TIME_EXCEEDED, PARAMETER_PROBLEM } = ICMP_TYPE;
/** ICMP_FILTER is a mask of the types *dropped*: all but replies and the errors we translate. */
const ICMP_FILTER_MASK = ~((1 << ECHO_REPLY) | (1 << DEST_UNREACH) | (1 << TIME_EXCEEDED) | (1 << PARAMETER_PROBLEM)) >>> 0;

/** The part of raw-socket's Socket that HostIcmp uses (injectable for tests). */
export interface RawIcmpSocket {
  /** 'message' (packet with its IPv4 header: Buffer, source: string), 'error' (Error), 'close'. */
  on(event: string, listener: (...args: any[]) => void): unknown;
  send(
    buf: Buffer, off: number, len: number, address: string,
    before: () => void, after: (err: Error | null, bytes: number) => void,
  ): unknown;
  setOption(level: number, option: number, value: number): void;
  /** A struct option (ICMP6_FILTER): `length` bytes of `value`. */
  setOption(level: number, option: number, value: Buffer, length: number): void;
  close(): unknown;
}

export interface HostIcmpOptions {
  /** Monotonic ms. */
  clock: () => number;
  toVm: ToVm;
  budget: HostBudget;
  /** Idle timeout of a mapping (default 60_000). */
  idleTimeoutMs?: number;
  /** The VMs' MTU: larger packets towards a VM are fragmented (default 65535: never). */
  mtu?: number;
  /** Echo requests queued in the raw socket at most (default 1024); more are dropped (`queueFull`). */
  maxPending?: number;
  /** Opens the raw ICMP socket; throws when it cannot (default: raw-socket, IPv4, ICMP). */
  createSocket?: () => RawIcmpSocket;
  /** Opens the raw ICMPv6 socket (default: raw-socket, IPv6, ICMPv6); 'message' gives (ICMPv6 message, source). */
  createSocket6?: () => RawIcmpSocket;
  /** The NAT's addresses (family.ts), shared with the other engines; default: the engine's own. */
  addrs?: Addrs;
  onEvent?: (e: { event: string; [k: string]: unknown }) => void;
}

export interface HostIcmpCounters {
  opened: number;
  expired: number;
  /** Budget refusals. */
  refused: number;
  /** No identifier free (65536 live mappings). */
  idsExhausted: number;
  /** Echo requests sent. */
  toHost: number;
  /** Packets sent to VMs (echo replies and errors; fragments count one each). */
  toVm: number;
  /** ICMP errors about our requests, translated to a VM. */
  errorsToVm: number;
  sendErrors: number;
  socketErrors: number;
  badChecksum: number;
  malformed: number;
  fragment: number;
  /** ICMP from VMs other than echo requests. */
  notEcho: number;
  /** Echo requests while there is no raw socket. */
  unavailable: number;
  queueFull: number;
  /** Replies and errors with no mapping of ours (other programs' pings). */
  notOurs: number;
  /** Ours by identifier, but from an address the mapping did not ping. */
  filtered: number;
  /** Packets from the raw socket shorter than they claim. */
  truncated: number;
  /** IPv6 replies larger than an IPv6 payload may be (65535 bytes; smaller ones over the MTU are fragmented). */
  tooBig: number;
}

class EchoMapping {
  tx = 0;
  rx = 0;
  lastRemote = 0;
  readonly remotes = new Set<number>();
  /** The bridge port its budget unit is charged to (HostBudget.take). */
  bridgePort = '';
  constructor(readonly key: number, readonly vmIp: number, readonly vmId: number, readonly outId: number, public last: number) {}
}

function openRawIcmp(v6 = false): RawIcmpSocket {
  const raw = createRequire(import.meta.url)('raw-socket') as typeof import('raw-socket');
  // 64 KiB: the receive buffer bounds the packets we see whole (reassembled replies to big pings).
  return v6
    ? raw.createSocket({ protocol: raw.Protocol.ICMPv6, addressFamily: raw.AddressFamily.IPv6, bufferSize: 65536 })
    : raw.createSocket({ protocol: raw.Protocol.ICMP, addressFamily: raw.AddressFamily.IPv4, bufferSize: 65536 });
}

export class HostIcmp {
  readonly counters: HostIcmpCounters = {
    opened: 0, expired: 0, refused: 0, idsExhausted: 0, toHost: 0, toVm: 0, errorsToVm: 0, sendErrors: 0, socketErrors: 0,
    badChecksum: 0, malformed: 0, fragment: 0, notEcho: 0, unavailable: 0, queueFull: 0, notOurs: 0, filtered: 0, truncated: 0,
    tooBig: 0,
  };
  #socket: RawIcmpSocket | undefined;
  #socket6: RawIcmpSocket | undefined;
  #reported = false;
  #reported6 = false;
  /** The IPV6_UNICAST_HOPS the IPv6 socket has now (-1: the system default). */
  #hops = -1;
  readonly #addrs: Addrs;
  readonly #ownAddrs: boolean;
  /** The packet being read (readIp). */
  readonly #ip: IpPacket = { src: 0, dst: 0, proto: 0, l4: 0, l4len: 0 };
  #closed = false;
  /** vmIp*65536 + VM identifier -> mapping. */
  readonly #byKey = new Map<number, EchoMapping>();
  /** Outside identifier -> mapping. */
  readonly #byOut: (EchoMapping | undefined)[] = new Array(65536).fill(undefined);
  #cursor = 0;
  #pending = 0;
  /** The IP_TTL the socket has now (-1: the system default). */
  #ttl = -1;
  #ipId = 0;
  readonly #frame = Buffer.alloc(HOST_HEADROOM + IP4_MAX_LEN + IP6_HLEN);
  readonly #idle: number;
  readonly #mtu: number;
  readonly #maxPending: number;

  constructor(readonly opts: HostIcmpOptions) {
    this.#idle = positive(opts.idleTimeoutMs, ICMP_IDLE_TIMEOUT_MS);
    this.#mtu = clampMtu(opts.mtu);
    this.#maxPending = Math.max(1, Math.floor(positive(opts.maxPending, ICMP_MAX_PENDING)));
    this.#ownAddrs = opts.addrs === undefined;
    this.#addrs = opts.addrs ?? new Addrs(4096);
  }

  /** Is the raw ICMPv6 socket open? */
  get available6(): boolean {
    return this.#socket6 !== undefined;
  }

  /** Is the raw socket open? */
  get available(): boolean {
    return this.#socket !== undefined;
  }

  /**
   * Opens the raw ICMP socket. False, and `icmp_unavailable` reported once, when it
   * cannot (no CAP_NET_RAW, addon missing): echo requests are then dropped (`unavailable`).
   */
  start(): boolean {
    this.#start6();
    if (this.#socket !== undefined) return true;
    if (this.#closed) return false;
    let sock: RawIcmpSocket;
    try {
      sock = (this.opts.createSocket ?? openRawIcmp)();
    } catch (e) {
      this.#unavailable((e as Error).message);
      return false;
    }
    this.#ttl = -1;
    try {
      sock.setOption(SOL_RAW, ICMP_FILTER, ICMP_FILTER_MASK);
    } catch {
      // Without the filter every ICMP packet of the host wakes us; #fromHost sorts them.
    }
    sock.on('message', (b: Buffer) => this.#fromHost(b));
    sock.on('error', () => {
      this.counters.socketErrors++;
    });
    sock.on('close', () => {
      // raw-socket closes the socket itself after a poll error.
      if (this.#socket !== sock) return;
      this.#socket = undefined;
      this.#unavailable('the raw ICMP socket closed');
    });
    this.#socket = sock;
    return true;
  }

  /** The ICMPv6 socket, as start() opens the IPv4 one (`icmp6_unavailable` once when it cannot). */
  #start6(): void {
    if (this.#socket6 !== undefined || this.#closed) return;
    // A test that injects the IPv4 socket gets no real IPv6 one unless it injects that too.
    const create = this.opts.createSocket6 ?? (this.opts.createSocket === undefined ? () => openRawIcmp(true) : undefined);
    if (create === undefined) return;
    let sock: RawIcmpSocket;
    try {
      sock = create();
    } catch (e) {
      if (!this.#reported6) this.opts.onEvent?.({ event: 'icmp6_unavailable', error: (e as Error).message });
      this.#reported6 = true;
      return;
    }
    this.#hops = -1;
    try {
      sock.setOption(ICMPV6, ICMP6_FILTER, ICMP6_FILTER_BUF, 32);
    } catch {
      // Without the filter every ICMPv6 packet of the host (ND included) wakes us; #fromHost6 sorts them.
    }
    sock.on('message', (b: Buffer, source: string) => this.#fromHost6(b, source));
    sock.on('error', () => {
      this.counters.socketErrors++;
    });
    sock.on('close', () => {
      if (this.#socket6 !== sock) return;
      this.#socket6 = undefined;
      if (!this.#reported6) this.opts.onEvent?.({ event: 'icmp6_unavailable', error: 'the raw ICMPv6 socket closed' });
      this.#reported6 = true;
    });
    this.#socket6 = sock;
  }

  /** An ICMP packet from a VM to somewhere outside: echo requests are sent, the rest dropped. */
  fromVm(buf: Uint8Array, ipOff: number, ipLen: number): void {
    const c = this.counters;
    const p = this.#ip;
    const r = readIp(this.#addrs, buf, ipOff, ipLen, p);
    if (r === READ.FRAGMENT) {
      c.fragment++;
      return;
    }
    const v6 = buf[ipOff] >>> 4 === 6;
    const icmp = p.l4;
    const ilen = p.l4len;
    if (r !== READ.OK || p.proto !== (v6 ? ICMPV6 : IPPROTO.ICMP) || !checkIcmp(ilen)) {
      c.malformed++;
      return;
    }
    if (icmpType(buf, icmp) !== (v6 ? T6.ECHO_REQUEST : ECHO_REQUEST)) {
      c.notEcho++;
      return;
    }
    // ICMPv6's checksum covers the pseudo-header (RFC 4443 2.3), ICMP's does not.
    if (v6 ? !icmp6SumOk(buf, ipOff, icmp, ilen) : fold(sum16(buf, icmp, ilen)) !== 0xffff) {
      c.badChecksum++;
      return;
    }
    this.#request(buf, icmp, ilen, p.src, p.dst, Math.max(1, v6 ? ip6HopLimit(buf, ipOff) : ip4Ttl(buf, ipOff)));
  }

  /**
   * The echo request buf[icmp, icmp+ilen) (checked) from src to dst (numbers of
   * one family): its mapping, and a copy sent with the mapping's identifier.
   */
  #request(buf: Uint8Array, icmp: number, ilen: number, src: number, dst: number, ttl: number): void {
    const c = this.counters;
    const v6 = src >= IP6_BASE;
    const sock = v6 ? this.#socket6 : this.#socket;
    if (sock === undefined) {
      c.unavailable++;
      return;
    }
    if (this.#pending >= this.#maxPending) {
      c.queueFull++;
      return;
    }
    const vmId = icmpId(buf, icmp);
    const now = this.opts.clock();
    const key = src * 65536 + vmId;
    let m = this.#byKey.get(key);
    if (m === undefined) {
      m = this.#open(key, src, vmId, now);
      if (m === undefined) return;
    }
    const rem = m.remotes;
    if (!rem.has(dst)) {
      if (rem.size >= ICMP_MAX_REMOTES) rem.delete(rem.values().next().value!);
      rem.add(dst);
    }
    m.last = now;
    m.tx += ilen - ICMP_HLEN;
    m.lastRemote = dst;

    // The socket queues the request until it is writable: it gets a copy of its own.
    const out = Buffer.allocUnsafe(ilen);
    out.set(buf.subarray(icmp, icmp + ilen));
    if (m.outId !== vmId) {
      write16(out, ICMP.ID, m.outId);
      write16(out, ICMP.CSUM, csumReplace16(icmpChecksum(out, 0), vmId, m.outId));
    }
    let done = false;
    const after = (err: Error | null): void => {
      if (done) return;
      done = true;
      this.#pending--;
      if (err) c.sendErrors++;
    };
    this.#pending++;
    c.toHost++;
    try {
      sock.send(out, 0, ilen, this.#addrs.format(dst), () => (v6 ? this.#setHops(sock, ttl) : this.#setTtl(sock, ttl)), after);
    } catch (e) {
      after(e as Error);
    }
  }

  sessions(now: number): HostSession[] {
    const out: HostSession[] = [];
    for (const m of this.#byKey.values()) {
      out.push({
        proto: 'icmp', direction: 'out', inside: this.#addrs.endpoint(m.vmIp, m.vmId), remote: this.#addrs.format(m.lastRemote),
        outside: `${m.vmIp >= IP6_BASE ? '[::]' : '0.0.0.0'}:${m.outId}`, state: 'active', idleMs: Math.max(0, now - m.last), txBytes: m.tx, rxBytes: m.rx,
      });
    }
    return out;
  }

  /** Marks the addresses the mappings hold (family.ts: the others are swept). */
  markAddrs(): void {
    const t = this.#addrs.ip6;
    for (const m of this.#byKey.values()) {
      t.mark(m.vmIp);
      for (const r of m.remotes) t.mark(r);
    }
  }

  /** About once a second: closes idle mappings. */
  tick(now: number): void {
    if (this.#ownAddrs && this.#addrs.ip6.count > 0) {
      this.markAddrs();
      this.#addrs.ip6.sweep();
    }
    for (const m of this.#byKey.values()) {
      if (now - m.last >= this.#idle) {
        this.counters.expired++;
        this.#drop(m);
      }
    }
  }

  close(): void {
    this.#closed = true;
    for (const sock of [this.#socket, this.#socket6]) {
      if (sock === undefined) continue;
      try {
        sock.close();
      } catch {
        // already closed
      }
    }
    this.#socket = undefined;
    this.#socket6 = undefined;
    for (const m of this.#byKey.values()) this.#drop(m);
  }

  #unavailable(error: string): void {
    if (this.#reported) return;
    this.#reported = true;
    this.opts.onEvent?.({ event: 'icmp_unavailable', error });
  }

  #setTtl(sock: RawIcmpSocket, ttl: number): void {
    if (ttl === this.#ttl) return;
    try {
      sock.setOption(IPPROTO_IP, IP_TTL, ttl);
      this.#ttl = ttl;
    } catch {
      this.counters.socketErrors++;
    }
  }

  #setHops(sock: RawIcmpSocket, hops: number): void {
    if (hops === this.#hops) return;
    try {
      sock.setOption(IPPROTO_IPV6, IPV6_UNICAST_HOPS, hops);
      this.#hops = hops;
    } catch {
      this.counters.socketErrors++;
    }
  }

  #open(key: number, vmIp: number, vmId: number, now: number): EchoMapping | undefined {
    const port = this.opts.budget.take(vmIp);
    if (port === null) {
      this.counters.refused++;
      return undefined;
    }
    const outId = this.#allocId(vmId);
    if (outId < 0) {
      this.opts.budget.release(vmIp, port);
      this.counters.idsExhausted++;
      return undefined;
    }
    const m = new EchoMapping(key, vmIp, vmId, outId, now);
    m.bridgePort = port;
    this.#byKey.set(key, m);
    this.#byOut[outId] = m;
    this.counters.opened++;
    return m;
  }

  #allocId(preferred: number): number {
    if (this.#byOut[preferred] === undefined) return preferred;
    for (let i = 0; i < 65536; i++) {
      const id = (this.#cursor + i) & 0xffff;
      if (this.#byOut[id] === undefined) {
        this.#cursor = (id + 1) & 0xffff;
        return id;
      }
    }
    return -1;
  }

  #drop(m: EchoMapping): void {
    if (this.#byKey.get(m.key) !== m) return;
    this.#byKey.delete(m.key);
    if (this.#byOut[m.outId] === m) this.#byOut[m.outId] = undefined;
    this.opts.budget.release(m.vmIp, m.bridgePort);
  }

  /** A packet from the raw socket (IPv4 header included; a view of raw-socket's shared buffer). */
  #fromHost(b: Buffer): void {
    const c = this.counters;
    if (this.#closed) return;
    // Its header checksum was the kernel's to verify.
    if (checkIpv4(b, 0, b.length, false) !== IPV4_OK) {
      c.truncated++;
      return;
    }
    const hl = ip4HeaderLen(b, 0);
    const total = ip4TotalLen(b, 0);
    if (total < hl + ICMP_HLEN) {
      c.truncated++;
      return;
    }
    if (ip4Proto(b, 0) !== IPPROTO.ICMP) return;
    const type = icmpType(b, hl);
    if (type === ECHO_REPLY) this.#echoReply(b, hl, total);
    else if (type === DEST_UNREACH || type === TIME_EXCEEDED || type === PARAMETER_PROBLEM) this.#error(b, hl, total);
  }

  #echoReply(b: Buffer, hl: number, total: number): void {
    const c = this.counters;
    const outId = icmpId(b, hl);
    const m = this.#byOut[outId];
    if (m === undefined) {
      c.notOurs++;
      return;
    }
    const from = ip4Src(b, 0);
    if (!m.remotes.has(from)) {
      c.filtered++;
      return;
    }
    const ilen = total - hl;
    if (fold(sum16(b, hl, ilen)) !== 0xffff) {
      c.badChecksum++;
      return;
    }
    const f = this.#frame;
    const ip = HOST_HEADROOM;
    const icmp = ip + IP4_MIN_HLEN;
    f.set(b.subarray(hl, total), icmp);
    if (m.vmId !== outId) {
      write16(f, icmp + ICMP.ID, m.vmId);
      write16(f, icmp + ICMP.CSUM, csumReplace16(icmpChecksum(f, icmp), outId, m.vmId));
    }
    m.last = this.opts.clock();
    m.rx += ilen - ICMP_HLEN;
    this.#emit(f, ip, IP4_MIN_HLEN + ilen, Math.max(1, ip4Ttl(b, 0)), from, m.vmIp);
  }

  /** An ICMP error: ours if it quotes one of our echo requests (RFC 5508: translate the quote back). */
  #error(b: Buffer, hl: number, total: number): void {
    const c = this.counters;
    const e = hl;
    const q = e + ICMP_HLEN;
    // The quote: an IPv4 header and at least the 8 bytes of the echo header (RFC 792).
    if (total < q + IP4_MIN_HLEN + ICMP_HLEN || ip4Version(b, q) !== 4) return;
    const qhl = ip4HeaderLen(b, q);
    if (qhl < IP4_MIN_HLEN || q + qhl + ICMP_HLEN > total || ip4Proto(b, q) !== IPPROTO.ICMP || icmpType(b, q + qhl) !== ECHO_REQUEST) return;
    const qi = q + qhl;
    const outId = icmpId(b, qi);
    const m = this.#byOut[outId];
    if (m === undefined) {
      c.notOurs++;
      return;
    }
    if (!m.remotes.has(ip4Dst(b, q))) {
      c.filtered++;
      return;
    }
    const ilen = total - e;
    if (fold(sum16(b, e, ilen)) !== 0xffff) {
      c.badChecksum++;
      return;
    }
    const f = this.#frame;
    const ip = HOST_HEADROOM;
    const fe = ip + IP4_MIN_HLEN;
    f.set(b.subarray(e, total), fe);
    const fq = fe + ICMP_HLEN;
    const fqi = fq + qhl;
    // The quoted request as the VM sent it: its source and identifier, checksums updated (not recomputed).
    const hostSrc = ip4Src(f, fq);
    write32(f, fq + IP4.SRC, m.vmIp);
    write16(f, fq + IP4.CSUM, csumReplace32(ip4Checksum(f, fq), hostSrc, m.vmIp));
    if (m.vmId !== outId) {
      write16(f, fqi + ICMP.ID, m.vmId);
      write16(f, fqi + ICMP.CSUM, csumReplace16(icmpChecksum(f, fqi), outId, m.vmId));
    }
    write16(f, fe + ICMP.CSUM, 0);
    write16(f, fe + ICMP.CSUM, checksum(f, fe, ilen));
    c.errorsToVm++;
    this.#emit(f, ip, IP4_MIN_HLEN + ilen, Math.max(1, ip4Ttl(b, 0)), ip4Src(b, 0), m.vmIp);
  }

  /**
   * An ICMPv6 message from the raw socket (no IPv6 header; checksum verified by
   * the kernel; a view of raw-socket's shared buffer) from `source`.
   */
  #fromHost6(b: Buffer, source: string): void {
    const c = this.counters;
    if (this.#closed) return;
    if (b.length < ICMP_HLEN) {
      c.truncated++;
      return;
    }
    const type = icmp6Type(b, 0);
    if (type !== T6.ECHO_REPLY && T6_ERRORS.indexOf(type) < 0) return;
    // Errors quote the IPv6 header and our request (at least its 8-byte header).
    const quoted = type !== T6.ECHO_REPLY;
    const q = ICMP_HLEN;
    if (quoted && (b.length < q + IP6_HLEN + ICMP_HLEN || b[q] >>> 4 !== 6 || b[q + IP6.NEXT] !== ICMPV6 ||
      icmp6Type(b, q + IP6_HLEN) !== T6.ECHO_REQUEST)) return;
    const outId = icmp6Id(b, quoted ? q + IP6_HLEN : 0);
    const m = this.#byOut[outId];
    if (m === undefined || m.vmIp < IP6_BASE) {
      c.notOurs++;
      return;
    }
    const t = this.#addrs.ip6;
    const from = this.#addrs.parse6(source);
    // A reply from an address we pinged; an error about a request to one (from any router on the way).
    const remote = quoted ? t.intern(b, q + IP6.DST) : from;
    if (from < 0 || !m.remotes.has(remote)) {
      c.filtered++;
      return;
    }
    const ilen = b.length;
    // An IPv6 payload's limit (no jumbograms); over the MTU it goes as IPv6 fragments.
    if (ilen > IP4_MAX_LEN) {
      c.tooBig++;
      return;
    }
    const f = this.#frame;
    const ip = HOST_HEADROOM;
    const l4 = ip + IP6_HLEN;
    f.set(b, l4);
    if (quoted) {
      // The quoted request as the VM sent it: its source and identifier; its checksum updated word by word.
      const fq = l4 + ICMP_HLEN;
      const fqi = fq + IP6_HLEN;
      let sum = icmpChecksum(f, fqi);
      const a = t.at(m.vmIp);
      for (let i = 0; i < 16; i += 2) {
        const now = read16(t.bytes, a + i);
        sum = csumReplace16(sum, read16(f, fq + IP6.SRC + i), now);
        write16(f, fq + IP6.SRC + i, now);
      }
      write16(f, fqi + ICMP.ID, m.vmId);
      write16(f, fqi + ICMP.CSUM, csumReplace16(sum, outId, m.vmId));
      c.errorsToVm++;
    } else {
      write16(f, l4 + ICMP.ID, m.vmId);
      m.rx += ilen - ICMP_HLEN;
    }
    m.last = this.opts.clock();
    this.#addrs.writeHeader(f, ip, from, m.vmIp, ICMPV6, ilen, 0, 0);
    writeIcmp6Checksum(f, ip, l4, ilen);
    c.toVm += sendIp6(this.opts.toVm, f, ip, IP6_HLEN + ilen, this.#mtu);
  }

  #emit(f: Buffer, ip: number, len: number, ttl: number, src: number, dst: number): void {
    this.#ipId = (this.#ipId + 1) & 0xffff;
    writeIp4(f, ip, len, this.#ipId, 0, ttl, IPPROTO.ICMP, src, dst);
    this.counters.toVm += sendIp4(this.opts.toVm, f, ip, len, this.#mtu);
  }
}

function positive(v: number | undefined, dflt: number): number {
  return v !== undefined && Number.isFinite(v) && v > 0 ? v : dflt;
}
