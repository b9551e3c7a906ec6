/*
 * Egress: the last step, and the only place tag bytes change. The frame is sent
 * from the buffer it arrived in; inserting or stripping a tag writes two pieces
 * (a 12- or 16-byte header, then the rest) as one frame through writev, so no
 * frame is copied. The egress port's policy decides tagged or untagged per VID.
 */
import { Drop } from './drop.js';
import type { FrameMeta } from './ingress.js';
import type { Port } from './port.js';
import { tci, tciVid, writeTaggedHeader } from './wire/vlan.js';

export function egress(port: Port, buf: Uint8Array, off: number, len: number, meta: FrameMeta, scratch: Uint8Array): void {
  if (!port.up) {
    port.drops[Drop.port_down]++;
    return;
  }
  const vid = meta.vid;
  const policy = port.vlan;
  if (!policy.isMember(vid)) {
    port.drops[Drop.egress_filtered]++;
    return;
  }
  let r: number;
  if (policy.isUntagged(vid)) {
    r = meta.tagLen === 0
      ? port.io.send(buf, off, len)
      : port.io.send2(buf, off, 12, buf, off + 16, len - 16);
  } else if (meta.tagLen === 4 && tciVid(tci(buf, off)) === vid) {
    // Already carries this VID: PCP and DEI survive trunk to trunk untouched.
    r = port.io.send(buf, off, len);
  } else {
    writeTaggedHeader(scratch, buf, off, meta.prio | vid);
    const rest = off + 12 + meta.tagLen;
    r = port.io.send2(scratch, 0, 16, buf, rest, len - 12 - meta.tagLen);
  }
  if (r < 0) {
    port.drops[Drop.tx_error]++;
    return;
  }
  port.txFrames++;
  port.txBytes += r;
}
