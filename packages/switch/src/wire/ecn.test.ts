import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { checksum } from './checksum.js';
import {
  decapEcn, ECN_CE, ECN_DROP, ECN_ECT0, ECN_ECT1, ECN_NOT_ECT, ecnDecapFrame, encapTos, innerDsfield, TOS_INHERIT,
} from './ecn.js';
import { writeIp4 } from './ipv4.js';

const N = ECN_NOT_ECT;
const E0 = ECN_ECT0;
const E1 = ECN_ECT1;
const CE = ECN_CE;

/** An Ethernet frame with an IPv4 header (checksum complete) of DS field `tos`, behind `tagged` an 802.1Q tag. */
function ip4Frame(tos: number, tagged = false, src = 0x0a000001, dst = 0x0a000002, id = 0x1234, ttl = 64): Uint8Array {
  const l2 = tagged ? 18 : 14;
  const f = new Uint8Array(l2 + 20 + 8);
  f.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
  if (tagged) f.set([0x81, 0, 0, 10], 12);
  f.set([0x08, 0x00], l2 - 2);
  writeIp4(f, l2, 28, id, 0x4000, ttl, 17, src, dst, tos);
  return f;
}

function ip6Frame(tclass: number, flow = 0x12345): Uint8Array {
  const f = new Uint8Array(14 + 40 + 8);
  f.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd]);
  f[14] = 0x60 | (tclass >> 4);
  f[15] = ((tclass & 15) << 4) | ((flow >> 16) & 15);
  f[16] = (flow >> 8) & 255;
  f[17] = flow & 255;
  f[18] = 0;
  f[19] = 8;
  f[20] = 17;
  f[21] = 64;
  return f;
}
const ds = (f: Uint8Array): number => innerDsfield(f, 12, f.length - 12);

describe('RFC 6040 encapsulation (encapTos)', () => {
  it('copies the inner ECN field, an inner CE as ECT(0), whatever tos says', () => {
    for (const tos of [0, 0xb8, 0xff, TOS_INHERIT]) {
      expect(encapTos(tos, N) & 3).toBe(N);
      expect(encapTos(tos, E0) & 3).toBe(E0);
      expect(encapTos(tos, E1) & 3).toBe(E1);
      expect(encapTos(tos, CE) & 3).toBe(E0);
    }
  });

  it('takes the DSCP from the configuration or, with inherit, from the inner packet', () => {
    expect(encapTos(0, 0xb8 | E0)).toBe(E0);
    expect(encapTos(0x20, 0xb8 | CE)).toBe(0x20 | E0);
    expect(encapTos(0x23, 0)).toBe(0x20); // the configured ECN bits never count
    expect(encapTos(TOS_INHERIT, 0xb8)).toBe(0xb8);
    expect(encapTos(TOS_INHERIT, 0xb8 | CE)).toBe(0xb8 | E0);
    expect(encapTos(TOS_INHERIT, 0x02)).toBe(0x02);
  });

  it('gives a frame that is not IP the configured DSCP (inherit: 0) and Not-ECT', () => {
    expect(encapTos(0xb8, -1)).toBe(0xb8);
    expect(encapTos(0xbb, -1)).toBe(0xb8);
    expect(encapTos(TOS_INHERIT, -1)).toBe(0);
  });

  it('reads the inner DS field of IPv4 and IPv6, untagged or behind one tag, and nothing else', () => {
    expect(ds(ip4Frame(0xb9))).toBe(0xb9);
    expect(ds(ip4Frame(0x03, true))).toBe(0x03);
    expect(ds(ip6Frame(0xb8 | CE))).toBe(0xb8 | CE);
    const arp = new Uint8Array(42);
    arp.set([0x08, 0x06], 12);
    expect(ds(arp)).toBe(-1);
    const v6in4 = ip4Frame(0xb8);
    v6in4[14] = 0x65; // an ethertype that lies about the version
    expect(ds(v6in4)).toBe(-1);
    expect(innerDsfield(ip4Frame(0xb8), 12, 3)).toBe(-1); // truncated
  });
});

describe('RFC 6040 decapsulation (decapEcn)', () => {
  it('is the RFC\'s table, row by row (inner) and column by column (outer)', () => {
    const outers = [N, E0, E1, CE];
    const table: Record<number, number[]> = {
      [N]: [N, N, N, ECN_DROP],
      [E0]: [E0, E0, E1, CE],
      [E1]: [E1, E1, E1, CE],
      [CE]: [CE, CE, CE, CE],
    };
    for (const inner of [N, E0, E1, CE]) {
      expect(outers.map((o) => decapEcn(o, inner)), `inner ${inner}`).toEqual(table[inner]);
    }
  });

  it('ignores the DSCP bits of both headers', () => {
    expect(decapEcn(0xb8 | CE, 0x48 | E1)).toBe(CE);
    expect(decapEcn(0xfc, 0xfc)).toBe(N);
  });
});

describe('ecnDecapFrame', () => {
  it('marks an ECN-capable inner IPv4 packet CE with its header checksum still valid', () => {
    for (const tagged of [false, true]) {
      for (const tos of [0xb8 | E0, 0xb8 | E1, 0x00 | E0]) {
        const f = ip4Frame(tos, tagged);
        const l3 = tagged ? 18 : 14;
        expect(ecnDecapFrame(f, 0, f.length, CE)).toBe(0);
        expect(f[l3 + 1]).toBe((tos & 0xfc) | CE);
        expect(checksum(f, l3, 20)).toBe(0);
        // The same bytes as a header written with CE from the start.
        expect([...f.subarray(l3, l3 + 20)]).toEqual([...ip4Frame((tos & 0xfc) | CE, tagged).subarray(l3, l3 + 20)]);
      }
    }
  });

  it('keeps every IPv4 header checksum valid across all outer and inner ECN fields (property)', () => {
    fc.assert(fc.property(
      fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 0xffff }),
      fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 1, max: 255 }),
      (outer, tos, id, src, dst, ttl) => {
        const f = ip4Frame(tos, false, src, dst, id, ttl);
        const r = ecnDecapFrame(f, 0, f.length, outer);
        const want = decapEcn(outer, tos);
        if (want === ECN_DROP) return r === ECN_DROP && f[15] === tos;
        return r === 0 && f[15] === ((tos & 0xfc) | want) && checksum(f, 14, 20) === 0;
      },
    ));
  });

  it('rewrites the IPv6 traffic class and leaves the flow label alone', () => {
    const f = ip6Frame(0xb8 | E0, 0xabcde);
    expect(ecnDecapFrame(f, 0, f.length, CE)).toBe(0);
    expect(ds(f)).toBe(0xb8 | CE);
    expect([f[15] & 15, f[16], f[17]]).toEqual([0xa, 0xbc, 0xde]);
    const g = ip6Frame(0x48 | E0);
    expect(ecnDecapFrame(g, 0, g.length, E1)).toBe(0);
    expect(ds(g)).toBe(0x48 | E1);
  });

  it('drops an outer CE over an inner Not-ECT packet, both families', () => {
    for (const f of [ip4Frame(0xb8), ip6Frame(0xb8)]) {
      const before = [...f];
      expect(ecnDecapFrame(f, 0, f.length, CE)).toBe(ECN_DROP);
      expect([...f]).toEqual(before);
    }
  });

  it('changes nothing under outer Not-ECT or ECT(0), nor a frame that is not IP or is short', () => {
    for (const outer of [N, E0, 0xb8 | E0]) {
      for (const f of [ip4Frame(E0), ip4Frame(N), ip6Frame(E1), ip6Frame(N)]) {
        const before = [...f];
        expect(ecnDecapFrame(f, 0, f.length, outer)).toBe(0);
        expect([...f]).toEqual(before);
      }
    }
    const arp = new Uint8Array(42);
    arp.set([0x08, 0x06], 12);
    expect(ecnDecapFrame(arp, 0, arp.length, CE)).toBe(0);
    const short = ip4Frame(N);
    expect(ecnDecapFrame(short, 0, 14 + 19, CE)).toBe(0);
    expect(short[15]).toBe(N);
  });
});
