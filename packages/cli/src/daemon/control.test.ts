/*
 * The control socket in-process: own-property command lookup, the socket path
 * check at start, the connection limit, the request size limit, per-client
 * back-pressure, and half-closing clients. On the old code: "constructor" reached
 * Object.prototype, a regular file at the path was deleted, a client that never
 * read its replies made the daemon buffer every one of them, an over-long line was
 * dropped without an answer, and there was no connection limit.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { VswitchError } from '../errors.js';
import { type ControlServer, type Dispatch, listenControl, lookupCommand, prepareControlPath } from './control.js';

const log = pino({ level: 'silent' });
const dirs: string[] = [];
const closers: (() => void)[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'vswitch-ctl-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const c of closers.splice(0)) c();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const table: Record<string, (a: Record<string, unknown>) => unknown> = {
  ping: () => 'pong',
  echo: (a) => a,
  big: () => 'x'.repeat(16 * 1024),
  proto: (a) => ({ bridge: a.bridge, ctor: typeof a.constructor }),
};
const dispatch: Dispatch = (cmd, args) => {
  const h = lookupCommand(table, cmd);
  if (h === undefined) throw new VswitchError('EINVAL', `unknown command: ${cmd}`);
  return h(args);
};

async function start(opts: { maxConnections?: number; maxRequestBytes?: number } = {}): Promise<{ path: string; ctl: ControlServer }> {
  const path = join(tmp(), 'c.sock');
  const ctl = await listenControl(path, 0o600, dispatch, log, { maxConnections: opts.maxConnections ?? 64, maxRequestBytes: opts.maxRequestBytes ?? 65536 });
  closers.push(() => ctl.close());
  return { path, ctl };
}

/** A client that collects reply lines. */
function client(path: string): { sock: Socket; lines: any[]; closed: Promise<void>; next(n?: number): Promise<any[]> } {
  const sock = createConnection(path);
  const lines: any[] = [];
  let buf = '';
  const waiters: (() => void)[] = [];
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(JSON.parse(buf.slice(0, i)));
      buf = buf.slice(i + 1);
    }
    for (const w of waiters.splice(0)) w();
  });
  sock.on('error', () => {});
  const closed = new Promise<void>((r) => sock.once('close', () => { for (const w of waiters.splice(0)) w(); r(); }));
  closers.push(() => sock.destroy());
  return {
    sock, lines, closed,
    async next(n = 1): Promise<any[]> {
      while (lines.length < n && !sock.destroyed) await new Promise<void>((r) => waiters.push(r));
      return lines.splice(0, n);
    },
  };
}

async function ask(path: string, req: unknown): Promise<any> {
  const c = client(path);
  c.sock.write(JSON.stringify(req) + '\n');
  const [r] = await c.next();
  c.sock.destroy();
  return r;
}

describe('lookupCommand', () => {
  it('finds own properties only', () => {
    expect(lookupCommand(table, 'ping')).toBe(table.ping);
    for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf', '__defineGetter__', 'isPrototypeOf']) {
      expect(lookupCommand(table, name), name).toBeUndefined();
    }
  });
});

describe('control socket requests', () => {
  it('answers in order; inherited names are unknown commands; bad requests get EINVAL', async () => {
    const { path } = await start();
    const c = client(path);
    const reqs = [
      { id: 1, cmd: 'ping' },
      { id: 2, cmd: 'constructor' },
      { id: 3, cmd: '__proto__' },
      { id: 4, cmd: 'toString' },
      { id: 5, cmd: 'hasOwnProperty' },
      { id: 6, cmd: 'proto', args: { bridge: 'br0' } },
    ];
    c.sock.write(reqs.map((r) => JSON.stringify(r)).join('\n') + '\n');
    const got = await c.next(6);
    expect(got[0]).toEqual({ id: 1, ok: true, result: 'pong' });
    for (const [i, name] of [[1, 'constructor'], [2, '__proto__'], [3, 'toString'], [4, 'hasOwnProperty']] as const) {
      expect(got[i]).toEqual({ id: i + 1, ok: false, error: { code: 'EINVAL', message: `unknown command: ${name}` } });
    }
    // args reach handlers without a prototype: args.constructor is not Object.
    expect(got[5]).toEqual({ id: 6, ok: true, result: { bridge: 'br0', ctor: 'undefined' } });
    c.sock.write('null\n[1]\n{"cmd":"ping","args":[1]}\n{"cmd":5}\nnot json\n{"id":7,"cmd":"echo","args":{"__proto__":{"x":1}}}\n');
    const bad = await c.next(6);
    for (const r of bad.slice(0, 5)) expect(r).toMatchObject({ ok: false, error: { code: 'EINVAL' } });
    expect(bad[5]).toMatchObject({ id: 7, ok: true });
  });

  it('a line over maxRequestBytes gets E2BIG and the connection is closed; others are served', async () => {
    const { path, ctl } = await start({ maxRequestBytes: 1024 });
    const c = client(path);
    c.sock.write(`{"id":1,"cmd":"ping"}\n{"cmd":"echo","args":{"s":"${'y'.repeat(2000)}"}}\n{"id":3,"cmd":"ping"}\n`);
    await c.closed;
    expect(c.lines).toEqual([
      { id: 1, ok: true, result: 'pong' },
      { id: null, ok: false, error: { code: 'E2BIG', message: 'request longer than 1024 bytes: closing the connection' } },
    ]);
    expect(ctl.stats.tooLong).toBe(1);
    expect(await ask(path, { id: 9, cmd: 'ping' })).toEqual({ id: 9, ok: true, result: 'pong' });
  });

  it('answers every request of a client that half-closes, then closes', async () => {
    const { path } = await start();
    const c = client(path);
    c.sock.end('{"id":1,"cmd":"ping"}\n{"id":2,"cmd":"big"}\n{"id":3,"cmd":"ping"}\n');
    await c.closed;
    expect(c.lines.map((l) => l.id)).toEqual([1, 2, 3]);
  });
});

describe('control socket limits', () => {
  it('over maxConnections: EAGAIN at once, the fd released; a slot that frees is usable', async () => {
    const { path, ctl } = await start({ maxConnections: 2 });
    const a = client(path);
    const b = client(path);
    a.sock.write('{"id":1,"cmd":"ping"}\n');
    b.sock.write('{"id":1,"cmd":"ping"}\n');
    await a.next();
    await b.next();
    const c = client(path);
    await c.closed;
    expect(c.lines).toEqual([{ id: null, ok: false, error: { code: 'EAGAIN', message: 'too many control connections (limit 2); try again' } }]);
    expect(ctl.stats).toMatchObject({ connections: 2, refused: 1 });
    a.sock.destroy();
    await a.closed;
    await new Promise((r) => setTimeout(r, 50));
    expect(await ask(path, { id: 2, cmd: 'ping' })).toEqual({ id: 2, ok: true, result: 'pong' });
    ctl.configure({ maxConnections: 1, maxRequestBytes: 65536 });
    const d = client(path);
    await d.closed;
    expect(d.lines[0].error.code).toBe('EAGAIN');
  });

  it('a client that pipelines and never reads is paused: the daemon answers a bounded number, others are served', async () => {
    const { path, ctl } = await start();
    const hog = createConnection(path);
    hog.on('error', () => {});
    closers.push(() => hog.destroy());
    hog.pause(); // never reads a reply
    const req = Buffer.from('{"cmd":"big"}\n'.repeat(1000));
    let written = 0;
    // Write until the socket says stop, then keep offering more on drain for 1 s.
    const deadline = Date.now() + 1000;
    await new Promise<void>((resolve) => {
      const more = (): void => {
        while (Date.now() < deadline) {
          written += 1000;
          if (!hog.write(req)) {
            hog.once('drain', more);
            return;
          }
        }
        resolve();
      };
      more();
      setTimeout(resolve, 1500);
    });
    // 16 KiB replies: without back-pressure every request read would be answered and buffered.
    expect(ctl.stats.pauses).toBeGreaterThan(0);
    expect(ctl.stats.requests).toBeLessThan(200);
    expect(written).toBeGreaterThan(ctl.stats.requests);
    expect(await ask(path, { id: 1, cmd: 'ping' })).toEqual({ id: 1, ok: true, result: 'pong' });
    // Reading resumes the hog: it is answered again.
    const before = ctl.stats.requests;
    hog.resume();
    await new Promise((r) => setTimeout(r, 200));
    expect(ctl.stats.requests).toBeGreaterThan(before);
  });
});

describe('prepareControlPath', () => {
  it('absent: fine; a stale socket of ours: removed', async () => {
    const d = tmp();
    await prepareControlPath(join(d, 'absent.sock'));
    const stale = join(d, 'stale.sock');
    // Bound and never listened on: what a crashed daemon leaves (Node would unlink on close).
    expect(spawnSync('/usr/bin/python3', ['-c', `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(stale)})`]).status).toBe(0);
    expect(lstatSync(stale).isSocket()).toBe(true);
    await prepareControlPath(stale);
    expect(existsSync(stale)).toBe(false);
  });

  it('a live socket is refused and left alone', async () => {
    const d = tmp();
    const live = join(d, 'live.sock');
    const srv = createServer((s) => s.destroy());
    await new Promise<void>((r) => srv.listen(live, r));
    closers.push(() => srv.close());
    await expect(prepareControlPath(live)).rejects.toThrow(`another vswitch daemon is listening on ${live}`);
    expect(lstatSync(live).isSocket()).toBe(true);
  });

  it('a regular file, a directory, a symlink (even to a socket) are refused by name and left intact', async () => {
    const d = tmp();
    const file = join(d, 'file.sock');
    writeFileSync(file, 'precious\n');
    await expect(prepareControlPath(file)).rejects.toThrow(`control socket ${file} exists and is a regular file, not a socket this daemon created`);
    expect(readFileSync(file, 'utf8')).toBe('precious\n');
    const dir = join(d, 'dir.sock');
    mkdirSync(dir);
    await expect(prepareControlPath(dir)).rejects.toThrow(/is a directory/);
    expect(lstatSync(dir).isDirectory()).toBe(true);
    const target = join(d, 'real.sock');
    const srv: Server = createServer();
    await new Promise<void>((r) => srv.listen(target, r));
    closers.push(() => srv.close());
    const link = join(d, 'link.sock');
    symlinkSync(target, link);
    await expect(prepareControlPath(link)).rejects.toThrow(/is a symbolic link/);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    // And listenControl refuses the same way, before listening.
    await expect(listenControl(file, 0o600, dispatch, log)).rejects.toThrow(/regular file/);
    expect(readFileSync(file, 'utf8')).toBe('precious\n');
  });
});
