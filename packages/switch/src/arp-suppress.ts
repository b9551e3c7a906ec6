/*
 * ARP and ND suppression (BGP EVPN, RFC 7432 §10, RFC 9161; as Linux's bridge
 * `neigh_suppress`): per bridge VLAN, a neighbour table IP -> MAC that a control plane fills (the
 * EVPN service: peers' MAC/IP routes and this host's own advertised bindings), and
 * the proxy answer from it. An ARP request from a local port (not a tunnel) in a
 * VLAN where suppression is on, for an IP in the table, is answered here with the
 * table's MAC, sent back only to the asking port, and not forwarded: the request
 * never crosses the overlay. A request for an IP not in the table is forwarded
 * (flooded) as before and counted (`unknown`).
 *
 * What writes the table: only `set`/`delete` (the control plane). No frame does:
 * a gratuitous ARP or an ARP reply from a VM is forwarded as ever and teaches this
 * table nothing, so a VM cannot poison what its neighbours are told.
 *
 * What is not answered (the request goes on as before, counted `passed`):
 * - the asker's own MAC is the table's answer (a VM probing for its own address,
 *   RFC 5227, must not be told it conflicts with itself);
 * - sender IP = target IP (a gratuitous ARP announcement in request form);
 * - a body that is not IPv4 over 6-byte MACs, or is truncated (counted `malformed`,
 *   forwarded: the bridge never judged ARP bodies and does not start here).
 * A probe (sender IP 0.0.0.0) for an IP the table gives another MAC IS answered:
 * another host holds the address, which is the conflict the probe looks for.
 *
 * Bounded: at most `maxPerVlan` IPs per VLAN; a `set` beyond it is refused and
 * counted (`full`), and a request for that IP floods as without suppression.
 *
 * Cost on the bridge's fast path: the bridge holds `arpSuppress` only while some
 * VLAN has it on; then one array read per frame (`on[vid]`), and for frames in such
 * a VLAN from a local port, the ethertype test; only ARP goes further. A reply is
 * written into one scratch frame; nothing per frame allocates.
 *
 * IPv6 the same way: a Neighbour Solicitation (ICMPv6 right after the fixed header,
 * hop limit 255, a well-formed body: wire/icmp6.ts checkNd, else `malformed`) for a
 * target in the VLAN's IPv6 table is answered with a Neighbour Advertisement from
 * the target (solicited, override, its link-layer address; for a DAD probe from ::
 * to all-nodes, not solicited), counted with the ARP requests. IPv6 addresses are
 * kept as four int32 words under a small-integer hash, so the lookup allocates
 * nothing. The router flag is never set (RFC 9161 would take it from the route's
 * ND extended community: not read yet).
 */
import * as arp from './wire/arp.js';
import * as bytes from './wire/bytes.js';
import * as ethernet from './wire/ethernet.js';
import * as icmp6 from './wire/icmp6.js';
import * as ipv6 from './wire/ipv6.js';
import type { Port } from './port.js';
import { txDrop } from './egress.js';

const { arpOper, arpSha, arpSpa, arpTpa, checkArpIpv4, writeArp } = arp;
const { etherType, srcMac, writeEthHeader } = ethernet;
const ETH_HLEN = ethernet.ETH_HLEN;
const ETHERTYPE_ARP = ethernet.ETHERTYPE.ARP;
const ETHERTYPE_IPV6 = ethernet.ETHERTYPE.IPV6;
const { readI32: rd32 } = bytes;
const { checkNd, icmp6Type, ndTarget, writeIcmp6Checksum, writeNa, writeOptLla } = icmp6;
const ND_HOP_LIMIT = icmp6.ND_HOP_LIMIT;
const { ip6IsUnspecified, ip6NextHeader, ip6PayloadLen, writeIp6 } = ipv6;
const IP6_SRC = ipv6.IP6.SRC;
const ICMPV6 = ipv6.IP6_NEXT.ICMPV6;
const ND_OK = icmp6.NDP_OK;
const NS = icmp6.ICMP6_TYPE.NEIGHBOR_SOLICIT;
const NA_SOLICITED = icmp6.ND_NA_FLAG.SOLICITED;
const NA_OVERRIDE = icmp6.ND_NA_FLAG.OVERRIDE;
const TLLA = icmp6.NDOPT.TLLA;
const IP6_HLEN = ipv6.IP6_HLEN;
const NA_LEN = 32; // NA (24) + target link-layer address option (8)
const ALL_NODES = new Uint8Array([0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
const ALL_NODES_MAC = 0x333300000001;

/** One IPv6 neighbour: the address as four int32 words (compared without allocating), and its MAC. */
interface Entry6 { w0: number; w1: number; w2: number; w3: number; mac: number }

/** A hash of an IPv6 address's four words (a small integer: the Map key never allocates). */
function hash6(w0: number, w1: number, w2: number, w3: number): number {
  let h = Math.imul(w0, 0x9e3779b1) ^ w1;
  h = Math.imul(h, 0x85ebca6b) ^ w2;
  h = Math.imul(h, 0xc2b2ae35) ^ w3;
  return h & 0x3fffffff;
}
const ARP_LEN = arp.ARP_LEN;
const REQUEST = arp.ARP_REQUEST;
const REPLY = arp.ARP_REPLY;
/** A reply is padded to Ethernet's minimum (60 bytes without FCS), plus room for a tag. */
const FRAME_MIN = 60;

export const ARP_SUPPRESS_DEFAULT_MAX = 65536;

/** Per-VLAN counters (README "EVPN"). */
export class ArpSuppressCounters {
  /** Requests answered from the table (not forwarded). */
  suppressed = 0;
  /** Requests for an IP not in the table: forwarded as before. */
  unknown = 0;
  /** Requests not answered though the table knows the IP (the asker's own MAC, a gratuitous request): forwarded. */
  passed = 0;
  /** ARP bodies that are not IPv4 over 6-byte MACs, or truncated: forwarded untouched. */
  malformed = 0;
  /** Entries refused because the VLAN's table was full (`maxPerVlan`). */
  full = 0;
}

export class ArpSuppress {
  /** 1 where the VLAN answers from its table. */
  readonly on = new Uint8Array(4096);
  /** Per VLAN: IP (int32) -> MAC (u48). */
  readonly #tables: (Map<number, number> | undefined)[] = new Array(4096);
  /** Per VLAN: IPv6 neighbours by hash6, each bucket scanned (few). */
  readonly #tables6: (Map<number, Entry6[]> | undefined)[] = new Array(4096);
  readonly #size6: number[] = new Array<number>(4096).fill(0);
  readonly #counters: (ArpSuppressCounters | undefined)[] = new Array(4096);
  #size = 0;
  readonly #frame = new Uint8Array(FRAME_MIN + 4);
  readonly #frame6 = new Uint8Array(18 + IP6_HLEN + NA_LEN);

  constructor(public maxPerVlan = ARP_SUPPRESS_DEFAULT_MAX) {}

  get size(): number { return this.#size; }

  /** Any VLAN on: the bridge keeps this only while true. */
  get active(): boolean {
    return this.on.includes(1);
  }

  /**
   * Called when a VLAN's answering turns on or off (the bridge holding this sets it: its
   * flow cache keys frames of answering VLANs by their IPv4 class, Bridge.#cacheable).
   * The tables' contents need no call: for IPv4 (the only frames replayed in such a
   * VLAN) `answer` reads nothing but the EtherType.
   */
  onChange: (() => void) | undefined = undefined;

  /** Turns answering on or off for `vid`; the table is kept either way. */
  enable(vid: number, on: boolean): void {
    const v = on ? 1 : 0;
    if (this.on[vid] !== v) this.onChange?.();
    this.on[vid] = v;
    if (on) this.#counters[vid] ??= new ArpSuppressCounters();
  }

  /** Answering off in every VLAN (tables kept). */
  disableAll(): void {
    if (this.active) this.onChange?.();
    this.on.fill(0);
  }

  counters(vid: number): ArpSuppressCounters {
    return this.#counters[vid] ??= new ArpSuppressCounters();
  }

  /** `ip` (u32/int32) is at `mac` in `vid`; false (counted `full`) if the VLAN's table is full. */
  set(vid: number, ip: number, mac: number): boolean {
    ip |= 0;
    let t = this.#tables[vid];
    if (t === undefined) t = this.#tables[vid] = new Map();
    if (!t.has(ip)) {
      if (this.count(vid) >= this.maxPerVlan) {
        this.counters(vid).full++;
        return false;
      }
      this.#size++;
    }
    t.set(ip, mac);
    return true;
  }

  delete(vid: number, ip: number): void {
    const t = this.#tables[vid];
    if (t !== undefined && t.delete(ip | 0)) this.#size--;
  }

  get(vid: number, ip: number): number | undefined {
    return this.#tables[vid]?.get(ip | 0);
  }

  /** Entries in the VLAN's table (IPv4 and IPv6). */
  count(vid: number): number {
    return (this.#tables[vid]?.size ?? 0) + this.#size6[vid];
  }

  #find6(vid: number, a: Uint8Array, o: number): Entry6 | undefined {
    const t = this.#tables6[vid];
    if (t === undefined) return undefined;
    const w0 = rd32(a, o);
    const w1 = rd32(a, o + 4);
    const w2 = rd32(a, o + 8);
    const w3 = rd32(a, o + 12);
    const b = t.get(hash6(w0, w1, w2, w3));
    if (b === undefined) return undefined;
    for (let i = 0; i < b.length; i++) {
      const e = b[i];
      if (e.w0 === w0 && e.w1 === w1 && e.w2 === w2 && e.w3 === w3) return e;
    }
    return undefined;
  }

  /** The 16-byte IPv6 address `addr` is at `mac` in `vid`; false (counted `full`) if the VLAN's table is full. */
  set6(vid: number, addr: Uint8Array, mac: number): boolean {
    const e = this.#find6(vid, addr, 0);
    if (e !== undefined) {
      e.mac = mac;
      return true;
    }
    if (this.count(vid) >= this.maxPerVlan) {
      this.counters(vid).full++;
      return false;
    }
    const n: Entry6 = { w0: rd32(addr, 0), w1: rd32(addr, 4), w2: rd32(addr, 8), w3: rd32(addr, 12), mac };
    let t = this.#tables6[vid];
    if (t === undefined) t = this.#tables6[vid] = new Map();
    const h = hash6(n.w0, n.w1, n.w2, n.w3);
    const b = t.get(h);
    if (b === undefined) t.set(h, [n]);
    else b.push(n);
    this.#size6[vid]++;
    this.#size++;
    return true;
  }

  delete6(vid: number, addr: Uint8Array): void {
    const e = this.#find6(vid, addr, 0);
    if (e === undefined) return;
    const t = this.#tables6[vid]!;
    const h = hash6(e.w0, e.w1, e.w2, e.w3);
    const b = t.get(h)!.filter((x) => x !== e);
    if (b.length === 0) t.delete(h);
    else t.set(h, b);
    this.#size6[vid]--;
    this.#size--;
  }

  get6(vid: number, addr: Uint8Array): number | undefined {
    return this.#find6(vid, addr, 0)?.mac;
  }

  /** The VLAN's entries (views). */
  entries(vid: number): [number, number][] {
    return [...this.#tables[vid] ?? []];
  }

  clear(vid?: number): void {
    if (vid === undefined) {
      this.#tables.fill(undefined);
      this.#tables6.fill(undefined);
      this.#size6.fill(0);
      this.#size = 0;
      return;
    }
    this.#size -= this.count(vid);
    this.#tables[vid] = undefined;
    this.#tables6[vid] = undefined;
    this.#size6[vid] = 0;
  }

  /**
   * The frame at buf[off, off+len), admitted in `vid` from `port` (a local port)
   * with `tagLen` bytes of tag: true if it was an ARP request answered here (the
   * bridge forwards it no further), else false.
   */
  answer(port: Port, vid: number, tagLen: number, buf: Uint8Array, off: number, len: number): boolean {
    const type = etherType(buf, off + tagLen);
    const l3 = off + ETH_HLEN + tagLen;
    if (type === ETHERTYPE_IPV6) return this.#answerNs(port, vid, l3, buf, off, len);
    if (type !== ETHERTYPE_ARP) return false;
    const c = this.#counters[vid]!;
    if (!checkArpIpv4(buf, l3, off + len - l3)) {
      c.malformed++;
      return false;
    }
    if (arpOper(buf, l3) !== REQUEST) return false;
    const tpa = arpTpa(buf, l3);
    const mac = this.#tables[vid]?.get(tpa | 0);
    if (mac === undefined) {
      c.unknown++;
      return false;
    }
    const sha = arpSha(buf, l3);
    const spa = arpSpa(buf, l3);
    if (mac === sha || spa === tpa) {
      c.passed++;
      return false;
    }
    // The reply: to the asker's source MAC, as its port carries the VLAN.
    const f = this.#frame;
    const o = writeEthHeader(f, 0, srcMac(buf, off), mac, ETHERTYPE_ARP, port.vlan.isUntagged(vid) ? -1 : vid);
    writeArp(f, o, REPLY, mac, tpa, sha, spa);
    const n = o + ARP_LEN;
    const end = n < FRAME_MIN ? FRAME_MIN : n;
    f.fill(0, n, end);
    c.suppressed++;
    const r = port.tx.send(f, 0, end);
    if (r < 0) port.drops[txDrop(r)]++;
    else {
      port.txFrames++;
      port.txBytes += r;
    }
    return true;
  }

  /**
   * A Neighbour Solicitation (IPv6 at buf[ip], ICMPv6 right after the fixed header)
   * for a known target: answered with a Neighbour Advertisement from the target
   * (solicited and override; to all-nodes for a DAD probe from ::, which is not
   * solicited). Other IPv6 is not looked at past its next header and type.
   */
  #answerNs(port: Port, vid: number, ip: number, buf: Uint8Array, off: number, len: number): boolean {
    const end = off + len;
    const l4 = ip + IP6_HLEN;
    if (l4 + 1 > end || ip6NextHeader(buf, ip) !== ICMPV6 || icmp6Type(buf, l4) !== NS) return false;
    const c = this.#counters[vid]!;
    const plen = ip6PayloadLen(buf, ip);
    const l4len = l4 + plen - IP6_HLEN <= end ? plen : end - l4;
    if (checkNd(buf, ip, l4, l4len) !== ND_OK) {
      c.malformed++;
      return false;
    }
    const e = this.#find6(vid, buf, ndTarget(l4));
    if (e === undefined) {
      c.unknown++;
      return false;
    }
    const asker = srcMac(buf, off);
    if (e.mac === asker) {
      c.passed++;
      return false;
    }
    const dad = ip6IsUnspecified(buf, ip + IP6_SRC);
    const f = this.#frame6;
    const oip = writeEthHeader(f, 0, dad ? ALL_NODES_MAC : asker, e.mac, ETHERTYPE_IPV6, port.vlan.isUntagged(vid) ? -1 : vid);
    const ol4 = oip + IP6_HLEN;
    let n = writeNa(f, ol4, dad ? NA_OVERRIDE : NA_SOLICITED | NA_OVERRIDE, buf, ndTarget(l4));
    n += writeOptLla(f, ol4 + n, TLLA, e.mac);
    if (dad) writeIp6(f, oip, n, ICMPV6, ND_HOP_LIMIT, buf, ndTarget(l4), ALL_NODES, 0);
    else writeIp6(f, oip, n, ICMPV6, ND_HOP_LIMIT, buf, ndTarget(l4), buf, ip + IP6_SRC);
    writeIcmp6Checksum(f, oip, ol4, n);
    c.suppressed++;
    const r = port.tx.send(f, 0, ol4 + n);
    if (r < 0) port.drops[txDrop(r)]++;
    else {
      port.txFrames++;
      port.txBytes += r;
    }
    return true;
  }
}
