import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Fdb, FDB_DEFAULTS, FDB_LIMITS, type FdbEntry, Learn } from './fdb.js';

const A = 0x020000000001;
const B = 0x020000000002;
const C = 0x020000000003;
const D = 0x020000000004;
/** Distinct unicast MACs for bulk tests. */
const mac = (i: number): number => 0x020000100000 + i;

const key = (e: FdbEntry): string => `${e.vid}/${e.mac.toString(16)}@${e.port}${e.isStatic ? 's' : ''}`;
const keys = (f: Fdb): string[] => f.entries().map(key).sort();

describe('defaults and limits', () => {
  it('defaults to 300 s ageing and 8192 entries, as Linux and OVS', () => {
    const f = new Fdb();
    expect(FDB_DEFAULTS).toEqual({ ageingSec: 300, maxEntries: 8192 });
    expect(f.ageingSec).toBe(300);
    expect(f.maxEntries).toBe(8192);
    expect(f.size).toBe(0);
    expect(f.entries()).toEqual([]);
    expect(f.counters).toEqual({
      learned: 0, moved: 0, aged: 0, evicted: 0, refusedPortLimit: 0, refusedStatic: 0, refusedFull: 0, refusedBound: 0,
    });
  });

  it('setAgeing clamps and returns the applied value', () => {
    const f = new Fdb();
    expect(f.setAgeing(10)).toBe(10);
    expect(f.ageingSec).toBe(10);
    expect(f.setAgeing(0)).toBe(0);
    expect(f.setAgeing(2.4)).toBe(2);
    expect(f.setAgeing(2.6)).toBe(3);
    expect(f.setAgeing(FDB_LIMITS.ageingSecMax + 1)).toBe(FDB_LIMITS.ageingSecMax);
    expect(f.ageingSec).toBe(FDB_LIMITS.ageingSecMax);
    // Nonsense falls back to the default rather than to 0 (which would disable learning).
    expect(f.setAgeing(-1)).toBe(FDB_DEFAULTS.ageingSec);
    expect(f.setAgeing(Number.NaN)).toBe(FDB_DEFAULTS.ageingSec);
    expect(f.setAgeing(Number.POSITIVE_INFINITY)).toBe(FDB_DEFAULTS.ageingSec);
  });

  it('the constructor clamps the same way', () => {
    expect(new Fdb({ ageingSec: -5 }).ageingSec).toBe(300);
    expect(new Fdb({ ageingSec: 1e9 }).ageingSec).toBe(FDB_LIMITS.ageingSecMax);
    expect(new Fdb({ maxEntries: 0 }).maxEntries).toBe(FDB_LIMITS.maxEntriesMin);
    expect(new Fdb({ maxEntries: 1e9 }).maxEntries).toBe(FDB_LIMITS.maxEntriesMax);
    expect(new Fdb({ maxEntries: Number.NaN }).maxEntries).toBe(FDB_DEFAULTS.maxEntries);
  });

  it('setMaxEntries clamps and returns the applied value', () => {
    const f = new Fdb();
    expect(f.setMaxEntries(10)).toBe(10);
    expect(f.setMaxEntries(-3)).toBe(1);
    expect(f.setMaxEntries(0)).toBe(1);
    expect(f.setMaxEntries(3.6)).toBe(4);
    expect(f.setMaxEntries(2e6)).toBe(1_000_000);
    expect(f.maxEntries).toBe(1_000_000);
  });

  it('setPortLimit: positive sets, 0 or negative removes', () => {
    const f = new Fdb();
    expect(f.portLimit(1)).toBe(0);
    f.setPortLimit(1, 3);
    expect(f.portLimit(1)).toBe(3);
    f.setPortLimit(1, 0);
    expect(f.portLimit(1)).toBe(0);
    f.setPortLimit(1, 2);
    f.setPortLimit(1, -1);
    expect(f.portLimit(1)).toBe(0);
  });
});

describe('learning', () => {
  it('NEW, then REFRESHED on the same port, then MOVED to another', () => {
    const f = new Fdb();
    expect(f.learn(10, A, 1, 1000)).toBe(Learn.NEW);
    expect(f.lookup(10, A)).toBe(1);
    expect(f.get(10, A)).toMatchObject({ vid: 10, mac: A, port: 1, updated: 1000, isStatic: false });
    expect(f.counters.learned).toBe(1);
    expect(f.size).toBe(1);
    expect(f.portCount(1)).toBe(1);

    expect(f.learn(10, A, 1, 2000)).toBe(Learn.REFRESHED);
    expect(f.get(10, A)?.updated).toBe(2000);
    expect(f.counters.learned).toBe(1);
    expect(f.counters.moved).toBe(0);
    expect(f.size).toBe(1);

    expect(f.learn(10, A, 2, 3000)).toBe(Learn.MOVED);
    expect(f.lookup(10, A)).toBe(2);
    expect(f.get(10, A)?.updated).toBe(3000);
    expect(f.counters.moved).toBe(1);
    expect(f.counters.learned).toBe(1);
    expect(f.size).toBe(1);
    expect(f.portCount(1)).toBe(0);
    expect(f.portCount(2)).toBe(1);
  });

  it('keys by (VID, MAC): the same MAC in two VLANs is two entries', () => {
    const f = new Fdb();
    expect(f.learn(10, A, 1, 0)).toBe(Learn.NEW);
    expect(f.learn(20, A, 2, 0)).toBe(Learn.NEW);
    expect(f.lookup(10, A)).toBe(1);
    expect(f.lookup(20, A)).toBe(2);
    expect(f.lookup(30, A)).toBe(-1);
    expect(f.lookup(10, B)).toBe(-1);
    expect(f.get(30, A)).toBeUndefined();
    expect(f.size).toBe(2);
    expect(f.counters.moved).toBe(0);
  });

  it('lookup works at the VID edges', () => {
    const f = new Fdb();
    f.learn(1, A, 3, 0);
    f.learn(4094, A, 4, 0);
    expect(f.lookup(1, A)).toBe(3);
    expect(f.lookup(4094, A)).toBe(4);
  });
});

describe('ageing (fake clock)', () => {
  const AGE = 300_000;

  it('an entry survives at ageing-1 ms and is gone at ageing', () => {
    const f = new Fdb();
    f.learn(1, A, 1, 5000);
    expect(f.expire(5000 + AGE - 1)).toBe(0);
    expect(f.lookup(1, A)).toBe(1);
    expect(f.expire(5000 + AGE)).toBe(1);
    expect(f.lookup(1, A)).toBe(-1);
    expect(f.size).toBe(0);
    expect(f.portCount(1)).toBe(0);
    expect(f.counters.aged).toBe(1);
  });

  it('a refresh extends the life of an entry', () => {
    const f = new Fdb();
    f.learn(1, A, 1, 0);
    f.learn(1, B, 1, 0);
    f.learn(1, A, 1, 100_000); // refresh A only
    expect(f.expire(AGE)).toBe(1); // B dies
    expect(f.lookup(1, A)).toBe(1);
    expect(f.lookup(1, B)).toBe(-1);
    expect(f.expire(100_000 + AGE - 1)).toBe(0);
    expect(f.expire(100_000 + AGE)).toBe(1);
    expect(f.counters.aged).toBe(2);
  });

  it('a move counts as a refresh', () => {
    const f = new Fdb();
    f.learn(1, A, 1, 0);
    f.learn(1, A, 2, 200_000);
    expect(f.expire(AGE)).toBe(0);
    expect(f.lookup(1, A)).toBe(2);
  });

  it('static entries never age', () => {
    const f = new Fdb();
    f.addStatic(1, A, 1);
    f.learn(1, B, 1, 0);
    expect(f.expire(1e12)).toBe(1);
    expect(f.lookup(1, A)).toBe(1);
    expect(f.lookup(1, B)).toBe(-1);
    expect(f.size).toBe(1);
    expect(f.expire(2e12)).toBe(0);
  });

  it('a shorter ageing applies to existing entries by their last-seen time', () => {
    const f = new Fdb();
    f.learn(1, A, 1, 0);
    f.learn(1, B, 1, 8000);
    expect(f.setAgeing(10)).toBe(10);
    expect(f.expire(10_000)).toBe(1);
    expect(f.lookup(1, A)).toBe(-1);
    expect(f.lookup(1, B)).toBe(1);
  });

  it('ageing 0 disables learning: new MACs are refused with DISABLED, not counted', () => {
    const f = new Fdb({ ageingSec: 0 });
    expect(f.ageingSec).toBe(0);
    expect(f.learn(1, A, 1, 0)).toBe(Learn.DISABLED);
    expect(f.lookup(1, A)).toBe(-1);
    expect(f.size).toBe(0);
    expect(f.counters.learned).toBe(0);
    expect(f.counters.refusedFull).toBe(0);
  });

  it('switching ageing to 0 ages every dynamic entry at the next expire, not static ones', () => {
    const f = new Fdb();
    f.learn(1, A, 1, 1000);
    f.addStatic(1, B, 1);
    f.setAgeing(0);
    expect(f.expire(1000)).toBe(1);
    expect(f.lookup(1, A)).toBe(-1);
    expect(f.lookup(1, B)).toBe(1);
    expect(f.learn(1, C, 1, 1000)).toBe(Learn.DISABLED);
  });
});

describe('bridge-wide limit with fair eviction', () => {
  it('evicts the oldest-learned entry of the busiest port; other ports keep theirs', () => {
    const f = new Fdb({ maxEntries: 5 });
    // port 1 (victim neighbour): 2 entries; port 2 (flooder): 3 entries.
    expect(f.learn(1, mac(1), 1, 0)).toBe(Learn.NEW);
    expect(f.learn(1, mac(100), 2, 1)).toBe(Learn.NEW);
    expect(f.learn(1, mac(2), 1, 2)).toBe(Learn.NEW);
    expect(f.learn(1, mac(101), 2, 3)).toBe(Learn.NEW);
    expect(f.learn(1, mac(102), 2, 4)).toBe(Learn.NEW);
    expect(f.size).toBe(5);

    // Port 2 keeps flooding new MACs: each evicts port 2's own oldest.
    expect(f.learn(1, mac(103), 2, 5)).toBe(Learn.NEW);
    expect(f.lookup(1, mac(100))).toBe(-1);
    expect(f.counters.evicted).toBe(1);
    expect(f.learn(1, mac(104), 2, 6)).toBe(Learn.NEW);
    expect(f.lookup(1, mac(101))).toBe(-1);
    expect(f.counters.evicted).toBe(2);

    expect(f.lookup(1, mac(1))).toBe(1);
    expect(f.lookup(1, mac(2))).toBe(1);
    expect(f.size).toBe(5);
    expect(f.portCount(1)).toBe(2);
    expect(f.portCount(2)).toBe(3);
    expect(f.counters.learned).toBe(7);
    expect(f.counters.refusedFull).toBe(0);
  });

  it('a new MAC on the quiet port also evicts from the busiest port', () => {
    const f = new Fdb({ maxEntries: 4 });
    f.learn(1, mac(1), 1, 0);
    f.learn(1, mac(100), 2, 1);
    f.learn(1, mac(101), 2, 2);
    f.learn(1, mac(102), 2, 3);
    expect(f.learn(1, mac(2), 1, 4)).toBe(Learn.NEW);
    expect(f.lookup(1, mac(100))).toBe(-1);
    expect(keys(f)).toEqual(keys(build([[1, mac(1), 1], [1, mac(101), 2], [1, mac(102), 2], [1, mac(2), 1]])));
  });

  it('"oldest" is by learning, not by last refresh', () => {
    const f = new Fdb({ maxEntries: 3 });
    f.learn(1, mac(1), 1, 0);
    f.learn(1, mac(2), 1, 1);
    f.learn(1, mac(1), 1, 50); // refresh does not reorder
    f.learn(1, mac(9), 2, 60);
    f.learn(1, mac(3), 1, 70);
    expect(f.lookup(1, mac(1))).toBe(-1);
    expect(f.lookup(1, mac(2))).toBe(1);
  });

  it('a moved MAC is the newest of its new port', () => {
    const f = new Fdb({ maxEntries: 4 });
    f.learn(1, mac(1), 2, 0);
    f.learn(1, mac(2), 2, 1);
    f.learn(1, mac(3), 1, 2);
    expect(f.learn(1, mac(3), 2, 3)).toBe(Learn.MOVED); // port 2 now: 1, 2, 3
    f.learn(1, mac(4), 1, 4);
    expect(f.learn(1, mac(5), 1, 5)).toBe(Learn.NEW); // evicts port 2's oldest: mac(1)
    expect(f.lookup(1, mac(1))).toBe(-1);
    expect(f.lookup(1, mac(3))).toBe(2);
  });

  it('static entries are never evicted and do not count towards maxEntries', () => {
    const f = new Fdb({ maxEntries: 2 });
    f.addStatic(1, A, 1);
    f.addStatic(1, B, 2);
    expect(f.size).toBe(2);
    expect(f.learn(1, mac(1), 3, 0)).toBe(Learn.NEW);
    expect(f.learn(1, mac(2), 3, 1)).toBe(Learn.NEW);
    expect(f.counters.evicted).toBe(0);
    expect(f.size).toBe(4);
    // Full now: the next one evicts a dynamic entry, never a static one.
    expect(f.learn(1, mac(3), 3, 2)).toBe(Learn.NEW);
    expect(f.counters.evicted).toBe(1);
    expect(f.lookup(1, mac(1))).toBe(-1);
    expect(f.lookup(1, A)).toBe(1);
    expect(f.lookup(1, B)).toBe(2);
    expect(f.size).toBe(4);
    expect(f.counters.refusedFull).toBe(0);
  });

  it('setMaxEntries shrinking evicts fairly down to the new size, statics stay', () => {
    const f = new Fdb({ maxEntries: 10 });
    f.addStatic(1, A, 1);
    f.learn(1, mac(1), 1, 0);
    f.learn(1, mac(100), 2, 1);
    f.learn(1, mac(101), 2, 2);
    f.learn(1, mac(102), 2, 3);
    f.learn(1, mac(2), 1, 4);
    expect(f.setMaxEntries(3)).toBe(3);
    // 5 dynamic entries down to 3: the first eviction is port 2's oldest (port 2 held 3 of 5).
    expect(f.counters.evicted).toBe(2);
    expect(f.size - 1).toBe(3);
    expect(f.lookup(1, A)).toBe(1);
    expect(f.lookup(1, mac(100))).toBe(-1);
    expect(f.portCount(1) + f.portCount(2)).toBe(3);
    expect(f.setMaxEntries(1)).toBe(1);
    expect(f.size).toBe(2);
    expect(f.lookup(1, A)).toBe(1);
    expect(f.counters.evicted).toBe(4);
  });

  it('evicting the last entry of the VLAN being learned into keeps the new entry (regression)', () => {
    // The victim was the only entry of VLAN 1, so eviction dropped VLAN 1's map while
    // learn() still held it: the new entry went into the detached map, unreachable by
    // lookup and never removable, leaking size and the port count for good.
    const f = new Fdb({ maxEntries: 1 });
    f.learn(1, A, 1, 0);
    expect(f.learn(1, B, 1, 1)).toBe(Learn.NEW);
    expect(f.lookup(1, A)).toBe(-1);
    expect(f.lookup(1, B)).toBe(1);
    expect(f.entries().map(key)).toEqual([`1/${B.toString(16)}@1`]);
    expect(f.size).toBe(1);
    expect(f.expire(1e9)).toBe(1);
    expect(f.size).toBe(0);
    expect(f.portCount(1)).toBe(0);
    expect(f.learn(1, C, 1, 1e9)).toBe(Learn.NEW);
    expect(f.lookup(1, C)).toBe(1);
  });

  it('setMaxEntries growing evicts nothing', () => {
    const f = build([[1, A, 1], [1, B, 2]]);
    f.setMaxEntries(100);
    expect(f.size).toBe(2);
    expect(f.counters.evicted).toBe(0);
  });
});

describe('per-port limit', () => {
  it('refuses new MACs on a port at its limit, counts it, and leaves other ports alone', () => {
    const f = new Fdb();
    f.setPortLimit(1, 2);
    expect(f.learn(1, A, 1, 0)).toBe(Learn.NEW);
    expect(f.learn(2, B, 1, 0)).toBe(Learn.NEW); // the limit spans VLANs
    expect(f.learn(1, C, 1, 0)).toBe(Learn.REFUSED_PORT_LIMIT);
    expect(f.lookup(1, C)).toBe(-1);
    expect(f.counters.refusedPortLimit).toBe(1);
    expect(f.portCount(1)).toBe(2);
    expect(f.learn(1, C, 2, 0)).toBe(Learn.NEW);
  });

  it('allows refreshes at the limit', () => {
    const f = new Fdb();
    f.setPortLimit(1, 1);
    f.learn(1, A, 1, 0);
    expect(f.learn(1, A, 1, 500)).toBe(Learn.REFRESHED);
    expect(f.get(1, A)?.updated).toBe(500);
    expect(f.counters.refusedPortLimit).toBe(0);
  });

  it('refuses a move into a full port; the entry stays where it was', () => {
    const f = new Fdb();
    f.setPortLimit(2, 1);
    f.learn(1, A, 1, 0);
    f.learn(1, B, 2, 0);
    expect(f.learn(1, A, 2, 10)).toBe(Learn.REFUSED_PORT_LIMIT);
    expect(f.lookup(1, A)).toBe(1);
    expect(f.get(1, A)?.updated).toBe(0);
    expect(f.counters.moved).toBe(0);
    expect(f.counters.refusedPortLimit).toBe(1);
    // Moving out of a limited port is fine, and frees a slot there.
    expect(f.learn(1, B, 1, 20)).toBe(Learn.MOVED);
    expect(f.learn(1, A, 2, 30)).toBe(Learn.MOVED);
  });

  it('frees a slot when an entry ages out or is deleted', () => {
    const f = new Fdb({ ageingSec: 1 });
    f.setPortLimit(1, 1);
    f.learn(1, A, 1, 0);
    expect(f.learn(1, B, 1, 0)).toBe(Learn.REFUSED_PORT_LIMIT);
    f.expire(1000);
    expect(f.learn(1, B, 1, 1000)).toBe(Learn.NEW);
    f.delete(1, B);
    expect(f.learn(1, C, 1, 1000)).toBe(Learn.NEW);
  });

  it('static entries do not count towards the port limit', () => {
    const f = new Fdb();
    f.setPortLimit(1, 1);
    f.addStatic(1, A, 1);
    f.addStatic(1, B, 1);
    expect(f.portCount(1)).toBe(0);
    expect(f.learn(1, C, 1, 0)).toBe(Learn.NEW);
    expect(f.learn(1, D, 1, 0)).toBe(Learn.REFUSED_PORT_LIMIT);
  });

  it('removing the limit lets the port learn again', () => {
    const f = new Fdb();
    f.setPortLimit(1, 1);
    f.learn(1, A, 1, 0);
    expect(f.learn(1, B, 1, 0)).toBe(Learn.REFUSED_PORT_LIMIT);
    f.setPortLimit(1, 0);
    expect(f.learn(1, B, 1, 0)).toBe(Learn.NEW);
  });
});

describe('static entries', () => {
  it('never move: a frame from another port is REFUSED_STATIC and counted', () => {
    const f = new Fdb();
    f.addStatic(5, A, 1);
    expect(f.get(5, A)).toMatchObject({ vid: 5, mac: A, port: 1, isStatic: true });
    expect(f.learn(5, A, 2, 0)).toBe(Learn.REFUSED_STATIC);
    expect(f.lookup(5, A)).toBe(1);
    expect(f.counters.refusedStatic).toBe(1);
    expect(f.counters.moved).toBe(0);
    // From its own port it is a refresh, and it stays static.
    expect(f.learn(5, A, 1, 0)).toBe(Learn.REFRESHED);
    expect(f.get(5, A)?.isStatic).toBe(true);
    // Another VLAN is another key.
    expect(f.learn(6, A, 2, 0)).toBe(Learn.NEW);
  });

  it('replace a dynamic entry for the same key', () => {
    const f = new Fdb();
    f.learn(1, A, 2, 0);
    f.addStatic(1, A, 3);
    expect(f.size).toBe(1);
    expect(f.portCount(2)).toBe(0);
    expect(f.get(1, A)).toMatchObject({ port: 3, isStatic: true });
    expect(f.expire(1e12)).toBe(0);
  });

  it('adding one again replaces it (re-pointing the port)', () => {
    const f = new Fdb();
    f.addStatic(1, A, 1);
    f.addStatic(1, A, 2);
    expect(f.size).toBe(1);
    expect(f.lookup(1, A)).toBe(2);
  });

  it('may exceed maxEntries', () => {
    const f = new Fdb({ maxEntries: 1 });
    f.addStatic(1, A, 1);
    f.addStatic(1, B, 1);
    f.addStatic(1, C, 1);
    expect(f.size).toBe(3);
  });
});

describe('delete', () => {
  it('removes static and dynamic entries and says whether one existed', () => {
    const f = build([[1, A, 1]]);
    f.addStatic(1, B, 2);
    expect(f.delete(1, A)).toBe(true);
    expect(f.delete(1, A)).toBe(false);
    expect(f.delete(2, B)).toBe(false);
    expect(f.delete(1, B)).toBe(true);
    expect(f.size).toBe(0);
    expect(f.portCount(1)).toBe(0);
    expect(f.entries()).toEqual([]);
    // A deleted static entry no longer blocks learning.
    expect(f.learn(1, B, 3, 0)).toBe(Learn.NEW);
  });
});

describe('flushPort', () => {
  function table(): Fdb {
    const f = build([[1, A, 1], [2, B, 1], [1, C, 2]]);
    f.addStatic(1, D, 1);
    f.addStatic(2, D, 1);
    return f;
  }

  it('removes the port dynamic entries only by default', () => {
    const f = table();
    expect(f.flushPort(1)).toBe(2);
    expect(keys(f)).toEqual([`1/${C.toString(16)}@2`, `1/${D.toString(16)}@1s`, `2/${D.toString(16)}@1s`].sort());
    expect(f.portCount(1)).toBe(0);
    expect(f.size).toBe(3);
  });

  it('includeStatic removes static entries too', () => {
    const f = table();
    expect(f.flushPort(1, { includeStatic: true })).toBe(4);
    expect(keys(f)).toEqual([`1/${C.toString(16)}@2`]);
    expect(f.size).toBe(1);
  });

  it('vid restricts it to one VLAN', () => {
    const f = table();
    expect(f.flushPort(1, { vid: 2 })).toBe(1);
    expect(f.lookup(2, B)).toBe(-1);
    expect(f.lookup(1, A)).toBe(1);
    expect(f.lookup(2, D)).toBe(1);
    expect(f.flushPort(1, { vid: 2, includeStatic: true })).toBe(1);
    expect(f.lookup(2, D)).toBe(-1);
    expect(f.lookup(1, D)).toBe(1);
  });

  it('returns 0 for a port with nothing', () => {
    const f = table();
    expect(f.flushPort(9, { includeStatic: true })).toBe(0);
    expect(f.size).toBe(5);
  });
});

describe('entries', () => {
  it('is a snapshot of every entry, safe to modify the table while iterating', () => {
    const f = build([[1, A, 1], [4094, B, 2], [7, C, 3]]);
    f.addStatic(1, D, 4);
    const list = f.entries();
    expect(list).toHaveLength(4);
    for (const e of list) f.delete(e.vid, e.mac);
    expect(f.size).toBe(0);
    expect(list.map(key).sort()).toEqual(
      [`1/${A.toString(16)}@1`, `4094/${B.toString(16)}@2`, `7/${C.toString(16)}@3`, `1/${D.toString(16)}@4s`].sort(),
    );
  });
});

/** A table with the given dynamic entries, all learned at time 0. */
function build(list: [vid: number, mac: number, port: number][], opts?: { maxEntries?: number }): Fdb {
  const f = new Fdb(opts);
  for (const [vid, m, port] of list) f.learn(vid, m, port, 0);
  return f;
}

describe('invariants under any operation sequence (property)', () => {
  const vid = fc.integer({ min: 1, max: 3 });
  const macA = fc.integer({ min: 1, max: 12 }).map(mac);
  const port = fc.integer({ min: 0, max: 3 });
  const op = fc.oneof(
    { weight: 6, arbitrary: fc.record({ t: fc.constant('learn' as const), vid, mac: macA, port, dt: fc.integer({ min: 0, max: 4000 }) }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('static' as const), vid, mac: macA, port }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('expire' as const), dt: fc.integer({ min: 0, max: 6000 }) }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('delete' as const), vid, mac: macA }) },
    {
      weight: 1,
      arbitrary: fc.record({ t: fc.constant('flush' as const), port, includeStatic: fc.boolean(), vid: fc.option(vid, { nil: undefined }) }),
    },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('limit' as const), port, n: fc.integer({ min: 0, max: 4 }) }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('max' as const), n: fc.integer({ min: 1, max: 12 }) }) },
  );

  it('size == entries().length, per-port counts match, size <= maxEntries + statics, limits hold', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 10 }), fc.array(op, { maxLength: 80 }), (max, ops) => {
        const f = new Fdb({ ageingSec: 5, maxEntries: max });
        const limits = new Map<number, number>();
        let now = 0;
        for (const o of ops) {
          switch (o.t) {
            case 'learn': {
              now += o.dt;
              const before = f.get(o.vid, o.mac);
              const wasStatic = before?.isStatic === true;
              const r = f.learn(o.vid, o.mac, o.port, now);
              if (wasStatic && before!.port !== o.port) expect(r).toBe(Learn.REFUSED_STATIC);
              if (r >= 0) expect(f.lookup(o.vid, o.mac)).toBe(o.port);
              break;
            }
            case 'static':
              f.addStatic(o.vid, o.mac, o.port);
              break;
            case 'expire':
              now += o.dt;
              f.expire(now);
              for (const e of f.entries()) if (!e.isStatic) expect(e.updated).toBeGreaterThan(now - 5000);
              break;
            case 'delete':
              f.delete(o.vid, o.mac);
              expect(f.get(o.vid, o.mac)).toBeUndefined();
              break;
            case 'flush':
              f.flushPort(o.port, { includeStatic: o.includeStatic, vid: o.vid });
              break;
            case 'limit':
              f.setPortLimit(o.port, o.n);
              limits.set(o.port, o.n);
              break;
            case 'max':
              f.setMaxEntries(o.n);
              break;
          }
          const all = f.entries();
          const statics = all.filter((e) => e.isStatic).length;
          expect(f.size).toBe(all.length);
          expect(f.size).toBeLessThanOrEqual(f.maxEntries + statics);
          for (let p = 0; p <= 3; p++) {
            const dyn = all.filter((e) => !e.isStatic && e.port === p).length;
            expect(f.portCount(p)).toBe(dyn);
          }
          for (const e of all) expect(f.get(e.vid, e.mac)).toBe(e);
          // No MAC twice in one VLAN.
          expect(new Set(all.map((e) => `${e.vid}/${e.mac}`)).size).toBe(all.length);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('a port under a limit never grows past it by learning', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 4 }),
        fc.array(fc.record({ vid, mac: macA, port }), { maxLength: 60 }),
        (limit, learns) => {
          const f = new Fdb();
          f.setPortLimit(0, limit);
          let t = 0;
          for (const l of learns) {
            f.learn(l.vid, l.mac, l.port, t++);
            expect(f.portCount(0)).toBeLessThanOrEqual(limit);
          }
        },
      ),
    );
  });
});

describe('Fdb change listener', () => {
  it('reports adds, moves and removals (aged, flushed, replaced), never a refresh', () => {
    const f = new Fdb({ ageingSec: 10 });
    const seen: string[] = [];
    f.onChange = (e, how) => seen.push(`${how}:${e.mac}:${e.port}`);
    f.learn(1, 0xa, 1, 0);
    f.learn(1, 0xa, 1, 100);
    f.learn(1, 0xa, 2, 200);
    f.learn(1, 0xb, 1, 300);
    f.expire(10_250);
    f.addStatic(1, 0xb, 3, true);
    f.flushPort(3, { includeStatic: true });
    expect(seen).toEqual(['1:10:1', '2:10:2', '1:11:1', '3:10:2', '3:11:1', '1:11:3', '3:11:3']);
    expect(f.size).toBe(0);
  });

  it('a remote entry yields to a learn from a non-overlay port, not from an overlay one', () => {
    const f = new Fdb();
    f.overlayPort = (p) => p >= 10;
    f.addStatic(1, 0xa, 10, true);
    expect(f.learn(1, 0xa, 11, 0)).toBe(Learn.REFUSED_STATIC);
    expect(f.learn(1, 0xa, 1, 0)).toBe(Learn.NEW);
    expect(f.get(1, 0xa)).toMatchObject({ port: 1, isStatic: false, remote: false });
    f.addStatic(1, 0xc, 10);
    expect(f.learn(1, 0xc, 1, 0)).toBe(Learn.REFUSED_STATIC);
  });
});
