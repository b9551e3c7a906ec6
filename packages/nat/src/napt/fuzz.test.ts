/*
 * NAPT reads (fast-check). translate.test.ts shows that mutated packets never throw
 * and never write outside the packet; this file shows the other half: nothing
 * past Total Length (Ethernet padding, the rest of a receive buffer) and nothing
 * before the IPv4 header is ever read. Two NAPTs with the same sessions and
 * forwards translate the same packets, each placed in a buffer whose other bytes
 * differ (patterns that would change a port, a type or a checksum if read); their
 * results, the translated bytes, the inside address and the session tables must be
 * equal.
 */
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { checkIpv4, checksum, IPV4_OK, parseIp4, pseudoSum, write16, write32 } from '@vswitch/switch';
import { parseForward } from './forwards.js';
import { Napt, NAPT_RESULTS } from './translate.js';

vi.setConfig({ testTimeout: 120_000 });
const RUNS = Number(process.env.FUZZ_RUNS ?? 3000);

const ip = (s: string): number => parseIp4(s);
const PUB = ip('192.0.2.1');
const A = ip('10.0.10.2');
const B = ip('10.0.10.3');
const R = ip('198.51.100.7');
const RT = ip('203.0.113.1');
const T0 = 1_700_000_000_000;

function ipv4(src: number, dst: number, proto: number, l4: Uint8Array, frag = 0x4000): Uint8Array {
  const p = new Uint8Array(20 + l4.length);
  p[0] = 0x45;
  write16(p, 2, p.length);
  write16(p, 6, frag);
  p[8] = 64;
  p[9] = proto;
  write32(p, 12, src);
  write32(p, 16, dst);
  write16(p, 10, checksum(p, 0, 20));
  p.set(l4, 20);
  return p;
}
function tcp(src: number, dst: number, sport: number, dport: number, flags: number): Uint8Array {
  const s = new Uint8Array(24);
  write16(s, 0, sport);
  write16(s, 2, dport);
  s[12] = 6 << 4;
  s[13] = flags;
  s.set([2, 4, 5, 0xb4], 20);
  write16(s, 16, checksum(s, 0, s.length, pseudoSum(src, dst, 6, s.length)));
  return ipv4(src, dst, 6, s);
}
function udp(src: number, dst: number, sport: number, dport: number): Uint8Array {
  const u = new Uint8Array(11);
  write16(u, 0, sport);
  write16(u, 2, dport);
  write16(u, 4, u.length);
  u.set([1, 2, 3], 8);
  write16(u, 6, checksum(u, 0, u.length, pseudoSum(src, dst, 17, u.length)) || 0xffff);
  return ipv4(src, dst, 17, u);
}
function icmp(src: number, dst: number, type: number, word: number, body: ArrayLike<number>): Uint8Array {
  const m = new Uint8Array(8 + body.length);
  m[0] = type;
  write32(m, 4, word);
  m.set(body, 8);
  write16(m, 2, checksum(m, 0, m.length));
  return ipv4(src, dst, 1, m, 0);
}

/** Translated copies of the packets of a few sessions, and packets that belong to them. */
function scene(): { n: Napt; packets: { dir: 'out' | 'in'; p: Uint8Array }[] } {
  const n = new Napt({ publicIp: PUB, table: { seed: 1 } });
  n.forwards.add(parseForward({ proto: 'udp', public: '5353', inside: '10.0.10.3:53' }));
  n.forwards.add(parseForward({ proto: 'tcp', public: '8080', inside: '10.0.10.3:80' }));
  const xlate = (dir: 'out' | 'in', p: Uint8Array): Uint8Array => {
    const b = p.slice();
    if (dir === 'out') n.outbound(b, 0, T0); else n.inbound(b, 0, T0);
    return b;
  };
  const sentTcp = xlate('out', tcp(A, R, 40000, 443, 0x02));
  const sentUdp = xlate('out', udp(A, R, 53000, 53));
  const sentEcho = xlate('out', icmp(A, R, 8, (77 << 16) | 1, [1, 2, 3, 4]));
  const delivered = xlate('in', udp(R, PUB, 4444, 5353));
  return {
    n,
    packets: [
      { dir: 'out', p: tcp(A, R, 40000, 443, 0x10) },
      { dir: 'out', p: udp(A, R, 53000, 53) },
      { dir: 'out', p: icmp(A, R, 8, (77 << 16) | 2, [9, 9]) },
      { dir: 'in', p: tcp(R, PUB, 443, 40000, 0x12) },
      { dir: 'in', p: udp(R, PUB, 53, 53000) },
      { dir: 'in', p: icmp(R, PUB, 0, (77 << 16) | 1, [1, 2, 3, 4]) },
      { dir: 'in', p: icmp(R, PUB, 8, 5, []) },
      { dir: 'in', p: tcp(R, PUB, 999, 8080, 0x02) },
      { dir: 'in', p: icmp(RT, PUB, 3, 0, sentUdp) },
      { dir: 'in', p: icmp(RT, PUB, 11, 0, sentTcp.subarray(0, 28)) },
      { dir: 'in', p: icmp(RT, PUB, 11, 0, sentEcho) },
      { dir: 'out', p: icmp(B, R, 3, 0, delivered) },
      { dir: 'out', p: udp(A, PUB, 41000, 5353) },
      { dir: 'out', p: tcp(A, PUB, 41001, 8080, 0x02) },
    ],
  };
}

/** Patterns for the bytes around a packet: ports, types, checksums and lengths that matter if read. */
const PATTERNS = [[0xa5], [0], [0xff], [8, 0, 0x1f, 0x90], [0x45, 0, 0, 0x40], [3, 3, 0, 0, 0, 0, 0, 0, 0x45]];

function placed(p: Uint8Array, lead: number, tail: number, pattern: readonly number[]): Uint8Array {
  const buf = new Uint8Array(lead + p.length + tail);
  for (let i = 0; i < buf.length; i++) buf[i] = pattern[i % pattern.length];
  buf.set(p, lead);
  return buf;
}

describe('NAPT reads only the packet (fast-check)', () => {
  it('results, translated bytes and sessions do not depend on the bytes around the packet', () => {
    const x = scene();
    const y = scene();
    let ok = 0;
    fc.assert(fc.property(
      fc.nat(x.packets.length - 1),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 5 }),
      fc.boolean(),
      fc.integer({ min: 0, max: 40 }),
      fc.nat(PATTERNS.length - 1),
      fc.nat(PATTERNS.length - 1),
      (which, edits, reseal, cut, pa, pb) => {
        const { dir, p: orig } = x.packets[which];
        const p = orig.slice();
        for (const [pos, v] of edits) p[pos % p.length] = v;
        // Total Length shortened (padding after it), header checksum resealed, so the L4 code runs.
        if (reseal) {
          p[0] = 0x45;
          write16(p, 2, Math.max(20, p.length - (cut % 16)));
          write16(p, 10, 0);
          write16(p, 10, checksum(p, 0, 20));
        }
        const bufA = placed(p, 14, 24, PATTERNS[pa]);
        const bufB = placed(p, 14, 24, PATTERNS[pb]);
        if (checkIpv4(bufA, 14, p.length, false) !== IPV4_OK) return;
        const total = (p[2] << 8) | p[3];
        x.n.insideIp = 0;
        y.n.insideIp = 0;
        const ra = dir === 'out' ? x.n.outbound(bufA, 14, T0) : x.n.inbound(bufA, 14, T0);
        const rb = dir === 'out' ? y.n.outbound(bufB, 14, T0) : y.n.inbound(bufB, 14, T0);
        expect(NAPT_RESULTS[rb]).toBe(NAPT_RESULTS[ra]);
        expect([...bufB.subarray(14, 14 + total)]).toEqual([...bufA.subarray(14, 14 + total)]);
        expect(y.n.insideIp).toBe(x.n.insideIp);
        if (NAPT_RESULTS[ra] === 'ok' || NAPT_RESULTS[ra] === 'hairpin') ok++;
      },
    ), { numRuns: RUNS });
    expect(y.n.table.sessions(T0)).toEqual(x.n.table.sessions(T0));
    expect(y.n.resultCounts()).toEqual(x.n.resultCounts());
    expect(ok).toBeGreaterThan(RUNS / 20);
  });
});
