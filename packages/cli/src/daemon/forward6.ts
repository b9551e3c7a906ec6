/*
 * What a port forward to a VM's IPv6 address means per uplink kind, and when one
 * is refused (config.ts for the file's `forwards`, routers.ts for `vswitch nat
 * forward add`):
 *
 * - uplink kind host: the host NAT listens on `uplink.listen` and opens each flow
 *   to the VM's IPv6 address (host/nat.ts). The listener must be on IPv6 (`::`
 *   or an IPv6 address of the host: an IPv4 listener has no IPv6 client, and an
 *   IPv4 client could not be answered by the VM over IPv6), and the target inside
 *   one of the router's IPv6 prefixes.
 * - an interface uplink with `uplink.ipv6`: nothing to forward. A routed network's
 *   VMs are reachable at their own addresses, an NPTv6 network's at their outside
 *   addresses (the stateless 1:1 mapping is its own "forward" for every port);
 *   what reaches them is the upstream's firewall's business, not a NAT rule's.
 *   So the forward is refused, saying so.
 */
import { ip6InPrefix, parseCidr6, parseIp6 } from '@vswitch/switch';
import type { RouterConfig } from '../config.js';

type ForwardRouter = Pick<RouterConfig, 'uplink' | 'networks'>;

/** Why a forward to `inside6` (an IPv6 address) cannot be, for this router; undefined: it can. */
export function forward6Problem(rc: ForwardRouter, inside6: string): string | undefined {
  const a = parseIp6(inside6);
  if (a === undefined) return `${inside6} is not an IPv6 address`;
  const up = rc.uplink;
  if (up === undefined) return 'port forwards need an uplink';
  if (up.kind !== 'host') {
    return 'an IPv6 target needs uplink kind host: an interface uplink routes the VMs\' IPv6 prefixes (or maps them by NPTv6), ' +
      'so a VM is reachable at its own (or its NPTv6 outside) address on every port, without a forward';
  }
  const listen = up.listen ?? '0.0.0.0';
  if (parseIp6(listen) === undefined) return `an IPv6 target needs uplink.listen on IPv6 ("::", or an IPv6 address of the host), not ${listen}`;
  const inside = Object.values(rc.networks).some((n) => {
    const c = n.ipv6 === undefined ? undefined : parseCidr6(n.ipv6.address);
    return c !== undefined && ip6InPrefix(a, 0, c.addr, 0, c.prefix);
  });
  return inside ? undefined : `${inside6} is not inside any IPv6 prefix of the router's networks`;
}
