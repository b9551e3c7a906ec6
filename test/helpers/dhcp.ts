/*
 * DHCP clients in "VMs" for the integration tests: a namespace holding a TAP of
 * the daemon with no static address, and busybox udhcpc, ISC dhclient or dhcpcd
 * run inside it. Every client keeps its files (scripts, lease/pid files, the
 * events its script saw) in the VM's own temp dir, never in the system's
 * defaults, and never touches /etc/resolv.conf:
 *
 *   udhcpc   busybox udhcpc -f -i IF -s DIR/udhcpc.sh -O mtu -O staticroutes
 *            [-q -n -t N -T 1] [-r IP]        (-q -n: one shot, exit 1 without a lease)
 *   dhclient dhclient -4 -d -v -1 -cf DIR/dhclient.conf -lf DIR/dhclient.leases
 *            -pf DIR/dhclient.pid -sf DIR/dhclient.sh IF
 *   dhcpcd   dhcpcd -4 -B -L -t 20 -f DIR/dhcpcd.conf -c DIR/dhcpcd.sh [-1] IF, run in a
 *            private mount namespace (unshare -m) with DIR/dhcpcd-run bound on /run
 *            and DIR/dhcpcd-db on /var/lib/dhcpcd: dhcpcd has no flags for its
 *            run and database directories (both compiled in).
 *
 * The scripts append what the client received (one `key=value` block per event,
 * ended by `---`) to DIR/<client>.env. udhcpc's and dhclient's scripts first apply
 * the address and the default route (they have no default script here), so an
 * event in the file means the VM is configured; dhcpcd configures the interface
 * itself before it runs its script, which only records.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Daemon } from './daemon.js';
import { MAIN_JS, addNamespace, nsExec, nsExecR, nsname, q, sh, sleep, spawnTracked, tempDir, waitFor } from './run.js';
import { quietNamespace, waitLink } from './vm.js';

/** A namespace whose NIC is a daemon TAP, without an address until a DHCP client gets one. */
export interface DhcpVm {
  name: string;
  ns: string;
  /** The TAP's name (the same inside the namespace). */
  ifname: string;
  mac: string;
  /** Per-VM temp dir: client scripts, lease/pid files, recorded events. */
  dir: string;
}

/** One event a client script saw: its environment, reduced to the fields below. */
export type DhcpEvent = Record<string, string>;

export type ClientKind = 'udhcpc' | 'dhclient' | 'dhcpcd';

/**
 * makeDhcpVm('u1', tap): netns `${PREFIX}-u1`, IPv6 off, the TAP moved in (with
 * `mac` set first when given) and up, no address.
 */
export async function makeDhcpVm(name: string, tap: string, mac?: string, fromNs?: string): Promise<DhcpVm> {
  await waitLink(tap, fromNs);
  const ns = nsname(name);
  await addNamespace(ns);
  await quietNamespace(ns);
  const vm: DhcpVm = { name, ns, ifname: tap, mac: '', dir: tempDir(name) };
  await tapIntoVm(vm, mac, fromNs);
  return vm;
}

/** Moves the VM's TAP (back) into its namespace (from `fromNs`, default the root one), sets `mac` if given, and brings it up. */
export async function tapIntoVm(vm: DhcpVm, mac?: string, fromNs?: string): Promise<void> {
  await sh(`ip ${fromNs ? `-n ${q(fromNs)} ` : ''}link set ${q(vm.ifname)} netns ${q(vm.ns)}`);
  await nsExec(vm.ns, [
    `sysctl -qw net.ipv6.conf.${vm.ifname}.disable_ipv6=1 2>/dev/null`,
    mac ? `ip link set dev ${q(vm.ifname)} address ${q(mac)}` : 'true',
    `ip link set ${q(vm.ifname)} up`,
  ].join('; '));
  vm.mac = (await nsExec(vm.ns, `cat /sys/class/net/${vm.ifname}/address`)).trim().toLowerCase();
}

/** Moves the VM's TAP out of its namespace into the root one (its addresses go with the move). */
export async function tapToRoot(vm: DhcpVm): Promise<void> {
  await sh(`ip -n ${q(vm.ns)} link set ${q(vm.ifname)} netns 1`);
}

/** The VM's IPv4 addresses as "a.b.c.d/len". */
export async function vmAddrs(vm: DhcpVm): Promise<string[]> {
  const out = await nsExec(vm.ns, `ip -4 -o addr show dev ${q(vm.ifname)}`);
  return [...out.matchAll(/inet (\d+\.\d+\.\d+\.\d+\/\d+)/g)].map((m) => m[1]);
}

/** The VM's default route gateway, or undefined. */
export async function vmDefaultGw(vm: DhcpVm): Promise<string | undefined> {
  const out = await nsExec(vm.ns, 'ip -4 route show default');
  return /default via (\d+\.\d+\.\d+\.\d+)/.exec(out)?.[1];
}

export async function vmRoutes(vm: DhcpVm): Promise<string> {
  return nsExec(vm.ns, 'ip -4 route show');
}

/* ---------- scripts ---------- */

const RECORD = (file: string, fields: [string, string][]): string =>
  `{\n${fields.map(([k, v]) => `  echo "${k}=${v}"`).join('\n')}\n  echo ---\n} >> "$(dirname "$0")/${file}"\n`;

const UDHCPC_SCRIPT = `#!/bin/sh
# busybox udhcpc event script (test): apply the lease, then record the environment.
case "$1" in
  deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    for r in $router; do ip route replace default via "$r" dev "$interface"; break; done ;;
esac
${RECORD('udhcpc.env', [
  ['event', '$1'], ['ip', '$ip'], ['mask', '$mask'], ['subnet', '$subnet'], ['router', '$router'], ['dns', '$dns'],
  ['domain', '$domain'], ['lease', '$lease'], ['mtu', '$mtu'], ['staticroutes', '$staticroutes'],
  ['serverid', '$serverid'], ['hostname', '$hostname'], ['broadcast', '$broadcast'],
])}
exit 0
`;

const DHCLIENT_SCRIPT = `#!/bin/sh
# ISC dhclient script (test): apply the lease, then record the environment.
case "$reason" in
  PREINIT) ip link set dev "$interface" up ;;
  BOUND|RENEW|REBIND|REBOOT)
    if [ "$old_ip_address" != "$new_ip_address" ] || [ "$reason" = BOUND ] || [ "$reason" = REBOOT ]; then
      ip -4 addr flush dev "$interface"
      ip addr add "$new_ip_address/$new_subnet_mask" dev "$interface"
    fi
    for r in $new_routers; do ip route replace default via "$r" dev "$interface"; break; done ;;
  EXPIRE|FAIL|RELEASE|STOP) ip -4 addr flush dev "$interface" ;;
esac
${RECORD('dhclient.env', [
  ['event', '$reason'], ['ip', '$new_ip_address'], ['mask', '$new_subnet_mask'], ['router', '$new_routers'],
  ['dns', '$new_domain_name_servers'], ['domain', '$new_domain_name'], ['lease', '$new_dhcp_lease_time'],
  ['renewal', '$new_dhcp_renewal_time'], ['mtu', '$new_interface_mtu'],
  ['classless', '$new_rfc3442_classless_static_routes'], ['serverid', '$new_dhcp_server_identifier'],
  ['old_ip', '$old_ip_address'],
])}
exit 0
`;

const DHCPCD_SCRIPT = `#!/bin/sh
# dhcpcd script (test): record only; dhcpcd configures the interface itself.
${RECORD('dhcpcd.env', [
  ['event', '$reason'], ['ip', '$new_ip_address'], ['cidr', '$new_subnet_cidr'], ['router', '$new_routers'],
  ['dns', '$new_domain_name_servers'], ['domain', '$new_domain_name'], ['lease', '$new_dhcp_lease_time'],
  ['mtu', '$new_interface_mtu'], ['classless', '$new_classless_static_routes'],
  ['serverid', '$new_dhcp_server_identifier'],
])}
exit 0
`;

const DHCLIENT_CONF = `# dhclient.conf (test)
option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;
request subnet-mask, broadcast-address, routers, domain-name, domain-name-servers, interface-mtu,
  rfc3442-classless-static-routes;
timeout 15;
retry 1;
`;

const DHCPCD_CONF = `# dhcpcd.conf (test)
option domain_name_servers, domain_name, classless_static_routes, interface_mtu
require dhcp_server_identifier
`;

function writeScript(path: string, text: string): string {
  writeFileSync(path, text, { mode: 0o755 });
  return path;
}

/** Events recorded by a client's script in the VM's dir (oldest first). */
export function clientEvents(vm: DhcpVm, kind: ClientKind): DhcpEvent[] {
  let text: string;
  try { text = readFileSync(join(vm.dir, `${kind}.env`), 'utf8'); } catch { return []; }
  const out: DhcpEvent[] = [];
  let cur: DhcpEvent = {};
  for (const line of text.split('\n')) {
    if (line === '---') { out.push(cur); cur = {}; continue; }
    const i = line.indexOf('=');
    if (i > 0) cur[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

/* ---------- udhcpc ---------- */

function udhcpcArgs(vm: DhcpVm, extra: string[]): string[] {
  const script = writeScript(join(vm.dir, 'udhcpc.sh'), UDHCPC_SCRIPT);
  return ['busybox', 'udhcpc', '-f', '-i', vm.ifname, '-s', script, '-O', 'mtu', '-O', 'staticroutes', ...extra];
}

export interface OneShot {
  code: number;
  /** Client stdout + stderr. */
  log: string;
  /** The last bound/renew event (udhcpc) when the client got a lease. */
  lease?: DhcpEvent;
}

/**
 * One udhcpc run: -q (exit once bound) -n (exit 1 without a lease), `tries`
 * DISCOVERs one second apart; `requestIp` adds -r (option 50), `hostname` -x hostname:NAME (option 12).
 */
export async function udhcpcOnce(
  vm: DhcpVm, { tries = 3, requestIp, hostname }: { tries?: number; requestIp?: string; hostname?: string } = {},
): Promise<OneShot> {
  const before = clientEvents(vm, 'udhcpc').length;
  const args = udhcpcArgs(vm, ['-q', '-n', '-t', String(tries), '-T', '1', ...(requestIp ? ['-r', requestIp] : []),
    ...(hostname ? ['-x', `hostname:${hostname}`] : [])]);
  const r = await nsExecR(vm.ns, args.map(q).join(' ') + ' 2>&1', { timeoutMs: (tries + 8) * 1000 });
  const evs = clientEvents(vm, 'udhcpc').slice(before).filter((e) => e.event === 'bound' || e.event === 'renew');
  return { code: r.code, log: r.stdout + r.stderr, lease: evs.at(-1) };
}

/* ---------- a client left running in the background ---------- */

export class DhcpClient {
  log = '';
  readonly exited: Promise<void>;
  /** Events already in the VM's file (from an earlier client run) when this one started. */
  readonly #base: number;

  constructor(readonly kind: ClientKind, readonly vm: DhcpVm, readonly proc: ChildProcess, base: number) {
    this.#base = base;
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => { this.log += d; });
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => { this.log += d; });
    this.exited = new Promise((r) => proc.once('exit', () => r()));
  }

  running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** The events of this run (not of earlier clients in the same VM). */
  events(): DhcpEvent[] {
    return clientEvents(this.vm, this.kind).slice(this.#base);
  }

  /** Waits for the (n+1)-th event (counting from 0) whose name is in `names`; fails early if the client exits. */
  async waitEvent(names: string[], { after = 0, timeoutMs = 20_000 }: { after?: number; timeoutMs?: number } = {}): Promise<DhcpEvent> {
    return waitFor(`${this.kind} in ${this.vm.name}: event ${names.join('/')} (after ${after})`, () => {
      const hit = this.events().filter((e) => names.includes(e.event))[after];
      if (hit) return hit;
      if (!this.running()) throw new Error(`${this.kind} exited (${this.proc.exitCode ?? this.proc.signalCode}) without it; log:\n${this.log}`);
      return undefined;
    }, { timeoutMs, intervalMs: 100 });
  }

  count(names: string[]): number {
    return this.events().filter((e) => names.includes(e.event)).length;
  }

  signal(sig: NodeJS.Signals): void {
    this.proc.kill(sig);
  }

  /** SIGTERM, then SIGKILL after 3 s. */
  async stop(): Promise<void> {
    if (!this.running()) return;
    this.proc.kill('SIGTERM');
    if (await Promise.race([this.exited.then(() => true), sleep(3000).then(() => false)])) return;
    this.proc.kill('SIGKILL');
    await Promise.race([this.exited, sleep(2000)]);
  }

  /** Waits up to timeoutMs for the client to exit by itself; returns its exit code (undefined: still running). */
  async waitExit(timeoutMs: number): Promise<number | undefined> {
    await Promise.race([this.exited, sleep(timeoutMs)]);
    return this.running() ? undefined : (this.proc.exitCode ?? -1);
  }
}

/** Runs `argv` in the VM's namespace as a tracked child (its pid is the client's own: every wrapper execs). */
function spawnIn(vm: DhcpVm, kind: ClientKind, argv: string[]): DhcpClient {
  const base = clientEvents(vm, kind).length;
  return new DhcpClient(kind, vm, spawnTracked('ip', ['netns', 'exec', vm.ns, ...argv]), base);
}

/** busybox udhcpc left running in the foreground (-f): SIGUSR1 renews. */
export function udhcpcBackground(vm: DhcpVm): DhcpClient {
  return spawnIn(vm, 'udhcpc', udhcpcArgs(vm, ['-t', '5', '-T', '1', '-p', join(vm.dir, 'udhcpc.pid')]));
}

/**
 * ISC dhclient in the foreground (-d), one try (-1), all files in the VM's dir.
 * `renewAfterSec` adds `supersede dhcp-renewal-time N;` to its config, so that it
 * renews (RENEWING: unicast REQUEST with ciaddr) after N s instead of at T1.
 */
export function dhclient(vm: DhcpVm, { renewAfterSec }: { renewAfterSec?: number } = {}): DhcpClient {
  const conf = join(vm.dir, 'dhclient.conf');
  writeFileSync(conf, DHCLIENT_CONF + (renewAfterSec ? `supersede dhcp-renewal-time ${renewAfterSec};\n` : ''));
  const script = writeScript(join(vm.dir, 'dhclient.sh'), DHCLIENT_SCRIPT);
  return spawnIn(vm, 'dhclient', [
    'dhclient', '-4', '-d', '-v', '-1', '-cf', conf, '-lf', join(vm.dir, 'dhclient.leases'),
    '-pf', join(vm.dir, 'dhclient.pid'), '-sf', script, vm.ifname,
  ]);
}

/**
 * dhcpcd, IPv4 only, no IPv4LL, no hooks (our -c script), in the foreground (-B);
 * `oneshot` adds -1 (exit once bound, leaving the address). SIGUSR1 renews.
 */
export function dhcpcd(vm: DhcpVm, { oneshot = false }: { oneshot?: boolean } = {}): DhcpClient {
  const conf = join(vm.dir, 'dhcpcd.conf');
  writeFileSync(conf, DHCPCD_CONF);
  const script = writeScript(join(vm.dir, 'dhcpcd.sh'), DHCPCD_SCRIPT);
  const run = join(vm.dir, 'dhcpcd-run');
  const db = join(vm.dir, 'dhcpcd-db');
  mkdirSync(run, { recursive: true });
  mkdirSync(db, { recursive: true });
  const cmd = ['dhcpcd', '-4', '-B', '-L', '-t', '20', '-f', conf, '-c', script, ...(oneshot ? ['-1'] : []), vm.ifname];
  return spawnIn(vm, 'dhcpcd', [
    'unshare', '-m', '--propagation', 'private', 'sh', '-c',
    `mount --bind ${q(run)} /run && mount --bind ${q(db)} /var/lib/dhcpcd && exec ${cmd.map(q).join(' ')}`,
  ]);
}

/* ---------- the daemon's side ---------- */

export interface LeaseRow {
  router: string;
  network: string;
  ip: string;
  mac: string;
  state: string;
  hostname: string;
  clientId: string;
  port: string;
  expiresAt: string;
  expiresInSec: number;
}

/** `vswitch dhcp leases [--network N] --json`. */
export async function leases(d: Daemon, network?: string): Promise<LeaseRow[]> {
  const r = await d.ok(['dhcp', 'leases', ...(network ? ['--network', network] : [])], { json: true });
  if (!Array.isArray(r.json)) throw new Error(`dhcp leases --json is not an array: ${r.stdout.slice(0, 500)}`);
  return r.json as LeaseRow[];
}

/** The lease row of `mac` (any state), or undefined. */
export async function leaseOf(d: Daemon, mac: string, network?: string): Promise<LeaseRow | undefined> {
  return (await leases(d, network)).find((l) => l.mac.toLowerCase() === mac.toLowerCase());
}

/**
 * A new daemon process on the same config file, socket and dir as `old` (which
 * must have stopped): the restart of an installed daemon.
 */
export async function restartDaemon(old: Daemon): Promise<Daemon> {
  if (old.alive()) throw new Error('restartDaemon: the old daemon is still running');
  const env = { ...process.env };
  delete env.VSWITCH_SOCKET;
  const proc = spawnTracked(process.execPath, [MAIN_JS, 'daemon', '--config', old.configFile, '--socket', old.socket], {
    stdio: ['ignore', 'pipe', 'pipe'], env, cwd: old.dir,
  }, 'TERM');
  const d = new Daemon(proc, old.socket, old.configFile, old.dir);
  await waitFor('the restarted daemon to answer show --json', async () => {
    if (!d.alive()) throw new Error(`daemon exited (code ${d.exitCode}, signal ${d.exitSignal}): ${d.logText().slice(-2000)}`);
    return (await d.cli(['show', '--json'])).code === 0;
  }, { timeoutMs: 15_000, intervalMs: 250 });
  return d;
}
