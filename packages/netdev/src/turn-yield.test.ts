/*
 * Giving up the CPU after busy loop turns (native/addon.c turn_yield, the bench knob
 * VSWITCH_TURN_YIELD_US, read when the addon loads): a node child under `ip netns exec`
 * in a namespace of the test's own, loading the built addon, with a UDP port holding a
 * backlog of 200 datagrams served 4 a turn (so more is readable after every turn) whose
 * batch callbacks write one frame to a TAP (up, in the namespace) per batch. With the
 * knob set the loop yields (sched_yield, or a nanosleep with VSWITCH_TURN_YIELD=sleep or nap;
 * with =contended only while the host has more runnable tasks than CPUs)
 * at least once and never more often than it had turns that wrote; unset, never.
 * Structure only: the first yield is due at once, so no assertion depends on the clock.
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const execFileP = promisify(execFile);
const ADDON = fileURLToPath(new URL('../build/Release/netdev.node', import.meta.url));
const ID = randomBytes(3).toString('hex');
const NS = `ndy${ID}`;
const FLOOD = 200;

interface Result { yields: number; writeTurns: number; txFrames: number; batches: number }

async function run(env: Record<string, string>): Promise<Result> {
  const script = `
    const m = { exports: {} };
    process.dlopen(m, process.argv[1]);
    const nd = m.exports;
    const dgram = require('node:dgram');
    const { execFileSync } = require('node:child_process');
    const [tapName, flood] = [process.argv[2], Number(process.argv[3])];
    const [tap] = nd.openTap(tapName, 0, -1, -1);
    execFileSync('ip', ['link', 'set', tapName, 'up']);
    const [a] = nd.openUdp(0x7f000001, 4789, '');
    nd.setQuantum(a, 4, true);
    const tx = dgram.createSocket('udp4');
    const frame = Buffer.alloc(60, 0);
    frame.fill(0xff, 0, 6);                 // broadcast
    frame.writeUInt16BE(0x88b5, 12);        // local experimental: nothing answers it
    let got = 0, batches = 0, turn = 0, lastWriteTurn = -1, writeTurns = 0;
    const tick = () => { turn++; setImmediate(tick); };
    const s0 = nd.stats();
    const go = () => {
      nd.start(a, (n) => {
        if (n < 0) { console.log(JSON.stringify({ error: n })); process.exit(1); }
        got += n;
        batches++;
        if (nd.send(tap, frame, 0, frame.length) < 0) { console.log(JSON.stringify({ error: 'send' })); process.exit(1); }
        if (turn !== lastWriteTurn) { writeTurns++; lastWriteTurn = turn; }
        if (got === flood) {
          const s1 = nd.stats();
          console.log(JSON.stringify({ yields: s1.turnYields - s0.turnYields, writeTurns,
            txFrames: s1.txFrames - s0.txFrames, batches }));
          process.exit(0);
        }
      });
      tick();
    };
    let queued = 0;
    for (let i = 0; i < flood; i++) tx.send(Buffer.alloc(100, 0xab), 4789, '127.0.0.1', () => { if (++queued === flood) go(); });
    setTimeout(() => { console.log(JSON.stringify({ error: 'timeout', got })); process.exit(1); }, 8000);
  `;
  const { stdout } = await execFileP('ip', ['netns', 'exec', NS, process.execPath, '-e', script, ADDON, `ndy${ID}t`, String(FLOOD)],
    { timeout: 20_000, env: { ...process.env, VSWITCH_TURN_YIELD_US: '', VSWITCH_TURN_YIELD: '', ...env } });
  const r = JSON.parse(stdout);
  if (r.error !== undefined) throw new Error(`child: ${JSON.stringify(r)}`);
  return r;
}

beforeAll(() => {
  execFileSync('ip', ['netns', 'add', NS]);
  execFileSync('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
});

afterAll(() => {
  try { execFileSync('ip', ['netns', 'del', NS], { stdio: 'ignore' }); } catch { /* not made */ }
});

describe('turn yield (VSWITCH_TURN_YIELD_US)', () => {
  it('off by default: a busy loop that writes never yields', async () => {
    const r = await run({});
    expect(r.txFrames).toBe(r.batches);
    expect(r.batches).toBeGreaterThanOrEqual(FLOOD / 4);
    expect(r.yields).toBe(0);
  });

  for (const mode of ['yield', 'sleep', 'nap']) {
    it(`on (${mode}): yields after busy turns that wrote, at most once per such turn`, async () => {
      const r = await run({ VSWITCH_TURN_YIELD_US: '1', VSWITCH_TURN_YIELD: mode });
      expect(r.txFrames).toBe(r.batches);
      expect(r.yields).toBeGreaterThanOrEqual(1);
      expect(r.yields).toBeLessThanOrEqual(r.writeTurns);
    });
  }

  it('contended: the sleep only while more tasks are runnable than CPUs (how many is up to the host), never more than once per turn that wrote', async () => {
    const r = await run({ VSWITCH_TURN_YIELD_US: '1', VSWITCH_TURN_YIELD: 'contended' });
    expect(r.txFrames).toBe(r.batches);
    expect(r.yields).toBeLessThanOrEqual(r.writeTurns);
  });
});
