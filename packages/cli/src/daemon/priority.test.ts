import os from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import { applyNice } from './priority.js';

// applyNice changes the calling thread's nice value: this test file's thread, put
// back after each case (going back down needs CAP_SYS_NICE, which root has; a
// non-root run checks the refusal instead).
const start = os.getPriority(0);
const root = process.getuid?.() === 0;
const warnings: Record<string, unknown>[] = [];
const log = { warn: (o: Record<string, unknown>) => void warnings.push(o) } as unknown as Parameters<typeof applyNice>[1];
afterEach(() => {
  warnings.length = 0;
  try { os.setPriority(0, start); } catch { /* non-root: stays lower, as the kernel allows */ }
});

describe('applyNice', () => {
  it('unset leaves the thread as started; the value it has already is no change', () => {
    expect(applyNice(undefined, log)).toEqual([]);
    expect(applyNice(start, log)).toEqual([]);
    expect(os.getPriority(0)).toBe(start);
    expect(warnings).toEqual([]);
  });

  it('a lower priority (higher nice) is set on this thread and reported as a change', () => {
    const want = Math.min(start + 3, 19);
    expect(applyNice(want, log)).toEqual([`nice ${start} -> ${want}`]);
    expect(os.getPriority(0)).toBe(want);
  });

  it('raising it (-10, what the systemd unit gives) needs CAP_SYS_NICE: set as root, a warning and no change without', () => {
    const changes = applyNice(-10, log);
    if (root) {
      expect(changes).toEqual([`nice ${start} -> -10`]);
      expect(os.getPriority(0)).toBe(-10);
      expect(warnings).toEqual([]);
    } else {
      expect(changes).toEqual([]);
      expect(os.getPriority(0)).toBe(start);
      expect(warnings).toMatchObject([{ event: 'nice_failed', nice: -10, current: start }]);
    }
  });
});
