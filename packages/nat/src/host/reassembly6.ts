/*
 * Reassembly of the IPv6 fragments a VM sends to the host NAT.
 *
 * Model. A router forwards IPv6 fragments untouched (RFC 8200 4.5: only the
 * destination reassembles), and the routed and NPTv6 paths of route6.ts do so.
 * The host NAT is different: it is the flow's endpoint (its sockets send the
 * datagram again from the host), so it must see the whole datagram, ports
 * included, as any destination does. Before this module such fragments were
 * dropped (`fragment`), so a VM could not send a UDP datagram larger than its
 * MTU through the host NAT.
 *
 * Scope: fragments whose Fragment header follows the IPv6 header directly (what
 * Linux and every common stack send); one behind other extension headers is left
 * to the engines, which drop it as before. Datagrams are keyed by source,
 * destination and Identification (RFC 8200 4.5; the Next Header is the first
 * fragment's). Each fragment's data is copied (fragments are rare: no per-frame
 * fast path here), within bounds that make a fragment flood cost a fixed amount:
 * at most `maxDatagrams` datagrams in progress and `maxBytes` bytes held in all,
 * each datagram complete within `timeoutMs` (RFC 8200: 60 s) or dropped. One
 * source (the frame's source MAC, as the router's other per-VM limits) may hold
 * at most `maxDatagramsPerSource` of those datagrams and `maxBytesPerSource` of
 * those bytes: a VM that sends first fragments and never the rest fills its own
 * share for the timeout, not its neighbours' (counted `sourceFull`).
 *
 * Hostile input (RFC 5722): a fragment that overlaps another of its datagram
 * drops the whole datagram, and its later fragments too until the timeout (a
 * tombstone); an exact duplicate is ignored. A non-last fragment whose length is
 * not a multiple of 8, a fragment past the end the last one set, two different
 * ends, or a datagram over 65535 bytes drop the datagram. Every drop is counted
 * by reason; nothing throws.
 *
 * A complete datagram is written to `out` as a frame (the first fragment's
 * Ethernet header, then an IPv6 header without the Fragment header, Next Header
 * and Payload Length set) for the host NAT to handle as if it had arrived whole.
 * `out` is reused by the next datagram: its reader consumes it synchronously.
 */
import { ETH, ETH_HLEN, frag6Id, frag6More, frag6Offset, IP6, IP6_HLEN, read16, readMac, write16 } from '@vswitch/switch';

/** IPv6 Next Header of a Fragment header. */
export const NH_FRAGMENT = 44;

export interface Reassembly6Options {
  maxDatagrams: number;
  maxBytes: number;
  timeoutMs: number;
  maxDatagramsPerSource: number;
  maxBytesPerSource: number;
}

export const REASSEMBLY6_DEFAULTS: Readonly<Reassembly6Options> = Object.freeze({
  maxDatagrams: 64, maxBytes: 1 << 20, timeoutMs: 60_000, maxDatagramsPerSource: 16, maxBytesPerSource: 1 << 18,
});

export interface Reassembly6Counters {
  /** Fragments taken in (not counted below unless dropped). */
  fragments: number;
  /** Datagrams completed and handed on. */
  reassembled: number;
  /** Datagrams dropped because two of their fragments overlapped (RFC 5722), and fragments of a datagram so dropped. */
  overlap: number;
  /** Datagrams not complete within timeoutMs. */
  timeout: number;
  /** Fragments refused: maxDatagrams in progress or maxBytes held. */
  noRoom: number;
  /** Fragments refused: their source holds maxDatagramsPerSource or maxBytesPerSource already. */
  sourceFull: number;
  /** Datagrams over 65535 bytes of payload. */
  tooBig: number;
  /** Fragments that do not parse, or contradict their datagram (length, end). */
  malformed: number;
}

interface Part {
  off: number;
  data: Buffer;
}

interface Datagram {
  parts: Part[];
  /** The payload's length once the last fragment (M clear) came; -1 before. */
  total: number;
  bytes: number;
  deadline: number;
  /** Overlap seen: held nothing, drops its fragments until the deadline. */
  dead: boolean;
  /** The first fragment's Ethernet and IPv6 headers (54 bytes) and its Next Header. */
  head: Buffer | undefined;
  next: number;
  /** The source MAC whose share it counts in. */
  src: number;
}

/** What one source holds: datagrams in progress (tombstones included) and bytes. */
interface Share {
  datagrams: number;
  bytes: number;
}

const MAX_PAYLOAD = 65535;

export class Reassembly6 {
  readonly opts: Reassembly6Options;
  readonly counters: Reassembly6Counters = {
    fragments: 0, reassembled: 0, overlap: 0, timeout: 0, noRoom: 0, sourceFull: 0, tooBig: 0, malformed: 0,
  };
  /** The last datagram completed: a frame at [0, ETH_HLEN + length). */
  readonly out = Buffer.alloc(ETH_HLEN + IP6_HLEN + MAX_PAYLOAD);
  readonly #pending = new Map<string, Datagram>();
  readonly #shares = new Map<number, Share>();
  #bytes = 0;

  constructor(opts: Partial<Reassembly6Options> = {}) {
    this.opts = { ...REASSEMBLY6_DEFAULTS, ...opts };
  }

  /** Datagrams in progress (tombstones included) and bytes held. */
  get pending(): number { return this.#pending.size; }
  get bytes(): number { return this.#bytes; }

  /** Is the IPv6 packet at buf[ipOff..) a fragment this module takes (Fragment header first)? */
  static takes(buf: Uint8Array, ipOff: number): boolean {
    return buf[ipOff + IP6.NEXT] === NH_FRAGMENT;
  }

  /**
   * The fragment at buf[ipOff, ipOff+ipLen) (checkIpv6 passed; its frame's
   * Ethernet header before ipOff). Returns the IPv6 length of the datagram it
   * completed (in `out` at ETH_HLEN), or 0: held, or dropped (counted).
   */
  add(buf: Uint8Array, ipOff: number, ipLen: number, now: number): number {
    const c = this.counters;
    c.fragments++;
    this.expire(now);
    const fh = ipOff + IP6_HLEN;
    if (ipLen < IP6_HLEN + 8 || buf[ipOff + IP6.NEXT] !== NH_FRAGMENT) {
      c.malformed++;
      return 0;
    }
    const off = frag6Offset(buf, fh);
    const more = frag6More(buf, fh);
    const id = frag6Id(buf, fh);
    const len = ipLen - IP6_HLEN - 8;
    if ((more && (len & 7) !== 0) || (len === 0 && more)) {
      c.malformed++;
      return 0;
    }
    if (off + len > MAX_PAYLOAD) {
      c.tooBig++;
      return 0;
    }
    const key = keyOf(buf, ipOff, id);
    let d = this.#pending.get(key);
    if (d === undefined) {
      if (this.#pending.size >= this.opts.maxDatagrams) {
        c.noRoom++;
        return 0;
      }
      const src = readMac(buf, ipOff - ETH_HLEN + ETH.SRC);
      const sh = this.#shares.get(src);
      if (sh !== undefined && sh.datagrams >= this.opts.maxDatagramsPerSource) {
        c.sourceFull++;
        return 0;
      }
      d = { parts: [], total: -1, bytes: 0, deadline: now + this.opts.timeoutMs, dead: false, head: undefined, next: -1, src };
      this.#pending.set(key, d);
      if (sh === undefined) this.#shares.set(src, { datagrams: 1, bytes: 0 });
      else sh.datagrams++;
    }
    if (d.dead) {
      c.overlap++;
      return 0;
    }
    const end = off + len;
    // The end: set once by the last fragment; nothing may lie beyond it.
    if (!more) {
      if ((d.total >= 0 && d.total !== end) || d.parts.some((p) => p.off + p.data.length > end)) return this.#drop(key, d, 'malformed');
      d.total = end;
    } else if (d.total >= 0 && end > d.total) {
      return this.#drop(key, d, 'malformed');
    }
    for (const p of d.parts) {
      const pe = p.off + p.data.length;
      if (p.off === off && pe === end) return 0; // an exact duplicate: ignored
      if (off < pe && p.off < end) {
        // RFC 5722: overlapping fragments drop the whole datagram, and its later fragments.
        this.#release(d);
        d.dead = true;
        c.overlap++;
        return 0;
      }
    }
    const share = this.#shares.get(d.src)!;
    if (this.#bytes + len > this.opts.maxBytes || share.bytes + len > this.opts.maxBytesPerSource) {
      if (this.#bytes + len > this.opts.maxBytes) c.noRoom++;
      else c.sourceFull++;
      if (d.parts.length === 0) this.#forget(key, d);
      return 0;
    }
    d.parts.push({ off, data: Buffer.from(buf.subarray(fh + 8, fh + 8 + len)) });
    d.bytes += len;
    this.#bytes += len;
    share.bytes += len;
    if (off === 0) {
      d.head = Buffer.from(buf.subarray(ipOff - ETH_HLEN, ipOff + IP6_HLEN));
      d.next = buf[fh];
    }
    if (d.total < 0 || d.bytes !== d.total || d.head === undefined) return 0;
    // No overlaps and every byte of [0, total) counted once: complete.
    const o = this.out;
    o.set(d.head, 0);
    o[ETH_HLEN + IP6.NEXT] = d.next;
    write16(o, ETH_HLEN + IP6.PLEN, d.total);
    for (const p of d.parts) o.set(p.data, ETH_HLEN + IP6_HLEN + p.off);
    this.#forget(key, d);
    c.reassembled++;
    return IP6_HLEN + d.total;
  }

  /** Drops datagrams past their deadline (counted if incomplete), tombstones too. */
  expire(now: number): void {
    for (const [k, d] of this.#pending) {
      if (d.deadline > now) continue;
      if (!d.dead) this.counters.timeout++;
      this.#forget(k, d);
    }
  }

  /** Datagrams in progress and bytes held by the source MAC `src` (its share). */
  heldBy(src: number): Share {
    const sh = this.#shares.get(src);
    return { datagrams: sh?.datagrams ?? 0, bytes: sh?.bytes ?? 0 };
  }

  #drop(key: string, d: Datagram, why: 'malformed'): number {
    this.counters[why]++;
    this.#forget(key, d);
    return 0;
  }

  /** The datagram leaves the table, and its source's share. */
  #forget(key: string, d: Datagram): void {
    this.#release(d);
    this.#pending.delete(key);
    const sh = this.#shares.get(d.src)!;
    if (--sh.datagrams === 0) this.#shares.delete(d.src);
  }

  #release(d: Datagram): void {
    this.#bytes -= d.bytes;
    const sh = this.#shares.get(d.src);
    if (sh !== undefined) sh.bytes -= d.bytes;
    d.bytes = 0;
    d.parts = [];
    d.head = undefined;
  }
}

/** Source, destination and Identification as a Map key (fragments only: not a per-frame path). */
function keyOf(buf: Uint8Array, ipOff: number, id: number): string {
  let s = id.toString(16);
  for (let i = ipOff + IP6.SRC; i < ipOff + IP6.SRC + 32; i += 2) s += `:${read16(buf, i).toString(16)}`;
  return s;
}
