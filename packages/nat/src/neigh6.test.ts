/*
 * The IPv6 neighbour cache (neigh6.ts): lookups, learning, ageing, the size
 * bound (a guest soliciting a whole /64 cannot grow it), held packets released
 * on learning and bounded per address, and when a solicitation is due.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseIp6 } from '@vswitch/switch';
import { NEIGH6_DEFAULTS, Neigh6Cache } from './neigh6.js';

const A = (s: string): Uint8Array => parseIp6(s)!;

function rig(opts: { max?: number; ttlMs?: number } = {}) {
  const clock = { now: 1000 };
  return { c: new Neigh6Cache(() => clock.now, opts), clock };
}

describe('Neigh6Cache', () => {
  it('learns, looks up in place (an offset into a packet), ages out after ttl', () => {
    const { c, clock } = rig({ ttlMs: 5000 });
    const a = A('fd00:10::5');
    expect(c.lookup(a, 0)).toBe(-1);
    c.learn(a, 0, 0x525400000001);
    const pkt = new Uint8Array(40);
    pkt.set(a, 24);
    expect(c.lookup(pkt, 24)).toBe(0x525400000001);
    expect(c.lookup(A('fd00:10::6'), 0)).toBe(-1);
    clock.now += 5000;
    expect(c.lookup(a, 0)).toBe(0x525400000001);
    clock.now += 1;
    expect(c.lookup(a, 0)).toBe(-1);
    expect(c.size).toBe(0);
    expect(c.counters.resolved).toBe(1);
  });

  it('a changed MAC replaces the old one and counts as resolved again', () => {
    const { c } = rig();
    const a = A('fd00:10::5');
    c.learn(a, 0, 1);
    c.learn(a, 0, 1);
    c.learn(a, 0, 2);
    expect(c.lookup(a, 0)).toBe(2);
    expect(c.counters.resolved).toBe(2);
    expect(c.size).toBe(1);
  });

  it('is bounded: 100 000 addresses learnt keep at most the table size, and the newest are found', () => {
    const { c } = rig({ max: 64 });
    const a = A('fd00:10::');
    for (let i = 0; i < 100_000; i++) {
      a[12] = i >>> 24; a[13] = (i >>> 16) & 0xff; a[14] = (i >>> 8) & 0xff; a[15] = i & 0xff;
      c.learn(a, 0, i + 1);
    }
    expect(c.size).toBeLessThanOrEqual(64);
    expect(c.lookup(a, 0)).toBe(100_000);
    expect(c.counters.evicted).toBeGreaterThan(90_000);
  });

  it('holds packets until learnt (3 per address, oldest dropped), solicits once per retry interval', () => {
    const { c, clock } = rig();
    const a = A('fd00:10::5');
    expect(c.hold(a, 0, Uint8Array.of(1))).toBe(true);
    expect(c.hold(a, 0, Uint8Array.of(2))).toBe(false);
    expect(c.hold(a, 0, Uint8Array.of(3))).toBe(false);
    expect(c.hold(a, 0, Uint8Array.of(4))).toBe(false);
    expect(c.counters.pendingDropped).toBe(1);
    clock.now += NEIGH6_DEFAULTS.retryMs;
    expect(c.hold(a, 0, Uint8Array.of(5))).toBe(true);
    expect(c.counters.solicitations).toBe(2);
    expect(c.pendingBytes).toBe(3);
    const out = c.learn(a, 0, 7);
    expect(out.map((f) => f[0])).toEqual([3, 4, 5]);
    expect(c.pendingBytes).toBe(0);
    expect(c.learn(a, 0, 7)).toEqual([]);
  });

  it('bounds the bytes held and the addresses waiting', () => {
    const { c } = rig();
    const big = new Uint8Array(NEIGH6_DEFAULTS.pendingBytes);
    c.hold(A('fd00::1'), 0, big);
    c.hold(A('fd00::2'), 0, Uint8Array.of(1));
    expect(c.counters.pendingDropped).toBe(1);
    const a = A('fd00:20::');
    for (let i = 0; i < NEIGH6_DEFAULTS.pendingIps + 10; i++) {
      a[14] = i >> 8; a[15] = i & 0xff;
      c.hold(a, 0, Uint8Array.of(9));
    }
    // The first waiting addresses were dropped with their packets: the big one among them.
    expect(c.pendingBytes).toBeLessThanOrEqual(NEIGH6_DEFAULTS.pendingIps);
  });

  it('property: whatever is learnt last for an address is what lookup gives, until ttl', () => {
    fc.assert(fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 1, max: 2 ** 47 })), { maxLength: 200 }), (ops) => {
      const { c } = rig({ max: 4096 });
      const last = new Map<number, number>();
      const a = A('fd00:10::');
      for (const [k, mac] of ops) {
        a[15] = k;
        c.learn(a, 0, mac);
        last.set(k, mac);
      }
      for (const [k, mac] of last) {
        a[15] = k;
        expect(c.lookup(a, 0)).toBe(mac);
      }
    }));
  });
});
