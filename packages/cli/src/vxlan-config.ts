/*
 * The `vxlan` section of the config file: the daemon as a VXLAN tunnel endpoint
 * (see packages/switch/src/vxlan.ts for the model). One underlay address and UDP
 * port per daemon; per bridge, a list of VNIs, each mapped to one of the bridge's
 * VLANs, with its static flood list (remote VTEPs that get its broadcast, multicast
 * and unknown unicast, as `bridge fdb append 00:00:00:00:00:00 dst IP` on Linux) and
 * static MAC entries behind remote VTEPs. Different hosts may map one VNI to
 * different local VLANs. The underlay is IPv4 or IPv6, as `local` is: every remote
 * address must be of the same family.
 */
import { z } from 'zod';
import { READ_FRAMES_DEFAULT, READ_QUANTUM_DEFAULT, ip6IsLinkLocal, ip6IsMulticast, parseIp4, parseIp6, parseMac } from '@vswitch/switch';
import { ReadFramesSchema, ReadQuantumSchema, ReadShareSchema } from './read-share-config.js';

const family = (s: string): 4 | 6 | 0 => (s.includes(':') ? (parseIp6(s) !== undefined ? 6 : 0) : parseIp4(s) >= 0 ? 4 : 0);
const Ip = z.string().refine((s) => family(s) !== 0, 'must be an IPv4 address like 192.0.2.1 or an IPv6 address like 2001:db8::1');
/** Link-local (fe80::/10, needs a scope) and multicast cannot be the outer source. */
const Local = Ip.refine((s) => {
  const a = family(s) === 6 ? parseIp6(s) : undefined;
  return a === undefined || !(ip6IsMulticast(a, 0) || ip6IsLinkLocal(a, 0));
}, 'must be a unicast address with global scope (not link-local or multicast)');

const Mac = z.string().refine((s) => parseMac(s) >= 0, 'must be a MAC address like 02:00:00:00:00:01');
const vniRange = { error: (iss: { input?: unknown }) => `must be 0-16777215, got ${String(iss.input)}` };
const tosError = { error: (iss: { input?: unknown }) => `must be a TOS value 0-255 (like 0xb8) or "inherit", got ${JSON.stringify(iss.input)}` };
const vidRange = { error: (iss: { input?: unknown }) => `must be 1-4094, got ${String(iss.input)}` };

export const VxlanSegmentSchema = z.strictObject({
  vni: z.number({ error: 'must be a VNI (0-16777215)' }).int('must be an integer VNI').min(0, vniRange).max(0xffffff, vniRange),
  vlan: z.number({ error: 'must be a VLAN ID (1-4094)' }).int('must be an integer VLAN ID').min(1, vidRange).max(4094, vidRange),
  /** Remote VTEPs that get this VNI's flooded frames (head-end replication). */
  flood: z.array(Ip).default([]),
  /** Static MAC entries behind a remote VTEP. */
  fdb: z.array(z.strictObject({ mac: Mac, dst: Ip })).default([]),
  /** Data-plane learning of remote MACs from the tunnels; default: on, off when an `evpn` section places them. */
  learning: z.boolean().optional(),
});

export const VxlanSchema = z.strictObject({
  /** The underlay address: the outer source of what this VTEP sends, and where it listens. */
  local: Local,
  /** Send and receive only through this interface (SO_BINDTODEVICE); its MTU is the underlay MTU unless `mtu` is set. */
  interface: z.string().regex(/^[A-Za-z0-9_.:-]{1,15}$/, 'must be an interface name').optional(),
  /** UDP port (IANA: 4789). */
  port: z.number().int().min(1).max(65535).default(4789),
  /** Underlay MTU: outer packets never exceed it (DF set); VMs need MTU = this - 50. Default: the interface's MTU, or 1500. */
  mtu: z.number().int().min(576).max(65535).optional(),
  /** Outer TTL (IPv6: hop limit). */
  ttl: z.number().int().min(1).max(255).default(64),
  /**
   * The outer DSCP: a DS field value 0-255 (its two ECN bits are ignored) or
   * "inherit" (the inner IPv4 TOS / IPv6 traffic class's DSCP; 0 for a frame that is
   * not IP), as Linux vxlan's `tos`. The outer ECN field is RFC 6040's whatever this
   * says (the inner one copied, CE as ECT(0)). Changeable by reload.
   */
  tos: z.union([z.number().int(tosError).min(0, tosError).max(255, tosError), z.literal('inherit')], tosError).default(0),
  /**
   * ECN over the tunnel: "rfc6040" (the default, as a Linux vxlan device: the inner ECN
   * field copied out, an outer CE marked onto ECN-capable inner packets, dropped over
   * Not-ECT ones) or "off" (outer headers Not-ECT, the outer ECN field ignored on
   * receive: for an underlay that mishandles ECN). Changeable by reload.
   */
  ecn: z.enum(['rfc6040', 'off'], { error: (iss: { input?: unknown }) => `must be rfc6040 or off, got ${JSON.stringify(iss.input)}` }).default('rfc6040'),
  /**
   * The underlay socket's share of each read-loop round (as a bridge's readQuantum):
   * a flood from the underlay is read this many bytes (each datagram + 16 KB) per
   * round, so it cannot starve the local ports. "off": no limit.
   */
  readQuantum: ReadQuantumSchema.default(READ_QUANTUM_DEFAULT),
  /**
   * What that share counts, as a bridge's `readShare`: bytes (readQuantum) or frames
   * (readFrames datagrams a round; a UDP GRO burst counts as its packets). Bytes by
   * default, unlike a bridge's: the TCP segments coalesced toward a VM (tap_gro.c)
   * are coalesced within one read batch, so 16 packets a round would cut them from
   * ~45 segments to 16; the underlay's share in frames is unmeasured on the VXLAN bench.
   */
  readShare: ReadShareSchema.default('bytes' as const),
  readFrames: ReadFramesSchema.default(READ_FRAMES_DEFAULT),
  /** IPv6 underlay: accept datagrams whose UDP checksum is zero (RFC 6935/6936, Linux vxlan's udp6zerocsumrx). What this VTEP sends always carries one. */
  udp6ZeroCsumRx: z.boolean().default(false),
  /**
   * Offloads: "auto" coalesces the TCP segments decapsulated for one VM into
   * super-frames toward its TAP (receive-side GRO, netdev tap_gro.c); "off" writes
   * every inner frame as it came (for a guest that mishandles large frames, or to
   * compare). Changeable by reload.
   */
  offload: z.enum(['auto', 'off'], { error: 'must be auto or off' }).default('auto'),
  /** Per bridge, its VNIs. */
  bridges: z.record(z.string(), z.array(VxlanSegmentSchema)).default({}),
}).superRefine((v, ctx) => {
  const vnis = new Map<number, string>();
  for (const [bname, list] of Object.entries(v.bridges)) {
    const vids = new Map<number, number>();
    list.forEach((s, i) => {
      const other = vnis.get(s.vni);
      if (other !== undefined) ctx.addIssue({ code: 'custom', path: ['bridges', bname, i, 'vni'], message: `VNI ${s.vni} is already mapped (${other})` });
      vnis.set(s.vni, `bridge ${bname} VLAN ${s.vlan}`);
      const ov = vids.get(s.vlan);
      if (ov !== undefined) ctx.addIssue({ code: 'custom', path: ['bridges', bname, i, 'vlan'], message: `VLAN ${s.vlan} is already mapped to VNI ${ov}` });
      vids.set(s.vlan, s.vni);
      const fam = family(v.local);
      const wrong = fam === 6 ? 'an IPv4' : 'an IPv6';
      s.flood.forEach((a, j) => {
        if (a === v.local) ctx.addIssue({ code: 'custom', path: ['bridges', bname, i, 'flood', j], message: 'is the local address' });
        else if (fam !== 0 && family(a) !== 0 && family(a) !== fam) ctx.addIssue({ code: 'custom', path: ['bridges', bname, i, 'flood', j], message: `is ${wrong} address: the underlay is IPv${fam}, as local is` });
      });
      s.fdb.forEach((f, j) => {
        if (fam !== 0 && family(f.dst) !== 0 && family(f.dst) !== fam) ctx.addIssue({ code: 'custom', path: ['bridges', bname, i, 'fdb', j, 'dst'], message: `is ${wrong} address: the underlay is IPv${fam}, as local is` });
      });
    });
  }
});

export type VxlanConfig = z.infer<typeof VxlanSchema>;
export type VxlanSegmentConfig = z.infer<typeof VxlanSegmentSchema>;
