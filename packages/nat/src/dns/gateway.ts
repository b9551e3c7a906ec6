/*
 * The gateway's DNS server, as dnsmasq is for a libvirt network: every router
 * network's gateway address answers DNS on UDP port 53, whatever the uplink.
 *
 * Names of its own (authoritative, answered at once, TTL 0 as dnsmasq's local-ttl):
 * each network's DHCP clients by the hostname they sent (option 12) and its
 * reservations by their `hostname`, as `NAME.DOMAIN` (the network's DHCP
 * `domain`) and as the bare `NAME`; A for the address, PTR for the address's
 * in-addr.arpa name. A reservation's name wins over a lease's; of two leases with
 * one name the one that expires last wins. A client sees only its own network's
 * names. Under the network's domain, a bare name, and the reverse names of its
 * subnet, an unknown name is NXDOMAIN (never asked upstream: the domain is the
 * network's, and leaking the lab's names to the outside helps nobody); a known name
 * asked for another type gets an empty answer (NODATA). The table is rebuilt from
 * the DHCP server at most once a second (queries are rate-limited per port anyway).
 *
 * Every other query is forwarded, or handed back (`forward: false`, uplink kind
 * host: the host NAT's forwarder, host/dns.ts, takes it as before). Forwarding goes
 * through sockets of the host's own stack (as dnsmasq does), to the configured
 * upstream servers or the host's (resolv.conf, re-read when it changes; failover
 * when one leaves queries unanswered: host/dns.ts Resolvers). Each forwarded query
 * gets a random ID and one of SOCKETS sockets (random source ports), and an answer
 * is taken only from the server asked, on that socket, with that ID and the same
 * question; its ID is restored and it is sent back from the gateway, cut to what
 * the client can take (its EDNS size, else 512, and never more than the network's
 * MTU) with TC set if it does not fit.
 *
 * IPv6: a network with `ipv6` answers on its gateway's IPv6 addresses (the
 * prefix address and the link-local one) too, from the address asked. Its
 * DHCPv6 server's bound leases name their addresses the same way: AAAA for the
 * name the client sent in its Client FQDN option (39, dhcp6/server.ts), else for
 * the hostname of the IPv4 lease (or reservation) of the same MAC, the model of
 * the A records; of two leases with one name the one that expires last wins, and
 * PTR answers the address's ip6.arpa name. A name is known when it has either
 * record: a name with only an A record asked for AAAA gets NOERROR and no answer
 * (NODATA, so resolvers fall back to IPv4 at once), and one with only AAAA asked
 * for A likewise. SLAAC addresses are the guests' own choice and have no name
 * here. Other ip6.arpa names inside the network's prefix are NXDOMAIN, never
 * asked upstream. Upstream servers are asked over IPv4 as before.
 *
 * Bounded, never blocking the loop: queries are rate-limited per bridge port
 * before they get here (network.ts, limits.dns); at most `maxOutstanding` forwarded
 * queries wait for an answer, at most `maxOutstandingPerPort` of one bridge port
 * (further ones are dropped and counted: the client retries); an unanswered query
 * is forgotten after `timeoutMs`. Sends are asynchronous datagrams.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { ETH_HLEN, ETHERTYPE, IP6, etherType, formatIp4, ip4Src, srcMac, udpSport } from '@vswitch/switch';
import { Resolvers } from '../host/dns.js';
import { udp6Frame, udpFrame } from '../frames.js';
import type { RouterNetwork } from '../network.js';
import {
  CLASSIC_UDP_SIZE, DNS_HEADER, QCLASS_IN, QTYPE, RCODE, aData, answersQuestion, encodeName, msgId, parseQuery, reverseIp4, setMsgId, truncate,
  writeAnswer, type DnsQuery, type DnsRecord,
} from './wire.js';

/** What became of a query that reached the server (vswitch_dns_queries_total{result}). */
export const DNS_RESULTS = ['local', 'nxdomain', 'nodata', 'forwarded', 'handed_off', 'refused'] as const;
/** Queries and answers dropped, or answered SERVFAIL, by reason (vswitch_dns_dropped_total{reason}). */
export const DNS_DROP_REASONS = ['malformed', 'backlog', 'port_backlog', 'no_upstream', 'send_error', 'timeout', 'bad_answer'] as const;
export type DnsResult = (typeof DNS_RESULTS)[number];
export type DnsDropReason = (typeof DNS_DROP_REASONS)[number];

export const DNS_DEFAULTS = { maxOutstanding: 256, maxOutstandingPerPort: 32, timeoutMs: 5000 } as const;
/** Sockets forwarded queries are spread over (each its own random source port). */
export const SOCKETS = 4;
const LOCAL_TTL = 0;
const NAMES_TTL_MS = 1000;

export interface GatewayDnsOptions {
  /** Monotonic ms. */
  clock: () => number;
  /** false: answer our names only; hand every other query back (the host NAT forwards it). */
  forward: boolean;
  /** Upstream servers; empty or absent: the nameservers of `resolvConf`. */
  upstream?: number[];
  resolvConf?: string;
  maxOutstanding?: number;
  maxOutstandingPerPort?: number;
  timeoutMs?: number;
  /** Largest IPv4 packet towards a network's VMs (default 1500). */
  mtu?: (net: RouterNetwork) => number;
  /** dns_resolvers, dns_failover, dns_no_resolver (Resolvers), dns_socket_error. */
  onEvent?: (e: { event: string; [k: string]: unknown }) => void;
  /** Tests: the socket factory. */
  socket?: () => Socket;
}

interface Pending {
  net: RouterNetwork;
  port: string;
  clientMac: number;
  clientIp: number;
  /** An IPv6 client: its address, then the gateway address it asked (32 bytes); undefined for IPv4. */
  addr6: Buffer | undefined;
  clientPort: number;
  clientId: number;
  upstream: number;
  sock: Socket;
  /** The query as sent (our ID), for the question check. */
  sent: Buffer;
  questionEnd: number;
  /** What the client can take. */
  maxLen: number;
  at: number;
}

interface Names {
  at: number;
  domain: string;
  byName: Map<string, number>;
  byIp: Map<number, string>;
  /** DHCPv6 leases: name -> address, and ip6.arpa name -> name. */
  byName6: Map<string, Uint8Array>;
  byRev6: Map<string, string>;
}

const HOST_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export class GatewayDns {
  readonly results = new Float64Array(DNS_RESULTS.length);
  readonly drops = new Float64Array(DNS_DROP_REASONS.length);
  /** Upstream answers relayed to clients. */
  answersRelayed = 0;
  readonly resolvers: Resolvers | undefined;
  readonly #pending = new Map<number, Pending>();
  readonly #perPort = new Map<string, number>();
  readonly #names = new WeakMap<RouterNetwork, Names>();
  readonly #sockets: Socket[] = [];
  readonly #out = Buffer.alloc(65536 + 64);
  readonly #reply = Buffer.alloc(65536);
  readonly #maxOutstanding: number;
  readonly #maxPerPort: number;
  readonly #timeoutMs: number;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(readonly opts: GatewayDnsOptions) {
    this.#maxOutstanding = opts.maxOutstanding ?? DNS_DEFAULTS.maxOutstanding;
    this.#maxPerPort = opts.maxOutstandingPerPort ?? DNS_DEFAULTS.maxOutstandingPerPort;
    this.#timeoutMs = opts.timeoutMs ?? DNS_DEFAULTS.timeoutMs;
    if (opts.forward) {
      this.resolvers = new Resolvers({
        clock: opts.clock, servers: opts.upstream, path: opts.resolvConf, timeoutMs: Math.min(2000, this.#timeoutMs), onEvent: opts.onEvent,
      });
      this.#timer = setInterval(() => this.tick(this.opts.clock()), 1000);
      this.#timer.unref();
    }
  }

  /** Forwarded queries waiting for their answer. */
  get outstanding(): number { return this.#pending.size; }

  /**
   * A UDP datagram to the gateway's port 53, at f[l4, l4+ulen) of the frame f (its
   * Ethernet header at 0). True when handled here (answered, forwarded or dropped);
   * false: not ours to answer and not forwarded here (`forward: false`).
   */
  handle(net: RouterNetwork, f: Uint8Array, l4: number, ulen: number): boolean {
    const off = l4 + 8;
    const len = ulen - 8;
    const q = parseQuery(f, off, len);
    if (typeof q === 'string') {
      this.#drop('malformed');
      return true;
    }
    if (q.opcode !== 0) return this.#answer(net, f, l4, off, q, RCODE.NOTIMP, [], false, 'refused');
    if (q.qdcount !== 1) return this.#answer(net, f, l4, off, q, RCODE.FORMERR, [], false, 'refused');
    const local = q.qclass === QCLASS_IN ? this.#local(net, q) : undefined;
    if (local !== undefined) {
      const result: DnsResult = local.rcode === RCODE.NXDOMAIN ? 'nxdomain' : local.answers.length === 0 ? 'nodata' : 'local';
      return this.#answer(net, f, l4, off, q, local.rcode, local.answers, true, result);
    }
    if (!this.opts.forward) {
      this.results[DNS_RESULTS.indexOf('handed_off')]++;
      return false;
    }
    this.#forward(net, f, l4, off, len, q);
    return true;
  }

  /** Expires unanswered queries, lets the resolvers fail over and re-read resolv.conf. */
  tick(now: number): void {
    for (const [id, p] of this.#pending) {
      if (now - p.at < this.#timeoutMs) continue;
      this.#forget(id, p);
      this.#drop('timeout');
    }
    this.resolvers?.tick(now);
  }

  close(): void {
    this.#closed = true;
    clearInterval(this.#timer);
    this.#timer = undefined;
    for (const s of this.#sockets) s.close();
    this.#sockets.length = 0;
    this.#pending.clear();
    this.#perPort.clear();
  }

  /** Our answer to `q` if the name is ours to answer, else undefined. */
  #local(net: RouterNetwork, q: DnsQuery): { rcode: number; answers: DnsRecord[] } | undefined {
    const names = this.#namesOf(net);
    if (q.name.endsWith('.ip6.arpa')) {
      const nd = net.nd;
      if (nd === undefined || !inReverseZone6(q.name, nd.prefix, nd.opts.prefixLen)) return undefined;
      const name = names.byRev6.get(q.name);
      if (name === undefined) return { rcode: RCODE.NXDOMAIN, answers: [] };
      const fqdn = names.domain === '' ? name : `${name}.${names.domain}`;
      return { rcode: RCODE.NOERROR, answers: q.qtype === QTYPE.PTR || q.qtype === QTYPE.ANY ? [{ type: QTYPE.PTR, ttl: LOCAL_TTL, data: encodeName(fqdn) }] : [] };
    }
    const rev = reverseIp4(q.name);
    if (rev >= 0) {
      if (!net.contains(rev)) return undefined;
      const name = names.byIp.get(rev);
      if (name === undefined) return { rcode: RCODE.NXDOMAIN, answers: [] };
      const fqdn = names.domain === '' ? name : `${name}.${names.domain}`;
      return { rcode: RCODE.NOERROR, answers: q.qtype === QTYPE.PTR || q.qtype === QTYPE.ANY ? [{ type: QTYPE.PTR, ttl: LOCAL_TTL, data: encodeName(fqdn) }] : [] };
    }
    let host: string;
    if (!q.name.includes('.') && q.name !== '') {
      host = q.name;
    } else if (names.domain !== '' && (q.name === names.domain || q.name.endsWith(`.${names.domain}`))) {
      if (q.name === names.domain) return { rcode: RCODE.NOERROR, answers: [] };
      host = q.name.slice(0, -names.domain.length - 1);
    } else {
      return undefined;
    }
    const ip = names.byName.get(host);
    const ip6 = names.byName6.get(host);
    if (ip === undefined && ip6 === undefined) return { rcode: RCODE.NXDOMAIN, answers: [] };
    const answers: DnsRecord[] = [];
    if (ip !== undefined && (q.qtype === QTYPE.A || q.qtype === QTYPE.ANY)) answers.push({ type: QTYPE.A, ttl: LOCAL_TTL, data: aData(ip) });
    if (ip6 !== undefined && (q.qtype === QTYPE.AAAA || q.qtype === QTYPE.ANY)) answers.push({ type: QTYPE.AAAA, ttl: LOCAL_TTL, data: ip6 });
    return { rcode: RCODE.NOERROR, answers };
  }

  /** The network's names: its reservations', then its bound leases' (rebuilt at most once a second). */
  #namesOf(net: RouterNetwork): Names {
    const now = this.opts.clock();
    const cached = this.#names.get(net);
    if (cached !== undefined && now - cached.at < NAMES_TTL_MS) return cached;
    const dhcp = net.opts.dhcp;
    const names: Names = {
      at: now, domain: (dhcp?.config.domain ?? '').toLowerCase().replace(/\.$/, ''), byName: new Map(), byIp: new Map(), byName6: new Map(), byRev6: new Map(),
    };
    const label = (h: string | undefined): string | undefined => {
      const l = h?.split('.')[0].toLowerCase();
      return l !== undefined && HOST_LABEL.test(l) ? l : undefined;
    };
    // The IPv4 name of each MAC: a DHCPv6 client that sent no FQDN is named by it.
    const nameOfMac = new Map<number, string>();
    if (dhcp !== undefined) {
      const leases = dhcp.leases(Date.now()).filter((l) => l.state === 'bound').sort((a, b) => a.expiresAt - b.expiresAt);
      for (const l of leases) { const n = label(l.hostname); if (n !== undefined) nameOfMac.set(l.mac, n); }
      for (const r of dhcp.config.reservations ?? []) { const n = label(r.hostname); if (n !== undefined) nameOfMac.set(r.mac, n); }
      // Later entries win: leases by expiry, then reservations.
      const entries: [string | undefined, number][] = [
        ...leases.map((l): [string | undefined, number] => [label(l.hostname), l.ip]),
        ...(dhcp.config.reservations ?? []).map((r): [string | undefined, number] => [label(r.hostname), r.ip]),
      ];
      for (const [name, ip] of entries) {
        if (name === undefined) continue;
        const old = names.byName.get(name);
        if (old !== undefined && names.byIp.get(old) === name) names.byIp.delete(old);
        names.byName.set(name, ip);
        names.byIp.set(ip, name);
      }
    }
    const dhcp6 = net.opts.dhcp6;
    if (dhcp6 !== undefined) {
      const leases6 = dhcp6.leases(Date.now()).filter((l) => l.state === 'bound').sort((a, b) => a.expiresAt - b.expiresAt);
      for (const l of leases6) {
        const name = label(l.hostname) ?? nameOfMac.get(l.mac);
        if (name === undefined) continue;
        const old = names.byName6.get(name);
        if (old !== undefined) names.byRev6.delete(reverseName6(old));
        names.byName6.set(name, l.address);
        names.byRev6.set(reverseName6(l.address), name);
      }
    }
    this.#names.set(net, names);
    return names;
  }

  #answer(
    net: RouterNetwork, f: Uint8Array, l4: number, off: number, q: DnsQuery, rcode: number, answers: DnsRecord[], aa: boolean,
    result: DnsResult | undefined,
  ): true {
    const n = writeAnswer(this.#reply, f, off, q, rcode, answers, aa);
    if (result !== undefined) this.results[DNS_RESULTS.indexOf(result)]++;
    if (etherType(f, 0) === ETHERTYPE.IPV6) {
      // From the address asked, to the client: the query's own addresses, swapped.
      const k = udp6Frame(this.#out, srcMac(f, 0), net.mac, f, ETH_HLEN + IP6.DST, f, ETH_HLEN + IP6.SRC, 53, udpSport(f, l4), this.#reply, n);
      net.emit(this.#out, 0, k);
      return true;
    }
    this.#send(net, srcMac(f, 0), ip4Src(f, ETH_HLEN), undefined, udpSport(f, l4), this.#reply, n);
    return true;
  }

  #send(net: RouterNetwork, mac: number, ip: number, addr6: Buffer | undefined, port: number, payload: Uint8Array, len: number): void {
    const n = addr6 !== undefined
      ? udp6Frame(this.#out, mac, net.mac, addr6, 16, addr6, 0, 53, port, payload, len)
      : udpFrame(this.#out, mac, net.mac, net.ip, ip, 53, port, payload, len);
    net.emit(this.#out, 0, n);
  }

  #forward(net: RouterNetwork, f: Uint8Array, l4: number, off: number, len: number, q: DnsQuery): void {
    const mac = srcMac(f, 0);
    const port = net.portOfMac(mac);
    const upstream = this.resolvers!.current();
    if (upstream === 0) {
      this.#drop('no_upstream');
      this.#answer(net, f, l4, off, q, RCODE.SERVFAIL, [], false, undefined);
      return;
    }
    if (this.#pending.size >= this.#maxOutstanding) {
      this.#drop('backlog');
      return;
    }
    const mine = this.#perPort.get(port) ?? 0;
    if (mine >= this.#maxPerPort) {
      this.#drop('port_backlog');
      return;
    }
    let id: number;
    do id = (Math.random() * 0x10000) | 0; while (this.#pending.has(id));
    const sent = Buffer.from(f.subarray(off, off + len));
    setMsgId(sent, id);
    const sock = this.#socket();
    const mtu = this.opts.mtu?.(net) ?? 1500;
    const v6 = etherType(f, 0) === ETHERTYPE.IPV6;
    const p: Pending = {
      net, port, clientMac: mac, clientIp: v6 ? 0 : ip4Src(f, ETH_HLEN),
      addr6: v6 ? Buffer.from(f.subarray(ETH_HLEN + IP6.SRC, ETH_HLEN + IP6.SRC + 32)) : undefined,
      clientPort: udpSport(f, l4), clientId: q.id, upstream, sock, sent,
      questionEnd: q.questionEnd, maxLen: Math.min(q.ednsSize || CLASSIC_UDP_SIZE, mtu - (v6 ? 48 : 28)), at: this.opts.clock(),
    };
    this.#pending.set(id, p);
    this.#perPort.set(port, mine + 1);
    this.results[DNS_RESULTS.indexOf('forwarded')]++;
    this.resolvers!.sent(upstream, p.at);
    sock.send(sent, 53, formatIp4(upstream), (err) => {
      if (err === null || err === undefined || this.#pending.get(id) !== p) return;
      this.#forget(id, p);
      this.#drop('send_error');
      this.resolvers?.failed(upstream);
    });
  }

  #socket(): Socket {
    if (this.#sockets.length < SOCKETS) {
      const s = this.opts.socket?.() ?? createSocket('udp4');
      s.on('message', (msg, rinfo) => this.#onAnswer(s, msg, rinfo));
      s.on('error', (e) => this.opts.onEvent?.({ event: 'dns_socket_error', error: e.message }));
      this.#sockets.push(s);
      return s;
    }
    return this.#sockets[(Math.random() * SOCKETS) | 0];
  }

  #onAnswer(sock: Socket, msg: Buffer, rinfo: RemoteInfo): void {
    if (this.#closed || msg.length < DNS_HEADER) return;
    const id = msgId(msg);
    const p = this.#pending.get(id);
    if (p === undefined || p.sock !== sock || rinfo.port !== 53 || rinfo.address !== formatIp4(p.upstream)
      || !answersQuestion(msg, p.sent, p.questionEnd)) {
      this.#drop('bad_answer');
      return;
    }
    this.#forget(id, p);
    this.resolvers?.answered(p.upstream, this.opts.clock());
    setMsgId(msg, p.clientId);
    const n = msg.length > p.maxLen ? truncate(msg, p.questionEnd) : msg.length;
    this.answersRelayed++;
    this.#send(p.net, p.clientMac, p.clientIp, p.addr6, p.clientPort, msg, n);
  }

  #forget(id: number, p: Pending): void {
    this.#pending.delete(id);
    const n = (this.#perPort.get(p.port) ?? 1) - 1;
    if (n <= 0) this.#perPort.delete(p.port);
    else this.#perPort.set(p.port, n);
  }

  #drop(reason: DnsDropReason): void {
    this.drops[DNS_DROP_REASONS.indexOf(reason)]++;
  }
}

/**
 * Is `name` (lower case, "...ip6.arpa") inside the reverse zone of prefix/len
 * (len a multiple of 4): at least len/4 nibble labels, the first ones (from the
 * zone's end) those of the prefix?
 */
export function inReverseZone6(name: string, prefix: Uint8Array, len: number): boolean {
  const labels = name.slice(0, -'.ip6.arpa'.length).split('.');
  const need = len >>> 2;
  if (labels.length < need || labels.length > 32) return false;
  for (let i = 0; i < need; i++) {
    const l = labels[labels.length - 1 - i];
    const nib = (prefix[i >>> 1] >>> ((i & 1) === 0 ? 4 : 0)) & 0xf;
    if (l.length !== 1 || parseInt(l, 16) !== nib) return false;
  }
  return labels.every((l) => /^[0-9a-f]$/.test(l));
}

/** The ip6.arpa name of the address at a[0, 16) (32 nibbles, lowest first), as a query names it (lower case). */
export function reverseName6(a: Uint8Array): string {
  let s = '';
  for (let i = 15; i >= 0; i--) s += `${(a[i] & 0xf).toString(16)}.${(a[i] >>> 4).toString(16)}.`;
  return `${s}ip6.arpa`;
}
