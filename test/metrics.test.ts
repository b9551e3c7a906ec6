/*
 * The Prometheus endpoint of the real daemon: two VMs on one VLAN, 100 pings, and
 * the per-port counters on /metrics move by the right amounts; /healthz answers;
 * `promtool check metrics` accepts the text; a real Prometheus server scrapes it
 * and reports up == 1; a deleted port's series disappear; --metrics overrides the
 * config and a taken address stops the daemon from starting.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, startDaemon, toYaml } from './helpers/daemon.js';
import { makeDhcpVm, udhcpcOnce } from './helpers/dhcp.js';
import { REPO, cleanup, freePort, ifname, nsExecR, shr, sleep, spawnTracked, tempDir, waitFor } from './helpers/run.js';
import { makeVm, pingUntil, type Vm } from './helpers/vm.js';

const BR = 'br0';
const T = { vm1: ifname('vm1'), vm2: ifname('vm2') };
const DROP_REASONS = [
  'malformed', 'bad_src_mac', 'link_local', 'vlan_tagged_on_access', 'vlan_not_allowed', 'vlan_no_pvid',
  'vlan_reserved', 'port_mac_limit', 'static_mac_conflict', 'storm_control', 'dhcp_guard', 'ip_source_guard', 'arp_spoof', 'bound_mac_conflict',
  'dst_on_ingress', 'egress_filtered', 'port_down', 'tx_error', 'link_down',
  'bpdu_guard', 'bpdu_invalid', 'loop_blocked', 'port_shut', 'ingress_rate', 'egress_rate',
  'ra_guard', 'dhcpv6_guard', 'ipv6_source_guard', 'nd_spoof', 'tunnel_mtu',
];
/** busybox ping's default echo request: 14 Ethernet + 20 IPv4 + 8 ICMP + 56 data. */
const ECHO_FRAME_BYTES = 98;

interface Sample { name: string; labels: Record<string, string>; value: number }

/** The samples of a text exposition (comments skipped). */
function parseExposition(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/.exec(line);
    if (m === null) throw new Error(`unparsable exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

class Scrape {
  readonly samples: Sample[];
  constructor(readonly text: string) {
    this.samples = parseExposition(text);
  }

  all(name: string, labels: Record<string, string> = {}): Sample[] {
    return this.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  }

  /** The one sample of `name` matching `labels`; throws if there is none or more than one. */
  get(name: string, labels: Record<string, string> = {}): number {
    const found = this.all(name, labels);
    if (found.length !== 1) {
      throw new Error(`expected one sample ${name}${JSON.stringify(labels)}, found ${found.length}:\n`
        + this.text.split('\n').filter((l) => l.startsWith(name)).join('\n'));
    }
    return found[0].value;
  }
}

async function httpGet(url: string): Promise<{ status: number; body: string; type: string }> {
  const r = await fetch(url, { signal: AbortSignal.timeout(5000) });
  return { status: r.status, body: await r.text(), type: r.headers.get('content-type') ?? '' };
}

async function scrape(base: string): Promise<Scrape> {
  const r = await httpGet(`${base}/metrics`);
  if (r.status !== 200) throw new Error(`GET ${base}/metrics: ${r.status} ${r.body}`);
  return new Scrape(r.body);
}

describe('Prometheus metrics of the running daemon', () => {
  let d: Daemon;
  let vm1: Vm, vm2: Vm;
  let base: string;
  let metricsAddr: string;

  beforeAll(async () => {
    metricsAddr = `127.0.0.1:${await freePort()}`;
    base = `http://${metricsAddr}`;
    d = await startDaemon({
      bridges: {
        [BR]: {
          ports: {
            [T.vm1]: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
            [T.vm2]: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
          },
        },
      },
      metrics: { listen: metricsAddr },
    });
    // The control socket answers before the metrics server listens: wait for the latter.
    await d.waitForLog('metrics_listening');
    vm1 = await makeVm('vm1', T.vm1, '10.20.0.1/24');
    vm2 = await makeVm('vm2', T.vm2, '10.20.0.2/24');
  });

  afterAll(async () => {
    await d?.stop();
    await cleanup();
  });

  it('100 pings move each VM port\'s rx and tx counters by at least 100 frames each', async () => {
    expect(d.logsMatching('metrics_listening')[0].obj, 'the daemon logs where metrics listen').toMatchObject({ listen: metricsAddr, url: `${base}/metrics` });
    // ARP resolved and both MACs learned first, so the measured window holds the pings.
    expect(await pingUntil(vm1.ns, vm2.ip), 'vm1 -> vm2 (same VLAN)').toBe(true);
    const before = await scrape(base);
    const r = await nsExecR(vm1.ns, `busybox ping -c 100 -i 0.01 -W 2 ${vm2.ip}`, { timeoutMs: 20_000 });
    const received = Number(/(\d+) packets received/.exec(r.stdout)?.[1] ?? 0);
    expect(received, `ping output:\n${r.stdout}${r.stderr}`).toBe(100);
    // Scrapes within metrics.cacheInterval (1 s) of a render get its text: past it, this one renders.
    await sleep(1100);
    const after = await scrape(base);

    for (const vm of [vm1, vm2]) {
      const l = { bridge: BR, port: vm.ifname };
      const delta = (name: string): number => after.get(name, l) - before.get(name, l);
      const rx = delta('vswitch_port_rx_frames_total');
      const tx = delta('vswitch_port_tx_frames_total');
      expect(rx, `${vm.name}: rx frames`).toBeGreaterThanOrEqual(100);
      expect(tx, `${vm.name}: tx frames`).toBeGreaterThanOrEqual(100);
      expect(rx + tx, `${vm.name}: rx + tx frames`).toBeGreaterThanOrEqual(200);
      expect(delta('vswitch_port_rx_bytes_total'), `${vm.name}: rx bytes`).toBeGreaterThanOrEqual(100 * ECHO_FRAME_BYTES);
      expect(delta('vswitch_port_tx_bytes_total'), `${vm.name}: tx bytes`).toBeGreaterThanOrEqual(100 * ECHO_FRAME_BYTES);
      expect(after.get('vswitch_port_up', l), `${vm.name}: up`).toBe(1);
      expect(after.all('vswitch_port_up', l)[0].labels.kind).toBe('tap');
      expect(after.get('vswitch_port_down_events_total', l)).toBe(0);
      expect(after.get('vswitch_port_macs', l), `${vm.name}: one MAC learned on its port`).toBe(1);
      // Every drop reason is exported for every port, zeros included; the pings caused none.
      // (Before them, a frame flooded to a TAP in the instant between its move into the
      // namespace and its link coming up counts as link_down: not the pings' doing.)
      expect(after.all('vswitch_port_drops_total', l).map((s) => s.labels.reason).sort()).toEqual([...DROP_REASONS].sort());
      for (const reason of DROP_REASONS) {
        const d = { ...l, reason };
        expect(after.get('vswitch_port_drops_total', d) - before.get('vswitch_port_drops_total', d), reason).toBe(0);
      }
    }
    expect(after.get('vswitch_bridge_macs', { bridge: BR })).toBeGreaterThanOrEqual(2);
    expect(after.get('vswitch_bridge_max_macs', { bridge: BR })).toBe(8192);
    expect(after.get('vswitch_bridge_mac_learned_total', { bridge: BR })).toBeGreaterThanOrEqual(2);
    // Echo requests and replies are known unicast once learned: forwarded, not flooded.
    const fwd = after.get('vswitch_bridge_forwarded_frames_total', { bridge: BR }) - before.get('vswitch_bridge_forwarded_frames_total', { bridge: BR });
    expect(fwd).toBeGreaterThanOrEqual(200);
    for (const kind of ['group', 'unknown_unicast']) {
      expect(after.all('vswitch_bridge_flooded_frames_total', { bridge: BR, kind }).length, kind).toBe(1);
    }
    for (const reason of ['port_limit', 'static', 'table_full']) {
      expect(after.get('vswitch_bridge_mac_refused_total', { bridge: BR, reason }), reason).toBe(0);
    }
    expect(after.all('vswitch_info')).toHaveLength(1);
    expect(after.all('vswitch_info')[0].labels.version).toMatch(/^\d+\.\d+\.\d+/);
    // The build info, as Prometheus' own *_build_info: the daemon runs from this checkout, on this node.
    const head = (await shr(`git -C ${REPO} rev-parse HEAD`)).stdout.trim();
    expect(after.all('vswitch_build_info').map((x) => x.labels)).toEqual([
      { version: after.all('vswitch_info')[0].labels.version, revision: head, nodejs_version: process.versions.node },
    ]);
    // The start applied the file: a successful load, stamped with the start time.
    expect(after.get('vswitch_config_last_reload_successful')).toBe(1);
    const loaded = after.get('vswitch_config_last_reload_success_timestamp_seconds');
    expect(Math.abs(loaded * 1000 - Date.now())).toBeLessThan(120_000);
    // prom-client's process metrics, under their standard names.
    expect(after.get('process_cpu_seconds_total')).toBeGreaterThan(0);
    expect(after.get('process_resident_memory_bytes')).toBeGreaterThan(0);
    // Nothing that does not exist yet (router, DHCP, NAT) is zero-filled.
    expect(after.samples.filter((s) => /^vswitch_(dhcp|nat|router|host_nat)_/.test(s.name))).toEqual([]);
  });

  it('/healthz answers 200 ok; other paths 404, other methods 405', async () => {
    const h = await httpGet(`${base}/healthz`);
    expect([h.status, h.body.trim()]).toEqual([200, 'ok']);
    const m = await httpGet(`${base}/metrics`);
    expect(m.type).toMatch(/^text\/plain; version=0\.0\.4/);
    expect((await httpGet(`${base}/nope`)).status).toBe(404);
    const p = await fetch(`${base}/metrics`, { method: 'POST', signal: AbortSignal.timeout(5000) });
    expect(p.status).toBe(405);
  });

  it('promtool check metrics accepts the output', async () => {
    const which = spawnSync('bash', ['-c', 'command -v promtool']);
    expect(which.status, 'promtool is missing: apt-get install -y --no-install-recommends prometheus').toBe(0);
    const text = (await scrape(base)).text;
    const r = await shr('promtool check metrics', { input: text, timeoutMs: 15_000 });
    expect(r.code, `promtool check metrics complained:\n${r.stdout}${r.stderr}`).toBe(0);
  });

  it('a real Prometheus server scrapes it: up == 1', async () => {
    const which = spawnSync('bash', ['-c', 'command -v prometheus']);
    expect(which.status, 'prometheus is missing: apt-get install -y --no-install-recommends prometheus').toBe(0);
    const dir = tempDir('prom');
    const promAddr = `127.0.0.1:${await freePort()}`;
    const cfgFile = join(dir, 'prometheus.yml');
    writeFileSync(cfgFile, [
      'global:',
      '  scrape_interval: 1s',
      '  scrape_timeout: 1s',
      'scrape_configs:',
      '  - job_name: vswitch',
      '    static_configs:',
      `      - targets: ['${metricsAddr}']`,
      '',
    ].join('\n'));
    let log = '';
    const prom: ChildProcess = spawnTracked('prometheus', [
      `--config.file=${cfgFile}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=${promAddr}`,
      '--log.level=warn',
    ], { cwd: dir });
    prom.stdout!.setEncoding('utf8').on('data', (s: string) => { log += s; });
    prom.stderr!.setEncoding('utf8').on('data', (s: string) => { log += s; });
    try {
      const query = async (q: string): Promise<any[]> => {
        const r = await httpGet(`http://${promAddr}/api/v1/query?query=${encodeURIComponent(q)}`);
        if (r.status !== 200) throw new Error(`query ${q}: ${r.status} ${r.body}`);
        return JSON.parse(r.body).data.result as any[];
      };
      await waitFor('Prometheus to report up == 1 for the vswitch job', async () => {
        if (prom.exitCode !== null) throw new Error(`prometheus exited ${prom.exitCode}:\n${log}`);
        const res = await query('up{job="vswitch"}');
        if (res.length === 1 && res[0].value[1] !== '1') throw new Error(`up = ${res[0].value[1]} (scrape failing)`);
        return res.length === 1 && res[0].value[1] === '1';
      }, { timeoutMs: 20_000, intervalMs: 500 });
      // The samples were ingested too, with their labels.
      const ports = await query('vswitch_port_up{job="vswitch"}');
      expect(ports.map((s) => s.metric.port).sort()).toEqual([T.vm1, T.vm2].sort());
    } finally {
      if (prom.exitCode === null && prom.signalCode === null) {
        const exited = new Promise((r) => prom.once('exit', r));
        prom.kill('SIGTERM');
        await Promise.race([exited, sleep(5000)]);
        if (prom.exitCode === null && prom.signalCode === null) prom.kill('SIGKILL');
      }
      // The data dir goes with cleanup() (tempDir is registered).
    }
  });

  it('delif removes the port\'s series from the next scrape', async () => {
    await d.ok(['delif', BR, T.vm2]);
    const s = await scrape(base);
    expect(s.samples.filter((x) => x.labels.port === T.vm2), `series of ${T.vm2} left`).toEqual([]);
    expect(s.get('vswitch_port_up', { bridge: BR, port: T.vm1 })).toBe(1);
    expect(s.all('vswitch_port_drops_total', { port: T.vm1 })).toHaveLength(DROP_REASONS.length);
  });
});

describe('metrics listen address', () => {
  afterAll(async () => {
    await cleanup();
  });

  it('--metrics HOST:PORT overrides the config; --metrics off disables', async () => {
    const fromConfig = `127.0.0.1:${await freePort()}`;
    const fromFlag = `127.0.0.1:${await freePort()}`;
    const d = await startDaemon({ bridges: { br9: { ports: {} } }, metrics: { listen: fromConfig } }, { args: ['--metrics', fromFlag] });
    try {
      await d.waitForLog('metrics_listening');
      const s = await scrape(`http://${fromFlag}`);
      expect(s.get('vswitch_bridge_macs', { bridge: 'br9' })).toBe(0);
      await expect(httpGet(`http://${fromConfig}/healthz`)).rejects.toThrow();
      // A scraper's kept-alive connection (fetch keeps it) must not hold up SIGTERM.
      const stopped = await d.stop();
      expect(stopped, d.logText().slice(-2000)).toMatchObject({ code: 0, killed: false });
    } finally {
      await d.stop();
    }
    const off = await startDaemon({ bridges: { br9: { ports: {} } }, metrics: { listen: fromConfig } }, { args: ['--metrics', 'off'] });
    try {
      await sleep(300);
      expect(off.logsMatching('metrics_listening')).toEqual([]);
      await expect(httpGet(`http://${fromConfig}/healthz`)).rejects.toThrow();
    } finally {
      await off.stop();
    }
  });

  it('a metrics address in use stops the daemon from starting, with a message', async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const taken = `127.0.0.1:${(blocker.address() as { port: number }).port}`;
    try {
      const d = await startDaemon({ bridges: { br9: { ports: {} } }, metrics: { listen: taken } }, { noWait: true });
      expect(await d.waitExit(10_000), 'daemon should exit').toBe(true);
      expect(d.exitCode, d.logText()).not.toBe(0);
      expect(d.logText()).toMatch(/metrics/i);
      expect(d.logText()).toContain(taken);
    } finally {
      await new Promise((r) => blocker.close(r));
    }
  });
});

describe('metrics of a router across reloads', () => {
  const TAP = ifname('mr1');
  const UPLINK = ifname('mup'); // never created: the router waits for it (uplink down)
  let d: Daemon;
  let base: string;
  const config = (metricsAddr: string, stateDir: string, net20: boolean) => ({
    stateDir,
    metrics: { listen: metricsAddr },
    bridges: { br0: { ports: { [TAP]: { type: 'tap', vlan: { mode: 'access', vid: 10 } } } } },
    routers: {
      r0: {
        uplink: { interface: UPLINK, address: '198.51.100.2/24', gateway: '198.51.100.1' },
        networks: {
          net10: { bridge: 'br0', vlan: 10, address: '10.61.10.1/24', dhcp: { pool: ['10.61.10.100-10.61.10.199'] } },
          ...(net20 ? { net20: { bridge: 'br0', vlan: 20, address: '10.61.20.1/24', dhcp: { pool: ['10.61.20.100-10.61.20.199'] } } } : {}),
        },
      },
    },
  });
  let metricsAddr: string;
  let stateDir: string;

  beforeAll(async () => {
    metricsAddr = `127.0.0.1:${await freePort()}`;
    base = `http://${metricsAddr}`;
    stateDir = tempDir('mstate');
    d = await startDaemon(config(metricsAddr, stateDir, false));
    await d.waitForLog('metrics_listening');
  });

  afterAll(async () => {
    await d?.stop();
    await cleanup();
  });

  it('NAT: packets passed (ok, hairpin, local) and drops by reason are two metrics; promtool accepts the router metrics', async () => {
    const s = await scrape(base);
    expect(s.all('vswitch_nat_packets_total', { router: 'r0' }).map((x) => x.labels.result).sort()).toEqual(['hairpin', 'local', 'ok']);
    const reasons = s.all('vswitch_nat_dropped_total', { router: 'r0' }).map((x) => x.labels.reason);
    expect(reasons).toContain('no_session');
    expect(reasons).toContain('table_full');
    expect(reasons).not.toContain('ok');
    // The README's table of NAT drop reasons is this set.
    const readme = readFileSync(`${REPO}/README.md`, 'utf8');
    const section = readme.slice(readme.indexOf('### NAT drop reasons'), readme.indexOf('\n### ', readme.indexOf('### NAT drop reasons') + 5));
    expect([...section.matchAll(/^\| `([a-z_]+)` \|/gm)].map((m) => m[1]).sort()).toEqual([...reasons].sort());
    const r = await shr('promtool check metrics', { input: s.text, timeoutMs: 15_000 });
    expect(r.code, `promtool check metrics complained:\n${r.stdout}${r.stderr}`).toBe(0);
  });

  it('a refused reload sets vswitch_config_last_reload_successful to 0 and keeps the timestamp; one that rebuilds the router keeps its counters going', async () => {
    // Traffic the router counts: a DHCP lease (messages, the router port's frames).
    const vm = await makeDhcpVm('mr1', TAP);
    const lease = await udhcpcOnce(vm);
    expect(lease.code, lease.log).toBe(0);
    await sleep(1100); // past metrics.cacheInterval
    const before = await scrape(base);
    const net10 = { router: 'r0', network: 'net10', vlan: '10' };
    const port = { bridge: 'br0', port: 'net10', kind: 'router' };
    const carried: [string, Record<string, string>][] = [
      ['vswitch_dhcp_messages_total', { ...net10, type: 'discover' }],
      ['vswitch_dhcp_messages_total', { ...net10, type: 'ack' }],
      ['vswitch_dhcp_lease_writes_total', net10],
      ['vswitch_port_rx_frames_total', port],
      ['vswitch_port_tx_frames_total', port],
      ['vswitch_port_rx_bytes_total', port],
    ];
    for (const [name, l] of carried) expect(before.get(name, l), `${name} ${JSON.stringify(l)} before`).toBeGreaterThan(0);
    const t0 = before.get('vswitch_config_last_reload_success_timestamp_seconds');

    // Refused: the gauge says so, the timestamp stays that of the last good load.
    writeFileSync(d.configFile, 'bridges: [nonsense\n');
    expect((await d.cli(['reload'])).code).toBe(1);
    await sleep(1100);
    const refused = await scrape(base);
    expect(refused.get('vswitch_config_last_reload_successful')).toBe(0);
    expect(refused.get('vswitch_config_last_reload_success_timestamp_seconds')).toBe(t0);

    // A second network: the router is rebuilt (new objects inside), net10 stays.
    writeFileSync(d.configFile, toYaml(config(metricsAddr, stateDir, true)));
    const r = await d.cli(['reload']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/rebuild router r0/);
    await sleep(1100);
    const after = await scrape(base);
    expect(after.get('vswitch_config_last_reload_successful')).toBe(1);
    expect(after.get('vswitch_config_last_reload_success_timestamp_seconds')).toBeGreaterThan(t0);
    // Counters never go down across the rebuild (main: back to 0, a counter reset for rate()).
    for (const [name, l] of carried) {
      expect(after.get(name, l), `${name} ${JSON.stringify(l)}: ${before.get(name, l)} before the rebuild`).toBeGreaterThanOrEqual(before.get(name, l));
    }
    // And go on counting: a renewal adds to them.
    const again = await udhcpcOnce(vm);
    expect(again.code, again.log).toBe(0);
    await sleep(1100);
    const later = await scrape(base);
    expect(later.get('vswitch_dhcp_messages_total', { ...net10, type: 'ack' })).toBeGreaterThan(before.get('vswitch_dhcp_messages_total', { ...net10, type: 'ack' }));
    // The new network's series start at 0.
    expect(later.get('vswitch_dhcp_messages_total', { router: 'r0', network: 'net20', vlan: '20', type: 'ack' })).toBe(0);
  });
});
