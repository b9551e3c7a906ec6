import { describe, expect, it } from 'vitest';
import { TestIo } from './testing/test-io.js';
import { Bridge, type PortOptions } from './bridge.js';
import type { DropReason } from './drop.js';
import { guardCheck, PortGuard, ADMIT_GUARD } from './guard.js';
import { StormBucket } from './forward.js';
import { Drop } from './drop.js';
import type { Port } from './port.js';
import { VlanPolicy, type VlanSpec } from './vlan.js';
import { writeMac } from './wire/ethernet.js';

const A = 0x020000000001;
const B = 0x020000000002;
const GW = 0x02000000000f;
const BCAST = 0xffffffffffff;
const ip = (s: string): number => s.split('.').reduce((a, x) => a * 256 + Number(x), 0);
const IP_A = ip('10.0.10.100');
const IP_B = ip('10.0.10.101');
const IP_GW = ip('10.0.10.1');

function put16(f: Uint8Array, o: number, v: number): void { f[o] = v >>> 8; f[o + 1] = v & 0xff; }
function put32(f: Uint8Array, o: number, v: number): void { put16(f, o, Math.floor(v / 65536)); put16(f, o + 2, v & 0xffff); }

/** Ethernet (optionally one 802.1Q tag) + IPv4 + UDP (or ICMP when sport < 0). */
function ipv4(dst: number, src: number, sip: number, dip: number, sport = -1, dport = -1, tag?: number): Uint8Array {
  const t = tag === undefined ? 0 : 4;
  const f = new Uint8Array(14 + t + 20 + 8 + 20);
  writeMac(f, 0, dst);
  writeMac(f, 6, src);
  if (tag !== undefined) { put16(f, 12, 0x8100); put16(f, 14, tag); }
  put16(f, 12 + t, 0x0800);
  const l3 = 14 + t;
  f[l3] = 0x45;
  put16(f, l3 + 2, 48);
  f[l3 + 8] = 64;
  f[l3 + 9] = sport >= 0 ? 17 : 1;
  put32(f, l3 + 12, sip);
  put32(f, l3 + 16, dip);
  if (sport >= 0) { put16(f, l3 + 20, sport); put16(f, l3 + 22, dport); put16(f, l3 + 24, 28); }
  else f[l3 + 20] = 8;
  return f;
}

function arp(dst: number, src: number, oper: number, sha: number, spa: number, tpa: number): Uint8Array {
  const f = new Uint8Array(60);
  writeMac(f, 0, dst);
  writeMac(f, 6, src);
  put16(f, 12, 0x0806);
  put16(f, 14, 1); put16(f, 16, 0x0800); f[18] = 6; f[19] = 4; put16(f, 20, oper);
  writeMac(f, 22, sha); put32(f, 28, spa);
  put32(f, 38, tpa);
  return f;
}

function rig(ports: Record<string, { spec?: VlanSpec } & Omit<PortOptions, 'vlan'>>) {
  const clock = { now: 1000 };
  const br = new Bridge('br0', { clock: () => clock.now });
  const io: Record<string, TestIo> = {};
  const port: Record<string, Port> = {};
  for (const [name, o] of Object.entries(ports)) {
    io[name] = new TestIo();
    port[name] = br.addPort(name, io[name], { ...o, vlan: VlanPolicy.from(o.spec ?? { mode: 'access', vid: 10 }) });
  }
  const send = (name: string, f: Uint8Array) => io[name].rx.frame(f, 0, f.length);
  const batch = (name: string, frames: Uint8Array[]) => {
    const buf = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
    const offs = new Int32Array(frames.length);
    const lens = new Int32Array(frames.length);
    let o = 0;
    frames.forEach((f, i) => { buf.set(f, o); offs[i] = o; lens[i] = f.length; o += f.length; });
    io[name].rx.batch(buf, offs, lens, frames.length);
  };
  const got = (name: string): number => io[name].take().length;
  const drops = (name: string): Partial<Record<DropReason, number>> => port[name].counters().drops;
  return { br, io, port, clock, send, batch, got, drops };
}

describe('storm control', () => {
  it('is off by default: every flooded frame passes', () => {
    const t = rig({ p1: {}, p2: {} });
    for (let i = 0; i < 1000; i++) t.send('p1', ipv4(BCAST, A, IP_A, IP_B));
    expect(t.got('p2')).toBe(1000);
    expect(t.drops('p1').storm_control).toBeUndefined();
  });

  it('limits broadcast, multicast and unknown unicast to pps per second, refilled by the clock', () => {
    const t = rig({ p1: { stormPps: 100 }, p2: {} });
    const frames = Array.from({ length: 300 }, (_, i) => ipv4(i % 3 === 0 ? BCAST : i % 3 === 1 ? 0x01005e000001 : 0x020000000099, A, IP_A, IP_B));
    t.batch('p1', frames);
    expect(t.got('p2')).toBe(100); // the burst: one second's worth
    expect(t.drops('p1').storm_control).toBe(200);
    t.clock.now += 500; // half a second: 50 tokens
    t.batch('p1', frames.slice(0, 80));
    expect(t.got('p2')).toBe(50);
    expect(t.drops('p1').storm_control).toBe(230);
    t.clock.now += 10_000; // refill caps at the burst
    t.batch('p1', frames);
    expect(t.got('p2')).toBe(100);
  });

  it('never limits known unicast, nor other ports', () => {
    const t = rig({ p1: { stormPps: 10 }, p2: {}, p3: {} });
    t.send('p2', ipv4(BCAST, B, IP_B, IP_A)); // learn B on p2
    t.got('p1'); t.got('p3');
    for (let i = 0; i < 50; i++) t.send('p1', ipv4(BCAST, A, IP_A, IP_B));
    expect(t.got('p2')).toBe(10);
    for (let i = 0; i < 500; i++) t.send('p1', ipv4(B, A, IP_A, IP_B));
    expect(t.got('p2')).toBe(500);
    for (let i = 0; i < 50; i++) t.send('p3', ipv4(BCAST, 0x020000000003, IP_A, IP_B));
    expect(t.got('p2')).toBe(50);
    t.br.setPortStorm('p1', 0);
    for (let i = 0; i < 50; i++) t.send('p1', ipv4(BCAST, A, IP_A, IP_B));
    expect(t.got('p3')).toBe(50 + 10);
  });

  it('bucket arithmetic: fractional refill, no refill for a clock going back', () => {
    const b = new StormBucket();
    b.set(4, 0);
    for (let i = 0; i < 4; i++) expect(b.take(0)).toBe(true);
    expect(b.take(0)).toBe(false);
    expect(b.take(100)).toBe(false); // 0.4 token
    expect(b.take(250)).toBe(true); // 1.0
    expect(b.take(50)).toBe(false);
  });
});

describe('DHCP guard', () => {
  it('drops DHCP server messages (UDP 67 -> 68), untagged and in an 802.1Q tag', () => {
    const t = rig({ vm: { guard: { dhcp: true } }, tr: { spec: { mode: 'trunk', allowed: [10] }, guard: { dhcp: true } }, other: {} });
    t.send('vm', ipv4(BCAST, A, IP_A, 0xffffffff, 67, 68));
    t.send('tr', ipv4(BCAST, B, IP_B, 0xffffffff, 67, 68, 10));
    expect(t.got('other')).toBe(0);
    expect(t.drops('vm').dhcp_guard).toBe(1);
    expect(t.drops('tr').dhcp_guard).toBe(1);
    // The frame taught the table nothing.
    expect(t.br.fdb.lookup(10, A)).toBe(-1);
  });

  it('lets DHCP client messages and other UDP through; an unguarded port may answer DHCP', () => {
    const t = rig({ vm: { guard: { dhcp: true } }, srv: {}, other: {} });
    t.send('vm', ipv4(BCAST, A, 0, 0xffffffff, 68, 67));
    t.send('vm', ipv4(BCAST, A, IP_A, 0xffffffff, 67, 69));
    t.send('vm', ipv4(BCAST, A, IP_A, 0xffffffff, 53, 68));
    expect(t.got('other')).toBe(3);
    t.send('srv', ipv4(BCAST, GW, IP_GW, 0xffffffff, 67, 68));
    expect(t.got('other')).toBe(1);
    expect(t.drops('vm').dhcp_guard).toBeUndefined();
  });
});

describe('IP source guard', () => {
  const setup = () => {
    const t = rig({ vm: { guard: { ipSource: true } }, gw: {}, other: {} });
    t.port.vm.guard.leased.set(IP_A, A);
    t.send('gw', ipv4(BCAST, GW, IP_GW, IP_A)); // learn the gateway
    t.got('vm'); t.got('other');
    return t;
  };

  it('passes IPv4 from a leased MAC/IP pair, drops any other pair', () => {
    const t = setup();
    t.send('vm', ipv4(GW, A, IP_A, IP_GW));
    expect(t.got('gw')).toBe(1);
    t.send('vm', ipv4(GW, A, IP_B, IP_GW)); // an address not leased to it
    t.send('vm', ipv4(GW, B, IP_A, IP_GW)); // its address from another MAC
    t.send('vm', ipv4(GW, A, IP_GW, IP_B)); // the gateway's address
    expect(t.got('gw')).toBe(0);
    expect(t.drops('vm').ip_source_guard).toBe(3);
    expect(t.br.fdb.lookup(10, B)).toBe(-1);
  });

  it('configured bindings count as bound', () => {
    const t = setup();
    t.port.vm.guard.configured.set(IP_B, B);
    t.send('vm', ipv4(GW, B, IP_B, IP_GW));
    expect(t.got('gw')).toBe(1);
  });

  it('allows DHCP client traffic from 0.0.0.0 only to UDP 67 from 68', () => {
    const t = setup();
    t.send('vm', ipv4(BCAST, B, 0, 0xffffffff, 68, 67));
    expect(t.got('gw')).toBe(1);
    t.send('vm', ipv4(BCAST, B, 0, 0xffffffff, 68, 68));
    t.send('vm', ipv4(BCAST, B, 0, 0xffffffff));
    expect(t.got('gw')).toBe(0);
    expect(t.drops('vm').ip_source_guard).toBe(2);
  });

  it('drops truncated IPv4 on a guarded port', () => {
    const t = setup();
    t.send('vm', ipv4(GW, A, IP_A, IP_GW).subarray(0, 30));
    expect(t.drops('vm').ip_source_guard).toBe(1);
  });

  it('a lease removed stops the traffic', () => {
    const t = setup();
    t.port.vm.guard.leased.delete(IP_A);
    t.send('vm', ipv4(GW, A, IP_A, IP_GW));
    expect(t.got('gw')).toBe(0);
  });

  it('leaves other ethertypes alone and unguarded ports unchecked', () => {
    const t = setup();
    const v6 = ipv4(GW, A, IP_B, IP_GW);
    v6[12] = 0x86; v6[13] = 0xdd;
    t.send('vm', v6);
    expect(t.got('gw')).toBe(1);
    t.send('other', ipv4(GW, B, IP_GW, IP_GW));
    expect(t.got('gw')).toBe(1);
  });
});

describe('ARP spoofing', () => {
  const setup = () => {
    const t = rig({ vm: { guard: { ipSource: true, dhcp: true } }, gw: {}, other: {} });
    t.port.vm.guard.leased.set(IP_A, A);
    return t;
  };

  it('passes ARP from its bound pair and probes from 0.0.0.0', () => {
    const t = setup();
    t.send('vm', arp(BCAST, A, 1, A, IP_A, IP_GW));
    t.send('vm', arp(BCAST, A, 1, A, 0, IP_A)); // RFC 5227 probe
    expect(t.got('other')).toBe(2);
  });

  it('drops gratuitous ARP and replies claiming the gateway or another VM', () => {
    const t = setup();
    t.send('vm', arp(BCAST, A, 2, A, IP_GW, IP_GW)); // gratuitous reply: "I am the gateway"
    t.send('vm', arp(BCAST, A, 1, A, IP_B, IP_B)); // gratuitous request for B's address
    t.send('vm', arp(B, A, 2, A, IP_GW, IP_B)); // unicast reply poisoning B
    t.send('vm', arp(BCAST, A, 1, GW, IP_GW, IP_B)); // SHA not the source MAC
    t.send('vm', arp(BCAST, A, 1, B, 0, IP_B)); // probe with a foreign SHA
    expect(t.got('other')).toBe(0);
    expect(t.drops('vm').arp_spoof).toBe(5);
  });

  it('drops truncated or non-IPv4 ARP on a guarded port', () => {
    const t = setup();
    t.send('vm', arp(BCAST, A, 1, A, IP_A, IP_GW).subarray(0, 30));
    const f = arp(BCAST, A, 1, A, IP_A, IP_GW);
    f[19] = 16;
    t.send('vm', f);
    expect(t.drops('vm').arp_spoof).toBe(2);
  });
});

describe('guardCheck', () => {
  it('returns ADMIT for an inactive guard\'s ethertypes and for runts past the header', () => {
    const g = new PortGuard();
    g.set({ dhcp: true });
    const f = ipv4(BCAST, A, IP_A, IP_B, 67, 68);
    expect(guardCheck(g, f, 0, f.length, 0, A, 10, 0)).toBe(Drop.dhcp_guard);
    expect(guardCheck(g, f, 0, 14, 0, A, 10, 0)).toBe(ADMIT_GUARD);
    // A non-first fragment has no UDP header to read.
    f[14 + 6] = 0x00; f[14 + 7] = 0x10;
    expect(guardCheck(g, f, 0, f.length, 0, A, 10, 0)).toBe(ADMIT_GUARD);
    g.set({});
    expect(g.active).toBe(false);
  });
});


describe('bound MACs (a binding pins its MAC to its port)', () => {
  const guarded = { guard: { dhcp: true, ipSource: true } };
  /** A non-IPv4 frame (IPv6 ethertype, zero payload): what the IP source guard lets through. */
  const ipv6From = (src: number): Uint8Array => {
    const f = new Uint8Array(60);
    writeMac(f, 0, BCAST);
    writeMac(f, 6, src);
    put16(f, 12, 0x86dd);
    return f;
  };

  it('a MAC leased on one port is neither learned nor moved from another, whatever the ethertype; counted', () => {
    const t = rig({ vm1: guarded, vm2: guarded, up: {} });
    t.port.vm2.guard.leased.set(IP_B, B);
    t.send('vm2', ipv4(BCAST, B, IP_B, IP_GW));
    expect(t.br.fdb.lookup(10, B)).toBe(t.port.vm2.id);
    // from a guarded neighbour (DHCP from 0.0.0.0 passes the IP source guard) and from an unguarded port
    t.send('vm1', ipv4(BCAST, B, 0, 0xffffffff, 68, 67));
    t.send('vm1', ipv6From(B));
    t.send('up', ipv6From(B));
    expect(t.br.fdb.lookup(10, B)).toBe(t.port.vm2.id);
    expect(t.drops('vm1').bound_mac_conflict).toBe(2);
    expect(t.drops('up').bound_mac_conflict).toBe(1);
    expect(t.br.fdb.counters.refusedBound).toBe(3);
    expect(t.got('vm2')).toBe(0);
    // before it is learned at all (aged out): not learned elsewhere either
    t.br.fdb.delete(10, B);
    t.send('vm1', ipv6From(B));
    expect(t.br.fdb.lookup(10, B)).toBe(-1);
    expect(t.drops('vm1').bound_mac_conflict).toBe(3);
  });

  it('configured bindings pin too; the owner port itself refreshes and relearns freely', () => {
    const t = rig({ vm1: guarded, vm2: { guard: { dhcp: true, ipSource: true } } });
    t.port.vm2.guard.configured.set(IP_B, B);
    t.send('vm2', ipv6From(B));
    t.send('vm2', ipv6From(B));
    t.send('vm1', ipv6From(B));
    expect(t.br.fdb.lookup(10, B)).toBe(t.port.vm2.id);
    expect(t.drops('vm2').bound_mac_conflict).toBeUndefined();
    expect(t.drops('vm1').bound_mac_conflict).toBe(1);
  });

  it('the pin holds only while the owner is up and guarded, and goes with the binding (a migrated VM takes its MAC along)', () => {
    const t = rig({ vm1: guarded, vm2: guarded });
    t.port.vm2.guard.leased.set(IP_B, B);
    t.send('vm1', ipv6From(B));
    expect(t.drops('vm1').bound_mac_conflict).toBe(1);
    t.port.vm2.up = false; // the old TAP went away
    t.send('vm1', ipv6From(B));
    expect(t.br.fdb.lookup(10, B)).toBe(t.port.vm1.id);
    t.port.vm2.up = true;
    t.br.fdb.delete(10, B);
    t.br.setPortGuard('vm2', { dhcp: false, ipSource: false });
    t.send('vm1', ipv6From(B));
    expect(t.br.fdb.lookup(10, B)).toBe(t.port.vm1.id);
    t.br.setPortGuard('vm2', { dhcp: true, ipSource: true });
    t.br.fdb.delete(10, B);
    t.port.vm2.guard.leased.delete(IP_B); // released or expired
    t.send('vm1', ipv6From(B));
    expect(t.br.fdb.lookup(10, B)).toBe(t.port.vm1.id);
    expect(t.drops('vm1').bound_mac_conflict).toBe(1);
  });

  it('the index follows set, replace, delete, clear and the port leaving the bridge', () => {
    const t = rig({ vm1: guarded, vm2: guarded });
    const g = t.port.vm2.guard;
    const owners = t.br.macOwners;
    g.leased.set(IP_A, A);
    g.configured.set(IP_B, A); // one MAC, two bindings
    expect(owners.holders(A)).toEqual([t.port.vm2.id]);
    g.leased.set(IP_A, B); // replaced: A still held by the configured binding
    expect(owners.holders(A)).toEqual([t.port.vm2.id]);
    expect(owners.holders(B)).toEqual([t.port.vm2.id]);
    g.configured.clear();
    expect(owners.holders(A)).toEqual([]);
    g.leased.delete(IP_A);
    expect(owners.holders(B)).toEqual([]);
    g.leased.set(IP_A, A);
    t.br.removePort('vm2');
    expect(owners.holders(A)).toEqual([]);
    t.send('vm1', ipv6From(A));
    expect(t.br.fdb.lookup(10, A)).toBe(t.port.vm1.id);
  });
});

describe('ARP hardware type', () => {
  // The guard judges the sender pair of IPv4 ARP with 6-byte MACs whatever its
  // hardware type: Linux learns from IEEE 802 (6) as from Ethernet (1) ARP on an
  // Ethernet device, so checking htype would only drop a bound sender's ARP.
  it('judges ARP with another hardware type by its sender pair', () => {
    const t = rig({ vm: { guard: { ipSource: true } }, other: {} });
    t.port.vm.guard.leased.set(IP_A, A);
    const bound = arp(BCAST, A, 1, A, IP_A, IP_GW);
    bound[15] = 6; // htype IEEE 802
    t.send('vm', bound);
    expect(t.got('other')).toBe(1);
    const spoof = arp(BCAST, A, 2, A, IP_GW, IP_GW);
    spoof[15] = 6;
    t.send('vm', spoof);
    expect(t.got('other')).toBe(0);
    expect(t.drops('vm').arp_spoof).toBe(1);
  });
});
