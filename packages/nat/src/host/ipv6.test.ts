/*
 * The host NAT's engines over IPv6 (family.ts numbers): TCP, UDP and ICMPv6 echo
 * from a VM's IPv6 address through real sockets of this host on ::1, each frame
 * towards the VM checked as the VM's kernel would (IPv6 header, the pseudo-header
 * checksum computed here, not with the engine's code). The IPv4 paths have their
 * own files (tcp.test.ts, udp.test.ts, icmp.test.ts).
 */
import net from 'node:net';
import dgram from 'node:dgram';
import { EventEmitter } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { formatIp6, parseIp6 } from '@vswitch/switch';
import { HostBudget } from './types.js';
import { HostTcp } from './tcp.js';
import { HostUdp } from './udp.js';
import { HostIcmp, type RawIcmpSocket } from './icmp.js';
import { Addrs } from './family.js';

const VM6 = parseIp6('fd00:77::5')!;
const LO6 = parseIp6('::1')!;
const SYN = 0x02;
const ACK = 0x10;
const FIN = 0x01;
const RST = 0x04;
const clock = (): number => performance.now();

const r16 = (b: Uint8Array, o: number): number => (b[o] << 8) | b[o + 1];
const r32 = (b: Uint8Array, o: number): number => r16(b, o) * 0x10000 + r16(b, o + 2);
function w16(b: Uint8Array, o: number, v: number): void { b[o] = (v >>> 8) & 0xff; b[o + 1] = v & 0xff; }
function w32(b: Uint8Array, o: number, v: number): void { w16(b, o, v >>> 16); w16(b, o + 2, v & 0xffff); }

/** RFC 8200 8.1 checksum over the upper layer at b[l4, l4+len) with the addresses of the IPv6 header at ip. */
function sum6(b: Uint8Array, ip: number, l4: number, len: number, proto: number): number {
  let s = len + proto;
  for (let i = ip + 8; i < ip + 40; i += 2) s += r16(b, i);
  for (let i = l4; i < l4 + len; i += 2) s += b[i] * 256 + (i + 1 < l4 + len ? b[i + 1] : 0);
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

/** A VM's IPv6 packet (next header `proto`, payload `l4` with its checksum at `csumAt` filled in) at offset 14. */
function packet6(src: Uint8Array, dst: Uint8Array, proto: number, l4: Uint8Array, csumAt: number, o: { hops?: number; zeroCsum?: boolean } = {}): { buf: Buffer; off: number; len: number } {
  const off = 14;
  const buf = Buffer.alloc(off + 40 + l4.length);
  w32(buf, off, 0x60000000);
  w16(buf, off + 4, l4.length);
  buf[off + 6] = proto;
  buf[off + 7] = o.hops ?? 64;
  buf.set(src, off + 8);
  buf.set(dst, off + 24);
  buf.set(l4, off + 40);
  if (!o.zeroCsum) w16(buf, off + 40 + csumAt, ~sum6(buf, off, off + 40, l4.length, proto) & 0xffff);
  return { buf, off, len: 40 + l4.length };
}

function tcpSeg(sport: number, dport: number, seq: number, ack: number, flags: number, payload: Uint8Array = new Uint8Array(0), mss = 0): Uint8Array {
  const hl = mss > 0 ? 24 : 20;
  const t = new Uint8Array(hl + payload.length);
  w16(t, 0, sport);
  w16(t, 2, dport);
  w32(t, 4, seq);
  w32(t, 8, ack);
  t[12] = (hl / 4) << 4;
  t[13] = flags;
  w16(t, 14, 65535);
  if (mss > 0) {
    t[20] = 2;
    t[21] = 4;
    w16(t, 22, mss);
  }
  t.set(payload, hl);
  return t;
}

interface Got6 { src: string; dst: string; proto: number; hops: number; l4: Buffer; csumOk: boolean }

/** What the engine hands the VM, checked as an IPv6 packet. */
function collector(): { got: Got6[]; toVm: (buf: Buffer, ipOff: number, ipLen: number, vnet: boolean) => void } {
  const got: Got6[] = [];
  return {
    got,
    toVm: (buf, ipOff, ipLen, vnet) => {
      expect(vnet).toBe(false);
      expect(buf[ipOff] >>> 4).toBe(6);
      const plen = r16(buf, ipOff + 4);
      expect(40 + plen).toBe(ipLen);
      const proto = buf[ipOff + 6];
      got.push({
        src: formatIp6(buf, ipOff + 8), dst: formatIp6(buf, ipOff + 24), proto, hops: buf[ipOff + 7],
        l4: Buffer.from(buf.subarray(ipOff + 40, ipOff + ipLen)), csumOk: sum6(buf, ipOff, ipOff + 40, plen, proto) === 0xffff,
      });
    },
  };
}

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

const closers: (() => void)[] = [];
afterEach(() => {
  for (const c of closers.splice(0)) c();
});

describe('HostTcp over IPv6', () => {
  it('connects [::1], announces an MSS 20 less than over IPv4, carries data both ways, FIN both ways, and a RST from the host', async () => {
    const server = net.createServer({ allowHalfOpen: true });
    const received: Buffer[] = [];
    let peer: net.Socket | undefined;
    server.on('connection', (s) => {
      peer = s;
      s.on('data', (d) => received.push(d));
      s.on('end', () => s.end('bye'));
    });
    await new Promise<void>((r) => server.listen(0, '::1', r));
    closers.push(() => server.close());
    const port = (server.address() as net.AddressInfo).port;
    const { got, toVm } = collector();
    const tcp = new HostTcp({ clock, toVm, gso: false, mss: 1460, budget: new HostBudget() });
    closers.push(() => tcp.close());
    const send = (seq: number, ack: number, flags: number, payload?: Uint8Array, mss = 0): void => {
      const p = packet6(VM6, LO6, 6, tcpSeg(40000, port, seq, ack, flags, payload, mss), 16);
      tcp.fromVm(p.buf, p.off, p.len, false);
    };
    send(1000, 0, SYN, undefined, 1440);
    await until(() => got.length === 1);
    const synAck = got[0];
    expect([synAck.src, synAck.dst, synAck.proto, synAck.csumOk]).toEqual(['::1', 'fd00:77::5', 6, true]);
    expect(synAck.l4[13]).toBe(SYN | ACK);
    expect(r32(synAck.l4, 8)).toBe(1001);
    // Our MSS option: the network's MTU (1500) less 60.
    expect(synAck.l4[20]).toBe(2);
    expect(r16(synAck.l4, 22)).toBe(1440);
    const iss = r32(synAck.l4, 4);
    send(1001, iss + 1, ACK);
    send(1001, iss + 1, ACK, Buffer.from('hello over six'));
    await until(() => Buffer.concat(received).toString() === 'hello over six');
    expect(tcp.sessions(clock())[0]).toMatchObject({ inside: '[fd00:77::5]:40000', remote: `[::1]:${port}`, state: 'established' });
    // The VM's FIN half-closes the socket; the server's answer and its FIN come back.
    send(1015, iss + 1, FIN | ACK);
    await until(() => got.some((g) => (g.l4[13] & FIN) !== 0));
    const data = got.filter((g) => g.l4.length > 20).map((g) => g.l4.subarray((g.l4[12] >>> 4) * 4)).join('');
    expect(data).toBe('bye');
    expect(got.every((g) => g.csumOk && g.src === '::1')).toBe(true);
    const fin = got.find((g) => (g.l4[13] & FIN) !== 0)!;
    send(1016, r32(fin.l4, 4) + (fin.l4.length - (fin.l4[12] >>> 4) * 4) + 1, ACK);
    await until(() => tcp.sessions(clock())[0]?.state === 'time_wait' || tcp.sessions(clock()).length === 0);

    // A second connection, reset by the server: the VM gets a RST.
    send(5000, 0, SYN, undefined, 1440);
    await until(() => got.filter((g) => g.l4[13] === (SYN | ACK)).length === 2);
    const sa2 = got.filter((g) => g.l4[13] === (SYN | ACK))[1];
    send(5001, r32(sa2.l4, 4) + 1, ACK);
    await until(() => peer !== undefined && peer.remotePort !== undefined && tcp.counters.opened === 2);
    await until(() => tcp.sessions(clock()).some((s) => s.state === 'established'));
    peer!.resetAndDestroy();
    await until(() => got.some((g) => (g.l4[13] & RST) !== 0));
    expect(got.find((g) => (g.l4[13] & RST) !== 0)!.csumOk).toBe(true);
  });

  it('sends host data as GSO TCPV6 super-frames (gso_size the VM\'s MSS 1440, checksum-partial from the TCP header), as a virtio NIC takes them', async () => {
    // The download path of bench/scale/nat.sh over IPv6: the same super-frames as
    // IPv4's (tcp.test.ts), with gso_type TCPV6, csum_start past the 40-byte header,
    // and full blocks of 45 x 1440 bytes (64800, not IPv4's 44 x 1460).
    const down = Buffer.alloc(1 << 20);
    for (let i = 0; i < down.length; i++) down[i] = (i * 7 + (i >>> 11)) & 0xff;
    const server = net.createServer((s) => s.end(down));
    await new Promise<void>((r) => server.listen(0, '::1', r));
    closers.push(() => server.close());
    const port = (server.address() as net.AddressInfo).port;
    interface F6 { seq: number; flags: number; payload: Buffer; vnet?: { flags: number; gsoType: number; hdrLen: number; gsoSize: number; csumStart: number; csumOffset: number }; completedOk: boolean }
    const frames: F6[] = [];
    const le16 = (b: Uint8Array, o: number): number => b[o] | (b[o + 1] << 8);
    const toVm = (buf: Buffer, ipOff: number, ipLen: number, vnet: boolean): void => {
      expect(buf[ipOff] >>> 4).toBe(6);
      const plen = r16(buf, ipOff + 4);
      expect(40 + plen).toBe(ipLen);
      const th = ipOff + 40;
      const hl = (buf[th + 12] >>> 4) * 4;
      const f: F6 = { seq: r32(buf, th + 4), flags: buf[th + 13], payload: Buffer.from(buf.subarray(th + hl, ipOff + ipLen)), completedOk: false };
      if (vnet) {
        // virtio_net_hdr (10 bytes) before the Ethernet header, little-endian fields.
        const v = ipOff - 14 - 10;
        f.vnet = { flags: buf[v], gsoType: buf[v + 1], hdrLen: le16(buf, v + 2), gsoSize: le16(buf, v + 4), csumStart: le16(buf, v + 6), csumOffset: le16(buf, v + 8) };
        // Completed as the NIC (or the VM's kernel) does: the complement of the sum
        // from csum_start, over the field holding the pseudo-header sum.
        const seg = Buffer.from(buf.subarray(th, ipOff + ipLen));
        let s = 0;
        for (let i = 0; i < seg.length; i += 2) s += seg[i] * 256 + (i + 1 < seg.length ? seg[i + 1] : 0);
        while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
        w16(seg, 16, ~s & 0xffff);
        const whole = Buffer.from(buf.subarray(ipOff, ipOff + ipLen));
        whole.set(seg, 40);
        f.completedOk = sum6(whole, 0, 40, plen, 6) === 0xffff;
      } else {
        f.completedOk = sum6(buf, ipOff, th, plen, 6) === 0xffff;
      }
      frames.push(f);
    };
    const tcp = new HostTcp({ clock, toVm, gso: true, mss: 1460, budget: new HostBudget() });
    closers.push(() => tcp.close());
    const send = (seq: number, ack: number, flags: number, mss = 0): void => {
      const p = packet6(VM6, LO6, 6, tcpSeg(40010, port, seq, ack, flags, undefined, mss), 16);
      tcp.fromVm(p.buf, p.off, p.len, false);
    };
    send(1000, 0, SYN, 1440);
    await until(() => frames.length === 1);
    const iss = frames[0].seq;
    send(1001, iss + 1, ACK);
    // The VM: acknowledges what arrived in order, as its window (65535, unscaled) empties.
    let rcvNxt = iss + 1;
    const got: Buffer[] = [];
    let seen = 1;
    await until(() => {
      let moved = false;
      for (; seen < frames.length; seen++) {
        const f = frames[seen];
        if (f.seq === rcvNxt % 2 ** 32 && f.payload.length > 0) {
          got.push(f.payload);
          rcvNxt += f.payload.length;
          moved = true;
        }
        if ((f.flags & FIN) !== 0) rcvNxt += 1;
      }
      if (moved) send(1001, rcvNxt % 2 ** 32, ACK);
      return Buffer.concat(got).length === down.length;
    }, 10_000);
    expect(Buffer.concat(got).equals(down)).toBe(true);
    const data = frames.filter((f) => f.payload.length > 0);
    let big = 0;
    for (const f of data) {
      expect(f.vnet).toBeDefined();
      const v = f.vnet!;
      expect(v.flags).toBe(1); // NEEDS_CSUM
      expect([v.csumStart, v.csumOffset, v.hdrLen]).toEqual([14 + 40, 16, 14 + 40 + 20]);
      expect(f.completedOk).toBe(true);
      if (f.payload.length > 1440) {
        big++;
        expect([v.gsoType, v.gsoSize]).toEqual([4, 1440]); // VIRTIO_NET_HDR_GSO_TCPV6
      } else {
        expect(v.gsoType).toBe(0);
      }
    }
    expect(big).toBeGreaterThan(10);
    // Full blocks make full frames: 45 segments of 1440.
    expect(Math.max(...data.map((f) => f.payload.length))).toBe(45 * 1440);
    // Control segments stay complete frames.
    for (const f of frames.filter((x) => x.payload.length === 0)) {
      expect(f.vnet).toBeUndefined();
      expect(f.completedOk).toBe(true);
    }
  }, 15_000);

  it('answers a refused connect with a RST, and a failed one with ICMPv6 destination unreachable quoting the SYN', async () => {
    const { got, toVm } = collector();
    const tcp = new HostTcp({
      clock, toVm, gso: false, mss: 1460, budget: new HostBudget(),
      connect: (_ip, port) => {
        const s = new net.Socket();
        const code = port === 1 ? 'ECONNREFUSED' : 'ENETUNREACH';
        process.nextTick(() => s.destroy(Object.assign(new Error(code), { code })));
        return s;
      },
    });
    closers.push(() => tcp.close());
    const far = parseIp6('2001:db8::9')!;
    let p = packet6(VM6, far, 6, tcpSeg(40001, 1, 7, 0, SYN), 16);
    tcp.fromVm(p.buf, p.off, p.len, false);
    await until(() => got.length === 1);
    expect(got[0].proto).toBe(6);
    expect(got[0].l4[13] & RST).toBe(RST);
    p = packet6(VM6, far, 6, tcpSeg(40002, 2, 7, 0, SYN), 16);
    tcp.fromVm(p.buf, p.off, p.len, false);
    await until(() => got.length === 2);
    const u = got[1];
    expect([u.proto, u.l4[0], u.l4[1], u.src, u.csumOk]).toEqual([58, 1, 0, '2001:db8::9', true]);
    // The quote: the SYN's IPv6 header and 8 bytes of its TCP header.
    expect(u.l4.length).toBe(8 + 48);
    expect(formatIp6(u.l4, 8 + 8)).toBe('fd00:77::5');
    expect(r16(u.l4, 8 + 40 + 2)).toBe(2);
  });

  it('drops malformed, fragmented and badly summed IPv6 segments, counted, and never throws', () => {
    const { got, toVm } = collector();
    const tcp = new HostTcp({ clock, toVm, gso: false, mss: 1460, budget: new HostBudget() });
    closers.push(() => tcp.close());
    const p = packet6(VM6, LO6, 6, tcpSeg(40003, 9, 1, 0, SYN), 16);
    p.buf[p.off + 40 + 16] ^= 0xff;
    tcp.fromVm(p.buf, p.off, p.len, false);
    expect(tcp.counters.badChecksum).toBe(1);
    // A fragment header (next header 44) before TCP.
    const frag = new Uint8Array(8 + 20);
    frag[0] = 6;
    frag.set(tcpSeg(40003, 9, 1, 0, SYN), 8);
    const f = packet6(VM6, LO6, 44, frag, 0, { zeroCsum: true });
    w16(f.buf, f.off + 40 + 2, 8); // offset 1: not the first fragment
    tcp.fromVm(f.buf, f.off, f.len, false);
    expect(tcp.counters.fragment).toBe(1);
    const short = packet6(VM6, LO6, 6, new Uint8Array(10), 0, { zeroCsum: true });
    tcp.fromVm(short.buf, short.off, short.len, false);
    expect(tcp.counters.malformed).toBe(1);
    for (let i = 0; i < 300; i++) {
      const g = Buffer.alloc(14 + 40 + (i % 70));
      g[14] = 0x60;
      for (let k = 15; k < g.length; k++) g[k] = (i * 31 + k * 7) & 0xff;
      expect(() => tcp.fromVm(g, 14, g.length - 14, false)).not.toThrow();
    }
    expect(got.every((x) => x.csumOk)).toBe(true);
  });
});

describe('HostUdp over IPv6', () => {
  it('sends from a udp6 mapping and returns the answer as IPv6 with a valid checksum; zero checksums are refused', async () => {
    const echo = dgram.createSocket('udp6');
    echo.on('message', (m, r) => echo.send(m, r.port, r.address));
    await new Promise<void>((r) => echo.bind(0, '::1', r));
    closers.push(() => echo.close());
    const port = echo.address().port;
    const { got, toVm } = collector();
    const udp = new HostUdp({ clock, toVm, budget: new HostBudget(), mtu: 1500 });
    closers.push(() => udp.close());
    const dgramOf = (sport: number, msg: string): Uint8Array => {
      const u = new Uint8Array(8 + msg.length);
      w16(u, 0, sport);
      w16(u, 2, port);
      w16(u, 4, u.length);
      u.set(Buffer.from(msg), 8);
      return u;
    };
    const p = packet6(VM6, LO6, 17, dgramOf(5353, 'six'), 6);
    udp.fromVm(p.buf, p.off, p.len);
    await until(() => got.length === 1);
    expect([got[0].src, got[0].dst, got[0].proto, got[0].csumOk]).toEqual(['::1', 'fd00:77::5', 17, true]);
    expect([r16(got[0].l4, 0), r16(got[0].l4, 2), got[0].l4.subarray(8).toString()]).toEqual([port, 5353, 'six']);
    expect(udp.sessions(clock())[0]).toMatchObject({ inside: '[fd00:77::5]:5353', remote: `[::1]:${port}` });
    const z = packet6(VM6, LO6, 17, dgramOf(5354, 'zero'), 6, { zeroCsum: true });
    udp.fromVm(z.buf, z.off, z.len);
    expect(udp.counters.badChecksum).toBe(1);
  });

  it('sends an answer larger than the MTU as IPv6 fragments that reassemble to a valid datagram, counted', async () => {
    const big = dgram.createSocket('udp6');
    big.on('message', (_m, r) => big.send(Buffer.alloc(1600), r.port, r.address));
    await new Promise<void>((r) => big.bind(0, '::1', r));
    closers.push(() => big.close());
    const { got, toVm } = collector();
    const udp = new HostUdp({ clock, toVm, budget: new HostBudget(), mtu: 1500 });
    closers.push(() => udp.close());
    const u = new Uint8Array(9);
    w16(u, 0, 6000);
    w16(u, 2, big.address().port);
    w16(u, 4, 9);
    const p = packet6(VM6, LO6, 17, u, 6);
    udp.fromVm(p.buf, p.off, p.len);
    await until(() => udp.counters.fragmented === 1);
    expect(udp.counters.tooBig).toBe(0);
    // Two fragments (44: Fragment header) from the server's address to the VM, each within 1500.
    expect(got.map((g) => [g.proto, g.src, g.dst, 40 + g.l4.length <= 1500])).toEqual([[44, formatIp6(LO6), formatIp6(VM6), true], [44, formatIp6(LO6), formatIp6(VM6), true]]);
    const [a, b] = got.map((g) => g.l4);
    expect([a[0], r16(a, 2), r16(b, 2), a.readUInt32BE(4) === b.readUInt32BE(4)]).toEqual([17, 1, a.length - 8, true]);
    // Reassembled: a UDP datagram of 1608 bytes whose checksum (over the reassembled length) is right.
    const udpData = Buffer.concat([a.subarray(8), b.subarray(8)]);
    expect(udpData.length).toBe(1608);
    expect(r16(udpData, 4)).toBe(1608);
    const whole = Buffer.alloc(40 + 1608);
    whole[0] = 0x60;
    w16(whole, 4, 1608);
    whole[6] = 17;
    whole.set(LO6, 8);
    whole.set(VM6, 24);
    whole.set(udpData, 40);
    expect(sum6(whole, 0, 40, 1608, 17)).toBe(0xffff);
  });
});

class FakeRaw6 extends EventEmitter implements RawIcmpSocket {
  sent: { msg: Buffer; address: string }[] = [];
  options: [number, number, unknown][] = [];
  send(buf: Buffer, off: number, len: number, address: string, before: () => void, after: (err: Error | null, bytes: number) => void): this {
    before();
    this.sent.push({ msg: Buffer.from(buf.subarray(off, off + len)), address });
    after(null, len);
    return this;
  }
  setOption(level: number, option: number, value: number | Buffer): void {
    this.options.push([level, option, value]);
  }
  close(): this {
    this.emit('close');
    return this;
  }
}

describe('HostIcmp over IPv6', () => {
  function echo6(id: number, seq: number, type = 128): Uint8Array {
    const m = new Uint8Array(8 + 4);
    m[0] = type;
    w16(m, 4, id);
    w16(m, 6, seq);
    m.set([1, 2, 3, 4], 8);
    return m;
  }

  it('sends echo requests through the ICMPv6 socket with the VM\'s hop limit, and returns replies and errors translated', () => {
    const v4 = new FakeRaw6();
    const v6 = new FakeRaw6();
    const { got, toVm } = collector();
    const addrs = new Addrs(64);
    const icmp = new HostIcmp({ clock, toVm, budget: new HostBudget(), createSocket: () => v4, createSocket6: () => v6, addrs, mtu: 1500 });
    closers.push(() => icmp.close());
    expect(icmp.start()).toBe(true);
    expect(icmp.available6).toBe(true);
    // The filter: 32 bytes, passing echo replies (129) and the four errors.
    const filter = v6.options.find((o) => o[0] === 58 && o[1] === 1)![2] as Buffer;
    expect(filter.length).toBe(32);
    const passes = (t: number): boolean => (filter.readUInt32LE((t >>> 5) * 4) & (1 << (t & 31))) === 0;
    expect([129, 1, 2, 3, 4].every(passes)).toBe(true);
    expect([128, 133, 134, 135, 136].some(passes)).toBe(false);

    const far = parseIp6('2001:db8::7')!;
    const p = packet6(VM6, far, 58, echo6(0x4242, 1), 2, { hops: 9 });
    icmp.fromVm(p.buf, p.off, p.len);
    expect(v6.sent.length).toBe(1);
    expect(v4.sent.length).toBe(0);
    expect(v6.sent[0].address).toBe('2001:db8::7');
    expect(v6.options.some((o) => o[0] === 41 && o[1] === 16 && o[2] === 9)).toBe(true);
    const outId = r16(v6.sent[0].msg, 4);

    // The reply (as the raw socket gives it: no IPv6 header) reaches the VM with its identifier.
    const reply = echo6(outId, 1, 129);
    v6.emit('message', Buffer.from(reply), '2001:db8::7');
    expect(got.length).toBe(1);
    expect([got[0].src, got[0].dst, got[0].proto, got[0].csumOk, got[0].l4[0], r16(got[0].l4, 4)]).toEqual(['2001:db8::7', 'fd00:77::5', 58, true, 129, 0x4242]);
    // From an address the VM never pinged: filtered.
    v6.emit('message', Buffer.from(reply), '2001:db8::8');
    expect(icmp.counters.filtered).toBe(1);

    // A router's destination unreachable quoting the host's request: the VM sees its own request quoted.
    const hostSrc = parseIp6('2001:db8:1::1')!;
    const req = packet6(hostSrc, far, 58, echo6(outId, 2), 2);
    const err = Buffer.alloc(8 + 48);
    err[0] = 1;
    err[1] = 3;
    err.set(req.buf.subarray(req.off, req.off + 48), 8);
    v6.emit('message', err, '2001:db8:2::1');
    expect(got.length).toBe(2);
    const e = got[1];
    expect([e.src, e.proto, e.csumOk, e.l4[0], e.l4[1]]).toEqual(['2001:db8:2::1', 58, true, 1, 3]);
    expect(formatIp6(e.l4, 8 + 8)).toBe('fd00:77::5');
    expect(r16(e.l4, 8 + 40 + 4)).toBe(0x4242);
    // The quoted request's checksum, updated incrementally, is what the VM computed for its own request.
    const vmReq = packet6(VM6, far, 58, echo6(0x4242, 2), 2);
    expect(r16(e.l4, 8 + 40 + 2)).toBe(r16(vmReq.buf, vmReq.off + 40 + 2));
    expect(icmp.counters.errorsToVm).toBe(1);
    expect(icmp.sessions(clock())[0]).toMatchObject({ inside: '[fd00:77::5]:16962', remote: '2001:db8::7' });
  });

  it('sends an echo reply larger than the MTU as IPv6 fragments (one Identification, within 1500)', () => {
    const v6 = new FakeRaw6();
    const { got, toVm } = collector();
    const icmp = new HostIcmp({ clock, toVm, budget: new HostBudget(), createSocket: () => new FakeRaw6(), createSocket6: () => v6, addrs: new Addrs(64), mtu: 1500 });
    closers.push(() => icmp.close());
    icmp.start();
    const far = parseIp6('2001:db8::7')!;
    const p = packet6(VM6, far, 58, echo6(0x4242, 1), 2);
    icmp.fromVm(p.buf, p.off, p.len);
    const reply = Buffer.alloc(3008, 0x5a);
    reply[0] = 129;
    reply.writeUInt16BE(r16(v6.sent[0].msg, 4), 4);
    v6.emit('message', reply, '2001:db8::7');
    expect(got.map((g) => [g.proto, 40 + g.l4.length <= 1500])).toEqual([[44, true], [44, true], [44, true]]);
    expect(new Set(got.map((g) => g.l4.readUInt32BE(4))).size).toBe(1);
    const whole = Buffer.concat(got.map((g) => g.l4.subarray(8)));
    expect([whole.length, whole[0], r16(whole, 4), icmp.counters.tooBig]).toEqual([3008, 129, 0x4242, 0]);
  });

  it('counts IPv6 echo requests as unavailable without the ICMPv6 socket, and other ICMPv6 as not echo', () => {
    const { toVm } = collector();
    const icmp = new HostIcmp({ clock, toVm, budget: new HostBudget(), createSocket: () => new FakeRaw6() });
    closers.push(() => icmp.close());
    icmp.start();
    expect(icmp.available6).toBe(false);
    const p = packet6(VM6, LO6, 58, echo6(1, 1), 2);
    icmp.fromVm(p.buf, p.off, p.len);
    expect(icmp.counters.unavailable).toBe(1);
    const ns = packet6(VM6, LO6, 58, echo6(1, 1, 135), 2);
    icmp.fromVm(ns.buf, ns.off, ns.len);
    expect(icmp.counters.notEcho).toBe(1);
  });
});
