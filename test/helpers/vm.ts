/*
 * "VMs": network namespaces whose NIC is a TAP the daemon owns (moved into the
 * namespace; the daemon's fd stays valid), plus ping / ARP / tcpdump in them.
 */
import type { ChildProcess } from 'node:child_process';
import {
  addNamespace, nsExec, nsExecR, nsname, q, sh, shr, sleep, spawnTracked, waitFor,
} from './run.js';

export interface Vm {
  /** Short name, e.g. 'vm1'. */
  name: string;
  ns: string;
  /** Interface name inside the namespace (the TAP's name). */
  ifname: string;
  /** Address without prefix. */
  ip: string;
  cidr: string;
  mac: string;
}

/** Disables IPv6 in a namespace (before links arrive) so tests see no ND/MLD chatter. */
export async function quietNamespace(ns: string): Promise<void> {
  await nsExec(ns, 'sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1');
}

/** Waits until `ifname` exists in the root namespace (the daemon created the TAP). */
export async function waitLink(ifname: string, ns?: string, timeoutMs = 10_000): Promise<void> {
  const nsArg = ns ? `-n ${q(ns)} ` : '';
  await waitFor(`link ${ifname}${ns ? ` in ${ns}` : ''}`, async () => (await shr(`ip ${nsArg}link show ${q(ifname)}`)).code === 0, { timeoutMs });
}

export async function linkExists(ifname: string, ns?: string): Promise<boolean> {
  const nsArg = ns ? `-n ${q(ns)} ` : '';
  return (await shr(`ip ${nsArg}link show ${q(ifname)}`)).code === 0;
}

/** Puts an interface into namespace `ns` (created if `create`), quiet, up, with an address. */
export async function plumb(ns: string, ifname: string, cidr: string, create = true): Promise<string> {
  if (create) {
    await addNamespace(ns);
    await quietNamespace(ns);
  }
  await sh(`ip link set ${q(ifname)} netns ${q(ns)}`);
  await nsExec(ns, `sysctl -qw net.ipv6.conf.${ifname}.disable_ipv6=1 2>/dev/null; ip link set ${q(ifname)} up && ip addr add ${q(cidr)} dev ${q(ifname)}`);
  return (await nsExec(ns, `cat /sys/class/net/${ifname}/address`)).trim().toLowerCase();
}

/**
 * makeVm('vm1', tap, '10.10.0.1/24'): netns `${PREFIX}-vm1`, the TAP moved in, IPv6
 * disabled, up, addressed. The TAP must exist (the daemon made it).
 */
export async function makeVm(name: string, tapName: string, cidr: string): Promise<Vm> {
  await waitLink(tapName);
  const ns = nsname(name);
  const mac = await plumb(ns, tapName, cidr);
  return { name, ns, ifname: tapName, ip: cidr.split('/')[0], cidr, mac };
}

/** One ping run: true if at least one reply came back. */
export async function ping(fromNs: string, ip: string, { count = 3, timeoutSec = 3, intervalSec = 0.2 } = {}): Promise<boolean> {
  const r = await nsExecR(fromNs, `busybox ping -c ${count} -i ${intervalSec} -W ${timeoutSec} -w ${timeoutSec + Math.ceil(count * intervalSec)} ${ip}`, {
    timeoutMs: (timeoutSec + count * intervalSec + 5) * 1000,
  });
  return r.code === 0 && /bytes from/.test(r.stdout);
}

/** Pings until one reply arrives (up to timeoutMs); true on success. */
export async function pingUntil(fromNs: string, ip: string, timeoutMs = 10_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await ping(fromNs, ip, { count: 1, timeoutSec: 1 })) return true;
  }
  return false;
}

/** Counts replies of `count` pings (all sent, -i interval). */
export async function pingCount(fromNs: string, ip: string, count: number, intervalSec = 0.1): Promise<number> {
  const r = await nsExecR(fromNs, `busybox ping -c ${count} -i ${intervalSec} -W 2 ${ip}`, { timeoutMs: (count * intervalSec + 10) * 1000 });
  const m = /(\d+) packets received/.exec(r.stdout);
  return m ? Number(m[1]) : 0;
}

/** busybox arping: true if an ARP reply came. */
export async function arping(fromNs: string, ifname: string, ip: string, { count = 2, timeoutSec = 3 } = {}): Promise<boolean> {
  const r = await nsExecR(fromNs, `busybox arping -c ${count} -w ${timeoutSec} -I ${ifname} ${ip}`, { timeoutMs: (timeoutSec + 5) * 1000 });
  return r.code === 0 && /Received [1-9]/.test(r.stdout);
}

/** The neighbour entry for ip in ns: '' when none, else the `ip neigh` line. */
export async function neigh(ns: string, ip: string): Promise<string> {
  return (await nsExec(ns, `ip neigh show ${ip}`)).trim();
}

/** True if the neighbour entry is resolved (has a lladdr and is REACHABLE/STALE/DELAY/PROBE/PERMANENT). */
export function neighResolved(line: string): boolean {
  return /lladdr/.test(line) && /(REACHABLE|STALE|DELAY|PROBE|PERMANENT)/.test(line);
}

export async function flushNeigh(ns: string): Promise<void> {
  await nsExec(ns, 'ip neigh flush all');
}

/**
 * A running tcpdump (-e -n -l) in a namespace (or the root one with ns=null).
 * Start, wait for "listening on", act, then stop() with SIGINT and read the lines.
 */
export class Capture {
  lines: string[] = [];
  stderr = '';
  #out = '';
  #proc: ChildProcess | undefined;
  #done: Promise<void> | undefined;

  constructor(readonly ns: string | null, readonly ifname: string, readonly filter = '') {}

  async start(): Promise<this> {
    const args = ['-e', '-n', '-l', '-i', this.ifname, ...(this.filter ? this.filter.split(/\s+/) : [])];
    const [cmd, argv] = this.ns === null ? ['tcpdump', args] : ['ip', ['netns', 'exec', this.ns, 'tcpdump', ...args]];
    const p = spawnTracked(cmd, argv);
    this.#proc = p;
    p.stdout!.setEncoding('utf8').on('data', (d: string) => { this.#out += d; });
    p.stderr!.setEncoding('utf8').on('data', (d: string) => { this.stderr += d; });
    this.#done = new Promise((r) => p.once('close', () => r()));
    await waitFor(`tcpdump on ${this.ifname} listening`, () => {
      if (p.exitCode !== null) throw new Error(`tcpdump exited: ${this.stderr}`);
      return /listening on/.test(this.stderr);
    }, { timeoutMs: 10_000, intervalMs: 50 });
    return this;
  }

  /** Lines so far (while running). */
  current(): string[] {
    return this.#out.split('\n').filter((l) => l.trim() !== '');
  }

  async stop(graceMs = 300): Promise<string[]> {
    await sleep(graceMs);
    const p = this.#proc!;
    if (p.exitCode === null && p.signalCode === null) p.kill('SIGINT');
    await Promise.race([this.#done, sleep(5000)]);
    if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    this.lines = this.current();
    return this.lines;
  }
}

export async function tcpdump(ns: string | null, ifname: string, filter = ''): Promise<Capture> {
  return new Capture(ns, ifname, filter).start();
}

/** Captures while `action` runs; returns the lines. */
export async function captureDuring(ns: string | null, ifname: string, filter: string, action: () => Promise<unknown>, graceMs = 500): Promise<string[]> {
  const c = await tcpdump(ns, ifname, filter);
  try {
    await action();
  } finally {
    await c.stop(graceMs);
  }
  return c.lines;
}

/** Captures for `durationMs` (after tcpdump is listening) and returns the lines. */
export async function tcpdumpFor(ns: string | null, ifname: string, filter: string, durationMs: number): Promise<string[]> {
  const c = await tcpdump(ns, ifname, filter);
  return c.stop(durationMs);
}

/** A long-running background command in a namespace (e.g. continuous ping); stop() sends SIGINT and returns stdout. */
export class Background {
  out = '';
  err = '';
  readonly proc: ChildProcess;
  readonly #done: Promise<void>;

  constructor(ns: string, cmd: string) {
    this.proc = spawnTracked('ip', ['netns', 'exec', ns, 'bash', '-c', `exec ${cmd}`]);
    this.proc.stdout!.setEncoding('utf8').on('data', (d: string) => { this.out += d; });
    this.proc.stderr!.setEncoding('utf8').on('data', (d: string) => { this.err += d; });
    this.#done = new Promise((r) => this.proc.once('close', () => r()));
  }

  async stop(): Promise<string> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGINT');
    await Promise.race([this.#done, sleep(5000)]);
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
    return this.out;
  }

  /** busybox ping reply sequence numbers seen so far. */
  pingSeqs(): number[] {
    return [...this.out.matchAll(/seq=(\d+)/g)].map((m) => Number(m[1]));
  }
}

/** Starts `busybox ping -i interval ip` in ns. */
export function continuousPing(ns: string, ip: string, intervalSec = 0.2): Background {
  return new Background(ns, `busybox ping -i ${intervalSec} -W 1 ${ip}`);
}

/**
 * Losses in a busybox ping run within seq range [from, to): seqs not answered.
 * (busybox ping prints "seq=N" only for replies.)
 */
export function missingSeqs(seqs: number[], from: number, to: number): number[] {
  const got = new Set(seqs);
  const miss: number[] = [];
  for (let s = from; s < to; s++) if (!got.has(s)) miss.push(s);
  return miss;
}
