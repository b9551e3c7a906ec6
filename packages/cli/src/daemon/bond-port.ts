/*
 * Bond ports in the daemon: a port of type `bond` (config `bridges.B.ports.NAME`
 * with `type: bond` and `bond: {members, mode, lacp, lacpRate}`, or `vswitch bond
 * add`) is a BondIo (@vswitch/switch bond.ts) over one AttachIo per member. The
 * members are existing interfaces, attached as `addif --attach` would attach them
 * (AF_PACKET, GSO frames whole, reattached when they come back), under the same
 * rules: not loopback, not a router's uplink, not a port or a member of another bond.
 * The bond's name is only the port's name: no interface of that name is made.
 *
 * A member that does not exist when the bond is made fails the change (nothing
 * changed, as any port that cannot be opened); one that vanishes later is counted,
 * logged and reattached when it is back (ports/attach.ts), the bond going on with
 * the rest. Members, mode and LACP settings are the port's kind: changing them
 * (config reload, `bond add` again after `bond del`) reopens the bond.
 */
import { readFileSync } from 'node:fs';
import { BondIo, type BondEvent, type BondMode, type BondStatus, type Bridge } from '@vswitch/switch';
import { AttachIo } from '@vswitch/switch/ports';
import { checkIfName } from '../config.js';
import { VswitchError } from '../errors.js';
import type { Desired } from './state.js';

export interface BondSpec {
  members: string[];
  mode: BondMode;
  lacp: 'active' | 'passive';
  lacpRate: 'fast' | 'slow';
}

export const BOND_SPEC_DEFAULTS = { mode: 'active-backup', lacp: 'active', lacpRate: 'fast' } as const;

/** Opens the members and makes the bond; throws a VswitchError saying which member and why (nothing left open). */
export function openBond(name: string, spec: BondSpec, where: string, next: Desired, onEvent: (e: BondEvent) => void): BondIo {
  checkBondMembers(name, spec, where, next);
  const opened: AttachIo[] = [];
  try {
    for (const m of spec.members) {
      try {
        opened.push(new AttachIo(m, { keepGso: true, reattach: true }));
      } catch (e) {
        throw new VswitchError((e as { code?: string }).code ?? 'EIO', `${where}bond ${name}: cannot attach member ${m}: ${(e as Error).message}`);
      }
    }
    return new BondIo(name, spec.members.map((m, i) => ({ name: m, io: opened[i] })), {
      mode: spec.mode,
      lacp: { active: (spec.lacp ?? 'active') === 'active', fast: (spec.lacpRate ?? 'fast') === 'fast' },
      onEvent,
    });
  } catch (e) {
    for (const io of opened) io.close();
    throw e;
  }
}

export function checkBondMembers(name: string, spec: BondSpec, where: string, next: Desired): void {
  if (!Array.isArray(spec.members) || spec.members.length === 0) throw new VswitchError('EINVAL', `${where}bond ${name} has no members`);
  if (spec.members.length > 8) throw new VswitchError('EINVAL', `${where}bond ${name}: at most 8 members`);
  if (new Set(spec.members).size !== spec.members.length) throw new VswitchError('EINVAL', `${where}bond ${name}: a member is named twice`);
  for (const m of spec.members) {
    const bad = checkIfName(m);
    if (bad !== undefined) throw new VswitchError('EINVAL', `${where}bond ${name}: bad member name '${m}': ${bad}`);
    if (m === name) throw new VswitchError('EINVAL', `${where}bond ${name}: a bond cannot be its own member`);
    if (next.ports.has(m)) throw new VswitchError('EBUSY', `${where}bond ${name}: ${m} is a port of bridge ${next.ports.get(m)!.bridge}`);
    for (const [pname, p] of next.ports) {
      if (pname !== name && p.spec.type === 'bond' && p.spec.bond?.members.includes(m)) throw new VswitchError('EBUSY', `${where}bond ${name}: ${m} is a member of bond ${pname}`);
    }
    for (const [rname, rc] of next.routers) {
      if (rc.uplink?.kind !== 'host' && rc.uplink?.interface === m) throw new VswitchError('EBUSY', `${where}bond ${name}: ${m} is the uplink of router ${rname}`);
    }
    if (isLoopback(m)) throw new VswitchError('EINVAL', `${where}bond ${name}: ${m} is a loopback interface`);
  }
}

/** The bond whose member `ifname` is, if any. */
export function bondOf(ifname: string, next: Desired): string | undefined {
  for (const [pname, p] of next.ports) if (p.spec.type === 'bond' && p.spec.bond?.members.includes(ifname)) return pname;
  return undefined;
}

/** Every bond port of these bridges with its status, for `vswitch bond show`. */
export function bondViews(bridges: Iterable<Bridge>, only?: string): ({ bridge: string; name: string; state: string } & BondStatus)[] {
  const out: ({ bridge: string; name: string; state: string } & BondStatus)[] = [];
  for (const br of bridges) {
    for (const p of br.ports.values()) {
      if (!(p.io instanceof BondIo) || (only !== undefined && p.name !== only)) continue;
      out.push({ bridge: br.name, name: p.name, state: p.up ? 'up' : 'down', ...p.io.status() });
    }
  }
  return out;
}

function isLoopback(ifname: string): boolean {
  try {
    return (parseInt(readFileSync(`/sys/class/net/${ifname}/flags`, 'utf8').trim(), 16) & 0x8) !== 0;
  } catch {
    return false;
  }
}
