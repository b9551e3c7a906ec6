/*
 * Egress: the last step, and the only place tag bytes change. Forward has already
 * decided that the port may send the frame (canEgress, forward.ts). The frame is sent
 * from the buffer it arrived in; inserting or stripping a tag writes two pieces
 * (a 12- or 16-byte header, then the rest) as one frame through writev, so no
 * frame is copied. The egress port's policy decides tagged or untagged per VID.
 *
 * Offloads (see port.ts): a frame may carry a virtio_net_hdr at buf[off-VNET_HDR_LEN, off).
 * - To a port that takes the header, the frame goes whole with it: one contiguous
 *   piece when no tag changes; when a tag is inserted or stripped, a scratch copy
 *   of the header has csum_start and hdr_len moved by +4/-4 (the offsets count from
 *   the first byte of the frame), written in front of the new Ethernet header. The
 *   received bytes are never edited: a flood sends them to other ports too.
 * - To a port that does not, a frame whose header asks for work (GSO, partial
 *   checksum) is first made into complete frames by the bridge's segmenter (the
 *   daemon gives every bridge the addon's gso.c: ports/segment.ts) in its own
 *   scratch area, once per frame even when flooding; each segment then takes the
 *   ordinary path. A frame that cannot be completed, or any such frame in a bridge
 *   given no segmenter, is dropped (tx_error on that port; the addon counts why).
 *   Complete frames with a header are sent without it.
 */
import { Drop } from './drop.js';
import type { FrameMeta } from './ingress.js';
import type { Port } from './port.js';
import { tci, tciVid, writeTaggedHeader } from './wire/vlan.js';
import { copyVnetHeader, VNET_HDR_LEN } from './wire/vnet.js';
import { E_RATE } from './police.js';

/** Makes complete frames of a frame with a virtio_net_hdr that asks for work. */
export interface Segmenter {
  /** Frames into arena at offs[i]/lens[i]; returns how many, or -1 if it cannot. Never writes buf. */
  segment(buf: Uint8Array, off: number, len: number): number;
  readonly arena: Uint8Array;
  readonly offs: Int32Array;
  readonly lens: Int32Array;
}

/** Bytes the bridge's scratch must have: a header, then a tagged Ethernet header. */
export const EGRESS_SCRATCH_BYTES = 32;

/** A bridge's egress state, made once: the scratch for tag edits and how it completes partial frames. */
export interface Egress {
  readonly scratch: Uint8Array;
  /** Absent: partial frames to ports without offload are dropped (tx_error). */
  readonly segmenter: Segmenter | undefined;
}

export function newEgress(segmenter?: Segmenter): Egress {
  return { scratch: new Uint8Array(EGRESS_SCRATCH_BYTES), segmenter };
}

/** Where the Ethernet header starts in the scratch (the vnet header goes before it). */
const EH = VNET_HDR_LEN;
// Called per frame through module constants: an imported binding is checked on
// every use (about 1 ns; see ingress.ts).
const tagHeader = writeTaggedHeader;
const copyHeader = copyVnetHeader;

/** Sends the frame out of `port`, which canEgress admitted. */
export function egress(port: Port, buf: Uint8Array, off: number, len: number, meta: FrameMeta, out: Egress): void {
  const scratch = out.scratch;
  let r: number;
  if (meta.hdr !== 0 && port.offload) {
    r = sendWithHeader(port, buf, off, len, meta, scratch);
  } else if (meta.partial) {
    egressCompleted(port, buf, off, len, meta, out);
    return;
  } else {
    r = sendPlain(port, buf, off, len, meta, scratch);
  }
  if (r < 0) {
    port.drops[txDrop(r)]++;
    return;
  }
  port.txFrames++;
  port.txBytes += r;
}

const EIO = -5;
const ENETDOWN = -100;
/** What a tunnel's send returns for a frame over its MTU (vxlan.ts); not an errno, so a device's own EMSGSIZE stays a tx_error. */
export const E_TUNNEL_MTU = -10_001;

/** A refused write: a link that is down (EIO from a TAP whose guest side is not up) is not an error; E_RATE: the shaper's queue is full; E_TUNNEL_MTU: too big for a tunnel (vxlan.ts). */
export function txDrop(r: number): number {
  return r === EIO || r === ENETDOWN ? Drop.link_down : r === E_RATE ? Drop.egress_rate : r === E_TUNNEL_MTU ? Drop.tunnel_mtu : Drop.tx_error;
}

/** A complete frame (no header), tag edits through a 16-byte scratch header. */
function sendPlain(port: Port, buf: Uint8Array, off: number, len: number, meta: FrameMeta, s: Uint8Array): number {
  const vid = meta.vid;
  const io = port.tx; // the device, or its shaper (police.ts)
  if (port.vlan.isUntagged(vid)) {
    return meta.tagLen === 0 ? io.send(buf, off, len) : io.send2(buf, off, 12, buf, off + 16, len - 16);
  }
  if (meta.tagLen === 4 && tciVid(tci(buf, off)) === vid) {
    // Already carries this VID: PCP and DEI survive trunk to trunk untouched.
    return io.send(buf, off, len);
  }
  tagHeader(s, buf, off, meta.prio | vid, EH);
  const rest = off + 12 + meta.tagLen;
  return io.send2(s, EH, 16, buf, rest, len - 12 - meta.tagLen);
}

/** The frame with its header, to a port that takes it. */
function sendWithHeader(port: Port, buf: Uint8Array, off: number, len: number, meta: FrameMeta, s: Uint8Array): number {
  const vid = meta.vid;
  const io = port.tx;
  if (port.vlan.isUntagged(vid)) {
    if (meta.tagLen === 0) return io.sendVnet!(buf, off, len);
    copyHeader(s, buf, off - EH, -4);
    for (let i = 0; i < 12; i++) s[EH + i] = buf[off + i];
    return io.send2Vnet!(s, EH, 12, buf, off + 16, len - 16);
  }
  if (meta.tagLen === 4 && tciVid(tci(buf, off)) === vid) return io.sendVnet!(buf, off, len);
  copyHeader(s, buf, off - EH, 4 - meta.tagLen);
  tagHeader(s, buf, off, meta.prio | vid, EH);
  const rest = off + 12 + meta.tagLen;
  return io.send2Vnet!(s, EH, 16, buf, rest, len - 12 - meta.tagLen);
}

/** The complete frames a partial one stands for, each through the ordinary path. */
function egressCompleted(port: Port, buf: Uint8Array, off: number, len: number, meta: FrameMeta, out: Egress): void {
  const sg = out.segmenter;
  const s = out.scratch;
  let n = meta.segs;
  if (n < 0 && sg !== undefined) {
    n = sg.segment(buf, off, len);
    meta.segs = n;
  }
  if (sg === undefined || n <= 0) {
    port.drops[Drop.tx_error]++;
    return;
  }
  const arena = sg.arena;
  const offs = sg.offs;
  const lens = sg.lens;
  for (let i = 0; i < n; i++) {
    const r = sendPlain(port, arena, offs[i], lens[i], meta, s);
    if (r < 0) {
      port.drops[txDrop(r)]++;
      continue;
    }
    port.txFrames++;
    port.txBytes += r;
  }
}
