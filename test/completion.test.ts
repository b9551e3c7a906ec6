/*
 * Shell completion and the man page, as scripts/setup.sh installs them (it runs
 * `scripts/install.sh --docs-only`; here into a staging root): the bash script
 * loads in bash and completes `vswitch add<TAB>`, keywords, option values and, from
 * a running daemon, bridge and port names; the zsh function loads through compinit
 * in an interactive zsh (driven by zpty) and completes too; `man -l` renders the page
 * with every command in it, and groff finds nothing to warn about.
 */
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, startDaemon } from './helpers/daemon.js';
import { MAIN_JS, REPO, cleanup, ifname, q, sh, shr, tempDir, trackLink } from './helpers/run.js';

const ROOT = tempDir('docs');
const BASH = join(ROOT, 'usr/share/bash-completion/completions/vswitch');
const ZSH_DIR = join(ROOT, 'usr/local/share/zsh/site-functions');
const MAN = join(ROOT, 'usr/local/share/man/man8/vswitch.8');

/** A `vswitch` on PATH (the completion scripts call `vswitch __complete ...`). */
function binDir(): string {
  const dir = tempDir('bin');
  writeFileSync(join(dir, 'vswitch'), `#!/bin/sh\nexec ${q(process.execPath)} ${q(MAIN_JS)} "$@"\n`);
  chmodSync(join(dir, 'vswitch'), 0o755);
  return dir;
}

/** Runs bash's completion function for the words (the last one is being completed). */
async function bashComplete(words: string[], env: Record<string, string> = {}): Promise<string[]> {
  const script = `source ${q(BASH)}
COMP_WORDS=(${words.map(q).join(' ')}); COMP_CWORD=$(( \${#COMP_WORDS[@]} - 1 )); COMPREPLY=()
_vswitch
printf '%s\\n' "\${COMPREPLY[@]}"`;
  const envs = Object.entries(env).map(([k, v]) => `${k}=${q(v)}`).join(' ');
  const r = await shr(`env ${envs} bash --norc --noprofile -c ${q(script)}`);
  expect(r.stderr, r.stderr).toBe('');
  return r.stdout.split('\n').filter(Boolean).sort();
}

describe('completion and man page, installed as scripts/setup.sh does', () => {
  let d: Daemon;
  const P1 = ifname('cp1');

  beforeAll(async () => {
    await sh(`bash ${REPO}/scripts/install.sh --docs-only --destdir ${q(ROOT)}`, { cwd: REPO });
    trackLink(P1);
    d = await startDaemon({ bridges: { brc: { ports: { [P1]: { type: 'tap' } } }, brd: {} } });
  });
  afterAll(async () => {
    await d?.stop();
    await cleanup();
  });

  it('setup.sh installs them with install.sh --docs-only, where bash-completion, zsh and man-db look', () => {
    const setup = readFileSync(join(REPO, 'scripts/setup.sh'), 'utf8');
    expect(setup).toMatch(/^bash scripts\/install\.sh --docs-only$/m);
    for (const f of [BASH, join(ZSH_DIR, '_vswitch'), MAN]) expect(existsSync(f), f).toBe(true);
  });

  it('bash: the script loads, registers vswitch, and completes `vswitch add<TAB>` to addbr addif', async () => {
    const r = await shr(`bash --norc --noprofile -c ${q(`source ${q(BASH)} && complete -p vswitch`)}`);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe('complete -F _vswitch vswitch');
    expect(await bashComplete(['vswitch', 'add'])).toEqual(['addbr', 'addif']);
  });

  it('bash: subcommands, keywords, option values and choices', async () => {
    expect(await bashComplete(['vswitch', 'vlan', ''])).toEqual(['add', 'del', 'show']);
    expect(await bashComplete(['vswitch', 'vlan', 'add', ''])).toEqual(['dev', 'pvid', 'untagged', 'vid']);
    expect(await bashComplete(['vswitch', 'fdb', 'flush', 'dev', 'x', ''])).toEqual(['br', 'dev', 'dynamic', 'vlan']);
    expect(await bashComplete(['vswitch', 'port', 'set', 'x', 'guard', ''])).toEqual(['default', 'dhcp-only', 'off', 'on']);
    expect(await bashComplete(['vswitch', 'daemon', '--log-level', 'w'])).toEqual(['warn']);
    expect(await bashComplete(['vswitch', 'addif', 'br0', 'x', '--tr'])).toEqual(['--trunk']);
    expect(await bashComplete(['vswitch', '--socket', '/nonexistent/x', 'mon'])).toEqual(['monitor']);
  });

  it('bash: bridge and port names come from the running daemon, nothing when none answers', async () => {
    const env = { PATH: `${binDir()}:${process.env.PATH}`, VSWITCH_SOCKET: d.socket };
    expect(await bashComplete(['vswitch', 'delbr', ''], env)).toEqual(['brc', 'brd']);
    expect(await bashComplete(['vswitch', 'show', 'brd'], env)).toEqual(['brd']);
    expect(await bashComplete(['vswitch', 'vlan', 'add', 'dev', ''], env)).toEqual([P1]);
    expect(await bashComplete(['vswitch', 'delif', 'brc', ''], env)).toEqual([P1]);
    expect(await bashComplete(['vswitch', 'delbr', ''], { ...env, VSWITCH_SOCKET: join(ROOT, 'none.sock') })).toEqual([]);
  });

  it('zsh: the function loads through compinit in an interactive zsh and completes (zpty)', async () => {
    const drive = `zmodload zsh/zpty
zpty -b z 'zsh -f -i'
zpty -w z 'PS1="> "; fpath=(${ZSH_DIR} $fpath); autoload -Uz compinit; compinit -u -D; vswitch() { :; }'
sleep 0.5; zpty -r -t z junk
read_all() { local out='' chunk; sleep 1; while zpty -r -t z chunk; do out+=$chunk; done; print -r -- "$out" }
zpty -w -n z $'vswitch addb\\t'
print -r -- "ONE:$(read_all)"
zpty -w -n z $'\\C-u'
zpty -w -n z $'vswitch vlan \\t\\t'
print -r -- "TWO:$(read_all)"
zpty -w -n z $'\\C-u'
zpty -w -n z $'vswitch port set x guard d\\t\\t'
print -r -- "THREE:$(read_all)"
zpty -d z`;
    const r = await shr(`zsh -f -c ${q(drive)}`, { timeoutMs: 30_000 });
    // eslint-disable-next-line no-control-regex
    const out = r.stdout.replace(/\x1b\[[0-9;?]*[a-zA-Z]|[\x07\x08\r]/g, '');
    const [one, two, three] = ['ONE:', 'TWO:', 'THREE:'].map((k, i, all) => out.slice(out.indexOf(k), i + 1 < all.length ? out.indexOf(all[i + 1]) : undefined));
    expect(one, out).toMatch(/vswitch addbr/);
    expect(two, out).toMatch(/add\s+-- add VLAN membership/);
    expect(two).toMatch(/show\s+-- VLAN memberships per port/);
    expect(three, out).toMatch(/default/);
    expect(three).toMatch(/dhcp-only/);
  });

  it('man -l renders vswitch(8) with every command, and groff has no warnings', async () => {
    const page = await sh(`MANWIDTH=120 man -l ${q(MAN)} 2>&1`);
    expect(page).toMatch(/^VSWITCH\(8\)/m);
    for (const cmd of ['vswitch daemon', 'vswitch config check FILE', 'vswitch addif BRIDGE IFNAME', 'vswitch port set IFNAME',
      'vswitch fdb flush [br BRIDGE] [dev IFNAME] [vlan VID] [dynamic]', 'vswitch monitor', 'vswitch dhcp reservation add NETWORK MAC IP']) {
      expect(page).toContain(cmd);
    }
    expect(page).toMatch(/NOTIFY_SOCKET/);
    expect(page).toMatch(/EXIT STATUS/);
    const warn = await shr(`groff -man -ww -z ${q(MAN)}`);
    expect(warn.code).toBe(0);
    expect(warn.stderr).toBe('');
  });
});
