import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { segmentForTest } from '@vswitch/netdev';
import { checkIpv4, parseIp4 } from '@vswitch/switch';
import { parseForward } from './forwards.js';
import { ip4DecrementTtl, Napt, NAPT_RESULTS, naptDropped, NaptResult, type NaptResultName } from './translate.js';
import type { NaptTableOptions } from './table.js';

// ---- Packets built from scratch, with checksums from this file's own code ----

const ip = (s: string): number => parseIp4(s);
const PUB = ip('192.0.2.1');
const A = ip('10.0.10.2');
const B = ip('10.0.10.3');
const R = ip('198.51.100.7');
const R2 = ip('203.0.113.9');
const RT = ip('203.0.113.1'); // a router on the path, source of ICMP errors
const T0 = 1_700_000_000_000;

const SYN = 0x02;
const ACK = 0x10;
const FIN = 0x01;
const PSH = 0x08;

function w16(b: Uint8Array, o: number, v: number): void { b[o] = (v >>> 8) & 0xff; b[o + 1] = v & 0xff; }
function w32(b: Uint8Array, o: number, v: number): void { w16(b, o, v >>> 16); w16(b, o + 2, v & 0xffff); }
const r16 = (b: Uint8Array, o: number): number => (b[o] << 8) | b[o + 1];
const r32 = (b: Uint8Array, o: number): number => r16(b, o) * 0x10000 + r16(b, o + 2);

/** One's-complement sum of b[from..to) (odd tail padded with zero), plus acc, folded to 16 bits. */
function onesSum(b: Uint8Array, from: number, to: number, acc = 0): number {
  let s = acc;
  for (let i = from; i < to; i += 2) s += b[i] * 256 + (i + 1 < to ? b[i + 1] : 0);
  while (s > 0xffff) s = (s % 0x10000) + Math.floor(s / 0x10000);
  return s;
}
const cksum = (b: Uint8Array, from: number, to: number, acc = 0): number => 0xffff - onesSum(b, from, to, acc);
const pseudo = (src: number, dst: number, proto: number, len: number): number =>
  Math.floor(src / 0x10000) + (src % 0x10000) + Math.floor(dst / 0x10000) + (dst % 0x10000) + proto + len;

interface IpOpts { src: number; dst: number; ttl?: number; id?: number; frag?: number; options?: number[] }

function ipv4(o: IpOpts, proto: number, l4: Uint8Array): Uint8Array {
  const opt = o.options ?? [];
  const hl = 20 + opt.length;
  const p = new Uint8Array(hl + l4.length);
  p[0] = 0x40 | (hl / 4);
  w16(p, 2, p.length);
  w16(p, 4, o.id ?? 0x1c46);
  w16(p, 6, o.frag ?? 0x4000);
  p[8] = o.ttl ?? 64;
  p[9] = proto;
  w32(p, 12, o.src);
  w32(p, 16, o.dst);
  p.set(opt, 20);
  w16(p, 10, cksum(p, 0, hl));
  p.set(l4, hl);
  return p;
}

interface TcpOpts { src: number; dst: number; sport: number; dport: number; flags: number; seq?: number; ack?: number; payload?: number[]; options?: number[] }
function tcpSeg(o: TcpOpts): Uint8Array {
  const opt = o.options ?? [];
  const hl = 20 + opt.length;
  const pay = o.payload ?? [];
  const s = new Uint8Array(hl + pay.length);
  w16(s, 0, o.sport);
  w16(s, 2, o.dport);
  w32(s, 4, o.seq ?? 0x12345678);
  w32(s, 8, o.ack ?? 0);
  s[12] = (hl / 4) << 4;
  s[13] = o.flags;
  w16(s, 14, 64240);
  s.set(opt, 20);
  s.set(pay, hl);
  w16(s, 16, cksum(s, 0, s.length, pseudo(o.src, o.dst, 6, s.length)));
  return s;
}
const tcpPkt = (o: TcpOpts, ipo: Partial<IpOpts> = {}): Uint8Array => ipv4({ src: o.src, dst: o.dst, ...ipo }, 6, tcpSeg(o));

interface UdpOpts { src: number; dst: number; sport: number; dport: number; payload?: number[]; noChecksum?: boolean }
function udpDgram(o: UdpOpts): Uint8Array {
  const pay = o.payload ?? [1, 2, 3];
  const u = new Uint8Array(8 + pay.length);
  w16(u, 0, o.sport);
  w16(u, 2, o.dport);
  w16(u, 4, u.length);
  u.set(pay, 8);
  if (!o.noChecksum) {
    const c = cksum(u, 0, u.length, pseudo(o.src, o.dst, 17, u.length));
    w16(u, 6, c === 0 ? 0xffff : c); // RFC 768: a computed 0 is sent as all ones
  }
  return u;
}
const udpPkt = (o: UdpOpts, ipo: Partial<IpOpts> = {}): Uint8Array => ipv4({ src: o.src, dst: o.dst, ...ipo }, 17, udpDgram(o));

function icmpMsg(type: number, code: number, word: number, payload: ArrayLike<number>): Uint8Array {
  const m = new Uint8Array(8 + payload.length);
  m[0] = type;
  m[1] = code;
  w32(m, 4, word);
  m.set(payload, 8);
  w16(m, 2, cksum(m, 0, m.length));
  return m;
}
const echoPkt = (type: number, src: number, dst: number, id: number, seq = 1, payload = [0xde, 0xad, 0xbe, 0xef, 0x01]): Uint8Array =>
  ipv4({ src, dst }, 1, icmpMsg(type, 0, id * 0x10000 + seq, payload));
const errPkt = (type: number, code: number, src: number, dst: number, quote: Uint8Array): Uint8Array =>
  ipv4({ src, dst, frag: 0 }, 1, icmpMsg(type, code, 0, quote));

/** Every checksum of a packet recomputed from scratch; returns the ones that fail. */
function badChecksums(p: Uint8Array): string[] {
  const bad: string[] = [];
  const hl = (p[0] & 0x0f) * 4;
  const total = r16(p, 2);
  if (onesSum(p, 0, hl) !== 0xffff) bad.push('ip');
  const l4check = (q: Uint8Array, qhl: number, qtotal: number, where: string): void => {
    const proto = q[9];
    const src = r32(q, 12);
    const dst = r32(q, 16);
    if (proto === 6 && onesSum(q, qhl, qtotal, pseudo(src, dst, 6, qtotal - qhl)) !== 0xffff) bad.push(`${where}tcp`);
    if (proto === 17 && r16(q, qhl + 6) !== 0 && onesSum(q, qhl, qtotal, pseudo(src, dst, 17, qtotal - qhl)) !== 0xffff) bad.push(`${where}udp`);
    if (proto === 1 && onesSum(q, qhl, qtotal) !== 0xffff) bad.push(`${where}icmp`);
  };
  l4check(p, hl, total, '');
  if (p[9] === 1 && [3, 11, 12].includes(p[hl])) {
    const q = p.subarray(hl + 8, total);
    const qhl = (q[0] & 0x0f) * 4;
    if (onesSum(q, 0, qhl) !== 0xffff) bad.push('quoted ip');
    const qtotal = r16(q, 2);
    if (qtotal <= q.length) l4check(q, qhl, qtotal, 'quoted '); // complete quote: its L4 checksum can be checked
  }
  return bad;
}

// ---- Running packets through the NAPT inside a guarded buffer ----

const LEAD = 14;
const TAIL = 18;
const GUARD = 0xa5;

function mk(table: NaptTableOptions = {}): Napt {
  return new Napt({ publicIp: PUB, table: { seed: 1, ...table } });
}

/** The bytes around buf[off..off+len) still hold GUARD. */
function guardsIntact(buf: Uint8Array, off: number, len: number): boolean {
  for (let i = 0; i < off; i++) if (buf[i] !== GUARD) return false;
  for (let i = off + len; i < buf.length; i++) if (buf[i] !== GUARD) return false;
  return true;
}

interface Run { r: NaptResultName; out: Uint8Array; insideIp: number }

/** Places the packet between guard bytes (an Ethernet header's worth before, padding after), translates, checks the guards. */
function run(napt: Napt, dir: 'out' | 'in', pkt: Uint8Array, now = T0, partial = false): Run {
  const buf = new Uint8Array(LEAD + pkt.length + TAIL).fill(GUARD);
  buf.set(pkt, LEAD);
  expect(checkIpv4(buf, LEAD, pkt.length + TAIL)).toBe(0);
  napt.insideIp = 0;
  const code = dir === 'out' ? napt.outbound(buf, LEAD, now, partial) : napt.inbound(buf, LEAD, now, partial);
  expect(guardsIntact(buf, LEAD, pkt.length)).toBe(true);
  return { r: NAPT_RESULTS[code], out: buf.slice(LEAD, LEAD + pkt.length), insideIp: napt.insideIp };
}

/** Translates and expects `ok`/`hairpin` and a packet byte-identical to `expected` (built from scratch). */
function expectTranslation(napt: Napt, dir: 'out' | 'in', pkt: Uint8Array, expected: Uint8Array, result: NaptResultName = 'ok', now = T0): Run {
  const x = run(napt, dir, pkt, now);
  expect(x.r).toBe(result);
  expect(badChecksums(x.out)).toEqual([]);
  expect([...x.out]).toEqual([...expected]);
  return x;
}

// ---- Tests ----

describe('TCP', () => {
  it('outbound SYN: source becomes the public address, port preserved, checksums right', () => {
    const n = mk();
    const syn = { src: A, dst: R, sport: 40000, dport: 443, flags: SYN, options: [2, 4, 5, 0xb4] };
    expectTranslation(n, 'out', tcpPkt(syn), tcpPkt({ ...syn, src: PUB }));
    expect(n.table.size).toBe(1);
  });

  it('inbound SYN+ACK goes back to the inside host and establishes the session', () => {
    const n = mk();
    run(n, 'out', tcpPkt({ src: A, dst: R, sport: 40000, dport: 443, flags: SYN }));
    const sa = { src: R, dst: PUB, sport: 443, dport: 40000, flags: SYN | ACK, ack: 0x12345679 };
    const x = expectTranslation(n, 'in', tcpPkt(sa), tcpPkt({ ...sa, dst: A }));
    expect(x.insideIp).toBe(A);
    expect(n.table.sessions(T0)[0]).toMatchObject({ state: 'established', inside: '10.0.10.2:40000', remote: '198.51.100.7:443' });
  });

  it('data with IP options and an odd payload length, both ways', () => {
    const n = mk();
    const ipo = { options: [1, 1, 1, 0], ttl: 17 };
    run(n, 'out', tcpPkt({ src: A, dst: R, sport: 40000, dport: 443, flags: SYN }));
    const data = { src: A, dst: R, sport: 40000, dport: 443, flags: PSH | ACK, payload: [...'GET / HTTP/1.1\r\n\r\n!'].map((c) => c.charCodeAt(0)) };
    expectTranslation(n, 'out', tcpPkt(data, ipo), tcpPkt({ ...data, src: PUB }, ipo));
    const back = { src: R, dst: PUB, sport: 443, dport: 40000, flags: ACK, payload: [1, 2, 3] };
    expectTranslation(n, 'in', tcpPkt(back, ipo), tcpPkt({ ...back, dst: A }, ipo));
  });

  it('a port taken by another host is replaced from the range, and restored inbound', () => {
    const n = mk({ portRange: { lo: 30000, hi: 30099 } });
    run(n, 'out', tcpPkt({ src: A, dst: R, sport: 30050, dport: 80, flags: SYN }));
    const x = run(n, 'out', tcpPkt({ src: B, dst: R, sport: 30050, dport: 80, flags: SYN }));
    expect(x.r).toBe('ok');
    const pubPort = r16(x.out, 20);
    expect(pubPort).not.toBe(30050);
    expect(pubPort).toBeGreaterThanOrEqual(30000);
    expect(pubPort).toBeLessThanOrEqual(30099);
    expect(x.out.subarray(0, 20).slice(12, 16)).toEqual(new Uint8Array([192, 0, 2, 1]));
    expect(badChecksums(x.out)).toEqual([]);
    const sa = { src: R, dst: PUB, sport: 80, dport: pubPort, flags: SYN | ACK };
    const y = expectTranslation(n, 'in', tcpPkt(sa), tcpPkt({ ...sa, dst: B, dport: 30050 }));
    expect(y.insideIp).toBe(B);
  });

  it('opens sessions only on a bare SYN', () => {
    const n = mk();
    expect(run(n, 'out', tcpPkt({ src: A, dst: R, sport: 40000, dport: 443, flags: ACK })).r).toBe('tcp_not_syn');
    expect(run(n, 'out', tcpPkt({ src: A, dst: R, sport: 40000, dport: 443, flags: 0x04 })).r).toBe('tcp_not_syn');
    expect(run(n, 'out', tcpPkt({ src: A, dst: R, sport: 40000, dport: 443, flags: SYN | ACK })).r).toBe('tcp_not_syn');
    expect(n.table.size).toBe(0);
    expect(n.countOf('tcp_not_syn')).toBe(3);
  });

  it('follows the connection to closed with the transitory timeout', () => {
    const n = mk();
    const out = (flags: number, t: number): NaptResultName => run(n, 'out', tcpPkt({ src: A, dst: R, sport: 40000, dport: 443, flags }), t).r;
    const inn = (flags: number, t: number): NaptResultName => run(n, 'in', tcpPkt({ src: R, dst: PUB, sport: 443, dport: 40000, flags }), t).r;
    expect(out(SYN, T0)).toBe('ok');
    expect(inn(SYN | ACK, T0)).toBe('ok');
    expect(out(ACK, T0)).toBe('ok');
    expect(n.table.expire(T0 + 7439_000)).toBe(0);
    expect(out(FIN | ACK, T0 + 7000_000)).toBe('ok');
    expect(inn(FIN | ACK, T0 + 7000_000)).toBe('ok');
    expect(out(ACK, T0 + 7000_000)).toBe('ok');
    expect(n.table.sessions(T0 + 7000_000)[0].state).toBe('closed');
    expect(n.table.expire(T0 + 7240_000)).toBe(1);
    expect(inn(ACK, T0 + 7240_000)).toBe('no_session');
  });
});

describe('UDP', () => {
  it('translates both ways with the checksum updated', () => {
    const n = mk();
    const q = { src: A, dst: R, sport: 53000, dport: 53, payload: [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7] };
    expectTranslation(n, 'out', udpPkt(q), udpPkt({ ...q, src: PUB }));
    const a = { src: R, dst: PUB, sport: 53, dport: 53000, payload: [0x12, 0x34, 0x81, 0x80] };
    expect(expectTranslation(n, 'in', udpPkt(a), udpPkt({ ...a, dst: A })).insideIp).toBe(A);
  });

  it('leaves a zero checksum zero', () => {
    const n = mk();
    const q = { src: A, dst: R, sport: 53000, dport: 53, noChecksum: true };
    const x = expectTranslation(n, 'out', udpPkt(q), udpPkt({ ...q, src: PUB }));
    expect(r16(x.out, 26)).toBe(0);
    const a = { src: R, dst: PUB, sport: 53, dport: 53000, noChecksum: true };
    expect(r16(expectTranslation(n, 'in', udpPkt(a), udpPkt({ ...a, dst: A })).out, 26)).toBe(0);
  });

  it('sends a checksum that computes to 0 as 0xffff', () => {
    // Find a payload whose translated datagram sums to zero checksum.
    let w = 0;
    for (; w < 0x10000; w++) {
      const u = udpDgram({ src: PUB, dst: R, sport: 53000, dport: 53, payload: [w >>> 8, w & 0xff], noChecksum: true });
      if (cksum(u, 0, u.length, pseudo(PUB, R, 17, u.length)) === 0) break;
    }
    expect(w).toBeLessThan(0x10000);
    const q = { src: A, dst: R, sport: 53000, dport: 53, payload: [w >>> 8, w & 0xff] };
    const x = expectTranslation(mk(), 'out', udpPkt(q), udpPkt({ ...q, src: PUB }));
    expect(r16(x.out, 26)).toBe(0xffff);
  });

  it('maps endpoint-independently: one inside ip:port to two remotes, one public port', () => {
    const n = mk({ portRange: { lo: 20000, hi: 20999 } });
    const a = run(n, 'out', udpPkt({ src: A, dst: R, sport: 5000, dport: 3478 }));
    const b = run(n, 'out', udpPkt({ src: A, dst: R2, sport: 5000, dport: 3478 }));
    expect(a.r).toBe('ok');
    expect(b.r).toBe('ok');
    expect(r16(a.out, 20)).toBe(r16(b.out, 20));
    expect(n.table.size).toBe(2);
    expect(n.table.mappingCount).toBe(1);
  });

  it('filters inbound by address: a known remote on a new port passes, a stranger does not', () => {
    const n = mk();
    run(n, 'out', udpPkt({ src: A, dst: R, sport: 5000, dport: 3478 }));
    expect(run(n, 'in', udpPkt({ src: R2, dst: PUB, sport: 3478, dport: 5000 })).r).toBe('filtered');
    const alt = { src: R, dst: PUB, sport: 3479, dport: 5000 };
    expectTranslation(n, 'in', udpPkt(alt), udpPkt({ ...alt, dst: A }));
    expect(n.table.size).toBe(2);
    expect(run(n, 'in', udpPkt({ src: R, dst: PUB, sport: 53, dport: 5001 })).r).toBe('no_session');
    expect(n.countOf('filtered')).toBe(1);
    expect(n.countOf('no_session')).toBe(1);
  });

  it('TCP from a known remote on a new port needs a SYN', () => {
    const n = mk();
    run(n, 'out', tcpPkt({ src: A, dst: R, sport: 5000, dport: 80, flags: SYN }));
    expect(run(n, 'in', tcpPkt({ src: R, dst: PUB, sport: 81, dport: 5000, flags: ACK })).r).toBe('tcp_not_syn');
    expect(run(n, 'in', tcpPkt({ src: R, dst: PUB, sport: 81, dport: 5000, flags: SYN })).r).toBe('ok');
    expect(run(n, 'in', tcpPkt({ src: R2, dst: PUB, sport: 81, dport: 5000, flags: SYN })).r).toBe('filtered');
  });
});

describe('ICMP echo', () => {
  it('translates the echo id out and the reply back', () => {
    const n = mk();
    expectTranslation(n, 'out', echoPkt(8, A, R, 0x1234, 7), echoPkt(8, PUB, R, 0x1234, 7));
    const x = expectTranslation(n, 'in', echoPkt(0, R, PUB, 0x1234, 7), echoPkt(0, R, A, 0x1234, 7));
    expect(x.insideIp).toBe(A);
  });

  it('gives a second host with the same id another id, and restores it', () => {
    const n = mk();
    run(n, 'out', echoPkt(8, A, R, 1));
    const x = run(n, 'out', echoPkt(8, B, R, 1));
    const pubId = r16(x.out, 24);
    expect(pubId).not.toBe(1);
    expect(badChecksums(x.out)).toEqual([]);
    expectTranslation(n, 'in', echoPkt(0, R, PUB, pubId), echoPkt(0, R, B, 1));
    expect(run(n, 'in', echoPkt(0, R2, PUB, pubId)).r).toBe('filtered');
    expect(run(n, 'in', echoPkt(0, R, PUB, 999)).r).toBe('no_session');
  });

  it('leaves pings of the public address to the router', () => {
    const n = mk();
    expect(run(n, 'in', echoPkt(8, R, PUB, 5)).r).toBe('local');
    expect(run(n, 'out', echoPkt(8, A, PUB, 5)).r).toBe('local');
    expect(naptDropped(NaptResult.local)).toBe(false);
    expect(n.table.size).toBe(0);
  });

  it('does not translate other ICMP', () => {
    const n = mk();
    expect(run(n, 'out', echoPkt(0, A, R, 5)).r).toBe('unsupported_icmp');
    expect(run(n, 'out', ipv4({ src: A, dst: R }, 1, icmpMsg(13, 0, 0, new Uint8Array(12)))).r).toBe('unsupported_icmp');
    expect(run(n, 'in', ipv4({ src: R, dst: PUB }, 1, icmpMsg(9, 0, 0, []))).r).toBe('unsupported_icmp');
  });
});

describe('port forwards', () => {
  it('sends inbound connections to the inside target; replies leave from the forward port', () => {
    const n = mk();
    n.forwards.add(parseForward({ proto: 'tcp', public: '8080', inside: '10.0.10.3:80' }));
    const syn = { src: R, dst: PUB, sport: 5555, dport: 8080, flags: SYN };
    expect(expectTranslation(n, 'in', tcpPkt(syn), tcpPkt({ ...syn, dst: B, dport: 80 })).insideIp).toBe(B);
    const sa = { src: B, dst: R, sport: 80, dport: 5555, flags: SYN | ACK };
    expectTranslation(n, 'out', tcpPkt(sa), tcpPkt({ ...sa, src: PUB, sport: 8080 }));
    // Any remote may connect; each connection is its own session on the one mapping.
    const syn2 = { src: R2, dst: PUB, sport: 7777, dport: 8080, flags: SYN };
    expectTranslation(n, 'in', tcpPkt(syn2), tcpPkt({ ...syn2, dst: B, dport: 80 }));
    expect(n.table.size).toBe(2);
    expect(n.table.mappingCount).toBe(1);
    expect(n.table.sessions(T0).map((s) => [s.state, s.forwarded])).toEqual([['established', true], ['syn_sent', true]]);
    expect(run(n, 'in', tcpPkt({ ...syn, sport: 5556, flags: ACK })).r).toBe('tcp_not_syn');
  });

  it('maps a range 1:1', () => {
    const n = mk();
    n.forwards.add(parseForward({ proto: 'udp', public: '6000-6009', inside: '10.0.10.3:7000' }));
    const d = { src: R, dst: PUB, sport: 1111, dport: 6003 };
    expectTranslation(n, 'in', udpPkt(d), udpPkt({ ...d, dst: B, dport: 7003 }));
    const back = { src: B, dst: R, sport: 7003, dport: 1111 };
    expectTranslation(n, 'out', udpPkt(back), udpPkt({ ...back, src: PUB, sport: 6003 }));
    // The target's first packet out, before any inbound, also leaves from its forward port.
    const first = { src: B, dst: R2, sport: 7009, dport: 2222 };
    expectTranslation(n, 'out', udpPkt(first), udpPkt({ ...first, src: PUB, sport: 6009 }));
  });

  it('reserves forward ports in the dynamic range and takes them from live mappings when added', () => {
    const n = mk();
    run(n, 'out', udpPkt({ src: A, dst: R, sport: 9000, dport: 53 }));
    run(n, 'out', udpPkt({ src: B, dst: R, sport: 9100, dport: 53 }));
    expect(n.table.mappingByPublic(17, 9000)?.insideIp).toBe(A);
    n.forwards.add(parseForward({ proto: 'udp', public: '9000', inside: '10.0.10.3:9100' }));
    expect(n.table.size).toBe(0); // A's mapping lost its port; B's endpoint belongs to the forward now
    const x = run(n, 'out', udpPkt({ src: A, dst: R, sport: 9000, dport: 53 }));
    expect(r16(x.out, 20)).not.toBe(9000);
    const d = { src: R2, dst: PUB, sport: 1, dport: 9000 };
    expectTranslation(n, 'in', udpPkt(d), udpPkt({ ...d, dst: B, dport: 9100 }));
    // Deleting the forward ends its sessions; the port is dynamic again.
    n.forwards.del('udp', 9000);
    expect(run(n, 'in', udpPkt(d)).r).toBe('no_session');
    expect(n.table.size).toBe(1);
  });
});

describe('hairpinning', () => {
  it('VM A reaches VM B through the public address and a forward, both ways', () => {
    const n = mk();
    n.forwards.add(parseForward({ proto: 'tcp', public: '8080', inside: '10.0.10.3:80' }));
    const syn = { src: A, dst: PUB, sport: 40000, dport: 8080, flags: SYN };
    const x = expectTranslation(n, 'out', tcpPkt(syn), tcpPkt({ ...syn, src: PUB, dst: B, dport: 80 }), 'hairpin');
    expect(x.insideIp).toBe(B);
    const sa = { src: B, dst: PUB, sport: 80, dport: 40000, flags: SYN | ACK };
    const y = expectTranslation(n, 'out', tcpPkt(sa), tcpPkt({ ...sa, src: PUB, sport: 8080, dst: A, dport: 40000 }), 'hairpin');
    expect(y.insideIp).toBe(A);
    const ack = { src: A, dst: PUB, sport: 40000, dport: 8080, flags: ACK };
    expectTranslation(n, 'out', tcpPkt(ack), tcpPkt({ ...ack, src: PUB, dst: B, dport: 80 }), 'hairpin');
    expect(n.table.sessions(T0).map((s) => `${s.inside}>${s.remote}:${s.state}`)).toEqual([
      '10.0.10.2:40000>192.0.2.1:8080:established',
      '10.0.10.3:80>192.0.2.1:40000:established',
    ]);
    expect(n.countOf('hairpin')).toBe(3);
  });

  it('UDP between two dynamic mappings once both have sent (address-dependent filtering applies to the public address too)', () => {
    const n = mk();
    run(n, 'out', udpPkt({ src: B, dst: R, sport: 5000, dport: 3478 }));
    const aToB = { src: A, dst: PUB, sport: 4000, dport: 5000 };
    expect(run(n, 'out', udpPkt(aToB)).r).toBe('filtered');
    const bToA = { src: B, dst: PUB, sport: 5000, dport: 4000 };
    expect(expectTranslation(n, 'out', udpPkt(bToA), udpPkt({ ...bToA, src: PUB, dst: A }), 'hairpin').insideIp).toBe(A);
    expect(expectTranslation(n, 'out', udpPkt(aToB), udpPkt({ ...aToB, src: PUB, dst: B }), 'hairpin').insideIp).toBe(B);
  });
});

describe('ICMP errors', () => {
  it('inbound port unreachable quoting a whole UDP packet: outer and quoted packet back to the inside host', () => {
    const n = mk();
    const orig = udpPkt({ src: A, dst: R, sport: 53000, dport: 53, payload: [9, 8, 7, 6, 5] }, { options: [1, 1, 1, 0] });
    const sent = run(n, 'out', orig).out;
    const x = expectTranslation(n, 'in', errPkt(3, 3, R, PUB, sent), errPkt(3, 3, R, A, orig));
    expect(x.insideIp).toBe(A);
  });

  it('inbound time exceeded quoting 8 bytes of a TCP SYN', () => {
    const n = mk({ portRange: { lo: 30000, hi: 30000 } });
    const orig = tcpPkt({ src: A, dst: R, sport: 40000, dport: 443, flags: SYN });
    const sent = run(n, 'out', orig).out;
    expect(r16(sent, 20)).toBe(30000);
    expectTranslation(n, 'in', errPkt(11, 0, RT, PUB, sent.slice(0, 28)), errPkt(11, 0, RT, A, orig.slice(0, 28)));
  });

  it('inbound fragmentation needed quoting a TCP header with its checksum but not all the data', () => {
    const n = mk({ portRange: { lo: 30000, hi: 30000 } });
    run(n, 'out', tcpPkt({ src: A, dst: R, sport: 40000, dport: 443, flags: SYN }));
    const orig = tcpPkt({ src: A, dst: R, sport: 40000, dport: 443, flags: ACK, payload: new Array(200).fill(0x61) });
    const sent = run(n, 'out', orig).out;
    expectTranslation(n, 'in', errPkt(3, 4, RT, PUB, sent.slice(0, 48)), errPkt(3, 4, RT, A, orig.slice(0, 48)));
  });

  it('inbound time exceeded quoting an echo request (traceroute -I)', () => {
    const n = mk({ icmpIdRange: { lo: 100, hi: 100 } });
    const orig = echoPkt(8, A, R, 4242, 3);
    const sent = run(n, 'out', orig).out;
    expect(r16(sent, 24)).toBe(100);
    expectTranslation(n, 'in', errPkt(11, 0, RT, PUB, sent), errPkt(11, 0, RT, A, orig));
  });

  it('parameter problem is translated too', () => {
    const n = mk();
    const orig = udpPkt({ src: A, dst: R, sport: 53000, dport: 53 });
    const sent = run(n, 'out', orig).out;
    expectTranslation(n, 'in', errPkt(12, 0, RT, PUB, sent), errPkt(12, 0, RT, A, orig));
  });

  it('drops errors that match no session, or that are damaged', () => {
    const n = mk();
    const orig = udpPkt({ src: A, dst: R, sport: 53000, dport: 53 });
    const sent = run(n, 'out', orig).out;
    const other = run(mk(), 'out', udpPkt({ src: A, dst: R2, sport: 53000, dport: 53 })).out;
    expect(run(n, 'in', errPkt(3, 3, RT, PUB, other)).r).toBe('no_session'); // right port, wrong remote
    const otherPort = sent.slice();
    w16(otherPort, 20, 53001);
    w16(otherPort, 26, 0);
    expect(run(n, 'in', errPkt(3, 3, RT, PUB, otherPort)).r).toBe('no_session');
    expect(run(n, 'in', errPkt(3, 3, RT, PUB, sent.slice(0, 27))).r).toBe('malformed');
    const badIcmp = errPkt(3, 3, RT, PUB, sent);
    badIcmp[22] ^= 0x01;
    expect(run(n, 'in', badIcmp).r).toBe('bad_checksum');
    const badQuote = sent.slice();
    badQuote[10] ^= 0x01;
    expect(run(n, 'in', errPkt(3, 3, RT, PUB, badQuote)).r).toBe('bad_checksum');
    const frag = ipv4({ src: PUB, dst: R, frag: 0x0010 }, 17, udpDgram({ src: PUB, dst: R, sport: 53000, dport: 53 }));
    expect(run(n, 'in', errPkt(3, 3, RT, PUB, frag)).r).toBe('fragment');
    const quotedReply = echoPkt(0, PUB, R, 5);
    expect(run(n, 'in', errPkt(3, 3, RT, PUB, quotedReply)).r).toBe('unsupported_icmp');
    expect(n.table.size).toBe(1);
  });

  it('outbound: an inside host\'s port unreachable for a forwarded packet leaves as the public endpoint', () => {
    const n = mk();
    n.forwards.add(parseForward({ proto: 'udp', public: '5353', inside: '10.0.10.3:53' }));
    const arriving = udpPkt({ src: R, dst: PUB, sport: 4444, dport: 5353, payload: [1, 2, 3, 4] });
    const delivered = run(n, 'in', arriving).out;
    expectTranslation(n, 'out', errPkt(3, 3, B, R, delivered), errPkt(3, 3, PUB, R, arriving));
    // Quoting something no session knows: dropped.
    const stray = udpPkt({ src: R2, dst: B, sport: 4444, dport: 53 });
    expect(run(n, 'out', errPkt(3, 3, B, R2, stray)).r).toBe('no_session');
  });

  it('hairpinned: B\'s port unreachable to A through the public address', () => {
    const n = mk();
    n.forwards.add(parseForward({ proto: 'udp', public: '5353', inside: '10.0.10.3:53' }));
    const orig = udpPkt({ src: A, dst: PUB, sport: 41000, dport: 5353 });
    const atB = run(n, 'out', orig);
    expect(atB.r).toBe('hairpin');
    const x = expectTranslation(n, 'out', errPkt(3, 3, B, PUB, atB.out), errPkt(3, 3, PUB, A, orig), 'hairpin');
    expect(x.insideIp).toBe(A);
  });
});

describe('drops and housekeeping', () => {
  it('drops fragments both ways, counted', () => {
    const n = mk();
    const first = udpPkt({ src: A, dst: R, sport: 1, dport: 2 }, { frag: 0x2000 });
    const later = udpPkt({ src: R, dst: PUB, sport: 1, dport: 2 }, { frag: 0x0003 });
    expect(run(n, 'out', first).r).toBe('fragment');
    expect(run(n, 'in', later).r).toBe('fragment');
    expect(n.countOf('fragment')).toBe(2);
    expect(n.table.size).toBe(0);
  });

  it('drops malformed L4 headers and unsupported protocols', () => {
    const n = mk();
    const badDoff = tcpPkt({ src: A, dst: R, sport: 1, dport: 2, flags: SYN });
    badDoff[32] = 0xf0;
    badDoff[10] = 0; badDoff[11] = 0;
    w16(badDoff, 10, cksum(badDoff, 0, 20));
    expect(run(n, 'out', badDoff).r).toBe('malformed');
    const badUdp = udpPkt({ src: A, dst: R, sport: 1, dport: 2 });
    w16(badUdp, 24, 200);
    expect(run(n, 'out', badUdp).r).toBe('malformed');
    expect(run(n, 'in', ipv4({ src: R, dst: PUB }, 1, new Uint8Array(4))).r).toBe('malformed');
    expect(run(n, 'out', ipv4({ src: A, dst: R }, 47, new Uint8Array(8))).r).toBe('unsupported_proto');
    expect(run(n, 'in', ipv4({ src: R, dst: PUB }, 47, new Uint8Array(8))).r).toBe('unsupported_proto');
  });

  it('needs a public address, and inbound must be addressed to it', () => {
    const n = new Napt();
    expect(run(n, 'out', udpPkt({ src: A, dst: R, sport: 1, dport: 2 })).r).toBe('no_public_address');
    n.publicIp = PUB;
    expect(run(n, 'in', udpPkt({ src: R, dst: ip('192.0.2.2'), sport: 1, dport: 2 })).r).toBe('not_public');
  });

  it('a new public address flushes every session', () => {
    const n = mk();
    run(n, 'out', udpPkt({ src: A, dst: R, sport: 1000, dport: 53 }));
    n.publicIp = PUB;
    expect(n.table.size).toBe(1);
    n.publicIp = ip('192.0.2.77');
    expect(n.table.size).toBe(0);
    const x = run(n, 'out', udpPkt({ src: A, dst: R, sport: 1000, dport: 53 }));
    expect(r32(x.out, 12)).toBe(ip('192.0.2.77'));
  });

  it('returns refusals as results and counts them', () => {
    const n = mk({ maxSessions: 2, maxSessionsPerHost: 1 });
    expect(run(n, 'out', udpPkt({ src: A, dst: R, sport: 1000, dport: 53 })).r).toBe('ok');
    expect(run(n, 'out', udpPkt({ src: A, dst: R, sport: 1001, dport: 53 })).r).toBe('host_limit');
    expect(run(n, 'out', udpPkt({ src: B, dst: R, sport: 1000, dport: 53 })).r).toBe('ok');
    expect(run(n, 'out', udpPkt({ src: ip('10.0.10.4'), dst: R, sport: 1000, dport: 53 })).r).toBe('table_full');
    const m = mk({ portRange: { lo: 2000, hi: 2000 } });
    expect(run(m, 'out', udpPkt({ src: A, dst: R, sport: 1, dport: 53 })).r).toBe('ok');
    expect(run(m, 'out', udpPkt({ src: B, dst: R, sport: 1, dport: 53 })).r).toBe('no_port');
    expect([n.countOf('ok'), n.countOf('host_limit'), n.countOf('table_full'), m.countOf('no_port')]).toEqual([2, 1, 1, 1]);
    expect(n.table.refused).toEqual({ table_full: 1, host_limit: 1, port_limit: 0, no_port: 0 });
  });

  it('charges the packet\'s bridge port when it opens a session, and asks for it only then (port_limit)', () => {
    const n = mk({ maxSessionsPerHost: 10, maxSessionsPerPort: 2 });
    let asked = 0;
    const from = { portAt: (buf: Uint8Array, ipOff: number): string => { asked++; expect(ipOff).toBe(LEAD); return buf.length > 0 ? 'tap1' : ''; } };
    const out = (pkt: Uint8Array): NaptResultName => {
      const buf = new Uint8Array(LEAD + pkt.length + TAIL).fill(GUARD);
      buf.set(pkt, LEAD);
      return NAPT_RESULTS[n.outbound(buf, LEAD, T0, false, from)];
    };
    expect(out(udpPkt({ src: A, dst: R, sport: 1000, dport: 53 }))).toBe('ok');
    expect(asked).toBe(1);
    for (let i = 0; i < 5; i++) expect(out(udpPkt({ src: A, dst: R, sport: 1000, dport: 53 }))).toBe('ok');
    expect(asked, 'packets of an existing session do not look the port up').toBe(1);
    // A second address on the same port: one more session, then the port is full.
    expect(out(udpPkt({ src: B, dst: R, sport: 1000, dport: 53 }))).toBe('ok');
    expect(out(udpPkt({ src: B, dst: R, sport: 1001, dport: 53 }))).toBe('port_limit');
    expect(n.countOf('port_limit')).toBe(1);
    expect(n.table.refused.port_limit).toBe(1);
    // Without a port (the caller cannot tell), only the per-host limit applies.
    expect(run(n, 'out', udpPkt({ src: B, dst: R, sport: 1002, dport: 53 })).r).toBe('ok');
  });

  it('result names and codes are one closed set', () => {
    expect(NAPT_RESULTS.length).toBe(new Set(NAPT_RESULTS).size);
    NAPT_RESULTS.forEach((name, i) => expect(NaptResult[name]).toBe(i));
    expect(NAPT_RESULTS.filter((r) => !naptDropped(NaptResult[r]))).toEqual(['ok', 'hairpin', 'local']);
    const n = mk();
    run(n, 'out', udpPkt({ src: A, dst: R, sport: 1, dport: 2 }, { frag: 0x2000 }));
    run(n, 'out', udpPkt({ src: A, dst: R, sport: 1, dport: 2 }));
    expect(n.resultCounts()).toMatchObject({ ok: 1, fragment: 1, no_session: 0 });
    expect(Object.keys(n.resultCounts())).toEqual([...NAPT_RESULTS]);
  });

  it('ip4DecrementTtl updates the header checksum incrementally and refuses TTL <= 1', () => {
    for (const ttl of [64, 2, 255, 128]) {
      const p = udpPkt({ src: A, dst: R, sport: 1, dport: 2 }, { ttl, options: [1, 1, 1, 0] });
      expect(ip4DecrementTtl(p, 0)).toBe(true);
      expect(p[8]).toBe(ttl - 1);
      expect(badChecksums(p)).toEqual([]);
      expect([...p]).toEqual([...udpPkt({ src: A, dst: R, sport: 1, dport: 2 }, { ttl: ttl - 1, options: [1, 1, 1, 0] })]);
    }
    for (const ttl of [0, 1]) {
      const p = udpPkt({ src: A, dst: R, sport: 1, dport: 2 }, { ttl });
      const before = p.slice();
      expect(ip4DecrementTtl(p, 0)).toBe(false);
      expect(p).toEqual(before);
    }
  });
});

// ---- Properties ----

const insideIp = fc.integer({ min: 1, max: 254 }).map((h) => A - 2 + h);
const remoteIp = fc.integer({ min: 0x0b000000, max: 0xdfffffff }).filter((x) => x !== PUB);
const port = fc.integer({ min: 1, max: 65535 });

describe('properties', () => {
  it('any flow out and its reply in arrive back at the inside endpoint, checksums valid at every step', () => {
    fc.assert(fc.property(
      fc.constantFrom('tcp', 'udp', 'udp0', 'icmp'), insideIp, port, remoteIp, port,
      fc.uint8Array({ maxLength: 40 }),
      (kind, src, sport, dst, dport, payload) => {
        const n = mk({ portRange: { lo: 1024, hi: 65535 } });
        const pay = [...payload];
        let out: Uint8Array;
        if (kind === 'tcp') out = tcpPkt({ src, dst, sport, dport, flags: SYN, payload: pay });
        else if (kind === 'icmp') out = echoPkt(8, src, dst, sport, 1, pay);
        else out = udpPkt({ src, dst, sport, dport, payload: pay, noChecksum: kind === 'udp0' });
        const x = run(n, 'out', out);
        expect(x.r).toBe('ok');
        expect(badChecksums(x.out)).toEqual([]);
        expect(r32(x.out, 12)).toBe(PUB);
        const pub = r16(x.out, kind === 'icmp' ? 24 : 20);
        let reply: Uint8Array;
        if (kind === 'tcp') reply = tcpPkt({ src: dst, dst: PUB, sport: dport, dport: pub, flags: SYN | ACK, payload: pay });
        else if (kind === 'icmp') reply = echoPkt(0, dst, PUB, pub, 1, pay);
        else reply = udpPkt({ src: dst, dst: PUB, sport: dport, dport: pub, payload: pay, noChecksum: kind === 'udp0' });
        const y = run(n, 'in', reply);
        expect(y.r).toBe('ok');
        expect(y.insideIp).toBe(src);
        expect(badChecksums(y.out)).toEqual([]);
        expect(r32(y.out, 16)).toBe(src);
        expect(r16(y.out, kind === 'icmp' ? 24 : 22)).toBe(sport);
        if (kind === 'udp0') expect(r16(y.out, 26)).toBe(0);
      },
    ), { numRuns: 300 });
  });

  /** A NAPT with a session of each kind, a forward, and packets that belong to them. */
  function scene(): { n: Napt; packets: { dir: 'out' | 'in'; p: Uint8Array }[] } {
    const n = mk();
    n.forwards.add(parseForward({ proto: 'udp', public: '5353', inside: '10.0.10.3:53' }));
    n.forwards.add(parseForward({ proto: 'tcp', public: '8080', inside: '10.0.10.3:80' }));
    const tcpOut = tcpPkt({ src: A, dst: R, sport: 40000, dport: 443, flags: SYN, payload: [1, 2, 3] }, { options: [1, 1, 1, 0] });
    const udpOut = udpPkt({ src: A, dst: R, sport: 53000, dport: 53 });
    const echoOut = echoPkt(8, A, R, 77);
    const sentTcp = run(n, 'out', tcpOut).out;
    const sentUdp = run(n, 'out', udpOut).out;
    const sentEcho = run(n, 'out', echoOut).out;
    const fwdIn = udpPkt({ src: R2, dst: PUB, sport: 4444, dport: 5353 });
    const delivered = run(n, 'in', fwdIn).out;
    const packets: { dir: 'out' | 'in'; p: Uint8Array }[] = [
      { dir: 'out', p: tcpOut }, { dir: 'out', p: udpOut }, { dir: 'out', p: echoOut },
      { dir: 'in', p: tcpPkt({ src: R, dst: PUB, sport: 443, dport: 40000, flags: SYN | ACK }) },
      { dir: 'in', p: udpPkt({ src: R, dst: PUB, sport: 53, dport: 53000, payload: [5, 5] }) },
      { dir: 'in', p: echoPkt(0, R, PUB, 77) },
      { dir: 'in', p: fwdIn },
      { dir: 'in', p: tcpPkt({ src: R2, dst: PUB, sport: 999, dport: 8080, flags: SYN }) },
      { dir: 'in', p: errPkt(3, 3, RT, PUB, sentUdp) },
      { dir: 'in', p: errPkt(11, 0, RT, PUB, sentTcp.slice(0, 48)) },
      { dir: 'in', p: errPkt(11, 0, RT, PUB, sentEcho) },
      { dir: 'out', p: errPkt(3, 3, B, R2, delivered) },
      { dir: 'out', p: udpPkt({ src: A, dst: PUB, sport: 41000, dport: 5353 }) },
      { dir: 'out', p: tcpPkt({ src: A, dst: PUB, sport: 41001, dport: 8080, flags: SYN }) },
    ];
    return { n, packets };
  }

  it('mutated packets never throw, never write outside the packet, and keep valid checksums valid', () => {
    // One NAPT for all runs: what earlier mutants did to its sessions does not matter here.
    const { n, packets } = scene();
    fc.assert(fc.property(
      fc.integer({ min: 0, max: packets.length - 1 }),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
      fc.boolean(), fc.nat({ max: 40 }),
      (which, edits, fixHeader, cut) => {
        const { dir, p: orig } = packets[which];
        const p = orig.slice();
        for (const [pos, v] of edits) p[pos % p.length] = v;
        // Keep the header's lengths honest often enough to reach the L4 code.
        if (fixHeader) {
          p[0] = 0x40 | Math.max(5, Math.min(p[0] & 0x0f, p.length >> 2));
          w16(p, 2, Math.max(0, p.length - (cut % 8)));
          w16(p, 10, 0);
          w16(p, 10, cksum(p, 0, (p[0] & 0x0f) * 4));
        }
        const buf = new Uint8Array(LEAD + p.length + TAIL).fill(GUARD);
        buf.set(p, LEAD);
        if (checkIpv4(buf, LEAD, p.length, false) !== 0) return;
        const total = r16(p, 2);
        const before = badChecksums(p.slice(0, total));
        const code = dir === 'out' ? n.outbound(buf, LEAD, T0) : n.inbound(buf, LEAD, T0);
        expect(code).toBeGreaterThanOrEqual(0);
        expect(code).toBeLessThan(NAPT_RESULTS.length);
        // Bytes past Total Length (Ethernet padding) are not ours either.
        expect(guardsIntact(buf, LEAD, p.length)).toBe(true);
        expect(buf.subarray(LEAD + total, LEAD + p.length)).toEqual(p.subarray(total));
        if (!naptDropped(code) && code !== NaptResult.local) {
          const after = badChecksums(buf.slice(LEAD, LEAD + total));
          for (const c of after) expect(before).toContain(c);
        }
      },
    ), { numRuns: 3000 });
    // The mutants reached the rewrite code, not only the early drops.
    expect(n.countOf('ok') + n.countOf('hairpin')).toBeGreaterThan(300);
    for (const r of ['malformed', 'bad_checksum', 'fragment', 'no_session', 'filtered'] as const) expect(n.countOf(r)).toBeGreaterThan(0);
  });

  it('random bytes that pass checkIpv4 never throw or write out of bounds', () => {
    const { n } = scene();
    fc.assert(fc.property(
      fc.uint8Array({ minLength: 20, maxLength: 120 }), fc.constantFrom(1, 6, 17, 47), fc.boolean(), fc.boolean(), fc.boolean(),
      (bytes, proto, toPublic, asError, fragment) => {
        const p = bytes.slice();
        p[0] = 0x40 | Math.max(5, Math.min(p[0] & 0x0f, p.length >> 2));
        w16(p, 2, p.length);
        if (!fragment) w16(p, 6, 0x4000);
        p[9] = proto;
        if (toPublic) w32(p, 16, PUB);
        const hl = (p[0] & 0x0f) * 4;
        if (asError && proto === 1 && p.length >= hl + 8) p[hl] = [3, 11, 12][p[hl] % 3];
        w16(p, 10, 0);
        w16(p, 10, cksum(p, 0, hl));
        for (const dir of ['out', 'in'] as const) {
          const buf = new Uint8Array(LEAD + p.length + TAIL).fill(GUARD);
          buf.set(p, LEAD);
          if (checkIpv4(buf, LEAD, p.length) !== 0) continue;
          const code = dir === 'out' ? n.outbound(buf, LEAD, T0) : n.inbound(buf, LEAD, T0);
          expect(NAPT_RESULTS[code]).toBeDefined();
          expect(guardsIntact(buf, LEAD, p.length)).toBe(true);
        }
      },
    ), { numRuns: 3000 });
  });
});

// ---- Checksum-partial packets (virtio-net offload: CHECKSUM_PARTIAL, GSO) ----

/** Offset of the L4 checksum field in an IPv4 TCP/UDP packet. */
const csumAt = (p: Uint8Array): number => (p[0] & 0x0f) * 4 + (p[9] === 6 ? 16 : 6);

/** The packet as a stack with checksum offload hands it over: the L4 field holds the folded pseudo-header sum, not complemented. */
function asPartial(p: Uint8Array): Uint8Array {
  const q = p.slice();
  const hl = (q[0] & 0x0f) * 4;
  w16(q, csumAt(q), onesSum(q, 0, 0, pseudo(r32(q, 12), r32(q, 16), q[9], r16(q, 2) - hl)));
  return q;
}

/** What a device does with a partial packet: sums from csum_start (the L4 header) to the end, complemented; 0 is sent as 0xffff. */
function completed(p: Uint8Array): Uint8Array {
  const q = p.slice();
  const c = cksum(q, (q[0] & 0x0f) * 4, r16(q, 2));
  w16(q, csumAt(q), c === 0 ? 0xffff : c);
  return q;
}

/** The same packet, TCP's checksum 0 and 0xffff taken as the one value they are (an incremental update may give either). */
function expectSamePacket(got: Uint8Array, want: Uint8Array): void {
  const a = got.slice();
  const b = want.slice();
  if (a[9] === 6) for (const q of [a, b]) if (r16(q, csumAt(q)) === 0) w16(q, csumAt(q), 0xffff);
  expect([...a]).toEqual([...b]);
}

/** Two NAPTs fed the same packets, one complete and one partial: results agree and the completed partial packet is the complete one. */
function twins(table: NaptTableOptions = {}) {
  const full = mk(table);
  const part = mk(table);
  return {
    full, part,
    step(dir: 'out' | 'in', pkt: Uint8Array, result: NaptResultName = 'ok'): Run {
      const x = run(full, dir, pkt);
      const y = run(part, dir, asPartial(pkt), T0, true);
      expect(x.r).toBe(result);
      expect(y.r).toBe(result);
      expect(y.insideIp).toBe(x.insideIp);
      expectSamePacket(completed(y.out), x.out);
      expect(badChecksums(completed(y.out))).toEqual([]);
      return y;
    },
  };
}

describe('checksum-partial packets (CHECKSUM_PARTIAL, GSO)', () => {
  it('TCP: both ways, a replaced port, and hairpinned, completed they equal the complete translation', () => {
    const t = twins({ portRange: { lo: 30000, hi: 30099 } });
    t.step('out', tcpPkt({ src: A, dst: R, sport: 30050, dport: 443, flags: SYN }));
    t.step('in', tcpPkt({ src: R, dst: PUB, sport: 443, dport: 30050, flags: SYN | ACK }));
    t.step('out', tcpPkt({ src: A, dst: R, sport: 30050, dport: 443, flags: ACK, payload: [1, 2, 3, 4, 5] }, { options: [1, 1, 1, 0] }));
    t.step('in', tcpPkt({ src: R, dst: PUB, sport: 443, dport: 30050, flags: ACK | PSH, payload: [9, 8, 7] }));
    // B takes the same inside port: its public port is another one, a port change NAPT must leave out of a partial sum.
    const y = t.step('out', tcpPkt({ src: B, dst: R, sport: 30050, dport: 443, flags: SYN }));
    const pubPort = r16(y.out, 20);
    expect(pubPort).not.toBe(30050);
    const z = t.step('in', tcpPkt({ src: R, dst: PUB, sport: 443, dport: pubPort, flags: SYN | ACK, payload: [1] }));
    expect(z.insideIp).toBe(B);
    expect(r16(z.out, 22)).toBe(30050);
    for (const n of [t.full, t.part]) n.forwards.add(parseForward({ proto: 'tcp', public: '8080', inside: '10.0.10.3:80' }));
    t.step('out', tcpPkt({ src: A, dst: PUB, sport: 41001, dport: 8080, flags: SYN, payload: [1, 2, 3] }), 'hairpin');
  });

  it('UDP: both ways and a replaced port; a partial sum of 0 is a sum, not "no checksum"', () => {
    const t = twins({ portRange: { lo: 30000, hi: 30099 } });
    t.step('out', udpPkt({ src: A, dst: R, sport: 30050, dport: 53, payload: [1, 2, 3, 4, 5] }));
    t.step('in', udpPkt({ src: R, dst: PUB, sport: 53, dport: 30050, payload: [7] }));
    const y = t.step('out', udpPkt({ src: B, dst: R, sport: 30050, dport: 53 }));
    const pubPort = r16(y.out, 20);
    expect(pubPort).not.toBe(30050);
    expect(t.step('in', udpPkt({ src: R, dst: PUB, sport: 53, dport: pubPort, payload: [] })).insideIp).toBe(B);
    // A partial field of 0 (a pseudo-header sum that folds to 0 is impossible, but the field is a sum all the same).
    const n = mk();
    const p = asPartial(udpPkt({ src: A, dst: R, sport: 53001, dport: 53 }));
    w16(p, 26, 0);
    const x = run(n, 'out', p, T0, true);
    expect(x.r).toBe('ok');
    expect(r16(x.out, 26)).not.toBe(0); // updated for the address change
  });

  it('any TCP/UDP flow, out and back: partial then completed equals complete (property)', () => {
    fc.assert(fc.property(
      fc.constantFrom(6, 17), insideIp, port, remoteIp, port, fc.uint8Array({ maxLength: 41 }),
      (proto, src, sport, dst, dport, payload) => {
        const t = twins({ portRange: { lo: 1024, hi: 65535 } });
        const pay = [...payload];
        const y = t.step('out', proto === 6
          ? tcpPkt({ src, dst, sport, dport, flags: SYN, payload: pay })
          : udpPkt({ src, dst, sport, dport, payload: pay }));
        const pub = r16(y.out, 20);
        t.step('in', proto === 6
          ? tcpPkt({ src: dst, dst: PUB, sport: dport, dport: pub, flags: SYN | ACK, payload: pay })
          : udpPkt({ src: dst, dst: PUB, sport: dport, dport: pub, payload: pay }));
      },
    ), { numRuns: 300 });
  }, 30_000); // 300 pairs of tables: ~3 s alone, over vitest's 5 s default on a loaded 2-core machine

  it('ICMP errors whose checksum is partial are refused (their checksum cannot be verified)', () => {
    const n = mk();
    const sent = run(n, 'out', udpPkt({ src: A, dst: R, sport: 53000, dport: 53 })).out;
    expect(run(n, 'in', errPkt(3, 3, RT, PUB, sent), T0, true).r).toBe('bad_checksum');
    expect(run(n, 'in', errPkt(3, 3, RT, PUB, sent)).r).toBe('ok');
  });
});

describe('partial packets completed by the addon (netdev segmentForTest: the AF_PACKET receive fix-ups, gso.c)', () => {
  const MSS = 1448;

  /** virtio_net_hdr: NEEDS_CSUM at the L4 checksum; GSO type and size when given. */
  function vnetHdr(p: Uint8Array, gsoType = 0, gsoSize = 0): Buffer {
    const h = Buffer.alloc(10);
    h[0] = 1;
    h[1] = gsoType;
    h.writeUInt16LE(gsoType ? 14 + (p[0] & 0x0f) * 4 + (p[9] === 6 ? (p[(p[0] & 0x0f) * 4 + 12] >> 4) * 4 : 8) : 0, 2);
    h.writeUInt16LE(gsoSize, 4);
    h.writeUInt16LE(14 + (p[0] & 0x0f) * 4, 6);
    h.writeUInt16LE(p[9] === 6 ? 16 : 6, 8);
    return h;
  }
  const eth = (p: Uint8Array): Buffer =>
    Buffer.concat([Buffer.from([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]), Buffer.from(p)]);
  const bigPayload = (n: number): number[] => Array.from({ length: n }, (_, i) => (i * 7 + (i >> 8)) & 0xff);

  it('a partial packet (no GSO), translated both ways with a replaced port, completes to valid checksums', () => {
    for (const proto of [6, 17]) {
      const n = mk({ portRange: { lo: 30000, hi: 30099 } });
      run(n, 'out', proto === 6 ? tcpPkt({ src: A, dst: R, sport: 30050, dport: 80, flags: SYN }) : udpPkt({ src: A, dst: R, sport: 30050, dport: 80 }));
      const out = proto === 6
        ? tcpPkt({ src: B, dst: R, sport: 30050, dport: 80, flags: SYN, payload: bigPayload(999) })
        : udpPkt({ src: B, dst: R, sport: 30050, dport: 80, payload: bigPayload(999) });
      const x = run(n, 'out', asPartial(out), T0, true);
      expect(x.r).toBe('ok');
      const pub = r16(x.out, 20);
      expect(pub).not.toBe(30050);
      const segs = segmentForTest(vnetHdr(x.out), eth(x.out));
      expect(segs.length).toBe(1);
      expect(badChecksums(segs[0].subarray(14))).toEqual([]);
      const back = proto === 6
        ? tcpPkt({ src: R, dst: PUB, sport: 80, dport: pub, flags: SYN | ACK, payload: bigPayload(1001) })
        : udpPkt({ src: R, dst: PUB, sport: 80, dport: pub, payload: bigPayload(1001) });
      const y = run(n, 'in', asPartial(back), T0, true);
      expect(y.r).toBe('ok');
      expect(y.insideIp).toBe(B);
      const segs2 = segmentForTest(vnetHdr(y.out), eth(y.out));
      expect(segs2.length).toBe(1);
      expect(badChecksums(segs2[0].subarray(14))).toEqual([]);
      expect(r16(segs2[0], 14 + 22)).toBe(30050);
    }
  });

  it('a TCPv4 GSO super-frame translated both ways is cut into segments with valid checksums and the translated endpoints', () => {
    const n = mk({ portRange: { lo: 30000, hi: 30099 } });
    run(n, 'out', tcpPkt({ src: A, dst: R, sport: 30050, dport: 443, flags: SYN }));
    run(n, 'out', tcpPkt({ src: B, dst: R, sport: 30050, dport: 443, flags: SYN }));
    const payload = bigPayload(20_000);
    const up = run(n, 'out', asPartial(tcpPkt({ src: B, dst: R, sport: 30050, dport: 443, flags: ACK | PSH, payload })), T0, true);
    expect(up.r).toBe('ok');
    const pub = r16(up.out, 20);
    expect(pub).not.toBe(30050);
    const down = run(n, 'in', asPartial(tcpPkt({ src: R, dst: PUB, sport: 443, dport: pub, flags: ACK | PSH, payload }, { options: [1, 1, 1, 0] })), T0, true);
    expect(down.r).toBe('ok');
    for (const [p, src, sport, dst, dport] of [[up.out, PUB, pub, R, 443], [down.out, R, 443, B, 30050]] as const) {
      const segs = segmentForTest(vnetHdr(p, 1, MSS), eth(p));
      expect(segs.length).toBe(Math.ceil(payload.length / MSS));
      const data: number[] = [];
      for (const f of segs) {
        const q = f.subarray(14);
        expect(badChecksums(q)).toEqual([]);
        expect(f.length).toBeLessThanOrEqual(14 + (q[0] & 0x0f) * 4 + 20 + MSS);
        expect([r32(q, 12), r16(q, (q[0] & 0x0f) * 4), r32(q, 16), r16(q, (q[0] & 0x0f) * 4 + 2)]).toEqual([src, sport, dst, dport]);
        data.push(...q.subarray((q[0] & 0x0f) * 4 + 20));
      }
      expect(data).toEqual(payload);
    }
  });

  it('a UDP GSO (USO) super-frame translated outbound is cut into datagrams with valid checksums', () => {
    const n = mk();
    const payload = bigPayload(5000);
    const x = run(n, 'out', asPartial(udpPkt({ src: A, dst: R, sport: 5000, dport: 443, payload })), T0, true);
    expect(x.r).toBe('ok');
    const segs = segmentForTest(vnetHdr(x.out, 5, 1200), eth(x.out));
    expect(segs.length).toBe(5);
    for (const f of segs) {
      expect(badChecksums(f.subarray(14))).toEqual([]);
      expect(r32(f, 14 + 12)).toBe(PUB);
    }
  });
});
