#!/usr/bin/env node
/*
 * `vswitch`: runs the command line of cli.ts. Exit status: 0 ok, 1 error (one line
 * on stderr), 2 usage error (commander's conventions).
 */
import { CommanderError } from 'commander';
import { buildProgram, UsageError } from './cli.js';
import { errorMessage, VswitchError } from './errors.js';

const program = buildProgram({
  daemon: async (o) => {
    const { runDaemon } = await import('./daemon/run.js');
    await runDaemon({ ...o, logLevel: o.logLevel as import('./daemon/log.js').LogLevel | undefined });
  },
});

try {
  await program.parseAsync(process.argv);
} catch (e) {
  // Log lines the daemon still holds go out before its last word.
  (await import('./daemon/log.js')).flushLog();
  if (e instanceof CommanderError) {
    // help and version exit 0; commander already printed usage errors
    process.exitCode = e.exitCode === 0 ? 0 : 2;
  } else if (e instanceof UsageError) {
    process.stderr.write(`vswitch: ${e.message}\n`);
    process.exitCode = 2;
  } else {
    process.stderr.write(`vswitch: ${errorMessage(e)}\n`);
    process.exitCode = 1;
    if (!(e instanceof VswitchError) && process.env.VSWITCH_DEBUG) console.error(e);
  }
}
