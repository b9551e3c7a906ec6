/*
 * Real VMs for the tests: Debian's QEMU, its cloud kernel, and an initramfs built at
 * test time from busybox (static from busybox-static; a dynamic busybox works too,
 * its libraries are copied) plus the kernel's virtio modules, whose order comes from
 * modules.dep. The guest's /init is a shell script the test writes; its serial
 * console is the QEMU process's stdout, collected line by line.
 *
 * QEMU runs with TCG, never KVM (guests hang under KVM on these machines).
 */
import type { ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { q, sh, shr, sleep, spawnTracked, waitFor } from './run.js';

/** Debian packages a QEMU test needs (scripts/setup.sh should install them). */
export const QEMU_PACKAGES = ['qemu-system-x86', 'linux-image-cloud-amd64'];

async function installed(pkg: string): Promise<boolean> {
  const r = await shr(`dpkg-query -W -f='\${Status}' ${q(pkg)}`);
  return r.code === 0 && r.stdout.includes('install ok installed');
}

/**
 * Installs what is missing, idempotently (apt-get update first). Throws naming the
 * package when it cannot. busybox-static is only installed when there is no
 * /bin/busybox at all: it conflicts with the dynamic `busybox` package.
 */
export async function ensureQemuPackages(): Promise<void> {
  const want = [...QEMU_PACKAGES];
  if (!existsSync('/bin/busybox')) want.push('busybox-static');
  const missing: string[] = [];
  for (const p of want) if (!(await installed(p))) missing.push(p);
  if (missing.length === 0) return;
  const upd = await shr('apt-get update -qq', { timeoutMs: 300_000 });
  if (upd.code !== 0) throw new Error(`apt-get update failed (needed to install ${missing.join(', ')}): ${upd.stderr.trim().slice(-500)}`);
  for (const p of missing) {
    const r = await shr(`DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${q(p)}`, { timeoutMs: 600_000 });
    if (r.code !== 0) throw new Error(`cannot install Debian package ${p} (add it to scripts/setup.sh): ${r.stderr.trim().slice(-500)}`);
  }
}

export interface Kernel {
  image: string;
  version: string;
  modules: string;
}

/** The newest /boot/vmlinuz-*-cloud-amd64 and its modules directory. */
export function findCloudKernel(): Kernel {
  const images = existsSync('/boot') ? readdirSync('/boot').filter((f) => /^vmlinuz-.*-cloud-amd64$/.test(f)) : [];
  if (images.length === 0) throw new Error('no /boot/vmlinuz-*-cloud-amd64: install Debian package linux-image-cloud-amd64');
  images.sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  const image = images[images.length - 1];
  const version = image.slice('vmlinuz-'.length);
  const modules = `/lib/modules/${version}`;
  if (!existsSync(join(modules, 'modules.dep'))) throw new Error(`${modules}/modules.dep missing (linux-image-cloud-amd64 incomplete?)`);
  return { image: join('/boot', image), version, modules };
}

/**
 * Module files (relative to the modules dir) to insmod, dependencies first, for
 * the named modules; built-in ones (absent from modules.dep) are skipped.
 */
export function moduleLoadOrder(modulesDir: string, names: string[]): string[] {
  const deps = new Map<string, string[]>();
  const byName = new Map<string, string>();
  for (const line of readFileSync(join(modulesDir, 'modules.dep'), 'utf8').split('\n')) {
    const m = /^([^:]+):\s*(.*)$/.exec(line);
    if (!m) continue;
    deps.set(m[1], m[2].split(/\s+/).filter(Boolean));
    byName.set(basename(m[1]).replace(/\.ko(\.(xz|zst|gz))?$/, '').replace(/-/g, '_'), m[1]);
  }
  const order: string[] = [];
  const visit = (file: string): void => {
    if (order.includes(file)) return;
    // modules.dep lists a module's dependencies users-first: load them in reverse.
    for (const d of [...(deps.get(file) ?? [])].reverse()) visit(d);
    order.push(file);
  };
  for (const n of names) {
    const f = byName.get(n.replace(/-/g, '_'));
    if (f !== undefined) visit(f);
  }
  return order;
}

/** Shared libraries of a dynamic executable (empty for a static one). */
async function sharedLibs(exe: string): Promise<string[]> {
  const r = await shr(`ldd ${q(exe)}`);
  if (r.code !== 0) return []; // "not a dynamic executable"
  return [...r.stdout.matchAll(/(\/\S+)\s+\(0x/g)].map((m) => m[1]);
}

async function copyModule(modulesDir: string, rel: string, destDir: string): Promise<string> {
  const src = join(modulesDir, rel);
  const name = basename(rel).replace(/\.(xz|zst|gz)$/, '');
  const dest = join(destDir, name);
  if (rel.endsWith('.xz')) await sh(`xz -dc ${q(src)} > ${q(dest)}`);
  else if (rel.endsWith('.zst')) await sh(`zstd -qdc ${q(src)} > ${q(dest)}`);
  else if (rel.endsWith('.gz')) await sh(`gzip -dc ${q(src)} > ${q(dest)}`);
  else copyFileSync(src, dest);
  return name;
}

export interface InitramfsSpec {
  /** The /init script (run by the kernel as PID 1). */
  init: string;
  /** Extra files: guest path -> contents (made executable when they start with #!). */
  files?: Record<string, string>;
  /** Kernel modules to load (by name; dependencies added); their list is /etc/modules.order. */
  modules?: string[];
  busybox?: string;
}

/** Builds `dir`/initrd.gz: busybox (+ libs if dynamic), modules, /init and files. */
export async function buildInitramfs(dir: string, kernel: Kernel, spec: InitramfsSpec): Promise<string> {
  const root = join(dir, 'root');
  for (const d of ['bin', 'sbin', 'etc', 'proc', 'sys', 'dev', 'tmp', 'run', 'lib/modules']) mkdirSync(join(root, d), { recursive: true });
  const bb = spec.busybox ?? '/bin/busybox';
  copyFileSync(bb, join(root, 'bin/busybox'));
  chmodSync(join(root, 'bin/busybox'), 0o755);
  for (const lib of await sharedLibs(bb)) {
    mkdirSync(join(root, dirname(lib)), { recursive: true });
    copyFileSync(lib, join(root, lib));
  }
  const order: string[] = [];
  for (const rel of moduleLoadOrder(kernel.modules, spec.modules ?? [])) {
    order.push(await copyModule(kernel.modules, rel, join(root, 'lib/modules')));
  }
  writeFileSync(join(root, 'etc/modules.order'), order.join('\n') + '\n');
  writeFileSync(join(root, 'init'), spec.init, { mode: 0o755 });
  for (const [path, text] of Object.entries(spec.files ?? {})) {
    const p = join(root, path);
    mkdirSync(dirname(p), { recursive: true });
    writeFileSync(p, text, { mode: text.startsWith('#!') ? 0o755 : 0o644 });
  }
  const out = join(dir, 'initrd.gz');
  await sh(`cd ${q(root)} && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 > ${q(out)}`);
  return out;
}

export interface QemuOptions {
  kernel: Kernel;
  initrd: string;
  append: string;
  /** -netdev/-device arguments. */
  net: string[];
  memMb?: number;
}

/** A running QEMU guest; `console` is everything on its serial port so far. */
export class QemuVm {
  console = '';
  stderr = '';
  readonly #done: Promise<void>;

  constructor(readonly proc: ChildProcess) {
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => { this.console += d.replace(/\r/g, ''); });
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => { this.stderr += d; });
    this.#done = new Promise((r) => proc.once('close', () => r()));
  }

  alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  lines(): string[] {
    return this.console.split('\n');
  }

  /** Waits for a console line matching `re`; returns its match. */
  async waitLine(re: RegExp, what: string, timeoutMs: number): Promise<RegExpMatchArray> {
    return waitFor(what, () => {
      if (!this.alive()) throw new Error(`QEMU exited (${this.proc.exitCode ?? this.proc.signalCode}): ${this.stderr.trim()}\n--- console:\n${this.console.slice(-3000)}`);
      for (const l of this.lines()) {
        const m = l.match(re);
        if (m) return m;
      }
      return undefined;
    }, { timeoutMs, intervalMs: 100 }).catch((e: Error) => {
      throw new Error(`${e.message}\n--- guest console (last 3000 chars):\n${this.console.slice(-3000)}\n--- qemu stderr:\n${this.stderr.slice(-1000)}`);
    });
  }

  async stop(): Promise<void> {
    if (this.alive()) this.proc.kill('SIGTERM');
    await Promise.race([this.#done, sleep(3000)]);
    if (this.alive()) this.proc.kill('SIGKILL');
    await Promise.race([this.#done, sleep(2000)]);
  }
}

/** Boots `qemu-system-x86_64 -accel tcg` with the serial console on stdout. Killed with the test process. */
export function startQemu(o: QemuOptions): QemuVm {
  const args = [
    '-accel', 'tcg', '-m', String(o.memMb ?? 256), '-smp', '1',
    '-nographic', '-nodefaults', '-serial', 'stdio', '-no-reboot',
    '-kernel', o.kernel.image, '-initrd', o.initrd, '-append', o.append,
    ...o.net,
  ];
  return new QemuVm(spawnTracked('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] }));
}

/** QEMU's version as [major, minor]. */
export async function qemuVersion(): Promise<[number, number]> {
  const out = await sh('qemu-system-x86_64 --version');
  const m = /version (\d+)\.(\d+)/.exec(out);
  if (!m) throw new Error(`cannot read the QEMU version from: ${out}`);
  return [Number(m[1]), Number(m[2])];
}
