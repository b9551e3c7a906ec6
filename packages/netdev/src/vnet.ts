/*
 * The virtio_net_hdr as this addon's devices speak it, in one place for every
 * package: its length (struct virtio_net_hdr without num_buffers, the layout of
 * PACKET_VNET_HDR and of a TAP after TUNSETVNETHDRSZ 10; ND_VNET_HDR_LEN in
 * native/netdev.h, which must agree) and the flag the addon checks before a
 * frame may go to a device without the header.
 *
 * A separate entry point (`@vswitch/netdev/vnet`) that loads no native code, so
 * the switch's wire views (packages/switch/src/wire/vnet.ts, which hold the
 * field layout and the helpers) build on it without opening the addon. The
 * dependency goes from switch down to netdev, never up.
 */

/** Bytes of the virtio_net_hdr in front of a frame (ring frames, sendVnet/send2Vnet). */
export const VNET_HDR_LEN = 10;
/** virtio_net_hdr.flags: the L4 checksum is partial (csum_start/csum_offset). */
export const VNET_F_NEEDS_CSUM = 1;
