/*
 * The table's key layout (fdb.ts: a seeded 30-bit key per MAC, entries of one key
 * chained) and the byte-level entry points lookupAt/learnAt. Keys collide with odds
 * ~1e-9 per pair, so the chain paths are exercised by volume: 300,000 MACs in one
 * VLAN give ~40 colliding pairs, and removing them in random order takes both the
 * head-of-chain and the inner-link paths.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Fdb, Learn } from './fdb.js';

/** The MAC (an integer < 2^48) written at buf[off..off+6). */
function put(buf: Uint8Array, off: number, mac: number): void {
  for (let i = 5; i >= 0; i--) {
    buf[off + i] = mac % 256;
    mac = Math.floor(mac / 256);
  }
}

/** A frame-sized buffer with `mac` as destination (offset 0) and as source (offset 6). */
function frame(mac: number): Uint8Array {
  const b = new Uint8Array(60);
  put(b, 0, mac);
  put(b, 6, mac);
  return b;
}

const EDGE_MACS = [
  0x000000000001, 0x000000ffffff, 0x000001000000, 0x00ffffffffff, 0x020000000001,
  0x525400123456, 0x7fffffffffff, 0x800000000000, 0xfeffffffffff, 0xfcffffffffff, 0xfeffff000000,
];

/** Unicast MACs over the whole 48-bit range (group bit clear). */
const unicast = fc.tuple(fc.integer({ min: 0, max: 0xffffff }), fc.integer({ min: 0, max: 0xffffff }))
  .map(([hi, lo]) => (hi & 0xfeffff) * 0x1000000 + lo)
  .filter((m) => m !== 0);

describe('lookupAt / learnAt (the MAC read from the frame)', () => {
  it('agree with lookup / learn on edge MACs', () => {
    const f = new Fdb();
    for (const [i, m] of EDGE_MACS.entries()) {
      const b = frame(m);
      expect(f.lookupAt(1, b, 0)).toBe(-1);
      expect(f.learnAt(1, b, 6, i, 1000)).toBe(Learn.NEW);
      expect(f.get(1, m)).toMatchObject({ vid: 1, mac: m, port: i, updated: 1000, isStatic: false });
      expect(f.lookup(1, m)).toBe(i);
      expect(f.lookupAt(1, b, 0)).toBe(i);
      expect(f.lookupAt(2, b, 0)).toBe(-1);
      expect(f.learnAt(1, b, 6, i, 2000)).toBe(Learn.REFRESHED);
      expect(f.get(1, m)!.updated).toBe(2000);
      expect(f.learn(1, m, i, 3000)).toBe(Learn.REFRESHED);
    }
    expect(f.size).toBe(EDGE_MACS.length);
    expect(f.entries().map((e) => e.mac).sort((a, b) => a - b)).toEqual([...EDGE_MACS].sort((a, b) => a - b));
  });

  it('learnAt moves, refuses statics and limits, and counts, as learn does', () => {
    const f = new Fdb();
    const a = frame(0x525400000001);
    const s = frame(0x525400000002);
    expect(f.learnAt(1, a, 6, 1, 0)).toBe(Learn.NEW);
    expect(f.learnAt(1, a, 6, 2, 10)).toBe(Learn.MOVED);
    expect(f.lookup(1, 0x525400000001)).toBe(2);
    f.addStatic(1, 0x525400000002, 3);
    expect(f.learnAt(1, s, 6, 1, 20)).toBe(Learn.REFUSED_STATIC);
    f.setPortLimit(4, 1);
    expect(f.learnAt(1, frame(0x525400000003), 6, 4, 30)).toBe(Learn.NEW);
    expect(f.learnAt(1, frame(0x525400000004), 6, 4, 30)).toBe(Learn.REFUSED_PORT_LIMIT);
    expect(f.counters).toMatchObject({ learned: 2, moved: 1, refusedStatic: 1, refusedPortLimit: 1 });
    f.setAgeing(0);
    expect(f.learnAt(1, frame(0x525400000005), 6, 1, 40)).toBe(Learn.DISABLED);
  });

  it('reads the MAC at any offset of a larger buffer', () => {
    const f = new Fdb();
    const b = new Uint8Array(200);
    put(b, 100, 0x0a1b2c3d4e5f);
    expect(f.learnAt(7, b, 100, 5, 0)).toBe(Learn.NEW);
    expect(f.lookup(7, 0x0a1b2c3d4e5f)).toBe(5);
    expect(f.lookupAt(7, b, 100)).toBe(5);
    expect(f.lookupAt(7, b, 99)).toBe(-1);
  });

  it('any unicast MAC: the number and the bytes name the same entry (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(unicast, fc.integer({ min: 0, max: 7 }), fc.boolean()), { maxLength: 60 }), (ops) => {
        const f = new Fdb({ maxEntries: 1000 });
        const want = new Map<number, number>();
        for (const [m, port, bytes] of ops) {
          const r = bytes ? f.learnAt(3, frame(m), 6, port, 0) : f.learn(3, m, port, 0);
          expect(r).toBeGreaterThanOrEqual(0);
          want.set(m, port);
        }
        expect(f.size).toBe(want.size);
        for (const [m, port] of want) {
          expect(f.lookup(3, m)).toBe(port);
          expect(f.lookupAt(3, frame(m), 0)).toBe(port);
          expect(f.get(3, m)!.mac).toBe(m);
        }
      }),
      { numRuns: 200 },
    );
  });
});

describe('numbers that are not MACs', () => {
  it('get and delete find nothing for them, addStatic refuses them', () => {
    const f = new Fdb();
    f.learn(1, 0x000000ffffff, 1, 0); // the halves of -1 are this MAC's
    f.learn(1, 0x000000000001, 2, 0); // and of 2^48 + 1
    for (const bad of [-1, 2 ** 48 + 1, 1.5, Number.NaN]) {
      expect(f.get(1, bad)).toBeUndefined();
      expect(f.delete(1, bad)).toBe(false);
      expect(() => f.addStatic(1, bad, 3)).toThrow(RangeError);
    }
    expect(f.size).toBe(2);
  });
});

describe('key layout at volume', () => {
  /** xorshift32, for repeatable MAC sets. */
  function rng(seed: number): () => number {
    let x = seed | 0 || 1;
    return () => {
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
      return x >>> 0;
    };
  }

  it('300,000 random MACs in one VLAN: all found; half removed in random order; the rest still found', () => {
    const N = 300_000;
    const r = rng(0x5eed);
    const macs = new Set<number>();
    while (macs.size < N) {
      const m = ((r() & 0xfeffff) % 0x1000000) * 0x1000000 + (r() & 0xffffff);
      if (m !== 0) macs.add(m);
    }
    const list = [...macs];
    const f = new Fdb({ maxEntries: N, ageingSec: 3600 });
    for (let i = 0; i < N; i++) if (f.learn(1, list[i], i & 15, 0) !== Learn.NEW) throw new Error(`not new: ${list[i].toString(16)}`);
    expect(f.size).toBe(N);
    for (let i = 0; i < N; i++) if (f.lookup(1, list[i]) !== (i & 15)) throw new Error(`lost ${list[i].toString(16)}`);
    // Remove every other MAC, in a shuffled order.
    const gone = list.filter((_, i) => i % 2 === 0);
    for (let i = gone.length - 1; i > 0; i--) {
      const j = r() % (i + 1);
      [gone[i], gone[j]] = [gone[j], gone[i]];
    }
    for (const m of gone) if (!f.delete(1, m)) throw new Error(`not deleted: ${m.toString(16)}`);
    expect(f.size).toBe(N / 2);
    for (let i = 0; i < N; i++) {
      const got = f.lookup(1, list[i]);
      if (got !== (i % 2 === 0 ? -1 : i & 15)) throw new Error(`${list[i].toString(16)}: ${got}`);
    }
    expect(f.entries()).toHaveLength(N / 2);
    expect(gone.filter((m) => f.delete(1, m))).toEqual([]);
  }, 60_000); // a volume test (2-4 s alone): the default 5 s is a clock, not what it checks

  it('MACs that share their low 24 bits, or their high 24 bits, are all distinct entries', () => {
    const f = new Fdb({ maxEntries: 20_000 });
    for (let i = 0; i < 8192; i++) f.learn(1, ((i * 2) & 0xfeffff) * 0x1000000 + 0x123456, 1, 0); // one NIC part, 8192 OUIs
    for (let i = 0; i < 8192; i++) f.learn(1, 0x525400 * 0x1000000 + i, 2, 0); // one OUI
    expect(f.size).toBe(16384);
    const wrong: number[] = [];
    for (let i = 0; i < 8192; i++) {
      if (f.lookup(1, ((i * 2) & 0xfeffff) * 0x1000000 + 0x123456) !== 1) wrong.push(i);
      if (f.lookup(1, 0x525400 * 0x1000000 + i) !== 2) wrong.push(-i);
    }
    expect(wrong).toEqual([]);
    expect(f.flushPort(1)).toBe(8192);
    expect(f.size).toBe(8192);
    expect(f.lookup(1, 0x123456)).toBe(-1);
  });

  it('expiry and eviction unlink entries from their key chains', () => {
    const f = new Fdb({ ageingSec: 10, maxEntries: 50_000 });
    const r = rng(42);
    const macs: number[] = [];
    for (let i = 0; i < 50_000; i++) macs.push((r() & 0xfeffff) * 0x1000000 + (r() & 0xffffff) + 1);
    const uniq = [...new Set(macs)];
    uniq.forEach((m, i) => f.learn(1, m, i & 3, i < uniq.length / 2 ? 0 : 5000));
    expect(f.expire(10_000)).toBe(Math.ceil(uniq.length / 2));
    expect(uniq.filter((m, i) => f.lookup(1, m) !== (i < uniq.length / 2 ? -1 : i & 3))).toEqual([]);
    f.setMaxEntries(100);
    expect(f.size).toBe(100);
    expect(f.entries().every((e) => f.get(1, e.mac) === e)).toBe(true);
  });
});
