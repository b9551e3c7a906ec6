import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseIp4 } from '@vswitch/switch';
import {
  BOOTP, BOOTP_MIN_LEN, BOOTREPLY, BOOTREQUEST, DHCP_MAGIC, DHCP_MAX_LEN, DHCP_MIN_LEN, DhcpError, DhcpMessage, DhcpMsg,
  DhcpWriter, FLAG_BROADCAST, Opt, decodeClasslessRoutes, dhcpErrorName, encodeClasslessRoutes, fromHex, parseDhcp,
  scanOptions, toHex, type ClasslessRoute,
} from './wire.js';

const ip = (s: string): number => parseIp4(s);

/**
 * A DHCPDISCOVER laid out as busybox udhcpc 1.36 sends it: no broadcast flag,
 * chaddr 52:54:00:12:34:56, options 53, 61 (type 1 + MAC), 57 (576), 55, 12, END,
 * zero padding to the 300-byte BOOTP minimum.
 */
function udhcpcDiscover(): Uint8Array {
  const m = new Uint8Array(300);
  m.set([BOOTREQUEST, 1, 6, 0], 0);
  m.set([0x3c, 0x1d, 0x8a, 0x5e], 4);         // xid
  m.set([0x52, 0x54, 0x00, 0x12, 0x34, 0x56], 28);
  m.set([0x63, 0x82, 0x53, 0x63], 236);       // cookie
  m.set([
    53, 1, 1,
    61, 7, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56,
    57, 2, 0x02, 0x40,
    55, 7, 1, 3, 6, 12, 15, 28, 42,
    12, 3, 0x76, 0x6d, 0x31,                  // "vm1"
    255,
  ], 240);
  return m;
}

/** `bytes` copied into a 0xa5-filled buffer at `off`, with 0xa5 guard bytes after. */
function at(off: number, bytes: Uint8Array, tail = 8): Uint8Array {
  const buf = new Uint8Array(off + bytes.length + tail).fill(0xa5);
  buf.set(bytes, off);
  return buf;
}

function parsed(buf: Uint8Array, off = 0, len = buf.length - off): DhcpMessage {
  const m = parseDhcp(buf, off, len);
  if (typeof m === 'number') throw new Error(`parse failed: ${dhcpErrorName(m)}`);
  return m;
}

/** A fixed part + cookie followed by the given option bytes. */
function withOptions(opts: number[], total = Math.max(DHCP_MIN_LEN + opts.length, 0)): Uint8Array {
  const m = new Uint8Array(total);
  m.set(udhcpcDiscover().subarray(0, 240));
  m.set(opts, 240);
  return m;
}

describe('layout', () => {
  it('has RFC 2131 offsets', () => {
    expect(BOOTP.CHADDR).toBe(28);
    expect(BOOTP.SNAME).toBe(44);
    expect(BOOTP.FILE).toBe(108);
    expect(BOOTP.COOKIE).toBe(236);
    expect(BOOTP.OPTIONS).toBe(240);
    expect(BOOTP_MIN_LEN).toBe(300);
    expect(DHCP_MAGIC).toBe(0x63825363);
  });
});

describe('parse: a udhcpc DISCOVER', () => {
  it('reads header and options', () => {
    const m = parsed(udhcpcDiscover());
    expect(m.op).toBe(BOOTREQUEST);
    expect(m.htype).toBe(1);
    expect(m.hlen).toBe(6);
    expect(m.xid).toBe(0x3c1d8a5e);
    expect(m.flags).toBe(0);
    expect(m.broadcast).toBe(false);
    expect(m.ciaddr).toBe(0);
    expect(m.giaddr).toBe(0);
    expect(m.chaddr).toBe(0x525400123456);
    expect(m.messageType).toBe(DhcpMsg.DISCOVER);
    expect(m.clientId).toBe('01525400123456');
    expect(m.maxMessageSize).toBe(576);
    expect([...m.parameterRequestList!]).toEqual([1, 3, 6, 12, 15, 28, 42]);
    expect(m.hostname).toBe('vm1');
    expect(m.requestedIp).toBeUndefined();
    expect(m.serverId).toBeUndefined();
    expect(m.codes()).toEqual([53, 61, 57, 55, 12]);
    expect(m.describe()).toContain('DISCOVER xid=0x3c1d8a5e chaddr=525400123456');
  });

  it('reads the same at a non-zero offset and in a subarray, ignoring bytes past len', () => {
    const buf = at(11, udhcpcDiscover(), 40);
    const m = parsed(buf, 11, 300);
    expect(m.chaddr).toBe(0x525400123456);
    expect(m.clientId).toBe('01525400123456');
    const view = buf.subarray(11);
    expect(parsed(view, 0, 300).xid).toBe(0x3c1d8a5e);
  });

  it('reads the broadcast flag and addresses', () => {
    const b = udhcpcDiscover();
    b[BOOTP.FLAGS] = 0x80;
    b.set([10, 0, 0, 5], BOOTP.CIADDR);
    b.set([10, 0, 0, 6], BOOTP.YIADDR);
    b.set([10, 0, 0, 7], BOOTP.SIADDR);
    b.set([10, 0, 0, 8], BOOTP.GIADDR);
    const m = parsed(b);
    expect(m.broadcast).toBe(true);
    expect([m.ciaddr, m.yiaddr, m.siaddr, m.giaddr]).toEqual([ip('10.0.0.5'), ip('10.0.0.6'), ip('10.0.0.7'), ip('10.0.0.8')]);
  });
});

describe('parse: refusals, one per check', () => {
  it('truncated fixed part', () => {
    expect(parseDhcp(udhcpcDiscover(), 0, 239)).toBe(DhcpError.TRUNCATED);
    expect(parseDhcp(udhcpcDiscover().subarray(0, 100), 0, 300)).toBe(DhcpError.TRUNCATED);
    expect(parseDhcp(new Uint8Array(0), 0, 0)).toBe(DhcpError.TRUNCATED);
  });
  it('bad offsets and lengths', () => {
    const b = udhcpcDiscover();
    expect(parseDhcp(b, -1, 300)).toBe(DhcpError.TRUNCATED);
    expect(parseDhcp(b, 400, 300)).toBe(DhcpError.TRUNCATED);
    expect(parseDhcp(b, 0, NaN)).toBe(DhcpError.TRUNCATED);
    expect(parseDhcp(b, 0.5, 300)).toBe(DhcpError.TRUNCATED);
    // len past the buffer is cut at the buffer's end
    expect(typeof parseDhcp(b, 0, 10_000)).toBe('object');
  });
  it('op neither request nor reply', () => {
    const b = udhcpcDiscover();
    b[0] = 3;
    expect(parseDhcp(b, 0, 300)).toBe(DhcpError.OP);
    b[0] = BOOTREPLY;
    expect(parsed(b).op).toBe(BOOTREPLY);
  });
  it('non-Ethernet hardware', () => {
    const b = udhcpcDiscover();
    b[BOOTP.HTYPE] = 6;
    expect(parseDhcp(b, 0, 300)).toBe(DhcpError.HARDWARE);
    const c = udhcpcDiscover();
    c[BOOTP.HLEN] = 16;
    expect(parseDhcp(c, 0, 300)).toBe(DhcpError.HARDWARE);
  });
  it('bad cookie (plain BOOTP)', () => {
    const b = udhcpcDiscover();
    b[BOOTP.COOKIE + 3] = 0x64;
    expect(parseDhcp(b, 0, 300)).toBe(DhcpError.COOKIE);
  });
  it('no message type, or one of the wrong length', () => {
    expect(parseDhcp(withOptions([61, 2, 1, 2, 255]), 0, 245)).toBe(DhcpError.NO_MESSAGE_TYPE);
    expect(parseDhcp(withOptions([53, 2, 1, 1, 255]), 0, 245)).toBe(DhcpError.NO_MESSAGE_TYPE);
    expect(parseDhcp(withOptions([]), 0, 240)).toBe(DhcpError.NO_MESSAGE_TYPE);
  });
  it('message type hidden behind END or a truncated option', () => {
    expect(parseDhcp(withOptions([255, 53, 1, 1]), 0, 244)).toBe(DhcpError.NO_MESSAGE_TYPE);
    expect(parseDhcp(withOptions([12, 10, 53, 1, 1]), 0, 245)).toBe(DhcpError.NO_MESSAGE_TYPE);
  });
  it('longer than any UDP payload', () => {
    const b = new Uint8Array(DHCP_MAX_LEN + 1);
    b.set(udhcpcDiscover());
    expect(parseDhcp(b, 0, b.length)).toBe(DhcpError.TOO_LONG);
  });
});

describe('parse: forgiving options', () => {
  it('an option running past the end stops the scan, keeping what came before', () => {
    const m = parsed(withOptions([53, 1, 3, 50, 4, 10, 0, 0, 9, 12, 200, 0x61, 0x62]));
    expect(m.messageType).toBe(DhcpMsg.REQUEST);
    expect(m.requestedIp).toBe(ip('10.0.0.9'));
    expect(m.hostname).toBeUndefined();
  });
  it('a lone option code at the very end is ignored', () => {
    expect(parsed(withOptions([53, 1, 1, 12])).codes()).toEqual([53]);
  });
  it('missing END is the end of the message', () => {
    expect(parsed(withOptions([53, 1, 8, 54, 4, 10, 0, 0, 1])).serverId).toBe(ip('10.0.0.1'));
  });
  it('wrong-length options are ignored, not trusted', () => {
    const m = parsed(withOptions([53, 1, 3, 50, 3, 10, 0, 0, 54, 5, 1, 2, 3, 4, 5, 57, 2, 0x01, 0xf4, 61, 1, 7, 55, 0, 255]));
    expect(m.requestedIp).toBeUndefined();
    expect(m.serverId).toBeUndefined();
    expect(m.maxMessageSize).toBeUndefined(); // 500 < 576
    expect(m.clientId).toBeUndefined();      // RFC 2132: at least 2 bytes
    expect(m.parameterRequestList).toBeUndefined();
  });
  it('repeated options are concatenated (RFC 3396)', () => {
    const m = parsed(withOptions([53, 1, 1, 12, 2, 0x61, 0x62, 55, 1, 3, 12, 2, 0x63, 0x64, 255]));
    expect(m.hostname).toBe('abcd');
    // a second 53 makes the message type 2 bytes long: no longer a valid message
    expect(parseDhcp(withOptions([53, 1, 1, 53, 1, 3, 255]), 0, 247)).toBe(DhcpError.NO_MESSAGE_TYPE);
  });
  it('trailing NULs of a hostname are dropped', () => {
    expect(parsed(withOptions([53, 1, 1, 12, 4, 0x68, 0x6f, 0, 0, 255])).hostname).toBe('ho');
    expect(parsed(withOptions([53, 1, 1, 12, 2, 0, 0, 255])).hostname).toBeUndefined();
  });
  it('64 KiB of PAD neither hangs nor overflows', () => {
    const opts = new Array<number>(65_000).fill(0);
    opts.push(53, 1, 1, 255);
    const t0 = Date.now();
    const m = parsed(withOptions(opts));
    expect(m.messageType).toBe(1);
    const allPad = withOptions(new Array<number>(DHCP_MAX_LEN - 240).fill(0));
    expect(parseDhcp(allPad, 0, allPad.length)).toBe(DhcpError.NO_MESSAGE_TYPE);
    expect(Date.now() - t0).toBeLessThan(1000);
  });
  it('a huge message of repeated options is linear and bounded', () => {
    const opts: number[] = [53, 1, 1];
    while (opts.length < DHCP_MAX_LEN - 240 - 260) opts.push(12, 255, ...new Array<number>(255).fill(0x41));
    const m = parsed(withOptions(opts));
    expect(m.hostname!.length).toBe(255);
    expect(m.option(12)!.length % 255).toBe(0);
  });
  it('scanOptions skips PAD and reports value offsets', () => {
    const b = Uint8Array.from([0, 0, 53, 1, 5, 0, 3, 4, 1, 2, 3, 4, 255, 9, 9]);
    const seen: number[][] = [];
    expect(scanOptions(b, 0, b.length, (c, o, l) => seen.push([c, o, l]))).toBe(2);
    expect(seen).toEqual([[53, 4, 1], [3, 8, 4]]);
  });
});

describe('writer', () => {
  function reply(buf: Uint8Array, off: number, limit?: number): DhcpWriter {
    const w = new DhcpWriter(buf, off, limit);
    expect(w.header({
      op: BOOTREPLY, xid: 0xdeadbeef, flags: FLAG_BROADCAST, ciaddr: 0, yiaddr: ip('10.0.10.100'),
      siaddr: 0, giaddr: 0, chaddr: 0x525400123456,
    })).toBe(true);
    return w;
  }

  it('writes every byte, 53 first, padded to 300, into a 0xa5 buffer at an offset', () => {
    const buf = new Uint8Array(700).fill(0xa5);
    const w = reply(buf, 9);
    expect(w.u8(Opt.MESSAGE_TYPE, DhcpMsg.OFFER)).toBe(true);
    expect(w.u32(Opt.SERVER_ID, ip('10.0.10.1'))).toBe(true);
    expect(w.u32(Opt.LEASE_TIME, 3600)).toBe(true);
    expect(w.ips(Opt.DNS, [ip('1.1.1.1'), ip('9.9.9.9')])).toBe(true);
    expect(w.text(Opt.DOMAIN, 'lan')).toBe(true);
    expect(w.u16(Opt.MTU, 1400)).toBe(true);
    const len = w.finish();
    expect(len).toBe(300);
    const out = buf.subarray(9, 9 + len);
    expect(out.includes(0xa5)).toBe(false);
    expect(buf[9 + len]).toBe(0xa5);
    expect(out[BOOTP.OPTIONS]).toBe(Opt.MESSAGE_TYPE);
    expect(out.subarray(BOOTP.SNAME, BOOTP.COOKIE).every((b) => b === 0)).toBe(true);
    const m = parsed(buf, 9, len);
    expect(m.op).toBe(BOOTREPLY);
    expect(m.xid).toBe(0xdeadbeef);
    expect(m.broadcast).toBe(true);
    expect(m.yiaddr).toBe(ip('10.0.10.100'));
    expect(m.chaddr).toBe(0x525400123456);
    expect(m.messageType).toBe(DhcpMsg.OFFER);
    expect(m.serverId).toBe(ip('10.0.10.1'));
    expect([...m.option(Opt.DNS)!]).toEqual([1, 1, 1, 1, 9, 9, 9, 9]);
    expect(String.fromCharCode(...m.option(Opt.DOMAIN)!)).toBe('lan');
    expect(m.codes()).toEqual([53, 54, 51, 6, 15, 26]);
  });

  it('refuses a buffer shorter than the BOOTP minimum', () => {
    const w = new DhcpWriter(new Uint8Array(299));
    expect(w.header({ op: 2, xid: 1, flags: 0, ciaddr: 0, yiaddr: 0, siaddr: 0, giaddr: 0, chaddr: 1 })).toBe(false);
    expect(w.option(53, [1])).toBe(false);
    expect(w.finish()).toBe(-1);
    expect(new DhcpWriter(new Uint8Array(400), 200).header({ op: 2, xid: 1, flags: 0, ciaddr: 0, yiaddr: 0, siaddr: 0, giaddr: 0, chaddr: 1 })).toBe(false);
  });

  it('refuses values over 255 bytes, PAD/END codes, and options past the limit, writing nothing', () => {
    const buf = new Uint8Array(320).fill(0xa5);
    const w = reply(buf, 0);
    expect(w.room).toBe(320 - 240 - 1);
    expect(w.option(12, new Array<number>(256).fill(0x61))).toBe(false);
    expect(w.option(Opt.PAD, [])).toBe(false);
    expect(w.option(Opt.END, [])).toBe(false);
    expect(w.option(12, new Array<number>(78).fill(0x61))).toBe(false); // 2 + 78 + END = 81 > 79
    expect(w.option(12, new Array<number>(77).fill(0x61))).toBe(true);  // exactly fills, END still fits
    expect(w.room).toBe(0);
    expect(w.u8(53, 1)).toBe(false);
    expect(w.refused).toBe(5);
    expect(w.text(15, 'é')).toBe(false);
    expect(w.finish()).toBe(320);
    expect(buf[319]).toBe(Opt.END);
  });

  it('a limit below the buffer bounds the message', () => {
    const buf = new Uint8Array(1000);
    const w = reply(buf, 0, 310);
    expect(w.option(12, new Array<number>(60).fill(0x61))).toBe(true);
    expect(w.option(12, new Array<number>(10).fill(0x61))).toBe(false);
    expect(w.finish()).toBe(303);
  });

  it('round-trips arbitrary headers and options (fast-check)', () => {
    const u32 = fc.integer({ min: 0, max: 0xffffffff });
    const opt = fc.record({
      code: fc.integer({ min: 1, max: 254 }).filter((c) => c !== 53),
      value: fc.uint8Array({ maxLength: 255 }),
    });
    fc.assert(fc.property(
      fc.record({ xid: u32, flags: fc.integer({ min: 0, max: 0xffff }), ciaddr: u32, yiaddr: u32, siaddr: u32, giaddr: u32,
        chaddr: fc.integer({ min: 0, max: 2 ** 48 - 1 }), op: fc.constantFrom(1, 2) }),
      fc.uniqueArray(opt, { selector: (o) => o.code, maxLength: 6 }),
      fc.integer({ min: 0, max: 13 }),
      (h, opts, off) => {
        const buf = new Uint8Array(off + 2000).fill(0xa5);
        const w = new DhcpWriter(buf, off);
        expect(w.header(h)).toBe(true);
        expect(w.u8(53, 3)).toBe(true);
        for (const o of opts) expect(w.option(o.code, o.value)).toBe(true);
        const len = w.finish();
        expect(len).toBeGreaterThanOrEqual(300);
        const m = parsed(buf, off, len);
        expect({ op: m.op, xid: m.xid, flags: m.flags, ciaddr: m.ciaddr, yiaddr: m.yiaddr, siaddr: m.siaddr, giaddr: m.giaddr, chaddr: m.chaddr })
          .toEqual(h);
        expect(m.messageType).toBe(3);
        for (const o of opts) expect([...m.option(o.code)!]).toEqual([...o.value]);
      },
    ));
  });
});

describe('hostile bytes (fast-check)', () => {
  function checkRanges(m: DhcpMessage): void {
    expect([BOOTREQUEST, BOOTREPLY]).toContain(m.op);
    expect(m.htype).toBe(1);
    expect(m.hlen).toBe(6);
    for (const v of [m.xid, m.ciaddr, m.yiaddr, m.siaddr, m.giaddr]) {
      expect(Number.isInteger(v) && v >= 0 && v <= 0xffffffff).toBe(true);
    }
    expect(m.chaddr >= 0 && m.chaddr < 2 ** 48).toBe(true);
    expect(m.messageType >= 0 && m.messageType <= 255).toBe(true);
    for (const v of [m.requestedIp, m.serverId]) if (v !== undefined) expect(v >= 0 && v <= 0xffffffff).toBe(true);
    const mms = m.maxMessageSize;
    if (mms !== undefined) expect(mms >= 576 && mms <= 0xffff).toBe(true);
    const cid = m.clientId;
    if (cid !== undefined) expect(/^([0-9a-f]{2}){2,}$/.test(cid)).toBe(true);
    const h = m.hostname;
    if (h !== undefined) expect(h.length >= 1 && h.length <= 255).toBe(true);
    for (const c of m.codes()) {
      const v = m.option(c)!;
      expect(v.length).toBeLessThanOrEqual(m.len);
    }
  }

  it('random bytes never throw and never yield out-of-range fields', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 700 }), fc.nat(20), fc.nat(800), (b, off, len) => {
      const m = parseDhcp(b, off, len);
      if (typeof m === 'number') expect(m).toBeGreaterThan(0);
      else checkRanges(m);
    }), { numRuns: 2000 });
  });

  it('random option areas behind a valid header never throw', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), (opts) => {
      const b = withOptions([53, 1, 1, ...opts]);
      const m = parseDhcp(b, 0, b.length);
      // only a second option 53 (concatenated to 2 bytes) can spoil the message type
      if (typeof m === 'number') expect(m).toBe(DhcpError.NO_MESSAGE_TYPE);
      else checkRanges(m);
    }), { numRuns: 2000 });
  });

  it('mutated and truncated udhcpc DISCOVERs never throw', () => {
    fc.assert(fc.property(
      fc.array(fc.record({ i: fc.nat(299), v: fc.nat(255) }), { maxLength: 12 }),
      fc.integer({ min: 0, max: 300 }),
      (muts, len) => {
        const b = udhcpcDiscover();
        for (const { i, v } of muts) b[i] = v;
        const m = parseDhcp(b, 0, len);
        if (typeof m !== 'number') checkRanges(m);
      },
    ), { numRuns: 2000 });
  });
});

describe('option 121 (RFC 3442)', () => {
  const r = (dest: string, prefixLen: number, gw = '10.0.0.1'): ClasslessRoute => ({ dest: ip(dest), prefixLen, gateway: ip(gw) });
  const G = [10, 0, 0, 1];

  it('encodes the RFC 3442 §3 destination descriptors', () => {
    const cases: Array<[ClasslessRoute, number[]]> = [
      [r('0.0.0.0', 0), [0]],
      [r('10.0.0.0', 8), [8, 10]],
      [r('10.0.0.0', 24), [24, 10, 0, 0]],
      [r('10.17.0.0', 16), [16, 10, 17]],
      [r('10.27.129.0', 24), [24, 10, 27, 129]],
      [r('10.229.0.128', 25), [25, 10, 229, 0, 128]],
      [r('10.198.122.47', 32), [32, 10, 198, 122, 47]],
    ];
    for (const [route, descriptor] of cases) {
      expect([...encodeClasslessRoutes([route])]).toEqual([...descriptor, ...G]);
    }
  });

  it('concatenates routes and decodes them back', () => {
    const routes = [r('192.168.0.0', 16, '10.0.10.254'), r('0.0.0.0', 0, '10.0.10.1')];
    const v = encodeClasslessRoutes(routes);
    expect([...v]).toEqual([16, 192, 168, 10, 0, 10, 254, 0, 10, 0, 10, 1]);
    expect(decodeClasslessRoutes(v)).toEqual(routes);
  });

  it('decoding refuses a prefix over 32 and truncated routes', () => {
    expect(decodeClasslessRoutes(Uint8Array.from([33, 1, 2, 3, 4, 5, 10, 0, 0, 1]))).toBeUndefined();
    expect(decodeClasslessRoutes(Uint8Array.from([24, 10, 0, 0, 10, 0, 0]))).toBeUndefined();
    expect(decodeClasslessRoutes(new Uint8Array(0))).toEqual([]);
  });

  it('round-trips random routes (fast-check)', () => {
    const route = fc.record({ prefixLen: fc.integer({ min: 0, max: 32 }), dest: fc.integer({ min: 0, max: 0xffffffff }), gateway: fc.integer({ min: 0, max: 0xffffffff }) })
      .map((x) => ({ ...x, dest: x.prefixLen === 0 ? 0 : (x.dest & (0xffffffff << (32 - x.prefixLen))) >>> 0 }));
    fc.assert(fc.property(fc.array(route, { maxLength: 20 }), (routes) => {
      expect(decodeClasslessRoutes(encodeClasslessRoutes(routes))).toEqual(routes);
    }));
  });
});

describe('hex', () => {
  it('round-trips and refuses odd or non-hex text', () => {
    expect(toHex(Uint8Array.from([0, 1, 0xab, 0xff]))).toBe('0001abff');
    expect([...fromHex('0001abff')!]).toEqual([0, 1, 0xab, 0xff]);
    expect(fromHex('abc')).toBeUndefined();
    expect(fromHex('zz')).toBeUndefined();
  });
});
