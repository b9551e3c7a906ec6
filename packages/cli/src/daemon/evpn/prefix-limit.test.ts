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
