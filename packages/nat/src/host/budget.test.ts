import { describe, expect, it } from 'vitest';
import { HostBudget } from './types.js';

/** A PacketPort that reads the port name from a test's lookup and counts the questions. */
function portSource(port: string) {
  const s = { asked: 0, port, portAt: (_buf: Uint8Array, _off: number): string => { s.asked++; return s.port; } };
  return s;
}

describe('HostBudget: sessions per address, per bridge port and in total', () => {
  it('per-port limit defaults to the per-host one', () => {
    expect(new HostBudget({ maxPerHost: 9 }).opts.maxPerPort).toBe(9);
  });

  it('a port using two addresses cannot get more than maxPerPort; another port is not affected', () => {
    const b = new HostBudget({ maxSessions: 100, maxPerHost: 3, maxPerPort: 4 });
    const buf = new Uint8Array(64);
    const a = portSource('tapA');
    b.from(a, buf, 14);
    const taken: string[] = [];
    for (let i = 0; i < 3; i++) taken.push(b.take(0x0a000a02)!);
    expect(taken).toEqual(['tapA', 'tapA', 'tapA']);
    expect(b.take(0x0a000a02)).toBe(null); // host_limit first
    expect(b.take(0x0a000a03)).toBe('tapA');
    expect(b.take(0x0a000a03)).toBe(null); // port_limit
    expect([b.refusedPerHost, b.refusedPerPort, b.refusedGlobal]).toEqual([1, 1, 0]);
    expect(b.perPort('tapA')).toBe(4);
    b.from(portSource('tapB'), buf, 14);
    expect(b.take(0x0a000a04)).toBe('tapB');
    // Released with the port take gave: the port has room again.
    b.release(0x0a000a03, 'tapA');
    expect(b.perPort('tapA')).toBe(3);
    b.from(a, buf, 14);
    expect(b.take(0x0a000a03)).toBe('tapA');
    expect(b.portCounts()).toEqual({ tapA: 4, tapB: 1 });
    expect(b.total).toBe(5);
  });

  it('sessions opened from the outside (no packet: from undefined) charge no port', () => {
    const b = new HostBudget({ maxPerHost: 10, maxPerPort: 1 });
    b.from(portSource('tapA'), new Uint8Array(64), 14);
    expect(b.take(1)).toBe('tapA');
    b.from(undefined);
    for (let i = 0; i < 5; i++) expect(b.take(1)).toBe('');
    expect(b.perPort('tapA')).toBe(1);
    for (let i = 0; i < 5; i++) b.release(1);
    b.release(1, 'tapA');
    expect(b.total).toBe(0);
    expect(b.portCounts()).toEqual({});
  });

  it('asks for the port only when it takes a session, and not at all when an earlier limit refuses', () => {
    const b = new HostBudget({ maxSessions: 1, maxPerHost: 1 });
    const a = portSource('tapA');
    b.from(a, new Uint8Array(64), 14);
    b.take(1);
    b.take(2); // table full
    b.take(1); // table full
    expect(a.asked).toBe(1);
  });
});
