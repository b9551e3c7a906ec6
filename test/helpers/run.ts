/*
 * One test run: a unique name prefix, a registry of everything the run creates
 * (network namespaces, links, child processes, temp dirs) and a cleanup that
 * removes it all. Tests call `cleanup()` from afterAll/afterEach; it also runs
 * synchronously on process exit and on SIGINT/SIGTERM as a last resort, and the
 * registry is mirrored to /tmp/vswitch-test-<prefix>.json so that
 * test/scripts/cleanup.sh can remove leftovers of a run that was SIGKILLed.
 *
 * Shell helpers: `sh`/`nsExec` throw (with stderr) on failure, `shr`/`nsExecR`
 * return {code, stdout, stderr}; all have a timeout.
 */
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import { join } from 'node:path';

/**
 * 'v' + 4 hex chars: `${PREFIX}vm1` stays far below the 15-char IFNAMSIZ limit. Files run
 * two at a time (vitest.config.ts): the first hex digit is the vitest worker's id, so two
 * files that run at once never share a prefix; the other three are random, so a run never
 * meets leftovers of an earlier one either.
 */
const POOL = Number(process.env.VITEST_POOL_ID ?? 0) % 16;
export const PREFIX = 'v' + POOL.toString(16) + randomBytes(2).toString('hex').slice(0, 3);

export const REPO = new URL('../..', import.meta.url).pathname.replace(/\/$/, '');

export interface ShResult {
  code: number;
  stdout: string;
  stderr: string;
  /** The signal that ended the command, e.g. SIGKILL after the timeout. */
  signal: NodeJS.Signals | null;
}

export interface ShOptions {
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  input?: string;
  cwd?: string;
}

const registry = {
  namespaces: new Set<string>(),
  links: new Set<string>(),
  procs: new Set<ChildProcess>(),
  dirs: new Set<string>(),
};

const stateFile = join(tmpdir(), `vswitch-test-${PREFIX}.json`);

function persist(): void {
  try {
    writeFileSync(stateFile, JSON.stringify({
      prefix: PREFIX,
      pid: process.pid,
      namespaces: [...registry.namespaces],
      links: [...registry.links],
      pids: [...registry.procs].map((p) => p.pid).filter((p) => p !== undefined),
      dirs: [...registry.dirs],
    }));
  } catch { /* best effort */ }
}

/**
 * Spawns a tracked child that gets `deathSig` when this process dies, even by
 * SIGKILL (setpriv --pdeathsig; it execs, so the pid is the command's own).
 */
export function spawnTracked(cmd: string, args: string[], opts: SpawnOptions = {}, deathSig: 'KILL' | 'TERM' | 'INT' = 'KILL'): ChildProcess {
  return trackProc(spawn('setpriv', ['--pdeathsig', deathSig, '--', cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...opts }));
}

/** Names a test object: `${PREFIX}${suffix}`; throws if it would not fit an interface name. */
export function ifname(suffix: string): string {
  const n = PREFIX + suffix;
  if (n.length > 15) throw new Error(`interface name ${n} longer than 15 chars`);
  return n;
}

/** Namespace name for this run. */
export function nsname(suffix: string): string {
  return `${PREFIX}-${suffix}`;
}

export function trackNamespace(ns: string): void { registry.namespaces.add(ns); persist(); }
export function untrackNamespace(ns: string): void { registry.namespaces.delete(ns); persist(); }
export function trackLink(link: string): void { registry.links.add(link); persist(); }
export function untrackLink(link: string): void { registry.links.delete(link); persist(); }
export function trackProc(p: ChildProcess): ChildProcess {
  registry.procs.add(p);
  p.once('exit', () => { registry.procs.delete(p); persist(); });
  persist();
  return p;
}
export function tempDir(tag = 'tmp'): string {
  const d = mkdtempSync(join(tmpdir(), `vswitch-${PREFIX}-${tag}-`));
  registry.dirs.add(d);
  persist();
  return d;
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen(0, '127.0.0.1', resolve);
  });
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

const tools = new Map<string, string>();

/** A script written once per run into a temp dir (python tools of the tests); its path. Written again after a cleanup removed it. */
export function toolFile(name: string, text: string): string {
  let path = tools.get(name);
  if (path === undefined || !existsSync(path)) {
    path = join(tempDir('tool'), name);
    writeFileSync(path, text);
    tools.set(name, path);
  }
  return path;
}

/** Runs `bash -c cmd`; never throws (except on spawn failure). */
export function shr(cmd: string, opts: ShOptions = {}): Promise<ShResult> {
  const timeoutMs = opts.timeoutMs ?? 20_000;
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', cmd], {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => {
      stderr += `\n[test harness: timed out after ${timeoutMs} ms]`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr, signal });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
  });
}

/** Runs `bash -c cmd`; throws with the command, exit code and stderr unless it exits 0. Returns stdout. */
export async function sh(cmd: string, opts: ShOptions = {}): Promise<string> {
  const r = await shr(cmd, opts);
  if (r.code !== 0) {
    throw new Error(`command failed (exit ${r.code}${r.signal ? `, ${r.signal}` : ''}): ${cmd}\n${r.stderr.trim()}\n${r.stdout.trim()}`);
  }
  return r.stdout;
}

export function q(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export function nsExecR(ns: string, cmd: string, opts: ShOptions = {}): Promise<ShResult> {
  return shr(`ip netns exec ${q(ns)} bash -c ${q(cmd)}`, opts);
}

export function nsExec(ns: string, cmd: string, opts: ShOptions = {}): Promise<string> {
  return sh(`ip netns exec ${q(ns)} bash -c ${q(cmd)}`, opts);
}

export async function addNamespace(ns: string): Promise<void> {
  trackNamespace(ns);
  await sh(`ip netns add ${q(ns)}`);
  await sh(`ip -n ${q(ns)} link set lo up`);
}

/** Creates a veth pair in the root namespace (both ends tracked). */
export async function addVeth(a: string, b: string): Promise<void> {
  trackLink(a);
  trackLink(b);
  await sh(`ip link add ${q(a)} type veth peer name ${q(b)}`);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `fn` until it returns a truthy value (returned) or throws the last error / a timeout error. */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  { timeoutMs = 10_000, intervalMs = 200 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as T;
      last = undefined;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) {
      const why = last instanceof Error ? `: ${last.message}` : last !== undefined ? `: ${String(last)}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await sleep(intervalMs);
  }
}

async function killProc(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill('SIGTERM');
  const t = await Promise.race([exited.then(() => 'ok'), sleep(3000).then(() => 'timeout')]);
  if (t === 'timeout') {
    p.kill('SIGKILL');
    await Promise.race([exited, sleep(2000)]);
  }
}

/** Removes everything the run registered. Safe to call many times. */
export async function cleanup(): Promise<void> {
  await Promise.all([...registry.procs].map(killProc));
  for (const ns of registry.namespaces) {
    // Kill anything still running inside (tcpdump, ping, iperf3), then delete.
    await shr(`ip netns pids ${q(ns)} 2>/dev/null | xargs -r kill -9; ip netns del ${q(ns)}`, { timeoutMs: 10_000 });
  }
  registry.namespaces.clear();
  for (const l of registry.links) {
    await shr(`ip link show ${q(l)} >/dev/null 2>&1 && ip link del ${q(l)}`, { timeoutMs: 10_000 });
  }
  registry.links.clear();
  for (const d of registry.dirs) rmSync(d, { recursive: true, force: true });
  registry.dirs.clear();
  persist();
}

/** Synchronous last-resort cleanup for process exit/signals. */
function cleanupSync(): void {
  for (const p of registry.procs) {
    try { p.kill('SIGKILL'); } catch { /* gone */ }
  }
  for (const ns of registry.namespaces) {
    spawnSync('bash', ['-c', `ip netns pids ${q(ns)} 2>/dev/null | xargs -r kill -9; ip netns del ${q(ns)}`], { timeout: 5000 });
  }
  for (const l of registry.links) spawnSync('ip', ['link', 'del', l], { timeout: 5000, stdio: 'ignore' });
  for (const d of registry.dirs) {
    try { rmSync(d, { recursive: true, force: true }); } catch { /* ignore */ }
  }
  try { rmSync(stateFile, { force: true }); } catch { /* ignore */ }
}

let hooked = false;
function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.once('exit', cleanupSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      cleanupSync();
      process.kill(process.pid, sig);
    });
  }
}
hookExit();

/** Where the CLI/daemon entry point is. */
export const MAIN_JS = join(REPO, 'packages/cli/dist/main.js');
