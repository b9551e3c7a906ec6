/*
 * GuardDropLog: the first guard drop of a port and reason is logged at the next
 * tick, the rest summed into at most one line per window; ports are independent,
 * reasons are independent, and a port re-added under its name starts afresh.
 */
import { describe, expect, it } from 'vitest';
import { Drop, DROP_REASON_COUNT, type Bridge } from '@vswitch/switch';
import { GuardDropLog, type GuardDropLine } from './guard-log.js';

function fakeBridge(name: string, ports: string[]): { br: Bridge; drops: (port: string) => Float64Array; replace: (port: string) => void } {
  const map = new Map<string, { name: string; drops: Float64Array }>();
  for (const p of ports) map.set(p, { name: p, drops: new Float64Array(DROP_REASON_COUNT) });
  return {
    br: { name, ports: map } as unknown as Bridge,
    drops: (p) => map.get(p)!.drops,
    replace: (p) => { map.set(p, { name: p, drops: new Float64Array(DROP_REASON_COUNT) }); },
  };
}

describe('GuardDropLog', () => {
  it('logs the first drop at once, then one summed line per window', () => {
    const lines: GuardDropLine[] = [];
    const log = new GuardDropLog((l) => lines.push(l), 60_000);
    const b = fakeBridge('br0', ['vm1', 'vm2']);
    log.tick([b.br], 0);
    expect(lines).toEqual([]);
    b.drops('vm1')[Drop.arp_spoof] = 3;
    log.tick([b.br], 1000);
    expect(lines).toEqual([{ event: 'guard_drop', bridge: 'br0', port: 'vm1', reason: 'arp_spoof', count: 3, total: 3, first: true }]);
    // 59 more seconds of drops: nothing logged, everything counted.
    for (let t = 2000; t < 61_000; t += 1000) {
      b.drops('vm1')[Drop.arp_spoof] += 10;
      log.tick([b.br], t);
    }
    expect(lines).toHaveLength(1);
    b.drops('vm1')[Drop.arp_spoof] += 10;
    log.tick([b.br], 61_000);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toEqual({ event: 'guard_drop', bridge: 'br0', port: 'vm1', reason: 'arp_spoof', count: 600, total: 603, first: false });
    // A quiet window logs nothing; the next drop after it is logged at once.
    log.tick([b.br], 200_000);
    expect(lines).toHaveLength(2);
    b.drops('vm1')[Drop.arp_spoof] += 1;
    log.tick([b.br], 201_000);
    expect(lines[2]).toMatchObject({ count: 1, total: 604, first: false });
  });

  it('keeps ports and reasons apart; other drop reasons are not logged here', () => {
    const lines: GuardDropLine[] = [];
    const log = new GuardDropLog((l) => lines.push(l), 60_000);
    const b = fakeBridge('br0', ['vm1', 'vm2']);
    b.drops('vm1')[Drop.ip_source_guard] = 1;
    log.tick([b.br], 0);
    b.drops('vm1')[Drop.dhcp_guard] = 2;
    b.drops('vm2')[Drop.ip_source_guard] = 5;
    b.drops('vm2')[Drop.storm_control] = 7;
    b.drops('vm2')[Drop.bound_mac_conflict] = 1;
    b.drops('vm2')[Drop.vlan_not_allowed] = 100;
    b.drops('vm1')[Drop.ip_source_guard] = 9;
    log.tick([b.br], 1000);
    expect(lines.map((l) => `${l.port} ${l.reason} ${l.count} ${l.first}`)).toEqual([
      'vm1 ip_source_guard 1 true',
      'vm1 dhcp_guard 2 true',
      'vm2 ip_source_guard 5 true',
      'vm2 bound_mac_conflict 1 true',
      'vm2 storm_control 7 true',
    ]);
  });

  it('a port re-added under its name starts afresh', () => {
    const lines: GuardDropLine[] = [];
    const log = new GuardDropLog((l) => lines.push(l), 60_000);
    const b = fakeBridge('br0', ['vm1']);
    b.drops('vm1')[Drop.arp_spoof] = 4;
    log.tick([b.br], 0);
    b.replace('vm1');
    log.tick([b.br], 1000);
    b.drops('vm1')[Drop.arp_spoof] = 2;
    log.tick([b.br], 2000);
    expect(lines.map((l) => [l.count, l.total, l.first])).toEqual([[4, 4, true], [2, 2, true]]);
  });
});
