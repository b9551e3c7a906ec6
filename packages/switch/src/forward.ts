/*
 * Forwarding decision: which ports get a copy. Group destinations and unknown
 * unicast flood to the up ports that are members of the frame's VLAN, never back
 * to the ingress port; a known unicast destination goes to its one port, and a
 * destination learned on the ingress port itself is dropped (the two hosts share
 * that segment, as Linux and OVS do).
 *
 * Storm control: a port with a stormControl rate spends one token of its bucket
 * (guard.ts) per frame it floods; with none left the frame is dropped
 * ('storm_control'). Known unicast never spends tokens.
 *
 * Flood lists are precomputed per VID by the bridge (rebuilt on any port or VLAN
 * change), so flooding in a bridge of 256 ports walks only the VLAN's members.
 */
import { Drop } from './drop.js';
import { egress } from './egress.js';
import type { Fdb } from './fdb.js';
import type { FrameMeta } from './ingress.js';
import type { Port } from './port.js';

export interface ForwardCounters {
  /** Frames flooded because the destination was a group address. */
  floodedGroup: number;
  /** Frames flooded because the unicast destination was not in the table. */
  floodedUnknown: number;
  /** Frames sent to one known port. */
  forwarded: number;
}

export function forward(
  fdb: Fdb,
  ports: readonly (Port | undefined)[],
  floodList: readonly Port[],
  inPort: Port,
  buf: Uint8Array,
  off: number,
  len: number,
  meta: FrameMeta,
  scratch: Uint8Array,
  c: ForwardCounters,
  now = 0,
): void {
  if ((buf[off] & 1) === 0) {
    const to = fdb.lookupAt(meta.vid, buf, off);
    if (to >= 0) {
      if (to === inPort.id) {
        inPort.drops[Drop.dst_on_ingress]++;
        return;
      }
      const p = ports[to];
      if (p !== undefined) {
        c.forwarded++;
        egress(p, buf, off, len, meta, scratch);
        return;
      }
    }
    if (inPort.storm.pps > 0 && !inPort.storm.take(now)) {
      inPort.drops[Drop.storm_control]++;
      return;
    }
    c.floodedUnknown++;
  } else {
    if (inPort.storm.pps > 0 && !inPort.storm.take(now)) {
      inPort.drops[Drop.storm_control]++;
      return;
    }
    c.floodedGroup++;
  }
  for (let i = 0; i < floodList.length; i++) {
    const p = floodList[i];
    if (p !== inPort && p.up) egress(p, buf, off, len, meta, scratch);
  }
}
