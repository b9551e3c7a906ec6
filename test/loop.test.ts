/*
 * Loop protection (issue 17, item 3) through the real daemon: four VM namespaces on
 * TAP ports, and two more TAP ports (lpA, lpB) that a test joins through a Linux
 * bridge inside a namespace: a real loop, as a cable between two switch ports.
 * - A broadcast into the loop circles it forever (no STP); the MACs it carries flap
 *   between lpA and lpB thousands of times a second. MAC-flap detection blocks one
 *   loop port within a second (logged `port_shut` reason loop, shown, in metrics),
 *   while the control socket and /healthz answer and vm2 and vm3 keep pinging
 *   each other; vm1, whose broadcast started it, reaches vm2 again at once. When
 *   the hold ends and the loop is still there, it is blocked again.
 * - A BPDU sent with scapy from vm4 (BPDU guard on by default on TAP ports) shuts
 *   its port: vm4 reaches nobody, the drop is counted, `show` says until when, and
 *   after bpduRecovery (3 s here) it pings again. Garbage to the STP address is
 *   counted (`bpdu_invalid`) and shuts nothing. Runtime control: bridge.loop,
 *   port.traffic bpduGuard, port.recover.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, dropCount, findPort, startDaemon } from './helpers/daemon.js';
import { control as controlRequest, metric, scrape } from './helpers/direct.js';
import { PREFIX, addNamespace, cleanup, freePort, ifname, nsExec, nsname, sh, sleep, toolFile, waitFor } from './helpers/run.js';
import { type Vm, continuousPing, makeVm, ping, pingUntil, quietNamespace } from './helpers/vm.js';
import { PYTHON } from './helpers/scapy.js';

const X = 20 + (parseInt(PREFIX.slice(1), 16) % 200);
const ip = (h: number): string => `10.${X}.17.${h}`;
const BR = 'br0';
const names = { vm1: ifname('lv1'), vm2: ifname('lv2'), vm3: ifname('lv3'), vm4: ifname('lv4'), lpA: ifname('lpa'), lpB: ifname('lpb') };
const HOLD = 4;
const RECOVERY = 3;

let d: Daemon;
let metricsPort: number;
const vms: Record<string, Vm> = {};
const loopNs = nsname('loop');

/** One control-socket request (the CLI verbs, port set / bridge set / port recover: traffic-set.test.ts). */
const control = (cmd: string, args: Record<string, unknown>): Promise<any> => controlRequest(d.socket, cmd, args);

const metrics = (): Promise<string> => scrape(metricsPort);

async function port(name: string): Promise<any> {
  return findPort(await d.showJson(), name);
}

/** The port's counters (stats --json). */
async function drops(name: string, reason: string): Promise<number> {
  return dropCount(findPort((await d.ok(['stats', '--json'], { json: true })).json, name), reason);
}

const BROADCASTS_PY = String.raw`
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
own = bytes.fromhex(open('/sys/class/net/%s/address' % sys.argv[1]).read().strip().replace(':', ''))
for i in range(int(sys.argv[2])):
    s.send(b'\xff' * 6 + own + b'\x88\xb5' + b'loop-test' * 6)
`;

/** A configuration BPDU from vm4 (Dot3: scapy's Ether/LLC would write type 0x8870, which is no BPDU). */
const BPDU = (): string => `Dot3(src="${vms.vm4.mac}", dst="01:80:c2:00:00:00")/LLC(dsap=0x42, ssap=0x42, ctrl=3)/STP()`;

let scripts = 0;
async function scapy(ns: string, iface: string, frame: string): Promise<void> {
  const script = ['from scapy.all import Ether, Dot3, LLC, STP, Raw, sendp, conf', 'conf.verb = 0', `sendp(${frame}, iface="${iface}")`].join('\n');
  await nsExec(ns, `${PYTHON} ${toolFile(`loop-scapy-${scripts++}.py`, script)}`);
}

async function broadcasts(n: number): Promise<void> {
  await nsExec(vms.vm1.ns, `${PYTHON} ${toolFile('loop-bcast.py', BROADCASTS_PY)} ${vms.vm1.ifname} ${n}`);
}

beforeAll(async () => {
  metricsPort = await freePort();
  const tap = { type: 'tap', vlan: { mode: 'access', vid: 1 } };
  d = await startDaemon({
    metrics: { listen: `127.0.0.1:${metricsPort}` },
    bridges: {
      [BR]: {
        loopProtection: { macFlapHold: HOLD, bpduRecovery: RECOVERY },
        ports: Object.fromEntries(Object.values(names).map((n) => [n, tap])),
      },
    },
  });
  for (const [i, k] of (['vm1', 'vm2', 'vm3', 'vm4'] as const).entries()) vms[k] = await makeVm(`l${k}`, names[k], `${ip(i + 1)}/24`);
  await addNamespace(loopNs);
  await quietNamespace(loopNs); // the Linux bridge says nothing of its own: the storm is vm1's broadcast
  for (const k of ['lpA', 'lpB'] as const) await sh(`ip link set ${names[k]} netns ${loopNs}`);
  for (const k of ['vm1', 'vm2', 'vm3', 'vm4'] as const) expect(await pingUntil(vms[k].ns, ip(k === 'vm1' ? 2 : 1))).toBe(true);
}, 90_000);

afterAll(async () => {
  await d?.stop();
  await cleanup();
});

describe('a real loop through a namespace bridge', () => {
  it('is cut within a second by MAC-flap detection; the daemon answers and other VMs keep pinging', async () => {
    const other = continuousPing(vms.vm2.ns, ip(3), 0.1);
    await sleep(500);
    const t0 = Date.now();
    // Close the loop: lpA and lpB joined by a Linux bridge (STP off, as on a VM host), then one broadcast burst.
    await nsExec(loopNs, `sysctl -qw net.ipv6.conf.${names.lpA}.disable_ipv6=1 net.ipv6.conf.${names.lpB}.disable_ipv6=1`);
    await nsExec(loopNs, `ip link add lbr type bridge stp_state 0 && sysctl -qw net.ipv6.conf.lbr.disable_ipv6=1 && ip link set ${names.lpA} master lbr && ip link set ${names.lpB} master lbr`
      + ` && ip link set ${names.lpA} up && ip link set ${names.lpB} up && ip link set lbr up`);
    await broadcasts(20);
    const shut = await d.waitForLog('port_shut', 5000);
    const cutMs = Date.parse(shut.obj.time) - t0;
    console.log(`loop cut after ${cutMs} ms: ${shut.raw}`);
    expect(shut.obj).toMatchObject({ event: 'port_shut', reason: 'loop', bridge: BR, holdSec: HOLD });
    expect([names.lpA, names.lpB]).toContain(shut.obj.port);
    // Whichever MAC tripped it (vm1's broadcast, or the first frame the namespace's bridge sends), its home stays open.
    expect(shut.obj.home).not.toBe(shut.obj.port);
    expect(cutMs).toBeLessThan(1000);

    // Responsive while and after: the control socket, /healthz.
    const t1 = Date.now();
    const view = await d.showJson();
    expect(Date.now() - t1).toBeLessThan(2000);
    expect((await sh(`curl -s -o /dev/null -w '%{http_code}' --max-time 3 http://127.0.0.1:${metricsPort}/healthz`)).trim()).toBe('200');
    const blocked = findPort(view, shut.obj.port);
    expect(blocked.state).toBe('up');
    expect(blocked.shut).toMatchObject({ reason: 'loop' });
    expect(blocked.shut.remainingSec).toBeLessThanOrEqual(HOLD);
    const other2 = shut.obj.port === names.lpA ? names.lpB : names.lpA;
    expect(findPort(view, other2).shut).toBeUndefined();
    for (const k of ['vm1', 'vm2', 'vm3', 'vm4'] as const) expect(findPort(view, names[k]).shut, k).toBeUndefined();
    const text = (await d.ok(['show'])).stdout;
    expect(text).toMatch(new RegExp(`${shut.obj.port}.*shut \\(loop, back at \\d\\d:\\d\\d:\\d\\dZ \\(in \\d+s\\)\\)`));

    // vm1, whose broadcast started it, reaches vm2 at once; vm2 -> vm3 lost at most 2 of its pings.
    expect(await ping(vms.vm1.ns, ip(2), { count: 3 })).toBe(true);
    await sleep(1000);
    await other.stop();
    const seqs = other.pingSeqs();
    const last = Math.max(...seqs);
    expect(last).toBeGreaterThan(10);
    expect(last + 1 - new Set(seqs).size, `vm2 -> vm3 pings lost: ${other.out.slice(-400)}`).toBeLessThanOrEqual(2);

    const m = await metrics();
    expect(metric(m, 'vswitch_port_shut', { port: shut.obj.port, reason: 'loop' })).toBe(1);
    expect(metric(m, 'vswitch_port_shutdowns_total', { port: shut.obj.port, reason: 'loop' })).toBe(1);
    expect(metric(m, 'vswitch_bridge_loop_protection', { bridge: BR, setting: 'mac_flap_moves' })).toBe(10);
    expect(metric(m, 'vswitch_bridge_mac_moved_total', { bridge: BR })).toBeGreaterThan(10);
  }, 60_000);

  it('blocks the loop again after the hold when it is still there, and comes back for good once it is gone', async () => {
    const first = (await d.waitForLog('port_shut')).obj.port;
    const back = await waitFor('port_recovered', () => d.logs.find((l) => l.obj?.event === 'port_recovered' && l.obj.reason === 'loop'), { timeoutMs: (HOLD + 3) * 1000 });
    expect(back.obj.port).toBe(first);
    await broadcasts(5);
    await waitFor('a second port_shut', () => d.logs.filter((l) => l.obj?.event === 'port_shut' && l.obj.reason === 'loop').length >= 2, { timeoutMs: 3000 });
    expect(d.alive()).toBe(true);
    // Unplug the loop; after the hold both ports forward again.
    await nsExec(loopNs, 'ip link del lbr');
    await waitFor('both loop ports open', async () => {
      const v = await d.showJson();
      return findPort(v, names.lpA).shut === undefined && findPort(v, names.lpB).shut === undefined;
    }, { timeoutMs: (HOLD + 3) * 1000 });
    expect(await ping(vms.vm1.ns, ip(2))).toBe(true);
  }, 60_000);
});

describe('BPDU guard', () => {
  it('a BPDU from a VM shuts its port until bpduRecovery, counted and shown; then it pings again', async () => {
    await scapy(vms.vm4.ns, vms.vm4.ifname, BPDU());
    const shut = await waitFor('port_shut bpdu_guard', () => d.logs.find((l) => l.obj?.event === 'port_shut' && l.obj.reason === 'bpdu_guard'), { timeoutMs: 3000 });
    expect(shut.obj).toMatchObject({ port: names.vm4, holdSec: RECOVERY });
    expect(shut.obj.level).toBe('warn');
    const p = await port(names.vm4);
    expect(p.bpduGuard).toBe(true);
    expect(p.shut).toMatchObject({ reason: 'bpdu_guard' });
    expect(await drops(names.vm4, 'bpdu_guard')).toBe(1);
    expect(await ping(vms.vm4.ns, ip(1), { count: 2, timeoutSec: 1 })).toBe(false);
    expect(await drops(names.vm4, 'bpdu_guard') + await drops(names.vm4, 'port_shut')).toBeGreaterThan(1);
    const back = await waitFor('port_recovered bpdu_guard', () => d.logs.find((l) => l.obj?.event === 'port_recovered' && l.obj.reason === 'bpdu_guard'), { timeoutMs: (RECOVERY + 3) * 1000 });
    expect(back.obj.port).toBe(names.vm4);
    expect(back.obj.dropped).toBeGreaterThan(1);
    expect(await pingUntil(vms.vm4.ns, ip(1), 5000)).toBe(true);
    expect(d.logs.filter((l) => l.obj?.event === 'port_shut' && l.obj.reason === 'bpdu_guard')).toHaveLength(1);
  }, 30_000);

  it('garbage to the STP address is counted as bpdu_invalid and shuts nothing', async () => {
    await scapy(vms.vm4.ns, vms.vm4.ifname,
      `[Dot3(src="${vms.vm4.mac}", dst="01:80:c2:00:00:00")/LLC(dsap=0x42, ssap=0x42, ctrl=3)/Raw(b"\\x00\\x01garbage"), Ether(src="${vms.vm4.mac}", dst="01:80:c2:00:00:00", type=0x0800)/Raw(b"x" * 40)]`);
    await waitFor('bpdu_invalid counted', async () => (await drops(names.vm4, 'bpdu_invalid')) === 2, { timeoutMs: 3000 });
    expect((await port(names.vm4)).shut).toBeUndefined();
    expect(await ping(vms.vm4.ns, ip(1), { count: 1 })).toBe(true);
  });

  it('is changed at runtime through the control socket, with clear errors for bad values', async () => {
    let r = await control('port.traffic', { ifname: names.vm4, bpduGuard: false });
    expect(r.ok).toBe(true);
    expect(r.result.port.bpduGuard).toBe(false);
    await scapy(vms.vm4.ns, vms.vm4.ifname, BPDU());
    await sleep(300);
    expect((await port(names.vm4)).shut).toBeUndefined();
    r = await control('port.traffic', { ifname: names.vm4, bpduGuard: true });
    expect(r.ok).toBe(true);
    r = await control('bridge.loop', { bridge: BR, bpduRecovery: 600 });
    expect(r.result).toMatchObject({ bpduRecoverySec: 600 });
    await scapy(vms.vm4.ns, vms.vm4.ifname, BPDU());
    await waitFor('vm4 shut', async () => (await port(names.vm4)).shut?.remainingSec > 500, { timeoutMs: 3000 });
    r = await control('port.recover', { ifname: names.vm4 });
    expect(r.result).toEqual({ recovered: true });
    expect(await pingUntil(vms.vm4.ns, ip(1), 5000)).toBe(true);
    for (const [cmd, args, msg] of [
      ['bridge.loop', { bridge: BR, macFlapHold: 0 }, /macFlapHold must be 1-86400 seconds, got 0/],
      ['bridge.loop', { bridge: 'nope', macFlapMoves: 5 }, /no such bridge: nope/],
      ['port.traffic', { ifname: names.vm4, bpduGuard: 'yes' }, /bpduGuard must be true or false/],
      ['port.traffic', { ifname: names.vm4 }, /nothing to set/],
      ['port.recover', { ifname: 'nope' }, /no such port: nope/],
    ] as const) {
      r = await control(cmd, args);
      expect(r.ok, cmd).toBe(false);
      expect(r.error.message).toMatch(msg);
    }
    expect(d.alive()).toBe(true);
  }, 30_000);
});
