/*
 * NPTv6 (npt6.ts, RFC 6296) as properties over random addresses and prefixes:
 * the outside address has the outside prefix, the one's-complement sum of the
 * address is unchanged (so no checksum changes, partial ones included), and the
 * way back gives the inside address again; an identifier of all 0xffff words is
 * refused.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatIp6, parseIp6 } from '@vswitch/switch';
import { Npt6 } from './npt6.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 2000);

/** One's-complement sum of the eight words, folded, with 0xffff taken as 0 (they are the same number). */
function sum(a: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < 16; i += 2) s += (a[i] << 8) | a[i + 1];
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s === 0xffff ? 0 : s;
}

const addr = fc.uint8Array({ minLength: 16, maxLength: 16 });
const iidWords = fc.array(fc.oneof(fc.constant(0), fc.constant(0xffff), fc.integer({ min: 0, max: 0xffff })), { minLength: 4, maxLength: 4 });

describe('Npt6', () => {
  it('a worked example: fd00:30::/64 <-> 2001:db8:130::/64, one identifier word adjusted', () => {
    const npt = new Npt6(parseIp6('fd00:30::')!, parseIp6('2001:db8:130::')!);
    const a = parseIp6('fd00:30::5054:ff:fe00:1')!;
    const before = sum(a);
    expect(npt.out(a, 0)).toBe(true);
    expect(formatIp6(a).startsWith('2001:db8:130:0:')).toBe(true);
    expect(formatIp6(a).endsWith(':ff:fe00:1')).toBe(true);
    expect(sum(a)).toBe(before);
    expect(npt.in(a, 0)).toBe(true);
    expect(formatIp6(a)).toBe('fd00:30::5054:ff:fe00:1');
  });

  it('property: outside prefix, checksum-neutral, and back again', () => {
    fc.assert(fc.property(addr, addr, iidWords, (pi, po, words) => {
      const npt = new Npt6(pi, po);
      const a = pi.slice();
      for (let i = 0; i < 4; i++) { a[8 + i * 2] = words[i] >>> 8; a[9 + i * 2] = words[i] & 0xff; }
      const orig = a.slice();
      const allOnes = words.every((w) => w === 0xffff);
      expect(npt.out(a, 0)).toBe(!allOnes);
      if (allOnes) return;
      expect([...a.subarray(0, 8)]).toEqual([...po.subarray(0, 8)]);
      expect(sum(a)).toBe(sum(orig));
      expect(npt.in(a, 0)).toBe(true);
      expect([...a.subarray(0, 8)]).toEqual([...pi.subarray(0, 8)]);
      // The identifier comes back, up to the one's-complement zero (0 and 0xffff) in the adjusted word.
      for (let i = 8; i < 16; i += 2) {
        const w = (a[i] << 8) | a[i + 1];
        const o = (orig[i] << 8) | orig[i + 1];
        expect(w === o || (w === 0 && o === 0xffff) || (w === 0xffff && o === 0)).toBe(true);
      }
      expect(sum(a)).toBe(sum(orig));
    }), { numRuns: RUNS });
  });

  it('translates in place at an offset (an address inside a packet)', () => {
    const npt = new Npt6(parseIp6('fd00:30::')!, parseIp6('2001:db8:130::')!);
    const pkt = new Uint8Array(40);
    pkt.set(parseIp6('fd00:30::1')!, 8);
    npt.out(pkt, 8);
    expect(formatIp6(pkt, 8).startsWith('2001:db8:130:')).toBe(true);
    npt.in(pkt, 8);
    expect(formatIp6(pkt, 8)).toBe('fd00:30::1');
  });
});
