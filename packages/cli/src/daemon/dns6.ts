/*
 * Which IPv6 DNS servers a router network tells its guests: the RA's RDNSS
 * (RFC 8106) and the DHCPv6 DNS Recursive Name Server option (23).
 *
 * The model is IPv4's DHCP: when the gateway answers DNS itself (the router's
 * gateway DNS, `dns.enabled`, the default; or a host uplink's forwarder) and the
 * operator named no server, the guests are given the gateway, here its prefix
 * address (`ipv6.address`; never its link-local one, which a guest could only use
 * with a zone index and the host NAT's forwarder does not serve). `ra.rdnss: []`
 * says "announce none"; `ipv6.dhcpv6.dns` defaults to what the RA announces.
 */
import type { RouterConfig, RouterNetworkConfig } from '../config.js';

type Ipv6Config = NonNullable<RouterNetworkConfig['ipv6']>;

/** Does the router's gateway answer DNS queries (its own server, or the host uplink's forwarder)? */
export const gatewayAnswersDns = (rc: Pick<RouterConfig, 'dns' | 'uplink'>): boolean => rc.dns.enabled || rc.uplink?.kind === 'host';

/** The RDNSS addresses of a network's RA: the configured ones, else the gateway's address when it answers DNS. */
export function rdnssOf(v: Ipv6Config, answersDns: boolean): string[] {
  if (v.ra.rdnss !== undefined) return v.ra.rdnss;
  return answersDns ? [v.address.split('/')[0]] : [];
}

/** The DHCPv6 DNS servers (option 23): `dhcpv6.dns`, else the RA's. */
export function dhcp6DnsOf(v: Ipv6Config, answersDns: boolean): string[] {
  return v.dhcpv6?.dns ?? rdnssOf(v, answersDns);
}
