/*
 * NAT through the host's own IPv6 address (router uplink `kind: host`, a network
 * with `ipv6`) through the real daemon, as host-nat.test.ts does for IPv4. The
 * daemon runs in its own namespace H (the hypervisor host).
 *
 *   VM a (netns, TAP, SLAAC only: no IPv4) --br0 VLAN 10-- router r0 net10
 *        10.X.10.1/24, ipv6 fd00:X:10::1/64; uplink kind host (sockets of H)
 *   H: 2001:db8:X:51::1/64 on a veth to S; route 2001:db8:X:113::/64 via S
 *   S: 2001:db8:X:51::2/64; 2001:db8:X:113::7 on its loopback (an IPv6-only
 *      server "further away", reached through H's routing); TCP servers.
 *
 * Shown: the RAs carry a router lifetime (the VM's kernel installs a default
 * route through the gateway's link-local address); TCP from the VM's SLAAC
 * address to the far server with H's address as the source seen there; data
 * both ways intact (sha256); curl -6; a UDP echo (socat); ping -6 and an
 * ICMPv6 error translated back; DNS to the gateway's IPv6 address (AAAA over UDP
 * and TCP through the host's resolver, dnsmasq on S over IPv4; ip6.arpa of the
 * network's prefix answered NXDOMAIN by the gateway); half-closes and resets both ways; a refused connect;
 * the session listed with IPv6 endpoints; an IPv4 VM (b, DHCP) on the same
 * network unaffected; port forwards listened on "::" (`listen`) into b from IPv4
 * and IPv6 clients (TCP and UDP), the IPv6 one seen by b as its gateway.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, startDaemon } from './helpers/daemon.js';
import { type DhcpVm, makeDhcpVm, udhcpcOnce } from './helpers/dhcp.js';
import { addrs6, canon, slaacAddr, type V6Vm } from './helpers/ipv6.js';
import { PREFIX, addNamespace, cleanup, ifname, nsExec, nsExecR, nsname, q, sh, tempDir, trackLink, waitFor } from './helpers/run.js';
import { listening, tool } from './helpers/tcp-tool.js';
import { Background, quietNamespace, waitLink } from './helpers/vm.js';

const PY = '/usr/bin/python3';
const TAP = ifname('h6a');
const TAP_B = ifname('h6b');
/** A per-run number, so that concurrent runs' prefixes differ (as ipv6.test.ts). */
const X = 20 + (parseInt(PREFIX.slice(1), 16) % 200);
const H_IP = `2001:db8:${X}:51::1`;
const S_IP = `2001:db8:${X}:51::2`;
const FAR = `2001:db8:${X}:113::7`;
const B10 = `fd00:${X}:10`;
const GW = `${B10}::1`;
const MB = 1024 * 1024;
const H_IP4 = '198.51.100.1';
const S_IP4 = '198.51.100.2';

let H: string;
let S: string;
let d: Daemon;
let vm: V6Vm;
let vmIp = '';
let vmB: DhcpVm;
let vmBIp = '';
let dir: string;
const bg: Background[] = [];

function server(ns: string, cmd: string): Background {
  const b = new Background(ns, cmd);
  bg.push(b);
  return b;
}


beforeAll(async () => {
  dir = tempDir('hostnat6');
  H = nsname('h6h');
  S = nsname('h6s');
  await addNamespace(H);
  await quietNamespace(H);
  await addNamespace(S);
  await quietNamespace(S);
  const [hS, sH] = [ifname('h6S'), ifname('s6H')];
  trackLink(hS);
  trackLink(sH);
  const v6on = 'sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0';
  await sh(`ip -n ${q(H)} link add ${q(hS)} type veth peer name ${q(sH)} netns ${q(S)}`);
  await nsExec(H, `${v6on} && ip link set ${q(hS)} up && ip -6 addr add ${H_IP}/64 dev ${q(hS)} nodad && ip -6 route add 2001:db8:${X}:113::/64 via ${S_IP}`);
  await nsExec(S, `${v6on} && ip link set ${q(sH)} up && ip link set lo up && ip -6 addr add ${S_IP}/64 dev ${q(sH)} nodad `
    + `&& ip -6 addr add ${FAR}/128 dev lo && ip -6 route add default via ${H_IP} `
    + `&& sysctl -qw net.ipv6.conf.all.forwarding=1 && ip -6 route add unreachable 2001:db8:${X}:113::/64`);
  // The host's resolver is on S over IPv4 (the forwarder asks IPv4 resolvers); it knows svc.test's IPv6 address.
  await nsExec(H, `ip addr add ${H_IP4}/24 dev ${q(hS)}`);
  await nsExec(S, `ip addr add ${S_IP4}/24 dev ${q(sH)}`);
  const resolv = join(dir, 'resolv.conf');
  writeFileSync(resolv, `# written by the test\nnameserver ${S_IP4}\n`);
  server(S, `/usr/sbin/dnsmasq -k -u root --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces --listen-address=${S_IP4} `
    + `--port=53 --address=/svc.test/${FAR} --pid-file=${join(dir, 'dnsmasq.pid')} --log-facility=-`);
  await sh(`head -c ${20 * MB} /dev/urandom > ${q(join(dir, 'down.bin'))}`);
  await sh(`head -c ${20 * MB} /dev/urandom > ${q(join(dir, 'up.bin'))}`);

  d = await startDaemon({
    stateDir: join(dir, 'state'),
    bridges: { br0: { ports: { [TAP]: { type: 'tap', vlan: { mode: 'access', vid: 10 } }, [TAP_B]: { type: 'tap', vlan: { mode: 'access', vid: 10 } } } } },
    routers: {
      r0: {
        // listen "::": the port forwards listen on both families.
        uplink: { kind: 'host', resolvConf: resolv, listen: '::' },
        networks: {
          net10: {
            bridge: 'br0', vlan: 10, address: `10.${X}.10.1/24`, dhcp: { pool: [`10.${X}.10.100-10.${X}.10.150`] },
            ipv6: { address: `${GW}/64`, ra: { interval: 10 } },
          },
        },
      },
    },
  }, { netns: H });
  // The VM: SLAAC from the gateway's RAs, no IPv4 at all.
  await waitLink(TAP, H);
  const ns = nsname('h6a');
  await addNamespace(ns);
  await sh(`ip -n ${q(H)} link set ${q(TAP)} netns ${q(ns)}`);
  await nsExec(ns, [
    v6on,
    `sysctl -qw net.ipv6.conf.${TAP}.disable_ipv6=0 net.ipv6.conf.${TAP}.accept_ra=2 net.ipv6.conf.${TAP}.autoconf=1`,
    `sysctl -qw net.ipv6.conf.${TAP}.use_tempaddr=0 net.ipv6.conf.${TAP}.accept_dad=0 net.ipv6.conf.${TAP}.addr_gen_mode=0`,
    `ip link set ${q(TAP)} up`,
  ].join(' && '));
  const mac = (await nsExec(ns, `cat /sys/class/net/${TAP}/address`)).trim().toLowerCase();
  vm = { name: 'h6a', ns, ifname: TAP, mac };
  vmIp = slaacAddr(B10, mac);
  await waitFor('the SLAAC address', async () => (await addrs6(vm)).some((a) => a.local === vmIp && a.tentative !== true), { timeoutMs: 30_000 });
  // VM b: IPv4 only (DHCP), on the same network.
  vmB = await makeDhcpVm('h6b', TAP_B, undefined, H);
  const lease = await udhcpcOnce(vmB, { tries: 5 });
  expect(lease.code, lease.log).toBe(0);
  vmBIp = lease.lease!.ip;
}, 120_000);

afterAll(async () => {
  for (const b of bg) await b.stop();
  await d?.stop();
  await cleanup();
}, 60_000);

describe('NAT through the host\'s own IPv6 address', () => {
  it('advertises a default router: the VM routes IPv6 through the gateway', async () => {
    await waitFor('a default route', async () => /via fe80::/.test(await nsExec(vm.ns, 'ip -6 route show default')), { timeoutMs: 30_000 });
    const show = (await d.ok(['router', 'show', 'r0'], { json: true })).json as any;
    const r = Array.isArray(show) ? show[0] : show;
    const n10 = r.networks.find((n: any) => n.name === 'net10');
    expect(n10.ipv6.routerLifetime).toBe(30);
  });

  it('moves data both ways intact to an IPv6-only server; the server sees the host\'s address', async () => {
    const src = server(S, tool(`serve6 9001 source ${q(join(dir, 'down.bin'))}`));
    const sink = server(S, tool('serve6 9002 sink'));
    await listening(src, 'source');
    await listening(sink, 'sink');
    const want = async (f: string): Promise<string> => (await sh(`sha256sum ${q(f)}`)).split(' ')[0];
    const down = await nsExec(vm.ns, tool(`get ${FAR} 9001 ${q(join(dir, 'got.bin'))}`), { timeoutMs: 60_000 });
    expect(down.trim()).toBe(`got ${20 * MB} ${await want(join(dir, 'down.bin'))}`);
    const up = await nsExec(vm.ns, tool(`put ${FAR} 9002 ${q(join(dir, 'up.bin'))}`), { timeoutMs: 60_000 });
    expect(up.trim()).toBe(`got ${20 * MB} ${await want(join(dir, 'up.bin'))}`);
    expect(src.out).toContain(`peer ${H_IP}:`);
    expect(src.out).not.toContain(vmIp);
  }, 150_000);

  it('fetches a page with curl -6', async () => {
    writeFileSync(join(dir, 'index.html'), 'hello over IPv6\n');
    server(S, `busybox httpd -f -p [${FAR}]:8080 -h ${q(dir)}`);
    await waitFor('httpd to listen', async () => (await nsExec(S, `ss -Hltn 'sport = :8080'`)).trim() !== '', { timeoutMs: 10_000 });
    const page = await nsExec(vm.ns, `curl -6 -sS --max-time 10 http://[${FAR}]:8080/index.html`);
    expect(page).toBe('hello over IPv6\n');
  });

  it('exchanges UDP with an IPv6 echo server (socat); the server sees the host\'s address', async () => {
    const echo = server(S, `socat -d -d UDP6-LISTEN:7007,bind=[${FAR}],fork EXEC:cat`);
    await waitFor('the UDP echo to listen', async () => (await nsExec(S, `ss -Hlun 'sport = :7007'`)).trim() !== '', { timeoutMs: 10_000 });
    const reply = await nsExec(vm.ns, `echo ping-udp6 | socat -t 3 - UDP6:[${FAR}]:7007`, { timeoutMs: 15_000 });
    expect(reply.trim()).toBe('ping-udp6');
    // socat logs the peer in full form: "accepting UDP connection from AF=10 [2001:0db8:...]:port".
    const peer = (): string => canon(/connection from AF=10 \[([0-9a-f:]+)\]/.exec(echo.err)?.[1] ?? '::');
    await waitFor('the peer in the log', () => peer() !== '::', { timeoutMs: 5000 });
    expect(peer()).toBe(H_IP);
  });

  it('pings the IPv6-only server through the host\'s raw ICMPv6 socket; ICMPv6 errors come back translated', async () => {
    const p = await nsExecR(vm.ns, `busybox ping -6 -c 3 -W 2 ${FAR}`, { timeoutMs: 20_000 });
    expect(p.stdout, p.stderr).toMatch(/3 packets received/);
    // S routes 2001:db8:X:113::/64 as unreachable (but its own ::7): a ping to ::8 gets S's destination
    // unreachable, which quotes the host's request and reaches the VM with the VM's own request quoted.
    const show = async (): Promise<any> => {
      const j = (await d.ok(['router', 'show', 'r0'], { json: true })).json as any;
      return (Array.isArray(j) ? j[0] : j).hostNat.icmp;
    };
    const before = (await show()).errorsToVm;
    const u = await nsExecR(vm.ns, `busybox ping -6 -c 1 -W 3 2001:db8:${X}:113::8`, { timeoutMs: 20_000 });
    expect(u.stdout).toMatch(/0 packets received/);
    expect((await show()).errorsToVm).toBe(before + 1);
  });

  it('answers DNS on the gateway\'s IPv6 address: AAAA forwarded to the host\'s resolver (UDP and TCP), ip6.arpa of its prefix locally', async () => {
    const udp = await nsExec(vm.ns, `timeout 10 busybox nslookup -type=aaaa svc.test ${GW}`);
    expect(udp).toContain(FAR);
    // Over TCP (python: one AAAA query, length-prefixed), to the same address.
    const tcp = await nsExec(vm.ns, `${PY} -c ${q(`import socket, struct
qn = b''.join(bytes([len(p)]) + p.encode() for p in 'svc.test'.split('.')) + b'\\0'
m = struct.pack('>HHHHHH', 0x4242, 0x0100, 1, 0, 0, 0) + qn + struct.pack('>HH', 28, 1)
s = socket.create_connection(('${GW}', 53), timeout=10); s.sendall(struct.pack('>H', len(m)) + m)
n = struct.unpack('>H', s.recv(2))[0]; a = b''
while len(a) < n: a += s.recv(n - len(a))
print(socket.inet_ntop(socket.AF_INET6, a[-16:]) if struct.unpack('>H', a[6:8])[0] else 'none')`)}`, { timeoutMs: 20_000 });
    expect(tcp.trim()).toBe(FAR);
    const show = async (): Promise<any> => {
      const j = (await d.ok(['router', 'show', 'r0'], { json: true })).json as any;
      return (Array.isArray(j) ? j[0] : j).dns.results;
    };
    const before = (await show()).nxdomain;
    const r = await nsExecR(vm.ns, `timeout 10 busybox nslookup ${B10}::99 ${GW}`);
    expect(r.stdout + r.stderr).toMatch(/NXDOMAIN|can't find/);
    expect((await show()).nxdomain).toBeGreaterThan(before);
  });

  it('carries half-closes both ways and resets both ways', async () => {
    writeFileSync(join(dir, 'small.bin'), 'x'.repeat(200_000));
    const src = server(S, tool(`serve6 9003 source ${q(join(dir, 'small.bin'))}`));
    await listening(src, 'source');
    expect(await nsExec(vm.ns, tool(`halfclose ${FAR} 9003`), { timeoutMs: 30_000 })).toMatch(/^eof 200000 /);
    await waitFor('the server to get the bytes sent after its FIN', () => /after 10/.test(src.out), { timeoutMs: 10_000 });
    const sink = server(S, tool('serve6 9004 sink'));
    await listening(sink, 'sink');
    expect((await nsExec(vm.ns, tool(`put ${FAR} 9004 ${q(join(dir, 'small.bin'))}`), { timeoutMs: 30_000 })).trim()).toMatch(/^got 200000 /);
    const wait = server(S, tool('serve6 9005 wait'));
    await listening(wait, 'wait');
    expect((await nsExec(vm.ns, tool(`abort ${FAR} 9005`), { timeoutMs: 20_000 })).trim()).toBe('aborted');
    await waitFor('the server to see the reset', () => /reset \d+/.test(wait.out), { timeoutMs: 10_000 });
    const rst = server(S, tool('serve6 9006 rst'));
    await listening(rst, 'rst');
    expect((await nsExec(vm.ns, tool(`readreset ${FAR} 9006`), { timeoutMs: 20_000 })).trim()).toBe('reset');
  }, 90_000);

  it('answers a connect to a closed port with a reset, and to an unreachable address with ICMPv6 unreachable', async () => {
    expect((await nsExec(vm.ns, tool(`connect ${FAR} 9999`), { timeoutMs: 20_000 })).trim()).toBe('refused');
    // H has no route to 2001:db8:X:999::/64: its connect fails ENETUNREACH, the VM gets ICMPv6 no-route.
    expect((await nsExec(vm.ns, tool(`connect 2001:db8:${X}:999::1 80`), { timeoutMs: 20_000 })).trim()).toBe('unreachable');
  });

  it('leaves an IPv4 VM on the same network unaffected: its flows leave over IPv4', async () => {
    const src = server(S, tool(`serve 9011 source ${q(join(dir, 'small.bin'))}`));
    await listening(src, 'source');
    expect(await nsExec(vmB.ns, tool(`get ${S_IP4} 9011 ${q(join(dir, 'gotb.bin'))}`), { timeoutMs: 30_000 })).toMatch(/^got 200000 /);
    expect(src.out).toContain(`peer ${H_IP4}:`);
  });

  it('forwards a host port listened on "::" into the IPv4 VM, from IPv4 and from IPv6 clients', async () => {
    const inVm = server(vmB.ns, tool('serve 8080 sink'));
    await listening(inVm, 'server in the VM');
    await d.ok(['nat', 'forward', 'add', 'tcp', '18080', `${vmBIp}:8080`]);
    await d.ok(['nat', 'forward', 'add', 'udp', '17070', `${vmBIp}:7070`]);
    await waitFor('the forwards to listen', async () => {
      const rows = (await d.ok(['nat', 'forward', 'show', '--json'], { json: true })).json as any[];
      return rows.filter((r) => r.state === 'listening').length === 2;
    }, { timeoutMs: 5000 });
    const rows = (await d.ok(['nat', 'forward', 'show', '--json'], { json: true })).json as any[];
    expect(rows.find((r) => r.public === '18080').listen).toBe('[::]:18080');
    writeFileSync(join(dir, 'fwd.bin'), 'f'.repeat(50_000));
    expect((await nsExec(S, tool(`put ${H_IP4} 18080 ${q(join(dir, 'fwd.bin'))}`), { timeoutMs: 20_000 })).trim()).toMatch(/^got 50000 /);
    expect(inVm.out).toContain(`peer ${S_IP4}:`);
    expect((await nsExec(S, tool(`put ${H_IP} 18080 ${q(join(dir, 'fwd.bin'))}`), { timeoutMs: 20_000 })).trim()).toMatch(/^got 50000 /);
    expect(inVm.out, 'an IPv6 client appears to the IPv4 VM as its gateway').toContain(`peer 10.${X}.10.1:`);
    // UDP: an echo in the VM answers an IPv6 client through the dual-stack forward socket.
    server(vmB.ns, `socat UDP4-LISTEN:7070,fork EXEC:cat`);
    await waitFor('the VM\'s UDP echo', async () => (await nsExec(vmB.ns, `ss -Hlun 'sport = :7070'`)).trim() !== '', { timeoutMs: 10_000 });
    expect((await nsExec(S, `echo fwd-udp6 | socat -t 3 - UDP6:[${H_IP}]:17070`, { timeoutMs: 15_000 })).trim()).toBe('fwd-udp6');
  });

  it('lists the session with IPv6 endpoints', async () => {
    const wait = server(S, tool('serve6 9007 wait'));
    await listening(wait, 'wait');
    const client = new Background(vm.ns, `${PY} -c ${q(`import socket,time; s=socket.create_connection(('${FAR}',9007)); print('listening', flush=True); time.sleep(30)`)}`);
    bg.push(client);
    await listening(client, 'client');
    const rows = (await d.ok(['nat', 'sessions', '--json'], { json: true })).json as any[];
    const s = rows.find((r) => r.proto === 'tcp' && r.remote === `[${FAR}]:9007`);
    expect(s, JSON.stringify(rows)).toBeDefined();
    expect(s.inside).toMatch(new RegExp(`^\\[${vmIp}\\]:\\d+$`));
    expect(s.state).toBe('established');
    await client.stop();
  });
});
