/*
 * The forwarding loop's CPU priority (config `nice`). Every frame is read and
 * written on the daemon's main thread, so when the host's CPUs are busy (a VM
 * flooding through the switch is itself a CPU hog) the frames of every other VM wait
 * while that thread waits for a CPU: in whole scheduler ticks (4 ms at HZ=250), not
 * in anything the read loop decides (bench/README.md, "Where a slow ping waits").
 * Priority is the lever for that wait. The systemd unit gives the process
 * `Nice=-10` (as ovs-ctl gives ovs-vswitchd); `nice` does the same from the config
 * for a daemon started any other way (a container, by hand). On Linux a nice value
 * belongs to a thread: this sets the main thread's, which threads started later
 * inherit (libuv's pool, started on first use), as under the unit's Nice=; the
 * metrics worker sets its own (metrics.workerNice); V8's threads, started before,
 * keep the value the process was started with.
 *
 * Unset: the thread keeps the nice it was started with. Raising the priority (a
 * lower value) needs CAP_SYS_NICE; without it the daemon logs `nice_failed` and
 * runs on at its old value. Removing the key at a reload leaves the value as it is.
 */
import os from 'node:os';
import type { Logger } from './log.js';

/** Sets this thread's nice value to `want` if it differs; returns the change for the reload's list ([] if none). */
export function applyNice(want: number | undefined, log: Pick<Logger, 'warn'>): string[] {
  if (want === undefined) return [];
  const was = os.getPriority(0);
  if (was === want) return [];
  try {
    // Pid 0: this thread only.
    os.setPriority(0, want);
  } catch (e) {
    log.warn({ event: 'nice_failed', nice: want, current: was, err: (e as Error).message }, 'nice_failed');
    return [];
  }
  return [`nice ${was} -> ${want}`];
}
