import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { removeStaleTemps, writeStateFile, writeStateFileAsync } from './state-file.js';

let dir: string;
beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'vswitch-state-')); });
afterEach(() => { rmSync(dir, { recursive: true, force: true }); });

const temps = (): string[] => readdirSync(dir).filter((n) => n.endsWith('.tmp')).sort();

describe('writeStateFileAsync', () => {
  it('writes atomically with mode 0600 and leaves no temp file', async () => {
    const path = join(dir, 'leases-a.json');
    expect(await writeStateFileAsync(path, 'one\n')).toBe(true);
    expect(readFileSync(path, 'utf8')).toBe('one\n');
    expect(lstatSync(path).mode & 0o777).toBe(0o600);
    expect(await writeStateFileAsync(path, Buffer.from('two\n'))).toBe(true);
    expect(readFileSync(path, 'utf8')).toBe('two\n');
    expect(temps()).toEqual([]);
  });

  it('a write issued later always wins: queued async writes run in order, a sync write supersedes those in flight', async () => {
    const path = join(dir, 'f.json');
    const a = writeStateFileAsync(path, 'a');
    const b = writeStateFileAsync(path, 'b');
    writeStateFile(path, 'sync'); // e.g. a store closing during a reload
    expect(readFileSync(path, 'utf8')).toBe('sync');
    expect(await a).toBe(false);
    expect(await b).toBe(false);
    expect(readFileSync(path, 'utf8')).toBe('sync');
    expect(temps()).toEqual([]);
    const c = writeStateFileAsync(path, 'c');
    const d = writeStateFileAsync(path, 'd');
    expect([await c, await d]).toEqual([false, true]); // c was superseded while it waited: one write
    expect(readFileSync(path, 'utf8')).toBe('d');
  });

  it('refuses a symlink planted at its temp name, and the old content stays', async () => {
    const path = join(dir, 'f.json');
    writeStateFile(path, 'old');
    const target = join(dir, 'elsewhere');
    writeFileSync(target, 'precious');
    symlinkSync(target, join(dir, `.f.json.${process.pid}.tmp`));
    await expect(writeStateFileAsync(path, 'new')).rejects.toThrow(/ELOOP|symbolic/i);
    expect(readFileSync(target, 'utf8')).toBe('precious');
    expect(readFileSync(path, 'utf8')).toBe('old');
  });

  it('fails cleanly when the target cannot be replaced (a directory in its place)', async () => {
    const path = join(dir, 'f.json');
    mkdirSync(path);
    await expect(writeStateFileAsync(path, 'x')).rejects.toThrow();
    expect(lstatSync(path).isDirectory()).toBe(true);
    expect(temps()).toEqual([]);
  });
});

describe('removeStaleTemps', () => {
  it('removes the temp files of other processes, keeps ours, other files and directories', () => {
    const other = process.pid + 1;
    for (const f of [`.leases-a.json.${other}.tmp`, `.forwards-r0.json.${other}.3.tmp`, `.leases-b.json.${process.pid}.tmp`,
      'leases-a.json', `.x.${other}.tmpx`]) writeFileSync(join(dir, f), '');
    mkdirSync(join(dir, `.d.${other}.tmp`));
    symlinkSync('/nonexistent', join(dir, `.l.json.${other}.tmp`));
    expect(removeStaleTemps(dir).sort()).toEqual([`.forwards-r0.json.${other}.3.tmp`, `.l.json.${other}.tmp`, `.leases-a.json.${other}.tmp`]);
    expect(readdirSync(dir).sort()).toEqual([`.d.${other}.tmp`, `.leases-b.json.${process.pid}.tmp`, `.x.${other}.tmpx`, 'leases-a.json'].sort());
    expect(removeStaleTemps(join(dir, 'missing'))).toEqual([]);
    expect(existsSync(join(dir, 'leases-a.json'))).toBe(true);
  });
});
