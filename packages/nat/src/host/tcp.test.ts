import net from 'node:net';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { parseIp4 } from '@vswitch/switch';
import { HostBudget } from './types.js';
import { HostTcp, type HostTcpOptions } from './tcp.js';
import { onesSum as fastSum } from './tcp-sum.js';
import { RCVBUF_AUTO, describeRcvbuf, parseRcvbuf, rcvbufOf, setRcvbuf } from './socket-rcvbuf.js';

// ---- A fake VM: builds TCP/IPv4 segments and keeps what the engine sends it ----
//
// Checksums are computed and verified by this file's own code, not the engine's.

const SYN = 0x02;
const ACK = 0x10;
const FIN = 0x01;
const RST = 0x04;
const PSH = 0x08;

const VM = parseIp4('10.0.10.5');
const LO = parseIp4('127.0.0.1');
const clock = (): number => performance.now();

function w16(b: Uint8Array, o: number, v: number): void { b[o] = (v >>> 8) & 0xff; b[o + 1] = v & 0xff; }
function w32(b: Uint8Array, o: number, v: number): void { w16(b, o, v >>> 16); w16(b, o + 2, v & 0xffff); }
const r16 = (b: Uint8Array, o: number): number => (b[o] << 8) | b[o + 1];
const r32 = (b: Uint8Array, o: number): number => r16(b, o) * 0x10000 + r16(b, o + 2);
const le16 = (b: Uint8Array, o: number): number => b[o] | (b[o + 1] << 8);

/** One's-complement sum of b[from..to) (odd tail padded), plus acc, folded to 16 bits. */
function onesSum(b: Uint8Array, from: number, to: number, acc = 0): number {
  let s = acc;
  for (let i = from; i < to; i += 2) s += b[i] * 256 + (i + 1 < to ? b[i + 1] : 0);
  while (s > 0xffff) s = (s % 0x10000) + Math.floor(s / 0x10000);
  return s;
}
const pseudo = (src: number, dst: number, proto: number, len: number): number =>
  Math.floor(src / 0x10000) + (src % 0x10000) + Math.floor(dst / 0x10000) + (dst % 0x10000) + proto + len;
const seqAdd = (a: number, n: number): number => (a + n) >>> 0;

interface Vnet { flags: number; gsoType: number; hdrLen: number; gsoSize: number; csumStart: number; csumOffset: number }

interface Frame {
  raw: Buffer;
  vnet: Vnet | undefined;
  proto: number;
  src: number;
  dst: number;
  id: number;
  df: boolean;
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  flags: number;
  win: number;
  hl: number;
  mss: number | undefined;
  ws: number | undefined;
  optKinds: number[];
  payload: Buffer;
  icmpType: number;
  icmpCode: number;
  quote: Buffer;
  t: number;
  /** Sent from memory a host socket read into (onread), not from a copy. */
  fromRead: boolean;
  /** Where the IPv4 header was in the buffer handed to toVm. */
  ipOff: number;
}

interface SendSeg {
  sport: number;
  dport: number;
  dst?: number;
  src?: number;
  seq: number;
  ack?: number;
  flags: number;
  win?: number;
  mss?: number;
  ws?: number;
  sackPerm?: boolean;
  ts?: boolean;
  payload?: Uint8Array;
  /** Checksum-partial: the field holds the pseudo-header sum, and the engine is told so. */
  partial?: boolean;
  badChecksum?: boolean;
}

class FakeVm {
  readonly frames: Frame[] = [];
  readonly errors: string[] = [];
  readonly tcp: HostTcp;
  readonly budget: HostBudget;
  readonly conns = new Map<number, VmConn>();
  readonly events: { event: string; [k: string]: unknown }[] = [];
  /** Return true to drop a frame (the TAP's queue was full): recorded in frames, never seen by a VmConn. */
  drop: (f: Frame) => boolean = () => false;
  readonly #buf = Buffer.alloc(14 + 65535 + 64);
  #inbox: Frame[] = [];
  #scheduled = false;
  #ipId = 1;
  readonly mss: number;
  readonly gso: boolean;
  /** What the engine's onread saw (default connect with onread): the memory handed to the sockets, reads, refusals. */
  readonly readMemory = new Set<ArrayBufferLike>();
  reads = 0;
  readBytes = 0;
  readsRefused = 0;

  /**
   * `onread: false`: the default connect ignores the engine's onread (its sockets
   * emit 'data', as accepted ones do). With it, the engine's onread is passed
   * through, watched.
   */
  constructor(opts: Partial<HostTcpOptions> & { onread?: boolean } = {}) {
    this.mss = opts.mss ?? 1460;
    this.gso = opts.gso ?? false;
    this.budget = opts.budget ?? new HostBudget();
    const host = (ip: number): string => `${ip >>> 24}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}`;
    const withOnread = opts.onread ?? true;
    const watched = (o: net.OnReadOpts): net.OnReadOpts => ({
      buffer: () => {
        const b = (o.buffer as () => Uint8Array)();
        expect(b.length).toBeGreaterThan(0);
        this.readMemory.add(b.buffer);
        return b;
      },
      callback: (n, buf) => {
        this.reads++;
        this.readBytes += n;
        const more = o.callback(n, buf);
        if (!more) this.readsRefused++;
        return more;
      },
    });
    this.tcp = new HostTcp({
      clock, gso: this.gso, mss: this.mss, budget: this.budget,
      connect: opts.connect ?? ((ip, port, onread) => net.connect({ host: host(ip), port, ...(withOnread ? { onread: watched(onread) } : {}) })),
      onEvent: (e) => this.events.push(e),
      toVm: (buf, ipOff, ipLen, vnet) => this.#onFrame(buf, ipOff, ipLen, vnet),
      tuning: opts.tuning,
    });
    engines.push(this);
  }

  /** Builds one segment from the VM (checksums here) and hands it to the engine. */
  send(p: SendSeg): void {
    const b = this.#buf;
    b.fill(0xee);
    const ip = 14;
    const opts: number[] = [];
    if (p.mss !== undefined) opts.push(2, 4, p.mss >>> 8, p.mss & 0xff);
    if (p.sackPerm) opts.push(4, 2);
    if (p.ts) opts.push(8, 10, 0, 0, 0, 1, 0, 0, 0, 0);
    if (p.ws !== undefined) opts.push(1, 3, 3, p.ws);
    while (opts.length % 4 !== 0) opts.push(0);
    const hl = 20 + opts.length;
    const payload = p.payload ?? new Uint8Array(0);
    const total = 20 + hl + payload.length;
    const src = p.src ?? VM;
    const dst = p.dst ?? LO;
    b[ip] = 0x45;
    b[ip + 1] = 0;
    w16(b, ip + 2, total);
    w16(b, ip + 4, this.#ipId++ & 0xffff);
    w16(b, ip + 6, 0x4000);
    b[ip + 8] = 64;
    b[ip + 9] = 6;
    w16(b, ip + 10, 0);
    w32(b, ip + 12, src);
    w32(b, ip + 16, dst);
    w16(b, ip + 10, 0xffff - onesSum(b, ip, ip + 20));
    const th = ip + 20;
    w16(b, th, p.sport);
    w16(b, th + 2, p.dport);
    w32(b, th + 4, p.seq);
    w32(b, th + 8, p.ack ?? 0);
    b[th + 12] = (hl / 4) << 4;
    b[th + 13] = p.flags;
    w16(b, th + 14, p.win ?? 65535);
    w16(b, th + 16, 0);
    w16(b, th + 18, 0);
    b.set(opts, th + 20);
    b.set(payload, th + hl);
    const ps = pseudo(src, dst, 6, hl + payload.length);
    if (p.partial) w16(b, th + 16, onesSum(new Uint8Array(0), 0, 0, ps));
    else w16(b, th + 16, 0xffff - onesSum(b, th, th + hl + payload.length, ps));
    if (p.badChecksum) b[th + 16] ^= 0x5a;
    // Four bytes of Ethernet padding after the packet: the engine must go by Total Length.
    this.tcp.fromVm(b, ip, total + 4, p.partial === true);
  }

  #onFrame(buf: Buffer, ipOff: number, ipLen: number, vnet: boolean): void {
    const raw = Buffer.from(buf.subarray(ipOff, ipOff + ipLen));
    const f = this.#parse(raw, vnet ? Buffer.from(buf.subarray(ipOff - 24, ipOff - 14)) : undefined);
    f.fromRead = this.readMemory.has(buf.buffer);
    f.ipOff = ipOff;
    this.frames.push(f);
    if (this.drop(f)) return;
    this.#inbox.push(f);
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => this.#process());
    }
  }

  #parse(raw: Buffer, vh: Buffer | undefined): Frame {
    const err = (m: string): void => { this.errors.push(m); };
    const total = r16(raw, 2);
    if (total !== raw.length) err(`ip total ${total} != ${raw.length}`);
    if (raw.length > 65535) err('ip too long');
    if (raw[0] !== 0x45) err('ip version/ihl');
    if (onesSum(raw, 0, 20) !== 0xffff) err('ip header checksum');
    const src = r32(raw, 12);
    const dst = r32(raw, 16);
    const proto = raw[9];
    const f: Frame = {
      raw, vnet: undefined, proto, src, dst, id: r16(raw, 4), df: (r16(raw, 6) & 0x4000) !== 0,
      sport: 0, dport: 0, seq: 0, ack: 0, flags: 0, win: 0, hl: 0, mss: undefined, ws: undefined, optKinds: [],
      payload: Buffer.alloc(0), icmpType: -1, icmpCode: -1, quote: Buffer.alloc(0), t: clock(), fromRead: false, ipOff: 0,
    };
    if (proto === 1) {
      if (vh !== undefined) err('icmp with vnet');
      if (onesSum(raw, 20, total) !== 0xffff) err('icmp checksum');
      f.icmpType = raw[20];
      f.icmpCode = raw[21];
      f.quote = raw.subarray(28);
      return f;
    }
    if (proto !== 6) {
      err(`proto ${proto}`);
      return f;
    }
    const th = 20;
    f.sport = r16(raw, th);
    f.dport = r16(raw, th + 2);
    f.seq = r32(raw, th + 4);
    f.ack = r32(raw, th + 8);
    f.hl = (raw[th + 12] >>> 4) * 4;
    f.flags = raw[th + 13];
    f.win = r16(raw, th + 14);
    for (let p = th + 20; p < th + f.hl;) {
      const k = raw[p];
      if (k === 0) break;
      if (k === 1) { p++; continue; }
      f.optKinds.push(k);
      if (k === 2) f.mss = r16(raw, p + 2);
      if (k === 3) f.ws = raw[p + 2];
      p += raw[p + 1];
    }
    f.payload = raw.subarray(th + f.hl);
    const tl = total - 20;
    const ps = pseudo(src, dst, 6, tl);
    if (vh === undefined) {
      if (onesSum(raw, th, total, ps) !== 0xffff) err(`tcp checksum seq=${f.seq}`);
    } else {
      const v: Vnet = {
        flags: vh[0], gsoType: vh[1], hdrLen: le16(vh, 2), gsoSize: le16(vh, 4), csumStart: le16(vh, 6), csumOffset: le16(vh, 8),
      };
      f.vnet = v;
      // Partial: the field is the folded pseudo-header sum, not complemented...
      if (r16(raw, th + 16) !== onesSum(new Uint8Array(0), 0, 0, ps)) err('partial checksum field');
      // ...and completing it as a NIC would (complement of the sum from csum_start) gives the full checksum.
      const completed = 0xffff - onesSum(raw, th, total);
      const zeroed = Buffer.from(raw);
      w16(zeroed, th + 16, 0);
      const full = 0xffff - onesSum(zeroed, th, total, ps);
      if (completed !== full) err('completed checksum differs from the full one');
      w16(zeroed, th + 16, completed);
      if (onesSum(zeroed, th, total, ps) !== 0xffff) err('completed checksum does not verify');
    }
    return f;
  }

  #process(): void {
    this.#scheduled = false;
    const inbox = this.#inbox;
    this.#inbox = [];
    const touched = new Set<VmConn>();
    for (const f of inbox) {
      const c = this.conns.get(f.dport);
      if (c === undefined || f.proto !== 6) continue;
      c.onFrame(f);
      touched.add(c);
    }
    for (const c of touched) c.afterBatch();
  }

  dataFrames(port?: number): Frame[] {
    return this.frames.filter((f) => f.proto === 6 && f.payload.length > 0 && (port === undefined || f.dport === port));
  }
}

/** The VM's side of one connection: a small TCP endpoint driven by the frames the engine sends. */
class VmConn {
  rcvNxt = 0;
  sndNxt: number;
  sndUna: number;
  peerIss = -1;
  peerWnd = 0;
  peerWs = 0;
  readonly chunks: Buffer[] = [];
  rcvBytes = 0;
  /** Our window field (unscaled value as sent). */
  window: number;
  /** Reply to data, FIN and window probes by ourselves. */
  auto = true;
  finReceived = false;
  rstReceived = false;
  readonly frames: Frame[] = [];
  #ackNeeded = false;
  #pending: Buffer = Buffer.alloc(0);
  #finQueued = false;
  #finSent = false;

  constructor(
    readonly vm: FakeVm,
    readonly port: number,
    readonly dst: number,
    readonly dport: number,
    readonly opts: { iss?: number; ws?: number | null; mss?: number; window?: number; partial?: boolean; segSize?: number } = {},
  ) {
    this.sndNxt = opts.iss ?? 0xfffff000; // close to the wrap, on purpose
    this.sndUna = this.sndNxt;
    this.window = opts.window ?? 65535;
    vm.conns.set(port, this);
  }

  get data(): Buffer { return Buffer.concat(this.chunks); }

  seg(flags: number, extra: Partial<SendSeg> = {}): void {
    this.vm.send({ sport: this.port, dport: this.dport, dst: this.dst, seq: this.sndNxt, ack: this.rcvNxt, flags, win: this.window, ...extra });
  }

  syn(): void {
    const ws = this.opts.ws === undefined ? 7 : this.opts.ws;
    this.vm.send({
      sport: this.port, dport: this.dport, dst: this.dst, seq: this.sndNxt, flags: SYN, win: this.window,
      mss: this.opts.mss ?? 1460, sackPerm: true, ts: true, ...(ws === null ? {} : { ws }),
    });
  }

  ack(): void { this.seg(ACK); }

  onFrame(f: Frame): void {
    this.frames.push(f);
    if (f.flags & RST) {
      this.rstReceived = true;
      return;
    }
    if (f.flags & SYN) {
      this.peerIss = f.seq;
      this.rcvNxt = seqAdd(f.seq, 1);
      if (f.flags & ACK) {
        // Our SYN was answered.
        this.sndNxt = seqAdd(this.sndNxt, 1);
        this.sndUna = this.sndNxt;
      }
      this.peerWs = f.ws !== undefined && this.opts.ws !== null ? f.ws : 0;
      this.peerWnd = f.win;
      return;
    }
    if (f.flags & ACK) {
      const acked = (f.ack - this.sndUna) | 0;
      if (acked > 0 && ((f.ack - this.sndNxt) | 0) <= 0) {
        this.#pending = this.#pending.subarray(Math.min(acked, this.#pending.length));
        this.sndUna = f.ack;
      }
      this.peerWnd = f.win << this.peerWs;
    }
    const len = f.payload.length;
    if (len > 0 && f.seq === this.rcvNxt) {
      this.chunks.push(Buffer.from(f.payload));
      this.rcvBytes += len;
      this.rcvNxt = seqAdd(this.rcvNxt, len);
      this.#ackNeeded = true;
    } else if (len > 0 || f.flags & FIN) {
      this.#ackNeeded = true; // duplicate or out of order: ACK where we are
    } else if (f.seq === seqAdd(this.rcvNxt, -1)) {
      this.#ackNeeded = true; // a window probe
    }
    if (f.flags & FIN && seqAdd(f.seq, len) === this.rcvNxt && !this.finReceived) {
      this.finReceived = true;
      this.rcvNxt = seqAdd(this.rcvNxt, 1);
    }
  }

  afterBatch(): void {
    if (this.#ackNeeded && this.auto) {
      this.#ackNeeded = false;
      this.ack();
    }
    this.pump();
  }

  /** Queues data (and optionally a FIN after it), sent as the engine's window allows. */
  write(data: Buffer, fin = false): void {
    this.#pending = Buffer.concat([this.#pending, data]);
    this.#finQueued ||= fin;
    this.pump();
  }

  pump(): void {
    const seg = this.opts.segSize ?? this.opts.mss ?? 1460;
    for (;;) {
      const inFlight = (this.sndNxt - this.sndUna) | 0;
      const unsent = this.#pending.length - inFlight;
      if (unsent <= 0) break;
      const room = this.peerWnd - inFlight;
      if (room <= 0) break;
      const n = Math.min(seg, unsent, room);
      this.seg(ACK | PSH, { payload: this.#pending.subarray(inFlight, inFlight + n), partial: this.opts.partial });
      this.sndNxt = seqAdd(this.sndNxt, n);
    }
    if (this.#finQueued && !this.#finSent && this.#pending.length === ((this.sndNxt - this.sndUna) | 0)) {
      this.#finSent = true;
      this.seg(FIN | ACK);
      this.sndNxt = seqAdd(this.sndNxt, 1);
    }
  }

  /** Everything written was acknowledged. */
  get drained(): boolean { return this.#pending.length === 0 && this.sndUna === this.sndNxt; }
}

// ---- Host side: a real server on 127.0.0.1 ----

interface ServerConn {
  sock: net.Socket;
  chunks: Buffer[];
  bytes: number;
  ended: boolean;
  closed: boolean;
  error: string;
}

interface TestServer {
  port: number;
  conns: ServerConn[];
  server: net.Server;
}

const engines: FakeVm[] = [];
const servers: net.Server[] = [];
const sockets: net.Socket[] = [];

afterEach(async () => {
  for (const e of engines.splice(0)) e.tcp.close();
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(servers.splice(0).map((s) => new Promise<void>((resolve) => {
    s.close(() => resolve());
    (s as net.Server & { closeAllConnections?: () => void }).closeAllConnections?.();
  })));
});

async function startServer(opts: net.ServerOpts = {}, onConn?: (s: net.Socket) => void): Promise<TestServer> {
  const conns: ServerConn[] = [];
  const server = net.createServer({ allowHalfOpen: true, ...opts }, (sock) => {
    const c: ServerConn = { sock, chunks: [], bytes: 0, ended: false, closed: false, error: '' };
    conns.push(c);
    sockets.push(sock);
    sock.on('data', (d: Buffer) => { c.chunks.push(d); c.bytes += d.length; });
    sock.on('end', () => { c.ended = true; });
    sock.on('error', (e: NodeJS.ErrnoException) => { c.error = e.code ?? e.message; });
    sock.on('close', () => { c.closed = true; });
    onConn?.(sock);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return { port: (server.address() as net.AddressInfo).port, conns, server };
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', () => resolve()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

let nextPort = 40000;

/** VM connects to the test server: SYN, SYN-ACK, ACK; returns both ends. */
async function open(vm: FakeVm, srv: TestServer, opts: ConstructorParameters<typeof VmConn>[4] = {}): Promise<{ vc: VmConn; sc: ServerConn }> {
  const before = srv.conns.length;
  const vc = new VmConn(vm, nextPort++, LO, srv.port, opts);
  vc.syn();
  await until(() => vc.peerIss >= 0, 'SYN-ACK');
  vc.ack();
  await until(() => srv.conns.length > before, 'server accept');
  return { vc, sc: srv.conns[srv.conns.length - 1] };
}

const state = (vm: FakeVm, port: number): string => vm.tcp.sessions(clock()).find((s) => s.inside.endsWith(`:${port}`))?.state ?? 'gone';

// ---- Tests ----

describe('HostTcp handshake', () => {
  it('answers the SYN only once the host connect succeeded, with MSS and window scale, absorbing retransmissions', async () => {
    const srv = await startServer();
    let connectAt = 0;
    // A real socket whose connect starts 100 ms late: nothing may reach the VM before.
    const vm = new FakeVm({
      connect: (_ip, port) => {
        const s = new net.Socket();
        setTimeout(() => { connectAt = clock(); s.connect(port, '127.0.0.1'); }, 100);
        return s;
      },
    });
    const vc = new VmConn(vm, 40001, LO, srv.port, { iss: 1000 });
    vc.syn();
    vc.syn(); // retransmission while connecting: absorbed
    expect(state(vm, 40001)).toBe('syn_sent');
    await sleep(60);
    expect(vm.frames).toHaveLength(0);
    vc.syn();
    await until(() => vm.frames.length > 0, 'SYN-ACK');
    await sleep(20);
    expect(vm.frames).toHaveLength(1);
    const sa = vm.frames[0];
    expect(sa.t).toBeGreaterThanOrEqual(connectAt);
    expect(sa.flags).toBe(SYN | ACK);
    expect(sa.ack).toBe(1001);
    expect(sa.src).toBe(LO);
    expect(sa.dst).toBe(VM);
    expect(sa.sport).toBe(srv.port);
    expect(sa.dport).toBe(40001);
    expect(sa.mss).toBe(1460);
    expect(sa.ws).toBe(7);
    expect(sa.optKinds.sort()).toEqual([2, 3]); // no SACK-permitted, no timestamps
    expect(sa.win).toBe(65535);
    expect(sa.df).toBe(true);
    expect(state(vm, 40001)).toBe('syn_received');

    // Our SYN-ACK was lost: the VM's retransmitted SYN gets it again.
    vc.rcvNxt = 0;
    vc.sndNxt = 1000;
    vc.syn();
    expect(vm.frames).toHaveLength(2);
    expect(vm.frames[1].flags).toBe(SYN | ACK);
    expect(vm.frames[1].seq).toBe(sa.seq);

    vc.sndNxt = 1001;
    vc.rcvNxt = seqAdd(sa.seq, 1);
    vc.ack();
    expect(state(vm, 40001)).toBe('established');
    await until(() => srv.conns.length === 1, 'server accept');
    const s = vm.tcp.sessions(clock())[0];
    expect(s).toMatchObject({ proto: 'tcp', direction: 'out', inside: '10.0.10.5:40001', remote: `127.0.0.1:${srv.port}`, state: 'established' });
    expect(s.outside).toBe(`127.0.0.1:${srv.conns[0].sock.remotePort}`);
    expect(vm.tcp.counters.opened).toBe(1);
    expect(vm.errors).toEqual([]);
  });

  it('announces no window scale to a VM that offered none, and the MSS is the smaller one', async () => {
    const srv = await startServer();
    const vm = new FakeVm({ mss: 1400 });
    const { vc, sc } = await open(vm, srv, { ws: null, mss: 1200 });
    const sa = vc.frames[0];
    expect(sa.ws).toBeUndefined();
    expect(sa.mss).toBe(1400);
    sc.sock.write(randomBytes(20_000));
    await until(() => vc.rcvBytes === 20_000, 'data');
    for (const f of vm.dataFrames()) expect(f.payload.length).toBeLessThanOrEqual(1200);
    // Without scaling the window field is bytes, at most 65535.
    expect(vc.frames.at(-1)?.win).toBeLessThanOrEqual(65535);
    expect(vm.errors).toEqual([]);
  });
});

// Host data through both socket paths: onread (the socket reads into the engine's
// blocks) and 'data' events (copied in, as for port forwards).
for (const onread of [true, false]) {
  const path = onread ? 'onread' : "'data' events";

  describe(`HostTcp data (${path})`, () => {
    it('carries 1 MB each way with complete checksums and segments of at most one MSS (gso off)', async () => {
      const srv = await startServer();
      const vm = new FakeVm({ onread, gso: false, mss: 1460 });
      const { vc, sc } = await open(vm, srv);
      const up = randomBytes(1 << 20);
      const down = randomBytes(1 << 20);
      sc.sock.write(down);
      vc.write(up);
      await until(() => sc.bytes === up.length && vc.rcvBytes === down.length, '1 MB both ways', 10_000);
      expect(Buffer.concat(sc.chunks).equals(up)).toBe(true);
      expect(vc.data.equals(down)).toBe(true);
      // The path under test was the one taken; frames not sent from the memory read into are the ones counted as copied.
      expect(vm.readBytes).toBe(onread ? down.length : 0);
      expect(vm.dataFrames().filter((f) => !f.fromRead).length).toBe(vm.tcp.counters.framesCopied);
      for (const f of vm.frames) {
        expect(f.vnet).toBeUndefined();
        expect(f.payload.length).toBeLessThanOrEqual(1460);
      }
      await until(() => vc.drained, 'VM data acknowledged');
      const s = vm.tcp.sessions(clock())[0];
      expect(s.txBytes).toBe(up.length);
      await until(() => vm.tcp.sessions(clock())[0].rxBytes === down.length, 'rxBytes');
      expect(vm.tcp.counters.bytesToHost).toBe(up.length);
      expect(vm.tcp.counters.bytesToVm).toBe(down.length);
      expect(vm.tcp.counters.badChecksum).toBe(0);
      // ACKs were coalesced: far fewer pure ACKs than the VM's 718 segments.
      const pureAcks = vm.frames.filter((f) => f.payload.length === 0 && f.flags === ACK).length;
      expect(pureAcks).toBeLessThan(300);
      expect(vm.errors).toEqual([]);
    }, 15_000);

    it('sends GSO super-frames with a virtio_net_hdr and a partial checksum, and takes checksum-partial super-frames', async () => {
      const srv = await startServer();
      const vm = new FakeVm({ onread, gso: true, mss: 1460 });
      const { vc, sc } = await open(vm, srv, { partial: true, segSize: 65_000 });
      const down = randomBytes(1 << 20);
      const up = randomBytes(1 << 20);
      sc.sock.write(down);
      vc.write(up);
      await until(() => sc.bytes === up.length && vc.rcvBytes === down.length, '1 MB both ways', 10_000);
      expect(vc.data.equals(down)).toBe(true);
      expect(Buffer.concat(sc.chunks).equals(up)).toBe(true);
      const data = vm.dataFrames();
      let big = 0;
      for (const f of data) {
        const v = f.vnet;
        expect(v).toBeDefined();
        if (v === undefined) continue;
        expect(v.flags).toBe(1);
        expect(v.hdrLen).toBe(14 + 20 + f.hl);
        expect(v.csumStart).toBe(34);
        expect(v.csumOffset).toBe(16);
        expect(f.raw.length).toBeLessThanOrEqual(65535);
        expect(f.df).toBe(true);
        if (f.payload.length > 1460) {
          big++;
          expect(v.gsoType).toBe(1);
          expect(v.gsoSize).toBe(1460);
        } else {
          expect(v.gsoType).toBe(0);
        }
      }
      expect(big).toBeGreaterThan(0);
      expect(Math.max(...data.map((f) => f.payload.length))).toBeGreaterThan(32_000);
      // IPv4 IDs increment frame by frame.
      for (let i = 1; i < vm.frames.length; i++) expect(vm.frames[i].id).toBe((vm.frames[i - 1].id + 1) & 0xffff);
      // Pure ACKs stay complete frames.
      for (const f of vm.frames.filter((x) => x.payload.length === 0)) expect(f.vnet).toBeUndefined();
      expect(vm.tcp.counters.badChecksum).toBe(0);
      expect(vm.errors).toEqual([]);
    }, 15_000);

    it('carries a trickle of small writes, acknowledged piecemeal, intact', async () => {
      const srv = await startServer();
      const vm = new FakeVm({ onread, gso: true });
      const { vc, sc } = await open(vm, srv, { window: 16_384, ws: null });
      const down = randomBytes(1_000_000);
      for (let at = 0; at < down.length; at += 333) {
        sc.sock.write(down.subarray(at, at + 333));
        if ((at / 333) % 8 === 0) await new Promise((resolve) => setImmediate(resolve));
      }
      await until(() => vc.rcvBytes === down.length, 'all of it', 15_000);
      expect(vc.data.equals(down)).toBe(true);
      expect(vm.tcp.counters.blocks).toBeLessThan(50);
      expect(vm.errors).toEqual([]);
    }, 20_000);

    it('stops sending into a zero window, probes it, and resumes when it reopens', async () => {
      const srv = await startServer();
      const vm = new FakeVm({ onread, gso: true });
      const { vc, sc } = await open(vm, srv, { ws: null });
      const down = randomBytes(1 << 20);
      vc.auto = false;
      sc.sock.write(down);
      await until(() => vm.dataFrames().length > 0, 'first data');
      await sleep(20);
      // The VM takes what arrived, and closes its window.
      vc.window = 0;
      vc.ack();
      const shutAt = vm.frames.length;
      const got = vc.rcvBytes;
      expect(got).toBeGreaterThan(0);
      expect(got).toBeLessThanOrEqual(65535);
      // Probes (one byte left of snd_una, no data) are answered with the still-zero window.
      const answer = setInterval(() => {
        const last = vc.frames.at(-1);
        if (last !== undefined && last.payload.length === 0 && last.seq === seqAdd(vc.rcvNxt, -1)) vc.ack();
      }, 5);
      await sleep(700);
      clearInterval(answer);
      const after = vm.frames.slice(shutAt);
      expect(after.filter((f) => f.payload.length > 0)).toEqual([]);
      const probes = after.filter((f) => f.seq === seqAdd(vc.rcvNxt, -1) && f.payload.length === 0);
      expect(probes.length).toBeGreaterThanOrEqual(1);
      expect(vm.tcp.counters.windowProbes).toBeGreaterThanOrEqual(1);
      // The host socket was paused rather than queued without bound.
      expect(vm.tcp.counters.pauses).toBeGreaterThanOrEqual(1);
      expect(vc.rcvBytes).toBe(got);
      vc.window = 65535;
      vc.auto = true;
      vc.ack();
      await until(() => vc.rcvBytes === down.length, 'the rest', 10_000);
      expect(vc.data.equals(down)).toBe(true);
      expect(vm.errors).toEqual([]);
    }, 15_000);

    it('retransmits a dropped frame after the RTO', async () => {
      const srv = await startServer();
      const vm = new FakeVm({ onread });
      const { vc, sc } = await open(vm, srv);
      let dropped: Frame | undefined;
      vm.drop = (f) => {
        if (dropped === undefined && f.payload.length > 0) {
          dropped = f;
          return true;
        }
        return false;
      };
      sc.sock.write(Buffer.from('x'.repeat(100)));
      await until(() => vc.rcvBytes === 100, 'retransmission', 3000);
      const copies = vm.dataFrames().filter((f) => f.seq === dropped?.seq);
      expect(copies).toHaveLength(2);
      const waited = copies[1].t - copies[0].t;
      expect(waited).toBeGreaterThanOrEqual(180);
      expect(waited).toBeLessThan(1000);
      expect(copies[1].payload.equals(copies[0].payload)).toBe(true);
      expect(vm.tcp.counters.retransmits).toBe(1);
      expect(vm.errors).toEqual([]);
    });

    it('fast-retransmits on the third duplicate ACK', async () => {
      const srv = await startServer();
      // A long RTO so that only the duplicate ACKs can cause a retransmission, however loaded the machine.
      const vm = new FakeVm({ onread, gso: false, tuning: { rtoInitMs: 2000, rtoMinMs: 2000 } });
      const { vc, sc } = await open(vm, srv);
      vc.auto = false;
      vm.drop = () => true; // we drive this VM by hand
      sc.sock.write(randomBytes(20_000));
      await until(() => vm.dataFrames().reduce((n, f) => n + f.payload.length, 0) >= 20_000, 'all segments');
      const data = vm.dataFrames();
      const first = data[0];
      // The first segment was lost; each later one makes the VM repeat its ACK.
      vc.rcvNxt = first.seq;
      const n0 = vm.frames.length;
      vc.ack();
      vc.ack();
      expect(vm.frames.length).toBe(n0);
      vc.ack();
      expect(vm.frames.length).toBe(n0 + 1);
      const re = vm.frames[n0];
      expect(re.seq).toBe(first.seq);
      expect(re.payload.equals(first.payload)).toBe(true);
      expect(vm.tcp.counters.fastRetransmits).toBe(1);
      // More duplicates do not retransmit again; the ACK of everything ends recovery.
      vc.ack();
      expect(vm.frames.length).toBe(n0 + 1);
      const last = data.at(-1) as Frame;
      vc.rcvNxt = seqAdd(last.seq, last.payload.length);
      vc.ack();
      await sleep(300);
      expect(vm.tcp.counters.retransmits).toBe(1);
      expect(vm.errors).toEqual([]);
    });

    it('closes its window while the host socket backs up, and reopens it when the socket drains', async () => {
      const srv = await startServer();
      const vm = new FakeVm({ onread, gso: true, tuning: { rcvLimit: 256 << 10 } });
      const { vc, sc } = await open(vm, srv, { partial: true, segSize: 65_000 });
      sc.sock.pause(); // the host peer stops reading
      const up = randomBytes(32 << 20);
      vc.write(up);
      await until(() => vc.frames.some((f) => f.flags === ACK && f.win === 0), 'a zero window', 10_000);
      const held = (vc.sndNxt - vc.sndUna) | 0;
      expect(held).toBe(0); // everything sent was taken: the window closed at our limit, not beyond
      await sleep(50);
      expect(sc.bytes).toBeLessThan(up.length);
      // The VM has no persist timer here: only our window update (on 'drain') can restart it.
      sc.sock.resume();
      await until(() => sc.bytes === up.length, 'all of it', 15_000);
      expect(Buffer.concat(sc.chunks).equals(up)).toBe(true);
      expect(vm.errors).toEqual([]);
    }, 20_000);

    it('drops out-of-order data with a duplicate ACK and trims data beyond the window', async () => {
      const srv = await startServer();
      const vm = new FakeVm({ onread, tuning: { rcvLimit: 4096 } });
      const { vc, sc } = await open(vm, srv, { ws: null });
      const n0 = vm.frames.length;
      vc.seg(ACK | PSH, { seq: seqAdd(vc.sndNxt, 100), payload: Buffer.from('later') });
      expect(vm.tcp.counters.outOfOrder).toBe(1);
      expect(vm.frames.length).toBe(n0 + 1);
      expect(vm.frames[n0].ack).toBe(vc.sndNxt);
      // A keepalive or Linux zero-window probe (one byte left of rcv_nxt, no data) is answered.
      vc.seg(ACK, { seq: seqAdd(vc.sndNxt, -1) });
      expect(vm.frames.length).toBe(n0 + 2);
      expect(vm.frames[n0 + 1]).toMatchObject({ flags: ACK, ack: vc.sndNxt });
      // 6000 bytes against a 4096-byte window: the first 4096 are taken.
      const big = randomBytes(6000);
      vc.seg(ACK | PSH, { payload: big });
      expect(vm.tcp.counters.beyondWindow).toBe(1);
      const a = vm.frames.at(-1) as Frame;
      expect(a.ack).toBe(seqAdd(vc.sndNxt, 4096));
      await until(() => sc.bytes === 4096, 'the part inside the window');
      await sleep(20);
      expect(Buffer.concat(sc.chunks).equals(big.subarray(0, 4096))).toBe(true);
      expect(vm.errors).toEqual([]);
    });
  });

  describe(`HostTcp close (${path})`, () => {
    it('VM FIN half-closes the host socket while the host keeps sending; then the host FIN', async () => {
      const srv = await startServer();
      const vm = new FakeVm({ onread });
      const { vc, sc } = await open(vm, srv);
      vc.write(Buffer.from('request'), true);
      await until(() => sc.ended, 'server end');
      expect(Buffer.concat(sc.chunks).toString()).toBe('request');
      expect(state(vm, vc.port)).toBe('close_wait');
      const reply = randomBytes(100_000);
      sc.sock.write(reply);
      await until(() => vc.rcvBytes === reply.length, 'reply after the VM FIN');
      sc.sock.end();
      await until(() => vc.finReceived, 'FIN to the VM');
      expect(vc.data.equals(reply)).toBe(true);
      await until(() => state(vm, vc.port) === 'time_wait', 'time_wait');
      expect(vm.budget.total).toBe(1);
      await until(() => sc.closed, 'socket closed');
      vm.tcp.tick(clock() + 5000);
      expect(state(vm, vc.port)).toBe('gone');
      expect(vm.budget.total).toBe(0);
      expect(vm.tcp.counters.active).toBe(0);
      expect(vm.errors).toEqual([]);
    });

    it('host end becomes a FIN after the queued data; the VM may keep sending', async () => {
      const srv = await startServer();
      const vm = new FakeVm({ onread });
      const { vc, sc } = await open(vm, srv);
      const data = randomBytes(50_000);
      sc.sock.end(data);
      await until(() => vc.finReceived, 'FIN');
      expect(vc.data.equals(data)).toBe(true);
      // The FIN came after the last byte.
      const fin = vc.frames.find((f) => f.flags & FIN) as Frame;
      expect(seqAdd(fin.seq, fin.payload.length)).toBe(seqAdd(vc.peerIss, 1 + data.length));
      await sleep(10);
      expect(state(vm, vc.port)).toBe('fin_wait');
      vc.write(Buffer.from('still talking'));
      await until(() => sc.bytes === 13, 'data after the host FIN');
      vc.write(Buffer.alloc(0), true);
      await until(() => sc.ended, 'server end');
      await until(() => state(vm, vc.port) === 'time_wait', 'time_wait');
      await until(() => sc.closed, 'socket closed');
      // A retransmitted FIN in TIME_WAIT is acknowledged again.
      const n0 = vm.frames.length;
      vc.seg(FIN | ACK, { seq: seqAdd(vc.sndNxt, -1) });
      expect(vm.frames.length).toBe(n0 + 1);
      expect(vm.frames[n0].ack).toBe(vc.sndNxt);
      vm.tcp.tick(clock() + 3000);
      expect(vm.budget.total).toBe(0);
      expect(vm.errors).toEqual([]);
    });

    it('simultaneous close: the ACK of our FIN may come only on the VM\'s retransmitted FIN', async () => {
      const srv = await startServer();
      const vm = new FakeVm({ onread });
      const { vc, sc } = await open(vm, srv);
      vc.auto = false;
      sc.sock.end();
      await until(() => vc.finReceived, 'our FIN');
      const fin = vc.frames.find((f) => f.flags & FIN) as Frame;
      // The VM closes too, before it saw our FIN (its ACK field still points at it).
      vc.seg(FIN | ACK, { ack: fin.seq });
      vc.sndNxt = seqAdd(vc.sndNxt, 1);
      expect(state(vm, vc.port)).toBe('closing');
      await until(() => sc.ended, 'server end');
      // Its FIN again, now acknowledging ours: an old segment whose ACK field is news.
      const n0 = vm.frames.length;
      vc.seg(FIN | ACK, { seq: seqAdd(vc.sndNxt, -1), ack: seqAdd(fin.seq, 1) });
      expect(state(vm, vc.port)).toBe('time_wait');
      expect(vm.frames.length).toBe(n0 + 1);
      expect(vm.frames[n0]).toMatchObject({ flags: ACK, ack: vc.sndNxt });
      expect(vm.errors).toEqual([]);
    });

    it('a RST from the VM resets the host socket; a challenge ACK for one merely in the window', async () => {
      const srv = await startServer();
      const vm = new FakeVm({ onread });
      const { vc, sc } = await open(vm, srv);
      const n0 = vm.frames.length;
      vc.seg(RST, { seq: seqAdd(vc.sndNxt, 10) });
      expect(vm.frames.length).toBe(n0 + 1);
      expect(vm.frames[n0].flags).toBe(ACK);
      expect(state(vm, vc.port)).toBe('established');
      vc.seg(RST);
      expect(state(vm, vc.port)).toBe('gone');
      await until(() => sc.closed, 'server socket closed');
      expect(sc.error).toBe('ECONNRESET');
      expect(vm.budget.total).toBe(0);
      expect(vm.tcp.counters.resets).toBe(1);
      expect(vm.errors).toEqual([]);
    });

    it('a reset host socket sends a RST to the VM', async () => {
      const srv = await startServer();
      const vm = new FakeVm({ onread });
      const { vc, sc } = await open(vm, srv);
      sc.sock.resetAndDestroy();
      await until(() => vc.rstReceived, 'RST');
      const r = vc.frames.at(-1) as Frame;
      expect(r.flags & RST).toBe(RST);
      expect(r.seq).toBe(seqAdd(vc.peerIss, 1));
      expect(state(vm, vc.port)).toBe('gone');
      expect(vm.budget.total).toBe(0);
      // Anything more from the VM: no session, a RST with seq = its ACK.
      vc.seg(ACK | PSH, { payload: Buffer.from('late') });
      const nr = vm.frames.at(-1) as Frame;
      expect(nr.flags).toBe(RST);
      expect(nr.seq).toBe(vc.rcvNxt);
      expect(vm.tcp.counters.noSession).toBe(1);
      expect(vm.errors).toEqual([]);
    });

    it('gives up after maxRetransmits timeouts: RST both ways', async () => {
      const srv = await startServer();
      const vm = new FakeVm({ onread, tuning: { rtoInitMs: 5, rtoMinMs: 5, rtoMaxMs: 20, maxRetransmits: 4 } });
      const { vc, sc } = await open(vm, srv);
      vc.auto = false;
      vm.drop = (f) => f.payload.length > 0;
      sc.sock.write(Buffer.from('unheard'));
      await until(() => state(vm, vc.port) === 'gone', 'give-up', 3000);
      expect(vm.tcp.counters.timeouts).toBe(1);
      expect(vm.tcp.counters.retransmits).toBe(4);
      expect((vm.frames.at(-1) as Frame).flags & RST).toBe(RST);
      await until(() => sc.closed, 'server socket closed');
      expect(sc.error).toBe('ECONNRESET');
      expect(vm.events.map((e) => e.event)).toContain('tcp_give_up');
      expect(vm.budget.total).toBe(0);
    });

    it('expires idle sessions in tick (established after 2 h)', async () => {
      const srv = await startServer();
      const vm = new FakeVm({ onread });
      const { vc, sc } = await open(vm, srv);
      vm.tcp.tick(clock() + 3600_000);
      expect(state(vm, vc.port)).toBe('established');
      vm.tcp.tick(clock() + 2 * 3600_000 + 1000);
      expect(state(vm, vc.port)).toBe('gone');
      expect((vm.frames.at(-1) as Frame).flags & RST).toBe(RST);
      expect(vm.tcp.counters.expired).toBe(1);
      await until(() => sc.closed, 'server socket closed');
      expect(vm.budget.total).toBe(0);
    });
  });
}

describe('HostTcp onread (the host socket reads into frame blocks)', () => {
  it('carries 24 MB to the VM intact, sending each frame from the memory the socket read into, from a few reused blocks', async () => {
    const srv = await startServer();
    const vm = new FakeVm({ gso: true });
    const { vc, sc } = await open(vm, srv);
    const down = randomBytes(24 << 20);
    sc.sock.end(down);
    await until(() => vc.finReceived, 'all of it and the FIN', 20_000);
    expect(vc.rcvBytes).toBe(down.length);
    expect(vc.data.equals(down)).toBe(true);
    expect(vm.readBytes).toBe(down.length);
    const data = vm.dataFrames();
    // Every data frame is sent from a block the socket read into, but those that
    // spanned two blocks (copied, and counted).
    const copies = data.filter((f) => !f.fromRead);
    expect(copies.length).toBe(vm.tcp.counters.framesCopied);
    expect(copies.length).toBeLessThan(data.length / 20);
    // Large frames: 64 KiB reads do not become a frame and a runt.
    expect(down.length / data.length).toBeGreaterThan(32_000);
    // Blocks are reused: at most the send queue's cap (4 MB here) of them and a few more, not one per read.
    expect(vm.reads).toBeGreaterThan(200);
    expect(vm.tcp.counters.blocks).toBeLessThan(100);
    expect(vm.errors).toEqual([]);
  }, 30_000);

  for (const gso of [false, true]) {
    it(`retransmits from inside a block, and a frame sent from inside one leaves its neighbour intact (gso ${gso ? 'on' : 'off'})`, async () => {
      const srv = await startServer();
      const vm = new FakeVm({ gso, tuning: { rtoInitMs: 50, rtoMinMs: 50 } });
      const { vc, sc } = await open(vm, srv, { window: 32_768, ws: null });
      // Lose the first copy of a few data frames, two of them back to back: the
      // second is built in front of... the first's last bytes, which must still be
      // there when the first goes again.
      const lose = new Set([3, 20, 21, 60]);
      const lost = new Set<number>();
      let n = 0;
      vm.drop = (f) => {
        if (f.payload.length === 0 || lost.has(f.seq)) return false;
        if (!lose.has(n++)) return false;
        lost.add(f.seq);
        return true;
      };
      const down = randomBytes(2 << 20);
      sc.sock.write(down);
      await until(() => vc.rcvBytes === down.length, 'all of it', 15_000);
      expect(vc.data.equals(down)).toBe(true);
      expect(lost.size).toBe(4);
      expect(vm.tcp.counters.retransmits).toBeGreaterThanOrEqual(1);
      // Data sent again (at or before the highest byte sent so far) covered each
      // lost frame, from the blocks, some of it from inside one (the IPv4 header
      // after the block's own header room).
      const data = vm.dataFrames();
      const rel = (seq: number): number => (seq - data[0].seq) >>> 0;
      let high = 0;
      const again: Frame[] = [];
      for (const f of data) {
        if (rel(f.seq) < high) again.push(f);
        high = Math.max(high, rel(f.seq) + f.payload.length);
      }
      for (const seq of lost) expect(again.some((f) => rel(f.seq) <= rel(seq) && rel(seq) < rel(f.seq) + f.payload.length)).toBe(true);
      expect(again.some((f) => f.fromRead && f.ipOff > 24)).toBe(true);
      expect(vm.errors).toEqual([]);
    }, 20_000);
  }

  it('pauses the socket when the send queue is full (the read callback says false) and resumes it on the VM\'s ACK', async () => {
    const srv = await startServer();
    const cap = 256 << 10;
    const vm = new FakeVm({ gso: true, tuning: { sndCapMin: cap, sndCapMax: cap, rtoInitMs: 2000, rtoMinMs: 2000 } });
    const { vc, sc } = await open(vm, srv);
    vc.auto = false; // receives, does not acknowledge
    const down = randomBytes(16 << 20);
    let drained = false;
    if (!sc.sock.write(down)) sc.sock.once('drain', () => { drained = true; });
    await until(() => vm.readsRefused > 0, 'a refused read');
    expect(vm.tcp.counters.pauses).toBe(1);
    const held = vm.readBytes;
    await sleep(100);
    // Paused: nothing more read, the queue within its cap and one read; the kernel and the server hold the rest.
    expect(vm.readBytes).toBe(held);
    expect(held).toBeLessThanOrEqual(cap + 65536);
    expect(drained).toBe(false);
    expect(vc.rcvBytes).toBeGreaterThan(0);
    expect(vc.rcvBytes).toBeLessThanOrEqual(held);
    // The VM acknowledges what it has: the queue empties, the socket resumes.
    vc.auto = true;
    vc.ack();
    await until(() => vm.readBytes > held, 'reads again');
    await until(() => vc.rcvBytes === down.length, 'all of it', 20_000);
    expect(vc.data.equals(down)).toBe(true);
    expect(vm.readBytes).toBe(down.length);
    expect(vm.tcp.counters.pauses).toBeGreaterThanOrEqual(1);
    expect(vm.readsRefused).toBe(vm.tcp.counters.pauses);
    expect(vm.tcp.counters.retransmits).toBe(0);
    expect(vm.errors).toEqual([]);
  }, 30_000);
});

describe('HostTcp rcvbuf (socket-rcvbuf.ts)', () => {
  /** A download the VM does not acknowledge (the engine pauses its socket, the kernel's queue takes the rest); the socket's SO_RCVBUF then. */
  async function heldQueue(rcvbuf: number): Promise<{ rb: number; failed: number }> {
    const srv = await startServer();
    const hostSocks: net.Socket[] = [];
    const vm = new FakeVm({
      gso: true,
      tuning: { rcvbuf, sndCapMin: 256 << 10, sndCapMax: 256 << 10, rtoInitMs: 5000, rtoMinMs: 5000 },
      connect: (ip, port, onread) => {
        const sock = net.connect({ host: '127.0.0.1', port, onread });
        hostSocks.push(sock);
        return sock;
      },
    });
    const { vc, sc } = await open(vm, srv);
    vc.auto = false;
    sc.sock.write(randomBytes(24 << 20));
    await until(() => vm.tcp.counters.pauses > 0, 'a pause');
    const rb = rcvbufOf(hostSocks[0]);
    return { rb, failed: vm.tcp.counters.rcvbufFailed };
  }

  it('sets SO_RCVBUF on the connected host socket (the kernel queues at most that for a VM that does not keep up); auto leaves the kernel its own', async () => {
    expect(parseRcvbuf(undefined)).toBe(RCVBUF_AUTO);
    expect(parseRcvbuf('auto')).toBe(RCVBUF_AUTO);
    expect(parseRcvbuf(1 << 20)).toBe(1 << 20);
    expect(describeRcvbuf(RCVBUF_AUTO)).toBe('auto');
    const set = await heldQueue(256 << 10);
    expect(set.failed).toBe(0);
    expect(set.rb).toBe(512 << 10); // the kernel doubles SO_RCVBUF
    const auto = await heldQueue(RCVBUF_AUTO);
    expect(auto.failed).toBe(0);
    expect(auto.rb).not.toBe(512 << 10); // the kernel's own (autotuned from tcp_rmem)
    // A socket with no descriptor (never connected, or closed) is an error code, not an exception.
    expect(setRcvbuf(new net.Socket(), 65536)).toBe(-9);
  }, 30_000);
});

describe('HostTcp connect failures and limits', () => {
  it('a refused connect is a RST to the VM', async () => {
    const port = await closedPort();
    const vm = new FakeVm();
    vm.send({ sport: 41000, dport: port, seq: 777, flags: SYN, mss: 1460 });
    await until(() => vm.frames.length > 0, 'RST');
    const r = vm.frames[0];
    expect(r.flags).toBe(RST | ACK);
    expect(r.seq).toBe(0);
    expect(r.ack).toBe(778);
    expect(r.sport).toBe(port);
    expect(r.dport).toBe(41000);
    expect(vm.tcp.counters.connectFailed).toBe(1);
    expect(vm.budget.total).toBe(0);
    expect(vm.tcp.sessions(clock())).toEqual([]);
    expect(vm.errors).toEqual([]);
  });

  for (const [code, icmpCode] of [['EHOSTUNREACH', 1], ['ENETUNREACH', 0], ['ETIMEDOUT', 1]] as const) {
    it(`${code} is an ICMP unreachable (code ${icmpCode}) quoting the SYN`, async () => {
      const remote = parseIp4('192.0.2.99');
      const vm = new FakeVm({
        connect: () => {
          const s = new net.Socket();
          setImmediate(() => s.destroy(Object.assign(new Error(code), { code })));
          return s;
        },
      });
      vm.send({ sport: 41001, dport: 443, dst: remote, seq: 0xdeadbeef, flags: SYN, mss: 1460, ws: 7 });
      await until(() => vm.frames.length > 0, 'ICMP');
      const f = vm.frames[0];
      expect(f.proto).toBe(1);
      expect(f.icmpType).toBe(3);
      expect(f.icmpCode).toBe(icmpCode);
      expect(f.src).toBe(remote);
      expect(f.dst).toBe(VM);
      // The quote: the SYN's IP header and the first 8 bytes of its TCP header.
      expect(f.quote.length).toBe(28);
      expect(r32(f.quote, 12)).toBe(VM);
      expect(r32(f.quote, 16)).toBe(remote);
      expect(r16(f.quote, 20)).toBe(41001);
      expect(r16(f.quote, 22)).toBe(443);
      expect(r32(f.quote, 24)).toBe(0xdeadbeef);
      expect(vm.tcp.counters.connectFailed).toBe(1);
      expect(vm.budget.total).toBe(0);
      expect(vm.events[0]).toMatchObject({ event: 'tcp_connect_failed', error: code });
      expect(vm.errors).toEqual([]);
    });
  }

  it('refuses a session over the budget with a RST, and releases the budget exactly once', async () => {
    const srv = await startServer();
    const budget = new HostBudget({ maxPerHost: 1 });
    const vm = new FakeVm({ budget });
    const { vc, sc } = await open(vm, srv);
    const n0 = vm.frames.length;
    vm.send({ sport: 42000, dport: srv.port, seq: 5, flags: SYN });
    expect(vm.frames.length).toBe(n0 + 1);
    expect(vm.frames[n0]).toMatchObject({ flags: RST | ACK, ack: 6, dport: 42000 });
    expect(vm.tcp.counters.refused).toBe(1);
    expect(budget.refusedPerHost).toBe(1);
    expect(budget.perHost(VM)).toBe(1);
    vc.seg(RST);
    vc.seg(RST); // a second RST finds no session and is ignored
    expect(vm.frames.length).toBe(n0 + 1);
    expect(budget.perHost(VM)).toBe(0);
    await until(() => sc.closed, 'closed');
    expect(budget.total).toBe(0);
  });
});

describe('HostTcp port forwards (accept)', () => {
  async function forward(vm: FakeVm, remote: number): Promise<{ client: net.Socket; fwdPort: number }> {
    const fwd = await startServer({ pauseOnConnect: true }, (sock) => vm.tcp.accept(sock, VM, 80, remote, sock.remotePort ?? 0));
    const client = net.connect({ host: '127.0.0.1', port: fwd.port, allowHalfOpen: true });
    sockets.push(client);
    client.on('error', () => {});
    await new Promise<void>((resolve) => client.once('connect', () => resolve()));
    return { client, fwdPort: fwd.port };
  }

  it('opens towards the VM, carries data both ways and closes both ways', async () => {
    const remote = parseIp4('192.0.2.7');
    const vm = new FakeVm();
    const { client, fwdPort } = await forward(vm, remote);
    await until(() => vm.frames.length > 0, 'SYN');
    const syn = vm.frames[0];
    expect(syn.flags).toBe(SYN);
    expect(syn.src).toBe(remote);
    expect(syn.dst).toBe(VM);
    expect(syn.dport).toBe(80);
    expect(syn.sport).toBe(client.localPort);
    expect(syn.mss).toBe(1460);
    expect(syn.ws).toBe(7);
    expect(state(vm, 80)).toBe('syn_sent');
    const s0 = vm.tcp.sessions(clock())[0];
    expect(s0).toMatchObject({ direction: 'in', inside: '10.0.10.5:80', remote: `192.0.2.7:${client.localPort}`, outside: `127.0.0.1:${fwdPort}` });
    // The VM's side: a listening socket answering with SYN-ACK.
    const vc = new VmConn(vm, 80, remote, syn.sport, { iss: 5000 });
    vc.rcvNxt = seqAdd(syn.seq, 1);
    vc.peerIss = syn.seq;
    vc.peerWs = 7;
    vm.send({ sport: 80, dport: syn.sport, dst: remote, seq: 5000, ack: vc.rcvNxt, flags: SYN | ACK, mss: 1460, ws: 6 });
    vc.sndNxt = 5001;
    vc.sndUna = 5001;
    vc.peerWnd = 65535 << 7;
    const ack = vm.frames.at(-1) as Frame;
    expect(ack.flags).toBe(ACK);
    expect(ack.ack).toBe(5001);
    expect(state(vm, 80)).toBe('established');

    const got: Buffer[] = [];
    client.on('data', (d: Buffer) => got.push(d));
    let clientEnded = false;
    client.on('end', () => { clientEnded = true; });
    const hello = randomBytes(200_000);
    client.write(hello);
    await until(() => vc.rcvBytes === hello.length, 'client data at the VM');
    expect(vc.data.equals(hello)).toBe(true);
    const world = randomBytes(300_000);
    vc.write(world);
    await until(() => Buffer.concat(got).length === world.length, 'VM data at the client');
    expect(Buffer.concat(got).equals(world)).toBe(true);
    client.end();
    await until(() => vc.finReceived, 'FIN at the VM');
    vc.write(Buffer.alloc(0), true);
    await until(() => clientEnded, 'client end');
    await until(() => state(vm, 80) === 'time_wait', 'time_wait');
    expect(vm.errors).toEqual([]);
  });

  it('retransmits the SYN, and a RST from the VM resets the client', async () => {
    const vm = new FakeVm();
    const { client } = await forward(vm, parseIp4('192.0.2.8'));
    let closed = false;
    let err = '';
    client.on('error', (e: NodeJS.ErrnoException) => { err = e.code ?? ''; });
    client.on('close', () => { closed = true; });
    await until(() => vm.frames.length >= 2, 'SYN retransmission', 2000);
    expect(vm.frames[1].seq).toBe(vm.frames[0].seq);
    expect(vm.frames[1].t - vm.frames[0].t).toBeGreaterThanOrEqual(180);
    const syn = vm.frames[0];
    vm.send({ sport: 80, dport: syn.sport, dst: syn.src, seq: 0, ack: seqAdd(syn.seq, 1), flags: RST | ACK });
    expect(state(vm, 80)).toBe('gone');
    await until(() => closed, 'client closed');
    expect(err).toBe('ECONNRESET');
    expect(vm.tcp.counters.forwardFailed).toBe(1);
    expect(vm.budget.total).toBe(0);
  });
});

describe('tcp-sum', () => {
  it('equals the 16-bit one\'s-complement sum at any offset, length and alignment', () => {
    fc.assert(fc.property(
      fc.uint8Array({ minLength: 0, maxLength: 3000 }), fc.nat(), fc.nat(), fc.integer({ min: 0, max: 0x7ffff }),
      (bytes, a, b, initial) => {
        const off = bytes.length === 0 ? 0 : a % bytes.length;
        const len = (bytes.length - off) === 0 ? 0 : b % (bytes.length - off + 1);
        // A view at an odd byteOffset of a larger buffer, as the router's frames are.
        const host = new Uint8Array(bytes.length + 3);
        host.set(bytes, 3);
        const view = host.subarray(3);
        expect(fastSum(view, off, len, initial)).toBe(onesSum(bytes, off, off + len, initial));
      },
    ), { numRuns: 500 });
    const big = randomBytes(65535);
    expect(fastSum(big, 0, 65535, 0xffff)).toBe(onesSum(big, 0, 65535, 0xffff));
  });
});

describe('HostTcp hostile input', () => {
  it('answers segments for no session by RFC 793 and ignores stray RSTs', () => {
    const vm = new FakeVm();
    vm.send({ sport: 43000, dport: 80, seq: 100, ack: 5555, flags: ACK, payload: Buffer.from('abc') });
    expect(vm.frames[0]).toMatchObject({ flags: RST, seq: 5555 });
    vm.send({ sport: 43000, dport: 80, seq: 100, flags: FIN, payload: Buffer.from('abc') });
    expect(vm.frames[1]).toMatchObject({ flags: RST | ACK, seq: 0, ack: 104 });
    vm.send({ sport: 43000, dport: 80, seq: 100, flags: RST });
    vm.send({ sport: 43000, dport: 80, seq: 100, ack: 1, flags: RST | ACK });
    expect(vm.frames).toHaveLength(2);
    expect(vm.tcp.counters.noSession).toBe(2);
    expect(vm.errors).toEqual([]);
  });

  it('counts bad checksums, SYN+FIN and bogus headers as drops', () => {
    let connects = 0;
    const vm = new FakeVm({ connect: () => { connects++; return new net.Socket(); } });
    vm.send({ sport: 43001, dport: 80, seq: 1, flags: SYN, badChecksum: true });
    expect(vm.tcp.counters.badChecksum).toBe(1);
    vm.send({ sport: 43001, dport: 80, seq: 1, flags: SYN | FIN });
    vm.send({ sport: 43001, dport: 80, seq: 1, flags: SYN | RST });
    vm.send({ sport: 0, dport: 80, seq: 1, flags: SYN });
    expect(vm.tcp.counters.malformed).toBe(3);
    // A partial checksum is not verified when the caller says so, and is when it does not.
    vm.send({ sport: 43002, dport: 80, seq: 1, flags: ACK, partial: true });
    expect(vm.tcp.counters.noSession).toBe(1);
    expect(vm.frames).toHaveLength(1);
    expect(connects).toBe(0);
    vm.tcp.close();
  });

  it('never throws on arbitrary bytes or mutated headers', () => {
    let connects = 0;
    const vm = new FakeVm({ connect: () => { connects++; const s = new net.Socket(); setImmediate(() => s.destroy()); return s; } });
    const tcp = vm.tcp;
    fc.assert(fc.property(fc.uint8Array({ minLength: 0, maxLength: 120 }), fc.integer({ min: -4, max: 130 }), fc.boolean(), (bytes, len, partial) => {
      tcp.fromVm(bytes, 0, len, partial);
    }), { numRuns: 2000 });
    // A valid segment, then one of its bytes (or its lengths) changed.
    const base = Buffer.alloc(80);
    fc.assert(fc.property(
      fc.integer({ min: 0, max: 59 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 80 }), fc.boolean(),
      (at, value, ipLen, partial) => {
        base.fill(0);
        base[0] = 0x45;
        w16(base, 2, 60);
        base[9] = 6;
        w32(base, 12, VM);
        w32(base, 16, LO);
        w16(base, 20, 50000);
        w16(base, 22, 9);
        base[32] = 0x50;
        base[33] = ACK;
        base[at] = value;
        tcp.fromVm(base, 0, ipLen, partial);
      },
    ), { numRuns: 3000 });
    expect(tcp.counters.malformed).toBeGreaterThan(0);
    tcp.close();
    expect(vm.budget.total).toBe(0);
  });
});
