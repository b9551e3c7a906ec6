import { afterEach, describe, expect, it, vi } from 'vitest';
import { backoffMs, nextStreak, Retrier } from './recover.js';

describe('backoffMs', () => {
  it('is at once, then 1 s doubling to 30 s', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 7, 100].map((n) => backoffMs(n))).toEqual([0, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  });
  it('takes other bounds', () => {
    expect([0, 1, 2, 3].map((n) => backoffMs(n, 100, 250))).toEqual([0, 100, 200, 250]);
    expect(backoffMs(-1)).toBe(0);
    expect(backoffMs(Number.NaN)).toBe(0);
  });
});

describe('Retrier', () => {
  afterEach(() => { vi.useRealTimers(); });

  it('retries on the backoff schedule until the attempt succeeds', () => {
    vi.useFakeTimers();
    const times: number[] = [];
    let left = 3;
    const r = new Retrier(() => { times.push(Date.now()); return --left < 0 ? true : `fail ${left}`; }, (n) => backoffMs(n));
    const t0 = Date.now();
    r.begin();
    vi.advanceTimersByTime(0);
    expect(times.map((t) => t - t0)).toEqual([0]);
    expect(r.active).toBe(true);
    expect(r.lastError).toBe('fail 2');
    vi.advanceTimersByTime(1000 + 2000 + 4000);
    expect(times.map((t) => t - t0)).toEqual([0, 1000, 3000, 7000]);
    expect(r.active).toBe(false);
    expect(r.lastError).toBe('');
    vi.advanceTimersByTime(60_000);
    expect(times.length).toBe(4);
  });

  it('counts a throw as a failure and stops on cancel', () => {
    vi.useFakeTimers();
    let n = 0;
    const r = new Retrier(() => { n++; throw new Error('EBUSY'); }, () => 1000);
    r.begin();
    vi.advanceTimersByTime(3500);
    expect(n).toBe(3);
    expect(r.lastError).toBe('EBUSY');
    r.begin(); // already running: no second schedule
    r.cancel();
    vi.advanceTimersByTime(10_000);
    expect(n).toBe(3);
    expect(r.active).toBe(false);
  });

  it('a cancel from inside the attempt sticks', () => {
    vi.useFakeTimers();
    let n = 0;
    const r: Retrier = new Retrier(() => { n++; r.cancel(); return 'x'; }, () => 10);
    r.begin();
    vi.advanceTimersByTime(100);
    expect(n).toBe(1);
    expect(r.active).toBe(false);
  });
});

describe('nextStreak', () => {
  it('continues the backoff when the device vanishes again soon after recovering', () => {
    expect(nextStreak(0, 100)).toBe(1);
    expect(nextStreak(3, 4999)).toBe(4);
    expect(nextStreak(3, 5000)).toBe(0);
    expect(nextStreak(5, Infinity)).toBe(0);
  });

  it('begin(n) waits delay(n) first', () => {
    vi.useFakeTimers();
    let n = 0;
    const r = new Retrier(() => { n++; return true; }, (k) => backoffMs(k));
    r.begin(3);
    vi.advanceTimersByTime(3999);
    expect(n).toBe(0);
    vi.advanceTimersByTime(1);
    expect(n).toBe(1);
    vi.useRealTimers();
  });
});
