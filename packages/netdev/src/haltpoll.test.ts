/*
 * Poll before sleep (native/haltpoll.c, addon.c hp_before_sleep): the adaptive
 * window's rules fed durations (no clock: pollBeforeSleepForTest runs a fresh window
 * through the steps), the settings' checks, and on real UDP sockets in a namespace of
 * the test's own (a node child under `ip netns exec`) that frames arriving while the
 * loop polls are found by the poll (hits), and that with it off nothing polls.
 */
import { describe, expect, it } from 'vitest';
import { POLL_BEFORE_SLEEP_MAX_US, pollBeforeSleepForTest, setPollBeforeSleep } from './index.js';
import { childNs } from './test-env.js';

const US = 1000; // ns
const MS = 1000 * US;
const ALLOW = 0, POLLED = 1, WOKE = 2, PRESSURE = 3;

/** Runs steps [kind, x, y] through a fresh window of maxUs / budgetMs; the windows (µs) or allowances (µs) after each. */
function run(maxUs: number, budgetMs: number, steps: [number, number, number][], busyPermille = 0): { out: number[]; stats: ReturnType<typeof pollBeforeSleepForTest>['stats'] } {
  const r = pollBeforeSleepForTest(maxUs, budgetMs, Float64Array.from(steps.flat()), busyPermille);
  return { out: r.out.map((ns, i) => (steps[i][0] === PRESSURE ? ns : ns / US)), stats: r.stats };
}

describe('poll before sleep: the adaptive window (KVM halt-polling rules)', () => {
  it('starts at 0 (no poll), grows from 10 µs doubling up to the max after short sleeps ended by a port', () => {
    const r = run(100, 200, [
      [ALLOW, 0, 0],
      [WOKE, 30 * US, 1], [WOKE, 30 * US, 1], [WOKE, 30 * US, 1], [WOKE, 30 * US, 1], [WOKE, 30 * US, 1], [WOKE, 30 * US, 1],
      [ALLOW, 1, 0],
    ]);
    expect(r.out).toEqual([0, 10, 20, 40, 80, 100, 100, 100]);
    expect(r.stats.grows).toBe(5); // capped: the last one changed nothing
    expect(r.stats.windowUs).toBe(100);
  });

  it('a poll that found work changes nothing; a sleep within the max woken by a timer changes nothing', () => {
    const r = run(100, 200, [[WOKE, 30 * US, 1], [WOKE, 30 * US, 1], [POLLED, 15 * US, 1], [WOKE, 50 * US, 0], [WOKE, 100 * US, 0]]);
    expect(r.out).toEqual([10, 20, 20, 20, 20]);
    expect(r.stats).toMatchObject({ spins: 1, hits: 1, misses: 0, spinMs: 0.015, shrinks: 0 });
  });

  it('halves after a sleep longer than the max, by a port or not, and drops to 0 below 10 µs', () => {
    const steps: [number, number, number][] = Array.from({ length: 5 }, () => [WOKE, 30 * US, 1]);
    steps.push([POLLED, 80 * US, 0], [WOKE, 10 * MS, 1], [WOKE, 200 * US, 0], [WOKE, 101 * US, 1], [WOKE, 5 * MS, 1], [WOKE, 5 * MS, 1]);
    const r = run(80, 200, steps);
    expect(r.out).toEqual([10, 20, 40, 80, 80, 80, 40, 20, 10, 0, 0]);
    expect(r.stats.shrinks).toBe(4); // not the last: nothing left to shrink
    expect(r.stats.misses).toBe(1);
  });

  it('a long sleep woken by a port after a shrink grows again from the start value', () => {
    const r = run(200, 200, [[WOKE, 30 * US, 1], [WOKE, 1 * MS, 1], [WOKE, 150 * US, 1], [WOKE, 150 * US, 1]]);
    expect(r.out).toEqual([10, 0, 10, 20]);
  });

  it('the budget: allowances are cut to what is left of the second\'s, stop once it is spent, and come back the next second', () => {
    const grow: [number, number, number][] = Array.from({ length: 8 }, () => [WOKE, 30 * US, 1]);
    const t = 5_000 * MS;
    const r = run(1000, 1, [
      ...grow,
      [ALLOW, t, 0], [POLLED, 700 * US, 0],
      [ALLOW, t + 1 * MS, 0], [POLLED, 300 * US, 0],
      [ALLOW, t + 2 * MS, 0], [ALLOW, t + 999 * MS, 0],
      [ALLOW, t + 1000 * MS, 0],
    ]);
    expect(r.out.slice(0, 8)).toEqual([10, 20, 40, 80, 160, 320, 640, 1000]);
    expect(r.out.slice(8)).toEqual([1000, 1000, 300, 1000, 0, 0, 1000]);
    expect(r.stats.overBudget).toBe(2);
    expect(r.stats.hostBusy).toBe(0);
    expect(r.stats.spinMs).toBeCloseTo(1, 9);
  });

  it('without a pressure signal, a preempted poll (another thread wanted the CPU): the window goes to 0 and nothing polls until the next second', () => {
    const grow: [number, number, number][] = Array.from({ length: 4 }, () => [WOKE, 30 * US, 1]);
    const t = 7_000 * MS;
    const r = run(100, 200, [
      ...grow,
      [ALLOW, t, 0], [POLLED, 20 * US, 1 | 2],
      [WOKE, 30 * US, 1], [ALLOW, t + 1 * MS, 0], [ALLOW, t + 999 * MS, 0],
      [ALLOW, t + 1000 * MS, 0],
    ]);
    expect(r.out.slice(4)).toEqual([80, 0, 10, 0, 0, 10]);
    // Counted as the host's business, not the budget's.
    expect(r.stats).toMatchObject({ preempted: 1, hits: 1, overBudget: 0, hostBusy: 2, busyPermille: 0, samples: 0 });
  });

  const grown: [number, number, number][] = Array.from({ length: 4 }, () => [WOKE, 30 * US, 1]);
  const I = 4 * MS; // the pressure's interval (ND_HP_PSI_INTERVAL_NS)

  it('the CPU pressure: sampled at most every 4 ms while polling; a busy interval (>= the threshold) holds polling 8 ms, the next in a row 16, a calm one halves the next hold', () => {
    const t = 9_000 * MS;
    const h1 = t + 2 * I; // the first busy interval ends
    const h2 = h1 + 8 * MS + I; // the second
    const r = run(100, 200, [
      ...grown,
      [PRESSURE, t, 1_000_000], // baseline
      [PRESSURE, t + 1 * MS, 1_000_000], // not due
      [PRESSURE, t + I, 1_000_000 + 400], // 10 % of 4 ms: calm
      [ALLOW, t + I, 0],
      [PRESSURE, h1, 1_000_400 + 1000], // 25 %: busy
      [ALLOW, h1 + 1, 0], [PRESSURE, h1 + 5 * MS, 2_000_000], // held: not sampled
      [ALLOW, h1 + 8 * MS, 0], // the hold is over
      [PRESSURE, h1 + 8 * MS, 2_000_000], // a new baseline: the hold's interval is not judged
      [PRESSURE, h2, 2_000_000 + 4000], // 100 %: busy again, a hold of 16 ms
      [ALLOW, h2 + 16 * MS - 1, 0], [ALLOW, h2 + 16 * MS, 0],
      [PRESSURE, h2 + 16 * MS, 3_000_000], [PRESSURE, h2 + 16 * MS + I, 3_000_000 + 100], // 2.5 %: calm
      [PRESSURE, h2 + 16 * MS + 2 * I, 3_000_100 + 2000], // 50 %: busy, a hold of 16 again (32 halved)
      [ALLOW, h2 + 32 * MS + 2 * I - 1, 0], [ALLOW, h2 + 32 * MS + 2 * I, 0],
    ], 200);
    expect(r.out.slice(4)).toEqual([-1, -2, 100, 80, 250, 0, -2, 80, -1, 1000, 0, 80, -1, 25, 500, 0, 80]);
    expect(r.stats).toMatchObject({ busyPermille: 200, pressurePermille: 500, samples: 5, busySamples: 3, holds: 3, hostBusy: 3, overBudget: 0 });
  });

  it('busy intervals in a row: holds of 8, 16, 32 ... ms, capped at the second', () => {
    let t = 20_000 * MS;
    const steps: [number, number, number][] = [...grown];
    const want: number[] = [];
    for (let k = 0; k < 9; k++) {
      const hold = Math.min(8 * 2 ** k, 1000) * MS;
      steps.push([PRESSURE, t, k * 1e6], [PRESSURE, t + I, k * 1e6 + 4000], [ALLOW, t + I + hold - 1, 0], [ALLOW, t + I + hold, 0]);
      want.push(-1, 1000, 0, 80);
      t += I + hold;
    }
    const r = run(100, 1000, steps, 200);
    expect(r.out.slice(4)).toEqual(want);
    expect(r.stats).toMatchObject({ holds: 9, busySamples: 9, hostBusy: 9 });
  });

  it('with the pressure, a preempted poll holds polling 8 ms (not its second), and the next hold in a row is longer', () => {
    const t = 11_000 * MS;
    const r = run(100, 200, [
      ...grown,
      [PRESSURE, t, 500], [ALLOW, t, 0], [POLLED, 20 * US, 1 | 2],
      [WOKE, 30 * US, 1], // the window grows again from 10 µs ...
      [ALLOW, t + 1 * MS, 0], // ... but the hold starts here
      [PRESSURE, t + 2 * MS, 500], // held: not sampled
      [ALLOW, t + 9 * MS - 1, 0], [ALLOW, t + 9 * MS, 0],
      [POLLED, 10 * US, 2], [WOKE, 30 * US, 1], [ALLOW, t + 10 * MS, 0], [ALLOW, t + 26 * MS - 1, 0], [ALLOW, t + 26 * MS, 0],
    ], 200);
    expect(r.out.slice(4)).toEqual([-1, 80, 0, 10, 0, -2, 0, 10, 0, 10, 0, 0, 10]);
    expect(r.stats).toMatchObject({ preempted: 2, holds: 2, hostBusy: 4, samples: 0 });
  });

  it('off (max 0): never allows a poll and the window stays 0', () => {
    const r = run(0, 200, [[WOKE, 30 * US, 1], [ALLOW, 1, 0], [WOKE, 1, 1]]);
    expect(r.out).toEqual([0, 0, 0]);
    expect(r.stats.grows).toBe(0);
  });

  it('refuses settings out of range with a RangeError, and non-numbers with a TypeError', () => {
    expect(POLL_BEFORE_SLEEP_MAX_US).toBe(1000);
    expect(() => setPollBeforeSleep(1001, 200)).toThrow(RangeError);
    expect(() => setPollBeforeSleep(-1, 200)).toThrow(RangeError);
    expect(() => setPollBeforeSleep(1.5, 200)).toThrow(RangeError);
    expect(() => setPollBeforeSleep(50, 0)).toThrow(RangeError);
    expect(() => setPollBeforeSleep(50, 1001)).toThrow(RangeError);
    expect(() => setPollBeforeSleep('50' as unknown as number, 200)).toThrow(TypeError);
    expect(() => pollBeforeSleepForTest(50, 200, new Float64Array(2))).toThrow(TypeError);
    expect(() => pollBeforeSleepForTest(50, 200, new Float64Array(3), 1001)).toThrow(RangeError);
  });
});

const NS = childNs('ndh');
const SENDS = 2000;

/**
 * A child: one addon UDP socket, a worker thread sending it SENDS datagrams, each
 * ~50 µs (busy wait) after the previous one, from another thread, so they arrive
 * whatever the main loop is doing: polling or asleep. Reports what was received and
 * the poll's counters. A preempted poll does not stop polling here (the rule is the
 * unit tests' above): the machine running the tests is rarely idle.
 */
async function stream(maxUs: number): Promise<{ got: number; hp: Record<string, number>; stats: Record<string, number> }> {
  const script = `
    const { Worker } = require('node:worker_threads');
    const [maxUs, sends] = process.argv.slice(2).map(Number);
    const [h] = nd.openUdp(0x7f000001, 4789, '');
    let got = 0;
    nd.start(h, (n) => { if (n < 0) { console.log(JSON.stringify({ error: n })); process.exit(1); } got += n; });
    // A loaded test machine preempts polls often; each would stop polling for its second.
    nd.setPollBeforeSleep(maxUs, 1000, false);
    const w = new Worker(\`
      const dgram = require('node:dgram');
      const s = dgram.createSocket('udp4');
      const p = Buffer.alloc(64, 1);
      s.connect(4789, '127.0.0.1', () => {
        let i = 0;
        const next = () => {
          s.send(p);
          if (++i === \${sends}) { setTimeout(() => process.exit(0), 100); return; }
          const until = process.hrtime.bigint() + 50000n;
          while (process.hrtime.bigint() < until);
          setImmediate(next);
        };
        next();
      });\`, { eval: true });
    w.on('exit', () => {
      console.log(JSON.stringify({ got, hp: nd.pollBeforeSleepStats(), stats: nd.stats() }));
      process.exit(0);
    });
    setTimeout(() => { console.log(JSON.stringify({ error: 'timeout', got })); process.exit(1); }, 20000);
  `;
  return NS.run(script, [String(maxUs), String(SENDS)], { timeout: 40_000 });
}

/**
 * A child: one addon UDP socket whose callback acknowledges each batch from a
 * microtask; a worker thread sends a datagram, waits (up to 1 s) for the previous
 * ones' acknowledgement, sends the next. A microtask left queued while the loop
 * sleeps would stall the ping-pong until something else woke the loop: `stalls`.
 */
async function pingPong(sends: number): Promise<{ got: number; served: number; stalls: number }> {
  const script = `
    const { Worker } = require('node:worker_threads');
    const sends = Number(process.argv[2]);
    const acks = new Int32Array(new SharedArrayBuffer(8));
    const [h] = nd.openUdp(0x7f000001, 4790, '');
    let got = 0;
    nd.start(h, (n) => {
      if (n < 0) { console.log(JSON.stringify({ error: n })); process.exit(1); }
      got += n;
      queueMicrotask(() => { Atomics.add(acks, 0, n); Atomics.notify(acks, 0); });
    });
    nd.setPollBeforeSleep(1000, 1000, false);
    const w = new Worker(\`
      const { workerData } = require('node:worker_threads');
      const acks = workerData;
      const dgram = require('node:dgram');
      const s = dgram.createSocket('udp4');
      const p = Buffer.alloc(64, 1);
      let i = 0, stalls = 0;
      s.connect(4790, '127.0.0.1', () => {
        const next = () => s.send(p, () => {
          if (Atomics.wait(acks, 0, i, 1000) === 'timed-out') stalls++;
          if (++i === \${sends}) { acks[1] = stalls; process.exit(0); }
          setImmediate(next);
        });
        next();
      });\`, { eval: true, workerData: acks });
    w.on('exit', () => {
      console.log(JSON.stringify({ got, served: nd.pollBeforeSleepStats().served, stalls: acks[1] }));
      process.exit(0);
    });
    setTimeout(() => { console.log(JSON.stringify({ error: 'timeout', got })); process.exit(1); }, 30000);
  `;
  return NS.run(script, [String(sends)], { timeout: 40_000 });
}

describe('poll before sleep on real sockets', () => {
  it('on: datagrams arriving while the loop polls are found by the poll (hits), and every one is delivered', async () => {
    const r = await stream(1000);
    expect(r.got).toBe(SENDS);
    expect(r.hp.maxUs).toBe(1000);
    expect(r.hp.spins).toBe(r.hp.hits + r.hp.misses);
    // The window grew (sleeps of ~50 µs ended by the socket) and polls found datagrams.
    expect(r.hp.grows).toBeGreaterThan(0);
    expect(r.hp.hits).toBeGreaterThan(0);
    expect(r.hp.windowUs).toBeLessThanOrEqual(1000);
    // What the poll found on the socket was served from inside it.
    expect(r.hp.served).toBeGreaterThan(0);
    expect(r.hp.served).toBeLessThanOrEqual(r.hp.hits);
  }, 60_000);

  it('a batch served inside the poll has the microtasks it queued run before the loop sleeps (a ping-pong waiting on them never stalls)', async () => {
    const r = await pingPong(300);
    expect(r.got).toBe(300);
    expect(r.served).toBeGreaterThan(0);
    expect(r.stalls).toBe(0);
  }, 60_000);

  it('off: the same stream, nothing polls', async () => {
    const r = await stream(0);
    expect(r.got).toBe(SENDS);
    expect(r.hp).toMatchObject({ maxUs: 0, windowUs: 0, spins: 0, hits: 0, misses: 0, spinMs: 0, grows: 0 });
  }, 60_000);
});
