/*
 * LogThrottle: the first event of a burst is logged at once, the rest of the
 * window as one line with their count; nothing is lost, nothing floods.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { LogThrottle } from './throttle.js';

describe('LogThrottle', () => {
  beforeEach(() => { vi.useFakeTimers(); });
  afterEach(() => { vi.useRealTimers(); });

  it('one line at once, then one per window with the count', () => {
    const lines: number[] = [];
    const t = new LogThrottle((n) => lines.push(n), 10_000);
    for (let i = 0; i < 1000; i++) t.hit();
    expect(lines).toEqual([1]);
    vi.advanceTimersByTime(10_000);
    expect(lines).toEqual([1, 999]);
    t.hit();
    expect(lines).toEqual([1, 999]);
    vi.advanceTimersByTime(10_000);
    expect(lines).toEqual([1, 999, 1]);
    vi.advanceTimersByTime(10_000);
    t.hit();
    expect(lines).toEqual([1, 999, 1, 1]);
  });

  it('flush logs what is pending', () => {
    const lines: number[] = [];
    const t = new LogThrottle((n) => lines.push(n), 10_000);
    t.hit();
    t.hit();
    t.hit();
    t.flush();
    expect(lines).toEqual([1, 2]);
  });
});
