/*
 * The daemon's side of loop protection and per-port rate limits (switch: loop.ts,
 * police.ts): config and control-socket values to the bridge's, the defaults, and
 * what `show` says.
 *
 * Defaults, and why:
 * - BPDU guard is on for tap and socket ports, off for attach ports. A tap or socket
 *   port is a VM's NIC, an edge port: a BPDU there means the VM bridges two networks
 *   or someone closed a loop through it, which is why Cisco's "portfast bpduguard
 *   default" is the usual edge-port practice; Open vSwitch drops BPDUs by default
 *   (forward-bpdu=false) without shutting anything. An attach port is an uplink or a
 *   bridged LAN where a physical switch's BPDUs are normal (they flood, since vswitch
 *   runs no STP, as Linux does with STP off). `bpduGuard` in a port's config wins.
 * - The recovery time is 300 s, Cisco's errdisable recovery interval.
 * - MAC-flap detection: more than 10 moves of one MAC within a second block the loop
 *   port for 30 s. A migrating VM moves once, a VRRP or bond failover a few times; a
 *   loop moves the MACs it carries once per trip, thousands of times a second.
 * - No rate limit unless configured.
 * Runtime changes (control commands port.traffic, bridge.loop, port.recover) apply at
 * once and last until the file changes that setting (reload) or the daemon restarts:
 * they are not yet kept in runtime.json (the `port set` verb will keep them).
 */
import {
  type Bridge, DROP_REASONS, Drop, defaultBurst, formatRate, formatSize, LOOP_DEFAULTS, LOOP_LIMITS, type LoopSettings,
  parseRate, parseSize, type Port, RATE_LIMITS, RateError, type RateSpec,
} from '@vswitch/switch';
import { VswitchError } from '../errors.js';

/** A rate limit as the config and the control socket give it. */
export interface RateConf {
  rate: string | number;
  burst?: string | number;
  pps?: number;
}

/** The bridge's loop protection as the config gives it. */
export interface LoopConf {
  macFlapMoves?: number;
  macFlapHold?: number;
  bpduRecovery?: number;
}

/** The BPDU guard a port gets: its config's, else on for VM ports (tap, socket), off for attach ports. */
export function bpduGuardOf(type: string, configured: boolean | undefined): boolean {
  return configured ?? type !== 'attach';
}

/** A checked RateSpec of a config or control value; throws VswitchError EINVAL. */
export function rateSpec(c: RateConf, what: string): RateSpec {
  try {
    const rate = parseRate(c.rate);
    const burst = c.burst === undefined ? defaultBurst(rate) : parseSize(c.burst);
    if (c.pps !== undefined && (!Number.isInteger(c.pps) || c.pps < 1 || c.pps > RATE_LIMITS.maxPps)) {
      throw new RateError(`pps must be 1-${RATE_LIMITS.maxPps} packets per second, got ${c.pps}`);
    }
    return { rate, burst, ...(c.pps !== undefined ? { pps: c.pps } : {}) };
  } catch (e) {
    if (e instanceof RateError) throw new VswitchError('EINVAL', `${what}: ${e.message}`);
    throw e;
  }
}

export function loopSettings(c: LoopConf | undefined): LoopSettings {
  return {
    flapMoves: c?.macFlapMoves ?? LOOP_DEFAULTS.flapMoves,
    flapHoldSec: c?.macFlapHold ?? LOOP_DEFAULTS.flapHoldSec,
    bpduRecoverySec: c?.bpduRecovery ?? LOOP_DEFAULTS.bpduRecoverySec,
  };
}

/** Checks a control-socket loop setting (the schema checks the config's). */
export function checkLoop(c: LoopConf): void {
  const int = (v: unknown, min: number, max: number, name: string, unit: string): void => {
    if (v !== undefined && (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)) {
      throw new VswitchError('EINVAL', `${name} must be ${min}-${max}${unit}, got ${String(v)}`);
    }
  };
  int(c.macFlapMoves, 0, LOOP_LIMITS.flapMovesMax, 'macFlapMoves', ' moves per second (0: detection off)');
  int(c.macFlapHold, LOOP_LIMITS.holdSecMin, LOOP_LIMITS.holdSecMax, 'macFlapHold', ' seconds');
  int(c.bpduRecovery, LOOP_LIMITS.holdSecMin, LOOP_LIMITS.holdSecMax, 'bpduRecovery', ' seconds');
}

/** What `show` says of a port's loop protection and limits (JSON; the text view takes `blocked` and `limits`). */
export function trafficView(p: Port, nowMs = performance.now()): Record<string, unknown> {
  const out: Record<string, unknown> = { bpduGuard: p.bpduGuard };
  if (p.shut !== 0) {
    const reason = p.shut === Drop.bpdu_guard ? 'bpdu_guard' : 'loop';
    const left = Math.max(0, (p.shutUntil - nowMs) / 1000);
    const until = new Date(Date.now() + left * 1000);
    out.shut = { reason, since: new Date(Date.now() - (nowMs - p.shutAt)).toISOString(), until: until.toISOString(), remainingSec: Math.ceil(left) };
    out.blocked = `${reason === 'bpdu_guard' ? 'BPDU guard' : 'loop'}, back at ${until.toISOString().slice(11, 19)}Z (in ${Math.ceil(left)}s)`;
  }
  const limits: string[] = [];
  if (p.police !== undefined) {
    const s = p.police.spec;
    out.ingressRate = { rate: formatRate(s.rate), burst: formatSize(s.burst), ...(s.pps ? { pps: s.pps } : {}), bitsPerSec: s.rate, burstBytes: s.burst };
    limits.push(`in ${formatRate(s.rate)}/${formatSize(s.burst)}${s.pps ? ` ${s.pps}pps` : ''}`);
  }
  if (p.shaper !== undefined) {
    const s = p.shaper.spec;
    out.egressRate = {
      rate: formatRate(s.rate), burst: formatSize(s.burst), bitsPerSec: s.rate, burstBytes: s.burst,
      queueBytes: p.shaper.capacity, queuedFrames: p.shaper.backlog,
    };
    limits.push(`out ${formatRate(s.rate)}/${formatSize(s.burst)}`);
  }
  if (limits.length > 0) out.limits = limits.join(', ');
  return out;
}

export interface TrafficSet {
  bpduGuard?: boolean;
  /** A rate, or "off"; burst and pps go with the rate they follow. */
  ingressRate?: string | number;
  ingressBurst?: string | number;
  ingressPps?: number;
  egressRate?: string | number;
  egressBurst?: string | number;
}

/** Applies a control-socket port.traffic request to a running port; returns what changed, for the log. */
export function applyTrafficSet(br: Bridge, p: Port, set: TrafficSet): Record<string, unknown> {
  const changed: Record<string, unknown> = {};
  let ingress: RateSpec | null | undefined;
  let egress: RateSpec | null | undefined;
  if (set.ingressRate !== undefined) {
    ingress = set.ingressRate === 'off' ? null : rateSpec({ rate: set.ingressRate, burst: set.ingressBurst, pps: set.ingressPps }, 'ingress-rate');
    changed.ingressRate = ingress === null ? 'off' : { rate: formatRate(ingress.rate), burst: formatSize(ingress.burst), pps: ingress.pps };
  } else if (set.ingressBurst !== undefined || set.ingressPps !== undefined) {
    throw new VswitchError('EINVAL', 'ingress burst and pps go with ingress-rate');
  }
  if (set.egressRate !== undefined) {
    egress = set.egressRate === 'off' ? null : rateSpec({ rate: set.egressRate, burst: set.egressBurst }, 'egress-rate');
    changed.egressRate = egress === null ? 'off' : { rate: formatRate(egress.rate), burst: formatSize(egress.burst) };
  } else if (set.egressBurst !== undefined) {
    throw new VswitchError('EINVAL', 'egress burst goes with egress-rate');
  }
  if (set.bpduGuard !== undefined && typeof set.bpduGuard !== 'boolean') throw new VswitchError('EINVAL', 'bpduGuard must be true or false');
  if (set.bpduGuard === undefined && ingress === undefined && egress === undefined) {
    throw new VswitchError('EINVAL', 'nothing to set: bpduGuard, ingressRate (with ingressBurst, ingressPps), egressRate (with egressBurst)');
  }
  if (set.bpduGuard !== undefined) {
    br.setPortBpduGuard(p.name, set.bpduGuard);
    changed.bpduGuard = set.bpduGuard;
  }
  if (ingress !== undefined || egress !== undefined) br.setPortRate(p.name, ingress, egress);
  return changed;
}

/** The shut reasons as metric labels. */
export const SHUT_REASONS = ['bpdu_guard', 'loop'] as const;
export const shutReasonOf = (p: Port): string => (p.shut === 0 ? '' : DROP_REASONS[p.shut] === 'bpdu_guard' ? 'bpdu_guard' : 'loop');
