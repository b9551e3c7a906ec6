/*
 * A bond: several member devices (attached NICs) as one bridge port. The bridge
 * sees one PortIo of kind 'bond'; the bond decides, per frame, which member sends
 * it and which received frames the bridge gets at all. Modes:
 *
 * - active-backup: one member (the active one) sends and receives; the others'
 *   frames are dropped (inactive_member). When the active member's link goes down
 *   the first member that is up takes over (no preemption when the old one returns),
 *   and the bond sends one RARP per MAC it has sent from (the MACs behind the bond's
 *   other ports, as far as the upstream knows them), so the physical switch relearns
 *   them on the new member at once (as Linux bonding's and QEMU's announcements).
 * - balance-slb (source-load balancing, as Open vSwitch): the source MAC hashes
 *   into one of 256 buckets, each bucket is sent on one member; every
 *   `rebalanceMs` buckets move from the busiest member to the idlest when that
 *   narrows the gap. No cooperation from the upstream switch is needed, which sees
 *   each member as a separate port, so (as OVS bond_check_admissibility) group frames
 *   are taken from one member only (the primary, the first up: else every flood
 *   would arrive once per member), and a frame whose source MAC the bond itself sent
 *   from is the upstream reflecting our own flood back on another member: dropped
 *   (slb_reflection), else the bridge would learn a local MAC on the bond.
 * - lacp (802.1AX, lacp.ts): members negotiate with the partner; a member receives
 *   while it collects and sends while it distributes. Frames hash on source and
 *   destination MAC over the distributing members.
 *
 * Slow-protocols frames (LACP, Marker) never reach the bridge: a LACPDU goes to the
 * LACP machine, a malformed one counts as lacp_malformed, others as slow_protocol.
 *
 * Links: a member carries traffic while its I/O has it (an attached interface that
 * vanished reports its link down and comes back, ports/attach.ts) and its carrier
 * is up, polled every TICK_MS (`linkOf`, /sys/class/net/IF/carrier by default). The
 * bond port is up while at least one member can send; when none can it reports
 * its link down (the bridge flushes its MACs, frames to it count as port_down).
 *
 * The per-frame path (send*, member receive) allocates nothing but a new source
 * MAC's entry: member choice is a hash and a table read; the table of source MACs
 * sent (RARP announcements, SLB reflection; MAC -> VID and the second last sent) is a
 * Map get per frame and a set when the second changes, bounded at MAX_TX_MACS.
 */
import { readFileSync } from 'node:fs';
import { ETH, ETH_HLEN, readMac, writeMac } from './wire/ethernet.js';
import { VLAN_TAGGED_HLEN } from './wire/vlan.js';
import { frameVid, l2Bucket, writeRarp } from './wire/l2hash.js';
import { isSlowProtocols, LACPDU_MALFORMED, LACPDU_OK, newLacpduView, newLacpInfo, readLacpdu, writeLacpFrame } from './wire/lacp.js';
import { Lacp, type LacpSettings } from './lacp.js';
import { MacSeen } from './mac-seen.js';
import type { PortIo, PortRx } from './port.js';

export type BondMode = 'active-backup' | 'balance-slb' | 'lacp';
export const BOND_MODES: readonly BondMode[] = ['active-backup', 'balance-slb', 'lacp'];

/** Why a member's received frame never reached the bridge: a closed set (README "Bonds"). */
export const BOND_DROP_REASONS = [
  'lacp_malformed',  // slow-protocols frame with subtype LACP that is truncated or has bad TLVs
  'slow_protocol',   // Marker, OAM or a LACPDU on a bond not in lacp mode: never bridged
  'inactive_member', // from a member that may not receive: a backup (active-backup), not collecting (lacp), link down
  'slb_flood',       // group frame on a balance-slb member that is not the primary (the upstream floods to every member)
  'slb_reflection',  // balance-slb: source MAC the bond itself sends from, reflected by the upstream
] as const;
export type BondDropReason = (typeof BOND_DROP_REASONS)[number];
const D_LACP_MALFORMED = 0;
const D_SLOW = 1;
const D_INACTIVE = 2;
const D_SLB_FLOOD = 3;
const D_SLB_REFLECTION = 4;

export const TICK_MS = 100;
export const REBALANCE_MS = 10000;
export const BUCKETS = 256;
/** Source MACs remembered for announcements and reflection checks; more are not tracked (counted). */
export const MAX_TX_MACS = 4096;
/** A remembered source MAC not seen for this long is forgotten. */
export const TX_MAC_AGE_MS = 300_000;
const ENETDOWN = 100;

export interface BondOptions {
  mode: BondMode;
  /** lacp mode: active (default) or passive, fast (default) or slow rate. */
  lacp?: Partial<LacpSettings>;
  /** LACP key (default 1) and system id (default: the first member's MAC). */
  lacpKey?: number;
  /** Carrier of a member interface; default reads /sys/class/net/IF/carrier. */
  linkOf?: (ifname: string) => boolean;
  /** A member's MAC (LACPDU source, LACP system id); default reads /sys/class/net/IF/address. */
  macOf?: (ifname: string) => number;
  rebalanceMs?: number;
  /** ms, monotonic; default performance.now(). */
  clock?: () => number;
  /** Run the tick timer (default true); tests drive `tick(now)` themselves. */
  timers?: boolean;
  onEvent?: (e: BondEvent) => void;
}

export type BondEvent =
  | { event: 'bond_member_down'; bond: string; member: string; reason: string }
  | { event: 'bond_member_up'; bond: string; member: string }
  | { event: 'bond_failover'; bond: string; from: string; to: string; announced: number }
  | { event: 'bond_lacp'; bond: string; member: string; status: string; attached: boolean; partner: string };

export class BondMember {
  /** Its I/O has it (not vanished), and its carrier is up. */
  ioUp = true;
  carrier = false;
  rxFrames = 0;
  rxBytes = 0;
  txFrames = 0;
  txBytes = 0;
  txErrors = 0;
  readonly drops = new Float64Array(BOND_DROP_REASONS.length);
  /** Times its link went down, and times its interface vanished. */
  downEvents = 0;
  vanished = 0;
  mac = 0;
  downReason = 'no carrier';
  constructor(readonly index: number, readonly name: string, readonly io: PortIo) {}
  get up(): boolean { return this.ioUp && this.carrier; }
}

export interface BondMemberStatus {
  name: string;
  link: 'up' | 'down';
  downReason?: string;
  /** Sends traffic now (active member, a bucket's member, distributing). */
  enabled: boolean;
  buckets?: number;
  rxFrames: number; rxBytes: number; txFrames: number; txBytes: number; txErrors: number;
  drops: Partial<Record<BondDropReason, number>>;
  downEvents: number;
  vanished: number;
  lacp?: {
    status: string; attached: boolean; collecting: boolean; distributing: boolean;
    actorState: number; partnerState: number; partnerSystem: string; partnerKey: number; partnerPort: number;
    txPdus: number; rxPdus: number; partnerChanges: number;
  };
}

export interface BondStatus {
  mode: BondMode;
  active?: string;
  lacp?: { active: boolean; rate: 'fast' | 'slow'; system: string; key: number };
  failovers: number;
  announced: number;
  rebalances: number;
  macsUntracked: number;
  members: BondMemberStatus[];
}

export const bondBucket = l2Bucket;

export class BondIo implements PortIo {
  readonly kind = 'bond' as const;
  readonly offload: boolean;
  readonly members: BondMember[];
  readonly lacp: Lacp | undefined;
  failovers = 0;
  announced = 0;
  rebalances = 0;
  #rx: PortRx | undefined;
  #active = -1;
  /** bucket -> member index, -1: none. */
  readonly #table = new Int8Array(BUCKETS).fill(-1);
  readonly #bucketBytes = new Float64Array(BUCKETS);
  /** Source MACs sent from, with their VID and last second (mac-seen.ts). */
  readonly #txMacs = new MacSeen(MAX_TX_MACS);
  #nowSec = 0;
  #sendable = false;
  readonly #rxOk: Uint8Array;
  #timer: NodeJS.Timeout | undefined;
  #lastRebalance = 0;
  readonly #opts: BondOptions;
  readonly #clock: () => number;
  readonly #linkOf: (ifname: string) => boolean;
  readonly #scratch = new Uint8Array(256);
  readonly #pdu = newLacpduView();
  readonly #actorInfo = newLacpInfo();
  #offs = new Int32Array(256);
  #lens = new Int32Array(256);
  #closed = false;

  constructor(readonly name: string, members: { name: string; io: PortIo }[], opts: BondOptions) {
    if (members.length === 0) throw new Error(`bond ${name}: no members`);
    if (members.length > 64) throw new Error(`bond ${name}: at most 64 members`);
    this.#opts = opts;
    this.#clock = opts.clock ?? (() => performance.now());
    this.#linkOf = opts.linkOf ?? sysfsCarrier;
    this.members = members.map((m, i) => new BondMember(i, m.name, m.io));
    this.offload = members.every((m) => m.io.offload === true && typeof m.io.sendVnet === 'function' && typeof m.io.send2Vnet === 'function');
    this.#rxOk = new Uint8Array(members.length);
    const macOf = opts.macOf ?? sysfsMac;
    for (const m of this.members) m.mac = macOf(m.name);
    if (opts.mode === 'lacp') {
      const s: LacpSettings = { active: opts.lacp?.active ?? true, fast: opts.lacp?.fast ?? true };
      this.lacp = new Lacp(s, this.members[0].mac, opts.lacpKey ?? 1, members.length);
    }
  }

  get mode(): BondMode { return this.#opts.mode; }
  get linkUp(): boolean { return this.#sendable; }
  get linkDownReason(): string { return this.lacp ? 'no member distributing (LACP)' : 'no member link up'; }
  /** Source MACs not remembered because the table was full. */
  get macsUntracked(): number { return this.#txMacs.refused; }
  get active(): BondMember | undefined { return this.#active >= 0 ? this.members[this.#active] : undefined; }

  start(rx: PortRx): void {
    this.#rx = rx;
    const now = this.#clock();
    this.#lastRebalance = now;
    for (const m of this.members) {
      m.carrier = this.#carrier(m);
      if (m.up) this.lacp?.setLink(m.index, true, now);
    }
    this.#recompute(now, false);
    for (const m of this.members) m.io.start(this.#memberRx(m));
    if (this.#opts.timers !== false) {
      this.#timer = setInterval(() => this.tick(this.#clock()), TICK_MS);
      this.#timer.unref();
    }
    this.tick(now);
  }

  /** Link polling, LACP timers, rebalancing, MAC table ageing. */
  tick(now: number): void {
    if (this.#closed) return;
    this.#nowSec = Math.floor(now / 1000);
    let changed = false;
    for (const m of this.members) {
      const c = this.#carrier(m);
      if (c !== m.carrier) {
        m.carrier = c;
        if (!c) m.downReason = 'no carrier';
        changed = true;
        this.#linkEvent(m, now);
      }
    }
    if (this.lacp !== undefined) {
      this.lacp.tick(now, (i) => this.#sendPdu(i));
      changed = true;
    }
    if (changed) this.#recompute(now, true);
    if (this.#opts.mode === 'balance-slb' && now - this.#lastRebalance >= (this.#opts.rebalanceMs ?? REBALANCE_MS)) {
      this.#lastRebalance = now;
      this.rebalance();
    }
    if (this.#txMacs.size > 0 && (this.#nowSec & 15) === 0) this.#txMacs.expire(this.#nowSec - TX_MAC_AGE_MS / 1000);
  }

  #carrier(m: BondMember): boolean {
    try {
      return this.#linkOf(m.name);
    } catch {
      return false;
    }
  }

  #linkEvent(m: BondMember, now: number): void {
    this.lacp?.setLink(m.index, m.up, now);
    if (m.up) this.#emit({ event: 'bond_member_up', bond: this.name, member: m.name });
    else {
      m.downEvents++;
      this.#emit({ event: 'bond_member_down', bond: this.name, member: m.name, reason: m.downReason });
    }
  }

  #memberRx(m: BondMember): PortRx {
    return {
      batch: (buf, offs, lens, count, vnet, at) => {
        if (this.#offs.length < count) {
          this.#offs = new Int32Array(count);
          this.#lens = new Int32Array(count);
        }
        const o2 = this.#offs;
        const l2 = this.#lens;
        let n = 0;
        for (let i = 0; i < count; i++) {
          if (this.#admit(m, buf, offs[i], lens[i], at)) {
            o2[n] = offs[i];
            l2[n] = lens[i];
            n++;
          }
        }
        if (n > 0) this.#rx!.batch(buf, o2, l2, n, vnet, at);
      },
      frame: (buf, off, len) => {
        if (this.#admit(m, buf, off, len, undefined)) this.#rx!.frame(buf, off, len);
      },
      gone: (_errno, why) => this.#memberIo(m, false, why),
      link: (up, why) => this.#memberIo(m, up, why),
    };
  }

  #memberIo(m: BondMember, up: boolean, why: string): void {
    if (m.ioUp === up) return;
    const was = m.up;
    m.ioUp = up;
    if (!up) {
      m.vanished++;
      m.downReason = why;
    }
    if (was !== m.up) {
      const now = this.#clock();
      this.#linkEvent(m, now);
      this.#recompute(now, true);
    }
  }

  /** Whether a frame member m received goes on to the bridge. */
  #admit(m: BondMember, buf: Uint8Array, off: number, len: number, at: number | undefined): boolean {
    m.rxFrames++;
    m.rxBytes += len;
    if (isSlowProtocols(buf, off, len)) {
      this.#slow(m, buf, off, len, at);
      return false;
    }
    if (this.#rxOk[m.index] === 0) {
      m.drops[D_INACTIVE]++;
      return false;
    }
    if (this.#opts.mode === 'balance-slb' && len >= ETH_HLEN) {
      if ((buf[off] & 1) === 1 && m.index !== this.#active) {
        m.drops[D_SLB_FLOOD]++;
        return false;
      }
      if (this.#txMacs.has(buf, off + ETH.SRC)) {
        m.drops[D_SLB_REFLECTION]++;
        return false;
      }
    }
    return true;
  }

  #slow(m: BondMember, buf: Uint8Array, off: number, len: number, at: number | undefined): void {
    const r = readLacpdu(buf, off, len, this.#pdu);
    if (r === LACPDU_MALFORMED) {
      m.drops[D_LACP_MALFORMED]++;
      return;
    }
    if (r !== LACPDU_OK || this.lacp === undefined) {
      m.drops[D_SLOW]++;
      return;
    }
    const now = at ?? this.#clock();
    const partner = this.lacp.members[m.index].partner.system;
    this.lacp.receive(m.index, this.#pdu, now);
    // A changed partner or selection answers now, not at the next tick.
    this.lacp.tick(now, (i) => this.#sendPdu(i));
    if (this.lacp.members[m.index].partner.system !== partner) this.#lacpEvent(m);
    this.#recompute(now, true);
  }

  #lacpEvent(m: BondMember): void {
    const lm = this.lacp!.members[m.index];
    this.#emit({ event: 'bond_lacp', bond: this.name, member: m.name, status: lm.status, attached: lm.attached, partner: macText(lm.partner.system) });
  }

  #sendPdu(i: number): void {
    const m = this.members[i];
    const lm = this.lacp!.members[i];
    const len = writeLacpFrame(this.#scratch, 0, m.mac, this.lacp!.actorInfo(i, this.#actorInfo), lm.partner);
    const r = m.io.send(this.#scratch, 0, len);
    if (r < 0) m.txErrors++;
  }

  /** Re-derives who sends and who receives after a link, LACP or config change. */
  #recompute(now: number, announce: boolean): void {
    const ms = this.members;
    const mode = this.#opts.mode;
    const lacpWas = this.#lacpAttached;
    if (mode === 'lacp') {
      const l = this.lacp!;
      const dist: number[] = [];
      for (const m of ms) {
        this.#rxOk[m.index] = l.collecting(m.index) ? 1 : 0;
        if (l.distributing(m.index)) dist.push(m.index);
        const att = l.members[m.index].attached;
        if (((lacpWas >> m.index) & 1) !== (att ? 1 : 0)) this.#lacpEvent(m);
      }
      this.#lacpAttached = ms.reduce((a, m) => a | (l.members[m.index].attached ? 1 << m.index : 0), 0);
      for (let b = 0; b < BUCKETS; b++) this.#table[b] = dist.length ? dist[b % dist.length] : -1;
      this.#active = dist.length ? dist[0] : -1;
      this.#setSendable(dist.length > 0);
      return;
    }
    const up = ms.filter((m) => m.up).map((m) => m.index);
    if (mode === 'active-backup') {
      const old = this.#active;
      if (old < 0 || !ms[old].up) {
        this.#active = up.length ? up[0] : -1;
        if (old >= 0 && this.#active >= 0 && announce) {
          this.failovers++;
          const n = this.#announce(this.#active);
          this.#emit({ event: 'bond_failover', bond: this.name, from: ms[old].name, to: ms[this.#active].name, announced: n });
        }
      }
      for (const m of ms) this.#rxOk[m.index] = m.index === this.#active ? 1 : 0;
      this.#setSendable(this.#active >= 0);
      return;
    }
    // balance-slb: buckets of members that went down move to the up members, spread evenly.
    for (const m of ms) this.#rxOk[m.index] = m.up ? 1 : 0;
    const oldPrimary = this.#active;
    this.#active = up.length ? (oldPrimary >= 0 && ms[oldPrimary].up ? oldPrimary : up[0]) : -1;
    if (up.length === 0) {
      this.#table.fill(-1);
    } else {
      const load = new Map<number, number>(up.map((i) => [i, 0]));
      for (let b = 0; b < BUCKETS; b++) { const t = this.#table[b]; if (load.has(t)) load.set(t, load.get(t)! + 1); }
      let moved = false;
      for (let b = 0; b < BUCKETS; b++) {
        if (load.has(this.#table[b])) continue;
        let best = up[0];
        for (const i of up) if (load.get(i)! < load.get(best)!) best = i;
        const was = this.#table[b];
        this.#table[b] = best;
        load.set(best, load.get(best)! + 1);
        if (was >= 0) moved = true;
      }
      if (moved && announce) {
        this.failovers++;
        const n = this.#announce(-1);
        this.#emit({ event: 'bond_failover', bond: this.name, from: '', to: up.map((i) => ms[i].name).join(','), announced: n });
      }
    }
    this.#setSendable(up.length > 0);
  }
  #lacpAttached = 0;

  #setSendable(ok: boolean): void {
    if (ok === this.#sendable) return;
    this.#sendable = ok;
    this.#rx?.link(ok, ok ? 'a bond member is up' : this.linkDownReason);
  }

  /**
   * One RARP per remembered source MAC, each on the member that now sends for it
   * (`only` >= 0: on that member). Bounded by MAX_TX_MACS; returns how many went.
   */
  #announce(only: number): number {
    let n = 0;
    const buf = this.#scratch;
    this.#txMacs.forEach((mac, vid) => {
      const len = writeRarp(buf, 0, mac, vid);
      const i = only >= 0 ? only : this.#table[l2Bucket(buf, 0, false)];
      if (i < 0) return;
      const m = this.members[i];
      const r = m.io.send(buf, 0, len);
      if (r < 0) m.txErrors++;
      else { m.txFrames++; m.txBytes += len; n++; }
    });
    this.announced += n;
    return n;
  }

  /**
   * balance-slb: moves buckets from the busiest member to the idlest while one
   * whose bytes are under the gap narrows it (OVS bond_rebalance), then forgets the loads.
   */
  rebalance(): number {
    const up = this.members.filter((m) => m.up).map((m) => m.index);
    let moves = 0;
    if (up.length >= 2) {
      const load = new Map<number, number>(up.map((i) => [i, 0]));
      for (let b = 0; b < BUCKETS; b++) { const t = this.#table[b]; if (load.has(t)) load.set(t, load.get(t)! + this.#bucketBytes[b]); }
      for (; moves < BUCKETS; moves++) {
        let hi = up[0], lo = up[0];
        for (const i of up) {
          if (load.get(i)! > load.get(hi)!) hi = i;
          if (load.get(i)! < load.get(lo)!) lo = i;
        }
        const gap = load.get(hi)! - load.get(lo)!;
        let pick = -1;
        for (let b = 0; b < BUCKETS; b++) {
          const bytes = this.#bucketBytes[b];
          if (this.#table[b] === hi && bytes > 0 && bytes < gap && (pick < 0 || bytes > this.#bucketBytes[pick])) pick = b;
        }
        if (pick < 0) break;
        this.#table[pick] = lo;
        load.set(hi, load.get(hi)! - this.#bucketBytes[pick]);
        load.set(lo, load.get(lo)! + this.#bucketBytes[pick]);
      }
      if (moves > 0) this.rebalances++;
    }
    this.#bucketBytes.fill(0);
    return moves;
  }

  /** The member that sends this frame, or -1 (none up). Records its source MAC. */
  #pick(buf: Uint8Array, off: number, len: number): number {
    const mode = this.#opts.mode;
    this.#txMacs.touch(buf, off + ETH.SRC, len >= VLAN_TAGGED_HLEN ? frameVid(buf, off) : 0, this.#nowSec);
    if (mode === 'active-backup') return this.#active;
    const b = l2Bucket(buf, off, mode === 'lacp');
    this.#bucketBytes[b] += len;
    return this.#table[b];
  }

  #done(m: BondMember, r: number, len: number): number {
    if (r < 0) m.txErrors++;
    else { m.txFrames++; m.txBytes += len; }
    return r;
  }

  send(buf: Uint8Array, off: number, len: number): number {
    const i = this.#pick(buf, off, len);
    if (i < 0) return -ENETDOWN;
    const m = this.members[i];
    return this.#done(m, m.io.send(buf, off, len), len);
  }

  send2(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    const i = this.#pick(a, aoff, alen + blen);
    if (i < 0) return -ENETDOWN;
    const m = this.members[i];
    return this.#done(m, m.io.send2(a, aoff, alen, b, boff, blen), alen + blen);
  }

  sendVnet(buf: Uint8Array, off: number, len: number): number {
    const i = this.#pick(buf, off, len);
    if (i < 0) return -ENETDOWN;
    const m = this.members[i];
    return this.#done(m, m.io.sendVnet!(buf, off, len), len);
  }

  send2Vnet(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    const i = this.#pick(a, aoff, alen + blen);
    if (i < 0) return -ENETDOWN;
    const m = this.members[i];
    return this.#done(m, m.io.send2Vnet!(a, aoff, alen, b, boff, blen), alen + blen);
  }

  /** Changes LACP activity and rate in place (lacp mode). */
  setLacp(s: Partial<LacpSettings>): void {
    if (this.lacp === undefined) return;
    this.lacp.set({ active: s.active ?? this.lacp.settings.active, fast: s.fast ?? this.lacp.settings.fast });
    this.tick(this.#clock());
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    for (const m of this.members) m.io.close();
  }

  describe(): Record<string, string | number | boolean> {
    const d: Record<string, string | number | boolean> = { bondMode: this.#opts.mode, members: this.members.map((m) => m.name).join(',') };
    if (this.#opts.mode === 'active-backup' && this.#active >= 0) d.activeMember = this.members[this.#active].name;
    return d;
  }

  status(): BondStatus {
    const l = this.lacp;
    const counts = new Int32Array(this.members.length);
    for (let b = 0; b < BUCKETS; b++) if (this.#table[b] >= 0) counts[this.#table[b]]++;
    return {
      mode: this.#opts.mode,
      ...(this.#active >= 0 && this.#opts.mode !== 'lacp' ? { active: this.members[this.#active].name } : {}),
      ...(l ? { lacp: { active: l.settings.active, rate: l.settings.fast ? 'fast' : 'slow', system: macText(l.actor.system), key: l.actor.key } } : {}),
      failovers: this.failovers,
      announced: this.announced,
      rebalances: this.rebalances,
      macsUntracked: this.macsUntracked,
      members: this.members.map((m) => {
        const drops: Partial<Record<BondDropReason, number>> = {};
        BOND_DROP_REASONS.forEach((r, i) => { if (m.drops[i] > 0) drops[r] = m.drops[i]; });
        const enabled = this.#opts.mode === 'active-backup' ? m.index === this.#active : counts[m.index] > 0;
        const s: BondMemberStatus = {
          name: m.name, link: m.up ? 'up' : 'down', ...(m.up ? {} : { downReason: m.downReason }), enabled,
          ...(this.#opts.mode === 'active-backup' ? {} : { buckets: counts[m.index] }),
          rxFrames: m.rxFrames, rxBytes: m.rxBytes, txFrames: m.txFrames, txBytes: m.txBytes, txErrors: m.txErrors,
          drops, downEvents: m.downEvents, vanished: m.vanished,
        };
        if (l) {
          const v = l.view(m.index);
          s.lacp = {
            status: v.status, attached: v.attached, collecting: l.collecting(m.index), distributing: l.distributing(m.index),
            actorState: v.actorState, partnerState: v.partner.state, partnerSystem: macText(v.partner.system),
            partnerKey: v.partner.key, partnerPort: v.partner.port, txPdus: v.txPdus, rxPdus: v.rxPdus, partnerChanges: v.partnerChanges,
          };
        }
        return s;
      }),
    };
  }

  #emit(e: BondEvent): void {
    this.#opts.onEvent?.(e);
  }
}

function macText(mac: number): string {
  const b = new Uint8Array(6);
  writeMac(b, 0, mac);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');
}

function sysfsCarrier(ifname: string): boolean {
  // `carrier` reads EINVAL while the interface is administratively down: down too.
  return readFileSync(`/sys/class/net/${ifname}/carrier`, 'utf8').trim() === '1';
}

function sysfsMac(ifname: string): number {
  try {
    const t = readFileSync(`/sys/class/net/${ifname}/address`, 'utf8').trim();
    const b = t.split(':').map((x) => parseInt(x, 16));
    if (b.length !== 6 || b.some((x) => !(x >= 0 && x <= 255))) return 0;
    return readMac(Uint8Array.from(b), 0);
  } catch {
    return 0;
  }
}

