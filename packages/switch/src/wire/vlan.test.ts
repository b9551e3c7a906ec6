import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ETHERTYPE } from './ethernet.js';
import {
  innerType, isTagTpid, tci, tciPrio, tciVid, VID_MAX, VID_RESERVED, VLAN, VLAN_HLEN, VLAN_TAGGED_HLEN,
  writeTaggedHeader,
} from './vlan.js';

/*
 * A hand-built 802.1Q frame: ff:ff:ff:ff:ff:ff <- 52:54:00:12:34:56, TPID 0x8100,
 * TCI 0xb064 = PCP 5, DEI 1, VID 100, then ARP.
 */
const TAGGED = Uint8Array.from([
  0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
  0x52, 0x54, 0x00, 0x12, 0x34, 0x56,
  0x81, 0x00, 0xb0, 0x64,
  0x08, 0x06,
  0x00, 0x01,
]);

function at(off: number, bytes: Uint8Array): Uint8Array {
  const buf = new Uint8Array(off + bytes.length + 8).fill(0xa5);
  buf.set(bytes, off);
  return buf;
}

describe('802.1Q constants', () => {
  it('lays the tag out after the source MAC', () => {
    expect(VLAN).toEqual({ TPID: 12, TCI: 14, INNER_TYPE: 16 });
    expect(VLAN_HLEN).toBe(4);
    expect(VLAN_TAGGED_HLEN).toBe(18);
    expect(VID_MAX).toBe(4094);
    expect(VID_RESERVED).toBe(4095);
  });

  it('recognises C-tag, S-tag and 0x9100 TPIDs and nothing else', () => {
    expect(isTagTpid(ETHERTYPE.VLAN)).toBe(true);
    expect(isTagTpid(ETHERTYPE.QINQ)).toBe(true);
    expect(isTagTpid(ETHERTYPE.QINQ_OLD)).toBe(true);
    expect(isTagTpid(ETHERTYPE.IPV4)).toBe(false);
    expect(isTagTpid(ETHERTYPE.ARP)).toBe(false);
    expect(isTagTpid(ETHERTYPE.IPV6)).toBe(false);
    expect(isTagTpid(0x8101)).toBe(false);
    expect(isTagTpid(0x0081)).toBe(false);
  });
});

describe('TCI accessors', () => {
  it('read the TCI and inner EtherType of a tagged frame', () => {
    expect(tci(TAGGED, 0)).toBe(0xb064);
    expect(tciVid(0xb064)).toBe(100);
    expect(tciPrio(0xb064)).toBe(0xb000); // PCP 5 (0xa000) | DEI (0x1000), in place
    expect(innerType(TAGGED, 0)).toBe(ETHERTYPE.ARP);
  });

  it('read the same at a non-zero offset', () => {
    const buf = at(11, TAGGED);
    expect(tci(buf, 11)).toBe(0xb064);
    expect(innerType(buf, 11)).toBe(0x0806);
  });

  it('split VID and PCP/DEI at the edges', () => {
    expect(tciVid(0x0000)).toBe(0);
    expect(tciPrio(0x0000)).toBe(0);
    expect(tciVid(0xffff)).toBe(4095);
    expect(tciPrio(0xffff)).toBe(0xf000);
    expect(tciVid(0xe001)).toBe(1);
    expect(tciPrio(0xe001)).toBe(0xe000);
    expect(tciVid(0x1ffe)).toBe(4094);
    expect(tciPrio(0x1ffe)).toBe(0x1000); // DEI only
  });

  it('prio | vid rebuilds any TCI', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffff }), (t) => {
        expect(tciPrio(t) | tciVid(t)).toBe(t);
        expect(tciPrio(t) & tciVid(t)).toBe(0);
      }),
    );
  });
});

describe('writeTaggedHeader', () => {
  it('writes dst, src and a C-tag into hdr[0..16) and nothing past it', () => {
    const frame = at(7, Uint8Array.from([
      0x02, 0, 0, 0, 0, 0x02,
      0x02, 0, 0, 0, 0, 0x01,
      0x08, 0x00, 0x45, 0x00,
    ]));
    const hdr = new Uint8Array(20).fill(0xa5);
    writeTaggedHeader(hdr, frame, 7, 0xa000 | 200);
    expect([...hdr.subarray(0, 16)]).toEqual([
      0x02, 0, 0, 0, 0, 0x02,
      0x02, 0, 0, 0, 0, 0x01,
      0x81, 0x00, 0xa0, 0xc8,
    ]);
    expect([...hdr.subarray(16)]).toEqual([0xa5, 0xa5, 0xa5, 0xa5]);
    // Reading the header back gives the TCI written.
    expect(tci(hdr, 0)).toBe(0xa0c8);
  });

  it('replaces any TPID in the source frame with 0x8100 (S-tag, existing C-tag)', () => {
    const frame = Uint8Array.from(TAGGED);
    frame[12] = 0x88;
    frame[13] = 0xa8;
    const hdr = new Uint8Array(16);
    writeTaggedHeader(hdr, frame, 0, 4094);
    expect([...hdr.subarray(12, 16)]).toEqual([0x81, 0x00, 0x0f, 0xfe]);
    expect([...hdr.subarray(0, 12)]).toEqual([...TAGGED.subarray(0, 12)]);
  });

  it('round-trips any TCI and leaves the frame untouched', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffff }), fc.uint8Array({ minLength: 18, maxLength: 40 }), (t, frame) => {
        const copy = Uint8Array.from(frame);
        const hdr = new Uint8Array(16).fill(0xa5);
        writeTaggedHeader(hdr, frame, 2, t);
        expect(tci(hdr, 0)).toBe(t);
        expect([...hdr.subarray(0, 12)]).toEqual([...frame.subarray(2, 14)]);
        expect(frame).toEqual(copy);
      }),
    );
  });
});
