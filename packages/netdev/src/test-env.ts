/*
 * For the tests only (excluded from the build): what the addon's tests that open real
 * devices share. Each file gets its own registry (`testEnv()`), so the handles,
 * namespaces and links a file made are released by that file's afterAll, also when a
 * test failed half-way.
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll } from 'vitest';
import * as nd from './index.js';

const execFileP = promisify(execFile);
/** The built addon, loaded by the child processes of childNs().run. */
const ADDON = fileURLToPath(new URL('../build/Release/netdev.node', import.meta.url));

export function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export interface TestEnv {
  handles: Set<number>;
  netns: Set<string>;
  /** Links in the test's own namespace (deleted before the namespaces). */
  links: Set<string>;
}

export function testEnv(): TestEnv {
  const env: TestEnv = { handles: new Set(), netns: new Set(), links: new Set() };
  afterAll(() => {
    for (const h of env.handles) try { nd.close(h); } catch { /* gone */ }
    for (const l of env.links) try { ip('link', 'del', l); } catch { /* gone */ }
    for (const n of env.netns) try { ip('netns', 'del', n); } catch { /* gone */ }
  });
  return env;
}

/** Polls `cond` every 5 ms for up to `ms`; its last answer. */
export async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 5));
  }
  return cond();
}

export interface ChildNs {
  /** The namespace's name: the prefix and 6 hex digits of this run's own. */
  readonly name: string;
  /**
   * `node -e script args...` under `ip netns exec` in the namespace: the script starts
   * with the addon loaded as `nd` (process.argv[1] is its path; args from argv[2]) and
   * prints one JSON line, returned here; a line with an `error` key throws.
   */
  run<T>(script: string, args: string[], opts?: { timeout?: number; env?: NodeJS.ProcessEnv; maxBuffer?: number }): Promise<T>;
}

/**
 * A namespace of the calling file's own, lo up, made in beforeAll and deleted in
 * afterAll (also when a test failed), for the tests that need a process of their own:
 * its own event loop to time, an environment variable the addon reads at load, or
 * sockets on a loopback no other test uses.
 */
export function childNs(prefix: string): ChildNs {
  const name = `${prefix}${randomBytes(3).toString('hex')}`;
  beforeAll(() => {
    ip('netns', 'add', name);
    ip('-n', name, 'link', 'set', 'lo', 'up');
  });
  afterAll(() => {
    try { ip('netns', 'del', name); } catch { /* not made */ }
  });
  return {
    name,
    async run<T>(script: string, args: string[], opts: { timeout?: number; env?: NodeJS.ProcessEnv; maxBuffer?: number } = {}): Promise<T> {
      const load = 'const m = { exports: {} }; process.dlopen(m, process.argv[1]); const nd = m.exports;\n';
      const { stdout } = await execFileP('ip', ['netns', 'exec', name, process.execPath, '-e', load + script, ADDON, ...args],
        { timeout: opts.timeout ?? 20_000, env: opts.env, maxBuffer: opts.maxBuffer });
      const r = JSON.parse(stdout);
      if (r.error !== undefined) throw new Error(`child in ${name}: ${JSON.stringify(r)}`);
      return r as T;
    },
  };
}
