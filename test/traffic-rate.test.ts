/*
 * Per-port rate limits (issue 17, item 1) through the real daemon, measured with
 * iperf3 between namespaces on TAP ports (offloads on: the guests send 64 KB GSO
 * super-frames, charged by their real size):
 * - vm1 has ingressRate 100mbit (config): vm1 -> vm2 TCP lands in a band around
 *   100 Mbit/s, the excess is counted as ingress_rate on vm1;
 * - vm3 -> vm4 (no limit) runs far above it meanwhile configured rates;
 * - an egress rate set at runtime on vm4 (control command port.traffic, 80mbit)
 *   shapes vm3 -> vm4 into a band around 80 Mbit/s; vm3 -> vm2 stays unlimited;
 *   "off" lifts it. Bad values get clear errors.
 * Bands, not exact figures: the machine is shared.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, dropCount, findPort, startDaemon } from './helpers/daemon.js';
import { control as controlRequest } from './helpers/direct.js';
import { PREFIX, cleanup, ifname, nsExecR, sleep } from './helpers/run.js';
import { Background, type Vm, makeVm, pingUntil } from './helpers/vm.js';

const X = 20 + (parseInt(PREFIX.slice(1), 16) % 200);
const ip = (h: number): string => `10.${X}.27.${h}`;
const names = { vm1: ifname('rv1'), vm2: ifname('rv2'), vm3: ifname('rv3'), vm4: ifname('rv4') };
let d: Daemon;
const vms: Record<string, Vm> = {};
const servers: Background[] = [];

const control = (cmd: string, args: Record<string, unknown>): Promise<any> => controlRequest(d.socket, cmd, args);

/** TCP Mbit/s received from `from` to `to` over `sec` seconds (one stream). */
async function iperf(from: Vm, to: Vm, sec = 4): Promise<number> {
  const r = await nsExecR(from.ns, `iperf3 -c ${to.ip} -p 5201 -t ${sec} -O 1 -J`, { timeoutMs: (sec + 20) * 1000 });
  expect(r.code, `iperf3 ${from.name} -> ${to.name}: ${r.stdout.slice(-600)} ${r.stderr}`).toBe(0);
  const j = JSON.parse(r.stdout);
  return (j.end.sum_received.bits_per_second as number) / 1e6;
}

beforeAll(async () => {
  const tap = { type: 'tap', vlan: { mode: 'access', vid: 1 } };
  d = await startDaemon({
    bridges: {
      br0: {
        ports: {
          [names.vm1]: { ...tap, ingressRate: { rate: '100mbit', burst: '1mb' } },
          [names.vm2]: tap, [names.vm3]: tap, [names.vm4]: tap,
        },
      },
    },
  });
  for (const [i, k] of (['vm1', 'vm2', 'vm3', 'vm4'] as const).entries()) vms[k] = await makeVm(`r${k}`, names[k], `${ip(i + 1)}/24`);
  for (const k of ['vm2', 'vm4'] as const) {
    servers.push(new Background(vms[k].ns, 'iperf3 -s -p 5201'));
    expect(await pingUntil(vms.vm1.ns, vms[k].ip)).toBe(true);
    expect(await pingUntil(vms.vm3.ns, vms[k].ip)).toBe(true);
  }
  await sleep(300);
}, 60_000);

afterAll(async () => {
  for (const s of servers) await s.stop();
  await d?.stop();
  await cleanup();
});

describe('per-port rate limits under iperf3', () => {
  it('polices a port\'s ingress to its rate; other ports are unaffected', async () => {
    const view = findPort(await d.showJson(), names.vm1);
    expect(view.ingressRate).toMatchObject({ rate: '100mbit', burst: '1mb', bitsPerSec: 100e6 });
    expect((await d.ok(['show'])).stdout).toMatch(new RegExp(`${names.vm1}.*in 100mbit/1mb`));
    const limited = await iperf(vms.vm1, vms.vm2);
    const free = await iperf(vms.vm3, vms.vm4);
    console.log(`ingress 100mbit: vm1 -> vm2 ${limited.toFixed(1)} Mbit/s; unlimited vm3 -> vm4 ${free.toFixed(1)} Mbit/s`);
    // TCP through a policer loses whole super-frames at a time and backs off: below the rate, as with tc police.
    expect(limited).toBeGreaterThan(35);
    expect(limited).toBeLessThan(115);
    expect(free).toBeGreaterThan(3 * limited);
    const stats = findPort((await d.ok(['stats', '--json'], { json: true })).json, names.vm1);
    expect(dropCount(stats, 'ingress_rate')).toBeGreaterThan(0);
  }, 90_000);

  it('shapes a port\'s egress set at runtime, lifts it with off, and refuses bad values clearly', async () => {
    let r = await control('port.traffic', { ifname: names.vm4, egressRate: '80mbit', egressBurst: '256k' });
    expect(r.ok, JSON.stringify(r)).toBe(true);
    expect(r.result.port.egressRate).toMatchObject({ rate: '80mbit', burst: '256kb' });
    const shaped = await iperf(vms.vm3, vms.vm4);
    const free = await iperf(vms.vm3, vms.vm2);
    console.log(`egress 80mbit: vm3 -> vm4 ${shaped.toFixed(1)} Mbit/s; unlimited vm3 -> vm2 ${free.toFixed(1)} Mbit/s`);
    expect(shaped).toBeGreaterThan(40);
    expect(shaped).toBeLessThan(92);
    expect(free).toBeGreaterThan(3 * shaped);
    r = await control('port.traffic', { ifname: names.vm4, egressRate: 'off' });
    expect(r.ok).toBe(true);
    expect(r.result.port.egressRate).toBeUndefined();
    expect(await iperf(vms.vm3, vms.vm4, 2)).toBeGreaterThan(3 * shaped);
    for (const [args, msg] of [
      [{ egressRate: '80 furlongs' }, /egress-rate: bad rate '80 furlongs'/],
      [{ ingressRate: '2tbit' }, /ingress-rate: rate 2tbit is out of range: 8kbit to 1tbit/],
      [{ ingressRate: '10mbit', ingressBurst: '10' }, /burst 10 is out of range: 1500 bytes to 1gb/],
      [{ ingressBurst: '1mb' }, /ingress burst and pps go with ingress-rate/],
      [{ ingressRate: '10mbit', ingressPps: 0 }, /pps must be/],
    ] as const) {
      r = await control('port.traffic', { ifname: names.vm4, ...args });
      expect(r.ok, JSON.stringify(args)).toBe(false);
      expect(r.error.message).toMatch(msg);
    }
    expect(findPort(await d.showJson(), names.vm4).ingressRate).toBeUndefined();
    expect(d.alive()).toBe(true);
  }, 90_000);
});
