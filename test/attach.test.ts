/*
 * An `attach` port as a bridged uplink: a veth whose root end the daemon attaches
 * (AF_PACKET) and whose peer sits in a namespace "lan" with an address in VLAN 1.
 * A TAP VM in VLAN 1 reaches the lan namespace and back, and TCP works both ways
 * with the kernel's default offloads on (TSO/GSO/checksum offload on the veth: the
 * daemon gets super-frames and partial checksums from AF_PACKET and must segment /
 * complete them for the TAP, and the other way round).
 */
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, RX_BYTES, TX_BYTES, findPort, num, startDaemon } from './helpers/daemon.js';
import {
  addNamespace, addVeth, cleanup, ifname, nsExec, nsExecR, nsname, sh, sleep, tempDir, untrackLink,
} from './helpers/run.js';
import { Background, makeVm, ping, pingCount, pingUntil, quietNamespace, tcpdump, type Vm } from './helpers/vm.js';

const BR = 'br0';
const UP = ifname('up');
const LAN_IF = ifname('lan');
const LAN_IP = '10.0.0.100';

describe('attach port as bridged uplink', () => {
  let d: Daemon;
  let vm: Vm;
  const lan = nsname('lan');
  let dir: string;
  let payload: string;
  let payloadHash: string;
  const SIZE = 8 * 1024 * 1024;

  beforeAll(async () => {
    await addVeth(UP, LAN_IF);
    await addNamespace(lan);
    await quietNamespace(lan);
    await sh(`ip link set ${LAN_IF} netns ${lan}`);
    untrackLink(LAN_IF);
    await nsExec(lan, `ip link set ${LAN_IF} up && ip addr add ${LAN_IP}/24 dev ${LAN_IF}`);
    await sh(`sysctl -qw net.ipv6.conf.${UP}.disable_ipv6=1; ip link set ${UP} up`);
    d = await startDaemon({
      bridges: {
        [BR]: {
          ports: {
            [UP]: { type: 'attach' },        // access VLAN 1
            [ifname('vm1')]: { type: 'tap' }, // access VLAN 1
          },
        },
      },
    });
    vm = await makeVm('vm1', ifname('vm1'), '10.0.0.1/24');
    dir = tempDir('data');
    const buf = randomBytes(SIZE);
    payload = join(dir, 'payload.bin');
    writeFileSync(payload, buf);
    payloadHash = createHash('sha256').update(buf).digest('hex');
  });

  afterAll(async () => {
    await d?.stop();
    await cleanup();
  });

  it('the VM reaches the lan namespace through the attached veth, and back', async () => {
    expect(await pingUntil(vm.ns, LAN_IP), 'vm -> lan').toBe(true);
    expect(await pingCount(lan, vm.ip, 10), 'lan -> vm').toBeGreaterThanOrEqual(9);
    // Large ICMP (fragmented at 1500 MTU) both ways.
    expect(await nsExecR(vm.ns, `busybox ping -c 2 -s 4000 -W 2 ${LAN_IP}`).then((r) => r.code)).toBe(0);
    expect(await nsExecR(lan, `busybox ping -c 2 -s 1472 -W 2 ${vm.ip}`).then((r) => r.code)).toBe(0);
    const stats = (await d.ok(['stats', BR], { json: true })).json;
    const up = findPort(stats, UP);
    expect(num(up, ...RX_BYTES), JSON.stringify(up)).toBeGreaterThan(0);
    expect(num(up, ...TX_BYTES), JSON.stringify(up)).toBeGreaterThan(0);
  });

  it('the lan side runs with default offloads (so the TCP tests exercise GSO)', async () => {
    const k = await nsExec(lan, `ethtool -k ${LAN_IF}`);
    expect(k).toMatch(/tcp-segmentation-offload: on/);
    expect(k).toMatch(/generic-segmentation-offload: on/);
    expect(k).toMatch(/tx-checksumming: on/);
  });

  for (const dir_ of ['lan -> vm', 'vm -> lan'] as const) {
    it(`TCP transfer ${dir_} (socat, ${SIZE / 1048576} MiB, content intact)`, async () => {
      const [srvNs, srvIp, cliNs] = dir_ === 'lan -> vm' ? [vm.ns, vm.ip, lan] : [lan, LAN_IP, vm.ns];
      const out = join(dir, `recv-${dir_ === 'lan -> vm' ? 'vm' : 'lan'}.bin`);
      const port = 5001 + (dir_ === 'lan -> vm' ? 0 : 1);
      const server = new Background(srvNs, `socat -u TCP-LISTEN:${port},reuseaddr OPEN:${out},creat,trunc`);
      try {
        // Wait until the listener is there.
        for (let i = 0; i < 50; i++) {
          const r = await nsExecR(srvNs, `ss -ltn | grep -q ':${port} '`);
          if (r.code === 0) break;
          await sleep(100);
        }
        // Frames bigger than the MTU on the veth prove the kernel hands the daemon
        // GSO super-frames here (so the daemon had to segment them for the TAP).
        const big = dir_ === 'lan -> vm' ? await tcpdump(null, UP, 'tcp and greater 3000') : undefined;
        const t0 = Date.now();
        const r = await nsExecR(cliNs, `socat -u OPEN:${payload} TCP:${srvIp}:${port},connect-timeout=5`, { timeoutMs: 30_000 });
        const bigLines = big ? await big.stop(0) : [];
        expect(r.code, `socat client: ${r.stderr}`).toBe(0);
        if (big) expect(bigLines.length, 'super-frames arrived on the attached veth').toBeGreaterThan(0);
        // The server exits when the stream ends.
        for (let i = 0; i < 100 && server.proc.exitCode === null; i++) await sleep(100);
        expect(server.proc.exitCode, `socat server: ${server.err}`).toBe(0);
        const hash = (await sh(`sha256sum ${out}`)).split(' ')[0];
        const size = Number((await sh(`stat -c %s ${out}`)).trim());
        expect(size).toBe(SIZE);
        expect(hash).toBe(payloadHash);
        expect(Date.now() - t0).toBeLessThan(30_000);
      } finally {
        await server.stop();
      }
    });
  }

  it('iperf3 -t 2 both ways moves data', async () => {
    const server = new Background(vm.ns, 'iperf3 -s -p 5201');
    try {
      for (let i = 0; i < 50; i++) {
        if ((await nsExecR(vm.ns, `ss -ltn | grep -q ':5201 '`)).code === 0) break;
        await sleep(100);
      }
      for (const reverse of [false, true]) {
        const r = await nsExecR(lan, `iperf3 -c ${vm.ip} -p 5201 -t 2 -J ${reverse ? '-R' : ''}`, { timeoutMs: 30_000 });
        expect(r.code, `iperf3${reverse ? ' -R' : ''}: ${r.stdout.slice(-1000)} ${r.stderr}`).toBe(0);
        const j = JSON.parse(r.stdout);
        const bytes = j.end?.sum_received?.bytes ?? 0;
        // > 10 MB in 2 s (~40 Mbit/s): a switch that drops or corrupts super-frames stalls far below that.
        expect(bytes, `iperf3${reverse ? ' -R' : ''} received bytes`).toBeGreaterThan(10_000_000);
      }
    } finally {
      await server.stop();
    }
    expect(await ping(vm.ns, LAN_IP, { count: 1 })).toBe(true);
    expect(d.alive()).toBe(true);
  });
});
