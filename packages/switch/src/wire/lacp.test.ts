/*
 * The LACPDU view and builder: a round trip, the byte layout 802.1AX fixes (checked
 * against offsets, as Wireshark dissects them), each malformed shape, and fast-check:
 * random and mutated frames never throw, never read outside the frame, and a frame
 * that passes reads back what was written.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { outside, tracked } from '../testing/tracked.js';
import {
  LACP_FRAME_LEN, LACP_STATE, LACPDU_MALFORMED, LACPDU_NOT_SLOW, LACPDU_OK, LACPDU_OTHER_SLOW, type LacpInfo,
  lacpStateText, newLacpduView, readLacpdu, writeLacpFrame,
} from './lacp.js';
import { readMac } from './ethernet.js';

const actor: LacpInfo = { sysPrio: 65534, system: 0x0200_0000_0a01, key: 7, portPrio: 255, port: 2, state: 0x3f };
const partner: LacpInfo = { sysPrio: 100, system: 0xaabb_ccdd_eeff, key: 0x1234, portPrio: 1, port: 0x0102, state: 0x0d };

function frame(): Uint8Array {
  const b = new Uint8Array(LACP_FRAME_LEN);
  expect(writeLacpFrame(b, 0, 0x0200_0000_0a02, actor, partner)).toBe(LACP_FRAME_LEN);
  return b;
}

describe('LACPDU', () => {
  it('writes the 802.1AX layout and reads it back', () => {
    const b = frame();
    expect(readMac(b, 0)).toBe(0x0180c2000002);
    expect(readMac(b, 6)).toBe(0x0200_0000_0a02);
    expect([b[12], b[13], b[14], b[15]]).toEqual([0x88, 0x09, 1, 1]);
    // Actor TLV at 16: type 1, length 20, system priority, system, key, port priority, port, state.
    expect([b[16], b[17], b[18], b[19]]).toEqual([1, 20, 0xff, 0xfe]);
    expect(readMac(b, 20)).toBe(actor.system);
    expect(b[32]).toBe(0x3f);
    // Partner TLV at 36, collector at 56, terminator at 72, 110 bytes in all.
    expect([b[36], b[37], b[56], b[57], b[72], b[73]]).toEqual([2, 20, 3, 16, 0, 0]);
    expect(b.length - 14).toBe(110);
    const v = newLacpduView();
    expect(readLacpdu(b, 0, b.length, v)).toBe(LACPDU_OK);
    expect(v.actor).toEqual(actor);
    expect(v.partner).toEqual(partner);
  });

  it('tells data, other slow protocols and malformed LACPDUs apart', () => {
    const v = newLacpduView();
    const data = frame();
    data[12] = 0x08; data[13] = 0x00;
    expect(readLacpdu(data, 0, data.length, v)).toBe(LACPDU_NOT_SLOW);
    const marker = frame();
    marker[14] = 2;
    expect(readLacpdu(marker, 0, marker.length, v)).toBe(LACPDU_OTHER_SLOW);
    expect(readLacpdu(frame(), 0, 14, v)).toBe(LACPDU_MALFORMED);
    expect(readLacpdu(frame(), 0, 14 + 41, v)).toBe(LACPDU_MALFORMED); // partner TLV cut
    expect(readLacpdu(frame(), 0, 14 + 42, v)).toBe(LACPDU_OK); // what a receiver needs
    for (const [at, val] of [[15, 0], [16, 2], [17, 19], [36, 1], [37, 21]]) {
      const b = frame();
      b[at] = val;
      expect(readLacpdu(b, 0, b.length, v), `byte ${at} = ${val}`).toBe(LACPDU_MALFORMED);
    }
  });

  it('names state bits', () => {
    expect(lacpStateText(LACP_STATE.ACTIVITY | LACP_STATE.SYNC | LACP_STATE.DISTRIBUTING)).toBe('activity,synchronized,distributing');
  });

  it('never throws nor reads outside the frame, and what passes reads back (fast-check)', () => {
    const results = new Set([LACPDU_OK, LACPDU_NOT_SLOW, LACPDU_OTHER_SLOW, LACPDU_MALFORMED]);
    const mutated = fc.tuple(fc.array(fc.tuple(fc.nat(LACP_FRAME_LEN - 1), fc.nat(255)), { maxLength: 8 }), fc.nat(LACP_FRAME_LEN))
      .map(([edits, len]) => {
        const b = frame();
        for (const [i, x] of edits) b[i] = x;
        return b.subarray(0, len);
      });
    const random = fc.uint8Array({ maxLength: 200 }).map((b) => {
      if (b.length >= 14) { b[12] = 0x88; b[13] = 0x09; }
      return b;
    });
    fc.assert(fc.property(fc.oneof(mutated, random), fc.nat(7), (f, pad) => {
      const buf = new Uint8Array(pad + f.length + 9).fill(0x5a);
      buf.set(f, pad);
      const t = tracked(buf);
      const v = newLacpduView();
      const r = readLacpdu(t.view, pad, f.length, v);
      expect(results.has(r)).toBe(true);
      expect(outside(t.reads, pad, pad + f.length)).toEqual([]);
      if (r === LACPDU_OK) {
        // The values are the frame's bytes: write them back and read the same view.
        const again = new Uint8Array(LACP_FRAME_LEN);
        writeLacpFrame(again, 0, readMac(f, 6), v.actor, v.partner);
        const w = newLacpduView();
        expect(readLacpdu(again, 0, again.length, w)).toBe(LACPDU_OK);
        expect(w).toEqual(v);
      }
    }), { numRuns: 3000 });
  });
});
