/*
 * The control socket: a Unix stream socket speaking newline-delimited JSON, one
 * response per request. Access is the socket file's mode (0600 by default: root
 * only); it is created under a restrictive umask so it is never briefly open to
 * all. A stale socket from a crashed daemon is replaced; a live one is refused.
 */
import { chmodSync, existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { errorCode, errorMessage, VswitchError } from '../errors.js';
import type { Logger } from './log.js';

const MAX_LINE = 1 << 20;

export type Dispatch = (cmd: string, args: Record<string, unknown>) => unknown;

export async function listenControl(path: string, mode: number, dispatch: Dispatch, log: Logger): Promise<Server> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  if (existsSync(path)) {
    if (await answers(path)) throw new VswitchError('EADDRINUSE', `another vswitch daemon is listening on ${path}`);
    unlinkSync(path);
  }
  const server = createServer((sock) => serve(sock, dispatch, log));
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
  chmodSync(path, mode);
  return server;
}

function serve(sock: Socket, dispatch: Dispatch, log: Logger): void {
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('error', () => sock.destroy());
  sock.on('data', (chunk: string) => {
    buf += chunk;
    if (buf.length > MAX_LINE) {
      log.warn({ event: 'control_error', reason: 'request too long' }, 'control_error');
      sock.destroy();
      return;
    }
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.trim() !== '') sock.write(JSON.stringify(handle(line, dispatch, log)) + '\n');
    }
  });
}

function handle(line: string, dispatch: Dispatch, log: Logger): unknown {
  let id: unknown = null;
  try {
    const req = JSON.parse(line) as { id?: unknown; cmd?: unknown; args?: unknown };
    id = req.id ?? null;
    if (typeof req.cmd !== 'string') throw new VswitchError('EINVAL', 'request needs a string "cmd"');
    const args = (req.args && typeof req.args === 'object' ? req.args : {}) as Record<string, unknown>;
    const result = dispatch(req.cmd, args);
    return { id, ok: true, result: result ?? null };
  } catch (e) {
    const code = e instanceof SyntaxError ? 'EINVAL' : errorCode(e);
    if (code === 'EINTERNAL') log.error({ event: 'control_error', err: e }, 'control_error');
    return { id, ok: false, error: { code, message: errorMessage(e) } };
  }
}

function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = createConnection(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}
