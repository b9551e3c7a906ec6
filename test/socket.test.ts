/*
 * Socket ports (QEMU `-netdev stream` framing) through the real daemon, with hosts
 * in the test process speaking the stream protocol (helpers/stream.ts: they answer
 * ARP and ICMP echo for their address):
 *
 *   br0  vm1   TAP, access 10    namespace 10.63.10.11
 *        vm2   TAP, access 20    namespace 10.63.10.12 (same subnet, other VLAN)
 *        vm3   attach (veth), access 10, namespace 10.63.10.13: survives restarts
 *        sock1 socket (listen), access 10   <- host1 10.63.10.50, a client that
 *              reconnects every 1 s after losing the daemon (QEMU 8.2+ reconnect=1)
 *        sock2 socket (listen), trunk 10,20 <- host2, an observer
 *        sock3 socket (connect), access 10  -> host3 10.63.10.53, listening like
 *              QEMU with server=on (the only way QEMU 7.2 survives a restart)
 *
 * Shown: port state follows the client; frames cross both ways with a namespace VM;
 * VLAN modes apply (isolation, tags on a trunk socket, tagged ingress); a second
 * client is refused; a bad length closes that client only and the port takes the
 * next; `addif --socket` / `delif` at runtime; SIGTERM + a new daemon on the same
 * config: both hosts come back and the ping gap is measured (printed as "restart gap").
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, RX_FRAMES, TX_FRAMES, findPort, macEntries, num, portState, runCli, startDaemon } from './helpers/daemon.js';
import {
  addNamespace, addVeth, cleanup, ifname, nsExec, nsname, sh, sleep, tempDir, untrackLink, waitFor,
} from './helpers/run.js';
import { ethInfo, ipBytes, macBytes, pingGap, StreamHost } from './helpers/stream.js';
import { continuousPing, flushNeigh, makeVm, ping, pingUntil, quietNamespace, type Background, type Vm } from './helpers/vm.js';

const BR = 'br0';
const T = { vm1: ifname('k1'), vm2: ifname('k2') };
const UP3 = ifname('a3');
const PEER3 = ifname('p3');
const VM1 = '10.63.10.11';
const VM2 = '10.63.10.12';
const VM3 = '10.63.10.13';
const H1 = { ip: '10.63.10.50', mac: '02:63:00:00:00:50' };
const H2 = { ip: '10.63.10.52', mac: '02:63:00:00:00:52' };
const H3 = { ip: '10.63.10.53', mac: '02:63:00:00:00:53' };
/** QEMU's reconnect=1. */
const RECONNECT_MS = 1000;

function config(dir: string): object {
  return {
    bridges: {
      [BR]: {
        ports: {
          [T.vm1]: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
          [T.vm2]: { type: 'tap', vlan: { mode: 'access', vid: 20 } },
          [UP3]: { type: 'attach', vlan: { mode: 'access', vid: 10 } },
          sock1: { type: 'socket', path: join(dir, 'sock1.sock'), vlan: { mode: 'access', vid: 10 } },
          sock2: { type: 'socket', path: join(dir, 'sock2.sock'), mode: '0660', vlan: { mode: 'trunk', allowed: [10, 20] } },
          sock3: { type: 'socket', path: join(dir, 'qemu3.sock'), connect: true, vlan: { mode: 'access', vid: 10 } },
        },
      },
    },
  };
}

/** An ARP request frame (optionally 802.1Q-tagged). */
function arpRequest(srcMac: string, srcIp: string, targetIp: string, vid?: number): Buffer {
  const tag = vid !== undefined ? 4 : 0;
  const f = Buffer.alloc(42 + tag);
  f.fill(0xff, 0, 6);
  macBytes(srcMac).copy(f, 6);
  let p = 12;
  if (vid !== undefined) {
    f.writeUInt16BE(0x8100, 12);
    f.writeUInt16BE(vid, 14);
    p = 16;
  }
  f.writeUInt16BE(0x0806, p);
  f.writeUInt16BE(1, p + 2);
  f.writeUInt16BE(0x0800, p + 4);
  f[p + 6] = 6;
  f[p + 7] = 4;
  f.writeUInt16BE(1, p + 8);
  macBytes(srcMac).copy(f, p + 10);
  ipBytes(srcIp).copy(f, p + 16);
  ipBytes(targetIp).copy(f, p + 26);
  return f;
}

describe('socket ports (QEMU stream protocol)', () => {
  let d: Daemon;
  let dir: string;
  let vm1: Vm, vm2: Vm;
  const vm3ns = nsname('vm3');
  let host1: StreamHost, host2: StreamHost, host3: StreamHost;
  const bgs: Background[] = [];

  const port = async (name: string): Promise<any> => findPort(await d.showJson(BR), name);
  const stats = async (name: string): Promise<any> => findPort((await d.ok(['stats', BR], { json: true })).json, name);

  beforeAll(async () => {
    dir = tempDir('sock');
    // vm3: a veth whose root end the daemon attaches; it outlives daemon restarts.
    await addVeth(UP3, PEER3);
    await addNamespace(vm3ns);
    await quietNamespace(vm3ns);
    await sh(`ip link set ${PEER3} netns ${vm3ns}`);
    untrackLink(PEER3);
    await nsExec(vm3ns, `ip link set ${PEER3} up && ip addr add ${VM3}/24 dev ${PEER3}`);
    await sh(`sysctl -qw net.ipv6.conf.${UP3}.disable_ipv6=1; ip link set ${UP3} up`);
    d = await startDaemon(config(dir));
    vm1 = await makeVm('vm1', T.vm1, `${VM1}/24`);
    vm2 = await makeVm('vm2', T.vm2, `${VM2}/24`);
  });

  afterAll(async () => {
    for (const b of bgs) await b.stop();
    await Promise.all([host1, host2, host3].filter(Boolean).map((h) => h.stop()));
    await d?.stop();
    await cleanup();
  });

  it('a socket port is down until a client connects; show gives path, role, mode; the file has the mode', async () => {
    const p1 = await port('sock1');
    expect(p1).toMatchObject({ kind: 'socket', state: 'down', downReason: 'no client connected', path: join(dir, 'sock1.sock'), role: 'listen', mode: '0600', connected: false });
    expect(statSync(join(dir, 'sock1.sock')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'sock2.sock')).mode & 0o777).toBe(0o660);
    expect(await port('sock3')).toMatchObject({ role: 'connect', state: 'down', connected: false });
    expect((await port('sock3')).mode).toBeUndefined();
    const text = (await d.ok(['show', BR])).stdout;
    expect(text).toMatch(/sock1\s+socket\s+down \(no client connected\)\s+access 10/);
  });

  it('a stream client exchanges frames with a namespace VM on a TAP in its VLAN', async () => {
    host1 = new StreamHost(join(dir, 'sock1.sock'), { ...H1, reconnectMs: RECONNECT_MS }).start();
    await host1.waitConnected();
    await waitFor('sock1 up', async () => portState(await port('sock1')) === 'up');
    await d.waitForLog('port_up');
    expect(await pingUntil(vm1.ns, H1.ip), 'vm1 -> host1').toBe(true);
    expect(await ping(vm1.ns, H1.ip, { count: 5, intervalSec: 0.1 }), 'vm1 -> host1 again').toBe(true);
    expect(host1.arpReplies).toBeGreaterThan(0);
    expect(host1.echoReplies).toBeGreaterThanOrEqual(5);
    expect(host1.from(vm1.mac, null).length, 'frames from vm1 arrive untagged').toBeGreaterThanOrEqual(6);
    const s = await stats('sock1');
    expect(num(s, ...RX_FRAMES), JSON.stringify(s)).toBeGreaterThanOrEqual(host1.txFrames);
    expect(num(s, ...TX_FRAMES), JSON.stringify(s)).toBeGreaterThanOrEqual(6);
    const macs = macEntries((await d.ok(['showmacs', BR], { json: true })).json);
    expect(macs).toEqual(expect.arrayContaining([expect.objectContaining({ mac: H1.mac, port: 'sock1', vlan: 10 })]));
    expect(await port('sock1')).toMatchObject({ connected: true, connects: 1 });
  });

  it('the connect role: the daemon dials a listening "QEMU" (server=on) and traffic flows', async () => {
    host3 = new StreamHost(join(dir, 'qemu3.sock'), { ...H3, role: 'server' }).start();
    await host3.waitConnected(5000);
    await waitFor('sock3 up', async () => portState(await port('sock3')) === 'up');
    expect(await pingUntil(vm1.ns, H3.ip), 'vm1 -> host3').toBe(true);
    expect(host3.echoReplies).toBeGreaterThan(0);
  });

  it('VLAN modes apply: no crossing from VLAN 20; a trunk socket sees both VLANs tagged and sends tagged', async () => {
    host2 = new StreamHost(join(dir, 'sock2.sock'), { mac: H2.mac, reconnectMs: RECONNECT_MS }).start();
    await host2.waitConnected();
    await waitFor('sock2 up', async () => portState(await port('sock2')) === 'up');
    // vm2 (VLAN 20, same subnet) cannot reach host1 (VLAN 10); its ARP reaches the trunk tagged 20.
    expect(await ping(vm2.ns, H1.ip, { count: 2, timeoutSec: 2 }), 'vm2 -> host1 across VLANs').toBe(false);
    expect(host1.from(vm2.mac).length, 'host1 saw nothing from vm2').toBe(0);
    await waitFor('vm2 ARP on the trunk, tagged 20', () => host2.from(vm2.mac, 20).some((r) => ethInfo(r.frame).type === 0x0806));
    // vm1's ARP (VLAN 10) reaches the trunk tagged 10.
    await flushNeigh(vm1.ns);
    expect(await ping(vm1.ns, H1.ip, { count: 1 })).toBe(true);
    await waitFor('vm1 ARP on the trunk, tagged 10', () => host2.from(vm1.mac, 10).some((r) => ethInfo(r.frame).type === 0x0806));
    expect(host2.received.every((r) => ethInfo(r.frame).vid === 10 || ethInfo(r.frame).vid === 20), 'the trunk gets only tagged frames').toBe(true);
    // Tagged ingress: host2 asks for vm2's address in VLAN 20; vm2 answers, tagged 20 back to the trunk.
    expect(host2.send(arpRequest(H2.mac, H2.ip, VM2, 20))).toBe(true);
    await waitFor('vm2 ARP reply to host2, tagged 20', () => host2.from(vm2.mac, 20).some((r) => {
      const e = ethInfo(r.frame);
      return e.type === 0x0806 && e.dst === H2.mac && r.frame.readUInt16BE(e.l3 + 6) === 2;
    }));
    // The same request tagged 10 finds nobody with vm2's address in VLAN 10.
    const before = host2.from(vm2.mac).length;
    host2.send(arpRequest(H2.mac, H2.ip, VM2, 10));
    await sleep(500);
    expect(host2.from(vm2.mac).length).toBe(before);
  });

  it('a second client is refused; a bad length closes that client only; the port takes the next', async () => {
    const extra = createConnection(join(dir, 'sock1.sock'));
    extra.on('error', () => {});
    await new Promise<void>((r) => extra.once('close', () => r()));
    expect(await port('sock1')).toMatchObject({ refused: 1, connected: true });
    expect(host1.connected).toBe(true);

    const closesBefore = host1.closes;
    host1.holdReconnect();
    host1.sendRaw(Buffer.from([0, 0, 0, 0]));
    await waitFor('host1 closed by the daemon', () => host1.closes > closesBefore, { timeoutMs: 5000, intervalMs: 20 });
    await waitFor('sock1 down with the reason', async () => {
      const p = await port('sock1');
      return portState(p) === 'down' && /bad frame length 0/.test(p.downReason) && p.badFrames === 1;
    });
    expect(d.alive()).toBe(true);
    await d.waitForLog('bad frame length 0');
    // The client reconnects (after RECONNECT_MS) and traffic flows again.
    host1.release();
    await host1.waitConnected(5000);
    await waitFor('sock1 up again', async () => portState(await port('sock1')) === 'up');
    expect(await pingUntil(vm1.ns, H1.ip), 'vm1 -> host1 after the bad frame').toBe(true);
    // An oversized length too.
    const big = Buffer.alloc(4);
    big.writeUInt32BE(70_000);
    const closes2 = host1.closes;
    host1.sendRaw(big);
    await waitFor('host1 closed again', () => host1.closes > closes2, { timeoutMs: 5000, intervalMs: 20 });
    await waitFor('badFrames 2', async () => (await port('sock1')).badFrames === 2);
    await host1.waitConnected(5000);
    expect(await pingUntil(vm1.ns, H1.ip)).toBe(true);
    expect(d.alive()).toBe(true);
  });

  it('vswitch addif BR NAME --socket PATH adds a socket port at runtime; delif removes it and its file', async () => {
    const path = join(dir, 'cli.sock');
    // The control socket from VSWITCH_SOCKET (runCli's default), the port's after addif.
    await d.ok(['addif', BR, 'sock9', '--socket', path, '--vlan', '10', '--mode', '0660']);
    expect(await port('sock9')).toMatchObject({ name: 'sock9', kind: 'socket', path, role: 'listen', mode: '0660', state: 'down' });
    expect(statSync(path).mode & 0o777).toBe(0o660);
    const h = new StreamHost(path, { mac: '02:63:00:00:00:59', ip: '10.63.10.59' }).start();
    try {
      await h.waitConnected();
      expect(await pingUntil(vm1.ns, '10.63.10.59'), 'vm1 -> runtime socket port').toBe(true);
    } finally {
      await h.stop();
    }
    await d.ok(['delif', BR, 'sock9']);
    expect(existsSync(path)).toBe(false);
    // Both sockets on one command line: --socket before addif is the control socket.
    const both = await runCli(['--socket', d.socket, 'addif', BR, 'sock9', '--socket', path, '--connect']);
    expect(both.code, both.stderr).toBe(0);
    expect(await port('sock9')).toMatchObject({ role: 'connect', path });
    await d.ok(['delif', BR, 'sock9']);
    // Refusals: the same path twice, --mode with --connect, a live socket of another process.
    const dup = await d.cli(['addif', BR, 'sock8', '--socket', join(dir, 'sock1.sock')]);
    expect(dup.code).toBe(1);
    expect(dup.stderr).toMatch(/already the socket of port sock1/);
    expect((await d.cli(['addif', BR, 'sock8', '--socket', path, '--connect', '--mode', '0600'])).code).toBe(2);
    expect(await port('sock8')).toBeUndefined();
  });

  it('daemon restart (SIGTERM + new daemon, same config): both hosts come back; the ping gap is measured', async () => {
    expect(await pingUntil(vm3ns, H1.ip), 'vm3 -> host1').toBe(true);
    expect(await pingUntil(vm3ns, H3.ip), 'vm3 -> host3').toBe(true);
    const INTERVAL = 0.1;
    const p1 = continuousPing(vm3ns, H1.ip, INTERVAL);
    const p3 = continuousPing(vm3ns, H3.ip, INTERVAL);
    bgs.push(p1, p3);
    await waitFor('pings running', () => p1.pingSeqs().length >= 5 && p3.pingSeqs().length >= 5, { timeoutMs: 10_000 });

    const configText = readFileSync(d.configFile, 'utf8');
    const t0 = Date.now();
    const stopped = await d.stop();
    const tDown = Date.now();
    expect(stopped.code, `exit (signal ${stopped.signal})`).toBe(0);
    expect(existsSync(join(dir, 'sock1.sock')), 'listening socket removed at exit').toBe(false);
    expect(existsSync(join(dir, 'qemu3.sock')), "QEMU's socket left alone").toBe(true);
    d = await startDaemon(null, { configText });
    const tUp = Date.now();
    await host1.waitConnected(10_000);
    await host3.waitConnected(10_000);
    const seq1 = p1.pingSeqs().length;
    const seq3 = p3.pingSeqs().length;
    await waitFor('pings answered again', () => p1.pingSeqs().length > seq1 + 5 && p3.pingSeqs().length > seq3 + 5, { timeoutMs: 15_000 });
    await sleep(500);
    const g1 = pingGap(await p1.stop(), INTERVAL);
    const g3 = pingGap(await p3.stop(), INTERVAL);
    const h1Down = host1.events.filter((e) => e.at >= t0);
    console.log(`restart gap: daemon stop ${tDown - t0} ms, new daemon answering after ${tUp - tDown} ms; ` +
      `listen role + client reconnect every ${RECONNECT_MS} ms: ping gap ${g1.gapMs} ms (${g1.lost} of ${g1.lastSeq + 1} lost at ${INTERVAL * 1000} ms); ` +
      `connect role (QEMU server=on): ping gap ${g3.gapMs} ms (${g3.lost} lost); host1 events ${JSON.stringify(h1Down.map((e) => [e.what, e.at - t0]))}`);
    expect(g1.gapMs).toBeLessThan(8000);
    expect(g3.gapMs).toBeLessThan(6000);
    expect(await port('sock1')).toMatchObject({ connected: true, connects: 1 });
    expect(await port('sock3')).toMatchObject({ connected: true, connects: 1 });
  });
});
