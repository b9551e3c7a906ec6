/*
 * The managed gobgpd: one child process per daemon, its gRPC API on a loopback
 * port of its own (found free at each start), its log lines in the daemon's log,
 * restarted with backoff (0.1 s doubling to 30 s; back to 0.1 s after a minute up:
 * the first restart is quick because a peer that keeps no routes through our restart,
 * FRR 8.4 for EVPN, stops forwarding to us until the new gobgpd has re-advertised them)
 * when it dies, stopped (SIGTERM, SIGKILL after 3 s) with the daemon or when the
 * section goes.
 *
 * gobgpd is started without a config file: everything (global AS, router id,
 * listen address, peers, paths) goes through its gRPC API, so one code path drives
 * the managed gobgpd and an operator's, and a restart re-applies all of it from
 * the daemon's state. The state directory keeps `gobgpd.pid` (the running pid) so an
 * operator or a crashed daemon's successor can find a leftover.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import type { Logger } from '../log.js';

export const GOBGPD = 'gobgpd';
const FIRST_BACKOFF_MS = 100;

/** A free TCP port on 127.0.0.1 (bound then released: gobgpd binds it a moment later). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (typeof a === 'object' && a !== null ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

export class GobgpdProcess {
  #child: ChildProcess | undefined;
  #stopping = false;
  #timer: NodeJS.Timeout | undefined;
  #backoffMs = FIRST_BACKOFF_MS;
  #startedAt = 0;
  restarts = 0;
  address = '';
  lastExit = '';

  /** `up(address)` is called after each start, once the API port is chosen. */
  constructor(private readonly log: Logger, private readonly stateDir: string | undefined, private readonly up: (address: string) => void) {}

  get pid(): number | undefined { return this.#child?.pid; }

  start(): void {
    this.#stopping = false;
    this.#reapLeftover();
    void this.#spawn();
  }

  /** A gobgpd a killed daemon left behind (its pid file names it, /proc says it is gobgpd) is stopped. */
  #reapLeftover(): void {
    if (this.stateDir === undefined) return;
    try {
      const pid = parseInt(readFileSync(join(this.stateDir, 'gobgpd.pid'), 'utf8'), 10);
      if (pid > 1 && readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === GOBGPD) {
        process.kill(pid, 'SIGTERM');
        this.log.warn({ event: 'gobgpd_leftover_stopped', pid }, 'gobgpd_leftover_stopped');
      }
    } catch { /* none */ }
  }

  async #spawn(): Promise<void> {
    if (this.#stopping) return;
    let port: number;
    try {
      port = await freePort();
    } catch (e) {
      this.#retry(`no free port: ${(e as Error).message}`);
      return;
    }
    if (this.#stopping) return;
    this.address = `127.0.0.1:${port}`;
    const child = spawn(GOBGPD, ['--api-hosts', this.address, '--log-plain', '--pprof-disable', '--log-level', 'info'], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.#child = child;
    this.#startedAt = Date.now();
    const lines = (buf: Buffer): void => {
      for (const line of buf.toString('utf8').split('\n')) if (line.trim() !== '') this.log.info({ event: 'gobgpd_log', line: line.slice(0, 500) }, 'gobgpd_log');
    };
    child.stdout?.on('data', lines);
    child.stderr?.on('data', lines);
    child.once('error', (e) => {
      this.log.error({ event: 'gobgpd_failed', error: e.message }, 'gobgpd_failed');
    });
    child.once('exit', (code, signal) => {
      if (this.#child === child) this.#child = undefined;
      this.#pidFile(undefined);
      this.lastExit = signal !== null ? `signal ${signal}` : `exit ${code}`;
      if (this.#stopping) return;
      if (Date.now() - this.#startedAt > 60_000) this.#backoffMs = FIRST_BACKOFF_MS;
      this.#retry(this.lastExit);
    });
    if (child.pid !== undefined) {
      this.#pidFile(child.pid);
      this.log.info({ event: 'gobgpd_started', pid: child.pid, api: this.address }, 'gobgpd_started');
      this.up(this.address);
    }
  }

  #retry(why: string): void {
    const delay = this.#backoffMs;
    this.#backoffMs = Math.min(this.#backoffMs * 2, 30_000);
    this.restarts++;
    this.log.warn({ event: 'gobgpd_exited', why, restartInMs: delay }, 'gobgpd_exited');
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.#spawn(), delay);
    this.#timer.unref();
  }

  #pidFile(pid: number | undefined): void {
    if (this.stateDir === undefined) return;
    const p = join(this.stateDir, 'gobgpd.pid');
    try {
      if (pid === undefined) rmSync(p, { force: true });
      else writeFileSync(p, `${pid}\n`);
    } catch { /* a view only */ }
  }

  stop(): void {
    this.#stopping = true;
    clearTimeout(this.#timer);
    const c = this.#child;
    this.#child = undefined;
    if (c === undefined || c.exitCode !== null) return;
    c.kill('SIGTERM');
    const t = setTimeout(() => c.kill('SIGKILL'), 3000);
    t.unref();
    c.once('exit', () => clearTimeout(t));
  }
}
