/*
 * The LACP machine against a simulated partner: a second Lacp (another system)
 * whose PDUs cross a "cable" per member as real frames (writeLacpFrame/readLacpdu),
 * on a fake clock. Shows: two active systems sync and reach collecting/distributing
 * within a second or so; a passive side comes up only with an active partner; silence
 * expires a member after 3 periods (3 s fast, 90 s slow) and defaults it 3 s later;
 * a partner change on one member takes it out of the aggregation; PDUs are rate-limited.
 */
import { describe, expect, it } from 'vitest';
import { Lacp, LACP_FAST_MS, type LacpSettings } from './lacp.js';
import { LACP_FRAME_LEN, LACP_STATE, LACPDU_OK, newLacpduView, newLacpInfo, readLacpdu, writeLacpFrame } from './wire/lacp.js';

const S = LACP_STATE;

/** Two systems, `n` cables; cut[i] true stops member i's PDUs in both directions. */
class Link {
  now = 0;
  cut: boolean[];
  sent: [number, number] = [0, 0];
  readonly a: Lacp;
  b: Lacp;
  constructor(sa: LacpSettings, sb: LacpSettings, readonly n = 2, bSystem = 0x0200_0000_00b0) {
    this.a = new Lacp(sa, 0x0200_0000_00a0, 1, n);
    this.b = new Lacp(sb, bSystem, 5, n);
    this.cut = new Array(n).fill(false);
    for (let i = 0; i < n; i++) { this.a.setLink(i, true, 0); this.b.setLink(i, true, 0); }
  }
  #deliver(from: Lacp, to: Lacp, i: number): void {
    if (this.cut[i]) return;
    const f = new Uint8Array(LACP_FRAME_LEN);
    writeLacpFrame(f, 0, 0x0200_0000_0001 + i, from.actorInfo(i, newLacpInfo()), from.members[i].partner);
    const v = newLacpduView();
    expect(readLacpdu(f, 0, f.length, v)).toBe(LACPDU_OK);
    to.receive(i, v, this.now);
  }
  run(ms: number, step = 100): void {
    const end = this.now + ms;
    for (; this.now <= end; this.now += step) {
      this.a.tick(this.now, (i) => { this.sent[0]++; this.#deliver(this.a, this.b, i); });
      this.b.tick(this.now, (i) => { this.sent[1]++; this.#deliver(this.b, this.a, i); });
    }
    this.now = end;
  }
  distributing(l: Lacp): boolean[] {
    return l.members.map((_, i) => l.distributing(i));
  }
}

const FAST_ACTIVE = { active: true, fast: true };

describe('LACP against a simulated partner', () => {
  it('syncs two active systems to collecting/distributing on every member', () => {
    const l = new Link(FAST_ACTIVE, FAST_ACTIVE);
    l.run(1000);
    expect(l.distributing(l.a)).toEqual([true, true]);
    expect(l.distributing(l.b)).toEqual([true, true]);
    const s = l.a.actorState(0);
    expect(s & (S.SYNC | S.COLLECTING | S.DISTRIBUTING | S.ACTIVITY | S.TIMEOUT | S.AGGREGATION)).toBe(0x3f);
    expect(l.a.members[0].partner.system).toBe(0x0200_0000_00b0);
    expect(l.a.members[0].partner.key).toBe(5);
    expect(l.a.view(0).status).toBe('current');
  });

  it('a passive side answers an active one; two passive sides stay silent', () => {
    const p = new Link({ active: false, fast: true }, FAST_ACTIVE);
    p.run(2000);
    expect(p.distributing(p.a)).toEqual([true, true]);
    const q = new Link({ active: false, fast: true }, { active: false, fast: true });
    q.run(5000);
    expect(q.sent).toEqual([0, 0]);
    expect(q.distributing(q.a)).toEqual([false, false]);
  });

  it('sends every second when the partner asks for fast, every 30 s for slow', () => {
    const fast = new Link(FAST_ACTIVE, FAST_ACTIVE, 1);
    fast.run(2000);
    const before = fast.sent[0];
    fast.run(10_000);
    expect(fast.sent[0] - before).toBeGreaterThanOrEqual(9);
    expect(fast.sent[0] - before).toBeLessThanOrEqual(11);
    const slow = new Link({ active: true, fast: false }, { active: true, fast: false }, 1);
    slow.run(2000);
    const b2 = slow.sent[0];
    slow.run(60_000);
    expect(slow.sent[0] - b2).toBe(2);
  });

  it('fast rate: a silent partner expires the member after 3 s and defaults it after 3 s more', () => {
    const l = new Link(FAST_ACTIVE, FAST_ACTIVE);
    l.run(1000);
    l.cut[1] = true;
    l.run(2500);
    expect(l.distributing(l.a)).toEqual([true, true]);
    l.run(800);
    expect(l.a.view(1).status).toBe('expired');
    expect(l.distributing(l.a)).toEqual([true, false]);
    expect(l.a.actorState(1) & S.EXPIRED).toBe(S.EXPIRED);
    l.run(3100);
    expect(l.a.view(1).status).toBe('defaulted');
    expect(l.a.members[1].partner.system).toBe(0);
    // Member 0 never noticed.
    expect(l.distributing(l.a)[0]).toBe(true);
    // The cable back: it rejoins within a couple of seconds.
    l.cut[1] = false;
    l.run(2000);
    expect(l.distributing(l.a)).toEqual([true, true]);
  });

  it('slow rate: the partner has 90 s', () => {
    const l = new Link({ active: true, fast: false }, { active: true, fast: false });
    l.run(2000);
    expect(l.distributing(l.a)).toEqual([true, true]);
    l.cut[0] = true;
    const until = l.a.members[0].rxUntil;
    // The last PDU came in during the first 2 s: 90 s (3 x 30 s) from it.
    expect(until).toBeGreaterThanOrEqual(90_000);
    expect(until).toBeLessThanOrEqual(92_000);
    l.run(until - 100 - l.now);
    expect(l.distributing(l.a)[0]).toBe(true);
    l.run(200);
    expect(l.a.view(0).status).toBe('expired');
    expect(l.distributing(l.a)).toEqual([false, true]);
  });

  it('a member whose link goes down stops at once, its partner forgotten', () => {
    const l = new Link(FAST_ACTIVE, FAST_ACTIVE);
    l.run(1000);
    l.a.setLink(0, false, l.now);
    expect(l.a.distributing(0)).toBe(false);
    expect(l.a.members[0].partner.system).toBe(0);
    expect(l.a.distributing(1)).toBe(true);
  });

  it('a partner change on one member takes it out of the aggregation; the lead keeps going', () => {
    const l = new Link(FAST_ACTIVE, FAST_ACTIVE);
    l.run(1000);
    // Member 1 is re-cabled to another system (C, key 9): C speaks on it from now on.
    const c = new Lacp(FAST_ACTIVE, 0x0200_0000_00c0, 9, 2);
    c.setLink(1, true, l.now);
    l.cut[1] = true;
    const v = newLacpduView();
    const f = new Uint8Array(LACP_FRAME_LEN);
    for (let t = 0; t < 3000; t += 100) {
      l.run(100);
      c.tick(l.now, (i) => {
        writeLacpFrame(f, 0, 0x0200_0000_00c1, c.actorInfo(i, newLacpInfo()), c.members[i].partner);
        readLacpdu(f, 0, f.length, v);
        l.a.receive(i, v, l.now);
      });
    }
    expect(l.a.members[1].partner.system).toBe(0x0200_0000_00c0);
    expect(l.a.view(1).partnerChanges).toBe(1);
    // The lead is member 0 (B has the lower system id): C's member is not attached.
    expect(l.a.members[1].attached).toBe(false);
    expect(l.distributing(l.a)).toEqual([true, false]);
  });

  it('sends at most 3 PDUs a second per member however often it must tell something', () => {
    const a = new Lacp(FAST_ACTIVE, 0x0200_0000_00a0, 1, 1);
    a.setLink(0, true, 0);
    let sent = 0;
    for (let t = 0; t < LACP_FAST_MS; t += 10) {
      a.members[0].ntt = true;
      a.tick(t, () => sent++);
    }
    expect(sent).toBe(3);
  });
});
