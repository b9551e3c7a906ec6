/*
 * An "internet" behind a router's uplink: a namespace holding one end of a veth
 * with a TEST-NET-2 address (198.51.100.1/24 by default), the other end left in
 * the root namespace, up, with no address and IPv6 off, for the daemon to attach
 * as `routers.<r>.uplink.interface` (the router owns its own MAC and IP on it).
 * Extra addresses on the namespace's loopback stand for hosts further away,
 * reached through the uplink gateway (the namespace itself).
 *
 * Also a tiny UDP tool (python3) used by the NAT tests: an echo server that
 * prints each peer, and a client on a connected socket that tells a reply from a
 * timeout and from ECONNREFUSED (an ICMP port unreachable that reached it).
 */
import { addNamespace, addVeth, ifname, nsExec, nsname, q, sh, toolFile } from './run.js';
import { quietNamespace } from './vm.js';

export interface Internet {
  ns: string;
  /** The veth end inside the namespace. */
  ifname: string;
  /** The root-namespace end: the router's uplink interface. */
  uplink: string;
  /** The namespace's address on the uplink segment (no prefix). */
  ip: string;
  /** Addresses on the namespace's loopback: hosts behind the uplink gateway. */
  far: string[];
}

export async function makeInternet(
  name = 'inet',
  { cidr = '198.51.100.1/24', far = [] as string[] } = {},
): Promise<Internet> {
  const ns = nsname(name);
  const inner = ifname('in');
  const uplink = ifname('up');
  await addNamespace(ns);
  await quietNamespace(ns);
  await addVeth(uplink, inner);
  await sh(`sysctl -qw net.ipv6.conf.${uplink}.disable_ipv6=1; ip link set ${q(uplink)} up`);
  await sh(`ip link set ${q(inner)} netns ${q(ns)}`);
  await nsExec(ns, `ip link set ${q(inner)} up && ip addr add ${q(cidr)} dev ${q(inner)}`);
  for (const a of far) await nsExec(ns, `ip addr add ${q(a)}/32 dev lo`);
  return { ns, ifname: inner, uplink, ip: cidr.split('/')[0], far };
}

const UDP_TOOL = String.raw`
import socket, sys
mode = sys.argv[1]
if mode == 'serve':
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', int(sys.argv[2])))
    print('listening', flush=True)
    while True:
        d, a = s.recvfrom(65535)
        print('peer %s:%d %s' % (a[0], a[1], d.decode(errors='replace')), flush=True)
        s.sendto(d, a)
else:
    host, port = sys.argv[2], int(sys.argv[3])
    sport = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    msg = sys.argv[5] if len(sys.argv) > 5 else 'hello'
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', sport))
    s.connect((host, port))
    s.settimeout(float(sys.argv[6]) if len(sys.argv) > 6 else 2.0)
    try:
        s.send(msg.encode())
        print('reply ' + s.recv(65535).decode(errors='replace'))
    except ConnectionRefusedError:
        print('refused')
    except socket.timeout:
        print('timeout')
`;

/** Path of the UDP tool: `python3 TOOL serve PORT` / `python3 TOOL send HOST PORT [SPORT [MSG [TIMEOUT]]]`. */
export function udpTool(): string {
  return toolFile('udp.py', UDP_TOOL);
}

/** Sends one datagram from `ns` on a connected socket: 'reply <msg>', 'timeout' or 'refused'. */
export async function udpSend(ns: string, host: string, port: number, { sport = 0, msg = 'hello', timeoutSec = 2 } = {}): Promise<string> {
  return (await nsExec(ns, `/usr/bin/python3 ${q(udpTool())} send ${host} ${port} ${sport} ${q(msg)} ${timeoutSec}`, {
    timeoutMs: (timeoutSec + 10) * 1000,
  })).trim();
}
