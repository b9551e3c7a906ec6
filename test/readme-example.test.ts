/*
 * The README's own "Using it" example, run as an operator would type it (issue 18:
 * on main its `vlan add dev vm1 vid 30 pvid untagged` moved the VM's untagged
 * traffic to VLAN 30 and switched its guards off, cutting it off from its gateway).
 * Every `vswitch` line of the block runs against a daemon whose VLAN 10 has a router
 * with DHCP (so vm1's port is guarded by default); names are made unique (vm1, vm2,
 * eth1: an existing veth to a "lan" namespace). Every command must succeed, and
 * afterwards vm1 gets a DHCP lease and reaches its gateway, and the static MAC entry
 * and the port options are there.
 *
 * The NAT-mode section's busybox udhcpc step (issue 18: without a script udhcpc
 * configures nothing) is run as written in a VM, with its files moved to a temp dir
 * and a one-shot flag added: the VM gets the leased address, the default route and
 * the DNS server.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, findPort, macEntries, startDaemon } from './helpers/daemon.js';
import { makeDhcpVm, udhcpcOnce } from './helpers/dhcp.js';
import { REPO, addNamespace, addVeth, cleanup, ifname, nsExec, nsname, q, sh, tempDir, trackLink } from './helpers/run.js';
import { pingUntil } from './helpers/vm.js';

const NAMES: Record<string, string> = { vm1: ifname('ue1'), vm2: ifname('ue2'), eth1: ifname('ueth') };

/** The `vswitch` commands of the first sh block under "## Using it", one per element, daemon and monitor left out. */
function exampleCommands(): string[][] {
  const text = readFileSync(join(REPO, 'README.md'), 'utf8');
  const at = text.indexOf('## Using it');
  const block = text.slice(text.indexOf('```sh', at) + 5, text.indexOf('```', text.indexOf('```sh', at) + 5));
  return block.split('\n')
    .map((l) => l.replace(/\s+#.*$/, '').trim())
    .flatMap((l) => l.split(';').map((c) => c.trim()))
    .filter((c) => c.startsWith('vswitch ') && !/^vswitch (daemon|monitor)\b/.test(c))
    .map((c) => c.split(/\s+/).slice(1).map((w) => NAMES[w] ?? w));
}

describe('the README "Using it" example', () => {
  let d: Daemon;
  const lan = nsname('ulan');

  beforeAll(async () => {
    Object.values(NAMES).forEach(trackLink);
    await addNamespace(lan);
    const peer = ifname('ulp');
    await addVeth(NAMES.eth1, peer);
    await sh(`ip link set ${peer} netns ${lan} && ip link set ${NAMES.eth1} up && ip -n ${lan} link set ${peer} up`);
    d = await startDaemon({
      bridges: { br0: {} },
      routers: { r0: { networks: { net10: { bridge: 'br0', vlan: 10, address: '10.73.10.1/24', dhcp: { pool: ['10.73.10.100-10.73.10.120'], dns: ['192.0.2.53'] } } } } },
    });
  });
  afterAll(async () => {
    await d?.stop();
    await cleanup();
  });

  it('every command succeeds, and vm1 still gets its lease and reaches its gateway', async () => {
    const cmds = exampleCommands();
    expect(cmds.length).toBeGreaterThanOrEqual(8);
    expect(cmds.map((c) => c[0])).toEqual(expect.arrayContaining(['addbr', 'addif', 'vlan', 'fdb', 'show']));
    for (const c of cmds) {
      const r = await d.cli(c);
      expect(r.code, `vswitch ${c.join(' ')}: ${r.stderr}`).toBe(0);
      expect(r.stderr, `vswitch ${c.join(' ')} warned`).toBe('');
    }
    const vm1 = await makeDhcpVm('ue1', NAMES.vm1);
    const lease = await udhcpcOnce(vm1, { tries: 5 });
    expect(lease.code, lease.log).toBe(0);
    expect(lease.lease?.ip).toMatch(/^10\.73\.10\./);
    expect(await pingUntil(vm1.ns, '10.73.10.1')).toBe(true);
    // What the example set is in force.
    const v = await d.showJson();
    expect(findPort(v, NAMES.vm1)).toMatchObject({ vlan: { mode: 'access', pvid: 10 }, guard: { dhcp: true, ipSource: true } });
    expect(findPort(v, NAMES.eth1).vlan.members.map((m: any) => m.vid)).toEqual(expect.arrayContaining([10, 20, 30]));
    const macs = macEntries((await d.ok(['fdb', 'show'], { json: true })).json);
    expect(macs.find((e) => e.mac === '02:00:00:00:00:01')).toMatchObject({ port: NAMES.vm1, vlan: 10 });
  });

  it('the NAT-mode udhcpc step configures the VM: address, default route, DNS', async () => {
    const text = readFileSync(join(REPO, 'README.md'), 'utf8');
    const at = text.indexOf("**The VM's side**");
    expect(at).toBeGreaterThan(0);
    const start = text.indexOf('```sh', at) + 5;
    const block = text.slice(start, text.indexOf('```', start));
    expect(block).toMatch(/busybox udhcpc -i eth0 -s /);
    const dir = tempDir('udhcpc');
    const tap = ifname('ue3');
    trackLink(tap);
    await d.ok(['addif', 'br0', tap, '--vlan', '10']);
    const vm = await makeDhcpVm('ue3', tap);
    // As written, but its files in a temp dir (never the host's /etc), the NIC's name, and one shot (-q -n) instead of a daemon.
    const script = block.replaceAll('/etc/udhcpc.sh', join(dir, 'udhcpc.sh')).replaceAll('/etc/resolv.conf', join(dir, 'resolv.conf'))
      .replace('busybox udhcpc -i eth0', `busybox udhcpc -q -n -t 5 -T 1 -i ${tap}`);
    expect(script).not.toMatch(/\/etc\//);
    await nsExec(vm.ns, `bash -c ${q(script)}`, { timeoutMs: 30_000 });
    const addr = await nsExec(vm.ns, `ip -4 -br addr show ${tap}`);
    expect(addr).toMatch(/10\.73\.10\.1\d\d\/24/);
    expect(await nsExec(vm.ns, 'ip route show default')).toMatch(/default via 10\.73\.10\.1 dev/);
    expect(readFileSync(join(dir, 'resolv.conf'), 'utf8')).toBe('nameserver 192.0.2.53\n');
  });
});
