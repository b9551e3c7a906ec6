/*
 * For the tests only (excluded from the build): an Internet checksum written
 * independently of the addon's (big-endian 16-bit words, end-around carry), so a
 * test that checks the addon's checksums does not use the code under test.
 */
export function sum16(b: Uint8Array, s = 0): number {
  let i = 0;
  for (; i + 1 < b.length; i += 2) s += (b[i] << 8) | b[i + 1];
  if (i < b.length) s += b[i] << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}
