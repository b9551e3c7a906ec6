/* The bond's table of source MACs: refresh in place, the limit, ageing by rebuild, no loss under probing. */
import { describe, expect, it } from 'vitest';
import { MacSeen } from './mac-seen.js';
import { readMac, writeMac } from './wire/ethernet.js';

const at = (mac: number): Uint8Array => { const b = new Uint8Array(8); writeMac(b, 2, mac); return b; };

describe('MacSeen', () => {
  it('remembers MACs with their VID, refreshes in place and refuses past its limit', () => {
    const s = new MacSeen(100);
    const macs = Array.from({ length: 150 }, (_, i) => 0x020000000000 + i * 0x10001);
    for (const m of macs) s.touch(at(m), 2, 7, 1);
    expect(s.size).toBe(100);
    expect(s.refused).toBe(50);
    for (const m of macs.slice(0, 100)) expect(s.has(at(m), 2)).toBe(true);
    expect(s.has(at(macs[120]), 2)).toBe(false);
    s.touch(at(macs[0]), 2, 9, 2);
    expect(s.size).toBe(100);
    const seen = new Map<number, number>();
    s.forEach((mac, vid) => seen.set(mac, vid));
    expect(seen.size).toBe(100);
    expect(seen.get(macs[0])).toBe(9);
    expect(seen.get(macs[1])).toBe(7);
    expect(readMac(at(macs[99]), 2)).toBe(macs[99]);
  });

  it('ages out what was not sent since a second, keeping the rest findable', () => {
    const s = new MacSeen(4096);
    for (let i = 0; i < 4000; i++) s.touch(at(0xfe0000000000 + i), 2, 0, i % 2 === 0 ? 10 : 20);
    expect(s.expire(15)).toBe(2000);
    expect(s.size).toBe(2000);
    for (let i = 0; i < 4000; i++) expect(s.has(at(0xfe0000000000 + i), 2)).toBe(i % 2 === 1);
    expect(s.expire(15)).toBe(0);
  });
});
