/*
 * Guest offloads end to end through the real daemon. Bridge br0, VLAN 10:
 *   vm1, vm2: TAP ports with offloads (the default): the namespaces get TSO and
 *             tx-checksumming, and hand the switch GSO super-frames with a
 *             virtio-net header, which go on whole to the other TAP;
 *   vm3:      a TAP with `offload: false`: it must get MTU-sized, complete frames,
 *             so the switch segments vm1's super-frames for it;
 *   net10:    router r0's network (10.62.10.1/24), NAT to an uplink veth whose
 *             other end is an "internet" namespace: the router takes super-frames
 *             with their header (an offload port), translates them once and sends
 *             them on whole, up through the uplink's packet socket and down into
 *             the bridge, which hands them to vm1's TAP as they are;
 *   trunk:    one end of a veth pair, attached as a trunk (VLAN 10 tagged); the
 *             other end is a trunk of bridge br1, whose vm4 is in VLAN 10 too. A
 *             super-frame to vm4 gets a tag (+4 on its header's offsets), crosses
 *             the veth whole, comes back through AF_PACKET with the tag in
 *             metadata (restored, +4) and loses it again at vm4's port (-4).
 * Shown: ethtool -k in the VMs; an iperf3 run vm1 -> vm2 whose frames across
 * vm1's port average more than 10 KB; 8 MiB transfers (sha256 checked) vm1 -> vm3,
 * vm1 <-> internet through NAT, with no drops on the ports that needed the
 * software fallback, and vm1 <-> vm4 across the tagged veth in super-frames; a 64 MiB
 * download internet -> vm1 through NAT, intact, in super-frames at vm1's interface.
 */
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, RX_BYTES, RX_FRAMES, TX_BYTES, TX_FRAMES, dropCount, findPort, num, startDaemon } from './helpers/daemon.js';
import { makeInternet, type Internet } from './helpers/inet.js';
import { addVeth, cleanup, ifname, nsExec, nsExecR, q, sh, sleep, tempDir, waitFor } from './helpers/run.js';
import { Background, makeVm, pingUntil, type Vm } from './helpers/vm.js';

const BR = 'br0';
const T = { vm1: ifname('o1'), vm2: ifname('o2'), vm3: ifname('o3'), vm4: ifname('o4') };
const TRUNK_A = ifname('ota');
const TRUNK_B = ifname('otb');
const GW = '10.62.10.1';
const PUB = '198.51.100.2';
const INET = '198.51.100.1';
const SIZE = 8 * 1024 * 1024;
const BIG = 64 * 1024 * 1024;

async function waitListening(ns: string, port: number): Promise<void> {
  await waitFor(`tcp port ${port} listening in ${ns}`, async () => new RegExp(`:${port}\\s`).test(await nsExec(ns, 'ss -Hltn')), {
    timeoutMs: 10_000, intervalMs: 100,
  });
}

const sha256File = async (path: string): Promise<string> => (await sh(`sha256sum ${q(path)}`)).split(' ')[0];

describe('guest offloads: TSO from the VMs, super-frames between TAPs, segmentation for ports without offload', () => {
  let d: Daemon;
  let inet: Internet;
  let vm1: Vm, vm2: Vm, vm3: Vm, vm4: Vm;
  let dir: string;
  let payload: string;
  let payloadHash: string;

  const stats = async (): Promise<unknown> => (await d.ok(['stats', BR], { json: true })).json;

  beforeAll(async () => {
    inet = await makeInternet('oinet');
    await addVeth(TRUNK_A, TRUNK_B);
    for (const l of [TRUNK_A, TRUNK_B]) await sh(`sysctl -qw net.ipv6.conf.${l}.disable_ipv6=1; ip link set ${l} up`);
    d = await startDaemon({
      stateDir: tempDir('state'),
      bridges: {
        [BR]: {
          ports: {
            [T.vm1]: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
            [T.vm2]: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
            [T.vm3]: { type: 'tap', offload: false, vlan: { mode: 'access', vid: 10 } },
            [TRUNK_A]: { type: 'attach', vlan: { mode: 'trunk', allowed: [10] } },
          },
        },
        br1: {
          ports: {
            [TRUNK_B]: { type: 'attach', vlan: { mode: 'trunk', allowed: [10] } },
            [T.vm4]: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
          },
        },
      },
      routers: {
        r0: {
          uplink: { interface: inet.uplink, address: `${PUB}/24`, gateway: INET },
          networks: { net10: { bridge: BR, vlan: 10, address: `${GW}/24` } },
        },
      },
    });
    vm1 = await makeVm('o1', T.vm1, '10.62.10.11/24');
    vm2 = await makeVm('o2', T.vm2, '10.62.10.12/24');
    vm3 = await makeVm('o3', T.vm3, '10.62.10.13/24');
    vm4 = await makeVm('o4', T.vm4, '10.62.10.14/24');
    for (const vm of [vm1, vm2, vm3, vm4]) await nsExec(vm.ns, `ip route add default via ${GW}`);
    dir = tempDir('data');
    const buf = randomBytes(SIZE);
    payload = join(dir, 'payload.bin');
    writeFileSync(payload, buf);
    payloadHash = createHash('sha256').update(buf).digest('hex');
    await waitFor('the uplink to be up', async () => {
      const r = (await d.ok(['router', 'show', 'r0'], { json: true })).json;
      return String((Array.isArray(r) ? r[0] : r)?.uplink?.state) === 'up';
    }, { timeoutMs: 15_000 });
  });

  afterAll(async () => {
    await d?.stop();
    await cleanup();
  });

  it('TAP ports give the VM TSO and tx-checksumming by default, and not with offload: false', async () => {
    for (const vm of [vm1, vm2]) {
      const k = await nsExec(vm.ns, `ethtool -k ${q(vm.ifname)}`);
      expect(k, vm.name).toMatch(/^tcp-segmentation-offload: on/m);
      expect(k, vm.name).toMatch(/^tx-checksumming: on/m);
      expect(await nsExec(vm.ns, `ip -d link show ${q(vm.ifname)}`)).toMatch(/vnet_hdr on/);
    }
    const k3 = await nsExec(vm3.ns, `ethtool -k ${q(vm3.ifname)}`);
    expect(k3).toMatch(/^tcp-segmentation-offload: off/m);
    expect(k3).toMatch(/^tx-checksumming: off/m);
    const show = (await d.ok(['show', BR], { json: true })).json;
    expect(findPort(show, T.vm1)?.offload).toBe(true);
    expect(findPort(show, T.vm3)?.offload).toBe(false);
  });

  it('iperf3 vm1 -> vm2 (3 s): the frames crossing vm1 port average more than 10 KB', async () => {
    expect(await pingUntil(vm1.ns, vm2.ip)).toBe(true);
    const server = new Background(vm2.ns, `iperf3 -s -1 -B ${vm2.ip} -p 5201`);
    try {
      await waitListening(vm2.ns, 5201);
      const p0 = findPort(await stats(), T.vm1);
      const r = await nsExecR(vm1.ns, `iperf3 -c ${vm2.ip} -p 5201 -t 3 -J`, { timeoutMs: 30_000 });
      const p1 = findPort(await stats(), T.vm1);
      expect(r.code, r.stderr).toBe(0);
      const j = JSON.parse(r.stdout);
      const bytes = j.end?.sum_received?.bytes ?? 0;
      expect(bytes, 'bytes received by iperf3').toBeGreaterThan(50_000_000);
      const frames = num(p1, ...RX_FRAMES)! - num(p0, ...RX_FRAMES)!;
      const rxBytes = num(p1, ...RX_BYTES)! - num(p0, ...RX_BYTES)!;
      const avg = rxBytes / frames;
      console.log(`iperf3 vm1 -> vm2: ${(j.end.sum_received.bits_per_second / 1e9).toFixed(2)} Gbit/s, ` +
        `${frames} frames, ${Math.round(avg)} bytes/frame on ${T.vm1}, ${j.end.sum_sent.retransmits} retransmits`);
      expect(avg, 'average bytes per frame received on vm1 port').toBeGreaterThan(10_000);
    } finally {
      await server.stop();
    }
  });

  /** socat transfer of the payload (or `file`, `size` bytes hashing to `hash`); `send` is the side with the file. */
  async function transfer(
    sendNs: string, recvNs: string, listenOn: 'sender' | 'receiver', ip: string, port: number,
    file = { path: payload, size: SIZE, hash: payloadHash },
  ): Promise<void> {
    const out = join(dir, `recv-${port}.bin`);
    const sendCmd = (addr: string) => `socat -u OPEN:${q(file.path)} ${addr}`;
    const recvCmd = (addr: string) => `socat -u ${addr} OPEN:${q(out)},creat,trunc`;
    const [srvNs, srvCmd, cliNs, cliCmd] = listenOn === 'receiver'
      ? [recvNs, recvCmd(`TCP-LISTEN:${port},reuseaddr`), sendNs, sendCmd(`TCP:${ip}:${port},connect-timeout=5`)]
      : [sendNs, sendCmd(`TCP-LISTEN:${port},reuseaddr`), recvNs, recvCmd(`TCP:${ip}:${port},connect-timeout=5`)];
    const server = new Background(srvNs, srvCmd);
    try {
      await waitListening(srvNs, port);
      const r = await nsExecR(cliNs, cliCmd, { timeoutMs: 60_000 });
      expect(r.code, `socat client: ${r.stderr}`).toBe(0);
      for (let i = 0; i < 100 && server.proc.exitCode === null; i++) await sleep(100);
      expect(server.proc.exitCode, `socat server: ${server.err}`).toBe(0);
      expect(Number((await sh(`stat -c %s ${q(out)}`)).trim())).toBe(file.size);
      expect(await sha256File(out)).toBe(file.hash);
    } finally {
      await server.stop();
    }
  }

  it('vm1 (offload) -> vm3 (offload: false): 8 MiB intact, vm1 sent super-frames, vm3 port dropped nothing', async () => {
    const p0 = findPort(await stats(), T.vm1);
    await transfer(vm1.ns, vm3.ns, 'receiver', vm3.ip, 5301);
    const s = await stats();
    const p1 = findPort(s, T.vm1);
    const avg = (num(p1, ...RX_BYTES)! - num(p0, ...RX_BYTES)!) / (num(p1, ...RX_FRAMES)! - num(p0, ...RX_FRAMES)!);
    expect(avg, 'bytes per frame from vm1').toBeGreaterThan(10_000);
    expect(dropCount(findPort(s, T.vm3), 'tx_error')).toBe(0);
  });

  it('vm3 (offload: false) -> vm1: 8 MiB intact', async () => {
    await transfer(vm3.ns, vm1.ns, 'receiver', vm1.ip, 5302);
  });

  it('vm1 <-> vm4 across the tagged veth trunk: 8 MiB each way intact, in super-frames on the trunk', async () => {
    expect(await pingUntil(vm1.ns, vm4.ip), 'vm1 -> vm4 across the trunk').toBe(true);
    const t0 = findPort(await stats(), TRUNK_A);
    await transfer(vm1.ns, vm4.ns, 'receiver', vm4.ip, 5501);
    await transfer(vm4.ns, vm1.ns, 'receiver', vm1.ip, 5502);
    const t1 = findPort(await stats(), TRUNK_A);
    const rx = (num(t1, ...RX_BYTES)! - num(t0, ...RX_BYTES)!) / (num(t1, ...RX_FRAMES)! - num(t0, ...RX_FRAMES)!);
    expect(rx, 'bytes per frame received on the trunk (vm4 -> vm1 data)').toBeGreaterThan(10_000);
  });

  it('through the router and NAT: 8 MiB vm1 -> internet (super-frames through the router whole) and internet -> vm1, intact', async () => {
    expect(await pingUntil(vm1.ns, INET), 'vm1 -> internet').toBe(true);
    const s0 = await stats();
    const p0 = findPort(s0, T.vm1);
    await transfer(vm1.ns, inet.ns, 'receiver', INET, 5401);
    const s = await stats();
    const p1 = findPort(s, T.vm1);
    const avg = (num(p1, ...RX_BYTES)! - num(p0, ...RX_BYTES)!) / (num(p1, ...RX_FRAMES)! - num(p0, ...RX_FRAMES)!);
    expect(avg, 'bytes per frame from vm1 during the upload').toBeGreaterThan(10_000);
    expect(dropCount(findPort(s, 'net10'), 'tx_error')).toBe(0);
    // The bridge handed the router vm1's super-frames whole (net10 is an offload port).
    const r0 = findPort(s0, 'net10');
    const r1 = findPort(s, 'net10');
    const toRouter = (num(r1, ...TX_BYTES)! - num(r0, ...TX_BYTES)!) / (num(r1, ...TX_FRAMES)! - num(r0, ...TX_FRAMES)!);
    expect(toRouter, 'bytes per frame the bridge sent to the router during the upload').toBeGreaterThan(10_000);
    await transfer(inet.ns, vm1.ns, 'sender', INET, 5402);
    const r = (await d.ok(['router', 'show', 'r0'], { json: true })).json;
    const router = Array.isArray(r) ? r[0] : r;
    expect(JSON.stringify(router?.networks ?? router)).not.toMatch(/"malformed":[1-9]/);
    expect(d.alive()).toBe(true);
  });

  it('NAT download: 64 MiB internet -> vm1 intact, arriving at vm1 in GSO super-frames (router and uplink keep them whole)', async () => {
    const bytes = Buffer.allocUnsafe(BIG);
    for (let o = 0; o < BIG; o += 4 * 1024 * 1024) randomBytes(4 * 1024 * 1024).copy(bytes, o);
    const big = { path: join(dir, 'big.bin'), size: BIG, hash: createHash('sha256').update(bytes).digest('hex') };
    writeFileSync(big.path, bytes);
    const linkRx = async (): Promise<{ packets: number; bytes: number }> => {
      const j = JSON.parse(await nsExec(vm1.ns, `ip -s -j link show dev ${q(vm1.ifname)}`));
      return { packets: Number(j[0].stats64.rx.packets), bytes: Number(j[0].stats64.rx.bytes) };
    };
    const perFrame = (a: unknown, b: unknown, bytes: string[], frames: string[]): number =>
      (num(b, ...bytes)! - num(a, ...bytes)!) / (num(b, ...frames)! - num(a, ...frames)!);
    const l0 = await linkRx();
    const s0 = await stats();
    await transfer(inet.ns, vm1.ns, 'sender', INET, 5403, big);
    const l1 = await linkRx();
    const s1 = await stats();
    // vm1's TAP counts what the daemon wrote into it: one packet per super-frame.
    const linkAvg = (l1.bytes - l0.bytes) / (l1.packets - l0.packets);
    const portAvg = perFrame(findPort(s0, T.vm1), findPort(s1, T.vm1), TX_BYTES, TX_FRAMES);
    const routerAvg = perFrame(findPort(s0, 'net10'), findPort(s1, 'net10'), RX_BYTES, RX_FRAMES);
    console.log(`NAT download 64 MiB: ${Math.round(linkAvg)} bytes/packet received by vm1's interface, ` +
      `${Math.round(portAvg)} bytes/frame sent on its port, ${Math.round(routerAvg)} bytes/frame from the router`);
    expect(linkAvg, 'bytes per packet received by vm1 interface').toBeGreaterThan(1514);
    expect(portAvg, 'bytes per frame the switch sent to vm1').toBeGreaterThan(1514);
    expect(routerAvg, 'bytes per frame the router emitted into the bridge').toBeGreaterThan(1514);
    expect(dropCount(findPort(s1, T.vm1), 'tx_error')).toBe(0);
    const r = (await d.ok(['router', 'show', 'r0'], { json: true })).json;
    const router = Array.isArray(r) ? r[0] : r;
    expect(JSON.stringify(router)).not.toMatch(/"(malformed|offloadDropped)":[1-9]/);
    expect(d.alive()).toBe(true);
  });
});
