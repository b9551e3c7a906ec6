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
 * Runtime changes (`vswitch port set PORT bpdu-guard|ingress-rate|egress-rate`,
 * `vswitch bridge set BR mac-flap-moves|mac-flap-hold|bpdu-recovery`; control commands
 * port.set or port.traffic, bridge.loop) are runtime-state entries like every CLI
 * change (state.ts): kept in runtime.json, over the file's value until the file
 * changes that setting. Limits are kept as RateValues (numbers), so the file's
 * "100mbit" and the CLI's 100000000 compare equal. `port recover` (port.recover)
 * opens a shut port now and keeps nothing.
 */
import {
  DROP_REASONS, Drop, defaultBurst, formatRate, formatSize, LOOP_DEFAULTS, LOOP_LIMITS, type LoopSettings,
  parseRate, parseSize, type Port, RATE_LIMITS, RateError, type RateSpec, READ_FRAMES_DEFAULT, READ_QUANTUM_DEFAULT, READ_SHARE_DEFAULT,
  READ_SPARSE_DEFAULT, readFramesProblem, readQuantumProblem, type ReadShare, readShareProblem,
} from '@vswitch/switch';
import { VswitchError } from '../errors.js';

/** A rate limit as the config and the control socket give it. */
export interface RateConf {
  rate: string | number;
  burst?: string | number;
  pps?: number;
}

/**
 * The bridge settings `bridge set` changes: loop protection as the config gives it
 * (`loopProtection`), and the read share (the bridge's `readShare`, bytes or frames;
 * `readQuantum`, in bytes, and `readFrames`, frames; 0 = off: switch fair.ts), kept
 * together because they are set and kept alike.
 */
export interface LoopConf {
  macFlapMoves?: number;
  macFlapHold?: number;
  bpduRecovery?: number;
  readQuantum?: number;
  readShare?: ReadShare;
  readFrames?: number;
  readSparse?: boolean;
}

/** A file bridge's LoopConf: its loopProtection and its read share keys. */
export function fileLoopConf(b: { loopProtection?: LoopConf; readQuantum?: number; readShare?: ReadShare; readFrames?: number; readSparse?: boolean }): LoopConf | undefined {
  if (b.readQuantum === undefined && b.readShare === undefined && b.readFrames === undefined && b.readSparse === undefined) return b.loopProtection;
  return {
    ...b.loopProtection,
    ...(b.readQuantum !== undefined ? { readQuantum: b.readQuantum } : {}),
    ...(b.readShare !== undefined ? { readShare: b.readShare } : {}),
    ...(b.readFrames !== undefined ? { readFrames: b.readFrames } : {}),
    ...(b.readSparse !== undefined ? { readSparse: b.readSparse } : {}),
  };
}

/** The BPDU guard a port gets: its config's, else on for VM ports (tap, socket), off for attach ports. */
export function bpduGuardOf(type: string, configured: boolean | undefined): boolean {
  return configured ?? (type !== 'attach' && type !== 'bond');
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

/** The loop settings `bridge set` changes, each a runtime-state entry of its own. */
export const LOOP_KEYS = ['macFlapMoves', 'macFlapHold', 'bpduRecovery', 'readQuantum', 'readShare', 'readFrames', 'readSparse'] as const;
export type LoopKey = typeof LOOP_KEYS[number];

/** A bridge's loop settings in force for its config (absent keys: the defaults), in the config's names. */
export function loopConf(c: LoopConf | undefined): Required<LoopConf> {
  const s = loopSettings(c);
  return {
    macFlapMoves: s.flapMoves, macFlapHold: s.flapHoldSec, bpduRecovery: s.bpduRecoverySec, readQuantum: c?.readQuantum ?? READ_QUANTUM_DEFAULT,
    readShare: c?.readShare ?? READ_SHARE_DEFAULT, readFrames: c?.readFrames ?? READ_FRAMES_DEFAULT,
    readSparse: c?.readSparse ?? READ_SPARSE_DEFAULT,
  };
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
  const why = (c.readQuantum === undefined ? undefined : readQuantumProblem(c.readQuantum))
    ?? (c.readShare === undefined ? undefined : readShareProblem(c.readShare))
    ?? (c.readFrames === undefined ? undefined : readFramesProblem(c.readFrames));
  if (why !== undefined) throw new VswitchError('EINVAL', why);
  if (c.readSparse !== undefined && typeof c.readSparse !== 'boolean') throw new VswitchError('EINVAL', `readSparse must be true or false, got ${String(c.readSparse)}`);
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
      rate: formatRate(s.rate), burst: formatSize(s.burst), ...(s.pps ? { pps: s.pps } : {}), bitsPerSec: s.rate, burstBytes: s.burst,
      queueBytes: p.shaper.capacity, queuedFrames: p.shaper.backlog,
    };
    limits.push(`out ${formatRate(s.rate)}/${formatSize(s.burst)}${s.pps ? ` ${s.pps}pps` : ''}`);
  }
  if (limits.length > 0) out.limits = limits.join(', ');
  return out;
}

/**
 * A rate limit as the runtime state keeps it: "off", or the RateSpec in numbers
 * (bits/s, bytes, packets/s), default burst spelled out, so that "100mbit" in the
 * file and 100000000 from the CLI are the same value (state.ts compares values).
 */
export type RateValue = 'off' | { rate: number; burst: number; pps?: number };

/** A port's configured limit as a RateValue (a config value is checked by the schema already). */
export function rateValue(c: RateConf | undefined, what: string): RateValue {
  if (c === undefined) return 'off';
  const s = rateSpec(c, what);
  return { rate: s.rate, burst: s.burst, ...(s.pps !== undefined ? { pps: s.pps } : {}) };
}

/** Why `v` is no RateValue (runtime.json is read back), or undefined. */
export function rateValueProblem(v: unknown): string | undefined {
  if (v === 'off') return undefined;
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return 'not "off" or {rate, burst}';
  const o = v as Record<string, unknown>;
  const extra = Object.keys(o).filter((k) => k !== 'rate' && k !== 'burst' && k !== 'pps');
  if (extra.length > 0) return `unknown key ${extra[0]}`;
  if (typeof o.rate !== 'number' || typeof o.burst !== 'number') return 'rate and burst must be numbers';
  try {
    rateSpec({ rate: o.rate, burst: o.burst, pps: o.pps as number | undefined }, 'rate');
  } catch (e) {
    return (e as Error).message;
  }
  return undefined;
}

/** What a RateValue says, as tc would: "100mbit burst 1mb pps 20000", "off". */
export function rateText(v: RateValue): string {
  return v === 'off' ? 'off' : `${formatRate(v.rate)} burst ${formatSize(v.burst)}${v.pps ? ` pps ${v.pps}` : ''}`;
}

export interface TrafficSet {
  bpduGuard?: boolean;
  /** A rate, or "off"; burst and pps go with the rate they follow. */
  ingressRate?: string | number;
  ingressBurst?: string | number;
  ingressPps?: number;
  egressRate?: string | number;
  egressBurst?: string | number;
  egressPps?: number;
}

/** The port settings of a control request's traffic arguments, checked (VswitchError EINVAL naming the word). */
export function trafficSettings(set: TrafficSet): { bpduGuard?: boolean; ingressRate?: RateValue; egressRate?: RateValue } {
  const out: { bpduGuard?: boolean; ingressRate?: RateValue; egressRate?: RateValue } = {};
  if (set.ingressRate !== undefined) {
    if (set.ingressRate === 'off' && (set.ingressBurst !== undefined || set.ingressPps !== undefined)) {
      throw new VswitchError('EINVAL', 'ingress-rate off takes no burst or pps');
    }
    out.ingressRate = set.ingressRate === 'off' ? 'off' : rateValue({ rate: set.ingressRate, burst: set.ingressBurst, pps: set.ingressPps }, 'ingress-rate');
  } else if (set.ingressBurst !== undefined || set.ingressPps !== undefined) {
    throw new VswitchError('EINVAL', 'ingress burst and pps go with ingress-rate');
  }
  if (set.egressRate !== undefined) {
    if (set.egressRate === 'off' && (set.egressBurst !== undefined || set.egressPps !== undefined)) {
      throw new VswitchError('EINVAL', 'egress-rate off takes no burst or pps');
    }
    out.egressRate = set.egressRate === 'off' ? 'off' : rateValue({ rate: set.egressRate, burst: set.egressBurst, pps: set.egressPps }, 'egress-rate');
  } else if (set.egressBurst !== undefined || set.egressPps !== undefined) {
    throw new VswitchError('EINVAL', 'egress burst and pps go with egress-rate');
  }
  if (set.bpduGuard !== undefined) {
    if (typeof set.bpduGuard !== 'boolean') throw new VswitchError('EINVAL', 'bpduGuard must be true or false');
    out.bpduGuard = set.bpduGuard;
  }
  return out;
}

/** The shut reasons as metric labels. */
export const SHUT_REASONS = ['bpdu_guard', 'loop'] as const;
export const shutReasonOf = (p: Port): string => (p.shut === 0 ? '' : DROP_REASONS[p.shut] === 'bpdu_guard' ? 'bpdu_guard' : 'loop');
