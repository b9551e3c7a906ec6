import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { defaultConfig, loadConfig, parseConfig } from './config.js';

const F = '/etc/vswitch/test.yaml';

function errorOf(text: string): string {
  try {
    parseConfig(text, F);
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('expected a config error');
}

describe('config', () => {
  it('the built-in default is one empty bridge br0: no router, no uplink, nothing attached', () => {
    const c = defaultConfig();
    expect(Object.keys(c.bridges)).toEqual(['br0']);
    expect(c.bridges.br0).toMatchObject({ ageing: 300, maxMacs: 8192, ports: {}, fdb: [] });
    expect(c.control.mode).toBe('0600');
    expect(c.routers).toEqual({});
  });

  it('the demo lab\'s config (scripts/lab.yaml) is a NAT lab: bridge br0, router r0 with VLAN 10 and 20 networks', () => {
    const c = loadConfig(fileURLToPath(new URL('../../../scripts/lab.yaml', import.meta.url)));
    expect(Object.keys(c.bridges)).toEqual(['br0']);
    expect(c.bridges.br0).toMatchObject({ ageing: 300, maxMacs: 8192, ports: {}, fdb: [] });
    expect(c.routers.r0.uplink).toMatchObject({ interface: 'vswup0', address: '172.31.255.2/24' });
    expect(Object.entries(c.routers.r0.networks).map(([n, v]) => [n, v.vlan, v.address])).toEqual([
      ['net10', 10, '10.0.10.1/24'], ['net20', 20, '10.0.20.1/24'],
    ]);
  });

  it('the servers\' limits: defaults, partial sections, and bad values with their key path', () => {
    const c = defaultConfig();
    expect(c.metrics).toEqual({ listen: '127.0.0.1:9464', maxConnections: 64, idleTimeout: 10, headersTimeout: 5, requestTimeout: 10, cacheInterval: 1, workerNice: 10 });
    expect(c.control).toEqual({ mode: '0600', maxConnections: 64, maxRequestBytes: 65536 });
    const p = parseConfig('metrics: { listen: off, cacheInterval: 0 }\ncontrol: { maxConnections: 4 }\n', F);
    expect(p.metrics).toMatchObject({ listen: 'off', maxConnections: 64, cacheInterval: 0, idleTimeout: 10 });
    expect(p.control).toEqual({ mode: '0600', maxConnections: 4, maxRequestBytes: 65536 });
    expect(errorOf('metrics: { headersTimeout: 20 }\n')).toMatch(/metrics\.headersTimeout .*must not exceed requestTimeout/);
    expect(errorOf('metrics: { maxConnections: 0 }\n')).toMatch(/metrics\.maxConnections/);
    expect(errorOf('metrics: { idleTimeout: 0 }\n')).toMatch(/metrics\.idleTimeout/);
    expect(errorOf('metrics: { workerNice: -1 }\n')).toMatch(/metrics\.workerNice .*never gets more of the CPU than the data plane/);
    expect(errorOf('metrics: { workerNice: 20 }\n')).toMatch(/metrics\.workerNice/);
    expect(errorOf('control: { maxRequestBytes: 10 }\n')).toMatch(/control\.maxRequestBytes/);
  });

  it('ownSession: unset by default, a boolean', () => {
    expect(defaultConfig().ownSession).toBeUndefined();
    expect(parseConfig('ownSession: true\n', F).ownSession).toBe(true);
    expect(errorOf('ownSession: 1\n')).toMatch(/ownSession/);
    expect(errorOf('ownSession: own\n')).toMatch(/ownSession/);
  });

  it('nice (the forwarding loop\'s thread): unset by default, -20 to 19', () => {
    expect(defaultConfig().nice).toBeUndefined();
    expect(parseConfig('nice: -10\n', F).nice).toBe(-10);
    expect(errorOf('nice: -21\n')).toMatch(/nice/);
    expect(errorOf('nice: 20\n')).toMatch(/nice/);
    expect(errorOf('nice: 1.5\n')).toMatch(/nice/);
  });

  it('accepts every port and VLAN form and fills defaults', () => {
    const c = parseConfig(`
bridges:
  br0:
    ageing: 60
    ports:
      vm1: { type: tap, vlan: { mode: access, vid: 10 } }
      up0: { type: attach, vlan: { mode: trunk, allowed: [10, 20], native: 1 } }
      vm2:
        type: tap
        persistent: true
        maxMacs: 4
        vlan: { mode: hybrid, vlans: [{ vid: 10, pvid: true, untagged: true }, { vid: 30 }] }
    fdb:
      - { mac: "02:00:00:00:00:01", port: vm1, vlan: 10 }
`, F);
    expect(c.bridges.br0.ageing).toBe(60);
    expect(c.bridges.br0.ports.vm1).toEqual({ type: 'tap', persistent: false, maxMacs: 0, vlan: { mode: 'access', vid: 10 } });
    expect(c.bridges.br0.ports.up0.vlan).toEqual({ mode: 'trunk', allowed: [10, 20], native: 1 });
    expect(c.bridges.br0.ports.vm2.maxMacs).toBe(4);
  });

  it('router rate limits: the defaults when absent, 0 = off, partial sections filled; bad values name their key', () => {
    const base = `bridges: { br0: {} }
routers:
  r0:
    networks: { net10: { bridge: br0, vlan: 10, address: 10.0.10.1/24 } }
`;
    const c = parseConfig(base, F);
    expect(c.routers.r0.limits).toEqual({ dhcp: 10, arp: 100, icmp: 200, dns: 200, icmpErrors: 50, nd: 100 });
    expect(c.routers.r0.nat.maxSessionsPerPort).toBeUndefined();
    const d = parseConfig(`${base}    limits: { icmp: 0, dhcp: 3 }\n    nat: { maxSessionsPerHost: 100, maxSessionsPerPort: 300 }\n`, F);
    expect(d.routers.r0.limits).toEqual({ dhcp: 3, arp: 100, icmp: 0, dns: 200, icmpErrors: 50, nd: 100 });
    expect(d.routers.r0.nat).toMatchObject({ maxSessionsPerHost: 100, maxSessionsPerPort: 300 });
    expect(errorOf(`${base}    limits: { arp: -1 }\n`)).toBe(`${F}: routers.r0.limits.arp (line 5): must be 0 (off) or more packets per second`);
    expect(errorOf(`${base}    limits: { dns: 2.5 }\n`)).toMatch(/routers\.r0\.limits\.dns .*whole number/);
    expect(errorOf(`${base}    limits: { ipv6: 3 }\n`)).toMatch(/routers\.r0\.limits/);
  });

  it('names file, key path and line for a value out of range', () => {
    const msg = errorOf(`bridges:
  br0:
    ports:
      vm1:
        type: tap
        vlan:
          mode: access
          vid: 5000
`);
    expect(msg).toBe(`${F}: bridges.br0.ports.vm1.vlan.vid (line 8): must be 1-4094, got 5000`);
  });

  it('reports unknown keys, bad enums, missing fields and cross references', () => {
    expect(errorOf('bridges:\n  br0:\n    agening: 3\n')).toMatch(/bridges\.br0 \(line 3\): unknown key agening/);
    expect(errorOf('bridges:\n  br0:\n    ports:\n      vm1: { type: veth }\n')).toMatch(/bridges\.br0\.ports\.vm1\.type \(line 4\): must be tap, attach, socket or bond/);
    expect(errorOf('bridges:\n  br0:\n    ports:\n      vm1: { vlan: { mode: access, vid: 3 } }\n')).toMatch(/bridges\.br0\.ports\.vm1\.type \(line 4\): must be tap, attach, socket or bond/);
    expect(errorOf('bridges:\n  br0:\n    ports:\n      vm1: { type: tap, vlan: { mode: tagged } }\n')).toMatch(/bridges\.br0\.ports\.vm1\.vlan\.mode \(line 4\): must have mode/);
    expect(errorOf('bridges:\n  br0:\n    fdb:\n      - { mac: "02:00:00:00:00:01", port: nope }\n')).toMatch(/bridges\.br0\.fdb\.0\.port \(line 4\): no port nope in bridge br0/);
    expect(errorOf('bridges:\n  br0:\n    fdb:\n      - { mac: "zz", port: a }\n')).toMatch(/bridges\.br0\.fdb\.0\.mac \(line 4\): must be a MAC address/);
    expect(errorOf('bridges:\n  a:\n    ports: { vm1: { type: tap } }\n  b:\n    ports: { vm1: { type: tap } }\n'))
      .toMatch(/bridges\.b\.ports\.vm1 \(line 5\): port is already in bridge a/);
    expect(errorOf('bridges:\n  br0:\n    ports:\n      waytoolonginterfacename: { type: tap }\n')).toMatch(/bridges\.br0\.ports\.waytoolonginterfacename.*interface name/);
    expect(errorOf('control:\n  mode: 644x\n')).toMatch(/control\.mode \(line 2\): must be an octal mode/);
  });

  it('reports YAML syntax errors with line and column', () => {
    expect(errorOf('bridges:\n  br0: {\n')).toMatch(new RegExp(`^${F}: line \\d+, column \\d+: `));
    expect(errorOf('bridges:\n  br0: {}\n  br0: {}\n')).toMatch(/line 3, column 3: Map keys must be unique/);
  });
});

describe('config: socket ports', () => {
  it('accepts a socket port with path, mode, owner/group and a VLAN', () => {
    const c = parseConfig(`
bridges:
  br0:
    ports:
      vm1: { type: socket, path: /run/vswitch/vm1.sock, vlan: { mode: access, vid: 10 } }
      vm2: { type: socket, path: /run/vswitch/vm2.sock, mode: "0660", group: 64 }
      vm3: { type: socket, path: /run/qemu/vm3.sock, connect: true }
`, F);
    expect(c.bridges.br0.ports.vm3).toMatchObject({ type: 'socket', connect: true });
    expect(c.bridges.br0.ports.vm1).toMatchObject({ type: 'socket', path: '/run/vswitch/vm1.sock', persistent: false });
    expect(c.bridges.br0.ports.vm1.mode).toBeUndefined(); // 0600 when absent
    expect(c.bridges.br0.ports.vm2).toMatchObject({ mode: '0660', group: 64 });
  });

  it('names the key and line of every socket-port mistake', () => {
    expect(errorOf('bridges:\n  br0:\n    ports:\n      vm1: { type: socket }\n'))
      .toBe(`${F}: bridges.br0.ports.vm1.path (line 4): is required for a socket port`);
    expect(errorOf('bridges:\n  br0:\n    ports:\n      vm1: { type: socket, path: vm1.sock }\n'))
      .toMatch(/bridges\.br0\.ports\.vm1\.path \(line 4\): must be an absolute path/);
    expect(errorOf(`bridges:\n  br0:\n    ports:\n      vm1: { type: socket, path: /${'a'.repeat(120)} }\n`))
      .toMatch(/at most 107 bytes/);
    expect(errorOf('bridges:\n  br0:\n    ports:\n      vm1: { type: socket, path: /x.sock, mode: "rw" }\n'))
      .toMatch(/vm1\.mode \(line 4\): must be an octal mode/);
    expect(errorOf('bridges:\n  br0:\n    ports:\n      vm1: { type: socket, path: /x.sock, persistent: true }\n'))
      .toMatch(/vm1\.persistent \(line 4\): applies to tap ports only/);
    expect(errorOf('bridges:\n  br0:\n    ports:\n      vm1: { type: tap, path: /x.sock }\n'))
      .toMatch(/vm1\.path \(line 4\): applies to socket ports only/);
    expect(errorOf('bridges:\n  br0:\n    ports:\n      vm1: { type: tap, mode: "0600" }\n'))
      .toMatch(/vm1\.mode \(line 4\): applies to socket ports only/);
    expect(errorOf('bridges:\n  br0:\n    ports:\n      vm1: { type: socket, path: /x.sock }\n  br1:\n    ports:\n      vm2: { type: socket, path: /x.sock }\n'))
      .toMatch(/bridges\.br1\.ports\.vm2\.path \(line 7\): is already the socket of port vm1/);
    expect(errorOf('bridges:\n  br0:\n    ports:\n      vm1: { type: socket, path: /x.sock, connect: true, mode: "0660" }\n'))
      .toMatch(/vm1\.mode \(line 4\): applies to a listening socket port only/);
    expect(errorOf('bridges:\n  br0:\n    ports:\n      vm1: { type: tap, connect: true }\n'))
      .toMatch(/vm1\.connect \(line 4\): applies to socket ports only/);
    expect(errorOf('bridges:\n  br0:\n    ports:\n      vm1: { type: vde }\n'))
      .toMatch(/must be tap, attach, socket or bond/);
  });
});

describe('config: host uplink (NAT through the host\'s own address)', () => {
  const NET = '    networks:\n      net10: { bridge: br0, vlan: 10, address: 10.0.10.1/24 }\n';
  const head = 'bridges:\n  br0: {}\nrouters:\n  r0:\n';

  it('accepts kind host with resolvers, resolv.conf, icmp and a listen address, and keeps interface uplinks as they were', () => {
    const c = parseConfig(`${head}    uplink: { kind: host, dns: [192.0.2.53], icmp: false, listen: 127.0.0.1 }\n${NET}`, F);
    expect(c.routers.r0.uplink).toEqual({ kind: 'host', dns: ['192.0.2.53'], icmp: false, listen: '127.0.0.1' });
    const r = parseConfig(`${head}    uplink: { kind: host, resolvConf: /run/resolv.conf }\n    forwards: [{ proto: tcp, port: 2222, to: "10.0.10.5:22" }]\n${NET}`, F);
    expect(r.routers.r0.uplink?.resolvConf).toBe('/run/resolv.conf');
    const i = parseConfig(`${head}    uplink: { interface: eth1, address: 198.51.100.2/24 }\n${NET}`, F);
    expect(i.routers.r0.uplink).toMatchObject({ kind: 'interface', interface: 'eth1' });
  });

  it('names the key and line of a key that does not fit the uplink kind', () => {
    expect(errorOf(`${head}    uplink: { kind: host, interface: eth1 }\n${NET}`))
      .toBe(`${F}: routers.r0.uplink.interface (line 5): is for kind: interface; a host uplink has no interface or address of its own`);
    expect(errorOf(`${head}    uplink: { kind: host, address: dhcp }\n${NET}`)).toMatch(/routers\.r0\.uplink\.address \(line 5\): is for kind: interface/);
    expect(errorOf(`${head}    uplink: { interface: eth1, address: 198.51.100.2/24, dns: [192.0.2.53] }\n${NET}`))
      .toMatch(/routers\.r0\.uplink\.dns \(line 5\): is for kind: host/);
    expect(errorOf(`${head}    uplink: { address: 198.51.100.2/24 }\n${NET}`)).toMatch(/routers\.r0\.uplink\.interface \(line 5\): is required/);
    expect(errorOf(`${head}    uplink: { interface: eth1 }\n${NET}`)).toMatch(/routers\.r0\.uplink\.address \(line 5\): is required/);
    expect(errorOf(`${head}    uplink: { kind: cloud }\n${NET}`)).toMatch(/routers\.r0\.uplink\.kind \(line 5\): must be interface or host/);
    expect(errorOf(`${head}    uplink: { kind: host, dns: [resolver] }\n${NET}`)).toMatch(/routers\.r0\.uplink\.dns\.0 \(line 5\): must be an IPv4 address/);
  });

  it('rcvbuf: auto or bytes (65536 to 1 GiB), host uplinks only', () => {
    expect(parseConfig(`${head}    uplink: { kind: host, rcvbuf: 2097152 }\n${NET}`, F).routers.r0.uplink?.rcvbuf).toBe(2097152);
    expect(parseConfig(`${head}    uplink: { kind: host, rcvbuf: auto }\n${NET}`, F).routers.r0.uplink?.rcvbuf).toBe('auto');
    expect(parseConfig(`${head}    uplink: { kind: host }\n${NET}`, F).routers.r0.uplink?.rcvbuf).toBeUndefined();
    for (const bad of ['1000', '2000000000', 'big', '65536.5']) {
      expect(errorOf(`${head}    uplink: { kind: host, rcvbuf: ${bad} }\n${NET}`), bad).toMatch(/routers\.r0\.uplink\.rcvbuf \(line 5\): must be auto or bytes/);
    }
    expect(errorOf(`${head}    uplink: { interface: eth1, address: 198.51.100.2/24, rcvbuf: 2097152 }\n${NET}`))
      .toMatch(/routers\.r0\.uplink\.rcvbuf \(line 5\): is for kind: host/);
  });
});

// Issue 12 validation gaps: on main these files were accepted (two DHCP servers on one VLAN,
// an uplink also attached to a bridge, names with ':' or a leading '-', "." and "..").
describe('config: validation (one DHCP server per VLAN, uplinks, interface names)', () => {
  const net = (name: string, vlan: number, third: number, dhcp = true): string =>
    `      ${name}: { bridge: br0, vlan: ${vlan}, address: 10.0.${third}.1/24${dhcp ? `, dhcp: { pool: ["10.0.${third}.100-10.0.${third}.110"] }` : ''} }\n`;

  it('refuses two DHCP servers on one bridge and VLAN, with the key path of the second', () => {
    expect(errorOf(`bridges:\n  br0: {}\nrouters:\n  r0:\n    networks:\n${net('n1', 10, 1)}  r1:\n    networks:\n${net('n2', 10, 2)}`))
      .toBe(`${F}: routers.r1.networks.n2.dhcp (line 9): VLAN 10 of bridge br0 already has a DHCP server (routers.r0.networks.n1); one per VLAN`);
    expect(errorOf(`bridges:\n  br0: {}\nrouters:\n  r0:\n    networks:\n${net('n1', 10, 1)}${net('n2', 10, 2)}`))
      .toMatch(/routers\.r0\.networks\.n2\.dhcp \(line 7\): VLAN 10 of bridge br0 already has a DHCP server/);
    // Without DHCP, or on another VLAN, two networks are fine.
    parseConfig(`bridges:\n  br0: {}\nrouters:\n  r0:\n    networks:\n${net('n1', 10, 1)}${net('n2', 10, 2, false)}${net('n3', 20, 3)}`, F);
  });

  it('IPv6 of a router network: defaults, every key, and each mistake with its key path', () => {
    const net = (ipv6: string, vlan = 10, name = 'n10', router = 'r'): string =>
      `routers:\n  ${router}:\n    networks:\n      ${name}: { bridge: br0, vlan: ${vlan}, address: 10.0.${vlan}.1/24, ipv6: ${ipv6} }\n`;
    const base = 'bridges:\n  br0: {}\n';
    const c = parseConfig(base + net('{ address: "fd00:10::1/64" }'), F);
    expect(c.routers.r.networks.n10.ipv6).toEqual({
      address: 'fd00:10::1/64', mode: 'slaac', ra: { interval: 600, validLifetime: 86400, preferredLifetime: 14400, dnssl: [] },
    });
    // rdnss absent (the gateway by default, daemon/dns6.ts) is not the same as rdnss: [] (none).
    expect(parseConfig(base + net('{ address: "fd00:10::1/64", ra: { rdnss: [] } }'), F).routers.r.networks.n10.ipv6?.ra.rdnss).toEqual([]);
    const all = parseConfig(base + net('{ address: "fd00:10::1/64", mode: both, ra: { interval: 30, validLifetime: 3600, preferredLifetime: 1800, mtu: 1400, rdnss: ["fd00:10::53"], dnssl: [lab.example] } }'), F);
    expect(all.routers.r.networks.n10.ipv6?.ra).toEqual({ interval: 30, validLifetime: 3600, preferredLifetime: 1800, mtu: 1400, rdnss: ['fd00:10::53'], dnssl: ['lab.example'] });
    const bad = (ipv6: string): string => errorOf(base + net(ipv6));
    expect(bad('{ address: "fd00:10::1/48" }')).toMatch(/routers\.r\.networks\.n10\.ipv6\.address .*prefix must be \/64/);
    expect(bad('{ address: "fd00:10::/64" }')).toMatch(/ipv6\.address .*Subnet-Router anycast.*fd00:10::1\/64/);
    expect(bad('{ address: "fe80::1/64" }')).toMatch(/ipv6\.address .*link-local/);
    expect(bad('{ address: "ff02::1/64" }')).toMatch(/ipv6\.address .*unicast/);
    expect(bad('{ address: "fd00:10::1" }')).toMatch(/ipv6\.address .*prefix length/);
    expect(bad('{ address: "10.0.0.1/24" }')).toMatch(/ipv6\.address/);
    expect(bad('{ address: "fd00:10::1/64", mode: dhcp }')).toMatch(/ipv6\.mode .*slaac, dhcpv6 or both/);
    expect(bad('{ address: "fd00:10::1/64", ra: { interval: 2 } }')).toMatch(/ipv6\.ra\.interval .*4-1800/);
    expect(bad('{ address: "fd00:10::1/64", ra: { mtu: 1000 } }')).toMatch(/ipv6\.ra\.mtu .*1280/);
    expect(bad('{ address: "fd00:10::1/64", ra: { validLifetime: 10, preferredLifetime: 20 } }')).toMatch(/ipv6\.ra\.preferredLifetime .*must not exceed validLifetime/);
    expect(bad('{ address: "fd00:10::1/64", ra: { rdnss: ["ff02::1"] } }')).toMatch(/ipv6\.ra\.rdnss\.0 .*unicast/);
    expect(bad('{ address: "fd00:10::1/64", ra: { rdnss: ["10.0.0.53"] } }')).toMatch(/ipv6\.ra\.rdnss\.0 .*IPv6 address/);
    expect(bad('{ address: "fd00:10::1/64", ra: { dnssl: ["a..b"] } }')).toMatch(/ipv6\.ra\.dnssl\.0 .*domain/);
    expect(bad('{ address: "fd00:10::1/64", ra: { lifetime: 0 } }')).toMatch(/ipv6\.ra .*unknown key lifetime/);
    // One advertiser per bridge/VLAN; one /64 per network.
    const two = base + 'routers:\n  r:\n    networks:\n'
      + '      a: { bridge: br0, vlan: 10, address: 10.0.10.1/24, ipv6: { address: "fd00:10::1/64" } }\n'
      + '      b: { bridge: br0, vlan: 20, address: 10.0.20.1/24, ipv6: { address: "fd00:10::2/64" } }\n'
      + '  s:\n    networks:\n'
      + '      c: { bridge: br0, vlan: 10, address: 10.0.30.1/24, ipv6: { address: "fd00:30::1/64" } }\n';
    const e = errorOf(two);
    expect(e).toMatch(/routers\.r\.networks\.b\.ipv6\.address .*prefix fd00:10::\/64 is already routers\.r\.networks\.a's/);
    expect(e).toMatch(/routers\.s\.networks\.c\.ipv6 .*VLAN 10 of bridge br0 already has IPv6 \(routers\.r\.networks\.a\)/);
  });

  it('IPv6 on the uplink and NPTv6: the keys, and each mistake with its key path', () => {
    const base = 'bridges:\n  br0: {}\nrouters:\n  r:\n';
    const up = (ipv6: string): string => `    uplink: { interface: eth9, address: 198.51.100.2/24${ipv6 ? `, ipv6: ${ipv6}` : ''} }\n`;
    const nets = (npt = '"2001:db8:130::/64"'): string => '    networks:\n'
      + '      a: { bridge: br0, vlan: 10, address: 10.0.10.1/24, ipv6: { address: "2001:db8:10::1/64" } }\n'
      + `      b: { bridge: br0, vlan: 30, address: 10.0.30.1/24, ipv6: { address: "fd00:30::1/64", npt: ${npt} } }\n`;
    const c = parseConfig(base + up('{ address: "2001:db8:1::2/64", gateway: "fe80::1" }') + nets(), F);
    expect(c.routers.r.uplink?.ipv6).toEqual({ address: '2001:db8:1::2/64', gateway: 'fe80::1', mtu: 1500 });
    expect(c.routers.r.networks.b.ipv6?.npt).toBe('2001:db8:130::/64');
    expect(parseConfig(base + up('{ address: slaac, mtu: 1400 }') + nets(), F).routers.r.uplink?.ipv6).toEqual({ address: 'slaac', mtu: 1400 });
    expect(errorOf(base + up('{ address: "fe80::2/64" }') + nets())).toMatch(/routers\.r\.uplink\.ipv6\.address .*global unicast/);
    expect(errorOf(base + up('{ address: dhcp }') + nets())).toMatch(/routers\.r\.uplink\.ipv6\.address .*"slaac" or an IPv6 address/);
    expect(errorOf(base + up('{ address: slaac, gateway: "ff02::2" }') + nets())).toMatch(/uplink\.ipv6\.gateway .*unicast/);
    expect(errorOf(base + up('{ address: slaac, mtu: 1000 }') + nets())).toMatch(/uplink\.ipv6\.mtu .*1280/);
    expect(errorOf(base + up('') + nets())).toMatch(/routers\.r\.networks\.b\.ipv6\.npt .*needs uplink\.ipv6/);
    expect(errorOf(base + up('{ address: slaac }') + nets('"2001:db8:130::/48"'))).toMatch(/ipv6\.npt .*\/64 prefix/);
    expect(errorOf(base + up('{ address: slaac }') + nets('"2001:db8:10::/64"'))).toMatch(/ipv6\.npt .*inside prefix of network a/);
    expect(errorOf(`${base}    uplink: { kind: host, ipv6: { address: slaac } }\n${nets()}`)).toMatch(/routers\.r\.uplink\.ipv6 .*kind: interface/);
  });

  it('DHCPv6 of a router network (ipv6.dhcpv6): every key, the defaults, and each mistake with its key path', () => {
    const net = (ipv6: string): string =>
      `bridges:\n  br0: {}\nrouters:\n  r:\n    networks:\n      n10: { bridge: br0, vlan: 10, address: 10.0.10.1/24, ipv6: ${ipv6} }\n`;
    const c = parseConfig(net('{ address: "fd00:10::1/64", mode: dhcpv6, dhcpv6: { pool: "fd00:10::100-fd00:10::1ff", leaseTime: 600, dns: ["fd00:10::53"], domains: [lab.example], '
      + 'reservations: [{ mac: "52:54:00:00:00:01", ip: "fd00:10::50" }, { duid: "00:01:00:01:2c:5e:aa:bb:52:54:00:00:00:02", ip: "fd00:10::51" }], maxLeasesPerPort: 2 } }'), F);
    expect(c.routers.r.networks.n10.ipv6?.dhcpv6).toEqual({
      pool: 'fd00:10::100-fd00:10::1ff', leaseTime: 600, dns: ['fd00:10::53'], domains: ['lab.example'], maxLeasesPerPort: 2,
      reservations: [{ mac: '52:54:00:00:00:01', ip: 'fd00:10::50' }, { duid: '00:01:00:01:2c:5e:aa:bb:52:54:00:00:00:02', ip: 'fd00:10::51' }],
    });
    // Modes dhcpv6 and both serve DHCPv6 without a section (the default pool).
    parseConfig(net('{ address: "fd00:10::1/64", mode: both }'), F);
    const bad = (ipv6: string): string => errorOf(net(ipv6));
    expect(bad('{ address: "fd00:10::1/64", dhcpv6: {} }')).toMatch(/ipv6\.dhcpv6 .*mode slaac serves no DHCPv6/);
    expect(bad('{ address: "fd00:10::1/64", mode: dhcpv6, dhcpv6: { pool: "fd00:10::100" } }')).toMatch(/ipv6\.dhcpv6\.pool .*range/);
    expect(bad('{ address: "fd00:10::1/64", mode: dhcpv6, dhcpv6: { pool: "fd00:99::100-fd00:99::1ff" } }')).toMatch(/ipv6\.dhcpv6 .*not inside the network's \/64/);
    expect(bad('{ address: "fd00:10::1/64", mode: dhcpv6, dhcpv6: { pool: "fd00:10::1:0:0-fd00:10::2:0:0" } }')).toMatch(/ipv6\.dhcpv6 .*first 96 bits/);
    parseConfig(net('{ address: "fd00:10::1/64", mode: dhcpv6, dhcpv6: { pool: "fd00:10::1:0-fd00:10::1:ffff" } }'), F);
    expect(bad('{ address: "fd00:10::1/64", mode: dhcpv6, dhcpv6: { reservations: [{ ip: "fd00:10::50" }] } }')).toMatch(/reservations\.0 .*exactly one of duid and mac/);
    expect(bad('{ address: "fd00:10::1/64", mode: dhcpv6, dhcpv6: { reservations: [{ mac: "52:54:00:00:00:01", ip: "fd00:10::1" }] } }')).toMatch(/ipv6\.dhcpv6 .*gateway/);
    expect(bad('{ address: "fd00:10::1/64", mode: dhcpv6, dhcpv6: { leaseTime: 10 } }')).toMatch(/ipv6\.dhcpv6\.leaseTime/);
  });

  it('refuses attaching a router\'s uplink interface to a bridge', () => {
    expect(errorOf('bridges:\n  br0:\n    ports:\n      eth1: { type: attach }\nrouters:\n  r0:\n    uplink: { interface: eth1, address: 192.0.2.2/24 }\n'
      + `    networks:\n${net('n1', 10, 1)}`)).toMatch(/bridges\.br0\.ports\.eth1 \(line 4\): is the uplink interface of router r0/);
  });

  it('interface names as the kernel takes them (dev_valid_name), and no leading "-"', () => {
    for (const bad of ['-tap', 'a:b', '..', '.', 'a/b', '"a b"', 'sixteen-bytes-xx']) {
      expect(errorOf(`bridges:\n  br0:\n    ports:\n      ${bad}: { type: tap }\n`), bad).toMatch(/must be an interface name/);
    }
    expect(errorOf('bridges:\n  br0:\n    ports:\n      -tap: { type: tap }\n')).toMatch(/no leading "-"/);
    expect(errorOf('bridges:\n  br0:\n    ports:\n      a:b: { type: tap }\n')).toMatch(/no "\/", ":" or whitespace/);
    const c = parseConfig('bridges:\n  br0:\n    ports:\n      vm.1@x_y-z: { type: tap }\n      fifteen-bytes-x: { type: tap }\n', F);
    expect(Object.keys(c.bridges.br0.ports)).toEqual(['vm.1@x_y-z', 'fifteen-bytes-x']);
  });
});

describe('config: bond ports', () => {
  it('accepts a bond with members and fills mode and LACP defaults', () => {
    const c = parseConfig('bridges:\n  br0:\n    ports:\n      bond0: { type: bond, bond: { members: [eth1, eth2] } }\n', 'x.yaml');
    expect(c.bridges.br0.ports.bond0.bond).toEqual({ members: ['eth1', 'eth2'], mode: 'active-backup', lacp: 'active', lacpRate: 'fast' });
  });

  it('names the key and line of every bond mistake', () => {
    const port = (p: string): string => `bridges:\n  br0:\n    ports:\n      ${p}\n`;
    expect(errorOf(port('bond0: { type: bond }'))).toMatch(/bond0\.bond \(line 4\): is required for a bond port/);
    expect(errorOf(port('vm1: { type: tap, bond: { members: [eth1] } }'))).toMatch(/vm1\.bond \(line 4\): applies to bond ports only/);
    expect(errorOf(port('bond0: { type: bond, bond: { members: [] } }'))).toMatch(/bond0\.bond\.members/);
    expect(errorOf(port('bond0: { type: bond, bond: { members: [eth1, eth1] } }'))).toMatch(/must not repeat an interface/);
    expect(errorOf(port('bond0: { type: bond, bond: { members: [eth1], mode: balance-tcp } }'))).toMatch(/must be active-backup, balance-slb or lacp/);
    expect(errorOf(port('bond0: { type: bond, bond: { members: [eth1], lacpRate: medium } }'))).toMatch(/bond0\.bond\.lacpRate/);
    expect(errorOf('bridges:\n  br0:\n    ports:\n      eth1: { type: attach }\n      bond0: { type: bond, bond: { members: [eth1] } }\n'))
      .toMatch(/bond0\.bond\.members \(line 5\): eth1 is already a port or a member of bond/);
  });
});

describe('config: vxlan', () => {
  const base = 'bridges: { br0: {} }\nvxlan:\n  local: 192.0.2.1\n';
  it('takes the VTEP with defaults (port 4789, ttl 64) and per-bridge VNIs', () => {
    const c = parseConfig(`${base}  bridges:\n    br0:\n      - { vni: 100, vlan: 10, flood: [192.0.2.2], fdb: [{ mac: "02:00:00:00:00:01", dst: 192.0.2.3 }] }\n      - { vni: 16777215, vlan: 20 }\n`, F);
    expect(c.vxlan).toMatchObject({ local: '192.0.2.1', port: 4789, ttl: 64, readQuantum: 256 * 1024 });
    expect(c.vxlan!.bridges.br0.map((s) => [s.vni, s.vlan, s.flood])).toEqual([[100, 10, ['192.0.2.2']], [16777215, 20, []]]);
  });

  it('refuses a VNI or VLAN mapped twice, a VNI out of range, a bad address, an unknown bridge, the local address as a remote', () => {
    expect(errorOf(`${base}  bridges:\n    br0:\n      - { vni: 100, vlan: 10 }\n      - { vni: 100, vlan: 11 }\n`)).toMatch(/vxlan\.bridges\.br0\.1\.vni.*VNI 100 is already mapped/);
    expect(errorOf(`${base}  bridges:\n    br0:\n      - { vni: 100, vlan: 10 }\n      - { vni: 101, vlan: 10 }\n`)).toMatch(/vxlan\.bridges\.br0\.1\.vlan.*VLAN 10 is already mapped to VNI 100/);
    expect(errorOf(`${base}  bridges:\n    br0:\n      - { vni: 16777216, vlan: 10 }\n`)).toMatch(/vni.*must be 0-16777215/);
    expect(errorOf(`${base}  bridges:\n    br0:\n      - { vni: 1, vlan: 10, flood: [192.0.2.999] }\n`)).toMatch(/flood\.0.*IPv4 address/);
    expect(errorOf(`${base}  bridges:\n    br9:\n      - { vni: 1, vlan: 10 }\n`)).toMatch(/vxlan\.bridges\.br9.*no bridge br9/);
    expect(errorOf(`${base}  bridges:\n    br0:\n      - { vni: 1, vlan: 10, flood: [192.0.2.1] }\n`)).toMatch(/is the local address/);
    expect(errorOf('vxlan: { port: 4789 }\n')).toMatch(/vxlan\.local/);
  });

  it('takes the underlay socket\'s read quantum (as a bridge\'s) and refuses a bad one', () => {
    expect(parseConfig(`${base}  readQuantum: 1mb\n`, F).vxlan!.readQuantum).toBe(1024 * 1024);
    expect(parseConfig(`${base}  readQuantum: "off"\n`, F).vxlan!.readQuantum).toBe(0);
    expect(errorOf(`${base}  readQuantum: 1kb\n`)).toMatch(/vxlan\.readQuantum.*read quantum must be 0 \(off\) or 16384/);
    // The underlay keeps bytes by default (a bridge's default is frames: vxlan-config.ts says why).
    expect(parseConfig(base, F).vxlan).toMatchObject({ readShare: 'bytes', readFrames: 16 });
    expect(parseConfig(`${base}  readShare: frames\n  readFrames: 64\n`, F).vxlan).toMatchObject({ readShare: 'frames', readFrames: 64 });
    expect(errorOf(`${base}  readShare: datagrams\n`)).toMatch(/vxlan\.readShare.*readShare must be bytes or frames/);
    expect(errorOf(`${base}  readFrames: 0.5\n`)).toMatch(/vxlan\.readFrames.*readFrames must be 0 \(off\) or 1-4096/);
  });

  it('takes the outer tos (default 0; a number 0-255, hex too, or inherit) and names the file and key of a bad one', () => {
    expect(parseConfig(base, F).vxlan!.tos).toBe(0);
    expect(parseConfig(`${base}  tos: inherit\n`, F).vxlan!.tos).toBe('inherit');
    expect(parseConfig(`${base}  tos: 0xb8\n`, F).vxlan!.tos).toBe(0xb8);
    for (const bad of ['256', '-1', '1.5', 'copy', '"0xb8"']) {
      const e = errorOf(`${base}  tos: ${bad}\n`);
      expect(e, bad).toMatch(/vxlan\.tos \(line 4\): must be a TOS value 0-255 \(like 0xb8\) or "inherit"/);
      expect(e, bad).toContain(F);
    }
  });

  it('takes vxlan.ecn rfc6040 (the default) or off, and names the file and key of a bad one', () => {
    expect(parseConfig(base, F).vxlan!.ecn).toBe('rfc6040');
    expect(parseConfig(`${base}  ecn: 'off'\n`, F).vxlan!.ecn).toBe('off');
    for (const bad of ['on', 'true', '1']) {
      const e = errorOf(`${base}  ecn: ${bad}\n`);
      expect(e, bad).toMatch(/vxlan\.ecn \(line 4\): must be rfc6040 or off/);
      expect(e, bad).toContain(F);
    }
  });

  it('takes an IPv6 underlay (udp6ZeroCsumRx off by default); every remote of local\'s family; no link-local source', () => {
    const b6 = 'bridges: { br0: {} }\nvxlan:\n  local: "fd00:1::1"\n';
    const c = parseConfig(`${b6}  bridges:\n    br0:\n      - { vni: 100, vlan: 10, flood: ["fd00:1::2"], fdb: [{ mac: "02:00:00:00:00:01", dst: "fd00:1::3" }] }\n`, F);
    expect(c.vxlan).toMatchObject({ local: 'fd00:1::1', udp6ZeroCsumRx: false });
    expect(errorOf(`${b6}  bridges:\n    br0:\n      - { vni: 1, vlan: 10, flood: [192.0.2.2] }\n`)).toMatch(/flood\.0.*is an IPv4 address: the underlay is IPv6/);
    expect(errorOf(`${b6}  bridges:\n    br0:\n      - { vni: 1, vlan: 10, fdb: [{ mac: "02:00:00:00:00:01", dst: 192.0.2.3 }] }\n`)).toMatch(/fdb\.0\.dst.*is an IPv4 address/);
    expect(errorOf(`${base}  bridges:\n    br0:\n      - { vni: 1, vlan: 10, flood: ["fd00:1::2"] }\n`)).toMatch(/flood\.0.*is an IPv6 address: the underlay is IPv4/);
    expect(errorOf('bridges: { br0: {} }\nvxlan:\n  local: "fe80::1"\n')).toMatch(/vxlan\.local.*not link-local/);
  });
});
