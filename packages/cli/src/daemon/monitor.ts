/*
 * `vswitch monitor`: a live stream of the daemon's events to control-socket
 * clients, as `bridge monitor` and `ovs-vsctl monitor` give: MACs learned, moved
 * and aged, ports up/down/added/removed, leases granted and expired, uplinks up and
 * down, reloads applied and refused.
 *
 * Model: one hub; each event is serialized once (a JSON line with a timestamp) and
 * written to every subscribed connection. The hub never waits for a client and
 * never holds more for it than MAX_PENDING bytes: a client whose socket holds that
 * much unsent (it stopped reading, or reads slower than events come) has further
 * events dropped and counted, and once its socket drains it first gets an
 * `events_dropped` line with how many it missed. So a slow monitor cannot grow the
 * daemon's memory, whatever the event rate, and never slows the forwarding loop.
 *
 * The MAC table reports learning only while someone watches (Bridge.onLearn is set
 * only while the hub has clients), and at most LEARN_BUDGET_PER_SEC learned MACs a
 * second per bridge become events (a guest flooding random MACs costs the loop
 * a bounded number of serializations); the rest are counted in one
 * `events_suppressed` line per second.
 */
import type { Socket } from 'node:net';

/** Unsent bytes a client may have queued in the daemon before its events are dropped. */
export const MAX_PENDING = 64 * 1024;
/** Learned-MAC events per bridge per second; more are counted, not sent. */
export const LEARN_BUDGET_PER_SEC = 1000;

export interface MonitorEvent {
  event: string;
  [k: string]: unknown;
}

/** The writable side the hub needs (a net.Socket, or a test double). */
export type MonitorSink = Pick<Socket, 'write' | 'writableLength' | 'once' | 'destroyed'>;

interface Client {
  id: number;
  sink: MonitorSink;
  sent: number;
  dropped: number;
  /** Dropped since the last `events_dropped` line. */
  owed: number;
  waiting: boolean;
}

export interface MonitorStats {
  clients: { id: number; sent: number; dropped: number; pending: number }[];
  events: number;
  dropped: number;
  suppressed: number;
}

export class Monitor {
  readonly #clients = new Map<number, Client>();
  #nextId = 1;
  #events = 0;
  #dropped = 0;
  #suppressed = 0;
  /** Called when the first client subscribes (true) and when the last one leaves (false). */
  onActive: (active: boolean) => void = () => {};

  get active(): boolean {
    return this.#clients.size > 0;
  }

  /** Streams events to `sink` until it closes; returns an unsubscribe function. */
  subscribe(sink: MonitorSink & { on?: Socket['on'] }): () => void {
    const c: Client = { id: this.#nextId++, sink, sent: 0, dropped: 0, owed: 0, waiting: false };
    this.#clients.set(c.id, c);
    if (this.#clients.size === 1) this.onActive(true);
    let gone = false;
    const leave = (): void => {
      if (gone) return;
      gone = true;
      this.#clients.delete(c.id);
      if (this.#clients.size === 0) this.onActive(false);
    };
    sink.once('close', leave);
    return leave;
  }

  /** Sends `e` to every client that has room for it. */
  emit(e: MonitorEvent): void {
    if (this.#clients.size === 0) return;
    this.#events++;
    const line = JSON.stringify({ time: new Date().toISOString(), ...e }) + '\n';
    for (const c of this.#clients.values()) this.#send(c, line);
  }

  /** Counts events not sent because a source was over its budget (reported by `flushSuppressed`). */
  suppressed(n: number): void {
    this.#suppressed += n;
  }

  stats(): MonitorStats {
    return {
      clients: [...this.#clients.values()].map((c) => ({ id: c.id, sent: c.sent, dropped: c.dropped, pending: c.sink.writableLength })),
      events: this.#events,
      dropped: this.#dropped,
      suppressed: this.#suppressed,
    };
  }

  #send(c: Client, line: string): void {
    if (c.sink.destroyed) return;
    if (c.sink.writableLength + line.length > MAX_PENDING) {
      c.dropped++;
      c.owed++;
      this.#dropped++;
      if (!c.waiting) {
        c.waiting = true;
        c.sink.once('drain', () => {
          c.waiting = false;
          if (c.owed > 0 && !c.sink.destroyed) {
            const n = c.owed;
            c.owed = 0;
            c.sink.write(JSON.stringify({ time: new Date().toISOString(), event: 'events_dropped', count: n, reason: 'client too slow' }) + '\n');
          }
        });
      }
      return;
    }
    c.sent++;
    c.sink.write(line);
  }
}

/**
 * Per-source budget for frequent events (learned MACs): `take()` says whether one
 * more may be sent this second; `tick()` (every second) refills and returns how many
 * were refused since the last tick.
 */
export class EventBudget {
  #left: number;
  #refused = 0;

  constructor(readonly perSec: number) {
    this.#left = perSec;
  }

  take(): boolean {
    if (this.#left > 0) {
      this.#left--;
      return true;
    }
    this.#refused++;
    return false;
  }

  tick(): number {
    const n = this.#refused;
    this.#refused = 0;
    this.#left = this.perSec;
    return n;
  }
}
