/*
 * The exact-match flow cache, the bridge's side (bench/DESIGN-flow-cache.md).
 *
 * Model: Open vSwitch's split. The pipeline (bridge.ts) decides every frame; for
 * the narrowest class of decision whose replay is exact it also *installs* it in
 * the backend (the addon's table, native/flowcache.c, read by its read loop):
 * "a frame with this key from handle I went unchanged to handle O alone". Frames
 * with the same key are then written by the read loop without entering JS, until
 * the bridge's generation moves. The backend never decides.
 *
 * What is installed (Bridge.#receive checks each): a known unicast destination on
 * one other port; learning REFRESHED the source (not new, not moved, not refused);
 * the frame left unchanged, written without error: untagged in and out, or tagged in
 * (a C-tag with the frame's VLAN, on a port that takes tagged frames) and out with
 * the same tag (the egress port a tagged member of that VLAN; tag edits, inserted or
 * stripped, are not installed),
 * its virtio_net_hdr with it: an all-zero one to any port, one that says something
 * (a TSO/USO super-frame, NEEDS_CSUM, DATA_VALID) only to a port that takes headers,
 * where egress writes it as it came (the header's flags and GSO type are in the
 * key; its other fields only travel, no decision reads them); both ports are handle ports (TAP, attached),
 * not in a split-horizon group; the ingress port is not shut and has no policer (a BPDU
 * guard is fine: it only looks at frames to the bridge group address, and a port it
 * shuts invalidates); the egress port is up, not shut, has no shaper, and is a member
 * of the frame's VLAN (untagged or tagged as above).
 *
 * Guarded ports and ARP/ND suppression: from a port with an active anti-spoofing guard,
 * and in a VLAN where ARP/ND suppression answers, only frames of the IPv4 class
 * (ip4Class: IPv4, version 4, IHL >= 5, not a UDP first fragment with port 67 or 68
 * either side) are installed, and from a guarded port in a VLAN where suppression does
 * not answer, frames of the ARP class (arpClass: a body for IPv4 over 6-byte MACs whose
 * sender MAC is the frame's source) and of the IPv6 class (ip6Class: no extension
 * header; TCP, UDP not from port 547, ICMPv6 echo; a source neither :: nor multicast)
 * too. The backend keys that handle's frames with their IPv4 source, ARP sender or IPv6
 * source address, the class apart, and refuses to key any frame outside the classes (a
 * miss). Within each class the guard's verdict depends only on the source MAC and that
 * address (the key) and the port's bindings, claims and options, the suppressor's on
 * nothing past the EtherType for IPv4 (it answers ARP requests and NS); ARP and IPv6 are
 * never installed where it answers, and the key's tag fixes the VLAN of a handle's frame.
 * So a frame either would judge differently never hits. The IPv6 source guard's claim
 * (guard6.ts) is state every admitted frame refreshes: the fold hands an IPv6 entry's
 * source back (FOLD.L3, FOLD.SRC6) and the bridge refreshes the claim at the last
 * replayed frame's time (Ip6Bindings.refresh, never back in time), before every sweep
 * that could expire it; a claim that changes owner otherwise than by a port's own
 * claim (expired, reserved for the router, a port forgotten) bumps the generation
 * (Ip6Bindings.onChange), and a guard's options change only after a fold
 * (PortGuard.beforeSet), so replays count under the options they were made with. DHCP,
 * ND and malformed IPv4, ARP or IPv6 from such ports stay in the pipeline.
 * Floods, the router, tunnels, bonds and rate-limited ports never see a replayed frame.
 *
 * Invalidation: one generation per bridge, in memory the backend reads on every
 * probe (a Float64Array: a bump is a store, never a call, and never wraps). The
 * MAC table bumps it on every change but a refresh (Fdb.stamp); the bridge bumps
 * it on every port, VLAN, guard, gate, rate, loop-protection and flood-list change
 * (Bridge.#invalidate), after folding, so counts made under the old generation
 * land on the ports they belonged to; a guard's binding gained or lost (PortGuard
 * onChange: a lease bound, released, expired or declined, a configured binding; a
 * renewal's re-ACK of the binding already there changes nothing and bumps nothing)
 * and ARP/ND suppression attached, detached or turned on or off in a VLAN bump it too.
 *
 * Counters and ageing stay exact by folding: the backend counts per entry (frames,
 * bytes, last frame's time, bytes written, failed writes by class) and `fold`
 * hands them to the bridge that installed the entry, which adds them where the
 * pipeline would have (ingress rx, `forwarded`, egress tx or drops) and refreshes
 * the source MAC at the last frame's time (Fdb.refreshAt: only if it still sits on
 * that port, never back in time). The daemon folds before it reads any of them
 * (stats, show, metrics), the bridge before its ageing sweep and before every
 * invalidation.
 */

import * as arp from './wire/arp.js';
import * as ethernet from './wire/ethernet.js';
import * as ipv4 from './wire/ipv4.js';
import * as ipv6 from './wire/ipv6.js';
import * as l4w from './wire/l4.js';

// ip4Class and arpClass read through the wire views as module constants (wire/bytes.ts says why), as guard.ts does.
const { arpSha, checkArpIpv4 } = arp;
const { etherType, srcMac, ETH_HLEN } = ethernet;
const { ip4FragOffset, ip4HeaderLen, ip4Proto, ip4Version, IP4_MIN_HLEN } = ipv4;
const { udpDport, udpSport } = l4w;
const T_IPV4 = ethernet.ETHERTYPE.IPV4;
const T_ARP = ethernet.ETHERTYPE.ARP;
const T_IPV6 = ethernet.ETHERTYPE.IPV6;
const { ip6IsMulticast, ip6IsUnspecified, ip6NextHeader, ip6PayloadLen, ip6Version, IP6: F6, IP6_NEXT: NH6 } = ipv6;
const IP6_HLEN = 40;
/** UDP source port of DHCPv6 servers and relays (guard6.ts). */
const DHCPV6_SERVER = 547;
const ECHO_REQUEST6 = 128;
const ECHO_REPLY6 = 129;
const P_UDP = ipv4.IPPROTO.UDP;
/** The UDP ports are inside the frame when the length field's offset is (guard.ts). */
const UDP_PORTS = l4w.UDP.LEN;

/** The backend: the addon (ports/flow-cache-io.ts) or, in tests, a model of it. */
export interface FlowCacheBackend {
  /** One generation per bridge id; the backend compares an entry's with it on every probe. */
  readonly generations: Float64Array;
  /**
   * The frame buf[off, off+len) (virtio_net_hdr before it) from `inHandle` went unchanged
   * to `outHandle` alone. `l3`: the decision also depended on the frame being of the
   * IPv4 class (ip4Class), the ARP class (arpClass) or the IPv6 class (ip6Class) and on
   * its IPv4 source, ARP sender or IPv6 source address; `inHandle`'s frames are keyed so (the class and address in the key,
   * frames outside both classes never hit) until an install says otherwise. False: refused.
   */
  install(bridge: number, inHandle: number, inPort: number, buf: Uint8Array, off: number, len: number, outHandle: number, outPort: number, l3: boolean): boolean;
  /** Rows of FOLD.FIELDS numbers (see FOLD) for every entry with counts since the last fold; how many. */
  fold(out: Float64Array): number;
  /** The bridge's entries stale. */
  flush(bridge: number): void;
  /** Table size (rows a fold may return). */
  readonly size: number;
  /** Offset from the backend's clock to the bridge's (performance.now()). */
  readonly clockOffset: number;
}

/** A fold row's fields (native/flowcache.h nd_fc_fold). */
export const FOLD = Object.freeze({
  BRIDGE: 0, IN_PORT: 1, OUT_PORT: 2, SRC_HI: 3, SRC_LO: 4, TAG: 5, FRAMES: 6, BYTES: 7, LAST: 8, TX_BYTES: 9,
  LINK_DOWN: 10, TX_ERROR: 11, L3: 12, SRC6: 13, FIELDS: 17,
});
/** A fold row's L3 (the key's class, native/flowcache.h ND_FC_KEY_L3): IPv6, whose source address SRC6 .. SRC6+3 holds as 32-bit words. */
export const FOLD_L3_IPV6 = 3;
/** A fold row's TAG: -1 untagged, else kind << 16 | TCI as it arrived; this kind is an 802.1Q C-tag (2: 802.1ad). */
export const FOLD_C_TAG = 1;

/** A port io that the cache can name: TAP and attached ports (ports/handle-io.ts). */
export interface FlowHandleIo {
  /** The addon handle frames are read from and written to; -1 while there is none. */
  readonly flowHandle?: number;
}

export interface FlowCacheCounters {
  /** Decisions installed. */
  installs: number;
  /** Installs the backend refused (its slots for the key held unfolded counts). */
  installRefused: number;
  /** Generation bumps: MAC table, ports, VLANs, guards, gates, rates. */
  invalidations: number;
  /** Frames the backend replayed, as folded. */
  hits: number;
}

/**
 * One backend's bridges: bridge ids (the generations' index) and the fold that
 * hands every row to the bridge it belongs to. One per backend; the daemon's is
 * the addon's.
 */
export class FlowCacheHub {
  readonly #bridges: (((rows: Float64Array, at: number) => void) | undefined)[] = [];
  readonly #rows: Float64Array;

  constructor(readonly backend: FlowCacheBackend) {
    this.#rows = new Float64Array(backend.size * FOLD.FIELDS);
  }

  /** A bridge joins; its id. */
  attach(apply: (rows: Float64Array, at: number) => void): number {
    let id = this.#bridges.indexOf(undefined);
    if (id < 0) id = this.#bridges.length;
    if (id >= this.backend.generations.length) throw new RangeError('flow cache: too many bridges');
    this.#bridges[id] = apply;
    return id;
  }

  /** A bridge leaves: its entries flushed, its counts folded first. */
  detach(id: number): void {
    this.backend.flush(id);
    this.fold();
    this.backend.generations[id]++;
    this.#bridges[id] = undefined;
  }

  /** Hands every entry's counts since the last fold to its bridge. */
  fold(): void {
    const rows = this.#rows;
    for (;;) {
      const n = this.backend.fold(rows);
      for (let i = 0; i < n; i++) this.#bridges[rows[i * FOLD.FIELDS + FOLD.BRIDGE]]?.(rows, i * FOLD.FIELDS);
      if (n * FOLD.FIELDS < rows.length) return;
    }
  }
}

/**
 * The IPv4 class (native/flowcache.h ND_FC_KEY_L3), the frame at buf[off, off+len)
 * untagged or with one C-tag (`tagged`): EtherType IPv4, version 4, IHL >= 5 and the
 * 20-byte header in the frame; the first fragment of a UDP datagram holds its ports
 * and neither is 67 or 68. Within it an anti-spoofing guard (guard.ts guardCheck)
 * reads only the source address and MAC, and ARP/ND suppression nothing past the
 * EtherType. The bridge installs a guarded port's decisions, and any decision in a
 * VLAN with suppression on, only for such frames; the addon keys them (and refuses
 * any other frame from that handle) by the same test.
 */
export function ip4Class(buf: Uint8Array, off: number, len: number, tagged: boolean): boolean {
  const tagLen = tagged ? 4 : 0;
  const l3 = off + ETH_HLEN + tagLen;
  const end = off + len;
  if (l3 + IP4_MIN_HLEN > end || etherType(buf, off + tagLen) !== T_IPV4 || ip4Version(buf, l3) !== 4) return false;
  const ihl = ip4HeaderLen(buf, l3);
  if (ihl < IP4_MIN_HLEN) return false;
  if (ip4Proto(buf, l3) === P_UDP && ip4FragOffset(buf, l3) === 0) {
    const l4 = l3 + ihl;
    if (l4 + UDP_PORTS > end) return false;
    const sp = udpSport(buf, l4), dp = udpDport(buf, l4);
    if (sp === 67 || sp === 68 || dp === 67 || dp === 68) return false;
  }
  return true;
}

/**
 * The ARP class (native/flowcache.h ND_FC_KEY_L3, l3 = 2), the frame at buf[off, off+len)
 * untagged or with one C-tag (`tagged`): EtherType ARP, an ARP body for IPv4 over
 * 6-byte hardware addresses inside the frame (wire/arp.ts checkArpIpv4: any hardware
 * type, any opcode) whose sender hardware address is the frame's source MAC. Within it
 * the IP source guard (guard.ts guardCheck) reads only the source MAC and the sender
 * protocol address, which the backend keys (0.0.0.0, a probe, is admitted, and keyed
 * as any other); a frame whose sender MAC differs, or a body it rejects, is outside
 * and never hits. ARP/ND suppression reads the opcode, the target and its own table:
 * the bridge installs ARP only from guarded ports and never in a VLAN where it answers.
 */
export function arpClass(buf: Uint8Array, off: number, len: number, tagged: boolean): boolean {
  const tagLen = tagged ? 4 : 0;
  const l3 = off + ETH_HLEN + tagLen;
  return l3 <= off + len && etherType(buf, off + tagLen) === T_ARP && checkArpIpv4(buf, l3, off + len - l3) &&
    arpSha(buf, l3) === srcMac(buf, off);
}

/**
 * The IPv6 class (native/flowcache.h ND_FC_KEY_L3, l3 = 3), the frame at buf[off, off+len)
 * untagged or with one C-tag: EtherType IPv6, version 6, the header and the payload its
 * length says inside the frame, and no extension header: the next header TCP, UDP whose
 * source port (inside the payload) is not 547, or ICMPv6 echo request or reply; the
 * source neither :: nor multicast. Within it the IPv6 guards (guard6.ts guard6Check)
 * read nothing but the source address's claim (the RA guard and the DHCPv6 guard admit
 * every such frame, the ND checks never apply), whose owner is this port for as long as
 * an installed decision stands (an owner changes only when it goes away, a claim
 * expires or the router reserves the address: each moves the generation) and whose
 * last use the fold refreshes as each frame would have.
 */
export function ip6Class(buf: Uint8Array, off: number, len: number, tagged: boolean): boolean {
  const tagLen = tagged ? 4 : 0;
  const l3 = off + ETH_HLEN + tagLen;
  const end = off + len;
  if (l3 + IP6_HLEN > end || etherType(buf, off + tagLen) !== T_IPV6 || ip6Version(buf, l3) !== 6) return false;
  const plen = ip6PayloadLen(buf, l3);
  const u = l3 + IP6_HLEN;
  if (u + plen > end) return false;
  const sa = l3 + F6.SRC;
  if (ip6IsMulticast(buf, sa) || ip6IsUnspecified(buf, sa)) return false;
  const nh = ip6NextHeader(buf, l3);
  if (nh === NH6.TCP) return true;
  if (nh === NH6.UDP) return plen >= UDP_PORTS && udpSport(buf, u) !== DHCPV6_SERVER;
  // ICMPv6's type, code and checksum (guard6Check reads the type only from a 4-byte message).
  return nh === NH6.ICMPV6 && plen >= 4 && (buf[u] === ECHO_REQUEST6 || buf[u] === ECHO_REPLY6);
}
