/*
 * NAT mode through the real daemon. Router r0 has two networks on bridge br0
 * (net10 = VLAN 10, 10.60.10.0/24; net20 = VLAN 20, 10.60.20.0/24) and an uplink
 * on a veth whose other end is in an "internet" namespace (198.51.100.1/24, and
 * 203.0.113.80 on its loopback as a host behind the uplink gateway). The router
 * owns 198.51.100.2 on the uplink; the root-namespace veth end has no address.
 *
 * VMs (namespaces on TAP ports, static addresses, default route via the gateway):
 *   vm1 10.60.10.11 (VLAN 10, persistent TAP): busybox httpd :80, UDP echo :53
 *   vm2 10.60.10.12 (VLAN 10, persistent TAP)
 *   vm3 10.60.20.13 (VLAN 20, non-persistent TAP)
 * Internet: python http.server :8000, UDP echo :7.
 *
 * Shown: ping / HTTP / UDP from a VM to the internet with the uplink address as
 * the source; the session table; config and runtime port forwards (show, refused
 * delete of a config one, delete of a runtime one); hairpin from both networks;
 * isolation between networks and `interconnect` applied by reload; ICMP errors
 * (port unreachable, time exceeded) back to the VM; a runtime forward surviving a
 * daemon restart; SIGTERM keeps persistent TAPs and removes the others and the socket.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, startDaemon, toYaml } from './helpers/daemon.js';
import { makeInternet, udpSend, udpTool, type Internet } from './helpers/inet.js';
import { cleanup, ifname, nsExec, nsExecR, q, sh, tempDir, trackLink, waitFor } from './helpers/run.js';
import {
  Background, linkExists, makeVm, ping, pingUntil, tcpdump, type Vm,
} from './helpers/vm.js';

const BR = 'br0';
const T = { vm1: ifname('n1'), vm2: ifname('n2'), vm3: ifname('n3') };
const PUB = '198.51.100.2';
const INET = '198.51.100.1';
const FAR = '203.0.113.80';
const GW10 = '10.60.10.1';
const GW20 = '10.60.20.1';
const VM1 = '10.60.10.11';
const VM2 = '10.60.10.12';
const VM3 = '10.60.20.13';
/** Source ports the VM uses where the test checks the mapping (port preservation). */
const SPORT_TCP = 40001;
const SPORT_UDP = 40002;
const SPORT_CLOSED = 40003;

function config(stateDir: string, uplink: string, interconnect: boolean): object {
  return {
    stateDir,
    bridges: {
      [BR]: {
        ports: {
          [T.vm1]: { type: 'tap', persistent: true, vlan: { mode: 'access', vid: 10 } },
          [T.vm2]: { type: 'tap', persistent: true, vlan: { mode: 'access', vid: 10 } },
          [T.vm3]: { type: 'tap', vlan: { mode: 'access', vid: 20 } },
        },
      },
    },
    routers: {
      r0: {
        uplink: { interface: uplink, address: `${PUB}/24`, gateway: INET },
        forwards: [{ proto: 'tcp', port: 8080, to: `${VM1}:80` }],
        ...(interconnect ? { interconnect: [['net10', 'net20']] } : {}),
        networks: {
          net10: { bridge: BR, vlan: 10, address: `${GW10}/24` },
          net20: { bridge: BR, vlan: 20, address: `${GW20}/24` },
        },
      },
    },
  };
}

async function waitListening(ns: string, proto: 'tcp' | 'udp', port: number): Promise<void> {
  await waitFor(`${proto} port ${port} listening in ${ns}`, async () => {
    const out = await nsExec(ns, proto === 'tcp' ? 'ss -Hltn' : 'ss -Hlun');
    return new RegExp(`:${port}\\s`).test(out);
  }, { timeoutMs: 10_000, intervalMs: 100 });
}

/** Addresses and default route of a VM whose TAP (just moved in) has none. */
async function plumbVm(vm: Vm, gw: string): Promise<void> {
  await nsExec(vm.ns, `ip link set ${q(vm.ifname)} up; ip addr replace ${q(vm.cidr)} dev ${q(vm.ifname)}; ip route replace default via ${gw}`);
}

async function wget(ns: string, url: string, timeoutSec = 5): Promise<{ ok: boolean; body: string; err: string }> {
  // (busybox 1.35's wget -T segfaults, hence timeout(1).)
  const r = await nsExecR(ns, `timeout ${timeoutSec} busybox wget -q -O - ${q(url)}`, { timeoutMs: (timeoutSec + 5) * 1000 });
  return { ok: r.code === 0, body: r.stdout, err: r.stderr };
}

describe('NAT mode: NAPT, port forwards, hairpin, isolation, ICMP errors', () => {
  let d: Daemon;
  let inet: Internet;
  let vm1: Vm, vm2: Vm, vm3: Vm;
  let stateDir: string;
  const servers: Background[] = [];
  let httpInet: Background, udpInet: Background, httpVm1: Background, udpVm1: Background;
  const TOKEN_INET = `inet-${Date.now()}`;
  const TOKEN_VM1 = `vm1-${Date.now()}`;

  const bg = (ns: string, cmd: string): Background => {
    const b = new Background(ns, cmd);
    servers.push(b);
    return b;
  };

  const routerView = async (): Promise<any> => (await d.ok(['router', 'show', 'r0'], { json: true })).json[0];
  const sessions = async (): Promise<any[]> => (await d.ok(['nat', 'sessions'], { json: true })).json;
  const forwards = async (): Promise<any[]> => (await d.ok(['nat', 'forward', 'show'], { json: true })).json;

  beforeAll(async () => {
    // Persistent TAPs outlive the daemon: registered so that cleanup deletes them.
    Object.values(T).forEach(trackLink);
    inet = await makeInternet('inet', { far: [FAR] });
    stateDir = tempDir('state');
    d = await startDaemon(config(stateDir, inet.uplink, false));
    vm1 = await makeVm('n1', T.vm1, `${VM1}/24`);
    vm2 = await makeVm('n2', T.vm2, `${VM2}/24`);
    vm3 = await makeVm('n3', T.vm3, `${VM3}/24`);
    await nsExec(vm1.ns, `ip route add default via ${GW10}`);
    await nsExec(vm2.ns, `ip route add default via ${GW10}`);
    await nsExec(vm3.ns, `ip route add default via ${GW20}`);

    const www = tempDir('www');
    writeFileSync(join(www, 'hello.txt'), `${TOKEN_INET}\n`);
    const www1 = tempDir('www1');
    writeFileSync(join(www1, 'vm1.txt'), `${TOKEN_VM1}\n`);
    httpInet = bg(inet.ns, `/usr/bin/python3 -u -m http.server 8000 --bind 0.0.0.0 --directory ${q(www)}`);
    udpInet = bg(inet.ns, `/usr/bin/python3 -u ${q(udpTool())} serve 7`);
    httpVm1 = bg(vm1.ns, `busybox httpd -f -vv -p 80 -h ${q(www1)}`);
    udpVm1 = bg(vm1.ns, `/usr/bin/python3 -u ${q(udpTool())} serve 53`);
    await waitListening(inet.ns, 'tcp', 8000);
    await waitListening(inet.ns, 'udp', 7);
    await waitListening(vm1.ns, 'tcp', 80);
    await waitListening(vm1.ns, 'udp', 53);
    await waitFor('the uplink to be up', async () => String((await routerView()).uplink?.state) === 'up');
  });

  afterAll(async () => {
    for (const b of servers) await b.stop();
    await d?.stop();
    await cleanup();
  });

  it('a VM pings the gateway and internet hosts, reaches HTTP and UDP servers there, seen as the uplink address', async () => {
    const cap = await tcpdump(inet.ns, inet.ifname, 'ip');
    try {
      expect(await pingUntil(vm1.ns, GW10), 'vm1 -> its gateway').toBe(true);
      expect(await pingUntil(vm1.ns, INET), 'vm1 -> internet host on the uplink segment').toBe(true);
      expect(await pingUntil(vm1.ns, FAR), 'vm1 -> host behind the uplink gateway').toBe(true);

      const w = await wget(vm1.ns, `http://${INET}:8000/hello.txt`);
      expect(w.ok, `busybox wget from vm1: ${w.err}`).toBe(true);
      expect(w.body.trim()).toBe(TOKEN_INET);
      // Same over TCP with a known source port, for the session table test.
      const s = await nsExec(vm1.ns,
        `printf 'GET /hello.txt HTTP/1.0\\r\\n\\r\\n' | socat -t 3 - TCP4:${INET}:8000,sourceport=${SPORT_TCP},reuseaddr`);
      expect(s).toContain(TOKEN_INET);

      expect(await udpSend(vm1.ns, INET, 7, { sport: SPORT_UDP, msg: 'udp-echo-1' })).toBe('reply udp-echo-1');
    } finally {
      await cap.stop();
    }
    // The servers saw the router's uplink address, never the VM's.
    await waitFor('the HTTP server log', () => /GET \/hello\.txt/.test(httpInet.err));
    expect(httpInet.err).toMatch(new RegExp(`^${PUB.replace(/\./g, '\\.')} - - .*GET /hello\\.txt`, 'm'));
    expect(httpInet.err).not.toContain('10.60.');
    expect(udpInet.out).toContain(`peer ${PUB}:${SPORT_UDP} udp-echo-1`);
    expect(udpInet.out).not.toContain('10.60.');
    // On the wire in the internet namespace: only the public address.
    const lines = cap.lines.join('\n');
    expect(lines).toContain(`${PUB}.${SPORT_TCP} > ${INET}.8000:`);
    expect(lines).toContain(`${PUB}.${SPORT_UDP} > ${INET}.7:`);
    expect(lines).toMatch(new RegExp(`${PUB.replace(/\./g, '\\.')} > ${INET.replace(/\./g, '\\.')}: ICMP echo request`));
    expect(lines).toMatch(new RegExp(`${PUB.replace(/\./g, '\\.')} > ${FAR.replace(/\./g, '\\.')}: ICMP echo request`));
    expect(lines, 'no inside address on the uplink').not.toContain('10.60.');
  });

  it('nat sessions --json lists the TCP, UDP and ICMP sessions with the inside endpoint and public port', async () => {
    const rows = await sessions();
    const tcp = rows.find((r) => r.proto === 'tcp' && r.inside === `${VM1}:${SPORT_TCP}`);
    expect(tcp, `tcp session of ${VM1}:${SPORT_TCP} in ${JSON.stringify(rows)}`).toBeDefined();
    expect(tcp.remote).toBe(`${INET}:8000`);
    expect(tcp.publicPort, 'port preserved (free)').toBe(SPORT_TCP);
    expect(tcp.router).toBe('r0');
    const udp = rows.find((r) => r.proto === 'udp' && r.inside === `${VM1}:${SPORT_UDP}`);
    expect(udp, `udp session of ${VM1}:${SPORT_UDP} in ${JSON.stringify(rows)}`).toBeDefined();
    expect(udp.remote).toBe(`${INET}:7`);
    expect(udp.publicPort, 'port preserved (free)').toBe(SPORT_UDP);
    const icmp = rows.filter((r) => r.proto === 'icmp' && String(r.inside).startsWith(`${VM1}:`));
    expect(icmp.map((r) => r.remote).sort(), JSON.stringify(rows)).toEqual(expect.arrayContaining([INET, FAR]));
    for (const r of icmp) expect(typeof r.publicPort).toBe('number');
    // The wget's connection (ephemeral source port) is there too.
    expect(rows.filter((r) => r.proto === 'tcp' && String(r.inside).startsWith(`${VM1}:`) && r.remote === `${INET}:8000`).length)
      .toBeGreaterThanOrEqual(2);
    // Echoes to the gateway itself are answered by the router: no session for them.
    expect(rows.some((r) => r.remote === GW10 || String(r.remote).startsWith(`${GW10}:`))).toBe(false);
  });

  it('ICMP errors come back translated: port unreachable (ECONNREFUSED, embedded header rewritten) and time exceeded', async () => {
    const cap = await tcpdump(vm1.ns, vm1.ifname, '-v icmp');
    let res: string;
    try {
      res = await udpSend(vm1.ns, INET, 9, { sport: SPORT_CLOSED, msg: 'closed' });
    } finally {
      await cap.stop();
    }
    expect(res, 'connected UDP socket gets ECONNREFUSED from the translated port unreachable').toBe('refused');
    const lines = cap.lines.join('\n');
    expect(lines).toContain(`${INET} > ${VM1}: ICMP ${INET} udp port 9 unreachable`);
    // The quoted packet is the VM's own, as it sent it (tcpdump -v prints it under the error).
    expect(lines).toContain(`${VM1}.${SPORT_CLOSED} > ${INET}.9: UDP`);
    expect(lines).not.toContain(`${PUB}.`);

    // traceroute: hop 1 is the gateway (time exceeded, from the router), hop 2 the
    // internet host itself (port unreachable for the probe, translated back).
    const before = (await routerView()).counters.ttlExceeded;
    const tr = await nsExecR(vm1.ns, `busybox traceroute -n -m 3 -q 1 -w 2 ${INET}`, { timeoutMs: 20_000 });
    expect(tr.code, tr.stderr).toBe(0);
    expect(tr.stdout).toMatch(new RegExp(`^\\s*1\\s+${GW10.replace(/\./g, '\\.')}\\s`, 'm'));
    expect(tr.stdout).toMatch(new RegExp(`^\\s*2\\s+${INET.replace(/\./g, '\\.')}\\s`, 'm'));
    expect((await routerView()).counters.ttlExceeded).toBeGreaterThan(before);
  });

  it('port forwards: from the config (tcp 8080) and at runtime (udp 5353); show, refused del of a config one, del of a runtime one', async () => {
    const w = await wget(inet.ns, `http://${PUB}:8080/vm1.txt`);
    expect(w.ok, `wget ${PUB}:8080 from the internet: ${w.err}`).toBe(true);
    expect(w.body.trim()).toBe(TOKEN_VM1);
    // A forward does not hide the client: vm1 sees the internet host's address.
    await waitFor('vm1 httpd log of the forwarded request', () => httpVm1.err.includes(INET));

    await d.ok(['nat', 'forward', 'add', 'udp', '5353', `${VM1}:53`]);
    expect(await udpSend(inet.ns, PUB, 5353, { msg: 'fwd-udp' })).toBe('reply fwd-udp');
    expect(udpVm1.out).toContain(`peer ${INET}:`);

    const rows = await forwards();
    expect(rows).toEqual(expect.arrayContaining([
      expect.objectContaining({ router: 'r0', proto: 'tcp', public: '8080', inside: `${VM1}:80`, source: 'config' }),
      expect.objectContaining({ router: 'r0', proto: 'udp', public: '5353', inside: `${VM1}:53`, source: 'runtime' }),
    ]));
    expect(rows.length, JSON.stringify(rows)).toBe(2);
    const text = await d.ok(['nat', 'forward', 'show']);
    expect(text.stdout).toMatch(/tcp\s+8080\s+10\.60\.10\.11:80\s+config/);
    expect(text.stdout).toMatch(/udp\s+5353\s+10\.60\.10\.11:53\s+runtime/);

    const refused = await d.cli(['nat', 'forward', 'del', 'tcp', '8080']);
    expect(refused.code, 'deleting a config forward is refused').toBe(1);
    expect(refused.stderr.trim().split('\n').length, `one-line error: ${refused.stderr}`).toBe(1);
    expect(refused.stderr).toMatch(/config/);
    expect((await wget(inet.ns, `http://${PUB}:8080/vm1.txt`)).body.trim(), 'config forward still works').toBe(TOKEN_VM1);

    await d.ok(['nat', 'forward', 'del', 'udp', '5353']);
    const after = await forwards();
    expect(after.map((f) => `${f.proto}/${f.public}/${f.source}`)).toEqual(['tcp/8080/config']);
    expect(await udpSend(inet.ns, PUB, 5353, { msg: 'fwd-udp-gone' }), 'deleted forward no longer forwards').toBe('timeout');
    expect(udpVm1.out).not.toContain('fwd-udp-gone');
    const again = await d.cli(['nat', 'forward', 'del', 'udp', '5353']);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/no udp forward/);
  });

  it('hairpin: vm2 (same network) and vm3 (VLAN 20 network) reach vm1\'s forwarded service at the public address', async () => {
    const before = (await routerView()).counters.hairpinned;
    const w2 = await wget(vm2.ns, `http://${PUB}:8080/vm1.txt`);
    expect(w2.ok, `wget from vm2: ${w2.err}`).toBe(true);
    expect(w2.body.trim()).toBe(TOKEN_VM1);
    const w3 = await wget(vm3.ns, `http://${PUB}:8080/vm1.txt`);
    expect(w3.ok, `wget from vm3: ${w3.err}`).toBe(true);
    expect(w3.body.trim()).toBe(TOKEN_VM1);
    expect((await routerView()).counters.hairpinned).toBeGreaterThan(before);
    // Both ends see public endpoints: vm1's server sees the public address, not 10.60.x.
    expect(httpVm1.err).toContain(PUB);
    expect(httpVm1.err).not.toContain(VM2);
    expect(httpVm1.err).not.toContain(VM3);
  });

  it('networks are isolated (admin prohibited) until interconnect is configured and reloaded', async () => {
    const before = (await routerView()).counters.prohibited;
    const cap = await tcpdump(vm3.ns, vm3.ifname, 'icmp');
    let reached: boolean;
    try {
      reached = await ping(vm3.ns, VM1, { count: 2, timeoutSec: 2 });
    } finally {
      await cap.stop();
    }
    expect(reached, 'vm3 (net20) -> vm1 (net10) without interconnect').toBe(false);
    expect(cap.lines.join('\n')).toContain(`${GW20} > ${VM3}: ICMP host ${VM1} unreachable - admin prohibited`);
    expect((await routerView()).counters.prohibited).toBeGreaterThan(before);
    expect(await ping(vm1.ns, VM3, { count: 1, timeoutSec: 2 }), 'vm1 -> vm3 without interconnect').toBe(false);

    writeFileSync(d.configFile, toYaml({ ...config(stateDir, inet.uplink, true), metrics: { listen: 'off' } }));
    const r = await d.ok(['reload']);
    expect(r.stdout).toContain('r0');
    expect(await pingUntil(vm3.ns, VM1), 'vm3 -> vm1 with interconnect').toBe(true);
    expect(await ping(vm1.ns, VM3, { count: 2 }), 'vm1 -> vm3 with interconnect').toBe(true);
    expect((await routerView()).counters.routedBetween).toBeGreaterThan(0);
    // The rebuilt router still does NAPT and the config forward.
    expect(await pingUntil(vm1.ns, INET), 'vm1 -> internet after the reload').toBe(true);
    expect((await wget(inet.ns, `http://${PUB}:8080/vm1.txt`)).body.trim()).toBe(TOKEN_VM1);
  });

  it('a runtime forward survives a daemon restart (persistent TAPs, same config and state dir); SIGTERM keeps persistent TAPs only', async () => {
    // (vm1:80 already has public port 8080: one public port per inside port, so UDP to vm1:53.)
    await d.ok(['nat', 'forward', 'add', 'udp', '5300', `${VM1}:53`]);
    expect(await udpSend(inet.ns, PUB, 5300, { msg: 'fwd-5300' }), 'runtime udp forward').toBe('reply fwd-5300');
    expect(existsSync(join(stateDir, 'forwards-r0.json')), 'runtime forwards persisted in the state dir').toBe(true);

    const configText = readFileSync(d.configFile, 'utf8');
    const stopped = await d.stop();
    expect(stopped.killed, 'needed SIGKILL').toBe(false);
    expect(stopped.code, `exit code (signal ${stopped.signal})`).toBe(0);
    expect(existsSync(d.socket), 'socket unlinked').toBe(false);
    // Non-persistent vm3 TAP is gone (even from inside its namespace); persistent ones stay.
    await waitFor('vm3 TAP removed', async () => !(await linkExists(T.vm3, vm3.ns)) && !(await linkExists(T.vm3)), { timeoutMs: 5000 });
    expect(await linkExists(T.vm1, vm1.ns), 'persistent vm1 TAP kept').toBe(true);
    expect(await linkExists(T.vm2, vm2.ns), 'persistent vm2 TAP kept').toBe(true);

    // A TAP is reopened by name in the daemon's (root) namespace, where a
    // hypervisor's TAP lives: hand vm1's back there for the restart, then re-plumb it.
    // (vm2's stays in its namespace, so the new daemon makes a second, fresh vm2 TAP
    // in the root namespace; cleanup deletes both by name.)
    await sh(`ip -n ${q(vm1.ns)} link set ${q(T.vm1)} netns 1`);
    d = await startDaemon(null, { configText });
    await sh(`ip link set ${q(T.vm1)} netns ${q(vm1.ns)}`);
    await plumbVm(vm1, GW10);
    await waitFor('the uplink to be up after the restart', async () => String((await routerView()).uplink?.state) === 'up');

    const rows = await forwards();
    expect(rows).toEqual(expect.arrayContaining([
      expect.objectContaining({ proto: 'tcp', public: '8080', inside: `${VM1}:80`, source: 'config' }),
      expect.objectContaining({ proto: 'udp', public: '5300', inside: `${VM1}:53`, source: 'runtime' }),
    ]));
    expect(rows.length, JSON.stringify(rows)).toBe(2);
    await waitFor('the runtime forward to answer after the restart',
      async () => (await udpSend(inet.ns, PUB, 5300, { msg: 'fwd-5300-again', timeoutSec: 1 })) === 'reply fwd-5300-again',
      { timeoutMs: 10_000, intervalMs: 300 });
    expect((await wget(inet.ns, `http://${PUB}:8080/vm1.txt`)).body.trim()).toBe(TOKEN_VM1);
    expect(await pingUntil(vm1.ns, INET), 'vm1 -> internet after the restart').toBe(true);

    const r2 = await d.stop();
    expect(r2.code).toBe(0);
    expect(existsSync(d.socket)).toBe(false);
    expect(await linkExists(T.vm1, vm1.ns), 'persistent vm1 TAP kept').toBe(true);
    await waitFor('vm3 TAP (recreated in the root namespace) removed', async () => !(await linkExists(T.vm3)), { timeoutMs: 5000 });
  });
});
