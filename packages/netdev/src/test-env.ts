/*
 * For the tests only (excluded from the build): what the addon's tests that open real
 * devices share. Each file gets its own registry (`testEnv()`), so the handles,
 * namespaces and links a file made are released by that file's afterAll, also when a
 * test failed half-way.
 */
import { execFileSync } from 'node:child_process';
import { afterAll } from 'vitest';
import * as nd from './index.js';

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
