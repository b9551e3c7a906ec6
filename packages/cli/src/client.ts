/*
 * The CLI side of the control socket: one request, one response, clear errors
 * when the daemon is not there or the socket is not ours to use. A refusal because
 * the daemon has its maximum of control connections open (EAGAIN) is retried
 * within the same 10 s budget, so parallel scripts wait rather than fail.
 * `stream` is the long-lived kind (`monitor`): one request, its reply, then one
 * event per line until the daemon or the user ends it.
 */
import { createConnection } from 'node:net';
import { VswitchError } from './errors.js';

export const DEFAULT_SOCKET = '/run/vswitch/vswitch.sock';

const TIMEOUT_MS = 10_000;

export async function request(path: string, cmd: string, args: Record<string, unknown> = {}): Promise<unknown> {
  const deadline = Date.now() + TIMEOUT_MS;
  for (let attempt = 1; ; attempt++) {
    try {
      return await once(path, cmd, args, deadline);
    } catch (e) {
      // The daemon refused the connection over its control.maxConnections (EAGAIN, sent before it read anything),
      // or closed it before our request was written (EPIPE: not delivered): try again shortly.
      const code = (e as VswitchError).code;
      const again = code === 'EAGAIN' || (code === 'EPIPE' && attempt < 3);
      if (!again || Date.now() + 100 >= deadline) throw e;
      await new Promise((r) => setTimeout(r, 20 + Math.random() * 80));
    }
  }
}

function once(path: string, cmd: string, args: Record<string, unknown>, deadline: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new VswitchError('ETIMEDOUT', `no answer from the daemon on ${path} within ${TIMEOUT_MS / 1000} s`));
    }, Math.max(0, deadline - Date.now()));
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(JSON.stringify({ id: 1, cmd, args }) + '\n'));
    sock.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      sock.end();
      const res = JSON.parse(buf.slice(0, nl)) as { ok: boolean; result?: unknown; error?: { code: string; message: string } };
      if (res.ok) resolve(res.result);
      else reject(new VswitchError(res.error?.code ?? 'EINTERNAL', res.error?.message ?? 'unknown error'));
    });
    sock.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(connectError(path, e));
    });
  });
}

function connectError(path: string, e: NodeJS.ErrnoException): VswitchError {
  switch (e.code) {
    case 'ENOENT':
      return new VswitchError('ENOTRUNNING', `daemon not running: no control socket at ${path}`);
    case 'ECONNREFUSED':
      return new VswitchError('ENOTRUNNING', `daemon not running: nothing listens on ${path}`);
    case 'EACCES':
    case 'EPERM':
      return new VswitchError('EACCES', `permission denied on control socket ${path}`);
    default:
      return new VswitchError(e.code ?? 'EIO', `cannot reach the daemon on ${path}: ${e.message}`);
  }
}

/**
 * Sends `cmd` and hands every line after its `ok` reply to `onLine` until the
 * daemon closes the connection (resolves) or SIGINT/SIGTERM (resolves). A refused
 * request rejects as `request` does.
 */
export function stream(path: string, cmd: string, args: Record<string, unknown>, onLine: (line: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    let buf = '';
    let answered = false;
    const stop = (): void => {
      sock.destroy();
      resolve();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    const done = (e?: Error): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      if (e) reject(e);
      else resolve();
    };
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(JSON.stringify({ id: 1, cmd, args }) + '\n'));
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!answered) {
          answered = true;
          const res = JSON.parse(line) as { ok: boolean; error?: { code: string; message: string } };
          if (!res.ok) {
            sock.destroy();
            done(new VswitchError(res.error?.code ?? 'EINTERNAL', res.error?.message ?? 'unknown error'));
            return;
          }
          continue;
        }
        onLine(line);
      }
    });
    sock.on('error', (e: NodeJS.ErrnoException) => done(answered ? undefined : connectError(path, e)));
    sock.on('close', () => done());
  });
}
