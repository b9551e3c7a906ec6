/*
 * The daemon's session, which on Linux decides its scheduling group (config
 * `ownSession`). With autogroups (CONFIG_SCHED_AUTOGROUP, on by default on desktop
 * and VM kernels; they apply to tasks in the root cpu cgroup) the scheduler first
 * shares a CPU between sessions, then between the tasks of a session. A daemon left
 * in the session that started it (a shell, a script, a bench) shares one group's CPU
 * with everything else started there: on a busy host the VMs' load started from the
 * same shell, a traffic generator. Its peers do not: ovs-vswitchd --detach and
 * vde_switch -d daemonize (setsid), and systemd and Docker start a service in a
 * session of its own. Measured in the main bench with a CPU-bound process in the
 * bench's session: the same build forwarded 2.68x the 64-byte frames in its own
 * session, at the same CPU per frame (bench/README.md, "Busy host: the session").
 *
 * `ownSession: true` calls setsid() at start (and at the reload that turns it on).
 * A process that leads a process group (an interactive shell's job) cannot start a
 * session without a fork, which Node cannot do: then `own_session_failed` says to
 * start it with setsid(1). A session cannot be left again: removing the key at a
 * reload changes nothing. `show` prints the session and autogroup under the bridges,
 * `ping --json` returns them, daemon_started logs them.
 *
 * A nice value acts only between the tasks of one autogroup (sched(7)): between
 * groups, each group's own nice (/proc/PID/autogroup) decides. So a daemon in a
 * session of its own, started at Nice=-10 by the systemd unit or given `nice: -10`,
 * would still weigh the same as a VM's session. When the daemon leads its session
 * (only then is the group its alone) the group gets the forwarding loop's nice too
 * (`applyAutogroupNice`); a daemon in its starter's session leaves that session's
 * group alone, since it would lift everything started there with it.
 */
import { readFileSync, writeFileSync } from 'node:fs';

/**
 * Whether V8's memory reducer runs in this process: off when node was started with
 * --no-memory-reducer, as the installed `vswitch` (main.ts's interpreter line) is.
 */
export function memoryReducerOn(execArgv: readonly string[] = process.execArgv): boolean {
  let on = true;
  for (const a of execArgv) {
    if (a === '--no-memory-reducer' || a === '--no_memory_reducer') on = false;
    else if (a === '--memory-reducer' || a === '--memory_reducer') on = true;
  }
  return on;
}
import type { Logger } from './log.js';

export interface SessionInfo {
  pid: number;
  /** Session id (/proc/self/stat field 6). */
  sid: number;
  /** The daemon leads its session: its own scheduling group where the kernel groups by session. */
  own: boolean;
  /** `/autogroup-N` and its nice, or null where the kernel has no autogroups. */
  autogroup: string | null;
}

/** Field 6 (session) of a /proc/PID/stat line; the name (field 2) may hold spaces and parentheses. */
export function statSession(stat: string): number {
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state): session is field 6.
  const sid = Number(rest[3]);
  if (!Number.isInteger(sid)) throw new Error(`no session in /proc stat line '${stat.slice(0, 80)}'`);
  return sid;
}

/** The nice of an autogroup line (`/autogroup-12 nice -10` -> -10); undefined if it has none. */
export function autogroupNice(text: string | null): number | undefined {
  const m = text === null ? null : /\bnice (-?\d+)\b/.exec(text);
  return m ? Number(m[1]) : undefined;
}

/** `/autogroup-12 nice 0` -> `/autogroup-12 nice 0` trimmed; empty or missing -> null. */
export function autogroupText(text: string | undefined): string | null {
  const t = text?.trim();
  return t ? t : null;
}

function readOr(path: string): string | undefined {
  try { return readFileSync(path, 'utf8'); } catch { return undefined; }
}

export function sessionInfo(): SessionInfo {
  const sid = statSession(readFileSync('/proc/self/stat', 'utf8'));
  return { pid: process.pid, sid, own: sid === process.pid, autogroup: autogroupText(readOr('/proc/self/autogroup')) };
}

/**
 * Starts a session of the daemon's own if `want` and it has none yet; returns the change
 * for the reload's list ([] if none). `setsid` is the addon's (netdev.setsid).
 */
export function applyOwnSession(want: boolean | undefined, log: Pick<Logger, 'warn'>, setsid: () => number,
  info: () => SessionInfo = sessionInfo): string[] {
  if (want !== true) return [];
  const was = info();
  if (was.own) return [];
  try {
    setsid();
  } catch (e) {
    log.warn({ event: 'own_session_failed', sid: was.sid, err: (e as Error).message,
      hint: 'the daemon leads a process group (a shell job): start it with setsid(1)' }, 'own_session_failed');
    return [];
  }
  const now = info();
  return [`session ${was.sid} -> ${now.sid}${now.autogroup ? ` (${now.autogroup.split(' ')[0]})` : ''}`];
}

/**
 * Gives the daemon's autogroup the nice value `want` (the forwarding loop's, after
 * `nice` was applied) when the daemon leads its own session and the kernel has
 * autogroups; returns the change for the reload's list ([] if none). A lower value
 * needs CAP_SYS_NICE (`autogroup_nice_failed` otherwise, as `nice_failed`); the
 * kernel also refuses a second change within 100 ms without CAP_SYS_ADMIN (EAGAIN).
 */
export function applyAutogroupNice(want: number, log: Pick<Logger, 'warn'>, info: () => SessionInfo = sessionInfo,
  write: (text: string) => void = (t) => writeFileSync('/proc/self/autogroup', t)): string[] {
  const s = info();
  if (!s.own || s.autogroup === null) return [];
  const was = autogroupNice(s.autogroup);
  if (was === undefined || was === want) return [];
  try {
    write(String(want));
  } catch (e) {
    log.warn({ event: 'autogroup_nice_failed', nice: want, current: was, autogroup: s.autogroup, err: (e as Error).message }, 'autogroup_nice_failed');
    return [];
  }
  return [`autogroup nice ${was} -> ${want}`];
}
