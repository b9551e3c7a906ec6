/*
 * The DHCP client of the router's uplink (RFC 2131 §4.4, options RFC 2132), the
 * way a home router's WAN port gets its address: a pure state machine. No
 * sockets, no timers, no Date.now(): `tick(now)` (about once a second) and
 * `receive(msg, now)` (a reply that passed parseDhcp) return the actions the
 * caller (uplink.ts) carries out: send this message to this address, an address
 * was acquired (or renewed), an address was lost, persist this lease. `now` is
 * wall-clock ms (Date.now() in production) so that a lease persisted by one
 * process means the same to the next; a clock stepped backwards is detected and
 * the pending deadlines are moved with it, a clock stepped forwards shortens them.
 *
 * States (RFC 2131 figure 5):
 *   init       --(start or retry)-->  selecting: DISCOVER broadcast (option 50 =
 *                                      the last address held, as a hint)
 *   selecting  --OFFER-->              requesting: REQUEST broadcast with server id
 *                                      (54) and requested address (50), ciaddr 0.
 *                                      The first acceptable OFFER is taken (as
 *                                      udhcpc does); later ones are ignored.
 *   requesting --ACK-->                bound    (address acquired)
 *   requesting --NAK, or no answer after `requestTries` REQUESTs--> init
 *   rebooting  (INIT-REBOOT: a previous lease, unexpired, given at construction)
 *              REQUEST broadcast with option 50, no server id, ciaddr 0;
 *              --ACK--> bound; --NAK--> init (the address forgotten);
 *              no answer for `rebootTimeoutMs` --> init (DISCOVER asking for it)
 *   bound      --T1-->                 renewing: REQUEST unicast to the server, ciaddr set
 *   renewing   --ACK--> bound (renewed); --NAK--> init (address lost)
 *              --T2-->                 rebinding: REQUEST broadcast, ciaddr set
 *   rebinding  --ACK (any server)--> bound; --NAK--> init (address lost)
 *   bound/renewing/rebinding --lease expiry--> init (address lost, kept as a hint)
 * The address stays in use in bound, renewing and rebinding, and only there.
 *
 * Retransmission (RFC 2131 §4.1): in selecting, requesting and rebooting, the
 * n-th retransmission waits `firstRetransmitMs` * 2^n, capped at
 * `maxRetransmitMs` (RFC: 4 s, 8 s, ... 64 s), randomised by ±`jitterMs` (RFC:
 * ±1 s; never more than a quarter of the wait). The uplink starts at 2 s for a
 * quick start (see uplink.ts). DISCOVER is retransmitted for ever. In renewing and
 * rebinding, the wait is half the time left until T2 (resp. the lease end), at
 * least `minRenewRetransmitMs` (RFC §4.4.5: 60 s), never past that deadline.
 * The RFC's random 1-10 s delay before the first DISCOVER is not applied: one
 * router, restarted rarely, is no synchronised crowd.
 *
 * Matching replies: op BOOTREPLY, our chaddr, the xid of the current exchange (a
 * new random xid per exchange: DORA, INIT-REBOOT, each renewal; the same xid for
 * its retransmissions), and, when the server echoes option 61 (RFC 6842), our
 * client id. In requesting, an ACK/NAK naming another server than the one we
 * chose is ignored. An OFFER/ACK is accepted only with a usable address (not 0,
 * loopback, multicast, broadcast or 0/8) and an OFFER only with a server id.
 * Everything else is counted by reason in `counters.ignored` and changes nothing.
 *
 * Lease parameters from the ACK: yiaddr; option 1 (a non-contiguous or missing
 * mask falls back to the classful one); option 3 (first router, 0 if none);
 * option 6; option 51 (missing: the previous lease time, else 1 h; 0xffffffff is
 * infinite: no renewal, no expiry); T1/T2 from 58/59 when 0 < T1 < T2 < lease,
 * else 50 % and 87.5 % of the lease.
 *
 * Messages: 53 first, then 61 (client id: hardware type 1 + MAC, RFC 2132 §9.14),
 * 50/54 as the state requires (RFC 2131 table 5), 57 (max message 1500), 55
 * (parameter request list), 12 (hostname, when configured); flags 0 (the uplink
 * receives unicast to its MAC before it has an address); secs = seconds since the
 * exchange began.
 *
 * Not done: ARP probing of an offered address before use (RFC 5227) and DECLINE;
 * RELEASE at shutdown (a restarted router wants the same address back, which is
 * what keeping the lease gives); option overload (see wire.ts).
 *
 * Persistence: `persist` actions carry the lease to write (on every ACK) or null
 * (after a NAK: the address is refused, do not ask for it again). The caller
 * writes it with `serializeClientLease` into `uplink-<router>.json` in the state
 * directory; `parseClientLease` reads it back for the next start (`previous`).
 */
import { formatIp4, formatMac, parseIp4, read32 } from '@vswitch/switch';
import {
  BOOTREPLY, BOOTREQUEST, DHCP_DEFAULT_MAX_MESSAGE, DhcpMsg, DhcpWriter, HTYPE_ETHERNET, IP_UDP_HLEN, Opt, type DhcpMessage,
} from './wire.js';

export const DHCP_CLIENT_DEFAULTS = {
  firstRetransmitMs: 4000,
  maxRetransmitMs: 64_000,
  jitterMs: 1000,
  requestTries: 4,
  rebootTimeoutMs: 10_000,
  minRenewRetransmitMs: 60_000,
  /** After a NAK, wait this long before DISCOVER (no tight loop with a server that NAKs everything). */
  nakDelayMs: 2000,
  /** Used when an ACK carries no option 51 and there is no previous lease time. */
  defaultLeaseSec: 3600,
  /** Option 57 we send: what one Ethernet frame carries. */
  maxMessageSize: 1500,
} as const;

export const INFINITE_LEASE = 0xffffffff;

export type DhcpClientState = 'init' | 'selecting' | 'requesting' | 'rebooting' | 'bound' | 'renewing' | 'rebinding';

/** An address held from a server. Times are wall-clock ms. */
export interface DhcpClientLease {
  ip: number;
  prefix: number;
  /** Option 3, first router; 0 if none. */
  router: number;
  dns: number[];
  /** Option 54 of the ACK. */
  serverId: number;
  /** Option 51, s; INFINITE_LEASE for an infinite lease. */
  leaseSec: number;
  t1Sec: number;
  t2Sec: number;
  /** When the ACK arrived (the lease times count from here). */
  obtainedAt: number;
}

export const leaseT1At = (l: DhcpClientLease): number => l.leaseSec === INFINITE_LEASE ? Infinity : l.obtainedAt + l.t1Sec * 1000;
export const leaseT2At = (l: DhcpClientLease): number => l.leaseSec === INFINITE_LEASE ? Infinity : l.obtainedAt + l.t2Sec * 1000;
export const leaseExpiresAt = (l: DhcpClientLease): number => l.leaseSec === INFINITE_LEASE ? Infinity : l.obtainedAt + l.leaseSec * 1000;

export interface DhcpClientOptions {
  /** The uplink's MAC: chaddr and the client id. */
  mac: number;
  /** Option 12, when set. */
  hostname?: string;
  /** Option 61; default: [1 (Ethernet), MAC]. */
  clientId?: Uint8Array;
  /** The lease held before a restart: INIT-REBOOT if unexpired, else its address is asked for in DISCOVER. */
  previous?: DhcpClientLease;
  /** [0, 1): xids and jitter. Default Math.random. */
  random?: () => number;
  firstRetransmitMs?: number;
  maxRetransmitMs?: number;
  jitterMs?: number;
  requestTries?: number;
  rebootTimeoutMs?: number;
  minRenewRetransmitMs?: number;
  nakDelayMs?: number;
}

export interface DhcpSendAction {
  kind: 'send';
  /** DhcpMsg.DISCOVER or REQUEST. */
  type: number;
  /** The UDP payload, port 68 -> 67. */
  payload: Uint8Array;
  /** 0 until an address is held (selecting, requesting, rebooting). */
  srcIp: number;
  /** 255.255.255.255 when broadcast, else the server (renewing). */
  dstIp: number;
  /** To ff:ff:ff:ff:ff:ff; else to the MAC of dstIp's next hop (ARP). */
  broadcast: boolean;
}

export type DhcpClientAction =
  | DhcpSendAction
  /** An address acquired (previousIp 0), renewed (previousIp === lease.ip) or changed. */
  | { kind: 'bound'; lease: DhcpClientLease; previousIp: number }
  | { kind: 'lost'; ip: number; reason: 'nak' | 'expired' }
  /** Write this lease (null: forget the previous one). */
  | { kind: 'persist'; lease: DhcpClientLease | null };

export const DHCP_CLIENT_IGNORED = [
  'not_reply',       // op BOOTREQUEST
  'wrong_chaddr',    // another client's reply (the uplink segment is shared)
  'wrong_xid',       // not the current exchange (a late reply, or another client's)
  'wrong_client_id', // option 61 echoed but not ours
  'unexpected',      // a message type this state does not wait for
  'wrong_server',    // ACK/NAK from a server other than the one whose OFFER we took
  'bad_offer',       // OFFER without server id, or with an unusable address
  'bad_ack',         // ACK with an unusable address
] as const;
export type DhcpClientIgnored = (typeof DHCP_CLIENT_IGNORED)[number];

export interface DhcpClientCounters {
  discovers: number;
  requests: number;
  offers: number;
  acks: number;
  naks: number;
  /** Transmissions that repeated an earlier one (same exchange). */
  retransmits: number;
  /** Addresses acquired (not renewals). */
  acquired: number;
  renewed: number;
  expired: number;
  ignored: Record<DhcpClientIgnored, number>;
}

const BROADCAST_IP = 0xffffffff;

/** RFC 2131 §4.4.1: the address must be one a host can use. */
export function usableAddress(ip: number): boolean {
  const a = ip >>> 24;
  return ip !== 0 && a !== 0 && a !== 127 && a < 224;
}

/** Prefix length of a contiguous mask, or -1. */
export function maskPrefix(mask: number): number {
  mask >>>= 0;
  let p = 0;
  while (p < 32 && (mask & (0x80000000 >>> p)) !== 0) p++;
  const rebuilt = p === 0 ? 0 : (0xffffffff << (32 - p)) >>> 0;
  return rebuilt === mask ? p : -1;
}

/** Classful prefix (A /8, B /16, C /24): the fallback when a server sends no usable mask. */
export const classfulPrefix = (ip: number): number => (ip >>> 31 === 0 ? 8 : ip >>> 30 === 2 ? 16 : 24);

export class DhcpClient {
  readonly counters: DhcpClientCounters = {
    discovers: 0, requests: 0, offers: 0, acks: 0, naks: 0, retransmits: 0, acquired: 0, renewed: 0, expired: 0,
    ignored: Object.fromEntries(DHCP_CLIENT_IGNORED.map((r) => [r, 0])) as Record<DhcpClientIgnored, number>,
  };
  readonly #o: Required<Omit<DhcpClientOptions, 'hostname' | 'previous' | 'clientId'>>;
  readonly #clientId: Uint8Array;
  readonly #hostname: string | undefined;
  #state: DhcpClientState = 'init';
  #xid = 0;
  /** Transmissions in the current state's exchange. */
  #sent = 0;
  /** When the next (re)transmission is due. */
  #nextAt = -Infinity;
  /** rebooting: when to give up and DISCOVER. */
  #deadline = Infinity;
  /** When the current exchange began (secs field). */
  #startedAt = 0;
  /** requesting: the OFFER taken. */
  #offer: { ip: number; serverId: number } | undefined;
  /** bound, renewing, rebinding: the lease in use. rebooting: the lease asked for. */
  #lease: DhcpClientLease | undefined;
  /** The last address held, asked for (option 50) in DISCOVER. */
  #hint = 0;
  #lastNow = -Infinity;

  constructor(opts: DhcpClientOptions) {
    this.#o = {
      mac: opts.mac,
      random: opts.random ?? Math.random,
      firstRetransmitMs: opts.firstRetransmitMs ?? DHCP_CLIENT_DEFAULTS.firstRetransmitMs,
      maxRetransmitMs: opts.maxRetransmitMs ?? DHCP_CLIENT_DEFAULTS.maxRetransmitMs,
      jitterMs: opts.jitterMs ?? DHCP_CLIENT_DEFAULTS.jitterMs,
      requestTries: opts.requestTries ?? DHCP_CLIENT_DEFAULTS.requestTries,
      rebootTimeoutMs: opts.rebootTimeoutMs ?? DHCP_CLIENT_DEFAULTS.rebootTimeoutMs,
      minRenewRetransmitMs: opts.minRenewRetransmitMs ?? DHCP_CLIENT_DEFAULTS.minRenewRetransmitMs,
      nakDelayMs: opts.nakDelayMs ?? DHCP_CLIENT_DEFAULTS.nakDelayMs,
    };
    this.#clientId = opts.clientId ?? Uint8Array.from([HTYPE_ETHERNET, ...macBytes(opts.mac)]);
    this.#hostname = opts.hostname;
    const prev = opts.previous;
    if (prev !== undefined && usableAddress(prev.ip)) {
      this.#hint = prev.ip;
      // INIT-REBOOT is decided at the first tick, against that tick's clock.
      this.#lease = prev;
      this.#state = 'rebooting';
    }
  }

  get state(): DhcpClientState { return this.#state; }
  /** The address in use (bound, renewing, rebinding), else 0. */
  get ip(): number { return this.#holding() ? this.#lease!.ip : 0; }
  /** The lease in use, or (rebooting) the one asked for. */
  get lease(): DhcpClientLease | undefined { return this.#lease; }
  get xid(): number { return this.#xid; }
  /** When the next transmission is due (for tests and the view). */
  get nextAt(): number { return this.#nextAt; }

  /** Timers: retransmissions, T1, T2, expiry. Call about once a second (and whenever convenient). */
  tick(now: number): DhcpClientAction[] {
    this.#clock(now);
    const out: DhcpClientAction[] = [];
    // A few transitions may chain in one tick (expiry -> init -> DISCOVER); each loop turn changes state or returns.
    for (let guard = 0; guard < 4; guard++) {
      switch (this.#state) {
        case 'init':
          if (now < this.#nextAt) return out;
          this.#enter('selecting', now);
          continue;
        case 'selecting':
          if (now >= this.#nextAt) out.push(this.#transmit(now));
          return out;
        case 'requesting':
          if (now < this.#nextAt) return out;
          if (this.#sent >= this.#o.requestTries) {
            this.#toInit(now, now);
            continue;
          }
          out.push(this.#transmit(now));
          return out;
        case 'rebooting': {
          const lease = this.#lease!;
          if (this.#sent === 0) {
            if (now >= leaseExpiresAt(lease)) {
              // The lease ran out while we were away: no INIT-REBOOT, but ask for the address.
              this.#lease = undefined;
              this.#toInit(now, now);
              continue;
            }
            this.#newExchange(now);
            this.#deadline = now + this.#o.rebootTimeoutMs;
          } else if (now >= this.#deadline) {
            this.#lease = undefined;
            this.#toInit(now, now);
            continue;
          }
          if (now >= this.#nextAt) out.push(this.#transmit(now));
          return out;
        }
        case 'bound':
        case 'renewing':
        case 'rebinding': {
          const lease = this.#lease!;
          if (now >= leaseExpiresAt(lease)) {
            this.counters.expired++;
            out.push({ kind: 'lost', ip: lease.ip, reason: 'expired' });
            this.#lease = undefined;
            this.#toInit(now, now);
            continue;
          }
          if (this.#state !== 'rebinding' && now >= leaseT2At(lease)) {
            this.#enter('rebinding', now);
            continue;
          }
          if (this.#state === 'bound' && now >= leaseT1At(lease)) {
            this.#enter('renewing', now);
            continue;
          }
          if (this.#state !== 'bound' && now >= this.#nextAt) out.push(this.#transmit(now));
          return out;
        }
      }
    }
    return out;
  }

  /** A DHCP message received on UDP port 68 (any destination address). */
  receive(msg: DhcpMessage, now: number): DhcpClientAction[] {
    this.#clock(now);
    if (msg.op !== BOOTREPLY) return this.#ignore('not_reply');
    if (msg.chaddr !== this.#o.mac) return this.#ignore('wrong_chaddr');
    if (this.#state === 'init' || this.#state === 'bound') return this.#ignore('unexpected');
    if (msg.xid !== this.#xid || this.#sent === 0) return this.#ignore('wrong_xid');
    const cid = msg.clientIdBytes;
    if (cid !== undefined && !sameBytes(cid, this.#clientId)) return this.#ignore('wrong_client_id');
    const type = msg.messageType;
    if (this.#state === 'selecting') {
      if (type !== DhcpMsg.OFFER) return this.#ignore('unexpected');
      const sid = msg.serverId;
      if (sid === undefined || sid === 0 || !usableAddress(msg.yiaddr)) return this.#ignore('bad_offer');
      this.counters.offers++;
      this.#offer = { ip: msg.yiaddr, serverId: sid };
      this.#enter('requesting', now);
      return [this.#transmit(now)];
    }
    if (type !== DhcpMsg.ACK && type !== DhcpMsg.NAK) return this.#ignore('unexpected');
    if (this.#state === 'requesting') {
      const sid = msg.serverId;
      if (sid !== undefined && sid !== this.#offer!.serverId) return this.#ignore('wrong_server');
    }
    if (type === DhcpMsg.NAK) {
      this.counters.naks++;
      const out: DhcpClientAction[] = [];
      if (this.#holding()) out.push({ kind: 'lost', ip: this.#lease!.ip, reason: 'nak' });
      this.#lease = undefined;
      this.#hint = 0;
      out.push({ kind: 'persist', lease: null });
      this.#toInit(now, now + this.#o.nakDelayMs);
      return out;
    }
    if (!usableAddress(msg.yiaddr)) return this.#ignore('bad_ack');
    this.counters.acks++;
    const previousIp = this.ip;
    const lease = this.#leaseFrom(msg, now);
    this.#lease = lease;
    this.#hint = lease.ip;
    this.#offer = undefined;
    this.#state = 'bound';
    this.#sent = 0;
    this.#nextAt = Infinity;
    this.#deadline = Infinity;
    if (previousIp === lease.ip) this.counters.renewed++;
    else this.counters.acquired++;
    return [{ kind: 'bound', lease, previousIp }, { kind: 'persist', lease }];
  }

  /**
   * The link came (back) up: no waiting for a backoff timer. Holding an address,
   * renew it now (the segment may have changed while the link was down); else
   * transmit the pending DISCOVER/REQUEST now. Returns what tick() returns.
   */
  linkUp(now: number): DhcpClientAction[] {
    this.#clock(now);
    if (this.#state === 'bound') this.#enter('renewing', now);
    else if (this.#state === 'selecting') {
      this.#sent = 0;
      this.#nextAt = now;
    } else if (this.#state === 'init') this.#nextAt = Math.min(this.#nextAt, now);
    else this.#nextAt = now;
    return this.tick(now);
  }

  describe(now: number): Record<string, unknown> {
    const l = this.#lease;
    const secs = (t: number): number | null => (Number.isFinite(t) ? Math.max(0, Math.round((t - now) / 1000)) : null);
    const holding = this.#holding();
    return {
      state: this.#state,
      address: holding ? `${formatIp4(l!.ip)}/${l!.prefix}` : '',
      router: holding && l!.router ? formatIp4(l!.router) : '',
      dns: holding ? l!.dns.map(formatIp4) : [],
      server: holding ? formatIp4(l!.serverId) : this.#offer ? formatIp4(this.#offer.serverId) : '',
      leaseSec: holding ? l!.leaseSec : null,
      renewInSec: holding && this.#state === 'bound' ? secs(leaseT1At(l!)) : null,
      rebindInSec: holding && this.#state !== 'rebinding' ? secs(leaseT2At(l!)) : null,
      expiresInSec: holding ? secs(leaseExpiresAt(l!)) : null,
      requesting: this.#state === 'requesting' ? formatIp4(this.#offer!.ip)
        : this.#state === 'rebooting' ? formatIp4(l!.ip) : '',
      clientId: toHexId(this.#clientId),
      counters: { ...this.counters, ignored: { ...this.counters.ignored } },
    };
  }

  #holding(): boolean {
    return this.#state === 'bound' || this.#state === 'renewing' || this.#state === 'rebinding';
  }

  #ignore(reason: DhcpClientIgnored): DhcpClientAction[] {
    this.counters.ignored[reason]++;
    return [];
  }

  /** A clock stepped backwards moves every pending deadline (and the lease's start) with it. */
  #clock(now: number): void {
    if (now < this.#lastNow) {
      const shift = now - this.#lastNow;
      this.#nextAt += shift;
      this.#deadline += shift;
      this.#startedAt += shift;
      if (this.#lease !== undefined) this.#lease = { ...this.#lease, obtainedAt: this.#lease.obtainedAt + shift };
    }
    this.#lastNow = now;
  }

  #newExchange(now: number): void {
    this.#xid = Math.floor(this.#o.random() * 0x100000000) >>> 0;
    this.#startedAt = now;
    this.#sent = 0;
    this.#nextAt = now;
  }

  #enter(state: 'selecting' | 'requesting' | 'renewing' | 'rebinding', now: number): void {
    // requesting keeps the xid of the DISCOVER/OFFER (RFC 2131 §4.4.1); the others start an exchange.
    if (state === 'requesting') {
      this.#sent = 0;
      this.#nextAt = now;
    } else {
      this.#newExchange(now);
    }
    if (state === 'selecting') this.#offer = undefined;
    this.#state = state;
  }

  #toInit(now: number, at: number): void {
    if (this.#lease !== undefined && this.#state !== 'rebooting') this.#hint = this.#lease.ip;
    this.#state = 'init';
    this.#offer = undefined;
    this.#sent = 0;
    this.#deadline = Infinity;
    this.#nextAt = Math.max(now, at);
  }

  /** Builds the message the state calls for and schedules the next retransmission. */
  #transmit(now: number): DhcpSendAction {
    const st = this.#state;
    if (this.#sent > 0) this.counters.retransmits++;
    this.#sent++;
    if (st === 'renewing' || st === 'rebinding') {
      const lease = this.#lease!;
      const until = st === 'renewing' ? leaseT2At(lease) : leaseExpiresAt(lease);
      this.#nextAt = Math.min(until, now + Math.max(this.#o.minRenewRetransmitMs, (until - now) / 2));
      this.counters.requests++;
      return this.#message(DhcpMsg.REQUEST, now, {
        ciaddr: lease.ip, srcIp: lease.ip,
        dstIp: st === 'renewing' ? lease.serverId : BROADCAST_IP, broadcast: st === 'rebinding',
      });
    }
    const base = Math.min(this.#o.maxRetransmitMs, this.#o.firstRetransmitMs * 2 ** Math.min(this.#sent - 1, 30));
    const jitter = Math.min(this.#o.jitterMs, base / 4);
    this.#nextAt = now + base + (this.#o.random() * 2 - 1) * jitter;
    const bcast = { ciaddr: 0, srcIp: 0, dstIp: BROADCAST_IP, broadcast: true };
    if (st === 'selecting') {
      this.counters.discovers++;
      return this.#message(DhcpMsg.DISCOVER, now, { ...bcast, requested: this.#hint || undefined });
    }
    this.counters.requests++;
    if (st === 'requesting') {
      return this.#message(DhcpMsg.REQUEST, now, { ...bcast, requested: this.#offer!.ip, serverId: this.#offer!.serverId });
    }
    // rebooting (INIT-REBOOT): option 50, no server id, ciaddr 0.
    return this.#message(DhcpMsg.REQUEST, now, { ...bcast, requested: this.#lease!.ip });
  }

  #message(
    type: number, now: number,
    a: { ciaddr: number; srcIp: number; dstIp: number; broadcast: boolean; requested?: number; serverId?: number },
  ): DhcpSendAction {
    const buf = new Uint8Array(DHCP_DEFAULT_MAX_MESSAGE - IP_UDP_HLEN);
    const w = new DhcpWriter(buf);
    w.header({
      op: BOOTREQUEST, xid: this.#xid, secs: Math.min(0xffff, Math.max(0, Math.floor((now - this.#startedAt) / 1000))),
      flags: 0, ciaddr: a.ciaddr, yiaddr: 0, siaddr: 0, giaddr: 0, chaddr: this.#o.mac,
    });
    w.u8(Opt.MESSAGE_TYPE, type);
    w.option(Opt.CLIENT_ID, this.#clientId);
    if (a.requested !== undefined) w.u32(Opt.REQUESTED_IP, a.requested);
    if (a.serverId !== undefined) w.u32(Opt.SERVER_ID, a.serverId);
    w.u16(Opt.MAX_MESSAGE_SIZE, DHCP_CLIENT_DEFAULTS.maxMessageSize);
    w.option(Opt.PARAM_LIST, [
      Opt.SUBNET_MASK, Opt.ROUTER, Opt.DNS, Opt.DOMAIN, Opt.MTU, Opt.BROADCAST,
      Opt.LEASE_TIME, Opt.SERVER_ID, Opt.RENEWAL_TIME, Opt.REBINDING_TIME,
    ]);
    if (this.#hostname !== undefined) w.text(Opt.HOSTNAME, this.#hostname);
    const n = w.finish();
    return { kind: 'send', type, payload: buf.subarray(0, n), srcIp: a.srcIp, dstIp: a.dstIp, broadcast: a.broadcast };
  }

  #leaseFrom(msg: DhcpMessage, now: number): DhcpClientLease {
    const ip = msg.yiaddr;
    const maskOpt = msg.option(Opt.SUBNET_MASK);
    let prefix = maskOpt?.length === 4 ? maskPrefix(read32(maskOpt, 0)) : -1;
    if (prefix < 0 || prefix > 30) prefix = classfulPrefix(ip);
    const routers = ipList(msg.option(Opt.ROUTER));
    const dns = ipList(msg.option(Opt.DNS));
    const prev = this.#lease;
    const leaseOpt = msg.option(Opt.LEASE_TIME);
    let leaseSec = leaseOpt?.length === 4 ? read32(leaseOpt, 0) : (prev?.leaseSec ?? DHCP_CLIENT_DEFAULTS.defaultLeaseSec);
    if (leaseSec === 0) leaseSec = 1;
    let t1Sec = 0;
    let t2Sec = 0;
    if (leaseSec !== INFINITE_LEASE) {
      const t1o = msg.option(Opt.RENEWAL_TIME);
      const t2o = msg.option(Opt.REBINDING_TIME);
      t2Sec = t2o?.length === 4 ? read32(t2o, 0) : 0;
      if (!(t2Sec > 0 && t2Sec < leaseSec)) t2Sec = leaseSec * 0.875;
      t1Sec = t1o?.length === 4 ? read32(t1o, 0) : 0;
      if (!(t1Sec > 0 && t1Sec < t2Sec)) t1Sec = Math.min(leaseSec * 0.5, t2Sec);
    }
    return {
      ip, prefix, router: routers.find(usableAddress) ?? 0, dns,
      serverId: msg.serverId ?? (this.#offer?.serverId ?? prev?.serverId ?? 0),
      leaseSec, t1Sec, t2Sec, obtainedAt: now,
    };
  }
}


function ipList(v: Uint8Array | undefined): number[] {
  if (v === undefined || v.length === 0 || v.length % 4 !== 0) return [];
  const out: number[] = [];
  for (let p = 0; p < v.length; p += 4) out.push(read32(v, p));
  return out;
}

function macBytes(mac: number): number[] {
  const out: number[] = [];
  for (let i = 5; i >= 0; i--) out.push(Math.floor(mac / 2 ** (8 * i)) & 0xff);
  return out;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function toHexId(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/* ---------- the lease file: uplink-<router>.json in the state directory ---------- */

export const CLIENT_LEASE_FILE_VERSION = 1;

/** Router names become file names: the same alphabet as the config's. */
export function clientLeaseFileName(router: string): string {
  if (!/^[A-Za-z0-9_.:-]{1,32}$/.test(router) || router === '.' || router === '..') {
    throw new Error(`invalid router name ${JSON.stringify(router)}`);
  }
  return `uplink-${router}.json`;
}

/** The lease as the file holds it: addresses as text, the MAC it was obtained with. */
export function serializeClientLease(mac: number, lease: DhcpClientLease): string {
  return `${JSON.stringify({
    version: CLIENT_LEASE_FILE_VERSION,
    mac: formatMac(mac),
    ip: formatIp4(lease.ip),
    prefix: lease.prefix,
    router: lease.router ? formatIp4(lease.router) : '',
    dns: lease.dns.map(formatIp4),
    serverId: formatIp4(lease.serverId),
    leaseSec: lease.leaseSec,
    t1Sec: lease.t1Sec,
    t2Sec: lease.t2Sec,
    obtainedAt: lease.obtainedAt,
    expiresAt: lease.leaseSec === INFINITE_LEASE ? null : new Date(leaseExpiresAt(lease)).toISOString(),
  }, null, 2)}\n`;
}

/**
 * The lease in a file written by serializeClientLease, or undefined when there is
 * none worth using: bad JSON, another version, another MAC (the config changed),
 * any field out of range. A bad file only costs a DISCOVER, so it is not an error.
 */
export function parseClientLease(text: string | undefined, mac: number): DhcpClientLease | undefined {
  if (text === undefined) return undefined;
  let j: any;
  try {
    j = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (j === null || typeof j !== 'object' || j.version !== CLIENT_LEASE_FILE_VERSION || j.mac !== formatMac(mac)) return undefined;
  const ip = parseIp(j.ip);
  const serverId = parseIp(j.serverId);
  const router = j.router === '' ? 0 : parseIp(j.router);
  const num = (v: unknown, lo: number, hi: number): v is number => typeof v === 'number' && Number.isFinite(v) && v >= lo && v <= hi;
  if (ip === undefined || !usableAddress(ip) || serverId === undefined || router === undefined) return undefined;
  if (!num(j.prefix, 0, 32) || !num(j.leaseSec, 1, INFINITE_LEASE) || !num(j.t1Sec, 0, INFINITE_LEASE) ||
      !num(j.t2Sec, 0, INFINITE_LEASE) || !num(j.obtainedAt, 0, 8.64e15) || !Array.isArray(j.dns)) return undefined;
  const dns: number[] = [];
  for (const d of j.dns) {
    const v = parseIp(d);
    if (v === undefined) return undefined;
    dns.push(v);
  }
  return { ip, prefix: j.prefix, router, dns, serverId, leaseSec: j.leaseSec, t1Sec: j.t1Sec, t2Sec: j.t2Sec, obtainedAt: j.obtainedAt };
}

function parseIp(v: unknown): number | undefined {
  if (typeof v !== 'string') return undefined;
  const ip = parseIp4(v);
  return ip < 0 ? undefined : ip;
}
