/*
 * The config file: YAML, validated with a schema. Every error names the file, the
 * key path and the line, and nothing is applied unless the whole file is valid.
 * The built-in default (no --config) is DEFAULT_CONFIG_YAML: one empty bridge br0.
 */
import { readFileSync } from 'node:fs';
import { LineCounter, parseDocument, isNode } from 'yaml';
import { z } from 'zod';
import { dnsNames, formatIp6, ip6InPrefix, ip6IsLinkLocal, ip6IsMulticast, ip6IsUnspecified, ip6Masked, LOOP_LIMITS, parseCidr6, parseIp4, parseIp6, parseMac, parseRate, parseSize, RATE_LIMITS } from '@vswitch/switch';
import { RATE_LIMIT_DEFAULTS } from '@vswitch/nat';
import { VswitchError } from './errors.js';
import { VxlanSchema } from './vxlan-config.js';
import { ReadFramesSchema, ReadQuantumSchema, ReadShareSchema } from './read-share-config.js';
import { EvpnSchema } from './evpn-config.js';
import { checkDhcp6 } from './daemon/dhcp6.js';

/** Batched TAP writes through io_uring (README "Batched TAP writes"), unless the file or `vswitch set` says otherwise. */
export const TAP_WRITE_BATCH_DEFAULT = true;
/** The turn yield's interval, µs (README "The turn yield"; bench/README "Who the pinger waits behind"): 0 turns it off. */
export const TURN_YIELD_US_DEFAULT = 500;
import { forward6Problem } from './daemon/forward6.js';

const RCVBUF_MSG = 'must be auto or bytes (65536 to 1073741824)';

const vidRange = { error: (iss: { input?: unknown }) => `must be 1-4094, got ${String(iss.input)}` };
const Vid = z.number({ error: 'must be a VLAN ID (1-4094)' }).int('must be an integer VLAN ID').min(1, vidRange).max(4094, vidRange);
const IfName = z.string().superRefine((s, ctx) => {
  const why = checkIfName(s);
  if (why !== undefined) ctx.addIssue({ code: 'custom', message: `must be an interface name: ${why}` });
});
const BridgeName = z.string().regex(/^[A-Za-z0-9_.:-]{1,32}$/, 'must be a bridge name: 1-32 of A-Z a-z 0-9 _ . : -');
const Mac = z.string().refine((s) => parseMac(s) >= 0, 'must be a MAC address like 02:00:00:00:00:01');

const VlanSpec = z.discriminatedUnion('mode', [
  z.strictObject({ mode: z.literal('access'), vid: Vid }),
  z.strictObject({ mode: z.literal('trunk'), allowed: z.array(Vid).default([]), native: Vid.optional() }),
  z.strictObject({
    mode: z.literal('hybrid'),
    vlans: z.array(z.strictObject({ vid: Vid, pvid: z.boolean().optional(), untagged: z.boolean().optional() })),
  }),
], { error: 'must have mode: access, trunk or hybrid' });

/** A rate as tc writes it ("100mbit", "1gbit"), or bits per second. */
const Rate = z.union([z.string(), z.number()]).superRefine((v, ctx) => {
  try {
    parseRate(v);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
  }
});
/** A size as tc writes it ("1mb", "64k"), or bytes. */
const Size = z.union([z.string(), z.number()]).superRefine((v, ctx) => {
  try {
    parseSize(v);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
  }
});
/** Ingress policing: rate, burst (default: 100 ms at the rate, at least 64 KiB), optional packets per second. */
const IngressRate = z.strictObject({
  rate: Rate,
  burst: Size.optional(),
  pps: z.number().int().min(1).max(RATE_LIMITS.maxPps).optional(),
});
/** Egress shaping toward the port's device: rate, burst, optional packets per second (frames over either wait). */
const EgressRate = z.strictObject({
  rate: Rate,
  burst: Size.optional(),
  pps: z.number().int().min(1).max(RATE_LIMITS.maxPps).optional(),
});
const HoldSec = z.number().int().min(LOOP_LIMITS.holdSecMin).max(LOOP_LIMITS.holdSecMax);

const BondSchema = z.strictObject({
  members: z.array(IfName).min(1).max(8).refine((m) => new Set(m).size === m.length, 'must not repeat an interface'),
  mode: z.enum(['active-backup', 'balance-slb', 'lacp'], { error: 'must be active-backup, balance-slb or lacp' }).default('active-backup'),
  /** lacp mode: active (send LACPDUs unasked) or passive; rate fast (1 s, 3 s timeout) or slow (30 s, 90 s). */
  lacp: z.enum(['active', 'passive']).default('active'),
  lacpRate: z.enum(['fast', 'slow']).default('fast'),
});

const PortSchema = z.strictObject({
  type: z.enum(['tap', 'attach', 'socket', 'bond'], { error: 'must be tap, attach, socket or bond' }),
  persistent: z.boolean().default(false),
  /**
   * tap: uid/gid allowed to open the device (TUNSETOWNER/TUNSETGROUP); socket: owner
   * and group of the socket file. E.g. for an unprivileged QEMU.
   */
  owner: z.number().int().min(0).optional(),
  group: z.number().int().min(0).optional(),
  /** socket only: the Unix socket the daemon listens on for the VM (QEMU -netdev stream). */
  path: z.string().min(1).max(107, 'must be at most 107 bytes (sun_path)').regex(/^\//, 'must be an absolute path').optional(),
  /** socket only: mode of the socket file (default "0600"). */
  mode: z.string().regex(/^0?[0-7]{3}$/, 'must be an octal mode such as "0600"').optional(),
  /**
   * socket only: the daemon connects to `path`, where QEMU listens (-netdev stream,server=on),
   * and reconnects after either side restarts; default false: the daemon listens.
   */
  connect: z.boolean().optional(),
  /**
   * tap: guest offloads (virtio-net header, TSO, checksum); attach: GSO frames
   * received whole rather than segmented on receive. Absent = on.
   */
  offload: z.boolean().optional(),
  vlan: VlanSpec.optional(),
  maxMacs: z.number().int().min(0).max(1_000_000).default(0),
  /** Flooded frames (broadcast, multicast, unknown unicast) per second this port may send; absent = no limit. */
  stormControl: z.strictObject({ pps: z.number().int().min(1).max(100_000_000) }).optional(),
  /**
   * Anti-spoofing. Default: both guards on for tap/socket access ports whose VLAN has
   * a router network with DHCP on this bridge, off for every other port (attach
   * uplinks, trunks, ports of VLANs without a router DHCP server). A key given here wins.
   * `bindings`: MAC/IP pairs the port may send from besides its DHCP leases.
   * IPv6 (`ra`, `dhcpv6`, `ipv6Source`): on by default for the same VM ports, and
   * for those of VLANs with a router network with `ipv6`; `maxIpv6Addresses`: the
   * addresses the port may own at once (first come, first served; default 16).
   */
  guard: z.strictObject({
    dhcp: z.boolean().optional(),
    ipSource: z.boolean().optional(),
    ra: z.boolean().optional(),
    dhcpv6: z.boolean().optional(),
    ipv6Source: z.boolean().optional(),
    maxIpv6Addresses: z.number().int().min(1).max(4096).optional(),
    bindings: z.array(z.strictObject({
      mac: Mac,
      ip: z.string().refine((s) => parseIp4(s) >= 0, 'must be an IPv4 address like 10.0.10.50'),
    })).default([]),
  }).optional(),
  /** BPDU guard: a port that receives an STP BPDU is shut for the bridge's loopProtection.bpduRecovery. Default: on for tap and socket ports, off for attach ports. */
  bpduGuard: z.boolean().optional(),
  /** Per-port rate limits: policing what the port sends, shaping what it is sent. */
  ingressRate: IngressRate.optional(),
  egressRate: EgressRate.optional(),
  /** bond only: attached interfaces as one port (packages/switch/src/bond.ts; README "Bonds"). */
  bond: BondSchema.optional(),
});

const BridgeSchema = z.strictObject({
  ageing: z.number().int().min(0).max(1_000_000).default(300),
  maxMacs: z.number().int().min(1).max(1_000_000).default(8192),
  ports: z.record(IfName, PortSchema).default({}),
  /** Loop protection: MAC-flap detection (moves of one MAC in a second above which its loop port is blocked, 0 = off; hold in seconds) and BPDU guard recovery (seconds). */
  loopProtection: z.strictObject({
    macFlapMoves: z.number().int().min(0).max(LOOP_LIMITS.flapMovesMax).optional(),
    macFlapHold: HoldSec.optional(),
    bpduRecovery: HoldSec.optional(),
  }).optional(),
  fdb: z.array(z.strictObject({ mac: Mac, port: IfName, vlan: Vid.optional() })).default([]),
  /** Each port's share of a read-loop round under `readShare: bytes`: bytes or a size ("256kb"), "off" or 0 for no limit (README "Fair share"). */
  readQuantum: ReadQuantumSchema.optional(),
  /** What that share counts: frames (readFrames per port per round whatever their size, the default) or bytes (readQuantum). */
  readShare: ReadShareSchema.optional(),
  /** Frames per port per round under `readShare: frames` (default 16), "off" or 0 for no limit. */
  readFrames: ReadFramesSchema.optional(),
  /** Sparse-first service: a port whose queue had emptied is served, one share, ahead of the backlogged ones (README "Fair share"); off by default. */
  readSparse: z.boolean().optional(),
  /** The exact-match flow cache (README "Flow cache"): known unicast between plain ports replayed in the addon; on by default, `false` turns it off. */
  flowCache: z.boolean().optional(),
});

const Ip4 = z.string().refine((s) => parseIp4(s) >= 0, 'must be an IPv4 address like 10.0.10.1');
const Cidr = z.string().refine((s) => parseCidr(s) !== undefined, 'must be an address with a prefix length, like 10.0.10.1/24');
const IpRange = z.string().refine((s) => parseIpRange(s) !== undefined, 'must be a range of addresses like 10.0.10.100-10.0.10.199');
const NetName = z.string().regex(/^[A-Za-z0-9_.:-]{1,15}$/, 'must be a network name: 1-15 of A-Z a-z 0-9 _ . : -');
const Port16 = z.number().int().min(1).max(65535);

const DhcpSchema = z.strictObject({
  pool: z.array(IpRange).min(1, 'needs at least one range'),
  leaseTime: z.number().int().min(60).max(31_536_000).default(3600),
  dns: z.array(Ip4).default([]),
  domain: z.string().regex(/^[A-Za-z0-9.-]{1,253}$/, 'must be a domain name').optional(),
  mtu: z.number().int().min(576).max(65535).optional(),
  routes: z.array(z.strictObject({ to: Cidr, via: Ip4 })).default([]),
  reservations: z.array(z.strictObject({ mac: Mac, ip: Ip4, hostname: z.string().optional() })).default([]),
  /**
   * Leases + offers one bridge port may hold. Absent: 4 on guarded ports (VM ports,
   * see `guard`), no cap on others (trunks, attach uplinks); a number: that cap on
   * every port; 0: no cap anywhere.
   */
  maxLeasesPerPort: z.number().int().min(0).max(65536).optional(),
});

/** `metrics.listen` and `--metrics`: host:port, or "off" (or "") for none. */
export const METRICS_LISTEN = /^(off|)$|^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}$/;

/** A duration in seconds for the servers' timeouts. */
const Seconds = z.number().min(0.1).max(3600);

const Ip6Gateway = z.string().superRefine((s, ctx) => {
  const why = checkGateway6(s);
  if (why !== undefined) ctx.addIssue({ code: 'custom', message: why });
});
const Lifetime = z.number().int('must be a whole number of seconds').min(0).max(0xffffffff, 'must be at most 4294967295 (infinity)');
const Ip6Unicast = z.string().superRefine((s, ctx) => {
  const a = parseIp6(s);
  if (a === undefined) ctx.addIssue({ code: 'custom', message: 'must be an IPv6 address like fd00:10::53' });
  else if (ip6IsMulticast(a, 0) || ip6IsUnspecified(a, 0)) ctx.addIssue({ code: 'custom', message: 'must be a unicast address' });
});

/**
 * The DHCPv6 server of a network (nat/src/dhcp6/server.ts), in modes dhcpv6 and
 * both (mode slaac serves no DHCPv6: its RA has neither M nor O). Keys follow the
 * IPv4 `dhcp` section's; `pool` is one range whose ends share their first 96 bits
 * (default <prefix>::1000-<prefix>::1fff); `dns`/`domains` default to the RA's
 * rdnss/dnssl (daemon/dns6.ts: the gateway's address when it answers DNS).
 */
const Dhcp6Schema = z.strictObject({
  pool: z.string().regex(/^[0-9A-Fa-f:.]+-[0-9A-Fa-f:.]+$/, 'must be a range like fd00:10::100-fd00:10::1ff')
    .refine((s) => s.split('-').every((a) => parseIp6(a) !== undefined), 'must be a range of IPv6 addresses like fd00:10::100-fd00:10::1ff').optional(),
  leaseTime: z.number().int().min(60).max(31_536_000).default(3600),
  dns: z.array(Ip6Unicast).max(8, 'at most 8 servers').optional(),
  domains: z.array(z.string().refine((s) => dnsNames([s]) !== undefined, 'must be a domain name')).max(8, 'at most 8 domains').optional(),
  /** By DUID (hex, colons allowed: the client's DUID as `vswitch dhcp leases` shows it) or by MAC (DUID-LL/LLT's, else the frame's). */
  reservations: z.array(z.strictObject({
    duid: z.string().regex(/^([0-9A-Fa-f]{2}:?){2,130}$/, 'must be a DUID in hex, like 00:01:00:01:2c:5e:...').optional(),
    mac: Mac.optional(),
    ip: Ip6Unicast,
  }).refine((r) => (r.duid === undefined) !== (r.mac === undefined), 'needs exactly one of duid and mac')).default([]),
  /** As the IPv4 `dhcp.maxLeasesPerPort`: absent, 4 on guarded ports and none elsewhere; 0: none. */
  maxLeasesPerPort: z.number().int().min(0).max(65536).optional(),
});

const RA_DEFAULTS = { interval: 600, validLifetime: 86400, preferredLifetime: 14400, dnssl: [] as string[] };

/**
 * IPv6 of a router network (nd.ts in @vswitch/nat): the gateway's address in a
 * /64, the way guests configure theirs (`mode`: the RA's flags), and the Router
 * Advertisements. The RA's router lifetime is 0 while the network routes nowhere
 * (no interconnected IPv6 network, no uplink with IPv6; README "IPv6 routing").
 */
const Ipv6Schema = z.strictObject({
  /** The gateway's address and the network's /64 prefix, like fd00:10::1/64; its link-local address comes from its MAC. */
  address: Ip6Gateway,
  /** slaac: addresses from the prefix (A flag); dhcpv6: M and O flags, no A; both: M, O and A. */
  mode: z.enum(['slaac', 'dhcpv6', 'both'], { error: 'must be slaac, dhcpv6 or both' }).default('slaac'),
  ra: z.strictObject({
    /** MaxRtrAdvInterval in seconds (RFC 4861 6.2.1: 4-1800); RAs go out every third of it to all of it, at random. */
    interval: z.number().int('must be a whole number of seconds').min(4, 'must be 4-1800 s (RFC 4861 6.2.1)').max(1800, 'must be 4-1800 s (RFC 4861 6.2.1)').default(600),
    /** The prefix's valid and preferred lifetimes, seconds (4294967295: infinity). */
    validLifetime: Lifetime.default(86400),
    preferredLifetime: Lifetime.default(14400),
    /** The MTU option (absent: none; guests keep their link's MTU); also the network's MTU for routed IPv6 (Packet Too Big; absent: 1500). */
    mtu: z.number().int().min(1280, 'must be at least 1280 (IPv6 minimum MTU)').max(65535).optional(),
    /**
     * RDNSS (RFC 8106): DNS servers' IPv6 addresses (absent: the gateway's address when it answers DNS,
     * daemon/dns6.ts; []: none); DNSSL: search domains. Their lifetime is 3 x interval.
     */
    rdnss: z.array(z.string().superRefine((s, ctx) => {
      const a = parseIp6(s);
      if (a === undefined) ctx.addIssue({ code: 'custom', message: 'must be an IPv6 address like fd00:10::53' });
      else if (ip6IsMulticast(a, 0) || ip6IsUnspecified(a, 0)) ctx.addIssue({ code: 'custom', message: 'must be a unicast address' });
    })).max(8, 'at most 8 servers').optional(),
    dnssl: z.array(z.string().refine((s) => dnsNames([s]) !== undefined, 'must be a domain name')).max(8, 'at most 8 domains').default([]),
  }).refine((r) => r.preferredLifetime <= r.validLifetime, { path: ['preferredLifetime'], message: 'must not exceed validLifetime' })
    .default(RA_DEFAULTS),
  /**
   * NPTv6 (RFC 6296, npt6.ts in @vswitch/nat): the /64 this network appears as
   * through the uplink (its ULA prefix translated, stateless); absent: routed as is.
   */
  npt: z.string().superRefine((s, ctx) => {
    const c = parseCidr6(s);
    if (c === undefined || c.prefix !== 64) ctx.addIssue({ code: 'custom', message: 'must be a /64 prefix, like 2001:db8:5:10::/64' });
    else if (ip6IsMulticast(c.addr, 0) || ip6IsLinkLocal(c.addr, 0) || ip6IsUnspecified(c.addr, 0)) ctx.addIssue({ code: 'custom', message: 'must be a unicast prefix' });
  }).optional(),
  dhcpv6: Dhcp6Schema.optional(),
});

/**
 * IPv6 on an interface uplink (uplink6.ts in @vswitch/nat): the router's own
 * address on the uplink segment, static or "slaac" (from the segment's RAs), its
 * default router (absent: the RAs' source) and the link's MTU (Packet Too Big).
 */
const Uplink6Schema = z.strictObject({
  address: z.string().superRefine((s, ctx) => {
    if (s === 'slaac') return;
    const c = parseCidr6(s);
    if (c === undefined) ctx.addIssue({ code: 'custom', message: 'must be "slaac" or an IPv6 address with its prefix length, like 2001:db8::2/64' });
    else if (ip6IsMulticast(c.addr, 0) || ip6IsLinkLocal(c.addr, 0) || ip6IsUnspecified(c.addr, 0)) ctx.addIssue({ code: 'custom', message: 'must be a global unicast address' });
  }),
  gateway: z.string().refine((s) => { const a = parseIp6(s); return a !== undefined && !ip6IsMulticast(a, 0) && !ip6IsUnspecified(a, 0); },
    'must be an IPv6 unicast address (link-local fe80:: or global)').optional(),
  mtu: z.number().int().min(1280, 'must be at least 1280 (IPv6 minimum MTU)').max(65535).default(1500),
});

const RouterNetworkSchema = z.strictObject({
  bridge: BridgeName,
  vlan: Vid,
  /** The gateway's address and the network's prefix. */
  address: Cidr,
  mac: Mac.optional(),
  dhcp: DhcpSchema.optional(),
  ipv6: Ipv6Schema.optional(),
});

const ForwardSchema = z.strictObject({
  proto: z.enum(['tcp', 'udp'], { error: 'must be tcp or udp' }),
  /** A public port or a range "8000-8010" on the uplink address. */
  port: z.union([Port16, z.string().regex(/^\d{1,5}-\d{1,5}$/, 'must be a port or a range like 8000-8010')]),
  /** Inside host and (first) port: "10.0.10.50:80". */
  /** The VM's address and port: IPv4 "10.0.10.50:80", or IPv6 in brackets "[fd00:10::50]:80" (uplink kind host, daemon/forward6.ts). */
  to: z.string().regex(/^(\d{1,3}(\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]):\d{1,5}$/, 'must be IP:port, like 10.0.10.50:80 or [fd00:10::50]:80'),
});

const Pps = z.number().int('must be a whole number of packets per second').min(0, 'must be 0 (off) or more packets per second').max(1_000_000);

const RouterSchema = z.strictObject({
  uplink: z.strictObject({
    /**
     * interface (default): the router is a host of its own on an existing
     * interface, with its own MAC and address. host: no interface; flows leave
     * through sockets of the host's own stack, with the host's address (issue 8).
     */
    kind: z.enum(['interface', 'host'], { error: 'must be interface or host' }).default('interface'),
    interface: IfName.optional(),
    /**
     * The router's own address on the uplink segment (the host's stack is not
     * touched), or "dhcp": obtained by the router's own DHCP client on the uplink,
     * gateway included (option 3).
     */
    address: z.string().refine((s) => s === 'dhcp' || parseCidr(s) !== undefined,
      'must be "dhcp" or an address with a prefix length, like 198.51.100.2/24').optional(),
    /** kind host: the resolvers the gateway's DNS forwarder asks (default: the nameservers of resolvConf). */
    dns: z.array(Ip4).optional(),
    /** kind host: where the resolvers are read from when `dns` is not given. */
    resolvConf: z.string().min(1).optional(),
    /** kind host: ICMP echo through a raw socket (needs CAP_NET_RAW). */
    icmp: z.boolean().optional(),
    /**
     * kind host: SO_RCVBUF of the host's TCP sockets: "auto" (default) the
     * kernel's autotuning alone, or bytes (autotuning off; a path's rate is
     * then at most about bytes / RTT: for local and LAN flows).
     */
    rcvbuf: z.union([z.literal('auto'), z.number()], { error: RCVBUF_MSG })
      .refine((v) => v === 'auto' || (Number.isInteger(v) && v >= 65536 && v <= 1 << 30), RCVBUF_MSG).optional(),
    /**
     * kind host: the host address port forwards listen on (default 0.0.0.0: all
     * IPv4); an IPv6 address too, "::" for every address of both families.
     */
    listen: z.string().refine((s) => parseIp4(s) >= 0 || parseIp6(s) !== undefined, 'must be an IPv4 or IPv6 address like 0.0.0.0 or ::').optional(),
    gateway: Ip4.optional(),
    mac: Mac.optional(),
    /** kind interface: IPv6 on the uplink (routed; NPTv6 for networks with ipv6.npt). */
    ipv6: Uplink6Schema.optional(),
    /** address: dhcp only: the hostname sent to the DHCP server (option 12). */
    hostname: z.string().regex(/^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/, 'must be a hostname label: letters, digits and -, at most 63').optional(),
  }).optional(),
  nat: z.strictObject({
    portRange: z.tuple([Port16, Port16]).default([1024, 65535]),
    maxSessions: z.number().int().min(1).max(10_000_000).default(65536),
    maxSessionsPerHost: z.number().int().min(1).max(10_000_000).default(4096),
    /** Sessions opened from one bridge port, whatever addresses it uses (default: maxSessionsPerHost). */
    maxSessionsPerPort: z.number().int().min(1).max(10_000_000).optional(),
    udpTimeout: z.number().int().min(120, 'must be at least 120 s (RFC 4787)').default(300),
    tcpEstablishedTimeout: z.number().int().min(7440, 'must be at least 7440 s (RFC 5382)').default(7440),
    tcpTransitoryTimeout: z.number().int().min(1).default(240),
    icmpTimeout: z.number().int().min(1).default(60),
  }).default({ portRange: [1024, 65535], maxSessions: 65536, maxSessionsPerHost: 4096, udpTimeout: 300, tcpEstablishedTimeout: 7440, tcpTransitoryTimeout: 240, icmpTimeout: 60 }),
  /**
   * Per bridge port rate limits, in packets per second (0 = off), on what a VM
   * makes the router do itself (limits.ts in @vswitch/nat); applied in place on reload.
   */
  limits: z.strictObject({
    dhcp: Pps.default(RATE_LIMIT_DEFAULTS.dhcp),
    arp: Pps.default(RATE_LIMIT_DEFAULTS.arp),
    icmp: Pps.default(RATE_LIMIT_DEFAULTS.icmp),
    dns: Pps.default(RATE_LIMIT_DEFAULTS.dns),
    icmpErrors: Pps.default(RATE_LIMIT_DEFAULTS.icmpErrors),
    nd: Pps.default(RATE_LIMIT_DEFAULTS.nd),
  }).default({ ...RATE_LIMIT_DEFAULTS }),
  /**
   * The gateways' DNS server (dns/gateway.ts in @vswitch/nat): every network's
   * gateway answers its DHCP clients' and reservations' names and forwards the rest
   * to `upstream` (default: the nameservers of `resolvConf`) through the host's own
   * stack; with uplink kind host the host NAT's forwarder (uplink.dns) does that part.
   */
  dns: z.strictObject({
    enabled: z.boolean().default(true),
    upstream: z.array(Ip4).default([]),
    resolvConf: z.string().min(1).optional(),
    /** Forwarded queries waiting for an answer, in all and from one bridge port; more are dropped. */
    maxOutstanding: z.number().int().min(1).max(65536).default(256),
    maxOutstandingPerPort: z.number().int().min(1).max(65536).default(32),
    /** Seconds an unanswered forwarded query is kept. */
    timeout: z.number().min(0.5).max(60).default(5),
  }).default({ enabled: true, upstream: [], maxOutstanding: 256, maxOutstandingPerPort: 32, timeout: 5 }),
  forwards: z.array(ForwardSchema).default([]),
  /** Pairs of this router's networks that may route to each other (default: none). */
  interconnect: z.array(z.tuple([NetName, NetName])).default([]),
  networks: z.record(NetName, RouterNetworkSchema),
});

export const ConfigSchema = z.strictObject({
  /** Leases and runtime port forwards live here. */
  stateDir: z.string().min(1).default('/var/lib/vswitch'),
  control: z.strictObject({
    socket: z.string().min(1).optional(),
    mode: z.string().regex(/^0?[0-7]{3}$/, 'must be an octal mode such as "0600"').default('0600'),
    /** Connections open at once; one more gets EAGAIN (the CLI retries). */
    maxConnections: z.number().int().min(1).max(65536).default(64),
    /** Longest request line; a longer one gets E2BIG and its connection is closed. */
    maxRequestBytes: z.number().int().min(1024).max(16 << 20).default(65536),
  }).default({ mode: '0600', maxConnections: 64, maxRequestBytes: 65536 }),
  metrics: z.strictObject({
    /** host:port for the Prometheus endpoint (/metrics, /healthz); "" or "off" disables it. */
    listen: z.string().regex(METRICS_LISTEN, 'must be host:port (e.g. 127.0.0.1:9464) or "off"').default('127.0.0.1:9464'),
    /** Connections open at once; more are closed on accept and counted. */
    maxConnections: z.number().int().min(1).max(65536).default(64),
    /** Seconds without a byte either way before a connection is closed (also the keep-alive timeout). */
    idleTimeout: Seconds.default(10),
    /** Seconds for a request's headers to arrive whole. */
    headersTimeout: Seconds.default(5),
    /** Seconds for the whole request to arrive. */
    requestTimeout: Seconds.default(10),
    /** Seconds a render is served to later scrapes; 0: every scrape renders, unless one is running. */
    cacheInterval: z.number().min(0).max(60).default(1),
    /** Nice value of the server's thread (0 = the data plane's, up to 19): the data plane gets the CPU first. */
    workerNice: z.number().int().min(0, 'must be 0 to 19: the server never gets more of the CPU than the data plane').max(19).default(10),
  }).refine((m) => m.headersTimeout <= m.requestTimeout, { path: ['headersTimeout'], message: 'must not exceed requestTimeout' })
    .default({ listen: '127.0.0.1:9464', maxConnections: 64, idleTimeout: 10, headersTimeout: 5, requestTimeout: 10, cacheInterval: 1, workerNice: 10 }),
  log: z.strictObject({
    level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info'),
  }).default({ level: 'info' }),
  /** Nice value of the forwarding loop's thread (daemon/priority.ts); unset: as started (the systemd unit: -10). */
  nice: z.number().int().min(-20).max(19).optional(),
  /**
   * Poll before sleep (README "Poll before sleep"): the largest window, µs, the
   * event loop probes its ports before it sleeps (0: off); adaptive, as KVM's halt polling.
   */
  pollBeforeSleepUs: z.number().int('must be a whole number of microseconds').min(0, 'must be 0 (off) to 1000')
    .max(1000, 'must be 0 (off) to 1000').default(0),
  /** ... at most this many ms of polling per second (the CPU it may take from the VMs). */
  pollBeforeSleepBudgetMs: z.number().int('must be a whole number of milliseconds').min(1, 'must be 1 to 1000')
    .max(1000, 'must be 1 to 1000').default(200),
  /**
   * Batched TAP writes (README "Batched TAP writes"): the flow cache's replays of one read
   * batch written through io_uring, one call for the batch instead of one writev each.
   */
  tapWriteBatch: z.boolean().default(TAP_WRITE_BATCH_DEFAULT),
  /**
   * The turn yield (README "The turn yield"): while the host has more runnable tasks than
   * CPUs, after a busy loop turn that wrote frames, at most once per this many µs, the loop
   * gives its CPU up for ~55 µs so the VMs its writes woke can run (0: off).
   */
  turnYieldUs: z.number().int('must be a whole number of microseconds').min(0, 'must be 0 (off) to 100000')
    .max(100000, 'must be 0 (off) to 100000').default(TURN_YIELD_US_DEFAULT),
  /** true: the daemon starts a session of its own (setsid), its own scheduling group under autogroups (daemon/session.ts); unset: as started. */
  ownSession: z.boolean().optional(),
  bridges: z.record(BridgeName, BridgeSchema).default({}),
  routers: z.record(BridgeName, RouterSchema).default({}),
  /** The daemon as a VXLAN tunnel endpoint (vxlan-config.ts). */
  vxlan: VxlanSchema.optional(),
  /** BGP EVPN for the vxlan section's VNIs, through GoBGP (evpn-config.ts). */
  evpn: EvpnSchema.optional(),
}).superRefine((cfg, ctx) => {
  const owner = new Map<string, string>();
  const socketPaths = new Map<string, string>();
  for (const [bname, br] of Object.entries(cfg.bridges)) {
    for (const pname of Object.keys(br.ports)) {
      const other = owner.get(pname);
      if (other !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['bridges', bname, 'ports', pname], message: `port is already in bridge ${other}` });
      }
      owner.set(pname, bname);
      const port = br.ports[pname];
      const at = ['bridges', bname, 'ports', pname];
      if ((port.type === 'bond') !== (port.bond !== undefined)) {
        ctx.addIssue({ code: 'custom', path: [...at, 'bond'], message: port.type === 'bond' ? 'is required for a bond port (members, mode)' : 'applies to bond ports only' });
      }
      for (const m of port.bond?.members ?? []) {
        const other = owner.get(`member:${m}`) ?? (br.ports[m] !== undefined ? pname : undefined);
        if (other !== undefined) ctx.addIssue({ code: 'custom', path: [...at, 'bond', 'members'], message: `${m} is already a port or a member of bond ${other}` });
        owner.set(`member:${m}`, pname);
      }
      if (port.type === 'socket') {
        if (port.path === undefined) ctx.addIssue({ code: 'custom', path: [...at, 'path'], message: 'is required for a socket port' });
        if (port.persistent) ctx.addIssue({ code: 'custom', path: [...at, 'persistent'], message: 'applies to tap ports only (a socket port is listened on again at start)' });
        if (port.connect === true) {
          for (const k of ['mode', 'owner', 'group'] as const) {
            if (port[k] !== undefined) ctx.addIssue({ code: 'custom', path: [...at, k], message: 'applies to a listening socket port only (with connect: true the socket file is QEMU\'s)' });
          }
        }
        if (port.path !== undefined) {
          const other = socketPaths.get(port.path);
          if (other !== undefined) ctx.addIssue({ code: 'custom', path: [...at, 'path'], message: `is already the socket of port ${other}` });
          socketPaths.set(port.path, pname);
        }
      } else {
        if (port.path !== undefined) ctx.addIssue({ code: 'custom', path: [...at, 'path'], message: 'applies to socket ports only' });
        if (port.mode !== undefined) ctx.addIssue({ code: 'custom', path: [...at, 'mode'], message: 'applies to socket ports only' });
        if (port.connect !== undefined) ctx.addIssue({ code: 'custom', path: [...at, 'connect'], message: 'applies to socket ports only' });
      }
      const v = br.ports[pname].vlan;
      if (v?.mode === 'hybrid' && v.vlans.filter((x) => x.pvid).length > 1) {
        ctx.addIssue({ code: 'custom', path: ['bridges', bname, 'ports', pname, 'vlan', 'vlans'], message: 'at most one VLAN may be the pvid' });
      }
    }
    br.fdb.forEach((f, i) => {
      if (!(f.port in br.ports)) {
        ctx.addIssue({ code: 'custom', path: ['bridges', bname, 'fdb', i, 'port'], message: `no port ${f.port} in bridge ${bname}` });
      }
    });
  }
  const issue = (path: (string | number)[], message: string): void => ctx.addIssue({ code: 'custom', path, message });
  // One DHCP server per (bridge, VLAN): two would hand out the same addresses.
  const dhcpServer = new Map<string, string>();
  for (const [rname, r] of Object.entries(cfg.routers)) {
    for (const [nname, n] of Object.entries(r.networks)) {
      if (n.dhcp === undefined) continue;
      const key = `${n.bridge}/${n.vlan}`;
      const other = dhcpServer.get(key);
      if (other !== undefined) issue(['routers', rname, 'networks', nname, 'dhcp'], `VLAN ${n.vlan} of bridge ${n.bridge} already has a DHCP server (${other}); one per VLAN`);
      else dhcpServer.set(key, `routers.${rname}.networks.${nname}`);
    }
  }
  // One IPv6 prefix advertiser per (bridge, VLAN), and no two networks of any router with overlapping /64s.
  const raSource = new Map<string, string>();
  const prefixes = new Map<string, string>();
  for (const [rname, r] of Object.entries(cfg.routers)) {
    for (const [nname, n] of Object.entries(r.networks)) {
      const c = n.ipv6 === undefined ? undefined : parseCidr6(n.ipv6.address);
      if (c === undefined) continue;
      const at = ['routers', rname, 'networks', nname, 'ipv6'];
      const key = `${n.bridge}/${n.vlan}`;
      const other = raSource.get(key);
      if (other !== undefined) issue(at, `VLAN ${n.vlan} of bridge ${n.bridge} already has IPv6 (${other}); one router advertises per VLAN`);
      else raSource.set(key, `routers.${rname}.networks.${nname}`);
      if (n.ipv6!.dhcpv6 !== undefined && n.ipv6!.mode === 'slaac') {
        issue([...at, 'dhcpv6'], 'mode slaac serves no DHCPv6 (its RA has neither M nor O): set mode dhcpv6 or both');
      } else if (n.ipv6!.mode !== 'slaac') {
        const why = checkDhcp6(nname, n.ipv6!);
        if (why !== undefined) issue([...at, 'dhcpv6'], why);
      }
      const p = formatIp6(ip6Masked(c.addr, c.prefix));
      const dup = prefixes.get(p);
      if (dup !== undefined) issue([...at, 'address'], `prefix ${p}/64 is already ${dup}'s`);
      else prefixes.set(p, `routers.${rname}.networks.${nname}`);
    }
  }
  // A router's uplink is the router's: attaching it to a bridge as well would switch the router's own traffic.
  const uplinks = new Map<string, string>();
  for (const [rname, r] of Object.entries(cfg.routers)) {
    if (r.uplink?.kind !== 'host' && r.uplink?.interface !== undefined) uplinks.set(r.uplink.interface, rname);
  }
  for (const [bname, br] of Object.entries(cfg.bridges)) {
    for (const [pname, p] of Object.entries(br.ports)) {
      if (p.type === 'attach' && uplinks.has(pname)) issue(['bridges', bname, 'ports', pname], `is the uplink interface of router ${uplinks.get(pname)}`);
    }
  }
  for (const [rname, r] of Object.entries(cfg.routers)) {
    const subnets: [string, number, number][] = [];
    for (const [nname, n] of Object.entries(r.networks)) {
      const at = ['routers', rname, 'networks', nname];
      if (!(n.bridge in cfg.bridges)) issue([...at, 'bridge'], `no bridge ${n.bridge}`);
      const other = owner.get(nname);
      if (other !== undefined) issue(at, `the name ${nname} is already a port of bridge ${other}`);
      owner.set(nname, n.bridge);
      const c = parseCidr(n.address)!;
      if (c.prefix > 30) issue([...at, 'address'], 'prefix must be /30 or shorter');
      const net = maskOf(c.ip, c.prefix);
      subnets.push([nname, net, c.prefix]);
      n.dhcp?.pool.forEach((range, i) => {
        const [lo, hi] = parseIpRange(range)!;
        if (maskOf(lo, c.prefix) !== net || maskOf(hi, c.prefix) !== net) issue([...at, 'dhcp', 'pool', i], `must lie inside ${n.address}`);
      });
      n.dhcp?.reservations.forEach((res, i) => {
        if (maskOf(parseIp4(res.ip), c.prefix) !== net) issue([...at, 'dhcp', 'reservations', i, 'ip'], `must lie inside ${n.address}`);
      });
    }
    for (let i = 0; i < subnets.length; i++) {
      for (let j = i + 1; j < subnets.length; j++) {
        const p = Math.min(subnets[i][2], subnets[j][2]);
        if (maskOf(subnets[i][1], p) === maskOf(subnets[j][1], p)) {
          issue(['routers', rname, 'networks', subnets[j][0], 'address'], `overlaps network ${subnets[i][0]}`);
        }
      }
    }
    r.interconnect.forEach((pair, i) => pair.forEach((n, k) => {
      if (!(n in r.networks)) issue(['routers', rname, 'interconnect', i, k], `no network ${n} in router ${rname}`);
    }));
    const up = ['routers', rname, 'uplink'];
    if (r.uplink?.kind === 'host') {
      for (const k of ['interface', 'address', 'gateway', 'mac', 'hostname'] as const) {
        if (r.uplink[k] !== undefined) issue([...up, k], 'is for kind: interface; a host uplink has no interface or address of its own');
      }
    } else if (r.uplink !== undefined) {
      if (r.uplink.interface === undefined) issue([...up, 'interface'], 'is required (or kind: host for NAT through the host\'s own address)');
      if (r.uplink.address === undefined) issue([...up, 'address'], 'is required: an address with a prefix length, or "dhcp"');
      for (const k of ['dns', 'resolvConf', 'icmp', 'listen', 'rcvbuf'] as const) {
        if (r.uplink[k] !== undefined) issue([...up, k], 'is for kind: host');
      }
    }
    // IPv6 routing to the uplink (route6.ts): an interface uplink's own IPv6; NPTv6 prefixes need it and must not collide.
    if (r.uplink?.kind === 'host' && r.uplink.ipv6 !== undefined) issue([...up, 'ipv6'], 'is for kind: interface (an address of the router\'s own on the uplink segment; a host uplink carries IPv6 as the host\'s own sockets, without it)');
    const outside = new Map<string, string>();
    for (const [nname, n] of Object.entries(r.networks)) {
      if (n.ipv6?.npt === undefined) continue;
      const at = ['routers', rname, 'networks', nname, 'ipv6', 'npt'];
      if (r.uplink?.kind === 'host' || r.uplink?.ipv6 === undefined) issue(at, 'needs uplink.ipv6 (NPTv6 translates to the uplink)');
      const p = parseCidr6(n.ipv6.npt);
      if (p === undefined) continue;
      const key = formatIp6(ip6Masked(p.addr, 64));
      const inside = Object.entries(r.networks).find(([, o]) => o.ipv6 !== undefined && parseCidr6(o.ipv6.address) !== undefined &&
        formatIp6(ip6Masked(parseCidr6(o.ipv6.address)!.addr, 64)) === key);
      if (inside !== undefined) issue(at, `is the inside prefix of network ${inside[0]}`);
      else if (outside.has(key)) issue(at, `is already network ${outside.get(key)}'s outside prefix`);
      outside.set(key, nname);
    }
    if (r.uplink?.address === 'dhcp' && r.uplink.gateway !== undefined) {
      issue(['routers', rname, 'uplink', 'gateway'], 'with address: dhcp the gateway comes from the DHCP server (option 3); remove it');
    }
    if (r.uplink !== undefined && r.uplink.address !== 'dhcp' && r.uplink.hostname !== undefined) {
      issue(['routers', rname, 'uplink', 'hostname'], 'is sent to a DHCP server: only with address: dhcp');
    }
    if (r.uplink?.kind === 'host') {
      for (const k of ['upstream', 'resolvConf'] as const) {
        const v = r.dns[k];
        if (v !== undefined && (!Array.isArray(v) || v.length > 0)) {
          issue(['routers', rname, 'dns', k], `with uplink kind host the host NAT forwards DNS: set uplink.${k === 'upstream' ? 'dns' : 'resolvConf'} instead`);
        }
      }
    }
    if (r.nat.portRange[0] > r.nat.portRange[1]) issue(['routers', rname, 'nat', 'portRange'], 'must be [low, high]');
    r.forwards.forEach((f, i) => {
      if (r.uplink === undefined) issue(['routers', rname, 'forwards', i], 'port forwards need an uplink');
      if (f.to.startsWith('[')) {
        const why = r.uplink === undefined ? undefined : forward6Problem(r, f.to.slice(1, f.to.indexOf(']')));
        if (why !== undefined) issue(['routers', rname, 'forwards', i, 'to'], why);
        return;
      }
      const ip = parseIp4(f.to.split(':')[0]);
      if (ip < 0 || !subnets.some(([, net, p]) => maskOf(ip, p) === net)) issue(['routers', rname, 'forwards', i, 'to'], 'must be an address inside one of the router\'s networks');
    });
  }
  for (const bname of Object.keys(cfg.vxlan?.bridges ?? {})) {
    if (!(bname in cfg.bridges)) ctx.addIssue({ code: 'custom', path: ['vxlan', 'bridges', bname], message: `no bridge ${bname} in bridges` });
  }
  if (cfg.evpn !== undefined && cfg.vxlan === undefined) {
    ctx.addIssue({ code: 'custom', path: ['evpn'], message: 'needs a vxlan section (EVPN is the control plane of its VNIs)' });
  }
  if (cfg.evpn !== undefined && cfg.vxlan !== undefined && parseIp4(cfg.vxlan.local) < 0) {
    ctx.addIssue({ code: 'custom', path: ['evpn'], message: 'needs an IPv4 vxlan.local (EVPN over an IPv6 underlay is not supported yet)' });
  }
});

export type Config = z.infer<typeof ConfigSchema>;

/**
 * Why `name` cannot be an interface name, or undefined: the kernel's
 * dev_valid_name (as iproute2's check_ifname mirrors it: 1-15 bytes, not "." or
 * "..", no "/", ":" or whitespace), no control characters, and no leading "-",
 * which ip(8) and every other tool would read as an option.
 */
export function checkIfName(name: string): string | undefined {
  const n = Buffer.byteLength(name);
  if (n === 0 || n > 15) return '1-15 bytes';
  if (name === '.' || name === '..') return 'not "." or ".."';
  if (/[/:\s]/.test(name)) return 'no "/", ":" or whitespace';
  if (/[\x00-\x1f\x7f]/.test(name)) return 'no control characters';
  if (name.startsWith('-')) return 'no leading "-" (it would read as an option)';
  return undefined;
}
export type RouterConfig = z.infer<typeof RouterSchema>;
export type RouterNetworkConfig = z.infer<typeof RouterNetworkSchema>;

/** "10.0.10.1/24" -> {ip, prefix}, or undefined. */
export function parseCidr(text: string): { ip: number; prefix: number } | undefined {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(text.trim());
  if (!m) return undefined;
  const ip = parseIp4(m[1]);
  const prefix = Number(m[2]);
  return ip < 0 || prefix > 32 ? undefined : { ip, prefix };
}

/**
 * Why `text` cannot be a network's IPv6 gateway address, or undefined: it must be
 * an address with /64 (SLAAC's prefix length), in a unicast prefix that is not
 * link-local (the gateway has that one from its MAC), and not the prefix's
 * Subnet-Router anycast address (its host part all zeros, RFC 4291 2.6.1).
 */
export function checkGateway6(text: string): string | undefined {
  const c = parseCidr6(text);
  if (c === undefined) return 'must be an IPv6 address with its prefix length, like fd00:10::1/64';
  if (c.prefix !== 64) return `prefix must be /64 (SLAAC needs a 64-bit interface identifier, RFC 4862 5.5.3), got /${c.prefix}`;
  if (ip6IsMulticast(c.addr, 0) || ip6IsUnspecified(c.addr, 0) || ip6InPrefix(c.addr, 0, new Uint8Array(16), 0, 64)) return 'must be in a unicast prefix';
  if (ip6IsLinkLocal(c.addr, 0)) return 'must not be link-local: the gateway\'s fe80:: address comes from its MAC';
  if (ip6InPrefix(c.addr, 0, ip6Masked(c.addr, 64), 0, 128)) return `is the prefix's Subnet-Router anycast address; give the gateway's own, like ${formatIp6(ip6Masked(c.addr, 64))}1/64`;
  return undefined;
}

/** "10.0.10.100-10.0.10.199" -> [lo, hi], or undefined. */
export function parseIpRange(text: string): [number, number] | undefined {
  const [a, b, ...rest] = text.split('-');
  if (b === undefined || rest.length > 0) return undefined;
  const lo = parseIp4(a);
  const hi = parseIp4(b);
  return lo < 0 || hi < 0 || hi < lo ? undefined : [lo, hi];
}

export function maskOf(ip: number, prefix: number): number {
  return prefix === 0 ? 0 : (ip & ((0xffffffff << (32 - prefix)) >>> 0)) >>> 0;
}
export type PortConfig = z.infer<typeof PortSchema>;
export type BridgeConfig = z.infer<typeof BridgeSchema>;

/**
 * `vswitch daemon` without --config: one empty bridge br0, as brctl users start;
 * no router, no uplink, nothing attached. The demo lab has its own file (scripts/lab.yaml).
 */
export const DEFAULT_CONFIG_YAML = `# vswitch built-in default: one empty bridge. Ports join with
#   vswitch addif br0 NAME [--vlan VID]
stateDir: /var/lib/vswitch
bridges:
  br0: {}
`;

export class ConfigError extends VswitchError {
  constructor(message: string) {
    super('ECONFIG', message);
  }
}

/** Parses and validates config text; `file` is used only in error messages. */
export function parseConfig(text: string, file: string): Config {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0];
    const pos = lc.linePos(e.pos[0]);
    throw new ConfigError(`${file}: line ${pos.line}, column ${pos.col}: ${firstLine(e.message)}`);
  }
  const raw = doc.toJS() ?? {};
  const res = ConfigSchema.safeParse(raw);
  if (res.success) return res.data;
  const lines = res.error.issues.slice(0, 5).map((issue) => {
    const path = issue.path.map(String);
    const key = path.length > 0 ? path.join('.') : '(top level)';
    const node = nearestNode(doc, issue.path as (string | number)[]);
    const at = node ? ` (line ${lc.linePos(node)!.line})` : '';
    return `${file}: ${key}${at}: ${describe(issue)}`;
  });
  throw new ConfigError(lines.join('\n'));
}

export function loadConfig(file: string): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`${file}: cannot read config file: ${(e as Error).message}`);
  }
  return parseConfig(text, file);
}

export function defaultConfig(): Config {
  return parseConfig(DEFAULT_CONFIG_YAML, '(built-in default config)');
}

function describe(issue: z.core.$ZodIssue): string {
  if (issue.code === 'unrecognized_keys') return `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.join(', ')}`;
  if (issue.code === 'invalid_type' && issue.message.includes('received undefined')) return `is required (${issue.expected})`;
  if (issue.code === 'invalid_key' && issue.issues.length > 0) return `bad name: ${issue.issues[0].message}`;
  return issue.message;
}

/** Start offset of the YAML node at `path`, or of its nearest existing ancestor. */
function nearestNode(doc: ReturnType<typeof parseDocument>, path: (string | number)[]): number | undefined {
  for (let n = path.length; n >= 0; n--) {
    const node = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true);
    if (isNode(node) && node.range) return node.range[0];
  }
  return undefined;
}

function firstLine(s: string): string {
  return s.split('\n')[0];
}
