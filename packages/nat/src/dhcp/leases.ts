/*
 * The lease store of one DHCP network: the bound leases, in memory (by client key
 * and by address) and in one JSON file in the state directory,
 * `leases-<network>.json`, written atomically by state-file.ts (temp file, fsync,
 * rename, fsync of the directory).
 *
 * What is persisted: bound leases only, with absolute wall-clock expiry times (ms
 * since the epoch), so a lease read after a restart expires when the client
 * believes it does. Offers (30 s) and declined addresses (minutes) live in the
 * server's memory only: after a restart a client in the middle of DORA starts
 * again, and a declined address may be offered once more and declined again.
 *
 * Durability policy: never lose a grant. The server changes the store, then calls
 * `commit()` synchronously and sends the ACK only if it returned; a crash after
 * the ACK therefore always finds the lease on disk, and an address cannot be
 * handed to a second client after a restart. Renewals are written too: a renewal
 * left unwritten would expire early after a restart and free an address its
 * client still uses. The cost is one synchronous write + two fsyncs per ACK or
 * RELEASE/DECLINE (about a millisecond on an SSD, tens on a slow disk), which
 * blocks the event loop for that time. With the default hour-long lease a client
 * renews every 30 minutes, so even a few thousand clients mean about one write a
 * second; batching is not worth the risk.
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
 */
import { join } from 'node:path';
import { formatIp4, formatMac, parseIp4, parseMac } from '@vswitch/switch';
import { ensureStateDir, readStateFile, writeStateFile } from '../state-file.js';

export const LEASE_FILE_VERSION = 1;

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
  /** The router port the client was seen on (for per-port limits). */
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

export function leaseFilePath(dir: string, network: string): string {
  if (!NETWORK_NAME.test(network)) throw new Error(`invalid DHCP network name ${JSON.stringify(network)}`);
  return join(dir, `leases-${network}.json`);
}

interface LeaseJson {
  ip: string;
  mac: string;
  clientId?: string;
  hostname?: string;
  expiresAt: number;
  port?: string;
}

export class LeaseStore {
  readonly #byKey = new Map<string, Lease>();
  readonly #byIp = new Map<number, string>();
  #dirty = false;
  /** File writes done (for tests and metrics). */
  writes = 0;

  private constructor(readonly network: string, readonly path: string | undefined) {}

  /** A store that is never written: tests, and networks configured without a state directory. */
  static inMemory(network = 'mem'): LeaseStore {
    return new LeaseStore(network, undefined);
  }

  /**
   * Creates the state directory if needed and loads `leases-<network>.json`,
   * dropping leases expired at `now`. Throws LeaseFileError if the file cannot be trusted.
   */
  static open(dir: string, network: string, now: number): LeaseStore {
    const path = leaseFilePath(dir, network);
    ensureStateDir(dir);
    const store = new LeaseStore(network, path);
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
      const lease = parseLease(raw);
      if (typeof lease === 'string') throw new LeaseFileError(path, `lease #${i}: ${lease}`);
      const key = leaseKey(lease);
      if (store.#byKey.has(key)) throw new LeaseFileError(path, `lease #${i}: a second lease for client ${key}`);
      if (store.#byIp.has(lease.ip)) throw new LeaseFileError(path, `lease #${i}: a second lease for ${formatIp4(lease.ip)}`);
      if (lease.expiresAt <= now) { dropped++; return; }
      store.#byKey.set(key, lease);
      store.#byIp.set(lease.ip, key);
    });
    // Expired ones are gone from memory; the file catches up at the next commit.
    store.#dirty = dropped > 0;
    return store;
  }

  get size(): number { return this.#byKey.size; }
  get dirty(): boolean { return this.#dirty; }

  get(key: string): Lease | undefined { return this.#byKey.get(key); }

  byIp(ip: number): Lease | undefined {
    const key = this.#byIp.get(ip);
    return key === undefined ? undefined : this.#byKey.get(key);
  }

  values(): IterableIterator<Lease> { return this.#byKey.values(); }

  /**
   * Adds or replaces the client's lease. Whatever held the address before (another
   * client's stale lease) and the client's previous lease elsewhere are removed:
   * one address per client and one client per address.
   */
  set(lease: Lease): void {
    const key = leaseKey(lease);
    const prev = this.#byKey.get(key);
    if (prev !== undefined && prev.ip !== lease.ip) this.#byIp.delete(prev.ip);
    const holder = this.#byIp.get(lease.ip);
    if (holder !== undefined && holder !== key) this.#byKey.delete(holder);
    this.#byKey.set(key, { ...lease });
    this.#byIp.set(lease.ip, key);
    this.#dirty = true;
  }

  delete(key: string): Lease | undefined {
    const l = this.#byKey.get(key);
    if (l === undefined) return undefined;
    this.#byKey.delete(key);
    this.#byIp.delete(l.ip);
    this.#dirty = true;
    return l;
  }

  /** Writes the file if anything changed since the last commit. Synchronous; throws on I/O errors (state stays dirty). */
  commit(): void {
    if (!this.#dirty) return;
    if (this.path !== undefined) {
      writeStateFile(this.path, this.serialize());
      this.writes++;
    }
    this.#dirty = false;
  }

  serialize(): string {
    const leases: LeaseJson[] = [...this.#byKey.values()]
      .sort((a, b) => a.ip - b.ip)
      .map((l) => {
        const j: LeaseJson = { ip: formatIp4(l.ip), mac: formatMac(l.mac), expiresAt: l.expiresAt };
        if (l.clientId !== undefined) j.clientId = l.clientId;
        if (l.hostname !== undefined) j.hostname = l.hostname;
        if (l.port !== undefined) j.port = l.port;
        return j;
      });
    return JSON.stringify({ version: LEASE_FILE_VERSION, network: this.network, leases }, null, 2) + '\n';
  }
}

/** One lease from the file, or why not. */
function parseLease(raw: unknown): Lease | string {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return 'not an object';
  const r = raw as Record<string, unknown>;
  const ip = typeof r.ip === 'string' ? parseIp4(r.ip) : -1;
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
