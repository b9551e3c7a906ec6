/*
 * A port's 802.1Q policy: may this VID enter or leave this port, and tagged or not.
 *
 * The model is Linux's `bridge vlan` with vlan_filtering on: a port has a set of
 * member VIDs, each tagged or untagged on egress, and at most one PVID that untagged
 * and priority-tagged frames are classified into. Open vSwitch's modes are
 * presets over it, and `mode()` reads them back:
 * - access: one VID, PVID, untagged. Frames that arrive tagged are dropped, also
 *   802.1ad S-tagged ones and priority-tagged frames that carry a second tag inside:
 *   a guest cannot hop VLANs, with or without double tagging.
 * - trunk: an allowed list, tagged, plus an optional native VLAN (PVID, untagged).
 * - hybrid: anything else built with `vlan add` (per-VID untagged flags).
 * A port without any tagged membership behaves as an access port for ingress.
 *
 * VID 0 and 4095 are not members ever (802.1Q: 0 = priority tag, 4095 reserved).
 */
import { VID_MAX } from './wire/vlan.js';

const MEMBER = 1;
const UNTAGGED = 2;

export type VlanMode = 'access' | 'trunk' | 'hybrid';

export interface VlanSpec {
  mode: VlanMode;
  /** access: the VLAN. */
  vid?: number;
  /** trunk: allowed VIDs. */
  allowed?: number[];
  /** trunk: native VLAN, sent and accepted untagged. */
  native?: number;
  /** hybrid: explicit memberships. */
  vlans?: { vid: number; pvid?: boolean; untagged?: boolean }[];
}

export class VlanPolicyError extends Error {
  readonly code = 'EVLAN';
}

export function checkVid(vid: number): void {
  if (!Number.isInteger(vid) || vid < 1 || vid > VID_MAX) {
    throw new VlanPolicyError(`VID ${vid} out of range (1-${VID_MAX})`);
  }
}

export class VlanPolicy {
  /** Per VID: MEMBER | UNTAGGED bits. */
  readonly #flags = new Uint8Array(4096);
  #pvid = 0;
  #taggedCount = 0;
  #memberCount = 0;

  /** Default for a new port, as Linux: VLAN 1, PVID, untagged. */
  static defaultAccess(): VlanPolicy {
    return VlanPolicy.from({ mode: 'access', vid: 1 });
  }

  static from(spec: VlanSpec): VlanPolicy {
    const p = new VlanPolicy();
    switch (spec.mode) {
      case 'access':
        p.add(spec.vid ?? 1, { pvid: true, untagged: true });
        break;
      case 'trunk':
        for (const v of spec.allowed ?? []) p.add(v, {});
        if (spec.native !== undefined) p.add(spec.native, { pvid: true, untagged: true });
        break;
      case 'hybrid':
        for (const v of spec.vlans ?? []) p.add(v.vid, { pvid: v.pvid, untagged: v.untagged });
        break;
    }
    return p;
  }

  get pvid(): number { return this.#pvid; }
  /** Tagged frames are admitted only on ports with at least one tagged VLAN. */
  get acceptsTagged(): boolean { return this.#taggedCount > 0; }

  isMember(vid: number): boolean { return (this.#flags[vid] & MEMBER) !== 0; }
  isUntagged(vid: number): boolean { return (this.#flags[vid] & UNTAGGED) !== 0; }

  /** Adds or updates one membership with exactly these flags, like `bridge vlan add`. */
  add(vid: number, opts: { pvid?: boolean; untagged?: boolean }): void {
    checkVid(vid);
    this.#setFlags(vid, MEMBER | (opts.untagged ? UNTAGGED : 0));
    // As Linux: re-adding the PVID's VID without the pvid flag clears the PVID.
    if (opts.pvid) this.#pvid = vid;
    else if (this.#pvid === vid) this.#pvid = 0;
  }

  /** Removes a membership (and the PVID if it was this VID). Returns whether it existed. */
  del(vid: number): boolean {
    checkVid(vid);
    if (!this.isMember(vid)) return false;
    this.#setFlags(vid, 0);
    if (this.#pvid === vid) this.#pvid = 0;
    return true;
  }

  /** Replaces everything with `other`'s memberships. */
  assign(other: VlanPolicy): void {
    for (let v = 1; v <= VID_MAX; v++) this.#setFlags(v, other.#flags[v]);
    this.#pvid = other.#pvid;
  }

  members(): { vid: number; pvid: boolean; untagged: boolean }[] {
    const out = [];
    for (let v = 1; v <= VID_MAX; v++) {
      if (this.#flags[v] & MEMBER) out.push({ vid: v, pvid: v === this.#pvid, untagged: this.isUntagged(v) });
    }
    return out;
  }

  mode(): VlanMode {
    if (this.#taggedCount === 0 && this.#memberCount === 1 && this.#pvid !== 0) return 'access';
    const untagged = this.#memberCount - this.#taggedCount;
    if (untagged === 0 && this.#pvid === 0) return 'trunk';
    if (untagged === 1 && this.#pvid !== 0 && this.isUntagged(this.#pvid)) return 'trunk';
    return 'hybrid';
  }

  /** The spec that rebuilds this policy, in its simplest form. */
  toSpec(): VlanSpec {
    const m = this.members();
    switch (this.mode()) {
      case 'access':
        return { mode: 'access', vid: this.#pvid };
      case 'trunk': {
        const spec: VlanSpec = { mode: 'trunk', allowed: m.filter((x) => !x.untagged).map((x) => x.vid) };
        if (this.#pvid !== 0) spec.native = this.#pvid;
        return spec;
      }
      default:
        return { mode: 'hybrid', vlans: m };
    }
  }

  #setFlags(vid: number, f: number): void {
    const old = this.#flags[vid];
    if (old & MEMBER) {
      this.#memberCount--;
      if (!(old & UNTAGGED)) this.#taggedCount--;
    }
    this.#flags[vid] = f;
    if (f & MEMBER) {
      this.#memberCount++;
      if (!(f & UNTAGGED)) this.#taggedCount++;
    }
  }
}
