/*
 * The DHCPv6 server of one router network (RFC 8415): a pure state machine, as
 * the IPv4 server (dhcp/server.ts) is. `handle` takes one client message (the
 * UDP payload), the wall-clock time and the port it came in on, writes the reply
 * into the caller's buffer and returns its descriptor; the caller (dhcp6/port.ts)
 * wraps it in UDP/IPv6/Ethernet back to the requester. No sockets, no timers.
 *
 * What it serves: stateful IA_NA addresses from one pool inside the network's /64,
 * reservations by DUID or by MAC, and the stateless options (DNS Recursive Name
 * Server 23, Domain Search List 24) to every client, Information-Request
 * included. IA_TA and IA_PD are not served (no option in the reply for them).
 * Every IA_NA of a message is served (up to IA_NAS_MAX, 8; further ones get no
 * IA option, which clients treat as not served), each as its own client (DUID +
 * IAID: one address each) under all the rules below, and answered in one reply
 * with one IA_NA per IA asked: an address, or a status in that IA
 * (NoAddrsAvail when the pool cannot fill it). An IA refused outright (another
 * port's lease, the port's cap, the offer table full) refuses the whole message,
 * as it would alone; a message naming one IAID twice is malformed (RFC 8415
 * 21.4). A Reply granting several leases goes once all are on disk.
 *
 * Names: a client's Client FQDN option (39, RFC 4704) names its lease: its first
 * label, when a plain host name, is kept with the lease (and in the lease file)
 * for the gateway's DNS (dns/gateway.ts: AAAA for the name). The server does no
 * DNS update on the client's behalf elsewhere. A Reply or Advertise granting an
 * address to a client that sent a usable name carries the option back (RFC 4704
 * 6): flags S (the gateway serves the name), O when the client had asked
 * otherwise, and the name: the label and the first of `domains`, or the label
 * alone (a partial name) without domains (wire.ts fqdnReply).
 *
 * Client identity: (DUID, IAID): the lease key is `id:<IAID hex><DUID hex>`
 * (LeaseStore's clientId). A client's MAC is the link-layer address in its
 * DUID-LLT/DUID-LL (hardware type 1), else the frame's source MAC; a MAC
 * reservation matches that MAC, a DUID reservation the DUID whatever the IAID.
 * A reserved client gets its reserved address and no other; a reserved address
 * goes to no one else.
 *
 * Messages (RFC 8415 16 and 18.3), after the checks of 16 (Client ID present
 * where required; Server ID absent from Solicit/Confirm/Rebind, ours in
 * Request/Renew/Release/Decline, ours if present in Information-Request; anything
 * else is dropped, counted):
 *   Solicit  -> Advertise with the address held for the client OFFER_HOLD_SEC
 *               (Preference 255: clients request at once), or, with Rapid
 *               Commit, a Reply with the lease (bound, durable first).
 *               No address -> Advertise whose IA_NA carries NoAddrsAvail.
 *   Request  -> Reply: the lease (the reservation, the IA's hinted address if
 *               usable, the offer, the current lease, the next free), or the
 *               IA with NoAddrsAvail.
 *   Renew/Rebind -> Reply: the lease extended if the address is still the
 *               client's (or free and allowed); an address not in our prefix
 *               with lifetimes 0 (NotOnLink's IA form); else Renew: NoBinding in
 *               the IA; Rebind: the address with lifetimes 0.
 *   Release  -> the lease ends (if the client's own); Reply Success (an IA with
 *               NoBinding for each IA it does not hold, RFC 8415 18.3.7).
 *   Decline  -> the lease ends and the address is held out DECLINE_HOLD_SEC; Reply Success.
 *   Confirm  -> Reply Success when every address is in our prefix, else NotOnLink;
 *               no address, no reply.
 *   Information-Request -> Reply with the stateless options.
 * Lifetimes: preferred = valid = lease time, T1 = 50 %, T2 = 87.5 % (dnsmasq's too).
 *
 * Durable Replies: a grant changes the lease in memory at once and asks the store
 * (leases.ts, the IPv4 store with a DHCPv6 codec: `leases6-<network>.json`) for a
 * write; its Reply is held until that write is on disk (`handle` returns
 * 'pending'), then handed to the sink, or dropped ('store_error') if the write
 * failed, exactly as the IPv4 ACKs are. At most HELD_MAX Replies wait
 * ('reply_backlog' past that), at most OFFERS_MAX offers live ('offer_backlog').
 *
 * Ports and ownership (the IPv4 server's rules): a lease and an offer belong to
 * (port, MAC); on a guarded port a client whose lease or offer belongs to another
 * (port, MAC) whose port is still up is refused silently ('not_owner'), so
 * another VM cannot renew, release or decline a lease by copying its DUID.
 * Leases + offers per port are capped (`maxLeasesPerPort`, default 4 on guarded
 * ports; a port at its cap gives up its own oldest offer first, then is refused:
 * 'port_limit'). Reserved clients are exempt.
 *
 * Address model: the pool is a range of addresses sharing their first 96 bits
 * (`base`, inside the network's /64); an address is kept as its last 32 bits
 * (a number: the LeaseStore's key), and reservations must share the base too.
 */
import { dnsNames, formatIp6, formatMac, ip6InPrefix, parseIp6 } from '@vswitch/switch';
import { LeaseStore, clientKey, type Lease, type LeaseCodec } from '../dhcp/leases.js';
import {
  DHCP6_OK, Dhcp6Msg, addrLow, setAddrLow, Dhcp6Opt, Dhcp6Status, Dhcp6Writer, duidLl, duidMac, iaNaAddress, iaNaIaid, newDhcp6View,
  IA_NAS_MAX, firstName, fqdnHost, fqdnReply, parseDhcp6, type Dhcp6View,
} from './wire.js';

export const DHCP6_DEFAULTS = {
  leaseTimeSec: 3600,
  offerHoldSec: 5,
  declineHoldSec: 600,
  maxPoolSize: 65536,
  guardedMaxLeasesPerPort: 4,
  offersMax: 4096,
  heldMax: 4096,
  /** The pool when none is configured: <prefix>::1000 - <prefix>::1fff. */
  defaultPool: [0x1000, 0x1fff] as const,
} as const;

export interface Dhcp6Reservation {
  /** DUID in lowercase hex (no separators), or a MAC (from the DUID or the frame): one of them. */
  duid?: string;
  mac?: number;
  address: Uint8Array;
}

export interface Dhcp6ServerConfig {
  name: string;
  /** The gateway's MAC: the server's DUID-LL. */
  serverMac: number;
  /** The network's prefix (16 bytes) and length (64). */
  prefix: Uint8Array;
  /** The gateway's address in the prefix: never served. */
  gateway: Uint8Array;
  prefixLen: number;
  /** Inclusive pool; both inside the prefix, sharing their first 96 bits. Absent: DHCP6_DEFAULTS.defaultPool. */
  pool?: { start: Uint8Array; end: Uint8Array };
  reservations?: readonly Dhcp6Reservation[];
  leaseTimeSec?: number;
  dns?: readonly Uint8Array[];
  domains?: readonly string[];
  maxLeasesPerPort?: number;
  /** A bound lease went away (release, decline, expiry). */
  onRemove?: (lease: { address: Uint8Array; mac: number; port?: string }) => void;
  offerHoldSec?: number;
  declineHoldSec?: number;
}

export class Dhcp6ConfigError extends Error {
  readonly code = 'EDHCPCONFIG';
}

export interface Dhcp6Context {
  now: number;
  port?: string;
  srcMac?: number;
  guarded?: boolean;
  ports?: { guarded(port: string): boolean; live(port: string): boolean };
}

export interface Dhcp6Reply {
  /** Dhcp6Msg.ADVERTISE or REPLY. */
  type: number;
  payloadLen: number;
  /** A lease granted by this reply: its address (16 bytes), the client's MAC and port (the first of `leases`). */
  leased?: { address: Uint8Array; mac: number; port?: string; expiresAt: number };
  /** Every lease granted by this reply, one per IA_NA. */
  leases?: { address: Uint8Array; mac: number; port?: string; expiresAt: number }[];
}

export interface Dhcp6Sink {
  /** A held Reply whose lease is now on disk; `payload` is the message (a copy), `dst` what the request carried. */
  deliver(reply: Dhcp6Reply, payload: Uint8Array, dst: unknown): void;
  storeFailed?(err: Error): void;
}

export const DHCP6_REASONS = [
  'malformed',        // parseDhcp6 refused it
  'relayed',          // a relay message: not served
  'unsupported_type', // a server's message type, or unknown
  'no_client_id',     // Client ID missing where required
  'wrong_server',     // Server ID present where forbidden, or not ours
  'no_record',        // Rebind/Release/Decline for an address the client does not hold
  'not_owner',        // the client's lease or offer belongs to another port or MAC, whose port is up
  'port_limit',       // the port has maxLeasesPerPort leases + offers
  'offer_backlog',    // OFFERS_MAX offers live
  'reply_backlog',    // HELD_MAX Replies wait for the lease file
  'no_room',          // the reply does not fit
  'store_error',      // the lease could not be written: no Reply without a durable lease
  'lease_gone',       // a held Reply whose lease ended before it was on disk
] as const;
export type Dhcp6Reason = (typeof DHCP6_REASONS)[number];
export type Dhcp6Result = Dhcp6Reply | 'pending' | Dhcp6Reason;

export const DHCP6_MESSAGE_TYPES = [
  'solicit', 'advertise', 'request', 'confirm', 'renew', 'rebind', 'reply', 'release', 'decline', 'information_request',
] as const;
export const DHCP6_STATUSES = ['no_addrs_avail', 'no_binding', 'not_on_link'] as const;

export interface Dhcp6Counters {
  messages: Record<(typeof DHCP6_MESSAGE_TYPES)[number], number>;
  /** Status codes sent (in an IA or the message). */
  statuses: Record<(typeof DHCP6_STATUSES)[number], number>;
  dropped: Record<Dhcp6Reason, number>;
  storeErrors: number;
  offersReclaimed: number;
}

export interface Dhcp6LeaseView {
  address: Uint8Array;
  mac: number;
  duid?: string;
  iaid?: number;
  expiresAt: number;
  state: 'bound' | 'offered' | 'declined';
  port?: string;
  /** The host label of the client's FQDN option (39), bound leases only. */
  hostname?: string;
}

interface Client {
  key: string;
  clientId: string;
  duid: string;
  mac: number;
  port?: string;
  guarded: boolean;
  /** fqdnHost of its Client FQDN option, if it sent a usable one. */
  hostname?: string;
  /** Its IA_NA's IAID, and the offset of the address hinted in it (-1: none). */
  iaid: number;
  hinted: number;
}

interface Offer { ip: number; mac: number; clientId: string; until: number; port?: string }
interface Held { items: { key: string; ip: number }[]; version: number; reply: Dhcp6Reply; payload: Uint8Array; dst: unknown }
/** One IA_NA of a reply: `ip` offered or granted (`bind`: to bind), `zero` an address with lifetimes 0, or `status`; iaid -1: no IA. */
interface IaOut { iaid: number; ip?: number; bind?: number; zero?: Uint8Array; status?: number }

const TYPE_NAME: Record<number, (typeof DHCP6_MESSAGE_TYPES)[number]> = {
  [Dhcp6Msg.SOLICIT]: 'solicit', [Dhcp6Msg.REQUEST]: 'request', [Dhcp6Msg.CONFIRM]: 'confirm', [Dhcp6Msg.RENEW]: 'renew',
  [Dhcp6Msg.REBIND]: 'rebind', [Dhcp6Msg.RELEASE]: 'release', [Dhcp6Msg.DECLINE]: 'decline',
  [Dhcp6Msg.INFORMATION_REQUEST]: 'information_request',
};

const hex = (b: Uint8Array, off: number, len: number): string => Buffer.from(b.buffer, b.byteOffset + off, len).toString('hex');

export class Dhcp6Server {
  readonly counters: Dhcp6Counters = {
    messages: Object.fromEntries(DHCP6_MESSAGE_TYPES.map((t) => [t, 0])) as Dhcp6Counters['messages'],
    statuses: Object.fromEntries(DHCP6_STATUSES.map((t) => [t, 0])) as Dhcp6Counters['statuses'],
    dropped: Object.fromEntries(DHCP6_REASONS.map((t) => [t, 0])) as Dhcp6Counters['dropped'],
    storeErrors: 0, offersReclaimed: 0,
  };
  readonly duid: Uint8Array;
  /** The first 12 bytes of every address served. */
  readonly base: Uint8Array;
  readonly codec: LeaseCodec;
  readonly #cfg: Dhcp6ServerConfig;
  readonly #store: LeaseStore;
  readonly #lo: number;
  readonly #hi: number;
  readonly #leaseSec: number;
  readonly #offerHoldMs: number;
  readonly #declineHoldMs: number;
  readonly #dns: Uint8Array | undefined;
  readonly #domains: Uint8Array | undefined;
  readonly #resByDuid = new Map<string, number>();
  readonly #resByMac = new Map<number, number>();
  readonly #resByIp = new Set<number>();
  readonly #offers = new Map<string, Offer>();
  readonly #offeredIps = new Map<number, string>();
  readonly #declined = new Map<number, number>();
  #held: Held[] = [];
  #cursor = -1;
  #sink: Dhcp6Sink | undefined;
  #closed = false;
  readonly #m: Dhcp6View = newDhcp6View();
  readonly #addr = new Uint8Array(16);

  /** Validates the config (Dhcp6ConfigError) and drops loaded leases it no longer allows. */
  constructor(config: Dhcp6ServerConfig, store: LeaseStore, now: number) {
    const c = config;
    this.#cfg = c;
    this.#store = store;
    const bad = (why: string): never => { throw new Dhcp6ConfigError(`DHCPv6 network ${c.name}: ${why}`); };
    if (c.prefixLen !== 64) bad(`prefix length ${c.prefixLen}: DHCPv6 pools need a /64`);
    const start = c.pool?.start ?? dhcp6Addr(c.prefix, DHCP6_DEFAULTS.defaultPool[0]);
    const end = c.pool?.end ?? dhcp6Addr(c.prefix, DHCP6_DEFAULTS.defaultPool[1]);
    for (const a of [start, end]) if (!ip6InPrefix(a, 0, c.prefix, 0, 64)) bad(`pool address ${formatIp6(a)} is not inside the network's /64`);
    if (!sameBase(start, end)) {
      bad(`pool ${formatIp6(start)}-${formatIp6(end)} must share its first 96 bits`);
    }
    this.base = start.slice(0, 12);
    this.#lo = addrLow(start, 0);
    this.#hi = addrLow(end, 0);
    if (this.#hi < this.#lo) bad(`pool ${formatIp6(start)}-${formatIp6(end)} ends before it starts`);
    if (this.#hi - this.#lo + 1 > DHCP6_DEFAULTS.maxPoolSize) bad(`the pool holds more than ${DHCP6_DEFAULTS.maxPoolSize} addresses`);
    for (const r of c.reservations ?? []) {
      if (!sameBase(r.address, start)) bad(`reservation ${formatIp6(r.address)} must share the pool's first 96 bits (${formatIp6(dhcp6Addr(this.base, 0))})`);
      const ip = addrLow(r.address, 0);
      if (this.#special(ip)) bad(`reservation ${formatIp6(r.address)} is the network's or the gateway's address`);
      if (this.#resByIp.has(ip)) bad(`${formatIp6(r.address)} is reserved twice`);
      this.#resByIp.add(ip);
      if (r.duid !== undefined) {
        if (this.#resByDuid.has(r.duid)) bad(`two reservations for DUID ${r.duid}`);
        this.#resByDuid.set(r.duid, ip);
      } else if (r.mac !== undefined) {
        if (this.#resByMac.has(r.mac)) bad(`two reservations for MAC ${formatMac(r.mac)}`);
        this.#resByMac.set(r.mac, ip);
      } else bad(`reservation ${formatIp6(r.address)} names neither a DUID nor a MAC`);
    }
    const leaseSec = c.leaseTimeSec ?? DHCP6_DEFAULTS.leaseTimeSec;
    if (!Number.isInteger(leaseSec) || leaseSec < 60 || leaseSec > 0x7fffffff) bad(`lease time ${leaseSec} s not in 60..2^31-1`);
    this.#leaseSec = leaseSec;
    this.#offerHoldMs = (c.offerHoldSec ?? DHCP6_DEFAULTS.offerHoldSec) * 1000;
    this.#declineHoldMs = (c.declineHoldSec ?? DHCP6_DEFAULTS.declineHoldSec) * 1000;
    if ((c.dns?.length ?? 0) > 0) {
      const d = new Uint8Array(16 * c.dns!.length);
      c.dns!.forEach((a, i) => d.set(a.subarray(0, 16), 16 * i));
      this.#dns = d;
    }
    if ((c.domains?.length ?? 0) > 0) {
      this.#domains = dnsNames(c.domains!);
      if (this.#domains === undefined) bad(`bad domain in ${c.domains!.join(', ')}`);
    }
    this.duid = duidLl(c.serverMac);
    this.codec = dhcp6Codec(this.base);
    if (store.codec.file !== this.codec.file) bad('the lease store is not a DHCPv6 one');
    // Leases the config no longer allows (outside the pool, reserved for another): gone.
    for (const l of [...store.values()]) {
      const c2 = { key: clientKey(l.mac, l.clientId), mac: l.mac, duid: (l.clientId ?? '').slice(8) };
      if (l.expiresAt <= now || !this.#allowed(l.ip, c2)) store.delete(c2.key);
    }
    store.onSettled = (ok, v, err) => this.#settled(ok, v, err);
  }

  get poolSize(): number { return this.#hi - this.#lo + 1; }
  get leaseWrites(): number { return this.#store.writes; }
  get pendingReplies(): number { return this.#held.length; }
  get leaseTimeSec(): number { return this.#leaseSec; }
  /** The pool as text, for `router show`. */
  get poolText(): string { return `${formatIp6(dhcp6Addr(this.base, this.#lo))}-${formatIp6(dhcp6Addr(this.base, this.#hi))}`; }
  /** The DNS servers handed out (option 23), for `router show`. */
  get dnsServers(): readonly Uint8Array[] { return this.#cfg.dns ?? []; }

  attach(sink: Dhcp6Sink): void { this.#sink = sink; }
  flush(): Promise<void> { return this.#store.flush(); }
  sync(): void { if (!this.#closed) this.#store.sync(); }
  discard(): void { this.#closed = true; this.#store.discard(); }
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try { this.#store.close(); } catch { /* reported through #settled */ }
  }

  /** The full address of a kept one. */
  address(ip: number): Uint8Array { return dhcp6Addr(this.base, ip); }

  /**
   * One client message at buf[off, off+len); the reply goes to out[outOff..]. `dst`
   * is kept with a held Reply and given back to the sink (where to send it).
   */
  handle(buf: Uint8Array, off: number, len: number, out: Uint8Array, outOff: number, ctx: Dhcp6Context, dst?: () => unknown): Dhcp6Result {
    const m = this.#m;
    const err = parseDhcp6(buf, off, len, m);
    if (err !== DHCP6_OK) return this.#drop(err === 3 ? 'relayed' : 'malformed');
    const name = TYPE_NAME[m.type];
    if (name === undefined) return this.#drop('unsupported_type');
    this.counters.messages[name]++;
    const t = m.type;
    const serverIdOurs = m.serverId >= 0 && m.serverIdLen === this.duid.length && equalBytes(buf, m.serverId, this.duid);
    if (t === Dhcp6Msg.INFORMATION_REQUEST) {
      if (m.serverId >= 0 && !serverIdOurs) return this.#drop('wrong_server');
      // RFC 8415 16.12: an Information-Request carrying an IA is discarded.
      if (m.iaNaCount > 0 || m.otherIas > 0) return this.#drop('malformed');
      return this.#reply(buf, m, Dhcp6Msg.REPLY, out, outOff, [], undefined);
    }
    if (m.clientId < 0) return this.#drop('no_client_id');
    const needsOurs = t === Dhcp6Msg.REQUEST || t === Dhcp6Msg.RENEW || t === Dhcp6Msg.RELEASE || t === Dhcp6Msg.DECLINE;
    if (needsOurs ? !serverIdOurs : m.serverId >= 0) return this.#drop('wrong_server');
    if (t === Dhcp6Msg.CONFIRM) return this.#confirm(buf, m, out, outOff);
    const guarded = ctx.guarded === true && ctx.port !== undefined;
    const duidHex = hex(buf, m.clientId, m.clientIdLen);
    const dmac = duidMac(buf, m.clientId, m.clientIdLen);
    const mac = dmac >= 0 ? dmac : ctx.srcMac ?? 0;
    const hostname = m.fqdn >= 0 ? fqdnHost(buf, m.fqdn, m.fqdnLen) : undefined;
    const now = ctx.now;
    // One client per IA_NA (DUID + IAID: one address each); a message without one is the IAID-0 client's.
    const n = Math.min(m.iaNaCount, IA_NAS_MAX);
    const clients: Client[] = [];
    for (let i = 0; i < Math.max(1, n); i++) {
      const iaid = n > 0 ? iaNaIaid(buf, m.iaNas[i]) : 0;
      const clientId = iaid.toString(16).padStart(8, '0') + duidHex;
      if (clients.some((o) => o.clientId === clientId)) return this.#drop('malformed'); // RFC 8415 21.4: IAIDs are unique
      const hinted = n > 0 ? iaNaAddress(buf, m.iaNas[i], m.iaNaLens[i]) : -1;
      const c: Client = { key: clientKey(mac, clientId), clientId, duid: duidHex, mac, port: ctx.port, guarded, iaid, hinted };
      if (hostname !== undefined) c.hostname = hostname;
      if (this.#foreign(c, now, ctx.ports)) return this.#drop('not_owner');
      clients.push(c);
    }
    if (n === 0) {
      // Nothing stateful asked (an IA_PD-only Solicit, a bare Renew): the stateless options, or silence.
      if (t === Dhcp6Msg.SOLICIT) return this.#reply(buf, m, Dhcp6Msg.ADVERTISE, out, outOff, [], Dhcp6Status.NO_ADDRS_AVAIL);
      return this.#drop('no_record');
    }
    const grants = t === Dhcp6Msg.REQUEST || t === Dhcp6Msg.RENEW || t === Dhcp6Msg.REBIND || (t === Dhcp6Msg.SOLICIT && m.rapidCommit);
    if (grants && this.#held.length >= DHCP6_DEFAULTS.heldMax) return this.#drop('reply_backlog');
    const ias: IaOut[] = [];
    const bound: Lease[] = [];
    for (const c of clients) {
      let r: IaOut | Dhcp6Reason;
      switch (t) {
        case Dhcp6Msg.SOLICIT: r = this.#solicit(buf, m, c, now); break;
        case Dhcp6Msg.REQUEST: r = this.#request(buf, c, now); break;
        case Dhcp6Msg.RENEW:
        case Dhcp6Msg.REBIND: r = this.#extend(buf, m, c, now); break;
        case Dhcp6Msg.RELEASE:
        case Dhcp6Msg.DECLINE: r = this.#giveBack(buf, m, c, now); break;
        default: return this.#drop('unsupported_type');
      }
      // One IA refused outright refuses the message, as for a single IA (the client asks again).
      if (typeof r === 'string') return this.#drop(r);
      if (r.bind !== undefined) bound.push(this.#bind(c, r.bind, now));
      if (r.iaid >= 0) ias.push(r);
    }
    if (t === Dhcp6Msg.RELEASE || t === Dhcp6Msg.DECLINE) {
      this.#store.commit();
      // RFC 8415 18.3.7/8: Success for the message; an IA only for those it does not know (NoBinding).
      return this.#reply(buf, m, Dhcp6Msg.REPLY, out, outOff, ias, Dhcp6Status.SUCCESS);
    }
    const type = t === Dhcp6Msg.SOLICIT && !m.rapidCommit ? Dhcp6Msg.ADVERTISE : Dhcp6Msg.REPLY;
    if (bound.length === 0) return this.#reply(buf, m, type, out, outOff, ias, undefined);
    return this.#durable(buf, m, bound, ias, out, outOff, dst);
  }

  /** Solicit, one IA: an offer held OFFER_HOLD_SEC, or with Rapid Commit the lease; NoAddrsAvail without an address. */
  #solicit(buf: Uint8Array, m: Dhcp6View, c: Client, now: number): IaOut | Dhcp6Reason {
    const ip = this.#choose(buf, c, c.hinted, now, false);
    if (typeof ip === 'string') return ip;
    if (ip < 0) return { iaid: c.iaid, status: Dhcp6Status.NO_ADDRS_AVAIL };
    if (m.rapidCommit) return { iaid: c.iaid, ip, bind: ip };
    this.#dropOffer(c.key);
    const other = this.#offeredIps.get(ip);
    if (other !== undefined) this.#dropOffer(other);
    if (this.#offers.size >= DHCP6_DEFAULTS.offersMax) this.#expireOffers(now);
    if (this.#offers.size >= DHCP6_DEFAULTS.offersMax) return 'offer_backlog';
    this.#offers.set(c.key, { ip, mac: c.mac, clientId: c.clientId, until: now + this.#offerHoldMs, port: c.port });
    this.#offeredIps.set(ip, c.key);
    return { iaid: c.iaid, ip };
  }

  /**
   * The address for the client: reservation; (Request) the hinted one if usable;
   * its lease; its offer; (Solicit) the hinted one; the next free. -1: none;
   * a reason: refused before any address (the port's cap).
   */
  #choose(buf: Uint8Array, c: Client, hinted: number, now: number, request: boolean): number | Dhcp6Reason {
    const res = this.#reservation(c);
    if (res !== undefined) return this.#usable(res, c, now) ? res : -1;
    const hint = hinted >= 0 && sameBaseAt(buf, hinted, this.base) ? addrLow(buf, hinted) : -1;
    if (request && hint >= 0 && this.#usable(hint, c, now)) return hint;
    const l = this.#store.get(c.key);
    if (l !== undefined && this.#usable(l.ip, c, now)) return l.ip;
    const o = this.#offers.get(c.key);
    if (o !== undefined && o.until > now && this.#usable(o.ip, c, now)) return o.ip;
    if (!this.#makeRoom(c, now)) return 'port_limit';
    if (hint >= 0 && this.#usable(hint, c, now)) return hint;
    return this.#nextFree(c, now);
  }

  #request(buf: Uint8Array, c: Client, now: number): IaOut | Dhcp6Reason {
    const ip = this.#choose(buf, c, c.hinted, now, true);
    if (typeof ip === 'string') return ip;
    if (ip < 0) return { iaid: c.iaid, status: Dhcp6Status.NO_ADDRS_AVAIL };
    return { iaid: c.iaid, ip, bind: ip };
  }

  #extend(buf: Uint8Array, m: Dhcp6View, c: Client, now: number): IaOut | Dhcp6Reason {
    const renew = m.type === Dhcp6Msg.RENEW;
    const hinted = c.hinted;
    if (hinted < 0) {
      const l = this.#store.get(c.key);
      if (l !== undefined && l.expiresAt > now) return { iaid: c.iaid, ip: l.ip, bind: l.ip };
      return renew ? { iaid: c.iaid, status: Dhcp6Status.NO_BINDING } : 'no_record';
    }
    const onLink = ip6InPrefix(buf, hinted, this.#cfg.prefix, 0, this.#cfg.prefixLen);
    const ours = sameBaseAt(buf, hinted, this.base);
    const ip = ours ? addrLow(buf, hinted) : -1;
    if (ours && this.#usable(ip, c, now) && (this.#reservation(c) ?? ip) === ip) {
      const l = this.#store.get(c.key);
      if ((l === undefined || l.ip !== ip) && !this.#makeRoom(c, now)) return 'port_limit';
      return { iaid: c.iaid, ip, bind: ip };
    }
    if (!onLink) this.counters.statuses.not_on_link++;
    if (renew && onLink) return { iaid: c.iaid, status: Dhcp6Status.NO_BINDING };
    // Not ours to extend: the address with lifetimes 0, so the client stops using it.
    return { iaid: c.iaid, zero: buf.slice(hinted, hinted + 16) };
  }

  /** Release/Decline, one IA: the lease ends (if the client's own); an IA with NoBinding for one it does not hold. */
  #giveBack(buf: Uint8Array, m: Dhcp6View, c: Client, now: number): IaOut {
    const hinted = c.hinted;
    const l = this.#store.get(c.key);
    const ip = hinted >= 0 && sameBaseAt(buf, hinted, this.base) ? addrLow(buf, hinted) : -1;
    if (l === undefined || ip < 0 || l.ip !== ip) return { iaid: c.iaid, status: Dhcp6Status.NO_BINDING };
    this.#store.delete(c.key);
    if (m.type === Dhcp6Msg.DECLINE) this.#declined.set(ip, now + this.#declineHoldMs);
    this.#cfg.onRemove?.({ address: this.address(ip), mac: l.mac, port: l.port });
    return { iaid: -1 };
  }

  #confirm(buf: Uint8Array, m: Dhcp6View, out: Uint8Array, outOff: number): Dhcp6Result {
    const a = m.iaNa >= 0 ? iaNaAddress(buf, m.iaNa, m.iaNaLen) : -1;
    if (a < 0) return this.#drop('no_record');
    const onLink = ip6InPrefix(buf, a, this.#cfg.prefix, 0, this.#cfg.prefixLen);
    if (!onLink) this.counters.statuses.not_on_link++;
    return this.#reply(buf, m, Dhcp6Msg.REPLY, out, outOff, [], onLink ? Dhcp6Status.SUCCESS : Dhcp6Status.NOT_ON_LINK);
  }

  /** Binds `ip` to the client (in memory; the caller commits): the lease, extended, with its name and port. */
  #bind(c: Client, ip: number, now: number): Lease {
    const lease: Lease = { ip, mac: c.mac, clientId: c.clientId, expiresAt: now + this.#leaseSec * 1000 };
    const prev = this.#store.get(c.key);
    // The name of the last message that sent one (a Renew need not repeat it), for the gateway's AAAA answers.
    const hostname = c.hostname ?? (prev?.ip === ip ? prev.hostname : undefined);
    if (hostname !== undefined) lease.hostname = hostname;
    const port = c.port ?? prev?.port;
    if (port !== undefined) lease.port = port;
    this.#dropOffer(c.key);
    const other = this.#offeredIps.get(ip);
    if (other !== undefined) this.#dropOffer(other);
    this.#store.set(lease);
    return lease;
  }

  /** The Reply granting `bound`: sent once the leases are in the lease file (held until then), never before. */
  #durable(buf: Uint8Array, m: Dhcp6View, bound: Lease[], ias: IaOut[], out: Uint8Array, outOff: number, dst?: () => unknown): Dhcp6Result {
    const version = this.#store.commit();
    const r = this.#reply(buf, m, Dhcp6Msg.REPLY, out, outOff, ias, undefined);
    if (typeof r === 'string') return r;
    r.leases = bound.map((l) => ({ address: this.address(l.ip), mac: l.mac, port: l.port, expiresAt: l.expiresAt }));
    r.leased = r.leases[0];
    if (version <= this.#store.durableVersion) return r;
    if (!this.#store.busy) return this.#drop('store_error');
    const payload = out.slice(outOff, outOff + r.payloadLen);
    this.counters.messages.reply--;
    this.#held.push({ items: bound.map((l) => ({ key: clientKey(l.mac, l.clientId), ip: l.ip })), version, reply: r, payload, dst: dst?.() });
    return 'pending';
  }

  #settled(ok: boolean, version: number, err?: Error): void {
    if (!ok) {
      this.counters.storeErrors++;
      this.#sink?.storeFailed?.(err ?? new Error('lease file write failed'));
    }
    let i = 0;
    while (i < this.#held.length && this.#held[i].version <= version) i++;
    if (i === 0) return;
    const done = this.#held.slice(0, i);
    this.#held = this.#held.slice(i);
    for (const h of done) {
      if (!ok) { this.#drop('store_error'); continue; }
      if (h.items.some((it) => this.#store.get(it.key)?.ip !== it.ip)) { this.#drop('lease_gone'); continue; }
      this.counters.messages.reply++;
      this.#sink?.deliver(h.reply, h.payload, h.dst);
    }
  }

  /**
   * Writes a reply: Server ID, Client ID, the message's status (`top`), then one
   * IA_NA per entry of `ias` (`ip`: the address with our lifetimes; `zero`: that
   * address with lifetimes 0; else `status` in the IA), Rapid Commit for a rapid
   * Reply, Preference 255 in an Advertise, DNS and domains.
   */
  #reply(buf: Uint8Array, m: Dhcp6View, type: number, out: Uint8Array, outOff: number, ias: readonly IaOut[], top: number | undefined): Dhcp6Result {
    const w = new Dhcp6Writer(out, outOff, out.length);
    let ok = w.header(type, m.xid) && w.bytes(Dhcp6Opt.SERVERID, this.duid);
    if (m.clientId >= 0) ok = ok && w.copy(Dhcp6Opt.CLIENTID, buf, m.clientId, m.clientIdLen);
    if (top !== undefined) {
      ok = ok && w.status(top, statusText(top));
      if (top === Dhcp6Status.NO_ADDRS_AVAIL) this.counters.statuses.no_addrs_avail++;
    }
    const sec = this.#leaseSec;
    for (const ia of ias) {
      const status = ia.status;
      ok = ok && w.beginIaNa(ia.iaid, ia.ip !== undefined ? Math.floor(sec / 2) : 0, ia.ip !== undefined ? Math.floor((sec * 7) / 8) : 0);
      if (ia.ip !== undefined) ok = ok && w.iaAddr(this.address(ia.ip), sec, sec);
      else if (ia.zero !== undefined) ok = ok && w.iaAddr(ia.zero, 0, 0);
      else if (status !== undefined) ok = ok && w.status(status, statusText(status));
      w.endIaNa();
      if (status === Dhcp6Status.NO_ADDRS_AVAIL) this.counters.statuses.no_addrs_avail++;
      else if (status === Dhcp6Status.NO_BINDING) this.counters.statuses.no_binding++;
    }
    if (type === Dhcp6Msg.REPLY && m.type === Dhcp6Msg.SOLICIT) ok = ok && w.empty(Dhcp6Opt.RAPID_COMMIT);
    if (type === Dhcp6Msg.ADVERTISE) ok = ok && w.u8(Dhcp6Opt.PREFERENCE, 255);
    if (this.#dns !== undefined) ok = ok && w.bytes(Dhcp6Opt.DNS_SERVERS, this.#dns);
    if (this.#domains !== undefined) ok = ok && w.bytes(Dhcp6Opt.DOMAIN_LIST, this.#domains);
    if (m.fqdn >= 0 && ias.some((ia) => ia.ip !== undefined)) {
      const host = fqdnHost(buf, m.fqdn, m.fqdnLen);
      if (host !== undefined) ok = ok && w.bytes(Dhcp6Opt.CLIENT_FQDN, fqdnReply(buf[m.fqdn], host, firstName(this.#domains)));
    }
    if (!ok) return this.#drop('no_room');
    // Counted as sent; a Reply held for the lease file is uncounted until it goes (#durable, #settled).
    if (type === Dhcp6Msg.ADVERTISE) this.counters.messages.advertise++;
    else this.counters.messages.reply++;
    return { type, payloadLen: w.length };
  }

  // --- state ------------------------------------------------------------------

  #reservation(c: Pick<Client, 'duid' | 'mac'>): number | undefined {
    return this.#resByDuid.get(c.duid) ?? this.#resByMac.get(c.mac);
  }

  /** May `ip` be this client's by the config (pool or its reservation)? */
  #allowed(ip: number, c: Pick<Client, 'duid' | 'mac'>): boolean {
    if (this.#special(ip)) return false;
    const res = this.#reservation(c);
    if (res !== undefined) return res === ip;
    return !this.#resByIp.has(ip) && ip >= this.#lo && ip <= this.#hi;
  }

  #usable(ip: number, c: Client, now: number): boolean {
    if (!this.#allowed(ip, c)) return false;
    const d = this.#declined.get(ip);
    if (d !== undefined && d > now) return false;
    const l = this.#store.byIp(ip);
    if (l !== undefined && l.expiresAt > now && clientKey(l.mac, l.clientId) !== c.key) return false;
    const o = this.#offeredIps.get(ip);
    return o === undefined || o === c.key || (this.#offers.get(o)?.until ?? 0) <= now;
  }

  /** The gateway's own address and the subnet-router anycast (prefix::) are never served. */
  #special(ip: number): boolean {
    const c = this.#cfg;
    return (ip === 0 && sameBase(c.prefix, this.base)) || (ip === addrLow(c.gateway, 0) && sameBase(c.gateway, this.base));
  }

  #foreign(c: Client, now: number, ports: Dhcp6Context['ports']): boolean {
    const l = this.#store.get(c.key);
    if (l !== undefined && l.expiresAt > now && this.#ownedElsewhere(l.port, l.mac, c, ports)) return true;
    const o = this.#offers.get(c.key);
    return o !== undefined && o.until > now && this.#ownedElsewhere(o.port, o.mac, c, ports);
  }

  #ownedElsewhere(port: string | undefined, mac: number, c: Client, ports: Dhcp6Context['ports']): boolean {
    if (port === c.port && mac === c.mac) return false;
    if (port === undefined) return false;
    if (!c.guarded && ports?.guarded(port) !== true) return false;
    return ports?.live(port) ?? true;
  }

  #cap(c: Client): number {
    if (c.port === undefined || this.#reservation(c) !== undefined) return 0;
    return this.#cfg.maxLeasesPerPort ?? (c.guarded ? DHCP6_DEFAULTS.guardedMaxLeasesPerPort : 0);
  }

  #heldOn(port: string, except: string, now: number): number {
    let n = 0;
    for (const key of this.#store.keysOnPort(port) ?? []) if (key !== except && (this.#store.get(key)?.expiresAt ?? 0) > now) n++;
    for (const [key, o] of this.#offers) {
      if (key === except || o.port !== port || o.until <= now) continue;
      const l = this.#store.get(key);
      if (l === undefined || l.expiresAt <= now || l.port !== port) n++;
    }
    return n;
  }

  #makeRoom(c: Client, now: number): boolean {
    const cap = this.#cap(c);
    if (cap === 0) return true;
    const port = c.port!;
    if (this.#heldOn(port, c.key, now) < cap) return true;
    for (const [key, o] of [...this.#offers]) {
      if (key === c.key || o.port !== port) continue;
      const l = this.#store.get(key);
      if (l !== undefined && l.expiresAt > now && l.port === port) continue;
      this.#dropOffer(key);
      if (o.until <= now) continue;
      this.counters.offersReclaimed++;
      if (this.#heldOn(port, c.key, now) < cap) return true;
    }
    return false;
  }

  #nextFree(c: Client, now: number): number {
    const size = this.#hi - this.#lo + 1;
    for (let i = 1; i <= size; i++) {
      const idx = (this.#cursor + i) % size;
      const ip = this.#lo + idx;
      if (this.#usable(ip, c, now)) {
        this.#cursor = idx;
        return ip;
      }
    }
    return -1;
  }

  #dropOffer(key: string): void {
    const o = this.#offers.get(key);
    if (o === undefined) return;
    this.#offers.delete(key);
    if (this.#offeredIps.get(o.ip) === key) this.#offeredIps.delete(o.ip);
  }

  #expireOffers(now: number): number {
    let n = 0;
    for (const [key, o] of this.#offers) if (o.until <= now) { this.#dropOffer(key); n++; }
    return n;
  }

  #drop(why: Dhcp6Reason): Dhcp6Reason {
    this.counters.dropped[why]++;
    return why;
  }

  /** Expired offers, declines and leases go (each lease through onRemove); returns how many. */
  expire(now: number): number {
    let n = this.#expireOffers(now);
    for (const [ip, until] of this.#declined) if (until <= now) { this.#declined.delete(ip); n++; }
    const gone: Lease[] = [];
    for (const l of this.#store.values()) if (l.expiresAt <= now) gone.push(l);
    for (const l of gone) {
      this.#store.delete(clientKey(l.mac, l.clientId));
      this.#cfg.onRemove?.({ address: this.address(l.ip), mac: l.mac, port: l.port });
      n++;
    }
    if (this.#store.dirty && !this.#store.busy) this.#store.commit();
    return n;
  }

  /** Live leases, offers and declined addresses, for `vswitch dhcp leases`. */
  leases(now: number): Dhcp6LeaseView[] {
    const out: Dhcp6LeaseView[] = [];
    const view = (ip: number, mac: number, clientId: string | undefined, expiresAt: number, state: Dhcp6LeaseView['state'], port?: string): Dhcp6LeaseView => {
      const v: Dhcp6LeaseView = { address: this.address(ip), mac, expiresAt, state };
      if (clientId !== undefined) {
        v.iaid = parseInt(clientId.slice(0, 8), 16);
        v.duid = clientId.slice(8);
      }
      if (port !== undefined) v.port = port;
      return v;
    };
    for (const l of this.#store.values()) {
      if (l.expiresAt <= now) continue;
      const v = view(l.ip, l.mac, l.clientId, l.expiresAt, 'bound', l.port);
      if (l.hostname !== undefined) v.hostname = l.hostname;
      out.push(v);
    }
    for (const [key, o] of this.#offers) {
      if (o.until <= now) continue;
      const l = this.#store.get(key);
      if (l !== undefined && l.ip === o.ip && l.expiresAt > now) continue;
      out.push(view(o.ip, o.mac, o.clientId, o.until, 'offered', o.port));
    }
    for (const [ip, until] of this.#declined) if (until > now) out.push(view(ip, 0, undefined, until, 'declined'));
    return out.sort((a, b) => addrLow(a.address, 0) - addrLow(b.address, 0));
  }

  /** The bound lease on `address` (16 bytes), if any. */
  leaseOf(address: Uint8Array): Lease | undefined {
    return sameBase(address, this.base) ? this.#store.byIp(addrLow(address, 0)) : undefined;
  }
}

function statusText(s: number): string {
  switch (s) {
    case Dhcp6Status.SUCCESS: return 'success';
    case Dhcp6Status.NO_ADDRS_AVAIL: return 'no addresses available';
    case Dhcp6Status.NO_BINDING: return 'no binding';
    case Dhcp6Status.NOT_ON_LINK: return 'not on link';
    default: return '';
  }
}

function equalBytes(buf: Uint8Array, off: number, b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (buf[off + i] !== b[i]) return false;
  return true;
}

function sameBase(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < 12; i++) if (a[i] !== b[i]) return false;
  return true;
}

function sameBaseAt(buf: Uint8Array, off: number, base: Uint8Array): boolean {
  for (let i = 0; i < 12; i++) if (buf[off + i] !== base[i]) return false;
  return true;
}

/** base's first 12 bytes, then `low` as the last 32 bits. */
export function dhcp6Addr(base: Uint8Array, low: number): Uint8Array {
  const a = new Uint8Array(16);
  a.set(base.subarray(0, 12));
  setAddrLow(a, 0, low);
  return a;
}

/** The lease file codec of a DHCPv6 store whose addresses share `base`. */
export function dhcp6Codec(base: Uint8Array): LeaseCodec {
  const b = base.slice(0, 12);
  return {
    file: 'leases6',
    format: (ip) => formatIp6(dhcp6Addr(b, ip)),
    parse: (text) => {
      const a = parseIp6(text);
      if (a === undefined) return -1;
      return sameBase(a, b) ? addrLow(a, 0) : -2;
    },
  };
}
