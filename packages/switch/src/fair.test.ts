/* The read quantum on the bridge: parsing, limits, and that every port gets it (the scheduler itself: packages/netdev/src/fair.test.ts). */
import { describe, expect, it } from 'vitest';
import { Bridge } from './bridge.js';
import { formatReadQuantum, parseReadQuantum, READ_QUANTUM_DEFAULT, readQuantumProblem } from './fair.js';
import type { PortIo } from './port.js';

function io(): PortIo & { quanta: number[] } {
  const quanta: number[] = [];
  return {
    kind: 'tap', quanta, start() {}, send: () => 0, send2: () => 0, close() {}, describe: () => ({}),
    setReadQuantum(b: number) { quanta.push(b); },
  };
}

describe('read quantum (the bridge side of the read loop\'s fair share)', () => {
  it('parses sizes, off and bytes, and refuses what is out of range', () => {
    expect(parseReadQuantum('256kb')).toBe(256 * 1024);
    expect(parseReadQuantum('1m')).toBe(1024 * 1024);
    expect(parseReadQuantum(65536)).toBe(65536);
    expect(parseReadQuantum('off')).toBe(0);
    expect(parseReadQuantum(0)).toBe(0);
    expect(() => parseReadQuantum('1kb')).toThrow(/0 \(off\) or 16384-67108864/);
    expect(() => parseReadQuantum('65mb')).toThrow(/16384-67108864/);
    expect(() => parseReadQuantum('lots')).toThrow(/bad read quantum/);
    expect(() => parseReadQuantum(20000.5)).toThrow(/read quantum/);
    expect(readQuantumProblem('65536')).toMatch(/read quantum/);
    expect(formatReadQuantum(READ_QUANTUM_DEFAULT)).toBe('256kb');
    expect(formatReadQuantum(2 * 1024 * 1024)).toBe('2mb');
    expect(formatReadQuantum(0)).toBe('off');
  });

  it('a bridge hands its quantum to every port, before it starts and on every change', () => {
    const br = new Bridge('br0');
    const a = io();
    br.addPort('a', a);
    expect(a.quanta).toEqual([READ_QUANTUM_DEFAULT]);
    br.setReadQuantum(64 * 1024);
    const b = io();
    br.addPort('b', b);
    expect(a.quanta).toEqual([READ_QUANTUM_DEFAULT, 64 * 1024]);
    expect(b.quanta).toEqual([64 * 1024]);
    expect(br.readQuantum).toBe(64 * 1024);
    expect(() => br.setReadQuantum(100)).toThrow(/read quantum/);
    expect(br.readQuantum).toBe(64 * 1024);
    br.close();
  });
});
