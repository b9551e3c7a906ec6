/*
 * The command definitions (cli.ts) as the operator meets them: every command and
 * subcommand has a description, --version and -V print the version, the
 * bridge(8)-style keyword grammar refuses what it does not know, and the verb
 * table of packages/cli/README.md lists exactly the commands there are, each with
 * every flag and keyword it takes (so the README cannot fall behind the code).
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { buildProgram, daemonLine, dupText, parseOnOff, parsePollBudget, parsePollUs, parseTurnYieldUs, settingsLine, evpnGr, evpnLimit, loopText, monitorLine, portOptions, portSetArgs, UsageError, words } from './cli.js';
import { commandTree, leafCommands } from './docs.js';
import { VERSION } from './version.js';

const README = fileURLToPath(new URL('../README.md', import.meta.url));

describe('command definitions', () => {
  it('every command and subcommand has a description, and every option and argument with a description says something', () => {
    const missing = commandTree(buildProgram()).filter((n) => n.cmd.description().trim().length < 8).map((n) => n.path || '(program)');
    expect(missing).toEqual([]);
    for (const n of commandTree(buildProgram())) {
      for (const o of n.cmd.options) expect(o.description.trim(), `${n.path} ${o.flags}`).not.toBe('');
    }
  });

  it('--version and -V print "vswitch VERSION" (the package.json version) and exit 0', async () => {
    const pkg = JSON.parse(readFileSync(fileURLToPath(new URL('../package.json', import.meta.url)), 'utf8')) as { version: string };
    expect(VERSION).toBe(pkg.version);
    for (const flag of ['--version', '-V']) {
      const p = buildProgram();
      let out = '';
      p.configureOutput({ writeOut: (s) => { out += s; } });
      const e = await p.parseAsync(['node', 'vswitch', flag]).then(() => undefined, (x: unknown) => x as { exitCode: number });
      expect(e?.exitCode, flag).toBe(0);
      expect(out.trim()).toBe(`vswitch ${pkg.version}`);
    }
  });

  it('usage errors are commander errors or UsageErrors (exit 2): a bad --log-level choice, an unknown keyword', async () => {
    const p = buildProgram();
    p.configureOutput({ writeErr: () => {} });
    const e = await p.parseAsync(['node', 'vswitch', 'daemon', '--log-level', 'verbose']).then(() => undefined, (x: unknown) => x as { code: string });
    expect(e?.code).toBe('commander.invalidArgument');
    expect(() => words(['dev', 'x', 'colour', 'red'], { values: { dev: { name: 'IFNAME' } }, flags: [] })).toThrow(UsageError);
    expect(() => words(['dev'], { values: { dev: { name: 'IFNAME' } }, flags: [] })).toThrow(/needs a value/);
    expect(() => words(['guard', 'maybe'], { values: { guard: { name: 'on|off', choices: ['on', 'off'] } }, flags: [] })).toThrow(/takes on, off/);
    expect(words(['dev', 'x', 'pvid'], { values: { dev: { name: 'IFNAME' } }, flags: ['pvid'] })).toEqual({ dev: 'x', pvid: true });
    // A keyword named like an Object.prototype member is not a keyword.
    expect(() => words(['constructor', 'x'], { values: { dev: { name: 'IFNAME' } }, flags: [] })).toThrow(/unexpected/);
  });
});

describe('port set words', () => {
  it('burst and pps go with the rate before them; rates and sizes as tc; off lifts a limit', () => {
    expect(portSetArgs(['ingress-rate', '100mbit', 'burst', '1mb', 'pps', '20000', 'egress-rate', '50mbit', 'burst', '256k', 'bpdu-guard', 'off']))
      .toEqual({ ingressRate: '100mbit', ingressBurst: '1mb', ingressPps: 20000, egressRate: '50mbit', egressBurst: '256k', bpduGuard: false });
    expect(portSetArgs(['egress-rate', 'off', 'storm', '100', 'ingress-rate', '1gbit'])).toEqual({ egressRate: 'off', storm: 100, ingressRate: '1gbit' });
    expect(portSetArgs(['guard', 'on', 'max-macs', '4', 'persistent', 'off'])).toEqual({ guard: 'on', maxMacs: 4, persistent: false });
    expect(portSetArgs(['egress-rate', '10mbit', 'pps', '1000', 'burst', '64k'])).toEqual({ egressRate: '10mbit', egressPps: 1000, egressBurst: '64k' });
  });

  it('refuses what does not fit as usage errors', () => {
    const bad: [string[], RegExp][] = [
      [[], /nothing to set/],
      [['burst', '1mb'], /burst' goes right after/],
      [['ingress-rate', '10mbit', 'guard', 'on', 'burst', '1mb'], /burst' goes right after/],
      [['ingress-rate', 'off', 'burst', '1mb'], /burst' goes right after/],
      [['egress-rate', 'off', 'pps', '100'], /pps' goes right after the ingress-rate or egress-rate/],
      [['guard', 'on', 'pps', '100'], /pps' goes right after/],
      [['ingress-rate', '10mbit', 'pps', '0'], /at least 1/],
      [['ingress-rate', '10 furlongs'], /ingress-rate 10 furlongs: bad rate/],
      [['ingress-rate', '2tbit'], /out of range/],
      [['egress-rate', '10mbit', 'burst', '10'], /burst 10: burst 10 is out of range/],
      [['ingress-rate', '10mbit', 'ingress-rate', '20mbit'], /given twice/],
      [['ingress-rate', '10mbit', 'burst', '1mb', 'burst', '2mb'], /given twice for ingress-rate/],
      [['bpdu-guard', 'maybe'], /takes on, off/],
      [['egress-rate'], /needs a value/],
    ];
    for (const [list, msg] of bad) {
      expect(() => portSetArgs(list), list.join(' ')).toThrow(UsageError);
      expect(() => portSetArgs(list), list.join(' ')).toThrow(msg);
    }
  });
});

describe('packages/cli/README.md verb table', () => {
  /** The table rows: first cell's code spans and the whole row text. */
  function rows(): { verbs: string[]; text: string }[] {
    const text = readFileSync(README, 'utf8');
    const section = text.slice(text.indexOf('## CLI'), text.indexOf('## Control protocol'));
    return section.split('\n').filter((l) => l.startsWith('| `')).map((l) => {
      const first = l.split(' | ')[0];
      return { verbs: [...first.matchAll(/`([^`]+)`/g)].map((m) => m[1]), text: l };
    });
  }

  /** A row names a command when one of its code spans starts with the command's path. */
  const rowOf = (path: string): { verbs: string[]; text: string } | undefined =>
    rows().find((r) => r.verbs.some((v) => v === path || v.startsWith(`${path} `)));

  it('has a row for every command, listing every flag and keyword it takes', () => {
    const problems: string[] = [];
    for (const n of leafCommands(buildProgram())) {
      if (n.path === 'help') continue;
      const row = rowOf(n.path);
      if (row === undefined) {
        problems.push(`no row for ${n.path}`);
        continue;
      }
      for (const o of n.cmd.options) {
        if (o.long === '--json') {
          if (!/--json|-j\b/.test(row.text)) problems.push(`${n.path}: --json missing`);
        } else if (!row.text.includes(o.long!)) problems.push(`${n.path}: ${o.long} missing`);
      }
      for (const k of [...Object.keys(n.keywords?.values ?? {}), ...(n.keywords?.flags ?? [])]) {
        if (['static', 'permanent', 'master'].includes(k)) continue; // bridge(8) words accepted and ignored
        if (!new RegExp(`\\b${k}\\b`).test(row.text)) problems.push(`${n.path}: keyword ${k} missing`);
      }
    }
    expect(problems).toEqual([]);
  });

  it('names no command that does not exist', () => {
    const paths = new Set(leafCommands(buildProgram()).map((n) => n.path));
    const unknown = rows().flatMap((r) => r.verbs).filter((v) => {
      const ws = v.split(' ');
      // The longest prefix of the span that is a command path.
      for (let i = ws.length; i > 0; i--) if (paths.has(ws.slice(0, i).join(' '))) return false;
      return true;
    });
    expect(unknown).toEqual([]);
  });
});

describe('show\'s daemon line', () => {
  it('says whether the daemon has a session (scheduling group) of its own, and its nice', () => {
    expect(daemonLine({ pid: 9, nice: -10, session: { pid: 9, sid: 9, own: true, autogroup: '/autogroup-31 nice 0' } }))
      .toBe('daemon: pid 9, own session, /autogroup-31 nice 0, nice -10');
    expect(daemonLine({ pid: 9, nice: 0, session: { pid: 9, sid: 4, own: false, autogroup: null } }))
      .toBe('daemon: pid 9, in its starter\'s session 4 (ownSession: true for its own), nice 0');
  });
  it('says whether V8\'s memory reducer runs, when the daemon says', () => {
    const session = { pid: 9, sid: 9, own: true, autogroup: null };
    expect(daemonLine({ pid: 9, nice: 0, session, memoryReducer: false })).toBe('daemon: pid 9, own session, nice 0, V8 memory reducer off');
    expect(daemonLine({ pid: 9, nice: 0, session, memoryReducer: true })).toBe('daemon: pid 9, own session, nice 0, V8 memory reducer on');
  });
  it('prints nothing for a daemon that does not say (an older build)', () => {
    expect(daemonLine({ pid: 9, version: '1' })).toBe('');
    expect(daemonLine('pong')).toBe('');
    expect(daemonLine(null)).toBe('');
  });
});

describe('views', () => {
  it('show: the options column tells guards, storm control, MAC limit and persistence', () => {
    expect(portOptions({})).toBe('-');
    expect(portOptions({ bondMode: 'active-backup', members: 'eth1,eth2', activeMember: 'eth2' })).toBe('bond active-backup eth1,eth2 (active eth2)');
    expect(portOptions({ guard: { dhcp: true, ipSource: true }, stormControl: { pps: 100 }, maxMacs: 4, persistent: true }))
      .toBe('guard, storm 100/s, max-macs 4, persistent');
    expect(portOptions({ guard: { dhcp: true, ipSource: false } })).toBe('guard dhcp-only');
    expect(portOptions({ guard: { dhcp: false, ipSource: true } })).toBe('guard ip-only');
    expect(portOptions({ guard: { dhcp: false, ipSource: false, ra: true, dhcpv6: true, ipv6Source: true } })).toBe('guard ipv6-only');
  });

  it('show: bpdu-guard and rate limits in the options column', () => {
    expect(portOptions({ bpduGuard: true, limits: 'in 100mbit/1mb, out 50mbit/256kb' })).toBe('bpdu-guard, in 100mbit/1mb, out 50mbit/256kb');
    expect(portOptions({ bpduGuard: false })).toBe('-');
  });

  it('show: a bridge\'s loop protection column', () => {
    expect(loopText({ flapMoves: 10, flapHoldSec: 30, bpduRecoverySec: 300 })).toBe('mac-flap 10/s hold 30s, bpdu-recovery 300s');
    expect(loopText({ flapMoves: 0, flapHoldSec: 30, bpduRecoverySec: 60 })).toBe('mac-flap off, bpdu-recovery 60s');
    expect(loopText({ flapMoves: 0, flapHoldSec: 30, bpduRecoverySec: 60 }, 262144)).toBe('mac-flap off, bpdu-recovery 60s, read-quantum 256kb');
    expect(loopText({ flapMoves: 0, flapHoldSec: 30, bpduRecoverySec: 60 }, 0)).toBe('mac-flap off, bpdu-recovery 60s, read-quantum off');
    expect(loopText({ flapMoves: 0, flapHoldSec: 30, bpduRecoverySec: 60 }, 262144, 'frames', 16)).toBe('mac-flap off, bpdu-recovery 60s, read-share frames 16');
    expect(loopText({ flapMoves: 0, flapHoldSec: 30, bpduRecoverySec: 60 }, 262144, 'bytes', 16)).toBe('mac-flap off, bpdu-recovery 60s, read-quantum 256kb');
    // Sparse-first service is said whichever way it is (on by default).
    expect(loopText({ flapMoves: 0, flapHoldSec: 30, bpduRecoverySec: 60 }, 262144, 'frames', 16, true)).toBe('mac-flap off, bpdu-recovery 60s, read-share frames 16, read-sparse on');
    expect(loopText({ flapMoves: 0, flapHoldSec: 30, bpduRecoverySec: 60 }, 262144, 'frames', 16, false)).toBe('mac-flap off, bpdu-recovery 60s, read-share frames 16, read-sparse off');
  });

  it('evpn show: a neighbour\'s graceful restart column', () => {
    const g = { advertised: true, received: true, peerRestartTime: 120, peerRestarting: false };
    expect(evpnGr(g)).toBe('ours offered, peer\'s 120s');
    expect(evpnGr({ ...g, peerRestarting: true })).toBe('ours offered, peer\'s 120s, peer restarting');
    expect(evpnGr({ ...g, received: false })).toBe('ours offered, peer\'s none');
    expect(evpnGr({ ...g, advertised: false, received: false })).toBe('ours off, peer\'s none');
    expect(evpnGr(null)).toBe('-');
  });

  it('evpn show: duplicate MAC detection, its settings and the MACs it flagged', () => {
    const d = { enabled: true, maxMoves: 5, windowSeconds: 180, freeze: 'permanent', tracked: 2, max: 8192, duplicates: 1, detectedTotal: 1, untracked: 0 };
    const dup = { mac: '02:00:00:00:00:01', moves: 5, detectedAt: '2026-01-01T00:00:00.000Z', lastMoveTo: 'local', held: true, heldMoves: 3 };
    const text = dupText({ dupDetect: d, vnis: [{ vni: 100, duplicates: [dup] }, { vni: 200, duplicates: [] }] });
    expect(text.split('\n')[0]).toBe('duplicate MAC detection: 5 moves in 180s, freeze until cleared; 1 flagged, 1 detected since start, 2/8192 tracked');
    expect(text).toMatch(/100 +02:00:00:00:00:01 +5 +2026-01-01T00:00:00.000Z +local +held +3/);
    expect(dupText({ dupDetect: { ...d, freeze: false, duplicates: 0, untracked: 4 }, vnis: [] })).toBe('duplicate MAC detection: 5 moves in 180s, freeze off (flag only); 0 flagged, 1 detected since start, 2/8192 tracked, 4 moves untracked (table full)\n');
    expect(dupText({ dupDetect: { ...d, freeze: 600 }, vnis: [] })).toMatch(/freeze 600s;/);
    expect(dupText({ dupDetect: { ...d, enabled: false }, vnis: [] })).toBe('duplicate MAC detection: off\n');
  });

  it('evpn show: a neighbour\'s route limit column', () => {
    const l = { maxPrefixes: 20000, exceeded: 0, lastExceeded: '', heldDown: false, restartAt: '' };
    expect(evpnLimit(l)).toBe('20000');
    expect(evpnLimit({ ...l, maxPrefixes: 0 })).toBe('none');
    expect(evpnLimit({ ...l, exceeded: 2, lastExceeded: '2026-12-07T06:30:12.345Z', heldDown: true, restartAt: '2026-12-07T06:35:12.345Z' }))
      .toBe('20000, exceeded 2x (last 2026-12-07T06:30:12Z), down until 06:35:12Z');
    expect(evpnLimit({ ...l, exceeded: 1, lastExceeded: '2026-12-07T06:30:12.345Z', heldDown: true })).toBe('20000, exceeded 1x (last 2026-12-07T06:30:12Z), down until reload');
    expect(evpnLimit(null)).toBe('-');
  });

  it('monitor: one line per event, as bridge monitor prints them', () => {
    expect(monitorLine({ time: '2025-01-01T10:00:00.123Z', event: 'mac_learned', bridge: 'br0', vlan: 10, mac: '02:00:00:00:00:01', port: 'vm1' }))
      .toBe('[10:00:00.123] mac 02:00:00:00:00:01 vlan 10 learned on vm1 (br0)\n');
    expect(monitorLine({ event: 'dhcp_ack', router: 'r0', network: 'net10', ip: '10.0.10.100', mac: '02:00:00:00:00:01', port: 'vm1' }))
      .toBe('lease 10.0.10.100 granted to 02:00:00:00:00:01 on vm1 (r0/net10)\n');
    expect(monitorLine({ event: 'config_refused', error: 'bad' })).toBe('reload refused: bad\n');
    expect(monitorLine({ event: 'something_new', router: 'r0', x: 1 })).toBe('something_new {"x":1} (r0)\n');
  });
});

describe('vswitch set / settings: poll before sleep', () => {
  it('parses poll-us (0-1000, off) and poll-budget-ms (1-1000), refusing the rest with a usage error', () => {
    expect(parsePollUs('50')).toBe(50);
    expect(parsePollUs('off')).toBe(0);
    expect(parsePollUs('0')).toBe(0);
    expect(parsePollUs('1000')).toBe(1000);
    for (const bad of ['1001', '-1', '2.5', 'on', '']) expect(() => parsePollUs(bad)).toThrow(UsageError);
    expect(parsePollBudget('200')).toBe(200);
    for (const bad of ['0', '1001', 'off', '1e3']) expect(() => parsePollBudget(bad)).toThrow(UsageError);
  });

  it('show\'s settings line: off, or the window, budget and counters, and whether the CLI set it', () => {
    expect(settingsLine({ pollBeforeSleepUs: 0, pollBeforeSleepBudgetMs: 200, overrides: [] })).toBe('poll before sleep: off');
    expect(settingsLine({ pollBeforeSleepUs: 0, pollBeforeSleepBudgetMs: 200, overrides: ['pollBeforeSleepUs'] })).toBe('poll before sleep: off (set at runtime)');
    expect(settingsLine({
      pollBeforeSleepUs: 50, pollBeforeSleepBudgetMs: 200, overrides: [],
      pollBeforeSleep: { windowUs: 20, hits: 7, misses: 3, spinMs: 0.25, overBudget: 0 },
    })).toBe('poll before sleep: up to 50 µs, budget 200 ms/s, window 20 µs, 7 hits / 3 misses, 0.3 ms polled');
    // The sleeps left unpolled, by reason, the hits served inside the poll and the last CPU pressure it read.
    expect(settingsLine({
      pollBeforeSleepUs: 50, pollBeforeSleepBudgetMs: 200, overrides: ['pollBeforeSleepUs'],
      pollBeforeSleep: { windowUs: 40, hits: 9, misses: 1, spinMs: 2, overBudget: 3, hostBusy: 120, served: 8, pressurePermille: 255 },
    })).toBe('poll before sleep: up to 50 µs, budget 200 ms/s, window 40 µs, 9 hits (8 served in the poll) / 1 misses, 2.0 ms polled, '
      + '3 sleeps over budget, 120 sleeps unpolled (host busy), CPU pressure 25.5 % (set at runtime)');
    expect(settingsLine(undefined)).toBe('');
    expect(settingsLine({ pid: 1 })).toBe('');
  });

  it('tap-write-batch on|off, and its line: off, on with its counters, or unavailable with the reason', () => {
    expect(parseOnOff('tap-write-batch', 'on')).toBe(true);
    expect(parseOnOff('tap-write-batch', 'off')).toBe(false);
    for (const bad of ['true', '1', '', 'ON']) expect(() => parseOnOff('tap-write-batch', bad)).toThrow(UsageError);
    const base = { pollBeforeSleepUs: 0, pollBeforeSleepBudgetMs: 200 };
    const twb = (want: boolean, on: boolean, error: string | null) => ({ want, on, error, writes: 300, flushes: 20 });
    expect(settingsLine({ ...base, overrides: [], tapWriteBatch: twb(false, false, null) }))
      .toBe('poll before sleep: off\ntap write batch: off');
    // Only the setting the CLI changed says so.
    expect(settingsLine({ ...base, overrides: ['tapWriteBatch'], tapWriteBatch: twb(true, true, null) }))
      .toBe('poll before sleep: off\ntap write batch: io_uring, 300 replayed frames in 20 flushes (set at runtime)');
    expect(settingsLine({ ...base, overrides: [], tapWriteBatch: twb(true, false, 'EPERM') }))
      .toBe('poll before sleep: off\ntap write batch: unavailable (EPERM), writev');
  });

  it('turn-yield-us N|off, and its line', () => {
    expect(parseTurnYieldUs('500')).toBe(500);
    expect(parseTurnYieldUs('off')).toBe(0);
    expect(parseTurnYieldUs('0')).toBe(0);
    for (const bad of ['-1', '100001', '2.5', '', 'on']) expect(() => parseTurnYieldUs(bad)).toThrow(UsageError);
    const base = { pollBeforeSleepUs: 0, pollBeforeSleepBudgetMs: 200 };
    expect(settingsLine({ ...base, overrides: [], turnYield: { us: 500, yields: 7 } }))
      .toBe('poll before sleep: off\nturn yield: at most every 500 µs while the host is contended, 7 yields');
    expect(settingsLine({ ...base, overrides: [], turnYield: { us: 500, yields: 7, awayMs: 0.8123 } }))
      .toBe('poll before sleep: off\nturn yield: at most every 500 µs while the host is contended, 7 yields (0.8 ms away)');
    expect(settingsLine({ ...base, overrides: [], turnYield: { us: 500, yields: 0, awayMs: 0 } }))
      .toBe('poll before sleep: off\nturn yield: at most every 500 µs while the host is contended, 0 yields');
    expect(settingsLine({ ...base, overrides: ['turnYieldUs'], turnYield: { us: 0, yields: 7 } }))
      .toBe('poll before sleep: off\nturn yield: off (set at runtime)');
  });
});
