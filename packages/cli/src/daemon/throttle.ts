/*
 * A log line for a repeated event (connections refused over a limit), at most one
 * per window however often the event happens: the first occurrence is logged at
 * once, the others of the window are counted and logged as one line at its end
 * (`count` = occurrences since the previous line). A flood of refused connections
 * thus costs the log one line per window, and none is lost from the count.
 *
 * The metrics worker thread runs this class from its source text
 * (metrics-worker.ts): it must stay self-contained (no imports, nothing from this
 * module's scope, only globals).
 */

export class LogThrottle {
  #pending = 0;
  #timer: NodeJS.Timeout | undefined;

  /** `emit(count)` writes the line; `windowMs` is the shortest time between two lines. */
  constructor(
    private readonly emit: (count: number) => void,
    private readonly windowMs = 10_000,
  ) {}

  hit(): void {
    if (this.#timer !== undefined) {
      this.#pending++;
      return;
    }
    this.emit(1);
    this.#arm();
  }

  #arm(): void {
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#pending > 0) {
        const n = this.#pending;
        this.#pending = 0;
        this.emit(n);
        this.#arm();
      }
    }, this.windowMs);
    this.#timer.unref();
  }

  /** Logs what is pending now and stops the timer (shutdown). */
  flush(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#pending > 0) this.emit(this.#pending);
    this.#pending = 0;
  }
}
