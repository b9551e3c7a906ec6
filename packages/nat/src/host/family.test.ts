import { describe, expect, it } from 'vitest';
import { formatIp6, parseIp6 } from '@vswitch/switch';
import { Addrs, IP6_BASE, Ip6Table, isIp6 } from './family.js';

describe('family.ts: IPv6 addresses as numbers', () => {
  it('interns an address once: the same number for the same bytes, IPv4 numbers untouched', () => {
    const a = new Addrs(64);
    const x = parseIp6('2001:db8::1')!;
    const id = a.ip6.intern(x, 0);
    expect(id).toBeGreaterThanOrEqual(IP6_BASE);
    expect(isIp6(id)).toBe(true);
    expect(isIp6(0xffffffff)).toBe(false);
    expect(a.ip6.intern(parseIp6('2001:db8::1')!, 0)).toBe(id);
    expect(a.ip6.intern(parseIp6('2001:db8::2')!, 0)).not.toBe(id);
    expect(a.format(id)).toBe('2001:db8::1');
    expect(a.endpoint(id, 80)).toBe('[2001:db8::1]:80');
    expect(a.endpoint(0xc0000201, 80)).toBe('192.0.2.1:80');
    // Session keys stay exact doubles.
    expect(Number.isSafeInteger((IP6_BASE + a.ip6.cap) * 65536 + 65535)).toBe(true);
  });

  it('parses socket address text without allocating a parser: the same bytes as parseIp6, -1 for bad text', () => {
    const a = new Addrs(64);
    for (const t of ['::', '::1', '1::', '2001:db8::1', '2001:db8:1:2:3:4:5:6', 'fe80::1:2', '1:2:3:4:5:6:7::', '::2:3:4:5:6:7:8', 'ABCD:ef01::9']) {
      const id = a.parse6(t);
      expect(id, t).toBeGreaterThanOrEqual(IP6_BASE);
      expect(a.format(id), t).toBe(formatIp6(parseIp6(t)!));
    }
    for (const t of ['', ':', ':::', '1:::2', '1::2::3', '1:2:3:4:5:6:7:8:9', '1:2:3', '12345::', 'g::1', '1:', ':1', '::ffff:1.2.3.4', 'fe80::1%eth0']) {
      expect(a.parse6(t), t).toBe(-1);
    }
    expect(a.parse('::ffff:192.0.2.1')).toBe(0xc0000201);
    expect(a.parse('192.0.2.1')).toBe(0xc0000201);
  });

  it('sweeps the addresses no session marked, keeps the marked ones findable, and refuses (counted) when full', () => {
    const t = new Ip6Table(16);
    const ids: number[] = [];
    const b = new Uint8Array(16);
    for (let i = 0; i < 16; i++) {
      b[15] = i;
      ids.push(t.intern(b, 0));
    }
    b[15] = 99;
    expect(t.intern(b, 0)).toBe(-1);
    expect(t.tableFull).toBe(1);
    t.link[ids[3] - IP6_BASE] = 0x020000000001;
    t.mark(ids[3]);
    t.mark(ids[7]);
    expect(t.sweep()).toBe(14);
    expect(t.count).toBe(2);
    b[15] = 3;
    expect(t.intern(b, 0)).toBe(ids[3]);
    expect(t.link[ids[3] - IP6_BASE]).toBe(0x020000000001);
    b[15] = 7;
    expect(t.intern(b, 0)).toBe(ids[7]);
    // Freed slots are reused, their link-layer address forgotten.
    b[15] = 100;
    const fresh = t.intern(b, 0);
    expect(fresh).toBeGreaterThanOrEqual(IP6_BASE);
    expect(t.link[fresh - IP6_BASE]).toBe(0);
    // Unmarked again: everything goes.
    expect(t.sweep()).toBe(3);
    expect(t.count).toBe(0);
  });
});
