/*
 * Receive-side GRO toward a TAP (native/tap_gro.c) through its test hook,
 * `groForTest`: the frames a TAP gets when a batch from the underlay sends it these
 * frames. The strongest check is the round trip: a coalesced super-frame, segmented
 * again by the addon's own receive-side segmentation (`segmentForTest`, which does
 * what the kernel does with a GSO frame), must give back exactly the frames that
 * went in, byte for byte (IDs, sequence numbers, flags, checksums). Everything that
 * must not be merged (a corrupt checksum, a gap, another flow, other flags or
 * options, non-TCP) comes out unchanged and in order. No devices: the addon only
 * needs to be built.
 */
import { describe, expect, it } from 'vitest';
import * as nd from './index.js';
import { sum16 } from './test-sum16.js';


const MACS = Buffer.from('020000000002020000000001', 'hex');
const SRC4 = [10, 0, 0, 1], DST4 = [10, 0, 0, 2];
const SRC6 = Buffer.from('fd000000000000000000000000000001', 'hex');
const DST6 = Buffer.from('fd000000000000000000000000000002', 'hex');

interface Seg { seq: number; len: number; flags?: number; id?: number; v6?: boolean; sport?: number; ts?: number; fill?: number }

/** One complete TCP segment (timestamps option: 12 bytes), checksums valid. */
function seg(o: Seg): Buffer {
  const v6 = o.v6 === true;
  const l3 = 14, l4 = v6 ? 54 : 34, th = 32;
  const f = Buffer.alloc(l4 + th + o.len);
  MACS.copy(f, 0);
  f.writeUInt16BE(v6 ? 0x86dd : 0x0800, 12);
  if (v6) {
    f.writeUInt32BE(0x60000000, l3);
    f.writeUInt16BE(th + o.len, l3 + 4);
    f[l3 + 6] = 6;
    f[l3 + 7] = 64;
    SRC6.copy(f, l3 + 8);
    DST6.copy(f, l3 + 24);
  } else {
    f[l3] = 0x45;
    f.writeUInt16BE(20 + th + o.len, l3 + 2);
    f.writeUInt16BE(o.id ?? 0, l3 + 4);
    f.writeUInt16BE(0x4000, l3 + 6);
    f[l3 + 8] = 64;
    f[l3 + 9] = 6;
    f.set(SRC4, l3 + 12);
    f.set(DST4, l3 + 16);
    f.writeUInt16BE(~sum16(f.subarray(l3, l3 + 20)) & 0xffff, l3 + 10);
  }
  f.writeUInt16BE(o.sport ?? 40000, l4);
  f.writeUInt16BE(5201, l4 + 2);
  f.writeUInt32BE(o.seq >>> 0, l4 + 4);
  f.writeUInt32BE(777, l4 + 8);
  f[l4 + 12] = (th / 4) << 4;
  f[l4 + 13] = o.flags ?? 0x10;
  f.writeUInt16BE(512, l4 + 14);
  f.set([1, 1, 8, 10], l4 + 20);
  f.writeUInt32BE(o.ts ?? 1000, l4 + 24);
  f.writeUInt32BE(2000, l4 + 28);
  for (let i = 0; i < o.len; i++) f[l4 + th + i] = ((o.fill ?? 0) + i * 7 + (o.seq >>> 3)) & 0xff;
  f.writeUInt16BE(~sum16(f.subarray(l4), pseudo(f, v6, f.length - l4)) & 0xffff, l4 + 16);
  return f;
}

function pseudo(f: Uint8Array, v6: boolean, l4len: number): number {
  const ip = f.subarray(14);
  const addrs = v6 ? ip.subarray(8, 40) : ip.subarray(12, 20);
  return sum16(addrs) + 6 + l4len;
}

/** A run of n MSS-sized segments from seq, IPv4 IDs counting up, the last with PSH. */
function run(n: number, mss: number, seq = 1000, v6 = false, last = mss): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const len = i === n - 1 ? last : mss;
    out.push(seg({ seq: seq + i * mss, len, id: 100 + i, v6, flags: i === n - 1 ? 0x18 : 0x10 }));
  }
  return out;
}

const ZERO = Buffer.alloc(10);
const hdrOf = (w: Buffer): Buffer => w.subarray(0, 10);
const frameOf = (w: Buffer): Buffer => w.subarray(10);

// Each frame offered whole, or in two pieces (split at byte 12 as the bridge writes a
// frame whose tag it drops, or elsewhere): tap_gro.c reads the pieces in place.
describe.each([undefined, 12, 13, 200])('tap_gro: coalescing TCP segments toward a TAP (split %s)', (split) => {
  const groForTest = (frames: Buffer[]): Buffer[] => nd.groForTest(frames, split);

  it('merges one flow into one checksum-partial TCPV4 super-frame that segments back into exactly the frames sent', () => {
    const frames = run(12, 1398, 5000, false, 600);
    const out = groForTest(frames);
    expect(out).toHaveLength(1);
    const h = hdrOf(out[0]), f = frameOf(out[0]);
    expect(h[0]).toBe(1); // NEEDS_CSUM
    expect(h[1]).toBe(1); // TCPV4
    expect(h.readUInt16LE(2)).toBe(34 + 32); // hdr_len
    expect(h.readUInt16LE(4)).toBe(1398); // gso_size = the MSS
    expect(h.readUInt16LE(6)).toBe(34); // csum_start
    expect(h.readUInt16LE(8)).toBe(16); // csum_offset
    expect(f.length).toBe(66 + 11 * 1398 + 600);
    expect(f.readUInt16BE(16)).toBe(f.length - 14);
    expect(sum16(f.subarray(14, 34))).toBe(0xffff); // IPv4 header checksum valid
    // The checksum-partial convention: the field holds the pseudo-header sum; completing it gives a valid checksum.
    expect(f.readUInt16BE(34 + 16)).toBe(sum16(Buffer.alloc(0), pseudo(f, false, f.length - 34)));
    const again = nd.segmentForTest(h, f);
    expect(again.map((b) => b.toString('hex'))).toEqual(frames.map((b) => b.toString('hex')));
  });

  it('merges IPv6 as TCPV6 and segments back exactly', () => {
    const frames = run(5, 1378, 0xfffff000, true); // sequence numbers wrap
    const out = groForTest(frames);
    expect(out).toHaveLength(1);
    expect(out[0][1]).toBe(4); // TCPV6
    expect(frameOf(out[0]).readUInt16BE(18)).toBe(32 + 5 * 1378);
    const again = nd.segmentForTest(hdrOf(out[0]), frameOf(out[0]));
    expect(again.map((b) => b.toString('hex'))).toEqual(frames.map((b) => b.toString('hex')));
  });

  it('writes a lone segment, and everything that is not a candidate, unchanged behind a zero header', () => {
    const udp = seg({ seq: 1, len: 100 });
    udp[23] = 17; // protocol UDP (the checks stop before its checksum matters)
    const lone = [seg({ seq: 1, len: 1000 }), udp, seg({ seq: 9, len: 0 }), seg({ seq: 1, len: 500, flags: 0x02 })];
    const out = groForTest(lone);
    expect(out.map((w) => hdrOf(w).equals(ZERO))).toEqual([true, true, true, true]);
    expect(out.map((w) => frameOf(w).toString('hex'))).toEqual(lone.map((b) => b.toString('hex')));
  });

  it('never merges across a corrupt checksum, a gap, another flow, other options or flags; order is kept', () => {
    const a = run(3, 1000, 1000);
    a[2][34 + 13] = 0x10; // no PSH on the last: the run stays open
    a[2].writeUInt16BE(0, 34 + 16);
    a[2].writeUInt16BE(~sum16(a[2].subarray(34), pseudo(a[2], false, a[2].length - 34)) & 0xffff, 34 + 16);
    const bad = seg({ seq: 4000, len: 1000, id: 103 });
    bad[bad.length - 1] ^= 0xff; // payload corrupted: the TCP checksum no longer holds
    const gap = seg({ seq: 6000, len: 1000, id: 104 }); // 5000 expected
    const other = seg({ seq: 7000, len: 1000, id: 105, sport: 40001 });
    const ts = seg({ seq: 7000, len: 1000, id: 106, ts: 1001 });
    const ts2 = seg({ seq: 8000, len: 1000, id: 107, ts: 1002 });
    const out = groForTest([...a, bad, gap, other, ts, ts2]);
    // a's three merge; bad alone (as it came); gap starts a run of one; other and each timestamp alone.
    expect(out).toHaveLength(6);
    expect(hdrOf(out[0])[1]).toBe(1);
    expect(nd.segmentForTest(hdrOf(out[0]), frameOf(out[0])).map((b) => b.toString('hex'))).toEqual(a.map((b) => b.toString('hex')));
    expect(out.slice(1).map((w) => hdrOf(w).equals(ZERO))).toEqual([true, true, true, true, true]);
    expect(out.slice(1).map((w) => frameOf(w).toString('hex'))).toEqual([bad, gap, other, ts, ts2].map((b) => b.toString('hex')));
  });

  it('closes a run after a short or PSH segment, and splits at 64 KB', () => {
    const short = [seg({ seq: 0, len: 1000, id: 1 }), seg({ seq: 1000, len: 400, id: 2 }), seg({ seq: 1400, len: 1000, id: 3 }), seg({ seq: 2400, len: 1000, id: 4 })];
    const o1 = groForTest(short);
    expect(o1).toHaveLength(2);
    expect(frameOf(o1[0]).length).toBe(66 + 1400);
    expect(frameOf(o1[1]).length).toBe(66 + 2000);
    const big = run(60, 1400);
    const o2 = groForTest(big);
    expect(o2.length).toBe(2);
    for (const w of o2) expect(frameOf(w).length - 14).toBeLessThanOrEqual(65535);
    const again = o2.flatMap((w) => nd.segmentForTest(hdrOf(w), frameOf(w)));
    expect(again.map((b) => b.toString('hex'))).toEqual(big.map((b) => b.toString('hex')));
  });
});

describe('tap_gro: pieces it cannot checksum in place', () => {
  it('a piece boundary at an odd distance into the TCP segment: every frame written as it came, none merged', () => {
    const frames = run(5, 1000, 1000);
    const out = nd.groForTest(frames, 61); // 27 bytes into the TCP header
    expect(out.map((w) => hdrOf(w).equals(ZERO))).toEqual([true, true, true, true, true]);
    expect(out.map((w) => frameOf(w).toString('hex'))).toEqual(frames.map((b) => b.toString('hex')));
    expect(nd.groForTest(frames, 62)).toHaveLength(1); // an even distance merges
  });
});
