/*
 * The turn yield (config `turnYieldUs`, `vswitch set turn-yield-us N|off`; packages/netdev
 * setTurnYield) through the real daemon: two VMs on TAPs; vm1 floods vm2 with minimum-size
 * frames from a raw socket (bench/fair/flood.py: far more than the daemon forwards, so its
 * loop always has more to read) while the host is made contended (one CPU-bound process per
 * CPU, plus one, beside the flooder: more runnable tasks than CPUs).
 * - On by default (500 µs): `settings` says so, the daemon logged it, and under the flood on
 *   the contended host, with vm3's pings as the light flow that arms it, the loop gave its
 *   CPU up (`settings --json` turnYield.yields grows, its awayMs with it), never more often
 *   than once per interval allows; vm2 still gets the flood and a ping
 *   from vm2 to vm1 is answered; a neighbour (vm3) pinging vm2 throughout the flood loses
 *   at most a few of its pings and the daemon's RSS does not grow by more than 32 MB.
 * - Off at runtime: the count stands still under the same flood; `settings` says it was set
 *   at runtime; a bad value exits 2 and changes nothing; the change is kept across a restart.
 * Structure only: counts, not times.
 */
import { availableParallelism } from 'node:os';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, startDaemon } from './helpers/daemon.js';
import { restartDaemon } from './helpers/dhcp.js';
import { PREFIX, REPO, cleanup, ifname, nsExec, sleep, spawnTracked, tempDir } from './helpers/run.js';
import { Background, makeVm, pingCount, pingUntil, type Vm } from './helpers/vm.js';
import { PYTHON } from './helpers/scapy.js';

const X = 20 + (parseInt(PREFIX.slice(1), 16) % 200);
const P = [ifname('ty1'), ifname('ty2'), ifname('ty3')];

describe('the turn yield (turnYieldUs)', () => {
  let d: Daemon;
  let v1: Vm, v2: Vm, v3: Vm;
  let stateDir: string;
  let spinners: ChildProcess[] = [];

  beforeAll(async () => {
    stateDir = tempDir('tystate');
    d = await startDaemon({ stateDir, bridges: { br0: { ports: Object.fromEntries(P.map((p) => [p, { type: 'tap', vlan: { mode: 'access', vid: 10 } }])) } } });
    v1 = await makeVm('ty1', P[0], `10.${X}.41.1/24`);
    v2 = await makeVm('ty2', P[1], `10.${X}.41.2/24`);
    v3 = await makeVm('ty3', P[2], `10.${X}.41.3/24`);
    expect(await pingUntil(v1.ns, v2.ip)).toBe(true);
    expect(await pingUntil(v3.ns, v2.ip)).toBe(true);
  }, 60_000);
  afterAll(async () => {
    for (const s of spinners) s.kill('SIGKILL');
    await d?.stop();
    await cleanup();
  });

  const settings = async () => JSON.parse((await d.ok(['settings', '--json'])).stdout);
  const rxPackets = async (vm: Vm) => Number(await nsExec(vm.ns, `cat /sys/class/net/${vm.ifname}/statistics/rx_packets`));

  const rss = (): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${d.proc.pid}/status`, 'utf8'))![1]);

  /** Yields and frames vm2 received over a 2 s flood on a contended host; the pings vm3 (the neighbour) got answered meanwhile; the daemon's RSS growth (kB). */
  async function floodContended(): Promise<{ yields: number; awayMs: number; rx: number; ms: number; pings: number; rssKb: number }> {
    spinners = Array.from({ length: availableParallelism() + 1 }, () => spawnTracked(PYTHON, ['-c', 'while True: pass']));
    try {
      await sleep(300); // the spinners runnable before the flood starts
      const { yields: y0, awayMs: a0 } = (await settings()).turnYield;
      const rx0 = await rxPackets(v2);
      const rss0 = rss();
      const t0 = Date.now();
      const f = new Background(v1.ns, `${PYTHON} ${REPO}/bench/fair/flood.py ${v1.ifname} ${v1.mac} ${v2.mac} ${v1.ip} ${v2.ip} 2`);
      const pings = await pingCount(v3.ns, v2.ip, 20, 0.1);
      await sleep(Math.max(0, 2300 - (Date.now() - t0)));
      await f.stop();
      const ms = Date.now() - t0;
      const t = (await settings()).turnYield;
      return { yields: t.yields - y0, awayMs: t.awayMs - a0, rx: await rxPackets(v2) - rx0, ms, pings, rssKb: rss() - rss0 };
    } finally {
      for (const s of spinners) s.kill('SIGKILL');
      spinners = [];
    }
  }

  it('on by default: under a flood on a contended host the loop gives its CPU up, at most once per interval; traffic still flows', async () => {
    const t = (await settings()).turnYield;
    expect(t.us).toBe(500);
    expect((await d.ok(['settings'])).stdout).toContain('turn yield: at most every 500 µs while the host is contended');
    expect(d.logsMatching('turn_yield')[0]?.obj).toMatchObject({ us: 500, source: 'config' });
    const r = await floodContended();
    expect(r.yields, 'busy turns that gave the CPU up').toBeGreaterThan(0);
    // One per 500 µs at most, over the flood and the settings calls around it.
    expect(r.yields).toBeLessThanOrEqual(Math.ceil((r.ms + 1000) * 1000 / 500));
    // Each yield's time away counted: at least its 1 µs sleep, and less than the flood lasted.
    expect(r.awayMs).toBeGreaterThanOrEqual(r.yields * 0.001);
    expect(r.awayMs).toBeLessThan(r.ms);
    expect(r.rx, 'the flood still reaches vm2').toBeGreaterThan(1000);
    expect(r.pings, 'the neighbour\'s pings during the flood').toBeGreaterThanOrEqual(18);
    expect(r.rssKb, 'the daemon\'s RSS (kB)').toBeLessThan(32 * 1024);
    expect(await pingCount(v2.ns, v1.ip, 5, 0.05)).toBe(5);
  }, 30_000);

  it('off at runtime: no yields under the same flood; bad values change nothing; kept across a restart', async () => {
    await d.ok(['set', 'turn-yield-us', 'off']);
    expect((await d.ok(['settings'])).stdout).toContain('turn yield: off (set at runtime)');
    expect(d.logsMatching('turn_yield').at(-1)?.obj).toMatchObject({ us: 0, source: 'runtime' });
    const r = await floodContended();
    expect(r.yields).toBe(0);
    expect(r.rx).toBeGreaterThan(1000);
    for (const bad of ['-1', '100001', 'sometimes']) expect((await d.cli(['set', 'turn-yield-us', bad])).code).toBe(2);
    expect((await settings()).turnYield.us).toBe(0);
    expect(JSON.parse(readFileSync(join(stateDir, 'runtime.json'), 'utf8')).daemon).toEqual({ turnYieldUs: { value: 0, base: 500 } });
    await d.stop();
    d = await restartDaemon(d);
    expect((await settings()).turnYield.us).toBe(0);
    await d.ok(['set', 'turn-yield-us', '250']);
    expect((await settings()).turnYield.us).toBe(250);
  }, 60_000);
});
