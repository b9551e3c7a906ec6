/*
 * Runs decided once (Bridge #receiveRuns: a batch of complete frames, whose runs of
 * identical heads take the pipeline once) against the same frames decided one at a
 * time. The same random batches (many of them runs of one frame repeated, as a GRO
 * burst of one TCP flow is) and control changes go to two bridges: one gets each
 * batch whole, the other each frame as a batch of its own, at the same clock. After
 * every step both must have written the same frames to the same ports in the same
 * order, and have the same counters (every port's, drops included, and the
 * bridge's) and the same MAC table (ages included).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Bridge } from './bridge.js';
import type { Port, PortIo, PortKind, PortRx } from './port.js';
import { VlanPolicy, type VlanSpec } from './vlan.js';
import { writeMac } from './wire/ethernet.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 300);

interface Sent { port: string; frame: string }

/** An in-memory port: every write logged by port name; `fail` makes writes fail with that code. */
class LogIo implements PortIo {
  readonly kind: PortKind = 'socket';
  rx!: PortRx;
  fail: number | undefined;
  writes = 0;
  /** Writes after which the device fails and reports itself gone (in the middle of a run); -1: never. */
  failAfter = -1;
  constructor(readonly name: string, readonly log: Sent[]) {}
  start(rx: PortRx): void { this.rx = rx; }
  write(buf: Uint8Array, off: number, len: number): number {
    this.writes++;
    if (this.failAfter >= 0 && this.writes > this.failAfter) {
      // The device goes away under the write (as a TAP's EIO): the bridge hears it now, mid-batch.
      this.failAfter = -1;
      this.fail = -5;
      this.rx.gone(5, 'test');
    }
    if (this.fail !== undefined) return this.fail;
    this.log.push({ port: this.name, frame: Buffer.from(buf.subarray(off, off + len)).toString('hex') });
    return len;
  }
  send(buf: Uint8Array, off: number, len: number): number { return this.write(buf, off, len); }
  send2(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    const f = new Uint8Array(alen + blen);
    f.set(a.subarray(aoff, aoff + alen), 0);
    f.set(b.subarray(boff, boff + blen), alen);
    return this.write(f, 0, f.length);
  }
  close(): void {}
  describe(): Record<string, string | number | boolean> { return { kind: 'log' }; }
}

/**
 * A port that takes a run's egress in one call (PortIo.sendRun), as a TAP does: the
 * same bytes as send/send2 frame by frame, in JS; a write that fails does not take the
 * port away under the call (a TAP's EIO: the read side reports it later), which is
 * sendRun's contract.
 */
class RunLogIo extends LogIo {
  calls = 0;
  override write(buf: Uint8Array, off: number, len: number): number {
    this.writes++;
    if (this.failAfter >= 0 && this.writes > this.failAfter) {
      this.failAfter = -1;
      this.fail = -5;
    }
    if (this.fail !== undefined) return this.fail;
    this.log.push({ port: this.name, frame: Buffer.from(buf.subarray(off, off + len)).toString('hex') });
    return len;
  }
  sendRun(buf: Uint8Array, offs: Int32Array, lens: Int32Array, from: number, to: number, ref: number, hlen: number,
    strip: number, res: Int32Array): number {
    this.calls++;
    res[0] = res[1] = res[2] = 0;
    let k = from;
    while (k < to) {
      const off = offs[k], len = lens[k];
      if (len < hlen || Buffer.compare(buf.subarray(off, off + hlen), buf.subarray(ref, ref + hlen)) !== 0) break;
      const r = strip === 0 ? this.send(buf, off, len) : this.send2(buf, off, 12, buf, off + 16, len - 16);
      res[0] += len;
      k++;
      if (r < 0) { res[2] = r; break; }
      res[1] += r;
    }
    return k - from;
  }
}

const PORTS: Record<string, VlanSpec> = {
  a1: { mode: 'access', vid: 10 }, a2: { mode: 'access', vid: 10 }, a3: { mode: 'access', vid: 10 },
  b1: { mode: 'access', vid: 20 }, t1: { mode: 'trunk', allowed: [10, 20] },
};
const NAMES = Object.keys(PORTS);
const FROM = ['t1', 't1', 'a1', ...NAMES];
/** One host per port (a1's is MACS[0] ...), then broadcast and a link-local group. */
const MACS = [0x020000000001, 0x020000000002, 0x020000000003, 0x020000000004, 0x020000000005, 0xffffffffffff, 0x0180c2000000];

/** `runIo`: the ports that take a run's egress in one call (RunLogIo). */
function rig(runIo: readonly string[] = []) {
  const clock = { now: 1_000 };
  const log: Sent[] = [];
  const br = new Bridge('rn', { clock: () => clock.now, ageingSec: 20 });
  const io: Record<string, LogIo> = {};
  const port: Record<string, Port> = {};
  const add = (name: string): void => {
    io[name] = runIo.includes(name) ? new RunLogIo(name, log) : new LogIo(name, log);
    port[name] = br.addPort(name, io[name], { vlan: VlanPolicy.from(PORTS[name]) });
  };
  for (const n of NAMES) add(n);
  return { br, io, port, clock, log, add };
}
type Rig = ReturnType<typeof rig>;

interface FrameSpec { dst: number; own: boolean; src: number; tag: number | undefined; len: number; fill: number }
const frameArb: fc.Arbitrary<FrameSpec> = fc.record({
  dst: fc.constantFrom(...MACS.slice(0, 4), ...MACS.slice(0, 4), ...MACS),
  own: fc.oneof({ weight: 10, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  src: fc.constantFrom(...MACS.slice(0, 5), 0),
  tag: fc.oneof({ weight: 2, arbitrary: fc.constant(undefined) }, { weight: 2, arbitrary: fc.constant(10) }, { weight: 1, arbitrary: fc.constantFrom(0, 20, 30, 4095) }),
  // Mostly full-size segments; sometimes too short for the header they claim (malformed on a trunk).
  len: fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 18, max: 80 }) }, { weight: 1, arbitrary: fc.integer({ min: 12, max: 17 }) }),
  fill: fc.integer({ min: 0, max: 255 }),
});

function frameOf(f: FrameSpec, port: string): Uint8Array {
  const b = new Uint8Array(Math.max(f.len, 12)).fill(f.fill);
  writeMac(b, 0, f.dst);
  writeMac(b, 6, f.own ? MACS[NAMES.indexOf(port)] : f.src);
  if (f.tag !== undefined && b.length >= 16) { b[12] = 0x81; b[13] = 0; b[14] = f.tag >> 8; b[15] = f.tag & 0xff; }
  else if (b.length >= 14) { b[12] = 0x08; b[13] = 0; }
  return b;
}

/** A run: one frame's head repeated with other payloads and lengths (the segments of one flow). */
const runArb = fc.tuple(frameArb, fc.array(fc.tuple(fc.integer({ min: 12, max: 80 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }))
  .map(([f, rest]) => [f, ...rest.map(([len, fill]) => ({ ...f, len, fill }))]);

type Op =
  | { op: 'batch'; port: string; frames: FrameSpec[] }
  | { op: 'tick'; dt: number }
  | { op: 'gone' | 'up' | 'fail' | 'failMid' | 'heal' | 'guard' | 'rate' | 'shaper' | 'vlan' | 'static' | 'ageing' | 'limit' | 'noLearn'; port: string };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 10, arbitrary: fc.record({ op: fc.constant('batch' as const), port: fc.constantFrom(...FROM), frames: fc.array(frameArb, { minLength: 1, maxLength: 4 }) }) },
  {
    weight: 20,
    arbitrary: fc.record({
      op: fc.constant('batch' as const), port: fc.constantFrom(...FROM),
      frames: fc.array(runArb, { minLength: 1, maxLength: 3 }).map((r) => r.flat()),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('tick' as const), dt: fc.constantFrom(10, 3_000, 21_000) }) },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constantFrom('gone' as const, 'up' as const, 'fail' as const, 'failMid' as const, 'heal' as const, 'guard' as const,
        'rate' as const, 'shaper' as const, 'vlan' as const, 'static' as const, 'ageing' as const, 'limit' as const, 'noLearn' as const),
      port: fc.constantFrom(...NAMES),
    }),
  },
);

function apply(t: Rig, o: Op, whole: boolean): void {
  const name = 'port' in o ? o.port : '';
  switch (o.op) {
    case 'tick': t.clock.now += o.dt; t.br.sweep(t.clock.now); return;
    case 'gone': t.br.portGone(t.port[name], 'test'); return;
    case 'up': t.br.portUp(t.port[name], 'test'); return;
    case 'fail': t.io[name].fail = -105; return;
    case 'failMid': t.io[name].failAfter = t.io[name].writes + 2; return;
    case 'heal': t.io[name].fail = undefined; t.io[name].failAfter = -1; return;
    case 'guard': t.br.setPortGuard(name, { ipSource: true }); return;
    case 'rate': t.br.setPortRate(name, { rate: 8_000, burst: 200 }, undefined); return;
    case 'shaper': t.br.setPortRate(name, null, { rate: 8_000, burst: 300 }); return;
    case 'vlan': if (PORTS[name].mode === 'access') t.br.setPortVlan(name, VlanPolicy.from({ mode: 'access', vid: 20 })); return;
    case 'static': if (t.port[name].vlan.isMember(10)) t.br.addStatic(MACS[2], name, 10); return;
    case 'ageing': t.br.fdb.setAgeing(t.br.fdb.ageingSec === 20 ? 0 : 20); return;
    case 'limit': t.br.setPortMaxMacs(name, 1); return;
    case 'noLearn': { const nl = new Uint8Array(4096); nl[10] = 1; t.port[name].noLearn = nl; return; }
    case 'batch': {
      const frames = o.frames.map((f) => frameOf(f, name));
      const offs: number[] = [], lens: number[] = [];
      let size = 3;
      for (const f of frames) { offs.push(size); lens.push(f.length); size += f.length + 5; }
      const buf = new Uint8Array(size).fill(0xa5);
      frames.forEach((f, i) => buf.set(f, offs[i]));
      const rx = t.io[name].rx;
      if (whole) rx.batch(buf, Int32Array.from(offs), Int32Array.from(lens), offs.length);
      else for (let i = 0; i < offs.length; i++) rx.batch(buf, Int32Array.of(offs[i]), Int32Array.of(lens[i]), 1);
    }
  }
}

function state(t: Rig) {
  return {
    ports: NAMES.map((n) => ({ n, up: t.port[n].up, ...t.port[n].counters() })),
    counters: { ...t.br.counters },
    fdbCounters: { ...t.br.fdb.counters },
    fdb: t.br.fdb.entries().map((e) => [e.vid, e.mac, e.port, e.updated, e.isStatic])
      .sort((x, y) => (x[0] as number) - (y[0] as number) || (x[1] as number) - (y[1] as number)),
  };
}

describe('bridge runs: a batch decided once per run equals its frames decided one by one', () => {
  it.each([
    ['one frame at a time', [] as string[]],
    ['in one call on the ports that can (sendRun)', ['a2', 'a3', 't1']],
  ])('under random batches, runs and control changes, egress %s (fast-check)', (_what, runIo) => {
    let replayable = 0;
    let calls = 0;
    fc.assert(fc.property(fc.array(opArb, { minLength: 1, maxLength: 60 }), (ops) => {
      const one = rig(runIo), whole = rig(runIo);
      // Every host known first (mostly), so runs to known unicast destinations are common.
      const hello = (tag: number | undefined): FrameSpec => ({ dst: MACS[5], own: true, src: 0, tag, len: 60, fill: 0 });
      const prime: Op[] = [...NAMES.map((port): Op => ({ op: 'batch', port, frames: [hello(port === 't1' ? 10 : undefined)] }))];
      for (const o of [...prime, ...ops]) {
        apply(one, o, false);
        apply(whole, o, true);
        expect(whole.log).toEqual(one.log);
        expect(state(whole)).toEqual(state(one));
      }
      replayable += whole.br.runFrames;
      calls += whole.br.runCalls;
      expect(one.br.runCalls).toBe(0);
    }), { numRuns: RUNS });
    expect(replayable).toBeGreaterThan(RUNS);
    if (runIo.length > 0) expect(calls).toBeGreaterThan(RUNS / 10);
    else expect(calls).toBe(0);
  }, 120_000);

  it('decides a run of one known unicast flow once, and counts every frame of it', () => {
    const t = rig();
    const ab = frameOf({ dst: MACS[1], own: true, src: 0, tag: undefined, len: 60, fill: 1 }, 'a1');
    const ba = frameOf({ dst: MACS[0], own: true, src: 0, tag: undefined, len: 60, fill: 2 }, 'a2');
    apply(t, { op: 'batch', port: 'a2', frames: [{ dst: MACS[0], own: true, src: 0, tag: undefined, len: 60, fill: 2 }] }, true);
    expect(ba.length).toBe(60);
    const run: FrameSpec[] = Array.from({ length: 23 }, (_, i) => ({ dst: MACS[1], own: true, src: 0, tag: undefined, len: 60 + i, fill: i }));
    apply(t, { op: 'batch', port: 'a1', frames: run }, true);
    expect(ab.length).toBe(60);
    expect(t.log.filter((s) => s.port === 'a2')).toHaveLength(23);
    expect(t.port.a1.counters().rxFrames).toBe(23);
    expect(t.br.counters.forwarded).toBe(23);
    expect(t.br.runFrames).toBe(22);
    expect(t.log.filter((s) => s.port === 'a2').map((s) => s.frame.length / 2)).toEqual(run.map((f) => f.len));
  });

  it('writes a run to a port that takes runs (sendRun) in one call, counting every frame', () => {
    const one = rig(['a2']), whole = rig(['a2']);
    const run: FrameSpec[] = Array.from({ length: 23 }, (_, i) => ({ dst: MACS[1], own: true, src: 0, tag: undefined, len: 60 + i, fill: i }));
    for (const [t, w] of [[one, false], [whole, true]] as const) {
      for (const port of NAMES) apply(t, { op: 'batch', port, frames: [{ dst: MACS[5], own: true, src: 0, tag: port === 't1' ? 10 : undefined, len: 60, fill: 0 }] }, w);
      apply(t, { op: 'batch', port: 'a1', frames: run }, w);
    }
    expect(whole.log).toEqual(one.log);
    expect(state(whole)).toEqual(state(one));
    expect(whole.br.runFrames).toBe(22);
    expect(whole.br.runCalls).toBe(1);
    expect((whole.io.a2 as RunLogIo).calls).toBe(1);
    expect(whole.port.a2.counters().txFrames).toBe(3 + 23); // the other VLAN 10 ports' hellos were flooded to it
  });

  it('stops repeating a decision when an egress write takes the destination port away mid-run', () => {
    const one = rig(), whole = rig();
    const run: FrameSpec[] = Array.from({ length: 6 }, (_, i) => ({ dst: MACS[1], own: true, src: 0, tag: undefined, len: 60, fill: i }));
    for (const [t, w] of [[one, false], [whole, true]] as const) {
      for (const port of NAMES) apply(t, { op: 'batch', port, frames: [{ dst: MACS[5], own: true, src: 0, tag: port === 't1' ? 10 : undefined, len: 60, fill: 0 }] }, w);
      apply(t, { op: 'failMid', port: 'a2' }, w);
      apply(t, { op: 'batch', port: 'a1', frames: run }, w);
    }
    expect(whole.log).toEqual(one.log);
    expect(state(whole)).toEqual(state(one));
    // a3 saw the three VLAN 10 hellos, then frames 4-6 (a2 gone, its MAC forgotten) flooded.
    expect(one.log.filter((s) => s.port === 'a3')).toHaveLength(3 + 3);
    expect(whole.br.runFrames).toBeGreaterThan(0);
  });
});
