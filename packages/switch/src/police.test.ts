import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Bridge } from './bridge.js';
import { Drop } from './drop.js';
import type { PortIo, PortKind, PortRx } from './port.js';
import { Bucket, E_RATE, formatRate, formatSize, parseRate, parseSize, RateError, SHAPER_QUEUE, Shaper } from './police.js';
import { VNET_HDR_LEN } from './wire/vnet.js';
import { writeMac } from './wire/ethernet.js';

describe('units as tc', () => {
  it('reads rates in bits (powers of 1000, kibit 1024) and bytes per second', () => {
    expect(parseRate('100mbit')).toBe(100e6);
    expect(parseRate('1gbit')).toBe(1e9);
    expect(parseRate('1.5Mbit')).toBe(1.5e6);
    expect(parseRate('64kbit')).toBe(64e3);
    expect(parseRate('8kibit')).toBe(8192);
    expect(() => parseRate('1kibit')).toThrow(/out of range/);
    expect(parseRate('10mbps')).toBe(80e6);
    expect(parseRate(5_000_000)).toBe(5e6);
    expect(parseRate('20000000')).toBe(20e6);
    expect(formatRate(100e6)).toBe('100mbit');
    expect(formatRate(1.5e6)).toBe('1.5mbit');
    expect(formatRate(2e9)).toBe('2gbit');
  });

  it('reads sizes in bytes (k, m, g of 1024) and bits', () => {
    expect(parseSize('1mb')).toBe(1048576);
    expect(parseSize('1m')).toBe(1048576);
    expect(parseSize('64k')).toBe(65536);
    expect(parseSize('1500')).toBe(1500);
    expect(parseSize('100kbit')).toBe(12500);
    expect(formatSize(1048576)).toBe('1mb');
    expect(formatSize(65536)).toBe('64kb');
  });

  it('refuses what it cannot read or what is out of range, saying which', () => {
    for (const [v, msg] of [
      ['fast', /bad rate 'fast'/], ['100 furlongs', /bad rate/], ['-1mbit', /bad rate/], ['0mbit', /more than 0/],
      ['100', /out of range: 8kbit to 1tbit/], ['2tbit', /out of range/], [Number.NaN, /positive number/], [-5, /positive number/],
    ] as const) expect(() => parseRate(v), String(v)).toThrow(msg);
    for (const [v, msg] of [['10', /out of range: 1500 bytes to 1gb/], ['2gb', /out of range/], ['1mbx', /bad burst/], ['', /bad burst/]] as const) {
      expect(() => parseSize(v), v).toThrow(msg);
    }
    expect(() => parseRate('x')).toThrow(RateError);
  });
});

describe('Bucket', () => {
  it('passes a burst, then the rate; a frame takes its whole size (GSO), into debt', () => {
    const b = new Bucket({ rate: 8e6, burst: 10_000 }, 0); // 1000 bytes per ms
    let n = 0;
    while (b.take(1000, 0)) n++;
    expect(n).toBe(10);
    expect(b.take(1000, 1)).toBe(true);
    expect(b.take(1000, 1)).toBe(false);
    // A 64 KB super-frame passes on any positive balance, and the debt is paid back at the rate.
    expect(b.take(65536, 100)).toBe(true);
    expect(b.take(100, 150)).toBe(false);
    expect(b.take(100, 166)).toBe(true);
  });

  it('holds the long-run rate under twice the offered load', () => {
    const b = new Bucket({ rate: 80e6, burst: 100_000 }, 0); // 10 MB/s
    let bytes = 0;
    for (let t = 0; t < 1000; t += 0.05) if (b.take(1500, t)) bytes += 1500; // 30 MB/s offered
    expect(bytes).toBeGreaterThan(10e6);
    expect(bytes).toBeLessThan(10e6 + 100_000 + 1500);
  });

  it('limits packets per second too when asked', () => {
    const b = new Bucket({ rate: 1e9, burst: 1 << 20, pps: 1000 }, 0);
    let n = 0;
    for (let t = 0; t < 1000; t += 0.1) if (b.take(64, t)) n++;
    expect(n).toBeGreaterThanOrEqual(1000);
    expect(n).toBeLessThanOrEqual(1000 + 100);
  });

  it('ignores a clock that steps back', () => {
    const b = new Bucket({ rate: 8e6, burst: 1500 }, 100);
    expect(b.take(1500, 100)).toBe(true);
    expect(b.take(1500, 50)).toBe(false);
    expect(b.take(1500, 102)).toBe(true);
  });
});

class RecIo implements PortIo {
  readonly kind: PortKind = 'tap';
  readonly offload = true;
  sent: { bytes: Uint8Array; vnet: Uint8Array | undefined }[] = [];
  fail: number | undefined;
  rx!: PortRx;
  start(rx: PortRx): void { this.rx = rx; }
  send(buf: Uint8Array, off: number, len: number): number {
    if (this.fail !== undefined) return this.fail;
    this.sent.push({ bytes: Uint8Array.from(buf.subarray(off, off + len)), vnet: undefined });
    return len;
  }
  send2(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    const f = new Uint8Array(alen + blen);
    f.set(a.subarray(aoff, aoff + alen), 0);
    f.set(b.subarray(boff, boff + blen), alen);
    this.sent.push({ bytes: f, vnet: undefined });
    return alen + blen;
  }
  sendVnet(buf: Uint8Array, off: number, len: number): number {
    this.sent.push({ bytes: Uint8Array.from(buf.subarray(off, off + len)), vnet: Uint8Array.from(buf.subarray(off - VNET_HDR_LEN, off)) });
    return len;
  }
  send2Vnet(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    const f = new Uint8Array(alen + blen);
    f.set(a.subarray(aoff, aoff + alen), 0);
    f.set(b.subarray(boff, boff + blen), alen);
    this.sent.push({ bytes: f, vnet: Uint8Array.from(a.subarray(aoff - VNET_HDR_LEN, aoff)) });
    return alen + blen;
  }
  close(): void {}
  describe(): Record<string, string | number | boolean> { return {}; }
}

function frame(n: number, len = 1000): Uint8Array {
  const f = new Uint8Array(VNET_HDR_LEN + len).fill(n & 0xff);
  return f;
}

describe('Shaper', () => {
  let now = 0;
  beforeEach(() => {
    vi.useFakeTimers();
    now = 0;
  });
  afterEach(() => vi.useRealTimers());
  const advance = (ms: number): void => {
    for (let i = 0; i < ms; i++) {
      now += 1;
      vi.advanceTimersByTime(1);
    }
  };

  it('sends at once within the burst, queues the rest in order, and sends it at the rate', () => {
    const io = new RecIo();
    const failed: number[] = [];
    const s = new Shaper({ rate: 8e6, burst: 3000 }, io, 0, (r) => failed.push(r), () => now); // 1000 bytes per ms
    for (let i = 0; i < 10; i++) {
      const f = frame(i);
      expect(s.send(f, VNET_HDR_LEN, 1000)).toBe(1000);
    }
    expect(io.sent.map((x) => x.bytes[0])).toEqual([0, 1, 2]);
    expect(s.backlog).toBe(7);
    advance(3);
    expect(io.sent.map((x) => x.bytes[0])).toEqual([0, 1, 2, 3, 4, 5]);
    advance(10);
    expect(io.sent.map((x) => x.bytes[0])).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(s.backlog).toBe(0);
    expect(failed).toEqual([]);
    // Two pieces (a tag edit) and frames with a virtio_net_hdr keep their bytes through the queue.
    const hdr = new Uint8Array(VNET_HDR_LEN + 12).fill(0xee);
    const rest = new Uint8Array(200).fill(0x77);
    for (let i = 0; i < 5; i++) s.send2Vnet(hdr, VNET_HDR_LEN, 12, rest, 0, 200);
    const g = frame(0x42, 64000);
    g.fill(0x99, 0, VNET_HDR_LEN);
    s.sendVnet(g, VNET_HDR_LEN, 64000);
    advance(80);
    const last = io.sent.slice(-6);
    expect(last.map((x) => x.bytes.length)).toEqual([212, 212, 212, 212, 212, 64000]);
    for (const x of last.slice(0, 5)) {
      expect(x.vnet).toEqual(new Uint8Array(VNET_HDR_LEN).fill(0xee));
      expect(x.bytes.subarray(0, 12)).toEqual(new Uint8Array(12).fill(0xee));
      expect(x.bytes.subarray(12)).toEqual(rest);
    }
    expect(last[5].vnet).toEqual(new Uint8Array(VNET_HDR_LEN).fill(0x99));
    expect(last[5].bytes[63999]).toBe(0x42);
  });

  it('with pps, a frame also waits for a packet token: the packet burst at once, then pps a second, in order', () => {
    const io = new RecIo();
    const s = new Shaper({ rate: 1e9, burst: 1 << 20, pps: 100 }, io, 0, () => {}, () => now); // bytes plenty: packets limit
    for (let i = 0; i < 30; i++) expect(s.send(frame(i), VNET_HDR_LEN, 100)).toBe(100);
    expect(io.sent.length).toBe(16); // max(16, pps / 10)
    expect(s.backlog).toBe(14);
    advance(55); // 100 pps: 5 more in 55 ms
    expect(io.sent.length).toBe(21);
    advance(90);
    expect(io.sent.length).toBe(30);
    expect(io.sent.map((x) => x.bytes[0])).toEqual([...Array(30).keys()]);
    expect(s.backlog).toBe(0);
  });

  it('drops what does not fit its bounded queue (E_RATE), and wraps the ring without losing order', () => {
    const io = new RecIo();
    const s = new Shaper({ rate: 8e6, burst: 1500 }, io, 0, () => {}, () => now);
    expect(s.capacity).toBe(SHAPER_QUEUE.minBytes);
    let accepted = 0;
    let refused = 0;
    for (let i = 0; i < 200; i++) {
      const r = s.send(frame(i), VNET_HDR_LEN, 1000);
      if (r === E_RATE) refused++;
      else accepted++;
    }
    expect(accepted).toBe(2 + Math.floor(SHAPER_QUEUE.minBytes / 1000));
    expect(refused).toBe(200 - accepted);
    expect(s.dropped).toBe(refused);
    // Half drains, more arrive (they go past the ring's end to its start), all leave in order.
    advance(60);
    for (let i = 200; i < 250; i++) expect(s.send(frame(i), VNET_HDR_LEN, 1000)).toBe(1000);
    advance(200);
    const order = io.sent.map((x) => x.bytes[0]);
    expect(order).toEqual([...Array.from({ length: accepted }, (_, i) => i), ...Array.from({ length: 50 }, (_, i) => 200 + i)]);
    expect(s.backlog).toBe(0);
  });

  it('reports a queued frame the device refuses later; close drops the queue and stops the timer', () => {
    const io = new RecIo();
    const failed: number[] = [];
    const s = new Shaper({ rate: 8e6, burst: 1500 }, io, 0, (r) => failed.push(r), () => now);
    for (let i = 0; i < 5; i++) s.send(frame(i), VNET_HDR_LEN, 1000);
    io.fail = -105;
    advance(2);
    expect(failed.length).toBeGreaterThan(0);
    expect(failed.every((r) => r === -105)).toBe(true);
    s.close();
    const before = io.sent.length;
    io.fail = undefined;
    advance(20);
    expect(io.sent.length).toBe(before);
    expect(s.backlog).toBe(0);
  });
});

describe('rate limits on a bridge port', () => {
  function eth(dst: number, src: number, len: number): Uint8Array {
    const f = new Uint8Array(len);
    writeMac(f, 0, dst);
    writeMac(f, 6, src);
    f[12] = 0x08;
    return f;
  }

  it('polices ingress (ingress_rate), shapes egress (egress_rate past the queue), and leaves other ports alone', () => {
    vi.useFakeTimers();
    let now = 0;
    const br = new Bridge('br0', { clock: () => now });
    const a = new RecIo();
    const b = new RecIo();
    const c = new RecIo();
    br.addPort('a', a, { ingressRate: { rate: 8e6, burst: 10_000 } });
    br.addPort('b', b);
    br.addPort('c', c);
    const A = 0x020000000001;
    const B = 0x020000000002;
    const C = 0x020000000003;
    for (const [io, mac] of [[b, B], [c, C]] as const) io.rx.frame(eth(0xffffffffffff, mac, 60), 0, 60);
    b.sent = [];
    c.sent = [];
    for (let i = 0; i < 20; i++) a.rx.frame(eth(B, A, 1000), 0, 1000);
    expect(b.sent.length).toBe(10);
    expect(br.port('a')!.drops[Drop.ingress_rate]).toBe(10);
    for (let i = 0; i < 20; i++) c.rx.frame(eth(B, C, 1000), 0, 1000); // c has no limit
    expect(b.sent.length).toBe(30);

    br.setPortRate('a', null, undefined);
    expect(br.port('a')!.gate).toBe(0);
    br.setPortRate('b', undefined, { rate: 8e6, burst: 1500 });
    b.sent = [];
    for (let i = 0; i < 300; i++) c.rx.frame(eth(B, C, 1000), 0, 1000);
    const pb = br.port('b')!;
    expect(b.sent.length).toBe(2);
    expect(pb.drops[Drop.egress_rate]).toBe(300 - 2 - pb.shaper!.queued);
    expect(pb.txFrames).toBeGreaterThanOrEqual(2 + pb.shaper!.queued);
    for (let i = 0; i < 200; i++) {
      now += 1;
      vi.advanceTimersByTime(1);
    }
    expect(b.sent.length).toBe(2 + pb.shaper!.queued);
    br.removePort('b');
    vi.useRealTimers();
  });
});
