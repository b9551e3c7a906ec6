/*
 * Ethernet II header view: free functions over (buf, off), no object per frame.
 * MAC addresses travel as 48-bit integers in a JS number (exact below 2^53), so a
 * MAC table lookup is a Map<number> get with no string or Buffer per frame.
 * Callers check `len >= ETH_HLEN` once at ingress; the accessors trust the bytes.
 */
const F = { DST: 0, SRC: 6, TYPE: 12, PAYLOAD: 14 } as const;
/** The header's offsets (module-local as F for the accessors: bytes.ts says why). */
export const ETH = F;
export const ETH_HLEN = 14;
export const ETH_ALEN = 6;

export const ETHERTYPE = {
  IPV4: 0x0800,
  ARP: 0x0806,
  VLAN: 0x8100,
  IPV6: 0x86dd,
  QINQ: 0x88a8,
  QINQ_OLD: 0x9100,
} as const;

/** The 48-bit MAC at buf[off..off+6) as an integer. */
export function readMac(buf: Uint8Array, off: number): number {
  return ((buf[off] << 8) | buf[off + 1]) * 0x100000000 +
    (((buf[off + 2] << 24) | (buf[off + 3] << 16) | (buf[off + 4] << 8) | buf[off + 5]) >>> 0);
}

export function writeMac(buf: Uint8Array, off: number, mac: number): void {
  const hi = Math.floor(mac / 0x100000000);
  const lo = mac >>> 0;
  buf[off] = hi >>> 8;
  buf[off + 1] = hi & 0xff;
  buf[off + 2] = lo >>> 24;
  buf[off + 3] = (lo >>> 16) & 0xff;
  buf[off + 4] = (lo >>> 8) & 0xff;
  buf[off + 5] = lo & 0xff;
}

/**
 * Writes an Ethernet header at buf[off]: dst, src, a C-tag for `vid` when vid >= 0,
 * then `type`. Returns the offset of the payload (off + 14, or off + 18 tagged).
 */
export function writeEthHeader(buf: Uint8Array, off: number, dst: number, src: number, type: number, vid = -1): number {
  writeMac(buf, off + F.DST, dst);
  writeMac(buf, off + F.SRC, src);
  let t = off + F.TYPE;
  if (vid >= 0) {
    buf[t] = ETHERTYPE.VLAN >>> 8;
    buf[t + 1] = ETHERTYPE.VLAN & 0xff;
    buf[t + 2] = (vid >>> 8) & 0x0f;
    buf[t + 3] = vid & 0xff;
    t += 4;
  }
  buf[t] = type >>> 8;
  buf[t + 1] = type & 0xff;
  return t + 2;
}

export const dstMac = (buf: Uint8Array, off: number): number => readMac(buf, off + F.DST);
export const srcMac = (buf: Uint8Array, off: number): number => readMac(buf, off + F.SRC);
export const etherType = (buf: Uint8Array, off: number): number => (buf[off + F.TYPE] << 8) | buf[off + F.TYPE + 1];

/** Group bit of the first octet: multicast and broadcast. */
export const isGroupAt = (buf: Uint8Array, off: number): boolean => (buf[off] & 1) === 1;

export const MAC_BROADCAST = 0xffffffffffff;

/** Group bit of a MAC held as a number. */
export const isGroupMac = (mac: number): boolean => (Math.floor(mac / 0x10000000000) & 1) === 1;

/**
 * IEEE 802.1D reserved link-local group 01:80:C2:00:00:0X. Bridges must not
 * forward these (pause, LACP, 802.1X, LLDP ...), with one exception the caller
 * decides: STP BPDUs (…:00) are flooded when the bridge runs no STP, as Linux does,
 * so that loops between switches can still be detected by those that do.
 */
export function linkLocalGroup(buf: Uint8Array, off: number): number {
  if (buf[off] !== 0x01 || buf[off + 1] !== 0x80 || buf[off + 2] !== 0xc2 ||
      buf[off + 3] !== 0 || buf[off + 4] !== 0 || (buf[off + 5] & 0xf0) !== 0) return -1;
  return buf[off + 5];
}

/** "aa:bb:cc:dd:ee:ff" (also '-' separated, any case) to the integer, or -1 if malformed. */
export function parseMac(text: string): number {
  const m = /^([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})$/i.exec(text.trim());
  if (!m) return -1;
  let v = 0;
  for (let i = 1; i <= 6; i++) v = v * 256 + parseInt(m[i], 16);
  return v;
}

export function formatMac(mac: number): string {
  const out: string[] = [];
  for (let i = 5; i >= 0; i--) out.push(Math.floor(mac / 2 ** (8 * i) % 256).toString(16).padStart(2, '0'));
  return out.join(':');
}
