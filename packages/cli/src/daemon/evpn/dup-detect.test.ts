import { describe, expect, it } from 'vitest';
import { DUP_DETECT_DEFAULTS, DupDetector } from './dup-detect.js';

const S = 1000;

describe('DupDetector: duplicate MAC detection over move events (RFC 7432 §15.1)', () => {
  it('defaults: the 5th move within 180 s flags the MAC; later moves are held until cleared', () => {
    expect(DUP_DETECT_DEFAULTS).toEqual({ maxMoves: 5, windowSeconds: 180, freeze: 'permanent' });
    const d = new DupDetector();
    const r = [0, 1, 2, 3].map((i) => d.move(100, 7, i % 2 ? 'local' : '10.0.0.3', i * 10 * S));
    expect(r).toEqual(['counted', 'counted', 'counted', 'counted']);
    expect(d.held(100, 7, 40 * S)).toBe(false);
    expect(d.move(100, 7, 'local', 50 * S)).toBe('detected');
    expect(d.detectedTotal).toBe(1);
    expect(d.held(100, 7, 51 * S)).toBe(true);
    expect(d.held(100, 8, 51 * S)).toBe(false);
    expect(d.held(101, 7, 51 * S)).toBe(false);
    expect(d.move(100, 7, '10.0.0.3', 60 * S)).toBe('held');
    // Permanent: a day later still held, never swept.
    expect(d.sweep(86_400 * S)).toEqual([]);
    expect(d.held(100, 7, 86_400 * S)).toBe(true);
    expect(d.duplicates(100)).toMatchObject([{ vni: 100, mac: 7, moves: 5, detectedAt: 50 * S, to: 'local', held: 1 }]);
    expect(d.duplicates(101)).toEqual([]);
    expect(d.clear(7).map((e) => e.mac)).toEqual([7]);
    expect(d.held(100, 7, 86_401 * S)).toBe(false);
    expect(d.size).toBe(0);
    // After a clear the count starts again.
    expect(d.move(100, 7, 'local', 86_402 * S)).toBe('counted');
  });

  it('a move after the window starts a new one at 1; sweep drops entries whose window passed', () => {
    const d = new DupDetector({ maxMoves: 3, windowSeconds: 10, freeze: 'permanent' });
    expect(d.move(1, 1, 'local', 0)).toBe('counted');
    expect(d.move(1, 1, 'x', 5 * S)).toBe('counted');
    expect(d.move(1, 1, 'local', 11 * S)).toBe('counted'); // window 0-10 s passed: 1 of a new one
    expect(d.move(1, 1, 'x', 15 * S)).toBe('counted');
    expect(d.move(1, 1, 'local', 20 * S)).toBe('detected');
    expect(d.move(2, 2, 'local', 20 * S)).toBe('counted');
    expect(d.sweep(25 * S)).toEqual([]);
    expect(d.size).toBe(2);
    expect(d.sweep(31 * S)).toEqual([]);
    expect(d.size).toBe(1); // (2, 2) aged out; the flagged one stays
    expect(d.flagged(1, 1)).toBe(true);
  });

  it('freeze N s: held for N s after the detection, then released by the sweep (returned) or by the next move', () => {
    const d = new DupDetector({ maxMoves: 2, windowSeconds: 60, freeze: 30 });
    d.move(1, 1, 'local', 0);
    expect(d.move(1, 1, 'x', S)).toBe('detected');
    expect(d.held(1, 1, 30 * S)).toBe(true);
    expect(d.held(1, 1, 31 * S)).toBe(false);
    expect(d.sweep(20 * S)).toEqual([]);
    expect(d.sweep(31 * S).map((e) => e.mac)).toEqual([1]);
    expect(d.size).toBe(0);
    d.move(1, 2, 'local', 0);
    d.move(1, 2, 'x', S);
    expect(d.move(1, 2, 'local', 40 * S)).toBe('counted'); // ran out before any sweep: a fresh window
  });

  it('freeze off: flagged and counted, never held; the flag stays until cleared', () => {
    const d = new DupDetector({ maxMoves: 2, windowSeconds: 60, freeze: false });
    d.move(1, 1, 'local', 0);
    expect(d.move(1, 1, 'x', S)).toBe('detected');
    expect(d.held(1, 1, 2 * S)).toBe(false);
    expect(d.move(1, 1, 'local', 2 * S)).toBe('flagged');
    expect(d.sweep(3600 * S)).toEqual([]);
    expect(d.flagged(1, 1)).toBe(true);
    expect(d.clear(undefined, 2)).toEqual([]);
    expect(d.clear(undefined, 1)).toHaveLength(1);
  });

  it('bounded: a new MAC past the cap is not tracked and counted; turning detection off forgets all', () => {
    const d = new DupDetector({ maxMoves: 2, windowSeconds: 60, freeze: 'permanent' }, 3);
    for (let m = 0; m < 3; m++) d.move(1, m, 'local', 0);
    expect(d.move(1, 9, 'local', 0)).toBe('untracked');
    expect(d.untracked).toBe(1);
    expect(d.move(1, 0, 'x', S)).toBe('detected'); // known MACs still count
    expect(d.size).toBe(3);
    expect(d.configure(false).map((e) => e.mac)).toEqual([0]);
    expect(d.size).toBe(0);
    expect(d.move(1, 0, 'x', 2 * S)).toBe('off');
    expect(d.held(1, 0, 2 * S)).toBe(false);
  });
});
