// Forwarding rate of the bridge pipeline (ingress, learning, lookup, egress) with
// 10 vs 100,000 entries in the MAC table, in process: ports are in-memory sinks,
// so the figure is the switch's own per-frame cost without the kernel's read and
// write (which do not depend on the table size). Frames come in ring-style
// batches of 64 with a zeroed virtio_net_hdr in front, as from a TAP.
// Usage: node bench/scale/fdb.mjs [FRAMES] [ROUNDS]
import { Bridge } from '../../packages/switch/dist/index.js';

const FRAMES = Number(process.argv[2] ?? 4_000_000);
const ROUNDS = Number(process.argv[3] ?? 5);
const BATCH = 64;
const HDR = 10;

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

function macBytes(buf, off, mac) {
  for (let i = 5; i >= 0; i--) { buf[off + i] = mac % 256; mac = Math.floor(mac / 256); }
}

function run(entries) {
  const br = new Bridge('b', { maxEntries: entries + 1000, ageingSec: 3600, clock: () => 1000 });
  const a = new Sink(), b = new Sink(), c = new Sink();
  br.addPort('a', a); br.addPort('b', b); br.addPort('c', c);
  const A = 0x020000000001, B = 0x020000000002;
  // Fill the table: `entries - 2` MACs learned on port c, then A on a and B on b.
  const one = new Uint8Array(HDR + 60);
  const offs = new Int32Array([HDR]), lens = new Int32Array([60]);
  one[HDR + 12] = 0x08;
  macBytes(one, HDR, 0xffffffffffff);
  for (let i = 0; i < entries - 2; i++) { macBytes(one, HDR + 6, 0x060000000000 + i); c.rx.batch(one, offs, lens, 1, true); }
  macBytes(one, HDR + 6, B); b.rx.batch(one, offs, lens, 1, true);
  if (br.fdb.size !== entries - 1) throw new Error(`table has ${br.fdb.size} entries`);
  // A batch of BATCH frames A -> B (known unicast), 106-byte frames like trafgen's.
  const len = 106, slot = 128;
  const buf = new Uint8Array(BATCH * slot);
  const bo = new Int32Array(BATCH), bl = new Int32Array(BATCH);
  for (let i = 0; i < BATCH; i++) {
    const o = i * slot + HDR;
    macBytes(buf, o, B); macBytes(buf, o + 6, A); buf[o + 12] = 0x08;
    bo[i] = o; bl[i] = len;
  }
  const n = Math.floor(FRAMES / BATCH);
  for (let i = 0; i < 2000; i++) a.rx.batch(buf, bo, bl, BATCH, true); // warm up (JIT)
  b.frames = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) a.rx.batch(buf, bo, bl, BATCH, true);
  const ns = Number(process.hrtime.bigint() - t0);
  if (b.frames !== n * BATCH) throw new Error(`delivered ${b.frames} of ${n * BATCH}`);
  return { entries: br.fdb.size + 1, mfps: (n * BATCH) / ns * 1e3, nsPerFrame: ns / (n * BATCH) };
}

const res = { 10: [], 100000: [] };
for (let r = 0; r < ROUNDS; r++) for (const e of [10, 100000]) res[e].push(run(e));
const med = (xs) => xs.slice().sort((x, y) => x - y)[Math.floor(xs.length / 2)];
for (const e of [10, 100000]) {
  console.log(`${String(e).padStart(6)} MAC entries: ${med(res[e].map((x) => x.mfps)).toFixed(2)} M frames/s (${med(res[e].map((x) => x.nsPerFrame)).toFixed(0)} ns/frame), median of ${ROUNDS}`);
}
console.log(`ratio 100,000 / 10 entries: ${(med(res[100000].map((x) => x.mfps)) / med(res[10].map((x) => x.mfps))).toFixed(2)}x (target >= 0.9x)`);
