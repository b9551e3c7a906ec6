/*
 * An attach port (AF_PACKET socket, native/packet.c and gso.c) under the read loop's
 * fair share, as a TAP is (fair.c): with the frame share a backlog is read exactly
 * its quantum of frames per round, whatever their size; with the byte quantum at its
 * smallest (16 KiB, less than one frame's charge) one frame a round. A veth pair, one
 * end in a namespace of the test's own, which queues frames of an experimental
 * EtherType toward the other end before the read loop starts. Needs root; names carry
 * a per-run id and are removed even when a test fails.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import * as nd from './index.js';
import { ip, testEnv, until } from './test-env.js';

const ID = randomBytes(2).toString('hex');
const { handles, netns, links } = testEnv();
const N = 60;


/** N frames of `size` bytes queued to an attach port, read with `quantum` (`frames`: the frame share); per-batch counts of ours. */
async function drain(tag: string, size: number, quantum: number, frames: boolean): Promise<{ batches: number[]; full: number }> {
  const ns = `pf${ID}${tag}`, v0 = `pf${ID}${tag}0`, v1 = `pf${ID}${tag}1`;
  ip('netns', 'add', ns);
  netns.add(ns);
  ip('link', 'add', v0, 'type', 'veth', 'peer', 'name', v1);
  links.add(v0);
  execFileSync('sysctl', ['-qw', `net.ipv6.conf.${v0}.disable_ipv6=1`]);
  ip('link', 'set', v1, 'netns', ns);
  ip('netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1');
  ip('link', 'set', v0, 'up');
  ip('-n', ns, 'link', 'set', v1, 'up');
  const pk = nd.openPacket(v0);
  handles.add(pk.handle);
  nd.setQuantum(pk.handle, quantum, frames);
  // Frames of EtherType 0x88b5 (local experimental), queued in the packet socket before anyone
  // reads; past the qdisc (PACKET_QDISC_BYPASS) so no frame waits for a later NET_TX softirq.
  execFileSync('ip', ['netns', 'exec', ns, 'python3', '-c',
    'import socket,sys\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.setsockopt(263,20,1)\ns.bind((sys.argv[1],0))\n' +
    'f=b"\\xff"*6+b"\\x02\\x00\\x00\\x00\\x00\\x01"+b"\\x88\\xb5"+bytes(int(sys.argv[3])-14)\n' +
    'for _ in range(int(sys.argv[2])): s.send(f)', v1, String(N), String(size)]);
  const ring = nd.ring();
  const batches: number[] = [];
  let got = 0;
  const full0 = nd.fairFull(pk.handle);
  nd.start(pk.handle, (n) => {
    let ours = 0;
    for (let i = 0; i < n; i++) if (ring.arena[ring.offs[i] + 12] === 0x88 && ring.arena[ring.offs[i] + 13] === 0xb5) ours++;
    batches.push(ours);
    got += ours;
  });
  const ok = await until(() => got >= N, 10_000);
  const full = nd.fairFull(pk.handle) - full0;
  expect(ok, JSON.stringify({ got, batches })).toBe(true);
  handles.delete(pk.handle);
  nd.close(pk.handle);
  return { batches, full };
}

describe('an attach port takes its fair share of the read loop', () => {
  it('with the frame share, a backlog is read 8 frames a round, whatever their size', async () => {
    for (const [tag, size] of [['s', 60], ['l', 1500]] as const) {
      const r = await drain(tag, size, 8, true);
      // A stray frame of the link's own may share a round with ours: at most 8 of ours.
      expect(Math.max(...r.batches), `${size}-byte frames`).toBe(8);
      expect(r.full).toBeGreaterThanOrEqual(Math.ceil(N / 8) - 1);
    }
  }, 30_000);

  it('with the byte quantum at 16 KiB, one frame a round (the control)', async () => {
    const r = await drain('b', 60, nd.FAIR_QUANTUM_MIN, false);
    expect(Math.max(...r.batches)).toBe(1);
    expect(r.full).toBeGreaterThanOrEqual(N - 1);
  }, 30_000);
});
