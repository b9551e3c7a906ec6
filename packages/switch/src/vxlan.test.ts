import * as netdev from '@vswitch/netdev';
import { describe, expect, it } from 'vitest';
import { DROP_REASONS } from './drop.js';
import { TestIo } from './testing/test-io.js';
import { Bridge } from './bridge.js';
import { VlanPolicy } from './vlan.js';
import { writeMac } from './wire/ethernet.js';
import { checkIpv4, IPV4_OK, writeIp4 } from './wire/ipv4.js';
import { ECN_CE, ECN_ECT0, ECN_ECT1, TOS_INHERIT } from './wire/ecn.js';
import { checkVxlan, writeVxlanHeader, VXLAN_OUTER_LEN } from './wire/vxlan.js';
import { parseIp6 } from './wire/ipv6.js';
import { Remote6Table, tunnelPortName, Vtep, type UnderlayIo } from './vxlan.js';

const LOCAL = 0x0a630001; // 10.99.0.1
const R1 = 0x0a630002;
const R2 = 0x0a630003;
const R3 = 0xc0a80005; // 192.168.0.5: above 2^31, compared as int32
const VM = 0x020000000001;
const FAR = 0x020000000002;
const FAR2 = 0x020000000003;
const BCAST = 0xffffffffffff;

interface Sent { dst: number; pkt: Uint8Array; tos: number }

class FakeUnderlay implements UnderlayIo {
  sent: Sent[] = [];
  send3(dst: number, a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number,
    c: Uint8Array, coff: number, clen: number, tos: number): number {
    const p = new Uint8Array(alen + blen + clen);
    p.set(a.subarray(aoff, aoff + alen), 0);
    p.set(b.subarray(boff, boff + blen), alen);
    p.set(c.subarray(coff, coff + clen), alen + blen);
    this.sent.push({ dst, pkt: p, tos });
    return p.length;
  }
  take(): Sent[] {
    const s = this.sent;
    this.sent = [];
    return s;
  }
}

function eth(dst: number, src: number, len = 60, vid?: number): Uint8Array {
  const f = new Uint8Array(len);
  writeMac(f, 0, dst);
  writeMac(f, 6, src);
  let p = 12;
  if (vid !== undefined) {
    f.set([0x81, 0, vid >> 8, vid & 255], 12);
    p = 16;
  }
  f[p] = 0x08;
  f[p + 1] = 0x06;
  for (let i = p + 2; i < len; i++) f[i] = i & 255;
  return f;
}

/** A UDP payload as the underlay socket delivers it: VXLAN header + inner frame, inside a larger buffer. */
function datagram(vni: number, inner: Uint8Array): { buf: Uint8Array; off: number; len: number } {
  const off = 10;
  const buf = new Uint8Array(off + 8 + inner.length + 3);
  writeVxlanHeader(buf, off, vni);
  buf.set(inner, off + 8);
  return { buf, off, len: 8 + inner.length };
}

function setup(opts: { mtu?: number; maxMacs?: number } = {}) {
  const br = new Bridge('br0', { clock: () => 0, maxEntries: opts.maxMacs });
  const vm10 = new TestIo();
  const vm20 = new TestIo();
  br.addPort('vm10', vm10, { vlan: VlanPolicy.from({ mode: 'access', vid: 10 }) });
  br.addPort('vm20', vm20, { vlan: VlanPolicy.from({ mode: 'access', vid: 20 }) });
  const u = new FakeUnderlay();
  const vtep = new Vtep(u, { local: LOCAL, mtu: opts.mtu });
  vtep.set([
    { bridge: br, vni: 100, vid: 10, flood: [R1, R2] },
    { bridge: br, vni: 200, vid: 20, flood: [R2, R3] },
  ]);
  return { br, vm10, vm20, u, vtep };
}

function decode(s: Sent): { vni: number; inner: Uint8Array; sport: number } {
  expect(checkIpv4(s.pkt, 0, s.pkt.length, true)).toBe(IPV4_OK);
  const dv = new DataView(s.pkt.buffer);
  expect(dv.getUint32(12)).toBe(LOCAL);
  expect(dv.getUint32(16)).toBe(s.dst >>> 0);
  expect(dv.getUint16(6) & 0x4000).toBe(0x4000);
  return { vni: checkVxlan(s.pkt, 28, s.pkt.length - 28), inner: s.pkt.subarray(VXLAN_OUTER_LEN), sport: dv.getUint16(20) };
}

describe('Vtep: tunnels are bridge ports', () => {
  it('makes one trunk port per remote VTEP, tagged in the mapped VLANs', () => {
    const { br } = setup();
    expect([...br.ports.keys()].sort()).toEqual(['vm10', 'vm20', 'vx-10.99.0.2', 'vx-10.99.0.3', 'vx-192.168.0.5']);
    const p = br.port(tunnelPortName(R2))!;
    expect(p.kind).toBe('vxlan');
    expect(p.vlan.members().map((m) => [m.vid, m.untagged])).toEqual([[10, false], [20, false]]);
  });

  it('floods by head-end replication to the VNI flood list only, untagged inner frame, VNI set', () => {
    const { vm10, vm20, u } = setup();
    const f = eth(BCAST, VM);
    vm10.inject(f);
    const sent = u.take();
    expect(sent.map((s) => s.dst).sort()).toEqual([R1, R2]);
    for (const s of sent) {
      const d = decode(s);
      expect(d.vni).toBe(100);
      expect([...d.inner]).toEqual([...f]);
    }
    expect(vm20.take()).toEqual([]);
    // VLAN 20 floods to VNI 200's list.
    vm20.inject(eth(BCAST, VM + 16));
    expect(u.take().map((s) => [s.dst >>> 0, decode(s).vni])).toEqual([[R2, 200], [R3 >>> 0, 200]]);
  });

  it('decapsulates into the VNI\'s VLAN, learns the MAC behind the remote, then unicasts only to it', () => {
    const { br, vm10, vm20, u, vtep } = setup();
    const d = datagram(100, eth(BCAST, FAR));
    vtep.receive(d.buf, d.off, d.len, R1);
    const got = vm10.take();
    expect(got.length).toBe(1);
    expect([...got[0]]).toEqual([...eth(BCAST, FAR)]);
    expect(vm20.take()).toEqual([]);
    // Split horizon: the broadcast went to no other remote.
    expect(u.take()).toEqual([]);
    expect(br.portName(br.fdb.lookup(10, FAR))).toBe('vx-10.99.0.2');
    vm10.inject(eth(FAR, VM));
    const s = u.take();
    expect(s.map((x) => x.dst)).toEqual([R1]);
    expect(decode(s[0]).vni).toBe(100);
    const seg = vtep.segments().find((x) => x.vni === 100)!;
    expect([seg.rxPackets, seg.rxBytes, seg.txPackets, seg.txBytes]).toEqual([1, 60, 1, 60]);
  });

  it('never sends from the overlay back into it (unicast to a MAC behind another remote is dropped)', () => {
    const { br, u, vtep } = setup();
    const a = datagram(100, eth(BCAST, FAR));
    vtep.receive(a.buf, a.off, a.len, R1);
    const b = datagram(100, eth(FAR, FAR2));
    vtep.receive(b.buf, b.off, b.len, R2);
    expect(u.take()).toEqual([]);
    // Counted as a frame for the segment it came from (forward.ts).
    expect(br.port('vx-10.99.0.2')!.counters().drops).toEqual({ dst_on_ingress: 1 });
  });

  it('a staged read batch (runs of one inner flow, two remotes, bad datagrams between) equals receive one by one', () => {
    const run = (staged: boolean) => {
      const t = setup();
      // FAR behind R1 and VM on vm10 known first, so the runs are known unicast.
      const hello = datagram(100, eth(BCAST, FAR));
      t.vtep.receive(hello.buf, hello.off, hello.len, R1);
      t.vm10.inject(eth(FAR, VM));
      t.u.take();
      t.vm10.take();
      const plan: [number, Uint8Array, number][] = [];
      for (let i = 0; i < 5; i++) plan.push([100, eth(VM, FAR, 60 + i), R1]);
      plan.push([999, eth(VM, FAR), R1]);
      for (let i = 0; i < 3; i++) plan.push([100, eth(VM, FAR, 70 + i), R1]);
      plan.push([100, eth(VM, FAR2), R2]);
      plan.push([100, eth(VM, FAR2, 61), R2]);
      plan.push([100, eth(VM, FAR, 62), R1]);
      const ds = plan.map(([vni, f]) => datagram(vni, f));
      // One buffer, as the ring: the datagrams one after another.
      const buf = new Uint8Array(ds.reduce((n, d) => n + d.buf.length, 0));
      let at = 0;
      const offs = ds.map((d) => { buf.set(d.buf, at); const o = at + d.off; at += d.buf.length; return o; });
      plan.forEach(([, , src], i) => (staged ? t.vtep.stage(buf, offs[i], ds[i].len, src) : t.vtep.receive(buf, offs[i], ds[i].len, src)));
      if (staged) t.vtep.flush();
      const ports = [...t.br.ports.values()].map((p) => [p.name, p.counters()]);
      return { out: t.vm10.take().map((f) => [...f]), ports, fwd: { ...t.br.counters },
        seg: t.vtep.segments().map((x) => [x.vni, x.rxPackets, x.rxBytes, x.txPackets, x.txBytes]), drops: t.vtep.dropCounts(),
        fdb: t.br.fdb.entries().map((e) => [e.vid, e.mac, e.port, e.updated]), runFrames: t.br.runFrames };
    };
    const one = run(false), staged = run(true);
    expect(one.out).toHaveLength(11);
    expect({ ...staged, runFrames: 0 }).toEqual({ ...one, runFrames: 0 });
    // Runs of 8 (the unknown VNI between is dropped before staging), 2 (R2) and 1 (R1 again).
    expect(staged.runFrames).toBe(7 + 1);
    expect(one.runFrames).toBe(0);
  });

  it('counts malformed, unknown-VNI and unknown-remote datagrams and delivers nothing', () => {
    const { vm10, vm20, vtep } = setup();
    const ok = datagram(100, eth(BCAST, FAR));
    vtep.receive(ok.buf, ok.off, 21, R1);
    const bad = datagram(100, eth(BCAST, FAR));
    bad.buf[bad.off] = 0x0c;
    vtep.receive(bad.buf, bad.off, bad.len, R1);
    const unk = datagram(999, eth(BCAST, FAR));
    vtep.receive(unk.buf, unk.off, unk.len, R1);
    const stranger = datagram(100, eth(BCAST, FAR));
    vtep.receive(stranger.buf, stranger.off, stranger.len, 0x0a630063);
    // R3 is a remote of VNI 200 only: known to the bridge, so admitted in VNI 100 as Linux would.
    expect(vtep.dropCounts()).toEqual({ truncated: 1, bad_flags: 1, unknown_vni: 1, unknown_remote: 1, ecn_not_ect: 0 });
    expect(vm10.take()).toEqual([]);
    expect(vm20.take()).toEqual([]);
  });

  it('refuses an inner frame that would not fit the underlay MTU (tunnel_mtu), DF never needed', () => {
    const { br, vm10, u } = setup({ mtu: 1500 });
    vm10.inject(eth(BCAST, VM, 1464)); // 1464 + 36 = 1500: fits
    expect(u.take().length).toBe(2);
    vm10.inject(eth(BCAST, VM, 1465));
    expect(u.take()).toEqual([]);
    expect(br.port('vx-10.99.0.2')!.counters().drops).toEqual({ tunnel_mtu: 1 });
  });

  it('static entries point at a remote; set() replaces them and removes tunnels no longer named', () => {
    const { br, vm10, u, vtep } = setup();
    vtep.set([{ bridge: br, vni: 100, vid: 10, flood: [R1], fdb: [{ mac: FAR, remote: R3 }] }]);
    expect([...br.ports.keys()].sort()).toEqual(['vm10', 'vm20', 'vx-10.99.0.2', 'vx-192.168.0.5']);
    expect(br.fdb.get(10, FAR)?.isStatic).toBe(true);
    vm10.inject(eth(FAR, VM));
    expect(u.take().map((s) => s.dst >>> 0)).toEqual([R3 >>> 0]);
    // R3 is not on VNI 100's flood list: a broadcast reaches R1 only.
    vm10.inject(eth(BCAST, VM));
    expect(u.take().map((s) => s.dst)).toEqual([R1]);
    // A datagram from R3 is admitted (it is a remote of this bridge) and learned there.
    const d = datagram(100, eth(VM, FAR2));
    vtep.receive(d.buf, d.off, d.len, R3);
    expect(vm10.take().length).toBe(1);
    vtep.set([]);
    expect([...br.ports.keys()].sort()).toEqual(['vm10', 'vm20']);
    expect(br.fdb.get(10, FAR)).toBeUndefined();
  });

  it('refuses a VNI or a VLAN mapped twice and changes nothing', () => {
    const { br, vtep } = setup();
    expect(() => vtep.set([{ bridge: br, vni: 1, vid: 10, flood: [] }, { bridge: br, vni: 1, vid: 11, flood: [] }])).toThrow(/VNI 1 is mapped twice/);
    expect(() => vtep.set([{ bridge: br, vni: 1, vid: 10, flood: [] }, { bridge: br, vni: 2, vid: 10, flood: [] }])).toThrow(/two VNIs/);
    expect(vtep.segments().map((s) => s.vni).sort()).toEqual([100, 200]);
  });

  it('a flood of random inner source MACs from a remote stays within the bridge table limit', () => {
    const { br, vtep } = setup({ maxMacs: 64 });
    for (let i = 0; i < 5000; i++) {
      const d = datagram(100, eth(BCAST, 0x020000100000 + i));
      vtep.receive(d.buf, d.off, d.len, R1);
      const r = datagram(0x100000 + i, eth(BCAST, 0x020000100000 + i));
      vtep.receive(r.buf, r.off, r.len, R1);
    }
    expect(br.fdb.size).toBeLessThanOrEqual(64);
    expect(vtep.dropCounts().unknown_vni).toBe(5000);
  });
});

describe('Vtep: a VM\'s TSO super-frame to a tunnel (the addon segments it: netdev vxlanBuildForTest)', () => {
  /** The underlay with the addon's segmentation, recording what sendmmsg would get. */
  class SegmentingUnderlay extends FakeUnderlay {
    calls = 0;
    /** v6: the IPv6 underlay's (outer = UDP + VXLAN, dst a remote id), as sendVxlan6. */
    constructor(readonly v6 = false) {
      super();
    }

    sendVxlan(dst: number, outer: Uint8Array, mtu: number, a: Uint8Array, aoff: number, b: Uint8Array, boff: number,
      blen: number, res: Int32Array, tos: number): number {
      this.calls++;
      const out = netdev.vxlanBuildForTest(outer, mtu, a, aoff, b, boff, blen, this.v6);
      if (!Array.isArray(out)) return out;
      let bytes = 0;
      for (const p of out) {
        this.sent.push({ dst, pkt: new Uint8Array(p), tos });
        bytes += p.length - (this.v6 ? 16 : VXLAN_OUTER_LEN);
      }
      res[0] = out.length;
      res[1] = bytes;
      return out.length;
    }
  }

  /** A TCPv4 frame from VM to FAR (10.0.0.1:40000 -> 10.0.0.2:5001) with `payload` bytes, its TCP checksum partial. */
  function tcpFrame(payload: number, tos = 0): Uint8Array {
    const f = new Uint8Array(14 + 20 + 20 + payload);
    writeMac(f, 0, FAR);
    writeMac(f, 6, VM);
    const dv = new DataView(f.buffer);
    dv.setUint16(12, 0x0800);
    f[14] = 0x45;
    f[15] = tos;
    dv.setUint16(16, 40 + payload);
    dv.setUint16(20, 0x4000);
    f[22] = 64;
    f[23] = 6;
    dv.setUint32(26, 0x0a000001);
    dv.setUint32(30, 0x0a000002);
    let s = 0;
    for (let i = 14; i < 34; i += 2) s += dv.getUint16(i);
    while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
    dv.setUint16(24, ~s & 0xffff);
    dv.setUint16(34, 40000);
    dv.setUint16(36, 5001);
    dv.setUint32(38, 1000);
    f[46] = 5 << 4;
    f[47] = 0x10;
    dv.setUint16(48, 5000);
    for (let i = 54; i < f.length; i++) f[i] = (i * 7) & 255;
    // The pseudo-header sum, as CHECKSUM_PARTIAL leaves it.
    let p = 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 6 + 20 + payload;
    while (p > 0xffff) p = (p & 0xffff) + (p >>> 16);
    dv.setUint16(50, p);
    return f;
  }

  /** Delivers `frame` with a virtio_net_hdr in front, as a TAP opened with the vnet header does. */
  function injectVnet(io: TestIo, frame: Uint8Array, gsoType: number, gsoSize: number): void {
    const buf = new Uint8Array(10 + frame.length);
    buf[0] = 1; // NEEDS_CSUM
    buf[1] = gsoType;
    new DataView(buf.buffer).setUint16(4, gsoSize, true);
    new DataView(buf.buffer).setUint16(6, 34, true);
    new DataView(buf.buffer).setUint16(8, 16, true);
    buf.set(frame, 10);
    io.rx.batch(buf, Int32Array.of(10), Int32Array.of(frame.length), 1, true);
  }

  it('sends every segment to the remote with the flow\'s source port, complete checksums, and counts it', () => {
    const br = new Bridge('br0', { clock: () => 0 });
    const vm = new TestIo();
    br.addPort('vm10', vm, { vlan: VlanPolicy.from({ mode: 'access', vid: 10 }) });
    const u = new SegmentingUnderlay();
    const vtep = new Vtep(u, { local: LOCAL });
    vtep.set([{ bridge: br, vni: 100, vid: 10, flood: [R1], fdb: [{ mac: FAR, remote: R1 }] }]);
    expect(br.port(tunnelPortName(R1))!.offload).toBe(true);

    // A complete frame of the flow takes the ordinary path (Vtep.encap, send3): its source port is the reference.
    vm.inject(tcpFrame(100));
    const plain = u.take();
    expect([u.calls, plain.length]).toEqual([0, 1]);
    const sport = decode(plain[0]).sport;
    // A checksum-partial one (no GSO) is completed by the underlay: same flow, same port.
    injectVnet(vm, tcpFrame(100), 0, 0);
    const partial = u.take();
    expect([u.calls, partial.length, decode(partial[0]).sport]).toEqual([1, 1, sport]);

    injectVnet(vm, tcpFrame(20000), 1, 1398);
    const sent = u.take();
    expect(u.calls).toBe(2);
    expect(sent.length).toBe(Math.ceil(20000 / 1398));
    let payload = 0;
    for (const s of sent) {
      expect(s.dst).toBe(R1);
      const { vni, inner, sport: sp } = decode(s);
      expect([vni, sp]).toEqual([100, sport]);
      expect(inner.length + VXLAN_OUTER_LEN).toBeLessThanOrEqual(1500);
      expect(checkIpv4(inner, 14, inner.length - 14, true)).toBe(IPV4_OK);
      payload += inner.length - 54;
    }
    expect(payload).toBe(20000);
    const seg = vtep.segments()[0];
    expect([seg.txSegmented, seg.txPackets]).toEqual([1, 2 + sent.length]);
    const port = br.port(tunnelPortName(R1))!;
    expect(port.txFrames).toBe(3);

    // From a VM whose MTU is above the documented one: refused whole, counted as tunnel_mtu.
    injectVnet(vm, tcpFrame(20000), 1, 1448);
    expect(u.take()).toEqual([]);
    expect(port.drops[DROP_REASONS.indexOf('tunnel_mtu')]).toBe(1);
  });

  it('over IPv6: one call with the remote\'s id and UDP + VXLAN, the MTU counted with the 40-byte IPv6 header', () => {
    const br = new Bridge('br0', { clock: () => 0 });
    const vm = new TestIo();
    br.addPort('vm10', vm, { vlan: VlanPolicy.from({ mode: 'access', vid: 10 }) });
    const u = new SegmentingUnderlay(true);
    const vtep = new Vtep(u, { local: 0, local6: parseIp6('fd00:99::1')!, mtu: 1500 });
    const r = vtep.remoteOf('fd00:99::2');
    vtep.set([{ bridge: br, vni: 100, vid: 10, flood: [r], fdb: [{ mac: FAR, remote: r }] }]);
    const port = br.port(vtep.portName(r))!;
    expect(port.offload).toBe(true);
    // The VM MTU over IPv6 is 1430: MSS 1390.
    injectVnet(vm, tcpFrame(20000), 1, 1390);
    const sent = u.take();
    expect([u.calls, sent.length]).toEqual([1, Math.ceil(20000 / 1390)]);
    let payload = 0;
    for (const s of sent) {
      const dv = new DataView(s.pkt.buffer);
      expect(s.dst).toBe(r);
      expect([dv.getUint16(2), dv.getUint16(4), dv.getUint16(6)], 'port, UDP length, checksum left to the kernel').toEqual([4789, s.pkt.length, 0]);
      expect(dv.getUint16(0)).toBe(new DataView(sent[0].pkt.buffer).getUint16(0));
      expect(checkVxlan(s.pkt, 8, s.pkt.length - 8)).toBe(100);
      const inner = s.pkt.subarray(16);
      expect(inner.length + 56).toBeLessThanOrEqual(1500);
      expect(checkIpv4(inner, 14, inner.length - 14, true)).toBe(IPV4_OK);
      payload += inner.length - 54;
    }
    expect(payload).toBe(20000);
    expect(vtep.segments()[0].txSegmented).toBe(1);
    // A VM at the IPv4 tunnel MTU (1450: MSS 1398) exceeds an IPv6 one: refused whole, tunnel_mtu.
    injectVnet(vm, tcpFrame(20000), 1, 1398);
    expect(u.take()).toEqual([]);
    expect(port.drops[DROP_REASONS.indexOf('tunnel_mtu')]).toBe(1);
  });

  it('gives every segment of a super-frame the outer DS field of its inner header (tos inherit, CE as ECT(0)), both families', () => {
    for (const v6 of [false, true]) {
      const br = new Bridge('br0', { clock: () => 0 });
      const vm = new TestIo();
      br.addPort('vm10', vm, { vlan: VlanPolicy.from({ mode: 'access', vid: 10 }) });
      const u = new SegmentingUnderlay(v6);
      const vtep = v6 ? new Vtep(u, { local: 0, local6: parseIp6('fd00:99::1')!, tos: TOS_INHERIT })
        : new Vtep(u, { local: LOCAL, tos: TOS_INHERIT });
      const r = v6 ? vtep.remoteOf('fd00:99::2') : R1;
      vtep.set([{ bridge: br, vni: 100, vid: 10, flood: [r], fdb: [{ mac: FAR, remote: r }] }]);
      injectVnet(vm, tcpFrame(20000, 0xb8 | ECN_CE), 1, 1390);
      const sent = u.take();
      expect(sent.length).toBe(Math.ceil(20000 / 1390));
      for (const s of sent) {
        expect(s.tos, 'what the underlay is told (IPv6: the traffic class cmsg)').toBe(0xb8 | ECN_ECT0);
        // IPv4: the header the addon copies per segment carries it (the raw socket's and the UDP GSO IP_TOS cmsg's source).
        if (!v6) expect(s.pkt[1]).toBe(0xb8 | ECN_ECT0);
        // The inner header is the VM's: its CE stays.
        expect(s.pkt[(v6 ? 16 : VXLAN_OUTER_LEN) + 15]).toBe(0xb8 | ECN_CE);
      }
    }
  });
});

describe('Vtep: the outer DS field and ECN (RFC 6040 normal mode)', () => {
  /** An IPv4/UDP frame VM -> FAR of DS field `tos` (header checksum complete). */
  function ip4(tos: number, dst = FAR, src = VM): Uint8Array {
    const f = new Uint8Array(14 + 20 + 8 + 18);
    writeMac(f, 0, dst);
    writeMac(f, 6, src);
    f[12] = 0x08;
    writeIp4(f, 14, f.length - 14, 7, 0x4000, 64, 17, 0x0a000001, 0x0a000002, tos);
    return f;
  }
  const outerTos = (s: Sent): number => s.pkt[1];

  it('copies the inner ECN field to the outer header, an inner CE as ECT(0); DSCP 0 unless configured', () => {
    const { vm10, u, vtep } = setup();
    for (const [inner, outer] of [[0xb8, 0], [0xb8 | ECN_ECT0, ECN_ECT0], [0x01, 0x01], [0xb8 | ECN_CE, ECN_ECT0]]) {
      vm10.inject(ip4(inner, BCAST));
      const sent = u.take();
      expect(sent.length).toBe(2);
      for (const s of sent) {
        decode(s); // the outer header checksum still verifies
        expect([outerTos(s), s.tos], `inner ${inner}`).toEqual([outer, outer]);
        expect(s.pkt[VXLAN_OUTER_LEN + 15]).toBe(inner);
      }
    }
    // A configured DSCP (changed at runtime: the next packet has it); its ECN bits never count.
    vtep.tos = 0x2b;
    vm10.inject(ip4(0xb8 | ECN_ECT1, BCAST));
    expect(u.take().map(outerTos)).toEqual([0x28 | ECN_ECT1, 0x28 | ECN_ECT1]);
    vm10.inject(eth(BCAST, VM)); // ARP: the configured value, Not-ECT
    expect(u.take().map(outerTos)).toEqual([0x28, 0x28]);
  });

  it('tos inherit: the inner DSCP too; a frame that is not IP gets 0', () => {
    const { vm10, u, vtep } = setup();
    vtep.tos = TOS_INHERIT;
    vm10.inject(ip4(0xb8, BCAST));
    expect(u.take().map(outerTos)).toEqual([0xb8, 0xb8]);
    vm10.inject(ip4(0x48 | ECN_CE, BCAST));
    expect(u.take().map(outerTos)).toEqual([0x48 | ECN_ECT0, 0x48 | ECN_ECT0]);
    vm10.inject(eth(BCAST, VM));
    expect(u.take().map(outerTos)).toEqual([0, 0]);
  });

  it('over IPv6 hands the underlay the traffic class (the kernel writes the header)', () => {
    const br = new Bridge('br0', { clock: () => 0 });
    const vm10 = new TestIo();
    br.addPort('vm10', vm10, { vlan: VlanPolicy.from({ mode: 'access', vid: 10 }) });
    const u = new FakeUnderlay();
    const vtep = new Vtep(u, { local: 0, local6: parseIp6('fd00:99::1')!, tos: TOS_INHERIT });
    vtep.set([{ bridge: br, vni: 100, vid: 10, flood: [vtep.remoteOf('fd00:99::2')] }]);
    vm10.inject(ip4(0xb8 | ECN_ECT1, BCAST));
    expect(u.take().map((s) => s.tos)).toEqual([0xb8 | ECN_ECT1]);
  });

  it('decapsulation: an outer CE marks an ECN-capable inner packet CE (checksum fixed), drops a Not-ECT one (ecn_not_ect)', () => {
    const { vm10, vtep } = setup();
    const seg = vtep.segment(100)!;
    const ce = datagram(100, ip4(0xb8 | ECN_ECT0, VM, FAR));
    vtep.receive(ce.buf, ce.off, ce.len, R1, 0x20 | ECN_CE);
    const got = vm10.take();
    expect(got.length).toBe(1);
    expect(got[0][15]).toBe(0xb8 | ECN_CE);
    expect(checkIpv4(got[0], 14, got[0].length - 14, true)).toBe(IPV4_OK);
    // Outer ECT(1) over inner ECT(0): ECT(1).
    const e1 = datagram(100, ip4(ECN_ECT0, VM, FAR));
    vtep.receive(e1.buf, e1.off, e1.len, R1, ECN_ECT1);
    expect(vm10.take().map((f) => f[15])).toEqual([ECN_ECT1]);
    // Outer ECT(0) or Not-ECT: the inner header as it came.
    for (const outer of [0, ECN_ECT0, 0xb8]) {
      const d = datagram(100, ip4(0xb8 | ECN_ECT1, VM, FAR));
      vtep.receive(d.buf, d.off, d.len, R1, outer);
      expect(vm10.take().map((f) => f[15])).toEqual([0xb8 | ECN_ECT1]);
    }
    const rx = seg.rxPackets;
    const bad = datagram(100, ip4(0xb8, VM, FAR));
    vtep.receive(bad.buf, bad.off, bad.len, R1, ECN_CE);
    expect(vm10.take()).toEqual([]);
    expect(vtep.dropCounts().ecn_not_ect).toBe(1);
    expect(seg.rxPackets).toBe(rx);
    // A frame that is not IP under an outer CE passes (Linux: no ECN to look at).
    const arp = datagram(100, eth(VM, FAR));
    vtep.receive(arp.buf, arp.off, arp.len, R1, ECN_CE);
    expect(vm10.take().length).toBe(1);
  });

  it('ecn off (vxlan.ecn: off, at runtime): outer headers Not-ECT, the DSCP still set; the outer ECN field ignored on receive', () => {
    const { vm10, u, vtep } = setup();
    vtep.tos = TOS_INHERIT;
    vtep.ecn = false;
    vm10.inject(ip4(0xb8 | ECN_ECT0, BCAST));
    expect(u.take().map((s) => [outerTos(s), s.tos])).toEqual([[0xb8, 0xb8], [0xb8, 0xb8]]);
    const ce = datagram(100, ip4(0xb8 | ECN_ECT0, VM, FAR));
    vtep.receive(ce.buf, ce.off, ce.len, R1, ECN_CE);
    expect(vm10.take().map((f) => f[15])).toEqual([0xb8 | ECN_ECT0]);
    const notEct = datagram(100, ip4(0xb8, VM, FAR));
    vtep.receive(notEct.buf, notEct.off, notEct.len, R1, ECN_CE);
    expect(vm10.take().map((f) => f[15])).toEqual([0xb8]);
    expect(vtep.dropCounts().ecn_not_ect).toBe(0);
    vtep.ecn = true;
    vm10.inject(ip4(0xb8 | ECN_ECT0, BCAST));
    expect(u.take().map(outerTos)).toEqual([0xb8 | ECN_ECT0, 0xb8 | ECN_ECT0]);
  });
});

describe('Vtep over an IPv6 underlay', () => {
  const A6 = (s: string): Uint8Array => parseIp6(s)!;
  function setup6(mtu?: number) {
    const br = new Bridge('br0', { clock: () => 0 });
    const vm10 = new TestIo();
    br.addPort('vm10', vm10, { vlan: VlanPolicy.from({ mode: 'access', vid: 10 }) });
    const u = new FakeUnderlay();
    const vtep = new Vtep(u, { local: 0, local6: A6('fd00:99::1'), mtu });
    const r1 = vtep.remoteOf('fd00:99::2');
    const r2 = vtep.remoteOf('fd00:99:0:0:0:0:0:3');
    vtep.set([{ bridge: br, vni: 100, vid: 10, flood: [r1, r2] }]);
    return { br, vm10, u, vtep, r1, r2 };
  }

  it('interns remotes as small ids (one per address, whatever its spelling) and names ports vx-<RFC 5952 text>', () => {
    const { br, vtep, r1, r2 } = setup6();
    expect([r1, r2]).toEqual([1, 2]);
    expect(vtep.remoteOf('FD00:99:0::2')).toBe(r1);
    expect(vtep.remoteOf('10.0.0.1')).toBe(-1);
    expect(vtep.remoteOf('fd00::zz')).toBe(-1);
    expect(vtep.overhead).toBe(70);
    expect([...br.ports.keys()].sort()).toEqual(['vm10', 'vx-fd00:99::2', 'vx-fd00:99::3']);
    expect(vtep.remotes6.find(A6('fd00:99::3'), 0)).toBe(r2);
    expect(vtep.remotes6.find(A6('fd00:99::4'), 0)).toBe(0);
    // The table grows past its first allocation and keeps finding every address.
    const t = new Remote6Table();
    const ids = Array.from({ length: 100 }, (_, i) => t.intern(A6(`2001:db8::${(i + 1).toString(16)}`)));
    expect(ids).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    expect(t.find(A6('2001:db8::64'), 0)).toBe(100);
  });

  it('frees the ids no segment uses after set() and reuses them: the table follows the remotes in use', () => {
    const { br, vtep, r1 } = setup6();
    expect(vtep.remotes6.size).toBe(2);
    for (let i = 0; i < 50; i++) {
      const r = vtep.remoteOf(`fd00:98::${(i + 1).toString(16)}`);
      vtep.set([{ bridge: br, vni: 100, vid: 10, flood: [r1, r] }]);
      expect(vtep.remotes6.size).toBe(2);
    }
    expect(vtep.remotes6.addrs.length).toBeLessThanOrEqual(4);
    expect([...br.ports.keys()].sort()).toEqual(['vm10', 'vx-fd00:98::32', 'vx-fd00:99::2']);
    expect(vtep.remotes6.find(A6('fd00:99::3'), 0)).toBe(0);
    expect(vtep.remotes6.find(A6('fd00:98::32'), 0)).toBeGreaterThan(0);
    vtep.close();
    expect(vtep.remotes6.size).toBe(0);
  });

  it('sends UDP + VXLAN to the remote id (the kernel adds IPv6 and the checksum), refuses what exceeds MTU - 70', () => {
    const { vm10, u, r1, r2 } = setup6(1500);
    const f = eth(BCAST, VM);
    vm10.inject(f);
    const sent = u.take();
    expect(sent.map((s) => s.dst).sort()).toEqual([r1, r2]);
    for (const s of sent) {
      const dv = new DataView(s.pkt.buffer);
      expect(dv.getUint16(0)).toBeGreaterThanOrEqual(49152);
      expect(dv.getUint16(2)).toBe(4789);
      expect(dv.getUint16(4)).toBe(16 + f.length);
      expect(dv.getUint16(6)).toBe(0);
      expect(checkVxlan(s.pkt, 8, s.pkt.length - 8)).toBe(100);
      expect([...s.pkt.subarray(16)]).toEqual([...f]);
    }
    // 1430 inner bytes + 70 = 1500 fits; one more does not (tunnel_mtu on each tunnel port).
    vm10.inject(eth(BCAST, VM, 1430 + 14));
    expect(u.take().length).toBe(2);
    vm10.inject(eth(BCAST, VM, 1431 + 14));
    expect(u.take().length).toBe(0);
  });

  it('takes datagrams from a known IPv6 sender (by id) into the VNI\'s VLAN; a stranger (id 0) is unknown_remote', () => {
    const { br, vm10, vtep, r2 } = setup6();
    const d = datagram(100, eth(BCAST, FAR));
    vtep.receive(d.buf, d.off, d.len, r2);
    expect(vm10.take().length).toBe(1);
    expect(br.fdb.get(10, FAR)?.port).toBe(br.port('vx-fd00:99::3')!.id);
    const e = datagram(100, eth(BCAST, FAR2));
    vtep.receive(e.buf, e.off, e.len, 0);
    expect(vm10.take()).toEqual([]);
    expect(vtep.dropCounts().unknown_remote).toBe(1);
  });
});

describe('Vtep: the control plane\'s incremental entries (EVPN)', () => {
  const R4 = 0x0a630009;

  it('a type-3 remote joins the flood list through its own tunnel port; removing it removes the port, a static one stays', () => {
    const { br, u, vm10, vtep } = setup();
    expect(vtep.addFloodRemote(100, R4)).toBe(true);
    expect(br.port(tunnelPortName(R4))?.kind).toBe('vxlan');
    vm10.inject(eth(BCAST, VM));
    expect(u.take().map((s) => s.dst).sort()).toEqual([R1, R2, R4]);
    // R1 is on the static list too: the route's withdrawal does not take it off.
    vtep.addFloodRemote(100, R1);
    vtep.removeFloodRemote(100, R1);
    vtep.removeFloodRemote(100, R4);
    expect(br.port(tunnelPortName(R4))).toBeUndefined();
    vm10.inject(eth(BCAST, VM));
    expect(u.take().map((s) => s.dst).sort()).toEqual([R1, R2]);
    expect(vtep.addFloodRemote(999, R4)).toBe(false);
  });

  it('a type-2 MAC is a remote entry: unicast goes to its remote, it never ages, a static entry wins, set() keeps it', () => {
    const { br, u, vm10, vtep } = setup();
    expect(vtep.addRemoteMac(100, FAR, R4)).toBeUndefined();
    const e = br.fdb.get(10, FAR)!;
    expect([e.isStatic, e.remote, br.portName(e.port)]).toEqual([true, true, 'vx-10.99.0.9']);
    vm10.inject(eth(FAR, VM));
    expect(u.take().map((s) => s.dst)).toEqual([R4]);
    br.sweep(10_000_000);
    expect(br.fdb.get(10, FAR)).toBeDefined();
    // The config's own entries are rebuilt by set(); the control plane's survive it.
    vtep.set([{ bridge: br, vni: 100, vid: 10, flood: [R1] }, { bridge: br, vni: 200, vid: 20, flood: [], fdb: [{ mac: FAR2, remote: R2 }] }]);
    expect(br.portName(br.fdb.lookup(10, FAR))).toBe('vx-10.99.0.9');
    expect(vtep.addRemoteMac(200, FAR2, R4)).toBe('static_conflict');
    expect(vtep.addRemoteMac(300, FAR2, R4)).toBe('unknown_vni');
    // A newer route moves the MAC to another remote; the withdrawal removes it and the unused tunnel.
    vtep.addRemoteMac(100, FAR, R1);
    expect(br.portName(br.fdb.lookup(10, FAR))).toBe('vx-10.99.0.2');
    expect(br.port(tunnelPortName(R4))).toBeUndefined();
    vtep.removeRemoteMac(100, FAR);
    expect(br.fdb.get(10, FAR)).toBeUndefined();
  });

  it('learning off: frames from the tunnels teach nothing, a remote MAC that sends from a local port moves here', () => {
    const br = new Bridge('br0', { clock: () => 0 });
    const vm = new TestIo();
    br.addPort('vm', vm, { vlan: VlanPolicy.from({ mode: 'access', vid: 10 }) });
    const vtep = new Vtep(new FakeUnderlay(), { local: LOCAL });
    vtep.set([{ bridge: br, vni: 100, vid: 10, flood: [R1], learning: false }]);
    const d = datagram(100, eth(BCAST, FAR));
    vtep.receive(d.buf, d.off, d.len, R1);
    expect(vm.take().length).toBe(1);
    expect(br.fdb.get(10, FAR)).toBeUndefined();
    vtep.addRemoteMac(100, FAR2, R1);
    // From the overlay the remote entry holds (a data-plane frame does not move it) ...
    const d2 = datagram(100, eth(BCAST, FAR2));
    vtep.receive(d2.buf, d2.off, d2.len, R1);
    expect(br.fdb.get(10, FAR2)?.remote).toBe(true);
    // ... from a local port the MAC has moved here: a dynamic entry, reported as added.
    const seen: [number, number][] = [];
    br.fdb.onChange = (e, how) => { seen.push([e.mac, how]); };
    vm.inject(eth(BCAST, FAR2));
    const e = br.fdb.get(10, FAR2)!;
    expect([e.isStatic, e.remote, br.portName(e.port)]).toEqual([false, false, 'vm']);
    expect(seen).toEqual([[FAR2, 3], [FAR2, 1]]);
  });
});
