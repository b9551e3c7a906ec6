/*
 * NPTv6 (RFC 6296): stateless, checksum-neutral translation between a network's
 * inside /64 (a ULA prefix) and the /64 it appears as outside the uplink.
 *
 * Why NPTv6 and not NAT66: the mapping is 1:1 and stateless, so there is no
 * session table to fill, expire or exhaust, inbound connections work as in routed
 * mode (a VM is reachable at its outside address), and it is checksum-neutral:
 * the prefix is swapped and one 16-bit word of the interface identifier is
 * adjusted so that the one's-complement sum of the address is unchanged. So no
 * TCP, UDP or ICMPv6 checksum changes, a partial checksum (virtio_net_hdr: GSO
 * super-frames, checksum offload) stays right, and a quoted packet inside an
 * ICMPv6 error can be mapped without touching the error's checksum either.
 * The price: the upstream must route the outside prefix to the uplink's address,
 * as for a routed network (README "IPv6 routing").
 *
 * The adjusted word is the first word of the interface identifier (bits 64-127)
 * that is not 0xffff (RFC 6296 3.5 for prefixes longer than /48); an
 * identifier of all 0xffff words cannot be translated (false). A result of
 * 0xffff is written 0x0000 (the same value in one's complement), so that the way
 * back picks the same word.
 */
import { read16, write16 } from '@vswitch/switch';

/** One network's mapping: inside /64 <-> outside /64. */
export class Npt6 {
  readonly inside: Uint8Array;
  readonly outside: Uint8Array;
  /** One's-complement sum(inside prefix) - sum(outside prefix), added outbound, subtracted inbound. */
  readonly #adj: number;

  constructor(inside: Uint8Array, outside: Uint8Array) {
    this.inside = inside.slice(0, 8);
    this.outside = outside.slice(0, 8);
    this.#adj = add(sum(this.inside), ~sum(this.outside) & 0xffff);
  }

  /** Maps the inside address at buf[a, a+16) to its outside address, in place; false: not translatable. */
  out(buf: Uint8Array, a: number): boolean {
    return this.#map(buf, a, this.outside, this.#adj);
  }

  /** Maps the outside address at buf[a, a+16) back to its inside address, in place. */
  in(buf: Uint8Array, a: number): boolean {
    return this.#map(buf, a, this.inside, ~this.#adj & 0xffff);
  }

  #map(buf: Uint8Array, a: number, prefix: Uint8Array, adj: number): boolean {
    let w = a + 8;
    while (w < a + 16 && read16(buf, w) === 0xffff) w += 2;
    if (w === a + 16) return false;
    for (let i = 0; i < 8; i++) buf[a + i] = prefix[i];
    const v = add(read16(buf, w), adj);
    write16(buf, w, v === 0xffff ? 0 : v);
    return true;
  }
}

/** One's-complement sum of the four 16-bit words of an 8-byte prefix. */
function sum(p: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < 8; i += 2) s = add(s, read16(p, i));
  return s;
}

/** One's-complement 16-bit addition. */
function add(a: number, b: number): number {
  const s = a + b;
  return (s & 0xffff) + (s >>> 16);
}
