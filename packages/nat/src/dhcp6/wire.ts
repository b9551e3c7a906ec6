/*
 * DHCPv6 (RFC 8415) wire views: a client message (the UDP payload) read in place,
 * and a bounded writer for the server's replies.
 *
 * Reader. `parseDhcp6(buf, off, len, m)` is the only door for untrusted bytes. It
 * fills a caller-owned `Dhcp6View` (offsets into `buf`, no object tree, nothing
 * allocated) and returns DHCP6_OK or a `Dhcp6Error`; it never throws and never
 * reads outside buf[off, off+len). The top-level options are walked once: every
 * option's 4-byte header and its data must fit in the message (a truncated option
 * makes the whole message malformed: RFC 8415 16 "discard a message that ...
 * fails to parse"), so a loop cannot run away (each step advances at least four
 * bytes). Options the server reads are recorded by offset: Client ID and Server ID
 * (a DUID of 1-130 bytes), the first IA_NAS_MAX IA_NAs (each at least its 12
 * fixed bytes) and how many there are, Rapid Commit, the Option Request option, the first Client FQDN
 * (RFC 4704: a flags byte, then a name, read by `fqdnHost`); an option seen twice
 * where one is allowed (Client ID, Server ID) is malformed. Relay messages
 * (Relay-forward/-reply) are refused: the server serves its own link only.
 *
 * Inside an IA_NA, `iaNaAddress` walks the IA's options the same bounded way and
 * returns the offset of the first IA Address option (24 bytes at least) or -1.
 *
 * Writer. `Dhcp6Writer` fills a caller buffer from `off` up to `limit`: the 4-byte
 * header, then options; an option that would not fit is refused (false) and
 * nothing of it is written, so the server can drop a reply that lacks a required
 * option. IA_NA is written as `beginIaNa` ... `endIaNa` (the IA's length is fixed
 * up when it ends).
 */
import { read16, read32, write16, write32 } from '@vswitch/switch';

export const DHCP6_CLIENT_PORT = 546;
export const DHCP6_SERVER_PORT = 547;
/** 65535 - 8: the largest UDP payload (jumbograms are not DHCPv6's business). */
export const DHCP6_MAX_LEN = 65527;
/** RFC 8415 11.1: a DUID is at most 128 bytes after its 2-byte type. */
export const DUID_MAX = 130;

export const Dhcp6Msg = {
  SOLICIT: 1, ADVERTISE: 2, REQUEST: 3, CONFIRM: 4, RENEW: 5, REBIND: 6, REPLY: 7, RELEASE: 8, DECLINE: 9,
  RECONFIGURE: 10, INFORMATION_REQUEST: 11, RELAY_FORW: 12, RELAY_REPL: 13,
} as const;

export const Dhcp6Opt = {
  CLIENTID: 1, SERVERID: 2, IA_NA: 3, IA_TA: 4, IAADDR: 5, ORO: 6, PREFERENCE: 7, ELAPSED_TIME: 8, STATUS_CODE: 13,
  RAPID_COMMIT: 14, DNS_SERVERS: 23, DOMAIN_LIST: 24, IA_PD: 25, INFORMATION_REFRESH_TIME: 32, CLIENT_FQDN: 39,
} as const;

export const Dhcp6Status = { SUCCESS: 0, UNSPEC_FAIL: 1, NO_ADDRS_AVAIL: 2, NO_BINDING: 3, NOT_ON_LINK: 4, USE_MULTICAST: 5 } as const;

/** DUID types (RFC 8415 11.1). */
export const Duid = { LLT: 1, EN: 2, LL: 3, UUID: 4 } as const;
const HW_ETHERNET = 1;

/** IA_NAs of one message the view records (and the server serves); further ones are counted only. */
export const IA_NAS_MAX = 8;

/** IA_NA fixed part: IAID, T1, T2. */
export const IA_NA_FIXED = 12;
/** IA Address fixed part: address, preferred and valid lifetimes. */
export const IAADDR_FIXED = 24;

/** Field offsets: an option (RFC 8415 21.1), IA_NA's data (21.4), IA Address's data (21.6), a reply's UDP destination kept by port.ts. */
export const DHCP6_OPT = { CODE: 0, LEN: 2, DATA: 4 } as const;
export const IA_NA = { IAID: 0, T1: 4, T2: 8, OPTIONS: 12 } as const;
export const IAADDR = { ADDR: 0, PREFERRED: 16, VALID: 20 } as const;
export const STATUS = { CODE: 0, MESSAGE: 2 } as const;

/** The last 32 bits of the IPv6 address at buf[a, a+16): a pool address as the server keeps it. */
export const addrLow = (buf: Uint8Array, a: number): number => read32(buf, a + 12);
export function setAddrLow(buf: Uint8Array, a: number, v: number): void {
  write32(buf, a + 12, v);
}

/** A DUID-LLT (type 1, Ethernet) for `mac` at `time` (seconds since 2000): clients' usual DUID. */
export function duidLlt(mac: number, time: number): Uint8Array {
  const d = new Uint8Array(14);
  write16(d, 0, Duid.LLT);
  write16(d, 2, HW_ETHERNET);
  write32(d, 4, time);
  d[8] = Math.floor(mac / 0x10000000000) & 0xff;
  d[9] = Math.floor(mac / 0x100000000) & 0xff;
  write32(d, 10, mac >>> 0);
  return d;
}

export const DHCP6_OK = 0;
/** Why a message was refused: a closed set (the server counts each as `malformed`). */
export const Dhcp6Error = {
  SHORT: 1,        // shorter than the 4-byte header
  TOO_LONG: 2,     // longer than any UDP payload
  RELAY: 3,        // a relay message: not served
  BAD_OPTION: 4,   // an option's length runs past the message end
  BAD_DUID: 5,     // Client or Server ID empty or longer than 130 bytes
  DUPLICATE: 6,    // Client or Server ID twice
  BAD_IA: 7,       // IA_NA shorter than its fixed part
} as const;

/** The parsed message: offsets into the buffer it was parsed from (-1: absent). */
export interface Dhcp6View {
  type: number;
  xid: number;
  clientId: number;
  clientIdLen: number;
  serverId: number;
  serverIdLen: number;
  /** The first IA_NA's data (after its option header) and length. */
  iaNa: number;
  iaNaLen: number;
  iaNaCount: number;
  /** The first IA_NAS_MAX IA_NAs' data offsets and lengths (iaNas[0] is iaNa). */
  readonly iaNas: Int32Array;
  readonly iaNaLens: Int32Array;
  /** IA_TA and IA_PD options: not served, answered with NoAddrsAvail/ignored. */
  otherIas: number;
  rapidCommit: boolean;
  oro: number;
  oroLen: number;
  /** The first Client FQDN option's data (RFC 4704), -1: none. */
  fqdn: number;
  fqdnLen: number;
}

export function newDhcp6View(): Dhcp6View {
  return {
    type: 0, xid: 0, clientId: -1, clientIdLen: 0, serverId: -1, serverIdLen: 0, iaNa: -1, iaNaLen: 0, iaNaCount: 0,
    iaNas: new Int32Array(IA_NAS_MAX), iaNaLens: new Int32Array(IA_NAS_MAX), otherIas: 0, rapidCommit: false, oro: -1, oroLen: 0, fqdn: -1, fqdnLen: 0,
  };
}

/** Reads the message at buf[off, off+len) into `m`; DHCP6_OK or a Dhcp6Error. */
export function parseDhcp6(buf: Uint8Array, off: number, len: number, m: Dhcp6View): number {
  if (len < 4 || off < 0 || off + len > buf.length) return Dhcp6Error.SHORT;
  if (len > DHCP6_MAX_LEN) return Dhcp6Error.TOO_LONG;
  m.type = buf[off];
  m.xid = ((buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3]) >>> 0;
  m.clientId = m.serverId = m.iaNa = m.oro = m.fqdn = -1;
  m.clientIdLen = m.serverIdLen = m.iaNaLen = m.iaNaCount = m.otherIas = m.oroLen = m.fqdnLen = 0;
  m.rapidCommit = false;
  if (m.type === Dhcp6Msg.RELAY_FORW || m.type === Dhcp6Msg.RELAY_REPL) return Dhcp6Error.RELAY;
  const end = off + len;
  let p = off + 4;
  while (p < end) {
    if (p + 4 > end) return Dhcp6Error.BAD_OPTION;
    const code = read16(buf, p);
    const olen = read16(buf, p + 2);
    const d = p + 4;
    if (d + olen > end) return Dhcp6Error.BAD_OPTION;
    if (code === Dhcp6Opt.CLIENTID || code === Dhcp6Opt.SERVERID) {
      if (olen < 2 || olen > DUID_MAX) return Dhcp6Error.BAD_DUID;
      if (code === Dhcp6Opt.CLIENTID) {
        if (m.clientId >= 0) return Dhcp6Error.DUPLICATE;
        m.clientId = d;
        m.clientIdLen = olen;
      } else {
        if (m.serverId >= 0) return Dhcp6Error.DUPLICATE;
        m.serverId = d;
        m.serverIdLen = olen;
      }
    } else if (code === Dhcp6Opt.IA_NA) {
      if (olen < IA_NA_FIXED) return Dhcp6Error.BAD_IA;
      if (m.iaNaCount === 0) {
        m.iaNa = d;
        m.iaNaLen = olen;
      }
      if (m.iaNaCount < IA_NAS_MAX) {
        m.iaNas[m.iaNaCount] = d;
        m.iaNaLens[m.iaNaCount] = olen;
      }
      m.iaNaCount++;
    } else if (code === Dhcp6Opt.IA_TA || code === Dhcp6Opt.IA_PD) {
      m.otherIas++;
    } else if (code === Dhcp6Opt.RAPID_COMMIT) {
      m.rapidCommit = true;
    } else if (code === Dhcp6Opt.ORO && m.oro < 0) {
      m.oro = d;
      m.oroLen = olen;
    } else if (code === Dhcp6Opt.CLIENT_FQDN && m.fqdn < 0) {
      m.fqdn = d;
      m.fqdnLen = olen;
    }
    p = d + olen;
  }
  return DHCP6_OK;
}

export const iaNaIaid = (buf: Uint8Array, ia: number): number => read32(buf, ia);

/**
 * The offset of the first IA Address option's data in the IA_NA at buf[ia, ia+iaLen)
 * (the address at +0, lifetimes at +16 and +20), or -1: none, or the IA's options
 * do not parse.
 */
export function iaNaAddress(buf: Uint8Array, ia: number, iaLen: number): number {
  const end = ia + iaLen;
  let p = ia + IA_NA_FIXED;
  while (p + 4 <= end) {
    const code = read16(buf, p);
    const olen = read16(buf, p + 2);
    const d = p + 4;
    if (d + olen > end) return -1;
    if (code === Dhcp6Opt.IAADDR && olen >= IAADDR_FIXED) return d;
    p = d + olen;
  }
  return -1;
}

/**
 * The host label of the Client FQDN option at buf[d, d+len) (RFC 4704 4: a flags
 * byte, then a fully qualified or partial name in DNS wire format, RFC 1035
 * 3.1, uncompressed): its first label in lower case when it is a plain host
 * name ([a-z0-9-], 1-63, no hyphen at either end), else undefined. A name the
 * gateway's DNS could not serve (empty, binary, a compression pointer, a label
 * running past the option) is not one.
 */
export function fqdnHost(buf: Uint8Array, d: number, len: number): string | undefined {
  if (len < 3) return undefined;
  const n = buf[d + 1];
  if (n < 1 || n > 63 || 2 + n > len) return undefined;
  let s = '';
  for (let i = 0; i < n; i++) {
    let c = buf[d + 2 + i];
    if (c >= 0x41 && c <= 0x5a) c += 0x20;
    const ok = (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || (c === 0x2d && i > 0 && i < n - 1);
    if (!ok) return undefined;
    s += String.fromCharCode(c);
  }
  return s;
}

/** The Client FQDN option's flags (RFC 4704 4.1). */
export const FQDN_FLAG = { S: 1, O: 2, N: 4 } as const;

/**
 * The data of the Client FQDN option a server sends back (RFC 4704 6): the flags
 * it applied, then the name it uses for the client: `host` followed by `domain`
 * (one name in DNS wire format, root label included) when there is one, else
 * `host` alone as a partial name (no root label). The gateway's DNS always serves
 * the forward (AAAA) name of a named lease, so S is set, and O too when the
 * client asked the server not to (S clear, or N set: RFC 4704 4.1).
 */
export function fqdnReply(clientFlags: number, host: string, domain: Uint8Array | undefined): Uint8Array {
  const n = host.length;
  const out = new Uint8Array(2 + n + (domain?.length ?? 0));
  out[0] = FQDN_FLAG.S | ((clientFlags & FQDN_FLAG.S) === 0 || (clientFlags & FQDN_FLAG.N) !== 0 ? FQDN_FLAG.O : 0);
  out[1] = n;
  for (let i = 0; i < n; i++) out[2 + i] = host.charCodeAt(i);
  if (domain !== undefined) out.set(domain, 2 + n);
  return out;
}

/** The first name of a DNS wire-format name list (RFC 1035 3.1, root label included), or undefined. */
export function firstName(list: Uint8Array | undefined): Uint8Array | undefined {
  if (list === undefined) return undefined;
  let p = 0;
  while (p < list.length && list[p] !== 0) p += 1 + list[p];
  return p < list.length ? list.subarray(0, p + 1) : undefined;
}

/** Does the ORO at buf[oro, oro+len) ask for option `code`? */
export function oroHas(buf: Uint8Array, oro: number, len: number, code: number): boolean {
  for (let p = oro; p + 2 <= oro + len; p += 2) if (read16(buf, p) === code) return true;
  return false;
}

/**
 * The Ethernet address in a DUID-LLT or DUID-LL of hardware type 1 at
 * buf[d, d+len), or -1 (another type, another hardware, a short DUID).
 */
export function duidMac(buf: Uint8Array, d: number, len: number): number {
  if (len < 4 || read16(buf, d + 2) !== HW_ETHERNET) return -1;
  const type = read16(buf, d);
  const at = type === Duid.LLT ? d + 8 : type === Duid.LL ? d + 4 : -1;
  if (at < 0 || at + 6 !== d + len) return -1;
  return (buf[at] * 0x10000000000) + (buf[at + 1] * 0x100000000) + (((buf[at + 2] << 24) | (buf[at + 3] << 16) | (buf[at + 4] << 8) | buf[at + 5]) >>> 0);
}

/** A DUID-LL (type 3, Ethernet) for `mac`: the server's identifier. */
export function duidLl(mac: number): Uint8Array {
  const d = new Uint8Array(10);
  write16(d, 0, Duid.LL);
  write16(d, 2, HW_ETHERNET);
  d[4] = Math.floor(mac / 0x10000000000) & 0xff;
  d[5] = Math.floor(mac / 0x100000000) & 0xff;
  write32(d, 6, mac >>> 0);
  return d;
}

/** Bounded writer of one reply (see the header). */
export class Dhcp6Writer {
  #p: number;
  #ia = -1;
  constructor(readonly buf: Uint8Array, readonly off: number, readonly limit: number) {
    this.#p = off;
  }

  /** The message header; false if not even that fits. */
  header(type: number, xid: number): boolean {
    if (this.off + 4 > this.limit) return false;
    this.buf[this.off] = type;
    this.buf[this.off + 1] = (xid >>> 16) & 0xff;
    this.buf[this.off + 2] = (xid >>> 8) & 0xff;
    this.buf[this.off + 3] = xid & 0xff;
    this.#p = this.off + 4;
    return true;
  }

  #room(n: number): boolean {
    return this.#p + 4 + n <= this.limit;
  }

  #head(code: number, len: number): void {
    write16(this.buf, this.#p, code);
    write16(this.buf, this.#p + 2, len);
    this.#p += 4;
  }

  /** An option whose data is src[so, so+len). */
  copy(code: number, src: Uint8Array, so: number, len: number): boolean {
    if (!this.#room(len)) return false;
    this.#head(code, len);
    this.buf.set(src.subarray(so, so + len), this.#p);
    this.#p += len;
    return true;
  }

  bytes(code: number, data: Uint8Array): boolean {
    return this.copy(code, data, 0, data.length);
  }

  empty(code: number): boolean {
    if (!this.#room(0)) return false;
    this.#head(code, 0);
    return true;
  }

  u8(code: number, v: number): boolean {
    if (!this.#room(1)) return false;
    this.#head(code, 1);
    this.buf[this.#p++] = v;
    return true;
  }

  status(code: number, message: string): boolean {
    const text = Buffer.from(message, 'utf8');
    if (!this.#room(2 + text.length)) return false;
    this.#head(Dhcp6Opt.STATUS_CODE, 2 + text.length);
    write16(this.buf, this.#p, code);
    this.buf.set(text, this.#p + 2);
    this.#p += 2 + text.length;
    return true;
  }

  /** Opens an IA_NA (IAID, T1, T2); its options follow until endIaNa. */
  beginIaNa(iaid: number, t1: number, t2: number): boolean {
    if (this.#ia >= 0 || !this.#room(IA_NA_FIXED)) return false;
    this.#ia = this.#p;
    this.#head(Dhcp6Opt.IA_NA, 0);
    write32(this.buf, this.#p, iaid);
    write32(this.buf, this.#p + 4, t1);
    write32(this.buf, this.#p + 8, t2);
    this.#p += IA_NA_FIXED;
    return true;
  }

  iaAddr(addr: Uint8Array, preferred: number, valid: number): boolean {
    if (!this.#room(IAADDR_FIXED)) return false;
    this.#head(Dhcp6Opt.IAADDR, IAADDR_FIXED);
    this.buf.set(addr.subarray(0, 16), this.#p);
    write32(this.buf, this.#p + 16, preferred);
    write32(this.buf, this.#p + 20, valid);
    this.#p += IAADDR_FIXED;
    return true;
  }

  endIaNa(): void {
    if (this.#ia < 0) return;
    write16(this.buf, this.#ia + 2, this.#p - this.#ia - 4);
    this.#ia = -1;
  }

  /** Bytes written so far. */
  get length(): number { return this.#p - this.off; }
}
