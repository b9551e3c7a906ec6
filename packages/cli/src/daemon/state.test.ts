/*
 * The runtime-state model (state.ts): the overlay of CLI changes over the config
 * file, the one conflict rule (an entry whose base the file changed is dropped),
 * the plan from one running state to the next, router edits in place vs rebuilds,
 * and runtime.json parsing. On main none of this exists: CLI changes were lost at
 * restart and a reload compared the file with the running state.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigSchema, type Config, TAP_WRITE_BATCH_DEFAULT, TURN_YIELD_US_DEFAULT } from '../config.js';
import {
  canonSpec, effective, emptyDesired, emptyOverlay, fdbKey, loadOverlay, parseOverlay, planChanges, rebase, resKey, routerDiff,
  loopKey, saveOverlay, serializeOverlay, settingKey, withEntry, type Overlay,
} from './state.js';
import { loopConf } from './traffic.js';

function cfg(extra: Record<string, unknown> = {}): Config {
  return ConfigSchema.parse({
    bridges: {
      br0: {
        ports: {
          vm1: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
          vm2: { type: 'tap', vlan: { mode: 'access', vid: 10 } },
        },
        fdb: [{ mac: '02:00:00:00:00:01', port: 'vm1' }],
      },
    },
    routers: {
      r0: {
        networks: {
          net10: {
            bridge: 'br0', vlan: 10, address: '10.0.10.1/24',
            dhcp: { pool: ['10.0.10.100-10.0.10.199'], reservations: [{ mac: '02:00:00:00:00:50', ip: '10.0.10.50' }] },
          },
        },
      },
    },
    ...extra,
  });
}

/** The same file with one change made by `edit` to its raw object. */
function edited(edit: (raw: any) => void): Config {
  const raw: any = {
    bridges: {
      br0: {
        ports: { vm1: { type: 'tap', vlan: { mode: 'access', vid: 10 } }, vm2: { type: 'tap', vlan: { mode: 'access', vid: 10 } } },
        fdb: [{ mac: '02:00:00:00:00:01', port: 'vm1' }],
      },
    },
    routers: {
      r0: {
        networks: {
          net10: {
            bridge: 'br0', vlan: 10, address: '10.0.10.1/24',
            dhcp: { pool: ['10.0.10.100-10.0.10.199'], reservations: [{ mac: '02:00:00:00:00:50', ip: '10.0.10.50' }] },
          },
        },
      },
    },
  };
  edit(raw);
  return ConfigSchema.parse(raw);
}

const tap = (vid: number) => canonSpec({ type: 'tap', vlan: { mode: 'access', vid } });

describe('effective running state = file + overlay', () => {
  it('an empty overlay gives the file, every object from "config"', () => {
    const { desired, notes } = effective(cfg(), emptyOverlay());
    expect([...desired.bridges.keys()]).toEqual(['br0']);
    expect(desired.bridges.get('br0')!.source).toBe('config');
    expect([...desired.ports.keys()]).toEqual(['vm1', 'vm2']);
    expect([...desired.fdb.values()]).toEqual([{ bridge: 'br0', vid: 10, mac: '02:00:00:00:00:01', port: 'vm1', source: 'config' }]);
    expect([...desired.reservations.values()].map((r) => [r.mac, r.ip, r.source])).toEqual([['02:00:00:00:00:50', '10.0.10.50', 'config']]);
    expect(notes).toEqual([]);
  });

  it('runtime bridges, ports, VLANs, static entries, ageing and reservations apply with their source', () => {
    const f = cfg();
    let ov = withEntry(emptyOverlay(), f, 'bridges', 'br9', { ageing: 60, maxMacs: 100 });
    ov = withEntry(ov, f, 'ports', 'vm9', { bridge: 'br9', spec: tap(20) });
    ov = withEntry(ov, f, 'vlans', 'vm2', { mode: 'access', vid: 30 });
    ov = withEntry(ov, f, 'ageing', 'br0', 17);
    ov = withEntry(ov, f, 'fdb', fdbKey('br9', 20, '02:00:00:00:00:09'), 'vm9');
    ov = withEntry(ov, f, 'reservations', resKey('net10', '02:00:00:00:00:51'), { ip: '10.0.10.51', hostname: 'web' });
    const { desired, notes } = effective(f, ov);
    expect(notes).toEqual([]);
    expect(desired.bridges.get('br9')).toMatchObject({ ageing: 60, maxMacs: 100, source: 'runtime' });
    expect(desired.bridges.get('br0')).toMatchObject({ ageing: 17, source: 'config', overrides: ['ageing'] });
    expect(desired.ports.get('vm9')).toMatchObject({ bridge: 'br9', source: 'runtime' });
    expect(desired.ports.get('vm2')).toMatchObject({ source: 'config', overrides: ['vlan'], spec: { vlan: { mode: 'access', vid: 30 } } });
    expect(desired.fdb.get(fdbKey('br9', 20, '02:00:00:00:00:09'))).toMatchObject({ port: 'vm9', source: 'runtime' });
    expect(desired.routers.get('r0')!.networks.net10.dhcp!.reservations).toEqual([
      { mac: '02:00:00:00:00:50', ip: '10.0.10.50' },
      { mac: '02:00:00:00:00:51', ip: '10.0.10.51', hostname: 'web' },
    ]);
  });

  it('delbr/delif/fdb del of file objects are tombstones; a change back to the file\'s value leaves no entry', () => {
    const f = cfg();
    let ov = withEntry(emptyOverlay(), f, 'ports', 'vm2', null);
    ov = withEntry(ov, f, 'fdb', fdbKey('br0', 10, '02:00:00:00:00:01'), null);
    expect(effective(f, ov).desired.ports.has('vm2')).toBe(false);
    expect(effective(f, ov).desired.fdb.size).toBe(0);
    // Reverted: addif with the file's spec, fdb add of the file's entry, setageing to the file's value.
    ov = withEntry(ov, f, 'ports', 'vm2', { bridge: 'br0', spec: tap(10) });
    ov = withEntry(ov, f, 'fdb', fdbKey('br0', 10, '02:00:00:00:00:01'), 'vm1');
    ov = withEntry(ov, f, 'ageing', 'br0', 300);
    expect(serializeOverlay(ov)).toBe(serializeOverlay(emptyOverlay()));
    expect(effective(f, ov).desired.ports.get('vm2')!.source).toBe('config');
  });

  it('the file changing a setting the CLI changed wins; settings it did not change keep the CLI\'s', () => {
    const f = cfg();
    let ov = withEntry(emptyOverlay(), f, 'vlans', 'vm1', { mode: 'access', vid: 30 });
    ov = withEntry(ov, f, 'vlans', 'vm2', { mode: 'access', vid: 40 });
    ov = withEntry(ov, f, 'ageing', 'br0', 17);
    const f2 = edited((raw) => { raw.bridges.br0.ports.vm1.vlan.vid = 20; });
    const r = rebase(ov, f2);
    expect(Object.keys(r.overlay.vlans)).toEqual(['vm2']);
    expect(r.notes.join()).toMatch(/vlans vm1: the config file changed it/);
    const { desired } = effective(f2, ov);
    expect(desired.ports.get('vm1')!.spec.vlan).toEqual({ mode: 'access', vid: 20 });
    expect(desired.ports.get('vm2')!.spec.vlan).toEqual({ mode: 'access', vid: 40 });
    expect(desired.bridges.get('br0')!.ageing).toBe(17);
  });

  it('the file defining an object the CLI made adopts it; a file edit brings back an object delif removed', () => {
    const f = cfg();
    let ov = withEntry(emptyOverlay(), f, 'ports', 'vm9', { bridge: 'br0', spec: tap(10) });
    ov = withEntry(ov, f, 'ports', 'vm2', null);
    const f2 = edited((raw) => {
      raw.bridges.br0.ports.vm9 = { type: 'tap', vlan: { mode: 'access', vid: 10 }, maxMacs: 4 };
      raw.bridges.br0.ports.vm2.maxMacs = 8;
    });
    const { desired, overlay } = effective(f2, ov);
    expect(desired.ports.get('vm9')).toMatchObject({ source: 'config', spec: { maxMacs: 4 } });
    expect(desired.ports.get('vm2')).toMatchObject({ source: 'config', spec: { maxMacs: 8 } });
    expect(overlay.ports).toEqual({});
    // The file unchanged: the tombstone holds.
    expect(effective(f, ov).desired.ports.has('vm2')).toBe(false);
  });

  it('drops what cannot apply any more, with a note: a port without its bridge, an entry out of its VLAN, a clashing reservation', () => {
    const f = cfg();
    let ov = withEntry(emptyOverlay(), f, 'bridges', 'br9', { ageing: 300, maxMacs: 8192 });
    ov = withEntry(ov, f, 'ports', 'vm9', { bridge: 'br9', spec: tap(20) });
    ov = withEntry(ov, f, 'fdb', fdbKey('br0', 30, '02:00:00:00:00:07'), 'vm1');
    ov = withEntry(ov, f, 'reservations', resKey('net10', '02:00:00:00:00:52'), { ip: '10.0.10.52' });
    ov = withEntry(ov, f, 'ports', 'net10', { bridge: 'br0', spec: tap(10) });
    ov = withEntry(ov, f, 'bridges', 'br9', null);
    const f2 = edited((raw) => { raw.routers.r0.networks.net10.dhcp.reservations.push({ mac: '02:00:00:00:00:53', ip: '10.0.10.52' }); });
    const { desired, overlay, notes } = effective(f2, ov);
    expect(desired.ports.has('vm9')).toBe(false);
    expect(desired.ports.has('net10')).toBe(false);
    expect(desired.fdb.has(fdbKey('br0', 30, '02:00:00:00:00:07'))).toBe(false);
    expect(desired.reservations.get(resKey('net10', '02:00:00:00:00:52'))).toBeUndefined();
    expect(notes.join('\n')).toMatch(/vm9: dropped, its bridge br9 is gone/);
    expect(notes.join('\n')).toMatch(/net10: dropped, the name is a network of router r0/);
    expect(notes.join('\n')).toMatch(/10\.0\.10\.52 is reserved for 02:00:00:00:00:53/);
    expect(overlay.ports).toEqual({});
    expect(overlay.fdb).toEqual({});
    expect(overlay.reservations).toEqual({});
  });

  it('a bridge a router network of the file sits on cannot stay deleted', () => {
    const f = cfg();
    const ov = withEntry(emptyOverlay(), f, 'bridges', 'br0', null);
    const { desired, notes } = effective(f, ov);
    expect(desired.bridges.has('br0')).toBe(true);
    expect(notes.join()).toMatch(/router network/);
  });
});

describe('port options (port set): settings entries over the file\'s port', () => {
  const withGuardFile = (): Config => cfg({
    bridges: {
      br0: {
        ports: {
          vm1: { type: 'tap', vlan: { mode: 'access', vid: 10 }, guard: { ipSource: true, bindings: [{ mac: '02:00:00:00:00:09', ip: '10.0.10.9' }] } },
          vm2: { type: 'tap', vlan: { mode: 'access', vid: 10 }, maxMacs: 4 },
        },
      },
    },
  });

  it('apply to a file port in place (no recreate, persistence included), listed as overrides, the guard\'s bindings kept', () => {
    const f = withGuardFile();
    const a = effective(f, emptyOverlay()).desired;
    let ov = withEntry(emptyOverlay(), f, 'settings', settingKey('vm1', 'guard'), { dhcp: true, ipSource: false });
    ov = withEntry(ov, f, 'settings', settingKey('vm1', 'storm'), 500);
    ov = withEntry(ov, f, 'settings', settingKey('vm2', 'maxMacs'), 16);
    ov = withEntry(ov, f, 'settings', settingKey('vm2', 'persistent'), true);
    const b = effective(f, ov).desired;
    expect(b.ports.get('vm1')!.spec).toMatchObject({ stormPps: 500, guard: { dhcp: true, ipSource: false, bindings: [{ mac: '02:00:00:00:00:09', ip: '10.0.10.9' }] } });
    expect(b.ports.get('vm1')!.overrides.sort()).toEqual(['guard', 'storm']);
    expect(b.ports.get('vm2')!.spec).toMatchObject({ maxMacs: 16, persistent: true });
    expect(b.ports.get('vm2')!.source).toBe('config');
    const p = planChanges(a, b);
    expect(p.portsSet.sort()).toEqual(['vm1', 'vm2']);
    expect([...p.recreate, ...p.portsAdd, ...p.portsDel]).toEqual([]);
  });

  it('a value equal to the file\'s leaves no entry; storm 0 and guard default are the file\'s when it has none', () => {
    const f = withGuardFile();
    let ov = withEntry(emptyOverlay(), f, 'settings', settingKey('vm2', 'maxMacs'), 4);
    ov = withEntry(ov, f, 'settings', settingKey('vm2', 'storm'), 0);
    ov = withEntry(ov, f, 'settings', settingKey('vm2', 'guard'), {});
    ov = withEntry(ov, f, 'settings', settingKey('vm1', 'guard'), { ipSource: true });
    expect(ov.settings).toEqual({});
  });

  it('the file changing the same setting wins; another setting the CLI changed stays; a reload of the same file changes nothing', () => {
    const f = withGuardFile();
    let ov = withEntry(emptyOverlay(), f, 'settings', settingKey('vm2', 'maxMacs'), 16);
    ov = withEntry(ov, f, 'settings', settingKey('vm2', 'storm'), 100);
    const same = effective(f, ov);
    expect(Object.keys(same.overlay.settings).sort()).toEqual(['vm2/maxMacs', 'vm2/storm']);
    expect(same.notes).toEqual([]);
    const p = planChanges(same.desired, effective(f, same.overlay).desired);
    expect([p.portsSet, p.portsAdd, p.portsDel].flat()).toEqual([]);
    const f2 = cfg({ bridges: { br0: { ports: { ...withGuardFile().bridges.br0.ports, vm2: { type: 'tap', vlan: { mode: 'access', vid: 10 }, maxMacs: 8 } } } } });
    const r = effective(f2, ov);
    expect(r.desired.ports.get('vm2')!.spec).toMatchObject({ maxMacs: 8, stormPps: 100 });
    expect(Object.keys(r.overlay.settings)).toEqual(['vm2/storm']);
    expect(r.notes.join()).toMatch(/settings vm2\/maxMacs: the config file changed it/);
    // The file removing the port drops its settings too.
    const f3 = cfg({ bridges: { br0: { ports: { vm1: withGuardFile().bridges.br0.ports.vm1 } } } });
    expect(effective(f3, ov).overlay.settings).toEqual({});
  });

  it('runtime.json keeps them, and refuses bad ones', () => {
    const f = withGuardFile();
    let ov = withEntry(emptyOverlay(), f, 'settings', settingKey('vm1', 'guard'), { dhcp: false, ipSource: false });
    ov = withEntry(ov, f, 'settings', settingKey('vm2', 'persistent'), true);
    expect(parseOverlay(serializeOverlay(ov))).toEqual(ov);
    const bad = (value: unknown, key = 'vm1/storm'): string => {
      try {
        parseOverlay(JSON.stringify({ version: 1, settings: { [key]: { value, base: null } } }));
      } catch (e) {
        return (e as Error).message;
      }
      return 'accepted';
    };
    expect(bad(-1)).toMatch(/storm/);
    expect(bad({ dhcp: 'yes' }, 'vm1/guard')).toMatch(/guard/);
    expect(bad(1, 'vm1/colour')).toMatch(/unknown port setting/);
    expect(bad(1, 'vm1')).toMatch(/unknown port setting/);
    // An older runtime.json without the section still loads.
    expect(parseOverlay(JSON.stringify({ version: 1, ports: {} })).settings).toEqual({});
  });
});

describe('BPDU guard and rate limits (port set), loop protection (bridge set): entries like the other settings', () => {
  const file = (): Config => cfg({
    bridges: {
      br0: {
        loopProtection: { macFlapMoves: 20 },
        ports: {
          vm1: { type: 'tap', vlan: { mode: 'access', vid: 10 }, ingressRate: { rate: '100mbit', burst: '1mb' } },
          up0: { type: 'attach' },
        },
      },
    },
  });
  const mbit100 = { rate: 100_000_000, burst: 1024 * 1024 };

  it('values are compared as what they mean: the file\'s "100mbit" is 100000000, the default burst and BPDU guard spelled out', () => {
    const f = file();
    let ov = withEntry(emptyOverlay(), f, 'settings', settingKey('vm1', 'ingressRate'), mbit100);
    ov = withEntry(ov, f, 'settings', settingKey('vm1', 'egressRate'), 'off');
    ov = withEntry(ov, f, 'settings', settingKey('vm1', 'bpduGuard'), true); // a tap's default
    ov = withEntry(ov, f, 'settings', settingKey('up0', 'bpduGuard'), false); // an attach port's default
    ov = withEntry(ov, f, 'loop', loopKey('br0', 'macFlapMoves'), 20);
    ov = withEntry(ov, f, 'loop', loopKey('br0', 'bpduRecovery'), 300); // the default
    expect(ov.settings).toEqual({});
    expect(ov.loop).toEqual({});
  });

  it('apply in place over the file\'s port and bridge, listed as overrides; off removes the file\'s limit', () => {
    const f = file();
    const a = effective(f, emptyOverlay()).desired;
    let ov = withEntry(emptyOverlay(), f, 'settings', settingKey('vm1', 'ingressRate'), 'off');
    ov = withEntry(ov, f, 'settings', settingKey('vm1', 'egressRate'), { rate: 50_000_000, burst: 262_144 });
    ov = withEntry(ov, f, 'settings', settingKey('up0', 'bpduGuard'), true);
    ov = withEntry(ov, f, 'loop', loopKey('br0', 'macFlapHold'), 60);
    expect(ov.settings['vm1/ingressRate']).toEqual({ value: 'off', base: mbit100 });
    expect(ov.settings['up0/bpduGuard']).toEqual({ value: true, base: false });
    expect(ov.loop['br0/macFlapHold']).toEqual({ value: 60, base: 30 });
    const b = effective(f, ov).desired;
    const vm1 = b.ports.get('vm1')!;
    expect(vm1.spec.ingressRate).toBeUndefined();
    expect(vm1.spec.egressRate).toEqual({ rate: 50_000_000, burst: 262_144 });
    expect(vm1.overrides.sort()).toEqual(['egressRate', 'ingressRate']);
    expect(b.ports.get('up0')!.spec.bpduGuard).toBe(true);
    expect(b.bridges.get('br0')).toMatchObject({ loop: { macFlapMoves: 20, macFlapHold: 60 }, overrides: ['macFlapHold'] });
    const p = planChanges(a, b);
    expect(p.portsSet.sort()).toEqual(['up0', 'vm1']);
    expect(p.bridgesSet).toEqual(['br0']);
    expect([...p.recreate, ...p.portsAdd, ...p.portsDel]).toEqual([]);
    // A reload of the same file: nothing to do.
    const again = effective(f, effective(f, ov).overlay);
    expect(again.notes).toEqual([]);
    const q = planChanges(b, again.desired);
    expect([q.portsSet, q.bridgesSet].flat()).toEqual([]);
  });

  it('the file changing the same setting wins, the others stay', () => {
    const f = file();
    let ov = withEntry(emptyOverlay(), f, 'settings', settingKey('vm1', 'ingressRate'), { rate: 10_000_000, burst: 65_536, pps: 1000 });
    ov = withEntry(ov, f, 'settings', settingKey('vm1', 'bpduGuard'), false);
    ov = withEntry(ov, f, 'loop', loopKey('br0', 'macFlapMoves'), 5);
    ov = withEntry(ov, f, 'loop', loopKey('br0', 'bpduRecovery'), 60);
    const f2 = edited((raw) => {
      raw.bridges.br0.loopProtection = { macFlapMoves: 40 };
      raw.bridges.br0.ports = { vm1: { type: 'tap', vlan: { mode: 'access', vid: 10 }, ingressRate: { rate: '200mbit' } }, up0: { type: 'attach' } };
    });
    const r = effective(f2, ov);
    expect(Object.keys(r.overlay.settings)).toEqual(['vm1/bpduGuard']);
    expect(Object.keys(r.overlay.loop)).toEqual(['br0/bpduRecovery']);
    expect(r.desired.ports.get('vm1')!.spec).toMatchObject({ ingressRate: { rate: '200mbit' }, bpduGuard: false });
    expect(r.desired.bridges.get('br0')!.loop).toEqual({ macFlapMoves: 40, bpduRecovery: 60 });
    expect(r.notes.join('\n')).toMatch(/settings vm1\/ingressRate: the config file changed it/);
    expect(r.notes.join('\n')).toMatch(/loop br0\/macFlapMoves: the config file changed it/);
  });

  it('a runtime bridge keeps its loop protection in its definition', () => {
    const f = file();
    const ov = withEntry(emptyOverlay(), f, 'bridges', 'br9', { ageing: 300, maxMacs: 8192, loop: { macFlapMoves: 0, macFlapHold: 30, bpduRecovery: 300 } });
    expect(effective(f, ov).desired.bridges.get('br9')).toMatchObject({ source: 'runtime', loop: { macFlapMoves: 0 } });
    expect(parseOverlay(serializeOverlay(ov))).toEqual(ov);
  });

  it('runtime.json keeps them, and refuses bad ones', () => {
    const f = file();
    let ov = withEntry(emptyOverlay(), f, 'settings', settingKey('vm1', 'ingressRate'), { rate: 10_000_000, burst: 65_536, pps: 1000 });
    ov = withEntry(ov, f, 'settings', settingKey('vm1', 'egressRate'), { rate: 10_000_000, burst: 65_536 });
    ov = withEntry(ov, f, 'loop', loopKey('br0', 'macFlapHold'), 5);
    expect(parseOverlay(serializeOverlay(ov))).toEqual(ov);
    const bad = (section: string, key: string, value: unknown): string => {
      try {
        parseOverlay(JSON.stringify({ version: 1, [section]: { [key]: { value, base: null } } }));
      } catch (e) {
        return (e as Error).message;
      }
      return 'accepted';
    };
    expect(bad('settings', 'vm1/bpduGuard', 'yes')).toMatch(/bad BPDU guard/);
    expect(bad('settings', 'vm1/ingressRate', { rate: 1, burst: 65_536 })).toMatch(/bad ingressRate: .*out of range/);
    expect(bad('settings', 'vm1/ingressRate', '100mbit')).toMatch(/bad ingressRate/);
    expect(bad('settings', 'vm1/egressRate', { rate: 10_000_000, burst: 65_536, colour: 5 })).toMatch(/bad egressRate: unknown key colour/);
    expect(bad('settings', 'vm1/egressRate', { rate: 10_000_000, burst: 65_536, pps: 5 })).toBe('accepted');
    expect(bad('loop', 'br0/macFlapHold', 0)).toMatch(/macFlapHold must be/);
    expect(bad('loop', 'br0/colour', 1)).toMatch(/unknown loop protection setting/);
    expect(bad('bridges', 'br9', { ageing: 300, maxMacs: 10, loop: { macFlapMoves: -1 } })).toMatch(/macFlapMoves must be/);
    expect(bad('settings', 'vm1/egressRate', 'off')).toBe('accepted');
  });

  it('the read quantum is a bridge setting like loop protection: the file\'s, the CLI\'s over it, the default when neither', () => {
    const bad = (section: string, key: string, value: unknown): string => {
      try {
        parseOverlay(JSON.stringify({ version: 1, [section]: { [key]: { value, base: null } } }));
      } catch (e) {
        return (e as Error).message;
      }
      return 'accepted';
    };
    const f = file();
    expect(loopConf(effective(f, emptyOverlay()).desired.bridges.get('br0')!.loop).readQuantum).toBe(256 * 1024);
    expect(withEntry(emptyOverlay(), f, 'loop', loopKey('br0', 'readQuantum'), 256 * 1024).loop).toEqual({}); // the default
    const ov = withEntry(emptyOverlay(), f, 'loop', loopKey('br0', 'readQuantum'), 65536);
    expect(ov.loop['br0/readQuantum']).toEqual({ value: 65536, base: 256 * 1024 });
    const d = effective(f, ov).desired.bridges.get('br0')!;
    expect(d).toMatchObject({ loop: { macFlapMoves: 20, readQuantum: 65536 }, overrides: ['readQuantum'] });
    expect(planChanges(effective(f, emptyOverlay()).desired, effective(f, ov).desired).bridgesSet).toEqual(['br0']);
    // The file's own value (bridges.br0.readQuantum, bytes after parsing) is the base; a file change drops the entry.
    const f2 = cfg({ bridges: { br0: { loopProtection: { macFlapMoves: 20 }, readQuantum: '1mb', ports: {} } } });
    expect(f2.bridges.br0.readQuantum).toBe(1024 * 1024);
    expect(loopConf(effective(f2, emptyOverlay()).desired.bridges.get('br0')!.loop).readQuantum).toBe(1024 * 1024);
    const r = effective(f2, ov);
    expect(loopConf(r.desired.bridges.get('br0')!.loop).readQuantum).toBe(1024 * 1024);
    expect(r.notes.join('\n')).toMatch(/loop br0\/readQuantum: the config file changed it/);
    expect(bad('loop', 'br0/readQuantum', 100)).toMatch(/read quantum must be 0 \(off\) or 16384-67108864 bytes/);
    expect(bad('loop', 'br0/readQuantum', 0)).toBe('accepted');
    expect(bad('bridges', 'br9', { ageing: 300, maxMacs: 10, loop: { readQuantum: 'lots' } })).toMatch(/read quantum/);
    // The read share and its frame quantum: entries of their own, a string and a number.
    expect(loopConf(undefined)).toMatchObject({ readShare: 'frames', readFrames: 16 });
    const ovf = withEntry(withEntry(emptyOverlay(), f, 'loop', loopKey('br0', 'readShare'), 'bytes'), f, 'loop', loopKey('br0', 'readFrames'), 8);
    expect(ovf.loop['br0/readShare']).toEqual({ value: 'bytes', base: 'frames' });
    expect(withEntry(emptyOverlay(), f, 'loop', loopKey('br0', 'readShare'), 'frames').loop).toEqual({}); // the default
    const df = effective(f, ovf).desired.bridges.get('br0')!;
    expect(df).toMatchObject({ loop: { readShare: 'bytes', readFrames: 8 } });
    expect([...df.overrides].sort()).toEqual(['readFrames', 'readShare']);
    expect(planChanges(effective(f, emptyOverlay()).desired, effective(f, ovf).desired).bridgesSet).toEqual(['br0']);
    const f3 = cfg({ bridges: { br0: { readShare: 'bytes', readFrames: 8, ports: {} } } });
    expect(loopConf(effective(f3, emptyOverlay()).desired.bridges.get('br0')!.loop)).toMatchObject({ readShare: 'bytes', readFrames: 8 });
    expect(bad('loop', 'br0/readShare', 'frames')).toBe('accepted');
    // Sparse-first service: a boolean entry of its own, on by default.
    expect(loopConf(undefined).readSparse).toBe(true);
    const ovs = withEntry(emptyOverlay(), f, 'loop', loopKey('br0', 'readSparse'), false);
    expect(ovs.loop['br0/readSparse']).toEqual({ value: false, base: true });
    const ds = effective(f, ovs).desired.bridges.get('br0')!;
    expect(ds).toMatchObject({ loop: { readSparse: false } });
    expect(planChanges(effective(f, emptyOverlay()).desired, effective(f, ovs).desired).bridgesSet).toEqual(['br0']);
    expect(bad('loop', 'br0/readSparse', 'yes')).toMatch(/readSparse must be true or false/);
    expect(bad('loop', 'br0/readSparse', true)).toBe('accepted');
    expect(bad('loop', 'br0/readShare', 'packets')).toMatch(/readShare must be bytes or frames/);
    expect(bad('loop', 'br0/readFrames', 5000)).toMatch(/readFrames must be 0 \(off\) or 1-4096 frames/);
    expect(bad('bridges', 'br9', { ageing: 300, maxMacs: 10, loop: { readShare: 'frames', readFrames: 64 } })).toBe('accepted');
  });
});

describe('planChanges: only what differs', () => {
  it('the same state twice: nothing to do (a reload of an unchanged file touches nothing)', () => {
    const f = cfg();
    const ov = withEntry(withEntry(emptyOverlay(), f, 'ports', 'vm9', { bridge: 'br0', spec: tap(10) }), f, 'vlans', 'vm1', { mode: 'access', vid: 20 });
    const a = effective(f, ov).desired;
    const b = effective(f, ov).desired;
    const p = planChanges(a, b);
    expect([p.bridgesAdd, p.bridgesDel, p.bridgesSet, p.portsAdd, p.portsDel, p.portsSet, p.fdbAdd, p.fdbDel].flat()).toEqual([]);
  });

  it('VLAN changes in place, kind changes recreate, removed and failed ports', () => {
    const f = cfg();
    const a = effective(f, emptyOverlay()).desired;
    let ov = withEntry(emptyOverlay(), f, 'vlans', 'vm1', { mode: 'access', vid: 20 });
    ov = withEntry(ov, f, 'ports', 'vm2', { bridge: 'br0', spec: canonSpec({ type: 'tap', offload: false, vlan: { mode: 'access', vid: 10 } }) });
    ov = withEntry(ov, f, 'ports', 'vm9', { bridge: 'br0', spec: tap(10) });
    const b = effective(f, ov).desired;
    const p = planChanges(a, b);
    expect(p.portsSet).toEqual(['vm1']);
    expect(p.portsDel).toEqual(['vm2']);
    expect(p.portsAdd.sort()).toEqual(['vm2', 'vm9']);
    expect([...p.recreate]).toEqual(['vm2']);
    // vm1 left VLAN 10: its static entry goes.
    expect(p.fdbDel.map((x) => x.port)).toEqual(['vm1']);
    // A port that failed is opened again when still wanted, not "removed".
    const q = planChanges(b, b, new Set(['vm9']));
    expect(q.portsAdd).toEqual(['vm9']);
    expect([...q.retry]).toEqual(['vm9']);
    expect(q.portsDel).toEqual([]);
  });

  it('a bond whose members, mode or LACP settings change is recreated; its VLANs change in place', () => {
    const f = cfg();
    const bond = (members: string[], mode = 'lacp', vid = 10) => canonSpec({ type: 'bond', bond: { members, mode: mode as 'lacp', lacp: 'active', lacpRate: 'fast' }, vlan: { mode: 'access', vid } });
    const a = effective(f, withEntry(emptyOverlay(), f, 'ports', 'bd0', { bridge: 'br0', spec: bond(['eth1', 'eth2']) })).desired;
    for (const spec of [bond(['eth1', 'eth3']), bond(['eth1', 'eth2'], 'balance-slb')]) {
      const b = effective(f, withEntry(emptyOverlay(), f, 'ports', 'bd0', { bridge: 'br0', spec })).desired;
      expect([...planChanges(a, b).recreate]).toEqual(['bd0']);
    }
    const c = effective(f, withEntry(emptyOverlay(), f, 'ports', 'bd0', { bridge: 'br0', spec: bond(['eth1', 'eth2'], 'lacp', 20) })).desired;
    const p = planChanges(a, c);
    expect([...p.recreate]).toEqual([]);
    expect(p.portsSet).toEqual(['bd0']);
  });

  it('from nothing: every bridge, port and entry is added (the start)', () => {
    const p = planChanges(emptyDesired(), effective(cfg(), emptyOverlay()).desired);
    expect(p.bridgesAdd).toEqual(['br0']);
    expect(p.portsAdd).toEqual(['vm1', 'vm2']);
    expect(p.fdbAdd).toHaveLength(1);
  });
});

describe('routerDiff: in place or rebuilt', () => {
  const base = cfg().routers.r0;
  const with_ = (edit: (raw: any) => void) => edited(edit).routers.r0;

  it('DHCP options, pools, reservations, lease time, limits, forwards and rate limits change in place', () => {
    expect(routerDiff(base, base)).toEqual({ dhcp: [], forwards: false, limits: false });
    expect(routerDiff(base, with_((raw) => { raw.routers.r0.limits = { arp: 5 }; }))).toEqual({ dhcp: [], forwards: false, limits: true });
    const r = with_((raw) => {
      Object.assign(raw.routers.r0.networks.net10.dhcp, { dns: ['192.0.2.53'], leaseTime: 600, maxLeasesPerPort: 2, pool: ['10.0.10.100-10.0.10.220'] });
    });
    expect(routerDiff(base, r)).toEqual({ dhcp: ['net10'], forwards: false, limits: false });
    const f = with_((raw) => {
      raw.routers.r0.uplink = { interface: 'eth1', address: '192.0.2.2/24' };
      raw.routers.r0.forwards = [{ proto: 'tcp', port: 80, to: '10.0.10.5:80' }];
    });
    const f2 = with_((raw) => {
      raw.routers.r0.uplink = { interface: 'eth1', address: '192.0.2.2/24' };
      raw.routers.r0.forwards = [{ proto: 'tcp', port: 81, to: '10.0.10.5:80' }];
    });
    expect(routerDiff(f, f2)).toEqual({ dhcp: [], forwards: true, limits: false });
  });

  it('uplink, NAT limits, interconnect, networks and a network\'s bridge/VLAN/address rebuild', () => {
    expect(routerDiff(base, with_((raw) => { raw.routers.r0.uplink = { interface: 'eth1', address: 'dhcp' }; })).rebuild).toBe('uplink');
    expect(routerDiff(base, with_((raw) => { raw.routers.r0.nat = { maxSessions: 10 }; })).rebuild).toBe('nat');
    expect(routerDiff(base, with_((raw) => { raw.routers.r0.networks.net10.vlan = 11; })).rebuild).toBe('networks.net10.vlan');
    expect(routerDiff(base, with_((raw) => { raw.routers.r0.networks.net10.address = '10.0.11.1/24'; raw.routers.r0.networks.net10.dhcp = undefined; })).rebuild)
      .toBe('networks.net10.address');
    expect(routerDiff(base, with_((raw) => { raw.routers.r0.networks.net11 = { bridge: 'br0', vlan: 11, address: '10.0.11.1/24' }; })).rebuild).toBe('networks');
  });
});

describe('runtime.json', () => {
  it('round-trips, and refuses what it cannot trust', () => {
    const f = cfg();
    let ov: Overlay = withEntry(emptyOverlay(), f, 'bridges', 'br9', { ageing: 60, maxMacs: 100 });
    ov = withEntry(ov, f, 'ports', 'vm2', null);
    ov = withEntry(ov, f, 'fdb', fdbKey('br0', 10, '02:00:00:00:00:09'), 'vm2');
    expect(serializeOverlay(parseOverlay(serializeOverlay(ov)))).toBe(serializeOverlay(ov));
    expect(() => parseOverlay('{')).toThrow(/not valid JSON/);
    expect(() => parseOverlay('{"version":2}')).toThrow(/unsupported version 2/);
    expect(() => parseOverlay('{"version":1,"ports":{"a":{"value":{"bridge":"b","spec":{"type":"nic"}},"base":null}}}')).toThrow(/ports a: bad port/);
    expect(() => parseOverlay('{"version":1,"fdb":{"br0/5000/02:00:00:00:00:01":{"value":"a","base":null}}}')).toThrow(/bad key/);
    expect(() => parseOverlay('{"version":1,"vlans":{"a":{"value":{"mode":"access","vid":9999},"base":null}}}')).toThrow(/bad VLAN/);
  });

  it('a bad or symlinked file is moved aside and the start goes on from the file alone', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vsw-state-'));
    writeFileSync(join(dir, 'runtime.json'), '{"version":1,"ports":');
    const r = loadOverlay(dir);
    expect(r.error).toMatch(/runtime\.json: not valid JSON/);
    expect(serializeOverlay(r.overlay)).toBe(serializeOverlay(emptyOverlay()));
    expect(readdirSync(dir).some((n) => n.startsWith('runtime.json.bad-'))).toBe(true);
    const target = join(mkdtempSync(join(tmpdir(), 'vsw-target-')), 'x.json');
    writeFileSync(target, 'precious');
    symlinkSync(target, join(dir, 'runtime.json'));
    expect(loadOverlay(dir).error).toMatch(/symlink/);
    expect(readFileSync(target, 'utf8')).toBe('precious');
    const ov = withEntry(emptyOverlay(), cfg(), 'bridges', 'br9', { ageing: 60, maxMacs: 100 });
    saveOverlay(dir, ov);
    expect(serializeOverlay(loadOverlay(dir).overlay)).toBe(serializeOverlay(ov));
  });
});

describe('flowCache (README "Flow cache")', () => {
  const withCache = (on: boolean | undefined): Config => ConfigSchema.parse({
    bridges: { br0: { ...(on === undefined ? {} : { flowCache: on }), ports: { vm1: { type: 'tap' } } } },
  });
  const desired = (on: boolean | undefined, ov: Overlay = emptyOverlay()) => effective(withCache(on), ov).desired;

  it('on by default; flowCache: false keeps it off; a reload off -> on -> off sets the bridge in place each time, an unchanged one does nothing', () => {
    expect(desired(undefined).bridges.get('br0')!.flowCache).toBe(true);
    expect(desired(true).bridges.get('br0')!.flowCache).toBe(true);
    const off = desired(false);
    expect(off.bridges.get('br0')!.flowCache).toBe(false);
    const on = desired(undefined);
    expect(planChanges(off, on).bridgesSet).toEqual(['br0']);
    expect(planChanges(on, desired(false)).bridgesSet).toEqual(['br0']);
    expect(planChanges(off, desired(true)).bridgesSet).toEqual(['br0']);
    expect(planChanges(on, desired(true)).bridgesSet).toEqual([]);
    expect(planChanges(off, desired(false)).bridgesSet).toEqual([]);
    expect(() => withCache('yes' as unknown as boolean)).toThrow();
  });

  it('bridge set BR flow-cache off|on: a loop entry over a file bridge, dropped when it equals the file or the file changes the key', () => {
    const offEntry = withEntry(emptyOverlay(), withCache(undefined), 'loop', loopKey('br0', 'flowCache'), false);
    expect(offEntry.loop['br0/flowCache']).toEqual({ value: false, base: true });
    const d = effective(withCache(undefined), offEntry);
    expect(d.desired.bridges.get('br0')!.flowCache).toBe(false);
    expect(d.desired.bridges.get('br0')!.overrides).toEqual(['flowCache']);
    expect(planChanges(desired(undefined), d.desired).bridgesSet).toEqual(['br0']);
    // Back on over the default: the entry goes (the file's value).
    expect(withEntry(offEntry, withCache(undefined), 'loop', loopKey('br0', 'flowCache'), true).loop).toEqual({});
    // The file turns it off itself: the CLI's entry is stale and dropped (the file wins), the bridge stays off.
    const r = effective(withCache(false), offEntry);
    expect(r.overlay.loop).toEqual({});
    expect(r.notes.join('\n')).toContain('loop br0/flowCache');
    expect(r.desired.bridges.get('br0')!.flowCache).toBe(false);
    // It survives runtime.json; a non-boolean is refused naming the entry.
    expect(parseOverlay(serializeOverlay(offEntry))).toEqual(offEntry);
    expect(() => parseOverlay(JSON.stringify({ version: 1, loop: { 'br0/flowCache': { value: 'off', base: true } } }))).toThrow(/br0\/flowCache: bad flow cache switch/);
  });

  it('a runtime bridge (addbr) is on unless its definition says false, as an overlay written before the default changed', () => {
    const f = withCache(undefined);
    const added = withEntry(emptyOverlay(), f, 'bridges', 'br9', { ageing: 300, maxMacs: 8192 });
    expect(effective(f, added).desired.bridges.get('br9')!.flowCache).toBe(true);
    const off = withEntry(emptyOverlay(), f, 'bridges', 'br9', { ageing: 300, maxMacs: 8192, flowCache: false });
    expect(effective(f, off).desired.bridges.get('br9')!.flowCache).toBe(false);
    expect(parseOverlay(serializeOverlay(off))).toEqual(off);
    expect(() => parseOverlay(JSON.stringify({ version: 1, bridges: { br9: { value: { ageing: 300, maxMacs: 8192, flowCache: 1 }, base: null } } }))).toThrow(/bad flow cache switch/);
  });
});

describe('daemon-wide settings (vswitch set: poll before sleep, README "Poll before sleep")', () => {
  const withPoll = (extra: Record<string, unknown> = {}): Config => ConfigSchema.parse({ ...extra, bridges: {} });

  it('off by default (0 µs, budget 200 ms/s); the file\'s keys apply; out-of-range values are refused by the schema', () => {
    expect(effective(withPoll(), emptyOverlay()).desired.daemon).toEqual({ pollBeforeSleepUs: 0, pollBeforeSleepBudgetMs: 200, tapWriteBatch: TAP_WRITE_BATCH_DEFAULT, turnYieldUs: TURN_YIELD_US_DEFAULT, overrides: [] });
    expect(effective(withPoll({ pollBeforeSleepUs: 50, pollBeforeSleepBudgetMs: 100 }), emptyOverlay()).desired.daemon)
      .toEqual({ pollBeforeSleepUs: 50, pollBeforeSleepBudgetMs: 100, tapWriteBatch: TAP_WRITE_BATCH_DEFAULT, turnYieldUs: TURN_YIELD_US_DEFAULT, overrides: [] });
    expect(() => withPoll({ pollBeforeSleepUs: 1001 })).toThrow(/0 \(off\) to 1000/);
    expect(() => withPoll({ pollBeforeSleepUs: -1 })).toThrow(/0 \(off\) to 1000/);
    expect(() => withPoll({ pollBeforeSleepUs: 2.5 })).toThrow(/whole number/);
    expect(() => withPoll({ pollBeforeSleepBudgetMs: 0 })).toThrow(/1 to 1000/);
  });

  it('a CLI value is an entry over the file\'s, listed as an override; the file changing the key wins; the file\'s value leaves no entry', () => {
    const f = withPoll();
    const ov = withEntry(emptyOverlay(), f, 'daemon', 'pollBeforeSleepUs', 50);
    expect(ov.daemon.pollBeforeSleepUs).toEqual({ value: 50, base: 0 });
    const d = effective(f, ov);
    expect(d.desired.daemon).toEqual({ pollBeforeSleepUs: 50, pollBeforeSleepBudgetMs: 200, tapWriteBatch: TAP_WRITE_BATCH_DEFAULT, turnYieldUs: TURN_YIELD_US_DEFAULT, overrides: ['pollBeforeSleepUs'] });
    // The file now says 20: it changed the key since, and wins.
    const later = effective(withPoll({ pollBeforeSleepUs: 20 }), ov);
    expect(later.desired.daemon.pollBeforeSleepUs).toBe(20);
    expect(later.overlay.daemon).toEqual({});
    expect(later.notes.join()).toMatch(/daemon pollBeforeSleepUs: the config file changed it/);
    expect(withEntry(ov, f, 'daemon', 'pollBeforeSleepUs', 0).daemon).toEqual({});
  });

  it('runtime.json keeps them, and refuses bad ones; a file written before the section existed loads', () => {
    const ov = withEntry(emptyOverlay(), withPoll(), 'daemon', 'pollBeforeSleepBudgetMs', 50);
    expect(parseOverlay(serializeOverlay(ov))).toEqual(ov);
    const bad = (key: string, value: unknown): string => {
      try {
        parseOverlay(JSON.stringify({ version: 1, daemon: { [key]: { value, base: 0 } } }));
      } catch (e) {
        return (e as Error).message;
      }
      return 'accepted';
    };
    expect(bad('pollBeforeSleepUs', 1001)).toMatch(/pollBeforeSleepUs must be a whole number 0-1000/);
    expect(bad('pollBeforeSleepBudgetMs', 0)).toMatch(/pollBeforeSleepBudgetMs must be a whole number 1-1000/);
    expect(bad('colour', 1)).toMatch(/unknown daemon setting "colour"/);
    expect(bad('pollBeforeSleepUs', 100)).toBe('accepted');
    expect(bad('tapWriteBatch', 1)).toMatch(/tapWriteBatch must be true or false, got 1/);
    expect(bad('tapWriteBatch', true)).toBe('accepted');
    expect(parseOverlay(JSON.stringify({ version: 1, bridges: {} })).daemon).toEqual({});
  });

  it('tapWriteBatch (README "Batched TAP writes"): a boolean in the file and in runtime.json, the file changing it wins', () => {
    expect(effective(withPoll({ tapWriteBatch: true }), emptyOverlay()).desired.daemon.tapWriteBatch).toBe(true);
    expect(() => withPoll({ tapWriteBatch: 'yes' })).toThrow();
    const f = withPoll();
    const ov = withEntry(emptyOverlay(), f, 'daemon', 'tapWriteBatch', !f.tapWriteBatch);
    expect(ov.daemon.tapWriteBatch).toEqual({ value: !f.tapWriteBatch, base: f.tapWriteBatch });
    expect(parseOverlay(serializeOverlay(ov))).toEqual(ov);
    const d = effective(f, ov);
    expect(d.desired.daemon.tapWriteBatch).toBe(!f.tapWriteBatch);
    expect(d.desired.daemon.overrides).toEqual(['tapWriteBatch']);
    const later = effective(withPoll({ tapWriteBatch: !f.tapWriteBatch }), ov);
    expect(later.overlay.daemon).toEqual({});
    expect(withEntry(ov, f, 'daemon', 'tapWriteBatch', f.tapWriteBatch).daemon).toEqual({});
  });

  it('turnYieldUs (README "The turn yield"): 500 µs by default, 0 off, out of range refused in the file and in runtime.json', () => {
    expect(TURN_YIELD_US_DEFAULT).toBe(500);
    expect(effective(withPoll({ turnYieldUs: 0 }), emptyOverlay()).desired.daemon.turnYieldUs).toBe(0);
    expect(() => withPoll({ turnYieldUs: 100001 })).toThrow(/0 \(off\) to 100000/);
    expect(() => withPoll({ turnYieldUs: 2.5 })).toThrow(/whole number/);
    const f = withPoll();
    const ov = withEntry(emptyOverlay(), f, 'daemon', 'turnYieldUs', 0);
    expect(ov.daemon.turnYieldUs).toEqual({ value: 0, base: 500 });
    expect(parseOverlay(serializeOverlay(ov))).toEqual(ov);
    expect(effective(f, ov).desired.daemon).toMatchObject({ turnYieldUs: 0, overrides: ['turnYieldUs'] });
    expect(() => parseOverlay(JSON.stringify({ version: 1, daemon: { turnYieldUs: { value: -1, base: 500 } } })))
      .toThrow(/turnYieldUs must be a whole number 0-100000/);
    expect(effective(withPoll({ turnYieldUs: 250 }), ov).overlay.daemon).toEqual({});
  });
});
