/*
 * One daemon, one bridge, four TAP "VMs": vm1, vm2, vm4 access VLAN 10, vm3 access
 * VLAN 20, all in one IP subnet so that only the switch keeps VLAN 20 apart.
 * - same VLAN reaches, other VLAN does not (ping and ARP);
 * - broadcast (ARP) floods within the VLAN only;
 * - once learned, unicast goes to its port only (a third VM sees none of it);
 * - the MAC table and the counters say so too.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Daemon, RX_BYTES, RX_FRAMES, TX_BYTES, TX_FRAMES, dropCount, findPort, macEntries, num, startDaemon,
} from './helpers/daemon.js';
import { cleanup, ifname } from './helpers/run.js';
import {
  arping, captureDuring, makeVm, neigh, neighResolved, ping, pingCount, pingUntil, tcpdump, type Vm,
} from './helpers/vm.js';

const BR = 'br0';
const T = { vm1: ifname('vm1'), vm2: ifname('vm2'), vm3: ifname('vm3'), vm4: ifname('vm4') };

describe('VLAN isolation on one bridge', () => {
  let d: Daemon;
  let vm1: Vm, vm2: Vm, vm3: Vm, vm4: Vm;

  beforeAll(async () => {
    d = await startDaemon({
      bridges: {
        [BR]: {
          ports: {
            [T.vm1]: { type: 'tap', persistent: false, vlan: { mode: 'access', vid: 10 } },
            [T.vm2]: { type: 'tap', persistent: false, vlan: { mode: 'access', vid: 10 } },
            [T.vm3]: { type: 'tap', persistent: false, vlan: { mode: 'access', vid: 20 } },
            [T.vm4]: { type: 'tap', persistent: false, vlan: { mode: 'access', vid: 10 } },
          },
        },
      },
    });
    vm1 = await makeVm('vm1', T.vm1, '10.10.0.1/24');
    vm2 = await makeVm('vm2', T.vm2, '10.10.0.2/24');
    vm3 = await makeVm('vm3', T.vm3, '10.10.0.3/24');
    vm4 = await makeVm('vm4', T.vm4, '10.10.0.4/24');
  });

  afterAll(async () => {
    await d?.stop();
    await cleanup();
  });

  let vm3Saw: string[] = [];

  it('VMs of VLAN 10 reach each other and ARP floods to VLAN 10 only', async () => {
    const cap3 = await tcpdump(vm3.ns, vm3.ifname);
    const cap4 = await tcpdump(vm4.ns, vm4.ifname, 'arp');
    expect(await pingUntil(vm1.ns, vm2.ip), 'vm1 -> vm2 (both VLAN 10)').toBe(true);
    expect(await ping(vm2.ns, vm1.ip), 'vm2 -> vm1').toBe(true);
    const arp4 = await cap4.stop();
    // vm1's broadcast "who-has vm2" was flooded to vm4 (same VLAN, MAC unknown then).
    expect(arp4.some((l) => l.includes(`${vm1.mac} > ff:ff:ff:ff:ff:ff`) && /who-has 10\.10\.0\.2 tell 10\.10\.0\.1/.test(l)),
      `vm4 should have seen vm1's broadcast ARP:\n${arp4.join('\n')}`).toBe(true);
    expect(arp4.every((l) => !/802\.1Q|vlan \d+/.test(l)), `frames on an access port are untagged:\n${arp4.join('\n')}`).toBe(true);
    vm3Saw = await cap3.stop();
    expect(vm3Saw.filter((l) => l.includes(vm1.mac) || l.includes(vm2.mac)),
      'vm3 (VLAN 20) must see nothing of VLAN 10').toEqual([]);
  });

  it('VLAN 10 does not reach VLAN 20: no ping, no ARP', async () => {
    const lines = await captureDuring(vm3.ns, vm3.ifname, '', async () => {
      expect(await ping(vm1.ns, vm3.ip, { count: 3, timeoutSec: 2 }), 'vm1 (10) -> vm3 (20) must fail').toBe(false);
      expect(await arping(vm1.ns, vm1.ifname, vm3.ip, { count: 2, timeoutSec: 2 }), 'arping vm1 -> vm3 must get no reply').toBe(false);
      expect(await ping(vm3.ns, vm1.ip, { count: 2, timeoutSec: 2 }), 'vm3 -> vm1 must fail').toBe(false);
      expect(await ping(vm3.ns, vm4.ip, { count: 2, timeoutSec: 2 }), 'vm3 -> vm4 must fail').toBe(false);
    });
    const n = await neigh(vm1.ns, vm3.ip);
    expect(neighResolved(n), `vm1 must not have resolved vm3: "${n}"`).toBe(false);
    expect(n.includes(vm3.mac), `vm1's neighbour table must not know vm3's MAC: "${n}"`).toBe(false);
    expect(lines.filter((l) => l.includes(vm1.mac)), 'vm3 saw frames from vm1').toEqual([]);
    expect(lines.filter((l) => /ARP.*tell 10\.10\.0\.1/.test(l)), 'vm3 saw ARP from vm1').toEqual([]);
    // Positive control: vm3's own ARP went out (so the capture was live) but got no answer.
    expect(lines.some((l) => l.includes(vm3.mac) && /who-has 10\.10\.0\.[14]/.test(l)),
      `capture on vm3 should show vm3's own unanswered ARP:\n${lines.join('\n')}`).toBe(true);
    expect(lines.some((l) => /Reply/.test(l)), 'no ARP reply may reach vm3').toBe(false);
  });

  it('after learning, unicast vm1 -> vm2 is not seen by vm4', async () => {
    // Both directions once more so both MACs are fresh in the table.
    expect(await ping(vm1.ns, vm2.ip, { count: 1 })).toBe(true);
    expect(await ping(vm2.ns, vm1.ip, { count: 1 })).toBe(true);
    let replies = 0;
    const lines = await captureDuring(vm4.ns, vm4.ifname, 'icmp or arp', async () => {
      replies = await pingCount(vm1.ns, vm2.ip, 10, 0.1);
    });
    expect(replies, 'vm1 -> vm2 pings answered').toBeGreaterThanOrEqual(9);
    expect(lines.filter((l) => /ICMP/.test(l)), 'vm4 saw unicast ICMP between vm1 and vm2').toEqual([]);
  });

  it('showmacs lists vm1 and vm2 on their ports in VLAN 10', async () => {
    const r = await d.ok(['showmacs', BR], { json: true });
    const macs = macEntries(r.json);
    const e1 = macs.filter((m) => m.mac === vm1.mac);
    const e2 = macs.filter((m) => m.mac === vm2.mac);
    expect(e1.map((m) => [m.port, m.vlan]), JSON.stringify(r.json)).toEqual([[T.vm1, 10]]);
    expect(e2.map((m) => [m.port, m.vlan]), JSON.stringify(r.json)).toEqual([[T.vm2, 10]]);
    // vm3 learned in VLAN 20 only (its unanswered ARP taught the table), never in 10.
    expect(macs.filter((m) => m.mac === vm3.mac && m.vlan !== 20)).toEqual([]);
    // Nothing learned in VLAN 20 from VLAN 10 VMs.
    expect(macs.filter((m) => m.vlan === 20 && m.mac !== vm3.mac)).toEqual([]);
  });

  it('stats count vm1 rx/tx and nothing crossed into VLAN 20', async () => {
    const r = await d.ok(['stats', BR], { json: true });
    const p1 = findPort(r.json, T.vm1);
    expect(p1, `vm1 in stats: ${JSON.stringify(r.json)}`).toBeDefined();
    expect(num(p1, ...RX_FRAMES), JSON.stringify(p1)).toBeGreaterThan(0);
    expect(num(p1, ...TX_FRAMES), JSON.stringify(p1)).toBeGreaterThan(0);
    expect(num(p1, ...RX_BYTES), JSON.stringify(p1)).toBeGreaterThan(0);
    expect(num(p1, ...TX_BYTES), JSON.stringify(p1)).toBeGreaterThan(0);
    // At least the 10 + 3 echo requests vm1 sent to vm2 (plus ARP), in frames.
    expect(num(p1, ...RX_FRAMES)).toBeGreaterThanOrEqual(13);
    expect(dropCount(p1, 'vlan_tagged_on_access')).toBe(0);
    // vm3 is alone in VLAN 20: the switch must never have written a frame to it.
    const p3 = findPort(r.json, T.vm3);
    expect(p3, `vm3 in stats: ${JSON.stringify(r.json)}`).toBeDefined();
    expect(num(p3, ...TX_FRAMES), `vm3 tx: ${JSON.stringify(p3)}`).toBe(0);
    expect(num(p3, ...RX_FRAMES), `vm3 rx (its own ARPs): ${JSON.stringify(p3)}`).toBeGreaterThan(0);
    expect(d.alive()).toBe(true);
  });
});
