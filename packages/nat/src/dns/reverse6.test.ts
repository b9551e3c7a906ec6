import { describe, expect, it } from 'vitest';
import { parseIp6 } from '@vswitch/switch';
import { inReverseZone6 } from './gateway.js';

/** The ip6.arpa name of an address (32 nibbles, lowest first). */
function arpa(a: string): string {
  const b = parseIp6(a)!;
  const n: string[] = [];
  for (let i = 15; i >= 0; i--) n.push((b[i] & 0xf).toString(16), (b[i] >>> 4).toString(16));
  return `${n.join('.')}.ip6.arpa`;
}

describe('inReverseZone6: the ip6.arpa names the gateway answers itself', () => {
  const prefix = parseIp6('fd00:77:10::')!;
  it('takes the names of addresses in the network\'s /64 and the zone\'s own subdomains', () => {
    expect(inReverseZone6(arpa('fd00:77:10::99'), prefix, 64)).toBe(true);
    expect(inReverseZone6(arpa('fd00:77:10:0:ffff:ffff:ffff:ffff'), prefix, 64)).toBe(true);
    // The zone itself (16 nibbles) and a name between it and a full address.
    const full = arpa('fd00:77:10::99').split('.');
    expect(inReverseZone6(`${full.slice(16).join('.')}`, prefix, 64)).toBe(true);
    expect(inReverseZone6(`${full.slice(10).join('.')}`, prefix, 64)).toBe(true);
  });
  it('leaves every other name to upstream', () => {
    expect(inReverseZone6(arpa('fd00:77:11::99'), prefix, 64)).toBe(false);
    expect(inReverseZone6(arpa('2001:db8::1'), prefix, 64)).toBe(false);
    const full = arpa('fd00:77:10::99').split('.');
    expect(inReverseZone6(`${full.slice(17).join('.')}`, prefix, 64)).toBe(false);
    expect(inReverseZone6(`x.${full.slice(16).join('.')}`, prefix, 64)).toBe(false);
    expect(inReverseZone6(`10.${full.slice(16).join('.')}`, prefix, 64)).toBe(false);
    expect(inReverseZone6('ip6.arpa'.padStart(9, '.'), prefix, 64)).toBe(false);
  });
});
