/*
 * Bond metrics (README "Bonds"): per member traffic, drops before the bridge (a
 * closed set, BOND_DROP_REASONS), link and LACP state; per bond failovers and
 * RARP announcements. Registered by metrics.ts like its own families: counters and
 * gauges refilled from the bonds' numbers at each scrape.
 */
import { BOND_DROP_REASONS, BondIo, type Bridge } from '@vswitch/switch';

type Emit = (labels: Record<string, string>, value: number) => void;
type Family = (name: string, help: string, labelNames: readonly string[], fill: (emit: Emit) => void) => void;

const MEMBER = ['bridge', 'bond', 'member'] as const;

function* bonds(bridges: () => Iterable<Bridge>): Generator<{ labels: Record<string, string>; io: BondIo }> {
  for (const br of bridges()) {
    for (const p of br.ports.values()) if (p.io instanceof BondIo) yield { labels: { bridge: br.name, bond: p.name }, io: p.io };
  }
}

export function registerBondMetrics(counter: Family, gauge: Family, bridges: () => Iterable<Bridge>): void {
  const perMember = (name: string, help: string, kind: Family, value: (io: BondIo, i: number) => number): void => {
    kind(name, help, MEMBER, (emit) => {
      for (const b of bonds(bridges)) b.io.members.forEach((m, i) => emit({ ...b.labels, member: m.name }, value(b.io, i)));
    });
  };
  perMember('vswitch_bond_member_rx_frames_total', 'Frames a bond member received (LACPDUs and frames dropped before the bridge included).', counter, (io, i) => io.members[i].rxFrames);
  perMember('vswitch_bond_member_rx_bytes_total', 'Bytes of vswitch_bond_member_rx_frames_total.', counter, (io, i) => io.members[i].rxBytes);
  perMember('vswitch_bond_member_tx_frames_total', 'Frames written on a bond member (RARP announcements included, LACPDUs not).', counter, (io, i) => io.members[i].txFrames);
  perMember('vswitch_bond_member_tx_bytes_total', 'Bytes of vswitch_bond_member_tx_frames_total.', counter, (io, i) => io.members[i].txBytes);
  counter('vswitch_bond_member_drops_total', 'Frames a bond member received that never reached the bridge, by reason (README "Bonds"; zeros included).',
    [...MEMBER, 'reason'], (emit) => {
      for (const b of bonds(bridges)) {
        for (const m of b.io.members) BOND_DROP_REASONS.forEach((r, k) => emit({ ...b.labels, member: m.name, reason: r }, m.drops[k]));
      }
    });
  perMember('vswitch_bond_member_up', '1 while the member\'s interface exists and has carrier.', gauge, (io, i) => (io.members[i].up ? 1 : 0));
  perMember('vswitch_bond_member_enabled', '1 while the member carries traffic (the active member; a member with hash buckets; a distributing LACP member).',
    gauge, (io, i) => (io.status().members[i].enabled ? 1 : 0));
  perMember('vswitch_bond_member_down_events_total', 'Times the member\'s link went down (carrier lost or the interface vanished).', counter, (io, i) => io.members[i].downEvents);
  perMember('vswitch_bond_member_lacp_actor_state', 'lacp bonds: our LACP state byte on the member (802.1AX bits: 1 activity, 2 short timeout, 4 aggregation, 8 sync, 16 collecting, 32 distributing, 64 defaulted, 128 expired).',
    gauge, (io, i) => (io.lacp ? io.lacp.actorState(i) : 0));
  perMember('vswitch_bond_member_lacp_partner_state', 'lacp bonds: the partner\'s LACP state byte as last heard on the member (0: no partner).',
    gauge, (io, i) => (io.lacp ? io.lacp.members[i].partner.state : 0));
  counter('vswitch_bond_member_lacpdus_total', 'lacp bonds: LACPDUs by direction (rx, tx).', [...MEMBER, 'direction'], (emit) => {
    for (const b of bonds(bridges)) {
      if (b.io.lacp === undefined) continue;
      b.io.members.forEach((m, i) => {
        emit({ ...b.labels, member: m.name, direction: 'rx' }, b.io.lacp!.members[i].rxPdus);
        emit({ ...b.labels, member: m.name, direction: 'tx' }, b.io.lacp!.members[i].txPdus);
      });
    }
  });
  counter('vswitch_bond_failovers_total', 'Times a bond moved traffic off a member that went down (active-backup: a new active member; balance-slb: buckets moved).',
    ['bridge', 'bond'], (emit) => { for (const b of bonds(bridges)) emit(b.labels, b.io.failovers); });
  counter('vswitch_bond_announcements_total', 'RARP frames a bond sent at failovers, one per MAC it sends from.',
    ['bridge', 'bond'], (emit) => { for (const b of bonds(bridges)) emit(b.labels, b.io.announced); });
}
