/*
 * Two "hosts": two daemons, each with its own config and socket, joined by a veth
 * pair (both ends in the root namespace) that each attaches as a trunk
 * (allowed 10, 20; native 1). Each host has a VM in VLAN 10, one in VLAN 20 and one
 * in VLAN 1 (native). All VMs share one IP subnet, so only the switches keep the
 * VLANs apart. On the link, tcpdump -e must show VLAN 10 and 20 traffic tagged with
 * its VID and native VLAN 1 traffic untagged.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, startDaemon } from './helpers/daemon.js';
import { addVeth, cleanup, ifname, sh } from './helpers/run.js';
import { makeVm, ping, pingCount, pingUntil, tcpdump, type Vm } from './helpers/vm.js';

const BR = 'br0';
const LINK_A = ifname('ta');
const LINK_B = ifname('tb');
const trunk = { mode: 'trunk', allowed: [10, 20], native: 1 };

function hostConfig(host: 'a' | 'b', link: string) {
  return {
    bridges: {
      [BR]: {
        ports: {
          [ifname(`${host}10`)]: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
          [ifname(`${host}20`)]: { type: 'tap', vlan: { mode: 'access', vid: 20 } },
          [ifname(`${host}1`)]: { type: 'tap' }, // no vlan: access VLAN 1
          [link]: { type: 'attach', vlan: trunk },
        },
      },
    },
  };
}

/** Captures on both veth ends while `action` runs; returns all lines. */
async function captureBoth(action: () => Promise<unknown>): Promise<string[]> {
  const ca = await tcpdump(null, LINK_A, 'icmp or arp or vlan');
  const cb = await tcpdump(null, LINK_B, 'icmp or arp or vlan');
  try {
    await action();
  } finally {
    await ca.stop(500);
    await cb.stop(0);
  }
  return [...ca.lines, ...cb.lines];
}

describe('two switches joined by a trunk', () => {
  let da: Daemon, db: Daemon;
  let a10: Vm, a20: Vm, a1: Vm, b10: Vm, b20: Vm, b1: Vm;

  beforeAll(async () => {
    await addVeth(LINK_A, LINK_B);
    for (const l of [LINK_A, LINK_B]) await sh(`sysctl -qw net.ipv6.conf.${l}.disable_ipv6=1; ip link set ${l} up`);
    da = await startDaemon(hostConfig('a', LINK_A));
    db = await startDaemon(hostConfig('b', LINK_B));
    a10 = await makeVm('a10', ifname('a10'), '10.0.0.11/24');
    b10 = await makeVm('b10', ifname('b10'), '10.0.0.12/24');
    a20 = await makeVm('a20', ifname('a20'), '10.0.0.21/24');
    b20 = await makeVm('b20', ifname('b20'), '10.0.0.22/24');
    a1 = await makeVm('a1', ifname('a1'), '10.0.0.1/24');
    b1 = await makeVm('b1', ifname('b1'), '10.0.0.2/24');
  });

  afterAll(async () => {
    await da?.stop();
    await db?.stop();
    await cleanup();
  });

  let link: string[] = [];

  it('carries VLAN 10, VLAN 20 and the native VLAN across, tagged as configured', async () => {
    // Both ends of the link are captured, so each direction is seen wherever it is sent from.
    link = await captureBoth(async () => {
      expect(await pingUntil(a10.ns, b10.ip), 'VLAN 10: a10 -> b10').toBe(true);
      expect(await pingUntil(a20.ns, b20.ip), 'VLAN 20: a20 -> b20').toBe(true);
      expect(await pingUntil(a1.ns, b1.ip), 'native VLAN 1: a1 -> b1').toBe(true);
      expect(await pingCount(b10.ns, a10.ip, 5), 'VLAN 10: b10 -> a10').toBeGreaterThanOrEqual(4);
      expect(await pingCount(b20.ns, a20.ip, 5), 'VLAN 20: b20 -> a20').toBeGreaterThanOrEqual(4);
      expect(await pingCount(b1.ns, a1.ip, 5), 'VLAN 1: b1 -> a1').toBeGreaterThanOrEqual(4);
    });
    const icmp = (a: string, b: string) => link.filter((l) => l.includes(`${a} > ${b}: ICMP echo`));
    const dump = link.join('\n');

    const v10 = [...icmp(a10.ip, b10.ip), ...icmp(b10.ip, a10.ip)];
    expect(v10.length, `VLAN 10 ICMP on the link:\n${dump}`).toBeGreaterThanOrEqual(10);
    for (const l of v10) expect(l, 'VLAN 10 frames are tagged 10 on the trunk').toMatch(/ethertype 802\.1Q \(0x8100\).*vlan 10, p \d+, ethertype IPv4/);

    const v20 = [...icmp(a20.ip, b20.ip), ...icmp(b20.ip, a20.ip)];
    expect(v20.length, `VLAN 20 ICMP on the link:\n${dump}`).toBeGreaterThanOrEqual(10);
    for (const l of v20) expect(l, 'VLAN 20 frames are tagged 20 on the trunk').toMatch(/ethertype 802\.1Q \(0x8100\).*vlan 20, p \d+, ethertype IPv4/);

    const v1 = [...icmp(a1.ip, b1.ip), ...icmp(b1.ip, a1.ip)];
    expect(v1.length, `native VLAN ICMP on the link:\n${dump}`).toBeGreaterThanOrEqual(10);
    for (const l of v1) {
      expect(l, 'native VLAN frames are untagged on the trunk').not.toMatch(/802\.1Q|vlan \d+/);
      expect(l).toMatch(/ethertype IPv4 \(0x0800\)/);
    }
    // ARP of each VLAN carries the same tag as its ICMP.
    const arp10 = link.filter((l) => /who-has 10\.0\.0\.12 tell 10\.0\.0\.11/.test(l));
    expect(arp10.length).toBeGreaterThan(0);
    for (const l of arp10) expect(l).toMatch(/vlan 10,/);
    const arp1 = link.filter((l) => /who-has 10\.0\.0\.2 tell 10\.0\.0\.1\b/.test(l));
    expect(arp1.length).toBeGreaterThan(0);
    for (const l of arp1) expect(l).not.toMatch(/vlan \d+/);
    // No other VIDs, and no VID 1 tag for the native VLAN.
    for (const l of link) {
      const m = /vlan (\d+),/.exec(l);
      if (m) expect(['10', '20'], l).toContain(m[1]);
    }
  });

  it('keeps VLAN 10 and VLAN 20 apart across the trunk and on one host', async () => {
    const lines = await captureBoth(async () => {
      expect(await ping(a10.ns, b20.ip, { count: 2, timeoutSec: 2 }), 'a10 -> b20').toBe(false);
      expect(await ping(b20.ns, a10.ip, { count: 2, timeoutSec: 2 }), 'b20 -> a10').toBe(false);
      expect(await ping(a10.ns, a20.ip, { count: 2, timeoutSec: 2 }), 'a10 -> a20 (same host)').toBe(false);
      expect(await ping(b10.ns, a1.ip, { count: 2, timeoutSec: 2 }), 'b10 -> a1 (native)').toBe(false);
      expect(await ping(a1.ns, b20.ip, { count: 2, timeoutSec: 2 }), 'a1 (native) -> b20').toBe(false);
    });
    // The requests that did cross were flooded in their own VLAN only.
    for (const l of lines) {
      if (/who-has 10\.0\.0\.22 tell 10\.0\.0\.11/.test(l)) expect(l).toMatch(/vlan 10,/);
      if (/who-has 10\.0\.0\.11 tell 10\.0\.0\.22/.test(l)) expect(l).toMatch(/vlan 20,/);
      if (/who-has 10\.0\.0\.1 tell 10\.0\.0\.12/.test(l)) expect(l).toMatch(/vlan 10,/);
      if (/who-has 10\.0\.0\.22 tell 10\.0\.0\.1\b/.test(l)) expect(l).not.toMatch(/vlan/);
    }
    // And the same-VLAN paths still work afterwards.
    expect(await ping(a10.ns, b10.ip, { count: 1 })).toBe(true);
    expect(await ping(a20.ns, b20.ip, { count: 1 })).toBe(true);
    expect(da.alive() && db.alive()).toBe(true);
  });
});
