/* The read quantum and read share on the bridge: parsing, limits, and that every port gets them (the scheduler itself: packages/netdev/src/fair.test.ts). */
import { describe, expect, it } from 'vitest';
import { Bridge } from './bridge.js';
import {
  formatReadQuantum, formatReadShare, parseReadFrames, parseReadQuantum, parseReadShare, READ_FRAMES_DEFAULT, READ_QUANTUM_DEFAULT,
  READ_SHARE_DEFAULT, readFramesProblem, readQuantumProblem, readShareProblem,
} from './fair.js';
import type { PortIo } from './port.js';

function io(): PortIo & { quanta: number[]; shares: string[] } {
  const quanta: number[] = [];
  const shares: string[] = [];
  return {
    kind: 'tap', quanta, shares, start() {}, send: () => 0, send2: () => 0, close() {}, describe: () => ({}),
    setReadQuantum(q: number, frames?: boolean) {
      quanta.push(q);
      shares.push(`${q} ${frames === true ? 'frames' : 'bytes'}`);
    },
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

  it('under readShare: bytes a bridge hands its quantum to every port, before it starts and on every change', () => {
    const br = new Bridge('br0');
    br.setReadShare('bytes');
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

  it('parses the read share and the frame quantum, and a bad value names its key', () => {
    expect([READ_SHARE_DEFAULT, READ_FRAMES_DEFAULT]).toEqual(['frames', 16]);
    expect(parseReadShare('frames')).toBe('frames');
    expect(parseReadShare(' Bytes ')).toBe('bytes');
    expect(() => parseReadShare('packets')).toThrow(/^readShare must be bytes or frames, got packets$/);
    expect(() => parseReadShare(32)).toThrow(/readShare must be bytes or frames/);
    expect(readShareProblem('frames')).toBeUndefined();
    expect(parseReadFrames(32)).toBe(32);
    expect(parseReadFrames('8')).toBe(8);
    expect(parseReadFrames('off')).toBe(0);
    expect(parseReadFrames(4096)).toBe(4096);
    expect(() => parseReadFrames(4097)).toThrow(/^readFrames must be 0 \(off\) or 1-4096 frames, got 4097$/);
    expect(() => parseReadFrames(-1)).toThrow(/readFrames must be/);
    expect(() => parseReadFrames(2.5)).toThrow(/readFrames must be/);
    expect(() => parseReadFrames('32kb')).toThrow(/bad readFrames '32kb'/);
    expect(readFramesProblem('32')).toMatch(/readFrames/);
    expect(formatReadShare('frames', READ_QUANTUM_DEFAULT, 32)).toBe('read-share frames 32');
    expect(formatReadShare('frames', READ_QUANTUM_DEFAULT, 0)).toBe('read-share frames off');
    expect(formatReadShare('bytes', READ_QUANTUM_DEFAULT, 32)).toBe('read-quantum 256kb');
  });

  it('a bridge hands its read share to every port: frames with readFrames, bytes with readQuantum, and back', () => {
    const br = new Bridge('br0');
    const a = io();
    br.addPort('a', a);
    expect(br.readShare).toBe('frames');
    expect(br.readFrames).toBe(16);
    expect(a.shares).toEqual(['16 frames']);
    br.setReadShare('bytes');
    const b = io();
    br.addPort('b', b);
    expect(a.shares.at(-1)).toBe(`${READ_QUANTUM_DEFAULT} bytes`);
    expect(b.shares).toEqual([`${READ_QUANTUM_DEFAULT} bytes`]);
    br.setReadQuantum(64 * 1024);
    expect([a.shares.at(-1), b.shares.at(-1)]).toEqual([`${64 * 1024} bytes`, `${64 * 1024} bytes`]);
    // The frame quantum changed meanwhile is kept for when the share goes back to frames.
    br.setReadShare(undefined, 8);
    expect(b.shares.at(-1)).toBe(`${64 * 1024} bytes`);
    br.setReadShare('frames');
    expect([a.shares.at(-1), b.shares.at(-1)]).toEqual(['8 frames', '8 frames']);
    expect(br.readQuantum).toBe(64 * 1024);
    // Bad values change nothing.
    const n = a.shares.length;
    expect(() => br.setReadShare('bytes', 5000)).toThrow(/readFrames must be 0 \(off\) or 1-4096/);
    expect(() => br.setReadShare('lots' as 'frames')).toThrow(/readShare must be bytes or frames/);
    expect(br.readShare).toBe('frames');
    expect(a.shares.length).toBe(n);
    br.close();
  });
});
