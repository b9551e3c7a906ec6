import { describe, expect, it } from 'vitest';
import { Bridge, type PortIo, type PortRx, Vtep, type UnderlayIo, VlanPolicy, writeMac } from '@vswitch/switch';
import { remoteMacsInFdb } from './remote-count.js';

const io: UnderlayIo = { send3: () => 0 };
const M1 = 0x020000000001;
const M2 = 0x020000000002;
const REMOTE = 0x0a000002;

class Io implements PortIo {
  readonly kind = 'tap' as const;
  rx!: PortRx;
  start(rx: PortRx): void { this.rx = rx; }
  send(_b: Uint8Array, _o: number, len: number): number { return len; }
  send2(_a: Uint8Array, _ao: number, alen: number, _b: Uint8Array, _bo: number, blen: number): number { return alen + blen; }
  close(): void {}
  describe(): Record<string, string> { return {}; }
}

describe('remote MACs counted from the MAC table', () => {
  it('a route\'s MAC that a local frame took back is no longer counted remote while the route stands', () => {
    const br = new Bridge('br0');
    const vm = new Io();
    br.addPort('vm', vm, { vlan: VlanPolicy.from({ mode: 'access', vid: 10 }) });
    const vtep = new Vtep(io, { local: 0x0a000001 });
    vtep.set([{ bridge: br, vni: 100, vid: 10, flood: [], learning: false }, { bridge: br, vni: 200, vid: 20, flood: [] }]);
    vtep.addRemoteMac(100, M1, REMOTE);
    vtep.addRemoteMac(100, M2, REMOTE);
    const keys = [`100/${M1}`, `100/${M2}`];
    expect([...remoteMacsInFdb(vtep, keys)]).toEqual([[100, 2], [200, 0]]);
    // The VM with M1 speaks from its local port: the MAC moved here (fdb.ts "Remote entries").
    const f = new Uint8Array(60);
    writeMac(f, 0, 0xffffffffffff);
    writeMac(f, 6, M1);
    f[12] = 0x08;
    f[13] = 0x00;
    vm.rx.frame(f, 0, f.length);
    expect(br.fdb.get(10, M1)?.remote).toBe(false);
    expect(remoteMacsInFdb(vtep, keys).get(100)).toBe(1);
    expect(remoteMacsInFdb(undefined, keys).size).toBe(0);
    // A reload sets the segments again: the MAC stays where the local frame put it (it went back to the tunnel).
    vtep.set([{ bridge: br, vni: 100, vid: 10, flood: [], learning: false }, { bridge: br, vni: 200, vid: 20, flood: [] }]);
    expect(br.fdb.get(10, M1)).toMatchObject({ remote: false, port: br.port('vm')!.id });
    expect(br.fdb.get(10, M2)?.remote).toBe(true);
    expect(remoteMacsInFdb(vtep, keys).get(100)).toBe(1);
  });
});
