/*
 * The segmenter egress uses when a frame whose virtio_net_hdr asks for work (a
 * GSO super-frame, a partial checksum) must leave through a port that cannot take
 * the header: the addon's gso.c, writing into its preallocated transmit scratch
 * area. Installed by the first native port, since only native ports deliver such
 * frames; the pure core (and its tests without devices) never loads the addon.
 */
import * as netdev from '@vswitch/netdev';
import { setSegmenter } from '../egress.js';

let installed = false;

export function installNativeSegmenter(): void {
  if (installed) return;
  const sc = netdev.txScratch();
  setSegmenter({ arena: sc.arena, offs: sc.offs, lens: sc.lens, segment: netdev.segment });
  installed = true;
}
