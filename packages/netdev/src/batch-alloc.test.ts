/*
 * The read loop's batches allocate nothing in V8's heap or as ArrayBuffers: frames
 * sent into a real TAP (AF_PACKET from the kernel side), delivered to a callback that
 * only counts them, measured over windows of BATCHES batches with no GC in them (a
 * collection frees what a window would show, so those windows are skipped).
 *
 * What a batch costs V8 besides our code: Node itself makes one empty object (56 B)
 * per event-loop turn, in its check phase (node::Environment::RunAndClearNativeImmediates
 * calls v8::Object::New whether or not an immediate is pending; seen with gdb on
 * SamplingHeapProfiler::SampleObject). That is the floor here, one turn per batch at
 * most: a number or object made per batch on our side (a boxed double, the count as an
 * array, an argument object, a Buffer) lifts the median above it. Under bench/fair's
 * flood these bytes only ever fill the young generation (scavenges); the major
 * collections once reported there were the probe's own (bench/README.md).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { PerformanceObserver, performance } from 'node:perf_hooks';
import { getHeapStatistics } from 'node:v8';
import { afterAll, describe, expect, it } from 'vitest';
import * as nd from './index.js';
import { ip, testEnv } from './test-env.js';

const PY = '/usr/bin/python3';
const BATCHES = 1000;
const NODE_TURN_BYTES = 56;
const env = testEnv();
const gcStarts: number[] = [];
const obs = new PerformanceObserver((l) => { for (const e of l.getEntries()) gcStarts.push(e.startTime); });
obs.observe({ entryTypes: ['gc'] });
afterAll(() => obs.disconnect());

const median = (xs: number[]): number => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];

describe('read loop batches', () => {
  it('allocate nothing per batch: V8 heap bytes within Node\'s own per-turn object, no ArrayBuffer bytes', async () => {
    const name = `nb${randomBytes(3).toString('hex')}`;
    const t = nd.openTap(name);
    env.handles.add(t.handle);
    ip('link', 'set', name, 'up');
    let batches = 0;
    let target = -1;
    let reached: () => void = () => {};
    nd.start(t.handle, (n) => {
      if (n <= 0) return;
      if (++batches === target) reached();
    });
    // Bursts of 32 broadcast frames (a local experimental ethertype) with short pauses:
    // many batches, each one loop turn.
    const tx = spawn(PY, ['-c', `
import socket, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((${JSON.stringify(name)}, 0))
f = bytes.fromhex('ffffffffffff02000000000188b5') + bytes(46)
end = time.time() + 30
while time.time() < end:
    for i in range(32):
        try: s.send(f)
        except OSError: pass
    time.sleep(0.0003)
`], { stdio: 'ignore' });
    const after = (k: number): Promise<void> => new Promise((r) => { target = batches + k; reached = r; });
    try {
      await after(1000); // warm-up: JIT, the ring, the sender's socket
      const heap: number[] = [];
      const ab: number[] = [];
      for (let w = 0; w < 30 && heap.length < 5; w++) {
        const t0 = performance.now();
        const h0 = getHeapStatistics().used_heap_size;
        const a0 = process.memoryUsage().arrayBuffers;
        await after(BATCHES);
        const h1 = getHeapStatistics().used_heap_size;
        const a1 = process.memoryUsage().arrayBuffers;
        const t1 = performance.now();
        await new Promise((r) => setTimeout(r, 20)); // the gc entries of the window are delivered
        if (gcStarts.some((s) => s >= t0 && s <= t1)) continue;
        heap.push((h1 - h0) / BATCHES);
        ab.push((a1 - a0) / BATCHES);
      }
      console.log(`per batch: heap ${heap.map((x) => x.toFixed(1)).join(', ')} B; ArrayBuffers ${ab.map((x) => x.toFixed(1)).join(', ')} B`);
      expect(heap.length).toBeGreaterThanOrEqual(3);
      expect(median(heap)).toBeLessThan(NODE_TURN_BYTES + 8);
      expect(median(ab)).toBeLessThan(1);
    } finally {
      tx.kill();
      nd.stop(t.handle);
    }
  }, 60_000);
});
