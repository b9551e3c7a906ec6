/*
 * NAT through the host's own address: the `host` uplink of a router. There is no
 * interface and no address of the router's own on the outside; every flow a VM
 * opens to somewhere outside its networks becomes an ordinary socket of the host
 * (as passt/pasta and libslirp do), so the host's routing, firewall and source
 * address apply, and no privilege beyond CAP_NET_RAW (ICMP echo) is needed.
 *
 * This module dispatches a VM's packets to the protocol engines and maps the few
 * addresses that mean something special:
 * - TCP -> tcp.ts (the router terminates the VM's connection and splices it to a
 *   connected host socket), UDP -> udp.ts (one host socket per VM source
 *   address and port), ICMP echo -> icmp.ts (raw ICMP socket);
 * - the gateway address, port 53 (UDP and TCP): the DNS forwarder: the query goes
 *   to the host's resolver (dns.ts: /etc/resolv.conf, or the config's list), and
 *   the answer comes back from the gateway; other traffic to the gateway is not
 *   forwarded anywhere (the router answers ARP, ping and DHCP there itself);
 * - loopback (127/8), 0/8, multicast and broadcast destinations from a VM are
 *   martians: dropped and counted, never handed to a host socket, so a VM cannot
 *   reach the host's loopback-only services by naming them;
 * - port forwards: the daemon listens on host ports (TCP: net.Server, UDP:
 *   udp.ts's forward sockets) and opens flows into the VM; a client on the host
 *   itself (a loopback source) appears to the VM as coming from its gateway,
 *   since a VM cannot answer a loopback address.
 *
 * IPv6 (a VM's packets for off its link, network.ts route6): the same engines,
 * the addresses as family.ts's numbers (one table per NAT, `addrs`). The VM's
 * MAC is learned from its packets here (per source address, kept while a session
 * holds the address), and packets back go to it (`toVm6`): the host NAT answers
 * flows, so the VM has always spoken first. Martians: multicast, unspecified,
 * loopback, link-local and IPv4-mapped destinations (::ffff:0:0/96 would reach
 * the host's IPv4 loopback through a dual-stack socket). Fragments a VM sends
 * are put together first (reassembly6.ts: bounded, overlaps drop the datagram),
 * since the host NAT is the flow's endpoint; routed paths forward them untouched. Supported: TCP (every
 * guarantee of IPv4's: tcp.ts), UDP (udp.ts) and ICMPv6 echo (icmp.ts). DNS to
 * the gateway's IPv6 addresses (UDP and TCP port 53, network.ts) goes to the
 * same forwarder: an IPv6 VM's UDP mapping socket is dual-stack, so it reaches an
 * IPv4 resolver. Port forwards to a VM's IPv6 address (forwards.ts `inside6`):
 * the listener (dual-stack with `listen: "::"`) takes IPv6 clients only, each
 * seen by the VM as itself (its replies leave through this NAT like any IPv6
 * packet for off its link); an IPv4 or loopback client could not be answered by
 * the VM over IPv6 and is refused (`forward6Refused`; forward to the VM's IPv4
 * address for those). The VM need not have spoken first: packets towards an
 * address whose MAC is unknown are resolved by Neighbor Discovery (`toVm6`).
 *
 * One budget (types.ts) bounds the sessions of all three protocols per VM address,
 * per bridge port (the port of the packet that opens a session, `from`) and in
 * total; refusals are counted. DNS queries to the gateway are rate-limited per
 * port before they get here (network.ts, limits.ts). Everything here is off the per-frame fast path of
 * the switch: a VM's packets reach it only after the router decided they leave.
 */
import net from 'node:net';
import {
  ETH_HLEN, IP6, IP6_HLEN, IPPROTO, UDP, formatIp4, formatIp6, ip6InPrefix, ip6IsLinkLocal, ip6IsMulticast, ip6NextHeader, parseIp6, srcMac, ip4Dst, ip4HeaderLen, ip4IsFragment, ip4Proto, ip4Src, parseIp4, udpDport, udpSport,
} from '@vswitch/switch';
import { Addrs, ICMPV6, IP6_BASE } from './family.js';
import { HostBudget, type HostBudgetOptions, type HostSession, type ToVm } from './types.js';
import { HostTcp } from './tcp.js';
import { describeRcvbuf } from './socket-rcvbuf.js';
import { Reassembly6 } from './reassembly6.js';
import { HostUdp } from './udp.js';
import { HostIcmp } from './icmp.js';
import { Resolvers } from './dns.js';
import { Forwards, type PortForward } from '../napt/forwards.js';
import type { PacketPort } from '../napt/translate.js';

export interface HostNatOptions {
  /** Monotonic ms. */
  clock: () => number;
  budget?: Partial<HostBudgetOptions>;
  /** DNS servers the gateway forwards to; absent: the nameservers of `resolvConf`. */
  dns?: number[];
  /** Default /etc/resolv.conf. */
  resolvConf?: string;
  /** The router's networks take GSO super-frames (their bridge port has offload). */
  gso: boolean;
  /** The VMs' MTU (MSS towards them is 40 less; UDP/ICMP packets towards them are fragmented to it). */
  mtu: number;
  /** ICMP echo through a raw socket (default true). */
  icmp?: boolean;
  /** SO_RCVBUF of host TCP sockets (socket-rcvbuf.ts: RCVBUF_AUTO, the default, or bytes). */
  rcvbuf?: number;
  /** Is this one of the router's gateway addresses? */
  isGateway: (ip: number) => boolean;
  /** The gateway address of the network that holds `vmIp` (source of port forwards from host-local clients). */
  gatewayFor: (vmIp: number) => number;
  onEvent?: (e: { event: string; [k: string]: unknown }) => void;
  /** The rules of the port forwards (shared with the daemon, which persists them). */
  forwards?: Forwards;
  /**
   * Host address the forwards listen on (default 0.0.0.0). An IPv6 one ("::":
   * dual-stack) takes IPv6 clients too; the VM (an IPv4 target) sees those as
   * its gateway, as host-local clients (it could not answer an IPv6 address).
   */
  listen?: string;
  /** Udp idle timeout (ms), for tests. */
  udpIdleTimeoutMs?: number;
  /** Is the IPv6 address at buf[off, off+16) one of the router's gateway addresses (prefix or link-local)? */
  isGateway6?: (buf: Uint8Array, off: number) => boolean;
  /**
   * Sends an IPv6 packet to the VM at `mac` (0: unknown; the network, the one whose
   * prefix holds its destination, resolves it by ND). False: nowhere to send it. Absent: no IPv6.
   */
  toVm6?: (buf: Buffer, ipOff: number, ipLen: number, vnet: boolean, mac: number) => boolean;
}

export interface HostNatCounters {
  martian: number;
  fragment: number;
  toGatewayIgnored: number;
  noResolver: number;
  otherProto: number;
  /** IPv6 packets towards a VM whose MAC is not known (it never sent from that address, or the address was swept). */
  noNeighbor: number;
  /** IPv6 packets dropped because the address table was full until the next sweep (family.ts). */
  addressTableFull: number;
  /** Clients of a forward to an IPv6 target that were IPv4 or loopback (the VM could not answer them). */
  forward6Refused: number;
}

const BIND_RETRIES = 10;
/** ::/96 (unspecified, loopback, IPv4-compatible) and ::ffff:0:0/96 (IPv4-mapped): never a VM's destination. */
const ZERO_96 = parseIp6('::')!;
const MAPPED_96 = parseIp6('::ffff:0:0')!;
const BIND_RETRY_MS = 300;

interface Listener {
  proto: 'tcp' | 'udp';
  port: number;
  insideIp: number;
  insidePort: number;
  /** An IPv6 target (forwards.ts inside6), 16 bytes. */
  inside6?: Uint8Array;
  state: string;
  server?: net.Server;
}

export class HostNat {
  readonly budget: HostBudget;
  readonly tcp: HostTcp;
  readonly udp: HostUdp;
  readonly icmp: HostIcmp;
  readonly counters: HostNatCounters = {
    martian: 0, fragment: 0, toGatewayIgnored: 0, noResolver: 0, otherProto: 0, noNeighbor: 0, addressTableFull: 0, forward6Refused: 0,
  };
  /** The addresses of both families as the engines' numbers (family.ts). */
  readonly addrs: Addrs;
  /** IPv6 fragments from the VMs put together (the host NAT is the flows' endpoint). */
  readonly reassembly6 = new Reassembly6();
  /** The resolvers the gateway forwards DNS to (config list, or resolv.conf, re-read when it changes; failover). */
  readonly resolvers: Resolvers;
  /** Port forwards: the router's rules (napt/forwards.ts: ranges, conflicts, persistence), listened on here. */
  readonly forwards: Forwards;
  readonly #listeners = new Map<string, Listener>();
  readonly #listen: string;
  readonly #unsubscribe: () => void;
  #icmpUp = false;

  constructor(readonly opts: HostNatOptions, toVm: ToVm) {
    this.budget = new HostBudget(opts.budget);
    const addrs = new Addrs(this.budget.opts.maxSessions * 2 + 1024);
    this.addrs = addrs;
    const toVm6 = opts.toVm6;
    if (toVm6 !== undefined) {
      const t = addrs.ip6;
      const v4 = toVm;
      toVm = (buf, ipOff, ipLen, vnet) => {
        if (buf[ipOff] >>> 4 !== 6) {
          v4(buf, ipOff, ipLen, vnet);
          return;
        }
        const id = t.intern(buf, ipOff + IP6.DST);
        const mac = id < 0 ? 0 : t.link[id - IP6_BASE];
        if (!toVm6(buf, ipOff, ipLen, vnet, mac)) this.counters.noNeighbor++;
      };
    }
    const onEvent = opts.onEvent;
    this.resolvers = new Resolvers({ clock: opts.clock, servers: opts.dns, path: opts.resolvConf, onEvent });
    this.tcp = new HostTcp({
      clock: opts.clock, toVm, gso: opts.gso, mss: opts.mtu - 40, budget: this.budget, onEvent, addrs,
      connect: (ip, port, onread) => this.#connect(ip, port, onread),
      tuning: opts.rcvbuf === undefined ? undefined : { rcvbuf: opts.rcvbuf },
    });
    this.udp = new HostUdp({
      clock: opts.clock, toVm, budget: this.budget, onEvent, idleTimeoutMs: opts.udpIdleTimeoutMs, mtu: opts.mtu, redirects: this.resolvers, addrs,
    });
    this.icmp = new HostIcmp({ clock: opts.clock, toVm, budget: this.budget, onEvent, mtu: opts.mtu, addrs });
    this.#listen = opts.listen ?? '0.0.0.0';
    this.forwards = opts.forwards ?? new Forwards();
    this.#unsubscribe = this.forwards.subscribe((event, f) => this.#onForward(event, f));
    for (const f of this.forwards.list()) this.#onForward('add', f);
  }

  start(): void {
    if (this.opts.icmp !== false) this.#icmpUp = this.icmp.start();
  }

  describe(): Record<string, unknown> {
    return {
      kind: 'host',
      resolver: this.resolvers.current() === 0 ? '' : formatIp4(this.resolvers.current()),
      icmp: this.opts.icmp === false ? 'off' : this.#icmpUp ? 'on' : 'unavailable',
      icmp6: this.opts.icmp === false ? 'off' : this.icmp.available6 ? 'on' : 'unavailable',
      listen: this.#listen,
      rcvbuf: describeRcvbuf(this.tcp.tuning.rcvbuf),
      reassembly6: { ...this.reassembly6.opts },
    };
  }

  /** Counters for `router show` and the metrics: sessions, refusals, and each engine's own. */
  stats(): Record<string, unknown> {
    return {
      ipv6Addresses: this.addrs.ip6.count,
      sessions: this.budget.total,
      refused: { table_full: this.budget.refusedGlobal, host_limit: this.budget.refusedPerHost, port_limit: this.budget.refusedPerPort },
      maxSessionsPerPort: this.budget.opts.maxPerPort,
      ports: this.budget.portCounts(),
      dropped: { ...this.counters },
      tcp: { ...this.tcp.counters },
      udp: { ...this.udp.counters },
      icmp: { ...this.icmp.counters },
      reassembly6: { ...this.reassembly6.counters, pending: this.reassembly6.pending, bytes: this.reassembly6.bytes },
    };
  }

  /**
   * An IPv4 packet from a VM for somewhere outside the router's networks, or for a
   * gateway address; `from` tells its bridge port, asked only if it opens a session.
   */
  fromVm(buf: Uint8Array, ipOff: number, ipLen: number, partial: boolean, from?: PacketPort): void {
    this.budget.from(from, buf, ipOff);
    this.#fromVm(buf, ipOff, ipLen, partial);
    // Sessions opened later from the outside (host port forwards) charge no port.
    this.budget.from(undefined);
  }

  #fromVm(buf: Uint8Array, ipOff: number, ipLen: number, partial: boolean): void {
    if (buf[ipOff] >>> 4 === 6) {
      this.#fromVm6(buf, ipOff, ipLen, partial);
      return;
    }
    const dst = ip4Dst(buf, ipOff);
    const top = dst >>> 24;
    if (top === 127 || top === 0 || top >= 224) {
      this.counters.martian++;
      return;
    }
    if (ip4IsFragment(buf, ipOff)) {
      this.counters.fragment++;
      return;
    }
    const proto = ip4Proto(buf, ipOff);
    if (this.opts.isGateway(dst)) {
      // For the gateway: its DNS forwarder, TCP (port 53, or a session a host port
      // forward opened from a host-local client, which the VM sees as the gateway;
      // anything else is refused by the engine) and UDP replies to such forwards.
      const l4 = ipOff + ip4HeaderLen(buf, ipOff);
      if ((proto !== IPPROTO.UDP && proto !== IPPROTO.TCP) || ipLen < l4 - ipOff + UDP.LEN) {
        this.counters.toGatewayIgnored++;
        return;
      }
      // Ports are at the same places in TCP and UDP.
      const dport = udpDport(buf, l4);
      if (proto === IPPROTO.TCP) {
        this.tcp.fromVm(buf, ipOff, ipLen, partial);
        return;
      }
      if (dport === 53) {
        const resolver = this.resolvers.current();
        if (resolver === 0) this.counters.noResolver++;
        else this.udp.fromVm(buf, ipOff, ipLen, { ip: resolver, port: 53 }, partial);
      } else if (this.udp.isForwardReply(ip4Src(buf, ipOff), udpSport(buf, l4), dst, dport)) {
        this.udp.fromVm(buf, ipOff, ipLen, undefined, partial);
      } else {
        this.counters.toGatewayIgnored++;
      }
      return;
    }
    if (proto === IPPROTO.TCP) this.tcp.fromVm(buf, ipOff, ipLen, partial);
    else if (proto === IPPROTO.UDP) this.udp.fromVm(buf, ipOff, ipLen, undefined, partial);
    else if (proto === IPPROTO.ICMP) this.icmp.fromVm(buf, ipOff, ipLen);
    else this.counters.otherProto++;
  }

  /** An IPv6 packet from a VM (network.ts checked its header: checkIpv6). */
  #fromVm6(buf: Uint8Array, ipOff: number, ipLen: number, partial: boolean): void {
    const d = ipOff + IP6.DST;
    // Multicast, ::/96 (unspecified, loopback, IPv4-compatible), IPv4-mapped, link-local.
    if (ip6IsMulticast(buf, d) || ip6IsLinkLocal(buf, d) || ip6InPrefix(buf, d, ZERO_96, 0, 96) || ip6InPrefix(buf, d, MAPPED_96, 0, 96)) {
      this.counters.martian++;
      return;
    }
    if (this.opts.toVm6 === undefined) {
      this.counters.otherProto++;
      return;
    }
    if (Reassembly6.takes(buf, ipOff)) {
      // A fragment (reassembly6.ts): the flow's ports are in the whole datagram, handled once complete.
      const n = this.reassembly6.add(buf, ipOff, ipLen, this.opts.clock());
      if (n > 0) this.#fromVm6(this.reassembly6.out, ETH_HLEN, n, false);
      return;
    }
    const t = this.addrs.ip6;
    const src = t.intern(buf, ipOff + IP6.SRC);
    if (src < 0) {
      this.counters.addressTableFull++;
      return;
    }
    // Where packets back to this address go: the MAC it came from.
    t.link[src - IP6_BASE] = srcMac(buf, ipOff - ETH_HLEN);
    const next = ip6NextHeader(buf, ipOff);
    if (this.opts.isGateway6?.(buf, d) === true) {
      // For the gateway: its DNS forwarder (network.ts hands only port 53 here), as for IPv4.
      const l4 = ipOff + IP6_HLEN;
      if ((next !== IPPROTO.UDP && next !== IPPROTO.TCP) || ipLen < IP6_HLEN + UDP.LEN || udpDport(buf, l4) !== 53) {
        this.counters.toGatewayIgnored++;
        return;
      }
      if (next === IPPROTO.TCP) {
        this.tcp.fromVm(buf, ipOff, ipLen, partial);
        return;
      }
      const resolver = this.resolvers.current();
      if (resolver === 0) this.counters.noResolver++;
      else this.udp.fromVm(buf, ipOff, ipLen, { ip: resolver, port: 53 }, partial);
      return;
    }
    if (next === IPPROTO.TCP) this.tcp.fromVm(buf, ipOff, ipLen, partial);
    else if (next === IPPROTO.UDP) this.udp.fromVm(buf, ipOff, ipLen, undefined, partial);
    else if (next === ICMPV6) this.icmp.fromVm(buf, ipOff, ipLen);
    else this.counters.otherProto++;
  }

  /**
   * TCP's host connect: the gateway's port 53 is the current resolver (refused
   * there: fail over); any other port of the gateway is closed (the VM gets a RST),
   * since the gateway is this router, not a host behind it. `onread` (the engine's)
   * makes the socket read straight into the engine's frame blocks.
   */
  #connect(ip: number, port: number, onread: net.OnReadOpts): net.Socket {
    const t = this.addrs.ip6;
    if (ip >= IP6_BASE ? this.opts.isGateway6?.(t.bytes, t.at(ip)) === true : this.opts.isGateway(ip)) {
      const resolver = port === 53 ? this.resolvers.current() : 0;
      if (resolver === 0) return refusedSocket();
      const sock = net.connect({ host: formatIp4(resolver), port, noDelay: true, allowHalfOpen: true, onread });
      sock.once('error', (e: NodeJS.ErrnoException) => { if (e.code === 'ECONNREFUSED') this.resolvers.failed(resolver); });
      return sock;
    }
    return net.connect({ host: this.addrs.format(ip), port, noDelay: true, allowHalfOpen: true, onread });
  }

  tick(now: number): void {
    this.resolvers.tick(now);
    this.tcp.tick(now);
    this.udp.tick(now);
    this.icmp.tick(now);
    this.reassembly6.expire(now);
    // IPv6 addresses no session holds any more are freed (family.ts).
    const t = this.addrs.ip6;
    if (t.count > 0) {
      this.tcp.markAddrs();
      this.udp.markAddrs();
      this.icmp.markAddrs();
      t.sweep();
    }
  }

  sessions(now: number): HostSession[] {
    return [...this.tcp.sessions(now), ...this.udp.sessions(now), ...this.icmp.sessions(now)];
  }

  /**
   * Port forwards as the listening sockets see them: one listener per public port
   * of every rule ("8000-8009" listens on ten ports); `error` while the port could
   * not be bound (EADDRINUSE, EACCES...), retried by nothing but a re-add.
   */
  listeners(): { proto: 'tcp' | 'udp'; port: number; listen: string; to: string; state: string }[] {
    const at = this.#listen.includes(':') ? `[${this.#listen}]` : this.#listen;
    return [...this.#listeners.values()].map((l) => ({
      proto: l.proto, port: l.port, listen: `${at}:${l.port}`, state: l.state,
      to: `${l.inside6 !== undefined ? `[${formatIp6(l.inside6)}]` : formatIp4(l.insideIp)}:${l.insidePort}`,
    }));
  }

  #onForward(event: 'add' | 'del', f: PortForward): void {
    for (let p = f.publicLo; p <= f.publicHi; p++) {
      const key = `${f.proto}/${p}`;
      if (event === 'del') {
        const l = this.#listeners.get(key);
        this.#listeners.delete(key);
        if (l !== undefined) this.#unbind(l);
        continue;
      }
      const l: Listener = { proto: f.proto, port: p, insideIp: f.insideIp, insidePort: f.insideLo + (p - f.publicLo), state: 'binding' };
      if (f.inside6 !== undefined) l.inside6 = parseIp6(f.inside6);
      this.#listeners.set(key, l);
      this.#tryBind(key, l, 0);
    }
  }

  /**
   * Binds, retrying EADDRINUSE for a few seconds: a reload that re-creates the
   * router binds before the old listener's close has run.
   */
  #tryBind(key: string, l: Listener, attempt: number): void {
    this.#bind(l).then(() => {
      if (this.#listeners.get(key) === l) l.state = 'listening';
      else this.#unbind(l);
    }, (e: NodeJS.ErrnoException) => {
      l.server = undefined;
      if (this.#listeners.get(key) !== l) return;
      if (e.code === 'EADDRINUSE' && attempt < BIND_RETRIES) {
        setTimeout(() => { if (this.#listeners.get(key) === l) this.#tryBind(key, l, attempt + 1); }, BIND_RETRY_MS).unref();
        return;
      }
      l.state = `error: ${e.code ?? e.message}`;
      this.opts.onEvent?.({ event: 'forward_listen_failed', proto: l.proto, listen: `${this.#listen}:${l.port}`, error: e.code ?? e.message });
    });
  }

  async #bind(l: Listener): Promise<void> {
    if (l.inside6 !== undefined) return this.#bind6(l, l.inside6);
    const seenAs = (remote: number): number => (remote < 0 || remote >>> 24 === 127 ? this.opts.gatewayFor(l.insideIp) : remote);
    if (l.proto === 'udp') {
      await this.udp.addForward({ address: this.#listen, port: l.port, vmIp: l.insideIp, vmPort: l.insidePort, seenAs });
      return;
    }
    const server = net.createServer({ noDelay: true, pauseOnConnect: true, allowHalfOpen: true }, (sock) => {
      const raw = sock.remoteAddress ?? '';
      const mapped = raw.startsWith('::ffff:') && raw.includes('.');
      // An IPv6 client (a dual-stack listener) is the gateway to the IPv4 VM.
      const remote = mapped || !raw.includes(':') ? parseIp4(mapped ? raw.slice(7) : raw) : this.opts.gatewayFor(l.insideIp);
      if (remote < 0) {
        sock.destroy();
        return;
      }
      this.tcp.accept(sock, l.insideIp, l.insidePort, seenAs(remote), sock.remotePort ?? 0);
    });
    l.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: this.#listen, port: l.port, exclusive: true }, () => {
        server.off('error', reject);
        server.on('error', (e) => this.opts.onEvent?.({ event: 'forward_error', proto: 'tcp', listen: `${this.#listen}:${l.port}`, error: e.message }));
        resolve();
      });
    });
  }

  /**
   * A forward to an IPv6 target: UDP through udp.ts's forward socket (the target
   * interned for as long as the forward lives: its forward marks it), TCP by
   * interning the target and the client per connection.
   */
  async #bind6(l: Listener, target: Uint8Array): Promise<void> {
    const t = this.addrs.ip6;
    const refuse = (): void => { this.counters.forward6Refused++; };
    if (l.proto === 'udp') {
      const vmIp = t.intern(target, 0);
      if (vmIp < 0) throw Object.assign(new Error('IPv6 address table full'), { code: 'ENOSPC' });
      await this.udp.addForward({ address: this.#listen, port: l.port, vmIp, vmPort: l.insidePort, ipv6: { refused: refuse } });
      return;
    }
    const server = net.createServer({ noDelay: true, pauseOnConnect: true, allowHalfOpen: true }, (sock) => {
      const raw = sock.remoteAddress ?? '';
      const a = raw.includes(':') ? parseIp6(raw) : undefined;
      if (a === undefined || ip6InPrefix(a, 0, ZERO_96, 0, 96) || ip6InPrefix(a, 0, MAPPED_96, 0, 96)) {
        refuse();
        sock.destroy();
        return;
      }
      const vm = t.intern(target, 0);
      const remote = vm < 0 ? -1 : t.intern(a, 0);
      if (remote < 0) {
        this.counters.addressTableFull++;
        sock.destroy();
        return;
      }
      this.tcp.accept(sock, vm, l.insidePort, remote, sock.remotePort ?? 0);
    });
    l.server = server;
    await this.#listenOn(server, l.port);
  }

  #listenOn(server: net.Server, port: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: this.#listen, port, exclusive: true }, () => {
        server.off('error', reject);
        server.on('error', (e) => this.opts.onEvent?.({ event: 'forward_error', proto: 'tcp', listen: `${this.#listen}:${port}`, error: e.message }));
        resolve();
      });
    });
  }

  #unbind(l: Listener): void {
    if (l.server !== undefined) l.server.close();
    else if (l.proto === 'udp') this.udp.removeForward(this.#listen, l.port);
  }

  close(): void {
    this.#unsubscribe();
    for (const l of this.#listeners.values()) this.#unbind(l);
    this.#listeners.clear();
    this.tcp.close();
    this.udp.close();
    this.icmp.close();
  }
}

/** A socket that fails like a connect to a closed port, for destinations we refuse ourselves. */
function refusedSocket(): net.Socket {
  const sock = new net.Socket();
  process.nextTick(() => sock.destroy(Object.assign(new Error('connection refused'), { code: 'ECONNREFUSED', errno: -111, syscall: 'connect' })));
  return sock;
}
