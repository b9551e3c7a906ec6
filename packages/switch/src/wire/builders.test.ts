/*
 * The header writers of ipv4.ts and l4.ts, readTcpSegment, and the ARP check the guard uses:
 * each writes every byte of its header into a 0xa5-filled buffer at a non-zero
 * offset and nothing else, reads back through the views, and its checksum
 * verifies.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ARP, checkArp, checkArpIpv4, writeArp } from './arp.js';
import { read16, readI32, read32 } from './bytes.js';
import { checksum, fold, pseudoSum, sum16 } from './checksum.js';
import {
  checkIpv4, IP4, IP4_DF, IP4_MF, ip4Checksum, ip4Dst, ip4FragOffset, ip4HeaderLen, ip4Id, ip4IsFragment, ip4Proto, ip4Src,
  ip4TotalLen, ip4Ttl, ip4UpdateChecksum, ip4Version, IPPROTO, IPV4_OK, writeIp4, writeIpv4Header,
} from './ipv4.js';
import {
  checkTcp, checkUdp, icmpChecksum, icmpCode, icmpType, ICMP_HLEN, ICMP_TYPE, readTcpSegment, TCP, TCP_FLAG, tcpAck, tcpDport,
  tcpFlags, tcpHeaderLen, tcpSeq, tcpSport, tcpSynOptions, tcpWindow, udpChecksum, udpDport, udpLen, udpSport,
  writeIcmpError, writeTcpHeader, writeTcpSynOptions, writeUdpHeader,
} from './l4.js';

const SRC = 0x0a00000a; // 10.0.0.10
const DST = 0xc0000207; // 192.0.2.7

const untouched = (buf: Uint8Array, from: number, to: number): boolean =>
  [...buf.subarray(0, from), ...buf.subarray(to)].every((b) => b === 0xa5);

describe('bytes', () => {
  it('readI32 is read32 as an int32', () => {
    const b = Uint8Array.from([0xc0, 0x00, 0x02, 0x07, 0x0a, 0, 0, 0x0a]);
    expect(readI32(b, 0)).toBe(read32(b, 0) | 0);
    expect(readI32(b, 0)).toBeLessThan(0);
    expect(readI32(b, 4)).toBe(SRC);
  });
});

describe('writeIp4', () => {
  it('writes all 20 bytes with a verifying checksum, and nothing else', () => {
    const buf = new Uint8Array(6 + 20 + 6).fill(0xa5);
    writeIp4(buf, 6, 1500, 0x1234, IP4_DF, 63, IPPROTO.TCP, SRC, DST);
    expect(untouched(buf, 6, 26)).toBe(true);
    buf.fill(0, 26);
    expect(checkIpv4(buf, 6, 26)).not.toBe(0); // Total Length 1500 > the 20 bytes there
    expect(fold(sum16(buf, 6, 20))).toBe(0xffff);
    expect([ip4Version(buf, 6), ip4HeaderLen(buf, 6), ip4TotalLen(buf, 6), ip4Id(buf, 6), ip4Ttl(buf, 6), ip4Proto(buf, 6),
      ip4Src(buf, 6), ip4Dst(buf, 6), buf[6 + IP4.TOS]]).toEqual([4, 20, 1500, 0x1234, 63, 6, SRC, DST, 0]);
    expect(ip4IsFragment(buf, 6)).toBe(false);
    writeIp4(buf, 6, 20, 1, IP4_MF | (1480 >>> 3), 64, IPPROTO.UDP, SRC, DST, 0x10);
    expect(checkIpv4(buf, 6, 20)).toBe(IPV4_OK);
    expect(ip4IsFragment(buf, 6)).toBe(true);
    expect(ip4FragOffset(buf, 6)).toBe(1480);
    expect(buf[6 + IP4.TOS]).toBe(0x10);
  });

  it('writeIpv4Header is writeIp4 with named fields and defaults', () => {
    fc.assert(fc.property(
      fc.integer({ min: 20, max: 0xffff }), fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 255 }),
      fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffffffff }),
      fc.integer({ min: 0, max: 255 }), fc.boolean(),
      (totalLen, id, ttl, proto, src, dst, tos, df) => {
        const a = new Uint8Array(24).fill(0xa5);
        const b = new Uint8Array(24).fill(0xa5);
        writeIpv4Header(a, 2, { totalLen, id, ttl, proto, src, dst, tos, dontFragment: df });
        writeIp4(b, 2, totalLen, id, df ? IP4_DF : 0, ttl, proto, src, dst, tos);
        expect(a).toEqual(b);
      },
    ));
    const a = new Uint8Array(20);
    const b = new Uint8Array(20);
    writeIpv4Header(a, 0, { totalLen: 20, proto: IPPROTO.ICMP, src: SRC, dst: DST });
    writeIp4(b, 0, 20, 0, 0, 64, IPPROTO.ICMP, SRC, DST);
    expect(a).toEqual(b);
  });

  it('ip4UpdateChecksum recomputes over the options too', () => {
    const buf = new Uint8Array(24);
    writeIp4(buf, 0, 24, 7, 0, 64, IPPROTO.ICMP, SRC, DST);
    buf[IP4.VER_IHL] = 0x46;
    buf[20] = 0x94; buf[21] = 4; // router alert
    buf[IP4.TTL] = 9;
    ip4UpdateChecksum(buf, 0);
    expect(checkIpv4(buf, 0, 24)).toBe(IPV4_OK);
    expect(ip4Checksum(buf, 0)).toBe(checksum(buf.slice().fill(0, IP4.CSUM, IP4.CSUM + 2), 0, 24));
  });
});

describe('writeTcpHeader and the SYN options', () => {
  it('writes the 20 fixed bytes (checksum and urgent pointer 0), readable through the view', () => {
    const buf = new Uint8Array(3 + 20 + 3).fill(0xa5);
    writeTcpHeader(buf, 3, 40000, 443, 0xfedcba98, 0x01020304, 20, TCP_FLAG.SYN | TCP_FLAG.ACK, 65535);
    expect(untouched(buf, 3, 23)).toBe(true);
    expect(checkTcp(buf, 3, 20)).toBe(true);
    expect([tcpSport(buf, 3), tcpDport(buf, 3), tcpSeq(buf, 3), tcpAck(buf, 3), tcpHeaderLen(buf, 3), tcpFlags(buf, 3),
      tcpWindow(buf, 3), read16(buf, 3 + TCP.CSUM), read16(buf, 3 + TCP.URG)])
      .toEqual([40000, 443, 0xfedcba98, 0x01020304, 20, 0x12, 65535, 0, 0]);
  });

  it('writes MSS, then NOP and window scale, and reads them back', () => {
    const buf = new Uint8Array(2 + 28 + 2).fill(0xa5);
    writeTcpHeader(buf, 2, 1, 2, 3, 0, 28, TCP_FLAG.SYN, 1000);
    expect(writeTcpSynOptions(buf, 2 + 20, 1460, 7)).toBe(8);
    expect([...buf.subarray(22, 30)]).toEqual([2, 4, 0x05, 0xb4, 1, 3, 3, 7]);
    expect(untouched(buf, 2, 30)).toBe(true);
    const o = { mss: -5, wscale: -5 };
    tcpSynOptions(buf, 2, 28, o);
    expect(o).toEqual({ mss: 1460, wscale: 7 });
    expect(writeTcpSynOptions(buf, 22, 536, -1)).toBe(4);
    tcpSynOptions(buf, 2, 24, o);
    expect(o).toEqual({ mss: 536, wscale: -1 });
  });

  it('skips other options, clamps the shift to 14, ignores wrong lengths, stops at EOL or a bad length', () => {
    const opts = (bytes: number[]): { mss: number; wscale: number } => {
      const hl = 20 + ((bytes.length + 3) & ~3);
      const buf = new Uint8Array(hl);
      buf.set(bytes, 20);
      const o = { mss: -5, wscale: -5 };
      tcpSynOptions(buf, 0, hl, o);
      return o;
    };
    expect(opts([4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 3, 3, 20, 2, 4, 0x40, 0])).toEqual({ mss: 0x4000, wscale: 14 });
    expect(opts([2, 3, 5, 3, 4, 1, 2, 4, 1, 0])).toEqual({ mss: 0, wscale: -1 }); // MSS of length 3; WS of length 4
    expect(opts([0, 2, 4, 5, 0xb4])).toEqual({ mss: 0, wscale: -1 }); // EOL first
    expect(opts([3, 1, 7, 2, 4, 5, 0xb4])).toEqual({ mss: 0, wscale: -1 }); // length 1 ends the walk
    expect(opts([1, 1, 2, 4])).toEqual({ mss: 0, wscale: -1 }); // MSS cut by the header's end
  });
});

describe('writeUdpHeader', () => {
  it('writes the header with a checksum over payload and pseudo header', () => {
    const payload = Uint8Array.from([1, 2, 3, 4, 5]);
    const buf = new Uint8Array(4 + 8 + 5 + 4).fill(0xa5);
    buf.set(payload, 12);
    writeUdpHeader(buf, 4, 68, 67, 5, SRC, DST);
    expect(untouched(buf, 4, 17)).toBe(true);
    expect(checkUdp(buf, 4, 13)).toBe(true);
    expect([udpSport(buf, 4), udpDport(buf, 4), udpLen(buf, 4)]).toEqual([68, 67, 13]);
    expect(fold(sum16(buf, 4, 13, pseudoSum(SRC, DST, IPPROTO.UDP, 13)))).toBe(0xffff);
    expect(udpChecksum(buf, 4)).not.toBe(0);
  });

  it('sends a computed 0 as 0xffff', () => {
    // Find a payload word that makes the sum come out 0xffff (checksum 0).
    const buf = new Uint8Array(8 + 2);
    writeUdpHeader(buf, 0, 1, 2, 2, SRC, DST);
    const c = udpChecksum(buf, 0);
    buf[8] = c >>> 8;
    buf[9] = c & 0xff;
    writeUdpHeader(buf, 0, 1, 2, 2, SRC, DST);
    expect(udpChecksum(buf, 0)).toBe(0xffff);
    expect(fold(sum16(buf, 0, 10, pseudoSum(SRC, DST, IPPROTO.UDP, 10)))).toBe(0xffff);
  });
});

describe('writeIcmpError', () => {
  it('writes type, code, the MTU word and the quote, with a verifying checksum', () => {
    const pkt = new Uint8Array(40).fill(0x33);
    writeIp4(pkt, 0, 40, 9, IP4_DF, 1, IPPROTO.UDP, SRC, DST);
    const buf = new Uint8Array(5 + ICMP_HLEN + 28 + 5).fill(0xa5);
    const n = writeIcmpError(buf, 5, ICMP_TYPE.DEST_UNREACH, 4, 1400, pkt, 0, 28);
    expect(n).toBe(36);
    expect(untouched(buf, 5, 41)).toBe(true);
    expect([icmpType(buf, 5), icmpCode(buf, 5), read16(buf, 9), read16(buf, 11)]).toEqual([3, 4, 0, 1400]);
    expect([...buf.subarray(13, 41)]).toEqual([...pkt.subarray(0, 28)]);
    expect(checksum(buf, 5, n)).toBe(0);
    expect(icmpChecksum(buf, 5)).not.toBe(0);
  });
});

describe('checkArpIpv4 and checkArp', () => {
  it('checkArp is checkArpIpv4 plus hardware type Ethernet', () => {
    const buf = new Uint8Array(3 + 28).fill(0xa5);
    writeArp(buf, 3, 1, 0x020000000001, SRC, 0, DST);
    expect(checkArp(buf, 3, 28)).toBe(true);
    expect(checkArpIpv4(buf, 3, 28)).toBe(true);
    expect(checkArpIpv4(buf, 3, 27)).toBe(false);
    buf[3 + ARP.HTYPE + 1] = 6;
    expect(checkArp(buf, 3, 28)).toBe(false);
    expect(checkArpIpv4(buf, 3, 28)).toBe(true);
    buf[3 + ARP.PLEN] = 16;
    expect(checkArpIpv4(buf, 3, 28)).toBe(false);
  });
});

describe('readTcpSegment', () => {
  const seg = (): import('./l4.js').TcpSegment =>
    ({ src: -1, dst: -1, sport: -1, dport: -1, seq: -1, ack: -1, flags: -1, win: -1, off: -1, len: -1, hlen: -1 });
  /** IPv4 + TCP (24-byte header: an MSS option) + 5 payload bytes at offset 6 of a 0xa5-filled buffer, with padding after. */
  function packet(): Uint8Array {
    const buf = new Uint8Array(6 + 20 + 24 + 5 + 10).fill(0xa5);
    writeIp4(buf, 6, 49, 1, IP4_DF, 64, IPPROTO.TCP, SRC, DST);
    writeTcpHeader(buf, 26, 40000, 80, 0x11223344, 0x55667788, 24, TCP_FLAG.SYN, 29200);
    writeTcpSynOptions(buf, 46, 1460, -1);
    return buf;
  }

  it('reads every field of a segment, sized by Total Length (not the padding)', () => {
    const s = seg();
    expect(readTcpSegment(packet(), 6, 59, s)).toBe(true);
    expect(s).toEqual({ src: SRC, dst: DST, sport: 40000, dport: 80, seq: 0x11223344, ack: 0x55667788, flags: 0x02, win: 29200,
      off: 26, len: 29, hlen: 24 });
  });

  it('refuses what is not one whole TCP segment; leaves the IPv4 header checksum to the caller', () => {
    const s = seg();
    const bad = (edit: (b: Uint8Array) => void, len = 59): boolean => {
      const b = packet();
      edit(b);
      return readTcpSegment(b, 6, len, s);
    };
    expect(bad(() => {}, 48)).toBe(false); // Total Length beyond the buffer
    expect(bad((b) => { b[6 + IP4.PROTO] = IPPROTO.UDP; })).toBe(false);
    expect(bad((b) => { b[6 + IP4.FRAG] = 0x20; })).toBe(false); // more fragments
    expect(bad((b) => { b[6 + IP4.FRAG + 1] = 1; })).toBe(false); // a later fragment
    expect(bad((b) => { b[26 + TCP.DOFF] = 4 << 4; })).toBe(false); // data offset below 20
    expect(bad((b) => { b[26 + TCP.DOFF] = 8 << 4; })).toBe(false); // beyond the segment
    expect(bad((b) => { b[6 + IP4.VER_IHL] = 0x65; })).toBe(false);
    expect(bad((b) => { b[6 + IP4.CSUM] ^= 0xff; })).toBe(true);
  });
});
