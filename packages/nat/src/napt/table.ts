/*
 * The NAPT session table: which public port an inside endpoint uses, who may
 * answer it, and for how long. Pure bookkeeping over integers with the clock
 * passed in (ms); the packet rewrite is translate.ts, the static rules forwards.ts.
 *
 * Model: two levels.
 * - A *mapping* binds an inside endpoint (proto, inside IP, inside port or ICMP
 *   echo id) to one public port/id, the same whatever remote it talks to:
 *   endpoint-independent mapping (RFC 4787 REQ-1, RFC 5382 REQ-1). Peer-to-peer
 *   software (STUN/ICE) learns its public port from one server and hands it to
 *   another peer; that only works if the port does not depend on the remote, and
 *   hairpinning relies on it too. A mapping lives exactly as long as it has sessions.
 * - A *session* is one conversation on a mapping, keyed by the remote endpoint
 *   (remote IP, remote port; 0 for ICMP). It holds the TCP state, the idle timer and
 *   the permission for inbound traffic. Sessions, not mappings, are what the
 *   limits count and what `vswitch nat sessions` lists: a web server behind a port
 *   forward has one mapping and a session per client, each with its own TCP state.
 *
 * Filtering: address-dependent (RFC 4787 REQ-8 allows it; RFC 5382 REQ-3 names it
 * the choice "if a more stringent filtering behavior is most important"), for UDP,
 * TCP and ICMP alike. Inbound traffic to a mapping is accepted from an IP address
 * the inside endpoint has sent to (any port of it: a new remote port opens a
 * session of its own, which is what lets a STUN server answer from its alternate
 * port). Endpoint-independent filtering would turn every live mapping into a port
 * forward open to the whole Internet for as long as it lives (a port scanner
 * reaching a VM's DNS client socket); address-dependent filtering keeps the
 * hole-punching that matters working, because both peers send first. Mappings made
 * for a port forward are the exception: they accept any remote.
 *
 * Port choice (per protocol; TCP and UDP in `portRange`, default 1024-65535, ICMP
 * echo ids in `icmpIdRange`, default 0-65535): the inside port itself if it is in
 * the range and free (port preservation, RFC 4787 section 4.2.1), else a probe from
 * a pseudo-random start (RFC 6056's point: do not hand out predictable ports). A
 * public port belongs to one mapping at a time (no port overloading, RFC 4787
 * REQ-3). An inside port below 1024 gets a port from the range, at or above 1024
 * by default; REQ-3a would rather keep it low, which a range starting lower
 * allows. Ports reserved by port forwards (`reservation`) are never handed out:
 * forwards may sit inside the dynamic range, and the allocator steps around them.
 * The probe is linear, so its cost grows as the range fills; the per-host limit
 * keeps one host from filling it.
 *
 * Timeouts (seconds in the options, clamped on set to the RFC minima; refreshed
 * by traffic in either direction, RFC 4787 REQ-6 requires outbound refresh and
 * allows inbound; inbound refresh only comes from remotes the filter admitted):
 * - UDP, default 300 s, at least 120 s (RFC 4787 REQ-5).
 * - TCP established, default 7440 s = 2 h 4 min, the minimum of RFC 5382 REQ-5:
 *   2 h of TCP keepalive plus slack, so an idle connection with keepalives survives.
 * - TCP transitory (SYN sent, FIN seen, closed after both FINs or a RST), default
 *   and minimum 240 s (RFC 5382 REQ-5: 4 min, two maximum segment lifetimes). Never
 *   more than the established timeout.
 * - ICMP echo, default and minimum 60 s (RFC 5508 REQ-1).
 *
 * TCP states, by the flags seen in each direction (OUT = from the inside host):
 *   syn_sent    a bare SYN was seen (either way; inbound for a port forward).
 *               -> established  on a SYN+ACK in the other direction, or once ACKs
 *                               have been seen in both directions (simultaneous open)
 *               -> fin_wait     on a FIN;  -> closed on a RST.
 *   established -> fin_wait on a FIN either way; -> closed on a RST.
 *   fin_wait    -> closed once FINs were seen both ways, or on a RST.
 *   closed      (TIME_WAIT) kept for the transitory timeout so late segments and the
 *               last ACK still pass; a bare SYN from either side reopens it
 *               -> syn_sent (the same 4-tuple reused, as TIME_WAIT reuse does).
 * Only established uses the long timeout. A session is born from a SYN: the
 * translator refuses to open one for any other segment, so stray ACKs and RSTs
 * cannot make state. No sequence-number checks: a spoofed RST from an admitted
 * remote can only shorten a session to the transitory timeout, which its own
 * traffic keeps refreshing. UDP and ICMP sessions have the one state `open`.
 *
 * Limits: `maxSessions` over the table (default 100,000), `maxSessionsPerHost`
 * per inside IP (default 8192; port-forward sessions count against their inside
 * host, so a SYN flood at one forward cannot fill the table), and
 * `maxSessionsPerPort` per bridge port the flow came from (default: the per-host
 * limit), so a VM holding many addresses (several leases, or guards off) cannot
 * multiply the per-host limit. The port is the caller's (`open`'s `port`: the
 * port of the packet that opens the session, looked up only then, never per
 * packet); it stays with the session. Sessions opened from the outside (port
 * forwards) have no port and count against their host only; a new remote of an
 * ordinary mapping counts against the port that made the mapping. Past a limit
 * the new flow is refused, never evicted for: the refusal is returned as a value
 * ('table_full', 'host_limit', 'port_limit', or 'no_port' when the range is
 * exhausted) and counted in `refused`; established flows are unaffected.
 *
 * Expiry: each session has `expiresAt`; refreshing it is a field write. A binary
 * heap ordered by the deadline a session had when it was queued gives `expire(now)`
 * its work: it looks only at due entries; a due session that was refreshed
 * meanwhile is moved to its new deadline in place (one sift), so a busy session
 * costs one heap operation per timeout period, not one per packet; a session
 * whose deadline shrank (established -> fin_wait) is queued again at once and its
 * old entry is skipped when it surfaces. No scan of the table, ever.
 *
 * Lookups use small-integer keys only, so the per-packet path allocates nothing:
 * outbound is a Map of hosts (key: inside IP as int32) -> a per-protocol Map
 * (key: port) -> mapping; inbound is a 65536-slot array per protocol indexed by
 * public port. Within a mapping the session is found through the one-entry cache
 * of the last session used, else a walk of its few sessions; from 8 sessions on
 * (a server behind a forward) a Map keyed by remote IP, whose entries chain the
 * sessions of that IP. IPs are kept as int32 beside their unsigned form: an
 * unsigned address above 2^31 is not a small integer, and each one passed or used
 * as a key costs a 16-byte heap number.
 *
 * Measured (lookup.bench.ts: `npx vitest bench --project unit --run
 * packages/nat/src/napt/lookup.bench.ts`; Node 20 on the 2-core dev VM, 100,000
 * entries, random hits over 2^20 probes so every lookup misses the caches; first
 * figure from the vitest bench, second from the same loops run by plain node):
 *   Map<int32 key>.get ......................... 80 ns  /  85 ns, no allocation
 *   lru-cache 11 LRUCache<int32 key>.get ....... 148 ns / 363 ns
 *   Map<48-bit double key>.get ................. 100 ns / 212 ns, 16 bytes of garbage per get
 *   NaptTable.lookupOut ........................ 220 ns / 310 ns
 *   NaptTable.lookupIn ......................... 157 ns / 200 ns
 *   outbound + inbound translation of one established UDP session, hot: 233 ns per
 *     pair by plain node (1.5 us under vitest, whose module transform slows the
 *     calls into @vswitch/switch), 0 bytes allocated per pair
 *   expire(now), 100,000 sessions: nothing due ~30 ns; called once a second in
 *     steady state (sessions spread over 300 s, ~250 expiring per second) 0.13 to
 *     0.17 ms mean, 0.3 to 0.6 ms p99; worst case, all 100,000 queued at one
 *     deadline with 1,000 due and the rest refreshed, 17 to 19 ms, once.
 * Decision: lru-cache is not used. Its get costs 1.8 to 4 times a Map.get (it
 * reorders its recency list on every hit), and what it adds does not fit: it
 * evicts the least recently used entry when full, while a full NAPT table must
 * refuse the new flow rather than cut a live one; and its TTL is one per entry,
 * while a TCP session's timeout changes with its state. A Map with int32 keys and
 * the expiry heap above do the job with no allocation per packet.
 */
import { TCP_FLAG, formatIp4 } from '@vswitch/switch';

export const NAPT_TABLE_DEFAULTS = Object.freeze({
  portRange: Object.freeze({ lo: 1024, hi: 65535 }),
  icmpIdRange: Object.freeze({ lo: 0, hi: 65535 }),
  udpTimeoutSec: 300,
  tcpEstablishedTimeoutSec: 7440,
  tcpTransitoryTimeoutSec: 240,
  icmpTimeoutSec: 60,
  maxSessions: 100_000,
  maxSessionsPerHost: 8192,
});

/** Floors from the RFCs (seconds) and a ceiling of one week for every timeout. */
export const NAPT_TABLE_LIMITS = Object.freeze({
  udpTimeoutSecMin: 120,
  tcpEstablishedTimeoutSecMin: 7440,
  tcpTransitoryTimeoutSecMin: 240,
  icmpTimeoutSecMin: 60,
  timeoutSecMax: 7 * 24 * 3600,
  maxSessionsMax: 10_000_000,
});

export interface PortRange { lo: number; hi: number }

export interface NaptTableOptions {
  /** Public ports for TCP and UDP mappings. */
  portRange?: PortRange;
  /** Public ids for ICMP echo mappings. */
  icmpIdRange?: PortRange;
  udpTimeoutSec?: number;
  tcpEstablishedTimeoutSec?: number;
  tcpTransitoryTimeoutSec?: number;
  icmpTimeoutSec?: number;
  maxSessions?: number;
  maxSessionsPerHost?: number;
  /** Sessions opened from one bridge port (default: maxSessionsPerHost). */
  maxSessionsPerPort?: number;
  /** Seed of the port-probe start (tests use it for repeatable choices). */
  seed?: number;
  /** Public ports the allocator must not hand out (port forwards). */
  reservation?: PortReservation;
}

/** The options as applied: clamped, all present. */
export interface NaptTableConfig {
  readonly portRange: Readonly<PortRange>;
  readonly icmpIdRange: Readonly<PortRange>;
  readonly udpTimeoutSec: number;
  readonly tcpEstablishedTimeoutSec: number;
  readonly tcpTransitoryTimeoutSec: number;
  readonly icmpTimeoutSec: number;
  readonly maxSessions: number;
  readonly maxSessionsPerHost: number;
  readonly maxSessionsPerPort: number;
}

export interface PortReservation {
  /** True if `port` of IP protocol `proto` belongs to a port forward. */
  isReserved(proto: number, port: number): boolean;
}

export type NaptProto = 'tcp' | 'udp' | 'icmp';
export const NAPT_PROTOS: readonly NaptProto[] = ['tcp', 'udp', 'icmp'];
const PROTO_NUMBER = [6, 17, 1] as const;

/** IP protocol number -> table index (0 TCP, 1 UDP, 2 ICMP), or -1 for the rest. */
export function protoIndex(proto: number): number {
  return proto === 6 ? 0 : proto === 17 ? 1 : proto === 1 ? 2 : -1;
}

export const SESSION_STATES = ['syn_sent', 'established', 'fin_wait', 'closed', 'open'] as const;
export type SessionState = (typeof SESSION_STATES)[number];
const S_SYN_SENT = 0;
const S_ESTABLISHED = 1;
const S_FIN_WAIT = 2;
const S_CLOSED = 3;
const S_OPEN = 4;

export type RefuseReason = 'table_full' | 'host_limit' | 'port_limit' | 'no_port';
export const REFUSE_REASONS: readonly RefuseReason[] = ['table_full', 'host_limit', 'port_limit', 'no_port'];

/** Direction of a packet relative to the session: from the inside host, or to it. */
export const DIR_OUT = 0;
export const DIR_IN = 1;

const { FIN, SYN, RST, ACK } = TCP_FLAG;
// Bits of NaptSession.seen: one per (flag, direction); IN = OUT << 1.
const SEEN_SYN_OUT = 0x01;
const SEEN_ACK_OUT = 0x04;
const SEEN_FIN_OUT = 0x10;
const SEEN_ACK_BOTH = 0x0c;
const SEEN_FIN_BOTH = 0x30;

/** Past this many sessions a mapping indexes them by remote IP; below it a list walk is cheaper than a Map. */
const INDEX_AT = 8;

export class NaptMapping {
  /** `insideIp` as an int32: the form compared and written on the packet path (no heap numbers). */
  readonly ipKey: number;
  /** Sessions of this mapping, newest first, linked through `next`/`prev`. */
  head: NaptSession | undefined = undefined;
  /** From INDEX_AT sessions on: remote IP (int32) -> a session of that IP; the others of that IP chain through `ipNext`. */
  index: Map<number, NaptSession> | undefined = undefined;
  /** The session used last: most packets of a mapping belong to one conversation. */
  last: NaptSession | undefined = undefined;
  sessions = 0;

  constructor(
    readonly proto: number,
    /** Unsigned, as everywhere else. */
    readonly insideIp: number,
    readonly insidePort: number,
    readonly publicPort: number,
    /** Made for a port forward: inbound traffic from any remote opens a session. */
    readonly forwarded: boolean,
    readonly host: NaptHost,
    /** The bridge port whose packet made it ('' for none: made from the outside). */
    readonly port: string = '',
  ) {
    this.ipKey = insideIp | 0;
  }

  /** The session with this remote endpoint (ICMP: port 0), if any. IPs may be given signed or unsigned. */
  find(remoteIp: number, remotePort: number): NaptSession | undefined {
    const key = remoteIp | 0;
    const l = this.last;
    if (l !== undefined && l.remoteKey === key && l.remotePort === remotePort) return l;
    let s: NaptSession | undefined;
    if (this.index === undefined) {
      s = this.head;
      while (s !== undefined && (s.remoteKey !== key || s.remotePort !== remotePort)) s = s.next;
    } else {
      s = this.index.get(key);
      while (s !== undefined && s.remotePort !== remotePort) s = s.ipNext;
    }
    if (s !== undefined) this.last = s;
    return s;
  }

  /** Address-dependent filtering: inbound from `remoteIp` is admitted. */
  permits(remoteIp: number): boolean {
    if (this.forwarded) return true;
    const key = remoteIp | 0;
    if (this.index !== undefined) return this.index.has(key);
    for (let s = this.head; s !== undefined; s = s.next) if (s.remoteKey === key) return true;
    return false;
  }
}

export class NaptSession {
  next: NaptSession | undefined = undefined;
  prev: NaptSession | undefined = undefined;
  ipNext: NaptSession | undefined = undefined;
  /** `remoteIp` as an int32 (see NaptMapping.ipKey). */
  readonly remoteKey: number;
  /** Unsigned. */
  readonly remoteIp: number;
  state: number;
  /** SEEN_* bits: TCP flags seen per direction. */
  seen = 0;
  lastSeen: number;
  expiresAt: number;
  /** The deadline of this session's live heap entry; other entries of it are stale. */
  heapKey: number;
  alive = true;

  constructor(
    readonly mapping: NaptMapping,
    remoteIp: number,
    readonly remotePort: number,
    now: number,
    /** The bridge port charged for it ('' for none). */
    readonly port: string = '',
  ) {
    this.remoteKey = remoteIp | 0;
    this.remoteIp = remoteIp >>> 0;
    this.state = mapping.proto === 0 ? S_SYN_SENT : S_OPEN;
    this.lastSeen = now;
    this.expiresAt = now;
    this.heapKey = now;
  }

  get stateName(): SessionState { return SESSION_STATES[this.state]; }
}

export class NaptHost {
  sessions = 0;
  /** Mappings of this host by inside port (ICMP: echo id), per protocol index. */
  readonly maps: readonly [Map<number, NaptMapping>, Map<number, NaptMapping>, Map<number, NaptMapping>] =
    [new Map(), new Map(), new Map()];
  constructor(readonly ip: number) {}
}

/** One row of `vswitch nat sessions`. */
export interface NaptSessionView {
  proto: NaptProto;
  /** "ip:port" (ICMP: "ip:echo-id"). */
  inside: string;
  publicPort: number;
  /** "ip:port" (ICMP: "ip"). */
  remote: string;
  state: SessionState;
  forwarded: boolean;
  idleSec: number;
  expiresInSec: number;
}

export interface NaptTableStats {
  sessions: number;
  byProto: Record<NaptProto, number>;
  mappings: number;
  hosts: number;
  created: number;
  expired: number;
  flushed: number;
  refused: Record<RefuseReason, number>;
}

export class NaptTable {
  readonly config: NaptTableConfig;
  /** Set by whoever owns the port forwards; consulted only when a port is allocated. */
  reservation: PortReservation | undefined;
  readonly refused: Record<RefuseReason, number> = { table_full: 0, host_limit: 0, port_limit: 0, no_port: 0 };

  #hosts = new Map<number, NaptHost>();
  /** Live sessions per bridge port (sessions with a port only). */
  readonly #perPort = new Map<string, number>();
  #byPublic: (NaptMapping | undefined)[][] = [newPortArray(), newPortArray(), newPortArray()];
  #ranges: PortRange[];
  #timeoutMs: { udp: number; est: number; trans: number; icmp: number };
  #sessions = 0;
  /** Live sessions per protocol index (tcp, udp, icmp). */
  readonly #byProto = [0, 0, 0];
  #mappings = 0;
  #created = 0;
  #expired = 0;
  #flushed = 0;
  #rand: number;
  // Min-heap of (deadline, session) in two parallel arrays: no pair objects.
  #heapS: NaptSession[] = [];
  #heapK: number[] = [];

  constructor(opts: NaptTableOptions = {}) {
    const d = NAPT_TABLE_DEFAULTS;
    const L = NAPT_TABLE_LIMITS;
    const portRange = clampRange(opts.portRange, d.portRange, 1);
    const icmpIdRange = clampRange(opts.icmpIdRange, d.icmpIdRange, 0);
    const udp = clampInt(opts.udpTimeoutSec, d.udpTimeoutSec, L.udpTimeoutSecMin, L.timeoutSecMax);
    const est = clampInt(opts.tcpEstablishedTimeoutSec, d.tcpEstablishedTimeoutSec, L.tcpEstablishedTimeoutSecMin, L.timeoutSecMax);
    const trans = clampInt(opts.tcpTransitoryTimeoutSec, d.tcpTransitoryTimeoutSec, L.tcpTransitoryTimeoutSecMin, est);
    const icmp = clampInt(opts.icmpTimeoutSec, d.icmpTimeoutSec, L.icmpTimeoutSecMin, L.timeoutSecMax);
    const maxSessions = clampInt(opts.maxSessions, d.maxSessions, 1, L.maxSessionsMax);
    const maxSessionsPerHost = clampInt(opts.maxSessionsPerHost, d.maxSessionsPerHost, 1, maxSessions);
    const maxSessionsPerPort = clampInt(opts.maxSessionsPerPort, maxSessionsPerHost, 1, maxSessions);
    this.config = Object.freeze({
      portRange: Object.freeze(portRange), icmpIdRange: Object.freeze(icmpIdRange),
      udpTimeoutSec: udp, tcpEstablishedTimeoutSec: est, tcpTransitoryTimeoutSec: trans, icmpTimeoutSec: icmp,
      maxSessions, maxSessionsPerHost, maxSessionsPerPort,
    });
    this.#ranges = [portRange, portRange, icmpIdRange];
    this.#timeoutMs = { udp: udp * 1000, est: est * 1000, trans: trans * 1000, icmp: icmp * 1000 };
    this.#rand = (opts.seed ?? (Date.now() ^ (process.pid << 16))) | 0 || 0x2545f491;
    this.reservation = opts.reservation;
  }

  get size(): number { return this.#sessions; }
  get mappingCount(): number { return this.#mappings; }

  /** Live sessions charged to bridge port `port`. */
  portSessions(port: string): number { return this.#perPort.get(port) ?? 0; }

  /** Live sessions per bridge port (ports with sessions only), for `router show`. */
  portCounts(): Record<string, number> { return Object.fromEntries(this.#perPort); }

  stats(): NaptTableStats {
    return {
      sessions: this.#sessions, mappings: this.#mappings, hosts: this.#hosts.size,
      byProto: { tcp: this.#byProto[0], udp: this.#byProto[1], icmp: this.#byProto[2] },
      created: this.#created, expired: this.#expired, flushed: this.#flushed, refused: { ...this.refused },
    };
  }

  // ---- Lookup (per packet: no allocation) ----

  /** The mapping of an inside endpoint; `proto` is the IP protocol number. */
  mappingByInside(proto: number, insideIp: number, insidePort: number): NaptMapping | undefined {
    const h = this.#hosts.get(insideIp | 0);
    return h === undefined ? undefined : h.maps[protoIndex(proto)].get(insidePort);
  }

  /** The mapping holding a public port/id. */
  mappingByPublic(proto: number, publicPort: number): NaptMapping | undefined {
    return this.#byPublic[protoIndex(proto)][publicPort];
  }

  /** The session of an outbound packet (inside endpoint -> remote endpoint). */
  lookupOut(proto: number, insideIp: number, insidePort: number, remoteIp: number, remotePort: number): NaptSession | undefined {
    const h = this.#hosts.get(insideIp | 0);
    if (h === undefined) return undefined;
    const m = h.maps[protoIndex(proto)].get(insidePort);
    return m === undefined ? undefined : m.find(remoteIp, remotePort);
  }

  /** The session of an inbound packet (remote endpoint -> public port). */
  lookupIn(proto: number, publicPort: number, remoteIp: number, remotePort: number): NaptSession | undefined {
    const m = this.#byPublic[protoIndex(proto)][publicPort];
    return m === undefined ? undefined : m.find(remoteIp, remotePort);
  }

  // ---- New flows (may allocate) ----

  /**
   * Opens a session from an inside endpoint to a remote endpoint, on the endpoint's
   * existing mapping or a new one. `publicPort` >= 0 asks for that public port (a
   * port forward's; the mapping is then marked forwarded); an existing mapping of
   * the endpoint on another port is dropped first, the forward wins. The caller has
   * checked that no session exists yet. `port`: the bridge port the opening packet
   * came from, charged against maxSessionsPerPort; '' for a packet from the
   * outside: then the mapping's port is charged, unless it is a forward's.
   * Refusals are values and are counted.
   */
  open(
    proto: number, insideIp: number, insidePort: number,
    remoteIp: number, remotePort: number, now: number, publicPort = -1, port = '',
  ): NaptSession | RefuseReason {
    const pi = protoIndex(proto);
    if (pi < 0) throw new RangeError(`NAPT has no mappings for IP protocol ${proto}`);
    if (this.#sessions >= this.config.maxSessions) return this.#refuse('table_full');
    let host = this.#hosts.get(insideIp | 0);
    if (host !== undefined && host.sessions >= this.config.maxSessionsPerHost) return this.#refuse('host_limit');
    let m = host?.maps[pi].get(insidePort);
    if (port === '' && m !== undefined && !m.forwarded && publicPort < 0) port = m.port;
    if (port !== '' && (this.#perPort.get(port) ?? 0) >= this.config.maxSessionsPerPort) return this.#refuse('port_limit');
    if (m !== undefined && publicPort >= 0 && m.publicPort !== publicPort) {
      this.#dropMapping(m);
      m = undefined;
    }
    if (m === undefined) {
      let pub = publicPort;
      if (pub >= 0) {
        const holder = this.#byPublic[pi][pub];
        if (holder !== undefined) this.#dropMapping(holder);
      } else {
        pub = this.#allocate(pi, insidePort);
        if (pub < 0) return this.#refuse('no_port');
      }
      if (host === undefined || !this.#hosts.has(insideIp | 0)) {
        host = new NaptHost(insideIp >>> 0);
        this.#hosts.set(insideIp | 0, host);
      }
      m = new NaptMapping(pi, insideIp >>> 0, insidePort, pub, publicPort >= 0, host, port);
      host.maps[pi].set(insidePort, m);
      this.#byPublic[pi][pub] = m;
      this.#mappings++;
    }
    const s = new NaptSession(m, remoteIp, remotePort, now, port);
    if (port !== '') this.#perPort.set(port, (this.#perPort.get(port) ?? 0) + 1);
    s.next = m.head;
    if (m.head !== undefined) m.head.prev = s;
    m.head = s;
    m.last = s;
    m.sessions++;
    if (m.index !== undefined) indexAdd(m.index, s);
    else if (m.sessions >= INDEX_AT) {
      const index = new Map<number, NaptSession>();
      for (let t: NaptSession | undefined = m.head; t !== undefined; t = t.next) indexAdd(index, t);
      m.index = index;
    }
    m.host.sessions++;
    this.#sessions++;
    this.#byProto[m.proto]++;
    this.#created++;
    s.expiresAt = now + (m.proto === 0 ? this.#timeoutMs.trans : m.proto === 1 ? this.#timeoutMs.udp : this.#timeoutMs.icmp);
    this.#push(s, s.expiresAt);
    return s;
  }

  // ---- Per packet: refresh and TCP state ----

  /**
   * Records a packet of session `s` (direction DIR_OUT or DIR_IN, TCP flags or 0)
   * at `now`: TCP state, idle timer. No allocation unless the deadline shrinks.
   */
  track(s: NaptSession, dir: number, flags: number, now: number): void {
    let timeout: number;
    const pi = s.mapping.proto;
    if (pi === 0) {
      this.#tcp(s, dir, flags);
      timeout = s.state === S_ESTABLISHED ? this.#timeoutMs.est : this.#timeoutMs.trans;
    } else {
      timeout = pi === 1 ? this.#timeoutMs.udp : this.#timeoutMs.icmp;
    }
    s.lastSeen = now;
    const exp = now + timeout;
    s.expiresAt = exp;
    if (exp < s.heapKey) this.#push(s, exp);
  }

  #tcp(s: NaptSession, dir: number, flags: number): void {
    const out = dir === DIR_OUT ? 1 : 2; // shift of this direction's SEEN bits
    if (flags & RST) {
      s.state = S_CLOSED;
      return;
    }
    if ((flags & (SYN | ACK)) === SYN) {
      if (s.state === S_CLOSED) {
        s.state = S_SYN_SENT;
        s.seen = 0;
      }
      s.seen |= SEEN_SYN_OUT * out;
      return;
    }
    if (flags & SYN) s.seen |= SEEN_SYN_OUT * out;
    if (flags & ACK) s.seen |= SEEN_ACK_OUT * out;
    if (s.state === S_SYN_SENT) {
      // A SYN+ACK answers a SYN from the other side; ACKs both ways cover simultaneous open.
      const otherSyn = SEEN_SYN_OUT * (3 - out);
      if (((flags & SYN) !== 0 && (s.seen & otherSyn) !== 0) || (s.seen & SEEN_ACK_BOTH) === SEEN_ACK_BOTH) {
        s.state = S_ESTABLISHED;
      }
    }
    if (flags & FIN) {
      s.seen |= SEEN_FIN_OUT * out;
      if ((s.seen & SEEN_FIN_BOTH) === SEEN_FIN_BOTH) s.state = S_CLOSED;
      else if (s.state === S_ESTABLISHED || s.state === S_SYN_SENT) s.state = S_FIN_WAIT;
    }
  }

  // ---- Expiry ----

  /** Removes the sessions idle past their timeout at `now` (ms); returns how many. */
  expire(now: number): number {
    const hs = this.#heapS;
    const hk = this.#heapK;
    let n = 0;
    while (hk.length > 0 && hk[0] <= now) {
      const s = hs[0];
      if (s.alive && hk[0] === s.heapKey && s.expiresAt > now) {
        // Refreshed since it was queued: move it to its deadline in one sift.
        s.heapKey = s.expiresAt;
        this.#siftDown(s, s.expiresAt);
        continue;
      }
      const live = s.alive && hk[0] === s.heapKey;
      this.#siftDown(hs.pop() as NaptSession, hk.pop() as number);
      if (live) {
        this.#removeSession(s);
        n++;
      }
    }
    this.#expired += n;
    return n;
  }

  /** The earliest time (ms) at which expire() may have work, or Infinity. */
  nextDeadline(): number {
    return this.#heapK.length > 0 ? this.#heapK[0] : Number.POSITIVE_INFINITY;
  }

  // ---- Flushes (control plane) ----

  /** Drops the mappings holding public ports lo..hi of `proto`; returns sessions dropped. */
  flushPublic(proto: number, lo: number, hi: number): number {
    const pi = protoIndex(proto);
    const arr = this.#byPublic[pi];
    let n = 0;
    for (let p = Math.max(0, lo); p <= Math.min(65535, hi); p++) {
      const m = arr[p];
      if (m !== undefined) n += this.#dropMapping(m);
    }
    return n;
  }

  /** Drops the mappings of inside endpoints ip:lo..hi of `proto`. */
  flushInside(proto: number, insideIp: number, lo: number, hi: number): number {
    const h = this.#hosts.get(insideIp | 0);
    if (h === undefined) return 0;
    const victims: NaptMapping[] = [];
    for (const m of h.maps[protoIndex(proto)].values()) if (m.insidePort >= lo && m.insidePort <= hi) victims.push(m);
    let n = 0;
    for (const m of victims) n += this.#dropMapping(m);
    return n;
  }

  /** Drops everything of one inside host (its lease ended). */
  flushHost(insideIp: number): number {
    const h = this.#hosts.get(insideIp | 0);
    if (h === undefined) return 0;
    const victims: NaptMapping[] = [];
    for (const map of h.maps) for (const m of map.values()) victims.push(m);
    let n = 0;
    for (const m of victims) n += this.#dropMapping(m);
    return n;
  }

  /** Drops every session (the public address changed: no mapping is valid any more). */
  flushAll(): number {
    const n = this.#sessions;
    for (const h of this.#hosts.values()) for (const map of h.maps) for (const m of map.values()) forEachSession(m, (s) => { s.alive = false; });
    this.#hosts.clear();
    this.#perPort.clear();
    for (const arr of this.#byPublic) arr.fill(undefined);
    this.#heapS.length = 0;
    this.#heapK.length = 0;
    this.#sessions = 0;
    this.#byProto.fill(0);
    this.#mappings = 0;
    this.#flushed += n;
    return n;
  }

  // ---- Views (control plane) ----

  /** Every session, for `vswitch nat sessions`, ordered by proto, inside address, port. */
  sessions(now: number): NaptSessionView[] {
    const rows: { s: NaptSession; view: NaptSessionView }[] = [];
    for (const h of this.#hosts.values()) {
      for (const map of h.maps) {
        for (const m of map.values()) {
          forEachSession(m, (s) => rows.push({ s, view: this.#view(s, now) }));
        }
      }
    }
    rows.sort((a, b) => {
      const ma = a.s.mapping;
      const mb = b.s.mapping;
      return ma.proto - mb.proto || ma.insideIp - mb.insideIp || ma.insidePort - mb.insidePort
        || a.s.remoteIp - b.s.remoteIp || a.s.remotePort - b.s.remotePort;
    });
    return rows.map((r) => r.view);
  }

  #view(s: NaptSession, now: number): NaptSessionView {
    const m = s.mapping;
    return {
      proto: NAPT_PROTOS[m.proto],
      inside: `${formatIp4(m.insideIp)}:${m.insidePort}`,
      publicPort: m.publicPort,
      remote: m.proto === 2 ? formatIp4(s.remoteIp) : `${formatIp4(s.remoteIp)}:${s.remotePort}`,
      state: SESSION_STATES[s.state],
      forwarded: m.forwarded,
      idleSec: Math.max(0, Math.floor((now - s.lastSeen) / 1000)),
      expiresInSec: Math.max(0, Math.ceil((s.expiresAt - now) / 1000)),
    };
  }

  // ---- Internals ----

  #refuse(r: RefuseReason): RefuseReason {
    this.refused[r]++;
    return r;
  }

  /** Inside port if in range and free, else a probe from a random start; -1 if none is free. */
  #allocate(pi: number, insidePort: number): number {
    const { lo, hi } = this.#ranges[pi];
    const used = this.#byPublic[pi];
    const res = this.reservation;
    const proto = PROTO_NUMBER[pi];
    const free = (p: number): boolean => used[p] === undefined && (pi === 2 || res === undefined || !res.isReserved(proto, p));
    if (insidePort >= lo && insidePort <= hi && free(insidePort)) return insidePort;
    const size = hi - lo + 1;
    let x = this.#rand;
    // Random probes first (RFC 6056 algorithm 2): preserved ports form solid blocks
    // of used ports, and a walk that starts inside one crosses it (measured: 18-39 µs
    // per new flow with 100,000 sessions, against 0.4 µs with 10). The walk after
    // them still finds the last free port of a nearly full range.
    for (let i = 0; i < 16; i++) {
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
      const p = lo + ((x >>> 0) % size);
      if (free(p)) {
        this.#rand = x;
        return p;
      }
    }
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    this.#rand = x;
    let p = lo + ((x >>> 0) % size);
    for (let i = 0; i < size; i++) {
      if (free(p)) return p;
      p = p === hi ? lo : p + 1;
    }
    return -1;
  }

  /** Removes a mapping and its sessions (flushes); returns sessions removed. */
  #dropMapping(m: NaptMapping): number {
    const victims: NaptSession[] = [];
    forEachSession(m, (s) => victims.push(s));
    for (const s of victims) this.#removeSession(s);
    this.#flushed += victims.length;
    return victims.length;
  }

  #removeSession(s: NaptSession): void {
    s.alive = false;
    const m = s.mapping;
    if (s.prev !== undefined) s.prev.next = s.next;
    else m.head = s.next;
    if (s.next !== undefined) s.next.prev = s.prev;
    const index = m.index;
    if (index !== undefined) {
      const first = index.get(s.remoteKey);
      if (first === s) {
        if (s.ipNext === undefined) index.delete(s.remoteKey);
        else index.set(s.remoteKey, s.ipNext);
      } else {
        let p = first;
        while (p !== undefined && p.ipNext !== s) p = p.ipNext;
        if (p !== undefined) p.ipNext = s.ipNext;
      }
    }
    s.next = s.prev = s.ipNext = undefined;
    if (m.last === s) m.last = undefined;
    m.sessions--;
    m.host.sessions--;
    if (s.port !== '') {
      const n = this.#perPort.get(s.port) ?? 0;
      if (n <= 1) this.#perPort.delete(s.port);
      else this.#perPort.set(s.port, n - 1);
    }
    this.#sessions--;
    this.#byProto[m.proto]--;
    if (m.sessions === 0) {
      const h = m.host;
      h.maps[m.proto].delete(m.insidePort);
      if (this.#byPublic[m.proto][m.publicPort] === m) this.#byPublic[m.proto][m.publicPort] = undefined;
      this.#mappings--;
      if (h.sessions === 0 && this.#hosts.get(h.ip | 0) === h) this.#hosts.delete(h.ip | 0);
    }
  }

  #push(s: NaptSession, key: number): void {
    s.heapKey = key;
    const hs = this.#heapS;
    const hk = this.#heapK;
    let i = hk.length;
    hs.push(s);
    hk.push(key);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (hk[parent] <= key) break;
      hs[i] = hs[parent];
      hk[i] = hk[parent];
      i = parent;
    }
    hs[i] = s;
    hk[i] = key;
  }

  /** Puts (s, key) at the root and sifts it down: replaces the top entry. */
  #siftDown(s: NaptSession, key: number): void {
    const hs = this.#heapS;
    const hk = this.#heapK;
    const n = hk.length;
    if (n === 0) return; // s was the last entry, already popped
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && hk[r] < hk[l] ? r : l;
      if (hk[c] >= key) break;
      hs[i] = hs[c];
      hk[i] = hk[c];
      i = c;
    }
    hs[i] = s;
    hk[i] = key;
  }
}

function forEachSession(m: NaptMapping, fn: (s: NaptSession) => void): void {
  for (let s = m.head; s !== undefined; s = s.next) fn(s);
}

function indexAdd(index: Map<number, NaptSession>, s: NaptSession): void {
  s.ipNext = index.get(s.remoteKey);
  index.set(s.remoteKey, s);
}

function newPortArray(): (NaptMapping | undefined)[] {
  return new Array<NaptMapping | undefined>(65536).fill(undefined);
}

/** A finite number rounded and clamped to [min, max]; anything else gives the default. */
function clampInt(v: number | undefined, dflt: number, min: number, max: number): number {
  if (v === undefined || !Number.isFinite(v)) return Math.min(Math.max(dflt, min), max);
  return Math.min(Math.max(Math.round(v), min), max);
}

function clampRange(r: PortRange | undefined, dflt: PortRange, min: number): PortRange {
  if (r === undefined) return { lo: dflt.lo, hi: dflt.hi };
  const lo = clampInt(r.lo, dflt.lo, min, 65535);
  const hi = clampInt(r.hi, dflt.hi, min, 65535);
  return lo <= hi ? { lo, hi } : { lo: hi, hi: lo };
}
