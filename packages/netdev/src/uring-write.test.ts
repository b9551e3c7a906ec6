/*
 * Batched TAP writes (setTapWriteBatch, native/uring.c): the flow cache's replays of one
 * read batch go to their TAP through io_uring in one io_uring_enter. Two TAPs in two
 * namespaces; A's queue is filled with N numbered frames of one installed key before the
 * read loop starts, then drained: B's namespace must see all N, in order, written through
 * the batch (the counters say how many flushes and writes), and B's TAP goes away when
 * its handle closes (the ring held it as a registered file); with B's link down every
 * write fails and each is counted as a write error, as writev's are. Needs root; names
 * carry a per-run id and are removed even when a test fails.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import * as nd from './index.js';
import { ip, testEnv, until } from './test-env.js';

const ID = randomBytes(2).toString('hex');
const { handles, netns } = testEnv();
const N = 60;
const ETHERTYPE = '88b5'; // IEEE local experimental: no stack in the namespaces answers it

const macOf = (ns: string, dev: string): string => ip('netns', 'exec', ns, 'cat', `/sys/class/net/${dev}/address`).trim();

function pair(tag: string): { a: nd.TapInfo; b: nd.TapInfo; na: string; nb: string } {
  const na = `ur${ID}${tag}a`, nb = `ur${ID}${tag}b`;
  for (const n of [na, nb]) {
    ip('netns', 'add', n);
    netns.add(n);
    ip('netns', 'exec', n, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1');
  }
  const a = nd.openTap(`ur${ID}${tag}a`);
  handles.add(a.handle);
  const b = nd.openTap(`ur${ID}${tag}b`);
  handles.add(b.handle);
  ip('link', 'set', a.name, 'netns', na);
  ip('link', 'set', b.name, 'netns', nb);
  ip('-n', na, 'link', 'set', a.name, 'up');
  ip('-n', nb, 'link', 'set', b.name, 'up');
  return { a, b, na, nb };
}

/** N frames dst <- src numbered 0..N-1 (2 bytes after the ethertype) into A's TAP queue (qdisc bypassed). */
function queueFrames(ns: string, dev: string, dst: string, src: string): void {
  const head = dst.replaceAll(':', '') + src.replaceAll(':', '') + ETHERTYPE;
  execFileSync('ip', ['netns', 'exec', ns, 'python3', '-c',
    'import socket,sys\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.setsockopt(263,20,1)\ns.bind((sys.argv[1],0))\n' +
    'h=bytes.fromhex(sys.argv[2])\nfor i in range(int(sys.argv[3])): s.send(h+i.to_bytes(2,"big")+bytes(44))',
    dev, head, String(N)]);
}

/** Starts a capture of our ethertype on B's device; resolves once it listens, `done` with the sequence numbers. */
async function capture(ns: string, dev: string): Promise<{ done: Promise<number[]> }> {
  const p = spawn('ip', ['netns', 'exec', ns, 'python3', '-c',
    'import socket,sys,json,time\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW,socket.htons(0x' + ETHERTYPE + '))\n' +
    's.bind((sys.argv[1],0))\ns.settimeout(0.5)\nprint("ready",flush=True)\nseen=[]\nend=time.time()+15\n' +
    'while len(seen)<int(sys.argv[2]) and time.time()<end:\n  try: f=s.recv(2048)\n  except socket.timeout: continue\n' +
    '  seen.append(int.from_bytes(f[14:16],"big"))\nprint(json.dumps(seen),flush=True)', dev, String(N)]);
  let out = '';
  p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  const ready = await until(() => out.startsWith('ready'), 10_000);
  expect(ready).toBe(true);
  const done = new Promise<number[]>((resolve, reject) => {
    p.on('exit', () => {
      try { resolve(JSON.parse(out.split('\n')[1] ?? '[]') as number[]); } catch (e) { reject(e); }
    });
  });
  return { done };
}

const gens = nd.flowCacheGenerations();
const BR = 14;

/** Installs A -> B, fills A's queue, drains it with `quantum` frames a round; what happened. */
async function replay(tag: string, quantum: number, linkDown = false) {
  const { a, b, na, nb } = pair(tag);
  gens[BR]++;
  const amac = macOf(na, a.name), bmac = macOf(nb, b.name);
  const f = Buffer.alloc(nd.VNET_HDR_LEN + 60);
  f.write(bmac.replaceAll(':', '') + amac.replaceAll(':', '') + ETHERTYPE, nd.VNET_HDR_LEN, 'hex');
  expect(nd.flowCacheInstall(BR, a.handle, 1, f, nd.VNET_HDR_LEN, 60, b.handle, 2)).toBeGreaterThanOrEqual(0);
  nd.setQuantum(a.handle, quantum, true);
  const cap = linkDown ? null : await capture(nb, b.name);
  if (linkDown) ip('-n', nb, 'link', 'set', b.name, 'down');
  queueFrames(na, a.name, bmac, amac);
  const s0 = nd.stats(), hits0 = nd.flowCacheStats().hits;
  // What reaches JS (a batch behind a stray frame of the link's own: the replay stops at a
  // batch's first miss) is forwarded as the pipeline would, so every frame still reaches B.
  let toJs = 0;
  const ring = nd.ring();
  nd.start(a.handle, (n) => {
    for (let i = 0; i < n; i++) {
      const off = ring.offs[i], len = ring.lens[i];
      if (ring.arena.subarray(off, off + 14).equals(f.subarray(nd.VNET_HDR_LEN, nd.VNET_HDR_LEN + 14))) {
        toJs++;
        nd.send(b.handle, ring.arena, off, len);
      }
    }
  });
  const ok = await until(() => nd.flowCacheStats().hits - hits0 + toJs >= N, 20_000);
  const s1 = nd.stats();
  const seen = cap ? await cap.done : [];
  // The entries' own counters before the close drops them: writes failed with the link down.
  const fold = new Float64Array(nd.FLOW_CACHE_FOLD_FIELDS * 64);
  let down = 0;
  const F = nd.FLOW_CACHE_FOLD_FIELDS;
  for (let i = 0, k = nd.flowCacheFold(fold); i < k; i++) if (fold[i * F] === BR) down += fold[i * F + 10];
  for (const h of [a.handle, b.handle]) { handles.delete(h); nd.close(h); }
  expect(ok).toBe(true);
  return {
    gone: () => { try { ip('-n', nb, 'link', 'show', b.name); return false; } catch { return true; } },
    seen, down, hits: nd.flowCacheStats().hits - hits0, toJs,
    flushes: s1.uringFlushes - s0.uringFlushes, enters: s1.uringEnters - s0.uringEnters, writes: s1.uringWrites - s0.uringWrites,
    unsent: s1.uringUnsent - s0.uringUnsent, txErrors: s1.txErrors - s0.txErrors, txFrames: s1.txFrames - s0.txFrames,
  };
}

// Needs io_uring (root, kernel.io_uring_disabled = 0, as CI's machine has): fails, never skips, without it.
const uringDisabled = readFileSync('/proc/sys/kernel/io_uring_disabled', 'utf8').trim();
const inOrder = Array.from({ length: N }, (_, i) => i);

describe('batched TAP writes through io_uring', () => {
  afterEach(() => { nd.setTapWriteBatch(false); });

  it('io_uring is allowed here (kernel.io_uring_disabled = 0): the tests below need it', () => {
    expect(uringDisabled, 'this test needs io_uring: set kernel.io_uring_disabled to 0 (sysctl) and run as root').toBe('0');
  });

  it('replayed frames arrive all and in order, a read batch a flush; off: the same frames, no flush', async () => {
    expect(nd.setTapWriteBatch(true)).toEqual({ on: true, error: null });
    // 8 frames a round: 8 services of at most 8 frames, each replayed in one flush.
    const r = await replay('o', 8);
    expect(r.hits + r.toJs).toBe(N);
    expect(r.hits, 'at most one batch behind a stray frame went to JS').toBeGreaterThanOrEqual(N - 8);
    expect(r.seen).toEqual(inOrder);
    expect(r.writes).toBe(r.hits);
    expect(r.unsent).toBe(0);
    expect(r.txErrors).toBe(0);
    expect(r.txFrames).toBe(N);
    expect(r.flushes).toBeGreaterThanOrEqual(Math.ceil(r.hits / 8));
    expect(r.flushes).toBeLessThan(r.hits);
    expect(r.enters, 'one io_uring_enter a batch: tun completes the writes inline').toBe(r.flushes);
    // B was a registered file of the ring (uring.c): closing its handle lets the TAP go.
    expect(await until(r.gone, 10_000)).toBe(true);
    // One service takes the whole queue: one flush carries every frame.
    const whole = await replay('w', 256);
    expect(whole.seen).toEqual(inOrder);
    expect(whole.writes).toBe(whole.hits);
    expect(whole.hits).toBeGreaterThan(0);
    expect(whole.flushes).toBeLessThanOrEqual(2); // a stray frame of the link's own may split the batch
    // The control: off again, the frames go out by writev, as many and in the same order.
    expect(nd.setTapWriteBatch(false)).toEqual({ on: false, error: null });
    const off = await replay('f', 8);
    expect(off.seen).toEqual(inOrder);
    expect(off.flushes).toBe(0);
    expect(off.writes).toBe(0);
    expect(off.txFrames).toBe(N);
  }, 90_000);

  it('a write the TAP refuses (its link down: EIO) completes as an error and is counted as one', async () => {
    expect(nd.setTapWriteBatch(true).on).toBe(true);
    const r = await replay('d', 16, true);
    expect(r.hits + r.toJs).toBe(N);
    expect(r.hits).toBeGreaterThanOrEqual(N - 16);
    expect(r.writes).toBe(r.hits);
    expect(r.txErrors).toBe(N);
    expect(r.txFrames).toBe(0);
    // The entry's own counters: every replay was a write that failed with the link down.
    expect(r.down).toBe(r.hits);
  }, 60_000);
});
