import { describe, expect, it } from 'vitest';
import { TestIo } from './testing/test-io.js';
import { Bridge, type BridgeEvent } from './bridge.js';
import { Drop } from './drop.js';
import { writeMac } from './wire/ethernet.js';
import { BPDU_INVALID, BPDU_NONE, BPDU_VALID, bpduKind } from './wire/stp.js';

const A = 0x020000000001;
const B = 0x020000000002;
const BCAST = 0xffffffffffff;
const STP = 0x0180c2000000;

function eth(dst: number, src: number, type: number, body: number[] | Uint8Array = new Uint8Array(46)): Uint8Array {
  const f = new Uint8Array(14 + body.length);
  writeMac(f, 0, dst);
  writeMac(f, 6, src);
  f[12] = type >> 8;
  f[13] = type & 0xff;
  f.set(body, 14);
  return f;
}

/** An 802.3 frame to the bridge group address: LLC 42 42 03, then the BPDU. */
function bpdu(type = 0x00, bodyLen = 35, llc = [0x42, 0x42, 0x03], src = A): Uint8Array {
  const b = new Uint8Array(3 + bodyLen);
  b.set(llc, 0);
  if (bodyLen >= 4) b[6] = type; // protocol id 0000, version 0 (or 2), type
  return eth(STP, src, 3 + bodyLen, b);
}

function setup(names: string[], opts: { bpduGuard?: string[] } = {}) {
  let now = 1000;
  const events: BridgeEvent[] = [];
  const br = new Bridge('br0', { clock: () => now, onEvent: (e) => events.push(e) });
  const io: Record<string, TestIo> = {};
  for (const n of names) {
    io[n] = new TestIo();
    br.addPort(n, io[n], { bpduGuard: opts.bpduGuard?.includes(n) });
  }
  const send = (p: string, f: Uint8Array): void => io[p].rx.frame(f, 0, f.length);
  const take = (): Record<string, number> => Object.fromEntries(names.map((n) => [n, io[n].take().length]));
  return { br, io, events, send, take, tick: (ms: number) => { now += ms; }, now: () => now };
}

describe('wire/stp: what a BPDU guard takes for a BPDU', () => {
  it('takes configuration, TCN and RST BPDUs, also behind one 802.1Q tag', () => {
    for (const f of [bpdu(0x00, 35), bpdu(0x80, 4), bpdu(0x02, 36), bpdu(0x00, 60)]) expect(bpduKind(f, 0, f.length)).toBe(BPDU_VALID);
    const plain = bpdu(0x00, 35);
    const tagged = new Uint8Array(plain.length + 4);
    tagged.set(plain.subarray(0, 12), 0);
    tagged.set([0x81, 0x00, 0x00, 0x0a], 12);
    tagged.set(plain.subarray(12), 16);
    expect(bpduKind(tagged, 0, tagged.length)).toBe(BPDU_VALID);
  });

  it('calls garbage to the bridge group address invalid, and everything else none of its business', () => {
    const garbage = [
      bpdu(0x00, 20), // a configuration BPDU needs 35 bytes
      bpdu(0x02, 30), // an RST BPDU 36
      bpdu(0x55, 35), // unknown type
      bpdu(0x00, 35, [0xaa, 0xaa, 0x03]), // SNAP, not STP's LLC
      bpdu(0x00, 2), // truncated before the type
      eth(STP, A, 0x0800), // Ethernet II to the STP address
    ];
    const proto = bpdu(0x00, 35);
    proto[17] = 1; // protocol identifier must be 0
    garbage.push(proto);
    for (const f of garbage) expect(bpduKind(f, 0, f.length)).toBe(BPDU_INVALID);
    const tagOnly = eth(STP, A, 0x8100, []);
    expect(bpduKind(tagOnly, 0, 14)).toBe(BPDU_INVALID);
    for (const dst of [BCAST, B, 0x0180c2000001, 0x0180c2000010]) {
      const f = bpdu();
      writeMac(f, 0, dst);
      expect(bpduKind(f, 0, f.length)).toBe(BPDU_NONE);
    }
    expect(bpduKind(new Uint8Array(10), 0, 10)).toBe(BPDU_NONE);
  });
});

describe('BPDU guard', () => {
  it('shuts the port on a BPDU: dropped in and out, logged once, counted, back after the recovery time', () => {
    const t = setup(['vm1', 'vm2', 'vm3'], { bpduGuard: ['vm1'] });
    t.br.setLoopProtection({ bpduRecoverySec: 5 });
    t.send('vm1', bpdu());
    expect(t.take()).toEqual({ vm1: 0, vm2: 0, vm3: 0 }); // not flooded
    const p = t.br.port('vm1')!;
    expect(p.shut).toBe(Drop.bpdu_guard);
    expect(p.shutUntil).toBe(t.now() + 5000);
    expect(p.bpduShutdowns).toBe(1);
    expect(t.events.filter((e) => e.event === 'port_shut')).toEqual([{ event: 'port_shut', bridge: 'br0', port: 'vm1', reason: 'bpdu_guard', holdSec: 5 }]);

    // Shut: what it sends and what would go to it are dropped.
    t.send('vm1', eth(BCAST, A, 0x0800));
    t.send('vm1', bpdu());
    t.send('vm2', eth(BCAST, B, 0x0800));
    expect(t.take()).toEqual({ vm1: 0, vm2: 0, vm3: 1 });
    expect(p.drops[Drop.bpdu_guard]).toBe(3);
    expect(p.drops[Drop.port_shut]).toBe(1);
    expect(p.bpduShutdowns).toBe(1); // the second BPDU met a shut port
    expect(t.events.filter((e) => e.event === 'port_shut')).toHaveLength(1);

    t.tick(4000);
    t.br.sweep(t.now());
    expect(p.shut).toBe(Drop.bpdu_guard);
    t.tick(1000);
    t.br.sweep(t.now());
    expect(p.shut).toBe(0);
    expect(t.events.at(-1)).toEqual({ event: 'port_recovered', bridge: 'br0', port: 'vm1', reason: 'bpdu_guard', dropped: 4 });
    t.send('vm1', eth(BCAST, A, 0x0800));
    expect(t.take()).toEqual({ vm1: 0, vm2: 1, vm3: 1 });
  });

  it('drops garbage to the bridge group address as bpdu_invalid without shutting; ports without the guard flood BPDUs', () => {
    const t = setup(['vm1', 'vm2', 'up'], { bpduGuard: ['vm1', 'vm2'] });
    t.send('vm1', bpdu(0x00, 10));
    t.send('vm1', eth(STP, A, 0x0800));
    expect(t.take()).toEqual({ vm1: 0, vm2: 0, up: 0 });
    const p = t.br.port('vm1')!;
    expect(p.drops[Drop.bpdu_invalid]).toBe(2);
    expect(p.shut).toBe(0);
    // Other multicast passes the guard.
    t.send('vm1', eth(0x01005e000001, A, 0x0800));
    expect(t.take()).toEqual({ vm1: 0, vm2: 1, up: 1 });
    // An unguarded port's BPDU floods, and does not shut the guarded ports it reaches.
    t.send('up', bpdu(0x00, 35, undefined, B));
    expect(t.take()).toEqual({ vm1: 1, vm2: 1, up: 0 });
    expect(t.br.port('vm2')!.shut).toBe(0);
  });

  it('is switched at runtime, and recoverPort opens a shut port at once', () => {
    const t = setup(['vm1', 'vm2']);
    t.send('vm1', bpdu());
    expect(t.take()).toEqual({ vm1: 0, vm2: 1 });
    t.br.setPortBpduGuard('vm1', true);
    t.send('vm1', bpdu());
    expect(t.br.port('vm1')!.shut).toBe(Drop.bpdu_guard);
    expect(t.br.recoverPort('vm1')).toBe(true);
    expect(t.br.recoverPort('vm1')).toBe(false);
    t.br.setPortBpduGuard('vm1', false);
    t.send('vm1', bpdu());
    expect(t.take()).toEqual({ vm1: 0, vm2: 1 });
    expect(t.br.loop.shutCount).toBe(0);
  });
});

describe('MAC-flap loop detection', () => {
  /** A on vmA; then A's broadcasts come back alternately on L1 and L2, as round a loop through both. */
  function loop(moves: number, stepMs = 1) {
    const t = setup(['vmA', 'vmB', 'L1', 'L2']);
    t.send('vmA', eth(BCAST, A, 0x0806));
    t.send('vmB', eth(BCAST, B, 0x0806));
    t.take();
    for (let i = 0; i < moves; i++) {
      t.tick(stepMs);
      t.send(i % 2 === 0 ? 'L2' : 'L1', eth(BCAST, A, 0x0806));
    }
    return t;
  }

  it('blocks the loop port a MAC flaps to more than flapMoves times a second, never its home', () => {
    const t = loop(11);
    const shut = ['vmA', 'vmB', 'L1', 'L2'].filter((n) => t.br.port(n)!.shut !== 0);
    expect(shut).toEqual(['L2']); // the 11th move was to L2 (L2, L1, L2, ...)
    const l1 = t.br.port('L2')!;
    expect(l1.shut).toBe(Drop.loop_blocked);
    expect(l1.loopBlocks).toBe(1);
    expect(l1.drops[Drop.loop_blocked]).toBe(1); // the frame that tripped it
    // A is back home, and nothing is learned on the blocked port.
    expect(t.br.fdb.lookup(1, A)).toBe(t.br.port('vmA')!.id);
    expect(t.br.fdb.portCount(l1.id)).toBe(0);
    const ev = t.events.find((e) => e.event === 'port_shut');
    expect(ev).toEqual({ event: 'port_shut', bridge: 'br0', port: 'L2', reason: 'loop', holdSec: 30, mac: '02:00:00:00:00:01', vlan: 1, moves: 11, home: 'vmA' });
    // Nothing reaches the blocked port; the others keep talking.
    t.take();
    t.send('vmB', eth(BCAST, B, 0x0806));
    expect(t.take()).toEqual({ vmA: 1, vmB: 0, L1: 1, L2: 0 });
    expect(l1.drops[Drop.port_shut]).toBe(1);
    t.send('vmB', eth(A, B, 0x0800));
    expect(t.take()).toEqual({ vmA: 1, vmB: 0, L1: 0, L2: 0 });
  });

  it('does not block the loop\'s other port on the last trips (flap windows restart at a block)', () => {
    // A and B both circle the loop; A trips it (11th move, to L2) when B has made 10 moves, its last to L1.
    const t = setup(['vmA', 'vmB', 'L1', 'L2']);
    t.send('vmA', eth(BCAST, A, 0x0806));
    t.send('vmB', eth(BCAST, B, 0x0806));
    for (let i = 0; i < 11; i++) {
      t.tick(1);
      t.send(i % 2 === 0 ? 'L2' : 'L1', eth(BCAST, A, 0x0806));
      if (i < 10) t.send(i % 2 === 0 ? 'L2' : 'L1', eth(BCAST, B, 0x0806));
    }
    expect(t.br.port('L2')!.shut).toBe(Drop.loop_blocked);
    // B's last trip, then B speaks from home: its 11th move, but in a window opened after the block.
    t.tick(1);
    t.send('L1', eth(BCAST, B, 0x0806));
    t.tick(1);
    t.send('vmB', eth(BCAST, B, 0x0806));
    expect(t.br.port('L1')!.shut).toBe(0);
    expect(t.br.port('vmB')!.shut).toBe(0);
    expect(t.br.fdb.lookup(1, B)).toBe(t.br.port('vmB')!.id);
    expect(t.br.fdb.lookup(1, A)).toBe(t.br.port('vmA')!.id);
  });

  it('blocks the port a MAC left when it flaps back home', () => {
    const t = setup(['vmA', 'L1']);
    t.send('vmA', eth(BCAST, A, 0x0806));
    for (let i = 0; i < 11; i++) {
      t.tick(1);
      t.send(i % 2 === 0 ? 'L1' : 'vmA', eth(BCAST, A, 0x0806));
    }
    expect(t.br.port('L1')!.shut).toBe(Drop.loop_blocked);
    expect(t.br.port('vmA')!.shut).toBe(0);
  });

  it('lets a MAC move flapMoves times a second, and any number of times slower', () => {
    expect(loop(10).br.loop.shutCount).toBe(0);
    expect(loop(40, 101).br.loop.shutCount).toBe(0); // under 10 moves in every second
    const t = setup(['vm1', 'vm2']);
    t.send('vm1', eth(BCAST, A, 0x0806));
    t.tick(5000);
    t.send('vm2', eth(BCAST, A, 0x0806)); // a migration
    expect(t.br.fdb.lookup(1, A)).toBe(t.br.port('vm2')!.id);
    expect(t.br.loop.shutCount).toBe(0);
  });

  it('is configurable: the threshold, the hold time, and off (flapMoves 0)', () => {
    const t = setup(['vmA', 'L1', 'L2']);
    t.br.setLoopProtection({ flapMoves: 3, flapHoldSec: 2 });
    t.send('vmA', eth(BCAST, A, 0x0806));
    for (let i = 0; i < 4; i++) {
      t.tick(1);
      t.send(i % 2 === 0 ? 'L2' : 'L1', eth(BCAST, A, 0x0806));
    }
    const l1 = t.br.port('L1')!; // moves: L2, L1, L2, L1: the 4th
    expect(l1.shut).toBe(Drop.loop_blocked);
    expect(l1.shutUntil).toBe(t.now() + 2000);
    t.tick(2000);
    t.br.sweep(t.now());
    expect(l1.shut).toBe(0);
    expect(t.events.at(-1)).toMatchObject({ event: 'port_recovered', port: 'L1', reason: 'loop' });

    const off = loop(0);
    off.br.setLoopProtection({ flapMoves: 0 });
    for (let i = 0; i < 100; i++) {
      off.tick(1);
      off.send(i % 2 === 0 ? 'L2' : 'L1', eth(BCAST, A, 0x0806));
    }
    expect(off.br.loop.shutCount).toBe(0);
    expect(off.br.fdb.counters.moved).toBe(100);
  });

  it('forgets a shut port that is removed', () => {
    const t = loop(11);
    t.br.removePort('L2');
    expect(t.br.loop.shutCount).toBe(0);
  });
});
