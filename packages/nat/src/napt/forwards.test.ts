import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseIp4 } from '@vswitch/switch';
import { StateFileError } from '../state-file.js';
import {
  checkForward, deserializeForwards, describeForward, ForwardError, type ForwardEvent, Forwards, formatForward,
  loadForwards, parseForward, type PortForward, saveForwards, serializeForwards,
} from './forwards.js';

const TCP = 6;
const UDP = 17;
const ip = (s: string): number => parseIp4(s);
const VM = ip('10.0.10.5');
const VM2 = ip('10.0.10.6');

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof ForwardError) return e.code;
    throw e;
  }
  return 'no error';
}

function message(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return (e as Error).message;
  }
  return 'no error';
}

describe('parseForward', () => {
  it('reads a single port', () => {
    expect(parseForward({ proto: 'tcp', public: '8080', inside: '10.0.10.5:80' }))
      .toEqual({ proto: 'tcp', publicLo: 8080, publicHi: 8080, insideIp: VM, insideLo: 80 });
    expect(parseForward({ proto: 'UDP', public: 5353, inside: '10.0.10.5' }))
      .toEqual({ proto: 'udp', publicLo: 5353, publicHi: 5353, insideIp: VM, insideLo: 5353 });
  });

  it('reads ranges, with the inside range given whole or by its first port', () => {
    const whole = parseForward({ proto: 'udp', public: '8000-8009', inside: '10.0.10.5:9000-9009' });
    const first = parseForward({ proto: 'udp', public: '8000 - 8009', inside: '10.0.10.5:9000' });
    expect(whole).toEqual({ proto: 'udp', publicLo: 8000, publicHi: 8009, insideIp: VM, insideLo: 9000 });
    expect(first).toEqual(whole);
    expect(formatForward(whole)).toEqual({ proto: 'udp', public: '8000-8009', inside: '10.0.10.5:9000-9009' });
    expect(describeForward(whole)).toBe('udp 8000-8009 -> 10.0.10.5:9000-9009');
  });

  it('refuses bad input with EFORWARD_INVALID and a reason', () => {
    const bad = [
      { proto: 'sctp', public: '80', inside: '10.0.10.5:80' },
      { proto: 'tcp', public: '0', inside: '10.0.10.5:80' },
      { proto: 'tcp', public: '65536', inside: '10.0.10.5:80' },
      { proto: 'tcp', public: '90-80', inside: '10.0.10.5:80' },
      { proto: 'tcp', public: 'http', inside: '10.0.10.5:80' },
      { proto: 'tcp', public: '80', inside: '10.0.10.256:80' },
      { proto: 'tcp', public: '80', inside: 'vm1:80' },
      { proto: 'tcp', public: '80', inside: '127.0.0.1:80' },
      { proto: 'tcp', public: '80', inside: '224.0.0.1:80' },
      { proto: 'tcp', public: '80', inside: '0.0.0.0:80' },
      { proto: 'tcp', public: '8000-8009', inside: '10.0.10.5:9000-9001' },
      { proto: 'tcp', public: '8000-8009', inside: '10.0.10.5:65530' },
    ];
    for (const b of bad) expect(code(() => parseForward(b)), JSON.stringify(b)).toBe('EFORWARD_INVALID');
    expect(message(() => parseForward(bad[10]))).toMatch(/2 ports, public 8000-8009 has 10/);
    expect(code(() => checkForward({ proto: 'tcp', publicLo: 1.5, publicHi: 2, insideIp: VM, insideLo: 1 }))).toBe('EFORWARD_INVALID');
  });
});

describe('IPv6 targets (host uplink)', () => {
  it('reads [ipv6]:port, a bare IPv6 address and ranges; writes the canonical text back', () => {
    const f = parseForward({ proto: 'tcp', public: '8080', inside: '[FD00:10:0::50]:80' });
    expect(f).toEqual({ proto: 'tcp', publicLo: 8080, publicHi: 8080, insideIp: 0, insideLo: 80, inside6: 'fd00:10::50' });
    expect(formatForward(f)).toEqual({ proto: 'tcp', public: '8080', inside: '[fd00:10::50]:80' });
    expect(parseForward({ proto: 'udp', public: '53', inside: 'fd00:10::50' })).toMatchObject({ insideLo: 53, inside6: 'fd00:10::50' });
    const r = parseForward({ proto: 'udp', public: '8000-8009', inside: '[fd00:10::50]:9000' });
    expect(describeForward(r)).toBe('udp 8000-8009 -> [fd00:10::50]:9000-9009');
    expect(deserializeForwards(serializeForwards([f, r]))).toEqual([f, r]);
  });

  it('refuses what is no VM address: loopback, unspecified, mapped, multicast, link-local, garbage', () => {
    for (const inside of ['[::1]:80', '[::]:80', '[::ffff:10.0.0.1]:80', '[ff02::1]:80', '[fe80::1]:80', '[fd00::g]:80', '[fd00::1:80']) {
      expect(code(() => parseForward({ proto: 'tcp', public: '80', inside })), inside).toBe('EFORWARD_INVALID');
    }
  });

  it('conflicts: one public port per protocol across families; one public port per inside IPv6 endpoint; none with IPv4 of the same ports', () => {
    const f = new Forwards();
    f.add(parseForward({ proto: 'tcp', public: '8080', inside: '[fd00:10::50]:80' }));
    expect(code(() => f.add(parseForward({ proto: 'tcp', public: '8080', inside: '10.0.10.5:80' })))).toBe('EFORWARD_CONFLICT');
    expect(message(() => f.add(parseForward({ proto: 'tcp', public: '8081', inside: '[fd00:10::50]:80' })))).toMatch(/inside \[fd00:10::50\]:80 is already/);
    f.add(parseForward({ proto: 'tcp', public: '8081', inside: '10.0.10.5:80' }));
    f.add(parseForward({ proto: 'tcp', public: '8082', inside: '[fd00:10::51]:80' }));
    // The IPv4 NAPT never sees an IPv6 target as an inside host's public port.
    expect(f.publicFor(TCP, 0, 80)).toBe(-1);
    expect(f.publicFor(TCP, VM, 80)).toBe(8081);
    expect(f.lookup(TCP, 8080)?.inside6).toBe('fd00:10::50');
    f.del('tcp', 8080);
    f.add(parseForward({ proto: 'tcp', public: '8083', inside: '[fd00:10::50]:80' }));
  });
});

describe('Forwards', () => {
  const fwd = (pub: string, inside: string, proto = 'tcp'): PortForward => parseForward({ proto, public: pub, inside });

  it('adds, lists in order and looks up in O(1) by public port', () => {
    const f = new Forwards();
    f.add(fwd('8080', '10.0.10.5:80'));
    f.add(fwd('2222', '10.0.10.6:22'));
    f.add(fwd('8000-8009', '10.0.10.6:9000', 'udp'));
    expect(f.size).toBe(3);
    expect(f.view()).toEqual([
      { proto: 'tcp', public: '2222', inside: '10.0.10.6:22' },
      { proto: 'tcp', public: '8080', inside: '10.0.10.5:80' },
      { proto: 'udp', public: '8000-8009', inside: '10.0.10.6:9000-9009' },
    ]);
    expect(f.lookup(TCP, 8080)?.insideIp).toBe(VM);
    expect(f.lookup(UDP, 8080)).toBeUndefined();
    expect(f.lookup(UDP, 8003)?.insideLo).toBe(9000);
    expect(f.lookup(1, 8003)).toBeUndefined();
    expect(f.isReserved(TCP, 2222)).toBe(true);
    expect(f.isReserved(UDP, 2222)).toBe(false);
    expect(f.isReserved(UDP, 8009)).toBe(true);
    expect(f.isReserved(UDP, 8010)).toBe(false);
  });

  it('maps a range 1:1 in both directions', () => {
    const f = new Forwards();
    f.add(fwd('8000-8009', '10.0.10.6:9000', 'udp'));
    expect(f.publicFor(UDP, VM2, 9000)).toBe(8000);
    expect(f.publicFor(UDP, VM2, 9007)).toBe(8007);
    expect(f.publicFor(UDP, VM2, 9010)).toBe(-1);
    expect(f.publicFor(UDP, VM, 9000)).toBe(-1);
    expect(f.publicFor(TCP, VM2, 9000)).toBe(-1);
  });

  it('refuses overlapping public ranges of one protocol, naming the forward in the way', () => {
    const f = new Forwards();
    f.add(fwd('8000-8009', '10.0.10.5:9000'));
    expect(code(() => f.add(fwd('8009-8010', '10.0.10.6:1')))).toBe('EFORWARD_CONFLICT');
    expect(message(() => f.add(fwd('7990-8000', '10.0.10.6:1'))))
      .toBe('public tcp 7990-8000 overlaps the forward tcp 8000-8009 -> 10.0.10.5:9000-9009');
    expect(code(() => f.add(fwd('8005', '10.0.10.6:1')))).toBe('EFORWARD_CONFLICT');
    // Other protocol, and adjacent ranges, are fine.
    f.add(fwd('8005', '10.0.10.6:1', 'udp'));
    f.add(fwd('8010', '10.0.10.6:2'));
    f.add(fwd('7999', '10.0.10.6:3'));
    expect(f.size).toBe(4);
  });

  it('refuses a second public port for one inside endpoint (endpoint-independent mapping)', () => {
    const f = new Forwards();
    f.add(fwd('80', '10.0.10.5:80'));
    expect(message(() => f.add(fwd('8080', '10.0.10.5:80'))))
      .toMatch(/^inside 10\.0\.10\.5:80 is already the target of the forward tcp 80 -> 10\.0\.10\.5:80/);
    expect(code(() => f.add(fwd('9000-9100', '10.0.10.5:1-101')))).toBe('EFORWARD_CONFLICT');
    f.add(fwd('8080', '10.0.10.5:8080'));
    f.add(fwd('8081', '10.0.10.6:80'));
    f.add(fwd('8082', '10.0.10.5:80', 'udp'));
  });

  it('deletes by the exact public range and says what covers a partial one', () => {
    const f = new Forwards();
    f.add(fwd('8000-8009', '10.0.10.5:9000'));
    expect(code(() => f.del('tcp', 8003))).toBe('EFORWARD_NOT_FOUND');
    expect(message(() => f.del('tcp', 8003))).toMatch(/part of the forward tcp 8000-8009/);
    expect(code(() => f.del('udp', 8000, 8009))).toBe('EFORWARD_NOT_FOUND');
    expect(message(() => f.del('tcp', 1))).toBe('no forward for public tcp 1');
    expect(f.del('tcp', 8000, 8009).insideLo).toBe(9000);
    expect(f.size).toBe(0);
    expect(f.lookup(TCP, 8005)).toBeUndefined();
    expect(f.isReserved(TCP, 8000)).toBe(false);
    expect(f.publicFor(TCP, VM, 9000)).toBe(-1);
    // The inside endpoints are free again.
    f.add(fwd('80', '10.0.10.5:9000'));
  });

  it('announces adds and deletes to subscribers', () => {
    const f = new Forwards();
    const seen: string[] = [];
    const off = f.subscribe((e: ForwardEvent, g) => seen.push(`${e} ${describeForward(g)}`));
    f.add(fwd('80', '10.0.10.5:80'));
    f.add(fwd('53', '10.0.10.5:53', 'udp'));
    f.clear();
    off();
    f.add(fwd('81', '10.0.10.5:81'));
    expect(seen).toEqual([
      'add tcp 80 -> 10.0.10.5:80', 'add udp 53 -> 10.0.10.5:53',
      'del tcp 80 -> 10.0.10.5:80', 'del udp 53 -> 10.0.10.5:53',
    ]);
  });

  it('stores frozen copies', () => {
    const f = new Forwards();
    const input = { proto: 'tcp' as const, publicLo: 80, publicHi: 80, insideIp: VM, insideLo: 80 };
    const stored = f.add(input);
    expect(Object.isFrozen(stored)).toBe(true);
    (input as { publicLo: number }).publicLo = 1;
    expect(f.list()[0].publicLo).toBe(80);
  });
});

describe('persistence', () => {
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'napt-fwd-')); });
  afterEach(() => { rmSync(dir, { recursive: true, force: true }); });

  const sample = (): Forwards => {
    const f = new Forwards();
    f.add(parseForward({ proto: 'tcp', public: '8080', inside: '10.0.10.5:80' }));
    f.add(parseForward({ proto: 'udp', public: '6000-6009', inside: '10.0.10.6:7000' }));
    return f;
  };

  it('serializes to the documented JSON and back', () => {
    const text = serializeForwards(sample());
    expect(JSON.parse(text)).toEqual({
      version: 1,
      forwards: [
        { proto: 'tcp', public: '8080', inside: '10.0.10.5:80' },
        { proto: 'udp', public: '6000-6009', inside: '10.0.10.6:7000-7009' },
      ],
    });
    expect(deserializeForwards(text)).toEqual(sample().list());
    expect(serializeForwards(sample().list().reverse())).toBe(text);
  });

  it('round-trips through the state file', () => {
    const path = join(dir, 'forwards.json');
    saveForwards(path, sample());
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const g = new Forwards();
    expect(loadForwards(path, g)).toBe(2);
    expect(g.list()).toEqual(sample().list());
    expect(readFileSync(path, 'utf8')).toBe(serializeForwards(g));
  });

  it('loads nothing from a missing file', () => {
    const g = new Forwards();
    expect(loadForwards(join(dir, 'none.json'), g)).toBe(0);
    expect(g.size).toBe(0);
  });

  it('refuses bad files with EFORWARD_INVALID, naming the entry', () => {
    const path = join(dir, 'forwards.json');
    const cases: [string, RegExp][] = [
      ['{', /not JSON/],
      ['[]', /expected an object/],
      ['{"version": 2, "forwards": []}', /version 2 is not 1/],
      ['{"version": 1}', /"forwards" is not a list/],
      ['{"version": 1, "forwards": [{"proto": "tcp", "public": "80", "inside": "10.0.10.5:80"}, {"proto": "tcp", "public": "x", "inside": "10.0.10.5"}]}', /entry 2: public/],
      ['{"version": 1, "forwards": [null]}', /entry 1/],
    ];
    for (const [text, re] of cases) {
      writeFileSync(path, text);
      const g = new Forwards();
      expect(code(() => loadForwards(path, g)), text).toBe('EFORWARD_INVALID');
      expect(message(() => loadForwards(path, g))).toMatch(re);
      expect(g.size).toBe(0);
    }
  });

  it('is all or nothing when the file conflicts with itself or with forwards present', () => {
    const path = join(dir, 'forwards.json');
    writeFileSync(path, JSON.stringify({ version: 1, forwards: [
      { proto: 'tcp', public: '80', inside: '10.0.10.5:80' },
      { proto: 'tcp', public: '80', inside: '10.0.10.6:80' },
    ] }));
    const g = new Forwards();
    expect(code(() => loadForwards(path, g))).toBe('EFORWARD_CONFLICT');
    expect(g.size).toBe(0);
    saveForwards(path, sample());
    g.add(parseForward({ proto: 'udp', public: '6005', inside: '10.0.10.9:1' }));
    expect(code(() => loadForwards(path, g))).toBe('EFORWARD_CONFLICT');
    expect(g.size).toBe(1);
  });

  it('refuses a symlinked state file', () => {
    const real = join(dir, 'elsewhere.json');
    writeFileSync(real, serializeForwards(sample()));
    const path = join(dir, 'forwards.json');
    symlinkSync(real, path);
    expect(() => loadForwards(path, new Forwards())).toThrow(StateFileError);
  });
});
