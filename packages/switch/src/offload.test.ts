/*
 * Offloads through the bridge with in-memory ports: a frame's virtio_net_hdr
 * travels with it to ports that take it (adjusted when a tag is inserted or
 * stripped, never edited in the receive buffer), and a GSO or checksum-partial
 * frame leaving through a port that cannot take the header is made into complete
 * frames by the bridge's segmenter (the native gso.c) first.
 */
import { describe, expect, it } from 'vitest';
import * as netdev from '@vswitch/netdev';
import { Bridge } from './bridge.js';
import type { Segmenter } from './egress.js';
import type { Port, PortIo, PortKind, PortRx } from './port.js';
import { copyVnetHeader as copyHeader, VNET_HDR_LEN } from './wire/vnet.js';
import { nativeSegmenter } from './ports/segment.js';
import { VlanPolicy, type VlanSpec } from './vlan.js';
import { checksum, fold, pseudoSum } from './wire/checksum.js';
import { writeMac } from './wire/ethernet.js';

interface Sent {
  /** The virtio_net_hdr written with the frame (sendVnet/send2Vnet), or undefined (send/send2). */
  hdr?: Uint8Array;
  frame: Uint8Array;
  /** Pieces the write used (1 = contiguous). */
  pieces: number;
}

/** An in-memory port that records what it is asked to write, offload-capable or not. */
class OffIo implements PortIo {
  readonly kind: PortKind = 'tap';
  rx!: PortRx;
  sent: Sent[] = [];
  constructor(readonly offload: boolean) {}
  start(rx: PortRx): void { this.rx = rx; }
  send(buf: Uint8Array, off: number, len: number): number {
    this.sent.push({ frame: buf.slice(off, off + len), pieces: 1 });
    return len;
  }
  send2(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    this.sent.push({ frame: join(a.subarray(aoff, aoff + alen), b.subarray(boff, boff + blen)), pieces: 2 });
    return alen + blen;
  }
  sendVnet(buf: Uint8Array, off: number, len: number): number {
    if (!this.offload) throw new Error('sendVnet on a port without offload');
    this.sent.push({ hdr: buf.slice(off - VNET_HDR_LEN, off), frame: buf.slice(off, off + len), pieces: 1 });
    return len;
  }
  send2Vnet(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    if (!this.offload) throw new Error('send2Vnet on a port without offload');
    this.sent.push({ hdr: a.slice(aoff - VNET_HDR_LEN, aoff), frame: join(a.subarray(aoff, aoff + alen), b.subarray(boff, boff + blen)), pieces: 2 });
    return alen + blen;
  }
  close(): void {}
  describe(): Record<string, string | number | boolean> { return {}; }

  /** Delivers frames as a ring batch would: each behind its 10-byte header, in one buffer. */
  inject(items: { hdr: Uint8Array; frame: Uint8Array }[]): Uint8Array {
    const buf = new Uint8Array(items.reduce((n, i) => n + 64 + VNET_HDR_LEN + i.frame.length, 0)).fill(0xa5);
    const offs = new Int32Array(items.length);
    const lens = new Int32Array(items.length);
    let at = 3;
    items.forEach((it, k) => {
      buf.set(it.hdr, at);
      buf.set(it.frame, at + VNET_HDR_LEN);
      offs[k] = at + VNET_HDR_LEN;
      lens[k] = it.frame.length;
      at += VNET_HDR_LEN + it.frame.length + 17;
    });
    const before = Uint8Array.from(buf);
    this.rx.batch(buf, offs, lens, items.length, true);
    expect(buf, 'the receive buffer (header included) is never written').toEqual(before);
    return buf;
  }

  take(): Sent[] {
    const s = this.sent;
    this.sent = [];
    return s;
  }
}

function join(a: Uint8Array, b: Uint8Array): Uint8Array {
  const f = new Uint8Array(a.length + b.length);
  f.set(a, 0);
  f.set(b, a.length);
  return f;
}

// ---------------------------------------------------------------------------
// Frames as a guest kernel with TSO hands them over: TCP/IPv4, the TCP checksum
// field holding the folded pseudo-header sum (CHECKSUM_PARTIAL).

const A = 0x020000000001;
const B = 0x020000000002;
const SRC_IP = 0x0a000001;
const DST_IP = 0x0a000002;
const MSS = 1448;

interface Made { frame: Uint8Array; hdr: Uint8Array; l3: number; payload: Uint8Array }

function vnetHdr(o: { flags: number; gso: number; hdrLen: number; gsoSize: number; cstart: number; coff: number }): Uint8Array {
  const h = new Uint8Array(VNET_HDR_LEN);
  const dv = new DataView(h.buffer);
  h[0] = o.flags;
  h[1] = o.gso;
  dv.setUint16(2, o.hdrLen, true);
  dv.setUint16(4, o.gsoSize, true);
  dv.setUint16(6, o.cstart, true);
  dv.setUint16(8, o.coff, true);
  return h;
}

/** A TCP/IPv4 frame of `n` payload bytes, optionally 802.1Q-tagged, with a partial checksum; GSO if n > MSS. */
function tcpFrame(dst: number, src: number, n: number, tci?: number, { gso = n > MSS } = {}): Made {
  const l2 = tci === undefined ? 14 : 18;
  const l3 = l2;
  const l4 = l3 + 20;
  const f = new Uint8Array(l4 + 20 + n);
  const dv = new DataView(f.buffer);
  writeMac(f, 0, dst);
  writeMac(f, 6, src);
  if (tci !== undefined) {
    dv.setUint16(12, 0x8100);
    dv.setUint16(14, tci);
  }
  dv.setUint16(l2 - 2, 0x0800);
  f[l3] = 0x45;
  dv.setUint16(l3 + 2, 40 + n);
  dv.setUint16(l3 + 4, 0x1234);
  dv.setUint16(l3 + 6, 0x4000); // DF
  f[l3 + 8] = 64;
  f[l3 + 9] = 6;
  dv.setUint32(l3 + 12, SRC_IP);
  dv.setUint32(l3 + 16, DST_IP);
  dv.setUint16(l3 + 10, checksum(f, l3, 20));
  dv.setUint16(l4, 40000);
  dv.setUint16(l4 + 2, 5201);
  dv.setUint32(l4 + 4, 1_000_000);
  dv.setUint32(l4 + 8, 77);
  f[l4 + 12] = 5 << 4;
  f[l4 + 13] = 0x18; // PSH|ACK
  dv.setUint16(l4 + 14, 512);
  const payload = f.subarray(l4 + 20);
  for (let i = 0; i < n; i++) payload[i] = (i * 13 + 5) & 0xff;
  dv.setUint16(l4 + 16, fold(pseudoSum(SRC_IP, DST_IP, 6, 20 + n)));
  const hdr = vnetHdr({ flags: 1, gso: gso ? 1 : 0, hdrLen: gso ? l4 + 20 : 0, gsoSize: gso ? MSS : 0, cstart: l4, coff: 16 });
  return { frame: f, hdr, l3, payload: Uint8Array.from(payload) };
}

const le16 = (b: Uint8Array, o: number) => b[o] | (b[o + 1] << 8);
const be16 = (b: Uint8Array, o: number) => (b[o] << 8) | b[o + 1];
const be32 = (b: Uint8Array, o: number) => ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;

/** Checks a complete TCP/IPv4 frame (IP header at l3); returns its TCP payload. */
function checkComplete(f: Uint8Array, l3: number): Uint8Array {
  expect(f[l3] >> 4).toBe(4);
  const ihl = (f[l3] & 15) * 4;
  const tot = be16(f, l3 + 2);
  expect(l3 + tot).toBe(f.length);
  expect(checksum(f, l3, ihl), 'IPv4 header checksum').toBe(0);
  const l4 = l3 + ihl;
  const l4len = tot - ihl;
  expect(checksum(f, l4, l4len, pseudoSum(be32(f, l3 + 12), be32(f, l3 + 16), 6, l4len)), 'TCP checksum').toBe(0);
  return f.subarray(l4 + (f[l4 + 12] >> 4) * 4);
}

/** A bridge of in-memory ports; `segmenter` null: the bridge is given none. */
function rig(ports: Record<string, { vlan: VlanSpec; offload: boolean }>, segmenter: Segmenter | null = nativeSegmenter()) {
  const br = new Bridge('br0', { clock: () => 1000, segmenter: segmenter ?? undefined });
  const io: Record<string, OffIo> = {};
  const port: Record<string, Port> = {};
  for (const [name, p] of Object.entries(ports)) {
    io[name] = new OffIo(p.offload);
    port[name] = br.addPort(name, io[name], { vlan: VlanPolicy.from(p.vlan) });
  }
  return { br, io, port };
}

const ACCESS = (vid: number): VlanSpec => ({ mode: 'access', vid });
const TRUNK = (allowed: number[]): VlanSpec => ({ mode: 'trunk', allowed });

/** Teaches the bridge where A and B are (plain frames, no header), then clears the records. */
function learn(r: ReturnType<typeof rig>, at: Record<string, [number, number | undefined]>): void {
  for (const [name, [mac, tci]] of Object.entries(at)) {
    const f = tcpFrame(0xffffffffffff, mac, 10, tci, { gso: false });
    r.io[name].inject([{ hdr: new Uint8Array(VNET_HDR_LEN), frame: f.frame }]);
  }
  for (const i of Object.values(r.io)) i.take();
}

// ---------------------------------------------------------------------------

describe('copyHeader', () => {
  it('moves csum_start and hdr_len by the tag delta, leaves the rest', () => {
    const h = vnetHdr({ flags: 1, gso: 1, hdrLen: 54, gsoSize: 1448, cstart: 34, coff: 16 });
    const s = new Uint8Array(32);
    copyHeader(s, h, 0, 4);
    expect([s[0], s[1], le16(s, 2), le16(s, 4), le16(s, 6), le16(s, 8)]).toEqual([1, 1, 58, 1448, 38, 16]);
    copyHeader(s, h, 0, -4);
    expect([le16(s, 2), le16(s, 6)]).toEqual([50, 30]);
    copyHeader(s, h, 0, 0);
    expect(s.subarray(0, 10)).toEqual(h);
  });

  it('leaves csum_start alone without NEEDS_CSUM and hdr_len alone when 0', () => {
    const h = vnetHdr({ flags: 2, gso: 0, hdrLen: 0, gsoSize: 0, cstart: 34, coff: 16 });
    const s = new Uint8Array(32);
    copyHeader(s, h, 0, 4);
    expect(s.subarray(0, 10)).toEqual(h);
  });
});

describe('the header travels to offload ports', () => {
  it('access to access: the super-frame goes whole, header and frame in one piece, unchanged', () => {
    const r = rig({ a: { vlan: ACCESS(10), offload: true }, b: { vlan: ACCESS(10), offload: true } });
    learn(r, { a: [A, undefined], b: [B, undefined] });
    const m = tcpFrame(B, A, 20000);
    const [f0, b0] = [r.port.b.txFrames, r.port.b.txBytes];
    r.io.a.inject([{ hdr: m.hdr, frame: m.frame }]);
    const out = r.io.b.take();
    expect(out).toHaveLength(1);
    expect(out[0].pieces).toBe(1);
    expect(out[0].hdr).toEqual(m.hdr);
    expect(out[0].frame).toEqual(m.frame);
    expect(r.port.b.txFrames - f0).toBe(1);
    expect(r.port.b.txBytes - b0).toBe(m.frame.length);
  });

  it('tag inserted (access -> trunk): csum_start and hdr_len +4 in the written header', () => {
    const r = rig({ a: { vlan: ACCESS(10), offload: true }, t: { vlan: TRUNK([10]), offload: true } });
    learn(r, { a: [A, undefined], t: [B, 10] });
    const m = tcpFrame(B, A, 20000);
    r.io.a.inject([{ hdr: m.hdr, frame: m.frame }]);
    const [s] = r.io.t.take();
    expect(s.hdr![0]).toBe(1);
    expect(s.hdr![1]).toBe(1);
    expect(le16(s.hdr!, 2)).toBe(le16(m.hdr, 2) + 4);
    expect(le16(s.hdr!, 4)).toBe(MSS);
    expect(le16(s.hdr!, 6)).toBe(le16(m.hdr, 6) + 4);
    expect(le16(s.hdr!, 8)).toBe(16);
    expect(be16(s.frame, 12)).toBe(0x8100);
    expect(be16(s.frame, 14) & 0xfff).toBe(10);
    expect(s.frame.subarray(16)).toEqual(m.frame.subarray(12));
    // The tagged frame is what the kernel would segment: its offsets point at the TCP header.
    expect(be16(s.frame, le16(s.hdr!, 6) + 2)).toBe(5201);
  });

  it('tag stripped (trunk -> access): csum_start and hdr_len -4', () => {
    const r = rig({ a: { vlan: ACCESS(10), offload: true }, t: { vlan: TRUNK([10]), offload: true } });
    learn(r, { a: [A, undefined], t: [B, 10] });
    const m = tcpFrame(A, B, 20000, 10);
    r.io.t.inject([{ hdr: m.hdr, frame: m.frame }]);
    const [s] = r.io.a.take();
    expect(le16(s.hdr!, 2)).toBe(le16(m.hdr, 2) - 4);
    expect(le16(s.hdr!, 6)).toBe(le16(m.hdr, 6) - 4);
    expect(be16(s.frame, 12)).toBe(0x0800);
    expect(s.frame.length).toBe(m.frame.length - 4);
    expect(be16(s.frame, le16(s.hdr!, 6))).toBe(40000);
  });

  it('trunk to trunk on the same VID: sent as it came, header unchanged', () => {
    const r = rig({ t1: { vlan: TRUNK([10]), offload: true }, t2: { vlan: TRUNK([10]), offload: true } });
    learn(r, { t1: [A, 10], t2: [B, 10] });
    const m = tcpFrame(B, A, 5000, 0x2000 | 10);
    r.io.t1.inject([{ hdr: m.hdr, frame: m.frame }]);
    const [s] = r.io.t2.take();
    expect(s.pieces).toBe(1);
    expect(s.hdr).toEqual(m.hdr);
    expect(s.frame).toEqual(m.frame);
  });

  it('a frame without a header (e.g. from the router) reaches an offload port through plain send', () => {
    const r = rig({ a: { vlan: ACCESS(10), offload: true }, b: { vlan: ACCESS(10), offload: true } });
    learn(r, { a: [A, undefined], b: [B, undefined] });
    const m = tcpFrame(B, A, 100, undefined, { gso: false });
    r.io.a.rx.frame(m.frame, 0, m.frame.length);
    const [s] = r.io.b.take();
    expect(s.hdr).toBeUndefined();
    expect(s.frame).toEqual(m.frame);
  });
});

describe('software segmentation for ports without offload', () => {
  for (const [name, inTci, outVlan] of [
    ['access -> access', undefined, ACCESS(10)],
    ['access -> trunk (tag inserted on each segment)', undefined, TRUNK([10])],
    ['trunk -> access (tag stripped from each segment)', 10, ACCESS(10)],
  ] as const) {
    it(`${name}: MSS-sized segments with valid checksums, the payload intact`, () => {
      const r = rig({
        src: { vlan: inTci === undefined ? ACCESS(10) : TRUNK([10]), offload: true },
        dst: { vlan: outVlan, offload: false },
      });
      learn(r, { src: [A, inTci], dst: [B, outVlan.mode === 'trunk' ? 10 : undefined] });
      const m = tcpFrame(B, A, 20000, inTci);
      const tx0 = r.port.dst.txFrames;
      r.io.src.inject([{ hdr: m.hdr, frame: m.frame }]);
      const out = r.io.dst.take();
      expect(out).toHaveLength(Math.ceil(20000 / MSS));
      const tagged = outVlan.mode === 'trunk';
      const parts: Uint8Array[] = [];
      let seq = 1_000_000;
      out.forEach((s, i) => {
        expect(s.hdr).toBeUndefined();
        expect(s.frame.length).toBeLessThanOrEqual(1514 + (tagged ? 4 : 0));
        expect(be16(s.frame, 12)).toBe(tagged ? 0x8100 : 0x0800);
        const l3 = tagged ? 18 : 14;
        parts.push(checkComplete(s.frame, l3));
        expect(be32(s.frame, l3 + 24), 'TCP sequence').toBe(seq);
        seq += s.frame.length - l3 - 40;
        // PSH only on the last segment
        expect(s.frame[l3 + 33] & 0x08).toBe(i === out.length - 1 ? 0x08 : 0);
      });
      expect(Buffer.concat(parts)).toEqual(Buffer.from(m.payload));
      expect(r.port.dst.txFrames - tx0).toBe(out.length);
    });
  }

  it('a flood segments once and sends the super-frame whole to offload ports', () => {
    let calls = 0;
    const r = rig({
      src: { vlan: ACCESS(10), offload: true },
      v1: { vlan: ACCESS(10), offload: true },
      p1: { vlan: ACCESS(10), offload: false },
      p2: { vlan: ACCESS(10), offload: false },
    }, countingSegmenter(() => calls++));
    const m = tcpFrame(B, A, 9000); // B unknown: flooded
    r.io.src.inject([{ hdr: m.hdr, frame: m.frame }]);
    expect(calls).toBe(1);
    expect(r.io.v1.take().map((s) => s.frame.length)).toEqual([m.frame.length]);
    const p1 = r.io.p1.take();
    const p2 = r.io.p2.take();
    expect(p1).toHaveLength(Math.ceil(9000 / MSS));
    expect(p2.map((s) => Buffer.from(s.frame))).toEqual(p1.map((s) => Buffer.from(s.frame)));
  });

  it('a checksum-partial frame (no GSO) gets its checksum filled in; the offload port gets it partial', () => {
    const r = rig({ src: { vlan: ACCESS(10), offload: true }, v: { vlan: ACCESS(10), offload: true }, p: { vlan: ACCESS(10), offload: false } });
    const m = tcpFrame(B, A, 300, undefined, { gso: false });
    r.io.src.inject([{ hdr: m.hdr, frame: m.frame }]);
    const [v] = r.io.v.take();
    expect(v.hdr).toEqual(m.hdr);
    expect(v.frame).toEqual(m.frame);
    const [p] = r.io.p.take();
    expect(p.frame.length).toBe(m.frame.length);
    expect(Buffer.from(checkComplete(p.frame, 14))).toEqual(Buffer.from(m.payload));
  });

  it('complete frames with an all-zero header go to plain ports as they are', () => {
    const r = rig({ src: { vlan: ACCESS(10), offload: true }, p: { vlan: ACCESS(10), offload: false } });
    const m = tcpFrame(B, A, 300, undefined, { gso: false });
    r.io.src.inject([{ hdr: new Uint8Array(VNET_HDR_LEN), frame: m.frame }]);
    const [p] = r.io.p.take();
    expect(p.frame).toEqual(m.frame);
    expect(p.pieces).toBe(1);
  });

  it('a frame that cannot be completed is dropped as tx_error, and nothing partial leaks', () => {
    const r = rig({ src: { vlan: ACCESS(10), offload: true }, p: { vlan: ACCESS(10), offload: false } });
    const m = tcpFrame(B, A, 3000);
    m.hdr[1] = 3; // UFO: refused
    r.io.src.inject([{ hdr: m.hdr, frame: m.frame }]);
    expect(r.io.p.take()).toEqual([]);
    expect(r.port.p.counters().drops.tx_error).toBe(1);
  });

  it('without a segmenter, partial frames to plain ports are dropped, not sent broken', () => {
    const r = rig({ src: { vlan: ACCESS(10), offload: true }, p: { vlan: ACCESS(10), offload: false } }, null);
    const m = tcpFrame(B, A, 3000);
    r.io.src.inject([{ hdr: m.hdr, frame: m.frame }]);
    expect(r.io.p.take()).toEqual([]);
    expect(r.port.p.counters().drops.tx_error).toBe(1);
  });

  it('the segmenter is the bridge\'s: one given none drops while one given it segments, in the same process', () => {
    // Before, egress read a module-global segmenter that constructing a TAP or attach
    // port installed: a bridge whose partial frames came only from the router (host
    // NAT's GSO frames) to socket ports counted them all as tx_error until some
    // other bridge opened a native port, and then segmented them.
    const ports = { router: { vlan: ACCESS(10), offload: true }, sock: { vlan: ACCESS(10), offload: false } };
    const bare = rig(ports, null);
    const given = rig(ports);
    for (const r of [bare, given, bare]) {
      const m = tcpFrame(B, A, 3000);
      r.io.router.inject([{ hdr: m.hdr, frame: m.frame }]);
    }
    expect(bare.io.sock.take()).toEqual([]);
    expect(bare.port.sock.counters().drops.tx_error).toBe(2);
    expect(given.io.sock.take()).toHaveLength(Math.ceil(3000 / MSS));
    expect(given.port.sock.counters().drops.tx_error).toBeUndefined();
  });
});

/** The native segmenter (as ports/segment.ts gives it), counting calls. */
function countingSegmenter(onCall: () => void): Segmenter {
  const sc = netdev.txScratch();
  return {
    arena: sc.arena, offs: sc.offs, lens: sc.lens,
    segment: (buf: Uint8Array, off: number, len: number) => { onCall(); return netdev.segment(buf, off, len); },
  };
}
