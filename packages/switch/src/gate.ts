/*
 * A port's gate: what stands between a port and the bridge besides VLANs and guards
 * (loop.ts, police.ts). `Port.gate` holds which of them apply as bits, so that the
 * bridge pays one test per frame for a port without any: a port whose only bit is
 * the BPDU guard is looked at only for frames whose first byte is 0x01 (the bridge
 * group address and other multicast), the others go straight on.
 * In order: a shut port drops what it sends (bpdu_guard or loop_blocked; egress drops
 * what would go to it as port_shut);
 * the BPDU guard looks at frames to the bridge group address; the ingress policer
 * charges the frame. Egress checks `Port.shut` itself and writes through `Port.tx`
 * (the device, or its shaper).
 */
import { Drop } from './drop.js';
import type { LoopGuard } from './loop.js';
import type { Port } from './port.js';
import { BPDU_INVALID, BPDU_VALID, bpduKind } from './wire/stp.js';

export const GATE_SHUT = 1;
export const GATE_BPDU = 2;
export const GATE_POLICE = 4;
/** Returned by gateIn for a frame that passes. */
export const GATE_PASS = -1;

const kindOf = bpduKind;

/** Recomputes a port's gate bits from its state. */
export function updateGate(p: Port): void {
  p.gate = (p.shut !== 0 ? GATE_SHUT : 0) | (p.bpduGuard ? GATE_BPDU : 0) | (p.police !== undefined ? GATE_POLICE : 0);
}

/** A frame on a port whose gate is not 0: GATE_PASS, or the Drop index to count. */
export function gateIn(loop: LoopGuard, port: Port, buf: Uint8Array, off: number, len: number, now: number): number {
  if (port.shut !== 0) return port.shut;
  if (port.bpduGuard && buf[off] === 0x01) {
    const k = kindOf(buf, off, len);
    if (k === BPDU_VALID) {
      loop.bpdu(port, now);
      return Drop.bpdu_guard;
    }
    if (k === BPDU_INVALID) return Drop.bpdu_invalid;
  }
  const pol = port.police;
  if (pol !== undefined && !pol.admit(len, now)) return Drop.ingress_rate;
  return GATE_PASS;
}
