/*
 * The daemon's DHCPv6 wiring (dhcp6.ts) with fake ports: a Rapid Commit Solicit
 * from a guarded VM port is answered once its lease is in leases6-<network>.json,
 * the leased address becomes that port's in the IPv6 source guard (another port
 * sending from it is dropped), and a new daemon on the same state directory has
 * the lease. Mode slaac has no DHCPv6 server.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Dhcp6Msg, Dhcp6Opt } from '@vswitch/nat';
import {
  type Bridge, IP6_NEXT, type PortIo, type PortRx, VlanPolicy, checksum, ip6PseudoSum, parseIp6, write16, write32, writeIp6, writeMac,
} from '@vswitch/switch';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigSchema } from '../config.js';
import { applyGuard } from './guards.js';
import { Vswitch } from './service.js';

const log = pino({ level: 'silent' });

class FakeIo implements PortIo {
  rx: PortRx | undefined;
  sent: Uint8Array[] = [];
  readonly kind = 'tap' as const;
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
const ll = (mac: number): Uint8Array => parseIp6(`fe80::5054:ff:fe00:${(mac & 0xff).toString(16)}`)!;

/** Ethernet + IPv6 + UDP `sport` -> `dport` from `src` to `dst` carrying `payload`. */
function udp6(mac: number, dstMac: number, src: Uint8Array, dst: Uint8Array, sport: number, dport: number, payload: Uint8Array): Uint8Array {
  const f = new Uint8Array(14 + 40 + 8 + payload.length);
  writeMac(f, 0, dstMac);
  writeMac(f, 6, mac);
  write16(f, 12, 0x86dd);
  writeIp6(f, 14, 8 + payload.length, IP6_NEXT.UDP, 255, src, 0, dst, 0);
  const u = 54;
  write16(f, u, sport);
  write16(f, u + 2, dport);
  write16(f, u + 4, 8 + payload.length);
  f.set(payload, u + 8);
  const c = checksum(f, u, 8 + payload.length, ip6PseudoSum(f, 14, 8 + payload.length, IP6_NEXT.UDP));
  write16(f, u + 6, c === 0 ? 0xffff : c);
  return f;
}

/** A Rapid Commit Solicit from `mac` (DUID-LL of it, IAID 1). */
function solicit(mac: number): Uint8Array {
  const m = new Uint8Array(4 + 14 + 16 + 4);
  m[0] = Dhcp6Msg.SOLICIT;
  m[3] = 9;
  write16(m, 4, Dhcp6Opt.CLIENTID);
  write16(m, 6, 10);
  write16(m, 8, 3);
  write16(m, 10, 1);
  writeMac(m, 12, mac);
  write16(m, 18, Dhcp6Opt.IA_NA);
  write16(m, 20, 12);
  write32(m, 22, 1);
  write16(m, 34, Dhcp6Opt.RAPID_COMMIT);
  const f = udp6(mac, 0x333300010002, ll(mac), parseIp6('ff02::1:2')!, 546, 547, m);
  return f;
}

let dirs: string[] = [];
afterEach(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs = [];
});

function setup(mode: 'slaac' | 'dhcpv6', dir = mkdtempSync(join(tmpdir(), 'vsw-dhcp6-'))) {
  dirs.push(dir);
  const sw = new Vswitch(log);
  const br: Bridge = sw.addBridge('br0');
  const cfg = ConfigSchema.parse({
    stateDir: dir,
    bridges: { br0: {} },
    routers: { r1: { networks: { net10: { bridge: 'br0', vlan: 10, address: '10.0.10.1/24', ipv6: { address: 'fd00:10::1/64', mode } } } } },
  });
  sw.addRouter('r1', cfg.routers.r1, dir);
  const add = (name: string) => {
    const io = new FakeIo();
    const port = br.addPort(name, io, { vlan: VlanPolicy.from({ mode: 'access', vid: 10 }) });
    applyGuard(br, port, { type: 'tap' }, sw.routers.values());
    return { io, port };
  };
  return { sw, br, dir, add, net: sw.router('r1').router.networks.get('net10')! };
}

describe('DHCPv6 in the daemon', () => {
  it('a lease is answered once on disk, binds its address to the port in the IPv6 source guard, and outlives the daemon', async () => {
    const t = setup('dhcpv6');
    const vm1 = t.add('vm1');
    const vm2 = t.add('vm2');
    const server = t.net.opts.dhcp6!;
    expect(server).toBeDefined();
    vm1.io.inject(solicit(VM1));
    // Group commit: no Reply before the lease file holds the lease.
    const replies = (): Uint8Array[] => vm1.io.sent.filter((f) => f[12] === 0x86 && f[13] === 0xdd && f[20] === IP6_NEXT.UDP && f[54 + 8] === Dhcp6Msg.REPLY);
    expect(replies()).toHaveLength(0);
    await server.flush();
    expect(replies()).toHaveLength(1);
    expect(existsSync(join(t.dir, 'leases6-net10.json'))).toBe(true);
    const [lease] = server.leases(Date.now());
    expect(lease).toMatchObject({ state: 'bound', mac: VM1, port: 'vm1' });
    // The address is vm1's: vm2 sending from it is dropped, vm1's own traffic from it passes.
    const ping = (mac: number): Uint8Array => udp6(mac, 0x020000000099, lease.address, parseIp6('fd00:10::99')!, 5000, 5001, new Uint8Array(4));
    vm2.io.inject(ping(VM2));
    expect(vm2.port.counters().drops.ipv6_source_guard).toBe(1);
    vm1.io.inject(ping(VM1));
    expect(vm1.port.counters().drops.ipv6_source_guard).toBeUndefined();
    // A new daemon on the same state directory has the lease.
    t.sw.routers.get('r1')!.close();
    const again = setup('dhcpv6', t.dir);
    expect(again.net.opts.dhcp6!.leases(Date.now())).toMatchObject([{ state: 'bound', mac: VM1, port: 'vm1' }]);
  });

  it('mode slaac has no DHCPv6 server: a Solicit gets nothing', () => {
    const t = setup('slaac');
    const vm1 = t.add('vm1');
    expect(t.net.opts.dhcp6).toBeUndefined();
    vm1.io.inject(solicit(VM1));
    expect(vm1.io.sent.filter((f) => f[20] === IP6_NEXT.UDP)).toHaveLength(0);
  });
});
