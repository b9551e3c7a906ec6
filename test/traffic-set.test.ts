/*
 * Loop protection and rate limits at runtime through the CLI (issue 17, items 1 and 3):
 * `vswitch port set PORT bpdu-guard on|off ingress-rate RATE [burst SIZE] [pps N]
 * egress-rate RATE [burst SIZE]`, `vswitch bridge set BR mac-flap-moves|mac-flap-hold|
 * bpdu-recovery`, `vswitch port recover PORT`, as port-set.test.ts does for the guards:
 *   - a limit set from the CLI acts at once (a pps policer drops a burst's excess,
 *     counted as ingress_rate), in place (the TAP stays the same device);
 *   - an egress pps (`egress-rate RATE pps N`) paces what the VM gets: the packet
 *     burst at once, then N a second, the rest queued and delivered, none lost;
 *   - `show` tells them (options column, the bridge's loop protection column, `from`
 *     naming them as the CLI's; JSON) and runtime.json keeps them, in numbers;
 *   - `port recover` opens a port the BPDU guard shut (a scapy BPDU from the VM);
 *   - a reload of the unchanged file keeps them, and so does a restart, for file
 *     ports and bridges (overlay entries) and for a runtime port and bridge (in their
 *     definitions);
 *   - the file changing the same setting wins at reload, the others stay;
 *   - bad values are usage errors (exit 2) or one-line errors (exit 1).
 * Before: these were control commands only (port.traffic, bridge.loop) and their
 * changes were lost at the next restart.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, dropCount, findPort, startDaemon, toYaml } from './helpers/daemon.js';
import { restartDaemon } from './helpers/dhcp.js';
import { PREFIX, cleanup, ifname, nsExec, sh, tempDir, toolFile, trackLink, waitFor } from './helpers/run.js';
import { PYTHON } from './helpers/scapy.js';
import { makeVm, pingUntil, type Vm } from './helpers/vm.js';

const T = { a: ifname('ta'), b: ifname('tb'), c: ifname('tc') };
const BR9 = ifname('tbr');
const X = 20 + (parseInt(PREFIX.slice(1), 16) % 200);
const ip = (h: number): string => `10.${X}.18.${h}/24`;

function config(stateDir: string, edit?: { bIngress?: string; flapHold?: number }): Record<string, unknown> {
  return {
    stateDir,
    metrics: { listen: 'off' },
    bridges: {
      br0: {
        loopProtection: { macFlapMoves: 20, ...(edit?.flapHold !== undefined ? { macFlapHold: edit.flapHold } : {}) },
        ports: {
          [T.a]: { type: 'tap', vlan: { mode: 'access', vid: 10 }, ingressRate: { rate: '100mbit' } },
          [T.b]: { type: 'tap', vlan: { mode: 'access', vid: 10 }, ...(edit?.bIngress ? { ingressRate: { rate: edit.bIngress } } : {}) },
        },
      },
    },
  };
}

describe('port set bpdu-guard / ingress-rate / egress-rate, bridge set, port recover: at runtime, shown, kept', () => {
  let d: Daemon;
  let stateDir: string;
  let va: Vm, vb: Vm;

  const port = async (name: string): Promise<any> => findPort(await d.showJson(), name);
  const bridge = async (name: string): Promise<any> => (await d.showJson() as any[]).find((b) => b.name === name);
  const ifindex = async (vm: Vm): Promise<string> => (await nsExec(vm.ns, `cat /sys/class/net/${vm.ifname}/ifindex`)).trim();
  const saved = (): any => JSON.parse(readFileSync(join(stateDir, 'runtime.json'), 'utf8'));
  const rowOf = (text: string, name: string): string => text.split('\n').find((l) => l.includes(name)) ?? '';

  beforeAll(async () => {
    [T.a, T.b, T.c].forEach(trackLink);
    stateDir = tempDir('tstate');
    d = await startDaemon(config(stateDir));
    va = await makeVm('ta', T.a, ip(11));
    vb = await makeVm('tb', T.b, ip(12));
    expect(await pingUntil(va.ns, vb.ip)).toBe(true);
  });

  afterAll(async () => {
    await d?.stop();
    await cleanup();
  });

  it('a pps policer set from the CLI drops a burst\'s excess at once, in place; show and runtime.json tell it', async () => {
    const before = await ifindex(vb);
    await d.ok(['port', 'set', T.b, 'ingress-rate', '1gbit', 'pps', '5']);
    // 40 UDP datagrams from vb at once: a bucket of 16 packets (pps burst) lets about 16 through.
    await nsExec(vb.ns, `${PYTHON} -c "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); [s.sendto(b'x', ('${va.ip}', 9)) for _ in range(40)]"`);
    const drops = dropCount(findPort((await d.ok(['stats', '--json'], { json: true })).json, T.b), 'ingress_rate');
    expect(drops).toBeGreaterThan(10);
    expect((await port(T.b)).ingressRate).toMatchObject({ rate: '1gbit', pps: 5 });
    // The whole set: both directions, a burst, the BPDU guard off; one command, one runtime.json write.
    await d.ok(['port', 'set', T.b, 'ingress-rate', '50mbit', 'burst', '1mb', 'pps', '20000', 'egress-rate', '80mbit', 'burst', '256k', 'bpdu-guard', 'off']);
    const p = await port(T.b);
    expect(p).toMatchObject({
      ingressRate: { rate: '50mbit', burst: '1mb', pps: 20000 }, egressRate: { rate: '80mbit', burst: '256kb' }, bpduGuard: false, source: 'config',
    });
    expect([...p.overrides].sort()).toEqual(['bpduGuard', 'egressRate', 'ingressRate']);
    const text = (await d.ok(['show'])).stdout;
    expect(rowOf(text, T.b)).toContain('in 50mbit/1mb 20000pps, out 80mbit/256kb');
    expect(rowOf(text, T.b)).not.toContain('bpdu-guard');
    expect(rowOf(text, T.b)).toMatch(/config, (\w+, ){2}\w+: runtime/);
    expect(rowOf(text, T.a)).toContain('bpdu-guard, in 100mbit/');
    const s = saved().settings;
    expect(s[`${T.b}/ingressRate`]).toEqual({ value: { rate: 50_000_000, burst: 1_048_576, pps: 20000 }, base: 'off' });
    expect(s[`${T.b}/egressRate`].value).toEqual({ rate: 80_000_000, burst: 262_144 });
    expect(s[`${T.b}/bpduGuard`]).toEqual({ value: false, base: true });
    // off removes the file's limit; back to the file's value leaves no entry.
    await d.ok(['port', 'set', T.a, 'ingress-rate', 'off']);
    expect((await port(T.a)).ingressRate).toBeUndefined();
    expect(saved().settings[`${T.a}/ingressRate`]).toEqual({ value: 'off', base: { rate: 100_000_000, burst: 1_250_000 } });
    await d.ok(['port', 'set', T.a, 'ingress-rate', '100mbit']);
    expect((await port(T.a)).overrides).toEqual([]);
    expect(saved().settings[`${T.a}/ingressRate`]).toBeUndefined();
    expect(await ifindex(vb), 'the TAP was not recreated').toBe(before);
    expect(await pingUntil(va.ns, vb.ip)).toBe(true);
  });

  it('egress-rate with pps paces frames toward the VM: the packet burst at once, then pps a second, none lost', async () => {
    await d.ok(['port', 'set', T.a, 'egress-rate', '1gbit', 'pps', '5']);
    expect((await port(T.a)).egressRate).toMatchObject({ rate: '1gbit', pps: 5 });
    expect(rowOf((await d.ok(['show'])).stdout, T.a)).toContain('5pps');
    const recv = toolFile('traffic-set-recv.py', [
      'import socket, time',
      's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
      "s.bind(('0.0.0.0', 9999))",
      's.settimeout(8)',
      't = []',
      'try:',
      '    while len(t) < 40:',
      '        s.recv(100)',
      '        t.append(time.monotonic())',
      'except socket.timeout:',
      '    pass',
      'print(len(t), sum(1 for x in t if x - t[0] < 1.0) if t else 0)',
    ].join('\n'));
    const receiving = nsExec(va.ns, `${PYTHON} ${recv}`);
    await new Promise((r) => setTimeout(r, 500));
    await nsExec(vb.ns, `${PYTHON} -c "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); [s.sendto(b'x', ('${va.ip}', 9999)) for _ in range(40)]"`);
    const [total, firstSecond] = (await receiving).trim().split(' ').map(Number);
    console.log(`egress 1gbit pps 5: ${firstSecond} of 40 datagrams in the first second, ${total} in all`);
    // 16 (the packet burst) + 5 in the first second; the rest waited in the queue and came later.
    expect(firstSecond).toBeGreaterThanOrEqual(16);
    expect(firstSecond).toBeLessThanOrEqual(24);
    expect(total).toBe(40);
    await d.ok(['port', 'set', T.a, 'egress-rate', 'off']);
    expect((await port(T.a)).overrides).toEqual([]);
  }, 30_000);

  it('bridge set changes the loop protection in place; show tells it; port recover opens a port the BPDU guard shut', async () => {
    await d.ok(['bridge', 'set', 'br0', 'mac-flap-hold', '60', 'bpdu-recovery', '600']);
    const b = await bridge('br0');
    expect(b.loopProtection).toEqual({ flapMoves: 20, flapHoldSec: 60, bpduRecoverySec: 600 });
    expect([...b.overrides].sort()).toEqual(['bpduRecovery', 'macFlapHold']);
    const text = (await d.ok(['show'])).stdout;
    expect(text.split('\n')[0]).toMatch(/loop protection$/);
    expect(rowOf(text, 'br0')).toMatch(/config, (bpduRecovery|macFlapHold), (bpduRecovery|macFlapHold): runtime\s+mac-flap 20\/s hold 60s, bpdu-recovery 600s/);
    expect(saved().loop).toEqual({ 'br0/bpduRecovery': { value: 600, base: 300 }, 'br0/macFlapHold': { value: 60, base: 30 } });
    // A BPDU from va's VM: its port is shut for the 600 s just set, until port recover.
    const script = ['from scapy.all import Dot3, LLC, STP, sendp, conf', 'conf.verb = 0',
      `sendp(Dot3(src="${va.mac}", dst="01:80:c2:00:00:00")/LLC(dsap=0x42, ssap=0x42, ctrl=3)/STP(), iface="${va.ifname}")`].join('\n');
    await nsExec(va.ns, `${PYTHON} ${toolFile('traffic-set-bpdu.py', script)}`);
    await waitFor('the BPDU guard shuts the port', async () => (await port(T.a)).shut?.remainingSec > 500, { timeoutMs: 5000 });
    expect(rowOf((await d.ok(['show'])).stdout, T.a)).toMatch(/shut \(BPDU guard, back at/);
    expect((await d.ok(['port', 'recover', T.a])).stdout).toBe(`${T.a} opened\n`);
    expect((await port(T.a)).shut).toBeUndefined();
    expect(await pingUntil(va.ns, vb.ip, 5000)).toBe(true);
    expect((await d.ok(['port', 'recover', T.a])).stdout).toBe(`${T.a} was not shut\n`);
  }, 30_000);

  it('a runtime port and a runtime bridge keep theirs in their definitions', async () => {
    await d.ok(['addbr', BR9]);
    await d.ok(['bridge', 'set', BR9, 'mac-flap-moves', 'off']);
    await d.ok(['addif', BR9, T.c]);
    await d.ok(['port', 'set', T.c, 'egress-rate', '10mbit', 'bpdu-guard', 'off']);
    const s = saved();
    expect(s.bridges[BR9].value.loop).toMatchObject({ macFlapMoves: 0 });
    expect(s.ports[T.c].value.spec).toMatchObject({ egressRate: { rate: 10_000_000 }, bpduGuard: false });
    // setageing rewrites the runtime bridge's definition: its loop protection stays.
    await d.ok(['setageing', BR9, '100']);
    expect((await bridge(BR9)).loopProtection.flapMoves).toBe(0);
    expect(rowOf((await d.ok(['show'])).stdout, BR9)).toContain('mac-flap off, bpdu-recovery 300s');
  });

  it('a reload of the unchanged file keeps them; a restart brings them back', async () => {
    expect((await d.ok(['reload'])).stdout.trim()).toBe('no changes');
    const check = async (): Promise<void> => {
      expect(await port(T.b)).toMatchObject({ ingressRate: { rate: '50mbit', burst: '1mb', pps: 20000 }, egressRate: { rate: '80mbit' }, bpduGuard: false });
      expect((await bridge('br0')).loopProtection).toEqual({ flapMoves: 20, flapHoldSec: 60, bpduRecoverySec: 600 });
      expect(await port(T.c)).toMatchObject({ egressRate: { rate: '10mbit' }, bpduGuard: false, source: 'runtime' });
      expect((await bridge(BR9)).loopProtection).toMatchObject({ flapMoves: 0 });
    };
    await check();
    await d.stop();
    d = await restartDaemon(d);
    await check();
    expect([...(await port(T.b)).overrides].sort()).toEqual(['bpduGuard', 'egressRate', 'ingressRate']);
    expect(d.logsMatching('runtime_state_restored').length).toBe(1);
  });

  it('the file changing the same setting wins at reload; the others stay', async () => {
    writeFileSync(d.configFile, toYaml(config(stateDir, { bIngress: '200mbit', flapHold: 45 })));
    const changes = (await d.ok(['reload'])).stdout;
    expect(changes).toMatch(/settings .*\/ingressRate: the config file changed it/);
    expect(changes).toMatch(/loop br0\/macFlapHold: the config file changed it/);
    const b = await port(T.b);
    expect(b).toMatchObject({ ingressRate: { rate: '200mbit' }, egressRate: { rate: '80mbit' }, bpduGuard: false });
    expect([...b.overrides].sort()).toEqual(['bpduGuard', 'egressRate']);
    const br = await bridge('br0');
    expect(br.loopProtection).toEqual({ flapMoves: 20, flapHoldSec: 45, bpduRecoverySec: 600 });
    expect(br.overrides).toEqual(['bpduRecovery']);
  });

  it('bad values: usage errors exit 2, refusals one line exit 1, nothing changed', async () => {
    for (const args of [['port', 'set', T.b, 'ingress-rate', 'fast'], ['port', 'set', T.b, 'burst', '1mb'], ['port', 'set', T.b, 'egress-rate', 'off', 'pps', '5'],
      ['port', 'set', T.b, 'bpdu-guard', 'maybe'], ['port', 'set', T.b, 'ingress-rate', '5tbit'], ['bridge', 'set', 'br0', 'mac-flap-hold', 'long'],
      ['bridge', 'set', 'br0'], ['port', 'recover']]) {
      const r = await d.cli(args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
    }
    for (const [args, msg] of [
      [['bridge', 'set', 'br0', 'mac-flap-hold', '0'], /macFlapHold must be 1-86400 seconds, got 0/],
      [['bridge', 'set', ifname('none'), 'bpdu-recovery', '5'], /no such bridge/],
      [['port', 'set', ifname('none'), 'bpdu-guard', 'on'], /no such port/],
      [['port', 'recover', ifname('none')], /no such port/],
    ] as const) {
      const r = await d.cli([...args]);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(msg);
    }
    expect(await port(T.b)).toMatchObject({ ingressRate: { rate: '200mbit' }, egressRate: { rate: '80mbit' } });
    expect((await bridge('br0')).loopProtection.flapHoldSec).toBe(45);
  });
});
