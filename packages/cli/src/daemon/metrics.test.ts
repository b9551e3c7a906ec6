import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Drop, DROP_REASONS, MAX_DEFERRED, type PortIo, type PortRx } from '@vswitch/switch';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { handlers } from './handlers.js';
import { createMetricsRegistry, parseListen, renderSliced, startMetrics, type MetricsServer, VERSION } from './metrics.js';
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

  it('includes the standard process metrics', async () => {
    const sw = new Vswitch(log);
    const text = await createMetricsRegistry(sw).metrics();
    expect(text).toMatch(/^process_cpu_seconds_total /m);
    expect(text).toMatch(/^process_resident_memory_bytes /m);
    expect(text).toMatch(/^nodejs_version_info\{/m);
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
