/*
 * The metrics HTTP server runs in its own thread (node:worker_threads), so that
 * scrapers, however many, never hold the forwarding loop. Measured before this
 * split: with the server on the main loop, 500 concurrent scrapers made libuv run
 * whole epoll batches of hundreds of socket callbacks (accept, parse, write the
 * cached text, close) between two looks at the TAP fds: 50-77 ms without an idle
 * sample, ping p99 between two VMs ~50 ms instead of ~0.8 ms.
 *
 * Who owns what:
 * - the worker: the listening socket and every connection (its fds are the
 *   process's: the daemon's fd accounting counts metrics.maxConnections as before),
 *   the connection limit, the idle, header and request timeouts, the header size
 *   limit, the routing (GET/HEAD /metrics and /healthz), the cache of the last
 *   rendered text (RenderCache), its counters (connections, refused, closed by
 *   reason, scrapes by source) and the rate-limited "connections refused" warning;
 * - the main thread: the data plane and its counters, hence the render (prom-client
 *   reads the ports, bridges and routers in their own thread: a render cannot move;
 *   it runs one metric at a time, metrics.ts renderSliced, so TAP reads go on between),
 *   the logger (the worker's log lines are posted to it: one log stream, the same
 *   pino JSON lines as before), and the limits (reload).
 *
 * The protocol (structured-clone messages on the worker's port; each side handles
 * them in order):
 *   worker -> main: listening {address} | listen_error {message, code}
 *                   render {id, stats}   the cache needs a text; `stats` are the
 *                                        worker's counters now, which this render
 *                                        exports (the scrapes that wait for it
 *                                        show in the next one)
 *                   ping                 /healthz wants to know the main loop runs
 *                   log {level, obj, msg}
 *                   reply {id, stats?}   to sync/stats/clear
 *                   closed
 *   main -> worker: text {id, text | error}
 *                   pong
 *                   limits {limits}      reload
 *                   clear {id}           a CLI change or SIGHUP: the next scrape renders
 *                   stats {id} | sync {id}
 *                   close
 * The worker coalesces: RenderCache keeps at most one render request outstanding,
 * every scrape that arrives meanwhile gets its text, later ones within
 * cacheInterval get the cached text. So the main loop pays one render per
 * cacheInterval and two messages per render, whatever the scrape rate; a refused
 * or timed-out connection costs it nothing (the refusal warning: one message per
 * 10 s at most).
 *
 * /healthz tells the truth about the daemon, not only about this thread: 200 only
 * if the main loop answered a ping within HEALTH_TIMEOUT_MS (one ping outstanding
 * at a time, shared by every /healthz waiting; a pong younger than HEALTH_FRESH_MS
 * counts without asking again, so a /healthz flood costs the main loop at most
 * ~1000/HEALTH_FRESH_MS messages a second), 503 "stalled" otherwise, 503 "stopping"
 * once the daemon shuts down. A /metrics scrape while the main loop is stalled gets
 * the cached text if it is fresh, else waits for the render (the connection's idle
 * timeout bounds the wait).
 *
 * Its CPU: the worker's work grows with the scrapers (hundreds of connections a
 * second cost it a good part of a core, mostly the kernel's TCP), and on a small
 * machine that CPU is the data plane's. So the worker lowers its own thread's
 * priority to metrics.workerNice (default 10; Linux keeps a nice value per thread,
 * the main thread stays at 0): when both want the CPU, the kernel runs the data
 * plane's thread first and the scrapes get what is left.
 *
 * If the worker dies (it should not: every handler catches), the daemon logs
 * metrics_worker_exited and starts a new one on the same address after a backoff
 * (1 s, doubling to 30 s); the worker's counters start again from 0, which
 * Prometheus' rate() treats as a counter reset.
 *
 * How the worker's code is loaded: `serve` below is a self-contained function (it
 * uses only its parameters and globals), and the worker is started with
 * `eval: true` on a small CommonJS script that calls it with node:http and the
 * sources of RenderCache and LogThrottle (both self-contained classes, see their
 * headers). Function.prototype.toString gives the code as it runs in this
 * thread, so the same source works under vitest (TypeScript transformed in
 * memory) and from dist (tsc's output), with nothing to ship or resolve beside
 * the module; a separate .js/.mjs file would need a build step to copy it and a
 * path that differs between src and dist, and could not be a TypeScript file.
 * The price: `serve`, RenderCache and LogThrottle must not reference anything
 * outside themselves (no imports, no module constants: those arrive in
 * workerData), and code coverage that instruments sources (istanbul) breaks
 * them; metrics-worker.test.ts runs them for real.
 */
import type * as Http from 'node:http';
import type * as Os from 'node:os';
import type { AddressInfo, Socket } from 'node:net';
import { Worker, type MessagePort } from 'node:worker_threads';
import type { Logger } from './log.js';
import { RenderCache, type RenderCacheStats } from './render-cache.js';
import { LogThrottle } from './throttle.js';

/**
 * The server's own bounds, in seconds where they are times (config `metrics.*`).
 * Changing them at runtime (reload) applies to new connections and requests.
 */
export interface MetricsLimits {
  /** Connections open at once; one more is closed at once and counted. */
  maxConnections: number;
  /** A connection without a byte in either direction for this long is closed (before, between and during requests). */
  idleTimeout: number;
  /** The request's headers must be complete this long after it began. */
  headersTimeout: number;
  /** The whole request must be received this long after it began. */
  requestTimeout: number;
  /** Scrapes within this long of the last render get its text (see render-cache.ts). */
  cacheInterval: number;
  /**
   * The server thread's nice value, 0 (the data plane's) to 19: on a busy machine the
   * kernel gives the data plane's thread the CPU first, and the scrapes what is left.
   */
  workerNice: number;
}

export const DEFAULT_METRICS_LIMITS: MetricsLimits = {
  maxConnections: 64, idleTimeout: 10, headersTimeout: 5, requestTimeout: 10, cacheInterval: 1, workerNice: 10,
};

/** Request line and headers together; a scrape sends a few hundred bytes. Over it: 431 and closed. */
export const MAX_HEADER_BYTES = 8192;

/** Why the server closed a connection itself (a closed set, README "Metrics"). */
export const METRICS_CLOSE_REASONS = ['idle_timeout', 'request_timeout', 'header_too_large', 'bad_request'] as const;
export type MetricsCloseReason = (typeof METRICS_CLOSE_REASONS)[number];

/** /healthz answers 503 if the main loop does not answer a ping within this long. */
export const HEALTH_TIMEOUT_MS = 2000;
/** A pong younger than this answers /healthz without a new ping. */
export const HEALTH_FRESH_MS = 250;

/** The worker's counters. */
export interface WorkerStats {
  /** Connections open now. */
  connections: number;
  /** Connections closed at once because maxConnections were open. */
  refused: number;
  closed: Record<MetricsCloseReason, number>;
  /** Scrapes answered with a text this scrape asked the main thread for. */
  rendered: number;
  /** Scrapes answered with a cached text or one another scrape asked for. */
  cached: number;
  /** Render requests sent to the main thread, and those that failed. */
  requests: number;
  requestErrors: number;
  /** Scrapes waiting for a render now. */
  waiting: number;
}

/** What the worker starts with (workerData: structured-cloned, so plain data only). */
export interface WorkerInit {
  host: string;
  port: number;
  limits: MetricsLimits;
  maxHeaderBytes: number;
  closeReasons: readonly MetricsCloseReason[];
  contentType: string;
  healthTimeoutMs: number;
  healthFreshMs: number;
}

type LogLevel = 'info' | 'warn' | 'error';

export type FromWorker =
  | { t: 'listening'; address: string }
  | { t: 'listen_error'; message: string; code?: string }
  | { t: 'render'; id: number; stats: WorkerStats }
  | { t: 'ping' }
  | { t: 'log'; level: LogLevel; obj: Record<string, unknown>; msg: string }
  | { t: 'reply'; id: number; stats?: WorkerStats }
  | { t: 'closed' };

export type ToWorker =
  | { t: 'text'; id: number; text?: string; error?: string }
  | { t: 'pong' }
  | { t: 'limits'; limits: MetricsLimits }
  | { t: 'clear'; id: number }
  | { t: 'stats'; id: number }
  | { t: 'sync'; id: number }
  | { t: 'close' };

/**
 * The worker's whole program. Self-contained: it runs from its source text in the
 * worker (see the header), so it may use only its parameters and globals.
 */
function serve(
  http: typeof Http, os: typeof Os, port: MessagePort, init: WorkerInit,
  RenderCacheClass: typeof RenderCache, LogThrottleClass: typeof LogThrottle,
): void {
  const post = (m: FromWorker): void => port.postMessage(m);
  const log = (level: LogLevel, obj: Record<string, unknown>): void => post({ t: 'log', level, obj, msg: String(obj.event) });
  const limits: MetricsLimits = { ...init.limits };
  const renice = (nice: number): void => {
    try {
      // Pid 0: this thread only (on Linux a nice value belongs to a thread, not to the process).
      if (os.getPriority(0) !== nice) os.setPriority(0, nice);
    } catch (e) {
      // Lowering it again (a reload from 10 to 0) needs CAP_SYS_NICE.
      log('warn', { event: 'metrics_worker_nice_failed', nice, err: (e as Error).message });
    }
  };
  renice(limits.workerNice);
  const closed = {} as Record<MetricsCloseReason, number>;
  for (const r of init.closeReasons) closed[r] = 0;
  const counts = { connections: 0, refused: 0, requests: 0, requestErrors: 0, waiting: 0 };
  let closing = false;

  /* ---------- renders: one request outstanding, answered by the main thread ---------- */
  let nextId = 1;
  const waiting = new Map<number, { resolve: (text: string) => void; reject: (e: Error) => void }>();
  const cache = new RenderCacheClass(() => new Promise<string>((resolve, reject) => {
    if (closing) {
      reject(new Error('stopping'));
      return;
    }
    const id = nextId++;
    waiting.set(id, { resolve, reject });
    counts.requests++;
    post({ t: 'render', id, stats: snapshot() });
  }), limits.cacheInterval * 1000);
  const snapshot = (): WorkerStats => ({
    connections: counts.connections, refused: counts.refused, closed: { ...closed },
    rendered: cache.stats.rendered, cached: cache.stats.cached, requests: counts.requests, requestErrors: counts.requestErrors,
    waiting: counts.waiting,
  });

  /* ---------- /healthz: is the main loop alive? ---------- */
  let lastPong = -Infinity;
  let pinging = false;
  const healthWaiters = new Set<{ done: (ok: boolean) => void; timer: NodeJS.Timeout }>();
  const mainAlive = (): Promise<boolean> => {
    if (performance.now() - lastPong < init.healthFreshMs) return Promise.resolve(true);
    return new Promise((resolve) => {
      const w = {
        done: resolve,
        timer: setTimeout(() => {
          healthWaiters.delete(w);
          resolve(false);
        }, init.healthTimeoutMs),
      };
      healthWaiters.add(w);
      if (!pinging) {
        pinging = true;
        post({ t: 'ping' });
      }
    });
  };
  const pong = (): void => {
    pinging = false;
    lastPong = performance.now();
    for (const w of healthWaiters) {
      clearTimeout(w.timer);
      w.done(true);
    }
    healthWaiters.clear();
  };

  /* ---------- HTTP ---------- */
  const send = (res: Http.ServerResponse, code: number, body: string | Buffer, headers: Record<string, string> = {}): void => {
    res.writeHead(code, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': String(Buffer.byteLength(body)), ...headers });
    res.end(res.req.method === 'HEAD' ? undefined : body);
  };
  // The text of the last render, encoded once for every scrape it answers (not once per scrape).
  let memoText = '';
  let memoBytes = Buffer.alloc(0);
  const bytesOf = (text: string): Buffer => {
    if (text !== memoText) {
      memoText = text;
      memoBytes = Buffer.from(text);
    }
    return memoBytes;
  };

  const handle = async (req: Http.IncomingMessage, res: Http.ServerResponse): Promise<void> => {
    let path: string;
    try {
      path = new URL(req.url ?? '/', 'http://x').pathname;
    } catch {
      send(res, 400, 'bad request\n');
      return;
    }
    if (path !== '/metrics' && path !== '/healthz') {
      send(res, 404, 'not found: try /metrics or /healthz\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(res, 405, 'method not allowed\n', { Allow: 'GET, HEAD' });
      return;
    }
    if (path === '/healthz') {
      if (closing) {
        send(res, 503, 'stopping\n');
        return;
      }
      const ok = await mainAlive();
      if (res.destroyed) return;
      if (closing) send(res, 503, 'stopping\n');
      else if (ok) send(res, 200, 'ok\n');
      else send(res, 503, `stalled: the daemon's main loop did not answer within ${init.healthTimeoutMs / 1000} s\n`);
      return;
    }
    counts.waiting++;
    try {
      const { text } = await cache.get();
      if (res.destroyed) return;
      send(res, 200, bytesOf(text), { 'Content-Type': init.contentType });
    } catch (e) {
      // The main thread logged the render's error where it happened.
      if (!res.destroyed) send(res, closing ? 503 : 500, closing ? 'stopping\n' : `cannot collect metrics: ${(e as Error).message}\n`);
    } finally {
      counts.waiting--;
    }
  };

  const server = http.createServer({
    maxHeaderSize: init.maxHeaderBytes,
    headersTimeout: limits.headersTimeout * 1000,
    requestTimeout: limits.requestTimeout * 1000,
    keepAliveTimeout: limits.idleTimeout * 1000,
    // How often headersTimeout and requestTimeout are checked (Node's default: 30 s).
    connectionsCheckingInterval: 1000,
  }, (req, res) => {
    handle(req, res).catch((e: unknown) => {
      log('error', { event: 'metrics_error', err: (e as Error).message });
      if (!res.headersSent) send(res, 500, 'internal error\n');
      else res.destroy();
    });
  });
  server.maxConnections = limits.maxConnections;
  // Any phase: before the first request, while one is read or written, between keep-alive requests.
  server.timeout = limits.idleTimeout * 1000;
  server.on('timeout', (sock: Socket) => {
    closed.idle_timeout++;
    sock.destroy();
  });
  server.on('connection', (sock: Socket) => {
    counts.connections++;
    sock.once('close', () => counts.connections--);
  });
  const refusedLog = new LogThrottleClass((count) => log('warn',
    { event: 'metrics_connections_refused', count, limit: limits.maxConnections, open: counts.connections }));
  server.on('drop', () => {
    counts.refused++;
    refusedLog.hit();
  });
  // Replaces Node's default answer to a bad or late request (same status codes), to count it.
  server.on('clientError', (err: NodeJS.ErrnoException, sock: Socket) => {
    const reason: MetricsCloseReason | undefined = err.code === 'HPE_HEADER_OVERFLOW' ? 'header_too_large'
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'request_timeout'
        : err.code === 'ECONNRESET' || err.code === 'EPIPE' ? undefined : 'bad_request';
    if (reason !== undefined) {
      closed[reason]++;
      if (sock.writable && sock.bytesWritten === 0) {
        const status = reason === 'header_too_large' ? '431 Request Header Fields Too Large'
          : reason === 'request_timeout' ? '408 Request Timeout' : '400 Bad Request';
        sock.write(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      }
    }
    sock.destroy();
  });

  const close = (): void => {
    if (closing) return;
    closing = true;
    server.close();
    // Prometheus keeps its connection alive; do not let it hold the daemon's exit.
    server.closeAllConnections();
    refusedLog.flush();
    for (const w of waiting.values()) w.reject(new Error('stopping'));
    waiting.clear();
    for (const w of healthWaiters) clearTimeout(w.timer);
    healthWaiters.clear();
    post({ t: 'closed' });
    // Nothing else keeps this thread's loop alive: it ends and the thread exits.
    port.close();
  };

  port.on('message', (m: ToWorker) => {
    switch (m.t) {
      case 'text': {
        const w = waiting.get(m.id);
        if (w === undefined) return;
        waiting.delete(m.id);
        if (m.text !== undefined) w.resolve(m.text);
        else {
          counts.requestErrors++;
          w.reject(new Error(m.error ?? 'render failed'));
        }
        return;
      }
      case 'pong':
        pong();
        return;
      case 'limits':
        Object.assign(limits, m.limits);
        server.maxConnections = limits.maxConnections;
        server.timeout = limits.idleTimeout * 1000;
        server.keepAliveTimeout = limits.idleTimeout * 1000;
        server.headersTimeout = limits.headersTimeout * 1000;
        server.requestTimeout = limits.requestTimeout * 1000;
        cache.intervalMs = limits.cacheInterval * 1000;
        renice(limits.workerNice);
        return;
      case 'clear':
        cache.clear();
        post({ t: 'reply', id: m.id });
        return;
      case 'stats':
        post({ t: 'reply', id: m.id, stats: snapshot() });
        return;
      case 'sync':
        post({ t: 'reply', id: m.id });
        return;
      case 'close':
        close();
        return;
    }
  });

  server.once('error', (e: NodeJS.ErrnoException) => {
    post({ t: 'listen_error', message: e.message, code: e.code });
    closing = true;
    port.close();
  });
  server.listen({ host: init.host, port: init.port }, () => {
    server.removeAllListeners('error');
    server.on('error', (e) => log('error', { event: 'metrics_error', err: e.message }));
    const a = server.address() as AddressInfo;
    post({ t: 'listening', address: a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}` });
  });
}

let source: string | undefined;
/** The script the worker evaluates (CommonJS: `require` is there). */
function workerSource(): string {
  source ??= `'use strict';
const { parentPort, workerData } = require('node:worker_threads');
(${serve.toString()})(require('node:http'), require('node:os'), parentPort, workerData, ${RenderCache.toString()}, ${LogThrottle.toString()});
`;
  return source;
}

export interface MetricsWorkerOptions {
  host: string;
  port: number;
  limits: MetricsLimits;
  /** The Content-Type of /metrics (the registry's). */
  contentType: string;
  /** Renders the exposition, on the main thread. */
  render: () => Promise<string>;
  log: Logger;
  /** Tests: a shorter /healthz timeout. */
  healthTimeoutMs?: number;
  /** Tests: how long a pong answers /healthz without a new ping. */
  healthFreshMs?: number;
}

/** Render counters of the main thread (the worker cannot know how long a render took). */
export interface RenderStats {
  renders: number;
  renderErrors: number;
  /** How long the last finished render took, in ms. */
  lastRenderMs: number;
}

const RESTART_MIN_MS = 1000;
const RESTART_MAX_MS = 30_000;

/**
 * The main thread's side: starts the worker, answers its render requests and
 * pings, relays its log lines, and restarts it if it dies.
 */
export class MetricsWorker {
  /** host:port it listens on (the port chosen when the config said 0). */
  address = '';
  /** The worker's counters as of its last render request (what the exposition shows). */
  stats: WorkerStats;
  readonly render: RenderStats = { renders: 0, renderErrors: 0, lastRenderMs: 0 };
  #worker: Worker | undefined;
  #opts: MetricsWorkerOptions;
  #limits: MetricsLimits;
  #closing = false;
  #closed: Promise<void> = Promise.resolve();
  #nextId = 1;
  #replies = new Map<number, (stats?: WorkerStats) => void>();
  #restartMs = RESTART_MIN_MS;
  #restartTimer: NodeJS.Timeout | undefined;

  private constructor(opts: MetricsWorkerOptions) {
    this.#opts = opts;
    this.#limits = { ...opts.limits };
    this.stats = emptyStats();
  }

  /** Resolves once the worker listens; rejects with the listen error (EADDRINUSE, a bad address ...). */
  static async start(opts: MetricsWorkerOptions): Promise<MetricsWorker> {
    const w = new MetricsWorker(opts);
    await w.#spawn(opts.port);
    return w;
  }

  /** The worker thread, for tests. */
  get worker(): Worker | undefined {
    return this.#worker;
  }

  #spawn(port: number): Promise<void> {
    const init: WorkerInit = {
      host: this.#opts.host, port, limits: this.#limits, maxHeaderBytes: MAX_HEADER_BYTES, closeReasons: METRICS_CLOSE_REASONS,
      contentType: this.#opts.contentType, healthTimeoutMs: this.#opts.healthTimeoutMs ?? HEALTH_TIMEOUT_MS, healthFreshMs: this.#opts.healthFreshMs ?? HEALTH_FRESH_MS,
    };
    const worker = new Worker(workerSource(), { eval: true, workerData: init });
    this.#worker = worker;
    let exited!: () => void;
    this.#closed = new Promise((r) => { exited = r; });
    return new Promise<void>((resolve, reject) => {
      let listening = false;
      let failure: Error | undefined;
      worker.on('message', (m: FromWorker) => {
        switch (m.t) {
          case 'render':
            this.#render(worker, m.id, m.stats);
            return;
          case 'ping':
            worker.postMessage({ t: 'pong' } satisfies ToWorker);
            return;
          case 'log':
            this.#opts.log[m.level](m.obj, m.msg);
            return;
          case 'reply': {
            const r = this.#replies.get(m.id);
            this.#replies.delete(m.id);
            r?.(m.stats);
            return;
          }
          case 'listening':
            listening = true;
            this.address = m.address;
            this.#restartMs = RESTART_MIN_MS;
            resolve();
            return;
          case 'listen_error':
            failure = Object.assign(new Error(m.message), { code: m.code });
            return;
          case 'closed':
            return;
        }
      });
      worker.on('error', (e) => { failure ??= e; });
      worker.once('exit', (code) => {
        if (this.#worker === worker) this.#worker = undefined;
        // Whoever waits for a reply from this worker gets none.
        for (const r of this.#replies.values()) r(undefined);
        this.#replies.clear();
        exited();
        if (!listening) {
          reject(failure ?? new Error(`metrics worker exited with code ${code} before listening`));
          return;
        }
        if (this.#closing) return;
        const restartInMs = this.#restartMs;
        this.#restartMs = Math.min(this.#restartMs * 2, RESTART_MAX_MS);
        this.#opts.log.error({ event: 'metrics_worker_exited', code, err: failure?.message, restartInMs }, 'metrics_worker_exited');
        this.#restartLater(restartInMs);
      });
    });
  }

  #restartLater(ms: number): void {
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = undefined;
      if (this.#closing) return;
      // The same port, also when the config said 0: scrapers know this one.
      const port = Number(/:(\d+)$/.exec(this.address)?.[1] ?? this.#opts.port);
      this.#spawn(port).then(() => {
        this.#opts.log.info({ event: 'metrics_listening', listen: this.address, restarted: true }, 'metrics_listening');
      }, (e: unknown) => {
        if (this.#closing) return;
        const restartInMs = this.#restartMs;
        this.#restartMs = Math.min(this.#restartMs * 2, RESTART_MAX_MS);
        this.#opts.log.error({ event: 'metrics_worker_exited', err: (e as Error).message, restartInMs }, 'metrics_worker_exited');
        this.#restartLater(restartInMs);
      });
    }, ms);
    this.#restartTimer.unref();
  }

  #render(worker: Worker, id: number, stats: WorkerStats): void {
    this.stats = stats;
    const r = this.render;
    r.renders++;
    const t0 = performance.now();
    let p: Promise<string>;
    try {
      p = this.#opts.render();
    } catch (e) {
      p = Promise.reject(e);
    }
    p.then((text) => {
      r.lastRenderMs = performance.now() - t0;
      worker.postMessage({ t: 'text', id, text } satisfies ToWorker);
    }, (e: unknown) => {
      r.renderErrors++;
      this.#opts.log.error({ event: 'metrics_error', err: (e as Error).message }, 'metrics_error');
      worker.postMessage({ t: 'text', id, error: (e as Error).message } satisfies ToWorker);
    });
  }

  #ask(t: 'stats' | 'clear' | 'sync'): Promise<WorkerStats | undefined> {
    const w = this.#worker;
    if (w === undefined) return Promise.resolve(undefined);
    const id = this.#nextId++;
    return new Promise((resolve) => {
      this.#replies.set(id, resolve);
      w.postMessage({ t, id } satisfies ToWorker);
    });
  }

  /** The worker's counters now (a message round trip). */
  async currentStats(): Promise<WorkerStats> {
    return (await this.#ask('stats')) ?? emptyStats();
  }

  /** Drops the cached text: the next scrape renders. Resolves once the worker has done so. */
  async clear(): Promise<void> {
    await this.#ask('clear');
  }

  /** Resolves once the worker has handled every message sent before (limits, clear). */
  async sync(): Promise<void> {
    await this.#ask('sync');
  }

  configure(limits: MetricsLimits): void {
    this.#limits = { ...limits };
    this.#worker?.postMessage({ t: 'limits', limits: this.#limits } satisfies ToWorker);
  }

  /** Stops listening, closes every connection; resolves once the thread has exited. */
  close(): Promise<void> {
    if (!this.#closing) {
      this.#closing = true;
      if (this.#restartTimer !== undefined) clearTimeout(this.#restartTimer);
      const w = this.#worker;
      if (w !== undefined) {
        w.postMessage({ t: 'close' } satisfies ToWorker);
        // The worker exits on its own once closed; this bounds a worker that does not.
        const t = setTimeout(() => void w.terminate(), 2000);
        t.unref();
        void this.#closed.then(() => clearTimeout(t));
      }
    }
    return this.#closed;
  }
}

function emptyStats(): WorkerStats {
  return {
    connections: 0, refused: 0, closed: { idle_timeout: 0, request_timeout: 0, header_too_large: 0, bad_request: 0 },
    rendered: 0, cached: 0, requests: 0, requestErrors: 0, waiting: 0,
  };
}

/** The RenderCacheStats view of both sides (renders on main, scrapes by source in the worker). */
export function cacheStats(render: RenderStats, w: WorkerStats): RenderCacheStats {
  return { renders: render.renders, renderErrors: render.renderErrors, rendered: w.rendered, cached: w.cached, lastRenderMs: render.lastRenderMs };
}
