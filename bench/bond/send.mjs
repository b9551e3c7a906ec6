// The cost of a bond on the send path: ns per 1514-byte frame through BondIo.send (64
// source MACs, two in-memory members that write nothing) against the same member
// called directly. Usage: node bench/bond/send.mjs direct|active-backup|balance-slb|lacp
// (after pnpm build). The figure is a per-frame overhead, not a throughput: the
// members do no I/O.
import { BondIo } from '../../packages/switch/dist/bond.js';
const mode = process.argv[2];
const mk = () => ({ kind: 'attach', start() {}, send(b, o, l) { return l; }, send2() { return 0; }, close() {}, describe() { return {}; } });
const f = new Uint8Array(1514); f[6] = 2; f[12] = 8;
let io = mk();
if (mode !== 'direct') {
  io = new BondIo('b', [{ name: 'a', io: mk() }, { name: 'c', io: mk() }], { mode, timers: false, linkOf: () => true, macOf: () => 0x020000000001, clock: () => 0 });
  io.start({ batch() {}, frame() {}, gone() {}, link() {} });
  if (mode === 'lacp') { io.lacp.members.forEach((m) => { m.attached = true; m.partner.state = 0x3f; }); io.tick(0); }
}
const N = 1e7;
for (let r = 0; r < 3; r++) {
  const t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) { f[11] = i & 63; io.send(f, 0, 1514); }
  if (r === 2) console.log(`${mode}: ${(Number(process.hrtime.bigint() - t) / N).toFixed(1)} ns/frame`);
}
