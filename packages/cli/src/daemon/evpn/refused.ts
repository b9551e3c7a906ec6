/*
 * Peers' routes refused for the remote-MAC limit ('limit'), remembered so that a
 * raised `maxRemoteMacs` installs them without restarting gobgpd or waiting for the
 * peers to re-advertise.
 *
 * Bounded: at most `max` routes (the limit's worth) are kept, by route key; a route
 * refused past that is not kept but noted (`overflowed`), and the retry then reads
 * every route again from gobgpd (ListPath) instead: whatever the flood, memory stays
 * at the limit's worth and no refused route is lost for good. A withdrawal forgets
 * its route; a new connection forgets them all (the snapshot judges every route again).
 */
import type { EvpnRoute } from './gobgp.js';

export class LimitRefused {
  readonly #routes = new Map<string, EvpnRoute>();
  /** Refused routes not kept since the last drain (past `max`). */
  #overflowed = 0;

  constructor(public max: number) {}

  get size(): number { return this.#routes.size; }
  get overflowed(): number { return this.#overflowed; }

  note(k: string, r: EvpnRoute): void {
    if (this.#routes.has(k) || this.#routes.size < this.max) this.#routes.set(k, r);
    else this.#overflowed++;
  }

  forget(k: string): void {
    this.#routes.delete(k);
  }

  clear(): void {
    this.#routes.clear();
    this.#overflowed = 0;
  }

  /** The kept routes, and whether some were not kept (then re-read them all); both reset. */
  drain(): { routes: EvpnRoute[]; reread: boolean } {
    const out = { routes: [...this.#routes.values()], reread: this.#overflowed > 0 };
    this.clear();
    return out;
  }
}
