/*
 * The outer DS field in front of each underlay datagram (native/udp.c, udp6.c):
 * on from open, the TOS / traffic class a sender set reaches the ring (the byte 4
 * before the payload, where vxlan.ts reads it for RFC 6040); `setUdpRecvTos(h, false)`
 * (vxlan.ecn off) stops the kernel's control message and the byte reads 0; on again
 * restores it. Both families, with UDP GRO off and on. The sockets live in a
 * namespace of the test's own (a node child under `ip netns exec`, loading the built
 * addon); python sends datagrams with IP_TOS / IPV6_TCLASS set on the loopback.
 */
import { describe, expect, it } from 'vitest';
import { childNs } from './test-env.js';

const NS = childNs('ndt');

/** In NS: per step (recvTos on/off), one datagram sent with DS field `ds`; the DS bytes read in front of them. */
async function dsBytes(v6: boolean, gro: boolean, steps: boolean[], ds: number): Promise<{ ds: number[]; set: boolean[] }> {
  const script = `
    const { execFileSync } = require('node:child_process');
    const v6 = process.argv[2] === '1', gro = process.argv[3] === '1';
    const steps = process.argv[4].split(',').map((s) => s === '1');
    const ds = Number(process.argv[5]);
    const [h] = v6 ? nd.openUdp6(new Uint8Array([0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1]), 0, 4789, '', false) : nd.openUdp(0x7f000001, 4789, '');
    if (gro && !nd.setUdpGro(h, true)) { console.log(JSON.stringify({ error: 'gro refused' })); process.exit(1); }
    const r = nd.ring();
    const got = [], set = [];
    let i = 0;
    const py = 'import socket, sys\\n' +
      'v6, ds = int(sys.argv[1]), int(sys.argv[2])\\n' +
      's = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)\\n' +
      'if v6: s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, ds)\\n' +
      'else: s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, ds)\\n' +
      's.sendto(b"x" * 64, ("::1" if v6 else "127.0.0.1", 4789))\\n';
    const next = () => {
      if (i === steps.length) { console.log(JSON.stringify({ ds: got, set })); process.exit(0); }
      set.push(nd.setUdpRecvTos(h, steps[i]));
      execFileSync('python3', ['-c', py, v6 ? '1' : '0', String(ds)]);
    };
    nd.start(h, (count) => {
      for (let k = 0; k < count; k++) got.push(r.arena[r.offs[k] - 4]);
      i++;
      next();
    });
    next();
    setTimeout(() => { console.log(JSON.stringify({ ds: got, set, timeout: true })); process.exit(0); }, 5000);
  `;
  return NS.run(script, [v6 ? '1' : '0', gro ? '1' : '0', steps.map((s) => (s ? '1' : '0')).join(','), String(ds)]);
}

describe('the outer DS field of underlay datagrams (setUdpRecvTos)', () => {
  for (const v6 of [false, true]) {
    for (const gro of [false, true]) {
      it(`IPv${v6 ? 6 : 4}, GRO ${gro ? 'on' : 'off'}: read while on, 0 while off, read again when back on`, async () => {
        // DSCP EF (46) with ECT(1): every bit of the byte that can show up does.
        const r = await dsBytes(v6, gro, [true, false, true], 0xb9);
        expect(r.set).toEqual([true, true, true]);
        expect(r.ds).toEqual([0xb9, 0, 0xb9]);
      });
    }
  }
});
