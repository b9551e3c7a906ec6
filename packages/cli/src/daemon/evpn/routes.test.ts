import { describe, expect, it } from 'vitest';
import type { EvpnRoute } from './gobgp.js';
import { checkRoute, derivePlans, routeKey } from './routes.js';

const route = (o: Partial<EvpnRoute>): EvpnRoute => ({
  type: 2, rd: '10.0.0.2:100', mac: '02:00:00:00:00:0b', ip: '', vni: 100, nextHop: '10.0.0.2', rts: ['65000:100'], encap: 8, seq: 0, sticky: false, neighbor: '10.0.0.2', ...o,
});

describe('EVPN route rules', () => {
  it('derives RD router-id:n and RT ASN:VNI as FRR does, unless set; large VNIs get unique RDs', () => {
    const p = derivePlans([100, 70000, 80000], '10.0.0.1', 65000, { 200: { rd: '1.2.3.4:9' }, 100: { rt: ['65001:5'] } });
    expect(p).toEqual([
      { vni: 100, rd: '10.0.0.1:100', rts: ['65001:5'] },
      { vni: 70000, rd: '10.0.0.1:65535', rts: ['65000:70000'] },
      { vni: 80000, rd: '10.0.0.1:65534', rts: ['65000:80000'] },
    ]);
    expect(derivePlans([5], '10.0.0.1', 4200000000, {})[0].rts).toEqual([`${4200000000 % 65536}:5`]);
  });

  it('refuses by reason: unknown VNI, RT mismatch, encapsulation, next hop, MAC', () => {
    const plan = { vni: 100, rd: 'x', rts: ['65000:100'] };
    expect(checkRoute(route({}), plan, '10.0.0.1')).toBeUndefined();
    expect(checkRoute(route({ vni: 7 }), undefined, '10.0.0.1')).toBe('unknown_vni');
    expect(checkRoute(route({ rts: ['65000:7'] }), plan, '10.0.0.1')).toBe('rt_mismatch');
    expect(checkRoute(route({ encap: 10 }), plan, '10.0.0.1')).toBe('bad_encap');
    expect(checkRoute(route({ encap: -1 }), plan, '10.0.0.1')).toBeUndefined();
    expect(checkRoute(route({ nextHop: '10.0.0.1' }), plan, '10.0.0.1')).toBe('bad_next_hop');
    expect(checkRoute(route({ nextHop: '' }), plan, '10.0.0.1')).toBe('bad_next_hop');
    expect(checkRoute(route({ mac: '01:00:5e:00:00:01' }), plan, '10.0.0.1')).toBe('bad_mac');
    expect(checkRoute(route({ mac: '00:00:00:00:00:00' }), plan, '10.0.0.1')).toBe('bad_mac');
    expect(checkRoute(route({ type: 3, mac: undefined, originator: '10.0.0.2' }), plan, '10.0.0.1')).toBeUndefined();
  });

  it('keys a route by what a withdrawal names (sender, RD, type, MAC/IP or originator), not its attributes', () => {
    expect(routeKey(route({ seq: 5 }))).toBe(routeKey(route({ seq: 0, withdraw: true })));
    expect(routeKey(route({ ip: '10.1.1.1' }))).not.toBe(routeKey(route({})));
    expect(routeKey(route({ type: 3, originator: '10.0.0.2' }))).toBe('10.0.0.2|10.0.0.2:100|3|10.0.0.2');
  });
});
