/*
 * NAT through the host's own address (router uplink `kind: host`) through the real
 * daemon. The daemon runs in its own namespace H, which stands for the hypervisor
 * host: its sockets, routing and address are what the VMs' flows leave through.
 *
 *   VM a (netns, TAP, DHCP) --br0 VLAN 10-- router r0 net10 10.77.10.1/24
 *                                           uplink kind host (sockets of H)
 *   H: 198.51.100.1/24 on a veth to S; route 203.0.113.0/24 via S
 *   S: 198.51.100.2/24; 203.0.113.7 on its loopback (a server "further away",
 *      reached through H's routing); dnsmasq on 198.51.100.2:53 answers svc.test;
 *      TCP servers (tcp-tool.ts), an HTTP server, a UDP echo.
 *
 * The DHCP lease names the gateway as DNS server (the router's DNS forwarder asks
 * the resolver of the resolv.conf given in the config). Shown: name resolution
 * over UDP and TCP; HTTP, UDP and ping to S with H's address as the source seen
 * by S; 100 MB each way intact (sha256); a VM's half-close and the server's, and
 * RST both ways; a refused connect; a host port forward from S and from H itself
 * into the VM; sessions and metrics.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, startDaemon } from './helpers/daemon.js';
import { type DhcpVm, makeDhcpVm, udhcpcOnce } from './helpers/dhcp.js';
import { udpSend, udpTool } from './helpers/inet.js';
import { addNamespace, cleanup, ifname, nsExec, nsExecR, nsname, q, sh, tempDir, trackLink, waitFor } from './helpers/run.js';
import { listening, tool } from './helpers/tcp-tool.js';
import { Background, quietNamespace } from './helpers/vm.js';

const PY = '/usr/bin/python3';
const TAP = ifname('ha');
const H_IP = '198.51.100.1';
const S_IP = '198.51.100.2';
const FAR = '203.0.113.7';
const GW = '10.77.10.1';
const MB = 1024 * 1024;

/** The daemon's metrics (it listens on 127.0.0.1:9464 inside H), as name{labels} -> value. */
async function metrics(): Promise<Map<string, number>> {
  const text = await nsExec(H, 'curl -sS --max-time 5 http://127.0.0.1:9464/metrics');
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    const r = /^(\w+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (r) m.set(r[1], Number(r[2]));
  }
  return m;
}

let H: string;
let S: string;
let d: Daemon;
let vm: DhcpVm;
let vmIp = '';
let dir: string;
const bg: Background[] = [];

function server(ns: string, cmd: string): Background {
  const b = new Background(ns, cmd);
  bg.push(b);
  return b;
}


beforeAll(async () => {
  dir = tempDir('hostnat');
  H = nsname('hh');
  S = nsname('hs');
  await addNamespace(H);
  await quietNamespace(H);
  await addNamespace(S);
  await quietNamespace(S);
  const [hS, sH] = [ifname('hS'), ifname('sH')];
  trackLink(hS);
  trackLink(sH);
  await sh(`ip -n ${q(H)} link add ${q(hS)} type veth peer name ${q(sH)} netns ${q(S)}`);
  await nsExec(H, `ip link set ${q(hS)} up && ip addr add ${H_IP}/24 dev ${q(hS)} && ip route add 203.0.113.0/24 via ${S_IP}`);
  await nsExec(S, `ip link set ${q(sH)} up && ip addr add ${S_IP}/24 dev ${q(sH)} && ip addr add ${FAR}/32 dev lo && ip route add default via ${H_IP}`);
  // ICMP echo through a raw socket needs ping_group irrelevant; raw sockets need CAP_NET_RAW (root here).

  const resolv = join(dir, 'resolv.conf');
  writeFileSync(resolv, `# written by the test\nnameserver ${S_IP}\n`);
  server(S, `/usr/sbin/dnsmasq -k -u root --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces --listen-address=${S_IP} `
    + `--port=53 --address=/svc.test/${FAR} --pid-file=${join(dir, 'dnsmasq.pid')} --log-facility=-`);

  writeFileSync(join(dir, 'index.html'), 'hello from S\n');
  await sh(`head -c ${100 * MB} /dev/urandom > ${q(join(dir, 'down.bin'))}`);
  await sh(`head -c ${100 * MB} /dev/urandom > ${q(join(dir, 'up.bin'))}`);

  d = await startDaemon({
    stateDir: join(dir, 'state'),
    bridges: { br0: { ports: { [TAP]: { type: 'tap', vlan: { mode: 'access', vid: 10 } } } } },
    routers: {
      r0: {
        uplink: { kind: 'host', resolvConf: resolv },
        nat: { maxSessionsPerHost: 200 },
        networks: { net10: { bridge: 'br0', vlan: 10, address: `${GW}/24`, dhcp: { pool: ['10.77.10.100-10.77.10.150'] } } },
      },
    },
    metrics: { listen: '127.0.0.1:9464' },
  }, { netns: H });
  vm = await makeDhcpVm('ha', TAP, undefined, H);
  const lease = await udhcpcOnce(vm, { tries: 5 });
  expect(lease.code, lease.log).toBe(0);
  vmIp = lease.lease!.ip;
  expect(lease.lease!.dns, 'the lease names the gateway as DNS server').toBe(GW);
}, 120_000);

afterAll(async () => {
  for (const b of bg) await b.stop();
  await d?.stop();
  await cleanup();
}, 60_000);

describe('NAT through the host\'s own address', () => {
  it('resolves names through the gateway (UDP and TCP) against the host\'s resolver', async () => {
    const udp = await nsExec(vm.ns, `timeout 10 busybox nslookup -type=a svc.test ${GW}`);
    expect(udp).toContain(FAR);
    const tcp = await nsExec(vm.ns, tool(`dnstcp ${GW} svc.test`), { timeoutMs: 20_000 });
    expect(tcp.trim()).toBe(FAR);
  });

  it('fetches a page over HTTP from a server reached through the host\'s routing; the server sees the host\'s address', async () => {
    // busybox httpd, not python's http.server: that one looks up its own name (a DNS query to the system resolver).
    const http = server(S, `busybox httpd -f -vv -p ${FAR}:8080 -h ${q(dir)}`);
    await waitFor('httpd to listen', async () => (await nsExec(S, `ss -Hltn 'sport = :8080'`)).trim() !== '', { timeoutMs: 10_000 });
    const page = await nsExec(vm.ns, `curl -sS --max-time 10 http://svc.test:8080/index.html --resolve svc.test:8080:${FAR}`);
    expect(page).toBe('hello from S\n');
    await waitFor('the access log line', () => /url:\/index.html/.test(http.err), { timeoutMs: 5000 });
    expect(http.err).toContain(`${H_IP}:`);
    expect(http.err).not.toContain(vmIp);
  });

  it('exchanges UDP and pings through the host', async () => {
    const echo = server(S, `${PY} ${q(udpTool())} serve 7007`);
    await listening(echo, 'udp echo');
    // The echo server binds 0.0.0.0: it answers from the address its route picks (S_IP), so ask that one
    // (a reply from another address than the one asked is filtered, by the NAT as by the VM's connected socket).
    const reply = await udpSend(vm.ns, S_IP, 7007, { msg: 'ping-udp', timeoutSec: 5 });
    expect(reply, JSON.stringify((await d.ok(['router', 'show', '--json'], { json: true })).json)).toBe('reply ping-udp');
    expect(echo.out).toMatch(new RegExp(`peer ${H_IP.replace(/\./g, '\\.')}:\\d+ ping-udp`));
    const p = await nsExecR(vm.ns, `busybox ping -c 3 -W 2 ${FAR}`, { timeoutMs: 20_000 });
    expect(p.stdout, p.stderr).toMatch(/3 packets received/);
  });

  it('moves 100 MB down and 100 MB up intact', async () => {
    const src = server(S, tool(`serve 9001 source ${q(join(dir, 'down.bin'))}`));
    const sink = server(S, tool('serve 9002 sink'));
    await listening(src, 'source');
    await listening(sink, 'sink');
    const want = async (f: string): Promise<string> => (await sh(`sha256sum ${q(f)}`)).split(' ')[0];
    const down = await nsExec(vm.ns, tool(`get ${FAR} 9001 ${q(join(dir, 'got.bin'))}`), { timeoutMs: 120_000 });
    expect(down.trim()).toBe(`got ${100 * MB} ${await want(join(dir, 'down.bin'))}`);
    const up = await nsExec(vm.ns, tool(`put ${FAR} 9002 ${q(join(dir, 'up.bin'))}`), { timeoutMs: 120_000 });
    expect(up.trim()).toBe(`got ${100 * MB} ${await want(join(dir, 'up.bin'))}`);
    expect(src.out).toContain(`peer ${H_IP}:`);
  }, 300_000);

  it('carries half-closes both ways and resets both ways', async () => {
    writeFileSync(join(dir, 'small.bin'), 'x'.repeat(200_000));
    // The server's half-close: the VM reads to EOF, then still sends, and the server gets it.
    const src = server(S, tool(`serve 9003 source ${q(join(dir, 'small.bin'))}`));
    await listening(src, 'source');
    const hc = await nsExec(vm.ns, tool(`halfclose ${FAR} 9003`), { timeoutMs: 30_000 });
    expect(hc).toMatch(/^eof 200000 /);
    await waitFor('the server to get the bytes sent after its FIN', () => /after 10/.test(src.out), { timeoutMs: 10_000 });
    // The VM's half-close is the put above (sink replies after the VM's FIN); again with a small file:
    const sink = server(S, tool('serve 9004 sink'));
    await listening(sink, 'sink');
    expect((await nsExec(vm.ns, tool(`put ${FAR} 9004 ${q(join(dir, 'small.bin'))}`), { timeoutMs: 30_000 })).trim()).toMatch(/^got 200000 /);
    // The VM aborts: the server sees a reset.
    const wait = server(S, tool('serve 9005 wait'));
    await listening(wait, 'wait');
    expect((await nsExec(vm.ns, tool(`abort ${FAR} 9005`), { timeoutMs: 20_000 })).trim()).toBe('aborted');
    await waitFor('the server to see the reset', () => /reset \d+/.test(wait.out), { timeoutMs: 10_000 });
    // The server aborts: the VM sees a reset.
    const rst = server(S, tool('serve 9006 rst'));
    await listening(rst, 'rst');
    expect((await nsExec(vm.ns, tool(`readreset ${FAR} 9006`), { timeoutMs: 20_000 })).trim()).toBe('reset');
  }, 90_000);

  it('answers a connect to a closed port with a reset', async () => {
    expect((await nsExec(vm.ns, tool(`connect ${FAR} 9999`), { timeoutMs: 20_000 })).trim()).toBe('refused');
  });

  it('forwards a host port into the VM, from another host and from the host itself', async () => {
    const inVm = server(vm.ns, tool('serve 8080 sink'));
    await listening(inVm, 'server in the VM');
    await d.ok(['nat', 'forward', 'add', 'tcp', '18080', `${vmIp}:8080`]);
    const shown = (await d.ok(['nat', 'forward', 'show', '--json'], { json: true })).json as any[];
    await waitFor('the forward to listen', async () => {
      const rows = (await d.ok(['nat', 'forward', 'show', '--json'], { json: true })).json as any[];
      return rows.some((r) => r.public === '18080' && r.state === 'listening');
    }, { timeoutMs: 5000 });
    expect(shown.length).toBe(1);
    writeFileSync(join(dir, 'fwd.bin'), 'f'.repeat(50_000));
    const fromS = await nsExec(S, tool(`put ${H_IP} 18080 ${q(join(dir, 'fwd.bin'))}`), { timeoutMs: 20_000 });
    expect(fromS.trim()).toMatch(/^got 50000 /);
    expect(inVm.out).toContain(`peer ${S_IP}:`);
    const fromH = await nsExec(H, tool(`put 127.0.0.1 18080 ${q(join(dir, 'fwd.bin'))}`), { timeoutMs: 20_000 });
    expect(fromH.trim()).toMatch(/^got 50000 /);
    expect(inVm.out, 'a client on the host itself appears as the gateway').toContain(`peer ${GW}:`);
  });

  it('lists sessions and exports host-NAT metrics', async () => {
    const wait = server(S, tool('serve 9007 wait'));
    await listening(wait, 'wait');
    const client = new Background(vm.ns, `${PY} -c ${q(`import socket,time; s=socket.create_connection(('${FAR}',9007)); print('listening', flush=True); time.sleep(30)`)}`);
    bg.push(client);
    await listening(client, 'client');
    const rows = (await d.ok(['nat', 'sessions', '--json'], { json: true })).json as any[];
    const s = rows.find((r) => r.proto === 'tcp' && r.remote === `${FAR}:9007`);
    expect(s, JSON.stringify(rows)).toBeDefined();
    expect(s.inside).toMatch(new RegExp(`^${vmIp.replace(/\./g, '\\.')}:\\d+$`));
    expect(s.state).toBe('established');
    await client.stop();
    const m = await metrics();
    expect(m.get('vswitch_host_nat_sessions_opened_total{router="r0",proto="tcp"}')).toBeGreaterThan(5);
    expect(m.get('vswitch_host_nat_tcp_bytes_total{router="r0",direction="to_vm"}')).toBeGreaterThanOrEqual(100 * MB);
    expect(m.get('vswitch_host_nat_tcp_bytes_total{router="r0",direction="to_host"}')).toBeGreaterThanOrEqual(100 * MB);
    expect(m.get('vswitch_host_nat_packets_total{router="r0",proto="udp",direction="to_vm"}')).toBeGreaterThan(0);
    expect(m.get('vswitch_host_nat_icmp_available{router="r0"}')).toBe(1);
    expect(m.get('vswitch_host_nat_forward_listening{router="r0",proto="tcp",listen="0.0.0.0:18080"}')).toBe(1);
    expect(m.get('vswitch_router_packets_total{router="r0",path="to_host"}')).toBeGreaterThan(0);
  });

  it('refuses flows over the per-VM limit and counts them', async () => {
    const before = (await metrics()).get('vswitch_host_nat_sessions_refused_total{router="r0",reason="host_limit"}') ?? 0;
    // 300 UDP flows from distinct source ports, each a mapping of its own.
    await nsExec(vm.ns, `${PY} -c ${q(`import socket
for i in range(300):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'x', ('${S_IP}', 7999)); s.close()`)}`);
    await waitFor('the refusals to be counted', async () =>
      ((await metrics()).get('vswitch_host_nat_sessions_refused_total{router="r0",reason="host_limit"}') ?? 0) - before >= 100, { timeoutMs: 5000 });
    const m = await metrics();
    expect(m.get('vswitch_host_nat_sessions{router="r0"}')).toBeLessThanOrEqual(200);
    expect(m.get('vswitch_host_nat_sessions{router="r0"}')).toBeGreaterThanOrEqual(150);
  });

  it('keeps a runtime port forward across a daemon restart', async () => {
    await d.stop();
    d = await startDaemon(null, { netns: H, configText: (await sh(`cat ${q(d.configFile)}`)) });
    await waitFor('the forward to listen again', async () => {
      const rows = (await d.ok(['nat', 'forward', 'show', '--json'], { json: true })).json as any[];
      return rows.some((r) => r.public === '18080' && r.source === 'runtime' && r.state === 'listening');
    }, { timeoutMs: 10_000 });
  });
});

describe('NAT through the host without CAP_NET_RAW', () => {
  it('says in a warning log line that ICMP echo is unavailable, and TCP still works', async () => {
    const H2 = nsname('hh2');
    await addNamespace(H2);
    await quietNamespace(H2);
    const d2 = await startDaemon({
      stateDir: join(dir, 'state2'),
      bridges: { br0: { ports: {} } },
      routers: { r0: { uplink: { kind: 'host', dns: ['192.0.2.53'] }, networks: { net10: { bridge: 'br0', vlan: 10, address: `${GW}/24` } } } },
    }, { netns: H2, wrap: ['setpriv', '--inh-caps=-net_raw', '--bounding-set=-net_raw', '--'] });
    try {
      const line = await d2.waitForLog('icmp_unavailable');
      expect(line.obj?.level, line.raw).toBe('warn');
      const r = (await d2.ok(['router', 'show', '--json'], { json: true })).json as any[];
      expect(r[0].uplink.icmp).toBe('unavailable');
    } finally {
      await d2.stop();
    }
  });
});
