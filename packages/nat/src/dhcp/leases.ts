/*
 * The lease store of one DHCP network: the bound leases, in memory (by client key,
 * by address and by port) and in one JSON file in the state directory,
 * `leases-<network>.json`, written atomically by state-file.ts (temp file, fsync,
 * rename, fsync of the directory).
 *
 * What is persisted: bound leases only, with absolute wall-clock expiry times (ms
 * since the epoch), so a lease read after a restart expires when the client
 * believes it does. Offers (seconds) and declined addresses (minutes) live in the
 * server's memory only: after a restart a client in the middle of DORA starts
 * again, and a declined address may be offered once more and declined again.
 *
 * Durability policy: never lose a grant, never stall forwarding for it. Group
 * commit: every change (`set`, `delete`) bumps `version`; `commit()` asks for a
 * write covering every change so far and returns that version. Writes run off the
 * event loop (writeStateFileAsync: data and fsyncs in libuv's threadpool), one at a
 * time: a write starts at once when the store is idle, and the changes made while
 * it is in flight all go into the next one, which starts no sooner than
 * `intervalMs` (LEASE_WRITE_INTERVAL_MS) after the previous one started. So a
 * renewal flood costs at most 1000 / intervalMs writes a second, whatever its
 * rate, and a lone grant is not delayed. `durableVersion` is what the file holds;
 * the server holds each ACK until the version of its grant is durable (server.ts)
 * and sends none when the write covering it failed, so a crash after an ACK always
 * finds the lease on disk, and an address cannot be handed to a second client after
 * a restart. Renewals are written too: a renewal left unwritten would expire early
 * after a restart and free an address its client still uses. A failed write is
 * retried by the next commit (the server commits at least once a second while the
 * store is dirty); RELEASE and DECLINE do not wait for their write.
 *
 * `close()` writes what is left synchronously (a store closes when its router is
 * deleted or the daemon stops, and a store reopened on the same file right after,
 * by a reload, must read everything), superseding a write still in flight.
 *
 * Loading: expired leases are dropped. A file that cannot be trusted (symlink,
 * not a regular file, bad JSON, unknown version, another network's file, a
 * malformed lease, two leases for one address or one client) makes `open` throw a
 * `LeaseFileError` naming the file, and the network refuses to start. Starting
 * empty instead would hand the addresses of running clients to new ones: a
 * duplicate address is worse than a network that waits for an operator to move
 * the file aside.
 *
 * Keys: a client is its option 61 (client identifier) when it sends one, else its
 * chaddr (RFC 2131 §4.2); `clientKey` builds the key from both.
 *
 * The DHCPv6 server (dhcp6/server.ts) keeps its leases in a store of its own with
 * the same durability, through a `LeaseCodec`: its file is `leases6-<network>.json`,
 * an address is kept in memory as the low 32 bits of the network's pool (the
 * codec knows the 96 bits before them) and written in full text form; a lease the
 * codec no longer places in the network (the prefix changed) is dropped on load
 * like an expired one, not refused.
 */
import { join } from 'node:path';
import { formatIp4, formatMac, parseIp4, parseMac } from '@vswitch/switch';
import { ensureStateDir, readStateFile, writeStateFile, writeStateFileAsync } from '../state-file.js';

export const LEASE_FILE_VERSION = 1;
/** Least time between the starts of two lease-file writes of one network (group commit window). */
export const LEASE_WRITE_INTERVAL_MS = 50;

export interface Lease {
  ip: number;
  /** chaddr of the client (48-bit). */
  mac: number;
  /** Option 61 in lowercase hex, when the client sent one. */
  clientId?: string;
  /** Sanitised option 12, when the client sent one. */
  hostname?: string;
  /** Wall-clock expiry, ms since the epoch. */
  expiresAt: number;
  /** The bridge port the lease belongs to (with `mac`): per-port limits and the ownership rule (server.ts). */
  port?: string;
}

/** The lease key: "id:<hex>" from option 61, else "hw:<12 hex digits>" from chaddr. */
export function clientKey(mac: number, clientId: string | undefined): string {
  return clientId !== undefined ? `id:${clientId}` : `hw:${mac.toString(16).padStart(12, '0')}`;
}
export const leaseKey = (l: Lease): string => clientKey(l.mac, l.clientId);

export class LeaseFileError extends Error {
  readonly code = 'ELEASEFILE';
  constructor(readonly path: string, reason: string) {
    super(`lease file ${path}: ${reason}; refusing to start this DHCP network (move the file aside to start with no leases)`);
  }
}

/** Network names become file names: keep them to a safe alphabet. */
const NETWORK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export function leaseFilePath(dir: string, network: string, prefix = 'leases'): string {
  if (!NETWORK_NAME.test(network)) throw new Error(`invalid DHCP network name ${JSON.stringify(network)}`);
  return join(dir, `${prefix}-${network}.json`);
}

/** How a store names its file and writes and reads its addresses (IPv4 by default). */
export interface LeaseCodec {
  /** File name prefix: `<file>-<network>.json`. */
  file: string;
  format(ip: number): string;
  /** The address as the store keeps it, -1 if it is not an address, -2 if it is not this network's (dropped). */
  parse(text: string): number;
}

export const IPV4_LEASES: LeaseCodec = { file: 'leases', format: formatIp4, parse: parseIp4 };

interface LeaseJson {
  ip: string;
  mac: string;
  clientId?: string;
  hostname?: string;
  expiresAt: number;
  port?: string;
}

interface Waiter {
  version: number;
  resolve: () => void;
  reject: (e: Error) => void;
}

export class LeaseStore {
  readonly #byKey = new Map<string, Lease>();
  readonly #byIp = new Map<number, string>();
  readonly #byPort = new Map<string, Set<string>>();
  /** Changes made so far. */
  #version = 0;
  /** The newest version the file is known to hold (all of them for a store in memory). */
  #durable = 0;
  #writing = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #lastStart = -Infinity;
  #closed = false;
  #waiters: Waiter[] = [];
  /** File writes done, and failed (for metrics and tests). */
  writes = 0;
  writeErrors = 0;
  /** Least ms between the starts of two writes. */
  intervalMs = LEASE_WRITE_INTERVAL_MS;
  /**
   * A write ended: `ok` with the file now holding every change up to `version`, or
   * failed (changes up to `version` are not known to be on disk; they stay in memory
   * and the next commit writes them).
   */
  onSettled: ((ok: boolean, version: number, err?: Error) => void) | undefined;

  private constructor(readonly network: string, readonly path: string | undefined, readonly codec: LeaseCodec = IPV4_LEASES) {}

  /** A store that is never written: tests, and networks configured without a state directory. */
  static inMemory(network = 'mem', codec: LeaseCodec = IPV4_LEASES): LeaseStore {
    return new LeaseStore(network, undefined, codec);
  }

  /**
   * Creates the state directory if needed and loads `leases-<network>.json`,
   * dropping leases expired at `now`. Throws LeaseFileError if the file cannot be trusted.
   */
  static open(dir: string, network: string, now: number, codec: LeaseCodec = IPV4_LEASES): LeaseStore {
    const path = leaseFilePath(dir, network, codec.file);
    ensureStateDir(dir);
    const store = new LeaseStore(network, path, codec);
    let text: string | undefined;
    try {
      text = readStateFile(path);
    } catch (e) {
      throw new LeaseFileError(path, (e as Error).message);
    }
    if (text === undefined) return store;
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (e) {
      throw new LeaseFileError(path, `not valid JSON (${(e as Error).message})`);
    }
    if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new LeaseFileError(path, 'not a JSON object');
    const d = doc as Record<string, unknown>;
    if (d.version !== LEASE_FILE_VERSION) {
      throw new LeaseFileError(path, `unsupported version ${JSON.stringify(d.version)} (expected ${LEASE_FILE_VERSION})`);
    }
    if (d.network !== network) throw new LeaseFileError(path, `belongs to network ${JSON.stringify(d.network)}, not ${JSON.stringify(network)}`);
    if (!Array.isArray(d.leases)) throw new LeaseFileError(path, '"leases" is not an array');
    let dropped = 0;
    d.leases.forEach((raw: unknown, i: number) => {
      const lease = parseLease(raw, codec);
      if (lease === null) { dropped++; return; }
      if (typeof lease === 'string') throw new LeaseFileError(path, `lease #${i}: ${lease}`);
      const key = leaseKey(lease);
      if (store.#byKey.has(key)) throw new LeaseFileError(path, `lease #${i}: a second lease for client ${key}`);
      if (store.#byIp.has(lease.ip)) throw new LeaseFileError(path, `lease #${i}: a second lease for ${codec.format(lease.ip)}`);
      if (lease.expiresAt <= now) { dropped++; return; }
      store.#index(key, lease);
    });
    // Expired ones are gone from memory; the file catches up at the next commit.
    if (dropped > 0) store.#version++;
    return store;
  }

  get size(): number { return this.#byKey.size; }
  /** Changes not yet known to be on disk. */
  get dirty(): boolean { return this.#version > this.#durable; }
  get version(): number { return this.#version; }
  get durableVersion(): number { return this.#durable; }
  /** A write is in flight or scheduled. */
  get busy(): boolean { return this.#writing || this.#timer !== undefined; }

  get(key: string): Lease | undefined { return this.#byKey.get(key); }

  byIp(ip: number): Lease | undefined {
    const key = this.#byIp.get(ip);
    return key === undefined ? undefined : this.#byKey.get(key);
  }

  /** Keys of the leases recorded on `port` (expired ones not yet swept included). */
  keysOnPort(port: string): ReadonlySet<string> | undefined { return this.#byPort.get(port); }

  values(): IterableIterator<Lease> { return this.#byKey.values(); }

  /**
   * Adds or replaces the client's lease. Whatever held the address before (another
   * client's stale lease) and the client's previous lease elsewhere are removed:
   * one address per client and one client per address.
   */
  set(lease: Lease): void {
    const key = leaseKey(lease);
    const prev = this.#byKey.get(key);
    if (prev !== undefined && prev.ip === lease.ip && prev.port === lease.port) {
      // A renewal: same address and port, the indexes stay (the common case under load).
      // (The key fixes clientId.)
      prev.mac = lease.mac;
      prev.expiresAt = lease.expiresAt;
      if (lease.hostname !== prev.hostname) {
        if (lease.hostname === undefined) delete prev.hostname;
        else prev.hostname = lease.hostname;
      }
      this.#version++;
      return;
    }
    if (prev !== undefined) this.#unindex(key, prev);
    const holder = this.#byIp.get(lease.ip);
    if (holder !== undefined && holder !== key) this.#unindex(holder, this.#byKey.get(holder)!);
    this.#index(key, { ...lease });
    this.#version++;
  }

  delete(key: string): Lease | undefined {
    const l = this.#byKey.get(key);
    if (l === undefined) return undefined;
    this.#unindex(key, l);
    this.#version++;
    return l;
  }

  /**
   * Asks for a write covering every change so far and returns its version (see the
   * header); for a store in memory, or with nothing new, that version is durable at once.
   */
  commit(): number {
    const v = this.#version;
    if (v === this.#durable) return v;
    if (this.path === undefined) {
      this.#settle(true, v);
      return v;
    }
    if (this.#closed) {
      try { this.#writeSync(); } catch { /* reported to onSettled */ }
      return v;
    }
    this.#schedule();
    return v;
  }

  /** Resolves once every change made so far is on disk; rejects if the write covering them fails. */
  flush(): Promise<void> {
    const v = this.commit();
    if (v <= this.#durable) return Promise.resolve();
    return new Promise((resolve, reject) => this.#waiters.push({ version: v, resolve, reject }));
  }

  /**
   * Writes what is left, synchronously, superseding a write in flight; later
   * commits write synchronously too. Throws if that write fails (after telling onSettled).
   */
  close(): void {
    this.#closed = true;
    this.sync();
  }

  /** Closes without writing: a store a refused reload opened must not overwrite the live one's file. */
  discard(): void {
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /**
   * Writes what is left now, synchronously (superseding a write in flight), and
   * stays open: a reload about to open this file again in a new store must find
   * every change on disk. Throws if that write fails.
   */
  sync(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.dirty && this.path !== undefined) this.#writeSync();
  }

  serialize(): string {
    const leases: LeaseJson[] = [...this.#byKey.values()]
      .sort((a, b) => a.ip - b.ip)
      .map((l) => {
        const j: LeaseJson = { ip: this.codec.format(l.ip), mac: formatMac(l.mac), expiresAt: l.expiresAt };
        if (l.clientId !== undefined) j.clientId = l.clientId;
        if (l.hostname !== undefined) j.hostname = l.hostname;
        if (l.port !== undefined) j.port = l.port;
        return j;
      });
    return JSON.stringify({ version: LEASE_FILE_VERSION, network: this.network, leases }, null, 2) + '\n';
  }

  #index(key: string, l: Lease): void {
    this.#byKey.set(key, l);
    this.#byIp.set(l.ip, key);
    if (l.port !== undefined) {
      let s = this.#byPort.get(l.port);
      if (s === undefined) this.#byPort.set(l.port, s = new Set());
      s.add(key);
    }
  }

  #unindex(key: string, l: Lease): void {
    this.#byKey.delete(key);
    if (this.#byIp.get(l.ip) === key) this.#byIp.delete(l.ip);
    if (l.port !== undefined) {
      const s = this.#byPort.get(l.port);
      s?.delete(key);
      if (s?.size === 0) this.#byPort.delete(l.port);
    }
  }

  #schedule(): void {
    if (this.#writing || this.#timer !== undefined) return;
    const wait = this.#lastStart + this.intervalMs - performance.now();
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#write();
    }, wait > 0 ? wait : 0);
  }

  async #write(): Promise<void> {
    if (this.#closed || !this.dirty) return;
    this.#writing = true;
    this.#lastStart = performance.now();
    const v = this.#version;
    let ok = false;
    let err: Error | undefined;
    try {
      ok = await writeStateFileAsync(this.path!, this.serialize());
    } catch (e) {
      err = e as Error;
    }
    this.#writing = false;
    if (err !== undefined) {
      this.writeErrors++;
      this.#settle(false, v, err);
    } else if (ok) {
      this.writes++;
      this.#settle(true, v);
    } // else superseded by a synchronous write of the path (ours settled for it)
    // Changes made while it was in flight: the next write (after a failure only
    // for those, so that a broken disk is tried once per burst, not in a loop).
    // Superseded by another store's write of the same path (a reload's): write ours again.
    const superseded = err === undefined && !ok && this.#durable < v;
    if (!this.#closed && (this.#version > v || superseded)) this.#schedule();
  }

  #writeSync(): void {
    const v = this.#version;
    try {
      writeStateFile(this.path!, this.serialize());
    } catch (e) {
      this.writeErrors++;
      this.#settle(false, v, e as Error);
      throw e;
    }
    this.writes++;
    this.#settle(true, v);
  }

  #settle(ok: boolean, v: number, err?: Error): void {
    if (ok && v > this.#durable) this.#durable = v;
    if (this.#waiters.length > 0) {
      const keep: Waiter[] = [];
      for (const w of this.#waiters) {
        if (w.version > v) keep.push(w);
        else if (ok) w.resolve();
        else w.reject(err ?? new Error('lease file write failed'));
      }
      this.#waiters = keep;
    }
    this.onSettled?.(ok, v, err);
  }
}

/** One lease from the file, or why not; null: not this network's (the codec says), dropped. */
function parseLease(raw: unknown, codec: LeaseCodec): Lease | string | null {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return 'not an object';
  const r = raw as Record<string, unknown>;
  const ip = typeof r.ip === 'string' ? codec.parse(r.ip) : -1;
  if (ip === -2) return null;
  if (ip < 0) return `bad ip ${JSON.stringify(r.ip)}`;
  const mac = typeof r.mac === 'string' ? parseMac(r.mac) : -1;
  if (mac < 0) return `bad mac ${JSON.stringify(r.mac)}`;
  if (typeof r.expiresAt !== 'number' || !Number.isSafeInteger(r.expiresAt)) return `bad expiresAt ${JSON.stringify(r.expiresAt)}`;
  const lease: Lease = { ip, mac, expiresAt: r.expiresAt };
  if (r.clientId !== undefined) {
    if (typeof r.clientId !== 'string' || !/^([0-9a-f]{2}){2,255}$/.test(r.clientId)) return `bad clientId ${JSON.stringify(r.clientId)}`;
    lease.clientId = r.clientId;
  }
  if (r.hostname !== undefined) {
    if (typeof r.hostname !== 'string' || r.hostname.length > 255) return 'bad hostname';
    lease.hostname = r.hostname;
  }
  if (r.port !== undefined) {
    if (typeof r.port !== 'string' || r.port.length > 255) return 'bad port';
    lease.port = r.port;
  }
  return lease;
}
