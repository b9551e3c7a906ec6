/*
 * The flow cache (README "Flow cache") through the real daemon: three VMs on TAPs
 * in one VLAN, the bridge as configured by default (no `flowCache` key: on). Pings between two of them are
 * replayed by the addon (hits grow) while every port counter, the forwarding
 * counters and the MAC table's ages read exactly as the pipeline would have made
 * them; a TCP stream's TSO super-frames and partial-checksum frames (the VMs'
 * offloads) are replayed with their virtio_net_hdr and arrive whole; a MAC that moves to the third VM's port is followed at once (never
 * replayed to its old port); `bridge set BR flow-cache off` stops the replays at
 * runtime and `on` brings them back; a reload with the key off stops them and the
 * traffic goes on.
 */
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, findPort, macEntries, startDaemon, toYaml } from './helpers/daemon.js';
import { cleanup, freePort, ifname, nsExec, q, tempDir } from './helpers/run.js';
import { listening, tool } from './helpers/tcp-tool.js';
import { Background, makeVm, pingCount, pingUntil, type Vm } from './helpers/vm.js';

const BR = 'br0';
const P = [ifname('fc1'), ifname('fc2'), ifname('fc3')];
/** `on` undefined: the key left out, the default. */
const config = (on?: boolean) => ({
  metrics: { listen: 'off' },
  bridges: { [BR]: { ...(on === undefined ? {} : { flowCache: on }), ports: Object.fromEntries(P.map((p) => [p, { type: 'tap', vlan: { mode: 'access', vid: 10 } }])) } },
});

describe('flow cache', () => {
  let d: Daemon;
  let v1: Vm, v2: Vm, v3: Vm;

  beforeAll(async () => {
    d = await startDaemon(config());
    v1 = await makeVm('fc1', P[0], '10.31.0.1/24');
    v2 = await makeVm('fc2', P[1], '10.31.0.2/24');
    v3 = await makeVm('fc3', P[2], '10.31.0.3/24');
  });
  afterAll(async () => {
    await d?.stop();
    await cleanup();
  });

  const stats = async () => JSON.parse((await d.ok(['stats', '--json'])).stdout)[0];
  const port = (s: any, name: string) => s.ports.find((p: any) => p.name === name);

  it('replays pings without the pipeline; counters and MAC ages are what the pipeline would have made', async () => {
    expect((await d.showJson(BR))[0].flowCache, 'on by default').toBe(true);
    expect((await d.ok(['show', BR])).stdout).toContain('flow-cache on');
    expect(await pingUntil(v1.ns, v2.ip)).toBe(true);
    const s0 = await stats();
    expect(await pingCount(v1.ns, v2.ip, 20, 0.05)).toBe(20);
    const pingsEnded = performance.now();
    const s1 = await stats();
    expect(s1.flowCache.hits - s0.flowCache.hits, 'frames replayed').toBeGreaterThan(10);
    expect(s1.flowCache.installs).toBeGreaterThan(0);
    // Every frame v1 sent went out to v2 and back (no drops): rx on one port is tx on the other.
    const dl = (k: string, p: string) => port(s1, p)[k] - port(s0, p)[k];
    expect(dl('rxFrames', P[0])).toBeGreaterThanOrEqual(20);
    expect(dl('rxFrames', P[0])).toBe(dl('txFrames', P[1]));
    expect(dl('rxFrames', P[1])).toBe(dl('txFrames', P[0]));
    expect(dl('rxBytes', P[0])).toBe(dl('txBytes', P[1]));
    const fw = s1.forwarding.forwarded - s0.forwarding.forwarded;
    const fl = s1.forwarding.floodedGroup + s1.forwarding.floodedUnknown - s0.forwarding.floodedGroup - s0.forwarding.floodedUnknown;
    expect(fw + fl).toBe(dl('rxFrames', P[0]) + dl('rxFrames', P[1]));
    // No drop while the pings ran (a link_down counted while a VM's side was still coming
    // up, before s0, is setup, not the cache: seen once at load 10).
    for (const p of P.slice(0, 2)) expect(port(s1, p).drops ?? {}).toEqual(port(s0, p).drops ?? {});
    // Both MACs' ages date from the last pings (replayed): not from the first ones, a second
    // (the 20 pings) earlier, which the pipeline saw.
    const macs = macEntries(JSON.parse((await d.ok(['showmacs', BR, '--json'])).stdout));
    const since = (performance.now() - pingsEnded) / 1000;
    for (const vm of [v1, v2]) {
      const e = macs.find((m) => m.mac === vm.mac);
      expect(e?.port).toBe(vm.ifname);
      expect(e?.raw.ageSec).toBeLessThanOrEqual(since + 0.4);
    }
  });

  it('TCP: TSO super-frames and partial checksums are replayed with their header; the bytes arrive whole, the counters balance', async () => {
    const file = join(tempDir('fc'), 'up.bin');
    const data = randomBytes(8 << 20);
    writeFileSync(file, data);
    const portNo = await freePort();
    const sink = new Background(v2.ns, tool(`serve ${portNo} sink`));
    try {
      await listening(sink, 'sink');
      const s0 = await stats();
      const got = await nsExec(v1.ns, tool(`put ${v2.ip} ${portNo} ${q(file)}`), { timeoutMs: 60_000 });
      expect(got.trim()).toBe(`got ${data.length} ${createHash('sha256').update(data).digest('hex')}`);
      const s1 = await stats();
      const dl = (k: string, p: string) => port(s1, p)[k] - port(s0, p)[k];
      // Super-frames crossed (more bytes a frame than the 1500-byte MTU allows), and most frames of
      // both directions were replayed: every one of them carries NEEDS_CSUM, the data also GSO.
      expect(dl('rxBytes', P[0]) / dl('rxFrames', P[0])).toBeGreaterThan(3000);
      expect(s1.flowCache.hits - s0.flowCache.hits).toBeGreaterThan((dl('rxFrames', P[0]) + dl('rxFrames', P[1])) / 2);
      expect(dl('rxFrames', P[0])).toBe(dl('txFrames', P[1]));
      expect(dl('rxBytes', P[0])).toBe(dl('txBytes', P[1]));
      expect(dl('rxFrames', P[1])).toBe(dl('txFrames', P[0]));
      // No drop during the transfer (those since the start, e.g. link_down while a VM's side came up, stay as they were).
      for (const p of P.slice(0, 2)) expect(port(s1, p).drops ?? {}).toEqual(port(s0, p).drops ?? {});
    } finally {
      await sink.stop();
    }
  });

  it('a MAC that moves to another port is followed at once, never replayed to the old port', async () => {
    // v3 takes over v2's MAC and address (a migrated VM); v2 goes quiet.
    await nsExec(v2.ns, `ip link set ${P[1]} down`);
    await nsExec(v3.ns, `ip addr flush dev ${P[2]} && ip link set ${P[2]} address ${v2.mac} && ip addr add ${v2.cidr} dev ${P[2]}`);
    await nsExec(v3.ns, `busybox arping -U -c 1 -I ${P[2]} ${v2.ip} || true`); // its first frame: the bridge learns the move
    const before = port(await stats(), P[2]).txFrames;
    expect(await pingCount(v1.ns, v2.ip, 10, 0.05), 'v1 reaches the moved MAC on its new port').toBe(10);
    expect(port(await stats(), P[2]).txFrames - before).toBeGreaterThanOrEqual(10);
    const macs = macEntries(JSON.parse((await d.ok(['showmacs', BR, '--json'])).stdout));
    expect(macs.find((m) => m.mac === v2.mac)?.port).toBe(P[2]);
  });

  it('bridge set flow-cache off stops replays at runtime (counted by the pipeline alone), on brings them back', async () => {
    const bad = await d.cli(['bridge', 'set', BR, 'flow-cache', 'maybe']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('flow-cache must be on or off');
    expect((await d.showJson(BR))[0].flowCache, 'a refused value changes nothing').toBe(true);
    await d.ok(['bridge', 'set', BR, 'flow-cache', 'off']);
    expect((await d.showJson(BR))[0].flowCache).toBe(false);
    expect((await d.ok(['show', BR])).stdout).toContain('flow-cache off');
    const s0 = await stats();
    expect(await pingCount(v1.ns, v2.ip, 10, 0.05)).toBe(10);
    const s1 = await stats();
    expect(s1.flowCache.on).toBe(false);
    expect(s1.flowCache.hits, 'no frame replayed with the cache off').toBe(s0.flowCache.hits);
    expect(port(s1, P[0]).rxFrames - port(s0, P[0]).rxFrames).toBeGreaterThanOrEqual(10);
    await d.ok(['bridge', 'set', BR, 'flow-cache', 'on']);
    expect((await d.showJson(BR))[0].flowCache).toBe(true);
    expect(await pingCount(v1.ns, v2.ip, 10, 0.05)).toBe(10);
    expect((await stats()).flowCache.hits - s1.flowCache.hits, 'replayed again').toBeGreaterThan(5);
  });

  it('a reload with flowCache off stops replays; traffic goes on', async () => {
    writeFileSync(d.configFile, toYaml(config(false)));
    const r = await d.ok(['reload']);
    expect(r.stdout).toContain(`flowcache ${BR} off`);
    expect((await d.showJson(BR))[0].flowCache).toBe(false);
    const s0 = await stats();
    expect(await pingCount(v1.ns, v2.ip, 10, 0.05)).toBe(10);
    const s1 = await stats();
    expect(s1.flowCache.hits).toBe(s0.flowCache.hits);
    expect(findPort(await d.showJson(BR), P[0])).toBeDefined();
  });
});
