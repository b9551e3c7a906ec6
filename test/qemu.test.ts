/*
 * A real VM on a socket port: QEMU (TCG) boots Debian's cloud kernel with an
 * initramfs built here from busybox; its virtio-net NIC is a `-netdev stream`
 * socket. The daemon's router serves DHCP on the port's VLAN.
 *
 *   br0  vmt   TAP, access 10: a namespace VM, 10.64.10.11
 *        qemu0 socket, access 10, connect role: QEMU listens (server=on) and the
 *              daemon dials it, so a restarted daemon reconnects by itself. (QEMU 7.2,
 *              Debian 12's, has no reconnect= for a stream client; see socket.ts.)
 *        qemu1 socket, access 20, listen role: QEMU connects (server=off), with
 *              reconnect= / reconnect-ms= where this QEMU has it (8.2+ / 9.2+).
 *   r0   net10 on br0 VLAN 10: 10.64.10.1/24, DHCP 10.64.10.100-199 (guest eth0)
 *        net20 on br0 VLAN 20: 10.64.20.1/24, DHCP 10.64.20.100-199 (guest eth1)
 *
 * The guest's /init loads virtio modules, runs udhcpc on both NICs, pings both
 * gateways and the namespace VM, prints "VSW ..." markers on the serial console,
 * then pings the VLAN 10 gateway every 0.2 s. The test restarts the daemon (SIGTERM
 * + a new daemon on the same config and state dir) and checks the pings come back;
 * the gap is printed.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, findPort, startDaemon } from './helpers/daemon.js';
import {
  buildInitramfs, ensureQemuPackages, findCloudKernel, qemuVersion, QemuVm, startQemu,
} from './helpers/qemu.js';
import { cleanup, ifname, sleep, tempDir, waitFor } from './helpers/run.js';
import { makeVm, ping, type Vm } from './helpers/vm.js';
import { pingGap } from './helpers/stream.js';

const BR = 'br0';
const TAP = ifname('qt');
const GW = '10.64.10.1';
const PEER = '10.64.10.11';
const GW20 = '10.64.20.1';
const MAC_BYTE = Math.floor(Math.random() * 256).toString(16).padStart(2, '0');
const GUEST_MAC = `52:54:00:64:${MAC_BYTE}:01`;
const GUEST_MAC1 = `52:54:00:64:${MAC_BYTE}:02`;
const PING_INTERVAL = 0.2;

const INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
echo "VSW init"
for m in $(cat /etc/modules.order); do insmod /lib/modules/$m || echo "VSW insmod $m failed"; done
for i in $(seq 1 100); do [ -e /sys/class/net/eth1 ] && break; sleep 0.1; done
ip link set lo up
for n in eth0 eth1; do ip link set $n up; echo "VSW $n $(cat /sys/class/net/$n/address)"; done
arg() { sed -n "s/.*vsw.$1=\\([0-9.]*\\).*/\\1/p" /proc/cmdline; }
PEER=$(arg peer)
GW20=$(arg gw20)
for n in eth0 eth1; do
  udhcpc -i $n -s /etc/udhcpc.sh -f -q -n -t 15 -T 1 -A 1 >/dev/null 2>&1 || echo "VSW dhcp $n FAIL"
done
GW=$(ip route | sed -n 's/^default via \\([0-9.]*\\).*/\\1/p')
if ping -c 3 -W 2 "$GW" >/dev/null; then echo "VSW ping-gw ok $GW"; else echo "VSW ping-gw FAIL $GW"; fi
if ping -c 3 -W 2 "$PEER" >/dev/null; then echo "VSW ping-peer ok $PEER"; else echo "VSW ping-peer FAIL $PEER"; fi
if ping -c 3 -W 2 "$GW20" >/dev/null; then echo "VSW ping-gw20 ok $GW20"; else echo "VSW ping-gw20 FAIL $GW20"; fi
echo "VSW pinging $GW"
exec ping -i ${PING_INTERVAL} -W 1 "$GW"
`;

const UDHCPC = `#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$router" ] && ip route add default via "\${router%% *}" dev "$interface" 2>/dev/null
    echo "VSW lease if=$interface ip=$ip mask=$mask router=$router lease=$lease serverid=$serverid" > /dev/console
    ;;
esac
exit 0
`;

describe('a QEMU guest on a socket port', () => {
  let d: Daemon;
  let vm: QemuVm | undefined;
  let peer: Vm;
  let sockPath: string;
  let sock1Path: string;
  let configText: string;
  /** The stream client option that makes this QEMU reconnect, if it has one. */
  let reconnectOpt = '';

  beforeAll(async () => {
    await ensureQemuPackages();
    const [maj, min] = await qemuVersion();
    if (maj < 7 || (maj === 7 && min < 2)) throw new Error(`QEMU ${maj}.${min} has no -netdev stream (7.2+ needed)`);
    const v = maj * 100 + min;
    reconnectOpt = v >= 902 ? ',reconnect-ms=1000' : v >= 802 ? ',reconnect=1' : '';
    const kernel = findCloudKernel();
    const dir = tempDir('qemu');
    const initrd = await buildInitramfs(dir, kernel, {
      init: INIT,
      files: { '/etc/udhcpc.sh': UDHCPC },
      modules: ['virtio_pci', 'virtio_net'],
    });
    sockPath = join(dir, 'qemu0.sock');
    sock1Path = join(dir, 'qemu1.sock');
    const stateDir = tempDir('state');
    d = await startDaemon({
      stateDir,
      bridges: {
        [BR]: {
          ports: {
            // A namespace VM with a static address (not leased): the anti-spoofing
            // guards that a router network's VLAN turns on by default would drop it.
            [TAP]: { type: 'tap', vlan: { mode: 'access', vid: 10 }, guard: { dhcp: false, ipSource: false } },
            qemu0: { type: 'socket', path: sockPath, connect: true, vlan: { mode: 'access', vid: 10 } },
            qemu1: { type: 'socket', path: sock1Path, vlan: { mode: 'access', vid: 20 } },
          },
        },
      },
      routers: {
        r0: {
          networks: {
            net10: { bridge: BR, vlan: 10, address: `${GW}/24`, dhcp: { pool: ['10.64.10.100-10.64.10.199'], leaseTime: 600 } },
            net20: { bridge: BR, vlan: 20, address: `${GW20}/24`, dhcp: { pool: ['10.64.20.100-10.64.20.199'], leaseTime: 600 } },
          },
        },
      },
    });
    configText = readFileSync(d.configFile, 'utf8');
    peer = await makeVm('qpeer', TAP, `${PEER}/24`);
    vm = startQemu({
      kernel,
      initrd,
      append: `console=ttyS0 quiet panic=-1 vsw.peer=${PEER} vsw.gw20=${GW20}`,
      net: [
        '-netdev', `stream,id=n0,server=on,addr.type=unix,addr.path=${sockPath}`,
        '-device', `virtio-net-pci,netdev=n0,mac=${GUEST_MAC}`,
        '-netdev', `stream,id=n1,server=off,addr.type=unix,addr.path=${sock1Path}${reconnectOpt}`,
        '-device', `virtio-net-pci,netdev=n1,mac=${GUEST_MAC1}`,
      ],
    });
  }, 900_000); // long only when ensureQemuPackages has to install (scripts/setup.sh should have)

  afterAll(async () => {
    await vm?.stop();
    await d?.stop();
    await cleanup();
  });

  it('the guest boots, gets DHCP leases from the router on both socket ports, pings the gateways and the namespace VM', async () => {
    const t0 = Date.now();
    await vm!.waitLine(/VSW init/, 'the guest /init to start', 40_000);
    const tInit = Date.now();
    await waitFor('both QEMU NICs connected', async () => {
      const v = await d.showJson(BR);
      return findPort(v, 'qemu0')?.state === 'up' && findPort(v, 'qemu1')?.state === 'up';
    }, { timeoutMs: 10_000 });
    expect((await vm!.waitLine(/VSW eth0 (\S+)/, 'eth0 in the guest', 20_000))[1]).toBe(GUEST_MAC);
    expect((await vm!.waitLine(/VSW eth1 (\S+)/, 'eth1 in the guest', 20_000))[1]).toBe(GUEST_MAC1);
    const lease = await vm!.waitLine(/VSW (lease if=eth0 ip=(\S+) .*router=(\S+)|dhcp eth0 FAIL)/, 'a DHCP lease on eth0', 30_000);
    const tLease = Date.now();
    expect(lease[1], vm!.console).toMatch(/^lease/);
    const ip = lease[2];
    expect(lease[3]).toBe(GW);
    expect(ip).toMatch(/^10\.64\.10\.1\d\d$/);
    const lease1 = await vm!.waitLine(/VSW (lease if=eth1 ip=(\S+) .*router=(\S+)|dhcp eth1 FAIL)/, 'a DHCP lease on eth1', 30_000);
    expect(lease1[1], vm!.console).toMatch(/^lease/);
    expect(lease1[2]).toMatch(/^10\.64\.20\.1\d\d$/);
    expect(lease1[3]).toBe(GW20);
    const leases = (await d.ok(['dhcp', 'leases'], { json: true })).json as any[];
    expect(leases, JSON.stringify(leases)).toEqual(expect.arrayContaining([
      expect.objectContaining({ network: 'net10', ip, mac: GUEST_MAC }),
      expect.objectContaining({ network: 'net20', ip: lease1[2], mac: GUEST_MAC1 }),
    ]));
    const gw = await vm!.waitLine(/VSW ping-gw (\S+)/, 'the gateway ping', 20_000);
    expect(gw[1], vm!.console).toBe('ok');
    const pp = await vm!.waitLine(/VSW ping-peer (\S+)/, 'the namespace VM ping', 20_000);
    expect(pp[1], vm!.console).toBe('ok');
    expect((await vm!.waitLine(/VSW ping-gw20 (\S+)/, 'the VLAN 20 gateway ping (listen-role port)', 20_000))[1], vm!.console).toBe('ok');
    // And the other way: the namespace VM reaches the guest.
    expect(await ping(peer.ns, ip, { count: 3, timeoutSec: 3 }), 'namespace VM -> guest').toBe(true);
    console.log(`qemu: /init after ${tInit - t0} ms, lease after ${tLease - t0} ms (from QEMU start, TCG)`);
  });

  it('after a daemon restart the guest keeps pinging the gateway (the daemon reconnects to QEMU)', async () => {
    await vm!.waitLine(/VSW pinging/, 'the continuous ping', 10_000);
    const replies = (): number => (vm!.console.match(new RegExp(`from ${GW.replace(/\./g, '\\.')}: seq=`, 'g')) ?? []).length;
    await waitFor('continuous ping replies', () => replies() >= 5, { timeoutMs: 10_000 });
    const t0 = Date.now();
    const stopped = await d.stop();
    expect(stopped.code).toBe(0);
    d = await startDaemon(null, { configText });
    const tUp = Date.now();
    const before = replies();
    await waitFor('ping replies after the restart', () => replies() >= before + 10, { timeoutMs: 20_000, intervalMs: 100 });
    await sleep(300);
    const text = vm!.console.slice(vm!.console.indexOf('VSW pinging'));
    const g = pingGap(text, PING_INTERVAL);
    console.log(`restart gap (QEMU guest -> gateway, daemon restart, connect role): ${g.gapMs} ms; ` +
      `${g.lost} of ${g.lastSeq + 1} pings lost at ${PING_INTERVAL * 1000} ms; new daemon answering ${tUp - t0} ms after SIGTERM`);
    expect(g.gapMs).toBeLessThan(10_000);
    const v = await d.showJson(BR);
    expect(findPort(v, 'qemu0')).toMatchObject({ state: 'up', connected: true });
    // The listen-role NIC comes back only if this QEMU's stream client reconnects.
    if (reconnectOpt !== '') {
      await waitFor('qemu1 reconnected', async () => findPort(await d.showJson(BR), 'qemu1')?.state === 'up', { timeoutMs: 10_000 });
    } else {
      console.log(`qemu1 (listen role, QEMU ${(await qemuVersion()).join('.')} without reconnect=): ${findPort(v, 'qemu1')?.state} after the restart, as expected`);
    }
  });
});
