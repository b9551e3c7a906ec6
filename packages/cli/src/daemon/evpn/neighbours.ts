/*
 * EVPN's neighbour tables for ARP and ND suppression (issue 16 item 4): which IPv4
 * or IPv6 address is at which MAC per VNI, from the MAC/IP routes the service knows, pushed
 * into each bridge's ArpSuppress (packages/switch/src/arp-suppress.ts), which
 * answers local ARP requests from it.
 *
 * Sources, by route key (routes.ts routeKey): a peer's type-2 MAC/IP route once
 * installed (its MAC is on the tunnel), and this host's own advertised MAC/IP
 * routes (a local MAC with a DHCP lease or a configured IP source guard binding).
 * Nothing else writes the tables: not ARP seen on the wire. Several routes may
 * name one (VNI, IP) (MAC-only routes do not; a local binding and a peer's route, two
 * RDs): this host's own binding answers while it stands (a peer's route cannot take
 * a local VM's address from its neighbours here), else the latest peer's route.
 * `isLocal` tells the keys of this host's own routes.
 *
 * Placement: entries are kept by VNI; `configure` (after any change of VNIs or of
 * the section) maps each VNI to its bridge VLAN, turns answering on or off there
 * per the config (`arpSuppress`, per VNI overridable), bounds each VLAN's table to
 * `maxRemoteMacs` IPs (one more count an operator already sizes: past it, entries
 * are refused and counted `full`, and requests for them flood), and rewrites the
 * tables. A bridge holds its ArpSuppress only while some VLAN of it has answering
 * on, so a bridge without EVPN pays one field test per frame.
 */
import { ArpSuppress, type Bridge, parseIp4, parseIp6, type Vtep } from '@vswitch/switch';

/** `ip` as the route has it; `v4` (u32, -1 for IPv6) or `v6` (16 bytes) as the tables take it. */
interface Entry { vni: number; ip: string; v4: number; v6: Uint8Array | undefined; mac: number }

export interface ArpVniView {
  on: boolean;
  entries: number;
  suppressed: number;
  unknown: number;
  passed: number;
  malformed: number;
  full: number;
}

export class EvpnNeighbours {
  constructor(private readonly isLocal: (k: string) => boolean = () => false) {}

  readonly #entries = new Map<string, Entry>();
  /** `${vni}/${ip}` -> the keys naming it, latest last. */
  readonly #byIp = new Map<string, string[]>();
  readonly #sups = new Map<Bridge, ArpSuppress>();
  /** VNI -> where its table lives now. */
  #place = new Map<number, { sup: ArpSuppress; vid: number; on: boolean }>();

  get size(): number { return this.#entries.size; }

  /** A MAC/IP route (key `k`) says `ip` (IPv4 or IPv6 text) is at `mac` in `vni`; false if `ip` is neither. */
  add(k: string, vni: number, ip: string, mac: number): boolean {
    const old = this.#entries.get(k);
    if (old !== undefined && old.vni === vni && old.ip === ip && old.mac === mac) return true;
    const v4 = parseIp4(ip);
    const v6 = v4 >= 0 ? undefined : parseIp6(ip);
    if (v4 < 0 && v6 === undefined) return false;
    if (old !== undefined) this.remove(k);
    this.#entries.set(k, { vni, ip, v4, v6, mac });
    const ik = `${vni}/${ip}`;
    let keys = this.#byIp.get(ik);
    if (keys === undefined) this.#byIp.set(ik, keys = [k]);
    else keys.push(k);
    const p = this.#place.get(vni);
    if (p !== undefined) this.#put(p, this.#answer(keys));
    return true;
  }

  #put(p: { sup: ArpSuppress; vid: number }, e: Entry): void {
    if (e.v6 !== undefined) p.sup.set6(p.vid, e.v6, e.mac);
    else p.sup.set(p.vid, e.v4, e.mac);
  }

  /** Which of the keys naming one IP answers: the latest local one, else the latest. */
  #answer(keys: string[]): Entry {
    for (let i = keys.length - 1; i >= 0; i--) if (this.isLocal(keys[i])) return this.#entries.get(keys[i])!;
    return this.#entries.get(keys[keys.length - 1])!;
  }

  remove(k: string): void {
    const e = this.#entries.get(k);
    if (e === undefined) return;
    this.#entries.delete(k);
    const ik = `${e.vni}/${e.ip}`;
    const keys = (this.#byIp.get(ik) ?? []).filter((x) => x !== k);
    const p = this.#place.get(e.vni);
    if (keys.length === 0) {
      this.#byIp.delete(ik);
      if (p !== undefined && e.v6 !== undefined) p.sup.delete6(p.vid, e.v6);
      else if (p !== undefined) p.sup.delete(p.vid, e.v4);
      return;
    }
    this.#byIp.set(ik, keys);
    if (p !== undefined) this.#put(p, this.#answer(keys));
  }

  /** Drops this host's own entries that `keep` does not hold. */
  retain(keep: (k: string) => boolean): void {
    for (const k of [...this.#entries.keys()]) if (this.isLocal(k) && !keep(k)) this.remove(k);
  }

  /**
   * Places the VNIs of `vtep` on their bridge VLANs: answering on where `on(vni)`,
   * each VLAN's table bounded to `max`, the tables rewritten from the entries.
   */
  configure(vtep: Vtep | undefined, on: (vni: number) => boolean, max: number): void {
    const place = new Map<number, { sup: ArpSuppress; vid: number; on: boolean }>();
    const used = new Set<Bridge>();
    for (const seg of vtep?.segments() ?? []) {
      const br = seg.tunnels.bridge;
      let sup = this.#sups.get(br);
      if (sup === undefined) this.#sups.set(br, sup = new ArpSuppress());
      if (!used.has(br)) {
        used.add(br);
        sup.clear();
        sup.disableAll();
        sup.maxPerVlan = max;
      }
      const o = on(seg.vni);
      sup.enable(seg.vid, o);
      place.set(seg.vni, { sup, vid: seg.vid, on: o });
    }
    this.#place = place;
    for (const keys of this.#byIp.values()) {
      const e = this.#answer(keys);
      const p = place.get(e.vni);
      if (p !== undefined) this.#put(p, e);
    }
    for (const [br, sup] of this.#sups) {
      if (!used.has(br)) {
        if (br.arpSuppress === sup) br.arpSuppress = undefined;
        this.#sups.delete(br);
        continue;
      }
      br.arpSuppress = sup.active ? sup : undefined;
    }
  }

  /** Off everywhere, every entry forgotten. */
  close(): void {
    for (const [br, sup] of this.#sups) if (br.arpSuppress === sup) br.arpSuppress = undefined;
    this.#sups.clear();
    this.#place.clear();
    this.#entries.clear();
    this.#byIp.clear();
  }

  view(vni: number): ArpVniView | undefined {
    const p = this.#place.get(vni);
    if (p === undefined) return undefined;
    const c = p.sup.counters(p.vid);
    return { on: p.on, entries: p.sup.count(p.vid), suppressed: c.suppressed, unknown: c.unknown, passed: c.passed, malformed: c.malformed, full: c.full };
  }

  /** The VNI's IPv4 table, IP -> MAC (views, tests). */
  table(vni: number): [number, number][] {
    const p = this.#place.get(vni);
    return p === undefined ? [] : p.sup.entries(p.vid);
  }

  vnis(): number[] {
    return [...this.#place.keys()];
  }
}

type Fill = (emit: (labels: Record<string, string | number>, value: number) => void) => void;
type Reg = (name: string, help: string, labels: readonly string[], fill: Fill) => void;

/** ARP suppression's metrics per VNI (README "EVPN"). */
export function arpSuppressMetrics(neigh: () => EvpnNeighbours | undefined, gauge: Reg, counter: Reg): void {
  const each = (emit: Parameters<Fill>[0], pick: (v: ArpVniView) => number): void => {
    const n = neigh();
    if (n === undefined) return;
    for (const vni of n.vnis()) {
      const v = n.view(vni);
      if (v !== undefined) emit({ vni: String(vni) }, pick(v));
    }
  };
  gauge('vswitch_evpn_arp_entries', 'IPv4 and IPv6 neighbours (from MAC/IP routes) in the VNI\'s ARP/ND suppression table.', ['vni'], (emit) => each(emit, (v) => v.entries));
  counter('vswitch_evpn_arp_suppressed_total', 'ARP requests and neighbour solicitations from local ports answered from the VNI\'s table (not sent into the overlay).', ['vni'], (emit) => each(emit, (v) => v.suppressed));
  counter('vswitch_evpn_arp_unknown_total', 'ARP requests and neighbour solicitations for an IP not in the VNI\'s table: flooded as without suppression.', ['vni'], (emit) => each(emit, (v) => v.unknown));
  counter('vswitch_evpn_arp_passed_total', 'ARP requests the table knew but did not answer (the asker\'s own MAC, a gratuitous request): forwarded.', ['vni'], (emit) => each(emit, (v) => v.passed));
  counter('vswitch_evpn_arp_malformed_total', 'ARP frames whose body is not IPv4 over 6-byte MACs, or truncated, and invalid neighbour solicitations: forwarded untouched.', ['vni'], (emit) => each(emit, (v) => v.malformed));
  counter('vswitch_evpn_arp_full_total', 'Neighbour entries refused because the VNI\'s table held maxRemoteMacs IPs.', ['vni'], (emit) => each(emit, (v) => v.full));
}
