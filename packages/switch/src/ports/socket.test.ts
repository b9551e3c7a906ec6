import { spawnSync } from 'node:child_process';
import { createConnection, createServer, type Socket } from 'node:net';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { PortRx } from '../port.js';
import { type FrameSink, SOCKET_MAX_FRAME, SocketIo, StreamDeframer } from './socket.js';

// ---------------------------------------------------------------------------
// Helpers

/** Records frames (copied: the deframer hands out views of buffers it reuses). */
class Collect implements FrameSink {
  frames: number[][] = [];
  calls = { frame: 0, batch: 0 };
  frame(buf: Uint8Array, off: number, len: number): void {
    this.calls.frame++;
    this.frames.push([...buf.subarray(off, off + len)]);
  }
  batch(buf: Uint8Array, offs: Int32Array, lens: Int32Array, count: number): void {
    this.calls.batch++;
    for (let i = 0; i < count; i++) this.frames.push([...buf.subarray(offs[i], offs[i] + lens[i])]);
  }
}

function record(frame: number[] | Uint8Array): Buffer {
  const b = Buffer.alloc(4 + frame.length);
  b.writeUInt32BE(frame.length, 0);
  Buffer.from(frame).copy(b, 4);
  return b;
}

function frameOf(len: number, seed: number): number[] {
  return Array.from({ length: len }, (_, i) => (i * 7 + seed) & 0xff);
}

// ---------------------------------------------------------------------------
// The framing parser

describe('StreamDeframer', () => {
  it('delivers several whole frames of one chunk as one batch, in place', () => {
    const d = new StreamDeframer();
    const c = new Collect();
    const frames = [frameOf(60, 1), frameOf(1514, 2), frameOf(14, 3)];
    expect(d.push(Buffer.concat(frames.map(record)), c)).toBe(true);
    expect(c.frames).toEqual(frames);
    expect(c.calls).toEqual({ frame: 0, batch: 1 });
    expect(d.pending).toBe(0);
  });

  it('assembles frames split anywhere, including inside the length header', () => {
    const frames = [frameOf(100, 1), frameOf(9000, 2), frameOf(60, 3)];
    const stream = Buffer.concat(frames.map(record));
    for (const cut of [1, 2, 3, 4, 5, 50, 103, 104, 105, 5000, 9107, 9108, 9110]) {
      const d = new StreamDeframer();
      const c = new Collect();
      expect(d.push(stream.subarray(0, cut), c)).toBe(true);
      expect(d.push(stream.subarray(cut), c)).toBe(true);
      expect(c.frames, `cut at ${cut}`).toEqual(frames);
      expect(d.pending).toBe(0);
    }
  });

  it('handles a stream fed one byte at a time', () => {
    const frames = [frameOf(64, 9), frameOf(3, 1)];
    const stream = Buffer.concat(frames.map(record));
    const d = new StreamDeframer();
    const c = new Collect();
    for (let i = 0; i < stream.length; i++) expect(d.push(stream.subarray(i, i + 1), c)).toBe(true);
    expect(c.frames).toEqual(frames);
  });

  it('batches more frames than one batch holds, in order', () => {
    const frames = Array.from({ length: 1000 }, (_, i) => frameOf(20 + (i % 50), i));
    const d = new StreamDeframer();
    const c = new Collect();
    expect(d.push(Buffer.concat(frames.map(record)), c)).toBe(true);
    expect(c.frames).toEqual(frames);
    expect(c.calls.batch).toBeGreaterThan(1);
  });

  it('any split of any sequence of frames yields the same frames (property)', () => {
    fc.assert(fc.property(
      fc.array(fc.integer({ min: 1, max: 3000 }), { minLength: 1, maxLength: 20 }),
      fc.array(fc.integer({ min: 1, max: 4000 }), { minLength: 0, maxLength: 10 }),
      (lens, cuts) => {
        const frames = lens.map((l, i) => frameOf(l, i));
        const stream = Buffer.concat(frames.map(record));
        const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
        const d = new StreamDeframer();
        const c = new Collect();
        let at = 0;
        for (const p of [...points, stream.length]) {
          if (!d.push(stream.subarray(at, p), c)) return false;
          at = p;
        }
        expect(c.frames).toEqual(frames);
        return d.pending === 0;
      },
    ), { numRuns: 200 });
  });

  it('accepts the maximum frame size and refuses one byte more', () => {
    const max = frameOf(SOCKET_MAX_FRAME, 5);
    const d = new StreamDeframer();
    const c = new Collect();
    expect(d.push(record(max), c)).toBe(true);
    expect(c.frames[0].length).toBe(SOCKET_MAX_FRAME);
    const hdr = Buffer.alloc(4);
    hdr.writeUInt32BE(SOCKET_MAX_FRAME + 1);
    expect(d.push(hdr, c)).toBe(false);
    expect(d.badLength).toBe(SOCKET_MAX_FRAME + 1);
  });

  it('a zero or oversized length stops the stream after delivering the frames before it', () => {
    for (const bad of [0, 65554, 0x7fffffff, 0xffffffff]) {
      const d = new StreamDeframer();
      const c = new Collect();
      const hdr = Buffer.alloc(4);
      hdr.writeUInt32BE(bad >>> 0);
      const ok = [frameOf(60, 1), frameOf(61, 2)];
      expect(d.push(Buffer.concat([...ok.map(record), hdr, record(frameOf(60, 3))]), c)).toBe(false);
      expect(d.badLength).toBe(bad >>> 0);
      expect(c.frames).toEqual(ok);
      // Unusable until reset (the connection is closed).
      expect(d.push(record(frameOf(60, 4)), c)).toBe(false);
      d.reset();
      expect(d.push(record(frameOf(60, 4)), c)).toBe(true);
      expect(c.frames.length).toBe(3);
    }
  });

  it('a bad length in a header split across chunks is caught too', () => {
    const d = new StreamDeframer();
    const c = new Collect();
    expect(d.push(Buffer.from([0x00, 0x02]), c)).toBe(true);
    expect(d.push(Buffer.from([0x00, 0x00]), c)).toBe(false); // 0x00020000 = 131072
    expect(d.badLength).toBe(0x20000);
  });
});

// ---------------------------------------------------------------------------
// SocketIo over a real Unix socket (no root needed)

const dir = mkdtempSync(join(tmpdir(), 'vswitch-sockio-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

class RxLog implements PortRx {
  frames: number[][] = [];
  gones: string[] = [];
  links: string[] = [];
  gone(_errno: number, why: string): void {
    this.gones.push(why);
  }
  link(up: boolean, why: string): void {
    this.links.push(`${up ? 'up' : 'down'}: ${why}`);
  }
  batch(buf: Uint8Array, offs: Int32Array, lens: Int32Array, count: number): void {
    for (let i = 0; i < count; i++) this.frames.push([...buf.subarray(offs[i], offs[i] + lens[i])]);
  }
  frame(buf: Uint8Array, off: number, len: number): void {
    this.frames.push([...buf.subarray(off, off + len)]);
  }
}

/** A stream-protocol client: collects the frames it receives. */
class Client {
  readonly sock: Socket;
  readonly frames: number[][] = [];
  closed = false;
  readonly #d = new StreamDeframer();
  readonly connected: Promise<void>;
  readonly done: Promise<void>;
  constructor(path: string) {
    this.sock = createConnection(path);
    this.connected = new Promise((res, rej) => { this.sock.once('connect', res); this.sock.once('error', rej); });
    this.sock.on('error', () => {});
    this.done = new Promise((res) => this.sock.once('close', () => { this.closed = true; res(); }));
    const sink = {
      frame: (b: Uint8Array, o: number, l: number) => { this.frames.push([...b.subarray(o, o + l)]); },
      batch: (b: Uint8Array, offs: Int32Array, lens: Int32Array, n: number) => {
        for (let i = 0; i < n; i++) this.frames.push([...b.subarray(offs[i], offs[i] + lens[i])]);
      },
    };
    this.sock.on('data', (c: Buffer) => this.#d.push(c, sink));
  }
}

async function until(what: string, f: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('SocketIo', () => {
  const open: SocketIo[] = [];
  const clients: Client[] = [];
  afterEach(() => {
    clients.splice(0).forEach((c) => c.sock.destroy());
    open.splice(0).forEach((io) => io.close());
  });
  let n = 0;
  const mk = (opts: Partial<ConstructorParameters<typeof SocketIo>[1]> = {}): { io: SocketIo; rx: RxLog; links: string[] } => {
    const io = new SocketIo('s', { path: join(dir, `p${n++}.sock`), ...opts });
    open.push(io);
    const rx = new RxLog();
    io.start(rx);
    return { io, rx, links: rx.links };
  };
  const client = (path: string): Client => {
    const c = new Client(path);
    clients.push(c);
    return c;
  };

  it('creates the socket file with the configured mode, and removes it on close', () => {
    const { io } = mk({ mode: 0o660 });
    expect(statSync(io.path).isSocket()).toBe(true);
    expect(statSync(io.path).mode & 0o777).toBe(0o660);
    expect(mk().io.describe().mode).toBe('0600');
    io.close();
    expect(existsSync(io.path)).toBe(false);
    io.close(); // idempotent
  });

  it('exchanges frames both ways; link up on connect, down on disconnect', async () => {
    const { io, rx, links } = mk();
    expect(io.connected).toBe(false);
    expect(io.send(Buffer.from(frameOf(60, 0)), 0, 60)).toBeLessThan(0);
    expect(io.counters.txNoClient).toBe(1);
    const c = client(io.path);
    await c.connected;
    await until('link up', () => io.connected);
    expect(links).toEqual(['up: client connected']);
    // Client -> port: two frames in one write, then one split over two writes.
    const f1 = frameOf(60, 1), f2 = frameOf(1514, 2), f3 = frameOf(300, 3);
    c.sock.write(Buffer.concat([record(f1), record(f2)]));
    const r3 = record(f3);
    c.sock.write(r3.subarray(0, 100));
    await new Promise((r) => setTimeout(r, 20));
    c.sock.write(r3.subarray(100));
    await until('3 frames received', () => rx.frames.length === 3);
    expect(rx.frames).toEqual([f1, f2, f3]);
    // Port -> client: send and send2 (a tag inserted in two pieces).
    const g1 = frameOf(64, 7);
    const g2 = frameOf(100, 8);
    expect(io.send(Buffer.from([0, 0, ...g1, 0]), 2, 64)).toBe(64);
    expect(io.send2(Buffer.from(g2.slice(0, 16)), 0, 16, Buffer.from([9, ...g2.slice(16)]), 1, 84)).toBe(100);
    await until('2 frames at the client', () => c.frames.length === 2);
    expect(c.frames).toEqual([g1, g2]);
    c.sock.end();
    await until('link down', () => links.length === 2);
    expect(links[1]).toBe('down: client disconnected');
    expect(io.describe()).toMatchObject({ connected: false, connects: 1, disconnects: 1 });
  });

  it('refuses a second client while one is connected, and accepts a new one after', async () => {
    const { io, rx } = mk();
    const a = client(io.path);
    await a.connected;
    await until('a up', () => io.connected);
    const b = client(io.path);
    await b.done;
    expect(io.counters.refused).toBe(1);
    expect(a.closed).toBe(false);
    a.sock.destroy();
    await until('a gone', () => !io.connected && io.counters.disconnects === 1);
    const c = client(io.path);
    await c.connected;
    c.sock.write(record(frameOf(60, 4)));
    await until('frame from c', () => rx.frames.length === 1);
    expect(io.counters.connects).toBe(2);
  });

  it('a bad length closes that client (counted) and the port takes the next one', async () => {
    const { io, rx, links } = mk();
    const a = client(io.path);
    await a.connected;
    a.sock.write(Buffer.concat([record(frameOf(60, 1)), Buffer.from([0, 0, 0, 0]), record(frameOf(60, 2))]));
    await a.done;
    await until('down', () => links.length === 2);
    expect(links[1]).toMatch(/bad frame length 0/);
    expect(rx.frames).toEqual([frameOf(60, 1)]);
    expect(io.counters.badFrames).toBe(1);
    const b = client(io.path);
    await b.connected;
    const big = Buffer.alloc(4);
    big.writeUInt32BE(70000);
    b.sock.write(big);
    await b.done;
    expect(io.counters.badFrames).toBe(2);
    const c = client(io.path);
    await c.connected;
    c.sock.write(record(frameOf(61, 3)));
    await until('frame from c', () => rx.frames.length === 2);
  });

  it('a client that does not read: frames beyond the transmit buffer are dropped and counted', async () => {
    const { io } = mk({ txBufferBytes: 64 * 1024 });
    const c = client(io.path);
    await c.connected;
    await until('up', () => io.connected);
    c.sock.pause(); // stops reading: the kernel buffers fill, then ours
    const f = Buffer.from(frameOf(1500, 1));
    let sent = 0;
    let refused = 0;
    for (let round = 0; round < 200 && refused === 0; round++) {
      for (let i = 0; i < 100; i++) (io.send(f, 0, 1500) > 0 ? sent++ : refused++);
      await new Promise((r) => setImmediate(r));
    }
    expect(refused).toBeGreaterThan(0);
    expect(io.counters.txQueueFull).toBe(refused);
    // Once the client reads again, everything accepted arrives intact, in order.
    c.sock.resume();
    await until('all accepted frames at the client', () => c.frames.length === sent, 10_000);
    expect(c.frames.every((x) => x.length === 1500 && x[0] === f[0] && x[1499] === f[1499])).toBe(true);
    // And the buffer is usable again.
    expect(io.send(f, 0, 1500)).toBe(1500);
  });

  it('replaces a stale socket file, refuses a live one and a non-socket', async () => {
    const path = join(dir, 'stale.sock');
    // A live listener (this process): refused, and its file left alone.
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(path, r));
    expect(() => new SocketIo('x', { path })).toThrow(/another process is listening/);
    expect(existsSync(path)).toBe(true);
    await new Promise<void>((r) => srv.close(() => r()));
    // A stale socket: a process bound it and was killed (the file stays).
    const r = spawnSync(process.execPath, ['-e',
      `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    expect(r.signal).toBe('SIGKILL');
    expect(statSync(path).isSocket()).toBe(true);
    const io = new SocketIo('x', { path });
    open.push(io);
    const c = client(path);
    await c.connected;
    await until('up', () => io.connected);
    // A regular file is never removed.
    const file = join(dir, 'plain');
    writeFileSync(file, 'x');
    expect(() => new SocketIo('y', { path: file })).toThrow(/not a socket/);
    expect(existsSync(file)).toBe(true);
  });

  it('refuses a path longer than sun_path', () => {
    expect(() => new SocketIo('x', { path: join(dir, 'a'.repeat(120)) })).toThrow(/longer than 107/);
  });

  it('close() drops the client without a link-down callback', async () => {
    const { io, links } = mk();
    const c = client(io.path);
    await c.connected;
    await until('up', () => io.connected);
    io.close();
    await c.done;
    await new Promise((r) => setTimeout(r, 20));
    expect(links).toEqual(['up: client connected']);
  });
});

describe('SocketIo, connect role (QEMU listens: server=on)', () => {
  const open: SocketIo[] = [];
  const servers: import('node:net').Server[] = [];
  afterEach(async () => {
    open.splice(0).forEach((io) => io.close());
    await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
  });

  /** A "QEMU" stream server: keeps its current peer, records frames. */
  const peerServer = (path: string): { peers: Socket[]; frames: number[][]; listening: Promise<void> } => {
    const st = { peers: [] as Socket[], frames: [] as number[][], listening: Promise.resolve() };
    const srv = createServer((s) => {
      st.peers.push(s);
      const d = new StreamDeframer();
      s.on('error', () => {});
      s.on('data', (c: Buffer) => d.push(c, {
        frame: (b, o, l) => { st.frames.push([...b.subarray(o, o + l)]); },
        batch: (b, offs, lens, n) => { for (let i = 0; i < n; i++) st.frames.push([...b.subarray(offs[i], offs[i] + lens[i])]); },
      }));
    });
    servers.push(srv);
    st.listening = new Promise<void>((r) => srv.listen(path, r));
    return st;
  };

  it('connects when the peer appears, exchanges frames, and reconnects after the peer drops it', async () => {
    const path = join(dir, 'qemu-server.sock');
    const rx = new RxLog();
    const links = rx.links;
    const io = new SocketIo('c', { path, connect: true });
    open.push(io);
    io.start(rx);
    expect(io.describe()).toMatchObject({ role: 'connect', connected: false });
    expect(io.describe().mode).toBeUndefined();
    await new Promise((r) => setTimeout(r, 250)); // a few failed attempts: nothing there yet
    expect(io.connected).toBe(false);
    const peer = peerServer(path);
    await peer.listening;
    await until('connected', () => io.connected, 3000);
    peer.peers[0].write(record(frameOf(60, 1)));
    await until('frame in', () => rx.frames.length === 1);
    expect(io.send(Buffer.from(frameOf(70, 2)), 0, 70)).toBe(70);
    await until('frame out', () => peer.frames.length === 1);
    expect(peer.frames[0]).toEqual(frameOf(70, 2));
    // The peer drops the connection: the port goes down, then dials again.
    peer.peers[0].destroy();
    await until('down', () => links.some((l) => l.startsWith('down')));
    await until('reconnected', () => io.connected && peer.peers.length === 2, 3000);
    expect(io.counters).toMatchObject({ connects: 2, disconnects: 1 });
    peer.peers[1].write(record(frameOf(60, 3)));
    await until('frame after reconnect', () => rx.frames.length === 2);
    io.close();
    await new Promise((r) => setTimeout(r, 300));
    expect(peer.peers.length).toBe(2); // no attempts after close
    expect(existsSync(path)).toBe(true); // the file is the peer's
  });
});
