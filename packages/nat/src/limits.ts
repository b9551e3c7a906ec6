/*
 * Per-port rate limits on the work a VM can make the router do itself: DHCP
 * messages to the server, ARP to the gateway, ICMP echo to the gateway (ICMPv6
 * echo too), Neighbor and Router Solicitations to the gateway (`nd`), DNS
 * queries to the host NAT's forwarder, and the ICMP errors the router sends
 * (unreachable, prohibited, time exceeded). Every one of them runs on the loop
 * that forwards every other VM's frames, so without a bound one VM flooding
 * any of them slows all the others (issue 12).
 *
 * Model: one token bucket per (bridge port, kind), as the kernel's icmp_ratelimit
 * and Cisco's DHCP snooping / ARP inspection rate limits do. A bucket holds `pps`
 * tokens at most (one second's worth is the burst, as storm control's; at least
 * one), is
 * refilled lazily from the router's clock when it is used (no timer, no
 * allocation), and a frame without a token is dropped and counted. `pps` 0 turns
 * a kind off.
 *
 * The key is the bridge port the frame came in on (the caller asks the bridge's
 * MAC table where the frame's source was learned; ingress learned it before the
 * router saw the frame), never the source MAC or IP, which an attacker rotates
 * at will: a port flooding with random sources still spends its own tokens only.
 * So memory is bounded by the ports the operator made, not by what a VM sends;
 * MAX_PORTS more is refused to a shared overflow entry. A source the MAC table
 * does not know (learning off on the bridge: ageing 0) is charged to the port ''
 * that all such frames share.
 *
 * Drops are counted per port and kind (for `router show` and the metrics) and in
 * total per kind (never forgotten). A port that starts being limited is reported
 * once (`rate_limited`, the router bounds its log lines), and again when it has
 * been quiet for QUIET_MS (`rate_limit_ended`, with the episode's drops). An
 * entry unused for IDLE_MS is forgotten by tick(): a removed port's entry goes.
 *
 * Cost (limits.bench.ts; Node 20 on the 2-core dev VM, 64 ports under a flood):
 * 74 ns per check under vitest bench, 43-50 ns run by plain node, no allocation;
 * a kind that is off returns before the lookup. The caller adds its MAC table
 * lookup and a clock read: well under a microsecond per limited control frame,
 * where answering it (an echo reply or a DHCP ACK written to a TAP) costs
 * microseconds and more. Forwarded frames never reach a check.
 */

/** The kinds, in index order: also the `kind` label of the metrics and the closed set of reasons. */
export const LIMIT_KINDS = ['dhcp', 'arp', 'icmp', 'dns', 'icmp_errors', 'nd'] as const;
export type LimitKind = (typeof LIMIT_KINDS)[number];

/** Kind indexes, for the per-frame calls. */
export const LIMIT = Object.freeze({ dhcp: 0, arp: 1, icmp: 2, dns: 3, icmpErrors: 4, nd: 5 } as const);

/** Packets per second per port for each kind; 0 = no limit. */
export interface RateLimits {
  /** DHCP messages to the server (UDP 67). */
  dhcp: number;
  /** ARP requests for the gateway address, and ARP replies to it. */
  arp: number;
  /** ICMP and ICMPv6 echo requests to the gateway (and to a NAPT uplink's public address). */
  icmp: number;
  /** DNS queries to the gateway's forwarder (host uplink): UDP datagrams and TCP connections to port 53. */
  dns: number;
  /** ICMP errors the router sends back: network unreachable, prohibited, time exceeded. */
  icmpErrors: number;
  /** IPv6 Neighbor Solicitations for the gateway's addresses and Router Solicitations (nd.ts). */
  nd: number;
}

/**
 * The daemon's defaults (config.ts), far above what a guest does and far below
 * what would cost the loop anything (README.md explains each).
 */
export const RATE_LIMIT_DEFAULTS: Readonly<RateLimits> = Object.freeze({ dhcp: 10, arp: 100, icmp: 200, dns: 200, icmpErrors: 50, nd: 100 });

export const RATE_LIMITS_OFF: Readonly<RateLimits> = Object.freeze({ dhcp: 0, arp: 0, icmp: 0, dns: 0, icmpErrors: 0, nd: 0 });

const KEYS = ['dhcp', 'arp', 'icmp', 'dns', 'icmpErrors', 'nd'] as const;
const N = KEYS.length;

/** Ports tracked at most per limiter; more go to one shared entry (OVERFLOW_PORT). */
export const MAX_PORTS = 4096;
export const OVERFLOW_PORT = '(overflow)';
/** An episode of drops ends after this long without one. */
export const QUIET_MS = 10_000;
/** An entry unused this long (and not in an episode) is forgotten. */
export const IDLE_MS = 600_000;

export type RateLimitEvent =
  | { event: 'rate_limited'; port: string; kind: LimitKind; pps: number }
  | { event: 'rate_limit_ended'; port: string; kind: LimitKind; pps: number; dropped: number };

class PortBuckets {
  readonly tokens = new Float64Array(N);
  readonly last = new Float64Array(N);
  readonly drops = new Float64Array(N);
  /** Drops of the current episode (0: not limited now), and the time of the last one. */
  readonly episode = new Float64Array(N);
  readonly lastDrop = new Float64Array(N);
  seen: number;

  constructor(readonly port: string, burst: Float64Array, now: number) {
    this.tokens.set(burst);
    this.last.fill(now);
    this.seen = now;
  }
}

export interface RateLimitPortView {
  port: string;
  /** Drops by kind since the entry was made. */
  dropped: Record<LimitKind, number>;
  /** Kinds this port is being limited on now (dropped within QUIET_MS). */
  limited: LimitKind[];
}

export class RateLimiter {
  /** Per kind (LIMIT order): tokens per second; 0 = off. */
  readonly pps = new Float64Array(N);
  /** Per kind: the bucket's size, one second of pps (at least 1). */
  readonly burst = new Float64Array(N);
  /** Drops per kind, all ports, since start. */
  readonly dropped = new Float64Array(N);
  onEvent: ((e: RateLimitEvent) => void) | undefined;
  readonly #ports = new Map<string, PortBuckets>();
  #lastSweep = 0;
  #capSweep = -Infinity;

  constructor(limits: Partial<RateLimits> = {}, onEvent?: (e: RateLimitEvent) => void) {
    this.onEvent = onEvent;
    this.set(limits);
  }

  /** The limits as applied. */
  get limits(): RateLimits {
    const out = { ...RATE_LIMITS_OFF };
    for (let k = 0; k < N; k++) out[KEYS[k]] = this.pps[k];
    return out;
  }

  /** New rates (missing kinds: off); every bucket starts full at its new burst. Counters are kept. */
  set(limits: Partial<RateLimits>): void {
    for (let k = 0; k < N; k++) {
      const v = limits[KEYS[k]];
      this.pps[k] = v !== undefined && Number.isFinite(v) && v > 0 ? v : 0;
      this.burst[k] = Math.max(1, this.pps[k]);
    }
    for (const b of this.#ports.values()) b.tokens.set(this.burst);
  }

  /**
   * Takes a token of `kind` for `port` at `now` (ms); false (counted) when the
   * bucket is empty. No allocation unless the port is new or starts being limited.
   */
  allow(kind: number, port: string, now: number): boolean {
    const pps = this.pps[kind];
    if (pps === 0) return true;
    let b = this.#ports.get(port);
    if (b === undefined) b = this.#add(port, now);
    b.seen = now;
    const dt = now - b.last[kind];
    if (dt > 0) {
      b.last[kind] = now;
      const t = b.tokens[kind] + (dt * pps) / 1000;
      const max = this.burst[kind];
      b.tokens[kind] = t > max ? max : t;
    }
    if (b.tokens[kind] >= 1) {
      b.tokens[kind] -= 1;
      return true;
    }
    b.drops[kind]++;
    this.dropped[kind]++;
    b.lastDrop[kind] = now;
    if (b.episode[kind]++ === 0) this.onEvent?.({ event: 'rate_limited', port: b.port, kind: LIMIT_KINDS[kind], pps });
    return false;
  }

  /** About once a second: ends quiet episodes (reported), forgets idle ports (every minute). */
  tick(now: number): void {
    for (const b of this.#ports.values()) {
      for (let k = 0; k < N; k++) {
        if (b.episode[k] > 0 && now - b.lastDrop[k] >= QUIET_MS) {
          const dropped = b.episode[k];
          b.episode[k] = 0;
          this.onEvent?.({ event: 'rate_limit_ended', port: b.port, kind: LIMIT_KINDS[k], pps: this.pps[k], dropped });
        }
      }
    }
    if (now - this.#lastSweep >= 60_000) {
      this.#lastSweep = now;
      this.#sweep(now, IDLE_MS);
    }
  }

  get ports(): number { return this.#ports.size; }

  /** Ports with drops, for `router show` and the metrics. */
  view(now: number): RateLimitPortView[] {
    const out: RateLimitPortView[] = [];
    for (const b of this.#ports.values()) {
      let any = false;
      for (let k = 0; k < N; k++) if (b.drops[k] > 0) any = true;
      if (!any) continue;
      const dropped = {} as Record<LimitKind, number>;
      const limited: LimitKind[] = [];
      for (let k = 0; k < N; k++) {
        dropped[LIMIT_KINDS[k]] = b.drops[k];
        if (b.episode[k] > 0 && now - b.lastDrop[k] < QUIET_MS) limited.push(LIMIT_KINDS[k]);
      }
      out.push({ port: b.port, dropped, limited });
    }
    return out.sort((a, b) => (a.port < b.port ? -1 : a.port > b.port ? 1 : 0));
  }

  /** Drops of `port` per kind (LIMIT order), or undefined when it has no entry. */
  dropsOf(port: string): ArrayLike<number> | undefined {
    return this.#ports.get(port)?.drops;
  }

  /** Drops per kind, all ports. */
  totals(): Record<LimitKind, number> {
    const out = {} as Record<LimitKind, number>;
    for (let k = 0; k < N; k++) out[LIMIT_KINDS[k]] = this.dropped[k];
    return out;
  }

  #add(port: string, now: number): PortBuckets {
    if (this.#ports.size >= MAX_PORTS) {
      // At most one sweep a second: a full table must not cost a scan per new key.
      if (now - this.#capSweep >= 1000 || now < this.#capSweep) {
        this.#capSweep = now;
        this.#sweep(now, QUIET_MS);
      }
      if (this.#ports.size >= MAX_PORTS) {
        const o = this.#ports.get(OVERFLOW_PORT);
        if (o !== undefined) return o;
        port = OVERFLOW_PORT; // one entry over the cap, at most
      }
    }
    const b = new PortBuckets(port, this.burst, now);
    this.#ports.set(port, b);
    return b;
  }

  /** Forgets entries unused for `idleMs` and not in an episode. */
  #sweep(now: number, idleMs: number): void {
    for (const [port, b] of this.#ports) {
      if (now - b.seen < idleMs) continue;
      let active = false;
      for (let k = 0; k < N; k++) if (b.episode[k] > 0) active = true;
      if (!active) this.#ports.delete(port);
    }
  }
}
