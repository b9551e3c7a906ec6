/*
 * Interface flags through the classic ioctl interface. A throwaway AF_INET
 * datagram socket is the handle for SIOC[GS]IFFLAGS; it is created per call, so
 * it always acts on the caller's current network namespace. This is not on the
 * data path.
 */
#include "netdev.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <net/if.h>

int nd_link_set_up(const char *name, bool up) {
  struct ifreq ifr;
  int e = 0;
  if (strlen(name) >= IFNAMSIZ) return -EINVAL;
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -errno;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) { e = -errno; goto out; }
  short want = up ? (short)(ifr.ifr_flags | IFF_UP) : (short)(ifr.ifr_flags & ~IFF_UP);
  if (want != ifr.ifr_flags) {
    ifr.ifr_flags = want;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) e = -errno;
  }
out:
  close(s);
  return e;
}
