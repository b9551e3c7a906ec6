/*
 * The DHCPv6 server as a state machine (no sockets): the exchanges a client makes,
 * the statuses, reservations, the port rules and the durable Reply, plus the wire
 * view's edge cases. Fuzzing is in fuzz.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { formatIp6, parseIp6, read16, read32, write16, write32 } from '@vswitch/switch';
import { LeaseStore } from '../dhcp/leases.js';
import { Dhcp6ConfigError, dhcp6Codec, type Dhcp6Context, type Dhcp6Reply, type Dhcp6Server } from './server.js';
import { duidLlt, msg, newServer, readReply, type Msg } from '../testing/dhcp6.js';
import {
  DHCP6_OK, Dhcp6Error, Dhcp6Msg, Dhcp6Opt, Dhcp6Status, FQDN_FLAG, duidLl, duidMac, fqdnHost, iaNaAddress, newDhcp6View, parseDhcp6,
} from './wire.js';

const T0 = Date.UTC(2026, 0, 1);
const a6 = (s: string): Uint8Array => parseIp6(s)!;
const PREFIX = a6('fd00:10::');

const MAC1 = 0x525400000001;
const MAC2 = 0x525400000002;

function ctx(over: Partial<Dhcp6Context> = {}): Dhcp6Context {
  return { now: T0, port: 'vm1', srcMac: MAC1, ...over };
}

function run(s: Dhcp6Server, m: Msg, c: Dhcp6Context = ctx()) {
  const b = msg(m);
  const out = new Uint8Array(1500);
  const r = s.handle(b, 0, b.length, out, 0, c);
  if (typeof r === 'string') return { r, reply: undefined };
  return { r, reply: readReply(out, (r as Dhcp6Reply).payloadLen) };
}

/** Solicit + Request: the address leased. */
function lease(s: Dhcp6Server, duid: Uint8Array, c: Dhcp6Context = ctx()): string {
  const adv = run(s, { type: Dhcp6Msg.SOLICIT, duid }, c).reply!;
  const rep = run(s, { type: Dhcp6Msg.REQUEST, duid, server: s.duid, addr: a6(adv.addr!) }, c).reply!;
  expect(rep.type).toBe(Dhcp6Msg.REPLY);
  return rep.addr!;
}

describe('DHCPv6 wire view', () => {
  it('reads the options a server needs, by offset', () => {
    const b = msg({ type: Dhcp6Msg.SOLICIT, xid: 0x42, duid: duidLlt(MAC1), iaid: 9, rapid: true, addr: a6('fd00:10::101') });
    const m = newDhcp6View();
    expect(parseDhcp6(b, 0, b.length, m)).toBe(DHCP6_OK);
    expect(m).toMatchObject({ type: 1, xid: 0x42, clientIdLen: 14, serverId: -1, iaNaCount: 1, rapidCommit: true });
    expect(duidMac(b, m.clientId, m.clientIdLen)).toBe(MAC1);
    expect(formatIp6(b, iaNaAddress(b, m.iaNa, m.iaNaLen))).toBe('fd00:10::101');
  });

  it('refuses truncated options, duplicate or oversized DUIDs, short IAs and relay messages', () => {
    const m = newDhcp6View();
    const good = msg({ type: Dhcp6Msg.SOLICIT, duid: duidLlt(MAC1) });
    expect(parseDhcp6(good, 0, good.length - 1, m)).toBe(Dhcp6Error.BAD_OPTION);
    expect(parseDhcp6(good, 0, 3, m)).toBe(Dhcp6Error.SHORT);
    const twice = Uint8Array.from([1, 0, 0, 1, 0, 1, 0, 2, 0, 3, 0, 1, 0, 2, 0, 3]);
    expect(parseDhcp6(twice, 0, twice.length, m)).toBe(Dhcp6Error.DUPLICATE);
    const big = Uint8Array.from([1, 0, 0, 1, 0, 1, 0, 131, ...new Array(131).fill(1)]);
    expect(parseDhcp6(big, 0, big.length, m)).toBe(Dhcp6Error.BAD_DUID);
    const shortIa = Uint8Array.from([1, 0, 0, 1, 0, 3, 0, 4, 0, 0, 0, 1]);
    expect(parseDhcp6(shortIa, 0, shortIa.length, m)).toBe(Dhcp6Error.BAD_IA);
    expect(parseDhcp6(Uint8Array.from([12, 0, 0, 0]), 0, 4, m)).toBe(Dhcp6Error.RELAY);
  });

  it('reads the Client FQDN host label: plain host names only', () => {
    const host = (name: string | Uint8Array): string | undefined => {
      const b = typeof name === 'string' ? msg({ type: Dhcp6Msg.SOLICIT, duid: duidLlt(MAC1), fqdn: name }) : name;
      const m = newDhcp6View();
      if (parseDhcp6(b, 0, b.length, m) !== DHCP6_OK || m.fqdn < 0) return undefined;
      return fqdnHost(b, m.fqdn, m.fqdnLen);
    };
    expect(host('VM6.lab.example.')).toBe('vm6');
    expect(host('vm-6')).toBe('vm-6');
    expect(host('-vm')).toBeUndefined();
    expect(host('vm_6')).toBeUndefined();
    expect(host('.')).toBeUndefined();
    const none = msg({ type: Dhcp6Msg.SOLICIT, duid: duidLlt(MAC1) });
    const m = newDhcp6View();
    parseDhcp6(none, 0, none.length, m);
    expect(m.fqdn).toBe(-1);
    // A label longer than the option, a compression pointer: no name.
    expect(fqdnHost(Uint8Array.of(0, 9, 0x61, 0x62), 0, 4)).toBeUndefined();
    expect(fqdnHost(Uint8Array.of(0, 0xc0, 12), 0, 3)).toBeUndefined();
  });

  it('takes the MAC from DUID-LL and DUID-LLT of Ethernet only', () => {
    const ll = duidLl(MAC2);
    expect(duidMac(ll, 0, ll.length)).toBe(MAC2);
    const en = Uint8Array.from([0, 2, 0, 0, 0, 9, 1, 2, 3]);
    expect(duidMac(en, 0, en.length)).toBe(-1);
  });
});

describe('DHCPv6 server', () => {
  it('serves every IA_NA of a message: one address per IAID, NoAddrsAvail in the IAs the pool cannot fill, Release per IA', () => {
    const s = newServer(); // a 3-address pool
    const duid = duidLlt(MAC1);
    const adv = run(s, { type: Dhcp6Msg.SOLICIT, duid, ias: [{ iaid: 1 }, { iaid: 2 }] }).reply!;
    expect(adv.type).toBe(Dhcp6Msg.ADVERTISE);
    expect(adv.ias.map((i) => i.iaid)).toEqual([1, 2]);
    const [a1, a2] = adv.ias.map((i) => i.addr!);
    expect(a1).not.toBe(a2);
    const b = msg({ type: Dhcp6Msg.REQUEST, duid, server: s.duid, ias: [{ iaid: 1, addr: a6(a1) }, { iaid: 2, addr: a6(a2) }] });
    const out = new Uint8Array(1500);
    const r = s.handle(b, 0, b.length, out, 0, ctx()) as Dhcp6Reply;
    const rep = readReply(out, r.payloadLen);
    expect(rep.ias.map((i) => [i.iaid, i.addr, i.valid])).toEqual([[1, a1, 3600], [2, a2, 3600]]);
    expect(r.leases?.map((l) => formatIp6(l.address))).toEqual([a1, a2]);
    expect(s.leases(T0).map((l) => [l.iaid, formatIp6(l.address)])).toEqual([[1, a1], [2, a2]].sort((x, y) => String(x[1]).localeCompare(String(y[1]))));
    // Renew both: both extended.
    const later = ctx({ now: T0 + 60_000 });
    const ren = run(s, { type: Dhcp6Msg.RENEW, duid, server: s.duid, ias: [{ iaid: 1, addr: a6(a1) }, { iaid: 2, addr: a6(a2) }] }, later).reply!;
    expect(ren.ias.map((i) => [i.addr, i.valid])).toEqual([[a1, 3600], [a2, 3600]]);
    // Three more IAs: one address is left; the others get NoAddrsAvail in their IA.
    const more = run(s, { type: Dhcp6Msg.SOLICIT, duid: duidLlt(MAC2), ias: [{ iaid: 7 }, { iaid: 8 }, { iaid: 9 }] }, ctx({ srcMac: MAC2, port: 'vm2' })).reply!;
    expect(more.ias.map((i) => [i.iaid, i.addr !== undefined, i.status])).toEqual([[7, true, undefined], [8, false, Dhcp6Status.NO_ADDRS_AVAIL], [9, false, Dhcp6Status.NO_ADDRS_AVAIL]]);
    // Release IA 1 and an IAID it never had: Success, NoBinding in the unknown IA only; IA 2 keeps its lease.
    const rel = run(s, { type: Dhcp6Msg.RELEASE, duid, server: s.duid, ias: [{ iaid: 1, addr: a6(a1) }, { iaid: 5, addr: a6(a1) }] }, later).reply!;
    expect([rel.status, rel.ias.map((i) => [i.iaid, i.status])]).toEqual([Dhcp6Status.SUCCESS, [[5, Dhcp6Status.NO_BINDING]]]);
    expect(s.leases(T0 + 60_000).filter((l) => l.state === 'bound').map((l) => formatIp6(l.address))).toEqual([a2]);
  });

  it('refuses a message naming one IAID twice (malformed)', () => {
    const s = newServer();
    expect(run(s, { type: Dhcp6Msg.SOLICIT, duid: duidLlt(MAC1), ias: [{ iaid: 3 }, { iaid: 3 }] }).r).toBe('malformed');
  });

  it("names a lease by the client's FQDN option, kept over a Renew without it", () => {
    const s = newServer();
    const duid = duidLlt(MAC1);
    const adv = run(s, { type: Dhcp6Msg.SOLICIT, duid, fqdn: 'web1.lab.' }).reply!;
    run(s, { type: Dhcp6Msg.REQUEST, duid, server: s.duid, addr: a6(adv.addr!), fqdn: 'web1.lab.' });
    expect(s.leases(T0).map((l) => l.hostname)).toEqual(['web1']);
    run(s, { type: Dhcp6Msg.RENEW, duid, server: s.duid, addr: a6(adv.addr!) }, ctx({ now: T0 + 1000 }));
    expect(s.leases(T0 + 1000).map((l) => l.hostname)).toEqual(['web1']);
    // Another client without a name: no hostname.
    lease(s, duidLlt(MAC2), ctx({ srcMac: MAC2, port: 'vm2' }));
    expect(s.leases(T0).filter((l) => l.mac === MAC2).map((l) => l.hostname)).toEqual([undefined]);
  });

  it('sends the Client FQDN option back with the flags it applied and the name it uses (RFC 4704 6)', () => {
    const wire = (flags: number, ...labels: string[]): number[] => [flags, ...labels.flatMap((l) => [l.length, ...Buffer.from(l)])];
    const S = FQDN_FLAG.S;
    const O = FQDN_FLAG.O;
    const N = FQDN_FLAG.N;
    const s = newServer({ domains: ['lab.example', 'other.example'] });
    const duid = duidLlt(MAC1);
    // The client asks the server to do the forward update (S): done, no override; the full name.
    const adv = run(s, { type: Dhcp6Msg.SOLICIT, duid, fqdn: 'web1.lab.', fqdnFlags: S }).reply!;
    expect([...adv.opts.get(Dhcp6Opt.CLIENT_FQDN)!]).toEqual([...wire(S, 'web1', 'lab', 'example'), 0]);
    const rep = run(s, { type: Dhcp6Msg.REQUEST, duid, server: s.duid, addr: a6(adv.addr!), fqdn: 'Web1', fqdnFlags: S }).reply!;
    expect(rep.type).toBe(Dhcp6Msg.REPLY);
    expect([...rep.opts.get(Dhcp6Opt.CLIENT_FQDN)!]).toEqual([...wire(S, 'web1', 'lab', 'example'), 0]);
    // S clear, or N (no updates) asked: the gateway's DNS serves the name anyway, so S and O (overridden).
    for (const f of [0, N]) {
      const r = run(s, { type: Dhcp6Msg.SOLICIT, duid: duidLlt(MAC2), fqdn: 'db', fqdnFlags: f, rapid: true }, ctx({ srcMac: MAC2, port: 'vm2' })).reply!;
      expect(r.opts.get(Dhcp6Opt.CLIENT_FQDN)![0], `client flags ${f}`).toBe(S | O);
    }
    // Without domains: the label alone, a partial name (no root label).
    const bare = newServer({ domains: [] });
    const r = run(bare, { type: Dhcp6Msg.SOLICIT, duid, fqdn: 'web1', fqdnFlags: S }).reply!;
    expect([...r.opts.get(Dhcp6Opt.CLIENT_FQDN)!]).toEqual(wire(S, 'web1'));
    // No option back without a usable name, without the option, or when no address is granted.
    expect(run(bare, { type: Dhcp6Msg.SOLICIT, duid: duidLlt(MAC2), fqdn: 'we_b' }, ctx({ srcMac: MAC2, port: 'vm2' })).reply!.opts.has(Dhcp6Opt.CLIENT_FQDN)).toBe(false);
    expect(run(bare, { type: Dhcp6Msg.SOLICIT, duid: duidLlt(MAC2) }, ctx({ srcMac: MAC2, port: 'vm2' })).reply!.opts.has(Dhcp6Opt.CLIENT_FQDN)).toBe(false);
    const full = newServer({ pool: { start: parseIp6('fd00:10::100')!, end: parseIp6('fd00:10::100')! } });
    lease(full, duidLlt(MAC2), ctx({ srcMac: MAC2, port: 'vm2' }));
    const none = run(full, { type: Dhcp6Msg.SOLICIT, duid, fqdn: 'web1', fqdnFlags: S }).reply!;
    expect(none.addr).toBeUndefined();
    expect(none.opts.has(Dhcp6Opt.CLIENT_FQDN)).toBe(false);
  });

  it('Solicit/Advertise/Request/Reply: an address from the pool, lifetimes, DNS and domain', () => {
    const s = newServer({ leaseTimeSec: 120 });
    const adv = run(s, { type: Dhcp6Msg.SOLICIT, duid: duidLlt(MAC1) }).reply!;
    expect(adv.type).toBe(Dhcp6Msg.ADVERTISE);
    expect(adv.addr).toBe('fd00:10::100');
    expect(adv.opts.get(Dhcp6Opt.PREFERENCE)).toEqual(Uint8Array.of(255));
    expect(formatIp6(adv.opts.get(Dhcp6Opt.DNS_SERVERS)!, 0)).toBe('fd00:10::1');
    const rep = run(s, { type: Dhcp6Msg.REQUEST, duid: duidLlt(MAC1), server: s.duid, addr: a6(adv.addr!) }).reply!;
    expect(rep).toMatchObject({ type: Dhcp6Msg.REPLY, addr: 'fd00:10::100', valid: 120, t1: 60 });
    expect(s.leases(T0)).toMatchObject([{ state: 'bound', mac: MAC1, port: 'vm1', iaid: 1 }]);
    expect(s.counters.messages).toMatchObject({ solicit: 1, advertise: 1, request: 1, reply: 1 });
  });

  it('Rapid Commit: a Reply with the lease at once', () => {
    const s = newServer();
    const { reply } = run(s, { type: Dhcp6Msg.SOLICIT, duid: duidLlt(MAC1), rapid: true });
    expect(reply!.type).toBe(Dhcp6Msg.REPLY);
    expect(reply!.opts.has(Dhcp6Opt.RAPID_COMMIT)).toBe(true);
    expect(s.leases(T0)[0].state).toBe('bound');
  });

  it('pool exhaustion: NoAddrsAvail in the IA', () => {
    const s = newServer();
    for (let i = 1; i <= 3; i++) lease(s, duidLlt(MAC1 + i), ctx({ port: `vm${i}` }));
    const adv = run(s, { type: Dhcp6Msg.SOLICIT, duid: duidLlt(MAC1 + 9) }, ctx({ port: 'vm9' })).reply!;
    expect(adv.iaStatus).toBe(Dhcp6Status.NO_ADDRS_AVAIL);
    expect(adv.addr).toBeUndefined();
    expect(s.counters.statuses.no_addrs_avail).toBe(1);
  });

  it('Renew extends; Renew of an unknown address: NoBinding; off-link: lifetimes 0; Rebind of someone else\'s: lifetimes 0', () => {
    const s = newServer();
    const d = duidLlt(MAC1);
    const ip = lease(s, d);
    const later = ctx({ now: T0 + 1800_000 });
    const ren = run(s, { type: Dhcp6Msg.RENEW, duid: d, server: s.duid, addr: a6(ip) }, later).reply!;
    expect(ren.addr).toBe(ip);
    expect(s.leases(T0)[0].expiresAt).toBe(T0 + 1800_000 + 3600_000);
    const other = lease(s, duidLlt(MAC2), ctx({ port: 'vm2', srcMac: MAC2 }));
    expect(run(s, { type: Dhcp6Msg.RENEW, duid: d, server: s.duid, addr: a6(other) }).reply!.iaStatus).toBe(Dhcp6Status.NO_BINDING);
    const off = run(s, { type: Dhcp6Msg.REBIND, duid: d, addr: a6('2001:db8::5') }).reply!;
    expect(off).toMatchObject({ addr: '2001:db8::5', valid: 0 });
    expect(run(s, { type: Dhcp6Msg.REBIND, duid: d, addr: a6(other) }).reply!.valid).toBe(0);
  });

  it('Release and Decline end the lease; a declined address is held out', () => {
    const s = newServer();
    const d = duidLlt(MAC1);
    const ip = lease(s, d);
    const rel = run(s, { type: Dhcp6Msg.RELEASE, duid: d, server: s.duid, addr: a6(ip) }).reply!;
    expect(rel.status).toBe(Dhcp6Status.SUCCESS);
    expect(s.leases(T0)).toEqual([]);
    const ip2 = lease(s, d);
    run(s, { type: Dhcp6Msg.DECLINE, duid: d, server: s.duid, addr: a6(ip2) });
    expect(s.leases(T0).map((l) => l.state)).toEqual(['declined']);
    expect(lease(s, d)).not.toBe(ip2);
  });

  it('Confirm: Success on-link, NotOnLink off it', () => {
    const s = newServer();
    expect(run(s, { type: Dhcp6Msg.CONFIRM, duid: duidLlt(MAC1), addr: a6('fd00:10::77') }).reply!.status).toBe(Dhcp6Status.SUCCESS);
    expect(run(s, { type: Dhcp6Msg.CONFIRM, duid: duidLlt(MAC1), addr: a6('fd00:99::77') }).reply!.status).toBe(Dhcp6Status.NOT_ON_LINK);
  });

  it('Information-Request: the stateless options, no IA', () => {
    const s = newServer();
    const r = run(s, { type: Dhcp6Msg.INFORMATION_REQUEST, duid: duidLlt(MAC1) }).reply!;
    expect(r.type).toBe(Dhcp6Msg.REPLY);
    expect(r.opts.has(Dhcp6Opt.IA_NA)).toBe(false);
    expect(r.opts.has(Dhcp6Opt.DNS_SERVERS)).toBe(true);
    expect(r.opts.has(Dhcp6Opt.DOMAIN_LIST)).toBe(true);
  });

  it('drops what RFC 8415 16 says to discard', () => {
    const s = newServer();
    expect(run(s, { type: Dhcp6Msg.REQUEST, duid: duidLlt(MAC1), server: duidLl(1) }).r).toBe('wrong_server');
    expect(run(s, { type: Dhcp6Msg.SOLICIT, duid: duidLlt(MAC1), server: s.duid }).r).toBe('wrong_server');
    expect(run(s, { type: Dhcp6Msg.SOLICIT }).r).toBe('no_client_id');
    expect(run(s, { type: Dhcp6Msg.ADVERTISE, duid: duidLlt(MAC1) }).r).toBe('unsupported_type');
  });

  it('reservations by DUID and by MAC: that address and no other; a reserved address to no one else', () => {
    const byDuid = duidLlt(MAC2);
    const s = newServer({
      reservations: [
        { duid: Buffer.from(byDuid).toString('hex'), address: a6('fd00:10::50') },
        { mac: MAC1, address: a6('fd00:10::51') },
      ],
    });
    expect(lease(s, byDuid, ctx({ port: 'vm2', srcMac: MAC2 }))).toBe('fd00:10::50');
    // DUID-EN: no MAC inside: the frame's source MAC is matched.
    expect(lease(s, Uint8Array.from([0, 2, 0, 0, 0, 9, 1, 2, 3]), ctx({ srcMac: MAC1 }))).toBe('fd00:10::51');
    const other = run(s, { type: Dhcp6Msg.REQUEST, duid: duidLlt(0x525400000077), server: s.duid, addr: a6('fd00:10::50') }, ctx({ port: 'vm7', srcMac: 0x525400000077 })).reply!;
    expect(other.addr).not.toBe('fd00:10::50');
  });

  it('a lease owned by a live guarded port: another port copying the DUID changes nothing', () => {
    const s = newServer();
    const d = duidLlt(MAC1);
    const ports = { guarded: () => true, live: () => true };
    const ip = lease(s, d, ctx({ guarded: true, ports }));
    const evil = ctx({ port: 'vm2', srcMac: MAC2, guarded: true, ports });
    expect(run(s, { type: Dhcp6Msg.RELEASE, duid: d, server: s.duid, addr: a6(ip) }, evil).r).toBe('not_owner');
    expect(run(s, { type: Dhcp6Msg.RENEW, duid: d, server: s.duid, addr: a6(ip) }, evil).r).toBe('not_owner');
    expect(s.leases(T0)).toMatchObject([{ address: a6(ip), port: 'vm1', state: 'bound' }]);
    // The owner gone (port down): the client may move.
    expect(run(s, { type: Dhcp6Msg.RENEW, duid: d, server: s.duid, addr: a6(ip) }, { ...evil, ports: { guarded: () => true, live: () => false } }).reply!.addr).toBe(ip);
  });

  it('caps leases + offers per guarded port', () => {
    const s = newServer({ pool: { start: a6('fd00:10::100'), end: a6('fd00:10::1ff') } });
    const g = { guarded: true, ports: { guarded: () => true, live: () => true } };
    for (let i = 0; i < 4; i++) lease(s, duidLlt(MAC1 + i), ctx(g));
    expect(run(s, { type: Dhcp6Msg.SOLICIT, duid: duidLlt(MAC1 + 10) }, ctx(g)).r).toBe('port_limit');
  });

  it('holds the Reply until the lease file has it, then delivers it', async () => {
    const { mkdtempSync, readFileSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'dhcp6-'));
    try {
      const codec = dhcp6Codec(PREFIX);
      const s = newServer({}, LeaseStore.open(dir, 'net10', T0, codec));
      const got: Dhcp6Reply[] = [];
      s.attach({ deliver: (r) => got.push(r) });
      const b = msg({ type: Dhcp6Msg.SOLICIT, duid: duidLlt(MAC1), rapid: true });
      expect(s.handle(b, 0, b.length, new Uint8Array(1500), 0, ctx())).toBe('pending');
      await s.flush();
      expect(got).toHaveLength(1);
      const file = JSON.parse(readFileSync(join(dir, 'leases6-net10.json'), 'utf8'));
      expect(file.leases[0]).toMatchObject({ ip: 'fd00:10::100', port: 'vm1' });
      s.close();
      // A restart: the lease is there, and the client renews it.
      const s2 = newServer({}, LeaseStore.open(dir, 'net10', T0 + 1000, codec));
      expect(s2.leases(T0 + 1000)).toMatchObject([{ state: 'bound', mac: MAC1 }]);
      s2.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses bad configs', () => {
    expect(() => newServer({ pool: { start: a6('fd00:10::1:0:100'), end: a6('fd00:10::2:0:100') } })).toThrow(Dhcp6ConfigError);
    expect(() => newServer({ pool: { start: a6('fd00:99::100'), end: a6('fd00:99::102') } })).toThrow(/inside the network/);
    expect(() => newServer({ reservations: [{ mac: MAC1, address: a6('fd00:10::1') }] })).toThrow(/gateway/);
  });
});
