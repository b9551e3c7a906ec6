import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { Drop, DROP_REASONS, MAX_DEFERRED, type PortIo, type PortRx } from '@vswitch/switch';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { handlers } from './handlers.js';
import { NaptResult } from '@vswitch/nat';
import { ConfigSchema } from '../config.js';
import {
  buildRevision, createMetricsRegistry, NAT_DROP_REASONS, NAT_PASSED, parseListen, renderSliced, startMetrics, type MetricsServer,
  type ReloadStatus, VERSION,
} from './metrics.js';
import { Vswitch } from './service.js';

const log = pino({ level: 'silent' });

/** A port device that only remembers what the bridge gave it. */
class FakeIo implements PortIo {
  readonly kind = 'tap' as const;
  rx: PortRx | undefined;
  sent = 0;
  constructor(readonly ifname: string) {}
  start(rx: PortRx): void { this.rx = rx; }
  send(_b: Uint8Array, _o: number, len: number): number { this.sent++; return len; }
  send2(_a: Uint8Array, _ao: number, alen: number, _b: Uint8Array, _bo: number, blen: number): number { this.sent++; return alen + blen; }
  close(): void {}
  describe(): Record<string, string | number | boolean> { return { ifname: this.ifname }; }
}

function frame(dst: number, src: number, len = 60): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < 6; i++) {
    b[i] = Math.floor(dst / 256 ** (5 - i)) % 256;
    b[6 + i] = Math.floor(src / 256 ** (5 - i)) % 256;
  }
  b[12] = 0x08;
  return b;
}

function makeSwitch(): { sw: Vswitch; a: FakeIo; b: FakeIo } {
  const sw = new Vswitch(log);
  const br = sw.addBridge('br0');
  const a = new FakeIo('tapa');
  const b = new FakeIo('tapb');
  br.addPort('tapa', a);
  br.addPort('tapb', b);
  br.fdb.setPortLimit(br.port('tapb')!.id, 5);
  return { sw, a, b };
}

/** name{labels} -> value, from the text format. */
function parse(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    m.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return m;
}

describe('metrics registry', () => {
  it('reads the data plane counters at scrape time', async () => {
    const { sw, a } = makeSwitch();
    const reg = createMetricsRegistry(sw, { defaultMetrics: false });
    const br = sw.bridge('br0');
    const A = 0x020000000001;
    const B = 0x020000000002;
    a.rx!.frame(frame(0xffffffffffff, A), 0, 60); // broadcast: floods to tapb
    a.rx!.frame(frame(B, A, 100), 0, 100); // unknown unicast: floods
    a.rx!.frame(frame(A, 0), 0, 60); // bad source MAC
    br.port('tapb')!.drops[Drop.tx_error] += 2;
    const s = parse(await reg.metrics());
    const pa = 'bridge="br0",port="tapa",kind="tap"';
    const pb = 'bridge="br0",port="tapb",kind="tap"';
    expect(s.get(`vswitch_port_rx_frames_total{${pa}}`)).toBe(3);
    expect(s.get(`vswitch_port_rx_bytes_total{${pa}}`)).toBe(220);
    expect(s.get(`vswitch_port_tx_frames_total{${pb}}`)).toBe(2);
    expect(s.get(`vswitch_port_tx_bytes_total{${pb}}`)).toBe(160);
    expect(s.get(`vswitch_port_drops_total{${pa},reason="bad_src_mac"}`)).toBe(1);
    expect(s.get(`vswitch_port_drops_total{${pa},reason="malformed"}`)).toBe(0);
    expect(s.get(`vswitch_port_drops_total{${pb},reason="tx_error"}`)).toBe(2);
    expect([...s.keys()].filter((k) => k.startsWith('vswitch_port_drops_total{')).length).toBe(2 * DROP_REASONS.length);
    expect(s.get(`vswitch_port_up{${pa}}`)).toBe(1);
    expect(s.get(`vswitch_port_macs{${pa}}`)).toBe(1);
    expect(s.get(`vswitch_port_max_macs{${pb}}`)).toBe(5);
    expect(s.has(`vswitch_port_max_macs{${pa}}`)).toBe(false);
    expect(s.get('vswitch_bridge_macs{bridge="br0"}')).toBe(1);
    expect(s.get('vswitch_bridge_max_macs{bridge="br0"}')).toBe(8192);
    expect(s.get('vswitch_bridge_mac_learned_total{bridge="br0"}')).toBe(1);
    expect(s.get('vswitch_bridge_flooded_frames_total{bridge="br0",kind="group"}')).toBe(1);
    expect(s.get('vswitch_bridge_flooded_frames_total{bridge="br0",kind="unknown_unicast"}')).toBe(1);
    expect(s.get('vswitch_bridge_forwarded_frames_total{bridge="br0"}')).toBe(0);
    expect(s.get('vswitch_bridge_mac_refused_total{bridge="br0",reason="table_full"}')).toBe(0);
    expect(s.get(`vswitch_info{version="${VERSION}"}`)).toBe(1);
    expect(s.get(`vswitch_build_info{version="${VERSION}",revision="${buildRevision()}",nodejs_version="${process.versions.node}"}`)).toBe(1);
    // Without a reload status (a Vswitch built by hand) the reload gauges are absent, not made up.
    expect([...s.keys()].filter((k) => k.startsWith('vswitch_config_'))).toEqual([]);

    // More traffic: the next scrape shows the new totals (not doubled by the reset-and-refill).
    a.rx!.frame(frame(0xffffffffffff, A), 0, 60);
    const s2 = parse(await reg.metrics());
    expect(s2.get(`vswitch_port_rx_frames_total{${pa}}`)).toBe(4);
    expect(s2.get('vswitch_bridge_flooded_frames_total{bridge="br0",kind="group"}')).toBe(2);

    // A removed port's series disappear; so do a removed bridge's.
    sw.delPort('br0', 'tapa');
    const s3 = await reg.metrics();
    expect(s3).not.toContain('port="tapa"');
    expect(s3).toContain('port="tapb"');
    sw.delBridge('br0');
    const s4 = await reg.metrics();
    expect(s4).not.toContain('bridge="br0"');
    expect(s4).toContain('vswitch_info{');
    sw.close();
  });

  it('frames dropped because too many waited behind the one being forwarded reach metrics and stats', async () => {
    const { sw, a, b } = makeSwitch();
    const reg = createMetricsRegistry(sw, { defaultMetrics: false });
    const R = 0x0200000000aa;
    const answer = frame(0xffffffffffff, R);
    // tapb answers its first frame as a router port may, from inside send(): these wait, and past MAX_DEFERRED are dropped.
    let answered = false;
    b.send = (_b, _o, len) => {
      if (!answered) {
        answered = true;
        for (let i = 0; i < MAX_DEFERRED + 3; i++) b.rx!.frame(answer, 0, 60);
      }
      return len;
    };
    a.rx!.frame(frame(0xffffffffffff, 0x020000000001), 0, 60);
    expect(sw.bridge('br0').deferredDropped).toBe(3);
    const s = parse(await reg.metrics());
    expect(s.get('vswitch_bridge_deferred_dropped_total{bridge="br0"}')).toBe(3);
    const stats = handlers.stats(sw, {}) as { name: string; deferredDropped: number }[];
    expect(stats.find((x) => x.name === 'br0')?.deferredDropped).toBe(3);
    sw.close();
  });

  it('renderSliced: the same text as Registry.metrics(), with the event loop let in between metrics', async () => {
    const { sw } = makeSwitch();
    const reg = createMetricsRegistry(sw, { defaultMetrics: false });
    let turns = 0;
    const tick = (): void => { turns++; if (turns < 1000) setImmediate(tick); };
    setImmediate(tick);
    const sliced = await renderSliced(reg);
    const seen = turns;
    expect(sliced).toBe(await reg.metrics());
    // One turn of the loop per metric (Registry.metrics() alone runs in one: microtasks only).
    expect(seen).toBeGreaterThanOrEqual(reg.getMetricsAsArray().length - 1);
    turns = 1000;
    sw.close();
  });

  it('vswitch_flow_cache_enabled: 1 for a bridge by default (addbr), 0 once bridge set turns it off, per bridge; setageing and other bridge set keys keep it off', async () => {
    const { sw } = makeSwitch();
    sw.addBridge('br1');
    const reg = createMetricsRegistry(sw, { defaultMetrics: false });
    let s = parse(await reg.metrics());
    expect(s.get('vswitch_flow_cache_enabled{bridge="br0"}')).toBe(1);
    expect(s.get('vswitch_flow_cache_enabled{bridge="br1"}')).toBe(1);
    expect(sw.bridgeLoop('br1', {}, false).flowCache).toBe(false);
    s = parse(await reg.metrics());
    expect(s.get('vswitch_flow_cache_enabled{bridge="br0"}')).toBe(1);
    expect(s.get('vswitch_flow_cache_enabled{bridge="br1"}')).toBe(0);
    expect(sw.bridge('br1').flowCache).toBe(false);
    // Other changes of the runtime bridge's definition keep it off.
    sw.setAgeing('br1', 100);
    sw.bridgeLoop('br1', { macFlapMoves: 5 });
    expect(sw.bridge('br1').flowCache).toBe(false);
    expect(() => sw.bridgeLoop('br1', {})).toThrow(/nothing to set/);
  });

  it('vswitch_bridge_read_sparse: 1 for a bridge by default, 0 once bridge set turns it off; the early services counter is there', async () => {
    const { sw } = makeSwitch();
    sw.addBridge('br1');
    const reg = createMetricsRegistry(sw, { defaultMetrics: false });
    let s = parse(await reg.metrics());
    expect(s.get('vswitch_bridge_read_sparse{bridge="br0"}')).toBe(1);
    expect(s.get('vswitch_bridge_read_sparse{bridge="br1"}')).toBe(1);
    expect(sw.bridgeLoop('br1', { readSparse: false }).readSparse).toBe(false);
    s = parse(await reg.metrics());
    expect(s.get('vswitch_bridge_read_sparse{bridge="br0"}')).toBe(1);
    expect(s.get('vswitch_bridge_read_sparse{bridge="br1"}')).toBe(0);
    // The addon's count, whatever this process's other tests served early.
    expect(s.get('vswitch_read_sparse_first_total')).toBeGreaterThanOrEqual(0);
    sw.close();
  });

  it('poll before sleep: off (0) by default, the settings once vswitch set changes them, its counters; bad values refused', async () => {
    const { sw } = makeSwitch();
    const reg = createMetricsRegistry(sw, { defaultMetrics: false });
    try {
      let s = parse(await reg.metrics());
      expect(s.get('vswitch_poll_before_sleep_max_seconds')).toBe(0);
      expect(s.get('vswitch_poll_before_sleep_window_seconds')).toBe(0);
      expect(s.get('vswitch_poll_before_sleep_budget_seconds')).toBe(0.2);
      expect(s.get('vswitch_poll_before_sleep_total{outcome="hit"}')).toBeGreaterThanOrEqual(0);
      expect(s.get('vswitch_poll_before_sleep_total{outcome="miss"}')).toBeGreaterThanOrEqual(0);
      expect(s.get('vswitch_poll_before_sleep_total{outcome="over_budget"}')).toBeGreaterThanOrEqual(0);
      expect(s.get('vswitch_poll_before_sleep_seconds_total')).toBeGreaterThanOrEqual(0);
      expect(s.get('vswitch_poll_before_sleep_preempted_total')).toBeGreaterThanOrEqual(0);
      // Each reason a sleep went unpolled is its own outcome; the pressure's samples by verdict.
      expect(s.get('vswitch_poll_before_sleep_total{outcome="host_busy"}')).toBeGreaterThanOrEqual(0);
      expect(s.get('vswitch_poll_before_sleep_served_total')).toBeGreaterThanOrEqual(0);
      expect(s.get('vswitch_poll_before_sleep_holds_total')).toBeGreaterThanOrEqual(0);
      expect(s.get('vswitch_poll_before_sleep_pressure_samples_total{verdict="calm"}')).toBeGreaterThanOrEqual(0);
      expect(s.get('vswitch_poll_before_sleep_pressure_samples_total{verdict="busy"}')).toBeGreaterThanOrEqual(0);
      expect(s.get('vswitch_poll_before_sleep_pressure_ratio')).toBeGreaterThanOrEqual(0);
      expect(s.get('vswitch_poll_before_sleep_busy_pressure_ratio')).toBe(0); // off: not used
      expect(() => sw.daemonSet({ pollBeforeSleepUs: 1001 })).toThrow(/pollBeforeSleepUs must be a whole number 0-1000/);
      expect(() => sw.daemonSet({})).toThrow(/nothing to set/);
      expect(sw.daemonSet({ pollBeforeSleepUs: 40, pollBeforeSleepBudgetMs: 10 })).toMatchObject({ pollBeforeSleepUs: 40, pollBeforeSleepBudgetMs: 10 });
      s = parse(await reg.metrics());
      expect(s.get('vswitch_poll_before_sleep_max_seconds')).toBe(40e-6);
      expect(s.get('vswitch_poll_before_sleep_budget_seconds')).toBe(0.01);
      // On: the CPU pressure that holds it (20 %), where the host has PSI.
      expect(s.get('vswitch_poll_before_sleep_busy_pressure_ratio')).toBe(existsSync('/proc/pressure/cpu') ? 0.2 : 0);
      expect([...(sw.daemonView().overrides as string[])].sort()).toEqual(['pollBeforeSleepBudgetMs', 'pollBeforeSleepUs']);
    } finally {
      sw.close();
    }
    // Closing turns it off: the addon's loop is the process's.
    expect(parse(await reg.metrics()).get('vswitch_poll_before_sleep_max_seconds')).toBe(0);
  });

  it('batched TAP writes: the switch in force, its counters; vswitch set turns it on and off; bad values refused', async () => {
    const { sw } = makeSwitch();
    const reg = createMetricsRegistry(sw, { defaultMetrics: false });
    try {
      let s = parse(await reg.metrics());
      // What the switch was told (a Vswitch applies its default with its first config).
      expect(s.get('vswitch_tap_write_batch_enabled')).toBe(sw.tapWriteBatchOn ? 1 : 0);
      for (const m of ['frames', 'flushes', 'unsent']) expect(s.get(`vswitch_tap_write_batch_${m}_total`)).toBeGreaterThanOrEqual(0);
      expect(() => sw.daemonSet({ tapWriteBatch: 1 as unknown as boolean })).toThrow(/tapWriteBatch must be true or false/);
      expect(sw.daemonSet({ tapWriteBatch: true }).tapWriteBatch).toMatchObject({ want: true, on: true, error: null });
      expect(parse(await reg.metrics()).get('vswitch_tap_write_batch_enabled')).toBe(1);
      expect(sw.daemonSet({ tapWriteBatch: false }).tapWriteBatch).toMatchObject({ want: false, on: false });
      s = parse(await reg.metrics());
      expect(s.get('vswitch_tap_write_batch_enabled')).toBe(0);
      sw.daemonSet({ tapWriteBatch: true });
    } finally {
      sw.close();
    }
    // Closing turns it off: the addon's ring is the process's.
    expect(parse(await reg.metrics()).get('vswitch_tap_write_batch_enabled')).toBe(0);
  });

  it('the turn yield: its interval in force (the default once configured), its count; vswitch set changes it; bad values refused', async () => {
    const { sw } = makeSwitch();
    const reg = createMetricsRegistry(sw, { defaultMetrics: false });
    try {
      let s = parse(await reg.metrics());
      expect(s.get('vswitch_turn_yield_interval_seconds')).toBe(sw.turnYieldUs / 1e6);
      expect(s.get('vswitch_turn_yields_total')).toBeGreaterThanOrEqual(0);
      expect(s.get('vswitch_turn_yield_seconds_total')).toBeGreaterThanOrEqual(0);
      expect(() => sw.daemonSet({ turnYieldUs: 100001 })).toThrow(/turnYieldUs must be a whole number 0-100000/);
      expect(sw.daemonSet({ turnYieldUs: 250 }).turnYield).toMatchObject({ us: 250 });
      expect(parse(await reg.metrics()).get('vswitch_turn_yield_interval_seconds')).toBe(0.00025);
      expect(sw.daemonSet({ turnYieldUs: 0 }).turnYield).toMatchObject({ us: 0 });
      s = parse(await reg.metrics());
      expect(s.get('vswitch_turn_yield_interval_seconds')).toBe(0);
      sw.daemonSet({ turnYieldUs: 500 });
    } finally {
      sw.close();
    }
    // Closing turns it off: the addon's loop is the process's.
    expect(parse(await reg.metrics()).get('vswitch_turn_yield_interval_seconds')).toBe(0);
  });

  it('includes the standard process metrics', async () => {
    const sw = new Vswitch(log);
    const text = await createMetricsRegistry(sw).metrics();
    expect(text).toMatch(/^process_cpu_seconds_total /m);
    expect(text).toMatch(/^process_resident_memory_bytes /m);
    expect(text).toMatch(/^nodejs_version_info\{/m);
  });
});

describe('build info, reload status', () => {
  it('vswitch_build_info names the commit this tree is at (git), vswitch_info stays one release (deprecated)', async () => {
    const head = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: new URL('.', import.meta.url), encoding: 'utf8' }).trim();
    expect(buildRevision()).toBe(head);
    const text = await createMetricsRegistry(new Vswitch(log), { defaultMetrics: false }).metrics();
    expect(text).toContain(`vswitch_build_info{version="${VERSION}",revision="${head}",nodejs_version="${process.versions.node}"} 1`);
    expect(text).toMatch(/# HELP vswitch_info DEPRECATED, use vswitch_build_info/);
  });

  it('vswitch_config_last_reload_successful and _success_timestamp_seconds follow the status they are given', async () => {
    const st: ReloadStatus = { successful: true, lastSuccessMs: 1_700_000_000_500 };
    const reg = createMetricsRegistry(new Vswitch(log), { defaultMetrics: false, reload: () => st });
    let s = parse(await reg.metrics());
    expect(s.get('vswitch_config_last_reload_successful')).toBe(1);
    expect(s.get('vswitch_config_last_reload_success_timestamp_seconds')).toBe(1_700_000_000.5);
    st.successful = false;
    s = parse(await reg.metrics());
    expect(s.get('vswitch_config_last_reload_successful')).toBe(0);
    expect(s.get('vswitch_config_last_reload_success_timestamp_seconds')).toBe(1_700_000_000.5);
  });
});

describe('router metrics', () => {
  const routerConfig = (extraNetwork: boolean, interconnect = false) => ConfigSchema.parse({
    bridges: { br0: {} },
    routers: {
      r0: {
        uplink: { interface: 'nonexistent0', address: '198.51.100.2/24', gateway: '198.51.100.1' },
        ...(interconnect ? { interconnect: [['net10', 'net20']] } : {}),
        networks: {
          net10: { bridge: 'br0', vlan: 10, address: '10.0.10.1/24', dhcp: { pool: ['10.0.10.100-10.0.10.199'] } },
          ...(extraNetwork ? { net30: { bridge: 'br0', vlan: 30, address: '10.0.30.1/24' } } : {}),
          net20: { bridge: 'br0', vlan: 20, address: '10.0.20.1/24' },
        },
      },
    },
  });

  it('NAT packets passed and dropped are two metrics; every drop reason exported, zeros included', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vsw-metrics-'));
    const sw = new Vswitch(log);
    try {
      sw.apply({ ...routerConfig(false), stateDir: dir });
      const napt = sw.router('r0').router.napt!;
      napt.counts[NaptResult.ok] = 7;
      napt.counts[NaptResult.local] = 2;
      napt.counts[NaptResult.no_session] = 3;
      napt.counts[NaptResult.table_full] = 1;
      const s = parse(await createMetricsRegistry(sw, { defaultMetrics: false }).metrics());
      const keys = [...s.keys()];
      expect(keys.filter((k) => k.startsWith('vswitch_nat_packets_total{')).sort()).toEqual(
        NAT_PASSED.map((r) => `vswitch_nat_packets_total{router="r0",result="${r}"}`).sort());
      expect(keys.filter((k) => k.startsWith('vswitch_nat_dropped_total{'))).toHaveLength(NAT_DROP_REASONS.length);
      expect(NAT_DROP_REASONS).not.toContain('ok');
      expect(NAT_DROP_REASONS).toContain('no_public_address');
      expect(s.get('vswitch_nat_packets_total{router="r0",result="ok"}')).toBe(7);
      expect(s.get('vswitch_nat_packets_total{router="r0",result="local"}')).toBe(2);
      expect(s.get('vswitch_nat_packets_total{router="r0",result="hairpin"}')).toBe(0);
      expect(s.get('vswitch_nat_dropped_total{router="r0",reason="no_session"}')).toBe(3);
      expect(s.get('vswitch_nat_dropped_total{router="r0",reason="table_full"}')).toBe(1);
      expect(s.get('vswitch_nat_dropped_total{router="r0",reason="filtered"}')).toBe(0);
    } finally {
      sw.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a reload that rebuilds a router keeps the counters of what it keeps (router, NAPT, DHCP, its network ports); gauges are current', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vsw-metrics-'));
    const sw = new Vswitch(log);
    try {
      sw.apply({ ...routerConfig(false), stateDir: dir });
      const reg = createMetricsRegistry(sw, { defaultMetrics: false });
      const bump = (n: number): void => {
        const mr = sw.router('r0');
        mr.router.counters.prohibited += n;
        mr.router.napt!.counts[NaptResult.no_session] += n;
        mr.router.networks.get('net10')!.opts.dhcp!.counters.discovers += n;
        sw.bridge('br0').port('net10')!.rxFrames += n;
        sw.bridge('br0').port('net20')!.drops[Drop.tx_error] += n;
      };
      bump(5);
      const before = sw.router('r0');
      // The router's ports also count their own frames (the gateway's gratuitous ARP at start).
      const rx10 = (): number => sw.bridge('br0').port('net10')!.rxFrames;
      const rxKey = (net: string) => `vswitch_port_rx_frames_total{bridge="br0",port="${net}",kind="router"}`;
      const rx0 = parse(await reg.metrics()).get(rxKey('net10'))!;
      expect(rx0).toBe(rx10());
      // A new network: the router is rebuilt (new objects, counters at 0 inside).
      const changes = sw.reload({ ...routerConfig(true), stateDir: dir });
      expect(changes.join('\n')).toMatch(/rebuild router r0/);
      expect(sw.router('r0')).not.toBe(before);
      expect(sw.router('r0').router.counters.prohibited).toBe(0);
      bump(1);
      let s = parse(await reg.metrics());
      expect(s.get('vswitch_router_packets_total{router="r0",path="prohibited"}')).toBe(6);
      expect(s.get('vswitch_nat_dropped_total{router="r0",reason="no_session"}')).toBe(6);
      expect(s.get('vswitch_dhcp_messages_total{router="r0",network="net10",vlan="10",type="discover"}')).toBe(6);
      expect(s.get(rxKey('net10'))).toBe(rx0 + rx10());
      expect(rx10()).toBeLessThan(rx0);
      expect(s.get('vswitch_port_drops_total{bridge="br0",port="net20",kind="router",reason="tx_error"}')).toBe(6);
      // The new network starts from 0; gauges are not carried (the pool is the new one's).
      expect(s.get(rxKey('net30'))).toBe(sw.bridge('br0').port('net30')!.rxFrames);
      expect(s.get('vswitch_dhcp_pool_size{router="r0",network="net10",vlan="10"}')).toBe(100);
      // Rebuilt twice: the carry adds up.
      const rx1 = s.get(rxKey('net10'))!;
      sw.reload({ ...routerConfig(true, true), stateDir: dir });
      bump(1);
      s = parse(await reg.metrics());
      expect(s.get('vswitch_router_packets_total{router="r0",path="prohibited"}')).toBe(7);
      expect(s.get(rxKey('net10'))).toBe(rx1 + rx10());
      // A network removed by a rebuild takes its series along; one added back later starts at 0.
      sw.reload({ ...routerConfig(false, false), stateDir: dir });
      s = parse(await reg.metrics());
      expect([...s.keys()].filter((k) => k.includes('net30'))).toEqual([]);
      expect(s.get('vswitch_router_packets_total{router="r0",path="prohibited"}')).toBe(7);
      // A router removed for good: its series go; added again, it starts from 0.
      sw.reload({ ...ConfigSchema.parse({ bridges: { br0: {} } }), stateDir: dir });
      expect((await reg.metrics())).not.toContain('router="r0"');
      sw.reload({ ...routerConfig(false), stateDir: dir });
      s = parse(await reg.metrics());
      expect(s.get('vswitch_router_packets_total{router="r0",path="prohibited"}')).toBe(0);
      expect(s.get(rxKey('net10'))).toBe(rx10());
      expect(rx10()).toBeLessThan(5);
    } finally {
      sw.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('parseListen', () => {
  it('accepts host:port and [v6]:port', () => {
    expect(parseListen('127.0.0.1:9464')).toEqual({ host: '127.0.0.1', port: 9464 });
    expect(parseListen('[::1]:9464')).toEqual({ host: '::1', port: 9464 });
    expect(parseListen('localhost:1')).toEqual({ host: 'localhost', port: 1 });
  });
  it('refuses the rest', () => {
    for (const bad of ['9464', '::1:9464', '127.0.0.1:', '127.0.0.1:65536', 'a b:1']) {
      expect(() => parseListen(bad), bad).toThrow(/listen address/);
    }
  });
});

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

function http(port: number, method: string, path: string): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; }).on('end', () => resolve({ status: res.statusCode!, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('startMetrics', () => {
  let server: MetricsServer | undefined;
  afterEach(async () => { await server?.close(); server = undefined; });

  it('serves /metrics and /healthz, 404 and 405 otherwise', async () => {
    const { sw } = makeSwitch();
    const port = await freePort();
    server = await startMetrics(sw, `127.0.0.1:${port}`, log);
    const m = await http(port, 'GET', '/metrics');
    expect(m.status).toBe(200);
    expect(m.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(m.body).toContain('vswitch_port_rx_frames_total{bridge="br0",port="tapa",kind="tap"} 0');
    const h = await http(port, 'GET', '/healthz');
    expect([h.status, h.body]).toEqual([200, 'ok\n']);
    expect((await http(port, 'GET', '/nope')).status).toBe(404);
    const p = await http(port, 'POST', '/metrics');
    expect(p.status).toBe(405);
    expect(p.headers.allow).toBe('GET, HEAD');
    expect((await http(port, 'HEAD', '/metrics')).status).toBe(200);
    await server.close();
    server = undefined;
    await expect(http(port, 'GET', '/healthz')).rejects.toThrow(/ECONNREFUSED/);
    sw.close();
  });

  it('rejects when the address is taken or bad', async () => {
    const sw = new Vswitch(log);
    const port = await freePort();
    server = await startMetrics(sw, `127.0.0.1:${port}`, log);
    await expect(startMetrics(sw, `127.0.0.1:${port}`, log)).rejects.toThrow(/EADDRINUSE/);
    await expect(startMetrics(sw, 'nonsense', log)).rejects.toThrow(/listen address/);
  });
});
