/*
 * DhcpServer.reconfigure: a new config applied in place (reload, `vswitch dhcp
 * reservation`), leases, offers and counters kept. On main a DHCP edit rebuilt the
 * whole router; there was no reconfigure at all.
 */
import { describe, expect, it } from 'vitest';
import { parseIp4 } from '@vswitch/switch';
import { LeaseStore } from './leases.js';
import { DhcpConfigError, DhcpServer, type DhcpResult, type DhcpServerConfig } from './server.js';
import { DhcpMsg, DhcpWriter, BOOTREQUEST, Opt, parseDhcp } from './wire.js';

const ip = (s: string): number => parseIp4(s);
const T0 = Date.UTC(2025, 0, 1);
const A = 0x020000000001;
const B = 0x020000000002;

const config = (over: Partial<DhcpServerConfig> = {}): DhcpServerConfig => ({
  name: 'net10', serverIp: ip('10.0.10.1'), subnet: ip('10.0.10.0'), prefixLen: 24,
  pools: [[ip('10.0.10.100'), ip('10.0.10.101')]], dns: [ip('192.0.2.53')], ...over,
});

function msg(type: number, mac: number, o: { requested?: number; serverId?: number; ciaddr?: number } = {}): Uint8Array {
  const buf = new Uint8Array(600);
  const w = new DhcpWriter(buf);
  w.header({ op: BOOTREQUEST, xid: 7, flags: 0, ciaddr: o.ciaddr ?? 0, yiaddr: 0, siaddr: 0, giaddr: 0, chaddr: mac });
  w.u8(Opt.MESSAGE_TYPE, type);
  if (o.requested !== undefined) w.u32(Opt.REQUESTED_IP, o.requested);
  if (o.serverId !== undefined) w.u32(Opt.SERVER_ID, o.serverId);
  w.option(Opt.PARAM_LIST, [1, 3, 6, 15, 51]);
  return buf.subarray(0, w.finish());
}

function run(s: DhcpServer, m: Uint8Array, out: Uint8Array, now = T0): DhcpResult {
  return s.handle(m, 0, m.length, out, 0, { now });
}

/** DISCOVER + REQUEST: the address bound to `mac`. */
function lease(s: DhcpServer, mac: number, out: Uint8Array): number {
  const o = run(s, msg(DhcpMsg.DISCOVER, mac), out);
  if (typeof o === 'string') throw new Error(o);
  const a = run(s, msg(DhcpMsg.REQUEST, mac, { requested: o.yiaddr, serverId: ip('10.0.10.1') }), out);
  if (typeof a === 'string' || a.type !== DhcpMsg.ACK) throw new Error('no ACK');
  return a.yiaddr;
}

describe('DhcpServer.reconfigure', () => {
  it('new options go out at once; leases and counters stay', () => {
    const out = new Uint8Array(1500);
    const s = new DhcpServer(config(), LeaseStore.inMemory('net10'), T0);
    const a = lease(s, A, out);
    const acks = s.counters.acks;
    s.reconfigure(config({ dns: [ip('198.51.100.53')], domain: 'new.lan', leaseTimeSec: 600 }), T0);
    expect(s.leases(T0).map((l) => l.ip)).toEqual([a]);
    const r = run(s, msg(DhcpMsg.REQUEST, A, { ciaddr: a }), out);
    if (typeof r === 'string') throw new Error(r);
    const m = parseDhcp(out, 0, r.payloadLen);
    if (typeof m === 'number') throw new Error('bad reply');
    expect(r.type).toBe(DhcpMsg.ACK);
    expect([...m.option(Opt.DNS)!]).toEqual([198, 51, 100, 53]);
    expect(String.fromCharCode(...m.option(Opt.DOMAIN)!)).toBe('new.lan');
    expect([...m.option(Opt.LEASE_TIME)!]).toEqual([0, 0, 2, 88]);
    expect(s.counters.acks).toBe(acks + 1);
  });

  it('a grown pool serves a client the old pool had no room for', () => {
    const out = new Uint8Array(1500);
    const s = new DhcpServer(config(), LeaseStore.inMemory('net10'), T0);
    lease(s, A, out);
    lease(s, B, out);
    expect(run(s, msg(DhcpMsg.DISCOVER, 0x020000000003), out)).toBe('pool_exhausted');
    s.reconfigure(config({ pools: [[ip('10.0.10.100'), ip('10.0.10.110')]] }), T0);
    expect(s.poolSize).toBe(11);
    expect(lease(s, 0x020000000003, out)).toBe(ip('10.0.10.102'));
  });

  it('a reservation for an address another client holds takes effect when that client moves; nobody gets it twice', () => {
    const out = new Uint8Array(1500);
    const s = new DhcpServer(config(), LeaseStore.inMemory('net10'), T0);
    const a = lease(s, A, out);
    s.reconfigure(config({ reservations: [{ mac: B, ip: a }] }), T0);
    // The lease stays (its address is given to no one else) but cannot be renewed: A is NAKed and moves.
    expect(s.leases(T0).find((l) => l.ip === a)?.mac).toBe(A);
    expect(run(s, msg(DhcpMsg.DISCOVER, B), out)).toBe('address_declined');
    const nak = run(s, msg(DhcpMsg.REQUEST, A, { ciaddr: a }), out);
    expect(typeof nak !== 'string' && nak.type).toBe(DhcpMsg.NAK);
    const a2 = lease(s, A, out);
    expect(a2).not.toBe(a);
    expect(lease(s, B, out)).toBe(a);
  });

  it('refuses an invalid config or a subnet change, and changes nothing then', () => {
    const s = new DhcpServer(config(), LeaseStore.inMemory('net10'), T0);
    expect(() => s.reconfigure(config({ pools: [[ip('10.0.11.1'), ip('10.0.11.2')]] }), T0)).toThrow(DhcpConfigError);
    expect(() => s.reconfigure(config({ subnet: ip('10.0.11.0'), serverIp: ip('10.0.11.1') }), T0)).toThrow(/cannot change in place/);
    expect(s.poolSize).toBe(2);
    expect(s.config.dns).toEqual([ip('192.0.2.53')]);
  });
});
