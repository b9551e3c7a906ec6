import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  copyVnetHeader, VNET, VNET_F_NEEDS_CSUM, VNET_GSO, VNET_HDR_LEN, vnetClearNeedsCsum, vnetCsumOffset, vnetCsumStart,
  vnetFlags, vnetGso, vnetGsoSize, vnetGsoType, vnetHdrLen, vnetNeedsCsum, vnetWork, writeVnet,
} from './vnet.js';

/*
 * What Linux hands a virtio NIC for a TCP/IPv4 GSO super-frame with a 20-byte TCP
 * header and MSS 1448: NEEDS_CSUM, GSO_TCPV4, hdr_len 54, gso_size 1448,
 * csum_start 34 (the TCP header), csum_offset 16 (its checksum field).
 */
const TSO = Uint8Array.from([0x01, 0x01, 0x36, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00]);

/** The captured header at `off` of a 0xa5-filled buffer, 8 guard bytes after it. */
const tsoAt = (off: number): Uint8Array => {
  const buf = new Uint8Array(off + VNET_HDR_LEN + 8).fill(0xa5);
  buf.set(TSO, off);
  return buf;
};

describe('virtio_net_hdr layout', () => {
  it('is struct virtio_net_hdr without num_buffers, as netdev configures its devices', () => {
    expect(VNET).toEqual({ FLAGS: 0, GSO_TYPE: 1, HDR_LEN: 2, GSO_SIZE: 4, CSUM_START: 6, CSUM_OFFSET: 8 });
    expect(VNET_HDR_LEN).toBe(10);
    expect(VNET_F_NEEDS_CSUM).toBe(1);
    expect(VNET_GSO).toEqual({ NONE: 0, TCPV4: 1, UDP: 3, TCPV6: 4, UDP_L4: 5, ECN: 0x80 });
  });
});

describe('accessors over (buf, h)', () => {
  it('read the little-endian fields of a captured header at a non-zero offset', () => {
    const buf = tsoAt(7);
    expect(vnetFlags(buf, 7)).toBe(VNET_F_NEEDS_CSUM);
    expect(vnetGsoType(buf, 7)).toBe(VNET_GSO.TCPV4);
    expect(vnetHdrLen(buf, 7)).toBe(54);
    expect(vnetGsoSize(buf, 7)).toBe(1448);
    expect(vnetCsumStart(buf, 7)).toBe(34);
    expect(vnetCsumOffset(buf, 7)).toBe(16);
    expect(vnetNeedsCsum(buf, 7)).toBe(true);
    expect(vnetWork(buf, 7)).toBe(true);
    expect(vnetGso(buf, 7)).toBe(true);
  });

  it('an all-zero header is a complete frame; NEEDS_CSUM alone or GSO alone is work', () => {
    const h = new Uint8Array(VNET_HDR_LEN);
    expect(vnetWork(h, 0)).toBe(false);
    expect(vnetGso(h, 0)).toBe(false);
    h[VNET.FLAGS] = VNET_F_NEEDS_CSUM;
    expect(vnetWork(h, 0)).toBe(true);
    expect(vnetGso(h, 0)).toBe(false);
    h[VNET.FLAGS] = 0x02; // DATA_VALID: no work
    expect(vnetWork(h, 0)).toBe(false);
    h[VNET.GSO_TYPE] = VNET_GSO.UDP_L4 | VNET_GSO.ECN;
    expect(vnetWork(h, 0)).toBe(true);
    expect(vnetGso(h, 0)).toBe(true);
  });

  it('vnetClearNeedsCsum clears that bit only', () => {
    const buf = tsoAt(3);
    buf[3] |= 0x02;
    vnetClearNeedsCsum(buf, 3);
    expect(vnetFlags(buf, 3)).toBe(0x02);
    expect([...buf.subarray(4, 13)]).toEqual([...TSO.subarray(1)]);
  });
});

describe('writeVnet', () => {
  it('writes every byte of the header and nothing around it', () => {
    const buf = new Uint8Array(5 + VNET_HDR_LEN + 5).fill(0xa5);
    writeVnet(buf, 5, VNET_F_NEEDS_CSUM, VNET_GSO.TCPV4, 54, 1448, 34, 16);
    expect([...buf.subarray(5, 15)]).toEqual([...TSO]);
    expect([...buf.subarray(0, 5), ...buf.subarray(15)].every((b) => b === 0xa5)).toBe(true);
  });

  it('round-trips any field values', () => {
    const u16 = fc.integer({ min: 0, max: 0xffff });
    const u8 = fc.integer({ min: 0, max: 0xff });
    fc.assert(fc.property(u8, u8, u16, u16, u16, u16, fc.nat(16), (f, g, hl, gs, cs, co, off) => {
      const buf = new Uint8Array(off + VNET_HDR_LEN).fill(0xa5);
      writeVnet(buf, off, f, g, hl, gs, cs, co);
      expect([vnetFlags(buf, off), vnetGsoType(buf, off), vnetHdrLen(buf, off), vnetGsoSize(buf, off),
        vnetCsumStart(buf, off), vnetCsumOffset(buf, off)]).toEqual([f, g, hl, gs, cs, co]);
    }));
  });
});

describe('copyVnetHeader', () => {
  it('copies as it is with delta 0, and never writes the source', () => {
    const src = tsoAt(9);
    const copy = Uint8Array.from(src);
    const s = new Uint8Array(VNET_HDR_LEN + 4).fill(0xa5);
    copyVnetHeader(s, src, 9, 0);
    expect([...s.subarray(0, VNET_HDR_LEN)]).toEqual([...TSO]);
    expect(s[VNET_HDR_LEN]).toBe(0xa5);
    copyVnetHeader(s, src, 9, -4);
    expect(src).toEqual(copy);
  });

  it('moves hdr_len and csum_start by a tag, gso_size and csum_offset stay', () => {
    const s = new Uint8Array(VNET_HDR_LEN);
    copyVnetHeader(s, TSO, 0, 4);
    expect(vnetHdrLen(s, 0)).toBe(58);
    expect(vnetCsumStart(s, 0)).toBe(38);
    expect(vnetGsoSize(s, 0)).toBe(1448);
    expect(vnetCsumOffset(s, 0)).toBe(16);
    copyVnetHeader(s, TSO, 0, -4);
    expect(vnetHdrLen(s, 0)).toBe(50);
    expect(vnetCsumStart(s, 0)).toBe(30);
  });

  it('leaves an unset hdr_len, and csum_start without NEEDS_CSUM, alone; never goes below 0', () => {
    const h = new Uint8Array(VNET_HDR_LEN);
    writeVnet(h, 0, 0, VNET_GSO.NONE, 0, 0, 2, 0);
    const s = new Uint8Array(VNET_HDR_LEN);
    copyVnetHeader(s, h, 0, -4);
    expect(vnetHdrLen(s, 0)).toBe(0);
    expect(vnetCsumStart(s, 0)).toBe(2);
    writeVnet(h, 0, VNET_F_NEEDS_CSUM, VNET_GSO.NONE, 3, 0, 2, 6);
    copyVnetHeader(s, h, 0, -4);
    expect(vnetHdrLen(s, 0)).toBe(0);
    expect(vnetCsumStart(s, 0)).toBe(0);
  });
});
