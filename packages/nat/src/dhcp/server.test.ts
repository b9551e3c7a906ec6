import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseIp4 } from '@vswitch/switch';
import { LeaseStore } from './leases.js';
import {
  DHCP_DEFAULTS, DhcpConfigError, DhcpServer, sanitizeHostname, type DhcpContext, type DhcpPorts, type DhcpReply, type DhcpResult,
  type DhcpServerConfig,
} from './server.js';
import {
  BOOTREPLY, BOOTREQUEST, DhcpMsg, DhcpWriter, FLAG_BROADCAST, Opt, decodeClasslessRoutes, parseDhcp, type DhcpMessage,
} from './wire.js';

const ip = (s: string): number => parseIp4(s);
const T0 = Date.UTC(2025, 0, 1);
const SERVER = ip('10.0.10.1');
const RESERVED_MAC = 0x525400000099;
/** How long an offer is held (ms). */
const HOLD = DHCP_DEFAULTS.offerHoldSec * 1000;

const baseConfig = (over: Partial<DhcpServerConfig> = {}): DhcpServerConfig => ({
  name: 'net10',
  serverIp: SERVER,
  subnet: ip('10.0.10.0'),
  prefixLen: 24,
  pools: [[ip('10.0.10.100'), ip('10.0.10.199')]],
  reservations: [{ mac: RESERVED_MAC, ip: ip('10.0.10.50'), hostname: 'db' }],
  dns: [ip('10.0.10.1'), ip('1.1.1.1')],
  domain: 'vs.lan',
  mtu: 1400,
  ...over,
});

interface Req {
  type: number;
  mac: number;
  xid?: number;
  ciaddr?: number;
  giaddr?: number;
  op?: number;
  flags?: number;
  requested?: number;
  serverId?: number;
  clientId?: number[];
  hostname?: string;
  prl?: number[];
  maxSize?: number;
}

/** A client message as udhcpc/dhclient lay it out: 53 first, then what the state calls for. */
function request(r: Req): Uint8Array {
  const buf = new Uint8Array(600);
  const w = new DhcpWriter(buf);
  w.header({
    op: r.op ?? BOOTREQUEST, xid: r.xid ?? 0x1234, flags: r.flags ?? 0, ciaddr: r.ciaddr ?? 0, yiaddr: 0, siaddr: 0,
    giaddr: r.giaddr ?? 0, chaddr: r.mac,
  });
  w.u8(Opt.MESSAGE_TYPE, r.type);
  if (r.clientId) w.option(Opt.CLIENT_ID, r.clientId);
  if (r.requested !== undefined) w.u32(Opt.REQUESTED_IP, r.requested);
  if (r.serverId !== undefined) w.u32(Opt.SERVER_ID, r.serverId);
  if (r.maxSize !== undefined) w.u16(Opt.MAX_MESSAGE_SIZE, r.maxSize);
  w.option(Opt.PARAM_LIST, r.prl ?? [1, 3, 6, 12, 15, 28, 42]);
  if (r.hostname !== undefined) w.text(Opt.HOSTNAME, r.hostname);
  return buf.subarray(0, w.finish());
}

class Bench {
  now = T0;
  readonly out = new Uint8Array(1500).fill(0xa5);
  readonly server: DhcpServer;
  constructor(config: DhcpServerConfig = baseConfig(), readonly store = LeaseStore.inMemory('net10')) {
    this.server = new DhcpServer(config, store, this.now);
  }

  send(r: Req, port?: string): DhcpResult {
    const b = request(r);
    return this.server.handle(b, 0, b.length, this.out, 42, { now: this.now, port });
  }

  /** A request as the router network hands it over: from `port` (guarded per `ports`), in a frame from `src` (default chaddr). */
  from(port: string, r: Req, src = r.mac): DhcpResult {
    const b = request(r);
    const ctx: DhcpContext = { now: this.now, port, srcMac: src, guarded: this.ports.guarded(port), ports: this.ports };
    return this.server.handle(b, 0, b.length, this.out, 42, ctx);
  }

  /** Bridge ports for `from`: names starting with "vm" are guarded; `down` ones are gone or down. */
  readonly down = new Set<string>();
  readonly ports: DhcpPorts = {
    guarded: (p) => p.startsWith('vm'),
    live: (p) => !this.down.has(p),
  };

  /** DORA through `from`. */
  doraFrom(port: string, mac: number, extra: Partial<Req> = {}): number {
    const offer = this.reply(this.from(port, { type: DhcpMsg.DISCOVER, mac, ...extra }));
    const ack = this.reply(this.from(port, { type: DhcpMsg.REQUEST, mac, requested: offer.d.yiaddr, serverId: SERVER, ...extra }));
    expect(ack.m.messageType).toBe(DhcpMsg.ACK);
    return ack.d.yiaddr;
  }

  /** The reply parsed back, asserting there is one. */
  reply(res: DhcpResult): { d: DhcpReply; m: DhcpMessage } {
    if (typeof res === 'string') throw new Error(`no reply: ${res}`);
    const m = parseDhcp(this.out, 42, res.payloadLen);
    if (typeof m === 'number') throw new Error(`reply does not parse: ${m}`);
    return { d: res, m };
  }

  /** DISCOVER + REQUEST; the bound address. */
  dora(mac: number, extra: Partial<Req> = {}, port?: string): number {
    const offer = this.reply(this.send({ type: DhcpMsg.DISCOVER, mac, ...extra }, port));
    expect(offer.m.messageType).toBe(DhcpMsg.OFFER);
    const ack = this.reply(this.send({ type: DhcpMsg.REQUEST, mac, requested: offer.d.yiaddr, serverId: SERVER, ...extra }, port));
    expect(ack.m.messageType).toBe(DhcpMsg.ACK);
    expect(ack.d.yiaddr).toBe(offer.d.yiaddr);
    return ack.d.yiaddr;
  }
}

const u32 = (m: DhcpMessage, code: number): number | undefined => {
  const v = m.option(code);
  return v && v.length === 4 ? ((v[0] << 24) | (v[1] << 16) | (v[2] << 8) | v[3]) >>> 0 : undefined;
};
const MAC_A = 0x525400000001;
const MAC_B = 0x525400000002;
const MAC_C = 0x525400000003;

describe('DORA', () => {
  it('DISCOVER -> OFFER -> REQUEST -> ACK with every configured option, 53 first', () => {
    const b = new Bench();
    const cid = [1, 0x52, 0x54, 0, 0, 0, 1];
    const offer = b.reply(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_A, xid: 0xabcdef01, clientId: cid, hostname: 'vm-a', maxSize: 576 }));
    expect(offer.d.type).toBe(DhcpMsg.OFFER);
    expect(offer.d.yiaddr).toBe(ip('10.0.10.100'));
    expect(offer.d.payloadLen).toBeGreaterThanOrEqual(300);
    expect(offer.d.payloadLen).toBeLessThanOrEqual(576 - 28);
    expect(b.out[42 + offer.d.payloadLen]).toBe(0xa5);
    // no broadcast flag, no ciaddr: unicast to yiaddr at chaddr
    expect(offer.d.broadcast).toBe(false);
    expect(offer.d.dstIp).toBe(ip('10.0.10.100'));
    expect(offer.d.dstMac).toBe(MAC_A);
    expect(offer.d.srcIp).toBe(SERVER);
    const m = offer.m;
    expect(m.op).toBe(BOOTREPLY);
    expect(m.xid).toBe(0xabcdef01);
    expect(m.chaddr).toBe(MAC_A);
    expect(m.ciaddr).toBe(0);
    expect(m.codes()[0]).toBe(Opt.MESSAGE_TYPE);
    expect(m.serverId).toBe(SERVER);
    expect(u32(m, Opt.LEASE_TIME)).toBe(3600);
    expect(u32(m, Opt.RENEWAL_TIME)).toBe(1800);
    expect(u32(m, Opt.REBINDING_TIME)).toBe(3150);
    expect(u32(m, Opt.SUBNET_MASK)).toBe(0xffffff00);
    expect(u32(m, Opt.BROADCAST)).toBe(ip('10.0.10.255'));
    expect(u32(m, Opt.ROUTER)).toBe(SERVER);
    expect([...m.option(Opt.DNS)!]).toEqual([10, 0, 10, 1, 1, 1, 1, 1]);
    expect(String.fromCharCode(...m.option(Opt.DOMAIN)!)).toBe('vs.lan');
    expect([...m.option(Opt.MTU)!]).toEqual([0x05, 0x78]);
    expect([...m.option(Opt.CLIENT_ID)!]).toEqual(cid); // RFC 6842
    expect(m.has(Opt.CLASSLESS_ROUTES)).toBe(false);

    const ack = b.reply(b.send({ type: DhcpMsg.REQUEST, mac: MAC_A, clientId: cid, requested: offer.d.yiaddr, serverId: SERVER, hostname: 'vm-a' }));
    expect(ack.d.type).toBe(DhcpMsg.ACK);
    expect(ack.d.yiaddr).toBe(ip('10.0.10.100'));
    expect(ack.m.codes()[0]).toBe(Opt.MESSAGE_TYPE);
    expect(u32(ack.m, Opt.LEASE_TIME)).toBe(3600);
    expect([...ack.m.option(Opt.CLIENT_ID)!]).toEqual(cid);

    expect(b.server.leases(b.now)).toEqual([{
      ip: ip('10.0.10.100'), mac: MAC_A, clientId: '01525400000001', hostname: 'vm-a', expiresAt: T0 + 3600_000, state: 'bound',
    }]);
    const c = b.server.counters;
    expect([c.discovers, c.offers, c.requests, c.acks, c.naks]).toEqual([1, 1, 1, 1, 0]);
  });

  it('broadcasts to a client that set the broadcast flag', () => {
    const b = new Bench();
    const { d } = b.reply(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_A, flags: FLAG_BROADCAST }));
    expect(d.broadcast).toBe(true);
    expect(d.dstIp).toBe(0xffffffff);
    expect(d.dstMac).toBe(0xffffffffffff);
    const { m } = b.reply(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_A, flags: FLAG_BROADCAST }));
    expect(m.flags).toBe(FLAG_BROADCAST); // flags echoed (RFC 2131 table 3)
  });

  it('a repeated DISCOVER gets the same offer; a client with a lease is offered its address', () => {
    const b = new Bench();
    const first = b.reply(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_A })).d.yiaddr;
    expect(b.reply(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_A })).d.yiaddr).toBe(first);
    const got = b.dora(MAC_A);
    expect(got).toBe(first);
    b.now += 60_000;
    expect(b.reply(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_A })).d.yiaddr).toBe(first);
  });

  it('honours a requested address (option 50) when it is free', () => {
    const b = new Bench();
    const { d } = b.reply(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_A, requested: ip('10.0.10.150') }));
    expect(d.yiaddr).toBe(ip('10.0.10.150'));
    for (const bad of ['10.0.10.50', '10.0.10.1', '10.0.10.20', '192.168.1.5']) {
      const r = b.reply(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_B, requested: ip(bad) }));
      expect(r.d.yiaddr).not.toBe(ip(bad));
    }
  });

  it('sends option 121 only when asked, with a default route via the router added (RFC 3442)', () => {
    const b = new Bench(baseConfig({ routes: [{ dest: ip('192.168.50.0'), prefixLen: 24, gateway: ip('10.0.10.254') }] }));
    const plain = b.reply(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_A }));
    expect(plain.m.has(Opt.CLASSLESS_ROUTES)).toBe(false);
    const asked = b.reply(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_A, prl: [1, 3, 121] }));
    expect([...asked.m.option(Opt.CLASSLESS_ROUTES)!]).toEqual([24, 192, 168, 50, 10, 0, 10, 254, 0, 10, 0, 10, 1]);
    expect(decodeClasslessRoutes(asked.m.option(Opt.CLASSLESS_ROUTES)!)).toEqual([
      { dest: ip('192.168.50.0'), prefixLen: 24, gateway: ip('10.0.10.254') },
      { dest: 0, prefixLen: 0, gateway: SERVER },
    ]);
    const own = new Bench(baseConfig({ routes: [{ dest: 0, prefixLen: 0, gateway: ip('10.0.10.2') }] }));
    const r = own.reply(own.send({ type: DhcpMsg.DISCOVER, mac: MAC_A, prl: [121] }));
    expect([...r.m.option(Opt.CLASSLESS_ROUTES)!]).toEqual([0, 10, 0, 10, 2]);
  });

  it('a reply never exceeds the caller buffer; too small a buffer drops with no_room', () => {
    const b = new Bench();
    const msg = request({ type: DhcpMsg.DISCOVER, mac: MAC_A });
    const small = new Uint8Array(299);
    expect(b.server.handle(msg, 0, msg.length, small, 0, { now: b.now })).toBe('no_room');
    expect(b.server.counters.dropped.no_room).toBe(1);
  });
});

describe('REQUEST states (RFC 2131 4.3.2)', () => {
  it('SELECTING another server withdraws our offer, which then goes to someone else', () => {
    const b = new Bench(baseConfig({ pools: [[ip('10.0.10.100'), ip('10.0.10.100')]] }));
    const o = b.reply(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_A })).d.yiaddr;
    expect(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_B })).toBe('pool_exhausted');
    expect(b.send({ type: DhcpMsg.REQUEST, mac: MAC_A, requested: o, serverId: ip('10.0.10.2') })).toBe('wrong_server');
    expect(b.server.counters.dropped.wrong_server).toBe(1);
    expect(b.reply(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_B })).d.yiaddr).toBe(o);
  });

  it('SELECTING an address offered to another client is NAKed, to 255.255.255.255 in a frame to the requester only', () => {
    const b = new Bench();
    const oa = b.reply(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_A })).d.yiaddr;
    const ob = b.reply(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_B })).d.yiaddr;
    expect(ob).not.toBe(oa);
    const nak = b.reply(b.send({ type: DhcpMsg.REQUEST, mac: MAC_B, requested: oa, serverId: SERVER }));
    expect(nak.d.type).toBe(DhcpMsg.NAK);
    expect(nak.d.yiaddr).toBe(0);
    expect(nak.d.broadcast).toBe(true);
    expect(nak.d.dstIp).toBe(0xffffffff);
    expect(nak.d.dstMac).toBe(MAC_B);
    expect(nak.m.serverId).toBe(SERVER);
    expect(nak.m.has(Opt.LEASE_TIME)).toBe(false);
    expect(b.server.counters.nakReasons.address_taken).toBe(1);
    // A still gets its own
    expect(b.reply(b.send({ type: DhcpMsg.REQUEST, mac: MAC_A, requested: oa, serverId: SERVER })).d.type).toBe(DhcpMsg.ACK);
  });

  it('a REQUEST arriving after the offer hold is still granted if the address is free', () => {
    const b = new Bench();
    const o = b.reply(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_A })).d.yiaddr;
    b.now += 120_000;
    b.server.expire(b.now);
    expect(b.reply(b.send({ type: DhcpMsg.REQUEST, mac: MAC_A, requested: o, serverId: SERVER })).d.type).toBe(DhcpMsg.ACK);
  });

  it('RENEWING (unicast, ciaddr) extends the lease and is answered to ciaddr', () => {
    const b = new Bench();
    const a = b.dora(MAC_A, { hostname: 'vm-a' });
    b.now += 1800_000;
    const ack = b.reply(b.send({ type: DhcpMsg.REQUEST, mac: MAC_A, ciaddr: a }));
    expect(ack.d.type).toBe(DhcpMsg.ACK);
    expect(ack.d.yiaddr).toBe(a);
    expect(ack.m.ciaddr).toBe(a);
    expect(ack.d.broadcast).toBe(false);
    expect(ack.d.dstIp).toBe(a);
    const [l] = b.server.leases(b.now);
    expect(l.expiresAt).toBe(b.now + 3600_000);
    expect(l.hostname).toBe('vm-a'); // kept though the renewal carried no option 12
  });

  it('REBINDING (broadcast flag, ciaddr) is still answered to ciaddr', () => {
    const b = new Bench();
    const a = b.dora(MAC_A);
    b.now += 3200_000;
    const ack = b.reply(b.send({ type: DhcpMsg.REQUEST, mac: MAC_A, ciaddr: a, flags: FLAG_BROADCAST }));
    expect(ack.d.type).toBe(DhcpMsg.ACK);
    expect(ack.d.broadcast).toBe(false);
    expect(ack.d.dstIp).toBe(a);
  });

  it('renewing an address held by someone else, or outside the subnet, is NAKed', () => {
    const b = new Bench();
    const a = b.dora(MAC_A);
    b.dora(MAC_B);
    const nak = b.reply(b.send({ type: DhcpMsg.REQUEST, mac: MAC_B, ciaddr: a }));
    expect(nak.d.type).toBe(DhcpMsg.NAK);
    expect(nak.d.broadcast).toBe(true);
    expect(b.reply(b.send({ type: DhcpMsg.REQUEST, mac: MAC_C, ciaddr: ip('192.168.1.10') })).d.type).toBe(DhcpMsg.NAK);
    expect(b.server.counters.nakReasons.address_taken).toBe(1);
    expect(b.server.counters.nakReasons.wrong_subnet).toBe(1);
  });

  it('renewing after the lease expired keeps the address if nobody took it', () => {
    const b = new Bench();
    const a = b.dora(MAC_A);
    b.now += 4000_000;
    b.server.expire(b.now);
    expect(b.server.leases(b.now)).toEqual([]);
    expect(b.reply(b.send({ type: DhcpMsg.REQUEST, mac: MAC_A, ciaddr: a })).d.type).toBe(DhcpMsg.ACK);
  });

  it('INIT-REBOOT: ACK for the client\'s address, NAK for another or off-subnet, silence without a record', () => {
    const b = new Bench();
    const a = b.dora(MAC_A);
    const ack = b.reply(b.send({ type: DhcpMsg.REQUEST, mac: MAC_A, requested: a }));
    expect(ack.d.type).toBe(DhcpMsg.ACK);
    expect(ack.d.yiaddr).toBe(a);
    // the client moved from another network
    const wrongNet = b.reply(b.send({ type: DhcpMsg.REQUEST, mac: MAC_A, requested: ip('192.168.1.7') }));
    expect(wrongNet.d.type).toBe(DhcpMsg.NAK);
    // a different address from the one we know
    expect(b.reply(b.send({ type: DhcpMsg.REQUEST, mac: MAC_A, requested: ip('10.0.10.150') })).d.type).toBe(DhcpMsg.NAK);
    // unknown client asking for someone else's address
    expect(b.reply(b.send({ type: DhcpMsg.REQUEST, mac: MAC_B, requested: a })).d.type).toBe(DhcpMsg.NAK);
    // unknown client, free address: RFC 2131 says MUST remain silent
    expect(b.send({ type: DhcpMsg.REQUEST, mac: MAC_C, requested: ip('10.0.10.160') })).toBe('no_record');
    // unknown client, reserved address
    expect(b.reply(b.send({ type: DhcpMsg.REQUEST, mac: MAC_C, requested: ip('10.0.10.50') })).d.type).toBe(DhcpMsg.NAK);
    const c = b.server.counters;
    expect(c.nakReasons).toMatchObject({ wrong_subnet: 1, not_allowed: 1, address_taken: 2 });
    expect(c.dropped.no_record).toBe(1);
  });

  it('INIT-REBOOT after release gets the remembered address back', () => {
    const b = new Bench();
    const a = b.dora(MAC_A);
    expect(b.send({ type: DhcpMsg.RELEASE, mac: MAC_A, ciaddr: a, serverId: SERVER })).toBe('handled');
    expect(b.reply(b.send({ type: DhcpMsg.REQUEST, mac: MAC_A, requested: a })).d.type).toBe(DhcpMsg.ACK);
  });

  it('a REQUEST without an address is dropped', () => {
    const b = new Bench();
    expect(b.send({ type: DhcpMsg.REQUEST, mac: MAC_A })).toBe('bad_request');
    expect(b.send({ type: DhcpMsg.REQUEST, mac: MAC_A, serverId: SERVER })).toBe('bad_request');
  });
});

describe('reservations', () => {
  it('the reserved MAC gets its address (outside the pool) and hostname', () => {
    const b = new Bench();
    const offer = b.reply(b.send({ type: DhcpMsg.DISCOVER, mac: RESERVED_MAC, requested: ip('10.0.10.120') }));
    expect(offer.d.yiaddr).toBe(ip('10.0.10.50'));
    expect(String.fromCharCode(...offer.m.option(Opt.HOSTNAME)!)).toBe('db');
    expect(b.dora(RESERVED_MAC)).toBe(ip('10.0.10.50'));
    expect(b.server.leases(b.now)[0]).toMatchObject({ ip: ip('10.0.10.50'), hostname: 'db', state: 'bound' });
    // renewing a pool address is refused: the reserved client belongs on its reservation
    expect(b.reply(b.send({ type: DhcpMsg.REQUEST, mac: RESERVED_MAC, ciaddr: ip('10.0.10.120') })).d.type).toBe(DhcpMsg.NAK);
  });

  it('a reserved address inside the pool is never given to another client, even with the pool exhausted', () => {
    const cfg = baseConfig({
      pools: [[ip('10.0.10.100'), ip('10.0.10.102')]],
      reservations: [{ mac: RESERVED_MAC, ip: ip('10.0.10.101') }],
    });
    const b = new Bench(cfg);
    const got = [b.dora(MAC_A), b.dora(MAC_B)];
    expect(got).toEqual([ip('10.0.10.100'), ip('10.0.10.102')]);
    expect(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_C, requested: ip('10.0.10.101') })).toBe('pool_exhausted');
    expect(b.reply(b.send({ type: DhcpMsg.REQUEST, mac: MAC_C, requested: ip('10.0.10.101'), serverId: SERVER })).d.type).toBe(DhcpMsg.NAK);
    expect(b.reply(b.send({ type: DhcpMsg.REQUEST, mac: MAC_C, ciaddr: ip('10.0.10.101') })).d.type).toBe(DhcpMsg.NAK);
    expect(b.dora(RESERVED_MAC)).toBe(ip('10.0.10.101'));
  });

  it('a reservation matches the chaddr whatever the client id', () => {
    const b = new Bench();
    expect(b.dora(RESERVED_MAC, { clientId: [0xff, 1, 2, 3, 4] })).toBe(ip('10.0.10.50'));
  });
});

describe('pool exhaustion and offers', () => {
  const two = (): DhcpServerConfig => baseConfig({ pools: [[ip('10.0.10.100'), ip('10.0.10.101')]] });

  it('pool of 2, 3 clients: the third gets no offer, and it is counted', () => {
    const b = new Bench(two());
    expect(b.dora(MAC_A)).toBe(ip('10.0.10.100'));
    expect(b.dora(MAC_B)).toBe(ip('10.0.10.101'));
    expect(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_C })).toBe('pool_exhausted');
    expect(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_C })).toBe('pool_exhausted');
    const nak = b.reply(b.send({ type: DhcpMsg.REQUEST, mac: MAC_C, requested: ip('10.0.10.100'), serverId: SERVER }));
    expect(nak.d.type).toBe(DhcpMsg.NAK);
    const c = b.server.counters;
    expect(c.dropped.pool_exhausted).toBe(2);
    expect(c.discovers).toBe(4);
    expect(c.offers).toBe(2);
    expect(c.naks).toBe(1);
    // the first two still renew
    expect(b.reply(b.send({ type: DhcpMsg.REQUEST, mac: MAC_A, ciaddr: ip('10.0.10.100') })).d.type).toBe(DhcpMsg.ACK);
  });

  it('an offer is not handed out twice while held, and is free again after the hold', () => {
    const b = new Bench(baseConfig({ pools: [[ip('10.0.10.100'), ip('10.0.10.100')]] }));
    const oa = b.reply(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_A })).d.yiaddr;
    b.now += HOLD - 1000;
    expect(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_B })).toBe('pool_exhausted');
    expect(b.server.leases(b.now)).toMatchObject([{ ip: oa, mac: MAC_A, state: 'offered' }]);
    b.now += 2_000;
    expect(b.reply(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_B })).d.yiaddr).toBe(oa);
    // A comes back late: the address is B's offer now
    expect(b.reply(b.send({ type: DhcpMsg.REQUEST, mac: MAC_A, requested: oa, serverId: SERVER })).d.type).toBe(DhcpMsg.NAK);
  });

  it('concurrent DISCOVERs never get the same address (fast-check)', () => {
    fc.assert(fc.property(fc.array(fc.integer({ min: 1, max: 40 }), { maxLength: 60 }), (macs) => {
      const b = new Bench(baseConfig({ pools: [[ip('10.0.10.100'), ip('10.0.10.119')]] }));
      const owner = new Map<number, number>();
      for (const mac of macs) {
        const r = b.send({ type: DhcpMsg.DISCOVER, mac });
        if (typeof r === 'string') { expect(r).toBe('pool_exhausted'); continue; }
        const prev = owner.get(r.yiaddr);
        expect(prev === undefined || prev === mac).toBe(true);
        owner.set(r.yiaddr, mac);
      }
    }), { numRuns: 100 });
  });

  it('hands addresses out next-fit, so a released address is not reused at once', () => {
    const b = new Bench(baseConfig({ pools: [[ip('10.0.10.100'), ip('10.0.10.102')]] }));
    const a = b.dora(MAC_A);
    b.send({ type: DhcpMsg.RELEASE, mac: MAC_A, ciaddr: a });
    expect(b.dora(MAC_B)).toBe(ip('10.0.10.101'));
  });
});

describe('DECLINE and RELEASE', () => {
  it('DECLINE frees the lease and keeps the address out of use for 10 minutes', () => {
    const b = new Bench(baseConfig({ pools: [[ip('10.0.10.100'), ip('10.0.10.101')]] }));
    const a = b.dora(MAC_A);
    expect(b.send({ type: DhcpMsg.DECLINE, mac: MAC_A, requested: a, serverId: SERVER })).toBe('handled');
    expect(b.server.counters.declines).toBe(1);
    expect(b.server.leases(b.now)).toEqual([{ ip: a, mac: 0, expiresAt: b.now + 600_000, state: 'declined' }]);
    // the client gets another address, not the declined one
    expect(b.dora(MAC_A)).toBe(ip('10.0.10.101'));
    expect(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_B, requested: a })).toBe('pool_exhausted');
    b.now += 600_000;
    expect(b.reply(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_B })).d.yiaddr).toBe(a);
  });

  it('DECLINE of an offered address works; DECLINE from a non-holder is ignored', () => {
    const b = new Bench();
    const oa = b.reply(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_A })).d.yiaddr;
    expect(b.send({ type: DhcpMsg.DECLINE, mac: MAC_B, requested: oa })).toBe('no_record');
    expect(b.send({ type: DhcpMsg.DECLINE, mac: MAC_B, requested: ip('10.0.10.150') })).toBe('no_record');
    expect(b.send({ type: DhcpMsg.DECLINE, mac: MAC_A, requested: oa })).toBe('handled');
    expect(b.server.leases(b.now).map((l) => l.state)).toEqual(['declined']);
    expect(b.send({ type: DhcpMsg.DECLINE, mac: MAC_A })).toBe('bad_request');
  });

  it('RELEASE frees the address for others; only the holder can release', () => {
    const b = new Bench(baseConfig({ pools: [[ip('10.0.10.100'), ip('10.0.10.100')]] }));
    const a = b.dora(MAC_A);
    expect(b.send({ type: DhcpMsg.RELEASE, mac: MAC_B, ciaddr: a })).toBe('no_record');
    expect(b.send({ type: DhcpMsg.RELEASE, mac: MAC_A, ciaddr: a, serverId: ip('10.0.10.2') })).toBe('wrong_server');
    expect(b.server.leases(b.now)).toHaveLength(1);
    expect(b.send({ type: DhcpMsg.RELEASE, mac: MAC_A, ciaddr: a, serverId: SERVER })).toBe('handled');
    expect(b.server.counters.releases).toBe(3);
    expect(b.server.leases(b.now)).toEqual([]);
    expect(b.dora(MAC_B)).toBe(a);
  });
});

describe('INFORM', () => {
  it('ACKs with network options, no lease, no yiaddr, to ciaddr', () => {
    const b = new Bench();
    const r = b.reply(b.send({ type: DhcpMsg.INFORM, mac: MAC_A, ciaddr: ip('10.0.10.7') }));
    expect(r.d.type).toBe(DhcpMsg.ACK);
    expect(r.d.yiaddr).toBe(0);
    expect(r.m.yiaddr).toBe(0);
    expect(r.m.ciaddr).toBe(ip('10.0.10.7'));
    expect(r.d.dstIp).toBe(ip('10.0.10.7'));
    expect(r.d.broadcast).toBe(false);
    for (const code of [Opt.LEASE_TIME, Opt.RENEWAL_TIME, Opt.REBINDING_TIME]) expect(r.m.has(code)).toBe(false);
    expect(r.m.serverId).toBe(SERVER);
    expect(u32(r.m, Opt.ROUTER)).toBe(SERVER);
    expect(r.m.has(Opt.DNS)).toBe(true);
    expect(b.server.leases(b.now)).toEqual([]);
    expect(b.server.counters.informs).toBe(1);
    // no ciaddr: nowhere to unicast, so broadcast
    expect(b.reply(b.send({ type: DhcpMsg.INFORM, mac: MAC_A })).d.broadcast).toBe(true);
  });
});

describe('expiry with a fake clock', () => {
  it('expire() removes leases, offers and declines when due, and reports the next deadline', () => {
    const b = new Bench(baseConfig({ leaseTimeSec: 600 }));
    const a = b.dora(MAC_A);
    b.reply(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_B }));
    expect(b.server.nextExpiry()).toBe(T0 + HOLD);
    b.now += HOLD;
    expect(b.server.expire(b.now)).toBe(1);
    expect(b.server.leases(b.now).map((l) => l.state)).toEqual(['bound']);
    expect(b.server.nextExpiry()).toBe(T0 + 600_000);
    b.now = T0 + 599_999;
    expect(b.server.expire(b.now)).toBe(0);
    b.now = T0 + 600_000;
    expect(b.server.leases(b.now)).toEqual([]); // the view hides it before the sweep
    expect(b.server.expire(b.now)).toBe(1);
    expect(b.server.nextExpiry()).toBe(Infinity);
    // the client comes back and gets its old address
    expect(b.dora(MAC_A)).toBe(a);
  });

  it('an expired lease is free for others even before the sweep', () => {
    const b = new Bench(baseConfig({ pools: [[ip('10.0.10.100'), ip('10.0.10.100')]], leaseTimeSec: 60 }));
    const a = b.dora(MAC_A);
    expect(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_B })).toBe('pool_exhausted');
    b.now += 60_000;
    expect(b.dora(MAC_B)).toBe(a);
    expect(b.reply(b.send({ type: DhcpMsg.REQUEST, mac: MAC_A, ciaddr: a })).d.type).toBe(DhcpMsg.NAK);
  });
});

describe('client identity', () => {
  it('option 61 is the key: one chaddr with two client ids is two clients', () => {
    const b = new Bench();
    const x = b.dora(MAC_A, { clientId: [0xff, 0, 0, 0, 1] });
    const y = b.dora(MAC_A, { clientId: [0xff, 0, 0, 0, 2] });
    const z = b.dora(MAC_A);
    expect(new Set([x, y, z]).size).toBe(3);
    expect(b.server.leases(b.now).map((l) => l.clientId)).toEqual(['ff00000001', 'ff00000002', undefined]);
  });

  it('hostnames are sanitised for display', () => {
    expect(sanitizeHostname('vm\x1b[31m;rm -rf')).toBe('vm31mrm-rf');
    expect(sanitizeHostname('\x00\x01')).toBeUndefined();
    expect(sanitizeHostname('a'.repeat(100))).toHaveLength(63);
  });
});

describe('per-port lease limit', () => {
  it('a port at its limit gets no new lease; other ports and existing clients are unaffected', () => {
    const b = new Bench(baseConfig({ maxLeasesPerPort: 2 }));
    b.dora(MAC_A, {}, 'vm1');
    b.dora(MAC_B, {}, 'vm1');
    expect(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_C }, 'vm1')).toBe('port_limit');
    expect(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_C, requested: ip('10.0.10.150') }, 'vm1')).toBe('port_limit');
    const nak = b.reply(b.send({ type: DhcpMsg.REQUEST, mac: MAC_C, requested: ip('10.0.10.150'), serverId: SERVER }, 'vm1'));
    expect(nak.d.type).toBe(DhcpMsg.NAK);
    expect(b.server.counters.dropped.port_limit).toBe(2);
    expect(b.server.counters.nakReasons.port_limit).toBe(1);
    // existing clients renew and rediscover
    expect(b.reply(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_A }, 'vm1')).d.type).toBe(DhcpMsg.OFFER);
    // another port, and a reserved client, are not limited
    expect(b.dora(MAC_C, {}, 'vm2')).toBeGreaterThan(0);
    expect(b.dora(RESERVED_MAC, {}, 'vm1')).toBe(ip('10.0.10.50'));
    expect(b.server.leases(b.now).find((l) => l.mac === MAC_C)?.port).toBe('vm2');
  });
});

describe('leases bound to the port and the frame (guarded ports)', () => {
  const VM1 = 'vm1';
  const VM2 = 'vm2';
  const CID_B = [1, 0x52, 0x54, 0, 0, 0, 2];

  it('chaddr must be the frame\'s source MAC on a guarded port; unguarded ports are not checked', () => {
    const b = new Bench();
    expect(b.from(VM1, { type: DhcpMsg.DISCOVER, mac: MAC_B }, MAC_A)).toBe('chaddr_mismatch');
    expect(b.from(VM1, { type: DhcpMsg.REQUEST, mac: MAC_B, requested: ip('10.0.10.150'), serverId: SERVER }, MAC_A)).toBe('chaddr_mismatch');
    expect(b.from(VM1, { type: DhcpMsg.RELEASE, mac: MAC_B, ciaddr: ip('10.0.10.150') }, MAC_A)).toBe('chaddr_mismatch');
    expect(b.server.counters.dropped.chaddr_mismatch).toBe(3);
    expect(b.reply(b.from('trunk0', { type: DhcpMsg.DISCOVER, mac: MAC_B }, MAC_A)).d.type).toBe(DhcpMsg.OFFER);
  });

  it('a spoofed REQUEST from another port (victim\'s chaddr, client id and address, from 0.0.0.0) is NAKed to the requester; the victim keeps its lease', () => {
    const b = new Bench();
    const a = b.doraFrom(VM2, MAC_B, { clientId: CID_B });
    const spoof = (r: Req): DhcpResult => b.from(VM1, { mac: MAC_B, clientId: CID_B, ...r });
    // INIT-REBOOT, SELECTING, RENEWING: all NAKed as not the owner, to the frame's source only
    for (const r of [
      { type: DhcpMsg.REQUEST, requested: a },
      { type: DhcpMsg.REQUEST, requested: a, serverId: SERVER },
      { type: DhcpMsg.REQUEST, ciaddr: a },
    ]) {
      const nak = b.reply(spoof(r));
      expect(nak.d.type).toBe(DhcpMsg.NAK);
      expect(nak.d.dstMac).toBe(MAC_B); // the frame's source: the spoofer (its port is where the bridge learned it)
    }
    expect(b.server.counters.nakReasons.not_owner).toBe(3);
    // DISCOVER, RELEASE, DECLINE: silence, counted
    expect(spoof({ type: DhcpMsg.DISCOVER })).toBe('not_owner');
    expect(spoof({ type: DhcpMsg.RELEASE, ciaddr: a, serverId: SERVER })).toBe('not_owner');
    expect(spoof({ type: DhcpMsg.DECLINE, requested: a, serverId: SERVER })).toBe('not_owner');
    // REQUEST naming another server: silence too, and the victim's offer/lease untouched
    expect(spoof({ type: DhcpMsg.REQUEST, requested: a, serverId: ip('10.0.10.2') })).toBe('not_owner');
    expect(b.server.counters.dropped.not_owner).toBe(4);
    const [l] = b.server.leases(b.now);
    expect(l).toMatchObject({ ip: a, mac: MAC_B, port: VM2, state: 'bound' });
    // the victim still renews from its own port
    expect(b.reply(b.from(VM2, { type: DhcpMsg.REQUEST, mac: MAC_B, clientId: CID_B, ciaddr: a })).d.type).toBe(DhcpMsg.ACK);
    expect(b.server.leases(b.now).filter((x) => x.state === 'declined')).toEqual([]);
  });

  it('the client id alone is not an identity: the same client id with another MAC on the same port is refused too', () => {
    const b = new Bench();
    const a = b.doraFrom(VM2, MAC_B, { clientId: CID_B });
    expect(b.reply(b.from(VM2, { type: DhcpMsg.REQUEST, mac: MAC_C, clientId: CID_B, ciaddr: a })).d.type).toBe(DhcpMsg.NAK);
    expect(b.server.leases(b.now)[0]).toMatchObject({ mac: MAC_B, port: VM2 });
  });

  it('a lease on a guarded port is protected from unguarded ports as well; between unguarded ports clients move freely', () => {
    const b = new Bench();
    const a = b.doraFrom(VM2, MAC_B);
    expect(b.reply(b.from('trunk0', { type: DhcpMsg.REQUEST, mac: MAC_B, ciaddr: a })).d.type).toBe(DhcpMsg.NAK);
    const t = b.doraFrom('trunk0', MAC_C);
    expect(b.reply(b.from('trunk1', { type: DhcpMsg.REQUEST, mac: MAC_C, ciaddr: t })).d.type).toBe(DhcpMsg.ACK);
    expect(b.server.leases(b.now).find((l) => l.mac === MAC_C)?.port).toBe('trunk1');
  });

  it('takeover: a VM that moved gets its lease on the new port once the old port is gone or down, never before', () => {
    const b = new Bench();
    const a = b.doraFrom(VM2, MAC_B, { clientId: CID_B });
    const renew = (): DhcpResult => b.from('vm9', { type: DhcpMsg.REQUEST, mac: MAC_B, clientId: CID_B, ciaddr: a });
    expect(b.reply(renew()).d.type).toBe(DhcpMsg.NAK);
    b.down.add(VM2); // the old TAP was removed (live migration done)
    const ack = b.reply(renew());
    expect(ack.d.type).toBe(DhcpMsg.ACK);
    expect(ack.d.yiaddr).toBe(a);
    expect(b.server.leases(b.now)[0]).toMatchObject({ ip: a, mac: MAC_B, port: 'vm9' });
    // the old port comes back up: the lease is vm9's now, and vm2 may not take it back while vm9 is up
    b.down.delete(VM2);
    expect(b.reply(b.from(VM2, { type: DhcpMsg.REQUEST, mac: MAC_B, clientId: CID_B, ciaddr: a })).d.type).toBe(DhcpMsg.NAK);
  });

  it('an offer belongs to its port too: a spoofed DISCOVER or REQUEST from another port does not take it over', () => {
    const b = new Bench();
    const o = b.reply(b.from(VM2, { type: DhcpMsg.DISCOVER, mac: MAC_B })).d.yiaddr;
    expect(b.from(VM1, { type: DhcpMsg.DISCOVER, mac: MAC_B })).toBe('not_owner');
    expect(b.reply(b.from(VM1, { type: DhcpMsg.REQUEST, mac: MAC_B, requested: o, serverId: SERVER })).d.type).toBe(DhcpMsg.NAK);
    expect(b.reply(b.from(VM2, { type: DhcpMsg.REQUEST, mac: MAC_B, requested: o, serverId: SERVER })).d.type).toBe(DhcpMsg.ACK);
  });

  it('guarded ports get 4 leases + offers by default, unguarded ones no cap; a configured cap applies to all, 0 to none', () => {
    const b = new Bench();
    for (let i = 0; i < 4; i++) b.doraFrom(VM1, MAC_A + 0x100 + i);
    expect(b.from(VM1, { type: DhcpMsg.DISCOVER, mac: MAC_A + 0x200 })).toBe('port_limit');
    expect(b.reply(b.from(VM1, { type: DhcpMsg.REQUEST, mac: MAC_A + 0x200, requested: ip('10.0.10.150'), serverId: SERVER })).d.type).toBe(DhcpMsg.NAK);
    for (let i = 0; i < 10; i++) b.doraFrom('trunk0', MAC_A + 0x300 + i);
    expect(b.server.policy().maxLeasesPerPort).toEqual({ guarded: 4, unguarded: null });

    const c = new Bench(baseConfig({ maxLeasesPerPort: 2 }));
    c.doraFrom('trunk0', MAC_A);
    c.doraFrom('trunk0', MAC_B);
    expect(c.from('trunk0', { type: DhcpMsg.DISCOVER, mac: MAC_C })).toBe('port_limit');
    expect(c.server.policy().maxLeasesPerPort).toEqual({ guarded: 2, unguarded: 2 });

    const d = new Bench(baseConfig({ maxLeasesPerPort: 0 }));
    for (let i = 0; i < 6; i++) d.doraFrom(VM1, MAC_A + 0x100 + i);
    expect(d.server.policy().maxLeasesPerPort).toEqual({ guarded: null, unguarded: null });
  });

  it('a DISCOVER flood with random client ids holds at most 4 offers on its port, and a real client on that port still gets a lease', () => {
    const b = new Bench(baseConfig({ pools: [[ip('10.0.10.100'), ip('10.0.10.119')]] }));
    // a neighbour with a lease on vm2 is never touched
    const n = b.doraFrom(VM2, MAC_B);
    for (let i = 0; i < 440; i++) {
      const r = b.from(VM1, { type: DhcpMsg.DISCOVER, mac: MAC_A, clientId: [0xff, i >> 8, i & 0xff, 7] });
      expect(typeof r === 'object' && r.type).toBe(DhcpMsg.OFFER);
    }
    const onVm1 = b.server.leases(b.now).filter((l) => l.port === VM1);
    expect(onVm1.length).toBe(4);
    expect(onVm1.every((l) => l.state === 'offered')).toBe(true);
    expect(b.server.counters.offersReclaimed).toBe(436);
    // the real client on the flooding port (its own MAC, no client id) gets an offer and a lease
    const real = b.doraFrom(VM1, MAC_A);
    expect(real).toBeGreaterThan(0);
    // and one on another port too; the neighbour keeps its lease
    expect(b.doraFrom('vm3', MAC_C)).toBeGreaterThan(0);
    expect(b.server.leases(b.now).find((l) => l.mac === MAC_B)).toMatchObject({ ip: n, port: VM2, state: 'bound' });
  });

  it('SELECTING REQUESTs for invented chaddrs bind at most 4 leases on their port; other ports are unaffected', () => {
    const b = new Bench(baseConfig({ pools: [[ip('10.0.10.100'), ip('10.0.10.119')]] }));
    let acks = 0;
    for (let i = 0; i < 100; i++) {
      const mac = 0x020000000100 + i;
      const r = b.from(VM1, { type: DhcpMsg.REQUEST, mac, requested: ip('10.0.10.100') + (i % 20), serverId: SERVER });
      if (typeof r === 'object' && r.type === DhcpMsg.ACK) acks++;
    }
    expect(acks).toBe(4);
    expect(b.server.counters.nakReasons.port_limit).toBeGreaterThan(50);
    expect(b.doraFrom(VM2, MAC_B)).toBeGreaterThan(0);
  });

  it('a reservation is exempt from the cap', () => {
    const b = new Bench();
    for (let i = 0; i < 4; i++) b.doraFrom(VM1, MAC_A + 0x100 + i);
    expect(b.doraFrom(VM1, RESERVED_MAC)).toBe(ip('10.0.10.50'));
  });

  it('INFORM is answered whoever asks', () => {
    const b = new Bench();
    b.doraFrom(VM2, MAC_B);
    expect(b.reply(b.from(VM1, { type: DhcpMsg.INFORM, mac: MAC_B, ciaddr: ip('10.0.10.77') })).d.type).toBe(DhcpMsg.ACK);
  });
});

describe('refusals', () => {
  it('malformed, replies from other servers, relayed, bad chaddr and server message types are dropped and counted', () => {
    const b = new Bench();
    const junk = new Uint8Array(100);
    expect(b.server.handle(junk, 0, junk.length, b.out, 0, { now: b.now })).toBe('malformed');
    expect(b.send({ type: DhcpMsg.OFFER, mac: MAC_A, op: BOOTREPLY })).toBe('not_request');
    expect(b.send({ type: DhcpMsg.DISCOVER, mac: MAC_A, giaddr: ip('10.9.9.9') })).toBe('relayed');
    expect(b.send({ type: DhcpMsg.DISCOVER, mac: 0 })).toBe('bad_chaddr');
    expect(b.send({ type: DhcpMsg.DISCOVER, mac: 0x010000000001 })).toBe('bad_chaddr');
    expect(b.send({ type: DhcpMsg.ACK, mac: MAC_A })).toBe('unsupported_type');
    expect(b.send({ type: 99, mac: MAC_A })).toBe('unsupported_type');
    expect(b.server.counters.dropped).toMatchObject({ malformed: 1, not_request: 1, relayed: 1, bad_chaddr: 2, unsupported_type: 2 });
  });

  it('random and mutated requests never throw (fast-check)', () => {
    const b = new Bench(baseConfig({ pools: [[ip('10.0.10.100'), ip('10.0.10.103')]], maxLeasesPerPort: 3 }));
    const seeds = [
      request({ type: DhcpMsg.DISCOVER, mac: MAC_A, clientId: [1, 2, 3] }),
      request({ type: DhcpMsg.REQUEST, mac: MAC_B, requested: ip('10.0.10.100'), serverId: SERVER }),
      request({ type: DhcpMsg.REQUEST, mac: MAC_C, ciaddr: ip('10.0.10.101') }),
      request({ type: DhcpMsg.DECLINE, mac: MAC_A, requested: ip('10.0.10.100') }),
      request({ type: DhcpMsg.RELEASE, mac: MAC_A, ciaddr: ip('10.0.10.100') }),
      request({ type: DhcpMsg.INFORM, mac: MAC_A }),
    ];
    fc.assert(fc.property(
      fc.nat(seeds.length - 1),
      fc.array(fc.record({ i: fc.nat(299), v: fc.nat(255) }), { maxLength: 8 }),
      fc.nat(70_000),
      fc.constantFrom(undefined, 'p1', 'p2'),
      (s, muts, dt, port) => {
        const msg = Uint8Array.from(seeds[s]);
        for (const { i, v } of muts) if (i < msg.length) msg[i] = v;
        b.now += dt;
        const r = b.server.handle(msg, 0, msg.length, b.out, 42, { now: b.now, port });
        if (typeof r !== 'string') {
          expect(r.payloadLen).toBeGreaterThanOrEqual(300);
          expect(typeof parseDhcp(b.out, 42, r.payloadLen)).toBe('object');
        }
        b.server.expire(b.now);
        // invariant: no address has two holders, and no declined address is held
        const view = b.server.leases(b.now);
        const live = view.filter((l) => l.state !== 'declined');
        expect(new Set(live.map((l) => l.ip)).size).toBe(live.length);
        const declined = new Set(view.filter((l) => l.state === 'declined').map((l) => l.ip));
        expect(live.filter((l) => declined.has(l.ip) && l.state === 'offered')).toEqual([]);
      },
    ), { numRuns: 1500 });
  });
});

describe('invariants under random client behaviour (fast-check)', () => {
  it('no address has two holders, reserved addresses go to their MAC only, grants stay in pools', () => {
    const macs = [MAC_A, MAC_B, MAC_C, 0x525400000004, 0x525400000005, RESERVED_MAC];
    const poolIps = [ip('10.0.10.100'), ip('10.0.10.101'), ip('10.0.10.102'), ip('10.0.10.103')];
    const anyIp = fc.constantFrom(...poolIps, ip('10.0.10.50'), ip('10.0.10.1'), ip('10.0.99.1'));
    const step = fc.record({
      type: fc.constantFrom(DhcpMsg.DISCOVER, DhcpMsg.REQUEST, DhcpMsg.DECLINE, DhcpMsg.RELEASE, DhcpMsg.INFORM),
      mac: fc.constantFrom(...macs),
      state: fc.constantFrom('selecting', 'init-reboot', 'renewing'),
      addr: anyIp,
      ours: fc.boolean(),
      dt: fc.constantFrom(0, 1000, 31_000, 700_000),
    });
    fc.assert(fc.property(fc.array(step, { maxLength: 40 }), (steps) => {
      const b = new Bench(baseConfig({
        pools: [[poolIps[0], poolIps[3]]], leaseTimeSec: 600,
        reservations: [{ mac: RESERVED_MAC, ip: ip('10.0.10.50') }],
      }));
      for (const s of steps) {
        b.now += s.dt;
        const sid = s.ours ? SERVER : ip('10.0.10.2');
        const r: Req = { type: s.type, mac: s.mac };
        if (s.type === DhcpMsg.REQUEST) {
          if (s.state === 'selecting') Object.assign(r, { requested: s.addr, serverId: sid });
          else if (s.state === 'init-reboot') r.requested = s.addr;
          else r.ciaddr = s.addr;
        } else if (s.type === DhcpMsg.DECLINE) Object.assign(r, { requested: s.addr, serverId: sid });
        else if (s.type === DhcpMsg.RELEASE || s.type === DhcpMsg.INFORM) r.ciaddr = s.addr;
        const res = b.send(r);
        if (typeof res !== 'string' && res.type !== DhcpMsg.NAK && s.type !== DhcpMsg.INFORM) {
          const y = res.yiaddr;
          if (s.mac === RESERVED_MAC) expect(y).toBe(ip('10.0.10.50'));
          else expect(poolIps).toContain(y);
        }
        if (s.dt > 0) b.server.expire(b.now);
        const view = b.server.leases(b.now);
        const held = view.filter((l) => l.state !== 'declined');
        const owner = new Map<number, number>();
        for (const l of held) {
          const prev = owner.get(l.ip);
          expect(prev === undefined || prev === l.mac).toBe(true);
          owner.set(l.ip, l.mac);
          if (l.ip === ip('10.0.10.50')) expect(l.mac).toBe(RESERVED_MAC);
        }
      }
    }), { numRuns: 300 });
  });
});

describe('config', () => {
  const bad = (over: Partial<DhcpServerConfig>): void => {
    expect(() => new DhcpServer(baseConfig(over), LeaseStore.inMemory(), T0)).toThrow(DhcpConfigError);
  };
  it('refuses inconsistent networks, pools, reservations and options', () => {
    bad({ prefixLen: 31 });
    bad({ subnet: ip('10.0.10.1') });
    bad({ serverIp: ip('10.0.11.1') });
    bad({ serverIp: ip('10.0.10.255') });
    bad({ pools: [[ip('10.0.10.200'), ip('10.0.11.10')]] });
    bad({ pools: [[ip('10.0.10.20'), ip('10.0.10.10')]] });
    bad({ pools: [[ip('10.0.10.10'), ip('10.0.10.20')], [ip('10.0.10.15'), ip('10.0.10.30')]] });
    bad({ reservations: [{ mac: 1, ip: ip('10.0.10.1') }] });
    bad({ reservations: [{ mac: 1, ip: ip('10.0.10.5') }, { mac: 1, ip: ip('10.0.10.6') }] });
    bad({ leaseTimeSec: 10 });
    bad({ mtu: 20 });
    bad({ domain: 'a b' });
    bad({ routes: [{ dest: ip('10.1.0.1'), prefixLen: 16, gateway: SERVER }] });
    bad({ routes: Array.from({ length: 40 }, (_, i) => ({ dest: ip(`10.${i}.0.0`), prefixLen: 32, gateway: SERVER })) });
    bad({ pools: [[ip('10.0.0.0'), ip('10.2.0.0')]], subnet: ip('10.0.0.0'), prefixLen: 8, serverIp: ip('10.255.0.1') });
  });

  it('skips the network, broadcast and server addresses inside a whole-subnet pool', () => {
    const b = new Bench(baseConfig({ pools: [[ip('10.0.10.0'), ip('10.0.10.255')]], reservations: [] }));
    const got = new Set<number>();
    for (let i = 1; i <= 253; i++) got.add(b.dora(0x525400010000 + i));
    expect(got.has(ip('10.0.10.0')) || got.has(ip('10.0.10.1')) || got.has(ip('10.0.10.255'))).toBe(false);
    expect(got.size).toBe(253);
    expect(b.send({ type: DhcpMsg.DISCOVER, mac: 0x525400020000 })).toBe('pool_exhausted');
  });

  it('drops loaded leases the config no longer allows', () => {
    const store = LeaseStore.inMemory('net10');
    store.set({ ip: ip('10.0.10.100'), mac: MAC_A, expiresAt: T0 + 1000_000 });
    store.set({ ip: ip('10.0.10.50'), mac: MAC_B, expiresAt: T0 + 1000_000 });   // now reserved for another MAC
    store.set({ ip: ip('10.0.20.5'), mac: MAC_C, expiresAt: T0 + 1000_000 });    // another subnet
    const b = new Bench(baseConfig(), store);
    expect(b.server.leases(T0).map((l) => l.mac)).toEqual([MAC_A]);
  });
});
