/*
 * The segmenter a bridge's egress uses when a frame whose virtio_net_hdr asks for
 * work (a GSO super-frame, a partial checksum) must leave through a port that
 * cannot take the header: the addon's gso.c, writing into its preallocated
 * transmit scratch area. The daemon gives it to every bridge (BridgeOptions): any
 * bridge may carry such frames, from a TAP, an attached interface or the router's
 * host NAT, even one with no native port. The pure core (and its tests without
 * devices) never loads the addon.
 */
import * as netdev from '@vswitch/netdev';
import type { Segmenter } from '../egress.js';

let native: Segmenter | undefined;

/** The addon's segmenter; one per process, as its scratch area is (egress uses it synchronously). */
export function nativeSegmenter(): Segmenter {
  if (native === undefined) {
    const sc = netdev.txScratch();
    native = { arena: sc.arena, offs: sc.offs, lens: sc.lens, segment: netdev.segment };
  }
  return native;
}
