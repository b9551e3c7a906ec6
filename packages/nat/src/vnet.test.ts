/*
 * Frames with a virtio_net_hdr through the router: vnet.ts's decisions, and a
 * Router (two interconnected networks, an uplink never attached) fed GSO
 * super-frames and checksum-partial frames from a VM (sendVnet) and from the
 * uplink (onIp). What comes out into the bridge is checked by cutting it with the
 * addon's segmenter (netdev segmentForTest, the code egress uses for ports without
 * offloads): every segment must carry valid checksums and the translated endpoints.
 */
import { segmentForTest } from '@vswitch/netdev';
import { checksum, parseIp4, pseudoSum, read16, read32, sum16, fold, type PortRx } from '@vswitch/switch';
import { describe, expect, it } from 'vitest';
import { ArpCache, ARP_DEFAULTS } from './arp-cache.js';
import { RouterNetwork } from './network.js';
import { Router } from './router.js';
import { VNET_COMPLETE, VNET_DROP, VNET_PARTIAL, holdCopy, vnetPrepare } from './vnet.js';

const ip = (s: string): number => parseIp4(s);
const PUB = ip('198.51.100.2');
const REMOTE = ip('203.0.113.9');
const A = ip('10.0.10.5');
const H20 = ip('10.0.20.5');
const MAC_A = 0x525400000005;
const MAC_H20 = 0x525400002005;
const NET10_MAC = 0x02000a0a0a01;
const NET20_MAC = 0x02000a0a1401;
const MSS = 1448;
const V = 10; // VNET_HDR_LEN
const E = 14; // ETH_HLEN

const ETH_TCP = 6;
const ETH_UDP = 17;

interface Pkt { proto: number; src: number; dst: number; sport: number; dport: number; payload: number; flags?: number; ttl?: number }

/**
 * buf = [virtio_net_hdr][Ethernet][IPv4][TCP/UDP][payload], the L4 checksum field
 * holding the folded pseudo-header sum (CHECKSUM_PARTIAL); `gso` gives a GSO type
 * and size, `hdr` overrides header fields. Returns the buffer; the frame is at V.
 */
function frame(p: Pkt, dstMac: number, srcMac: number, gso: readonly [type: number, size: number] | undefined, hdr: Partial<{ flags: number; start: number; off: number }> = {}): Buffer {
  const l4h = p.proto === ETH_TCP ? 20 : 8;
  const l4len = l4h + p.payload;
  const b = Buffer.alloc(V + E + 20 + l4len);
  const f = V;
  b.writeUIntBE(dstMac, f, 6);
  b.writeUIntBE(srcMac, f + 6, 6);
  b.writeUInt16BE(0x0800, f + 12);
  const i = f + E;
  b[i] = 0x45;
  b.writeUInt16BE(20 + l4len, i + 2);
  b.writeUInt16BE(0x4000, i + 6);
  b[i + 8] = p.ttl ?? 64;
  b[i + 9] = p.proto;
  b.writeUInt32BE(p.src >>> 0, i + 12);
  b.writeUInt32BE(p.dst >>> 0, i + 16);
  b.writeUInt16BE(checksum(b, i, 20), i + 10);
  const l4 = i + 20;
  b.writeUInt16BE(p.sport, l4);
  b.writeUInt16BE(p.dport, l4 + 2);
  for (let k = 0; k < p.payload; k++) b[l4 + l4h + k] = (k * 13 + (k >> 9)) & 0xff;
  let at: number;
  if (p.proto === ETH_TCP) {
    b.writeUInt32BE(1000, l4 + 4);
    b[l4 + 12] = 0x50;
    b[l4 + 13] = p.flags ?? 0x18;
    b.writeUInt16BE(64000, l4 + 14);
    at = 16;
  } else {
    b.writeUInt16BE(l4len, l4 + 4);
    at = 6;
  }
  b.writeUInt16BE(fold(pseudoSum(p.src >>> 0, p.dst >>> 0, p.proto, l4len)), l4 + at);
  b[0] = hdr.flags ?? 1;
  b[1] = gso?.[0] ?? 0;
  b.writeUInt16LE(gso ? E + 20 + l4h : 0, 2);
  b.writeUInt16LE(gso?.[1] ?? 0, 4);
  b.writeUInt16LE(hdr.start ?? E + 20, 6);
  b.writeUInt16LE(hdr.off ?? at, 8);
  return b;
}

/** The frame's IPv4 and L4 checksums verify. */
function checksumsOk(f: Uint8Array): boolean {
  const i = E;
  const hl = (f[i] & 0x0f) * 4;
  const total = read16(f, i + 2);
  if (fold(sum16(f, i, hl)) !== 0xffff) return false;
  const l4len = total - hl;
  return fold(sum16(f, i + hl, l4len, pseudoSum(read32(f, i + 12), read32(f, i + 16), f[i + 9], l4len))) === 0xffff;
}

/** Segments (or the completed frame) the addon makes of buf[V..] with its header at buf[0..V). */
const cut = (b: Uint8Array): Buffer[] => segmentForTest(b.subarray(0, V), b.subarray(V));

describe('vnetPrepare', () => {
  const at = (b: Buffer) => vnetPrepare(b, V + E, b.length - V - E);
  it('TCP/UDP with the partial checksum at its place go on partial, GSO or not', () => {
    expect(at(frame({ proto: ETH_TCP, src: A, dst: REMOTE, sport: 1, dport: 2, payload: 100 }, 0, 0, undefined))).toBe(VNET_PARTIAL);
    expect(at(frame({ proto: ETH_TCP, src: A, dst: REMOTE, sport: 1, dport: 2, payload: 5000 }, 0, 0, [1, MSS]))).toBe(VNET_PARTIAL);
    expect(at(frame({ proto: ETH_TCP, src: A, dst: REMOTE, sport: 1, dport: 2, payload: 5000 }, 0, 0, [0x81, MSS]))).toBe(VNET_PARTIAL);
    expect(at(frame({ proto: ETH_UDP, src: A, dst: REMOTE, sport: 1, dport: 2, payload: 5000 }, 0, 0, [5, 1200]))).toBe(VNET_PARTIAL);
    expect(at(frame({ proto: ETH_UDP, src: A, dst: REMOTE, sport: 1, dport: 2, payload: 50 }, 0, 0, undefined))).toBe(VNET_PARTIAL);
  });

  it('a header asking nothing is complete; a partial checksum elsewhere is completed here', () => {
    const b = frame({ proto: ETH_TCP, src: A, dst: REMOTE, sport: 1, dport: 2, payload: 100 }, 0, 0, undefined, { flags: 0 });
    expect(at(b)).toBe(VNET_COMPLETE);
    // csum_start 4 bytes into the TCP header (as if the ports were not summed), offset 12: still the TCP checksum field.
    const c = frame({ proto: ETH_TCP, src: A, dst: REMOTE, sport: 1, dport: 2, payload: 101 }, 0, 0, undefined, { start: E + 24, off: 12 });
    // Make the field what such a sender would leave: pseudo header plus the ports.
    const l4 = V + E + 20;
    c.writeUInt16BE(fold(read16(c, l4 + 16) + read16(c, l4) + read16(c, l4 + 2)), l4 + 16);
    expect(at(c)).toBe(VNET_COMPLETE);
    expect(c[0] & 1).toBe(0);
    expect(checksumsOk(c.subarray(V))).toBe(true);
  });

  it('drops GSO frames of a shape it cannot update, and offsets outside the frame', () => {
    expect(at(frame({ proto: ETH_UDP, src: A, dst: REMOTE, sport: 1, dport: 2, payload: 5000 }, 0, 0, [1, MSS]))).toBe(VNET_DROP);
    expect(at(frame({ proto: ETH_TCP, src: A, dst: REMOTE, sport: 1, dport: 2, payload: 5000 }, 0, 0, [4, MSS]))).toBe(VNET_DROP);
    expect(at(frame({ proto: ETH_TCP, src: A, dst: REMOTE, sport: 1, dport: 2, payload: 5000 }, 0, 0, [3, MSS]))).toBe(VNET_DROP);
    expect(at(frame({ proto: ETH_TCP, src: A, dst: REMOTE, sport: 1, dport: 2, payload: 5000 }, 0, 0, [1, MSS], { flags: 0 }))).toBe(VNET_DROP);
    expect(at(frame({ proto: ETH_TCP, src: A, dst: REMOTE, sport: 1, dport: 2, payload: 5000 }, 0, 0, [1, MSS], { start: E + 24 }))).toBe(VNET_DROP);
    expect(at(frame({ proto: ETH_TCP, src: A, dst: REMOTE, sport: 1, dport: 2, payload: 10 }, 0, 0, undefined, { start: 9000 }))).toBe(VNET_DROP);
    expect(at(frame({ proto: ETH_TCP, src: A, dst: REMOTE, sport: 1, dport: 2, payload: 10 }, 0, 0, undefined, { off: 9000 }))).toBe(VNET_DROP);
  });

  it('holdCopy keeps the header with the frame, or zeros for a complete one', () => {
    const b = frame({ proto: ETH_TCP, src: A, dst: REMOTE, sport: 1, dport: 2, payload: 3000 }, 0, 0, [1, MSS]);
    expect(holdCopy(b, V, b.length - V, true)).toEqual(b);
    const c = holdCopy(b, V, b.length - V, false);
    expect([...c.subarray(0, V)]).toEqual(new Array(V).fill(0));
    expect(c.subarray(V)).toEqual(b.subarray(V));
  });
});

describe('ArpCache holds frames up to a byte bound', () => {
  it('super-frames beyond pendingBytes are dropped and counted, and the count goes back down when released', () => {
    const arp = new ArpCache(() => 0);
    const big = Buffer.alloc(65_000);
    let held = 0;
    for (let i = 0; i < 200; i++) {
      arp.hold(0x0a000000 + i, big);
      if (arp.pendingBytes > held) held = arp.pendingBytes;
    }
    expect(held).toBeLessThanOrEqual(ARP_DEFAULTS.pendingBytes);
    expect(arp.counters.pendingDropped).toBe(200 - Math.floor(ARP_DEFAULTS.pendingBytes / 65_000));
    expect(arp.learn(0x0a000000, 1).length).toBe(1);
    expect(arp.pendingBytes).toBe(held - 65_000);
  });
});

interface Out { vnet: boolean; bytes: Buffer }

function rig() {
  const router = new Router({
    name: 'r0',
    clock: () => 1000,
    uplink: { ifname: 'vsvnet-none0', mac: 0x02000a0a6401, address: PUB, prefix: 24, gateway: ip('198.51.100.1') },
    interconnect: [['net10', 'net20']],
  });
  const out = { net10: [] as Out[], net20: [] as Out[] };
  const nets = {} as Record<'net10' | 'net20', RouterNetwork>;
  for (const [name, gw, mac, vlan] of [['net10', ip('10.0.10.1'), NET10_MAC, 10], ['net20', ip('10.0.20.1'), NET20_MAC, 20]] as const) {
    const net = new RouterNetwork({ name, vlan, gatewayIp: gw, prefix: 24, mac, clock: () => 1000 });
    router.addNetwork(net);
    const rx: PortRx = {
      batch: (buf, offs, lens, count, vnet) => {
        for (let i = 0; i < count; i++) out[name].push({ vnet: vnet === true, bytes: Buffer.from(buf.subarray(offs[i] - (vnet ? V : 0), offs[i] + lens[i])) });
      },
      frame: (buf, off, len) => { out[name].push({ vnet: false, bytes: Buffer.from(buf.subarray(off, off + len)) }); },
      gone: () => {},
      link: () => {},
    };
    net.start(rx);
    nets[name] = net;
  }
  return { router, nets, out };
}

/** sendVnet as the bridge calls it: the frame at V, its header before. */
const fromVm = (net: RouterNetwork, b: Buffer): number => net.sendVnet(b, V, b.length - V);

describe('the router with super-frames and partial checksums', () => {
  it('routes a VM\'s GSO super-frame to another network whole, TTL decremented, and it segments into valid frames', () => {
    const { nets, out } = rig();
    nets.net20.arp.learn(H20, MAC_H20);
    const b = frame({ proto: ETH_TCP, src: A, dst: H20, sport: 40000, dport: 80, payload: 30_000 }, NET10_MAC, MAC_A, [1, MSS]);
    fromVm(nets.net10, b);
    expect(out.net10).toEqual([]);
    expect(out.net20.length).toBe(1);
    const o = out.net20[0];
    expect(o.vnet).toBe(true);
    expect(o.bytes.length).toBe(b.length);
    expect(o.bytes.subarray(0, V)).toEqual(b.subarray(0, V)); // the header goes on as it came
    expect(o.bytes.readUIntBE(V, 6)).toBe(MAC_H20);
    expect(o.bytes[V + E + 8]).toBe(63);
    const segs = cut(o.bytes);
    expect(segs.length).toBe(Math.ceil(30_000 / MSS));
    for (const s of segs) expect(checksumsOk(s)).toBe(true);
  });

  it('NAT: a VM\'s SYN opens the session; the internet\'s GSO reply comes in whole, translated, partial checksum right', () => {
    const { router, nets, out } = rig();
    nets.net10.arp.learn(A, MAC_A);
    // The SYN, complete (no header): goes to the uplink (not attached here; ARP for its gateway holds it).
    const syn = frame({ proto: ETH_TCP, src: A, dst: REMOTE, sport: 40000, dport: 443, payload: 0, flags: 0x02 }, NET10_MAC, MAC_A, undefined, { flags: 0 });
    const l4 = V + E + 20;
    syn.writeUInt16BE(0, l4 + 16);
    syn.writeUInt16BE(checksum(syn, l4, 20, pseudoSum(A, REMOTE, 6, 20)), l4 + 16);
    nets.net10.send(syn, V, syn.length - V);
    expect(router.counters.toUplink).toBe(1);
    // The reply: a super-frame from the uplink, as the packet socket delivers it (header before the frame).
    for (const gso of [[1, MSS], undefined] as const) {
      const r = frame({ proto: ETH_TCP, src: REMOTE, dst: PUB, sport: 443, dport: 40000, payload: gso ? 40_000 : 1000, flags: 0x10 }, 0x02000a0a6401, 0x0200c0000201, gso);
      router.uplink!.onIp(r, V + E, r.length - V - E, true);
      const o = out.net10.pop()!;
      expect(o.vnet).toBe(true);
      expect(o.bytes.readUInt32BE(V + E + 16)).toBe(A);
      const segs = cut(o.bytes);
      expect(segs.length).toBe(gso ? Math.ceil(40_000 / MSS) : 1);
      for (const s of segs) {
        expect(checksumsOk(s)).toBe(true);
        expect(s.readUInt32BE(E + 16)).toBe(A);
        expect(s.readUInt16BE(E + 22)).toBe(40000);
      }
    }
    expect(router.counters.fromUplink).toBe(2);
  });

  it('a GSO frame to the gateway itself is dropped and counted; a partial echo request is answered', () => {
    const { nets, out } = rig();
    const b = frame({ proto: ETH_TCP, src: A, dst: ip('10.0.10.1'), sport: 40000, dport: 22, payload: 5000 }, NET10_MAC, MAC_A, [1, MSS]);
    fromVm(nets.net10, b);
    expect(nets.net10.counters.offloadDropped).toBe(1);
    expect(out.net10).toEqual([]);
    // An echo request with NEEDS_CSUM (csum_start at ICMP, offset 2; the field holds 0, ICMP has no pseudo header).
    const e = frame({ proto: ETH_UDP, src: A, dst: ip('10.0.10.1'), sport: 0x0800, dport: 0, payload: 20 }, NET10_MAC, MAC_A, undefined, { off: 2 });
    e[V + E + 9] = 1;
    e.writeUInt16BE(0, V + E + 10);
    e.writeUInt16BE(checksum(e, V + E, 20), V + E + 10);
    e.writeUInt16BE(0, V + E + 20 + 2);
    fromVm(nets.net10, e);
    expect(nets.net10.counters.icmpEchoReplies).toBe(1);
    const reply = out.net10.pop()!;
    expect(reply.vnet).toBe(false);
    expect(fold(sum16(reply.bytes, E + 20, reply.bytes.length - E - 20))).toBe(0xffff);
  });

  it('a super-frame held while ARP resolves is released whole with its header', () => {
    const { nets, out } = rig();
    const b = frame({ proto: ETH_TCP, src: A, dst: H20, sport: 40000, dport: 80, payload: 20_000 }, NET10_MAC, MAC_A, [1, MSS]);
    fromVm(nets.net10, b);
    // net20 asked who has H20 (a complete frame); nothing else yet.
    expect(out.net20.map((o) => [o.vnet, o.bytes.readUInt16BE(12)])).toEqual([[false, 0x0806]]);
    out.net20.length = 0;
    // H20 answers.
    const arp = Buffer.alloc(60);
    arp.writeUIntBE(NET20_MAC, 0, 6);
    arp.writeUIntBE(MAC_H20, 6, 6);
    arp.writeUInt16BE(0x0806, 12);
    Buffer.from([0, 1, 8, 0, 6, 4, 0, 2]).copy(arp, 14);
    arp.writeUIntBE(MAC_H20, 22, 6);
    arp.writeUInt32BE(H20, 28);
    arp.writeUIntBE(NET20_MAC, 32, 6);
    arp.writeUInt32BE(ip('10.0.20.1'), 38);
    nets.net20.send(arp, 0, 60);
    expect(out.net20.length).toBe(1);
    const o = out.net20[0];
    expect(o.vnet).toBe(true);
    expect(o.bytes.length).toBe(b.length);
    expect(o.bytes.readUIntBE(V, 6)).toBe(MAC_H20);
    for (const s of cut(o.bytes)) expect(checksumsOk(s)).toBe(true);
  });
});
