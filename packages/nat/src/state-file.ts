/*
 * Durable state files (DHCP leases, port forwards): written so that a crash or
 * kill -9 at any moment leaves either the old or the new content, never a torn
 * file: write a temp file in the same directory, fsync it, rename over the target,
 * fsync the directory. Reads refuse symlinks and non-regular files, and the temp
 * file is opened with O_NOFOLLOW: the state directory is the daemon's, and a link
 * planted there must not redirect a write or feed it foreign content.
 *
 * Two writers share that protocol:
 * - `writeStateFile`, synchronous: small files written on an operator's command
 *   (forwards), and a lease store's last write when it closes;
 * - `writeStateFileAsync`: the lease stores' group commits. The data write and
 *   both fsyncs run in libuv's threadpool, so the event loop (forwarding) never
 *   waits for the disk; only the rename runs on the main thread (a metadata
 *   operation of microseconds), which keeps the order of renames the order in which
 *   the main thread decided them.
 * Per path, async writes run one after the other, and a write is dropped before
 * its rename (its temp file removed, `false` returned) when a newer write of the
 * same path was issued after it was (a synchronous one that could not wait for it,
 * e.g. a store closing during a reload): a file never goes back to older content.
 *
 * Temp files are `.<name>.<pid>.tmp` (`.<name>.<pid>.<n>.tmp` when that one is in
 * use by a write in flight); `removeStaleTemps` deletes those of other processes
 * (a crash leaves them behind) when a state directory is opened.
 */
import {
  closeSync, fsyncSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, unlinkSync, writeSync, constants,
} from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import { dirname, join, basename } from 'node:path';

export class StateFileError extends Error {
  readonly code = 'ESTATE';
}

/** Creates the state directory (0700) if needed; refuses a symlink or a non-directory. */
export function ensureStateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  if (st.isSymbolicLink() || !st.isDirectory()) throw new StateFileError(`state directory ${dir} is not a plain directory`);
}

const TMP = /^\..+?\.(\d+)(?:\.\d+)?\.tmp$/;

/**
 * Removes the temp files other processes left in `dir` (a crash between write and
 * rename); ours (this pid) may belong to a write in flight and stay. Returns the
 * names removed. Never throws: a directory it cannot read has nothing to clean.
 */
export function removeStaleTemps(dir: string): string[] {
  const gone: string[] = [];
  let names: string[];
  try { names = readdirSync(dir); } catch { return gone; }
  for (const name of names) {
    const m = TMP.exec(name);
    if (m === null || Number(m[1]) === process.pid) continue;
    try {
      if (lstatSync(join(dir, name)).isDirectory()) continue;
      unlinkSync(join(dir, name));
      gone.push(name);
    } catch { /* raced with someone else, or not ours to remove */ }
  }
  return gone;
}

/** Per path: writes issued (the newest wins) and the async write in flight, if any. */
interface PathState {
  issued: number;
  tail: Promise<boolean> | undefined;
  busyTmp: string | undefined;
}
const paths = new Map<string, PathState>();
let uniq = 0;

function stateOf(path: string): PathState {
  let s = paths.get(path);
  if (s === undefined) paths.set(path, s = { issued: 0, tail: undefined, busyTmp: undefined });
  return s;
}

function tmpFor(path: string, s: PathState | undefined): string {
  const plain = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  return s?.busyTmp === plain ? join(dirname(path), `.${basename(path)}.${process.pid}.${++uniq}.tmp`) : plain;
}

const TMP_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW;

export function writeStateFile(path: string, content: string): void {
  const s = paths.get(path);
  if (s !== undefined) s.issued++; // an async write in flight is older: it must not rename after us
  const dir = dirname(path);
  const tmp = tmpFor(path, s);
  const fd = openSync(tmp, TMP_FLAGS, 0o600);
  try {
    const data = Buffer.from(content, 'utf8');
    let off = 0;
    while (off < data.length) off += writeSync(fd, data, off, data.length - off);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    try { unlinkSync(tmp); } catch { /* best effort */ }
    throw e;
  }
  closeSync(fd);
  try {
    renameSync(tmp, path);
  } catch (e) {
    try { unlinkSync(tmp); } catch { /* best effort */ }
    throw e;
  }
  const dfd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

/**
 * writeStateFile off the event loop (see the header). Resolves true once the new
 * content is durable (directory fsynced), false if a newer write of the path
 * superseded it before its rename; rejects on an I/O error (the old content stays).
 */
export function writeStateFileAsync(path: string, content: string | Uint8Array): Promise<boolean> {
  const s = stateOf(path);
  const ticket = ++s.issued;
  const prev = s.tail;
  const run = (async (): Promise<boolean> => {
    if (prev !== undefined) await prev.catch(() => false);
    if (s.issued !== ticket) return false; // superseded while it waited: nothing to do
    return writeOnce(path, content, s, ticket);
  })();
  s.tail = run;
  const clear = (): void => { if (s.tail === run) paths.delete(path); };
  run.then(clear, clear);
  return run;
}

async function writeOnce(path: string, content: string | Uint8Array, s: PathState, ticket: number): Promise<boolean> {
  const tmp = tmpFor(path, undefined);
  s.busyTmp = tmp;
  try {
    const fh = await open(tmp, TMP_FLAGS, 0o600);
    try {
      await fh.writeFile(typeof content === 'string' ? Buffer.from(content, 'utf8') : content);
      await fh.sync();
    } catch (e) {
      await fh.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
      throw e;
    }
    await fh.close();
    if (s.issued !== ticket) {
      await unlink(tmp).catch(() => undefined);
      return false;
    }
    try {
      renameSync(tmp, path);
    } catch (e) {
      await unlink(tmp).catch(() => undefined);
      throw e;
    }
  } finally {
    s.busyTmp = undefined;
  }
  const dh = await open(dirname(path), constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
  return true;
}

/** The file's content, or undefined if it does not exist. Throws on a symlink or a non-regular file. */
export function readStateFile(path: string): string | undefined {
  let st;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  if (st.isSymbolicLink()) throw new StateFileError(`${path} is a symlink; refusing to follow it`);
  if (!st.isFile()) throw new StateFileError(`${path} is not a regular file`);
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}
