import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseIp4 } from '@vswitch/switch';
import {
  DhcpClient, INFINITE_LEASE, classfulPrefix, clientLeaseFileName, leaseExpiresAt, maskPrefix, parseClientLease,
  serializeClientLease, type DhcpClientAction, type DhcpClientLease, type DhcpClientOptions, type DhcpSendAction,
} from './client.js';
import { DhcpServer } from './server.js';
import { LeaseStore } from './leases.js';
import { BOOTREPLY, BOOTREQUEST, DhcpMsg, DhcpWriter, Opt, parseDhcp, type DhcpMessage } from './wire.js';
import { readStateFile, writeStateFile } from '../state-file.js';

const ip = (s: string): number => parseIp4(s);
const MAC = 0x02aabbccddee;
const SERVER = ip('198.51.100.1');
const OTHER_SERVER = ip('198.51.100.254');
const ADDR = ip('198.51.100.57');
const BCAST = 0xffffffff;
const T0 = Date.UTC(2025, 0, 1);
const S = 1000;

/** A seeded [0,1) generator: distinct xids, reproducible jitter. */
function rng(seed = 1): () => number {
  let x = seed >>> 0;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 0x100000000;
  };
}

function client(over: Partial<DhcpClientOptions> = {}): DhcpClient {
  return new DhcpClient({ mac: MAC, random: rng(), ...over });
}

const sends = (acts: DhcpClientAction[]): DhcpSendAction[] => acts.filter((a): a is DhcpSendAction => a.kind === 'send');
function only(acts: DhcpClientAction[]): DhcpSendAction {
  const s = sends(acts);
  expect(s.length, JSON.stringify(acts.map((a) => a.kind))).toBe(1);
  return s[0];
}
function parsed(a: DhcpSendAction): DhcpMessage {
  const m = parseDhcp(a.payload, 0, a.payload.length);
  if (typeof m === 'number') throw new Error(`client sent a malformed message: ${m}`);
  return m;
}

interface Reply {
  type: number;
  xid: number;
  yiaddr?: number;
  serverId?: number | null;
  mac?: number;
  op?: number;
  lease?: number | null;
  t1?: number;
  t2?: number;
  mask?: number | null;
  router?: number[];
  dns?: number[];
  clientId?: number[];
}

/** A server reply as dnsmasq lays it out. */
function reply(r: Reply): DhcpMessage {
  const buf = new Uint8Array(600);
  const w = new DhcpWriter(buf);
  w.header({ op: r.op ?? BOOTREPLY, xid: r.xid, flags: 0, ciaddr: 0, yiaddr: r.yiaddr ?? 0, siaddr: 0, giaddr: 0, chaddr: r.mac ?? MAC });
  w.u8(Opt.MESSAGE_TYPE, r.type);
  if (r.serverId !== null) w.u32(Opt.SERVER_ID, r.serverId ?? SERVER);
  if (r.type !== DhcpMsg.NAK) {
    if (r.lease !== null) w.u32(Opt.LEASE_TIME, r.lease ?? 120);
    if (r.t1 !== undefined) w.u32(Opt.RENEWAL_TIME, r.t1);
    if (r.t2 !== undefined) w.u32(Opt.REBINDING_TIME, r.t2);
    if (r.mask !== null) w.u32(Opt.SUBNET_MASK, r.mask ?? 0xffffff00);
    w.ips(Opt.ROUTER, r.router ?? [SERVER]);
    if (r.dns) w.ips(Opt.DNS, r.dns);
  }
  if (r.clientId) w.option(Opt.CLIENT_ID, r.clientId);
  const m = parseDhcp(buf, 0, w.finish());
  if (typeof m === 'number') throw new Error('bad test reply');
  return m;
}

/** DORA from a fresh client at `t`: returns the client, bound, and the ACK's actions. */
function dora(c: DhcpClient, t: number, r: Partial<Reply> = {}): DhcpClientAction[] {
  const disc = parsed(only(c.tick(t)));
  expect(disc.messageType).toBe(DhcpMsg.DISCOVER);
  const req = parsed(only(c.receive(reply({ type: DhcpMsg.OFFER, xid: disc.xid, yiaddr: ADDR, ...r }), t + 5)));
  expect(req.messageType).toBe(DhcpMsg.REQUEST);
  return c.receive(reply({ type: DhcpMsg.ACK, xid: req.xid, yiaddr: ADDR, ...r }), t + 10);
}

describe('DhcpClient: DORA', () => {
  it('DISCOVER -> OFFER -> REQUEST (server id, requested address, same xid) -> ACK: bound, lease parameters, persist', () => {
    const c = client({ hostname: 'edge-r0' });
    expect(c.state).toBe('init');
    const d = only(c.tick(T0));
    expect(c.state).toBe('selecting');
    expect(d).toMatchObject({ type: DhcpMsg.DISCOVER, srcIp: 0, dstIp: BCAST, broadcast: true });
    const disc = parsed(d);
    expect(disc.op).toBe(BOOTREQUEST);
    expect(disc.chaddr).toBe(MAC);
    expect(disc.ciaddr).toBe(0);
    expect(disc.flags).toBe(0);
    expect(disc.codes()[0], 'option 53 first').toBe(Opt.MESSAGE_TYPE);
    expect([...disc.clientIdBytes!], 'client id = htype 1 + MAC').toEqual([1, 0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]);
    expect(disc.hostname).toBe('edge-r0');
    expect(disc.requestedIp, 'no hint on a first start').toBeUndefined();
    expect(disc.serverId).toBeUndefined();
    expect([...disc.parameterRequestList!]).toEqual(expect.arrayContaining([Opt.SUBNET_MASK, Opt.ROUTER, Opt.LEASE_TIME]));
    expect(d.payload.length).toBeGreaterThanOrEqual(300);

    const r = only(c.receive(reply({ type: DhcpMsg.OFFER, xid: disc.xid, yiaddr: ADDR }), T0 + 100));
    expect(c.state).toBe('requesting');
    expect(r).toMatchObject({ type: DhcpMsg.REQUEST, srcIp: 0, dstIp: BCAST, broadcast: true });
    const req = parsed(r);
    expect(req.xid, 'REQUEST keeps the xid of the OFFER').toBe(disc.xid);
    expect(req.serverId).toBe(SERVER);
    expect(req.requestedIp).toBe(ADDR);
    expect(req.ciaddr).toBe(0);

    const acts = c.receive(reply({
      type: DhcpMsg.ACK, xid: req.xid, yiaddr: ADDR, lease: 3600, mask: 0xfffffe00, router: [SERVER, OTHER_SERVER],
      dns: [ip('9.9.9.9')],
    }), T0 + 200);
    expect(c.state).toBe('bound');
    expect(c.ip).toBe(ADDR);
    const bound = acts.find((a) => a.kind === 'bound') as Extract<DhcpClientAction, { kind: 'bound' }>;
    expect(bound.previousIp).toBe(0);
    expect(bound.lease).toEqual({
      ip: ADDR, prefix: 23, router: SERVER, dns: [ip('9.9.9.9')], serverId: SERVER, leaseSec: 3600, t1Sec: 1800, t2Sec: 3150,
      obtainedAt: T0 + 200,
    });
    expect(acts).toContainEqual({ kind: 'persist', lease: bound.lease });
    expect(sends(acts)).toEqual([]);
    expect(c.counters).toMatchObject({ discovers: 1, offers: 1, requests: 1, acks: 1, acquired: 1 });
    // Nothing to do until T1.
    expect(c.tick(T0 + 1000 * S)).toEqual([]);
    expect(c.describe(T0 + 1000 * S)).toMatchObject({ state: 'bound', address: '198.51.100.57/23', server: '198.51.100.1', renewInSec: 800 });
  });

  it('replies that are not ours are ignored and counted: xid, chaddr, op, client id, type, server, bad offers', () => {
    const c = client();
    const disc = parsed(only(c.tick(T0)));
    const x = disc.xid;
    expect(c.receive(reply({ type: DhcpMsg.OFFER, xid: (x + 1) >>> 0, yiaddr: ADDR }), T0)).toEqual([]);
    expect(c.receive(reply({ type: DhcpMsg.OFFER, xid: x, yiaddr: ADDR, mac: 0x02aabbccdd00 }), T0)).toEqual([]);
    expect(c.receive(reply({ type: DhcpMsg.OFFER, xid: x, yiaddr: ADDR, op: BOOTREQUEST }), T0)).toEqual([]);
    expect(c.receive(reply({ type: DhcpMsg.OFFER, xid: x, yiaddr: ADDR, clientId: [1, 2, 3, 4, 5, 6, 7] }), T0)).toEqual([]);
    expect(c.receive(reply({ type: DhcpMsg.ACK, xid: x, yiaddr: ADDR }), T0), 'ACK while selecting').toEqual([]);
    expect(c.receive(reply({ type: DhcpMsg.OFFER, xid: x, yiaddr: ADDR, serverId: null }), T0), 'no server id').toEqual([]);
    expect(c.receive(reply({ type: DhcpMsg.OFFER, xid: x, yiaddr: ip('127.0.0.5') }), T0)).toEqual([]);
    expect(c.receive(reply({ type: DhcpMsg.OFFER, xid: x, yiaddr: ip('224.0.0.1') }), T0)).toEqual([]);
    expect(c.receive(reply({ type: DhcpMsg.OFFER, xid: x, yiaddr: 0 }), T0)).toEqual([]);
    expect(c.state).toBe('selecting');
    expect(c.counters.ignored).toMatchObject({
      wrong_xid: 1, wrong_chaddr: 1, not_reply: 1, wrong_client_id: 1, unexpected: 1, bad_offer: 4,
    });
    // An echoed client id that is ours is fine (RFC 6842).
    const req = parsed(only(c.receive(reply({
      type: DhcpMsg.OFFER, xid: x, yiaddr: ADDR, clientId: [1, 0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee],
    }), T0)));
    // A second OFFER (another server) while requesting is ignored; so is an ACK from a server we did not choose.
    expect(c.receive(reply({ type: DhcpMsg.OFFER, xid: x, yiaddr: ip('198.51.100.99'), serverId: OTHER_SERVER }), T0)).toEqual([]);
    expect(c.receive(reply({ type: DhcpMsg.ACK, xid: x, yiaddr: ip('198.51.100.99'), serverId: OTHER_SERVER }), T0)).toEqual([]);
    expect(c.counters.ignored.wrong_server).toBe(1);
    expect(c.state).toBe('requesting');
    c.receive(reply({ type: DhcpMsg.ACK, xid: req.xid, yiaddr: ADDR }), T0);
    expect(c.ip).toBe(ADDR);
    // Bound: a stray ACK changes nothing.
    expect(c.receive(reply({ type: DhcpMsg.ACK, xid: x, yiaddr: ip('198.51.100.99') }), T0 + S)).toEqual([]);
    expect(c.ip).toBe(ADDR);
  });

  it('lease parameters: missing mask -> classful, bad T1/T2 -> 50 %/87.5 %, no option 51 -> 1 h, infinite lease never renews', () => {
    const a = client();
    const acts = dora(a, T0, { mask: null, lease: 1000, t1: 900, t2: 1200 });
    const l = (acts.find((x) => x.kind === 'bound') as any).lease as DhcpClientLease;
    expect(l.prefix, '198.51.100.x is class C').toBe(24);
    expect([l.t1Sec, l.t2Sec]).toEqual([500, 875]);
    expect(classfulPrefix(ip('10.1.2.3'))).toBe(8);
    expect(classfulPrefix(ip('172.16.0.1'))).toBe(16);
    expect(maskPrefix(0xffffff00)).toBe(24);
    expect(maskPrefix(0xff00ff00)).toBe(-1);
    expect(maskPrefix(0)).toBe(0);

    const b = client();
    const lb = (dora(b, T0, { lease: null, t1: 100, t2: 200 }).find((x) => x.kind === 'bound') as any).lease as DhcpClientLease;
    expect([lb.leaseSec, lb.t1Sec, lb.t2Sec]).toEqual([3600, 100, 200]);

    const c = client();
    dora(c, T0, { lease: INFINITE_LEASE });
    expect(c.tick(T0 + 10 * 365 * 86400 * S)).toEqual([]);
    expect(c.state).toBe('bound');
    expect(c.describe(T0).expiresInSec).toBeNull();
  });
});

describe('DhcpClient: retransmission', () => {
  it('DISCOVER backoff doubles from the first interval up to the cap, with bounded jitter, same xid, for ever', () => {
    const c = client({ firstRetransmitMs: 4000, maxRetransmitMs: 64_000, jitterMs: 1000 });
    const first = parsed(only(c.tick(T0)));
    const waits: number[] = [];
    let t = T0;
    for (let i = 0; i < 9; i++) {
      const due = c.nextAt;
      waits.push(due - t);
      expect(c.tick(due - 1), 'nothing before it is due').toEqual([]);
      const m = parsed(only(c.tick(due)));
      expect(m.messageType).toBe(DhcpMsg.DISCOVER);
      expect(m.xid, 'retransmissions keep the xid').toBe(first.xid);
      expect(m.secs).toBe(Math.floor((due - T0) / 1000));
      t = due;
    }
    const base = [4, 8, 16, 32, 64, 64, 64, 64, 64].map((s) => s * S);
    waits.forEach((w, i) => {
      expect(w).toBeGreaterThanOrEqual(base[i] - 1000);
      expect(w).toBeLessThanOrEqual(base[i] + 1000);
    });
    expect(new Set(waits.map((w, i) => w - base[i])).size, 'jittered').toBeGreaterThan(1);
    expect(c.counters).toMatchObject({ discovers: 10, retransmits: 9 });
  });

  it('a quick start (first retry 1 s) keeps jitter within a quarter of the wait', () => {
    const c = client({ firstRetransmitMs: 1000 });
    c.tick(T0);
    expect(c.nextAt - T0).toBeGreaterThanOrEqual(750);
    expect(c.nextAt - T0).toBeLessThanOrEqual(1250);
  });

  it('REQUEST is retransmitted requestTries times, then the client starts over with DISCOVER (new xid)', () => {
    const c = client({ requestTries: 3 });
    const disc = parsed(only(c.tick(T0)));
    only(c.receive(reply({ type: DhcpMsg.OFFER, xid: disc.xid, yiaddr: ADDR }), T0));
    let t = T0;
    for (let i = 0; i < 2; i++) {
      t = c.nextAt;
      const m = parsed(only(c.tick(t)));
      expect(m.messageType).toBe(DhcpMsg.REQUEST);
      expect(m.xid).toBe(disc.xid);
    }
    t = c.nextAt;
    const again = parsed(only(c.tick(t)));
    expect(again.messageType).toBe(DhcpMsg.DISCOVER);
    expect(again.xid).not.toBe(disc.xid);
    expect(c.state).toBe('selecting');
  });

  it('linkUp sends at once instead of waiting for the backoff', () => {
    const c = client();
    c.tick(T0);
    expect(c.tick(T0 + 1000)).toEqual([]);
    expect(parsed(only(c.linkUp(T0 + 1000))).messageType).toBe(DhcpMsg.DISCOVER);
  });
});

describe('DhcpClient: NAK, renew, rebind, expiry', () => {
  it('NAK while requesting: back to INIT (after a short delay), forget the address', () => {
    const c = client({ nakDelayMs: 2000 });
    const disc = parsed(only(c.tick(T0)));
    const req = parsed(only(c.receive(reply({ type: DhcpMsg.OFFER, xid: disc.xid, yiaddr: ADDR }), T0)));
    const acts = c.receive(reply({ type: DhcpMsg.NAK, xid: req.xid }), T0 + 10);
    expect(acts).toEqual([{ kind: 'persist', lease: null }]);
    expect(c.state).toBe('init');
    expect(c.tick(T0 + 1000)).toEqual([]);
    const d2 = parsed(only(c.tick(T0 + 2010)));
    expect(d2.messageType).toBe(DhcpMsg.DISCOVER);
    expect(d2.requestedIp, 'a NAKed address is not asked for').toBeUndefined();
    expect(c.counters.naks).toBe(1);
  });

  it('at T1 a unicast REQUEST to the server (ciaddr set, no 50/54); ACK renews; retransmits halve the time to T2, at least 60 s', () => {
    const c = client();
    dora(c, T0, { lease: 1000 }); // T1 500 s, T2 875 s
    const tb = T0 + 10;
    expect(c.tick(tb + 499 * S)).toEqual([]);
    const r = only(c.tick(tb + 500 * S));
    expect(c.state).toBe('renewing');
    expect(r).toMatchObject({ type: DhcpMsg.REQUEST, srcIp: ADDR, dstIp: SERVER, broadcast: false });
    const m = parsed(r);
    expect(m.ciaddr).toBe(ADDR);
    expect(m.requestedIp).toBeUndefined();
    expect(m.serverId).toBeUndefined();
    expect(m.secs).toBe(0);
    // 375 s to T2: the next try in 187.5 s; then 93.75 s; then 60 s (the floor); then capped at T2.
    expect(c.nextAt - (tb + 500 * S)).toBe(187_500);
    expect(c.ip, 'the address stays in use while renewing').toBe(ADDR);
    const m2 = parsed(only(c.tick(c.nextAt)));
    expect(m2.xid, 'retransmission keeps the xid').toBe(m.xid);
    expect(c.nextAt - (tb + 687_500)).toBe(93_750);
    parsed(only(c.tick(c.nextAt)));
    expect(c.nextAt - (tb + 781_250), '46.9 s to T2 is below the floor').toBe(60_000);
    parsed(only(c.tick(c.nextAt)));
    expect(c.nextAt, 'never past T2').toBe(tb + 875 * S);

    const acts = c.receive(reply({ type: DhcpMsg.ACK, xid: m.xid, yiaddr: ADDR, lease: 1000 }), tb + 800 * S);
    expect(c.state).toBe('bound');
    const bound = acts.find((a) => a.kind === 'bound') as any;
    expect(bound.previousIp).toBe(ADDR);
    expect(bound.lease.obtainedAt).toBe(tb + 800 * S);
    expect(acts.some((a) => a.kind === 'persist')).toBe(true);
    expect(c.counters.renewed).toBe(1);
    expect(c.tick(tb + 1200 * S), 'next T1 is 500 s after the renewal').toEqual([]);
    expect(sends(c.tick(tb + 1300 * S)).length).toBe(1);
  });

  it('at T2 a broadcast REQUEST (rebinding, ciaddr, new xid); any server may ACK', () => {
    const c = client();
    dora(c, T0, { lease: 1000 });
    const tb = T0 + 10;
    const renew = parsed(only(c.tick(tb + 500 * S)));
    const r = only(c.tick(tb + 875 * S));
    expect(c.state).toBe('rebinding');
    expect(r).toMatchObject({ type: DhcpMsg.REQUEST, srcIp: ADDR, dstIp: BCAST, broadcast: true });
    const m = parsed(r);
    expect(m.ciaddr).toBe(ADDR);
    expect(m.serverId).toBeUndefined();
    expect(m.xid).not.toBe(renew.xid);
    // 125 s left: retransmit after 62.5 s, then the 60 s floor capped at expiry.
    expect(c.nextAt - (tb + 875 * S)).toBe(62_500);
    expect(c.receive(reply({ type: DhcpMsg.ACK, xid: renew.xid, yiaddr: ADDR }), tb + 880 * S), 'the renewal xid is over').toEqual([]);
    const acts = c.receive(reply({ type: DhcpMsg.ACK, xid: m.xid, yiaddr: ADDR, serverId: OTHER_SERVER, lease: 600 }), tb + 900 * S);
    expect(c.state).toBe('bound');
    expect((acts.find((a) => a.kind === 'bound') as any).lease.serverId).toBe(OTHER_SERVER);
  });

  it('NAK while renewing: address lost, INIT', () => {
    const c = client();
    dora(c, T0, { lease: 1000 });
    const m = parsed(only(c.tick(T0 + 600 * S)));
    const acts = c.receive(reply({ type: DhcpMsg.NAK, xid: m.xid }), T0 + 601 * S);
    expect(acts).toEqual([{ kind: 'lost', ip: ADDR, reason: 'nak' }, { kind: 'persist', lease: null }]);
    expect(c.ip).toBe(0);
    expect(c.state).toBe('init');
  });

  it('expiry without an answer: address lost, DISCOVER at once asking for the old address', () => {
    const c = client();
    dora(c, T0, { lease: 1000 });
    const tb = T0 + 10;
    c.tick(tb + 500 * S);
    c.tick(tb + 875 * S);
    expect(c.tick(tb + 999 * S).filter((a) => a.kind !== 'send')).toEqual([]);
    const acts = c.tick(tb + 1000 * S);
    expect(acts[0]).toEqual({ kind: 'lost', ip: ADDR, reason: 'expired' });
    const d = parsed(only(acts));
    expect(d.messageType).toBe(DhcpMsg.DISCOVER);
    expect(d.requestedIp).toBe(ADDR);
    expect(c.state).toBe('selecting');
    expect(c.ip).toBe(0);
    expect(c.counters.expired).toBe(1);
  });

  it('a long sleep past the whole lease goes straight to expiry in one tick', () => {
    const c = client();
    dora(c, T0, { lease: 1000 });
    const acts = c.tick(T0 + 5000 * S);
    expect(acts.map((a) => a.kind)).toEqual(['lost', 'send']);
  });

  it('a clock stepped backwards moves the deadlines with it', () => {
    const c = client();
    dora(c, T0, { lease: 1000 });
    c.tick(T0 + 100 * S);
    // The clock jumps back one hour: T1 is still 400 s away, not 4000 s.
    const back = T0 + 100 * S - 3600 * S;
    expect(c.tick(back)).toEqual([]);
    expect(c.tick(back + 399 * S)).toEqual([]);
    expect(sends(c.tick(back + 401 * S)).length).toBe(1);
    expect(c.state).toBe('renewing');
  });
});

describe('DhcpClient: INIT-REBOOT from a persisted lease', () => {
  const held = (over: Partial<DhcpClientLease> = {}): DhcpClientLease => ({
    ip: ADDR, prefix: 24, router: SERVER, dns: [], serverId: SERVER, leaseSec: 1000, t1Sec: 500, t2Sec: 875, obtainedAt: T0, ...over,
  });

  it('an unexpired lease: REQUEST broadcast with option 50, no server id, ciaddr 0; ACK binds (address acquired)', () => {
    const c = client({ previous: held() });
    expect(c.state).toBe('rebooting');
    expect(c.ip, 'not used before the server confirms it').toBe(0);
    const r = only(c.tick(T0 + 300 * S));
    expect(r).toMatchObject({ type: DhcpMsg.REQUEST, srcIp: 0, dstIp: BCAST, broadcast: true });
    const m = parsed(r);
    expect(m.requestedIp).toBe(ADDR);
    expect(m.serverId).toBeUndefined();
    expect(m.ciaddr).toBe(0);
    const acts = c.receive(reply({ type: DhcpMsg.ACK, xid: m.xid, yiaddr: ADDR }), T0 + 301 * S);
    expect(c.state).toBe('bound');
    expect((acts.find((a) => a.kind === 'bound') as any).previousIp).toBe(0);
  });

  it('NAK: forget it, DISCOVER without a hint', () => {
    const c = client({ previous: held() });
    const m = parsed(only(c.tick(T0 + 300 * S)));
    expect(c.receive(reply({ type: DhcpMsg.NAK, xid: m.xid }), T0 + 301 * S)).toEqual([{ kind: 'persist', lease: null }]);
    const d = parsed(only(c.tick(T0 + 310 * S)));
    expect(d.messageType).toBe(DhcpMsg.DISCOVER);
    expect(d.requestedIp).toBeUndefined();
  });

  it('no answer within rebootTimeoutMs: DISCOVER asking for the old address', () => {
    const c = client({ previous: held(), rebootTimeoutMs: 10_000, firstRetransmitMs: 2000 });
    const t = T0 + 300 * S;
    c.tick(t);
    let n = 1;
    while (c.state === 'rebooting') {
      const at = Math.max(c.nextAt, t + 1);
      const acts = c.tick(at);
      if (c.state === 'rebooting') n += sends(acts).length;
      else {
        expect(at).toBeGreaterThanOrEqual(t + 10_000);
        const d = parsed(only(acts));
        expect(d.messageType).toBe(DhcpMsg.DISCOVER);
        expect(d.requestedIp).toBe(ADDR);
      }
      if (at > t + 20_000) break;
    }
    expect(n, 'REQUESTs at 0, ~2, ~6 s').toBe(3);
  });

  it('an expired lease: no INIT-REBOOT, DISCOVER asking for it', () => {
    const c = client({ previous: held({ obtainedAt: T0 - 2000 * S }) });
    const d = parsed(only(c.tick(T0)));
    expect(d.messageType).toBe(DhcpMsg.DISCOVER);
    expect(d.requestedIp).toBe(ADDR);
  });

  it('persisted lease file: round trip through the state file; another MAC, bad JSON or bad fields give no lease', () => {
    const dir = mkdtempSync(join(tmpdir(), 'uplink-lease-'));
    try {
      const path = join(dir, clientLeaseFileName('r0'));
      expect(path.endsWith('uplink-r0.json')).toBe(true);
      const l = held({ dns: [ip('9.9.9.9')] });
      writeStateFile(path, serializeClientLease(MAC, l));
      const text = readStateFile(path);
      expect(JSON.parse(text!)).toMatchObject({ version: 1, ip: '198.51.100.57', serverId: '198.51.100.1', mac: '02:aa:bb:cc:dd:ee' });
      expect(parseClientLease(text, MAC)).toEqual(l);
      expect(parseClientLease(text, MAC + 1)).toBeUndefined();
      expect(parseClientLease('{', MAC)).toBeUndefined();
      expect(parseClientLease(undefined, MAC)).toBeUndefined();
      expect(parseClientLease(text!.replace('198.51.100.57', '300.1.1.1'), MAC)).toBeUndefined();
      expect(parseClientLease(text!.replace('"prefix": 24', '"prefix": 40'), MAC)).toBeUndefined();
      const inf = held({ leaseSec: INFINITE_LEASE, t1Sec: 0, t2Sec: 0 });
      expect(parseClientLease(serializeClientLease(MAC, inf), MAC)).toEqual(inf);
      expect(leaseExpiresAt(inf)).toBe(Infinity);
      expect(() => clientLeaseFileName('../x')).toThrow();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a restarted client gets the same address back from our own DhcpServer (INIT-REBOOT -> ACK)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'uplink-srv-'));
    try {
      const store = LeaseStore.open(dir, 'wan', T0);
      const server = new DhcpServer({
        name: 'wan', serverIp: SERVER, subnet: ip('198.51.100.0'), prefixLen: 24,
        pools: [[ip('198.51.100.50'), ip('198.51.100.99')]], leaseTimeSec: 600,
      }, store, T0);
      // ACKs wait for the lease file (group commit): the server hands them over here.
      const delivered: Uint8Array[] = [];
      server.attach({ deliver: (_r, payload) => delivered.push(payload) });
      const out = new Uint8Array(1500);
      const exchange = async (c: DhcpClient, acts: DhcpClientAction[], now: number): Promise<DhcpClientAction[]> => {
        const s = only(acts);
        const res = server.handle(s.payload, 0, s.payload.length, out, 0, { now });
        let reply: Uint8Array;
        if (res === 'pending') {
          await store.flush();
          reply = delivered.shift()!;
        } else if (typeof res === 'string') {
          throw new Error(`server dropped it: ${res}`);
        } else {
          reply = out.subarray(0, res.payloadLen);
        }
        const m = parseDhcp(reply, 0, reply.length);
        if (typeof m === 'number') throw new Error('bad server reply');
        return c.receive(m, now);
      };
      const first = client();
      const acked = await exchange(first, await exchange(first, first.tick(T0), T0), T0);
      const lease = (acked.find((a) => a.kind === 'persist') as any).lease as DhcpClientLease;
      expect(first.state).toBe('bound');
      expect(lease.serverId).toBe(SERVER);
      // "Restart": a new client from the persisted lease.
      const text = serializeClientLease(MAC, lease);
      const second = client({ previous: parseClientLease(text, MAC), random: rng(99) });
      const acts = second.tick(T0 + 60 * S);
      expect(parsed(only(acts)).requestedIp).toBe(lease.ip);
      await exchange(second, acts, T0 + 60 * S);
      expect(second.state).toBe('bound');
      expect(second.ip).toBe(lease.ip);
      expect(second.counters.discovers).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
