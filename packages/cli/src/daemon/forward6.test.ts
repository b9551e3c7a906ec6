/*
 * Port forwards to IPv6 targets (forward6.ts): accepted for a host uplink that
 * listens on IPv6 and a target inside one of the router's IPv6 prefixes; refused,
 * saying why, for an interface uplink (routed/NPTv6: nothing to forward), an IPv4
 * listener, or an address outside the prefixes. The config file says the same.
 */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../config.js';
import { forward6Problem } from './forward6.js';

const NET = '    networks:\n      n: { bridge: br0, vlan: 10, address: 10.0.10.1/24, ipv6: { address: "fd00:10::1/64" } }\n';
const cfg = (uplink: string, forwards = '[]'): string =>
  `bridges:\n  br0: {}\nrouters:\n  r:\n    uplink: ${uplink}\n    forwards: ${forwards}\n${NET}`;

function errorOf(text: string): string {
  try {
    parseConfig(text, 'x.yaml');
  } catch (e) {
    return (e as Error).message;
  }
  return 'no error';
}

describe('forwards to a VM\'s IPv6 address', () => {
  it('host uplink listening on "::": accepted for an address in the prefix', () => {
    const c = parseConfig(cfg('{ kind: host, listen: "::" }', '[{ proto: tcp, port: 8080, to: "[fd00:10::50]:80" }]'), 'x.yaml');
    expect(c.routers.r.forwards[0].to).toBe('[fd00:10::50]:80');
    expect(forward6Problem(c.routers.r, 'fd00:10::50')).toBeUndefined();
    expect(forward6Problem(c.routers.r, 'fd00:11::50')).toMatch(/not inside any IPv6 prefix/);
  });

  it('refused with the reason: an IPv4 listener, an interface uplink, outside the prefixes', () => {
    expect(errorOf(cfg('{ kind: host }', '[{ proto: tcp, port: 8080, to: "[fd00:10::50]:80" }]')))
      .toMatch(/forwards\.0\.to .*uplink\.listen on IPv6/);
    expect(errorOf(cfg('{ kind: interface, interface: eth9, address: 192.0.2.2/24 }', '[{ proto: tcp, port: 8080, to: "[fd00:10::50]:80" }]')))
      .toMatch(/forwards\.0\.to .*needs uplink kind host.*without a forward/);
    expect(errorOf(cfg('{ kind: host, listen: "::" }', '[{ proto: udp, port: 53, to: "[fd00:99::50]:53" }]')))
      .toMatch(/forwards\.0\.to .*not inside any IPv6 prefix/);
    expect(errorOf(cfg('{ kind: host, listen: "::" }', '[{ proto: udp, port: 53, to: "fd00:10::50:53" }]')))
      .toMatch(/forwards\.0\.to .*\[fd00:10::50\]:80/);
  });
});
