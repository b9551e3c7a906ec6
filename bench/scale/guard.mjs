// Per-frame cost of the guards on a guarded port (guard.ts guardCheck), in
// process: an IPv4 UDP frame from a bound address and an ARP reply from a bound
// sender (the IPv4 path every guarded VM frame takes), and, where the build has
// them, an IPv6 UDP frame from a bound address (the IPv6 source guard's lookup).
// The figure is wall-clock ns per guardCheck call, median of ROUNDS rounds.
// Usage: node bench/scale/guard.mjs [DIST ...]   (DIST: a packages/switch/dist; default this tree's)
// Given two builds, the rounds alternate between them (child processes), so a
// before/after pair shares the machine's load.
import { execFileSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join, resolve } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const N = 2_000_000;
const ROUNDS = Number(process.env.ROUNDS ?? 7);

async function child(dist) {
  const m = await import(pathToFileURL(join(dist, 'index.js')).href);
  const g = new m.PortGuard();
  const MAC = 0x020000000001;
  const IP = 0x0a000a64;
  g.set({ dhcp: true, ipSource: true, ra: true, dhcpv6: true, ipv6Source: true });
  g.configured.set(IP, MAC);
  const udp = new Uint8Array(64);
  m.writeMac(udp, 0, 0x02000000000f); m.writeMac(udp, 6, MAC); m.write16(udp, 12, 0x0800);
  m.writeIpv4Header(udp, 14, { totalLen: 36, proto: 17, src: IP, dst: 0x0a000a01 });
  m.writeUdpHeader(udp, 34, 40000, 53, 8, IP, 0x0a000a01);
  const arp = new Uint8Array(60);
  m.writeMac(arp, 0, 0x02000000000f); m.writeMac(arp, 6, MAC); m.write16(arp, 12, 0x0806);
  m.writeArp(arp, 14, 2, MAC, IP, 0x02000000000f, 0x0a000a01);
  const frames = [udp, arp];
  const out = {};
  const run = (name, list, extra) => {
    let acc = 0;
    for (let i = 0; i < 200_000; i++) { const f = list[i & (list.length - 1)]; acc += m.guardCheck(g, f, 0, f.length, 0, MAC, ...extra); }
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i++) { const f = list[i & (list.length - 1)]; acc += m.guardCheck(g, f, 0, f.length, 0, MAC, ...extra); }
    out[name] = Number(process.hrtime.bigint() - t0) / N;
    if (acc !== -(N + 200_000)) throw new Error(`${name}: a frame was refused (${acc})`);
  };
  // The IPv6 guard's arguments (VLAN, clock) when the build takes them; ignored by one that does not.
  run('ipv4', frames, [10, 0]);
  if (m.writeIp6 !== undefined && m.Ip6Bindings !== undefined) {
    const b = new m.Ip6Bindings();
    g.attach(new m.MacOwners(), 1, b);
    g.set({ dhcp: true, ipSource: true, ra: true, dhcpv6: true, ipv6Source: true });
    const u6 = new Uint8Array(70);
    m.writeMac(u6, 0, 0x02000000000f); m.writeMac(u6, 6, MAC); m.write16(u6, 12, 0x86dd);
    const src = m.parseIp6('fd00:10::1234'); const dst = m.parseIp6('fd00:10::1');
    m.writeIp6(u6, 14, 16, 17, 64, src, 0, dst, 0);
    m.write16(u6, 54, 40000); m.write16(u6, 56, 53); m.write16(u6, 58, 16);
    const list = [u6, u6];
    run('ipv6', list, [10, 0]);
  }
  console.log(JSON.stringify(out));
}

if (process.argv[2] === '--child') {
  await child(process.argv[3]);
} else {
  const dists = process.argv.length > 2 ? process.argv.slice(2).map((d) => resolve(d)) : [join(here, '../../packages/switch/dist')];
  const res = dists.map(() => []);
  for (let r = 0; r < ROUNDS; r++) {
    dists.forEach((d, i) => res[i].push(JSON.parse(execFileSync(process.execPath, [fileURLToPath(import.meta.url), '--child', d]).toString())));
  }
  const med = (a) => a.slice().sort((x, y) => x - y)[a.length >> 1];
  dists.forEach((d, i) => {
    const keys = Object.keys(res[i][0]);
    console.log(d, Object.fromEntries(keys.map((k) => [k, `${med(res[i].map((x) => x[k])).toFixed(1)} ns`])));
  });
}
