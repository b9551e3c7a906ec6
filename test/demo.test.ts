/*
 * The README's demo runs here as it does for a user (minus the install step, which
 * the test command has done): the lab on its own config (scripts/lab.yaml, named
 * with --config: the daemon's built-in default is one empty bridge) must pass all
 * of its own checks, print the switch's views, and leave nothing behind.
 */
import { describe, expect, it } from 'vitest';
import { REPO, shr } from './helpers/run.js';

describe('demo lab (scripts/lab.sh, run by npm run demo)', () => {
  it('passes its checks on scripts/lab.yaml, prints the views, and cleans up', async () => {
    const r = await shr(`bash ${REPO}/scripts/lab.sh --duration 0`, { timeoutMs: 90_000, cwd: REPO });
    const out = r.stdout + r.stderr;
    expect(r.code, out).toBe(0);
    expect(out).toContain('lab: all checks passed');
    expect(out).toContain('vswitch daemon --config scripts/lab.yaml');
    expect(out).toMatch(/vm1 \(VLAN 10\): 10\.0\.10\.\d+/);
    expect(out).toMatch(/vm3 \(VLAN 20\): 10\.0\.20\.\d+/);
    expect(out).toMatch(/vm1 -> vm3 \(other VLAN\)\s+no\s+\(expected no\)/);
    expect(out).toContain('page: hello from the internet namespace');
    // IPv6 on VLAN 10: SLAAC from the gateway's RAs, NPTv6 to the uplink.
    expect(out).toMatch(/vm1 \(VLAN 10\) IPv6: fd00:10::[0-9a-f:]+/);
    expect(out).toMatch(/vm1 -> internet 2001:db8:ff::1 over IPv6 \(NPTv6\)\s+yes/);
    expect(out).toMatch(/uplink ipv6: 2001:db8:ff::2\/64 static, gateway 2001:db8:ff::1/);
    expect(out).toMatch(/^vswitch_router_ipv6_packets_total\{router="r0",path="to_uplink"\} [1-9]/m);
    expect(out).toMatch(/bridge name\s+macs\s+port/);
    expect(out).toMatch(/net10\s+10\.0\.10\.\d+\s+[0-9a-f:]{17}\s+bound/);
    expect(out).toMatch(/metrics: curl http:\/\/127\.0\.0\.1:\d+\/metrics/);
    // Router series from the live daemon: two leases on VLAN 10, one on VLAN 20, the uplink up.
    expect(out).toMatch(/^vswitch_dhcp_active_leases\{router="r0",network="net10",vlan="10"\} 2$/m);
    expect(out).toMatch(/^vswitch_dhcp_active_leases\{router="r0",network="net20",vlan="20"\} 1$/m);
    expect(out).toMatch(/^vswitch_dhcp_messages_total\{router="r0",network="net10",vlan="10",type="ack"\} [2-9]/m);
    expect(out).toMatch(/^vswitch_router_uplink_up\{router="r0",interface="vswup0"\} 1$/m);
    expect(out).toMatch(/^vswitch_nat_sessions\{router="r0",proto="tcp"\} [1-9]/m);
    // The checks' IPv4 pings between the two guarded DHCP VMs of VLAN 10 replayed by the flow cache (README "Flow cache").
    expect(out).toMatch(/^vswitch_flow_cache_hits_total\{bridge="br0"\} [1-9]/m);
    expect(out).toContain('lab: cleaned up');
    const left = await shr('ip -br link show vswup0; ip netns list');
    expect(left.stdout).not.toMatch(/vswup0|l[0-9a-f]{4}-(vm\d|inet)/);
  });
});
