/*
 * `vswitch daemon`: load and validate the config, check that the control socket's
 * path is free (or a stale socket of ours) before building anything, build the
 * bridges and routers, serve metrics, open the control socket, run until
 * SIGTERM/SIGINT, then tear down cleanly (ports closed, non-persistent TAPs removed
 * with their fds, socket unlinked, the metrics worker thread gone). A reload also
 * applies the servers' limits.
 *
 * Under systemd (Type=notify, $NOTIFY_SOCKET set) the daemon says READY=1 once the
 * control socket answers, the bridges and routers are built and the metrics
 * endpoint listens (so `systemctl start` returns when `vswitch show` works and
 * units ordered after it find their ports), RELOADING=1 ... READY=1 around a reload,
 * STOPPING=1 when it begins to shut down, and a STATUS= line with what runs.
 */
import { readFileSync, unlinkSync } from 'node:fs';
import os from 'node:os';
import { type Config, defaultConfig, loadConfig } from '../config.js';
import { VswitchError } from '../errors.js';
import { DEFAULT_SOCKET } from '../client.js';
import { notify as sendNotify, setsid } from '@vswitch/netdev';
import { SOCKETS } from '@vswitch/nat';
import { type ControlLimits, type ControlServer, listenControl, lookupCommand, prepareControlPath } from './control.js';
import { startMetrics, type MetricsLimits, type MetricsServer, type ReloadStatus } from './metrics.js';
import { handlers } from './handlers.js';
import { foldAddonFlowCache } from '@vswitch/switch/ports';
import { type Logger, type LogLevel, makeLogger } from './log.js';
import { hostKey } from './machine-id.js';
import { applyNice } from './priority.js';
import { applyAutogroupNice, applyOwnSession, memoryReducerOn, sessionInfo } from './session.js';
import { Vswitch } from './service.js';

export { DEFAULT_SOCKET };

/** Commands that change nothing: every other one (new ones too) makes the next scrape render afresh. */
const READ_ONLY_COMMANDS = new Set([
  'ping', 'show', 'showmacs', 'stats', 'drop.reasons', 'vlan.show', 'fdb.show', 'router.show', 'dhcp.leases', 'nat.sessions',
  'nat.forward.show', 'dhcp.reservation.show', 'monitor', 'monitor.stats', 'vxlan.show', 'evpn.show', 'daemon.show',
]);

export interface DaemonOptions {
  config?: string;
  socket?: string;
  logLevel?: LogLevel;
  /** Overrides metrics.listen from the config ("off" disables). */
  metricsListen?: string;
  /** Overrides stateDir from the config. */
  stateDir?: string;
}

export async function runDaemon(opts: DaemonOptions): Promise<void> {
  const cfg: Config = opts.config ? loadConfig(opts.config) : defaultConfig();
  if (opts.stateDir) cfg.stateDir = opts.stateDir;
  const log = makeLogger(opts.logLevel ?? cfg.log.level);
  const niceWas = os.getPriority(0);
  applyNice(cfg.nice, log);
  const sessionWas = sessionInfo().sid;
  applyOwnSession(cfg.ownSession, log, setsid);
  const autogroupWas = sessionInfo().autogroup;
  applyAutogroupNice(os.getPriority(0), log);
  const socketPath = opts.socket ?? process.env.VSWITCH_SOCKET ?? cfg.control.socket ?? DEFAULT_SOCKET;
  // Refused before anything is built: a second daemon must not touch the first one's TAPs.
  await prepareControlPath(socketPath);
  const sw = new Vswitch(log);
  sw.apply(cfg);
  if (sw.routers.size > 0) {
    const k = hostKey(cfg.stateDir);
    (k.created ? log.warn.bind(log) : log.info.bind(log))(
      { event: 'host_id', source: k.source, ...(k.reason ? { reason: k.reason } : {}), created: k.created }, 'host_id');
  }
  let metrics: MetricsServer | undefined;
  // The start applied the file: a success, as Prometheus counts its own start.
  const reloadStatus: ReloadStatus = { successful: true, lastSuccessMs: Date.now() };
  let control: ControlServer | undefined;
  // Re-reads the config file and applies what it changed since the last one, as one
  // transaction: a bad file, or one whose new parts cannot be prepared, changes nothing.
  const reload = (): { changes: string[] } => {
    if (!opts.config) throw new VswitchError('EINVAL', 'the daemon runs on the built-in config: nothing to reload');
    notify(log, 'RELOADING=1');
    try {
      const next = loadConfig(opts.config);
      if (opts.stateDir) next.stateDir = opts.stateDir;
      const changes = sw.reload(next);
      changes.push(...applyNice(next.nice, log));
      changes.push(...applyOwnSession(next.ownSession, log, setsid));
      changes.push(...applyAutogroupNice(os.getPriority(0), log));
      changes.push(...metrics?.configure(metricsLimits(next)) ?? [], ...control?.configure(controlLimits(next)) ?? []);
      if (!opts.logLevel && log.level !== next.log.level) {
        log.level = next.log.level;
        changes.push(`log level ${next.log.level}`);
      }
      sw.monitor.emit({ event: 'config_applied', changes });
      reloadStatus.successful = true;
      reloadStatus.lastSuccessMs = Date.now();
      return { changes };
    } catch (e) {
      reloadStatus.successful = false;
      log.error({ event: 'config_refused', err: (e as Error).message }, 'config_refused');
      sw.monitor.emit({ event: 'config_refused', error: (e as Error).message });
      throw e;
    } finally {
      // A refused reload leaves the daemon running as it was: ready either way.
      notify(log, `READY=1\nSTATUS=${status(sw)}`);
    }
  };
  const listen = opts.metricsListen ?? cfg.metrics.listen;
  if (listen !== '' && listen !== 'off') {
    try {
      metrics = await startMetrics(sw, listen, log, { limits: metricsLimits(cfg), control: () => control?.stats, reload: () => reloadStatus });
    } catch (e) {
      sw.close();
      throw new VswitchError('EADDRINUSE', `metrics: cannot listen on ${listen}: ${(e as Error).message}`);
    }
  }
  let server: ControlServer;
  try {
    server = control = await listenControl(socketPath, parseInt(cfg.control.mode, 8), (cmd, args) => {
      try {
        if (cmd === 'reload') return reload();
        foldAddonFlowCache(); // what the addon replayed lands in the counters and MAC ages every command reads
        const h = lookupCommand(handlers, cmd);
        if (h === undefined) throw new VswitchError('EINVAL', `unknown command: ${cmd}`);
        return h(sw, args);
      } finally {
        // A change made by the operator shows at the next scrape, not a cache interval later (a message to
        // the metrics worker, which it handles before any scrape the operator's next command can send).
        if (!READ_ONLY_COMMANDS.has(cmd)) void metrics?.clearCache();
      }
    }, log, controlLimits(cfg));
  } catch (e) {
    await metrics?.close();
    sw.close();
    throw e;
  }
  const limit = fdLimit();
  log.info({
    event: 'daemon_started', config: opts.config ?? '(built-in default)', socket: socketPath, bridges: [...sw.bridges.keys()],
    fdLimit: limit, control: controlLimits(cfg), nice: os.getPriority(0), niceWas, session: sessionInfo(), sessionWas, autogroupWas, memoryReducer: memoryReducerOn(),
  }, 'daemon_started');
  const needed = fdsNeeded(cfg, metrics !== undefined);
  if (typeof limit === 'number' && limit < needed) {
    log.warn({ event: 'fd_limit_low', fdLimit: limit, needed }, 'fd_limit_low');
  }
  // Bridges and routers built, metrics listening, control socket answering: ready.
  notify(log, `READY=1\nSTATUS=${status(sw)}\nMAINPID=${process.pid}`);

  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      notify(log, `STOPPING=1\nSTATUS=stopping (${signal})`);
      log.info({ event: 'daemon_stopping', signal }, 'daemon_stopping');
      server.close();
      const metricsClosed = metrics?.close();
      try {
        unlinkSync(socketPath);
      } catch { /* already gone */ }
      sw.close();
      // The metrics worker thread exits once its connections are closed; stopped means no thread left.
      void Promise.resolve(metricsClosed).then(() => resolve());
    };
    process.on('SIGHUP', () => {
      try {
        reload();
      } catch { /* logged; the running state stays */ }
      void metrics?.clearCache();
    });
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  log.info({ event: 'daemon_stopped' }, 'daemon_stopped');
}

/**
 * sd_notify: `state` to $NOTIFY_SOCKET when systemd runs us as Type=notify; nothing
 * otherwise. A failure is logged, never fatal (the service manager then sees no
 * READY and says so).
 */
function notify(log: Logger, state: string): void {
  const path = process.env.NOTIFY_SOCKET;
  if (path === undefined || path === '') return;
  try {
    sendNotify(path, state);
  } catch (e) {
    log.warn({ event: 'notify_failed', socket: path, error: (e as Error).message }, 'notify_failed');
  }
}

/** The STATUS= line systemctl status shows. */
function status(sw: Vswitch): string {
  const ports = [...sw.bridges.values()].reduce((n, b) => n + b.ports.size, 0);
  return `${sw.bridges.size} bridge${sw.bridges.size === 1 ? '' : 's'}, ${ports} port${ports === 1 ? '' : 's'}, `
    + `${sw.routers.size} router${sw.routers.size === 1 ? '' : 's'}`;
}

function metricsLimits(cfg: Config): MetricsLimits {
  const { maxConnections, idleTimeout, headersTimeout, requestTimeout, cacheInterval, workerNice } = cfg.metrics;
  return { maxConnections, idleTimeout, headersTimeout, requestTimeout, cacheInterval, workerNice };
}

function controlLimits(cfg: Config): ControlLimits {
  return { maxConnections: cfg.control.maxConnections, maxRequestBytes: cfg.control.maxRequestBytes };
}

/**
 * File descriptors the config can use at once: a device or socket per port, a
 * socket per host-NAT session (uplink kind host), the servers' connection limits
 * (the metrics worker thread's connections are this process's fds like any other),
 * and some for state files, the uplinks and Node itself (its threads, the metrics
 * worker's event loop included). README "Limits".
 */
function fdsNeeded(cfg: Config, metrics: boolean): number {
  let n = 64 + cfg.control.maxConnections + (metrics ? cfg.metrics.maxConnections : 0);
  for (const b of Object.values(cfg.bridges)) n += Object.keys(b.ports).length * 2;
  // DNS forwarding: its sockets (dns/gateway.ts SOCKETS) unless the host NAT forwards.
  for (const r of Object.values(cfg.routers)) n += 2 + (r.uplink?.kind === 'host' ? r.nat.maxSessions : r.dns.enabled ? SOCKETS : 0);
  return n;
}

/** The open-files limit the daemon runs with (Node raises the soft limit to the hard one at start). */
function fdLimit(): number | string {
  try {
    const m = /^Max open files\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m === null ? 'unknown' : m[1] === 'unlimited' ? m[1] : Number(m[1]);
  } catch {
    return 'unknown';
  }
}
