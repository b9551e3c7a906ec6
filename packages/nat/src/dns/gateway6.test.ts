/*
 * The gateway DNS's IPv6 names (gateway.ts): AAAA for a VM's DHCPv6 lease, named
 * by its FQDN option or else by the IPv4 lease of the same MAC; NODATA (not
 * NXDOMAIN) for a name with only the other family's record; PTR for the
 * lease's ip6.arpa name; the latest-expiring lease wins a shared name. Queries
 * go in as IPv6 frames through `handle`, answers are read from what it emits.
 */
import { describe, expect, it } from 'vitest';
import { ETH_HLEN, IP6_HLEN, formatIp6, parseIp6 } from '@vswitch/switch';
import { udp6Frame } from '../frames.js';
import type { RouterNetwork } from '../network.js';
import { GatewayDns, reverseName6 } from './gateway.js';
import { QTYPE, RCODE, encodeName } from './wire.js';

const a6 = (s: string): Uint8Array => parseIp6(s)!;
const GW = a6('fd00:10::1');
const VM = a6('fd00:10::abcd');
const NOW = Date.now();
const MAC_A = 0x525400000001;
const MAC_B = 0x525400000002;
const MAC_C = 0x525400000003;

function query(name: string, qtype: number): Uint8Array {
  const qn = encodeName(name);
  const b = new Uint8Array(12 + qn.length + 4);
  b.set([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
  b.set(qn, 12);
  b.set([qtype >> 8, qtype & 0xff, 0, 1], 12 + qn.length);
  return b;
}

/** A fake network: IPv4 leases/reservations, DHCPv6 leases, a /64; `sent` collects emitted frames. */
function fakeNet(): { net: RouterNetwork; sent: Uint8Array[] } {
  const sent: Uint8Array[] = [];
  const v4 = [
    { ip: 0x0a000a64, mac: MAC_A, hostname: 'alpha', state: 'bound', expiresAt: NOW + 60_000 },
    { ip: 0x0a000a65, mac: MAC_C, hostname: 'v4only', state: 'bound', expiresAt: NOW + 60_000 },
  ];
  const v6 = [
    // MAC_A sent no FQDN: named by its IPv4 lease.
    { address: a6('fd00:10::1000'), mac: MAC_A, state: 'bound', expiresAt: NOW + 60_000 },
    // MAC_B named itself, and has no IPv4 lease.
    { address: a6('fd00:10::1001'), mac: MAC_B, hostname: 'beta', state: 'bound', expiresAt: NOW + 50_000 },
    { address: a6('fd00:10::1002'), mac: 0x525400000009, hostname: 'beta', state: 'bound', expiresAt: NOW + 90_000 },
    { address: a6('fd00:10::1003'), mac: 0x52540000000a, hostname: 'gone', state: 'offered', expiresAt: NOW + 90_000 },
  ];
  const net = {
    name: 'n', mac: 0x02aa00000001,
    opts: {
      dhcp: { config: { domain: 'lab.example', reservations: [] }, leases: () => v4 },
      dhcp6: { leases: () => v6 },
    },
    nd: { prefix: a6('fd00:10::'), opts: { prefixLen: 64 } },
    contains: () => true,
    portOfMac: () => 'p1',
    emit: (b: Uint8Array, off: number, len: number) => { sent.push(b.slice(off, off + len)); },
  };
  return { net: net as unknown as RouterNetwork, sent };
}

/** Asks `name` of type `qtype` over IPv6; the rcode and the answers' (type, data). */
function ask(dns: GatewayDns, f: { net: RouterNetwork; sent: Uint8Array[] }, name: string, qtype: number) {
  const q = query(name, qtype);
  const frame = new Uint8Array(200);
  const n = udp6Frame(frame, f.net.mac, MAC_A, VM, 0, GW, 0, 40000, 53, q, q.length);
  f.sent.length = 0;
  expect(dns.handle(f.net, frame.subarray(0, n), ETH_HLEN + IP6_HLEN, n - ETH_HLEN - IP6_HLEN)).toBe(true);
  expect(f.sent).toHaveLength(1);
  const d = f.sent[0].subarray(ETH_HLEN + IP6_HLEN + 8);
  const an = (d[6] << 8) | d[7];
  let p = q.length;
  const answers: { type: number; data: Uint8Array }[] = [];
  for (let i = 0; i < an; i++) {
    expect(d[p]).toBe(0xc0); // a pointer to the question name
    const type = (d[p + 2] << 8) | d[p + 3];
    const rdlen = (d[p + 10] << 8) | d[p + 11];
    answers.push({ type, data: d.slice(p + 12, p + 12 + rdlen) });
    p += 12 + rdlen;
  }
  return { rcode: d[3] & 0xf, answers };
}

describe('gateway DNS: IPv6 names from DHCPv6 leases', () => {
  const dns = new GatewayDns({ clock: () => performance.now(), forward: false });
  const f = fakeNet();

  it('AAAA from the lease of the same MAC as the IPv4 name, bare and under the domain', () => {
    for (const name of ['alpha', 'alpha.lab.example', 'ALPHA']) {
      const r = ask(dns, f, name, QTYPE.AAAA);
      expect(r.rcode).toBe(RCODE.NOERROR);
      expect(r.answers.map((a) => [a.type, formatIp6(a.data)])).toEqual([[QTYPE.AAAA, 'fd00:10::1000']]);
    }
    const any = ask(dns, f, 'alpha', QTYPE.ANY);
    expect(any.answers.map((a) => a.type)).toEqual([QTYPE.A, QTYPE.AAAA]);
  });

  it("AAAA by the FQDN option's name; of two leases with one name, the one expiring last", () => {
    expect(ask(dns, f, 'beta', QTYPE.AAAA).answers.map((a) => formatIp6(a.data))).toEqual(['fd00:10::1002']);
  });

  it('NODATA, not NXDOMAIN, for a name with only the other family; NXDOMAIN for an unknown or merely offered name', () => {
    expect(ask(dns, f, 'v4only', QTYPE.AAAA)).toEqual({ rcode: RCODE.NOERROR, answers: [] });
    expect(ask(dns, f, 'beta', QTYPE.A)).toEqual({ rcode: RCODE.NOERROR, answers: [] });
    expect(ask(dns, f, 'nobody', QTYPE.AAAA).rcode).toBe(RCODE.NXDOMAIN);
    expect(ask(dns, f, 'gone', QTYPE.AAAA).rcode).toBe(RCODE.NXDOMAIN);
  });

  it("PTR for a lease's ip6.arpa name; NXDOMAIN for another address of the prefix", () => {
    const r = ask(dns, f, reverseName6(a6('fd00:10::1002')), QTYPE.PTR);
    expect(r.rcode).toBe(RCODE.NOERROR);
    expect(Buffer.from(r.answers[0].data)).toEqual(Buffer.from(encodeName('beta.lab.example')));
    // beta's older lease lost the name, and with it its PTR.
    expect(ask(dns, f, reverseName6(a6('fd00:10::1001')), QTYPE.PTR).rcode).toBe(RCODE.NXDOMAIN);
    expect(ask(dns, f, reverseName6(a6('fd00:10::9999')), QTYPE.PTR).rcode).toBe(RCODE.NXDOMAIN);
  });

  it('reverseName6 writes 32 nibbles, lowest first', () => {
    expect(reverseName6(a6('2001:db8::567:89ab'))).toBe('b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa');
  });
});
