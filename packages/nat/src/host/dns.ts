/*
 * The DNS forwarder of the host-socket NAT: which resolver the gateway's port 53
 * stands for. The forwarder itself holds no DNS state and parses no DNS message: a
 * query to gateway:53 is an ordinary UDP datagram (udp.ts, with its destination
 * replaced by the resolver and the answer shown as coming from the gateway) or TCP
 * connection (tcp.ts, connected to the resolver). So VMs get the host's own
 * resolver, whatever it is, loopback stubs included (systemd-resolved's
 * 127.0.0.53, Docker's 127.0.0.11), which a VM could never reach by naming it.
 * Each query costs the daemon a datagram (or a connection) to the resolver, so
 * queries to gateway:53 are rate-limited per bridge port before they get here
 * (network.ts, `limits.dns` of limits.ts: UDP datagrams and TCP SYNs).
 *
 * The resolvers are the host's, read as glibc reads them: `nameserver` lines of
 * /etc/resolv.conf, at most MAXNS (3), in order; IPv6 servers are skipped (the
 * NAT is IPv4 only) and reported, everything else (comments, `options`,
 * `search`, malformed lines) ignored. 0.0.0.0 is skipped too: it means "this host"
 * to glibc, but 0 means "no resolver" here.
 *
 * `Resolvers` picks one server and fails over, because a VM's stub resolver
 * cannot: it sees one server, the gateway, and would wait out its own timeouts
 * (glibc: 5 s, twice) on a dead upstream forever. The policy:
 * - sticky: all queries go to the current server; when it leaves a query
 *   unanswered for `timeoutMs` (2 s; any answer from it clears the clock) or the
 *   caller reports it failed (a TCP connect refused), the next server of the list
 *   becomes current, round robin; it stays current until it fails in turn. With a
 *   single server nothing changes. A query lost on the way counts as unanswered:
 *   the price is one needless failover to a server that works as well.
 * - resolv.conf is re-read when it changes (inode, mtime or size; DHCP clients,
 *   NetworkManager and resolvconf replace it by rename), looked at from `tick()`
 *   at most every `recheckMs`, so a laptop moving networks takes the new servers
 *   within seconds, without a watcher or a timer of our own. A changed list starts
 *   over at its first server; a file that disappears or cannot be read keeps the
 *   last list (reported once), rather than leave the VMs with no DNS at all.
 * - a fixed list (the config's `dns:`) is used as given; no file is read.
 */
import { readFileSync, statSync } from 'node:fs';
import { formatIp4, parseIp4 } from '@vswitch/switch';

/** glibc's MAXNS: the resolver uses the first three `nameserver` lines only. */
export const MAXNS = 3;
export const RESOLV_CONF = '/etc/resolv.conf';

/** Pure parser, for tests. */
export function parseResolvConf(text: string): { servers: number[]; skipped: string[] } {
  const servers: number[] = [];
  const skipped: string[] = [];
  for (const raw of text.split(/\r?\n/)) {
    // '#' or ';' starts a comment (resolv.conf(5): in the first column; glibc also
    // stops reading an address at whitespace, so a trailing comment is harmless).
    const cut = raw.search(/[#;]/);
    const line = (cut < 0 ? raw : raw.slice(0, cut)).trim();
    const m = /^nameserver\s+(\S+)/.exec(line);
    if (m === null) continue;
    const addr = m[1];
    if (addr.includes(':')) {
      skipped.push(addr);
      continue;
    }
    const ip = parseIp4(addr);
    if (ip < 0) continue; // malformed: ignored
    if (ip === 0 || servers.length >= MAXNS) {
      skipped.push(addr);
      continue;
    }
    if (!servers.includes(ip)) servers.push(ip);
  }
  return { servers, skipped };
}

/** Reads `nameserver` lines from a resolv.conf (default /etc/resolv.conf); throws when the file cannot be read. */
export function readResolvers(path: string = RESOLV_CONF): { servers: number[]; skipped: string[] } {
  return parseResolvConf(readFileSync(path, 'utf8'));
}

export interface ResolversOptions {
  /** Monotonic ms. */
  clock: () => number;
  /** A fixed list (the config's `dns`): used as given, no file is read. */
  servers?: number[];
  /** Default /etc/resolv.conf. */
  path?: string;
  /** A server that leaves a query unanswered this long is failed over (default 2000). */
  timeoutMs?: number;
  /** How often tick() looks whether the file changed (default 5000). */
  recheckMs?: number;
  /** dns_resolvers (a new list), dns_failover, dns_no_resolver (once per change of state). */
  onEvent?: (e: { event: string; [k: string]: unknown }) => void;
  /** For tests: the file's identity (ino, mtime, size), or undefined when it cannot be stat'ed. */
  stat?: (path: string) => string | undefined;
  /** For tests: the file's text (throws when unreadable). */
  read?: (path: string) => string;
}

export interface ResolversCounters {
  /** Failovers after an unanswered query. */
  timeouts: number;
  /** Failovers the caller asked for (failed()). */
  failures: number;
  /** Times the file was read again because it changed. */
  reloads: number;
}

function fileIdentity(path: string): string | undefined {
  try {
    const s = statSync(path);
    return `${s.dev}:${s.ino}:${s.mtimeMs}:${s.size}`;
  } catch {
    return undefined;
  }
}

/**
 * The resolver the gateway's DNS forwarder uses now, with failover and reload.
 * Feed it with sent()/answered() (HostUdp does, for the datagrams it redirects:
 * its `redirects` option) and failed() (a TCP connect to the resolver refused),
 * and call tick() about once a second.
 */
export class Resolvers {
  readonly counters: ResolversCounters = { timeouts: 0, failures: 0, reloads: 0 };
  #servers: number[] = [];
  #skipped: string[] = [];
  #index = 0;
  /** When the oldest query to the current server still unanswered was sent; 0: none. */
  #pendingSince = 0;
  #identity: string | undefined;
  #nextCheck = 0;
  #readError = '';
  readonly #timeoutMs: number;
  readonly #recheckMs: number;
  readonly #path: string;
  readonly #fixed: boolean;

  constructor(readonly opts: ResolversOptions) {
    this.#timeoutMs = positive(opts.timeoutMs, 2000);
    this.#recheckMs = positive(opts.recheckMs, 5000);
    this.#path = opts.path ?? RESOLV_CONF;
    this.#fixed = opts.servers !== undefined && opts.servers.length > 0;
    if (this.#fixed) {
      this.#servers = [...new Set(opts.servers!.filter((ip) => ip > 0 && ip <= 0xffffffff))];
    } else {
      this.#load(true);
      this.#nextCheck = opts.clock() + this.#recheckMs;
    }
  }

  /** The server queries go to now; 0 when there is none. */
  current(): number {
    return this.#servers.length === 0 ? 0 : this.#servers[this.#index];
  }

  /** The servers in use, in order, and the IPv6 / surplus ones skipped. */
  list(): { servers: readonly number[]; skipped: readonly string[]; current: number; file: string | undefined } {
    return { servers: this.#servers, skipped: this.#skipped, current: this.current(), file: this.#fixed ? undefined : this.#path };
  }

  /** A query went to `ip`. */
  sent(ip: number, now: number): void {
    if (ip === this.current() && this.#pendingSince === 0) this.#pendingSince = now || 1;
  }

  /** An answer came from `ip`: it is alive. */
  answered(ip: number, _now: number): void {
    if (ip === this.current()) this.#pendingSince = 0;
  }

  /** `ip` failed (connection refused, unreachable): the next server becomes current if `ip` was. */
  failed(ip: number): void {
    if (ip !== this.current()) return;
    this.counters.failures++;
    this.#failover('failed');
  }

  /** About once a second: failover on an unanswered query, reload on a changed file. */
  tick(now: number): void {
    if (this.#pendingSince !== 0 && now - this.#pendingSince >= this.#timeoutMs) {
      this.counters.timeouts++;
      this.#failover('timeout');
    }
    if (!this.#fixed && now >= this.#nextCheck) {
      this.#nextCheck = now + this.#recheckMs;
      this.#load(false);
    }
  }

  /** Reads the file again now (no-op with a fixed list). */
  reload(): void {
    if (!this.#fixed) this.#load(true);
  }

  #failover(reason: string): void {
    this.#pendingSince = 0;
    if (this.#servers.length < 2) return;
    const from = this.current();
    this.#index = (this.#index + 1) % this.#servers.length;
    this.opts.onEvent?.({ event: 'dns_failover', from: formatIp4(from), to: formatIp4(this.current()), reason });
  }

  #load(force: boolean): void {
    const stat = this.opts.stat ?? fileIdentity;
    const identity = stat(this.#path);
    if (!force && identity !== undefined && identity === this.#identity) return;
    let text: string;
    try {
      text = (this.opts.read ?? ((p: string) => readFileSync(p, 'utf8')))(this.#path);
    } catch (e) {
      // Keep the last list: a resolv.conf being replaced, or gone, must not cut DNS off.
      this.#identity = undefined;
      const error = (e as Error).message;
      if (error !== this.#readError) {
        this.#readError = error;
        this.opts.onEvent?.({ event: 'dns_no_resolver', file: this.#path, error, kept: this.#servers.map(formatIp4) });
      }
      return;
    }
    this.#identity = identity;
    this.#readError = '';
    if (!force) this.counters.reloads++;
    const r = parseResolvConf(text);
    this.#skipped = r.skipped;
    if (sameList(r.servers, this.#servers) && !force) return;
    this.#servers = r.servers;
    this.#index = 0;
    this.#pendingSince = 0;
    if (r.servers.length === 0) {
      this.opts.onEvent?.({ event: 'dns_no_resolver', file: this.#path, skipped: r.skipped });
    } else {
      this.opts.onEvent?.({ event: 'dns_resolvers', file: this.#path, servers: r.servers.map(formatIp4), skipped: r.skipped });
    }
  }
}

function sameList(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function positive(v: number | undefined, dflt: number): number {
  return v !== undefined && Number.isFinite(v) && v > 0 ? v : dflt;
}
