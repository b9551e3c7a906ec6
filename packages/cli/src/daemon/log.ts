/*
 * Structured logs: one JSON line per event that matters, on stderr. Never one per
 * frame: the bridges bound their own event rate (see @vswitch/switch bridge.ts).
 *
 * Format: `{"level":"warn","time":"...","pid":N,"event":"...",...}`: the level by
 * name (as journald, Loki and jq filters expect), first in the line. When stderr is
 * the journal's stream (systemd sets JOURNAL_STREAM to its device:inode, and we
 * check that it still is our fd 2: a child whose stderr went elsewhere inherits the
 * variable too), each line starts with its syslog priority as sd-daemon(3)'s SD_*
 * prefixes (`<4>` for warn), which journald strips and stores as PRIORITY, so
 * `journalctl -p warning` filters.
 *
 * Writes are asynchronous (pino's SonicBoom, sync: false): a slow or stuck reader of
 * stderr (a journald under load, a full pipe) never blocks the event loop that
 * forwards frames. The buffer is bounded (MAX_BUFFER): past it lines are dropped,
 * counted, and reported by a `log_lines_dropped` warning once the stream drains.
 * Nothing is lost on exit: pino flushes synchronously at process exit (also after an
 * uncaught exception), and `flushLog()` does it before the CLI prints a fatal error.
 */
import { fstatSync } from 'node:fs';
import pino from 'pino';

export type Logger = pino.Logger;
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';
export const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'];

/** Bytes of log lines held while stderr is not taking them; more are dropped and counted. */
export const MAX_BUFFER = 4 << 20;

/** sd-daemon(3) priorities: SD_CRIT for fatal, SD_ERR, SD_WARNING, SD_INFO, SD_DEBUG (trace too). */
export const JOURNAL_PRIORITY: Readonly<Record<LogLevel, number>> = { fatal: 2, error: 3, warn: 4, info: 6, debug: 7, trace: 7 };

const PREFIX = new Map<string, string>(Object.entries(JOURNAL_PRIORITY).map(([l, p]) => [l, `<${p}>`]));
const LEVEL_AT = '{"level":"'.length;

/** `<N>` for a formatted line (its level is the first key), or "" for a line we did not format. */
export function journalPrefix(line: string): string {
  if (!line.startsWith('{"level":"')) return '';
  return PREFIX.get(line.slice(LEVEL_AT, line.indexOf('"', LEVEL_AT))) ?? '';
}

/**
 * Is fd 2 the journal stream systemd announced in `journalStream` ("DEV:INODE",
 * systemd.exec(5) $JOURNAL_STREAM)? Both numbers are compared, as sd_journal_stream_fd
 * users are told to.
 */
export function stderrIsJournal(journalStream: string | undefined, fd = 2): boolean {
  const m = /^(\d+):(\d+)$/.exec(journalStream ?? '');
  if (m === null) return false;
  try {
    const st = fstatSync(fd, { bigint: true });
    return st.dev === BigInt(m[1]) && st.ino === BigInt(m[2]);
  } catch {
    return false;
  }
}

let destination: ReturnType<typeof pino.destination> | undefined;

export interface LoggerOptions {
  /** Default: the environment's JOURNAL_STREAM, checked against fd 2. */
  journal?: boolean;
  /** Where to write (default fd 2); tests pass another fd. */
  fd?: number;
  /** Synchronous writes (default false). */
  sync?: boolean;
}

export function makeLogger(level: LogLevel, opts: LoggerOptions = {}): Logger {
  const fd = opts.fd ?? 2;
  const journal = opts.journal ?? stderrIsJournal(process.env.JOURNAL_STREAM, fd);
  const dest = pino.destination({ fd, sync: opts.sync ?? false, maxLength: MAX_BUFFER });
  if (fd === 2) destination = dest;
  let dropped = 0;
  const log = pino({
    level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    ...(journal ? { hooks: { streamWrite: (s: string) => journalPrefix(s) + s } } : {}),
  }, dest);
  dest.on('drop', () => {
    // The first drop of an episode arms one report for when the stream takes lines again.
    if (dropped++ === 0) {
      dest.once('drain', () => {
        const n = dropped;
        dropped = 0;
        log.warn({ event: 'log_lines_dropped', count: n, maxBuffer: MAX_BUFFER }, 'log_lines_dropped: stderr did not keep up');
      });
    }
  });
  return log;
}

/** Writes out what the daemon's logger still holds, synchronously (before a fatal message on stderr, or an exit). */
export function flushLog(): void {
  try {
    destination?.flushSync();
  } catch { /* stderr gone: nothing to save */ }
}
