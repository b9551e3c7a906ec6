/*
 * A host behind a socket port, in the test process: it speaks QEMU's `-netdev stream`
 * protocol (u32 big-endian length + Ethernet frame), answers ARP and ICMP echo for
 * its address, and records every frame it receives.
 *
 * Roles, as QEMU's: 'client' (server=off) connects to the daemon's socket and, with
 * `reconnectMs`, tries again after losing it (QEMU 8.2+ reconnect=); 'server'
 * (server=on) listens, and takes the newest connection (the daemon in connect role).
 *
 * The framing is parsed here independently of packages/switch's deframer.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { rmSync } from 'node:fs';
import { sleep, waitFor } from './run.js';

export interface StreamHostOptions {
  /** 'aa:bb:cc:dd:ee:ff' */
  mac: string;
  /** Answer ARP / ICMP echo for this address. */
  ip?: string;
  role?: 'client' | 'server';
  /** client: retry interval after a failed or lost connection; 0 = never. */
  reconnectMs?: number;
}

export interface Received {
  at: number;
  frame: Buffer;
}

export function macBytes(mac: string): Buffer {
  return Buffer.from(mac.split(':').map((h) => parseInt(h, 16)));
}

export function ipBytes(ip: string): Buffer {
  return Buffer.from(ip.split('.').map(Number));
}

export function macText(b: Buffer, off: number): string {
  return [...b.subarray(off, off + 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** Ethernet header facts: tag VID (or undefined) and the inner ethertype / payload offset. */
export function ethInfo(f: Buffer): { dst: string; src: string; vid?: number; type: number; l3: number } {
  let type = f.readUInt16BE(12);
  let l3 = 14;
  let vid: number | undefined;
  if (type === 0x8100 && f.length >= 18) {
    vid = f.readUInt16BE(14) & 0xfff;
    type = f.readUInt16BE(16);
    l3 = 18;
  }
  return { dst: macText(f, 0), src: macText(f, 6), vid, type, l3 };
}

function checksum(b: Buffer, off: number, len: number): number {
  let sum = 0;
  for (let i = 0; i + 1 < len; i += 2) sum += b.readUInt16BE(off + i);
  if (len & 1) sum += b[off + len - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export function record(frame: Buffer): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt32BE(frame.length);
  return Buffer.concat([h, frame]);
}

export class StreamHost {
  readonly received: Received[] = [];
  rxFrames = 0;
  txFrames = 0;
  arpReplies = 0;
  echoReplies = 0;
  connects = 0;
  closes = 0;
  /** Times (ms since epoch) the connection was lost / made. */
  readonly events: { at: number; what: 'up' | 'down' }[] = [];
  #sock: Socket | undefined;
  #server: Server | undefined;
  #buf: Buffer = Buffer.alloc(0);
  #stopped = false;
  #held = false;
  #redialDue = false;
  readonly #mac: Buffer;
  readonly #ip: Buffer | undefined;

  constructor(readonly path: string, readonly opts: StreamHostOptions) {
    this.#mac = macBytes(opts.mac);
    this.#ip = opts.ip ? ipBytes(opts.ip) : undefined;
  }

  get connected(): boolean {
    return this.#sock !== undefined && !this.#sock.destroyed;
  }

  /** client: first attempt now; server: listen now. */
  start(): this {
    if ((this.opts.role ?? 'client') === 'server') {
      rmSync(this.path, { force: true });
      this.#server = createServer((s) => {
        this.#sock?.destroy();
        this.#attach(s);
      });
      this.#server.listen(this.path);
    } else {
      this.#dial();
    }
    return this;
  }

  async waitConnected(timeoutMs = 10_000): Promise<void> {
    await waitFor(`stream host on ${this.path} connected`, () => this.connected, { timeoutMs, intervalMs: 20 });
  }

  /** Frames received from `mac` (optionally only those with this VID / untagged with vid=null). */
  from(mac: string, vid?: number | null): Received[] {
    return this.received.filter((r) => {
      const e = ethInfo(r.frame);
      return e.src === mac && (vid === undefined || (vid === null ? e.vid === undefined : e.vid === vid));
    });
  }

  send(frame: Buffer): boolean {
    if (!this.connected) return false;
    this.#sock!.write(record(frame));
    this.txFrames++;
    return true;
  }

  /** Raw bytes, e.g. a bad length header. */
  sendRaw(bytes: Buffer): void {
    this.#sock?.write(bytes);
  }

  /** Drops the current connection (a client with reconnectMs comes back). */
  drop(): void {
    this.#sock?.destroy();
  }

  /**
   * A client does not redial while held: a test can look at the daemon's view of
   * the lost connection without racing the reconnect (a loaded machine may take
   * longer than reconnectMs to answer one `show`). `release` dials if one was due.
   */
  holdReconnect(): void {
    this.#held = true;
  }

  release(): void {
    this.#held = false;
    if (this.#redialDue) {
      this.#redialDue = false;
      this.#dial();
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#sock?.destroy();
    if (this.#server) await new Promise((r) => this.#server!.close(r));
    await sleep(10);
  }

  #dial(): void {
    if (this.#stopped) return;
    const s = createConnection(this.path);
    s.once('connect', () => this.#attach(s));
    s.on('error', () => s.destroy());
    s.once('close', () => {
      if (this.#stopped || !this.opts.reconnectMs) return;
      setTimeout(() => {
        if (this.#held) this.#redialDue = true;
        else this.#dial();
      }, this.opts.reconnectMs);
    });
  }

  #attach(s: Socket): void {
    this.#sock = s;
    this.#buf = Buffer.alloc(0);
    this.connects++;
    this.events.push({ at: Date.now(), what: 'up' });
    s.on('error', () => s.destroy());
    s.on('close', () => {
      if (this.#sock === s) {
        this.#sock = undefined;
        this.closes++;
        this.events.push({ at: Date.now(), what: 'down' });
      }
    });
    s.on('data', (chunk: Buffer) => {
      this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
      while (this.#buf.length >= 4) {
        const len = this.#buf.readUInt32BE(0);
        if (this.#buf.length < 4 + len) break;
        const frame = Buffer.from(this.#buf.subarray(4, 4 + len));
        this.#buf = this.#buf.subarray(4 + len);
        this.#frame(frame);
      }
    });
  }

  #frame(f: Buffer): void {
    this.rxFrames++;
    if (this.received.length < 20_000) this.received.push({ at: Date.now(), frame: f });
    if (this.#ip === undefined || f.length < 14) return;
    const e = ethInfo(f);
    if (e.vid !== undefined) return; // an access-port host: untagged only
    const p = e.l3;
    if (e.type === 0x0806 && f.length >= p + 28 && f.readUInt16BE(p + 6) === 1 && f.subarray(p + 24, p + 28).equals(this.#ip)) {
      const r = Buffer.alloc(42);
      f.copy(r, 0, 6, 12); // dst = requester
      this.#mac.copy(r, 6);
      r.writeUInt16BE(0x0806, 12);
      r.writeUInt16BE(1, 14); // Ethernet
      r.writeUInt16BE(0x0800, 16);
      r[18] = 6;
      r[19] = 4;
      r.writeUInt16BE(2, 20); // reply
      this.#mac.copy(r, 22);
      this.#ip.copy(r, 28);
      f.copy(r, 32, p + 8, p + 18); // target = sender MAC + IP
      if (this.send(r)) this.arpReplies++;
      return;
    }
    if (e.type === 0x0800 && f.length >= p + 20) {
      const ihl = (f[p] & 0x0f) * 4;
      const total = f.readUInt16BE(p + 2);
      if (f[p + 9] !== 1 || !f.subarray(p + 16, p + 20).equals(this.#ip) || f[p + ihl] !== 8) return;
      const r = Buffer.from(f.subarray(0, p + total));
      f.copy(r, 0, 6, 12);
      this.#mac.copy(r, 6);
      f.copy(r, p + 12, p + 16, p + 20); // src = us
      f.copy(r, p + 16, p + 12, p + 16); // dst = them (swapping keeps the IP checksum)
      r[p + 8] = 64;
      r.writeUInt16BE(0, p + 10);
      r.writeUInt16BE(checksum(r, p, ihl), p + 10);
      r[p + ihl] = 0; // echo reply
      r.writeUInt16BE(0, p + ihl + 2);
      r.writeUInt16BE(checksum(r, p + ihl, total - ihl), p + ihl + 2);
      if (this.send(r)) this.echoReplies++;
    }
  }
}

/**
 * The longest time without a ping reply in a busybox ping run (`seq=N ... time=T ms`
 * lines), estimated as each reply's arrival = seq * interval + rtt. Also the seqs
 * that never got a reply between the first and the last answered.
 */
export function pingGap(out: string, intervalSec: number): { gapMs: number; lost: number; replies: number; lastSeq: number } {
  const rs = [...out.matchAll(/seq=(\d+) ttl=\d+ time=([\d.]+) ms/g)].map((m) => ({ seq: Number(m[1]), rtt: Number(m[2]) }));
  if (rs.length < 2) return { gapMs: Infinity, lost: 0, replies: rs.length, lastSeq: rs.at(-1)?.seq ?? -1 };
  const arrivals = rs.map((r) => r.seq * intervalSec * 1000 + r.rtt).sort((a, b) => a - b);
  let gap = 0;
  for (let i = 1; i < arrivals.length; i++) gap = Math.max(gap, arrivals[i] - arrivals[i - 1]);
  const seqs = new Set(rs.map((r) => r.seq));
  const first = Math.min(...seqs);
  const last = Math.max(...seqs);
  let lost = 0;
  for (let s = first; s <= last; s++) if (!seqs.has(s)) lost++;
  return { gapMs: Math.round(gap), lost, replies: rs.length, lastSeq: last };
}
