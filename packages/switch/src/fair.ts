/*
 * The read quantum: each port's share of one round of the read loop, in bytes, a
 * bridge-wide setting (`readQuantum`). The scheduler itself runs in the addon
 * (packages/netdev/native/fair.c: deficit round robin over the ports with frames
 * waiting, one round per event-loop turn, each frame charged its length plus
 * FAIR_FRAME_COST bytes); this module holds the bridge's side: the default, the
 * limits, and the check. The numbers mirror @vswitch/netdev's FAIR_* constants
 * (the pure core does not load the addon).
 *
 * Default 256 KB: about 16 frames of 64 bytes or 3 TSO super-frames per port per
 * round, ~75 us of the loop's CPU for a port that floods (bench/README.md "Fair
 * share" has the measurements behind it). 0 turns the limit off (every readable
 * port drains up to 256 frames per round, as before).
 */

export const READ_QUANTUM_DEFAULT = 256 * 1024;
export const READ_QUANTUM_MIN = 16 * 1024;
export const READ_QUANTUM_MAX = 64 * 1024 * 1024;

/** Why `bytes` is not a read quantum, or undefined when it is one. */
export function readQuantumProblem(bytes: unknown): string | undefined {
  if (typeof bytes !== 'number' || !Number.isInteger(bytes) || (bytes !== 0 && (bytes < READ_QUANTUM_MIN || bytes > READ_QUANTUM_MAX))) {
    return `read quantum must be 0 (off) or ${READ_QUANTUM_MIN}-${READ_QUANTUM_MAX} bytes, got ${String(bytes)}`;
  }
  return undefined;
}

const UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1024, m: 1024 ** 2, mb: 1024 ** 2 };

/** "256kb", "1m", 65536, "off" or 0 -> bytes (0: off); throws Error with the reason when it is not a read quantum. */
export function parseReadQuantum(v: string | number): number {
  let bytes: number;
  if (typeof v === 'number') bytes = v;
  else if (/^\s*off\s*$/i.test(v)) bytes = 0;
  else {
    const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(v);
    const unit = m?.[2].toLowerCase();
    if (m === null || unit === undefined || !Object.hasOwn(UNITS, unit)) {
      throw new Error(`bad read quantum '${v}': bytes, or a number with a unit (b, k, kb, m, mb), or off`);
    }
    bytes = Math.round(Number(m[1]) * UNITS[unit]);
  }
  const why = readQuantumProblem(bytes);
  if (why !== undefined) throw new Error(why);
  return bytes;
}

/** 262144 -> "256kb", 0 -> "off". */
export function formatReadQuantum(bytes: number): string {
  if (bytes === 0) return 'off';
  if (bytes >= 1024 ** 2 && bytes % 1024 ** 2 === 0) return `${bytes / 1024 ** 2}mb`;
  if (bytes % 1024 === 0) return `${bytes / 1024}kb`;
  return `${bytes}b`;
}
