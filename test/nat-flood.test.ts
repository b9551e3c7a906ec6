/*
 * NAT session flood (issue 6 item 2): a flood of new flows from one inside host
 * is bounded by `nat.maxSessionsPerHost`, the refusals are counted as host_limit,
 * and another inside host keeps working through the NAT.
 *
 * Router r0: one network net10 (VLAN 10, 10.61.10.0/24, no DHCP server, so the
 * anti-spoofing guards are off) on bridge br0, uplink on a veth to an "internet"
 * namespace (198.51.100.1/24; router 198.51.100.2). maxSessionsPerHost = 200.
 *   attacker 10.61.10.21: sends one UDP datagram from each of 3000 source ports
 *   victim   10.61.10.22: ping, HTTP fetch and UDP echo to the internet
 * Internet: python http.server :8000, UDP echo :7 (the flood goes to :9, unbound).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, startDaemon } from './helpers/daemon.js';
import { makeInternet, udpSend, udpTool, type Internet } from './helpers/inet.js';
import { cleanup, ifname, nsExec, nsExecR, q, tempDir, waitFor } from './helpers/run.js';
import { Background, makeVm, pingUntil, type Vm } from './helpers/vm.js';

const BR = 'br0';
const T = { attacker: ifname('fa'), victim: ifname('fv') };
const PUB = '198.51.100.2';
const INET = '198.51.100.1';
const GW = '10.61.10.1';
const ATT = '10.61.10.21';
const VIC = '10.61.10.22';
const PER_HOST = 200;
const FLOWS = 3000;
const FLOOD_BASE_PORT = 20000;

function config(stateDir: string, uplink: string): object {
  return {
    stateDir,
    bridges: {
      [BR]: {
        ports: {
          [T.attacker]: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
          [T.victim]: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
        },
      },
    },
    routers: {
      r0: {
        uplink: { interface: uplink, address: `${PUB}/24`, gateway: INET },
        nat: { maxSessionsPerHost: PER_HOST },
        networks: {
          net10: { bridge: BR, vlan: 10, address: `${GW}/24` },
        },
      },
    },
  };
}

/*
 * One datagram from each of N source ports, as fast as the TAP queue allows:
 * bursts of 100 with a 2 ms pause so that the kernel does not drop our own
 * datagrams before the daemon sees them (the TAP's txqueue is ~1000 frames).
 */
const FLOOD_PY = String.raw`
import socket, sys, time
host, dport, base, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
sent = 0
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', base + i))
    try:
        s.sendto(b'flood', (host, dport))
        sent += 1
    except OSError:
        pass
    s.close()
    if i % 100 == 99:
        time.sleep(0.002)
print('sent %d' % sent, flush=True)
`;

async function waitListening(ns: string, proto: 'tcp' | 'udp', port: number): Promise<void> {
  await waitFor(`${proto} port ${port} listening in ${ns}`, async () => {
    const out = await nsExec(ns, proto === 'tcp' ? 'ss -Hltn' : 'ss -Hlun');
    return new RegExp(`:${port}\\s`).test(out);
  }, { timeoutMs: 10_000, intervalMs: 100 });
}

describe('NAT session flood from one inside host', () => {
  let d: Daemon;
  let inet: Internet;
  let attacker: Vm, victim: Vm;
  const servers: Background[] = [];
  let floodPy: string;
  const TOKEN = `inet-flood-${Date.now()}`;

  const routerNat = async (): Promise<any> => (await d.ok(['router', 'show', 'r0'], { json: true })).json[0].nat;
  const sessions = async (): Promise<any[]> => (await d.ok(['nat', 'sessions'], { json: true, timeoutMs: 30_000 })).json;
  const of = (rows: any[], ip: string): any[] => rows.filter((r) => String(r.inside).startsWith(`${ip}:`));

  beforeAll(async () => {
    inet = await makeInternet('finet');
    d = await startDaemon(config(tempDir('state'), inet.uplink));
    attacker = await makeVm('fatt', T.attacker, `${ATT}/24`);
    victim = await makeVm('fvic', T.victim, `${VIC}/24`);
    await nsExec(attacker.ns, `ip route add default via ${GW}`);
    await nsExec(victim.ns, `ip route add default via ${GW}`);

    const www = tempDir('www');
    writeFileSync(join(www, 'hello.txt'), `${TOKEN}\n`);
    const dir = tempDir('flood');
    floodPy = join(dir, 'flood.py');
    writeFileSync(floodPy, FLOOD_PY);
    servers.push(new Background(inet.ns, `/usr/bin/python3 -u -m http.server 8000 --bind 0.0.0.0 --directory ${q(www)}`));
    servers.push(new Background(inet.ns, `/usr/bin/python3 -u ${q(udpTool())} serve 7`));
    await waitListening(inet.ns, 'tcp', 8000);
    await waitListening(inet.ns, 'udp', 7);
    await waitFor('the uplink to be up', async () =>
      String((await d.ok(['router', 'show', 'r0'], { json: true })).json[0].uplink?.state) === 'up');
    // Resolve the gateway first (no session: the router answers its own echoes), so
    // the flood is not held in the ARP queue.
    expect(await pingUntil(attacker.ns, GW), 'attacker -> gateway').toBe(true);
    expect(await pingUntil(victim.ns, GW), 'victim -> gateway').toBe(true);
  });

  afterAll(async () => {
    for (const b of servers) await b.stop();
    await d?.stop();
    await cleanup();
  });

  it(`a flood of ${FLOWS} UDP flows is capped at maxSessionsPerHost=${PER_HOST} (host_limit), the daemon lives, another host still works`, async () => {
    const before = await routerNat();
    expect(before, 'router show: nat stats').toBeTruthy();
    expect(before.refused.host_limit).toBe(0);

    const t0 = Date.now();
    const r = await nsExecR(attacker.ns, `/usr/bin/python3 ${q(floodPy)} ${INET} 9 ${FLOOD_BASE_PORT} ${FLOWS}`, { timeoutMs: 30_000 });
    const floodMs = Date.now() - t0;
    expect(r.code, r.stderr).toBe(0);
    const sent = Number(/sent (\d+)/.exec(r.stdout)?.[1] ?? 0);
    expect(sent, r.stdout).toBe(FLOWS);

    // Wait until the daemon has processed the backlog: the refusal counter settles.
    let last = -1;
    const nat = await waitFor('the host_limit counter to settle', async () => {
      const n = await routerNat();
      const cur = n.refused.host_limit;
      const settled = cur === last && cur + PER_HOST >= sent - 50;
      last = cur;
      return settled ? n : undefined;
    }, { timeoutMs: 15_000, intervalMs: 400 });

    expect(d.alive(), 'daemon alive after the flood').toBe(true);
    const rows = await sessions();
    const att = of(rows, ATT);
    console.log(`[nat-flood] sent ${sent} datagrams in ${floodMs} ms; attacker sessions ${att.length}; ` +
      `refused ${JSON.stringify(nat.refused)}; table sessions ${nat.sessions}, hosts ${nat.hosts}, created ${nat.created}`);
    expect(att.length, 'attacker sessions bounded by maxSessionsPerHost').toBeLessThanOrEqual(PER_HOST);
    expect(att.length, 'attacker got its quota').toBeGreaterThan(PER_HOST / 2);
    expect(att.every((s) => s.proto === 'udp' && s.remote === `${INET}:9`)).toBe(true);
    expect(nat.refused.host_limit, 'refusals counted as host_limit').toBeGreaterThanOrEqual(2000);
    expect(nat.refused.table_full).toBe(0);
    expect(nat.refused.no_port).toBe(0);
    expect(nat.sessions, 'table total').toBeLessThanOrEqual(PER_HOST + 5);

    // The victim, another inside host, still gets sessions: ping, HTTP, UDP echo.
    expect(await pingUntil(victim.ns, INET), 'victim -> internet ping').toBe(true);
    const w = await nsExecR(victim.ns, `timeout 5 busybox wget -q -O - ${q(`http://${INET}:8000/hello.txt`)}`, { timeoutMs: 10_000 });
    expect(w.code, `wget from the victim: ${w.stderr}`).toBe(0);
    expect(w.stdout.trim()).toBe(TOKEN);
    expect(await udpSend(victim.ns, INET, 7, { sport: 41007, msg: 'victim-echo' }), 'victim UDP echo').toBe('reply victim-echo');

    const after = await sessions();
    const vic = of(after, VIC);
    expect(vic.some((s) => s.proto === 'icmp' && s.remote === INET), JSON.stringify(vic)).toBe(true);
    expect(vic.some((s) => s.proto === 'tcp' && s.remote === `${INET}:8000`), JSON.stringify(vic)).toBe(true);
    expect(vic.some((s) => s.proto === 'udp' && s.inside === `${VIC}:41007` && s.remote === `${INET}:7`), JSON.stringify(vic)).toBe(true);
    // The attacker is still capped, and still refused when it tries again.
    expect(of(after, ATT).length).toBeLessThanOrEqual(PER_HOST);
    expect(await udpSend(attacker.ns, INET, 7, { sport: 41008, msg: 'attacker-echo', timeoutSec: 1 }), 'a new attacker flow is refused').toBe('timeout');
    const final = await routerNat();
    expect(final.refused.host_limit).toBeGreaterThan(nat.refused.host_limit);
    expect(d.alive(), 'daemon alive at the end').toBe(true);
  });
});
