/*
 * Duplicate Address Detection of the uplink's own IPv6 address (uplink6.ts)
 * through the real daemon: the "internet" namespace already holds the address
 * the config gives the router's uplink, so its kernel answers the router's DAD
 * probe. The router must not use the address: `router show` says DAD failed and
 * names the other node's MAC, the log has `uplink6_dad_failed`, the metric counts
 * the conflict, the networks' RAs keep router lifetime 0. A reload to a free
 * address probes again and uses it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { Daemon, startDaemon, toYaml } from './helpers/daemon.js';
import { makeInternet, type Internet } from './helpers/inet.js';
import { PREFIX, cleanup, freePort, nsExec, nsExecR, q, waitFor } from './helpers/run.js';

const X = 20 + (parseInt(PREFIX.slice(1), 16) % 200);
const INET6 = `2001:db8:${X}:1::1`;
const TAKEN = `2001:db8:${X}:1::2`;
const FREE = `2001:db8:${X}:1::3`;

function config(uplink: string, metricsPort: number, address: string): object {
  return {
    metrics: { listen: `127.0.0.1:${metricsPort}` },
    bridges: { br0: {} },
    routers: {
      r1: {
        uplink: { interface: uplink, address: '198.51.100.2/24', gateway: '198.51.100.1', ipv6: { address: `${address}/64`, gateway: INET6 } },
        networks: { net10: { bridge: 'br0', vlan: 10, address: `10.${X}.10.1/24`, ipv6: { address: `2001:db8:${X}:10::1/64` } } },
      },
    },
  };
}

describe('DAD for the uplink\'s IPv6 address', () => {
  let d: Daemon;
  let inet: Internet;
  let metricsPort: number;
  let inetMac: string;
  const view = async (): Promise<any> => (await d.ok(['router', 'show', 'r1'], { json: true })).json[0];

  beforeAll(async () => {
    inet = await makeInternet('dad');
    await nsExec(inet.ns, [
      'sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0',
      `sysctl -qw net.ipv6.conf.${inet.ifname}.disable_ipv6=0 net.ipv6.conf.${inet.ifname}.accept_ra=0`,
      `ip -6 addr add ${INET6}/64 dev ${q(inet.ifname)} nodad`,
      // The address the router's config claims: another node has it already.
      `ip -6 addr add ${TAKEN}/64 dev ${q(inet.ifname)} nodad`,
    ].join(' && '));
    inetMac = (await nsExec(inet.ns, `cat /sys/class/net/${inet.ifname}/address`)).trim().toLowerCase();
    metricsPort = await freePort();
    d = await startDaemon(config(inet.uplink, metricsPort, TAKEN));
  }, 60_000);

  afterAll(async () => {
    if (d?.alive()) await d.stop();
    await cleanup();
  });

  it('a taken address is not used: router show, the log and the metric say so; the RAs keep router lifetime 0', async () => {
    await waitFor('DAD to fail', async () => (await view()).ipv6.uplink.dad === 'duplicate', { timeoutMs: 15_000 });
    const up = (await view()).ipv6.uplink;
    expect(up).toMatchObject({ address: '', dad: 'duplicate', tentativeAddress: `${TAKEN}/64`, conflictMac: inetMac });
    expect((await d.ok(['router', 'show', 'r1'])).stdout).toContain(`uplink ipv6: (DAD failed: ${TAKEN}/64 is in use by ${inetMac})`);
    const line = await d.waitForLog('uplink6_dad_failed');
    expect(line.obj).toMatchObject({ address: TAKEN, mac: inetMac });
    const m = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    expect(m).toMatch(/^vswitch_router_uplink6_dad_total\{router="r1",result="conflict"\} 1$/m);
    expect(m).toMatch(/^vswitch_router_uplink6_dad_total\{router="r1",result="probe"\} [1-9]/m);
    const net10 = (await view()).networks.find((n: any) => n.name === 'net10');
    expect(net10.ipv6.routerLifetime).toBe(0);
  });

  it('a reload to a free address probes again and uses it; the networks become routed', async () => {
    writeFileSync(d.configFile, toYaml({ ...(config(inet.uplink, metricsPort, FREE) as object), stateDir: `${d.dir}/state` }));
    await d.ok(['reload']);
    await waitFor('the free address in use', async () => (await view()).ipv6.uplink.dad === 'preferred', { timeoutMs: 15_000 });
    expect((await view()).ipv6.uplink.address).toBe(`${FREE}/64`);
    await waitFor('a router lifetime', async () => (await view()).networks.find((n: any) => n.name === 'net10').ipv6.routerLifetime > 0, { timeoutMs: 5000 });
    // The upstream reaches it: the router answers for its address now.
    const ping = await nsExecR(inet.ns, `busybox ping -6 -c 1 -W 2 ${FREE}`, { timeoutMs: 10_000 });
    expect(ping.stdout).toMatch(/bytes from/);
  });
});
