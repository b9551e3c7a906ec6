/*
 * The router's uplink gets its own address by DHCP (`uplink: { address: dhcp }`),
 * like a home router's WAN port. The "internet" namespace (198.51.100.1/24 on its
 * veth end, 203.0.113.80 on its loopback as a host further away) runs dnsmasq as
 * the DHCP server: pool 198.51.100.50-99, lease 2 min (dnsmasq's minimum), router
 * option 198.51.100.1. A VM behind the router (persistent TAP, VLAN 10, static
 * 10.61.10.11/24, default route via 10.61.10.1) reaches the internet through NAT.
 *
 * Shown, in order (one daemon, restarted once):
 * - before any DHCP server runs: the uplink has no address, keeps DISCOVERing from
 *   0.0.0.0 with growing intervals, and NAT drops the VM's packets (no public address);
 * - dnsmasq starts: the uplink is bound to an address of the pool, with the gateway
 *   from option 3, announced by a gratuitous ARP; dnsmasq's lease names the uplink
 *   MAC and hostname;
 * - the VM pings and sends UDP to internet hosts; they see the DHCP address;
 * - a daemon restart (same state dir): the uplink asks for the same address
 *   (INIT-REBOOT: a REQUEST, no DISCOVER) and gets it; NAT works again;
 * - at T1 (60 s) the lease is renewed by a unicast REQUEST to the server, the
 *   address unchanged and NAPT sessions kept.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, startDaemon } from './helpers/daemon.js';
import { makeInternet, udpSend, udpTool, type Internet } from './helpers/inet.js';
import { cleanup, ifname, nsExec, q, sh, sleep, tempDir, trackLink, waitFor } from './helpers/run.js';
import { Background, type Capture, makeVm, ping, pingUntil, tcpdump, type Vm } from './helpers/vm.js';

const BR = 'br0';
const TAP = ifname('ud1');
const INET = '198.51.100.1';
const FAR = '203.0.113.80';
const GW10 = '10.61.10.1';
const VM1 = '10.61.10.11';
const POOL = /^198\.51\.100\.(5\d|[6-9]\d)$/;
const esc = (s: string): string => s.replace(/\./g, '\\.');

function config(stateDir: string, uplink: string): object {
  return {
    stateDir,
    bridges: { [BR]: { ports: { [TAP]: { type: 'tap', persistent: true, vlan: { mode: 'access', vid: 10 } } } } },
    routers: {
      r0: {
        uplink: { interface: uplink, address: 'dhcp', hostname: 'vswitch-r0' },
        networks: { net10: { bridge: BR, vlan: 10, address: `${GW10}/24` } },
      },
    },
  };
}

describe('uplink address by DHCP (dnsmasq in the internet namespace)', () => {
  let d: Daemon;
  let inet: Internet;
  let vm1: Vm;
  let stateDir: string;
  let dnsDir: string;
  let dnsmasq: Background | undefined;
  let udpInet: Background | undefined;
  let cap: Capture;
  let pub = '';
  let uplinkMac = '';

  const uplinkView = async (): Promise<any> => (await d.ok(['router', 'show', 'r0'], { json: true })).json[0].uplink;
  const bound = async (): Promise<any> => {
    let u: any;
    await waitFor('the uplink to be bound by DHCP', async () => {
      u = await uplinkView();
      return u.dhcp?.state === 'bound' && u.address !== '';
    }, { timeoutMs: 40_000, intervalMs: 250 });
    return u;
  };

  beforeAll(async () => {
    trackLink(TAP);
    inet = await makeInternet('udinet', { far: [FAR] });
    stateDir = tempDir('udstate');
    dnsDir = tempDir('dnsmasq');
    cap = await tcpdump(inet.ns, inet.ifname, 'arp or udp port 67 or udp port 68');
    d = await startDaemon(config(stateDir, inet.uplink));
    vm1 = await makeVm('ud1', TAP, `${VM1}/24`);
    await nsExec(vm1.ns, `ip route add default via ${GW10}`);
    udpInet = new Background(inet.ns, `/usr/bin/python3 -u ${q(udpTool())} serve 7`);
  });

  afterAll(async () => {
    await cap?.stop(0);
    await udpInet?.stop();
    await dnsmasq?.stop();
    await d?.stop();
    await cleanup();
  });

  it('without a DHCP server: no address, DISCOVERs from 0.0.0.0 with backoff, NAT drops (no public address)', async () => {
    await waitFor('two DISCOVERs', async () => ((await uplinkView()).dhcp?.counters?.discovers ?? 0) >= 2, { timeoutMs: 10_000 });
    const u = await uplinkView();
    expect(u).toMatchObject({ addressSource: 'dhcp', address: '', gateway: '', state: 'up' });
    expect(u.dhcp.state).toBe('selecting');
    expect(u.dhcp.clientId).toMatch(/^01:/);
    uplinkMac = u.mac;
    const before = (await d.ok(['router', 'show', 'r0'], { json: true })).json[0].counters.naptDropped;
    expect(await ping(vm1.ns, INET, { count: 2, timeoutSec: 1 }), 'no NAT without an uplink address').toBe(false);
    expect((await d.ok(['router', 'show', 'r0'], { json: true })).json[0].counters.naptDropped).toBeGreaterThan(before);
    expect(await ping(vm1.ns, GW10, { count: 1 }), 'the inside still works').toBe(true);
    const discovers = cap.current().filter((l) => l.includes('0.0.0.0.68 > 255.255.255.255.67'));
    expect(discovers.length, cap.current().join('\n')).toBeGreaterThanOrEqual(2);
    expect(discovers[0]).toContain(`${uplinkMac} > ff:ff:ff:ff:ff:ff`);
    // No ARP for 0.0.0.0 (no gratuitous ARP without an address).
    expect(cap.current().some((l) => /who-has 0\.0\.0\.0|tell 0\.0\.0\.0/.test(l))).toBe(false);
  });

  it('dnsmasq starts: the uplink is bound to a pool address with gateway from option 3, and announces it', async () => {
    dnsmasq = new Background(inet.ns, [
      'dnsmasq --no-daemon --conf-file=/dev/null --port=0 --log-dhcp --log-facility=-',
      `--interface=${q(inet.ifname)} --bind-interfaces`,
      '--dhcp-range=198.51.100.50,198.51.100.99,255.255.255.0,2m --dhcp-option=3,198.51.100.1',
      `--dhcp-leasefile=${q(join(dnsDir, 'leases'))} --pid-file=${q(join(dnsDir, 'pid'))}`,
    ].join(' '));
    await waitFor('dnsmasq to listen', () => {
      if (dnsmasq!.proc.exitCode !== null) throw new Error(`dnsmasq exited: ${dnsmasq!.err}`);
      return /sockets bound exclusively/.test(dnsmasq!.err);
    }, { timeoutMs: 10_000 });
    const u = await bound();
    pub = u.address.split('/')[0];
    expect(pub).toMatch(POOL);
    expect(u.address).toBe(`${pub}/24`);
    expect(u.gateway).toBe(INET);
    expect(u.dhcp).toMatchObject({ state: 'bound', server: INET, leaseSec: 120, router: INET });
    expect(u.dhcp.renewInSec).toBeGreaterThan(40);
    expect(u.dhcp.renewInSec).toBeLessThanOrEqual(60);
    expect(u.dhcp.counters.acquired).toBe(1);
    expect(d.logsMatching('uplink_address').some((l) => l.obj?.router === 'r0' && l.obj?.address === `${pub}/24` && l.obj?.gateway === INET),
      'logged').toBe(true);

    await waitFor('dnsmasq to record the lease', () => {
      try { return readFileSync(join(dnsDir, 'leases'), 'utf8').includes(pub); } catch { return false; }
    }, { timeoutMs: 5000 });
    const lease = readFileSync(join(dnsDir, 'leases'), 'utf8');
    expect(lease).toMatch(new RegExp(`${uplinkMac} ${esc(pub)} vswitch-r0 01:${uplinkMac}`));
    expect(dnsmasq.err).toMatch(new RegExp(`DHCPACK\\(${inet.ifname}\\) ${esc(pub)} ${uplinkMac} vswitch-r0`));

    await waitFor('the gratuitous ARP', () => cap.current().some((l) => l.includes(`Request who-has ${pub} tell ${pub}`)), { timeoutMs: 5000 });
    const lines = cap.current();
    const garp = lines.findIndex((l) => l.includes(`Request who-has ${pub} tell ${pub}`));
    const ack = lines.findIndex((l) => /> 198\.51\.100\.\d+\.68: BOOTP\/DHCP, Reply/.test(l) && l.includes(`${uplinkMac}`));
    expect(ack, lines.join('\n')).toBeGreaterThanOrEqual(0);
    expect(lines[garp], 'gratuitous ARP from the uplink MAC to broadcast').toContain(`${uplinkMac} > ff:ff:ff:ff:ff:ff`);
    // The uplink answers ARP for its new address.
    const arp = await nsExec(inet.ns, `busybox arping -c 1 -w 3 -I ${q(inet.ifname)} ${pub} || true`);
    expect(arp).toMatch(/Received 1/);
  });

  it('a VM behind the router reaches internet hosts through NAT; they see the DHCP-assigned uplink address', async () => {
    const c = await tcpdump(inet.ns, inet.ifname, 'icmp or udp port 7');
    try {
      expect(await pingUntil(vm1.ns, INET), 'vm1 -> internet host on the uplink segment').toBe(true);
      expect(await pingUntil(vm1.ns, FAR), 'vm1 -> host behind the uplink gateway (option 3)').toBe(true);
      expect(await udpSend(vm1.ns, INET, 7, { sport: 40111, msg: 'via-dhcp-uplink' })).toBe('reply via-dhcp-uplink');
    } finally {
      await c.stop();
    }
    const lines = c.lines.join('\n');
    expect(lines).toMatch(new RegExp(`${esc(pub)} > ${esc(INET)}: ICMP echo request`));
    expect(lines).toMatch(new RegExp(`${esc(pub)} > ${esc(FAR)}: ICMP echo request`));
    expect(lines).not.toContain('10.61.');
    expect(udpInet!.out).toContain(`peer ${pub}:40111 via-dhcp-uplink`);
  });

  it('after a daemon restart the uplink asks for the same address (INIT-REBOOT, no DISCOVER) and gets it', async () => {
    const saved = JSON.parse(readFileSync(join(stateDir, 'uplink-r0.json'), 'utf8'));
    expect(saved).toMatchObject({ version: 1, ip: pub, mac: uplinkMac, serverId: INET, router: INET, leaseSec: 120 });

    const configText = readFileSync(d.configFile, 'utf8');
    const stopped = await d.stop();
    expect(stopped.code, `daemon exit (signal ${stopped.signal})`).toBe(0);
    const logFrom = dnsmasq!.err.length;
    const capFrom = cap.current().length;
    // The persistent TAP goes back to the root namespace, where the new daemon reopens it.
    await sh(`ip -n ${q(vm1.ns)} link set ${q(TAP)} netns 1`);
    d = await startDaemon(null, { configText });
    await sh(`ip link set ${q(TAP)} netns ${q(vm1.ns)}`);
    await nsExec(vm1.ns, `ip link set ${q(TAP)} up; ip addr replace ${VM1}/24 dev ${q(TAP)}; ip route replace default via ${GW10}`);

    const u = await bound();
    expect(u.address, 'the same address after the restart').toBe(`${pub}/24`);
    expect(u.dhcp.counters).toMatchObject({ discovers: 0, acquired: 1 });
    await waitFor('dnsmasq to log the ACK', () => dnsmasq!.err.slice(logFrom).includes('DHCPACK'), { timeoutMs: 5000 });
    const log = dnsmasq!.err.slice(logFrom);
    expect(log).toMatch(new RegExp(`DHCPREQUEST\\(${inet.ifname}\\) ${esc(pub)} ${uplinkMac}`));
    expect(log).toMatch(new RegExp(`DHCPACK\\(${inet.ifname}\\) ${esc(pub)} ${uplinkMac}`));
    expect(log, 'INIT-REBOOT: no DISCOVER').not.toContain('DHCPDISCOVER');
    const wire = cap.current().slice(capFrom);
    expect(wire.some((l) => l.includes('0.0.0.0.68 > 255.255.255.255.67')), 'REQUEST broadcast from 0.0.0.0').toBe(true);
    expect(wire.some((l) => l.includes(`Request who-has ${pub} tell ${pub}`)), 'announced again').toBe(true);

    expect(await pingUntil(vm1.ns, INET), 'vm1 -> internet after the restart').toBe(true);
    expect(await udpSend(vm1.ns, INET, 7, { sport: 40112, msg: 'after-restart' })).toBe('reply after-restart');
    expect(udpInet!.out).toContain(`peer ${pub}:40112 after-restart`);
  });

  it('at T1 the lease is renewed by a unicast REQUEST to the server; address and NAPT sessions kept', async () => {
    const udpSession = async (): Promise<any> => (await d.ok(['nat', 'sessions'], { json: true })).json
      .find((r: any) => r.proto === 'udp' && r.inside === `${VM1}:40113`);
    expect(await udpSend(vm1.ns, INET, 7, { sport: 40113, msg: 'before-renew' })).toBe('reply before-renew');
    const before = await udpSession();
    expect(before, 'a UDP session (5 min timeout) to watch across the renewal').toBeDefined();
    const u0 = await uplinkView();
    const capFrom = cap.current().length;
    await sleep(Math.max(0, (u0.dhcp.renewInSec - 1) * 1000));
    await waitFor('a renewal', async () => ((await uplinkView()).dhcp.counters.renewed ?? 0) >= 1, { timeoutMs: 15_000, intervalMs: 250 });
    const u = await uplinkView();
    expect(u.address).toBe(`${pub}/24`);
    expect(u.dhcp.state).toBe('bound');
    expect(u.dhcp.renewInSec).toBeGreaterThan(50);
    const wire = cap.current().slice(capFrom);
    expect(wire.some((l) => l.includes(`${pub}.68 > ${INET}.67: BOOTP/DHCP, Request`)), wire.join('\n')).toBe(true);
    expect(await udpSession(), 'a renewal keeping the address flushes no session').toMatchObject({ publicPort: before.publicPort });
    expect(await ping(vm1.ns, INET, { count: 1 })).toBe(true);
  }, 90_000);
});
