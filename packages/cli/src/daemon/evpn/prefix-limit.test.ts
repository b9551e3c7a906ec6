import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Logger } from '../log.js';
import { PrefixLimits } from './prefix-limit.js';

function logger(): Logger & { events: string[] } {
  const events: string[] = [];
  const l = { events, info: (o: { event: string }) => events.push(o.event), warn: (o: { event: string }) => events.push(o.event), error: (o: { event: string }) => events.push(o.event) };
  return l as unknown as Logger & { events: string[] };
}

describe('EVPN per-neighbour route limits (gobgpd\'s PFX_CT hold-down)', () => {
  afterEach(() => { vi.useRealTimers(); });

  it('counts a hit once per hold-down, logs it, and lets the neighbour connect again after maxPrefixesRestart', () => {
    vi.useFakeTimers();
    const log = logger();
    const enabled: string[] = [];
    const l = new PrefixLimits(log, (a) => enabled.push(a));
    l.configure([{ address: '10.0.0.2', maxPrefixes: 50, maxPrefixesRestart: 30 }]);
    l.observe('10.0.0.2', false, 10);
    expect(l.view('10.0.0.2')).toMatchObject({ maxPrefixes: 50, exceeded: 0, heldDown: false, lastExceeded: '' });
    l.observe('10.0.0.2', true, 0);
    l.observe('10.0.0.2', true, 0); // the next poll: the same hold-down
    expect(l.view('10.0.0.2')).toMatchObject({ exceeded: 1, heldDown: true });
    expect(l.view('10.0.0.2')!.restartAt).not.toBe('');
    expect(log.events).toEqual(['evpn_prefix_limit_exceeded']);
    vi.advanceTimersByTime(29_000);
    expect(enabled).toEqual([]);
    vi.advanceTimersByTime(1_000);
    expect(enabled).toEqual(['10.0.0.2']);
    expect(l.view('10.0.0.2')).toMatchObject({ restartAt: '' });
    // Up again, then over the limit again: a second hit.
    l.observe('10.0.0.2', false);
    l.observe('10.0.0.2', true);
    expect(l.view('10.0.0.2')).toMatchObject({ exceeded: 2, heldDown: true });
    l.close();
  });

  it('a neighbour that floods again soon after each restart waits twice as long each time, up to 16×; one that stays up, or a reload, starts over', () => {
    vi.useFakeTimers();
    const enabled: string[] = [];
    const l = new PrefixLimits(logger(), (a) => enabled.push(a));
    l.configure([{ address: '10.0.0.2', maxPrefixes: 50, maxPrefixesRestart: 10 }]);
    const waits: number[] = [];
    // Hit, wait out the hold-down, come back, hit again 1 minute later: six times.
    for (let i = 0; i < 6; i++) {
      l.observe('10.0.0.2', true);
      waits.push(l.view('10.0.0.2')!.restartInS);
      const before = enabled.length;
      vi.advanceTimersByTime(l.view('10.0.0.2')!.restartInS * 1000 - 1);
      expect(enabled.length).toBe(before); // not a millisecond early
      vi.advanceTimersByTime(1);
      expect(enabled.length).toBe(before + 1);
      l.observe('10.0.0.2', false);
      vi.advanceTimersByTime(60_000);
    }
    expect(waits).toEqual([10, 20, 40, 80, 160, 160]);
    expect(l.view('10.0.0.2')).toMatchObject({ exceeded: 6, repeats: 6 });
    // Connected for longer than the repeat window: the next hit starts over.
    vi.advanceTimersByTime(31 * 60_000);
    l.observe('10.0.0.2', true);
    expect(l.view('10.0.0.2')).toMatchObject({ restartInS: 10, repeats: 1 });
    vi.advanceTimersByTime(10_000);
    l.observe('10.0.0.2', false);
    l.observe('10.0.0.2', true);
    expect(l.view('10.0.0.2')).toMatchObject({ restartInS: 20, repeats: 2 });
    // A reload that changes the limit forgets the streak.
    l.configure([{ address: '10.0.0.2', maxPrefixes: 60, maxPrefixesRestart: 10 }]);
    l.release('10.0.0.2', 'reload');
    l.observe('10.0.0.2', false);
    l.configure([{ address: '10.0.0.2', maxPrefixes: 70, maxPrefixesRestart: 10 }]);
    l.observe('10.0.0.2', true);
    expect(l.view('10.0.0.2')).toMatchObject({ restartInS: 10, repeats: 1 });
    l.close();
  });

  it('with maxPrefixesRestart 0 stays down until a reload changes the limit; counts survive the reload', () => {
    vi.useFakeTimers();
    const enabled: string[] = [];
    const l = new PrefixLimits(logger(), (a) => enabled.push(a));
    l.configure([{ address: '10.0.0.2', maxPrefixes: 50, maxPrefixesRestart: 0 }, { address: '10.0.0.3', maxPrefixes: 50, maxPrefixesRestart: 0 }]);
    l.observe('10.0.0.2', true);
    vi.advanceTimersByTime(86_400_000);
    expect(enabled).toEqual([]);
    expect(l.view('10.0.0.2')).toMatchObject({ heldDown: true, restartAt: '' });
    // Unchanged: nothing to do; changed: reported, and the service releases it.
    expect(l.configure([{ address: '10.0.0.2', maxPrefixes: 50, maxPrefixesRestart: 0 }, { address: '10.0.0.3', maxPrefixes: 50, maxPrefixesRestart: 0 }])).toEqual([]);
    expect(l.configure([{ address: '10.0.0.2', maxPrefixes: 500, maxPrefixesRestart: 0 }])).toEqual(['10.0.0.2']);
    expect(l.view('10.0.0.3')).toBeUndefined();
    l.release('10.0.0.2', 'reload');
    expect(enabled).toEqual(['10.0.0.2']);
    expect(l.view('10.0.0.2')).toMatchObject({ maxPrefixes: 500, exceeded: 1 });
  });

  it('a new gobgpd holds nobody down: reset stops the timers, keeps the counts; unknown neighbours are ignored', () => {
    vi.useFakeTimers();
    const enabled: string[] = [];
    const l = new PrefixLimits(logger(), (a) => enabled.push(a));
    l.configure([{ address: '10.0.0.2', maxPrefixes: 5, maxPrefixesRestart: 10 }]);
    l.observe('10.0.0.9', true);
    l.observe('10.0.0.2', true);
    l.reset();
    vi.advanceTimersByTime(20_000);
    expect(enabled).toEqual([]);
    expect(l.view('10.0.0.2')).toMatchObject({ exceeded: 1, heldDown: false });
    expect(l.entries().map(([a]) => a)).toEqual(['10.0.0.2']);
  });

  it('a peer the daemon did not add (an operator\'s gobgpd) is counted but never restarted from here', () => {
    vi.useFakeTimers();
    const enabled: string[] = [];
    const l = new PrefixLimits(logger(), (a) => enabled.push(a), () => false);
    l.configure([{ address: '10.0.0.2', maxPrefixes: 5, maxPrefixesRestart: 10 }]);
    l.observe('10.0.0.2', true);
    expect(l.view('10.0.0.2')).toMatchObject({ exceeded: 1, heldDown: true, restartAt: '' });
    vi.advanceTimersByTime(20_000);
    l.release('10.0.0.2', 'reload');
    expect(enabled).toEqual([]);
  });
});
