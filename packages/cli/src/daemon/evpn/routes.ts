/*
 * The EVPN control plane's pure rules: route distinguishers and route targets
 * derived as FRR derives them, the closed set of reasons a received route is
 * refused, and the checks that give them. No I/O here (service.ts does that).
 *
 * RD: router-id:n (type 1). FRR allocates n per VNI; here n is the VNI itself when
 * it fits 16 bits, else a number counted down from 65535 in the order of the large
 * VNIs (unique on this router, which is all an RD must be; set `rd` to pin one).
 * RT: ASN:VNI (type 0, two-octet AS specific; a four-octet ASN contributes its low
 * 16 bits, as FRR does): iBGP peers derive the same RTs, eBGP peers need `rt` set.
 */
import { parseIp4, parseMac } from '@vswitch/switch';
import type { EvpnRoute } from './gobgp.js';

/** Why a received route was not installed; a closed set (README "EVPN"). */
export const EVPN_REJECT_REASONS = [
  'unknown_vni',     // its VNI (type 2 label, type 3 PMSI label) is not carried here
  'rt_mismatch',     // none of its route targets is the VNI's import RT
  'bad_encap',       // an encapsulation other than VXLAN
  'bad_next_hop',    // no IPv4 next hop, or this VTEP's own address
  'bad_mac',         // not a unicast MAC
  'static_conflict', // the MAC is static here (config, `fdb add`, `vxlan fdb add`)
  'local_newer',     // the MAC is local here and the route's mobility sequence is not newer than ours
  'limit',           // the VNI holds maxRemoteMacs remote MACs already
  'mac_routes',      // the MAC has MAX_ROUTES_PER_MAC routes installed already (MAC/IP pairs, RDs)
  'duplicate_mac',   // the MAC is local here, flagged as a duplicate and held (dup-detect.ts): its move is not carried out
] as const;
export type EvpnRejectReason = (typeof EVPN_REJECT_REASONS)[number];

/** Installed routes naming one (VNI, MAC), at most: a host has a MAC-only route and a few MAC/IPs; a flood of IPs for one MAC stops here. */
export const MAX_ROUTES_PER_MAC = 16;

export interface VniPlan {
  vni: number;
  rd: string;
  /** Export and import RTs. */
  rts: string[];
}

export function derivePlans(vnis: number[], routerId: string, asn: number, overrides: Record<string, { rd?: string; rt?: string[] }>): VniPlan[] {
  const large = vnis.filter((v) => v > 65535).sort((a, b) => a - b);
  return vnis.map((vni) => {
    const o = overrides[String(vni)] ?? {};
    const n = vni <= 65535 ? vni : 65535 - large.indexOf(vni);
    return { vni, rd: o.rd ?? `${routerId}:${n}`, rts: o.rt ?? [`${asn % 65536}:${vni}`] };
  });
}

/** The checks that need nothing but the route and the VNI's plan. */
export function checkRoute(r: EvpnRoute, plan: VniPlan | undefined, local: string): EvpnRejectReason | undefined {
  if (plan === undefined) return 'unknown_vni';
  if (!r.rts.some((rt) => plan.rts.includes(rt))) return 'rt_mismatch';
  if (r.encap !== -1 && r.encap !== 8) return 'bad_encap';
  if (parseIp4(r.nextHop) < 0 || r.nextHop === local) return 'bad_next_hop';
  if (r.type === 2) {
    const m = parseMac(r.mac ?? '');
    if (m <= 0 || Math.floor(m / 2 ** 40) % 2 === 1) return 'bad_mac';
  }
  return undefined;
}

/** The RIB key of a route: what a withdrawal names. */
export function routeKey(r: EvpnRoute): string {
  return r.type === 2 ? `${r.neighbor ?? ''}|${r.rd}|2|${r.mac}|${r.ip ?? ''}` : `${r.neighbor ?? ''}|${r.rd}|3|${r.originator ?? ''}`;
}
