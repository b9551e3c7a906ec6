import { describe, expect, it } from 'vitest';
import type { EvpnRoute } from './gobgp.js';
import { LimitRefused } from './refused.js';

const route = (mac: string): EvpnRoute => ({ type: 2, rd: '10.0.0.2:100', vni: 100, mac, nextHop: '10.0.0.2', rts: ['65000:100'], encap: 8, seq: 0, sticky: false, neighbor: '10.0.0.2' });

describe('routes refused for the remote-MAC limit', () => {
  it('keeps them up to the limit\'s worth; past it asks for a re-read instead', () => {
    const r = new LimitRefused(2);
    r.note('a', route('02:00:00:00:00:01'));
    r.note('b', route('02:00:00:00:00:02'));
    r.note('a', route('02:00:00:00:00:01')); // again: kept once
    expect([r.size, r.overflowed]).toEqual([2, 0]);
    r.note('c', route('02:00:00:00:00:03'));
    expect([r.size, r.overflowed]).toEqual([2, 1]);
    const d = r.drain();
    expect(d.routes.map((x) => x.mac)).toEqual(['02:00:00:00:00:01', '02:00:00:00:00:02']);
    expect(d.reread).toBe(true);
    expect([r.size, r.overflowed]).toEqual([0, 0]);
  });

  it('forgets a withdrawn (or since installed) route; nothing to re-read when all were kept', () => {
    const r = new LimitRefused(10);
    r.note('a', route('02:00:00:00:00:01'));
    r.note('b', route('02:00:00:00:00:02'));
    r.forget('a');
    expect(r.drain()).toEqual({ routes: [route('02:00:00:00:00:02')], reread: false });
    r.note('c', route('02:00:00:00:00:03'));
    r.clear();
    expect(r.drain()).toEqual({ routes: [], reread: false });
  });

  it('a raised max keeps more', () => {
    const r = new LimitRefused(1);
    r.note('a', route('02:00:00:00:00:01'));
    r.max = 3;
    r.note('b', route('02:00:00:00:00:02'));
    expect([r.size, r.overflowed]).toEqual([2, 0]);
  });
});
