/*
 * The VXLAN transmit of super-frames (native/vxlan_tx.c) through its test hook,
 * `vxlanBuildForTest`: exactly what `sendVxlan` hands sendmmsg, without a socket.
 * Frames are given as egress gives a tunnel port a tagged frame (a virtio_net_hdr
 * describing the tagged frame, its MACs, then the rest after the tag). Every packet
 * is checked with an independent JS checksum: the outer IPv4 header (length,
 * checksum, DF), the outer UDP length and the source port the caller wrote, the VXLAN
 * header, and the inner frame untagged with its IPv4 and TCP/UDP checksums complete.
 * No devices: the addon only needs to be built. The last part sends through real
 * sockets (UDP GSO, vxlan_gso.c, and its fallback), in a namespace of its own.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as nd from './index.js';
import { sum16 } from './test-sum16.js';

const cksum = (b: Uint8Array): number => ~sum16(b) & 0xffff;

const SRC4 = Buffer.from([192, 0, 2, 1]), DST4 = Buffer.from([192, 0, 2, 2]);
const SRC6 = Buffer.from('20010db8000000000000000000000001', 'hex');
const DST6 = Buffer.from('20010db8000000000000000000000002', 'hex');
const MACS = Buffer.from('020000000002020000000001', 'hex');
const VID = 10;
const SPORT = 51234;
const VNI = 0x123456;
const OUTER_SRC = 0x0a000001, OUTER_DST = 0x0a000002;

/** Outer IPv4 + UDP + VXLAN for an empty inner frame, as wire/vxlan.ts writes it (DF, ID 0, UDP checksum 0). */
function outerTemplate(): Buffer {
  const s = Buffer.alloc(36);
  s[0] = 0x45;
  s.writeUInt16BE(36, 2);
  s.writeUInt16BE(0x4000, 6);
  s[8] = 64;
  s[9] = 17;
  s.writeUInt32BE(OUTER_SRC, 12);
  s.writeUInt32BE(OUTER_DST, 16);
  s.writeUInt16BE(cksum(s.subarray(0, 20)), 10);
  s.writeUInt16BE(SPORT, 20);
  s.writeUInt16BE(4789, 22);
  s.writeUInt16BE(16, 24);
  s[28] = 0x08;
  s[32] = VNI >> 16;
  s[33] = (VNI >> 8) & 255;
  s[34] = VNI & 255;
  return s;
}

function pattern(n: number, seed = 1): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed + (i >> 8)) & 255;
  return b;
}

function partial(v6: boolean, proto: number, len: number): number {
  const ph = v6
    ? Buffer.concat([SRC6, DST6, Buffer.from([0, 0, len >> 8, len & 255, 0, 0, 0, proto])])
    : Buffer.concat([SRC4, DST4, Buffer.from([0, proto, len >> 8, len & 255])]);
  return sum16(ph);
}

/** An untagged inner frame (from the ethertype on: `rest`) with a partial L4 checksum. */
function innerFrame(v6: boolean, udp: boolean, payload: Buffer): { rest: Buffer; l4: number; hdrLen: number } {
  const l4h = Buffer.alloc(udp ? 8 : 20);
  l4h.writeUInt16BE(40000, 0);
  l4h.writeUInt16BE(5001, 2);
  if (udp) {
    l4h.writeUInt16BE(8 + payload.length, 4);
  } else {
    l4h.writeUInt32BE(0xfffff000, 4);
    l4h.writeUInt32BE(1, 8);
    l4h[12] = 5 << 4;
    l4h[13] = 0x18; // PSH ACK
    l4h.writeUInt16BE(5000, 14);
  }
  const l4len = l4h.length + payload.length;
  let ih: Buffer;
  if (!v6) {
    ih = Buffer.alloc(20);
    ih[0] = 0x45;
    ih.writeUInt16BE(20 + l4len, 2);
    ih.writeUInt16BE(0x1234, 4);
    ih.writeUInt16BE(0x4000, 6);
    ih[8] = 64;
    ih[9] = udp ? 17 : 6;
    SRC4.copy(ih, 12);
    DST4.copy(ih, 16);
    ih.writeUInt16BE(cksum(ih), 10);
  } else {
    ih = Buffer.alloc(40);
    ih[0] = 0x60;
    ih.writeUInt16BE(l4len, 4);
    ih[6] = udp ? 17 : 6;
    ih[7] = 64;
    SRC6.copy(ih, 8);
    DST6.copy(ih, 24);
  }
  l4h.writeUInt16BE(partial(v6, udp ? 17 : 6, l4len), udp ? 6 : 16);
  const et = Buffer.from(v6 ? [0x86, 0xdd] : [0x08, 0x00]);
  return { rest: Buffer.concat([et, ih, l4h, payload]), l4: 14 + ih.length, hdrLen: 14 + ih.length + l4h.length };
}

/** a = [virtio_net_hdr (of the tagged frame)][MACs][tag], as egress's send2Vnet scratch. */
function tagged(hdr: { flags: number; type: number; gso: number; cstart: number; coff: number; hdrLen?: number }): Buffer {
  const a = Buffer.alloc(26);
  a[0] = hdr.flags;
  a[1] = hdr.type;
  a.writeUInt16LE(hdr.hdrLen ?? 0, 2);
  a.writeUInt16LE(hdr.gso, 4);
  a.writeUInt16LE(hdr.cstart, 6);
  a.writeUInt16LE(hdr.coff, 8);
  MACS.copy(a, 10);
  a.writeUInt16BE(0x8100, 22);
  a.writeUInt16BE(VID, 24);
  return a;
}

/** Checks one packet's outer headers; returns its inner frame. */
function checkOuter(p: Buffer): Buffer {
  expect(sum16(p.subarray(0, 20)), 'outer IPv4 checksum').toBe(0xffff);
  expect(p[0]).toBe(0x45);
  expect(p.readUInt16BE(2), 'outer total length').toBe(p.length);
  expect(p.readUInt16BE(6), 'DF, no fragment offset').toBe(0x4000);
  expect(p.readUInt32BE(12)).toBe(OUTER_SRC);
  expect(p.readUInt32BE(16)).toBe(OUTER_DST);
  expect(p.readUInt16BE(20), 'source port: the flow hash, the same for every segment').toBe(SPORT);
  expect(p.readUInt16BE(22)).toBe(4789);
  expect(p.readUInt16BE(24), 'UDP length').toBe(p.length - 20);
  expect(p.readUInt16BE(26), 'UDP checksum 0 (RFC 7348 over IPv4)').toBe(0);
  expect([...p.subarray(28, 36)]).toEqual([0x08, 0, 0, 0, VNI >> 16, (VNI >> 8) & 255, VNI & 255, 0]);
  return p.subarray(36);
}

/** The inner frame's IPv4 header checksum (v4) and TCP/UDP checksum, independently. */
function innerChecksumsOk(f: Buffer, v6: boolean, l4: number): boolean {
  const end = v6 ? 54 + f.readUInt16BE(18) : 14 + f.readUInt16BE(16);
  if (end !== f.length) return false;
  if (!v6 && sum16(f.subarray(14, l4)) !== 0xffff) return false;
  const seg = f.subarray(l4, end);
  const proto = v6 ? f[20] : f[23];
  const ph = v6
    ? Buffer.concat([f.subarray(22, 54), Buffer.from([0, 0, seg.length >> 8, seg.length & 255, 0, 0, 0, proto])])
    : Buffer.concat([f.subarray(26, 34), Buffer.from([0, proto, seg.length >> 8, seg.length & 255])]);
  return sum16(seg, sum16(ph)) === 0xffff;
}

describe('vxlanBuildForTest: super-frames segmented and encapsulated for a tunnel', () => {
  for (const v6 of [false, true]) {
    it(`TCPv${v6 ? 6 : 4}: a 64 KB TSO super-frame becomes MSS segments, each a complete VXLAN packet`, () => {
      const mss = v6 ? 1378 : 1398; // the VM MTU 1450 minus IP and TCP headers
      const { rest, l4, hdrLen } = innerFrame(v6, false, pattern(65000 - (v6 ? 74 : 54)));
      const payload = rest.length - (hdrLen - 12);
      // The header describes the tagged frame: csum_start counts the 4 tag bytes.
      const a = tagged({ flags: 1, type: v6 ? 4 : 1, gso: mss, cstart: l4 + 4, coff: 16, hdrLen: hdrLen + 4 });
      const before = nd.stats();
      const out = nd.vxlanBuildForTest(outerTemplate(), 1500, a, 10, rest, 0, rest.length);
      if (!Array.isArray(out)) throw new Error(`refused: ${out}`);
      const n = Math.ceil(payload / mss);
      expect(out.length).toBe(n);
      let off = 0;
      out.forEach((p, i) => {
        expect(p.length, 'within the 1500-byte underlay MTU').toBeLessThanOrEqual(1500);
        const f = checkOuter(p);
        const seg = Math.min(mss, payload - off);
        expect(f.length).toBe(hdrLen + seg);
        expect(f.subarray(0, 12)).toEqual(MACS);
        expect(f.readUInt16BE(12), 'untagged inside the tunnel').toBe(v6 ? 0x86dd : 0x0800);
        if (!v6) expect(f.readUInt16BE(18), 'inner IPv4 ID per segment').toBe((0x1234 + i) & 0xffff);
        expect(f.readUInt32BE(l4 + 4), 'TCP sequence').toBe((0xfffff000 + off) >>> 0);
        expect(!!(f[l4 + 13] & 0x08), 'PSH on the last segment only').toBe(i === n - 1);
        expect(innerChecksumsOk(f, v6, l4)).toBe(true);
        expect(f.subarray(hdrLen)).toEqual(rest.subarray(hdrLen - 12 + off, hdrLen - 12 + off + seg));
        off += seg;
      });
      expect(off).toBe(payload);
      const after = nd.stats();
      expect(after.vxlanTxSegmented - before.vxlanTxSegmented).toBe(1);
      expect(after.vxlanTxSegments - before.vxlanTxSegments).toBe(n);
    });
  }

  it('a frame whole in b (its MACs right before boff, as egress leaves the VM\'s frame in the ring) is segmented in place: the same packets, b untouched', () => {
    const { rest, l4, hdrLen } = innerFrame(false, false, pattern(30000, 5));
    const a = tagged({ flags: 1, type: 1, gso: 1398, cstart: l4 + 4, coff: 16, hdrLen: hdrLen + 4 });
    const ring = Buffer.concat([Buffer.alloc(7, 0xee), MACS, rest, Buffer.alloc(5, 0xdd)]);
    const copy = Buffer.from(ring);
    const pieces = nd.vxlanBuildForTest(outerTemplate(), 1500, a, 10, rest, 0, rest.length);
    const whole = nd.vxlanBuildForTest(outerTemplate(), 1500, a, 10, ring, 7 + 12, rest.length);
    if (!Array.isArray(pieces) || !Array.isArray(whole)) throw new Error('refused');
    expect(whole.length).toBe(Math.ceil((rest.length - (hdrLen - 12)) / 1398));
    expect(whole.map((p) => p.toString('hex'))).toEqual(pieces.map((p) => p.toString('hex')));
    expect(ring.equals(copy)).toBe(true);
    // Other MACs before boff: not the frame's; assembled from the pieces, the same packets again.
    const other = Buffer.from(ring);
    other[7] ^= 1;
    const assembled = nd.vxlanBuildForTest(outerTemplate(), 1500, a, 10, other, 7 + 12, rest.length);
    if (!Array.isArray(assembled)) throw new Error('refused');
    expect(assembled.map((p) => p.toString('hex'))).toEqual(pieces.map((p) => p.toString('hex')));
  });

  it('USO (UDP_L4): each segment a datagram with its own UDP length and checksum', () => {
    const { rest, l4, hdrLen } = innerFrame(false, true, pattern(5000, 3));
    const a = tagged({ flags: 1, type: 5, gso: 1200, cstart: l4 + 4, coff: 6 });
    const out = nd.vxlanBuildForTest(outerTemplate(), 1500, a, 10, rest, 0, rest.length);
    if (!Array.isArray(out)) throw new Error(`refused: ${out}`);
    expect(out.map((p) => p.length - 36 - hdrLen)).toEqual([1200, 1200, 1200, 1200, 200]);
    for (const p of out) {
      const f = checkOuter(p);
      expect(f.readUInt16BE(l4 + 4)).toBe(f.length - l4);
      expect(innerChecksumsOk(f, false, l4)).toBe(true);
    }
  });

  it('a checksum-partial frame (no GSO) is completed: one packet, checksum filled at the untagged offset', () => {
    const { rest, l4 } = innerFrame(false, false, pattern(700));
    const a = tagged({ flags: 1, type: 0, gso: 0, cstart: l4 + 4, coff: 16 });
    const out = nd.vxlanBuildForTest(outerTemplate(), 1500, a, 10, rest, 0, rest.length);
    if (!Array.isArray(out)) throw new Error(`refused: ${out}`);
    expect(out.length).toBe(1);
    expect(innerChecksumsOk(checkOuter(out[0]), false, l4)).toBe(true);
  });

  it('completes the checksum of any length at any alignment (nd_csum_add\'s wide loop and its tails), checked in JS', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 1400 }), fc.integer({ min: 0, max: 15 }), fc.integer({ min: 0, max: 255 }),
      fc.boolean(), (n, shift, seed, udp) => {
        const { rest, l4 } = innerFrame(false, udp, pattern(n, seed));
        const a = tagged({ flags: 1, type: 0, gso: 0, cstart: l4 + 4, coff: udp ? 6 : 16 });
        const b = Buffer.alloc(rest.length + shift);
        rest.copy(b, shift);
        const out = nd.vxlanBuildForTest(outerTemplate(), 1500, a, 10, b, shift, rest.length);
        if (!Array.isArray(out)) throw new Error(`refused: ${out}`);
        expect(out.length).toBe(1);
        expect(innerChecksumsOk(checkOuter(out[0]), false, l4)).toBe(true);
      }), { numRuns: 300 });
  });

  it('refuses whole a super-frame whose segments exceed the underlay MTU, and one that does not parse', () => {
    const { rest, l4 } = innerFrame(false, false, pattern(8000));
    // gso_size 1448: a VM left at MTU 1500 makes 1514-byte segments, 1550-byte packets.
    const big = nd.stats().vxlanTxTooBig;
    const a = tagged({ flags: 1, type: 1, gso: 1448, cstart: l4 + 4, coff: 16 });
    expect(nd.vxlanBuildForTest(outerTemplate(), 1500, a, 10, rest, 0, rest.length)).toBe(nd.VXLAN_TX_TOO_BIG);
    expect(nd.stats().vxlanTxTooBig - big).toBe(1);
    // The same frame fits a jumbo underlay.
    const ok = nd.vxlanBuildForTest(outerTemplate(), 9000, a, 10, rest, 0, rest.length);
    expect(Array.isArray(ok) && ok.length).toBe(Math.ceil((rest.length - 42) / 1448));
    // UFO (gso_type 3) would need IP fragmentation: refused, as is garbage.
    const dropped = nd.stats().vxlanTxDropped;
    expect(nd.vxlanBuildForTest(outerTemplate(), 1500, tagged({ flags: 1, type: 3, gso: 1000, cstart: l4 + 4, coff: 6 }), 10, rest, 0, rest.length)).toBe(-22);
    expect(nd.vxlanBuildForTest(outerTemplate(), 1500, a, 10, pattern(30), 0, 30)).toBe(-22);
    expect(nd.vxlanBuildForTest(outerTemplate(), 1500, tagged({ flags: 1, type: 0, gso: 0, cstart: 2, coff: 16 }), 10, rest, 0, rest.length)).toBe(-22);
    expect(nd.stats().vxlanTxDropped - dropped).toBe(3);
  });

  it('checks its arguments', () => {
    const rest = pattern(100);
    expect(() => nd.vxlanBuildForTest(Buffer.alloc(20), 1500, tagged({ flags: 1, type: 0, gso: 0, cstart: 38, coff: 16 }), 10, rest, 0, 100)).toThrow(/outer/);
    expect(() => nd.vxlanBuildForTest(outerTemplate(), 1500, Buffer.alloc(26), 5, rest, 0, 100)).toThrow(/offset >= 10/);
    expect(() => nd.vxlanBuildForTest(outerTemplate(), 1500, Buffer.alloc(26), 10, rest, 50, 100)).toThrow(/outside/);
  });
});

/*
 * sendVxlan through real sockets, in a namespace of the test's own (a node child
 * under `ip netns exec`): a receiver on 127.0.0.1:4789 must get exactly the UDP
 * payloads vxlanBuildForTest says (VXLAN header + inner segment, in order), whether
 * they left as UDP GSO datagrams (the kernel cut them), by sendmmsg after the kernel
 * refused UDP GSO (forced: SO_NO_CHECK sockets), or by sendmmsg with it off. A
 * complete packet queued afterwards for the same flow carries the same source port.
 */
describe('sendVxlan: UDP GSO, its fallback, and the flow\'s source port', () => {
  const ADDON = fileURLToPath(new URL('../build/Release/netdev.node', import.meta.url));
  const run = async (mode: 'gso' | 'refused' | 'off', outer: Buffer, a: Buffer, rest: Buffer, want: number): Promise<any> => {
    const ns = `ndg${randomBytes(3).toString('hex')}`;
    execFileSync('ip', ['netns', 'add', ns]);
    try {
      execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      const script = `
        const m = { exports: {} };
        process.dlopen(m, process.argv[1]);
        const nd = m.exports;
        const dgram = require('node:dgram');
        const [outer, a, rest] = process.argv.slice(2, 5).map((h) => Buffer.from(h, 'hex'));
        const mode = process.argv[5], want = Number(process.argv[6]);
        const got = [], ports = [];
        const rx = dgram.createSocket('udp4');
        let before, r = [];
        const finish = () => {
          const after = nd.stats();
          const d = (k) => after[k] - before[k];
          require('node:fs').writeSync(1, JSON.stringify({ r, got, ports, sends: d('vxlanTxGsoSends'), segments: d('vxlanTxGsoSegments'), refused: d('vxlanTxGsoRefused') }) + '\\n'); // whole before exit (console.log to a pipe is async)
          process.exit(0);
        };
        rx.on('message', (msg, ri) => { got.push(msg.toString('hex')); ports.push(ri.port); if (got.length === want) finish(); });
        rx.bind(4789, '127.0.0.1', () => {
          rx.setRecvBufferSize(8 << 20);
          const [tx] = nd.openRawIp('');
          nd.setUdpGso(mode !== 'off', mode === 'refused');
          before = nd.stats();
          const res = new Int32Array(2);
          for (let k = 0; k < 2; k++) r.push(nd.sendVxlan(tx, 0x7f000001, outer, 1500, a, 10, rest, 0, rest.length, res));
          const q = Buffer.from(outer);
          q.writeUInt16BE(40, 2); q.writeUInt16BE(20, 24);
          const body = Buffer.from('cafef00d', 'hex');
          nd.queueIp3(tx, 0x7f000001, q, 0, 36, body, 0, 2, body, 2, 2);
          nd.flushIp();
          setTimeout(finish, 5000);
        });
      `;
      const { stdout } = await promisify(execFile)('ip', ['netns', 'exec', ns, process.execPath, '-e', script, ADDON,
        outer.toString('hex'), a.toString('hex'), rest.toString('hex'), mode, String(want)], { timeout: 20_000, maxBuffer: 64 << 20 });
      return JSON.parse(stdout);
    } finally {
      execFileSync('ip', ['netns', 'del', ns]);
    }
  };

  for (const mode of ['gso', 'refused', 'off'] as const) {
    it(`${mode}: the receiver gets exactly the encapsulated segments, in order, then the queued packet on the flow's port`, async () => {
      const mss = 1398;
      const { rest, l4, hdrLen } = innerFrame(false, false, pattern(65000 - 54, 7));
      const a = tagged({ flags: 1, type: 1, gso: mss, cstart: l4 + 4, coff: 16, hdrLen: hdrLen + 4 });
      const outer = outerTemplate();
      outer.writeUInt32BE(0x7f000001, 12);
      outer.writeUInt32BE(0x7f000001, 16);
      const built = nd.vxlanBuildForTest(outer, 1500, a, 10, rest, 0, rest.length);
      if (!Array.isArray(built)) throw new Error(`refused: ${built}`);
      const n = built.length;
      const expected = [...built, ...built].map((p) => p.subarray(28).toString('hex'));
      const r = await run(mode, outer, a, rest, 2 * n + 1);
      expect(r.r).toEqual([n, n]);
      expect(r.got.slice(0, 2 * n)).toEqual(expected);
      expect(r.got[2 * n], 'the queued packet: VXLAN header and its 4 bytes').toBe('0800000012345600cafef00d');
      expect(new Set(r.ports).size, 'one source port for the whole flow').toBe(1);
      if (mode === 'gso') {
        expect(r.segments).toBe(2 * n);
        expect(r.sends).toBeGreaterThanOrEqual(2);
        expect(r.sends).toBeLessThanOrEqual(4);
        expect(r.refused).toBe(0);
        expect(r.ports[0], 'the GSO socket\'s port, not the header\'s').not.toBe(SPORT);
      } else {
        expect([r.sends, r.segments, r.refused]).toEqual([0, 0, mode === 'refused' ? 1 : 0]);
        expect(r.ports[0]).toBe(SPORT);
      }
    }, 30_000);
  }
});

/** UDP + VXLAN for an empty inner frame, as wire/vxlan.ts writeVxlanUdp writes it for the IPv6 underlay. */
function outer6Template(): Buffer {
  return outerTemplate().subarray(20);
}

describe('IPv6 underlay: vxlanBuildForTest(..., v6) and sendVxlan6', () => {
  it('builds the same segments as over IPv4, each behind UDP + VXLAN with its own UDP length, checksum left to the kernel', () => {
    const mss = 1390; // VM MTU 1430 = a 1500 IPv6 underlay minus 70
    const { rest, l4, hdrLen } = innerFrame(false, false, pattern(65000 - 54, 9));
    const a = tagged({ flags: 1, type: 1, gso: mss, cstart: l4 + 4, coff: 16, hdrLen: hdrLen + 4 });
    const before = nd.stats();
    const v4 = nd.vxlanBuildForTest(outerTemplate(), 1500, a, 10, rest, 0, rest.length);
    const v6 = nd.vxlanBuildForTest(outer6Template(), 1500, a, 10, rest, 0, rest.length, true);
    if (!Array.isArray(v4) || !Array.isArray(v6)) throw new Error(`refused: ${v4} ${v6}`);
    expect(v6.length).toBe(Math.ceil((rest.length - (hdrLen - 12)) / mss));
    v6.forEach((p, i) => {
      expect(p.length + 40, 'the IPv6 packet within the 1500-byte MTU').toBeLessThanOrEqual(1500);
      expect(p.readUInt16BE(0), 'source port: the flow hash').toBe(SPORT);
      expect(p.readUInt16BE(2)).toBe(4789);
      expect(p.readUInt16BE(4), 'UDP length').toBe(p.length);
      expect(p.readUInt16BE(6), 'checksum 0 here: the kernel computes it (IPV6_CHECKSUM, UDP GSO)').toBe(0);
      expect(p.subarray(8).equals(v4[i].subarray(28)), `packet ${i}: VXLAN header and inner frame as over IPv4`).toBe(true);
      expect(innerChecksumsOk(p.subarray(16), false, l4)).toBe(true);
    });
    const after = nd.stats();
    expect(after.vxlanTxSegmented - before.vxlanTxSegmented).toBe(2);
    expect(after.vxlanTxSegments - before.vxlanTxSegments).toBe(2 * v6.length);
  });

  it('refuses what would exceed the MTU with the 40-byte IPv6 header counted, and bad arguments', () => {
    // A VM left at the IPv4 tunnel MTU (1450: gso_size 1398) fits an IPv4 underlay of 1500, not an IPv6 one.
    const { rest, l4, hdrLen } = innerFrame(false, false, pattern(8000));
    const a = tagged({ flags: 1, type: 1, gso: 1398, cstart: l4 + 4, coff: 16, hdrLen: hdrLen + 4 });
    expect(Array.isArray(nd.vxlanBuildForTest(outerTemplate(), 1500, a, 10, rest, 0, rest.length))).toBe(true);
    const big = nd.stats().vxlanTxTooBig;
    expect(nd.vxlanBuildForTest(outer6Template(), 1500, a, 10, rest, 0, rest.length, true)).toBe(nd.VXLAN_TX_TOO_BIG);
    // Its segments are 1452-byte frames: 1508-byte IPv6 packets.
    expect(nd.vxlanBuildForTest(outer6Template(), 1507, a, 10, rest, 0, rest.length, true)).toBe(nd.VXLAN_TX_TOO_BIG);
    expect(nd.stats().vxlanTxTooBig - big).toBe(2);
    const ok = nd.vxlanBuildForTest(outer6Template(), 1508, a, 10, rest, 0, rest.length, true);
    const payload = rest.length - (hdrLen - 12);
    expect(Array.isArray(ok) && ok.map((p) => p.length + 40)).toEqual([1508, 1508, 1508, 1508, 1508, 56 + hdrLen + payload - 5 * 1398]);
    const dropped = nd.stats().vxlanTxDropped;
    expect(nd.vxlanBuildForTest(outer6Template(), 1500, a, 10, pattern(30), 0, 30, true)).toBe(-22);
    expect(nd.stats().vxlanTxDropped - dropped).toBe(1);
    expect(() => nd.vxlanBuildForTest(Buffer.alloc(15), 1500, a, 10, rest, 0, rest.length, true)).toThrow(/outer must be 16 bytes/);
    expect(() => nd.vxlanBuildForTest(outer6Template(), 1500, a, 10, rest, 0, rest.length)).toThrow(/outer must be 36 bytes/);
    expect(() => nd.vxlanBuildForTest(outer6Template(), 1500, a, 10, rest, 0, rest.length, 1 as any)).toThrow(/v6 must be a boolean/);
    const res = new Int32Array(2);
    const o = outer6Template();
    expect(() => (nd as any).sendVxlan6(0, DST6, 0, 64, o, 1500, a, 10, rest, 0, rest.length)).toThrow(/sendVxlan6\(handle/);
    expect(() => nd.sendVxlan6(123456, DST6, 0, 64, o, 1500, a, 10, rest, 0, rest.length, res)).toThrow();
  });

  it('checks a raw IPv6 handle\'s arguments before sending anything', () => {
    const rx = nd.openUdp6(Buffer.alloc(16), 40000 + Math.floor(Math.random() * 20000)).handle;
    const tx = nd.openRawIp6(Buffer.alloc(16)).handle;
    try {
      const { rest, l4, hdrLen } = innerFrame(false, false, pattern(4000));
      const a = tagged({ flags: 1, type: 1, gso: 1390, cstart: l4 + 4, coff: 16, hdrLen: hdrLen + 4 });
      const o = outer6Template();
      const res = new Int32Array(2);
      const frames = nd.stats().txFrames;
      expect(() => nd.sendVxlan6(rx, DST6, 0, 64, o, 1500, a, 10, rest, 0, rest.length, res)).toThrow(/not a raw IP handle/);
      expect(() => nd.sendVxlan6(tx, DST6, 1, 64, o, 1500, a, 10, rest, 0, rest.length, res)).toThrow(/outside a 16-byte array/);
      expect(() => nd.sendVxlan6(tx, DST6, 0, 0, o, 1500, a, 10, rest, 0, rest.length, res)).toThrow(/hop limit/);
      expect(() => nd.sendVxlan6(tx, DST6, 0, 256, o, 1500, a, 10, rest, 0, rest.length, res)).toThrow(/hop limit/);
      expect(() => nd.sendVxlan6(tx, DST6, 0, 64, o.subarray(0, 8), 1500, a, 10, rest, 0, rest.length, res)).toThrow(/outer must be 16 bytes/);
      expect(() => nd.sendVxlan6(tx, DST6, 0, 64, o, 1500, a, 10, rest, 1, rest.length, res)).toThrow(/outside/);
      expect(() => nd.sendVxlan6(tx, DST6, 0, 64, o, 1500, a, 10, rest, 0, rest.length, new Int32Array(1))).toThrow(/res must be an Int32Array of 2/);
      res.fill(7);
      expect(nd.sendVxlan6(tx, DST6, 0, 64, o, 1500, a, 10, pattern(30), 0, 30, res), 'does not parse').toBe(-22);
      expect([...res]).toEqual([0, 0]);
      expect(nd.stats().txFrames - frames, 'nothing sent').toBe(0);
    } finally {
      nd.close(rx);
      nd.close(tx);
    }
  });
});

/** The packets of a pcap file (Ethernet link type): each frame's bytes after the Ethernet header. */
function pcapPackets(file: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let o = 24; o + 16 <= file.length;) {
    const incl = file.readUInt32LE(o + 8);
    out.push(file.subarray(o + 16 + 14, o + 16 + incl));
    o += 16 + incl;
  }
  return out;
}

/** An IPv6 + UDP packet's UDP checksum, checked independently (0 is not a valid IPv6 UDP checksum). */
function udp6ChecksumOk(p: Buffer): boolean {
  const udp = p.subarray(40, 40 + p.readUInt16BE(4));
  const ph = Buffer.concat([p.subarray(8, 40), Buffer.from([0, 0, udp.length >> 8, udp.length & 255, 0, 0, 0, 17])]);
  return udp.readUInt16BE(6) !== 0 && sum16(udp, sum16(ph)) === 0xffff;
}

/*
 * sendVxlan6 on a real wire: a veth between two namespaces of the test's own, the
 * sender's end with checksum offload off (as a real wire: complete checksums, the
 * kernel cuts UDP GSO datagrams in software), captured by tcpdump. Each way a
 * super-frame can leave (UDP GSO; sendmmsg after the kernel refused GSO; sendmmsg with
 * it off) is followed by the per-packet path (sendIp6x3 of each packet
 * vxlanBuildForTest gives), and with UDP GSO on the same packets go through the send
 * queue too (queueIp6x3, flushIp): the packets must be the same bytes, checksums
 * included, and one flow's packets carry one source port.
 */
describe('sendVxlan6 on the wire: UDP GSO, its fallback and the per-packet path send the same packets', () => {
  const ADDON = fileURLToPath(new URL('../build/Release/netdev.node', import.meta.url));
  const HOPS = 33;
  it('byte for byte (the IPv6 flow label aside between the UDP and raw sockets), valid UDP checksums, the hop limit, no fragments', async () => {
    const mss = 1390;
    const { rest, l4, hdrLen } = innerFrame(false, false, pattern(65000 - 54, 11));
    const a = tagged({ flags: 1, type: 1, gso: mss, cstart: l4 + 4, coff: 16, hdrLen: hdrLen + 4 });
    const built = nd.vxlanBuildForTest(outer6Template(), 1500, a, 10, rest, 0, rest.length, true);
    if (!Array.isArray(built)) throw new Error(`refused: ${built}`);
    const n = built.length;
    const tag = randomBytes(3).toString('hex');
    const [ns, peer] = [`ndw${tag}`, `ndp${tag}`];
    const pcap = `/tmp/${ns}.pcap`;
    const ip = (...args: string[]): void => { execFileSync('ip', args); };
    ip('netns', 'add', ns);
    try {
      ip('netns', 'add', peer);
      ip('-n', ns, 'link', 'add', 'va', 'type', 'veth', 'peer', 'name', 'vb', 'netns', peer);
      ip('-n', peer, 'link', 'set', 'vb', 'address', '02:00:00:00:00:02');
      ip('-n', ns, 'addr', 'add', 'fd00:99::1/64', 'dev', 'va', 'nodad');
      ip('-n', peer, 'addr', 'add', 'fd00:99::2/64', 'dev', 'vb', 'nodad');
      execFileSync('ip', ['netns', 'exec', ns, 'ethtool', '-K', 'va', 'tx', 'off'], { stdio: 'ignore' });
      ip('-n', ns, 'link', 'set', 'va', 'up');
      ip('-n', peer, 'link', 'set', 'vb', 'up');
      ip('-n', ns, 'neigh', 'add', 'fd00:99::2', 'lladdr', '02:00:00:00:00:02', 'dev', 'va');
      const dump = spawn('ip', ['netns', 'exec', ns, 'tcpdump', '-i', 'va', '-U', '-n', '-w', pcap, 'ip6 and udp dst port 4789'], { stdio: ['ignore', 'ignore', 'pipe'] });
      const exited = new Promise((resolve) => dump.on('exit', resolve));
      await new Promise<void>((resolve, reject) => {
        dump.stderr.on('data', (d: Buffer) => { if (d.toString().includes('listening')) resolve(); });
        dump.on('exit', () => reject(new Error('tcpdump exited')));
      });
      const script = `
        const m = { exports: {} };
        process.dlopen(m, process.argv[1]);
        const nd = m.exports;
        const [outer, a, rest] = process.argv.slice(2, 5).map((h) => Buffer.from(h, 'hex'));
        const dst = Buffer.from('fd000099000000000000000000000002', 'hex');
        const local = Buffer.from('fd000099000000000000000000000001', 'hex');
        const [tx] = nd.openRawIp6(local, 0, '');
        const res = new Int32Array(2), r = [], c = [];
        const built = nd.vxlanBuildForTest(outer, 1500, a, 10, rest, 0, rest.length, true);
        const perPacket = () => built.map((p) => nd.sendIp6x3(tx, dst, 0, ${HOPS}, p, 0, 16, p, 16, p.length - 16, p, 0, 0));
        const counts = () => { const s = nd.stats(); return [s.vxlanTxGsoSends, s.vxlanTxGsoSegments, s.vxlanTxGsoRefused]; };
        for (const [on, refuse] of [[true, false], [true, true], [false, false]]) {
          nd.setUdpGso(on, refuse);
          const before = counts();
          r.push(nd.sendVxlan6(tx, dst, 0, ${HOPS}, outer, 1500, a, 10, rest, 0, rest.length, res));
          c.push(counts().map((v, i) => v - before[i]));
          r.push(perPacket().filter((x) => x > 0).length);
          if (on && !refuse) {
            // The queue of complete packets (queueIp6x3, NativeUnderlay6's send3): one sendmmsg at the flush.
            const batches = nd.stats().vxlanTxBatches;
            r.push(built.map((p) => nd.queueIp6x3(tx, dst, 0, ${HOPS}, p, 0, 16, p, 16, p.length - 16, p, 0, 0)).filter((x) => x > 0).length);
            r.push(nd.flushIp(), nd.stats().vxlanTxBatches - batches);
          }
        }
        require('node:fs').writeSync(1, JSON.stringify({ r, c }) + '\\n');
      `;
      const { stdout } = await promisify(execFile)('ip', ['netns', 'exec', ns, process.execPath, '-e', script, ADDON,
        outer6Template().toString('hex'), a.toString('hex'), rest.toString('hex')], { timeout: 20_000 });
      const out = JSON.parse(stdout);
      // tcpdump writes each packet as it sees it (-U); give the last ones a moment, then stop it.
      let got: Buffer[] = [];
      for (let i = 0; i < 50 && got.length < 7 * n; i++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        got = pcapPackets(readFileSync(pcap));
      }
      dump.kill('SIGINT');
      await exited;
      got = pcapPackets(readFileSync(pcap));
      expect(out.r).toEqual([n, n, n, n, 1, n, n, n, n]);
      expect(out.c, 'GSO sends: 1-3 for the first (64 KB per datagram); a refusal; nothing with it off').toEqual([
        [expect.any(Number), n, 0], [0, 0, 1], [0, 0, 0]]);
      expect(out.c[0][0]).toBeGreaterThanOrEqual(1);
      expect(out.c[0][0]).toBeLessThanOrEqual(3);
      expect(got.length).toBe(7 * n);
      const hex = (p: Buffer, noLabel = false): string => {
        const q = Buffer.from(p);
        if (noLabel) { q[1] &= 0xf0; q[2] = 0; q[3] = 0; }
        return q.toString('hex');
      };
      const group = (g: number): Buffer[] => got.slice(g * n, (g + 1) * n);
      expect(group(0).map((p) => hex(p, true)), 'UDP GSO = the per-packet path on the flow\'s port').toEqual(group(1).map((p) => hex(p, true)));
      expect(group(2).map((p) => hex(p)), 'the queue\'s sendmmsg = the per-packet path, on the flow\'s port too').toEqual(group(1).map((p) => hex(p)));
      expect(group(3).map((p) => hex(p)), 'sendmmsg after a refusal = the per-packet path').toEqual(group(4).map((p) => hex(p)));
      expect(group(5).map((p) => hex(p)), 'sendmmsg with UDP GSO off = the per-packet path').toEqual(group(4).map((p) => hex(p)));
      const flowPort = group(0)[0].readUInt16BE(40);
      expect(flowPort, 'the GSO socket\'s port, not the header\'s').not.toBe(SPORT);
      got.forEach((p, i) => {
        const b = built[i % n];
        expect(p[0] >> 4).toBe(6);
        expect(p[6], 'next header UDP: no fragment header').toBe(17);
        expect(p[7], 'hop limit').toBe(HOPS);
        expect(p.length, 'within the MTU').toBeLessThanOrEqual(1500);
        expect(p.readUInt16BE(4), 'IPv6 payload length').toBe(b.length);
        expect(p.subarray(8, 24).toString('hex')).toBe('fd000099000000000000000000000001');
        expect(p.readUInt16BE(40), 'one source port per flow').toBe(i < 3 * n ? flowPort : SPORT);
        expect(p.subarray(42, 46).equals(b.subarray(2, 6)), 'destination port and UDP length').toBe(true);
        expect(p.subarray(48).equals(b.subarray(8)), 'VXLAN header and inner frame').toBe(true);
        expect(udp6ChecksumOk(p), `packet ${i}: UDP checksum`).toBe(true);
      });
    } finally {
      execFileSync('ip', ['netns', 'del', ns]);
      try { execFileSync('ip', ['netns', 'del', peer]); } catch { /* not made */ }
      rmSync(pcap, { force: true });
    }
  }, 40_000);
});
