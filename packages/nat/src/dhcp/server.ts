/*
 * The DHCP server of one router network (RFC 2131, options RFC 2132, RFC 3442,
 * RFC 6842): a pure state machine. `handle` takes one request (the UDP payload),
 * the wall-clock time and the port it came in on, writes the reply into the
 * caller's buffer and returns a descriptor with the RFC 2131 §4.1 addressing; the
 * caller (network.ts) wraps it in UDP/IPv4/Ethernet. No sockets, no timers, no
 * Date.now(): time is `ctx.now`, wall-clock ms (Date.now() in production) so that
 * the lease expiry times it persists mean the same after a restart. A wall clock
 * stepped backwards lengthens leases, stepped forwards shortens them; both are
 * tolerable for DHCP, a restart forgetting leases is not.
 *
 * What it owns: the offers (in memory, held 5 s so that a second client is not
 * offered the same address while the first decides: clients REQUEST within
 * milliseconds, and a REQUEST after the hold is still granted if the address is
 * free), the declined addresses (held 10 min), a bounded memory of the last
 * address of clients whose lease ended (so that they get it back), the bound
 * leases through the LeaseStore (leases.ts), which persists them, and the ACKs
 * waiting for their lease to be on disk.
 *
 * Client identity: option 61 when present, else chaddr (RFC 2131 §4.2); option 61
 * is echoed unchanged in every reply, NAK included (RFC 6842). A static
 * reservation is by chaddr, whatever the client id: a reserved client gets its
 * reserved address and no other, and a reserved address is given to no one else,
 * not even when the pool is exhausted.
 *
 * Lease state, per client (the `state` of the leases view):
 *   (none)   --DISCOVER, address found-->           offered   (hold 5 s)
 *   offered  --REQUEST with our server id-->         bound     (ACKed once on disk)
 *   offered  --REQUEST naming another server, or the hold ends--> (none)
 *   bound    --REQUEST: INIT-REBOOT, RENEWING, REBINDING--> bound (expiry = now + lease time)
 *   bound    --RELEASE, or expiry-->                 (none)    (address remembered for the client)
 *   bound/offered --DECLINE-->                       (none), the address `declined` for 10 min
 * A client has at most one lease and one offer, an address at most one holder.
 *
 * Address choice for a DISCOVER, first that is usable: the client's reservation;
 * its current lease; its current offer; the requested address (option 50); the
 * address it last had; the next free pool address after the last one handed out
 * (next-fit, so a released address is not at once reused by someone else while
 * stale ARP caches still point at the old holder). Usable = inside the subnet, not
 * the server/network/broadcast address, in a pool or reserved for this client,
 * not reserved for another, not declined, not leased or offered to another.
 *
 * REQUEST (RFC 2131 §4.3.2), told apart by server id / ciaddr:
 *   SELECTING (server id): ours -> ACK if the requested address is usable by the
 *     client (normally our offer; a request arriving after the hold ended is still
 *     granted if nobody took the address), else NAK; another server's -> the client
 *     chose it, our offer is withdrawn, silence.
 *   INIT-REBOOT (no server id, no ciaddr, option 50): NAK outside our subnet; if we
 *     have a record of the client (lease, offer, reservation, remembered address):
 *     ACK if it is that address and usable, else NAK; no record: NAK if the address
 *     is someone else's, else silence (the RFC's MUST, so that a second server on
 *     the segment can answer).
 *   RENEWING/REBINDING (ciaddr): ACK if ciaddr is usable by the client (its lease,
 *     or free after the lease expired), else NAK. We are the only server of this
 *     VLAN, so we answer authoritatively in both states.
 * DECLINE is accepted only from the address's holder (lease or offer), so a
 * client cannot blacklist addresses it was never given; RELEASE only for the
 * client's own lease. INFORM gets the network options, no lease options, no
 * yiaddr (RFC 2131 §3.4).
 *
 * Options: 53 first, then 54, lease times 51/58/59 (T1 50 %, T2 87.5 %), 1, 28,
 * 3, 6, 15, 26, 121, 12, 61. Option 121 only to clients that ask for it in 55:
 * RFC 3442 clients then ignore option 3, so a default route via the router is
 * added to the configured routes unless they have one. Replies fit in the
 * client's option 57 (else 576 bytes, RFC 2131 §2) minus IP/UDP headers; an
 * optional option that does not fit is left out, a required one drops the reply.
 *
 * Durable ACKs (group commit, leases.ts): a grant changes the lease in memory at
 * once (so no one else is offered the address) and asks the store for a write;
 * its ACK is then held (`handle` returns 'pending') and handed to the sink
 * (`attach`) once the write covering it is on disk, or dropped ('store_error')
 * if that write failed: no ACK, and no IP source guard binding, without a durable
 * lease. A held ACK whose lease ended meanwhile (RELEASE, DECLINE) is dropped
 * ('lease_gone'). At most 64 ACKs wait per address and 4096 per network; past
 * that a REQUEST is dropped before any work ('ack_backlog': a client pipelining
 * that many is flooding, and the held ACKs go out with the next write). NAK,
 * OFFER and INFORM are sent at once.
 *
 * Ports, and who owns a lease. The caller tells the port a request came in on
 * (`ctx.port`, the bridge port its Ethernet source was learned on), the frame's
 * source MAC, whether that port is guarded (the switch's DHCP/IP source guard:
 * a VM port), and how to ask the same of other ports (`ctx.ports`). A lease, and
 * an offer, belong to (port, chaddr). On a guarded port:
 * - chaddr must be the frame's source MAC ('chaddr_mismatch'), so a VM cannot
 *   speak for another MAC without also sending as it;
 * - a client whose lease or offer belongs to another (port, MAC) is refused:
 *   DISCOVER, RELEASE and DECLINE silently, REQUEST with a NAK ('not_owner'). The
 *   owner's lease, binding and offer are untouched. Takeover (a VM that moved:
 *   live migration, a port re-plugged) is allowed only when the owning port no
 *   longer exists or is down (`ports.live`), never while it is up. The same rule
 *   protects a lease owned on a guarded port from requests on unguarded ones;
 *   between two unguarded ports (trunks, uplinks) a client may move freely, as before.
 * - leases + live offers per port are capped (`maxLeasesPerPort`, default 4 on
 *   guarded ports, none on others; a configured value applies to every port, 0
 *   turns it off). Offers count against the port that asked; a port at its cap
 *   withdraws its own oldest offer to another client ('offersReclaimed') to make
 *   room, so a real client on a flooding port still gets its lease while other
 *   ports are never touched; only when the port's cap is all bound leases is a new
 *   client refused ('port_limit'). Clients with a reservation are exempt.
 * NAKs go to the requester only: IPv4 255.255.255.255 (RFC 2131 §4.1) in an
 * Ethernet frame to the requester's MAC, never a broadcast to the whole VLAN.
 *
 * Hardening: relayed requests (giaddr set) are dropped: the server serves only
 * its own VLAN. Nothing in `handle` throws for any input; every silent outcome is
 * a counted reason.
 *
 * Limits: the pool scan is linear (a pool is capped at 65536 addresses, so a
 * DISCOVER into an exhausted pool costs at most that many map lookups); option
 * overload (52) is not read (see wire.ts).
 */
import { formatIp4 } from '@vswitch/switch';
import {
  BOOTREPLY, BOOTREQUEST, DHCP_DEFAULT_MAX_MESSAGE, DhcpMsg, DhcpWriter, FLAG_BROADCAST, IP_UDP_HLEN, Opt,
  encodeClasslessRoutes, parseDhcp, type ClasslessRoute, type DhcpMessage,
} from './wire.js';
import { LeaseStore, clientKey, type Lease } from './leases.js';

export const DHCP_DEFAULTS = {
  leaseTimeSec: 3600,
  /** How long an offered address is kept for the client it was offered to. */
  offerHoldSec: 5,
  /** How long a declined address is kept out of the pool. */
  declineHoldSec: 600,
  /** Clients whose last address is remembered after release/expiry. */
  rememberMax: 4096,
  /** Largest pool (sum of ranges), bounding the allocation scan. */
  maxPoolSize: 65536,
  /** Leases + offers per guarded port when `maxLeasesPerPort` is not configured. */
  guardedMaxLeasesPerPort: 4,
  /** ACKs waiting for the lease file, per address and per network. */
  pendingPerAddress: 64,
  pendingMax: 4096,
} as const;

export interface DhcpReservation {
  mac: number;
  ip: number;
  /** Sent as option 12 and shown in the leases view. */
  hostname?: string;
}

export interface DhcpServerConfig {
  /** Network name, for messages. */
  name: string;
  /** The gateway address: server id (54), default router. */
  serverIp: number;
  /** Network address and prefix length of the subnet. */
  subnet: number;
  prefixLen: number;
  /** Inclusive [start, end] ranges inside the subnet; the server, network and broadcast addresses are skipped. */
  pools: ReadonlyArray<readonly [number, number]>;
  reservations?: readonly DhcpReservation[];
  leaseTimeSec?: number;
  /** Option 3; default: serverIp. */
  router?: number;
  dns?: readonly number[];
  domain?: string;
  mtu?: number;
  /** Option 121 (RFC 3442), sent to clients that request it. */
  routes?: readonly ClasslessRoute[];
  /**
   * Leases + offers per port. Absent: DHCP_DEFAULTS.guardedMaxLeasesPerPort on
   * guarded ports, no cap elsewhere; a number: that cap on every port; 0: none.
   */
  maxLeasesPerPort?: number;
  /** A bound lease went away (release, decline, expiry): the daemon unbinds it from the port's IP source guard. */
  onRemove?: (lease: { ip: number; mac: number; port?: string }) => void;
  offerHoldSec?: number;
  declineHoldSec?: number;
}

export class DhcpConfigError extends Error {
  readonly code = 'EDHCPCONFIG';
}

export interface DhcpContext {
  /** Wall-clock ms (Date.now()). */
  now: number;
  /** The bridge port the request came in on: leases and offers are recorded on it. */
  port?: string;
  /** The Ethernet source MAC of the request's frame: NAKs go there; on a guarded port chaddr must be it. */
  srcMac?: number;
  /** `port` is guarded (a VM port): chaddr checked, ownership enforced, the default per-port cap. */
  guarded?: boolean;
  /** Facts about the ports leases are owned by; absent, every owning port counts as unguarded and up. */
  ports?: DhcpPorts;
}

/** What the ownership rule asks about a lease's port (the caller's bridge). */
export interface DhcpPorts {
  /** The port's switch guard is active. */
  guarded(port: string): boolean;
  /** The port exists and is up (a lease on a port that is gone or down may be taken over). */
  live(port: string): boolean;
}

/** Where held ACKs go once their lease is on disk, and what the server has to report. */
export interface DhcpSink {
  /** Send `reply`; `payload` is the DHCP message (UDP payload), a copy the sink may keep. */
  deliver(reply: DhcpReply, payload: Uint8Array): void;
  /** A lease-file write failed (every failure; the sink bounds how often it logs). */
  storeFailed?(err: Error): void;
}

/** What the caller needs to send the reply (RFC 2131 §4.1). */
export interface DhcpReply {
  /** DhcpMsg.OFFER, ACK or NAK. */
  type: number;
  /** Bytes written at out[outOff..]. */
  payloadLen: number;
  yiaddr: number;
  /** ciaddr of the request (0 if none). */
  ciaddr: number;
  chaddr: number;
  /**
   * Send to IPv4 255.255.255.255: a NAK (in a frame to the requester's MAC only), or
   * a client without an address that set the broadcast flag (Ethernet broadcast).
   */
  broadcast: boolean;
  /** The resolved destination: ciaddr if set, else broadcast, else yiaddr (at chaddr). */
  dstIp: number;
  dstMac: number;
  /** Our address: the IPv4 source, port 67 -> 68. */
  srcIp: number;
}

/** Why a request got no reply, or a NAK: a closed set, also the metric `reason` label. */
export const DHCP_REASONS = [
  'malformed',        // parseDhcp refused it
  'not_request',      // op BOOTREPLY: another server's reply
  'bad_chaddr',       // chaddr zero or a group address
  'relayed',          // giaddr set: relays are not served
  'unsupported_type', // OFFER/ACK/NAK or an unknown message type sent to us
  'bad_request',      // a REQUEST/DECLINE without the address it must carry
  'wrong_server',     // server id names another server (the client chose it)
  'pool_exhausted',   // no free address to offer or grant
  'port_limit',       // the port has maxLeasesPerPort leases + offers
  'address_declined', // the client's reserved address is declined (held)
  'no_record',        // INIT-REBOOT, RELEASE or DECLINE from a client we know nothing about
  'wrong_subnet',     // requested address / ciaddr not in our subnet
  'address_taken',    // requested address is someone else's, or reserved for someone else
  'not_allowed',      // requested address is not one we may give this client
  'no_room',          // the reply does not fit the caller's buffer
  'store_error',      // the lease could not be written: no ACK without a durable lease
  'chaddr_mismatch',  // guarded port: chaddr is not the frame's Ethernet source
  'not_owner',        // the client's lease or offer belongs to another port or MAC, whose port is up
  'lease_gone',       // a held ACK whose lease ended (release, decline) before it was on disk
  'ack_backlog',      // too many ACKs already wait for the lease file (64 per address, 4096 per network)
] as const;
export type DhcpReason = (typeof DHCP_REASONS)[number];

export interface DhcpCounters {
  discovers: number;
  offers: number;
  requests: number;
  acks: number;
  naks: number;
  declines: number;
  releases: number;
  informs: number;
  /** Silent outcomes by reason. */
  dropped: Record<DhcpReason, number>;
  /** NAKs by reason. */
  nakReasons: Record<DhcpReason, number>;
  /** Failed lease-file writes (an ACK they held is counted in dropped.store_error). */
  storeErrors: number;
  /** Offers withdrawn to make room on a port at its cap. */
  offersReclaimed: number;
}

/**
 * `handle` without a reply now: 'handled' (RELEASE, DECLINE), 'pending' (an ACK
 * held until its lease is on disk, then given to the sink), or why it was dropped.
 */
export type DhcpNoReply = 'handled' | 'pending' | DhcpReason;
export type DhcpResult = DhcpReply | DhcpNoReply;

export type DhcpLeaseState = 'bound' | 'offered' | 'declined';

export interface DhcpLeaseView {
  ip: number;
  /** 0 for a declined address. */
  mac: number;
  clientId?: string;
  hostname?: string;
  /** Wall-clock ms: lease expiry, offer or decline hold end. */
  expiresAt: number;
  state: DhcpLeaseState;
  port?: string;
}

interface Offer {
  ip: number;
  mac: number;
  clientId?: string;
  hostname?: string;
  until: number;
  port?: string;
}

/** Who is asking: identity and the details a lease records. */
interface Client {
  key: string;
  mac: number;
  clientId?: string;
  clientIdBytes?: Uint8Array;
  hostname?: string;
  port?: string;
  /** The frame's source MAC (else chaddr): where a NAK goes. */
  replyMac: number;
  guarded: boolean;
}

/** An ACK waiting for the lease-file write of `version`. */
interface HeldAck {
  key: string;
  version: number;
  reply: DhcpReply;
  payload: Uint8Array;
}

const BROADCAST_IP = 0xffffffff;
const BROADCAST_MAC = 0xffffffffffff;

function zeroReasons(): Record<DhcpReason, number> {
  return Object.fromEntries(DHCP_REASONS.map((r) => [r, 0])) as Record<DhcpReason, number>;
}

export function newDhcpCounters(): DhcpCounters {
  return {
    discovers: 0, offers: 0, requests: 0, acks: 0, naks: 0, declines: 0, releases: 0, informs: 0,
    dropped: zeroReasons(), nakReasons: zeroReasons(), storeErrors: 0, offersReclaimed: 0,
  };
}

/** Keeps hostnames printable for `vswitch dhcp leases` and the lease file: [A-Za-z0-9._-], at most 63. */
export function sanitizeHostname(s: string | undefined): string | undefined {
  if (s === undefined) return undefined;
  const t = s.replace(/[^A-Za-z0-9._-]/g, '').slice(0, 63);
  return t.length > 0 ? t : undefined;
}

const prefixMask = (len: number): number => (len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0);

export class DhcpServer {
  readonly counters: DhcpCounters = newDhcpCounters();

  #cfg: DhcpServerConfig;
  readonly #store: LeaseStore;
  readonly #mask: number;
  readonly #broadcastIp: number;
  readonly #ranges: Array<readonly [number, number]>;
  #poolSize: number;
  #leaseMs: number;
  #offerHoldMs: number;
  #declineHoldMs: number;
  #router: number;
  #routes121: Uint8Array | undefined;
  readonly #resByMac = new Map<number, DhcpReservation>();
  readonly #resByIp = new Map<number, DhcpReservation>();
  readonly #offers = new Map<string, Offer>();
  readonly #offeredIps = new Map<number, string>();
  /** Offer keys by the port that asked, oldest first. */
  readonly #offersByPort = new Map<string, Set<string>>();
  /** ACKs waiting for their lease write, in version order. */
  #held: HeldAck[] = [];
  readonly #heldPerIp = new Map<number, number>();
  #sink: DhcpSink | undefined;
  #closed = false;
  readonly #declined = new Map<number, number>();
  readonly #remembered = new Map<string, number>();
  /** Index into the flattened pool of the last address handed out. */
  #cursor = -1;

  /**
   * Validates the config (throws DhcpConfigError) and reconciles the loaded
   * leases with it: a lease the config no longer allows (outside the subnet or
   * the pools, or on an address now reserved for another client) is dropped, and
   * its client is NAKed when it next asks.
   */
  constructor(config: DhcpServerConfig, store: LeaseStore, now: number) {
    this.#cfg = config;
    this.#store = store;
    const c = config;
    const bad = (why: string): never => { throw new DhcpConfigError(`DHCP network ${c.name}: ${why}`); };
    if (!Number.isInteger(c.prefixLen) || c.prefixLen < 1 || c.prefixLen > 30) bad(`prefix length ${c.prefixLen} not in 1..30`);
    this.#mask = prefixMask(c.prefixLen);
    if (((c.subnet & this.#mask) >>> 0) !== c.subnet) bad(`${formatIp4(c.subnet)}/${c.prefixLen} has host bits set`);
    this.#broadcastIp = (c.subnet | ~this.#mask) >>> 0;
    if (!this.#inSubnet(c.serverIp) || this.#special(c.serverIp, true)) bad(`server address ${formatIp4(c.serverIp)} is not a host of the subnet`);
    this.#ranges = [];
    let size = 0;
    for (const [start, end] of c.pools) {
      if (!(start <= end) || !this.#inSubnet(start) || !this.#inSubnet(end)) {
        bad(`pool ${formatIp4(start)}-${formatIp4(end)} is not a range inside ${formatIp4(c.subnet)}/${c.prefixLen}`);
      }
      for (const [s, e] of this.#ranges) if (start <= e && s <= end) bad(`pool ${formatIp4(start)}-${formatIp4(end)} overlaps another`);
      this.#ranges.push([start, end]);
      size += end - start + 1;
    }
    if (size > DHCP_DEFAULTS.maxPoolSize) bad(`pools hold ${size} addresses, more than ${DHCP_DEFAULTS.maxPoolSize}`);
    this.#poolSize = size;
    for (const r of c.reservations ?? []) {
      if (!this.#inSubnet(r.ip) || this.#special(r.ip)) bad(`reservation ${formatIp4(r.ip)} is not a host address of the subnet`);
      if (this.#resByMac.has(r.mac)) bad(`two reservations for one MAC (${formatIp4(r.ip)})`);
      if (this.#resByIp.has(r.ip)) bad(`${formatIp4(r.ip)} is reserved twice`);
      this.#resByMac.set(r.mac, r);
      this.#resByIp.set(r.ip, r);
    }
    const leaseSec = c.leaseTimeSec ?? DHCP_DEFAULTS.leaseTimeSec;
    if (!Number.isInteger(leaseSec) || leaseSec < 60 || leaseSec > 0x7fffffff) bad(`lease time ${leaseSec} s not in 60..2^31-1`);
    this.#leaseMs = leaseSec * 1000;
    this.#offerHoldMs = (c.offerHoldSec ?? DHCP_DEFAULTS.offerHoldSec) * 1000;
    this.#declineHoldMs = (c.declineHoldSec ?? DHCP_DEFAULTS.declineHoldSec) * 1000;
    this.#router = c.router ?? c.serverIp;
    if (c.mtu !== undefined && (!Number.isInteger(c.mtu) || c.mtu < 68 || c.mtu > 65535)) bad(`MTU ${c.mtu} not in 68..65535`);
    if ((c.dns?.length ?? 0) > 63) bad('more than 63 DNS servers');
    if (c.domain !== undefined && !/^[A-Za-z0-9.-]{1,255}$/.test(c.domain)) bad(`domain ${JSON.stringify(c.domain)} is not a domain name`);
    if (c.routes !== undefined && c.routes.length > 0) {
      for (const r of c.routes) {
        if (!Number.isInteger(r.prefixLen) || r.prefixLen < 0 || r.prefixLen > 32 ||
            ((r.dest & prefixMask(r.prefixLen)) >>> 0) !== r.dest) bad(`route ${formatIp4(r.dest)}/${r.prefixLen} is not a network`);
      }
      const routes = c.routes.some((r) => r.prefixLen === 0)
        ? c.routes
        : [...c.routes, { dest: 0, prefixLen: 0, gateway: this.#router }];
      this.#routes121 = encodeClasslessRoutes(routes);
      if (this.#routes121.length > 255) bad('classless static routes do not fit one option (255 bytes)');
    }
    if (c.maxLeasesPerPort !== undefined && (!Number.isInteger(c.maxLeasesPerPort) || c.maxLeasesPerPort < 0)) bad('maxLeasesPerPort must be an integer >= 0');

    for (const l of [...store.values()]) {
      const res = this.#resByIp.get(l.ip);
      const ok = this.#inSubnet(l.ip) && !this.#special(l.ip) &&
        (res !== undefined ? res.mac === l.mac : this.#inPool(l.ip) && !this.#resByMac.has(l.mac));
      if (!ok || l.expiresAt <= now) store.delete(clientKey(l.mac, l.clientId));
    }
    store.onSettled = (ok, version, err) => this.#settled(ok, version, err);
    store.commit();
  }

  get config(): Readonly<DhcpServerConfig> { return this.#cfg; }
  get poolSize(): number { return this.#poolSize; }
  /** Lease-file writes done (group commit: far fewer than the grants they cover). */
  get leaseWrites(): number { return this.#store.writes; }
  /** ACKs waiting for their lease to be on disk. */
  get pendingAcks(): number { return this.#held.length; }

  /** Resolves once every lease change so far is on disk and the ACKs it held are sent (tests, tools). */
  flush(): Promise<void> {
    return this.#store.flush();
  }

  /** Where held ACKs go once durable (the router network), and where store failures are reported. */
  attach(sink: DhcpSink): void {
    this.#sink = sink;
  }

  /** The per-port caps in force, for `router show`: null = none. */
  policy(): { maxLeasesPerPort: { guarded: number | null; unguarded: number | null }; offerHoldSec: number } {
    const max = this.#cfg.maxLeasesPerPort;
    const cap = (guarded: boolean): number | null => {
      const n = max ?? (guarded ? DHCP_DEFAULTS.guardedMaxLeasesPerPort : 0);
      return n === 0 ? null : n;
    };
    return { maxLeasesPerPort: { guarded: cap(true), unguarded: cap(false) }, offerHoldSec: this.#offerHoldMs / 1000 };
  }

  /**
   * Writes what the lease file still lacks, synchronously, and sends the ACKs that
   * were waiting for it (or drops them if it fails): the router is going away.
   */
  /** Writes the lease file now (LeaseStore.sync): before a reload opens it in a new server. Throws if that fails. */
  sync(): void {
    if (!this.#closed) this.#store.sync();
  }

  /** Closes without writing and without sending what is held (a server a refused reload prepared). */
  discard(): void {
    this.#closed = true;
    this.#store.discard();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#store.close();
    } catch { /* counted and reported through #settled */ }
  }

  /**
   * One request: buf[off..off+len) is the UDP payload. A reply is written at
   * out[outOff..] (at most out.length - outOff bytes, and what the client accepts).
   */
  handle(buf: Uint8Array, off: number, len: number, out: Uint8Array, outOff: number, ctx: DhcpContext): DhcpResult {
    const m = parseDhcp(buf, off, len);
    if (typeof m === 'number') return this.#drop('malformed');
    if (m.op !== BOOTREQUEST) return this.#drop('not_request');
    const mac = m.chaddr;
    if (mac === 0 || Math.floor(mac / 0x10000000000) & 1) return this.#drop('bad_chaddr');
    if (m.giaddr !== 0) return this.#drop('relayed');
    const guarded = ctx.guarded === true && ctx.port !== undefined;
    if (guarded && ctx.srcMac !== undefined && ctx.srcMac !== mac) return this.#drop('chaddr_mismatch');
    const clientId = m.clientId;
    const client: Client = {
      key: clientKey(mac, clientId), mac, clientId, clientIdBytes: m.clientIdBytes,
      hostname: sanitizeHostname(m.hostname), port: ctx.port, replyMac: ctx.srcMac ?? mac, guarded,
    };
    const now = ctx.now;
    if (m.messageType !== DhcpMsg.INFORM && this.#foreign(client, now, ctx.ports)) {
      this.#counted(m.messageType);
      // A REQUEST to our server gets its NAK (to the requester only); the rest, silence.
      const toUs = m.messageType === DhcpMsg.REQUEST && (m.serverId === undefined || m.serverId === this.#cfg.serverIp);
      return toUs ? this.#nak(m, client, 'not_owner', out, outOff) : this.#drop('not_owner');
    }
    switch (m.messageType) {
      case DhcpMsg.DISCOVER: return this.#discover(m, client, now, out, outOff);
      case DhcpMsg.REQUEST: return this.#request(m, client, now, out, outOff);
      case DhcpMsg.DECLINE: return this.#decline(m, client, now);
      case DhcpMsg.RELEASE: return this.#release(m, client);
      case DhcpMsg.INFORM: return this.#inform(m, client, out, outOff);
      default: return this.#drop('unsupported_type');
    }
  }

  /**
   * Removes expired leases, offers and declines, remembering the addresses of
   * expired leases. Returns how many entries went; writes the lease file if a lease did.
   */
  expire(now: number): number {
    let n = 0;
    for (const [key, o] of this.#offers) if (o.until <= now) { this.#dropOffer(key); n++; }
    for (const [ip, until] of this.#declined) if (until <= now) { this.#declined.delete(ip); n++; }
    const gone: Lease[] = [];
    for (const l of this.#store.values()) if (l.expiresAt <= now) gone.push(l);
    for (const l of gone) {
      const key = clientKey(l.mac, l.clientId);
      this.#store.delete(key);
      this.#remember(key, l.ip);
      this.#cfg.onRemove?.(l);
      n++;
    }
    // Expired leases, and a write that failed earlier (retried once a second while it keeps failing).
    if (this.#store.dirty && !this.#store.busy) this.#store.commit();
    return n;
  }

  /** The bound lease of `mac` on `ip`, if any (its port and expiry). */
  lease(mac: number, ip: number): { port?: string; expiresAt: number } | undefined {
    const l = this.#store.byIp(ip);
    return l !== undefined && l.mac === mac ? l : undefined;
  }

  /** The earliest expiry of anything held (ms), or Infinity: when to call expire() next. */
  nextExpiry(): number {
    let t = Infinity;
    for (const o of this.#offers.values()) t = Math.min(t, o.until);
    for (const until of this.#declined.values()) t = Math.min(t, until);
    for (const l of this.#store.values()) t = Math.min(t, l.expiresAt);
    return t;
  }

  /** For `vswitch dhcp leases`: live leases, offers and declined addresses at `now`, by address. */
  leases(now: number): DhcpLeaseView[] {
    const out: DhcpLeaseView[] = [];
    for (const l of this.#store.values()) {
      if (l.expiresAt <= now) continue;
      const v: DhcpLeaseView = { ip: l.ip, mac: l.mac, expiresAt: l.expiresAt, state: 'bound' };
      const hostname = this.#resByMac.get(l.mac)?.hostname ?? l.hostname;
      if (l.clientId !== undefined) v.clientId = l.clientId;
      if (hostname !== undefined) v.hostname = hostname;
      if (l.port !== undefined) v.port = l.port;
      out.push(v);
    }
    for (const [key, o] of this.#offers) {
      if (o.until <= now) continue;
      const l = this.#store.get(key);
      if (l !== undefined && l.ip === o.ip && l.expiresAt > now) continue; // a bound client re-discovering
      const v: DhcpLeaseView = { ip: o.ip, mac: o.mac, expiresAt: o.until, state: 'offered' };
      if (o.clientId !== undefined) v.clientId = o.clientId;
      if (o.hostname !== undefined) v.hostname = o.hostname;
      if (o.port !== undefined) v.port = o.port;
      out.push(v);
    }
    for (const [ip, until] of this.#declined) {
      if (until > now) out.push({ ip, mac: 0, expiresAt: until, state: 'declined' });
    }
    return out.sort((a, b) => a.ip - b.ip || a.state.localeCompare(b.state));
  }

  // --- messages ---------------------------------------------------------------

  #discover(m: DhcpMessage, c: Client, now: number, out: Uint8Array, outOff: number): DhcpResult {
    this.counters.discovers++;
    const ip = this.#choose(m, c, now);
    if (typeof ip === 'string') return this.#drop(ip);
    this.#dropOffer(c.key);
    const holder = this.#offeredIps.get(ip);
    if (holder !== undefined) this.#dropOffer(holder); // an expired offer to someone else
    const offer: Offer = { ip, mac: c.mac, until: now + this.#offerHoldMs };
    if (c.clientId !== undefined) offer.clientId = c.clientId;
    if (c.hostname !== undefined) offer.hostname = c.hostname;
    if (c.port !== undefined) {
      offer.port = c.port;
      let keys = this.#offersByPort.get(c.port);
      if (keys === undefined) this.#offersByPort.set(c.port, keys = new Set());
      keys.add(c.key);
    }
    this.#offers.set(c.key, offer);
    this.#offeredIps.set(ip, c.key);
    const r = this.#reply(m, c, DhcpMsg.OFFER, ip, out, outOff);
    if (typeof r !== 'string') this.counters.offers++;
    return r;
  }

  #request(m: DhcpMessage, c: Client, now: number, out: Uint8Array, outOff: number): DhcpResult {
    this.counters.requests++;
    const sid = m.serverId;
    const ciaddr = m.ciaddr;
    if (sid !== undefined && sid !== this.#cfg.serverIp) {
      // SELECTING, and the client chose another server: free what we offered.
      if (this.#offers.has(c.key)) this.#dropOffer(c.key);
      return this.#drop('wrong_server');
    }
    if (sid !== undefined) {
      // SELECTING: RFC 2131 puts the address in option 50; some old clients use ciaddr.
      const ip = m.requestedIp ?? ciaddr;
      if (ip === 0) return this.#drop('bad_request');
      return this.#grant(m, c, ip, now, out, outOff);
    }
    if (ciaddr === 0) {
      // INIT-REBOOT
      const ip = m.requestedIp;
      if (ip === undefined || ip === 0) return this.#drop('bad_request');
      if (!this.#inSubnet(ip)) return this.#nak(m, c, 'wrong_subnet', out, outOff);
      const known = this.#recordOf(c, now);
      if (known === undefined) {
        const res = this.#resByIp.get(ip);
        if ((res !== undefined && res.mac !== c.mac) || this.#holder(ip, now) !== undefined) {
          return this.#nak(m, c, 'address_taken', out, outOff);
        }
        return this.#drop('no_record');
      }
      if (known !== ip) return this.#nak(m, c, 'not_allowed', out, outOff);
      return this.#grant(m, c, ip, now, out, outOff);
    }
    // RENEWING (unicast) or REBINDING (broadcast): the same answer from the only server.
    if (!this.#inSubnet(ciaddr)) return this.#nak(m, c, 'wrong_subnet', out, outOff);
    return this.#grant(m, c, ciaddr, now, out, outOff);
  }

  #decline(m: DhcpMessage, c: Client, now: number): DhcpResult {
    this.counters.declines++;
    const sid = m.serverId;
    if (sid !== undefined && sid !== this.#cfg.serverIp) return this.#drop('wrong_server');
    const ip = m.requestedIp;
    if (ip === undefined) return this.#drop('bad_request');
    const lease = this.#store.get(c.key);
    const offer = this.#offers.get(c.key);
    const holds = (lease !== undefined && lease.ip === ip) || (offer !== undefined && offer.ip === ip);
    if (!holds) return this.#drop('no_record');
    if (offer !== undefined && offer.ip === ip) this.#dropOffer(c.key);
    this.#declined.set(ip, now + this.#declineHoldMs);
    if (lease !== undefined && lease.ip === ip) {
      this.#store.delete(c.key);
      this.#store.commit(); // not waited for: the next write covers it
      this.#cfg.onRemove?.(lease);
    }
    // Someone else uses this address: pointing the client back at it would only repeat the conflict.
    if (this.#remembered.get(c.key) === ip) this.#remembered.delete(c.key);
    return 'handled';
  }

  #release(m: DhcpMessage, c: Client): DhcpResult {
    this.counters.releases++;
    const sid = m.serverId;
    if (sid !== undefined && sid !== this.#cfg.serverIp) return this.#drop('wrong_server');
    const lease = this.#store.get(c.key);
    if (lease === undefined || lease.ip !== m.ciaddr) return this.#drop('no_record');
    this.#store.delete(c.key);
    this.#remember(c.key, lease.ip);
    this.#store.commit(); // not waited for: the next write covers it
    this.#cfg.onRemove?.(lease);
    return 'handled';
  }

  #inform(m: DhcpMessage, c: Client, out: Uint8Array, outOff: number): DhcpResult {
    this.counters.informs++;
    const r = this.#reply(m, c, DhcpMsg.ACK, 0, out, outOff);
    if (typeof r !== 'string') this.counters.acks++;
    return r;
  }

  // --- decisions --------------------------------------------------------------

  /** The address to offer, or why there is none. */
  #choose(m: DhcpMessage, c: Client, now: number): number | DhcpReason {
    const res = this.#resByMac.get(c.mac);
    if (res !== undefined) return this.#usable(res.ip, c, now) ? res.ip : 'address_declined';
    for (const ip of [this.#store.get(c.key)?.ip, this.#offers.get(c.key)?.ip]) {
      if (ip !== undefined && this.#usable(ip, c, now)) return ip;
    }
    // From here on the client would take an address it does not hold yet.
    if (!this.#makeRoom(c, now)) return 'port_limit';
    for (const ip of [m.requestedIp, this.#remembered.get(c.key)]) {
      if (ip !== undefined && this.#usable(ip, c, now)) return ip;
    }
    return this.#nextFree(c, now) ?? 'pool_exhausted';
  }

  /** Binds `ip` to the client and ACKs, or NAKs why not. */
  #grant(m: DhcpMessage, c: Client, ip: number, now: number, out: Uint8Array, outOff: number): DhcpResult {
    if (!this.#roomToHold(ip)) return this.#drop('ack_backlog');
    if (!this.#usable(ip, c, now)) {
      const why = this.#whyNot(ip, c, now);
      return this.#nak(m, c, why, out, outOff);
    }
    const existing = this.#store.get(c.key);
    const hasOffer = this.#offers.get(c.key)?.ip === ip;
    const holds = existing !== undefined && existing.expiresAt > now && existing.port === c.port;
    if (!holds && !hasOffer && !this.#makeRoom(c, now)) {
      return this.#nak(m, c, 'port_limit', out, outOff);
    }
    const lease: Lease = { ip, mac: c.mac, expiresAt: now + this.#leaseMs };
    if (c.clientId !== undefined) lease.clientId = c.clientId;
    const hostname = c.hostname ?? (existing?.ip === ip ? existing.hostname : undefined);
    if (hostname !== undefined) lease.hostname = hostname;
    const port = c.port ?? existing?.port;
    if (port !== undefined) lease.port = port;
    if (this.#offers.has(c.key)) this.#dropOffer(c.key);
    const otherOffer = this.#offeredIps.get(ip);
    if (otherOffer !== undefined) this.#dropOffer(otherOffer); // expired, or #usable would have said no
    this.#store.set(lease);
    this.#remembered.delete(c.key);
    const version = this.#store.commit();
    const r = this.#reply(m, c, DhcpMsg.ACK, ip, out, outOff);
    if (typeof r === 'string') return r;
    if (version <= this.#store.durableVersion) {
      this.counters.acks++;
      return r;
    }
    // A store that is not writing now will not write this version: its write failed.
    if (!this.#store.busy) return this.#drop('store_error');
    // A copy: `out` is the caller's, reused for the next request (and Buffer#slice would not copy).
    const payload = new Uint8Array(r.payloadLen);
    payload.set(out.subarray(outOff, outOff + r.payloadLen));
    this.#hold(c.key, version, r, payload);
    return 'pending';
  }

  /** May `ip` be given to client `c` now? */
  #usable(ip: number, c: Pick<Client, 'key' | 'mac'>, now: number): boolean {
    if (!this.#inSubnet(ip) || this.#special(ip)) return false;
    const res = this.#resByIp.get(ip);
    if (res !== undefined) {
      if (res.mac !== c.mac) return false;
    } else {
      if (!this.#inPool(ip)) return false;
      if (this.#resByMac.has(c.mac)) return false; // a reserved client gets its reservation only
    }
    const declined = this.#declined.get(ip);
    if (declined !== undefined && declined > now) return false;
    const holder = this.#holder(ip, now);
    return holder === undefined || holder === c.key;
  }

  #whyNot(ip: number, c: Client, now: number): DhcpReason {
    if (!this.#inSubnet(ip)) return 'wrong_subnet';
    const res = this.#resByIp.get(ip);
    if (res !== undefined && res.mac !== c.mac) return 'address_taken';
    const holder = this.#holder(ip, now);
    if (holder !== undefined && holder !== c.key) return 'address_taken';
    const declined = this.#declined.get(ip);
    if (declined !== undefined && declined > now) return 'address_declined';
    return 'not_allowed';
  }

  /** The client key holding `ip` by a live lease or offer. */
  #holder(ip: number, now: number): string | undefined {
    const l = this.#store.byIp(ip);
    if (l !== undefined && l.expiresAt > now) return clientKey(l.mac, l.clientId);
    const okey = this.#offeredIps.get(ip);
    if (okey !== undefined && (this.#offers.get(okey)?.until ?? 0) > now) return okey;
    return undefined;
  }

  /** The address we associate with the client (INIT-REBOOT's "record"), if any. */
  #recordOf(c: Client, now: number): number | undefined {
    const res = this.#resByMac.get(c.mac);
    if (res !== undefined) return res.ip;
    const l = this.#store.get(c.key);
    if (l !== undefined) return l.ip; // expired but not yet swept still counts: the client's last address
    const o = this.#offers.get(c.key);
    if (o !== undefined && o.until > now) return o.ip;
    return this.#remembered.get(c.key);
  }

  /**
   * Is the client's lease or offer someone else's (see the header: another port or
   * MAC, a guarded side, and the owning port still there and up)?
   */
  #foreign(c: Client, now: number, ports: DhcpPorts | undefined): boolean {
    const l = this.#store.get(c.key);
    if (l !== undefined && l.expiresAt > now && this.#ownedElsewhere(l.port, l.mac, c, ports)) return true;
    const o = this.#offers.get(c.key);
    return o !== undefined && o.until > now && this.#ownedElsewhere(o.port, o.mac, c, ports);
  }

  #ownedElsewhere(port: string | undefined, mac: number, c: Client, ports: DhcpPorts | undefined): boolean {
    if (port === c.port && mac === c.mac) return false;
    if (port === undefined) return false; // recorded without a port: no owner to protect
    if (!c.guarded && ports?.guarded(port) !== true) return false; // trunks, uplinks: clients move freely
    return ports?.live(port) ?? true;
  }

  /** The cap on leases + offers for the client's port, or 0 for none. */
  #portCap(c: Client): number {
    if (c.port === undefined || this.#resByMac.has(c.mac)) return 0;
    return this.#cfg.maxLeasesPerPort ?? (c.guarded ? DHCP_DEFAULTS.guardedMaxLeasesPerPort : 0);
  }

  /** Live leases and offers of other clients on `port` (a client's own lease and re-offer count once). */
  #heldOn(port: string, except: string, now: number): number {
    let n = 0;
    for (const key of this.#store.keysOnPort(port) ?? []) {
      if (key !== except && (this.#store.get(key)?.expiresAt ?? 0) > now) n++;
    }
    for (const key of this.#offersByPort.get(port) ?? []) {
      if (key === except || (this.#offers.get(key)?.until ?? 0) <= now) continue;
      const l = this.#store.get(key);
      if (l === undefined || l.expiresAt <= now || l.port !== port) n++;
    }
    return n;
  }

  /**
   * May the client take one more address on its port? At the cap, the port's own
   * oldest offers to other clients are withdrawn to make room; bound leases never are.
   */
  #makeRoom(c: Client, now: number): boolean {
    const cap = this.#portCap(c);
    if (cap === 0) return true;
    const port = c.port!;
    if (this.#heldOn(port, c.key, now) < cap) return true;
    for (const key of [...(this.#offersByPort.get(port) ?? [])]) {
      if (key === c.key) continue;
      const l = this.#store.get(key);
      if (l !== undefined && l.expiresAt > now && l.port === port) continue; // a bound client's re-offer: not what fills the port
      const live = (this.#offers.get(key)?.until ?? 0) > now;
      this.#dropOffer(key);
      if (!live) continue;
      this.counters.offersReclaimed++;
      if (this.#heldOn(port, c.key, now) < cap) return true;
    }
    return false;
  }

  #nextFree(c: Client, now: number): number | undefined {
    for (let i = 1; i <= this.#poolSize; i++) {
      const idx = (this.#cursor + i) % this.#poolSize;
      const ip = this.#poolAt(idx);
      if (this.#usable(ip, c, now)) {
        this.#cursor = idx;
        return ip;
      }
    }
    return undefined;
  }

  #poolAt(idx: number): number {
    for (const [s, e] of this.#ranges) {
      const n = e - s + 1;
      if (idx < n) return s + idx;
      idx -= n;
    }
    return -1;
  }

  // --- replies ----------------------------------------------------------------

  #nak(m: DhcpMessage, c: Client, why: DhcpReason, out: Uint8Array, outOff: number): DhcpResult {
    this.counters.nakReasons[why]++;
    return this.#reply(m, c, DhcpMsg.NAK, 0, out, outOff);
  }

  #reply(m: DhcpMessage, c: Client, type: number, yiaddr: number, out: Uint8Array, outOff: number): DhcpResult {
    const cfg = this.#cfg;
    const max = (m.maxMessageSize ?? DHCP_DEFAULT_MAX_MESSAGE) - IP_UDP_HLEN;
    const w = new DhcpWriter(out, outOff, Math.min(max, out.length - outOff));
    const inform = m.messageType === DhcpMsg.INFORM;
    const nak = type === DhcpMsg.NAK;
    // RFC 2131 table 3: ciaddr echoed in an ACK (0 in OFFER/NAK), flags and giaddr from the client.
    const ciaddr = type === DhcpMsg.ACK ? m.ciaddr : 0;
    if (!w.header({
      op: BOOTREPLY, xid: m.xid, flags: m.flags, ciaddr, yiaddr, siaddr: 0, giaddr: m.giaddr, chaddr: c.mac,
    })) return this.#drop('no_room');
    let ok = w.u8(Opt.MESSAGE_TYPE, type) && w.u32(Opt.SERVER_ID, cfg.serverIp);
    if (!nak) {
      if (!inform) {
        const sec = this.#leaseMs / 1000;
        ok = ok && w.u32(Opt.LEASE_TIME, sec) && w.u32(Opt.RENEWAL_TIME, Math.floor(sec / 2)) &&
          w.u32(Opt.REBINDING_TIME, Math.floor((sec * 7) / 8));
      }
      ok = ok && w.u32(Opt.SUBNET_MASK, this.#mask);
      w.u32(Opt.BROADCAST, this.#broadcastIp);
      w.ips(Opt.ROUTER, [this.#router]);
      if (cfg.dns !== undefined && cfg.dns.length > 0) w.ips(Opt.DNS, cfg.dns);
      if (cfg.domain !== undefined) w.text(Opt.DOMAIN, cfg.domain);
      if (cfg.mtu !== undefined) w.u16(Opt.MTU, cfg.mtu);
      if (this.#routes121 !== undefined && m.parameterRequestList?.includes(Opt.CLASSLESS_ROUTES)) {
        w.option(Opt.CLASSLESS_ROUTES, this.#routes121);
      }
      const resHost = this.#resByMac.get(c.mac)?.hostname;
      if (resHost !== undefined && !inform) w.text(Opt.HOSTNAME, resHost);
    }
    // RFC 6842: the client identifier goes back unaltered.
    if (c.clientIdBytes !== undefined) ok = ok && w.option(Opt.CLIENT_ID, c.clientIdBytes);
    if (!ok) return this.#drop('no_room');
    const payloadLen = w.finish();
    if (nak) this.counters.naks++;
    // RFC 2131 §4.1 with giaddr 0: NAK to 255.255.255.255, but in a frame to the
    // requester alone (the VLAN has no business seeing it); ciaddr set -> unicast
    // there; else broadcast if the client asked or has no address to be reached at,
    // else yiaddr at chaddr.
    const broadcast = nak || (m.ciaddr === 0 && ((m.flags & FLAG_BROADCAST) !== 0 || yiaddr === 0));
    const dstIp = broadcast ? BROADCAST_IP : m.ciaddr !== 0 ? m.ciaddr : yiaddr;
    const dstMac = nak ? c.replyMac : broadcast ? BROADCAST_MAC : c.mac;
    return { type, payloadLen, yiaddr, ciaddr: m.ciaddr, chaddr: c.mac, broadcast, dstIp, dstMac, srcIp: cfg.serverIp };
  }

  // --- state helpers ----------------------------------------------------------

  /**
   * Is there room to hold one more ACK for `ip`? Checked before a grant does any
   * work: past the bound the newest request is the one dropped, since the held ones
   * are those the write in flight will release first (dropping the oldest instead
   * would, under a flood, drop every ACK just before its write completed).
   */
  #roomToHold(ip: number): boolean {
    return (this.#heldPerIp.get(ip) ?? 0) < DHCP_DEFAULTS.pendingPerAddress && this.#held.length < DHCP_DEFAULTS.pendingMax;
  }

  /** Queues an ACK until the lease write of `version` settles (#roomToHold said yes). */
  #hold(key: string, version: number, reply: DhcpReply, payload: Uint8Array): void {
    const ip = reply.yiaddr;
    this.#held.push({ key, version, reply, payload });
    this.#heldPerIp.set(ip, (this.#heldPerIp.get(ip) ?? 0) + 1);
  }

  #unheld(h: HeldAck): void {
    const n = (this.#heldPerIp.get(h.reply.yiaddr) ?? 1) - 1;
    if (n > 0) this.#heldPerIp.set(h.reply.yiaddr, n);
    else this.#heldPerIp.delete(h.reply.yiaddr);
  }

  /** The lease store finished a write (of every change up to `version`), or failed it. */
  #settled(ok: boolean, version: number, err?: Error): void {
    if (!ok) {
      this.counters.storeErrors++;
      this.#sink?.storeFailed?.(err ?? new Error('lease file write failed'));
    }
    const q = this.#held;
    let i = 0;
    while (i < q.length && q[i].version <= version) i++;
    if (i === 0) return;
    const done = q.slice(0, i);
    this.#held = q.slice(i);
    for (const h of done) {
      this.#unheld(h);
      if (!ok) {
        this.#drop('store_error');
        continue;
      }
      const l = this.#store.get(h.key);
      if (l === undefined || l.ip !== h.reply.yiaddr || l.mac !== h.reply.chaddr) {
        this.#drop('lease_gone');
        continue;
      }
      this.counters.acks++;
      this.#sink?.deliver(h.reply, h.payload);
    }
  }

  /** Counts a received message by type (for requests refused before their handler). */
  #counted(type: number | undefined): void {
    const c = this.counters;
    if (type === DhcpMsg.DISCOVER) c.discovers++;
    else if (type === DhcpMsg.REQUEST) c.requests++;
    else if (type === DhcpMsg.DECLINE) c.declines++;
    else if (type === DhcpMsg.RELEASE) c.releases++;
    else if (type === DhcpMsg.INFORM) c.informs++;
  }

  #dropOffer(key: string): void {
    const o = this.#offers.get(key);
    if (o === undefined) return;
    this.#offers.delete(key);
    if (this.#offeredIps.get(o.ip) === key) this.#offeredIps.delete(o.ip);
    if (o.port !== undefined) {
      const keys = this.#offersByPort.get(o.port);
      keys?.delete(key);
      if (keys?.size === 0) this.#offersByPort.delete(o.port);
    }
  }

  #remember(key: string, ip: number): void {
    this.#remembered.delete(key);
    this.#remembered.set(key, ip);
    if (this.#remembered.size > DHCP_DEFAULTS.rememberMax) {
      const oldest = this.#remembered.keys().next().value;
      if (oldest !== undefined) this.#remembered.delete(oldest);
    }
  }

  #drop(why: DhcpReason): DhcpReason {
    this.counters.dropped[why]++;
    return why;
  }

  #inSubnet(ip: number): boolean {
    return ((ip & this.#mask) >>> 0) === this.#cfg.subnet;
  }

  /** Network or broadcast address, or (unless `exceptServer`) the server's own. */
  #special(ip: number, exceptServer = false): boolean {
    return ip === this.#cfg.subnet || ip === this.#broadcastIp || (!exceptServer && ip === this.#cfg.serverIp);
  }

  #inPool(ip: number): boolean {
    for (const [s, e] of this.#ranges) if (ip >= s && ip <= e) return true;
    return false;
  }

  // --- reconfiguration in place (issue 12: reload and `dhcp reservation`) ----
  // Kept apart from the rest: it only swaps the config-derived fields above.

  /**
   * Applies a new config without losing state: leases, offers, declined and
   * remembered addresses and counters stay. The subnet and the server address are
   * fixed (the daemon rebuilds the network for those). The config is validated
   * whole first, by the constructor on a scratch store (DhcpConfigError, nothing
   * changed). Unlike at construction, no lease is dropped: one the new config no
   * longer allows (outside the new pools, or on an address now reserved for another
   * client) stays until it expires or its client moves on (its renewal is NAKed,
   * RFC 2131 4.3.2), so its address is given to no one else meanwhile. Offers the
   * new config does not allow are withdrawn.
   */
  reconfigure(config: DhcpServerConfig, now: number): void {
    const c = this.#cfg;
    if (config.subnet !== c.subnet || config.prefixLen !== c.prefixLen || config.serverIp !== c.serverIp) {
      throw new DhcpConfigError(`DHCP network ${c.name}: the subnet and server address cannot change in place`);
    }
    const next = new DhcpServer(config, LeaseStore.inMemory(config.name), now);
    this.#cfg = next.#cfg;
    this.#ranges.splice(0, this.#ranges.length, ...next.#ranges);
    this.#poolSize = next.#poolSize;
    this.#leaseMs = next.#leaseMs;
    this.#offerHoldMs = next.#offerHoldMs;
    this.#declineHoldMs = next.#declineHoldMs;
    this.#router = next.#router;
    this.#routes121 = next.#routes121;
    this.#resByMac.clear();
    for (const [k, v] of next.#resByMac) this.#resByMac.set(k, v);
    this.#resByIp.clear();
    for (const [k, v] of next.#resByIp) this.#resByIp.set(k, v);
    if (this.#cursor >= this.#poolSize) this.#cursor = -1;
    for (const [key, o] of [...this.#offers]) {
      if (!this.#usable(o.ip, { key, mac: o.mac }, now)) this.#dropOffer(key);
    }
  }
}
