/*
 * Logs journald can filter, written without ever blocking forwarding (issue 18):
 *   - levels by name: `"level":"info"`, `"level":"warn"` (main: 30, 40);
 *   - with JOURNAL_STREAM naming the daemon's own stderr (device:inode, as systemd
 *     sets it), every line starts with its sd-daemon(3) priority, `<6>` info, `<4>`
 *     warning, so journald stores PRIORITY and `journalctl -p warning` filters; with
 *     a JOURNAL_STREAM that is not fd 2 (inherited by a redirected child), none;
 *   - a reader of stderr that stops reading does not stop the daemon: 1500 control
 *     requests that each log a line are answered while nobody reads stderr (main
 *     logged synchronously: the daemon blocked in write(2) once the pipe was full,
 *     and stopped answering); when it is read again every line is there, and after
 *     SIGTERM the last one is daemon_stopped;
 *   - a fatal start error (metrics port taken) comes after every log line written
 *     before it: the asynchronous logger is flushed before the last word;
 *   - guard drops (a VM sending from an address not bound to its port) are logged:
 *     a `guard_drop` warning for the port and reason within a second of the first
 *     drop, and one line however many hundreds follow (the next is a summary due a
 *     minute later; unit tests of guard-log.ts show the summing). Main logged none.
 */
import type { ChildProcess } from 'node:child_process';
import { createServer, type Server, createConnection } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startDaemon, toYaml } from './helpers/daemon.js';
import { MAIN_JS, cleanup, ifname, nsExec, nsExecR, q, sh, sleep, spawnTracked, tempDir, trackLink, waitFor } from './helpers/run.js';
import { makeVm } from './helpers/vm.js';

/** The daemon as a child whose stderr the test reads (or not) itself. */
function spawnDaemon(dir: string, config: unknown, { journal, extra = [] }: { journal?: 'own' | 'other'; extra?: string[] } = {}): ChildProcess {
  const cfg = join(dir, 'vswitch.yaml');
  writeFileSync(cfg, toYaml({ stateDir: join(dir, 'state'), metrics: { listen: 'off' }, ...(config as object) }));
  const argv = [MAIN_JS, 'daemon', '--config', cfg, '--socket', join(dir, 's.sock'), ...extra].map(q).join(' ');
  // JOURNAL_STREAM as systemd sets it: the device and inode of the stream stderr is (here the pipe to the test).
  const env = journal === 'own' ? 'JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) '
    : journal === 'other' ? 'JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/1) ' : '';
  return spawnTracked('bash', ['-c', `${env ? `export ${env}; ` : ''}exec ${q(process.execPath)} ${argv}`], {
    env: { ...process.env, JOURNAL_STREAM: '' }, cwd: dir,
  }, 'TERM');
}

/** Sends `n` requests of `cmd` on one connection, pipelined; resolves with the replies once all came. */
function pipeline(sock: string, cmd: string, args: Record<string, unknown>, n: number): Promise<any[]> {
  return new Promise((resolve, reject) => {
    const c = createConnection(sock);
    let buf = '';
    const out: any[] = [];
    c.setEncoding('utf8');
    c.on('connect', () => {
      for (let i = 0; i < n; i++) c.write(JSON.stringify({ id: i, cmd, args }) + '\n');
    });
    c.on('data', (d: string) => {
      buf += d;
      let k: number;
      while ((k = buf.indexOf('\n')) >= 0) {
        out.push(JSON.parse(buf.slice(0, k)));
        buf = buf.slice(k + 1);
      }
      if (out.length === n) {
        c.end();
        resolve(out);
      }
    });
    c.on('error', reject);
  });
}

const collect = (p: ChildProcess): { text: () => string } => {
  let s = '';
  p.stderr!.setEncoding('utf8').on('data', (d: string) => { s += d; });
  return { text: () => s };
};
const exited = (p: ChildProcess): Promise<number | null> => new Promise((r) => {
  if (p.exitCode !== null) r(p.exitCode);
  else p.once('exit', (code) => r(code));
});

describe('logs: level names, journald priorities, writes that never block', () => {
  afterAll(cleanup);

  it('levels by name, and no prefixes outside the journal', async () => {
    const P = ifname('lg1');
    trackLink(P);
    const d = await startDaemon({ bridges: { br0: { ports: { [P]: { type: 'tap' } } } } });
    try {
      // A TAP deleted under the daemon: port_down is a warning, the recreated port's port_up info.
      await sh(`ip link del ${P}`);
      await d.waitForLog('port_up');
      const down = d.logs.find((l) => l.obj?.event === 'port_down')!;
      expect(down.raw).toMatch(/^\{"level":"warn",/);
      expect(d.logs.find((l) => l.obj?.event === 'daemon_started')!.obj.level).toBe('info');
      expect(d.logs.every((l) => l.obj !== undefined && typeof l.obj.level === 'string'), d.logText()).toBe(true);
    } finally {
      await d.stop();
    }
  });

  it('under the journal (JOURNAL_STREAM = its stderr) every line starts with its sd-daemon priority; with another stream, none', async () => {
    const P = ifname('lg2');
    trackLink(P);
    const dir = tempDir('jl');
    const p = spawnDaemon(dir, { bridges: { br0: { ports: { [P]: { type: 'tap' } } } } }, { journal: 'own' });
    const err = collect(p);
    await waitFor('daemon_started', () => err.text().includes('daemon_started'));
    await sh(`ip link del ${P}`);
    await waitFor('port_up', () => err.text().includes('"port_up"'));
    p.kill('SIGTERM');
    expect(await exited(p)).toBe(0);
    const lines = err.text().split('\n').filter(Boolean);
    for (const l of lines) expect(l, 'every line prefixed').toMatch(/^<[2-7]>\{"level":"/);
    const prio = (event: string): string => lines.find((l) => l.includes(`"event":"${event}"`))!.slice(0, 3);
    expect(prio('daemon_started')).toBe('<6>');
    expect(prio('port_down')).toBe('<4>');
    expect(prio('daemon_stopped')).toBe('<6>');
    // The rest of the line is the same JSON.
    expect(JSON.parse(lines[0].slice(3)).level).toBe('info');

    const dir2 = tempDir('jl2');
    const p2 = spawnDaemon(dir2, { bridges: { br0: {} } }, { journal: 'other' });
    const err2 = collect(p2);
    await waitFor('daemon_started', () => err2.text().includes('daemon_started'));
    p2.kill('SIGTERM');
    expect(await exited(p2)).toBe(0);
    for (const l of err2.text().split('\n').filter(Boolean)) expect(l).toMatch(/^\{"level":"/);
  });

  it('a stderr nobody reads does not block the daemon; every line is there once read, daemon_stopped last', async () => {
    const dir = tempDir('jb');
    const p = spawnDaemon(dir, { bridges: { br0: {} } });
    let text = '';
    p.stderr!.setEncoding('utf8');
    const onData = (d: string): void => { text += d; };
    p.stderr!.on('data', onData);
    await waitFor('daemon_started', () => text.includes('daemon_started'));
    // Stop reading: Node stops reading the pipe once its own buffer is full, then the pipe (64 KiB) fills.
    p.stderr!.pause();
    const sock = join(dir, 's.sock');
    const N = 1500;
    const t0 = Date.now();
    // Each fdb flush logs a line of ~150 bytes: 1500 of them are several times what the pipe and Node's buffer hold.
    const replies = await Promise.race([pipeline(sock, 'fdb.flush', { dynamic: true }, N), sleep(20_000).then(() => 'timeout' as const)]);
    expect(replies, 'the daemon answered while its stderr was stuck').not.toBe('timeout');
    expect((replies as any[]).every((r) => r.ok)).toBe(true);
    const ms = Date.now() - t0;
    // And it still answers promptly.
    const ping = await Promise.race([pipeline(sock, 'ping', {}, 1), sleep(2000).then(() => 'timeout' as const)]);
    expect(ping).not.toBe('timeout');
    console.log(`${N} logged requests answered in ${ms} ms with stderr unread (${text.length} bytes read before the pause)`);
    p.kill('SIGTERM');
    await sleep(500);
    p.stderr!.resume();
    expect(await exited(p)).toBe(0);
    await waitFor('stderr closed', () => p.stderr!.readableEnded || p.stderr!.destroyed, { timeoutMs: 5000 }).catch(() => undefined);
    const lines = text.split('\n').filter(Boolean);
    expect(lines.filter((l) => l.includes('"event":"fdb_flushed"')).length, 'no line lost').toBe(N);
    expect(lines.some((l) => l.includes('log_lines_dropped'))).toBe(false);
    expect(JSON.parse(lines.at(-1)!).event).toBe('daemon_stopped');
  });

  it('a fatal start error is the last line, after everything logged before it (the logger is flushed first)', async () => {
    const busy: Server = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
    const port = (busy.address() as { port: number }).port;
    try {
      const dir = tempDir('jf');
      const ports = Object.fromEntries(Array.from({ length: 8 }, (_, i) => [ifname(`lf${i}`), { type: 'tap' }]));
      Object.keys(ports).forEach(trackLink);
      const p = spawnDaemon(dir, { bridges: { br0: { ports } } }, { extra: ['--metrics', `127.0.0.1:${port}`] });
      let text = '';
      p.stderr!.setEncoding('utf8');
      p.stderr!.on('data', (d: string) => { text += d; });
      expect(await exited(p)).toBe(1);
      await sleep(200);
      const lines = text.split('\n').filter(Boolean);
      expect(lines.at(-1)).toMatch(/^vswitch: metrics: cannot listen on 127\.0\.0\.1:\d+/);
      expect(lines.filter((l) => l.includes('"event":"port_added"')).length).toBe(8);
      expect(lines.slice(0, -1).every((l) => l.startsWith('{"level":"'))).toBe(true);
    } finally {
      busy.close();
    }
  });
});

describe('logs: guard drops, first at once, then rate-limited', () => {
  afterAll(async () => {
    await cleanup();
  });

  it('a VM sending from an unbound address: one guard_drop warning per reason within a second of the first drop, however many follow', async () => {
    const T = { a: ifname('ga'), b: ifname('gb') };
    // vm1's IP source guard is on and it has no binding: everything IPv4 or ARP it sends is dropped.
    const d = await startDaemon({
      bridges: {
        br0: {
          ports: {
            [T.a]: { type: 'tap', vlan: { mode: 'access', vid: 10 }, guard: { ipSource: true } },
            [T.b]: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
          },
        },
      },
    });
    try {
      const vm1 = await makeVm('ga', T.a, '10.77.0.1/24');
      const vm2 = await makeVm('gb', T.b, '10.77.0.2/24');
      // A permanent neighbour entry: vm1 sends its echo requests at once (ip_source_guard), no ARP needed.
      await nsExec(vm1.ns, `ip neigh replace ${vm2.ip} lladdr ${vm2.mac} dev ${T.a} nud permanent`);
      const t0 = Date.now();
      const r = nsExecR(vm1.ns, `busybox ping -c 300 -i 0.01 -W 1 ${vm2.ip}`, { timeoutMs: 20_000 });
      const first = await d.waitForLog('ip_source_guard', 5000);
      expect(Date.now() - t0, 'the first drop is logged within about a second').toBeLessThan(3000);
      expect(first.obj).toMatchObject({ level: 'warn', event: 'guard_drop', bridge: 'br0', port: T.a, reason: 'ip_source_guard', first: true });
      expect(first.obj.count).toBeGreaterThanOrEqual(1);
      expect((await r).stdout, 'nothing got through').toMatch(/ 0 packets received/);
      await sleep(1500);
      const lines = d.logs.filter((l) => l.obj?.event === 'guard_drop' && l.obj.port === T.a && l.obj.reason === 'ip_source_guard');
      // About 300 drops over 3 s: one line (the next summary is due 60 s after it).
      expect(lines, d.logText().slice(-3000)).toHaveLength(1);
      // vm2's port dropped nothing, so logged nothing.
      expect(d.logs.filter((l) => l.obj?.event === 'guard_drop' && l.obj.port === T.b)).toEqual([]);
    } finally {
      await d.stop();
    }
  });
});
