/* The bond's per-frame L2 facts: bucket spread and stability, VID of tagged frames, the RARP layout. */
import { describe, expect, it } from 'vitest';
import { frameVid, l2Bucket, RARP_LEN, writeRarp } from './l2hash.js';
import { readMac, writeMac } from './ethernet.js';

function frame(dst: number, src: number, words: number[]): Uint8Array {
  const f = new Uint8Array(64);
  writeMac(f, 0, dst);
  writeMac(f, 6, src);
  words.forEach((w, i) => { f[12 + 2 * i] = w >> 8; f[13 + 2 * i] = w & 0xff; });
  return f;
}

describe('l2Bucket', () => {
  it('depends on the source MAC only (slb), on both MACs with withDst (lacp), and spreads sequential MACs', () => {
    const seen = new Set<number>();
    for (let i = 0; i < 64; i++) {
      const a = frame(0xffffffffffff, 0x020000000000 + i, [0x0800]);
      const b = frame(0x020000009999, 0x020000000000 + i, [0x0806]);
      expect(l2Bucket(a, 0, false)).toBe(l2Bucket(b, 0, false));
      seen.add(l2Bucket(a, 0, false));
    }
    expect(seen.size).toBeGreaterThan(48);
    const dsts = new Set<number>();
    for (let i = 0; i < 64; i++) dsts.add(l2Bucket(frame(0x020000001000 + i, 0x020000000001, [0x0800]), 0, true));
    expect(dsts.size).toBeGreaterThan(48);
  });
});

describe('frameVid', () => {
  it('is the VID of an 802.1Q tag, else 0', () => {
    expect(frameVid(frame(1, 2, [0x8100, 0x6000 | 123, 0x0800]), 0)).toBe(123);
    expect(frameVid(frame(1, 2, [0x0800]), 0)).toBe(0);
  });
});

describe('writeRarp', () => {
  it('writes a reverse request for the MAC, untagged or tagged', () => {
    const b = new Uint8Array(80).fill(0xee);
    const mac = 0x02aabbccddee;
    expect(writeRarp(b, 2, mac, 0)).toBe(RARP_LEN);
    expect(readMac(b, 2)).toBe(0xffffffffffff);
    expect(readMac(b, 8)).toBe(mac);
    expect([b[14], b[15], b[16], b[17], b[18], b[19], b[20], b[21], b[22], b[23]]).toEqual([0x80, 0x35, 0, 1, 0x08, 0, 6, 4, 0, 3]);
    expect(readMac(b, 24)).toBe(mac);
    expect(readMac(b, 34)).toBe(mac);
    expect(b[2 + RARP_LEN]).toBe(0xee);
    const t = new Uint8Array(80);
    expect(writeRarp(t, 0, mac, 10)).toBe(RARP_LEN + 4);
    expect(frameVid(t, 0)).toBe(10);
    expect([t[16], t[17], t[25]]).toEqual([0x80, 0x35, 3]);
  });
});
