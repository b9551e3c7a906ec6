/*
 * DHCPv6 clients in IPv6 "VMs" (namespaces whose NIC is a daemon TAP): ISC
 * `dhclient -6` and `dhcpcd -6`, each with a script that records what it was
 * given (and, for dhclient, applies the address: dhclient leaves that to its
 * script), plus a raw DHCPv6 message builder for the hostile cases (sent with
 * scapy from a VM's link-local address).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DhcpClient, type DhcpEvent } from './dhcp.js';
import { waitLinkLocal, type V6Vm } from './ipv6.js';
import { addNamespace, nsExec, nsname, q, sh, spawnTracked, tempDir } from './run.js';
import { PYTHON } from './scapy.js';
import { waitLink } from './vm.js';

export interface Dhcp6Vm extends V6Vm { dir: string }

/** A namespace with IPv6 on (no SLAAC: autoconf off) whose NIC is `tap`, with `mac` set before it comes up. */
export async function makeDhcp6Vm(name: string, tap: string, mac?: string): Promise<Dhcp6Vm> {
  await waitLink(tap);
  const ns = nsname(name);
  await addNamespace(ns);
  await sh(`ip link set ${q(tap)} netns ${q(ns)}`);
  await nsExec(ns, [
    'sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0',
    `sysctl -qw net.ipv6.conf.${tap}.disable_ipv6=0 net.ipv6.conf.${tap}.accept_ra=0 net.ipv6.conf.${tap}.autoconf=0`,
    `sysctl -qw net.ipv6.conf.${tap}.accept_dad=1 net.ipv6.conf.${tap}.addr_gen_mode=0`,
    ...(mac ? [`ip link set ${q(tap)} address ${mac}`] : []),
    `ip link set ${q(tap)} up`,
  ].join(' && '));
  const realMac = (await nsExec(ns, `cat /sys/class/net/${tap}/address`)).trim().toLowerCase();
  const vm: Dhcp6Vm = { name, ns, ifname: tap, mac: realMac, dir: tempDir(name) };
  await waitLinkLocal(vm);
  return vm;
}

const RECORD = (file: string, fields: [string, string][]): string =>
  `{\n${fields.map(([k, v]) => `  echo "${k}=${v}"`).join('\n')}\n  echo ---\n} >> "$(dirname "$0")/${file}"\n`;

const DHCLIENT6_SCRIPT = `#!/bin/sh
# ISC dhclient -6 script (test): apply the address as a /128, then record the environment.
case "$reason" in
  PREINIT6) ip link set dev "$interface" up ;;
  BOUND6|RENEW6|REBIND6|REBOOT6)
    if [ -n "$old_ip6_address" ] && [ "$old_ip6_address" != "$new_ip6_address" ]; then ip -6 addr del "$old_ip6_address/128" dev "$interface"; fi
    ip -6 addr replace "$new_ip6_address/128" dev "$interface" valid_lft "\${new_max_life:-forever}" preferred_lft "\${new_preferred_life:-forever}" ;;
  EXPIRE6|RELEASE6|STOP6) [ -n "$old_ip6_address" ] && ip -6 addr del "$old_ip6_address/128" dev "$interface" ;;
esac
${RECORD('dhclient6.env', [
  ['event', '$reason'], ['ip', '$new_ip6_address'], ['old_ip', '$old_ip6_address'], ['dns', '$new_dhcp6_name_servers'],
  ['domain', '$new_dhcp6_domain_search'], ['valid', '$new_max_life'], ['preferred', '$new_preferred_life'],
  ['serverid', '$new_dhcp6_server_id'],
])}
exit 0
`;

const DHCPCD6_SCRIPT = `#!/bin/sh
# dhcpcd script (test): record only; dhcpcd configures the interface itself.
${RECORD('dhcpcd6.env', [
  ['event', '$reason'], ['ip', '$new_dhcp6_ia_na1_ia_addr1'], ['dns', '$new_dhcp6_name_servers'],
  ['domain', '$new_dhcp6_domain_search'], ['valid', '$new_dhcp6_ia_na1_ia_addr1_vltime'],
])}
exit 0
`;

function writeScript(path: string, text: string): string {
  writeFileSync(path, text, { mode: 0o755 });
  return path;
}

/** Events recorded by a client's script (oldest first). */
export function events6(vm: Dhcp6Vm, file: 'dhclient6' | 'dhcpcd6'): DhcpEvent[] {
  let text: string;
  try { text = readFileSync(join(vm.dir, `${file}.env`), 'utf8'); } catch { return []; }
  const out: DhcpEvent[] = [];
  let cur: DhcpEvent = {};
  for (const line of text.split('\n')) {
    if (line === '---') { out.push(cur); cur = {}; continue; }
    const i = line.indexOf('=');
    if (i > 0) cur[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

/** A client whose events are read from the VM's dhclient6/dhcpcd6 file. */
class Client6 extends DhcpClient {
  constructor(readonly file: 'dhclient6' | 'dhcpcd6', vm: Dhcp6Vm, argv: string[]) {
    const base = events6(vm, file).length;
    super('dhclient', vm as never, spawnTracked('ip', ['netns', 'exec', vm.ns, ...argv]), base);
    this.base6 = base;
  }
  base6: number;
  override events(): DhcpEvent[] {
    return events6(this.vm as unknown as Dhcp6Vm, this.file).slice(this.base6);
  }
}

/** `confExtra`: more dhclient.conf statements, e.g. `send fqdn.fqdn "vm1";` (the Client FQDN option 39). */
export function dhclient6Argv(vm: Dhcp6Vm, extra: string[] = [], confExtra = ''): string[] {
  const conf = join(vm.dir, 'dhclient6.conf');
  writeFileSync(conf, `# dhclient.conf (test)\nrequest dhcp6.name-servers, dhcp6.domain-search;\ntimeout 60;\n${confExtra}\n`);
  const script = writeScript(join(vm.dir, 'dhclient6.sh'), DHCLIENT6_SCRIPT);
  return ['dhclient', '-6', '-d', '-v', ...extra, '-cf', conf, '-lf', join(vm.dir, 'dhclient6.leases'),
    '-pf', join(vm.dir, 'dhclient6.pid'), '-sf', script, vm.ifname];
}

/** ISC dhclient -6 in the foreground: stateful (IA_NA), or with `-S` stateless (Information-Request). */
export function dhclient6(vm: Dhcp6Vm, extra: string[] = [], confExtra = ''): DhcpClient {
  return new Client6('dhclient6', vm, dhclient6Argv(vm, extra, confExtra));
}

/** `dhclient -6 -r`: releases the lease of the running dhclient (its pid file) and stops it. */
export async function dhclient6Release(vm: Dhcp6Vm): Promise<void> {
  await nsExec(vm.ns, dhclient6Argv(vm, ['-r']).filter((a) => a !== '-d').map(q).join(' ') + ' 2>&1', { timeoutMs: 20_000 });
}

/** dhcpcd, IPv6 only, in the foreground (-B), in a private mount namespace (its own DUID, run dir). SIGUSR1 renews. */
export function dhcpcd6(vm: Dhcp6Vm): DhcpClient {
  const conf = join(vm.dir, 'dhcpcd6.conf');
  writeFileSync(conf, '# dhcpcd.conf (test)\noption dhcp6_name_servers, dhcp6_domain_search\n');
  const script = writeScript(join(vm.dir, 'dhcpcd6.sh'), DHCPCD6_SCRIPT);
  const run = join(vm.dir, 'dhcpcd-run');
  const db = join(vm.dir, 'dhcpcd-db');
  mkdirSync(run, { recursive: true });
  mkdirSync(db, { recursive: true });
  const cmd = ['dhcpcd', '-6', '-B', '-t', '30', '-f', conf, '-c', script, vm.ifname];
  return new Client6('dhcpcd6', vm, [
    'unshare', '-m', '--propagation', 'private', 'sh', '-c',
    `mount --bind ${q(run)} /run && mount --bind ${q(db)} /var/lib/dhcpcd && exec ${cmd.map(q).join(' ')}`,
  ]);
}

/** A DHCPv6 client message in hex: type, xid, Client ID, Server ID, IA_NA (iaid, address), Elapsed Time. */
export function dhcp6Hex(m: { type: number; duid: string; serverDuid?: string; iaid: number; address?: string }): string {
  const opt = (code: number, hex: string): string => code.toString(16).padStart(4, '0') + (hex.length / 2).toString(16).padStart(4, '0') + hex;
  let ia = m.iaid.toString(16).padStart(8, '0') + '00000000' + '00000000';
  if (m.address !== undefined) ia += opt(5, expand6(m.address) + '00000000' + '00000000');
  return m.type.toString(16).padStart(2, '0') + '1234ab' + opt(1, m.duid) + (m.serverDuid ? opt(2, m.serverDuid) : '') +
    opt(8, '0000') + opt(3, ia);
}

/** "fd00::1" -> 32 hex digits. */
export function expand6(a: string): string {
  const [head, tail] = a.includes('::') ? a.split('::') : [a, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...new Array(8 - h.length - t.length).fill('0'), ...t];
  return groups.map((g) => g.padStart(4, '0')).join('');
}

/** Sends DHCPv6 payloads (hex) from the VM's link-local address to ff02::1:2, UDP 546 -> 547, with scapy. */
export async function sendDhcp6(vm: Dhcp6Vm, payloads: string[]): Promise<void> {
  const ll = JSON.parse(await nsExec(vm.ns, `ip -6 -j addr show dev ${q(vm.ifname)} scope link`))[0].addr_info[0].local as string;
  const script = [
    'from scapy.all import Ether, IPv6, UDP, Raw, sendp, conf',
    'conf.verb = 0',
    `frames = [Ether(src='${vm.mac}', dst='33:33:00:01:00:02')/IPv6(src='${ll}', dst='ff02::1:2')/UDP(sport=546, dport=547)/Raw(load=bytes.fromhex(p)) for p in ${JSON.stringify(payloads)}]`,
    `sendp(frames, iface='${vm.ifname}', inter=0.05)`,
  ].join('\n');
  await nsExec(vm.ns, `${PYTHON} -c ${q(script)}`, { timeoutMs: 60_000 });
}
