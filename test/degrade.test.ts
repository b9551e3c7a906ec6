/*
 * Degrade, don't die (issue 12, item 8), through the real daemon:
 *   - a corrupt lease file for one network disables that network's DHCP server
 *     only: the daemon starts, logs `dhcp_failed` naming the file, `router show`
 *     and the metric vswitch_router_failed say so; the other network serves leases,
 *     the gateway of both routes, another bridge forwards; once the operator moves
 *     the file aside, a reload brings the DHCP server back;
 *   - a forwards file that cannot be read disables the router's runtime forwards
 *     only (the config's forward listens; `nat forward add` is refused rather
 *     than overwrite the file); a reload after the file is fixed reads it again;
 *   - a `nat forward add` that cannot be persisted (the state directory's tmpfs
 *     is full) is refused and leaves no listener and no rule behind.
 * On main the first two stopped the whole daemon at start, and the third left a
 * listener on the host port.
 */
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, findPort, startDaemon } from './helpers/daemon.js';
import { type DhcpVm, makeDhcpVm, udhcpcOnce } from './helpers/dhcp.js';
import { addNamespace, cleanup, freePort, ifname, nsExec, nsname, q, sh, sleep, tempDir, trackLink, waitFor } from './helpers/run.js';
import { makeVm, pingUntil, quietNamespace, type Vm } from './helpers/vm.js';

async function metric(port: number, series: string): Promise<number | undefined> {
  const text = await sh(`curl -sS --max-time 5 http://127.0.0.1:${port}/metrics`);
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('a corrupt lease file disables only its network\'s DHCP server', () => {
  const T = { a: ifname('ga'), b: ifname('gb'), s1: ifname('gs1'), s2: ifname('gs2') };
  let d: Daemon;
  let stateDir: string;
  let vmA: DhcpVm, vmB: DhcpVm;
  let s1: Vm, s2: Vm;
  let mport = 0;
  const bad = (): string => join(stateDir, 'leases-n20.json');

  beforeAll(async () => {
    Object.values(T).forEach(trackLink);
    stateDir = tempDir('gstate');
    writeFileSync(bad(), '{"version":1,"network":"n20","leases":[{"ip":"not an address"}]}\n');
    mport = await freePort();
    d = await startDaemon({
      stateDir,
      metrics: { listen: `127.0.0.1:${mport}` },
      bridges: {
        br0: { ports: { [T.a]: { type: 'tap', vlan: { mode: 'access', vid: 10 } }, [T.b]: { type: 'tap', vlan: { mode: 'access', vid: 20 } } } },
        br1: { ports: { [T.s1]: { type: 'tap' }, [T.s2]: { type: 'tap' } } },
      },
      routers: {
        r0: {
          networks: {
            n10: { bridge: 'br0', vlan: 10, address: '10.76.10.1/24', dhcp: { pool: ['10.76.10.100-10.76.10.110'] } },
            n20: { bridge: 'br0', vlan: 20, address: '10.76.20.1/24', dhcp: { pool: ['10.76.20.100-10.76.20.110'] } },
          },
        },
      },
    });
    vmA = await makeDhcpVm('ga', T.a);
    vmB = await makeDhcpVm('gb', T.b);
    s1 = await makeVm('gs1', T.s1, '10.76.30.1/24');
    s2 = await makeVm('gs2', T.s2, '10.76.30.2/24');
  }, 120_000);

  afterAll(async () => {
    await d?.stop();
    await cleanup();
  });

  it('the daemon runs; the log, router show and the metric name the network and the file', async () => {
    expect(d.alive()).toBe(true);
    const line = d.logsMatching('dhcp_failed')[0];
    expect(line?.obj).toMatchObject({ level: 'error', router: 'r0', network: 'n20' });
    expect(line.obj.error).toContain(bad());
    const r = (await d.ok(['router', 'show', 'r0'], { json: true })).json[0];
    expect(r.networks.find((n: any) => n.name === 'n10')).toMatchObject({ state: 'ok', dhcp: true });
    expect(r.networks.find((n: any) => n.name === 'n20').state).toMatch(new RegExp(`^dhcp failed: lease file ${bad()}: .*bad ip`));
    expect((await d.ok(['router', 'show'])).stdout).toMatch(/n20 .* dhcp failed: lease file/);
    expect(await metric(mport, 'vswitch_router_failed{router="r0",network="n20",component="dhcp"}')).toBe(1);
    expect(await metric(mport, 'vswitch_router_failed{router="r0",network="n10",component="dhcp"}')).toBe(0);
    const res = await d.cli(['dhcp', 'reservation', 'add', 'n20', '02:00:00:00:99:01', '10.76.20.50']);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/DHCP server of n20 is disabled/);
  });

  it('the other network serves leases and routes; another bridge forwards; the failed network hands out nothing', async () => {
    const a = await udhcpcOnce(vmA, { tries: 5 });
    expect(a.code, a.log).toBe(0);
    expect(await pingUntil(vmA.ns, '10.76.10.1')).toBe(true);
    expect(await pingUntil(s1.ns, s2.ip)).toBe(true);
    const b = await udhcpcOnce(vmB, { tries: 2 });
    expect(b.code).not.toBe(0);
    expect(findPort(await d.showJson('br0'), T.b)?.state).toBe('up');
  });

  it('once the file is moved aside, a reload starts the DHCP server again', async () => {
    renameSync(bad(), `${bad()}.broken`);
    const r = await d.ok(['reload']);
    expect(r.stdout).toContain('dhcp on r0/n20');
    const view = (await d.ok(['router', 'show', 'r0'], { json: true })).json[0];
    expect(view.networks.find((n: any) => n.name === 'n20').state).toBe('ok');
    expect(await metric(mport, 'vswitch_router_failed{router="r0",network="n20",component="dhcp"}')).toBe(0);
    const b = await udhcpcOnce(vmB, { tries: 5 });
    expect(b.code, b.log).toBe(0);
    expect(b.lease?.ip).toMatch(/^10\.76\.20\./);
  });
});

/**
 * A daemon in its own namespace (the "host") with a host uplink, whose state
 * directory is a 256 KiB tmpfs private to the daemon's mount namespace (gone with
 * it), holding `files` before the start.
 */
async function hostDaemon(tap: string, files: Record<string, string>): Promise<{ d: Daemon; H: string; dir: string }> {
  trackLink(tap);
  const dir = join(tempDir('gfwd'), 'state');
  const H = nsname(`g${tap.slice(-2)}`);
  await addNamespace(H);
  await quietNamespace(H);
  const put = Object.entries(files).map(([name, text]) => `printf %s ${q(text)} > ${dir}/${name}`).join(' && ') || 'true';
  const wrap = ['unshare', '-m', '--propagation', 'private', '--', 'sh', '-c',
    `mkdir -p ${dir} && mount -t tmpfs -o size=256k,mode=0700 tmpfs ${dir} && ${put} && exec "$@"`, 'sh'];
  const d = await startDaemon({
    stateDir: dir,
    bridges: { br0: { ports: { [tap]: { type: 'tap', vlan: { mode: 'access', vid: 10 } } } } },
    routers: {
      r0: {
        uplink: { kind: 'host', dns: ['192.0.2.53'], icmp: false },
        forwards: [{ proto: 'tcp', port: P_CONF, to: '10.78.10.50:80' }],
        networks: { n10: { bridge: 'br0', vlan: 10, address: '10.78.10.1/24' } },
      },
    },
  }, { netns: H, wrap });
  return { d, H, dir };
}

const P_CONF = 18080;
const P_OK = 18081;
const P_FULL = 18082;

describe('forwards: a file that cannot be read disables only the runtime forwards', () => {
  let d: Daemon;
  let H: string;
  let DIR: string;
  const inMounts = (cmd: string): Promise<string> => sh(`nsenter -t ${d.proc.pid} -m -n sh -c ${q(cmd)}`);
  const listening = async (port: number): Promise<boolean> => new RegExp(`:${port}\\s`).test(await nsExec(H, 'ss -Hltn'));

  beforeAll(async () => {
    ({ d, H, dir: DIR } = await hostDaemon(ifname('gf'), { 'forwards-r0.json': '{"version":1,"forwards":[' }));
  }, 60_000);

  afterAll(async () => {
    await d?.stop();
    await cleanup();
  });

  it('the config forward listens, runtime ones are refused, router show and the log say why', async () => {
    expect(d.alive()).toBe(true);
    expect(d.logsMatching('forwards_failed')[0]?.obj?.file).toBe(`${DIR}/forwards-r0.json`);
    const r = (await d.ok(['router', 'show', 'r0'], { json: true })).json[0];
    expect(r.forwards).toMatch(/^failed: .*forwards-r0\.json/);
    await waitFor('the config forward to listen', () => listening(P_CONF));
    const add = await d.cli(['nat', 'forward', 'add', 'tcp', String(P_OK), '10.78.10.50:81']);
    expect(add.code).toBe(1);
    expect(add.stderr).toMatch(/runtime forwards of router r0 are disabled: .*move the file aside and reload/);
    expect((await inMounts(`cat ${DIR}/forwards-r0.json`))).toBe('{"version":1,"forwards":[');
  });

  it('fixed and reloaded: runtime forwards work again', async () => {
    await inMounts(`rm ${DIR}/forwards-r0.json`);
    const r = await d.ok(['reload']);
    expect(r.stdout).toContain('forwards file of r0 read again');
    await d.ok(['nat', 'forward', 'add', 'tcp', String(P_OK), '10.78.10.50:81']);
    await waitFor('the runtime forward to listen', () => listening(P_OK));
  });
});

describe('a forward or a bridge that cannot be persisted is refused and leaves nothing behind', () => {
  let d: Daemon;
  let H: string;
  let DIR: string;
  const inMounts = (cmd: string): Promise<string> => sh(`nsenter -t ${d.proc.pid} -m -n sh -c ${q(cmd)}`);
  const listening = async (port: number): Promise<boolean> => new RegExp(`:${port}\\s`).test(await nsExec(H, 'ss -Hltn'));

  beforeAll(async () => {
    ({ d, H, dir: DIR } = await hostDaemon(ifname('gp'), {}));
  }, 60_000);

  afterAll(async () => {
    await d?.stop();
    await cleanup();
  });

  it('state directory full: nat forward add is refused with no listener and no rule; addbr is refused with no bridge', async () => {
    await d.ok(['nat', 'forward', 'add', 'tcp', String(P_OK), '10.78.10.50:81']);
    await waitFor('the runtime forward to listen', () => listening(P_OK));
    await inMounts(`dd if=/dev/zero of=${DIR}/fill bs=4k 2>/dev/null; true`);
    const add = await d.cli(['nat', 'forward', 'add', 'tcp', String(P_FULL), '10.78.10.50:82']);
    expect(add.code).toBe(1);
    expect(add.stderr).toMatch(/ENOSPC/);
    await sleep(1500);
    expect(await listening(P_FULL), 'no listener left behind').toBe(false);
    expect(add.stderr).toMatch(/cannot keep the forward in .*forwards-r0\.json: .*it was not added/);
    expect(await listening(P_OK)).toBe(true);
    const rows = (await d.ok(['nat', 'forward', 'show'], { json: true })).json;
    expect(rows.map((f: any) => f.public).sort()).toEqual([String(P_CONF), String(P_OK)]);
    const br = await d.cli(['addbr', 'brfull']);
    expect(br.code).toBe(1);
    expect(br.stderr).toMatch(/cannot keep the change in .*runtime\.json: .*ENOSPC.*nothing was changed/);
    expect((await d.showJson()).map((b: any) => b.name)).toEqual(['br0']);
    await inMounts(`rm ${DIR}/fill`);
    await d.ok(['nat', 'forward', 'add', 'tcp', String(P_FULL), '10.78.10.50:82']);
    await waitFor('the forward, once it could be kept', () => listening(P_FULL));
  });
});
