/*
 * The DHCPv6 servers' metrics (metrics.ts registers them with its helpers): IPv6
 * series of their own beside the IPv4 `vswitch_dhcp_*` ones, so that the IPv4
 * series keep their labels and a dashboard adds the two where it wants a total.
 */
import { DHCP6_MESSAGE_TYPES, DHCP6_REASONS, DHCP6_STATUSES, type RouterNetwork } from '@vswitch/nat';
import type { ManagedRouter } from './routers.js';

type Labels = Record<string, string | number>;
type Emit = (labels: Labels, value: number) => void;
type RouterCounter = (name: string, help: string, labelNames: readonly string[], fill: (mr: ManagedRouter, emit: Emit) => void) => void;
type Gauge = (name: string, help: string, labelNames: readonly string[], fill: (emit: Emit) => void) => void;
type NetsOf = (mr: ManagedRouter) => { net: RouterNetwork; labels: Labels }[];
type Networks = () => { net: RouterNetwork; labels: Labels }[];

export function registerDhcp6Metrics(routerCounter: RouterCounter, gauge: Gauge, netsOf: NetsOf, networks: Networks, netLabels: readonly string[]): void {
  const each = (mr: ManagedRouter, f: (s: NonNullable<RouterNetwork['opts']['dhcp6']>, labels: Labels) => void): void => {
    for (const { net, labels } of netsOf(mr)) if (net.opts.dhcp6 !== undefined) f(net.opts.dhcp6, labels);
  };
  routerCounter('vswitch_dhcp6_messages_total',
    `DHCPv6 messages by type: received (solicit, request, confirm, renew, rebind, release, decline, information_request) and sent (advertise, reply).`,
    [...netLabels, 'type'], (mr, emit) => each(mr, (s, labels) => {
      for (const type of DHCP6_MESSAGE_TYPES) emit({ ...labels, type }, s.counters.messages[type]);
    }));
  routerCounter('vswitch_dhcp6_statuses_total',
    'DHCPv6 status codes sent, by status (no_addrs_avail: the pool is exhausted; no_binding; not_on_link).',
    [...netLabels, 'status'], (mr, emit) => each(mr, (s, labels) => {
      for (const status of DHCP6_STATUSES) emit({ ...labels, status }, s.counters.statuses[status]);
    }));
  routerCounter('vswitch_dhcp6_dropped_total',
    `DHCPv6 messages not answered, by reason (${DHCP6_REASONS.join(', ')}).`,
    [...netLabels, 'reason'], (mr, emit) => each(mr, (s, labels) => {
      for (const reason of DHCP6_REASONS) emit({ ...labels, reason }, s.counters.dropped[reason]);
    }));
  routerCounter('vswitch_dhcp6_lease_writes_total', 'DHCPv6 lease-file writes (group commit, as vswitch_dhcp_lease_writes_total).',
    netLabels, (mr, emit) => each(mr, (s, labels) => emit(labels, s.leaseWrites)));
  gauge('vswitch_dhcp6_active_leases', 'Bound DHCPv6 leases that have not expired.', netLabels, (emit) => {
    const now = Date.now();
    for (const { net, labels } of networks()) {
      const s = net.opts.dhcp6;
      if (s !== undefined) emit(labels, s.leases(now).filter((l) => l.state === 'bound').length);
    }
  });
  gauge('vswitch_dhcp6_pool_size', 'Addresses in the network\'s DHCPv6 pool (reservations not included).', netLabels, (emit) => {
    for (const { net, labels } of networks()) if (net.opts.dhcp6 !== undefined) emit(labels, net.opts.dhcp6.poolSize);
  });
}
