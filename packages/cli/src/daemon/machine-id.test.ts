/*
 * The host key and the MACs made from it: the same derivation as systemd's
 * app-specific machine id (checked against a vector from `systemd-id128
 * machine-id --app-specific=APP_ID`), locally administered unicast MACs that
 * differ between machine ids, and the fallback id persisted in the state directory.
 * (On the old code the MAC was a hash of the router's name alone.)
 */
import { lstatSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { APP_ID, appSpecificId, loadHostKey, macFor, parseMachineId, STATE_MACHINE_ID } from './machine-id.js';
import { stableMac } from './routers.js';

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'vswitch-mid-'));
  dirs.push(d);
  return d;
}
afterEach(() => { for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true }); });

const isLocalUnicast = (mac: number): boolean => {
  const first = Math.floor(mac / 2 ** 40);
  return (first & 0x01) === 0 && (first & 0x02) === 0x02;
};

describe('machine id', () => {
  it('parses machine-id(5) text, refuses the rest', () => {
    expect(parseMachineId('3d1219c7c4c5404aaa1f6d2a48adfda4\n')?.toString('hex')).toBe('3d1219c7c4c5404aaa1f6d2a48adfda4');
    expect(parseMachineId('3D1219C7C4C5404AAA1F6D2A48ADFDA4')?.toString('hex')).toBe('3d1219c7c4c5404aaa1f6d2a48adfda4');
    for (const bad of [undefined, '', '\n', 'uninitialized\n', '3d1219c7', '0'.repeat(32), 'g'.repeat(32), '3d1219c7-c4c5-404a-aa1f-6d2a48adfda4']) {
      expect(parseMachineId(bad)).toBeUndefined();
    }
  });

  it('the host key is systemd\'s app-specific id (sd_id128_get_machine_app_specific)', () => {
    // systemd-id128 machine-id --app-specific=a0df2a84600144ed88b813af252476b8 on a host whose machine id is 3d12...
    expect(APP_ID).toBe('a0df2a84600144ed88b813af252476b8');
    expect(appSpecificId(parseMachineId('3d1219c7c4c5404aaa1f6d2a48adfda4')!).toString('hex')).toBe('517bcaeb593944a4b1b2b9f82bf552b1');
  });

  it('MACs are locally administered unicast, stable, and differ by machine id and by name', () => {
    const k1 = appSpecificId(parseMachineId('3d1219c7c4c5404aaa1f6d2a48adfda4')!);
    const k2 = appSpecificId(parseMachineId('8f0c2b1e9a7d4c3b8e6f5a4d3c2b1a09')!);
    const macs = new Set<number>();
    for (const k of [k1, k2]) {
      for (const name of ['r0/uplink', 'r0/net10', 'r1/uplink']) {
        const m = macFor(k, name);
        expect(isLocalUnicast(m), m.toString(16)).toBe(true);
        expect(macFor(k, name)).toBe(m);
        macs.add(m);
      }
    }
    expect(macs.size).toBe(6);
  });

  it('every first octet keeps the U/L bit set and the I/G bit clear (property over names)', () => {
    const k = appSpecificId(parseMachineId('3d1219c7c4c5404aaa1f6d2a48adfda4')!);
    for (let i = 0; i < 2000; i++) expect(isLocalUnicast(macFor(k, `r${i}/uplink`))).toBe(true);
  });
});

describe('loadHostKey', () => {
  it('reads VSWITCH_MACHINE_ID_FILE and never writes the state directory then', () => {
    const d = tmp();
    const f = join(d, 'mid');
    writeFileSync(f, '3d1219c7c4c5404aaa1f6d2a48adfda4\n');
    const k = loadHostKey(d, { VSWITCH_MACHINE_ID_FILE: f });
    expect(k).toMatchObject({ source: f, created: false });
    expect(k.key.toString('hex')).toBe('517bcaeb593944a4b1b2b9f82bf552b1');
    expect(() => lstatSync(join(d, STATE_MACHINE_ID))).toThrow(/ENOENT/);
  });

  it('without a usable machine id: a random id made once in the state directory, then reused', () => {
    const d = tmp();
    for (const content of [undefined, '', 'uninitialized\n', 'garbage']) {
      const f = join(d, 'mid');
      rmSync(f, { force: true });
      if (content !== undefined) writeFileSync(f, content);
      rmSync(join(d, STATE_MACHINE_ID), { force: true });
      const a = loadHostKey(d, { VSWITCH_MACHINE_ID_FILE: f });
      expect(a).toMatchObject({ source: join(d, STATE_MACHINE_ID), created: true });
      expect(a.reason).toContain(f);
      expect(readFileSync(join(d, STATE_MACHINE_ID), 'utf8')).toMatch(/^[0-9a-f]{32}\n$/);
      expect((lstatSync(join(d, STATE_MACHINE_ID)).mode & 0o777).toString(8)).toBe('600');
      const b = loadHostKey(d, { VSWITCH_MACHINE_ID_FILE: f });
      expect(b).toMatchObject({ created: false });
      expect(b.key.equals(a.key)).toBe(true);
    }
  });

  it('a symlink planted as the fallback file is replaced, not followed', () => {
    const d = tmp();
    const target = join(d, 'target');
    writeFileSync(target, '3d1219c7c4c5404aaa1f6d2a48adfda4\n');
    symlinkSync(target, join(d, STATE_MACHINE_ID));
    const k = loadHostKey(d, { VSWITCH_MACHINE_ID_FILE: join(d, 'absent') });
    expect(k.created).toBe(true);
    expect(lstatSync(join(d, STATE_MACHINE_ID)).isFile()).toBe(true);
    expect(readFileSync(target, 'utf8')).toBe('3d1219c7c4c5404aaa1f6d2a48adfda4\n');
  });

  it('stableMac takes the host key of the state directory', () => {
    const d = tmp();
    writeFileSync(join(d, STATE_MACHINE_ID), '8f0c2b1e9a7d4c3b8e6f5a4d3c2b1a09\n');
    const prev = process.env.VSWITCH_MACHINE_ID_FILE;
    process.env.VSWITCH_MACHINE_ID_FILE = join(d, 'absent');
    try {
      expect(stableMac(d, 'r0/uplink')).toBe(macFor(appSpecificId(parseMachineId('8f0c2b1e9a7d4c3b8e6f5a4d3c2b1a09')!), 'r0/uplink'));
    } finally {
      if (prev === undefined) delete process.env.VSWITCH_MACHINE_ID_FILE;
      else process.env.VSWITCH_MACHINE_ID_FILE = prev;
    }
  });
});
