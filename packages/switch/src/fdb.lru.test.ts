/*
 * The MAC table's ageing list and eviction structure (fdb.ts: entries on a list by
 * the second they were filed in, so expire() stops at the first entry filed after
 * the deadline's second; each port's entries in learning order, ports in a heap by count).
 * The last property runs the table against a model of its contract written the
 * plain way (a full scan to age, a scan of all ports to evict), with a clock that
 * also steps back, and requires the same answers, entries and counters.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Fdb, type FdbCounters, Learn } from './fdb.js';

const mac = (i: number): number => 0x020000100000 + i;

describe('ageing list', () => {
  it('a sweep with nothing due examines nothing, however large the table', () => {
    const f = new Fdb({ ageingSec: 300, maxEntries: 100_000 });
    for (let i = 0; i < 100_000; i++) f.learn(1, mac(i), i & 7, 1000 + i / 100);
    expect(f.expire(1000 + 299_999)).toBe(0);
    expect(f.sweepVisited).toBe(0);
  });

  it('stops at the first entry filed after the deadline: examines only what it ages', () => {
    const f = new Fdb({ ageingSec: 300, maxEntries: 100_000 });
    for (let i = 0; i < 100_000; i++) f.learn(1, mac(i), i & 7, i * 10); // 100 a second
    expect(f.expire(300_000 + 999)).toBe(100);
    expect(f.sweepVisited).toBe(100);
    expect(f.lookup(1, mac(99))).toBe(-1);
    expect(f.lookup(1, mac(100))).toBe(100 & 7);
    expect(f.size).toBe(99_900);
  });

  it('works in whole seconds of filing: passes over those filed in the deadline\'s second, ages them exactly', () => {
    const f = new Fdb({ ageingSec: 300 });
    for (let i = 0; i < 10; i++) f.learn(1, mac(i), 1, i * 100);
    expect(f.expire(300_000 + 450)).toBe(5);
    expect(f.sweepVisited).toBe(10);
    expect(f.expire(300_000 + 900)).toBe(5);
  });

  it('a refresh long after filing moves the entry to the newest end', () => {
    const f = new Fdb({ ageingSec: 10 });
    f.learn(1, mac(1), 1, 0);
    f.learn(1, mac(2), 1, 10);
    f.learn(1, mac(3), 1, 20);
    expect(f.learn(1, mac(1), 1, 5000)).toBe(Learn.REFRESHED); // 5 s after filing: re-filed
    expect(f.expire(10_020)).toBe(2);
    expect(f.sweepVisited).toBe(2); // mac(2), mac(3); mac(1) is filed after them
    expect(f.lookup(1, mac(1))).toBe(1);
    expect(f.expire(15_000)).toBe(1);
    expect(f.sweepVisited).toBe(1);
  });

  it('a refresh soon after filing only stamps the entry; the sweep passes over it while it lives', () => {
    const f = new Fdb({ ageingSec: 10 }); // entries move at most once a second
    f.learn(1, mac(1), 1, 20_000);
    f.learn(1, mac(2), 1, 20_100);
    f.learn(1, mac(1), 1, 20_500); // 0.5 s after filing: stays first on the list
    expect(f.expire(30_100)).toBe(1); // mac(2) filed later but dead; mac(1) passed over
    expect(f.sweepVisited).toBe(2);
    expect(f.lookup(1, mac(1))).toBe(1);
    expect(f.lookup(1, mac(2))).toBe(-1);
    expect(f.expire(30_499)).toBe(0);
    expect(f.expire(30_500)).toBe(1);
    expect(f.size).toBe(0);
  });

  it('a move files the entry anew', () => {
    const f = new Fdb({ ageingSec: 10 });
    f.learn(1, mac(1), 1, 0);
    f.learn(1, mac(2), 1, 1000);
    expect(f.learn(1, mac(1), 2, 2000)).toBe(Learn.MOVED);
    expect(f.expire(11_000)).toBe(1);
    expect(f.sweepVisited).toBe(1);
    expect(f.lookup(1, mac(1))).toBe(2);
  });

  it('a clock that steps back still ages each entry exactly by its last-seen time', () => {
    // Frames of several ports carry their read times and are not handled exactly in that order.
    const f = new Fdb({ ageingSec: 10 });
    f.learn(1, mac(1), 1, 1000);
    f.learn(1, mac(2), 2, 2000);
    f.learn(1, mac(3), 3, 1500); // learned "before" mac(2)
    f.learn(1, mac(1), 1, 900); // seen "earlier" than it was learned
    expect(f.get(1, mac(1))?.updated).toBe(900);
    expect(f.expire(10_900)).toBe(1);
    expect(f.lookup(1, mac(1))).toBe(-1);
    expect(f.expire(11_500)).toBe(1);
    expect(f.lookup(1, mac(3))).toBe(-1);
    expect(f.sweepVisited).toBe(1);
    expect(f.expire(12_000)).toBe(1);
    expect(f.size).toBe(0);
  });

  it('static entries are on no list: never examined, aged or moved by a refresh', () => {
    const f = new Fdb({ ageingSec: 1 });
    f.addStatic(1, mac(1), 1);
    expect(f.learn(1, mac(1), 1, 5000)).toBe(Learn.REFRESHED);
    expect(f.expire(1e9)).toBe(0);
    expect(f.sweepVisited).toBe(0);
    expect(f.lookup(1, mac(1))).toBe(1);
  });
});

describe('eviction choice', () => {
  it('takes from the port with the most entries, ties to the port that learned first, without regard to VLAN', () => {
    const f = new Fdb({ maxEntries: 19 });
    const counts = [3, 5, 5, 2, 4]; // ports 1..5; learning order interleaves the ports
    let t = 0;
    for (let k = 0; k < 5; k++) for (let p = 1; p <= 5; p++) if (k < counts[p - 1]) f.learn(1 + (k & 1), mac(p * 100 + k), p, t++);
    expect(f.size).toBe(19);
    const ports = [1, 2, 3, 4, 5, 9];
    const taken: number[] = [];
    for (let i = 0; i < 6; i++) {
      const before = ports.map((p) => f.portCount(p));
      expect(f.learn(1, mac(900 + i), 9, t++)).toBe(Learn.NEW);
      taken.push(ports.find((p, j) => f.portCount(p) < before[j] + (p === 9 ? 1 : 0)) ?? -1);
    }
    // Counts of ports 1-5 and 9 before each: 3 5 5 2 4 0 -> port 2; 3 4 5 2 4 1 -> 3; 3 4 4 2 4 2 -> 2 (first
    // of three at 4); 3 3 4 2 4 3 -> 3; 3 3 3 2 4 4 -> 5 (first learned of 5 and 9); 3 3 3 2 3 5 -> 9 itself.
    expect(taken).toEqual([2, 3, 2, 3, 5, 9]);
    // Each time the port's least recently learned entry went.
    expect(f.lookup(1, mac(200))).toBe(-1);
    expect(f.lookup(2, mac(201))).toBe(-1);
    expect(f.lookup(1, mac(202))).toBe(2);
  });

  it('a newcomer flooding MACs: the one tie goes against the older port, then it evicts only its own', () => {
    const f = new Fdb({ maxEntries: 6 });
    for (let i = 0; i < 3; i++) f.learn(1, mac(i), 1, i);
    for (let i = 0; i < 20; i++) f.learn(1, mac(100 + i), 9, 10 + i);
    // 3 + 3 at the fourth of port 9: a tie, and port 1 learned first, so it loses mac(0); then port 9 holds more.
    expect(f.portCount(1)).toBe(2);
    expect(f.portCount(9)).toBe(4);
    expect([0, 1, 2].map((i) => f.lookup(1, mac(i)))).toEqual([-1, 1, 1]);
    expect([116, 117, 118, 119].map((i) => f.lookup(1, mac(i)))).toEqual([9, 9, 9, 9]);
    expect(f.counters.evicted).toBe(17);
  });

  it('a port emptied by ageing or flush is not chosen; a full table of statics refuses', () => {
    const f = new Fdb({ maxEntries: 2, ageingSec: 10 });
    f.learn(1, mac(1), 1, 0);
    f.learn(1, mac(2), 1, 0);
    f.learn(1, mac(3), 2, 1); // evicts port 1's oldest
    expect(f.lookup(1, mac(1))).toBe(-1);
    f.flushPort(1);
    f.expire(10_001);
    expect(f.size).toBe(0);
    expect(f.learn(1, mac(4), 3, 20_000)).toBe(Learn.NEW);
    expect(f.counters.evicted).toBe(1);
  });
});

/**
 * The contract, written plainly: the same semantics the table had when ageing
 * scanned every entry and eviction scanned every port.
 */
class Model {
  entries = new Map<string, { vid: number; mac: number; port: number; updated: number; isStatic: boolean; learnedAt: number }>();
  /** Ports in the order they first held a dynamic entry. */
  portOrder: number[] = [];
  limits = new Map<number, number>();
  counters: FdbCounters = { learned: 0, moved: 0, aged: 0, evicted: 0, refusedPortLimit: 0, refusedStatic: 0, refusedFull: 0, refusedBound: 0 };
  seq = 0;
  constructor(public ageingMs: number, public max: number) {}

  dyn(port?: number): number {
    let n = 0;
    for (const e of this.entries.values()) if (!e.isStatic && (port === undefined || e.port === port)) n++;
    return n;
  }

  #hold(port: number): void {
    if (!this.portOrder.includes(port)) this.portOrder.push(port);
  }

  #atLimit(port: number): boolean {
    const l = this.limits.get(port);
    return l !== undefined && l > 0 && this.dyn(port) >= l;
  }

  evict(): boolean {
    let best = -1;
    let bestN = 0;
    for (const p of this.portOrder) {
      const n = this.dyn(p);
      if (n > bestN) { best = p; bestN = n; }
    }
    if (bestN === 0) return false;
    let victim: string | undefined;
    let first = Infinity;
    for (const [k, e] of this.entries) if (!e.isStatic && e.port === best && e.learnedAt < first) { first = e.learnedAt; victim = k; }
    this.entries.delete(victim!);
    this.counters.evicted++;
    return true;
  }

  learn(vid: number, m: number, port: number, now: number): number {
    const k = `${vid}/${m}`;
    const e = this.entries.get(k);
    if (e !== undefined && e.port === port) { e.updated = now; return Learn.REFRESHED; }
    if (e !== undefined) {
      if (e.isStatic) { this.counters.refusedStatic++; return Learn.REFUSED_STATIC; }
      if (this.#atLimit(port)) { this.counters.refusedPortLimit++; return Learn.REFUSED_PORT_LIMIT; }
      Object.assign(e, { port, updated: now, learnedAt: this.seq++ });
      this.#hold(port);
      this.counters.moved++;
      return Learn.MOVED;
    }
    if (this.ageingMs === 0) return Learn.DISABLED;
    if (this.#atLimit(port)) { this.counters.refusedPortLimit++; return Learn.REFUSED_PORT_LIMIT; }
    if (this.dyn() >= this.max && !this.evict()) { this.counters.refusedFull++; return Learn.REFUSED_FULL; }
    this.entries.set(k, { vid, mac: m, port, updated: now, isStatic: false, learnedAt: this.seq++ });
    this.#hold(port);
    this.counters.learned++;
    return Learn.NEW;
  }

  expire(now: number): number {
    let n = 0;
    for (const [k, e] of this.entries) if (!e.isStatic && e.updated <= now - this.ageingMs) { this.entries.delete(k); n++; }
    this.counters.aged += n;
    return n;
  }

  flush(port: number, includeStatic: boolean, vid: number | undefined): number {
    let n = 0;
    for (const [k, e] of this.entries) {
      if (e.port !== port || (e.isStatic && !includeStatic) || (vid !== undefined && e.vid !== vid)) continue;
      this.entries.delete(k);
      n++;
    }
    return n;
  }
}

describe('the table against the plain model (property)', () => {
  const vid = fc.integer({ min: 1, max: 3 });
  const macA = fc.integer({ min: 1, max: 16 }).map(mac);
  const port = fc.integer({ min: 0, max: 4 });
  // Steps back as well as forward: batch read times of several ports interleave.
  const dt = fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 0, max: 3000 }) }, { weight: 1, arbitrary: fc.integer({ min: -1500, max: 0 }) });
  const op = fc.oneof(
    { weight: 8, arbitrary: fc.record({ t: fc.constant('learn' as const), vid, mac: macA, port, dt }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('static' as const), vid, mac: macA, port }) },
    { weight: 2, arbitrary: fc.record({ t: fc.constant('expire' as const), dt }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('delete' as const), vid, mac: macA }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('flush' as const), port, includeStatic: fc.boolean(), vid: fc.option(vid, { nil: undefined }) }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('limit' as const), port, n: fc.integer({ min: 0, max: 4 }) }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('max' as const), n: fc.integer({ min: 1, max: 14 }) }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('ageing' as const), sec: fc.constantFrom(0, 1, 2, 5, 20) }) },
  );

  it('same answers, entries, per-port counts and counters after every operation', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 12 }), fc.array(op, { maxLength: 120 }), (max, ops) => {
        const f = new Fdb({ ageingSec: 5, maxEntries: max });
        const m = new Model(5000, max);
        let now = 10_000;
        for (const o of ops) {
          switch (o.t) {
            case 'learn':
              now += o.dt;
              expect(f.learn(o.vid, o.mac, o.port, now)).toBe(m.learn(o.vid, o.mac, o.port, now));
              break;
            case 'static': {
              f.addStatic(o.vid, o.mac, o.port);
              m.entries.set(`${o.vid}/${o.mac}`, { vid: o.vid, mac: o.mac, port: o.port, updated: 0, isStatic: true, learnedAt: -1 });
              break;
            }
            case 'expire':
              now += o.dt;
              expect(f.expire(now)).toBe(m.expire(now));
              break;
            case 'delete':
              expect(f.delete(o.vid, o.mac)).toBe(m.entries.delete(`${o.vid}/${o.mac}`));
              break;
            case 'flush':
              expect(f.flushPort(o.port, { includeStatic: o.includeStatic, vid: o.vid })).toBe(m.flush(o.port, o.includeStatic, o.vid));
              break;
            case 'limit':
              f.setPortLimit(o.port, o.n);
              m.limits.set(o.port, o.n);
              break;
            case 'max':
              f.setMaxEntries(o.n);
              m.max = o.n;
              while (m.dyn() > m.max && m.evict()) { /* shrink */ }
              break;
            case 'ageing':
              f.setAgeing(o.sec);
              m.ageingMs = o.sec * 1000;
              break;
          }
          const got = f.entries().map((e) => `${e.vid}/${e.mac}@${e.port}:${e.updated}${e.isStatic ? 's' : ''}`).sort();
          const want = [...m.entries.values()].map((e) => `${e.vid}/${e.mac}@${e.port}:${e.updated}${e.isStatic ? 's' : ''}`).sort();
          expect(got).toEqual(want);
          for (let p = 0; p <= 4; p++) expect(f.portCount(p)).toBe(m.dyn(p));
          expect(f.counters).toEqual(m.counters);
          expect(f.size).toBe(m.entries.size);
        }
      }),
      { numRuns: 500 },
    );
  });
});
