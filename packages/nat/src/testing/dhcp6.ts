/*
 * DHCPv6 test support (unit and fuzz tests; tsconfig excludes src/testing): a
 * server on fd00:10::/64 with a 3-address pool, client messages built from a
 * few fields, and a reply read back into its options.
 */
import { formatIp6, parseIp6, read16, read32, write16, write32 } from '@vswitch/switch';
import { LeaseStore } from '../dhcp/leases.js';
import { Dhcp6Server, dhcp6Codec, type Dhcp6ServerConfig } from '../dhcp6/server.js';
import { Dhcp6Msg, Dhcp6Opt } from '../dhcp6/wire.js';

export const T0 = Date.UTC(2026, 0, 1);
const a6 = (s: string): Uint8Array => parseIp6(s)!;
const PREFIX = a6('fd00:10::');
const GW_MAC = 0x02aa00000001;

export const baseConfig = (over: Partial<Dhcp6ServerConfig> = {}): Dhcp6ServerConfig => ({
  name: 'net10', serverMac: GW_MAC, prefix: PREFIX, prefixLen: 64, gateway: a6('fd00:10::1'),
  pool: { start: a6('fd00:10::100'), end: a6('fd00:10::102') }, dns: [a6('fd00:10::1')], domains: ['vs.lan'],
  ...over,
});

export function newServer(over: Partial<Dhcp6ServerConfig> = {}, store?: LeaseStore): Dhcp6Server {
  const cfg = baseConfig(over);
  const base = (cfg.pool?.start ?? PREFIX).slice(0, 12);
  return new Dhcp6Server(cfg, store ?? LeaseStore.inMemory(cfg.name, dhcp6Codec(base)), T0);
}

/** A DUID-LLT for `mac`. */
export function duidLlt(mac: number): Uint8Array {
  const d = new Uint8Array(14);
  write16(d, 0, 1);
  write16(d, 2, 1);
  write32(d, 4, 12345);
  d[8] = Math.floor(mac / 0x10000000000) & 0xff;
  d[9] = Math.floor(mac / 0x100000000) & 0xff;
  write32(d, 10, mac >>> 0);
  return d;
}

export interface Msg {
  type: number;
  xid?: number;
  duid?: Uint8Array;
  server?: Uint8Array;
  iaid?: number;
  addr?: Uint8Array;
  rapid?: boolean;
  noIa?: boolean;
}

/** A client message. */
export function msg(m: Msg): Uint8Array {
  const parts: number[] = [m.type, 0, 0, m.xid ?? 7];
  const opt = (code: number, data: Uint8Array | number[]): void => {
    parts.push(code >> 8, code & 0xff, data.length >> 8, data.length & 0xff, ...data);
  };
  if (m.duid !== undefined) opt(Dhcp6Opt.CLIENTID, m.duid);
  if (m.server !== undefined) opt(Dhcp6Opt.SERVERID, m.server);
  opt(Dhcp6Opt.ELAPSED_TIME, [0, 0]);
  if (!m.noIa && m.type !== Dhcp6Msg.INFORMATION_REQUEST) {
    const ia = new Uint8Array(12 + (m.addr ? 28 : 0));
    write32(ia, 0, m.iaid ?? 1);
    if (m.addr) {
      write16(ia, 12, Dhcp6Opt.IAADDR);
      write16(ia, 14, 24);
      ia.set(m.addr, 16);
    }
    opt(Dhcp6Opt.IA_NA, ia);
  }
  if (m.rapid) opt(Dhcp6Opt.RAPID_COMMIT, []);
  opt(Dhcp6Opt.ORO, [0, 23, 0, 24]);
  return Uint8Array.from(parts);
}

/** The options of a reply, by code (first of each), and its IA_NA's address, lifetimes and status. */
export function readReply(out: Uint8Array, len: number) {
  const opts = new Map<number, Uint8Array>();
  for (let p = 4; p + 4 <= len;) {
    const code = read16(out, p);
    const l = read16(out, p + 2);
    if (!opts.has(code)) opts.set(code, out.slice(p + 4, p + 4 + l));
    p += 4 + l;
  }
  const status = (d: Uint8Array | undefined): number | undefined => (d === undefined ? undefined : read16(d, 0));
  const ia = opts.get(Dhcp6Opt.IA_NA);
  let addr: string | undefined;
  let valid: number | undefined;
  let iaStatus: number | undefined;
  if (ia !== undefined) {
    for (let p = 12; p + 4 <= ia.length;) {
      const code = read16(ia, p);
      const l = read16(ia, p + 2);
      if (code === Dhcp6Opt.IAADDR) {
        addr = formatIp6(ia, p + 4);
        valid = read32(ia, p + 24);
      }
      if (code === Dhcp6Opt.STATUS_CODE) iaStatus = read16(ia, p + 4);
      p += 4 + l;
    }
  }
  return { type: out[0], opts, addr, valid, iaStatus, status: status(opts.get(Dhcp6Opt.STATUS_CODE)), t1: ia ? read32(ia, 4) : undefined };
}

