/*
 * The DNS wire pieces: a query's question and EDNS size read (errors as values),
 * an answer written that a parser reads back, the question check of upstream
 * answers, truncation, reverse names.
 */
import { describe, expect, it } from 'vitest';
import { QTYPE, RCODE, aData, answersQuestion, encodeName, parseQuery, reverseIp4, truncate, writeAnswer } from './wire.js';

function query(name: string, qtype = 1, { id = 0x1234, flags = 0x0100, edns = 0 } = {}): Uint8Array {
  const qn = encodeName(name);
  const opt = edns ? Uint8Array.of(0, 0, 41, edns >> 8, edns & 0xff, 0, 0, 0, 0, 0, 0) : new Uint8Array(0);
  const b = new Uint8Array(12 + qn.length + 4 + opt.length);
  b.set([id >> 8, id & 0xff, flags >> 8, flags & 0xff, 0, 1, 0, 0, 0, 0, 0, edns ? 1 : 0]);
  b.set(qn, 12);
  b.set([qtype >> 8, qtype & 0xff, 0, 1], 12 + qn.length);
  b.set(opt, 12 + qn.length + 4);
  return b;
}

describe('DNS wire', () => {
  it('reads the question, lowercased, and the EDNS size', () => {
    const q = parseQuery(query('VM1.Lab.Example', QTYPE.A, { edns: 1232 }), 0, query('VM1.Lab.Example', 1, { edns: 1232 }).length);
    expect(q).toMatchObject({ id: 0x1234, opcode: 0, qdcount: 1, name: 'vm1.lab.example', qtype: 1, qclass: 1, ednsSize: 1232 });
    const plain = query('a.b');
    expect(parseQuery(plain, 0, plain.length)).toMatchObject({ ednsSize: 0, questionEnd: plain.length });
  });

  it('refuses what is not a query, with a reason', () => {
    expect(parseQuery(new Uint8Array(5), 0, 5)).toBe('short');
    expect(parseQuery(query('a', 1, { flags: 0x8100 }), 0, 19)).toBe('response');
    const ptr = query('a');
    ptr[12] = 0xc0;
    expect(parseQuery(ptr, 0, ptr.length)).toBe('bad_name');
    const long = query('x'.repeat(64));
    expect(parseQuery(long, 0, long.length)).toBe('bad_name');
    const cut = query('abc.def');
    expect(parseQuery(cut, 0, cut.length - 3)).toBe('short');
  });

  it('writes an answer: the question echoed, AA, RD copied, A records pointing at the question name', () => {
    const qb = query('vm1.lab.example');
    const q = parseQuery(qb, 0, qb.length);
    if (typeof q === 'string') throw new Error(q);
    const out = new Uint8Array(512);
    const n = writeAnswer(out, qb, 0, q, RCODE.NOERROR, [{ type: QTYPE.A, ttl: 0, data: aData(0x0a400a65) }], true);
    expect(n).toBe(q.questionEnd + 16);
    expect([out[0], out[1]]).toEqual([0x12, 0x34]);
    expect(out[2] & 0x80).toBe(0x80); // QR
    expect(out[2] & 0x04).toBe(0x04); // AA
    expect(out[2] & 0x01).toBe(0x01); // RD as asked
    expect(out[3] & 0x0f).toBe(0);
    expect([out[6], out[7]]).toEqual([0, 1]);
    expect([...out.subarray(q.questionEnd, n)]).toEqual([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 10, 64, 10, 101]);
    expect(answersQuestion(out.subarray(0, n), qb, q.questionEnd)).toBe(true);
    const nx = writeAnswer(out, qb, 0, q, RCODE.NXDOMAIN, [], true);
    expect(out[3] & 0x0f).toBe(RCODE.NXDOMAIN);
    expect(nx).toBe(q.questionEnd);
  });

  it('takes an upstream answer only to the question asked (case aside)', () => {
    const sent = query('svc.test');
    const ans = query('SVC.test', 1, { flags: 0x8180 });
    expect(answersQuestion(ans, sent, sent.length)).toBe(true);
    expect(answersQuestion(query('svc.tesu', 1, { flags: 0x8180 }), sent, sent.length)).toBe(false);
    expect(answersQuestion(query('svc.test'), sent, sent.length), 'not a response').toBe(false);
    expect(answersQuestion(query('svc.test', 28, { flags: 0x8180 }), sent, sent.length), 'another type').toBe(false);
  });

  it('truncates to header and question with TC', () => {
    const m = query('a.example', 1, { flags: 0x8180 });
    const big = new Uint8Array(m.length + 100);
    big.set(m);
    big[7] = 5;
    const n = truncate(big, m.length);
    expect(n).toBe(m.length);
    expect(big[2] & 0x02).toBe(0x02);
    expect([...big.subarray(6, 12)]).toEqual([0, 0, 0, 0, 0, 0]);
  });

  it('reverse names', () => {
    expect(reverseIp4('101.10.64.10.in-addr.arpa')).toBe(0x0a400a65);
    expect(reverseIp4('1.2.3.in-addr.arpa')).toBe(-1);
    expect(reverseIp4('256.1.1.1.in-addr.arpa')).toBe(-1);
  });
});
