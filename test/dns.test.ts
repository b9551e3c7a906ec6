/*
 * DNS like dnsmasq (issue 18): the gateway answers DNS in every uplink mode.
 * The daemon runs in its own namespace H (the host: its sockets reach the upstream
 * resolver), one bridge, three routers:
 *
 *   r0 net10 10.64.10.1/24 VLAN 10, uplink kind interface (an interface that does
 *      not exist: NAT is down, DNS is not), domain lab.example, a reservation "db"
 *   r1 net20 10.64.20.1/24 VLAN 20, no uplink, domain iso.example; upstream a
 *      black hole (an address of S where nothing answers), dns.timeout 1 s
 *   r2 net30 10.64.30.1/24 VLAN 30, uplink kind host, domain h.example
 *   H: 198.51.100.1/24 on a veth to S; S: 198.51.100.2 runs dnsmasq (svc.test)
 *
 * Real clients (udhcpc with a hostname, busybox nslookup, python's socket): the
 * lease names the gateway as DNS server (no `dns` in the config); vm1.lab.example,
 * the bare vm1 and the reservation's db.lab.example resolve to their addresses,
 * PTR gives vm1.lab.example back, an unknown lab name is NXDOMAIN (not asked
 * upstream: dnsmasq's log shows none), svc.test is forwarded to the upstream in
 * S. The same in the router without an uplink (local names) and in the host-uplink
 * router (local names here, svc.test through the host NAT's forwarder). A VM cannot
 * resolve another network's names. Bounded: 100 queries to r1's dead upstream
 * leave at most maxOutstandingPerPort (32) waiting, the rest dropped
 * (port_backlog), all forgotten after dns.timeout, while another VM's local names
 * are answered; the counts are in `router show` and the metrics. DNS over TCP to
 * r0's gateway (no host uplink) is relayed to the upstream resolver; another TCP
 * port of the gateway is refused.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, startDaemon } from './helpers/daemon.js';
import { type DhcpVm, makeDhcpVm, udhcpcOnce } from './helpers/dhcp.js';
import { addNamespace, cleanup, ifname, nsExec, nsExecR, nsname, q, sh, sleep, tempDir, trackLink, waitFor } from './helpers/run.js';
import { tcpTool } from './helpers/tcp-tool.js';
import { Background, quietNamespace } from './helpers/vm.js';

const PY = '/usr/bin/python3';
const H_IP = '198.51.100.1';
const S_IP = '198.51.100.2';
const DEAD = '198.51.100.3'; // on S, nothing listens: its ICMP port unreachable is not reported to an unconnected socket, the queries vanish
const FAR = '203.0.113.7';
const GW = { 10: '10.64.10.1', 20: '10.64.20.1', 30: '10.64.30.1' };
const DB_IP = '10.64.10.50';
const T = { v1: ifname('dn1'), v2: ifname('dn2'), v3: ifname('dn3'), v4: ifname('dn4') };

let H: string;
let S: string;
let d: Daemon;
let dir: string;
const bg: Background[] = [];
const vms: Record<string, DhcpVm> = {};
const ips: Record<string, string> = {};

/** busybox nslookup NAME SERVER in the VM: the addresses or name it printed after the server's lines, and its exit code. */
async function nslookup(vm: DhcpVm, name: string, server: string, type = ''): Promise<{ code: number; out: string; answers: string[] }> {
  const r = await nsExecR(vm.ns, `timeout 10 busybox nslookup ${type ? `-type=${type} ` : ''}${q(name)} ${server}`);
  const out = r.stdout + r.stderr;
  // Lines after "Name:"/"Non-authoritative answer:": "Address: 1.2.3.4" and "... name = x".
  const body = out.split(/\n\s*\n/).slice(1).join('\n');
  const answers = [...body.matchAll(/Address:\s+(\d+\.\d+\.\d+\.\d+)/g)].map((m) => m[1])
    .concat([...out.matchAll(/name = (\S+)/g)].map((m) => m[1]));
  return { code: r.code, out, answers };
}

/** The RCODE of a query asked with python's socket (a raw DNS message over UDP), or 'timeout'. */
async function rcode(vm: DhcpVm, name: string, server: string, qtype = 1): Promise<string> {
  const py = `
import socket, struct, sys
name, server, qtype = sys.argv[1], sys.argv[2], int(sys.argv[3])
q = struct.pack('!HHHHHH', 0x4242, 0x0100, 1, 0, 0, 0) + b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\\0' + struct.pack('!HH', qtype, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); s.sendto(q, (server, 53))
try:
    a, _ = s.recvfrom(4096)
except socket.timeout:
    print('timeout'); sys.exit(0)
flags, an = struct.unpack('!H', a[2:4])[0], struct.unpack('!H', a[6:8])[0]
print({0: 'NOERROR', 2: 'SERVFAIL', 3: 'NXDOMAIN', 4: 'NOTIMP', 5: 'REFUSED'}.get(flags & 15, str(flags & 15)), 'aa' if flags & 0x400 else '-', an, 'id-ok' if a[:2] == q[:2] else 'id-bad')
`;
  const file = join(dir, 'rcode.py');
  writeFileSync(file, py);
  return (await nsExec(vm.ns, `${PY} ${q(file)} ${q(name)} ${server} ${qtype}`, { timeoutMs: 10_000 })).trim();
}

async function routerDns(name: string): Promise<any> {
  const r = (await d.ok(['router', 'show', name, '--json'], { json: true })).json as any[];
  return r[0].dns;
}

beforeAll(async () => {
  dir = tempDir('dns');
  H = nsname('dh');
  S = nsname('ds');
  for (const ns of [H, S]) {
    await addNamespace(ns);
    await quietNamespace(ns);
  }
  const [hS, sH] = [ifname('dhS'), ifname('dsH')];
  trackLink(hS);
  trackLink(sH);
  await sh(`ip -n ${q(H)} link add ${q(hS)} type veth peer name ${q(sH)} netns ${q(S)}`);
  await nsExec(H, `ip link set ${q(hS)} up && ip addr add ${H_IP}/24 dev ${q(hS)}`);
  await nsExec(S, `ip link set ${q(sH)} up && ip addr add ${S_IP}/24 dev ${q(sH)} && ip addr add ${DEAD}/24 dev ${q(sH)} && ip link set lo up`);
  const b = new Background(S, `/usr/sbin/dnsmasq -k -u root --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces --listen-address=${S_IP} `
    + `--port=53 --address=/svc.test/${FAR} --log-queries --pid-file=${join(dir, 'dnsmasq.pid')} --log-facility=-`);
  bg.push(b);
  const resolv = join(dir, 'resolv.conf');
  writeFileSync(resolv, `nameserver ${S_IP}\n`);

  d = await startDaemon({
    stateDir: join(dir, 'state'),
    bridges: {
      br0: {
        ports: {
          [T.v1]: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
          [T.v2]: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
          [T.v3]: { type: 'tap', vlan: { mode: 'access', vid: 20 } },
          [T.v4]: { type: 'tap', vlan: { mode: 'access', vid: 30 } },
        },
      },
    },
    routers: {
      r0: {
        uplink: { interface: ifname('dnup'), address: '192.0.2.2/24', gateway: '192.0.2.1' },
        dns: { resolvConf: resolv },
        networks: {
          net10: {
            bridge: 'br0', vlan: 10, address: `${GW[10]}/24`,
            dhcp: { pool: ['10.64.10.100-10.64.10.150'], domain: 'lab.example', reservations: [{ mac: '02:00:00:00:64:50', ip: DB_IP, hostname: 'db' }] },
          },
        },
      },
      r1: {
        dns: { upstream: [DEAD], timeout: 1 },
        networks: { net20: { bridge: 'br0', vlan: 20, address: `${GW[20]}/24`, dhcp: { pool: ['10.64.20.100-10.64.20.150'], domain: 'iso.example' } } },
      },
      r2: {
        uplink: { kind: 'host', resolvConf: resolv },
        networks: { net30: { bridge: 'br0', vlan: 30, address: `${GW[30]}/24`, dhcp: { pool: ['10.64.30.100-10.64.30.150'], domain: 'h.example' } } },
      },
    },
    metrics: { listen: '127.0.0.1:9464' },
  }, { netns: H });
  for (const [k, tap, host] of [['v1', T.v1, 'vm1'], ['v2', T.v2, 'vm2'], ['v3', T.v3, 'iso1'], ['v4', T.v4, 'hvm']] as const) {
    vms[k] = await makeDhcpVm(`dn${k[1]}`, tap, undefined, H);
    const lease = await udhcpcOnce(vms[k], { tries: 5, hostname: host });
    expect(lease.code, lease.log).toBe(0);
    ips[k] = lease.lease!.ip;
    // No `dns:` in the config: the lease names the gateway.
    expect(lease.lease!.dns, `${k}: DNS option`).toBe(GW[({ v1: 10, v2: 10, v3: 20, v4: 30 } as const)[k]]);
  }
  await waitFor('dnsmasq up', () => /started/.test(b.out + b.err), { timeoutMs: 10_000 });
});

afterAll(async () => {
  for (const b of bg) await b.stop();
  await d?.stop();
  await cleanup();
});

describe('the gateway answers DNS in every uplink mode', () => {
  it('interface uplink (down): DHCP names under the domain and bare, a reservation, PTR; unknown lab names NXDOMAIN without asking upstream; the rest forwarded', async () => {
    await sleep(1100); // the name table is rebuilt at most once a second
    const a = await nslookup(vms.v2, 'vm1.lab.example', GW[10]);
    expect(a.answers, a.out).toEqual([ips.v1]);
    expect((await nslookup(vms.v2, 'vm1', GW[10])).answers).toEqual([ips.v1]);
    expect((await nslookup(vms.v1, 'VM2.Lab.Example', GW[10])).answers).toEqual([ips.v2]);
    expect((await nslookup(vms.v1, 'db.lab.example', GW[10])).answers, 'a reservation\'s hostname, no lease needed').toEqual([DB_IP]);
    const ptr = await nslookup(vms.v2, ips.v1, GW[10]);
    expect(ptr.answers, ptr.out).toContain('vm1.lab.example');
    expect(await rcode(vms.v2, 'vm1.lab.example', GW[10]), 'authoritative A').toBe('NOERROR aa 1 id-ok');
    expect(await rcode(vms.v2, 'vm1.lab.example', GW[10], 28), 'AAAA of a known name: NODATA').toBe('NOERROR aa 0 id-ok');
    expect(await rcode(vms.v2, 'nope.lab.example', GW[10])).toBe('NXDOMAIN aa 0 id-ok');
    expect(await rcode(vms.v2, 'nope', GW[10]), 'a bare unknown name is never forwarded').toBe('NXDOMAIN aa 0 id-ok');
    // Forwarded through the host's stack to the resolver of dns.resolvConf.
    const f = await nslookup(vms.v2, 'svc.test', GW[10]);
    expect(f.answers, f.out).toEqual([FAR]);
    expect(await rcode(vms.v2, 'svc.test', GW[10]), 'the upstream\'s answer (dnsmasq\'s --address answers are authoritative)').toMatch(/^NOERROR (aa|-) 1 id-ok$/);
    const log = bg[0].out + bg[0].err;
    expect(log).toMatch(/query\[A\] svc\.test/);
    expect(log, 'lab names are not asked upstream').not.toMatch(/lab\.example|query\[A\] nope\b/);
  });

  it('interface uplink: DNS over TCP to the gateway is relayed to the upstream; another TCP port of the gateway is refused', async () => {
    const tcp = await nsExec(vms.v2.ns, `${PY} ${q(tcpTool())} dnstcp ${GW[10]} svc.test`, { timeoutMs: 20_000 });
    expect(tcp.trim()).toBe(FAR);
    expect((await nsExec(vms.v2.ns, `${PY} ${q(tcpTool())} connect ${GW[10]} 80`, { timeoutMs: 20_000 })).trim()).toBe('refused');
    const show = (await d.ok(['router', 'show', 'r0'], { json: true })).json as any;
    const r0 = Array.isArray(show) ? show[0] : show;
    expect(r0.dnsTcp.opened).toBeGreaterThanOrEqual(1);
    expect(bg[0].out + bg[0].err).toMatch(new RegExp(`query\\[A\\] svc\\.test from ${H_IP.replace(/\./g, '\\.')}`));
  });

  it('a VM does not resolve another network\'s names', async () => {
    expect(await rcode(vms.v3, 'vm1.lab.example', GW[20]), 'asked of its own gateway: not its domain, forwarded, dead upstream').toMatch(/^(timeout|SERVFAIL)/);
    expect(await rcode(vms.v3, 'vm1', GW[20])).toBe('NXDOMAIN aa 0 id-ok');
  });

  it('no uplink: its own names answered', async () => {
    expect((await nslookup(vms.v3, 'iso1.iso.example', GW[20])).answers).toEqual([ips.v3]);
    expect((await nslookup(vms.v3, ips.v3, GW[20])).answers).toContain('iso1.iso.example');
  });

  it('host uplink: its own names answered by the gateway, the rest by the host NAT\'s forwarder', async () => {
    expect((await nslookup(vms.v4, 'hvm.h.example', GW[30])).answers).toEqual([ips.v4]);
    expect((await nslookup(vms.v4, 'svc.test', GW[30])).answers).toEqual([FAR]);
    const r2 = await routerDns('r2');
    expect(r2.forward).toBe('host NAT (uplink.dns)');
    expect(r2.results.local).toBeGreaterThanOrEqual(1);
    expect(r2.results.handed_off).toBeGreaterThanOrEqual(1);
  });

  it('bounded: 100 queries to a dead upstream leave at most 32 waiting (port_backlog), forgotten after the timeout; another VM is answered meanwhile', async () => {
    const py = `
import socket, struct, sys, os
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(100):
    name = 'n%d.example.org' % i
    q = struct.pack('!HHHHHH', i, 0x0100, 1, 0, 0, 0) + b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\\0' + struct.pack('!HH', 1, 1)
    s.sendto(q, (sys.argv[1], 53))
print('sent 100')
`;
    const file = join(dir, 'flood.py');
    writeFileSync(file, py);
    const before = await routerDns('r1');
    expect(await nsExec(vms.v3.ns, `${PY} ${q(file)} ${GW[20]}`)).toContain('sent 100');
    const during = await routerDns('r1');
    console.log(`[dns] r1 after 100 queries: outstanding ${during.outstanding}, dropped ${JSON.stringify(during.dropped)}`);
    expect(during.outstanding).toBeLessThanOrEqual(32);
    expect(during.results.forwarded - before.results.forwarded).toBe(32 - before.outstanding);
    expect(during.dropped.port_backlog - before.dropped.port_backlog).toBeGreaterThanOrEqual(100 - 32);
    // Local names still answered at once.
    expect((await nslookup(vms.v3, 'iso1.iso.example', GW[20])).answers).toEqual([ips.v3]);
    await waitFor('the unanswered queries forgotten (dns.timeout 1 s)', async () => (await routerDns('r1')).outstanding === 0, { timeoutMs: 5000, intervalMs: 250 });
    const after = await routerDns('r1');
    expect(after.dropped.timeout - before.dropped.timeout).toBeGreaterThanOrEqual(32);
    const m = await nsExec(H, 'curl -sS --max-time 5 http://127.0.0.1:9464/metrics');
    expect(m).toMatch(/^vswitch_dns_dropped_total\{router="r1",reason="port_backlog"\} \d+/m);
    expect(m).toMatch(/^vswitch_dns_queries_total\{router="r0",result="local"\} [1-9]/m);
    expect(m).toMatch(/^vswitch_dns_outstanding\{router="r1"\} 0/m);
    const text = (await d.ok(['router', 'show', 'r0'])).stdout;
    expect(text).toContain(`dns: gateways answer their DHCP names, forward the rest to ${S_IP}`);
  });
});
