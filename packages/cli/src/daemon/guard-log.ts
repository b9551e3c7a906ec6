/*
 * Log lines for tenant-protection drops (the guards and storm control), read from
 * the ports' drop counters once a second by the daemon's tick, never from the
 * forwarding path: a frame dropped by a guard costs the same counter increment it
 * always did, and a tenant spoofing flat out costs the log one line per port and
 * reason per window.
 *
 * Per (port, reason): the first drop seen is logged at the next tick (`first:
 * true`, within a second), later ones are summed and logged at most once per
 * GUARD_LOG_WINDOW_MS (`count` = drops since the previous line, `total` = the
 * port's counter). A quiet window logs nothing. State is keyed by the Port object,
 * so a port removed and added again under its name starts afresh, as its counters do.
 */
import { Drop, type Bridge, type DropReason, type Port } from '@vswitch/switch';

/** The drop reasons logged this way: what a port's guards and storm control refuse. */
export const GUARD_LOG_REASONS = ['dhcp_guard', 'ip_source_guard', 'arp_spoof', 'bound_mac_conflict', 'storm_control', 'ra_guard', 'dhcpv6_guard', 'ipv6_source_guard', 'nd_spoof'] as const satisfies readonly DropReason[];
export const GUARD_LOG_WINDOW_MS = 60_000;

export interface GuardDropLine {
  event: 'guard_drop';
  bridge: string;
  port: string;
  reason: (typeof GUARD_LOG_REASONS)[number];
  /** Drops since the previous line of this port and reason (the first line: since the port came). */
  count: number;
  /** The port's counter for this reason. */
  total: number;
  first: boolean;
}

interface State { seen: number; pending: number; loggedAt: number | undefined }

export class GuardDropLog {
  readonly #state = new Map<Port, State[]>();

  constructor(private readonly emit: (line: GuardDropLine) => void, private readonly windowMs = GUARD_LOG_WINDOW_MS) {}

  /** Reads the counters of every port of `bridges`; `now` in ms (any monotonic clock). */
  tick(bridges: Iterable<Bridge>, now: number): void {
    const live = new Set<Port>();
    for (const br of bridges) {
      for (const port of br.ports.values()) {
        live.add(port);
        let st = this.#state.get(port);
        if (st === undefined) this.#state.set(port, st = GUARD_LOG_REASONS.map(() => ({ seen: 0, pending: 0, loggedAt: undefined })));
        for (let i = 0; i < GUARD_LOG_REASONS.length; i++) {
          const reason = GUARD_LOG_REASONS[i];
          const s = st[i];
          const total = port.drops[Drop[reason]];
          s.pending += total - s.seen;
          s.seen = total;
          if (s.pending <= 0) continue;
          const first = s.loggedAt === undefined;
          if (!first && now - s.loggedAt! < this.windowMs) continue;
          this.emit({ event: 'guard_drop', bridge: br.name, port: port.name, reason, count: s.pending, total, first });
          s.pending = 0;
          s.loggedAt = now;
        }
      }
    }
    for (const p of this.#state.keys()) if (!live.has(p)) this.#state.delete(p);
  }
}
