/*
 * Loop protection without spanning tree: BPDU guard and MAC-flap loop detection.
 * vswitch runs no STP (a VM bridge with STP stalls every new TAP for 30 s), so it
 * protects itself from the two ways a loop shows:
 *
 * - BPDU guard (per port): a port that receives an STP/RSTP BPDU (wire/stp.ts) has a
 *   bridge behind it, which on an edge port (a VM's NIC) means the VM bridges two
 *   networks, or a cable closes a loop. The port is shut: frames in and out are
 *   dropped (`bpdu_guard`) until `bpduRecoveryMs` has passed (Cisco's bpduguard with
 *   errdisable recovery; 300 s, its recovery interval), logged once when it shuts
 *   and once when it comes back. A frame to the bridge group address that is not a
 *   BPDU is dropped (`bpdu_invalid`) without shutting anything: garbage is not a
 *   bridge. A port without the guard floods BPDUs as before (Linux with STP off).
 * - MAC-flap detection (per bridge): in a loop the same source MAC comes back on
 *   other ports than its own, once per trip round the loop: thousands of moves a
 *   second where a migrating VM makes one. The MAC table keeps each entry's moves in
 *   a one-second window and its home, the last port it stayed on for a second
 *   (fdb.ts "Moves"); when a MAC moves more than `flapMoves` times in its window, the
 *   port it moved to is blocked for `flapHoldMs` (`loop_blocked`; `port_shut` out), or, when it moved
 *   back home, the port it came from: the loop port, never the MAC's own. Blocking
 *   a port flushes its MAC entries (they may point into the loop), puts the MAC
 *   back on its home port, and voids every flap window opened so far, so the MACs
 *   that circled the same loop do not block its other ports on their last trips.
 *   If the loop is still there when the hold ends, the port is blocked again within
 *   a few frames.
 *
 * Cost: the guard's check runs only for frames whose first byte is 0x01 on ports with
 * the guard (gate.ts); the flap check only on moves. Events are built only when a
 * port shuts or comes back, never per frame.
 */
import { Drop } from './drop.js';
import type { Fdb } from './fdb.js';
import type { Port } from './port.js';
import { GATE_SHUT, updateGate } from './gate.js';

export const LOOP_DEFAULTS = Object.freeze({ flapMoves: 10, flapHoldSec: 30, bpduRecoverySec: 300 });
export const LOOP_LIMITS = Object.freeze({ flapMovesMax: 1_000_000, holdSecMin: 1, holdSecMax: 86_400 });

export interface LoopSettings {
  /** Moves of one MAC within a second above which its loop port is blocked; 0 = detection off. */
  flapMoves: number;
  flapHoldSec: number;
  bpduRecoverySec: number;
}

export type LoopEvent =
  | { event: 'port_shut'; port: string; reason: 'bpdu_guard'; holdSec: number }
  | { event: 'port_shut'; port: string; reason: 'loop'; holdSec: number; mac: string; vlan: number; moves: number; home: string }
  /** `dropped`: frames from and to the port while it was shut (the BPDU that shut it included). */
  | { event: 'port_recovered'; port: string; reason: 'bpdu_guard' | 'loop'; dropped: number };

export class LoopGuard {
  flapMoves: number = LOOP_DEFAULTS.flapMoves;
  flapHoldMs: number = LOOP_DEFAULTS.flapHoldSec * 1000;
  bpduRecoveryMs: number = LOOP_DEFAULTS.bpduRecoverySec * 1000;
  /** Ports shut now (the sweep looks at ports only while there are some). */
  shutCount = 0;

  constructor(private readonly emit: (e: LoopEvent) => void, private readonly macText: (mac: number) => string) {}

  settings(): LoopSettings {
    return { flapMoves: this.flapMoves, flapHoldSec: this.flapHoldMs / 1000, bpduRecoverySec: this.bpduRecoveryMs / 1000 };
  }

  /** Applies what `s` names; checked by the caller (config schema, control handler). Ports already shut keep their time. */
  set(s: Partial<LoopSettings>): void {
    if (s.flapMoves !== undefined) this.flapMoves = s.flapMoves;
    if (s.flapHoldSec !== undefined) this.flapHoldMs = s.flapHoldSec * 1000;
    if (s.bpduRecoverySec !== undefined) this.bpduRecoveryMs = s.bpduRecoverySec * 1000;
  }

  /** A BPDU arrived on a guarded port: shut it. */
  bpdu(port: Port, now: number): void {
    port.bpduShutdowns++;
    this.#shut(port, Drop.bpdu_guard, now, this.bpduRecoveryMs);
    this.emit({ event: 'port_shut', port: port.name, reason: 'bpdu_guard', holdSec: this.bpduRecoveryMs / 1000 });
  }

  /**
   * After Learn.MOVED of `mac` to `port` whose window count passed flapMoves: blocks
   * the loop port. Returns true when that is `port` itself (the frame is dropped).
   */
  flap(fdb: Fdb, ports: readonly (Port | undefined)[], port: Port, vid: number, mac: number, now: number): boolean {
    const m = fdb.lastMove;
    const victim = port.id !== m.home ? port : ports[m.from];
    if (victim === undefined || victim.shut !== 0) return false;
    victim.loopBlocks++;
    this.#shut(victim, Drop.loop_blocked, now, this.flapHoldMs);
    fdb.flushPort(victim.id);
    fdb.flapEpoch = now;
    const home = ports[m.home];
    if (home !== undefined && home.up && home.shut === 0) fdb.learn(vid, mac, home.id, now);
    this.emit({
      event: 'port_shut', port: victim.name, reason: 'loop', holdSec: this.flapHoldMs / 1000,
      mac: this.macText(mac), vlan: vid, moves: m.flaps, home: home?.name ?? '',
    });
    return victim === port;
  }

  /** Brings back the ports whose time is up (the bridge's once-a-second sweep). */
  sweep(ports: Iterable<Port>, now: number): void {
    if (this.shutCount === 0) return;
    for (const p of ports) if (p.shut !== 0 && now >= p.shutUntil) this.recover(p);
  }

  /** Opens a shut port now (its time is up, or the operator says so). */
  recover(p: Port): boolean {
    if (p.shut === 0) return false;
    const reason = p.shut === Drop.bpdu_guard ? 'bpdu_guard' : 'loop';
    const dropped = p.drops[p.shut] + p.drops[Drop.port_shut] - p.shutDrops;
    p.shut = 0;
    p.shutUntil = 0;
    p.gate &= ~GATE_SHUT;
    this.shutCount--;
    this.emit({ event: 'port_recovered', port: p.name, reason, dropped });
    return true;
  }

  /** A port leaves the bridge: it no longer counts as shut. */
  forget(p: Port): void {
    if (p.shut !== 0) this.shutCount--;
    p.shut = 0;
  }

  #shut(p: Port, reason: number, now: number, holdMs: number): void {
    if (p.shut === 0) this.shutCount++;
    p.shut = reason;
    p.shutAt = now;
    p.shutUntil = now + holdMs;
    p.shutDrops = p.drops[reason] + p.drops[Drop.port_shut];
    updateGate(p);
  }
}
