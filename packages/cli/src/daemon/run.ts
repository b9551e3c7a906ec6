/*
 * `vswitch daemon`: load and validate the config, build the bridges, open the
 * control socket, run until SIGTERM/SIGINT, then tear down cleanly (ports closed,
 * non-persistent TAPs removed with their fds, socket unlinked).
 */
import { unlinkSync } from 'node:fs';
import { type Config, defaultConfig, loadConfig } from '../config.js';
import { VswitchError } from '../errors.js';
import { listenControl } from './control.js';
import { handlers } from './handlers.js';
import { type LogLevel, makeLogger } from './log.js';
import { Vswitch } from './service.js';

export const DEFAULT_SOCKET = '/run/vswitch/vswitch.sock';

export interface DaemonOptions {
  config?: string;
  socket?: string;
  logLevel?: LogLevel;
}

export async function runDaemon(opts: DaemonOptions): Promise<void> {
  const cfg: Config = opts.config ? loadConfig(opts.config) : defaultConfig();
  const log = makeLogger(opts.logLevel ?? cfg.log.level);
  const socketPath = opts.socket ?? process.env.VSWITCH_SOCKET ?? cfg.control.socket ?? DEFAULT_SOCKET;
  const sw = new Vswitch(log);
  sw.apply(cfg);
  let server;
  try {
    server = await listenControl(socketPath, parseInt(cfg.control.mode, 8), (cmd, args) => {
      const h = handlers[cmd];
      if (h === undefined) throw new VswitchError('EINVAL', `unknown command: ${cmd}`);
      return h(sw, args);
    }, log);
  } catch (e) {
    sw.close();
    throw e;
  }
  log.info({ event: 'daemon_started', config: opts.config ?? '(built-in default)', socket: socketPath, bridges: [...sw.bridges.keys()] }, 'daemon_started');

  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      log.info({ event: 'daemon_stopping', signal }, 'daemon_stopping');
      server.close();
      try {
        unlinkSync(socketPath);
      } catch { /* already gone */ }
      sw.close();
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  log.info({ event: 'daemon_stopped' }, 'daemon_stopped');
}
