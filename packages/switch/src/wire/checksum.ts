/*
 * The Internet checksum (RFC 1071) and its incremental update (RFC 1624), over
 * (buf, off, len). Sums are carried as plain numbers and folded at the end; NAPT
 * rewrites use the incremental form so a translated packet is never summed whole.
 */

/** One's-complement sum of buf[off..off+len) added to `initial` (unfolded, < 2^32 for frames < 64 KiB·2^15). */
export function sum16(buf: Uint8Array, off: number, len: number, initial = 0): number {
  let s = initial;
  const end = off + (len & ~1);
  for (let i = off; i < end; i += 2) s += (buf[i] << 8) | buf[i + 1];
  if (len & 1) s += buf[off + len - 1] << 8;
  return s;
}

/** Folds a sum to 16 bits (not complemented). */
export function fold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

/** The checksum field value for data whose sum is `s`. */
export function finish(s: number): number {
  return ~fold(s) & 0xffff;
}

/** Checksum of buf[off..off+len): 0 means "verifies" when the field is included. */
export function checksum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  return finish(sum16(buf, off, len, initial));
}

/** Sum of the IPv4 pseudo header for TCP/UDP. */
export function pseudoSum(src: number, dst: number, proto: number, l4len: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + proto + l4len;
}

/** RFC 1624 eqn. 3: checksum after one 16-bit word changed from `old` to `now`. */
export function csumReplace16(csum: number, old: number, now: number): number {
  return ~fold((~csum & 0xffff) + (~old & 0xffff) + now) & 0xffff;
}

/** The same for a 32-bit value (an IPv4 address). */
export function csumReplace32(csum: number, old: number, now: number): number {
  return csumReplace16(csumReplace16(csum, old >>> 16, now >>> 16), old & 0xffff, now & 0xffff);
}
