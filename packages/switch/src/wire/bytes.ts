/*
 * Big-endian 16- and 32-bit fields over (buf, off): the byte order of every
 * header on the wire here but the virtio-net header (little-endian, vnet.ts).
 * The primitives the views build on; outside wire/, callers name the field
 * (`read16(buf, ip + IP4.LEN)`, or an accessor such as `ip4TotalLen`) rather
 * than its position.
 *
 * Module bindings on the per-frame path: V8 checks an imported or exported
 * binding at every use, and reads an exported table's property through it (about
 * 1 ns each; in a loop that reads its bound every turn, far more), while a
 * module-local constant costs what a literal does (measured on Node 20). So each
 * view keeps its offsets table module-local and exports it under its public name
 * (`const F = {...}; export const IP4 = F`), and takes the functions it calls
 * from other modules into module constants (`const { read16 } = bytes`). Callers
 * on the per-frame path do the same with the views' functions (ingress.ts,
 * egress.ts, nat's host/tcp.ts).
 */

export const read16 = (buf: Uint8Array, off: number): number => (buf[off] << 8) | buf[off + 1];
export const read32 = (buf: Uint8Array, off: number): number =>
  ((buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3]) >>> 0;
/**
 * The same 32 bits as a signed int32 (an IPv4 address compared for equality only):
 * unlike read32's unsigned form it never needs a heap number.
 */
export const readI32 = (buf: Uint8Array, off: number): number =>
  (buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3];

export function write16(buf: Uint8Array, off: number, v: number): void {
  buf[off] = (v >>> 8) & 0xff;
  buf[off + 1] = v & 0xff;
}

export function write32(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v >>> 24;
  buf[off + 1] = (v >>> 16) & 0xff;
  buf[off + 2] = (v >>> 8) & 0xff;
  buf[off + 3] = v & 0xff;
}
