import dgram from 'node:dgram';
import { afterEach, describe, expect, it } from 'vitest';
import {
  IPPROTO, IPV4_OK, checkIpv4, fold, formatIp4, parseIp4, pseudoSum, read16, sum16, write16, writeIp4, writeIpv4Header,
} from '@vswitch/switch';
import { sendIp4 } from './fragment.js';
import { HOST_HEADROOM, HostBudget } from './types.js';
import { HostUdp, ip4FromString, type HostUdpOptions } from './udp.js';

const ip = (s: string): number => parseIp4(s);
const VM = ip('10.0.0.5');
const VM2 = ip('10.0.0.6');
const GW = ip('10.0.0.1');
const LO = ip('127.0.0.1');

interface Pkt {
  src: number;
  dst: number;
  sport: number;
  dport: number;
  ttl: number;
  frag: number;
  id: number;
  payload: Buffer;
  ipOff: number;
  vnet: boolean;
}

/** A VM's IPv4/UDP packet at offset 14 of a frame-sized buffer. */
function udpPacket(
  src: number, sport: number, dst: number, dport: number, payload: string | Uint8Array,
  o: { csum?: 'ok' | 'zero' | 'bad'; frag?: number; ulenDelta?: number } = {},
): { buf: Buffer; off: number; len: number } {
  const data = typeof payload === 'string' ? Buffer.from(payload) : Buffer.from(payload);
  const off = 14;
  const ulen = 8 + data.length;
  const len = 20 + ulen;
  const buf = Buffer.alloc(off + len + 4); // + Ethernet padding the length fields must win over
  writeIpv4Header(buf, off, { totalLen: len, proto: IPPROTO.UDP, src, dst, id: 77 });
  if (o.frag !== undefined) {
    write16(buf, off + 6, o.frag);
    write16(buf, off + 10, 0);
    write16(buf, off + 10, ~fold(sum16(buf, off, 20)) & 0xffff);
  }
  const u = off + 20;
  write16(buf, u, sport);
  write16(buf, u + 2, dport);
  write16(buf, u + 4, ulen + (o.ulenDelta ?? 0));
  data.copy(buf, u + 8);
  let c = ~fold(sum16(buf, u, ulen, pseudoSum(src, dst, IPPROTO.UDP, ulen))) & 0xffff;
  if (c === 0) c = 0xffff;
  if (o.csum === 'zero') c = 0;
  if (o.csum === 'bad') c ^= 0x5a5a;
  write16(buf, u + 6, c);
  return { buf, off, len };
}

/** Checks a packet to a VM as the router will get it, and decodes it. */
function decode(buf: Buffer, ipOff: number, ipLen: number, vnet: boolean): Pkt {
  expect(ipOff).toBeGreaterThanOrEqual(HOST_HEADROOM);
  expect(checkIpv4(buf, ipOff, ipLen)).toBe(IPV4_OK);
  expect(buf[ipOff]).toBe(0x45);
  expect(buf[ipOff + 9]).toBe(IPPROTO.UDP);
  expect(read16(buf, ipOff + 2)).toBe(ipLen);
  const src = buf.readUInt32BE(ipOff + 12);
  const dst = buf.readUInt32BE(ipOff + 16);
  const u = ipOff + 20;
  const ulen = read16(buf, u + 4);
  expect(ulen).toBe(ipLen - 20);
  expect(read16(buf, u + 6)).not.toBe(0);
  expect(fold(sum16(buf, u, ulen, pseudoSum(src, dst, IPPROTO.UDP, ulen)))).toBe(0xffff);
  return {
    src, dst, sport: read16(buf, u), dport: read16(buf, u + 2), ttl: buf[ipOff + 8], frag: read16(buf, ipOff + 6),
    id: read16(buf, ipOff + 4), payload: Buffer.from(buf.subarray(u + 8, u + ulen)), ipOff, vnet,
  };
}

const cleanups: (() => void)[] = [];
afterEach(() => {
  while (cleanups.length > 0) cleanups.pop()!();
});

function harness(o: Partial<HostUdpOptions> = {}, budget = new HostBudget()) {
  const clock = { now: 1_000_000 };
  const got: Pkt[] = [];
  const udp = new HostUdp({
    clock: () => clock.now, budget,
    toVm: (buf, ipOff, ipLen, vnet) => got.push(decode(buf, ipOff, ipLen, vnet)),
    ...o,
  });
  cleanups.push(() => udp.close());
  const send = (src: number, sport: number, dst: number, dport: number, payload: string, to?: { ip: number; port: number }) => {
    const p = udpPacket(src, sport, dst, dport, payload);
    udp.fromVm(p.buf, p.off, p.len, to);
  };
  return { udp, got, clock, budget, send };
}

interface Server {
  port: number;
  seen: { port: number; msg: string }[];
  sock: dgram.Socket;
}

/** An echo server on 127.0.0.x: answers "echo:<msg>" and records who sent what. */
async function echoServer(address = '127.0.0.1', reply = (m: Buffer): Buffer => Buffer.concat([Buffer.from('echo:'), m])): Promise<Server> {
  const sock = dgram.createSocket('udp4');
  const seen: { port: number; msg: string }[] = [];
  sock.on('message', (msg, rinfo) => {
    seen.push({ port: rinfo.port, msg: msg.toString() });
    sock.send(reply(msg), rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) => sock.bind(0, address, resolve));
  cleanups.push(() => sock.close());
  return { port: sock.address().port, seen, sock };
}

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

const settle = (ms = 100): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function freePort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
  const port = s.address().port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

describe('HostUdp outbound', () => {
  it('sends a VM datagram out and returns the reply as a complete IPv4/UDP packet', async () => {
    const { udp, got, send, budget } = harness();
    const srv = await echoServer();
    send(VM, 40000, LO, srv.port, 'hello');
    await until(() => got.length === 1);
    const p = got[0];
    expect(p.src).toBe(LO);
    expect(p.dst).toBe(VM);
    expect(p.sport).toBe(srv.port);
    expect(p.dport).toBe(40000);
    expect(p.payload.toString()).toBe('echo:hello');
    expect(p.ttl).toBe(64);
    expect(p.frag).toBe(0); // DF clear, not a fragment
    expect(p.vnet).toBe(false);
    expect(p.ipOff).toBe(HOST_HEADROOM);
    expect(srv.seen[0].msg).toBe('hello');
    expect(budget.total).toBe(1);
    expect(udp.counters).toMatchObject({ opened: 1, toHost: 1, toVm: 1, filtered: 0, badChecksum: 0 });
    const [s] = udp.sessions(1_000_000);
    expect(s).toMatchObject({
      proto: 'udp', direction: 'out', inside: '10.0.0.5:40000', remote: `127.0.0.1:${srv.port}`,
      outside: `0.0.0.0:${srv.seen[0].port}`, state: 'active', txBytes: 5, rxBytes: 10,
    });
    // IDs increment from packet to packet.
    send(VM, 40000, LO, srv.port, 'again');
    await until(() => got.length === 2);
    expect(got[1].id).toBe((got[0].id + 1) & 0xffff);
  });

  it('maps endpoint-independently: one host socket for all destinations of a VM port', async () => {
    const { udp, got, send, budget } = harness();
    const a = await echoServer();
    const b = await echoServer();
    send(VM, 40000, LO, a.port, 'to-a');
    send(VM, 40000, LO, b.port, 'to-b');
    await until(() => got.length === 2);
    expect(a.seen[0].port).toBe(b.seen[0].port);
    expect(new Set(got.map((p) => p.sport))).toEqual(new Set([a.port, b.port]));
    expect(got.every((p) => p.dport === 40000 && p.dst === VM)).toBe(true);
    expect(udp.sessions(0)).toHaveLength(1);
    expect(budget.total).toBe(1);
  });

  it('gives two VM ports (and two VMs on one port) sockets of their own', async () => {
    const { udp, got, send, budget } = harness();
    const srv = await echoServer();
    send(VM, 40000, LO, srv.port, 'one');
    send(VM, 40001, LO, srv.port, 'two');
    send(VM2, 40000, LO, srv.port, 'three');
    await until(() => got.length === 3);
    expect(new Set(srv.seen.map((s) => s.port)).size).toBe(3);
    const byMsg = new Map(got.map((p) => [p.payload.toString(), p]));
    expect(byMsg.get('echo:one')).toMatchObject({ dst: VM, dport: 40000 });
    expect(byMsg.get('echo:two')).toMatchObject({ dst: VM, dport: 40001 });
    expect(byMsg.get('echo:three')).toMatchObject({ dst: VM2, dport: 40000 });
    expect(budget.total).toBe(3);
    expect(budget.perHost(VM)).toBe(2);
    expect(udp.counters.opened).toBe(3);
  });

  it('redirects with `to`: the reply appears to come from the original destination', async () => {
    const seen: string[] = [];
    const { udp, got, send } = harness({
      redirects: { sent: (i) => seen.push(`sent ${formatIp4(i)}`), answered: (i) => seen.push(`answered ${formatIp4(i)}`) },
    });
    const resolver = await echoServer();
    send(VM, 40002, GW, 53, 'query', { ip: LO, port: resolver.port });
    await until(() => got.length === 1);
    expect(resolver.seen[0].msg).toBe('query');
    expect(got[0]).toMatchObject({ src: GW, sport: 53, dst: VM, dport: 40002 });
    expect(got[0].payload.toString()).toBe('echo:query');
    expect(seen).toEqual(['sent 127.0.0.1', 'answered 127.0.0.1']);
    expect(udp.sessions(0)[0].remote).toBe('10.0.0.1:53');
  });

  it('filters by address: a host that was never sent to does not reach the VM', async () => {
    const { udp, got, send } = harness();
    const srv = await echoServer('127.0.0.1');
    const stranger = await echoServer('127.0.0.2');
    send(VM, 40003, LO, srv.port, 'hi');
    await until(() => got.length === 1);
    const outside = srv.seen[0].port;
    stranger.sock.send('intruder', outside, '127.0.0.1');
    // Another port of an address the VM sent to is admitted (address-dependent filtering).
    const sameHost = await echoServer('127.0.0.1');
    sameHost.sock.send('other-port', outside, '127.0.0.1');
    await until(() => got.length === 2 && udp.counters.filtered === 1);
    await settle(50);
    expect(got.map((p) => p.payload.toString())).toEqual(['echo:hi', 'other-port']);
    expect(udp.counters.filtered).toBe(1);
  });

  it('expires idle mappings in tick() and gives the budget back exactly once', async () => {
    const { udp, got, send, clock, budget } = harness();
    const srv = await echoServer();
    const t0 = clock.now;
    send(VM, 40004, LO, srv.port, 'x');
    await until(() => got.length === 1);
    udp.tick(t0 + 179_999);
    expect(budget.total).toBe(1);
    udp.tick(t0 + 180_000);
    expect(budget.total).toBe(0);
    expect(udp.sessions(t0)).toHaveLength(0);
    expect(udp.counters.expired).toBe(1);
    udp.tick(t0 + 400_000);
    udp.close();
    expect(udp.counters.expired).toBe(1);
    expect(budget.total).toBe(0);
    // A late reply to the closed socket goes nowhere; a new datagram opens a new mapping.
    const b2 = new HostBudget();
    const h2 = harness({}, b2);
    h2.send(VM, 40004, LO, srv.port, 'y');
    await until(() => h2.got.length === 1);
    expect(b2.total).toBe(1);
  });

  it('expires mappings that only talked DNS after 10 s, others after the idle timeout', async () => {
    const { udp, send, clock, budget } = harness({ idleTimeoutMs: 120_000 });
    const srv = await echoServer();
    const t0 = clock.now;
    send(VM, 40005, GW, 53, 'q', { ip: LO, port: srv.port });
    send(VM, 40006, LO, srv.port, 'app');
    await until(() => srv.seen.length === 2);
    expect(budget.total).toBe(2);
    udp.tick(t0 + 9_999);
    expect(budget.total).toBe(2);
    udp.tick(t0 + 10_000);
    expect(udp.sessions(t0).map((s) => s.inside)).toEqual(['10.0.0.5:40006']);
    udp.tick(t0 + 120_000);
    expect(budget.total).toBe(0);
  });

  it('drops (and counts) datagrams the budget refuses', async () => {
    const budget = new HostBudget({ maxPerHost: 1 });
    const { udp, got, send } = harness({}, budget);
    const srv = await echoServer();
    send(VM, 40007, LO, srv.port, 'first');
    send(VM, 40008, LO, srv.port, 'refused');
    await until(() => got.length === 1);
    await settle(50);
    expect(srv.seen.map((s) => s.msg)).toEqual(['first']);
    expect(udp.counters.refused).toBe(1);
    expect(budget.refusedPerHost).toBe(1);
    expect(budget.total).toBe(1);
    // Another VM still has its share.
    send(VM2, 40008, LO, srv.port, 'other vm');
    await until(() => got.length === 2);
  });

  it('counts send errors instead of throwing', async () => {
    const { udp, send } = harness();
    // 255.255.255.255 without SO_BROADCAST: EACCES from sendto.
    send(VM, 40009, ip('255.255.255.255'), 9, 'nope');
    await until(() => udp.counters.sendErrors === 1);
  });
});

describe('HostUdp port forwards', () => {
  it('forwards a client to the VM and the VM reply back to the client', async () => {
    const seenAs = (r: number): number => (r >>> 24 === 127 ? GW : r);
    const { udp, got, budget } = harness();
    const port = await freePort();
    await udp.addForward({ address: '127.0.0.1', port, vmIp: VM, vmPort: 5353, seenAs });
    const client = dgram.createSocket('udp4');
    await new Promise<void>((r) => client.bind(0, '127.0.0.1', r));
    cleanups.push(() => client.close());
    const cport = client.address().port;
    const replies: { msg: string; port: number }[] = [];
    client.on('message', (m, rinfo) => replies.push({ msg: m.toString(), port: rinfo.port }));
    client.send('ping', port, '127.0.0.1');
    await until(() => got.length === 1);
    expect(got[0]).toMatchObject({ src: GW, sport: cport, dst: VM, dport: 5353 });
    expect(got[0].payload.toString()).toBe('ping');
    expect(budget.perHost(VM)).toBe(1);
    expect(udp.isForwardReply(VM, 5353, GW, cport)).toBe(true);
    expect(udp.sessions(0)).toEqual([expect.objectContaining({
      proto: 'udp', direction: 'in', inside: '10.0.0.5:5353', remote: `10.0.0.1:${cport}`, outside: `127.0.0.1:${port}`, rxBytes: 4,
    })]);

    const p = udpPacket(VM, 5353, GW, cport, 'pong');
    udp.fromVm(p.buf, p.off, p.len);
    await until(() => replies.length === 1);
    expect(replies[0]).toEqual({ msg: 'pong', port });
    expect(udp.counters.opened).toBe(1); // no outbound mapping was opened for the answer

    udp.removeForward('127.0.0.1', port);
    expect(budget.total).toBe(0);
    expect(udp.sessions(0)).toHaveLength(0);
    expect(udp.isForwardReply(VM, 5353, GW, cport)).toBe(false);
  });

  it('shows a remote that is not local as itself, and expires forward sessions', async () => {
    const { udp, got, clock, budget } = harness();
    const port = await freePort();
    await udp.addForward({ address: '127.0.0.1', port, vmIp: VM, vmPort: 7 });
    const client = dgram.createSocket('udp4');
    cleanups.push(() => client.close());
    client.send('a', port, '127.0.0.1');
    await until(() => got.length === 1);
    expect(got[0].src).toBe(LO);
    udp.tick(clock.now + 180_000);
    expect(budget.total).toBe(0);
    expect(udp.counters.expired).toBe(1);
  });

  it('rejects a forward whose bind fails, and a duplicate', async () => {
    const { udp } = harness();
    const holder = dgram.createSocket('udp4');
    await new Promise<void>((r) => holder.bind(0, '127.0.0.1', r));
    cleanups.push(() => holder.close());
    const taken = holder.address().port;
    await expect(udp.addForward({ address: '127.0.0.1', port: taken, vmIp: VM, vmPort: 1 })).rejects.toThrow(/EADDRINUSE/);
    const port = await freePort();
    await udp.addForward({ address: '127.0.0.1', port, vmIp: VM, vmPort: 1 });
    await expect(udp.addForward({ address: '127.0.0.1', port, vmIp: VM, vmPort: 2 })).rejects.toThrow(/exists/);
    // The failed one left nothing behind: it can be added once the port is free.
    holder.close();
    cleanups.pop();
    await udp.addForward({ address: '127.0.0.1', port: taken, vmIp: VM, vmPort: 1 });
  });
});

describe('HostUdp input validation', () => {
  it('counts malformed input and never throws', () => {
    const { udp, budget } = harness();
    const c = udp.counters;
    const good = udpPacket(VM, 1000, LO, 9, 'data');
    expect(() => udp.fromVm(Buffer.alloc(0), 0, 0)).not.toThrow();
    udp.fromVm(good.buf, good.off, 19); // shorter than a header
    const long = udpPacket(VM, 1000, LO, 9, 'data', { ulenDelta: 1 });
    udp.fromVm(long.buf, long.off, long.len); // UDP length past the IP payload
    const short = udpPacket(VM, 1000, LO, 9, 'data', { ulenDelta: -9 });
    udp.fromVm(short.buf, short.off, short.len); // UDP length under its header
    const tcp = udpPacket(VM, 1000, LO, 9, 'data');
    tcp.buf[tcp.off + 9] = IPPROTO.TCP;
    udp.fromVm(tcp.buf, tcp.off, tcp.len); // IP checksum now wrong, and not UDP
    const port0 = udpPacket(VM, 1000, LO, 0, 'data');
    udp.fromVm(port0.buf, port0.off, port0.len);
    expect(c.malformed).toBe(6);
    const bad = udpPacket(VM, 1000, LO, 9, 'data', { csum: 'bad' });
    udp.fromVm(bad.buf, bad.off, bad.len);
    expect(c.badChecksum).toBe(1);
    // A checksum-partial packet from an offloading VM is not verified.
    udp.fromVm(bad.buf, bad.off, bad.len, undefined, true);
    expect(c.badChecksum).toBe(1);
    const frag = udpPacket(VM, 1000, LO, 9, 'data', { frag: 0x2000 });
    udp.fromVm(frag.buf, frag.off, frag.len);
    const frag2 = udpPacket(VM, 1000, LO, 9, 'data', { frag: 3 });
    udp.fromVm(frag2.buf, frag2.off, frag2.len);
    expect(c.fragment).toBe(2);
    // Checksum 0 means none: valid.
    const zero = udpPacket(VM, 1000, LO, 9, 'data', { csum: 'zero' });
    udp.fromVm(zero.buf, zero.off, zero.len);
    expect(c.toHost).toBe(2);
    expect(budget.total).toBe(1);
    for (let i = 0; i < 2000; i++) {
      const n = 1 + Math.floor(Math.random() * 80);
      const junk = Buffer.from(Array.from({ length: n }, () => Math.floor(Math.random() * 256)));
      if (i % 2 === 0) junk[0] = 0x45;
      expect(() => udp.fromVm(junk, 0, n)).not.toThrow();
    }
  });
});

describe('helpers', () => {
  it('parses dotted quads without a regex', () => {
    expect(ip4FromString('127.0.0.1')).toBe(LO);
    expect(ip4FromString('255.255.255.255')).toBe(0xffffffff);
    expect(ip4FromString('0.0.0.0')).toBe(0);
    for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '1..2.3', '::1', '1.2.3.4 ', '1.2.3.0004', '::ffff:1.2.3.4']) {
      expect(ip4FromString(bad)).toBe(-1);
    }
  });

  it('fragments a packet larger than the MTU in place, and the pieces reassemble', () => {
    const frame = Buffer.alloc(HOST_HEADROOM + 4000);
    const ipOff = HOST_HEADROOM;
    const data = Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 7) & 0xff));
    data.copy(frame, ipOff + 20);
    writeIp4(frame, ipOff, 3020, 0x1234, 0, 64, IPPROTO.UDP, LO, VM);
    const frags: { off: number; mf: boolean; data: Buffer; len: number }[] = [];
    const n = sendIp4((buf, off, len, vnet) => {
      expect(vnet).toBe(false);
      expect(off).toBeGreaterThanOrEqual(HOST_HEADROOM);
      expect(checkIpv4(buf, off, len)).toBe(IPV4_OK);
      expect(read16(buf, off + 4)).toBe(0x1234);
      expect(buf.readUInt32BE(off + 12)).toBe(LO);
      // The router writes its Ethernet header before the packet: it must not harm what follows.
      buf.fill(0xee, off - 14, off);
      const fw = read16(buf, off + 6);
      frags.push({ off: (fw & 0x1fff) * 8, mf: (fw & 0x2000) !== 0, data: Buffer.from(buf.subarray(off + 20, off + len)), len });
    }, frame, ipOff, 3020, 1500);
    expect(n).toBe(3);
    expect(frags.map((f) => f.len)).toEqual([1500, 1500, 60]);
    expect(frags.map((f) => f.mf)).toEqual([true, true, false]);
    expect(frags.map((f) => f.off)).toEqual([0, 1480, 2960]);
    expect(Buffer.concat(frags.map((f) => f.data)).equals(data)).toBe(true);
    // Within the MTU: one packet, untouched.
    writeIp4(frame, ipOff, 100, 1, 0, 64, IPPROTO.UDP, LO, VM);
    expect(sendIp4(() => {}, frame, ipOff, 100, 1500)).toBe(1);
  });

  it('delivers a reply larger than the VM MTU as fragments', async () => {
    const big = Buffer.alloc(3000, 0x61);
    const frags: Buffer[] = [];
    const udp = new HostUdp({
      clock: () => 0, budget: new HostBudget(), mtu: 1500,
      toVm: (buf, off, len) => {
        expect(checkIpv4(buf, off, len)).toBe(IPV4_OK);
        frags.push(Buffer.from(buf.subarray(off, off + len)));
      },
    });
    cleanups.push(() => udp.close());
    const srv = await echoServer('127.0.0.1', () => big);
    const p = udpPacket(VM, 40010, LO, srv.port, 'big please');
    udp.fromVm(p.buf, p.off, p.len);
    await until(() => frags.length === 3);
    expect(udp.counters.fragmented).toBe(1);
    const l4 = Buffer.concat(frags.map((f) => f.subarray(20)));
    expect(l4.length).toBe(3008);
    expect(fold(sum16(l4, 0, l4.length, pseudoSum(LO, VM, IPPROTO.UDP, 3008)))).toBe(0xffff);
    expect(l4.subarray(8).equals(big)).toBe(true);
  });
});
