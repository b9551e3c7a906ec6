import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BOOTREQUEST, DhcpMsg, DhcpWriter, Opt } from '@vswitch/nat';
import { type Bridge, Drop, checksum, type PortIo, type PortRx, VlanPolicy, parseIp4, writeMac } from '@vswitch/switch';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigSchema } from '../config.js';
import { applyGuard, reserveGateways } from './guards.js';
import { Vswitch } from './service.js';

const log = pino({ level: 'silent' });

class FakeIo implements PortIo {
  rx: PortRx | undefined;
  sent: Uint8Array[] = [];
  constructor(readonly kind: 'tap' | 'attach' | 'socket' = 'tap') {}
  start(rx: PortRx): void { this.rx = rx; }
  send(b: Uint8Array, o: number, len: number): number { this.sent.push(b.slice(o, o + len)); return len; }
  send2(a: Uint8Array, ao: number, alen: number, b: Uint8Array, bo: number, blen: number): number {
    const f = new Uint8Array(alen + blen);
    f.set(a.subarray(ao, ao + alen));
    f.set(b.subarray(bo, bo + blen), alen);
    this.sent.push(f);
    return alen + blen;
  }
  close(): void {}
  describe(): Record<string, string | number | boolean> { return {}; }
  inject(f: Uint8Array): void { this.rx!.frame(f, 0, f.length); }
}

const VM1 = 0x525400000001;
const VM2 = 0x525400000002;

/** Ethernet + IPv4 + UDP 68 -> 67 carrying a DHCP client message. */
function dhcpFrame(mac: number, type: number, opts: { ciaddr?: number; requested?: number; serverId?: number; ipSrc?: number } = {}): Uint8Array {
  const d = new Uint8Array(600);
  const w = new DhcpWriter(d);
  w.header({ op: BOOTREQUEST, xid: 0x77, flags: 0, ciaddr: opts.ciaddr ?? 0, yiaddr: 0, siaddr: 0, giaddr: 0, chaddr: mac });
  w.u8(Opt.MESSAGE_TYPE, type);
  if (opts.requested !== undefined) w.u32(Opt.REQUESTED_IP, opts.requested);
  if (opts.serverId !== undefined) w.u32(Opt.SERVER_ID, opts.serverId);
  const dlen = w.finish();
  const f = new Uint8Array(14 + 20 + 8 + dlen);
  writeMac(f, 0, 0xffffffffffff);
  writeMac(f, 6, mac);
  f[12] = 0x08;
  const ip = 14;
  f[ip] = 0x45;
  const total = 20 + 8 + dlen;
  f[ip + 2] = total >> 8; f[ip + 3] = total & 0xff;
  f[ip + 8] = 64; f[ip + 9] = 17;
  const src = opts.ipSrc ?? opts.ciaddr ?? 0;
  for (let i = 0; i < 4; i++) { f[ip + 12 + i] = (src >>> (24 - 8 * i)) & 0xff; f[ip + 16 + i] = 0xff; }
  const c = checksum(f, ip, 20);
  f[ip + 10] = c >> 8; f[ip + 11] = c & 0xff;
  const u = ip + 20;
  f[u] = 0; f[u + 1] = 68; f[u + 2] = 0; f[u + 3] = 67;
  f[u + 4] = (8 + dlen) >> 8; f[u + 5] = (8 + dlen) & 0xff;
  f.set(d.subarray(0, dlen), u + 8);
  return f;
}

/** The yiaddr of the last DHCP reply a port got. */
function lastYiaddr(io: FakeIo): number {
  const f = io.sent[io.sent.length - 1];
  const y = 14 + 20 + 8 + 16;
  return ((f[y] << 24) | (f[y + 1] << 16) | (f[y + 2] << 8) | f[y + 3]) >>> 0;
}

let dirs: string[] = [];
afterEach(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs = [];
});

function setup(dhcp = true, ipv6 = false) {
  const dir = mkdtempSync(join(tmpdir(), 'vsw-guard-'));
  dirs.push(dir);
  const sw = new Vswitch(log);
  const br: Bridge = sw.addBridge('br0');
  const cfg = ConfigSchema.parse({
    stateDir: dir,
    bridges: { br0: {} },
    routers: {
      r1: {
        networks: {
          net10: {
            bridge: 'br0', vlan: 10, address: '10.0.10.1/24', ...(dhcp ? { dhcp: { pool: ['10.0.10.100-10.0.10.199'] } } : {}),
            ...(ipv6 ? { ipv6: { address: 'fd00:10::1/64' } } : {}),
          },
        },
      },
    },
  });
  sw.addRouter('r1', cfg.routers.r1, dir);
  const add = (name: string, kind: 'tap' | 'attach' | 'socket', vlan = VlanPolicy.from({ mode: 'access', vid: 10 })) => {
    const io = new FakeIo(kind);
    const port = br.addPort(name, io, { vlan });
    return { io, port };
  };
  return { sw, br, dir, cfg, add };
}

describe('guard defaults', () => {
  it('on for tap and socket access ports of a VLAN with a router DHCP server, off otherwise', () => {
    const t = setup();
    const vm = add(t, 'vm1', 'tap');
    const sock = add(t, 'vm2', 'socket');
    const up = add(t, 'up0', 'attach');
    const trunk = add(t, 'tr0', 'tap', VlanPolicy.from({ mode: 'trunk', allowed: [10] }));
    const other = add(t, 'vm3', 'tap', VlanPolicy.from({ mode: 'access', vid: 20 }));
    for (const [p, spec] of [[vm, 'tap'], [sock, 'socket'], [up, 'attach'], [trunk, 'tap'], [other, 'tap']] as const) {
      applyGuard(t.br, p.port, { type: spec }, t.sw.routers.values());
    }
    expect([vm, sock, up, trunk, other].map((p) => p.port.guard.active)).toEqual([true, true, false, false, false]);
    expect(vm.port.guard.dhcp && vm.port.guard.ipSource).toBe(true);
    // The router's own port is never guarded.
    expect(t.br.port('net10')!.guard.active).toBe(false);
  });

  it('off without DHCP on the router network; explicit config wins both ways', () => {
    const t = setup(false);
    const vm = add(t, 'vm1', 'tap');
    applyGuard(t.br, vm.port, { type: 'tap' }, t.sw.routers.values());
    expect(vm.port.guard.active).toBe(false);
    applyGuard(t.br, vm.port, { type: 'tap', guard: { ipSource: true, bindings: [{ mac: '52:54:00:00:00:01', ip: '10.0.10.5' }] } }, t.sw.routers.values());
    expect(vm.port.guard.ipSource).toBe(true);
    expect(vm.port.guard.dhcp).toBe(false);
    expect(vm.port.guard.configured.get(parseIp4('10.0.10.5'))).toBe(VM1);

    const t2 = setup(true);
    const vm2 = add(t2, 'vm1', 'tap');
    applyGuard(t2.br, vm2.port, { type: 'tap', guard: { dhcp: false } }, t2.sw.routers.values());
    expect(vm2.port.guard.dhcp).toBe(false);
    expect(vm2.port.guard.ipSource).toBe(true);
  });
});

describe('IPv6 guard defaults', () => {
  it('on for the IPv4 guards\' VM ports, and for VM ports of a VLAN whose router network has ipv6 (IPv4 guards off there)', () => {
    const withDhcp = setup(true);
    const a = add(withDhcp, 'vm1', 'tap');
    applyGuard(withDhcp.br, a.port, { type: 'tap' }, withDhcp.sw.routers.values());
    expect([a.port.guard.ra, a.port.guard.dhcpv6, a.port.guard.ipv6Source, a.port.guard.maxIpv6]).toEqual([true, true, true, 16]);
    const v6only = setup(false, true);
    const b = add(v6only, 'vm1', 'tap');
    const up = add(v6only, 'up0', 'attach');
    for (const [p, type] of [[b, 'tap'], [up, 'attach']] as const) applyGuard(v6only.br, p.port, { type }, v6only.sw.routers.values());
    expect([b.port.guard.dhcp, b.port.guard.ipSource, b.port.guard.ra, b.port.guard.dhcpv6, b.port.guard.ipv6Source]).toEqual([false, false, true, true, true]);
    expect(up.port.guard.active).toBe(false);
    applyGuard(v6only.br, b.port, { type: 'tap', guard: { ra: false, maxIpv6Addresses: 4 } }, v6only.sw.routers.values());
    expect([b.port.guard.ra, b.port.guard.ipv6Source, b.port.guard.maxIpv6]).toEqual([false, true, 4]);
    // A port with only the IPv6 guards is not "guarded" to the DHCP server and the MAC pins: those follow the IPv4 guards.
    const dhcpV6 = setup(true, true);
    const e = add(dhcpV6, 'vm1', 'tap');
    applyGuard(dhcpV6.br, e.port, { type: 'tap', guard: { dhcp: false, ipSource: false } }, dhcpV6.sw.routers.values());
    expect([e.port.guard.active, e.port.guard.v4, e.port.guard.v6]).toEqual([true, false, true]);
    expect(dhcpV6.sw.routers.get('r1')!.router.networks.get('net10')!.opts.ports!.guarded('vm1')).toBe(false);
    applyGuard(dhcpV6.br, e.port, { type: 'tap' }, dhcpV6.sw.routers.values());
    expect(dhcpV6.sw.routers.get('r1')!.router.networks.get('net10')!.opts.ports!.guarded('vm1')).toBe(true);
    const none = setup(false, false);
    const c = add(none, 'vm1', 'tap');
    applyGuard(none.br, c.port, { type: 'tap' }, none.sw.routers.values());
    expect(c.port.guard.active).toBe(false);
  });

  it('the gateway\'s link-local and prefix addresses are reserved for the router\'s port', () => {
    const t = setup(false, true);
    reserveGateways([t.br], t.sw.routers.values());
    const gw = t.br.port('net10')!;
    const e = t.br.ip6Bindings.entries();
    expect(e.map((x) => [x.vid, x.port, x.static])).toEqual([[10, gw.id, true], [10, gw.id, true]]);
    expect(t.br.ip6Bindings.count(gw.id)).toBe(2);
  });
});

describe('config keys', () => {
  it('stormControl and guard on a port; bad values are refused', () => {
    const c = ConfigSchema.parse({ bridges: { br0: { ports: { vm1: {
      type: 'tap', stormControl: { pps: 500 }, guard: { dhcp: true, ipSource: false, bindings: [{ mac: '52:54:00:00:00:01', ip: '10.0.10.5' }] },
    } } } } });
    expect(c.bridges.br0.ports.vm1.stormControl).toEqual({ pps: 500 });
    expect(c.bridges.br0.ports.vm1.guard?.bindings).toHaveLength(1);
    expect(() => ConfigSchema.parse({ bridges: { br0: { ports: { vm1: { type: 'tap', stormControl: { pps: 0 } } } } } })).toThrow();
    expect(() => ConfigSchema.parse({ bridges: { br0: { ports: { vm1: { type: 'tap', guard: { bindings: [{ mac: 'x', ip: '10.0.0.1' }] } } } } } })).toThrow();
    expect(() => ConfigSchema.parse({ bridges: { br0: { ports: { vm1: { type: 'tap', guard: { arp: true } } } } } })).toThrow();
  });
});

describe('lease bindings', () => {
  it('an ACK binds the lease on the requesting port once it is on disk; release unbinds it; restart rebuilds from the lease file', async () => {
    const t = setup();
    const dhcp = t.sw.router('r1').router.networks.get('net10')!.opts.dhcp!;
    const vm = add(t, 'vm1', 'tap');
    const vm2 = add(t, 'vm2', 'tap');
    for (const p of [vm, vm2]) applyGuard(t.br, p.port, { type: 'tap' }, t.sw.routers.values());
    const gw = parseIp4('10.0.10.1');
    vm.io.inject(dhcpFrame(VM1, DhcpMsg.DISCOVER));
    const offered = lastYiaddr(vm.io);
    expect(offered).toBeGreaterThan(0);
    expect(vm.port.guard.leased.size).toBe(0);
    vm.io.inject(dhcpFrame(VM1, DhcpMsg.REQUEST, { requested: offered, serverId: gw }));
    // group commit: neither the ACK nor the binding before the lease file holds the lease
    expect(vm.port.guard.leased.size).toBe(0);
    await dhcp.flush();
    expect(lastYiaddr(vm.io)).toBe(offered);
    expect(vm.port.guard.leased.get(offered)).toBe(VM1);
    expect(vm2.port.guard.leased.size).toBe(0);

    // Another VM's lease binds on its own port only.
    vm2.io.inject(dhcpFrame(VM2, DhcpMsg.DISCOVER));
    const offered2 = lastYiaddr(vm2.io);
    vm2.io.inject(dhcpFrame(VM2, DhcpMsg.REQUEST, { requested: offered2, serverId: gw }));
    await dhcp.flush();
    expect(vm2.port.guard.leased.get(offered2)).toBe(VM2);

    // Seeding from the server's leases (what a restart does).
    vm.port.guard.leased.clear();
    applyGuard(t.br, vm.port, { type: 'tap' }, t.sw.routers.values());
    expect([...vm.port.guard.leased]).toEqual([[offered, VM1]]);

    // RELEASE (from the leased address) unbinds.
    vm.io.inject(dhcpFrame(VM1, DhcpMsg.RELEASE, { ciaddr: offered, serverId: gw }));
    expect(vm.port.guard.leased.size).toBe(0);
    expect(vm.port.counters().drops.ip_source_guard).toBeUndefined();
    expect(vm2.port.guard.leased.size).toBe(1);
  });

  it('a spoofed REQUEST or RELEASE from another guarded port leaves the lease, its binding and the MAC table alone', async () => {
    const t = setup();
    const vm = add(t, 'vm1', 'tap');
    const vm2 = add(t, 'vm2', 'tap');
    for (const p of [vm, vm2]) applyGuard(t.br, p.port, { type: 'tap' }, t.sw.routers.values());
    const dhcp = t.sw.router('r1').router.networks.get('net10')!.opts.dhcp!;
    const gw = parseIp4('10.0.10.1');
    vm2.io.inject(dhcpFrame(VM2, DhcpMsg.DISCOVER));
    const a = lastYiaddr(vm2.io);
    vm2.io.inject(dhcpFrame(VM2, DhcpMsg.REQUEST, { requested: a, serverId: gw }));
    await dhcp.flush();
    expect(vm2.port.guard.leased.get(a)).toBe(VM2);
    const seen = [vm.io.sent.length, vm2.io.sent.length];
    const requests = dhcp.counters.requests;
    // vm1 sends as vm2 (source MAC and chaddr): INIT-REBOOT for vm2's address, then a RELEASE of it
    // from 0.0.0.0 (from vm2's address the IP source guard would already drop it). vm2's lease pins
    // its MAC to vm2's port: the bridge drops both before learning or forwarding them.
    vm.io.inject(dhcpFrame(VM2, DhcpMsg.REQUEST, { requested: a }));
    vm.io.inject(dhcpFrame(VM2, DhcpMsg.RELEASE, { ciaddr: a, serverId: gw, ipSrc: 0 }));
    expect(vm.port.drops[Drop.bound_mac_conflict]).toBe(2);
    expect(t.br.fdb.lookup(10, VM2)).toBe(vm2.port.id);
    expect(dhcp.counters.requests + dhcp.counters.releases).toBe(requests + 0);
    // vm1 with its own source MAC and vm2's chaddr: refused by the server before anything else
    const mismatch = dhcpFrame(VM2, DhcpMsg.REQUEST, { requested: a });
    writeMac(mismatch, 6, VM1);
    vm.io.inject(mismatch);
    await dhcp.flush();
    expect(dhcp.counters.dropped.chaddr_mismatch).toBe(1);
    expect(dhcp.counters.nakReasons.not_owner + dhcp.counters.dropped.not_owner).toBe(0);
    expect(dhcp.leases(Date.now())).toMatchObject([{ ip: a, mac: VM2, port: 'vm2', state: 'bound' }]);
    expect(vm2.port.guard.leased.get(a)).toBe(VM2);
    expect(vm.port.guard.leased.size).toBe(0);
    // nothing from the server to either VM
    const fromServer = (f: Uint8Array): boolean => f[12] === 0x08 && f[13] === 0 && f[23] === 17 && f[34] === 0 && f[35] === 67;
    expect(vm.io.sent.slice(seen[0]).filter(fromServer)).toEqual([]);
    expect(vm2.io.sent.slice(seen[1]).filter(fromServer)).toEqual([]);
  });

  it('the flow cache (on by default): a renewal re-ACKing the same lease invalidates nothing; a release does (the binding gone)', async () => {
    const t = setup();
    expect(t.br.flowCache).toBe(true);
    const { dhcp, vm, gw, offered } = await leasedVm(t);
    expect(vm.port.guard.leased.get(offered)).toBe(VM1);
    const inv = t.br.flowCacheCounters.invalidations;
    const acks = dhcp.counters.acks;
    for (let i = 0; i < 3; i++) {
      // RENEWING (ciaddr, from the leased address), then INIT-REBOOT (option 50): both ACK the same lease.
      vm.io.inject(dhcpFrame(VM1, DhcpMsg.REQUEST, { ciaddr: offered }));
      vm.io.inject(dhcpFrame(VM1, DhcpMsg.REQUEST, { requested: offered }));
      await dhcp.flush();
    }
    expect(dhcp.counters.acks - acks).toBe(6);
    expect(vm.port.guard.leased.get(offered)).toBe(VM1);
    expect(t.br.flowCacheCounters.invalidations, 'six re-ACKs of the same binding: no churn').toBe(inv);
    vm.io.inject(dhcpFrame(VM1, DhcpMsg.RELEASE, { ciaddr: offered, serverId: gw }));
    expect(vm.port.guard.leased.size).toBe(0);
    expect(t.br.flowCacheCounters.invalidations).toBe(inv + 1);
  });

  it('expiry unbinds', async () => {
    const t = setup();
    const { dhcp, vm } = await leasedVm(t);
    expect(vm.port.guard.leased.size).toBe(1);
    dhcp.expire(Date.now() + 3600_000 + 1);
    expect(vm.port.guard.leased.size).toBe(0);
  });
});

function add(t: ReturnType<typeof setup>, name: string, kind: 'tap' | 'attach' | 'socket', vlan?: VlanPolicy) {
  return t.add(name, kind, vlan);
}

/** VM port vm1 (MAC VM1), guarded the daemon's way, with a lease from net10's DHCP server (DISCOVER, REQUEST). */
async function leasedVm(t: ReturnType<typeof setup>) {
  const dhcp = t.sw.router('r1').router.networks.get('net10')!.opts.dhcp!;
  const vm = add(t, 'vm1', 'tap');
  applyGuard(t.br, vm.port, { type: 'tap' }, t.sw.routers.values());
  const gw = parseIp4('10.0.10.1');
  vm.io.inject(dhcpFrame(VM1, DhcpMsg.DISCOVER));
  const offered = lastYiaddr(vm.io);
  vm.io.inject(dhcpFrame(VM1, DhcpMsg.REQUEST, { requested: offered, serverId: gw }));
  await dhcp.flush();
  return { dhcp, vm, gw, offered };
}
