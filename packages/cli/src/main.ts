#!/usr/bin/env -S node --no-memory-reducer
/*
 * `vswitch`: runs the command line of cli.ts. Exit status: 0 ok, 1 error (one line
 * on stderr), 2 usage error (commander's conventions).
 *
 * The interpreter line turns off V8's memory reducer (README "The daemon's heap"): a few
 * seconds after a major collection, when the process looks idle to V8 (as a daemon
 * whose frames stay in the addon does), it runs more full collections to shrink the
 * heap, stalling the event loop, and with it forwarding, for 10-30 ms. A V8 flag set
 * at run time does not stop a reducer V8 created with the heap, so it is set here.
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
