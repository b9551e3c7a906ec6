/*
 * What the host-socket TCP engine costs per frame, end to end over a real
 * loopback socket (a sink/source server in this process), with a minimal VM that
 * acknowledges everything:
 *   npx vitest bench --project unit --run packages/nat/src/host/tcp.bench.ts
 * Printed, not benched (each figure needs its own connection and set-up):
 * - VM -> host: 1460-byte segments with full checksums (verified by the engine),
 *   64 per batch, as a TAP without offloads delivers them; the figure includes
 *   building each segment here (printed separately), the engine's copy, the
 *   corked socket writes and the batch's writev.
 * - host -> VM: 128 MB written by the server, sent as one-MSS frames with full
 *   checksums (gso off) or 64 KB GSO super-frames (gso on), through both socket
 *   paths: onread (the socket reads into the engine's frame blocks, the path of
 *   the sockets the engine connects) and 'data' events (the path of port
 *   forwards' accepted sockets, frames copied from Node's chunks). Wall time per
 *   frame includes the socket reads; the CPU time per MB (process.cpuUsage)
 *   includes the server's writes in this same process.
 * Measured on the 2-core dev VM (Node 20, load average 2-3 from other work, so
 * ranges over runs): VM -> host 3.4-4.8 us per segment of which 1.0-1.4 us is
 * building it here. Host -> VM with onread: 2.1-3.3 us per 1460-byte frame
 * (450-710 MB/s, 1680-1970 us CPU/MB), 30-58 us per 64 KB GSO frame (1.1-2.1
 * GB/s, 660-880 us CPU/MB); through 'data' events (and before onread, for all
 * sockets): 2.0-3.9 us per 1460-byte frame (1620-2570 us CPU/MB), 36-80 us per
 * GSO frame (0.8-1.8 GB/s, 690-1290, typically about 1050, us CPU/MB). Before the
 * deferred output (setImmediate) 64 KiB socket reads made a 64240-byte frame and
 * a 1296-byte runt each (33 KB a frame on average); before tcp-sum.ts, the VM ->
 * host figure was about 1 us higher.
 * Not part of `vitest run`: the unit project only collects *.test.ts.
 */
import net from 'node:net';
import { bench, describe } from 'vitest';
import { fold, parseIp4, pseudoSum, sum16 } from '@vswitch/switch';
import { HostBudget } from './types.js';
import { HostTcp } from './tcp.js';

const VM = parseIp4('10.0.10.5');
const LO = parseIp4('127.0.0.1');
const w16 = (b: Uint8Array, o: number, v: number): void => { b[o] = (v >>> 8) & 255; b[o + 1] = v & 255; };
const w32 = (b: Uint8Array, o: number, v: number): void => { w16(b, o, v >>> 16); w16(b, o + 2, v & 0xffff); };
const r32 = (b: Uint8Array, o: number): number => ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** One segment from the VM at b[0..): returns its IPv4 total length. */
function seg(b: Buffer, sport: number, dport: number, seq: number, ack: number, flags: number, plen: number, opts: number[] = []): number {
  const hl = 20 + opts.length;
  const total = 20 + hl + plen;
  b[0] = 0x45; w16(b, 2, total); w16(b, 6, 0x4000); b[8] = 64; b[9] = 6; w16(b, 10, 0); w32(b, 12, VM); w32(b, 16, LO);
  w16(b, 10, ~fold(sum16(b, 0, 20)) & 0xffff);
  w16(b, 20, sport); w16(b, 22, dport); w32(b, 24, seq); w32(b, 28, ack); b[32] = (hl / 4) << 4; b[33] = flags;
  w16(b, 34, 65535); w16(b, 36, 0); w16(b, 38, 0);
  b.set(opts, 40);
  w16(b, 36, ~fold(sum16(b, 20, hl + plen, pseudoSum(VM, LO, 6, hl + plen))) & 0xffff);
  return total;
}

async function measure(gso: boolean, onread: boolean): Promise<void> {
  let sinkBytes = 0;
  let srv: net.Socket | undefined;
  const server = net.createServer({ allowHalfOpen: true }, (s) => { srv = s; s.on('data', (d: Buffer) => { sinkBytes += d.length; }); });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as net.AddressInfo).port;
  // The VM: its receive state and what it learnt of the engine's window.
  let rcvNxt = 0;
  let rxBytes = 0;
  let frames = 0;
  let ackDue = false;
  let hostAck = 0;
  let hostWnd = 0;
  let sndNxt = 1000;
  const b = Buffer.alloc(65535 + 100);
  const tcp = new HostTcp({
    clock: () => performance.now(), gso, mss: 1460, budget: new HostBudget(),
    connect: (_ip, p, opts) => net.connect({ host: '127.0.0.1', port: p, ...(onread ? { onread: opts } : {}) }),
    toVm: (buf, ipOff, ipLen) => {
      frames++;
      const th = ipOff + 20;
      const len = ipLen - 20 - (buf[th + 12] >>> 4) * 4;
      const seq = r32(buf, th + 4);
      hostAck = r32(buf, th + 8);
      if (buf[th + 13] & 2) {
        rcvNxt = (seq + 1) >>> 0;
        hostWnd = 65535;
        return;
      }
      hostWnd = ((buf[th + 14] << 8) | buf[th + 15]) << 7;
      if (len > 0 && seq === rcvNxt) {
        rcvNxt = (rcvNxt + len) >>> 0;
        rxBytes += len;
        ackDue = true;
      }
    },
  });
  tcp.fromVm(b, 0, seg(b, 5555, port, 999, 0, 2, 0, [2, 4, 5, 180, 1, 3, 3, 7]), false);
  while (rcvNxt === 0) await tick();
  tcp.fromVm(b, 0, seg(b, 5555, port, sndNxt, rcvNxt, 0x10, 0), false);
  while (srv === undefined) await tick();

  const N = 40_000;
  const b0 = performance.now();
  for (let i = 0; i < N; i++) seg(b, 5555, port, i, rcvNxt, 0x18, 1460);
  const build = ((performance.now() - b0) * 1000) / N;
  let busy = 0;
  let sent = 0;
  const t0 = performance.now();
  while (sent < N) {
    if (((sndNxt + 1460 - hostAck) | 0) > hostWnd) {
      await tick();
      continue;
    }
    const c0 = performance.now();
    for (let j = 0; j < 64 && sent < N && ((sndNxt + 1460 - hostAck) | 0) <= hostWnd; j++, sent++) {
      tcp.fromVm(b, 0, seg(b, 5555, port, sndNxt, rcvNxt, 0x18, 1460), false);
      sndNxt = (sndNxt + 1460) >>> 0;
    }
    await Promise.resolve(); // the engine's end-of-batch flush (writev, ACK)
    busy += performance.now() - c0;
  }
  while (sinkBytes < N * 1460) await tick();
  const t1 = performance.now();
  console.log(`gso=${gso} VM->host: ${((busy * 1000) / N).toFixed(2)} us/segment (building it here: ${build.toFixed(2)} us), `
    + `${((N * 1460) / 1e6 / ((t1 - t0) / 1000)).toFixed(0)} MB/s`);

  const total = 128 << 20;
  const chunk = Buffer.alloc(1 << 20, 7);
  let written = 0;
  const write = (): void => {
    while (written < total) {
      written += chunk.length;
      if (!(srv as net.Socket).write(chunk)) {
        (srv as net.Socket).once('drain', write);
        return;
      }
    }
  };
  frames = 0;
  const copied0 = tcp.counters.framesCopied;
  const cpu0 = process.cpuUsage();
  const t2 = performance.now();
  write();
  while (rxBytes < total) {
    await tick();
    if (ackDue) {
      ackDue = false;
      tcp.fromVm(b, 0, seg(b, 5555, port, sndNxt, rcvNxt, 0x10, 0), false);
    }
  }
  const el = performance.now() - t2;
  const cpu = process.cpuUsage(cpu0);
  const cpuPerMB = (cpu.user + cpu.system) / (total / 1e6);
  console.log(`gso=${gso} host->VM (${onread ? 'onread' : "'data'"}): ${frames} frames for 128 MB `
    + `(${tcp.counters.framesCopied - copied0} copied, ${tcp.counters.blocks} blocks), ${((el * 1000) / frames).toFixed(2)} us/frame, `
    + `${(total / 1e6 / (el / 1000)).toFixed(0)} MB/s, CPU ${cpuPerMB.toFixed(0)} us/MB (${((cpu.system * 100) / (cpu.user + cpu.system)).toFixed(0)}% sys, `
    + 'the writing server included)');
  tcp.close();
  server.close();
}

describe('host TCP per-frame cost', () => {
  bench('gso off, then gso on; onread, then \'data\' (figures printed)', async () => {
    await measure(false, true);
    await measure(false, false);
    await measure(true, true);
    await measure(true, false);
  }, { iterations: 1, time: 0, warmupIterations: 0, warmupTime: 0 });
});
