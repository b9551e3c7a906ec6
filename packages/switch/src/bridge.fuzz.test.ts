/*
 * The bridge pipeline end to end under random input (fast-check): random and
 * mutated frames from random ports of a bridge with access, trunk and hybrid
 * ports, a port whose writes fail, a port that goes down, a port at its MAC limit,
 * a static MAC, a small MAC table, ageing, and an in-process port that answers
 * while the bridge is forwarding (re-entry, deferred frames).
 *
 * Per injected frame, the counters must account for everything:
 *   frames received (rxFrames, all ports) + deferred frames dropped
 *     = frames injected + frames re-entered by the answering port
 *   frames received on an up port
 *     = ingress drops (by reason) + forwarded + flooded (group, unknown unicast)
 *   port writes = txFrames + tx_error + link_down
 * and, for what was sent: only to ports other than the ingress port, only to
 * members of the frame's VLAN when that VLAN is known from the ingress port alone
 * (access ingress), each frame the original with at most one 802.1Q tag added or
 * removed, the receive buffer untouched, nothing thrown.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Bridge, MAX_DEFERRED } from './bridge.js';
import { DROP_REASONS, type DropReason } from './drop.js';
import type { Port, PortIo, PortKind, PortRx } from './port.js';
import { VlanPolicy, type VlanSpec } from './vlan.js';
import { writeMac } from './wire/ethernet.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 400);

const INGRESS_REASONS: DropReason[] = [
  'malformed', 'bad_src_mac', 'link_local', 'vlan_tagged_on_access', 'vlan_not_allowed', 'vlan_no_pvid',
  'vlan_reserved', 'port_mac_limit', 'static_mac_conflict', 'dst_on_ingress',
  'storm_control', 'dhcp_guard', 'ip_source_guard', 'arp_spoof', 'bound_mac_conflict',
  'bpdu_guard', 'bpdu_invalid', 'loop_blocked', 'ingress_rate',
  'ra_guard', 'dhcpv6_guard', 'ipv6_source_guard', 'nd_spoof',
];
const EGRESS_REASONS: DropReason[] = ['egress_filtered', 'port_down', 'tx_error', 'link_down', 'port_shut', 'egress_rate', 'tunnel_mtu'];
it('the drop reasons are all classified as ingress or egress here', () => {
  expect([...INGRESS_REASONS, ...EGRESS_REASONS].sort()).toEqual([...DROP_REASONS].sort());
});

interface Sent {
  port: string;
  frame: Uint8Array;
}

/** An in-memory port. `fail` makes writes fail; `answer` makes it send frames back into the bridge from inside send(). */
class FuzzIo implements PortIo {
  readonly kind: PortKind = 'tap';
  rx!: PortRx;
  writes = 0;
  reentered = 0;
  /** Frames to send back per frame received (re-entry while the bridge forwards). */
  answer = 0;
  /** A source MAC for answers. */
  answerSrc = 0x02000000aa01;
  /** Destination of answers: the sender of the frame answered (-1), or this MAC. */
  answerDst = -1;
  constructor(readonly name: string, readonly log: Sent[], readonly fail?: number) {}

  start(rx: PortRx): void { this.rx = rx; }

  send(buf: Uint8Array, off: number, len: number): number {
    return this.#got(buf.slice(off, off + len));
  }

  send2(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    const f = new Uint8Array(alen + blen);
    f.set(a.subarray(aoff, aoff + alen), 0);
    f.set(b.subarray(boff, boff + blen), alen);
    return this.#got(f);
  }

  #got(f: Uint8Array): number {
    this.writes++;
    if (this.fail !== undefined) return this.fail;
    this.log.push({ port: this.name, frame: f });
    for (let i = 0; i < this.answer; i++) {
      // Like the router: answer with a new frame (dst = the sender), from inside send().
      const reply = f.slice();
      if (reply.length >= 12) {
        if (this.answerDst < 0) reply.copyWithin(0, 6, 12);
        else writeMac(reply, 0, this.answerDst);
        writeMac(reply, 6, this.answerSrc + i);
      }
      this.reentered++;
      this.rx.frame(reply, 0, reply.length);
    }
    return f.length;
  }

  close(): void {}
  describe(): Record<string, string | number | boolean> { return { kind: 'fuzz' }; }
}

const ACCESS = (vid: number): VlanSpec => ({ mode: 'access', vid });

const PORTS: Record<string, { spec: VlanSpec; fail?: number; maxMacs?: number; bpduGuard?: boolean; police?: boolean }> = {
  a1: { spec: ACCESS(10), bpduGuard: true, police: true },
  a2: { spec: ACCESS(10), maxMacs: 3 },
  a3: { spec: ACCESS(20) },
  t1: { spec: { mode: 'trunk', allowed: [10, 20, 30], native: 1 } },
  t2: { spec: { mode: 'trunk', allowed: [10, 30] } },
  h1: { spec: { mode: 'hybrid', vlans: [{ vid: 10, pvid: true, untagged: true }, { vid: 20 }, { vid: 30, untagged: true }] } },
  f1: { spec: ACCESS(10), fail: -105 },
  d1: { spec: ACCESS(20) },
  r1: { spec: ACCESS(30) },
  r2: { spec: ACCESS(30) },
};
const NAMES = Object.keys(PORTS);
const STATIC_MAC = 0x020000000051;

function rig() {
  const clock = { now: 1_000 };
  const log: Sent[] = [];
  const br = new Bridge('fz', { clock: () => clock.now, maxEntries: 12, ageingSec: 30 });
  const io: Record<string, FuzzIo> = {};
  const port: Record<string, Port> = {};
  for (const [name, p] of Object.entries(PORTS)) {
    io[name] = new FuzzIo(name, log, p.fail);
    port[name] = br.addPort(name, io[name], {
      vlan: VlanPolicy.from(p.spec), maxMacs: p.maxMacs, bpduGuard: p.bpduGuard,
      ingressRate: p.police ? { rate: 8_000, burst: 1500, pps: 20 } : undefined,
    });
  }
  br.addStatic(STATIC_MAC, 'a1', 10);
  br.addStatic(STATIC_MAC + 1, 'd1', 20);
  return { br, io, port, clock, log };
}

// ---------------------------------------------------------------------------
// Frames

const u8 = fc.integer({ min: 0, max: 255 });
const macPool = [
  0x020000000001, 0x020000000002, 0x020000000003, 0x020000000004, 0x020000000005, 0x020000000006,
  STATIC_MAC, STATIC_MAC + 1, 0x02000000aa01, 0xffffffffffff, 0x01005e000001, 0x0180c2000000, 0x0180c2000002,
  0x0180c200000e, 0, 0x010000000000,
];
const mac = fc.oneof({ weight: 6, arbitrary: fc.constantFrom(...macPool) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 2 ** 48 - 1 }) });
const vid = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(0, 1, 10, 20, 30, 40, 4095) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 4095 }) });
const tag = fc.record({ tpid: fc.constantFrom(0x8100, 0x8100, 0x88a8, 0x9100), prio: fc.integer({ min: 0, max: 15 }), vid });

const structured = fc.record({
  dst: mac,
  src: mac,
  tags: fc.oneof({ weight: 2, arbitrary: fc.constant<{ tpid: number; prio: number; vid: number }[]>([]) }, { weight: 2, arbitrary: fc.array(tag, { minLength: 1, maxLength: 2 }) }),
  type: fc.constantFrom(0x0800, 0x0806, 0x86dd, 0x8100, 0x88a8, 0x1234),
  payload: fc.uint8Array({ maxLength: 60 }),
}).map((f) => {
  const out = new Uint8Array(12 + f.tags.length * 4 + 2 + f.payload.length);
  writeMac(out, 0, f.dst);
  writeMac(out, 6, f.src);
  let o = 12;
  for (const t of f.tags) {
    out[o] = t.tpid >>> 8; out[o + 1] = t.tpid & 0xff;
    const tci = (t.prio << 12) | t.vid;
    out[o + 2] = tci >>> 8; out[o + 3] = tci & 0xff;
    o += 4;
  }
  out[o] = f.type >>> 8; out[o + 1] = f.type & 0xff;
  out.set(f.payload, o + 2);
  return out;
});

const frameArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 6, arbitrary: structured },
  {
    weight: 3,
    arbitrary: fc.tuple(structured, fc.array(fc.tuple(fc.nat(), u8), { maxLength: 4 }), fc.nat(80)).map(([f, edits, cut]) => {
      const g = f.slice(0, Math.max(0, Math.min(f.length, cut)));
      for (const [p, v] of edits) if (g.length > 0) g[p % g.length] = v;
      return g;
    }),
  },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 80 }) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 17 }) },
);

type Op =
  | { op: 'frame'; port: string; frame: Uint8Array }
  | { op: 'batch'; port: string; frames: Uint8Array[] }
  | { op: 'tick'; dt: number }
  | { op: 'gone'; port: string }
  | { op: 'answer'; n: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 12, arbitrary: fc.record({ op: fc.constant('frame' as const), port: fc.constantFrom(...NAMES), frame: frameArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('batch' as const), port: fc.constantFrom(...NAMES), frames: fc.array(frameArb, { minLength: 1, maxLength: 5 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('tick' as const), dt: fc.constantFrom(100, 5_000, 31_000) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('gone' as const), port: fc.constantFrom('d1', 't2') }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('answer' as const), n: fc.constantFrom(0, 1, 2) }) },
);

// ---------------------------------------------------------------------------
// Checks

interface Snap {
  rx: number;
  rxUp: number;
  ingress: number;
  egressDrops: number;
  tx: number;
  txError: number;
  writes: number;
  forwarded: number;
  flooded: number;
  deferredDropped: number;
  reentered: number;
}

function snap(t: ReturnType<typeof rig>): Snap {
  const s: Snap = { rx: 0, rxUp: 0, ingress: 0, egressDrops: 0, tx: 0, txError: 0, writes: 0, forwarded: 0, flooded: 0, deferredDropped: 0, reentered: 0 };
  for (const name of NAMES) {
    const p = t.port[name];
    const d = p.counters().drops;
    s.rx += p.rxFrames;
    if (p.up) s.rxUp += p.rxFrames;
    for (const r of INGRESS_REASONS) s.ingress += d[r] ?? 0;
    for (const r of EGRESS_REASONS) s.egressDrops += d[r] ?? 0;
    s.tx += p.txFrames;
    s.txError += (d.tx_error ?? 0) + (d.link_down ?? 0); // a refused write is one or the other
    s.writes += t.io[name].writes;
    s.reentered += t.io[name].reentered;
  }
  s.forwarded = t.br.counters.forwarded;
  s.flooded = t.br.counters.floodedGroup + t.br.counters.floodedUnknown;
  s.deferredDropped = t.br.deferredDropped;
  return s;
}

const hasQTag = (f: Uint8Array): boolean => f.length >= 18 && f[12] === 0x81 && f[13] === 0x00;
const strip = (f: Uint8Array): Uint8Array => {
  const g = new Uint8Array(f.length - 4);
  g.set(f.subarray(0, 12), 0);
  g.set(f.subarray(16), 12);
  return g;
};
const same = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

/** `sent` is `orig` with at most one 802.1Q tag removed, added, or replaced at offset 12. */
function sameModuloOneTag(sent: Uint8Array, orig: Uint8Array): boolean {
  if (same(sent, orig)) return true;
  if (hasQTag(orig) && same(sent, strip(orig))) return true;
  if (hasQTag(sent) && same(strip(sent), orig)) return true;
  return hasQTag(sent) && hasQTag(orig) && same(strip(sent), strip(orig));
}

/** Delivers one frame as the port's I/O would: from inside a larger guarded buffer, at an offset. */
function deliver(io: FuzzIo, frames: Uint8Array[], batch: boolean): void {
  const lead = 3;
  let size = lead;
  const offs: number[] = [];
  for (const f of frames) {
    offs.push(size);
    size += f.length + 5;
  }
  const buf = new Uint8Array(size + 7).fill(0xa5);
  frames.forEach((f, i) => buf.set(f, offs[i]));
  const before = buf.slice();
  if (batch) io.rx.batch(buf, Int32Array.from(offs), Int32Array.from(frames.map((f) => f.length)), frames.length);
  else io.rx.frame(buf, offs[0], frames[0].length);
  // The data plane never writes into a receive buffer (neither frames nor the bytes around them).
  expect(same(buf, before)).toBe(true);
}

describe('bridge pipeline under random frames (fast-check)', () => {
  it('never throws, and every frame is forwarded, flooded or counted as a drop', () => {
    const totals = { frames: 0, forwarded: 0, flooded: 0, ingress: 0, deferredDropped: 0, sent: 0, reentered: 0 };
    fc.assert(fc.property(fc.array(opArb, { minLength: 1, maxLength: 60 }), (ops) => {
      const t = rig();
      for (const o of ops) {
        if (o.op === 'tick') {
          t.clock.now += o.dt;
          t.br.sweep(t.clock.now);
          continue;
        }
        if (o.op === 'gone') {
          t.io[o.port].rx.gone(19, 'test: device gone');
          continue;
        }
        if (o.op === 'answer') {
          t.io.r1.answer = o.n;
          continue;
        }
        const frames = o.op === 'frame' ? [o.frame] : o.frames;
        // Frames arrive only on up ports (a down port's device is gone; see the report on rx of down ports).
        if (!t.port[o.port].up) continue;
        const before = snap(t);
        t.log.length = 0;
        deliver(t.io[o.port], frames, o.op === 'batch');
        const after = snap(t);
        const d = (k: keyof Snap): number => after[k] - before[k];
        totals.frames += frames.length;
        totals.forwarded += d('forwarded');
        totals.flooded += d('flooded');
        totals.ingress += d('ingress');
        totals.deferredDropped += d('deferredDropped');
        totals.reentered += d('reentered');
        totals.sent += t.log.length;

        // Received: what was injected plus what the answering port sent back, less deferrals dropped.
        expect(d('rx') + d('deferredDropped')).toBe(frames.length + d('reentered'));
        // Every received frame has exactly one outcome.
        expect(d('ingress') + d('forwarded') + d('flooded')).toBe(d('rxUp'));
        // Every write is a success or a tx_error.
        expect(d('writes')).toBe(d('tx') + d('txError'));
        // Egress attempts: at least one per forwarded frame.
        expect(d('writes') + d('egressDrops') - d('txError')).toBeGreaterThanOrEqual(d('forwarded'));

        // What was sent (not counting answers the answering port made: they are new frames).
        if (d('reentered') === 0) {
          for (const s of t.log) {
            expect(s.port).not.toBe(o.port);
            expect(frames.some((f) => sameModuloOneTag(s.frame, f))).toBe(true);
            const ingress = PORTS[o.port].spec;
            if (ingress.mode === 'access') {
              // Access ingress: the VLAN is the port's, whatever the frame says.
              expect(t.port[s.port].vlan.isMember(ingress.vid!)).toBe(true);
            }
          }
        }
        // The MAC table stays within its limit (static entries are not counted against it).
        expect(t.br.fdb.size).toBeLessThanOrEqual(12 + 2);
      }
    }), { numRuns: RUNS });
    // The runs reached every outcome.
    expect(totals.forwarded).toBeGreaterThan(0);
    expect(totals.flooded).toBeGreaterThan(0);
    expect(totals.ingress).toBeGreaterThan(0);
    expect(totals.sent).toBeGreaterThan(0);
    expect(totals.reentered).toBeGreaterThan(0);
  }, 120_000);

  it('an answering port that floods the bridge from inside send(): deferred frames are bounded and counted', () => {
    const t = rig();
    // r1 and r2 answer every frame with 3 broadcasts, which flood VLAN 30 and reach the other one.
    for (const [r, src] of [['r1', 0x02000000aa01], ['r2', 0x02000000bb01]] as const) {
      t.io[r].answer = 3;
      t.io[r].answerDst = 0xffffffffffff;
      t.io[r].answerSrc = src;
    }
    const f = new Uint8Array(60);
    writeMac(f, 0, 0xffffffffffff);
    writeMac(f, 6, 0x020000000001);
    f[12] = 0x08;
    const before = snap(t);
    deliver(t.io.t1, [Uint8Array.from([...f.subarray(0, 12), 0x81, 0x00, 0x00, 30, ...f.subarray(12)])], false);
    const after = snap(t);
    // Each answer floods and is answered again: the chain is cut at MAX_DEFERRED waiting frames.
    expect(after.deferredDropped).toBeGreaterThan(0);
    expect(after.rx - before.rx + after.deferredDropped).toBe(1 + after.reentered);
    expect(after.ingress + after.forwarded + after.flooded).toBe(after.rxUp);
    expect(after.rx - before.rx).toBe(1 + MAX_DEFERRED);
  });
});
