import { describe, expect, it } from 'vitest';
import { HeldFrames } from './held-frames.js';

const LIMITS = { pendingPerIp: 3, pendingIps: 2, pendingBytes: 1000, retryMs: 1000 };
const frame = (n: number, tag = 0): Uint8Array => new Uint8Array(n).fill(tag);

describe('HeldFrames', () => {
  it('asks on the first packet, then once per retryMs', () => {
    const h = new HeldFrames<number>(LIMITS, { pendingDropped: 0 });
    expect(h.hold(1, frame(10), 0)).toBe(true);
    expect(h.hold(1, frame(10), 999)).toBe(false);
    expect(h.hold(1, frame(10), 1000)).toBe(true);
  });

  it('keeps the newest pendingPerIp frames of an address, counting the ones it gives up', () => {
    const c = { pendingDropped: 0 };
    const h = new HeldFrames<number>(LIMITS, c);
    for (let i = 1; i <= 5; i++) h.hold(7, frame(10, i), i);
    expect(c.pendingDropped).toBe(2);
    expect(h.take(7).map((f) => f[0])).toEqual([3, 4, 5]);
    expect(h.take(7)).toEqual([]);
    expect(h.bytes).toBe(0);
  });

  it('does not hold a frame past the byte bound', () => {
    const c = { pendingDropped: 0 };
    const h = new HeldFrames<number>(LIMITS, c);
    h.hold(1, frame(600), 0);
    h.hold(2, frame(600), 0);
    expect(c.pendingDropped).toBe(1);
    expect(h.bytes).toBe(600);
    expect(h.take(2)).toEqual([]);
  });

  it('evicts the oldest address with its frames when pendingIps are waiting', () => {
    const c = { pendingDropped: 0 };
    const h = new HeldFrames<string>(LIMITS, c);
    h.hold('a', frame(10), 0);
    h.hold('a', frame(10), 0);
    h.hold('b', frame(10), 0);
    h.hold('c', frame(10), 0);
    expect(h.size).toBe(2);
    expect(c.pendingDropped).toBe(2);
    expect(h.take('a')).toEqual([]);
    expect(h.bytes).toBe(20);
  });
});
