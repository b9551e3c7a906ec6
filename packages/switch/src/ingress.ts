/*
 * Ingress: what happens to a frame arriving on a port, up to the forwarding
 * decision. In order (as Linux br_handle_frame / br_handle_frame_finish):
 * 1. sanity: a full Ethernet header; a valid unicast source MAC;
 * 2. link-local control frames (01:80:C2:00:00:0X) are not forwarded, except STP
 *    BPDUs, which flood because this bridge runs no STP (Linux does the same);
 * 3. VLAN admission: classify into a VID (tag, or the PVID for untagged and
 *    priority-tagged frames) or drop — see vlan.ts for the policy;
 * 4. the port's anti-spoofing guards (guard.ts), when it has any;
 * 5. learning, only after admission and the guards, so a frame the port may not
 *    send teaches the table nothing; not at all in a VLAN the port's `noLearn`
 *    marks (a tunnel in an EVPN VNI: there the control plane places MACs).
 * `ingress` runs the five and returns ADMIT or the Drop index to count on the port;
 * what it found (VID, tag, source, what learning did) is written into a reusable
 * FrameMeta (no object per frame) for forward and egress.
 */
import { Drop } from './drop.js';
import { ETH, ETH_HLEN, ETHERTYPE, etherType, linkLocalGroup, readMac } from './wire/ethernet.js';
import { innerType, isTagTpid, tci, tciPrio, tciVid, VID_RESERVED, VLAN_TAGGED_HLEN } from './wire/vlan.js';
import { type Fdb, Learn } from './fdb.js';
import { ADMIT_GUARD, guardCheck } from './guard.js';
import type { Port } from './port.js';
import { vnetWork } from './wire/vnet.js';

export const ADMIT = -1;

// Read per frame through a module constant: an imported binding is checked on
// every use (about 1 ns a frame; setOffloadMeta 2.5 ns through the import, 1.6 so).
const work = vnetWork;
const guard = guardCheck;
const SRC = ETH.SRC;

/** Per-frame decisions that travel from ingress to egress; one instance per bridge, reused. */
export interface FrameMeta {
  /** The VLAN the frame belongs to inside the bridge. */
  vid: number;
  /** PCP and DEI bits (TCI & 0xf000) to carry into an egress tag. */
  prio: number;
  /** 4 if the frame arrived with an 802.1Q tag (priority tag included) that egress may strip, else 0. */
  tagLen: number;
  /** Source MAC, as learned. */
  src: number;
  /** What learning the source did (Learn.*; a refusal ingress let through when learning is off). */
  learned: number;
  /** VNET_HDR_LEN if the frame's virtio_net_hdr is at buf[off-hdr, off), else 0 (a complete frame). */
  hdr: number;
  /** The header asks for work (GSO or a partial checksum): only offload ports may get the bytes as they are. */
  partial: boolean;
  /** Egress's cache for a flood: frames `segment` made of this one (-1: not yet). */
  segs: number;
}

export function newFrameMeta(): FrameMeta {
  return { vid: 0, prio: 0, tagLen: 0, src: 0, learned: 0, hdr: 0, partial: false, segs: -1 };
}

/** Fills in what the frame's virtio_net_hdr (if any) means for egress. */
export function setOffloadMeta(meta: FrameMeta, buf: Uint8Array, off: number, hdr: number): void {
  meta.hdr = hdr;
  meta.partial = hdr !== 0 && work(buf, off - hdr);
  meta.segs = -1;
}

/** Ingress for one frame the port received while up: ADMIT, or the Drop index to count on it. */
export function ingress(port: Port, fdb: Fdb, buf: Uint8Array, off: number, len: number, now: number, meta: FrameMeta): number {
  let r = admit(port, buf, off, len, meta);
  if (r !== ADMIT) return r;
  if (port.guard.active) {
    r = guard(port.guard, buf, off, len, meta.tagLen, meta.src, meta.vid, now);
    if (r !== ADMIT_GUARD) return r;
  }
  const nl = port.noLearn;
  if (nl !== undefined && nl[meta.vid] === 1) {
    meta.learned = Learn.DISABLED;
    return ADMIT;
  }
  const l = fdb.learnAt(meta.vid, buf, off + SRC, port.id, now);
  meta.learned = l;
  return l < 0 ? learnRefusal(l) : ADMIT;
}

export function admit(port: Port, buf: Uint8Array, off: number, len: number, meta: FrameMeta): number {
  if (len < ETH_HLEN) return Drop.malformed;
  // Multicast source (including broadcast) or all-zero source: never valid.
  if ((buf[off + ETH.SRC] & 1) === 1) return Drop.bad_src_mac;
  const src = readMac(buf, off + ETH.SRC);
  if (src === 0) return Drop.bad_src_mac;
  meta.src = src;
  if (buf[off] === 0x01 && linkLocalGroup(buf, off) > 0) return Drop.link_local;

  const policy = port.vlan;
  const type = etherType(buf, off);
  meta.prio = 0;
  meta.tagLen = 0;
  if (!isTagTpid(type)) return classifyUntagged(policy.pvid, meta);

  if (!policy.acceptsTagged) {
    // Access port. A priority tag (VID 0) is allowed, as 802.1Q says, unless it hides
    // a second tag: that is the double-tagging VLAN-hopping trick.
    if (type !== ETHERTYPE.VLAN || len < VLAN_TAGGED_HLEN) return Drop.vlan_tagged_on_access;
    const t = tci(buf, off);
    if (tciVid(t) !== 0 || isTagTpid(innerType(buf, off))) return Drop.vlan_tagged_on_access;
    meta.prio = tciPrio(t);
    meta.tagLen = 4;
    return classifyUntagged(policy.pvid, meta);
  }

  // Tagged VLANs on this port. S-tags are payload to an 802.1Q bridge (as Linux with
  // vlan_protocol 802.1Q): such frames belong to the PVID.
  if (type !== ETHERTYPE.VLAN) return classifyUntagged(policy.pvid, meta);
  if (len < VLAN_TAGGED_HLEN) return Drop.malformed;
  const t = tci(buf, off);
  const vid = tciVid(t);
  meta.prio = tciPrio(t);
  meta.tagLen = 4;
  if (vid === 0) return classifyUntagged(policy.pvid, meta);
  if (vid === VID_RESERVED) return Drop.vlan_reserved;
  if (!policy.isMember(vid)) return Drop.vlan_not_allowed;
  meta.vid = vid;
  return ADMIT;
}

function classifyUntagged(pvid: number, meta: FrameMeta): number {
  if (pvid === 0) return Drop.vlan_no_pvid;
  meta.vid = pvid;
  return ADMIT;
}

/**
 * Maps a refused Fdb.learn result to a Drop index, or ADMIT when the frame may still
 * be forwarded unlearned (learning disabled by ageing 0).
 */
export function learnRefusal(r: number): number {
  if (r === Learn.REFUSED_PORT_LIMIT) return Drop.port_mac_limit;
  if (r === Learn.REFUSED_STATIC) return Drop.static_mac_conflict;
  if (r === Learn.REFUSED_BOUND) return Drop.bound_mac_conflict;
  return ADMIT;
}
