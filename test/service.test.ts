/*
 * The systemd unit tells the truth (issue 18):
 *   - `systemd-analyze verify` accepts docker/vswitch.service as scripts/install.sh
 *     installs it (into a staging root; the unit's /usr/local/bin/vswitch relocated
 *     there, its man page found there), without a warning; the unit is Type=notify,
 *     its ExecReload is `vswitch reload`, RuntimeDirectoryPreserve=restart, and its
 *     program path is the one install.sh and the Docker image create;
 *   - sd_notify for real: the daemon, started with NOTIFY_SOCKET naming a datagram
 *     socket the test listens on (a path, and an abstract name), sends READY=1 only
 *     once its control socket answers (the listener asks `show` the moment READY=1
 *     arrives and gets the bridges and ports) and /healthz answers; RELOADING=1 then
 *     READY=1 around a reload, STOPPING=1 at SIGTERM, a STATUS= line;
 *   - the unit's ExecReload command exits 0 for a good file and 1 for a refused one
 *     (so `systemctl reload` fails);
 *   - the unit's capabilities are enough and needed: a daemon run with exactly its
 *     CapabilityBoundingSet (setpriv) opens a persistent TAP with an owner, attaches
 *     a veth, listens on a socket port owned by another uid, runs host NAT with ICMP
 *     and a forward on a port below 1024; without CAP_CHOWN the socket port fails;
 *   - RestrictAddressFamilies covers every socket the daemon and the CLI open
 *     (strace -f over such a daemon, its metrics, control socket and sd_notify).
 * If systemd-analyze is not installed the first test fails and says so: it is not skipped.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, findPort, runCli, startDaemon, toYaml } from './helpers/daemon.js';
import { PYTHON } from './helpers/scapy.js';
import {
  MAIN_JS, REPO, addNamespace, addVeth, cleanup, freePort, ifname, nsname, q, sh, shr, sleep, spawnTracked, tempDir, toolFile, trackLink, waitFor,
} from './helpers/run.js';

const UNIT = readFileSync(join(REPO, 'docker/vswitch.service'), 'utf8');
const unitValues = (key: string): string[] => [...UNIT.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => m[1].trim());
const unitValue = (key: string): string => {
  const v = unitValues(key);
  expect(v, key).toHaveLength(1);
  return v[0];
};
const CAPS = unitValue('CapabilityBoundingSet').split(/\s+/);

/** A listener on an AF_UNIX datagram socket that prints each message as a JSON line; on READY=1 it asks the daemon at once. */
const NOTIFY_PY = String.raw`
import json, socket, sys, time, urllib.request
path, ctl, health = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind('\0' + path[1:] if path.startswith('@') else path)
print(json.dumps({'listening': True}), flush=True)
while True:
    msg = s.recv(65536).decode()
    rec = {'msg': msg}
    if 'READY=1' in msg.split('\n'):
        try:
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(ctl)
            c.sendall(b'{"id":1,"cmd":"show"}\n')
            rec['show'] = json.loads(c.makefile().readline())
            c.close()
        except Exception as e:
            rec['show_error'] = repr(e)
        try:
            rec['healthz'] = urllib.request.urlopen('http://' + health + '/healthz', timeout=2).status
        except Exception as e:
            rec['healthz_error'] = repr(e)
    print(json.dumps(rec), flush=True)
`;

class NotifyListener {
  readonly records: any[] = [];
  readonly proc: ChildProcess;
  constructor(path: string, ctl: string, health: string) {
    this.proc = spawnTracked(PYTHON, [toolFile('notify.py', NOTIFY_PY), path, ctl, health]);
    let buf = '';
    this.proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        this.records.push(JSON.parse(buf.slice(0, i)));
        buf = buf.slice(i + 1);
      }
    });
  }
  messages(): string[] {
    return this.records.filter((r) => r.msg !== undefined).map((r) => r.msg);
  }
  stop(): void {
    this.proc.kill('SIGKILL');
  }
}

/** The daemon as systemd starts it: `vswitch daemon --config FILE`, with NOTIFY_SOCKET set. */
function spawnNotified(dir: string, config: unknown, notifySocket: string): { proc: ChildProcess; socket: string; configFile: string } {
  const configFile = join(dir, 'vswitch.yaml');
  writeFileSync(configFile, toYaml(config));
  const socket = join(dir, 'vswitch.sock');
  const proc = spawnTracked(process.execPath, [MAIN_JS, 'daemon', '--config', configFile, '--socket', socket], {
    env: { ...process.env, NOTIFY_SOCKET: notifySocket, VSWITCH_SOCKET: '' }, cwd: dir,
  }, 'TERM');
  proc.stderr!.resume();
  return { proc, socket, configFile };
}

describe('the systemd unit, as installed', () => {
  let root: string;

  beforeAll(async () => {
    root = tempDir('unit');
    await sh(`bash ${REPO}/scripts/install.sh --destdir ${q(root)}`, { cwd: REPO, timeoutMs: 120_000 });
  }, 150_000);

  it('systemd-analyze verify accepts it, without a warning (fails, not skips, when systemd-analyze is missing)', async () => {
    const which = await shr('command -v systemd-analyze');
    if (which.code !== 0) {
      throw new Error('systemd-analyze is not installed: the unit CANNOT be verified here. Install the systemd package '
        + '(scripts/setup.sh does when it is missing and systemd is not the running init).');
    }
    const installed = readFileSync(join(root, 'etc/systemd/system/vswitch.service'), 'utf8');
    expect(installed).toBe(UNIT);
    // The unit's program is the staged one: /usr/local/bin/vswitch -> /opt/vswitch/dist/main.js inside the staging root.
    const dir = tempDir('verify');
    const unit = join(dir, 'vswitch.service');
    writeFileSync(unit, installed.replaceAll('/usr/local/bin/vswitch', join(root, 'opt/vswitch/dist/main.js')));
    const r = await shr(`MANPATH=${q(join(root, 'usr/local/share/man'))}: systemd-analyze verify ${q(unit)}`, { timeoutMs: 30_000 });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect((r.stdout + r.stderr).trim(), 'systemd-analyze warnings').toBe('');
    // The check has teeth: a misspelt key is reported.
    writeFileSync(unit, installed.replace('RuntimeDirectoryPreserve=', 'RuntimeDirectoryPreserv=').replaceAll('/usr/local/bin/vswitch', join(root, 'opt/vswitch/dist/main.js')));
    const bad = await shr(`MANPATH=${q(join(root, 'usr/local/share/man'))}: systemd-analyze verify ${q(unit)}`, { timeoutMs: 30_000 });
    expect(bad.stdout + bad.stderr).toMatch(/Unknown key 'RuntimeDirectoryPreserv'/);
  });

  it('says what it promises: notify, ExecReload = vswitch reload, the runtime directory kept, the documented paths', () => {
    expect(unitValue('Type')).toBe('notify');
    expect(unitValue('NotifyAccess')).toBe('main');
    expect(unitValue('ExecStart')).toBe('/usr/local/bin/vswitch daemon --config /etc/vswitch/vswitch.yaml');
    expect(unitValue('ExecReload')).toBe('/usr/local/bin/vswitch reload');
    expect(unitValue('RuntimeDirectory')).toBe('vswitch');
    expect(unitValue('RuntimeDirectoryPreserve')).toBe('restart');
    expect(CAPS.sort()).toEqual(['CAP_CHOWN', 'CAP_NET_ADMIN', 'CAP_NET_BIND_SERVICE', 'CAP_NET_RAW']);
    expect(unitValue('RestrictAddressFamilies').split(/\s+/).sort()).toEqual(['AF_INET', 'AF_INET6', 'AF_PACKET', 'AF_UNIX']);
    // Where install.sh and the Docker image put the command and the config.
    const install = readFileSync(join(REPO, 'scripts/install.sh'), 'utf8');
    expect(install).toContain('ln -sfn "$PREFIX/dist/main.js" "$destdir/usr/local/bin/vswitch"');
    expect(install).toMatch(/^PREFIX=\/opt\/vswitch$/m);
    const docker = readFileSync(join(REPO, 'docker/Dockerfile'), 'utf8');
    expect(docker).toContain('ln -s /opt/vswitch/dist/main.js /usr/local/bin/vswitch');
    expect(docker).toContain('COPY docker/vswitch.yaml /etc/vswitch/vswitch.yaml');
    expect(statSync(join(root, 'usr/local/bin/vswitch'), { throwIfNoEntry: false }), 'a dangling link in the staging root is fine').toBeUndefined();
    expect(readFileSync(join(root, 'etc/vswitch/vswitch.yaml'), 'utf8')).toBe(readFileSync(join(REPO, 'docker/vswitch.yaml'), 'utf8'));
    expect(existsSync(join(root, 'opt/vswitch/node_modules/@vswitch/netdev/build/Release/netdev.node'))).toBe(true);
  });

  it('the installed command runs from its staging root (the deploy has its dependencies and the addon)', async () => {
    const r = await shr(`${q(process.execPath)} ${q(join(root, 'opt/vswitch/dist/main.js'))} config check ${q(join(root, 'etc/vswitch/vswitch.yaml'))}`);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/ok \(1 bridges/);
  });
});

describe('sd_notify: READY=1 when the daemon answers, RELOADING/READY around reloads, STOPPING at stop', () => {
  afterAll(cleanup);

  for (const kind of ['path', 'abstract'] as const) {
    it(`NOTIFY_SOCKET as ${kind === 'path' ? 'a path' : 'an abstract name (@...)'}`, async () => {
      const dir = tempDir('notify');
      const notifySocket = kind === 'path' ? join(dir, 'notify.sock') : `@vswitch-test-notify-${process.pid}-${Date.now()}`;
      const health = `127.0.0.1:${await freePort()}`;
      const P = ifname(kind === 'path' ? 'nt1' : 'nt2');
      trackLink(P);
      const config = { stateDir: join(dir, 'state'), metrics: { listen: health }, bridges: { br0: { ports: { [P]: { type: 'tap' } } }, br1: {} } };
      const listener = new NotifyListener(notifySocket, join(dir, 'vswitch.sock'), health);
      try {
        await waitFor('the notify listener', () => listener.records.some((r) => r.listening));
        const d = spawnNotified(dir, config, notifySocket);
        const ready = await waitFor('READY=1', () => listener.records.find((r) => r.msg?.split('\n').includes('READY=1')), { timeoutMs: 15_000 });
        // The moment READY=1 arrived, the control socket answered with the bridges and their ports, and /healthz with 200.
        expect(ready.show_error).toBeUndefined();
        expect(ready.show.ok).toBe(true);
        expect(ready.show.result.map((b: any) => b.name).sort()).toEqual(['br0', 'br1']);
        expect(findPort(ready.show.result, P)).toBeDefined();
        expect(ready.healthz).toBe(200);
        expect(ready.msg).toMatch(/^STATUS=2 bridges, 1 port, 0 routers$/m);
        expect(ready.msg).toMatch(new RegExp(`^MAINPID=${d.proc.pid}$`, 'm'));
        // Nothing came before it.
        expect(listener.messages()[0]).toBe(ready.msg);

        // A reload: RELOADING=1, then READY=1; a refused one too, and `vswitch reload` exits 1.
        const ok = await runCli(['reload'], { socket: d.socket });
        expect(ok.code, ok.stderr).toBe(0);
        await waitFor('RELOADING, READY', () => listener.messages().length >= 3);
        expect(listener.messages()[1]).toBe('RELOADING=1');
        expect(listener.messages()[2]).toMatch(/^READY=1\nSTATUS=/);
        writeFileSync(d.configFile, 'bridges: {br0: {ageing: soon}}\n');
        const refused = await runCli(['reload'], { socket: d.socket });
        expect(refused.code).toBe(1);
        await waitFor('RELOADING, READY again', () => listener.messages().length >= 5);
        expect(listener.messages().slice(3, 5).map((m) => m.split('\n')[0])).toEqual(['RELOADING=1', 'READY=1']);

        d.proc.kill('SIGTERM');
        await waitFor('STOPPING=1', () => listener.messages().some((m) => m.startsWith('STOPPING=1')));
        await new Promise((r) => (d.proc.exitCode !== null ? r(null) : d.proc.once('exit', r)));
        expect(d.proc.exitCode).toBe(0);
      } finally {
        listener.stop();
      }
    });
  }

  it('a notify socket nobody listens on is a warning (notify_failed), not a failure', async () => {
    const dir = tempDir('nonotify');
    const d = spawnNotified(dir, { stateDir: join(dir, 'state'), metrics: { listen: 'off' }, bridges: { br0: {} } }, join(dir, 'nobody.sock'));
    let log = '';
    d.proc.stderr!.setEncoding('utf8').on('data', (x: string) => { log += x; });
    await waitFor('daemon_started', () => log.includes('daemon_started'));
    expect(log).toMatch(/"event":"notify_failed".*nobody\.sock/);
    expect((await runCli(['show'], { socket: d.socket })).code).toBe(0);
    d.proc.kill('SIGTERM');
    await new Promise((r) => d.proc.once('exit', r));
  });
});

describe('the unit\'s ExecReload, capabilities and address families', () => {
  afterAll(cleanup);

  it('ExecReload exits 0 for a good file and 1 for a refused one (systemctl reload fails, the daemon runs on)', async () => {
    const d = await startDaemon({ bridges: { br0: {} } });
    try {
      const cmd = unitValue('ExecReload').replace('/usr/local/bin/vswitch', `${q(process.execPath)} ${q(MAIN_JS)}`);
      const env = `VSWITCH_SOCKET=${q(d.socket)}`;
      expect((await shr(`${env} ${cmd}`)).code).toBe(0);
      writeFileSync(d.configFile, 'bridges: {br0: {ports: {x: {type: nonsense}}}}\n');
      const r = await shr(`${env} ${cmd}`);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/bridges\.br0\.ports\.x\.type/);
      expect(d.alive()).toBe(true);
    } finally {
      await d.stop();
    }
  });

  /** A daemon config using every privileged thing: TAP with owner, attached veth, socket port owned by another uid, host NAT with ICMP and a forward below 1024. */
  async function privileged(tag: string): Promise<{ ns: string; config: Record<string, unknown>; dir: string; names: Record<string, string> }> {
    const ns = nsname(`${tag}h`);
    await addNamespace(ns);
    await sh(`ip -n ${ns} link set lo up`);
    const names = { tap: ifname(`${tag}t`), att: ifname(`${tag}a`), peer: ifname(`${tag}p`) };
    await addVeth(names.att, names.peer);
    await sh(`ip link set ${names.att} netns ${ns} && ip -n ${ns} link set ${names.att} up`);
    trackLink(names.tap);
    const dir = tempDir(`${tag}caps`);
    await sh(`chmod 755 ${q(dir)}`);
    const port = 600 + Math.floor(Math.random() * 300);
    return {
      ns, dir, names,
      config: {
        stateDir: join(dir, 'state'),
        metrics: { listen: '127.0.0.1:9464' },
        bridges: {
          br0: {
            ports: {
              [names.tap]: { type: 'tap', persistent: false, owner: 65534, vlan: { mode: 'access', vid: 10 } },
              [names.att]: { type: 'attach', vlan: { mode: 'access', vid: 20 } },
              sockp: { type: 'socket', path: join(dir, 'vm.sock'), owner: 65534, group: 65534, mode: '0660', vlan: { mode: 'access', vid: 10 } },
            },
          },
        },
        routers: {
          r0: {
            uplink: { kind: 'host', dns: ['192.0.2.53'], icmp: true, listen: '127.0.0.1' },
            nat: { maxSessions: 1000 },
            forwards: [{ proto: 'tcp', port, to: '10.78.10.50:22' }],
            networks: { net10: { bridge: 'br0', vlan: 10, address: '10.78.10.1/24' } },
          },
        },
      },
    };
  }

  it('exactly the unit\'s capabilities are enough for TAPs, attached interfaces, socket ports with an owner, host NAT with ICMP and a forward below 1024', async () => {
    const p = await privileged('c1');
    const bounding = `--bounding-set=-all,${CAPS.map((c) => `+${c.replace('CAP_', '').toLowerCase()}`).join(',')}`;
    const d = await startDaemon(p.config, { netns: p.ns, wrap: ['setpriv', bounding, '--inh-caps=-all', '--'] });
    try {
      const caps = (await sh(`grep CapEff /proc/${d.proc.pid}/status`)).trim();
      console.log(`daemon ${caps} (bounding set ${bounding})`);
      const show = await d.showJson();
      for (const n of [p.names.tap, p.names.att, 'sockp']) {
        expect(findPort(show, n), `${n} is running`).toBeDefined();
      }
      expect(show[0].failed).toEqual([]);
      const st = statSync(join(p.dir, 'vm.sock'));
      expect([st.uid, st.gid]).toEqual([65534, 65534]);
      const r = (await d.ok(['router', 'show', '--json'], { json: true })).json[0];
      expect(r.uplink.icmp).toBe('on');
      const fw = (await d.ok(['nat', 'forward', 'show', '--json'], { json: true })).json[0];
      expect(fw.state, JSON.stringify(fw)).toBe('listening');
      expect(d.logs.filter((l) => ['warn', 'error', 'fatal'].includes(l.obj?.level)).map((l) => l.raw)).toEqual([]);
    } finally {
      await d.stop();
    }
  });

  it('CAP_CHOWN is needed: without it the socket port with an owner cannot be made', async () => {
    const p = await privileged('c2');
    const bounding = `--bounding-set=-all,${CAPS.filter((c) => c !== 'CAP_CHOWN').map((c) => `+${c.replace('CAP_', '').toLowerCase()}`).join(',')}`;
    const d = await startDaemon(p.config, { netns: p.ns, wrap: ['setpriv', bounding, '--inh-caps=-all', '--'], noWait: true });
    try {
      await d.waitExit(15_000);
      expect(d.exitCode).toBe(1);
      expect(d.logText()).toMatch(/sockp.*(EPERM|not permitted)/i);
    } finally {
      await d.stop();
    }
  });

  it('every socket the daemon and the CLI open is of a family RestrictAddressFamilies allows (strace -f)', async () => {
    const p = await privileged('c3');
    const trace = join(p.dir, 'strace.out');
    const notifyDir = tempDir('snotify');
    const notify = join(notifyDir, 'n.sock');
    const listener = new NotifyListener(notify, join(p.dir, 'none.sock'), '127.0.0.1:1');
    try {
      await waitFor('listener', () => listener.records.some((r) => r.listening));
      const d = await startDaemon(p.config, {
        netns: p.ns,
        wrap: ['env', `NOTIFY_SOCKET=${notify}`, 'strace', '-f', '-qq', '-e', 'trace=socket,socketpair', '-o', trace, '--'],
      });
      try {
        await waitFor('READY=1', () => listener.messages().some((m) => m.startsWith('READY=1')));
        await sh(`ip netns exec ${p.ns} curl -sf http://127.0.0.1:9464/metrics -o /dev/null && ip netns exec ${p.ns} curl -sf http://127.0.0.1:9464/healthz`);
        await d.ok(['reload']);
        await d.ok(['router', 'show']);
      } finally {
        await d.stop();
      }
      // The CLI (ExecReload runs it under the same restrictions).
      const cliTrace = join(p.dir, 'cli.out');
      await shr(`strace -f -qq -e trace=socket,socketpair -o ${q(cliTrace)} ${q(process.execPath)} ${q(MAIN_JS)} --socket ${q(join(p.dir, 'none.sock'))} reload`);
      const text = readFileSync(trace, 'utf8') + readFileSync(cliTrace, 'utf8');
      const families = new Set([...text.matchAll(/socket(?:pair)?\((AF_\w+|\d+)/g)].map((m) => m[1]));
      const allowed = new Set(unitValue('RestrictAddressFamilies').split(/\s+/));
      console.log(`socket families used: ${[...families].sort().join(' ')}`);
      expect([...families].filter((f) => !allowed.has(f))).toEqual([]);
      // And each allowed family is used (none is there for nothing); AF_INET6 serves IPv6 metrics and forward addresses.
      expect([...allowed].filter((f) => f !== 'AF_INET6' && !families.has(f))).toEqual([]);
      expect(families.has('AF_NETLINK')).toBe(false);
    } finally {
      listener.stop();
    }
  });
});
