/*
 * The control socket: a Unix stream socket speaking newline-delimited JSON, one
 * response per request, in order. Access is the socket file's mode (0600 by
 * default: root only); it is created under a restrictive umask so it is never
 * briefly open to all.
 *
 * The path: a stale socket from a crashed daemon (a socket of ours nobody answers
 * on) is replaced; a live one is refused; anything else there (a regular file, a
 * directory, a symlink, a socket of another user) is not ours to delete: the
 * daemon refuses to start and names it.
 *
 * Bounds, so that one client cannot grow the daemon or starve the others (the
 * socket shares the forwarding loop):
 * - connections: at most `maxConnections` at once; one more gets an EAGAIN error
 *   line and is closed (the CLI retries such a refusal for up to its timeout);
 * - request size: a line longer than `maxRequestBytes` gets an E2BIG error line
 *   and the connection is closed (nothing after it can be trusted to be a request);
 * - back-pressure: requests are answered one at a time, and while a client's
 *   replies are not being read (the socket's write buffer is over its high-water
 *   mark) the daemon stops reading from that client until it drains. A client that
 *   pipelines requests and never reads thus holds at most one chunk of requests and
 *   one buffer of replies, and its own writes block.
 * Commands are looked up as own properties of the handler table only
 * (`lookupCommand`): "constructor" or "__proto__" are unknown commands, not
 * Object.prototype's members.
 *
 * Streams: a command may answer with a `Stream` (`monitor`): the connection gets its
 * `ok` reply, then belongs to the stream (events written by monitor.ts, which bounds
 * what it queues); nothing more is read from it as requests.
 */
import { chmodSync, lstatSync, mkdirSync, unlinkSync, type Stats } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { errorCode, errorMessage, VswitchError } from '../errors.js';
import { LineReader, TOO_LONG } from './lines.js';
import type { Logger } from './log.js';
import { LogThrottle } from './throttle.js';

export type Dispatch = (cmd: string, args: Record<string, unknown>) => unknown;

/** A command's answer that turns the connection into an event stream: `attach` gets the socket after the `ok` reply. */
export class Stream {
  constructor(readonly attach: (sock: Socket) => void) {}
}

export interface ControlLimits {
  maxConnections: number;
  maxRequestBytes: number;
}

export const DEFAULT_CONTROL_LIMITS: ControlLimits = { maxConnections: 64, maxRequestBytes: 65536 };

export interface ControlStats {
  /** Connections open now. */
  connections: number;
  /** Connections refused because `maxConnections` were open. */
  refused: number;
  /** Requests answered (errors included). */
  requests: number;
  /** Connections closed for a request over `maxRequestBytes`. */
  tooLong: number;
  /** Times reading from a client stopped because it did not read its replies. */
  pauses: number;
}

export interface ControlServer {
  readonly server: Server;
  readonly stats: ControlStats;
  readonly limits: ControlLimits;
  /** New limits for new connections and requests; returns what changed, for the reload report. */
  configure(limits: ControlLimits): string[];
  close(): void;
}

/** The handler for `cmd` if `table` has it as an own property: never an inherited member such as "constructor". */
export function lookupCommand<T>(table: Record<string, T>, cmd: string): T | undefined {
  return Object.hasOwn(table, cmd) ? table[cmd] : undefined;
}

function kindOf(st: Stats): string {
  if (st.isSymbolicLink()) return 'a symbolic link';
  if (st.isDirectory()) return 'a directory';
  if (st.isFile()) return 'a regular file';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device node';
  return 'not a socket';
}

/**
 * Makes `path` free for a new control socket, or throws: absent is fine; a socket
 * of this user that nobody answers on (a crashed daemon's) is removed; a live
 * socket, and anything that is not a socket this daemon could have created, is
 * left untouched and refused with the reason.
 */
export async function prepareControlPath(path: string): Promise<void> {
  let st: Stats;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new VswitchError('EEXIST', `control socket ${path}: ${errorMessage(e)}`);
  }
  const refuse = (what: string): never => {
    throw new VswitchError('EEXIST', `control socket ${path} exists and is ${what}, not a socket this daemon created: `
      + 'refusing to replace it (remove it yourself, or choose another path with --socket or control.socket)');
  };
  if (!st.isSocket()) refuse(kindOf(st));
  const uid = process.geteuid?.();
  if (uid !== undefined && st.uid !== uid) refuse(`a socket owned by uid ${st.uid} (this daemon runs as uid ${uid})`);
  const probe = await probeSocket(path);
  if (probe === 'live') throw new VswitchError('EADDRINUSE', `another vswitch daemon is listening on ${path}`);
  if (probe !== 'stale') throw new VswitchError('EEXIST', `control socket ${path} exists and cannot be probed (${probe}): refusing to replace it`);
  unlinkSync(path);
}

/** 'live' if something accepts on `path`, 'stale' if nothing listens (ECONNREFUSED) or it vanished, else the error code. */
function probeSocket(path: string): Promise<string> {
  return new Promise((resolve) => {
    const c = createConnection(path);
    c.once('connect', () => {
      c.destroy();
      resolve('live');
    });
    c.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED' || e.code === 'ENOENT' ? 'stale' : e.code ?? e.message));
  });
}

export async function listenControl(
  path: string, mode: number, dispatch: Dispatch, log: Logger, initial: ControlLimits = DEFAULT_CONTROL_LIMITS,
): Promise<ControlServer> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  await prepareControlPath(path);
  const limits = { ...initial };
  const stats: ControlStats = { connections: 0, refused: 0, requests: 0, tooLong: 0, pauses: 0 };
  const refusedLog = new LogThrottle((count) => log.warn(
    { event: 'control_connections_refused', count, limit: limits.maxConnections },
    'control_connections_refused'));
  const tooLongLog = new LogThrottle((count) => log.warn(
    { event: 'control_request_too_long', count, limit: limits.maxRequestBytes },
    'control_request_too_long'));
  const socks = new Set<Socket>();

  const server = createServer({ allowHalfOpen: true }, (sock) => {
    if (stats.connections >= limits.maxConnections) {
      stats.refused++;
      refusedLog.hit();
      sock.on('error', () => sock.destroy());
      // One short line always fits the socket buffer: written at once, then the fd is released.
      sock.end(errorLine('EAGAIN', `too many control connections (limit ${limits.maxConnections}); try again`));
      sock.once('finish', () => sock.destroy());
      return;
    }
    stats.connections++;
    socks.add(sock);
    sock.once('close', () => {
      stats.connections--;
      socks.delete(sock);
    });
    serve(sock, dispatch, log, limits, stats, () => tooLongLog.hit());
  });
  const old = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } finally {
    process.umask(old);
  }
  server.on('error', (e) => log.error({ event: 'control_error', err: e.message }, 'control_error'));
  chmodSync(path, mode);
  return {
    server,
    stats,
    limits,
    configure(next: ControlLimits): string[] {
      const changes: string[] = [];
      for (const k of ['maxConnections', 'maxRequestBytes'] as const) {
        if (limits[k] !== next[k]) changes.push(`control.${k} ${limits[k]} -> ${next[k]}`);
        limits[k] = next[k];
      }
      return changes;
    },
    close(): void {
      server.close();
      for (const s of socks) s.destroy();
      refusedLog.flush();
      tooLongLog.flush();
    },
  };
}

function errorLine(code: string, message: string): string {
  return JSON.stringify({ id: null, ok: false, error: { code, message } }) + '\n';
}

function serve(sock: Socket, dispatch: Dispatch, log: Logger, limits: ControlLimits, stats: ControlStats, tooLong: () => void): void {
  const reader = new LineReader(limits.maxRequestBytes);
  let paused = false;
  let ended = false;
  let done = false;

  /** Answers buffered requests until none is complete or the client stops reading its replies. */
  const pump = (): void => {
    while (!done && !sock.destroyed) {
      if (sock.writableNeedDrain) {
        if (!paused) {
          paused = true;
          stats.pauses++;
          sock.pause();
          sock.once('drain', () => {
            paused = false;
            pump();
            if (!paused && !done) sock.resume();
          });
        }
        return;
      }
      const line = reader.next();
      if (line === undefined) break;
      if (line === TOO_LONG) {
        done = true;
        stats.tooLong++;
        tooLong();
        sock.end(errorLine('E2BIG', `request longer than ${limits.maxRequestBytes} bytes: closing the connection`));
        sock.once('finish', () => sock.destroy());
        return;
      }
      if (line.trim() === '') continue;
      stats.requests++;
      const res = handle(line, dispatch, log);
      if (res.result instanceof Stream) {
        done = true;
        sock.write(JSON.stringify({ ...res, result: null }) + '\n');
        // What the client sends from now on is not read as requests; its close ends the stream.
        sock.removeAllListeners('data');
        sock.resume();
        sock.on('data', () => {});
        sock.on('end', () => sock.end());
        res.result.attach(sock);
        return;
      }
      sock.write(JSON.stringify(res) + '\n');
    }
    // The client closed its side and every whole request it sent is answered: close ours.
    if (ended && !done && !sock.destroyed) {
      done = true;
      sock.end();
    }
  };

  sock.on('error', () => sock.destroy());
  sock.on('data', (chunk: Buffer) => {
    reader.push(chunk);
    pump();
  });
  sock.on('end', () => {
    ended = true;
    if (!paused) pump();
  });
}

function handle(line: string, dispatch: Dispatch, log: Logger): { id: unknown; ok: boolean; result?: unknown; error?: unknown } {
  let id: unknown = null;
  try {
    const req: unknown = JSON.parse(line);
    if (req === null || typeof req !== 'object' || Array.isArray(req)) throw new VswitchError('EINVAL', 'a request is a JSON object: {"id":1,"cmd":"show","args":{}}');
    const r = req as { id?: unknown; cmd?: unknown; args?: unknown };
    id = Object.hasOwn(r, 'id') ? r.id ?? null : null;
    if (typeof r.cmd !== 'string') throw new VswitchError('EINVAL', 'request needs a string "cmd"');
    if (r.args !== undefined && (r.args === null || typeof r.args !== 'object' || Array.isArray(r.args))) {
      throw new VswitchError('EINVAL', '"args" must be an object');
    }
    // A prototype-free copy: a handler reading args.x never finds Object.prototype's members.
    const args = Object.assign(Object.create(null) as Record<string, unknown>, r.args);
    const result = dispatch(r.cmd, args);
    return { id, ok: true, result: result ?? null };
  } catch (e) {
    const code = e instanceof SyntaxError ? 'EINVAL' : errorCode(e);
    if (code === 'EINTERNAL') log.error({ event: 'control_error', err: e }, 'control_error');
    return { id, ok: false, error: { code, message: errorMessage(e) } };
  }
}
