/*
 * Faults: the daemon killed with SIGKILL and started again, and a state directory
 * with links planted in it.
 *
 * kill -9: router r0 has network net10 (10.78.10.0/24, DHCP pool of 40) on
 * bridge br0 and an uplink to an "internet" namespace. Five VMs on persistent
 * TAPs (they keep their NICs while the daemon is dead). Two take leases with
 * busybox udhcpc and two runtime port forwards are added; then a fifth VM runs a
 * raw-socket client doing DORA for 20 chaddrs round after round (every ACK a lease
 * file write), a third udhcpc client is bound, and the daemon is SIGKILLed right
 * after that ACK, among the storm's (its port is unguarded: it speaks for 20
 * chaddrs from one MAC, which a guarded VM port refuses). A new daemon on the same
 * config and state directory (the TAPs handed back to the root namespace for its
 * start, as the daemon reopens a persistent TAP by name there) removes the temp
 * files a kill between write and rename leaves, lists every lease any client was
 * ACKed before the kill (an ACK waits for the group commit that makes its lease
 * durable) and every runtime forward; a fourth udhcpc client is given
 * none of the leased addresses (the server's next-fit cursor starts over at the
 * pool's first address, which is leased); each leased client asking again gets its
 * own address; the VMs reach the gateway through the same TAPs, and a forward
 * carries traffic. The stale control socket the dead daemon left is replaced by one
 * that is again 0600, owned by root, and refuses user nobody. (cli.test.ts checks
 * the mode and the refusal on a fresh daemon; here it is the socket recreated over
 * a crashed one's. dhcp.test.ts restarts after SIGTERM; this is SIGKILL.)
 *
 * Links: a lease file that is a symlink, a forwards file that is a symlink, and a
 * state directory that is a symlink each make the daemon refuse to start with an
 * error naming the file; the link's target is left byte for byte as it was. While
 * running, a symlink planted at the name of the lease file's temporary copy makes
 * the grant fail (no ACK without a durable lease) instead of writing through it.
 */
import { lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon, startDaemon } from './helpers/daemon.js';
import { leases, makeDhcpVm, restartDaemon, tapIntoVm, tapToRoot, udhcpcOnce, type DhcpVm, type LeaseRow } from './helpers/dhcp.js';
import { makeInternet, udpSend, udpTool, type Internet } from './helpers/inet.js';
import { cleanup, ifname, nsExec, q, sleep, tempDir, trackLink, waitFor } from './helpers/run.js';
import { Background, linkExists, pingUntil } from './helpers/vm.js';

const NOBODY = 'setpriv --reuid=nobody --regid=nogroup --clear-groups';
const PUB = '198.51.100.2';
const GW = '10.78.10.1';
const POOL = Array.from({ length: 40 }, (_, i) => `10.78.10.${100 + i}`);

/*
 * A DHCP client for 20 chaddrs (02:dd:00:00:00:01-14) over a raw socket, in
 * turn: DISCOVER, wait for the OFFER, REQUEST it, wait for the ACK, print
 * "ACK mac ip" at once, next chaddr; round after round (each ACK a new lease or
 * a renewal, each one a lease file write) until stopped or the server is gone.
 */
const STORM_PY = String.raw`
import os, random, socket, struct, sys, time
iface = sys.argv[1]
own = bytes.fromhex(open('/sys/class/net/%s/address' % iface).read().strip().replace(':', ''))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind((iface, 0))
s.settimeout(0.3)
def csum(b):
    if len(b) % 2: b += b'\0'
    t = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while t > 0xffff: t = (t & 0xffff) + (t >> 16)
    return (~t) & 0xffff
def frame(msg):
    u = struct.pack('!HHHH', 68, 67, 8 + len(msg), 0) + msg
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(u), 0, 0, 64, 17, 0, b'\0' * 4, b'\xff' * 4)
    ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
    return b'\xff' * 6 + own + b'\x08\x00' + ip + u
def dhcp(t, xid, chaddr, req=None, sid=None):
    m = struct.pack('!BBBBIHH4s4s4s4s', 1, 1, 6, 0, xid, 0, 0x8000, b'\0' * 4, b'\0' * 4, b'\0' * 4, b'\0' * 4)
    m += chaddr + b'\0' * 10 + b'\0' * 192 + b'\x63\x82\x53\x63' + bytes([53, 1, t])
    if req: m += bytes([50, 4]) + req
    if sid: m += bytes([54, 4]) + sid
    return m + b'\xff' + b'\0' * 40
def wait(xid, want):
    end = time.time() + 1.0
    while time.time() < end:
        try: f = s.recv(2048)
        except socket.timeout: return None
        if len(f) < 14 + 20 + 8 + 240 or f[23] != 17 or f[36:38] != b'\x00\x44': continue
        m = f[42:]
        if struct.unpack('!I', m[4:8])[0] != xid: continue
        opts, i, mt, sid = m[240:], 0, None, None
        while i + 1 < len(opts) and opts[i] != 255:
            if opts[i] == 0: i += 1; continue
            c, l = opts[i], opts[i + 1]
            if c == 53: mt = opts[i + 2]
            if c == 54: sid = opts[i + 2:i + 6]
            i += 2 + l
        if mt == want: return m[16:20], sid
    return None
n = 0
while True:
    n += 1
    chaddr = bytes([2, 0xdd, 0, 0, 0, n % 20 + 1])  # 20 clients, leased then renewed over and over
    xid = random.getrandbits(32)
    s.send(frame(dhcp(1, xid, chaddr)))
    o = wait(xid, 2)
    if o is None: continue
    s.send(frame(dhcp(3, xid, chaddr, o[0], o[1])))
    a = wait(xid, 5)
    if a is not None:
        print('ACK %s %s' % (':'.join('%02x' % b for b in chaddr), socket.inet_ntoa(a[0])), flush=True)
`;


/**
 * `trusted`: TAPs without the switch guards. The storm client speaks for 20
 * chaddrs from one MAC, as a host with clients behind it would (a bridge, a relay):
 * on a guarded (VM) port the server would refuse chaddrs other than the frame's
 * source and cap the port at 4 leases (server.ts), so its port is an unguarded one.
 */
function routerConfig(stateDir: string, taps: string[], uplink?: string, trusted: string[] = []): Record<string, unknown> {
  const port = (t: string): Record<string, unknown> => ({
    type: 'tap', persistent: true, vlan: { mode: 'access', vid: 10 },
    ...(trusted.includes(t) ? { guard: { dhcp: false, ipSource: false } } : {}),
  });
  return {
    stateDir,
    bridges: {
      br0: { ports: Object.fromEntries(taps.map((t) => [t, port(t)])) },
    },
    routers: {
      r0: {
        ...(uplink ? { uplink: { interface: uplink, address: `${PUB}/24`, gateway: '198.51.100.1' } } : {}),
        networks: {
          net10: { bridge: 'br0', vlan: 10, address: `${GW}/24`, dhcp: { pool: [`${POOL[0]}-${POOL.at(-1)}`], leaseTime: 600 } },
        },
      },
    },
  };
}

const forwardsOf = async (d: Daemon): Promise<any[]> => (await d.ok(['nat', 'forward', 'show'], { json: true })).json;
const fwdKey = (f: any): string => `${f.proto} ${f.public} ${f.inside} ${f.source}`;

describe('kill -9 and a restart keep every DHCP lease and every runtime port forward', () => {
  const T = { c1: ifname('k1'), c2: ifname('k2'), c3: ifname('k3'), c4: ifname('k4'), c5: ifname('k5') };
  let d: Daemon;
  let inet: Internet;
  let stateDir: string;
  const vms: Record<string, DhcpVm> = {};
  let before: LeaseRow[] = [];
  let forwardsBefore: any[] = [];
  /** (chaddr, address) pairs the storm client was ACKed before the kill. */
  let stormAcks: [string, string][] = [];
  const bg: Background[] = [];

  beforeAll(async () => {
    // Persistent TAPs outlive the daemon: registered so that cleanup deletes them.
    Object.values(T).forEach(trackLink);
    inet = await makeInternet('kinet');
    stateDir = tempDir('kstate');
    d = await startDaemon(routerConfig(stateDir, Object.values(T), inet.uplink, [T.c5]));
    for (const [k, t] of Object.entries(T)) vms[k] = await makeDhcpVm(k, t);
  });

  afterAll(async () => {
    for (const b of bg) await b.stop();
    await d?.stop();
    await cleanup();
  });

  it('three clients lease, two forwards are added, and the daemon is SIGKILLed right after an ACK, amid a stream of DORAs', async () => {
    const script = join(tempDir('storm'), 'storm.py');
    writeFileSync(script, STORM_PY);
    let storm: Background | undefined;
    for (const k of ['c1', 'c2', 'c3']) {
      if (k === 'c3') {
        // Another VM keeps doing DORA for new chaddrs, so the kill lands among grants.
        storm = new Background(vms.c5.ns, `/usr/bin/python3 -u ${q(script)} ${q(vms.c5.ifname)}`);
        bg.push(storm);
        await waitFor('the storm client to be ACKed 10 times', () => (storm!.out.match(/^ACK /gm)?.length ?? 0) >= 10, { timeoutMs: 20_000, intervalMs: 50 });
      }
      const r = await udhcpcOnce(vms[k]);
      expect(r.code, r.log).toBe(0);
      expect(POOL).toContain(r.lease?.ip);
      if (k === 'c3') {
        // No pause: whatever the client was told is on disk, or it was not told.
        d.proc.kill('SIGKILL');
        break;
      }
      if (k === 'c1') {
        await d.ok(['nat', 'forward', 'add', 'tcp', '2222', `${r.lease!.ip}:22`]);
        await d.ok(['nat', 'forward', 'add', 'udp', '5300-5302', `${r.lease!.ip}:53`]);
        forwardsBefore = (await forwardsOf(d)).filter((f) => f.source === 'runtime');
        expect(forwardsBefore.length).toBe(2);
      }
    }
    expect(await d.waitExit(5000)).toBe(true);
    expect(d.exitSignal).toBe('SIGKILL');
    await sleep(300);
    await storm!.stop();
    stormAcks = [...storm!.out.matchAll(/^ACK (\S+) (\S+)$/gm)].map((m) => [m[1], m[2]]);
    expect(stormAcks.length).toBeGreaterThanOrEqual(10);
    console.log(`storm client: ${stormAcks.length} ACKs before the kill, ${new Set(stormAcks.map(([m]) => m)).size} clients`);
    // What the clients were told, from their own scripts.
    before = ['c1', 'c2', 'c3'].map((k) => {
      const ev = udhcpcLease(vms[k]);
      return { mac: vms[k].mac, ip: ev } as LeaseRow;
    });
    expect(new Set(before.map((l) => l.ip)).size).toBe(3);
    // The VMs kept their NICs: the TAPs are persistent.
    for (const vm of Object.values(vms)) expect(await linkExists(vm.ifname, vm.ns), vm.name).toBe(true);
    // The dead daemon left its socket file behind.
    expect(lstatSync(d.socket).isSocket()).toBe(true);
  }, 60_000);

  it('a new daemon lists every lease and every runtime forward, and removes the temp files a crash left', async () => {
    // What a kill between a temp file's write and its rename leaves behind (state-file.ts names).
    const stale = [`.leases-net10.json.${d.proc.pid}.tmp`, `.forwards-r0.json.${d.proc.pid}.7.tmp`];
    for (const f of stale) writeFileSync(join(stateDir, f), '{"torn":');
    // The daemon re-opens a persistent TAP by name in the root namespace: hand the
    // VMs' TAPs back there for the start (as a hypervisor's TAPs live), then into the VMs again.
    for (const vm of Object.values(vms)) await tapToRoot(vm);
    d = await restartDaemon(d);
    expect(readdirSync(stateDir).filter((f) => f.endsWith('.tmp')), 'stale temp files after the restart').toEqual([]);
    for (const vm of Object.values(vms)) {
      const mac = vm.mac;
      await tapIntoVm(vm);
      expect(vm.mac, `${vm.name}: the persistent TAP kept its MAC`).toBe(mac);
    }
    const now = await leases(d, 'net10');
    for (const l of before) {
      const row = now.find((x) => x.mac.toLowerCase() === l.mac);
      expect(row, `lease of ${l.mac} after the restart: ${JSON.stringify(now)}`).toBeDefined();
      expect(row!.ip).toBe(l.ip);
      expect(row!.state).toBe('bound');
      expect(row!.expiresInSec).toBeGreaterThan(500);
    }
    // Every ACK the storm client saw before the kill: the lease was on disk before the ACK left.
    const missing = stormAcks.filter(([mac, ip]) => !now.some((x) => x.mac.toLowerCase() === mac && x.ip === ip && x.state === 'bound'));
    expect(missing, `ACKed before the kill but not leased after it (of ${stormAcks.length})`).toEqual([]);
    const all = now.filter((l) => l.state === 'bound');
    expect(new Set(all.map((l) => l.ip)).size).toBe(all.length);
    const fw = (await forwardsOf(d)).filter((f) => f.source === 'runtime');
    expect(fw.map(fwdKey).sort()).toEqual(forwardsBefore.map(fwdKey).sort());
    // The lease file on disk is the daemon's: a regular file, mode 0600.
    const st = lstatSync(join(stateDir, 'leases-net10.json'));
    expect(st.isFile()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
  });

  it('a new client gets none of the leased addresses; each leased client rebooting gets its own back', async () => {
    const leased = new Set(before.map((l) => l.ip));
    // The pool's first address is leased, and a restarted server's next-fit scan starts there.
    expect(leased.has(POOL[0])).toBe(true);
    const r = await udhcpcOnce(vms.c4);
    expect(r.code, r.log).toBe(0);
    expect(leased.has(r.lease!.ip)).toBe(false);
    // Each VM lost its address with the move: it asks for it again (option 50), and gets it.
    for (const [i, k] of ['c1', 'c2', 'c3'].entries()) {
      const again = await udhcpcOnce(vms[k], { requestIp: before[i].ip });
      expect(again.code, again.log).toBe(0);
      expect(again.lease?.ip, k).toBe(before[i].ip);
    }
    const all = (await leases(d, 'net10')).filter((l) => l.state === 'bound');
    expect(new Set(all.map((l) => l.ip)).size).toBe(all.length);
    const storm = new Set(stormAcks.map(([, ip]) => ip));
    expect(storm.has(r.lease!.ip), 'the new client got an address the storm client holds').toBe(false);
  }, 60_000);

  it('the VMs reach the gateway through their old TAPs, and a runtime forward carries traffic', async () => {
    for (const k of ['c1', 'c2', 'c3']) expect(await pingUntil(vms[k].ns, GW, 15_000), k).toBe(true);
    await waitFor('the uplink to be up', async () => {
      const r = (await d.ok(['router', 'show', 'r0'], { json: true })).json[0];
      return /^up/.test(String(r.uplink?.state));
    }, { timeoutMs: 15_000 });
    const c1 = vms.c1;
    await nsExec(c1.ns, `ip route replace default via ${GW}`);
    const srv = new Background(c1.ns, `/usr/bin/python3 -u ${q(udpTool())} serve 53`);
    bg.push(srv);
    await waitFor('udp 53 in c1', async () => /:53\s/.test(await nsExec(c1.ns, 'ss -Hlun')), { timeoutMs: 10_000, intervalMs: 100 });
    const reply = await waitFor('a reply through the forward', async () => {
      const out = await udpSend(inet.ns, PUB, 5300, { msg: 'through-the-crash', timeoutSec: 1 });
      return out.startsWith('reply') ? out : undefined;
    }, { timeoutMs: 15_000, intervalMs: 200 });
    expect(reply).toBe('reply through-the-crash');
  }, 60_000);

  it('the control socket over the dead one is again 0600, root-owned, and refuses user nobody', async () => {
    const st = statSync(d.socket);
    expect(st.isSocket()).toBe(true);
    expect((st.mode & 0o777).toString(8)).toBe('600');
    expect(st.uid).toBe(0);
    expect(st.gid).toBe(0);
    const r = await d.cli(['show'], { asUser: NOBODY });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/permission|EACCES/i);
    expect(r.stdout).toBe('');
  });
});

/** The address udhcpc's script last applied in a VM. */
function udhcpcLease(vm: DhcpVm): string {
  const text = readFileSync(join(vm.dir, 'udhcpc.env'), 'utf8');
  const bound = [...text.matchAll(/event=(bound|renew)\nip=([\d.]+)/g)];
  if (bound.length === 0) throw new Error(`no lease recorded in ${vm.dir}`);
  return bound.at(-1)![2];
}

describe('the daemon follows no link it did not make in its state directory', () => {
  const TP = ifname('ks');
  const PRECIOUS = 'precious: not the daemon\'s to touch\n';

  beforeAll(() => { trackLink(TP); });
  afterAll(async () => { await cleanup(); });

  /** Starts a daemon expected to refuse; returns its log text and exit code. */
  async function refusedStart(config: Record<string, unknown>): Promise<{ code: number | null; text: string }> {
    const d = await startDaemon(config, { noWait: true });
    const exited = await d.waitExit(15_000);
    if (!exited) {
      await d.stop();
      throw new Error(`the daemon started: ${d.logText().slice(-1000)}`);
    }
    return { code: d.exitCode, text: d.logText() };
  }

  function target(): string {
    const f = join(tempDir('target'), 'elsewhere.json');
    writeFileSync(f, PRECIOUS, { mode: 0o644 });
    return f;
  }

  // Issue 12 (degrade, don't die): such a file disables only what it holds (that
  // network's DHCP server, that router's runtime forwards), no longer the whole daemon.
  it.each([
    ['leases-net10.json', (r: any) => r.networks.find((n: any) => n.name === 'net10').state],
    ['forwards-r0.json', (r: any) => r.forwards],
  ])('a symlink as %s: only its part is disabled, the file named, the link not followed, its target unchanged', async (file, stateOf) => {
    const stateDir = tempDir('lstate');
    const tgt = target();
    const link = join(stateDir, file);
    symlinkSync(tgt, link);
    const d = await startDaemon(routerConfig(stateDir, [TP]));
    try {
      const failed = d.logsMatching(file === 'forwards-r0.json' ? 'forwards_failed' : 'dhcp_failed')[0];
      console.log(`disabled (${file}):`, failed?.raw);
      expect(failed?.raw).toContain(link);
      expect(failed?.raw).toMatch(/symlink/i);
      const view = (await d.ok(['router', 'show', 'r0'], { json: true })).json[0];
      expect(stateOf(view)).toMatch(/failed: .*symlink/);
      expect(d.alive()).toBe(true);
    } finally {
      await d.stop();
    }
    expect(readFileSync(tgt, 'utf8')).toBe(PRECIOUS);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(readlinkSync(link)).toBe(tgt);
  });

  it('a state directory that is a symlink: refused at start, the directory named', async () => {
    const real = tempDir('realstate');
    const stateDir = join(tempDir('lstate'), 'state');
    symlinkSync(real, stateDir);
    const r = await refusedStart(routerConfig(stateDir, [TP]));
    console.log('refused (state dir):', r.text.trim().split('\n').slice(-2).join(' | '));
    expect(r.code).not.toBe(0);
    expect(r.text).toContain(stateDir);
    expect(readdirSync(real)).toEqual([]); // nothing was created through the link
  });

  it('while running: a link at the lease file\'s temporary name makes the grant fail instead of writing through it', async () => {
    const stateDir = tempDir('rstate');
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    const d = await startDaemon(routerConfig(stateDir, [TP]));
    try {
      const vm = await makeDhcpVm('ks', TP);
      const tgt = target();
      // state-file.ts writes `.<name>.<pid>.tmp` then renames it over the file.
      const tmp = join(stateDir, `.leases-net10.json.${d.proc.pid}.tmp`);
      symlinkSync(tgt, tmp);
      const r = await udhcpcOnce(vm, { tries: 2 });
      expect(r.code).not.toBe(0); // no ACK: the lease could not be written
      expect(readFileSync(tgt, 'utf8')).toBe(PRECIOUS);
      expect(lstatSync(tmp).isSymbolicLink()).toBe(true);
      // and the operator is told, once (rate-limited), at warning level
      const warn = await d.waitForLog('dhcp_store_failed', 5000);
      expect(warn.obj?.level).toBe('warn');
      expect(d.logsMatching('dhcp_store_failed').length).toBeLessThanOrEqual(2);
      // Without the link, the same client is served and the lease file is a plain file.
      unlinkSync(tmp);
      await sleep(100);
      const ok = await udhcpcOnce(vm);
      expect(ok.code, ok.log).toBe(0);
      expect(lstatSync(join(stateDir, 'leases-net10.json')).isFile()).toBe(true);
      expect(readFileSync(tgt, 'utf8')).toBe(PRECIOUS);
      expect(d.alive()).toBe(true);
    } finally {
      await d.stop();
    }
  }, 60_000);
});
