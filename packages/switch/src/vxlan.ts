/*
 * A VXLAN tunnel endpoint (VTEP, RFC 7348): bridges' VLANs stretched over an IPv4
 * or IPv6 underlay, each as a 24-bit VNI, interoperating with Linux `vxlan` devices
 * and OVS.
 *
 * Model: a tunnel is a port. Each remote VTEP a bridge reaches is one bridge port
 * (TunnelIo, kind 'vxlan', named `vx-<remote IP>`), a trunk tagged in every VLAN the
 * bridge maps to a VNI. So the MAC table holds "MAC -> remote VTEP" as "MAC -> port",
 * and everything the bridge does to ports applies unchanged: data-plane learning
 * from decapsulated frames, ageing, per-port MAC limits, static entries, storm
 * control, counters and drop reasons per remote. (One port carrying the remote in
 * each MAC entry would have needed a second table beside the FDB, and its own
 * learning, ageing and limits.) EVPN fits the same model: a type-2 route is a
 * remote entry (fdb.ts "Remote entries": static, but a local port's frame moves it
 * back) on the remote's port, a type-3 route puts the remote on the VNI's flood list.
 *
 * Two owners, kept apart: `set` (the config and the `vxlan` CLI) owns each
 * segment's static flood list and static entries; the control plane owns what it
 * adds one at a time (`addFloodRemote`/`removeFloodRemote`, `addRemoteMac`/
 * `removeRemoteMac`), which `set` carries over for a VNI that stays on the same
 * bridge VLAN. A remote floods if either names it; a tunnel port lives while
 * anything names its remote. A static entry (`vxlan fdb add`) wins over a route
 * for the same MAC: the route is refused ('static_conflict'). A segment with
 * `learning: false` (the EVPN default) learns nothing from its tunnels (Port.noLearn):
 * only the control plane places remote MACs, so unknown unicast goes only where
 * type-3 routes and the static flood list say.
 *
 * Flooding is head-end replication: a frame the bridge floods in a VLAN goes to
 * each tunnel port whose remote is on that VNI's flood list (PortIo.floods, read
 * when the bridge rebuilds its flood lists). Split horizon: the tunnel ports of a
 * bridge form one horizon group (PortIo.horizon), so nothing from the overlay goes
 * back into it, flooded or unicast (dst_on_ingress, as a frame for the port it came
 * from), as Linux's single vxlan device behaves.
 *
 * Receive (`receive`, one UDP payload from the underlay socket): the VXLAN header
 * must be well formed (wire/vxlan.ts: checkVxlan), its VNI mapped, and the sender a
 * remote VTEP this bridge knows (on a flood list or named by a static entry);
 * otherwise the datagram is dropped and counted by reason (VXLAN_DROP_REASONS), so
 * a flood of random VNIs, senders or inner MACs never creates state. The inner
 * frame is given its VLAN's 802.1Q tag in place (its MACs move 4 bytes into the
 * VXLAN header's room) and handed to the remote's port; the bridge checks the
 * frame like any other (malformed, bad_src_mac, MAC limits ...).
 * The underlay stages a read batch (`stage`, then `flush`): each tunnel port gets its
 * consecutive inner frames as one PortRx.batch, so the bridge decides a run of one
 * inner flow (a GRO burst of a TCP flow) once, with counters and learning per frame.
 *
 * Send (TunnelIo.send/send2: egress gives it the frame tagged with its VLAN): the
 * tag is dropped, the VLAN's VNI looked up, and the outer IPv4 + UDP + VXLAN header
 * (wire/vxlan.ts) written into one scratch and sent with the frame's pieces as one
 * packet (UnderlayIo.send3: no copy of the frame). An inner frame whose packet would
 * exceed the underlay MTU is refused (E_TUNNEL_MTU: the port's `tunnel_mtu` drop):
 * the documented VM MTU is the underlay MTU minus 50.
 *
 * Super-frames (TunnelIo.sendVnet/send2Vnet: an offload port when the underlay has
 * `sendVxlan`): a VM's TSO/USO super-frame or checksum-partial frame is not cut into
 * segments that each take a JS turn and a syscall. Vtep.encapVnet writes the outer
 * header once (the flow hash of the super-frame's headers is the hash of each of its
 * segments) and the underlay segments, completes checksums, encapsulates every
 * segment and sends them in one batch (netdev vxlan_tx.c: UDP GSO datagrams, or sendmmsg). A segment over
 * the MTU refuses the whole frame (E_TUNNEL_MTU, as one frame would be). Frames whose
 * header asks for nothing take the ordinary path. Counted per VNI (`txSegmented`).
 *
 * DS field (wire/ecn.ts, RFC 6040 normal mode, as a Linux vxlan device): every outer
 * header, on every send path, carries the DSCP `tos` says (a value, or the inner
 * packet's with TOS_INHERIT) and the inner ECN field (CE as ECT(0)); the value is
 * computed once per frame (a super-frame's header is each of its segments'), written
 * into the IPv4 header or handed to the IPv6 underlay (`tos` of send3/sendVxlan: the
 * kernel writes that header). On receive the outer field (which the underlay leaves
 * in front of each datagram, VXLAN_TOS_BEFORE) goes onto the inner IP header by RFC
 * 6040's table, or the datagram is dropped (`ecn_not_ect`).
 *
 * IPv6 underlay (`local6`): one family per VTEP. Remotes are then small ids
 * interned in `remotes6` (Remote6Table) from the addresses the configuration names,
 * so everything above (tunnel ports, flood sets, static entries) still keys remotes
 * by one int32; a datagram's sender is looked up by its four address words. Tunnel
 * ports are named `vx-<address>` in RFC 5952 text (`vx-fd00:1::2`). The VTEP writes
 * UDP + VXLAN only: the kernel adds IPv6 and the mandatory UDP checksum (netdev
 * udp6.c), and the overhead is 70 bytes (VM MTU = underlay MTU - 70).
 *
 * Nothing per datagram allocates; remotes are found by a scan of the bridge's few
 * tunnel ports (addresses compared as int32, never as heap numbers).
 */
import { E_TUNNEL_MTU } from './egress.js';
import type { Bridge } from './bridge.js';
import type { PortIo, PortRx } from './port.js';
import { VlanPolicy } from './vlan.js';
import { readI32 } from './wire/bytes.js';
import { formatIp6, parseIp6 } from './wire/ipv6.js';
import { parseIp4 } from './wire/ipv4.js';
import * as wire from './wire/vxlan.js';
import {
  VXLAN_BAD_FLAGS, VXLAN_HLEN, VXLAN_OUTER_LEN, VXLAN_OVERHEAD, VXLAN_PORT, VXLAN_UDP_LEN, VXLAN6_OUTER_LEN, VXLAN6_OVERHEAD, VNI_MAX,
} from './wire/vxlan.js';
import { VNET_HDR_LEN, vnetGso, vnetWork } from './wire/vnet.js';
import * as ecn from './wire/ecn.js';

// Per packet through module constants: an imported binding is checked on every use (see ingress.ts).
const { checkVxlan, decapTagged: decap, taggedVid: tagVid, vxlanSourcePort, writeVxlanOuter, writeVxlanUdp } = wire;
const rd32 = readI32;
const work = vnetWork;
const gso = vnetGso;
const { encapTos, innerDsfield, ecnDecapFrame } = ecn;

/** Why the VTEP dropped a datagram from the underlay; a closed set (README "VXLAN"). */
export const VXLAN_DROP_REASONS = [
  'truncated',      // shorter than the VXLAN header plus an Ethernet header
  'bad_flags',      // I flag clear, or a flag or reserved bit set (an extension this VTEP does not speak)
  'unknown_vni',    // VNI not mapped to any bridge VLAN
  'unknown_remote', // sender is not a remote VTEP of the VNI's bridge (on no flood list, in no static entry)
  'ecn_not_ect',    // outer CE over an inner IP packet that is not ECN-capable (RFC 6040: the mark cannot be passed on)
] as const;
export type VxlanDropReason = (typeof VXLAN_DROP_REASONS)[number];
/** Frames stage holds before it flushes (a read batch is at most the ring's 256 frames). */
const STAGE_MAX = 256;
const TRUNCATED = 0;
const BAD_FLAGS = 1;
const UNKNOWN_VNI = 2;
const UNKNOWN_REMOTE = 3;
const ECN_NOT_ECT = 4;

/**
 * The underlay's sending side: one packet (outer headers first, in `a`) to `dst`;
 * bytes or a negative errno. IPv4: `a` starts with the IPv4 header and `dst` is the
 * address (u32). IPv6: `a` starts with the UDP header and `dst` is the remote's id
 * in the Vtep's `remotes6` (the underlay writes IPv6, the hop limit `Vtep.ttl`).
 */
export interface UnderlayIo {
  send3(dst: number, a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number,
    c: Uint8Array, coff: number, clen: number, tos: number): number;
  /**
   * Optional (the tunnel ports are offload ports when present): a tagged frame whose
   * virtio_net_hdr (at a[aoff-10, aoff)) asks for work, given as its MACs a[aoff,
   * aoff+12) and the rest after the tag b[boff, boff+blen), segmented or completed,
   * each piece sent behind `outer` (written for an empty inner frame; lengths and
   * checksum set per packet) to `dst`. IPv4: `outer` is IPv4 + UDP + VXLAN and `dst`
   * the address; IPv6: UDP + VXLAN and `dst` a `remotes6` id, as for send3. Packets
   * sent, or E_TUNNEL_MTU, -EINVAL, -errno;
   * res = [packets sent, their inner bytes].
   */
  sendVxlan?(dst: number, outer: Uint8Array, mtu: number, a: Uint8Array, aoff: number, b: Uint8Array, boff: number,
    blen: number, res: Int32Array, tos: number): number;
  /** Read-loop rounds in which the receive socket had more waiting than its fair share took (the addon's). */
  readonly readRoundsFull?: number;
  /** Packets the kernel refused after the underlay had queued them (a batched sender's; no port can be told any more). */
  readonly txQueueErrors?: number;
  /** Decapsulated TCP segments coalesced into super-frames toward TAPs (netdev tap_gro.c): frames written, segments in them, refused writes. */
  readonly rxCoalesced?: { frames: number; segments: number; errors: number };
  /** UDP GRO on the receive socket (netdev udp_gro.c): datagrams read whole, the packets split from them, packets dropped for want of room. */
  readonly rxGro?: { bursts: number; segments: number; dropped: number; on: boolean };
  /** Super-frames' segments sent as UDP GSO datagrams (netdev vxlan_gso.c): sendmsg calls, segments, kernel refusals. */
  readonly txGso?: { sends: number; segments: number; refused: number };
}

export interface VtepOptions {
  /** Local underlay IPv4 address (u32), the outer source (ignored with local6). */
  local: number;
  /** Local underlay IPv6 address (16 bytes): an IPv6 underlay, remotes are then `remotes6` ids. */
  local6?: Uint8Array;
  /** UDP destination port of what the VTEP sends (default 4789). */
  port?: number;
  /** Underlay MTU (default 1500): outer packets are at most this long. */
  mtu?: number;
  /** Outer TTL (default 64). */
  ttl?: number;
  /** Outer DSCP (0-255: a DS field, its ECN bits ignored) or TOS_INHERIT (the inner packet's); ECN is RFC 6040's either way. Default 0. */
  tos?: number;
  /** RFC 6040's ECN handling (default true); false: outer ECN Not-ECT, the outer ECN field ignored on receive (the behaviour before it). */
  ecn?: boolean;
}

/** One VNI of one bridge, as the daemon wants it. */
export interface SegmentSpec {
  bridge: Bridge;
  vni: number;
  vid: number;
  /** Remote VTEPs (IPv4 u32, or `Vtep.remoteOf` ids over IPv6) that get this VNI's flooded frames. */
  flood: number[];
  /** Static MAC entries (u48) behind a remote VTEP (as in `flood`). */
  fdb?: { mac: number; remote: number }[];
  /** Data-plane learning from the tunnels (default true); false where a control plane installs remote MACs. */
  learning?: boolean;
}

/** Per-VNI counters (inner frames; each head-end copy counts). */
export class Segment {
  rxPackets = 0;
  rxBytes = 0;
  txPackets = 0;
  txBytes = 0;
  /** Super-frames segmented by the underlay (each of their packets counts in txPackets). */
  txSegmented = 0;
  flood: Set<number>;
  fdb: { mac: number; remote: number }[];
  learning = true;
  /** The control plane's: remotes on the flood list (int32), and MAC (u48) -> remote (int32). */
  readonly cpFlood = new Set<number>();
  readonly cpFdb = new Map<number, number>();
  constructor(readonly vni: number, readonly vid: number, readonly tunnels: BridgeTunnels, flood: number[], fdb: { mac: number; remote: number }[]) {
    this.flood = new Set(flood.map((a) => a | 0));
    this.fdb = fdb;
  }

  floods(remote: number): boolean {
    return this.flood.has(remote) || this.cpFlood.has(remote);
  }

  /** Does this segment name `remote` (int32) anywhere? */
  names(remote: number): boolean {
    if (this.floods(remote) || this.fdb.some((f) => (f.remote | 0) === remote)) return true;
    for (const r of this.cpFdb.values()) if (r === remote) return true;
    return false;
  }
}

/** A bridge's side of the VTEP: its segments by VID and its tunnel ports. */
export class BridgeTunnels {
  readonly byVid: (Segment | undefined)[] = new Array(4096);
  /** One per remote VTEP; scanned (there are few). */
  tunnels: TunnelIo[] = [];
  /** Per VID, 1 where the segment does not learn from its tunnels (every tunnel port's Port.noLearn). */
  readonly noLearn = new Uint8Array(4096);
  constructor(readonly bridge: Bridge) {}

  find(remote: number): TunnelIo | undefined {
    const t = this.tunnels;
    for (let i = 0; i < t.length; i++) if (t[i].remote === remote) return t[i];
    return undefined;
  }
}

export function ip4Text(a: number): string {
  return `${(a >>> 24) & 255}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
}

/** The bridge port name of the tunnel to `remote` (IPv4; `Vtep.portName` for either family). */
export function tunnelPortName(remote: number): string {
  return `vx-${ip4Text(remote)}`;
}

/** A freed Remote6Table slot's address. */
const FREE = new Uint8Array(16).fill(0xff);

/**
 * IPv6 remote VTEPs, interned: the rest of the VTEP knows a remote by a small
 * positive id; its address is kept here as four int32 words for the per-datagram
 * lookup (no string, no bigint) and as bytes for sending. Only the control side
 * interns (`Vtep.remoteOf`); `Vtep.set` frees the ids no segment uses any more
 * (`retain`), so the table holds about the remotes in use, whatever the churn of
 * configuration (or, later, of EVPN routes). The data plane only looks up (`find`:
 * 0 for a stranger).
 */
export class Remote6Table {
  #words = new Int32Array(4 * 16);
  /** By id; id 0 is no remote, a freed id holds FREE. */
  readonly addrs: Uint8Array[] = [FREE];
  readonly #free: number[] = [];

  /** Ids in use. */
  get size(): number {
    return this.addrs.length - 1 - this.#free.length;
  }

  /** The id of the 16-byte address at a[off], interned if new. */
  intern(a: Uint8Array, off = 0): number {
    const id = this.find(a, off);
    if (id !== 0) return id;
    let n = this.#free.pop();
    if (n === undefined) {
      n = this.addrs.length;
      this.addrs.push(FREE);
      if (4 * (n + 1) > this.#words.length) {
        const w = new Int32Array(this.#words.length * 2);
        w.set(this.#words);
        this.#words = w;
      }
    }
    for (let i = 0; i < 4; i++) this.#words[4 * n + i] = rd32(a, off + 4 * i);
    this.addrs[n] = a.slice(off, off + 16);
    return n;
  }

  /** Frees every id not in `used` (their slots match no sender: ff..ff is no unicast source). */
  retain(used: ReadonlySet<number>): void {
    for (let id = 1; id < this.addrs.length; id++) {
      if (used.has(id) || this.addrs[id] === FREE) continue;
      this.addrs[id] = FREE;
      this.#words.fill(-1, 4 * id, 4 * id + 4);
      this.#free.push(id);
    }
  }

  /** The id of the address at buf[off, off+16), 0 if none. */
  find(buf: Uint8Array, off: number): number {
    const w0 = rd32(buf, off);
    const w1 = rd32(buf, off + 4);
    const w2 = rd32(buf, off + 8);
    const w3 = rd32(buf, off + 12);
    const w = this.#words;
    const n = this.addrs.length;
    for (let id = 1; id < n; id++) {
      const k = 4 * id;
      if (w[k + 3] === w3 && w[k + 2] === w2 && w[k + 1] === w1 && w[k] === w0 && this.addrs[id] !== FREE) return id;
    }
    return 0;
  }

  text(id: number): string {
    return id > 0 && id < this.addrs.length ? formatIp6(this.addrs[id]) : '?';
  }
}

/** A tunnel to one remote VTEP: a bridge port's I/O. */
export class TunnelIo implements PortIo {
  readonly kind = 'vxlan' as const;
  /** All tunnels of all bridges share one group: the overlay is one segment per bridge. */
  readonly horizon = 1;
  rx: PortRx | undefined = undefined;
  closed = false;
  /** Remote address as int32 (comparisons stay small integers). */
  readonly remote: number;
  /** The same as u32, boxed once here rather than per packet. */
  readonly remoteU32: number;

  /** Takes super-frames whole when the underlay can segment them (UnderlayIo.sendVxlan). */
  readonly offload: boolean;

  constructor(readonly vtep: Vtep, readonly tunnels: BridgeTunnels, remote: number) {
    this.remote = remote | 0;
    this.remoteU32 = remote >>> 0;
    this.offload = typeof vtep.io.sendVxlan === 'function';
  }

  start(rx: PortRx): void {
    this.rx = rx;
  }

  floods(vid: number): boolean {
    const seg = this.tunnels.byVid[vid];
    return seg !== undefined && seg.floods(this.remote);
  }

  /** A tagged frame: tag dropped, encapsulated. */
  send(buf: Uint8Array, off: number, len: number): number {
    const vid = len < 18 ? -1 : tagVid(buf, off);
    if (vid < 0) return -22;
    return this.vtep.encap(this, vid, buf, off, buf, off + 16, len - 16);
  }

  /** Egress's tag insert: a = 16-byte tagged header, b = the rest. */
  send2(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    const vid = alen !== 16 ? -1 : tagVid(a, aoff);
    if (vid < 0) return -22;
    return this.vtep.encap(this, vid, a, aoff, b, boff, blen);
  }

  /** A tagged frame with its virtio_net_hdr before it; one that asks for work is segmented by the underlay. */
  sendVnet(buf: Uint8Array, off: number, len: number): number {
    if (!work(buf, off - VNET_HDR_LEN)) return this.send(buf, off, len);
    const vid = len < 18 ? -1 : tagVid(buf, off);
    if (vid < 0) return -22;
    return this.vtep.encapVnet(this, vid, buf, off, buf, off + 16, len - 16);
  }

  send2Vnet(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    if (!work(a, aoff - VNET_HDR_LEN)) return this.send2(a, aoff, alen, b, boff, blen);
    const vid = alen !== 16 ? -1 : tagVid(a, aoff);
    if (vid < 0) return -22;
    return this.vtep.encapVnet(this, vid, a, aoff, b, boff, blen);
  }

  close(): void {
    this.closed = true;
    this.rx = undefined;
  }

  describe(): Record<string, string | number | boolean> {
    const vnis = this.tunnels.byVid.filter((s): s is Segment => s !== undefined);
    return {
      remote: this.vtep.remoteText(this.remote),
      vnis: vnis.map((s) => s.vni).join(','),
      flood: vnis.filter((s) => s.floods(this.remote)).map((s) => s.vni).join(','),
    };
  }
}

export class VtepError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

export class Vtep {
  readonly local: number;
  /** 6: an IPv6 underlay (remotes are `remotes6` ids). */
  readonly family: 4 | 6;
  readonly local6: Uint8Array | undefined;
  readonly remotes6 = new Remote6Table();
  /** Underlay MTU minus the VM MTU: 50 over IPv4, 70 over IPv6. */
  readonly overhead: number;
  readonly port: number;
  mtu: number;
  ttl: number;
  /** The outer DS field's source: 0-255, or TOS_INHERIT (wire/ecn.ts encapTos). */
  tos: number;
  /** ECN per RFC 6040 both ways (`vxlan.ecn: rfc6040`, the default), or not at all (`off`). */
  ecn: boolean;
  readonly drops = new Float64Array(VXLAN_DROP_REASONS.length);
  readonly #byVni = new Map<number, Segment>();
  readonly #bridges = new Map<Bridge, BridgeTunnels>();
  readonly #scratch = new Uint8Array(VXLAN_OUTER_LEN);
  /** sendVxlan's [packets, inner bytes]. */
  readonly #res = new Int32Array(2);
  // Frames staged for one tunnel port (stage/flush): offsets and lengths in #stagedBuf.
  readonly #stageOffs = new Int32Array(STAGE_MAX);
  readonly #stageLens = new Int32Array(STAGE_MAX);
  #staged = 0;
  #stagedRx: PortRx | undefined = undefined;
  #stagedBuf: Uint8Array | undefined = undefined;

  constructor(readonly io: UnderlayIo, opts: VtepOptions) {
    this.local = opts.local >>> 0;
    this.local6 = opts.local6?.slice();
    this.family = opts.local6 !== undefined ? 6 : 4;
    this.overhead = this.family === 6 ? VXLAN6_OVERHEAD : VXLAN_OVERHEAD;
    this.port = opts.port ?? VXLAN_PORT;
    this.mtu = opts.mtu ?? 1500;
    this.ttl = opts.ttl ?? 64;
    this.tos = opts.tos ?? 0;
    this.ecn = opts.ecn ?? true;
  }

  /** The remote for an address in text (IPv4 u32, or an IPv6 id interned now); -1 if not an address of the underlay's family. */
  remoteOf(text: string): number {
    if (this.family === 4) return text.includes(':') ? -1 : parseIp4(text);
    const a = text.includes(':') ? parseIp6(text) : undefined;
    return a === undefined ? -1 : this.remotes6.intern(a);
  }

  remoteText(remote: number): string {
    return this.family === 6 ? this.remotes6.text(remote) : ip4Text(remote);
  }

  /** The bridge port name of the tunnel to `remote`: `vx-` and its address (RFC 5952 text for IPv6). */
  portName(remote: number): string {
    return `vx-${this.remoteText(remote)}`;
  }

  segments(): Segment[] {
    return [...this.#byVni.values()];
  }

  bridgeTunnels(): BridgeTunnels[] {
    return [...this.#bridges.values()];
  }

  dropCounts(): Record<VxlanDropReason, number> {
    return Object.fromEntries(VXLAN_DROP_REASONS.map((r, i) => [r, this.drops[i]])) as Record<VxlanDropReason, number>;
  }

  /**
   * Makes the VTEP carry exactly `specs`: tunnel ports created for new remotes
   * and removed for remotes no segment names any more, VLAN memberships and
   * flood lists updated, the static entries it installed replaced. Checked first:
   * a VNI or a bridge VLAN mapped twice is refused and nothing changes.
   */
  set(specs: SegmentSpec[]): void {
    const vnis = new Set<number>();
    const vids = new Set<string>();
    for (const s of specs) {
      if (!Number.isInteger(s.vni) || s.vni < 0 || s.vni > VNI_MAX) throw new VtepError('EINVAL', `VNI ${s.vni} out of range (0-${VNI_MAX})`);
      if (!Number.isInteger(s.vid) || s.vid < 1 || s.vid > 4094) throw new VtepError('EINVAL', `VLAN ${s.vid} out of range (1-4094)`);
      if (vnis.has(s.vni)) throw new VtepError('EEXIST', `VNI ${s.vni} is mapped twice`);
      const k = `${s.bridge.name}/${s.vid}`;
      if (vids.has(k)) throw new VtepError('EEXIST', `bridge ${s.bridge.name} VLAN ${s.vid} is mapped to two VNIs`);
      vnis.add(s.vni);
      vids.add(k);
    }
    const old = new Map(this.#byVni);
    this.#byVni.clear();
    // The static entries this VTEP installed go first; the new set is installed below.
    for (const seg of old.values()) {
      const br = seg.tunnels.bridge;
      for (const f of seg.fdb) {
        const e = br.fdb.get(seg.vid, f.mac);
        const t = seg.tunnels.find(f.remote | 0);
        if (e !== undefined && e.isStatic && t !== undefined && br.portName(e.port) === this.portName(t.remote)) br.fdb.delete(seg.vid, f.mac);
      }
    }
    const byBridge = new Map<Bridge, SegmentSpec[]>();
    for (const s of specs) byBridge.set(s.bridge, [...byBridge.get(s.bridge) ?? [], s]);
    for (const [br, bt] of this.#bridges) {
      if (!byBridge.has(br)) {
        for (const t of bt.tunnels) if (br.port(this.portName(t.remote))?.io === t) br.removePort(this.portName(t.remote));
        this.#bridges.delete(br);
      }
    }
    for (const [br, list] of byBridge) {
      let bt = this.#bridges.get(br);
      if (bt === undefined) {
        bt = new BridgeTunnels(br);
        this.#bridges.set(br, bt);
      }
      bt.byVid.fill(undefined);
      const remotes = new Set<number>();
      for (const s of list) {
        const prev = old.get(s.vni);
        const seg = new Segment(s.vni, s.vid, bt, s.flood, s.fdb ?? []);
        seg.learning = s.learning ?? true;
        if (prev !== undefined && prev.tunnels === bt && prev.vid === s.vid) {
          seg.rxPackets = prev.rxPackets;
          seg.rxBytes = prev.rxBytes;
          seg.txPackets = prev.txPackets;
          seg.txBytes = prev.txBytes;
          seg.txSegmented = prev.txSegmented;
          // The control plane's entries stay with the VNI while it stays on this VLAN.
          for (const r of prev.cpFlood) seg.cpFlood.add(r);
          for (const [m, r] of prev.cpFdb) seg.cpFdb.set(m, r);
        }
        bt.byVid[s.vid] = seg;
        this.#byVni.set(s.vni, seg);
        for (const a of seg.flood) remotes.add(a);
        for (const f of seg.fdb) remotes.add(f.remote | 0);
        for (const a of seg.cpFlood) remotes.add(a);
        for (const a of seg.cpFdb.values()) remotes.add(a);
      }
      bt.noLearn.fill(0);
      for (const s of list) if (s.learning === false) bt.noLearn[s.vid] = 1;
      const policy = VlanPolicy.from({ mode: 'trunk', allowed: list.map((s) => s.vid) });
      const keep: TunnelIo[] = [];
      for (const t of bt.tunnels) {
        const name = this.portName(t.remote);
        const live = br.port(name)?.io === t;
        if (remotes.has(t.remote) && live) {
          keep.push(t);
          br.setPortVlan(name, policy);
        } else if (live) {
          br.removePort(name);
        }
      }
      for (const r of remotes) {
        if (keep.some((t) => t.remote === r)) continue;
        const t = new TunnelIo(this, bt, r);
        br.addPort(this.portName(r), t, { vlan: VlanPolicy.from({ mode: 'trunk', allowed: list.map((s) => s.vid) }) });
        keep.push(t);
      }
      bt.tunnels = keep;
      for (const t of keep) br.port(this.portName(t.remote))!.noLearn = bt.noLearn;
      for (const s of list) {
        for (const f of s.fdb ?? []) br.addStatic(f.mac, this.portName(f.remote), s.vid);
        const seg = bt.byVid[s.vid]!;
        for (const [m, r] of seg.cpFdb) {
          const e = br.fdb.get(s.vid, m);
          if (e !== undefined && e.isStatic && !e.remote) seg.cpFdb.delete(m); // a static entry took it
          // A local port's frame took it back while the route stood (MAC mobility): it stays local.
          else if (e !== undefined && !e.remote && br.port(br.portName(e.port))?.horizon === 0) continue;
          else br.fdb.addStatic(s.vid, m, br.port(this.portName(r))!.id, true);
        }
      }
      br.refreshFloodLists();
    }
    if (this.family === 6) {
      const used = new Set<number>();
      for (const s of specs) {
        for (const r of s.flood) used.add(r);
        for (const f of s.fdb ?? []) used.add(f.remote);
      }
      for (const seg of this.#byVni.values()) {
        for (const r of seg.cpFlood) used.add(r);
        for (const r of seg.cpFdb.values()) used.add(r);
      }
      this.remotes6.retain(used);
    }
  }

  segment(vni: number): Segment | undefined {
    return this.#byVni.get(vni);
  }

  /** The tunnel port to `remote` (int32) on the segment's bridge, created if need be. */
  #tunnel(seg: Segment, remote: number): number {
    const bt = seg.tunnels;
    const br = bt.bridge;
    const name = this.portName(remote);
    const t = bt.find(remote);
    if (t !== undefined) return br.port(name)!.id;
    const vids: number[] = [];
    bt.byVid.forEach((s, vid) => { if (s !== undefined) vids.push(vid); });
    const io = new TunnelIo(this, bt, remote);
    const port = br.addPort(name, io, { vlan: VlanPolicy.from({ mode: 'trunk', allowed: vids }) });
    port.noLearn = bt.noLearn;
    bt.tunnels = [...bt.tunnels, io];
    return port.id;
  }

  /** Removes the tunnel port to `remote` if no segment of its bridge names it any more. */
  #release(bt: BridgeTunnels, remote: number): void {
    if (bt.byVid.some((s) => s !== undefined && s.names(remote))) return;
    const t = bt.find(remote);
    if (t === undefined) return;
    const name = this.portName(remote);
    if (bt.bridge.port(name)?.io === t) bt.bridge.removePort(name);
    bt.tunnels = bt.tunnels.filter((x) => x !== t);
  }

  /** The control plane puts `remote` (u32) on the VNI's flood list; false if the VNI is not carried. */
  addFloodRemote(vni: number, remote: number): boolean {
    const seg = this.#byVni.get(vni);
    if (seg === undefined) return false;
    remote |= 0;
    if (seg.cpFlood.has(remote)) return true;
    this.#tunnel(seg, remote);
    seg.cpFlood.add(remote);
    seg.tunnels.bridge.refreshFloodLists();
    return true;
  }

  removeFloodRemote(vni: number, remote: number): void {
    const seg = this.#byVni.get(vni);
    remote |= 0;
    if (seg === undefined || !seg.cpFlood.delete(remote)) return;
    this.#release(seg.tunnels, remote);
    seg.tunnels.bridge.refreshFloodLists();
  }

  /**
   * The control plane places `mac` behind `remote` (u32) in the VNI: a remote
   * entry on the tunnel port. Refused, with the reason, when the VNI is not
   * carried or a static entry (not the control plane's) holds the MAC.
   */
  addRemoteMac(vni: number, mac: number, remote: number): 'unknown_vni' | 'static_conflict' | undefined {
    const seg = this.#byVni.get(vni);
    if (seg === undefined) return 'unknown_vni';
    remote |= 0;
    const br = seg.tunnels.bridge;
    const e = br.fdb.get(seg.vid, mac);
    if (e !== undefined && e.isStatic && !e.remote) return 'static_conflict';
    const before = seg.cpFdb.get(mac);
    const id = this.#tunnel(seg, remote);
    br.fdb.addStatic(seg.vid, mac, id, true);
    seg.cpFdb.set(mac, remote);
    if (before !== undefined && before !== remote) this.#release(seg.tunnels, before);
    return undefined;
  }

  /** Withdraws the control plane's entry for `mac` in the VNI (a local entry the MAC has since made stays). */
  removeRemoteMac(vni: number, mac: number): void {
    const seg = this.#byVni.get(vni);
    if (seg === undefined) return;
    const remote = seg.cpFdb.get(mac);
    if (remote === undefined) return;
    seg.cpFdb.delete(mac);
    const br = seg.tunnels.bridge;
    const e = br.fdb.get(seg.vid, mac);
    if (e !== undefined && e.remote) br.fdb.delete(seg.vid, mac);
    this.#release(seg.tunnels, remote);
  }

  /** Removes every tunnel port; the VTEP carries nothing after. */
  close(): void {
    this.set([]);
  }

  /**
   * One UDP payload from the underlay at buf[off, off+len), sent by `src` (IPv4:
   * u32 or int32; IPv6: its `remotes6` id, 0 for a stranger) in an outer packet
   * whose DS field (TOS, traffic class) was `tos`, delivered at once.
   * Writes into buf (the tag goes into the VXLAN header's room).
   */
  receive(buf: Uint8Array, off: number, len: number, src: number, tos = 0): void {
    this.stage(buf, off, len, src, tos);
    this.flush();
  }

  /**
   * As receive, but the inner frame waits (in buf, which must not change until
   * `flush`) to go to its tunnel port with the frames staged after it for the same
   * port, as one PortRx.batch: the bridge then decides a run of one inner flow once
   * (Bridge "runs": a GRO burst of a TCP flow is ~23 segments) and reads its clock
   * once. The underlay stages a read batch and flushes at its end; a frame for
   * another port, or a full stage, flushes first, so frames keep their order.
   * Checks, drops and the VNI's counters are per datagram, here, as receive's.
   * The outer ECN field goes onto the inner IP header (RFC 6040, wire/ecn.ts): an
   * outer CE over an inner packet that is not ECN-capable is dropped (`ecn_not_ect`).
   */
  stage(buf: Uint8Array, off: number, len: number, src: number, tos: number): void {
    const vni = checkVxlan(buf, off, len);
    if (vni < 0) {
      this.drops[vni === VXLAN_BAD_FLAGS ? BAD_FLAGS : TRUNCATED]++;
      return;
    }
    const seg = this.#byVni.get(vni);
    if (seg === undefined) {
      this.drops[UNKNOWN_VNI]++;
      return;
    }
    const t = seg.tunnels.find(src | 0);
    const rx = t?.rx;
    if (rx === undefined) {
      this.drops[UNKNOWN_REMOTE]++;
      return;
    }
    const inner = len - VXLAN_HLEN;
    // Only outer ECT(1) and CE change anything (their low bit): one test per datagram otherwise.
    if ((tos & 1) !== 0 && this.ecn && ecnDecapFrame(buf, off + VXLAN_HLEN, inner, tos) < 0) {
      this.drops[ECN_NOT_ECT]++;
      return;
    }
    const f = decap(buf, off, seg.vid);
    seg.rxPackets++;
    seg.rxBytes += inner;
    let n = this.#staged;
    if (n > 0 && (rx !== this.#stagedRx || buf !== this.#stagedBuf || n === STAGE_MAX)) {
      this.flush();
      n = 0;
    }
    this.#stagedRx = rx;
    this.#stagedBuf = buf;
    this.#stageOffs[n] = f;
    this.#stageLens[n] = inner + 4;
    this.#staged = n + 1;
  }

  /** Delivers the staged frames (stage). */
  flush(): void {
    const n = this.#staged;
    if (n === 0) return;
    const rx = this.#stagedRx!;
    const buf = this.#stagedBuf!;
    this.#staged = 0;
    this.#stagedRx = undefined;
    this.#stagedBuf = undefined;
    if (n === 1) rx.frame(buf, this.#stageOffs[0], this.#stageLens[0]);
    else rx.batch(buf, this.#stageOffs, this.#stageLens, n);
  }

  /**
   * Sends the inner frame a[aoff, aoff+12) + b[boff, boff+blen) (MACs, then the rest
   * from the ethertype on) of VLAN `vid` to the tunnel's remote; bytes of the inner
   * frame, or a negative code (E_TUNNEL_MTU, -EINVAL for a VLAN not mapped, -errno).
   */
  encap(t: TunnelIo, vid: number, a: Uint8Array, aoff: number, b: Uint8Array, boff: number, blen: number): number {
    const seg = t.tunnels.byVid[vid];
    if (seg === undefined) return -22;
    const inner = 12 + blen;
    const s = this.#scratch;
    const sport = vxlanSourcePort(a, aoff, b, boff, blen);
    const tos = encapTos(this.tos, innerDsfield(b, boff, blen)) & (this.ecn ? 0xff : 0xfc);
    let r: number;
    if (this.family === 6) {
      if (inner + VXLAN6_OUTER_LEN > this.mtu) return E_TUNNEL_MTU;
      writeVxlanUdp(s, 0, sport, this.port, seg.vni, inner);
      r = this.io.send3(t.remote, s, 0, VXLAN_UDP_LEN, a, aoff, 12, b, boff, blen, tos);
    } else {
      if (inner + VXLAN_OUTER_LEN > this.mtu) return E_TUNNEL_MTU;
      writeVxlanOuter(s, 0, this.local, t.remoteU32, sport, this.port, seg.vni, inner, this.ttl, tos);
      r = this.io.send3(t.remoteU32, s, 0, VXLAN_OUTER_LEN, a, aoff, 12, b, boff, blen, tos);
    }
    if (r < 0) return r;
    seg.txPackets++;
    seg.txBytes += inner;
    return inner;
  }

  /**
   * encap for a frame whose virtio_net_hdr (at a[aoff-10, aoff), describing the
   * tagged frame) asks for work: one call to the underlay for all its segments.
   * Returns the inner bytes sent, or a negative code as encap.
   */
  encapVnet(t: TunnelIo, vid: number, a: Uint8Array, aoff: number, b: Uint8Array, boff: number, blen: number): number {
    const seg = t.tunnels.byVid[vid];
    if (seg === undefined) return -22;
    const s = this.#scratch;
    const sport = vxlanSourcePort(a, aoff, b, boff, blen);
    // The super-frame's IP header is each segment's (segmentation copies the DS field), so one outer DS field serves them all.
    const tos = encapTos(this.tos, innerDsfield(b, boff, blen)) & (this.ecn ? 0xff : 0xfc);
    const res = this.#res;
    let r: number;
    if (this.family === 6) {
      writeVxlanUdp(s, 0, sport, this.port, seg.vni, 0);
      r = this.io.sendVxlan!(t.remote, s, this.mtu, a, aoff, b, boff, blen, res, tos);
    } else {
      writeVxlanOuter(s, 0, this.local, t.remoteU32, sport, this.port, seg.vni, 0, this.ttl, tos);
      r = this.io.sendVxlan!(t.remoteU32, s, this.mtu, a, aoff, b, boff, blen, res, tos);
    }
    if (r < 0) return r;
    seg.txPackets += res[0];
    seg.txBytes += res[1];
    if (gso(a, aoff - VNET_HDR_LEN)) seg.txSegmented++;
    return res[1];
  }
}
