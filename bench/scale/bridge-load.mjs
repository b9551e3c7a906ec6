// A bridge pipeline to measure in process (fdb.mjs, fdb-alloc.mjs): three in-memory
// ports, the MAC table filled to `entries`, and a batch of BATCH frames A -> B
// (known unicast, 106 bytes like trafgen's) in ring layout with a zeroed
// virtio_net_hdr in front of each, as from a TAP.
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
