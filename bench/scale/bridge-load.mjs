// A bridge pipeline to measure in process (fdb.mjs, fdb-alloc.mjs): three in-memory
// ports, the MAC table filled to `entries`, and a batch of BATCH frames A -> B
// (known unicast, 106 bytes like trafgen's) in ring layout with a zeroed
// virtio_net_hdr in front of each, as from a TAP.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const BATCH = 64;
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

/** `Bridge` is passed in so a caller can load another build. Returns the bridge, the sink of B, and `batch()`. */
export function loadedBridge(Bridge, entries) {
  const br = new Bridge('b', { maxEntries: entries + 1000, ageingSec: 3600, clock: () => 1000 });
  const a = new Sink(), b = new Sink(), c = new Sink();
  br.addPort('a', a); br.addPort('b', b); br.addPort('c', c);
  const A = 0x020000000001, B = 0x020000000002;
  // Fill the table: `entries - 2` MACs learned on port c, then B on b (A is learned by the first batch).
  const one = new Uint8Array(HDR + 60);
  const offs = new Int32Array([HDR]), lens = new Int32Array([60]);
  one[HDR + 12] = 0x08;
  macBytes(one, HDR, 0xffffffffffff);
  for (let i = 0; i < entries - 2; i++) { macBytes(one, HDR + 6, 0x060000000000 + i); c.rx.batch(one, offs, lens, 1, true); }
  macBytes(one, HDR + 6, B); b.rx.batch(one, offs, lens, 1, true);
  if (br.fdb.size !== entries - 1) throw new Error(`table has ${br.fdb.size} entries`);
  const len = 106, slot = 128;
  const buf = new Uint8Array(BATCH * slot);
  const bo = new Int32Array(BATCH), bl = new Int32Array(BATCH);
  for (let i = 0; i < BATCH; i++) {
    const o = i * slot + HDR;
    macBytes(buf, o, B); macBytes(buf, o + 6, A); buf[o + 12] = 0x08;
    bo[i] = o; bl[i] = len;
  }
  return { br, sinkB: b, batch: () => a.rx.batch(buf, bo, bl, BATCH, true) };
}

/**
 * The builds of @vswitch/switch to compare: VSWITCH_SWITCH_DIST=DIR[,DIR...] (e.g. a
 * copy of packages/switch/dist saved before a change, then this tree's), else this
 * tree's. Each { label, dir, mod }; labels are "before"/"after" for two, else the directory.
 */
export async function switchBuilds() {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const dirs = (process.env.VSWITCH_SWITCH_DIST ?? path.join(here, '../../packages/switch/dist')).split(',');
  const labels = dirs.length === 2 ? ['before', 'after'] : dirs;
  return Promise.all(dirs.map(async (dir, i) => ({
    label: labels[i], dir, mod: await import(pathToFileURL(path.join(path.resolve(dir), 'index.js')).href),
  })));
}

/**
 * Runs the calling script once per build and round, each in a child process with
 * VSWITCH_BENCH_CHILD=1 and VSWITCH_SWITCH_DIST set to that one build, builds
 * alternating round by round (a fresh heap each: large tables of several builds
 * in one heap skew each other's timings by tens of percent). Each child prints one
 * JSON line; returns them per build, in round order.
 */
export function inChildren(scriptUrl, args, builds, rounds) {
  const out = builds.map(() => []);
  for (let r = 0; r < rounds; r++) {
    for (const [i, b] of builds.entries()) {
      const c = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(scriptUrl), ...args], {
        env: { ...process.env, VSWITCH_SWITCH_DIST: b.dir, VSWITCH_BENCH_CHILD: '1' }, encoding: 'utf8',
      });
      if (c.status !== 0) throw new Error(`${b.label}: exit ${c.status}: ${c.stderr}`);
      out[i].push(JSON.parse(c.stdout.trim().split('\n').pop()));
    }
  }
  return out;
}

/** True in a child started by inChildren. */
export const isChild = process.env.VSWITCH_BENCH_CHILD === '1';
