/*
 * The read loop's fair share (native/fair.c) over synthetic ports: each test keeps
 * queues of frame lengths per port and runs rounds as the event loop does (every
 * port with frames waiting is serviced once per round, in a fixed order), each
 * service going through `fairServeForTest`, the scheduler code the read loop runs.
 * No devices: the addon only needs to be built.
 */
import { describe, expect, it } from 'vitest';
import { FAIR_FRAME_COST, FAIR_FRAMES_MAX, FAIR_QUANTUM_DEFAULT, fairServeForTest } from './index.js';

const MAX = 4096;

class SynthPort {
  readonly state: Float64Array;
  readonly lens = new Int32Array(MAX);
  count = 0;
  /** Frames and cost (bytes + FAIR_FRAME_COST each) served, per round of the last run. */
  servedFrames: number[] = [];
  servedCost: number[] = [];

  /** `frames`: the frame share (quantum in frames, each frame costs 1). */
  constructor(quantum: number, frames = false) {
    this.state = frames ? new Float64Array([quantum, 0, 0, 1]) : new Float64Array([quantum, 0, 0]);
  }

  set quantum(q: number) { this.state[0] = q; }
  get backlogged(): boolean { return this.state[2] !== 0; }

  push(len: number, n = 1): void {
    for (let i = 0; i < n && this.count < MAX; i++) this.lens[this.count++] = len;
  }

  /** One service; returns the frames read (removed from the queue). */
  serve(primary: boolean): number {
    const n = fairServeForTest(this.state, primary, this.lens, this.count);
    let cost = 0;
    for (let i = 0; i < n; i++) cost += this.lens[i] + FAIR_FRAME_COST;
    this.lens.copyWithin(0, n, this.count);
    this.count -= n;
    this.servedFrames.push(n);
    this.servedCost.push(cost);
    return n;
  }
}

/** One event-loop turn: every port with frames waiting is read once (its own poll). */
function round(ports: SynthPort[]): void {
  for (const p of ports) {
    if (p.count > 0) p.serve(true);
    else {
      p.servedFrames.push(0);
      p.servedCost.push(0);
    }
  }
}

const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);

describe('fair share of the read loop (deficit round robin)', () => {
  it('a flooding port gets one quantum per round, however much it has waiting', () => {
    const q = FAIR_QUANTUM_DEFAULT;
    const flood = new SynthPort(q);
    const tcp = new SynthPort(q);
    for (let r = 0; r < 200; r++) {
      flood.push(64, MAX); // a 64-byte flood: always a full queue
      tcp.push(65536, 64); // TSO super-frames: always backlogged too
      round([flood, tcp]);
    }
    const perFrame = 64 + FAIR_FRAME_COST;
    // Each round reads while the budget is positive: at most ceil(q / cost) frames.
    expect(Math.max(...flood.servedFrames)).toBeLessThanOrEqual(Math.ceil(q / perFrame));
    expect(Math.min(...flood.servedFrames)).toBeGreaterThanOrEqual(Math.floor(q / perFrame));
    // Over many rounds both take one quantum a round on average, within one frame's overshoot.
    for (const p of [flood, tcp]) {
      const avg = sum(p.servedCost) / 200;
      expect(avg).toBeGreaterThan(q - (65536 + FAIR_FRAME_COST) / 200);
      expect(avg).toBeLessThanOrEqual(q + (65536 + FAIR_FRAME_COST) / 200);
    }
    // In frames the flood's share is ~5 times the TCP sender's (a super-frame costs what
    // five 64-byte frames do); in cost they are the same.
    const ratio = sum(flood.servedFrames) / sum(tcp.servedFrames);
    expect(ratio).toBeGreaterThan(4);
    expect(ratio).toBeLessThan(6);
  });

  it('debt carries over: a port whose frames cost more than a quantum waits rounds to pay it back', () => {
    const q = 16384;
    const big = new SynthPort(q);
    for (let r = 0; r < 100; r++) {
      big.push(65536, 4);
      round([big]);
    }
    const frames = sum(big.servedFrames);
    const ideal = (100 * q) / (65536 + FAIR_FRAME_COST);
    expect(frames).toBeGreaterThanOrEqual(Math.floor(ideal));
    expect(frames).toBeLessThanOrEqual(Math.ceil(ideal) + 1);
    expect(Math.max(...big.servedFrames)).toBe(1); // never two in one round
  });

  it('a quiet port is served in the round its frame arrives, beside a flood', () => {
    const flood = new SynthPort(FAIR_QUANTUM_DEFAULT);
    const quiet = new SynthPort(FAIR_QUANTUM_DEFAULT);
    for (let r = 0; r < 100; r++) {
      flood.push(64, MAX);
      if (r % 10 === 3) quiet.push(98); // a ping every 10 rounds
      round([flood, quiet]);
      expect(quiet.count).toBe(0);
    }
    expect(sum(quiet.servedFrames)).toBe(10);
  });

  it('an idle port banks no credit: a burst after a long silence gets one quantum in its first round', () => {
    const q = FAIR_QUANTUM_DEFAULT;
    const p = new SynthPort(q);
    for (let r = 0; r < 50; r++) round([p]); // idle
    p.push(1514, 1000);
    round([p]);
    const first = p.servedCost.at(-1)!;
    expect(first).toBeGreaterThanOrEqual(q);
    expect(first).toBeLessThan(q + 1514 + FAIR_FRAME_COST);
    expect(p.backlogged).toBe(true);
    // Draining to empty resets the deficit.
    while (p.count > 0) round([p]);
    expect(p.backlogged).toBe(false);
    expect(p.state[1]).toBe(0);
  });

  it('follow-up reads serve only ports that are not backlogged', () => {
    const q = 65536;
    const flood = new SynthPort(q);
    flood.push(64, MAX);
    round([flood]);
    expect(flood.backlogged).toBe(true);
    const before = flood.count;
    expect(flood.serve(false)).toBe(0); // a follow-up of the flooding port reads nothing
    expect(flood.count).toBe(before);
    const reply = new SynthPort(q);
    reply.push(98);
    expect(reply.serve(false)).toBe(1); // a follow-up of a quiet port reads its reply
    expect(reply.backlogged).toBe(false);
  });

  it('a quantum changed at runtime applies from the next round', () => {
    const p = new SynthPort(65536);
    const per = 1514 + FAIR_FRAME_COST;
    for (let r = 0; r < 5; r++) {
      p.push(1514, MAX);
      round([p]);
    }
    expect(p.servedFrames.at(-1)).toBeLessThanOrEqual(Math.ceil(65536 / per));
    p.quantum = 1024 * 1024;
    for (let r = 0; r < 5; r++) {
      p.push(1514, MAX);
      round([p]);
    }
    const after = p.servedFrames.slice(-4);
    for (const n of after) {
      expect(n).toBeGreaterThanOrEqual(Math.floor((1024 * 1024) / per) - 1);
      expect(n).toBeLessThanOrEqual(Math.ceil((1024 * 1024) / per));
    }
    p.quantum = 0; // off: drain everything waiting
    p.push(1514, MAX);
    round([p]);
    expect(p.count).toBe(0);
    expect(p.backlogged).toBe(false);
  });

  it('shares stay equal among many ports, whatever their frame sizes', () => {
    const sizes = [64, 98, 1514, 9000, 65536];
    const ports = sizes.map(() => new SynthPort(FAIR_QUANTUM_DEFAULT));
    for (let r = 0; r < 300; r++) {
      ports.forEach((p, i) => p.push(sizes[i], 256));
      round(ports);
    }
    const costs = ports.map((p) => sum(p.servedCost));
    const lo = Math.min(...costs);
    const hi = Math.max(...costs);
    expect(hi - lo).toBeLessThanOrEqual(65536 + FAIR_FRAME_COST);
  });
});

describe('the frame share (readShare: frames): a quantum of frames, whatever their size', () => {
  it('a 64-byte flooder and a TSO sender get the same number of frames every round', () => {
    const q = 32;
    const flood = new SynthPort(q, true);
    const tso = new SynthPort(q, true);
    for (let r = 0; r < 100; r++) {
      flood.push(64, MAX);
      tso.push(65536, 64);
      round([flood, tso]);
    }
    // Each frame costs 1: exactly the quantum a round, no overshoot, no debt.
    expect(new Set(flood.servedFrames)).toEqual(new Set([q]));
    expect(new Set(tso.servedFrames)).toEqual(new Set([q]));
    expect(flood.state[1]).toBe(0);
    // In bytes the TSO sender moved ~1000 times the flood's: what the byte charge would
    // have held to a fifth of the flood's frames.
    expect(sum(tso.servedCost) / sum(flood.servedCost)).toBeGreaterThan(3);
  });

  it('the same ports under the byte charge: the flood gets ~5 frames per super-frame (the control)', () => {
    const flood = new SynthPort(FAIR_QUANTUM_DEFAULT);
    const tso = new SynthPort(FAIR_QUANTUM_DEFAULT);
    for (let r = 0; r < 100; r++) {
      flood.push(64, MAX);
      tso.push(65536, 64);
      round([flood, tso]);
    }
    expect(sum(flood.servedFrames) / sum(tso.servedFrames)).toBeGreaterThan(4);
  });

  it('a quiet port is served in the round its frame arrives, beside a flood', () => {
    const flood = new SynthPort(8, true);
    const quiet = new SynthPort(8, true);
    for (let r = 0; r < 100; r++) {
      flood.push(64, MAX);
      if (r % 10 === 3) quiet.push(98);
      round([flood, quiet]);
      expect(quiet.count).toBe(0);
    }
    expect(sum(quiet.servedFrames)).toBe(10);
    expect(Math.max(...flood.servedFrames)).toBe(8);
  });

  it('one frame a round at the smallest quantum; the largest is bounded; off drains', () => {
    const p = new SynthPort(1, true);
    p.push(65536, 10);
    for (let r = 0; r < 10; r++) round([p]);
    expect(p.servedFrames).toEqual(Array(10).fill(1));
    const big = new SynthPort(FAIR_FRAMES_MAX, true);
    big.push(64, MAX);
    round([big]);
    expect(big.servedFrames).toEqual([FAIR_FRAMES_MAX]);
    const off = new SynthPort(0, true);
    off.push(64, 1000);
    round([off]);
    expect(off.count).toBe(0);
    expect(off.backlogged).toBe(false);
  });

  it('follow-up reads serve only ports that are not backlogged, as with bytes', () => {
    const flood = new SynthPort(16, true);
    flood.push(64, 100);
    round([flood]);
    expect(flood.backlogged).toBe(true);
    expect(flood.serve(false)).toBe(0);
    const reply = new SynthPort(16, true);
    reply.push(98);
    expect(reply.serve(false)).toBe(1);
  });
});
