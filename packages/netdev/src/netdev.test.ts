/*
 * Tests for @vswitch/netdev against the real kernel (root: netns, TAP, veth).
 *
 * Every device and namespace is named `nd<4 hex>…` so concurrent runs do not
 * collide, and afterAll removes whatever was created even when a test fails.
 * Checksums are verified with an independent JS implementation, never with the
 * addon's own code. The segmentation unit tests go through `segmentForTest`,
 * which runs exactly the receive-path fix-ups on a hand-built frame.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as nd from './index.js';
import { sum16 } from './test-sum16.js';

const execFileP = promisify(execFile);
const PY = '/usr/bin/python3'; // Debian's, not a pyenv shim on PATH
const ID = randomBytes(2).toString('hex');
const ADDON = fileURLToPath(new URL('../build/Release/netdev.node', import.meta.url));

// ---------- cleanup bookkeeping ----------

const openHandles = new Set<number>();
const netnsMade = new Set<string>();
const linksMade = new Set<string>(); // in the test's own netns

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
function addNetns(name: string): void {
  ip('netns', 'add', name);
  netnsMade.add(name);
  ip('-n', name, 'link', 'set', 'lo', 'up');
}
function delNetns(name: string): void {
  netnsMade.delete(name);
  ip('netns', 'del', name);
}
function track<T extends { handle: number }>(x: T): T {
  openHandles.add(x.handle);
  return x;
}
function closeHandle(h: number): void {
  openHandles.delete(h);
  nd.close(h);
}

afterAll(() => {
  for (const h of openHandles) {
    try { nd.close(h); } catch { /* already gone */ }
  }
  for (const l of linksMade) {
    try { ip('link', 'del', l); } catch { /* already gone */ }
  }
  for (const n of netnsMade) {
    try { ip('netns', 'del', n); } catch { /* already gone */ }
  }
});

// ---------- helpers ----------

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(pred: () => boolean, what: string, ms = 5000): Promise<void> {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

interface Collector { frames: Buffer[]; errors: number[]; batches: number[] }

/** start() a handle; copy every frame out of the ring (the ring is reused). */
function collect(h: number, onFrame?: (f: Buffer) => void): Collector {
  const ring = nd.ring();
  const c: Collector = { frames: [], errors: [], batches: [] };
  nd.start(h, (n) => {
    if (n < 0) { c.errors.push(n); return; }
    c.batches.push(n);
    for (let i = 0; i < n; i++) {
      const f = Buffer.from(ring.arena.subarray(ring.offs[i], ring.offs[i] + ring.lens[i]));
      c.frames.push(f);
      onFrame?.(f);
    }
  });
  return c;
}

function errCode(fn: () => unknown): string | undefined {
  try { fn(); } catch (e) { return (e as { code?: string }).code; }
  return undefined;
}

const mac = (s: string) => Buffer.from(s.replaceAll(':', ''), 'hex');
const ipv4 = (s: string) => Buffer.from(s.split('.').map(Number));
function macOf(ns: string, dev: string): Buffer {
  return mac(JSON.parse(ip('-n', ns, '-j', 'link', 'show', 'dev', dev))[0].address);
}
function py(ns: string, script: string, ...args: string[]) {
  return execFileP('ip', ['netns', 'exec', ns, PY, '-c', script, ...args], { timeout: 20000 });
}

function cksum(b: Uint8Array): number {
  return ~sum16(b) & 0xffff;
}

interface L3 { v6: boolean; l3: number; l4: number; end: number; proto: number }
/** Parse an untagged (or single-tagged) Ethernet IP frame. */
function parseL3(f: Buffer): L3 {
  let l3 = 14;
  let et = f.readUInt16BE(12);
  if (et === 0x8100 || et === 0x88a8) { et = f.readUInt16BE(16); l3 = 18; }
  if (et === 0x0800) {
    const ihl = (f[l3] & 15) * 4;
    return { v6: false, l3, l4: l3 + ihl, end: l3 + f.readUInt16BE(l3 + 2), proto: f[l3 + 9] };
  }
  if (et === 0x86dd) return { v6: true, l3, l4: l3 + 40, end: l3 + 40 + f.readUInt16BE(l3 + 4), proto: f[l3 + 6] };
  throw new Error(`not IP: ethertype ${et.toString(16)}`);
}
/** True if the IPv4 header checksum (if v4) and the TCP/UDP checksum are valid. */
function checksumsOk(f: Buffer): boolean {
  const p = parseL3(f);
  if (!p.v6 && sum16(f.subarray(p.l3, p.l4)) !== 0xffff) return false;
  const l4 = f.subarray(p.l4, p.end);
  const ph = p.v6
    ? Buffer.concat([f.subarray(p.l3 + 8, p.l3 + 40), Buffer.from([0, 0, l4.length >> 8, l4.length & 255, 0, 0, 0, p.proto])])
    : Buffer.concat([f.subarray(p.l3 + 12, p.l3 + 20), Buffer.from([0, p.proto, l4.length >> 8, l4.length & 255])]);
  if (p.proto === 17 && l4.readUInt16BE(6) === 0) return !p.v6; // "no checksum" is IPv4-only
  return sum16(l4, sum16(ph)) === 0xffff;
}

function ipv4Header(src: Buffer, dst: Buffer, proto: number, payloadLen: number, id = 0): Buffer {
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h.writeUInt16BE(20 + payloadLen, 2);
  h.writeUInt16BE(id, 4);
  h.writeUInt16BE(0x4000, 6);
  h[8] = 64;
  h[9] = proto;
  src.copy(h, 12);
  dst.copy(h, 16);
  h.writeUInt16BE(cksum(h), 10);
  return h;
}

/**
 * The "host" at fakeIp behind the port: answers ARP and ICMP echo. ARP replies
 * go out with send(), echo replies with send2() (headers + the request's payload
 * straight from the received frame), so a working ping proves both write paths.
 */
function arpIcmpResponder(h: number, fakeMac: Buffer, fakeIp: Buffer, sent: number[]) {
  return (f: Buffer) => {
    const et = f.readUInt16BE(12);
    if (et === 0x0806 && f.readUInt16BE(20) === 1 && f.subarray(38, 42).equals(fakeIp)) {
      const r = Buffer.alloc(42);
      f.copy(r, 0, 6, 12);
      fakeMac.copy(r, 6);
      r.writeUInt16BE(0x0806, 12);
      r.writeUInt16BE(1, 14);
      r.writeUInt16BE(0x0800, 16);
      r[18] = 6;
      r[19] = 4;
      r.writeUInt16BE(2, 20);
      fakeMac.copy(r, 22);
      fakeIp.copy(r, 28);
      f.copy(r, 32, 22, 32); // target = the requester's MAC and IP
      sent.push(nd.send(h, r, 0, r.length));
    } else if (et === 0x0800 && f[23] === 1 && f.subarray(30, 34).equals(fakeIp)) {
      const ihl = (f[14] & 15) * 4;
      const icmp = 14 + ihl;
      if (f[icmp] !== 8) return;
      const end = 14 + f.readUInt16BE(16);
      const payload = f.subarray(icmp + 8, end);
      const hdr = Buffer.alloc(14 + 20 + 8);
      f.copy(hdr, 0, 6, 12);
      fakeMac.copy(hdr, 6);
      hdr.writeUInt16BE(0x0800, 12);
      ipv4Header(fakeIp, f.subarray(26, 30), 1, 8 + payload.length).copy(hdr, 14);
      f.copy(hdr, 34, icmp, icmp + 8);
      hdr[34] = 0; // echo reply
      hdr.writeUInt16BE(0, 36);
      hdr.writeUInt16BE(~sum16(payload, sum16(hdr.subarray(34, 42))) & 0xffff, 36);
      sent.push(nd.send2(h, hdr, 0, hdr.length, f, icmp + 8, payload.length));
    }
  };
}

function arpRequestFrame(srcMac: Buffer, srcIp: Buffer, targetIp: Buffer): Buffer {
  const r = Buffer.alloc(42);
  r.fill(0xff, 0, 6);
  srcMac.copy(r, 6);
  r.writeUInt16BE(0x0806, 12);
  r.writeUInt16BE(1, 14);
  r.writeUInt16BE(0x0800, 16);
  r[18] = 6;
  r[19] = 4;
  r.writeUInt16BE(1, 20);
  srcMac.copy(r, 22);
  srcIp.copy(r, 28);
  targetIp.copy(r, 38);
  return r;
}

// ---------- API basics and errors ----------

describe('notify (sd_notify\'s datagram)', () => {
  /** A python receiver on an AF_UNIX datagram socket: prints the first datagram and exits. */
  async function receive(path: string, send: () => void): Promise<string> {
    const py = spawn(PY, ['-c', [
      'import socket, sys',
      's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
      "p = sys.argv[1]",
      "s.bind('\\0' + p[1:] if p.startswith('@') else p)",
      "print('ready', flush=True)",
      "sys.stdout.write(s.recv(65536).decode()); sys.stdout.flush()",
    ].join('\n'), path], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    py.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    await new Promise<void>((resolve) => {
      const t = setInterval(() => { if (out.startsWith('ready\n')) { clearInterval(t); resolve(); } }, 10);
    });
    send();
    await new Promise((r) => py.once('exit', r));
    return out.slice('ready\n'.length);
  }

  it('sends one datagram to a path or an abstract name', async () => {
    const dir = execFileSync('mktemp', ['-d'], { encoding: 'utf8' }).trim();
    const text = 'READY=1\nSTATUS=2 bridges, 3 ports';
    expect(await receive(`${dir}/n.sock`, () => nd.notify(`${dir}/n.sock`, text))).toBe(text);
    const name = `@nd${ID}-notify`;
    expect(await receive(name, () => nd.notify(name, 'STOPPING=1'))).toBe('STOPPING=1');
    execFileSync('rm', ['-rf', dir]);
  });

  it('errors: no listener, a relative path, a path too long', () => {
    expect(errCode(() => nd.notify(`/nonexistent/nd${ID}`, 'READY=1'))).toBe('ENOENT');
    expect(errCode(() => nd.notify('relative.sock', 'READY=1'))).toBe('EAFNOSUPPORT');
    expect(errCode(() => nd.notify(`/${'x'.repeat(120)}`, 'READY=1'))).toBe('EINVAL');
    expect(errCode(() => nd.notify(`@nd${ID}-nobody`, 'READY=1'))).toBe('ECONNREFUSED');
  });
});

describe('API', () => {
  it('ring() is one 4 MiB arena with 256-entry offs/lens, the same object every time', () => {
    const r = nd.ring();
    expect(r.arena.length).toBe(nd.RING_BYTES);
    expect(r.offs).toBeInstanceOf(Int32Array);
    expect(r.offs.length).toBe(nd.RING_MAX_FRAMES);
    expect(r.lens.length).toBe(nd.RING_MAX_FRAMES);
    expect(nd.ring()).toBe(r);
  });

  it('errors carry errno codes; misuse throws and never crashes', () => {
    expect(errCode(() => nd.openTap(`nd${ID}-too-long-name`))).toBe('EINVAL');
    expect(errCode(() => nd.openPacket(`nd${ID}none`))).toBe('ENODEV');
    expect(errCode(() => nd.openPacket(`nd${ID}-too-long-name`))).toBe('EINVAL');
    expect(errCode(() => nd.setLinkUp(`nd${ID}none`, true))).toBe('ENODEV');
    expect(nd.ifIndex(`nd${ID}none`)).toBe(0);
    expect(nd.ifIndex('lo')).toBe(1);
    for (const bad of [65535, -1, 1 << 20]) {
      expect(errCode(() => nd.close(bad))).toBe('EBADF');
      expect(errCode(() => nd.stop(bad))).toBe('EBADF');
      expect(errCode(() => nd.send(bad, Buffer.alloc(60), 0, 60))).toBe('EBADF');
    }
    expect(() => nd.close(1.5)).toThrow(RangeError);
    expect(() => nd.close('x' as unknown as number)).toThrow(TypeError);

    const t = track(nd.openTap(`nd${ID}e`));
    const e = (() => { try { nd.openTap(t.name); } catch (x) { return x as Error & { code: string; errno: number }; } })();
    expect(e?.code).toBe('EBUSY');
    expect(e?.errno).toBe(-16);
    expect(e?.message).toMatch(/^TUNSETIFF nd\w+: Device or resource busy$/);
    const buf = Buffer.alloc(64);
    expect(() => nd.send(t.handle, buf, 10, 60)).toThrow(RangeError);
    expect(() => nd.send(t.handle, buf, -1, 10)).toThrow(RangeError);
    expect(() => nd.send2(t.handle, buf, 0, 10, buf, 60, 5)).toThrow(RangeError);
    expect(() => nd.send(t.handle, [1, 2, 3] as unknown as Uint8Array, 0, 1)).toThrow(TypeError);
    expect(() => nd.send(t.handle, new Float64Array(8) as unknown as Uint8Array, 0, 1)).toThrow(TypeError);
    expect(() => nd.start(t.handle, 42 as unknown as () => void)).toThrow(TypeError);
    expect(errCode(() => nd.setPersist(t.handle, 1 as unknown as boolean))).toBe('ERR_INVALID_ARG_TYPE');
    nd.stop(t.handle); // idempotent, also when never started
    nd.stop(t.handle);
    closeHandle(t.handle);
    expect(errCode(() => nd.close(t.handle))).toBe('EBADF');
    expect(nd.ifIndex(t.name)).toBe(0); // not persistent: gone with the fd
  });

  it('send, send2, sendVnet, send2Vnet: each misuse throws its own error, the first in argument order', () => {
    const t = track(nd.openTap(`nd${ID}s`));
    const h = t.handle;
    const buf = Buffer.alloc(64);
    const thrown = (fn: () => unknown): string => {
      try { fn(); } catch (e) { const x = e as Error & { code?: string }; return `${x.constructor.name} ${x.code}: ${x.message}`; }
      return 'no error';
    };
    const call = nd as unknown as Record<string, (...a: unknown[]) => number>;
    const usage: Record<string, string> = {
      send: 'send(handle, buf, off, len)', sendVnet: 'sendVnet(handle, buf, off, len)',
      send2: 'send2(handle, a, aoff, alen, b, boff, blen)', send2Vnet: 'send2Vnet(handle, a, aoff, alen, b, boff, blen)',
    };
    for (const [fn, u] of Object.entries(usage)) {
      const two = fn.startsWith('send2');
      const off = fn.endsWith('Vnet') ? 10 : 0;
      const first = two ? 'a' : 'buf';
      const args = (over: Record<number, unknown>): unknown[] => {
        const a: unknown[] = two ? [h, buf, off, 20, buf, 30, 20] : [h, buf, off, 20];
        for (const [i, v] of Object.entries(over)) a[Number(i)] = v;
        return a;
      };
      const go = (a: unknown[]) => thrown(() => call[fn](...a));
      expect(go(args({}).slice(0, two ? 6 : 3))).toBe(`TypeError ERR_MISSING_ARGS: netdev: ${u}`);
      expect(go(args({ 0: 'x' }))).toBe('TypeError ERR_INVALID_ARG_TYPE: netdev: handle must be a number');
      expect(go(args({ 0: 9999, 1: 'x' }))).toBe('Error EBADF: netdev: handle 9999 is not open');
      expect(go(args({ 1: [1, 2] }))).toBe(`TypeError ERR_INVALID_ARG_TYPE: netdev: ${first} must be a Uint8Array or Buffer`);
      expect(go(args({ 1: new Float64Array(8) }))).toBe(`TypeError ERR_INVALID_ARG_TYPE: netdev: ${first} must be a Uint8Array or Buffer`);
      expect(go(args({ 2: 1.5 }))).toBe('RangeError ERR_OUT_OF_RANGE: netdev: offset must be an integer in [0, 2147483647], got 1.5');
      expect(go(args({ 2: 'x' }))).toBe('TypeError ERR_INVALID_ARG_TYPE: netdev: offset must be a number');
      expect(go(args({ 3: -1 }))).toBe('RangeError ERR_OUT_OF_RANGE: netdev: length must be an integer in [0, 2147483647], got -1');
      expect(go(args({ 2: 50, 3: 20 }))).toBe('RangeError ERR_OUT_OF_RANGE: netdev: range [50, 70) outside a 64-byte array');
      if (off > 0) {
        expect(go(args({ 2: 9, 4: 'x' }))).toBe('RangeError ERR_OUT_OF_RANGE: netdev: the virtio_net_hdr must fit before the frame (offset >= 10)');
      }
      if (two) {
        expect(go(args({ 4: 'x', 5: -1 }))).toBe('TypeError ERR_INVALID_ARG_TYPE: netdev: b must be a Uint8Array or Buffer');
        expect(go(args({ 5: 60, 6: 5 }))).toBe('RangeError ERR_OUT_OF_RANGE: netdev: range [60, 65) outside a 64-byte array');
        expect(go(args({ 6: 1e10 }))).toBe('RangeError ERR_OUT_OF_RANGE: netdev: length must be an integer in [0, 2147483647], got 1e+10');
      }
      expect(go(args({}))).toBe('no error');
    }
    // sendRun: every range is checked before anything is written.
    const o = Int32Array.of(0, 20), l = Int32Array.of(20, 20), res = new Int32Array(3);
    const run = (...over: [number, unknown][]) => {
      const a: unknown[] = [h, buf, o, l, 0, 2, 0, 14, 0, res];
      for (const [i, v] of over) a[i] = v;
      return thrown(() => call.sendRun(...a));
    };
    const tx0 = nd.stats().txFrames;
    expect(run([9, undefined]).startsWith('TypeError ERR_INVALID_ARG_TYPE: netdev: res must be an Int32Array')).toBe(true);
    expect(thrown(() => call.sendRun(h, buf, o, l, 0, 2, 0, 14, 0))).toBe('TypeError ERR_MISSING_ARGS: netdev: sendRun(handle, buf, offs, lens, from, to, ref, hlen, strip, res)');
    expect(run([2, [0, 20]])).toBe('TypeError ERR_INVALID_ARG_TYPE: netdev: offs must be an Int32Array');
    expect(run([3, new Uint32Array(2)])).toBe('TypeError ERR_INVALID_ARG_TYPE: netdev: lens must be an Int32Array');
    expect(run([7, 13])).toBe('RangeError ERR_OUT_OF_RANGE: netdev: hlen must be an integer in [14, 64], got 13');
    expect(run([8, 4]).startsWith('RangeError ERR_OUT_OF_RANGE: netdev: sendRun: strip 0, or 4 with hlen >= 16')).toBe(true);
    expect(run([8, 2]).startsWith('RangeError ERR_OUT_OF_RANGE: netdev: sendRun: strip 0')).toBe(true);
    expect(run([4, 2], [5, 1]).startsWith('RangeError ERR_OUT_OF_RANGE: netdev: sendRun: strip 0')).toBe(true);
    expect(run([5, 3]).startsWith('RangeError ERR_OUT_OF_RANGE: netdev: sendRun: strip 0')).toBe(true);
    expect(run([6, 60]).startsWith('RangeError ERR_OUT_OF_RANGE: netdev: sendRun: strip 0')).toBe(true);
    expect(run([3, Int32Array.of(20, 45)])).toBe('RangeError ERR_OUT_OF_RANGE: netdev: sendRun: frame 1 [20, +45) outside a 64-byte array');
    expect(run([2, Int32Array.of(0, -1)])).toBe('RangeError ERR_OUT_OF_RANGE: netdev: sendRun: frame 1 [-1, +20) outside a 64-byte array');
    expect(nd.stats().txFrames).toBe(tx0); // frame 0 was fine, and not written either
    buf[20] = 1; // the second frame's head differs from the first's
    expect(run()).toBe('no error');
    expect(res[0]).toBe(20);
    buf[20] = 0;
    // A header that asks for work, to a device without headers: -EINVAL, counted, but only once the arguments pass.
    const before = nd.stats();
    buf[0] = nd.VNET_F_NEEDS_CSUM;
    expect(thrown(() => nd.send2Vnet(h, buf, 10, 20, buf, 60, 5))).toBe('RangeError ERR_OUT_OF_RANGE: netdev: range [60, 65) outside a 64-byte array');
    expect(nd.sendVnet(h, buf, 10, 20)).toBe(-22);
    expect(nd.send2Vnet(h, buf, 10, 20, buf, 30, 20)).toBe(-22);
    expect(nd.stats().txErrors - before.txErrors).toBe(2);
    closeHandle(h);
  });

  it('a name template lets the kernel choose, and the chosen name is returned', () => {
    const t = track(nd.openTap(`nd${ID}q%d`));
    expect(t.name).toMatch(new RegExp(`^nd${ID}q\\d+$`));
    expect(nd.ifIndex(t.name)).toBeGreaterThan(0);
    closeHandle(t.handle);
  });

  it('handles are small integers and are not immediately reused', () => {
    const a = track(nd.openTap(`nd${ID}h%d`));
    closeHandle(a.handle);
    const b = track(nd.openTap(`nd${ID}h%d`));
    expect(b.handle).toBeGreaterThanOrEqual(0);
    expect(b.handle).not.toBe(a.handle);
    closeHandle(b.handle);
  });
});

// ---------- TAP ----------

describe('TAP', () => {
  it('moved into a netns: kernel frames arrive in the ring, writes reach its stack (ping works), deletion reports -EBADFD', async () => {
    const ns = `nd${ID}a`;
    addNetns(ns);
    const tap = track(nd.openTap(`nd${ID}t`));
    expect(tap.name).toBe(`nd${ID}t`);
    ip('link', 'set', tap.name, 'netns', ns);

    const fakeMac = mac('02:00:5e:00:00:02');
    const fakeIp = ipv4('10.201.0.2');
    const probe = arpRequestFrame(fakeMac, fakeIp, ipv4('10.201.0.1'));
    // It arrives in the namespace DOWN: writes fail with EIO until it is up.
    expect(nd.send(tap.handle, probe, 0, probe.length)).toBe(-nd.Errno.EIO);

    ip('-n', ns, 'addr', 'add', '10.201.0.1/24', 'dev', tap.name);
    ip('-n', ns, 'link', 'set', tap.name, 'up');
    const nsMac = macOf(ns, tap.name);
    const sent: number[] = [];
    const c = collect(tap.handle, arpIcmpResponder(tap.handle, fakeMac, fakeIp, sent));

    await execFileP('ip', ['netns', 'exec', ns, 'busybox', 'ping', '-c', '2', '-W', '3', '10.201.0.2'], { timeout: 15000 });

    const arp = c.frames.find((f) => f.readUInt16BE(12) === 0x0806 && f.readUInt16BE(20) === 1);
    expect(arp, 'ARP request from the namespace').toBeDefined();
    expect(arp!.subarray(6, 12)).toEqual(nsMac);
    const echo = c.frames.filter((f) => f.readUInt16BE(12) === 0x0800 && f[23] === 1);
    expect(echo.length).toBeGreaterThanOrEqual(2);
    expect(echo.every((f) => f.subarray(6, 12).equals(nsMac) && f.subarray(0, 6).equals(fakeMac))).toBe(true);
    expect(sent.length).toBeGreaterThanOrEqual(3);
    expect(sent.every((n) => n > 0)).toBe(true);
    expect(ip('-n', ns, 'neigh', 'show', '10.201.0.2')).toContain('02:00:5e:00:00:02');
    expect(c.batches.every((n) => n > 0 && n <= nd.RING_MAX_FRAMES)).toBe(true);
    expect(c.errors).toEqual([]);

    ip('-n', ns, 'link', 'del', tap.name);
    await waitFor(() => c.errors.length > 0, 'the deletion to be reported');
    expect(c.errors).toEqual([-nd.Errno.EBADFD]);
    expect(nd.send(tap.handle, probe, 0, probe.length)).toBe(-nd.Errno.EBADFD);
    await sleep(50);
    expect(c.errors).toEqual([-nd.Errno.EBADFD]); // reported once, polling stopped
    closeHandle(tap.handle);
    delNetns(ns);
  }, 30000);

  it('deleting the namespace that holds the TAP reports -EBADFD', async () => {
    const ns = `nd${ID}c`;
    addNetns(ns);
    const tap = track(nd.openTap(`nd${ID}u`));
    ip('link', 'set', tap.name, 'netns', ns);
    const c = collect(tap.handle);
    delNetns(ns);
    await waitFor(() => c.errors.length > 0, 'the namespace deletion to be reported', 15000);
    expect(c.errors).toEqual([-nd.Errno.EBADFD]);
    // start() again on the dead TAP reports again instead of hanging.
    const again: number[] = [];
    nd.start(tap.handle, (n) => again.push(n));
    await waitFor(() => again.length > 0, 'the restart to report');
    expect(again).toEqual([-nd.Errno.EBADFD]);
    closeHandle(tap.handle);
  }, 30000);

  it('persistent TAP survives close, reopens by name, and goes away after setPersist(false)', () => {
    const name = `nd${ID}p`;
    linksMade.add(name);
    const a = track(nd.openTap(name, { persist: true, owner: 1234, group: 2345 }));
    const sys = (attr: string) => readFileSync(`/sys/class/net/${name}/${attr}`, 'utf8').trim();
    expect(sys('owner')).toBe('1234');
    expect(sys('group')).toBe('2345');
    expect(Number(sys('tun_flags')) & 0x5802).toBe(0x1802); // TAP | NO_PI | PERSIST, no VNET_HDR
    closeHandle(a.handle);
    expect(ip('link', 'show', name)).toContain(name);
    const b = track(nd.openTap(name));
    expect(b.name).toBe(name);
    expect(ip('link', 'show', name)).toContain('UP');
    nd.setPersist(b.handle, false);
    closeHandle(b.handle);
    expect(nd.ifIndex(name)).toBe(0);
    linksMade.delete(name);
  });

  it('vnetHdr sets IFF_VNET_HDR', () => {
    const t = track(nd.openTap(`nd${ID}n`, { vnetHdr: true }));
    expect(Number(readFileSync(`/sys/class/net/${t.name}/tun_flags`, 'utf8').trim()) & 0x4000).toBe(0x4000);
    closeHandle(t.handle);
  });

  it('a worker thread has its own handle table, and its devices close when it exits', async () => {
    const script = `
      const { Worker } = require('node:worker_threads');
      const n = require(process.argv[1]);
      const w = new Worker(\`
        const n = require(\${JSON.stringify(process.argv[1])});
        const t = n.openTap(\${JSON.stringify(process.argv[2])}, 0, -1, -1);
        n.start(t[0], () => {});
        require('node:worker_threads').parentPort.postMessage(t);
        setInterval(() => {}, 1000);
      \`, { eval: true });
      w.on('message', async ([h, , name]) => {
        const seen = n.ifIndex(name) > 0;
        let code; try { n.close(h); } catch (e) { code = e.code; }
        await w.terminate();
        setTimeout(() => { console.log(JSON.stringify({ seen, code, after: n.ifIndex(name) })); process.exit(0); }, 100);
      });
    `;
    const name = `nd${ID}w`;
    linksMade.add(name);
    const { stdout } = await execFileP(process.execPath, ['-e', script, ADDON, name], { timeout: 10000 });
    expect(JSON.parse(stdout.trim())).toEqual({ seen: true, code: 'EBADF', after: 0 });
    linksMade.delete(name);
  }, 20000);

  it('a reply to a frame written in a batch is read in the same loop turn and JS entry (followUp); ticks and microtasks run before immediates', async () => {
    // Two TAPs in two namespaces, as a bridge's ports: A's ARP request is written to
    // B; B's stack answers while the write runs, and the follow-up read of B delivers
    // the answer before the loop moves on (before a setImmediate queued in A's batch).
    const na = `nd${ID}fa`, nb = `nd${ID}fb`;
    addNetns(na);
    addNetns(nb);
    const a = track(nd.openTap(`nd${ID}fa`));
    const b = track(nd.openTap(`nd${ID}fb`));
    ip('link', 'set', a.name, 'netns', na);
    ip('link', 'set', b.name, 'netns', nb);
    ip('-n', na, 'addr', 'add', '10.203.0.1/24', 'dev', a.name);
    ip('-n', na, 'link', 'set', a.name, 'up');
    ip('-n', nb, 'addr', 'add', '10.203.0.2/24', 'dev', b.name);
    ip('-n', nb, 'link', 'set', b.name, 'up');
    const ring = nd.ring();
    const order: string[] = [];
    const times: number[] = [];
    let forwarded = false;
    let followUps0 = -1, followUps1 = -1;
    nd.start(a.handle, (n) => {
      times.push(ring.time[0], nd.monotonicMs(), performance.now() - nd.PERF_NOW_OFFSET);
      for (let i = 0; i < n; i++) {
        const off = ring.offs[i];
        if (forwarded || ring.arena.readUInt16BE(off + 12) !== 0x0806 || ring.arena.readUInt16BE(off + 20) !== 1) continue;
        forwarded = true;
        followUps0 = nd.stats().rxFollowUps;
        expect(nd.send(b.handle, ring.arena, off, ring.lens[i])).toBe(ring.lens[i]);
        setImmediate(() => order.push('immediate'));
        process.nextTick(() => order.push('tick'));
        queueMicrotask(() => order.push('microtask'));
      }
    });
    nd.start(b.handle, (n) => {
      for (let i = 0; i < n; i++) {
        const off = ring.offs[i];
        if (ring.arena.readUInt16BE(off + 12) === 0x0806 && ring.arena.readUInt16BE(off + 20) === 2) {
          order.push('reply');
          // Taken by A's callback (followUp), in A's JS entry: no C -> JS entry of its own.
          followUps1 = nd.stats().rxFollowUps;
        }
      }
    });
    // The ping fails (nobody forwards B's answer back); its ARP request is what we need.
    await execFileP('ip', ['netns', 'exec', na, 'busybox', 'ping', '-c', '1', '-W', '1', '10.203.0.2']).catch(() => {});
    await waitFor(() => order.includes('immediate'), 'the batch and its immediate');
    expect(order).toEqual(['reply', 'tick', 'microtask', 'immediate']);
    expect(followUps1).toBe(followUps0 + 1);
    // ring().time[0]: the batch's read time on monotonicMs()'s clock, set before the call;
    // with PERF_NOW_OFFSET it is performance.now().
    expect(times.length).toBeGreaterThan(0);
    for (let i = 0; i < times.length; i += 3) {
      expect(times[i]).toBeLessThanOrEqual(times[i + 1]);
      expect(times[i + 1] - times[i]).toBeLessThan(100);
      expect(Math.abs(times[i + 2] - times[i + 1])).toBeLessThan(5);
    }
    closeHandle(a.handle);
    closeHandle(b.handle);
    delNetns(na);
    delNetns(nb);
  }, 20000);

  it('a callback that throws surfaces as uncaughtException and later batches still arrive', async () => {
    // In a child process so the deliberate uncaught exceptions do not hit vitest.
    const x0 = `nd${ID}x0`, x1 = `nd${ID}x1`;
    ip('link', 'add', x0, 'type', 'veth', 'peer', 'name', x1);
    linksMade.add(x0);
    const script = `
      const n = require(process.argv[1]);
      const [a] = n.openPacket(process.argv[2]);
      const [b] = n.openPacket(process.argv[3]);
      const f = Buffer.alloc(60); f.fill(0xff, 0, 6); f[6] = 2; f.writeUInt16BE(0x88b5, 12);
      let thrown = 0, calls = 0;
      process.on('uncaughtException', (e) => {
        thrown++;
        if (thrown < 3) { n.send(b, f, 0, 60); return; }
        console.log(JSON.stringify({ thrown, calls, msg: e.message }));
        n.close(a); n.close(b);
        process.exit(0);
      });
      n.start(a, () => { calls++; throw new Error('boom ' + calls); });
      n.send(b, f, 0, 60);
      setTimeout(() => { console.log('timeout'); process.exit(1); }, 5000);
    `;
    const { stdout } = await execFileP(process.execPath, ['-e', script, ADDON, x0, x1], { timeout: 10000 });
    const r = JSON.parse(stdout.trim());
    expect(r.thrown).toBe(3);
    expect(r.calls).toBe(3);
    expect(r.msg).toBe('boom 3');
    ip('link', 'del', x0);
    linksMade.delete(x0);
  }, 20000);
});

// ---------- AF_PACKET ----------

describe('AF_PACKET on a veth pair (peer in a netns)', () => {
  const ns = `nd${ID}b`;
  const v0 = `nd${ID}v0`;
  const v1 = `nd${ID}v1`;
  const fakeMac = mac('02:00:5e:00:01:02');
  const fakeIp = ipv4('10.202.0.2');
  let pk: nd.PacketInfo;
  let c: Collector;
  let nsMac: Buffer;
  let onFrame: ((f: Buffer) => void) | undefined;

  beforeAll(() => {
    addNetns(ns);
    ip('link', 'add', v0, 'type', 'veth', 'peer', 'name', v1);
    linksMade.add(v0);
    ip('link', 'set', v1, 'netns', ns);
    ip('-n', ns, 'addr', 'add', '10.202.0.1/24', 'dev', v1);
    ip('-n', ns, 'link', 'set', v1, 'up');
    nsMac = macOf(ns, v1);
    pk = track(nd.openPacket(v0));
    expect(pk.ifindex).toBe(nd.ifIndex(v0));
    expect(JSON.parse(ip('-d', '-j', 'link', 'show', 'dev', v0))[0].promiscuity).toBeGreaterThanOrEqual(1);
    c = collect(pk.handle, (f) => onFrame?.(f));
  });

  it('frames from the netns arrive; injected frames reach it (ARP via send, ICMP via send2); own injections are not seen', async () => {
    const sent: number[] = [];
    onFrame = arpIcmpResponder(pk.handle, fakeMac, fakeIp, sent);
    try {
      await execFileP('ip', ['netns', 'exec', ns, 'busybox', 'ping', '-c', '2', '-W', '3', '10.202.0.2'], { timeout: 15000 });
    } finally {
      onFrame = undefined;
    }
    const arp = c.frames.find((f) => f.readUInt16BE(12) === 0x0806 && f.subarray(38, 42).equals(fakeIp));
    expect(arp?.subarray(6, 12)).toEqual(nsMac);
    expect(sent.length).toBeGreaterThanOrEqual(3);
    expect(sent.every((n) => n > 0)).toBe(true);
    expect(c.frames.some((f) => f.subarray(6, 12).equals(fakeMac))).toBe(false); // PACKET_IGNORE_OUTGOING
    expect(c.errors).toEqual([]);
  }, 30000);

  /** An AF_PACKET receiver in the netns on v1 for `count` frames of ethertype 0x88b5, each printed as hex after 'ready'. */
  function receiver(count: number): { out: () => string; kill: () => void } {
    const p = spawn('ip', ['netns', 'exec', ns, PY, '-c', `
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
s.bind((sys.argv[1], 0))
s.settimeout(5)
print('ready', flush=True)
for _ in range(${count}):
    print(s.recv(65535).hex(), flush=True)
`, v1]);
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    return { out: () => out, kill: () => { p.kill(); } };
  }

  it('send and send2 write exactly the given bytes (byteOffset honoured) and return frame lengths', async () => {
    const recv = receiver(2);
    try {
      await waitFor(() => recv.out().includes('ready'), 'the receiver');
      const head = Buffer.alloc(14);
      head.fill(0xff, 0, 6);
      fakeMac.copy(head, 6);
      head.writeUInt16BE(0x88b5, 12);
      // Views with non-zero byteOffsets into larger buffers.
      const backA = new Uint8Array(100);
      backA.set(head, 30);
      const a = backA.subarray(20);
      const backB = new ArrayBuffer(200);
      const b = new Uint8Array(backB, 7, 150);
      for (let i = 0; i < b.length; i++) b[i] = i;
      expect(nd.send2(pk.handle, a, 10, 14, b, 3, 50)).toBe(64);
      const whole = Buffer.concat([head, Buffer.from(b.subarray(3, 53))]);
      const shifted = Buffer.alloc(whole.length + 9);
      whole.copy(shifted, 9);
      expect(nd.send(pk.handle, shifted.subarray(4), 5, whole.length)).toBe(whole.length);
      await waitFor(() => recv.out().trim().split('\n').length >= 3, 'two frames in the netns');
      const lines = recv.out().trim().split('\n').slice(1);
      expect(lines[0]).toBe(whole.toString('hex'));
      expect(lines[1]).toBe(whole.toString('hex'));
    } finally {
      recv.kill();
    }
    const st = JSON.parse(ip('-n', ns, '-s', '-j', 'link', 'show', 'dev', v1))[0].stats64.rx;
    expect(st.packets).toBeGreaterThanOrEqual(2);
  }, 20000);

  it('sendRun writes a run as send (strip 0) or send2 without the tag (strip 4) would, one frame at a time, in order; stops at another head, a short frame, a failed write', async () => {
    const recv = receiver(5);
    try {
      await waitFor(() => recv.out().includes('ready'), 'the receiver');
      const head = (src: number, vid: number | undefined): Buffer => {
        const h = Buffer.alloc(vid === undefined ? 14 : 18);
        h.fill(0xff, 0, 6);
        fakeMac.copy(h, 6);
        h[11] = src;
        if (vid !== undefined) { h.writeUInt16BE(0x8100, 12); h.writeUInt16BE(vid, 14); }
        h.writeUInt16BE(0x88b5, h.length - 2);
        return h;
      };
      const frame = (h: Buffer, len: number, fill: number): Buffer => {
        const f = Buffer.alloc(len, fill);
        h.copy(f, 0);
        return f;
      };
      // 0-3: one tagged head (2 is over the veth's MTU: EMSGSIZE); 4-5 another, untagged.
      const tagged = head(0x11, 5), plain = head(0x12, undefined);
      const frames = [frame(tagged, 60, 1), frame(tagged, 99, 2), frame(tagged, 1600, 3), frame(tagged, 61, 4),
        frame(plain, 70, 5), frame(plain, 64, 6)];
      const offs: number[] = [], lens: number[] = [];
      let size = 7;
      for (const f of frames) { offs.push(size); lens.push(f.length); size += f.length + 3; }
      const buf = Buffer.alloc(size);
      frames.forEach((f, i) => f.copy(buf, offs[i]));
      const o = Int32Array.from(offs), l = Int32Array.from(lens);
      const res = new Int32Array(3);
      const before = nd.stats();
      // Frames shorter than the head are not taken.
      expect(nd.sendRun(pk.handle, buf, o, l, 0, 6, offs[0], 64, 4, res)).toBe(0);
      expect([...res]).toEqual([0, 0, 0]);
      // 0, 1 written without the tag; 2 fails and ends the call.
      expect(nd.sendRun(pk.handle, buf, o, l, 0, 6, offs[0], 18, 4, res)).toBe(3);
      expect([...res]).toEqual([60 + 99 + 1600, 56 + 95, -90]);
      // 3, then 4 has another head.
      expect(nd.sendRun(pk.handle, buf, o, l, 3, 6, offs[0], 18, 4, res)).toBe(1);
      expect([...res]).toEqual([61, 57, 0]);
      // 4 and 5 as they are, up to `to`.
      expect(nd.sendRun(pk.handle, buf, o, l, 4, 6, offs[4], 14, 0, res)).toBe(2);
      expect([...res]).toEqual([70 + 64, 70 + 64, 0]);
      expect(nd.sendRun(pk.handle, buf, o, l, 6, 6, offs[4], 14, 0, res)).toBe(0);
      const after = nd.stats();
      expect(after.txFrames - before.txFrames).toBe(5);
      expect(after.txErrors - before.txErrors).toBe(1);
      await waitFor(() => recv.out().trim().split('\n').length >= 6, 'five frames in the netns');
      const strip = (f: Buffer) => Buffer.concat([f.subarray(0, 12), f.subarray(16)]).toString('hex');
      expect(recv.out().trim().split('\n').slice(1)).toEqual([strip(frames[0]), strip(frames[1]), strip(frames[3]),
        frames[4].toString('hex'), frames[5].toString('hex')]);
    } finally {
      recv.kill();
    }
  }, 20000);

  it('802.1Q / 802.1ad tags the kernel strips into metadata are restored byte-exactly', async () => {
    const src = '02:00:5e:00:01:77';
    const s = src.replaceAll(':', '');
    const frames = [
      `ffffffffffff${s}8100a02a88b5${'11'.repeat(60)}`, // 802.1Q PCP 5 VID 42
      `ffffffffffff${s}8100000088b5${'22'.repeat(60)}`, // priority tag: VID 0, still a tag
      `ffffffffffff${s}88a800648100200788b5${'33'.repeat(60)}`, // 802.1ad VID 100 over 802.1Q PCP 1 VID 7
    ];
    const before = nd.stats().vlanRestored;
    const n0 = c.frames.length;
    await py(ns, `
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
for h in sys.argv[2:]:
    s.send(bytes.fromhex(h))
`, v1, ...frames);
    const mine = () => c.frames.slice(n0).filter((f) => f.subarray(6, 12).equals(mac(src)));
    await waitFor(() => mine().length >= 3, 'the tagged frames');
    expect(mine().map((f) => f.toString('hex'))).toEqual(frames);
    expect(nd.stats().vlanRestored - before).toBeGreaterThanOrEqual(3);
  }, 20000);

  it('checksum-partial UDP from the netns is completed', async () => {
    ip('-n', ns, 'neigh', 'replace', '10.202.0.2', 'lladdr', '02:00:5e:00:01:02', 'dev', v1);
    const before = nd.stats().csumFilled;
    const n0 = c.frames.length;
    await py(ns, `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(3):
    s.sendto(b'checksum me %d' % i, ('10.202.0.2', 9999))
`);
    const udp = () => c.frames.slice(n0).filter((f) => f.readUInt16BE(12) === 0x0800 && f[23] === 17 && f.readUInt16BE(36) === 9999);
    await waitFor(() => udp().length >= 3, 'the UDP datagrams');
    for (const f of udp()) {
      expect(f.readUInt16BE(40)).not.toBe(0);
      expect(checksumsOk(f)).toBe(true);
    }
    expect(nd.stats().csumFilled - before).toBeGreaterThanOrEqual(3);
  }, 20000);

  it('UDP GSO (UDP_SEGMENT) super-frames are segmented with valid lengths and checksums', async () => {
    ip('-n', ns, 'neigh', 'replace', '10.202.0.2', 'lladdr', '02:00:5e:00:01:02', 'dev', v1);
    const before = nd.stats();
    const n0 = c.frames.length;
    const payload = Buffer.alloc(10240);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 7 + (i >> 8)) & 255;
    await py(ns, `
import socket
data = bytes(((i * 7 + (i >> 8)) & 255) for i in range(10240))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_UDP, 103, 1000)  # UDP_SEGMENT
s.sendto(data, ('10.202.0.2', 9998))
`);
    const segs = () => c.frames.slice(n0).filter((f) => f.readUInt16BE(12) === 0x0800 && f[23] === 17 && f.readUInt16BE(36) === 9998);
    await waitFor(() => segs().length >= 11, 'the segments');
    const s = segs();
    expect(s.length).toBe(11);
    expect(s.map((f) => f.length)).toEqual([...Array(10).fill(14 + 20 + 8 + 1000), 14 + 20 + 8 + 240]);
    for (const f of s) {
      expect(f.readUInt16BE(16)).toBe(f.length - 14);
      expect(f.readUInt16BE(38)).toBe(f.length - 34);
      expect(checksumsOk(f)).toBe(true);
    }
    expect(Buffer.concat(s.map((f) => f.subarray(42)))).toEqual(payload);
    const after = nd.stats();
    expect(after.gsoSegmented - before.gsoSegmented).toBe(1);
    expect(after.gsoSegments - before.gsoSegments).toBe(11);
  }, 20000);

  it('a TCP stream with TSO in the netns arrives as MSS-sized frames with valid checksums, intact', async () => {
    ip('-n', ns, 'neigh', 'replace', '10.202.0.2', 'lladdr', '02:00:5e:00:01:02', 'dev', v1);
    const ethtool = execFileSync('ip', ['netns', 'exec', ns, 'ethtool', '-k', v1], { encoding: 'utf8' });
    expect(ethtool).toMatch(/tcp-segmentation-offload: on/);
    const N = 300000;
    const data = Buffer.alloc(N);
    for (let i = 0; i < N; i++) data[i] = (i * 13 + (i >> 9)) & 255;

    // A minimal TCP receiver at 10.202.0.2:5001 living on the port.
    const ISS = 0x10000000;
    let rcvNxt = 0;
    let finSent = false;
    const chunks: Buffer[] = [];
    const seen: Buffer[] = [];
    const reply = (f: Buffer, flags: number, seq: number, ack: number, mss = false) => {
      const t = Buffer.alloc(mss ? 24 : 20);
      f.copy(t, 0, 36, 38); // sport 5001
      f.copy(t, 2, 34, 36); // dport = client port
      t.writeUInt32BE(seq >>> 0, 4);
      t.writeUInt32BE(ack >>> 0, 8);
      t[12] = (t.length / 4) << 4;
      t[13] = flags;
      t.writeUInt16BE(65535, 14);
      if (mss) { t[20] = 2; t[21] = 4; t.writeUInt16BE(1460, 22); }
      const ih = ipv4Header(fakeIp, f.subarray(26, 30), 6, t.length);
      const ph = Buffer.concat([ih.subarray(12, 20), Buffer.from([0, 6, 0, t.length])]);
      t.writeUInt16BE(~sum16(t, sum16(ph)) & 0xffff, 16);
      const eth = Buffer.concat([f.subarray(6, 12), fakeMac, Buffer.from([8, 0])]);
      expect(nd.send2(pk.handle, eth, 0, 14, Buffer.concat([ih, t]), 0, 20 + t.length)).toBe(34 + t.length);
    };
    onFrame = (f) => {
      if (f.readUInt16BE(12) !== 0x0800 || f[23] !== 6 || !f.subarray(30, 34).equals(fakeIp)) return;
      seen.push(f);
      const p = parseL3(f);
      if (f.readUInt16BE(p.l4 + 2) !== 5001) return;
      const seq = f.readUInt32BE(p.l4 + 4);
      const fl = f[p.l4 + 13];
      const body = f.subarray(p.l4 + (f[p.l4 + 12] >> 4) * 4, p.end);
      if (fl & 0x02) { // SYN
        rcvNxt = (seq + 1) >>> 0;
        reply(f, 0x12, ISS, rcvNxt, true);
        return;
      }
      if (body.length && seq === rcvNxt) {
        chunks.push(Buffer.from(body));
        rcvNxt = (rcvNxt + body.length) >>> 0;
      }
      if (fl & 0x01 && ((seq + body.length) >>> 0) === rcvNxt && !finSent) {
        rcvNxt = (rcvNxt + 1) >>> 0;
        finSent = true;
        reply(f, 0x11, ISS + 1, rcvNxt); // FIN|ACK
        return;
      }
      if (body.length || fl & 0x01) reply(f, 0x10, ISS + 1 + (finSent ? 1 : 0), rcvNxt);
    };
    const before = nd.stats();
    try {
      await py(ns, `
import socket
data = bytes(((i * 13 + (i >> 9)) & 255) for i in range(${N}))
s = socket.create_connection(('10.202.0.2', 5001), timeout=10)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
while s.recv(4096):
    pass
s.close()
`);
    } finally {
      onFrame = undefined;
    }
    const after = nd.stats();
    expect(Buffer.concat(chunks).equals(data)).toBe(true);
    expect(after.gsoSegmented - before.gsoSegmented, 'TSO super-frames seen').toBeGreaterThan(0);
    expect(after.gsoSegments - before.gsoSegments).toBeGreaterThan(after.gsoSegmented - before.gsoSegmented);
    const fromNs = seen.filter((f) => f.subarray(6, 12).equals(nsMac));
    expect(fromNs.length).toBeGreaterThanOrEqual(Math.ceil(N / 1460));
    for (const f of fromNs) {
      expect(f.length).toBeLessThanOrEqual(1514);
      expect(checksumsOk(f)).toBe(true);
    }
  }, 30000);

  it('link down/up is transient; deleting the interface reports -ENETDOWN, start then -ENODEV', async () => {
    const before = nd.stats().linkDown;
    ip('link', 'set', v0, 'down');
    ip('link', 'set', v0, 'up');
    await waitFor(() => nd.stats().linkDown > before, 'the link-down event to be absorbed');
    expect(c.errors).toEqual([]);
    const src = '02:00:5e:00:01:88';
    const n0 = c.frames.length;
    await waitFor(() => ip('-n', ns, 'link', 'show', v1).includes('LOWER_UP'), 'the carrier');
    await py(ns, `
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
s.send(bytes.fromhex('ffffffffffff' + sys.argv[2] + '88b5' + '44' * 50))
`, v1, src.replaceAll(':', ''));
    await waitFor(() => c.frames.slice(n0).some((f) => f.subarray(6, 12).equals(mac(src))), 'a frame after the link came back');

    ip('link', 'del', v0);
    linksMade.delete(v0);
    await waitFor(() => c.errors.length > 0, 'the deletion to be reported');
    expect(c.errors).toEqual([-nd.Errno.ENETDOWN]);
    const f = Buffer.alloc(60);
    expect(nd.send(pk.handle, f, 0, 60)).toBeLessThan(0);
    const again: number[] = [];
    nd.start(pk.handle, (n) => again.push(n));
    await waitFor(() => again.length > 0, 'start on a dead socket to report');
    expect(again).toEqual([-nd.Errno.ENODEV]);
    closeHandle(pk.handle);
    delNetns(ns);
  }, 20000);
});

// ---------- segmentation and checksum units (no devices) ----------

const SRC4 = ipv4('192.0.2.1'), DST4 = ipv4('192.0.2.2');
const SRC6 = Buffer.from('20010db8000000000000000000000001', 'hex');
const DST6 = Buffer.from('20010db8000000000000000000000002', 'hex');
const ETH = (type: number) => Buffer.concat([mac('02:00:00:00:00:02'), mac('02:00:00:00:00:01'), Buffer.from([type >> 8, type & 255])]);

function vnet(o: { flags?: number; type: number; hdrLen?: number; gso?: number; cstart?: number; coff?: number }): Buffer {
  const b = Buffer.alloc(10);
  b[0] = o.flags ?? 1;
  b[1] = o.type;
  b.writeUInt16LE(o.hdrLen ?? 0, 2);
  b.writeUInt16LE(o.gso ?? 0, 4);
  b.writeUInt16LE(o.cstart ?? 0, 6);
  b.writeUInt16LE(o.coff ?? 0, 8);
  return b;
}
function pattern(n: number, seed = 1): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed + (i >> 8)) & 255;
  return b;
}
/** Pseudo-header sum folded, not complemented: what CHECKSUM_PARTIAL leaves in the field. */
function partial(v6: boolean, src: Buffer, dst: Buffer, proto: number, len: number): number {
  const ph = v6
    ? Buffer.concat([src, dst, Buffer.from([0, 0, len >> 8, len & 255, 0, 0, 0, proto])])
    : Buffer.concat([src, dst, Buffer.from([0, proto, len >> 8, len & 255])]);
  return sum16(ph);
}

interface Super { frame: Buffer; payload: Buffer; hdrLen: number; l3: number; l4: number }
function tcpSuper(v6: boolean, payload: Buffer, flags: number, ipOpts = Buffer.alloc(0), tcpOpts = Buffer.alloc(0)): Super {
  const th = Buffer.alloc(20 + tcpOpts.length);
  th.writeUInt16BE(40000, 0);
  th.writeUInt16BE(80, 2);
  th.writeUInt32BE(0xfffff000, 4); // wraps during the stream
  th.writeUInt32BE(0x01020304, 8);
  th[12] = (th.length / 4) << 4;
  th[13] = flags;
  th.writeUInt16BE(5000, 14);
  tcpOpts.copy(th, 20);
  const l4len = th.length + payload.length;
  let ih: Buffer;
  if (!v6) {
    ih = Buffer.alloc(20 + ipOpts.length);
    ih[0] = 0x40 | (ih.length / 4);
    ih.writeUInt16BE(ih.length + l4len, 2);
    ih.writeUInt16BE(0xfffe, 4); // wraps too
    ih.writeUInt16BE(0x4000, 6);
    ih[8] = 64;
    ih[9] = 6;
    SRC4.copy(ih, 12);
    DST4.copy(ih, 16);
    ipOpts.copy(ih, 20);
    ih.writeUInt16BE(cksum(ih), 10); // valid for the super-frame, wrong for every segment
  } else {
    ih = Buffer.alloc(40);
    ih[0] = 0x60;
    ih.writeUInt16BE(l4len, 4);
    ih[6] = 6;
    ih[7] = 64;
    SRC6.copy(ih, 8);
    DST6.copy(ih, 24);
  }
  th.writeUInt16BE(partial(v6, v6 ? SRC6 : SRC4, v6 ? DST6 : DST4, 6, l4len), 16);
  const frame = Buffer.concat([ETH(v6 ? 0x86dd : 0x0800), ih, th, payload]);
  return { frame, payload, hdrLen: 14 + ih.length + th.length, l3: 14, l4: 14 + ih.length };
}
function udpSuper(v6: boolean, payload: Buffer): Super {
  const uh = Buffer.alloc(8);
  uh.writeUInt16BE(5353, 0);
  uh.writeUInt16BE(9, 2);
  uh.writeUInt16BE(8 + payload.length, 4);
  const l4len = 8 + payload.length;
  let ih: Buffer;
  if (!v6) {
    ih = ipv4Header(SRC4, DST4, 17, l4len, 7);
  } else {
    ih = Buffer.alloc(40);
    ih[0] = 0x60;
    ih.writeUInt16BE(l4len, 4);
    ih[6] = 17;
    ih[7] = 64;
    SRC6.copy(ih, 8);
    DST6.copy(ih, 24);
  }
  uh.writeUInt16BE(partial(v6, v6 ? SRC6 : SRC4, v6 ? DST6 : DST4, 17, l4len), 6);
  const frame = Buffer.concat([ETH(v6 ? 0x86dd : 0x0800), ih, uh, payload]);
  return { frame, payload, hdrLen: 14 + ih.length + 8, l3: 14, l4: 14 + ih.length };
}

const FIN = 0x01, PSH = 0x08, ACK = 0x10, CWR = 0x80;

describe('segmentForTest: software GSO, checksum completion, tag re-insertion', () => {
  for (const v6 of [false, true]) {
    it(`TCPv${v6 ? 6 : 4}: a 10 KB super-frame becomes MSS segments with correct lengths, seq, flags, IDs and checksums`, () => {
      const mss = 1448;
      const ipOpts = v6 ? Buffer.alloc(0) : Buffer.from([1, 1, 1, 0]); // NOP NOP NOP EOL
      const tcpOpts = Buffer.from([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]); // NOP NOP TS
      const s = tcpSuper(v6, pattern(10240), FIN | PSH | ACK | CWR, ipOpts, tcpOpts);
      const before = nd.stats();
      // hdr_len is skb_headlen from the kernel, a hint only: give a misleading one.
      const out = nd.segmentForTest(vnet({ type: v6 ? 4 : 0x81, hdrLen: 2000, gso: mss, cstart: s.l4, coff: 16 }), s.frame);
      const n = Math.ceil(10240 / mss);
      expect(out.length).toBe(n);
      let off = 0;
      out.forEach((f, i) => {
        const seg = Math.min(mss, 10240 - off);
        expect(f.length).toBe(s.hdrLen + seg);
        // Headers are copies except the fields segmentation owns.
        expect(f.subarray(0, 14)).toEqual(s.frame.subarray(0, 14));
        if (!v6) {
          expect(f.readUInt16BE(16)).toBe(f.length - 14);
          expect(f.readUInt16BE(18)).toBe((0xfffe + i) & 0xffff);
          expect(f.subarray(34, 38)).toEqual(ipOpts);
        } else {
          expect(f.readUInt16BE(18)).toBe(f.length - 54);
        }
        expect(f.readUInt32BE(s.l4 + 4)).toBe((0xfffff000 + off) >>> 0);
        const fl = f[s.l4 + 13];
        expect(!!(fl & CWR)).toBe(i === 0);
        expect(!!(fl & FIN)).toBe(i === n - 1);
        expect(!!(fl & PSH)).toBe(i === n - 1);
        expect(fl & ACK).toBe(ACK);
        expect(f.subarray(s.l4 + 20, s.hdrLen)).toEqual(tcpOpts);
        expect(f.subarray(s.hdrLen)).toEqual(s.payload.subarray(off, off + seg));
        expect(checksumsOk(f)).toBe(true);
        off += seg;
      });
      const after = nd.stats();
      expect(after.gsoSegmented - before.gsoSegmented).toBe(1);
      expect(after.gsoSegments - before.gsoSegments).toBe(n);
    });

    it(`UDP_L4 (USO) over IPv${v6 ? 6 : 4}: segments carry their own UDP length and checksum`, () => {
      const s = udpSuper(v6, pattern(5000, 3));
      const out = nd.segmentForTest(vnet({ type: 5, gso: 1200, cstart: s.l4, coff: 6 }), s.frame);
      expect(out.map((f) => f.length)).toEqual([1200, 1200, 1200, 1200, 200].map((p) => s.hdrLen + p));
      let off = 0;
      for (const f of out) {
        const p = f.length - s.hdrLen;
        expect(f.readUInt16BE(s.l4 + 4)).toBe(8 + p);
        expect(f.readUInt16BE(s.l4 + 6)).not.toBe(0);
        expect(checksumsOk(f)).toBe(true);
        expect(f.subarray(s.hdrLen)).toEqual(s.payload.subarray(off, off + p));
        off += p;
      }
    });
  }

  it('restores the stripped tag on every segment (after segmenting the untagged frame)', () => {
    const s = tcpSuper(false, pattern(4000), ACK | PSH);
    const plain = nd.segmentForTest(vnet({ type: 1, gso: 1000, cstart: s.l4, coff: 16 }), s.frame);
    const tagged = nd.segmentForTest(vnet({ type: 1, gso: 1000, cstart: s.l4, coff: 16 }), s.frame, 0xa02a);
    const ad = nd.segmentForTest(vnet({ type: 1, gso: 1000, cstart: s.l4, coff: 16 }), s.frame, 100, 0x88a8);
    expect(tagged.length).toBe(4);
    tagged.forEach((f, i) => {
      const want = Buffer.concat([plain[i].subarray(0, 12), Buffer.from([0x81, 0, 0xa0, 0x2a]), plain[i].subarray(12)]);
      expect(f).toEqual(want);
      expect(checksumsOk(f)).toBe(true);
      expect(ad[i].subarray(12, 16)).toEqual(Buffer.from([0x88, 0xa8, 0, 100]));
    });
  });

  it('segments a frame that already carries an in-band (inner) tag', () => {
    const s = tcpSuper(false, pattern(3000), ACK);
    const inner = Buffer.concat([s.frame.subarray(0, 12), Buffer.from([0x81, 0, 0, 7]), s.frame.subarray(12)]);
    const out = nd.segmentForTest(vnet({ type: 1, gso: 1460, cstart: s.l4 + 4, coff: 16 }), inner, 100, 0x88a8);
    expect(out.length).toBe(3);
    for (const f of out) {
      expect(f.subarray(12, 20)).toEqual(Buffer.from([0x88, 0xa8, 0, 100, 0x81, 0, 0, 7]));
      const untagged = Buffer.concat([f.subarray(0, 12), f.subarray(20)]);
      expect(checksumsOk(untagged)).toBe(true);
    }
  });

  it('a tiny MSS needing more segments than one ring batch still yields them all, in order', () => {
    const s = tcpSuper(true, pattern(20000), ACK);
    const out = nd.segmentForTest(vnet({ type: 4, gso: 48, cstart: s.l4, coff: 16 }), s.frame);
    expect(out.length).toBe(Math.ceil(20000 / 48));
    expect(out.length).toBeGreaterThan(nd.RING_MAX_FRAMES);
    expect(Buffer.concat(out.map((f) => f.subarray(s.hdrLen)))).toEqual(s.payload);
    expect(out.every((f) => checksumsOk(f))).toBe(true);
  });

  it('completes CHECKSUM_PARTIAL frames (UDP and TCP, v4 and v6)', () => {
    const cases: [Super, boolean][] = [
      [udpSuper(false, pattern(333)), true],
      [udpSuper(true, pattern(100)), true],
      [tcpSuper(false, pattern(501), ACK), false],
      [tcpSuper(true, pattern(64), ACK), false],
    ];
    const before = nd.stats().csumFilled;
    for (const [s, udp] of cases) {
      expect(checksumsOk(s.frame)).toBe(false);
      const out = nd.segmentForTest(vnet({ type: 0, flags: 1, cstart: s.l4, coff: udp ? 6 : 16 }), s.frame);
      expect(out.length).toBe(1);
      expect(checksumsOk(out[0])).toBe(true);
      expect(out[0].subarray(0, s.l4 + (udp ? 6 : 16))).toEqual(s.frame.subarray(0, s.l4 + (udp ? 6 : 16)));
    }
    expect(nd.stats().csumFilled - before).toBe(cases.length);
    // Without NEEDS_CSUM the frame passes untouched; with a tag it gets the tag.
    const s = udpSuper(false, pattern(50));
    expect(nd.segmentForTest(vnet({ type: 0, flags: 0 }), s.frame)).toEqual([s.frame]);
    expect(nd.segmentForTest(vnet({ type: 0, flags: 0 }), s.frame, 5)[0].subarray(12, 16)).toEqual(Buffer.from([0x81, 0, 0, 5]));
  });

  it('drops what it cannot or must not segment, and counts it', () => {
    const t4 = tcpSuper(false, pattern(3000), ACK);
    const t6 = tcpSuper(true, pattern(3000), ACK);
    const u4 = udpSuper(false, pattern(3000));
    const cut = Buffer.from(t4.frame.subarray(0, 1000)); // IP total length beyond the frame
    const ext6 = Buffer.from(t6.frame);
    ext6[14 + 6] = 0; // hop-by-hop extension header
    const badDoff = Buffer.from(t4.frame);
    badDoff[t4.l4 + 12] = 0x40; // data offset 4 words: less than the fixed header
    const cases: [string, Buffer, Buffer][] = [
      ['UFO', vnet({ type: 3, gso: 1000 }), u4.frame],
      ['gso_size 0', vnet({ type: 1, gso: 0 }), t4.frame],
      ['truncated', vnet({ type: 1, gso: 1000 }), cut],
      ['TCPV4 on IPv6', vnet({ type: 1, gso: 1000 }), t6.frame],
      ['TCPV6 on IPv4', vnet({ type: 4, gso: 1000 }), t4.frame],
      ['TCP type on UDP', vnet({ type: 1, gso: 1000 }), u4.frame],
      ['IPv6 extension header', vnet({ type: 4, gso: 1000 }), ext6],
      ['bad TCP data offset', vnet({ type: 1, gso: 1000 }), badDoff],
      ['ARP', vnet({ type: 1, gso: 1000 }), arpRequestFrame(mac('02:00:00:00:00:09'), SRC4, DST4)],
      ['unknown type', vnet({ type: 9, gso: 1000 }), t4.frame],
    ];
    for (const [what, h, f] of cases) {
      const before = nd.stats().gsoDropped;
      expect(nd.segmentForTest(h, f), what).toEqual([]);
      expect(nd.stats().gsoDropped - before, what).toBe(1);
    }
    const before = nd.stats().rxDropped;
    expect(nd.segmentForTest(vnet({ type: 0, flags: 1, cstart: 200, coff: 6 }), u4.frame.subarray(0, 100))).toEqual([]);
    expect(nd.segmentForTest(vnet({ type: 0, flags: 1, cstart: 98, coff: 6 }), u4.frame.subarray(0, 100))).toEqual([]);
    expect(nd.segmentForTest(vnet({ type: 0 }), Buffer.alloc(13))).toEqual([]);
    expect(nd.stats().rxDropped - before).toBe(3);
  });

  it('never misbehaves on mangled input (property test)', () => {
    const bases = [tcpSuper(false, pattern(4000), ACK).frame, tcpSuper(true, pattern(4000), ACK).frame, udpSuper(false, pattern(4000)).frame];
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: bases.length - 1 }),
        fc.array(fc.tuple(fc.nat(200), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }),
        fc.integer({ min: 0, max: 4200 }),
        fc.uint8Array({ minLength: 10, maxLength: 10 }),
        fc.constantFrom(0, 1, 3, 4, 5, 0x81, 0x85),
        fc.integer({ min: -1, max: 65535 }),
        (bi, flips, cut, hdr, type, tci) => {
          const f = Buffer.from(bases[bi].subarray(0, cut));
          for (const [at, v] of flips) if (at < f.length) f[at] = v;
          const h = Buffer.from(hdr);
          h[1] = type;
          const gso = h.readUInt16LE(4);
          const out = nd.segmentForTest(h, f, tci);
          for (const o of out) {
            expect(o.length).toBeGreaterThanOrEqual(14);
            expect(o.length).toBeLessThanOrEqual(type ? Math.min(f.length + 4, 200 + gso + 4) : f.length + 4);
          }
          if (type && out.length) expect(out.length).toBeLessThanOrEqual(Math.ceil(f.length / Math.max(1, gso)) + 1);
        },
      ),
      { numRuns: 3000 },
    );
  });
});

// ---------- guest offloads: vnetHdr TAPs, sendVnet, segment ----------

describe('offloads: vnetHdr TAPs, sendVnet, segment', () => {
  /** `ethtool -k` of a device in the root namespace, as feature -> on/off. */
  function features(dev: string): Record<string, string> {
    const out = execFileSync('ethtool', ['-k', dev], { encoding: 'utf8' });
    return Object.fromEntries(out.split('\n').map((l) => /^([a-z0-9-]+): (on|off)/.exec(l)).filter((m) => m !== null).map((m) => [m![1], m![2]]));
  }

  it('vnetHdr turns on TSO and tx-checksumming on the device; without it they are off, even on a persistent TAP opened before with them', () => {
    const name = `nd${ID}o`;
    const a = track(nd.openTap(name, { vnetHdr: true, persist: true }));
    linksMade.add(name);
    expect(Number(readFileSync(`/sys/class/net/${name}/tun_flags`, 'utf8').trim()) & 0x4000).toBe(0x4000);
    let k = features(name);
    expect(k['tcp-segmentation-offload']).toBe('on');
    expect(k['tx-checksumming']).toBe('on');
    closeHandle(a.handle);
    const b = track(nd.openTap(name));
    k = features(name);
    expect(k['tcp-segmentation-offload']).toBe('off');
    expect(k['tx-checksumming']).toBe('off');
    nd.setPersist(b.handle, false);
    closeHandle(b.handle);
    linksMade.delete(name);
  });

  it('a vnetHdr TAP delivers the kernel\'s header before each frame: a UDP send from its netns arrives checksum-partial', async () => {
    const ns = `nd${ID}v`;
    addNetns(ns);
    const tap = track(nd.openTap(`nd${ID}w`, { vnetHdr: true }));
    ip('link', 'set', tap.name, 'netns', ns);
    ip('-n', ns, 'addr', 'add', '10.202.0.1/24', 'dev', tap.name);
    ip('-n', ns, 'link', 'set', tap.name, 'up');
    ip('-n', ns, 'neigh', 'add', '10.202.0.2', 'lladdr', '02:00:5e:00:00:09', 'dev', tap.name);
    const ring = nd.ring();
    const seen: { hdr: Buffer; frame: Buffer }[] = [];
    nd.start(tap.handle, (n) => {
      for (let i = 0; i < n; i++) {
        seen.push({
          hdr: Buffer.from(ring.arena.subarray(ring.offs[i] - nd.VNET_HDR_LEN, ring.offs[i])),
          frame: Buffer.from(ring.arena.subarray(ring.offs[i], ring.offs[i] + ring.lens[i])),
        });
      }
    });
    await py(ns, 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b"x"*100, ("10.202.0.2", 9))');
    await waitFor(() => seen.some((s) => s.frame.readUInt16BE(12) === 0x0800 && s.frame[23] === 17), 'the UDP frame');
    const u = seen.find((s) => s.frame.readUInt16BE(12) === 0x0800 && s.frame[23] === 17)!;
    expect(u.hdr[0] & nd.VNET_F_NEEDS_CSUM).toBe(nd.VNET_F_NEEDS_CSUM);
    expect(u.hdr.readUInt16LE(6)).toBe(34); // csum_start: the UDP header
    expect(u.hdr.readUInt16LE(8)).toBe(6); // csum_offset: the UDP checksum field
    expect(checksumsOk(u.frame)).toBe(false); // partial until someone completes it
    expect(nd.segment(Buffer.concat([u.hdr, u.frame]), nd.VNET_HDR_LEN, u.frame.length)).toBe(1);
    const sc = nd.txScratch();
    expect(checksumsOk(Buffer.from(sc.arena.subarray(sc.offs[0], sc.offs[0] + sc.lens[0])))).toBe(true);
    closeHandle(tap.handle);
    delNetns(ns);
  }, 30000);

  it('sendVnet / send2Vnet: the header must fit before the frame; a device without it refuses a header that asks for work', () => {
    const t = track(nd.openTap(`nd${ID}x`));
    const buf = Buffer.alloc(100);
    expect(() => nd.sendVnet(t.handle, buf, 5, 60)).toThrow(RangeError);
    expect(() => nd.send2Vnet(t.handle, buf, 9, 12, buf, 40, 40)).toThrow(RangeError);
    expect(() => nd.segment(buf, 0, 60)).toThrow(RangeError);
    const before = nd.stats();
    buf[10 - 10] = nd.VNET_F_NEEDS_CSUM;
    expect(nd.sendVnet(t.handle, buf, 10, 60)).toBe(-22);
    expect(nd.send2Vnet(t.handle, buf, 10, 12, buf, 40, 40)).toBe(-22);
    expect(nd.stats().txErrors - before.txErrors).toBe(2);
    closeHandle(t.handle);
  });

  it('segment: a TCP super-frame becomes MSS segments in txScratch with valid checksums; the source is untouched', () => {
    const s = tcpSuper(false, pattern(5000), PSH | ACK);
    const buf = Buffer.concat([Buffer.alloc(3), vnet({ type: 1, hdrLen: s.hdrLen, gso: 1000, cstart: s.l4, coff: 16 }), s.frame]);
    const copy = Buffer.from(buf);
    const before = nd.stats();
    const n = nd.segment(buf, 13, s.frame.length);
    expect(n).toBe(5);
    expect(buf.equals(copy)).toBe(true);
    const sc = nd.txScratch();
    const segs = Array.from({ length: n }, (_, i) => Buffer.from(sc.arena.subarray(sc.offs[i], sc.offs[i] + sc.lens[i])));
    expect(segs.map((f) => f.length)).toEqual(Array(5).fill(s.hdrLen + 1000));
    expect(segs.every(checksumsOk)).toBe(true);
    expect(Buffer.concat(segs.map((f) => f.subarray(s.hdrLen)))).toEqual(s.payload);
    // Each made frame has a zeroed header in front of it too.
    expect(sc.arena.subarray(sc.offs[0] - nd.VNET_HDR_LEN, sc.offs[0])).toEqual(Buffer.alloc(nd.VNET_HDR_LEN));
    const after = nd.stats();
    expect(after.txGsoSegmented - before.txGsoSegmented).toBe(1);
    expect(after.txGsoSegments - before.txGsoSegments).toBe(5);
  });

  it('segment refuses what it cannot complete (UFO, too many segments, bad offsets) and counts it', () => {
    const u = udpSuper(false, pattern(3000));
    const before = nd.stats();
    const ufo = Buffer.concat([vnet({ type: 3, gso: 1000, cstart: u.l4, coff: 6 }), u.frame]);
    expect(nd.segment(ufo, 10, u.frame.length)).toBe(-1);
    const s = tcpSuper(false, pattern(60000), ACK);
    const tiny = Buffer.concat([vnet({ type: 1, gso: 8, cstart: s.l4, coff: 16 }), s.frame]); // 7500 segments
    expect(nd.segment(tiny, 10, s.frame.length)).toBe(-1);
    const bad = Buffer.concat([vnet({ type: 0, cstart: 5000, coff: 6 }), u.frame]);
    expect(nd.segment(bad, 10, u.frame.length)).toBe(-1);
    expect(nd.stats().txGsoDropped - before.txGsoDropped).toBe(3);
  });
});

describe('AF_PACKET with keepGso: super-frames arrive whole with their header', () => {
  it('a UDP_SEGMENT send from the netns arrives as one frame behind a UDP_L4 GSO header, and segment() completes it', async () => {
    const ns = `nd${ID}k`;
    const v0 = `nd${ID}k0`;
    const v1 = `nd${ID}k1`;
    addNetns(ns);
    ip('link', 'add', v0, 'type', 'veth', 'peer', 'name', v1);
    linksMade.add(v0);
    ip('link', 'set', v1, 'netns', ns);
    ip('-n', ns, 'addr', 'add', '10.203.0.1/24', 'dev', v1);
    ip('-n', ns, 'link', 'set', v1, 'up');
    ip('-n', ns, 'neigh', 'replace', '10.203.0.2', 'lladdr', '02:00:5e:00:01:03', 'dev', v1);
    const pk = track(nd.openPacket(v0, { keepGso: true }));
    const ring = nd.ring();
    const seen: { hdr: Buffer; frame: Buffer }[] = [];
    nd.start(pk.handle, (n) => {
      for (let i = 0; i < n; i++) {
        seen.push({
          hdr: Buffer.from(ring.arena.subarray(ring.offs[i] - nd.VNET_HDR_LEN, ring.offs[i])),
          frame: Buffer.from(ring.arena.subarray(ring.offs[i], ring.offs[i] + ring.lens[i])),
        });
      }
    });
    const before = nd.stats();
    await py(ns, `
import socket
data = bytes(((i * 7 + (i >> 8)) & 255) for i in range(10240))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_UDP, 103, 1000)  # UDP_SEGMENT
s.sendto(data, ('10.203.0.2', 9997))
`);
    const mine = () => seen.filter((s) => s.frame.readUInt16BE(12) === 0x0800 && s.frame[23] === 17 && s.frame.readUInt16BE(36) === 9997);
    await waitFor(() => mine().length >= 1, 'the super-frame');
    await sleep(50);
    const got = mine();
    expect(got).toHaveLength(1);
    const { hdr, frame } = got[0];
    expect(frame.length).toBe(14 + 20 + 8 + 10240);
    expect(hdr[1] & 0x7f).toBe(5); // VIRTIO_NET_HDR_GSO_UDP_L4
    expect(hdr.readUInt16LE(4)).toBe(1000); // gso_size
    expect(hdr[0] & nd.VNET_F_NEEDS_CSUM).toBe(nd.VNET_F_NEEDS_CSUM);
    expect(hdr.readUInt16LE(6)).toBe(34);
    expect(nd.stats().rxOffloaded - before.rxOffloaded).toBeGreaterThanOrEqual(1);
    const n = nd.segment(Buffer.concat([hdr, frame]), nd.VNET_HDR_LEN, frame.length);
    expect(n).toBe(11);
    const sc = nd.txScratch();
    for (let i = 0; i < n; i++) expect(checksumsOk(Buffer.from(sc.arena.subarray(sc.offs[i], sc.offs[i] + sc.lens[i])))).toBe(true);
    closeHandle(pk.handle);
    ip('link', 'del', v0);
    linksMade.delete(v0);
    delNetns(ns);
  }, 20000);
});
