/*
 * `vswitch monitor` (issue 18): a live stream of the daemon's events over the
 * control socket, as `bridge monitor` gives. A monitor client (the CLI, `--json`
 * and text) sees, as they happen: ports added and removed, a port going down and
 * up (its TAP deleted and recreated), MACs learned and moved (scapy frames), aged
 * (ageing 1 s), a DHCP lease granted (udhcpc) and one expiring (a lease file
 * written before the start, due 12 s later), the router's uplink going down and up
 * (its veth deleted and recreated), reloads applied and refused; the uplink's
 * and the reloads' events are logged too, at their levels (uplink down: warn).
 *
 * Bounded per client: a client that subscribes and stops reading while a VM floods
 * random source MACs gets its events dropped and counted past 64 KiB queued in the
 * daemon (monitor --stats: pending bytes stay under the bound, the daemon's RSS
 * stays flat), a client that reads meanwhile misses nothing it was sent, and once
 * the slow one reads again its first line after the backlog says how many it
 * missed. On main there is no monitor at all.
 */
import type { ChildProcess } from 'node:child_process';
import { createConnection, type Socket } from 'node:net';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, startDaemon } from './helpers/daemon.js';
import { makeDhcpVm, udhcpcOnce } from './helpers/dhcp.js';
import { makeInternet, type Internet } from './helpers/inet.js';
import { MAIN_JS, addVeth, cleanup, ifname, nsExec, nsname, q, sh, sleep, spawnTracked, tempDir, toolFile, trackLink, waitFor } from './helpers/run.js';
import { makeVm, type Vm } from './helpers/vm.js';
import { PYTHON } from './helpers/scapy.js';

const T = { d: ifname('md'), a: ifname('ma'), b: ifname('mb'), x: ifname('mx') };
const EXPIRING_MAC = '02:00:00:00:75:99';
// Fresh MACs for the VMs: a TAP's own MAC is learned from its IPv6 chatter in the root
// namespace before the test's monitors subscribe.
const MAC = { d: '02:00:00:75:00:0d', a: '02:00:00:75:00:0a', b: '02:00:00:75:00:0b' };

/** A `vswitch monitor` process; its lines as they arrive. */
class Monitor {
  readonly lines: string[] = [];
  readonly proc: ChildProcess;
  #buf = '';

  constructor(socket: string, json: boolean) {
    this.proc = spawnTracked(process.execPath, [MAIN_JS, 'monitor', ...(json ? ['--json'] : [])], {
      env: { ...process.env, VSWITCH_SOCKET: socket },
    }, 'TERM');
    this.proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
      this.#buf += d;
      let i: number;
      while ((i = this.#buf.indexOf('\n')) >= 0) {
        this.lines.push(this.#buf.slice(0, i));
        this.#buf = this.#buf.slice(i + 1);
      }
    });
  }

  events(): any[] {
    return this.lines.map((l) => JSON.parse(l));
  }

  async waitEvent(what: string, match: (e: any) => boolean, timeoutMs = 15_000): Promise<any> {
    return waitFor(`monitor event ${what}`, () => this.events().find(match), { timeoutMs });
  }

  stop(): void {
    this.proc.kill('SIGTERM');
  }
}

const FLOOD_PY = String.raw`
import os, socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
n = 0
end = time.time() + float(sys.argv[2])
while time.time() < end:
    m = bytearray(os.urandom(6)); m[0] = (m[0] & 0xfc) | 0x02
    try: s.send(b'\xff' * 6 + bytes(m) + b'\x88\xb5' + b'monitorflood' * 4); n += 1
    except OSError: time.sleep(0.0005)
    if n % 50 == 0: time.sleep(0.001)
print(n)
`;

const rss = async (pid: number): Promise<number> => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);

describe('vswitch monitor: a live, bounded event stream', () => {
  let d: Daemon;
  let inet: Internet;
  let json: Monitor;
  let text: Monitor;
  let stateDir: string;
  const cfg = (): Record<string, unknown> => ({
    stateDir,
    metrics: { listen: 'off' },
    bridges: {
      br0: {
        ports: {
          [T.d]: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
          [T.a]: { type: 'tap', vlan: { mode: 'access', vid: 20 } },
          [T.b]: { type: 'tap', vlan: { mode: 'access', vid: 20 } },
        },
      },
    },
    routers: {
      r0: {
        uplink: { interface: inet.uplink, address: '198.51.100.2/24', gateway: '198.51.100.1' },
        networks: { net10: { bridge: 'br0', vlan: 10, address: '10.75.10.1/24', dhcp: { pool: ['10.75.10.100-10.75.10.120'] } } },
      },
    },
  });

  beforeAll(async () => {
    Object.values(T).forEach(trackLink);
    inet = await makeInternet('minet');
    stateDir = tempDir('mstate');
    // A lease that expires 12 s after it is written: the router's expiry shows as
    // dhcp_expired. Not sooner: a loaded machine may take seconds to start the
    // daemon, and a lease already expired when loaded is dropped without an event.
    await sh(`mkdir -p ${q(stateDir)}`);
    writeFileSync(join(stateDir, 'leases-net10.json'), JSON.stringify({
      version: 1, network: 'net10', leases: [{ ip: '10.75.10.120', mac: EXPIRING_MAC, expiresAt: Date.now() + 12_000 }],
    }));
    d = await startDaemon(cfg());
    json = new Monitor(d.socket, true);
    text = new Monitor(d.socket, false);
    await waitFor('two monitor clients', async () => (await d.ok(['monitor', '--stats'], { json: true })).json.clients.length === 2);
  });

  afterAll(async () => {
    json?.stop();
    text?.stop();
    await d?.stop();
    await cleanup();
  });

  it('ports added and removed, a lease expiring, a lease granted and the VM\'s MAC learned', async () => {
    await d.ok(['addif', 'br0', T.x, '--vlan', '20']);
    await json.waitEvent('port_added', (e) => e.event === 'port_added' && e.port === T.x && e.bridge === 'br0');
    await d.ok(['delif', 'br0', T.x]);
    await json.waitEvent('port_removed', (e) => e.event === 'port_removed' && e.port === T.x);
    await json.waitEvent('dhcp_expired', (e) => e.event === 'dhcp_expired' && e.router === 'r0' && e.network === 'net10' && e.count === 1, 30_000);
    const vm = await makeDhcpVm('md', T.d, MAC.d);
    expect(vm.mac).toBe(MAC.d);
    const r = await udhcpcOnce(vm, { tries: 5 });
    expect(r.code, r.log).toBe(0);
    const ack = await json.waitEvent('dhcp_ack', (e) => e.event === 'dhcp_ack' && e.mac === vm.mac);
    expect(ack).toMatchObject({ router: 'r0', network: 'net10', ip: r.lease!.ip, port: T.d });
    expect(typeof ack.time).toBe('string');
    await json.waitEvent('mac_learned', (e) => e.event === 'mac_learned' && e.mac === vm.mac && e.port === T.d && e.vlan === 10);
    // The text client printed the same, as lines a person reads.
    await waitFor('text lines', () => text.lines.some((l) => l.includes(`lease ${r.lease!.ip} granted to ${vm.mac} on ${T.d} (r0/net10)`)));
    expect(text.lines.some((l) => l.includes(`mac ${vm.mac} vlan 10 learned on ${T.d} (br0)`))).toBe(true);
    expect(text.lines.some((l) => /^\[\d\d:\d\d:\d\d\.\d{3}\] port \S+ added \(tap\) \(br0\)$/.test(l))).toBe(true);
  });

  it('a MAC moving between ports, MACs ageing out', async () => {
    const va: Vm = await makeVm('ma', T.a, '10.75.20.11/24');
    const vb: Vm = await makeVm('mb', T.b, '10.75.20.12/24');
    await nsExec(va.ns, `ip link set ${T.a} address ${MAC.a}`);
    await nsExec(va.ns, `busybox arping -c 1 -w 1 -I ${T.a} 10.75.20.12 || true`);
    await json.waitEvent('mac_learned a', (e) => e.event === 'mac_learned' && e.mac === MAC.a && e.port === T.a && e.vlan === 20);
    // vb takes va's MAC and speaks: the MAC moves to vb's port.
    await nsExec(vb.ns, `ip link set ${T.b} address ${MAC.a} && busybox arping -c 1 -w 1 -I ${T.b} 10.75.20.11 || true`);
    await json.waitEvent('mac_moved', (e) => e.event === 'mac_moved' && e.mac === MAC.a && e.port === T.b && e.vlan === 20);
    await nsExec(vb.ns, `ip link set ${T.b} address ${MAC.b}`);
    await d.ok(['setageing', 'br0', '1']);
    await json.waitEvent('mac_aged', (e) => e.event === 'mac_aged' && e.bridge === 'br0' && e.count >= 1, 10_000);
    await d.ok(['setageing', 'br0', '300']);
  });

  it('a port down and up again (TAP deleted, recreated), the uplink down and up (veth deleted, recreated)', async () => {
    await sh(`ip -n ${q(nsname('ma'))} link del ${T.a}`);
    await json.waitEvent('port_down', (e) => e.event === 'port_down' && e.port === T.a);
    await json.waitEvent('port_up', (e) => e.event === 'port_up' && e.port === T.a);
    await sh(`ip link del ${q(inet.uplink)}`);
    await json.waitEvent('uplink_down', (e) => e.event === 'uplink_down' && e.router === 'r0' && e.interface === inet.uplink);
    const inner = ifname('in2');
    await addVeth(inet.uplink, inner);
    await sh(`ip link set ${q(inet.uplink)} up && ip link set ${q(inner)} netns ${q(inet.ns)} && ip -n ${q(inet.ns)} link set ${q(inner)} up`);
    await json.waitEvent('uplink_up', (e) => e.event === 'uplink_up' && e.router === 'r0' && e.interface === inet.uplink, 20_000);
    // Logged too (main only told monitor clients): down as a warning, up as info.
    const logged = (ev: string) => d.logs.filter((l) => l.obj?.event === ev && l.obj?.router === 'r0').map((l) => l.obj);
    await waitFor('uplink_up logged', () => logged('uplink_up').length > 0);
    expect(logged('uplink_down')).toEqual([expect.objectContaining({ level: 'warn', interface: inet.uplink, reason: expect.any(String) })]);
    expect(logged('uplink_up')).toEqual([expect.objectContaining({ level: 'info', interface: inet.uplink })]);
  });

  it('reloads applied and refused', async () => {
    await d.ok(['reload']);
    await json.waitEvent('config_applied', (e) => e.event === 'config_applied' && Array.isArray(e.changes));
    const good = readFileSync(d.configFile, 'utf8');
    writeFileSync(d.configFile, 'bridges: [nonsense\n');
    expect((await d.cli(['reload'])).code).toBe(1);
    const refused = await json.waitEvent('config_refused', (e) => e.event === 'config_refused');
    expect(refused.error).toContain(d.configFile);
    writeFileSync(d.configFile, good);
    await waitFor('text line', () => text.lines.some((l) => l.includes('reload refused: ')));
    // In the log at their levels: applied is info, refused an error naming the file.
    expect(d.logs.filter((l) => l.obj?.event === 'config_applied').at(-1)?.obj?.level).toBe('info');
    const err = d.logs.filter((l) => l.obj?.event === 'config_refused').at(-1)?.obj;
    expect(err?.level).toBe('error');
    expect(err?.err).toContain(d.configFile);
  });

  it('a client that stops reading has events dropped and counted past 64 KiB, not queued; others get theirs; it is told when it reads again', async () => {
    // A raw subscriber that reads its ok line and then nothing.
    const sock: Socket = createConnection(d.socket);
    let got = '';
    let subscribed = false;
    await new Promise<void>((resolve) => {
      sock.once('connect', () => sock.write('{"id":1,"cmd":"monitor"}\n'));
      sock.setEncoding('utf8');
      sock.on('data', (c: string) => {
        got += c;
        if (!subscribed && got.includes('\n')) {
          subscribed = true;
          sock.pause();
          resolve();
        }
      });
    });
    expect(JSON.parse(got.split('\n')[0])).toMatchObject({ ok: true });
    const rss0 = await rss(d.proc.pid!);
    const fast0 = json.lines.length;
    // A VM in VLAN 20 floods random source MACs for 6 s: up to 1000 mac_learned events a second.
    const flood = toolFile('monflood.py', FLOOD_PY);
    const sent = Number((await nsExec(nsname('mb'), `${PYTHON} ${flood} ${T.b} 6`, { timeoutMs: 30_000 })).trim());
    await sleep(1500);
    const stats = (await d.ok(['monitor', '--stats'], { json: true })).json;
    const rss1 = await rss(d.proc.pid!);
    const slow = stats.clients.reduce((a: any, c: any) => (c.dropped > a.dropped ? c : a));
    console.log(`monitor: ${sent} frames flooded; stats ${JSON.stringify(stats)}; daemon RSS ${rss0} -> ${rss1} KiB`);
    expect(sent).toBeGreaterThan(5000);
    expect(stats.suppressed, 'learned MACs over 1000/s per bridge are counted, not sent').toBeGreaterThan(0);
    expect(slow.dropped).toBeGreaterThan(0);
    expect(slow.pending).toBeLessThanOrEqual(64 * 1024);
    // The reading clients missed nothing: no events_dropped for them, and they got thousands of events.
    expect(json.events().filter((e) => e.event === 'events_dropped')).toEqual([]);
    expect(json.lines.length - fast0).toBeGreaterThan(3000);
    expect(stats.clients.filter((c: any) => c !== slow).every((c: any) => c.dropped === 0)).toBe(true);
    // The flood itself grows the MAC table (8192 entries) and V8's heap; the slow client adds at most its 64 KiB.
    expect(rss1 - rss0, 'daemon RSS growth (KiB)').toBeLessThan(64 * 1024);
    // It reads again: the backlog, then a line saying how many it missed.
    const dropped = slow.dropped;
    sock.resume();
    const notice = await waitFor('events_dropped line', () => got.split('\n').filter(Boolean).slice(1).map((l) => JSON.parse(l))
      .find((e) => e.event === 'events_dropped'), { timeoutMs: 10_000 });
    expect(notice.count).toBe(dropped);
    // What it got before the notice is what fit: bounded by the daemon's queue plus the kernel's socket buffer.
    const before = got.slice(0, got.indexOf('"events_dropped"'));
    expect(before.length).toBeLessThan(64 * 1024 + 1024 * 1024);
    sock.destroy();
    await waitFor('the slow client gone', async () => (await d.ok(['monitor', '--stats'], { json: true })).json.clients.length === 2);
  });
});
