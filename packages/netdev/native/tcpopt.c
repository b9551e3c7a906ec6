/*
 * Socket options on TCP sockets the addon did not open (Node's net.Socket, by its
 * fd), for the host NAT (packages/nat/src/host/socket-rcvbuf.ts). Node exposes
 * no SO_RCVBUF for TCP sockets. A single syscall that reports -errno instead of
 * throwing: a socket that went away meanwhile (EBADF) is the caller's ordinary
 * case, not an exception.
 */
#include <errno.h>
#include <sys/socket.h>

#include "netdev.h"

int nd_sock_rcvbuf(int fd, int bytes) {
  if (bytes >= 0) return setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes) < 0 ? -errno : 0;
  int cur = 0;
  socklen_t len = sizeof cur;
  return getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &cur, &len) < 0 ? -errno : cur;
}
