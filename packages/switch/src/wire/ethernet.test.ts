import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  dstMac, ETH, ETH_ALEN, ETH_HLEN, ETHERTYPE, etherType, formatMac, isGroupAt, isGroupMac, linkLocalGroup,
  MAC_BROADCAST, parseMac, readMac, srcMac, writeEthHeader, writeMac,
} from './ethernet.js';

/** A hand-built Ethernet II header: 02:00:00:00:00:02 <- 52:54:00:12:34:56, IPv4. */
const HEADER = Uint8Array.from([
  0x02, 0x00, 0x00, 0x00, 0x00, 0x02,
  0x52, 0x54, 0x00, 0x12, 0x34, 0x56,
  0x08, 0x00,
]);

/** `bytes` copied into a 0xa5-filled buffer at `off`, with 0xa5 guard bytes after. */
function at(off: number, bytes: Uint8Array, tail = 8): Uint8Array {
  const buf = new Uint8Array(off + bytes.length + tail).fill(0xa5);
  buf.set(bytes, off);
  return buf;
}

describe('header layout', () => {
  it('has the Ethernet II offsets and lengths', () => {
    expect(ETH).toEqual({ DST: 0, SRC: 6, TYPE: 12, PAYLOAD: 14 });
    expect(ETH_HLEN).toBe(14);
    expect(ETH_ALEN).toBe(6);
    expect(ETHERTYPE.VLAN).toBe(0x8100);
    expect(ETHERTYPE.QINQ).toBe(0x88a8);
  });
});

describe('accessors over (buf, off)', () => {
  it('read dst, src and EtherType at offset 0', () => {
    expect(dstMac(HEADER, 0)).toBe(0x020000000002);
    expect(srcMac(HEADER, 0)).toBe(0x525400123456);
    expect(etherType(HEADER, 0)).toBe(ETHERTYPE.IPV4);
  });

  it('read the same values at a non-zero offset', () => {
    const buf = at(7, HEADER);
    expect(dstMac(buf, 7)).toBe(0x020000000002);
    expect(srcMac(buf, 7)).toBe(0x525400123456);
    expect(etherType(buf, 7)).toBe(0x0800);
  });

  it('honour the byteOffset of a subarray view', () => {
    const view = at(5, HEADER).subarray(5);
    expect(srcMac(view, 0)).toBe(0x525400123456);
  });

  it('isGroupAt looks at the group bit of the octet at off only', () => {
    const buf = Uint8Array.from([0x01, 0x00, 0x02, 0xfe, 0xff]);
    expect(isGroupAt(buf, 0)).toBe(true);
    expect(isGroupAt(buf, 1)).toBe(false);
    expect(isGroupAt(buf, 2)).toBe(false);
    expect(isGroupAt(buf, 3)).toBe(false);
    expect(isGroupAt(buf, 4)).toBe(true);
  });
});

describe('readMac / writeMac', () => {
  const cases: [string, number, number[]][] = [
    ['zero', 0, [0, 0, 0, 0, 0, 0]],
    ['broadcast', MAC_BROADCAST, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff]],
    ['high bit of the low word', 0x000080000000, [0, 0, 0x80, 0, 0, 0]],
    ['high bit of the first octet', 0x800000000000, [0x80, 0, 0, 0, 0, 0]],
    ['qemu', 0x525400123456, [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]],
    ['every octet distinct', 0x0123456789ab, [0x01, 0x23, 0x45, 0x67, 0x89, 0xab]],
  ];

  for (const [name, mac, bytes] of cases) {
    it(`writes exactly six bytes at a non-zero offset (${name})`, () => {
      const buf = new Uint8Array(20).fill(0xa5);
      writeMac(buf, 9, mac);
      expect([...buf.subarray(9, 15)]).toEqual(bytes);
      expect([...buf.subarray(0, 9)].every((b) => b === 0xa5)).toBe(true);
      expect([...buf.subarray(15)].every((b) => b === 0xa5)).toBe(true);
      expect(readMac(buf, 9)).toBe(mac);
    });
  }

  it('reads at a non-zero offset without touching neighbours', () => {
    const buf = at(3, Uint8Array.from([0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54]));
    expect(readMac(buf, 3)).toBe(0xfedcba987654);
    expect(readMac(buf, 3)).toBeGreaterThan(0); // not sign-extended
  });

  it('round-trips any 48-bit integer at any offset, writing nothing else', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 48 - 1 }), fc.integer({ min: 0, max: 16 }), (mac, off) => {
        const buf = new Uint8Array(off + 6 + 4).fill(0xa5);
        writeMac(buf, off, mac);
        expect(readMac(buf, off)).toBe(mac);
        for (let i = 0; i < buf.length; i++) if (i < off || i >= off + 6) expect(buf[i]).toBe(0xa5);
        expect(parseMac(formatMac(mac))).toBe(mac);
      }),
    );
  });
});

describe('parseMac / formatMac', () => {
  it('parses colon- and dash-separated MACs in any case', () => {
    expect(parseMac('52:54:00:12:34:56')).toBe(0x525400123456);
    expect(parseMac('52-54-00-12-34-56')).toBe(0x525400123456);
    expect(parseMac('AA:bb:Cc:DD:ee:FF')).toBe(0xaabbccddeeff);
    expect(parseMac('ff:ff:ff:ff:ff:ff')).toBe(MAC_BROADCAST);
    expect(parseMac('00:00:00:00:00:00')).toBe(0);
    expect(parseMac('  02:00:00:00:00:01\n')).toBe(0x020000000001);
  });

  it.each([
    [''],
    ['52:54:00:12:34'], // five octets
    ['52:54:00:12:34:56:78'], // seven octets
    ['52:54:00:12:34:5'], // short octet
    ['52:54:00:12:34:567'], // long octet
    ['5254.0012.3456'], // Cisco dotted form
    ['525400123456'], // no separators
    ['52:54:00:12:34:gg'], // not hex
    ['52 54 00 12 34 56'], // space separator
    ['52::54:00:12:34:56'],
    ['0x525400123456'],
  ])('refuses %j with -1', (text) => {
    expect(parseMac(text)).toBe(-1);
  });

  it('formats lower case, zero padded, colon separated', () => {
    expect(formatMac(0)).toBe('00:00:00:00:00:00');
    expect(formatMac(0x525400123456)).toBe('52:54:00:12:34:56');
    expect(formatMac(0x0a0b0c0d0e0f)).toBe('0a:0b:0c:0d:0e:0f');
    expect(formatMac(MAC_BROADCAST)).toBe('ff:ff:ff:ff:ff:ff');
    expect(formatMac(0x800000000001)).toBe('80:00:00:00:00:01');
  });
});

describe('isGroupMac', () => {
  it('is the I/G bit of the first octet', () => {
    expect(isGroupMac(MAC_BROADCAST)).toBe(true);
    expect(isGroupMac(0x01005e000001)).toBe(true); // IPv4 multicast
    expect(isGroupMac(0x333300000001)).toBe(true); // IPv6 multicast
    expect(isGroupMac(0x0180c2000000)).toBe(true); // STP
    expect(isGroupMac(0x525400123456)).toBe(false);
    expect(isGroupMac(0x020000000001)).toBe(false); // locally administered unicast
    expect(isGroupMac(0)).toBe(false);
    // The low bit of every other octet is not the group bit.
    expect(isGroupMac(0x000000000001)).toBe(false);
    expect(isGroupMac(0x000100000000)).toBe(false);
    expect(isGroupMac(0xfe0000000000)).toBe(false);
  });

  it('agrees with isGroupAt on the written bytes', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 48 - 1 }), (mac) => {
        const buf = new Uint8Array(6);
        writeMac(buf, 0, mac);
        expect(isGroupMac(mac)).toBe(isGroupAt(buf, 0));
      }),
    );
  });
});

describe('linkLocalGroup', () => {
  const mac = (m: number, off = 0): Uint8Array => {
    const buf = new Uint8Array(off + 6).fill(0xa5);
    writeMac(buf, off, m);
    return buf;
  };

  it('returns the low nibble for 01:80:c2:00:00:00 .. 0f', () => {
    for (let g = 0; g <= 0x0f; g++) expect(linkLocalGroup(mac(0x0180c2000000 + g), 0)).toBe(g);
  });

  it('works at a non-zero offset', () => {
    expect(linkLocalGroup(mac(0x0180c200000e, 5), 5)).toBe(0x0e);
    expect(linkLocalGroup(mac(0x0180c2000000, 5), 5)).toBe(0);
  });

  it.each([
    ['01:80:c2:00:00:10', 0x0180c2000010], // just past the reserved block
    ['01:80:c2:00:00:20', 0x0180c2000020], // GARP range
    ['01:80:c2:00:01:00', 0x0180c2000100],
    ['01:80:c2:01:00:00', 0x0180c2010000],
    ['01:80:c3:00:00:00', 0x0180c3000000],
    ['01:81:c2:00:00:00', 0x0181c2000000],
    ['00:80:c2:00:00:00', 0x0080c2000000], // same bytes without the group bit
    ['03:80:c2:00:00:00', 0x0380c2000000],
    ['ff:ff:ff:ff:ff:ff', MAC_BROADCAST],
    ['01:00:5e:00:00:01', 0x01005e000001],
  ])('returns -1 for %s', (_name, m) => {
    expect(linkLocalGroup(mac(m), 0)).toBe(-1);
  });
});

describe('writeEthHeader', () => {
  it('writes the hand-built header untagged and returns the payload offset', () => {
    const b = new Uint8Array(20).fill(0xee);
    expect(writeEthHeader(b, 2, 0x020000000002, 0x525400123456, ETHERTYPE.IPV4)).toBe(16);
    expect([...b.subarray(2, 16)]).toEqual([...HEADER.subarray(0, 14)]);
    expect(b[0]).toBe(0xee);
  });

  it('inserts a C-tag for the VLAN (12 bits) when asked', () => {
    const b = new Uint8Array(18);
    expect(writeEthHeader(b, 0, 0x020000000002, 0x525400123456, ETHERTYPE.ARP, 0x1234 & 0xfff)).toBe(18);
    expect([...b.subarray(12, 18)]).toEqual([0x81, 0x00, 0x02, 0x34, 0x08, 0x06]);
    expect(etherType(b, 4)).toBe(ETHERTYPE.ARP);
  });
});
