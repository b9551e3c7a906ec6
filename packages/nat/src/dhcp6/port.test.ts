/*
 * A router network's DHCPv6 door (port.ts) with a real RouterNetwork: which
 * frames reach the server, the checks before it (UDP checksum, link-local
 * source), the shared `dhcp` rate limit, the reply's addressing (from the
 * gateway's link-local, to the client's address, port and MAC), and a
 * checksum-partial frame (a TAP client's UDP socket) completed, not dropped.
 */
import { describe, expect, it } from 'vitest';
import {
  IP6_NEXT, type PortRx, VNET_HDR_LEN, checksum, formatIp6, ip6PseudoSum, linkLocalFromMac, parseIp6, read16, readMac, write16,
  writeIp6, writeMac,
} from '@vswitch/switch';
import { RouterNetwork } from '../network.js';
import { duidLlt, msg, newServer, T0 } from '../testing/dhcp6.js';
import { Dhcp6Msg } from './wire.js';

const GW_MAC = 0x020000001001;
const VM = 0x525400000001;
const VM_LL = linkLocalFromMac(VM);

function frame(payload: Uint8Array, o: { src?: Uint8Array; dst?: string; badSum?: boolean; partial?: boolean } = {}): Uint8Array {
  const f = new Uint8Array(14 + 40 + 8 + payload.length);
  writeMac(f, 0, 0x333300010002);
  writeMac(f, 6, VM);
  write16(f, 12, 0x86dd);
  writeIp6(f, 14, 8 + payload.length, IP6_NEXT.UDP, 1, o.src ?? VM_LL, 0, parseIp6(o.dst ?? 'ff02::1:2')!, 0);
  write16(f, 54, 546);
  write16(f, 56, 547);
  write16(f, 58, 8 + payload.length);
  f.set(payload, 62);
  const pseudo = ip6PseudoSum(f, 14, 8 + payload.length, IP6_NEXT.UDP);
  if (o.partial) {
    // CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum, the device completes it.
    let s = pseudo;
    while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
    write16(f, 60, s);
  } else {
    const c = checksum(f, 54, 8 + payload.length, pseudo);
    write16(f, 60, o.badSum ? (c ^ 0x5555) : c === 0 ? 0xffff : c);
  }
  return f;
}

function setup(limit = 0) {
  const out: Uint8Array[] = [];
  const server = newServer();
  const net = new RouterNetwork({
    name: 'net10', vlan: 10, gatewayIp: 0x0a000a01, prefix: 24, mac: GW_MAC, clock: () => 1000, wallClock: () => T0,
    portOf: () => 'vm1', limits: { dhcp: limit },
    ipv6: { address: parseIp6('fd00:10::1')!, prefixLen: 64, mode: 'dhcpv6', intervalSec: 600, validLifetime: 86400, preferredLifetime: 14400, rdnss: [], dnssl: [] },
    dhcp6: server,
  });
  const rx: PortRx = { batch: () => { throw new Error('unexpected batch'); }, frame: (b, off, len) => { out.push(b.slice(off, off + len)); }, gone: () => {}, link: () => {} };
  net.start(rx);
  return { net, server, out, port: net.dhcp6! };
}

const solicit = (): Uint8Array => msg({ type: Dhcp6Msg.SOLICIT, duid: duidLlt(VM) });

describe('DHCPv6 on a router network', () => {
  it('answers a Solicit from the gateway\'s link-local to the client\'s, UDP 547 -> 546, at the client\'s MAC', () => {
    const t = setup();
    const f = frame(solicit());
    t.net.send(f, 0, f.length);
    expect(t.out).toHaveLength(1);
    const r = t.out[0];
    expect(readMac(r, 0)).toBe(VM);
    expect(formatIp6(r, 14 + 8)).toBe(formatIp6(linkLocalFromMac(GW_MAC)));
    expect(formatIp6(r, 14 + 24)).toBe(formatIp6(VM_LL));
    expect([read16(r, 54), read16(r, 56)]).toEqual([547, 546]);
    expect(checksum(r, 54, r.length - 54, ip6PseudoSum(r, 14, r.length - 54, IP6_NEXT.UDP))).toBe(0);
    expect(r[62]).toBe(Dhcp6Msg.ADVERTISE);
    // To the gateway's link-local address too.
    const u = frame(solicit(), { dst: formatIp6(linkLocalFromMac(GW_MAC)) });
    u.set([0x02, 0, 0, 0, 0x10, 0x01], 0);
    t.net.send(u, 0, u.length);
    expect(t.out).toHaveLength(2);
  });

  it('counts a bad checksum and a source that is not link-local as malformed; the server never sees them', () => {
    const t = setup();
    for (const f of [frame(solicit(), { badSum: true }), frame(solicit(), { src: parseIp6('fd00:10::77')! })]) t.net.send(f, 0, f.length);
    expect(t.port.counters).toMatchObject({ malformed: 2, received: 0, sent: 0 });
    expect(t.server.counters.messages.solicit).toBe(0);
  });

  it('spends the port\'s dhcp tokens: past them, dropped and counted as rate limited', () => {
    const t = setup(2);
    for (let i = 0; i < 5; i++) {
      const f = frame(solicit());
      t.net.send(f, 0, f.length);
    }
    expect(t.server.counters.messages.solicit).toBe(2);
    expect(t.net.counters.rateLimited).toBe(3);
    expect(t.net.limiter.totals().dhcp).toBe(3);
  });

  it('completes a checksum-partial frame (virtio_net_hdr NEEDS_CSUM) instead of ignoring it', () => {
    const t = setup();
    const f = frame(solicit(), { partial: true });
    const buf = new Uint8Array(VNET_HDR_LEN + f.length);
    buf.set(f, VNET_HDR_LEN);
    buf[0] = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM
    buf[6] = 54; // csum_start (LE): the UDP header
    buf[8] = 6; // csum_offset (LE): the UDP checksum field
    t.net.sendVnet(buf, VNET_HDR_LEN, f.length);
    expect(t.server.counters.messages.solicit).toBe(1);
    expect(t.out).toHaveLength(1);
  });
});
