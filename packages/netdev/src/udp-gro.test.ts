/*
 * UDP GRO on the underlay's receive socket (native/udp_gro.c): a sender's UDP GSO
 * datagram is read whole and split into its packets, each a ring frame laid out
 * as without GRO (the sender's address and port in front), in order, the last one
 * short; a burst with more packets than a read batch reserves room for (64) has
 * the rest dropped and counted; with GRO off the kernel cuts the same datagram into
 * packets and no burst is seen. The socket lives in a namespace of the test's own
 * (a node child under `ip netns exec`, loading the built addon); python sends the
 * datagram with UDP_SEGMENT on the loopback, which carries it whole.
 */
import { describe, expect, it } from 'vitest';
import { childNs } from './test-env.js';

const NS = childNs('ndg');

interface Got {
  frames: { len: number; first: number; last: number; ip: string; port: number }[];
  bursts: number;
  segments: number;
  dropped: number;
  sport: number;
}

/** In NS: one datagram of `n` segments of `seg` bytes (segment i filled with byte i) and a `tail`-byte last one, read with GRO `on`. */
async function burst(on: boolean, n: number, seg: number, tail: number, expectFrames: number): Promise<Got> {
  const script = `
    const { execFileSync } = require('node:child_process');
    const [on, n, seg, tail, want] = process.argv.slice(2).map(Number);
    const [h] = nd.openUdp(0x7f000001, 4789, '');
    if (!nd.setUdpGro(h, on === 1)) { console.log(JSON.stringify({ error: 'refused' })); process.exit(1); }
    const s0 = nd.stats();
    const r = nd.ring();
    const frames = [];
    const done = () => {
      const s = nd.stats();
      console.log(JSON.stringify({ frames, sport, bursts: s.udpGroBursts - s0.udpGroBursts,
        segments: s.udpGroSegments - s0.udpGroSegments, dropped: s.udpGroDropped - s0.udpGroDropped }));
      process.exit(0);
    };
    nd.start(h, (count) => {
      for (let i = 0; i < count; i++) {
        const o = r.offs[i], len = r.lens[i];
        frames.push({ len, first: r.arena[o], last: r.arena[o + len - 1],
          ip: Array.from(r.arena.subarray(o - 10, o - 6)).join('.'), port: r.arena[o - 6] << 8 | r.arena[o - 5] });
      }
      if (frames.length >= want) setTimeout(done, 100);
    });
    const py = 'import socket, sys\\n' +
      'n, seg, tail = map(int, sys.argv[1:])\\n' +
      'body = b"".join(bytes([i & 255]) * seg for i in range(n)) + bytes([n & 255]) * tail\\n' +
      's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\\n' +
      's.bind(("127.0.0.1", 0))\\n' +
      's.setsockopt(socket.SOL_UDP, 103, seg)\\n' +
      's.sendto(body, ("127.0.0.1", 4789))\\n' +
      'print(s.getsockname()[1])\\n';
    const sport = Number(execFileSync('python3', ['-c', py, String(n), String(seg), String(tail)]).toString());
    setTimeout(done, 5000);
  `;
  return NS.run(script, [on ? '1' : '0', String(n), String(seg), String(tail), String(expectFrames)]);
}

describe('UDP GRO on the underlay socket', () => {
  it('splits a burst into its packets, in order, each with the sender in front, the short last one too', async () => {
    const g = await burst(true, 20, 1450, 77, 21);
    expect(g.bursts).toBe(1);
    expect(g.segments).toBe(21);
    expect(g.dropped).toBe(0);
    expect(g.frames.map((f) => f.len)).toEqual([...Array(20).fill(1450), 77]);
    expect(g.frames.map((f) => [f.first, f.last])).toEqual(Array.from({ length: 21 }, (_, i) => [i, i]));
    for (const f of g.frames) expect([f.ip, f.port]).toEqual(['127.0.0.1', g.sport]);
  }, 30_000);

  it('drops and counts the packets of a burst beyond the 64 a read batch has room for', async () => {
    const g = await burst(true, 99, 100, 100, 64);
    expect(g.bursts).toBe(1);
    expect(g.segments).toBe(64);
    expect(g.dropped).toBe(36);
    expect(g.frames.map((f) => f.first)).toEqual(Array.from({ length: 64 }, (_, i) => i));
  }, 30_000);

  it('off: the kernel cuts the same datagram into packets, no burst', async () => {
    const g = await burst(false, 20, 1450, 77, 21);
    expect(g.bursts).toBe(0);
    expect(g.segments).toBe(0);
    expect(g.frames.map((f) => [f.len, f.first])).toEqual(Array.from({ length: 21 }, (_, i) => [i < 20 ? 1450 : 77, i]));
  }, 30_000);
});
