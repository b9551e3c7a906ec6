/*
 * Scaffolding of the VXLAN integration tests (vxlan, vxlan-ovs, vxlan6): "hosts" are
 * namespaces on one underlay segment, a Linux bridge `ubr` in a namespace of its own;
 * VMs are namespaces on a veth (toward a Linux bridge or OVS in their host) or on a
 * TAP of a daemon. Every name comes from the caller (nsname/ifname: per-run), every
 * namespace and link is registered for the run's cleanup, so a failing test still
 * leaves nothing behind. Assertions stay in the test files: these only build, send
 * and read.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { type Daemon, toYaml } from './daemon.js';
import { addNamespace, nsExec, nsExecR, sh, tempDir, trackLink, waitFor } from './run.js';
import { Background, tcpdump, quietNamespace } from './vm.js';
import { PYTHON } from './scapy.js';

/** Creates `nses` (quieted unless `quiet` is false) and the underlay switch `ubr` in `underlay`, which is always quiet. */
export async function makeHosts(underlay: string, nses: string[], quiet = true): Promise<void> {
  for (const ns of [...nses, underlay]) {
    await addNamespace(ns);
    if (quiet || ns === underlay) await quietNamespace(ns);
  }
  await nsExec(underlay, 'ip link add ubr type bridge && ip link set ubr up');
}

/**
 * One end of a veth (`name`, tracked) in `ns`, the other (`${name}p`) in `underlay`'s
 * bridge, with `addr` on it (IPv4 /24, IPv6 /64 without DAD) unless OVS takes it.
 * `offloads: false` turns checksum offload, TSO and GSO off: real wires carry complete
 * checksums, while a veth hands checksum-partial frames over as they are.
 */
export async function underlayLink(underlay: string, ns: string, name: string, { addr, offloads = true }: { addr?: string; offloads?: boolean } = {}): Promise<void> {
  const peer = `${name}p`;
  trackLink(name);
  await sh(`ip link add ${name} netns ${ns} type veth peer name ${peer} netns ${underlay}`);
  await nsExec(underlay, `ip link set ${peer} master ubr up`);
  await nsExec(ns, `${offloads ? '' : `ethtool -K ${name} tx off tso off gso off >/dev/null && `}ip link set ${name} up`);
  if (addr === undefined) return;
  await nsExec(ns, addr.includes(':') ? `ip -6 addr add ${addr}/64 dev ${name} nodad` : `ip addr add ${addr}/24 dev ${name}`);
}

/**
 * A VM namespace `ns` on a veth `inner` (with `cidr`, MTU `mtu`) whose other end
 * `outer` (returned, up, same MTU) is in `host`. `offloads: false` for OVS's netdev
 * datapath, which reads veths through AF_PACKET without a vnet header.
 */
export async function vethVm(o: { host: string; ns: string; inner: string; outer: string; cidr: string; mtu: number; offloads?: boolean }): Promise<string> {
  const off = (dev: string): string => (o.offloads === false ? `ethtool -K ${dev} tx off tso off gso off >/dev/null && ` : '');
  await addNamespace(o.ns);
  await quietNamespace(o.ns);
  await sh(`ip link add ${o.inner} netns ${o.ns} type veth peer name ${o.outer} netns ${o.host}`);
  await nsExec(o.ns, `${off(o.inner)}ip link set ${o.inner} mtu ${o.mtu} up && ip addr add ${o.cidr} dev ${o.inner}`);
  await nsExec(o.host, `${off(o.outer)}ip link set ${o.outer} mtu ${o.mtu} up`);
  return o.outer;
}

/** A VM namespace `ns` that takes the daemon's TAP `tap` out of `host` once it exists, with `cidr` and MTU `mtu`. */
export async function tapVm(host: string, tap: string, ns: string, cidr: string, mtu: number): Promise<void> {
  await addNamespace(ns);
  await quietNamespace(ns);
  await waitFor(`TAP ${tap} in ${host}`, async () => (await nsExecR(host, `ip link show ${tap}`)).code === 0);
  await nsExec(host, `ip link set ${tap} netns ${ns}`);
  await nsExec(ns, `ip link set ${tap} mtu ${mtu} up && ip addr add ${cidr} dev ${tap}`);
}

/**
 * A Linux VTEP in `host`: `vx<vni>` over underlay `dev` from `local` (IPv4 or IPv6),
 * head-end replication to `flood` (`bridge fdb append 00:00:00:00:00:00`), and, when
 * a VM `port` is given, a bridge `br<vni>` joining the two; `tos` as ip-link's (`inherit`, or a value).
 */
export async function linuxVtep(host: string, o: { dev: string; local: string; vni: number; flood: string[]; port?: string; learning?: boolean; tos?: string }): Promise<void> {
  const vx = `vx${o.vni}`;
  const br = `br${o.vni}`;
  await nsExec(host, [
    `ip link add ${vx} type vxlan id ${o.vni} local ${o.local} dstport 4789 dev ${o.dev} ${o.learning === false ? 'nolearning' : 'learning'}${o.tos !== undefined ? ` tos ${o.tos}` : ''}`,
    ...(o.port === undefined ? [] : [`ip link add ${br} type bridge`, `ip link set ${vx} master ${br}`, `ip link set ${o.port} master ${br}`]),
    `ip link set ${vx} up`,
    ...(o.port === undefined ? [] : [`ip link set ${br} up`]),
    ...o.flood.map((f) => `bridge fdb append 00:00:00:00:00:00 dev ${vx} dst ${f}`),
  ].join(' && '));
}

/** The MAC address of `dev` in `ns`. */
export async function macOf(ns: string, dev: string): Promise<string> {
  return (await nsExec(ns, `cat /sys/class/net/${dev}/address`)).trim();
}

/** IPv4 VXLAN packets tcpdump printed: outer source and destination, VNI, and the inner packet (tcpdump's next line). */
export function vxlanLines(lines: string[]): { vni: number; src: string; dst: string; inner: string; line: string }[] {
  return lines.flatMap((line, i) => {
    const m = /(\d+\.\d+\.\d+\.\d+)\.\d+ > (\d+\.\d+\.\d+\.\d+)\.4789: VXLAN.*?vni (\d+)/.exec(line);
    const next = lines[i + 1] ?? '';
    const inner = /^\d\d:\d\d:\d\d\./.test(next) ? '' : next;
    return m ? [{ src: m[1], dst: m[2], vni: Number(m[3]), inner, line: `${line} | ${inner}` }] : [];
  });
}

/**
 * Runs `action` while tcpdump captures `filter` on each [namespace, interface] of
 * `at`; resolves with each capture's lines (the first stopped 500 ms after the
 * action, the others at once: they ran all that time).
 */
export async function captureEach(at: [string, string][], filter: string, action: () => Promise<unknown>): Promise<string[][]> {
  const caps = [];
  for (const [ns, dev] of at) caps.push(await tcpdump(ns, dev, filter));
  await action();
  const out = [];
  for (const [i, c] of caps.entries()) out.push(await c.stop(i === 0 ? 500 : 0));
  return out;
}

/** Runs a scapy script (`body`, after the imports of scapy and its VXLAN layer) in `ns`. */
export async function scapy(ns: string, body: string[], timeoutMs = 120_000): Promise<void> {
  const script = ['from scapy.all import *', 'from scapy.layers.vxlan import VXLAN', 'conf.verb = 0', ...body].join('\n');
  await nsExec(ns, `${PYTHON} -c '${script.replace(/'/g, `'\\''`)}'`, { timeoutMs });
}

export interface Transfer {
  /** The sending socat's exit code and stderr (nothing else is filled in when it failed). */
  code: number;
  stderr: string;
  /** From the client's start to the server's exit. */
  secs: number;
  /** sha256 of what was sent, and of what the receiving VM wrote. */
  sent: string;
  received: string;
}

/**
 * Moves `size` random bytes over TCP from VM namespace `from` to `to` (listening on
 * `toIp`:`port`) with socat, through files in a per-run temp dir `tag`; the server
 * is stopped whatever happens. The caller asserts `code` and `received === sent`.
 */
export async function tcpTransfer(o: { from: string; to: string; toIp: string; size: number; port?: number; timeoutMs: number; tag: string }): Promise<Transfer> {
  const port = o.port ?? 5001;
  const dir = tempDir(o.tag);
  const src = join(dir, 'in.bin');
  const dst = join(dir, 'out.bin');
  const buf = randomBytes(o.size);
  writeFileSync(src, buf);
  const sent = createHash('sha256').update(buf).digest('hex');
  const server = new Background(o.to, `socat -u TCP-LISTEN:${port},reuseaddr OPEN:${dst},creat,trunc`);
  let secs = 0;
  try {
    await waitFor('socat listening', async () => (await nsExecR(o.to, `ss -ltn | grep -q :${port}`)).code === 0);
    const t0 = Date.now();
    const r = await nsExecR(o.from, `socat -u OPEN:${src} TCP:${o.toIp}:${port},connect-timeout=5`, { timeoutMs: o.timeoutMs });
    if (r.code !== 0) return { code: r.code, stderr: r.stderr, secs: 0, sent, received: '' };
    await waitFor('socat server done', () => server.proc.exitCode !== null, { timeoutMs: 30_000 });
    secs = (Date.now() - t0) / 1000;
  } finally {
    await server.stop();
  }
  return { code: 0, stderr: '', secs, sent, received: (await sh(`sha256sum ${dst}`)).split(' ')[0] };
}

/** One line on stdout for a transfer: size, time, rate and the machine's load. */
export async function printTransfer(label: string, size: number, secs: number): Promise<void> {
  const load = (await sh('cut -d" " -f1-3 /proc/loadavg')).trim();
  process.stdout.write(`${label}: ${size >> 20} MiB in ${secs.toFixed(1)} s = ${((size * 8) / secs / 1e6).toFixed(0)} Mbit/s (load ${load})\n`);
}

/** `vxlan show --json`. */
export async function vxlanShow(d: Daemon): Promise<any> {
  return (await d.ok(['vxlan', 'show'], { json: true })).json;
}

/** `fdb show br <br> --json`: the MAC table's entries. */
export async function fdbEntries(d: Daemon, br: string): Promise<any[]> {
  return (await d.ok(['fdb', 'show', 'br', br], { json: true })).json as any[];
}

/** Edits the daemon's config file with `edit` and reloads it (the reload must succeed). */
export async function reloadWith(d: Daemon, edit: (cfg: any) => void): Promise<void> {
  const cfg = parse(readFileSync(d.configFile, 'utf8'));
  edit(cfg);
  writeFileSync(d.configFile, toYaml(cfg));
  await d.ok(['reload']);
}
