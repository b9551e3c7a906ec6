/*
 * @vswitch/netdev: the only place vswitch touches the kernel's packet I/O.
 *
 * Model
 * - A *handle* is a small integer naming one open device: a TAP the daemon owns
 *   (/dev/net/tun, IFF_TAP|IFF_NO_PI) or an AF_PACKET socket bound to an existing
 *   interface (promiscuous). Handles are numbers, not objects, so the fast path
 *   passes integers across the N-API boundary.
 * - All reads land in ONE process-wide receive ring (`ring()`): a 4 MiB arena plus
 *   `offs`/`lens` arrays. When a handle becomes readable, the addon drains it until
 *   EAGAIN (bounded by RING_MAX_FRAMES frames and the arena size), packs the frames
 *   into the arena, and calls the handle's JS callback once with the frame count.
 *   The callback must consume the frames synchronously: the next batch of any
 *   handle overwrites the ring. This is safe because forwarding is synchronous and
 *   single-threaded; it also means idle ports cost no receive memory.
 * - AF_PACKET specifics are hidden: VLAN tags the kernel stripped into metadata
 *   (PACKET_AUXDATA) are put back into the frame, and GSO super-frames / checksum-
 *   partial frames (PACKET_VNET_HDR) are segmented and checksummed in C, so JS only
 *   ever sees complete, wire-format Ethernet frames.
 * - Writes are synchronous and return the byte count or a negative errno. `send2`
 *   writes two pieces as one frame (writev), which is how egress inserts or strips an
 *   802.1Q tag without copying the frame.
 * - A callback invoked with a negative count means the device is gone or broken
 *   (-errno, e.g. -EBADFD after `ip link del` of a TAP, -ENETDOWN/-ENODEV for a
 *   packet socket whose interface vanished). Polling has stopped; the owner decides.
 *   A packet socket whose link merely goes down (and up again) is not reported:
 *   the kernel keeps its binding, so the addon keeps polling (counted in
 *   `stats().linkDown`). -ENETDOWN therefore means the device was unregistered
 *   (deleted or moved to another netns) and the socket is dead; `start` on such a
 *   handle reports -ENODEV from the event loop. Reopen with `openPacket`.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

export const RING_BYTES = 4 * 1024 * 1024;
export const RING_MAX_FRAMES = 256;

export interface Ring {
  /**
   * The shared receive arena; frames are `arena.subarray(offs[i], offs[i] + lens[i])`.
   * Each frame gets a 64-byte-aligned slot; AF_PACKET frames start 4 bytes into it
   * unless a VLAN tag was restored into that room.
   */
  readonly arena: Buffer;
  readonly offs: Int32Array;
  readonly lens: Int32Array;
}

export interface TapOptions {
  /** Keep the device after the fd closes (TUNSETPERSIST). */
  persist?: boolean;
  /** uid/gid allowed to open it (TUNSETOWNER/TUNSETGROUP), for persistent TAPs. */
  owner?: number;
  group?: number;
  /**
   * Reserved for the offload work: sets IFF_VNET_HDR and TUNSETVNETHDRSZ 12, so every
   * read and write carries a 12-byte virtio_net_hdr that this package passes through
   * uninterpreted (no TUNSETOFFLOAD, so the kernel sends no GSO frames). Keep false.
   */
  vnetHdr?: boolean;
}

export interface TapInfo {
  handle: number;
  fd: number;
  /** The kernel's name (the requested one, or the one it chose for "tap%d"). */
  name: string;
}

export interface PacketInfo {
  handle: number;
  fd: number;
  ifindex: number;
}

export interface Stats {
  /** JS callbacks with count > 0. */
  rxBatches: number;
  /** Frames delivered to JS (each GSO segment counts). */
  rxFrames: number;
  rxBytes: number;
  /** Frames too large for one read (> 65664 bytes), dropped. */
  rxTruncated: number;
  /** Runts, bad checksum offsets, frames the kernel could not describe. */
  rxDropped: number;
  /** GSO super-frames segmented in software, and the segments produced. */
  gsoSegmented: number;
  gsoSegments: number;
  /** Super-frames refused (UFO, unparseable headers) or cut short by stop/close. */
  gsoDropped: number;
  /** Checksum-partial frames completed in software. */
  csumFilled: number;
  /** Frames whose 802.1Q/802.1ad tag was restored from packet metadata. */
  vlanRestored: number;
  /** Transient ENETDOWN on a packet socket (link down while bound). */
  linkDown: number;
  txFrames: number;
  /** Writes that returned a negative errno. */
  txErrors: number;
}

/** errno values the callbacks and `send` return (negated) that callers act on. */
export const Errno = {
  EIO: 5,
  ENXIO: 6,
  EAGAIN: 11,
  ENODEV: 19,
  EMSGSIZE: 90,
  ENETDOWN: 100,
  ENOBUFS: 105,
  EBADFD: 77,
} as const;

interface Native {
  ring(): Ring;
  openTap(name: string, flags: number, owner: number, group: number): [number, number, string];
  setPersist(handle: number, on: boolean): void;
  openPacket(ifname: string): [number, number, number];
  start(handle: number, onBatch: (count: number) => void): void;
  stop(handle: number): void;
  send(handle: number, buf: Uint8Array, off: number, len: number): number;
  send2(handle: number, a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number;
  close(handle: number): void;
  setLinkUp(name: string, up: boolean): void;
  ifIndex(name: string): number;
  stats(): Stats;
  segmentForTest(vnetHdr: Uint8Array, frame: Uint8Array, vlanTci?: number, vlanTpid?: number): Buffer[];
}

const native: Native = require('../build/Release/netdev.node');

export const TAP_PERSIST = 1;
export const TAP_VNET_HDR = 2;

let theRing: Ring | undefined;
export function ring(): Ring {
  theRing ??= native.ring();
  return theRing;
}

export function openTap(name: string, opts: TapOptions = {}): TapInfo {
  const flags = (opts.persist ? TAP_PERSIST : 0) | (opts.vnetHdr ? TAP_VNET_HDR : 0);
  const [handle, fd, kname] = native.openTap(name, flags, opts.owner ?? -1, opts.group ?? -1);
  return { handle, fd, name: kname };
}

export function openPacket(ifname: string): PacketInfo {
  const [handle, fd, ifindex] = native.openPacket(ifname);
  return { handle, fd, ifindex };
}

export const setPersist: Native['setPersist'] = native.setPersist;
export const start: Native['start'] = native.start;
export const stop: Native['stop'] = native.stop;
export const send: Native['send'] = native.send;
export const send2: Native['send2'] = native.send2;
export const close: Native['close'] = native.close;
export const setLinkUp: Native['setLinkUp'] = native.setLinkUp;
export const ifIndex: Native['ifIndex'] = native.ifIndex;
export const stats: Native['stats'] = native.stats;
/**
 * Test hook: run one received frame (with its 10-byte virtio_net_hdr, and an
 * optional stripped VLAN tag as the kernel would report it) through the same
 * segmentation / checksum / tag re-insertion code as the AF_PACKET receive path.
 * Returns the frames JS would see; [] if the frame would be dropped.
 */
export const segmentForTest: Native['segmentForTest'] = native.segmentForTest;
