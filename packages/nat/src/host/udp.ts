/*
 * UDP of the host-socket NAT: a VM's datagrams leave through ordinary UDP sockets
 * of the host, so the host's routing, firewall and source address apply.
 *
 * Model. A *mapping* is one dgram socket (bound to 0.0.0.0:0) per VM source
 * address and port, whatever the VM sends to from there: endpoint-independent
 * mapping (RFC 4787 REQ-1), so a VM's STUN, QUIC or game client keeps one outside
 * port for all its peers, as through the router's own NAPT. Filtering is
 * address-dependent (REQ-8's middle ground, the NAPT's policy too): a datagram
 * arriving on the socket reaches the VM only if the VM has sent to that address;
 * anything else is dropped (`filtered`). The addresses a mapping remembers are
 * capped (`maxRemotes`, oldest first out) so a VM spraying one port at the whole
 * Internet cannot grow our memory.
 *
 * The DNS forwarder rides on this: `to` sends the datagram to another endpoint
 * (the resolver) and remembers, per mapping, that answers from there are shown
 * as coming from the original destination (gateway:53). If the VM later sends
 * to the resolver directly from the same port, the latest use wins. Mappings that
 * only ever sent to port 53 expire after `dnsIdleTimeoutMs` (10 s, as libslirp
 * does; RFC 4787 REQ-5a allows shorter timers for well-known ports): stub
 * resolvers use a fresh random port per query, and at 180 s each a busy VM would
 * hold thousands of sockets. Others idle out after `idleTimeoutMs` (180 s; REQ-5:
 * not under 120 s), in tick(): no timers of our own.
 *
 * Port forwards are the other direction: a listening socket on a host port; each
 * remote that sends to it is a session into the VM (from the remote's address,
 * or the `seenAs` substitute for host-local senders the VM could not answer), and
 * the VM's datagrams back to that remote (as the VM sees it) leave through the
 * listening socket, so the remote sees the port it sent to answering. Two remotes
 * the VM would see as the same address and port (two host-local clients on one
 * port) cannot both be told apart: the second is dropped (`conflict`).
 *
 * Each mapping and each forward session takes one session of the shared budget
 * on open and gives it back exactly once on close; a refusal drops the datagram
 * (`refused`). Socket errors are counted, never thrown: every socket has an
 * 'error' listener, and sends report through their callback.
 *
 * Packets towards the VM are built in one preallocated buffer (the ToVm contract
 * is synchronous) with HOST_HEADROOM free before the IPv4 header: TTL 64, DF
 * clear, IDs incrementing, both checksums complete. The received datagram is
 * copied once, into that buffer. What the VM sends is copied once too, into the
 * Buffer dgram sends from (dgram may hold it until the socket is bound or
 * writable, and the router reuses its own). A packet larger than the VM's MTU
 * (`mtu`, the network's; default: no limit) is sent as IPv4 fragments in place (fragment.ts),
 * since the host reassembled what the remote fragmented, and a DNS answer over
 * 1472 bytes must still reach a VM on a 1500-byte network. IPv4 datagrams from
 * a VM that are fragments are dropped (`fragment`): there is no reassembly, as in
 * the NAPT; IPv6 ones reach this module whole (nat.ts, reassembly6.ts). Nothing from a VM is trusted: IPv4 header, UDP length against the IP
 * length, the checksum (0 = none is valid; a checksum-partial packet from an
 * offloading VM is passed `partial` and not verified) are checked, and a bad one
 * is counted and dropped.
 *
 * IPv6: the same mappings, keyed by family.ts's numbers (an IPv6 address is a
 * slot of the NAT's address table); a mapping of an IPv6 VM address has a udp6
 * socket (bound [::]:0, dual-stack: the DNS forwarder's `to` may be an IPv4
 * resolver, sent to as ::ffff:a.b.c.d; a VM's own datagrams can only name IPv6). From the VM, a zero UDP checksum is invalid
 * over IPv6 (RFC 8200 8.1: `badChecksum`). Towards the VM, a datagram larger than
 * the MTU (at least 1280) goes as IPv6 fragments in place (fragment.ts sendIp6).
 */
import dgram from 'node:dgram';
import {
  IP4_MAX_LEN, IP4_MIN_HLEN, IP6_HLEN, IPPROTO, UDP, UDP_HLEN, checksum, ip6PseudoSum, write16, checkUdp, fold, pseudoSum, sum16,
  udpChecksum, udpDport, udpLen, udpSport, writeIp4, writeUdpHeader,
} from '@vswitch/switch';
import { clampMtu, sendIp4, sendIp6 } from './fragment.js';
import { HOST_HEADROOM, type HostBudget, type HostSession, type ToVm } from './types.js';
import { Addrs, IP6_BASE, READ, readIp, type IpPacket } from './family.js';

export const UDP_IDLE_TIMEOUT_MS = 180_000;
export const UDP_DNS_IDLE_TIMEOUT_MS = 10_000;
export const UDP_MAX_REMOTES = 1024;
/** Redirect entries a mapping keeps (resolvers it was sent to, across failovers). */
const MAX_REDIRECTS = 8;

/** Told about the datagrams sent with `to` (the DNS forwarder) and their answers: dns.ts's Resolvers. */
export interface RedirectObserver {
  sent(ip: number, now: number): void;
  answered(ip: number, now: number): void;
}

export interface HostUdpOptions {
  /** Monotonic ms. */
  clock: () => number;
  toVm: ToVm;
  budget: HostBudget;
  /** Idle timeout of a mapping or forward session (default 180_000). */
  idleTimeoutMs?: number;
  /** Idle timeout of a mapping that only sent to port 53 (default 10_000). */
  dnsIdleTimeoutMs?: number;
  /** Remote addresses a mapping admits replies from, oldest forgotten first (default 1024). */
  maxRemotes?: number;
  /** The VMs' MTU: larger packets towards a VM are fragmented (default 65535: never). */
  mtu?: number;
  /** Told of `to` datagrams and their answers (the resolver failover). */
  redirects?: RedirectObserver;
  onEvent?: (e: { event: string; [k: string]: unknown }) => void;
  /** The NAT's addresses (family.ts), shared with the other engines; default: the engine's own. */
  addrs?: Addrs;
}

export interface HostUdpCounters {
  /** Mappings and forward sessions opened. */
  opened: number;
  /** Closed by idle expiry. */
  expired: number;
  /** Budget refusals (the datagram is dropped). */
  refused: number;
  /** Datagrams sent to the host side. */
  toHost: number;
  /** Packets sent to VMs (fragments count one each). */
  toVm: number;
  /** Send failures reported by the socket (EMSGSIZE, ENETUNREACH, EPERM from the firewall...). */
  sendErrors: number;
  /** Socket 'error' events (a failed bind closes the mapping). */
  socketErrors: number;
  badChecksum: number;
  /** Not IPv4/UDP, bad lengths, port 0. */
  malformed: number;
  /** IP fragments from a VM (no reassembly). */
  fragment: number;
  /** Datagrams from the host side that do not fit an IPv4 packet. */
  tooBig: number;
  /** Datagrams from addresses the mapping never sent to. */
  filtered: number;
  /** A forward session the VM would confuse with an existing one. */
  conflict: number;
  /** Packets towards a VM sent as fragments (counted once per packet). */
  fragmented: number;
}

class Mapping {
  socket!: dgram.Socket;
  outside = '';
  bound = false;
  closed = false;
  tx = 0;
  rx = 0;
  /** Remote IPs the VM sent to (address-dependent filter); insertion order = age. */
  readonly remotes = new Set<number>();
  /** Real endpoint (ip*65536+port) -> the endpoint the VM sees answering (the `to` redirect). */
  redirects: Map<number, number> | undefined;
  /** The last destination, as the VM sees it (ip*65536+port). */
  lastRemote = 0;
  dnsOnly = true;
  sendCb!: (err: Error | null) => void;
  /** The bridge port its budget unit is charged to (HostBudget.take). */
  bridgePort = '';

  constructor(readonly key: number, readonly vmIp: number, readonly vmPort: number, public last: number) {}
}

class Forward {
  socket!: dgram.Socket;
  listening = false;
  closed = false;
  /** Remote endpoint (ip*65536+port) -> session. */
  readonly sessions = new Map<number, InSession>();
  sendCb!: (err: Error | null) => void;

  constructor(
    readonly key: string, readonly address: string, readonly port: number, readonly vmIp: number, readonly vmPort: number,
    readonly seenAs: ((rIp: number) => number) | undefined,
    /** Set for an IPv6 target: called for each datagram from a client the VM could not answer (IPv4, loopback). */
    readonly refuse6?: () => void,
  ) {}
}

class InSession {
  tx = 0;
  rx = 0;
  constructor(
    readonly fwd: Forward, readonly rKey: number, readonly rAddr: string, readonly rPort: number,
    readonly seenIp: number, readonly seenKey: number, public last: number,
  ) {}
}

export class HostUdp {
  readonly counters: HostUdpCounters = {
    opened: 0, expired: 0, refused: 0, toHost: 0, toVm: 0, sendErrors: 0, socketErrors: 0, badChecksum: 0, malformed: 0,
    fragment: 0, tooBig: 0, filtered: 0, conflict: 0, fragmented: 0,
  };
  /** VM endpoint (ip*65536+port) -> mapping. */
  readonly #out = new Map<number, Mapping>();
  /** "address:port" -> forward. */
  readonly #forwards = new Map<string, Forward>();
  /** VM endpoint -> (remote as the VM sees it -> forward session): where the VM's answers go. */
  readonly #inByVm = new Map<number, Map<number, InSession>>();
  readonly #frame = Buffer.alloc(HOST_HEADROOM + IP4_MAX_LEN + IP6_HLEN);
  readonly #addrs: Addrs;
  readonly #ownAddrs: boolean;
  /** The packet being read (readIp). */
  readonly #ip: IpPacket = { src: 0, dst: 0, proto: 0, l4: 0, l4len: 0 };
  readonly #idle: number;
  readonly #dnsIdle: number;
  readonly #maxRemotes: number;
  readonly #mtu: number;
  #ipId = 0;
  #closed = false;

  constructor(readonly opts: HostUdpOptions) {
    this.#idle = positive(opts.idleTimeoutMs, UDP_IDLE_TIMEOUT_MS);
    this.#dnsIdle = Math.min(positive(opts.dnsIdleTimeoutMs, UDP_DNS_IDLE_TIMEOUT_MS), this.#idle);
    this.#maxRemotes = Math.max(1, Math.floor(positive(opts.maxRemotes, UDP_MAX_REMOTES)));
    this.#mtu = clampMtu(opts.mtu);
    this.#ownAddrs = opts.addrs === undefined;
    this.#addrs = opts.addrs ?? new Addrs(4096);
  }

  /**
   * A UDP datagram from a VM (IPv4 header at ipOff) to somewhere outside. `to`: send
   * it there instead, and show answers from there as coming from the original
   * destination (the DNS forwarder). `partial`: the VM left the checksum to offload
   * (virtio-net NEEDS_CSUM): it holds only the pseudo-header sum, so it is not verified.
   */
  fromVm(buf: Uint8Array, ipOff: number, ipLen: number, to?: { ip: number; port: number }, partial = false): void {
    const c = this.counters;
    if (this.#closed) return;
    const p = this.#ip;
    const r = readIp(this.#addrs, buf, ipOff, ipLen, p);
    if (r === READ.FRAGMENT) {
      c.fragment++;
      return;
    }
    if (r !== READ.OK || p.proto !== IPPROTO.UDP || !checkUdp(buf, p.l4, p.l4len)) {
      c.malformed++;
      return;
    }
    const u = p.l4;
    const src = p.src;
    const dst = p.dst;
    const ulen = udpLen(buf, u);
    const v6 = src >= IP6_BASE;
    // A zero checksum means "none" over IPv4 only (RFC 8200 8.1).
    if (v6 && !partial && udpChecksum(buf, u) === 0) {
      c.badChecksum++;
      return;
    }
    const pseudo = v6 ? ip6PseudoSum(buf, ipOff, ulen, IPPROTO.UDP) : pseudoSum(src, dst, IPPROTO.UDP, ulen);
    if (!partial && udpChecksum(buf, u) !== 0 && fold(sum16(buf, u, ulen, pseudo)) !== 0xffff) {
      c.badChecksum++;
      return;
    }
    const sport = udpSport(buf, u);
    const dport = udpDport(buf, u);
    const realIp = to === undefined ? dst : to.ip;
    const realPort = to === undefined ? dport : to.port;
    if (sport === 0 || realPort === 0 || realIp === 0) {
      c.malformed++;
      return;
    }
    const now = this.opts.clock();
    const vmKey = src * 65536 + sport;
    const dstKey = dst * 65536 + dport;

    // An answer to a port-forward session goes back out of the listening socket.
    if (to === undefined && this.#inByVm.size > 0) {
      const s = this.#inByVm.get(vmKey)?.get(dstKey);
      if (s !== undefined) {
        const f = s.fwd;
        s.last = now;
        s.tx += ulen - UDP_HLEN;
        c.toHost++;
        try {
          f.socket.send(Buffer.from(buf.subarray(u + UDP_HLEN, u + ulen)), s.rPort, s.rAddr, f.sendCb);
        } catch {
          c.sendErrors++;
        }
        return;
      }
    }

    let m = this.#out.get(vmKey);
    if (m === undefined) {
      m = this.#open(vmKey, src, sport, now);
      if (m === undefined) return;
    }
    m.last = now;
    m.tx += ulen - UDP_HLEN;
    m.lastRemote = dstKey;
    if (dport !== 53) m.dnsOnly = false;
    if (to === undefined) {
      const rem = m.remotes;
      if (!rem.has(dst)) {
        if (rem.size >= this.#maxRemotes) rem.delete(rem.values().next().value!);
        rem.add(dst);
      }
      if (m.redirects !== undefined && m.redirects.size > 0) m.redirects.delete(dstKey);
    } else {
      const realKey = realIp * 65536 + realPort;
      const red = (m.redirects ??= new Map());
      if (!red.has(realKey) && red.size >= MAX_REDIRECTS) red.delete(red.keys().next().value!);
      red.set(realKey, dstKey);
      this.opts.redirects?.sent(realIp, now);
    }
    c.toHost++;
    try {
      // An IPv6 mapping sends to an IPv4 resolver (the DNS forwarder) through its dual-stack socket.
      const host = m.vmIp >= IP6_BASE && realIp < IP6_BASE ? `::ffff:${this.#addrs.format(realIp)}` : this.#addrs.format(realIp);
      m.socket.send(Buffer.from(buf.subarray(u + UDP_HLEN, u + ulen)), realPort, host, m.sendCb);
    } catch {
      c.sendErrors++;
    }
  }

  /**
   * Host port forward: listens on address:port; datagrams from a remote go to
   * vmIp:vmPort from the remote (or `seenAs(remote)`), the VM's answers to that
   * remote go back out of the listening socket. Rejects when the bind fails.
   */
  addForward(f: {
    address: string; port: number; vmIp: number; vmPort: number; seenAs?: (rIp: number) => number;
    /** An IPv6 target (vmIp interned): IPv6 clients are seen as themselves, others refused (counted by `refused`). */
    ipv6?: { refused: () => void };
  }): Promise<void> {
    const key = `${f.address}:${f.port}`;
    if (this.#closed) return Promise.reject(new Error(`udp forward ${key}: closed`));
    if (this.#forwards.has(key)) return Promise.reject(new Error(`udp forward ${key} exists already`));
    const fwd = new Forward(key, f.address, f.port, f.vmIp >= IP6_BASE ? f.vmIp : f.vmIp >>> 0, f.vmPort, f.seenAs, f.ipv6?.refused);
    fwd.sendCb = (err) => {
      if (err) this.counters.sendErrors++;
    };
    this.#forwards.set(key, fwd);
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const fail = (e: Error): void => {
        if (settled) return;
        settled = true;
        this.#closeForward(fwd);
        const err = new Error(`udp forward ${key}: ${e.message}`) as NodeJS.ErrnoException;
        err.code = (e as NodeJS.ErrnoException).code;
        reject(err);
      };
      let sock: dgram.Socket;
      try {
        sock = dgram.createSocket({ type: f.address.includes(':') ? 'udp6' : 'udp4' });
      } catch (e) {
        fail(e as Error);
        return;
      }
      fwd.socket = sock;
      sock.on('error', (e) => {
        if (!settled) {
          fail(e);
          return;
        }
        this.counters.socketErrors++;
        this.opts.onEvent?.({ event: 'udp_forward_error', listen: key, error: e.message });
      });
      sock.on('close', () => fail(new Error('closed before it was listening')));
      sock.on('listening', () => {
        if (settled) return;
        settled = true;
        fwd.listening = true;
        resolve();
      });
      sock.on('message', (msg, rinfo) => this.#onForward(fwd, msg, rinfo));
      try {
        sock.bind({ address: f.address, port: f.port, exclusive: true });
      } catch (e) {
        fail(e as Error);
      }
    });
  }

  removeForward(address: string, port: number): void {
    const fwd = this.#forwards.get(`${address}:${port}`);
    if (fwd !== undefined) this.#closeForward(fwd);
  }

  /**
   * Does a datagram from vmIp:vmPort to dstIp:dstPort answer a port-forward session?
   * For the caller's address policy: a host-local client of a forward is seen as
   * the gateway, so the VM's answers are addressed to the gateway.
   */
  isForwardReply(vmIp: number, vmPort: number, dstIp: number, dstPort: number): boolean {
    return this.#inByVm.get(vmIp * 65536 + vmPort)?.has(dstIp * 65536 + dstPort) ?? false;
  }

  sessions(now: number): HostSession[] {
    const out: HostSession[] = [];
    for (const m of this.#out.values()) {
      out.push({
        proto: 'udp', direction: 'out', inside: this.#addrs.endpoint(m.vmIp, m.vmPort), remote: this.#endpoint(m.lastRemote),
        outside: m.outside, state: 'active', idleMs: Math.max(0, now - m.last), txBytes: m.tx, rxBytes: m.rx,
      });
    }
    for (const f of this.#forwards.values()) {
      for (const s of f.sessions.values()) {
        out.push({
          proto: 'udp', direction: 'in', inside: this.#addrs.endpoint(f.vmIp, f.vmPort), remote: this.#endpoint(s.seenKey),
          outside: `${f.address}:${f.port}`, state: 'active', idleMs: Math.max(0, now - s.last), txBytes: s.tx, rxBytes: s.rx,
        });
      }
    }
    return out;
  }

  #endpoint(key: number): string {
    return key === 0 ? '' : this.#addrs.endpoint(Math.floor(key / 65536), key % 65536);
  }

  /** Marks the addresses the mappings and sessions hold (family.ts: the others are swept). */
  markAddrs(): void {
    const t = this.#addrs.ip6;
    for (const m of this.#out.values()) {
      t.mark(m.vmIp);
      t.mark(Math.floor(m.lastRemote / 65536));
      for (const r of m.remotes) t.mark(r);
      if (m.redirects !== undefined) for (const [a, b] of m.redirects) {
        t.mark(Math.floor(a / 65536));
        t.mark(Math.floor(b / 65536));
      }
    }
    for (const f of this.#forwards.values()) {
      t.mark(f.vmIp);
      for (const s of f.sessions.values()) {
        t.mark(s.seenIp);
        t.mark(Math.floor(s.rKey / 65536));
      }
    }
  }

  /** About once a second: closes idle mappings and forward sessions. */
  tick(now: number): void {
    if (this.#ownAddrs && this.#addrs.ip6.count > 0) {
      this.markAddrs();
      this.#addrs.ip6.sweep();
    }
    for (const m of this.#out.values()) {
      if (now - m.last >= (m.dnsOnly ? this.#dnsIdle : this.#idle)) {
        this.counters.expired++;
        this.#closeMapping(m);
      }
    }
    for (const f of this.#forwards.values()) {
      for (const s of f.sessions.values()) {
        if (now - s.last >= this.#idle) {
          this.counters.expired++;
          this.#closeSession(s);
        }
      }
    }
  }

  close(): void {
    this.#closed = true;
    for (const m of this.#out.values()) this.#closeMapping(m);
    for (const f of this.#forwards.values()) this.#closeForward(f);
  }

  #open(vmKey: number, vmIp: number, vmPort: number, now: number): Mapping | undefined {
    const port = this.opts.budget.take(vmIp);
    if (port === null) {
      this.counters.refused++;
      return undefined;
    }
    const m = new Mapping(vmKey, vmIp, vmPort, now);
    m.bridgePort = port;
    m.sendCb = (err) => {
      if (err) this.counters.sendErrors++;
    };
    let sock: dgram.Socket;
    try {
      sock = dgram.createSocket({ type: vmIp >= IP6_BASE ? 'udp6' : 'udp4' });
    } catch (e) {
      this.opts.budget.release(vmIp, port);
      this.counters.socketErrors++;
      this.opts.onEvent?.({ event: 'udp_socket_error', inside: this.#addrs.endpoint(vmIp, vmPort), error: (e as Error).message });
      return undefined;
    }
    m.socket = sock;
    this.#out.set(vmKey, m);
    this.counters.opened++;
    sock.on('error', (e) => {
      this.counters.socketErrors++;
      // A failed bind (EMFILE, ENOBUFS...) leaves a socket that sends nothing: give the session back.
      if (!m.bound) {
        this.opts.onEvent?.({ event: 'udp_socket_error', inside: this.#addrs.endpoint(vmIp, vmPort), error: e.message });
        this.#closeMapping(m);
      }
    });
    sock.on('listening', () => {
      m.bound = true;
      const a = sock.address();
      m.outside = `${a.address}:${a.port}`;
    });
    sock.on('message', (msg, rinfo) => this.#onMapping(m, msg, rinfo));
    try {
      sock.bind({ port: 0, address: vmIp >= IP6_BASE ? '::' : '0.0.0.0', exclusive: true });
    } catch (e) {
      this.counters.socketErrors++;
      this.#closeMapping(m);
      return undefined;
    }
    return m;
  }

  #onMapping(m: Mapping, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (m.closed) return;
    const a = rinfo.address;
    // An IPv6 mapping's IPv4 peers (its resolver) come as ::ffff:a.b.c.d.
    const rIp = m.vmIp < IP6_BASE ? ip4FromString(a) : a.includes('.') ? this.#addrs.parse(a) : this.#addrs.parse6(a);
    if (rIp < 0) {
      this.counters.filtered++;
      return;
    }
    const now = this.opts.clock();
    let from = rIp * 65536 + rinfo.port;
    const red = m.redirects?.get(from);
    if (red !== undefined) {
      from = red;
      this.opts.redirects?.answered(rIp, now);
    } else if (!m.remotes.has(rIp)) {
      this.counters.filtered++;
      return;
    }
    m.last = now;
    m.rx += msg.length;
    this.#toVm(Math.floor(from / 65536), from % 65536, m.vmIp, m.vmPort, msg);
  }

  #onForward(f: Forward, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (f.closed) return;
    const a = rinfo.address;
    // An IPv6 client of a dual-stack listener: the VM sees it as seenAs(-1) (its gateway).
    const v6 = a.includes(':') && !(a.startsWith('::ffff:') && a.includes('.'));
    if (f.refuse6 !== undefined && (!v6 || a === '::1')) {
      f.refuse6();
      return;
    }
    const rIp = v6 ? this.#addrs.parse6(a) : ip4FromString(a.startsWith('::ffff:') ? a.slice(7) : a);
    if (rIp < 0 || (v6 && f.seenAs === undefined && f.refuse6 === undefined)) {
      this.counters.filtered++;
      return;
    }
    const now = this.opts.clock();
    const rKey = rIp * 65536 + rinfo.port;
    let s = f.sessions.get(rKey);
    if (s === undefined) {
      const seenIp = f.seenAs === undefined ? rIp : f.seenAs(v6 ? -1 : rIp) >>> 0;
      const seenKey = seenIp * 65536 + rinfo.port;
      const vmKey = f.vmIp * 65536 + f.vmPort;
      let byVm = this.#inByVm.get(vmKey);
      if (byVm?.has(seenKey)) {
        this.counters.conflict++;
        return;
      }
      // From the outside: the budget charges no bridge port.
      if (this.opts.budget.take(f.vmIp) === null) {
        this.counters.refused++;
        return;
      }
      if (byVm === undefined) {
        byVm = new Map();
        this.#inByVm.set(vmKey, byVm);
      }
      s = new InSession(f, rKey, rinfo.address, rinfo.port, seenIp, seenKey, now);
      byVm.set(seenKey, s);
      f.sessions.set(rKey, s);
      this.counters.opened++;
    }
    s.last = now;
    s.rx += msg.length;
    this.#toVm(s.seenIp, rinfo.port, f.vmIp, f.vmPort, msg);
  }

  /** Builds IPv4/UDP around `payload` in the frame buffer (its one copy) and hands it to the VM. */
  #toVm(src: number, sport: number, dst: number, dport: number, payload: Buffer): void {
    const plen = payload.length;
    if (dst >= IP6_BASE) {
      const ulen = UDP_HLEN + plen;
      // The UDP length field's limit (no jumbograms); over the MTU it goes as IPv6 fragments.
      if (ulen > IP4_MAX_LEN) {
        this.counters.tooBig++;
        return;
      }
      const f = this.#frame;
      const ip = HOST_HEADROOM;
      const u = ip + IP6_HLEN;
      f.set(payload, u + UDP_HLEN);
      write16(f, u + UDP.SPORT, sport);
      write16(f, u + UDP.DPORT, dport);
      write16(f, u + UDP.LEN, ulen);
      write16(f, u + UDP.CSUM, 0);
      const c = checksum(f, u, ulen, this.#addrs.writeHeader(f, ip, src, dst, IPPROTO.UDP, ulen, 0, 0));
      write16(f, u + UDP.CSUM, c === 0 ? 0xffff : c);
      const n = sendIp6(this.opts.toVm, f, ip, IP6_HLEN + ulen, this.#mtu);
      this.counters.toVm += n;
      if (n > 1) this.counters.fragmented++;
      return;
    }
    const total = IP4_MIN_HLEN + UDP_HLEN + plen;
    if (total > IP4_MAX_LEN) {
      this.counters.tooBig++;
      return;
    }
    const f = this.#frame;
    const ip = HOST_HEADROOM;
    const u = ip + IP4_MIN_HLEN;
    f.set(payload, u + UDP_HLEN);
    writeUdpHeader(f, u, sport, dport, plen, src, dst);
    this.#ipId = (this.#ipId + 1) & 0xffff;
    writeIp4(f, ip, total, this.#ipId, 0, 64, IPPROTO.UDP, src, dst);
    const n = sendIp4(this.opts.toVm, f, ip, total, this.#mtu);
    this.counters.toVm += n;
    if (n > 1) this.counters.fragmented++;
  }

  #closeMapping(m: Mapping): void {
    if (m.closed) return;
    m.closed = true;
    this.#out.delete(m.key);
    this.opts.budget.release(m.vmIp, m.bridgePort);
    try {
      m.socket.close();
    } catch {
      // already closed
    }
  }

  #closeSession(s: InSession): void {
    const f = s.fwd;
    if (f.sessions.get(s.rKey) !== s) return;
    f.sessions.delete(s.rKey);
    const vmKey = f.vmIp * 65536 + f.vmPort;
    const byVm = this.#inByVm.get(vmKey);
    if (byVm?.get(s.seenKey) === s) {
      byVm.delete(s.seenKey);
      if (byVm.size === 0) this.#inByVm.delete(vmKey);
    }
    this.opts.budget.release(f.vmIp);
  }

  #closeForward(f: Forward): void {
    if (f.closed) return;
    f.closed = true;
    if (this.#forwards.get(f.key) === f) this.#forwards.delete(f.key);
    for (const s of [...f.sessions.values()]) this.#closeSession(s);
    if (f.socket !== undefined) {
      try {
        f.socket.close();
      } catch {
        // never bound, or already closed
      }
    }
  }
}

/** "a.b.c.d" -> unsigned int, -1 for anything else (rinfo addresses: no regex on the packet path). */
export function ip4FromString(s: string): number {
  let v = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < s.length; i++) {
    const ch = s.charCodeAt(i);
    if (ch === 46) {
      if (digits === 0 || dots === 3) return -1;
      v = v * 256 + part;
      part = 0;
      digits = 0;
      dots++;
    } else if (ch >= 48 && ch <= 57 && digits < 3) {
      part = part * 10 + (ch - 48);
      if (part > 255) return -1;
      digits++;
    } else {
      return -1;
    }
  }
  if (dots !== 3 || digits === 0) return -1;
  return v * 256 + part;
}

function positive(v: number | undefined, dflt: number): number {
  return v !== undefined && Number.isFinite(v) && v > 0 ? v : dflt;
}
