/*
 * The `vswitch` command line: the daemon and the brctl/bridge(8)-style verbs that
 * talk to it, defined once here with commander. Everything that describes the
 * commands is derived from these definitions: `--help`, the shell completions and
 * the man page (docs.ts), and the verb table of packages/cli/README.md is checked
 * against them (cli.test.ts). bridge(8)-style keyword arguments (`dev X vid 10
 * pvid`) are declared with `keywords()` so that parser, completion and man page
 * share one grammar.
 *
 * Exit status: 0 ok, 1 error (one line on stderr), 2 usage error (commander's own,
 * and UsageError from the checks below).
 */
import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import Table from 'cli-table3';
import { DEFAULT_SOCKET, request, stream } from './client.js';
import { loadConfig, METRICS_LISTEN } from './config.js';
import { VERSION } from './version.js';
import { LOG_LEVELS } from './daemon/log.js';
import { formatReadShare, parseRate, parseReadFrames, parseReadQuantum, parseReadShare, parseReadSparse, parseSize, type ReadShare } from '@vswitch/switch';

export { DEFAULT_SOCKET };

export class UsageError extends Error {}

/** A keyword grammar: words followed by a value (with a placeholder, or a closed set of choices), and bare words. */
export interface KeywordSpec {
  values: Record<string, { name: string; choices?: string[]; complete?: Completion }>;
  flags: string[];
}

/** What a shell may offer for an argument: names the daemon knows, files, or nothing. */
export type Completion = 'bridges' | 'ports' | 'routers' | 'networks' | 'file' | 'none';

const KEYWORDS = new WeakMap<Command, KeywordSpec>();
const ARG_COMPLETION = new WeakMap<Command, Completion[]>();
const OPTION_COMPLETION = new WeakMap<Option, Completion>();

export function keywordsOf(cmd: Command): KeywordSpec | undefined {
  return KEYWORDS.get(cmd);
}
export function argCompletion(cmd: Command): Completion[] {
  return ARG_COMPLETION.get(cmd) ?? [];
}
export function optionCompletion(opt: Option): Completion | undefined {
  return OPTION_COMPLETION.get(opt);
}

function keywords(cmd: Command, spec: KeywordSpec): Command {
  KEYWORDS.set(cmd, spec);
  return cmd;
}
function completes(cmd: Command, ...kinds: Completion[]): Command {
  ARG_COMPLETION.set(cmd, kinds);
  return cmd;
}
function opt(flags: string, description: string, complete?: Completion): Option {
  const o = new Option(flags, description);
  if (complete !== undefined) OPTION_COMPLETION.set(o, complete);
  return o;
}
const json = (): Option => new Option('-j, --json', 'machine-readable output (JSON)');

/** bridge(8)-style keyword arguments: `dev X vid 10-20 pvid untagged`. */
export function words(list: string[], spec: KeywordSpec): Record<string, string | true> {
  const out: Record<string, string | true> = {};
  for (let i = 0; i < list.length; i++) {
    const w = list[i];
    if (Object.hasOwn(spec.values, w)) {
      if (i + 1 >= list.length) throw new UsageError(`'${w}' needs a value (${spec.values[w].name})`);
      const v = list[++i];
      const choices = spec.values[w].choices;
      if (choices !== undefined && !choices.includes(v)) throw new UsageError(`'${w}' takes ${choices.join(', ')}; got '${v}'`);
      out[w] = v;
    } else if (spec.flags.includes(w)) {
      out[w] = true;
    } else {
      throw new UsageError(`unexpected '${w}'`);
    }
  }
  return out;
}

function need(w: Record<string, string | true>, key: string, usage: string): string {
  const v = w[key];
  if (typeof v !== 'string') throw new UsageError(`missing '${key}': usage: ${usage}`);
  return v;
}

/** `show`'s last line: the daemon's session (its scheduling group) and nice, from `ping`; '' for a daemon too old to say. */
export function daemonLine(ping: unknown): string {
  const p = ping as { pid?: number; nice?: number; memoryReducer?: boolean; session?: { sid: number; own: boolean; autogroup: string | null } } | null;
  if (!p || typeof p !== 'object' || !p.session) return '';
  const s = p.session;
  // Its own session's group with that group's nice (what weighs against other sessions); only the name in another's.
  const group = s.autogroup ? `, ${s.own ? s.autogroup : s.autogroup.split(' ')[0]}` : '';
  const where = s.own ? `own session${group}` : `in its starter's session ${s.sid}${group} (ownSession: true for its own)`;
  const reducer = p.memoryReducer === undefined ? '' : `, V8 memory reducer ${p.memoryReducer ? 'on' : 'off'}`;
  return `daemon: pid ${p.pid}, ${where}, nice ${p.nice}${reducer}`;
}

/** `show`'s line for the daemon-wide settings (daemon.show): poll before sleep, where it comes from. */
export function settingsLine(v: unknown): string {
  const d = v as { pollBeforeSleepUs?: number; pollBeforeSleepBudgetMs?: number; overrides?: string[];
    pollBeforeSleep?: { windowUs: number; hits: number; misses: number; spinMs: number; overBudget: number; hostBusy?: number; served?: number; pressurePermille?: number };
    tapWriteBatch?: TapWriteBatchView; turnYield?: TurnYieldView } | null;
  if (!d || typeof d !== 'object' || d.pollBeforeSleepUs === undefined) return '';
  return pollLine(d) + tapWriteBatchLine(d.tapWriteBatch, d.overrides?.includes('tapWriteBatch') ? ' (set at runtime)' : '')
    + turnYieldLine(d.turnYield, d.overrides?.includes('turnYieldUs') ? ' (set at runtime)' : '');
}

/** The turn yield (turnYieldUs, `set turn-yield-us`): its interval and how often the loop gave its CPU up. */
type TurnYieldView = { us: number; yields: number; awayMs?: number };
function turnYieldLine(t: TurnYieldView | undefined, from: string): string {
  if (!t) return '';
  if (t.us === 0) return `\nturn yield: off${from}`;
  const away = t.yields && t.awayMs !== undefined ? ` (${t.awayMs.toFixed(1)} ms away)` : '';
  return `\nturn yield: at most every ${t.us} µs while the host is contended, ${t.yields} yields${away}${from}`;
}

function pollLine(d: { pollBeforeSleepUs?: number; pollBeforeSleepBudgetMs?: number; overrides?: string[];
  pollBeforeSleep?: { windowUs: number; hits: number; misses: number; spinMs: number; overBudget: number; hostBusy?: number; served?: number; pressurePermille?: number } }): string {
  const from = d.overrides?.some((k) => k.startsWith('pollBeforeSleep')) ? ' (set at runtime)' : '';
  if (d.pollBeforeSleepUs === 0) return `poll before sleep: off${from}`;
  const p = d.pollBeforeSleep;
  const now = p ? `, window ${p.windowUs} µs, ${p.hits} hits${p.served ? ` (${p.served} served in the poll)` : ''} / ${p.misses} misses, ${p.spinMs.toFixed(1)} ms polled`
    + `${p.overBudget ? `, ${p.overBudget} sleeps over budget` : ''}${p.hostBusy ? `, ${p.hostBusy} sleeps unpolled (host busy)` : ''}`
    + `${p.pressurePermille !== undefined && p.hostBusy !== undefined ? `, CPU pressure ${(p.pressurePermille / 10).toFixed(1)} %` : ''}` : '';
  return `poll before sleep: up to ${d.pollBeforeSleepUs} µs, budget ${d.pollBeforeSleepBudgetMs} ms/s${now}${from}`;
}

interface TapWriteBatchView { want?: boolean; on: boolean; error: string | null; writes: number; flushes: number }

/** Batched TAP writes (tapWriteBatch, `set tap-write-batch`): what is wanted, and what io_uring allowed. */
function tapWriteBatchLine(t: TapWriteBatchView | undefined, from: string): string {
  if (!t) return '';
  if (t.want === false || (t.want === undefined && !t.on && !t.error)) return `\ntap write batch: off${from}`;
  if (!t.on) return `\ntap write batch: unavailable (${t.error}), writev${from}`;
  return `\ntap write batch: io_uring, ${t.writes} replayed frames in ${t.flushes} flushes${from}`;
}

/** `set tap-write-batch on|off`. */
export function parseOnOff(key: string, s: string): boolean {
  if (s !== 'on' && s !== 'off') throw new UsageError(`bad ${key} '${s}' (on or off)`);
  return s === 'on';
}

/** `set turn-yield-us N|off`: an interval in µs, 0-100000 (off = 0). */
export function parseTurnYieldUs(s: string): number {
  const n = s === 'off' ? 0 : /^\d+$/.test(s) ? Number(s) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > 100000) throw new UsageError(`bad turn-yield-us '${s}' (0-100000 microseconds, or off)`);
  return n;
}

/** `set poll-us N|off`: a window in µs, 0-1000 (off = 0). */
export function parsePollUs(s: string): number {
  if (s === 'off') return 0;
  if (!/^\d+$/.test(s) || Number(s) > 1000) throw new UsageError(`bad poll-us '${s}' (0-1000 microseconds, or off)`);
  return Number(s);
}

/** `set poll-budget-ms MS`: 1-1000 ms of polling per second. */
export function parsePollBudget(s: string): number {
  if (!/^\d+$/.test(s) || Number(s) < 1 || Number(s) > 1000) throw new UsageError(`bad poll-budget-ms '${s}' (1-1000 milliseconds per second)`);
  return Number(s);
}

function print(data: unknown, asJson: boolean, render: (d: any) => string): void {
  process.stdout.write(asJson ? JSON.stringify(data, null, 2) + '\n' : render(data));
}

function table(head: string[], rows: (string | number)[][]): string {
  const t = new Table({
    head,
    style: { head: [], border: [], compact: true, 'padding-left': 0, 'padding-right': 2 },
    chars: {
      top: '', 'top-mid': '', 'top-left': '', 'top-right': '', bottom: '', 'bottom-mid': '', 'bottom-left': '',
      'bottom-right': '', left: '', 'left-mid': '', mid: '', 'mid-mid': '', right: '', 'right-mid': '', middle: '',
    },
  });
  t.push(...rows.map((r) => r.map(String)));
  return t.toString().split('\n').map((l) => l.trimEnd()).join('\n') + '\n';
}

function vlanSummary(v: { mode: string; pvid: number; members: { vid: number; untagged: boolean }[] }): string {
  const tagged = v.members.filter((m) => !m.untagged).map((m) => m.vid);
  const untagged = v.members.filter((m) => m.untagged).map((m) => m.vid);
  if (v.mode === 'access') return `access ${v.pvid}`;
  if (v.mode === 'trunk') return `trunk ${compact(tagged)}${v.pvid ? ` native ${v.pvid}` : ''}`;
  return `hybrid tagged ${compact(tagged) || '-'} untagged ${compact(untagged) || '-'} pvid ${v.pvid || '-'}`;
}

/** [1,2,3,7] -> "1-3,7" */
function compact(vids: number[]): string {
  const out: string[] = [];
  for (let i = 0; i < vids.length;) {
    let j = i;
    while (j + 1 < vids.length && vids[j + 1] === vids[j] + 1) j++;
    out.push(i === j ? `${vids[i]}` : `${vids[i]}-${vids[j]}`);
    i = j + 1;
  }
  return out.join(',');
}

/** `show`'s options column: guards, storm control, MAC limit, persistence, BPDU guard, rate limits. */
export function portOptions(p: any): string {
  const out: string[] = [];
  if (p.guard) {
    out.push(p.guard.dhcp && p.guard.ipSource ? 'guard' : p.guard.dhcp ? 'guard dhcp-only' : p.guard.ipSource ? 'guard ip-only' : 'guard ipv6-only');
  }
  if (p.stormControl) out.push(`storm ${p.stormControl.pps}/s`);
  if (p.maxMacs) out.push(`max-macs ${p.maxMacs}`);
  if (p.persistent === true) out.push('persistent');
  if (p.bpduGuard === true) out.push('bpdu-guard');
  if (p.limits) out.push(p.limits); // rate limits: "in 100mbit/1mb, out 50mbit/256kb"
  if (p.bondMode) out.push(`bond ${p.bondMode} ${p.members}${p.activeMember ? ` (active ${p.activeMember})` : ''}`);
  return out.join(', ') || '-';
}

/** `port set`'s words; burst and pps are read by portSetArgs, after the rate they go with. */
export const PORT_SET_WORDS: KeywordSpec = {
  values: {
    guard: { name: 'on|off|dhcp-only|default', choices: ['on', 'off', 'dhcp-only', 'default'] },
    storm: { name: 'PPS|off' },
    'max-macs': { name: 'N' },
    persistent: { name: 'on|off', choices: ['on', 'off'] },
    'bpdu-guard': { name: 'on|off', choices: ['on', 'off'] },
    'ingress-rate': { name: 'RATE|off' },
    'egress-rate': { name: 'RATE|off' },
    burst: { name: 'SIZE' },
    pps: { name: 'N' },
  },
  flags: [],
};

/**
 * `port set`'s words as port.set's arguments. `burst` and `pps` belong to the rate just
 * before them (`ingress-rate 100mbit burst 1mb pps 20000 egress-rate 50mbit burst 256k`,
 * as tc writes a rate and its burst together); rates and sizes are checked here, so a
 * typo is a usage error (exit 2) before anything is sent.
 */
export function portSetArgs(list: string[]): Record<string, unknown> {
  const args: Record<string, unknown> = {};
  const seen = new Set<string>();
  let rate: 'ingress' | 'egress' | undefined;
  for (let i = 0; i < list.length; i += 2) {
    const w = list[i];
    const one = words(list.slice(i, i + 2), PORT_SET_WORDS);
    const v = one[w] as string;
    const key = w === 'burst' || w === 'pps' ? `${rate}-${w}` : w;
    if (seen.has(key)) throw new UsageError(`'${w}' given twice${rate && (w === 'burst' || w === 'pps') ? ` for ${rate}-rate` : ''}`);
    seen.add(key);
    const usage = (x: () => unknown): void => {
      try {
        x();
      } catch (e) {
        throw new UsageError(`${w} ${v}: ${(e as Error).message}`);
      }
    };
    switch (w) {
      case 'guard': args.guard = v; break;
      case 'storm': args.storm = parseCount(v, 'storm rate', 'off'); break;
      case 'max-macs': args.maxMacs = parseCount(v, 'MAC limit'); break;
      case 'persistent': args.persistent = v === 'on'; break;
      case 'bpdu-guard': args.bpduGuard = v === 'on'; break;
      case 'ingress-rate':
      case 'egress-rate':
        if (v !== 'off') usage(() => parseRate(v));
        args[w === 'ingress-rate' ? 'ingressRate' : 'egressRate'] = v;
        rate = v === 'off' ? undefined : w === 'ingress-rate' ? 'ingress' : 'egress';
        continue;
      case 'burst':
        if (rate === undefined) throw new UsageError('\'burst\' goes right after the ingress-rate or egress-rate it is for (not after off)');
        usage(() => parseSize(v));
        args[`${rate}Burst`] = v;
        continue;
      case 'pps':
        if (rate === undefined) throw new UsageError('\'pps\' goes right after the ingress-rate or egress-rate it is for (not after off)');
        args[`${rate}Pps`] = parseCount(v, 'packets per second');
        if (args[`${rate}Pps`] === 0) throw new UsageError('pps must be at least 1 (leave it out for no packet limit)');
        continue;
    }
    rate = undefined;
  }
  if (Object.keys(args).length === 0) throw new UsageError('nothing to set: guard, storm, max-macs, persistent, bpdu-guard, ingress-rate or egress-rate');
  return args;
}

/** parse(), its Error a usage error (exit 2) with the same message. */
function asUsage<T>(parse: () => T): T {
  try {
    return parse();
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** `show`'s loop protection column of a bridge, with its read share ("read-quantum 256kb" or "read-share frames 32") and sparse-first service. */
export function loopText(l: { flapMoves: number; flapHoldSec: number; bpduRecoverySec: number } | undefined, readQuantum?: number,
  readShare?: ReadShare, readFrames?: number, readSparse?: boolean): string {
  if (l === undefined) return '';
  const q = (readQuantum === undefined ? '' : `, ${formatReadShare(readShare ?? 'bytes', readQuantum, readFrames ?? 0)}`) + (readSparse === undefined ? '' : readSparse ? ', read-sparse on' : ', read-sparse off');
  return `${l.flapMoves > 0 ? `mac-flap ${l.flapMoves}/s hold ${l.flapHoldSec}s` : 'mac-flap off'}, bpdu-recovery ${l.bpduRecoverySec}s${q}`;
}

function parseVid(s: string): number {
  if (!/^\d+$/.test(s)) throw new UsageError(`bad VLAN ID '${s}'`);
  return Number(s);
}

function parseVni(s: string): number {
  if (!/^\d{1,8}$/.test(s) || Number(s) > 0xffffff) throw new UsageError(`bad VNI '${s}' (0-16777215)`);
  return Number(s);
}
function parseVidRange(s: string): [number, number] {
  const m = /^(\d+)(?:-(\d+))?$/.exec(s);
  if (!m) throw new UsageError(`bad VID or range '${s}' (expected VID or VID-VID)`);
  return [Number(m[1]), Number(m[2] ?? m[1])];
}

function parseVidList(s: string): number[] {
  return s.split(',').flatMap((part) => {
    const [a, b] = parseVidRange(part);
    const out = [];
    for (let v = a; v <= b && out.length <= 4096; v++) out.push(v);
    return out;
  });
}

function parseCount(s: string, what: string, off?: string): number {
  if (off !== undefined && s === off) return 0;
  if (!/^\d+$/.test(s)) throw new UsageError(`bad ${what} '${s}' (a whole number${off !== undefined ? ` or ${off}` : ''})`);
  return Number(s);
}

/**
 * `--socket` is both the program's control-socket option and addif's port socket, and
 * commander hands every occurrence to the program. For addif they are told apart by
 * position: before the subcommand the control socket, after it the port's socket.
 */
function splitSocketArgs(argv: string[], sub: string): { control?: string; port?: string } {
  const out: { control?: string; port?: string } = {};
  let afterSub = false;
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') break;
    let v: string | undefined;
    if (a === '--socket') v = argv[++i];
    else if (a.startsWith('--socket=')) v = a.slice('--socket='.length);
    else if (!afterSub && a === sub) afterSub = true;
    if (v !== undefined) out[afterSub ? 'port' : 'control'] = v;
  }
  return out;
}

/** "yes, 4 leases/guarded port" from a network's dhcpPolicy (router show). */
function dhcpCell(p: any): string {
  const cap = p?.maxLeasesPerPort;
  if (cap === undefined) return 'yes';
  if (cap.guarded === null && cap.unguarded === null) return 'yes, no lease cap';
  if (cap.unguarded === null) return `yes, ${cap.guarded} leases/guarded port`;
  return `yes, ${cap.guarded} leases/port`;
}

/** `router show`: the networks' IPv6 (addresses, mode, what the RAs carry) and its counters. */
function ipv6Text(r: any): string {
  const nets = r.networks.filter((n: any) => n.ipv6);
  if (nets.length === 0) return '';
  // Router lifetime 0: the network routes nowhere (no interconnected IPv6 network, no uplink with IPv6).
  return `ipv6:\n${table(['network', 'address', 'link-local', 'mode', 'ra every', 'rdnss', 'dnssl', 'ra sent', 'rs', 'ns answered', 'router life', 'neighbours'],
    nets.map((n: any) => {
      const v = n.ipv6;
      return [n.name, v.address, v.linkLocal, v.mode, `${Math.round(v.raInterval >= 9 ? v.raInterval / 3 : v.raInterval * 0.75)}-${v.raInterval}s`,
        v.rdnss.join(',') || '-', v.dnssl.join(',') || '-', v.counters.raSent, v.counters.rsReceived, v.counters.nsAnswered,
        `${v.routerLifetime}s`, v.neighbours ?? 0];
    }))}${nets.filter((n: any) => n.ipv6.dhcpv6).map((n: any) => {
    const d = n.ipv6.dhcpv6;
    return d.state === 'ok' ? `dhcpv6 ${n.name}: pool ${d.pool}, lease ${d.leaseTime}s, ${d.leases} bound, dns ${(d.dns ?? []).join(',') || '-'}\n` : `dhcpv6 ${n.name}: ${d.state}\n`;
  }).join('')}${ipv6RouteText(r)}`;
}

/** `router show`: the uplink's IPv6 side and what route6 forwarded. */
function ipv6RouteText(r: any): string {
  const v = r.ipv6;
  if (!v) return '';
  const c = v.counters;
  const up = v.uplink;
  const dad = up?.dad === 'duplicate' ? `(DAD failed: ${up.tentativeAddress} is in use by ${up.conflictMac})` : up?.dad === 'tentative' ? `(tentative ${up.tentativeAddress})` : '';
  const uplink = up ? `uplink ipv6: ${up.address || dad || '(none yet)'} ${up.mode}${up.translate ? ` translate ${up.translate}` : ''}, gateway ${up.gateway || '(none yet)'}, mtu ${up.mtu}\n` : '';
  return `${uplink}ipv6 routed: between ${c.between}, to uplink ${c.toUplink}, from uplink ${c.fromUplink}; refused: prohibited ${c.prohibited}, `
    + `no route ${c.noRoute}, hop limit ${c.hopLimitExceeded}, too big ${c.tooBig}, scope ${c.scope}, bad source ${c.badSource}\n`;
}

/** `router show`: the per-port rate limits, and the ports they dropped frames of. */
function limitsText(r: any): string {
  const l = r.limits;
  if (!l) return '';
  const rate = (v: number): string => (v > 0 ? `${v}/s` : 'off');
  let out = `limits per port: dhcp ${rate(l.dhcp)}, arp ${rate(l.arp)}, icmp ${rate(l.icmp)}, dns ${rate(l.dns)}, icmp errors ${rate(l.icmpErrors)}, nd ${rate(l.nd)}\n`;
  out += r.dns ? `dns: gateways answer their DHCP names, forward the rest to ${r.dns.forward} (${r.dns.upstreamFrom}); waiting ${r.dns.outstanding}\n` : 'dns: off\n';
  const rows = r.networks.flatMap((n: any) => (n.rateLimited?.ports ?? []).map((p: any) => [
    n.name, p.port || '-', ...['dhcp', 'arp', 'icmp', 'dns', 'icmp_errors', 'nd'].map((k) => p.dropped[k]), p.limited.join(',') || '-',
  ]));
  if (rows.length > 0) out += `rate-limited drops:\n${table(['network', 'port', 'dhcp', 'arp', 'icmp', 'dns', 'icmp errors', 'nd', 'limited now'], rows)}`;
  return out;
}

/** "config", "runtime" (the CLI), or "config, vlan: runtime" for a file object whose settings the CLI changed. */
function from(o: { source?: string; overrides?: string[]; router?: string }): string {
  if (o.router !== undefined) return `router ${o.router}`;
  if (o.source === undefined) return '';
  return o.overrides?.length ? `${o.source}, ${o.overrides.join(', ')}: runtime` : o.source;
}

/** One line of `vswitch monitor` for an event, as `bridge monitor` prints them. */
/** `evpn show`: duplicate MAC detection's settings and the MACs it flagged (none: one line). */
export function dupText(v: any): string {
  const d = v.dupDetect;
  if (d === undefined) return '';
  const head = !d.enabled ? 'duplicate MAC detection: off\n'
    : `duplicate MAC detection: ${d.maxMoves} moves in ${d.windowSeconds}s, freeze ${d.freeze === false ? 'off (flag only)' : d.freeze === 'permanent' ? 'until cleared' : `${d.freeze}s`}; `
      + `${d.duplicates} flagged, ${d.detectedTotal} detected since start, ${d.tracked}/${d.max} tracked${d.untracked ? `, ${d.untracked} moves untracked (table full)` : ''}\n`;
  const rows = v.vnis.flatMap((s: any) => (s.duplicates ?? []).map((e: any) => [s.vni, e.mac, e.moves, e.detectedAt, e.lastMoveTo, e.held ? 'held' : 'flagged', e.heldMoves]));
  return head + (rows.length ? table(['vni', 'duplicate mac', 'moves', 'detected', 'last move to', 'state', 'held moves'], rows) : '');
}

/** A neighbour's graceful restart for `evpn show`: ours offered or not, the peer's own (its restart time) or none. */
export function evpnGr(g: { advertised: boolean; received: boolean; peerRestartTime: number; peerRestarting: boolean } | null | undefined): string {
  if (g === null || g === undefined) return '-';
  const text = `ours ${g.advertised ? 'offered' : 'off'}, peer's ${g.received ? `${g.peerRestartTime}s` : 'none'}`;
  return g.peerRestarting ? `${text}, peer restarting` : text;
}

/** A neighbour's route limit in gobgpd for `evpn show`: the limit, then its hits (the last one's time) and a hold-down. */
export function evpnLimit(l: { maxPrefixes: number; exceeded: number; lastExceeded: string; heldDown: boolean; restartAt: string } | null | undefined): string {
  if (l === null || l === undefined) return '-';
  let text = l.maxPrefixes > 0 ? String(l.maxPrefixes) : 'none';
  if (l.exceeded > 0) text += `, exceeded ${l.exceeded}x (last ${l.lastExceeded.slice(0, 19)}Z)`;
  if (l.heldDown) text += l.restartAt !== '' ? `, down until ${l.restartAt.slice(11, 19)}Z` : ', down until reload';
  return text;
}

export function monitorLine(e: any): string {
  const t = typeof e.time === 'string' ? e.time.slice(11, 23) : '';
  const at = (r: any): string => (r.router !== undefined ? ` (${r.router}${r.network ? `/${r.network}` : ''})` : r.bridge !== undefined ? ` (${r.bridge})` : '');
  let text: string;
  switch (e.event) {
    case 'mac_learned': text = `mac ${e.mac} vlan ${e.vlan} learned on ${e.port}`; break;
    case 'mac_moved': text = `mac ${e.mac} vlan ${e.vlan} moved to ${e.port}`; break;
    case 'mac_aged': text = `${e.count} mac entr${e.count === 1 ? 'y' : 'ies'} aged out`; break;
    case 'mac_limit': text = `port ${e.port} at its MAC limit ${e.limit}: ${e.mac} vlan ${e.vlan} refused`; break;
    case 'port_up': text = `port ${e.port} up (${e.reason})`; break;
    case 'port_down': text = `port ${e.port} down (${e.reason})`; break;
    case 'port_added': text = `port ${e.port} added (${e.type})`; break;
    case 'port_removed': text = `port ${e.port} removed`; break;
    case 'port_failed': text = `port ${e.port} failed: ${e.error}`; break;
    case 'bridge_added': text = `bridge ${e.bridge} added`; break;
    case 'bridge_deleted': text = `bridge ${e.bridge} deleted`; break;
    case 'dhcp_ack': text = `lease ${e.ip} granted to ${e.mac}${e.port ? ` on ${e.port}` : ''}`; break;
    case 'dhcp_nak': text = `NAK to ${e.mac}${e.port ? ` on ${e.port}` : ''}`; break;
    case 'dhcp_expired': text = `${e.count} lease${e.count === 1 ? '' : 's'} expired`; break;
    case 'uplink_up': text = `uplink ${e.interface} up`; break;
    case 'uplink_down': text = `uplink ${e.interface} down (${e.reason})`; break;
    case 'config_applied': text = `reload applied: ${e.changes.length ? e.changes.join('; ') : 'no changes'}`; break;
    case 'config_refused': text = `reload refused: ${e.error}`; break;
    case 'events_dropped': text = `${e.count} events dropped (${e.reason})`; break;
    case 'events_suppressed': text = `${e.count} ${e.kind} events not shown (over ${e.kind === 'mac_learned' ? 'the per-second budget' : 'budget'})`; break;
    default: {
      const { time: _t, event: _e, router: _r, network: _n, bridge: _b, ...rest } = e;
      text = `${e.event}${Object.keys(rest).length ? ` ${JSON.stringify(rest)}` : ''}`;
    }
  }
  return `${t ? `[${t}] ` : ''}${text}${at(e)}\n`;
}

export interface ProgramHooks {
  /** Runs the daemon (main.ts wires it to daemon/run.ts, so that building the program loads no daemon code). */
  daemon?: (o: { config?: string; socket?: string; logLevel?: string; metricsListen?: string; stateDir?: string }) => Promise<void>;
  argv?: string[];
}

/** The whole command tree. */
export function buildProgram(hooks: ProgramHooks = {}): Command {
  const program = new Command('vswitch')
    .description('userspace virtual switch and router: learning L2 bridges with 802.1Q VLANs over TAP, attached and socket ports, '
      + 'routers with DHCP and NAT; the daemon and the brctl/bridge(8)-style commands that drive it over its control socket')
    .version(`vswitch ${VERSION}`, '-V, --version', 'print the version and exit')
    .addOption(opt('--socket <path>', `control socket (env VSWITCH_SOCKET, default ${DEFAULT_SOCKET})`, 'file'))
    .addOption(json())
    .helpOption('-h, --help', 'show help for a command')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  program.helpCommand('help [command]', 'show help for a command');

  const argv = (): string[] => hooks.argv ?? process.argv;
  const socketPath = (): string => program.opts().socket ?? process.env.VSWITCH_SOCKET ?? DEFAULT_SOCKET;
  const call = (cmd: string, args: Record<string, unknown> = {}): Promise<unknown> => request(socketPath(), cmd, args);
  // -j/--json is the program's (commander gives a subcommand's occurrence to the program too): iproute2's `ip -j`.
  const asJson = (): boolean => program.opts().json === true;

  program.command('daemon')
    .description('run the switch daemon in the foreground (logs on stderr; SIGHUP reloads, SIGTERM stops)')
    .addOption(opt('--config <file>', 'YAML config file (default: built in, one empty bridge br0)', 'file'))
    .addOption(opt('--state-dir <dir>', 'where leases, runtime state and forwards are kept (default from config: /var/lib/vswitch)', 'file'))
    .addOption(new Option('--log-level <level>', 'log level (default from config: info)').choices(LOG_LEVELS))
    .addOption(opt('--metrics <host:port>', 'Prometheus endpoint (default from config: 127.0.0.1:9464; "off" disables)', 'none'))
    .action(async (o: { config?: string; logLevel?: string; metrics?: string; stateDir?: string }) => {
      if (o.metrics !== undefined && !METRICS_LISTEN.test(o.metrics)) throw new UsageError(`--metrics must be HOST:PORT or off, got '${o.metrics}'`);
      if (hooks.daemon === undefined) throw new Error('no daemon in this build of the program');
      await hooks.daemon({ config: o.config, socket: program.opts().socket, logLevel: o.logLevel, metricsListen: o.metrics, stateDir: o.stateDir });
    });

  program.command('reload').description('re-read the daemon\'s config file and apply the difference (as SIGHUP); exit 1 if it is refused')
    .action(async () => {
      const r = await call('reload') as { changes: string[] };
      process.stdout.write(r.changes.length ? r.changes.map((c) => `${c}\n`).join('') : 'no changes\n');
    });

  const config = program.command('config').description('the config file');
  completes(config.command('check').argument('<file>', 'YAML config file')
    .description('validate a config file without a daemon (as nginx -t): exit 0 if the daemon would accept it, 1 with its errors if not'), 'file')
    .action((file: string) => {
      const c = loadConfig(file);
      const ports = Object.values(c.bridges).reduce((n, b) => n + Object.keys(b.ports).length, 0);
      const nets = Object.values(c.routers).reduce((n, r) => n + Object.keys(r.networks).length, 0);
      process.stdout.write(`${file}: ok (${Object.keys(c.bridges).length} bridges, ${ports} ports, `
        + `${Object.keys(c.routers).length} routers, ${nets} networks)\n`);
    });

  completes(program.command('addbr').argument('<bridge>').description('create a bridge'), 'none')
    .action(async (bridge: string) => { await call('addbr', { bridge }); });

  completes(program.command('delbr').argument('<bridge>').description('delete a bridge and its ports (a bridge carrying router networks is refused)'), 'bridges')
    .action(async (bridge: string) => { await call('delbr', { bridge }); });

  completes(program.command('addif').argument('<bridge>').argument('<ifname>'), 'bridges', 'none')
    .description('add a port: a TAP the daemon creates, an existing interface with --attach, or a QEMU socket with --socket')
    .option('--attach', 'attach an existing interface (NIC, veth, hypervisor TAP) via AF_PACKET')
    .addOption(opt('--socket <path>', 'a socket port: listen on this Unix socket for a VM (QEMU -netdev stream,addr.type=unix,addr.path=PATH); '
      + 'the control socket then goes before addif or in VSWITCH_SOCKET', 'file'))
    .option('--mode <octal>', 'socket port: mode of the socket file (default 0600)')
    .option('--connect', 'socket port: connect to PATH where QEMU listens (-netdev stream,server=on,...) and reconnect after restarts')
    .option('--persistent', 'TAP: keep the device when the daemon exits')
    .option('--vlan <vid>', 'access port in this VLAN')
    .option('--trunk <vids>', 'trunk port carrying these VLANs tagged (e.g. 10,20,100-110)')
    .option('--native <vid>', 'trunk: native VLAN, untagged')
    .option('--max-macs <n>', 'limit of MAC addresses learned on this port')
    .action(async (bridge: string, ifname: string, o: Record<string, string | true | undefined>) => {
      if (o.vlan !== undefined && o.trunk !== undefined) throw new UsageError('--vlan and --trunk exclude each other');
      if (o.native !== undefined && o.trunk === undefined) throw new UsageError('--native needs --trunk');
      const vlan = o.vlan !== undefined
        ? { mode: 'access', vid: parseVid(o.vlan as string) }
        : o.trunk !== undefined
          ? { mode: 'trunk', allowed: parseVidList(o.trunk as string), ...(o.native !== undefined ? { native: parseVid(o.native as string) } : {}) }
          : undefined;
      const maxMacs = o.maxMacs !== undefined ? Number(o.maxMacs) : undefined;
      if (maxMacs !== undefined && !(Number.isInteger(maxMacs) && maxMacs >= 0)) throw new UsageError('--max-macs must be a non-negative integer');
      const sockets = splitSocketArgs(argv(), 'addif');
      if (o.mode !== undefined && sockets.port === undefined) throw new UsageError('--mode needs --socket');
      if (o.connect !== undefined && sockets.port === undefined) throw new UsageError('--connect needs --socket');
      if (o.connect !== undefined && o.mode !== undefined) throw new UsageError('--connect and --mode exclude each other (the socket file is QEMU\'s)');
      if (sockets.port !== undefined && (o.attach !== undefined || o.persistent !== undefined)) throw new UsageError('--socket excludes --attach and --persistent');
      const control = sockets.control ?? process.env.VSWITCH_SOCKET ?? DEFAULT_SOCKET;
      const socket = sockets.port !== undefined ? resolve(sockets.port) : undefined;
      await request(control, 'addif', { bridge, ifname, attach: o.attach === true, persistent: o.persistent === true, vlan, maxMacs, socket, mode: o.mode, connect: o.connect === true });
    });

  completes(program.command('delif').argument('<bridge>').argument('<ifname>').description('remove a port and everything it held'), 'bridges', 'ports')
    .action(async (bridge: string, ifname: string) => { await call('delif', { bridge, ifname }); });

  completes(program.command('show').argument('[bridge]').addOption(json())
    .description('show bridges and their ports: state, VLANs, options (guard, storm, max-macs, persistent, bpdu-guard, rate limits), '
      + 'where each comes from, and each bridge\'s loop protection'), 'bridges')
    .action(async (bridge: string | undefined) => {
      const data = await call('show', { bridge }) as any[];
      print(data, asJson(), (brs) => table(['bridge name', 'macs', 'port', 'kind', 'state', 'vlan', 'options', 'from', 'bridge from', 'loop protection'],
        brs.flatMap((b: any) => [
          ...(b.ports.length === 0 && !b.failed?.length ? [{ name: '', kind: '', state: '', vlan: null, empty: true }] : b.ports),
          ...(b.failed ?? []).map((f: any) => ({ name: f.name, kind: '', state: `failed (${f.reason})`, vlan: null, source: f.source, empty: true })),
        ].map((p: any, i: number) => [i === 0 ? b.name : '', i === 0 ? `${b.macs}/${b.maxMacs}` : '', p.name, p.kind,
          p.state === 'down' ? `down (${p.downReason})` : p.blocked ? `shut (${p.blocked})` : p.state, p.vlan ? vlanSummary(p.vlan) : '', p.empty ? '' : portOptions(p),
          p.name ? from(p) : '', i === 0 ? from(b) : '', i === 0 ? loopText(b.loopProtection, b.readQuantum, b.readShare, b.readFrames, b.readSparse) + (b.flowCache === undefined ? '' : b.flowCache ? ', flow-cache on' : ', flow-cache off') : '']))));
      // The daemon's scheduling context under the table (README "Fair share": the daemon's session).
      if (!asJson()) {
        const ping = await call('ping') as { settings?: unknown } | null;
        const line = daemonLine(ping);
        if (line) console.log(line);
        const settings = settingsLine(ping?.settings);
        if (settings) console.log(settings);
      }
    });

  completes(program.command('showmacs').argument('<bridge>').addOption(json()).description('show the MAC table of a bridge'), 'bridges')
    .action(async (bridge: string) => {
      print(await call('showmacs', { bridge }), asJson(), (rows) => table(['port', 'vlan', 'mac addr', 'static', 'ageing timer'],
        rows.map((r: any) => [r.port, r.vlan, r.mac, r.static ? 'yes' : 'no', r.static ? '' : r.ageSec.toFixed(1)])));
    });

  completes(program.command('setageing').argument('<bridge>').argument('<seconds>').description('set the MAC ageing time (0: no learning, flood everything)'), 'bridges', 'none')
    .action(async (bridge: string, seconds: string) => {
      if (!/^\d+(\.\d+)?$/.test(seconds)) throw new UsageError(`bad ageing time '${seconds}'`);
      await call('setageing', { bridge, seconds: Number(seconds) });
    });

  const port = program.command('port').description('port options at runtime (kept across restarts, as every change), and opening a shut port');
  completes(keywords(port.command('set').argument('<ifname>').argument('<words...>')
    .usage('IFNAME [guard on|off|dhcp-only|default] [storm PPS|off] [max-macs N] [persistent on|off] [bpdu-guard on|off] '
      + '[ingress-rate RATE|off [burst SIZE] [pps N]] [egress-rate RATE|off [burst SIZE] [pps N]]')
    .description('change a port in place (device, MAC entries and counters stay): anti-spoofing guards (DHCP guard and IP source guard; '
      + 'default: the policy), storm control (flooded frames per second), MAC limit (0: none), TAP persistence, BPDU guard, '
      + 'ingress policing and egress shaping (rates and sizes as tc: 100mbit, 1mb; burst and pps go with the rate before them)'), PORT_SET_WORDS), 'ports')
    .action(async (ifname: string, list: string[]) => {
      await call('port.set', { ifname, ...portSetArgs(list) });
    });
  completes(port.command('recover').argument('<ifname>')
    .description('open a port shut by the BPDU guard or loop detection now, before its recovery time'), 'ports')
    .action(async (ifname: string) => {
      const r = await call('port.recover', { ifname }) as { recovered: boolean };
      process.stdout.write(r.recovered ? `${ifname} opened\n` : `${ifname} was not shut\n`);
    });

  const bond = program.command('bond').description('uplink bonds: attached interfaces as one port (active-backup, balance-slb, LACP)');
  completes(bond.command('add').argument('<bridge>').argument('<bond>').argument('<members...>'), 'bridges', 'none', 'none')
    .description('add a bond port made of existing interfaces (kept across restarts, as every change)')
    .addOption(new Option('--mode <mode>', 'active-backup (default), balance-slb (source-MAC hashing, no switch cooperation) or lacp (802.3ad)')
      .choices(['active-backup', 'balance-slb', 'lacp']))
    .addOption(new Option('--lacp <activity>', 'lacp mode: send LACPDUs unasked (active, default) or only answer (passive)').choices(['active', 'passive']))
    .addOption(new Option('--lacp-rate <rate>', 'lacp mode: ask the partner for a LACPDU every second (fast, default) or 30 s (slow)').choices(['fast', 'slow']))
    .option('--vlan <vid>', 'access port in this VLAN')
    .option('--trunk <vids>', 'trunk port carrying these VLANs tagged (e.g. 10,20,100-110)')
    .option('--native <vid>', 'trunk: native VLAN, untagged')
    .action(async (br: string, name: string, members: string[], o: Record<string, string | undefined>) => {
      if (o.vlan !== undefined && o.trunk !== undefined) throw new UsageError('--vlan and --trunk exclude each other');
      if (o.native !== undefined && o.trunk === undefined) throw new UsageError('--native needs --trunk');
      if ((o.lacp !== undefined || o.lacpRate !== undefined) && o.mode !== 'lacp') throw new UsageError('--lacp and --lacp-rate need --mode lacp');
      const vlan = o.vlan !== undefined
        ? { mode: 'access', vid: parseVid(o.vlan) }
        : o.trunk !== undefined ? { mode: 'trunk', allowed: parseVidList(o.trunk), ...(o.native !== undefined ? { native: parseVid(o.native) } : {}) } : undefined;
      await call('bond.add', { bridge: br, bond: name, members, mode: o.mode, lacp: o.lacp, lacpRate: o.lacpRate, vlan });
    });
  completes(bond.command('del').argument('<bridge>').argument('<bond>').description('remove a bond port (its members are released)'), 'bridges', 'ports')
    .action(async (br: string, name: string) => { await call('bond.del', { bridge: br, bond: name }); });
  completes(bond.command('show').argument('[bond]').addOption(json())
    .description('bonds: mode, active member, and per member link, LACP state (actor/partner), traffic and drops'), 'ports')
    .action(async (name: string | undefined) => {
      print(await call('bond.show', { bond: name }), asJson(), (bonds) => table(['bond', 'bridge', 'mode', 'member', 'link', 'state', 'lacp', 'partner', 'rx', 'tx', 'drops'],
        bonds.flatMap((b: any) => b.members.map((m: any, i: number) => [
          i === 0 ? b.name : '', i === 0 ? b.bridge : '', i === 0 ? `${b.mode}${b.state === 'up' ? '' : ' (down)'}${b.failovers ? `, ${b.failovers} failovers` : ''}` : '',
          m.name, m.link === 'up' ? 'up' : `down (${m.downReason})`,
          b.mode === 'active-backup' ? (m.enabled ? 'active' : 'backup') : m.enabled ? 'enabled' : 'disabled',
          m.lacp ? `${m.lacp.status}${m.lacp.distributing ? ' distributing' : m.lacp.collecting ? ' collecting' : ''}` : '-',
          m.lacp && m.lacp.partnerSystem !== '00:00:00:00:00:00' ? `${m.lacp.partnerSystem} key ${m.lacp.partnerKey} port ${m.lacp.partnerPort}` : '-',
          m.rxFrames, m.txFrames,
          Object.entries(m.drops).map(([k, v]) => `${k} ${v}`).join(', ') || '-',
        ]))));
    });

  const bridge = program.command('bridge').description('bridge options at runtime (kept across restarts, as every change)');
  const bridgeSetKw: KeywordSpec = {
    values: {
      'mac-flap-moves': { name: 'N|off' }, 'mac-flap-hold': { name: 'SECONDS' }, 'bpdu-recovery': { name: 'SECONDS' }, 'read-quantum': { name: 'SIZE|off' },
      'read-share': { name: 'bytes|frames' }, 'read-frames': { name: 'N|off' }, 'read-sparse': { name: 'on|off' }, 'flow-cache': { name: 'on|off' },
    },
    flags: [],
  };
  completes(keywords(bridge.command('set').argument('<bridge>').argument('<words...>')
    .usage('BRIDGE [mac-flap-moves N|off] [mac-flap-hold SECONDS] [bpdu-recovery SECONDS] [read-quantum SIZE|off] [read-share bytes|frames] [read-frames N|off] [read-sparse on|off] [flow-cache on|off]')
    .description('change a bridge\'s loop protection in place: MAC-flap loop detection (moves of one MAC in a second above which '
      + 'its loop port is blocked; off: no detection) and how long it stays blocked, how long a port shut by the BPDU guard stays shut; '
      + 'and the read share: what each port may read per round of the read loop (fair share): frames, the default (read-frames per '
      + 'port per round whatever their size, 16 by default), or bytes (read-quantum, 256kb by default); off: no limit; '
      + 'read-sparse: a port whose queue had emptied is served, one share, ahead of the ports that stayed backlogged (on by default); '
      + 'and the flow cache (on by default: known unicast replayed in the addon; off: every frame through the pipeline)'), bridgeSetKw), 'bridges')
    .action(async (name: string, list: string[]) => {
      const w = words(list, bridgeSetKw);
      const args: Record<string, unknown> = { bridge: name };
      if (w['mac-flap-moves'] !== undefined) args.macFlapMoves = parseCount(w['mac-flap-moves'] as string, 'MAC-flap moves', 'off');
      if (w['mac-flap-hold'] !== undefined) args.macFlapHold = parseCount(w['mac-flap-hold'] as string, 'hold time');
      if (w['bpdu-recovery'] !== undefined) args.bpduRecovery = parseCount(w['bpdu-recovery'] as string, 'recovery time');
      if (w['read-quantum'] !== undefined) args.readQuantum = asUsage(() => parseReadQuantum(w['read-quantum'] as string));
      if (w['read-share'] !== undefined) args.readShare = asUsage(() => parseReadShare(w['read-share']));
      if (w['read-frames'] !== undefined) args.readFrames = asUsage(() => parseReadFrames(w['read-frames'] as string));
      if (w['read-sparse'] !== undefined) args.readSparse = asUsage(() => parseReadSparse(w['read-sparse']));
      if (w['flow-cache'] !== undefined) {
        const v = w['flow-cache'] as string;
        if (v !== 'on' && v !== 'off') throw new UsageError(`flow-cache must be on or off, got ${v}`);
        args.flowCache = v === 'on';
      }
      if (Object.keys(args).length === 1) throw new UsageError('nothing to set: mac-flap-moves, mac-flap-hold, bpdu-recovery, read-quantum, read-share, read-frames, read-sparse or flow-cache');
      await call('bridge.loop', args);
    });

  const setKw: KeywordSpec = { values: { 'poll-us': { name: 'N|off' }, 'poll-budget-ms': { name: 'MS' }, 'tap-write-batch': { name: 'on|off' },
    'turn-yield-us': { name: 'N|off' } }, flags: [] };
  keywords(program.command('set').argument('<words...>').usage('[poll-us N|off] [poll-budget-ms MS] [tap-write-batch on|off] [turn-yield-us N|off]')
    .description('daemon-wide settings at runtime (kept across restarts, as every change): poll before sleep, the largest window '
      + 'in microseconds (0-1000; off, the default: 0) the event loop polls its ports before it sleeps, adaptive as KVM\'s halt polling, '
      + 'and at most how many milliseconds per second it may poll (1-1000, 200 by default); tap-write-batch: the flow cache\'s '
      + 'replays of one read batch written through io_uring in one call; turn-yield-us: while the host has more runnable tasks '
      + 'than CPUs, at most once per N microseconds (0-100000, 500 by default; off: 0) a busy loop gives its CPU up for ~55 µs '
      + 'so the VMs its writes woke can run'), setKw)
    .action(async (list: string[]) => {
      const w = words(list, setKw);
      const args: Record<string, unknown> = {};
      if (w['poll-us'] !== undefined) args.pollBeforeSleepUs = parsePollUs(w['poll-us'] as string);
      if (w['poll-budget-ms'] !== undefined) args.pollBeforeSleepBudgetMs = parsePollBudget(w['poll-budget-ms'] as string);
      if (w['tap-write-batch'] !== undefined) args.tapWriteBatch = parseOnOff('tap-write-batch', w['tap-write-batch'] as string);
      if (w['turn-yield-us'] !== undefined) args.turnYieldUs = parseTurnYieldUs(w['turn-yield-us'] as string);
      if (Object.keys(args).length === 0) throw new UsageError('nothing to set: poll-us, poll-budget-ms, tap-write-batch or turn-yield-us');
      await call('daemon.set', args);
    });
  program.command('settings').addOption(json()).description('daemon-wide settings (vswitch set), where they come from, poll before sleep\'s window and counters, batched TAP writes, the turn yield')
    .action(async () => {
      print(await call('daemon.show'), asJson(), (d) => settingsLine(d) + '\n');
    });

  const vlan = program.command('vlan').description('VLAN membership of ports, as bridge(8) vlan');
  const vlanAddKw: KeywordSpec = { values: { dev: { name: 'IFNAME', complete: 'ports' }, vid: { name: 'VID[-VID]' } }, flags: ['pvid', 'untagged'] };
  keywords(vlan.command('add').argument('<words...>').usage('dev IFNAME vid VID[-VID] [pvid] [untagged] [--force]')
    .description('add VLAN membership (as bridge vlan add); a PVID move or a mode change is done and said (stderr), '
      + 'switching a port\'s anti-spoofing guards off is refused without --force'), vlanAddKw)
    .option('--force', 'do it even if the port\'s anti-spoofing guards go off (what it changes is printed as warnings)')
    .action(async (list: string[], o: { force?: boolean }) => {
      const w = words(list, vlanAddKw);
      const usage = 'vlan add dev IFNAME vid VID[-VID] [pvid] [untagged] [--force]';
      const [lo, hi] = parseVidRange(need(w, 'vid', usage));
      const r = await call('vlan.add', { ifname: need(w, 'dev', usage), from: lo, to: hi, pvid: w.pvid === true, untagged: w.untagged === true, force: o.force === true }) as { warnings?: string[] } | null;
      for (const warning of r?.warnings ?? []) process.stderr.write(`vswitch: warning: vlan add on ${need(w, 'dev', usage)}: ${warning}\n`);
    });
  const vlanDelKw: KeywordSpec = { values: { dev: { name: 'IFNAME', complete: 'ports' }, vid: { name: 'VID[-VID]' } }, flags: [] };
  keywords(vlan.command('del').argument('<words...>').usage('dev IFNAME vid VID[-VID]').description('remove VLAN membership'), vlanDelKw)
    .action(async (list: string[]) => {
      const w = words(list, vlanDelKw);
      const usage = 'vlan del dev IFNAME vid VID[-VID]';
      const [lo, hi] = parseVidRange(need(w, 'vid', usage));
      await call('vlan.del', { ifname: need(w, 'dev', usage), from: lo, to: hi });
    });
  const vlanShowKw: KeywordSpec = { values: { dev: { name: 'IFNAME', complete: 'ports' } }, flags: [] };
  keywords(vlan.command('show').argument('[words...]').usage('[dev IFNAME] [--json]').addOption(json()).description('VLAN memberships per port'), vlanShowKw)
    .action(async (list: string[]) => {
      const w = words(list, vlanShowKw);
      print(await call('vlan.show', { ifname: w.dev }), asJson(), (rows) => table(['port', 'vlan-id', 'flags'],
        rows.flatMap((r: any) => r.vlans.map((v: any, i: number) => [i === 0 ? r.port : '', v.vid,
          [v.pvid ? 'PVID' : '', v.untagged ? 'Egress Untagged' : ''].filter(Boolean).join(' ')]))));
    });

  const fdb = program.command('fdb').description('MAC table entries, as bridge(8) fdb');
  const fdbAddKw: KeywordSpec = { values: { dev: { name: 'IFNAME', complete: 'ports' }, vlan: { name: 'VID' } }, flags: ['static', 'permanent', 'master'] };
  keywords(fdb.command('add').argument('<mac>').argument('<words...>').usage('MAC dev IFNAME [vlan VID]')
    .description('add a static entry (VLAN defaults to the port\'s PVID); it never ages or moves'), fdbAddKw)
    .action(async (mac: string, list: string[]) => {
      const w = words(list, fdbAddKw);
      await call('fdb.add', { mac, ifname: need(w, 'dev', 'fdb add MAC dev IFNAME [vlan VID]'), vlan: w.vlan ? parseVid(w.vlan as string) : undefined });
    });
  const fdbDelKw: KeywordSpec = { values: { dev: { name: 'IFNAME', complete: 'ports' }, vlan: { name: 'VID' } }, flags: ['master'] };
  keywords(fdb.command('del').argument('<mac>').argument('<words...>').usage('MAC dev IFNAME [vlan VID]')
    .description('remove an entry, static or learned'), fdbDelKw)
    .action(async (mac: string, list: string[]) => {
      const w = words(list, fdbDelKw);
      await call('fdb.del', { mac, ifname: need(w, 'dev', 'fdb del MAC dev IFNAME [vlan VID]'), vlan: w.vlan ? parseVid(w.vlan as string) : undefined });
    });
  const fdbFlushKw: KeywordSpec = {
    values: { br: { name: 'BRIDGE', complete: 'bridges' }, dev: { name: 'IFNAME', complete: 'ports' }, vlan: { name: 'VID' } },
    flags: ['dynamic'],
  };
  keywords(fdb.command('flush').argument('[words...]').usage('[br BRIDGE] [dev IFNAME] [vlan VID] [dynamic]')
    .description('remove the entries of a bridge, port and/or VLAN (all when none is named): learned ones, and static ones '
      + '(kept removed, as fdb del) unless dynamic'), fdbFlushKw)
    .action(async (list: string[]) => {
      const w = words(list, fdbFlushKw);
      const r = await call('fdb.flush', {
        bridge: w.br, ifname: w.dev, vlan: w.vlan !== undefined ? parseVid(w.vlan as string) : undefined, dynamic: w.dynamic === true,
      }) as { learned: number; static: number };
      print(r, asJson(), (x) => `flushed ${x.learned + x.static} entries (${x.learned} learned, ${x.static} static)\n`);
    });
  const fdbShowKw: KeywordSpec = { values: { br: { name: 'BRIDGE', complete: 'bridges' } }, flags: [] };
  keywords(fdb.command('show').argument('[words...]').usage('[br BRIDGE] [--json]').addOption(json())
    .description('all entries, static and learned'), fdbShowKw)
    .action(async (list: string[]) => {
      const w = words(list, fdbShowKw);
      print(await call('fdb.show', { bridge: w.br }), asJson(), (rows) =>
        rows.map((r: any) => `${r.mac} dev ${r.port} vlan ${r.vlan} master ${r.bridge}${r.static ? ' static' : ''}\n`).join(''));
    });

  const vxlan = program.command('vxlan').description('the VXLAN tunnel endpoint: bridge VLANs as VNIs across hosts, flood lists, remote VTEPs');
  const vxlanAddKw: KeywordSpec = { values: { vni: { name: 'VNI' }, vlan: { name: 'VID' }, flood: { name: 'IP[,IP...]' } }, flags: [] };
  completes(keywords(vxlan.command('add').argument('<bridge>').argument('<words...>').usage('BRIDGE vni VNI vlan VID [flood IP[,IP...]]')
    .description('map VNI to VLAN VID of BRIDGE, flooding to the remote VTEPs listed (replaces that VNI\'s mapping; kept across restarts)'), vxlanAddKw), 'bridges')
    .action(async (bridge: string, list: string[]) => {
      const w = words(list, vxlanAddKw);
      const usage = 'vxlan add BRIDGE vni VNI vlan VID [flood IP[,IP...]]';
      const flood = typeof w.flood === 'string' ? w.flood.split(',').filter((x) => x !== '') : [];
      await call('vxlan.add', { bridge, vni: parseVni(need(w, 'vni', usage)), vlan: parseVid(need(w, 'vlan', usage)), flood });
    });
  const vxlanDelKw: KeywordSpec = { values: { vni: { name: 'VNI' } }, flags: [] };
  keywords(vxlan.command('del').argument('<words...>').usage('vni VNI').description('stop carrying VNI (its tunnel ports go when no VNI names their remote)'), vxlanDelKw)
    .action(async (list: string[]) => {
      const w = words(list, vxlanDelKw);
      await call('vxlan.del', { vni: parseVni(need(w, 'vni', 'vxlan del vni VNI')) });
    });
  vxlan.command('show').addOption(json()).description('the VTEP: underlay, MTUs, VNIs with flood lists and counters, remote VTEPs, drops by reason')
    .action(async () => {
      print(await call('vxlan.show'), asJson(), (v) => !v.enabled ? 'vxlan: not configured\n'
        : `vxlan: local ${v.local}:${v.port}${v.interface ? ` dev ${v.interface}` : ''} underlay MTU ${v.mtu} (VM MTU ${v.vmMtu}) ttl ${v.ttl} tos ${typeof v.tos === 'number' ? `0x${v.tos.toString(16).padStart(2, '0')}` : v.tos ?? '0x00'} ecn ${v.ecn ?? 'rfc6040'} ${formatReadShare(v.readShare ?? 'bytes', v.readQuantum ?? 0, v.readFrames ?? 0)}\n`
        + (v.rxCoalesced ? `offload ${v.offload}: ${v.rxCoalesced.segments} segments coalesced into ${v.rxCoalesced.frames} frames toward TAPs, ${v.rxCoalesced.errors} refused`
          + (v.txGso ? `; ${v.txGso.segments} packets sent in ${v.txGso.sends} UDP GSO sends, ${v.txGso.refused} refused` : '')
          + (v.rxGro ? `; UDP GRO ${v.rxGro.on === false ? 'off' : 'on'}: ${v.rxGro.segments} packets received in ${v.rxGro.bursts} bursts, ${v.rxGro.dropped} dropped` : '') + '\n' : '')
        + table(['vni', 'bridge', 'vlan', 'flood', 'rx packets', 'tx packets', 'from'],
          v.vnis.map((s: any) => [s.vni, s.bridge, s.vlan, s.flood.join(',') || '-', s.rxPackets, s.txPackets, s.source]))
        + table(['remote', 'bridge', 'port', 'macs', 'rx frames', 'tx frames'], v.remotes.map((r: any) => [r.remote, r.bridge, r.port, r.macs, r.rxFrames, r.txFrames]))
        + `drops: ${Object.entries(v.drops).map(([k, n]) => `${k} ${n}`).join(', ')}\n`);
    });
  const vxlanFdb = vxlan.command('fdb').description('static MAC entries behind a remote VTEP');
  const vxlanFdbKw: KeywordSpec = { values: { vni: { name: 'VNI' }, dst: { name: 'IP' } }, flags: [] };
  keywords(vxlanFdb.command('add').argument('<mac>').argument('<words...>').usage('MAC vni VNI dst IP')
    .description('MAC is behind the remote VTEP IP in VNI (a static entry on its tunnel port, as bridge fdb add ... dst IP)'), vxlanFdbKw)
    .action(async (mac: string, list: string[]) => {
      const w = words(list, vxlanFdbKw);
      const usage = 'vxlan fdb add MAC vni VNI dst IP';
      await call('vxlan.fdb.add', { mac, vni: parseVni(need(w, 'vni', usage)), dst: need(w, 'dst', usage) });
    });
  const vxlanFdbDelKw: KeywordSpec = { values: { vni: { name: 'VNI' } }, flags: [] };
  keywords(vxlanFdb.command('del').argument('<mac>').argument('<words...>').usage('MAC vni VNI').description('remove a static entry vxlan fdb add made'), vxlanFdbDelKw)
    .action(async (mac: string, list: string[]) => {
      const w = words(list, vxlanFdbDelKw);
      await call('vxlan.fdb.del', { mac, vni: parseVni(need(w, 'vni', 'vxlan fdb del MAC vni VNI')) });
    });

  const evpn = program.command('evpn').description('BGP EVPN for the VXLAN VNIs through GoBGP: neighbours, routes advertised and installed');
  evpn.command('show').addOption(json()).description('gobgpd, neighbours and their session state, per VNI the RD/RT, routes by type and ARP suppression, refused routes by reason')
    .action(async () => {
      print(await call('evpn.show'), asJson(), (v) => !v.enabled ? 'evpn: not configured\n'
        : `evpn: AS ${v.asn} router-id ${v.routerId} gobgpd ${v.gobgpd.mode} ${v.gobgpd.api}${v.gobgpd.pid ? ` pid ${v.gobgpd.pid}` : ''}`
        + ` ${v.connected ? 'connected' : `not connected${v.error ? ` (${v.error})` : ''}`}, max remote MACs per VNI ${v.maxRemoteMacs}\n`
        + table(['neighbor', 'remote AS', 'state', 'received', 'advertised', 'graceful restart', 'route limit'], v.neighbors.map((n: any) => [n.address, n.remoteAs, n.state, n.received, n.advertised, evpnGr(n.gracefulRestart), evpnLimit(n.prefixLimit)]))
        + table(['vni', 'rd', 'rt', 'adv type-2', 'adv type-3', 'inst type-2', 'inst type-3', 'remote macs', 'flood'],
          v.vnis.map((s: any) => [s.vni, s.rd, s.rt.join(','), s.advertised.type2, s.advertised.type3, s.installed.type2, s.installed.type3, s.remoteMacs, s.floodRemotes.join(',') || '-']))
        + table(['vni', 'arp suppress', 'neighbours', 'suppressed', 'unknown', 'passed', 'malformed', 'full'],
          v.vnis.filter((s: any) => s.arpSuppress).map((s: any) => [s.vni, s.arpSuppress.on ? 'on' : 'off', s.arpSuppress.entries, s.arpSuppress.suppressed, s.arpSuppress.unknown, s.arpSuppress.passed, s.arpSuppress.malformed, s.arpSuppress.full]))
        + dupText(v)
        + `rejected: ${Object.entries(v.rejected).map(([k, n]) => `${k} ${n}`).join(', ')}\n`);
    });
  const clearDupKw: KeywordSpec = { values: { vni: { name: 'VNI' } }, flags: [] };
  keywords(evpn.command('clear-dup').addOption(json()).argument('[mac]').argument('[words...]').usage('[MAC] [vni VNI]')
    .description('forget duplicate MAC detection for the MAC (every MAC without one): a flagged MAC is released and its routes judged again'), clearDupKw)
    .action(async (mac: string | undefined, list: string[]) => {
      // `clear-dup vni 100`: the first word is the keyword, not a MAC.
      const all = mac === 'vni' ? [mac, ...list] : list;
      const w = words(all, clearDupKw);
      const vni = typeof w.vni === 'string' ? parseVni(w.vni) : undefined;
      print(await call('evpn.clear-dup', { mac: mac === 'vni' ? undefined : mac, vni }), asJson(),
        (r) => `cleared ${r.cleared} duplicate MAC${r.cleared === 1 ? '' : 's'}${r.cleared ? `: ${r.macs.join(', ')}` : ''}\n`);
    });

  program.command('monitor').addOption(json())
    .description('print the daemon\'s events as they happen (MACs learned/moved/aged, ports, leases, uplinks, reloads) until interrupted')
    .option('--stats', 'print the monitor clients the daemon serves and the events each missed, then exit')
    .action(async (o: { stats?: boolean }) => {
      if (o.stats) {
        print(await call('monitor.stats'), asJson(), (s) => `events ${s.events}, dropped ${s.dropped}, suppressed ${s.suppressed}\n`
          + table(['client', 'sent', 'dropped', 'pending bytes'], s.clients.map((c: any) => [c.id, c.sent, c.dropped, c.pending])));
        return;
      }
      await stream(socketPath(), 'monitor', {}, (line) => {
        if (asJson()) process.stdout.write(`${line}\n`);
        else process.stdout.write(monitorLine(JSON.parse(line)));
      });
    });

  const router = program.command('router').description('routers (NAT mode)');
  completes(router.command('show').argument('[router]').addOption(json()).description('networks, uplink, limits and counters of the routers'), 'routers')
    .action(async (name: string | undefined) => {
      print(await call('router.show', { router: name }), asJson(), (rs) => rs.map((r: any) =>
        `router ${r.name}: uplink ${r.uplink?.kind === 'host' ? `host (the host's own address; DNS via ${r.uplink.resolver || 'no resolver'}; ICMP ${r.uplink.icmp}${r.uplink.rcvbuf !== undefined && r.uplink.rcvbuf !== 'auto' ? `; TCP rcvbuf ${r.uplink.rcvbuf}` : ''})`
          : r.uplink ? `${r.uplink.interface} ${r.uplink.address} (${r.uplink.mac}) gateway ${r.uplink.gateway || '-'} ${r.uplink.state}` : 'none'}\n` +
        (r.forwards && r.forwards !== 'ok' ? `forwards: ${r.forwards}\n` : '') +
        table(['network', 'vlan', 'address', 'dhcp', 'state'], r.networks.map((n: any) => [n.name, n.vlan, n.address, n.dhcp ? dhcpCell(n.dhcpPolicy) : 'no', n.state ?? 'ok'])) +
        ipv6Text(r) + limitsText(r)).join('\n'));
    });

  const dhcp = program.command('dhcp').description('the routers\' DHCP servers');
  dhcp.command('leases').addOption(opt('--network <name>', 'only this network', 'networks')).addOption(json()).description('leases and offers')
    .action(async (o: { network?: string }) => {
      print(await call('dhcp.leases', { network: o.network }), asJson(), (rows) => table(
        // family last: the columns before it keep their places for scripts that read them.
        ['network', 'ip', 'mac', 'state', 'hostname', 'expires in', 'family'],
        rows.map((l: any) => [l.network, l.ip, l.mac || '-', l.state, l.hostname || '-', `${l.expiresInSec}s`, l.family])));
    });
  const reservation = dhcp.command('reservation').description('static DHCP reservations (MAC -> address), kept across restarts');
  completes(reservation.command('add').argument('<network>').argument('<mac>').argument('<ip>').option('--hostname <name>', 'sent as option 12')
    .description('reserve IP for MAC in NETWORK; refused if the address is leased to another client or outside the network'), 'networks', 'none', 'none')
    .action(async (network: string, mac: string, ip: string, o: { hostname?: string }) => {
      await call('dhcp.reservation.add', { network, mac, ip, hostname: o.hostname });
    });
  completes(reservation.command('del').argument('<network>').argument('<mac>').description('remove the reservation of MAC in NETWORK'), 'networks', 'none')
    .action(async (network: string, mac: string) => { await call('dhcp.reservation.del', { network, mac }); });
  reservation.command('show').addOption(opt('--network <name>', 'only this network', 'networks')).addOption(json())
    .description('reservations, with their source (config or runtime)')
    .action(async (o: { network?: string }) => {
      print(await call('dhcp.reservation.show', { network: o.network }), asJson(), (rows) => table(
        ['network', 'mac', 'ip', 'hostname', 'from'], rows.map((r: any) => [r.network, r.mac, r.ip, r.hostname ?? '-', r.source])));
    });

  const nat = program.command('nat').description('NAT sessions and port forwards');
  nat.command('sessions').addOption(opt('--router <name>', 'only this router', 'routers')).addOption(json()).description('active NAPT sessions')
    .action(async (o: { router?: string }) => {
      print(await call('nat.sessions', { router: o.router }), asJson(), (rows) => table(
        ['proto', 'inside', 'public port', 'remote', 'state', 'idle', 'expires in'],
        rows.map((s: any) => [s.proto, s.inside, s.publicPort, s.remote, s.state, `${s.idleSec}s`, s.expiresInSec === undefined ? '-' : `${s.expiresInSec}s`])));
    });
  const fwd = nat.command('forward').description('port forwards from the uplink address to inside hosts');
  fwd.command('add').argument('<proto>', 'tcp or udp').argument('<public>', 'public port or range, e.g. 8080 or 8000-8010')
    .argument('<inside>', 'inside IP[:port], e.g. 10.0.10.50:80').addOption(opt('--router <name>', 'the router (needed when there are several)', 'routers'))
    .description('add a port forward at runtime (kept in the state directory)')
    .action(async (proto: string, pub: string, inside: string, o: { router?: string }) => {
      await call('nat.forward.add', { router: o.router, proto, public: pub, inside });
    });
  fwd.command('del').argument('<proto>', 'tcp or udp').argument('<public>', 'public port or range')
    .addOption(opt('--router <name>', 'the router (needed when there are several)', 'routers'))
    .description('remove a runtime forward (config forwards are changed in the file)')
    .action(async (proto: string, pub: string, o: { router?: string }) => {
      await call('nat.forward.del', { router: o.router, proto, public: pub });
    });
  fwd.command('show').addOption(opt('--router <name>', 'only this router', 'routers')).addOption(json())
    .description('forwards, with their source (config or runtime) and listening state')
    .action(async (o: { router?: string }) => {
      print(await call('nat.forward.show', { router: o.router }), asJson(), (rows) => table(
        ['router', 'proto', 'public', 'inside', 'source', 'listen'],
        rows.map((f: any) => [f.router, f.proto, f.public, f.inside, f.source, f.listen === undefined ? '-' : `${f.listen} ${f.state}`])));
    });

  completes(program.command('stats').argument('[bridge]').addOption(json()).description('per-port counters and drops by reason; MAC table counters'), 'bridges')
    .action(async (bridge: string | undefined) => {
      print(await call('stats', { bridge }), asJson(), (brs) => brs.map((b: any) =>
        `bridge ${b.name}: macs ${b.fdb.size} learned ${b.fdb.learned} moved ${b.fdb.moved} aged ${b.fdb.aged} evicted ${b.fdb.evicted}` +
        ` refused ${b.fdb.refusedPortLimit + b.fdb.refusedStatic + b.fdb.refusedFull + (b.fdb.refusedBound ?? 0)}` +
        ` flooded ${b.forwarding.floodedGroup + b.forwarding.floodedUnknown} forwarded ${b.forwarding.forwarded}` +
        (b.deferredDropped > 0 ? ` deferred-dropped ${b.deferredDropped}` : '') + '\n' +
        table(['port', 'state', 'macs', 'rx frames', 'rx bytes', 'tx frames', 'tx bytes', 'drops'], b.ports.map((p: any) => [
          p.name, p.state, p.macs, p.rxFrames, p.rxBytes, p.txFrames, p.txBytes,
          Object.entries(p.drops).map(([k, v]) => `${k}=${v}`).join(' ') || '-',
        ]))).join('\n'));
    });

  program.command('completion').argument('<shell>', 'bash or zsh')
    .description('print the shell completion script (scripts/setup.sh installs both)')
    .action(async (shell: string) => {
      const docs = await import('./docs.js');
      if (shell === 'bash') process.stdout.write(docs.bashCompletion(program));
      else if (shell === 'zsh') process.stdout.write(docs.zshCompletion(program));
      else throw new UsageError(`no completion for '${shell}' (bash or zsh)`);
    });
  program.command('manpage').description('print the vswitch(8) man page (roff; scripts/setup.sh installs it)')
    .action(async () => {
      const docs = await import('./docs.js');
      process.stdout.write(docs.manPage(program));
    });
  // Used by the completion scripts: names the running daemon knows, one a line; nothing (and exit 0) when it is not there.
  program.command('__complete', { hidden: true }).argument('<kind>')
    .action(async (kind: string) => {
      try {
        process.stdout.write((await completionNames(call, kind)).map((n) => `${n}\n`).join(''));
      } catch { /* no daemon: nothing to offer */ }
    });
  return program;
}

async function completionNames(call: (cmd: string, args?: Record<string, unknown>) => Promise<unknown>, kind: string): Promise<string[]> {
  switch (kind) {
    case 'bridges': return (await call('show') as any[]).map((b) => b.name);
    case 'ports': return (await call('show') as any[]).flatMap((b) => b.ports.filter((p: any) => p.router === undefined).map((p: any) => p.name));
    case 'routers': return (await call('router.show') as any[]).map((r) => r.name);
    case 'networks': return (await call('router.show') as any[]).flatMap((r) => r.networks.map((n: any) => n.name));
    default: return [];
  }
}
