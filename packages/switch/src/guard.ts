/*
 * Tenant protection on ingress, per port: storm control and anti-spoofing.
 *
 * Storm control: a token bucket of `pps` tokens (one second's worth is the burst)
 * for the frames a port sends that the bridge floods (group destinations and
 * unknown unicast). It is refilled lazily from the bridge clock (`now` of the
 * frame's batch), so it needs no timer and allocates nothing; a flooded frame
 * without a token is dropped ('storm_control'). Known unicast is never limited.
 *
 * Anti-spoofing (checked after VLAN admission, before learning, so a refused frame
 * teaches the MAC table nothing):
 * - DHCP guard: IPv4 UDP 67 -> 68 (a DHCP server's reply), untagged or inside one
 *   802.1Q tag, is dropped ('dhcp_guard'). Only the router's own network port,
 *   which is never guarded, answers DHCP.
 * - IP source guard: an IPv4 frame's (source MAC, source IP) must be a binding of
 *   the port ('ip_source_guard'); an ARP frame's sender (SHA, SPA) must be a binding
 *   and SHA must be the frame's source MAC ('arp_spoof'). Allowed without a
 *   binding, so that clients can get a lease: IPv4 from 0.0.0.0 to UDP 67 from 68
 *   (DHCP client), and ARP with sender IP 0.0.0.0 (RFC 5227 probes) whose SHA is
 *   the source MAC. Other ethertypes (IPv6 included) are not checked.
 * Bindings are ip -> mac: leases the router's DHCP server ACKed to a client on the
 * port (added on ACK, removed on release, decline or expiry by the daemon) and the
 * port's configured ones. The check is one Map lookup per IPv4/ARP frame on a
 * guarded port; an unguarded port pays one boolean test.
 */
import { Drop } from './drop.js';
import { readMac } from './wire/ethernet.js';

export const ADMIT_GUARD = -1;

export class PortGuard {
  /** Either guard on: the only field the fast path reads for an unguarded port. */
  active = false;
  dhcp = false;
  ipSource = false;
  /** Leased bindings: ip -> mac. */
  readonly leased = new Map<number, number>();
  /** Configured bindings: ip -> mac. */
  readonly configured = new Map<number, number>();

  set(opts: { dhcp?: boolean; ipSource?: boolean }): void {
    this.dhcp = opts.dhcp === true;
    this.ipSource = opts.ipSource === true;
    this.active = this.dhcp || this.ipSource;
  }

  bound(ip: number, mac: number): boolean {
    return this.leased.get(ip) === mac || this.configured.get(ip) === mac;
  }
}

/** Storm-control state of a port: a token bucket in frames. */
export class StormBucket {
  /** 0 = off. */
  pps = 0;
  tokens = 0;
  last = 0;

  set(pps: number, now: number): void {
    this.pps = pps > 0 ? pps : 0;
    this.tokens = this.pps;
    this.last = now;
  }

  /** Takes a token for one flooded frame; false when the bucket is empty. */
  take(now: number): boolean {
    const dt = now - this.last;
    if (dt > 0) {
      this.last = now;
      const t = this.tokens + (dt * this.pps) / 1000;
      this.tokens = t > this.pps ? this.pps : t;
    }
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    return false;
  }
}

const rd16 = (b: Uint8Array, o: number): number => (b[o] << 8) | b[o + 1];
const rd32 = (b: Uint8Array, o: number): number => ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;

/**
 * The guards' verdict on a frame already admitted: ADMIT_GUARD or a Drop index.
 * `tagLen` is 4 when the frame carries one 802.1Q tag (ingress's meta.tagLen),
 * `src` its source MAC.
 */
export function guardCheck(g: PortGuard, buf: Uint8Array, off: number, len: number, tagLen: number, src: number): number {
  const l3 = off + 14 + tagLen;
  const end = off + len;
  if (l3 > end) return ADMIT_GUARD;
  const type = rd16(buf, l3 - 2);
  if (type === 0x0800) {
    if (l3 + 20 > end || buf[l3] >> 4 !== 4) return g.ipSource ? Drop.ip_source_guard : ADMIT_GUARD;
    const ihl = (buf[l3] & 0x0f) * 4;
    const proto = buf[l3 + 9];
    const firstFragment = (rd16(buf, l3 + 6) & 0x1fff) === 0;
    const l4 = l3 + ihl;
    let sport = -1;
    let dport = -1;
    if (proto === 17 && firstFragment && ihl >= 20 && l4 + 4 <= end) {
      sport = rd16(buf, l4);
      dport = rd16(buf, l4 + 2);
    }
    if (g.dhcp && sport === 67 && dport === 68) return Drop.dhcp_guard;
    if (g.ipSource) {
      const sip = rd32(buf, l3 + 12);
      if (sip === 0) return sport === 68 && dport === 67 ? ADMIT_GUARD : Drop.ip_source_guard;
      if (!g.bound(sip, src)) return Drop.ip_source_guard;
    }
    return ADMIT_GUARD;
  }
  if (type === 0x0806 && g.ipSource) {
    // Ethernet/IPv4 ARP: htype 1, ptype 0x0800, hlen 6, plen 4; sha at 8, spa at 14.
    if (l3 + 28 > end || rd16(buf, l3 + 2) !== 0x0800 || buf[l3 + 4] !== 6 || buf[l3 + 5] !== 4) return Drop.arp_spoof;
    const sha = readMac(buf, l3 + 8);
    if (sha !== src) return Drop.arp_spoof;
    const spa = rd32(buf, l3 + 14);
    if (spa === 0) return ADMIT_GUARD;
    return g.bound(spa, sha) ? ADMIT_GUARD : Drop.arp_spoof;
  }
  return ADMIT_GUARD;
}
