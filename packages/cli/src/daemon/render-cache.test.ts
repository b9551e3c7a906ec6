/*
 * RenderCache: one render per interval however many scrapes; concurrent scrapes
 * share a running render; a failed render is not cached. (On the old code every
 * scrape rendered: there was no cache at all.)
 */
import { describe, expect, it } from 'vitest';
import { RenderCache } from './render-cache.js';

function deferred(): { promise: Promise<string>; resolve: (s: string) => void; reject: (e: Error) => void } {
  let resolve!: (s: string) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<string>((res, rej) => { resolve = res; reject = rej; });
  return { promise, resolve, reject };
}

describe('RenderCache', () => {
  it('500 concurrent gets share one render', async () => {
    let renders = 0;
    const d = deferred();
    const c = new RenderCache(() => { renders++; return d.promise; }, 1000, () => 0);
    const all = Array.from({ length: 500 }, () => c.get());
    d.resolve('text');
    const got = await Promise.all(all);
    expect(renders).toBe(1);
    expect(got.every((g) => g.text === 'text')).toBe(true);
    expect(got.filter((g) => g.source === 'render')).toHaveLength(1);
    expect(c.stats).toMatchObject({ renders: 1, rendered: 1, cached: 499 });
  });

  it('serves the cached text within the interval, renders again after it', async () => {
    let now = 0;
    let n = 0;
    const c = new RenderCache(async () => `r${++n}`, 1000, () => now);
    expect(await c.get()).toEqual({ text: 'r1', source: 'render' });
    now = 999;
    expect(await c.get()).toEqual({ text: 'r1', source: 'cache' });
    now = 1000;
    expect(await c.get()).toEqual({ text: 'r2', source: 'render' });
    c.intervalMs = 0;
    expect(await c.get()).toEqual({ text: 'r3', source: 'render' });
    c.intervalMs = 1000;
    c.clear();
    expect(await c.get()).toEqual({ text: 'r4', source: 'render' });
    expect(c.stats).toMatchObject({ renders: 4, rendered: 4, cached: 1 });
  });

  it('the interval counts from the end of a render', async () => {
    let now = 0;
    const c = new RenderCache(async () => { now += 300; return 'x'; }, 1000, () => now);
    await c.get();
    expect(c.stats.lastRenderMs).toBe(300);
    now = 1299;
    expect((await c.get()).source).toBe('cache');
  });

  it('a failed render reaches every waiter and is not cached', async () => {
    let fail = true;
    const d = deferred();
    const c = new RenderCache(() => (fail ? d.promise : Promise.resolve('ok')), 1000, () => 0);
    const a = c.get();
    const b = c.get();
    d.reject(new Error('boom'));
    await expect(a).rejects.toThrow('boom');
    await expect(b).rejects.toThrow('boom');
    fail = false;
    expect(await c.get()).toEqual({ text: 'ok', source: 'render' });
    expect(c.stats).toMatchObject({ renders: 2, renderErrors: 1 });
  });

  it('a render that throws synchronously is counted and rejected', async () => {
    const c = new RenderCache(() => { throw new Error('sync'); }, 1000, () => 0);
    await expect(c.get()).rejects.toThrow('sync');
    expect(c.stats.renderErrors).toBe(1);
  });
});
