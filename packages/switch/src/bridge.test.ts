import { describe, expect, it } from 'vitest';
import { TestIo } from './testing/test-io.js';
import { Bridge, BridgeError, type BridgeEvent, type BridgeOptions, EVENT_BUDGET_PER_SEC } from './bridge.js';
import { Drop, type DropReason } from './drop.js';
import { Learn } from './fdb.js';
import type { Port } from './port.js';
import { VlanPolicy, type VlanSpec } from './vlan.js';
import { writeMac } from './wire/ethernet.js';

// ---------------------------------------------------------------------------
// Hand-built frames. The payload is a fixed byte pattern so that equal arguments
// give equal bytes, and a shifted or truncated copy shows.

const A = 0x020000000001;
const B = 0x020000000002;
const C = 0x020000000003;
const D = 0x020000000004;
const BCAST = 0xffffffffffff;
const MCAST = 0x01005e000001; // 224.0.0.1
const IPV4 = 0x0800;

function payload(n: number): Uint8Array {
  const p = new Uint8Array(n);
  for (let i = 0; i < n; i++) p[i] = (i * 7 + 3) & 0xff;
  return p;
}

function frame(dst: number, src: number, words: number[], body: Uint8Array): Uint8Array {
  const f = new Uint8Array(12 + words.length * 2 + body.length);
  writeMac(f, 0, dst);
  writeMac(f, 6, src);
  words.forEach((w, i) => {
    f[12 + i * 2] = w >>> 8;
    f[13 + i * 2] = w & 0xff;
  });
  f.set(body, 12 + words.length * 2);
  return f;
}

/** dst <- src, EtherType, 46 bytes of payload: 60 bytes. */
const untagged = (dst: number, src: number, type = IPV4, n = 46): Uint8Array => frame(dst, src, [type], payload(n));
/** The same frame with an 802.1Q tag: 64 bytes. */
const tagged = (dst: number, src: number, tci: number, type = IPV4, n = 46): Uint8Array =>
  frame(dst, src, [0x8100, tci, type], payload(n));
/** 802.1ad S-tag then a C-tag (or any outer TPID). */
const doubleTagged = (dst: number, src: number, outer: number, inner: number, outerTpid = 0x8100): Uint8Array =>
  frame(dst, src, [outerTpid, outer, 0x8100, inner, IPV4], payload(46));
/** Priority tag (VID 0) with PCP `pcp` (and DEI), optionally hiding an inner tag. */
const priorityTagged = (dst: number, src: number, prio: number, innerTci?: number): Uint8Array =>
  innerTci === undefined
    ? frame(dst, src, [0x8100, prio, IPV4], payload(46))
    : frame(dst, src, [0x8100, prio, 0x8100, innerTci, IPV4], payload(46));
/** A single S-tag (0x88a8) carrying IPv4. */
const sTagged = (dst: number, src: number, tci: number): Uint8Array => frame(dst, src, [0x88a8, tci, IPV4], payload(46));

// ---------------------------------------------------------------------------

const ACCESS = (vid: number): VlanSpec => ({ mode: 'access', vid });
const TRUNK = (allowed: number[], native?: number): VlanSpec => ({ mode: 'trunk', allowed, native });

function rig(
  ports: Record<string, VlanSpec>,
  opts: BridgeOptions & { maxMacs?: Record<string, number> } = {},
) {
  const clock = { now: 1000 };
  const events: BridgeEvent[] = [];
  const br = new Bridge('br0', { clock: () => clock.now, onEvent: (e) => events.push(e), ...opts });
  const io: Record<string, TestIo> = {};
  const port: Record<string, Port> = {};
  for (const [name, spec] of Object.entries(ports)) {
    io[name] = new TestIo();
    port[name] = br.addPort(name, io[name], { vlan: VlanPolicy.from(spec), maxMacs: opts.maxMacs?.[name] });
  }
  const send = (name: string, f: Uint8Array) => io[name].inject(f);
  /** Everything sent since the last call, per port, cleared. */
  const out = (): Record<string, Uint8Array[]> => Object.fromEntries(Object.entries(io).map(([n, p]) => [n, p.take()]));
  const drops = (name: string): Partial<Record<DropReason, number>> => port[name].counters().drops;
  const flush = () => void out();
  return { br, io, port, clock, events, send, out, drops, flush };
}

/** Ports (by name) that were sent something. */
const recipients = (o: Record<string, Uint8Array[]>): string[] =>
  Object.entries(o).filter(([, f]) => f.length > 0).map(([n]) => n).sort();

// ---------------------------------------------------------------------------

describe('learning and unicast', () => {
  it('learns from the source, then unicasts only to the learned port', () => {
    const t = rig({ p1: ACCESS(1), p2: ACCESS(1), p3: ACCESS(1) });
    t.send('p1', untagged(BCAST, A));
    expect(recipients(t.out())).toEqual(['p2', 'p3']);
    expect(t.br.fdb.lookup(1, A)).toBe(t.port.p1.id);
    expect(t.br.counters.floodedGroup).toBe(1);

    // B answers A: known destination, only p1.
    const reply = untagged(A, B);
    t.send('p2', reply);
    const o = t.out();
    expect(recipients(o)).toEqual(['p1']);
    expect(o.p1).toEqual([reply]);
    expect(t.br.counters.forwarded).toBe(1);
    expect(t.br.fdb.lookup(1, B)).toBe(t.port.p2.id);

    // A to B: only p2.
    t.send('p1', untagged(B, A));
    expect(recipients(t.out())).toEqual(['p2']);
    expect(t.br.counters.forwarded).toBe(2);
    expect(t.br.counters.floodedUnknown).toBe(0);
  });

  it('accepts batches from the port (offsets and lengths per frame)', () => {
    const t = rig({ p1: ACCESS(1), p2: ACCESS(1), p3: ACCESS(1) });
    t.send('p2', untagged(BCAST, B));
    t.flush();
    const f1 = untagged(B, A);
    const f2 = untagged(B, C, IPV4, 100);
    const buf = new Uint8Array(300).fill(0xa5);
    buf.set(f1, 10);
    buf.set(f2, 150);
    t.io.p1.rx.batch(buf, Int32Array.from([10, 150]), Int32Array.from([f1.length, f2.length]), 2);
    const o = t.out();
    expect(o.p2).toEqual([f1, f2]);
    expect(recipients(o)).toEqual(['p2']);
    expect(t.br.fdb.lookup(1, C)).toBe(t.port.p1.id);
    expect(t.port.p1.rxFrames).toBe(2);
  });

  it('a frame that is dropped at admission teaches the table nothing', () => {
    const t = rig({ p1: ACCESS(1), p2: ACCESS(1) });
    t.send('p1', tagged(BCAST, A, 1));
    expect(t.drops('p1')).toEqual({ vlan_tagged_on_access: 1 });
    expect(t.br.fdb.size).toBe(0);
  });
});

describe('flooding', () => {
  const ports = { a1: ACCESS(10), a2: ACCESS(10), b1: ACCESS(20), t: TRUNK([10, 20]) };

  it.each([
    ['unknown unicast', C, 'floodedUnknown'],
    ['broadcast', BCAST, 'floodedGroup'],
    ['multicast', MCAST, 'floodedGroup'],
  ] as const)('%s floods to same-VLAN members only, never back to the ingress port', (_n, dst, counter) => {
    const t = rig(ports);
    const f = untagged(dst, A);
    t.send('a1', f);
    const o = t.out();
    expect(recipients(o)).toEqual(['a2', 't']);
    expect(o.a2).toEqual([f]);
    expect(o.t).toEqual([tagged(dst, A, 10)]);
    expect(t.br.counters[counter]).toBe(1);

    // From the trunk in VLAN 20: only b1.
    t.send('t', tagged(dst, B, 20));
    const o2 = t.out();
    expect(recipients(o2)).toEqual(['b1']);
    expect(o2.b1).toEqual([untagged(dst, B)]);
  });

  it('access to access in the same VLAN, not across VLANs', () => {
    const t = rig({ a1: ACCESS(10), a2: ACCESS(10), b1: ACCESS(20), b2: ACCESS(20) });
    t.send('a2', untagged(BCAST, B));
    t.send('b1', untagged(BCAST, C));
    t.flush();
    const f = untagged(B, A);
    t.send('a1', f);
    expect(t.out()).toEqual({ a1: [], a2: [f], b1: [], b2: [] });
    // C is known in VLAN 20 only; from VLAN 10 it is unknown and floods VLAN 10 only.
    t.send('a1', untagged(C, A));
    expect(recipients(t.out())).toEqual(['a2']);
  });

  it('a port alone in its VLAN sends to nobody', () => {
    const t = rig({ a1: ACCESS(10), b1: ACCESS(20) });
    t.send('a1', untagged(BCAST, A));
    expect(recipients(t.out())).toEqual([]);
    expect(t.port.a1.rxFrames).toBe(1);
  });
});

describe('access port ingress', () => {
  const ports = { a1: ACCESS(10), a2: ACCESS(10), t: TRUNK([10, 20]) };

  it.each([
    ['tagged with its own VID', tagged(BCAST, A, 10)],
    ['tagged with another VID', tagged(BCAST, A, 20)],
    ['double-tagged', doubleTagged(BCAST, A, 10, 20)],
    ['S-tagged then C-tagged', doubleTagged(BCAST, A, 10, 20, 0x88a8)],
    ['S-tagged (0x88a8)', sTagged(BCAST, A, 10)],
    ['0x9100-tagged', frame(BCAST, A, [0x9100, 10, IPV4], payload(46))],
    ['priority-tagged hiding an inner tag', priorityTagged(BCAST, A, 0xa000, 20)],
    ['priority-tagged hiding an inner S-tag', frame(BCAST, A, [0x8100, 0, 0x88a8, 20, IPV4], payload(46))],
    ['a truncated tag', tagged(BCAST, A, 10).subarray(0, 16)],
  ])('drops a frame %s (vlan_tagged_on_access)', (_n, f) => {
    const t = rig(ports);
    t.send('a1', f);
    expect(recipients(t.out())).toEqual([]);
    expect(t.drops('a1')).toEqual({ vlan_tagged_on_access: 1 });
    expect(t.br.fdb.size).toBe(0);
  });

  it('accepts a plain priority-tagged frame into the PVID: untagged to access, PVID tag with the same PCP to trunk', () => {
    const t = rig(ports);
    const prio = 0xa000 | 0x1000; // PCP 5, DEI
    t.send('a1', priorityTagged(BCAST, A, prio));
    const o = t.out();
    expect(t.drops('a1')).toEqual({});
    expect(o.a2).toEqual([untagged(BCAST, A)]);
    expect(o.t).toEqual([tagged(BCAST, A, prio | 10)]);
    expect(t.br.fdb.lookup(10, A)).toBe(t.port.a1.id);
  });
});

describe('trunk port ingress', () => {
  it('admits an allowed VID into that VLAN', () => {
    const t = rig({ t: TRUNK([10, 20]), a10: ACCESS(10), a20: ACCESS(20) });
    t.send('t', tagged(BCAST, A, 20));
    const o = t.out();
    expect(recipients(o)).toEqual(['a20']);
    expect(t.br.fdb.lookup(20, A)).toBe(t.port.t.id);
    expect(t.br.fdb.lookup(10, A)).toBe(-1);
  });

  it('drops a VID that is not allowed (vlan_not_allowed)', () => {
    const t = rig({ t: TRUNK([10, 20]), a30: ACCESS(30), t2: TRUNK([30]) });
    t.send('t', tagged(BCAST, A, 30));
    expect(recipients(t.out())).toEqual([]);
    expect(t.drops('t')).toEqual({ vlan_not_allowed: 1 });
    expect(t.br.fdb.size).toBe(0);
  });

  it('drops VID 4095 (vlan_reserved)', () => {
    const t = rig({ t: TRUNK([10]), t2: TRUNK([10]) });
    t.send('t', tagged(BCAST, A, 0xe000 | 4095));
    expect(recipients(t.out())).toEqual([]);
    expect(t.drops('t')).toEqual({ vlan_reserved: 1 });
  });

  it('drops untagged frames when there is no native VLAN (vlan_no_pvid)', () => {
    const t = rig({ t: TRUNK([10]), a10: ACCESS(10) });
    t.send('t', untagged(BCAST, A));
    t.send('t', priorityTagged(BCAST, A, 0x2000));
    t.send('t', sTagged(BCAST, A, 10)); // an S-tag is payload to an 802.1Q bridge: untagged
    expect(recipients(t.out())).toEqual([]);
    expect(t.drops('t')).toEqual({ vlan_no_pvid: 3 });
  });

  it('classifies untagged frames into the native VLAN', () => {
    const t = rig({ t: TRUNK([10], 5), a5: ACCESS(5), a10: ACCESS(10) });
    const f = untagged(BCAST, A);
    t.send('t', f);
    const o = t.out();
    expect(recipients(o)).toEqual(['a5']);
    expect(o.a5).toEqual([f]);
    expect(t.br.fdb.lookup(5, A)).toBe(t.port.t.id);
  });

  it('classifies S-tagged frames into the native VLAN, S-tag kept as payload', () => {
    const t = rig({ t: TRUNK([10], 5), a5: ACCESS(5), t2: TRUNK([5]) });
    const f = sTagged(BCAST, A, 77);
    t.send('t', f);
    const o = t.out();
    expect(o.a5).toEqual([f]);
    expect(o.t2).toEqual([frame(BCAST, A, [0x8100, 5, 0x88a8, 77, IPV4], payload(46))]);
  });

  it('drops a frame whose tag is truncated (16 bytes) as malformed', () => {
    const t = rig({ t: TRUNK([10]), t2: TRUNK([10]) });
    t.send('t', tagged(BCAST, A, 10).subarray(0, 16));
    t.send('t', tagged(BCAST, A, 10).subarray(0, 17));
    expect(recipients(t.out())).toEqual([]);
    expect(t.drops('t')).toEqual({ malformed: 2 });
    // 18 bytes is a complete tag header: forwarded.
    t.send('t', tagged(BCAST, A, 10).subarray(0, 18));
    expect(t.out().t2).toEqual([tagged(BCAST, A, 10).subarray(0, 18)]);
  });
});

describe('egress tagging', () => {
  it('access to trunk inserts a tag with the VLAN and PCP 0', () => {
    const t = rig({ a: ACCESS(42), t: TRUNK([1, 42]) });
    t.send('a', untagged(BCAST, A));
    const o = t.out();
    expect(o.t).toEqual([tagged(BCAST, A, 42)]);
    expect(o.t[0].length).toBe(64);
  });

  it('trunk to access strips the tag: the frame equals the untagged original', () => {
    const t = rig({ a: ACCESS(42), t: TRUNK([42]) });
    t.send('t', tagged(BCAST, A, 0xe000 | 42));
    expect(t.out().a).toEqual([untagged(BCAST, A)]);
  });

  it('trunk to trunk keeps the tag byte for byte, PCP and DEI included', () => {
    const t = rig({ t1: TRUNK([42]), t2: TRUNK([42, 43]) });
    const f = tagged(BCAST, A, 0xb000 | 42); // PCP 5, DEI 1
    t.send('t1', f);
    expect(t.out().t2).toEqual([f]);
  });

  it('the native VLAN leaves a trunk untagged', () => {
    const t = rig({ a: ACCESS(5), t1: TRUNK([10], 5), t2: TRUNK([5, 10]) });
    const f = untagged(BCAST, A);
    t.send('a', f);
    let o = t.out();
    expect(o.t1).toEqual([f]); // native: untagged
    expect(o.t2).toEqual([tagged(BCAST, A, 5)]); // allowed tagged
    // Tagged 5 arriving on t2 leaves t1 untagged (native) and a untagged.
    t.send('t2', tagged(BCAST, B, 0x6000 | 5));
    o = t.out();
    expect(o.t1).toEqual([untagged(BCAST, B)]);
    expect(o.a).toEqual([untagged(BCAST, B)]);
  });

  it('priority-tagged ingress on a trunk with native VLAN gets the native VID on a tagged egress', () => {
    const t = rig({ t1: TRUNK([10], 5), t2: TRUNK([5]) });
    t.send('t1', priorityTagged(BCAST, A, 0x4000));
    expect(t.out().t2).toEqual([tagged(BCAST, A, 0x4000 | 5)]);
  });

  it('hybrid port: untagged for its untagged VIDs, tagged for the others', () => {
    const h: VlanSpec = { mode: 'hybrid', vlans: [{ vid: 5, pvid: true, untagged: true }, { vid: 6, untagged: true }, { vid: 7 }] };
    const t = rig({ h, a6: ACCESS(6), a7: ACCESS(7) });
    t.send('a6', untagged(BCAST, A));
    t.send('a7', untagged(BCAST, B));
    expect(t.out().h).toEqual([untagged(BCAST, A), tagged(BCAST, B, 7)]);
  });
});

describe('malformed and invalid frames', () => {
  it.each([0, 1, 6, 12, 13])('a %i-byte runt is malformed', (n) => {
    const t = rig({ p1: ACCESS(1), p2: ACCESS(1) });
    t.send('p1', untagged(BCAST, A).subarray(0, n));
    expect(recipients(t.out())).toEqual([]);
    expect(t.drops('p1')).toEqual({ malformed: 1 });
    expect(t.port.p1.rxFrames).toBe(1);
    expect(t.port.p1.rxBytes).toBe(n);
  });

  it('a bare 14-byte header is forwarded', () => {
    const t = rig({ p1: ACCESS(1), p2: ACCESS(1) });
    const f = untagged(BCAST, A).subarray(0, 14);
    t.send('p1', f);
    expect(t.out().p2).toEqual([f]);
  });

  it.each([
    ['multicast', MCAST],
    ['broadcast', BCAST],
    ['all zeros', 0],
    ['group bit only', 0x010000000000],
  ])('a %s source MAC is bad_src_mac', (_n, src) => {
    const t = rig({ p1: ACCESS(1), p2: ACCESS(1) });
    t.send('p1', untagged(BCAST, src));
    expect(recipients(t.out())).toEqual([]);
    expect(t.drops('p1')).toEqual({ bad_src_mac: 1 });
    expect(t.br.fdb.size).toBe(0);
  });

  it.each([
    ['pause', 0x0180c2000001],
    ['LACP', 0x0180c2000002],
    ['802.1X', 0x0180c2000003],
    ['LLDP', 0x0180c200000e],
    ['last of the block', 0x0180c200000f],
  ])('%s (link-local group) is not forwarded', (_n, dst) => {
    const t = rig({ p1: ACCESS(1), p2: ACCESS(1) });
    t.send('p1', untagged(dst, A, 0x8809));
    expect(recipients(t.out())).toEqual([]);
    expect(t.drops('p1')).toEqual({ link_local: 1 });
  });

  it('STP BPDUs (01:80:c2:00:00:00) flood, since this bridge runs no STP', () => {
    const t = rig({ p1: ACCESS(1), p2: ACCESS(1), p3: ACCESS(1) });
    const bpdu = untagged(0x0180c2000000, A, 0x0026);
    t.send('p1', bpdu);
    const o = t.out();
    expect(o.p2).toEqual([bpdu]);
    expect(o.p3).toEqual([bpdu]);
    expect(t.drops('p1')).toEqual({});
  });

  it('01:80:c2:00:00:10, just past the reserved block, floods as ordinary multicast', () => {
    const t = rig({ p1: ACCESS(1), p2: ACCESS(1) });
    t.send('p1', untagged(0x0180c2000010, A));
    expect(recipients(t.out())).toEqual(['p2']);
  });
});

describe('forwarding drops', () => {
  it('a destination learned on the ingress port is dropped (dst_on_ingress)', () => {
    const t = rig({ p1: ACCESS(1), p2: ACCESS(1) });
    t.send('p1', untagged(BCAST, A));
    t.send('p1', untagged(BCAST, B));
    t.flush();
    t.send('p1', untagged(B, A));
    expect(recipients(t.out())).toEqual([]);
    expect(t.drops('p1')).toEqual({ dst_on_ingress: 1 });
  });

  it('a new MAC over the port limit is dropped (port_mac_limit) and not forwarded; known MACs still pass', () => {
    const t = rig({ p1: ACCESS(1), p2: ACCESS(1) }, { maxMacs: { p1: 1 } });
    t.send('p1', untagged(BCAST, A));
    expect(recipients(t.out())).toEqual(['p2']);
    t.send('p1', untagged(BCAST, B));
    t.send('p1', untagged(D, C));
    expect(recipients(t.out())).toEqual([]);
    expect(t.drops('p1')).toEqual({ port_mac_limit: 2 });
    expect(t.br.fdb.lookup(1, B)).toBe(-1);
    expect(t.events.filter((e) => e.event === 'mac_limit')).toEqual([
      { event: 'mac_limit', bridge: 'br0', port: 'p1', vlan: 1, mac: '02:00:00:00:00:02', limit: 1 },
      { event: 'mac_limit', bridge: 'br0', port: 'p1', vlan: 1, mac: '02:00:00:00:00:03', limit: 1 },
    ]);
    t.send('p1', untagged(BCAST, A));
    expect(recipients(t.out())).toEqual(['p2']);
    // Raising the limit at run time lets the new MAC in.
    t.br.setPortMaxMacs('p1', 2);
    t.send('p1', untagged(BCAST, B));
    expect(recipients(t.out())).toEqual(['p2']);
  });

  it('a source MAC statically bound to another port is dropped (static_mac_conflict)', () => {
    const t = rig({ p1: ACCESS(1), p2: ACCESS(1), p3: ACCESS(1) });
    t.br.addStatic(A, 'p2', 1);
    t.send('p1', untagged(BCAST, A));
    expect(recipients(t.out())).toEqual([]);
    expect(t.drops('p1')).toEqual({ static_mac_conflict: 1 });
    expect(t.br.fdb.lookup(1, A)).toBe(t.port.p2.id);
    // From its own port it is fine, and unicast to it goes there.
    t.send('p2', untagged(BCAST, A));
    expect(recipients(t.out())).toEqual(['p1', 'p3']);
    t.send('p3', untagged(A, C));
    expect(recipients(t.out())).toEqual(['p2']);
  });

  it('a tx error counts on the egress port and does not count as sent', () => {
    const t = rig({ p1: ACCESS(1), p2: ACCESS(1), p3: ACCESS(1) });
    t.io.p2.fail = -105; // ENOBUFS
    t.send('p1', untagged(BCAST, A));
    expect(recipients(t.out())).toEqual(['p3']);
    expect(t.drops('p2')).toEqual({ tx_error: 1 });
    expect(t.port.p2.txFrames).toBe(0);
    expect(t.port.p2.txBytes).toBe(0);
    expect(t.port.p3.txFrames).toBe(1);
  });
});

describe('MAC moves and events', () => {
  it('a MAC seen on another port moves there and emits mac_moved', () => {
    const t = rig({ p1: ACCESS(7), p2: ACCESS(7), p3: ACCESS(7) });
    t.send('p1', untagged(BCAST, A));
    t.send('p2', untagged(BCAST, A));
    expect(t.br.fdb.lookup(7, A)).toBe(t.port.p2.id);
    expect(t.br.fdb.counters.moved).toBe(1);
    expect(t.events).toEqual([{ event: 'mac_moved', bridge: 'br0', vlan: 7, mac: '02:00:00:00:00:01', port: 'p2' }]);
    t.flush();
    t.send('p3', untagged(A, C));
    expect(recipients(t.out())).toEqual(['p2']);
  });

  it(`more than ${EVENT_BUDGET_PER_SEC} moves in one sweep period give at most ${EVENT_BUDGET_PER_SEC} events; the rest are counted`, () => {
    const t = rig({ p1: ACCESS(1), p2: ACCESS(1) });
    // A MAC flapping this fast would trip loop detection (loop.test.ts); here the log budget is under test.
    t.br.setLoopProtection({ flapMoves: 0 });
    t.send('p1', untagged(BCAST, A)); // NEW, no event
    const moves = EVENT_BUDGET_PER_SEC + 8; // even: A ends on p1
    for (let i = 0; i < moves; i++) t.send(i % 2 === 0 ? 'p2' : 'p1', untagged(BCAST, A));
    expect(t.br.fdb.counters.moved).toBe(moves);
    expect(t.events.filter((e) => e.event === 'mac_moved')).toHaveLength(EVENT_BUDGET_PER_SEC);
    expect(t.events).toHaveLength(EVENT_BUDGET_PER_SEC);
    expect(t.br.eventsSuppressed).toBe(8);
    expect(t.br.fdb.lookup(1, A)).toBe(t.port.p1.id);

    // port_down is never suppressed.
    t.io.p2.rx.gone(19, 'ENODEV');
    expect(t.events.at(-1)).toEqual({ event: 'port_down', bridge: 'br0', port: 'p2', reason: 'ENODEV' });
    expect(t.br.eventsSuppressed).toBe(8);

    // The next sweep refills the budget.
    t.clock.now += 1000;
    expect(t.br.sweep(t.clock.now)).toBe(0);
    const p3 = new TestIo();
    t.br.addPort('p3', p3);
    p3.inject(untagged(BCAST, A));
    expect(t.events.at(-1)).toMatchObject({ event: 'mac_moved', port: 'p3' });
    expect(t.br.eventsSuppressed).toBe(8);
  });
});

describe('ageing through the bridge', () => {
  it('sweep ages entries (mac_aged) and unicast floods again', () => {
    const t = rig({ p1: ACCESS(1), p2: ACCESS(1), p3: ACCESS(1) }, { ageingSec: 10 });
    t.send('p1', untagged(BCAST, A));
    t.flush();
    t.send('p2', untagged(A, B));
    expect(recipients(t.out())).toEqual(['p1']);
    t.clock.now += 10_000;
    expect(t.br.sweep(t.clock.now)).toBe(2);
    expect(t.events).toEqual([{ event: 'mac_aged', bridge: 'br0', count: 2 }]);
    t.send('p2', untagged(A, B));
    expect(recipients(t.out())).toEqual(['p1', 'p3']);
  });

  it('ageing 0 makes a hub: nothing learned, every unicast floods', () => {
    const t = rig({ p1: ACCESS(1), p2: ACCESS(1), p3: ACCESS(1) }, { ageingSec: 0 });
    t.send('p1', untagged(BCAST, A));
    t.flush();
    t.send('p2', untagged(A, B));
    expect(recipients(t.out())).toEqual(['p1', 'p3']);
    expect(t.br.fdb.size).toBe(0);
    expect(t.drops('p2')).toEqual({});
  });

  it('static entries do not use up maxEntries: learning goes on beside them', () => {
    const t = rig({ p1: ACCESS(1), p2: ACCESS(1) }, { maxEntries: 1 });
    t.br.addStatic(C, 'p2', 1);
    t.send('p1', untagged(BCAST, A));
    expect(recipients(t.out())).toEqual(['p2']);
    expect(t.drops('p1')).toEqual({});
    expect(t.br.fdb.lookup(1, A)).toBe(t.port.p1.id);
    expect(t.br.fdb.lookup(1, C)).toBe(t.port.p2.id);
  });
});

describe('port lifecycle', () => {
  it('removePort flushes its entries (static too), stops flooding to it and closes its I/O', () => {
    const t = rig({ p1: ACCESS(1), p2: ACCESS(1), p3: ACCESS(1) });
    t.send('p2', untagged(BCAST, B));
    t.br.addStatic(D, 'p2', 1);
    t.send('p1', untagged(BCAST, A));
    t.flush();
    expect(t.br.fdb.size).toBe(3);

    t.br.removePort('p2');
    expect(t.io.p2.closed).toBe(1);
    expect(t.br.port('p2')).toBeUndefined();
    expect(t.br.ports.size).toBe(2);
    expect(t.br.fdb.lookup(1, B)).toBe(-1);
    expect(t.br.fdb.lookup(1, D)).toBe(-1);
    expect(t.br.fdb.lookup(1, A)).toBe(t.port.p1.id);

    t.send('p1', untagged(BCAST, A));
    t.send('p1', untagged(B, A));
    const o = t.out();
    expect(o.p2).toEqual([]);
    expect(o.p3).toHaveLength(2);

    // A frame the removed port's device still delivers goes nowhere.
    t.io.p2.inject(untagged(BCAST, C));
    expect(recipients(t.out())).toEqual([]);
    expect(t.br.fdb.lookup(1, C)).toBe(-1);

    // A new port may reuse the id, and inherits nothing.
    const p4 = new TestIo();
    const port4 = t.br.addPort('p4', p4);
    expect(port4.id).toBe(t.port.p2.id);
    expect(t.br.fdb.portCount(port4.id)).toBe(0);
    t.send('p1', untagged(D, A));
    expect(recipients(t.out())).toEqual(['p3']);
    expect(p4.take()).toEqual([untagged(D, A)]);
  });

  it('removePort drops the per-port limit so a reused id starts unlimited', () => {
    const t = rig({ p1: ACCESS(1), p2: ACCESS(1) }, { maxMacs: { p2: 1 } });
    const id = t.port.p2.id;
    t.br.removePort('p2');
    expect(t.br.fdb.portLimit(id)).toBe(0);
  });

  it('portGone marks the port down, flushes its dynamic entries and stops egress to it', () => {
    const t = rig({ p1: ACCESS(1), p2: ACCESS(1), p3: ACCESS(1) });
    t.send('p2', untagged(BCAST, B));
    t.br.addStatic(D, 'p2', 1);
    t.flush();

    t.io.p2.rx.gone(5, 'read: EIO');
    const p2 = t.port.p2;
    expect(p2.up).toBe(false);
    expect(p2.downReason).toBe('read: EIO');
    expect(p2.downEvents).toBe(1);
    expect(t.br.fdb.lookup(1, B)).toBe(-1);
    expect(t.br.fdb.lookup(1, D)).toBe(p2.id); // config is kept until delif
    expect(t.events).toEqual([{ event: 'port_down', bridge: 'br0', port: 'p2', reason: 'read: EIO' }]);

    // Floods skip it; unicast to its static MAC is dropped there as port_down.
    t.send('p1', untagged(BCAST, A));
    t.send('p1', untagged(B, A));
    t.send('p1', untagged(D, A));
    const o = t.out();
    expect(o.p2).toEqual([]);
    expect(o.p3).toHaveLength(2);
    expect(t.drops('p2')).toEqual({ port_down: 1 });
    expect(p2.txFrames).toBe(0);

    // It receives nothing either.
    t.io.p2.inject(untagged(BCAST, C));
    expect(recipients(t.out())).toEqual([]);
    expect(t.br.fdb.lookup(1, C)).toBe(-1);

    // Going down twice is one event.
    t.io.p2.rx.gone(5, 'again');
    expect(p2.downEvents).toBe(1);
    expect(p2.downReason).toBe('read: EIO');
    expect(t.events).toHaveLength(1);
  });

  it('vlanDel flushes the port entries in that VID only and stops flooding it there', () => {
    const t = rig({ t: TRUNK([10, 20]), a10: ACCESS(10), a20: ACCESS(20) });
    t.send('t', tagged(BCAST, A, 10));
    t.send('t', tagged(BCAST, B, 20));
    t.send('a10', untagged(BCAST, C));
    t.br.addStatic(D, 't', 10);
    t.flush();

    expect(t.br.vlanDel('t', 10)).toBe(true);
    expect(t.br.vlanDel('t', 10)).toBe(false);
    expect(t.br.fdb.lookup(10, A)).toBe(-1);
    expect(t.br.fdb.lookup(10, D)).toBe(-1);
    expect(t.br.fdb.lookup(20, B)).toBe(t.port.t.id);
    expect(t.br.fdb.lookup(10, C)).toBe(t.port.a10.id);

    t.send('a10', untagged(BCAST, C));
    t.send('a10', untagged(A, C));
    expect(recipients(t.out())).toEqual([]);
    t.send('t', tagged(BCAST, A, 10));
    expect(t.drops('t')).toEqual({ vlan_not_allowed: 1 });
    t.send('a20', untagged(BCAST, C));
    expect(t.out().t).toEqual([tagged(BCAST, C, 20)]);
  });

  it('vlanAdd takes effect at once for flooding', () => {
    const t = rig({ t: TRUNK([20]), a10: ACCESS(10) });
    t.send('a10', untagged(BCAST, A));
    expect(recipients(t.out())).toEqual([]);
    t.br.vlanAdd('t', 10, {});
    t.send('a10', untagged(BCAST, A));
    expect(t.out().t).toEqual([tagged(BCAST, A, 10)]);
  });

  it('setPortVlan flushes entries of VLANs the port leaves', () => {
    const t = rig({ p: TRUNK([10, 20]), a10: ACCESS(10) });
    t.send('p', tagged(BCAST, A, 10));
    t.send('p', tagged(BCAST, B, 20));
    t.br.setPortVlan('p', VlanPolicy.from(ACCESS(20)));
    expect(t.br.fdb.lookup(10, A)).toBe(-1);
    expect(t.br.fdb.lookup(20, B)).toBe(t.port.p.id);
    expect(t.port.p.vlan.mode()).toBe('access');
  });

  it('control-plane misuse throws with a stable code', () => {
    const t = rig({ p1: ACCESS(1) });
    const code = (fn: () => void): string | undefined => {
      try {
        fn();
      } catch (e) {
        expect(e).toBeInstanceOf(BridgeError);
        return (e as BridgeError).code;
      }
      return undefined;
    };
    expect(code(() => t.br.addPort('p1', new TestIo()))).toBe('EEXIST');
    expect(code(() => t.br.removePort('nope'))).toBe('ENOENT');
    expect(code(() => t.br.vlanAdd('nope', 5, {}))).toBe('ENOENT');
    expect(code(() => t.br.addStatic(A, 'p1', 2))).toBe('EVLAN');
    expect(t.br.fdb.size).toBe(0);
  });

  it('close removes and closes every port', () => {
    const t = rig({ p1: ACCESS(1), p2: ACCESS(1) });
    t.br.close();
    expect(t.br.ports.size).toBe(0);
    expect(t.io.p1.closed).toBe(1);
    expect(t.io.p2.closed).toBe(1);
  });
});

describe('counters', () => {
  it('rx counts what arrived; tx counts what was sent, +4/-4 with tag changes', () => {
    const t = rig({ a1: ACCESS(10), a2: ACCESS(10), tr: TRUNK([10]) });
    t.send('a1', untagged(BCAST, A)); // 60 in; a2 60, tr 64
    t.send('tr', tagged(BCAST, B, 10)); // 64 in; a1 60, a2 60
    t.send('a1', untagged(B, A, IPV4, 100)); // 114 in; tr 118 (known)
    t.send('a1', untagged(BCAST, A).subarray(0, 10)); // runt: counted on rx, dropped

    const c = (n: string) => t.port[n].counters();
    expect(c('a1')).toEqual({ rxFrames: 3, rxBytes: 60 + 114 + 10, txFrames: 1, txBytes: 60, drops: { malformed: 1 } });
    expect(c('a2')).toEqual({ rxFrames: 0, rxBytes: 0, txFrames: 2, txBytes: 120, drops: {} });
    expect(c('tr')).toEqual({ rxFrames: 1, rxBytes: 64, txFrames: 2, txBytes: 64 + 118, drops: {} });

    // tx bytes are exactly the bytes handed to the device.
    const o = t.out();
    for (const n of ['a1', 'a2', 'tr']) {
      expect(o[n].length).toBe(t.port[n].txFrames);
      expect(o[n].reduce((s, f) => s + f.length, 0)).toBe(t.port[n].txBytes);
    }
    expect(t.port.a1.drops[Drop.malformed]).toBe(1);
  });

  it('the learn results seen by the bridge are the FDB verbs', () => {
    const t = rig({ p1: ACCESS(1), p2: ACCESS(1) });
    t.send('p1', untagged(BCAST, A));
    expect(t.br.fdb.learn(1, A, t.port.p1.id, t.clock.now)).toBe(Learn.REFRESHED);
    expect(t.br.fdb.counters.learned).toBe(1);
  });
});

describe('re-entrant ports', () => {
  it('a frame a port sends while the bridge is forwarding waits until the current frame is done', () => {
    // Trunks around an access port, so the nested frame's per-frame state (untagged,
    // PCP 0) differs from the outer one's (tagged, PCP 5).
    const { io, send, out } = rig({ a: TRUNK([10]), r: ACCESS(10), c: TRUNK([10]) });
    // "r" answers every broadcast at once, from inside its send(), as the router does.
    const reply = untagged(A, D);
    const origSend2 = io.r.send2.bind(io.r);
    let answered = false;
    io.r.send2 = (a, aoff, alen, b, boff, blen) => {
      const n = origSend2(a, aoff, alen, b, boff, blen);
      if (!answered) {
        answered = true;
        io.r.rx.frame(reply, 0, reply.length);
      }
      return n;
    };
    const bcast = tagged(BCAST, A, 0xa000 | 10);
    send('a', bcast);
    const o = out();
    // The flood reached both other ports correctly, untouched by the reply...
    expect(o.r).toEqual([untagged(BCAST, A)]);
    expect(o.c[0]).toEqual(bcast);
    // ...and the reply, forwarded afterwards, went to its destination only, tagged for the trunk.
    expect(o.a.map((f) => Uint8Array.from(f))).toEqual([tagged(A, D, 10)]);
    expect(o.c.length).toBe(1);
  });
});

describe('link down and up', () => {
  it('a port whose link starts down forwards nothing until it comes up, and is flushed when it goes down again', () => {
    const { br, io, send, out, events } = rig({ a: ACCESS(10), b: ACCESS(10) });
    const c = new TestIo();
    Object.defineProperty(c, 'linkUp', { value: false });
    const port = br.addPort('c', c, { vlan: VlanPolicy.from(ACCESS(10)) });
    expect(port.up).toBe(false);
    expect(port.downReason).toBe('link down');
    expect(events).toEqual([]); // starting down is not an event
    send('a', untagged(BCAST, A));
    expect(c.take()).toEqual([]);
    c.rx.link(true, 'client connected');
    expect(port.up).toBe(true);
    expect(events.at(-1)).toEqual({ event: 'port_up', bridge: 'br0', port: 'c', reason: 'client connected' });
    c.inject(untagged(A, C));
    expect(out().a).toHaveLength(1);
    expect(br.fdb.lookup(10, C)).toBe(port.id);
    c.rx.link(false, 'client disconnected');
    expect(port.up).toBe(false);
    expect(br.fdb.lookup(10, C)).toBe(-1);
    expect(events.at(-1)).toMatchObject({ event: 'port_down', port: 'c', reason: 'client disconnected' });
    send('a', untagged(BCAST, A));
    expect(c.take()).toEqual([]);
    expect(io.b.take()).toHaveLength(1);
  });
});
