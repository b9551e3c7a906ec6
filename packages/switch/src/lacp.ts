/*
 * LACP (IEEE 802.1AX, formerly 802.3ad) for one bond: our actor, and per member
 * the partner it hears. The model is 802.1AX's receive, periodic-transmit, selection
 * and (coupled) mux machines folded into plain state, as Open vSwitch's lacp.c:
 *
 * - receive: a member whose link is up and that hears a LACPDU is CURRENT; the
 *   partner info is recorded, its Synchronization bit kept only if the PDU's
 *   partner TLV describes us (802.1AX recordPDU: the partner is in sync with *this*
 *   actor). Without PDUs for 3 x the actor's period (3 s fast, 90 s slow) it turns
 *   EXPIRED (partner sync cleared, a short timeout asked for) and after another 3 s
 *   DEFAULTED (partner forgotten).
 * - selection: among CURRENT members whose partner aggregates, the lead is the one
 *   with the best (partner system priority, partner system, port priority, port);
 *   a member is attached when its partner is the lead's (same system and key), so
 *   members cabled to two different switches never carry traffic together, and a
 *   partner change on a member (a new system or key) re-runs selection at once.
 * - mux (coupled control): an attached member collects and distributes as soon as
 *   it is selected (our SYNC, COLLECTING, DISTRIBUTING bits); the bond receives on
 *   a member while it collects (`collecting`) and sends on it only while its
 *   partner is in sync and collecting too (`distributing`).
 * - periodic transmit: while we or the partner are active, every second if the
 *   partner asked for the short timeout (or, with no partner known, if we use it),
 *   else every 30 s; any change of our state
 *   or a partner whose view of us is stale sends at once (need-to-transmit), at
 *   most 3 PDUs a second per member (802.1AX 6.4.16).
 *
 * Everything is driven by `receive`, `setLink` and `tick(now)`; nothing here reads a
 * clock or touches I/O, so tests run it against a simulated partner.
 */
import { LACP_STATE, type LacpduView, type LacpInfo, newLacpInfo } from './wire/lacp.js';

export const LACP_FAST_MS = 1000;
export const LACP_SLOW_MS = 30000;
/** Timeouts are 3 periods (802.1AX Short_Timeout_Time, Long_Timeout_Time). */
export const LACP_TIMEOUT_FACTOR = 3;
const TX_PER_SEC = 3;

export type LacpStatus = 'current' | 'expired' | 'defaulted';

export interface LacpSettings {
  /** Active: send LACPDUs unasked; passive: only once the partner is active. */
  active: boolean;
  /** Ask the partner for a LACPDU every second (fast) rather than every 30 s (slow); our timeout follows. */
  fast: boolean;
}

export interface LacpMember {
  readonly port: number;
  readonly portPrio: number;
  link: boolean;
  status: LacpStatus;
  readonly partner: LacpInfo;
  attached: boolean;
  /** When the partner info expires (status steps current -> expired -> defaulted). */
  rxUntil: number;
  nextTx: number;
  ntt: boolean;
  txCredits: number;
  creditsAt: number;
  /** Counters: PDUs sent and received, times a different partner showed up. */
  txPdus: number;
  rxPdus: number;
  partnerChanges: number;
}

/** What a member looked like, for show and metrics. */
export interface LacpMemberView {
  status: LacpStatus;
  attached: boolean;
  actorState: number;
  partner: LacpInfo;
  txPdus: number;
  rxPdus: number;
  partnerChanges: number;
}

const S = LACP_STATE;

export class Lacp {
  readonly members: LacpMember[] = [];
  readonly actor: LacpInfo = newLacpInfo();

  constructor(
    public settings: LacpSettings,
    /** Our system id (a MAC) and key; system priority as OVS's default. */
    system: number,
    key: number,
    memberCount: number,
    sysPrio = 65534,
  ) {
    this.actor.system = system;
    this.actor.key = key;
    this.actor.sysPrio = sysPrio;
    for (let i = 0; i < memberCount; i++) {
      this.members.push({
        port: i + 1, portPrio: 255, link: false, status: 'defaulted', partner: newLacpInfo(), attached: false,
        rxUntil: 0, nextTx: 0, ntt: false, txCredits: TX_PER_SEC, creditsAt: 0, txPdus: 0, rxPdus: 0, partnerChanges: 0,
      });
    }
  }

  /** Our own period and timeout (what we ask the partner for). */
  get timeoutMs(): number {
    return LACP_TIMEOUT_FACTOR * (this.settings.fast ? LACP_FAST_MS : LACP_SLOW_MS);
  }

  set(settings: LacpSettings): void {
    this.settings = settings;
    for (const m of this.members) m.ntt = true;
  }

  actorState(i: number): number {
    const m = this.members[i];
    let s = S.AGGREGATION;
    if (this.settings.active) s |= S.ACTIVITY;
    if (this.settings.fast) s |= S.TIMEOUT;
    if (m.attached) s |= S.SYNC | S.COLLECTING | S.DISTRIBUTING;
    if (m.status === 'defaulted') s |= S.DEFAULTED;
    if (m.status === 'expired') s |= S.EXPIRED;
    return s;
  }

  /** Our actor TLV for member i (written into `into`, reused by the caller). */
  actorInfo(i: number, into: LacpInfo): LacpInfo {
    const m = this.members[i];
    into.sysPrio = this.actor.sysPrio;
    into.system = this.actor.system;
    into.key = this.actor.key;
    into.portPrio = m.portPrio;
    into.port = m.port;
    into.state = this.actorState(i);
    return into;
  }

  collecting(i: number): boolean {
    const m = this.members[i];
    return m.link && m.attached;
  }

  distributing(i: number): boolean {
    const m = this.members[i];
    return m.link && m.attached && (m.partner.state & (S.SYNC | S.COLLECTING)) === (S.SYNC | S.COLLECTING);
  }

  /** A member's link went down or came back. */
  setLink(i: number, up: boolean, now: number): void {
    const m = this.members[i];
    if (m.link === up) return;
    m.link = up;
    if (!up) {
      this.#default(m);
    } else {
      m.status = 'defaulted';
      m.ntt = true;
      m.nextTx = now;
    }
    this.#select();
  }

  /** A valid LACPDU arrived on member i. */
  receive(i: number, pdu: LacpduView, now: number): void {
    const m = this.members[i];
    if (!m.link) return;
    m.rxPdus++;
    const p = m.partner;
    const a = pdu.actor;
    if (p.system !== 0 && (p.system !== a.system || p.key !== a.key || p.port !== a.port)) m.partnerChanges++;
    p.sysPrio = a.sysPrio;
    p.system = a.system;
    p.key = a.key;
    p.portPrio = a.portPrio;
    p.port = a.port;
    // 802.1AX recordPDU: the partner's Synchronization counts only if it is in sync with us as we are.
    const us = pdu.partner;
    const seesUs = us.system === this.actor.system && us.sysPrio === this.actor.sysPrio && us.key === this.actor.key
      && us.port === m.port && us.portPrio === m.portPrio && (us.state & S.AGGREGATION) !== 0;
    p.state = seesUs ? a.state : a.state & ~S.SYNC;
    m.status = 'current';
    m.rxUntil = now + this.timeoutMs;
    // The partner's picture of our state is stale: tell it now (802.1AX update NTT).
    if (!seesUs || us.state !== this.actorState(i)) m.ntt = true;
    this.#select();
    // The partner now asks for the short timeout: the periodic machine switches to fast at once.
    if ((p.state & S.TIMEOUT) !== 0 && m.nextTx > now + LACP_FAST_MS) m.nextTx = now + LACP_FAST_MS;
  }

  /**
   * Advances timers to `now`: expiry, periodic and need-to-transmit PDUs, which go
   * to `send(i)` (the bond writes the frame from actorInfo and members[i].partner).
   */
  tick(now: number, send: (i: number) => void): void {
    for (let i = 0; i < this.members.length; i++) {
      const m = this.members[i];
      if (!m.link) continue;
      if (m.status !== 'defaulted' && now >= m.rxUntil) {
        if (m.status === 'current') {
          m.status = 'expired';
          m.partner.state = (m.partner.state & ~S.SYNC) | S.TIMEOUT;
          m.rxUntil = now + LACP_TIMEOUT_FACTOR * LACP_FAST_MS;
        } else {
          this.#default(m);
        }
        m.ntt = true;
        this.#select();
      }
    }
    for (let i = 0; i < this.members.length; i++) {
      const m = this.members[i];
      if (!m.link) continue;
      if (!this.settings.active && (m.partner.state & S.ACTIVITY) === 0) {
        m.ntt = false;
        continue;
      }
      if (now - m.creditsAt >= LACP_FAST_MS) {
        m.creditsAt = now;
        m.txCredits = TX_PER_SEC;
      }
      const periodic = now >= m.nextTx;
      if ((periodic || m.ntt) && m.txCredits > 0) {
        m.txCredits--;
        m.ntt = false;
        m.txPdus++;
        // No partner yet (defaulted): our own rate, so a returning partner is found within a second when fast.
        const fast = (m.partner.state & S.TIMEOUT) !== 0 || (m.status === 'defaulted' && this.settings.fast);
        m.nextTx = now + (fast ? LACP_FAST_MS : LACP_SLOW_MS);
        send(i);
      }
    }
  }

  view(i: number): LacpMemberView {
    const m = this.members[i];
    return {
      status: m.status, attached: m.attached, actorState: this.actorState(i), partner: { ...m.partner },
      txPdus: m.txPdus, rxPdus: m.rxPdus, partnerChanges: m.partnerChanges,
    };
  }

  #default(m: LacpMember): void {
    m.status = 'defaulted';
    const p = m.partner;
    p.sysPrio = 0; p.system = 0; p.key = 0; p.portPrio = 0; p.port = 0; p.state = 0;
  }

  #select(): void {
    let lead: LacpMember | undefined;
    for (const m of this.members) {
      if (!m.link || m.status !== 'current' || (m.partner.state & S.AGGREGATION) === 0) continue;
      if (lead === undefined || better(m, lead)) lead = m;
    }
    for (const m of this.members) {
      const want = lead !== undefined && m.link && m.status === 'current' && (m === lead
        || ((m.partner.state & S.AGGREGATION) !== 0 && m.partner.system === lead.partner.system && m.partner.key === lead.partner.key));
      if (want !== m.attached) {
        m.attached = want;
        m.ntt = true;
      }
    }
  }
}

function better(a: LacpMember, b: LacpMember): boolean {
  if (a.partner.sysPrio !== b.partner.sysPrio) return a.partner.sysPrio < b.partner.sysPrio;
  if (a.partner.system !== b.partner.system) return a.partner.system < b.partner.system;
  if (a.portPrio !== b.portPrio) return a.portPrio < b.portPrio;
  return a.port < b.port;
}
