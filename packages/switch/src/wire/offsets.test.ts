/*
 * Header bytes are read and written through the wire views only: no source file
 * outside them names a header field by its position. A scan of every package's
 * TypeScript sources (tests and benches left out: they build packets by hand to
 * hold the views to), with the type checker telling byte buffers from other arrays.
 *
 * What counts as a field read or written by literal offset:
 * - indexing a byte buffer (a Uint8Array or Buffer) at a numeric literal above 0,
 *   or at a sum or difference with such a literal in it: `b[9]`, `buf[ip + 9]`,
 *   `buf[off - hdr + 1]`;
 * - the same offset given to the wire's byte primitives (read16, read32, readI32,
 *   write16, write32, readMac, writeMac) or to Buffer's read/write methods:
 *   `read16(buf, th + 14)`, `buf.readUInt16BE(off + 2)`.
 * What does not: offsets named by a view's table (`buf[ip + IP4.TTL]`, `l4 +
 * UDP.DPORT`), the first byte of a buffer (`[0]`, `read32(hdr, 0)`: a start, not
 * a field's position), loop indices (`buf[off + i]`), and lengths (`ipLen - 20`
 * is not an index).
 * The views themselves are the files in a `wire/` folder and those named
 * `wire.ts` (packages/nat/src/dhcp/wire.ts, DHCP's). ALLOWED lists the other
 * files that may, each with its reason; an entry that no longer has any such
 * read fails the test too, so the list stays as short as the code allows.
 */
import { readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const PACKAGES = join(dirname(fileURLToPath(import.meta.url)), '../../..');

const ALLOWED: Record<string, string> = {
  'switch/src/fdb.ts':
    "the MAC table reads a frame's MAC as its two 24-bit key halves in lookupAt/learnAt; the table is being " +
    'rewritten (issue 13, item 9): its reads move to a wire/ethernet.ts accessor with that work',
  'cli/src/daemon/machine-id.ts': 'sets the version and variant bits of an RFC 9562 UUID in a hash: not a packet',
};

const PRIMITIVES = new Set(['read16', 'read32', 'readI32', 'write16', 'write32', 'readMac', 'writeMac']);
const BUFFER_METHOD = /^(read|write)(U?Int(8|16|32)|BigU?Int64|Float|Double)(BE|LE)?$/;

function sources(dir: string, out: string[]): string[] {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) {
      if (name !== 'node_modules' && name !== 'dist' && name !== 'build') sources(p, out);
    } else if (p.endsWith('.ts') && !p.endsWith('.d.ts') && !p.endsWith('.test.ts') && !p.endsWith('.bench.ts') &&
      !name.startsWith('test-')) { // test-*.ts: helpers of the tests, excluded from the build as they are
      out.push(p);
    }
  }
  return out;
}

const isView = (rel: string): boolean => rel.split('/').includes('wire') || rel.endsWith('/wire.ts');

/** A numeric literal above 0, or a + / - chain with one in it. */
function literalOffset(e: ts.Expression): boolean {
  while (ts.isParenthesizedExpression(e)) e = e.expression;
  if (ts.isNumericLiteral(e)) return Number(e.text) > 0;
  if (ts.isBinaryExpression(e)) {
    const op = e.operatorToken.kind;
    if (op !== ts.SyntaxKind.PlusToken && op !== ts.SyntaxKind.MinusToken) return false;
    return literalOffset(e.left) || literalOffset(e.right);
  }
  return false;
}

interface Hit { file: string; line: number; text: string }

function scan(): { hits: Hit[]; files: string[] } {
  const files = ['switch/src', 'nat/src', 'netdev/src', 'cli/src'].flatMap((d) => sources(join(PACKAGES, d), []));
  const program = ts.createProgram(files, {
    target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext,
    strict: true, noEmit: true, skipLibCheck: true, types: ['node'],
  });
  const checker = program.getTypeChecker();
  const isBytes = (e: ts.Expression): boolean => {
    const t = checker.getApparentType(checker.getTypeAtLocation(e));
    return /^(Uint8Array|Buffer)(<.*>)?$/.test(checker.typeToString(t));
  };
  const hits: Hit[] = [];
  for (const file of files) {
    const sf = program.getSourceFile(file)!;
    const rel = relative(PACKAGES, file).split(sep).join('/');
    const hit = (n: ts.Node): void => {
      hits.push({ file: rel, line: sf.getLineAndCharacterOfPosition(n.getStart()).line + 1, text: n.getText() });
    };
    const visit = (n: ts.Node): void => {
      if (ts.isElementAccessExpression(n)) {
        if (literalOffset(n.argumentExpression) && isBytes(n.expression)) hit(n);
      } else if (ts.isCallExpression(n)) {
        const f = n.expression;
        if (ts.isIdentifier(f) && PRIMITIVES.has(f.text)) {
          if (n.arguments.length >= 2 && literalOffset(n.arguments[1])) hit(n);
        } else if (ts.isPropertyAccessExpression(f) && BUFFER_METHOD.test(f.name.text) && isBytes(f.expression)) {
          const at = n.arguments[f.name.text.startsWith('read') ? 0 : 1];
          if (at !== undefined && literalOffset(at)) hit(n);
        }
      }
      ts.forEachChild(n, visit);
    };
    visit(sf);
  }
  return { hits, files };
}

describe('header fields by literal offset', () => {
  it('appear only in the wire views (and the allowed files)', () => {
    const { hits, files } = scan();
    expect(files.length).toBeGreaterThan(50);
    // The scan sees byte buffers: the views' own primitives are found.
    expect(hits.some((h) => h.file === 'switch/src/wire/bytes.ts')).toBe(true);
    const outside = hits.filter((h) => !isView(h.file) && !(h.file in ALLOWED));
    expect(outside.map((h) => `${h.file}:${h.line}: ${h.text}`)).toEqual([]);
    const stale = Object.keys(ALLOWED).filter((f) => !hits.some((h) => h.file === f));
    expect(stale).toEqual([]);
  }, 120_000);

  it('counts what it says it counts', () => {
    const expr = (s: string): ts.Expression =>
      (ts.createSourceFile('x.ts', s, ts.ScriptTarget.ES2022).statements[0] as ts.ExpressionStatement).expression;
    for (const s of ['9', 'ip + 9', 'off - hdr + 1', '(a + 2)', 'p + 2 + i']) expect(literalOffset(expr(s)), s).toBe(true);
    for (const s of ['0', 'i', 'off + i', 'ip + IP4.TTL', 'off + ETH.SRC - 0', 'n * 4', 'a ? 2 : 3']) {
      expect(literalOffset(expr(s)), s).toBe(false);
    }
  });
});
