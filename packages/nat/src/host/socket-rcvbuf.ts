/*
 * The receive buffer of the host NAT's TCP sockets (config `uplink.rcvbuf`).
 *
 * Model. The host NAT terminates a VM's TCP connection and reads the outside's
 * data from an ordinary socket of the host; what the outside may have in flight
 * is that socket's receive window, which the kernel autotunes up to
 * net.ipv4.tcp_rmem's maximum (32 MB by default) from what the reader drains per
 * RTT. Over a same-host or LAN path the RTT is tiny, the daemon drains fast, and
 * the queue grows to tens of MB that the VM cannot take any faster; those bytes
 * then pass through the CPU caches cold (bench/README.md, issue 14: IPv6 down
 * 0.83–0.89× pasta -6 with the queue at 1–33 MB; tcp_rmem capped at 4 MB made
 * IPv6 equal to IPv4).
 *
 * `rcvbuf: auto` (the default, RCVBUF_AUTO) leaves the kernel's autotuning alone.
 * `rcvbuf: BYTES` sets SO_RCVBUF on each host socket once it is connected (or
 * accepted, for port forwards): the kernel doubles it for its bookkeeping and
 * turns autotuning off for that socket, so the queue never exceeds it, and a
 * path's rate is at most about BYTES / RTT (2 MB: about 1.6 Gbit/s at 10 ms,
 * 170 Mbit/s at 100 ms). A setting for hosts whose flows stay local or on a LAN,
 * hence never the default. One setsockopt per connection, nothing per packet. A
 * refused setsockopt is counted (`rcvbufFailed`) and the socket keeps autotuning.
 *
 * Tried and dropped (bench/README.md): TCP_WINDOW_CLAMP, as pasta sets it to its
 * guest's window: the kernel raises the clamp again whenever autotuning grows the
 * buffer, so it must be re-set per ACK, and the queue's memory still reached 14 MB
 * under a 4 MB clamp (`ss -tmi`); clamped to the VM's own window it bounds
 * nothing, a VM's autotuned window reaching 20+ MB as well.
 */
import type net from 'node:net';
import { socketRcvbuf } from '@vswitch/netdev';

/** The kernel's autotuning alone: SO_RCVBUF is never set. */
export const RCVBUF_AUTO = 0;
/** Bounds of a configured size (the kernel clamps to net.core.rmem_max unless privileged: SO_RCVBUF is not forced). */
export const RCVBUF_MIN = 65536;
export const RCVBUF_MAX = 1 << 30;

/** Config value -> tuning number: "auto" (or absent), or bytes. */
export function parseRcvbuf(v: 'auto' | number | undefined): number {
  return v === undefined || v === 'auto' ? RCVBUF_AUTO : v;
}

/** Tuning number -> what `router show` prints. */
export function describeRcvbuf(b: number): string | number {
  return b === RCVBUF_AUTO ? 'auto' : b;
}

/** The file descriptor behind a connected net.Socket, or -1 (not connected, or closed). */
export function socketFd(sock: net.Socket): number {
  const h = (sock as unknown as { _handle?: { fd?: number } | null })._handle;
  const fd = h?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : -1;
}

/** Sets SO_RCVBUF on sock; 0, or -errno (-9 EBADF when the socket has no descriptor). */
export function setRcvbuf(sock: net.Socket, bytes: number): number {
  const fd = socketFd(sock);
  return fd < 0 ? -9 : socketRcvbuf(fd, bytes);
}

/** The socket's SO_RCVBUF now (the kernel's doubled value), or -errno. */
export function rcvbufOf(sock: net.Socket): number {
  const fd = socketFd(sock);
  return fd < 0 ? -9 : socketRcvbuf(fd, -1);
}
