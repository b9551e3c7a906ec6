/*
 * Remote MACs per VNI as the MAC table holds them. The service counts a MAC once
 * per (VNI, MAC) its installed routes name (that count is what maxRemoteMacs bounds:
 * routes held), but a frame from a local port with that MAC takes the entry back
 * (fdb.ts "Remote entries", MAC mobility) while the route stands: then the MAC is
 * not remote any more, and `evpn show` and the metrics say so, as `fdb show` does.
 */
import type { Vtep } from '@vswitch/switch';

/** Per VNI of `vtep`, how many of the (VNI, MAC) keys (`${vni}/${mac}`) have a remote entry in the FDB now. */
export function remoteMacsInFdb(vtep: Vtep | undefined, keys: Iterable<string>): Map<number, number> {
  const out = new Map<number, number>();
  if (vtep === undefined) return out;
  for (const seg of vtep.segments()) out.set(seg.vni, 0);
  for (const k of keys) {
    const i = k.indexOf('/');
    const vni = Number(k.slice(0, i));
    const seg = vtep.segment(vni);
    if (seg === undefined) continue;
    if (seg.tunnels.bridge.fdb.get(seg.vid, Number(k.slice(i + 1)))?.remote === true) out.set(vni, (out.get(vni) ?? 0) + 1);
  }
  return out;
}
