/*
 * The gateway's IPv6 DNS defaults and VM names (issue 14's leftovers), through the
 * real daemon with real clients:
 *
 *   br0 VLAN 10 -- net10 10.X.10.1/24 (DHCP, domain lab.example),
 *                  ipv6 fd00:X:10::1/64 mode dhcpv6, no rdnss and no dhcpv6.dns configured
 *                  VM a: udhcpc -x hostname:alpha, then dhclient -6 (no FQDN option)
 *                  VM b: dhclient -6 with `send fqdn.fqdn "beta"` (option 39), then udhcpc -x hostname:gamma
 *                  VM c: dhclient -6 -N -N (two IA_NAs in one message)
 *
 * - the RA's RDNSS and the DHCPv6 DNS option default to the gateway's IPv6
 *   address (the gateway answers DNS): dhclient is handed it, `router show` shows it;
 * - `dhcp leases` shows b's DHCPv6 lease named beta (from its FQDN option);
 * - from a, asking the gateway over IPv6 (busybox nslookup): AAAA alpha is a's
 *   DHCPv6 address (named by a's IPv4 lease, same MAC), AAAA beta.lab.example b's;
 *   gamma (b's IPv4 name; b's IPv6 lease is named beta) has an A record and no
 *   AAAA: NOERROR without an answer, not NXDOMAIN; an unknown name is NXDOMAIN;
 *   the PTR of b's address is beta.lab.example;
 * - c's two IA_NAs each get an address: two leases with c's DUID, IAIDs differ;
 * - c floods the gateway's IPv6 DNS (UDP, ~4000 queries/s for 3 s, the router's
 *   `limits.dns` 20/s per port): c gets at most about 20/s answered, the rest is
 *   dropped and counted under c's port (`rateLimited`), while a resolves its
 *   names meanwhile, each answer within 3 s (the IPv4 flood: rate-limits.test).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, startDaemon } from './helpers/daemon.js';
import { type DhcpClient, leases, udhcpcOnce } from './helpers/dhcp.js';
import { dhclient6, makeDhcp6Vm, type Dhcp6Vm } from './helpers/dhcp6.js';
import { canon } from './helpers/ipv6.js';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PREFIX, cleanup, ifname, nsExec, nsExecR, q, sleep, tempDir, waitFor } from './helpers/run.js';

const X = 20 + (parseInt(PREFIX.slice(1), 16) % 200);
const P10 = `fd00:${X}:10::`;
const GW6 = `${P10}1`;
const T = { a: ifname('dna'), b: ifname('dnb'), c: ifname('dnc') };
const DNS_PPS = 20;

/*
 * A DNS flood over IPv6 from an ordinary UDP socket: AAAA queries to GW port 53 in
 * bursts of 20 with a 5 ms pause (at most ~4000/s, so the TAP's queue keeps them)
 * for SECS seconds, answers drained as they come and for 1 s after; prints
 * "sent N in S answered M".
 */
const FLOOD6_PY = String.raw`
import socket, struct, sys, time
gw, secs = sys.argv[1], float(sys.argv[2])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.connect((gw, 53))
s.setblocking(False)
q = struct.pack('!HHHHHH', 0, 0x0100, 1, 0, 0, 0) + b'\x05alpha\x00' + struct.pack('!HH', 28, 1)
sent = answered = 0
def drain():
    global answered
    while True:
        try: s.recv(2048); answered += 1
        except (BlockingIOError, ConnectionRefusedError): return
t0 = time.time()
while time.time() - t0 < secs:
    for _ in range(20):
        try: s.send(struct.pack('!H', sent & 0xffff) + q[2:]); sent += 1
        except (BlockingIOError, ConnectionRefusedError): pass
    drain()
    time.sleep(0.005)
el = time.time() - t0
end = time.time() + 1
while time.time() < end:
    drain(); time.sleep(0.01)
print('sent %d in %.2f answered %d' % (sent, el, answered))
`;

function config(): unknown {
  const access = { type: 'tap', vlan: { mode: 'access', vid: 10 } };
  return {
    bridges: { br0: { ports: { [T.a]: access, [T.b]: access, [T.c]: access } } },
    routers: {
      r1: {
        limits: { dns: DNS_PPS },
        networks: {
          net10: {
            bridge: 'br0', vlan: 10, address: `10.${X}.10.1/24`,
            dhcp: { pool: [`10.${X}.10.100-10.${X}.10.150`], domain: 'lab.example' },
            ipv6: { address: `${GW6}/64`, mode: 'dhcpv6', ra: { interval: 10 } },
          },
        },
      },
    },
  };
}

/** busybox nslookup from `vm` to the gateway's IPv6 address: its output (stdout + stderr) and exit code. */
async function lookup(vm: Dhcp6Vm, type: string, name: string): Promise<{ code: number; out: string }> {
  const r = await nsExecR(vm.ns, `busybox nslookup -type=${type} ${q(name)} ${q(GW6)} 2>&1`, { timeoutMs: 15_000 });
  return { code: r.code, out: r.stdout + r.stderr };
}

describe('IPv6 DNS: the gateway as default RDNSS/DHCPv6 DNS server, AAAA and PTR for VM names from DHCPv6 leases', () => {
  let d: Daemon;
  const vm: Record<'a' | 'b' | 'c', Dhcp6Vm> = {} as never;
  const clients: DhcpClient[] = [];
  const got: Record<string, string> = {};

  beforeAll(async () => {
    d = await startDaemon(config());
    [vm.a, vm.b, vm.c] = await Promise.all([makeDhcp6Vm('dna', T.a), makeDhcp6Vm('dnb', T.b), makeDhcp6Vm('dnc', T.c)]);
  }, 60_000);

  afterAll(async () => {
    for (const c of clients) await c.stop();
    if (d?.alive()) await d.stop();
    await cleanup();
  });

  it('the RA and DHCPv6 hand out the gateway as DNS server; b\'s lease is named by its FQDN option', async () => {
    const net = (await d.ok(['router', 'show'], { json: true })).json[0].networks.find((x: any) => x.name === 'net10');
    expect(net.ipv6.rdnss).toEqual([GW6]);
    expect(net.ipv6.dhcpv6.dns).toEqual([GW6]);
    expect((await d.ok(['router', 'show'])).stdout).toMatch(new RegExp(`dhcpv6 net10: .* bound, dns ${GW6}`));
    expect((await udhcpcOnce(vm.a as never, { hostname: 'alpha' })).lease, 'a has an IPv4 lease').toBeDefined();
    const A = dhclient6(vm.a);
    const B = dhclient6(vm.b, [], 'send fqdn.fqdn "beta";');
    clients.push(A, B);
    const [ea, eb] = await Promise.all([A.waitEvent(['BOUND6'], { timeoutMs: 30_000 }), B.waitEvent(['BOUND6'], { timeoutMs: 30_000 })]);
    got.a = canon(ea.ip);
    got.b = canon(eb.ip);
    expect(canon(ea.dns)).toBe(canon(GW6));
    // dhclient installs a /128 and no route (its guests take the on-link prefix from the RA, which these VMs ignore).
    await nsExecR(vm.a.ns, `ip -6 route replace ${P10}/64 dev ${q(vm.a.ifname)}`);
    expect((await udhcpcOnce(vm.b as never, { hostname: 'gamma' })).lease, 'b has an IPv4 lease').toBeDefined();
    const rows = (await leases(d)).filter((l: any) => l.family === 'ipv6');
    expect(rows.find((l) => canon(l.ip) === got.b)?.hostname, B.log.slice(-1500)).toBe('beta');
  }, 60_000);

  it('AAAA for a VM name (FQDN option, else the IPv4 lease of the MAC); NODATA for an A-only name; NXDOMAIN for an unknown one; PTR', async () => {
    const alpha = await lookup(vm.a, 'aaaa', 'alpha');
    expect(alpha.out).toContain(got.a);
    const beta = await lookup(vm.a, 'aaaa', 'beta.lab.example');
    expect(beta.out).toContain(got.b);
    // gamma has an A record only: found (A), and its AAAA is an empty answer, not "can't find ... NXDOMAIN".
    expect((await lookup(vm.a, 'a', 'gamma')).out).toMatch(new RegExp(`10\\.${X}\\.10\\.1\\d\\d`));
    const gamma6 = await lookup(vm.a, 'aaaa', 'gamma');
    expect(gamma6.out).not.toMatch(/NXDOMAIN/);
    expect(gamma6.out).not.toMatch(/^Name:/m);
    expect(gamma6.out.split('\n').filter((l) => /^Address:/.test(l) && !l.includes(']:53'))).toEqual([]);
    expect((await lookup(vm.a, 'aaaa', 'nobody')).out).toMatch(/NXDOMAIN/);
    const arpa = canonNibbles(got.b);
    expect((await lookup(vm.a, 'ptr', arpa)).out).toContain('beta.lab.example');
  }, 60_000);

  it('dhclient -6 -N -N: both IA_NAs of its messages get an address (one per IAID)', async () => {
    const C = dhclient6(vm.c, ['-N', '-N']);
    clients.push(C);
    await C.waitEvent(['BOUND6'], { timeoutMs: 30_000 });
    await waitFor('two leases for c', async () => (await leases(d)).filter((l: any) => l.family === 'ipv6' && l.mac === vm.c.mac && l.state === 'bound').length === 2,
      { timeoutMs: 10_000 });
    const rows = (await leases(d)).filter((l: any) => l.family === 'ipv6' && l.mac === vm.c.mac) as any[];
    expect(new Set(rows.map((r) => r.clientId)).size).toBe(1);
    expect(new Set(rows.map((r) => r.iaid)).size).toBe(2);
    expect(new Set(rows.map((r) => canon(r.ip))).size).toBe(2);
  }, 60_000);

  it('a flood of DNS queries to the gateway\'s IPv6 address from c is cut to its port\'s rate; a resolves meanwhile', async () => {
    const script = join(tempDir('dns6flood'), 'flood6.py');
    writeFileSync(script, FLOOD6_PY);
    // c sends from its own leased address (the source guard's binding) over the on-link prefix.
    await nsExecR(vm.c.ns, `ip -6 route replace ${P10}/64 dev ${q(vm.c.ifname)}`);
    const portStats = async (): Promise<Record<string, number>> => {
      const net = (await d.ok(['router', 'show'], { json: true })).json[0].networks.find((x: any) => x.name === 'net10');
      return net.rateLimited.ports.find((p: any) => p.port === T.c)?.dropped ?? {};
    };
    const before = (await portStats()).dns ?? 0;
    const timed = async (): Promise<{ ms: number; out: string }> => {
      const t0 = Date.now();
      const r = await lookup(vm.a, 'aaaa', 'alpha');
      return { ms: Date.now() - t0, out: r.out };
    };
    const [flood, ...answers] = await Promise.all([
      nsExec(vm.c.ns, `python3 ${q(script)} ${q(GW6)} 3`, { timeoutMs: 30_000 }),
      sleep(500).then(timed),
      sleep(1500).then(timed),
      sleep(2500).then(timed),
    ]);
    const m = /sent (\d+) in ([\d.]+) answered (\d+)/.exec(flood);
    expect(m, flood).not.toBeNull();
    const [sent, secs, answered] = [Number(m![1]), Number(m![2]), Number(m![3])];
    await sleep(700); // the daemon drains what the flood queued
    const dropped = ((await portStats()).dns ?? 0) - before;
    console.log(`[dns6-flood] ${sent} queries in ${secs} s, ${answered} answered, ${dropped} dropped on c's port; a's lookups ${answers.map((x) => x.ms).join('/')} ms`);
    for (const x of answers) {
      expect(x.out).toContain(got.a);
      expect(x.ms, 'a resolves within 3 s during the flood').toBeLessThan(3000);
    }
    expect(dropped).toBeGreaterThan(sent / 2);
    expect(answered).toBeLessThanOrEqual(Math.ceil(DNS_PPS * (secs + 1) * 1.1) + 3);
    expect(answered).toBeGreaterThanOrEqual(DNS_PPS * secs * 0.5);
  }, 60_000);
});


/** The ip6.arpa name of an address. */
function canonNibbles(a: string): string {
  const [head, tail] = a.includes('::') ? a.split('::') : [a, ''];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const hex = [...h, ...new Array(8 - h.length - t.length).fill('0'), ...t].map((g) => g.padStart(4, '0')).join('');
  return `${[...hex].reverse().join('.')}.ip6.arpa`;
}
