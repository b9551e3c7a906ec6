/*
 * virtio-net header view (struct virtio_net_hdr, virtio 1.x 5.1.6): the 10 bytes a
 * frame may travel with, right before its first byte, describing work left for
 * whoever sends it on: a GSO super-frame of up to 64 KB to cut into segments, or
 * a partial L4 checksum to complete. Little-endian fields (the only little-endian
 * header here), over (buf, h) where h is the header's first byte:
 *   flags        NEEDS_CSUM: the checksum at csum_start+csum_offset holds only the
 *                pseudo-header sum; sum from csum_start to the end to complete it
 *   gso_type     NONE, TCPV4, UDP (UFO), TCPV6, UDP_L4, with ECN or'd in
 *   hdr_len      bytes of Ethernet+IP+L4 headers (0: unknown)
 *   gso_size     payload bytes per segment
 *   csum_start   where the checksummed bytes start, from the Ethernet header
 *   csum_offset  where the checksum field is, from csum_start
 * An all-zero header is a complete frame. The length is the device's (netdev
 * configures it and owns the constant); the layout and everything that reads or
 * writes these bytes are here, so no other module indexes them.
 */
import { VNET_F_NEEDS_CSUM, VNET_HDR_LEN } from '@vswitch/netdev/vnet';

export { VNET_F_NEEDS_CSUM, VNET_HDR_LEN };

// Module constants, not the exported table and the import, are what the code
// reads (bytes.ts says why): every frame of an offload port passes vnetWork on
// ingress (setOffloadMeta 4.3 ns through them, 1.6 so, as before this view).
const F = { FLAGS: 0, GSO_TYPE: 1, HDR_LEN: 2, GSO_SIZE: 4, CSUM_START: 6, CSUM_OFFSET: 8 } as const;
const NEEDS_CSUM = VNET_F_NEEDS_CSUM;
const SIZE = VNET_HDR_LEN;
export const VNET = F;

/** gso_type values; ECN is a flag or'd into the others. */
export const VNET_GSO = { NONE: 0, TCPV4: 1, UDP: 3, TCPV6: 4, UDP_L4: 5, ECN: 0x80 } as const;

const le16 = (buf: Uint8Array, off: number): number => buf[off] | (buf[off + 1] << 8);

function writeLe16(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v & 0xff;
  buf[off + 1] = (v >>> 8) & 0xff;
}

export const vnetFlags = (buf: Uint8Array, h: number): number => buf[h + F.FLAGS];
export const vnetGsoType = (buf: Uint8Array, h: number): number => buf[h + F.GSO_TYPE];
export const vnetHdrLen = (buf: Uint8Array, h: number): number => le16(buf, h + F.HDR_LEN);
export const vnetGsoSize = (buf: Uint8Array, h: number): number => le16(buf, h + F.GSO_SIZE);
export const vnetCsumStart = (buf: Uint8Array, h: number): number => le16(buf, h + F.CSUM_START);
export const vnetCsumOffset = (buf: Uint8Array, h: number): number => le16(buf, h + F.CSUM_OFFSET);
export const vnetNeedsCsum = (buf: Uint8Array, h: number): boolean => (buf[h + F.FLAGS] & NEEDS_CSUM) !== 0;

/** The header asks for work: a partial checksum or GSO (else the frame is complete). */
export function vnetWork(buf: Uint8Array, h: number): boolean {
  return ((buf[h + F.FLAGS] & NEEDS_CSUM) | buf[h + F.GSO_TYPE]) !== 0;
}

/** The header asks for GSO (segmentation). */
export function vnetGso(buf: Uint8Array, h: number): boolean {
  return buf[h + F.GSO_TYPE] !== 0;
}

/** Clears NEEDS_CSUM (the checksum was completed). */
export function vnetClearNeedsCsum(buf: Uint8Array, h: number): void {
  buf[h + F.FLAGS] &= ~NEEDS_CSUM;
}

/** Writes every field of the header at buf[h, h+VNET_HDR_LEN). */
export function writeVnet(
  buf: Uint8Array, h: number, flags: number, gsoType: number, hdrLen: number, gsoSize: number, csumStart: number, csumOffset: number,
): void {
  buf[h + F.FLAGS] = flags;
  buf[h + F.GSO_TYPE] = gsoType;
  writeLe16(buf, h + F.HDR_LEN, hdrLen);
  writeLe16(buf, h + F.GSO_SIZE, gsoSize);
  writeLe16(buf, h + F.CSUM_START, csumStart);
  writeLe16(buf, h + F.CSUM_OFFSET, csumOffset);
}

/**
 * Copies the header at src[at, at+VNET_HDR_LEN) to s[0, VNET_HDR_LEN), moving the
 * offsets that count from the frame's first byte (hdr_len when set, csum_start
 * with NEEDS_CSUM) by `delta` bytes, never below 0: a tag inserted before them
 * (+4) or stripped (-4). The source is not written (a flood sends it elsewhere too).
 */
export function copyVnetHeader(s: Uint8Array, src: Uint8Array, at: number, delta: number): void {
  for (let i = 0; i < SIZE; i++) s[i] = src[at + i];
  if (delta === 0) return;
  const hdrLen = le16(s, F.HDR_LEN);
  if (hdrLen !== 0) writeLe16(s, F.HDR_LEN, Math.max(0, hdrLen + delta));
  if ((s[F.FLAGS] & NEEDS_CSUM) !== 0) writeLe16(s, F.CSUM_START, Math.max(0, le16(s, F.CSUM_START) + delta));
}
