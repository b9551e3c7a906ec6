/*
 * The metrics worker's protocol, in-process (this test's thread is the "main"
 * thread: it renders, answers pings and logs): concurrent scrapes coalesce into one
 * render request and later ones get the cached text; a clear makes the next scrape
 * render; the worker's counters reach the render; a failed render is a 500 for its
 * scrapes, logged once, not cached; /healthz is 200 only while the main loop
 * answers (this thread blocked for 3 s: 503 "stalled", then 200 again) and pings
 * are shared; the refusal warning goes through the main thread's logger; close()
 * leaves no thread and refuses connections; a dead worker is restarted on its
 * address; listen errors reject start() with the listen error's message.
 * On the old code there was no worker: a blocked main loop answered nothing, and
 * /healthz said 200 whatever the data plane's loop did.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect, createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_METRICS_LIMITS, type FromWorker, type MetricsLimits, MetricsWorker } from './metrics-worker.js';

const open: MetricsWorker[] = [];
afterEach(async () => { await Promise.all(open.splice(0).map((w) => w.close())); });

/** A pino logger writing its JSON lines into `lines`, as the daemon's does to stderr. */
function capture(): { log: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { log: pino({ level: 'info', base: { pid: process.pid } }, stream), lines };
}

interface Deferred { promise: Promise<string>; resolve: (s: string) => void; reject: (e: Error) => void }
function deferred(): Deferred {
  let resolve!: (s: string) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<string>((res, rej) => { resolve = res; reject = rej; });
  return { promise, resolve, reject };
}

async function start(render: () => Promise<string>, limits: Partial<MetricsLimits> = {}, extra: { healthTimeoutMs?: number; healthFreshMs?: number; port?: number } = {}) {
  const { log, lines } = capture();
  const w = await MetricsWorker.start({
    host: '127.0.0.1', port: extra.port ?? 0, limits: { ...DEFAULT_METRICS_LIMITS, ...limits }, contentType: 'text/plain; version=0.0.4',
    render, log, healthTimeoutMs: extra.healthTimeoutMs, healthFreshMs: extra.healthFreshMs,
  });
  open.push(w);
  const port = Number(w.address.split(':')[1]);
  /** Messages the worker sent to this thread, by type. */
  const seen: Record<string, number> = {};
  w.worker!.on('message', (m: FromWorker) => { seen[m.t] = (seen[m.t] ?? 0) + 1; });
  return { w, port, lines, seen };
}

function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; }).on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A request written to the kernel before this returns; `reply` resolves with what came back once the server closed. */
async function sendRaw(port: number, path: string): Promise<{ reply: Promise<string> }> {
  const sock = connect(port, '127.0.0.1');
  let data = '';
  sock.setEncoding('utf8').on('data', (d: string) => { data += d; });
  const reply = new Promise<string>((resolve, reject) => {
    sock.once('close', () => resolve(data));
    sock.once('error', reject);
  });
  await new Promise<void>((r) => sock.once('connect', () => r()));
  // libuv writes at once when nothing is queued: the request is in the kernel when write() returns.
  sock.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  return { reply };
}

const blockFor = (ms: number): void => {
  const end = Date.now() + ms;
  while (Date.now() < end) { /* the main loop is stuck */ }
};

describe('metrics worker protocol', () => {
  it('concurrent scrapes share one render request; later ones get the cache; clear makes the next render', async () => {
    const renders: Deferred[] = [];
    const { w, port, seen } = await start(() => { const d = deferred(); renders.push(d); return d.promise; }, { cacheInterval: 60 });
    const first = Array.from({ length: 50 }, () => get(port, '/metrics'));
    // Generous waits: 50 connections reach the worker slowly on a loaded machine.
    await expect.poll(() => renders.length, { timeout: 10_000 }).toBe(1);
    // Every other scrape reached the worker and waits for that same render.
    await expect.poll(async () => (await w.currentStats()).waiting, { timeout: 10_000 }).toBe(50);
    expect(renders).toHaveLength(1);
    renders[0].resolve('text 1\n');
    const res = await Promise.all(first);
    expect(res.every((r) => r.status === 200 && r.body === 'text 1\n')).toBe(true);
    expect(await get(port, '/metrics')).toEqual({ status: 200, body: 'text 1\n' });
    expect(renders).toHaveLength(1);
    expect(seen.render).toBe(1);
    expect(await w.currentStats()).toMatchObject({ rendered: 1, cached: 50, requests: 1 });

    await w.clear();
    const next = get(port, '/metrics');
    await expect.poll(() => renders.length).toBe(2);
    renders[1].resolve('text 2\n');
    expect(await next).toEqual({ status: 200, body: 'text 2\n' });
    expect(w.render.renders).toBe(2);
  });

  it('a render sees the worker\'s counters as of its request', async () => {
    const seenByRender: number[] = [];
    let w!: MetricsWorker;
    const s = await start(async () => {
      seenByRender.push(w.stats.cached + w.stats.rendered);
      return 'x\n';
    }, { cacheInterval: 60 });
    w = s.w;
    for (let i = 0; i < 5; i++) await get(s.port, '/metrics');
    await w.clear();
    await get(s.port, '/metrics');
    // The first render: no scrape answered yet; the second: the five before it.
    expect(seenByRender).toEqual([0, 5]);
  });

  it('a failed render is a 500 for its scrapes, logged once, and not cached', async () => {
    let failing: Deferred | undefined = deferred();
    const { w, port, lines } = await start(() => failing?.promise ?? Promise.resolve('ok\n'), { cacheInterval: 60 });
    const both = Promise.all([get(port, '/metrics'), get(port, '/metrics')]);
    await expect.poll(async () => (await w.currentStats()).waiting).toBe(2);
    failing.reject(new Error('boom'));
    const r = await both;
    expect(r.map((x) => x.status)).toEqual([500, 500]);
    expect(r[0].body).toBe('cannot collect metrics: boom\n');
    expect(lines.filter((l) => l.event === 'metrics_error')).toHaveLength(1);
    expect(lines.find((l) => l.event === 'metrics_error')).toMatchObject({ level: 50, err: 'boom' });
    failing = undefined;
    expect(await get(port, '/metrics')).toEqual({ status: 200, body: 'ok\n' });
    expect(w.render).toMatchObject({ renders: 2, renderErrors: 1 });
  });

  // A pong fresh for a minute: however slowly a loaded machine delivers the 20 requests,
  // the first pings and every other shares that ping or its pong (with the 250 ms window
  // a slow batch could legitimately ping again, so the count would measure the machine).
  it('/healthz: many requests share one ping', async () => {
    const { port, seen } = await start(async () => 'x\n', {}, { healthFreshMs: 60_000 });
    const many = await Promise.all(Array.from({ length: 20 }, () => get(port, '/healthz')));
    expect(many.every((r) => r.status === 200 && r.body === 'ok\n')).toBe(true);
    expect(seen.ping).toBe(1);
  });

  it('/healthz: 200 while the main loop answers, 503 while it is stuck, 200 again after', async () => {
    const { port } = await start(async () => 'x\n', {}, { healthTimeoutMs: 500 });
    expect(await get(port, '/healthz')).toEqual({ status: 200, body: 'ok\n' });

    await new Promise((r) => setTimeout(r, 300)); // past the fresh-pong window: the next /healthz must ping
    const stuck = await sendRaw(port, '/healthz');
    blockFor(3000); // this thread is the main loop: it answers no ping for 3 s
    const reply = await stuck.reply;
    expect(reply).toMatch(/^HTTP\/1\.1 503 /);
    expect(reply).toContain("stalled: the daemon's main loop did not answer within 0.5 s\n");
    expect(await get(port, '/healthz')).toEqual({ status: 200, body: 'ok\n' });
  }, 15_000);

  it('refused connections are logged through the main thread\'s logger, rate-limited, and flushed at close', async () => {
    const { w, port, lines } = await start(async () => 'x\n', { maxConnections: 1 });
    const hold = connect(port, '127.0.0.1');
    hold.on('error', () => {});
    await new Promise((r) => hold.once('connect', r));
    await expect.poll(async () => (await w.currentStats()).connections).toBe(1);
    const refused = Array.from({ length: 3 }, () => connect(port, '127.0.0.1').on('error', () => {}));
    await Promise.all(refused.map((s) => new Promise((r) => s.once('close', r))));
    await expect.poll(async () => (await w.currentStats()).refused).toBe(3);
    const warns = () => lines.filter((l) => l.event === 'metrics_connections_refused');
    await expect.poll(() => warns().length).toBe(1);
    expect(warns()[0]).toMatchObject({ level: 40, pid: process.pid, msg: 'metrics_connections_refused', count: 1, limit: 1, open: 1 });
    hold.destroy();
    await w.close();
    // The two refusals of the unfinished window: logged at close, before the thread exits.
    expect(warns().map((l) => l.count)).toEqual([1, 2]);
  });

  it('close() stops listening, closes connections and ends the thread', async () => {
    const { w, port } = await start(async () => 'x\n');
    const idle = connect(port, '127.0.0.1');
    idle.on('error', () => {});
    const idleClosed = new Promise((r) => idle.once('close', r));
    await new Promise((r) => idle.once('connect', r));
    const thread = w.worker!;
    const exit = new Promise<number>((r) => thread.once('exit', r));
    await w.close();
    expect(await exit).toBe(0);
    expect(w.worker).toBeUndefined();
    await idleClosed;
    await expect(get(port, '/healthz')).rejects.toThrow(/ECONNREFUSED/);
  });

  it('a worker that dies is logged and restarted on the same address', async () => {
    const { w, port, lines } = await start(async () => 'x\n');
    await w.worker!.terminate();
    expect(lines.find((l) => l.event === 'metrics_worker_exited')).toMatchObject({ level: 50, code: 1, restartInMs: 1000 });
    await expect.poll(() => lines.some((l) => l.event === 'metrics_listening' && l.restarted === true), { timeout: 5000 }).toBe(true);
    expect(w.address).toBe(`127.0.0.1:${port}`);
    expect(await get(port, '/healthz')).toEqual({ status: 200, body: 'ok\n' });
    expect(await get(port, '/metrics')).toEqual({ status: 200, body: 'x\n' });
  });

  it('the worker thread runs at metrics.workerNice, changed by configure()', async () => {
    const niceOf = (tid: string): number => Number(readFileSync(`/proc/self/task/${tid}/stat`, 'utf8').split(') ')[1].split(' ')[16]);
    const before = new Set(readdirSync('/proc/self/task'));
    const { w } = await start(async () => 'x\n', { workerNice: 7 });
    await w.sync();
    const mine = readdirSync('/proc/self/task').filter((t) => !before.has(t) && niceOf(t) === 7);
    expect(mine).toHaveLength(1);
    expect(niceOf(String(process.pid))).toBe(0);
    w.configure({ ...DEFAULT_METRICS_LIMITS, workerNice: 12 });
    await w.sync();
    expect(niceOf(mine[0])).toBe(12);
    expect(niceOf(String(process.pid))).toBe(0);
  });

  it('a restart that cannot listen is logged and tried again later', async () => {
    const { w, port, lines } = await start(async () => 'x\n');
    await w.worker!.terminate();
    // The address is taken before the restart (1 s later) can bind it.
    const squatter = createServer();
    await new Promise<void>((r) => squatter.listen(port, '127.0.0.1', r));
    const exits = () => lines.filter((l) => l.event === 'metrics_worker_exited');
    await expect.poll(() => exits().length, { timeout: 5000 }).toBe(2);
    expect(exits()[1]).toMatchObject({ level: 50, err: `listen EADDRINUSE: address already in use 127.0.0.1:${port}`, restartInMs: 2000 });
    await new Promise((r) => squatter.close(r));
    await expect.poll(() => lines.some((l) => l.event === 'metrics_listening' && l.restarted === true), { timeout: 5000 }).toBe(true);
    expect(await get(port, '/healthz')).toEqual({ status: 200, body: 'ok\n' });
  });

  // start() rejects only once the thread has exited (its 'exit' event): no thread is left behind.
  it('start() rejects with the listen error, and leaves no thread', async () => {
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const port = (taken.address() as AddressInfo).port;
    try {
      const { log } = capture();
      const opts = { limits: DEFAULT_METRICS_LIMITS, contentType: 'text/plain', render: async () => '', log };
      await expect(MetricsWorker.start({ ...opts, host: '127.0.0.1', port })).rejects.toThrow(`listen EADDRINUSE: address already in use 127.0.0.1:${port}`);
      await expect(MetricsWorker.start({ ...opts, host: 'nonexistent.invalid', port: 1 })).rejects.toMatchObject({ code: 'ENOTFOUND' });
    } finally {
      taken.close();
    }
  });
});
