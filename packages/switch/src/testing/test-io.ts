/**
 * The in-memory port the switch's unit tests drive a Bridge with: it records every
 * frame the bridge asks it to send (send2's two pieces joined, copied at call time
 * since the bridge reuses its scratch header) and keeps the PortRx so a test can
 * inject frames. Test support only: not compiled into dist (tsconfig excludes
 * src/testing).
 */
import { expect } from 'vitest';
import type { PortIo, PortKind, PortRx } from '../port.js';

export class TestIo implements PortIo {
  readonly kind: PortKind = 'tap';
  rx!: PortRx;
  sent: Uint8Array[] = [];
  closed = 0;
  /** When set, send/send2 report this instead of the length (e.g. -ENOBUFS). */
  fail: number | undefined;

  start(rx: PortRx): void {
    this.rx = rx;
  }

  send(buf: Uint8Array, off: number, len: number): number {
    if (this.fail !== undefined) return this.fail;
    this.sent.push(buf.slice(off, off + len));
    return len;
  }

  send2(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    if (this.fail !== undefined) return this.fail;
    const f = new Uint8Array(alen + blen);
    f.set(a.subarray(aoff, aoff + alen), 0);
    f.set(b.subarray(boff, boff + blen), alen);
    this.sent.push(f);
    return alen + blen;
  }

  close(): void {
    this.closed++;
  }

  describe(): Record<string, string | number | boolean> {
    return { kind: 'test' };
  }

  /** Delivers `frame` from inside a larger 0xa5-filled buffer, at a non-zero offset. */
  inject(frame: Uint8Array): void {
    const off = 5;
    const buf = new Uint8Array(off + frame.length + 7).fill(0xa5);
    buf.set(frame, off);
    const before = Uint8Array.from(buf);
    this.rx.frame(buf, off, frame.length);
    // The data plane never writes into the receive buffer.
    expect(buf).toEqual(before);
  }

  take(): Uint8Array[] {
    const s = this.sent;
    this.sent = [];
    return s;
  }
}
