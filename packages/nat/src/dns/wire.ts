/*
 * The few pieces of the DNS message format (RFC 1035 4.1, RFC 6891 for the OPT
 * record) the gateway's DNS server needs: read a query's header and question (and
 * the client's EDNS payload size), write an answer to it, and check that an
 * upstream answer is one to the question asked. Errors are values: a query that
 * does not parse gives a reason, never an exception.
 *
 * A question's name is read as lowercase dotted text without the root's dot,
 * labels checked against RFC 1035's limits (63 per label, 255 in all); compression
 * pointers are refused in a question (no client sends them there). Answers point
 * at the question's name (0xC00C) instead of repeating it.
 */

export const DNS_HEADER = 12;
export const QTYPE = { A: 1, PTR: 12, AAAA: 28, ANY: 255, OPT: 41 } as const;
export const QCLASS_IN = 1;
export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
/** RFC 1035 4.2.1: without EDNS a UDP answer is at most 512 bytes. */
export const CLASSIC_UDP_SIZE = 512;

export interface DnsQuery {
  id: number;
  /** The header's flag bits as sent (RD is copied into the answer). */
  flags: number;
  opcode: number;
  qdcount: number;
  /** Lowercase, no trailing dot; '' for the root. */
  name: string;
  qtype: number;
  qclass: number;
  /** Offset (from the message start) just past the question: header + question are [0, questionEnd). */
  questionEnd: number;
  /** The client's EDNS UDP payload size, or 0 without an OPT record. */
  ednsSize: number;
}

export type DnsParseError = 'short' | 'response' | 'bad_name' | 'no_question';

const u16 = (b: Uint8Array, o: number): number => (b[o] << 8) | b[o + 1];

/** Reads the question name at `off`; returns [name, offset past it] or undefined. */
function readName(b: Uint8Array, off: number, end: number): [string, number] | undefined {
  let name = '';
  let total = 0;
  for (;;) {
    if (off >= end) return undefined;
    const n = b[off++];
    if (n === 0) break;
    if (n > 63 || off + n > end) return undefined; // a compression pointer (0xC0) or an extended label type
    total += n + 1;
    if (total > 255) return undefined;
    let label = '';
    for (let i = 0; i < n; i++) {
      let c = b[off + i];
      if (c >= 0x41 && c <= 0x5a) c += 0x20;
      label += String.fromCharCode(c);
    }
    name += name === '' ? label : `.${label}`;
    off += n;
  }
  return [name, off];
}

/** Skips a (possibly compressed) name of a resource record. */
function skipName(b: Uint8Array, off: number, end: number): number {
  for (;;) {
    if (off >= end) return -1;
    const n = b[off];
    if (n === 0) return off + 1;
    if ((n & 0xc0) === 0xc0) return off + 2 <= end ? off + 2 : -1;
    if (n > 63) return -1;
    off += 1 + n;
  }
}

/** The message's ID (header bytes 0-1). */
export function msgId(b: Uint8Array): number {
  return u16(b, 0);
}

/** Sets the message's ID in place. */
export function setMsgId(b: Uint8Array, id: number): void {
  b[0] = (id >> 8) & 0xff;
  b[1] = id & 0xff;
}

/** A query's header and single question, or why it is not one. */
export function parseQuery(b: Uint8Array, off: number, len: number): DnsQuery | DnsParseError {
  if (len < DNS_HEADER) return 'short';
  const end = off + len;
  const flags = u16(b, off + 2);
  if (flags & 0x8000) return 'response';
  const qdcount = u16(b, off + 4);
  const q: DnsQuery = {
    id: u16(b, off), flags, opcode: (flags >> 11) & 0xf, qdcount, name: '', qtype: 0, qclass: 0, questionEnd: DNS_HEADER, ednsSize: 0,
  };
  if (qdcount === 0) return q.opcode === 0 ? 'no_question' : q;
  const r = readName(b, off + DNS_HEADER, end);
  if (r === undefined) return 'bad_name';
  let p = r[1];
  if (p + 4 > end) return 'short';
  q.name = r[0];
  q.qtype = u16(b, p);
  q.qclass = u16(b, p + 2);
  p += 4;
  q.questionEnd = p - off;
  // EDNS: an OPT record among the additional records of a plain query.
  const an = u16(b, off + 6);
  const ns = u16(b, off + 8);
  const ar = u16(b, off + 10);
  if (qdcount === 1 && an === 0 && ns === 0) {
    for (let i = 0; i < ar && p < end; i++) {
      const s = skipName(b, p, end);
      if (s < 0 || s + 10 > end) break;
      const type = u16(b, s);
      if (type === QTYPE.OPT) q.ednsSize = Math.max(CLASSIC_UDP_SIZE, u16(b, s + 2));
      p = s + 10 + u16(b, s + 8);
    }
  }
  return q;
}

export interface DnsRecord {
  type: number;
  ttl: number;
  /** RDATA: 4 bytes for A, an encoded name for PTR. */
  data: Uint8Array;
}

/** A name as wire labels (lowercase as given). */
export function encodeName(name: string): Uint8Array {
  const labels = name === '' ? [] : name.split('.');
  const out = new Uint8Array(labels.reduce((n, l) => n + l.length + 1, 1));
  let p = 0;
  for (const l of labels) {
    out[p++] = l.length;
    for (let i = 0; i < l.length; i++) out[p++] = l.charCodeAt(i);
  }
  out[p] = 0;
  return out;
}

export function aData(ip: number): Uint8Array {
  return Uint8Array.of(ip >>> 24, (ip >>> 16) & 0xff, (ip >>> 8) & 0xff, ip & 0xff);
}

/**
 * Writes the answer to `q` (whose message is at query[qoff, ...)) into out[0, ...):
 * header, the question as asked, then `answers` (owner name: the question's).
 * `aa`: authoritative (our own names). Returns the length.
 */
export function writeAnswer(
  out: Uint8Array, query: Uint8Array, qoff: number, q: DnsQuery, rcode: number, answers: readonly DnsRecord[], aa: boolean,
): number {
  const qlen = q.qdcount === 0 ? DNS_HEADER : q.questionEnd;
  out.set(query.subarray(qoff, qoff + qlen), 0);
  // QR, the opcode asked, AA when ours, RD as asked, RA: we recurse (forward) for the rest.
  const flags = 0x8000 | (q.opcode << 11) | (aa ? 0x0400 : 0) | (q.flags & 0x0100) | 0x0080 | (rcode & 0xf);
  out[2] = flags >> 8;
  out[3] = flags & 0xff;
  out[4] = 0;
  out[5] = q.qdcount === 0 ? 0 : 1;
  out[6] = answers.length >> 8;
  out[7] = answers.length & 0xff;
  out.fill(0, 8, 12);
  let p = qlen;
  for (const a of answers) {
    out[p++] = 0xc0;
    out[p++] = DNS_HEADER;
    out[p++] = a.type >> 8;
    out[p++] = a.type & 0xff;
    out[p++] = 0;
    out[p++] = QCLASS_IN;
    out[p++] = a.ttl >>> 24;
    out[p++] = (a.ttl >>> 16) & 0xff;
    out[p++] = (a.ttl >>> 8) & 0xff;
    out[p++] = a.ttl & 0xff;
    out[p++] = a.data.length >> 8;
    out[p++] = a.data.length & 0xff;
    out.set(a.data, p);
    p += a.data.length;
  }
  return p;
}

/**
 * Is `ans` an answer to the question of `sent` (both whole messages)? QR set, and
 * the question section byte for byte, letters compared without case.
 */
export function answersQuestion(ans: Uint8Array, sent: Uint8Array, questionEnd: number): boolean {
  if (ans.length < questionEnd || !(ans[2] & 0x80)) return false;
  if (ans[4] !== sent[4] || ans[5] !== sent[5]) return false;
  for (let i = DNS_HEADER; i < questionEnd; i++) {
    let a = ans[i];
    let s = sent[i];
    if (a >= 0x41 && a <= 0x5a) a += 0x20;
    if (s >= 0x41 && s <= 0x5a) s += 0x20;
    if (a !== s) return false;
  }
  return true;
}

/**
 * An answer cut to header and question with TC set, as a server does when the
 * whole one does not fit (RFC 1035 4.2.1, RFC 2181 9): the client asks again over
 * TCP, or with a larger EDNS size. Returns the new length (in place).
 */
export function truncate(msg: Uint8Array, questionEnd: number): number {
  msg[2] |= 0x02;
  msg.fill(0, 6, 12);
  return questionEnd;
}

/** 4.3.2.1.in-addr.arpa -> 1.2.3.4 as a number, or -1. */
export function reverseIp4(name: string): number {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.in-addr\.arpa$/.exec(name);
  if (m === null) return -1;
  const o = [m[4], m[3], m[2], m[1]].map(Number);
  if (o.some((x) => x > 255)) return -1;
  return ((o[0] << 24) | (o[1] << 16) | (o[2] << 8) | o[3]) >>> 0;
}
