/*
 * VLAN hopping from an access port. vm1 (access 10) sends crafted frames with
 * scapy: 802.1Q-tagged for VLAN 20, double-tagged (10/20 and priority 0/20), and
 * 802.1ad S-tagged. None may reach vm3 (access 20), nor leave through a trunk
 * (allowed 10, 20) whose far side is a namespace running tcpdump, nor reach vm2
 * (access 10): an access port drops every tagged frame, counted as
 * vlan_tagged_on_access. A plain priority-tagged frame (VID 0) is admitted into
 * VLAN 10 and reaches vm2 untagged.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, dropCount, findPort, macEntries, startDaemon } from './helpers/daemon.js';
import { addNamespace, addVeth, cleanup, ifname, nsExec, nsname, sh, untrackLink } from './helpers/run.js';
import { makeVm, ping, pingUntil, quietNamespace, tcpdump, type Vm } from './helpers/vm.js';
import {
  arpRequest, doubleTagged, icmpEcho, priorityTagged, sendFrames, sTagged, tagged,
} from './helpers/scapy.js';

const BR = 'br0';
const BCAST = 'ff:ff:ff:ff:ff:ff';
const T = { vm1: ifname('vm1'), vm2: ifname('vm2'), vm3: ifname('vm3'), trunk: ifname('tr0'), far: ifname('tr1') };

describe('no VLAN hopping from an access port', () => {
  let d: Daemon;
  let vm1: Vm, vm2: Vm, vm3: Vm;
  const farNs = nsname('far');

  beforeAll(async () => {
    // The trunk: a veth whose root end the daemon attaches, the far end in its own namespace.
    await addVeth(T.trunk, T.far);
    await addNamespace(farNs);
    await quietNamespace(farNs);
    await sh(`ip link set ${T.far} netns ${farNs}`);
    untrackLink(T.far); // goes with the namespace
    await nsExec(farNs, `ip link set ${T.far} up`);
    await sh(`sysctl -qw net.ipv6.conf.${T.trunk}.disable_ipv6=1; ip link set ${T.trunk} up`);

    d = await startDaemon({
      bridges: {
        [BR]: {
          ports: {
            [T.vm1]: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
            [T.vm2]: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
            [T.vm3]: { type: 'tap', vlan: { mode: 'access', vid: 20 } },
            [T.trunk]: { type: 'attach', vlan: { mode: 'trunk', allowed: [10, 20] } },
          },
        },
      },
    });
    vm1 = await makeVm('vm1', T.vm1, '10.10.0.1/24');
    vm2 = await makeVm('vm2', T.vm2, '10.10.0.2/24');
    vm3 = await makeVm('vm3', T.vm3, '10.10.0.3/24');
  });

  afterAll(async () => {
    await d?.stop();
    await cleanup();
  });

  it('the ports forward at all (control)', async () => {
    expect(await pingUntil(vm1.ns, vm2.ip), 'vm1 -> vm2 in VLAN 10').toBe(true);
    expect(await ping(vm1.ns, vm3.ip, { count: 2, timeoutSec: 2 }), 'vm1 -> vm3 across VLANs').toBe(false);
  });

  it('tagged, double-tagged and S-tagged frames from vm1 reach neither VLAN 20 nor the trunk nor vm2', async () => {
    const before = dropCount(findPort((await d.ok(['stats', BR], { json: true })).json, T.vm1), 'vlan_tagged_on_access');
    const arp3 = arpRequest(vm1.mac, vm1.ip, vm3.ip);
    const icmp3 = icmpEcho(vm1.ip, vm3.ip, 'vlan-hop');
    const frames = [
      tagged(vm1.mac, BCAST, 20, arp3),                 // 802.1Q VID 20, broadcast
      tagged(vm1.mac, vm3.mac, 20, icmp3),              // 802.1Q VID 20, to vm3's MAC
      tagged(vm1.mac, vm3.mac, 20, icmp3, 7),           // same with PCP 7
      tagged(vm1.mac, BCAST, 10, arp3),                 // 802.1Q with its own VID: still tagged on access
      doubleTagged(vm1.mac, BCAST, 10, 20, arp3),       // outer 10 (own VLAN), inner 20
      doubleTagged(vm1.mac, vm3.mac, 10, 20, icmp3),
      doubleTagged(vm1.mac, BCAST, 0, 20, arp3),        // outer priority tag, inner 20
      doubleTagged(vm1.mac, vm3.mac, 0, 20, icmp3),
      sTagged(vm1.mac, BCAST, 20, arp3),                // 802.1ad S-tag 20
      sTagged(vm1.mac, vm3.mac, 10, icmp3, 20),         // S-tag 10 + C-tag 20
      sTagged(vm1.mac, BCAST, 20, arp3, 20),            // S-tag 20 + C-tag 20
    ];
    const cap3 = await tcpdump(vm3.ns, vm3.ifname);
    const capFar = await tcpdump(farNs, T.far);
    const cap2 = await tcpdump(vm2.ns, vm2.ifname);
    const sent = await sendFrames(vm1.ns, vm1.ifname, frames, 3);
    expect(sent).toBe(frames.length * 3);
    const [l3, lFar, l2] = [await cap3.stop(500), await capFar.stop(0), await cap2.stop(0)];

    expect(l3.filter((l) => l.includes(vm1.mac)), 'vm3 (VLAN 20) saw frames from vm1').toEqual([]);
    expect(lFar.filter((l) => l.includes(vm1.mac)), 'the trunk carried frames from vm1').toEqual([]);
    expect(lFar.filter((l) => /vlan 20/.test(l)), 'the trunk carried VLAN 20 frames').toEqual([]);
    // vm2 shares VLAN 10 with vm1, so its kernel may refresh its ARP entry for vm1 meanwhile: only
    // the crafted frames count (all of them are about vm3's address, or still carry a tag).
    const crafted = (l: string): boolean => l.includes(vm1.mac) && (l.includes(vm3.ip) || /vlan \d|802\.1/.test(l));
    expect(l2.filter(crafted), 'vm2 saw tagged frames from vm1').toEqual([]);

    const stats = (await d.ok(['stats', BR], { json: true })).json;
    const after = dropCount(findPort(stats, T.vm1), 'vlan_tagged_on_access');
    expect(after - before, `vlan_tagged_on_access on vm1: ${JSON.stringify(findPort(stats, T.vm1))}`).toBeGreaterThanOrEqual(sent);
    // Nothing of it was learned: vm1's MAC must not appear in VLAN 20.
    const macs = (await d.ok(['showmacs', BR], { json: true })).json;
    expect(macEntries(macs).filter((m) => m.mac === vm1.mac && m.vlan !== 10), JSON.stringify(macs)).toEqual([]);
    expect(d.alive()).toBe(true);
  });

  it('a priority-tagged frame (VID 0) is admitted into VLAN 10 and reaches vm2 untagged', async () => {
    const frame = priorityTagged(vm1.mac, BCAST, arpRequest(vm1.mac, vm1.ip, vm2.ip), 5);
    const cap2 = await tcpdump(vm2.ns, vm2.ifname, 'arp or vlan');
    const cap3 = await tcpdump(vm3.ns, vm3.ifname);
    const capFar = await tcpdump(farNs, T.far);
    const sent = await sendFrames(vm1.ns, vm1.ifname, [frame], 3);
    const [l2, l3, lFar] = [await cap2.stop(500), await cap3.stop(0), await capFar.stop(0)];
    const fromVm1 = l2.filter((l) => l.includes(`${vm1.mac} > ${BCAST}`));
    expect(fromVm1.length, `vm2 should see the ${sent} priority-tagged ARPs:\n${l2.join('\n')}`).toBeGreaterThanOrEqual(sent);
    for (const l of fromVm1) {
      expect(l, 'delivered untagged on an access port').toMatch(/ethertype ARP \(0x0806\)/);
      expect(l).not.toMatch(/802\.1Q|vlan \d+/);
    }
    expect(l3.filter((l) => l.includes(vm1.mac)), 'vm3 must not see it').toEqual([]);
    // Flooded in VLAN 10 to the trunk, tagged 10 there.
    const onTrunk = lFar.filter((l) => l.includes(`${vm1.mac} > ${BCAST}`));
    expect(onTrunk.length, `the trunk should carry it:\n${lFar.join('\n')}`).toBeGreaterThanOrEqual(sent);
    for (const l of onTrunk) expect(l).toMatch(/vlan 10, p \d/);
  });
});
