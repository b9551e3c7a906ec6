/*
 * FRR 8.4 as an EVPN peer in a namespace (research/overlay.md "FRR 8.4 as an EVPN
 * peer"): zebra + bgpd run as the frr user (FRR refuses root), their sockets,
 * configs, pid files and logs in a per-run directory, queried with `vtysh
 * --vty_socket`. iBGP (one AS) so FRR's derived route targets (ASN:VNI) match the
 * daemon's; explicit timers (keepalive 10 s, hold 30 s, connect retry 1 s), which
 * overlay.md found reliable. `rrClients` makes FRR a route reflector for those
 * neighbours (the fabric's usual shape: two vswitch hosts learn each other's routes
 * through it). FRR leaves a directory per daemon process in /var/tmp/frr (crash
 * logs): `stop()` removes them.
 */
import { chmodSync, chownSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { nsExec, sh, shr, spawnTracked, tempDir, waitFor } from './run.js';
import { type Background, missingSeqs } from './vm.js';

export interface FrrOptions {
  ns: string;
  routerId: string;
  asn: number;
  /** iBGP neighbours (same AS), activated in l2vpn evpn. */
  neighbors: string[];
  /** Neighbours that are route-reflector clients (a subset of `neighbors`). */
  rrClients?: string[];
  /** Extra lines under `router bgp` (before the address family). */
  extra?: string[];
}

/** One type-2 path FRR holds: the MAC, its IP ('' MAC only), next hop, RD, MAC mobility sequence (0 none). */
export interface FrrMacRoute {
  mac: string;
  ip: string;
  nextHop: string;
  rd: string;
  seq: number;
}

export class Frr {
  readonly pids: number[] = [];

  constructor(readonly ns: string, readonly dir: string) {}

  async vtyJson(cmd: string): Promise<any> {
    const out = await nsExec(this.ns, `vtysh --vty_socket ${this.dir} -c '${cmd}' 2>/dev/null`);
    return JSON.parse(out);
  }

  vty(cmd: string): Promise<string> {
    return nsExec(this.ns, `vtysh --vty_socket ${this.dir} -c '${cmd}'`);
  }

  /** Every type-2 path in the global EVPN table (all RDs). */
  async macRoutes(): Promise<FrrMacRoute[]> {
    const j = await this.vtyJson('show bgp l2vpn evpn route type macip json');
    const out: FrrMacRoute[] = [];
    for (const [rd, v] of Object.entries<any>(j)) {
      if (!/:/.test(rd) || typeof v !== 'object') continue;
      for (const [prefix, p] of Object.entries<any>(v)) {
        const m = /\[2\]:\[\d+\]:\[48\]:\[([0-9a-f:]+)\](?::\[32\]:\[([0-9.]+)\])?/.exec(prefix);
        if (!m) continue;
        const paths = Array.isArray(p?.paths) ? p.paths.flat() : [];
        for (const path of paths) {
          const ext = String(path?.extendedCommunity?.string ?? '');
          const seq = /MM:(\d+)/.exec(ext);
          out.push({ mac: m[1], ip: m[2] ?? '', nextHop: path?.nexthops?.[0]?.ip ?? '', rd, seq: seq ? Number(seq[1]) : 0 });
        }
      }
    }
    return out;
  }

  /** MACs FRR holds as type-2 routes, by next hop (the first path of each). */
  async macs(): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (const r of await this.macRoutes()) if (!out.has(r.mac)) out.set(r.mac, r.nextHop);
    return out;
  }

  /** Stops zebra and bgpd (SIGTERM, as cleanup() would) and removes what they leave in /var/tmp/frr. */
  async stop(): Promise<void> {
    for (const p of this.pids) {
      await shr(`kill ${p} 2>/dev/null`);
      await waitFor(`frr ${p} gone`, async () => (await shr(`kill -0 ${p} 2>/dev/null`)).code !== 0, { timeoutMs: 5000 }).catch(() => shr(`kill -9 ${p} 2>/dev/null`));
      await shr(`rm -rf /var/tmp/frr/zebra.${p} /var/tmp/frr/bgpd.${p}`);
    }
  }
}

export async function startFrr(o: FrrOptions): Promise<Frr> {
  const dir = tempDir('frr');
  chmodSync(dir, 0o755);
  const ids = (await sh('id -u frr; id -g frr')).trim().split('\n').map(Number);
  chownSync(dir, ids[0], ids[1]);
  writeFileSync(join(dir, 'zebra.conf'), 'hostname frr\n');
  const rr = new Set(o.rrClients ?? []);
  writeFileSync(join(dir, 'bgpd.conf'), [
    'hostname frr',
    `router bgp ${o.asn}`,
    ` bgp router-id ${o.routerId}`,
    ' no bgp default ipv4-unicast',
    ' no bgp ebgp-requires-policy',
    ...(o.extra ?? []),
    ...o.neighbors.flatMap((n) => [` neighbor ${n} remote-as ${o.asn}`, ` neighbor ${n} timers 10 30`, ` neighbor ${n} timers connect 1`]),
    ' address-family l2vpn evpn',
    ...o.neighbors.flatMap((n) => [`  neighbor ${n} activate`, ...(rr.has(n) ? [`  neighbor ${n} route-reflector-client`] : [])]),
    '  advertise-all-vni',
    ' exit-address-family',
    '',
  ].join('\n'));
  for (const f of ['zebra.conf', 'bgpd.conf']) chownSync(join(dir, f), ids[0], ids[1]);
  const frr = new Frr(o.ns, dir);
  const common = ['-u', 'frr', '-g', 'frr', '-z', join(dir, 'zserv.api'), '--vty_socket', dir, '-P', '0'];
  const zebra = spawnTracked('ip', ['netns', 'exec', o.ns, '/usr/lib/frr/zebra', ...common, '-f', join(dir, 'zebra.conf'), '-i', join(dir, 'zebra.pid'), '--log', `file:${join(dir, 'zebra.log')}`], {}, 'TERM');
  if (zebra.pid !== undefined) frr.pids.push(zebra.pid);
  await waitFor('zebra up', async () => (await shr(`test -S ${join(dir, 'zserv.api')}`)).code === 0, { timeoutMs: 15_000 });
  const bgpd = spawnTracked('ip', ['netns', 'exec', o.ns, '/usr/lib/frr/bgpd', ...common, '-f', join(dir, 'bgpd.conf'), '-i', join(dir, 'bgpd.pid'), '-l', o.routerId, '--log', `file:${join(dir, 'bgpd.log')}`], {}, 'TERM');
  if (bgpd.pid !== undefined) frr.pids.push(bgpd.pid);
  await waitFor('bgpd vty', async () => (await shr(`test -S ${join(dir, 'bgpd.vty')}`)).code === 0, { timeoutMs: 15_000 });
  return frr;
}

/** `/proc/loadavg`'s three figures, printed beside every measured time. */
export function loadAvg(): string {
  return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
}

/**
 * A continuous ping's loss since its reply `since`: waits until `more` further replies
 * came (the pings go on), then counts the sequence numbers unanswered in between.
 */
export async function pingLossSince(ping: Background, since: number, more = 5): Promise<{ lost: number; sent: number }> {
  const n = ping.pingSeqs().filter((s) => s > since).length;
  await waitFor('pings answered again', () => ping.pingSeqs().filter((s) => s > since).length >= n + more, { timeoutMs: 15_000, intervalMs: 50 });
  const seqs = ping.pingSeqs();
  const last = Math.max(...seqs);
  return { lost: missingSeqs(seqs, since + 1, last).length, sent: last - since };
}
