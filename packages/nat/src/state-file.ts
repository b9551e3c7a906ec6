/*
 * Durable state files (DHCP leases, port forwards): written so that a crash or
 * kill -9 at any moment leaves either the old or the new content, never a torn
 * file: write a temp file in the same directory, fsync it, rename over the target,
 * fsync the directory. Reads refuse symlinks and non-regular files: the state
 * directory is the daemon's, and a link planted there must not redirect a write
 * or feed it foreign content.
 */
import { closeSync, fsyncSync, lstatSync, mkdirSync, openSync, readFileSync, renameSync, unlinkSync, writeSync, constants } from 'node:fs';
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

export function writeStateFile(path: string, content: string): void {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.tmp`);
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, 0o600);
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
  renameSync(tmp, path);
  const dfd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
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
