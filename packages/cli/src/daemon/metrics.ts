/*
 * The Prometheus endpoint: GET /metrics (text exposition format 0.0.4) and
 * GET /healthz on `metrics.listen` (default 127.0.0.1:9464, `--metrics`).
 *
 * Nothing here runs per frame. The data plane keeps plain numbers (Port.rxFrames,
 * Port.drops[], Fdb.counters, Bridge.counters ...); every metric below is a
 * prom-client metric whose `collect()` runs at scrape time, clears the metric and
 * refills it from the current numbers of the bridges and ports that exist now.
 * So a removed port's or bridge's series disappear at the next scrape, and a port
 * re-added under the same name starts again from 0, which Prometheus' rate()
 * treats as a counter reset.
 *
 * Labels: `bridge`; `port` is the interface name (the TAP or attached device, as
 * node_exporter's `device`); every per-port series also carries the port's `kind`
 * (tap, attach, ...) so that any two per-port metrics join without `on(...)`.
 * Drop reasons are the closed set of DROP_REASONS (README "Drop reasons"); each
 * port exports all of them, zeros included, so a series never appears late.
 *
 * Process metrics are prom-client's defaults under their standard names
 * (process_cpu_seconds_total, process_resident_memory_bytes, nodejs_*), without
 * a prefix, so that stock dashboards and alerts work on them; only the three
 * gauges prom-client misnames *_total are left out (see below).
 *
 * vswitch_build_info (version, revision, nodejs_version) follows Prometheus'
 * *_build_info convention; vswitch_info (version only) stays through 0.1.x,
 * deprecated. vswitch_config_last_reload_* mirror Prometheus' own names.
 *
 * Router counters survive a rebuild (see "Counters across a rebuild" below): the
 * numbers live in the router's objects, which a reload that rebuilds it replaces.
 *
 * Each daemon has its own Registry (never prom-client's global one).
 *
 * Serving (startMetrics): the HTTP server runs in a worker thread
 * (metrics-worker.ts), so scrapes never hold the forwarding loop; the registry
 * stays here, with the data plane it reads, and renders when the worker asks: at
 * most once per `metrics.cacheInterval` however many scrapes arrive
 * (render-cache.ts, in the worker). The server shares the daemon's file
 * descriptors with every VM, so it is bounded: a connection limit (more are closed
 * on accept), idle, header and request timeouts, small headers. Its own counters
 * (sent by the worker with each render request), and the control socket's, are
 * exported as vswitch_metrics_* and vswitch_control_*.
 */
import { registerBondMetrics } from './bond-metrics.js';
import { registerFlowCacheMetrics } from './flow-cache-metrics.js';
import { vxlanMetrics } from './vxlan.js';
import { evpnMetrics } from './evpn/service.js';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DROP_REASONS, DROP_REASON_COUNT, type Bridge, type Port } from '@vswitch/switch';
import {
  DHCP_REASONS, DNS_DROP_REASONS, DNS_RESULTS, LIMIT_KINDS, NAPT_RESULTS, type GatewayDns, NaptResult, REFUSE_REASONS, type HostNat, type Napt, type NaptResultName, type RouterNetwork,
} from '@vswitch/nat';
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { ControlStats } from './control.js';
import type { ManagedRouter } from './routers.js';
import { registerDhcp6Metrics } from './dhcp6-metrics.js';
import { addonSparseFirst, foldAddonFlowCache } from '@vswitch/switch/ports';
import { pollBeforeSleepStats, stats as netdevStats } from '@vswitch/netdev';
import type { Logger } from './log.js';
import {
  cacheStats, DEFAULT_METRICS_LIMITS, MAX_HEADER_BYTES, METRICS_CLOSE_REASONS, MetricsWorker,
  type MetricsCloseReason, type MetricsLimits, type RenderStats, type WorkerStats,
} from './metrics-worker.js';
import type { RenderCacheStats } from './render-cache.js';
import type { Vswitch } from './service.js';
import { SHUT_REASONS, shutReasonOf } from './traffic.js';

/** host:port, host may be a name, an IPv4 address or a bracketed IPv6 address. */
export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.-]+)?)\]|([A-Za-z0-9_.-]+)):(\d{1,5})$/.exec(listen.trim());
  if (m === null) throw new Error(`bad listen address '${listen}': expected host:port, e.g. 127.0.0.1:9464 or [::1]:9464`);
  const port = Number(m[3]);
  if (port > 65535) throw new Error(`bad listen address '${listen}': port ${port} out of range`);
  return { host: m[1] ?? m[2], port };
}

export const VERSION: string = readVersion();

/**
 * The source revision the daemon runs, for vswitch_build_info: a REVISION file
 * beside package.json (scripts/install.sh and the Docker image write one), else
 * `git rev-parse HEAD` when the package sits in a git work tree (a run from the
 * repository), else "unknown". Read once, at the first registry.
 */
let revision: string | undefined;
export function buildRevision(): string {
  if (revision !== undefined) return revision;
  const pkgDir = fileURLToPath(new URL('../../', import.meta.url));
  try {
    const r = readFileSync(`${pkgDir}REVISION`, 'utf8').trim();
    if (/^[0-9a-f]{7,40}(-dirty)?$/.test(r)) return (revision = r);
  } catch { /* not installed with one */ }
  const git = spawnSync('git', ['-C', pkgDir, 'rev-parse', 'HEAD'], { encoding: 'utf8', timeout: 2000, stdio: ['ignore', 'pipe', 'ignore'] });
  const head = git.status === 0 ? git.stdout.trim() : '';
  return (revision = /^[0-9a-f]{40}$/.test(head) ? head : 'unknown');
}

/** What NAPT passes (vswitch_nat_packets_total); every other result is a drop reason (vswitch_nat_dropped_total). */
export const NAT_PASSED = ['ok', 'hairpin', 'local'] as const satisfies readonly NaptResultName[];
export const NAT_DROP_REASONS: readonly NaptResultName[] = NAPT_RESULTS.filter((r) => !(NAT_PASSED as readonly string[]).includes(r));

/** The outcome of the last config load (the start counts as one), for vswitch_config_last_reload_*. */
export interface ReloadStatus {
  successful: boolean;
  /** Date.now() of the last load that was applied. */
  lastSuccessMs: number;
}

/** A series' identity within one metric: its name and label values, in emit order. */
function seriesKey(name: string, labels: Labels): string {
  let k = name;
  for (const l in labels) k += `\0${l}=${labels[l]}`;
  return k;
}

/** A port's own counters, as exported per port (a router network's port carries them across a rebuild). */
interface PortCounts { rxFrames: number; rxBytes: number; txFrames: number; txBytes: number; downEvents: number; drops: Float64Array }

function addPortCounts(base: PortCounts | undefined, p: PortCounts): PortCounts {
  const drops = new Float64Array(DROP_REASON_COUNT);
  for (let i = 0; i < DROP_REASON_COUNT; i++) drops[i] = (base?.drops[i] ?? 0) + p.drops[i];
  return {
    rxFrames: (base?.rxFrames ?? 0) + p.rxFrames, rxBytes: (base?.rxBytes ?? 0) + p.rxBytes,
    txFrames: (base?.txFrames ?? 0) + p.txFrames, txBytes: (base?.txBytes ?? 0) + p.txBytes,
    downEvents: (base?.downEvents ?? 0) + p.downEvents, drops,
  };
}

/** Undoes what createMetricsRegistry hooked into the Vswitch (startMetrics' close). */
const disposers = new WeakMap<Registry, () => void>();

function readVersion(): string {
  try {
    // src/daemon/metrics.ts and dist/daemon/metrics.js both sit two levels below the package.
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

type Labels = Record<string, string | number>;
type Emit = (labels: Labels, value: number) => void;

interface PortRef {
  bridge: Bridge;
  port: Port;
  /** bridge, port, kind */
  labels: { bridge: string; port: string; kind: string };
}

const PORT_LABELS = ['bridge', 'port', 'kind'] as const;

/** The interface name of a port: its device's name when it has one, else the port name. */
function portLabel(port: Port): string {
  try {
    const ifname = port.io.describe().ifname;
    if (typeof ifname === 'string' && ifname !== '') return ifname;
  } catch { /* a closed device may refuse; the port name is the interface name anyway */ }
  return port.name;
}

/**
 * A Registry holding every vswitch metric for `sw` plus the default process metrics.
 * Exported for unit tests; startMetrics serves it over HTTP.
 */
export function createMetricsRegistry(
  sw: Vswitch, opts: { defaultMetrics?: boolean; reload?: () => ReloadStatus | undefined } = {},
): Registry {
  const reg = new Registry();
  if (opts.defaultMetrics ?? true) {
    collectDefaultMetrics({ register: reg });
    // prom-client exports these three as gauges named *_total, which breaks the
    // naming rules (promtool check metrics refuses them); their per-type siblings
    // (nodejs_active_handles{type} ...) stay, and sum() of those gives the same.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
      reg.removeSingleMetric(name);
    }
  }

  const ports = (): PortRef[] => {
    foldAddonFlowCache(); // the addon's replayed frames into the port counters first
    const out: PortRef[] = [];
    for (const br of sw.bridges.values()) {
      for (const port of br.ports.values()) {
        out.push({ bridge: br, port, labels: { bridge: br.name, port: portLabel(port), kind: port.kind } });
      }
    }
    return out;
  };
  const bridges = (): Bridge[] => [...sw.bridges.values()];

  /** A counter refilled from the source numbers at each scrape (never incremented elsewhere). */
  const counter = (name: string, help: string, labelNames: readonly string[], fill: (emit: Emit) => void): void => {
    new Counter({
      name, help, labelNames, registers: [reg],
      collect() {
        this.reset();
        fill((labels, value) => this.inc(labels, value));
      },
    });
  };
  const gauge = (name: string, help: string, labelNames: readonly string[], fill: (emit: Emit) => void): void => {
    new Gauge({
      name, help, labelNames, registers: [reg],
      collect() {
        this.reset();
        fill((labels, value) => this.set(labels, value));
      },
    });
  };
  /*
   * Counters across a rebuild. A reload that changes a router's uplink, NAT limits,
   * interconnect or set of networks builds it anew (state.ts routerDiff): new
   * objects, counters at 0. So that its series go on instead of resetting, what the
   * old router and its network ports had counted is kept here, keyed by the new
   * objects (so a router or port removed for good takes its carry along), and
   * added to their numbers at every scrape. Gauges are not carried: they are
   * what is now.
   */
  const carry = {
    routers: new WeakMap<ManagedRouter, Map<string, number>>(),
    ports: new WeakMap<Port, PortCounts>(),
    fills: new Map<string, (mr: ManagedRouter, emit: Emit) => void>(),
  };
  const onRebuilt = (old: ManagedRouter, next: ManagedRouter, oldPorts: Map<string, Port>): void => {
    const m = new Map(carry.routers.get(old));
    for (const [name, fill] of carry.fills) {
      fill(old, (labels, v) => {
        const k = seriesKey(name, labels);
        m.set(k, (m.get(k) ?? 0) + v);
      });
    }
    carry.routers.set(next, m);
    for (const [net, oldPort] of oldPorts) {
      const io = next.router.networks.get(net);
      if (io === undefined) continue;
      for (const br of sw.bridges.values()) {
        const np = br.port(net);
        if (np !== undefined && np.io === io) carry.ports.set(np, addPortCounts(carry.ports.get(oldPort), oldPort));
      }
    }
  };
  sw.routerRebuilt.add(onRebuilt);
  disposers.set(reg, () => sw.routerRebuilt.delete(onRebuilt));

  const perPort = (name: string, help: string, value: (p: PortCounts) => number): void => {
    counter(name, help, PORT_LABELS, (emit) => {
      for (const r of ports()) {
        const base = carry.ports.get(r.port);
        emit(r.labels, value(r.port) + (base === undefined ? 0 : value(base)));
      }
    });
  };
  const perBridge = (name: string, help: string, value: (br: Bridge) => number, type: 'counter' | 'gauge' = 'counter'): void => {
    (type === 'counter' ? counter : gauge)(name, help, ['bridge'], (emit) => {
      for (const br of bridges()) emit({ bridge: br.name }, value(br));
    });
  };

  gauge('vswitch_build_info',
    'Always 1; labels: version (of vswitch), revision (source commit, "unknown" when not known), nodejs_version.',
    ['version', 'revision', 'nodejs_version'], (emit) => {
      emit({ version: VERSION, revision: buildRevision(), nodejs_version: process.versions.node }, 1);
    });
  gauge('vswitch_info', 'DEPRECATED, use vswitch_build_info (same version label); removed in vswitch 0.2. Always 1.', ['version'], (emit) => {
    emit({ version: VERSION }, 1);
  });
  if (opts.reload !== undefined) {
    const status = opts.reload;
    gauge('vswitch_config_last_reload_successful',
      '1 if the last config load (the start, vswitch reload, SIGHUP) was applied; 0 if it was refused (the daemon runs on the config before it).',
      [], (emit) => {
        const st = status();
        if (st !== undefined) emit({}, st.successful ? 1 : 0);
      });
    gauge('vswitch_config_last_reload_success_timestamp_seconds',
      'Unix time of the last config load that was applied (the start counts).', [], (emit) => {
        const st = status();
        if (st !== undefined) emit({}, st.lastSuccessMs / 1000);
      });
  }

  vxlanMetrics(() => sw.vxlan.vtep, counter);
  evpnMetrics(() => sw.evpn, gauge, counter);

  /* ---------- per port ---------- */
  perPort('vswitch_port_rx_frames_total',
    'Frames read from the port\'s device, before admission (frames later dropped are included).',
    (p) => p.rxFrames);
  perPort('vswitch_port_rx_bytes_total',
    'Bytes of the frames counted in vswitch_port_rx_frames_total (Ethernet header and payload, no FCS).',
    (p) => p.rxBytes);
  perPort('vswitch_port_tx_frames_total',
    'Frames written to the port\'s device (frames the kernel refused count as drops with reason tx_error or link_down instead).',
    (p) => p.txFrames);
  perPort('vswitch_port_tx_bytes_total',
    'Bytes of the frames counted in vswitch_port_tx_frames_total, as written (after VLAN tag insertion or removal).',
    (p) => p.txBytes);
  counter('vswitch_port_drops_total',
    'Frames dropped, by reason (a closed set, see the README "Drop reasons"). Ingress reasons count on the port the '
    + 'frame came from; egress_filtered, port_down, port_shut, egress_rate, tx_error and link_down on the port it was to leave by. '
    + 'Every reason is exported, zeros included.',
    [...PORT_LABELS, 'reason'], (emit) => {
      for (const r of ports()) {
        const d = r.port.drops;
        const base = carry.ports.get(r.port)?.drops;
        for (let i = 0; i < DROP_REASONS.length; i++) emit({ ...r.labels, reason: DROP_REASONS[i] }, d[i] + (base?.[i] ?? 0));
      }
    });
  gauge('vswitch_port_up',
    '1 if the port forwards; 0 if it is down (its device vanished or failed) and waits for delif or its device.',
    PORT_LABELS, (emit) => {
      for (const r of ports()) emit(r.labels, r.port.up ? 1 : 0);
    });
  perPort('vswitch_port_down_events_total',
    'Times the port went down (device deleted, fatal read or write error).',
    (p) => p.downEvents);
  gauge('vswitch_port_macs',
    'Dynamic (learned) MAC table entries currently pointing at the port, all VLANs; static entries are not counted.',
    PORT_LABELS, (emit) => {
      for (const r of ports()) emit(r.labels, r.bridge.fdb.portCount(r.port.id));
    });
  gauge('vswitch_port_max_macs',
    'Per-port limit on learned MACs (port security); only ports that have a limit export it.',
    PORT_LABELS, (emit) => {
      for (const r of ports()) {
        const limit = r.bridge.fdb.portLimit(r.port.id);
        if (limit > 0) emit(r.labels, limit);
      }
    });

  gauge('vswitch_port_shut',
    '1 while loop protection holds the port shut (frames in and out dropped), by reason: bpdu_guard (it received an STP BPDU) '
    + 'or loop (MAC-flap loop detection blocked it); 0 otherwise.',
    [...PORT_LABELS, 'reason'], (emit) => {
      for (const r of ports()) {
        const why = shutReasonOf(r.port);
        for (const reason of SHUT_REASONS) emit({ ...r.labels, reason }, why === reason ? 1 : 0);
      }
    });
  gauge('vswitch_port_shut_remaining_seconds',
    'Seconds until a shut port comes back (only ports shut now).',
    PORT_LABELS, (emit) => {
      const now = performance.now();
      for (const r of ports()) if (r.port.shut !== 0) emit(r.labels, Math.max(0, (r.port.shutUntil - now) / 1000));
    });
  counter('vswitch_port_shutdowns_total',
    'Times loop protection shut the port, by reason: bpdu_guard, loop.',
    [...PORT_LABELS, 'reason'], (emit) => {
      for (const r of ports()) {
        emit({ ...r.labels, reason: 'bpdu_guard' }, r.port.bpduShutdowns);
        emit({ ...r.labels, reason: 'loop' }, r.port.loopBlocks);
      }
    });
  counter('vswitch_port_read_rounds_full_total',
    'Read-loop rounds in which the port had more frames waiting than its share (the bridge\'s read quantum, or read frames under readShare: frames) took; '
    + 'the rest waited for the next round. Grows while the port floods.',
    PORT_LABELS, (emit) => {
      for (const r of ports()) if (r.port.io.readRoundsFull !== undefined) emit(r.labels, r.port.io.readRoundsFull);
    });
  gauge('vswitch_port_bpdu_guard',
    '1 if the port has the BPDU guard on.',
    PORT_LABELS, (emit) => {
      for (const r of ports()) emit(r.labels, r.port.bpduGuard ? 1 : 0);
    });
  gauge('vswitch_port_rate_limit_bits_per_second',
    'Configured per-port rate limits, by direction: ingress (policed, what the port sends) and egress (shaped, what it is sent); '
    + 'only ports with a limit export it. Excess: vswitch_port_drops_total reasons ingress_rate and egress_rate.',
    [...PORT_LABELS, 'direction'], (emit) => {
      for (const r of ports()) {
        if (r.port.police !== undefined) emit({ ...r.labels, direction: 'ingress' }, r.port.police.spec.rate);
        if (r.port.shaper !== undefined) emit({ ...r.labels, direction: 'egress' }, r.port.shaper.spec.rate);
      }
    });
  // Every bridge, on or off: the default (on) and a bridge turned off are both visible.
  gauge('vswitch_bridge_read_sparse',
    'Whether the bridge serves a port whose queue had emptied ahead of the backlogged ones (1, the default: readSparse) '
    + 'or in the poll\'s order (0: readSparse: false or bridge set BR read-sparse off).',
    ['bridge'], (emit) => { for (const br of bridges()) emit({ bridge: br.name }, br.readSparse ? 1 : 0); });
  counter('vswitch_read_sparse_first_total',
    'Services the read loop gave a port whose queue had emptied ahead of a backlogged port (all bridges; README "Fair share").',
    [], (emit) => emit({}, addonSparseFirst()));
  // Poll before sleep (README "Poll before sleep"): daemon wide, shown off (0) too.
  // Base units (Prometheus: seconds), as promtool checks; the settings themselves are in µs and ms.
  gauge('vswitch_poll_before_sleep_max_seconds',
    'The largest window the event loop polls its ports before sleeping (0: off, the default; pollBeforeSleepUs, vswitch set poll-us).',
    [], (emit) => emit({}, pollBeforeSleepStats().maxUs / 1e6));
  gauge('vswitch_poll_before_sleep_window_seconds',
    'The current window (adaptive as KVM\'s halt polling: grows after short sleeps ended by a port, shrinks after long ones).',
    [], (emit) => emit({}, pollBeforeSleepStats().windowUs / 1e6));
  gauge('vswitch_poll_before_sleep_budget_seconds',
    'At most this much polling per second of the clock (pollBeforeSleepBudgetMs, vswitch set poll-budget-ms).',
    [], (emit) => emit({}, pollBeforeSleepStats().budgetMs / 1e3));
  counter('vswitch_poll_before_sleep_total',
    'Polls before a sleep by outcome: hit (found work, no sleep), miss (nothing: the loop slept after), '
    + 'over_budget (not polled: the second\'s budget spent), host_busy (not polled: the host\'s CPU pressure, or a preempted poll\'s hold).',
    ['outcome'], (emit) => {
      const s = pollBeforeSleepStats();
      emit({ outcome: 'hit' }, s.hits);
      emit({ outcome: 'miss' }, s.misses);
      emit({ outcome: 'over_budget' }, s.overBudget);
      emit({ outcome: 'host_busy' }, s.hostBusy);
    });
  counter('vswitch_poll_before_sleep_served_total',
    'Hits served from inside the poll (not by a return to the event loop\'s epoll_wait).',
    [], (emit) => emit({}, pollBeforeSleepStats().served));
  counter('vswitch_poll_before_sleep_preempted_total',
    'Polls the scheduler preempted (another thread wanted the CPU): each starts a hold (8 ms, doubling with each busy sign in a row; without PSI: none for the rest of its second).',
    [], (emit) => emit({}, pollBeforeSleepStats().preempted));
  gauge('vswitch_poll_before_sleep_busy_pressure_ratio',
    'The host\'s CPU pressure (PSI some, share of an interval) at or over which polling holds; 0: not used (no /proc/pressure/cpu, or polling off).',
    [], (emit) => emit({}, pollBeforeSleepStats().busyPermille / 1000));
  gauge('vswitch_poll_before_sleep_pressure_ratio',
    'The host\'s CPU pressure (PSI some) over the last interval polling read it (every ~4 ms while it polls).',
    [], (emit) => emit({}, pollBeforeSleepStats().pressurePermille / 1000));
  counter('vswitch_poll_before_sleep_pressure_samples_total',
    'CPU pressure intervals judged, by verdict: calm (polling allowed) or busy (held).',
    ['verdict'], (emit) => {
      const s = pollBeforeSleepStats();
      emit({ verdict: 'calm' }, s.samples - s.busySamples);
      emit({ verdict: 'busy' }, s.busySamples);
    });
  counter('vswitch_poll_before_sleep_holds_total',
    'Holds polling started for a busy host (a busy pressure interval, or a preempted poll): 8 ms, doubling with each in a row up to 1 s.',
    [], (emit) => emit({}, pollBeforeSleepStats().holds));
  counter('vswitch_poll_before_sleep_seconds_total',
    'CPU time the event loop spent polling before sleeps, seconds.',
    [], (emit) => emit({}, pollBeforeSleepStats().spinMs / 1000));
  // Batched TAP writes (README "Batched TAP writes"): daemon wide, shown off (0) too.
  gauge('vswitch_tap_write_batch_enabled',
    'Whether the flow cache\'s replays of one read batch go to TAPs through io_uring in one call (1) or one writev each (0: off, or io_uring unavailable; tapWriteBatch, vswitch set tap-write-batch).',
    [], (emit) => emit({}, sw.tapWriteBatchOn ? 1 : 0));
  counter('vswitch_tap_write_batch_frames_total',
    'Replayed frames written through io_uring batches.',
    [], (emit) => emit({}, netdevStats().uringWrites));
  counter('vswitch_tap_write_batch_flushes_total',
    'io_uring batches of replayed frames written (one io_uring_enter each, or more when the ring was full).',
    [], (emit) => emit({}, netdevStats().uringFlushes));
  counter('vswitch_tap_write_batch_unsent_total',
    'Replayed frames io_uring did not take, written by writev after the batch.',
    [], (emit) => emit({}, netdevStats().uringUnsent));
  // The turn yield (README "The turn yield"): daemon wide, shown off (0) too.
  gauge('vswitch_turn_yield_interval_seconds',
    'At most one turn yield per this interval while the host is contended (0: off; turnYieldUs, vswitch set turn-yield-us).',
    [], (emit) => emit({}, sw.turnYieldUs / 1e6));
  counter('vswitch_turn_yields_total',
    'Busy loop turns after which the forwarding loop gave its CPU up (~55 us) so the tasks its writes woke could run.',
    [], (emit) => emit({}, netdevStats().turnYields));
  counter('vswitch_turn_yield_seconds_total',
    'Time the forwarding loop was away in its turn yields (each from its sleep to its return: long when a CPU-bound task took the CPU).',
    [], (emit) => emit({}, netdevStats().turnYieldNs / 1e9));
  registerBondMetrics(counter, gauge, bridges);
  registerFlowCacheMetrics(counter, gauge, bridges);
  gauge('vswitch_port_egress_queue_frames',
    'Frames waiting in the egress shaper\'s queue (ports with an egress rate).',
    PORT_LABELS, (emit) => {
      for (const r of ports()) if (r.port.shaper !== undefined) emit(r.labels, r.port.shaper.backlog);
    });

  /* ---------- per bridge ---------- */
  perBridge('vswitch_bridge_macs',
    'Entries in the bridge\'s MAC table (learned and static, all VLANs).',
    (br) => br.fdb.size, 'gauge');
  perBridge('vswitch_bridge_max_macs',
    'Limit on learned entries in the bridge\'s MAC table (static entries do not count); at the limit a new MAC evicts an old one.',
    (br) => br.fdb.maxEntries, 'gauge');
  perBridge('vswitch_bridge_mac_ageing_seconds',
    'Idle time after which a learned MAC is forgotten; 0 disables learning (every unicast frame floods).',
    (br) => br.fdb.ageingSec, 'gauge');
  perBridge('vswitch_bridge_mac_learned_total',
    'MAC table entries created by learning a new source MAC.',
    (br) => br.fdb.counters.learned);
  perBridge('vswitch_bridge_mac_moved_total',
    'Learned MACs seen on another port than their entry\'s and re-pointed there (VM migrated, cable moved, or a loop).',
    (br) => br.fdb.counters.moved);
  perBridge('vswitch_bridge_mac_aged_total',
    'Learned MACs removed because no frame came from them within the ageing time.',
    (br) => br.fdb.counters.aged);
  perBridge('vswitch_bridge_mac_evicted_total',
    'Learned MACs evicted to make room because the table was at vswitch_bridge_max_macs.',
    (br) => br.fdb.counters.evicted);
  counter('vswitch_bridge_mac_refused_total',
    'Source MACs not learned, by reason: port_limit (port at its MAC limit), static (MAC statically bound to another port), '
    + 'bound (MAC held by a DHCP lease or configured binding of another live guarded port), '
    + 'table_full (table full and nothing to evict). port_limit, static and bound refusals also drop the frame '
    + '(vswitch_port_drops_total reasons port_mac_limit, static_mac_conflict and bound_mac_conflict).',
    ['bridge', 'reason'], (emit) => {
      for (const br of bridges()) {
        const c = br.fdb.counters;
        emit({ bridge: br.name, reason: 'port_limit' }, c.refusedPortLimit);
        emit({ bridge: br.name, reason: 'static' }, c.refusedStatic);
        emit({ bridge: br.name, reason: 'bound' }, c.refusedBound);
        emit({ bridge: br.name, reason: 'table_full' }, c.refusedFull);
      }
    });
  counter('vswitch_bridge_flooded_frames_total',
    'Frames flooded to every other member port of their VLAN, by kind: group (broadcast or multicast destination) '
    + 'or unknown_unicast (destination MAC not in the table). Counted once per frame, not per copy.',
    ['bridge', 'kind'], (emit) => {
      for (const br of bridges()) {
        emit({ bridge: br.name, kind: 'group' }, br.counters.floodedGroup);
        emit({ bridge: br.name, kind: 'unknown_unicast' }, br.counters.floodedUnknown);
      }
    });
  perBridge('vswitch_bridge_forwarded_frames_total',
    'Frames sent to the one port their (known) unicast destination MAC was learned on.',
    (br) => br.counters.forwarded);
  gauge('vswitch_bridge_loop_protection',
    'Loop protection settings: setting = mac_flap_moves (moves of one MAC in a second above which its loop port is blocked; 0: off), '
    + 'mac_flap_hold_seconds, bpdu_recovery_seconds.',
    ['bridge', 'setting'], (emit) => {
      for (const br of bridges()) {
        const l = br.loop.settings();
        emit({ bridge: br.name, setting: 'mac_flap_moves' }, l.flapMoves);
        emit({ bridge: br.name, setting: 'mac_flap_hold_seconds' }, l.flapHoldSec);
        emit({ bridge: br.name, setting: 'bpdu_recovery_seconds' }, l.bpduRecoverySec);
      }
    });
  perBridge('vswitch_bridge_log_events_suppressed_total',
    'Events (MAC moved, MAC limit reached, MACs aged) not logged because the bridge\'s log budget (20 per second) was spent.',
    (br) => br.eventsSuppressed);
  perBridge('vswitch_bridge_deferred_dropped_total',
    'Frames a port of the bridge (a router) sent into it while it was forwarding another frame, dropped because '
    + '1024 such frames were already waiting to be forwarded after it.',
    (br) => br.deferredDropped);

  /* ---------- routers (NAT mode): absent when no router is configured ---------- */
  const routerList = (): ManagedRouter[] => [...sw.routers.values()];
  const netsOf = (mr: ManagedRouter): { net: RouterNetwork; labels: Labels }[] =>
    [...mr.router.networks.values()].map((net) => ({ net, labels: { router: mr.name, network: net.name, vlan: net.opts.vlan } }));
  const networks = (): { mr: ManagedRouter; net: RouterNetwork; labels: Labels }[] =>
    routerList().flatMap((mr) => netsOf(mr).map((n) => ({ mr, ...n })));
  const NET_LABELS = ['router', 'network', 'vlan'];
  const carried = carry.routers;
  /**
   * A router's counter: `fill` emits one router's series. Each value is the router's
   * number plus what its predecessors counted before a rebuild (carry.routers).
   */
  const routerCounter = (name: string, help: string, labelNames: readonly string[], fill: (mr: ManagedRouter, emit: Emit) => void): void => {
    carry.fills.set(name, fill);
    counter(name, help, labelNames, (emit) => {
      for (const mr of routerList()) {
        const base = carried.get(mr);
        fill(mr, base === undefined ? emit : (labels, v) => emit(labels, v + (base.get(seriesKey(name, labels)) ?? 0)));
      }
    });
  };
  const dhcpCounter = (name: string, help: string, labelNames: readonly string[], fill: (d: NonNullable<RouterNetwork['opts']['dhcp']>, labels: Labels, emit: Emit) => void): void => {
    routerCounter(name, help, labelNames, (mr, emit) => {
      for (const { net, labels } of netsOf(mr)) if (net.opts.dhcp !== undefined) fill(net.opts.dhcp, labels, emit);
    });
  };

  dhcpCounter('vswitch_dhcp_messages_total',
    'DHCP messages by type: received (discover, request, decline, release, inform) and sent (offer, ack, nak).',
    [...NET_LABELS, 'type'], (d, labels, emit) => {
      const c = d.counters;
      for (const [type, v] of [['discover', c.discovers], ['offer', c.offers], ['request', c.requests], ['ack', c.acks],
        ['nak', c.naks], ['decline', c.declines], ['release', c.releases], ['inform', c.informs]] as const) {
        emit({ ...labels, type }, v);
      }
    });
  routerCounter('vswitch_router_nd_total',
    'The gateway\'s IPv6 side (router networks with ipv6), by kind: ra_sent (periodic, answers to RS, the last one), '
    + 'rs_received, ns_answered (its own addresses, DAD probes defended), echo_replies, na_received (answers to the router\'s NS); ignored (not for it) and malformed.',
    [...NET_LABELS, 'kind'], (mr, emit) => {
      for (const { net, labels } of netsOf(mr)) {
        const c = net.nd?.counters;
        if (c === undefined) continue;
        for (const [kind, v] of [['ra_sent', c.raSent], ['rs_received', c.rsReceived], ['ns_answered', c.nsAnswered],
          ['echo_replies', c.echoReplies], ['na_received', c.naReceived], ['ignored', c.ignored], ['malformed', c.malformed]] as const) {
          emit({ ...labels, kind }, v);
        }
      }
    });
  dhcpCounter('vswitch_dhcp_dropped_total',
    `DHCP requests not answered, by reason (${DHCP_REASONS.join(', ')}). pool_exhausted and port_limit are the starvation signals.`,
    [...NET_LABELS, 'reason'], (d, labels, emit) => {
      for (const reason of DHCP_REASONS) emit({ ...labels, reason }, d.counters.dropped[reason]);
    });
  dhcpCounter('vswitch_dhcp_naks_total',
    `DHCPNAKs sent, by reason (${DHCP_REASONS.join(', ')}). not_owner: a client asked for a lease that belongs to another port or MAC.`,
    [...NET_LABELS, 'reason'], (d, labels, emit) => {
      for (const reason of DHCP_REASONS) emit({ ...labels, reason }, d.counters.nakReasons[reason]);
    });
  dhcpCounter('vswitch_dhcp_offers_reclaimed_total',
    'Offers withdrawn from a port at its maxLeasesPerPort cap to make room for another client of the same port.',
    NET_LABELS, (d, labels, emit) => emit(labels, d.counters.offersReclaimed));
  dhcpCounter('vswitch_dhcp_lease_writes_total',
    'Lease-file writes (each a write, two fsyncs and a rename, off the event loop). Group commit: one write covers every '
    + 'grant, renewal and release since the previous one, so it grows far slower than ACKs under load.',
    NET_LABELS, (d, labels, emit) => emit(labels, d.leaseWrites));
  dhcpCounter('vswitch_dhcp_lease_write_errors_total',
    'Lease-file writes that failed (disk full, I/O error): the ACKs they covered were not sent (reason store_error).',
    NET_LABELS, (d, labels, emit) => emit(labels, d.counters.storeErrors));
  gauge('vswitch_dhcp_pending_acks', 'ACKs waiting for the lease-file write that makes their lease durable.', NET_LABELS, (emit) => {
    for (const { net, labels } of networks()) if (net.opts.dhcp !== undefined) emit(labels, net.opts.dhcp.pendingAcks);
  });
  gauge('vswitch_dhcp_active_leases', 'Bound DHCP leases that have not expired.', NET_LABELS, (emit) => {
    const now = Date.now();
    for (const { net, labels } of networks()) {
      const d = net.opts.dhcp;
      if (d !== undefined) emit(labels, d.leases(now).filter((l) => l.state === 'bound').length);
    }
  });
  gauge('vswitch_dhcp_pool_size', 'Addresses in the network\'s DHCP pools (reservations not included).', NET_LABELS, (emit) => {
    for (const { net, labels } of networks()) if (net.opts.dhcp !== undefined) emit(labels, net.opts.dhcp.poolSize);
  });
  registerDhcp6Metrics(routerCounter, gauge, netsOf, networks, NET_LABELS);
  routerCounter('vswitch_router_packets_total',
    'IPv4 packets the router routed, by path: between (network to network), to_uplink and from_uplink (through NAPT), '
    + 'to_host and from_host (through the host-socket NAT), '
    + 'hairpin; and refused: prohibited (networks not interconnected), no_route, ttl_exceeded, nat_dropped (see vswitch_nat_dropped_total).',
    ['router', 'path'], (mr, emit) => {
      const c = mr.router.counters;
      for (const [path, v] of [['between', c.routedBetween], ['to_uplink', c.toUplink], ['from_uplink', c.fromUplink],
        ['to_host', c.toHost], ['from_host', c.fromHost],
        ['hairpin', c.hairpinned], ['prohibited', c.prohibited], ['no_route', c.noRoute], ['ttl_exceeded', c.ttlExceeded],
        ['nat_dropped', c.naptDropped]] as const) {
        emit({ router: mr.name, path }, v);
      }
    });
  routerCounter('vswitch_router_ipv6_packets_total',
    'IPv6 packets the router routed (route6.ts), by path: between (network to network), to_uplink, from_uplink; '
    + 'and refused: prohibited (networks not interconnected), no_route, hop_limit_exceeded, too_big (Packet Too Big sent), '
    + 'scope (link-local or multicast, never forwarded), bad_source (to the uplink from outside the router\'s prefixes).',
    ['router', 'path'], (mr, emit) => {
      const c = mr.router.route6.counters;
      for (const [path, v] of [['between', c.between], ['to_uplink', c.toUplink], ['from_uplink', c.fromUplink],
        ['prohibited', c.prohibited], ['no_route', c.noRoute], ['hop_limit_exceeded', c.hopLimitExceeded], ['too_big', c.tooBig],
        ['scope', c.scope], ['bad_source', c.badSource]] as const) {
        emit({ router: mr.name, path }, v);
      }
    });
  routerCounter('vswitch_router_uplink6_dad_total',
    'Duplicate Address Detection of the uplink\'s own IPv6 address (uplink6.ts), by result: probe (Neighbor Solicitations sent), '
    + 'conflict (another node has the address: it is not used, see router show and the uplink6_dad_failed log).',
    ['router', 'result'], (mr, emit) => {
      const c = mr.router.uplink?.ipv6?.counters;
      if (c === undefined) return;
      emit({ router: mr.name, result: 'probe' }, c.dadProbes);
      emit({ router: mr.name, result: 'conflict' }, c.dadConflicts);
    });
  gauge('vswitch_router_rate_limit_pps',
    'Per bridge port rate limit of the router, by kind (the closed set of rate-limit reasons: '
    + `${LIMIT_KINDS.join(', ')}), in packets per second; 0 = off.`,
    ['router', 'kind'], (emit) => {
      for (const mr of routerList()) {
        const l = mr.router.limits;
        if (l === undefined) continue;
        const v = [l.dhcp, l.arp, l.icmp, l.dns, l.icmpErrors, l.nd];
        for (let k = 0; k < LIMIT_KINDS.length; k++) emit({ router: mr.name, kind: LIMIT_KINDS[k] }, v[k]);
      }
    });
  routerCounter('vswitch_router_rate_limited_total',
    'Frames a VM sent that the router dropped by its per-port rate limits, by bridge port and kind '
    + `(${LIMIT_KINDS.join(', ')}). Every port of the network's VLAN is listed, zeros included; port="" is sources the MAC table did not know.`,
    [...NET_LABELS, 'port', 'kind'], (mr, emit) => {
      for (const { net, labels } of netsOf(mr)) {
        const br = [...sw.bridges.values()].find((b) => b.ports.get(net.name)?.io === net);
        const ports = new Set<string>();
        for (const p of br?.ports.values() ?? []) if (p.io !== net && p.vlan.isMember(net.opts.vlan)) ports.add(p.name);
        // Sources of no port (learning off) and the overflow entry, once they dropped something.
        for (const v of net.limiter.view(0)) if (!br?.ports.has(v.port)) ports.add(v.port);
        for (const port of ports) {
          const d = net.limiter.dropsOf(port);
          for (let k = 0; k < LIMIT_KINDS.length; k++) emit({ ...labels, port, kind: LIMIT_KINDS[k] }, d === undefined ? 0 : d[k]);
        }
      }
    });
  gauge('vswitch_router_uplink_up', '1 while the router\'s uplink interface is attached, 0 while it is missing or lost.',
    ['router', 'interface'], (emit) => {
      for (const mr of routerList()) {
        const u = mr.router.uplink;
        if (u !== undefined) emit({ router: mr.name, interface: u.opts.ifname }, u.up ? 1 : 0);
      }
    });
  gauge('vswitch_router_failed',
    '1 while a part of the router is disabled after an error (component dhcp: the network\'s lease file cannot be trusted, '
    + 'its DHCP server is off; component forwards: the runtime forwards file cannot be read), else 0. Retried by every reload.',
    ['router', 'network', 'component'], (emit) => {
      for (const mr of routerList()) {
        for (const [nname, n] of Object.entries(mr.config.networks)) {
          if (n.dhcp !== undefined) emit({ router: mr.name, network: nname, component: 'dhcp' }, mr.dhcpFailed.has(nname) ? 1 : 0);
        }
        emit({ router: mr.name, network: '', component: 'forwards' }, mr.forwardsFailed !== undefined ? 1 : 0);
      }
    });
  const napts = (): ManagedRouter[] => routerList().filter((mr) => mr.router.napt !== undefined);
  gauge('vswitch_nat_sessions', 'Active NAPT sessions by protocol.', ['router', 'proto'], (emit) => {
    for (const mr of napts()) {
      const b = mr.router.napt!.table.stats().byProto;
      for (const proto of ['tcp', 'udp', 'icmp'] as const) emit({ router: mr.name, proto }, b[proto]);
    }
  });
  // The gateways' DNS server (routers.R.dns): absent for routers with dns.enabled false.
  const dnsCounter = (name: string, help: string, labelNames: readonly string[], fill: (dns: GatewayDns, l: Labels, emit: Emit) => void): void => {
    routerCounter(name, help, labelNames, (mr, emit) => {
      if (mr.dns !== undefined) fill(mr.dns, { router: mr.name }, emit);
    });
  };
  dnsCounter('vswitch_dns_queries_total',
    'DNS queries to the gateways, by result: local (answered from the DHCP names), nxdomain (a name of the network\'s that does not exist), '
    + 'nodata (a known name, another type), forwarded (sent upstream), handed_off (to the host NAT\'s forwarder, uplink kind host), '
    + 'refused (not a standard query: NOTIMP or FORMERR).',
    ['router', 'result'], (dns, l, emit) => {
      for (let i = 0; i < DNS_RESULTS.length; i++) emit({ ...l, result: DNS_RESULTS[i] }, dns.results[i]);
    });
  dnsCounter('vswitch_dns_dropped_total',
    `DNS queries and upstream answers dropped, by reason (${DNS_DROP_REASONS.join(', ')}); no_upstream queries get SERVFAIL.`,
    ['router', 'reason'], (dns, l, emit) => {
      for (let i = 0; i < DNS_DROP_REASONS.length; i++) emit({ ...l, reason: DNS_DROP_REASONS[i] }, dns.drops[i]);
    });
  dnsCounter('vswitch_dns_answers_relayed_total', 'Upstream answers sent back to the VM that asked.', ['router'],
    (dns, l, emit) => emit(l, dns.answersRelayed));
  gauge('vswitch_dns_outstanding', 'Forwarded DNS queries waiting for their upstream answer (at most dns.maxOutstanding).', ['router'], (emit) => {
    for (const mr of routerList()) if (mr.dns !== undefined) emit({ router: mr.name }, mr.dns.outstanding);
  });
  const naptCounter = (name: string, help: string, labelNames: readonly string[], fill: (napt: Napt, labels: Labels, emit: Emit) => void): void => {
    routerCounter(name, help, labelNames, (mr, emit) => {
      if (mr.router.napt !== undefined) fill(mr.router.napt, { router: mr.name }, emit);
    });
  };
  naptCounter('vswitch_nat_sessions_created_total', 'NAPT sessions created.', ['router'], (napt, l, emit) => emit(l, napt.table.stats().created));
  naptCounter('vswitch_nat_sessions_expired_total', 'NAPT sessions removed after their idle timeout.', ['router'],
    (napt, l, emit) => emit(l, napt.table.stats().expired));
  naptCounter('vswitch_nat_sessions_refused_total',
    'New flows refused, by reason: table_full (maxSessions), host_limit (maxSessionsPerHost), port_limit (maxSessionsPerPort), '
    + 'no_port (public ports exhausted).',
    ['router', 'reason'], (napt, l, emit) => {
      const r = napt.table.stats().refused;
      for (const reason of REFUSE_REASONS) emit({ ...l, reason }, r[reason]);
    });
  naptCounter('vswitch_nat_packets_total',
    'Packets NAPT passed, by result: ok (translated), hairpin (to the public address from inside, translated both ways), '
    + 'local (for the router itself). Dropped packets are in vswitch_nat_dropped_total.',
    ['router', 'result'], (napt, l, emit) => {
      for (const result of NAT_PASSED) emit({ ...l, result }, napt.counts[NaptResult[result]]);
    });
  naptCounter('vswitch_nat_dropped_total',
    `Packets NAPT dropped, by reason (a closed set: ${NAT_DROP_REASONS.join(', ')}; see the README "NAT drop reasons"). `
    + 'Every reason is exported, zeros included.',
    ['router', 'reason'], (napt, l, emit) => {
      for (const reason of NAT_DROP_REASONS) emit({ ...l, reason }, napt.counts[NaptResult[reason]]);
    });

  // NAT through the host's own address (uplink kind host): absent for other routers.
  const hosts = (): [ManagedRouter, HostNat][] => routerList().flatMap((mr) => (mr.router.host ? [[mr, mr.router.host] as [ManagedRouter, HostNat]] : []));
  const hostCounter = (name: string, help: string, labelNames: readonly string[], fill: (h: HostNat, l: Labels, emit: Emit) => void): void => {
    routerCounter(name, help, labelNames, (mr, emit) => {
      if (mr.router.host !== undefined) fill(mr.router.host, { router: mr.name }, emit);
    });
  };
  const engines = (h: HostNat) => [['tcp', h.tcp.counters], ['udp', h.udp.counters], ['icmp', h.icmp.counters]] as const;
  gauge('vswitch_host_nat_sessions', 'Host-socket NAT sessions (TCP connections, UDP mappings, ICMP echo ids) now open.', ['router'], (emit) => {
    for (const [mr, h] of hosts()) emit({ router: mr.name }, h.budget.total);
  });
  hostCounter('vswitch_host_nat_sessions_opened_total', 'Host-socket NAT sessions opened (port forwards included).', ['router', 'proto'], (h, l, emit) => {
    for (const [proto, c] of engines(h)) emit({ ...l, proto }, c.opened);
  });
  hostCounter('vswitch_host_nat_sessions_refused_total',
    'New host-socket NAT flows refused, by reason: table_full (nat.maxSessions), host_limit (nat.maxSessionsPerHost), '
    + 'port_limit (nat.maxSessionsPerPort).',
    ['router', 'reason'], (h, l, emit) => {
      emit({ ...l, reason: 'table_full' }, h.budget.refusedGlobal);
      emit({ ...l, reason: 'host_limit' }, h.budget.refusedPerHost);
      emit({ ...l, reason: 'port_limit' }, h.budget.refusedPerPort);
    });
  hostCounter('vswitch_host_nat_packets_total', 'Packets through the host-socket NAT, by protocol and direction (to_host: from a VM; to_vm).',
    ['router', 'proto', 'direction'], (h, l, emit) => {
      emit({ ...l, proto: 'tcp', direction: 'to_host' }, h.tcp.counters.segmentsFromVm);
      emit({ ...l, proto: 'tcp', direction: 'to_vm' }, h.tcp.counters.framesToVm);
      for (const proto of ['udp', 'icmp'] as const) {
        emit({ ...l, proto, direction: 'to_host' }, h[proto].counters.toHost);
        emit({ ...l, proto, direction: 'to_vm' }, h[proto].counters.toVm);
      }
    });
  hostCounter('vswitch_host_nat_tcp_bytes_total', 'TCP payload bytes spliced: to_host (written to host sockets), to_vm (acknowledged by the VMs).',
    ['router', 'direction'], (h, l, emit) => {
      emit({ ...l, direction: 'to_host' }, h.tcp.counters.bytesToHost);
      emit({ ...l, direction: 'to_vm' }, h.tcp.counters.bytesToVm);
    });
  hostCounter('vswitch_host_nat_tcp_retransmits_total', 'TCP segments sent to VMs again (timeouts and fast retransmits).', ['router'],
    (h, l, emit) => emit(l, h.tcp.counters.retransmits));
  hostCounter('vswitch_host_nat_dropped_total',
    'Packets the host-socket NAT dropped, by protocol (ip: before any engine) and reason (the engines\' counters, snake_case).',
    ['router', 'proto', 'reason'], (h, l, emit) => {
      for (const [reason, v] of Object.entries(h.counters)) emit({ ...l, proto: 'ip', reason: snake(reason) }, v);
      for (const [proto, c] of engines(h)) {
        for (const reason of HOST_DROP_COUNTERS[proto]) emit({ ...l, proto, reason: snake(reason) }, (c as unknown as Record<string, number>)[reason] ?? 0);
      }
    });
  gauge('vswitch_host_nat_icmp_available', '1 while ICMP echo goes through the raw socket; 0 when it could not be opened (no CAP_NET_RAW) or is off.',
    ['router'], (emit) => {
      for (const [mr, h] of hosts()) emit({ router: mr.name }, h.describe().icmp === 'on' ? 1 : 0);
    });
  gauge('vswitch_host_nat_forward_listening', '1 while a host port forward listens on its host port, 0 while it could not bind.',
    ['router', 'proto', 'listen'], (emit) => {
      for (const [mr, h] of hosts()) for (const l of h.listeners()) emit({ router: mr.name, proto: l.proto, listen: l.listen }, l.state === 'listening' ? 1 : 0);
    });

  return reg;
}

/** Engine counters that count dropped packets (the rest count traffic or sessions). */
const HOST_DROP_COUNTERS = {
  tcp: ['badChecksum', 'noSession', 'malformed', 'fragment', 'outOfOrder', 'beyondWindow'],
  udp: ['badChecksum', 'malformed', 'fragment', 'tooBig', 'filtered', 'conflict', 'sendErrors'],
  icmp: ['badChecksum', 'malformed', 'fragment', 'notEcho', 'unavailable', 'queueFull', 'filtered', 'truncated', 'tooBig', 'sendErrors'],
} as const;

const snake = (s: string): string => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

export { DEFAULT_METRICS_LIMITS, MAX_HEADER_BYTES, METRICS_CLOSE_REASONS, type MetricsCloseReason, type MetricsLimits } from './metrics-worker.js';

export interface MetricsServerStats {
  /** Connections open now. */
  connections: number;
  /** Connections closed at once because maxConnections were open. */
  refused: number;
  closed: Record<MetricsCloseReason, number>;
  /** Renders (main thread) and scrapes by source (worker). */
  cache: RenderCacheStats;
}

export interface MetricsServer {
  /** host:port it listens on (the port chosen when the config said 0). */
  readonly address: string;
  readonly limits: MetricsLimits;
  /** The server's counters now: the worker's (a message round trip) and the renders. */
  stats(): Promise<MetricsServerStats>;
  /** Drops the cached text, so the next scrape renders; resolves once the worker has. */
  clearCache(): Promise<void>;
  /** New limits; returns what changed, for the reload report. The worker applies them in order with every other message. */
  configure(limits: MetricsLimits): string[];
  /** Resolves once the worker has handled every message sent before (tests: limits applied). */
  sync(): Promise<void>;
  /** Stops listening and closes every connection; resolves once the worker thread has exited. */
  close(): Promise<void>;
}

export interface StartMetricsOptions {
  limits?: MetricsLimits;
  /** The control socket's counters, exported with the server's own (absent until it listens). */
  control?: () => ControlStats | undefined;
  /** The last config load's outcome (run.ts), exported as vswitch_config_last_reload_*. */
  reload?: () => ReloadStatus | undefined;
  /** Tests: how long /healthz waits for the main loop (default HEALTH_TIMEOUT_MS). */
  healthTimeoutMs?: number;
}

/**
 * Serves `sw`'s metrics on `listen` (host:port) from a worker thread
 * (metrics-worker.ts). Resolves once listening, rejects if the address is bad or
 * cannot be bound (the listen error's own message: EADDRINUSE ...).
 *
 * Bounds (the connections' fds are the daemon's): at most `maxConnections`
 * connections, more are closed on accept (counted, logged at most every 10 s);
 * idle, header and request timeouts; headers of at most MAX_HEADER_BYTES; only GET
 * and HEAD on /metrics and /healthz; and one render per `cacheInterval` however
 * many scrapes, the only work scrapes cause on this thread.
 */
export async function startMetrics(sw: Vswitch, listen: string, log: Logger, opts: StartMetricsOptions = {}): Promise<MetricsServer> {
  const { host, port } = parseListen(listen);
  const limits: MetricsLimits = { ...(opts.limits ?? DEFAULT_METRICS_LIMITS) };
  const reg = createMetricsRegistry(sw, { reload: opts.reload });
  let worker: MetricsWorker | undefined;
  registerServerMetrics(reg, limits, () => worker, opts.control);
  worker = await MetricsWorker.start({
    host, port, limits, contentType: reg.contentType, render: () => renderSliced(reg), log, healthTimeoutMs: opts.healthTimeoutMs,
  });
  const w = worker;
  log.info({ event: 'metrics_listening', listen: w.address, url: `http://${w.address}/metrics`, ...limits, maxHeaderBytes: MAX_HEADER_BYTES }, 'metrics_listening');

  return {
    get address() { return w.address; },
    limits,
    async stats(): Promise<MetricsServerStats> {
      const s = await w.currentStats();
      return { connections: s.connections, refused: s.refused, closed: s.closed, cache: cacheStats(w.render, s) };
    },
    clearCache: () => w.clear(),
    configure(next: MetricsLimits): string[] {
      const changes: string[] = [];
      for (const k of Object.keys(DEFAULT_METRICS_LIMITS) as (keyof MetricsLimits)[]) {
        if (limits[k] !== next[k]) changes.push(`metrics.${k} ${limits[k]} -> ${next[k]}`);
        limits[k] = next[k];
      }
      w.configure(limits);
      return changes;
    },
    sync: () => w.sync(),
    async close(): Promise<void> {
      await w.close();
      disposers.get(reg)?.();
      reg.clear();
    },
  };
}

/**
 * The text of `reg.metrics()`, one metric at a time with a turn of the event loop
 * between two: a render runs on the forwarding loop, and so a frame that arrives
 * on a TAP meanwhile waits for one metric's collect and format (the largest: a
 * per-port series times the drop reasons), not for the whole exposition's (2-3 ms
 * for a small switch, more when cold). Metrics are read a few ms apart; a scrape
 * was never one instant anyway.
 */
export async function renderSliced(reg: Registry): Promise<string> {
  const parts: string[] = [];
  for (const m of reg.getMetricsAsArray()) {
    parts.push(await reg.getSingleMetricAsString(m.name));
    await new Promise<void>((r) => setImmediate(r));
  }
  // As Registry.metrics() joins them (text format 0.0.4).
  return `${parts.join('\n\n')}\n`;
}

/**
 * The server's own counters (and the control socket's), read at render time like
 * every other metric. The worker's (connections, refusals, closes, scrapes) are
 * those it sent with this render's request: current but for the scrapes that
 * arrive while the render runs; renders are counted here, where they run.
 */
function registerServerMetrics(
  reg: Registry, limits: MetricsLimits, worker: () => MetricsWorker | undefined, control: (() => ControlStats | undefined) | undefined,
): void {
  const w = (fill: (s: WorkerStats, r: RenderStats, emit: Emit) => void) => (emit: Emit): void => {
    const mw = worker();
    if (mw !== undefined) fill(mw.stats, mw.render, emit);
  };
  const metric = (type: 'counter' | 'gauge', name: string, help: string, labelNames: string[], fill: (emit: Emit) => void): void => {
    if (type === 'counter') {
      new Counter({ name, help, labelNames, registers: [reg], collect() { this.reset(); fill((l, v) => this.inc(l, v)); } });
    } else {
      new Gauge({ name, help, labelNames, registers: [reg], collect() { this.reset(); fill((l, v) => this.set(l, v)); } });
    }
  };
  metric('gauge', 'vswitch_metrics_connections', 'HTTP connections open to this metrics endpoint.', [], w((s, _r, emit) => emit({}, s.connections)));
  metric('gauge', 'vswitch_metrics_max_connections', 'metrics.maxConnections: connections over it are closed at once.', [], (emit) => emit({}, limits.maxConnections));
  metric('counter', 'vswitch_metrics_connections_refused_total',
    'Connections closed at once because metrics.maxConnections were open.', [], w((s, _r, emit) => emit({}, s.refused)));
  metric('counter', 'vswitch_metrics_connections_closed_total',
    `Connections the server closed itself, by reason (${METRICS_CLOSE_REASONS.join(', ')}).`, ['reason'], w((s, _r, emit) => {
      for (const reason of METRICS_CLOSE_REASONS) emit({ reason }, s.closed[reason]);
    }));
  metric('counter', 'vswitch_metrics_renders_total', 'Times the exposition was rendered (at most one per metrics.cacheInterval).', [],
    w((_s, r, emit) => emit({}, r.renders)));
  metric('gauge', 'vswitch_metrics_render_seconds', 'How long the last finished render took.', [], w((_s, r, emit) => emit({}, r.lastRenderMs / 1000)));
  metric('counter', 'vswitch_metrics_scrapes_total',
    'Scrapes of /metrics answered, by source: render (this scrape rendered) or cache (the text of a render shared or cached).',
    ['source'], w((s, _r, emit) => {
      emit({ source: 'render' }, s.rendered);
      emit({ source: 'cache' }, s.cached);
    }));
  const ctl = (fill: (c: ControlStats, emit: Emit) => void) => (emit: Emit): void => {
    const c = control?.();
    if (c !== undefined) fill(c, emit);
  };
  metric('gauge', 'vswitch_control_connections', 'Control socket connections open.', [], ctl((c, emit) => emit({}, c.connections)));
  metric('counter', 'vswitch_control_connections_refused_total',
    'Control socket connections refused (EAGAIN) because control.maxConnections were open.', [], ctl((c, emit) => emit({}, c.refused)));
  metric('counter', 'vswitch_control_requests_total', 'Control requests answered (errors included).', [], ctl((c, emit) => emit({}, c.requests)));
  metric('counter', 'vswitch_control_requests_too_long_total',
    'Control connections closed for a request line over control.maxRequestBytes (E2BIG).', [], ctl((c, emit) => emit({}, c.tooLong)));
  metric('counter', 'vswitch_control_backpressure_pauses_total',
    'Times the daemon stopped reading a control client because the client did not read its replies.', [], ctl((c, emit) => emit({}, c.pauses)));
}
