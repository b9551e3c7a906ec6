import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ETH_HLEN, IP6_HLEN, parseIp6 } from '@vswitch/switch';
import { Reassembly6 } from './reassembly6.js';

const SRC = parseIp6('fd00:10::11')!;
const DST = parseIp6('2001:db8::2')!;

/** A frame carrying one fragment of `data` (the whole datagram's payload): [off, off+len), M set unless it ends `data`. */
function frag(data: Uint8Array, off: number, len: number, id = 7, more = off + len < data.length, src = SRC): { buf: Buffer; ipLen: number } {
  const buf = Buffer.alloc(ETH_HLEN + IP6_HLEN + 8 + len);
  buf.writeUInt16BE(0x86dd, 12);
  const ip = ETH_HLEN;
  buf[ip] = 0x60;
  buf.writeUInt16BE(8 + len, ip + 4);
  buf[ip + 6] = 44;
  buf[ip + 7] = 64;
  buf.set(src, ip + 8);
  buf.set(DST, ip + 24);
  buf[ip + 40] = 17; // UDP
  buf.writeUInt16BE(off | (more ? 1 : 0), ip + 42);
  buf.writeUInt32BE(id, ip + 44);
  buf.set(data.subarray(off, off + len), ip + 48);
  return { buf, ipLen: IP6_HLEN + 8 + len };
}

const payload = (n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 7 + 3) & 255);

function feed(r: Reassembly6, data: Uint8Array, cuts: [number, number][], now = 0, id = 7): number {
  let got = 0;
  for (const [off, len] of cuts) {
    const f = frag(data, off, len, id);
    const n = r.add(f.buf, ETH_HLEN, f.ipLen, now);
    if (n > 0) got = n;
  }
  return got;
}

describe('Reassembly6', () => {
  it('puts a datagram together in any order: one IPv6 header, Next Header and length of the whole', () => {
    const data = payload(3000);
    for (const order of [[0, 1, 2], [2, 1, 0], [1, 2, 0]]) {
      const r = new Reassembly6();
      const cuts: [number, number][] = [[0, 1232], [1232, 1232], [2464, 536]];
      const n = feed(r, data, order.map((i) => cuts[i]));
      expect(n).toBe(IP6_HLEN + 3000);
      const o = r.out;
      expect(o[ETH_HLEN + 6]).toBe(17);
      expect(o.readUInt16BE(ETH_HLEN + 4)).toBe(3000);
      expect(o.subarray(ETH_HLEN + 8, ETH_HLEN + 24).equals(Buffer.from(SRC))).toBe(true);
      expect(o.subarray(ETH_HLEN + IP6_HLEN, ETH_HLEN + IP6_HLEN + 3000).equals(Buffer.from(data))).toBe(true);
      expect(o.readUInt16BE(12)).toBe(0x86dd);
      expect(r.counters).toMatchObject({ fragments: 3, reassembled: 1, overlap: 0, malformed: 0 });
      expect(r.pending).toBe(0);
      expect(r.bytes).toBe(0);
    }
  });

  it('keeps datagrams apart by source and Identification, and ignores an exact duplicate', () => {
    const r = new Reassembly6();
    const a = payload(2000);
    const b = payload(2000).map((x) => x ^ 0xff);
    expect(feed(r, a, [[0, 1000]], 0, 1)).toBe(0);
    expect(feed(r, b, [[0, 1000]], 0, 2)).toBe(0);
    expect(feed(r, a, [[0, 1000]], 0, 1)).toBe(0); // duplicate
    expect(feed(r, b, [[1000, 1000]], 0, 2)).toBe(IP6_HLEN + 2000);
    expect(r.out.subarray(ETH_HLEN + IP6_HLEN, ETH_HLEN + IP6_HLEN + 2000).equals(Buffer.from(b))).toBe(true);
    expect(feed(r, a, [[1000, 1000]], 0, 1)).toBe(IP6_HLEN + 2000);
    expect(r.out.subarray(ETH_HLEN + IP6_HLEN, ETH_HLEN + IP6_HLEN + 2000).equals(Buffer.from(a))).toBe(true);
  });

  it('RFC 5722: overlapping fragments drop the whole datagram, and its later fragments until the timeout', () => {
    const r = new Reassembly6({ timeoutMs: 1000 });
    const data = payload(3000);
    // The classic attack: a second fragment rewriting the first one's transport header.
    expect(feed(r, data, [[0, 1232], [8, 1224], [1232, 1232], [2464, 536]])).toBe(0);
    expect(r.counters.reassembled).toBe(0);
    expect(r.counters.overlap).toBe(3); // the overlap, then two fragments of the dead datagram
    expect(r.bytes).toBe(0);
    // A partial overlap at the end, another Identification.
    expect(feed(r, data, [[2464, 536], [1232, 1240]], 0, 9)).toBe(0);
    expect(r.counters.overlap).toBe(4);
    // After the timeout, the same Identification starts again.
    r.expire(1000);
    expect(r.pending).toBe(0);
    expect(feed(r, data, [[0, 1232], [1232, 1232], [2464, 536]], 1000)).toBe(IP6_HLEN + 3000);
  });

  it('drops contradicting fragments (length not a multiple of 8, past the end, two ends, over 65535), counted', () => {
    const r = new Reassembly6();
    const data = payload(3000);
    const f = frag(data, 0, 1001, 1, true);
    expect(r.add(f.buf, ETH_HLEN, f.ipLen, 0)).toBe(0);
    expect(r.counters.malformed).toBe(1);
    expect(feed(r, data, [[2464, 536], [2464 + 536, 8]], 0, 2)).toBe(0); // past the last fragment's end
    expect(r.counters.malformed).toBe(2);
    const big = frag(payload(70000), 65528, 16, 3, false);
    expect(r.add(big.buf, ETH_HLEN, big.ipLen, 0)).toBe(0);
    expect(r.counters.tooBig).toBe(1);
    expect(r.pending).toBe(0);
    expect(r.bytes).toBe(0);
  });

  it('bounds what it holds: datagrams in progress and bytes; incomplete ones time out', () => {
    const r = new Reassembly6({ maxDatagrams: 4, maxBytes: 6000, timeoutMs: 500 });
    const data = payload(3000);
    for (let id = 1; id <= 6; id++) feed(r, data, [[0, 1232]], 0, id);
    expect(r.pending).toBe(4);
    expect(r.counters.noRoom).toBe(2);
    expect(r.bytes).toBe(4 * 1232);
    feed(r, data, [[1232, 1232]], 0, 1);
    feed(r, data, [[1232, 1232]], 0, 2);
    expect(r.bytes).toBe(4 * 1232); // a second fragment of either would pass 6000
    expect(r.counters.noRoom).toBe(4);
    r.expire(499);
    expect(r.pending).toBe(4);
    r.expire(500);
    expect(r.pending).toBe(0);
    expect(r.counters.timeout).toBe(4);
    expect(r.bytes).toBe(0);
  });

  it('never throws and never holds more than its bounds on arbitrary fragments', () => {
    fc.assert(fc.property(fc.array(fc.record({ off: fc.integer({ min: 0, max: 400 }), len: fc.integer({ min: 0, max: 300 }), id: fc.integer({ min: 0, max: 3 }), more: fc.boolean() }), { maxLength: 40 }), (fs) => {
      const r = new Reassembly6({ maxDatagrams: 3, maxBytes: 4096 });
      const data = payload(4000);
      for (const x of fs) {
        const f = frag(data, x.off * 8, x.len, x.id, x.more);
        const n = r.add(f.buf, ETH_HLEN, f.ipLen, 0);
        if (n > 0) expect(r.out.readUInt16BE(ETH_HLEN + 4)).toBe(n - IP6_HLEN);
        expect(r.bytes).toBeLessThanOrEqual(4096);
        expect(r.pending).toBeLessThanOrEqual(3);
      }
    }));
  });

  it('gives each source MAC a share: a VM holding first fragments fills its own, a neighbour still reassembles', () => {
    const r = new Reassembly6();
    const data = payload(3000);
    const from = (mac: number, off: number, len: number, id: number): { buf: Buffer; ipLen: number } => {
      const f = frag(data, off, len, id);
      f.buf.writeUIntBE(mac, 6, 6);
      return f;
    };
    const HOSTILE = 0x020000000066;
    const NEIGHBOUR = 0x020000000077;
    // The hostile VM sends first fragments only: its 16 datagrams are held, the 17th refused.
    for (let id = 1; id <= 17; id++) {
      const f = from(HOSTILE, 0, 1232, id);
      expect(r.add(f.buf, ETH_HLEN, f.ipLen, 0)).toBe(0);
    }
    expect(r.heldBy(HOSTILE)).toEqual({ datagrams: 16, bytes: 16 * 1232 });
    expect(r.counters.sourceFull).toBe(1);
    expect(r.counters.noRoom).toBe(0);
    // The neighbour's datagram still goes through whole.
    let n = 0;
    for (const [off, len] of [[0, 1232], [1232, 1232], [2464, 536]] as const) {
      const f = from(NEIGHBOUR, off, len, 500);
      n = r.add(f.buf, ETH_HLEN, f.ipLen, 1);
    }
    expect(n).toBe(IP6_HLEN + 3000);
    expect(r.heldBy(NEIGHBOUR)).toEqual({ datagrams: 0, bytes: 0 });
    // Bytes are shared too: 256 KiB per source, refused past it (counted), not the table's 1 MiB.
    const big = new Reassembly6({ maxDatagrams: 1000, maxDatagramsPerSource: 1000 });
    let refused = 0;
    for (let id = 1; id <= 300; id++) {
      const f = from(HOSTILE, 0, 1232, id);
      big.add(f.buf, ETH_HLEN, f.ipLen, 0);
      refused = big.counters.sourceFull;
    }
    expect(big.heldBy(HOSTILE).bytes).toBeLessThanOrEqual(1 << 18);
    expect(big.heldBy(HOSTILE).bytes).toBeGreaterThan((1 << 18) - 1232);
    expect(refused).toBe(300 - Math.floor((1 << 18) / 1232));
    // The timeout gives the share back.
    r.expire(60_001);
    expect(r.heldBy(HOSTILE)).toEqual({ datagrams: 0, bytes: 0 });
    expect(r.pending).toBe(0);
    expect(r.bytes).toBe(0);
  });
});
