/*
 * The GoBGP gRPC client: the few calls the EVPN control plane makes (StartBgp,
 * GetBgp, AddPeer/DeletePeer/ListPeer, AddPath/DeletePath, WatchEvent), and the
 * EVPN routes (type 2 MAC/IP, type 3 Inclusive Multicast, RFC 7432 / RFC 8365)
 * translated between GoBGP's API messages and the plain `EvpnRoute` the rest of the
 * daemon uses. Nothing else in the daemon sees protobuf or gRPC.
 *
 * The .proto files are read at run time from where Debian's
 * golang-github-osrg-gobgp-dev puts them (GOBGP_PROTO_DIR), or from the `evpn.protoDir`
 * config key: they must match the gobgpd that runs, and that gobgpd is the
 * distribution's, so its own package's files are the right ones (a copy in this
 * repository would silently drift from an upgraded gobgpd). A missing file is a clear
 * error naming the file and the package.
 *
 * GoBGP's NLRIs and path attributes are google.protobuf.Any: proto-loader's
 * objects carry them as {typeUrl, value bytes}, encoded and decoded here with
 * protobufjs types from the same files. VXLAN in EVPN (RFC 8365 §5.1.3): the VNI is
 * the 24-bit MPLS label field of a type-2 route and the PMSI tunnel attribute's label
 * of a type-3 route; GoBGP writes the label field as given (no shift), as FRR reads it.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';

export const GOBGP_PROTO_DIR = '/usr/share/gocode/src/github.com/osrg/gobgp/api';
const FILES = ['gobgp.proto', 'attribute.proto', 'capability.proto'];
const PKG = 'golang-github-osrg-gobgp-dev';

/** l2vpn-evpn (AFI 25, SAFI 70). */
export const EVPN_FAMILY = { afi: 25, safi: 70 };
const TYPE_URL = 'type.googleapis.com/apipb.';
const RT_SUBTYPE = 0x02;
const TUNNEL_VXLAN = 8;
const PMSI_INGRESS_REPLICATION = 6;
/** Graceful restart time advertised (s): how long a helper peer keeps our routes while gobgpd is away. */
export const GR_RESTART_S = 120;

/** One EVPN route as the daemon sees it. */
export interface EvpnRoute {
  type: 2 | 3;
  /** Route distinguisher as text ("10.0.0.1:100", "65000:100"). */
  rd: string;
  /** Type 2: the MAC (aa:bb:..) and the IP if any ('' none). */
  mac?: string;
  ip?: string;
  /** The VNI: type 2's label, type 3's PMSI label (-1: absent). */
  vni: number;
  /** Type 3: the originator's address (the NLRI's IP). */
  originator?: string;
  nextHop: string;
  /** Route targets as "ASN:N". */
  rts: string[];
  /** Tunnel encapsulation (8 = VXLAN) from the encapsulation extended community, -1 absent. */
  encap: number;
  /** MAC mobility (RFC 7432 §15): sequence number (0 absent), sticky/static. */
  seq: number;
  sticky: boolean;
  /** Set on routes the RIB reports: who sent it ('' local), withdrawn or not. */
  neighbor?: string;
  withdraw?: boolean;
}

export interface PeerInfo {
  address: string;
  remoteAs: number;
  state: string;
  /** Seconds the session has been in its state (0 unknown). */
  received: number;
  advertised: number;
  /** Graceful restart (RFC 4724) for l2vpn-evpn as negotiated on the session. */
  gr: PeerGr;
  /** gobgpd holds the session down because the peer exceeded its prefix limit (admin state PFX_CT). */
  prefixLimitDown: boolean;
}

/**
 * The session's graceful restart for l2vpn-evpn. `advertised`: our OPEN lists the
 * family with forwarding preserved, so a helper peer may keep our routes while
 * gobgpd restarts (FRR 8.4 does not for EVPN: README "BGP EVPN"). `received`: the
 * peer's OPEN lists it, i.e. the peer itself restarts gracefully (a helper-only peer,
 * FRR by default, sends the capability without families). The peer's restart time,
 * whether it is restarting now, End-of-RIB both ways.
 */
export interface PeerGr {
  advertised: boolean;
  received: boolean;
  peerRestartTime: number;
  peerRestarting: boolean;
  endOfRibReceived: boolean;
  endOfRibSent: boolean;
}

/** apipb.PeerState.AdminState PFX_CT: gobgpd closed the session for the prefix limit and stays idle. */
export const ADMIN_PFX_CT = 2;

/**
 * The AddPeer/UpdatePeer request for one neighbour. Graceful restart (RFC 4724) is
 * negotiated so that a peer in helper mode (FRR's default) keeps our routes, and so
 * forwarding toward us, while gobgpd restarts. FRR keeps a peer's routes through a
 * session loss only for the address families whose Forwarding State bit the peer's
 * last OPEN set, and GoBGP sets that bit only with local-restarting, so it is always
 * on: true here, since the daemon's forwarding does survive gobgpd (installed entries
 * stay; service.ts). The Restart State bit comes with it, which only tells the peer
 * not to wait for our End-of-RIB. `maxPrefixes` (0: none) is gobgpd's per-peer limit
 * on the EVPN family (prefix-limit.ts says what gobgpd does when it is exceeded).
 */
export function peerRequest(address: string, remoteAs: number, localAs: number, localAddress: string, maxPrefixes: number): Obj {
  return {
    peer: {
      // The local AS and peer type as gobgpd's defaults fill them in (SetDefaultNeighborConfigValues):
      // UpdatePeer compares the request with the stored peer, and any difference there
      // (NeedsResendOpenMessage) makes it delete and re-add the peer, resetting the session.
      conf: { neighborAddress: address, peerAsn: remoteAs, localAsn: localAs, type: remoteAs === localAs ? 0 : 1 },
      // Restarting, gobgpd defers its updates until every peer's End-of-RIB, or this
      // many seconds (its default, 360, would hold our routes back that long after a start).
      gracefulRestart: { enabled: true, restartTime: GR_RESTART_S, localRestarting: true, deferralTime: 2 },
      // Short timers, as overlay.md found reliable with FRR: keepalive 10 s, hold 30 s, connect retry 1 s.
      timers: { config: { connectRetry: 1, holdTime: 30, keepaliveInterval: 10 } },
      transport: { localAddress },
      afiSafis: [{
        config: { family: EVPN_FAMILY, enabled: true },
        mpGracefulRestart: { config: { enabled: true } },
        ...(maxPrefixes > 0 ? { prefixLimits: { family: EVPN_FAMILY, maxPrefixes } } : {}),
      }],
    },
  };
}

const SESSION = ['unknown', 'idle', 'connect', 'active', 'opensent', 'openconfirm', 'established'];

export class GobgpError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

/** Loads the API definitions from `dir`; throws a GobgpError naming the missing file and the package. */
export function loadGobgpApi(dir = GOBGP_PROTO_DIR): { service: grpc.ServiceClientConstructor; root: protobuf.Root } {
  for (const f of FILES) {
    const p = join(dir, f);
    if (!existsSync(p)) throw new GobgpError('ENOENT', `GoBGP API definition ${p} not found: install the Debian package ${PKG} (or set evpn.protoDir)`);
  }
  const def = protoLoader.loadSync(FILES, { includeDirs: [dir], longs: Number, enums: Number, defaults: true, oneofs: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { apipb: { GobgpApi: grpc.ServiceClientConstructor } };
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => (target.startsWith('/') || target.startsWith('google/') ? target : join(dir, target));
  root.loadSync(FILES.map((f) => join(dir, f)));
  return { service: pkg.apipb.GobgpApi, root };
}

/** Both spellings: proto-loader keeps the well-known types' field names (type_url), protobufjs objects may use either. */
type Any = { type_url: string; typeUrl?: string; value: Uint8Array };
type Obj = Record<string, any>;

export class GobgpClient {
  readonly #client: grpc.Client & Record<string, any>;
  readonly #root: protobuf.Root;
  readonly #types = new Map<string, protobuf.Type>();
  #watch: grpc.ClientReadableStream<unknown> | undefined;

  constructor(readonly address: string, api: { service: grpc.ServiceClientConstructor; root: protobuf.Root }) {
    this.#client = new api.service(address, grpc.credentials.createInsecure()) as grpc.Client & Record<string, any>;
    this.#root = api.root;
  }

  close(): void {
    this.#watch?.cancel();
    this.#watch = undefined;
    this.#client.close();
  }

  #pack(type: string, obj: Obj): Any {
    const t = this.#root.lookupType(`apipb.${type}`);
    const err = t.verify(obj);
    if (err !== null) throw new GobgpError('EINVAL', `${type}: ${err}`);
    return { type_url: TYPE_URL + type, typeUrl: TYPE_URL + type, value: t.encode(t.fromObject(obj)).finish() };
  }

  #unpack(a: Any | undefined): { type: string; v: Obj } | undefined {
    const type = anyType(a);
    if (type === undefined) return undefined;
    try {
      const t = this.#type(type);
      return { type, v: t.toObject(t.decode(a!.value), { longs: Number, enums: Number, bytes: Array, defaults: true }) };
    } catch {
      return undefined;
    }
  }

  /** lookupType walks the namespace each time: a flood decodes several messages per path. */
  #type(name: string): protobuf.Type {
    let t = this.#types.get(name);
    if (t === undefined) {
      t = this.#root.lookupType(`apipb.${name}`);
      this.#types.set(name, t);
    }
    return t;
  }

  #call<T>(method: string, req: Obj, timeoutMs = 5000): Promise<T> {
    return new Promise((resolve, reject) => {
      this.#client[method](req, { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: T) => {
        if (err) reject(new GobgpError('EGOBGP', `gobgpd ${method}: ${err.details || err.message}`));
        else resolve(res);
      });
    });
  }

  #stream<T>(method: string, req: Obj, timeoutMs = 10_000): Promise<T[]> {
    return new Promise((resolve, reject) => {
      const out: T[] = [];
      const s = this.#client[method](req, { deadline: Date.now() + timeoutMs }) as grpc.ClientReadableStream<T>;
      s.on('data', (d: T) => out.push(d));
      s.on('error', (err: grpc.ServiceError) => reject(new GobgpError('EGOBGP', `gobgpd ${method}: ${err.details || err.message}`)));
      s.on('end', () => resolve(out));
    });
  }

  /** The global config (asn 0: not started). */
  async getBgp(timeoutMs = 2000): Promise<{ asn: number; routerId: string; listenPort: number }> {
    const r = await this.#call<{ global: Obj }>('getBgp', {}, timeoutMs);
    return { asn: r.global?.asn ?? 0, routerId: r.global?.routerId ?? '', listenPort: r.global?.listenPort ?? 0 };
  }

  startBgp(asn: number, routerId: string, listen: string[], listenPort: number): Promise<unknown> {
    return this.#call('startBgp', { global: { asn, routerId, listenAddresses: listen, listenPort, gracefulRestart: { enabled: true, restartTime: GR_RESTART_S, deferralTime: 2 } } });
  }

  /** Adds a neighbour (peerRequest). */
  addPeer(address: string, remoteAs: number, localAs: number, localAddress: string, maxPrefixes = 0): Promise<unknown> {
    return this.#call('addPeer', peerRequest(address, remoteAs, localAs, localAddress, maxPrefixes));
  }

  /**
   * The same peer with another prefix limit: gobgpd (updateNeighbor,
   * updatePrefixLimitConfig) applies a changed limit without resetting the session,
   * unless the peer already holds more than the new one (then it closes it at once).
   */
  updatePeer(address: string, remoteAs: number, localAs: number, localAddress: string, maxPrefixes: number): Promise<unknown> {
    return this.#call('updatePeer', peerRequest(address, remoteAs, localAs, localAddress, maxPrefixes));
  }

  /** Lets a peer that gobgpd holds down (admin state PFX_CT, or down) connect again. */
  enablePeer(address: string): Promise<unknown> {
    return this.#call('enablePeer', { address });
  }

  deletePeer(address: string): Promise<unknown> {
    return this.#call('deletePeer', { address });
  }

  async listPeers(): Promise<PeerInfo[]> {
    const rs = await this.#stream<{ peer: Obj }>('listPeer', { address: '', enableAdvertised: true });
    return rs.map(({ peer }) => {
      const st = peer.state ?? {};
      const af = (peer.afiSafis ?? []).find((a: Obj) => a.state?.family?.afi === 25) ?? {};
      return {
        address: peer.conf?.neighborAddress ?? st.neighborAddress ?? '',
        remoteAs: peer.conf?.peerAsn ?? st.peerAsn ?? 0,
        state: SESSION[st.sessionState ?? 0] ?? 'unknown',
        received: af.state?.received ?? 0,
        advertised: af.state?.advertised ?? 0,
        gr: peerGr(peer, af),
        prefixLimitDown: st.adminState === ADMIN_PFX_CT,
      };
    });
  }

  /** The API Path for `r` (what AddPath and DeletePath carry). */
  pathOf(r: EvpnRoute, withdraw = false): Obj {
    return this.#path(r, withdraw);
  }

  #path(r: EvpnRoute, withdraw: boolean): Obj {
    const [admin, assigned] = splitRd(r.rd);
    const rd = admin.includes('.')
      ? this.#pack('RouteDistinguisherIPAddress', { admin, assigned })
      : this.#pack('RouteDistinguisherTwoOctetASN', { admin: Number(admin), assigned });
    const nlri = r.type === 2
      ? this.#pack('EVPNMACIPAdvertisementRoute', {
        rd, esi: { type: 0, value: new Uint8Array(9) }, ethernetTag: 0, macAddress: r.mac, ipAddress: r.ip ?? '', labels: [r.vni],
      })
      : this.#pack('EVPNInclusiveMulticastEthernetTagRoute', { rd, ethernetTag: 0, ipAddress: r.originator ?? r.nextHop });
    const comms: Any[] = r.rts.map((rt) => {
      const [asn, n] = rt.split(':').map(Number);
      return this.#pack('TwoOctetAsSpecificExtended', { isTransitive: true, subType: RT_SUBTYPE, asn, localAdmin: n });
    });
    comms.push(this.#pack('EncapExtended', { tunnelType: TUNNEL_VXLAN }));
    if (r.type === 2 && (r.seq > 0 || r.sticky)) comms.push(this.#pack('MacMobilityExtended', { isSticky: r.sticky, sequenceNum: r.seq }));
    const pattrs: Any[] = [
      this.#pack('OriginAttribute', { origin: 0 }),
      this.#pack('NextHopAttribute', { nextHop: r.nextHop }),
      this.#pack('ExtendedCommunitiesAttribute', { communities: comms }),
    ];
    if (r.type === 3) {
      const id = Uint8Array.from(r.nextHop.split('.').map(Number));
      pattrs.push(this.#pack('PmsiTunnelAttribute', { flags: 0, type: PMSI_INGRESS_REPLICATION, label: r.vni, id }));
    }
    return { family: EVPN_FAMILY, nlri, pattrs, isWithdraw: withdraw };
  }

  addPath(r: EvpnRoute): Promise<unknown> {
    return this.#call('addPath', { tableType: 0, path: this.#path(r, false) });
  }

  /** Many routes in one AddPathStream call, in batches (what a bulk load needs: one call, not one per route). */
  addPaths(rs: EvpnRoute[], batch = 500): Promise<void> {
    return new Promise((resolve, reject) => {
      const s = this.#client.addPathStream((err: grpc.ServiceError | null) => {
        if (err) reject(new GobgpError('EGOBGP', `gobgpd addPathStream: ${err.details || err.message}`));
        else resolve();
      }) as grpc.ClientWritableStream<Obj>;
      for (let i = 0; i < rs.length; i += batch) s.write({ tableType: 0, paths: rs.slice(i, i + batch).map((r) => this.#path(r, false)) });
      s.end();
    });
  }

  /**
   * A withdrawal names the NLRI only; it carries no MAC mobility community because
   * gobgpd (fixupApiPath, also run for deletions) refuses a type-2 path whose
   * sequence is below the highest one its RIB holds for the MAC ("invalid MAC
   * mobility sequence number"): exactly the case of a MAC that moved away to a host
   * advertising a higher one. Without the community gobgpd copies the RIB's and
   * deletes the path.
   */
  withdrawalOf(r: EvpnRoute): Obj {
    return this.#path({ ...r, seq: 0, sticky: false }, true);
  }

  deletePath(r: EvpnRoute): Promise<unknown> {
    return this.#call('deletePath', { tableType: 0, family: EVPN_FAMILY, path: this.withdrawalOf(r) });
  }

  /** Decodes one path of the RIB; undefined for what is not a type-2/3 EVPN route (counted by the caller). */
  decode(p: Obj): EvpnRoute | undefined {
    const n = this.#unpack(p.nlri);
    if (n === undefined) return undefined;
    const r: EvpnRoute = { type: 2, rd: '', vni: -1, nextHop: '', rts: [], encap: -1, seq: 0, sticky: false, neighbor: p.neighborIp === '<nil>' ? '' : p.neighborIp ?? '', withdraw: p.isWithdraw === true };
    if (n.type === 'EVPNMACIPAdvertisementRoute') {
      r.mac = String(n.v.macAddress).toLowerCase();
      r.ip = n.v.ipAddress === '<nil>' ? '' : n.v.ipAddress ?? '';
      r.vni = Array.isArray(n.v.labels) && n.v.labels.length > 0 ? n.v.labels[0] : -1;
    } else if (n.type === 'EVPNInclusiveMulticastEthernetTagRoute') {
      r.type = 3;
      r.originator = n.v.ipAddress ?? '';
    } else {
      return undefined;
    }
    const rd = this.#unpack(n.v.rd);
    if (rd !== undefined) r.rd = `${rd.v.admin}:${rd.v.assigned}`;
    for (const a of p.pattrs ?? []) {
      const type = anyType(a);
      // Only the attributes read below are decoded. MP_REACH_NLRI is read for its next
      // hop alone: gobgpd gives each path the attribute of its whole UPDATE, every NLRI
      // of it included (a hundred from a busy peer), and converting it to an object
      // (each NLRI's bytes copied into an Array) made a flood cost a hundred NLRIs per
      // route: 85% of the daemon's CPU (bench/README.md "EVPN route flood").
      if (type === 'MpReachNLRIAttribute') {
        if (r.nextHop === '') r.nextHop = mpReachNextHop(a.value);
        continue;
      }
      if (type === undefined || !DECODED_ATTRS.has(type)) continue;
      const u = this.#unpack(a);
      if (u === undefined) continue;
      if (u.type === 'NextHopAttribute') r.nextHop = u.v.nextHop;
      else if (u.type === 'PmsiTunnelAttribute' && r.type === 3) r.vni = u.v.label;
      else if (u.type === 'ExtendedCommunitiesAttribute') {
        for (const c of u.v.communities ?? []) {
          const e = this.#unpack(c);
          if (e === undefined) continue;
          if (e.type === 'TwoOctetAsSpecificExtended' && e.v.subType === RT_SUBTYPE) r.rts.push(`${e.v.asn}:${e.v.localAdmin}`);
          else if (e.type === 'FourOctetAsSpecificExtended' && e.v.subType === RT_SUBTYPE) r.rts.push(`${e.v.asn}:${e.v.localAdmin}`);
          else if (e.type === 'EncapExtended') r.encap = e.v.tunnelType;
          else if (e.type === 'MacMobilityExtended') {
            r.seq = e.v.sequenceNum;
            r.sticky = e.v.isSticky;
          }
        }
      }
    }
    return r;
  }

  /** The global RIB's EVPN paths now (all, best or not). */
  async listPaths(): Promise<EvpnRoute[]> {
    const rs = await this.#stream<{ destination: { paths: Obj[] } }>('listPath', { tableType: 0, family: EVPN_FAMILY }, 60_000);
    const out: EvpnRoute[] = [];
    for (const d of rs) for (const p of d.destination?.paths ?? []) {
      const r = this.decode(p);
      if (r !== undefined) out.push(r);
    }
    return out;
  }

  /**
   * Follows the best paths of the global RIB (init: the present ones first) and the
   * peers' state changes until cancelled or broken (`end` with the error).
   */
  watch(onPaths: (paths: Obj[]) => void, onPeer: (address: string, state: string, prefixLimitDown: boolean) => void, end: (err: Error | undefined) => void): void {
    this.#watch?.cancel();
    const s = this.#client.watchEvent({ peer: {}, table: { filters: [{ type: 0, init: true }] } }) as grpc.ClientReadableStream<Obj>;
    this.#watch = s;
    let done = false;
    const finish = (e: Error | undefined): void => {
      if (done) return;
      done = true;
      if (this.#watch === s) this.#watch = undefined;
      end(e);
    };
    s.on('data', (ev: Obj) => {
      if (ev.table !== undefined && ev.table !== null) onPaths(ev.table.paths ?? []);
      else if (ev.peer?.peer !== undefined) {
        const st = ev.peer.peer.state ?? {};
        onPeer(st.neighborAddress ?? ev.peer.peer.conf?.neighborAddress ?? '', SESSION[st.sessionState ?? 0] ?? 'unknown', st.adminState === ADMIN_PFX_CT);
      }
    });
    s.on('error', (e: grpc.ServiceError) => finish(e.code === grpc.status.CANCELLED ? undefined : new Error(e.details || e.message)));
    s.on('end', () => finish(undefined));
  }
}

/** A ListPeer answer's graceful restart state for the EVPN family `af`. */
export function peerGr(peer: Obj, af: Obj): PeerGr {
  const g = peer.gracefulRestart ?? {};
  const m = af.mpGracefulRestart?.state ?? {};
  return {
    advertised: m.advertised === true,
    received: m.received === true,
    peerRestartTime: g.peerRestartTime ?? 0,
    peerRestarting: g.peerRestarting === true,
    endOfRibReceived: m.endOfRibReceived === true,
    endOfRibSent: m.endOfRibSent === true,
  };
}

/** Path attributes decode() reads (besides MP_REACH_NLRI, read by mpReachNextHop). */
const DECODED_ATTRS = new Set(['NextHopAttribute', 'PmsiTunnelAttribute', 'ExtendedCommunitiesAttribute']);

/** The message type an Any names ('EVPNMACIPAdvertisementRoute'), undefined without one. */
function anyType(a: Any | undefined): string | undefined {
  const url = a?.type_url ?? a?.typeUrl;
  return typeof url === 'string' ? url.slice(url.lastIndexOf('.') + 1) : undefined;
}

/**
 * The first next hop of an encoded apipb.MpReachNLRIAttribute (field 2, `repeated
 * string next_hops`), '' if none or malformed; the other fields (the NLRIs) are
 * skipped undecoded.
 */
export function mpReachNextHop(buf: Uint8Array | undefined): string {
  if (buf === undefined) return '';
  try {
    const rd = protobuf.Reader.create(buf);
    while (rd.pos < rd.len) {
      const tag = rd.uint32();
      if (tag >>> 3 === 2 && (tag & 7) === 2) return rd.string();
      rd.skipType(tag & 7);
    }
  } catch { /* truncated: no next hop, refused as bad_next_hop */ }
  return '';
}

/** "A:N" -> [A, N]; A an IPv4 address or an AS number. */
function splitRd(rd: string): [string, number] {
  const i = rd.lastIndexOf(':');
  return [rd.slice(0, i), Number(rd.slice(i + 1))];
}
