/*
 * ARP suppression (BGP EVPN, RFC 7432 §10, as Linux's bridge `neigh_suppress`):
 * per bridge VLAN, a neighbour table IPv4 -> MAC that a control plane fills (the
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
 * Not yet: IPv6 Neighbour Discovery (RFC 9161). It would fit here unchanged in
 * shape: MAC/IPv6 routes feed a second per-VLAN table keyed by the address's four
 * words (as guard6.ts's owners), the ethertype test takes 0x86DD too, and a
 * Neighbour Solicitation (ICMPv6 135, hop limit 255, no extension headers) for a
 * known target is answered with a solicited Neighbour Advertisement (target
 * link-layer option, ICMPv6 checksum; to all-nodes for a DAD probe from ::), the
 * router flag taken from the route's EVPN ND extended community.
 */
import * as arp from './wire/arp.js';
import * as ethernet from './wire/ethernet.js';
import type { Port } from './port.js';
import { txDrop } from './egress.js';

const { arpOper, arpSha, arpSpa, arpTpa, checkArpIpv4, writeArp } = arp;
const { readMac, writeMac } = ethernet;
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
  readonly #counters: (ArpSuppressCounters | undefined)[] = new Array(4096);
  #size = 0;
  readonly #frame = new Uint8Array(FRAME_MIN + 4);

  constructor(public maxPerVlan = ARP_SUPPRESS_DEFAULT_MAX) {}

  get size(): number { return this.#size; }

  /** Any VLAN on: the bridge keeps this only while true. */
  get active(): boolean {
    return this.on.includes(1);
  }

  /** Turns answering on or off for `vid`; the table is kept either way. */
  enable(vid: number, on: boolean): void {
    this.on[vid] = on ? 1 : 0;
    if (on) this.#counters[vid] ??= new ArpSuppressCounters();
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
      if (t.size >= this.maxPerVlan) {
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

  /** Entries in the VLAN's table. */
  count(vid: number): number {
    return this.#tables[vid]?.size ?? 0;
  }

  /** The VLAN's entries (views). */
  entries(vid: number): [number, number][] {
    return [...this.#tables[vid] ?? []];
  }

  clear(vid?: number): void {
    if (vid === undefined) {
      this.#tables.fill(undefined);
      this.#size = 0;
      return;
    }
    this.#size -= this.#tables[vid]?.size ?? 0;
    this.#tables[vid] = undefined;
  }

  /**
   * The frame at buf[off, off+len), admitted in `vid` from `port` (a local port)
   * with `tagLen` bytes of tag: true if it was an ARP request answered here (the
   * bridge forwards it no further), else false.
   */
  answer(port: Port, vid: number, tagLen: number, buf: Uint8Array, off: number, len: number): boolean {
    const t = off + 12 + tagLen;
    if (buf[t] !== 0x08 || buf[t + 1] !== 0x06) return false;
    const l3 = t + 2;
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
    const asker = readMac(buf, off + 6);
    writeMac(f, 0, asker);
    writeMac(f, 6, mac);
    let o = 12;
    if (!port.vlan.isUntagged(vid)) {
      f[12] = 0x81;
      f[13] = 0x00;
      f[14] = (vid >> 8) & 0x0f;
      f[15] = vid & 0xff;
      o = 16;
    }
    f[o] = 0x08;
    f[o + 1] = 0x06;
    writeArp(f, o + 2, REPLY, mac, tpa, sha, spa);
    const n = o + 2 + ARP_LEN;
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
}
