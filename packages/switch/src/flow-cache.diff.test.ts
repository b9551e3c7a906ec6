/*
 * The flow cache's differential test (bench/DESIGN-flow-cache.md): the same random
 * frames and control changes go to two bridges, one with the cache on, one
 * without; after every step both must have written the same frames to the same
 * ports in the same order, and have the same counters (every port's, drops
 * included, and the bridge's) and the same MAC table (ages included).
 *
 * The cache's backend here is a model of the addon's (native/flowcache.c, whose
 * own fuzz test in packages/netdev checks it against the same rules): exact-match
 * entries keyed on the ingress handle, both MACs, the tag and the virtio_net_hdr's
 * flags and GSO type, valid while their bridge's generation stands, dropped when a
 * handle closes; and a model of its read loop: a batch's leading frames that hit
 * are written to the entry's port without the bridge (with the frame's own
 * virtio_net_hdr to a device that takes one; a header that says anything never to
 * one that does not), the rest from the first miss go to the bridge as a batch.
 * The ports are in memory and carry handles; every write is logged with the
 * header the device got (a TSO super-frame must reach it with its header as the
 * pipeline wrote it). Frames carry random headers: none, DATA_VALID, NEEDS_CSUM,
 * GSO TCPv4/TCPv6/UDP_L4 (ECN sometimes) with random offsets and sizes; one port
 * (a4) has no header (offload off), so the pipeline strips, completes or drops.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Bridge } from './bridge.js';
import { FOLD, type FlowCacheBackend, FlowCacheHub } from './flow-cache.js';
import type { Port, PortIo, PortKind, PortRx } from './port.js';
import { VlanPolicy, type VlanSpec } from './vlan.js';
import { writeMac } from './wire/ethernet.js';
import { writeVnet } from './wire/vnet.js';
import { Drop } from './drop.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 300);
const HDR = 10;

interface Entry {
  bridge: number; gen: number; inPort: number; outPort: number; out: number; dead: boolean;
  frames: number; bytes: number; last: number; txBytes: number; down: number; err: number;
}

/** The addon's table and read loop, modelled. */
class ModelBackend implements FlowCacheBackend {
  readonly generations = new Float64Array(16);
  readonly size = 4096;
  readonly clockOffset = 0;
  readonly entries = new Map<string, Entry>();
  readonly handles: (DiffIo | undefined)[] = [];
  hits = 0;
  /** Hits of frames whose header said something (TSO, NEEDS_CSUM, DATA_VALID). */
  hdrHits = 0;
  /** Hits of tagged frames. */
  tagHits = 0;
  installs = 0;

  static key(inHandle: number, buf: Uint8Array, off: number, len: number): string | undefined {
    if (len < 14) return undefined;
    const t = (buf[off + 12] << 8) | buf[off + 13];
    const tagged = t === 0x8100 || t === 0x88a8;
    if (tagged && len < 18) return undefined;
    const parts = [inHandle, buf[off - HDR], buf[off - HDR + 1], ...buf.subarray(off, off + 12), tagged ? t : 0,
      tagged ? (buf[off + 14] << 8) | buf[off + 15] : 0];
    return parts.join(',');
  }

  install(bridge: number, inHandle: number, inPort: number, buf: Uint8Array, off: number, len: number, out: number, outPort: number): boolean {
    const k = ModelBackend.key(inHandle, buf, off, len);
    if (k === undefined) throw new Error('install of a frame with no key');
    // The pipeline writes a header that says something as it came only to a device that takes it.
    if (!this.handles[out]!.offload && buf.subarray(off - HDR, off).some((x) => x !== 0)) throw new Error('install of a header toward a device without one');
    const old = this.entries.get(k);
    // As flowcache.c: unfolded counts stay with the same decision, and block another.
    if (old !== undefined && old.frames > 0) {
      if (old.dead || old.bridge !== bridge || old.out !== out || old.outPort !== outPort || old.inPort !== inPort) return false;
      old.gen = this.generations[bridge];
      this.installs++;
      return true;
    }
    this.entries.set(k, { bridge, gen: this.generations[bridge], inPort, outPort, out, dead: false, frames: 0, bytes: 0, last: 0, txBytes: 0, down: 0, err: 0 });
    this.installs++;
    return true;
  }

  fold(out: Float64Array): number {
    let n = 0;
    for (const [k, e] of this.entries) {
      if (e.frames === 0) continue;
      const o = n * FOLD.FIELDS;
      const macs = k.split(',').map(Number);
      out[o + FOLD.BRIDGE] = e.bridge; out[o + FOLD.IN_PORT] = e.inPort; out[o + FOLD.OUT_PORT] = e.outPort;
      out[o + FOLD.SRC_HI] = (macs[9] << 8) | macs[10];
      out[o + FOLD.SRC_LO] = ((macs[11] << 24) >>> 0) + ((macs[12] << 16) | (macs[13] << 8) | macs[14]);
      out[o + FOLD.TAG] = macs[15] === 0 ? -1 : ((macs[15] === 0x8100 ? 1 : 2) * 0x10000) + macs[16]; out[o + FOLD.FRAMES] = e.frames; out[o + FOLD.BYTES] = e.bytes; out[o + FOLD.LAST] = e.last;
      out[o + FOLD.TX_BYTES] = e.txBytes; out[o + FOLD.LINK_DOWN] = e.down; out[o + FOLD.TX_ERROR] = e.err;
      e.frames = e.bytes = e.txBytes = e.down = e.err = 0;
      n++;
    }
    return n;
  }

  flush(bridge: number): void {
    for (const e of this.entries.values()) if (e.bridge === bridge) e.dead = true;
  }

  closed(handle: number): void {
    for (const e of this.entries.values()) if (e.out === handle) e.dead = true;
    for (const [k, e] of this.entries) if (Number(k.split(',')[0]) === handle) e.dead = true;
    this.handles[handle] = undefined;
  }

  /** The read loop: a batch from `io` at time `now`; frames at offs[i] with their header before them. */
  read(io: DiffIo, buf: Uint8Array, offs: number[], lens: number[], now: number): void {
    let i = 0;
    // A device without the header: its frames never had a decision installed (the addon never probes it).
    for (; io.offload && i < offs.length; i++) {
      const off = offs[i], len = lens[i];
      let zero = true;
      for (let j = off - HDR; j < off; j++) if (buf[j] !== 0) zero = false;
      const k = ModelBackend.key(io.flowHandle, buf, off, len);
      const e = k === undefined ? undefined : this.entries.get(k);
      if (e === undefined || e.dead || e.gen !== this.generations[e.bridge]) break;
      const w = this.handles[e.out]!;
      if (!w.offload && !zero) break; // as fc_replay: such a header never goes to a device without one
      const r = w.offload ? w.sendVnet(buf, off, len) : w.send(buf, off, len);
      e.frames++; e.bytes += len; e.last = now;
      if (r >= 0) e.txBytes += r;
      else if (r === -100 || r === -5) e.down++;
      else e.err++;
      this.hits++;
      if (!zero) this.hdrHits++;
      if (k!.split(',')[15] !== '0') this.tagHits++;
    }
    if (i < offs.length) io.rx.batch(buf, Int32Array.from(offs.slice(i)), Int32Array.from(lens.slice(i)), offs.length - i, io.offload, now);
  }
}

interface Sent { port: string; frame: string }

/**
 * An in-memory handle port (as TapIo): every write logged by port name, with the
 * virtio_net_hdr the device got (the addon writes an all-zero one for send/send2
 * to a device that takes headers, none to one that does not).
 */
class DiffIo implements PortIo {
  readonly kind: PortKind = 'tap';
  rx!: PortRx;
  fail: number | undefined;
  constructor(readonly name: string, readonly log: Sent[], readonly flowHandle: number, readonly model?: ModelBackend, readonly offload = true) {
    model?.handles.splice(flowHandle, 1, this);
  }
  start(rx: PortRx): void { this.rx = rx; }
  /** hdr: the header's bytes (undefined: all zero). */
  write(hdr: Uint8Array | undefined, buf: Uint8Array, off: number, len: number): number {
    if (this.fail !== undefined) return this.fail;
    const h = this.offload ? Buffer.from(hdr ?? new Uint8Array(HDR)).toString('hex') + '|' : '';
    this.log.push({ port: this.name, frame: h + Buffer.from(buf.subarray(off, off + len)).toString('hex') });
    return len;
  }
  send(buf: Uint8Array, off: number, len: number): number { return this.write(undefined, buf, off, len); }
  send2(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number, hdr?: Uint8Array): number {
    const f = new Uint8Array(alen + blen);
    f.set(a.subarray(aoff, aoff + alen), 0);
    f.set(b.subarray(boff, boff + blen), alen);
    return this.write(hdr, f, 0, f.length);
  }
  sendVnet(buf: Uint8Array, off: number, len: number): number {
    if (!this.offload) throw new Error('sendVnet to a device without the header');
    return this.write(buf.slice(off - HDR, off), buf, off, len);
  }
  send2Vnet(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    if (!this.offload) throw new Error('send2Vnet to a device without the header');
    return this.send2(a, aoff, alen, b, boff, blen, a.slice(aoff - HDR, aoff));
  }
  close(): void { this.model?.closed(this.flowHandle); }
  describe(): Record<string, string | number | boolean> { return { kind: 'diff' }; }
}

const PORTS: Record<string, VlanSpec> = {
  a1: { mode: 'access', vid: 10 }, a2: { mode: 'access', vid: 10 }, a3: { mode: 'access', vid: 10 },
  b1: { mode: 'access', vid: 20 }, t1: { mode: 'trunk', allowed: [10, 20] }, a4: { mode: 'access', vid: 10 },
  t2: { mode: 'trunk', allowed: [10, 20] },
};
/** A device without the virtio_net_hdr (a TAP with offload off). */
const PLAIN = new Set(['a4']);
const NAMES = Object.keys(PORTS);
/** Frames come mostly from the access ports of VLAN 10, whose hosts talk to each other. */
const FROM = ['a1', 'a2', 'a3', ...NAMES];
/** One host per port (a1's is MACS[0] ...), then broadcast, then the bridge group address. */
const MACS = [0x020000000001, 0x020000000002, 0x020000000003, 0x020000000004, 0x020000000005, 0x020000000006, 0x020000000007, 0xffffffffffff, 0x0180c2000000];
const HOSTS = NAMES.length;

function rig(cache: boolean) {
  const clock = { now: 1_000 };
  const log: Sent[] = [];
  const model = cache ? new ModelBackend() : undefined;
  const br = new Bridge('df', { clock: () => clock.now, ageingSec: 20 });
  if (model !== undefined) br.setFlowCache(new FlowCacheHub(model));
  const io: Record<string, DiffIo> = {};
  const port: Record<string, Port> = {};
  let handles = 0;
  const add = (name: string): void => {
    io[name] = new DiffIo(name, log, handles++, model, !PLAIN.has(name));
    // a1..a4 and b1 are VM ports (t1, t2: trunks between switches): BPDU guard on (the daemon's default); a BPDU (to MACS[8]) shuts one.
    port[name] = br.addPort(name, io[name], { vlan: VlanPolicy.from(PORTS[name]), bpduGuard: !name.startsWith('t') });
  };
  for (const n of NAMES) add(n);
  return { br, io, port, clock, log, model, add };
}
type Rig = ReturnType<typeof rig>;

/** A frame's makings; its source is mostly its port's own host (a MAC that never moves), sometimes another's. */
/** A virtio_net_hdr: [flags, gso_type, hdr_len, gso_size, csum_start, csum_offset]. */
type Vnet = [number, number, number, number, number, number];
interface FrameSpec { dst: number; own: boolean; src: number; tag: number | undefined; hdr: Vnet | undefined; payload: Uint8Array }
const u16 = fc.integer({ min: 0, max: 0xffff });
const vnetArb: fc.Arbitrary<Vnet> = fc.tuple(
  fc.constantFrom(0, 1, 2, 1, 1), // none, NEEDS_CSUM, DATA_VALID
  fc.constantFrom(0, 0, 1, 4, 5, 0x81), // NONE, TCPV4, TCPV6, UDP_L4, TCPV4|ECN
  u16, u16, u16, u16,
);
const frameArb: fc.Arbitrary<FrameSpec> = fc.record({
  dst: fc.constantFrom(...MACS.slice(0, 3), ...MACS), own: fc.oneof({ weight: 20, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  src: fc.constantFrom(...MACS.slice(0, HOSTS)),
  tag: fc.oneof({ weight: 4, arbitrary: fc.constant(undefined) }, { weight: 2, arbitrary: fc.constantFrom(0, 10, 20, 0xa00a, 0x3014) }), // TCI: PCP/DEI too
  hdr: fc.oneof({ weight: 3, arbitrary: fc.constant(undefined) }, { weight: 2, arbitrary: vnetArb }), // a virtio_net_hdr that (mostly) says something
  payload: fc.uint8Array({ minLength: 0, maxLength: 20 }),
});

function frameOf(f: FrameSpec, port: string): Uint8Array {
  const t = f.tag === undefined ? 0 : 4;
  const b = new Uint8Array(HDR + 14 + t + f.payload.length);
  if (f.hdr !== undefined) writeVnet(b, 0, ...f.hdr);
  writeMac(b, HDR, f.dst);
  writeMac(b, HDR + 6, f.own ? MACS[NAMES.indexOf(port)] : f.src);
  if (t) { b[HDR + 12] = 0x81; b[HDR + 14] = f.tag! >>> 8; b[HDR + 15] = f.tag! & 0xff; }
  b[HDR + 12 + t] = 0x08;
  b.set(f.payload, HDR + 14 + t);
  return b;
}

type Op =
  | { op: 'batch'; port: string; frames: (FrameSpec | Uint8Array)[]; split?: boolean }
  | { op: 'tick'; dt: number }
  | { op: 'gone' | 'up' | 'fail' | 'heal' | 'remove' | 'guard' | 'guardSet' | 'guardOff' | 'rate' | 'vlan' | 'vlanTag' | 'vlanBack' | 'static' | 'ageing'; port: string };

/** Trunk to trunk: t1's and t2's hosts talk in VLAN 10 or 20, tagged (PCP/DEI sometimes set), mostly to each other. */
const trunkArb: fc.Arbitrary<Op> = fc.tuple(fc.constantFrom('t1', 't2'), fc.boolean(), frameArb, fc.constantFrom(10, 20, 0xa00a, 0x3014), fc.integer({ min: 1, max: 4 }))
  .map(([port, toPeer, f, tag, n]) => ({
    op: 'batch' as const, port, split: true,
    frames: Array<FrameSpec>(n).fill({ ...f, own: true, tag, dst: toPeer ? MACS[NAMES.indexOf(port === 't1' ? 't2' : 't1')] : f.dst }),
  }));

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: trunkArb },
  { weight: 30, arbitrary: fc.record({ op: fc.constant('batch' as const), port: fc.constantFrom(...FROM), frames: fc.array(frameArb, { minLength: 1, maxLength: 4 }) }) },
  // A stream: the same frame several times, in one batch or one batch each (what the cache is for).
  {
    weight: 45,
    arbitrary: fc.record({
      op: fc.constant('batch' as const), port: fc.constantFrom(...FROM), split: fc.boolean(),
      frames: fc.tuple(frameArb, fc.integer({ min: 2, max: 5 })).map(([f, n]) => Array<FrameSpec>(n).fill(f)),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('tick' as const), dt: fc.constantFrom(10, 3_000, 3_000, 21_000) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constantFrom('gone' as const, 'up' as const, 'fail' as const, 'heal' as const, 'remove' as const, 'guard' as const,
        'guardSet' as const, 'guardOff' as const, 'rate' as const, 'vlan' as const, 'vlanTag' as const, 'vlanBack' as const, 'static' as const, 'ageing' as const),
      port: fc.constantFrom(...NAMES),
    }),
  },
);

function apply(t: Rig, o: Op): void {
  const name = 'port' in o ? o.port : '';
  switch (o.op) {
    case 'tick': t.clock.now += o.dt; t.br.sweep(t.clock.now); return;
    case 'gone': t.br.portGone(t.port[name], 'test'); return;
    case 'up': t.br.portUp(t.port[name], 'test'); return;
    case 'fail': t.io[name].fail = -105; return;
    case 'heal': t.io[name].fail = undefined; return;
    case 'remove': t.br.removePort(name); t.add(name); return;
    case 'guard': t.br.setPortGuard(name, { ipSource: true }); return;
    // The daemon's way (cli guards.ts applyGuard, at start, reload and `port set guard`): the port's guard set in place.
    case 'guardSet': t.port[name].guard.set({ dhcp: true, ipSource: true }); return;
    case 'guardOff': t.port[name].guard.set({}); return;
    case 'rate': t.br.setPortRate(name, null, { rate: 1e9, burst: 1e6 }); return;
    case 'vlan': if (PORTS[name].mode === 'access') t.br.setPortVlan(name, VlanPolicy.from({ mode: 'access', vid: 20 })); return;
    // Still a member of the same VLANs (no MAC entry flushed), but now sends VLAN 10 tagged.
    case 'vlanTag': t.br.setPortVlan(name, VlanPolicy.from({ mode: 'hybrid', vlans: [{ vid: 10, pvid: true }, { vid: 20 }] })); return;
    case 'vlanBack': t.br.setPortVlan(name, VlanPolicy.from(PORTS[name])); return;
    case 'static': if (t.port[name].vlan.isMember(10)) t.br.addStatic(0x0200000000aa, name, 10); return;
    case 'ageing': t.br.fdb.setAgeing(t.br.fdb.ageingSec === 20 ? 0 : 20); return;
    case 'batch': {
      if (o.split === true) {
        for (const f of o.frames) apply(t, { op: 'batch', port: name, frames: [f] });
        return;
      }
      if (!t.port[name].up) return;
      const offs: number[] = [], lens: number[] = [];
      let size = 3;
      const frames = o.frames.map((f) => (f instanceof Uint8Array ? f : frameOf(f, name)));
      for (const f of frames) { offs.push(size + HDR); lens.push(f.length - HDR); size += f.length + 5; }
      const buf = new Uint8Array(size).fill(0xa5);
      frames.forEach((f, i) => buf.set(f, offs[i] - HDR));
      if (t.model !== undefined) t.model.read(t.io[name], buf, offs, lens, t.clock.now);
      else t.io[name].rx.batch(buf, Int32Array.from(offs), Int32Array.from(lens), offs.length, t.io[name].offload, t.clock.now);
    }
  }
}

function state(t: Rig) {
  t.br.foldFlowCache();
  return {
    ports: NAMES.map((n) => ({ n, up: t.port[n].up, ...t.port[n].counters() })),
    counters: { ...t.br.counters },
    fdbCounters: { ...t.br.fdb.counters },
    fdb: t.br.fdb.entries().map((e) => [e.vid, e.mac, e.port, e.updated, e.isStatic]).sort((x, y) => (x[0] as number) - (y[0] as number) || (x[1] as number) - (y[1] as number)),
  };
}

describe('flow cache: cache on and off give the same outputs, counters and MAC table', () => {
  it('under random frames and control changes (fast-check)', () => {
    let hits = 0, hdrHits = 0, tagHits = 0, installs = 0, invalidations = 0;
    fc.assert(fc.property(fc.array(opArb, { minLength: 1, maxLength: 80 }), (ops) => {
      const off = rig(false), on = rig(true);
      for (const o of ops) {
        apply(off, o);
        apply(on, o);
        expect(on.log).toEqual(off.log);
        expect(state(on)).toEqual(state(off));
      }
      hits += on.model!.hits;
      hdrHits += on.model!.hdrHits;
      tagHits += on.model!.tagHits;
      installs += on.br.flowCacheCounters.installs;
      invalidations += on.br.flowCacheCounters.invalidations;
      expect(on.br.flowCacheCounters.hits).toBe(on.model!.hits);
    }), { numRuns: RUNS });
    // The runs replayed frames, not only missed.
    expect(hits).toBeGreaterThan(RUNS / 10);
    expect(hdrHits).toBeGreaterThan(RUNS / 100); // TSO, partial-checksum and DATA_VALID frames among them
    expect(tagHits).toBeGreaterThan(0); // trunk to trunk, the tag kept (the next test pins it)
    expect(installs).toBeGreaterThan(RUNS / 3);
    expect(invalidations).toBeGreaterThan(RUNS);
  }, 120_000);

  function primed(): { on: Rig; off: Rig; ab: Uint8Array } {
    const on = rig(true), off = rig(false);
    const ab = new Uint8Array(HDR + 60);
    writeMac(ab, HDR, MACS[1]);
    writeMac(ab, HDR + 6, MACS[0]);
    ab[HDR + 12] = 0x08;
    const ba = ab.slice();
    writeMac(ba, HDR, MACS[0]);
    writeMac(ba, HDR + 6, MACS[1]);
    for (const t of [on, off]) {
      apply(t, { op: 'batch', port: 'a1', frames: [ab] }); // learns MACS[0] on a1, floods
      apply(t, { op: 'batch', port: 'a2', frames: [ba] }); // learns MACS[1] on a2
      apply(t, { op: 'batch', port: 'a1', frames: [ab] }); // known unicast: installed when on
      apply(t, { op: 'batch', port: 'a1', frames: [ab] }); // replayed when on
    }
    expect(on.model!.hits).toBe(1);
    return { on, off, ab };
  }
  const both = (p: { on: Rig; off: Rig }, o: Op): void => { apply(p.on, o); apply(p.off, o); };
  const same = (p: { on: Rig; off: Rig }): void => {
    expect(p.on.log).toEqual(p.off.log);
    expect(state(p.on)).toEqual(state(p.off));
  };

  it('a MAC moving to another port is never replayed to the old one', () => {
    const p = primed();
    const moved = p.ab.slice();
    writeMac(moved, HDR, MACS[0]);
    writeMac(moved, HDR + 6, MACS[1]); // MACS[1] now speaks from a3
    both(p, { op: 'batch', port: 'a3', frames: [moved] });
    const hits = p.on.model!.hits;
    p.on.log.length = p.off.log.length = 0;
    both(p, { op: 'batch', port: 'a1', frames: [p.ab] });
    expect(p.on.model!.hits).toBe(hits);
    expect(p.on.log.map((s) => s.port)).toEqual(['a3']);
    same(p);
  });

  it('a port removed, a VLAN change, a guard (also set on the port in place, as the daemon does) or a rate limit ends replays; counts stay where they belong', () => {
    for (const change of [
      { op: 'remove', port: 'a2' }, { op: 'vlan', port: 'a2' }, { op: 'vlanTag', port: 'a2' }, { op: 'guard', port: 'a1' }, { op: 'guardSet', port: 'a1' },
      { op: 'rate', port: 'a2' },
      { op: 'gone', port: 'a2' }, { op: 'ageing', port: 'a1' },
    ] as Op[]) {
      const p = primed();
      both(p, change);
      const hits = p.on.model!.hits;
      both(p, { op: 'batch', port: 'a1', frames: [p.ab] });
      expect(p.on.model!.hits, change.op).toBe(hits);
      same(p);
    }
  });

  it('TSO super-frames replay with their header as they came to a port that takes it, never to one without', () => {
    const p = primed();
    const fromA4 = p.ab.slice();
    writeMac(fromA4, HDR, MACS[0]);
    writeMac(fromA4, HDR + 6, MACS[5]);
    both(p, { op: 'batch', port: 'a4', frames: [fromA4] }); // a4's host learned (a device without the header)
    const tso = p.ab.slice(); // to a2's host
    writeVnet(tso, 0, 1, 1, 54, 1448, 34, 16); // NEEDS_CSUM, TCPV4
    const toA4 = tso.slice();
    writeMac(toA4, HDR, MACS[5]);
    const hits = p.on.model!.hits;
    p.on.log.length = p.off.log.length = 0;
    for (let i = 0; i < 3; i++) {
      both(p, { op: 'batch', port: 'a1', frames: [tso] });
      both(p, { op: 'batch', port: 'a1', frames: [toA4] });
      same(p);
    }
    // The first through the pipeline (installed), the next two replayed; a4's never (no segmenter here: tx_error).
    expect(p.on.model!.hits - hits).toBe(2);
    expect(p.on.model!.hdrHits).toBe(2);
    expect(p.on.log).toEqual(Array(3).fill({ port: 'a2', frame: `01013600a80522001000|${Buffer.from(tso.subarray(HDR)).toString('hex')}` }));
    expect(p.on.port.a4.drops[Drop.tx_error]).toBe(3);
  });

  it('trunk to trunk: a tagged frame replays with its tag as it came (PCP too); the MAC ages in the tag\'s VLAN', () => {
    const on = rig(true), off = rig(false);
    const p = { on, off };
    const t12 = new Uint8Array(HDR + 64);
    writeMac(t12, HDR, MACS[6]);
    writeMac(t12, HDR + 6, MACS[4]);
    t12.set([0x81, 0x00, 0xa0, 0x14, 0x08, 0x00], HDR + 12); // PCP 5, VID 20
    const t21 = t12.slice();
    writeMac(t21, HDR, MACS[4]);
    writeMac(t21, HDR + 6, MACS[6]);
    t21.set([0x00, 0x14], HDR + 14); // VID 20, PCP 0
    both(p, { op: 'batch', port: 't1', frames: [t12] }); // learns t1's host in VLAN 20
    both(p, { op: 'batch', port: 't2', frames: [t21] }); // t2's
    on.log.length = off.log.length = 0;
    for (let i = 0; i < 5; i++) {
      both(p, { op: 'tick', dt: 6_000 });
      both(p, { op: 'batch', port: 't1', frames: [t12] });
      both(p, { op: 'batch', port: 't2', frames: [t21] });
      same(p);
    }
    // The first of each way through the pipeline (installed), the other four replayed, tags untouched.
    expect(on.model!.tagHits).toBe(8);
    expect(on.log.filter((x) => x.port === 't2').map((x) => x.frame.split('|')[1])).toEqual(Array(5).fill(Buffer.from(t12.subarray(HDR)).toString('hex')));
    // The pipeline saw the last of them 24 s ago, past the 20 s ageing: the folds refreshed them in VLAN 20.
    expect(on.br.fdb.lookup(20, MACS[4])).toBe(on.port.t1.id);
    expect(on.br.fdb.lookup(20, MACS[6])).toBe(on.port.t2.id);
  });

  it('ageing counts replayed frames: MACs heard only through the cache do not age out', () => {
    const p = primed();
    const ba = p.ab.slice();
    writeMac(ba, HDR, MACS[0]);
    writeMac(ba, HDR + 6, MACS[1]);
    for (let i = 0; i < 8; i++) {
      both(p, { op: 'tick', dt: 6_000 });
      both(p, { op: 'batch', port: 'a1', frames: [p.ab] });
      both(p, { op: 'batch', port: 'a2', frames: [ba] });
      same(p);
    }
    // Both directions replayed for 48 s, past the 20 s ageing: only the folds refreshed them.
    expect(p.on.model!.hits).toBeGreaterThan(12);
    expect(p.on.br.fdb.lookup(10, MACS[0])).toBe(p.on.port.a1.id);
    same(p);
  });
});
