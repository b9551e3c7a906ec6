import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseIp4 } from '@vswitch/switch';
import {
  DIR_IN, DIR_OUT, NAPT_TABLE_DEFAULTS, NAPT_TABLE_LIMITS, NaptTable, type NaptSession, type PortReservation,
} from './table.js';

const TCP = 6;
const UDP = 17;
const ICMP = 1;
const SYN = 0x02;
const ACK = 0x10;
const FIN = 0x01;
const RST = 0x04;

const ip = (s: string): number => parseIp4(s);
const VM1 = ip('10.0.10.2');
const VM2 = ip('10.0.10.3');
const R1 = ip('198.51.100.7');
const R2 = ip('203.0.113.9');
const T0 = 1_700_000_000_000;
const SEC = 1000;

function open(t: NaptTable, proto: number, inside: number, iport: number, remote: number, rport: number, now = T0): NaptSession {
  const s = t.open(proto, inside, iport, remote, rport, now);
  if (typeof s === 'string') throw new Error(`refused: ${s}`);
  return s;
}

describe('configuration', () => {
  it('has the RFC-minded defaults', () => {
    const t = new NaptTable({ seed: 1 });
    expect(t.config).toEqual({
      portRange: { lo: 1024, hi: 65535 }, icmpIdRange: { lo: 0, hi: 65535 },
      udpTimeoutSec: 300, tcpEstablishedTimeoutSec: 7440, tcpTransitoryTimeoutSec: 240, icmpTimeoutSec: 60,
      maxSessions: 100_000, maxSessionsPerHost: 8192, maxSessionsPerPort: 8192,
    });
    expect(NAPT_TABLE_DEFAULTS.tcpEstablishedTimeoutSec).toBe(2 * 3600 + 4 * 60);
  });

  it('clamps timeouts to the RFC floors and the transitory timeout under the established one', () => {
    const t = new NaptTable({
      udpTimeoutSec: 30, tcpEstablishedTimeoutSec: 600, tcpTransitoryTimeoutSec: 10, icmpTimeoutSec: 5,
    });
    expect(t.config.udpTimeoutSec).toBe(NAPT_TABLE_LIMITS.udpTimeoutSecMin);
    expect(t.config.udpTimeoutSec).toBe(120);
    expect(t.config.tcpEstablishedTimeoutSec).toBe(7440);
    expect(t.config.tcpTransitoryTimeoutSec).toBe(240);
    expect(t.config.icmpTimeoutSec).toBe(60);
    const u = new NaptTable({ tcpEstablishedTimeoutSec: 8000, tcpTransitoryTimeoutSec: 9000, udpTimeoutSec: Number.NaN });
    expect(u.config.tcpTransitoryTimeoutSec).toBe(8000);
    expect(u.config.udpTimeoutSec).toBe(300);
    const v = new NaptTable({ udpTimeoutSec: 1e12, maxSessions: 10, maxSessionsPerHost: 50 });
    expect(v.config.udpTimeoutSec).toBe(NAPT_TABLE_LIMITS.timeoutSecMax);
    expect(v.config.maxSessionsPerHost).toBe(10);
  });

  it('clamps and orders port ranges', () => {
    expect(new NaptTable({ portRange: { lo: 0, hi: 70000 } }).config.portRange).toEqual({ lo: 1, hi: 65535 });
    expect(new NaptTable({ portRange: { lo: 6000, hi: 5000 } }).config.portRange).toEqual({ lo: 5000, hi: 6000 });
  });
});

describe('mapping and port choice', () => {
  it('preserves the inside port when it is in range and free', () => {
    const t = new NaptTable({ seed: 7 });
    const s = open(t, UDP, VM1, 40000, R1, 53);
    expect(s.mapping.publicPort).toBe(40000);
    expect(t.mappingByPublic(UDP, 40000)).toBe(s.mapping);
    expect(t.mappingByInside(UDP, VM1, 40000)).toBe(s.mapping);
  });

  it('allocates from the range when the inside port is outside it or taken', () => {
    const t = new NaptTable({ seed: 7, portRange: { lo: 20000, hi: 20999 } });
    const low = open(t, TCP, VM1, 80, R1, 443);
    expect(low.mapping.publicPort).toBeGreaterThanOrEqual(20000);
    expect(low.mapping.publicPort).toBeLessThanOrEqual(20999);
    const a = open(t, UDP, VM1, 20500, R1, 53);
    const b = open(t, UDP, VM2, 20500, R1, 53);
    expect(a.mapping.publicPort).toBe(20500);
    expect(b.mapping.publicPort).not.toBe(20500);
    expect(b.mapping.publicPort).toBeGreaterThanOrEqual(20000);
    expect(b.mapping.publicPort).toBeLessThanOrEqual(20999);
  });

  it('keeps one port space per protocol', () => {
    const t = new NaptTable({ seed: 7 });
    expect(open(t, TCP, VM1, 40000, R1, 80).mapping.publicPort).toBe(40000);
    expect(open(t, UDP, VM2, 40000, R1, 53).mapping.publicPort).toBe(40000);
    expect(open(t, ICMP, VM1, 40000, R1, 0).mapping.publicPort).toBe(40000);
  });

  it('preserves ICMP echo ids, 0 included', () => {
    const t = new NaptTable({ seed: 7 });
    expect(open(t, ICMP, VM1, 0, R1, 0).mapping.publicPort).toBe(0);
    expect(open(t, ICMP, VM2, 0, R1, 0).mapping.publicPort).not.toBe(0);
  });

  it('is endpoint-independent: one inside endpoint, two remotes, one public port', () => {
    const t = new NaptTable({ seed: 3 });
    const a = open(t, UDP, VM1, 5000, R1, 3478);
    const b = open(t, UDP, VM1, 5000, R2, 3478);
    const c = open(t, UDP, VM1, 5000, R2, 3479);
    expect(a.mapping).toBe(b.mapping);
    expect(c.mapping).toBe(a.mapping);
    expect(t.size).toBe(3);
    expect(t.mappingCount).toBe(1);
    expect(t.lookupOut(UDP, VM1, 5000, R2, 3479)).toBe(c);
    expect(t.lookupIn(UDP, a.mapping.publicPort, R1, 3478)).toBe(a);
    expect(t.lookupIn(UDP, a.mapping.publicPort, R1, 9999)).toBeUndefined();
  });

  it('filters by address: the remotes the endpoint sent to, any port of theirs', () => {
    const t = new NaptTable({ seed: 3 });
    const m = open(t, UDP, VM1, 5000, R1, 3478).mapping;
    expect(m.permits(R1)).toBe(true);
    expect(m.permits(R2)).toBe(false);
    expect(m.forwarded).toBe(false);
    const f = open(t, TCP, VM2, 80, R1, 5555, T0);
    expect(f.mapping.permits(R2)).toBe(false);
    const fw = t.open(TCP, VM2, 8080, R2, 1234, T0, 8080);
    expect(typeof fw).toBe('object');
    expect((fw as NaptSession).mapping.permits(ip('192.0.2.99'))).toBe(true);
  });

  it('never hands out reserved ports, port preservation included', () => {
    const reserved = new Set([40000, 20000, 20001]);
    const reservation: PortReservation = { isReserved: (proto, port) => proto === TCP && reserved.has(port) };
    const t = new NaptTable({ seed: 11, portRange: { lo: 20000, hi: 20003 }, reservation });
    expect(open(t, TCP, VM1, 20000, R1, 80).mapping.publicPort).toBeGreaterThanOrEqual(20002);
    const ports = new Set<number>();
    ports.add(t.mappingByInside(TCP, VM1, 20000)!.publicPort);
    ports.add(open(t, TCP, VM1, 1, R1, 80).mapping.publicPort);
    expect(ports).toEqual(new Set([20002, 20003]));
    expect(t.open(TCP, VM1, 2, R1, 80, T0)).toBe('no_port');
    // UDP is not reserved.
    expect(open(t, UDP, VM1, 20000, R1, 53).mapping.publicPort).toBe(20000);
  });

  it('refuses with no_port when the range is exhausted, and reuses a port once freed', () => {
    const t = new NaptTable({ seed: 5, portRange: { lo: 5000, hi: 5003 } });
    const got = [1, 2, 3, 4].map((p) => open(t, UDP, VM1, p, R1, 53, T0).mapping.publicPort);
    expect(new Set(got)).toEqual(new Set([5000, 5001, 5002, 5003]));
    expect(t.open(UDP, VM1, 5, R1, 53, T0)).toBe('no_port');
    expect(t.refused.no_port).toBe(1);
    // A further session on an existing mapping needs no port.
    expect(typeof t.open(UDP, VM1, 1, R2, 53, T0)).toBe('object');
    t.expire(T0 + 300 * SEC);
    expect(t.size).toBe(0);
    expect(open(t, UDP, VM1, 5, R1, 53, T0 + 301 * SEC).mapping.publicPort).toBeGreaterThanOrEqual(5000);
  });

  it('a forward port takes over the endpoint and the port from dynamic mappings', () => {
    const t = new NaptTable({ seed: 5 });
    const dyn = open(t, TCP, VM1, 80, R1, 5000);
    const holder = open(t, TCP, VM2, 8080, R1, 5000);
    expect(holder.mapping.publicPort).toBe(8080);
    const fw = t.open(TCP, VM1, 80, R2, 6000, T0, 8080) as NaptSession;
    expect(fw.mapping.publicPort).toBe(8080);
    expect(fw.mapping.forwarded).toBe(true);
    expect(dyn.alive).toBe(false);
    expect(holder.alive).toBe(false);
    expect(t.size).toBe(1);
    expect(t.stats().flushed).toBe(2);
  });
});

describe('limits', () => {
  it('refuses new flows past maxSessions and counts them as table_full', () => {
    const t = new NaptTable({ seed: 1, maxSessions: 3 });
    open(t, UDP, VM1, 1000, R1, 53);
    open(t, UDP, VM1, 1001, R1, 53);
    open(t, UDP, VM2, 1000, R1, 53);
    expect(t.open(UDP, VM2, 1001, R1, 53, T0)).toBe('table_full');
    expect(t.open(UDP, VM1, 1000, R2, 53, T0)).toBe('table_full');
    expect(t.refused).toEqual({ table_full: 2, host_limit: 0, port_limit: 0, no_port: 0 });
    // Established flows go on.
    expect(t.lookupOut(UDP, VM1, 1000, R1, 53)).toBeDefined();
  });

  it('refuses past maxSessionsPerHost for that host only, counted as host_limit', () => {
    const t = new NaptTable({ seed: 1, maxSessionsPerHost: 2 });
    open(t, TCP, VM1, 1000, R1, 80);
    open(t, TCP, VM1, 1000, R2, 80);
    expect(t.open(TCP, VM1, 1001, R1, 80, T0)).toBe('host_limit');
    expect(t.open(UDP, VM1, 1001, R1, 53, T0)).toBe('host_limit');
    expect(typeof t.open(TCP, VM2, 1000, R1, 80, T0)).toBe('object');
    expect(t.stats().refused).toEqual({ table_full: 0, host_limit: 2, port_limit: 0, no_port: 0 });
    t.expire(T0 + 240 * SEC);
    expect(typeof t.open(TCP, VM1, 1001, R1, 80, T0 + 240 * SEC)).toBe('object');
  });
});

describe('per-port limit (issue 12: leases must not multiply the per-host limit)', () => {
  const VM3 = ip('10.0.10.4');

  it('defaults to the per-host limit', () => {
    expect(new NaptTable({ seed: 1, maxSessionsPerHost: 7 }).config.maxSessionsPerPort).toBe(7);
    expect(new NaptTable({ seed: 1, maxSessionsPerHost: 7, maxSessionsPerPort: 3 }).config.maxSessionsPerPort).toBe(3);
  });

  it('counts the sessions of every address a port uses, refuses past it as port_limit, other ports unaffected', () => {
    const t = new NaptTable({ seed: 1, maxSessionsPerHost: 3, maxSessionsPerPort: 4 });
    for (let p = 0; p < 3; p++) expect(typeof t.open(UDP, VM1, 1000 + p, R1, 53, T0, -1, 'tap1')).toBe('object');
    expect(t.open(UDP, VM1, 2000, R1, 53, T0, -1, 'tap1')).toBe('host_limit');
    // A second address on the same port gets only what the port has left.
    expect(typeof t.open(UDP, VM2, 1000, R1, 53, T0, -1, 'tap1')).toBe('object');
    expect(t.open(UDP, VM2, 1001, R1, 53, T0, -1, 'tap1')).toBe('port_limit');
    expect(t.open(TCP, VM2, 1001, R2, 80, T0, -1, 'tap1')).toBe('port_limit');
    expect(t.portSessions('tap1')).toBe(4);
    // Another port is not affected; sessions without a port are not counted per port.
    for (let p = 0; p < 3; p++) expect(typeof t.open(UDP, VM3, 1000 + p, R1, 53, T0, -1, 'tap2')).toBe('object');
    expect(t.portSessions('tap2')).toBe(3);
    expect(t.refused).toEqual({ table_full: 0, host_limit: 1, port_limit: 2, no_port: 0 });
    expect(t.portCounts()).toEqual({ tap1: 4, tap2: 3 });
    // Expiry gives the port its budget back.
    t.expire(T0 + 301 * SEC);
    expect(t.portCounts()).toEqual({});
    expect(typeof t.open(UDP, VM2, 1001, R1, 53, T0 + 301 * SEC, -1, 'tap1')).toBe('object');
    expect(t.portSessions('tap1')).toBe(1);
  });

  it('a new remote on a mapping counts against the port that made it; forward sessions count against none', () => {
    const t = new NaptTable({ seed: 1, maxSessionsPerPort: 2 });
    const s = open(t, UDP, VM1, 5000, R1, 3478);
    expect(s.port).toBe('');
    const a = t.open(UDP, VM2, 5000, R1, 3478, T0, -1, 'tap1');
    if (typeof a === 'string') throw new Error(a);
    expect(a.mapping.port).toBe('tap1');
    // The remote answers from another port (inbound: the caller gives no port).
    const b = t.open(UDP, VM2, 5000, R1, 3479, T0);
    expect(typeof b === 'object' && b.port).toBe('tap1');
    expect(t.open(UDP, VM2, 5000, R1, 3480, T0)).toBe('port_limit');
    // Port forward sessions (publicPort given, from the outside): no port.
    for (let i = 0; i < 3; i++) expect(typeof t.open(TCP, VM2, 22, R2, 40000 + i, T0, 2222)).toBe('object');
    expect(t.portSessions('tap1')).toBe(2);
    // Removing sessions by any path gives the budget back.
    t.flushHost(VM2);
    expect(t.portSessions('tap1')).toBe(0);
    open(t, UDP, VM2, 6000, R1, 53);
    t.open(UDP, VM2, 6001, R1, 53, T0, -1, 'tap1');
    t.flushAll();
    expect(t.portCounts()).toEqual({});
  });

  it('the per-port counts always equal the live sessions per port (random opens, expiry and flushes)', () => {
    fc.assert(fc.property(
      fc.array(fc.record({
        op: fc.constantFrom('open', 'open', 'open', 'expire', 'flushHost', 'flushInside'),
        host: fc.integer({ min: 0, max: 3 }), port: fc.constantFrom('', 'a', 'b'), iport: fc.integer({ min: 1000, max: 1003 }),
        remote: fc.integer({ min: 0, max: 2 }), dt: fc.integer({ min: 0, max: 400 }),
      }), { maxLength: 80 }),
      (ops) => {
        const t = new NaptTable({ seed: 3, maxSessionsPerHost: 5, maxSessionsPerPort: 6 });
        const live: NaptSession[] = [];
        let now = T0;
        for (const o of ops) {
          now += o.dt * SEC;
          const inside = VM1 + o.host;
          if (o.op === 'open') {
            if (t.lookupOut(UDP, inside, o.iport, R1 + o.remote, 53) !== undefined) continue;
            const s = t.open(UDP, inside, o.iport, R1 + o.remote, 53, now, -1, o.port);
            if (typeof s === 'object') live.push(s);
          } else if (o.op === 'expire') t.expire(now);
          else if (o.op === 'flushHost') t.flushHost(inside);
          else t.flushInside(UDP, inside, o.iport, o.iport);
          const want: Record<string, number> = {};
          for (const s of live) if (s.alive && s.port !== '') want[s.port] = (want[s.port] ?? 0) + 1;
          expect(t.portCounts()).toEqual(want);
          for (const p of ['a', 'b']) expect(t.portSessions(p)).toBeLessThanOrEqual(6);
        }
      },
    ), { numRuns: 200 });
  });
});

describe('timeouts (fake clock)', () => {
  it('UDP: 300 s by default, refreshed both ways', () => {
    const t = new NaptTable({ seed: 1 });
    const s = open(t, UDP, VM1, 5353, R1, 53);
    t.track(s, DIR_OUT, 0, T0);
    expect(t.expire(T0 + 299_999)).toBe(0);
    t.track(s, DIR_IN, 0, T0 + 200 * SEC);
    expect(t.expire(T0 + 499_999)).toBe(0);
    expect(s.alive).toBe(true);
    expect(t.expire(T0 + 500 * SEC)).toBe(1);
    expect(s.alive).toBe(false);
    expect(t.size).toBe(0);
    expect(t.mappingCount).toBe(0);
    expect(t.mappingByPublic(UDP, 5353)).toBeUndefined();
    expect(t.stats()).toMatchObject({ sessions: 0, mappings: 0, hosts: 0, created: 1, expired: 1 });
  });

  it('UDP: never less than 120 s, even when configured lower', () => {
    const t = new NaptTable({ seed: 1, udpTimeoutSec: 60 });
    const s = open(t, UDP, VM1, 5353, R1, 53);
    t.track(s, DIR_OUT, 0, T0);
    expect(t.expire(T0 + 119_999)).toBe(0);
    expect(t.expire(T0 + 120_000)).toBe(1);
  });

  it('UDP: a configured 120 s expires at 120 s', () => {
    const t = new NaptTable({ seed: 1, udpTimeoutSec: 120 });
    const s = open(t, UDP, VM1, 5353, R1, 53);
    t.track(s, DIR_OUT, 0, T0 + 10 * SEC);
    expect(t.expire(T0 + 129 * SEC)).toBe(0);
    expect(t.expire(T0 + 130 * SEC)).toBe(1);
  });

  it('TCP: SYN sent is transitory (240 s), established lasts 7440 s', () => {
    const t = new NaptTable({ seed: 1 });
    const s = open(t, TCP, VM1, 40000, R1, 443);
    t.track(s, DIR_OUT, SYN, T0);
    expect(s.stateName).toBe('syn_sent');
    expect(t.expire(T0 + 239_999)).toBe(0);
    t.track(s, DIR_IN, SYN | ACK, T0 + 1000);
    expect(s.stateName).toBe('established');
    t.track(s, DIR_OUT, ACK, T0 + 2000);
    expect(t.expire(T0 + 2000 + 7439 * SEC)).toBe(0);
    expect(s.alive).toBe(true);
    expect(t.expire(T0 + 2000 + 7440 * SEC)).toBe(1);
  });

  it('TCP: an unanswered SYN goes after 240 s', () => {
    const t = new NaptTable({ seed: 1 });
    const s = open(t, TCP, VM1, 40000, R1, 443);
    t.track(s, DIR_OUT, SYN, T0);
    expect(t.expire(T0 + 240 * SEC)).toBe(1);
  });

  it('TCP: a FIN shortens an established session to the transitory timeout at once', () => {
    const t = new NaptTable({ seed: 1 });
    const s = open(t, TCP, VM1, 40000, R1, 443);
    t.track(s, DIR_OUT, SYN, T0);
    t.track(s, DIR_IN, SYN | ACK, T0);
    t.track(s, DIR_OUT, ACK, T0);
    t.expire(T0 + 300 * SEC); // re-queues the session at its established deadline
    const t1 = T0 + 1000 * SEC;
    t.track(s, DIR_OUT, FIN | ACK, t1);
    expect(s.stateName).toBe('fin_wait');
    expect(t.expire(t1 + 239 * SEC)).toBe(0);
    expect(t.expire(t1 + 240 * SEC)).toBe(1);
  });

  it('TCP: both FINs close; the closed session lingers for the transitory timeout', () => {
    const t = new NaptTable({ seed: 1 });
    const s = open(t, TCP, VM1, 40000, R1, 443);
    t.track(s, DIR_OUT, SYN, T0);
    t.track(s, DIR_IN, SYN | ACK, T0);
    t.track(s, DIR_IN, FIN | ACK, T0 + 5 * SEC);
    expect(s.stateName).toBe('fin_wait');
    t.track(s, DIR_OUT, FIN | ACK, T0 + 6 * SEC);
    expect(s.stateName).toBe('closed');
    t.track(s, DIR_IN, ACK, T0 + 7 * SEC);
    expect(s.stateName).toBe('closed');
    expect(t.expire(T0 + 246 * SEC)).toBe(0);
    expect(t.expire(T0 + 247 * SEC)).toBe(1);
  });

  it('TCP: RST closes from any state; a bare SYN reopens a closed session', () => {
    const t = new NaptTable({ seed: 1 });
    const s = open(t, TCP, VM1, 40000, R1, 443);
    t.track(s, DIR_OUT, SYN, T0);
    t.track(s, DIR_IN, RST | ACK, T0);
    expect(s.stateName).toBe('closed');
    t.track(s, DIR_OUT, SYN, T0 + SEC);
    expect(s.stateName).toBe('syn_sent');
    t.track(s, DIR_IN, SYN | ACK, T0 + SEC);
    expect(s.stateName).toBe('established');
    t.track(s, DIR_OUT, RST, T0 + 2 * SEC);
    expect(s.stateName).toBe('closed');
    expect(t.expire(T0 + 242 * SEC)).toBe(1);
  });

  it('TCP: a SYN+ACK from the side that sent the SYN does not establish; ACKs both ways do', () => {
    const t = new NaptTable({ seed: 1 });
    const s = open(t, TCP, VM1, 40000, R1, 443);
    t.track(s, DIR_OUT, SYN, T0);
    t.track(s, DIR_OUT, SYN | ACK, T0);
    expect(s.stateName).toBe('syn_sent');
    // Simultaneous open: SYN in, then ACKs both ways.
    t.track(s, DIR_IN, SYN, T0);
    t.track(s, DIR_IN, ACK, T0);
    expect(s.stateName).toBe('established');
  });

  it('TCP: an inbound-opened session (port forward) is established by the outbound SYN+ACK', () => {
    const t = new NaptTable({ seed: 1 });
    const s = t.open(TCP, VM1, 80, R1, 5555, T0, 8080) as NaptSession;
    t.track(s, DIR_IN, SYN, T0);
    expect(s.stateName).toBe('syn_sent');
    t.track(s, DIR_OUT, SYN | ACK, T0);
    expect(s.stateName).toBe('established');
  });

  it('ICMP echo: 60 s', () => {
    const t = new NaptTable({ seed: 1 });
    const s = open(t, ICMP, VM1, 77, R1, 0);
    t.track(s, DIR_OUT, 0, T0);
    expect(s.stateName).toBe('open');
    expect(t.expire(T0 + 59_999)).toBe(0);
    expect(t.expire(T0 + 60_000)).toBe(1);
  });

  it('a session opened and never tracked still expires', () => {
    const t = new NaptTable({ seed: 1 });
    open(t, UDP, VM1, 1, R1, 53);
    expect(t.nextDeadline()).toBe(T0 + 300 * SEC);
    expect(t.expire(T0 + 300 * SEC)).toBe(1);
    expect(t.nextDeadline()).toBe(Number.POSITIVE_INFINITY);
  });

  it('expires 100,000 sessions at the right time and cheaply when nothing is due', () => {
    const t = new NaptTable({ seed: 1, maxSessions: 200_000, maxSessionsPerHost: 200_000 });
    const N = 100_000;
    // Two remotes per mapping: one public address has only 64,512 ports per protocol.
    for (let i = 0; i < N; i++) {
      const m = i >>> 1;
      const s = open(t, UDP, ip('10.0.0.0') + (m >>> 8), 1024 + (m & 0xff), i & 1 ? R1 : R2, 53, T0);
      t.track(s, DIR_OUT, 0, T0 + (i % 100) * SEC);
    }
    expect(t.size).toBe(N);
    t.expire(T0 + 120 * SEC); // first pass: requeue everything at its real deadline
    // Cheap when nothing is due, by structure rather than by a clock (timed asserts flake
    // on a loaded machine): the heap's head is the earliest real deadline, so expire()'s
    // loop is not entered at all until then.
    expect(t.nextDeadline()).toBe(T0 + 300 * SEC);
    for (let k = 0; k < 100; k++) expect(t.expire(T0 + 121 * SEC + k * SEC)).toBe(0);
    expect(t.nextDeadline()).toBe(T0 + 300 * SEC);
    expect(t.expire(T0 + 300 * SEC + 49 * SEC)).toBe(N / 2);
    expect(t.expire(T0 + 300 * SEC + 99 * SEC)).toBe(N / 2);
    expect(t.size).toBe(0);
  });
});

describe('views and flushes', () => {
  it('lists sessions for `vswitch nat sessions`', () => {
    const t = new NaptTable({ seed: 1 });
    const u = open(t, UDP, VM1, 5353, R1, 53);
    t.track(u, DIR_OUT, 0, T0);
    const c = open(t, TCP, VM2, 40001, R2, 443);
    t.track(c, DIR_OUT, SYN, T0);
    t.track(c, DIR_IN, SYN | ACK, T0 + 10 * SEC);
    const p = open(t, ICMP, VM1, 9, R2, 0);
    t.track(p, DIR_OUT, 0, T0);
    expect(t.sessions(T0 + 30 * SEC)).toEqual([
      { proto: 'tcp', inside: '10.0.10.3:40001', publicPort: 40001, remote: '203.0.113.9:443', state: 'established', forwarded: false, idleSec: 20, expiresInSec: 7420 },
      { proto: 'udp', inside: '10.0.10.2:5353', publicPort: 5353, remote: '198.51.100.7:53', state: 'open', forwarded: false, idleSec: 30, expiresInSec: 270 },
      { proto: 'icmp', inside: '10.0.10.2:9', publicPort: 9, remote: '203.0.113.9', state: 'open', forwarded: false, idleSec: 30, expiresInSec: 30 },
    ]);
  });

  it('flushes by public port, inside endpoint, host, and all', () => {
    const t = new NaptTable({ seed: 1 });
    open(t, UDP, VM1, 5000, R1, 53);
    open(t, UDP, VM1, 5000, R2, 53);
    open(t, UDP, VM1, 5001, R1, 53);
    open(t, TCP, VM1, 5002, R1, 80);
    open(t, TCP, VM2, 5003, R1, 80);
    expect(t.flushPublic(UDP, 5000, 5000)).toBe(2);
    expect(t.size).toBe(3);
    expect(t.flushInside(UDP, VM1, 5001, 5001)).toBe(1);
    expect(t.flushHost(VM1)).toBe(1);
    expect(t.size).toBe(1);
    expect(t.stats().hosts).toBe(1);
    expect(t.flushAll()).toBe(1);
    expect(t.size).toBe(0);
    expect(t.mappingCount).toBe(0);
    expect(t.stats().flushed).toBe(5);
    // Stale heap entries of flushed sessions are harmless.
    expect(t.expire(T0 + 10_000 * SEC)).toBe(0);
    expect(open(t, UDP, VM1, 5000, R1, 53).mapping.publicPort).toBe(5000);
  });
});

describe('many sessions on one mapping (a server behind a forward)', () => {
  it('indexes them by remote IP from 8 on, and finds, filters and removes correctly', () => {
    const t = new NaptTable({ seed: 1 });
    const remotes: [number, number][] = [];
    for (let i = 0; i < 40; i++) remotes.push([R1 + (i % 13), 1000 + i]);
    const sessions = remotes.map(([r, p]) => t.open(TCP, VM1, 80, r, p, T0, 8080) as NaptSession);
    const m = sessions[0].mapping;
    expect(m.sessions).toBe(40);
    expect(m.index).toBeDefined();
    remotes.forEach(([r, p], i) => expect(m.find(r, p)).toBe(sessions[i]));
    expect(m.find(R1, 999)).toBeUndefined();
    // Remove every other session; the rest stay findable, the removed ones are gone.
    for (let i = 0; i < 40; i += 2) t.track(sessions[i], DIR_OUT, RST, T0);
    for (let i = 1; i < 40; i += 2) t.track(sessions[i], DIR_OUT, SYN, T0 + 1000 * SEC);
    expect(t.expire(T0 + 240 * SEC)).toBe(20);
    remotes.forEach(([r, p], i) => expect(m.find(r, p)).toBe(i % 2 ? sessions[i] : undefined));
    expect(t.sessions(T0 + 1000 * SEC).length).toBe(20);
  });

  it('filters by remote IP with and without the index', () => {
    const t = new NaptTable({ seed: 1 });
    const first = open(t, UDP, VM1, 5000, R1, 1);
    const m = first.mapping;
    expect(m.index).toBeUndefined();
    expect(m.permits(R1)).toBe(true);
    expect(m.permits(R2)).toBe(false);
    for (let i = 2; i <= 9; i++) open(t, UDP, VM1, 5000, R1 + i, 1);
    expect(m.index).toBeDefined();
    expect(m.permits(R1 + 9)).toBe(true);
    expect(m.permits(R2)).toBe(false);
    // Unsigned and signed forms of an address are the same address.
    expect(m.permits(R1 | 0)).toBe(true);
    expect(m.find(R1 | 0, 1)).toBe(first);
  });
});

describe('expiry model (fast-check)', () => {
  it('expire(now) removes exactly the sessions whose deadline has passed', () => {
    type Op =
      | { k: 'open'; proto: number; host: number; port: number; remote: number }
      | { k: 'touch'; which: number; dir: number; flags: number }
      | { k: 'tick'; ms: number };
    const op: fc.Arbitrary<Op> = fc.oneof(
      fc.record({ k: fc.constant('open' as const), proto: fc.constantFrom(TCP, UDP, ICMP), host: fc.nat(3), port: fc.nat(5), remote: fc.nat(3) }),
      fc.record({ k: fc.constant('touch' as const), which: fc.nat(), dir: fc.constantFrom(DIR_OUT, DIR_IN), flags: fc.constantFrom(0, SYN, SYN | ACK, ACK, FIN | ACK, RST) }),
      fc.record({ k: fc.constant('tick' as const), ms: fc.integer({ min: 0, max: 3_000_000 }) }),
    );
    fc.assert(fc.property(fc.array(op, { maxLength: 120 }), (ops) => {
      const t = new NaptTable({ seed: 4 });
      let now = T0;
      const all: NaptSession[] = [];
      for (const o of ops) {
        if (o.k === 'open') {
          const s = t.lookupOut(o.proto, VM1 + o.host, 1000 + o.port, R1 + o.remote, 53)
            ?? t.open(o.proto, VM1 + o.host, 1000 + o.port, R1 + o.remote, 53, now);
          if (typeof s !== 'string' && !all.includes(s)) all.push(s);
        } else if (o.k === 'touch') {
          const live = all.filter((s) => s.alive);
          if (live.length > 0) t.track(live[o.which % live.length], o.dir, o.flags, now);
        } else {
          now += o.ms;
          const due = all.filter((s) => s.alive && s.expiresAt <= now);
          expect(t.expire(now)).toBe(due.length);
          for (const s of all) expect(s.alive).toBe(s.expiresAt > now && !due.includes(s));
        }
        const live = all.filter((s) => s.alive);
        expect(t.size).toBe(live.length);
        for (const s of live) expect(t.lookupIn(s.mapping.proto === 0 ? TCP : s.mapping.proto === 1 ? UDP : ICMP, s.mapping.publicPort, s.remoteIp, s.remotePort)).toBe(s);
      }
    }), { numRuns: 300 });
  });
});

describe('sessions by protocol (for metrics)', () => {
  it('counts live sessions per protocol through creation, expiry and flush', () => {
    const t = new NaptTable();
    open(t, TCP, VM1, 40000, R1, 443);
    open(t, UDP, VM1, 5000, R1, 53);
    open(t, UDP, VM2, 5000, R2, 53);
    open(t, ICMP, VM2, 7, R1, 0);
    expect(t.stats().byProto).toEqual({ tcp: 1, udp: 2, icmp: 1 });
    // ICMP (60 s) and a SYN-only TCP session (240 s) expire before UDP (300 s).
    t.expire(T0 + 250 * SEC);
    expect(t.stats().byProto).toEqual({ tcp: 0, udp: 2, icmp: 0 });
    t.flushAll();
    expect(t.stats().byProto).toEqual({ tcp: 0, udp: 0, icmp: 0 });
  });
});
