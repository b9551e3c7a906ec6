/*
 * The router's uplink: an existing interface (a NIC, or a veth in labs) read and
 * written through AF_PACKET, on which the router is a host of its own, with its
 * own MAC and IPv4 address, like a home router's WAN port. The host's network
 * stack is not touched: no address on the interface, no iptables, no ip_forward.
 *
 * It answers ARP for its address, resolves next hops (the gateway, or the
 * destination itself when it is on the uplink subnet), and announces itself with a
 * gratuitous ARP when it comes up. IPv4 packets addressed to it go to `onIp`
 * (NAPT's inbound side), translated in place in the receive ring.
 *
 * The interface need not exist when the daemon starts, and may vanish and come
 * back (a NIC reset, a veth recreated): `poll()`, called every second by the
 * router, attaches whenever it is there and not yet attached; the uplink is
 * 'waiting' meanwhile, and every attach is announced with a gratuitous ARP.
 */
import * as netdev from '@vswitch/netdev';
import {
  ARP_REPLY, ARP_REQUEST, ETH_HLEN, IPV4_OK, MAC_BROADCAST, type PortRx, arpOper, arpSha, arpSpa, arpTpa,
  checkArp, checkIpv4, etherType, formatIp4, formatMac, ip4Dst, ip4TotalLen, readMac,
} from '@vswitch/switch';
import { AttachIo } from '@vswitch/switch/ports';
import { ArpCache } from './arp-cache.js';
import { arpFrame, writeEth } from './frames.js';

export interface UplinkOptions {
  ifname: string;
  mac: number;
  address: number;
  prefix: number;
  /** Default gateway on the uplink segment; 0 = only the uplink subnet is reachable. */
  gateway: number;
  clock: () => number;
}

export interface UplinkCounters {
  rxFrames: number;
  txFrames: number;
  txErrors: number;
  arpReplies: number;
  ignored: number;
  malformed: number;
  noRoute: number;
}

export class Uplink {
  readonly arp: ArpCache;
  readonly counters: UplinkCounters = { rxFrames: 0, txFrames: 0, txErrors: 0, arpReplies: 0, ignored: 0, malformed: 0, noRoute: 0 };
  readonly mask: number;
  up = false;
  downReason = 'not started';
  /** Times the interface was attached, and lost. */
  attaches = 0;
  downEvents = 0;
  /** IPv4 packets addressed to the uplink address: buf[ipOff..ipOff+ipLen), with room for a header before. */
  onIp: (buf: Uint8Array, ipOff: number, ipLen: number) => void = () => {};
  #io: AttachIo | undefined;
  readonly #out = Buffer.alloc(128);

  constructor(readonly opts: UplinkOptions) {
    this.mask = opts.prefix === 0 ? 0 : (0xffffffff << (32 - opts.prefix)) >>> 0;
    this.arp = new ArpCache(opts.clock);
  }

  get ip(): number { return this.opts.address; }

  /** Attaches now if the interface exists; otherwise `poll()` keeps trying. */
  start(): void {
    this.poll();
  }

  /** Attaches the interface if it is present and we are not attached. Returns whether up. */
  poll(): boolean {
    if (this.up) return true;
    if (netdev.ifIndex(this.opts.ifname) === 0) {
      this.downReason = `waiting for interface ${this.opts.ifname}`;
      return false;
    }
    this.#io?.close();
    let io: AttachIo;
    try {
      io = new AttachIo(this.opts.ifname);
    } catch (e) {
      this.downReason = `cannot attach ${this.opts.ifname}: ${(e as Error).message}`;
      return false;
    }
    this.#io = io;
    const rx: PortRx = {
      batch: (buf, offs, lens, count) => {
        for (let i = 0; i < count; i++) this.#input(buf, offs[i], lens[i]);
      },
      frame: (buf, off, len) => this.#input(buf, off, len),
      gone: (_errno, why) => {
        this.up = false;
        this.downReason = why;
        this.downEvents++;
      },
    };
    io.start(rx);
    this.up = true;
    this.downReason = '';
    this.attaches++;
    this.announce();
    return true;
  }

  close(): void {
    this.#io?.close();
    this.#io = undefined;
    this.up = false;
  }

  /** Gratuitous ARP: tells the segment (and switches on it) where our address lives. */
  announce(): void {
    const n = arpFrame(this.#out, ARP_REQUEST, MAC_BROADCAST, this.opts.mac, this.ip, 0, this.ip);
    this.#send(this.#out, 0, n);
  }

  describe(): Record<string, string | number | boolean> {
    return {
      interface: this.opts.ifname, mac: formatMac(this.opts.mac), address: `${formatIp4(this.ip)}/${this.opts.prefix}`,
      gateway: this.opts.gateway ? formatIp4(this.opts.gateway) : '', state: this.up ? 'up' : `down (${this.downReason})`,
    };
  }

  /** Sends buf[ipOff..ipOff+ipLen) towards `dst`; ETH_HLEN bytes before ipOff are overwritten. */
  sendIp(buf: Uint8Array, ipOff: number, ipLen: number, dst: number): void {
    const nextHop = ((dst & this.mask) >>> 0) === ((this.ip & this.mask) >>> 0) ? dst : this.opts.gateway;
    if (nextHop === 0) {
      this.counters.noRoute++;
      return;
    }
    const frameOff = ipOff - ETH_HLEN;
    const mac = this.arp.lookup(nextHop);
    if (mac === undefined) {
      const copy = Buffer.allocUnsafe(ETH_HLEN + ipLen);
      copy.set(buf.subarray(frameOff, ipOff + ipLen));
      if (this.arp.hold(nextHop, copy)) {
        const n = arpFrame(this.#out, ARP_REQUEST, MAC_BROADCAST, this.opts.mac, this.ip, 0, nextHop);
        this.#send(this.#out, 0, n);
      }
      return;
    }
    writeEth(buf, mac, this.opts.mac, 0x0800, frameOff);
    this.#send(buf, frameOff, ETH_HLEN + ipLen);
  }

  #send(buf: Uint8Array, off: number, len: number): void {
    const io = this.#io;
    if (io === undefined) return;
    if (io.send(buf, off, len) < 0) this.counters.txErrors++;
    else this.counters.txFrames++;
  }

  #input(buf: Uint8Array, off: number, len: number): void {
    this.counters.rxFrames++;
    if (len < ETH_HLEN) {
      this.counters.malformed++;
      return;
    }
    const dst = readMac(buf, off);
    if (dst !== this.opts.mac && dst !== MAC_BROADCAST) return; // promiscuous socket: others' traffic
    const type = etherType(buf, off);
    if (type === 0x0806) this.#onArp(buf, off + ETH_HLEN, len - ETH_HLEN);
    else if (type === 0x0800 && dst === this.opts.mac) {
      const ip = off + ETH_HLEN;
      if (checkIpv4(buf, ip, len - ETH_HLEN) !== IPV4_OK) {
        this.counters.malformed++;
        return;
      }
      if (ip4Dst(buf, ip) !== this.ip) {
        this.counters.ignored++;
        return;
      }
      this.onIp(buf, ip, ip4TotalLen(buf, ip));
    } else this.counters.ignored++;
  }

  #onArp(buf: Uint8Array, a: number, len: number): void {
    if (!checkArp(buf, a, len)) {
      this.counters.malformed++;
      return;
    }
    const oper = arpOper(buf, a);
    const spa = arpSpa(buf, a);
    const sha = arpSha(buf, a);
    const tpa = arpTpa(buf, a);
    if (spa !== 0 && spa !== this.ip && (tpa === this.ip || oper === ARP_REPLY || this.arp.lookup(spa) !== undefined)) {
      for (const pending of this.arp.learn(spa, sha)) {
        writeEth(pending, sha, this.opts.mac, 0x0800);
        this.#send(pending, 0, pending.length);
      }
    }
    if (oper === ARP_REQUEST && tpa === this.ip && spa !== this.ip) {
      const n = arpFrame(this.#out, ARP_REPLY, sha, this.opts.mac, this.ip, sha, spa);
      this.counters.arpReplies++;
      this.#send(this.#out, 0, n);
    }
  }
}
