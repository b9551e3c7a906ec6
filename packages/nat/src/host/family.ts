/*
 * Both address families in the host-socket NAT's engines, as one kind of number.
 *
 * Model. The engines (tcp.ts, udp.ts, icmp.ts) key their sessions on numbers:
 * an IPv4 address is its 32-bit value, and a session key is ip*65536+port. An
 * IPv6 address gets a number too: IP6_BASE plus its slot in an interning table
 * (Ip6Table), so every Map, key and budget of the engines works unchanged for
 * IPv6 (keys stay below 2^53), and `isIp6(ip)` is the family test. The 16 bytes
 * live in the table's one byte array (`bytes`, at `at(id)`), from where the IPv6
 * header of a frame towards a VM is written; nothing is allocated per packet: the
 * lookup hashes the address's four 32-bit words in place into an open-addressing
 * index.
 *
 * Lifetime: interning is a lookup that inserts. Slots are reclaimed by mark and
 * sweep at the NAT's tick (about 1 Hz): the engines mark the addresses their live
 * sessions hold, and every other slot is freed and the index rebuilt. Between two
 * ticks the table may fill (a VM sending to many IPv6 destinations that open no
 * session); intern then answers -1 and the engine drops the packet (`tableFull`,
 * counted here). The capacity is the NAT's session budget plus slack, so live
 * sessions alone never fill it.
 *
 * Also here: the header-level helpers the engines share for both families (the
 * IP header of a frame towards a VM and its pseudo-header sum, text forms).
 */
import {
  IP6, IP6_HLEN, IP4_MIN_HLEN, IPV6_OK, Ip6WalkError, checkIpv6, formatIp4, formatIp6, ip6PseudoSum, ip6Upper, newIp6Upper, parseIp4,
  parseIp6, pseudoSum, read32, write16, writeIp4, writeIp6, ip6Equal, IPV4_OK, checkIpv4, ip4Dst, ip4HeaderLen, ip4IsFragment, ip4Proto,
  ip4Src, ip4TotalLen,
} from '@vswitch/switch';

/** The first number of an IPv6 address (above every IPv4 address). */
export const IP6_BASE = 0x100000000;

export const isIp6 = (ip: number): boolean => ip >= IP6_BASE;

/** The IP header length of the frames the engines build towards a VM of `ip`'s family. */
export const ipHeaderLen = (ip: number): number => (ip >= IP6_BASE ? IP6_HLEN : IP4_MIN_HLEN);

export const ICMPV6 = 58;

export class Ip6Table {
  /** 16 bytes per slot. */
  readonly bytes: Uint8Array;
  readonly cap: number;
  /** Interning refused because the table was full (until the next sweep). */
  tableFull = 0;
  #count = 0;
  /** Open addressing, linear probing: slot+1, or 0 for empty. */
  #index: Int32Array;
  readonly #mask: number;
  readonly #used: Uint8Array;
  readonly #marked: Uint8Array;
  readonly #free: Int32Array;
  #nfree: number;
  /**
   * The link-layer (MAC) address a VM's packets from this address came with, 0
   * unknown: where the NAT's packets to it go (the host NAT learns it, nat.ts).
   * Cleared when the slot is freed.
   */
  readonly link: Float64Array;

  constructor(cap: number) {
    this.cap = Math.max(16, Math.floor(cap));
    this.bytes = new Uint8Array(this.cap * 16);
    let size = 16;
    while (size < this.cap * 2) size *= 2;
    this.#index = new Int32Array(size);
    this.#mask = size - 1;
    this.#used = new Uint8Array(this.cap);
    this.link = new Float64Array(this.cap);
    this.#marked = new Uint8Array(this.cap);
    this.#free = new Int32Array(this.cap);
    for (let i = 0; i < this.cap; i++) this.#free[i] = this.cap - 1 - i;
    this.#nfree = this.cap;
  }

  get count(): number { return this.#count; }

  /** Where the address of `id` starts in `bytes`. */
  at(id: number): number { return (id - IP6_BASE) * 16; }

  /** The number of the address at buf[off, off+16), interned; -1 when the table is full (counted). */
  intern(buf: Uint8Array, off: number): number {
    const b = this.bytes;
    const idx = this.#index;
    const mask = this.#mask;
    let h = hashAt(buf, off) & mask;
    for (;;) {
      const e = idx[h];
      if (e === 0) break;
      if (ip6Equal(b, (e - 1) * 16, buf, off)) return IP6_BASE + e - 1;
      h = (h + 1) & mask;
    }
    if (this.#nfree === 0) {
      this.tableFull++;
      return -1;
    }
    const slot = this.#free[--this.#nfree];
    b.set(buf.subarray(off, off + 16), slot * 16);
    this.#used[slot] = 1;
    this.#count++;
    idx[h] = slot + 1;
    return IP6_BASE + slot;
  }

  /** Sweep: keep the slots marked since the last sweep, free the others. */
  mark(id: number): void {
    if (id >= IP6_BASE) this.#marked[id - IP6_BASE] = 1;
  }

  sweep(): number {
    let freed = 0;
    const used = this.#used;
    const marked = this.#marked;
    for (let s = 0; s < this.cap; s++) {
      if (used[s] === 1 && marked[s] === 0) {
        used[s] = 0;
        this.link[s] = 0;
        this.#free[this.#nfree++] = s;
        this.#count--;
        freed++;
      }
      marked[s] = 0;
    }
    if (freed > 0) {
      const idx = this.#index;
      idx.fill(0);
      const b = this.bytes;
      for (let s = 0; s < this.cap; s++) {
        if (used[s] === 0) continue;
        let h = hashAt(b, s * 16) & this.#mask;
        while (idx[h] !== 0) h = (h + 1) & this.#mask;
        idx[h] = s + 1;
      }
    }
    return freed;
  }

  format(id: number): string {
    return formatIp6(this.bytes, this.at(id));
  }
}

/** A hash of the address at buf[off, off+16), over its four 32-bit words. */
function hashAt(buf: Uint8Array, off: number): number {
  let h = 0x9e3779b9;
  for (let k = 0; k < 4; k++) {
    h = Math.imul(h ^ read32(buf, off + 4 * k), 0x85ebca6b);
    h ^= h >>> 13;
  }
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * The addresses of one NAT: the IPv6 table and the text forms of both
 * families. One per HostNat, shared by its engines (each engine alone in a
 * unit test gets its own).
 */
export class Addrs {
  readonly ip6: Ip6Table;

  constructor(cap = 1 << 17) {
    this.ip6 = new Ip6Table(cap);
  }

  /** "192.0.2.1" or "2001:db8::1". */
  format(ip: number): string {
    return ip >= IP6_BASE ? this.ip6.format(ip) : formatIp4(ip);
  }

  /** "192.0.2.1:80" or "[2001:db8::1]:80". */
  endpoint(ip: number, port: number): string {
    return ip >= IP6_BASE ? `[${this.ip6.format(ip)}]:${port}` : `${formatIp4(ip)}:${port}`;
  }

  /**
   * A socket's address text as a number: IPv4, an IPv4-mapped IPv6 address as
   * its IPv4, or IPv6 interned; -1 when it does not parse or the table is full.
   */
  parse(text: string): number {
    if (!text.includes(':')) return parseIp4(text);
    if (text.startsWith('::ffff:') && text.includes('.')) return parseIp4(text.slice(7));
    const b = parseIp6(text);
    return b === undefined ? -1 : this.ip6.intern(b, 0);
  }

  /**
   * IPv6 text as a socket reports it (rinfo.address: hex groups, one "::") to
   * its number, interned; -1 for anything else (embedded IPv4, a zone) or a full
   * table. No regex and no allocation: it runs for every datagram towards a VM.
   */
  parse6(text: string): number {
    const b = this.#scratch;
    const g = this.#groups;
    let words = 0;
    let gap = -1;
    let v = 0;
    let digits = 0;
    const n = text.length;
    for (let i = 0; i < n; i++) {
      const ch = text.charCodeAt(i);
      if (ch === 58) {
        if (digits > 0) {
          if (words >= 8) return -1;
          g[words++] = v;
        }
        if (i + 1 < n && text.charCodeAt(i + 1) === 58) {
          // "::": only once, and not ":::".
          if (gap >= 0 || (i + 2 < n && text.charCodeAt(i + 2) === 58)) return -1;
          gap = words;
          i++;
        } else if (digits === 0 || i + 1 === n) {
          // A lone ':' must sit between two groups.
          return -1;
        }
        v = 0;
        digits = 0;
        continue;
      }
      let d: number;
      if (ch >= 48 && ch <= 57) d = ch - 48;
      else if (ch >= 97 && ch <= 102) d = ch - 87;
      else if (ch >= 65 && ch <= 70) d = ch - 55;
      else return -1;
      if (++digits > 4) return -1;
      v = v * 16 + d;
    }
    if (digits > 0) {
      if (words >= 8) return -1;
      g[words++] = v;
    }
    if (gap < 0) {
      if (words !== 8) return -1;
    } else {
      if (words > 7) return -1;
      // The groups after "::" move to the end; zeros fill the gap.
      const shift = 8 - words;
      for (let k = words - 1; k >= gap; k--) g[k + shift] = g[k];
      for (let k = gap; k < gap + shift; k++) g[k] = 0;
    }
    for (let k = 0; k < 8; k++) write16(b, 2 * k, g[k]);
    return this.ip6.intern(b, 0);
  }

  readonly #scratch = new Uint8Array(16);
  readonly #groups = new Uint16Array(8);

  /**
   * Writes the IP header of a packet from `src` to `dst` (same family) with
   * `l4len` bytes of `proto` after it at buf[ip...), and returns the unfolded
   * pseudo-header sum of its checksum. IPv4: TTL 64, `id`, `frag` (DF); IPv6:
   * hop limit 64.
   */
  writeHeader(buf: Uint8Array, ip: number, src: number, dst: number, proto: number, l4len: number, id: number, frag: number): number {
    if (dst >= IP6_BASE) {
      const t = this.ip6;
      writeIp6(buf, ip, l4len, proto, 64, t.bytes, t.at(src), t.bytes, t.at(dst));
      return ip6PseudoSum(buf, ip, l4len, proto);
    }
    writeIp4(buf, ip, IP4_MIN_HLEN + l4len, id, frag, 64, proto, src, dst);
    return pseudoSum(src, dst, proto, l4len);
  }
}

/** The engines' view of an IP packet from a VM: readIp fills one the caller keeps. */
export interface IpPacket {
  src: number;
  dst: number;
  proto: number;
  /** The upper-layer header and its length (to the IP length). */
  l4: number;
  l4len: number;
}

/** readIp's answers. */
export const READ = { OK: 0, MALFORMED: 1, FRAGMENT: 2, FULL: 3 } as const;

const upper = newIp6Upper();

/**
 * Checks the IP packet buf[ipOff, ipOff+ipLen) from a VM, of either family, and
 * reads it into `out`: IPv4 (header checksum verified), or IPv6 (extension
 * headers walked to the upper layer; src and dst interned). READ.OK, or why not:
 * MALFORMED, FRAGMENT (no reassembly), FULL (the address table, counted there).
 */
export function readIp(addrs: Addrs, buf: Uint8Array, ipOff: number, ipLen: number, out: IpPacket): number {
  if (buf[ipOff] >>> 4 === 6) return readIp6(addrs, buf, ipOff, ipLen, out);
  if (checkIpv4(buf, ipOff, ipLen) !== IPV4_OK) return READ.MALFORMED;
  if (ip4IsFragment(buf, ipOff)) return READ.FRAGMENT;
  const hl = ip4HeaderLen(buf, ipOff);
  out.src = ip4Src(buf, ipOff);
  out.dst = ip4Dst(buf, ipOff);
  out.proto = ip4Proto(buf, ipOff);
  out.l4 = ipOff + hl;
  out.l4len = ip4TotalLen(buf, ipOff) - hl;
  return READ.OK;
}

/** readIp of an IPv6 packet. */
export function readIp6(addrs: Addrs, buf: Uint8Array, ipOff: number, ipLen: number, out: IpPacket): number {
  if (checkIpv6(buf, ipOff, ipLen) !== IPV6_OK) return READ.MALFORMED;
  const r = ip6Upper(buf, ipOff, upper);
  if (r === Ip6WalkError.NOT_FIRST_FRAGMENT || (r === IPV6_OK && upper.fragment)) return READ.FRAGMENT;
  if (r !== IPV6_OK) return READ.MALFORMED;
  const t = addrs.ip6;
  const src = t.intern(buf, ipOff + IP6.SRC);
  const dst = src < 0 ? -1 : t.intern(buf, ipOff + IP6.DST);
  if (dst < 0) return READ.FULL;
  out.src = src;
  out.dst = dst;
  out.proto = upper.proto;
  out.l4 = upper.off;
  out.l4len = upper.len;
  return READ.OK;
}
