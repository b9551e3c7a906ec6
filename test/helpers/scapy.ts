/*
 * Crafted frames with scapy (Debian's python3-scapy, so /usr/bin/python3, not the
 * pyenv python3 on PATH) sent with sendp() on an interface inside a namespace.
 * Frames are given as scapy expressions; the builders below make the usual ones.
 */
import { nsExec } from './run.js';

export const PYTHON = '/usr/bin/python3';

function pyStr(s: string): string {
  return JSON.stringify(s);
}

/** Ethernet header expression. `type` forces the outer EtherType (e.g. 0x88a8). */
export function ether(src: string, dst: string, type?: number): string {
  return `Ether(src=${pyStr(src)}, dst=${pyStr(dst)}${type !== undefined ? `, type=${type}` : ''})`;
}

/** An 802.1Q tag (also used as the 802.1ad S-tag body: the TPID is the previous header's type). */
export function dot1q(vid: number, prio = 0): string {
  return `Dot1Q(vlan=${vid}, prio=${prio})`;
}

export function arpRequest(srcMac: string, srcIp: string, dstIp: string): string {
  return `ARP(op=1, hwsrc=${pyStr(srcMac)}, psrc=${pyStr(srcIp)}, pdst=${pyStr(dstIp)})`;
}

export function icmpEcho(srcIp: string, dstIp: string, marker = 'vswitch-test'): string {
  return `IP(src=${pyStr(srcIp)}, dst=${pyStr(dstIp)})/ICMP(id=4242, seq=1)/Raw(load=${pyStr(marker)})`;
}

/** Tagged frame: ether / Dot1Q(vid) / payload. */
export function tagged(src: string, dst: string, vid: number, payload: string, prio = 0): string {
  return `${ether(src, dst)}/${dot1q(vid, prio)}/${payload}`;
}

/** Double-tagged 802.1Q-in-802.1Q: outer / inner / payload (outer 0 = priority tag). */
export function doubleTagged(src: string, dst: string, outer: number, inner: number, payload: string): string {
  return `${ether(src, dst)}/${dot1q(outer)}/${dot1q(inner)}/${payload}`;
}

/** 802.1ad S-tagged (TPID 0x88a8) frame, optionally with a C-tag inside. */
export function sTagged(src: string, dst: string, svid: number, payload: string, cvid?: number): string {
  return `${ether(src, dst, 0x88a8)}/${dot1q(svid)}/${cvid !== undefined ? `${dot1q(cvid)}/` : ''}${payload}`;
}

/** Priority-tagged (VID 0) frame. */
export function priorityTagged(src: string, dst: string, payload: string, prio = 5): string {
  return `${ether(src, dst)}/${dot1q(0, prio)}/${payload}`;
}

/** Sends each frame expression `count` times on `iface` in `ns`; returns the number of frames sent. */
export async function sendFrames(ns: string, iface: string, frames: string[], count = 1): Promise<number> {
  const script = [
    'import sys',
    'from scapy.all import Ether, Dot1Q, ARP, IP, ICMP, Raw, sendp, conf',
    'conf.verb = 0',
    `frames = [${frames.join(',\n  ')}]`,
    `sendp(frames * ${count}, iface=${pyStr(iface)}, inter=0.01)`,
    'print(len(frames) * ' + count + ')',
  ].join('\n');
  const out = await nsExec(ns, `${PYTHON} -c ${shellQuote(script)}`, { timeoutMs: 60_000 });
  return Number(out.trim().split('\n').pop());
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
