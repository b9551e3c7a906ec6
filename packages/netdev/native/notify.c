/*
 * sd_notify(3)'s wire protocol, without libsystemd: one AF_UNIX SOCK_DGRAM
 * datagram with the state text ("READY=1\nSTATUS=...") to the socket systemd names
 * in $NOTIFY_SOCKET, a filesystem path or, with a leading '@', an abstract name.
 * Node has no AF_UNIX datagram sockets, and linking libsystemd for one sendto()
 * would add a build dependency (its headers) and a runtime one.
 */
#include "netdev.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int nd_notify(const char *path, const char *text, size_t len) {
  struct sockaddr_un sa;
  size_t plen = strlen(path);
  if (plen == 0 || plen > sizeof sa.sun_path) return -EINVAL;
  if (path[0] != '/' && path[0] != '@') return -EAFNOSUPPORT; /* sd_notify accepts only these two forms */
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, path, plen);
  if (path[0] == '@') sa.sun_path[0] = '\0'; /* abstract: the name's length counts, no terminator */
  else if (plen == sizeof sa.sun_path) return -EINVAL; /* a path needs room for its NUL */
  socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + (path[0] == '@' ? 0 : 1));
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  ssize_t n = sendto(fd, text, len, MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
  int e = n < 0 ? errno : 0;
  close(fd);
  if (e) return -e;
  return (size_t)n == len ? 0 : -EMSGSIZE;
}
