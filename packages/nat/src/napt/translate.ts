/*
 * NAPT packet translation: rewrites an IPv4 packet in place between the inside
 * networks and the uplink's one public address, with incremental checksums
 * (RFC 1624), using the session table (table.ts) and the port forwards
 * (forwards.ts).
 *
 * Entry points, one packet at a time, `now` in ms of the router clock:
 * - `outbound(buf, off, now, partial, from)`: a packet from an inside host to beyond the router.
 *   Source IP/port (TCP, UDP) or echo id (ICMP echo request) become the public
 *   address and the mapping's public port. Result `ok`: send it on the uplink.
 *   Result `hairpin` (RFC 4787 REQ-9, RFC 5382 REQ-8): it was addressed to the
 *   public address itself; it was translated as outbound and then as inbound, so
 *   both ends see each other's public endpoints, and the caller delivers it inside
 *   to `napt.insideIp`.
 * - `inbound(buf, off, now)`: a packet from the uplink addressed to the public
 *   address. Destination becomes the inside host and port of the session, or of a
 *   port forward. Result `ok`: deliver it to `napt.insideIp`.
 * Every other result is a drop reason, returned as a value, counted in `counts`
 * (indexed by result code; names in NAPT_RESULTS are also the metric labels);
 * nothing throws per packet. `local` is not a drop: the packet is for the router
 * itself (ICMP echo request to the public address); the caller answers it.
 *
 * Caller's duties: the packet passed checkIpv4 (header and Total Length inside the
 * buffer; nothing past Total Length is read or written here, so Ethernet padding
 * is left alone); the caller routes, decrements TTL (`ip4DecrementTtl` below, with
 * its incremental checksum) and answers time-exceeded itself; it calls
 * `table.expire(now)` about once a second.
 *
 * Checksums, complete (`partial` false): the IPv4 header checksum for the changed
 * address; the TCP/UDP checksum for the address (pseudo header) and the port; a
 * UDP checksum of 0 means "none" and stays 0, and a computed 0 is sent as 0xffff
 * (RFC 768); the ICMP checksum for the echo id (ICMP has no pseudo header).
 *
 * Checksums, partial (`partial` true: the packet travels with a virtio_net_hdr
 * whose NEEDS_CSUM flag is set, csum_start at the L4 header and csum_offset at its
 * checksum field; a GSO super-frame, or one packet whose checksum a device or the
 * segmenter completes later; the caller checks that layout, see ../vnet.ts). The
 * L4 field then holds the folded pseudo-header sum, not complemented (Linux:
 * th->check = ~tcp_v4_check(len, saddr, daddr, 0)), and whoever completes it sums
 * everything from csum_start on. So an address change (pseudo header) updates the
 * field in the opposite sense of RFC 1624's update of a complete checksum
 * (csumReplace32(field, new, old)), a port or echo id change does not touch it (it
 * lies in the summed bytes), and a UDP field of 0 is a sum like any other, not
 * "none". The IPv4 header checksum is complete in such packets too (GSO copies the
 * header to every segment and recomputes it) and is updated as always. An ICMP
 * error with a partial checksum cannot have its checksum verified (REQ-3 below)
 * and is refused as `bad_checksum`: the caller completes those first.
 *
 * ICMP errors (destination unreachable 3, time exceeded 11, parameter problem 12)
 * are translated when the packet they quote belongs to a session (RFC 5508
 * REQ-3/4 inbound, REQ-5 the outbound mirror), else dropped as `no_session`. The
 * source of the error does not matter (any router on the path may send one), but
 * the quoted packet must match a session exactly, remote endpoint included, and
 * the ICMP checksum and the quoted IPv4 header checksum must verify
 * (`bad_checksum`, REQ-3): the incremental update would otherwise give a damaged
 * error a valid checksum. Inbound, the outer destination and the quoted packet's source become
 * the inside host and port; outbound (an inside host's port unreachable for a
 * forwarded UDP packet, say), the outer source and the quoted destination become
 * the public ones. Rewritten in the quoted packet: the address, the port/id, the
 * quoted IPv4 header checksum, and the quoted TCP/UDP/ICMP checksum when its field
 * lies within the quoted bytes (the incremental update is right even when the
 * quote is truncated, since it only adds the change). Every changed 16-bit word is
 * folded into the outer ICMP checksum. Errors neither refresh nor close sessions
 * (as RFC 5508 asks): they are not traffic of the flow, and anyone on the path can
 * send them. Of quoted ICMP only echo requests can match a session (an error about
 * an error is never translated).
 *
 * Fragments: dropped, counted as `fragment`, in both directions; no reassembly.
 * Only the first fragment carries ports: translating it alone would strand the
 * others, and reassembly buffers are memory a remote can fill. This falls short of
 * RFC 4787 REQ-14 (handle fragments, in or out of order) on purpose: TCP uses path
 * MTU discovery (DF set), and today's UDP users avoid fragmentation (DNS over EDNS
 * with 1232-byte buffers, QUIC), so little real traffic is lost, and the counter
 * shows it when some is. An ICMP error quoting a non-first fragment is dropped the
 * same way (its quote has no ports).
 *
 * TCP sessions open only on a bare SYN (`tcp_not_syn` otherwise), UDP and ICMP on
 * any packet; inbound packets open sessions only on a port forward, or on a
 * mapping whose filter admits the remote address (table.ts: address-dependent
 * filtering).
 *
 * Cost: for a packet of an existing session, two small-integer Map lookups and the
 * session's one-entry cache (outbound), or an array index and that cache
 * (inbound), then a handful of byte writes; no allocation. Addresses are handled
 * as int32 for that reason (table.ts). Measured: 233 ns for an outbound plus an
 * inbound packet (figures in table.ts).
 */
import {
  csumReplace16, csumReplace32, fold, read16, readI32, sum16, write16, write32,
  checkIcmp, checkTcp, checkUdp, ICMP, ICMP_TYPE, IP4, icmpId, icmpType, ip4FragOffset, ip4HeaderLen, ip4Version, TCP,
  TCP_FLAG, UDP,
} from '@vswitch/switch';
import { DIR_IN, DIR_OUT, NaptTable, type NaptTableOptions, type NaptMapping, type NaptSession } from './table.js';
import { Forwards, type PortForward } from './forwards.js';

export const NAPT_RESULTS = [
  'ok',                // translated. outbound: send on the uplink; inbound: deliver to napt.insideIp
  'hairpin',           // outbound to the public address, translated both ways: deliver inside to napt.insideIp
  'local',             // for the router itself (ICMP echo request to the public address): not translated
  'no_public_address', // the uplink has no address yet (its DHCP client is still asking)
  'not_public',        // inbound packet not addressed to the public address
  'fragment',          // an IP fragment, or an ICMP error quoting a non-first fragment
  'malformed',         // L4 header truncated or inconsistent, or an ICMP error's quote too short
  'bad_checksum',      // an ICMP error whose checksum or quoted IPv4 header checksum does not verify
  'unsupported_proto', // not TCP, UDP or ICMP
  'unsupported_icmp',  // an ICMP type NAPT does not translate in that direction
  'no_session',        // no session, mapping or forward for it
  'filtered',          // a mapping exists but its filter does not admit this remote address
  'tcp_not_syn',       // would open a TCP session but is not a bare SYN
  'table_full',        // new flow refused: the table is at maxSessions
  'host_limit',        // new flow refused: the inside host is at maxSessionsPerHost
  'no_port',           // new flow refused: no free public port in the range
  'port_limit',        // new flow refused: the bridge port it came from is at maxSessionsPerPort
] as const;

export type NaptResultName = (typeof NAPT_RESULTS)[number];

export const NaptResult: { readonly [K in NaptResultName]: number } = Object.freeze(
  Object.fromEntries(NAPT_RESULTS.map((r, i) => [r, i])) as { [K in NaptResultName]: number },
);

/** True for results that mean "drop it" (everything but ok, hairpin and local). */
export const naptDropped = (r: number): boolean => r > NaptResult.local;

export interface NaptOptions {
  /** The uplink's address; 0 (the default) until it has one. */
  publicIp?: number;
  /** A table, or the options to make one. */
  table?: NaptTable | NaptTableOptions;
  forwards?: Forwards;
}

/**
 * Where an inside packet came from: the bridge port, for the table's per-port
 * limit. Asked only when the packet opens a session, never per packet of one.
 */
export interface PacketPort {
  /** The bridge port of the IPv4 packet at buf[ipOff...) ('' when unknown). */
  portAt(buf: Uint8Array, ipOff: number): string;
}

const R = NaptResult;
const P_ICMP = 1;
const P_TCP = 6;
const P_UDP = 17;

const isIcmpError = (type: number): boolean =>
  type === ICMP_TYPE.DEST_UNREACH || type === ICMP_TYPE.TIME_EXCEEDED || type === ICMP_TYPE.PARAMETER_PROBLEM;

export class Napt {
  readonly table: NaptTable;
  readonly forwards: Forwards;
  /** Packets by result code (NAPT_RESULTS order). */
  readonly counts: number[] = new Array<number>(NAPT_RESULTS.length).fill(0);
  /** After `ok` from inbound or `hairpin` from outbound: the inside host to deliver to. */
  insideIp = 0;
  /** The public address as an int32, the form compared and written per packet (no heap numbers). */
  #publicIp = 0;
  #unsubscribe: () => void;

  constructor(opts: NaptOptions = {}) {
    this.table = opts.table instanceof NaptTable ? opts.table : new NaptTable(opts.table);
    this.forwards = opts.forwards ?? new Forwards();
    this.table.reservation = this.forwards;
    this.#publicIp = (opts.publicIp ?? 0) | 0;
    // A forward takes its public ports and inside endpoints from dynamic mappings at
    // once; a deleted forward takes its sessions with it.
    this.#unsubscribe = this.forwards.subscribe((event, f) => this.#onForward(event, f));
  }

  get publicIp(): number { return this.#publicIp >>> 0; }

  /** A new uplink address invalidates every mapping: they are flushed. */
  set publicIp(ip: number) {
    ip |= 0;
    if (ip === this.#publicIp) return;
    this.#publicIp = ip;
    this.table.flushAll();
  }

  /** Stops listening to the forwards (the Napt is being discarded). */
  close(): void { this.#unsubscribe(); }

  countOf(name: NaptResultName): number { return this.counts[R[name]]; }

  /** Packets by result name, for metrics (`reason` label) and the CLI. */
  resultCounts(): Record<NaptResultName, number> {
    return Object.fromEntries(NAPT_RESULTS.map((r, i) => [r, this.counts[i]])) as Record<NaptResultName, number>;
  }

  /**
   * `partial`: the L4 checksum is CHECKSUM_PARTIAL (see the header comment);
   * `from`: the packet's bridge port, charged when it opens a session.
   */
  outbound(buf: Uint8Array, off: number, now: number, partial = false, from?: PacketPort): number {
    const r = this.#outbound(buf, off, now, partial, from);
    this.counts[r]++;
    return r;
  }

  /** `partial`: the L4 checksum is CHECKSUM_PARTIAL (see the header comment). */
  inbound(buf: Uint8Array, off: number, now: number, partial = false): number {
    const r = this.#inbound(buf, off, now, partial);
    this.counts[r]++;
    return r;
  }

  #onForward(event: 'add' | 'del', f: PortForward): void {
    const proto = f.proto === 'tcp' ? P_TCP : P_UDP;
    this.table.flushPublic(proto, f.publicLo, f.publicHi);
    if (event === 'add') this.table.flushInside(proto, f.insideIp, f.insideLo, f.insideLo + (f.publicHi - f.publicLo));
  }

  #outbound(buf: Uint8Array, off: number, now: number, partial: boolean, from: PacketPort | undefined): number {
    const pub = this.#publicIp;
    if (pub === 0) return R.no_public_address;
    if ((read16(buf, off + IP4.FRAG) & 0x3fff) !== 0) return R.fragment;
    const hl = ip4HeaderLen(buf, off);
    const l4 = off + hl;
    const l4len = read16(buf, off + IP4.LEN) - hl;
    const proto = buf[off + IP4.PROTO];
    const src = readI32(buf, off + IP4.SRC);
    const dst = readI32(buf, off + IP4.DST);
    let sport: number;
    let dport: number;
    let flags = 0;
    if (proto === P_TCP) {
      if (!checkTcp(buf, l4, l4len)) return R.malformed;
      sport = read16(buf, l4 + TCP.SPORT);
      dport = read16(buf, l4 + TCP.DPORT);
      flags = buf[l4 + TCP.FLAGS];
    } else if (proto === P_UDP) {
      if (!checkUdp(buf, l4, l4len)) return R.malformed;
      sport = read16(buf, l4 + UDP.SPORT);
      dport = read16(buf, l4 + UDP.DPORT);
    } else if (proto === P_ICMP) {
      if (!checkIcmp(l4len)) return R.malformed;
      const type = icmpType(buf, l4);
      if (type === ICMP_TYPE.ECHO_REQUEST) {
        if (dst === pub) return R.local;
        sport = icmpId(buf, l4);
        dport = 0;
      } else if (isIcmpError(type)) {
        if (partial) return R.bad_checksum;
        return this.#outboundIcmpError(buf, off, l4, l4len, src, dst, now);
      } else {
        return R.unsupported_icmp;
      }
    } else {
      return R.unsupported_proto;
    }

    let s = this.table.lookupOut(proto, src, sport, dst, dport);
    if (s === undefined) {
      if (proto === P_TCP && (flags & (TCP_FLAG.SYN | TCP_FLAG.ACK | TCP_FLAG.RST)) !== TCP_FLAG.SYN) return R.tcp_not_syn;
      const fwd = proto === P_ICMP ? -1 : this.forwards.publicFor(proto, src, sport);
      const o = this.table.open(proto, src, sport, dst, dport, now, fwd, from === undefined ? '' : from.portAt(buf, off));
      if (typeof o === 'string') return R[o];
      s = o;
    }
    this.table.track(s, DIR_OUT, flags, now);
    const m = s.mapping;

    write32(buf, off + IP4.SRC, pub);
    write16(buf, off + IP4.CSUM, csumReplace32(read16(buf, off + IP4.CSUM), src, pub));
    rewriteL4(buf, l4, proto, src, pub, sport, m.publicPort, true, partial);

    if (dst !== pub) return R.ok;
    const r = this.#inbound(buf, off, now, partial);
    return r === R.ok ? R.hairpin : r;
  }

  #inbound(buf: Uint8Array, off: number, now: number, partial: boolean): number {
    const pub = this.#publicIp;
    if (pub === 0) return R.no_public_address;
    const dst = readI32(buf, off + IP4.DST);
    if (dst !== pub) return R.not_public;
    if ((read16(buf, off + IP4.FRAG) & 0x3fff) !== 0) return R.fragment;
    const hl = ip4HeaderLen(buf, off);
    const l4 = off + hl;
    const l4len = read16(buf, off + IP4.LEN) - hl;
    const proto = buf[off + IP4.PROTO];
    const src = readI32(buf, off + IP4.SRC);
    let sport: number;
    let dport: number;
    let flags = 0;
    if (proto === P_TCP) {
      if (!checkTcp(buf, l4, l4len)) return R.malformed;
      sport = read16(buf, l4 + TCP.SPORT);
      dport = read16(buf, l4 + TCP.DPORT);
      flags = buf[l4 + TCP.FLAGS];
    } else if (proto === P_UDP) {
      if (!checkUdp(buf, l4, l4len)) return R.malformed;
      sport = read16(buf, l4 + UDP.SPORT);
      dport = read16(buf, l4 + UDP.DPORT);
    } else if (proto === P_ICMP) {
      if (!checkIcmp(l4len)) return R.malformed;
      const type = icmpType(buf, l4);
      if (type === ICMP_TYPE.ECHO_REPLY) {
        sport = 0;
        dport = icmpId(buf, l4);
      } else if (isIcmpError(type)) {
        if (partial) return R.bad_checksum;
        return this.#inboundIcmpError(buf, off, l4, l4len);
      } else if (type === ICMP_TYPE.ECHO_REQUEST) {
        return R.local;
      } else {
        return R.unsupported_icmp;
      }
    } else {
      return R.unsupported_proto;
    }

    const bareSyn = (flags & (TCP_FLAG.SYN | TCP_FLAG.ACK | TCP_FLAG.RST)) === TCP_FLAG.SYN;
    const m = this.table.mappingByPublic(proto, dport);
    let s: NaptSession | undefined;
    if (m !== undefined) {
      s = m.find(src, sport);
      if (s === undefined) {
        if (!m.permits(src)) return R.filtered;
        if (proto === P_TCP && !bareSyn) return R.tcp_not_syn;
        const o = this.table.open(proto, m.insideIp, m.insidePort, src, sport, now, m.forwarded ? m.publicPort : -1);
        if (typeof o === 'string') return R[o];
        s = o;
      }
    } else {
      const f = proto === P_ICMP ? undefined : this.forwards.lookup(proto, dport);
      // An IPv6 target is the host uplink's (forwards.ts); config and CLI refuse it here anyway.
      if (f === undefined || f.inside6 !== undefined) return R.no_session;
      if (proto === P_TCP && !bareSyn) return R.tcp_not_syn;
      const o = this.table.open(proto, f.insideIp, f.insideLo + (dport - f.publicLo), src, sport, now, dport);
      if (typeof o === 'string') return R[o];
      s = o;
    }
    this.table.track(s, DIR_IN, flags, now);
    const target = s.mapping;

    const inside = target.ipKey;
    write32(buf, off + IP4.DST, inside);
    write16(buf, off + IP4.CSUM, csumReplace32(read16(buf, off + IP4.CSUM), pub, inside));
    rewriteL4(buf, l4, proto, pub, inside, dport, target.insidePort, false, partial);
    this.insideIp = target.insideIp;
    return R.ok;
  }

  /**
   * An ICMP error from the Internet about a packet we sent out: the quote is
   * (public address:public port -> remote). Rewrites the outer destination and the
   * quoted source to the inside host.
   */
  #inboundIcmpError(buf: Uint8Array, off: number, l4: number, l4len: number): number {
    const e = quote(buf, l4, l4len);
    if (e < 0) return -e;
    const pub = this.#publicIp;
    const eproto = buf[e + IP4.PROTO];
    const el4 = e + ip4HeaderLen(buf, e);
    const el4len = l4 + l4len - el4;
    if (readI32(buf, e + IP4.SRC) !== pub) return R.no_session;
    const remote = readI32(buf, e + IP4.DST);
    let portPos: number;
    let remotePort: number;
    if (eproto === P_TCP || eproto === P_UDP) {
      // Ports are at the same places in TCP and UDP.
      portPos = el4 + UDP.SPORT;
      remotePort = read16(buf, el4 + UDP.DPORT);
    } else if (eproto === P_ICMP) {
      if (icmpType(buf, el4) !== ICMP_TYPE.ECHO_REQUEST) return R.unsupported_icmp;
      portPos = el4 + ICMP.ID;
      remotePort = 0;
    } else {
      return R.unsupported_proto;
    }
    const pubPort = read16(buf, portPos);
    const m = this.table.mappingByPublic(eproto, pubPort);
    if (m === undefined || m.find(remote, remotePort) === undefined) return R.no_session;

    rewriteQuote(buf, off, l4, e, el4, el4len, eproto, IP4.DST, IP4.SRC, pub, m.ipKey, portPos, pubPort, m.insidePort);
    this.insideIp = m.insideIp;
    return R.ok;
  }

  /**
   * An ICMP error from an inside host about a packet it received through us: the
   * quote is (remote -> inside host:inside port). Rewrites the outer source and the
   * quoted destination to the public ones; to the public address itself it is
   * hairpinned like any packet.
   */
  #outboundIcmpError(buf: Uint8Array, off: number, l4: number, l4len: number, src: number, dst: number, now: number): number {
    const e = quote(buf, l4, l4len);
    if (e < 0) return -e;
    const pub = this.#publicIp;
    const eproto = buf[e + IP4.PROTO];
    const el4 = e + ip4HeaderLen(buf, e);
    const el4len = l4 + l4len - el4;
    // Inbound echo requests are never translated, so only TCP/UDP quotes can match.
    if (eproto !== P_TCP && eproto !== P_UDP) return eproto === P_ICMP ? R.no_session : R.unsupported_proto;
    if (readI32(buf, e + IP4.DST) !== src) return R.no_session;
    // Ports are at the same places in TCP and UDP.
    const insidePort = read16(buf, el4 + UDP.DPORT);
    const m: NaptMapping | undefined = this.table.mappingByInside(eproto, src, insidePort);
    if (m === undefined || m.find(readI32(buf, e + IP4.SRC), read16(buf, el4 + UDP.SPORT)) === undefined) return R.no_session;

    rewriteQuote(buf, off, l4, e, el4, el4len, eproto, IP4.SRC, IP4.DST, src, pub, el4 + UDP.DPORT, insidePort, m.publicPort);
    if (dst !== pub) return R.ok;
    const r = this.#inbound(buf, off, now, false);
    return r === R.ok ? R.hairpin : r;
  }
}

/**
 * Checks the packet quoted by an ICMP error at l4: returns its offset, or minus a
 * result code. The quote must hold an IPv4 header and the first 8 bytes of its L4
 * header (ports, or ICMP type..id), as RFC 792 guarantees. The ICMP checksum and
 * the quoted header checksum must verify (RFC 5508 REQ-3): the incremental update
 * would otherwise hand a corrupt error a valid checksum. The quoted L4 checksum is
 * not verified (REQ-3 says not to: the quote is usually truncated).
 */
function quote(buf: Uint8Array, l4: number, l4len: number): number {
  const e = l4 + 8;
  const elen = l4len - 8;
  if (elen < 20 + 8) return -R.malformed;
  if (ip4Version(buf, e) !== 4) return -R.malformed;
  const ehl = ip4HeaderLen(buf, e);
  if (ehl < 20 || ehl + 8 > elen) return -R.malformed;
  if (fold(sum16(buf, l4, l4len)) !== 0xffff || fold(sum16(buf, e, ehl)) !== 0xffff) return -R.bad_checksum;
  if (ip4FragOffset(buf, e) !== 0) return -R.fragment;
  return e;
}

/**
 * Rewrites an ICMP error: the outer address at `outerField` (IP4.DST inbound,
 * IP4.SRC outbound) and the quoted address at `quoteField` from `oldIp` to
 * `newIp`; the quoted port/id at portPos from oldPort to newPort; the quoted
 * header and L4 checksums; and the ICMP checksum for every word changed inside
 * the ICMP message (all at even offsets from its start: the quote starts 8 bytes
 * in and IHL is a multiple of 4).
 */
function rewriteQuote(
  buf: Uint8Array, off: number, l4: number, e: number, el4: number, el4len: number, eproto: number,
  outerField: number, quoteField: number, oldIp: number, newIp: number,
  portPos: number, oldPort: number, newPort: number,
): void {
  write32(buf, off + outerField, newIp);
  write16(buf, off + IP4.CSUM, csumReplace32(read16(buf, off + IP4.CSUM), oldIp, newIp));

  let ic = read16(buf, l4 + ICMP.CSUM);
  const ecs = read16(buf, e + IP4.CSUM);
  const ecsNew = csumReplace32(ecs, oldIp, newIp);
  write32(buf, e + quoteField, newIp);
  write16(buf, e + IP4.CSUM, ecsNew);
  ic = csumReplace16(csumReplace32(ic, oldIp, newIp), ecs, ecsNew);

  write16(buf, portPos, newPort);
  ic = csumReplace16(ic, oldPort, newPort);

  let csPos = -1;
  if (eproto === P_TCP) csPos = el4len >= TCP.CSUM + 2 ? el4 + TCP.CSUM : -1;
  else if (eproto === P_UDP) csPos = el4 + UDP.CSUM;
  else csPos = el4 + ICMP.CSUM;
  if (csPos >= 0) {
    const cs = read16(buf, csPos);
    if (!(eproto === P_UDP && cs === 0)) {
      let n = eproto === P_ICMP ? cs : csumReplace32(cs, oldIp, newIp);
      n = csumReplace16(n, oldPort, newPort);
      if (eproto === P_UDP && n === 0) n = 0xffff;
      write16(buf, csPos, n);
      ic = csumReplace16(ic, cs, n);
    }
  }
  write16(buf, l4 + ICMP.CSUM, ic);
}

/**
 * Rewrites the L4 port/id of a translated packet and its checksum: the source
 * port (`isSource`) or the destination port; the address change enters TCP/UDP
 * through the pseudo header, ICMP has none. With `partial` the field holds the
 * pseudo-header sum (see the header comment): only the address enters it, in the
 * opposite sense.
 */
function rewriteL4(
  buf: Uint8Array, l4: number, proto: number, oldIp: number, newIp: number,
  oldPort: number, newPort: number, isSource: boolean, partial: boolean,
): void {
  if (proto === P_TCP) {
    write16(buf, l4 + (isSource ? TCP.SPORT : TCP.DPORT), newPort);
    const cs = read16(buf, l4 + TCP.CSUM);
    write16(buf, l4 + TCP.CSUM, partial ? csumReplace32(cs, newIp, oldIp) : csumReplace16(csumReplace32(cs, oldIp, newIp), oldPort, newPort));
  } else if (proto === P_UDP) {
    write16(buf, l4 + (isSource ? UDP.SPORT : UDP.DPORT), newPort);
    const cs = read16(buf, l4 + UDP.CSUM);
    if (partial) {
      write16(buf, l4 + UDP.CSUM, csumReplace32(cs, newIp, oldIp));
    } else if (cs !== 0) {
      const n = csumReplace16(csumReplace32(cs, oldIp, newIp), oldPort, newPort);
      write16(buf, l4 + UDP.CSUM, n === 0 ? 0xffff : n);
    }
  } else {
    write16(buf, l4 + ICMP.ID, newPort);
    if (!partial) write16(buf, l4 + ICMP.CSUM, csumReplace16(read16(buf, l4 + ICMP.CSUM), oldPort, newPort));
  }
}

/**
 * Decrements TTL in place with an incremental header checksum update (TTL shares
 * a 16-bit word with Protocol). Returns false, leaving the packet untouched, when
 * TTL is 0 or 1: the packet must not be forwarded and the caller answers with
 * time exceeded.
 */
export function ip4DecrementTtl(buf: Uint8Array, off: number): boolean {
  const ttl = buf[off + IP4.TTL];
  if (ttl <= 1) return false;
  const proto = buf[off + IP4.PROTO];
  buf[off + IP4.TTL] = ttl - 1;
  write16(buf, off + IP4.CSUM, csumReplace16(read16(buf, off + IP4.CSUM), (ttl << 8) | proto, ((ttl - 1) << 8) | proto));
  return true;
}
