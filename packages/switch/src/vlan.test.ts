import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkVid, VlanPolicy, VlanPolicyError, type VlanSpec } from './vlan.js';

const members = (p: VlanPolicy) => p.members();

describe('VlanPolicy.from: access', () => {
  it('one VID, PVID, untagged; tagged frames not accepted', () => {
    const p = VlanPolicy.from({ mode: 'access', vid: 10 });
    expect(members(p)).toEqual([{ vid: 10, pvid: true, untagged: true }]);
    expect(p.pvid).toBe(10);
    expect(p.acceptsTagged).toBe(false);
    expect(p.isMember(10)).toBe(true);
    expect(p.isUntagged(10)).toBe(true);
    expect(p.isMember(11)).toBe(false);
    expect(p.isMember(1)).toBe(false);
    expect(p.mode()).toBe('access');
  });

  it('defaults to VLAN 1, like a new Linux bridge port', () => {
    expect(members(VlanPolicy.from({ mode: 'access' }))).toEqual([{ vid: 1, pvid: true, untagged: true }]);
    const d = VlanPolicy.defaultAccess();
    expect(members(d)).toEqual([{ vid: 1, pvid: true, untagged: true }]);
    expect(d.mode()).toBe('access');
    expect(d.toSpec()).toEqual({ mode: 'access', vid: 1 });
  });
});

describe('VlanPolicy.from: trunk', () => {
  it('without native: allowed VIDs tagged, no PVID', () => {
    const p = VlanPolicy.from({ mode: 'trunk', allowed: [30, 10, 20] });
    expect(members(p)).toEqual([
      { vid: 10, pvid: false, untagged: false },
      { vid: 20, pvid: false, untagged: false },
      { vid: 30, pvid: false, untagged: false },
    ]);
    expect(p.pvid).toBe(0);
    expect(p.acceptsTagged).toBe(true);
    expect(p.isUntagged(10)).toBe(false);
    expect(p.mode()).toBe('trunk');
    expect(p.toSpec()).toEqual({ mode: 'trunk', allowed: [10, 20, 30] });
  });

  it('with native: the native VLAN is the PVID and untagged', () => {
    const p = VlanPolicy.from({ mode: 'trunk', allowed: [10, 20], native: 99 });
    expect(members(p)).toEqual([
      { vid: 10, pvid: false, untagged: false },
      { vid: 20, pvid: false, untagged: false },
      { vid: 99, pvid: true, untagged: true },
    ]);
    expect(p.pvid).toBe(99);
    expect(p.acceptsTagged).toBe(true);
    expect(p.mode()).toBe('trunk');
    expect(p.toSpec()).toEqual({ mode: 'trunk', allowed: [10, 20], native: 99 });
  });

  it('a native VLAN also listed as allowed becomes untagged', () => {
    const p = VlanPolicy.from({ mode: 'trunk', allowed: [10, 20], native: 10 });
    expect(members(p)).toEqual([
      { vid: 10, pvid: true, untagged: true },
      { vid: 20, pvid: false, untagged: false },
    ]);
    expect(p.acceptsTagged).toBe(true);
    expect(p.toSpec()).toEqual({ mode: 'trunk', allowed: [20], native: 10 });
  });

  it('an empty trunk is a member of nothing and admits nothing', () => {
    const p = VlanPolicy.from({ mode: 'trunk', allowed: [] });
    expect(members(p)).toEqual([]);
    expect(p.pvid).toBe(0);
    expect(p.acceptsTagged).toBe(false);
  });
});

describe('VlanPolicy.from: hybrid', () => {
  it('explicit memberships with per-VID flags', () => {
    const spec: VlanSpec = {
      mode: 'hybrid',
      vlans: [
        { vid: 5, pvid: true, untagged: true },
        { vid: 6, untagged: true },
        { vid: 7 },
      ],
    };
    const p = VlanPolicy.from(spec);
    expect(members(p)).toEqual([
      { vid: 5, pvid: true, untagged: true },
      { vid: 6, pvid: false, untagged: true },
      { vid: 7, pvid: false, untagged: false },
    ]);
    expect(p.mode()).toBe('hybrid');
    expect(p.acceptsTagged).toBe(true);
    expect(p.toSpec()).toEqual({ mode: 'hybrid', vlans: members(p) });
  });

  it('a tagged PVID is hybrid', () => {
    const p = VlanPolicy.from({ mode: 'hybrid', vlans: [{ vid: 5, pvid: true }, { vid: 6 }] });
    expect(p.pvid).toBe(5);
    expect(p.isUntagged(5)).toBe(false);
    expect(p.mode()).toBe('hybrid');
  });

  it('an untagged member that is not the PVID is hybrid, not trunk', () => {
    const p = VlanPolicy.from({ mode: 'hybrid', vlans: [{ vid: 5, untagged: true }, { vid: 6 }] });
    expect(p.pvid).toBe(0);
    expect(p.mode()).toBe('hybrid');
  });

  it('a lone untagged member without PVID is hybrid, not access', () => {
    const p = VlanPolicy.from({ mode: 'hybrid', vlans: [{ vid: 5, untagged: true }] });
    expect(p.mode()).toBe('hybrid');
    expect(p.acceptsTagged).toBe(false);
    expect(p.pvid).toBe(0);
  });

  it('presets read back as their mode', () => {
    expect(VlanPolicy.from({ mode: 'hybrid', vlans: [{ vid: 8, pvid: true, untagged: true }] }).mode()).toBe('access');
    expect(VlanPolicy.from({ mode: 'hybrid', vlans: [{ vid: 8 }, { vid: 9 }] }).mode()).toBe('trunk');
    expect(VlanPolicy.from({
      mode: 'hybrid', vlans: [{ vid: 8 }, { vid: 9, pvid: true, untagged: true }],
    }).toSpec()).toEqual({ mode: 'trunk', allowed: [8], native: 9 });
  });
});

describe('toSpec round trip', () => {
  it.each<[string, VlanSpec]>([
    ['access', { mode: 'access', vid: 4094 }],
    ['trunk', { mode: 'trunk', allowed: [1, 2, 4094] }],
    ['trunk + native', { mode: 'trunk', allowed: [2, 3], native: 1 }],
    ['hybrid', { mode: 'hybrid', vlans: [{ vid: 2, pvid: true, untagged: false }, { vid: 3, pvid: false, untagged: true }] }],
  ])('%s', (_name, spec) => {
    const p = VlanPolicy.from(spec);
    expect(p.toSpec()).toEqual(spec);
    expect(members(VlanPolicy.from(p.toSpec()))).toEqual(members(p));
    expect(VlanPolicy.from(p.toSpec()).pvid).toBe(p.pvid);
  });

  it('holds for any set of memberships (property)', () => {
    const vlan = fc.record({ vid: fc.integer({ min: 1, max: 4094 }), pvid: fc.boolean(), untagged: fc.boolean() });
    fc.assert(
      fc.property(fc.array(vlan, { maxLength: 8 }), (vlans) => {
        const p = VlanPolicy.from({ mode: 'hybrid', vlans });
        const q = VlanPolicy.from(p.toSpec());
        expect(members(q)).toEqual(members(p));
        expect(q.pvid).toBe(p.pvid);
        expect(q.mode()).toBe(p.mode());
        expect(q.acceptsTagged).toBe(p.acceptsTagged);
        expect(p.acceptsTagged).toBe(members(p).some((m) => !m.untagged));
        if (p.pvid !== 0) expect(p.isMember(p.pvid)).toBe(true);
      }),
    );
  });
});

describe('add / del, as bridge vlan add / del', () => {
  it('add with pvid moves the PVID; the old PVID VID stays a member', () => {
    const p = VlanPolicy.from({ mode: 'access', vid: 10 });
    p.add(20, { pvid: true, untagged: true });
    expect(p.pvid).toBe(20);
    expect(p.isMember(10)).toBe(true);
    expect(members(p)).toEqual([
      { vid: 10, pvid: false, untagged: true },
      { vid: 20, pvid: true, untagged: true },
    ]);
  });

  it('add without pvid leaves the PVID elsewhere alone', () => {
    const p = VlanPolicy.from({ mode: 'access', vid: 10 });
    p.add(20, {});
    expect(p.pvid).toBe(10);
    expect(p.acceptsTagged).toBe(true);
    expect(p.isUntagged(20)).toBe(false);
    expect(p.mode()).toBe('trunk');
  });

  it('add again updates the untagged flag', () => {
    const p = VlanPolicy.from({ mode: 'trunk', allowed: [5] });
    expect(p.acceptsTagged).toBe(true);
    p.add(5, { untagged: true });
    expect(p.isUntagged(5)).toBe(true);
    expect(p.acceptsTagged).toBe(false);
    expect(members(p)).toHaveLength(1);
    p.add(5, {});
    expect(p.isUntagged(5)).toBe(false);
    expect(p.acceptsTagged).toBe(true);
  });

  it('del removes the membership and reports whether it existed', () => {
    const p = VlanPolicy.from({ mode: 'trunk', allowed: [5, 6], native: 7 });
    expect(p.del(6)).toBe(true);
    expect(p.isMember(6)).toBe(false);
    expect(p.del(6)).toBe(false);
    expect(p.del(100)).toBe(false);
    expect(p.pvid).toBe(7);
    expect(p.acceptsTagged).toBe(true);
    expect(p.del(5)).toBe(true);
    expect(p.acceptsTagged).toBe(false);
  });

  it('del of the PVID VID clears the PVID', () => {
    const p = VlanPolicy.from({ mode: 'trunk', allowed: [5], native: 7 });
    expect(p.del(7)).toBe(true);
    expect(p.pvid).toBe(0);
    expect(p.isMember(7)).toBe(false);
    expect(p.mode()).toBe('trunk');
    expect(p.toSpec()).toEqual({ mode: 'trunk', allowed: [5] });
    // Re-adding the VID does not bring the PVID back by itself.
    p.add(7, { untagged: true });
    expect(p.pvid).toBe(0);
  });

  it('assign replaces everything', () => {
    const p = VlanPolicy.from({ mode: 'trunk', allowed: [5, 6], native: 7 });
    p.assign(VlanPolicy.from({ mode: 'access', vid: 9 }));
    expect(members(p)).toEqual([{ vid: 9, pvid: true, untagged: true }]);
    expect(p.acceptsTagged).toBe(false);
    expect(p.mode()).toBe('access');
    p.assign(VlanPolicy.from({ mode: 'trunk', allowed: [1] }));
    expect(p.pvid).toBe(0);
    expect(p.acceptsTagged).toBe(true);
    expect(p.isMember(9)).toBe(false);
  });
});

describe('VID range', () => {
  it.each([0, 4095, 4096, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY])('%s is refused by every entry point', (vid) => {
    expect(() => checkVid(vid)).toThrow(VlanPolicyError);
    expect(() => VlanPolicy.from({ mode: 'access', vid })).toThrow(VlanPolicyError);
    expect(() => VlanPolicy.from({ mode: 'trunk', allowed: [10, vid] })).toThrow(VlanPolicyError);
    expect(() => VlanPolicy.from({ mode: 'trunk', allowed: [10], native: vid })).toThrow(VlanPolicyError);
    expect(() => VlanPolicy.from({ mode: 'hybrid', vlans: [{ vid }] })).toThrow(VlanPolicyError);
    const p = VlanPolicy.from({ mode: 'trunk', allowed: [10] });
    expect(() => p.add(vid, {})).toThrow(VlanPolicyError);
    expect(() => p.del(vid)).toThrow(VlanPolicyError);
    expect(members(p)).toEqual([{ vid: 10, pvid: false, untagged: false }]);
  });

  it('errors carry the stable code EVLAN', () => {
    try {
      checkVid(4095);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(VlanPolicyError);
      expect((e as VlanPolicyError).code).toBe('EVLAN');
      expect((e as Error).message).toMatch(/4095/);
    }
  });

  it('1 and 4094 are valid', () => {
    expect(() => checkVid(1)).not.toThrow();
    expect(() => checkVid(4094)).not.toThrow();
    const p = VlanPolicy.from({ mode: 'trunk', allowed: [1, 4094] });
    expect(p.isMember(1) && p.isMember(4094)).toBe(true);
    // Never members, whatever happens.
    expect(p.isMember(0)).toBe(false);
    expect(p.isMember(4095)).toBe(false);
  });
});
