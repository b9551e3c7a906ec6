import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { EVPN_FAMILY, type EvpnRoute, GobgpClient, loadGobgpApi, mpReachNextHop, peerGr, peerRequest } from './gobgp.js';

describe('GoBGP API translation (the Debian package\'s .proto files)', () => {
  const c = new GobgpClient('127.0.0.1:1', loadGobgpApi());

  it('a type-2 route survives encoding to API paths and back: MAC, IP, VNI label, RD, RT, VXLAN, mobility', () => {
    const r: EvpnRoute = { type: 2, rd: '10.0.0.1:100', mac: '02:00:00:00:00:0a', ip: '10.1.1.1', vni: 100, nextHop: '10.0.0.1', rts: ['65000:100'], encap: 8, seq: 7, sticky: true, neighbor: '' };
    const p = c.pathOf(r);
    expect(c.decode({ ...p, neighborIp: '10.0.0.9' })).toEqual({ ...r, neighbor: '10.0.0.9', withdraw: false });
  });

  it('a type-3 route carries the PMSI label as its VNI and the originator; a withdrawal says so', () => {
    const r: EvpnRoute = { type: 3, rd: '65000:5', vni: 5000, originator: '10.0.0.1', nextHop: '10.0.0.1', rts: ['65000:5000'], encap: 8, seq: 0, sticky: false, neighbor: '' };
    expect(c.decode({ ...c.pathOf(r, true), neighborIp: '10.0.0.1' })).toEqual({ ...r, neighbor: '10.0.0.1', withdraw: true });
  });

  it('a withdrawal carries no MAC mobility community (gobgpd refuses one below the RIB\'s highest sequence: a MAC that moved away)', () => {
    const r: EvpnRoute = { type: 2, rd: '10.0.0.1:100', mac: '02:00:00:00:00:0a', ip: '', vni: 100, nextHop: '10.0.0.1', rts: ['65000:100'], encap: 8, seq: 3, sticky: true, neighbor: '' };
    expect(c.decode({ ...c.withdrawalOf(r), neighborIp: '10.0.0.1' })).toEqual({ ...r, seq: 0, sticky: false, neighbor: '10.0.0.1', withdraw: true });
  });

  it('AddPeer carries the neighbour\'s prefix limit on l2vpn-evpn, as gobgpd\'s AddPeerRequest encodes it (none when 0)', () => {
    const t = loadGobgpApi().root.lookupType('apipb.AddPeerRequest');
    const wire = (max: number): any => t.toObject(t.decode(t.encode(t.fromObject(peerRequest('10.0.0.2', 65000, 65000, '10.0.0.1', max))).finish()), { defaults: false });
    const af = wire(20000).peer.afiSafis;
    expect(af).toHaveLength(1);
    expect(af[0].config).toEqual({ family: { afi: 25, safi: 70 }, enabled: true });
    expect(af[0].prefixLimits).toEqual({ family: { afi: 25, safi: 70 }, maxPrefixes: 20000 });
    expect(wire(0).peer.afiSafis[0].prefixLimits).toBeUndefined();
    expect(wire(7).peer.conf).toMatchObject({ neighborAddress: '10.0.0.2', peerAsn: 65000, localAsn: 65000 });
    expect(wire(7).peer.conf.type ?? 0).toBe(0); // INTERNAL
    expect(peerRequest('10.0.0.2', 65001, 65000, '10.0.0.1', 7).peer.conf).toMatchObject({ localAsn: 65000, type: 1 }); // EXTERNAL, as gobgpd fills it in
    expect(EVPN_FAMILY).toEqual({ afi: 25, safi: 70 });
  });

  it('a ListPeer answer\'s graceful restart for EVPN: offered, received, the peer\'s restart time, End-of-RIB', () => {
    const peer = { gracefulRestart: { enabled: true, peerRestartTime: 120, peerRestarting: false } };
    const af = { mpGracefulRestart: { state: { enabled: true, advertised: true, received: true, endOfRibReceived: true, endOfRibSent: false } } };
    expect(peerGr(peer, af)).toEqual({ advertised: true, received: true, peerRestartTime: 120, peerRestarting: false, endOfRibReceived: true, endOfRibSent: false });
    expect(peerGr({}, {})).toEqual({ advertised: false, received: false, peerRestartTime: 0, peerRestarting: false, endOfRibReceived: false, endOfRibSent: false });
  });

  it('the next hop comes from MP_REACH_NLRI without converting its NLRIs (gobgpd gives each path its whole UPDATE\'s: a flood converted a hundred per route)', () => {
    const api = loadGobgpApi();
    const client = new GobgpClient('127.0.0.1:1', api);
    const r: EvpnRoute = { type: 2, rd: '10.0.0.3:100', mac: '02:ee:00:00:01:01', ip: '', vni: 100, nextHop: '10.0.0.3', rts: ['65000:100'], encap: 8, seq: 0, sticky: false, neighbor: '' };
    const p = client.pathOf(r);
    const nlri = { type_url: p.nlri.type_url, value: p.nlri.value };
    const t = api.root.lookupType('apipb.MpReachNLRIAttribute');
    const mp = t.encode(t.fromObject({ family: { afi: 25, safi: 70 }, nextHops: ['10.0.0.3'], nlris: Array.from({ length: 100 }, () => nlri) })).finish();
    expect(mpReachNextHop(mp)).toBe('10.0.0.3');
    const pattrs = p.pattrs.filter((a: any) => !a.type_url.endsWith('NextHopAttribute'));
    pattrs.push({ type_url: 'type.googleapis.com/apipb.MpReachNLRIAttribute', value: mp });
    // Each NLRI converted to an object (its bytes copied into an Array) cost as much as the rest of the route.
    const anys = vi.spyOn(api.root.lookupType('google.protobuf.Any'), 'toObject');
    expect(client.decode({ ...p, pattrs, neighborIp: '10.0.0.3' })).toEqual({ ...r, neighbor: '10.0.0.3', withdraw: false });
    expect(anys.mock.calls.length).toBeLessThan(10); // the path's own NLRI, RD, communities; not the UPDATE's hundred NLRIs
    anys.mockRestore();
    // Malformed or absent: no next hop (the route is then refused as bad_next_hop).
    expect(mpReachNextHop(Uint8Array.of(0x12, 0x7f, 0x31))).toBe('');
    expect(mpReachNextHop(t.encode(t.fromObject({ family: { afi: 25, safi: 70 } })).finish())).toBe('');
    expect(mpReachNextHop(undefined)).toBe('');
  });

  it('what is not a type-2/3 EVPN route decodes to nothing', () => {
    expect(c.decode({ nlri: { type_url: 'type.googleapis.com/apipb.IPAddressPrefix', value: new Uint8Array() } })).toBeUndefined();
    expect(c.decode({})).toBeUndefined();
  });

  it('a missing .proto file is an error naming it and the Debian package', () => {
    const dir = mkdtempSync(join(tmpdir(), 'noproto-'));
    expect(() => loadGobgpApi(dir)).toThrow(/gobgp\.proto not found: install the Debian package golang-github-osrg-gobgp-dev \(or set evpn\.protoDir\)/);
  });
});
