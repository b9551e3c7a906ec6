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
 *
 * The read share (`readShare`) says what a round's share counts: `bytes` (the
 * quantum above: length + 16 KiB a frame) or `frames` (`readFrames` frames per port
 * per round, whatever their size, as OVS's userspace datapath serves up to 32
 * packets per rx queue per pass). Frames has its own key rather than reusing
 * readQuantum: a size such as 256kb read as a frame count would silently mean no
 * limit, `readQuantum` stays bytes in the config, `show --json` and runtime.json,
 * and switching the unit back and forth keeps each value.
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

/** What a port's share of a read-loop round counts (`readShare`). */
export type ReadShare = 'bytes' | 'frames';
export const READ_SHARES: readonly ReadShare[] = ['bytes', 'frames'];
/**
 * Frames by default since s26: in four loaded runs of bench/fair (bench/README.md
 * "The frame share"), 16 frames a round kept C -> D TCP at 0.48-0.54x of quiet under
 * A's flood (bytes: 0.33-0.57x, medians over runs 0.535x against 0.385x) and a lower
 * noisy ping p50/p99 than bytes in three of the four; a fifth, every switch at nice
 * -10, tied them (0.44x, 0.46x). A quiet-machine rerun is due.
 * The VXLAN underlay keeps bytes (vxlan-config.ts).
 */
export const READ_SHARE_DEFAULT: ReadShare = 'frames';
/** `readFrames`: each port's frames per round under `readShare: frames` (netdev FAIR_FRAMES_*); 8, 16, 32, 64 swept. */
export const READ_FRAMES_DEFAULT = 16;
export const READ_FRAMES_MIN = 1;
export const READ_FRAMES_MAX = 4096;

/**
 * `readSparse`: sparse-first service (netdev setSparse; DRR++, as fq_codel's new-flow
 * list): a port whose queue emptied in its last service and becomes readable again is
 * served, one share, ahead of the ports that stayed backlogged, so a ping or an
 * ACK-clocked sender does not wait behind a flooder's share. On by default since the
 * quiet runs of bench/README.md "Sparse first (s27)": the flooded neighbour's ping p50
 * back at its quiet value, no cost on the main bench.
 */
export const READ_SPARSE_DEFAULT = true;

/** "on"/"off"/"true"/"false" or a boolean -> the setting; throws Error naming the key otherwise. */
export function parseReadSparse(v: unknown): boolean {
  if (typeof v === 'boolean') return v;
  const s = typeof v === 'string' ? v.trim().toLowerCase() : '';
  if (s === 'on' || s === 'true') return true;
  if (s === 'off' || s === 'false') return false;
  throw new Error(`readSparse must be on or off, got ${String(v)}`);
}

/** Why `v` is not a read share, or undefined when it is one. */
export function readShareProblem(v: unknown): string | undefined {
  return typeof v === 'string' && (READ_SHARES as readonly string[]).includes(v)
    ? undefined : `readShare must be ${READ_SHARES.join(' or ')}, got ${String(v)}`;
}

/** "frames" | "bytes" (any case) -> the share; throws Error naming the key otherwise. */
export function parseReadShare(v: unknown): ReadShare {
  const s = typeof v === 'string' ? v.trim().toLowerCase() : v;
  const why = readShareProblem(s);
  if (why !== undefined) throw new Error(why);
  return s as ReadShare;
}

/** Why `n` is not a frame quantum, or undefined when it is one. */
export function readFramesProblem(n: unknown): string | undefined {
  if (typeof n !== 'number' || !Number.isInteger(n) || (n !== 0 && (n < READ_FRAMES_MIN || n > READ_FRAMES_MAX))) {
    return `readFrames must be 0 (off) or ${READ_FRAMES_MIN}-${READ_FRAMES_MAX} frames, got ${String(n)}`;
  }
  return undefined;
}

/** 32, "32", "off" or 0 -> frames per round (0: off); throws Error naming the key otherwise. */
export function parseReadFrames(v: string | number): number {
  let n: number;
  if (typeof v === 'number') n = v;
  else if (/^\s*off\s*$/i.test(v)) n = 0;
  else if (/^\s*\d+\s*$/.test(v)) n = Number(v);
  else throw new Error(`bad readFrames '${v}': a number of frames (${READ_FRAMES_MIN}-${READ_FRAMES_MAX}) or off`);
  const why = readFramesProblem(n);
  if (why !== undefined) throw new Error(why);
  return n;
}

/** A bridge's read share as `show` prints it: "read-quantum 256kb" or "read-share frames 32". */
export function formatReadShare(share: ReadShare, quantum: number, frames: number): string {
  return share === 'frames' ? `read-share frames ${frames === 0 ? 'off' : frames}` : `read-quantum ${formatReadQuantum(quantum)}`;
}
