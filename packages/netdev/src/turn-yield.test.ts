/*
 * Giving up the CPU after busy loop turns (native/addon.c turn_yield, the bench knob
 * VSWITCH_TURN_YIELD_US, read when the addon loads): a node child under `ip netns exec`
 * in a namespace of the test's own, loading the built addon, with a UDP port holding a
 * backlog of 200 datagrams served 4 a turn (so more is readable after every turn) whose
 * batch callbacks write one frame to a TAP (up, in the namespace) per batch: a flood, its
 * port backlogged after every service but the last. With `light`, each of its batches also
 * sends one datagram to a second port, whose service drains it and writes a frame: a light
 * flow (a ping's reply, an ACK). With the knob set the loop yields (sched_yield, or a
 * nanosleep with VSWITCH_TURN_YIELD=sleep or nap; with =contended only while the host has
 * more runnable tasks than CPUs) after turns that wrote a light flow, at least once and
 * never more often than it had turns that wrote; the flood alone never (with
 * VSWITCH_TURN_YIELD_AFTER=any it does, as before s31); unset, never. Each yield's time
 * away is counted (turnYieldNs: at least the 1 us sleep). Structure only: the first yield
 * is due at once, so no assertion depends on the clock.
 */
import { describe, expect, it } from 'vitest';
import { childNs } from './test-env.js';

const NS = childNs('ndy');
const FLOOD = 200;

interface Result { yields: number; awayNs: number; writeTurns: number; txFrames: number; batches: number; light: number }

async function run(env: Record<string, string>, light = false): Promise<Result> {
  const script = `
    const dgram = require('node:dgram');
    const { execFileSync } = require('node:child_process');
    const [tapName, flood, light] = [process.argv[2], Number(process.argv[3]), process.argv[4] === '1'];
    const [tap] = nd.openTap(tapName, 0, -1, -1);
    execFileSync('ip', ['link', 'set', tapName, 'up']);
    const [a] = nd.openUdp(0x7f000001, 4789, '');
    nd.setQuantum(a, 4, true);
    const tx = dgram.createSocket('udp4');
    const frame = Buffer.alloc(60, 0);
    frame.fill(0xff, 0, 6);                 // broadcast
    frame.writeUInt16BE(0x88b5, 12);        // local experimental: nothing answers it
    let got = 0, batches = 0, turn = 0, lastWriteTurn = -1, writeTurns = 0, lightFrames = 0;
    const tick = () => { turn++; setImmediate(tick); };
    const s0 = nd.stats();
    const wrote = () => {
      if (nd.send(tap, frame, 0, frame.length) < 0) { console.log(JSON.stringify({ error: 'send' })); process.exit(1); }
      batches++;
      if (turn !== lastWriteTurn) { writeTurns++; lastWriteTurn = turn; }
    };
    const go = () => {
      if (light) {
        const [b] = nd.openUdp(0x7f000001, 4791, '');
        nd.start(b, (n) => { if (n > 0) { lightFrames += n; wrote(); } });
      }
      nd.start(a, (n) => {
        if (n < 0) { console.log(JSON.stringify({ error: n })); process.exit(1); }
        got += n;
        wrote();
        if (light) tx.send(Buffer.alloc(40, 0xcd), 4791, '127.0.0.1');
        if (got === flood) {
          const s1 = nd.stats();
          console.log(JSON.stringify({ yields: s1.turnYields - s0.turnYields, awayNs: s1.turnYieldNs - s0.turnYieldNs, writeTurns,
            txFrames: s1.txFrames - s0.txFrames, batches, light: lightFrames }));
          process.exit(0);
        }
      });
      tick();
    };
    let queued = 0;
    for (let i = 0; i < flood; i++) tx.send(Buffer.alloc(100, 0xab), 4789, '127.0.0.1', () => { if (++queued === flood) go(); });
    setTimeout(() => { console.log(JSON.stringify({ error: 'timeout', got })); process.exit(1); }, 8000);
  `;
  return NS.run<Result>(script, [`${NS.name}t`, String(FLOOD), light ? '1' : '0'],
    { env: { ...process.env, VSWITCH_TURN_YIELD_US: '', VSWITCH_TURN_YIELD: '', VSWITCH_TURN_YIELD_AFTER: '', ...env } });
}

describe('turn yield (VSWITCH_TURN_YIELD_US)', () => {
  it('off by default: a busy loop that writes a light flow never yields', async () => {
    const r = await run({}, true);
    expect(r.txFrames).toBe(r.batches);
    expect(r.light, 'the light port was served').toBeGreaterThan(0);
    expect(r.batches).toBeGreaterThanOrEqual(FLOOD / 4);
    expect(r.yields).toBe(0);
    expect(r.awayNs).toBe(0);
  });

  for (const mode of ['yield', 'sleep', 'nap']) {
    it(`on (${mode}): yields after busy turns that wrote a light flow, at most once per turn that wrote`, async () => {
      const r = await run({ VSWITCH_TURN_YIELD_US: '1', VSWITCH_TURN_YIELD: mode }, true);
      expect(r.txFrames).toBe(r.batches);
      expect(r.light).toBeGreaterThan(0);
      expect(r.yields).toBeGreaterThanOrEqual(1);
      expect(r.yields).toBeLessThanOrEqual(r.writeTurns);
      if (mode !== 'yield') expect(r.awayNs, 'each sleep counted, at least its 1 us').toBeGreaterThanOrEqual(r.yields * 1000);
    });
  }

  it('on (sleep): the flood alone, its port backlogged after every service, never yields', async () => {
    const r = await run({ VSWITCH_TURN_YIELD_US: '1', VSWITCH_TURN_YIELD: 'sleep' });
    expect(r.txFrames).toBe(r.batches);
    expect(r.batches).toBeGreaterThanOrEqual(FLOOD / 4);
    expect(r.yields).toBe(0);
  });

  it('on (sleep), VSWITCH_TURN_YIELD_AFTER=any: the flood alone yields (the rule before s31)', async () => {
    const r = await run({ VSWITCH_TURN_YIELD_US: '1', VSWITCH_TURN_YIELD: 'sleep', VSWITCH_TURN_YIELD_AFTER: 'any' });
    expect(r.yields).toBeGreaterThanOrEqual(1);
    expect(r.yields).toBeLessThanOrEqual(r.writeTurns);
  });

  it('contended: the sleep only while more tasks are runnable than CPUs (how many is up to the host), never more than once per turn that wrote', async () => {
    const r = await run({ VSWITCH_TURN_YIELD_US: '1', VSWITCH_TURN_YIELD: 'contended' }, true);
    expect(r.txFrames).toBe(r.batches);
    expect(r.yields).toBeLessThanOrEqual(r.writeTurns);
  });
});
