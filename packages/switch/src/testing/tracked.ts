/*
 * A Uint8Array view that records every index read or written through it: the wire
 * fuzz tests check that a view never touches bytes outside the frame it was given.
 * Test support only (tsconfig excludes src/testing).
 */
/** A view of `buf` that records every index read or written through it. */
export function tracked(buf: Uint8Array): { view: Uint8Array; reads: number[]; writes: number[] } {
  const reads: number[] = [];
  const writes: number[] = [];
  const index = (p: string | symbol): number | undefined => {
    if (typeof p !== 'string' || p.length === 0) return undefined;
    const c = p.charCodeAt(0);
    if (!((c >= 48 && c <= 57) || c === 45)) return undefined; // digit or '-'
    const n = Number(p);
    return Number.isNaN(n) ? undefined : n;
  };
  const view = new Proxy(buf, {
    get(t, p) {
      const i = index(p);
      if (i !== undefined) {
        reads.push(i);
        return t[i];
      }
      const v = Reflect.get(t, p, t);
      return typeof v === 'function' ? v.bind(t) : v;
    },
    set(t, p, v) {
      const i = index(p);
      if (i !== undefined) {
        writes.push(i);
        t[i] = v;
        return true;
      }
      return Reflect.set(t, p, v, t);
    },
  });
  return { view, reads, writes };
}

export const outside = (idx: number[], lo: number, hi: number): number[] => [...new Set(idx.filter((i) => i < lo || i >= hi))];
