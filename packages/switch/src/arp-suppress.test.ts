import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { TestIo } from './testing/test-io.js';
import { Bridge } from './bridge.js';
import { ArpSuppress } from './arp-suppress.js';
import { VlanPolicy } from './vlan.js';
import { readMac, writeMac } from './wire/ethernet.js';
import { arpOper, arpSha, arpSpa, arpTha, arpTpa } from './wire/arp.js';
import { parseIp6, writeIp6 } from './wire/ipv6.js';
import { icmp6SumOk, writeIcmp6Checksum, writeNs, writeOptLla } from './wire/icmp6.js';

const A = 0x020000000001;
const B = 0x020000000002;
const R = 0x02000000000b; // a remote VM (behind the tunnel)
const BCAST = 0xffffffffffff;
const ip = (s: string): number => s.split('.').reduce((a, x) => a * 256 + Number(x), 0);
const IP_A = ip('10.0.10.100');
const IP_R = ip('10.0.10.200');
const IP_X = ip('10.0.10.222');

function put16(f: Uint8Array, o: number, v: number): void { f[o] = v >>> 8; f[o + 1] = v & 0xff; }
function put32(f: Uint8Array, o: number, v: number): void { put16(f, o, Math.floor(v / 65536)); put16(f, o + 2, v & 0xffff); }

function arp(src: number, oper: number, sha: number, spa: number, tpa: number, tag?: number, dst = BCAST): Uint8Array {
  const t = tag === undefined ? 0 : 4;
  const f = new Uint8Array(60 + t);
  writeMac(f, 0, dst);
  writeMac(f, 6, src);
  if (tag !== undefined) { put16(f, 12, 0x8100); put16(f, 14, tag); }
  const l3 = 14 + t;
  put16(f, 12 + t, 0x0806);
  put16(f, l3, 1); put16(f, l3 + 2, 0x0800); f[l3 + 4] = 6; f[l3 + 5] = 4; put16(f, l3 + 6, oper);
  writeMac(f, l3 + 8, sha); put32(f, l3 + 14, spa);
  put32(f, l3 + 24, tpa);
  return f;
}

/** Two local ports (access VLAN 10, and a trunk carrying 10 tagged) and a tunnel-like port (horizon 1). */
function rig() {
  const br = new Bridge('br0', { clock: () => 1000 });
  const io = { a: new TestIo(), trunk: new TestIo(), vx: Object.assign(new TestIo(), { horizon: 1 }) };
  br.addPort('a', io.a, { vlan: VlanPolicy.from({ mode: 'access', vid: 10 }) });
  br.addPort('trunk', io.trunk, { vlan: VlanPolicy.from({ mode: 'trunk', allowed: [10] }) });
  br.addPort('vx', io.vx, { vlan: VlanPolicy.from({ mode: 'trunk', allowed: [10] }) });
  const sup = new ArpSuppress(4);
  sup.enable(10, true);
  sup.set(10, IP_R, R);
  br.arpSuppress = sup;
  return { br, io, sup };
}

describe('ARP suppression', () => {
  it('answers a request for a known IP to the asking port only, and forwards nothing', () => {
    const { io, sup } = rig();
    io.a.inject(arp(A, 1, A, IP_A, IP_R));
    const [reply, ...more] = io.a.take();
    expect(more).toEqual([]);
    expect(io.vx.take()).toEqual([]);
    expect(io.trunk.take()).toEqual([]);
    expect(readMac(reply, 0)).toBe(A);
    expect(readMac(reply, 6)).toBe(R);
    expect(reply.length).toBe(60);
    expect([arpOper(reply, 14), arpSha(reply, 14), arpSpa(reply, 14), arpTha(reply, 14), arpTpa(reply, 14)]).toEqual([2, R, IP_R, A, IP_A]);
    expect(sup.counters(10)).toMatchObject({ suppressed: 1, unknown: 0 });
  });

  it('answers a tagged request with a tagged reply in its VLAN', () => {
    const { io } = rig();
    io.trunk.inject(arp(B, 1, B, ip('10.0.10.101'), IP_R, 10));
    const [reply] = io.trunk.take();
    expect([reply[12], reply[13], reply[15]]).toEqual([0x81, 0x00, 10]);
    expect(arpSha(reply, 18)).toBe(R);
    expect(io.vx.take()).toEqual([]);
  });

  it('floods a request for an unknown IP as before, counted', () => {
    const { io, sup } = rig();
    io.a.inject(arp(A, 1, A, IP_A, IP_X));
    expect(io.vx.take()).toHaveLength(1);
    expect(io.a.take()).toEqual([]);
    expect(sup.counters(10).unknown).toBe(1);
  });

  it('does nothing in a VLAN where it is off, or for a request from the overlay', () => {
    const { io, sup } = rig();
    sup.enable(10, false);
    io.a.inject(arp(A, 1, A, IP_A, IP_R));
    expect(io.vx.take()).toHaveLength(1);
    sup.enable(10, true);
    io.vx.inject(arp(R + 1, 1, R + 1, IP_X, IP_R, 10));
    expect(io.a.take()).toHaveLength(1); // forwarded to the local ports
    expect(io.vx.take()).toEqual([]);
    expect(sup.counters(10).suppressed).toBe(0);
  });

  it('never learns from a gratuitous ARP or a reply', () => {
    const { io, sup } = rig();
    io.a.inject(arp(A, 2, A, IP_X, IP_R, undefined, R));
    io.a.inject(arp(A, 1, A, IP_R, IP_R)); // a VM announcing the remote's IP as its own
    io.a.inject(arp(A, 1, A, IP_X, IP_X));
    expect(sup.get(10, IP_X)).toBeUndefined();
    expect(sup.get(10, IP_R)).toBe(R);
    io.trunk.take();
    io.trunk.inject(arp(B, 1, B, ip('10.0.10.101'), IP_X, 10));
    expect(io.trunk.take()).toEqual([]); // still unknown: flooded, not answered
    expect(sup.counters(10).unknown).toBe(2);
  });

  it('DAD: a probe for an IP another host holds is answered; a probe (or announcement) answered with the asker\'s own MAC is not', () => {
    const { io, sup } = rig();
    io.a.inject(arp(A, 1, A, 0, IP_R));
    const [reply] = io.a.take();
    expect([arpOper(reply, 14), arpSha(reply, 14), arpTpa(reply, 14), arpTha(reply, 14)]).toEqual([2, R, 0, A]);
    sup.set(10, IP_A, A); // A's own binding, advertised by this host
    io.a.inject(arp(A, 1, A, 0, IP_A));
    expect(io.a.take()).toEqual([]);
    expect(io.vx.take()).toHaveLength(1);
    io.a.inject(arp(A, 1, A, IP_A, IP_A));
    expect(io.vx.take()).toHaveLength(1);
    expect(sup.counters(10)).toMatchObject({ suppressed: 1, passed: 2 });
  });

  it('forwards a broken ARP body, counted, and never throws on a truncated one', () => {
    const { io, sup } = rig();
    const bad = arp(A, 1, A, IP_A, IP_R);
    bad[18] = 8; // hlen 8
    io.a.inject(bad);
    io.a.inject(arp(A, 1, A, IP_A, IP_R).subarray(0, 30));
    expect(io.vx.take()).toHaveLength(2);
    expect(io.a.take()).toEqual([]);
    expect(sup.counters(10).malformed).toBe(2);
  });

  it('is bounded per VLAN: a set past maxPerVlan is refused and counted; delete frees room', () => {
    const sup = new ArpSuppress(2);
    expect(sup.set(10, 1, A)).toBe(true);
    expect(sup.set(10, 2, A)).toBe(true);
    expect(sup.set(20, 1, A)).toBe(true); // another VLAN's table
    expect(sup.set(10, 1, B)).toBe(true); // a change, not a new entry
    expect(sup.set(10, 3, B)).toBe(false);
    expect([sup.size, sup.count(10), sup.counters(10).full]).toEqual([3, 2, 1]);
    sup.delete(10, 1);
    expect(sup.set(10, 3, B)).toBe(true);
    sup.clear(10);
    expect(sup.size).toBe(1);
  });

  it('counts a refused write of the reply on the asking port', () => {
    const { br, io } = rig();
    io.a.fail = -105;
    io.a.inject(arp(A, 1, A, IP_A, IP_R));
    expect(br.port('a')!.counters().drops.tx_error).toBe(1);
    expect(io.vx.take()).toEqual([]);
  });

  describe('IPv6 neighbour solicitations', () => {
    const T6 = parseIp6('fd00::200')!;
    const A6 = parseIp6('fd00::100')!;
    const UNSPEC = new Uint8Array(16);
    const SNM = parseIp6('ff02::1:ff00:200')!;
    function ns(src: Uint8Array, target: Uint8Array, hop = 255): Uint8Array {
      const f = new Uint8Array(14 + 40 + 32);
      writeMac(f, 0, 0x3333ff000200);
      writeMac(f, 6, A);
      f[12] = 0x86; f[13] = 0xdd;
      let n = writeNs(f, 54, target, 0);
      if (src.some((x) => x !== 0)) n += writeOptLla(f, 54 + n, 1, A); // a DAD probe carries no SLLA (RFC 4861 7.1.1)
      const snm = SNM.slice();
      snm.set(target.subarray(13), 13); // the target's solicited-node group
      writeIp6(f, 14, n, 58, hop, src, 0, snm, 0);
      writeIcmp6Checksum(f, 14, 54, n);
      return f.subarray(0, 54 + n);
    }

    it('answers a solicitation for a known target with a solicited NA to the asker; unknown ones go on', () => {
      const { io, sup } = rig();
      expect(sup.set6(10, T6, R)).toBe(true);
      expect(sup.count(10)).toBe(2);
      io.a.inject(ns(A6, T6));
      const [na] = io.a.take();
      expect(io.vx.take()).toEqual([]);
      expect([readMac(na, 0), readMac(na, 6)]).toEqual([A, R]);
      expect(Buffer.from(na.subarray(22, 38))).toEqual(Buffer.from(T6)); // from the target
      expect(Buffer.from(na.subarray(38, 54))).toEqual(Buffer.from(A6)); // to the asker
      expect([na[54], na[58] & 0xe0]).toEqual([136, 0x60]); // NA, solicited + override
      expect(Buffer.from(na.subarray(62, 78))).toEqual(Buffer.from(T6));
      expect([na[78], na[79], readMac(na, 80)]).toEqual([2, 1, R]);
      expect(icmp6SumOk(na, 14, 54, 32)).toBe(true);
      io.a.inject(ns(A6, parseIp6('fd00::999')!));
      expect(io.vx.take()).toHaveLength(1);
      expect(sup.counters(10)).toMatchObject({ suppressed: 1, unknown: 1 });
    });

    it('DAD: a probe from :: for a held address is answered at all-nodes; the asker\'s own address is not; a bad hop limit is malformed', () => {
      const { io, sup } = rig();
      sup.set6(10, T6, R);
      sup.set6(10, A6, A);
      io.a.inject(ns(UNSPEC, T6));
      const [na] = io.a.take();
      expect(readMac(na, 0)).toBe(0x333300000001);
      expect(na[58] & 0xe0).toBe(0x20); // override only
      io.a.inject(ns(UNSPEC, A6));
      io.a.inject(ns(A6, T6, 64));
      expect(io.vx.take()).toHaveLength(2);
      expect(sup.counters(10)).toMatchObject({ suppressed: 1, passed: 1, malformed: 1 });
    });

    it('IPv6 entries share the VLAN\'s bound; delete6 frees; other IPv6 is forwarded untouched', () => {
      const { io } = rig();
      const sup = new ArpSuppress(2);
      sup.enable(10, true);
      expect(sup.set6(10, T6, R)).toBe(true);
      expect(sup.set(10, IP_R, R)).toBe(true);
      expect(sup.set6(10, A6, A)).toBe(false);
      expect(sup.counters(10).full).toBe(1);
      sup.delete6(10, T6);
      expect(sup.get6(10, T6)).toBeUndefined();
      expect(sup.set6(10, A6, A)).toBe(true);
      expect([sup.size, sup.get6(10, A6)]).toEqual([2, A]);
      const f = ns(A6, T6);
      f[54] = 128; // an echo request
      io.a.inject(f);
      expect(io.vx.take()).toHaveLength(1);
    });
  });

  it('never throws on random ARP and IPv6 bodies of any length, and never answers from an empty table', () => {
    const { io, sup } = rig();
    sup.set6(10, parseIp6('fd00::200')!, R);
    const empty = new ArpSuppress();
    empty.enable(10, true);
    fc.assert(fc.property(fc.uint8Array({ minLength: 14, maxLength: 120 }), fc.boolean(), (body, v6) => {
      const f = body.slice();
      writeMac(f, 6, A);
      f[12] = v6 ? 0x86 : 0x08;
      f[13] = v6 ? 0xdd : 0x06;
      io.a.inject(f);
      io.a.take();
      io.vx.take();
      return true;
    }), { numRuns: 2000 });
    const { br, io: io2 } = rig();
    br.arpSuppress = empty;
    io2.a.inject(arp(A, 1, A, IP_A, IP_R));
    expect(io2.a.take()).toEqual([]);
    expect(empty.counters(10).unknown).toBe(1);
  });
});
