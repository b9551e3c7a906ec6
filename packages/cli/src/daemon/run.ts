/*
 * `vswitch daemon`: load and validate the config, build the bridges, open the
 * control socket, run until SIGTERM/SIGINT, then tear down cleanly (ports closed,
 * non-persistent TAPs removed with their fds, socket unlinked).
 */
import { unlinkSync } from 'node:fs';
import { type Config, defaultConfig, loadConfig } from '../config.js';
import { VswitchError } from '../errors.js';
import { listenControl } from './control.js';
import { startMetrics, type MetricsServer } from './metrics.js';
import { handlers } from './handlers.js';
import { type LogLevel, makeLogger } from './log.js';
import { Vswitch } from './service.js';

export const DEFAULT_SOCKET = '/run/vswitch/vswitch.sock';

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
  const socketPath = opts.socket ?? process.env.VSWITCH_SOCKET ?? cfg.control.socket ?? DEFAULT_SOCKET;
  const sw = new Vswitch(log);
  sw.apply(cfg);
  // Re-reads the config file and applies what it changed since the last one, as one
  // transaction: a bad file, or one whose new parts cannot be prepared, changes nothing.
  const reload = (): { changes: string[] } => {
    if (!opts.config) throw new VswitchError('EINVAL', 'the daemon runs on the built-in config: nothing to reload');
    try {
      const next = loadConfig(opts.config);
      if (opts.stateDir) next.stateDir = opts.stateDir;
      const changes = sw.reload(next);
      if (!opts.logLevel && log.level !== next.log.level) {
        log.level = next.log.level;
        changes.push(`log level ${next.log.level}`);
      }
      return { changes };
    } catch (e) {
      log.error({ event: 'config_refused', err: (e as Error).message }, 'config_refused');
      throw e;
    }
  };
  let metrics: MetricsServer | undefined;
  const listen = opts.metricsListen ?? cfg.metrics.listen;
  if (listen !== '' && listen !== 'off') {
    try {
      metrics = await startMetrics(sw, listen, log);
    } catch (e) {
      sw.close();
      throw new VswitchError('EADDRINUSE', `metrics: cannot listen on ${listen}: ${(e as Error).message}`);
    }
  }
  let server;
  try {
    server = await listenControl(socketPath, parseInt(cfg.control.mode, 8), (cmd, args) => {
      if (cmd === 'reload') return reload();
      const h = handlers[cmd];
      if (h === undefined) throw new VswitchError('EINVAL', `unknown command: ${cmd}`);
      return h(sw, args);
    }, log);
  } catch (e) {
    metrics?.close();
    sw.close();
    throw e;
  }
  log.info({ event: 'daemon_started', config: opts.config ?? '(built-in default)', socket: socketPath, bridges: [...sw.bridges.keys()] }, 'daemon_started');

  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      log.info({ event: 'daemon_stopping', signal }, 'daemon_stopping');
      server.close();
      metrics?.close();
      try {
        unlinkSync(socketPath);
      } catch { /* already gone */ }
      sw.close();
      resolve();
    };
    process.on('SIGHUP', () => {
      try {
        reload();
      } catch { /* logged; the running state stays */ }
    });
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  log.info({ event: 'daemon_stopped' }, 'daemon_stopped');
}
