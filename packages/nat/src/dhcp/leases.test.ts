import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseIp4 } from '@vswitch/switch';
import { LEASE_FILE_VERSION, LeaseFileError, LeaseStore, clientKey, leaseFilePath } from './leases.js';
import { DhcpServer, type DhcpReply, type DhcpResult, type DhcpServerConfig } from './server.js';
import { BOOTREQUEST, DhcpMsg, DhcpWriter, Opt, parseDhcp } from './wire.js';

const ip = (s: string): number => parseIp4(s);
const T0 = Date.UTC(2025, 0, 1);
const SERVER = ip('10.0.10.1');

let dir: string;
beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'vswitch-leases-')); });
afterEach(() => { rmSync(dir, { recursive: true, force: true }); });

const config: DhcpServerConfig = {
  name: 'net10', serverIp: SERVER, subnet: ip('10.0.10.0'), prefixLen: 24,
  pools: [[ip('10.0.10.100'), ip('10.0.10.109')]],
};

function msg(type: number, mac: number, o: { requested?: number; serverId?: number; ciaddr?: number; clientId?: number[]; hostname?: string } = {}): Uint8Array {
  const buf = new Uint8Array(400);
  const w = new DhcpWriter(buf);
  w.header({ op: BOOTREQUEST, xid: 7, flags: 0, ciaddr: o.ciaddr ?? 0, yiaddr: 0, siaddr: 0, giaddr: 0, chaddr: mac });
  w.u8(Opt.MESSAGE_TYPE, type);
  if (o.clientId) w.option(Opt.CLIENT_ID, o.clientId);
  if (o.requested !== undefined) w.u32(Opt.REQUESTED_IP, o.requested);
  if (o.serverId !== undefined) w.u32(Opt.SERVER_ID, o.serverId);
  if (o.hostname !== undefined) w.text(Opt.HOSTNAME, o.hostname);
  return buf.subarray(0, w.finish());
}

function send(s: DhcpServer, now: number, m: Uint8Array): DhcpResult {
  return s.handle(m, 0, m.length, new Uint8Array(600), 0, { now });
}

/** ACKs the server handed over once their lease was on disk, per server. */
const delivered = new WeakMap<DhcpServer, DhcpReply[]>();
function server(store: LeaseStore, cfg: DhcpServerConfig = config, now = T0): DhcpServer {
  const s = new DhcpServer(cfg, store, now);
  const acks: DhcpReply[] = [];
  delivered.set(s, acks);
  s.attach({ deliver: (r) => acks.push(r) });
  return s;
}

/** send(), and for an ACK held for the lease file: the ACK once written, or 'no ACK' if the write failed. */
async function sendAndWait(s: DhcpServer, store: LeaseStore, now: number, m: Uint8Array): Promise<DhcpResult | 'no ACK'> {
  const r = send(s, now, m);
  if (r !== 'pending') return r;
  await store.flush().catch(() => undefined);
  return delivered.get(s)!.shift() ?? 'no ACK';
}

async function dora(s: DhcpServer, store: LeaseStore, now: number, mac: number, extra: { clientId?: number[]; hostname?: string } = {}): Promise<number> {
  const offer = send(s, now, msg(DhcpMsg.DISCOVER, mac, extra));
  if (typeof offer === 'string') throw new Error(offer);
  const ack = await sendAndWait(s, store, now, msg(DhcpMsg.REQUEST, mac, { requested: offer.yiaddr, serverId: SERVER, ...extra }));
  if (typeof ack === 'string' || ack.type !== DhcpMsg.ACK) throw new Error(`no ACK: ${String(ack)}`);
  return ack.yiaddr;
}

describe('LeaseStore', () => {
  it('persists leases with wall-clock expiry and a version, and loads them back', async () => {
    const s = LeaseStore.open(dir, 'net10', T0);
    expect(s.path).toBe(join(dir, 'leases-net10.json'));
    s.set({ ip: ip('10.0.10.100'), mac: 0x525400000001, clientId: '01525400000001', hostname: 'a', expiresAt: T0 + 3600_000, port: 'tap0' });
    s.set({ ip: ip('10.0.10.101'), mac: 0x525400000002, expiresAt: T0 + 60_000 });
    await s.flush();
    expect(s.writes).toBe(1);
    await s.flush(); // nothing changed: no write
    expect(s.writes).toBe(1);
    const doc = JSON.parse(readFileSync(s.path!, 'utf8'));
    expect(doc.version).toBe(LEASE_FILE_VERSION);
    expect(doc.network).toBe('net10');
    expect(doc.leases[0]).toEqual({ ip: '10.0.10.100', mac: '52:54:00:00:00:01', clientId: '01525400000001', hostname: 'a', expiresAt: T0 + 3600_000, port: 'tap0' });
    expect((lstatSync(s.path!).mode & 0o777).toString(8)).toBe('600');

    const again = LeaseStore.open(dir, 'net10', T0 + 1000);
    expect([...again.values()]).toEqual([...s.values()]);
    expect(again.get(clientKey(0x525400000001, '01525400000001'))?.ip).toBe(ip('10.0.10.100'));
    expect(again.byIp(ip('10.0.10.101'))?.mac).toBe(0x525400000002);
    // expired at load: dropped, and the file catches up at the next commit
    const later = LeaseStore.open(dir, 'net10', T0 + 60_000);
    expect(later.size).toBe(1);
    expect(later.dirty).toBe(true);
    await later.flush();
    expect(JSON.parse(readFileSync(s.path!, 'utf8')).leases).toHaveLength(1);
  });

  it('keeps one address per client and one client per address', () => {
    const s = LeaseStore.inMemory();
    s.set({ ip: 1, mac: 0xa, expiresAt: 10 });
    s.set({ ip: 2, mac: 0xa, expiresAt: 10 }); // the client moved
    expect(s.byIp(1)).toBeUndefined();
    s.set({ ip: 2, mac: 0xb, expiresAt: 10 }); // the address went to another client
    expect(s.get(clientKey(0xa, undefined))).toBeUndefined();
    expect(s.size).toBe(1);
    expect(s.delete(clientKey(0xb, undefined))?.ip).toBe(2);
    expect(s.byIp(2)).toBeUndefined();
    s.commit(); // in memory: no file, no throw, durable at once
    expect(s.writes).toBe(0);
    expect(s.dirty).toBe(false);
  });

  it('starts empty when there is no file, creating the state directory', () => {
    const sub = join(dir, 'state');
    const s = LeaseStore.open(sub, 'net10', T0);
    expect(s.size).toBe(0);
    expect(lstatSync(sub).isDirectory()).toBe(true);
  });

  it('refuses unsafe network names', () => {
    expect(() => leaseFilePath(dir, '../x')).toThrow(/invalid DHCP network name/);
    expect(() => leaseFilePath(dir, '')).toThrow();
    expect(leaseFilePath(dir, 'vlan-10')).toBe(join(dir, 'leases-vlan-10.json'));
  });
});

describe('untrusted lease files refuse to start, naming the file', () => {
  const path = (): string => join(dir, 'leases-net10.json');
  const expectRefusal = (pattern: RegExp): void => {
    let err: unknown;
    try { LeaseStore.open(dir, 'net10', T0); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(LeaseFileError);
    expect((err as LeaseFileError).path).toBe(path());
    expect((err as Error).message).toContain(path());
    expect((err as Error).message).toMatch(pattern);
  };
  const good = { ip: '10.0.10.100', mac: '52:54:00:00:00:01', expiresAt: T0 + 1000 };
  const file = (leases: unknown[], extra: Record<string, unknown> = {}): void => {
    writeFileSync(path(), JSON.stringify({ version: 1, network: 'net10', leases, ...extra }));
  };

  it('a symlink', () => {
    const target = join(dir, 'elsewhere.json');
    writeFileSync(target, JSON.stringify({ version: 1, network: 'net10', leases: [] }));
    symlinkSync(target, path());
    expectRefusal(/symlink/);
  });
  it('a directory in its place', () => {
    mkdirSync(path());
    expectRefusal(/not a regular file/);
  });
  it('corrupt JSON (a torn or edited file)', () => {
    writeFileSync(path(), '{"version":1,"network":"net10","leases":[{"ip":');
    expectRefusal(/not valid JSON/);
  });
  it('an unknown version', () => {
    file([], { version: 2 });
    expectRefusal(/unsupported version 2/);
  });
  it('another network\'s file', () => {
    file([], { network: 'net20' });
    expectRefusal(/belongs to network "net20"/);
  });
  it('not an object, or leases not an array', () => {
    writeFileSync(path(), '[]');
    expectRefusal(/not a JSON object/);
    file([], { leases: {} });
    expectRefusal(/"leases" is not an array/);
  });
  it('a malformed lease, by index', () => {
    file([good, { ...good, ip: '10.0.10.300', mac: '52:54:00:00:00:02' }]);
    expectRefusal(/lease #1: bad ip/);
    file([{ ...good, mac: 'zz' }]);
    expectRefusal(/lease #0: bad mac/);
    file([{ ...good, expiresAt: 'soon' }]);
    expectRefusal(/bad expiresAt/);
    file([{ ...good, clientId: 'xyz' }]);
    expectRefusal(/bad clientId/);
  });
  it('two leases for one address or one client', () => {
    file([good, { ...good, mac: '52:54:00:00:00:02' }]);
    expectRefusal(/a second lease for 10.0.10.100/);
    file([good, { ...good, ip: '10.0.10.101' }]);
    expectRefusal(/a second lease for client hw:525400000001/);
  });
});

describe('leases survive a restart', () => {
  it('a new server on the same state directory keeps every client\'s address', async () => {
    const macs = [0x525400000001, 0x525400000002, 0x525400000003];
    const store = LeaseStore.open(dir, 'net10', T0);
    const s1 = server(store);
    const got: number[] = [];
    for (const [i, mac] of macs.entries()) got.push(await dora(s1, store, T0, mac, i === 0 ? { clientId: [1, 0x52, 0x54, 0, 0, 0, 1], hostname: 'vm1' } : {}));
    expect(new Set(got).size).toBe(3);
    expect(store.writes).toBe(3); // one at a time: each grant waited for its write, and nothing else was pending
    // a renewal is written too, before its ACK
    expect(send(s1, T0 + 1800_000, msg(DhcpMsg.REQUEST, macs[1], { ciaddr: got[1] }))).toBe('pending');
    expect(store.durableVersion).toBeLessThan(store.version);
    await store.flush();
    expect(store.writes).toBe(4);
    expect(delivered.get(s1)!.shift()?.type).toBe(DhcpMsg.ACK);

    // "restart": everything in memory is gone, offers included
    const now = T0 + 2000_000;
    const store2 = LeaseStore.open(dir, 'net10', now);
    const s2 = server(store2, config, now);
    expect(s2.leases(now).map((l) => [l.ip, l.mac, l.hostname])).toEqual([
      [got[0], macs[0], 'vm1'], [got[1], macs[1], undefined], [got[2], macs[2], undefined],
    ]);
    // INIT-REBOOT after the restart: ACK with the same address (client 0 by its client id)
    for (const [i, mac] of macs.entries()) {
      const r = await sendAndWait(s2, store2, now, msg(DhcpMsg.REQUEST, mac, { requested: got[i], ...(i === 0 ? { clientId: [1, 0x52, 0x54, 0, 0, 0, 1] } : {}) }));
      expect(typeof r === 'object' && r.type).toBe(DhcpMsg.ACK);
    }
    // a new client gets none of them; a re-discovering client gets its own
    const fresh = await dora(s2, store2, now, 0x525400000009);
    expect(got).not.toContain(fresh);
    const again = send(s2, now, msg(DhcpMsg.DISCOVER, macs[2]));
    expect(typeof again === 'object' && again.yiaddr).toBe(got[2]);
  });

  it('a released lease is gone after a restart; an expired one too', async () => {
    const store = LeaseStore.open(dir, 'net10', T0);
    const s1 = server(store, { ...config, leaseTimeSec: 600 });
    const a = await dora(s1, store, T0, 0x525400000001);
    await dora(s1, store, T0 + 300_000, 0x525400000002);
    expect(send(s1, T0, msg(DhcpMsg.RELEASE, 0x525400000001, { ciaddr: a }))).toBe('handled');
    await store.flush(); // a RELEASE waits for nobody: the next write (here, this one) covers it
    const now = T0 + 700_000; // the first grant would have expired anyway; the second is live
    const s2 = new DhcpServer(config, LeaseStore.open(dir, 'net10', now), now);
    expect(s2.leases(now).map((l) => l.mac)).toEqual([0x525400000002]);
  });

  it('no ACK when the lease cannot be written', async () => {
    const store = LeaseStore.open(dir, 'net10', T0);
    const s = server(store);
    const failures: Error[] = [];
    s.attach({ deliver: (r) => delivered.get(s)!.push(r), storeFailed: (e) => failures.push(e) });
    await dora(s, store, T0, 0x525400000001);
    // the file is replaced by a directory: rename over it fails
    unlinkSync(store.path!);
    mkdirSync(store.path!);
    const offer = send(s, T0, msg(DhcpMsg.DISCOVER, 0x525400000002));
    expect(typeof offer).toBe('object');
    const req = msg(DhcpMsg.REQUEST, 0x525400000002, { requested: (offer as { yiaddr: number }).yiaddr, serverId: SERVER });
    expect(await sendAndWait(s, store, T0, req)).toBe('no ACK');
    expect(s.counters.dropped.store_error).toBe(1);
    expect(s.counters.storeErrors).toBe(1);
    expect(s.counters.acks).toBe(1);
    expect(failures).toHaveLength(1);
    expect(failures[0].message).toMatch(/EISDIR|directory/i);
    // the directory did not become a file, and no temp file was left behind
    expect(lstatSync(store.path!).isDirectory()).toBe(true);
    expect(readdirSync(dir).filter((n) => n.endsWith('.tmp'))).toEqual([]);
    // once the disk is fixed, the retried REQUEST is granted
    rmSync(store.path!, { recursive: true });
    const ok = await sendAndWait(s, store, T0, req);
    expect(typeof ok === 'object' && ok.type).toBe(DhcpMsg.ACK);
    expect(JSON.parse(readFileSync(store.path!, 'utf8')).leases).toHaveLength(2);
  });
});

describe('group commit', () => {
  it('N renewals in one burst cost one or two writes, and every ACK waits for the write covering it', async () => {
    const store = LeaseStore.open(dir, 'net10', T0);
    const s = server(store);
    const a = await dora(s, store, T0, 0x525400000001);
    const w0 = store.writes;
    const N = 200;
    const results = [];
    for (let i = 0; i < N; i++) results.push(send(s, T0 + i, msg(DhcpMsg.REQUEST, 0x525400000001, { ciaddr: a })));
    // at most 64 wait per address: the 65th and later are dropped before any work, counted
    expect(results.slice(0, 64).every((r) => r === 'pending')).toBe(true);
    expect(results.slice(64).every((r) => r === 'ack_backlog')).toBe(true);
    expect(s.counters.dropped.ack_backlog).toBe(N - 64);
    // none sent before the write: a crash now loses no ACKed expiry
    expect(delivered.get(s)).toEqual([]);
    expect(s.pendingAcks).toBe(64);
    await store.flush();
    expect(store.writes - w0).toBeLessThanOrEqual(2);
    const acks = delivered.get(s)!;
    expect(acks.length).toBe(64);
    expect(acks.every((r) => r.type === DhcpMsg.ACK && r.yiaddr === a)).toBe(true);
    expect(s.pendingAcks).toBe(0);
    // the file holds the last granted renewal's expiry
    const doc = JSON.parse(readFileSync(store.path!, 'utf8'));
    expect(doc.leases[0].expiresAt).toBe(T0 + 63 + 3600_000);
  });

  it('changes made while a write is in flight go into the next write, no sooner than intervalMs after it', async () => {
    const store = LeaseStore.open(dir, 'net10', T0);
    store.intervalMs = 100;
    const starts: number[] = [];
    const t0 = performance.now();
    store.onSettled = () => starts.push(performance.now() - t0);
    for (let i = 0; i < 5; i++) {
      store.set({ ip: ip('10.0.10.100') + i, mac: 0x525400000001 + i, expiresAt: T0 + 3600_000 });
      store.commit();
      await new Promise((r) => setTimeout(r, 5));
    }
    await store.flush();
    expect(store.writes).toBe(2);
    expect(starts[1]).toBeGreaterThanOrEqual(100);
    expect(JSON.parse(readFileSync(store.path!, 'utf8')).leases).toHaveLength(5);
  });

  it('each held ACK keeps its own bytes, though the caller reuses one Buffer for every reply', async () => {
    const store = LeaseStore.open(dir, 'net10', T0);
    const s = new DhcpServer(config, store, T0);
    const got: [DhcpReply, Uint8Array][] = [];
    s.attach({ deliver: (r, p) => got.push([r, p]) });
    const out = Buffer.alloc(600); // the router network's reply buffer is a Buffer, whose slice() is a view
    const ips: number[] = [];
    for (const mac of [0x525400000001, 0x525400000002, 0x525400000003]) {
      const d = msg(DhcpMsg.DISCOVER, mac);
      const o = s.handle(d, 0, d.length, out, 0, { now: T0 });
      if (typeof o === 'string') throw new Error(o);
      const r = msg(DhcpMsg.REQUEST, mac, { requested: o.yiaddr, serverId: SERVER });
      expect(s.handle(r, 0, r.length, out, 0, { now: T0 })).toBe('pending');
      ips.push(o.yiaddr);
    }
    await store.flush();
    expect(got).toHaveLength(3);
    for (const [r, p] of got) {
      const m = parseDhcp(p, 0, r.payloadLen);
      if (typeof m === 'number') throw new Error('bad payload');
      expect([m.chaddr, m.yiaddr]).toEqual([r.chaddr, r.yiaddr]);
    }
    expect(got.map(([r]) => r.yiaddr)).toEqual(ips);
  });

  it('a lease released before its write completes gets no ACK, and no binding', async () => {
    const store = LeaseStore.open(dir, 'net10', T0);
    const s = server(store);
    const offer = send(s, T0, msg(DhcpMsg.DISCOVER, 0x525400000001));
    const yi = (offer as { yiaddr: number }).yiaddr;
    expect(send(s, T0, msg(DhcpMsg.REQUEST, 0x525400000001, { requested: yi, serverId: SERVER }))).toBe('pending');
    expect(send(s, T0, msg(DhcpMsg.RELEASE, 0x525400000001, { ciaddr: yi }))).toBe('handled');
    await store.flush();
    expect(delivered.get(s)).toEqual([]);
    expect(s.counters.dropped.lease_gone).toBe(1);
    expect(s.counters.acks).toBe(0);
  });

  it('close() writes what is left synchronously and sends the ACKs waiting for it; a write in flight never lands after it', async () => {
    const store = LeaseStore.open(dir, 'net10', T0);
    const s = server(store);
    const offer = send(s, T0, msg(DhcpMsg.DISCOVER, 0x525400000001));
    const yi = (offer as { yiaddr: number }).yiaddr;
    expect(send(s, T0, msg(DhcpMsg.REQUEST, 0x525400000001, { requested: yi, serverId: SERVER }))).toBe('pending');
    // the write is scheduled (setTimeout 0) or in flight; close now
    await new Promise((r) => setImmediate(r));
    expect(send(s, T0, msg(DhcpMsg.DISCOVER, 0x525400000002))).toMatchObject({ type: DhcpMsg.OFFER });
    const y2 = (send(s, T0, msg(DhcpMsg.DISCOVER, 0x525400000002)) as { yiaddr: number }).yiaddr;
    expect(send(s, T0, msg(DhcpMsg.REQUEST, 0x525400000002, { requested: y2, serverId: SERVER }))).toBe('pending');
    s.close();
    // both ACKs went out once close() wrote the file
    expect(delivered.get(s)!.map((r) => r.yiaddr).sort()).toEqual([yi, y2].sort());
    const text = readFileSync(store.path!, 'utf8');
    expect(JSON.parse(text).leases).toHaveLength(2);
    // let any write that was in flight finish: the file does not go back to older content
    await new Promise((r) => setTimeout(r, 200));
    expect(readFileSync(store.path!, 'utf8')).toBe(text);
    expect(readdirSync(dir).filter((n) => n.endsWith('.tmp'))).toEqual([]);
    // a store reopened on the file (a reload) sees everything
    expect(LeaseStore.open(dir, 'net10', T0).size).toBe(2);
  });

  it('a reload: sync() writes before a second store opens the file; a store that never served is discarded without writing', async () => {
    const store = LeaseStore.open(dir, 'net10', T0);
    const s = server(store);
    const y = (send(s, T0, msg(DhcpMsg.DISCOVER, 0x525400000001)) as { yiaddr: number }).yiaddr;
    expect(send(s, T0, msg(DhcpMsg.REQUEST, 0x525400000001, { requested: y, serverId: SERVER }))).toBe('pending');
    s.sync(); // the reload's prepare step, before it builds the new router
    expect(delivered.get(s)!.splice(0).map((r) => r.yiaddr)).toEqual([y]);
    // a prepared server under a config that drops the lease (pool moved), then the reload is refused
    const prepared = LeaseStore.open(dir, 'net10', T0);
    expect(prepared.size).toBe(1);
    const moved = new DhcpServer({ ...config, pools: [[ip('10.0.10.200'), ip('10.0.10.209')]] }, prepared, T0);
    expect(prepared.size).toBe(0);
    moved.discard();
    await new Promise((r) => setTimeout(r, 100));
    expect(LeaseStore.open(dir, 'net10', T0).size).toBe(1); // the live server's lease is still on disk
    // the live server goes on: later grants are written and ACKed
    const y2 = await dora(s, store, T0, 0x525400000002);
    expect(LeaseStore.open(dir, 'net10', T0).byIp(y2)?.mac).toBe(0x525400000002);
  });

  it('a write superseded by another store\'s write of the same file is written again, and its ACK still goes out', async () => {
    const a = LeaseStore.open(dir, 'net10', T0);
    const s = server(a);
    const y = (send(s, T0, msg(DhcpMsg.DISCOVER, 0x525400000001)) as { yiaddr: number }).yiaddr;
    expect(send(s, T0, msg(DhcpMsg.REQUEST, 0x525400000001, { requested: y, serverId: SERVER }))).toBe('pending');
    // a's write starts in its timer (due first); this timer runs right after it, before the write's I/O completes
    await new Promise((r) => setTimeout(r, 1));
    expect(a.busy).toBe(true);
    const b = LeaseStore.open(dir, 'net10', T0);
    b.set({ ip: ip('10.0.10.105'), mac: 0x525400000009, expiresAt: T0 + 3600_000 });
    b.close(); // a synchronous write of the same path supersedes a's write in flight
    await a.flush();
    expect(delivered.get(s)!.map((r) => r.yiaddr)).toEqual([y]);
    expect(LeaseStore.open(dir, 'net10', T0).byIp(y)?.mac).toBe(0x525400000001);
  });
});
