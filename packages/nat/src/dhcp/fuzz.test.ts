/*
 * DHCP parser and server under hostile bytes (fast-check), for what wire.test.ts
 * and server.test.ts do not already pin down (they cover "never throws" and the
 * lease invariants): reads stay inside buf[off..off+len), writes inside the reply
 * area, and broken or looping option areas (PAD floods, zero-length options,
 * overload 52 pointing at sname/file full of options, RFC 3396 repeats, lengths
 * running past the end, no END) cost linear time and give the same answer
 * whatever follows the message in memory.
 *
 * Method: the same message is parsed / handled in two buffers that differ only
 * after off+len (and before off), by patterns that change the answer if read: a
 * second option 53, an END, PADs, a requested address. Two servers fed the same
 * sequence this way must give identical replies and identical leases.
 */
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { parseIp4 } from '@vswitch/switch';
import { LeaseStore } from './leases.js';
import { DhcpServer, type DhcpServerConfig } from './server.js';
import { BOOTP, BOOTREQUEST, DHCP_DEFAULT_MAX_MESSAGE, DhcpMsg, DhcpWriter, IP_UDP_HLEN, Opt, parseDhcp, type DhcpMessage } from './wire.js';

vi.setConfig({ testTimeout: 120_000 });
const RUNS = Number(process.env.FUZZ_RUNS ?? 1500);

const ip = (s: string): number => parseIp4(s);
const T0 = Date.UTC(2025, 0, 1);
const SERVER = ip('10.0.10.1');
const MACS = [0x525400000001, 0x525400000002, 0x525400000003, 0x525400000004, 0x525400000099];

const config: DhcpServerConfig = {
  name: 'net10', serverIp: SERVER, subnet: ip('10.0.10.0'), prefixLen: 24,
  pools: [[ip('10.0.10.100'), ip('10.0.10.102')]],
  reservations: [{ mac: 0x525400000099, ip: ip('10.0.10.50'), hostname: 'db' }],
  dns: [ip('10.0.10.1')], domain: 'vs.lan', mtu: 1400,
  routes: [{ dest: ip('172.16.0.0'), prefixLen: 12, gateway: SERVER }],
  maxLeasesPerPort: 2,
};

/** Bytes that change an answer if read past the end: a second 53, 53 = DISCOVER, END, PAD, option 50. */
const PATTERNS = [[53, 1, 1], [53, 1, 3], [255], [0], [50, 4, 10, 0, 10, 101], [61, 3, 1, 2, 3], [0xa5]];

function repeat(pattern: readonly number[], n: number): number[] {
  const out: number[] = [];
  while (out.length < n) out.push(...pattern);
  return out.slice(0, n);
}

/** `msg` at offset `lead` of a buffer whose other bytes repeat `pattern`. */
function embed(msg: Uint8Array, lead: number, pattern: readonly number[], tail = 64): Uint8Array {
  const buf = Uint8Array.from(repeat(pattern, lead + msg.length + tail));
  buf.set(msg, lead);
  // The bytes right after the message are the pattern from its start.
  buf.set(repeat(pattern, tail), lead + msg.length);
  return buf;
}

const u8 = fc.integer({ min: 0, max: 255 });
const w = <T>(weight: number, arbitrary: fc.Arbitrary<T>) => ({ weight, arbitrary });
const anyIp = fc.oneof(
  w(4, fc.constantFrom(0, SERVER, ip('10.0.10.50'), ip('10.0.10.100'), ip('10.0.10.101'), ip('10.0.10.102'), ip('10.0.99.1'), 0xffffffff)),
  w(1, fc.integer({ min: 0, max: 0xffffffff })),
);

/** Option areas built to hurt: loops, floods, overlaps, truncations. */
const hostileOptions = fc.array(fc.oneof(
  fc.integer({ min: 1, max: 2000 }).map((n) => new Array<number>(n).fill(Opt.PAD)),
  u8.map((c) => [c, 0]),
  fc.tuple(u8, u8).map(([c, l]) => [c, l]),                       // a length that may run past the end
  fc.constantFrom([52, 1, 1], [52, 1, 2], [52, 1, 3], [52, 0], [52, 4, 3, 3, 3, 3]), // overload: not read
  fc.constantFrom([53, 1, 1], [53, 1, 3], [53, 0], [53, 2, 3, 3]),   // repeats concatenate (RFC 3396)
  fc.integer({ min: 1, max: 300 }).map((n) => repeat([55, 1, 55], n * 3)), // 55 asking for itself, many times
  fc.integer({ min: 1, max: 200 }).map((n) => repeat([61, 1, 1], n * 3)),  // client id grown by concatenation
  fc.integer({ min: 1, max: 100 }).map((n) => repeat([12, 3, 0x41, 0, 0x42], n * 5)),
  fc.constantFrom([57, 2, 0, 0], [57, 2, 2, 64], [57, 2, 255, 255], [57, 1, 2]),
  fc.constantFrom([50, 4, 10, 0, 10, 101], [50, 3, 10, 0, 10], [54, 4, 10, 0, 10, 1], [54, 4, 10, 0, 10, 2]),
  fc.uint8Array({ maxLength: 16 }).map((b) => [...b]),
), { maxLength: 10 }).map((parts) => parts.flat());

const message = fc.record({
  type: fc.oneof(w(6, fc.constantFrom(1, 3, 4, 7, 8)), w(1, u8)),
  op: fc.oneof(w(10, fc.constant(BOOTREQUEST)), w(1, u8)),
  htype: fc.oneof(w(10, fc.constant(1)), w(1, u8)),
  hlen: fc.oneof(w(10, fc.constant(6)), w(1, u8)),
  mac: fc.oneof(w(8, fc.constantFrom(...MACS)), w(1, fc.integer({ min: 0, max: 2 ** 48 - 1 }))),
  ciaddr: fc.oneof(w(4, fc.constant(0)), w(1, anyIp)),
  giaddr: fc.oneof(w(8, fc.constant(0)), w(1, anyIp)),
  flags: fc.constantFrom(0, 0x8000),
  requested: fc.option(anyIp),
  serverId: fc.option(anyIp),
  sname: fc.oneof(fc.constant(0), fc.constant(52), fc.constant(255), u8),
  hostile: hostileOptions,
  cut: fc.oneof(w(6, fc.constant(-1)), w(1, fc.nat(400))),
}).map((m) => {
  const buf = new Uint8Array(1500);
  const wr = new DhcpWriter(buf);
  wr.header({ op: m.op, xid: 0x99, flags: m.flags, ciaddr: m.ciaddr, yiaddr: 0, siaddr: 0, giaddr: m.giaddr, chaddr: m.mac });
  buf[BOOTP.HTYPE] = m.htype;
  buf[BOOTP.HLEN] = m.hlen;
  buf.fill(m.sname, BOOTP.SNAME, BOOTP.COOKIE); // sname + file: options if 52 were honoured
  wr.u8(Opt.MESSAGE_TYPE, m.type);
  if (m.requested !== null) wr.u32(Opt.REQUESTED_IP, m.requested);
  if (m.serverId !== null) wr.u32(Opt.SERVER_ID, m.serverId);
  // The hostile area goes where END would be: the message ends with it.
  const end = buf.length - 1 - wr.room;
  const opts = m.hostile.slice(0, buf.length - end);
  buf.set(opts, end);
  let len = end + opts.length;
  if (m.cut >= 0) len = Math.min(len, m.cut);
  return buf.slice(0, len);
});

/** Everything a parsed message exposes, as plain data. */
function view(m: DhcpMessage | number): unknown {
  if (typeof m === 'number') return m;
  return {
    op: m.op, htype: m.htype, hlen: m.hlen, xid: m.xid, flags: m.flags, ciaddr: m.ciaddr, yiaddr: m.yiaddr, giaddr: m.giaddr,
    chaddr: m.chaddr, type: m.messageType, req: m.requestedIp, sid: m.serverId, cid: m.clientId, host: m.hostname,
    prl: m.parameterRequestList ? [...m.parameterRequestList] : undefined, mms: m.maxMessageSize,
    options: m.codes().map((c) => [c, [...m.option(c)!]]),
  };
}

describe('parseDhcp (fast-check)', () => {
  it('reads nothing outside buf[off..off+len): the bytes around a message never change the result', () => {
    fc.assert(fc.property(message, fc.nat(9), fc.nat(PATTERNS.length - 1), fc.nat(PATTERNS.length - 1), (msg, lead, p, q) => {
      const a = parseDhcp(embed(msg, lead, PATTERNS[p]), lead, msg.length);
      const b = parseDhcp(embed(msg, lead, PATTERNS[q]), lead, msg.length);
      const c = parseDhcp(Uint8Array.from(msg), 0, msg.length);
      expect(view(b)).toEqual(view(a));
      expect(view(c)).toEqual(view(a));
    }), { numRuns: RUNS });
  });

  it('looping and flooding option areas are read in linear time', () => {
    // 64 KiB of the worst small patterns: 2-byte options, zero-length repeats of one code, self-referencing 55s.
    for (const pattern of [[53, 0], [55, 1, 55], [61, 1, 1], [52, 1, 3], [0], [12, 0]]) {
      const msg = new Uint8Array(65507);
      msg.set([BOOTREQUEST, 1, 6], 0);
      msg.set([0x63, 0x82, 0x53, 0x63], BOOTP.COOKIE);
      msg.set(repeat(pattern, msg.length - BOOTP.OPTIONS), BOOTP.OPTIONS);
      msg.set([53, 1, 1], BOOTP.OPTIONS);
      const t0 = performance.now();
      const m = parseDhcp(msg, 0, msg.length);
      const v = typeof m === 'number' ? m : [m.messageType, m.clientId?.length, m.hostname?.length, m.parameterRequestList?.length];
      expect(performance.now() - t0).toBeLessThan(500);
      expect(v).toBeDefined();
    }
  });
});

describe('DhcpServer.handle (fast-check)', () => {
  it('two servers fed the same requests amid different bytes answer the same, write only their reply area, and fit the client', () => {
    const replies = { [DhcpMsg.OFFER]: 0, [DhcpMsg.ACK]: 0, [DhcpMsg.NAK]: 0 } as Record<number, number>;
    fc.assert(fc.property(
      fc.array(fc.record({
        msg: message,
        lead: fc.nat(9),
        p: fc.nat(PATTERNS.length - 1),
        q: fc.nat(PATTERNS.length - 1),
        dt: fc.constantFrom(0, 0, 1000, 31_000, 700_000),
        port: fc.constantFrom(undefined, 'p1', 'p2'),
        outSize: fc.oneof(w(6, fc.constant(1500)), w(1, fc.integer({ min: 0, max: 700 }))),
        outOff: fc.nat(40),
      }), { minLength: 1, maxLength: 25 }),
      (steps) => {
        let now = T0;
        const a = new DhcpServer(config, LeaseStore.inMemory('net10'), now);
        const b = new DhcpServer(config, LeaseStore.inMemory('net10'), now);
        for (const s of steps) {
          now += s.dt;
          const outA = new Uint8Array(s.outOff + s.outSize).fill(0xa5);
          const outB = new Uint8Array(s.outOff + s.outSize).fill(0x5a);
          const ra = a.handle(embed(s.msg, s.lead, PATTERNS[s.p]), s.lead, s.msg.length, outA, s.outOff, { now, port: s.port });
          const rb = b.handle(embed(s.msg, s.lead, PATTERNS[s.q]), s.lead, s.msg.length, outB, s.outOff, { now, port: s.port });
          expect(rb).toEqual(ra);
          if (typeof ra !== 'string') {
            const end = s.outOff + ra.payloadLen;
            // Written: exactly the reply area, inside the buffer.
            expect(end).toBeLessThanOrEqual(outA.length);
            expect(outA.subarray(0, s.outOff).every((x) => x === 0xa5)).toBe(true);
            expect(outA.subarray(end).every((x) => x === 0xa5)).toBe(true);
            expect([...outB.subarray(s.outOff, end)]).toEqual([...outA.subarray(s.outOff, end)]);
            // Sized for the client: its option 57 if legal, else the RFC 2131 minimum.
            const m = parseDhcp(s.msg, 0, s.msg.length);
            const max = (typeof m === 'object' ? m.maxMessageSize : undefined) ?? DHCP_DEFAULT_MAX_MESSAGE;
            expect(ra.payloadLen).toBeLessThanOrEqual(max - IP_UDP_HLEN);
            const reply = parseDhcp(outA, s.outOff, ra.payloadLen);
            expect(typeof reply).toBe('object');
            if (typeof reply === 'object') {
              expect([DhcpMsg.OFFER, DhcpMsg.ACK, DhcpMsg.NAK]).toContain(reply.messageType);
              replies[reply.messageType]++;
            }
          }
          a.expire(now);
          b.expire(now);
          expect(b.leases(now)).toEqual(a.leases(now));
          const held = a.leases(now).filter((l) => l.state !== 'declined');
          expect(new Set(held.map((l) => l.ip)).size).toBe(held.length);
        }
        expect(b.counters).toEqual(a.counters);
      },
    ), { numRuns: Math.ceil(RUNS / 5) });
    // The hostile messages still reached every kind of answer.
    for (const t of [DhcpMsg.OFFER, DhcpMsg.ACK, DhcpMsg.NAK]) expect(replies[t], `replies of type ${t}`).toBeGreaterThan(0);
  });

  it('odd offsets and lengths (past the buffer, negative, fractional) are refused as malformed, never thrown', () => {
    const s = new DhcpServer(config, LeaseStore.inMemory('net10'), T0);
    const out = new Uint8Array(600);
    fc.assert(fc.property(
      fc.uint8Array({ maxLength: 400 }),
      fc.oneof(fc.integer({ min: -10, max: 500 }), fc.double({ noNaN: false })),
      fc.oneof(fc.integer({ min: -10, max: 70_000 }), fc.double({ noNaN: false })),
      fc.integer({ min: -5, max: 700 }),
      (buf, off, len, outOff) => {
        const r = s.handle(buf, off, len, out, outOff, { now: T0 });
        if (typeof r !== 'string') expect(outOff + r.payloadLen).toBeLessThanOrEqual(out.length);
      },
    ), { numRuns: RUNS });
  });
});
