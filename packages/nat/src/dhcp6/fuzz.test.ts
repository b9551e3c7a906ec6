/*
 * The DHCPv6 wire view and server under hostile bytes (fast-check): parseDhcp6
 * and the server never throw, read nothing outside buf[off, off+len) (the same
 * message embedded between different bytes gives the same answer), and every
 * message the server does not answer is counted under one reason of the closed
 * set; a server fed garbage keeps its invariants (one address per client, every
 * lease in the pool or a reservation).
 */
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { read32, write16 } from '@vswitch/switch';
import { DHCP6_REASONS, type Dhcp6Reply } from './server.js';
import { DHCP6_OK, Dhcp6Msg, Dhcp6Opt, fqdnHost, iaNaAddress, newDhcp6View, parseDhcp6 } from './wire.js';
import { duidLlt, msg, newServer } from '../testing/dhcp6.js';

vi.setConfig({ testTimeout: 120_000 });
const RUNS = Number(process.env.FUZZ_RUNS ?? 1500);

const u8 = fc.integer({ min: 0, max: 255 });
const w = <T>(weight: number, arbitrary: fc.Arbitrary<T>) => ({ weight, arbitrary });

/** One option: a real one, or one whose length lies. */
const option = fc.oneof(
  w(3, fc.tuple(fc.constantFrom(1, 2, 3, 5, 6, 8, 14, 23, 24, 25, 4, 39), fc.uint8Array({ maxLength: 60 })).map(([code, data]) => {
    const o = new Uint8Array(4 + data.length);
    write16(o, 0, code);
    write16(o, 2, data.length);
    o.set(data, 4);
    return [...o];
  })),
  w(1, fc.tuple(fc.constantFrom(1, 2, 3, 5), fc.integer({ min: 0, max: 0xffff }), fc.uint8Array({ maxLength: 20 })).map(([code, len, data]) => [code >> 8, code & 0xff, len >> 8, len & 0xff, ...data])),
  w(1, fc.uint8Array({ maxLength: 8 }).map((b) => [...b])),
);

/** A message: a valid client message with hostile bytes appended or cut, or pure garbage. */
const message = fc.oneof(
  w(4, fc.record({
    type: fc.oneof(w(6, fc.constantFrom(1, 3, 4, 5, 6, 8, 9, 11)), w(1, u8)),
    mac: fc.constantFrom(0x525400000001, 0x525400000002, 0x525400000003),
    iaid: fc.constantFrom(1, 2),
    addr: fc.option(fc.constantFrom('fd00:10::100', 'fd00:10::101', 'fd00:10::50', 'fd00:99::1', 'fd00:10::1')),
    rapid: fc.boolean(),
    server: fc.constantFrom('ours', 'none', 'other'),
    extra: fc.array(option, { maxLength: 4 }).map((p) => p.flat()),
    cut: fc.oneof(w(6, fc.constant(-1)), w(1, fc.nat(200))),
  }).map((m) => {
    const s = newServer();
    const server = m.server === 'ours' ? s.duid : m.server === 'other' ? Uint8Array.of(0, 3, 0, 1, 1, 2, 3, 4, 5, 6) : undefined;
    const addr = m.addr === null ? undefined : (() => {
      const a = new Uint8Array(16);
      const parts = m.addr!.split('::');
      const head = parts[0].split(':').map((x) => parseInt(x, 16));
      head.forEach((v, i) => write16(a, 2 * i, v));
      write16(a, 14, parseInt(parts[1] || '0', 16));
      return a;
    })();
    const base = msg({ type: m.type, duid: duidLlt(m.mac), iaid: m.iaid, addr, rapid: m.rapid, server });
    const all = Uint8Array.from([...base, ...m.extra]);
    return m.cut >= 0 ? all.slice(0, Math.min(all.length, m.cut)) : all;
  })),
  w(1, fc.uint8Array({ maxLength: 300 })),
);

function view(buf: Uint8Array, off: number, len: number): unknown {
  const m = newDhcp6View();
  const r = parseDhcp6(buf, off, len, m);
  if (r !== DHCP6_OK) return r;
  const at = (o: number, n: number): number[] => (o < 0 ? [] : [...buf.subarray(o, o + n)]);
  const a = m.iaNa >= 0 ? iaNaAddress(buf, m.iaNa, m.iaNaLen) : -1;
  return {
    type: m.type, xid: m.xid, cid: at(m.clientId, m.clientIdLen), sid: at(m.serverId, m.serverIdLen), ia: at(m.iaNa, m.iaNaLen),
    n: m.iaNaCount, other: m.otherIas, rapid: m.rapidCommit, oro: at(m.oro, m.oroLen), addr: a < 0 ? [] : at(a, 24),
  };
}

describe('parseDhcp6 (fast-check)', () => {
  it('never throws and reads nothing outside buf[off, off+len)', () => {
    fc.assert(fc.property(message, fc.nat(8), u8, u8, (m, lead, p, q) => {
      const a = new Uint8Array(lead + m.length + 64).fill(p);
      const b = new Uint8Array(lead + m.length + 64).fill(q);
      a.set(m, lead);
      b.set(m, lead);
      expect(view(b, lead, m.length)).toEqual(view(a, lead, m.length));
      expect(view(Uint8Array.from(m), 0, m.length)).toEqual(view(a, lead, m.length));
    }), { numRuns: RUNS });
  });

  it('a 64 KiB message of empty options is walked in linear time', () => {
    const big = new Uint8Array(65527);
    big[0] = Dhcp6Msg.SOLICIT;
    for (let p = 4; p + 4 <= big.length; p += 4) write16(big, p, Dhcp6Opt.RAPID_COMMIT);
    const t = performance.now();
    expect(parseDhcp6(big, 0, big.length, newDhcp6View())).not.toBe(-1);
    expect(performance.now() - t).toBeLessThan(200);
  });
});

describe('Dhcp6Server (fast-check)', () => {
  it('never throws; every unanswered message is counted under one reason; leases stay in the pool or a reservation', () => {
    fc.assert(fc.property(fc.array(fc.tuple(message, fc.constantFrom('vm1', 'vm2'), fc.boolean()), { maxLength: 30 }), (seq) => {
      const s = newServer({ reservations: [{ mac: 0x525400000003, address: Uint8Array.of(0xfd, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x50) }] });
      const out = new Uint8Array(1500);
      let silent = 0;
      for (const [m, port, guarded] of seq) {
        const r = s.handle(m, 0, m.length, out, 0, { now: Date.UTC(2026, 0, 1), port, srcMac: 0x525400000001, guarded, ports: { guarded: () => true, live: () => true } });
        if (typeof r === 'string') {
          if (r !== 'pending') silent++;
          expect(DHCP6_REASONS).toContain(r);
        } else {
          expect((r as Dhcp6Reply).payloadLen).toBeLessThanOrEqual(out.length);
        }
      }
      expect(Object.values(s.counters.dropped).reduce((x, y) => x + y, 0)).toBe(silent);
      const leases = s.leases(Date.UTC(2026, 0, 1)).filter((l) => l.state === 'bound');
      const ips = leases.map((l) => read32(l.address, 12));
      expect(new Set(ips).size).toBe(ips.length);
      for (const ip of ips) expect(ip === 0x50 || (ip >= 0x100 && ip <= 0x102)).toBe(true);
      const keys = leases.map((l) => `${l.duid}/${l.iaid}`);
      expect(new Set(keys).size).toBe(keys.length);
    }), { numRuns: Math.ceil(RUNS / 3) });
  });
  it('fqdnHost reads only its option and returns a plain host label or nothing', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 80 }), fc.uint8Array({ maxLength: 8 }), (data, pad) => {
      const b = new Uint8Array(pad.length + data.length + pad.length);
      b.set(pad);
      b.set(data, pad.length);
      b.fill(0x61, pad.length + data.length);
      const h = fqdnHost(b, pad.length, data.length);
      expect(h).toBe(fqdnHost(data, 0, data.length));
      if (h !== undefined) expect(h).toMatch(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/);
    }), { numRuns: RUNS });
  });
});
