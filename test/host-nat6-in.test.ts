/*
 * Into an IPv6 VM through the host uplink (issue 14's leftovers), through the
 * real daemon: port forwards to its IPv6 address, and datagrams larger than its
 * MTU as IPv6 fragments. The daemon runs in its own namespace H.
 *
 *   VM a (netns, TAP, SLAAC only: no IPv4) --br0 VLAN 10-- router r0 net10
 *        10.X.10.1/24, ipv6 fd00:X:10::1/64; uplink kind host, listen "::"
 *   H: 2001:db8:X:52::1/64 and 198.51.100.1/24 on a veth to S (the "internet")
 *   S: 2001:db8:X:52::2/64 and 198.51.100.2/24
 *
 * Shown: `nat forward add` with an [IPv6]:port target; `curl -6` from S to H's
 * address reaches an HTTP server in the VM (which had not sent from its global
 * address before: the gateway finds it by Neighbor Discovery); the VM sees the
 * client's own IPv6 address (TCP, data intact); a UDP echo in the VM answers S
 * through a UDP forward; an IPv4 client of the IPv6 target is refused and
 * counted (`forward6Refused`); targets outside the prefixes are refused with the
 * reason. Fragments: a 4000-byte UDP answer from S reaches the VM (1500 MTU) whole
 * (the host NAT fragments it towards the VM); a 3000-byte datagram from the VM
 * (fragmented by its kernel) reaches S whole (the host NAT reassembles), and
 * overlapping fragments (scapy, RFC 5722) reach nothing. `uplink.rcvbuf`: `router show`
 * prints it and the host socket of a VM's IPv6 TCP connection has that SO_RCVBUF
 * (the kernel's doubled value, `ss -tm` in H). Short: no bulk data.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, startDaemon } from './helpers/daemon.js';
import { addrs6, slaacAddr, type V6Vm } from './helpers/ipv6.js';
import { PREFIX, addNamespace, cleanup, freePort, ifname, nsExec, nsExecR, nsname, q, sh, tempDir, trackLink, waitFor } from './helpers/run.js';
import { listening, tool } from './helpers/tcp-tool.js';
import { Background, quietNamespace, waitLink } from './helpers/vm.js';
import { PYTHON } from './helpers/scapy.js';

const TAP = ifname('f6a');
const X = 20 + (parseInt(PREFIX.slice(1), 16) % 200);
const H_IP = `2001:db8:${X}:52::1`;
const S_IP = `2001:db8:${X}:52::2`;
const H_IP4 = '198.51.100.1';
const S_IP4 = '198.51.100.2';
const B10 = `fd00:${X}:10`;
const RCVBUF = 262144;

let H: string;
let S: string;
let d: Daemon;
let vm: V6Vm;
let vmIp = '';
let dir: string;
const bg: Background[] = [];
const server = (ns: string, cmd: string): Background => {
  const b = new Background(ns, cmd);
  bg.push(b);
  return b;
};

beforeAll(async () => {
  dir = tempDir('fwd6');
  H = nsname('f6h');
  S = nsname('f6s');
  await addNamespace(H);
  await quietNamespace(H);
  await addNamespace(S);
  await quietNamespace(S);
  const [hS, sH] = [ifname('f6S'), ifname('s6F')];
  trackLink(hS);
  trackLink(sH);
  const v6on = 'sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0';
  await sh(`ip -n ${q(H)} link add ${q(hS)} type veth peer name ${q(sH)} netns ${q(S)}`);
  await nsExec(H, `${v6on} && ip link set ${q(hS)} up && ip -6 addr add ${H_IP}/64 dev ${q(hS)} nodad && ip addr add ${H_IP4}/24 dev ${q(hS)}`);
  await nsExec(S, `${v6on} && ip link set ${q(sH)} up && ip -6 addr add ${S_IP}/64 dev ${q(sH)} nodad && ip addr add ${S_IP4}/24 dev ${q(sH)}`);
  d = await startDaemon({
    stateDir: join(dir, 'state'),
    bridges: { br0: { ports: { [TAP]: { type: 'tap', vlan: { mode: 'access', vid: 10 } } } } },
    routers: {
      r0: {
        uplink: { kind: 'host', listen: '::', rcvbuf: RCVBUF },
        networks: { net10: { bridge: 'br0', vlan: 10, address: `10.${X}.10.1/24`, ipv6: { address: `${B10}::1/64`, ra: { interval: 10 } } } },
      },
    },
  }, { netns: H });
  await waitLink(TAP, H);
  const ns = nsname('f6a');
  await addNamespace(ns);
  await sh(`ip -n ${q(H)} link set ${q(TAP)} netns ${q(ns)}`);
  await nsExec(ns, [
    v6on,
    `sysctl -qw net.ipv6.conf.${TAP}.disable_ipv6=0 net.ipv6.conf.${TAP}.accept_ra=2 net.ipv6.conf.${TAP}.autoconf=1`,
    `sysctl -qw net.ipv6.conf.${TAP}.use_tempaddr=0 net.ipv6.conf.${TAP}.accept_dad=0 net.ipv6.conf.${TAP}.addr_gen_mode=0`,
    `ip link set ${q(TAP)} up`,
  ].join(' && '));
  const mac = (await nsExec(ns, `cat /sys/class/net/${TAP}/address`)).trim().toLowerCase();
  vm = { name: 'f6a', ns, ifname: TAP, mac };
  vmIp = slaacAddr(B10, mac);
  await waitFor('the SLAAC address and default route', async () => (await addrs6(vm)).some((a) => a.local === vmIp)
    && /via fe80::/.test(await nsExec(vm.ns, 'ip -6 route show default')), { timeoutMs: 30_000 });
}, 90_000);

afterAll(async () => {
  for (const b of bg) await b.stop();
  await d?.stop();
  await cleanup();
}, 60_000);

async function listeningForwards(n: number): Promise<void> {
  await waitFor(`${n} forwards listening`, async () => {
    const rows = (await d.ok(['nat', 'forward', 'show', '--json'], { json: true })).json as any[];
    return rows.filter((r) => r.state === 'listening').length === n;
  }, { timeoutMs: 5000 });
}

describe('port forwards to a VM\'s IPv6 address (host uplink)', () => {
  it('curl -6 from the internet reaches an HTTP server in the VM; the VM sees the client\'s address', async () => {
    const [pHttp, pTcp] = [await freePort(), await freePort()];
    writeFileSync(join(dir, 'index.html'), 'hello from the IPv6 VM\n');
    const http = server(vm.ns, `python3 -m http.server --bind :: --directory ${q(dir)} 8080`);
    await waitFor('the VM\'s HTTP server', async () => (await nsExec(vm.ns, `ss -Hltn 'sport = :8080'`)).trim() !== '', { timeoutMs: 10_000 });
    await d.ok(['nat', 'forward', 'add', 'tcp', String(pHttp), `[${vmIp}]:8080`]);
    const sink = server(vm.ns, tool('serve6 9090 sink'));
    await listening(sink, 'sink in the VM');
    await d.ok(['nat', 'forward', 'add', 'tcp', String(pTcp), `[${vmIp}]:9090`]);
    await listeningForwards(2);
    const rows = (await d.ok(['nat', 'forward', 'show', '--json'], { json: true })).json as any[];
    expect(rows.find((r) => r.public === String(pHttp))).toMatchObject({ inside: `[${vmIp}]:8080`, listen: `[::]:${pHttp}` });
    const curl = await nsExecR(S, `curl -6 -sS --max-time 10 http://[${H_IP}]:${pHttp}/index.html`, { timeoutMs: 15_000 });
    expect(curl.stdout + curl.stderr).toBe('hello from the IPv6 VM\n');
    expect(http.err, 'the VM logged the client\'s own address').toContain(S_IP);
    writeFileSync(join(dir, 'up.bin'), 'u'.repeat(100_000));
    expect((await nsExec(S, tool(`put ${H_IP} ${pTcp} ${q(join(dir, 'up.bin'))}`), { timeoutMs: 20_000 })).trim()).toMatch(/^got 100000 /);
    expect(sink.out).toContain(`peer ${S_IP}:`);
  }, 60_000);

  it('a UDP forward to the VM\'s IPv6 address answers the internet; IPv4 clients of an IPv6 target are refused and counted', async () => {
    const pUdp = await freePort();
    server(vm.ns, 'socat UDP6-LISTEN:7070,fork EXEC:cat');
    await waitFor('the VM\'s UDP echo', async () => (await nsExec(vm.ns, `ss -Hlun 'sport = :7070'`)).trim() !== '', { timeoutMs: 10_000 });
    await d.ok(['nat', 'forward', 'add', 'udp', String(pUdp), `[${vmIp}]:7070`]);
    await listeningForwards(3);
    expect((await nsExec(S, `echo fwd6-udp | socat -t 3 - UDP6:[${H_IP}]:${pUdp}`, { timeoutMs: 15_000 })).trim()).toBe('fwd6-udp');
    const tcpPort = (await d.ok(['nat', 'forward', 'show', '--json'], { json: true })).json.find((r: any) => r.proto === 'tcp').public;
    const v4 = await nsExecR(S, `curl -4 -sS --max-time 5 http://${H_IP4}:${tcpPort}/index.html`, { timeoutMs: 10_000 });
    expect(v4.code, 'an IPv4 client gets no answer from an IPv6 target').not.toBe(0);
    await nsExecR(S, `echo v4 | socat -t 1 - UDP4:${H_IP4}:${pUdp}`, { timeoutMs: 10_000 });
    await waitFor('both refusals counted', async () => {
      const r = (await d.ok(['router', 'show', 'r0'], { json: true })).json as any;
      return ((Array.isArray(r) ? r[0] : r).hostNat.dropped.forward6Refused ?? 0) >= 2;
    }, { timeoutMs: 5000 });
  }, 60_000);

  it('refuses a target outside the router\'s IPv6 prefixes, saying why', async () => {
    const r = await d.cli(['nat', 'forward', 'add', 'tcp', String(await freePort()), `[2001:db8:${X}:99::5]:80`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/not inside any IPv6 prefix/);
  });
});

describe('IPv6 fragments towards a VM (host NAT)', () => {
  // ICMPv6 echo replies are fragmented the same way (host/ipv6.test.ts).
  it('a 4000-byte UDP answer reaches the VM over its 1500-byte link', async () => {
    const port = await freePort();
    const py = (code: string): string => `python3 -c ${q(code)}`;
    const srv = server(S, py(`import socket\ns = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\ns.bind(('::', ${port}))\nprint('listening', flush=True)\n`
      + `while True:\n    d, a = s.recvfrom(100)\n    s.sendto(bytes(range(250)) * 16, a)\n`));
    await listening(srv, 'the UDP server on S');
    const got = await nsExecR(vm.ns, py(`import socket, hashlib\ns = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\ns.settimeout(5)\n`
      + `s.sendto(b'big?', ('${S_IP}', ${port}))\nd = s.recv(65535)\nprint(len(d), d == bytes(range(250)) * 16)\n`), { timeoutMs: 15_000 });
    expect(got.stdout.trim(), got.stderr).toBe('4000 True');
    const r = (await d.ok(['router', 'show', 'r0'], { json: true })).json as any;
    const host = (Array.isArray(r) ? r[0] : r).hostNat;
    expect(host.udp.fragmented).toBeGreaterThanOrEqual(1);
    expect(host.udp.tooBig).toBe(0);
  }, 60_000);
});

describe('IPv6 fragments from a VM (host NAT reassembly)', () => {
  it('a 3000-byte UDP datagram the VM\'s kernel fragments reaches the internet whole; overlapping fragments (RFC 5722) reach nothing, counted', async () => {
    const port = await freePort();
    const py = (code: string): string => `python3 -c ${q(code)}`;
    const srv = server(S, py(`import socket\ns = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\ns.bind(('::', ${port}))\nprint('listening', flush=True)\n`
      + `while True:\n    d, a = s.recvfrom(65535)\n    print('got', len(d), d == bytes(range(250)) * 12 if len(d) == 3000 else d[:8].hex(), flush=True)\n`));
    await listening(srv, 'the UDP server on S');
    const show = async (): Promise<any> => {
      const r = (await d.ok(['router', 'show', 'r0'], { json: true })).json as any;
      return (Array.isArray(r) ? r[0] : r).hostNat;
    };
    const before = (await show()).reassembly6;
    await nsExec(vm.ns, py(`import socket\ns = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\ns.sendto(bytes(range(250)) * 12, ('${S_IP}', ${port}))\n`));
    await waitFor('S got the whole datagram', async () => srv.out.includes('got 3000 True'), { timeoutMs: 10_000 });
    const mid = await show();
    expect(mid.reassembly6.reassembled - before.reassembled).toBe(1);
    expect(mid.reassembly6.fragments - before.fragments).toBeGreaterThanOrEqual(3);
    // Overlapping fragments: the second rewrites bytes 8.. of the first (the UDP payload's start).
    const neigh = JSON.parse(await nsExec(vm.ns, `ip -6 -j neigh show dev ${q(TAP)}`)) as { dst: string; lladdr?: string; router?: unknown }[];
    const gwMac = neigh.find((x) => x.router !== undefined && x.lladdr !== undefined)?.lladdr;
    expect(gwMac, JSON.stringify(neigh)).toBeDefined();
    const script = join(dir, 'overlap.py');
    writeFileSync(script, ['from scapy.all import *', 'conf.verb = 0',
      `u = bytes(UDP(sport=40000, dport=${port})/Raw(b'A' * 2000))`,
      `ip = Ether(src='${vm.mac}', dst='${gwMac}')/IPv6(src='${vmIp}', dst='${S_IP}')`,
      'f1 = ip/IPv6ExtHdrFragment(nh=17, offset=0, m=1, id=0x5722)/Raw(u[:1232])',
      'f2 = ip/IPv6ExtHdrFragment(nh=17, offset=1, m=0, id=0x5722)/Raw(b"B" * 1232)',
      `sendp([f1, f2], iface='${TAP}')`].join('\n'));
    await nsExec(vm.ns, `${PYTHON} ${q(script)}`, { timeoutMs: 30_000 });
    await waitFor('the overlap counted', async () => (await show()).reassembly6.overlap - before.overlap >= 1, { timeoutMs: 5000 });
    const after = await show();
    expect(after.reassembly6.reassembled).toBe(mid.reassembly6.reassembled);
    expect(srv.out.match(/^got /gm)?.length ?? 0, srv.out).toBe(1);
    expect(after.reassembly6.bytes).toBe(0);
    const r = (await d.ok(['router', 'show', 'r0'], { json: true })).json as any;
    expect((Array.isArray(r) ? r[0] : r).uplink.reassembly6).toEqual({ maxDatagrams: 64, maxBytes: 1 << 20, timeoutMs: 60_000, maxDatagramsPerSource: 16, maxBytesPerSource: 1 << 18 });
  }, 60_000);
});

describe('uplink.rcvbuf (host NAT TCP sockets)', () => {
  it('router show prints it, and the host socket of a VM\'s IPv6 connection has that receive buffer', async () => {
    const r = (await d.ok(['router', 'show', 'r0'], { json: true })).json as any;
    expect((Array.isArray(r) ? r[0] : r).uplink.rcvbuf).toBe(RCVBUF);
    expect((await d.ok(['router', 'show', 'r0'])).stdout).toContain(`TCP rcvbuf ${RCVBUF}`);
    const port = await freePort();
    server(S, `socat TCP6-LISTEN:${port},reuseaddr,fork SYSTEM:'echo held; sleep 30'`);
    await waitFor('S listening', async () => (await nsExec(S, `ss -Hltn 'sport = :${port}'`)).trim() !== '', { timeoutMs: 10_000 });
    const client = server(vm.ns, `socat -u TCP6:[${S_IP}]:${port} -`);
    await waitFor('the VM\'s connection', async () => client.out.includes('held'), { timeoutMs: 10_000 });
    const ss = await nsExec(H, `ss -Htm 'dport = :${port}'`);
    expect(ss, 'the daemon\'s socket to S').toContain(`rb${2 * RCVBUF},`);
    const host = ((Array.isArray(r) ? r[0] : r).hostNat);
    expect(host.tcp.rcvbufFailed).toBe(0);
    await client.stop();
  }, 60_000);
});
