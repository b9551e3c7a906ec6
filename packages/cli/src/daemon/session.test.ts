import { describe, expect, it } from 'vitest';
import { applyAutogroupNice, applyOwnSession, autogroupNice, autogroupText, memoryReducerOn, type SessionInfo, statSession } from './session.js';

describe('statSession', () => {
  it('reads field 6 after the name, whatever the name holds', () => {
    expect(statSession('4242 (node) S 1 4242 4100 34816 4242 4194560 0\n')).toBe(4100);
    expect(statSession('77 (a) b) c) R 5 77 9 0 -1 0\n')).toBe(9);
  });
  it('throws on a line without one', () => {
    expect(() => statSession('garbage')).toThrow(/no session/);
  });
});

describe('autogroupText', () => {
  it('trims, and empty or missing is null', () => {
    expect(autogroupText('/autogroup-12 nice 0\n')).toBe('/autogroup-12 nice 0');
    expect(autogroupText('')).toBeNull();
    expect(autogroupText(undefined)).toBeNull();
  });
});

describe('applyOwnSession', () => {
  const logs: unknown[] = [];
  const log = { warn: (o: unknown) => { logs.push(o); } };
  const state = (sid: number, group: string | null): SessionInfo => ({ pid: 50, sid, own: sid === 50, autogroup: group });

  it('does nothing unless asked, or when the daemon leads its session already', () => {
    let calls = 0;
    const setsid = (): number => { calls++; return 50; };
    expect(applyOwnSession(undefined, log, setsid, () => state(7, null))).toEqual([]);
    expect(applyOwnSession(false, log, setsid, () => state(7, null))).toEqual([]);
    expect(applyOwnSession(true, log, setsid, () => state(50, null))).toEqual([]);
    expect(calls).toBe(0);
  });

  it('starts a session and names the change with the new autogroup', () => {
    let sid = 7;
    const setsid = (): number => { sid = 50; return 50; };
    expect(applyOwnSession(true, log, setsid, () => state(sid, sid === 50 ? '/autogroup-31 nice 0' : '/autogroup-3 nice 0')))
      .toEqual(['session 7 -> 50 (/autogroup-31)']);
  });

  it('a refused setsid (a process-group leader) is a warning with the way out, not an error', () => {
    logs.length = 0;
    const setsid = (): number => { throw Object.assign(new Error('setsid: Operation not permitted'), { code: 'EPERM' }); };
    expect(applyOwnSession(true, log, setsid, () => state(7, null))).toEqual([]);
    expect(logs).toEqual([expect.objectContaining({ event: 'own_session_failed', sid: 7, hint: expect.stringMatching(/setsid\(1\)/) })]);
  });
});

describe('memoryReducerOn', () => {
  it('off with --no-memory-reducer (either spelling), the last of several flags wins, on by default', () => {
    expect(memoryReducerOn([])).toBe(true);
    expect(memoryReducerOn(['--no-memory-reducer'])).toBe(false);
    expect(memoryReducerOn(['--no_memory_reducer'])).toBe(false);
    expect(memoryReducerOn(['--no-memory-reducer', '--memory-reducer'])).toBe(true);
    expect(memoryReducerOn(['--perf-basic-prof', '--no-memory-reducer'])).toBe(false);
    expect(memoryReducerOn(['--no-memory-reducer-for-small-heaps'])).toBe(true);
  });
});

describe('autogroupNice', () => {
  it('reads the group\'s nice, negative too; none without one', () => {
    expect(autogroupNice('/autogroup-12 nice 0')).toBe(0);
    expect(autogroupNice('/autogroup-12 nice -10')).toBe(-10);
    expect(autogroupNice('/autogroup-12')).toBeUndefined();
    expect(autogroupNice(null)).toBeUndefined();
  });
});

describe('applyAutogroupNice', () => {
  const logs: Record<string, unknown>[] = [];
  const log = { warn: (o: Record<string, unknown>) => { logs.push(o); } };
  const state = (sid: number, group: string | null) => (): SessionInfo => ({ pid: 50, sid, own: sid === 50, autogroup: group });

  it('gives its own session\'s group the loop\'s nice, once', () => {
    const wrote: string[] = [];
    expect(applyAutogroupNice(-10, log, state(50, '/autogroup-7 nice 0'), (t) => { wrote.push(t); })).toEqual(['autogroup nice 0 -> -10']);
    expect(wrote).toEqual(['-10']);
    expect(applyAutogroupNice(-10, log, state(50, '/autogroup-7 nice -10'), (t) => { wrote.push(t); })).toEqual([]);
    expect(wrote).toEqual(['-10']);
  });

  it('leaves a group it shares (its starter\'s session) and a kernel without autogroups alone', () => {
    const write = (): void => { throw new Error('must not write'); };
    expect(applyAutogroupNice(-10, log, state(7, '/autogroup-3 nice 0'), write)).toEqual([]);
    expect(applyAutogroupNice(-10, log, state(50, null), write)).toEqual([]);
    expect(logs).toEqual([]);
  });

  it('a refusal (no CAP_SYS_NICE, or the kernel\'s 100 ms limit) is a warning and no change', () => {
    const write = (): void => { throw Object.assign(new Error('EPERM: operation not permitted'), { code: 'EPERM' }); };
    expect(applyAutogroupNice(-5, log, state(50, '/autogroup-7 nice 0'), write)).toEqual([]);
    expect(logs).toMatchObject([{ event: 'autogroup_nice_failed', nice: -5, current: 0, autogroup: '/autogroup-7 nice 0' }]);
  });
});
