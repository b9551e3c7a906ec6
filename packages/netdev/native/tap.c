/*
 * TUN/TAP: creating (or re-attaching to) a TAP device and draining its fd.
 *
 * The fd is opened non-blocking because it is driven by the node event loop and
 * a blocking read would stall every other port. Configuration order matters:
 * persistence is set last, after the link is up, so a failure part-way never
 * leaves behind a persistent device that nobody asked for.
 */
#include "netdev.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <net/if.h>
#include <linux/if_tun.h>

int nd_tap_open(const char *name, int flags, long owner, long group, char kname[16], const char **op) {
  struct ifreq ifr;
  int fd, e;

  *op = "open /dev/net/tun";
  fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return -errno;

  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  if (flags & ND_TAP_VNET_HDR) ifr.ifr_flags |= IFF_VNET_HDR;
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  *op = "TUNSETIFF";
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) goto fail;
  memcpy(kname, ifr.ifr_name, IFNAMSIZ);
  kname[IFNAMSIZ - 1] = 0;

  /*
   * Offloads: with the virtio-net header the kernel may hand us GSO super-frames
   * (up to 64 KB) and checksum-partial frames, and TUNSETOFFLOAD tells it which
   * (this turns on TSO and tx-checksumming on the device's side). Without the
   * header the offloads are reset explicitly: a persistent TAP keeps the flags of
   * an earlier open, and GSO frames without a header would be unusable.
   * TUNSETOFFLOAD takes its flags by value; TUNSETVNETHDRSZ by pointer.
   */
  if (flags & ND_TAP_VNET_HDR) {
    int sz = (int)ND_VNET_HDR_LEN; /* the PACKET_VNET_HDR layout: one format for every port */
    *op = "TUNSETVNETHDRSZ";
    if (ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0) goto fail;
    *op = "TUNSETOFFLOAD";
    if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN)) < 0) goto fail;
  } else {
    *op = "TUNSETOFFLOAD";
    if (ioctl(fd, TUNSETOFFLOAD, 0UL) < 0) goto fail;
  }
  if (owner >= 0) {
    *op = "TUNSETOWNER";
    if (ioctl(fd, TUNSETOWNER, (unsigned long)owner) < 0) goto fail;
  }
  if (group >= 0) {
    *op = "TUNSETGROUP";
    if (ioctl(fd, TUNSETGROUP, (unsigned long)group) < 0) goto fail;
  }
  *op = "SIOCSIFFLAGS";
  e = nd_link_set_up(kname, true);
  if (e < 0) { errno = -e; goto fail; }
  if (flags & ND_TAP_PERSIST) {
    *op = "TUNSETPERSIST";
    if (ioctl(fd, TUNSETPERSIST, 1UL) < 0) goto fail;
  }
  return fd;

fail:
  e = errno;
  close(fd);
  return -e;
}

int nd_tap_set_persist(int fd, bool on) {
  return ioctl(fd, TUNSETPERSIST, on ? 1UL : 0UL) < 0 ? -errno : 0;
}

/*
 * One read() per frame straight into the arena: a TAP has no batched read, and
 * reading in place avoids a copy. With IFF_VNET_HDR the kernel writes the 10-byte
 * header and the frame contiguously, which is exactly the ring's layout (header
 * right before the frame); without it the frame lands after a zeroed header.
 * Before each read the arena must have room for a maximal frame, else we stop
 * and let the level-triggered poll bring us back; so we do once the fair-share
 * budget is spent (fair.c).
 */
int nd_tap_drain(int fd, bool vnet, nd_out *o, nd_stats *s, int *fatal) {
  int added = 0;
  const size_t hl = ND_VNET_HDR_LEN;
  *fatal = 0;
  o->more = true;
  while (o->n < o->max && o->budget > 0) {
    size_t slot = ND_ALIGN_UP(o->pos);
    if (slot > o->cap || o->cap - slot < hl + ND_READ_MAX) break;
    uint8_t *p = o->base + slot;
    if (!vnet) memset(p, 0, hl);
    ssize_t r = vnet ? read(fd, p, ND_READ_MAX) : read(fd, p + hl, ND_READ_MAX);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) { o->more = false; break; }
      *fatal = errno; /* EBADFD once the device is deleted */
      o->more = false;
      break;
    }
    if ((size_t)r >= ND_READ_MAX) { s->rx_truncated++; continue; }
    size_t len = vnet ? ((size_t)r >= hl ? (size_t)r - hl : 0) : (size_t)r;
    if (len < 14) { s->rx_dropped++; continue; }
    o->offs[o->n] = (int32_t)(slot + hl);
    o->lens[o->n] = (int32_t)len;
    o->n++;
    o->pos = slot + hl + len;
    nd_fair_charge(o, len);
    s->rx_frames++;
    s->rx_bytes += (uint64_t)len;
    added++;
  }
  return added;
}
