// Prints the results table (median of rounds, ratio netdev/cap) and the functional findings.
// node report.mjs results.jsonl func.json
import { readFileSync } from 'node:fs';

const rows = readFileSync(process.argv[2], 'utf8').trim().split('\n').map((l) => JSON.parse(l));
const func = JSON.parse(readFileSync(process.argv[3], 'utf8').trim().split('\n').pop());
const med = (xs) => { const s = [...xs].sort((a, b) => a - b); const n = s.length; return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2; };
const pick = (test, method, key) => rows.filter((r) => r.test === test && r.method === method).map((r) => r[key]);
const k = (x) => (x >= 1000 ? `${(x / 1000).toFixed(0)}k` : String(x));

const metrics = [
  ['capture', 'offeredFps', 'capture: offered (gen tx) fps', k],
  ['capture', 'fps', 'capture: received fps', k],
  ['capture', 'pctOffered', 'capture: % of offered', (x) => `${x.toFixed(1)} %`],
  ['capture', 'cpuUsPerFrame', 'capture: reader CPU µs/frame', (x) => x.toFixed(2)],
  ['capture', 'sysUsPerFrame', '  of which kernel (sys) µs/frame', (x) => x.toFixed(2)],
  ['capture', 'cpuCores', 'capture: reader CPU (cores)', (x) => x.toFixed(2)],
  ['capture', 'readerRunqWaitPct', 'capture: reader waited for CPU (other load) %', (x) => x.toFixed(1)],
  ['capture', 'genRunqWaitPct', 'capture: generator waited for CPU %', (x) => x.toFixed(1)],
  ['inject', 'fps', 'inject: sent fps (JS loop)', k],
  ['inject', 'arrivedFps', 'inject: arrived at peer fps', k],
  ['inject', 'pctArrived', 'inject: % arrived', (x) => `${x.toFixed(1)} %`],
  ['inject', 'cpuUsPerFrame', 'inject: sender CPU µs/frame', (x) => x.toFixed(2)],
];
const n = pick('capture', 'cap', 'fps').length;
console.log(`\n| metric (median of ${n} rounds) | cap | netdev | netdev/cap | per-round cap ; netdev |`);
console.log('|---|---|---|---|---|');
for (const [test, key, label, fmt] of metrics) {
  const c = pick(test, 'cap', key), d = pick(test, 'netdev', key);
  const mc = med(c), mdv = med(d);
  console.log(`| ${label} | ${fmt(mc)} | ${fmt(mdv)} | ${(mdv / mc).toFixed(2)} | ${c.map(fmt).join(' ')} ; ${d.map(fmt).join(' ')} |`);
}
const fpb = pick('capture', 'netdev', 'framesPerBatch');
console.log(`netdev frames per JS callback (capture): ${fpb.join(' ')}`);
const errs = rows.filter((r) => r.test === 'inject' && r.errors).map((r) => `${r.method}: ${r.errors} errors (${r.lastErr})`);
if (errs.length) console.log(`inject send errors: ${errs.join('; ')}`);

console.log('\n| functional check | cap | netdev |');
console.log('|---|---|---|');
const f = (m) => func[m];
const gso = (g) => `${g.frames} frames, max ${g.maxLen} B, ${g.payloadBytes} payload B, csum ok ${g.l4CsumOk}/${g.frames}`;
console.log(`| UDP GSO send 14000 B (gso_size 1400), offloads on | ${gso(f('cap').gso)} | ${gso(f('netdev').gso)} |`);
const tg = (g) => `${gso(g)}, tags ${g.tags}`;
console.log(`| same, 802.1Q-tagged (vid 7), sent through a PACKET_VNET_HDR socket (as a VM would) | ${tg(f('cap').vnetTaggedGso)} | ${tg(f('netdev').vnetTaggedGso)} |`);
const tso1 = (x) => `${x.frames} frames, max ${x.maxLen} B, csum ok ${x.l4CsumOk}/${x.frames}, seq ${x.frames > 1 ? (x.seqOk ? 'ok' : 'BAD') : 'n/a'}, flags ${x.flags}`;
const tso = (t) => `v4: ${tso1(t[0])}; v6: ${tso1(t[1])}`;
console.log(`| TCP TSO super-frames (14000 B, mss 1400) via PACKET_VNET_HDR, v4 (CWR,PSH,FIN) + v6 (seq wraps) | ${tso(f('cap').tso)} | ${tso(f('netdev').tso)} |`);
const sm = (s) => `${s.frames} frame(s), csum ok ${s.l4CsumOk}/${s.frames}`;
console.log(`| 100 B UDP, tx-checksum offload on | ${sm(f('cap').smallUdp)} | ${sm(f('netdev').smallUdp)} |`);
const ts = (s) => `${sm(s)}, tags ${s.tags}`;
console.log(`| 100 B UDP, tagged vid 7, checksum-partial via PACKET_VNET_HDR | ${ts(f('cap').vnetTaggedSmall)} | ${ts(f('netdev').vnetTaggedSmall)} |`);
for (const [key, label] of [['capSent', 'frames sent by cap on the port'], ['netdevSent', 'frames sent by netdev on the port'], ['otherSocketSent', 'frames sent out the port by another socket (host)'], ['otherSocketBypassSent', 'same, that socket using PACKET_QDISC_BYPASS']]) {
  console.log(`| ${label}: seen by reader | ${f('cap').ownTx[key]}/${f('cap').ownTx.of} | ${f('netdev').ownTx[key]}/${f('netdev').ownTx.of} |`);
}
for (const [key, label] of [['dot1q', '802.1Q vid 42 pcp 3 on the wire'], ['qinq', '802.1ad vid 100 + 802.1Q vid 42'], ['prioTag', 'priority tag (vid 0 pcp 5)']]) {
  console.log(`| ${label}: tags in frame bytes | ${f('cap').vlan[key]} | ${f('netdev').vlan[key]} |`);
}
console.log(`| reader's kernel buffer (ss) | ${f('cap').kernelBuffer} | ${f('netdev').kernelBuffer} |`);
const s = func.netdevStats;
console.log(`\nnetdev stats (functional run): gsoSegmented ${s.gsoSegmented}, gsoSegments ${s.gsoSegments}, gsoDropped ${s.gsoDropped}, csumFilled ${s.csumFilled}, vlanRestored ${s.vlanRestored}, rxDropped ${s.rxDropped}, rxTruncated ${s.rxTruncated}`);
