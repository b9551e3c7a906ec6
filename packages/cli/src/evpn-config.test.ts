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
