/*
 * The IPv6 DNS servers a network announces (dns6.ts): the gateway's prefix address
 * by default when the gateway answers DNS, as IPv4's DHCP does; the operator's
 * list when given; none with `rdnss: []` or when nothing answers DNS on the gateway.
 */
import { formatIp6 } from '@vswitch/switch';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../config.js';
import { dhcp6ServerConfig } from './dhcp6.js';
import { dhcp6DnsOf, gatewayAnswersDns, rdnssOf } from './dns6.js';

const cfg = (router: string, ipv6: string) => parseConfig(
  `bridges:\n  br0: {}\nrouters:\n  r:\n${router}    networks:\n      n: { bridge: br0, vlan: 10, address: 10.0.10.1/24, ipv6: ${ipv6} }\n`, 'x.yaml',
).routers.r;

describe('IPv6 DNS defaults (RDNSS, DHCPv6 option 23)', () => {
  it('the gateway by default, when it answers DNS', () => {
    const rc = cfg('', '{ address: "fd00:10::1/64", mode: both }');
    expect(gatewayAnswersDns(rc)).toBe(true);
    const v = rc.networks.n.ipv6!;
    expect(rdnssOf(v, true)).toEqual(['fd00:10::1']);
    expect(dhcp6DnsOf(v, true)).toEqual(['fd00:10::1']);
    expect(dhcp6ServerConfig('n', v, 0x020000000001, true).dns!.map((a) => formatIp6(a))).toEqual(['fd00:10::1']);
  });

  it('none when the gateway does not answer DNS (dns.enabled false, no host uplink)', () => {
    const rc = cfg('    dns: { enabled: false }\n', '{ address: "fd00:10::1/64", mode: dhcpv6 }');
    expect(gatewayAnswersDns(rc)).toBe(false);
    expect(rdnssOf(rc.networks.n.ipv6!, false)).toEqual([]);
    expect(dhcp6DnsOf(rc.networks.n.ipv6!, false)).toEqual([]);
    // A host uplink's forwarder answers on the gateway even without the gateway DNS server.
    expect(gatewayAnswersDns(cfg('    dns: { enabled: false }\n    uplink: { kind: host }\n', '{ address: "fd00:10::1/64" }'))).toBe(true);
  });

  it("the operator's servers win; rdnss: [] announces none; dhcpv6.dns overrides the RA's", () => {
    const given = cfg('', '{ address: "fd00:10::1/64", ra: { rdnss: ["fd00:10::53"] } }').networks.n.ipv6!;
    expect(rdnssOf(given, true)).toEqual(['fd00:10::53']);
    expect(dhcp6DnsOf(given, true)).toEqual(['fd00:10::53']);
    const none = cfg('', '{ address: "fd00:10::1/64", mode: both, ra: { rdnss: [] } }').networks.n.ipv6!;
    expect(rdnssOf(none, true)).toEqual([]);
    expect(dhcp6DnsOf(none, true)).toEqual([]);
    const own = cfg('', '{ address: "fd00:10::1/64", mode: both, dhcpv6: { dns: ["fd00:10::99"] } }').networks.n.ipv6!;
    expect(rdnssOf(own, true)).toEqual(['fd00:10::1']);
    expect(dhcp6DnsOf(own, true)).toEqual(['fd00:10::99']);
  });
});
