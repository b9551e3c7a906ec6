#!/usr/bin/env node
/*
 * `vswitch`: the daemon and the brctl/bridge(8)-style verbs that talk to it.
 * Exit status: 0 ok, 1 error (one line on stderr), 2 usage error.
 */
import { resolve } from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import Table from 'cli-table3';
import { request } from './client.js';
import { errorMessage, VswitchError } from './errors.js';
import { DEFAULT_SOCKET, runDaemon } from './daemon/run.js';

class UsageError extends Error {}

const program = new Command('vswitch')
  .description('userspace virtual switch: learning L2 bridge with 802.1Q VLANs over TAP and attached interfaces')
  .option('--socket <path>', `control socket (env VSWITCH_SOCKET, default ${DEFAULT_SOCKET})`)
  .showHelpAfterError()
  .exitOverride();

const socketPath = (): string => program.opts().socket ?? process.env.VSWITCH_SOCKET ?? DEFAULT_SOCKET;
const call = (cmd: string, args: Record<string, unknown> = {}): Promise<unknown> => request(socketPath(), cmd, args);
const json = new Option('--json', 'machine-readable output');

function print(data: unknown, asJson: boolean, render: (d: any) => string): void {
  process.stdout.write(asJson ? JSON.stringify(data, null, 2) + '\n' : render(data));
}

function table(head: string[], rows: (string | number)[][]): string {
  const t = new Table({
    head,
    style: { head: [], border: [], compact: true, 'padding-left': 0, 'padding-right': 2 },
    chars: {
      top: '', 'top-mid': '', 'top-left': '', 'top-right': '', bottom: '', 'bottom-mid': '', 'bottom-left': '',
      'bottom-right': '', left: '', 'left-mid': '', mid: '', 'mid-mid': '', right: '', 'right-mid': '', middle: '',
    },
  });
  t.push(...rows.map((r) => r.map(String)));
  return t.toString().split('\n').map((l) => l.trimEnd()).join('\n') + '\n';
}

function vlanSummary(v: { mode: string; pvid: number; members: { vid: number; untagged: boolean }[] }): string {
  const tagged = v.members.filter((m) => !m.untagged).map((m) => m.vid);
  const untagged = v.members.filter((m) => m.untagged).map((m) => m.vid);
  if (v.mode === 'access') return `access ${v.pvid}`;
  if (v.mode === 'trunk') return `trunk ${compact(tagged)}${v.pvid ? ` native ${v.pvid}` : ''}`;
  return `hybrid tagged ${compact(tagged) || '-'} untagged ${compact(untagged) || '-'} pvid ${v.pvid || '-'}`;
}

/** [1,2,3,7] -> "1-3,7" */
function compact(vids: number[]): string {
  const out: string[] = [];
  for (let i = 0; i < vids.length;) {
    let j = i;
    while (j + 1 < vids.length && vids[j + 1] === vids[j] + 1) j++;
    out.push(i === j ? `${vids[i]}` : `${vids[i]}-${vids[j]}`);
    i = j + 1;
  }
  return out.join(',');
}

function parseVid(s: string): number {
  if (!/^\d+$/.test(s)) throw new UsageError(`bad VLAN ID '${s}'`);
  return Number(s);
}

function parseVidRange(s: string): [number, number] {
  const m = /^(\d+)(?:-(\d+))?$/.exec(s);
  if (!m) throw new UsageError(`bad VID or range '${s}' (expected VID or VID-VID)`);
  return [Number(m[1]), Number(m[2] ?? m[1])];
}

function parseVidList(s: string): number[] {
  return s.split(',').flatMap((part) => {
    const [a, b] = parseVidRange(part);
    const out = [];
    for (let v = a; v <= b && out.length <= 4096; v++) out.push(v);
    return out;
  });
}

/** bridge(8)-style keyword arguments: `dev X vid 10-20 pvid untagged`. */
function words(list: string[], withValue: string[], flags: string[]): Record<string, string | true> {
  const out: Record<string, string | true> = {};
  for (let i = 0; i < list.length; i++) {
    const w = list[i];
    if (withValue.includes(w)) {
      if (i + 1 >= list.length) throw new UsageError(`'${w}' needs a value`);
      out[w] = list[++i];
    } else if (flags.includes(w)) {
      out[w] = true;
    } else {
      throw new UsageError(`unexpected '${w}'`);
    }
  }
  return out;
}

function need(w: Record<string, string | true>, key: string, usage: string): string {
  const v = w[key];
  if (typeof v !== 'string') throw new UsageError(`missing '${key}': usage: ${usage}`);
  return v;
}

program.command('daemon')
  .description('run the switch daemon in the foreground')
  .option('--config <file>', 'YAML config file (default: the built-in NAT lab config; see packages/cli/README.md)')
  .option('--state-dir <dir>', 'where leases and runtime port forwards are kept (default from config: /var/lib/vswitch)')
  .option('--log-level <level>', 'trace, debug, info, warn, error')
  .option('--metrics <host:port>', 'Prometheus endpoint (default from config: 127.0.0.1:9464; "off" disables)')
  .action(async (o: { config?: string; logLevel?: 'info'; metrics?: string; stateDir?: string }) => {
    await runDaemon({ config: o.config, socket: program.opts().socket, logLevel: o.logLevel, metricsListen: o.metrics, stateDir: o.stateDir });
  });

program.command('reload').description('re-read the daemon\'s config file and apply the difference (as SIGHUP)')
  .action(async () => {
    const r = await call('reload') as { changes: string[] };
    process.stdout.write(r.changes.length ? r.changes.map((c) => `${c}\n`).join('') : 'no changes\n');
  });

program.command('addbr').argument('<bridge>').description('create a bridge')
  .action(async (bridge: string) => { await call('addbr', { bridge }); });

program.command('delbr').argument('<bridge>').description('delete a bridge and its ports')
  .action(async (bridge: string) => { await call('delbr', { bridge }); });

/**
 * `--socket` is both the program's control-socket option and addif's port socket, and
 * commander hands every occurrence to the program. For addif they are told apart by
 * position: before the subcommand the control socket, after it the port's socket.
 */
function splitSocketArgs(argv: string[], sub: string): { control?: string; port?: string } {
  const out: { control?: string; port?: string } = {};
  let afterSub = false;
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') break;
    let v: string | undefined;
    if (a === '--socket') v = argv[++i];
    else if (a.startsWith('--socket=')) v = a.slice('--socket='.length);
    else if (!afterSub && a === sub) afterSub = true;
    if (v !== undefined) out[afterSub ? 'port' : 'control'] = v;
  }
  return out;
}

program.command('addif').argument('<bridge>').argument('<ifname>')
  .description('add a port: a TAP the daemon creates, an existing interface with --attach, or a QEMU socket with --socket')
  .option('--attach', 'attach an existing interface (NIC, veth, hypervisor TAP) via AF_PACKET')
  .option('--socket <path>', 'a socket port: listen on this Unix socket for a VM (QEMU -netdev stream,addr.type=unix,addr.path=PATH); '
    + 'the control socket then goes before addif or in VSWITCH_SOCKET')
  .option('--mode <octal>', 'socket port: mode of the socket file (default 0600)')
  .option('--connect', 'socket port: connect to PATH where QEMU listens (-netdev stream,server=on,...) and reconnect after restarts')
  .option('--persistent', 'TAP: keep the device when the daemon exits')
  .option('--vlan <vid>', 'access port in this VLAN')
  .option('--trunk <vids>', 'trunk port carrying these VLANs tagged (e.g. 10,20,100-110)')
  .option('--native <vid>', 'trunk: native VLAN, untagged')
  .option('--max-macs <n>', 'limit of MAC addresses learned on this port')
  .action(async (bridge: string, ifname: string, o: Record<string, string | true | undefined>) => {
    if (o.vlan !== undefined && o.trunk !== undefined) throw new UsageError('--vlan and --trunk exclude each other');
    if (o.native !== undefined && o.trunk === undefined) throw new UsageError('--native needs --trunk');
    const vlan = o.vlan !== undefined
      ? { mode: 'access', vid: parseVid(o.vlan as string) }
      : o.trunk !== undefined
        ? { mode: 'trunk', allowed: parseVidList(o.trunk as string), ...(o.native !== undefined ? { native: parseVid(o.native as string) } : {}) }
        : undefined;
    const maxMacs = o.maxMacs !== undefined ? Number(o.maxMacs) : undefined;
    if (maxMacs !== undefined && !(Number.isInteger(maxMacs) && maxMacs >= 0)) throw new UsageError('--max-macs must be a non-negative integer');
    const sockets = splitSocketArgs(process.argv, 'addif');
    if (o.mode !== undefined && sockets.port === undefined) throw new UsageError('--mode needs --socket');
    if (o.connect !== undefined && sockets.port === undefined) throw new UsageError('--connect needs --socket');
    if (o.connect !== undefined && o.mode !== undefined) throw new UsageError('--connect and --mode exclude each other (the socket file is QEMU\'s)');
    if (sockets.port !== undefined && (o.attach !== undefined || o.persistent !== undefined)) throw new UsageError('--socket excludes --attach and --persistent');
    const control = sockets.control ?? process.env.VSWITCH_SOCKET ?? DEFAULT_SOCKET;
    const socket = sockets.port !== undefined ? resolve(sockets.port) : undefined;
    await request(control, 'addif', { bridge, ifname, attach: o.attach === true, persistent: o.persistent === true, vlan, maxMacs, socket, mode: o.mode, connect: o.connect === true });
  });

program.command('delif').argument('<bridge>').argument('<ifname>').description('remove a port')
  .action(async (bridge: string, ifname: string) => { await call('delif', { bridge, ifname }); });

program.command('show').argument('[bridge]').addOption(json).description('show bridges and their ports')
  .action(async (bridge: string | undefined, o: { json?: boolean }) => {
    const data = await call('show', { bridge }) as any[];
    print(data, o.json === true, (brs) => table(['bridge name', 'macs', 'port', 'kind', 'state', 'vlan', 'from', 'bridge from'],
      brs.flatMap((b: any) => [
        ...(b.ports.length === 0 && !b.failed?.length ? [{ name: '', kind: '', state: '', vlan: null }] : b.ports),
        ...(b.failed ?? []).map((f: any) => ({ name: f.name, kind: '', state: `failed (${f.reason})`, vlan: null, source: f.source })),
      ].map((p: any, i: number) => [i === 0 ? b.name : '', i === 0 ? `${b.macs}/${b.maxMacs}` : '', p.name, p.kind,
        p.state === 'down' ? `down (${p.downReason})` : p.state, p.vlan ? vlanSummary(p.vlan) : '', p.name ? from(p) : '', i === 0 ? from(b) : '']))));
  });

/** "config", "runtime" (the CLI), or "config, vlan: runtime" for a file object whose settings the CLI changed. */
function from(o: { source?: string; overrides?: string[]; router?: string }): string {
  if (o.router !== undefined) return `router ${o.router}`;
  if (o.source === undefined) return '';
  return o.overrides?.length ? `${o.source}, ${o.overrides.join(', ')}: runtime` : o.source;
}

program.command('showmacs').argument('<bridge>').addOption(json).description('show the MAC table')
  .action(async (bridge: string, o: { json?: boolean }) => {
    print(await call('showmacs', { bridge }), o.json === true, (rows) => table(['port', 'vlan', 'mac addr', 'static', 'ageing timer'],
      rows.map((r: any) => [r.port, r.vlan, r.mac, r.static ? 'yes' : 'no', r.static ? '' : r.ageSec.toFixed(1)])));
  });

program.command('setageing').argument('<bridge>').argument('<seconds>').description('set the MAC ageing time')
  .action(async (bridge: string, seconds: string) => {
    if (!/^\d+(\.\d+)?$/.test(seconds)) throw new UsageError(`bad ageing time '${seconds}'`);
    await call('setageing', { bridge, seconds: Number(seconds) });
  });

const vlan = program.command('vlan').description('VLAN membership, as bridge(8) vlan');
vlan.command('add').argument('<words...>').usage('dev IFNAME vid VID[-VID] [pvid] [untagged]')
  .action(async (list: string[]) => {
    const w = words(list, ['dev', 'vid'], ['pvid', 'untagged']);
    const usage = 'vlan add dev IFNAME vid VID[-VID] [pvid] [untagged]';
    const [from, to] = parseVidRange(need(w, 'vid', usage));
    await call('vlan.add', { ifname: need(w, 'dev', usage), from, to, pvid: w.pvid === true, untagged: w.untagged === true });
  });
vlan.command('del').argument('<words...>').usage('dev IFNAME vid VID[-VID]')
  .action(async (list: string[]) => {
    const w = words(list, ['dev', 'vid'], []);
    const usage = 'vlan del dev IFNAME vid VID[-VID]';
    const [from, to] = parseVidRange(need(w, 'vid', usage));
    await call('vlan.del', { ifname: need(w, 'dev', usage), from, to });
  });
vlan.command('show').argument('[words...]').usage('[dev IFNAME] [--json]').addOption(json)
  .action(async (list: string[], o: { json?: boolean }) => {
    const w = words(list, ['dev'], []);
    print(await call('vlan.show', { ifname: w.dev }), o.json === true, (rows) => table(['port', 'vlan-id', 'flags'],
      rows.flatMap((r: any) => r.vlans.map((v: any, i: number) => [i === 0 ? r.port : '', v.vid,
        [v.pvid ? 'PVID' : '', v.untagged ? 'Egress Untagged' : ''].filter(Boolean).join(' ')]))));
  });

const fdb = program.command('fdb').description('MAC table entries, as bridge(8) fdb');
fdb.command('add').argument('<mac>').argument('<words...>').usage('MAC dev IFNAME [vlan VID]')
  .action(async (mac: string, list: string[]) => {
    const w = words(list, ['dev', 'vlan'], ['static', 'permanent', 'master']);
    await call('fdb.add', { mac, ifname: need(w, 'dev', 'fdb add MAC dev IFNAME [vlan VID]'), vlan: w.vlan ? parseVid(w.vlan as string) : undefined });
  });
fdb.command('del').argument('<mac>').argument('<words...>').usage('MAC dev IFNAME [vlan VID]')
  .action(async (mac: string, list: string[]) => {
    const w = words(list, ['dev', 'vlan'], ['master']);
    await call('fdb.del', { mac, ifname: need(w, 'dev', 'fdb del MAC dev IFNAME [vlan VID]'), vlan: w.vlan ? parseVid(w.vlan as string) : undefined });
  });
fdb.command('show').argument('[words...]').usage('[br BRIDGE] [--json]').addOption(json)
  .action(async (list: string[], o: { json?: boolean }) => {
    const w = words(list, ['br'], []);
    print(await call('fdb.show', { bridge: w.br }), o.json === true, (rows) =>
      rows.map((r: any) => `${r.mac} dev ${r.port} vlan ${r.vlan} master ${r.bridge}${r.static ? ' static' : ''}\n`).join(''));
  });

/** "yes, 4 leases/guarded port" from a network's dhcpPolicy (router show). */
function dhcpCell(p: any): string {
  const cap = p?.maxLeasesPerPort;
  if (cap === undefined) return 'yes';
  if (cap.guarded === null && cap.unguarded === null) return 'yes, no lease cap';
  if (cap.unguarded === null) return `yes, ${cap.guarded} leases/guarded port`;
  return `yes, ${cap.guarded} leases/port`;
}

program.command('router').description('routers (NAT mode)')
  .command('show').argument('[router]').addOption(json).description('networks, uplink and counters of the routers')
  .action(async (router: string | undefined, o: { json?: boolean }) => {
    print(await call('router.show', { router }), o.json === true, (rs) => rs.map((r: any) =>
      `router ${r.name}: uplink ${r.uplink?.kind === 'host' ? `host (the host's own address; DNS via ${r.uplink.resolver || 'no resolver'}; ICMP ${r.uplink.icmp})`
        : r.uplink ? `${r.uplink.interface} ${r.uplink.address} (${r.uplink.mac}) gateway ${r.uplink.gateway || '-'} ${r.uplink.state}` : 'none'}\n` +
      (r.forwards && r.forwards !== 'ok' ? `forwards: ${r.forwards}\n` : '') +
      table(['network', 'vlan', 'address', 'dhcp', 'state'], r.networks.map((n: any) => [n.name, n.vlan, n.address, n.dhcp ? dhcpCell(n.dhcpPolicy) : 'no', n.state ?? 'ok'])) +
      limitsText(r)).join('\n'));
  });

/** `router show`: the per-port rate limits, and the ports they dropped frames of. */
function limitsText(r: any): string {
  const l = r.limits;
  if (!l) return '';
  const rate = (v: number): string => (v > 0 ? `${v}/s` : 'off');
  let out = `limits per port: dhcp ${rate(l.dhcp)}, arp ${rate(l.arp)}, icmp ${rate(l.icmp)}, dns ${rate(l.dns)}, icmp errors ${rate(l.icmpErrors)}\n`;
  const rows = r.networks.flatMap((n: any) => (n.rateLimited?.ports ?? []).map((p: any) => [
    n.name, p.port || '-', ...['dhcp', 'arp', 'icmp', 'dns', 'icmp_errors'].map((k) => p.dropped[k]), p.limited.join(',') || '-',
  ]));
  if (rows.length > 0) out += `rate-limited drops:\n${table(['network', 'port', 'dhcp', 'arp', 'icmp', 'dns', 'icmp errors', 'limited now'], rows)}`;
  return out;
}

const dhcp = program.command('dhcp').description('DHCP server');
dhcp.command('leases').option('--network <name>', 'only this network').addOption(json).description('leases and offers')
  .action(async (o: { network?: string; json?: boolean }) => {
    print(await call('dhcp.leases', { network: o.network }), o.json === true, (rows) => table(
      ['network', 'ip', 'mac', 'state', 'hostname', 'expires in'],
      rows.map((l: any) => [l.network, l.ip, l.mac, l.state, l.hostname || '-', `${l.expiresInSec}s`])));
  });
const reservation = dhcp.command('reservation').description('static DHCP reservations (MAC -> address), kept across restarts');
reservation.command('add').argument('<network>').argument('<mac>').argument('<ip>').option('--hostname <name>', 'sent as option 12')
  .description('reserve IP for MAC in NETWORK; refused if the address is leased to another client or outside the network')
  .action(async (network: string, mac: string, ip: string, o: { hostname?: string }) => {
    await call('dhcp.reservation.add', { network, mac, ip, hostname: o.hostname });
  });
reservation.command('del').argument('<network>').argument('<mac>').description('remove the reservation of MAC in NETWORK')
  .action(async (network: string, mac: string) => { await call('dhcp.reservation.del', { network, mac }); });
reservation.command('show').option('--network <name>', 'only this network').addOption(json).description('reservations, with their source (config or runtime)')
  .action(async (o: { network?: string; json?: boolean }) => {
    print(await call('dhcp.reservation.show', { network: o.network }), o.json === true, (rows) => table(
      ['network', 'mac', 'ip', 'hostname', 'from'], rows.map((r: any) => [r.network, r.mac, r.ip, r.hostname ?? '-', r.source])));
  });

const nat = program.command('nat').description('NAT sessions and port forwards');
nat.command('sessions').option('--router <name>').addOption(json).description('active NAPT sessions')
  .action(async (o: { router?: string; json?: boolean }) => {
    print(await call('nat.sessions', { router: o.router }), o.json === true, (rows) => table(
      ['proto', 'inside', 'public port', 'remote', 'state', 'idle', 'expires in'],
      rows.map((s: any) => [s.proto, s.inside, s.publicPort, s.remote, s.state, `${s.idleSec}s`, s.expiresInSec === undefined ? '-' : `${s.expiresInSec}s`])));
  });
const fwd = nat.command('forward').description('port forwards from the uplink address to inside hosts');
fwd.command('add').argument('<proto>', 'tcp or udp').argument('<public>', 'public port or range, e.g. 8080 or 8000-8010')
  .argument('<inside>', 'inside IP[:port], e.g. 10.0.10.50:80').option('--router <name>')
  .action(async (proto: string, pub: string, inside: string, o: { router?: string }) => {
    await call('nat.forward.add', { router: o.router, proto, public: pub, inside });
  });
fwd.command('del').argument('<proto>').argument('<public>').option('--router <name>')
  .action(async (proto: string, pub: string, o: { router?: string }) => {
    await call('nat.forward.del', { router: o.router, proto, public: pub });
  });
fwd.command('show').option('--router <name>').addOption(json)
  .action(async (o: { router?: string; json?: boolean }) => {
    print(await call('nat.forward.show', { router: o.router }), o.json === true, (rows) => table(
      ['router', 'proto', 'public', 'inside', 'source', 'listen'],
      rows.map((f: any) => [f.router, f.proto, f.public, f.inside, f.source, f.listen === undefined ? '-' : `${f.listen} ${f.state}`])));
  });

program.command('stats').argument('[bridge]').addOption(json).description('per-port counters and drops; MAC table counters')
  .action(async (bridge: string | undefined, o: { json?: boolean }) => {
    print(await call('stats', { bridge }), o.json === true, (brs) => brs.map((b: any) =>
      `bridge ${b.name}: macs ${b.fdb.size} learned ${b.fdb.learned} moved ${b.fdb.moved} aged ${b.fdb.aged} evicted ${b.fdb.evicted}` +
      ` refused ${b.fdb.refusedPortLimit + b.fdb.refusedStatic + b.fdb.refusedFull + (b.fdb.refusedBound ?? 0)}` +
      ` flooded ${b.forwarding.floodedGroup + b.forwarding.floodedUnknown} forwarded ${b.forwarding.forwarded}\n` +
      table(['port', 'state', 'macs', 'rx frames', 'rx bytes', 'tx frames', 'tx bytes', 'drops'], b.ports.map((p: any) => [
        p.name, p.state, p.macs, p.rxFrames, p.rxBytes, p.txFrames, p.txBytes,
        Object.entries(p.drops).map(([k, v]) => `${k}=${v}`).join(' ') || '-',
      ]))).join('\n'));
  });

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    // help and version exit 0; commander already printed usage errors
    process.exitCode = e.exitCode === 0 ? 0 : 2;
  } else if (e instanceof UsageError) {
    process.stderr.write(`vswitch: ${e.message}\n`);
    process.exitCode = 2;
  } else {
    process.stderr.write(`vswitch: ${errorMessage(e)}\n`);
    process.exitCode = 1;
    if (!(e instanceof VswitchError) && process.env.VSWITCH_DEBUG) console.error(e);
  }
}
