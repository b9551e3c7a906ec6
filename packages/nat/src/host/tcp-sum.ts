/*
 * The Internet checksum's one's-complement sum, 32 bits a step, for the TCP
 * engine's per-segment work (verifying a VM's segment, completing a frame for a
 * VM without offloads). Summing 32-bit big-endian words and folding the carries
 * at the end gives the same 16-bit sum (2^16 = 1 mod 2^16-1); the halves are
 * kept in two small-integer accumulators so the loop stays in int32 arithmetic.
 * Measured 2.3x faster than checksum.ts's sum16 on 1480 bytes (0.57 vs 1.3 us).
 */
import * as wire from '@vswitch/switch';

const { read16 } = wire; // a module constant, not an imported binding (wire/bytes.ts says why)

// Views of the two buffers in use (the router's receive buffer and the engine's
// transmit buffer alternate segment by segment), most recent first.
let bufA: ArrayBufferLike | undefined;
let viewA: DataView<ArrayBufferLike> = new DataView(new ArrayBuffer(0));
let bufB: ArrayBufferLike | undefined;
let viewB = viewA;

function viewOf(buffer: ArrayBufferLike): DataView<ArrayBufferLike> {
  if (buffer === bufA) return viewA;
  const v = buffer === bufB ? viewB : new DataView(buffer);
  bufB = bufA;
  viewB = viewA;
  bufA = buffer;
  viewA = v;
  return v;
}

/** One's-complement sum of b[off, off+len) plus `initial` (< 2^31), folded to 16 bits, not complemented. */
export function onesSum(b: Uint8Array, off: number, len: number, initial: number): number {
  const v = viewOf(b.buffer);
  let hi = 0;
  let lo = 0;
  let i = b.byteOffset + off;
  const end = i + (len & ~3);
  for (; i < end; i += 4) {
    const w = v.getUint32(i);
    hi += w >>> 16;
    lo += w & 0xffff;
  }
  let r = off + (len & ~3);
  if (len & 2) {
    lo += read16(b, r);
    r += 2;
  }
  if (len & 1) lo += b[r] << 8;
  let s = hi + lo + initial;
  while (s > 0xffff) s = (s % 0x10000) + Math.floor(s / 0x10000);
  return s;
}
