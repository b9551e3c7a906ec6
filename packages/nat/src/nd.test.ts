/*
 * The gateway's IPv6 side (nd.ts) against a fake network: what its RAs carry per
 * mode, when they go out (initial, periodic, in answer to RS, rate-limited, the
 * last one with lifetimes 0), which Neighbor Solicitations it answers (its own
 * addresses only, DAD probes for them defended at all-nodes, never a VM's), echo
 * from the address pinged; then random and mutated IPv6 frames (fast-check):
 * nothing throws, every frame is counted once, everything emitted verifies, and
 * no NA ever claims an address that is not the gateway's.
 */
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import {
  ETH_HLEN, ICMP6_TYPE, IP6, IP6_HLEN, NDOPT, NDP_OK, checkIpv6, checkNd, dnsNames, formatIp6, icmp6SumOk, ip6Equal, ip6Upper,
  ndDnsLifetime, ndDnsslNames, ndMtu, ndNaFlags, ndOptLla, ndOption, ndPrefixFlags, ndPrefixPreferred, ndPrefixValid,
  ndRaFlags, ndRaLifetime, ndRdnssAt, ndTarget, newIp6Upper, parseIp6, read16, readMac, write16, writeIcmp6Checksum,
  writeIcmp6Echo, writeIp6, writeMac, writeNa, writeNs, writeOptLla, writeRs, writeSolicitedNode,
} from '@vswitch/switch';
import { LIMIT } from './limits.js';
import { MAX_INITIAL_INTERVAL_MS, MIN_DELAY_BETWEEN_RAS_MS, Nd6, type Ipv6Options } from './nd.js';

vi.setConfig({ testTimeout: 120_000 });
const RUNS = Number(process.env.FUZZ_RUNS ?? 2000);

const A = (s: string): Uint8Array => parseIp6(s)!;
const GW_MAC = 0x02000a0a0a01;
const VM_MAC = 0x525400000001;
const GW = A('fd00:10::1');
const GW_LL = A('fe80::aff:fe0a:a01');
const VM = A('fd00:10::5054:ff:fe00:1');
const VM_LL = A('fe80::5054:ff:fe00:1');

function rig(opts: Partial<Ipv6Options> = {}, limited = new Set<number>()) {
  const clock = { now: 1000 };
  const out: Uint8Array[] = [];
  const asked: number[] = [];
  let r = 0.5;
  const nd = new Nd6({
    mac: GW_MAC,
    clock: () => clock.now,
    emit: (buf, off, len) => out.push(buf.slice(off, off + len)),
    limit: (kind) => { asked.push(kind); return !limited.has(kind); },
  }, {
    address: GW, prefixLen: 64, mode: 'slaac', intervalSec: 600, validLifetime: 86400, preferredLifetime: 14400, rdnss: [], dnssl: [],
    ...opts,
  }, () => r);
  return { nd, clock, out, asked, setRandom: (v: number) => { r = v; } };
}

/** An ICMPv6 frame from the VM; `build` writes the message at l4 and returns its length. */
function frame(build: (b: Uint8Array, l4: number) => number, src = VM_LL, dst = GW_LL, opts: { hl?: number; dstMac?: number; srcMac?: number; badSum?: boolean } = {}): Uint8Array {
  const b = new Uint8Array(400);
  const l4 = ETH_HLEN + IP6_HLEN;
  const n = build(b, l4);
  writeMac(b, 0, opts.dstMac ?? GW_MAC);
  writeMac(b, 6, opts.srcMac ?? VM_MAC);
  write16(b, 12, 0x86dd);
  writeIp6(b, ETH_HLEN, n, 58, opts.hl ?? 255, src, 0, dst, 0);
  writeIcmp6Checksum(b, ETH_HLEN, l4, n);
  if (opts.badSum) b[l4 + 2] ^= 0xff;
  return b.subarray(0, l4 + n);
}

interface Parsed { ethDst: number; ethSrc: number; src: string; dst: string; hl: number; type: number; l4: number; n: number; f: Uint8Array }

/** Checks an emitted frame: IPv6 whole, ICMPv6 checksum verifies, ND messages pass checkNd. */
function parse(f: Uint8Array): Parsed {
  expect(read16(f, 12)).toBe(0x86dd);
  expect(checkIpv6(f, ETH_HLEN, f.length - ETH_HLEN)).toBe(0);
  const u = newIp6Upper();
  expect(ip6Upper(f, ETH_HLEN, u)).toBe(0);
  expect(u.proto).toBe(58);
  expect(icmp6SumOk(f, ETH_HLEN, u.off, u.len)).toBe(true);
  const type = f[u.off];
  if (type >= 133 && type <= 137) expect(checkNd(f, ETH_HLEN, u.off, u.len)).toBe(NDP_OK);
  return {
    ethDst: readMac(f, 0), ethSrc: readMac(f, 6), src: formatIp6(f, ETH_HLEN + IP6.SRC), dst: formatIp6(f, ETH_HLEN + IP6.DST),
    hl: f[ETH_HLEN + IP6.HLIM], type, l4: u.off, n: u.len, f,
  };
}

describe('Router Advertisements', () => {
  it('carry the mode\'s flags, the prefix, MTU, RDNSS, DNSSL and router lifetime 0, from the link-local address to all-nodes', () => {
    for (const [mode, raFlags, pflags] of [['slaac', 0, 0xc0], ['dhcpv6', 0xc0, 0x80], ['both', 0xc0, 0xc0]] as const) {
      const { nd, out } = rig({ mode, mtu: 1400, rdnss: [A('fd00:10::53')], dnssl: ['lab.example'], intervalSec: 200 });
      nd.start();
      expect(nd.poll(1000)).toBeGreaterThan(1000);
      expect(out).toHaveLength(1);
      const p = parse(out[0]);
      expect([p.ethDst, p.ethSrc, p.src, p.dst, p.hl, p.type]).toEqual([0x333300000001, GW_MAC, formatIp6(GW_LL), 'ff02::1', 255, 134]);
      expect([ndRaFlags(p.f, p.l4), ndRaLifetime(p.f, p.l4)]).toEqual([raFlags, 0]);
      expect(ndOptLla(p.f, ndOption(p.f, p.l4, p.n, NDOPT.SLLA))).toBe(GW_MAC);
      expect(ndMtu(p.f, ndOption(p.f, p.l4, p.n, NDOPT.MTU))).toBe(1400);
      const pi = ndOption(p.f, p.l4, p.n, NDOPT.PREFIX);
      expect([ndPrefixFlags(p.f, pi), ndPrefixValid(p.f, pi), ndPrefixPreferred(p.f, pi), formatIp6(p.f, pi + 16), p.f[pi + 2]])
        .toEqual([pflags, 86400, 14400, 'fd00:10::', 64]);
      const rd = ndOption(p.f, p.l4, p.n, NDOPT.RDNSS);
      expect([formatIp6(p.f, ndRdnssAt(rd, 0)), ndDnsLifetime(p.f, rd)]).toEqual(['fd00:10::53', 600]);
      expect(ndDnsslNames(p.f, ndOption(p.f, p.l4, p.n, NDOPT.DNSSL))).toEqual(['lab.example']);
    }
    const { nd, out } = rig();
    nd.start();
    nd.poll(1000);
    const p = parse(out[0]);
    expect([ndOption(p.f, p.l4, p.n, NDOPT.MTU), ndOption(p.f, p.l4, p.n, NDOPT.RDNSS), ndOption(p.f, p.l4, p.n, NDOPT.DNSSL)]).toEqual([-1, -1, -1]);
    expect(formatIp6(nd.linkLocal)).toBe(formatIp6(GW_LL));
  });

  it('go out at start, the first three at most 16 s apart, then every interval/3 to interval; none before start', () => {
    const { nd, clock, out, setRandom } = rig({ intervalSec: 600 });
    expect(nd.poll(5000)).toBe(Infinity);
    expect(out).toHaveLength(0);
    nd.start();
    setRandom(1);
    const times: number[] = [];
    for (let i = 0; i < 6; i++) {
      const next = nd.poll(clock.now);
      times.push(clock.now);
      expect(nd.poll(next - 1)).toBe(next); // not early
      clock.now = next;
    }
    expect(out).toHaveLength(6);
    const gaps = times.slice(1).map((t, i) => t - times[i]);
    expect(gaps.slice(0, 3)).toEqual([MAX_INITIAL_INTERVAL_MS, MAX_INITIAL_INTERVAL_MS, MAX_INITIAL_INTERVAL_MS]);
    expect(gaps.slice(3)).toEqual([600_000, 600_000]);
    setRandom(0);
    const t = clock.now;
    expect(nd.poll(t) - t).toBe(200_000);
  });

  it('answer a Router Solicitation within 0.5 s, but not sooner than 3 s after the last multicast RA; rate-limited per port', () => {
    const { nd, clock, out, asked } = rig();
    nd.start();
    nd.poll(clock.now); // the first, at t=1000
    const rs = frame((b, l4) => writeRs(b, l4) + writeOptLla(b, l4 + 8, NDOPT.SLLA, VM_MAC), VM_LL, A('ff02::2'), { dstMac: 0x333300000002 });
    clock.now = 2000;
    nd.input(rs, rs.length);
    expect(nd.counters.rsReceived).toBe(1);
    expect(asked).toContain(LIMIT.nd);
    expect(nd.nextRaAt).toBe(1000 + MIN_DELAY_BETWEEN_RAS_MS);
    clock.now = 10_000;
    nd.poll(clock.now);
    expect(out).toHaveLength(2);
    clock.now = 20_000;
    nd.input(rs, rs.length);
    expect(nd.nextRaAt).toBe(20_250); // random 0.5 x 500 ms
    // From :: (no SLLA) too.
    const rs0 = frame((b, l4) => writeRs(b, l4), A('::'), A('ff02::2'), { dstMac: 0x333300000002 });
    nd.input(rs0, rs0.length);
    expect(nd.counters.rsReceived).toBe(3);
    const lim = rig({}, new Set([LIMIT.nd]));
    lim.nd.start();
    lim.nd.poll(1000);
    const due = lim.nd.nextRaAt;
    lim.clock.now = 5000;
    lim.nd.input(rs, rs.length);
    expect(lim.nd.counters.rsReceived).toBe(0);
    expect(lim.nd.nextRaAt).toBe(due);
  });

  it('advertises the router lifetime the router sets (routerLifetime), 0 in the last RA', () => {
    const { nd, clock, out } = rig({ intervalSec: 600 });
    nd.routerLifetime = 1800;
    nd.start();
    nd.poll(clock.now);
    expect(ndRaLifetime(parse(out[0]).f, parse(out[0]).l4)).toBe(1800);
    expect(nd.describe().routerLifetime).toBe(1800);
    nd.routerLifetime = 0;
    clock.now += 1_000_000;
    nd.poll(clock.now);
    expect(ndRaLifetime(parse(out[1]).f, parse(out[1]).l4)).toBe(0);
    expect(nd.describe().routerLifetime).toBe(0);
    nd.routerLifetime = 1800;
    nd.stop();
    expect(ndRaLifetime(parse(out[out.length - 1]).f, parse(out[out.length - 1]).l4)).toBe(0);
  });

  it('stop sends one last RA with every lifetime 0 and nothing after; a network that never advertised sends none', () => {
    const { nd, clock, out } = rig({ rdnss: [A('fd00:10::53')], dnssl: ['lab.example'] });
    nd.start();
    nd.poll(clock.now);
    nd.stop();
    nd.stop();
    expect(out).toHaveLength(2);
    const p = parse(out[1]);
    const pi = ndOption(p.f, p.l4, p.n, NDOPT.PREFIX);
    expect([ndRaLifetime(p.f, p.l4), ndPrefixValid(p.f, pi), ndPrefixPreferred(p.f, pi),
      ndDnsLifetime(p.f, ndOption(p.f, p.l4, p.n, NDOPT.RDNSS)), ndDnsLifetime(p.f, ndOption(p.f, p.l4, p.n, NDOPT.DNSSL))]).toEqual([0, 0, 0, 0, 0]);
    expect(nd.poll(clock.now + 10_000_000)).toBe(Infinity);
    const rs = frame((b, l4) => writeRs(b, l4), VM_LL, A('ff02::2'));
    nd.input(rs, rs.length);
    expect(nd.poll(clock.now + 20_000_000)).toBe(Infinity);
    expect(out).toHaveLength(2);
    const never = rig();
    never.nd.stop();
    expect(never.out).toHaveLength(0);
  });
});

describe('Neighbor Solicitation and echo', () => {
  const sn = (t: Uint8Array): Uint8Array => { const a = new Uint8Array(16); writeSolicitedNode(a, 0, t, 0); return a; };

  it('answers an NS for either of its addresses with a solicited NA (R, S, O, its MAC) to the solicitor\'s SLLA', () => {
    for (const target of [GW, GW_LL]) {
      const { nd, out } = rig();
      const ns = frame((b, l4) => writeNs(b, l4, target, 0) + writeOptLla(b, l4 + 24, NDOPT.SLLA, 0x525400000099), VM, sn(target), { dstMac: 0x3333ff000001 });
      nd.input(ns, ns.length);
      expect(out).toHaveLength(1);
      const p = parse(out[0]);
      expect([p.type, p.ethDst, p.src, p.dst, ndNaFlags(p.f, p.l4)]).toEqual([136, 0x525400000099, formatIp6(target), formatIp6(VM), 0xe0]);
      expect(ip6Equal(p.f, ndTarget(p.l4), target, 0)).toBe(true);
      expect(ndOptLla(p.f, ndOption(p.f, p.l4, p.n, NDOPT.TLLA))).toBe(GW_MAC);
      expect(nd.counters.nsAnswered).toBe(1);
    }
  });

  it('defends its addresses against a DAD probe (NA to all-nodes, not solicited) and never answers for a VM\'s address', () => {
    const { nd, out } = rig();
    const dad = frame((b, l4) => writeNs(b, l4, GW, 0), A('::'), sn(GW), { dstMac: 0x3333ff000001 });
    nd.input(dad, dad.length);
    const p = parse(out[0]);
    expect([p.ethDst, p.dst, ndNaFlags(p.f, p.l4)]).toEqual([0x333300000001, 'ff02::1', 0xa0]);
    for (const f of [
      frame((b, l4) => writeNs(b, l4, VM, 0), A('::'), sn(VM), { dstMac: 0x3333ff000001 }),
      frame((b, l4) => writeNs(b, l4, VM, 0) + writeOptLla(b, l4 + 24, NDOPT.SLLA, VM_MAC), A('fd00:10::99'), sn(VM)),
      frame((b, l4) => writeNs(b, l4, A('fd00:10::2'), 0) + writeOptLla(b, l4 + 24, NDOPT.SLLA, VM_MAC), VM, GW),
    ]) nd.input(f, f.length);
    expect(out).toHaveLength(1);
    expect(nd.counters.ignored).toBe(3);
  });

  it('drops what RFC 4861 says to (hop limit, bad checksum), and what its port has no token for', () => {
    const { nd, out } = rig();
    const ns = (o: { hl?: number; badSum?: boolean }) => frame((b, l4) => writeNs(b, l4, GW, 0) + writeOptLla(b, l4 + 24, NDOPT.SLLA, VM_MAC), VM, sn(GW), o);
    for (const f of [ns({ hl: 64 }), ns({ badSum: true })]) nd.input(f, f.length);
    expect(out).toHaveLength(0);
    expect(nd.counters.malformed).toBe(2);
    const lim = rig({}, new Set([LIMIT.nd]));
    const f = ns({});
    lim.nd.input(f, f.length);
    expect(lim.out).toHaveLength(0);
    expect(lim.nd.counters.nsAnswered).toBe(0);
  });

  it('answers echo to either address from that address, with the request\'s id, sequence and data', () => {
    for (const to of [GW, GW_LL]) {
      const { nd, out, asked } = rig();
      const req = frame((b, l4) => { writeIcmp6Echo(b, l4, ICMP6_TYPE.ECHO_REQUEST, 0x4242, 9); b.fill(0x77, l4 + 8, l4 + 64); return 64; }, VM, to, { hl: 64 });
      nd.input(req, req.length);
      const p = parse(out[0]);
      expect([p.type, p.src, p.dst, p.ethDst, read16(p.f, p.l4 + 4), read16(p.f, p.l4 + 6), p.n]).toEqual([129, formatIp6(to), formatIp6(VM), VM_MAC, 0x4242, 9, 64]);
      expect(p.f.subarray(p.l4 + 8).every((x) => x === 0x77)).toBe(true);
      expect(asked).toEqual([LIMIT.icmp]);
    }
    const { nd, out } = rig();
    const other = frame((b, l4) => writeIcmp6Echo(b, l4, ICMP6_TYPE.ECHO_REQUEST, 1, 1), VM, A('fd00:10::77'), { hl: 64 });
    nd.input(other, other.length);
    const mcast = frame((b, l4) => writeIcmp6Echo(b, l4, ICMP6_TYPE.ECHO_REQUEST, 1, 1), VM, A('ff02::1'), { hl: 64, dstMac: 0x333300000001 });
    nd.input(mcast, mcast.length);
    expect(out).toHaveLength(0);
    expect(nd.counters.ignored).toBe(2);
  });
});

describe('random IPv6 frames into the gateway (fast-check)', () => {
  const u8 = fc.integer({ min: 0, max: 255 });
  const addr = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(GW, GW_LL) },
    fc.constantFrom(GW, GW_LL, VM, VM_LL, A('::'), A('ff02::1'), A('ff02::2'), A('ff02::1:ff00:1'), A('ff02::1:ff0a:a01'), A('fd00:10::2')),
    fc.uint8Array({ minLength: 16, maxLength: 16 }),
  );
  const msg = fc.oneof(
    fc.record({ t: addr, sl: fc.boolean() }).map(({ t, sl }) => (b: Uint8Array, l4: number) => writeNs(b, l4, t, 0) + (sl ? writeOptLla(b, l4 + 24, NDOPT.SLLA, VM_MAC) : 0)),
    fc.record({ t: addr, fl: u8 }).map(({ t, fl }) => (b: Uint8Array, l4: number) => writeNa(b, l4, fl, t, 0)),
    fc.boolean().map((sl) => (b: Uint8Array, l4: number) => writeRs(b, l4) + (sl ? writeOptLla(b, l4 + 8, NDOPT.SLLA, VM_MAC) : 0)),
    fc.record({ id: fc.nat(0xffff), len: fc.nat(100) }).map(({ id, len }) => (b: Uint8Array, l4: number) => writeIcmp6Echo(b, l4, 128, id, 1) + len),
    fc.uint8Array({ minLength: 4, maxLength: 80 }).map((x) => (b: Uint8Array, l4: number) => { b.set(x, l4); return x.length; }),
  );
  const anyFrame = fc.record({
    build: msg, src: addr, dst: addr, hl: fc.oneof({ weight: 3, arbitrary: fc.constant(255) }, { weight: 1, arbitrary: u8 }),
    badSum: fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
    edits: fc.oneof({ weight: 3, arbitrary: fc.constant([] as [number, number][]) }, { weight: 1, arbitrary: fc.array(fc.tuple(fc.nat(), u8), { maxLength: 4 }) }),
    cut: fc.oneof({ weight: 3, arbitrary: fc.constant(-1) }, { weight: 1, arbitrary: fc.nat(140) }),
  }).map((r) => {
    let f = frame(r.build, r.src, r.dst, { hl: r.hl, badSum: r.badSum }).slice();
    for (const [pos, v] of r.edits) f[pos % f.length] = v;
    if (r.cut >= 0 && r.cut < f.length) f = f.slice(0, r.cut);
    return f;
  });

  it('nothing throws, each frame is counted once, every frame emitted verifies, and no NA claims an address but the gateway\'s', () => {
    const { nd, out } = rig();
    nd.start();
    let answered = 0;
    fc.assert(fc.property(anyFrame, (f) => {
      const before = { ...nd.counters };
      const n = out.length;
      nd.input(f, f.length);
      const c = nd.counters;
      const moved = (c.ignored - before.ignored) + (c.malformed - before.malformed) + (c.nsAnswered - before.nsAnswered) +
        (c.echoReplies - before.echoReplies) + (c.rsReceived - before.rsReceived) + (c.naReceived - before.naReceived);
      expect(moved).toBe(1);
      expect(c.rxFrames - before.rxFrames).toBe(1);
      for (const e of out.slice(n)) {
        const p = parse(e);
        expect(p.ethSrc).toBe(GW_MAC);
        if (p.type === 136) {
          answered++;
          const t = ndTarget(p.l4);
          expect(ip6Equal(p.f, t, GW, 0) || ip6Equal(p.f, t, GW_LL, 0)).toBe(true);
        }
      }
    }), { numRuns: RUNS });
    expect(answered).toBeGreaterThan(0);
  });

  it('dnsNames in the RA match what the config accepts', () => {
    expect(dnsNames(['lab.example'])).toBeDefined();
  });
});
