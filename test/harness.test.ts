/*
 * Self-check of the test harness and the machine, without the daemon: namespaces,
 * busybox ping, tcpdump -e showing 802.1Q tags on a veth, scapy frames, cleanup.
 * If this file fails, the other integration tests cannot tell anything.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { addNamespace, addVeth, cleanup, ifname, nsExec, nsname, shr } from './helpers/run.js';
import { captureDuring, ping, quietNamespace } from './helpers/vm.js';
import { PYTHON, sendFrames, tagged, doubleTagged, arpRequest } from './helpers/scapy.js';

describe('harness', () => {
  afterAll(cleanup);

  it('has the tools the tests use', async () => {
    for (const t of ['ip -V', 'tcpdump --version', 'busybox ping --help', 'busybox arping --help', 'socat -V', 'iperf3 -v', 'ethtool --version', 'setpriv --version']) {
      const r = await shr(t);
      expect(r.code, `${t}: ${r.stderr}`).toBe(0);
    }
    const r = await shr(`${PYTHON} -c 'import scapy.all'`);
    expect(r.code, r.stderr).toBe(0);
  });

  it('pings across a veth between two namespaces, sees tags with tcpdump -e, cleans up', async () => {
    const a = nsname('ha');
    const b = nsname('hb');
    await addNamespace(a);
    await addNamespace(b);
    await quietNamespace(a);
    await quietNamespace(b);
    const ea = ifname('ha');
    const eb = ifname('hb');
    await addVeth(ea, eb);
    await shrOk(`ip link set ${ea} netns ${a} && ip link set ${eb} netns ${b}`);
    await nsExec(a, `ip link set ${ea} up && ip addr add 10.99.0.1/24 dev ${ea}`);
    await nsExec(b, `ip link set ${eb} up && ip addr add 10.99.0.2/24 dev ${eb}`);
    expect(await ping(a, '10.99.0.2', { count: 2 })).toBe(true);
    expect(await ping(a, '10.99.0.3', { count: 1, timeoutSec: 1 })).toBe(false);

    const macA = (await nsExec(a, `cat /sys/class/net/${ea}/address`)).trim();
    const lines = await captureDuring(b, eb, '', () => sendFrames(a, ea, [
      tagged(macA, 'ff:ff:ff:ff:ff:ff', 20, arpRequest(macA, '10.99.0.1', '10.99.0.2')),
      doubleTagged(macA, 'ff:ff:ff:ff:ff:ff', 10, 20, arpRequest(macA, '10.99.0.1', '10.99.0.2')),
    ]));
    expect(lines.some((l) => l.includes(macA) && /vlan 20,/.test(l) && !/vlan 10,/.test(l))).toBe(true);
    expect(lines.some((l) => l.includes(macA) && /vlan 10,.*vlan 20,/.test(l))).toBe(true);

    await cleanup();
    expect((await shr(`ip netns list | grep -c '^${a}'`)).stdout.trim()).toBe('0');
  });
});

async function shrOk(cmd: string): Promise<void> {
  const r = await shr(cmd);
  if (r.code !== 0) throw new Error(`${cmd}: ${r.stderr}`);
}
