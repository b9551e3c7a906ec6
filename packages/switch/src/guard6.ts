/*
 * IPv6 tenant protection on guarded ports (guard.ts calls guard6Check for IPv6
 * frames, after VLAN admission and before learning, as for IPv4):
 * - RA guard (RFC 6105): Router Advertisements and Redirects from the port are
 *   dropped ('ra_guard'). So is what could hide one (RFC 7113): a header chain
 *   that cannot be walked to its upper layer within the first fragment
 *   (truncated, longer than IP6_MAX_EXT, Hop-by-Hop out of place), and an
 *   ICMPv6 first fragment that is ND (never fragmented, RFC 6980) or too short
 *   to show its type, and an ICMPv6 packet shorter than the ICMPv6 header; a
 *   fragmented echo (PMTU at work) passes.
 * - DHCPv6 guard: UDP from port 547 (a server's or relay's messages: Advertise,
 *   Reply, Reconfigure, Relay-reply) is dropped ('dhcpv6_guard').
 * - IPv6 source guard, first-come first-served (RFC 6620): the first port to
 *   send from an address (its link-local one included), to probe it by DAD, or to
 *   advertise it in an NA, owns it in that VLAN (Ip6Bindings); while the owner is
 *   live (up and its IPv6 source guard on), any other guarded port that sends
 *   from it is dropped ('ipv6_source_guard'), and one whose NA claims it is
 *   dropped ('nd_spoof'). A DAD probe (from ::) for an owned address still passes:
 *   the owner must see it to defend its address, which is how DAD works between
 *   VMs. The unspecified source is allowed for DAD probes, Router Solicitations
 *   and MLD reports only. ND messages whose link-layer address option is not the
 *   frame's source MAC are 'nd_spoof' (the ARP guard's rule: a neighbour would
 *   learn that MAC). A port owns at most `maxIpv6` addresses (a new one beyond
 *   that is dropped); an address unused for IP6_BINDING_IDLE_MS is released, and
 *   a port removed from the bridge releases all of its own. The router's gateway
 *   addresses are reserved for its port (`reserve`): no VM can take them.
 *
 * The table: open addressing over (VLAN, 16 address bytes) in typed arrays,
 * linear probing, one hash of 17 words per IPv6 frame on a guarded port, no
 * allocation per frame (it grows, by doubling, only when a claim needs room; at
 * most IP6_BINDINGS_MAX entries per bridge). Last use is refreshed on every
 * admitted frame (a frame the flow cache replayed: at its fold, `refresh`); the
 * bridge's sweep expires idle entries every 10 s. A claim that changes owner otherwise
 * than by a port's own claim (expired, reserved, a port forgotten) calls `onChange`:
 * the flow cache's replays of that port's frames from it must end.
 */
import { Drop } from './drop.js';
import * as bytes from './wire/bytes.js';
import * as icmp6 from './wire/icmp6.js';
import * as ipv6 from './wire/ipv6.js';
import * as l4 from './wire/l4.js';

// Module constants, not imported bindings (wire/bytes.ts says why).
const { checkIpv6, ip6IsUnspecified, ip6IsMulticast, ip6Upper, newIp6Upper, IPV6_OK: OK, IP6: F6, IP6_NEXT: NH } = ipv6;
const { Ip6WalkError: W } = ipv6;
const { ndOption, ndOptLla, ndTarget, ICMP6_TYPE: T, NDOPT } = icmp6;
const { udpSport } = l4;
const { readI32 } = bytes;
const UDP_PORTS = l4.UDP.LEN;
/** UDP source port of DHCPv6 servers and relays (RFC 8415 7.2). */
const DHCPV6_SERVER_PORT = 547;

export const ADMIT6 = -1;
/** Addresses one port may own at once, unless its config says otherwise. */
export const IP6_BINDINGS_PER_PORT = 16;
/** An owned address unused this long is released. */
export const IP6_BINDING_IDLE_MS = 3_600_000;
/** Entries one bridge's table holds at most (a claim beyond it is refused). */
export const IP6_BINDINGS_MAX = 1 << 20;
const SCAN_MS = 10_000;

const EMPTY = -1;
const GONE = -2;
/** claim() results besides an owner's port id. */
export const CLAIM_OK = -1;
export const CLAIM_FULL = -2;

/** The guard state of a port that guard6Check reads (PortGuard's IPv6 half). */
export interface Guard6 {
  ra: boolean;
  dhcpv6: boolean;
  ipv6Source: boolean;
  maxIpv6: number;
  /** The bridge's table and this port's id in it (unset: not in a bridge). */
  ip6: Ip6Bindings | undefined;
  portId: number;
}

/**
 * Which port owns which IPv6 address, per VLAN. `live(port)` says whether a
 * dynamic owner still pins its addresses (the bridge: up and IPv6 source guard on).
 */
export class Ip6Bindings {
  #cap = 0;
  #mask = 0;
  #vid = new Int32Array(0);
  #port = new Int32Array(0);
  #addr = new Uint8Array(0);
  #used = new Float64Array(0);
  #static = new Uint8Array(0);
  #size = 0;
  #gone = 0;
  /** Entries per port id. */
  readonly #perPort: number[] = [];
  #lastScan = 0;
  live: (port: number) => boolean;
  /**
   * Called when an owner changes otherwise than by a claim of a port (an expiry, a
   * reservation, a port forgotten): the bridge's flow cache invalidation, since a
   * replayed IPv6 frame's verdict is its port's ownership of the source.
   */
  onChange: (() => void) | undefined = undefined;

  constructor(live: (port: number) => boolean = () => true, capacity = 256) {
    this.live = live;
    this.#alloc(capacity);
  }

  get size(): number { return this.#size; }

  /** Addresses `port` owns. */
  count(port: number): number { return this.#perPort[port] ?? 0; }

  #alloc(cap: number): void {
    this.#cap = cap;
    this.#mask = cap - 1;
    this.#vid = new Int32Array(cap).fill(EMPTY);
    this.#port = new Int32Array(cap);
    this.#addr = new Uint8Array(cap * 16);
    this.#used = new Float64Array(cap);
    this.#static = new Uint8Array(cap);
    this.#size = 0;
    this.#gone = 0;
  }

  #hash(vid: number, buf: Uint8Array, a: number): number {
    let h = Math.imul(vid ^ 0x9e3779b9, 0x85ebca6b);
    for (let i = 0; i < 16; i += 4) {
      h = Math.imul(h ^ readI32(buf, a + i), 0xcc9e2d51);
      h = (h << 13) | (h >>> 19);
    }
    return (h ^ (h >>> 16)) & this.#mask;
  }

  /** The slot of (vid, address at buf[a..)), or -1. */
  find(vid: number, buf: Uint8Array, a: number): number {
    const vids = this.#vid;
    const addr = this.#addr;
    for (let s = this.#hash(vid, buf, a), n = 0; n < this.#cap; s = (s + 1) & this.#mask, n++) {
      const v = vids[s];
      if (v === EMPTY) return -1;
      if (v !== vid) continue;
      const o = s * 16;
      let same = true;
      for (let i = 0; i < 16; i++) {
        if (addr[o + i] !== buf[a + i]) {
          same = false;
          break;
        }
      }
      if (same) return s;
    }
    return -1;
  }

  /**
   * The address at buf[a..) in VLAN `vid` is used by `port` at `now`: CLAIM_OK
   * (it owns it, now or already), the id of the live port that owns it, or
   * CLAIM_FULL (`port` owns `max` already, or the table is full).
   */
  claim(vid: number, buf: Uint8Array, a: number, port: number, now: number, max: number): number {
    const s = this.find(vid, buf, a);
    if (s >= 0) {
      const owner = this.#port[s];
      if (owner === port) {
        this.#used[s] = now;
        return CLAIM_OK;
      }
      if (this.#static[s] === 1 || this.live(owner)) return owner;
      // The owner went away (down, guard off): the address is free to take.
      if (this.count(port) >= max) return CLAIM_FULL;
      this.#perPort[owner]--;
      this.#perPort[port] = this.count(port) + 1;
      this.#port[s] = port;
      this.#used[s] = now;
      return CLAIM_OK;
    }
    if (this.count(port) >= max || this.#size >= IP6_BINDINGS_MAX) return CLAIM_FULL;
    this.#insert(vid, buf, a, port, now, 0);
    return CLAIM_OK;
  }

  /**
   * The flow cache's fold (bridge.ts): frames from `port` with the source at buf[a..) in
   * VLAN `vid` were replayed, the last at `at`; as guard6Check's claim would have, the
   * address's last use moves to `at` if `port` owns it (never back in time: the pipeline
   * may have seen a later frame since).
   */
  refresh(vid: number, buf: Uint8Array, a: number, port: number, at: number): void {
    const s = this.find(vid, buf, a);
    if (s >= 0 && this.#port[s] === port && this.#used[s] < at) this.#used[s] = at;
  }

  /** The live owner of the address other than `port`, or -1 (unowned, owned by `port`, or by a port that went away). */
  ownerElsewhere(vid: number, buf: Uint8Array, a: number, port: number): number {
    const s = this.find(vid, buf, a);
    if (s < 0) return -1;
    const owner = this.#port[s];
    return owner !== port && (this.#static[s] === 1 || this.live(owner)) ? owner : -1;
  }

  /** Reserves `addr` (16 bytes) in VLAN `vid` for `port` whatever its state (the router's gateway addresses). */
  reserve(vid: number, addr: Uint8Array, port: number): void {
    const s = this.find(vid, addr, 0);
    if (s >= 0) {
      this.#perPort[this.#port[s]]--;
      this.#vid[s] = GONE;
      this.#size--;
      this.#gone++;
    }
    this.#insert(vid, addr, 0, port, 0, 1);
    this.onChange?.();
  }

  #insert(vid: number, buf: Uint8Array, a: number, port: number, now: number, stat: number): void {
    if ((this.#size + this.#gone + 1) * 2 > this.#cap) this.#rehash(this.#size + 1 > this.#cap >>> 2 ? this.#cap * 2 : this.#cap);
    let s = this.#hash(vid, buf, a);
    while (this.#vid[s] >= 0) s = (s + 1) & this.#mask;
    if (this.#vid[s] === GONE) this.#gone--;
    this.#vid[s] = vid;
    this.#port[s] = port;
    this.#addr.set(buf.subarray(a, a + 16), s * 16);
    this.#used[s] = now;
    this.#static[s] = stat;
    this.#size++;
    this.#perPort[port] = this.count(port) + 1;
  }

  #rehash(cap: number): void {
    const { vids, ports, addr, used, stat, n } = { vids: this.#vid, ports: this.#port, addr: this.#addr, used: this.#used, stat: this.#static, n: this.#cap };
    this.#alloc(cap);
    this.#perPort.length = 0;
    for (let s = 0; s < n; s++) if (vids[s] >= 0) this.#insert(vids[s], addr, s * 16, ports[s], used[s], stat[s]);
  }

  #drop(s: number): void {
    this.#perPort[this.#port[s]]--;
    this.#vid[s] = GONE;
    this.#size--;
    this.#gone++;
  }

  /** Releases every address of `port` (it left the bridge; its id may be reused). */
  forgetPort(port: number): void {
    if (this.count(port) === 0) return;
    for (let s = 0; s < this.#cap; s++) if (this.#vid[s] >= 0 && this.#port[s] === port) this.#drop(s);
    this.onChange?.();
  }

  /** Releases dynamic entries unused for `idleMs`, at most one scan per SCAN_MS; returns how many. */
  expire(now: number, idleMs = IP6_BINDING_IDLE_MS): number {
    if (now - this.#lastScan < SCAN_MS && now >= this.#lastScan) return 0;
    this.#lastScan = now;
    let n = 0;
    for (let s = 0; s < this.#cap; s++) {
      if (this.#vid[s] >= 0 && this.#static[s] === 0 && now - this.#used[s] >= idleMs) {
        this.#drop(s);
        n++;
      }
    }
    if (n > 0) this.onChange?.();
    return n;
  }

  /** Every entry, for views and tests. */
  entries(): { vid: number; addr: Uint8Array; port: number; static: boolean; lastUsed: number }[] {
    const out = [];
    for (let s = 0; s < this.#cap; s++) {
      if (this.#vid[s] >= 0) {
        out.push({ vid: this.#vid[s], addr: this.#addr.slice(s * 16, s * 16 + 16), port: this.#port[s], static: this.#static[s] === 1, lastUsed: this.#used[s] });
      }
    }
    return out;
  }
}

/** The walk's answer, reused for every frame. */
const upper = newIp6Upper();

/**
 * The IPv6 guards' verdict on the IPv6 packet at buf[l3, end) from a port with
 * guard `g` (at least one of its IPv6 guards on), source MAC `src`, VLAN `vid`:
 * ADMIT6 or a Drop index.
 */
export function guard6Check(g: Guard6, buf: Uint8Array, l3: number, end: number, src: number, vid: number, now: number): number {
  if (checkIpv6(buf, l3, end - l3) !== OK) return g.ipv6Source ? Drop.ipv6_source_guard : g.ra ? Drop.ra_guard : ADMIT6;
  const u = upper;
  const w = ip6Upper(buf, l3, u);
  let proto = -1;
  if (w === OK) {
    proto = u.proto;
    if (proto === NH.ICMPV6) {
      // A fragmented ICMPv6 message is dropped when it is ND (never fragmented, RFC 6980) or too cut to tell;
      // others (an echo fragmented after Packet Too Big) pass. An unfragmented one shorter than its 4-byte
      // header is no message at all: dropped too, so no byte after the payload (padding) can pass for a type.
      if (g.ra && ((u.fragment && (u.len < 1 || (buf[u.off] >= T.ROUTER_SOLICIT && buf[u.off] <= T.REDIRECT))) ||
        u.len < 4 || buf[u.off] === T.ROUTER_ADVERT || buf[u.off] === T.REDIRECT)) return Drop.ra_guard;
    } else if (proto === NH.UDP && g.dhcpv6 && u.len >= UDP_PORTS && udpSport(buf, u.off) === DHCPV6_SERVER_PORT) {
      return Drop.dhcpv6_guard;
    }
  } else if (w !== W.NOT_FIRST_FRAGMENT && g.ra) {
    return Drop.ra_guard;
  }
  if (!g.ipv6Source) return ADMIT6;
  const table = g.ip6;
  if (table === undefined) return ADMIT6;
  const port = g.portId;
  const sa = l3 + F6.SRC;
  // The ICMPv6 type when there is one (a message of at least type, code and checksum).
  const type = proto === NH.ICMPV6 && u.len >= 4 ? buf[u.off] : -1;
  // ND's link-layer options must name the sender's own MAC.
  if (type === T.NEIGHBOR_SOLICIT || type === T.ROUTER_SOLICIT || type === T.NEIGHBOR_ADVERT) {
    const p = ndOption(buf, u.off, u.len, type === T.NEIGHBOR_ADVERT ? NDOPT.TLLA : NDOPT.SLLA);
    if (p >= 0 && ndOptLla(buf, p) !== src) return Drop.nd_spoof;
  }
  if (ip6IsUnspecified(buf, sa)) {
    if (type === T.NEIGHBOR_SOLICIT && u.len >= 24) {
      // A DAD probe: it claims its target if nobody holds it; an owned target's probe passes to its owner.
      const t = ndTarget(u.off);
      if (!ip6IsMulticast(buf, t)) table.claim(vid, buf, t, port, now, g.maxIpv6);
      return ADMIT6;
    }
    return type === T.ROUTER_SOLICIT || type === T.MLD_REPORT || type === T.MLD2_REPORT ? ADMIT6 : Drop.ipv6_source_guard;
  }
  if (ip6IsMulticast(buf, sa)) return Drop.ipv6_source_guard;
  if (type === T.NEIGHBOR_ADVERT && u.len >= 24) {
    const t = ndTarget(u.off);
    if (table.ownerElsewhere(vid, buf, t, port) >= 0) return Drop.nd_spoof;
    if (table.claim(vid, buf, t, port, now, g.maxIpv6) !== CLAIM_OK) return Drop.ipv6_source_guard;
  }
  return table.claim(vid, buf, sa, port, now, g.maxIpv6) === CLAIM_OK ? ADMIT6 : Drop.ipv6_source_guard;
}
