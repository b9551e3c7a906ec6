/*
 * The log format (log.ts): level names, the sd-daemon priority prefix for each
 * level, the JOURNAL_STREAM check against the fd's own device and inode, and
 * nothing lost at flush.
 */
import { closeSync, fstatSync, mkdtempSync, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { JOURNAL_PRIORITY, journalPrefix, makeLogger, stderrIsJournal } from './log.js';

describe('log format', () => {
  it('prefixes: fatal <2>, error <3>, warn <4>, info <6>, debug and trace <7>; nothing for a line we did not format', () => {
    expect(JOURNAL_PRIORITY).toEqual({ fatal: 2, error: 3, warn: 4, info: 6, debug: 7, trace: 7 });
    expect(journalPrefix('{"level":"warn","time":"x"}\n')).toBe('<4>');
    expect(journalPrefix('{"level":"fatal"}')).toBe('<2>');
    expect(journalPrefix('{"level":"verbose"}')).toBe('');
    expect(journalPrefix('{"time":1,"level":"warn"}')).toBe('');
    expect(journalPrefix('plain text')).toBe('');
  });

  it('JOURNAL_STREAM counts only when it names this very fd (device and inode)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vswitch-log-'));
    const fd = openSync(join(dir, 'a'), 'w');
    const other = openSync(join(dir, 'b'), 'w');
    try {
      const st = fstatSync(fd, { bigint: true });
      expect(stderrIsJournal(`${st.dev}:${st.ino}`, fd)).toBe(true);
      expect(stderrIsJournal(`${st.dev}:${st.ino}`, other)).toBe(false);
      expect(stderrIsJournal(undefined, fd)).toBe(false);
      expect(stderrIsJournal('', fd)).toBe(false);
      expect(stderrIsJournal('garbage', fd)).toBe(false);
    } finally {
      closeSync(fd);
      closeSync(other);
    }
  });

  it('lines carry the level by name; in the journal each starts with its priority; flush writes everything', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vswitch-log-'));
    for (const journal of [false, true]) {
      const path = join(dir, `out-${journal}`);
      const fd = openSync(path, 'w');
      const log = makeLogger('debug', { fd, journal });
      log.info({ event: 'a' }, 'a');
      log.warn({ event: 'b' }, 'b');
      log.error({ event: 'c' }, 'c');
      log.debug({ event: 'd' }, 'd');
      // pino's destination: a synchronous flush of what the asynchronous writer holds.
      // The first line's write is already in flight in libuv's pool when the others are
      // logged; flushSync writes the held ones at once and the pool's write lands when it
      // lands, so the file may hold the first line last (or not yet): wait for it, and
      // check each line's prefix against its own level rather than the order.
      const stream = Object.getOwnPropertySymbols(log).map((s) => (log as any)[s]).find((v) => v && typeof v.flushSync === 'function');
      stream.flushSync();
      let lines: string[] = [];
      for (let i = 0; i < 200; i++) {
        lines = readFileSync(path, 'utf8').split('\n').filter(Boolean);
        if (lines.length >= 4) break;
        await new Promise((r) => setTimeout(r, 10));
      }
      expect(lines).toHaveLength(4);
      const body = lines.map((l) => JSON.parse(journal ? l.slice(3) : l));
      expect(body.map((b) => b.level).sort()).toEqual(['debug', 'error', 'info', 'warn']);
      expect(body.map((b) => b.event).sort()).toEqual(['a', 'b', 'c', 'd']);
      for (let i = 0; i < 4; i++) {
        if (journal) expect(lines[i].slice(0, 3)).toBe(({ info: '<6>', warn: '<4>', error: '<3>', debug: '<7>' } as Record<string, string>)[body[i].level]);
        else expect(lines[i].slice(0, 10)).toBe('{"level":"');
      }
      closeSync(fd);
    }
  });
});
