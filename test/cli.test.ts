/*
 * The CLI contract (packages/cli/README.md): verbs against a real daemon, JSON
 * views that parse, and errors that are one line on stderr with a non-zero exit
 * (1 for errors, 2 for usage errors): unknown bridge, port already in another
 * bridge, VID out of range, daemon not running, no permission on the socket, a
 * broken or malformed config file (file, key path and line named).
 *
 * The operator's habits (issue 18; each failed on main): --version/-V, -j for
 * --json, a bad --log-level or --metrics is a usage error (exit 2), every group
 * has a description in --help, addif of an existing non-TAP says to use --attach
 * (main: "TUNSETIFF: Invalid argument"), delbr names every router network on the
 * bridge, fdb flush (by bridge, port, VLAN, learned only), vlan add refusing to
 * switch a guarded port's guards off without --force and saying when it moves a PVID,
 * and config check with the daemon's own error text.
 */
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Daemon, type CliResult, allObjects, findPort, macEntries, runCli, startDaemon, toYaml,
} from './helpers/daemon.js';
import { REPO, addVeth, cleanup, ifname, nsExec, sh, tempDir, trackLink } from './helpers/run.js';
import { linkExists, makeVm, pingUntil } from './helpers/vm.js';

const P1 = ifname('p1');
const P2 = ifname('p2');
const NOBODY = 'setpriv --reuid=nobody --regid=nogroup --clear-groups';

/** One line on stderr, nothing on stdout, the given exit code. */
function expectOneLineError(r: CliResult, code: number | 'nonzero', what: string): string {
  const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
  expect(lines.length, `${what}: stderr must be exactly one line, got:\n${r.stderr}`).toBe(1);
  if (code === 'nonzero') expect(r.code, `${what}: exit status`).not.toBe(0);
  else expect(r.code, `${what}: exit status (stderr: ${r.stderr.trim()})`).toBe(code);
  expect(r.stdout.trim(), `${what}: stdout`).toBe('');
  return lines[0];
}

describe('ownSession at start', () => {
  it('the daemon leads a session of its own from the start and says so in daemon_started', async () => {
    const o = await startDaemon({ ownSession: true, bridges: {} });
    try {
      const pid = o.proc.pid!;
      expect(Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')[3])).toBe(pid);
      expect(o.logsMatching('daemon_started')[0].obj).toMatchObject({ session: { pid, sid: pid, own: true } });
      expect(o.logsMatching('own_session_failed')).toHaveLength(0);
    } finally {
      await o.stop();
    }
  });
});

describe('V8 memory reducer', () => {
  it('off in the daemon started as installed (main.js through its interpreter line), on under a plain `node main.js`; said in daemon_started and show (from ping)', async () => {
    const installed = await startDaemon({ bridges: {} }, { direct: true });
    const plain = await startDaemon({ bridges: {} });
    try {
      expect(readFileSync(`/proc/${installed.proc.pid}/cmdline`, 'utf8').split('\0')).toContain('--no-memory-reducer');
      expect(installed.logsMatching('daemon_started')[0].obj).toMatchObject({ memoryReducer: false });
      expect(plain.logsMatching('daemon_started')[0].obj).toMatchObject({ memoryReducer: true });
      expect((await installed.ok(['show'])).stdout).toMatch(/^daemon: pid \d+, .*, V8 memory reducer off$/m);
      expect((await plain.ok(['show'])).stdout).toMatch(/^daemon: pid \d+, .*, V8 memory reducer on$/m);
    } finally {
      await installed.stop();
      await plain.stop();
    }
  });
});

describe('vswitch CLI against a running daemon', () => {
  let d: Daemon;

  beforeAll(async () => {
    d = await startDaemon({
      nice: -10,
      bridges: {
        br0: { ports: { [P1]: { type: 'tap', vlan: { mode: 'access', vid: 10 } } } },
        br1: { ports: { [P2]: { type: 'tap' } } },
      },
    });
  });

  afterAll(async () => {
    await d?.stop();
    await cleanup();
  });

  it('show --json parses and lists bridges, ports, states and VLAN modes', async () => {
    const r = await d.ok(['show'], { json: true });
    const names = allObjects(r.json).filter((o) => Array.isArray(o.ports)).map((o) => o.name);
    expect(names.sort()).toEqual(['br0', 'br1']);
    const p1 = findPort(r.json, P1);
    expect(p1?.state).toBe('up');
    expect(JSON.stringify(p1)).toMatch(/"access"/);
    const one = await d.ok(['show', 'br1'], { json: true });
    expect(allObjects(one.json).filter((o) => Array.isArray(o.ports)).map((o) => o.name)).toEqual(['br1']);
    // Plain output works too and names the port.
    const plain = await d.ok(['show']);
    expect(plain.stdout).toContain(P1);
    // The TAPs exist in the root namespace and are up.
    expect(await linkExists(P1)).toBe(true);
  });

  it('nice: the forwarding loop\'s thread runs at the config\'s value, said at start; a reload changes it', async () => {
    // /proc/PID/stat of the main thread (the thread group leader): field 19 is its nice value.
    const niceOf = (): number => Number(readFileSync(`/proc/${d.proc.pid}/stat`, 'utf8').split(') ')[1].split(' ')[16]);
    expect(niceOf()).toBe(-10);
    // The value it had before (niceWas): what the service manager gave it, here the test's own.
    expect(d.logsMatching('daemon_started')[0].obj).toMatchObject({ nice: -10, niceWas: expect.any(Number) });
    writeFileSync(d.configFile, readFileSync(d.configFile, 'utf8').replace(/^nice: -10$/m, 'nice: -5'));
    expect((await d.ok(['reload'])).stdout).toMatch(/nice -10 -> -5/);
    expect(niceOf()).toBe(-5);
  });

  it('ownSession: off by default the daemon stays in its starter\'s session; a reload that turns it on gives it its own, said by show', async () => {
    // /proc/PID/stat field 6: the session id (the name in field 2 has no ') ' here).
    const sidOf = (pid: number | 'self'): number => Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')[3]);
    const pid = d.proc.pid!;
    expect(sidOf(pid)).toBe(sidOf('self'));
    expect(d.logsMatching('daemon_started')[0].obj.session).toMatchObject({ pid, sid: sidOf('self'), own: false });
    expect((await d.ok(['show'])).stdout).toMatch(new RegExp(`daemon: pid ${pid}, in its starter's session ${sidOf('self')}.*nice -?\\d+`));
    // In its starter's session the group is left alone: its nice would lift everything started there.
    let mine: string | undefined;
    try { mine = readFileSync('/proc/self/autogroup', 'utf8').trim(); } catch { mine = undefined; }
    if (mine !== undefined) expect(readFileSync(`/proc/${pid}/autogroup`, 'utf8').trim()).toBe(mine);
    writeFileSync(d.configFile, `ownSession: true\n${readFileSync(d.configFile, 'utf8')}`);
    const reloaded = (await d.ok(['reload'])).stdout;
    expect(reloaded).toMatch(new RegExp(`session ${sidOf('self')} -> ${pid}`));
    expect(sidOf(pid)).toBe(pid);
    if (mine !== undefined) {
      // Its own scheduling group where the kernel groups tasks by session, at the loop's
      // nice (-5, the previous case's): a nice acts only inside its group (sched(7)).
      const group = readFileSync(`/proc/${pid}/autogroup`, 'utf8').trim();
      expect(group.split(' ')[0]).not.toBe(mine.split(' ')[0]);
      expect(group).toMatch(/ nice -5$/);
      expect(reloaded).toMatch(/autogroup nice 0 -> -5/);
      expect((await d.ok(['show'])).stdout).toMatch(new RegExp(`daemon: pid ${pid}, own session, /autogroup-\\d+ nice -5, nice -5`));
    } else {
      console.warn('cli.test: this kernel has no autogroups (/proc/self/autogroup): their nice is not checked');
      expect((await d.ok(['show'])).stdout).toMatch(new RegExp(`daemon: pid ${pid}, own session`));
    }
    // A session cannot be left: removing the key changes nothing.
    writeFileSync(d.configFile, readFileSync(d.configFile, 'utf8').replace(/^ownSession: true\n/m, ''));
    expect((await d.ok(['reload'])).stdout).not.toMatch(/session/);
    expect(sidOf(pid)).toBe(pid);
  });

  it('--socket works as well as VSWITCH_SOCKET', async () => {
    const r = await runCli(['show', '--json'], { socket: d.socket, socketFlag: true });
    expect(r.code, r.stderr).toBe(0);
    expect(() => JSON.parse(r.stdout)).not.toThrow();
  });

  it('the control socket is created with mode 0600', () => {
    expect((statSync(d.socket).mode & 0o777).toString(8)).toBe('600');
  });

  it('unknown bridge: one line, exit 1', async () => {
    const line = expectOneLineError(await d.cli(['addif', 'nosuch', ifname('x')]), 1, 'addif nosuch');
    expect(line).toMatch(/nosuch/);
    expect(await linkExists(ifname('x')), 'no TAP may be left behind').toBe(false);
    expectOneLineError(await d.cli(['showmacs', 'nosuch']), 1, 'showmacs nosuch');
    expectOneLineError(await d.cli(['delbr', 'nosuch']), 1, 'delbr nosuch');
  });

  it('port already in another bridge: one line, exit 1, nothing changed', async () => {
    const line = expectOneLineError(await d.cli(['addif', 'br1', P1]), 1, 'addif br1 P1 (P1 is in br0)');
    expect(line).toContain(P1);
    const show = (await d.ok(['show'], { json: true })).json;
    const br1 = allObjects(show).find((o) => o.name === 'br1' && Array.isArray(o.ports));
    expect(br1.ports.map((p: any) => p.name)).toEqual([P2]);
    expect(findPort(show, P1)?.state).toBe('up');
    // Same bridge twice is an error too.
    expectOneLineError(await d.cli(['addif', 'br0', P1]), 1, 'addif br0 P1 again');
  });

  it('VID out of range: one line, non-zero exit, membership unchanged', async () => {
    for (const vid of ['5000', '4095', '0']) {
      const line = expectOneLineError(await d.cli(['vlan', 'add', 'dev', P1, 'vid', vid]), 'nonzero', `vlan add vid ${vid}`);
      expect(line).toMatch(new RegExp(`${vid}|1-4094|range`));
    }
    expectOneLineError(await d.cli(['addif', 'br0', ifname('x'), '--vlan', '5000']), 'nonzero', 'addif --vlan 5000');
    expect(await linkExists(ifname('x'))).toBe(false);
    const vs = (await d.ok(['vlan', 'show', 'dev', P1], { json: true })).json;
    expect(allObjects(vs).filter((o) => typeof o.vid === 'number').map((o) => o.vid)).toEqual([10]);
  });

  it('usage errors exit 2', async () => {
    expect((await d.cli(['frobnicate'])).code).toBe(2);
    expect((await d.cli(['addif', 'br0'])).code).toBe(2);
    expect((await d.cli(['vlan', 'add', 'dev', P1])).code).toBe(2);
    expect((await d.cli(['setageing', 'br0', 'soon'])).code).toBe(2);
  });

  it('daemon not running: one line, exit 1', async () => {
    const sock = join(tempDir('nosock'), 'none.sock');
    const line = expectOneLineError(await runCli(['show'], { socket: sock }), 1, 'show with no daemon');
    expect(line).toContain(sock);
    expect(line).toMatch(/not running|no such|ENOENT|connect/i);
    // A socket file nobody listens on (a daemon that died without unlinking).
    const stale = join(tempDir('stale'), 'stale.sock');
    await sh(`/usr/bin/python3 -c "import socket; socket.socket(socket.AF_UNIX).bind('${stale}')"`);
    const r2 = await runCli(['show'], { socket: stale });
    expectOneLineError(r2, 1, 'show on a stale socket');
  });

  it('no permission on the socket: one line, exit 1, as user nobody', async () => {
    const r = await d.cli(['show'], { asUser: NOBODY });
    const line = expectOneLineError(r, 1, 'show as nobody');
    expect(line).toMatch(/permission|EACCES/i);
  });

  it('addbr / delbr', async () => {
    await d.ok(['addbr', 'br9']);
    let names = allObjects((await d.ok(['show'], { json: true })).json).filter((o) => Array.isArray(o.ports)).map((o) => o.name);
    expect(names).toContain('br9');
    expectOneLineError(await d.cli(['addbr', 'br9']), 1, 'addbr existing');
    const port = ifname('p9');
    trackLink(port);
    await d.ok(['addif', 'br9', port, '--vlan', '9']);
    expect(await linkExists(port)).toBe(true);
    await d.ok(['delbr', 'br9']);
    names = allObjects((await d.ok(['show'], { json: true })).json).filter((o) => Array.isArray(o.ports)).map((o) => o.name);
    expect(names).not.toContain('br9');
    // delbr closes its ports: the non-persistent TAP is gone.
    expect(await linkExists(port)).toBe(false);
    expectOneLineError(await d.cli(['delbr', 'br9']), 1, 'delbr again');
    // The port name is free again.
    await d.ok(['addif', 'br1', port]);
    await d.ok(['delif', 'br1', port]);
  });

  it('setageing', async () => {
    await d.ok(['setageing', 'br0', '17']);
    const br0 = allObjects((await d.ok(['show', 'br0'], { json: true })).json).find((o) => o.name === 'br0');
    const ageing = Object.entries(br0).find(([k]) => /age?ing/i.test(k))?.[1];
    expect(ageing, JSON.stringify(br0)).toBe(17);
    expectOneLineError(await d.cli(['setageing', 'nosuch', '10']), 1, 'setageing nosuch');
    expect((await d.cli(['setageing', 'br0', '-5'])).code).not.toBe(0);
  });

  it('fdb add / show / del', async () => {
    const mac = '02:00:00:aa:bb:01';
    await d.ok(['fdb', 'add', mac, 'dev', P1, 'vlan', '10']);
    // Without vlan: the port's PVID (10).
    const mac2 = '02:00:00:aa:bb:02';
    await d.ok(['fdb', 'add', mac2, 'dev', P1]);
    let all = macEntries((await d.ok(['fdb', 'show'], { json: true })).json);
    expect(all.filter((e) => e.mac === mac).map((e) => [e.port, e.vlan, e.raw.static])).toEqual([[P1, 10, true]]);
    expect(all.filter((e) => e.mac === mac2).map((e) => [e.port, e.vlan])).toEqual([[P1, 10]]);
    // Also in showmacs br0 and fdb show br br0, not in br br1.
    expect(macEntries((await d.ok(['showmacs', 'br0'], { json: true })).json).some((e) => e.mac === mac)).toBe(true);
    expect(macEntries((await d.ok(['fdb', 'show', 'br', 'br0'], { json: true })).json).some((e) => e.mac === mac)).toBe(true);
    expect(macEntries((await d.ok(['fdb', 'show', 'br', 'br1'], { json: true })).json).some((e) => e.mac === mac)).toBe(false);
    // A VLAN the port is not in: error.
    expectOneLineError(await d.cli(['fdb', 'add', '02:00:00:aa:bb:03', 'dev', P1, 'vlan', '20']), 1, 'fdb add in a foreign VLAN');
    expectOneLineError(await d.cli(['fdb', 'add', 'zz:00:00:aa:bb:03', 'dev', P1]), 'nonzero', 'fdb add bad MAC');
    expectOneLineError(await d.cli(['fdb', 'add', '02:00:00:aa:bb:03', 'dev', ifname('none')]), 1, 'fdb add unknown port');
    await d.ok(['fdb', 'del', mac, 'dev', P1, 'vlan', '10']);
    await d.ok(['fdb', 'del', mac2, 'dev', P1]);
    all = macEntries((await d.ok(['fdb', 'show'], { json: true })).json);
    expect(all.filter((e) => e.mac === mac || e.mac === mac2)).toEqual([]);
    expectOneLineError(await d.cli(['fdb', 'del', mac, 'dev', P1, 'vlan', '10']), 1, 'fdb del of a missing entry');
  });

  it('stats --json has per-port counters and drops', async () => {
    const s = (await d.ok(['stats'], { json: true })).json;
    const p1 = findPort(s, P1);
    for (const k of ['rxFrames', 'rxBytes', 'txFrames', 'txBytes']) expect(typeof p1?.[k], `${k} in ${JSON.stringify(p1)}`).toBe('number');
    expect(typeof p1.drops).toBe('object');
  });

  it('the daemon is still alive after all these errors', async () => {
    expect(d.alive()).toBe(true);
    await d.ok(['show']);
  });
});

describe('vswitch daemon with a bad config', () => {
  afterAll(cleanup);

  async function failingStart(text: string): Promise<{ d: Daemon; lines: string[] }> {
    const d = await startDaemon(null, { configText: text, noWait: true });
    const exited = await d.waitExit(10_000);
    if (!exited) await d.stop();
    expect(exited, 'daemon must exit on a bad config').toBe(true);
    expect(d.exitCode, `exit code (log: ${d.logText()})`).not.toBe(0);
    expect(d.exitCode).not.toBeNull();
    return { d, lines: d.logs.map((l) => l.raw) };
  }

  it('an invalid value: the error names the file, the key path and the line', async () => {
    const port = ifname('vm1');
    trackLink(port);
    const text = [
      'bridges:',               // 1
      '  br0:',                 // 2
      '    ageing: 300',        // 3
      '    ports:',             // 4
      `      ${port}:`,         // 5
      '        type: tap',      // 6
      '        vlan:',          // 7
      '          mode: access', // 8
      '          vid: 5000',    // 9
      '',
    ].join('\n');
    const { d, lines } = await failingStart(text);
    const line = lines.find((l) => l.includes(d.configFile));
    expect(line, `a line naming ${d.configFile}:\n${lines.join('\n')}`).toBeDefined();
    expect(line).toContain(`bridges.br0.ports.${port}.vlan.vid`);
    expect(line).toMatch(/\bline 9\b/);
    expect(line).toMatch(/5000/);
    expect(await linkExists(port), 'no TAP created from a rejected config').toBe(false);
  });

  it('an unknown key and a wrong type are named with their path and line', async () => {
    const port = ifname('vm2');
    trackLink(port);
    const text = [
      'bridges:',                 // 1
      '  br0:',                   // 2
      '    ageing: soon',         // 3
      '    ports:',               // 4
      `      ${port}:`,           // 5
      '        type: tapp',       // 6
      '',
    ].join('\n');
    const { d, lines } = await failingStart(text);
    const all = lines.join('\n');
    expect(all).toContain(d.configFile);
    // At least the first problem is reported with key path and line.
    const ageing = lines.find((l) => l.includes('bridges.br0.ageing'));
    const type = lines.find((l) => l.includes(`bridges.br0.ports.${port}.type`));
    expect(ageing ?? type, `key path in:\n${all}`).toBeDefined();
    if (ageing) expect(ageing).toMatch(/\bline 3\b/);
    if (type) expect(type).toMatch(/\bline 6\b/);
    expect(await linkExists(port)).toBe(false);
  });

  it('malformed YAML: exits non-zero naming the file and a line', async () => {
    const text = [
      'bridges:',            // 1
      '  br0:',              // 2
      '    ports: [a, b',    // 3: unclosed flow sequence
      '    ageing: 10',      // 4
      '',
    ].join('\n');
    const { d, lines } = await failingStart(text);
    const line = lines.find((l) => l.includes(d.configFile));
    expect(line, `a line naming ${d.configFile}:\n${lines.join('\n')}`).toBeDefined();
    expect(line).toMatch(/\bline [345]\b/);
  });

  it('a config file that does not exist: exits non-zero naming it', async () => {
    const dir = tempDir('nocfg');
    const missing = join(dir, 'missing.yaml');
    const r = await runCli(['daemon', '--config', missing, '--socket', join(dir, 's.sock')], { timeoutMs: 10_000 });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(missing);
  });
});

describe('the operator\'s habits: version, -j, usage errors, help, hints, fdb flush, vlan add --force, config check', () => {
  let d: Daemon;
  const A = ifname('ha');
  const B = ifname('hb');
  const VETH = ifname('hv');

  beforeAll(async () => {
    [A, B].forEach(trackLink);
    d = await startDaemon({
      bridges: {
        br0: { ports: { [A]: { type: 'tap', vlan: { mode: 'access', vid: 10 } }, [B]: { type: 'tap', vlan: { mode: 'access', vid: 10 } } } },
        brn: {},
      },
      routers: {
        r0: {
          networks: {
            net10: { bridge: 'br0', vlan: 10, address: '10.74.10.1/24', dhcp: { pool: ['10.74.10.100-10.74.10.120'] } },
            n51: { bridge: 'brn', vlan: 51, address: '10.74.51.1/24' },
            n52: { bridge: 'brn', vlan: 52, address: '10.74.52.1/24' },
          },
        },
      },
    });
  });
  afterAll(async () => {
    await d?.stop();
    await cleanup();
  });

  it('--version and -V print the version and exit 0 (main: unknown option, exit 2, full help)', async () => {
    const pkg = JSON.parse(readFileSync(`${REPO}/packages/cli/package.json`, 'utf8'));
    for (const flag of ['--version', '-V']) {
      const r = await runCli([flag]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.trim()).toBe(`vswitch ${pkg.version}`);
    }
  });

  it('-j is --json, before or after the verb', async () => {
    for (const args of [['show', '-j'], ['-j', 'show'], ['vlan', 'show', '-j'], ['-j', 'fdb', 'show']]) {
      const r = await d.cli(args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
      expect(() => JSON.parse(r.stdout), args.join(' ')).not.toThrow();
    }
  });

  it('usage errors exit 2: a bad --log-level (main: exit 1), a bad --metrics, an unknown fdb flush word', async () => {
    const dir = tempDir('usage');
    const r = await runCli(['daemon', '--log-level', 'verbose', '--socket', `${dir}/s.sock`], { timeoutMs: 10_000 });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/verbose.*Allowed choices are trace, debug, info, warn, error, fatal/);
    const m = await runCli(['daemon', '--metrics', 'everywhere', '--socket', `${dir}/s.sock`], { timeoutMs: 10_000 });
    expect(m.code, m.stderr).toBe(2);
    expect((await d.cli(['fdb', 'flush', 'colour', 'red'])).code).toBe(2);
    expect((await d.cli(['vlan', 'add', 'dev', A, 'vid', '30', 'sideways'])).code).toBe(2);
  });

  it('--help describes every group and its subcommands (main: vlan and fdb had none)', async () => {
    const top = (await runCli(['--help'])).stdout;
    for (const verb of ['vlan', 'fdb', 'port', 'monitor', 'config', 'router', 'dhcp', 'nat']) {
      expect(top, verb).toMatch(new RegExp(`^  ${verb}\\b.*\\S\\s{2,}\\S`, 'm'));
    }
    for (const group of ['vlan', 'fdb', 'nat forward', 'dhcp reservation', 'port', 'config']) {
      const h = await runCli([...group.split(' '), '--help']);
      expect(h.code).toBe(0);
      const cmds = h.stdout.slice(h.stdout.indexOf('Commands:')).split('\n').slice(1).filter((l) => /^  \S/.test(l));
      expect(cmds.length, group).toBeGreaterThan(0);
      for (const l of cmds) expect(l, `${group}: ${l}`).toMatch(/^  \S.*\s{2,}\S/);
    }
  });

  it('addif of an existing non-TAP interface says so and to use --attach (main: TUNSETIFF: Invalid argument)', async () => {
    await addVeth(VETH, ifname('hvp'));
    const r = await d.cli(['addif', 'br0', VETH]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(new RegExp(`${VETH} exists and is not a TAP: use --attach`));
    expect(findPort(await d.showJson(), VETH)).toBeUndefined();
    expect(await linkExists(VETH), 'the veth is untouched').toBe(true);
    await d.ok(['addif', 'br0', VETH, '--attach']);
    await d.ok(['delif', 'br0', VETH]);
  });

  it('delbr of a bridge carrying router networks names each and where to remove it', async () => {
    const r = await d.cli(['delbr', 'brn']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/bridge brn carries router networks n51 \(router r0\), n52 \(router r0\)/);
    expect(r.stderr).toMatch(/routers\.r0\.networks\.n51, routers\.r0\.networks\.n52 from the config file/);
    expect((await d.showJson()).map((b: any) => b.name)).toContain('brn');
  });

  it('fdb flush: learned entries of a port only with dynamic, static ones too without, by VLAN and bridge, kept after a reload', async () => {
    const va = await makeVm('ha', A, '10.74.10.11/24');
    const vb = await makeVm('hb', B, '10.74.10.12/24');
    await d.ok(['port', 'set', A, 'guard', 'off']);
    await d.ok(['port', 'set', B, 'guard', 'off']);
    // No frame after the ping may re-learn a flushed MAC before the check: no IPv6 (RS, DAD, MLD)
    // and permanent neighbours (no ARP probe of a stale entry).
    for (const [v, peer] of [[va, vb], [vb, va]]) {
      await nsExec(v.ns, `sysctl -qw net.ipv6.conf.all.disable_ipv6=1; ip neigh replace ${peer.ip} lladdr ${peer.mac} dev ${v.ifname} nud permanent`);
    }
    expect(await pingUntil(va.ns, vb.ip)).toBe(true);
    const macs = async (): Promise<{ mac: string; port: string; vlan: number; raw: any }[]> => macEntries((await d.ok(['showmacs', 'br0'], { json: true })).json);
    await d.ok(['fdb', 'add', '02:00:00:00:74:01', 'dev', A]);
    expect((await macs()).filter((e) => e.port === A).map((e) => e.mac).sort()).toEqual(['02:00:00:00:74:01', va.mac]);
    let r = await d.ok(['fdb', 'flush', 'dev', A, 'dynamic']);
    expect(r.stdout).toMatch(/flushed 1 entries \(1 learned, 0 static\)/);
    expect((await macs()).filter((e) => e.port === A).map((e) => e.mac)).toEqual(['02:00:00:00:74:01']);
    expect((await macs()).some((e) => e.port === B && e.mac === vb.mac), 'the other port keeps its entry').toBe(true);
    r = await d.ok(['fdb', 'flush', 'br', 'br0', 'vlan', '10'], { json: true });
    expect(r.json.static).toBe(1);
    expect((await macs()).filter((e) => e.port === A || e.port === B).filter((e) => e.raw.static || e.mac === vb.mac)).toEqual([]);
    // The static entry stays flushed (kept in runtime.json) across a reload of the unchanged file.
    await d.ok(['reload']);
    expect((await macs()).some((e) => e.mac === '02:00:00:00:74:01')).toBe(false);
    expect((await d.cli(['fdb', 'flush', 'dev', ifname('none')])).code).toBe(1);
    expect((await d.cli(['fdb', 'flush', 'vlan', '5000'])).code).toBe(1);
  });

  it('vlan add: switching a guarded port\'s guards off is refused without --force; a PVID move is done and said', async () => {
    await d.ok(['port', 'set', A, 'guard', 'default']);
    const before = (await d.ok(['vlan', 'show', 'dev', A], { json: true })).json;
    // The README example of main: on a guarded access port it moved the VM's traffic to VLAN 30 and opened the port to spoofing.
    const r = await d.cli(['vlan', 'add', 'dev', A, 'vid', '30', 'pvid', 'untagged']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    // The VLAN's router serves DHCP, so the IPv6 guards are on by default too (guards.ts) and go off with the others.
    expect(r.stderr).toMatch(/its DHCP guard, IP source guard, RA guard, DHCPv6 guard and IPv6 source guard go off/);
    expect(r.stderr).toMatch(/its PVID moves from VLAN 10 to 30/);
    expect(r.stderr).toMatch(/the access port becomes a hybrid port/);
    expect(r.stderr).toMatch(/refused, nothing was changed \(vswitch port set \S+ guard on first keeps the guards; --force/);
    expect((await d.ok(['vlan', 'show', 'dev', A], { json: true })).json).toEqual(before);
    // A tagged VLAN added to a guarded access port turns it trunk and its guards off: refused too.
    expect((await d.cli(['vlan', 'add', 'dev', A, 'vid', '31'])).code).toBe(1);
    // Forced: done, every consequence printed and logged.
    const f = await d.cli(['vlan', 'add', 'dev', A, 'vid', '30', 'pvid', 'untagged', '--force']);
    expect(f.code, f.stderr).toBe(0);
    expect(f.stderr).toMatch(new RegExp(`^vswitch: warning: vlan add on ${A}: its DHCP guard, IP source guard, RA guard, DHCPv6 guard and IPv6 source guard go off`, 'm'));
    expect(f.stderr).toMatch(new RegExp(`^vswitch: warning: vlan add on ${A}: its PVID moves from VLAN 10 to 30`, 'm'));
    let p = findPort(await d.showJson(), A);
    expect(p.vlan).toMatchObject({ mode: 'hybrid', pvid: 30 });
    expect(p.guard).toBeUndefined();
    expect(d.logsMatching('vlan_change_side_effects').filter((l) => l.obj.forced === true).length).toBe(1);
    // Back to an access port in VLAN 10 (bridge(8)'s move: the new PVID, then the old VLAN out): no guard goes off
    // (they come back on), so it is done without --force, and the PVID move is said.
    const back = await d.cli(['vlan', 'add', 'dev', A, 'vid', '10', 'pvid', 'untagged']);
    expect(back.code, back.stderr).toBe(0);
    expect(back.stderr).toMatch(/warning: vlan add on \S+: its PVID moves from VLAN 30 to 10/);
    await d.ok(['vlan', 'del', 'dev', A, 'vid', '30']);
    p = findPort(await d.showJson(), A);
    expect(p.vlan).toMatchObject({ mode: 'access', pvid: 10 });
    expect(p.guard).toMatchObject({ dhcp: true, ipSource: true });
    // On an unguarded port a PVID move is done and said; adding a VLAN that changes nothing else is silent.
    await d.ok(['port', 'set', B, 'guard', 'off']);
    const moved = await d.cli(['vlan', 'add', 'dev', B, 'vid', '12', 'pvid', 'untagged']);
    expect(moved.code, moved.stderr).toBe(0);
    expect(moved.stderr).toMatch(/its PVID moves from VLAN 10 to 12/);
    const plain = await d.cli(['vlan', 'add', 'dev', B, 'vid', '40']);
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stderr).toBe('');
  });

  it('config check: exit 0 with a summary for a good file, 1 with the daemon\'s own error text for a bad one, no daemon needed', async () => {
    const ok = await runCli(['config', 'check', d.configFile], { socket: '/nonexistent/none.sock' });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/: ok \(2 bridges, 2 ports, 1 routers, 3 networks\)/);
    const dir = tempDir('chk');
    const bad = `${dir}/bad.yaml`;
    writeFileSync(bad, toYaml({ bridges: { br0: { ports: { [ifname('x')]: { type: 'tap', vlan: { mode: 'access', vid: 5000 } } } } } }));
    const c = await runCli(['config', 'check', bad]);
    expect(c.code).toBe(1);
    const daemon = await runCli(['daemon', '--config', bad, '--socket', `${dir}/s.sock`, '--state-dir', `${dir}/state`], { timeoutMs: 10_000 });
    expect(daemon.code).toBe(1);
    expect(c.stderr).toBe(daemon.stderr);
    expect(c.stderr).toMatch(/bad\.yaml: bridges\.br0\.ports\.\S+\.vlan\.vid \(line \d+\): must be 1-4094, got 5000/);
    const missing = await runCli(['config', 'check', `${dir}/none.yaml`]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/none\.yaml: cannot read config file/);
    expect((await runCli(['config', 'check'])).code).toBe(2);
    // The shipped configs pass.
    for (const f of ['docker/vswitch.yaml', 'scripts/lab.yaml']) expect((await runCli(['config', 'check', `${REPO}/${f}`])).code, f).toBe(0);
  });
});
