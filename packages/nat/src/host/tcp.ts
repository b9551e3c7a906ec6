/*
 * TCP of the host-socket NAT: the router terminates each TCP connection a VM
 * opens to somewhere outside and splices it to an ordinary connected socket of
 * the host (as passt/pasta and libslirp do). Towards the VM this module is a
 * small TCP endpoint of its own; towards the outside it is Node's net.Socket, so
 * the host's kernel does the Internet-facing TCP (congestion control, SACK, PMTU).
 * Port forwards are the same splice opened from the other end (`accept`): a
 * client connected to a host port, and we open a connection to the VM for it.
 *
 * Model. Sessions are keyed by the four numbers the VM sees (its address and port,
 * the remote address and port), two levels of Maps on numeric keys (ip*65536+port)
 * and a one-entry cache for back-to-back segments of one flow: no strings per
 * packet. Each session has a send queue of frame blocks (below), and one timer.
 *
 * Policies, and why:
 * - The VM's SYN is answered only once the host connect succeeded, so what the
 *   VM sees is what the outside did: SYN-ACK, or a RST for a refusal, or ICMP
 *   unreachable (net or host) quoting its SYN for everything else. SYN
 *   retransmissions meanwhile are absorbed (the connect is under way).
 * - Flow control is back-pressure passed through, both ways. The window we
 *   announce is what the host socket still takes before `rcvLimit` bytes wait in
 *   its user-space buffer; it never shrinks (RFC 7323 2.4), and an ACK reopens it
 *   on 'drain'. Data from the host is queued only up to a cap (the VM's window,
 *   clamped to sndCapMin..sndCapMax): beyond it the socket is paused, so the
 *   kernel's receive buffer and the remote's window absorb a slow VM, not our heap.
 *   A zero window from the VM stops us; the persist timer probes it (an ACK one
 *   byte left of snd_una, as Linux does) at backed-off intervals, without giving
 *   up while the VM answers. A FIN waits for one byte of window, as in Linux.
 * - Loss towards the VM exists: a TAP drops frames when its backlog is full. So
 *   there is a retransmission timer (RFC 6298, 200 ms floor: a local link),
 *   go-back-N from the first unacknowledged byte on a timeout, fast retransmit on
 *   three duplicate ACKs with NewReno partial-ACK recovery, and a Reno congestion
 *   window so a 4 MiB window is not dumped into a 1000-frame backlog at once. No
 *   SACK and no timestamps (not announced): on a lossless-but-for-overflow link
 *   they buy little. Out-of-order data from the VM is dropped with a duplicate ACK
 *   (the VM's own fast retransmit repairs it); data beyond the window is trimmed.
 * - Offloads: with `gso`, host data goes out as GSO super-frames of up to 64 KB
 *   (and every data frame as checksum-partial), the way Linux hands TCP to a
 *   virtio NIC, so a frame costs one header build per 64 KB. Without, each frame
 *   is at most one MSS with complete checksums.
 * - No copy of host data here: the sockets we connect are created with Node's
 *   `onread`, so the kernel's read lands in a block from the engine's pool, at
 *   the payload offset of the frame it becomes (tcp-queue.ts). Sending writes
 *   the headers in front of it and hands the block itself to toVm; a frame that
 *   starts inside a block borrows the BLOCK_HDR bytes before it and puts them
 *   back after toVm (which consumes synchronously). A frame that would span two
 *   blocks stops at the first one's end, or, with less than an MSS there, is
 *   copied (rare; counted). Accepted sockets (port forwards) cannot take
 *   `onread`: their 'data' chunks are queued as they are, and each frame is
 *   copied from them into the engine's frame buffer.
 * - Timers: one setTimeout per session, unref'd, armed lazily: a deadline that
 *   moves later (every ACK restarts the RTO) does not touch the timer, which
 *   re-arms itself for the remainder when it fires early. An idle session has no
 *   armed timer; `tick` (about 1 Hz) does idle expiry and reaping.
 * - ACKs for in-order data are coalesced per batch (a microtask after the
 *   router's synchronous batch; it runs once the batch has returned, by the end of
 *   the loop turn's poll phase), together with a corked socket write, so a batch
 *   of segments becomes one writev and one ACK carrying the window after it. Data
 *   the VM's ACKs make room for goes in that microtask too: once for the batch,
 *   and outside the bridge's handling of the VM's frame (the bridge copies frames
 *   sent from inside it). In the other direction, the socket's reads are sent at
 *   the end of the poll phase that made them (setImmediate): several 64 KiB reads
 *   make full 64 KB frames instead of a frame and a runt each, and no Nagle-style
 *   hold-back delays a reply's last segment.
 * - Closing: the VM's FIN half-closes the host socket (sock.end(); the VM keeps
 *   receiving), the host's 'end' becomes our FIN after all queued data. A RST
 *   either way resets the other side (resetAndDestroy towards the host). Once
 *   both FINs are acknowledged the session lingers briefly (TIME_WAIT, absorbing
 *   a retransmitted FIN) until its socket has closed. Give-up after
 *   `maxRetransmits` timeouts of the same data, and idle expiry (established 2 h,
 *   half-closed or closing 60 s, handshakes 75 s), reset both sides.
 * - The budget (types.ts) is taken when a session is created and released
 *   exactly once when it leaves the table, whatever the path: a VM flooding SYNs
 *   gets RSTs once its share is used, and cannot exhaust the host's sockets.
 * - Untrusted input: every length is checked before use, SYN with FIN or RST is
 *   dropped, sequence numbers are compared mod 2^32 ((a - b) | 0), RSTs are
 *   accepted only at the exact expected sequence number (RFC 5961: a challenge
 *   ACK for one merely in the window). Nothing a VM sends can throw.
 * IPv6: the same engine. A session's addresses are the family-neutral numbers of
 * family.ts (an IPv6 address is a number >= 2^32 naming a slot of the NAT's
 * address table), so the table, keys and budget do not change; what differs is
 * only where the bytes go: the IP header (40 bytes, written from the table),
 * the pseudo-header sum, the MSS (20 less), GSO TCPV6, and the unreachable
 * error (ICMPv6 destination unreachable, quoting the IPv6 header and 8 bytes).
 * The frame blocks leave room for the longer header (tcp-queue.ts).
 * Not supported: urgent data (delivered inline), ECN (not negotiated),
 * TCP Fast Open (data on a SYN is ignored and retransmitted by the VM).
 *
 * Files, as passt splits tcp.c / tcp_buf.c / tcp_conn.h: tcp-queue.ts (frame
 * blocks, their pool, the send queue), tcp-conn.ts (the connection record and
 * its phases), this file (the engine: segments from the VM, the host sockets'
 * events, segments to the VM, timers, the session table). Headers are read and
 * written through the wire views of @vswitch/switch.
 *
 * Cost (tcp.bench.ts, loopback, 2-core dev VM under load): 2-3.5 us of engine
 * time per 1460-byte segment from the VM (checksum verified, copied, written);
 * 2.1-3.3 us per one-MSS frame to the VM including the socket read, and 30-58 us
 * per 64 KB GSO frame (with 'data' chunks, as before onread: 2.0-3.9 and 36-80
 * us). The checksums use tcp-sum.ts (32 bits a step). Through the real daemon
 * (an iperf3 download into a VM's TAP, 64 KB GSO frames), onread and the output
 * moved out of the bridge's receive took the daemon from about 118 to about 44
 * CPU ticks (10 ms) per GB, and from 8.1 to 16.4 Gbit/s (means of 9 runs).
 */
import type net from 'node:net';
import { connect as netConnect } from 'node:net';
import { randomFillSync } from 'node:crypto';
import * as wire from '@vswitch/switch';
import type { TcpSegment, TcpSynOptions } from '@vswitch/switch';
import { type HostBudget, type HostSession, type ToVm, HOST_HEADROOM } from './types.js';
import * as tcpSum from './tcp-sum.js';
import { BLOCK_HDR, BlockPool, SendQueue, TCP_IP_HLEN } from './tcp-queue.js';
import * as conn from './tcp-conn.js';
import { Conn } from './tcp-conn.js';
import { Addrs, IP6_BASE, ICMPV6, READ, readIp6, type IpPacket } from './family.js';
import { RCVBUF_AUTO, setRcvbuf } from './socket-rcvbuf.js';

export interface HostTcpTuning {
  /**
   * Bytes the host socket may hold unsent before our window to the VM closes.
   * Keep it well above the socket's writableHighWaterMark (16 KiB): the window
   * reopens on 'drain', which only comes after a write() returned false.
   */
  rcvLimit: number;
  /** Our window scale shift, announced when the VM offers window scaling. */
  wscale: number;
  /** Host data queued towards the VM before the socket is paused: the VM's window clamped to [min, max]. */
  sndCapMin: number;
  sndCapMax: number;
  rtoInitMs: number;
  rtoMinMs: number;
  rtoMaxMs: number;
  /** Timeouts of the same data before both sides are reset. */
  maxRetransmits: number;
  /** Timeouts of our SYN or SYN-ACK before giving up. */
  maxSynRetransmits: number;
  idleEstablishedMs: number;
  idleClosingMs: number;
  idleSynMs: number;
  /** TIME_WAIT linger once both FINs are acknowledged. */
  lingerMs: number;
  /** SO_RCVBUF of each host socket (socket-rcvbuf.ts): RCVBUF_AUTO the kernel's autotuning alone, or bytes. */
  rcvbuf: number;
}

export const HOST_TCP_TUNING: HostTcpTuning = {
  rcvLimit: 4 << 20,
  wscale: 7,
  sndCapMin: 256 << 10,
  sndCapMax: 4 << 20,
  rtoInitMs: 200,
  rtoMinMs: 200,
  rtoMaxMs: 60_000,
  maxRetransmits: 15,
  maxSynRetransmits: 6,
  idleEstablishedMs: 2 * 3600_000,
  idleClosingMs: 60_000,
  idleSynMs: 75_000,
  lingerMs: 2_000,
  rcvbuf: RCVBUF_AUTO,
};

export interface HostTcpOptions {
  /** Monotonic ms. */
  clock: () => number;
  toVm: ToVm;
  /** toVm takes GSO super-frames and checksum-partial packets with a vnet header. */
  gso: boolean;
  /** MSS we announce to and use towards the VM (network MTU - 40). */
  mss: number;
  budget: HostBudget;
  /**
   * Opens the host socket for a VM's connection (default net.connect). Pass
   * `onread` to the socket (net.connect({ ..., onread })): it then reads straight
   * into the engine's frame blocks, and the payload of an in-order frame is never
   * copied here. A socket without it works too (its 'data' chunks are copied). The
   * socket is made half-open capable (allowHalfOpen) by this module.
   */
  connect?: (dstIp: number, dstPort: number, onread: net.OnReadOpts) => net.Socket;
  /** Rare events only (connect errors other than refusals, retransmission give-ups). */
  onEvent?: (e: { event: string; [k: string]: unknown }) => void;
  /** Timers and limits; defaults HOST_TCP_TUNING (tests shorten them). */
  tuning?: Partial<HostTcpTuning>;
  /** The NAT's addresses (family.ts), shared with the other engines; default: the engine's own. */
  addrs?: Addrs;
}

export interface HostTcpCounters {
  /** Sessions created (both directions). */
  opened: number;
  /** Refused by the budget (a RST to the VM, or the forwarded client closed). */
  refused: number;
  /** Host connects that failed (RST or ICMP unreachable to the VM). */
  connectFailed: number;
  /** Sessions ended by a reset, either way (VM RST, host error, give-up, idle expiry). */
  resets: number;
  /** Segments sent again (timeouts and fast retransmits). */
  retransmits: number;
  fastRetransmits: number;
  /** Sessions given up after maxRetransmits timeouts. */
  timeouts: number;
  /** Sessions reset by idle expiry. */
  expired: number;
  badChecksum: number;
  /** Segments for no session (answered with a RST unless a RST). */
  noSession: number;
  /** Segments that do not parse, or carry impossible flags. */
  malformed: number;
  /** IPv6 segments from the VM that are fragments (no reassembly; the VM's TCP never fragments). */
  fragment: number;
  /** Out-of-order data segments from the VM (dropped, duplicate ACK). */
  outOfOrder: number;
  /** Segments trimmed at our window's right edge. */
  beyondWindow: number;
  /** Sessions now in the table (each holds one budget unit). */
  active: number;
  /** Port forward connections handed to accept(). */
  forwarded: number;
  /** Port forward connections the VM refused (RST) or never answered. */
  forwardFailed: number;
  segmentsFromVm: number;
  framesToVm: number;
  bytesToHost: number;
  /** Payload bytes acknowledged by the VMs. */
  bytesToVm: number;
  windowProbes: number;
  rstSent: number;
  icmpSent: number;
  /** Host sockets paused because the VM did not take their data. */
  pauses: number;
  /** SO_RCVBUF refused on a host socket (tuning.rcvbuf; it keeps the kernel's autotuning). */
  rcvbufFailed: number;
  /**
   * Data frames whose payload was copied into the engine's frame buffer: those
   * from sockets without onread (port forwards), and the rare one that spans two
   * blocks. The others go from the block the host socket read into.
   */
  framesCopied: number;
  /** Frame blocks allocated (reused from a pool after that; steady traffic allocates none). */
  blocks: number;
}

// Everything the per-segment code uses from other modules, as module constants:
// V8 checks an imported binding at every use (about 1 ns; @vswitch/switch's
// wire/bytes.ts says more), and in the header save/restore loop of #seg, which
// reads its bound at every byte, BLOCK_HDR as an import made a one-MSS frame sent
// from inside a block 1.8 us slower (tcp.bench, onread without GSO: 3.0 -> 4.9 us).
const {
  fold, ip4HeaderLen, pseudoSum, readTcpSegment, tcpSynOptions, write16, writeIcmpError, writeIp4, writeTcpHeader,
  writeTcpSynOptions, writeVnet,
} = wire;
const { onesSum } = tcpSum;
const { FIN, SYN, RST, PSH, ACK } = wire.TCP_FLAG;
const {
  CONNECTING, SYN_SENT, SYN_RCVD, OPEN, TIME_WAIT, DEAD, T_NONE, T_RTO, T_PERSIST, DEFAULT_VM_MSS, seqGt,
} = conn;
/** Bytes before a block's payload: the virtio_net_hdr, Ethernet, IPv4 and TCP headers of its frame. */
const HDR_ROOM = BLOCK_HDR;
/** IPv4 and TCP headers without options. */
const HDRS = TCP_IP_HLEN;
const IPH = wire.IP4_MIN_HLEN;
const TCPH = wire.TCP_MIN_HLEN;
const P_TCP = wire.IPPROTO.TCP;
const DF = wire.IP4_DF;
const CSUM_AT = wire.TCP.CSUM;
const NEEDS_CSUM = wire.VNET_F_NEEDS_CSUM;
const GSO_TCPV4 = wire.VNET_GSO.TCPV4;
const GSO_TCPV6 = wire.VNET_GSO.TCPV6;
/** IPv6: the header is this much longer than IPv4's (the frame starts this much earlier; MSS this much smaller). */
const V6_EXTRA = wire.IP6_HLEN - wire.IP4_MIN_HLEN;
const GSO_NONE = wire.VNET_GSO.NONE;
/** csum_start of our frames: the TCP header, from the Ethernet header. */
const CSUM_START = wire.ETH_HLEN + wire.IP4_MIN_HLEN;

const HEADROOM = HOST_HEADROOM;
/** Where the IPv4 header of a frame built in #out starts. */
const IP_OFF = HEADROOM;
/** GSO frames carry at most this many segments (segmenters size their scratch for it). */
const GSO_MAX_SEGS = 64;
/** A VM's MSS below this is raised to it (a tiny MSS only multiplies our work). */
const MSS_FLOOR = 64;
/** RFC 792: an ICMP error quotes the IPv4 header and the first 8 bytes of its payload. */
const QUOTE_DATA = 8;
const ICMP6_DEST_UNREACH = wire.ICMP6_TYPE.DEST_UNREACH;

/** What ending a session does to its host socket: nothing, destroy it, or reset it (RST to the peer). */
const SOCK = { NONE: 0, DESTROY: 1, RESET: 2 } as const;

/** RST to the socket's peer where it is TCP (resetAndDestroy throws for other handles). */
function resetSocket(s: net.Socket): void {
  if (s.destroyed) return;
  try {
    s.resetAndDestroy();
  } catch {
    s.destroy();
  }
}

export class HostTcp {
  readonly counters: HostTcpCounters = {
    opened: 0, refused: 0, connectFailed: 0, resets: 0, retransmits: 0, fastRetransmits: 0, timeouts: 0, expired: 0,
    badChecksum: 0, noSession: 0, malformed: 0, fragment: 0, outOfOrder: 0, beyondWindow: 0, active: 0, forwarded: 0, forwardFailed: 0,
    segmentsFromVm: 0, framesToVm: 0, bytesToHost: 0, bytesToVm: 0, windowProbes: 0, rstSent: 0, icmpSent: 0, pauses: 0,
    rcvbufFailed: 0, framesCopied: 0, blocks: 0,
  };
  readonly tuning: HostTcpTuning;

  readonly #clock: () => number;
  readonly #toVm: ToVm;
  readonly #gso: boolean;
  readonly #mss: number;
  readonly #budget: HostBudget;
  readonly #connect: (dstIp: number, dstPort: number, onread: net.OnReadOpts) => net.Socket;
  readonly #onEvent: ((e: { event: string; [k: string]: unknown }) => void) | undefined;
  /** vmIp*65536+vmPort -> (remoteIp*65536+remotePort -> session). */
  readonly #table = new Map<number, Map<number, Conn>>();
  #lastK1 = -1;
  #lastK2 = -1;
  #last: Conn | undefined = undefined;
  readonly #out = Buffer.alloc(HOST_HEADROOM + wire.IP4_MAX_LEN + V6_EXTRA);
  readonly #addrs: Addrs;
  readonly #ownAddrs: boolean;
  /** The IPv6 packet being parsed (readIp6). */
  readonly #ip6: IpPacket = { src: 0, dst: 0, proto: 0, l4: 0, l4len: 0 };
  /** The segment being processed is IPv6. */
  #v6 = false;
  /** The bytes a frame's headers cover when it is sent from inside a block (restored after toVm). */
  readonly #save = Buffer.alloc(HDR_ROOM);
  readonly #pool = new BlockPool(this.counters);
  #ipId = 0;
  readonly #isn = new Uint32Array(64);
  #isnNext = 64;
  #flushList: Conn[] = [];
  #flushSpare: Conn[] = [];
  #flushScheduled = false;
  #outputList: Conn[] = [];
  #outputSpare: Conn[] = [];
  #outputScheduled = false;
  #closed = false;

  // The segment being processed (fromVm), parsed once.
  #src = 0;
  #dst = 0;
  #sport = 0;
  #dport = 0;
  #seq = 0;
  #ack = 0;
  #flags = 0;
  #win = 0;
  #poff = 0;
  #plen = 0;
  /** The segment being parsed, and the options of the last SYN parsed. */
  readonly #segment: TcpSegment = { src: 0, dst: 0, sport: 0, dport: 0, seq: 0, ack: 0, flags: 0, win: 0, off: 0, len: 0, hlen: 0 };
  readonly #opt: TcpSynOptions = { mss: 0, wscale: -1 };

  constructor(opts: HostTcpOptions) {
    this.#clock = opts.clock;
    this.#toVm = opts.toVm;
    this.#gso = opts.gso;
    this.#mss = Math.max(MSS_FLOOR, Math.min(opts.mss || 1460, wire.IP4_MAX_LEN - TCP_IP_HLEN));
    this.#budget = opts.budget;
    this.#ownAddrs = opts.addrs === undefined;
    const addrs = opts.addrs ?? new Addrs(4096);
    this.#addrs = addrs;
    this.#connect = opts.connect
      ?? ((ip, port, onread) => netConnect({ host: addrs.format(ip), port, noDelay: true, allowHalfOpen: true, onread }));
    this.#onEvent = opts.onEvent;
    this.tuning = { ...HOST_TCP_TUNING, ...opts.tuning };
  }

  // ---- VM -> us ----

  fromVm(buf: Uint8Array, ipOff: number, ipLen: number, csumPartial: boolean): void {
    const ctr = this.counters;
    ctr.segmentsFromVm++;
    if (this.#closed || !this.#parse(buf, ipOff, ipLen, csumPartial)) return;
    const flags = this.#flags;
    const k1 = this.#src * 65536 + this.#sport;
    const k2 = this.#dst * 65536 + this.#dport;
    let c: Conn | undefined;
    if (k1 === this.#lastK1 && k2 === this.#lastK2) c = this.#last;
    else {
      c = this.#table.get(k1)?.get(k2);
      if (c !== undefined) {
        this.#lastK1 = k1;
        this.#lastK2 = k2;
        this.#last = c;
      }
    }
    if (c === undefined) {
      if (flags & RST) return; // never answer a RST
      if ((flags & (SYN | ACK)) === SYN) {
        this.#open(buf, ipOff, k1, k2);
        return;
      }
      ctr.noSession++;
      this.#rstReply();
      return;
    }
    c.lastSeen = this.#clock();
    switch (c.phase) {
      case CONNECTING: this.#inConnecting(c, buf, ipOff); break;
      case SYN_SENT: this.#inSynSent(c); break;
      case SYN_RCVD: this.#inSynRcvd(c, buf, ipOff, k1, k2); break;
      case OPEN: this.#inOpen(c, buf); break;
      case TIME_WAIT: this.#inTimeWait(c, buf, ipOff, k1, k2); break;
      default: break;
    }
  }

  /** Validates and reads the segment into the #fields; false (counted) to drop it. */
  #parse(buf: Uint8Array, ipOff: number, ipLen: number, csumPartial: boolean): boolean {
    const ctr = this.counters;
    if (!(ipOff >= 0) || !(ipLen >= HDRS) || ipOff + ipLen > buf.length) {
      ctr.malformed++;
      return false;
    }
    // The IPv4 header checksum is not verified again: the router did (network.ts).
    const seg = this.#segment;
    const v6 = buf[ipOff] >>> 4 === 6;
    this.#v6 = v6;
    if (v6 ? !this.#readTcp6(buf, ipOff, ipLen, seg) : !readTcpSegment(buf, ipOff, ipLen, seg)) {
      if (!v6) ctr.malformed++;
      return false;
    }
    const th = seg.off;
    const tl = seg.len;
    const pseudo = v6 ? wire.ip6PseudoSum(buf, ipOff, tl, P_TCP) : pseudoSum(seg.src, seg.dst, P_TCP, tl);
    if (!csumPartial && onesSum(buf, th, tl, pseudo) !== 0xffff) {
      ctr.badChecksum++;
      return false;
    }
    const flags = seg.flags;
    if (((flags & SYN) !== 0 && (flags & (FIN | RST)) !== 0) || seg.sport === 0 || seg.dport === 0) {
      ctr.malformed++;
      return false;
    }
    this.#src = seg.src;
    this.#dst = seg.dst;
    this.#sport = seg.sport;
    this.#dport = seg.dport;
    this.#seq = seg.seq;
    this.#ack = seg.ack;
    this.#flags = flags;
    this.#win = seg.win;
    this.#poff = th + seg.hlen;
    this.#plen = tl - seg.hlen;
    // MSS and window scale; anything else (SACK-permitted, timestamps) is ignored.
    if (flags & SYN) tcpSynOptions(buf, th, seg.hlen, this.#opt);
    return true;
  }

  /** readTcpSegment for IPv6 (addresses interned, family.ts); false counted here. */
  #readTcp6(buf: Uint8Array, ipOff: number, ipLen: number, seg: TcpSegment): boolean {
    const p = this.#ip6;
    const r = readIp6(this.#addrs, buf, ipOff, ipLen, p);
    if (r !== READ.OK || p.proto !== P_TCP || !wire.checkTcp(buf, p.l4, p.l4len)) {
      if (r === READ.FRAGMENT) this.counters.fragment++;
      else this.counters.malformed++;
      return false;
    }
    const th = p.l4;
    seg.src = p.src;
    seg.dst = p.dst;
    seg.sport = wire.tcpSport(buf, th);
    seg.dport = wire.tcpDport(buf, th);
    seg.seq = wire.tcpSeq(buf, th);
    seg.ack = wire.tcpAck(buf, th);
    seg.flags = wire.tcpFlags(buf, th);
    seg.win = wire.tcpWindow(buf, th);
    seg.off = th;
    seg.len = p.l4len;
    seg.hlen = wire.tcpHeaderLen(buf, th);
    return true;
  }

  /** A SYN for no session: take the budget, connect the host socket, answer when it is connected. */
  #open(buf: Uint8Array, ipOff: number, k1: number, k2: number): void {
    const ctr = this.counters;
    const vmIp = this.#src;
    const port = this.#budget.take(vmIp);
    if (port === null) {
      ctr.refused++;
      this.#rstReply();
      return;
    }
    const dst = this.#dst;
    const dport = this.#dport;
    // The socket reads into q's blocks; its first buffer is asked for inside connect.
    const q = new SendQueue(this.#pool, this.#vmMss());
    let conn: Conn | undefined;
    const onread: net.OnReadOpts = {
      buffer: () => q.target(),
      callback: (n: number): boolean => {
        if (conn !== undefined) return this.#onRead(conn, n);
        q.commit(n); // cannot happen: no read before connect returns
        return true;
      },
    };
    let sock: net.Socket;
    try {
      sock = this.#connect(dst, dport, onread);
    } catch {
      q.clear();
      this.#budget.release(vmIp, port);
      ctr.connectFailed++;
      this.#rstReply();
      return;
    }
    const now = this.#clock();
    const c = new Conn(true, vmIp, this.#sport, dst, dport, k1, k2, sock, q, this.#newIsn(), now, this.tuning.rtoInitMs);
    c.bridgePort = port;
    conn = c;
    this.#synOptions(c);
    c.quote = this.#quote(buf, ipOff);
    this.#insert(c);
    this.#attach(c);
    // Already connected (a socket handed over by a custom `connect`): no 'connect' will come.
    if (!sock.pending && !sock.destroyed) queueMicrotask(() => this.#onConnect(c));
    else sock.once('connect', () => this.#onConnect(c));
  }

  /** Records the VM's SYN (initial sequence, window, options). */
  #synOptions(c: Conn): void {
    c.irs = this.#seq;
    c.rcvNxt = (this.#seq + 1) >>> 0;
    c.rcvEdge = c.rcvNxt;
    c.vmWs = this.#opt.wscale;
    c.mss = this.#vmMss();
    c.q.mss = c.mss;
    c.sndWnd = this.#win; // never scaled in a SYN
  }

  /** The MSS towards the VM for the SYN in #fields: the smaller of its and ours. */
  #vmMss(): number {
    const vmMss = this.#opt.mss > 0 ? this.#opt.mss : DEFAULT_VM_MSS;
    return Math.max(MSS_FLOOR, Math.min(this.#mss - (this.#v6 ? V6_EXTRA : 0), vmMss));
  }

  #quote(buf: Uint8Array, ipOff: number): Buffer {
    const n = (this.#v6 ? wire.IP6_HLEN : ip4HeaderLen(buf, ipOff)) + QUOTE_DATA;
    const q = Buffer.allocUnsafe(n);
    q.set(buf.subarray(ipOff, ipOff + n));
    return q;
  }

  #inConnecting(c: Conn, buf: Uint8Array, ipOff: number): void {
    const f = this.#flags;
    if (f & RST) {
      // The VM gave up on its connect.
      if (this.#seq === c.rcvNxt) this.#abort(c, false, SOCK.DESTROY);
      return;
    }
    if ((f & (SYN | ACK)) === SYN) {
      // A retransmission is absorbed; a new ISN (the VM restarted its connect) replaces the old one.
      if (this.#seq !== c.irs) {
        this.#synOptions(c);
        c.quote = this.#quote(buf, ipOff);
      }
    }
  }

  /** Port forward: our SYN is out; the VM answers SYN-ACK or RST. */
  #inSynSent(c: Conn): void {
    const f = this.#flags;
    const ack = this.#ack;
    if (f & ACK) {
      if (ack !== c.sndNxt) {
        if (!(f & RST)) this.#ctl(this.#dst, this.#dport, this.#src, this.#sport, ack, 0, RST);
        return;
      }
      if (f & RST) {
        this.counters.forwardFailed++;
        this.#abort(c, false, SOCK.RESET);
        return;
      }
      if ((f & SYN) === 0) return;
      this.#synOptions(c);
      c.sndUna = c.sndNxt;
      c.sndWl1 = this.#seq;
      c.sndWl2 = ack;
      this.#established(c);
      this.#sendAck(c);
      c.sock.resume();
      this.#outputSoon(c);
    }
    // A bare SYN (simultaneous open) or anything else: dropped; our SYN is retransmitted.
  }

  #inSynRcvd(c: Conn, buf: Uint8Array, ipOff: number, k1: number, k2: number): void {
    const f = this.#flags;
    if (f & RST) {
      if (this.#seq === c.rcvNxt) this.#abort(c, false, SOCK.RESET);
      return;
    }
    if (f & SYN) {
      if ((f & ACK) === 0 && this.#seq === c.irs) this.#sendSyn(c); // our SYN-ACK was lost
      else if ((f & ACK) === 0) {
        // A new ISN: the VM started over. Start over with it.
        this.#abort(c, false, SOCK.RESET);
        this.#open(buf, ipOff, k1, k2);
      } else this.#sendAck(c);
      return;
    }
    if ((f & ACK) === 0) return;
    if (this.#ack !== c.sndNxt) {
      this.#ctl(this.#dst, this.#dport, this.#src, this.#sport, this.#ack, 0, RST);
      return;
    }
    c.sndUna = c.sndNxt;
    this.#established(c);
    c.sndWnd = this.#win << c.sndWs;
    c.sndWl1 = this.#seq;
    c.sndWl2 = this.#ack;
    this.#inOpen(c, buf);
    if (c.phase === OPEN) this.#outputSoon(c);
  }

  #established(c: Conn): void {
    c.phase = OPEN;
    c.quote = undefined;
    c.retx = 0;
    this.#disarm(c);
    if (c.vmWs >= 0) {
      c.sndWs = c.vmWs;
      c.rcvWs = this.tuning.wscale;
    } else {
      c.sndWs = 0;
      c.rcvWs = 0;
    }
    c.rcvMax = Math.min(this.tuning.rcvLimit, 65535 * 2 ** c.rcvWs);
    c.cwnd = Math.max(10 * c.mss, 65536);
    const segs = Math.min(GSO_MAX_SEGS, Math.floor((wire.IP4_MAX_LEN - TCP_IP_HLEN) / c.mss));
    c.gsoMax = Math.max(1, segs) * c.mss;
  }

  #inOpen(c: Conn, buf: Uint8Array): void {
    const f = this.#flags;
    const seq = this.#seq;
    if (f & RST) {
      // RFC 5961 3.2: exactly rcv_nxt resets; elsewhere in the window, a challenge ACK.
      if (seq === c.rcvNxt) {
        this.#abort(c, false, SOCK.RESET);
      } else if (seqGt(seq, c.rcvNxt) && !seqGt(seq, c.rcvEdge)) {
        this.#sendAck(c);
      }
      return;
    }
    if (f & SYN) {
      this.#sendAck(c); // RFC 5961 4.2: challenge ACK
      return;
    }
    if ((f & ACK) === 0) return;
    let off = this.#poff;
    let len = this.#plen;
    let fin = f & FIN;
    const d = (c.rcvNxt - seq) | 0;
    if (d > 0) {
      if (d >= len + fin) {
        // Old: a duplicate, a retransmitted FIN, a keepalive or zero-window probe. Tell
        // where we are. A retransmission's ACK field is news (a retransmitted FIN may
        // be the only segment acknowledging ours); a bare probe's is not.
        if (len + fin > 0) this.#onAck(c, seq);
        if (c.phase === OPEN || c.phase === TIME_WAIT) this.#sendAck(c);
        return;
      }
      off += d;
      len -= d;
    } else if (d < 0) {
      // Future data: something before it was lost. Use its ACK, drop the data.
      if (!this.#onAck(c, seq)) return;
      if (len + fin > 0) {
        this.counters.outOfOrder++;
        this.#sendAck(c);
      }
      return;
    }
    const room = (c.rcvEdge - c.rcvNxt) | 0;
    let trimmed = false;
    if (len > room) {
      len = room > 0 ? room : 0;
      fin = 0;
      trimmed = true;
      this.counters.beyondWindow++;
    }
    if (!this.#onAck(c, seq)) return;
    if (c.phase !== OPEN) return;
    if (len > 0) {
      if (c.vmFin) {
        // Data after the VM's FIN: impossible from a sane peer.
        this.counters.malformed++;
        return;
      }
      this.#deliver(c, buf, off, len);
    }
    if (fin) {
      c.rcvNxt = (c.rcvNxt + 1) >>> 0;
      c.vmFin = true;
      if (c.corked) c.corked = false; // end() uncorks
      if (!c.sock.destroyed) c.sock.end();
      this.#sendAck(c);
      if (c.finAcked) this.#timeWait(c);
      return;
    }
    if (trimmed) this.#sendAck(c);
  }

  #inTimeWait(c: Conn, buf: Uint8Array, ipOff: number, k1: number, k2: number): void {
    const f = this.#flags;
    if (f & RST) return;
    if ((f & (SYN | ACK)) === SYN) {
      // A new connection on the same four numbers: the old one is over.
      this.#finish(c, SOCK.DESTROY);
      this.#open(buf, ipOff, k1, k2);
      return;
    }
    if (this.#plen > 0 || (f & FIN)) this.#sendAck(c);
  }

  /**
   * The ACK field and window of a segment in OPEN. False when the segment must
   * be dropped (it acknowledges what we never sent) or the session ended.
   */
  #onAck(c: Conn, seq: number): boolean {
    const ack = this.#ack;
    const acked = (ack - c.sndUna) | 0;
    const outstanding = (c.sndMax - c.sndUna) | 0;
    if (acked > outstanding) {
      this.#sendAck(c);
      return false;
    }
    if (acked < 0) return true; // an old ACK: the data in it may still be good
    const wnd = this.#win << c.sndWs;
    let wndChanged = false;
    if (seqGt(seq, c.sndWl1) || (seq === c.sndWl1 && ((ack - c.sndWl2) | 0) >= 0)) {
      wndChanged = wnd !== c.sndWnd;
      c.sndWnd = wnd;
      c.sndWl1 = seq;
      c.sndWl2 = ack;
    }
    if (acked > 0) {
      this.#newAck(c, ack, acked);
      if (c.phase !== OPEN) return false;
    }
    if (c.sndWnd === 0 && c.sndNxt !== c.sndUna) {
      // A shut window with our data beyond it: the VM dropped that data (it shrank
      // its window, or it was lost). It goes again once the window opens; probe
      // meanwhile. snd_max stays: an ACK for data the VM did keep remains valid.
      c.sndNxt = c.sndUna;
      c.rttOn = false;
      c.inRecovery = false;
      c.dupAcks = 0;
      this.#disarm(c);
      this.#updateTimer(c, this.#clock());
      return true;
    }
    if (acked === 0 && c.sndNxt !== c.sndUna && !wndChanged && this.#plen === 0 && (this.#flags & FIN) === 0) {
      // A duplicate ACK (RFC 5681 definition).
      if (++c.dupAcks === 3 && !c.inRecovery) {
        const flight = (c.sndMax - c.sndUna) | 0;
        c.ssthresh = Math.max(flight >>> 1, 2 * c.mss);
        c.cwnd = c.ssthresh;
        c.inRecovery = true;
        c.recover = c.sndMax;
        this.counters.fastRetransmits++;
        this.#retransmitHead(c);
      }
      return true;
    }
    if (wndChanged || acked > 0) this.#outputSoon(c);
    return true;
  }

  /** `acked` (> 0) new bytes acknowledged. */
  #newAck(c: Conn, ack: number, acked: number): void {
    const now = this.#clock();
    let data = acked;
    if (data > c.q.bytes) {
      // Our FIN is acknowledged too.
      data = c.q.bytes;
      c.finAcked = true;
    }
    if (data > 0) {
      c.q.consume(data);
      c.rxBytes += data;
      this.counters.bytesToVm += data;
    }
    c.sndUna = ack;
    if (seqGt(ack, c.sndNxt)) c.sndNxt = ack;
    c.retx = 0;
    c.dupAcks = 0;
    if (c.rttOn && ((ack - c.rttSeq) | 0) >= 0) {
      c.rttOn = false;
      this.#rttSample(c, now - c.rttAt);
    }
    // Congestion window: slow start by bytes acked (RFC 3465 without the limit:
    // this link's only congestion is a TAP backlog), then Reno's additive increase.
    if (c.inRecovery) {
      if (((ack - c.recover) | 0) >= 0) {
        c.inRecovery = false;
        c.cwnd = c.ssthresh;
      } else {
        this.#retransmitHead(c); // NewReno partial ACK: the next hole
      }
    } else if (c.cwnd < c.ssthresh) {
      c.cwnd += acked;
    } else {
      c.cwnd += Math.max(1, Math.floor((c.mss * acked) / c.cwnd));
    }
    if (c.cwnd > 64 << 20) c.cwnd = 64 << 20;
    // RFC 6298 5.3: restart the timer for what is still outstanding.
    this.#disarm(c);
    if (c.paused && c.q.bytes <= this.#sndCap(c) >>> 1) {
      c.paused = false;
      if (!c.sock.destroyed) c.sock.resume();
    }
    if (c.finAcked) {
      if (c.vmFin) this.#timeWait(c);
      return;
    }
    this.#updateTimer(c, now);
  }

  #rttSample(c: Conn, r: number): void {
    if (r < 0) r = 0;
    if (c.srtt < 0) {
      c.srtt = r;
      c.rttvar = r / 2;
    } else {
      c.rttvar = 0.75 * c.rttvar + 0.25 * Math.abs(c.srtt - r);
      c.srtt = 0.875 * c.srtt + 0.125 * r;
    }
    const t = this.tuning;
    c.rto = Math.min(t.rtoMaxMs, Math.max(t.rtoMinMs, c.srtt + Math.max(1, 4 * c.rttvar)));
  }

  /** In-order data to the host socket (copied: the VM's buffer is reused); the ACK follows at the end of the batch. */
  #deliver(c: Conn, buf: Uint8Array, off: number, len: number): void {
    const sock = c.sock;
    c.rcvNxt = (c.rcvNxt + len) >>> 0;
    c.txBytes += len;
    this.counters.bytesToHost += len;
    if (sock.destroyed || sock.writableEnded) return;
    const b = Buffer.allocUnsafe(len);
    b.set(buf.subarray(off, off + len));
    if (!c.corked) {
      sock.cork();
      c.corked = true;
    }
    c.ackPending = true;
    this.#queueFlush(c);
    sock.write(b);
  }

  #queueFlush(c: Conn): void {
    if (c.flushQueued) return;
    c.flushQueued = true;
    this.#flushList.push(c);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      queueMicrotask(this.#flush);
    }
  }

  /**
   * Data the VM's ACKs made room for goes at the end of the batch: once for all
   * the batch's ACKs, and outside the router's handling of the VM's frame (a
   * frame sent from inside it is copied by the bridge, which defers re-entrant
   * frames). Its data frames carry the ACK the batch's data needs.
   */
  #outputSoon(c: Conn): void {
    c.sendQueued = true;
    this.#queueFlush(c);
  }

  /** End of a batch: data due, one writev per socket, one ACK per session with the window after it. */
  readonly #flush = (): void => {
    this.#flushScheduled = false;
    const list = this.#flushList;
    this.#flushList = this.#flushSpare;
    for (let i = 0; i < list.length; i++) {
      const c = list[i];
      c.flushQueued = false;
      if (c.phase === DEAD) continue;
      if (c.sendQueued) {
        c.sendQueued = false;
        this.#output(c);
      }
      if (c.corked) {
        c.corked = false;
        if (!c.sock.destroyed) c.sock.uncork();
      }
      if (c.ackPending && c.phase === OPEN) this.#sendAck(c);
    }
    list.length = 0;
    this.#flushSpare = list;
  };

  // ---- Host socket events ----

  #attach(c: Conn): void {
    const sock = c.sock;
    sock.allowHalfOpen = true;
    sock.on('data', (chunk: Buffer) => this.#onData(c, chunk));
    sock.on('end', () => this.#onEnd(c));
    sock.on('drain', () => this.#onDrain(c));
    sock.on('error', (e: NodeJS.ErrnoException) => this.#onError(c, e));
    sock.on('close', (hadError: boolean) => this.#onClose(c, hadError));
  }

  #onConnect(c: Conn): void {
    if (c.phase !== CONNECTING) return;
    this.#setRcvbuf(c);
    c.outside = `${c.sock.localAddress ?? ''}:${c.sock.localPort ?? ''}`;
    c.phase = SYN_RCVD;
    c.sndNxt = (c.iss + 1) >>> 0;
    c.sndMax = c.sndNxt;
    this.#sendSyn(c);
    this.#arm(c, T_RTO, this.#clock() + c.rto);
  }

  /** tuning.rcvbuf on c's connected socket (socket-rcvbuf.ts). */
  #setRcvbuf(c: Conn): void {
    const b = this.tuning.rcvbuf;
    if (b !== RCVBUF_AUTO && setRcvbuf(c.sock, b) < 0) this.counters.rcvbufFailed++;
  }

  /** A read into c's blocks (onread); false pauses the socket. */
  #onRead(c: Conn, n: number): boolean {
    c.q.commit(n);
    if (c.phase === DEAD || c.phase === TIME_WAIT) return true;
    return this.#hostData(c);
  }

  /** A chunk from a socket without onread (port forwards): queued as it is. */
  #onData(c: Conn, chunk: Buffer): void {
    if (c.phase === DEAD || c.phase === TIME_WAIT) return;
    c.q.append(chunk);
    if (!this.#hostData(c)) c.sock.pause();
  }

  /** New data in c's queue; false when the socket must pause (the queue is over its cap). */
  #hostData(c: Conn): boolean {
    c.lastSeen = this.#clock();
    // Sent at the end of this poll phase: the reads made together make full frames.
    if (!c.outputQueued) {
      c.outputQueued = true;
      this.#outputList.push(c);
      if (!this.#outputScheduled) {
        this.#outputScheduled = true;
        setImmediate(this.#flushOutput);
      }
    }
    if (c.q.bytes <= this.#sndCap(c)) return true;
    if (!c.paused) {
      c.paused = true;
      this.counters.pauses++;
    }
    return false;
  }

  readonly #flushOutput = (): void => {
    this.#outputScheduled = false;
    const list = this.#outputList;
    this.#outputList = this.#outputSpare;
    for (let i = 0; i < list.length; i++) {
      const c = list[i];
      c.outputQueued = false;
      this.#output(c);
    }
    list.length = 0;
    this.#outputSpare = list;
  };

  #onEnd(c: Conn): void {
    if (c.phase === DEAD || c.hostEof) return;
    c.hostEof = true;
    if (!c.vmFin) c.closedFirst = true;
    this.#output(c);
  }

  #onDrain(c: Conn): void {
    if (c.phase !== OPEN || c.vmFin) return;
    // Space reopened: announce it unless the VM already has at least half of it.
    if (((c.rcvEdge - c.rcvNxt) | 0) < c.rcvMax >>> 1) this.#sendAck(c);
  }

  #onError(c: Conn, e: NodeJS.ErrnoException): void {
    if (c.phase === DEAD) return;
    if (c.phase === CONNECTING) {
      this.#connectFailed(c, e.code ?? '');
      return;
    }
    if (c.phase === TIME_WAIT) {
      this.#finish(c, SOCK.DESTROY);
      return;
    }
    if (c.phase === SYN_SENT) this.counters.forwardFailed++;
    this.#abort(c, true, SOCK.DESTROY);
  }

  #onClose(c: Conn, hadError: boolean): void {
    c.sockClosed = true;
    if (c.phase === DEAD || c.phase === TIME_WAIT || hadError) return;
    if (c.phase === CONNECTING) {
      this.#connectFailed(c, 'ECONNABORTED');
      return;
    }
    // Closed under us before both directions finished: the VM must not wait for it.
    if (!(c.hostEof && c.vmFin)) {
      if (c.phase === SYN_SENT) this.counters.forwardFailed++;
      this.#abort(c, true, SOCK.NONE);
    }
  }

  /** ECONNREFUSED: a RST, as the remote's own would be; anything else: ICMP unreachable. */
  #connectFailed(c: Conn, code: string): void {
    const ctr = this.counters;
    ctr.connectFailed++;
    if (code === 'ECONNREFUSED') {
      this.#ctl(c.ip, c.port, c.vmIp, c.vmPort, 0, c.rcvNxt, RST | ACK);
    } else {
      if (c.quote !== undefined) this.#icmpUnreach(c.vmIp, c.ip, code === 'ENETUNREACH' ? 0 : 1, c.quote);
      this.#onEvent?.({
        event: 'tcp_connect_failed', inside: this.#addrs.endpoint(c.vmIp, c.vmPort), remote: this.#addrs.endpoint(c.ip, c.port), error: code,
      });
    }
    this.#finish(c, SOCK.DESTROY);
  }

  /** The most host data we queue for this session before pausing the socket. */
  #sndCap(c: Conn): number {
    const t = this.tuning;
    const w = c.sndWnd;
    return w < t.sndCapMin ? t.sndCapMin : w > t.sndCapMax ? t.sndCapMax : w;
  }

  // ---- Sending to the VM ----

  /** Sends what the VM's window and the congestion window allow; FIN after the last byte. */
  #output(c: Conn): void {
    if (c.phase !== OPEN) return;
    let now = -1;
    for (;;) {
      const flight = (c.sndNxt - c.sndUna) | 0;
      const qb = c.q.bytes;
      if (flight > qb) break; // our FIN is out
      const avail = qb - flight;
      const usable = (c.sndWnd < c.cwnd ? c.sndWnd : c.cwnd) - flight;
      if (avail === 0) {
        // The FIN takes one byte of window, as in Linux (which drops a FIN at a zero window).
        if (c.hostEof && !c.finAcked && usable >= 1) {
          const seq = c.sndNxt;
          c.sndNxt = (seq + 1) >>> 0;
          if (seqGt(c.sndNxt, c.sndMax)) c.sndMax = c.sndNxt;
          this.#seg(c, FIN | ACK, seq, 0, 0);
        }
        break;
      }
      if (usable <= 0) break;
      let len = avail < usable ? avail : usable;
      const max = this.#gso ? c.gsoMax : c.mss;
      if (len > max) len = max;
      // A frame goes from the block its data is in: one that would run into the next
      // block ends with this one, or, if less than an MSS is left in it, is a copy of
      // one MSS across the two (rare: blocks end at MSS multiples). Frames from
      // 'data' chunks are copies anyway, across chunks as they come.
      const contig = c.q.seek(flight);
      if (contig < len && c.q.curBlock.pooled) len = contig >= c.mss ? contig : Math.min(len, c.mss);
      // Sender-side silly window avoidance: a runt only when nothing is in flight to bring a bigger window.
      if (len < c.mss && len < avail && flight > 0) break;
      let flags = ACK;
      if (len === avail) {
        flags |= PSH;
        if (c.hostEof && len <= c.mss && len < usable) flags |= FIN;
      }
      const seq = c.sndNxt;
      if (seq === c.sndMax && !c.rttOn) {
        if (now < 0) now = this.#clock();
        c.rttOn = true;
        c.rttSeq = (seq + len) >>> 0;
        c.rttAt = now;
      }
      c.sndNxt = (seq + len + (flags & FIN)) >>> 0;
      if (seqGt(c.sndNxt, c.sndMax)) c.sndMax = c.sndNxt;
      this.#seg(c, flags, seq, flight, len);
      if (flags & FIN) break;
    }
    this.#updateTimer(c, now < 0 ? this.#clock() : now);
  }

  /** RTO while anything is in flight, the persist timer while a zero window holds data back. */
  #updateTimer(c: Conn, now: number): void {
    if (c.phase !== OPEN) return;
    if (c.sndNxt !== c.sndUna) {
      if (c.kind !== T_RTO) this.#arm(c, T_RTO, now + c.rto);
    } else if (c.q.bytes > 0 || (c.hostEof && !c.finAcked)) {
      if (c.kind !== T_PERSIST) {
        c.persistMs = c.rto;
        this.#arm(c, T_PERSIST, now + c.persistMs);
      }
    } else if (c.kind !== T_NONE) {
      this.#disarm(c);
    }
  }

  /** One segment again from snd_una (fast retransmit, NewReno partial ACK). */
  #retransmitHead(c: Conn): void {
    const qb = c.q.bytes;
    const len = qb < c.mss ? qb : c.mss;
    let flags = ACK;
    if (len === qb) {
      flags |= PSH;
      if (c.hostEof && (c.sndMax - c.sndUna) >>> 0 === qb + 1) flags |= FIN;
    }
    if (len === 0 && (flags & FIN) === 0) return;
    c.rttOn = false;
    this.counters.retransmits++;
    this.#seg(c, flags, c.sndUna, 0, len);
  }

  #sendAck(c: Conn): void {
    this.#seg(c, ACK, c.sndNxt, 0, 0);
  }

  /** SYN (port forward) or SYN-ACK, with our MSS and, when it applies, window scale. */
  #sendSyn(c: Conn): void {
    this.#seg(c, c.out ? SYN | ACK : SYN, c.iss, 0, 0);
  }

  #sendRst(c: Conn): void {
    if (c.phase === SYN_SENT) this.#ctl(c.ip, c.port, c.vmIp, c.vmPort, c.sndNxt, 0, RST);
    else this.#ctl(c.ip, c.port, c.vmIp, c.vmPort, c.sndNxt, c.rcvNxt, RST | ACK);
  }

  /** Our receive window field for c (scaled), never moving the right edge left. */
  #window(c: Conn): number {
    const ws = c.rcvWs;
    let avail = c.rcvMax - c.sock.writableLength;
    if (avail < 0) avail = 0;
    let f = avail >>> ws;
    if (f > 65535) f = 65535;
    const open = (c.rcvEdge - c.rcvNxt) | 0;
    if (open > 0 && f << ws < open) {
      f = (open + (1 << ws) - 1) >>> ws;
      if (f > 65535) f = 65535;
    }
    const edge = (c.rcvNxt + (f << ws)) >>> 0;
    if (seqGt(edge, c.rcvEdge)) c.rcvEdge = edge;
    return f;
  }

  /**
   * Builds and sends one segment of session c: payload = queue bytes [qpos,
   * qpos+len). Data frames go as GSO/checksum-partial with `gso`, else complete.
   * A payload within one block is sent from the block, the headers written in
   * front of it (and the bytes they cover put back after toVm, which consumes the
   * frame synchronously); one that spans blocks is copied.
   */
  #seg(c: Conn, flags: number, seq: number, qpos: number, len: number): void {
    if (len > 0) {
      const q = c.q;
      const contig = q.seek(qpos);
      const blk = q.curBlock;
      if (contig >= len && blk.pooled) {
        const p = HDR_ROOM + q.curOff;
        const hdrs = c.ip >= IP6_BASE ? HDRS + V6_EXTRA : HDRS;
        if (p === HDR_ROOM) {
          this.#dataSeg(c, flags, seq, blk.buf, p - hdrs, len);
          return;
        }
        // Inside the block: the headers go over the data before p, kept aside meanwhile.
        const b = blk.buf;
        const save = this.#save;
        const from = p - HDR_ROOM;
        for (let i = 0; i < HDR_ROOM; i++) save[i] = b[from + i];
        try {
          this.#dataSeg(c, flags, seq, b, p - hdrs, len);
        } finally {
          for (let i = 0; i < HDR_ROOM; i++) b[from + i] = save[i];
        }
        return;
      }
      q.copy(qpos, len, this.#out, IP_OFF + (c.ip >= IP6_BASE ? HDRS + V6_EXTRA : HDRS));
      this.counters.framesCopied++;
      this.#dataSeg(c, flags, seq, this.#out, IP_OFF, len);
      return;
    }
    const b = this.#out;
    const v6 = c.ip >= IP6_BASE;
    const th = IP_OFF + (v6 ? IPH + V6_EXTRA : IPH);
    let thl = TCPH;
    let win: number;
    if (flags & SYN) {
      // MSS, then window scale: offered in our SYN, answered in our SYN-ACK only if the VM offered it.
      thl += writeTcpSynOptions(b, th + TCPH, v6 ? this.#mss - V6_EXTRA : this.#mss, !c.out || c.vmWs >= 0 ? this.tuning.wscale : -1);
      win = Math.min(65535, this.tuning.rcvLimit);
      if (c.out) c.rcvEdge = (c.rcvNxt + win) >>> 0;
    } else {
      win = this.#window(c);
    }
    this.#tcpHeader(c, b, th, thl, flags, seq, win);
    this.#emitTcp(b, IP_OFF, c.ip, c.vmIp, thl, 0, 0);
  }

  /** A data segment whose payload is already at b[ip+HDRS, ip+HDRS+len). */
  #dataSeg(c: Conn, flags: number, seq: number, b: Buffer, ip: number, len: number): void {
    this.#tcpHeader(c, b, ip + (c.ip >= IP6_BASE ? IPH + V6_EXTRA : IPH), TCPH, flags, seq, this.#window(c));
    this.#emitTcp(b, ip, c.ip, c.vmIp, TCPH, len, this.#gso ? c.mss : 0);
  }

  #tcpHeader(c: Conn, b: Buffer, th: number, thl: number, flags: number, seq: number, win: number): void {
    writeTcpHeader(b, th, c.port, c.vmPort, seq, flags & ACK ? c.rcvNxt : 0, thl, flags, win);
    c.ackPending = false;
  }

  /** A control segment outside any session state (RSTs). */
  #ctl(src: number, sport: number, dst: number, dport: number, seq: number, ack: number, flags: number): void {
    const b = this.#out;
    writeTcpHeader(b, IP_OFF + (dst >= IP6_BASE ? IPH + V6_EXTRA : IPH), sport, dport, seq, ack, TCPH, flags, 0);
    if (flags & RST) this.counters.rstSent++;
    this.#emitTcp(b, IP_OFF, src, dst, TCPH, 0, 0);
  }

  /** RFC 793 reset for a segment that belongs to nothing (the one in #fields). */
  #rstReply(): void {
    const f = this.#flags;
    if (f & ACK) {
      this.#ctl(this.#dst, this.#dport, this.#src, this.#sport, this.#ack, 0, RST);
    } else {
      const ack = (this.#seq + this.#plen + (f & SYN ? 1 : 0) + (f & FIN)) >>> 0;
      this.#ctl(this.#dst, this.#dport, this.#src, this.#sport, 0, ack, RST | ACK);
    }
  }

  /**
   * IPv4 header and checksums for the TCP segment already at b[ip+IP4_MIN_HLEN]
   * (thl header bytes, len payload bytes), then toVm. gsoMss > 0: checksum-partial
   * with a virtio_net_hdr (GSO TCPv4 when the payload exceeds one segment) in the
   * HOST_HEADROOM before ip.
   */
  #emitTcp(b: Buffer, ip: number, src: number, dst: number, thl: number, len: number, gsoMss: number): void {
    const v6 = dst >= IP6_BASE;
    const iph = v6 ? IPH + V6_EXTRA : IPH;
    const th = ip + iph;
    const tl = thl + len;
    const total = iph + tl;
    const pseudo = this.#addrs.writeHeader(b, ip, src, dst, P_TCP, tl, this.#ipId, DF);
    this.#ipId = (this.#ipId + 1) & 0xffff;
    this.counters.framesToVm++;
    if (gsoMss > 0) {
      // CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum, not complemented.
      write16(b, th + CSUM_AT, fold(pseudo));
      const gso = len > gsoMss;
      const start = v6 ? CSUM_START + V6_EXTRA : CSUM_START;
      writeVnet(b, ip - HEADROOM, NEEDS_CSUM, gso ? (v6 ? GSO_TCPV6 : GSO_TCPV4) : GSO_NONE, start + thl, gso ? gsoMss : 0, start, CSUM_AT);
      this.#toVm(b, ip, total, true);
    } else {
      write16(b, th + CSUM_AT, ~onesSum(b, th, tl, pseudo) & 0xffff);
      this.#toVm(b, ip, total, false);
    }
  }

  /** ICMP destination unreachable from `from` to the VM, quoting its SYN. */
  #icmpUnreach(vmIp: number, from: number, code: number, quote: Buffer): void {
    const b = this.#out;
    const ip = IP_OFF;
    if (vmIp >= IP6_BASE) {
      // ICMPv6 destination unreachable: code 0 no route, 3 address unreachable (RFC 4443 3.1).
      const l4 = ip + IPH + V6_EXTRA;
      const n = writeIcmpError(b, l4, ICMP6_DEST_UNREACH, code === 0 ? 0 : 3, 0, quote, 0, quote.length);
      this.#addrs.writeHeader(b, ip, from, vmIp, ICMPV6, n, 0, 0);
      wire.writeIcmp6Checksum(b, ip, l4, n);
      this.counters.icmpSent++;
      this.counters.framesToVm++;
      this.#toVm(b, ip, IPH + V6_EXTRA + n, false);
      return;
    }
    const n = writeIcmpError(b, ip + IPH, wire.ICMP_TYPE.DEST_UNREACH, code, 0, quote, 0, quote.length);
    writeIp4(b, ip, IPH + n, this.#ipId, 0, 64, wire.IPPROTO.ICMP, from, vmIp);
    this.#ipId = (this.#ipId + 1) & 0xffff;
    this.counters.icmpSent++;
    this.counters.framesToVm++;
    this.#toVm(b, ip, IPH + n, false);
  }

  // ---- Timers ----

  #arm(c: Conn, kind: number, at: number): void {
    c.kind = kind;
    c.deadline = at;
    if (c.timer !== undefined) {
      if (at >= c.timerDue) return; // fires early, re-arms for the rest
      clearTimeout(c.timer);
    }
    c.timerDue = at;
    c.timer = setTimeout(c.onTimer, Math.max(1, at - this.#clock()));
    c.timer.unref();
  }

  #disarm(c: Conn): void {
    c.kind = T_NONE;
    c.deadline = 0;
  }

  #onTimer(c: Conn): void {
    c.timer = undefined;
    if (c.phase === DEAD || c.kind === T_NONE) return;
    const now = this.#clock();
    // Due when the clock says so, or when this timer was armed for this very deadline.
    if (c.deadline > now && c.deadline > c.timerDue) {
      c.timerDue = c.deadline;
      c.timer = setTimeout(c.onTimer, Math.max(1, c.deadline - now));
      c.timer.unref();
      return;
    }
    const kind = c.kind;
    this.#disarm(c);
    if (kind === T_RTO) this.#onRto(c, now);
    else this.#onPersist(c, now);
  }

  #onRto(c: Conn, now: number): void {
    const t = this.tuning;
    if (c.phase === SYN_SENT || c.phase === SYN_RCVD) {
      if (++c.retx > t.maxSynRetransmits) {
        if (c.phase === SYN_SENT) this.counters.forwardFailed++;
        this.counters.timeouts++;
        this.#abort(c, true, SOCK.RESET);
        return;
      }
      c.rto = Math.min(c.rto * 2, t.rtoMaxMs);
      this.counters.retransmits++;
      this.#sendSyn(c);
      this.#arm(c, T_RTO, now + c.rto);
      return;
    }
    if (c.phase !== OPEN || c.sndMax === c.sndUna) return;
    if (c.sndWnd === 0) {
      // Nothing fits a shut window: probe it instead (no give-up while the VM answers).
      c.sndNxt = c.sndUna;
      c.rttOn = false;
      this.#updateTimer(c, now);
      return;
    }
    if (++c.retx > t.maxRetransmits) {
      this.counters.timeouts++;
      this.#onEvent?.({
        event: 'tcp_give_up', inside: this.#addrs.endpoint(c.vmIp, c.vmPort), remote: this.#addrs.endpoint(c.ip, c.port), retransmits: c.retx - 1,
      });
      this.#abort(c, true, SOCK.RESET);
      return;
    }
    // Go-back-N from snd_una, with the congestion window back to a loss window.
    const flight = (c.sndMax - c.sndUna) | 0;
    c.rto = Math.min(c.rto * 2, t.rtoMaxMs);
    c.ssthresh = Math.max(flight >>> 1, 2 * c.mss);
    c.cwnd = 2 * c.mss;
    c.inRecovery = false;
    c.dupAcks = 0;
    c.rttOn = false;
    c.sndNxt = c.sndUna;
    this.counters.retransmits++;
    this.#output(c);
  }

  /** Zero window: an ACK one byte left of snd_una makes the VM say its window. */
  #onPersist(c: Conn, now: number): void {
    if (c.phase !== OPEN) return;
    if (c.sndWnd > 0) {
      this.#output(c);
      return;
    }
    if (c.q.bytes === 0 && !(c.hostEof && !c.finAcked)) return;
    this.counters.windowProbes++;
    this.#seg(c, ACK, (c.sndUna - 1) >>> 0, 0, 0);
    c.persistMs = Math.min(c.persistMs * 2, this.tuning.rtoMaxMs);
    this.#arm(c, T_PERSIST, now + c.persistMs);
  }

  // ---- Sessions ----

  #newIsn(): number {
    if (this.#isnNext >= this.#isn.length) {
      randomFillSync(this.#isn);
      this.#isnNext = 0;
    }
    return this.#isn[this.#isnNext++];
  }

  #insert(c: Conn): void {
    let inner = this.#table.get(c.k1);
    if (inner === undefined) {
      inner = new Map();
      this.#table.set(c.k1, inner);
    }
    inner.set(c.k2, c);
    c.onTimer = () => this.#onTimer(c);
    this.counters.opened++;
    this.counters.active++;
  }

  #timeWait(c: Conn): void {
    c.phase = TIME_WAIT;
    c.since = this.#clock();
    c.q.clear();
    this.#disarm(c);
  }

  /** Ends c with a RST to the VM (rstVm) and the host socket destroyed or reset. */
  #abort(c: Conn, rstVm: boolean, sock: number): void {
    if (c.phase === DEAD) return;
    if (rstVm && c.phase !== CONNECTING && c.phase !== TIME_WAIT) this.#sendRst(c);
    this.counters.resets++;
    this.#finish(c, sock);
  }

  /** Out of the table: timer, socket, budget (exactly once). */
  #finish(c: Conn, sock: number): void {
    if (c.phase === DEAD) return;
    c.phase = DEAD;
    c.kind = T_NONE;
    if (c.timer !== undefined) {
      clearTimeout(c.timer);
      c.timer = undefined;
    }
    const inner = this.#table.get(c.k1);
    if (inner !== undefined && inner.get(c.k2) === c) {
      inner.delete(c.k2);
      if (inner.size === 0) this.#table.delete(c.k1);
    }
    if (this.#last === c) {
      this.#last = undefined;
      this.#lastK1 = -1;
      this.#lastK2 = -1;
    }
    c.quote = undefined;
    if (!c.released) {
      c.released = true;
      this.#budget.release(c.vmIp, c.bridgePort);
      this.counters.active--;
    }
    const s = c.sock;
    if (sock === SOCK.RESET) resetSocket(s);
    else if (sock !== SOCK.NONE && !s.destroyed) s.destroy();
    // After the socket: a destroyed socket reads no more into the blocks given back.
    c.q.clear();
  }

  accept(sock: net.Socket, vmIp: number, vmPort: number, remoteIp: number, remotePort: number): void {
    const ctr = this.counters;
    ctr.forwarded++;
    const k1 = vmIp * 65536 + vmPort;
    const k2 = remoteIp * 65536 + remotePort;
    const old = this.#table.get(k1)?.get(k2);
    if (old !== undefined && old.phase === TIME_WAIT) this.#finish(old, SOCK.DESTROY);
    if (this.#closed || sock.destroyed || vmPort <= 0 || remotePort <= 0 || this.#table.get(k1)?.has(k2)) {
      ctr.forwardFailed++;
      resetSocket(sock);
      return;
    }
    // From the outside: the budget charges no bridge port (take returns '').
    if (this.#budget.take(vmIp) === null) {
      ctr.refused++;
      resetSocket(sock); // the client sees a refusal, not an empty reply
      return;
    }
    sock.pause();
    const q = new SendQueue(this.#pool, remoteIp >= IP6_BASE ? this.#mss - V6_EXTRA : this.#mss);
    const c = new Conn(false, vmIp, vmPort, remoteIp, remotePort, k1, k2, sock, q, this.#newIsn(), this.#clock(), this.tuning.rtoInitMs);
    c.phase = SYN_SENT;
    c.outside = `${sock.localAddress ?? ''}:${sock.localPort ?? ''}`;
    c.sndNxt = (c.iss + 1) >>> 0;
    c.sndMax = c.sndNxt;
    this.#setRcvbuf(c);
    this.#insert(c);
    this.#attach(c);
    this.#sendSyn(c);
    this.#arm(c, T_RTO, this.#clock() + c.rto);
  }

  sessions(now: number): HostSession[] {
    const list: HostSession[] = [];
    for (const inner of this.#table.values()) {
      for (const c of inner.values()) {
        list.push({
          proto: 'tcp',
          direction: c.out ? 'out' : 'in',
          inside: this.#addrs.endpoint(c.vmIp, c.vmPort),
          remote: this.#addrs.endpoint(c.ip, c.port),
          outside: c.outside,
          state: c.stateName(),
          idleMs: Math.max(0, now - c.lastSeen),
          txBytes: c.txBytes,
          rxBytes: c.rxBytes,
        });
      }
    }
    return list;
  }

  /** Marks the addresses the sessions hold (family.ts: the others are swept). */
  markAddrs(): void {
    const t = this.#addrs.ip6;
    for (const inner of this.#table.values()) {
      for (const c of inner.values()) {
        t.mark(c.vmIp);
        t.mark(c.ip);
      }
    }
  }

  tick(now: number): void {
    this.#pool.trim();
    if (this.#ownAddrs && this.#addrs.ip6.count > 0) {
      this.markAddrs();
      this.#addrs.ip6.sweep();
    }
    const t = this.tuning;
    for (const inner of this.#table.values()) {
      for (const c of inner.values()) {
        const idle = now - c.lastSeen;
        switch (c.phase) {
          case CONNECTING:
            // The kernel would try for 2 minutes; the VM gave up long before.
            if (now - c.created > t.idleSynMs) this.#connectFailed(c, 'ETIMEDOUT');
            break;
          case SYN_SENT:
          case SYN_RCVD:
            if (now - c.created > t.idleSynMs) {
              this.counters.expired++;
              this.#abort(c, true, SOCK.RESET);
            }
            break;
          case OPEN:
            if (idle > (c.vmFin || c.hostEof ? t.idleClosingMs : t.idleEstablishedMs)) {
              this.counters.expired++;
              this.#abort(c, true, SOCK.RESET);
            }
            break;
          case TIME_WAIT: {
            const age = now - c.since;
            if (((c.sockClosed || c.sock.destroyed) && age >= t.lingerMs) || age > t.idleClosingMs) this.#finish(c, SOCK.DESTROY);
            break;
          }
          default:
            break;
        }
      }
    }
  }

  close(): void {
    this.#closed = true;
    for (const inner of [...this.#table.values()]) {
      for (const c of [...inner.values()]) this.#finish(c, SOCK.DESTROY);
    }
    this.#table.clear();
  }
}
