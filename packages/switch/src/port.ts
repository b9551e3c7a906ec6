/*
 * A switch port: one endpoint (a TAP the daemon owns, an interface attached through
 * AF_PACKET, a Unix socket a VM connects through, a network of a router in the same
 * process, a VXLAN tunnel to one remote VTEP: vxlan.ts) behind one small interface, PortIo. The bridge never knows which kind
 * it talks to.
 *
 * Data flows one way: the port's I/O delivers received batches to its `PortRx`
 * (the bridge's ingress for that port), and the bridge's egress calls `send`/`send2`.
 * Counters are plain numbers bumped on the fast path and read on demand.
 *
 * Offloads: a frame may travel with a virtio_net_hdr (wire/vnet.ts) right before its first
 * byte (a GSO super-frame of up to 64 KB, or a frame whose L4 checksum is partial).
 * A port whose device speaks that header (`offload`: a TAP opened with the vnet
 * header, an AF_PACKET socket, the router's networks, which NAT them whole) is sent
 * such frames whole through `sendVnet`/`send2Vnet`; every other port (sockets, TAPs
 * with `offload: false`) only ever gets complete frames: egress segments and
 * checksums for it (see egress.ts).
 *
 * States: 'up' forwards; 'down' (the device vanished or failed, or its link is down:
 * a socket port without a client, an attached interface gone until it is back;
 * `downReason` says why) neither receives nor is sent to, keeps its config until
 * `delif`, and comes back up when its I/O reports the link up.
 */
import { DROP_REASON_COUNT, DROP_REASONS, type DropReason } from './drop.js';
import { VlanPolicy } from './vlan.js';
import { StormBucket } from './forward.js';
import { PortGuard } from './guard.js';
import type { Policer, Shaper } from './police.js';

export type PortKind = 'tap' | 'attach' | 'router' | 'socket' | 'bond' | 'vxlan';

/** Where a port delivers what it receives. */
export interface PortRx {
  /**
   * `count` frames at buf[offs[i] .. offs[i]+lens[i]); consume synchronously. With
   * `vnet`, each frame's virtio_net_hdr is at buf[offs[i]-VNET_HDR_LEN .. offs[i])
   * (all zero for a complete frame); without it the frames are complete. `at`: when
   * they were read, in ms on performance.now()'s clock, from ports that know it
   * without a call (the netdev read loop); the bridge reads its clock otherwise.
   */
  batch(buf: Uint8Array, offs: Int32Array, lens: Int32Array, count: number, vnet?: boolean, at?: number): void;
  /** One frame (ports that do not read in batches, such as the router). */
  frame(buf: Uint8Array, off: number, len: number): void;
  /** The device is gone or broken; `errno` is positive. */
  gone(errno: number, why: string): void;
  /** The link went down or came back (a VM disconnected from a socket port, and reconnected). */
  link(up: boolean, why: string): void;
}

/** The I/O side of a port: what the bridge needs from a device. */
export interface PortIo {
  readonly kind: PortKind;
  /** Begin delivering frames; called once when the port joins a bridge. */
  start(rx: PortRx): void;
  /** Write one frame; returns bytes written or a negative errno. Never throws for I/O. */
  send(buf: Uint8Array, off: number, len: number): number;
  /** Write a+b as one frame (tag insert/strip without copying the frame). */
  send2(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number;
  /**
   * The device takes frames with a virtio_net_hdr (GSO, checksum-partial) through
   * sendVnet/send2Vnet, which must then exist. Absent or false: only complete frames,
   * through send/send2.
   */
  readonly offload?: boolean;
  /** Write the frame buf[off, off+len) with its virtio_net_hdr at buf[off-VNET_HDR_LEN, off), in one piece. */
  sendVnet?(buf: Uint8Array, off: number, len: number): number;
  /** send2 with the frame's virtio_net_hdr at a[aoff-VNET_HDR_LEN, aoff). */
  send2Vnet?(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number;
  /**
   * The egress of a run of frames in one call (Bridge #receiveRuns; netdev sendRun):
   * frames [from, to) of buf at offs/lens, each written as `send` (strip 0) or as
   * `send2` without its bytes [12, 16) (strip 4: the tag an untagged member drops)
   * would write it, in order. Stops before a frame shorter than `hlen` or whose first
   * hlen bytes differ from buf[ref, ref+hlen) (the run's head), and after a write that failed. Returns the
   * frames taken, res getting [their bytes, the bytes written, the failed last one's
   * negative errno or 0]; -1 when it cannot now (no device): the bridge then sends
   * frame by frame. Only for a device whose writes never call back into the bridge
   * or change a port (a TAP, a packet socket): the bridge checks nothing between them.
   */
  sendRun?(buf: Uint8Array, offs: Int32Array, lens: Int32Array, from: number, to: number, ref: number, hlen: number,
    strip: number, res: Int32Array): number;
  /**
   * This port's share of each read-loop round (fair.ts; 0: no limit), in bytes, or in
   * frames when `frames` (`readShare: frames`). Ports read by the addon's loop take
   * it; others (sockets, the router) have no such loop.
   */
  setReadQuantum?(quantum: number, frames?: boolean): void;
  /** Sparse-first service for this port (the bridge's `readSparse`, fair.ts); ports read by the addon's loop take it. */
  setReadSparse?(on: boolean): void;
  /** Read-loop rounds in which the port had more frames waiting than its quantum took (ports read by the addon). */
  readonly readRoundsFull?: number;
  /** Release everything (fd, device unless persistent). Idempotent. */
  close(): void;
  /** False when the port starts with its link down (a socket port with no client yet), and why. */
  readonly linkUp?: boolean;
  readonly linkDownReason?: string;
  /** Facts for `show` (device name, persistence, ifindex ...). */
  describe(): Record<string, string | number | boolean>;
  /**
   * Split horizon group (the VXLAN tunnels of a bridge: vxlan.ts): a frame that came
   * in on a port of a group is never sent out of another port of the same group,
   * as if they were one port. Absent or 0: none.
   */
  readonly horizon?: number;
  /**
   * Whether the port gets flooded frames (broadcast, multicast, unknown unicast) of
   * VLAN `vid`, of which it is a member (a tunnel only when its remote VTEP is on the
   * VNI's flood list). Absent: always. Read when the bridge rebuilds its flood lists
   * (Bridge.refreshFloodLists after a change).
   */
  floods?(vid: number): boolean;
}

/** What egress writes through: the port's device, or its shaper (police.ts). */
export type PortTx = Pick<PortIo, 'send' | 'send2' | 'sendVnet' | 'send2Vnet' | 'sendRun'>;

export interface PortCountersSnapshot {
  rxFrames: number;
  rxBytes: number;
  txFrames: number;
  txBytes: number;
  drops: Partial<Record<DropReason, number>>;
}

export class Port {
  up = true;
  /** The device takes frames with a virtio_net_hdr (see PortIo.offload); fixed at creation. */
  readonly offload: boolean;
  downReason = '';
  rxFrames = 0;
  rxBytes = 0;
  txFrames = 0;
  txBytes = 0;
  /** Indexed by Drop[reason]; ingress drops count on the ingress port, tx errors on the egress port. */
  readonly drops = new Float64Array(DROP_REASON_COUNT);
  /** Times the port went down (device gone, write/read failure). */
  downEvents = 0;
  /** Anti-spoofing (guard.ts); inactive by default. */
  readonly guard = new PortGuard();
  /** Storm control for flooded frames this port sends (forward.ts); pps 0 = off. */
  readonly storm = new StormBucket();
  /** Loop protection and rate limits in force (gate.ts GATE_* bits); 0: none, one test per frame. */
  gate = 0;
  /** Shut by loop protection (loop.ts): the Drop index its frames count under (bpdu_guard, loop_blocked; frames to it: port_shut), else 0; since/until when (bridge clock, ms). */
  shut = 0;
  shutAt = 0;
  shutUntil = 0;
  /** The shut reason's drop count when it shut (the recovery log says how many the episode dropped). */
  shutDrops = 0;
  /** BPDU guard on (loop.ts); times it shut the port, times loop detection blocked it. */
  bpduGuard = false;
  bpduShutdowns = 0;
  loopBlocks = 0;
  /** Ingress policer and egress shaper (police.ts); undefined: no limit. */
  police: Policer | undefined = undefined;
  shaper: Shaper | undefined = undefined;
  /** Where egress writes: `io`, or `shaper` when the port has an egress rate. */
  tx: PortTx;
  /** Split horizon group (PortIo.horizon); 0: none. */
  readonly horizon: number;
  /**
   * Per VID, 1 where frames from this port teach the MAC table nothing (a VXLAN
   * tunnel in a VNI whose MACs a control plane installs: vxlan.ts); undefined: it learns in all.
   */
  noLearn: Uint8Array | undefined = undefined;

  constructor(
    /** Bridge-local id, the FDB's port number. */
    readonly id: number,
    readonly name: string,
    readonly io: PortIo,
    readonly vlan: VlanPolicy = VlanPolicy.defaultAccess(),
  ) {
    this.offload = io.offload === true && typeof io.sendVnet === 'function' && typeof io.send2Vnet === 'function';
    this.tx = io;
    this.horizon = io.horizon ?? 0;
  }

  get kind(): PortKind { return this.io.kind; }

  counters(): PortCountersSnapshot {
    const drops: Partial<Record<DropReason, number>> = {};
    DROP_REASONS.forEach((r, i) => {
      if (this.drops[i] > 0) drops[r] = this.drops[i];
    });
    return { rxFrames: this.rxFrames, rxBytes: this.rxBytes, txFrames: this.txFrames, txBytes: this.txBytes, drops };
  }
}
