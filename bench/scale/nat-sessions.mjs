// NAPT with 100,000 sessions, in process: `Napt` (packages/nat) driven with
// synthetic IPv4 packets, no ports and no kernel, so the figures are the
// translator's own cost.
//
// The table: 400 inside hosts (10.0.1.1 on), each with 125 TCP connections and 125
// UDP flows to random remotes, from random ephemeral ports (32768-47999): 50,000
// TCP sessions, established by SYN / SYN+ACK / ACK, and 50,000 UDP sessions, each
// on its own mapping (the most memory per session; a mapping holds one public
// port, so 50,000 TCP mappings fill 78 % of the 64,512-port range).
// Measured, with the table at 10 sessions (5 TCP, 5 UDP, 5 hosts) and at 100,000:
// - memory: used heap and RSS after a forced GC, empty table vs filled, per
//   100,000 sessions (target < 100 MB);
// - an established packet: outbound (ACK or UDP) + the inbound answer, of a random
//   session each time (at 100,000 most miss the CPU caches: the worst case; a
//   flow's packets usually come in bursts): ns per pair, and heap bytes per pair;
//   also with 100,000 sessions but traffic on 10 of them, and the loop alone
//   (writing the packets), to subtract;
// - a new flow's first packet: an outbound SYN from an existing host, from a fresh
//   ephemeral port (48000-60999), to a random remote, which opens a mapping and a
//   session: ns per SYN. The SYNs of a round are flushed after it (not timed), so
//   each round starts from the same table.
// Medians over ROUNDS rounds; ratios 100,000 / 10 (target for both: ~1.0, not
// measurably slower).
// Usage: node --expose-gc bench/scale/nat-sessions.mjs [ROUNDS] [PAIRS] [SYNS]
//   (defaults 15 rounds, 200,000 pairs and 2,000 SYNs per round). Needs
//   packages/nat/dist (cd packages/nat && npx tsc -b).
import { getHeapStatistics } from 'node:v8';
import { Napt, NaptResult } from '../../packages/nat/dist/napt/translate.js';

if (typeof globalThis.gc !== 'function') {
  console.error('nat-sessions.mjs: run with node --expose-gc (memory figures need forced GCs)');
  process.exit(2);
}
const ROUNDS = Number(process.argv[2] ?? 15);
const PAIRS = Number(process.argv[3] ?? 200_000);
const SYNS = Number(process.argv[4] ?? 2_000);
const HOSTS = 400;
const PER_HOST = 125; // per protocol
const FULL = HOSTS * PER_HOST * 2;
const PUB = 0xc0000201 | 0; // 192.0.2.1
const OK = NaptResult.ok;

const SYN = 0x02, ACK = 0x10;
let seed = 0x2545f491;
const rnd = () => { seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5; return seed >>> 0; };

// ---- packets, written into one work buffer (IPv4 at offset 0; checksums are not
// verified by NAPT, only updated, so they are left 0) ----
const work = new Uint8Array(64);
const w16 = (o, v) => { work[o] = v >>> 8; work[o + 1] = v & 0xff; };
const w32 = (o, v) => { work[o] = v >>> 24; work[o + 1] = (v >>> 16) & 0xff; work[o + 2] = (v >>> 8) & 0xff; work[o + 3] = v & 0xff; };
function packet(proto, src, dst, sport, dport, flags) {
  const len = proto === 6 ? 40 : 32;
  work[0] = 0x45; work[1] = 0; w16(2, len); w16(4, 0); w16(6, 0x4000); work[8] = 64; work[9] = proto; w16(10, 0);
  w32(12, src); w32(16, dst); w16(20, sport); w16(22, dport);
  if (proto === 6) {
    w32(24, 1); w32(28, 0); work[32] = 0x50; work[33] = flags; w16(34, 65535); w16(36, 0); w16(38, 0);
  } else {
    w16(24, 12); w16(26, 0); w32(28, 0);
  }
}

// ---- a table with n sessions: half TCP established, half UDP ----
function sessions(hosts, perHost) {
  const n = hosts * perHost * 2;
  const s = {
    n, proto: new Uint8Array(n), inIp: new Int32Array(n), inPort: new Uint16Array(n),
    remIp: new Int32Array(n), remPort: new Uint16Array(n), pubPort: new Uint16Array(n),
    hostIps: new Int32Array(hosts),
  };
  let k = 0;
  for (let h = 0; h < hosts; h++) {
    const ip = (0x0a000101 + h) | 0; // 10.0.1.1, 10.0.1.2, ...
    s.hostIps[h] = ip;
    const used = new Set();
    for (let p = 0; p < 2; p++) {
      for (let j = 0; j < perHost; j++) {
        let port;
        do port = 32768 + (rnd() % 15232); while (used.has(port));
        used.add(port);
        s.proto[k] = p === 0 ? 6 : 17;
        s.inIp[k] = ip; s.inPort[k] = port;
        s.remIp[k] = (0x0b000000 + (rnd() & 0x00ffffff)) | 0; // 11.x.y.z
        s.remPort[k] = p === 0 ? [443, 80, 22, 8443][rnd() & 3] : [53, 123, 443, 3478][rnd() & 3];
        k++;
      }
    }
  }
  return s;
}

function fill(napt, s, now) {
  for (let i = 0; i < s.n; i++) {
    const proto = s.proto[i];
    packet(proto, s.inIp[i], s.remIp[i], s.inPort[i], s.remPort[i], SYN);
    if (napt.outbound(work, 0, now) !== OK) throw new Error(`open ${i}: refused ${JSON.stringify(napt.table.stats().refused)}`);
    const pub = (work[20] << 8) | work[21];
    s.pubPort[i] = pub;
    if (proto === 6) {
      packet(6, s.remIp[i], PUB, s.remPort[i], pub, SYN | ACK);
      if (napt.inbound(work, 0, now) !== OK) throw new Error(`syn+ack ${i}`);
      packet(6, s.inIp[i], s.remIp[i], s.inPort[i], s.remPort[i], ACK);
      if (napt.outbound(work, 0, now) !== OK) throw new Error(`ack ${i}`);
    }
  }
  if (napt.table.size !== s.n) throw new Error(`table has ${napt.table.size} sessions, want ${s.n}`);
  for (let i = 0; i < s.n; i += 997) {
    const t = napt.table.lookupOut(s.proto[i], s.inIp[i], s.inPort[i], s.remIp[i], s.remPort[i]);
    if (t === undefined || (s.proto[i] === 6 && t.stateName !== 'established')) throw new Error(`session ${i}: ${t?.stateName}`);
  }
}

const mkNapt = () => new Napt({
  publicIp: PUB,
  table: { seed: 7, maxSessions: FULL + 2 * SYNS + 1000, maxSessionsPerHost: 65536 },
});

// ---- the per-packet loops ----
const order = new Int32Array(1 << 20);
for (let i = 0; i < order.length; i++) order[i] = rnd() >>> 2;

/**
 * `pairs` outbound+inbound pairs, each of a random session among `active` of s's
 * (spread over the table); ns per pair. napt null: the loop alone (packet writes).
 */
function established(napt, s, pairs, now, active = s.n) {
  const stride = Math.floor(s.n / active);
  let bad = 0;
  let c = rnd() & (order.length - 1);
  const t0 = process.hrtime.bigint();
  for (let k = 0; k < pairs; k++) {
    const i = (order[c] % active) * stride;
    c = (c + 1) & (order.length - 1);
    const proto = s.proto[i];
    packet(proto, s.inIp[i], s.remIp[i], s.inPort[i], s.remPort[i], ACK);
    if (napt !== null && napt.outbound(work, 0, now) !== OK) bad++;
    packet(proto, s.remIp[i], PUB, s.remPort[i], s.pubPort[i], ACK);
    if (napt !== null && napt.inbound(work, 0, now) !== OK) bad++;
  }
  const ns = Number(process.hrtime.bigint() - t0) / pairs;
  if (bad > 0) throw new Error(`${bad} packets not translated: ${JSON.stringify(Object.entries(napt.resultCounts()).filter(([, v]) => v > 0))}`);
  return ns;
}

const synIp = new Int32Array(SYNS), synPort = new Uint16Array(SYNS);
/** SYNS new flows from random existing hosts of s: ns per SYN; then flushes them. */
function newFlows(napt, s, now) {
  for (let k = 0; k < SYNS; k++) {
    synIp[k] = s.hostIps[rnd() % s.hostIps.length];
    synPort[k] = 48000 + (rnd() % 13000);
  }
  let bad = 0;
  const before = napt.table.size;
  const t0 = process.hrtime.bigint();
  for (let k = 0; k < SYNS; k++) {
    packet(6, synIp[k], (0x0c000000 + k) | 0, synPort[k], 443, SYN); // 12.0.x.y:443
    const r = napt.outbound(work, 0, now);
    if (r !== OK) bad++;
  }
  const ns = Number(process.hrtime.bigint() - t0) / SYNS;
  if (bad > 0) throw new Error(`${bad} SYNs refused`);
  const opened = napt.table.size - before;
  for (let k = 0; k < SYNS; k++) napt.table.flushInside(6, synIp[k], synPort[k], synPort[k]);
  if (napt.table.size !== before) throw new Error(`flush left ${napt.table.size - before}`);
  return { ns, opened };
}

/** Heap bytes per established pair (median of runs without a GC). */
function bytesPerPair(napt, s, now) {
  const xs = [];
  for (let r = 0; r < 20; r++) {
    const a = getHeapStatistics().used_heap_size;
    established(napt, s, 20_000, now);
    const g = getHeapStatistics().used_heap_size - a;
    if (g >= 0) xs.push(g / 20_000);
  }
  return med(xs);
}

const med = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const mb = (b) => (b / 1e6).toFixed(1);
function mem() {
  globalThis.gc(); globalThis.gc();
  return { heap: getHeapStatistics().used_heap_size, rss: process.memoryUsage().rss };
}

// ---- set-up ----
const small = sessions(5, 1); // 10 sessions
const big = sessions(HOSTS, PER_HOST); // 100,000 sessions
const nSmall = mkNapt();
fill(nSmall, small, 0);
const m0 = mem();
const nBig = mkNapt();
const m1 = mem();
const tFill = process.hrtime.bigint();
fill(nBig, big, 0);
const fillMs = Number(process.hrtime.bigint() - tFill) / 1e6;
const m2 = mem();
const st = nBig.table.stats();

// ---- rounds, alternating the two tables ----
const res = { est10: [], estBig: [], estHot: [], new10: [], newBig: [], loop10: [], loopBig: [] };
let now = 1000;
for (let r = 0; r < ROUNDS + 1; r++) { // round 0 warms up
  now += 1000;
  const a = established(nSmall, small, PAIRS, now);
  const b = established(nBig, big, PAIRS, now);
  const c = newFlows(nSmall, small, now);
  const d = newFlows(nBig, big, now);
  const e = established(null, small, PAIRS, now);
  const f = established(null, big, PAIRS, now);
  const g = established(nBig, big, PAIRS, now, 10);
  if (r === 0) continue;
  res.estHot.push(g);
  res.est10.push(a); res.estBig.push(b); res.new10.push(c.ns); res.newBig.push(d.ns); res.loop10.push(e); res.loopBig.push(f);
}
const bytes10 = bytesPerPair(nSmall, small, now);
const bytesBig = bytesPerPair(nBig, big, now);
const m3 = mem();

// Why a new flow costs what it does: the public port is the inside port if free
// (port preservation), else the first free one on a linear walk from a random
// start. Mean steps of that walk over all starts (runs of used ports of length L
// contribute L(L+1)/2 steps), and the longest run.
let walk = 0, longest = 0;
{
  const R = 64512;
  const used = (j) => nBig.table.mappingByPublic(6, 1024 + (j % R)) !== undefined;
  let first = 0;
  while (first < R && used(first)) first++; // start after a free port, so no run wraps
  let run = 0;
  for (let j = first + 1; j <= first + R; j++) {
    if (used(j)) { run++; continue; }
    walk += (run * (run + 1)) / 2; longest = Math.max(longest, run); run = 0;
  }
  walk /= R;
}

const perSession = (m2.heap - m1.heap) / FULL;
console.log(`NAPT, ${FULL} sessions (${st.byProto.tcp} TCP established, ${st.byProto.udp} UDP; ${st.mappings} mappings, ${st.hosts} hosts), filled in ${fillMs.toFixed(0)} ms`);
console.log(`memory: heap +${mb(m2.heap - m1.heap)} MB (${perSession.toFixed(0)} B/session), RSS +${mb(m2.rss - m1.rss)} MB for ${FULL} sessions `
  + `(target < 100 MB); an empty Napt ${mb(m1.heap - m0.heap)} MB of heap (its 3 x 65,536-slot port arrays); RSS at the end ${mb(m3.rss)} MB`);
console.log(`established, outbound+inbound: ${med(res.est10).toFixed(0)} ns/pair with 10 sessions, ${med(res.estBig).toFixed(0)} ns/pair with ${FULL}: `
  + `ratio ${(med(res.estBig) / med(res.est10)).toFixed(2)}x (cost at ${FULL} / cost at 10); heap ${bytes10.toFixed(2)} / ${bytesBig.toFixed(2)} bytes per pair`);
console.log(`  with ${FULL} sessions and traffic on 10 of them: ${med(res.estHot).toFixed(0)} ns/pair `
  + `(ratio ${(med(res.estHot) / med(res.est10)).toFixed(2)}x: the table's size costs only through the CPU caches)`);
console.log(`  the loop alone (writing the packets, no NAPT): ${med(res.loop10).toFixed(0)} / ${med(res.loopBig).toFixed(0)} ns; NAPT's share: `
  + `${(med(res.est10) - med(res.loop10)).toFixed(0)} / ${(med(res.estBig) - med(res.loopBig)).toFixed(0)} ns, `
  + `ratio ${((med(res.estBig) - med(res.loopBig)) / (med(res.est10) - med(res.loop10))).toFixed(2)}x`);
console.log(`new flow, first packet (SYN opening a mapping + session): ${(med(res.new10) / 1000).toFixed(2)} us with 10 sessions, `
  + `${(med(res.newBig) / 1000).toFixed(2)} us with ${FULL}: ratio ${(med(res.newBig) / med(res.new10)).toFixed(2)}x`);
console.log(`(medians of ${ROUNDS} rounds of ${PAIRS} pairs and ${SYNS} SYNs; min..max established ${Math.min(...res.estBig).toFixed(0)}..${Math.max(...res.estBig).toFixed(0)} ns, `
  + `new flow ${(Math.min(...res.newBig) / 1000).toFixed(2)}..${(Math.max(...res.newBig) / 1000).toFixed(2)} us at ${FULL}; `
  + `TCP public ports in use ${st.byProto.tcp} of 64,512)`);
console.log(`TCP port allocation at ${FULL}: a linear probe from a random start walks ${walk.toFixed(0)} used ports on average `
  + `(longest run of used ports ${longest}); inside ports are preserved when free, so the VMs' ephemeral range fills as one block`);
