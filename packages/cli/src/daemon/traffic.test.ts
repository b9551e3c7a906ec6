import { describe, expect, it } from 'vitest';
import { parseConfig } from '../config.js';
import { bpduGuardOf, checkLoop, fileLoopConf, loopConf, loopSettings, rateSpec, rateText, rateValue, rateValueProblem, trafficSettings } from './traffic.js';

const F = '/etc/vswitch/test.yaml';
function errorOf(text: string): string {
  try {
    parseConfig(text, F);
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('expected a config error');
}

describe('loop protection and rate limits: config and defaults', () => {
  it('takes rates and bursts as tc writes them, with the key path and line in every error', () => {
    const c = parseConfig([
      'bridges:',
      '  br0:',
      '    loopProtection: { macFlapMoves: 5, macFlapHold: 10, bpduRecovery: 60 }',
      '    ports:',
      '      vm1: { type: tap, bpduGuard: false, ingressRate: { rate: 100mbit, burst: 1mb, pps: 20000 }, egressRate: { rate: 1gbit } }',
      '',
    ].join('\n'), F);
    expect(c.bridges.br0.loopProtection).toEqual({ macFlapMoves: 5, macFlapHold: 10, bpduRecovery: 60 });
    expect(c.bridges.br0.ports.vm1).toMatchObject({ bpduGuard: false, ingressRate: { rate: '100mbit', burst: '1mb', pps: 20000 } });
    const port = (extra: string): string => errorOf(`bridges:\n  br0:\n    ports:\n      vm1: { type: tap, ${extra} }\n`);
    expect(port('ingressRate: { rate: 100furlongs }')).toMatch(/bridges\.br0\.ports\.vm1\.ingressRate\.rate \(line 4\): bad rate '100furlongs'/);
    expect(port('ingressRate: { rate: 2tbit }')).toMatch(/ingressRate\.rate .*out of range: 8kbit to 1tbit/);
    expect(port('egressRate: { rate: 10mbit, burst: 100 }')).toMatch(/egressRate\.burst .*out of range: 1500 bytes to 1gb/);
    expect(port('egressRate: { rate: 10mbit, pps: 0 }')).toMatch(/egressRate\.pps/);
    expect(port('ingressRate: { rate: 10mbit, pps: 0 }')).toMatch(/ingressRate\.pps/);
    expect(port('bpduGuard: maybe')).toMatch(/bpduGuard/);
    expect(errorOf('bridges:\n  br0:\n    loopProtection: { macFlapHold: 0 }\n')).toMatch(/br0\.loopProtection\.macFlapHold/);
    expect(errorOf('bridges:\n  br0:\n    loopProtection: { macFlapMoves: -1 }\n')).toMatch(/macFlapMoves/);
    expect(errorOf('bridges:\n  br0:\n    loopProtection: { flap: 3 }\n')).toMatch(/loopProtection/);
    expect(parseConfig('bridges:\n  br0:\n    readQuantum: 64kb\n', F).bridges.br0.readQuantum).toBe(65536);
    expect(parseConfig('bridges:\n  br0:\n    readQuantum: "off"\n', F).bridges.br0.readQuantum).toBe(0);
    expect(parseConfig('bridges:\n  br0:\n    readQuantum: 131072\n', F).bridges.br0.readQuantum).toBe(131072);
    expect(errorOf('bridges:\n  br0:\n    readQuantum: 1kb\n')).toMatch(/br0\.readQuantum .*read quantum must be 0 \(off\) or 16384-67108864 bytes/);
    expect(errorOf('bridges:\n  br0:\n    readQuantum: lots\n')).toMatch(/bad read quantum 'lots'/);
    const fr = parseConfig('bridges:\n  br0:\n    readShare: frames\n    readFrames: 16\n', F).bridges.br0;
    expect([fr.readShare, fr.readFrames]).toEqual(['frames', 16]);
    expect(parseConfig('bridges:\n  br0:\n    readFrames: "off"\n', F).bridges.br0.readFrames).toBe(0);
    expect(parseConfig('bridges:\n  br0:\n    readShare: bytes\n', F).bridges.br0.readShare).toBe('bytes');
    expect(errorOf('bridges:\n  br0:\n    readShare: packets\n')).toMatch(/br0\.readShare .*readShare must be bytes or frames, got packets/);
    expect(errorOf('bridges:\n  br0:\n    readShare: 32\n')).toMatch(/br0\.readShare .*readShare must be bytes or frames/);
    expect(errorOf('bridges:\n  br0:\n    readFrames: 5000\n')).toMatch(/br0\.readFrames .*readFrames must be 0 \(off\) or 1-4096 frames, got 5000/);
    expect(errorOf('bridges:\n  br0:\n    readFrames: 32kb\n')).toMatch(/br0\.readFrames .*bad readFrames '32kb'/);
    expect(parseConfig('bridges:\n  br0:\n    readSparse: true\n', F).bridges.br0.readSparse).toBe(true);
    expect(fileLoopConf(parseConfig('bridges:\n  br0:\n    readSparse: true\n', F).bridges.br0)).toEqual({ readSparse: true });
    expect(loopConf(undefined).readSparse).toBe(true);
    expect(errorOf('bridges:\n  br0:\n    readSparse: sometimes\n')).toMatch(/br0\.readSparse/);
  });

  it('BPDU guard is on for VM ports (tap, socket), off for attach ports, unless the config says', () => {
    expect(bpduGuardOf('tap', undefined)).toBe(true);
    expect(bpduGuardOf('socket', undefined)).toBe(true);
    expect(bpduGuardOf('attach', undefined)).toBe(false);
    expect(bpduGuardOf('tap', false)).toBe(false);
    expect(bpduGuardOf('attach', true)).toBe(true);
  });

  it('fills in bursts and defaults, and refuses bad control values clearly', () => {
    expect(rateSpec({ rate: '100mbit' }, 'x')).toEqual({ rate: 100e6, burst: 1_250_000 });
    expect(rateSpec({ rate: '1mbit' }, 'x')).toEqual({ rate: 1e6, burst: 65536 });
    expect(rateSpec({ rate: '10mbit', burst: '64k', pps: 100 }, 'x')).toEqual({ rate: 10e6, burst: 65536, pps: 100 });
    expect(() => rateSpec({ rate: 'lots' }, 'ingress-rate')).toThrow(/^ingress-rate: bad rate 'lots'/);
    expect(() => rateSpec({ rate: '1mbit', pps: 1.5 }, 'ingress-rate')).toThrow(/pps must be/);
    expect(loopSettings(undefined)).toEqual({ flapMoves: 10, flapHoldSec: 30, bpduRecoverySec: 300 });
    expect(loopSettings({ macFlapMoves: 0 })).toEqual({ flapMoves: 0, flapHoldSec: 30, bpduRecoverySec: 300 });
    expect(() => checkLoop({ macFlapHold: 0 })).toThrow(/macFlapHold must be 1-86400 seconds, got 0/);
    expect(() => checkLoop({ macFlapMoves: 2.5 })).toThrow(/macFlapMoves/);
    expect(() => checkLoop({ bpduRecovery: 1e9 })).toThrow(/bpduRecovery/);
    expect(() => checkLoop({ readQuantum: 1000 })).toThrow(/read quantum must be/);
    expect(() => checkLoop({ readQuantum: 0 })).not.toThrow();
    expect(() => checkLoop({ readShare: 'packets' as 'frames' })).toThrow(/^readShare must be bytes or frames, got packets$/);
    expect(() => checkLoop({ readFrames: 0 })).not.toThrow();
    expect(() => checkLoop({ readFrames: 4097 })).toThrow(/^readFrames must be 0 \(off\) or 1-4096 frames/);
    expect(() => checkLoop({ readShare: 'frames', readFrames: 8 })).not.toThrow();
    expect(() => checkLoop({ readSparse: 'yes' as unknown as boolean })).toThrow(/^readSparse must be true or false, got yes$/);
    expect(() => checkLoop({ readSparse: true })).not.toThrow();
  });
});

describe('port set\'s BPDU guard and limits as runtime-state values', () => {
  it('rates become numbers with the default burst spelled out; off is off; burst and pps go with their rate', () => {
    expect(trafficSettings({ ingressRate: '100mbit', ingressPps: 5000, egressRate: 'off', bpduGuard: false }))
      .toEqual({ ingressRate: { rate: 100_000_000, burst: 1_250_000, pps: 5000 }, egressRate: 'off', bpduGuard: false });
    expect(rateValue({ rate: '100mbit' }, 'x')).toEqual(rateValue({ rate: 100_000_000, burst: 1_250_000 }, 'x'));
    expect(rateValue(undefined, 'x')).toBe('off');
    expect(rateText({ rate: 100_000_000, burst: 1024 * 1024, pps: 10 })).toBe('100mbit burst 1mb pps 10');
    expect(() => trafficSettings({ egressBurst: '1mb' })).toThrow(/egress burst and pps go with egress-rate/);
    expect(() => trafficSettings({ ingressRate: 'off', ingressPps: 3 })).toThrow(/takes no burst or pps/);
    expect(() => trafficSettings({ egressRate: '1 furlong' })).toThrow(/egress-rate: bad rate/);
    expect(rateValueProblem({ rate: 100_000_000, burst: 1 })).toMatch(/out of range/);
    expect(rateValueProblem({ rate: 100_000_000, burst: 65_536, pps: 0 })).toMatch(/pps must be/);
    expect(rateValueProblem({ rate: 100_000_000, burst: 65_536, colour: 10 })).toMatch(/unknown key colour/);
    expect(rateValueProblem('off')).toBeUndefined();
    expect(trafficSettings({ egressRate: '10mbit', egressPps: 100 })).toEqual({ egressRate: { rate: 10_000_000, burst: 125_000, pps: 100 } });
    expect(() => trafficSettings({ egressPps: 100 })).toThrow(/egress burst and pps go with egress-rate/);
  });
});
