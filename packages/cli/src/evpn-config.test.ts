import { describe, expect, it } from 'vitest';
import { EvpnSchema } from './evpn-config.js';

describe('evpn config: arpSuppress', () => {
  it('is on by default, and can be turned off for the section or per VNI', () => {
    expect(EvpnSchema.parse({ asn: 65000 }).arpSuppress).toBe(true);
    const c = EvpnSchema.parse({ asn: 65000, arpSuppress: false, vnis: { 100: { arpSuppress: true } } });
    expect(c.arpSuppress).toBe(false);
    expect(c.vnis['100'].arpSuppress).toBe(true);
  });

  it('refuses a value that is not a boolean, with its path', () => {
    const r = EvpnSchema.safeParse({ asn: 65000, vnis: { 100: { arpSuppress: 'yes' } } });
    expect(r.success).toBe(false);
    expect(r.error?.issues[0].path).toEqual(['vnis', '100', 'arpSuppress']);
  });
});

describe('evpn config: dupDetect', () => {
  it('is on by default with RFC 7432 §15.1\'s values (5 moves in 180 s), held until cleared', () => {
    expect(EvpnSchema.parse({ asn: 65000 }).dupDetect).toEqual({ enabled: true, maxMoves: 5, windowSeconds: 180, freeze: 'permanent' });
    expect(EvpnSchema.parse({ asn: 65000, dupDetect: { maxMoves: 3 } }).dupDetect).toEqual({ enabled: true, maxMoves: 3, windowSeconds: 180, freeze: 'permanent' });
    expect(EvpnSchema.parse({ asn: 65000, dupDetect: { freeze: 600 } }).dupDetect).toMatchObject({ freeze: 600 });
    expect(EvpnSchema.parse({ asn: 65000, dupDetect: { freeze: false } }).dupDetect).toMatchObject({ freeze: false });
    expect(EvpnSchema.parse({ asn: 65000, dupDetect: { enabled: false } }).dupDetect).toMatchObject({ enabled: false });
  });

  it('refuses out-of-range values with their path', () => {
    for (const [v, path] of [[{ maxMoves: 1 }, 'maxMoves'], [{ windowSeconds: 0 }, 'windowSeconds'], [{ freeze: 'forever' }, 'freeze'], [{ max: 3 }, '']] as const) {
      const r = EvpnSchema.safeParse({ asn: 65000, dupDetect: v });
      expect(r.success, JSON.stringify(v)).toBe(false);
      expect(r.error?.issues[0].path).toEqual(path ? ['dupDetect', path] : ['dupDetect']);
    }
    expect(EvpnSchema.safeParse({ asn: 65000, dupDetect: { freeze: 'forever' } }).error?.issues[0].message).toMatch(/"permanent", false .* seconds/);
  });
});

describe('evpn config: neighbours\' route limits', () => {
  it('default to 20,000 routes and a 300 s restart; 0 turns either off', () => {
    const n = EvpnSchema.parse({ asn: 65000, neighbors: [{ address: '10.0.0.2', remoteAs: 65000 }] }).neighbors[0];
    expect(n).toEqual({ address: '10.0.0.2', remoteAs: 65000, maxPrefixes: 20000, maxPrefixesRestart: 300 });
    const o = EvpnSchema.parse({ asn: 65000, neighbors: [{ address: '10.0.0.2', remoteAs: 65000, maxPrefixes: 0, maxPrefixesRestart: 0 }] }).neighbors[0];
    expect(o).toMatchObject({ maxPrefixes: 0, maxPrefixesRestart: 0 });
  });

  it('refuses a negative or fractional limit, with its path', () => {
    for (const bad of [{ maxPrefixes: -1 }, { maxPrefixes: 1.5 }, { maxPrefixesRestart: -5 }]) {
      const r = EvpnSchema.safeParse({ asn: 65000, neighbors: [{ address: '10.0.0.2', remoteAs: 65000, ...bad }] });
      expect(r.success).toBe(false);
      expect(r.error?.issues[0].path).toEqual(['neighbors', 0, Object.keys(bad)[0]]);
    }
  });
});
