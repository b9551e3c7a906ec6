import { EventEmitter } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { IPPROTO, IPV4_OK, checkIpv4, checksum, fold, parseIp4, read16, sum16, write16, writeIpv4Header } from '@vswitch/switch';
import { HOST_HEADROOM, HostBudget } from './types.js';
import { HostIcmp, type HostIcmpOptions, type RawIcmpSocket } from './icmp.js';

const ip = (s: string): number => parseIp4(s);
const VM = ip('10.0.0.5');
const VM2 = ip('10.0.0.6');
const LO = ip('127.0.0.1');
const FAR = ip('192.0.2.7');
const ROUTER = ip('198.51.100.1');

/** An ICMP message (header + data) with its checksum. */
function icmpMsg(type: number, code: number, id: number, seq: number, data: Uint8Array): Buffer {
  const m = Buffer.alloc(8 + data.length);
  m[0] = type;
  m[1] = code;
  write16(m, 4, id);
  write16(m, 6, seq);
  m.set(data, 8);
  write16(m, 2, checksum(m, 0, m.length));
  return m;
}

/** IPv4 around an ICMP message, at offset 14 of a frame-sized buffer. */
function ipPacket(
  src: number, dst: number, icmp: Buffer, o: { ttl?: number; frag?: number } = {},
): { buf: Buffer; off: number; len: number } {
  const off = 14;
  const len = 20 + icmp.length;
  const buf = Buffer.alloc(off + len);
  writeIpv4Header(buf, off, { totalLen: len, proto: IPPROTO.ICMP, src, dst, ttl: o.ttl ?? 64, id: 9 });
  if (o.frag !== undefined) {
    write16(buf, off + 6, o.frag);
    write16(buf, off + 10, 0);
    write16(buf, off + 10, checksum(buf, off, 20));
  }
  icmp.copy(buf, off + 20);
  return { buf, off, len };
}

function echoRequest(src: number, dst: number, id: number, seq: number, data = Buffer.from('vswitch ping payload'), ttl = 64) {
  return ipPacket(src, dst, icmpMsg(8, 0, id, seq, data), { ttl });
}

interface Got {
  src: number;
  dst: number;
  ttl: number;
  type: number;
  code: number;
  id: number;
  seq: number;
  icmp: Buffer;
}

function decode(buf: Buffer, ipOff: number, ipLen: number, vnet: boolean): Got {
  expect(vnet).toBe(false);
  expect(ipOff).toBeGreaterThanOrEqual(HOST_HEADROOM);
  expect(checkIpv4(buf, ipOff, ipLen)).toBe(IPV4_OK);
  expect(buf[ipOff + 9]).toBe(IPPROTO.ICMP);
  expect(read16(buf, ipOff + 6)).toBe(0);
  const icmp = Buffer.from(buf.subarray(ipOff + 20, ipOff + ipLen));
  expect(fold(sum16(icmp, 0, icmp.length))).toBe(0xffff);
  return {
    src: buf.readUInt32BE(ipOff + 12), dst: buf.readUInt32BE(ipOff + 16), ttl: buf[ipOff + 8],
    type: icmp[0], code: icmp[1], id: read16(icmp, 4), seq: read16(icmp, 6), icmp,
  };
}

const cleanups: (() => void)[] = [];
afterEach(() => {
  while (cleanups.length > 0) cleanups.pop()!();
});

function harness(o: Partial<HostIcmpOptions> = {}, budget = new HostBudget()) {
  const clock = { now: 5_000_000 };
  const got: Got[] = [];
  const events: { event: string; [k: string]: unknown }[] = [];
  const icmp = new HostIcmp({
    clock: () => clock.now, budget, onEvent: (e) => events.push(e),
    toVm: (buf, ipOff, ipLen, vnet) => got.push(decode(buf, ipOff, ipLen, vnet)),
    ...o,
  });
  cleanups.push(() => icmp.close());
  return { icmp, got, clock, budget, events };
}

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A stand-in raw socket: records sends and options, lets the test deliver packets. */
class FakeRaw extends EventEmitter implements RawIcmpSocket {
  sent: { msg: Buffer; address: string; ttl: number }[] = [];
  options: [number, number, number][] = [];
  ttl = 64;
  closed = false;
  fail: Error | null = null;
  send(
    buf: Buffer, off: number, len: number, address: string, before: () => void, after: (err: Error | null, bytes: number) => void,
  ): this {
    before();
    this.sent.push({ msg: Buffer.from(buf.subarray(off, off + len)), address, ttl: this.ttl });
    after(this.fail, this.fail ? 0 : len);
    return this;
  }
  setOption(level: number, option: number, value: number): void {
    this.options.push([level, option, value]);
    if (level === 0 && option === 2) this.ttl = value;
  }
  close(): this {
    this.closed = true;
    this.emit('close');
    return this;
  }
  /** Delivers an IPv4 packet as the raw socket would (header included). */
  deliver(src: number, dst: number, icmp: Buffer, ttl = 55): void {
    const p = ipPacket(src, dst, icmp, { ttl });
    this.emit('message', p.buf.subarray(p.off, p.off + p.len), '0.0.0.0');
  }
}

describe('HostIcmp through the real raw socket (root)', () => {
  it('pings 127.0.0.1 and returns the echo reply with the VM identifier restored', async () => {
    const { icmp, got, events } = harness();
    expect(icmp.start()).toBe(true);
    expect(events).toEqual([]);
    const p = echoRequest(VM, LO, 0x4242, 1);
    icmp.fromVm(p.buf, p.off, p.len);
    await until(() => got.length === 1);
    const r = got[0];
    expect(r).toMatchObject({ src: LO, dst: VM, type: 0, code: 0, id: 0x4242, seq: 1 });
    expect(r.icmp.subarray(8).toString()).toBe('vswitch ping payload');
    expect(icmp.counters).toMatchObject({ opened: 1, toHost: 1, toVm: 1, sendErrors: 0 });
    expect(icmp.sessions(5_000_000)).toEqual([expect.objectContaining({
      proto: 'icmp', direction: 'out', inside: '10.0.0.5:16962', remote: '127.0.0.1', state: 'active', txBytes: 20, rxBytes: 20,
    })]);
  });

  it('keeps two VMs using the same identifier apart', async () => {
    const { icmp, got, budget } = harness();
    expect(icmp.start()).toBe(true);
    const a = echoRequest(VM, LO, 7, 1, Buffer.from('from vm one'));
    const b = echoRequest(VM2, LO, 7, 1, Buffer.from('from vm two'));
    icmp.fromVm(a.buf, a.off, a.len);
    icmp.fromVm(b.buf, b.off, b.len);
    await until(() => got.length === 2);
    await new Promise((r) => setTimeout(r, 50));
    expect(got).toHaveLength(2);
    const byDst = new Map(got.map((g) => [g.dst, g]));
    expect(byDst.get(VM)).toMatchObject({ id: 7, seq: 1 });
    expect(byDst.get(VM)!.icmp.subarray(8).toString()).toBe('from vm one');
    expect(byDst.get(VM2)).toMatchObject({ id: 7, seq: 1 });
    expect(byDst.get(VM2)!.icmp.subarray(8).toString()).toBe('from vm two');
    const outs = icmp.sessions(0).map((s) => s.outside);
    expect(new Set(outs).size).toBe(2);
    expect(budget.total).toBe(2);
  });
});

describe('HostIcmp without a raw socket', () => {
  it('reports icmp_unavailable once and counts echo requests as unavailable', () => {
    const { icmp, events, got, budget } = harness({ createSocket: () => { throw new Error('socket: Operation not permitted'); } });
    expect(icmp.start()).toBe(false);
    expect(icmp.start()).toBe(false);
    expect(events).toEqual([{ event: 'icmp_unavailable', error: 'socket: Operation not permitted' }]);
    const p = echoRequest(VM, FAR, 1, 1);
    icmp.fromVm(p.buf, p.off, p.len);
    icmp.fromVm(p.buf, p.off, p.len);
    expect(icmp.counters.unavailable).toBe(2);
    expect(got).toHaveLength(0);
    expect(budget.total).toBe(0);
    expect(icmp.available).toBe(false);
  });

  it('turns unavailable when the socket closes under it', () => {
    const sock = new FakeRaw();
    const { icmp, events } = harness({ createSocket: () => sock });
    expect(icmp.start()).toBe(true);
    sock.emit('error', new Error('poll: -9'));
    sock.close();
    expect(events).toEqual([{ event: 'icmp_unavailable', error: 'the raw ICMP socket closed' }]);
    expect(icmp.counters.socketErrors).toBe(1);
    const p = echoRequest(VM, FAR, 1, 1);
    icmp.fromVm(p.buf, p.off, p.len);
    expect(icmp.counters.unavailable).toBe(1);
  });
});

describe('HostIcmp mapping (fake socket)', () => {
  function started(o: Partial<HostIcmpOptions> = {}, budget = new HostBudget()) {
    const sock = new FakeRaw();
    const h = harness({ createSocket: () => sock, ...o }, budget);
    expect(h.icmp.start()).toBe(true);
    return { ...h, sock };
  }

  it('installs the ICMP filter and passes the VM TTL on', () => {
    const { icmp, sock } = started();
    const mask = sock.options.find(([l, o]) => l === 255 && o === 1)![2];
    for (const t of [0, 3, 11, 12]) expect((mask >>> t) & 1).toBe(0);
    for (const t of [8, 5, 13]) expect((mask >>> t) & 1).toBe(1);
    const p = echoRequest(VM, FAR, 1, 1, undefined, 3);
    icmp.fromVm(p.buf, p.off, p.len);
    const q = echoRequest(VM, FAR, 1, 2, undefined, 3);
    icmp.fromVm(q.buf, q.off, q.len);
    const r = echoRequest(VM, FAR, 1, 3, undefined, 64);
    icmp.fromVm(r.buf, r.off, r.len);
    expect(sock.sent.map((s) => s.ttl)).toEqual([3, 3, 64]);
    expect(sock.options.filter(([l, o]) => l === 0 && o === 2)).toHaveLength(2); // set only when it changes
    expect(sock.sent[0].address).toBe('192.0.2.7');
  });

  it('rewrites a colliding identifier with a valid checksum, and restores it on the reply', () => {
    const { icmp, sock, got } = started();
    const a = echoRequest(VM, FAR, 100, 1);
    const b = echoRequest(VM2, FAR, 100, 1);
    icmp.fromVm(a.buf, a.off, a.len);
    icmp.fromVm(b.buf, b.off, b.len);
    const [sa, sb] = sock.sent;
    expect(read16(sa.msg, 4)).toBe(100); // the VM's own id while it is free
    const outB = read16(sb.msg, 4);
    expect(outB).not.toBe(100);
    for (const s of [sa, sb]) expect(fold(sum16(s.msg, 0, s.msg.length))).toBe(0xffff);
    // The replies, as the far end would send them.
    sock.deliver(FAR, ip('203.0.113.1'), icmpMsg(0, 0, outB, 1, sb.msg.subarray(8)));
    sock.deliver(FAR, ip('203.0.113.1'), icmpMsg(0, 0, 100, 1, sa.msg.subarray(8)));
    expect(got.map((g) => [g.dst, g.id, g.src, g.ttl])).toEqual([[VM2, 100, FAR, 55], [VM, 100, FAR, 55]]);
  });

  it('drops replies that are not ours or come from elsewhere', () => {
    const { icmp, sock, got } = started();
    const a = echoRequest(VM, FAR, 200, 1);
    icmp.fromVm(a.buf, a.off, a.len);
    sock.deliver(FAR, 1, icmpMsg(0, 0, 201, 1, Buffer.alloc(4))); // another program's ping
    sock.deliver(ip('192.0.2.8'), 1, icmpMsg(0, 0, 200, 1, Buffer.alloc(4))); // not the address pinged
    const bad = icmpMsg(0, 0, 200, 1, Buffer.alloc(4));
    bad[9] ^= 1;
    sock.deliver(FAR, 1, bad);
    sock.deliver(FAR, 1, icmpMsg(8, 0, 200, 1, Buffer.alloc(4))); // a request (no filter): ignored
    sock.emit('message', Buffer.from([0x45, 0, 0, 99, 0, 0]), '0.0.0.0'); // truncated
    expect(got).toHaveLength(0);
    expect(icmp.counters).toMatchObject({ notOurs: 1, filtered: 1, badChecksum: 1, truncated: 1 });
  });

  it('translates an ICMP error that quotes our request back to the VM', () => {
    const { icmp, sock, got } = started();
    const a = echoRequest(VM, FAR, 300, 9);
    const b = echoRequest(VM2, FAR, 300, 9, undefined, 1);
    icmp.fromVm(a.buf, a.off, a.len);
    icmp.fromVm(b.buf, b.off, b.len);
    const sent = sock.sent[1].msg;
    const outId = read16(sent, 4);
    expect(outId).not.toBe(300);
    // What the host put on the wire: its own source address, TTL 1, our identifier.
    const HOST = ip('192.168.1.20');
    const quoted = ipPacket(HOST, FAR, sent, { ttl: 1 });
    const quote = quoted.buf.subarray(quoted.off, quoted.off + 28);
    const err = icmpMsg(11, 0, 0, 0, quote); // time exceeded, unused word 0
    sock.deliver(ROUTER, HOST, err, 250);
    expect(got).toHaveLength(1);
    const g = got[0];
    expect(g).toMatchObject({ src: ROUTER, dst: VM2, type: 11, code: 0, ttl: 250 });
    const q = g.icmp.subarray(8);
    expect(fold(sum16(q, 0, 20))).toBe(0xffff); // the quoted header's checksum is right again
    expect(q.readUInt32BE(12)).toBe(VM2);
    expect(q.readUInt32BE(16)).toBe(FAR);
    expect(read16(q, 20 + 4)).toBe(300);
    expect(read16(q, 20 + 6)).toBe(9);
    // The quoted echo checksum is updated, not recomputed: it still matches the VM's request.
    expect(read16(q, 20 + 2)).toBe(read16(b.buf, b.off + 20 + 2));
    expect(icmp.counters.errorsToVm).toBe(1);
    // Destination unreachable with a quote that is not ICMP, or not ours: ignored.
    const udpQuote = Buffer.from(quote);
    udpQuote[9] = IPPROTO.UDP;
    sock.deliver(ROUTER, HOST, icmpMsg(3, 3, 0, 0, udpQuote));
    const other = ipPacket(HOST, FAR, icmpMsg(8, 0, 999, 1, Buffer.alloc(0)));
    sock.deliver(ROUTER, HOST, icmpMsg(3, 1, 0, 0, other.buf.subarray(other.off, other.off + 28)));
    expect(got).toHaveLength(1);
  });

  it('expires idle mappings and releases the budget once; refuses past the budget', () => {
    const budget = new HostBudget({ maxPerHost: 1 });
    const { icmp, sock, clock } = started({}, budget);
    const t0 = clock.now;
    const a = echoRequest(VM, FAR, 1, 1);
    const b = echoRequest(VM, FAR, 2, 1);
    icmp.fromVm(a.buf, a.off, a.len);
    icmp.fromVm(b.buf, b.off, b.len);
    expect(sock.sent).toHaveLength(1);
    expect(icmp.counters.refused).toBe(1);
    expect(budget.total).toBe(1);
    icmp.tick(t0 + 59_999);
    expect(budget.total).toBe(1);
    icmp.tick(t0 + 60_000);
    expect(budget.total).toBe(0);
    expect(icmp.counters.expired).toBe(1);
    icmp.tick(t0 + 120_000);
    icmp.close();
    expect(icmp.counters.expired).toBe(1);
    expect(budget.total).toBe(0);
    expect(sock.closed).toBe(true);
    // A reply after expiry has no mapping.
    sock.deliver(FAR, 1, icmpMsg(0, 0, 1, 1, Buffer.alloc(0)));
  });

  it('counts send errors and bounds the send queue', () => {
    const sock = new FakeRaw();
    sock.fail = new Error('sendto: Network is unreachable');
    const h = harness({ createSocket: () => sock });
    h.icmp.start();
    const a = echoRequest(VM, FAR, 1, 1);
    h.icmp.fromVm(a.buf, a.off, a.len);
    expect(h.icmp.counters.sendErrors).toBe(1);

    // A socket that never becomes writable: the queue stops at maxPending.
    const stuck: RawIcmpSocket = { on: () => {}, send: () => {}, setOption: () => {}, close: () => {} };
    const s = harness({ createSocket: () => stuck, maxPending: 3 });
    s.icmp.start();
    for (let i = 0; i < 5; i++) s.icmp.fromVm(a.buf, a.off, a.len);
    expect(s.icmp.counters).toMatchObject({ toHost: 3, queueFull: 2 });
  });

  it('counts malformed and non-echo input from VMs, never throws', () => {
    const { icmp, sock } = started();
    const c = icmp.counters;
    expect(() => icmp.fromVm(Buffer.alloc(3), 0, 3)).not.toThrow();
    const ts = ipPacket(VM, FAR, icmpMsg(13, 0, 1, 1, Buffer.alloc(12)));
    icmp.fromVm(ts.buf, ts.off, ts.len);
    const unreach = ipPacket(VM, FAR, icmpMsg(3, 3, 0, 0, Buffer.alloc(28)));
    icmp.fromVm(unreach.buf, unreach.off, unreach.len);
    expect(c.notEcho).toBe(2);
    const bad = echoRequest(VM, FAR, 1, 1);
    bad.buf[bad.off + 30] ^= 0xff;
    icmp.fromVm(bad.buf, bad.off, bad.len);
    expect(c.badChecksum).toBe(1);
    const frag = ipPacket(VM, FAR, icmpMsg(8, 0, 1, 1, Buffer.alloc(8)), { frag: 0x2000 });
    icmp.fromVm(frag.buf, frag.off, frag.len);
    expect(c.fragment).toBe(1);
    const short = ipPacket(VM, FAR, Buffer.from([8, 0, 0, 0]));
    icmp.fromVm(short.buf, short.off, short.len);
    expect(c.malformed).toBe(2);
    for (let i = 0; i < 2000; i++) {
      const n = 1 + Math.floor(Math.random() * 80);
      const junk = Buffer.from(Array.from({ length: n }, () => Math.floor(Math.random() * 256)));
      if (i % 2 === 0) junk[0] = 0x45;
      expect(() => icmp.fromVm(junk, 0, n)).not.toThrow();
      expect(() => sock.emit('message', junk, '0.0.0.0')).not.toThrow();
    }
    expect(sock.sent).toHaveLength(0);
  });

  it('fragments a reply larger than the VM MTU', () => {
    const frags: Buffer[] = [];
    const sock = new FakeRaw();
    const icmp = new HostIcmp({
      clock: () => 0, budget: new HostBudget(), mtu: 576, createSocket: () => sock,
      toVm: (buf, off, len) => {
        expect(checkIpv4(buf, off, len)).toBe(IPV4_OK);
        frags.push(Buffer.from(buf.subarray(off, off + len)));
      },
    });
    cleanups.push(() => icmp.close());
    icmp.start();
    const a = echoRequest(VM, FAR, 5, 1, Buffer.alloc(8));
    icmp.fromVm(a.buf, a.off, a.len);
    sock.deliver(FAR, 1, icmpMsg(0, 0, 5, 1, Buffer.alloc(1400, 0x33)));
    expect(frags.map((f) => f.length)).toEqual([572, 572, 324]); // 1408 bytes of ICMP: 552 + 552 + 304
    const whole = Buffer.concat(frags.map((f) => f.subarray(20)));
    expect(fold(sum16(whole, 0, whole.length))).toBe(0xffff);
    expect(read16(whole, 4)).toBe(5);
  });
});
