/*
 * The metrics HTTP server's bounds, in-process on 127.0.0.1:0: the connection
 * limit (more closed at once, counted), header/request and idle timeouts, the
 * header size limit, one render for 500 concurrent scrapes, limits changed at
 * runtime, and the server's own counters in the exposition. On the old code there
 * was no limit, no idle timeout (an idle connection stayed open for good), and every
 * scrape rendered. The server runs in its worker thread: the counters are fetched
 * from it (stats()), and configure() is applied once sync() resolves.
 */
import { Agent, request } from 'node:http';
import { connect, type Socket } from 'node:net';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_METRICS_LIMITS, type MetricsLimits, type MetricsServer, startMetrics } from './metrics.js';
import { Vswitch } from './service.js';

const log = pino({ level: 'silent' });
const open: { close(): void | Promise<void> }[] = [];
afterEach(async () => { await Promise.all(open.splice(0).map((o) => o.close())); });

async function serve(limits: Partial<MetricsLimits> = {}): Promise<{ m: MetricsServer; port: number; sw: Vswitch }> {
  const sw = new Vswitch(log);
  sw.addBridge('br0');
  const m = await startMetrics(sw, '127.0.0.1:0', log, { limits: { ...DEFAULT_METRICS_LIMITS, ...limits } });
  open.push(m, sw);
  return { m, port: Number(m.address.split(':')[1]), sw };
}

function get(port: number, path: string, opts: { agent?: Agent | false; method?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: opts.method ?? 'GET', agent: opts.agent ?? false, headers: opts.headers }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; }).on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A raw TCP client that records what it receives and when it was closed. */
function raw(port: number): { sock: Socket; data: string; closedAt: Promise<number> } {
  const t0 = Date.now();
  const sock = connect(port, '127.0.0.1');
  const r = { sock, data: '', closedAt: new Promise<number>((res) => sock.once('close', () => res(Date.now() - t0))) };
  sock.setEncoding('utf8').on('data', (d: string) => { r.data += d; });
  sock.on('error', () => {});
  open.push({ close: () => sock.destroy() });
  return r;
}

const sample = (text: string, name: string): number => {
  const m = new RegExp(`^${name.replace(/[{}"]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text);
  if (m === null) throw new Error(`no sample ${name}`);
  return Number(m[1]);
};

describe('metrics server bounds', () => {
  it('connections over maxConnections are closed at once and counted; freed slots serve again', async () => {
    const { m, port } = await serve({ maxConnections: 4 });
    const clients = Array.from({ length: 10 }, () => raw(port));
    const refused = await Promise.race([
      Promise.all(clients.slice(4).map((c) => c.closedAt)),
      new Promise<number[]>((r) => setTimeout(() => r([]), 2000)),
    ]);
    expect(refused).toHaveLength(6);
    expect(await m.stats()).toMatchObject({ connections: 4, refused: 6 });
    for (const c of clients.slice(0, 4)) c.sock.destroy();
    await Promise.all(clients.slice(0, 4).map((c) => c.closedAt));
    await new Promise((r) => setTimeout(r, 50));
    expect(await get(port, '/healthz')).toEqual({ status: 200, body: 'ok\n' });
    const text = (await get(port, '/metrics')).body;
    expect(sample(text, 'vswitch_metrics_connections_refused_total')).toBe(6);
    expect(sample(text, 'vswitch_metrics_max_connections')).toBe(4);
  });

  it('a connection that sends no (whole) request is answered 408 and closed after headersTimeout', async () => {
    const { m, port } = await serve({ headersTimeout: 0.5, requestTimeout: 1 });
    const silent = raw(port);
    const slow = raw(port);
    slow.sock.write('GET /metrics HTTP/1.1\r\nHost: x\r\n');
    const trickle = setInterval(() => slow.sock.write('X-A: b\r\n'), 100);
    try {
      const [a, b] = await Promise.all([silent.closedAt, slow.closedAt]);
      expect(a).toBeLessThan(2500);
      expect(b).toBeLessThan(2500);
    } finally {
      clearInterval(trickle);
    }
    expect(silent.data).toMatch(/^HTTP\/1\.1 408 /);
    expect(slow.data).toMatch(/^HTTP\/1\.1 408 /);
    expect((await m.stats()).closed.request_timeout).toBe(2);
  });

  it('an idle keep-alive connection is closed after idleTimeout', async () => {
    const { m, port } = await serve({ idleTimeout: 0.5 });
    const c = raw(port);
    c.sock.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    const at = await c.closedAt;
    expect(c.data).toMatch(/^HTTP\/1\.1 200 /);
    // Node keeps the socket 1 s past the advertised keep-alive timeout.
    expect(at).toBeLessThan(3000);
    expect((await m.stats()).closed.idle_timeout).toBe(1);
  });

  it('headers over 8 KiB get 431; a malformed request 400; other methods 405', async () => {
    const { m, port } = await serve();
    const big = raw(port);
    big.sock.write(`GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(9000)}\r\n\r\n`);
    await big.closedAt;
    expect(big.data).toMatch(/^HTTP\/1\.1 431 /);
    const bad = raw(port);
    bad.sock.write('BLAH\r\n\r\n');
    await bad.closedAt;
    expect(bad.data).toMatch(/^HTTP\/1\.1 400 /);
    expect((await m.stats()).closed).toMatchObject({ header_too_large: 1, bad_request: 1 });
    for (const method of ['POST', 'PUT', 'DELETE', 'OPTIONS']) expect((await get(port, '/metrics', { method })).status).toBe(405);
  });

  it('500 concurrent scrapes cost one render and all get the whole exposition', async () => {
    // A long interval: the point is that the scrapes share, whatever this machine's speed.
    const { m, port } = await serve({ cacheInterval: 10 });
    const agent = new Agent({ keepAlive: true, maxSockets: 32 });
    open.push({ close: () => agent.destroy() });
    const res = await Promise.all(Array.from({ length: 500 }, () => get(port, '/metrics', { agent })));
    expect(res.every((r) => r.status === 200 && r.body.includes('vswitch_info{version=') && r.body.endsWith('\n'))).toBe(true);
    expect(new Set(res.map((r) => r.body)).size).toBe(1);
    const s = await m.stats();
    expect(s.cache.renders).toBe(1);
    expect(s.cache.cached).toBe(499);
    expect(s.refused).toBe(0);
    // The counters as the next render sees them.
    await m.clearCache();
    const text = (await get(port, '/metrics')).body;
    expect(sample(text, 'vswitch_metrics_scrapes_total{source="cache"}')).toBe(499);
    expect(sample(text, 'vswitch_metrics_scrapes_total{source="render"}')).toBe(1);
    expect(sample(text, 'vswitch_metrics_renders_total')).toBe(2);
  });

  it('limits change at runtime (reload)', async () => {
    const { m, port } = await serve({ maxConnections: 64 });
    expect(m.configure({ ...DEFAULT_METRICS_LIMITS, maxConnections: 1, cacheInterval: 0 })).toEqual([
      'metrics.maxConnections 64 -> 1', 'metrics.cacheInterval 1 -> 0',
    ]);
    await m.sync(); // the worker has the new limits
    const hold = raw(port);
    await new Promise((r) => hold.sock.once('connect', r));
    const second = raw(port);
    await second.closedAt;
    expect((await m.stats()).refused).toBe(1);
    hold.sock.destroy();
    await hold.closedAt;
    await new Promise((r) => setTimeout(r, 50));
    await get(port, '/metrics');
    await get(port, '/metrics');
    expect((await m.stats()).cache.renders).toBe(2);
  });
});
