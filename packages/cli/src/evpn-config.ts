/*
 * The `evpn` section of the config file: BGP EVPN (RFC 7432, RFC 8365) as the
 * control plane of the `vxlan` section's VNIs, through GoBGP (daemon/evpn/). Every
 * VNI of the `vxlan` section takes part (as FRR's advertise-all-vni); `vnis` only
 * overrides the route distinguisher and route targets FRR would derive (RD
 * router-id:n, RT ASN:VNI, daemon/evpn/routes.ts).
 */
import { z } from 'zod';
import { parseIp4 } from '@vswitch/switch';
import { DUP_DETECT_DEFAULTS } from './daemon/evpn/dup-detect.js';

const Ip4 = z.string().refine((s) => parseIp4(s) >= 0, 'must be an IPv4 address like 192.0.2.1');
const Asn = z.number({ error: 'must be an AS number (1-4294967295)' }).int().min(1).max(4294967295);
const Rt = z.string().regex(/^\d{1,5}:\d{1,10}$/, 'must be a route target ASN:N like 65000:100').refine((s) => {
  const [a, n] = s.split(':').map(Number);
  return a <= 65535 && n <= 4294967295;
}, 'ASN must be 0-65535 and N 0-4294967295 (two-octet-AS route target)');
const Rd = z.string().regex(/^(\d+\.\d+\.\d+\.\d+|\d{1,5}):\d{1,5}$/, 'must be a route distinguisher IP:N or ASN:N (N 0-65535)');

/**
 * maxPrefixes: EVPN routes one neighbour may hold in gobgpd before gobgpd closes its
 * session (daemon/evpn/prefix-limit.ts). 20,000: above what a full maxRemoteMacs (4096)
 * takes from one peer at 4 routes per MAC (MAC only, MAC/IPv4, MAC/IPv6 global and
 * link-local: 16,384) plus its type-3 routes, and low enough that gobgpd, whose cost per
 * received MAC route grows with its RIB (README "BGP EVPN"), judges that many in minutes,
 * not hours. maxPrefixesRestart: seconds the session stays down after that (0: until a
 * reload changes the neighbour's limit or the daemon restarts), as FRR's
 * `maximum-prefix N restart M`.
 */
export const EVPN_DEFAULTS = Object.freeze({ maxRemoteMacs: 4096, bgpPort: 179, maxPrefixes: 20_000, maxPrefixesRestart: 300 });

const Neighbor = z.strictObject({
  address: Ip4,
  remoteAs: Asn,
  /** EVPN routes this neighbour may send, at most (0: no limit); past it gobgpd closes the session (Cease, maximum prefixes). */
  maxPrefixes: z.number().int().min(0).max(100_000_000).default(EVPN_DEFAULTS.maxPrefixes),
  /** Seconds the session stays down after the limit closed it (0: until a reload changes maxPrefixes). */
  maxPrefixesRestart: z.number().int().min(0).max(86_400).default(EVPN_DEFAULTS.maxPrefixesRestart),
});

export const EvpnSchema = z.strictObject({
  /** The local AS. */
  asn: Asn,
  /** BGP router id; default: the vxlan section's local address. */
  routerId: Ip4.optional(),
  neighbors: z.array(Neighbor).default([]),
  /**
   * `managed` (default): the daemon runs its own gobgpd (gRPC on a loopback port of
   * its own, BGP on the underlay address); `{ address }`: an operator's gobgpd's gRPC API.
   */
  gobgpd: z.union([z.literal('managed'), z.strictObject({ address: z.string().regex(/^[^\s]+:\d{1,5}$/, 'must be HOST:PORT') })]).default('managed'),
  /** The managed gobgpd's BGP port (on the underlay address). */
  bgpPort: z.number().int().min(1).max(65535).default(EVPN_DEFAULTS.bgpPort),
  /** Where the GoBGP API's .proto files are (default: the Debian package golang-github-osrg-gobgp-dev's). */
  protoDir: z.string().min(1).optional(),
  /** Remote MACs installed from type-2 routes, at most, per VNI; routes beyond it are refused and counted ('limit'). */
  maxRemoteMacs: z.number().int().min(0).max(1_000_000).default(EVPN_DEFAULTS.maxRemoteMacs),
  /**
   * ARP suppression (daemon/evpn/neighbours.ts): local ARP requests for an IP a
   * MAC/IP route names are answered by this host, not flooded into the overlay.
   */
  arpSuppress: z.boolean().default(true),
  /**
   * Duplicate MAC detection (daemon/evpn/dup-detect.ts, RFC 7432 §15.1): a MAC that moves
   * between this host and a peer `maxMoves` times within `windowSeconds` is flagged; with
   * `freeze` ('permanent' or seconds) its mobility is held until `evpn clear-dup` (or that
   * long); `freeze: false` only flags and logs. `enabled: false` turns detection off.
   */
  dupDetect: z.strictObject({
    enabled: z.boolean().default(true),
    maxMoves: z.number().int().min(2).max(1000).default(DUP_DETECT_DEFAULTS.maxMoves),
    windowSeconds: z.number().int().min(2).max(1800).default(DUP_DETECT_DEFAULTS.windowSeconds),
    freeze: z.union([z.literal('permanent'), z.literal(false), z.number().int().min(1).max(86_400)],
      { error: 'must be "permanent", false (flag only) or a number of seconds (1-86400)' }).default(DUP_DETECT_DEFAULTS.freeze),
  }).default({ enabled: true, ...DUP_DETECT_DEFAULTS }),
  /** Per VNI (as a string key), RD and RTs instead of the derived ones, and arpSuppress for this VNI. */
  vnis: z.record(z.string().regex(/^\d+$/, 'must be a VNI'), z.strictObject({ rd: Rd.optional(), rt: z.array(Rt).min(1).optional(), arpSuppress: z.boolean().optional() })).default({}),
});

export type EvpnConfig = z.infer<typeof EvpnSchema>;
