/*
 * docker/Dockerfile, checked without a Docker engine (this machine has the client
 * only, and hadolint is neither a Debian package nor on npm): a small linter of
 * our own for the rules that matter here (hadolint's DL3006/DL3007 pinned base
 * images, DL3008-style --no-install-recommends with the apt lists removed in the
 * same RUN, DL3025 exec-form ENTRYPOINT/CMD/HEALTHCHECK, DL3003 no `cd` in RUN,
 * known instructions only, stages named once and referenced after they exist),
 * then what the image promises: every path it COPYs exists in the build context
 * and is not excluded by .dockerignore, the context leaves node_modules, builds
 * and .git out (main sent ~100 MB), a HEALTHCHECK on /healthz at the metrics
 * default, the capabilities of the systemd unit in its documented `docker run`
 * line, and the install layout of scripts/install.sh.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '@vswitch/cli';
import { REPO } from './helpers/run.js';

interface Instr { line: number; op: string; args: string }

/** Instructions with their first line: comments dropped, backslash continuations joined. */
function parseDockerfile(text: string): Instr[] {
  const out: Instr[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (/^\s*(#|$)/.test(lines[i])) continue;
    const start = i;
    let s = lines[i];
    while (s.endsWith('\\') && i + 1 < lines.length) {
      s = s.slice(0, -1) + ' ';
      i++;
      if (!/^\s*#/.test(lines[i])) s += lines[i].trim();
    }
    const m = /^\s*(\w+)\s+([\s\S]*)$/.exec(s);
    out.push({ line: start + 1, op: (m?.[1] ?? s).toUpperCase(), args: (m?.[2] ?? '').trim() });
  }
  return out;
}

const KNOWN = new Set(['FROM', 'RUN', 'CMD', 'LABEL', 'EXPOSE', 'ENV', 'ADD', 'COPY', 'ENTRYPOINT', 'VOLUME', 'USER', 'WORKDIR', 'ARG',
  'ONBUILD', 'STOPSIGNAL', 'HEALTHCHECK', 'SHELL']);

/** The problems hadolint-style rules find (empty when clean). */
function lint(instrs: Instr[]): string[] {
  const bad: string[] = [];
  const stages = new Set<string>();
  let seenFrom = false;
  for (const { line, op, args } of instrs) {
    const at = `line ${line}: ${op}`;
    if (!KNOWN.has(op)) bad.push(`${at}: unknown instruction`);
    if (!seenFrom && op !== 'FROM' && op !== 'ARG') bad.push(`${at}: before the first FROM`);
    if (op === 'FROM') {
      seenFrom = true;
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      if (!m) {
        bad.push(`${at}: cannot read "${args}"`);
        continue;
      }
      const image = m[1];
      if (!stages.has(image)) {
        if (!/[:@]/.test(image.split('/').pop()!)) bad.push(`${at}: ${image} has no tag (DL3006)`);
        if (/:latest$/.test(image)) bad.push(`${at}: ${image} uses latest (DL3007)`);
      }
      if (m[2] !== undefined) {
        if (stages.has(m[2])) bad.push(`${at}: stage ${m[2]} named twice`);
        stages.add(m[2]);
      }
    }
    if (op === 'COPY' || op === 'ADD') {
      const from = /--from=(\S+)/.exec(args)?.[1];
      if (from !== undefined && !stages.has(from) && !/^\d+$/.test(from)) bad.push(`${at}: --from=${from} is no earlier stage`);
      if (op === 'ADD' && !/https?:\/\//.test(args)) bad.push(`${at}: ADD of local files: use COPY (DL3020)`);
    }
    if (op === 'RUN') {
      for (const part of args.split(/&&|;/).map((x) => x.trim())) {
        if (/^cd\s/.test(part)) bad.push(`${at}: cd in RUN: use WORKDIR (DL3003)`);
      }
      if (/apt-get\s+install/.test(args)) {
        if (!/apt-get\s+update/.test(args)) bad.push(`${at}: apt-get install without update in the same RUN (DL3009)`);
        if (!/--no-install-recommends/.test(args)) bad.push(`${at}: apt-get install without --no-install-recommends (DL3015)`);
        if (!/\s-y\b|--yes|--assume-yes/.test(args)) bad.push(`${at}: apt-get install without -y (DL3014)`);
        if (!/rm -rf \/var\/lib\/apt\/lists/.test(args)) bad.push(`${at}: apt lists not removed in the same RUN (DL3009)`);
      } else if (/apt-get\s+update/.test(args)) {
        bad.push(`${at}: apt-get update alone in a RUN`);
      }
    }
    if (['ENTRYPOINT', 'CMD'].includes(op) && !args.startsWith('[')) bad.push(`${at}: shell form; use the exec (JSON) form (DL3025)`);
    if (op === 'HEALTHCHECK' && !/CMD\s+\[/.test(args) && args !== 'NONE') bad.push(`${at}: shell form; use CMD [...]`);
    if (['ENTRYPOINT', 'CMD', 'VOLUME'].includes(op) && args.startsWith('[')) {
      try {
        JSON.parse(args);
      } catch {
        bad.push(`${at}: not valid JSON`);
      }
    }
    if (op === 'HEALTHCHECK') {
      const cmd = /CMD\s+(\[.*\])$/.exec(args)?.[1];
      try {
        if (cmd !== undefined) JSON.parse(cmd);
      } catch {
        bad.push(`${at}: CMD is not valid JSON`);
      }
    }
    if (op === 'EXPOSE' && !/^(\d+(\/(tcp|udp))?\s*)+$/.test(args)) bad.push(`${at}: bad port`);
  }
  return bad;
}

/** .dockerignore as Docker reads it: patterns relative to the context root, `**`, `*`, `!` exceptions, the last match wins. */
function dockerignore(text: string): (path: string) => boolean {
  const rules = text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#')).map((l) => {
    const neg = l.startsWith('!');
    const pat = (neg ? l.slice(1) : l).replace(/^\/+|\/+$/g, '');
    const re = pat.split('/').map((seg) => (seg === '**' ? '.*' : seg.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]'))).join('/');
    // A pattern matches the path or a directory above it (everything under an excluded directory is excluded).
    return { neg, re: new RegExp(`^${re.replace(/\/\.\*/g, '(/.*)?').replace(/^\.\*\//, '(.*/)?')}(/.*)?$`) };
  });
  return (path: string): boolean => {
    let excluded = false;
    for (const r of rules) if (r.re.test(path)) excluded = !r.neg;
    return excluded;
  };
}

/** Bytes the build context sends: every file of the repository the ignore file lets through. */
function contextBytes(ignored: (p: string) => boolean): { bytes: number; files: number } {
  let bytes = 0;
  let files = 0;
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const full = join(dir, e.name);
      const rel = relative(REPO, full);
      if (e.isDirectory()) {
        // Docker still descends into an excluded directory when an exception may match under it.
        if (ignored(rel) && !['test', 'bench'].includes(rel)) continue;
        walk(full);
      } else if (!ignored(rel)) {
        bytes += statSync(full).size;
        files++;
      }
    }
  };
  walk(REPO);
  return { bytes, files };
}

const DOCKERFILE = readFileSync(join(REPO, 'docker/Dockerfile'), 'utf8');
const instrs = parseDockerfile(DOCKERFILE);

describe('docker/Dockerfile', () => {
  it('lints clean', () => {
    expect(instrs.length).toBeGreaterThan(10);
    expect(lint(instrs)).toEqual([]);
  });

  it('the linter has teeth: it finds what hadolint would in a bad Dockerfile', () => {
    const bad = lint(parseDockerfile([
      'RUN echo early',
      'FROM node AS a',
      'FROM debian:latest AS a',
      'RUN apt-get install curl',
      'RUN cd /src && make',
      'COPY --from=nowhere /x /y',
      'ADD src /src',
      'CMD vswitch daemon',
      'HEALTHCHECK CMD curl -f http://x/',
      'EXPOSE http',
      'FROB x',
    ].join('\n')));
    for (const want of ['before the first FROM', 'no tag', 'uses latest', 'named twice', 'without update', 'no-install-recommends',
      'without -y', 'apt lists', 'cd in RUN', 'no earlier stage', 'use COPY', 'RUN', 'exec (JSON)', 'bad port', 'unknown instruction']) {
      expect(bad.join('\n'), want).toContain(want);
    }
  });

  it('every path it COPYs exists in the context and is not excluded by .dockerignore', () => {
    const ignored = dockerignore(readFileSync(join(REPO, '.dockerignore'), 'utf8'));
    const copies = instrs.filter((i) => i.op === 'COPY' && !i.args.includes('--from='));
    expect(copies.length).toBeGreaterThan(0);
    for (const c of copies) {
      const parts = c.args.split(/\s+/).filter((p) => !p.startsWith('--'));
      for (const src of parts.slice(0, -1)) {
        const rel = src.replace(/^\.\/?/, '');
        expect(existsSync(join(REPO, rel)), `line ${c.line}: ${src} exists`).toBe(true);
        if (rel !== '') expect(ignored(rel), `line ${c.line}: ${src} is not excluded by .dockerignore`).toBe(false);
      }
    }
    // What the build needs survives the ignore file; what it makes itself does not go in.
    for (const keep of ['package.json', 'pnpm-lock.yaml', 'pnpm-workspace.yaml', '.npmrc', 'packages/cli/src/main.ts', 'packages/netdev/native/addon.c',
      'packages/netdev/binding.gyp', 'test/package.json', 'bench/package.json', 'docker/vswitch.yaml']) {
      expect(ignored(keep), `${keep} kept`).toBe(false);
    }
    for (const drop of ['node_modules/x', 'packages/cli/node_modules/commander/index.js', 'packages/cli/dist/main.js', 'packages/netdev/build/Release/netdev.node',
      '.git', 'test/cli.test.ts', 'bench/soak.sh', 'packages/cli/tsconfig.tsbuildinfo']) {
      expect(ignored(drop), `${drop} excluded`).toBe(true);
    }
  });

  it('the context is small: no node_modules, builds or .git (main sent ~100 MB)', () => {
    const ignored = dockerignore(readFileSync(join(REPO, '.dockerignore'), 'utf8'));
    const ctx = contextBytes(ignored);
    const all = contextBytes(() => false);
    console.log(`build context: ${(ctx.bytes / 1e6).toFixed(1)} MB in ${ctx.files} files (without .dockerignore: ${(all.bytes / 1e6).toFixed(1)} MB)`);
    expect(ctx.bytes).toBeLessThan(10e6);
  });

  it('HEALTHCHECK on /healthz at the metrics default, the port exposed, the install layout, the unit\'s capabilities documented', () => {
    const hc = instrs.find((i) => i.op === 'HEALTHCHECK')!;
    expect(hc, 'a HEALTHCHECK').toBeDefined();
    const cmd = JSON.parse(/CMD\s+(\[.*\])$/.exec(hc.args)![1]) as string[];
    expect(cmd.join(' ')).toContain('http://127.0.0.1:9464/healthz');
    expect(hc.args).toMatch(/--interval=\d+s/);
    expect(instrs.find((i) => i.op === 'EXPOSE')!.args).toBe('9464');
    expect(parseConfig('', 'defaults').metrics.listen, 'the daemon\'s default metrics address').toBe('127.0.0.1:9464');
    expect(JSON.parse(instrs.find((i) => i.op === 'ENTRYPOINT')!.args)).toEqual(['vswitch']);
    expect(JSON.parse(instrs.find((i) => i.op === 'CMD')!.args)).toEqual(['daemon', '--config', '/etc/vswitch/vswitch.yaml']);
    const unitCaps = /^CapabilityBoundingSet=(.*)$/m.exec(readFileSync(join(REPO, 'docker/vswitch.service'), 'utf8'))![1].split(/\s+/)
      .map((c) => c.replace('CAP_', ''));
    const runLine = DOCKERFILE.split('\n').filter((l) => l.startsWith('#')).join(' ');
    expect(runLine).toContain('--cap-drop ALL');
    for (const cap of unitCaps) expect(runLine, cap).toContain(`--cap-add ${cap}`);
    expect(runLine).toContain('--device /dev/net/tun');
  });
});
