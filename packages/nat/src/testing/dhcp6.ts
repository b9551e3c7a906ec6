/*
 * DHCPv6 test support (unit and fuzz tests; tsconfig excludes src/testing): a
 * server on fd00:10::/64 with a 3-address pool, client messages built from a
 * few fields, and a reply read back into its options.
 */
import { formatIp6, parseIp6, read16, read32 } from '@vswitch/switch';
import { LeaseStore } from '../dhcp/leases.js';
import { Dhcp6Server, dhcp6Codec, type Dhcp6ServerConfig } from '../dhcp6/server.js';
import {
  DHCP6_OPT, Dhcp6Msg, Dhcp6Opt, Dhcp6Writer, IA_NA, IAADDR, STATUS, duidLlt as wireDuidLlt,
} from '../dhcp6/wire.js';

/** The message header: type and transaction id. */
const DHCP6_HEADER = DHCP6_OPT.DATA;

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
export const duidLlt = (mac: number): Uint8Array => wireDuidLlt(mac, 12345);

export interface Msg {
  type: number;
  xid?: number;
  duid?: Uint8Array;
  server?: Uint8Array;
  iaid?: number;
  addr?: Uint8Array;
  rapid?: boolean;
  noIa?: boolean;
  /** Client FQDN (39): flags 0 and this name in DNS wire format (a trailing dot: fully qualified). */
  fqdn?: string;
  /** The Client FQDN option's flags byte (default 0). */
  fqdnFlags?: number;
  /** Several IA_NAs (instead of the one of `iaid`/`addr`). */
  ias?: { iaid: number; addr?: Uint8Array }[];
}

/** A client message, written with the server's own writer. */
export function msg(m: Msg): Uint8Array {
  const b = new Uint8Array(1500);
  const w = new Dhcp6Writer(b, 0, b.length);
  w.header(m.type, m.xid ?? 7);
  if (m.duid !== undefined) w.bytes(Dhcp6Opt.CLIENTID, m.duid);
  if (m.server !== undefined) w.bytes(Dhcp6Opt.SERVERID, m.server);
  w.bytes(Dhcp6Opt.ELAPSED_TIME, Uint8Array.of(0, 0));
  if (!m.noIa && m.type !== Dhcp6Msg.INFORMATION_REQUEST) {
    for (const ia of m.ias ?? [{ iaid: m.iaid ?? 1, addr: m.addr }]) {
      w.beginIaNa(ia.iaid, 0, 0);
      if (ia.addr) w.iaAddr(ia.addr, 0, 0);
      w.endIaNa();
    }
  }
  if (m.rapid) w.empty(Dhcp6Opt.RAPID_COMMIT);
  if (m.fqdn !== undefined) {
    const labels = m.fqdn.split('.');
    const bytes = [m.fqdnFlags ?? 0];
    labels.forEach((l, i) => { if (l !== '' || i < labels.length - 1) bytes.push(l.length, ...Buffer.from(l)); });
    if (m.fqdn.endsWith('.')) bytes.push(0);
    w.bytes(Dhcp6Opt.CLIENT_FQDN, Uint8Array.from(bytes));
  }
  w.bytes(Dhcp6Opt.ORO, Uint8Array.of(0, Dhcp6Opt.DNS_SERVERS, 0, Dhcp6Opt.DOMAIN_LIST));
  return b.slice(0, w.length);
}

/** The options at buf[p, end), by code (the first of each). */
function options(buf: Uint8Array, p: number, end: number): Map<number, Uint8Array> {
  const opts = new Map<number, Uint8Array>();
  while (p + DHCP6_OPT.DATA <= end) {
    const code = read16(buf, p + DHCP6_OPT.CODE);
    const l = read16(buf, p + DHCP6_OPT.LEN);
    if (!opts.has(code)) opts.set(code, buf.slice(p + DHCP6_OPT.DATA, p + DHCP6_OPT.DATA + l));
    p += DHCP6_OPT.DATA + l;
  }
  return opts;
}

/** The options of a reply, by code (first of each), and its IA_NA's address, lifetimes and status. */
export function readReply(out: Uint8Array, len: number) {
  const opts = options(out, DHCP6_HEADER, len);
  const status = (d: Uint8Array | undefined): number | undefined => (d === undefined ? undefined : read16(d, STATUS.CODE));
  const ia = opts.get(Dhcp6Opt.IA_NA);
  const inIa = ia === undefined ? new Map<number, Uint8Array>() : options(ia, IA_NA.OPTIONS, ia.length);
  const a = inIa.get(Dhcp6Opt.IAADDR);
  // Every IA_NA, in order.
  const ias: { iaid: number; addr?: string; valid?: number; status?: number }[] = [];
  for (let p = DHCP6_HEADER; p + DHCP6_OPT.DATA <= len; p += DHCP6_OPT.DATA + read16(out, p + DHCP6_OPT.LEN)) {
    if (read16(out, p + DHCP6_OPT.CODE) !== Dhcp6Opt.IA_NA) continue;
    const d = out.subarray(p + DHCP6_OPT.DATA, p + DHCP6_OPT.DATA + read16(out, p + DHCP6_OPT.LEN));
    const o = options(d, IA_NA.OPTIONS, d.length);
    const ad = o.get(Dhcp6Opt.IAADDR);
    ias.push({ iaid: read32(d, IA_NA.IAID), addr: ad ? formatIp6(ad, IAADDR.ADDR) : undefined, valid: ad ? read32(ad, IAADDR.VALID) : undefined, status: status(o.get(Dhcp6Opt.STATUS_CODE)) });
  }
  return {
    ias,
    type: out[0], opts, addr: a ? formatIp6(a, IAADDR.ADDR) : undefined, valid: a ? read32(a, IAADDR.VALID) : undefined,
    iaStatus: status(inIa.get(Dhcp6Opt.STATUS_CODE)), status: status(opts.get(Dhcp6Opt.STATUS_CODE)), t1: ia ? read32(ia, IA_NA.T1) : undefined,
  };
}
