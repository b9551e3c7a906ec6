/*
 * The real daemon as a child process: config object -> YAML temp file, temp
 * control socket, stderr JSON log captured line by line, the CLI run against it.
 */
import type { ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { MAIN_JS, REPO, shr, sleep, spawnTracked, tempDir, waitFor, q, type ShResult } from './run.js';

export interface CliResult extends ShResult {
  /** Parsed stdout when `json` was asked for and stdout parses; else undefined. */
  json?: any;
}

export interface CliOptions {
  json?: boolean;
  /** Override the socket (default: this daemon's). */
  socket?: string;
  /** Run as another user: a prefix such as `setpriv --reuid=nobody --regid=nogroup --clear-groups`. */
  asUser?: string;
  timeoutMs?: number;
  /** Pass the socket with --socket instead of VSWITCH_SOCKET. */
  socketFlag?: boolean;
}

export function assertBuilt(): void {
  if (!existsSync(MAIN_JS)) {
    throw new Error(`${MAIN_JS} does not exist: run \`cd ${REPO} && pnpm build\` before the integration tests`);
  }
}

/** Runs the CLI (`node packages/cli/dist/main.js ...args`). */
export async function runCli(args: string[], opts: CliOptions & { socket?: string } = {}): Promise<CliResult> {
  const argv = [...args];
  if (opts.json && !argv.includes('--json')) argv.push('--json');
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.VSWITCH_SOCKET;
  let sockArg = '';
  if (opts.socket !== undefined) {
    if (opts.socketFlag) sockArg = ` --socket ${q(opts.socket)}`;
    else env.VSWITCH_SOCKET = opts.socket;
  }
  const envPrefix = opts.socket !== undefined && !opts.socketFlag ? `env VSWITCH_SOCKET=${q(opts.socket)} ` : '';
  const cmd = `${opts.asUser ? opts.asUser + ' ' + envPrefix : ''}${q(process.execPath)} ${q(MAIN_JS)} ${argv.map(q).join(' ')}${sockArg}`;
  const r: CliResult = await shr(cmd, { env, timeoutMs: opts.timeoutMs ?? 15_000, cwd: '/' });
  if (opts.json) {
    try { r.json = JSON.parse(r.stdout); } catch { r.json = undefined; }
  }
  return r;
}

/** Config objects become YAML through the same library the daemon parses with. */
export function toYaml(v: unknown): string {
  return stringify(v);
}

export interface LogLine {
  raw: string;
  /** Parsed JSON, or undefined if the line is not JSON. */
  obj?: any;
}

export class Daemon {
  readonly logs: LogLine[] = [];
  stdout = '';
  exitCode: number | null = null;
  exitSignal: NodeJS.Signals | null = null;
  #buf = '';
  readonly #exited: Promise<void>;

  constructor(
    readonly proc: ChildProcess,
    readonly socket: string,
    readonly configFile: string,
    readonly dir: string,
  ) {
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.#buf += d;
      let i: number;
      while ((i = this.#buf.indexOf('\n')) >= 0) {
        const raw = this.#buf.slice(0, i);
        this.#buf = this.#buf.slice(i + 1);
        if (raw.trim() === '') continue;
        let obj: any;
        try { obj = JSON.parse(raw); } catch { obj = undefined; }
        this.logs.push({ raw, obj });
      }
    });
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => { this.stdout += d; });
    this.#exited = new Promise((resolve) => {
      proc.once('exit', (code, sig) => {
        this.exitCode = code;
        this.exitSignal = sig;
        resolve();
      });
    });
  }

  alive(): boolean {
    return this.exitCode === null && this.exitSignal === null;
  }

  cli(args: string[], opts: CliOptions = {}): Promise<CliResult> {
    return runCli(args, { socket: this.socket, ...opts });
  }

  /** Runs the CLI and throws unless it exits 0; returns parsed JSON when `json`. */
  async ok(args: string[], opts: CliOptions = {}): Promise<CliResult> {
    const r = await this.cli(args, opts);
    if (r.code !== 0) {
      throw new Error(`vswitch ${args.join(' ')} failed (exit ${r.code}): ${r.stderr.trim()}${this.alive() ? '' : ' [daemon is dead]'}`);
    }
    if (opts.json && r.json === undefined) throw new Error(`vswitch ${args.join(' ')} --json: stdout is not JSON: ${r.stdout.slice(0, 500)}`);
    return r;
  }

  async showJson(bridge?: string): Promise<any> {
    return (await this.ok(bridge ? ['show', bridge] : ['show'], { json: true })).json;
  }

  logText(): string {
    return this.logs.map((l) => l.raw).join('\n');
  }

  /** Log lines that mention `word` as a JSON value or key (or, for non-JSON lines, as text). */
  logsMatching(word: string): LogLine[] {
    return this.logs.filter((l) => (l.obj !== undefined ? deepMentions(l.obj, word) : l.raw.includes(word)));
  }

  async waitForLog(word: string, timeoutMs = 10_000): Promise<LogLine> {
    return waitFor(`daemon log line with ${word}`, () => this.logsMatching(word)[0], { timeoutMs });
  }

  /** Waits for exit (up to timeoutMs); returns whether it exited. */
  async waitExit(timeoutMs: number): Promise<boolean> {
    if (!this.alive()) return true;
    const r = await Promise.race([this.#exited.then(() => true), sleep(timeoutMs).then(() => false)]);
    return r;
  }

  /** SIGTERM, wait, SIGKILL fallback. Returns how it ended. */
  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null; killed: boolean }> {
    let killed = false;
    if (this.alive()) {
      this.proc.kill('SIGTERM');
      if (!(await this.waitExit(5000))) {
        killed = true;
        this.proc.kill('SIGKILL');
        await this.waitExit(3000);
      }
    }
    return { code: this.exitCode, signal: this.exitSignal, killed };
  }
}

function deepMentions(v: unknown, word: string): boolean {
  if (typeof v === 'string') return v === word || v.includes(word);
  if (Array.isArray(v)) return v.some((x) => deepMentions(x, word));
  if (v !== null && typeof v === 'object') {
    return Object.entries(v).some(([k, x]) => k === word || deepMentions(x, word));
  }
  return false;
}

export interface StartOptions {
  /** Extra daemon arguments, e.g. ['--log-level', 'debug']. */
  args?: string[];
  /** Raw config text instead of an object. */
  configText?: string;
  /** Do not wait for the socket (for tests of a failing start). */
  noWait?: boolean;
  /** Socket directory mode (default 0755 so other users reach the socket itself). */
  dirMode?: number;
  /** Run the daemon in this network namespace (its TAPs appear there; the control socket is a file, reachable from anywhere). */
  netns?: string;
  /** A command prefix the daemon runs under, e.g. ['setpriv', '--bounding-set', '-net_raw', '--']. */
  wrap?: string[];
  /**
   * Start main.js through its own interpreter line, as the installed `vswitch` starts
   * (systemd's ExecStart, a shell), instead of `node main.js`: the line's interpreter
   * and its one argument (Linux passes the rest of the line as one) before the script.
   */
  direct?: boolean;
  /** node's own arguments before main.js (e.g. ['--trace-gc']); not with `direct`. */
  nodeArgs?: string[];
}

/** The command the kernel runs for a script: its `#!` interpreter, the line's argument if any, the script. */
export function interpreterLine(script: string): string[] {
  const first = readFileSync(script, 'utf8').split('\n', 1)[0];
  if (!first.startsWith('#!')) throw new Error(`${script}: no interpreter line`);
  const line = first.slice(2).trim();
  const sp = line.search(/[ \t]/);
  return sp < 0 ? [line, script] : [line.slice(0, sp), line.slice(sp).trim(), script];
}

/** Starts `vswitch daemon --config FILE --socket SOCK` and waits until `show --json` answers. */
export async function startDaemon(config: unknown, opts: StartOptions = {}): Promise<Daemon> {
  assertBuilt();
  const dir = tempDir('d');
  chmodSync(dir, opts.dirMode ?? 0o755);
  const socket = join(dir, 'vswitch.sock');
  const configFile = join(dir, 'vswitch.yaml');
  // Several daemons run at once in some tests: no metrics listener unless a test asks for one.
  let withDefaults = config !== null && typeof config === 'object' && !('metrics' in config)
    ? { ...(config as object), metrics: { listen: 'off' } }
    : config;
  // Each daemon keeps its leases and runtime state (runtime.json) in its own dir, never in /var/lib/vswitch,
  // where one test's runtime ports would come back in the next test's daemon. In the file, so a restart finds it.
  const stateArgs: string[] = [];
  if (withDefaults !== null && typeof withDefaults === 'object' && !('stateDir' in withDefaults)) {
    withDefaults = { ...(withDefaults as object), stateDir: join(dir, 'state') };
  }
  if (opts.configText !== undefined && !/^stateDir:/m.test(opts.configText) && !(opts.args ?? []).includes('--state-dir')) {
    stateArgs.push('--state-dir', join(dir, 'state'));
  }
  writeFileSync(configFile, opts.configText ?? toYaml(withDefaults));
  const env = { ...process.env };
  delete env.VSWITCH_SOCKET;
  // SIGTERM if the test process dies: the daemon then removes its TAPs and socket itself.
  const argv = ['daemon', '--config', configFile, '--socket', socket, ...stateArgs, ...(opts.args ?? [])];
  // `ip netns exec` execs the command, so the tracked pid is the daemon's own (env -S execs node too).
  const full = [...(opts.wrap ?? []), ...(opts.direct ? interpreterLine(MAIN_JS) : [process.execPath, ...(opts.nodeArgs ?? []), MAIN_JS]), ...argv];
  const [cmd, args] = opts.netns ? ['ip', ['netns', 'exec', opts.netns, ...full]] : [full[0], full.slice(1)];
  const proc = spawnTracked(cmd, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
    cwd: dir,
  }, 'TERM');
  const d = new Daemon(proc, socket, configFile, dir);
  if (opts.noWait) return d;
  try {
    await waitFor('the daemon to answer show --json', async () => {
      if (!d.alive()) throw new Error(`daemon exited (code ${d.exitCode}, signal ${d.exitSignal}): ${d.logText().slice(-2000)}`);
      const r = await d.cli(['show', '--json']);
      return r.code === 0;
    }, { timeoutMs: 15_000, intervalMs: 250 });
  } catch (e) {
    if (!d.alive()) throw new Error(`daemon did not start: exit ${d.exitCode}; stderr:\n${d.logText().slice(-3000)}`);
    throw e;
  }
  return d;
}

/* ---------- Tolerant readers for the JSON views (the contract names fields, not exact shapes) ---------- */

/** Every object nested anywhere in `v` (including v). */
export function allObjects(v: unknown, out: any[] = []): any[] {
  if (Array.isArray(v)) v.forEach((x) => allObjects(x, out));
  else if (v !== null && typeof v === 'object') {
    out.push(v);
    Object.values(v).forEach((x) => allObjects(x, out));
  }
  return out;
}

/**
 * Finds the port object named `name` in a `show`/`stats` JSON view: either an
 * object with name/port/ifname === name, or the value under a key `name` of a map.
 */
export function findPort(view: unknown, name: string): any | undefined {
  for (const o of allObjects(view)) {
    if (o.name === name || o.port === name || o.ifname === name) {
      if (!('ports' in o)) return o;
    }
  }
  for (const o of allObjects(view)) {
    const v = o[name];
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) return v;
  }
  return undefined;
}

/** First numeric field among `keys` (also looked up one level down, e.g. {rx:{frames}}). */
export function num(o: any, ...keys: string[]): number | undefined {
  if (o === null || typeof o !== 'object') return undefined;
  for (const k of keys) {
    const v = k.split('.').reduce<any>((acc, part) => (acc === null || acc === undefined ? undefined : acc[part]), o);
    if (typeof v === 'number') return v;
    if (typeof v === 'string' && /^\d+$/.test(v)) return Number(v);
  }
  return undefined;
}

export const RX_FRAMES = ['rxFrames', 'rx_frames', 'rx.frames', 'counters.rxFrames', 'counters.rx_frames', 'stats.rxFrames'];
export const TX_FRAMES = ['txFrames', 'tx_frames', 'tx.frames', 'counters.txFrames', 'counters.tx_frames', 'stats.txFrames'];
export const RX_BYTES = ['rxBytes', 'rx_bytes', 'rx.bytes', 'counters.rxBytes', 'counters.rx_bytes', 'stats.rxBytes'];
export const TX_BYTES = ['txBytes', 'tx_bytes', 'tx.bytes', 'counters.txBytes', 'counters.tx_bytes', 'stats.txBytes'];

/** Drop counter `reason` of a port object from `stats --json` (0 when absent: drops lists only non-zero reasons). */
export function dropCount(port: any, reason: string): number {
  for (const path of ['drops', 'counters.drops', 'stats.drops']) {
    const d = path.split('.').reduce<any>((acc, p) => (acc == null ? undefined : acc[p]), port);
    if (d && typeof d === 'object') {
      if (Array.isArray(d)) {
        const e = d.find((x: any) => x.reason === reason);
        return e ? Number(e.count ?? e.value ?? 0) : 0;
      }
      return Number(d[reason] ?? 0);
    }
  }
  throw new Error(`no drops in port view: ${JSON.stringify(port)}`);
}

/** A port's state from `show --json`: 'up' / 'down' / ... */
export function portState(port: any): string | undefined {
  if (port == null) return undefined;
  if (typeof port.state === 'string') return port.state;
  if (typeof port.up === 'boolean') return port.up ? 'up' : 'down';
  if (typeof port.status === 'string') return port.status;
  return undefined;
}

/** Entries of `showmacs --json` / `fdb show --json`: [{mac, port, vlan, ...}] wherever they sit. */
export function macEntries(view: unknown): { mac: string; port: string; vlan: number; raw: any }[] {
  const out: { mac: string; port: string; vlan: number; raw: any }[] = [];
  for (const o of allObjects(view)) {
    if (typeof o.mac === 'string') {
      out.push({
        mac: o.mac.toLowerCase(),
        port: String(o.port ?? o.ifname ?? o.dev ?? ''),
        vlan: Number(o.vlan ?? o.vid ?? NaN),
        raw: o,
      });
    }
  }
  return out;
}
