/*
 * Bounded servers and unique router MACs (issue 12, items 4, 5 and 9), through the
 * real daemon with real clients:
 * - 3000 idle connections to the metrics port of a daemon whose fd limit is 1024:
 *   the daemon's fd count stays bounded, the control socket and a DHCP lease
 *   (udhcpc) still work, the idle connections are closed by the daemon's timeouts
 *   and /healthz then answers a fresh client without the attacker's help; the
 *   refusals are counted and logged (rate-limited).
 *   Old code: fd limit reached; the CLI gets EPIPE; /healthz and leases fail.
 * - 500 concurrent scrapes: every one gets a valid exposition and they cost about
 *   one render (vswitch_metrics_renders_total). Old code: one render each, no counter.
 * - The metrics server runs in its own thread: with the daemon's main thread (the
 *   data plane's loop) frozen by ptrace, /metrics still answers from the cache and
 *   /healthz answers 503 "stalled" within ~2 s; thawed, 200 again; SIGTERM then
 *   ends the daemon, worker thread included, with exit code 0. Old code: both
 *   requests hung while the main thread was frozen.
 * - A control client that pipelines `show` flat out and never reads: the daemon's
 *   RSS (/proc/PID/status VmRSS) stays bounded and other clients are served.
 *   Old code: every reply buffered (hundreds of MB).
 * - "constructor", "__proto__", "toString", "hasOwnProperty" are unknown commands.
 *   Old code: "constructor" answered with an internal object.
 * - A request line over control.maxRequestBytes gets E2BIG. Old code: dropped silently.
 * - The limits change by reload (reported), a bad value is refused by key path; an
 *   fd limit below what the config can use is logged (fd_limit_low). Old code: no
 *   such keys, no such log.
 * - A regular file, a directory or a symlink at the socket path: the daemon refuses
 *   to start, names the path, exits non-zero, and leaves it as it was. Old code: the
 *   regular file was deleted. A stale socket is still replaced and a live one
 *   refused: that test guards behaviour the old code had too (it passes on both).
 * - Two machine ids (VSWITCH_MACHINE_ID_FILE, the documented hook) give different
 *   uplink and gateway MACs; one machine id gives the same MACs after a restart;
 *   without a machine id a fallback id is kept in the state directory;
 *   `uplink.mac` still wins; the gateway announces itself with a gratuitous ARP at
 *   start. Old code: the MACs hashed the router's name only; no gateway ARP at start.
 */
import { lstatSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { connect, createConnection, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { Daemon, runCli, startDaemon } from './helpers/daemon.js';
import { makeDhcpVm, udhcpcOnce } from './helpers/dhcp.js';
import { PREFIX, addNamespace, addVeth, cleanup, freePort, ifname, nsExec, nsname, sh, sleep, tempDir, waitFor } from './helpers/run.js';
import { quietNamespace, tcpdump } from './helpers/vm.js';
import { freezeThread } from './helpers/freeze.js';

const X = 20 + (parseInt(PREFIX.slice(1), 16) % 200);
const BR = 'br0';
const access = (vid: number) => ({ type: 'tap', vlan: { mode: 'access', vid } });

function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

function rssKb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (m === null) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]);
}

function httpGet(port: number, path: string, agent: Agent | false = false, timeoutMs = 5000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; }).on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/** The value of one sample, e.g. sample(text, 'vswitch_metrics_scrapes_total{source="cache"}'). */
function sample(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  if (line === undefined) throw new Error(`no sample ${series} in:\n${text.split('\n').filter((l) => l.startsWith('vswitch_metrics') || l.startsWith('vswitch_control')).join('\n')}`);
  return Number(line.slice(series.length + 1));
}

/** The first line of a text exposition that is neither a comment nor `name{labels} value`, or undefined if none. */
function badExpositionLine(text: string): string | undefined {
  if (!text.endsWith('\n')) return '(no final newline)';
  if (!text.includes('vswitch_info{version=')) return '(no vswitch_info)';
  const sampleLine = /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*\})? (-?[0-9.]+(e[+-]?[0-9]+)?|NaN|[+-]Inf)$/;
  // Empty lines are allowed (the format ignores them; prom-client leaves one after a metric without samples).
  return text.slice(0, -1).split('\n').find((l) => !(l === '' || l.startsWith('# HELP ') || l.startsWith('# TYPE ') || sampleLine.test(l)));
}

/** Sends one raw request line on the control socket and returns the parsed reply. */
function controlRaw(path: string, line: string): Promise<any> {
  return new Promise((resolve, reject) => {
    const s = createConnection(path);
    let buf = '';
    s.setEncoding('utf8');
    s.on('connect', () => s.write(line + '\n'));
    s.on('data', (d: string) => {
      buf += d;
      const i = buf.indexOf('\n');
      if (i >= 0) {
        s.destroy();
        resolve(JSON.parse(buf.slice(0, i)));
      }
    });
    s.on('error', reject);
    setTimeout(() => { s.destroy(); reject(new Error(`no reply to ${line}`)); }, 5000);
  });
}

describe('bounded metrics server and control socket', () => {
  const T = { u1: ifname('u1'), fill: Array.from({ length: 8 }, (_, i) => ifname(`f${i}`)) };
  let d: Daemon;
  let port: number;
  let pid: number;

  beforeAll(async () => {
    port = await freePort();
    d = await startDaemon({
      stateDir: tempDir('state'),
      metrics: { listen: `127.0.0.1:${port}` },
      bridges: { [BR]: { ports: Object.fromEntries([[T.u1, access(10)], ...T.fill.map((f) => [f, access(20)])]) } },
      routers: {
        r0: {
          networks: {
            net10: { bridge: BR, vlan: 10, address: `10.${X}.10.1/24`, dhcp: { pool: [`10.${X}.10.100-10.${X}.10.150`] } },
          },
        },
      },
    }, {
      // The fd limit an unlucky service manager might give it (Node raises the soft limit to the hard one).
      wrap: ['prlimit', '--nofile=1024:1024', '--'],
    });
    await d.waitForLog('metrics_listening');
    pid = d.proc.pid!;
    expect(readFileSync(`/proc/${pid}/limits`, 'utf8')).toMatch(/Max open files\s+1024\s+1024/);
  });

  afterAll(async () => {
    await d?.stop();
    await cleanup();
  });

  it('3000 idle metrics connections: fds bounded, control socket and DHCP work, timeouts free the slots for /healthz', async () => {
    const base = fdCount(pid);
    const attackers: Socket[] = [];
    const state = { connected: 0, closed: 0 };
    try {
      for (let i = 0; i < 3000; i++) {
        const s = connect(port, '127.0.0.1');
        s.on('connect', () => state.connected++);
        s.on('close', () => state.closed++);
        s.on('error', () => {});
        s.resume();
        attackers.push(s);
        if (i % 500 === 499) await sleep(50);
      }
      await waitFor('3000 connects to complete', () => state.connected + state.closed >= 3000 || undefined, { timeoutMs: 15_000 });
      await sleep(500);
      const during = fdCount(pid);
      console.log(`daemon fds: ${base} before, ${during} with 3000 connections to the metrics port (${state.closed} closed by the daemon)`);
      expect(during, `fds: ${base} before, ${during} with 3000 connections`).toBeLessThanOrEqual(base + 64 + 16);

      // The control socket answers.
      const show = await d.cli(['show', '--json']);
      expect(show.code, show.stderr).toBe(0);
      // A DHCP lease is granted and written (lease file writes need fds too).
      const vm = await makeDhcpVm('u1', T.u1);
      const r = await udhcpcOnce(vm, { tries: 5 });
      expect(r.code, r.log).toBe(0);
      expect(r.lease?.ip).toMatch(new RegExp(`^10\\.${X}\\.10\\.`));
      expect(fdCount(pid)).toBeLessThanOrEqual(base + 64 + 16);

      // The attacker does nothing; the daemon's header timeout (5 s) closes its connections, and a fresh client gets in.
      const h = await waitFor('/healthz for a fresh client', async () => {
        const res = await httpGet(port, '/healthz', false, 2000).catch(() => undefined);
        return res?.status === 200 ? res : undefined;
      }, { timeoutMs: 20_000, intervalMs: 500 });
      expect(h.body).toBe('ok\n');
    } finally {
      for (const s of attackers) s.destroy();
    }
    await sleep(1200);
    const text = (await httpGet(port, '/metrics')).body;
    expect(sample(text, 'vswitch_metrics_max_connections')).toBe(64);
    expect(sample(text, 'vswitch_metrics_connections_refused_total')).toBeGreaterThanOrEqual(3000 - 64);
    expect(sample(text, 'vswitch_metrics_connections_closed_total{reason="request_timeout"}')).toBeGreaterThanOrEqual(1);
    const warns = d.logsMatching('metrics_connections_refused');
    expect(warns.length, 'refusals logged').toBeGreaterThanOrEqual(1);
    expect(warns.length, 'at most one line per 10 s').toBeLessThanOrEqual(4);
    expect(warns[0].obj).toMatchObject({ level: 'warn', limit: 64 });
    expect(d.logsMatching('daemon_started')[0].obj).toMatchObject({ fdLimit: 1024 });
  });

  it('500 concurrent scrapes: each gets a valid exposition, about one render', async () => {
    const renders = async (): Promise<{ renders: number; cached: number }> => {
      await sleep(1100); // past the cache interval: this scrape renders and shows the counters as of now
      const t = (await httpGet(port, '/metrics')).body;
      return { renders: sample(t, 'vswitch_metrics_renders_total'), cached: sample(t, 'vswitch_metrics_scrapes_total{source="cache"}') };
    };
    const before = await renders();
    await sleep(1100); // the 500 must render for themselves, not reuse `before`'s text
    const agent = new Agent({ keepAlive: true, maxSockets: 32 });
    const t0 = performance.now();
    let res;
    try {
      res = await Promise.all(Array.from({ length: 500 }, () => httpGet(port, '/metrics', agent, 15_000)));
    } finally {
      agent.destroy();
    }
    const ms = performance.now() - t0;
    const after = await renders();
    expect(res.filter((r) => r.status === 200)).toHaveLength(500);
    const bodies = new Set(res.map((r) => r.body));
    for (const b of bodies) expect(badExpositionLine(b)).toBeUndefined();
    // `after` rendered once itself; the rest were the 500 (one, or two if they straddled the 1 s interval).
    const used = after.renders - before.renders - 1;
    console.log(`500 concurrent scrapes in ${ms.toFixed(0)} ms: ${used} render(s), ${after.cached - before.cached} from cache`);
    expect(used).toBeGreaterThanOrEqual(1);
    expect(used).toBeLessThanOrEqual(Math.ceil(ms / 1000) + 1);
    expect(after.cached - before.cached).toBeGreaterThanOrEqual(500 - used);
  });

  it('a control client pipelining requests without reading: RSS bounded, others served', async () => {
    const rss0 = rssKb(pid);
    const hog = createConnection(d.socket);
    hog.on('error', () => {});
    hog.pause();
    const chunk = Buffer.from('{"cmd":"show"}\n'.repeat(2000));
    let sent = 0;
    try {
      await new Promise<void>((resolve) => hog.once('connect', () => resolve()));
      const deadline = Date.now() + 5000;
      await new Promise<void>((resolve) => {
        const more = (): void => {
          while (Date.now() < deadline) {
            sent += 2000;
            if (!hog.write(chunk)) {
              hog.once('drain', more);
              return;
            }
          }
          resolve();
        };
        more();
        setTimeout(resolve, 5500);
      });
      const other = await d.cli(['show', '--json']);
      expect(other.code, other.stderr).toBe(0);
      const rss1 = rssKb(pid);
      console.log(`pipelining client: ${sent} requests offered, RSS ${rss0} -> ${rss1} kB`);
      expect(rss1 - rss0, `RSS grew from ${rss0} to ${rss1} kB`).toBeLessThan(64 * 1024);
    } finally {
      hog.destroy();
    }
    await sleep(1100);
    const text = (await httpGet(port, '/metrics')).body;
    expect(sample(text, 'vswitch_control_backpressure_pauses_total')).toBeGreaterThanOrEqual(1);
  });

  it('inherited names are unknown commands', async () => {
    for (const cmd of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf']) {
      const r = await controlRaw(d.socket, JSON.stringify({ id: 1, cmd }));
      expect(r, cmd).toEqual({ id: 1, ok: false, error: { code: 'EINVAL', message: `unknown command: ${cmd}` } });
    }
    expect(await controlRaw(d.socket, '{"id":2,"cmd":"ping"}')).toMatchObject({ id: 2, ok: true });
  });

  it('a request line over 64 KiB gets E2BIG, and the CLI still works', async () => {
    const r = await controlRaw(d.socket, JSON.stringify({ id: 3, cmd: 'show', args: { pad: 'x'.repeat(70_000) } }));
    expect(r).toEqual({ id: null, ok: false, error: { code: 'E2BIG', message: 'request longer than 65536 bytes: closing the connection' } });
    expect((await d.cli(['show'])).code).toBe(0);
  });

  it('the limits change by reload, and the reload says so', async () => {
    const cfg = parse(readFileSync(d.configFile, 'utf8'));
    cfg.metrics = { ...cfg.metrics, maxConnections: 8, cacheInterval: 0.5 };
    cfg.control = { maxConnections: 16, maxRequestBytes: 4096 };
    writeFileSync(d.configFile, stringify(cfg));
    const r = await d.ok(['reload']);
    expect(r.stdout.trim().split('\n')).toEqual([
      'metrics.maxConnections 64 -> 8', 'metrics.cacheInterval 1 -> 0.5',
      'control.maxConnections 64 -> 16', 'control.maxRequestBytes 65536 -> 4096',
    ]);
    await sleep(1100);
    expect(sample((await httpGet(port, '/metrics')).body, 'vswitch_metrics_max_connections')).toBe(8);
    const big = await controlRaw(d.socket, JSON.stringify({ id: 4, cmd: 'show', args: { pad: 'x'.repeat(5000) } }));
    expect(big.error).toEqual({ code: 'E2BIG', message: 'request longer than 4096 bytes: closing the connection' });
    // A bad value is refused with its key path, and nothing changes.
    cfg.metrics.headersTimeout = 30;
    writeFileSync(d.configFile, stringify(cfg));
    const bad = await d.cli(['reload']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('metrics.headersTimeout');
    expect(bad.stderr).toContain('must not exceed requestTimeout');
  });
});

describe('the metrics server in its own thread', () => {
  let d: Daemon;
  let port: number;
  beforeAll(async () => {
    port = await freePort();
    // A long cache interval: the text rendered before the freeze is still fresh during it.
    d = await startDaemon({ stateDir: tempDir('mw'), metrics: { listen: `127.0.0.1:${port}`, cacheInterval: 30 }, bridges: { [BR]: {} } });
    await d.waitForLog('metrics_listening');
  });
  afterAll(async () => {
    await d?.stop();
    await cleanup();
  });

  it('the main thread frozen: /metrics from the cache, /healthz 503; thawed: 200; SIGTERM ends every thread', async () => {
    const before = await httpGet(port, '/metrics');
    expect(before.status).toBe(200);
    expect(await httpGet(port, '/healthz')).toEqual({ status: 200, body: 'ok\n' });
    const frozen = await freezeThread(d.proc.pid!);
    let metrics: { status: number; body: string };
    let health: { status: number; body: string };
    let healthMs: number;
    try {
      metrics = await httpGet(port, '/metrics', false, 5000);
      await sleep(300); // past the 250 ms in which the last answered ping still counts
      const t0 = performance.now();
      health = await httpGet(port, '/healthz', false, 6000);
      healthMs = performance.now() - t0;
    } finally {
      await frozen.thaw();
    }
    // Served by the worker thread while the data plane's loop could not run.
    expect(metrics.status).toBe(200);
    expect(metrics.body).toBe(before.body);
    expect(health).toEqual({ status: 503, body: "stalled: the daemon's main loop did not answer within 2 s\n" });
    expect(healthMs).toBeGreaterThanOrEqual(1900);
    console.log(`main thread frozen: /healthz answered 503 after ${healthMs.toFixed(0)} ms`);
    await waitFor('/healthz 200 after the thaw', async () => (await httpGet(port, '/healthz')).status === 200, { timeoutMs: 5000 });

    const r = await d.stop();
    expect(r, d.logText().slice(-2000)).toEqual({ code: 0, signal: null, killed: false });
    expect(d.logsMatching('daemon_stopped')).toHaveLength(1);
  });
});

describe('the control socket path at start', () => {
  let dir: string;
  let config: string;
  beforeAll(() => {
    dir = tempDir('path');
    config = join(dir, 'vswitch.yaml');
    writeFileSync(config, `stateDir: ${join(dir, 'state')}\nmetrics: { listen: "off" }\nbridges: { ${BR}: {} }\n`);
  });
  afterAll(async () => { await cleanup(); });

  const daemon = (socket: string) => runCli(['daemon', '--config', config, '--socket', socket], { timeoutMs: 10_000 });

  it('a regular file, a directory, a symlink: refused by name, exit non-zero, left as they were', async () => {
    const file = join(dir, 'file.sock');
    writeFileSync(file, 'not a socket\n');
    const r = await daemon(file);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(`vswitch: control socket ${file} exists and is a regular file, not a socket this daemon created: `
      + 'refusing to replace it (remove it yourself, or choose another path with --socket or control.socket)');
    expect(readFileSync(file, 'utf8')).toBe('not a socket\n');

    const sub = join(dir, 'dir.sock');
    mkdirSync(sub);
    const r2 = await daemon(sub);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toContain(`control socket ${sub} exists and is a directory`);
    expect(lstatSync(sub).isDirectory()).toBe(true);

    const link = join(dir, 'link.sock');
    symlinkSync(file, link);
    const r3 = await daemon(link);
    expect(r3.code).toBe(1);
    expect(r3.stderr).toContain(`control socket ${link} exists and is a symbolic link`);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(readFileSync(file, 'utf8')).toBe('not a socket\n');
  });

  it('an fd limit below what the config can use is logged at start', async () => {
    const d = await startDaemon({ stateDir: join(dir, 'state3'), metrics: { listen: `127.0.0.1:${await freePort()}` }, bridges: { [BR]: {} } },
      { wrap: ['prlimit', '--nofile=150:150', '--'] });
    try {
      expect((await d.waitForLog('fd_limit_low')).obj).toMatchObject({ level: 'warn', fdLimit: 150, needed: 64 + 64 + 64 });
    } finally {
      await d.stop();
    }
  });

  it('a stale socket (nobody answers) is replaced; a live one is refused', async () => {
    const stale = join(dir, 'stale.sock');
    await sh(`/usr/bin/python3 -c "import socket; socket.socket(socket.AF_UNIX).bind('${stale}')"`);
    // The helper's own --socket comes first; the last one given wins.
    const d = await startDaemon({ stateDir: join(dir, 'state2'), bridges: { [BR]: {} } }, { args: ['--socket', stale], noWait: true });
    try {
      await waitFor('the daemon on the replaced socket', async () => (await d.cli(['show'], { socket: stale })).code === 0, { timeoutMs: 15_000 });
      expect(lstatSync(stale).isSocket()).toBe(true);
      const r = await daemon(stale);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`another vswitch daemon is listening on ${stale}`);
      expect((await d.cli(['show'], { socket: stale })).code).toBe(0);
    } finally {
      await d.stop();
    }
  });
});

describe('unique router MACs', () => {
  const attach = ifname('ga');
  const peer = ifname('gb');
  const ns = nsname('gw');
  let dir: string;
  const midA = '3d1219c7c4c5404aaa1f6d2a48adfda4';
  const midB = '8f0c2b1e9a7d4c3b8e6f5a4d3c2b1a09';

  beforeAll(async () => {
    dir = tempDir('mac');
    writeFileSync(join(dir, 'mid-a'), `${midA}\n`);
    writeFileSync(join(dir, 'mid-b'), `${midB}\n`);
    // An attached veth in VLAN 10 whose other end sits in a namespace: the gateway's announcements arrive there.
    await addVeth(attach, peer);
    await addNamespace(ns);
    await quietNamespace(ns);
    await sh(`ip link set ${peer} netns ${ns} && ip link set ${attach} up`);
    await nsExec(ns, `ip link set ${peer} up`);
  });
  afterAll(async () => { await cleanup(); });

  const config = (stateDir: string, uplinkMac?: string) => ({
    stateDir,
    bridges: { [BR]: { ports: { [attach]: { type: 'attach', vlan: { mode: 'access', vid: 10 } } } } },
    routers: {
      r0: {
        uplink: { interface: ifname('nx'), address: '192.0.2.10/24', gateway: '192.0.2.1', ...(uplinkMac ? { mac: uplinkMac } : {}) },
        networks: { net10: { bridge: BR, vlan: 10, address: `10.${X}.10.1/24` } },
      },
    },
  });

  /** Starts a daemon with `machineIdFile` (or none), returns the uplink MAC, the gateway MAC and the ARP lines seen at start. */
  async function macs(stateDir: string, machineIdFile: string | undefined, uplinkMac?: string, capture = false): Promise<{ uplink: string; gateway: string; arp: string[]; d: Daemon }> {
    const cap = capture ? await tcpdump(ns, peer, 'arp') : undefined;
    const env = machineIdFile === undefined ? ['VSWITCH_MACHINE_ID_FILE=/nonexistent'] : [`VSWITCH_MACHINE_ID_FILE=${machineIdFile}`];
    const d = await startDaemon(config(stateDir, uplinkMac), { wrap: ['env', ...env] });
    try {
      const r = (await d.ok(['router', 'show', '--json'], { json: true })).json;
      const uplink = String(r[0].uplink.mac).toLowerCase();
      const gateway = await waitFor('the gateway MAC in the FDB', async () => {
        const fdb = (await d.ok(['showmacs', BR], { json: true })).json as { mac: string; port: string }[];
        return fdb.find((e) => e.port === 'net10')?.mac.toLowerCase();
      });
      const arp = (await cap?.stop(500)) ?? [];
      return { uplink, gateway, arp, d };
    } catch (e) {
      await d.stop();
      throw e;
    }
  }

  it('differ between machine ids, stay across restarts, fall back to an id in the state directory, yield to uplink.mac', async () => {
    const state = join(dir, 'state');
    const a = await macs(state, join(dir, 'mid-a'), undefined, true);
    await a.d.stop();
    const b = await macs(state, join(dir, 'mid-b'));
    await b.d.stop();
    expect(b.uplink, 'uplink MACs of two hosts').not.toBe(a.uplink);
    expect(b.gateway, 'gateway MACs of two hosts').not.toBe(a.gateway);
    for (const m of [a.uplink, a.gateway, b.uplink, b.gateway]) {
      expect(parseInt(m.slice(0, 2), 16) & 0x03, `${m}: locally administered unicast`).toBe(0x02);
    }
    const again = await macs(state, join(dir, 'mid-a'));
    await again.d.stop();
    expect([again.uplink, again.gateway]).toEqual([a.uplink, a.gateway]);

    // The gateway announced itself at start: a gratuitous ARP from its MAC for its own address.
    const garp = a.arp.find((l) => l.includes(`${a.gateway} > ff:ff:ff:ff:ff:ff`) && l.includes(`who-has 10.${X}.10.1 tell 10.${X}.10.1`));
    expect(garp, `gratuitous ARP from ${a.gateway}:\n${a.arp.join('\n')}`).toBeDefined();

    // No machine id: an id is made once in the state directory and kept.
    const fresh = join(dir, 'state-fallback');
    const c = await macs(fresh, undefined);
    await c.d.stop();
    expect(readFileSync(join(fresh, 'machine-id'), 'utf8')).toMatch(/^[0-9a-f]{32}\n$/);
    expect(c.d.logsMatching('host_id')[0].obj).toMatchObject({ level: 'warn', created: true, source: join(fresh, 'machine-id') });
    const c2 = await macs(fresh, undefined);
    await c2.d.stop();
    expect(c2.uplink).toBe(c.uplink);
    expect(c2.d.logsMatching('host_id')[0].obj).toMatchObject({ level: 'info', created: false });
    expect([a.uplink, b.uplink]).not.toContain(c.uplink);

    // The config's MAC wins.
    const fixed = await macs(state, join(dir, 'mid-a'), '02:11:22:33:44:55');
    await fixed.d.stop();
    expect(fixed.uplink).toBe('02:11:22:33:44:55');
  });
});
