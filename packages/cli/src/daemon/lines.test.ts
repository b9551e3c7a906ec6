/*
 * LineReader: lines pulled one at a time (so the caller can stop between two),
 * split across chunks, and a line over the limit reported as TOO_LONG without
 * buffering it whole. (The old control socket split a string per chunk and dropped
 * the connection silently over 1 MiB.)
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LineReader, TOO_LONG } from './lines.js';

const b = (s: string): Buffer => Buffer.from(s, 'utf8');

function drain(r: LineReader): (string | typeof TOO_LONG)[] {
  const out: (string | typeof TOO_LONG)[] = [];
  for (;;) {
    const l = r.next();
    if (l === undefined) return out;
    out.push(l);
    if (l === TOO_LONG) return out;
  }
}

describe('LineReader', () => {
  it('splits lines across chunks and keeps the rest', () => {
    const r = new LineReader(100);
    r.push(b('{"a":1}\n{"b"'));
    expect(r.next()).toBe('{"a":1}');
    expect(r.next()).toBeUndefined();
    expect(r.buffered).toBe(4);
    r.push(b(':2}\n\n{"c":3}\r\n'));
    expect(drain(r)).toEqual(['{"b":2}', '', '{"c":3}\r']);
    expect(r.buffered).toBe(0);
  });

  it('stops between lines: the caller pulls only what it can answer', () => {
    const r = new LineReader(100);
    r.push(b('1\n2\n3\n'));
    expect(r.next()).toBe('1');
    expect(r.buffered).toBe(4);
    r.push(b('4\n'));
    expect(drain(r)).toEqual(['2', '3', '4']);
  });

  it('keeps multi-byte characters split across chunks whole', () => {
    const r = new LineReader(100);
    const all = b('{"x":"é€😀"}\n');
    r.push(all.subarray(0, 8));
    r.push(all.subarray(8));
    expect(r.next()).toBe('{"x":"é€😀"}');
  });

  it('a partial line over the limit is TOO_LONG before its newline arrives, and stays so', () => {
    const r = new LineReader(10);
    r.push(b('0123456789'));
    expect(r.next()).toBeUndefined();
    r.push(b('x'));
    expect(r.next()).toBe(TOO_LONG);
    r.push(b('\n{"ok":1}\n'));
    expect(r.next()).toBe(TOO_LONG);
    expect(r.buffered).toBe(0);
  });

  it('a whole line over the limit in one chunk is TOO_LONG; exactly the limit is fine', () => {
    const r = new LineReader(10);
    r.push(b('0123456789\n01234567890\n'));
    expect(drain(r)).toEqual(['0123456789', TOO_LONG]);
  });

  it('holds at most the limit plus one chunk, with 1-byte chunks in linear time', () => {
    const r = new LineReader(65536);
    const t0 = performance.now();
    const one = b('a');
    let early = 0;
    for (let i = 0; i < 65536; i++) {
      r.push(one);
      if (r.next() !== undefined) early++;
    }
    expect(early).toBe(0);
    expect(r.buffered).toBe(65536);
    r.push(b('\n'));
    expect((r.next() as string).length).toBe(65536);
    expect(performance.now() - t0).toBeLessThan(2000);
  });

  it('any chunking gives the same lines (property)', () => {
    fc.assert(fc.property(
      fc.array(fc.string({ maxLength: 20 }).map((s) => s.replace(/\n/g, '')), { maxLength: 20 }),
      fc.array(fc.integer({ min: 1, max: 7 }), { minLength: 1, maxLength: 50 }),
      (lines, cuts) => {
        const text = b(lines.map((l) => `${l}\n`).join(''));
        const r = new LineReader(1000);
        const out: (string | typeof TOO_LONG)[] = [];
        let off = 0;
        for (let i = 0; off < text.length; i++) {
          const n = cuts[i % cuts.length];
          r.push(text.subarray(off, off + n));
          off += n;
          out.push(...drain(r));
        }
        expect(out).toEqual(lines);
      },
    ));
  });
});
