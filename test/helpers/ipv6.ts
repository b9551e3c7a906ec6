/*
 * IPv6 "VMs": namespaces with IPv6 on whose NIC is a TAP the daemon owns, as a
 * guest configures itself (the kernel's SLAAC), and the readers the IPv6 tests
 * share: addresses (ip -j), rdisc6 (ndisc6), ping -6 (busybox).
 */
import { addNamespace, nsExec, nsExecR, nsname, q, sh, waitFor } from './run.js';
import { waitLink } from './vm.js';

export interface V6Vm { name: string; ns: string; ifname: string; mac: string }

/**
 * A namespace with IPv6 on whose NIC is the TAP `tap`, as a guest: SLAAC from RAs
 * (accept_ra 2, autoconf), stable EUI-64 addresses (no temporary ones), DAD on.
 */
export async function makeV6Vm(name: string, tap: string): Promise<V6Vm> {
  await waitLink(tap);
  const ns = nsname(name);
  await addNamespace(ns);
  await sh(`ip link set ${q(tap)} netns ${q(ns)}`);
  await nsExec(ns, [
    'sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0',
    `sysctl -qw net.ipv6.conf.${tap}.disable_ipv6=0 net.ipv6.conf.${tap}.accept_ra=2 net.ipv6.conf.${tap}.autoconf=1`,
    `sysctl -qw net.ipv6.conf.${tap}.use_tempaddr=0 net.ipv6.conf.${tap}.accept_dad=1 net.ipv6.conf.${tap}.addr_gen_mode=0`,
    `ip link set ${q(tap)} up`,
  ].join(' && '));
  const mac = (await nsExec(ns, `cat /sys/class/net/${tap}/address`)).trim().toLowerCase();
  return { name, ns, ifname: tap, mac };
}

/** The modified EUI-64 interface identifier of a MAC, as the last 64 bits of an address ("5054:ff:fe12:3456"). */
export function eui64(mac: string): string {
  const b = mac.split(':').map((x) => parseInt(x, 16));
  b[0] ^= 2;
  const w = [(b[0] << 8) | b[1], (b[2] << 8) | 0xff, 0xfe00 | b[3], (b[4] << 8) | b[5]];
  return w.map((x) => x.toString(16)).join(':');
}

/** An IPv6 address in the kernel's (RFC 5952) text form, as the WHATWG URL serializer writes it. */
export function canon(a: string): string {
  return new URL(`http://[${a}]/`).hostname.slice(1, -1);
}

/** The SLAAC address of `mac` in the /64 whose first 48 bits are `base` ("fd00:20:10"). */
export function slaacAddr(base: string, mac: string): string {
  return canon(`${base}:0:${eui64(mac)}`);
}

/** `ip -6 -j addr show dev IF` entries (scope global unless `all`). */
export async function addrs6(vm: V6Vm, all = false): Promise<{ local: string; prefixlen: number; dynamic?: boolean; deprecated?: boolean; tentative?: boolean; dadfailed?: boolean; preferred_life_time?: number; scope: string }[]> {
  const j = JSON.parse(await nsExec(vm.ns, `ip -6 -j addr show dev ${q(vm.ifname)}`)) as any[];
  return (j[0]?.addr_info ?? []).filter((a: any) => a.family === 'inet6' && (all || a.scope === 'global'));
}

/** Waits for the SLAAC address `want` to be configured (not tentative). */
export async function waitAddr(vm: V6Vm, want: string, timeoutMs = 15_000): Promise<void> {
  await waitFor(`${vm.name} has ${want}`, async () => (await addrs6(vm)).some((a) => a.local === want && !a.tentative), { timeoutMs, intervalMs: 200 });
}

/** Waits for the link-local address to leave DAD (tentative), so ping -6 and rdisc6 can use it. */
export async function waitLinkLocal(vm: V6Vm, timeoutMs = 10_000): Promise<void> {
  await waitFor(`${vm.name} link-local ready`, async () => (await addrs6(vm, true)).some((a) => a.scope === 'link' && !a.tentative), { timeoutMs, intervalMs: 100 });
}

export async function rdisc6(vm: V6Vm): Promise<string> {
  return (await nsExecR(vm.ns, `rdisc6 -1 -w 1500 -r 3 ${q(vm.ifname)}`, { timeoutMs: 20_000 })).stdout;
}

export async function ping6(vm: V6Vm, to: string, count = 3): Promise<boolean> {
  const r = await nsExecR(vm.ns, `busybox ping -6 -c ${count} -i 0.2 -W 2 -w ${2 + count} ${q(to)}`, { timeoutMs: 20_000 });
  return r.code === 0 && /bytes from/.test(r.stdout);
}

