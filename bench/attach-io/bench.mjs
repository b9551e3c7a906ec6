// bench/attach-io: one measurement per process, printed as one JSON line.
//   node bench.mjs capture cap|netdev IFNAME SECONDS NSPID NSIF GENPID
//   node bench.mjs inject  cap|netdev IFNAME SECONDS NSPID NSIF
//   node bench.mjs func    IFNAME NS NSPID NSIF
// NSPID is any process inside the generator/sink netns: its /proc/PID/net/dev
// gives the netns-side veth counters without spawning anything.
import { readFileSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import * as nd from '../../packages/netdev/dist/index.js';

const require = createRequire(import.meta.url);
const { Cap } = require('cap');
const here = new URL('.', import.meta.url).pathname;
const CAP_BUF = 8 << 20; // same kernel buffer as netdev's SO_RCVBUF

function devCounters(pid, ifname) {
  for (const line of readFileSync(`/proc/${pid}/net/dev`, 'utf8').split('\n')) {
    const [name, rest] = line.split(':');
    if (rest === undefined || name.trim() !== ifname) continue;
    const f = rest.trim().split(/\s+/).map(Number);
    return { rxPackets: f[1], rxDropped: f[3], txPackets: f[9], txDropped: f[11] };
  }
  throw new Error(`no ${ifname} in /proc/${pid}/net/dev`);
}

// Time (s) a task spent runnable but waiting for a CPU: other load on the machine.
const runqWait = (pid) => { try { return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[1]) / 1e9; } catch { return NaN; } };
const now = () => Number(process.hrtime.bigint()) / 1e9;
const cpuSec = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
const sysSec = () => process.cpuUsage().system / 1e6;

function udpFrame(dport, tag, len = 64) {
  const f = Buffer.alloc(14 + 20 + 8 + len);
  Buffer.from('02ba0000000302ba000000010800', 'hex').copy(f, 0);
  f[14] = 0x45; f.writeUInt16BE(20 + 8 + len, 16); f[22] = 64; f[23] = 17;
  Buffer.from('c6120001c6120002', 'hex').copy(f, 26);
  f.writeUInt16BE(ipCsum(f, 14, 20), 24);
  f.writeUInt16BE(dport, 34); f.writeUInt16BE(dport, 36); f.writeUInt16BE(8 + len, 38);
  f.write(tag, 42);
  f.writeUInt16BE(udpCsum(f, 14, 34, 8 + len) || 0xffff, 40);
  return f;
}

function sum16(b, off, len, s = 0) {
  for (let i = 0; i + 1 < len; i += 2) s += (b[off + i] << 8) | b[off + i + 1];
  if (len & 1) s += b[off + len - 1] << 8;
  return s;
}
const fold = (s) => { while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 65536); return s; };
function ipCsum(b, ip, ihl) {
  const save = b.readUInt16BE(ip + 10); b.writeUInt16BE(0, ip + 10);
  const c = ~fold(sum16(b, ip, ihl)) & 0xffff; b.writeUInt16BE(save, ip + 10); return c;
}
function udpCsum(b, ip, l4, l4len) {
  const save = b.readUInt16BE(l4 + 6); b.writeUInt16BE(0, l4 + 6);
  let s = sum16(b, ip + 12, 8) + 17 + l4len;
  s = sum16(b, l4, l4len, s);
  b.writeUInt16BE(save, l4 + 6);
  return ~fold(s) & 0xffff;
}

// ---------------------------------------------------------------- readers

function openReader(method, ifname, onFrames) {
  if (method === 'cap') {
    const c = new Cap();
    const buf = Buffer.alloc(65536);
    c.open(ifname, '', CAP_BUF, buf);
    // One JS call per frame: that is cap's only receive API.
    c.on('packet', (n) => onFrames(buf, 0, n));
    return { close: () => c.close(), send: (f) => c.send(f, f.length) };
  }
  const { handle } = nd.openPacket(ifname);
  const r = nd.ring();
  nd.start(handle, (count) => {
    if (count < 0) throw new Error(`netdev error ${count}`);
    for (let i = 0; i < count; i++) onFrames(r.arena, r.offs[i], r.lens[i]);
  });
  return { close: () => nd.close(handle), send: (f) => nd.send(handle, f, 0, f.length), handle };
}

// ---------------------------------------------------------------- capture

function capture(method, ifname, secs, nspid, nsif, genpid) {
  let frames = 0, bytes = 0, t0 = 0, tEnd = Infinity, s0;
  const snap = () => ({
    t: now(), cpu: cpuSec(), sys: sysSec(), frames, bytes, gen: devCounters(nspid, nsif), rx: devCounters('self', ifname),
    wait: runqWait('self'), genWait: runqWait(genpid), batches: method === 'netdev' ? nd.stats().rxBatches : 0,
  });
  const finish = () => {
    const s1 = snap();
    const dt = s1.t - s0.t, n = s1.frames - s0.frames;
    const offered = s1.gen.txPackets - s0.gen.txPackets;
    console.log(JSON.stringify({
      test: 'capture', method, seconds: +dt.toFixed(3),
      fps: Math.round(n / dt), offeredFps: Math.round(offered / dt),
      pctOffered: +(100 * n / offered).toFixed(1),
      cpuUsPerFrame: +((s1.cpu - s0.cpu) * 1e6 / n).toFixed(3), sysUsPerFrame: +((s1.sys - s0.sys) * 1e6 / n).toFixed(3), cpuCores: +((s1.cpu - s0.cpu) / dt).toFixed(2),
      vethRxFps: Math.round((s1.rx.rxPackets - s0.rx.rxPackets) / dt),
      genTxDroppedFps: Math.round((s1.gen.txDropped - s0.gen.txDropped) / dt),
      readerRunqWaitPct: +(100 * (s1.wait - s0.wait) / dt).toFixed(1),
      genRunqWaitPct: +(100 * (s1.genWait - s0.genWait) / dt).toFixed(1),
      ...(method === 'netdev' ? { framesPerBatch: +(n / (s1.batches - s0.batches)).toFixed(1) } : {}),
    }));
    process.exit(0);
  };
  // cap's uv_poll callback loops until pcap_dispatch returns 0, which under
  // overload may never happen, so the clock is also checked from the handler.
  let tick = 0;
  openReader(method, ifname, (buf, off, len) => {
    frames++; bytes += len;
    if ((++tick & 1023) === 0 && now() >= tEnd) finish();
  });
  setTimeout(() => { s0 = snap(); t0 = s0.t; tEnd = t0 + secs; setTimeout(finish, secs * 1000); }, 500);
}

// ---------------------------------------------------------------- inject

function inject(method, ifname, secs, nspid, nsif) {
  const r = openReader(method, ifname, () => {});
  const f = udpFrame(9000, 'BAINJ');
  setTimeout(() => {
    const c0 = devCounters(nspid, nsif), t0 = now(), cpu0 = cpuSec();
    let ok = 0, err = 0, lastErr = '';
    const end = t0 + secs;
    if (method === 'cap') {
      for (;;) {
        for (let i = 0; i < 256; i++) {
          try { r.send(f); ok++; } catch (e) { err++; lastErr = e.message; }
        }
        if (now() >= end) break;
      }
    } else {
      for (;;) {
        for (let i = 0; i < 256; i++) {
          const n = r.send(f);
          if (n > 0) ok++; else { err++; lastErr = String(n); }
        }
        if (now() >= end) break;
      }
    }
    const t1 = now(), cpu1 = cpuSec();
    setTimeout(() => {
      const c1 = devCounters(nspid, nsif), dt = t1 - t0;
      const arrived = c1.rxPackets - c0.rxPackets;
      console.log(JSON.stringify({
        test: 'inject', method, seconds: +dt.toFixed(3), fps: Math.round(ok / dt), errors: err, lastErr,
        arrivedFps: Math.round(arrived / dt), pctArrived: +(100 * arrived / ok).toFixed(1),
        peerRxDropped: c1.rxDropped - c0.rxDropped, cpuUsPerFrame: +((cpu1 - cpu0) * 1e6 / ok).toFixed(3),
      }));
      r.close();
      process.exit(0);
    }, 200);
  }, 300);
}

// ---------------------------------------------------------------- functional

function parse(b) {
  const tags = [];
  let p = 12, et = b.readUInt16BE(12);
  while ((et === 0x8100 || et === 0x88a8) && p + 6 <= b.length) {
    tags.push(`${et.toString(16)}/vid ${b.readUInt16BE(p + 2) & 0xfff} pcp ${b[p + 2] >> 5}`);
    p += 4; et = b.readUInt16BE(p);
  }
  const ip = p + 2;
  let proto, l4, l4len, pseudo, ipOk = true;
  if (et === 0x0800 && b.length >= ip + 20) {
    const ihl = (b[ip] & 15) * 4;
    proto = b[ip + 9]; l4 = ip + ihl; l4len = Math.min(b.readUInt16BE(ip + 2), b.length - ip) - ihl;
    pseudo = sum16(b, ip + 12, 8) + proto + l4len;
    ipOk = ipCsum(b, ip, ihl) === b.readUInt16BE(ip + 10);
  } else if (et === 0x86dd && b.length >= ip + 40) {
    proto = b[ip + 6]; l4 = ip + 40; l4len = Math.min(b.readUInt16BE(ip + 4), b.length - l4);
    pseudo = sum16(b, ip + 8, 32) + proto + l4len;
  } else return null;
  if ((proto !== 17 && proto !== 6) || l4len < (proto === 6 ? 20 : 8)) return null;
  const tcp = proto === 6, hl = tcp ? (b[l4 + 12] >> 4) * 4 : 8;
  const stored = b.readUInt16BE(l4 + (tcp ? 16 : 6));
  return {
    len: b.length, tags, dport: b.readUInt16BE(l4 + 2), payload: l4len - hl, ipOk,
    l4Ok: (!tcp && stored === 0) || fold(sum16(b, l4, l4len, pseudo)) === 0xffff,
    seq: tcp ? b.readUInt32BE(l4 + 4) : 0, flags: tcp ? b[l4 + 13] : 0,
  };
}

const run = (cmd, args) => new Promise((res, rej) => {
  const p = spawn(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  p.on('exit', (code) => (code === 0 ? res() : rej(new Error(`${cmd} ${args.join(' ')} -> ${code}`))));
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function func(ifname, ns, nspid, nsif) {
  const seen = { cap: [], netdev: [] };
  const readers = {};
  for (const m of ['cap', 'netdev']) {
    readers[m] = openReader(m, ifname, (buf, off, len) => {
      const p = parse(Buffer.from(buf.subarray(off, off + len)));
      if (p && p.dport >= 9001 && p.dport <= 9013) seen[m].push(p);
    });
  }
  await sleep(200);
  // Kernel-side buffering of each reader's socket, as ss reports it.
  const ssOut = spawnSync('ss', ['-0', '-a', '-e', '-m', '-p'], { encoding: 'utf8' }).stdout.split('\n');
  const sockInfo = [];
  ssOut.forEach((l, i) => { if (l.includes(`pid=${process.pid},`) && l.includes(ifname)) sockInfo.push(`${ssOut[i + 1]} ${ssOut[i + 2] ?? ''}`); });
  const bufOf = (m) => {
    const l = sockInfo.find((x) => (m === 'cap' ? /ver:1 .*ring_rx/.test(x) : /ver:0 .*vnethdr/.test(x))) ?? '';
    const ring = /frm_size:(\d+),frm_nr:(\d+)/.exec(l), rb = /rb(\d+)/.exec(l);
    return ring ? `TPACKET ring: ${ring[2]} slots of ${ring[1]} B` : rb ? `socket queue: rcvbuf ${rb[1]} B` : 'unknown';
  };
  const py = '/usr/bin/python3', tx = here + 'traffic.py', N = 100;
  await run('ip', ['netns', 'exec', ns, py, tx, 'gso', '198.18.0.2']);
  await run('ip', ['netns', 'exec', ns, py, tx, 'small', '198.18.0.2']);
  const capTx = udpFrame(9003, 'BACAPTX'), ndTx = udpFrame(9004, 'BANDTX');
  for (let i = 0; i < N; i++) readers.cap.send(capTx);
  for (let i = 0; i < N; i++) readers.netdev.send(ndTx);
  await run(py, [tx, 'raw', ifname, String(N)]);
  await run(py, [tx, 'rawbypass', ifname, String(N)]);
  await run('ip', ['netns', 'exec', ns, py, tx, 'vlan', nsif]);
  await run('ip', ['netns', 'exec', ns, py, tx, 'vnet', nsif]);
  await run('ip', ['netns', 'exec', ns, py, tx, 'tcp', nsif]);
  await sleep(300);
  const peer = devCounters(nspid, nsif);
  const out = {};
  for (const m of ['cap', 'netdev']) {
    const by = (port) => seen[m].filter((p) => p.dport === port);
    const tagsOf = (port) => [...new Set(by(port).map((p) => p.tags.join(' + ') || 'untagged'))].join('; ') || 'not seen';
    const g = by(9001), s = by(9002), vg = by(9009), vs = by(9010);
    out[m] = {
      gso: { frames: g.length, maxLen: Math.max(0, ...g.map((p) => p.len)), payloadBytes: g.reduce((a, p) => a + p.payload, 0), l4CsumOk: g.filter((p) => p.l4Ok).length, ipCsumOk: g.filter((p) => p.ipOk).length },
      smallUdp: { frames: s.length, l4CsumOk: s.filter((p) => p.l4Ok).length },
      vnetTaggedGso: { frames: vg.length, maxLen: Math.max(0, ...vg.map((p) => p.len)), payloadBytes: vg.reduce((a, p) => a + p.payload, 0), l4CsumOk: vg.filter((p) => p.l4Ok).length, ipCsumOk: vg.filter((p) => p.ipOk).length, tags: tagsOf(9009) },
      tso: [9012, 9013].map((port) => {
        const t = by(port);
        const seqOk = t.every((p, i) => i === 0 || (p.seq - t[i - 1].seq) >>> 0 === t[i - 1].payload);
        const fl = t.map((p) => p.flags.toString(16).padStart(2, '0'));
        return { frames: t.length, maxLen: Math.max(0, ...t.map((p) => p.len)), payloadBytes: t.reduce((a, p) => a + p.payload, 0), l4CsumOk: t.filter((p) => p.l4Ok).length, ipCsumOk: t.filter((p) => p.ipOk).length, seqOk, flags: fl.length > 2 ? `${fl[0]},${fl[1]}..${fl[fl.length - 1]}` : fl.join(',') };
      }),
      vnetTaggedSmall: { frames: vs.length, l4CsumOk: vs.filter((p) => p.l4Ok).length, tags: tagsOf(9010) },
      ownTx: { capSent: by(9003).length, netdevSent: by(9004).length, otherSocketSent: by(9005).length, otherSocketBypassSent: by(9011).length, of: N },
      kernelBuffer: bufOf(m),
      vlan: { dot1q: tagsOf(9006), qinq: tagsOf(9007), prioTag: tagsOf(9008) },
    };
  }
  out.peerRxPackets = peer.rxPackets;
  out.netdevStats = nd.stats();
  console.log(JSON.stringify({ test: 'func', ...out }));
  for (const r of Object.values(readers)) r.close();
  process.exit(0);
}

const [mode, ...a] = process.argv.slice(2);
if (mode === 'capture') capture(a[0], a[1], +a[2], a[3], a[4], a[5]);
else if (mode === 'inject') inject(a[0], a[1], +a[2], a[3], a[4]);
else if (mode === 'func') func(a[0], a[1], a[2], a[3]);
else { console.error('usage: see header'); process.exit(2); }
