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
 *   EAGAIN (bounded by RING_MAX_FRAMES frames, the arena size and the handle's fair
 *   share of the loop turn, `setQuantum`), packs the frames
 *   into the arena, and calls the handle's JS callback once with the frame count
 *   (`ring().time[0]`: when the batch was read). The callback must consume the
 *   frames synchronously: the next batch of any handle overwrites the ring. This is
 *   safe because forwarding is synchronous and single-threaded; it also means idle
 *   ports cost no receive memory. The handles a batch wrote to are read right
 *   after it, in the same loop turn (a VM's reply is usually queued by the time the
 *   write returns), and handed to their callbacks in the same JS entry as the batch
 *   (`start` wraps each callback so; one C -> JS entry per wakeup, not two). Callbacks are plain calls (no async context): ticks and
 *   microtasks they queue run at the end of the loop turn's poll phase.
 * - AF_PACKET specifics are hidden: VLAN tags the kernel stripped into metadata
 *   (PACKET_AUXDATA) are put back into the frame, so JS sees wire-format Ethernet
 *   frames. GSO super-frames / checksum-partial frames (PACKET_VNET_HDR) arrive whole
 *   with their header when the socket was opened with `keepGso` (bridge ports, the
 *   router's uplink); without it they are segmented and checksummed in C and JS
 *   sees only complete frames.
 * - Every frame in the ring is preceded by its 10-byte virtio_net_hdr, at
 *   `arena[offs[i] - VNET_HDR_LEN, offs[i])`: what a TAP opened with `vnetHdr` or a
 *   `keepGso` socket read with the frame (a GSO super-frame of up to 64 KB, or a
 *   checksum-partial frame, as the kernel describes it), and all zeros for frames
 *   that are already complete (every frame of a TAP without `vnetHdr` or of a socket
 *   without `keepGso`).
 * - Writes are synchronous and return the byte count or a negative errno. `send2`
 *   writes two pieces as one frame (writev), which is how egress inserts or strips an
 *   802.1Q tag without copying the frame. A device that speaks the header (a TAP with
 *   `vnetHdr`, every AF_PACKET socket) gets an all-zero one in front of `send`/`send2`
 *   frames; `sendVnet`/`send2Vnet` pass the frame's own header, written with the frame
 *   as one piece, so GSO super-frames and checksum-partial frames travel on intact.
 * - A frame whose header still asks for work (GSO, NEEDS_CSUM) must not reach a device
 *   without the header; `segment` makes the complete frames it stands for in a
 *   preallocated transmit scratch area (`txScratch()`).
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
/** The virtio_net_hdr in front of every ring frame (and taken by sendVnet): vnet.ts. */
export { VNET_HDR_LEN, VNET_F_NEEDS_CSUM } from './vnet.js';
export const TX_SCRATCH_BYTES = 1024 * 1024;
export const TX_SCRATCH_FRAMES = 2048;

export interface Ring {
  /**
   * The shared receive arena; frames are `arena.subarray(offs[i], offs[i] + lens[i])`.
   * Each frame gets a 64-byte-aligned slot; AF_PACKET frames start 4 bytes into it
   * unless a VLAN tag was restored into that room.
   */
  readonly arena: Buffer;
  readonly offs: Int32Array;
  readonly lens: Int32Array;
  /**
   * `time[0]`: when the current batch was read, CLOCK_MONOTONIC in milliseconds (set
   * before each callback). Add PERF_NOW_OFFSET for performance.now()'s clock: the
   * batch time without a call (performance.now() costs a native call and an
   * allocation per batch, microseconds on a cold wakeup).
   */
  readonly time: Float64Array;
}

export interface TapOptions {
  /** Keep the device after the fd closes (TUNSETPERSIST). */
  persist?: boolean;
  /** uid/gid allowed to open it (TUNSETOWNER/TUNSETGROUP), for persistent TAPs. */
  owner?: number;
  group?: number;
  /**
   * Guest offloads: IFF_VNET_HDR with a 10-byte header (TUNSETVNETHDRSZ 10, the
   * PACKET_VNET_HDR layout) and TUNSETOFFLOAD(CSUM|TSO4|TSO6|TSO_ECN), so the
   * kernel side gets TSO and tx-checksumming and reads return GSO super-frames and
   * checksum-partial frames, described by the header in front of each ring frame.
   * Without it the device's offloads are reset (TUNSETOFFLOAD 0).
   */
  vnetHdr?: boolean;
}

export interface TapInfo {
  handle: number;
  fd: number;
  /** The kernel's name (the requested one, or the one it chose for "tap%d"). */
  name: string;
}

export interface PacketOptions {
  /**
   * Deliver GSO super-frames and checksum-partial frames whole, with the kernel's
   * virtio_net_hdr in front (offsets moved by 4 when a stripped tag is restored),
   * instead of segmenting and checksumming them here. For a bridge port, whose
   * egress completes them for devices that need it, or the router's uplink, which
   * NATs them whole. Off: complete frames only.
   */
  keepGso?: boolean;
}

export interface PacketInfo {
  handle: number;
  fd: number;
  ifindex: number;
}

/** Poll before sleep (setPollBeforeSleep): its settings, window and counters. */
export interface PollBeforeSleepStats {
  /** The largest window, µs (0: off). */
  maxUs: number;
  /** Polling allowed per second, ms. */
  budgetMs: number;
  /** The current window, µs (adaptive: 0 until a sleep a poll would have caught). */
  windowUs: number;
  /** Polls before a sleep; hits: those that found work (no sleep); misses: those that did not. */
  spins: number;
  hits: number;
  misses: number;
  /** Time spent polling, ms. */
  spinMs: number;
  /** Sleeps not polled because the second's budget was spent. */
  overBudget: number;
  /** Sleeps not polled because the host was busy: the hold after a preempted poll, or the CPU pressure at or over busyPermille. */
  hostBusy: number;
  /** Polls the scheduler preempted (another thread wanted the CPU): each starts a hold (without PSI: none for the rest of its second). */
  preempted: number;
  /** Hits served from inside the poll (not by a return to libuv's epoll_wait). */
  served: number;
  /** The host's CPU pressure (PSI some, per mille of a ~4 ms interval) that holds polling; 0: not used (no /proc/pressure/cpu). */
  busyPermille: number;
  /** The last interval's pressure, per mille; samples: intervals judged; busySamples: those at or over busyPermille. */
  pressurePermille: number;
  samples: number;
  busySamples: number;
  /** Holds started (a busy interval or a preempted poll, with the pressure signal): 8 ms, doubling with each in a row up to 1 s. */
  holds: number;
  /** Window changes: grown (a short sleep ended by a port), shrunk (a long sleep after a poll). */
  grows: number;
  shrinks: number;
}

export interface Stats {
  /** JS callbacks with count > 0. */
  rxBatches: number;
  /** ... of them follow-up batches delivered by `followUp` inside the batch callback's own JS entry. */
  rxFollowUps: number;
  /** Services of a sparse handle ahead of a backlogged one's (setSparse). */
  rxSparseFirst: number;
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
  /** Packet-socket GSO / checksum-partial frames delivered whole (`keepGso`). */
  rxOffloaded: number;
  txFrames: number;
  /** Writes that returned a negative errno. */
  txErrors: number;
  /** `segment`: super-frames cut for a device without offloads, and the segments made. */
  txGsoSegmented: number;
  txGsoSegments: number;
  /** `segment`: frames that could not be completed (unparseable, UFO, too many segments). */
  txGsoDropped: number;
  /** `segment`: checksum-partial frames completed. */
  txCsumFilled: number;
  /** `sendVxlan`: super-frames segmented for a tunnel, and the segments (outer packets) made. */
  vxlanTxSegmented: number;
  vxlanTxSegments: number;
  /** `sendVxlan`: checksum-partial frames completed for a tunnel. */
  vxlanTxCsumFilled: number;
  /** `sendVxlan`: sendmmsg calls. */
  vxlanTxBatches: number;
  /** `sendVxlan`: frames refused: unparseable, UFO, too many segments. */
  vxlanTxDropped: number;
  /** `sendVxlan`: frames refused because a segment would exceed the underlay MTU. */
  vxlanTxTooBig: number;
  /** `queueIp3`: packets queued, and those the kernel refused when the queue was flushed. */
  vxlanTxQueued: number;
  vxlanTxQueueErrors: number;
  /** `setUdpGso`: sendmsg calls with UDP_SEGMENT, the segments (outer packets) they carried, and refusals (sendmmsg from then on). */
  vxlanTxGsoSends: number;
  vxlanTxGsoSegments: number;
  vxlanTxGsoRefused: number;
  /** `setTapGro`: super-frames written to TAPs from coalesced segments, the segments they carry, and held frames whose write the TAP refused. */
  tapGroFrames: number;
  tapGroSegments: number;
  tapGroErrors: number;
  /** `setUdpGro`: datagrams of several segments read whole, the packets split from them, and segments dropped for want of room in the batch. */
  udpGroBursts: number;
  udpGroSegments: number;
  udpGroDropped: number;
  /** `setTapWriteBatch`: batches of flow-cache replays written through io_uring, the frames in them, the io_uring_enter calls they took, and frames io_uring did not take (written with writev instead). */
  uringFlushes: number;
  uringWrites: number;
  uringEnters: number;
  uringUnsent: number;
  /** Busy loop turns that gave up the CPU (setTurnYield; 0 when off). */
  turnYields: number;
  /** Nanoseconds the loop was away in them (each from its sleep's start to its return). */
  turnYieldNs: number;
}

/** Where `segment` leaves its frames: `arena[offs[i], offs[i] + lens[i])` for i < count. */
export interface TxScratch {
  readonly arena: Buffer;
  readonly offs: Int32Array;
  readonly lens: Int32Array;
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
  monotonicMs(): number;
  openTap(name: string, flags: number, owner: number, group: number): [number, number, string];
  setPersist(handle: number, on: boolean): void;
  socketRcvbuf(fd: number, bytes: number): number;
  notify(path: string, text: string): void;
  openPacket(ifname: string, flags?: number): [number, number, number];
  openUdp(localIp: number, port: number, ifname: string): [number, number, number];
  openRawIp(ifname: string): [number, number, number];
  sendIp3(handle: number, dstIp: number, a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number,
    c: Uint8Array, coff: number, clen: number): number;
  sendVxlan(handle: number, dstIp: number, outer: Uint8Array, mtu: number, a: Uint8Array, aoff: number,
    b: Uint8Array, boff: number, blen: number, res: Int32Array): number;
  queueIp3(handle: number, dstIp: number, a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number,
    c: Uint8Array, coff: number, clen: number): number;
  flushIp(): number;
  queueIp6x3(handle: number, dst: Uint8Array, doff: number, hops: number, a: Uint8Array, aoff: number, alen: number,
    b: Uint8Array, boff: number, blen: number, c: Uint8Array, coff: number, clen: number): number;
  sendVxlan6(handle: number, dst: Uint8Array, doff: number, hops: number, outer: Uint8Array, mtu: number, a: Uint8Array,
    aoff: number, b: Uint8Array, boff: number, blen: number, res: Int32Array): number;
  vxlanBuildForTest(outer: Uint8Array, mtu: number, a: Uint8Array, aoff: number, b: Uint8Array, boff: number, blen: number,
    v6?: boolean): Buffer[] | number;
  openUdp6(local: Uint8Array, loff: number, port: number, ifname: string, zeroCsumRx: boolean): [number, number, number];
  openRawIp6(local: Uint8Array, loff: number, ifname: string): [number, number, number];
  sendIp6x3(handle: number, dst: Uint8Array, doff: number, hops: number, a: Uint8Array, aoff: number, alen: number,
    b: Uint8Array, boff: number, blen: number, c: Uint8Array, coff: number, clen: number): number;
  start(handle: number, onBatch: (count: number) => void): void;
  followUp(): number;
  stop(handle: number): void;
  send(handle: number, buf: Uint8Array, off: number, len: number): number;
  send2(handle: number, a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number;
  sendRun(handle: number, buf: Uint8Array, offs: Int32Array, lens: Int32Array, from: number, to: number, ref: number,
    hlen: number, strip: number, res: Int32Array): number;
  sendVnet(handle: number, buf: Uint8Array, off: number, len: number): number;
  send2Vnet(handle: number, a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number;
  txScratch(): TxScratch;
  segment(buf: Uint8Array, off: number, len: number): number;
  close(handle: number): void;
  setLinkUp(name: string, up: boolean): void;
  ifIndex(name: string): number;
  setsid(): number;
  stats(): Stats;
  segmentForTest(vnetHdr: Uint8Array, frame: Uint8Array, vlanTci?: number, vlanTpid?: number): Buffer[];
  setQuantum(handle: number, quantum: number, frames?: boolean): void;
  fairFull(handle: number): number;
  setSparse(handle: number, on: boolean): boolean;
  setPollBeforeSleep(maxUs: number, budgetMs: number, holdOnPreemptForTest?: boolean): void;
  pollBeforeSleepStats(): PollBeforeSleepStats;
  setTapWriteBatch(on: boolean): { on: boolean; error: string | null };
  setTurnYield(us: number): void;
  pollBeforeSleepForTest(maxUs: number, budgetMs: number, steps: Float64Array, busyPermille?: number): { out: number[]; stats: PollBeforeSleepStats };
  setTapGro(on: boolean): void;
  setUdpGro(handle: number, on: boolean): boolean;
  setUdpRecvTos(handle: number, on: boolean): boolean;
  setUdpGso(on: boolean, refusedForTest?: boolean): void;
  groForTest(frames: Uint8Array[], split?: number): Buffer[];
  fairServeForTest(state: Uint8Array, primary: boolean, lens: Uint8Array, count: number): number;
  flowCacheGenerations(): Float64Array;
  flowCacheInstall(bridge: number, inHandle: number, inCookie: number, buf: Uint8Array, off: number, len: number,
    outHandle: number, outCookie: number, l3?: boolean): number;
  flowCacheProbeForTest(inHandle: number, buf: Uint8Array, off: number, len: number, nowMs: number, written: number): number;
  flowCacheFold(out: Float64Array): number;
  flowCacheFlush(bridge: number): void;
  flowCacheStats(): FlowCacheStats;
}

/** The flow cache table's own counts (native/flowcache.c); the bridges count installs and invalidations. */
export interface FlowCacheStats {
  /** Frames replayed without JS. */
  hits: number;
  /** Probes that missed (the batch's rest went to JS). */
  misses: number;
  installs: number;
  /** Installs refused: no free slot in the key's window without unfolded counts. */
  installRefused: number;
  flushes: number;
  /** Entries that can hit now. */
  entries: number;
}

const native: Native = require('../build/Release/netdev.node');

export const TAP_PERSIST = 1;
export const TAP_VNET_HDR = 2;

let theRing: Ring | undefined;
export function ring(): Ring {
  theRing ??= native.ring();
  return theRing;
}

/** CLOCK_MONOTONIC in milliseconds, the clock of `ring().time`. */
export const monotonicMs: Native['monotonicMs'] = native.monotonicMs;

/**
 * performance.now() - monotonicMs(): both read CLOCK_MONOTONIC (libuv's hrtime), so
 * the difference is Node's time origin, constant; measured once here (best of 5
 * brackets, to within microseconds).
 */
export const PERF_NOW_OFFSET: number = (() => {
  let width = Infinity;
  let off = 0;
  for (let i = 0; i < 5; i++) {
    const a = performance.now();
    const m = native.monotonicMs();
    const b = performance.now();
    if (b - a < width) {
      width = b - a;
      off = (a + b) / 2 - m;
    }
  }
  return off;
})();

export function openTap(name: string, opts: TapOptions = {}): TapInfo {
  const flags = (opts.persist ? TAP_PERSIST : 0) | (opts.vnetHdr ? TAP_VNET_HDR : 0);
  const [handle, fd, kname] = native.openTap(name, flags, opts.owner ?? -1, opts.group ?? -1);
  return { handle, fd, name: kname };
}

export const PACKET_KEEP_GSO = 1;

export function openPacket(ifname: string, opts: PacketOptions = {}): PacketInfo {
  const [handle, fd, ifindex] = native.openPacket(ifname, opts.keepGso ? PACKET_KEEP_GSO : 0);
  return { handle, fd, ifindex };
}

/**
 * The VXLAN underlay's receiver: a UDP socket bound to localIp:port (host-order
 * u32; 0 = any), on `ifname` only when given (SO_BINDTODEVICE). `start` delivers
 * datagrams (UDP payloads) to the ring; the 10 bytes before each hold the sender:
 * IPv4 address (4 bytes) and port (2 bytes), network order, then 4 zero bytes.
 */
export function openUdp(localIp: number, port: number, ifname = ''): { handle: number; fd: number } {
  const [handle, fd] = native.openUdp(localIp >>> 0, port, ifname);
  return { handle, fd };
}
/** The VXLAN underlay's sender: an IPPROTO_RAW socket (the caller writes the IPv4 header; the kernel routes it and fills the IPv4 checksum). */
export function openRawIp(ifname = ''): { handle: number; fd: number } {
  const [handle, fd] = native.openRawIp(ifname);
  return { handle, fd };
}
/** One IPv4 packet gathered from a, b and c (its IPv4 header first) to dstIp (host-order u32); bytes written or -errno (EMSGSIZE: over the route's MTU with DF). */
export const sendIp3: Native['sendIp3'] = native.sendIp3;
/** sendVxlan's result for a frame with a segment over the underlay MTU (the switch's E_TUNNEL_MTU). */
export const VXLAN_TX_TOO_BIG = -10001;
/**
 * A tagged frame whose virtio_net_hdr (at a[aoff-10, aoff)) asks for work (GSO, a
 * partial checksum), given as its MACs a[aoff, aoff+12) and the rest after its
 * 802.1Q tag b[boff, boff+blen), to a VXLAN remote (native/vxlan_tx.c): segmented or
 * completed, each piece encapsulated behind `outer` (outer IPv4 + UDP + VXLAN for an
 * empty inner frame; lengths and the IPv4 checksum are set per packet) and sent
 * through the raw socket in one sendmmsg. Returns the packets sent, -EINVAL (cannot
 * be completed), VXLAN_TX_TOO_BIG (a packet would exceed `mtu`) or -errno; `res`
 * gets [packets sent, their inner bytes].
 */
export const sendVxlan: Native['sendVxlan'] = native.sendVxlan;
/**
 * sendVxlan over the IPv6 underlay: through the raw IPv6 socket of openRawIp6, to the
 * 16 bytes at dst[doff] with hop limit `hops & 255` and traffic class `hops >> 8`; `outer` is UDP + VXLAN (16 bytes,
 * wire/vxlan.ts writeVxlanUdp for an empty inner frame): the kernel writes the IPv6
 * header and the UDP checksums. The same UDP GSO (setUdpGso) and sendmmsg fallback.
 */
export const sendVxlan6: Native['sendVxlan6'] = native.sendVxlan6;
/**
 * sendIp3 deferred: the packet is copied into the VXLAN send queue (native/vxlan_tx.c)
 * and sent with the others in one sendmmsg when the queue is full (64), before a
 * sendVxlan, when the handle closes, or at flushIp(). Bytes queued or -EMSGSIZE
 * (over 16 KiB); refusals at the flush are counted (stats().vxlanTxQueueErrors).
 */
export const queueIp3: Native['queueIp3'] = native.queueIp3;
/** Sends what queueIp3 queued; returns how many packets. */
export const flushIp: Native['flushIp'] = native.flushIp;
/** Test hook: the packets sendVxlan (v6: sendVxlan6) would send (outer header + inner frame each), or its negative code. */
export const vxlanBuildForTest: Native['vxlanBuildForTest'] = native.vxlanBuildForTest;
/**
 * The VXLAN underlay's receiver over IPv6: a UDPv6 socket bound to local (16 bytes)
 * and port; each datagram's sender address (16 bytes) and port are 22 bytes before
 * its payload in the ring. zeroCsumRx: accept a zero UDP checksum (RFC 6936).
 */
export function openUdp6(local: Uint8Array, port: number, ifname = '', zeroCsumRx = false): { handle: number; fd: number } {
  const [handle, fd] = native.openUdp6(local, 0, port, ifname, zeroCsumRx);
  return { handle, fd };
}
/** The IPv6 underlay's sender: a raw IPv6 UDP socket bound to local (the kernel writes the IPv6 header and the UDP checksum). */
export function openRawIp6(local: Uint8Array, ifname = ''): { handle: number; fd: number } {
  const [handle, fd] = native.openRawIp6(local, 0, ifname);
  return { handle, fd };
}
/** One UDP datagram gathered from a, b and c (its UDP header first) to the IPv6 address dst[doff, doff+16); bytes or -errno (EMSGSIZE: over the path MTU, never fragmented). */
export const sendIp6x3: Native['sendIp6x3'] = native.sendIp6x3;
/** sendIp6x3 deferred into the VXLAN send queue, as queueIp3 (sent at flushIp(), in order with sendVxlan6's packets). */
export const queueIp6x3: Native['queueIp6x3'] = native.queueIp6x3;
export const setPersist: Native['setPersist'] = native.setPersist;
/**
 * SO_RCVBUF of a socket opened elsewhere (a net.Socket's fd; the kernel doubles
 * what is set, and turns the socket's receive autotuning off); bytes -1 reads it.
 * 0 (set) or the size (read), or -errno.
 */
export const socketRcvbuf: Native['socketRcvbuf'] = native.socketRcvbuf;
/**
 * sd_notify(3) without libsystemd: sends `text` ("READY=1", "STATUS=...", lines
 * joined by \n) as one datagram to the AF_UNIX socket `path`, as $NOTIFY_SOCKET
 * names it (a path, or "@name" for the abstract namespace). Throws with the errno.
 */
export const notify: Native['notify'] = native.notify;
/*
 * The batch callbacks by handle, for followUp(): a batch's callback, once it has
 * consumed its frames, takes the follow-up batches (the handles it wrote to, read
 * at once) in the same JS entry instead of the addon calling JS once more per
 * handle; each costs a C -> JS entry (libuv, N-API, V8's Invoke), about half of a
 * quiet ping's time in the addon (bench/DESIGN-flow-cache.md).
 */
const onBatches: (((count: number) => void) | undefined)[] = [];

function followUps(): void {
  for (;;) {
    const r = native.followUp();
    if (r < 0) return;
    // (handle << 9) | count: RING_MAX_FRAMES (256) fits in 9 bits.
    onBatches[r >>> 9]?.(r & 511);
  }
}

/**
 * Calls onBatch(count) with each batch `handle` reads (count < 0: the device is
 * gone, see above). The follow-up batches of the handles a batch wrote to are
 * delivered to their own callbacks right after it returns, in the same entry.
 */
export function start(handle: number, onBatch: (count: number) => void): void {
  // Misuse (not a function) gets the addon's own TypeError.
  if (typeof onBatch !== 'function') return native.start(handle, onBatch);
  native.start(handle, (n: number) => {
    onBatch(n);
    if (n > 0) followUps();
  });
  onBatches[handle] = onBatch;
}
export const stop: Native['stop'] = native.stop;
export const send: Native['send'] = native.send;
export const send2: Native['send2'] = native.send2;
/**
 * A run's frames in one call: buf[offs[i], +lens[i]) for i in [from, to), each as
 * `send` (strip 0) or `send2` without bytes [12, 16) (strip 4) would write it, in
 * order; stops before a frame shorter than `hlen` (14-64; >= 16 to strip) or whose
 * first hlen bytes differ from buf[ref, ref+hlen), and after a failed write. Returns the frames taken;
 * res (Int32Array(3)) gets [their bytes, bytes written, -errno of the failed last or 0].
 */
export const sendRun: Native['sendRun'] = native.sendRun;
/**
 * Writes buf[off, off+len) with the virtio_net_hdr at buf[off-10, off) as one piece.
 * A device without the header takes it only if the header asks for nothing (else -EINVAL).
 */
export const sendVnet: Native['sendVnet'] = native.sendVnet;
/** send2 with the frame's header at a[aoff-10, aoff) (a scratch header with adjusted offsets). */
export const send2Vnet: Native['send2Vnet'] = native.send2Vnet;
/** The transmit scratch area `segment` writes into; one per process (per worker). */
export const txScratch: Native['txScratch'] = native.txScratch;
/**
 * Completes the frame at buf[off, off+len) (header at buf[off-10, off)) into txScratch():
 * GSO segments with full checksums, or a copy with its checksum filled in. Returns the
 * number of frames, or -1 if it cannot be completed. Never writes the source.
 */
export const segment: Native['segment'] = native.segment;
export function close(handle: number): void {
  native.close(handle);
  onBatches[handle] = undefined;
}
export const setLinkUp: Native['setLinkUp'] = native.setLinkUp;
export const ifIndex: Native['ifIndex'] = native.ifIndex;
/** setsid(2) for this process: returns the new session id; throws (code EPERM) if it leads a process group. */
export const setsid: Native['setsid'] = native.setsid;
export const stats: Native['stats'] = native.stats;
/**
 * Test hook: run one received frame (with its 10-byte virtio_net_hdr, and an
 * optional stripped VLAN tag as the kernel would report it) through the same
 * segmentation / checksum / tag re-insertion code as the AF_PACKET receive path.
 * Returns the frames JS would see; [] if the frame would be dropped.
 */
export const segmentForTest: Native['segmentForTest'] = native.segmentForTest;

/**
 * The read loop's fair share (native/fair.c): deficit round robin over the handles
 * with frames waiting, one round per event-loop turn. Each service of a handle reads
 * at most its quantum's worth of frames, each frame costing its length plus
 * FAIR_FRAME_COST bytes (a frame's fixed CPU cost, in bytes of payload); debt carries
 * over to the next round, unspent credit does not. 0 turns the limit off (drain until
 * EAGAIN or the ring is full). New handles get FAIR_QUANTUM_DEFAULT.
 */
export const FAIR_FRAME_COST = 16384;
export const FAIR_QUANTUM_DEFAULT = 256 * 1024;
export const FAIR_QUANTUM_MIN = 16384;
export const FAIR_QUANTUM_MAX = 64 * 1024 * 1024;
/** The frame share (setQuantum's `frames`): the quantum counts frames, 1 to 4096, each frame costs 1 whatever its size. */
export const FAIR_FRAMES_MIN = 1;
export const FAIR_FRAMES_MAX = 4096;
export const setQuantum: Native['setQuantum'] = native.setQuantum;
/** Services of the handle that left frames waiting for a later round (its share spent, or the ring full). */
export const fairFull: Native['fairFull'] = native.fairFull;
/**
 * Sparse-first service (native/addon.c sparse_first; DRR++, as fq_codel's new-flow
 * list), off until turned on per handle: a sparse handle that becomes readable after
 * its queue emptied is served, one quantum, before a backlogged sparse handle's own
 * service in the same loop turn (found with one epoll_wait on the sparse handles'
 * own epoll set, not a read per port); the backlogged handle still gets its quantum
 * right after. stats().rxSparseFirst counts those early services. False if the
 * kernel refused (nothing changed).
 */
export const setSparse: Native['setSparse'] = native.setSparse;

/** The largest window poll before sleep may use, µs. */
export const POLL_BEFORE_SLEEP_MAX_US = 1000;
/**
 * Poll before sleep (native/addon.c hp_before_sleep, as KVM's halt polling), daemon
 * wide (the event loop is one), off until set: when the loop is about to sleep, it
 * probes its epoll set (epoll_wait with timeout 0, one syscall per probe) for up to
 * a window, so a frame arriving within it is served without the wake-up of a
 * sleeping thread (runqueue wait and epoll's return, ~30 µs per message here). The
 * window adapts (haltpoll.c): it grows from 10 µs, doubling up to maxUs, after a
 * short sleep ended by a port; it halves (to 0 below 10 µs) after a poll that found
 * nothing followed by a sleep longer than maxUs. At most budgetMs of polling per
 * second. It holds (8 ms, doubling with each busy sign in a row up to 1 s, halving
 * with each calm interval) when the host's CPU pressure (/proc/pressure/cpu "some",
 * read at most every 4 ms while polling) was 20 % or more over an interval it polled
 * in, or when the scheduler preempted a poll (an involuntary context switch: a VM's
 * thread wanted the CPU; the window restarts from 0); without PSI a preempted poll
 * stops polling for the rest of its second. What a poll finds on a port is served
 * from inside the poll.
 * maxUs 0 turns it off; maxUs 0-1000, budgetMs 1-1000 (RangeError otherwise).
 */
export const setPollBeforeSleep: Native['setPollBeforeSleep'] = native.setPollBeforeSleep;
export const pollBeforeSleepStats: Native['pollBeforeSleepStats'] = native.pollBeforeSleepStats;
export const pollBeforeSleepForTest: Native['pollBeforeSleepForTest'] = native.pollBeforeSleepForTest;

/**
 * Batched TAP writes (native/uring.c), off by default: the flow cache's replays of one
 * read batch go out in one io_uring_enter instead of one writev each (a TAP has no
 * batched write; bench/uring measured the syscall per 64-byte frame). Returns what is
 * in force and, when io_uring could not be set up (kernel.io_uring_disabled, seccomp,
 * an old kernel), the errno code: the writes then stay on writev. Counters: `stats()`
 * uring*.
 */
export const setTapWriteBatch: Native['setTapWriteBatch'] = native.setTapWriteBatch;
/**
 * The turn yield (issue 17): after a loop turn that wrote frames while more is already
 * readable, at most once per `us` microseconds (0: off), while more tasks are runnable
 * machine-wide than there are CPUs, the loop's thread sleeps 1 µs (~55 µs with the
 * default timer slack). A frame written to a TAP wakes its reader with a sync wake-up
 * that places it on this CPU without preempting a busy loop: it waited for the next
 * tick (bench/README.md "Who the pinger waits behind"). VSWITCH_TURN_YIELD (read at
 * load) picks another mode for bench experiments: sleep, nap, yield.
 */
export const setTurnYield: Native['setTurnYield'] = native.setTurnYield;

/**
 * Receive-side GRO toward TAPs (native/tap_gro.c), off until turned on: during a
 * batch read from a VXLAN underlay socket, the complete TCP segments of one flow
 * sent (send/send2) to one TAP with the virtio_net_hdr are coalesced into one
 * checksum-partial TCPV4/TCPV6 super-frame, written when the batch's callback
 * returns (or sooner: a frame that cannot join, a full run). Each frame still
 * returns its length from send/send2; a write the TAP refuses later is counted
 * (stats().tapGroErrors).
 */
export const setTapGro: Native['setTapGro'] = native.setTapGro;
/**
 * UDP GRO on an `openUdp`/`openUdp6` handle (native/udp_gro.c), off until turned on:
 * the kernel hands over a sender's UDP GSO datagram whole (up to 64 KB) and the
 * addon splits it into the packets it carries, each a ring frame laid out as
 * without GRO, so the callback sees the same frames either way
 * (stats().udpGroBursts/udpGroSegments). False if the kernel refused the option
 * (the socket reads as before).
 */
export const setUdpGro: Native['setUdpGro'] = native.setUdpGro;
/**
 * The outer DS field (TOS / traffic class) of each datagram on an `openUdp`/`openUdp6`
 * handle, on from open: the byte 4 before each datagram's payload in the ring. Off, the
 * kernel attaches no control message and that byte reads 0. False if the kernel refused.
 */
export const setUdpRecvTos: Native['setUdpRecvTos'] = native.setUdpRecvTos;
/**
 * UDP GSO for `sendVxlan` and `sendVxlan6` (native/vxlan_gso.c), off until turned on: a
 * super-frame's encapsulated segments leave as one UDP_SEGMENT datagram per up to 64 of
 * them, through one of 16 UDP sockets (IPv4 or IPv6, as the raw socket is) bound to the
 * outer source address, chosen by the
 * flow's source port (which then becomes that socket's port, for the flow's raw
 * packets too). A kernel refusal is counted (stats().vxlanTxGsoRefused) and
 * sendmmsg takes over until this is called again (which also closes the sockets).
 * `refusedForTest`: sockets on which the kernel refuses UDP GSO (SO_NO_CHECK, UDP_NO_CHECK6_TX).
 */
export const setUdpGso: Native['setUdpGso'] = native.setUdpGso;
/** Test hook: what a TAP gets (each with its virtio_net_hdr) when `frames` are sent to it in one underlay batch. */
export const groForTest: Native['groForTest'] = native.groForTest;

/**
 * Test hook: one service of a synthetic port by the same scheduler code the read
 * loop runs. `state` = [quantum, deficit, backlogged] or, for the frame share,
 * [quantum, deficit, backlogged, 1], updated in place; `lens` the
 * lengths of the frames waiting (the first `count`); `primary`: the port's own poll
 * (not a follow-up read). Returns how many frames the service reads.
 */
export function fairServeForTest(state: Float64Array, primary: boolean, lens: Int32Array, count: number): number {
  return native.fairServeForTest(new Uint8Array(state.buffer, state.byteOffset, state.length >= 4 ? 32 : 24), primary,
    new Uint8Array(lens.buffer, lens.byteOffset, lens.byteLength), count);
}

/*
 * The exact-match flow cache (native/flowcache.c; the switch's flow-cache.ts drives
 * it): decisions the bridge pipeline made, replayed by the read loop for frames
 * with the same key (ingress handle, MACs, tag, virtio_net_hdr flags and GSO type)
 * while their bridge's generation has not moved.
 * - `flowCacheGenerations()`: one generation per bridge id (0..FLOW_CACHE_BRIDGES-1),
 *   memory the addon reads on every probe; bumping one is a store. Makes the table.
 * - `flowCacheInstall`: a frame from `inHandle` went unchanged to `outHandle` alone,
 *   its virtio_net_hdr with it when `outHandle` takes one (a header that asks for work
 *   is never replayed to a device without one, whatever was installed). `l3` true:
 *   the decision also depended on the frame being of the IPv4 class (untagged or one
 *   802.1Q tag; IPv4, version 4, IHL >= 5; not a UDP first fragment with port 67 or
 *   68 either side, nor one too short for its ports) and on its source address, or of
 *   the ARP class (the same tags; an ARP body for IPv4 over 6-byte hardware addresses
 *   whose sender hardware address is the frame's source MAC) and on its sender
 *   protocol address, or of the IPv6 class (no extension header; TCP, UDP not from port
 *   547, ICMPv6 echo; a source neither :: nor multicast) and on its source address (an
 *   anti-spoofing guard, ARP/ND suppression; native/flowcache.h ND_FC_KEY_L3):
 *   `inHandle`'s frames are keyed with that address from then on, and frames outside
 *   the classes miss (false: keyed by MACs and tag again; the install
 *   says which for every handle).
 *   Returns the slot, -1 (refused: its window is full of entries with unfolded
 *   counts) or -2 (`l3` and the frame outside the classes: nothing installed).
 * - `flowCacheFold(out)`: per entry with replayed frames since the last fold,
 *   FLOW_CACHE_FOLD_FIELDS numbers: bridge, in cookie, out cookie, source MAC high 16
 *   bits, low 32 bits, tag (tpid kind << 16 | TCI, or -1), frames, bytes, last frame's
 *   time (ring clock), bytes written, writes failed with link_down, with tx_error,
 *   the key's class (0: MACs and tag; 1 IPv4, 2 ARP, 3 IPv6), and an IPv6 key's source
 *   address as four 32-bit words (else 0: JS refreshes that address's claim).
 *   Zeroes what it returns.
 * - `flowCacheFlush(bridge)`: its entries stale (-1: all); their counts wait for the fold.
 */
export const FLOW_CACHE_BRIDGES = 4096;
export const FLOW_CACHE_SIZE = 4096;
export const FLOW_CACHE_FOLD_FIELDS = 17;
export const flowCacheGenerations: Native['flowCacheGenerations'] = native.flowCacheGenerations;
export const flowCacheInstall: Native['flowCacheInstall'] = native.flowCacheInstall;
export const flowCacheFold: Native['flowCacheFold'] = native.flowCacheFold;
export const flowCacheFlush: Native['flowCacheFlush'] = native.flowCacheFlush;
export const flowCacheStats: Native['flowCacheStats'] = native.flowCacheStats;
/** Test hook: the read loop's probe of one frame (a hit is counted with `written` as its write's result): the out handle, or -1. */
export const flowCacheProbeForTest: Native['flowCacheProbeForTest'] = native.flowCacheProbeForTest;
