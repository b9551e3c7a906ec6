/*
 * Batched TAP writes (config `tapWriteBatch`, `vswitch set tap-write-batch on|off`; packages/netdev
 * setTapWriteBatch) through the real daemon: two VMs on TAPs, the flow cache on (the default);
 * pings (one frame a batch: written with writev) are all answered; a burst of small UDP
 * datagrams is replayed in batches through io_uring (`settings --json` counts them), and
 * every frame the port counted as sent arrived at the VM's interface; `settings` says it is
 * on. Switched off at runtime, a burst takes writev (the batch counters stand still) and
 * still arrives whole; the runtime change is kept across a restart.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, startDaemon } from './helpers/daemon.js';
import { restartDaemon } from './helpers/dhcp.js';
import { cleanup, ifname, nsExec, tempDir } from './helpers/run.js';
import { makeVm, pingCount, pingUntil, type Vm } from './helpers/vm.js';

const BR = 'br0';
const P = [ifname('twb1'), ifname('twb2')];

describe('batched TAP writes (tapWriteBatch)', () => {
  let d: Daemon;
  let v1: Vm, v2: Vm;
  let stateDir: string;

  beforeAll(async () => {
    stateDir = tempDir('twbstate');
    d = await startDaemon({ stateDir, tapWriteBatch: true, bridges: { [BR]: { ports: Object.fromEntries(P.map((p) => [p, { type: 'tap', vlan: { mode: 'access', vid: 10 } }])) } } });
    v1 = await makeVm('twb1', P[0], '10.32.0.1/24');
    v2 = await makeVm('twb2', P[1], '10.32.0.2/24');
  });
  afterAll(async () => {
    await d?.stop();
    await cleanup();
  });

  const settings = async () => JSON.parse((await d.ok(['settings', '--json'])).stdout);
  const stats = async () => JSON.parse((await d.ok(['stats', '--json'])).stdout)[0];
  const port = (s: any, name: string) => s.ports.find((p: any) => p.name === name);

  const rxPackets = async (vm: Vm) => Number(await nsExec(vm.ns, `cat /sys/class/net/${vm.ifname}/statistics/rx_packets`));

  it('a burst is replayed in batches through io_uring; pings all answered; every frame sent arrives', async () => {
    const t0 = (await settings()).tapWriteBatch;
    expect(t0.on).toBe(true);
    expect(t0.error).toBeNull();
    expect((await d.ok(['settings'])).stdout).toContain('tap write batch: io_uring');
    expect(await pingUntil(v1.ns, v2.ip)).toBe(true);
    expect(await pingCount(v1.ns, v2.ip, 10, 0.05)).toBe(10);
    const s0 = await stats();
    const w0 = (await settings()).tapWriteBatch;
    const rx0 = await rxPackets(v2);
    // 3000 datagrams to a closed port as fast as one process sends: the daemon reads them
    // in batches of several, all of one cached flow.
    await nsExec(v1.ns, `python3 -c 'import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor _ in range(3000): s.sendto(bytes(18),("${v2.ip}",9999))'`);
    expect(await pingCount(v1.ns, v2.ip, 5, 0.05)).toBe(5);
    const s1 = await stats();
    const w1 = (await settings()).tapWriteBatch;
    const hits = s1.flowCache.hits - s0.flowCache.hits;
    const writes = w1.writes - w0.writes, flushes = w1.flushes - w0.flushes;
    expect(hits, 'frames replayed').toBeGreaterThan(1000);
    expect(flushes).toBeGreaterThan(0);
    expect(writes, 'batches of more than one frame').toBeGreaterThanOrEqual(2 * flushes);
    expect(writes).toBeLessThanOrEqual(hits);
    expect(w1.unsent - w0.unsent).toBe(0);
    const dl = (k: string, p: string) => port(s1, p)[k] - port(s0, p)[k];
    expect(dl('rxFrames', P[0])).toBe(dl('txFrames', P[1]));
    expect(dl('rxFrames', P[1])).toBe(dl('txFrames', P[0]));
    expect(dl('rxBytes', P[0])).toBe(dl('txBytes', P[1]));
    // What the port counted as sent reached v2's interface, frame for frame.
    expect(await rxPackets(v2) - rx0).toBe(dl('txFrames', P[1]));
  });

  it('switched off at runtime: a burst takes writev and still arrives whole; kept across a restart', async () => {
    await d.ok(['set', 'tap-write-batch', 'off']);
    expect((await d.ok(['settings'])).stdout).toContain('tap write batch: off (set at runtime)');
    expect(d.logsMatching('tap_write_batch').at(-1)?.obj).toMatchObject({ want: false, on: false, source: 'runtime' });
    const s0 = await stats();
    const w0 = (await settings()).tapWriteBatch;
    expect(w0).toMatchObject({ want: false, on: false });
    const rx0 = await rxPackets(v2);
    await nsExec(v1.ns, `python3 -c 'import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor _ in range(2000): s.sendto(bytes(18),("${v2.ip}",9999))'`);
    expect(await pingCount(v1.ns, v2.ip, 5, 0.05)).toBe(5);
    const s1 = await stats();
    const w1 = (await settings()).tapWriteBatch;
    expect(s1.flowCache.hits - s0.flowCache.hits, 'still replayed').toBeGreaterThan(1000);
    expect(w1.writes).toBe(w0.writes);
    expect(w1.flushes).toBe(w0.flushes);
    const sent = port(s1, P[1]).txFrames - port(s0, P[1]).txFrames;
    expect(await rxPackets(v2) - rx0).toBe(sent);
    // Bad values change nothing.
    expect((await d.cli(['set', 'tap-write-batch', 'maybe'])).code).toBe(2);
    expect((await settings()).tapWriteBatch.want).toBe(false);
    expect(JSON.parse(readFileSync(join(stateDir, 'runtime.json'), 'utf8')).daemon).toEqual({ tapWriteBatch: { value: false, base: true } });
    await d.stop();
    d = await restartDaemon(d);
    expect((await settings()).tapWriteBatch).toMatchObject({ want: false, on: false });
    await d.ok(['set', 'tap-write-batch', 'on']);
    expect((await settings()).tapWriteBatch).toMatchObject({ want: true, on: true, error: null });
  });
});
