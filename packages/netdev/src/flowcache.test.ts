/*
 * The flow cache's table (native/flowcache.c) through the addon: keys, the
 * generation, handles closing, the fold; and the read loop replaying a decision
 * between two TAPs in two namespaces without a JS call. Needs root (TAPs); names
 * carry a per-run id and are removed even when a test fails.
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as nd from './index.js';
import { ip, testEnv } from './test-env.js';

const execFileP = promisify(execFile);
const ID = randomBytes(2).toString('hex');
const { handles, netns } = testEnv();

function tap(suffix: string): { handle: number; name: string } {
  const t = nd.openTap(`fc${ID}${suffix}`, { vnetHdr: true });
  handles.add(t.handle);
  return t;
}
function close(h: number): void {
  handles.delete(h);
  nd.close(h);
}

const gens = nd.flowCacheGenerations();
const HDR = nd.VNET_HDR_LEN;
/** A frame at offset HDR of its buffer, the virtio_net_hdr before it. */
function frame(dst: number, src: number, opts: { tci?: number; tpid?: number; flags?: number; gso?: number } = {}): Buffer {
  const b = Buffer.alloc(HDR + 64);
  b[0] = opts.flags ?? 0;
  b[1] = opts.gso ?? 0;
  b.writeUIntBE(dst, HDR, 6);
  b.writeUIntBE(src, HDR + 6, 6);
  if (opts.tci !== undefined) {
    b.writeUInt16BE(opts.tpid ?? 0x8100, HDR + 12);
    b.writeUInt16BE(opts.tci, HDR + 14);
    b.writeUInt16BE(0x0800, HDR + 16);
  } else {
    b.writeUInt16BE(0x0800, HDR + 12);
  }
  return b;
}
const fold = new Float64Array(nd.FLOW_CACHE_SIZE * nd.FLOW_CACHE_FOLD_FIELDS);
function folded(): number[][] {
  const n = nd.flowCacheFold(fold);
  const out: number[][] = [];
  for (let i = 0; i < n; i++) out.push([...fold.subarray(i * nd.FLOW_CACHE_FOLD_FIELDS, (i + 1) * nd.FLOW_CACHE_FOLD_FIELDS)]);
  return out;
}
const probe = (h: number, f: Buffer, written = 64, now = 1): number => nd.flowCacheProbeForTest(h, f, HDR, 64, now, written);

describe('flow cache table', () => {
  it('replays an installed decision for exactly its key, and the fold hands back its counts once', () => {
    const a = tap('a'), b = tap('b');
    const BR = 7;
    gens[BR]++;
    const f = frame(0x020000000002, 0x020000000001);
    expect(probe(a.handle, f)).toBe(-1);
    expect(nd.flowCacheInstall(BR, a.handle, 3, f, HDR, 64, b.handle, 5)).toBeGreaterThanOrEqual(0);
    expect(probe(a.handle, f, 64, 10)).toBe(b.handle);
    expect(probe(a.handle, f, -100, 12)).toBe(b.handle); // ENETDOWN: link_down
    expect(probe(a.handle, f, -105, 13)).toBe(b.handle); // ENOBUFS: tx_error
    // Every field of the key matters.
    const others = [
      frame(0x020000000003, 0x020000000001), frame(0x020000000002, 0x020000000004),
      frame(0x020000000002, 0x020000000001, { tci: 5 }), frame(0x020000000002, 0x020000000001, { tci: 0 }),
      frame(0x020000000002, 0x020000000001, { tci: 5, tpid: 0x88a8 }),
      frame(0x020000000002, 0x020000000001, { flags: 1 }), frame(0x020000000002, 0x020000000001, { gso: 1 }),
    ];
    for (const o of others) expect(probe(a.handle, o)).toBe(-1);
    expect(probe(b.handle, f)).toBe(-1); // another ingress handle
    expect(folded()).toEqual([[BR, 3, 5, 0x0200, 1, -1, 3, 192, 13, 64, 1, 1, 0, 0, 0, 0, 0]]); // keyed by MACs: no class, no IPv6 source
    expect(folded()).toEqual([]);
    close(a.handle);
    close(b.handle);
  });

  it('a generation bump, a flush of the bridge or a handle closing makes its entries miss; counts survive for the fold', () => {
    const a = tap('c'), b = tap('d'), c = tap('e');
    const BR = 8, OTHER = 9;
    const f = frame(0x020000000012, 0x020000000011);
    const g = frame(0x020000000013, 0x020000000011);
    nd.flowCacheInstall(BR, a.handle, 1, f, HDR, 64, b.handle, 2);
    nd.flowCacheInstall(OTHER, c.handle, 1, g, HDR, 64, b.handle, 2);
    expect(probe(a.handle, f)).toBe(b.handle);
    gens[BR]++;
    expect(probe(a.handle, f)).toBe(-1);
    expect(probe(c.handle, g)).toBe(b.handle); // another bridge's entry stays
    nd.flowCacheInstall(BR, a.handle, 1, f, HDR, 64, b.handle, 2);
    expect(probe(a.handle, f)).toBe(b.handle);
    nd.flowCacheFlush(BR);
    expect(probe(a.handle, f)).toBe(-1);
    expect(probe(c.handle, g)).toBe(b.handle);
    nd.flowCacheInstall(BR, a.handle, 1, f, HDR, 64, b.handle, 2);
    close(b.handle); // the egress handle: both bridges' entries to it end
    expect(probe(a.handle, f)).toBe(-1);
    expect(probe(c.handle, g)).toBe(-1);
    const byBridge = folded().map((r) => [r[0], r[6]]).sort((x, y) => x[0] - y[0]);
    expect(byBridge).toEqual([[BR, 2], [OTHER, 2]]);
    close(a.handle);
    close(c.handle);
  });

  it('fuzzed installs, bumps and probes hit exactly where a model of installed decisions says', () => {
    const hs = [tap('f'), tap('g'), tap('h')].map((t) => t.handle);
    const BR = 10;
    const key = fc.record({ in: fc.integer({ min: 0, max: 2 }), dst: fc.integer({ min: 1, max: 4 }), src: fc.integer({ min: 1, max: 3 }), tci: fc.option(fc.integer({ min: 0, max: 3 }), { nil: undefined }) });
    const op = fc.oneof(
      fc.record({ k: fc.constant('install' as const), key, out: fc.integer({ min: 0, max: 2 }) }),
      fc.record({ k: fc.constant('probe' as const), key }),
      fc.record({ k: fc.constant('bump' as const) }),
    );
    fc.assert(fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
      gens[BR]++;
      folded();
      // pending: hits not folded yet. An entry with pending hits is never given another
      // decision (flowcache.c: the install is refused, so no hit is counted against the
      // wrong port); the daemon folds before every invalidation, so it never meets this.
      const model = new Map<string, { out: number; gen: number; pending: number }>();
      let hits = 0;
      for (const o of ops) {
        if (o.k === 'bump') { gens[BR]++; continue; }
        const kk = o.key;
        const f = frame(0x020000000100 + kk.dst, 0x020000000200 + kk.src, { tci: kk.tci });
        const name = JSON.stringify(kk);
        if (o.k === 'install') {
          const m = model.get(name);
          const got = nd.flowCacheInstall(BR, hs[kk.in], 0, f, HDR, 64, hs[o.out], o.out);
          if (m !== undefined && m.pending > 0 && m.out !== hs[o.out]) {
            expect(got, 'another decision over unfolded hits is refused').toBe(-1);
          } else {
            expect(got).toBeGreaterThanOrEqual(0);
            model.set(name, { out: hs[o.out], gen: gens[BR], pending: m !== undefined && m.out === hs[o.out] ? m.pending : 0 });
          }
        } else {
          const m = model.get(name);
          const want = m !== undefined && m.gen === gens[BR] ? m.out : -1;
          expect(probe(hs[kk.in], f)).toBe(want);
          if (want >= 0) { hits++; m!.pending++; }
        }
      }
      expect(folded().reduce((s, r) => s + r[6], 0)).toBe(hits);
    }), { numRuns: 200, examples: [[[{ k: 'install', key: { in: 1, dst: 4, src: 1, tci: 2 }, out: 1 }, { k: 'probe', key: { in: 1, dst: 4, src: 1, tci: 2 } }, { k: 'install', key: { in: 1, dst: 4, src: 1, tci: 2 }, out: 0 }]]] });
    for (const h of hs) close(h);
  });
});

describe('flow cache key in the IPv4 class (l3: guarded ports, ARP/ND suppression)', () => {
  interface L3 { tpid?: number; tci?: number; type?: number; ver?: number; ihl?: number; proto?: number; frag?: number; sport?: number; dport?: number; src?: number; len?: number }
  /** An IPv4 frame (or what `o` makes of one) from 02::21 to 02::22 at offset HDR; `len` cuts it. */
  function ip4(o: L3 = {}): { b: Buffer; len: number } {
    const b = Buffer.alloc(HDR + 100); // room for a 60-byte header's ports; `len` says how much is the frame
    b.writeUIntBE(0x020000000022, HDR, 6);
    b.writeUIntBE(0x020000000021, HDR + 6, 6);
    let l3 = HDR + 14;
    if (o.tpid !== undefined) {
      b.writeUInt16BE(o.tpid, HDR + 12);
      b.writeUInt16BE(o.tci ?? 10, HDR + 14);
      l3 += 4;
    }
    b.writeUInt16BE(o.type ?? 0x0800, l3 - 2);
    const ihl = o.ihl ?? 5;
    b[l3] = ((o.ver ?? 4) << 4) | ihl;
    b.writeUInt16BE(o.frag ?? 0, l3 + 6);
    b[l3 + 9] = o.proto ?? 6;
    b.writeUInt32BE(o.src ?? 0x0a000003, l3 + 12);
    const l4 = l3 + Math.max(ihl, 5) * 4;
    b.writeUInt16BE(o.sport ?? 4000, l4);
    b.writeUInt16BE(o.dport ?? 80, l4 + 2);
    return { b, len: o.len ?? 80 };
  }
  /** The class as flowcache.h states it, independently. */
  function inClass(o: L3): boolean {
    const tagLen = o.tpid === undefined ? 0 : 4;
    if (o.tpid === 0x88a8 || (o.type ?? 0x0800) !== 0x0800 || (o.ver ?? 4) !== 4 || (o.ihl ?? 5) < 5) return false;
    const len = o.len ?? 80;
    if (len < 14 + tagLen + 20) return false;
    if ((o.proto ?? 6) === 17 && ((o.frag ?? 0) & 0x1fff) === 0) {
      if (len < 14 + tagLen + (o.ihl ?? 5) * 4 + 4) return false;
      if ([o.sport ?? 4000, o.dport ?? 80].some((x) => x === 67 || x === 68)) return false;
    }
    return true;
  }
  const install = (br: number, inH: number, f: { b: Buffer; len: number }, out: number, l3: boolean): number =>
    nd.flowCacheInstall(br, inH, 1, f.b, HDR, f.len, out, 2, l3);
  const probeL = (h: number, f: { b: Buffer; len: number }): number => nd.flowCacheProbeForTest(h, f.b, HDR, f.len, 1, f.len);

  it('keys by the source address, refuses frames outside the class, and each mode\'s entries never match the other\'s keys', () => {
    const a = tap('la'), b = tap('lb');
    const BR = 11;
    gens[BR]++;
    folded();
    expect(install(BR, a.handle, ip4(), b.handle, true)).toBeGreaterThanOrEqual(0);
    expect(probeL(a.handle, ip4())).toBe(b.handle);
    expect(probeL(a.handle, ip4({ proto: 17, sport: 53, dport: 53 }))).toBe(b.handle); // the same source: the same verdict
    expect(probeL(a.handle, ip4({ proto: 17, sport: 67, dport: 68, frag: 0x00b9 }))).toBe(b.handle); // a later fragment: no ports read
    const misses0 = nd.flowCacheStats().misses;
    for (const o of [{ src: 0x0a000004 }, { src: 0 }, { type: 0x0806 }, { type: 0x86dd }, { ver: 6 }, { ihl: 4 }, { len: 33 },
      { proto: 17, sport: 68, dport: 67 }, { proto: 17, sport: 67, dport: 68 }, { proto: 17, sport: 4000, dport: 68 }, { proto: 17, frag: 0x2000, sport: 67 },
      { proto: 17, len: 37 }, { tpid: 0x8100 }, { tpid: 0x88a8 }] as L3[]) {
      expect(probeL(a.handle, ip4(o)), JSON.stringify(o)).toBe(-1);
    }
    expect(nd.flowCacheStats().misses - misses0).toBe(14);
    // Outside the class: nothing installed (-2), the handle still keyed by address.
    expect(install(BR, a.handle, ip4({ type: 0x0806 }), b.handle, true)).toBe(-2);
    expect(install(BR, a.handle, ip4({ proto: 17, sport: 68, dport: 67 }), b.handle, true)).toBe(-2);
    expect(probeL(a.handle, ip4({ type: 0x0806 }))).toBe(-1);
    expect(probeL(a.handle, ip4())).toBe(b.handle);
    // Back to MACs and tag (a guard turned off: the bridge's generation moved too): the address-keyed entry never matches.
    // (The MACs-and-tag entry goes to `a` itself, so a probe tells the two entries apart.)
    expect(install(BR, a.handle, ip4({ type: 0x0806 }), a.handle, false)).toBeGreaterThanOrEqual(0);
    expect(probeL(a.handle, ip4({ type: 0x0806 }))).toBe(a.handle);
    expect(probeL(a.handle, ip4({ src: 0x0a000009 }))).toBe(a.handle); // any IPv4 too: its key holds no address now
    expect(probeL(a.handle, ip4())).toBe(a.handle);
    // A tagged frame's class is its inner type's.
    expect(install(BR, a.handle, ip4({ tpid: 0x8100, tci: 20 }), b.handle, true)).toBeGreaterThanOrEqual(0);
    expect(probeL(a.handle, ip4({ tpid: 0x8100, tci: 20 }))).toBe(b.handle);
    expect(probeL(a.handle, ip4({ tpid: 0x8100, tci: 20, src: 9 }))).toBe(-1);
    expect(probeL(a.handle, ip4({ type: 0x0806 }))).toBe(-1);
    folded();
    close(a.handle);
    close(b.handle);
  });

  it('fuzzed frames: an install in the class succeeds exactly when the stated class holds, and hits only its own source', () => {
    const a = tap('lf'), b = tap('lg');
    const BR = 12;
    const arb = fc.record({
      tpid: fc.constantFrom(undefined, undefined, 0x8100, 0x88a8), tci: fc.integer({ min: 0, max: 0xffff }),
      type: fc.constantFrom(0x0800, 0x0800, 0x0800, 0x0806, 0x86dd, 0x8100), ver: fc.constantFrom(4, 4, 4, 6, 0), ihl: fc.integer({ min: 0, max: 15 }),
      proto: fc.constantFrom(6, 17, 17, 1), frag: fc.constantFrom(0, 0, 0x2000, 0x4000, 0x00b9, 0x20b9),
      sport: fc.constantFrom(67, 68, 53, 4000, 6700), dport: fc.constantFrom(67, 68, 53, 4000), src: fc.constantFrom(0, 0x0a000003, 0x0a000004),
      len: fc.integer({ min: 14, max: 80 }),
    }, { requiredKeys: ['type', 'ver', 'ihl', 'proto', 'frag', 'sport', 'dport', 'src', 'len'] });
    fc.assert(fc.property(arb, (o) => {
      gens[BR]++;
      const f = ip4(o);
      const tagged = o.tpid !== undefined || o.type === 0x8100;
      if (f.len < (tagged ? 18 : 14)) return; // no key at all: the install throws (the bridge never asks)
      const got = install(BR, a.handle, f, b.handle, true);
      if (!inClass(o)) {
        expect(got).toBe(-2);
        expect(probeL(a.handle, f)).toBe(-1);
        return;
      }
      expect(got).toBeGreaterThanOrEqual(0);
      expect(probeL(a.handle, f)).toBe(b.handle);
      expect(probeL(a.handle, ip4({ ...o, src: (o.src ?? 0) + 1 }))).toBe(-1);
    }), { numRuns: 2000 });
    folded();
    close(a.handle);
    close(b.handle);
  });
});

describe('flow cache key in the ARP class (l3: a guarded port\'s ARP)', () => {
  interface Arp { tpid?: number; tci?: number; htype?: number; ptype?: number; hlen?: number; plen?: number; oper?: number; sha?: number; spa?: number; len?: number }
  const SRC = 0x020000000021;
  /** An ARP frame from 02::21 to 02::22 at offset HDR (sender 02::21 / 10.0.0.3 unless `o` says otherwise); `len` cuts it. */
  function arp(o: Arp = {}): { b: Buffer; len: number } {
    const b = Buffer.alloc(HDR + 80);
    b.writeUIntBE(0x020000000022, HDR, 6);
    b.writeUIntBE(SRC, HDR + 6, 6);
    let l3 = HDR + 14;
    if (o.tpid !== undefined) {
      b.writeUInt16BE(o.tpid, HDR + 12);
      b.writeUInt16BE(o.tci ?? 10, HDR + 14);
      l3 += 4;
    }
    b.writeUInt16BE(0x0806, l3 - 2);
    b.writeUInt16BE(o.htype ?? 1, l3);
    b.writeUInt16BE(o.ptype ?? 0x0800, l3 + 2);
    b[l3 + 4] = o.hlen ?? 6;
    b[l3 + 5] = o.plen ?? 4;
    b.writeUInt16BE(o.oper ?? 2, l3 + 6);
    b.writeUIntBE(o.sha ?? SRC, l3 + 8, 6);
    b.writeUInt32BE(o.spa ?? 0x0a000003, l3 + 14);
    b.writeUIntBE(0x020000000022, l3 + 18, 6);
    b.writeUInt32BE(0x0a000002, l3 + 24);
    return { b, len: o.len ?? 60 };
  }
  /** The class as flowcache.h states it, independently: what guard.ts's ARP check reads, and nothing it rejects. */
  function inClass(o: Arp): boolean {
    const tagLen = o.tpid === undefined ? 0 : 4;
    return o.tpid !== 0x88a8 && (o.len ?? 60) >= 14 + tagLen + 28 && (o.ptype ?? 0x0800) === 0x0800 && (o.hlen ?? 6) === 6 &&
      (o.plen ?? 4) === 4 && (o.sha ?? SRC) === SRC;
  }
  const install = (br: number, inH: number, f: { b: Buffer; len: number }, out: number, l3: boolean): number =>
    nd.flowCacheInstall(br, inH, 1, f.b, HDR, f.len, out, 2, l3);
  const probeL = (h: number, f: { b: Buffer; len: number }): number => nd.flowCacheProbeForTest(h, f.b, HDR, f.len, 1, f.len);

  it('keys ARP by its sender address apart from IPv4 (a probe from 0.0.0.0 serves no IPv4 from 0.0.0.0), any opcode and hardware type; refuses a body the guard would', () => {
    const a = tap('aa'), b = tap('ab');
    const BR = 13;
    gens[BR]++;
    folded();
    expect(install(BR, a.handle, arp(), b.handle, true)).toBeGreaterThanOrEqual(0);
    expect(probeL(a.handle, arp())).toBe(b.handle);
    expect(probeL(a.handle, arp({ oper: 1 }))).toBe(b.handle); // the guard reads no opcode
    expect(probeL(a.handle, arp({ htype: 6 }))).toBe(b.handle); // nor the hardware type
    for (const o of [{ spa: 0x0a000004 }, { spa: 0 }, { sha: 0x020000000099 }, { ptype: 0x86dd }, { hlen: 8 }, { plen: 16 }, { len: 41 },
      { tpid: 0x8100 }, { tpid: 0x88a8 }] as Arp[]) {
      expect(probeL(a.handle, arp(o)), JSON.stringify(o)).toBe(-1);
    }
    expect(install(BR, a.handle, arp({ sha: 0x020000000099 }), b.handle, true)).toBe(-2);
    expect(install(BR, a.handle, arp({ len: 41 }), b.handle, true)).toBe(-2);
    // A probe (sender 0.0.0.0) installed: an IPv4 frame with the same MACs from 0.0.0.0 has a key of its own (the IPv4 class) and misses.
    expect(install(BR, a.handle, arp({ spa: 0 }), a.handle, true)).toBeGreaterThanOrEqual(0);
    expect(probeL(a.handle, arp({ spa: 0 }))).toBe(a.handle);
    const ip0 = Buffer.alloc(HDR + 80);
    arp().b.copy(ip0, 0, 0, HDR + 12);
    ip0.writeUInt16BE(0x0800, HDR + 12);
    ip0[HDR + 14] = 0x45;
    ip0[HDR + 23] = 6;
    expect(probeL(a.handle, { b: ip0, len: 60 })).toBe(-1);
    expect(install(BR, a.handle, { b: ip0, len: 60 }, b.handle, true)).toBeGreaterThanOrEqual(0);
    expect(probeL(a.handle, { b: ip0, len: 60 })).toBe(b.handle);
    expect(probeL(a.handle, arp({ spa: 0 }))).toBe(a.handle);
    folded();
    close(a.handle);
    close(b.handle);
  });

  it('fuzzed ARP frames: an install succeeds exactly when the stated class holds, and hits only its own sender address and MAC', () => {
    const a = tap('af'), b = tap('ag');
    const BR = 14;
    const arb = fc.record({
      tpid: fc.constantFrom(undefined, undefined, 0x8100, 0x88a8), tci: fc.integer({ min: 0, max: 0xffff }),
      htype: fc.constantFrom(1, 1, 6, 0), ptype: fc.constantFrom(0x0800, 0x0800, 0x0800, 0x86dd), hlen: fc.constantFrom(6, 6, 6, 8, 0),
      plen: fc.constantFrom(4, 4, 4, 16), oper: fc.constantFrom(1, 2, 3), sha: fc.constantFrom(SRC, SRC, SRC, 0x020000000022, 0),
      spa: fc.constantFrom(0, 0x0a000003, 0x0a000004), len: fc.integer({ min: 18, max: 70 }),
    }, { requiredKeys: ['htype', 'ptype', 'hlen', 'plen', 'oper', 'sha', 'spa', 'len'] });
    fc.assert(fc.property(arb, (o) => {
      gens[BR]++;
      const f = arp(o);
      const got = install(BR, a.handle, f, b.handle, true);
      if (!inClass(o)) {
        expect(got).toBe(-2);
        expect(probeL(a.handle, f)).toBe(-1);
        return;
      }
      expect(got).toBeGreaterThanOrEqual(0);
      expect(probeL(a.handle, f)).toBe(b.handle);
      expect(probeL(a.handle, arp({ ...o, spa: o.spa + 1 }))).toBe(-1);
      expect(probeL(a.handle, arp({ ...o, sha: SRC + 1 }))).toBe(-1);
    }), { numRuns: 2000 });
    folded();
    close(a.handle);
    close(b.handle);
  });
});

describe('flow cache key in the IPv6 class (l3: a guarded port\'s IPv6)', () => {
  interface Ip6 { tpid?: number; tci?: number; ver?: number; nh?: number; b0?: number; b1?: number; plen?: number; src?: number[]; len?: number }
  const SRC6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
  /** An IPv6 frame from 02::21 to 02::22 at offset HDR: TCP from 2001:db8::3 unless `o` says otherwise (b0, b1: the payload's first bytes). */
  function ip6(o: Ip6 = {}): { b: Buffer; len: number } {
    const b = Buffer.alloc(HDR + 100);
    b.writeUIntBE(0x020000000022, HDR, 6);
    b.writeUIntBE(0x020000000021, HDR + 6, 6);
    let l3 = HDR + 14;
    if (o.tpid !== undefined) {
      b.writeUInt16BE(o.tpid, HDR + 12);
      b.writeUInt16BE(o.tci ?? 10, HDR + 14);
      l3 += 4;
    }
    b.writeUInt16BE(0x86dd, l3 - 2);
    b[l3] = (o.ver ?? 6) << 4;
    b.writeUInt16BE(o.plen ?? 20, l3 + 4);
    b[l3 + 6] = o.nh ?? 6;
    b[l3 + 7] = 64;
    Buffer.from(o.src ?? SRC6).copy(b, l3 + 8);
    b[l3 + 39] = 9;
    b[l3 + 40] = o.b0 ?? 0x0f;
    b[l3 + 41] = o.b1 ?? 0xa0;
    return { b, len: o.len ?? 80 };
  }
  /** The class as flowcache.h states it, independently (what guard6.ts reads before the source's claim). */
  function inClass(o: Ip6): boolean {
    const tagLen = o.tpid === undefined ? 0 : 4;
    const src = o.src ?? SRC6, plen = o.plen ?? 20, b0 = o.b0 ?? 0x0f, b1 = o.b1 ?? 0xa0, nh = o.nh ?? 6;
    if (o.tpid === 0x88a8 || (o.ver ?? 6) !== 6 || (o.len ?? 80) < 14 + tagLen + 40 + plen) return false;
    if (src[0] === 0xff || src.every((x) => x === 0)) return false;
    return nh === 6 || (nh === 17 && plen >= 4 && (b0 << 8 | b1) !== 547) || (nh === 58 && plen >= 4 && (b0 === 128 || b0 === 129));
  }
  const install = (br: number, inH: number, f: { b: Buffer; len: number }, out: number): number =>
    nd.flowCacheInstall(br, inH, 1, f.b, HDR, f.len, out, 2, true);
  const probeL = (h: number, f: { b: Buffer; len: number }): number => nd.flowCacheProbeForTest(h, f.b, HDR, f.len, 1, f.len);

  it('keys by the whole source address (any byte tells two apart), refuses what the guards read otherwise, and the fold hands the address back', () => {
    const a = tap('6a'), b = tap('6b');
    const BR = 15;
    gens[BR]++;
    folded();
    expect(install(BR, a.handle, ip6(), b.handle)).toBeGreaterThanOrEqual(0);
    expect(probeL(a.handle, ip6())).toBe(b.handle);
    expect(probeL(a.handle, ip6({ nh: 17, b0: 0x10 }))).toBe(b.handle); // the same source: the same verdict
    expect(probeL(a.handle, ip6({ nh: 58, b0: 129 }))).toBe(b.handle);
    for (let i = 0; i < 16; i++) {
      const src = [...SRC6];
      src[i] ^= 0x40;
      expect(probeL(a.handle, ip6({ src })), `byte ${i}`).toBe(-1);
    }
    // Words that xor to the same fold (the hash's) are still another address.
    const swapped = [...SRC6.slice(12), ...SRC6.slice(4, 12), ...SRC6.slice(0, 4)];
    expect(probeL(a.handle, ip6({ src: swapped }))).toBe(-1);
    for (const o of [{ src: new Array(16).fill(0) }, { src: [0xff, 2, ...new Array(13).fill(0), 1] }, { nh: 58, b0: 135 }, { nh: 58, b0: 136 },
      { nh: 58, b0: 134 }, { nh: 58, b0: 143 }, { nh: 17, b0: 2, b1: 0x23 }, { nh: 0 }, { nh: 44 }, { nh: 43 }, { ver: 4 }, { plen: 30, len: 80 },
      { tpid: 0x88a8 }] as Ip6[]) {
      expect(probeL(a.handle, ip6(o)), JSON.stringify(o)).toBe(-1);
      expect(install(BR, a.handle, ip6(o), b.handle), JSON.stringify(o)).toBe(-2);
    }
    expect(probeL(a.handle, ip6())).toBe(b.handle);
    const rows = folded();
    expect(rows).toHaveLength(1);
    expect(rows[0].slice(12)).toEqual([3, 0x20010db8, 0, 0, 3]);
    close(a.handle);
    close(b.handle);
  });

  it('fuzzed IPv6 frames: an install succeeds exactly when the stated class holds, and hits only its own source', () => {
    const a = tap('6f'), b = tap('6g');
    const BR = 16;
    const arb = fc.record({
      tpid: fc.constantFrom(undefined, undefined, 0x8100, 0x88a8), tci: fc.integer({ min: 0, max: 0xffff }), ver: fc.constantFrom(6, 6, 6, 4),
      nh: fc.constantFrom(6, 17, 58, 58, 0, 44, 60), b0: fc.constantFrom(0, 2, 128, 129, 133, 134, 135, 136, 137, 143), b1: fc.constantFrom(0x23, 0xa0),
      plen: fc.constantFrom(0, 2, 4, 20, 26), src: fc.constantFrom(SRC6, new Array(16).fill(0), [0xff, 2, ...new Array(14).fill(1)], [0xfe, 0x80, ...new Array(14).fill(7)]),
      len: fc.integer({ min: 54, max: 90 }),
    }, { requiredKeys: ['ver', 'nh', 'b0', 'b1', 'plen', 'src', 'len'] });
    fc.assert(fc.property(arb, (o) => {
      gens[BR]++;
      const f = ip6(o);
      const got = install(BR, a.handle, f, b.handle);
      if (!inClass(o)) {
        expect(got).toBe(-2);
        expect(probeL(a.handle, f)).toBe(-1);
        return;
      }
      expect(got).toBeGreaterThanOrEqual(0);
      expect(probeL(a.handle, f)).toBe(b.handle);
      const other = [...o.src];
      other[15] ^= 1;
      expect(probeL(a.handle, ip6({ ...o, src: other }))).toBe(-1);
    }), { numRuns: 2000 });
    folded();
    close(a.handle);
    close(b.handle);
  });
});

describe('read loop replay', () => {
  it('frames whose decision is installed go from one TAP to the other without a JS call, in order, and count', async () => {
    const na = `fc${ID}na`, nb = `fc${ID}nb`;
    for (const n of [na, nb]) { ip('netns', 'add', n); netns.add(n); }
    const a = nd.openTap(`fc${ID}ra`);
    handles.add(a.handle);
    const b = nd.openTap(`fc${ID}rb`);
    handles.add(b.handle);
    ip('link', 'set', a.name, 'netns', na);
    ip('link', 'set', b.name, 'netns', nb);
    ip('-n', na, 'addr', 'add', '10.204.0.1/24', 'dev', a.name);
    ip('-n', na, 'link', 'set', a.name, 'up');
    ip('-n', nb, 'addr', 'add', '10.204.0.2/24', 'dev', b.name);
    ip('-n', nb, 'link', 'set', b.name, 'up');
    const ring = nd.ring();
    const BR = 11;
    gens[BR]++;
    let aCalls = 0, aFrames = 0, installed = false, bReplies = 0;
    // A's ARP requests (one key: broadcast from A's MAC) go to B; the first one through JS installs the decision.
    nd.start(a.handle, (n) => {
      aCalls++;
      for (let i = 0; i < n; i++) {
        const off = ring.offs[i];
        if (ring.arena.readUInt16BE(off + 12) !== 0x0806) continue;
        aFrames++;
        expect(nd.sendVnet(b.handle, ring.arena, off, ring.lens[i])).toBe(ring.lens[i]);
        if (!installed) installed = nd.flowCacheInstall(BR, a.handle, 1, ring.arena, off, ring.lens[i], b.handle, 2) >= 0;
      }
    });
    nd.start(b.handle, (n) => {
      for (let i = 0; i < n; i++) {
        const off = ring.offs[i];
        if (ring.arena.readUInt16BE(off + 12) === 0x0806 && ring.arena.readUInt16BE(off + 20) === 2) bReplies++;
      }
    });
    const before = nd.flowCacheStats().hits;
    folded();
    // Nobody forwards B's answers back: A keeps asking (busybox arping sends one request a second).
    await execFileP('ip', ['netns', 'exec', na, 'busybox', 'arping', '-c', '3', '-w', '4', '-I', a.name, '10.204.0.2']).catch(() => {});
    expect(installed).toBe(true);
    expect(aFrames).toBe(1);
    const hits = nd.flowCacheStats().hits - before;
    expect(hits).toBeGreaterThanOrEqual(2);
    // B answered every request: the replayed ones reached its stack.
    expect(bReplies).toBe(1 + hits);
    const rows = folded().filter((r) => r[0] === BR);
    expect(rows.map((r) => [r[1], r[2], r[6], r[10], r[11]])).toEqual([[1, 2, hits, 0, 0]]);
    expect(rows[0][9]).toBe(rows[0][7]);
    expect(aCalls).toBeGreaterThanOrEqual(1);
    close(a.handle);
    close(b.handle);
  }, 20_000);

  /** Two namespaces, each with one TAP of ours (vnet: with the virtio_net_hdr and guest offloads). */
  function pair(tag: string, subnet: number, bVnet: boolean) {
    const na = `fc${ID}${tag}a`, nb = `fc${ID}${tag}b`;
    for (const n of [na, nb]) { ip('netns', 'add', n); netns.add(n); }
    const a = nd.openTap(`fc${ID}${tag}a`, { vnetHdr: true });
    handles.add(a.handle);
    const b = nd.openTap(`fc${ID}${tag}b`, { vnetHdr: bVnet });
    handles.add(b.handle);
    ip('link', 'set', a.name, 'netns', na);
    ip('link', 'set', b.name, 'netns', nb);
    ip('-n', na, 'addr', 'add', `10.${subnet}.0.1/24`, 'dev', a.name);
    ip('-n', na, 'link', 'set', a.name, 'up');
    ip('-n', nb, 'addr', 'add', `10.${subnet}.0.2/24`, 'dev', b.name);
    ip('-n', nb, 'link', 'set', b.name, 'up');
    return { na, nb, a, b };
  }

  it('TSO super-frames and partial checksums replay with their header to a device that takes it, and arrive whole', async () => {
    const { na, nb, a, b } = pair('t', 205, true);
    const ring = nd.ring();
    const BR = 12;
    gens[BR]++;
    // The test's "pipeline": a wire. Every frame is sent on with its header and its key installed.
    const wire = (from: number, to: number, inC: number, outC: number) => (n: number) => {
      for (let i = 0; i < n; i++) {
        nd.sendVnet(to, ring.arena, ring.offs[i], ring.lens[i]);
        nd.flowCacheInstall(BR, from, inC, ring.arena, ring.offs[i], ring.lens[i], to, outC);
      }
    };
    nd.start(a.handle, wire(a.handle, b.handle, 1, 2));
    nd.start(b.handle, wire(b.handle, a.handle, 2, 1));
    folded();
    // 4 MB over TCP from A to B; the receiver checks every byte.
    const py = (code: string) => ['python3', '-c', code];
    const server = execFileP('ip', ['netns', 'exec', nb, ...py(
      "import socket,hashlib\ns=socket.socket();s.setsockopt(1,2,1);s.bind(('10.205.0.2',5201));s.listen(1);c,_=s.accept();h=hashlib.sha256();n=0\n" +
      "while True:\n d=c.recv(1<<16)\n if not d: break\n h.update(d);n+=len(d)\nprint(n,h.hexdigest())")], { timeout: 15_000 });
    const data = "bytes(range(256))*16384";
    // The client retries until the listener is up.
    await execFileP('ip', ['netns', 'exec', na, ...py(
      `import socket,time\nfor i in range(50):\n try:\n  c=socket.create_connection(('10.205.0.2',5201),timeout=5);break\n except OSError: time.sleep(0.1)\nc.sendall(${data});c.close()`)], { timeout: 15_000 });
    const { stdout } = await server;
    const want = execFileSync('python3', ['-c', `import hashlib;d=${data};print(len(d),hashlib.sha256(d).hexdigest())`], { encoding: 'utf8' });
    expect(stdout.trim()).toBe(want.trim());
    const rows = folded().filter((r) => r[0] === BR);
    const fromA = rows.filter((r) => r[1] === 1);
    const frames = fromA.reduce((s, r) => s + r[6], 0), bytes = fromA.reduce((s, r) => s + r[7], 0);
    // Most of A's bytes went through the cache, as super-frames (far over the 1514-byte MTU on average).
    expect(frames).toBeGreaterThan(0);
    expect(bytes).toBeGreaterThan(2_000_000);
    expect(bytes / frames).toBeGreaterThan(3000);
    for (const r of rows) expect([r[10], r[11]]).toEqual([0, 0]);
    close(a.handle);
    close(b.handle);
  }, 30_000);

  it('a frame whose header asks for work never replays to a device without the header: it goes to JS', async () => {
    const { na, nb, a, b } = pair('p', 206, false);
    const ring = nd.ring();
    const BR = 13;
    gens[BR]++;
    const bMac = ip('-n', nb, '-j', 'link', 'show', b.name);
    ip('-n', na, 'neigh', 'add', '10.206.0.2', 'lladdr', JSON.parse(bMac)[0].address, 'dev', a.name);
    let partial = 0, installed = 0;
    nd.start(a.handle, (n) => {
      for (let i = 0; i < n; i++) {
        const off = ring.offs[i];
        if (ring.arena.readUInt16BE(off + 12) !== 0x0800) continue;
        if ((ring.arena[off - HDR] & nd.VNET_F_NEEDS_CSUM) !== 0) partial++;
        // Installed as if the pipeline had (it never would: egress completes the checksum for such a device).
        if (nd.flowCacheInstall(BR, a.handle, 1, ring.arena, off, ring.lens[i], b.handle, 2) >= 0) installed++;
      }
    });
    nd.start(b.handle, () => {});
    const before = nd.flowCacheStats().hits;
    await execFileP('ip', ['netns', 'exec', na, 'python3', '-c',
      "import socket,time\ns=socket.socket(2,2)\nfor i in range(5):\n s.sendto(b'x'*100,('10.206.0.2',9));time.sleep(0.05)"]);
    // Every datagram reached JS with NEEDS_CSUM (guest tx checksumming on), none was replayed.
    expect(partial).toBe(5);
    expect(installed).toBe(5);
    expect(nd.flowCacheStats().hits - before).toBe(0);
    expect(folded().filter((r) => r[0] === BR)).toEqual([]);
    close(a.handle);
    close(b.handle);
  }, 20_000);
});
