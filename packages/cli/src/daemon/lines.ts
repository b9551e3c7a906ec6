/*
 * Newline-delimited requests from a byte stream, pulled one at a time so that the
 * caller can stop between two lines (back-pressure: the control socket stops while
 * a client does not read its replies) and keep the rest for later. A line longer
 * than `maxBytes` (its bytes, newline excluded) is not buffered whole: as soon as
 * it is known to be too long, `next()` says TOO_LONG and the reader is done
 * (there is no telling where the next request would begin). What is held is at most
 * the unread lines of the last chunk plus `maxBytes`.
 */

export const TOO_LONG = Symbol('line too long');

const INITIAL = 4096;

export class LineReader {
  /** Bytes [#start, #end) are held; no newline in [#start, #scan). */
  #buf: Buffer = Buffer.allocUnsafe(INITIAL);
  #start = 0;
  #end = 0;
  #scan = 0;
  #failed = false;

  constructor(readonly maxBytes: number) {}

  /** Appends a chunk (copied: amortized O(1) per byte however small the chunks). */
  push(chunk: Uint8Array): void {
    if (this.#failed) return;
    if (this.#end + chunk.length > this.#buf.length) {
      const held = this.#end - this.#start;
      const need = held + chunk.length;
      const target = need <= this.#buf.length ? this.#buf : Buffer.allocUnsafe(Math.max(need, this.#buf.length * 2));
      this.#buf.copy(target, 0, this.#start, this.#end);
      this.#buf = target;
      this.#scan -= this.#start;
      this.#end = held;
      this.#start = 0;
    }
    this.#buf.set(chunk, this.#end);
    this.#end += chunk.length;
  }

  /** The next whole line (without its newline), undefined if none is complete yet, or TOO_LONG. */
  next(): string | undefined | typeof TOO_LONG {
    if (this.#failed) return TOO_LONG;
    const nl = this.#buf.subarray(0, this.#end).indexOf(0x0a, this.#scan);
    if (nl < 0) {
      this.#scan = this.#end;
      if (this.#end - this.#start > this.maxBytes) return this.#fail();
      if (this.#start === this.#end) this.#reset();
      return undefined;
    }
    if (nl - this.#start > this.maxBytes) return this.#fail();
    const line = this.#buf.toString('utf8', this.#start, nl);
    this.#start = this.#scan = nl + 1;
    return line;
  }

  /** Bytes held (unread lines and the partial one). */
  get buffered(): number {
    return this.#end - this.#start;
  }

  #fail(): typeof TOO_LONG {
    this.#failed = true;
    this.#reset();
    return TOO_LONG;
  }

  /** Empty: back to the small buffer, so a burst does not pin a large one. */
  #reset(): void {
    if (this.#buf.length > INITIAL) this.#buf = Buffer.allocUnsafe(INITIAL);
    this.#start = this.#end = this.#scan = 0;
  }
}
