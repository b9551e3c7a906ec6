// jsfwd: the same two-TAP forwarder as cfwd.c, through Node and the addon
// (@vswitch/netdev): a poll wakeup, one JS call per batch, one sendVnet per
// frame, no switching logic. vswitch's latency minus this one's is what the
// bridge pipeline (ingress, forward, egress) costs on a cold wakeup; this one's
// minus cfwd's is what entering JS at all costs (libuv, N-API, V8's entry, the
// send call). Usage: node jsfwd.mjs TAP1 TAP2 (foreground).
// JSFWD_ENTRIES=2 (trace.sh's `jsfwd2`): the addon's raw start(), without
// index.ts's followUp wrapper, so a reply's batch enters JS a second time (the
// control for the one-entry-per-wakeup change, measured in the same run).
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
const here = fileURLToPath(new URL('.', import.meta.url));
const nd = await import(`${here}../../packages/netdev/dist/index.js`);
const start = process.env.JSFWD_ENTRIES === '2'
  ? createRequire(import.meta.url)(`${here}../../packages/netdev/build/Release/netdev.node`).start
  : nd.start;
const [a, b] = process.argv.slice(2);
const ta = nd.openTap(a, { vnetHdr: true });
const tb = nd.openTap(b, { vnetHdr: true });
const ring = nd.ring();
// One closure per port, made once; the loop allocates nothing.
const to = (dst) => (n) => {
  for (let i = 0; i < n; i++) nd.sendVnet(dst, ring.arena, ring.offs[i], ring.lens[i]);
};
start(ta.handle, to(tb.handle));
start(tb.handle, to(ta.handle));
