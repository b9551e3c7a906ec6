/*
 * IPv6 routing and translation (issue 14, item 3) through the real daemon, with
 * the kernel's own SLAAC in the VM namespaces:
 *
 *   br0 VLAN 10 -- net10 2001:db8:X:10::1/64 (routed)            VM a
 *   br0 VLAN 20 -- net20 2001:db8:X:20::1/64, ra.mtu 1280        VM c   (interconnect net10-net20)
 *   br0 VLAN 30 -- net30 fd00:X:30::1/64, npt 2001:db8:X:130::/64 VM d  (NPTv6)
 *   br0 VLAN 40 -- net40 2001:db8:X:40::1/64 (not interconnected) VM e
 *   uplink: a veth to an "internet" namespace; the router's own 2001:db8:X:1::2/64,
 *   gateway 2001:db8:X:1::1 (the namespace), uplink MTU 1400. The internet
 *   routes the VM prefixes (and net30's outside prefix) to 2001:db8:X:1::2, as an
 *   upstream must (README "IPv6 routing"); a host 2001:db8:X:ff::80 on its loopback
 *   serves HTTP that answers with the client's address.
 *
 * - SLAAC gives each VM its address and, now that the router routes, a default
 *   route through the gateway's link-local address (router lifetime 1800 s);
 * - ping -6 a -> c (interconnected) works, a -> e does not (administratively
 *   prohibited, counted);
 * - ping -6 and curl -6 from a reach the internet host, which sees a's own address
 *   (routed); from d it sees d's address in the outside prefix (NPTv6), and d gets
 *   the answers;
 * - Packet Too Big: a ping of 1448 bytes to the internet is too big for the
 *   uplink's 1400 and a's kernel caches PMTU 1400 for it; one to c is too big for
 *   net20's 1280 and a caches 1280; the next ones pass (fragmented by a);
 * - 2 MB up and down over TCP from a (routed) and d (NPTv6): the VMs' GSO
 *   super-frames are judged by their segment size against the uplink's MTU;
 * - hop limit: traceroute6 from a shows the gateway as the first hop (Time Exceeded);
 * - a reload to `uplink.ipv6.address: slaac`: dnsmasq's RAs (ra-only) in the
 *   internet give the uplink its EUI-64 address and default router, and the VMs
 *   go out again once the internet routes their prefixes to that address;
 * - router show and the metrics show the IPv6 side (uplink address, mode, router
 *   lifetimes, counters).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, startDaemon, toYaml } from './helpers/daemon.js';
import { makeInternet, type Internet } from './helpers/inet.js';
import { addrs6, canon, eui64, makeV6Vm, ping6, waitAddr, type V6Vm } from './helpers/ipv6.js';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PREFIX, cleanup, freePort, ifname, nsExec, nsExecR, q, tempDir, toolFile, waitFor } from './helpers/run.js';
import { Background } from './helpers/vm.js';

const X = (20 + (parseInt(PREFIX.slice(1), 16) % 200)).toString(16);
const P = (n: number | string): string => `2001:db8:${X}:${n}`;
const UP = `${P(1)}::2`;
const INET6 = `${P(1)}::1`;
const FAR6 = `${P('ff')}::80`;
const OUT30 = `${P(130)}`;
const BR = 'br0';
const T = { a: ifname('ra'), c: ifname('rc'), d: ifname('rd'), e: ifname('re') };

/** An HTTP server on [::]:8000 that answers with the client's address. */
const WHO = String.raw`
import http.server, socket
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = b'x' * 2000000 if self.path == '/big' else (self.client_address[0] + '\n').encode()
        self.send_response(200); self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)
    def do_PUT(self):
        n, left = 0, int(self.headers['Content-Length'])
        while left > 0:
            d = self.rfile.read(min(left, 65536))
            if not d: break
            n += len(d); left -= len(d)
        b = ('%d\n' % n).encode()
        self.send_response(200); self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
class S(http.server.HTTPServer):
    address_family = socket.AF_INET6
S(('::', 8000), H).serve_forever()
`;

function config(uplink: string, metricsPort: number, slaac = false): object {
  const access = (vid: number) => ({ type: 'tap', vlan: { mode: 'access', vid } });
  const net = (vid: number, ipv6: object) => ({ bridge: BR, vlan: vid, address: `10.${vid}.${parseInt(X, 16)}.1/24`, ipv6: { ra: { interval: 30 }, ...ipv6 } });
  return {
    metrics: { listen: `127.0.0.1:${metricsPort}` },
    bridges: { [BR]: { ports: { [T.a]: access(10), [T.c]: access(20), [T.d]: access(30), [T.e]: access(40) } } },
    routers: {
      r1: {
        uplink: { interface: uplink, address: '198.51.100.2/24', gateway: '198.51.100.1', ipv6: slaac ? { address: 'slaac', mtu: 1400 } : { address: `${UP}/64`, gateway: INET6, mtu: 1400 } },
        interconnect: [['net10', 'net20']],
        networks: {
          net10: net(10, { address: `${P(10)}::1/64` }),
          net20: net(20, { address: `${P(20)}::1/64`, ra: { interval: 30, mtu: 1280 } }),
          net30: net(30, { address: `fd00:${X}:30::1/64`, npt: `${OUT30}::/64` }),
          net40: net(40, { address: `${P(40)}::1/64` }),
        },
      },
    },
  };
}

describe('IPv6 routing: between networks, routed and NPTv6 to the uplink, Packet Too Big, hop limit', () => {
  let d: Daemon;
  let inet: Internet;
  let metricsPort: number;
  let www: Background;
  let ra: Background | undefined;
  const vm: Record<'a' | 'c' | 'd' | 'e', V6Vm> = {} as never;
  const addr: Record<'a' | 'c' | 'd' | 'e', string> = {} as never;
  const routerView = async (): Promise<any> => (await d.ok(['router', 'show', 'r1'], { json: true })).json[0];

  beforeAll(async () => {
    inet = await makeInternet('i6');
    await nsExec(inet.ns, [
      'sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0 net.ipv6.conf.lo.disable_ipv6=0',
      `sysctl -qw net.ipv6.conf.${inet.ifname}.disable_ipv6=0 net.ipv6.conf.${inet.ifname}.accept_ra=0`,
      `ip -6 addr add ${INET6}/64 dev ${q(inet.ifname)} nodad`,
      `ip -6 addr add ${FAR6}/128 dev lo`,
      ...[10, 20, 40, 130].map((n) => `ip -6 route add ${P(n)}::/64 via ${UP}`),
    ].join(' && '));
    www = new Background(inet.ns, `/usr/bin/python3 -u ${q(toolFile('who6.py', WHO))}`);
    metricsPort = await freePort();
    d = await startDaemon(config(inet.uplink, metricsPort));
    [vm.a, vm.c, vm.d, vm.e] = await Promise.all([makeV6Vm('ra', T.a), makeV6Vm('rc', T.c), makeV6Vm('rd', T.d), makeV6Vm('re', T.e)]);
    // The SLAAC address: the /64 and the MAC's EUI-64 identifier.
    const slaac = (p64: string, mac: string): string => canon(`${p64}:${eui64(mac)}`);
    addr.a = slaac(P(10), vm.a.mac);
    addr.c = slaac(P(20), vm.c.mac);
    addr.d = slaac(`fd00:${X}:30:0`, vm.d.mac);
    addr.e = slaac(P(40), vm.e.mac);
    await waitFor('the uplink to be up', async () => String((await routerView()).uplink?.state) === 'up');
    await waitFor('the HTTP server', async () => /:8000\s/.test(await nsExec(inet.ns, 'ss -Hltn')), { timeoutMs: 10_000, intervalMs: 100 });
  });

  afterAll(async () => {
    await ra?.stop();
    await www?.stop();
    await d?.stop();
    await cleanup();
  });

  it('SLAAC addresses, and a default route through the gateway now that the router routes IPv6', async () => {
    await Promise.all((['a', 'c', 'd', 'e'] as const).map((k) => waitAddr(vm[k], addr[k])));
    for (const k of ['a', 'd'] as const) {
      await waitFor(`${k} has a default route`, async () => /^default via fe80::/m.test(await nsExec(vm[k].ns, 'ip -6 route show default')), { timeoutMs: 15_000, intervalMs: 200 });
    }
    const n10 = (await routerView()).networks.find((n: any) => n.name === 'net10');
    expect(n10.ipv6.routerLifetime).toBe(90);
    expect((await addrs6(vm.a)).some((x) => x.local === addr.a)).toBe(true);
  });

  it('ping -6 between interconnected networks works; to a network not interconnected it is refused (prohibited)', async () => {
    await waitFor('c has a default route', async () => /^default via/m.test(await nsExec(vm.c.ns, 'ip -6 route show default')), { timeoutMs: 15_000, intervalMs: 200 });
    expect(await ping6(vm.a, addr.c)).toBe(true);
    expect(await ping6(vm.c, addr.a)).toBe(true);
    const before = (await routerView()).ipv6.counters.prohibited;
    expect(await ping6(vm.a, addr.e, 2)).toBe(false);
    const r = await nsExecR(vm.a.ns, `busybox ping -6 -c 1 -W 2 ${q(addr.e)}`, { timeoutMs: 10_000 });
    expect(r.code).not.toBe(0);
    expect((await routerView()).ipv6.counters.prohibited).toBeGreaterThan(before);
    expect((await routerView()).ipv6.counters.between).toBeGreaterThanOrEqual(6);
  });

  it('routed to the uplink: ping -6 and curl -6 reach the internet host, which sees the VM\'s own address', async () => {
    expect(await ping6(vm.a, FAR6)).toBe(true);
    const r = await nsExecR(vm.a.ns, `curl -6 -sS -m 5 http://[${FAR6}]:8000/`, { timeoutMs: 15_000 });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe(addr.a);
    expect(await ping6(vm.a, UP)).toBe(true);
  });

  it('NPTv6: d reaches the internet host, which sees d\'s address in the outside prefix', async () => {
    await waitFor('d has a default route', async () => /^default via/m.test(await nsExec(vm.d.ns, 'ip -6 route show default')), { timeoutMs: 15_000, intervalMs: 200 });
    expect(await ping6(vm.d, FAR6)).toBe(true);
    const r = await nsExecR(vm.d.ns, `curl -6 -sS -m 5 http://[${FAR6}]:8000/`, { timeoutMs: 15_000 });
    expect(r.stderr).toBe('');
    const seen = r.stdout.trim();
    expect(seen.startsWith(`${OUT30}:`)).toBe(true);
    // The identifier's last words are kept (one word carries the checksum-neutral adjustment).
    expect(seen.split(':').slice(-2).join(':')).toBe(addr.d.split(':').slice(-2).join(':'));
    // And the internet can reach d at that address (stateless: no session needed first).
    const back = await nsExecR(inet.ns, `ping -6 -c 2 -W 2 ${q(seen)} || busybox ping -6 -c 2 -W 2 ${q(seen)}`, { timeoutMs: 15_000 });
    expect(back.stdout).toMatch(/bytes from/);
  });

  it('Packet Too Big: the uplink\'s MTU and the egress network\'s reach the VM\'s PMTU cache, and later pings pass', async () => {
    const before = (await routerView()).ipv6.counters.tooBig;
    await nsExecR(vm.a.ns, `busybox ping -6 -c 3 -i 0.3 -W 2 -s 1400 ${q(FAR6)}`, { timeoutMs: 15_000 });
    expect(await nsExec(vm.a.ns, `ip -6 route get ${q(FAR6)}`)).toMatch(/mtu 1400/);
    expect(await ping6(vm.a, FAR6)).toBe(true);
    const big = await nsExecR(vm.a.ns, `busybox ping -6 -c 2 -i 0.3 -W 2 -s 1400 ${q(FAR6)}`, { timeoutMs: 15_000 });
    expect(big.stdout).toMatch(/bytes from/);
    await nsExecR(vm.a.ns, `busybox ping -6 -c 3 -i 0.3 -W 2 -s 1300 ${q(addr.c)}`, { timeoutMs: 15_000 });
    expect(await nsExec(vm.a.ns, `ip -6 route get ${q(addr.c)}`)).toMatch(/mtu 1280/);
    expect((await routerView()).ipv6.counters.tooBig).toBeGreaterThanOrEqual(before + 2);
  });

  it('TCP in bulk both ways through the uplink (GSO super-frames judged by their segments): 2 MB up and down, routed and NPTv6', async () => {
    for (const k of ['a', 'd'] as const) {
      const file = `/tmp/${PREFIX}-up-${k}`;
      await nsExec(vm[k].ns, `head -c 2000000 /dev/zero > ${q(file)}`);
      const up = await nsExecR(vm[k].ns, `curl -6 -sS -m 20 -T ${q(file)} http://[${FAR6}]:8000/up; rm -f ${q(file)}`, { timeoutMs: 30_000 });
      expect(up.stderr).toBe('');
      expect(up.stdout.trim()).toBe('2000000');
      const down = await nsExecR(vm[k].ns, `curl -6 -sS -m 20 -o /dev/null -w '%{size_download}' http://[${FAR6}]:8000/big`, { timeoutMs: 30_000 });
      expect(down.stderr).toBe('');
      expect(down.stdout.trim()).toBe('2000000');
    }
  });

  it('hop limit: traceroute6 sees the gateway as the first hop (Time Exceeded from it), then the internet host', async () => {
    const r = await nsExecR(vm.a.ns, `traceroute6 -n -q 1 -w 2 -m 4 ${q(FAR6)}`, { timeoutMs: 30_000 });
    expect(r.stdout).toMatch(new RegExp(`^\\s*1\\s+${P(10)}::1\\s`, 'm'));
    expect(r.stdout).toMatch(new RegExp(`^\\s*2\\s+${FAR6}\\s`, 'm'));
    expect((await routerView()).ipv6.counters.hopLimitExceeded).toBeGreaterThan(0);
  });

  it('router show and the metrics show the uplink\'s IPv6, the router lifetimes and the IPv6 counters', async () => {
    const r = await routerView();
    expect(r.ipv6.uplink).toMatchObject({ address: `${UP}/64`, mode: 'static', gateway: INET6, mtu: 1400 });
    expect(r.ipv6.uplink.neighbours).toBeGreaterThanOrEqual(1);
    expect(r.networks.find((n: any) => n.name === 'net30').ipv6.neighbours).toBeGreaterThanOrEqual(1);
    const text = (await d.ok(['router', 'show', 'r1'])).stdout;
    expect(text).toContain(`uplink ipv6: ${UP}/64 static, gateway ${INET6}, mtu 1400`);
    expect(text).toMatch(/ipv6 routed: between \d+, to uplink \d+, from uplink \d+; refused: prohibited [1-9]/);
    expect(text).toMatch(/net10\s.*\s90s\s+\d+/);
    const m = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const v = (path: string): number => Number(new RegExp(`^vswitch_router_ipv6_packets_total\\{router="r1",path="${path}"\\} (\\S+)$`, 'm').exec(m)?.[1] ?? NaN);
    expect(v('between')).toBeGreaterThan(0);
    expect(v('to_uplink')).toBeGreaterThan(0);
    expect(v('from_uplink')).toBeGreaterThan(0);
    expect(v('prohibited')).toBeGreaterThan(0);
    expect(v('too_big')).toBeGreaterThan(0);
  });

  it('SLAAC on the uplink (reload): the address and the default router from the segment\'s RAs (dnsmasq); VMs go out again', async () => {
    const dir = tempDir('ra');
    ra = new Background(inet.ns, `/usr/sbin/dnsmasq -k -u root --conf-file=/dev/null --no-resolv --no-hosts --port=0 --interface=${inet.ifname} `
      + `--enable-ra --dhcp-range=${P(1)}::,ra-only,64 --ra-param=${inet.ifname},10,1800 --pid-file=${join(dir, 'dnsmasq.pid')} --log-facility=-`);
    writeFileSync(d.configFile, toYaml({ ...(config(inet.uplink, metricsPort, true) as object), stateDir: `${d.dir}/state` }));
    await d.ok(['reload']);
    const mac = String((await routerView()).uplink.mac);
    const want = `${canon(`${P(1)}:${eui64(mac)}`)}/64`;
    await waitFor('the uplink\'s SLAAC address and router', async () => {
      const u = (await routerView()).ipv6.uplink;
      return u?.address === want && String(u.gateway).startsWith('fe80::');
    }, { timeoutMs: 20_000, intervalMs: 250 });
    const u = (await routerView()).ipv6.uplink;
    expect(u).toMatchObject({ mode: 'slaac', gatewaySource: 'ra' });
    expect(u.counters.raReceived).toBeGreaterThan(0);
    // The upstream routes the VM prefixes to the uplink's new address.
    const addrOnly = want.split('/')[0];
    await nsExec(inet.ns, [10, 20, 40, 130].map((n) => `ip -6 route replace ${P(n)}::/64 via ${addrOnly}`).join(' && '));
    expect((await d.ok(['router', 'show', 'r1'])).stdout).toContain(`uplink ipv6: ${want} slaac`);
    await waitFor('a reaches the internet again', () => ping6(vm.a, FAR6, 1), { timeoutMs: 20_000, intervalMs: 500 });
    const r = await nsExecR(vm.a.ns, `curl -6 -sS -m 5 http://[${FAR6}]:8000/`, { timeoutMs: 15_000 });
    expect(r.stdout.trim()).toBe(addr.a);
  });
});
