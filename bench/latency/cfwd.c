/* cfwd: the least a userspace switch can do per frame, in C: two TAPs (opened
 * as vswitch opens them: IFF_VNET_HDR, TSO/csum offloads), one epoll loop, every
 * frame read from one written to the other with its virtio_net_hdr, no lookup.
 * It stands for the exact-match cache's fast path (bench/DESIGN-flow-cache.md):
 * a frame whose decision is cached goes read -> hash probe -> write without
 * entering JS; a probe is tens of ns, so this forwarder's latency is the
 * upper bound of what the cache can reach, and vswitch's minus this one's is
 * the most the cache can save.
 *
 *   cfwd TAP1 TAP2        (foreground; anchors.sh moves the TAPs into the VMs)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int tap(const char *name) {
  struct ifreq ifr;
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC), hs = 10;
  if (fd < 0) return -1;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETVNETHDRSZ, &hs) < 0 ||
      ioctl(fd, TUNSETOFFLOAD, (unsigned long)(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN)) < 0) {
    perror(name);
    return -1;
  }
  return fd;
}

static unsigned char buf[65536 + 64];

int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: cfwd TAP1 TAP2\n"); return 2; }
  int fd[2] = { tap(argv[1]), tap(argv[2]) };
  if (fd[0] < 0 || fd[1] < 0) return 1;
  int ep = epoll_create1(EPOLL_CLOEXEC);
  for (int i = 0; i < 2; i++) {
    struct epoll_event ev = { .events = EPOLLIN, .data.u32 = i };
    epoll_ctl(ep, EPOLL_CTL_ADD, fd[i], &ev);
  }
  for (;;) {
    struct epoll_event evs[2];
    int n = epoll_wait(ep, evs, 2, -1);
    if (n < 0 && errno != EINTR) { perror("epoll_wait"); return 1; }
    for (int k = 0; k < n; k++) {
      int i = evs[k].data.u32;
      for (;;) {
        ssize_t r = read(fd[i], buf, sizeof buf);
        if (r <= 0) break;
        if (write(fd[1 - i], buf, r) < 0 && errno != EAGAIN && errno != EIO) { perror("write"); }
      }
    }
  }
}
