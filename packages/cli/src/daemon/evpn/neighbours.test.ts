import { describe, expect, it } from 'vitest';
import { Bridge, parseIp6, Vtep, type UnderlayIo } from '@vswitch/switch';
import { EvpnNeighbours } from './neighbours.js';

const io: UnderlayIo = { send3: () => 0 };
const M1 = 0x020000000001;
const M2 = 0x020000000002;
const V4 = (n: number): number => 0x0a000000 + n; // 10.0.0.n

function rig() {
  const br = new Bridge('br0');
  const vtep = new Vtep(io, { local: 0x0a000001 });
  vtep.set([{ bridge: br, vni: 100, vid: 10, flood: [] }, { bridge: br, vni: 200, vid: 20, flood: [] }]);
  return { br, vtep, n: new EvpnNeighbours() };
}

describe('EVPN neighbour tables', () => {
  it('places entries on the VNI\'s VLAN, answering on per VNI; a bridge with nothing on holds no table', () => {
    const { br, vtep, n } = rig();
    n.add('a', 100, '10.0.0.5', M1);
    n.configure(vtep, (vni) => vni === 100, 10);
    expect(br.arpSuppress?.on[10]).toBe(1);
    expect(br.arpSuppress?.on[20]).toBe(0);
    expect(br.arpSuppress?.get(10, V4(5))).toBe(M1);
    n.add('b', 200, '10.0.0.6', M2);
    expect(br.arpSuppress?.get(20, V4(6))).toBe(M2); // kept while off, answered once on
    expect(n.view(100)).toMatchObject({ on: true, entries: 1 });
    n.configure(vtep, () => false, 10);
    expect(br.arpSuppress).toBeUndefined();
    expect(n.view(200)).toMatchObject({ on: false, entries: 1 });
  });

  it('several routes for one IP: the latest answers, the one before takes over when it goes', () => {
    const { br, vtep, n } = rig();
    n.configure(vtep, () => true, 10);
    n.add('peer1', 100, '10.0.0.5', M1);
    n.add('peer2', 100, '10.0.0.5', M2);
    expect(br.arpSuppress!.get(10, V4(5))).toBe(M2);
    n.remove('peer2');
    expect(br.arpSuppress!.get(10, V4(5))).toBe(M1);
    n.remove('peer1');
    expect(br.arpSuppress!.get(10, V4(5))).toBeUndefined();
    expect(n.size).toBe(0);
  });

  it('this host\'s own binding answers over any peer\'s route for its IP while it stands', () => {
    const br = new Bridge('br0');
    const vtep = new Vtep(io, { local: 0x0a000001 });
    vtep.set([{ bridge: br, vni: 100, vid: 10, flood: [] }]);
    const n = new EvpnNeighbours((k) => k.startsWith('|'));
    n.configure(vtep, () => true, 10);
    n.add('|local', 100, '10.0.0.5', M1);
    n.add('peer|hostile', 100, '10.0.0.5', M2);
    expect(br.arpSuppress!.get(10, V4(5))).toBe(M1);
    n.configure(vtep, () => true, 10);
    expect(br.arpSuppress!.get(10, V4(5))).toBe(M1);
    n.remove('|local'); // the VM left (its binding went): the peer's route answers
    expect(br.arpSuppress!.get(10, V4(5))).toBe(M2);
  });

  it('bounds each VLAN to the limit, counted; a VNI moved to another VLAN takes its entries', () => {
    const { br, vtep, n } = rig();
    n.configure(vtep, () => true, 2);
    for (let ip = 1; ip <= 3; ip++) n.add(`k${ip}`, 100, `10.0.0.${ip}`, M1);
    expect(n.view(100)).toMatchObject({ entries: 2, full: 1 });
    vtep.set([{ bridge: br, vni: 100, vid: 30, flood: [] }]);
    n.configure(vtep, () => true, 5);
    expect(br.arpSuppress!.get(30, V4(3))).toBe(M1);
    expect(br.arpSuppress!.count(10)).toBe(0);
    expect(n.view(200)).toBeUndefined();
  });

  it('retain drops only the local keys it is not told to keep', () => {
    const { vtep } = rig();
    const n = new EvpnNeighbours((k) => k.startsWith('|'));
    n.configure(vtep, () => true, 10);
    n.add('|rd|2|m|1', 100, '10.0.0.1', M1);
    n.add('|rd|2|m|2', 100, '10.0.0.2', M1);
    n.add('peer|rd|2|m|3', 100, '10.0.0.3', M2);
    n.retain((k) => k.endsWith('|1'));
    expect(n.table(100).map(([ip]) => ip).sort()).toEqual([V4(1), V4(3)]);
    n.close();
    expect(n.size).toBe(0);
  });

  it('IPv6 MAC/IP routes fill the same VNI table (ND suppression); text that is no address is ignored', () => {
    const { br, vtep, n } = rig();
    n.configure(vtep, () => true, 10);
    expect(n.add('p6', 100, 'fd00::12', M2)).toBe(true);
    expect(n.add('bad', 100, 'not-an-ip', M2)).toBe(false);
    expect(br.arpSuppress!.get6(10, parseIp6('fd00::12')!)).toBe(M2);
    expect(n.view(100)).toMatchObject({ entries: 1 });
    n.configure(vtep, () => true, 10);
    expect(br.arpSuppress!.get6(10, parseIp6('fd00::12')!)).toBe(M2);
    n.remove('p6');
    expect(br.arpSuppress!.get6(10, parseIp6('fd00::12')!)).toBeUndefined();
    expect(n.size).toBe(0);
  });
});
