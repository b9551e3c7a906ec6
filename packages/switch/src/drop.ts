/*
 * Why a frame was dropped: a closed set. Each reason is an index into a port's
 * drop counters and, as its name, the `reason` label of vswitch_port_drops_total.
 * Keep README.md ("Drop reasons") in step when adding one.
 */
export const DROP_REASONS = [
  'malformed',             // shorter than an Ethernet header, or a truncated 802.1Q tag
  'bad_src_mac',           // source MAC is multicast/broadcast or all zeros
  'link_local',            // 01:80:C2:00:00:0X control frame a bridge must not forward
  'vlan_tagged_on_access', // tagged (or double-tagged) frame on a port with no tagged VLANs
  'vlan_not_allowed',      // VID not a member of the ingress port
  'vlan_no_pvid',          // untagged/priority-tagged frame on a port without a PVID
  'vlan_reserved',         // VID 4095
  'port_mac_limit',        // new source MAC on a port at its MAC limit
  'static_mac_conflict',   // source MAC statically bound to another port
  'dst_on_ingress',        // destination learned on the port the frame came from
  'egress_filtered',       // destination port is no longer a member of the VLAN
  'port_down',             // destination port is down
  'tx_error',              // the kernel refused the write (queue full, device gone), or a frame could not be completed
  'link_down',             // the device's link is down (a TAP whose guest side is not up yet: EIO; ENETDOWN)
  'storm_control',         // flooded frame (group or unknown unicast) over the port's stormControl pps
  'dhcp_guard',            // DHCP server message (UDP 67 -> 68) from a port with the DHCP guard
  'ip_source_guard',       // IPv4 whose source MAC/IP is not bound to the port (leased or configured)
  'arp_spoof',             // ARP whose sender MAC/IP is not bound to the port, or whose SHA is not the source MAC
  'bound_mac_conflict',    // source MAC held by a binding (DHCP lease, configured) of another live guarded port
  'bpdu_guard',            // STP BPDU on a port with the BPDU guard, and every frame it sends while shut for it (loop.ts)
  'bpdu_invalid',          // frame to the bridge group address 01:80:C2:00:00:00 on a BPDU-guarded port that is no BPDU
  'loop_blocked',          // frame from a port blocked by MAC-flap loop detection (loop.ts)
  'port_shut',             // destination port shut by loop protection (BPDU guard or loop detection)
  'ingress_rate',          // over the port's ingress policer (police.ts)
  'egress_rate',           // over the port's egress rate with its shaping queue full (police.ts)
  'ra_guard',              // IPv6 Router Advertisement or Redirect (or a header chain that could hide one) from a port with the RA guard
  'dhcpv6_guard',          // DHCPv6 server or relay message (UDP from port 547) from a port with the DHCPv6 guard
  'ipv6_source_guard',     // IPv6 from an address another live port owns (first come, first served), from :: but DAD/RS/MLD, or over the port's address limit
  'nd_spoof',              // Neighbor Advertisement for an address another port owns, or ND whose link-layer option is not the source MAC
  'tunnel_mtu',            // frame too large for its tunnel: VXLAN's outer packet would exceed the underlay MTU (DF: never fragmented)
] as const;

export type DropReason = (typeof DROP_REASONS)[number];

export const Drop: { readonly [K in DropReason]: number } = Object.freeze(
  Object.fromEntries(DROP_REASONS.map((r, i) => [r, i])) as { [K in DropReason]: number },
);

export const DROP_REASON_COUNT = DROP_REASONS.length;
