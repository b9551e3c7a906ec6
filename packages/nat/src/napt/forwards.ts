/*
 * Port forwards: static rules that send TCP or UDP traffic arriving at the uplink
 * address on a public port, or a range lo-hi, to an inside host. A range maps 1:1
 * onto an inside range of the same length starting at `insideLo`
 * (public 8000-8009 -> 10.0.10.5:9000-9009: 8003 goes to 9003).
 *
 * What a forward means to the NAPT (translate.ts, table.ts): it fixes the public
 * port of an inside endpoint. An inbound packet to a forwarded public port with no
 * live mapping opens a mapping for the inside target that accepts any remote; an
 * outbound packet from a forward's inside endpoint with no live mapping is given
 * the forward's public port, so a server's replies, and its own connections from
 * that port, leave under the port clients know (endpoint-independent mapping).
 *
 * Conflicts, refused with a ForwardError naming the rule in the way:
 * - public ranges of one protocol may not overlap (an inbound packet must have one
 *   target);
 * - inside ranges of one protocol and host may not overlap: an inside endpoint has
 *   one public port (endpoint-independent mapping), so "80 and 8080 both to :80" is
 *   refused; forward one of them to another inside port instead.
 *
 * Forwards and the dynamic port range: forwards may lie inside the dynamic range
 * (1024-65535 by default, which would otherwise leave only privileged ports to
 * forward). Their ports are reserved instead: the table's allocator asks
 * `isReserved` and steps around them, port preservation included. A dynamic mapping
 * already holding such a port when the forward is added is flushed by the Napt
 * (translate.ts listens for 'add'), and the forward takes the port.
 *
 * Lookups are O(1): a 65536-slot array per protocol by public port. The reverse
 * lookup (inside endpoint -> public port) scans the few forwards of that inside
 * host; it runs only when a new mapping is made, never per packet of a session.
 *
 * Misuse and bad input throw ForwardError with a stable code (EFORWARD_INVALID,
 * EFORWARD_CONFLICT, EFORWARD_NOT_FOUND): these are control-plane calls from the
 * config file and `vswitch nat forward add|del|show`.
 *
 * IPv6 targets (`inside6`, text "[fd00:10::50]:22"): only the host uplink's NAT
 * serves them (host/nat.ts listens and opens the flow to the VM's IPv6 address);
 * `insideIp` is then 0 and means nothing, the NAPT never looks at such a forward
 * (an interface uplink routes, or NPTv6-translates, a VM's IPv6 address as is:
 * there is nothing to forward), and the inside conflict rule compares the IPv6
 * address. Their public ports are reserved like any other's.
 *
 * Persistence: `saveForwards`/`loadForwards` keep the list as JSON in the daemon's
 * state directory through state-file.ts (temp file, fsync, rename, fsync dir;
 * symlinks refused): {"version": 1, "forwards": [{"proto": "tcp", "public":
 * "8080", "inside": "10.0.10.5:80"}, ...]}, the same text form as the config file.
 */
import { formatIp4, formatIp6, ip6IsLinkLocal, ip6IsMulticast, ip6IsV4Mapped, parseIp4, parseIp6 } from '@vswitch/switch';
import { readStateFile, writeStateFile } from '../state-file.js';
import type { PortReservation } from './table.js';

export type ForwardProto = 'tcp' | 'udp';

export interface PortForward {
  readonly proto: ForwardProto;
  readonly publicLo: number;
  readonly publicHi: number;
  /** The IPv4 target; 0 for an IPv6 target. */
  readonly insideIp: number;
  /** Inside port of publicLo; publicLo + k goes to insideLo + k. */
  readonly insideLo: number;
  /** An IPv6 target, canonical text (formatIp6); absent: IPv4. */
  readonly inside6?: string;
}

/** The text form used by the config file, the CLI and the state file. */
export interface ForwardRecord {
  proto: ForwardProto;
  /** "8080" or "8000-8010". */
  public: string;
  /** "10.0.10.5:80" or "10.0.10.5:80-90" (a range's length must match); IPv6 in brackets: "[fd00:10::50]:80". */
  inside: string;
}

export type ForwardEvent = 'add' | 'del';
export type ForwardListener = (event: ForwardEvent, f: PortForward) => void;

export type ForwardErrorCode = 'EFORWARD_INVALID' | 'EFORWARD_CONFLICT' | 'EFORWARD_NOT_FOUND';

export class ForwardError extends Error {
  constructor(readonly code: ForwardErrorCode, message: string) {
    super(message);
    this.name = 'ForwardError';
  }
}

export const FORWARDS_FILE_VERSION = 1;

const protoOf = (proto: number): number => (proto === 6 ? 0 : proto === 17 ? 1 : -1);
const PROTO_INDEX: Record<ForwardProto, number> = { tcp: 0, udp: 1 };

export const forwardInsideHi = (f: PortForward): number => f.insideLo + (f.publicHi - f.publicLo);

const rangeText = (lo: number, hi: number): string => (lo === hi ? `${lo}` : `${lo}-${hi}`);

/** "tcp 8080 -> 10.0.10.5:80", for messages and logs. */
export function describeForward(f: PortForward): string {
  const r = formatForward(f);
  return `${r.proto} ${r.public} -> ${r.inside}`;
}

export function formatForward(f: PortForward): ForwardRecord {
  return {
    proto: f.proto,
    public: rangeText(f.publicLo, f.publicHi),
    inside: `${insideHost(f)}:${rangeText(f.insideLo, forwardInsideHi(f))}`,
  };
}

/** The inside address as the text forms write it: "10.0.10.5" or "[fd00:10::50]". */
const insideHost = (f: PortForward): string => (f.inside6 !== undefined ? `[${f.inside6}]` : formatIp4(f.insideIp));

const sameInside = (a: PortForward, b: PortForward): boolean => a.inside6 === b.inside6 && a.insideIp === b.insideIp;

function invalid(msg: string): never {
  throw new ForwardError('EFORWARD_INVALID', msg);
}

function parsePort(text: string, what: string): number {
  if (!/^\d{1,5}$/.test(text)) invalid(`${what}: "${text}" is not a port number`);
  const p = Number(text);
  if (p < 1 || p > 65535) invalid(`${what}: port ${p} is outside 1-65535`);
  return p;
}

function parsePortRange(text: string, what: string): [number, number] {
  const m = /^\s*([^-\s]+)\s*(?:-\s*([^-\s]+)\s*)?$/.exec(text);
  if (!m) invalid(`${what}: "${text}" is neither a port nor a range lo-hi`);
  const lo = parsePort(m[1], what);
  const hi = m[2] === undefined ? lo : parsePort(m[2], what);
  if (hi < lo) invalid(`${what}: range ${lo}-${hi} is backwards`);
  return [lo, hi];
}

/**
 * Parses the text form. `inside` may omit the port ("10.0.10.5": same ports as
 * public) or give only the first port of a range ("10.0.10.5:9000" for public
 * 8000-8009 means 9000-9009).
 */
export function parseForward(rec: { proto: string; public: string | number; inside: string }): PortForward {
  if (rec === null || typeof rec !== 'object') invalid('a forward must be an object {proto, public, inside}');
  const proto = typeof rec.proto === 'string' ? rec.proto.toLowerCase() : '';
  if (proto !== 'tcp' && proto !== 'udp') invalid(`protocol "${String(rec.proto)}" is not tcp or udp`);
  if (typeof rec.public !== 'string' && typeof rec.public !== 'number') invalid('public port missing');
  const [publicLo, publicHi] = parsePortRange(String(rec.public), 'public');
  if (typeof rec.inside !== 'string') invalid('inside address missing');
  const m = /^\s*(?:([0-9.]+)|\[([0-9A-Fa-f:.]+)\])(?::(.+))?$/.exec(rec.inside) ?? /^\s*()([0-9A-Fa-f]*:[0-9A-Fa-f:.]*)()\s*$/.exec(rec.inside);
  if (!m) invalid(`inside: "${rec.inside}" is not ip[:port[-port]] or [ipv6][:port[-port]]`);
  let insideIp = 0;
  let inside6: string | undefined;
  if (m[1]) {
    insideIp = parseIp4(m[1]);
    if (insideIp < 0) invalid(`inside: "${m[1]}" is not an IPv4 address`);
  } else {
    const a = parseIp6(m[2]);
    if (a === undefined) invalid(`inside: "${m[2]}" is not an IPv6 address`);
    inside6 = formatIp6(a);
  }
  const ports = m[3] || undefined;
  let insideLo = publicLo;
  if (ports !== undefined) {
    const [lo, hi] = parsePortRange(ports, 'inside');
    if (hi !== lo && hi - lo !== publicHi - publicLo) {
      invalid(`inside range ${lo}-${hi} has ${hi - lo + 1} ports, public ${publicLo}-${publicHi} has ${publicHi - publicLo + 1}`);
    }
    insideLo = lo;
  }
  return checkForward(inside6 !== undefined ? { proto, publicLo, publicHi, insideIp, insideLo, inside6 } : { proto, publicLo, publicHi, insideIp, insideLo });
}

/** Validates a forward given as numbers; returns a frozen copy. */
export function checkForward(f: PortForward): PortForward {
  if (f === null || typeof f !== 'object') invalid('a forward must be an object');
  if (f.proto !== 'tcp' && f.proto !== 'udp') invalid(`protocol "${String(f.proto)}" is not tcp or udp`);
  const isPort = (p: unknown): p is number => Number.isInteger(p) && (p as number) >= 1 && (p as number) <= 65535;
  if (!isPort(f.publicLo) || !isPort(f.publicHi) || f.publicHi < f.publicLo) {
    invalid(`public ports ${String(f.publicLo)}-${String(f.publicHi)} are not a range within 1-65535`);
  }
  if (!isPort(f.insideLo) || !isPort(f.insideLo + (f.publicHi - f.publicLo))) {
    invalid(`inside ports from ${String(f.insideLo)} for ${f.publicHi - f.publicLo + 1} ports leave 1-65535`);
  }
  if (f.inside6 !== undefined) {
    const a = typeof f.inside6 === 'string' ? parseIp6(f.inside6) : undefined;
    if (a === undefined) invalid(`inside address ${String(f.inside6)} is not an IPv6 address`);
    const zero = a.subarray(0, 15).every((b) => b === 0);
    const mapped = ip6IsV4Mapped(a, 0);
    // A VM's global or ULA address: not unspecified/loopback, IPv4-mapped, multicast or link-local (no zone to name it by).
    if (zero || mapped || ip6IsMulticast(a, 0) || ip6IsLinkLocal(a, 0)) invalid(`inside address ${f.inside6} is not a unicast host address`);
    return Object.freeze({ proto: f.proto, publicLo: f.publicLo, publicHi: f.publicHi, insideIp: 0, insideLo: f.insideLo, inside6: formatIp6(a) });
  }
  const ip = f.insideIp;
  if (!Number.isInteger(ip) || ip < 0 || ip > 0xffffffff) invalid(`inside address ${String(ip)} is not an IPv4 address`);
  const first = ip >>> 24;
  // Not a host one could forward to: "this network", loopback, multicast, reserved, broadcast.
  if (first === 0 || first === 127 || first >= 224) invalid(`inside address ${formatIp4(ip)} is not a unicast host address`);
  return Object.freeze({ proto: f.proto, publicLo: f.publicLo, publicHi: f.publicHi, insideIp: ip >>> 0, insideLo: f.insideLo });
}

export class Forwards implements PortReservation {
  #byPublic: (PortForward | undefined)[][] = [newSlots(), newSlots()];
  #byInside: Map<number, PortForward[]>[] = [new Map(), new Map()];
  #list: PortForward[] = [];
  #listeners = new Set<ForwardListener>();

  get size(): number { return this.#list.length; }

  /** Adds a forward (validated; throws EFORWARD_INVALID / EFORWARD_CONFLICT). Returns the stored copy. */
  add(forward: PortForward): PortForward {
    const f = checkForward(forward);
    const pi = PROTO_INDEX[f.proto];
    const hi = forwardInsideHi(f);
    for (const g of this.#list) {
      if (g.proto !== f.proto) continue;
      if (g.publicLo <= f.publicHi && f.publicLo <= g.publicHi) {
        throw new ForwardError('EFORWARD_CONFLICT',
          `public ${f.proto} ${rangeText(f.publicLo, f.publicHi)} overlaps the forward ${describeForward(g)}`);
      }
      if (sameInside(g, f) && g.insideLo <= hi && f.insideLo <= forwardInsideHi(g)) {
        throw new ForwardError('EFORWARD_CONFLICT',
          `inside ${insideHost(f)}:${rangeText(f.insideLo, hi)} is already the target of the forward ${describeForward(g)}` +
          ' (an inside port has one public port: endpoint-independent mapping)');
      }
    }
    const slots = this.#byPublic[pi];
    for (let p = f.publicLo; p <= f.publicHi; p++) slots[p] = f;
    // publicFor is the IPv4 NAPT's: an IPv6 target has no place there.
    if (f.inside6 === undefined) {
      const key = f.insideIp | 0;
      const forHost = this.#byInside[pi].get(key);
      if (forHost === undefined) this.#byInside[pi].set(key, [f]);
      else forHost.push(f);
    }
    this.#list.push(f);
    this.#list.sort(compareForwards);
    this.#emit('add', f);
    return f;
  }

  /** Removes the forward whose public range is exactly lo..hi; throws EFORWARD_NOT_FOUND. */
  del(proto: ForwardProto, publicLo: number, publicHi = publicLo): PortForward {
    const i = this.#list.findIndex((g) => g.proto === proto && g.publicLo === publicLo && g.publicHi === publicHi);
    if (i < 0) {
      const cover = this.#list.find((g) => g.proto === proto && g.publicLo <= publicHi && publicLo <= g.publicHi);
      throw new ForwardError('EFORWARD_NOT_FOUND', cover === undefined
        ? `no forward for public ${proto} ${rangeText(publicLo, publicHi)}`
        : `public ${proto} ${rangeText(publicLo, publicHi)} is part of the forward ${describeForward(cover)}; delete it by its whole range`);
    }
    const f = this.#list[i];
    this.#list.splice(i, 1);
    const pi = PROTO_INDEX[f.proto];
    this.#byPublic[pi].fill(undefined, f.publicLo, f.publicHi + 1);
    if (f.inside6 === undefined) {
      const key = f.insideIp | 0;
      const forHost = this.#byInside[pi].get(key) as PortForward[];
      forHost.splice(forHost.indexOf(f), 1);
      if (forHost.length === 0) this.#byInside[pi].delete(key);
    }
    this.#emit('del', f);
    return f;
  }

  /** Removes every forward (each announced as 'del'). */
  clear(): void {
    for (const f of [...this.#list]) this.del(f.proto, f.publicLo, f.publicHi);
  }

  /** All forwards, ordered by protocol then public port. */
  list(): PortForward[] { return [...this.#list]; }

  /** The text form of all forwards, for `vswitch nat forward show [--json]`. */
  view(): ForwardRecord[] { return this.#list.map(formatForward); }

  /** The forward of an inbound public port; `proto` is the IP protocol number. */
  lookup(proto: number, publicPort: number): PortForward | undefined {
    const pi = protoOf(proto);
    return pi < 0 ? undefined : this.#byPublic[pi][publicPort];
  }

  /** The public port a forward gives to this inside endpoint, or -1. */
  publicFor(proto: number, insideIp: number, insidePort: number): number {
    const pi = protoOf(proto);
    if (pi < 0) return -1;
    const forHost = this.#byInside[pi].get(insideIp | 0);
    if (forHost === undefined) return -1;
    for (const f of forHost) {
      if (insidePort >= f.insideLo && insidePort <= forwardInsideHi(f)) return f.publicLo + (insidePort - f.insideLo);
    }
    return -1;
  }

  isReserved(proto: number, port: number): boolean {
    const pi = protoOf(proto);
    return pi >= 0 && this.#byPublic[pi][port] !== undefined;
  }

  /** Calls `fn` after each add and del; returns the unsubscribe function. */
  subscribe(fn: ForwardListener): () => void {
    this.#listeners.add(fn);
    return () => { this.#listeners.delete(fn); };
  }

  #emit(event: ForwardEvent, f: PortForward): void {
    for (const fn of this.#listeners) fn(event, f);
  }
}

function compareForwards(a: PortForward, b: PortForward): number {
  return PROTO_INDEX[a.proto] - PROTO_INDEX[b.proto] || a.publicLo - b.publicLo;
}

function newSlots(): (PortForward | undefined)[] {
  return new Array<PortForward | undefined>(65536).fill(undefined);
}

// ---- Persistence ----

export function serializeForwards(forwards: Forwards | readonly PortForward[]): string {
  const list = forwards instanceof Forwards ? forwards.list() : [...forwards].sort(compareForwards);
  return `${JSON.stringify({ version: FORWARDS_FILE_VERSION, forwards: list.map(formatForward) }, null, 2)}\n`;
}

/** Parses a forwards file; every entry is validated and the set must be conflict-free. */
export function deserializeForwards(text: string): PortForward[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    invalid(`forwards file is not JSON: ${(e as Error).message}`);
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) invalid('forwards file: expected an object');
  const { version, forwards } = doc as { version?: unknown; forwards?: unknown };
  if (version !== FORWARDS_FILE_VERSION) invalid(`forwards file: version ${String(version)} is not ${FORWARDS_FILE_VERSION}`);
  if (!Array.isArray(forwards)) invalid('forwards file: "forwards" is not a list');
  const check = new Forwards();
  return forwards.map((rec: unknown, i: number) => {
    try {
      return check.add(parseForward(rec as ForwardRecord));
    } catch (e) {
      if (e instanceof ForwardError) throw new ForwardError(e.code, `forwards file, entry ${i + 1}: ${e.message}`);
      throw e;
    }
  });
}

/** Writes the forwards durably (state-file.ts: temp, fsync, rename, fsync directory). */
export function saveForwards(path: string, forwards: Forwards): void {
  writeStateFile(path, serializeForwards(forwards));
}

/**
 * Adds the forwards stored at `path` to `forwards`; a missing file adds none.
 * All or nothing: a bad entry or a conflict with the forwards already present
 * throws before any is added. Returns how many were added.
 */
export function loadForwards(path: string, forwards: Forwards): number {
  const text = readStateFile(path);
  if (text === undefined) return 0;
  let list: PortForward[];
  try {
    list = deserializeForwards(text);
  } catch (e) {
    if (e instanceof ForwardError) throw new ForwardError(e.code, `${path}: ${e.message}`);
    throw e;
  }
  const trial = new Forwards();
  for (const f of forwards.list()) trial.add(f);
  for (const f of list) {
    try {
      trial.add(f);
    } catch (e) {
      if (e instanceof ForwardError) throw new ForwardError(e.code, `${path}: ${e.message}`);
      throw e;
    }
  }
  for (const f of list) forwards.add(f);
  return list.length;
}
