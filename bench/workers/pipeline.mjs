// The bridge pipeline on one worker thread vs two, in process, no I/O (issue 19,
// item 4; the design is ../DESIGN-multicore.md).
//
// Frames: one SharedArrayBuffer of synthetic 106-byte frames (ring layout, a
// zeroed virtio_net_hdr in front, as from a TAP) between 8 in-memory ports with
// 32 hosts each: known unicast from a random host to a random host on another
// port, and 1 frame in 64 a broadcast (flooded to the 7 other ports). The frames
// are split into one region per queue by a hash of (source, destination) MAC,
// as a multi-queue TAP's flow steering would: each worker owns one queue of
// every port (the model the design note calls "queues, not ports").
// Each worker runs its own Bridge (ingress, learning refresh, lookup, storm
// control, egress decision to counting sinks) over its queues, with the MAC
// table partitioned the simplest way: a full replica per worker, filled with
// the same hosts first (learning after that is refresh only, so replicas never
// disagree in this run; the note says what keeps them exact when they would).
// All workers start together (Atomics on a shared flag) and run DURATION ms.
//
// Prints, per configuration (1 worker over all queues, 2 workers one queue set
// each), frames/s summed over workers, the process's CPU per frame and the
// cores it got (CPU time / wall time: on a shared machine the bound), the
// speed-up 2 vs 1, and a check that the workers' counters add up exactly to the
// frames offered. Rounds alternate the configurations; medians.
// Usage: node bench/workers/pipeline.mjs [DURATION_MS=2000] [ROUNDS=5] [WORKERS=2]
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

const HDR = 10, LEN = 106, SLOT = 128, BATCH = 64;
const PORTS = 8, HOSTS = 32, FRAMES = 1 << 15; // 32,768 frames, 4 MiB of slots
const here = path.dirname(fileURLToPath(import.meta.url));
const { Bridge } = await import(pathToFileURL(path.join(here, '../../packages/switch/dist/index.js')).href);

const mac = (port, host) => 0x020000000000 + port * 256 + host + 1;
function macBytes(buf, off, m) {
  for (let i = 5; i >= 0; i--) { buf[off + i] = m % 256; m = Math.floor(m / 256); }
}

class Sink {
  kind = 'tap';
  offload = true;
  frames = 0;
  start(rx) { this.rx = rx; }
  send(_b, _o, len) { this.frames++; return len; }
  send2(_a, _ao, al, _b, _bo, bl) { this.frames++; return al + bl; }
  sendVnet(_b, _o, len) { this.frames++; return len; }
  send2Vnet(_a, _ao, al, _b, _bo, bl) { this.frames++; return al + bl; }
  close() {}
  describe() { return {}; }
}

if (isMainThread) {
  const DURATION = Number(process.argv[2] ?? 2000);
  const ROUNDS = Number(process.argv[3] ?? 5);
  const W = Number(process.argv[4] ?? 2);
  // Frames, and per frame its ingress port and queue (flow hash mod W).
  const sab = new SharedArrayBuffer(FRAMES * SLOT);
  const buf = new Uint8Array(sab);
  const inPort = new Int32Array(new SharedArrayBuffer(FRAMES * 4));
  const queue = new Int32Array(new SharedArrayBuffer(FRAMES * 4));
  let seed = 12345;
  const rnd = (n) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
  for (let i = 0; i < FRAMES; i++) {
    const o = i * SLOT + HDR;
    const sp = rnd(PORTS), sh = rnd(HOSTS);
    let dp = rnd(PORTS - 1); if (dp >= sp) dp++;
    const dh = rnd(HOSTS);
    const bcast = i % 64 === 63;
    macBytes(buf, o, bcast ? 0xffffffffffff : mac(dp, dh));
    macBytes(buf, o + 6, mac(sp, sh));
    buf[o + 12] = 0x08;
    inPort[i] = sp;
    queue[i] = ((sp * HOSTS + sh) * 2654435761 + (bcast ? 0 : dp * HOSTS + dh)) % 4294967296 % W;
  }
  const med = (xs) => {
    const v = xs.slice().sort((a, b) => a - b), m = v.length >> 1;
    return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
  };

  async function run(nw) {
    const go = new Int32Array(new SharedArrayBuffer(4));
    const ws = [];
    for (let w = 0; w < nw; w++) {
      // nw = 1: the one worker owns every queue.
      const queues = nw === 1 ? [...Array(W).keys()] : [w];
      ws.push(new Worker(fileURLToPath(import.meta.url), { workerData: { sab, inPort: inPort.buffer, queue: queue.buffer, queues, go: go.buffer, duration: DURATION } }));
    }
    const ready = ws.map((w) => new Promise((res) => w.once('message', res)));
    await Promise.all(ready); // built and warmed up
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    Atomics.store(go, 0, 1);
    Atomics.notify(go, 0);
    const outs = await Promise.all(ws.map((w) => new Promise((res) => w.once('message', res))));
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const c = process.cpuUsage(c0);
    await Promise.all(ws.map((w) => w.terminate()));
    const frames = outs.reduce((s, o) => s + o.frames, 0);
    for (const o of outs) {
      if (o.counted !== o.frames) throw new Error(`worker counters ${o.counted} != frames offered ${o.frames}`);
      if (o.delivered !== o.expected) throw new Error(`delivered ${o.delivered} != expected ${o.expected}`);
    }
    return { fps: frames / wall, cpuNs: ((c.user + c.system) * 1e3) / frames, cores: (c.user + c.system) / 1e6 / wall, perWorker: outs.map((o) => o.frames / (o.seconds || 1)) };
  }

  console.log(`load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')} (${os.cpus().length} CPUs); ${ROUNDS} rounds of ${DURATION} ms, ${W} queues`);
  const r1 = [], rN = [];
  for (let r = 0; r < ROUNDS; r++) {
    const a = r % 2 === 0 ? await run(1) : null;
    const b = await run(W);
    const a2 = a ?? (await run(1));
    r1.push(a2); rN.push(b);
    console.log(`round ${r + 1}: 1 worker ${(a2.fps / 1e6).toFixed(2)} M frames/s (${a2.cpuNs.toFixed(0)} CPU ns/frame, ${a2.cores.toFixed(2)} cores); `
      + `${W} workers ${(b.fps / 1e6).toFixed(2)} M frames/s (${b.cpuNs.toFixed(0)} CPU ns/frame, ${b.cores.toFixed(2)} cores; per worker ${b.perWorker.map((x) => (x / 1e6).toFixed(2)).join(' + ')}); `
      + `speed-up ${(b.fps / a2.fps).toFixed(2)}x; load ${os.loadavg()[0].toFixed(2)}`);
  }
  const s = rN.map((b, i) => b.fps / r1[i].fps);
  console.log(`median: 1 worker ${(med(r1.map((x) => x.fps)) / 1e6).toFixed(2)} M frames/s, ${W} workers ${(med(rN.map((x) => x.fps)) / 1e6).toFixed(2)} M frames/s, `
    + `speed-up ${med(s).toFixed(2)}x (${Math.min(...s).toFixed(2)}-${Math.max(...s).toFixed(2)}); CPU ns/frame ${med(r1.map((x) => x.cpuNs)).toFixed(0)} vs ${med(rN.map((x) => x.cpuNs)).toFixed(0)}; `
    + `cores the process got ${med(r1.map((x) => x.cores)).toFixed(2)} vs ${med(rN.map((x) => x.cores)).toFixed(2)}; `
    + `load average now ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
} else {
  const { sab, queues, duration } = workerData;
  const buf = new Uint8Array(sab);
  const inPort = new Int32Array(workerData.inPort);
  const queue = new Int32Array(workerData.queue);
  const go = new Int32Array(workerData.go);
  const br = new Bridge('b', { maxEntries: 100000, ageingSec: 3600, clock: () => 1000 });
  const sinks = [];
  for (let p = 0; p < PORTS; p++) { const s = new Sink(); sinks.push(s); br.addPort(`p${p}`, s); }
  // The replica: every host learned on its port first.
  const one = new Uint8Array(HDR + 60);
  one[HDR + 12] = 0x08;
  macBytes(one, HDR, 0xffffffffffff);
  for (let p = 0; p < PORTS; p++) {
    for (let h = 0; h < HOSTS; h++) { macBytes(one, HDR + 6, mac(p, h)); sinks[p].rx.batch(one, new Int32Array([HDR]), new Int32Array([60]), 1, true); }
  }
  // This worker's frames, grouped per ingress port into batches of up to BATCH (a queue's reads).
  const mine = new Set(queues);
  const batches = [];
  for (let p = 0; p < PORTS; p++) {
    const idx = [];
    for (let i = 0; i < FRAMES; i++) if (inPort[i] === p && mine.has(queue[i])) idx.push(i);
    for (let k = 0; k < idx.length; k += BATCH) {
      const n = Math.min(BATCH, idx.length - k);
      const offs = new Int32Array(BATCH), lens = new Int32Array(BATCH);
      let bcast = 0;
      for (let j = 0; j < n; j++) { offs[j] = idx[k + j] * SLOT + HDR; lens[j] = LEN; if (buf[offs[j]] === 0xff) bcast++; }
      batches.push({ rx: sinks[p].rx, offs, lens, n, out: n - bcast + bcast * (PORTS - 1) });
    }
  }
  const pass = () => { for (const b of batches) b.rx.batch(buf, b.offs, b.lens, b.n, true); };
  for (let i = 0; i < 50; i++) pass(); // warm up (JIT)
  const sent0 = sinks.reduce((s, k) => s + k.frames, 0);
  const fwd0 = br.counters.forwarded + br.counters.floodedGroup + br.counters.floodedUnknown;
  parentPort.postMessage('ready');
  Atomics.wait(go, 0, 0);
  const t0 = process.hrtime.bigint();
  const end = t0 + BigInt(duration) * 1000000n;
  let passes = 0;
  do { pass(); passes++; } while (process.hrtime.bigint() < end);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const perPass = batches.reduce((s, b) => s + b.n, 0);
  const counted = br.counters.forwarded + br.counters.floodedGroup + br.counters.floodedUnknown - fwd0;
  const delivered = sinks.reduce((s, k) => s + k.frames, 0) - sent0;
  parentPort.postMessage({ frames: passes * perPass, seconds, counted, delivered, expected: passes * batches.reduce((s, b) => s + b.out, 0) });
}
