import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { outside, tracked } from '../testing/tracked.js';
import { checkIpv4, IPV4_OK } from './ipv4.js';
import {
  checkVxlan, VXLAN_BAD_FLAGS, VXLAN_OUTER_LEN, VXLAN_SPORT_MIN, VXLAN_TRUNCATED, vxlanSourcePort, writeVxlanHeader, writeVxlanOuter,
} from './vxlan.js';

function tcp4(sport: number, dport: number, src = 0x0a000001, dst = 0x0a000002): Uint8Array {
  const f = new Uint8Array(14 + 20 + 20);
  f.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
  f[14] = 0x45;
  f[14 + 9] = 6;
  new DataView(f.buffer).setUint32(14 + 12, src);
  new DataView(f.buffer).setUint32(14 + 16, dst);
  new DataView(f.buffer).setUint16(34, sport);
  new DataView(f.buffer).setUint16(36, dport);
  return f;
}
const port = (f: Uint8Array): number => vxlanSourcePort(f, 0, f, 12, f.length - 12);

describe('VXLAN header', () => {
  it('round-trips every VNI edge and reads the I flag', () => {
    for (const vni of [0, 1, 100, 0x123456, 0xffffff]) {
      const b = new Uint8Array(8 + 14);
      writeVxlanHeader(b, 0, vni);
      expect([...b.subarray(0, 8)]).toEqual([8, 0, 0, 0, (vni >> 16) & 255, (vni >> 8) & 255, vni & 255, 0]);
      expect(checkVxlan(b, 0, b.length)).toBe(vni);
    }
  });

  it('refuses short payloads, a clear I flag and any reserved bit (as Linux)', () => {
    const b = new Uint8Array(22);
    writeVxlanHeader(b, 0, 7);
    expect(checkVxlan(b, 0, 21)).toBe(VXLAN_TRUNCATED);
    for (const [i, v] of [[0, 0], [0, 0x0c], [0, 0x88], [1, 1], [2, 0x80], [3, 1], [7, 1]]) {
      const c = Uint8Array.from(b);
      c[i] = v;
      expect(checkVxlan(c, 0, c.length), `byte ${i} = ${v}`).toBe(VXLAN_BAD_FLAGS);
    }
  });

  it('writes an outer IPv4/UDP header with DF, a valid checksum, checksum-0 UDP and the right lengths', () => {
    const s = new Uint8Array(VXLAN_OUTER_LEN);
    writeVxlanOuter(s, 0, 0xc0a80001, 0xc0a80002, 50000, 4789, 0xabcdef, 100, 64);
    expect(checkIpv4(s, 0, s.length, true)).not.toBe(IPV4_OK); // Total Length says 136: the inner frame must follow
    const full = new Uint8Array(VXLAN_OUTER_LEN + 100);
    full.set(s);
    expect(checkIpv4(full, 0, full.length, true)).toBe(IPV4_OK);
    const dv = new DataView(full.buffer);
    expect(dv.getUint16(2)).toBe(136);
    expect(dv.getUint16(6)).toBe(0x4000);
    expect(full[8]).toBe(64);
    expect(full[9]).toBe(17);
    expect(dv.getUint32(12)).toBe(0xc0a80001);
    expect(dv.getUint32(16)).toBe(0xc0a80002);
    expect(dv.getUint16(20)).toBe(50000);
    expect(dv.getUint16(22)).toBe(4789);
    expect(dv.getUint16(24)).toBe(116);
    expect(dv.getUint16(26)).toBe(0);
    expect(checkVxlan(full, 28, 108)).toBe(0xabcdef);
  });
});

describe('outer source port (RFC 7348 entropy)', () => {
  it('is stable per flow, in 49152-65535, and differs across flows', () => {
    const a = port(tcp4(1000, 80));
    expect(port(tcp4(1000, 80))).toBe(a);
    const seen = new Set<number>();
    for (let p = 1000; p < 1100; p++) {
      const v = port(tcp4(p, 80));
      expect(v).toBeGreaterThanOrEqual(VXLAN_SPORT_MIN);
      expect(v).toBeLessThanOrEqual(65535);
      seen.add(v);
    }
    expect(seen.size).toBeGreaterThan(90);
  });

  it('sees the same flow behind an 802.1Q tag and in two pieces', () => {
    const f = tcp4(1234, 443);
    const t = new Uint8Array(f.length + 4);
    t.set(f.subarray(0, 12));
    t.set([0x81, 0, 0, 10], 12);
    t.set(f.subarray(12), 16);
    const plain = port(f);
    // In two pieces: 12-byte header from a scratch, rest from the frame.
    const head = new Uint8Array(20);
    head.set(f.subarray(0, 12), 5);
    expect(vxlanSourcePort(head, 5, f, 12, f.length - 12)).toBe(plain);
    // A tagged inner frame hashes its IP flow as the untagged one does (the MACs are the same).
    expect(port(t)).toBe(plain);
  });

  it('fuzz: any bytes give a port in range, reading only inside both pieces', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 12, maxLength: 12 }), fc.uint8Array({ maxLength: 80 }), fc.constantFrom(0, 0x0800, 0x86dd, 0x8100),
      (macs, rest, type) => {
        const b = new Uint8Array(rest.length + 2);
        b[0] = type >> 8;
        b[1] = type & 255;
        b.set(rest, 2);
        const len = type === 0 ? rest.length : b.length;
        const src = type === 0 ? rest : b;
        const ta = tracked(macs);
        const tb = tracked(src);
        const v = vxlanSourcePort(ta.view, 0, tb.view, 0, len);
        expect(v).toBeGreaterThanOrEqual(VXLAN_SPORT_MIN);
        expect(v).toBeLessThanOrEqual(65535);
        expect(outside(ta.reads, 0, 12)).toEqual([]);
        expect(outside(tb.reads, 0, len)).toEqual([]);
      }), { numRuns: 2000 });
  });

  it('fuzz: checkVxlan never reads outside its payload and accepts exactly the well-formed headers', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), fc.integer({ min: 0, max: 8 }), (bytes, pad) => {
      const buf = new Uint8Array(pad + bytes.length + 4).fill(0x08);
      buf.set(bytes, pad);
      const t = tracked(buf);
      const r = checkVxlan(t.view, pad, bytes.length);
      expect(outside(t.reads, pad, pad + bytes.length)).toEqual([]);
      const ok = bytes.length >= 22 && bytes[0] === 8 && bytes[1] === 0 && bytes[2] === 0 && bytes[3] === 0 && bytes[7] === 0;
      if (ok) expect(r).toBe((bytes[4] << 16) | (bytes[5] << 8) | bytes[6]);
      else expect(r).toBeLessThan(0);
    }), { numRuns: 3000 });
  });
});
