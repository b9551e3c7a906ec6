/*
 * Self-healing for device-backed ports (TAP, attach): when the device vanishes the
 * io reports its link down (the port stays in the bridge with a reason) and keeps
 * trying to get the device back, then reports the link up again.
 *
 * - TAP (the daemon owns it): recreated at once, same name and options, in the
 *   daemon's namespace; if that fails (the name is taken, the kernel still holds
 *   the old device ...) retried after 1 s, doubling up to 30 s (`backoffMs`).
 * - attach (someone else owns the interface): polled every 1 s until an interface
 *   of that name exists again, then the AF_PACKET socket is reopened.
 *
 * Timers are unref'd (they never keep the daemon alive) and cleared by close().
 */

/** First retry delay, and the cap, for recreating a TAP. */
export const RECOVER_FIRST_MS = 1000;
export const RECOVER_MAX_MS = 30_000;
/** How often an attach port looks for its interface. */
export const REATTACH_POLL_MS = 1000;

/**
 * Delay before attempt `attempt` (0 = the first, made at once): 0, 1 s, 2 s, 4 s ...
 * capped at `max`.
 */
export function backoffMs(attempt: number, first = RECOVER_FIRST_MS, max = RECOVER_MAX_MS): number {
  if (!(attempt > 0)) return 0;
  if (attempt > 30) return max;
  return Math.min(max, first * 2 ** (attempt - 1));
}

/**
 * Runs `attempt` until it returns true: at once, then after `delay(n)` for the nth
 * failure. One schedule at a time; `cancel` stops it.
 */
export class Retrier {
  #timer: NodeJS.Timeout | undefined;
  #failures = 0;
  #active = false;
  /** The last failure's message (for `show`), '' when none. */
  lastError = '';
  /** Epoch ms of the next attempt, 0 when none is pending. */
  nextAt = 0;

  constructor(
    readonly attempt: () => true | string,
    readonly delay: (failures: number) => number,
    readonly now: () => number = Date.now,
  ) {}

  get active(): boolean { return this.#active; }
  get failures(): number { return this.#failures; }

  /**
   * Begin (no-op if already running); the first attempt is made after
   * delay(failures): 0 for a fresh start, more to carry a backoff on (a device that
   * vanishes again right after it was recreated must not spin).
   */
  begin(failures = 0): void {
    if (this.#active) return;
    this.#active = true;
    this.#failures = failures;
    this.lastError = '';
    this.#schedule(this.delay(failures));
  }

  cancel(): void {
    this.#active = false;
    this.nextAt = 0;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #schedule(ms: number): void {
    this.nextAt = this.now() + ms;
    this.#timer = setTimeout(() => this.#run(), ms);
    this.#timer.unref();
  }

  #run(): void {
    this.#timer = undefined;
    if (!this.#active) return;
    let r: true | string;
    try {
      r = this.attempt();
    } catch (e) {
      r = (e as Error).message;
    }
    if (!this.#active) return; // cancelled from inside attempt
    if (r === true) {
      this.#active = false;
      this.nextAt = 0;
      this.lastError = '';
      return;
    }
    this.#failures++;
    this.lastError = r;
    this.#schedule(this.delay(this.#failures));
  }
}

/** Within this long of a recovery, a new loss continues the backoff instead of restarting it. */
export const FLAP_WINDOW_MS = 5000;

/** The backoff step to begin a recovery at: 0, or one more than last time if the device flapped. */
export function nextStreak(streak: number, sinceRecoveredMs: number): number {
  return sinceRecoveredMs < FLAP_WINDOW_MS ? streak + 1 : 0;
}

/** 'recreating the TAP, next try in 4 s (last error: ...)' for `show`. */
export function recoveringText(r: Retrier, what: string): string {
  const inS = r.nextAt > 0 ? Math.max(0, Math.ceil((r.nextAt - r.now()) / 1000)) : 0;
  return `${what}, next try in ${inS} s${r.lastError ? ` (last error: ${r.lastError})` : ''}`;
}
