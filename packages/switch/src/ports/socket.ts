/*
 * A socket port: one Unix stream connection is the port's NIC. The byte stream is
 * QEMU's `-netdev stream` format (also passt's, lima's socket_vmnet's and legacy
 * `-netdev socket`): each frame is a 4-byte big-endian length followed by that many
 * bytes of Ethernet frame. Two roles:
 *
 *  - listen (default): the daemon listens on PATH; QEMU connects with
 *    `-netdev stream,id=n0,server=off,addr.type=unix,addr.path=PATH`. After a daemon
 *    restart QEMU comes back by itself only with `reconnect=SECONDS` (QEMU 8.2-9.1)
 *    or `reconnect-ms=` (9.2+); QEMU 7.2 (Debian 12) has neither and stays cut off.
 *  - connect: QEMU listens (`-netdev stream,id=n0,server=on,addr.type=unix,addr.path=PATH`)
 *    and the daemon connects, retrying every RETRY_MIN_MS..RETRY_MAX_MS while it
 *    cannot. QEMU's stream server takes a new client after the old one is gone, so
 *    a restarted daemon reconnects at once: the hitless restart for any QEMU >= 7.2.
 *
 * Listening: the socket file is created under umask 0177 (never briefly open to
 * others), then given the configured mode (default 0600) and owner/group, in that
 * order (chmod of a file that is no longer ours would need CAP_FOWNER).
 * A socket file left by a crashed daemon is replaced; one that a live process
 * still answers on is refused, and so is a path that exists and is not a socket.
 *
 * Clients (listen): the first connection is the NIC; any other connection while it
 * is there is closed at once and counted (`refused`). Received bytes are cut into frames
 * without copying when a frame lies whole inside one read (delivered as a batch
 * straight from Node's read buffer); a frame split across reads is assembled in one
 * preallocated buffer. A length of 0 or above SOCKET_MAX_FRAME closes that client
 * and is counted (`badFrames`); the daemon and the listening socket carry on.
 *
 * Link state: with no client the port is "link down" (`linkUp` false at start,
 * then `PortRx.link` on every connect and disconnect: the bridge flushes the port's
 * MACs and stops sending to it while down); frames sent while no client is
 * connected are refused (-ENOTCONN) and counted (`txNoClient`).
 *
 * Sending: a frame is copied with its length header into a preallocated transmit
 * buffer, and the buffer is handed to the socket once per event-loop turn (one
 * write for every frame of a flood or batch). The buffer is the queue bound: while
 * the client does not read (a slow or stopped VM), frames that do not fit are
 * dropped and counted (`txQueueFull`, -EAGAIN) instead of queued without bound.
 *
 * `-netdev dgram` (one frame per AF_UNIX SOCK_DGRAM datagram) is not offered: Node's
 * core has no Unix datagram sockets (dgram is UDP only), so it would need native
 * code in @vswitch/netdev; stream covers QEMU 7.2+, passt and socket_vmnet.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, chmodSync, chownSync, constants as fsc, lstatSync, mkdirSync, statSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { constants as osc } from 'node:os';
import { dirname, resolve } from 'node:path';
import type { PortIo, PortRx } from '../port.js';
import { read32, write32 } from '../wire/bytes.js';

/** Largest frame accepted or sent: a 65535-byte IP packet + Ethernet header + one 802.1Q tag. */
export const SOCKET_MAX_FRAME = 65535 + 18;
/** Default transmit buffer (the per-client queue bound): ~170 full-size 1500-byte frames. */
export const SOCKET_TX_BUFFER = 256 * 1024;
/** sun_path is 108 bytes with its NUL. */
const SUN_PATH_MAX = 107;
/** Frames per batch handed to PortRx.batch. */
const BATCH = 256;
/** connect role: first retry after a failed or lost connection, doubling up to the maximum. */
export const RETRY_MIN_MS = 100;
export const RETRY_MAX_MS = 1000;

const ENOTCONN = osc.errno.ENOTCONN;
const EAGAIN = osc.errno.EAGAIN;
const EMSGSIZE = osc.errno.EMSGSIZE;

/** Where the deframer delivers frames; the same shape as the frame/batch half of PortRx. */
export interface FrameSink {
  frame(buf: Uint8Array, off: number, len: number): void;
  batch(buf: Uint8Array, offs: Int32Array, lens: Int32Array, count: number): void;
}

/**
 * Cuts a byte stream of [u32 big-endian length][frame] records into frames.
 * Whole frames inside a chunk are delivered in place (batched); a frame split
 * across chunks is assembled in a buffer allocated once. Nothing is allocated per
 * frame. After a bad length, `push` returns false and the stream is unusable until
 * `reset()` (the caller closes the connection).
 */
export class StreamDeframer {
  /** The offending length after `push` returned false. */
  badLength = -1;
  readonly #asm: Uint8Array;
  readonly #hdr = new Uint8Array(4);
  #hdrHave = 0;
  /** Length of the frame being assembled, or -1 while reading a header. */
  #need = -1;
  #have = 0;
  readonly #offs = new Int32Array(BATCH);
  readonly #lens = new Int32Array(BATCH);

  constructor(readonly maxFrame = SOCKET_MAX_FRAME) {
    this.#asm = new Uint8Array(maxFrame);
  }

  /** Bytes held for a frame or header not yet complete. */
  get pending(): number {
    return this.#need >= 0 ? 4 + this.#have : this.#hdrHave;
  }

  reset(): void {
    this.#hdrHave = 0;
    this.#need = -1;
    this.#have = 0;
    this.badLength = -1;
  }

  /** Feeds `chunk`; frames go to `sink` synchronously. False on a bad length. */
  push(chunk: Uint8Array, sink: FrameSink): boolean {
    if (this.badLength >= 0) return false;
    const end = chunk.length;
    let i = 0;
    // 1. Finish what the previous chunk left: a header, then perhaps a frame.
    if (this.#hdrHave > 0) {
      while (this.#hdrHave < 4 && i < end) this.#hdr[this.#hdrHave++] = chunk[i++];
      if (this.#hdrHave < 4) return true;
      this.#hdrHave = 0;
      const len = read32(this.#hdr, 0);
      if (len === 0 || len > this.maxFrame) return this.#bad(len);
      if (end - i >= len) {
        sink.frame(chunk, i, len);
        i += len;
      } else {
        this.#need = len;
        this.#have = 0;
      }
    }
    if (this.#need >= 0) {
      const take = Math.min(this.#need - this.#have, end - i);
      this.#asm.set(chunk.subarray(i, i + take), this.#have);
      this.#have += take;
      i += take;
      if (this.#have < this.#need) return true;
      const len = this.#need;
      this.#need = -1;
      this.#have = 0;
      sink.frame(this.#asm, 0, len);
    }
    // 2. Whole frames in place.
    const offs = this.#offs;
    const lens = this.#lens;
    let n = 0;
    while (end - i >= 4) {
      const len = read32(chunk, i);
      if (len === 0 || len > this.maxFrame) {
        if (n > 0) sink.batch(chunk, offs, lens, n);
        return this.#bad(len);
      }
      if (end - i - 4 < len) {
        // 3a. A frame that continues in the next chunk.
        if (n > 0) sink.batch(chunk, offs, lens, n);
        this.#need = len;
        this.#have = end - i - 4;
        this.#asm.set(chunk.subarray(i + 4, end), 0);
        return true;
      }
      offs[n] = i + 4;
      lens[n] = len;
      i += 4 + len;
      if (++n === BATCH) {
        sink.batch(chunk, offs, lens, n);
        n = 0;
      }
    }
    if (n > 0) sink.batch(chunk, offs, lens, n);
    // 3b. Part of a header.
    while (i < end) this.#hdr[this.#hdrHave++] = chunk[i++];
    return true;
  }

  #bad(len: number): false {
    this.badLength = len;
    this.#hdrHave = 0;
    this.#need = -1;
    this.#have = 0;
    return false;
  }
}

export interface SocketPortOptions {
  /** The Unix socket to listen on, or with `connect` to connect to (made absolute). */
  path: string;
  /** Connect to `path` (QEMU listens: server=on) instead of listening on it. */
  connect?: boolean;
  /** listen: mode of the socket file (default 0o600). */
  mode?: number;
  /** listen: owner/group of the socket file (e.g. an unprivileged QEMU's), when given. */
  owner?: number;
  group?: number;
  /** Transmit buffer bytes: the most a client that does not read can hold (default SOCKET_TX_BUFFER). */
  txBufferBytes?: number;
}

export interface SocketPortCounters {
  /** Connections that became the port's NIC (accepted, or made in the connect role). */
  connects: number;
  /** Those that went away (closed, reset, or closed by us for a bad frame). */
  disconnects: number;
  /** Connections closed at once because a client was already connected. */
  refused: number;
  /** Clients closed for a frame length of 0 or above the maximum. */
  badFrames: number;
  /** Frames not sent: no client connected. */
  txNoClient: number;
  /** Frames not sent: the client's transmit buffer was full (it does not read fast enough). */
  txQueueFull: number;
}

export class SocketPortError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

export class SocketIo implements PortIo {
  readonly kind = 'socket' as const;
  readonly path: string;
  readonly role: 'listen' | 'connect';
  readonly mode: number;
  readonly counters: SocketPortCounters = { connects: 0, disconnects: 0, refused: 0, badFrames: 0, txNoClient: 0, txQueueFull: 0 };
  readonly #server: Server | undefined;
  readonly #ino: number = -1;
  #retryMs = RETRY_MIN_MS;
  #retryTimer: NodeJS.Timeout | undefined;
  readonly #deframer = new StreamDeframer();
  #rx: PortRx | undefined;
  #client: Socket | undefined;
  /** Why the current client is being closed by us (bad frame), for the link-down reason. */
  #closeWhy = '';
  #closed = false;
  // Transmit buffer: [0, #head) handed to the socket (in flight until writableLength is 0),
  // [#head, #tail) waiting for the next flush.
  readonly #tx: Buffer;
  #head = 0;
  #tail = 0;
  #flushScheduled = false;
  readonly #flushFn = (): void => this.#flush();
  readonly #sink: FrameSink = {
    frame: (buf, off, len) => this.#rx?.frame(buf, off, len),
    batch: (buf, offs, lens, count) => this.#rx?.batch(buf, offs, lens, count),
  };

  constructor(readonly name: string, opts: SocketPortOptions) {
    const path = resolve(opts.path);
    this.path = path;
    this.mode = opts.mode ?? 0o600;
    this.#tx = Buffer.allocUnsafe(Math.max(opts.txBufferBytes ?? SOCKET_TX_BUFFER, 4 + SOCKET_MAX_FRAME));
    if (Buffer.byteLength(path) > SUN_PATH_MAX) {
      throw new SocketPortError('ENAMETOOLONG', `socket path ${path} is longer than ${SUN_PATH_MAX} bytes`);
    }
    this.role = opts.connect === true ? 'connect' : 'listen';
    if (this.role === 'connect') {
      this.#server = undefined;
      this.#dial();
      return;
    }
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    clearStale(path);
    const server = createServer((s) => this.#accept(s));
    // Bind errors arrive on the next tick (a listening check below turns them into a throw);
    // later ones (accept failing with EMFILE) must not take the daemon down.
    server.on('error', () => {});
    const old = process.umask(0o177);
    try {
      server.listen(path); // binds and listens synchronously for a Unix path
    } finally {
      process.umask(old);
    }
    if (!server.listening) {
      server.close();
      throw bindError(path);
    }
    try {
      // Mode first, while the file is still ours: once chowned to another user, changing its mode takes
      // CAP_FOWNER, which the daemon does not need otherwise (the systemd unit keeps CAP_CHOWN only).
      chmodSync(path, this.mode);
      if (opts.owner !== undefined || opts.group !== undefined) chownSync(path, opts.owner ?? -1, opts.group ?? -1);
      this.#ino = statSync(path).ino;
    } catch (e) {
      server.close();
      throw new SocketPortError((e as NodeJS.ErrnoException).code ?? 'EIO', `cannot set owner/mode of ${path}: ${(e as Error).message}`);
    }
    this.#server = server;
  }

  /** A client is connected (the link is up). */
  get connected(): boolean {
    return this.#client !== undefined && this.#closeWhy === '';
  }

  get linkUp(): boolean {
    return this.connected;
  }

  readonly linkDownReason = 'no client connected';

  start(rx: PortRx): void {
    this.#rx = rx;
  }

  send(buf: Uint8Array, off: number, len: number): number {
    return this.#queue(buf, off, len, buf, 0, 0);
  }

  send2(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    return this.#queue(a, aoff, alen, b, boff, blen);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    this.#client?.destroy();
    this.#client = undefined;
    if (this.#server === undefined) return; // connect role: the file is QEMU's
    this.#server.close(); // libuv unlinks the path of a listening pipe
    try {
      if (lstatSync(this.path).ino === this.#ino) unlinkSync(this.path);
    } catch { /* gone, as expected */ }
  }

  describe(): Record<string, string | number | boolean> {
    return {
      path: this.path,
      role: this.role,
      ...(this.role === 'listen' ? { mode: '0' + this.mode.toString(8).padStart(3, '0') } : {}),
      connected: this.connected,
      ...this.counters,
    };
  }

  #accept(s: Socket): void {
    if (this.#closed || this.#client !== undefined) {
      if (!this.#closed) this.counters.refused++;
      s.destroy();
      return;
    }
    this.#attach(s);
  }

  /** connect role: one attempt; a failed or lost connection schedules the next. */
  #dial(): void {
    this.#retryTimer = undefined;
    if (this.#closed) return;
    const s = createConnection(this.path);
    let attached = false;
    s.once('connect', () => {
      if (this.#closed) {
        s.destroy();
        return;
      }
      attached = true;
      this.#attach(s);
    });
    s.on('error', () => s.destroy());
    s.once('close', () => {
      if (this.#closed) return;
      // A connection that ended cleanly: retry soon (a restarted peer is usually back at
      // once). A failed attempt, or one we closed for a bad frame: back off.
      let wait = RETRY_MIN_MS;
      if (attached && this.#closeWhy === '') {
        this.#retryMs = RETRY_MIN_MS;
      } else {
        wait = this.#retryMs;
        this.#retryMs = Math.min(this.#retryMs * 2, RETRY_MAX_MS);
      }
      this.#retryTimer = setTimeout(() => this.#dial(), wait);
      this.#retryTimer.unref();
    });
  }

  #attach(s: Socket): void {
    this.#client = s;
    this.#closeWhy = '';
    this.#deframer.reset();
    this.#head = 0;
    this.#tail = 0;
    this.counters.connects++;
    s.on('data', (chunk: Buffer) => {
      if (this.#client !== s || this.#closeWhy !== '') return;
      if (!this.#deframer.push(chunk, this.#sink)) {
        this.counters.badFrames++;
        this.#closeWhy = `bad frame length ${this.#deframer.badLength} from the client: connection closed`;
        s.destroy();
      }
    });
    s.on('drain', () => {
      if (this.#client === s && this.#head === this.#tail && s.writableLength === 0) this.#head = this.#tail = 0;
    });
    s.on('error', () => s.destroy());
    s.on('close', () => {
      if (this.#client !== s) return;
      this.#client = undefined;
      this.counters.disconnects++;
      const why = this.#closeWhy || 'client disconnected';
      this.#closeWhy = '';
      if (!this.#closed) this.#rx?.link(false, why);
    });
    this.#rx?.link(true, 'client connected');
  }

  #queue(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    const s = this.#client;
    if (s === undefined || this.#closeWhy !== '' || !s.writable) {
      this.counters.txNoClient++;
      return -ENOTCONN;
    }
    const len = alen + blen;
    if (len === 0 || len > SOCKET_MAX_FRAME) return -EMSGSIZE;
    const tx = this.#tx;
    let at = this.#tail;
    if (at + 4 + len > tx.length) {
      if (s.writableLength !== 0) {
        this.counters.txQueueFull++;
        return -EAGAIN;
      }
      // Nothing in flight: move what waits for the flush to the front.
      tx.copyWithin(0, this.#head, this.#tail);
      this.#tail -= this.#head;
      this.#head = 0;
      at = this.#tail;
      if (at + 4 + len > tx.length) {
        this.counters.txQueueFull++;
        return -EAGAIN;
      }
    }
    write32(tx, at, len);
    tx.set(a.subarray(aoff, aoff + alen), at + 4);
    if (blen > 0) tx.set(b.subarray(boff, boff + blen), at + 4 + alen);
    this.#tail = at + 4 + len;
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(this.#flushFn);
    }
    return len;
  }

  #flush(): void {
    this.#flushScheduled = false;
    const s = this.#client;
    if (s === undefined || this.#head === this.#tail) return;
    // The socket keeps a reference to these bytes (no copy) until written: they are
    // not touched again until writableLength is back to 0.
    s.write(this.#tx.subarray(this.#head, this.#tail));
    this.#head = this.#tail;
    if (s.writableLength === 0) this.#head = this.#tail = 0;
  }
}

/** Removes a socket file no process answers on; refuses a live one or a non-socket. */
function clearStale(path: string): void {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new SocketPortError('EEXIST', `${path} exists and is not a socket`);
  const r = probe(path);
  if (r === 'ENOENT') return;
  if (r === 'ECONNREFUSED') {
    unlinkSync(path);
    return;
  }
  if (r === 'live') throw new SocketPortError('EADDRINUSE', `another process is listening on ${path}`);
  throw new SocketPortError('EADDRINUSE', `cannot tell whether ${path} is in use (${r}); remove it if it is stale`);
}

/**
 * Connects to `path` from a child process (Node has no synchronous connect; this
 * runs only when the file exists at start, i.e. after a crash or while another
 * daemon runs): 'live', or the error code of the connect.
 */
function probe(path: string): string {
  const script = "const c=require('net').connect(process.argv[1]);" +
    "c.on('connect',()=>{process.stdout.write('live');process.exit(0)});" +
    "c.on('error',(e)=>{process.stdout.write(e.code||'error');process.exit(0)});";
  const r = spawnSync(process.execPath, ['-e', script, path], { encoding: 'utf8', timeout: 3000 });
  return r.stdout?.trim() || (r.error ? `probe failed: ${r.error.message}` : `probe exited ${r.status}`);
}

function bindError(path: string): SocketPortError {
  try {
    accessSync(dirname(path), fsc.W_OK | fsc.X_OK);
  } catch (e) {
    return new SocketPortError('EACCES', `cannot listen on ${path}: ${(e as Error).message}`);
  }
  return new SocketPortError('EADDRINUSE', `cannot listen on ${path} (address in use?)`);
}
