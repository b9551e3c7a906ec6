/*
 * DHCP (RFC 2131/2132) over BOOTP (RFC 951): a checked view of a message, i.e. the
 * UDP payload, and a bounded writer for replies. Slow path: one view object per
 * message is fine here, unlike the Ethernet/IPv4 views.
 *
 * Reader. `parseDhcp` is the only door for untrusted bytes and returns either a
 * `DhcpMessage` or a `DhcpError` code; it never throws and never reads outside
 * buf[off..off+len). It accepts op 1/2 with htype 1 / hlen 6 only (Ethernet: a
 * chaddr we can key leases on), a 240-byte fixed part ending in the magic cookie,
 * and requires option 53 (message type), as smoltcp does. Options are read
 * forgivingly, like smoltcp's `options()`: PAD is skipped, END stops, an option
 * whose length runs past the end stops the scan (what came before is kept), a
 * missing END is the end of the buffer. Every step advances at least one byte,
 * so a message of PADs or a broken length cannot loop; work is linear in `len`,
 * and `len` is capped at the largest UDP payload. An option that appears more
 * than once is concatenated (RFC 3396). Typed getters ignore an option of the
 * wrong length (a 3-byte requested IP is absent, not trusted) and an illegal
 * value (option 57 below 576).
 * Not read: option overload (52, options continued in sname/file). Clients send it
 * only for very large requests, which a server with our handful of options never
 * needs; the server then sees a message without the overloaded options (e.g. no
 * message type: dropped as malformed).
 *
 * Writer. `DhcpWriter` fills a caller buffer: fixed part, cookie, options, END,
 * zero padding to the BOOTP minimum of 300 bytes (RFC 951's 64-byte vend area;
 * some clients and relays drop shorter messages, as passt's dhcp.c notes). It is
 * bounded like smoltcp's option writer: an option that would not fit before the
 * END byte, or whose value exceeds 255 bytes, is refused (false) and nothing is
 * written, so the caller decides whether a missing option is fatal. Every byte up
 * to the returned length is written (sname, file and padding zeroed).
 * Callers write option 53 first: wattcp32 and mTCP expect it there (passt).
 */
import { formatIp4, read16, read32, readMac, write16, write32, writeMac } from '@vswitch/switch';

/** Offsets of the fixed part (RFC 2131 figure 1). */
export const BOOTP = {
  OP: 0, HTYPE: 1, HLEN: 2, HOPS: 3, XID: 4, SECS: 8, FLAGS: 10,
  CIADDR: 12, YIADDR: 16, SIADDR: 20, GIADDR: 24, CHADDR: 28, SNAME: 44, FILE: 108,
  COOKIE: 236, OPTIONS: 240,
} as const;
export const CHADDR_LEN = 16;
/** Fixed part + cookie: the shortest message we accept. */
export const DHCP_MIN_LEN = BOOTP.OPTIONS;
/** RFC 951: a BOOTP message is at least 300 bytes; replies are padded to it. */
export const BOOTP_MIN_LEN = 300;
/** 65535 - 20 (IPv4) - 8 (UDP): nothing longer can arrive in one datagram. */
export const DHCP_MAX_LEN = 65507;
/** RFC 2131 §2: the minimum every client must accept, IP and UDP headers included. */
export const DHCP_DEFAULT_MAX_MESSAGE = 576;
export const IP_UDP_HLEN = 28;
export const DHCP_MAGIC = 0x63825363;
export const BOOTREQUEST = 1;
export const BOOTREPLY = 2;
export const FLAG_BROADCAST = 0x8000;
export const HTYPE_ETHERNET = 1;

export const DhcpMsg = {
  DISCOVER: 1, OFFER: 2, REQUEST: 3, DECLINE: 4, ACK: 5, NAK: 6, RELEASE: 7, INFORM: 8,
} as const;

const MSG_NAMES = ['', 'DISCOVER', 'OFFER', 'REQUEST', 'DECLINE', 'ACK', 'NAK', 'RELEASE', 'INFORM'];
export const dhcpMsgName = (t: number): string => MSG_NAMES[t] || `type${t}`;

/** Option codes (RFC 2132, RFC 3442 for 121). Codes stay numbers; unknown ones are kept. */
export const Opt = {
  PAD: 0, SUBNET_MASK: 1, ROUTER: 3, DNS: 6, HOSTNAME: 12, DOMAIN: 15, MTU: 26, BROADCAST: 28,
  REQUESTED_IP: 50, LEASE_TIME: 51, OVERLOAD: 52, MESSAGE_TYPE: 53, SERVER_ID: 54, PARAM_LIST: 55,
  MESSAGE: 56, MAX_MESSAGE_SIZE: 57, RENEWAL_TIME: 58, REBINDING_TIME: 59, CLIENT_ID: 61,
  CLASSLESS_ROUTES: 121, END: 255,
} as const;

export const DHCP_OK = 0;
export const DhcpError = {
  TRUNCATED: 1,       // shorter than the fixed part + cookie
  TOO_LONG: 2,        // longer than any UDP payload
  OP: 3,              // op neither BOOTREQUEST nor BOOTREPLY
  HARDWARE: 4,        // not htype 1 / hlen 6 (Ethernet)
  COOKIE: 5,          // no DHCP magic cookie: plain BOOTP or garbage
  NO_MESSAGE_TYPE: 6, // option 53 missing or not 1 byte
} as const;
const ERROR_NAMES = ['ok', 'truncated', 'too_long', 'op', 'hardware', 'cookie', 'no_message_type'];
export const dhcpErrorName = (e: number): string => ERROR_NAMES[e] ?? `error${e}`;

/**
 * Visits the options in buf[off..off+len) (the area after the cookie): PAD skipped,
 * END or a truncated option stops. Returns the number of options visited.
 */
export function scanOptions(
  buf: Uint8Array, off: number, len: number,
  visit: (code: number, valueOff: number, valueLen: number) => void,
): number {
  const end = off + len;
  let p = off;
  let n = 0;
  while (p < end) {
    const code = buf[p];
    if (code === Opt.PAD) { p++; continue; }
    if (code === Opt.END) break;
    if (p + 2 > end) break;
    const vlen = buf[p + 1];
    if (p + 2 + vlen > end) break;
    visit(code, p + 2, vlen);
    n++;
    p += 2 + vlen;
  }
  return n;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
export function toHex(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += HEX[bytes[i]];
  return s;
}
/** Even-length hex to bytes, or undefined. */
export function fromHex(text: string): Uint8Array | undefined {
  if (text.length % 2 !== 0 || !/^[0-9a-f]*$/i.test(text)) return undefined;
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** A message that passed `parseDhcp`: header fields straight from the bytes, options indexed once. */
export class DhcpMessage {
  /** code -> flat [valueOff, valueLen, valueOff, valueLen, ...] in message order. */
  readonly #index: Map<number, number[]>;

  private constructor(readonly buf: Uint8Array, readonly off: number, readonly len: number, index: Map<number, number[]>) {
    this.#index = index;
  }

  /** Checks and indexes a DHCP message at buf[off..off+len); a DhcpError code if refused. */
  static parse(buf: Uint8Array, off: number, len: number): DhcpMessage | number {
    // A len past the buffer is cut at the buffer's end, never read past.
    if (!Number.isInteger(off) || !Number.isInteger(len) || off < 0 || len < 0 || off > buf.length) return DhcpError.TRUNCATED;
    len = Math.min(len, buf.length - off);
    if (len < DHCP_MIN_LEN) return DhcpError.TRUNCATED;
    if (len > DHCP_MAX_LEN) return DhcpError.TOO_LONG;
    const op = buf[off + BOOTP.OP];
    if (op !== BOOTREQUEST && op !== BOOTREPLY) return DhcpError.OP;
    if (buf[off + BOOTP.HTYPE] !== HTYPE_ETHERNET || buf[off + BOOTP.HLEN] !== 6) return DhcpError.HARDWARE;
    if (read32(buf, off + BOOTP.COOKIE) !== DHCP_MAGIC) return DhcpError.COOKIE;
    const index = new Map<number, number[]>();
    scanOptions(buf, off + BOOTP.OPTIONS, len - BOOTP.OPTIONS, (code, voff, vlen) => {
      const at = index.get(code);
      if (at === undefined) index.set(code, [voff, vlen]);
      else at.push(voff, vlen);
    });
    const msg = new DhcpMessage(buf, off, len, index);
    if (msg.option(Opt.MESSAGE_TYPE)?.length !== 1) return DhcpError.NO_MESSAGE_TYPE;
    return msg;
  }

  get op(): number { return this.buf[this.off + BOOTP.OP]; }
  get htype(): number { return this.buf[this.off + BOOTP.HTYPE]; }
  get hlen(): number { return this.buf[this.off + BOOTP.HLEN]; }
  get hops(): number { return this.buf[this.off + BOOTP.HOPS]; }
  get xid(): number { return read32(this.buf, this.off + BOOTP.XID); }
  get secs(): number { return read16(this.buf, this.off + BOOTP.SECS); }
  get flags(): number { return read16(this.buf, this.off + BOOTP.FLAGS); }
  /** The client asks for broadcast replies (it cannot receive unicast before it has an address). */
  get broadcast(): boolean { return (this.flags & FLAG_BROADCAST) !== 0; }
  /** Client address, set only when the client is BOUND, RENEWING, REBINDING (or in INFORM). */
  get ciaddr(): number { return read32(this.buf, this.off + BOOTP.CIADDR); }
  /** "Your" address: the one a server assigns. */
  get yiaddr(): number { return read32(this.buf, this.off + BOOTP.YIADDR); }
  /** Next server (boot). */
  get siaddr(): number { return read32(this.buf, this.off + BOOTP.SIADDR); }
  /** Relay agent address. */
  get giaddr(): number { return read32(this.buf, this.off + BOOTP.GIADDR); }
  /** Client hardware address: the first 6 of the 16 chaddr bytes (hlen is 6 after parse). */
  get chaddr(): number { return readMac(this.buf, this.off + BOOTP.CHADDR); }

  /** Option 53: always present after parse. */
  get messageType(): number { return this.#u8(Opt.MESSAGE_TYPE) as number; }
  /** Option 50, INIT-REBOOT/SELECTING/DECLINE. */
  get requestedIp(): number | undefined { return this.#u32(Opt.REQUESTED_IP); }
  /** Option 54: the server the client selected or is talking to. */
  get serverId(): number | undefined { return this.#u32(Opt.SERVER_ID); }
  /** Option 61 raw bytes (RFC 2132: at least 2 bytes, type + id). */
  get clientIdBytes(): Uint8Array | undefined {
    const v = this.option(Opt.CLIENT_ID);
    return v !== undefined && v.length >= 2 ? v : undefined;
  }
  /** Option 61 as lowercase hex: the lease key when present. */
  get clientId(): string | undefined {
    const v = this.clientIdBytes;
    return v === undefined ? undefined : toHex(v);
  }
  /** Option 12 as latin1 text, trailing NULs (sent by some clients) removed. Not sanitised. */
  get hostname(): string | undefined {
    const v = this.option(Opt.HOSTNAME);
    if (v === undefined) return undefined;
    let n = v.length;
    while (n > 0 && v[n - 1] === 0) n--;
    // Capped at one option's worth: concatenated instances (RFC 3396) could be 64 KiB.
    return n === 0 ? undefined : Buffer.from(v.buffer, v.byteOffset, Math.min(n, 255)).toString('latin1');
  }
  /** Option 55. */
  get parameterRequestList(): Uint8Array | undefined {
    const v = this.option(Opt.PARAM_LIST);
    return v !== undefined && v.length >= 1 ? v : undefined;
  }
  /** Option 57 (whole IP datagram); values below the legal minimum of 576 are ignored. */
  get maxMessageSize(): number | undefined {
    const v = this.option(Opt.MAX_MESSAGE_SIZE);
    if (v === undefined || v.length !== 2) return undefined;
    const n = (v[0] << 8) | v[1];
    return n >= DHCP_DEFAULT_MAX_MESSAGE ? n : undefined;
  }

  has(code: number): boolean { return this.#index.has(code); }

  /** The value of an option (instances concatenated per RFC 3396), or undefined. A subarray when it occurs once. */
  option(code: number): Uint8Array | undefined {
    const at = this.#index.get(code);
    if (at === undefined) return undefined;
    if (at.length === 2) return this.buf.subarray(at[0], at[0] + at[1]);
    let total = 0;
    for (let i = 1; i < at.length; i += 2) total += at[i];
    const out = new Uint8Array(total);
    let p = 0;
    for (let i = 0; i < at.length; i += 2) {
      out.set(this.buf.subarray(at[i], at[i] + at[i + 1]), p);
      p += at[i + 1];
    }
    return out;
  }

  /** Option codes in first-seen order. */
  codes(): number[] { return [...this.#index.keys()]; }

  /** One line for traces: "REQUEST xid=0x… chaddr=… ciaddr=… req=… sid=…". */
  describe(): string {
    const req = this.requestedIp;
    const sid = this.serverId;
    return `${dhcpMsgName(this.messageType)} xid=0x${this.xid.toString(16)} chaddr=${this.chaddr.toString(16).padStart(12, '0')}` +
      ` ciaddr=${formatIp4(this.ciaddr)}` + (req !== undefined ? ` req=${formatIp4(req)}` : '') +
      (sid !== undefined ? ` sid=${formatIp4(sid)}` : '');
  }

  #u8(code: number): number | undefined {
    const v = this.option(code);
    return v !== undefined && v.length === 1 ? v[0] : undefined;
  }

  #u32(code: number): number | undefined {
    const v = this.option(code);
    return v !== undefined && v.length === 4 ? read32(v, 0) : undefined;
  }
}

/** Checks and indexes a DHCP message at buf[off..off+len); a DhcpError code if refused. Never throws. */
export function parseDhcp(buf: Uint8Array, off: number, len: number): DhcpMessage | number {
  return DhcpMessage.parse(buf, off, len);
}

export interface DhcpHeader {
  op: number;
  xid: number;
  secs?: number;
  flags: number;
  ciaddr: number;
  yiaddr: number;
  siaddr: number;
  giaddr: number;
  chaddr: number;
}

/**
 * Builds one message into buf[off..off+limit). Use: header(), then option()s with
 * 53 first, then finish(). Each call returns false (and writes nothing) when it
 * would not fit; finish() returns the message length, or -1 if header() failed.
 */
export class DhcpWriter {
  readonly #buf: Uint8Array;
  readonly #off: number;
  readonly #end: number;
  #pos = -1;
  /** Options refused for lack of room or length. */
  refused = 0;

  constructor(buf: Uint8Array, off = 0, limit = buf.length - off) {
    this.#buf = buf;
    this.#off = off;
    this.#end = off + Math.max(0, Math.min(limit, buf.length - off));
  }

  /** Room left for option bytes (the END byte already set aside). */
  get room(): number { return this.#pos < 0 ? 0 : this.#end - this.#pos - 1; }

  header(h: DhcpHeader): boolean {
    const b = this.#buf;
    const o = this.#off;
    if (this.#end - o < BOOTP_MIN_LEN) return false;
    b[o + BOOTP.OP] = h.op;
    b[o + BOOTP.HTYPE] = HTYPE_ETHERNET;
    b[o + BOOTP.HLEN] = 6;
    b[o + BOOTP.HOPS] = 0;
    write32(b, o + BOOTP.XID, h.xid);
    write16(b, o + BOOTP.SECS, h.secs ?? 0);
    write16(b, o + BOOTP.FLAGS, h.flags);
    write32(b, o + BOOTP.CIADDR, h.ciaddr);
    write32(b, o + BOOTP.YIADDR, h.yiaddr);
    write32(b, o + BOOTP.SIADDR, h.siaddr);
    write32(b, o + BOOTP.GIADDR, h.giaddr);
    b.fill(0, o + BOOTP.CHADDR, o + BOOTP.COOKIE);
    writeMac(b, o + BOOTP.CHADDR, h.chaddr);
    write32(b, o + BOOTP.COOKIE, DHCP_MAGIC);
    this.#pos = o + BOOTP.OPTIONS;
    return true;
  }

  option(code: number, value: ArrayLike<number>): boolean {
    const n = value.length;
    if (this.#pos < 0 || code === Opt.PAD || code === Opt.END || code < 0 || code > 255 || n > 255 ||
        this.#pos + 2 + n + 1 > this.#end) {
      this.refused++;
      return false;
    }
    const b = this.#buf;
    b[this.#pos] = code;
    b[this.#pos + 1] = n;
    for (let i = 0; i < n; i++) b[this.#pos + 2 + i] = value[i] & 0xff;
    this.#pos += 2 + n;
    return true;
  }

  u8(code: number, v: number): boolean { return this.option(code, [v & 0xff]); }
  u16(code: number, v: number): boolean { return this.option(code, [(v >>> 8) & 0xff, v & 0xff]); }
  u32(code: number, v: number): boolean { return this.option(code, be32(v)); }
  /** A list of IPv4 addresses (router, DNS). An empty list is not written. */
  ips(code: number, ips: readonly number[]): boolean {
    if (ips.length === 0 || ips.length > 63) { this.refused++; return false; }
    const v: number[] = [];
    for (const ip of ips) v.push(...be32(ip));
    return this.option(code, v);
  }
  /** ASCII text (hostname, domain); other code points are refused, not mangled. */
  text(code: number, s: string): boolean {
    const v: number[] = [];
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c > 0x7e) { this.refused++; return false; }
      v.push(c);
    }
    return this.option(code, v);
  }

  /** END, zero padding to 300 bytes; the message length, or -1 without a header. */
  finish(): number {
    if (this.#pos < 0) return -1;
    this.#buf[this.#pos++] = Opt.END;
    const min = this.#off + BOOTP_MIN_LEN;
    if (this.#pos < min) {
      this.#buf.fill(0, this.#pos, min);
      this.#pos = min;
    }
    const len = this.#pos - this.#off;
    this.#pos = -1;
    return len;
  }
}

function be32(v: number): number[] {
  return [v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];
}

export interface ClasslessRoute {
  /** Destination network (host bits must be zero). */
  dest: number;
  prefixLen: number;
  gateway: number;
}

/**
 * Option 121 value (RFC 3442 §3): per route, the prefix length, then only the
 * significant octets of the destination (ceil(prefix/8)), then the router.
 * 10.0.0.0/8 via r is [8, 10, r0..r3]; 0.0.0.0/0 via r is [0, r0..r3].
 */
export function encodeClasslessRoutes(routes: readonly ClasslessRoute[]): Uint8Array {
  const out: number[] = [];
  for (const r of routes) {
    out.push(r.prefixLen);
    const sig = Math.ceil(r.prefixLen / 8);
    const d = be32(r.dest);
    for (let i = 0; i < sig; i++) out.push(d[i]);
    out.push(...be32(r.gateway));
  }
  return Uint8Array.from(out);
}

/** The inverse, for tests and the uplink's DHCP client: undefined if malformed (RFC 3442 says ignore it then). */
export function decodeClasslessRoutes(v: Uint8Array): ClasslessRoute[] | undefined {
  const out: ClasslessRoute[] = [];
  let p = 0;
  while (p < v.length) {
    const prefixLen = v[p++];
    if (prefixLen > 32) return undefined;
    const sig = Math.ceil(prefixLen / 8);
    if (p + sig + 4 > v.length) return undefined;
    let dest = 0;
    for (let i = 0; i < 4; i++) dest = dest * 256 + (i < sig ? v[p + i] : 0);
    p += sig;
    out.push({ dest, prefixLen, gateway: read32(v, p) });
    p += 4;
  }
  return out;
}
