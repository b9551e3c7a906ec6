/*
 * The flow cache's differential test (bench/DESIGN-flow-cache.md): the same random
 * frames and control changes go to two bridges, one with the cache on, one
 * without; after every step both must have written the same frames to the same
 * ports in the same order, and have the same counters (every port's, drops
 * included, and the bridge's) and the same MAC table (ages included).
 *
 * The cache's backend here is a model of the addon's (native/flowcache.c, whose
 * own fuzz test in packages/netdev checks it against the same rules): exact-match
 * entries keyed on the ingress handle, both MACs, the tag and the virtio_net_hdr's
 * flags and GSO type, valid while their bridge's generation stands, dropped when a
 * handle closes; and a model of its read loop: a batch's leading frames that hit
 * are written to the entry's port without the bridge (with the frame's own
 * virtio_net_hdr to a device that takes one; a header that says anything never to
 * one that does not), the rest from the first miss go to the bridge as a batch.
 * The ports are in memory and carry handles; every write is logged with the
 * header the device got (a TSO super-frame must reach it with its header as the
 * pipeline wrote it). Frames carry random headers: none, DATA_VALID, NEEDS_CSUM,
 * GSO TCPv4/TCPv6/UDP_L4 (ECN sometimes) with random offsets and sizes; one port
 * (a4) has no header (offload off), so the pipeline strips, completes or drops.
 *
 * Guarded ports (a3, access, and t2, a trunk: the DHCP guard, the IPv4 source guard with
 * their hosts' addresses bound, and the IPv6 guards) and ARP/ND suppression in VLAN 10
 * (switched on and off among the ops): frames carry IPv4 headers of and outside the class
 * the cache keys by source address (bound, spoofed and 0.0.0.0 sources, DHCP ports
 * either way, other UDP and TCP, non-first fragments, bad version or IHL, truncated), ARP
 * (bound or spoofed senders, probes, a sender MAC that is not the source, truncated,
 * requests the suppressor answers) and IPv6 (own global and link-local, another host's,
 * :: and multicast sources; TCP, UDP from 547 or not, echo, ND, RA, MLD, extension
 * headers, truncated); bindings are added, removed, renewed and pointed at another host,
 * the IPv6 source guard turned off and on in place, and time jumps past the IPv6 claims'
 * idle time, among the runtime ops. The state compared includes the IPv6 claims with
 * their last use. The model keys a
 * handle's frames the way its latest install said (flowcache.c ND_FC_KEY_L3) by its own
 * statement of the class, and refuses an install outside it.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Bridge } from './bridge.js';
import { arpClass, FOLD, type FlowCacheBackend, FlowCacheHub, ip4Class } from './flow-cache.js';
import type { Port, PortIo, PortKind, PortRx } from './port.js';
import { VlanPolicy, type VlanSpec } from './vlan.js';
import { writeMac } from './wire/ethernet.js';
import { writeVnet } from './wire/vnet.js';
import { Drop } from './drop.js';
import { ArpSuppress } from './arp-suppress.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 300);
// The differential property's runs come from one seed (FUZZ_SEED to explore others; FUZZ_SHOW=1
// prints the counts). The coverage floors after it (how many replays were ARP, IPv6, ...)
// count what the generator happened to produce: over seeds 1-12 the ARP replays ranged 2-20
// and the IPv6 ones 4-44, so a random seed left ARP under its floor about one CI run in five
// (s31). Seed 1 clears every floor (ARP 20, IPv6 24); another seed may not, which says
// nothing about the cache: the property (cache on = cache off) is what must hold for all.
const SEED = Number(process.env.FUZZ_SEED ?? 1);
const HDR = 10;

interface Entry {
  bridge: number; gen: number; inPort: number; outPort: number; out: number; dead: boolean;
  frames: number; bytes: number; last: number; txBytes: number; down: number; err: number;
}

/** The addon's table and read loop, modelled. */
class ModelBackend implements FlowCacheBackend {
  readonly generations = new Float64Array(16);
  readonly size = 4096;
  readonly clockOffset = 0;
  readonly entries = new Map<string, Entry>();
  readonly handles: (DiffIo | undefined)[] = [];
  hits = 0;
  /** Hits of frames whose header said something (TSO, NEEDS_CSUM, DATA_VALID). */
  hdrHits = 0;
  /** Hits of tagged frames. */
  tagHits = 0;
  installs = 0;

  /** Per handle: its frames keyed in the IPv4 class with their source address (the latest install's `l3`). */
  readonly l3 : boolean[] = [];
  /** Hits keyed in the IPv4, ARP or IPv6 class, and of those in the ARP class and the IPv6 class. */
  l3Hits = 0;
  arpHits = 0;
  ip6Hits = 0;

  /**
   * The key; `l3`: the IPv4 or ARP class's (flowcache.h ND_FC_KEY_L3, stated here on its
   * own: untagged or a C-tag; IPv4, version 4, IHL >= 5 and 20 bytes, a UDP first
   * fragment's ports there and none 67 or 68; or ARP, 28 bytes, protocol type IPv4,
   * lengths 6 and 4, the sender MAC the frame's source), else undefined.
   */
  static key(inHandle: number, buf: Uint8Array, off: number, len: number, l3 = false): string | undefined {
    if (len < 14) return undefined;
    const t = (buf[off + 12] << 8) | buf[off + 13];
    const tagged = t === 0x8100 || t === 0x88a8;
    if (tagged && len < 18) return undefined;
    const parts = [inHandle, buf[off - HDR], buf[off - HDR + 1], ...buf.subarray(off, off + 12), tagged ? t : 0,
      tagged ? (buf[off + 14] << 8) | buf[off + 15] : 0];
    if (l3) {
      if (t === 0x88a8) return undefined;
      const ip = off + (tagged ? 18 : 14);
      const end = off + len;
      const type = buf[ip - 2] << 8 | buf[ip - 1];
      // The ARP class: a body for IPv4 over 6-byte MACs whose sender MAC is the frame's source; keyed by the sender's address.
      if (type === 0x0806) {
        if (ip + 28 > end || buf[ip + 2] !== 8 || buf[ip + 3] !== 0 || buf[ip + 4] !== 6 || buf[ip + 5] !== 4 ||
          buf.subarray(ip + 8, ip + 14).some((x, i) => x !== buf[off + 6 + i])) return undefined;
        parts.push(-2, ...buf.subarray(ip + 14, ip + 18));
        return parts.join(',');
      }
      // The IPv6 class: no extension header; TCP, UDP not from 547, ICMPv6 echo; a source neither :: nor multicast.
      if (type === 0x86dd) {
        if (ip + 40 > end || buf[ip] >> 4 !== 6) return undefined;
        const plen = (buf[ip + 4] << 8) | buf[ip + 5], u = ip + 40, nh = buf[ip + 6];
        const src = [...buf.subarray(ip + 8, ip + 24)];
        if (u + plen > end || src[0] === 0xff || src.every((x) => x === 0)) return undefined;
        const ok = nh === 6 || (nh === 17 && plen >= 4 && ((buf[u] << 8) | buf[u + 1]) !== 547) ||
          (nh === 58 && plen >= 4 && (buf[u] === 128 || buf[u] === 129));
        if (!ok) return undefined;
        parts.push(-3, ...src);
        return parts.join(',');
      }
      if (type !== 0x0800 || ip + 20 > end || buf[ip] >> 4 !== 4 || (buf[ip] & 15) < 5) return undefined;
      const frag = ((buf[ip + 6] << 8) | buf[ip + 7]) & 0x1fff;
      if (buf[ip + 9] === 17 && frag === 0) {
        const l4 = ip + (buf[ip] & 15) * 4;
        if (l4 + 4 > end) return undefined;
        const ports = [(buf[l4] << 8) | buf[l4 + 1], (buf[l4 + 2] << 8) | buf[l4 + 3]];
        if (ports.some((x) => x === 67 || x === 68)) return undefined;
      }
      parts.push(-1, ...buf.subarray(ip + 12, ip + 16));
    }
    return parts.join(',');
  }

  install(bridge: number, inHandle: number, inPort: number, buf: Uint8Array, off: number, len: number, out: number, outPort: number, l3: boolean): boolean {
    this.l3[inHandle] = l3;
    const k = ModelBackend.key(inHandle, buf, off, len, l3);
    if (k === undefined) throw new Error(l3 ? 'install of a frame outside the IPv4 and ARP classes' : 'install of a frame with no key');
    // The pipeline writes a header that says something as it came only to a device that takes it.
    if (!this.handles[out]!.offload && buf.subarray(off - HDR, off).some((x) => x !== 0)) throw new Error('install of a header toward a device without one');
    const old = this.entries.get(k);
    // As flowcache.c: unfolded counts stay with the same decision, and block another.
    if (old !== undefined && old.frames > 0) {
      if (old.dead || old.bridge !== bridge || old.out !== out || old.outPort !== outPort || old.inPort !== inPort) return false;
      old.gen = this.generations[bridge];
      this.installs++;
      return true;
    }
    this.entries.set(k, { bridge, gen: this.generations[bridge], inPort, outPort, out, dead: false, frames: 0, bytes: 0, last: 0, txBytes: 0, down: 0, err: 0 });
    this.installs++;
    return true;
  }

  fold(out: Float64Array): number {
    let n = 0;
    for (const [k, e] of this.entries) {
      if (e.frames === 0) continue;
      const o = n * FOLD.FIELDS;
      const macs = k.split(',').map(Number);
      out[o + FOLD.BRIDGE] = e.bridge; out[o + FOLD.IN_PORT] = e.inPort; out[o + FOLD.OUT_PORT] = e.outPort;
      out[o + FOLD.SRC_HI] = (macs[9] << 8) | macs[10];
      out[o + FOLD.SRC_LO] = ((macs[11] << 24) >>> 0) + ((macs[12] << 16) | (macs[13] << 8) | macs[14]);
      out[o + FOLD.TAG] = macs[15] === 0 ? -1 : ((macs[15] === 0x8100 ? 1 : 2) * 0x10000) + macs[16]; out[o + FOLD.FRAMES] = e.frames; out[o + FOLD.BYTES] = e.bytes; out[o + FOLD.LAST] = e.last;
      out[o + FOLD.TX_BYTES] = e.txBytes; out[o + FOLD.LINK_DOWN] = e.down; out[o + FOLD.TX_ERROR] = e.err;
      // The key's class, and an IPv6 key's source address as four words (flowcache.c nd_fc_fold).
      const cls = macs.length > 17 ? -macs[17] : 0;
      out[o + FOLD.L3] = cls;
      for (let w = 0; w < 4; w++) {
        out[o + FOLD.SRC6 + w] = cls === 3 ? ((macs[18 + w * 4] << 24) >>> 0) + ((macs[19 + w * 4] << 16) | (macs[20 + w * 4] << 8) | macs[21 + w * 4]) : 0;
      }
      e.frames = e.bytes = e.txBytes = e.down = e.err = 0;
      n++;
    }
    return n;
  }

  flush(bridge: number): void {
    for (const e of this.entries.values()) if (e.bridge === bridge) e.dead = true;
  }

  closed(handle: number): void {
    for (const e of this.entries.values()) if (e.out === handle) e.dead = true;
    for (const [k, e] of this.entries) if (Number(k.split(',')[0]) === handle) e.dead = true;
    this.handles[handle] = undefined;
    this.l3[handle] = false;
  }

  /** The read loop: a batch from `io` at time `now`; frames at offs[i] with their header before them. */
  read(io: DiffIo, buf: Uint8Array, offs: number[], lens: number[], now: number): void {
    let i = 0;
    // A device without the header: its frames never had a decision installed (the addon never probes it).
    for (; io.offload && i < offs.length; i++) {
      const off = offs[i], len = lens[i];
      let zero = true;
      for (let j = off - HDR; j < off; j++) if (buf[j] !== 0) zero = false;
      const k = ModelBackend.key(io.flowHandle, buf, off, len, this.l3[io.flowHandle] === true);
      const e = k === undefined ? undefined : this.entries.get(k);
      if (e === undefined || e.dead || e.gen !== this.generations[e.bridge]) break;
      const w = this.handles[e.out]!;
      if (!w.offload && !zero) break; // as fc_replay: such a header never goes to a device without one
      const r = w.offload ? w.sendVnet(buf, off, len) : w.send(buf, off, len);
      e.frames++; e.bytes += len; e.last = now;
      if (r >= 0) e.txBytes += r;
      else if (r === -100 || r === -5) e.down++;
      else e.err++;
      this.hits++;
      if (!zero) this.hdrHits++;
      if (k!.split(',')[15] !== '0') this.tagHits++;
      if (k!.split(',').length > 17) this.l3Hits++;
      if (k!.split(',')[17] === '-2') this.arpHits++;
      if (k!.split(',')[17] === '-3') this.ip6Hits++;
    }
    if (i < offs.length) io.rx.batch(buf, Int32Array.from(offs.slice(i)), Int32Array.from(lens.slice(i)), offs.length - i, io.offload, now);
  }
}

interface Sent { port: string; frame: string }

/**
 * An in-memory handle port (as TapIo): every write logged by port name, with the
 * virtio_net_hdr the device got (the addon writes an all-zero one for send/send2
 * to a device that takes headers, none to one that does not).
 */
class DiffIo implements PortIo {
  readonly kind: PortKind = 'tap';
  rx!: PortRx;
  fail: number | undefined;
  constructor(readonly name: string, readonly log: Sent[], readonly flowHandle: number, readonly model?: ModelBackend, readonly offload = true) {
    model?.handles.splice(flowHandle, 1, this);
  }
  start(rx: PortRx): void { this.rx = rx; }
  /** hdr: the header's bytes (undefined: all zero). */
  write(hdr: Uint8Array | undefined, buf: Uint8Array, off: number, len: number): number {
    if (this.fail !== undefined) return this.fail;
    const h = this.offload ? Buffer.from(hdr ?? new Uint8Array(HDR)).toString('hex') + '|' : '';
    this.log.push({ port: this.name, frame: h + Buffer.from(buf.subarray(off, off + len)).toString('hex') });
    return len;
  }
  send(buf: Uint8Array, off: number, len: number): number { return this.write(undefined, buf, off, len); }
  send2(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number, hdr?: Uint8Array): number {
    const f = new Uint8Array(alen + blen);
    f.set(a.subarray(aoff, aoff + alen), 0);
    f.set(b.subarray(boff, boff + blen), alen);
    return this.write(hdr, f, 0, f.length);
  }
  sendVnet(buf: Uint8Array, off: number, len: number): number {
    if (!this.offload) throw new Error('sendVnet to a device without the header');
    return this.write(buf.slice(off - HDR, off), buf, off, len);
  }
  send2Vnet(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    if (!this.offload) throw new Error('send2Vnet to a device without the header');
    return this.send2(a, aoff, alen, b, boff, blen, a.slice(aoff - HDR, aoff));
  }
  close(): void { this.model?.closed(this.flowHandle); }
  describe(): Record<string, string | number | boolean> { return { kind: 'diff' }; }
}

const PORTS: Record<string, VlanSpec> = {
  a1: { mode: 'access', vid: 10 }, a2: { mode: 'access', vid: 10 }, a3: { mode: 'access', vid: 10 },
  b1: { mode: 'access', vid: 20 }, t1: { mode: 'trunk', allowed: [10, 20] }, a4: { mode: 'access', vid: 10 },
  t2: { mode: 'trunk', allowed: [10, 20] },
};
/** A device without the virtio_net_hdr (a TAP with offload off). */
const PLAIN = new Set(['a4']);
const NAMES = Object.keys(PORTS);
/** Frames come mostly from the access ports of VLAN 10 (a3 guarded), whose hosts talk to each other. */
const FROM = ['a1', 'a2', 'a3', 'a3', ...NAMES];
/** One host per port (a1's is MACS[0] ...), then broadcast, then the bridge group address. */
const MACS = [0x020000000001, 0x020000000002, 0x020000000003, 0x020000000004, 0x020000000005, 0x020000000006, 0x020000000007, 0xffffffffffff, 0x0180c2000000];
const HOSTS = NAMES.length;
/** Host i's IPv4 address (10.0.0.i+1): what its port's binding holds. */
const hostIp = (i: number): number => 0x0a000001 + i;
/** Host i's IPv6 addresses: 2001:db8::i+1, fe80::i+1 (`ll`); another host's; ::; ff02::1. */
function ip6Of(w: Src6, host: number): Uint8Array {
  const a = new Uint8Array(16);
  if (w === 'zero') return a;
  if (w === 'mc') { a[0] = 0xff; a[1] = 0x02; a[15] = 1; return a; }
  if (w === 'll') { a[0] = 0xfe; a[1] = 0x80; } else { a[0] = 0x20; a[1] = 0x01; a[2] = 0x0d; a[3] = 0xb8; }
  a[15] = (w === 'other' ? (host + 1) % HOSTS : host) + 1;
  return a;
}
/** Guarded from the start (DHCP guard and IPv4 source guard, the port's host bound; the IPv6 guards): an access port and a trunk. */
const GUARDED = ['a3', 't2'];
/** The guards a DHCP-served VM port gets by default. */
const VM_GUARDS = { dhcp: true, ipSource: true, ra: true, dhcpv6: true, ipv6Source: true };

/** `guarded`: GUARDED's guards and bindings on (the fuzz); the older cases below run without. */
function rig(cache: boolean, guarded = true) {
  const clock = { now: 1_000 };
  const log: Sent[] = [];
  const model = cache ? new ModelBackend() : undefined;
  const br = new Bridge('df', { clock: () => clock.now, ageingSec: 20 });
  if (model !== undefined) br.setFlowCache(new FlowCacheHub(model));
  const io: Record<string, DiffIo> = {};
  const port: Record<string, Port> = {};
  let handles = 0;
  const add = (name: string): void => {
    io[name] = new DiffIo(name, log, handles++, model, !PLAIN.has(name));
    // a1..a4 and b1 are VM ports (t1, t2: trunks between switches): BPDU guard on (the daemon's default); a BPDU (to MACS[8]) shuts one.
    port[name] = br.addPort(name, io[name], { vlan: VlanPolicy.from(PORTS[name]), bpduGuard: !name.startsWith('t') });
  };
  for (const n of NAMES) add(n);
  for (const n of guarded ? GUARDED : []) {
    port[n].guard.set(VM_GUARDS);
    port[n].guard.leased.set(hostIp(NAMES.indexOf(n)), MACS[NAMES.indexOf(n)]);
  }
  // ARP/ND suppression, attached while a VLAN has it on ('suppress'): a1's and a3's hosts known in VLAN 10, t1's in 20.
  const sup = new ArpSuppress();
  sup.set(10, hostIp(0), MACS[0]);
  sup.set(10, hostIp(2), MACS[2]);
  sup.set(20, hostIp(4), MACS[4]);
  return { br, io, port, clock, log, model, add, sup };
}
type Rig = ReturnType<typeof rig>;

/** A frame's makings; its source is mostly its port's own host (a MAC that never moves), sometimes another's. */
/** A virtio_net_hdr: [flags, gso_type, hdr_len, gso_size, csum_start, csum_offset]. */
type Vnet = [number, number, number, number, number, number];
/**
 * What follows the EtherType: absent, 0x0800 and the random payload; else an IPv4
 * header (source: the frame's source host's address, another host's, or 0.0.0.0), an
 * ARP body or an IPv6 header, `cut` bytes of it kept when not 0.
 */
type L3Spec =
  | { k: 'ip4'; src: 'own' | 'other' | 'zero'; proto: number; sport: number; dport: number; frag: number; ver: number; ihl: number; cut: number }
  | { k: 'arp'; oper: number; spa: 'own' | 'other' | 'zero'; tpa: number; shaOwn: boolean; cut: number }
  | { k: 'ip6'; nh: number; type: number; cut: number; src?: Src6; sport?: number };
/** An IPv6 source: the host's global or link-local address, the next host's, ::, or multicast (absent: ::). */
type Src6 = 'own' | 'other' | 'll' | 'zero' | 'mc';
interface FrameSpec { dst: number; own: boolean; src: number; tag: number | undefined; hdr: Vnet | undefined; payload: Uint8Array; l3?: L3Spec }
const u16 = fc.integer({ min: 0, max: 0xffff });
const vnetArb: fc.Arbitrary<Vnet> = fc.tuple(
  fc.constantFrom(0, 1, 2, 1, 1), // none, NEEDS_CSUM, DATA_VALID
  fc.constantFrom(0, 0, 1, 4, 5, 0x81), // NONE, TCPV4, TCPV6, UDP_L4, TCPV4|ECN
  u16, u16, u16, u16,
);
const frameArb: fc.Arbitrary<FrameSpec> = fc.record({
  dst: fc.constantFrom(...MACS.slice(0, 3), ...MACS), own: fc.oneof({ weight: 20, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  src: fc.constantFrom(...MACS.slice(0, HOSTS)),
  tag: fc.oneof({ weight: 4, arbitrary: fc.constant(undefined) }, { weight: 2, arbitrary: fc.constantFrom(0, 10, 20, 0xa00a, 0x3014) }), // TCI: PCP/DEI too
  hdr: fc.oneof({ weight: 3, arbitrary: fc.constant(undefined) }, { weight: 2, arbitrary: vnetArb }), // a virtio_net_hdr that (mostly) says something
  payload: fc.uint8Array({ minLength: 0, maxLength: 20 }),
  l3: fc.oneof(
    { weight: 2, arbitrary: fc.constant(undefined) },
    {
      weight: 6,
      arbitrary: fc.record({
        k: fc.constant('ip4' as const), src: fc.oneof({ weight: 8, arbitrary: fc.constant('own' as const) }, { weight: 1, arbitrary: fc.constantFrom('other' as const, 'zero' as const) }),
        proto: fc.constantFrom(6, 17, 17, 1), sport: fc.constantFrom(67, 68, 53, 80, 4000), dport: fc.constantFrom(67, 68, 53, 80, 4000),
        frag: fc.constantFrom(0, 0, 0x4000, 0x2000, 0x00b9), ver: fc.constantFrom(4, 4, 4, 4, 4, 4, 6), ihl: fc.constantFrom(5, 5, 5, 5, 5, 6, 4),
        cut: fc.constantFrom(0, 0, 0, 0, 0, 0, 0, 8, 20, 22, 24),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        k: fc.constant('arp' as const), oper: fc.constantFrom(1, 2), spa: fc.constantFrom('own' as const, 'other' as const, 'zero' as const),
        tpa: fc.integer({ min: 0, max: HOSTS - 1 }), shaOwn: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
        cut: fc.constantFrom(0, 0, 0, 20),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        k: fc.constant('ip6' as const), nh: fc.constantFrom(58, 58, 6, 17, 0, 44), type: fc.constantFrom(135, 136, 128, 129, 134, 143), cut: fc.constantFrom(0, 0, 0, 30, 43),
        src: fc.oneof({ weight: 6, arbitrary: fc.constantFrom('own' as const, 'll' as const) }, { weight: 2, arbitrary: fc.constantFrom('other' as const, 'zero' as const, 'mc' as const) }),
        sport: fc.constantFrom(547, 546, 4000),
      }),
    },
  ),
});

/** The bytes after the EtherType for `l3`, from a frame whose source MAC is host `host`'s; and the EtherType. */
function l3Bytes(l: L3Spec, host: number, payload: Uint8Array): { type: number; bytes: Uint8Array } {
  const ip = (w: 'own' | 'other' | 'zero'): number => (w === 'zero' ? 0 : hostIp(w === 'own' ? host : (host + 1) % HOSTS));
  let type: number, b: Uint8Array;
  if (l.k === 'ip4') {
    const hl = Math.max(l.ihl, 5) * 4;
    b = new Uint8Array(hl + 8 + payload.length);
    const v = new DataView(b.buffer);
    b[0] = (l.ver << 4) | l.ihl;
    v.setUint16(2, b.length);
    v.setUint16(6, l.frag);
    b[8] = 64;
    b[9] = l.proto;
    v.setUint32(12, ip(l.src));
    v.setUint32(16, hostIp((host + 2) % HOSTS));
    v.setUint16(hl, l.sport);
    v.setUint16(hl + 2, l.dport);
    b.set(payload, hl + 8);
    type = 0x0800;
  } else if (l.k === 'arp') {
    b = new Uint8Array(28);
    const v = new DataView(b.buffer);
    v.setUint16(0, 1); v.setUint16(2, 0x0800); b[4] = 6; b[5] = 4; v.setUint16(6, l.oper);
    writeMac(b, 8, MACS[l.shaOwn ? host : (host + 1) % HOSTS]);
    v.setUint32(14, ip(l.spa));
    v.setUint32(24, hostIp(l.tpa));
    type = 0x0806;
  } else {
    b = new Uint8Array(40 + 24);
    b[0] = 0x60; b[5] = 24; b[6] = l.nh; b[7] = 255; b[40] = l.type;
    if (l.nh === 17) new DataView(b.buffer).setUint16(40, l.sport ?? 4000);
    b.set(ip6Of(l.src ?? 'zero', host), 8);
    b.set(ip6Of('own', (host + 2) % HOSTS), 24);
    type = 0x86dd;
  }
  return { type, bytes: l.cut !== 0 ? b.subarray(0, l.cut) : b };
}

function frameOf(f: FrameSpec, port: string): Uint8Array {
  const t = f.tag === undefined ? 0 : 4;
  const src = f.own ? MACS[NAMES.indexOf(port)] : f.src;
  const l3 = f.l3 === undefined ? { type: 0x0800, bytes: f.payload, raw: true } : l3Bytes(f.l3, MACS.indexOf(src), f.payload);
  const b = new Uint8Array(HDR + 14 + t + l3.bytes.length);
  if (f.hdr !== undefined) writeVnet(b, 0, ...f.hdr);
  writeMac(b, HDR, f.dst);
  writeMac(b, HDR + 6, src);
  if (t) { b[HDR + 12] = 0x81; b[HDR + 14] = f.tag! >>> 8; b[HDR + 15] = f.tag! & 0xff; }
  if ('raw' in l3) b[HDR + 12 + t] = 0x08; // and the payload's first byte: the old frames, IPv4 or not
  else { b[HDR + 12 + t] = l3.type >>> 8; b[HDR + 13 + t] = l3.type & 0xff; }
  b.set(l3.bytes, HDR + 14 + t);
  return b;
}

type Op =
  | { op: 'batch'; port: string; frames: (FrameSpec | Uint8Array)[]; split?: boolean }
  | { op: 'tick'; dt: number }
  | { op: 'gone' | 'up' | 'fail' | 'heal' | 'remove' | 'guard' | 'guardSet' | 'guardOff' | 'rate' | 'vlan' | 'vlanTag' | 'vlanBack' | 'static' | 'ageing'; port: string }
  | { op: 'bind' | 'unbind' | 'renew' | 'bindOther' | 'bindConf' | 'confClear' | 'suppress' | 'guard6Off'; port: string }
  | { op: 'seq'; ops: Op[] };

/** IPv4 of the class from the frame's source host's own (bound) address. */
const IP4_OWN: L3Spec = { k: 'ip4', src: 'own', proto: 6, sport: 4000, dport: 80, frag: 0, ver: 4, ihl: 5, cut: 0 };

/**
 * Trunk to trunk: t1's and t2's hosts talk in VLAN 10 or 20, tagged (PCP/DEI sometimes set), mostly to each other;
 * mostly IPv4 of the class from their own addresses (t2 is guarded).
 */
const trunkArb: fc.Arbitrary<Op> = fc.tuple(fc.constantFrom('t1', 't2'), fc.boolean(), frameArb, fc.constantFrom(10, 20, 0xa00a, 0x3014), fc.integer({ min: 2, max: 6 }), fc.boolean())
  .map(([port, toPeer, f, tag, n, own4]) => ({
    op: 'batch' as const, port, split: true,
    frames: Array<FrameSpec>(n).fill({ ...f, own: true, tag, dst: toPeer ? MACS[NAMES.indexOf(port === 't1' ? 't2' : 't1')] : f.dst, l3: own4 ? IP4_OWN : f.l3 }),
  }));

/** A guarded port's host streams IPv4 of the class (its bound source) to a1's or a2's: what the cache serves there. */
const guardedArb: fc.Arbitrary<Op> = fc.tuple(frameArb, fc.constantFrom(MACS[0], MACS[1]), fc.constantFrom(1, 6, 17), fc.constantFrom(53, 80, 4000), fc.integer({ min: 2, max: 5 }), fc.boolean())
  .map(([f, dst, proto, port, n, split]) => ({
    op: 'batch' as const, port: 'a3', split,
    frames: Array<FrameSpec>(n).fill({ ...f, own: true, dst, l3: { ...IP4_OWN, proto, sport: port, dport: 4000 } }),
  }));

/**
 * A guarded port's host sends ARP to a1's or a2's (unicast: a reply, a request as Linux
 * revalidates a neighbour), mostly from its bound sender pair, sometimes spoofed (another
 * host's address or MAC in the body), a probe from 0.0.0.0, or truncated.
 */
const guardedArpArb: fc.Arbitrary<Op> = fc.tuple(frameArb, fc.constantFrom(MACS[0], MACS[1]), fc.constantFrom(1, 2),
  fc.oneof({ weight: 6, arbitrary: fc.constant('own' as const) }, { weight: 1, arbitrary: fc.constantFrom('other' as const, 'zero' as const) }),
  fc.oneof({ weight: 8, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }), fc.constantFrom(0, 0, 0, 0, 20),
  fc.integer({ min: 2, max: 5 }), fc.boolean())
  .map(([f, dst, oper, spa, shaOwn, cut, n, split]) => ({
    op: 'batch' as const, port: 'a3', split,
    frames: Array<FrameSpec>(n).fill({ ...f, own: true, dst, l3: { k: 'arp', oper, spa, tpa: dst === MACS[0] ? 0 : 1, shaOwn, cut } }),
  }));

/** A guarded port's host streams IPv6 of the class from its own global or link-local address (TCP, UDP, echo) to a1's or a2's. */
const guardedIp6Arb: fc.Arbitrary<Op> = fc.tuple(frameArb, fc.constantFrom(MACS[0], MACS[1]), fc.constantFrom(6, 17, 58), fc.constantFrom('own' as const, 'll' as const),
  fc.constantFrom(128, 129), fc.integer({ min: 2, max: 5 }), fc.boolean())
  .map(([f, dst, nh, src, type, n, split]) => ({
    op: 'batch' as const, port: 'a3', split,
    frames: Array<FrameSpec>(n).fill({ ...f, own: true, dst, l3: { k: 'ip6', nh, type, cut: 0, src, sport: 4000 } }),
  }));

const bindingOps = ['bind', 'unbind', 'renew', 'bindOther', 'bindConf', 'confClear', 'suppress', 'guard6Off', 'guardSet'] as const;

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 12, arbitrary: trunkArb },
  { weight: 8, arbitrary: guardedArb },
  { weight: 4, arbitrary: guardedArpArb },
  { weight: 4, arbitrary: guardedIp6Arb },
  // A guarded stream, a binding change on its port (or suppression toggled), the same stream: the change must end its replays where the verdict changed.
  {
    weight: 6,
    arbitrary: fc.tuple(fc.oneof({ weight: 2, arbitrary: guardedArb }, { weight: 1, arbitrary: guardedArpArb }, { weight: 1, arbitrary: guardedIp6Arb }), fc.constantFrom(...bindingOps))
      .map(([g, op]) => ({ op: 'seq' as const, ops: [g, { op, port: 'a3' }, g] })),
  },
  { weight: 30, arbitrary: fc.record({ op: fc.constant('batch' as const), port: fc.constantFrom(...FROM), frames: fc.array(frameArb, { minLength: 1, maxLength: 4 }) }) },
  // A stream: the same frame several times, in one batch or one batch each (what the cache is for).
  {
    weight: 45,
    arbitrary: fc.record({
      op: fc.constant('batch' as const), port: fc.constantFrom(...FROM), split: fc.boolean(),
      frames: fc.tuple(frameArb, fc.integer({ min: 2, max: 5 })).map(([f, n]) => Array<FrameSpec>(n).fill(f)),
    }),
  },
  // Past the IPv6 claims' idle time too (3_700_000: the sweep expires those not used, replayed frames included).
  { weight: 1, arbitrary: fc.record({ op: fc.constant('tick' as const), dt: fc.constantFrom(10, 3_000, 3_000, 21_000, 3_700_000) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constantFrom('gone' as const, 'up' as const, 'fail' as const, 'heal' as const, 'remove' as const, 'guard' as const,
        'guardSet' as const, 'guardOff' as const, 'rate' as const, 'vlan' as const, 'vlanTag' as const, 'vlanBack' as const, 'static' as const, 'ageing' as const),
      port: fc.constantFrom(...NAMES),
    }),
  },
  // Bindings (leases bound, released, renewed; configured ones) and ARP/ND suppression on or off in a VLAN.
  {
    weight: 6,
    arbitrary: fc.record({
      op: fc.constantFrom('bind' as const, 'unbind' as const, 'unbind' as const, 'renew' as const, 'renew' as const, 'bindOther' as const, 'bindConf' as const, 'confClear' as const, 'suppress' as const),
      port: fc.constantFrom(...GUARDED, ...GUARDED, ...GUARDED, ...NAMES),
    }),
  },
);

function apply(t: Rig, o: Op): void {
  const name = 'port' in o ? o.port : '';
  switch (o.op) {
    case 'seq': for (const x of o.ops) apply(t, x); return;
    case 'tick': t.clock.now += o.dt; t.br.sweep(t.clock.now); return;
    case 'gone': t.br.portGone(t.port[name], 'test'); return;
    case 'up': t.br.portUp(t.port[name], 'test'); return;
    case 'fail': t.io[name].fail = -105; return;
    case 'heal': t.io[name].fail = undefined; return;
    case 'remove': t.br.removePort(name); t.add(name); return;
    case 'guard': t.br.setPortGuard(name, { ipSource: true }); return;
    // The daemon's way (cli guards.ts applyGuard, at start, reload and `port set guard`): the port's guard set in place.
    case 'guardSet': t.port[name].guard.set(VM_GUARDS); return;
    // The IPv6 source guard off in place (IPv4 guards kept): replays before it refresh claims as the guard did.
    case 'guard6Off': t.port[name].guard.set({ dhcp: true, ipSource: true }); return;
    case 'guardOff': t.port[name].guard.set({}); return;
    case 'rate': t.br.setPortRate(name, null, { rate: 1e9, burst: 1e6 }); return;
    case 'vlan': if (PORTS[name].mode === 'access') t.br.setPortVlan(name, VlanPolicy.from({ mode: 'access', vid: 20 })); return;
    // Still a member of the same VLANs (no MAC entry flushed), but now sends VLAN 10 tagged.
    case 'vlanTag': t.br.setPortVlan(name, VlanPolicy.from({ mode: 'hybrid', vlans: [{ vid: 10, pvid: true }, { vid: 20 }] })); return;
    case 'vlanBack': t.br.setPortVlan(name, VlanPolicy.from(PORTS[name])); return;
    case 'static': if (t.port[name].vlan.isMember(10)) t.br.addStatic(0x0200000000aa, name, 10); return;
    case 'ageing': t.br.fdb.setAgeing(t.br.fdb.ageingSec === 20 ? 0 : 20); return;
    case 'bind': t.port[name].guard.leased.set(hostIp(NAMES.indexOf(name)), MACS[NAMES.indexOf(name)]); return;
    case 'unbind': t.port[name].guard.leased.delete(hostIp(NAMES.indexOf(name))); return;
    // A renewal: the server ACKs the binding already held (guards.ts leaseBound sets it again).
    case 'renew': { const g = t.port[name].guard.leased, ip = hostIp(NAMES.indexOf(name)), m = g.get(ip); if (m !== undefined) g.set(ip, m); return; }
    // The port's address given to the next host's MAC: that MAC pinned here (and this host's frames from it refused).
    case 'bindOther': t.port[name].guard.leased.set(hostIp(NAMES.indexOf(name)), MACS[(NAMES.indexOf(name) + 1) % HOSTS]); return;
    case 'bindConf': t.port[name].guard.configured.set(hostIp((NAMES.indexOf(name) + 1) % HOSTS), MACS[NAMES.indexOf(name)]); return;
    case 'confClear': t.port[name].guard.configured.clear(); return;
    // As the EVPN service: a VLAN's answering turned on or off, the suppressor attached while any VLAN answers.
    case 'suppress': {
      const vid = PORTS[name].mode === 'access' ? (PORTS[name] as { vid: number }).vid : 20;
      t.sup.enable(vid, t.sup.on[vid] !== 1);
      if (t.sup.active !== (t.br.arpSuppress !== undefined)) t.br.arpSuppress = t.sup.active ? t.sup : undefined;
      return;
    }
    case 'batch': {
      if (o.split === true) {
        for (const f of o.frames) apply(t, { op: 'batch', port: name, frames: [f] });
        return;
      }
      if (!t.port[name].up) return;
      const offs: number[] = [], lens: number[] = [];
      let size = 3;
      const frames = o.frames.map((f) => (f instanceof Uint8Array ? f : frameOf(f, name)));
      for (const f of frames) { offs.push(size + HDR); lens.push(f.length - HDR); size += f.length + 5; }
      const buf = new Uint8Array(size).fill(0xa5);
      frames.forEach((f, i) => buf.set(f, offs[i] - HDR));
      if (t.model !== undefined) t.model.read(t.io[name], buf, offs, lens, t.clock.now);
      else t.io[name].rx.batch(buf, Int32Array.from(offs), Int32Array.from(lens), offs.length, t.io[name].offload, t.clock.now);
    }
  }
}

function state(t: Rig) {
  t.br.foldFlowCache();
  return {
    ports: NAMES.map((n) => ({ n, up: t.port[n].up, ...t.port[n].counters() })),
    counters: { ...t.br.counters },
    fdbCounters: { ...t.br.fdb.counters },
    suppress: [10, 20].map((vid) => ({ ...t.sup.counters(vid) })),
    // IPv6 claims with their last use (guard6.ts): replayed frames refresh them as the pipeline's did.
    ip6: t.br.ip6Bindings.entries().map((e) => `${e.vid}/${Buffer.from(e.addr).toString('hex')}/${e.port}/${e.static}/${e.lastUsed}`).sort(),
    fdb: t.br.fdb.entries().map((e) => [e.vid, e.mac, e.port, e.updated, e.isStatic]).sort((x, y) => (x[0] as number) - (y[0] as number) || (x[1] as number) - (y[1] as number)),
  };
}

describe('flow cache: cache on and off give the same outputs, counters and MAC table', () => {
  it('under random frames and control changes (fast-check)', () => {
    let hits = 0, hdrHits = 0, tagHits = 0, l3Hits = 0, arpHits = 0, ip6Hits = 0, installs = 0, invalidations = 0;
    fc.assert(fc.property(fc.array(opArb, { minLength: 1, maxLength: 80 }), (ops) => {
      const off = rig(false), on = rig(true);
      for (const o of ops) {
        apply(off, o);
        apply(on, o);
        expect(on.log).toEqual(off.log);
        expect(state(on)).toEqual(state(off));
      }
      hits += on.model!.hits;
      hdrHits += on.model!.hdrHits;
      tagHits += on.model!.tagHits;
      l3Hits += on.model!.l3Hits;
      arpHits += on.model!.arpHits;
      ip6Hits += on.model!.ip6Hits;
      installs += on.br.flowCacheCounters.installs;
      invalidations += on.br.flowCacheCounters.invalidations;
      expect(on.br.flowCacheCounters.hits).toBe(on.model!.hits);
    }), { numRuns: RUNS, seed: SEED });
    if (process.env.FUZZ_SHOW) console.log(JSON.stringify({ seed: SEED, hits, hdrHits, tagHits, l3Hits, arpHits, ip6Hits, installs, invalidations }));
    // The runs replayed frames, not only missed.
    expect(hits).toBeGreaterThan(RUNS / 10);
    expect(hdrHits).toBeGreaterThan(RUNS / 100); // TSO, partial-checksum and DATA_VALID frames among them
    expect(tagHits).toBeGreaterThan(0); // trunk to trunk, the tag kept (the next test pins it)
    expect(l3Hits).toBeGreaterThan(RUNS / 30); // from guarded ports and suppressing VLANs, keyed by IPv4 source
    expect(arpHits).toBeGreaterThan(RUNS / 100); // a guarded port's ARP, keyed by its sender address
    expect(ip6Hits).toBeGreaterThan(RUNS / 100); // a guarded port's IPv6, keyed by its source address (its claim refreshed)
    expect(installs).toBeGreaterThan(RUNS / 3);
    expect(invalidations).toBeGreaterThan(RUNS);
  }, 120_000);

  function primed(): { on: Rig; off: Rig; ab: Uint8Array } {
    const on = rig(true, false), off = rig(false, false);
    const ab = new Uint8Array(HDR + 60);
    writeMac(ab, HDR, MACS[1]);
    writeMac(ab, HDR + 6, MACS[0]);
    ab[HDR + 12] = 0x08;
    const ba = ab.slice();
    writeMac(ba, HDR, MACS[0]);
    writeMac(ba, HDR + 6, MACS[1]);
    for (const t of [on, off]) {
      apply(t, { op: 'batch', port: 'a1', frames: [ab] }); // learns MACS[0] on a1, floods
      apply(t, { op: 'batch', port: 'a2', frames: [ba] }); // learns MACS[1] on a2
      apply(t, { op: 'batch', port: 'a1', frames: [ab] }); // known unicast: installed when on
      apply(t, { op: 'batch', port: 'a1', frames: [ab] }); // replayed when on
    }
    expect(on.model!.hits).toBe(1);
    return { on, off, ab };
  }
  const both = (p: { on: Rig; off: Rig }, o: Op): void => { apply(p.on, o); apply(p.off, o); };
  const same = (p: { on: Rig; off: Rig }): void => {
    expect(p.on.log).toEqual(p.off.log);
    expect(state(p.on)).toEqual(state(p.off));
  };

  it('a MAC moving to another port is never replayed to the old one', () => {
    const p = primed();
    const moved = p.ab.slice();
    writeMac(moved, HDR, MACS[0]);
    writeMac(moved, HDR + 6, MACS[1]); // MACS[1] now speaks from a3
    both(p, { op: 'batch', port: 'a3', frames: [moved] });
    const hits = p.on.model!.hits;
    p.on.log.length = p.off.log.length = 0;
    both(p, { op: 'batch', port: 'a1', frames: [p.ab] });
    expect(p.on.model!.hits).toBe(hits);
    expect(p.on.log.map((s) => s.port)).toEqual(['a3']);
    same(p);
  });

  it('a port removed, a VLAN change, a guard (also set on the port in place, as the daemon does) or a rate limit ends replays; counts stay where they belong', () => {
    for (const change of [
      { op: 'remove', port: 'a2' }, { op: 'vlan', port: 'a2' }, { op: 'vlanTag', port: 'a2' }, { op: 'guard', port: 'a1' }, { op: 'guardSet', port: 'a1' },
      { op: 'rate', port: 'a2' },
      { op: 'gone', port: 'a2' }, { op: 'ageing', port: 'a1' },
    ] as Op[]) {
      const p = primed();
      both(p, change);
      const hits = p.on.model!.hits;
      both(p, { op: 'batch', port: 'a1', frames: [p.ab] });
      expect(p.on.model!.hits, change.op).toBe(hits);
      same(p);
    }
  });

  it('TSO super-frames replay with their header as they came to a port that takes it, never to one without', () => {
    const p = primed();
    const fromA4 = p.ab.slice();
    writeMac(fromA4, HDR, MACS[0]);
    writeMac(fromA4, HDR + 6, MACS[5]);
    both(p, { op: 'batch', port: 'a4', frames: [fromA4] }); // a4's host learned (a device without the header)
    const tso = p.ab.slice(); // to a2's host
    writeVnet(tso, 0, 1, 1, 54, 1448, 34, 16); // NEEDS_CSUM, TCPV4
    const toA4 = tso.slice();
    writeMac(toA4, HDR, MACS[5]);
    const hits = p.on.model!.hits;
    p.on.log.length = p.off.log.length = 0;
    for (let i = 0; i < 3; i++) {
      both(p, { op: 'batch', port: 'a1', frames: [tso] });
      both(p, { op: 'batch', port: 'a1', frames: [toA4] });
      same(p);
    }
    // The first through the pipeline (installed), the next two replayed; a4's never (no segmenter here: tx_error).
    expect(p.on.model!.hits - hits).toBe(2);
    expect(p.on.model!.hdrHits).toBe(2);
    expect(p.on.log).toEqual(Array(3).fill({ port: 'a2', frame: `01013600a80522001000|${Buffer.from(tso.subarray(HDR)).toString('hex')}` }));
    expect(p.on.port.a4.drops[Drop.tx_error]).toBe(3);
  });

  it('trunk to trunk: a tagged frame replays with its tag as it came (PCP too); the MAC ages in the tag\'s VLAN', () => {
    const on = rig(true, false), off = rig(false, false);
    const p = { on, off };
    const t12 = new Uint8Array(HDR + 64);
    writeMac(t12, HDR, MACS[6]);
    writeMac(t12, HDR + 6, MACS[4]);
    t12.set([0x81, 0x00, 0xa0, 0x14, 0x08, 0x00], HDR + 12); // PCP 5, VID 20
    const t21 = t12.slice();
    writeMac(t21, HDR, MACS[4]);
    writeMac(t21, HDR + 6, MACS[6]);
    t21.set([0x00, 0x14], HDR + 14); // VID 20, PCP 0
    both(p, { op: 'batch', port: 't1', frames: [t12] }); // learns t1's host in VLAN 20
    both(p, { op: 'batch', port: 't2', frames: [t21] }); // t2's
    on.log.length = off.log.length = 0;
    for (let i = 0; i < 5; i++) {
      both(p, { op: 'tick', dt: 6_000 });
      both(p, { op: 'batch', port: 't1', frames: [t12] });
      both(p, { op: 'batch', port: 't2', frames: [t21] });
      same(p);
    }
    // The first of each way through the pipeline (installed), the other four replayed, tags untouched.
    expect(on.model!.tagHits).toBe(8);
    expect(on.log.filter((x) => x.port === 't2').map((x) => x.frame.split('|')[1])).toEqual(Array(5).fill(Buffer.from(t12.subarray(HDR)).toString('hex')));
    // The pipeline saw the last of them 24 s ago, past the 20 s ageing: the folds refreshed them in VLAN 20.
    expect(on.br.fdb.lookup(20, MACS[4])).toBe(on.port.t1.id);
    expect(on.br.fdb.lookup(20, MACS[6])).toBe(on.port.t2.id);
  });

  it('ageing counts replayed frames: MACs heard only through the cache do not age out', () => {
    const p = primed();
    const ba = p.ab.slice();
    writeMac(ba, HDR, MACS[0]);
    writeMac(ba, HDR + 6, MACS[1]);
    for (let i = 0; i < 8; i++) {
      both(p, { op: 'tick', dt: 6_000 });
      both(p, { op: 'batch', port: 'a1', frames: [p.ab] });
      both(p, { op: 'batch', port: 'a2', frames: [ba] });
      same(p);
    }
    // Both directions replayed for 48 s, past the 20 s ageing: only the folds refreshed them.
    expect(p.on.model!.hits).toBeGreaterThan(12);
    expect(p.on.br.fdb.lookup(10, MACS[0])).toBe(p.on.port.a1.id);
    same(p);
  });

  describe('guarded ports and ARP/ND suppression', () => {
    const IP4 = { k: 'ip4' as const, src: 'own' as const, proto: 6, sport: 4000, dport: 80, frag: 0, ver: 4, ihl: 5, cut: 0 };
    const spec = (dst: number, l3: L3Spec | undefined, src = -1): FrameSpec =>
      ({ dst, own: src < 0, src: src < 0 ? 0 : MACS[src], tag: undefined, hdr: undefined, payload: new Uint8Array(8), l3 });
    /** Cache on and off, guards on a3 and t2; a1's host and a3's learned, a3 -> a1 installed. */
    function guarded(): { on: Rig; off: Rig } {
      const p = { on: rig(true), off: rig(false) };
      both(p, { op: 'batch', port: 'a1', frames: [spec(MACS[2], IP4)] });
      both(p, { op: 'batch', port: 'a3', frames: [spec(MACS[0], IP4), spec(MACS[0], IP4)] }); // learned, then installed
      same(p);
      return p;
    }
    const a3toA1 = (p: { on: Rig; off: Rig }, l3: L3Spec | undefined = IP4, n = 1): void =>
      both(p, { op: 'batch', port: 'a3', frames: Array<FrameSpec>(n).fill(spec(MACS[0], l3)) });

    it('the bridge\'s IPv4 and ARP classes (ip4Class, arpClass) are the backend\'s: fuzzed frames, untagged and C-tagged', () => {
      let arps = 0;
      fc.assert(fc.property(frameArb, fc.constantFrom(undefined, 10), fc.boolean(), (f, tag, own) => {
        const b = frameOf({ ...f, tag, own }, 'a1');
        const len = b.length - HDR;
        const k = ModelBackend.key(0, b, HDR, len, true);
        const tagged = tag !== undefined;
        expect(ip4Class(b, HDR, len, tagged)).toBe(k !== undefined && k.split(',')[17] === '-1');
        expect(arpClass(b, HDR, len, tagged)).toBe(k !== undefined && k.split(',')[17] === '-2');
        if (arpClass(b, HDR, len, tagged)) arps++;
      }), { numRuns: 3000 });
      expect(arps).toBeGreaterThan(20);
    });

    it('a guarded port\'s IPv4 from its bound address replays, counted where the pipeline counts it (rx, forwarded, tx)', () => {
      const p = guarded();
      const rx = p.on.port.a3.rxFrames, tx = p.on.port.a1.txFrames, fwd = p.on.br.counters.forwarded;
      a3toA1(p, IP4, 4);
      expect(p.on.model!.hits).toBe(4);
      expect(p.on.model!.l3Hits).toBe(4);
      same(p);
      expect(p.on.port.a3.rxFrames - rx).toBe(4);
      expect(p.on.port.a1.txFrames - tx).toBe(4);
      expect(p.on.br.counters.forwarded - fwd).toBe(4);
      expect(p.on.br.flowCacheCounters.hits).toBe(4);
    });

    it('frames a guard judges by something else never hit: a spoofed or zero source, DHCP ports, spoofed or truncated ARP, IPv6, a bad header, a non-first fragment keyed by its address', () => {
      const outside: L3Spec[] = [
        { ...IP4, src: 'other' }, { ...IP4, src: 'zero' }, { ...IP4, proto: 17, sport: 68, dport: 67 }, { ...IP4, proto: 17, sport: 67, dport: 68 },
        { ...IP4, proto: 17, sport: 4000, dport: 67 }, { ...IP4, ver: 6 }, { ...IP4, ihl: 4 }, { ...IP4, cut: 19 }, { ...IP4, proto: 17, cut: 22 },
        { k: 'arp', oper: 2, spa: 'other', tpa: 0, shaOwn: true, cut: 0 }, { k: 'arp', oper: 2, spa: 'own', tpa: 0, shaOwn: false, cut: 0 },
        { k: 'arp', oper: 1, spa: 'own', tpa: 0, shaOwn: true, cut: 20 },
        { k: 'ip6', nh: 6, type: 0, cut: 0 },
      ];
      for (const l3 of outside) {
        const p = guarded();
        a3toA1(p); // a hit: the entry for the bound source stands
        a3toA1(p, l3, 2);
        a3toA1(p);
        expect(p.on.model!.hits, JSON.stringify(l3)).toBe(2);
        same(p);
      }
      // The spoofed source dropped and counted as without the cache.
      const p = guarded();
      a3toA1(p, { ...IP4, src: 'other' }, 3);
      expect(p.on.port.a3.drops[Drop.ip_source_guard]).toBe(3);
      same(p);
      // A non-first fragment of a UDP datagram "to port 67" is in the class (the guard reads no ports there): keyed by
      // MACs and source address only, it replays on the entry the TCP frames installed (the same verdict).
      const q = guarded();
      a3toA1(q, { ...IP4, proto: 17, sport: 67, dport: 68, frag: 0x00b9 }, 3);
      expect(q.on.model!.hits).toBe(3);
      same(q);
    });

    it('a binding removed ends the replays (the frames then dropped); a renewal re-ACKing the same binding invalidates nothing', () => {
      const p = guarded();
      a3toA1(p);
      const inv = p.on.br.flowCacheCounters.invalidations;
      both(p, { op: 'renew', port: 'a3' });
      expect(p.on.br.flowCacheCounters.invalidations).toBe(inv);
      a3toA1(p, IP4, 3);
      expect(p.on.model!.hits).toBe(4);
      both(p, { op: 'unbind', port: 'a3' });
      expect(p.on.br.flowCacheCounters.invalidations).toBe(inv + 1);
      a3toA1(p, IP4, 3);
      expect(p.on.model!.hits).toBe(4);
      expect(p.on.port.a3.drops[Drop.ip_source_guard]).toBe(3);
      same(p);
      both(p, { op: 'bind', port: 'a3' }); // bound again: the pipeline admits, installs, then replays
      a3toA1(p, IP4, 1);
      a3toA1(p, IP4, 2);
      expect(p.on.model!.hits).toBe(6);
      same(p);
      // A configured binding's removal too.
      both(p, { op: 'bindConf', port: 'a3' });
      const inv2 = p.on.br.flowCacheCounters.invalidations;
      both(p, { op: 'confClear', port: 'a3' });
      expect(p.on.br.flowCacheCounters.invalidations).toBe(inv2 + 1);
    });

    /** A guarded port's ARP: a reply from a3's bound sender pair to a1's host. */
    const REP: L3Spec = { k: 'arp', oper: 2, spa: 'own', tpa: 0, shaOwn: true, cut: 0 };
    /** n frames from `port`, one read (batch) each, so the first can install and the rest replay. */
    const each = (p: { on: Rig; off: Rig }, port: string, f: FrameSpec, n: number): void =>
      both(p, { op: 'batch', port, split: true, frames: Array<FrameSpec>(n).fill(f) });

    it('a guarded port\'s ARP from its bound sender pair replays (replies and unicast requests on one key, a probe from 0.0.0.0 on its own), counted where the pipeline counts it', () => {
      const p = guarded();
      const rx = p.on.port.a3.rxFrames, tx = p.on.port.a1.txFrames, fwd = p.on.br.counters.forwarded;
      each(p, 'a3', spec(MACS[0], REP), 3); // its own key: the IPv4 entry does not serve it; installed, then replayed
      expect(p.on.model!.hits).toBe(2);
      expect(p.on.model!.arpHits).toBe(2);
      each(p, 'a3', spec(MACS[0], { ...REP, oper: 1 }), 2); // a unicast request (Linux revalidating): the guard reads no opcode
      expect(p.on.model!.arpHits).toBe(4);
      each(p, 'a3', spec(MACS[0], { ...REP, oper: 1, spa: 'zero' }), 3); // a probe: admitted, keyed by 0.0.0.0
      expect(p.on.model!.arpHits).toBe(6);
      // IPv4 from 0.0.0.0 (not DHCP) is no probe: the ARP entry keyed by 0.0.0.0 never serves it; dropped as without the cache.
      each(p, 'a3', spec(MACS[0], { ...IP4, src: 'zero' }), 2);
      expect(p.on.model!.hits).toBe(6);
      expect(p.on.port.a3.drops[Drop.ip_source_guard]).toBe(2);
      same(p);
      expect(p.on.port.a3.rxFrames - rx).toBe(10);
      expect(p.on.port.a1.txFrames - tx).toBe(8);
      expect(p.on.br.counters.forwarded - fwd).toBe(8);
    });

    it('ARP the guard refuses never replays: a spoofed sender address, a sender MAC that is not the source, a truncated body; dropped and counted (arp_spoof) as without the cache', () => {
      const p = guarded();
      each(p, 'a3', spec(MACS[0], REP), 2);
      expect(p.on.model!.arpHits).toBe(1);
      for (const bad of [{ ...REP, spa: 'other' }, { ...REP, shaOwn: false }, { ...REP, cut: 20 }, { ...REP, oper: 1, spa: 'zero', shaOwn: false }] as L3Spec[]) {
        each(p, 'a3', spec(MACS[0], bad), 2);
        expect(p.on.model!.hits, JSON.stringify(bad)).toBe(1);
      }
      expect(p.on.port.a3.drops[Drop.arp_spoof]).toBe(8);
      each(p, 'a3', spec(MACS[0], REP), 1); // the good pair still replays
      expect(p.on.model!.arpHits).toBe(2);
      same(p);
    });

    it('gratuitous ARP: broadcast is flooded and never installed; a unicast one replays like any reply (the guard reads no target)', () => {
      const p = guarded();
      const installs = p.on.br.flowCacheCounters.installs;
      const garp: L3Spec = { k: 'arp', oper: 1, spa: 'own', tpa: 2, shaOwn: true, cut: 0 };
      each(p, 'a3', spec(MACS[7], garp), 3);
      expect(p.on.br.flowCacheCounters.installs).toBe(installs);
      expect(p.on.model!.hits).toBe(0);
      each(p, 'a3', spec(MACS[0], { ...garp, oper: 2 }), 3);
      expect(p.on.model!.arpHits).toBe(2);
      same(p);
    });

    it('a binding removed ends the ARP replays (then dropped, arp_spoof); a renewal invalidates nothing', () => {
      const p = guarded();
      each(p, 'a3', spec(MACS[0], REP), 2);
      both(p, { op: 'renew', port: 'a3' });
      each(p, 'a3', spec(MACS[0], REP), 2);
      expect(p.on.model!.arpHits).toBe(3);
      both(p, { op: 'unbind', port: 'a3' });
      each(p, 'a3', spec(MACS[0], REP), 2);
      expect(p.on.model!.arpHits).toBe(3);
      expect(p.on.port.a3.drops[Drop.arp_spoof]).toBe(2);
      both(p, { op: 'bindOther', port: 'a3' }); // the address now bound to another MAC: still refused
      each(p, 'a3', spec(MACS[0], REP), 2);
      expect(p.on.model!.arpHits).toBe(3);
      expect(p.on.port.a3.drops[Drop.arp_spoof]).toBe(4);
      same(p);
    });

    it('ARP from a guarded port in a VLAN where ARP/ND suppression answers is never installed (requests answered and counted); in its other VLANs it replays', () => {
      const p = guarded();
      each(p, 'a3', spec(MACS[0], REP), 2);
      expect(p.on.model!.arpHits).toBe(1);
      both(p, { op: 'suppress', port: 'a1' }); // VLAN 10 answers now: attached and on, the generation moved
      each(p, 'a3', spec(MACS[0], REP), 3);
      expect(p.on.model!.arpHits).toBe(1);
      // A unicast request for a1's host's address: the suppressor answers it (not forwarded), every time.
      each(p, 'a3', spec(MACS[0], { ...REP, oper: 1 }), 2);
      expect(p.on.sup.counters(10).suppressed).toBe(2);
      each(p, 'a3', spec(MACS[0], IP4), 3); // IPv4 still replays there
      expect(p.on.model!.hits).toBe(3);
      same(p);
      both(p, { op: 'suppress', port: 'a1' }); // off again: ARP installs and replays
      each(p, 'a3', spec(MACS[0], REP), 3);
      expect(p.on.model!.arpHits).toBe(3);
      same(p);
      // The guarded trunk t2 (host MACS[6]) to t1's host (MACS[4]) in both VLANs, VLAN 20 answering: only VLAN 10's ARP replays.
      const t = (tag: number, l3: L3Spec, _from = 't2', dst = MACS[4]): FrameSpec => ({ ...spec(dst, l3), tag });
      for (const tag of [10, 20]) {
        each(p, 't1', t(tag, IP4, 't1', MACS[6]), 1);
        each(p, 't2', t(tag, IP4), 1);
      }
      both(p, { op: 'suppress', port: 'b1' });
      const arp6: L3Spec = { ...REP, tpa: 4 };
      const h0 = p.on.model!.arpHits;
      each(p, 't2', t(20, arp6), 3);
      expect(p.on.model!.arpHits).toBe(h0);
      each(p, 't2', t(10, arp6), 3);
      expect(p.on.model!.arpHits).toBe(h0 + 2);
      each(p, 't2', t(20, arp6), 2); // the VLAN 10 entry never serves VLAN 20 (the tag is in the key)
      expect(p.on.model!.arpHits).toBe(h0 + 2);
      same(p);
    });

    /** IPv6 of the class from a3's host's own global address (TCP), and variants. */
    const IP6: L3Spec = { k: 'ip6', nh: 6, type: 0, cut: 0, src: 'own', sport: 4000 };

    it('a guarded port\'s IPv6 from the addresses it claimed replays (global and link-local; TCP, UDP, echo), each replay refreshing its claim as the pipeline\'s claim does', () => {
      const p = guarded();
      const claims = (): number => p.on.br.ip6Bindings.entries().length;
      for (const l3 of [IP6, { ...IP6, src: 'll' }, { ...IP6, nh: 17 }, { ...IP6, nh: 58, type: 128 }, { ...IP6, nh: 58, type: 129, src: 'll' }] as L3Spec[]) {
        both(p, { op: 'tick', dt: 1_000 });
        each(p, 'a3', spec(MACS[0], l3), 3); // the first claims (or refreshes) and installs, the others replay
        same(p); // the claims' last use included
      }
      expect(claims()).toBe(2);
      // The protocol is not in the key (the guard reads it only to pass it): UDP and echo from the global address
      // replay on the TCP frames' entry, the link-local echo on the link-local one.
      expect(p.on.model!.ip6Hits).toBe(2 + 2 + 3 + 3 + 3);
      both(p, { op: 'tick', dt: 5_000 });
      each(p, 'a3', spec(MACS[0], IP6), 1); // replayed only: the claim's last use moves with it (compared in same())
      expect(p.on.model!.ip6Hits).toBe(14);
      same(p);
      const used = p.on.br.ip6Bindings.entries().find((e) => e.addr[0] === 0x20)!.lastUsed;
      expect(used).toBe(p.on.clock.now);
    });

    it('IPv6 the guards judge by something else never replays: another port\'s address, ::, multicast, ND, RA, MLD, a DHCPv6 server\'s port, an extension header, a truncated packet', () => {
      const outside: L3Spec[] = [
        { ...IP6, src: 'other' }, { ...IP6, src: 'zero' }, { ...IP6, src: 'mc' }, { ...IP6, nh: 58, type: 135 }, { ...IP6, nh: 58, type: 136 },
        { ...IP6, nh: 58, type: 134 }, { ...IP6, nh: 58, type: 143 }, { ...IP6, nh: 17, sport: 547 }, { ...IP6, nh: 0 }, { ...IP6, nh: 44 },
        { ...IP6, cut: 43 },
      ];
      for (const l3 of outside) {
        const p = guarded();
        // Host 3's address (a3's host's 'other') claimed first from a4 (guarded here): a3's host sending from it is a spoof.
        both(p, { op: 'guardSet', port: 'a4' });
        both(p, { op: 'batch', port: 'a4', frames: [spec(MACS[0], { ...IP6, nh: 17 }, 3)] });
        each(p, 'a3', spec(MACS[0], IP6), 2); // a hit: the entry for the claimed source stands
        each(p, 'a3', spec(MACS[0], l3), 2);
        each(p, 'a3', spec(MACS[0], IP6), 1);
        expect(p.on.model!.ip6Hits, JSON.stringify(l3)).toBe(2);
        same(p);
      }
      const p = guarded();
      both(p, { op: 'guardSet', port: 'a4' });
      both(p, { op: 'batch', port: 'a4', frames: [spec(MACS[0], { ...IP6, nh: 17 }, 3)] });
      each(p, 'a3', spec(MACS[0], { ...IP6, src: 'other' }), 3);
      expect(p.on.port.a3.drops[Drop.ipv6_source_guard]).toBe(3);
      same(p);
    });

    it('a claim used only by replayed frames does not expire; one unused past the idle time does, ends the replays, and the next frame claims again', () => {
      const p = guarded();
      const back = spec(MACS[2], IP4, 0); // a1's host answers (IPv4, unguarded port): both MACs stay fresh through the folds
      each(p, 'a3', spec(MACS[0], IP6), 2);
      both(p, { op: 'batch', port: 'a1', frames: [back] });
      // 62.5 minutes in 15 s steps (under the MACs' 20 s ageing), past IP6_BINDING_IDLE_MS (60), the claim refreshed by replays only.
      for (let i = 0; i < 250; i++) {
        both(p, { op: 'tick', dt: 15_000 });
        each(p, 'a3', spec(MACS[0], IP6), 1);
        each(p, 'a1', back, 1);
        if (i % 25 === 0) same(p);
      }
      same(p);
      expect(p.on.model!.ip6Hits).toBe(251);
      expect(p.on.br.ip6Bindings.entries()).toHaveLength(1);
      // Then IPv4 only, both ways (the MACs and the IPv6 entry's MAC key stay fresh), past the idle time: the claim expires.
      const inv = p.on.br.flowCacheCounters.invalidations;
      for (let i = 0; i < 250; i++) {
        both(p, { op: 'tick', dt: 15_000 });
        each(p, 'a3', spec(MACS[0], IP4), 1);
        each(p, 'a1', back, 1);
      }
      expect(p.on.br.ip6Bindings.entries()).toHaveLength(0);
      expect(p.on.br.flowCacheCounters.invalidations).toBe(inv + 1);
      // The next IPv6 frame must take the pipeline (which claims the address again), not the entry installed before.
      each(p, 'a3', spec(MACS[0], IP6), 3);
      expect(p.on.br.ip6Bindings.entries()).toHaveLength(1);
      same(p);
    });

    it('the IPv6 source guard turned off in place, or the address reserved for the router, ends the replays; replays before it refreshed the claim', () => {
      const p = guarded();
      each(p, 'a3', spec(MACS[0], IP6), 3);
      both(p, { op: 'tick', dt: 1_000 });
      each(p, 'a3', spec(MACS[0], IP6), 1);
      both(p, { op: 'guard6Off', port: 'a3' }); // folds first: the replay's refresh lands as the guard saw it
      same(p);
      const h = p.on.model!.ip6Hits;
      each(p, 'a3', spec(MACS[0], IP6), 2); // installed again (now without the IPv6 source guard), replayed
      expect(p.on.model!.ip6Hits).toBe(h + 1);
      both(p, { op: 'guardSet', port: 'a3' });
      each(p, 'a3', spec(MACS[0], IP6), 2);
      same(p);
      // The router's gateway address: a3's host's address reserved for a1 (a router port there): a3's frames from it refused.
      const inv = p.on.br.flowCacheCounters.invalidations;
      for (const t of [p.on, p.off]) t.br.ip6Bindings.reserve(10, ip6Of('own', 2), t.port.a1.id);
      expect(p.on.br.flowCacheCounters.invalidations).toBe(inv + 1);
      each(p, 'a3', spec(MACS[0], IP6), 2);
      expect(p.on.port.a3.drops[Drop.ipv6_source_guard]).toBe(2);
      same(p);
    });

    it('ARP/ND suppression in a VLAN: IPv4 replays there, ARP requests and NS never do (the suppressor answers and counts them); turning it on in place invalidates', () => {
      const p = { on: rig(true, false), off: rig(false, false) };
      const a2 = (l3: L3Spec, n = 1): void => both(p, { op: 'batch', port: 'a1', split: true, frames: Array<FrameSpec>(n).fill(spec(MACS[1], l3)) });
      both(p, { op: 'batch', port: 'a2', frames: [spec(MACS[0], IP4)] });
      a2(IP4, 3); // learned, installed (keyed by MACs: no suppression yet), replayed
      expect(p.on.model!.hits).toBe(1);
      // VLAN 20 first (attaches the suppressor), then VLAN 10 in place: enable alone must invalidate.
      both(p, { op: 'suppress', port: 'b1' });
      a2(IP4, 2); // installed again (VLAN 10 does not answer: keyed by MACs), replayed
      expect(p.on.model!.hits).toBe(2);
      expect(p.on.model!.l3Hits).toBe(0);
      both(p, { op: 'suppress', port: 'a1' });
      // A unicast ARP request for a2's address: the suppressor answers it (a1's host asks for a3's, which the table holds).
      const req: L3Spec = { k: 'arp', oper: 1, spa: 'own', tpa: 2, shaOwn: true, cut: 0 };
      a2(req, 2);
      expect(p.on.sup.counters(10).suppressed).toBe(2);
      expect(p.on.model!.hits).toBe(2);
      a2(IP4, 3); // installed again, keyed by the address now, then replayed
      expect(p.on.model!.hits).toBe(4);
      expect(p.on.model!.l3Hits).toBe(2);
      a2(req, 1);
      a2({ k: 'ip6', nh: 58, type: 135, cut: 0 }, 2);
      expect(p.on.model!.hits).toBe(4);
      expect(p.on.sup.counters(10).suppressed).toBe(3);
      same(p);
      // Off again in VLAN 10: keyed by MACs again after the next install.
      both(p, { op: 'suppress', port: 'a1' });
      a2(IP4, 3);
      expect(p.on.model!.hits).toBe(6);
      same(p);
    });
  });
});
