/*
 * Forwarding decision: which ports get a copy. Group destinations and unknown
 * unicast flood to the VLAN's members; a known unicast destination goes to its one
 * port. Either way a port gets the frame only if `canEgress` admits it (as Linux's
 * should_deliver): not the port it came from, up, not shut by loop protection
 * (loop.ts), a member of the frame's VLAN. A unicast frame refused there is counted
 * on its destination port (a destination learned on the ingress port itself is
 * 'dst_on_ingress': the two hosts share that segment, as Linux and OVS do; so does a
 * destination on another port of the ingress port's split horizon group, port.ts); a flood
 * skips the ingress port and ports that are down without counting, and counts the
 * other refusals (a shut port's 'port_shut') as unicast does.
 *
 * Storm control: a port with a stormControl rate spends one token of its
 * StormBucket per frame it floods; with none left the frame is dropped
 * ('storm_control'). Known unicast never spends tokens.
 *
 * Flood lists are precomputed per VID by the bridge (rebuilt on any port or VLAN
 * change), so flooding in a bridge of 256 ports walks only the VLAN's members.
 */
import { Drop } from './drop.js';
import { egress, type Egress } from './egress.js';
import type { Fdb } from './fdb.js';
import { ADMIT, type FrameMeta } from './ingress.js';
import type { Port } from './port.js';

export interface ForwardCounters {
  /** Frames flooded because the destination was a group address. */
  floodedGroup: number;
  /** Frames flooded because the unicast destination was not in the table. */
  floodedUnknown: number;
  /** Frames sent to one known port. */
  forwarded: number;
}

/**
 * Storm-control state of a port: a token bucket of `pps` tokens (one second's worth
 * is the burst) for the frames it floods, refilled lazily from the bridge clock
 * (`now` of the frame's batch), so it needs no timer and allocates nothing.
 */
export class StormBucket {
  /** 0 = off. */
  pps = 0;
  tokens = 0;
  last = 0;

  set(pps: number, now: number): void {
    this.pps = pps > 0 ? pps : 0;
    this.tokens = this.pps;
    this.last = now;
  }

  /** Takes a token for one flooded frame; false when the bucket is empty. */
  take(now: number): boolean {
    const dt = now - this.last;
    if (dt > 0) {
      this.last = now;
      const t = this.tokens + (dt * this.pps) / 1000;
      this.tokens = t > this.pps ? this.pps : t;
    }
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    return false;
  }
}

// Used per frame through module constants: an imported binding is checked on
// every use (see ingress.ts).
const send = egress;
const OK = ADMIT;
const DST_ON_INGRESS = Drop.dst_on_ingress;
const PORT_DOWN = Drop.port_down;
const PORT_SHUT = Drop.port_shut;
const EGRESS_FILTERED = Drop.egress_filtered;

/** Whether `port` may send a frame of VLAN `vid` that came in on `inPort`: ADMIT, or the Drop index saying why not. */
export function canEgress(port: Port, inPort: Port, vid: number): number {
  // One split horizon group (the overlay's tunnels) is one segment, as one port.
  if (port === inPort || (port.horizon !== 0 && port.horizon === inPort.horizon)) return DST_ON_INGRESS;
  if (!port.up) return PORT_DOWN;
  if (port.shut !== 0) return PORT_SHUT;
  if (!port.vlan.isMember(vid)) return EGRESS_FILTERED;
  return OK;
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
  out: Egress,
  c: ForwardCounters,
  now = 0,
): void {
  const group = (buf[off] & 1) !== 0;
  if (!group) {
    const to = fdb.lookupAt(meta.vid, buf, off);
    const p = to >= 0 ? ports[to] : undefined;
    if (p !== undefined) {
      const r = canEgress(p, inPort, meta.vid);
      // `forwarded` counts the decision: a frame for a host on its own segment was
      // not forwarded; one for a port that is down or left the VLAN was, and is
      // counted as dropped there.
      if (r !== DST_ON_INGRESS) c.forwarded++;
      if (r === OK) send(p, buf, off, len, meta, out);
      else p.drops[r]++;
      return;
    }
  }
  const storm = inPort.storm;
  if (storm.pps > 0 && !storm.take(now)) {
    inPort.drops[Drop.storm_control]++;
    return;
  }
  if (group) c.floodedGroup++;
  else c.floodedUnknown++;
  const vid = meta.vid;
  for (let i = 0; i < floodList.length; i++) {
    const p = floodList[i];
    const r = canEgress(p, inPort, vid);
    if (r === OK) send(p, buf, off, len, meta, out);
    else if (r !== DST_ON_INGRESS && r !== PORT_DOWN) p.drops[r]++;
  }
}
