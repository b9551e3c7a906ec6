/*
 * AF_PACKET: attaching to an existing interface and draining the socket.
 *
 * Why these socket options:
 * - PACKET_VNET_HDR: without it, GSO super-frames and checksum-partial frames
 *   (normal on veths and with GRO) arrive as if complete and are forwarded broken.
 * - PACKET_AUXDATA: the kernel strips 802.1Q/802.1ad tags into metadata before
 *   packet taps see the frame; auxdata is the only way to get them back.
 * - PACKET_IGNORE_OUTGOING: the kernel already hides a socket's own sends from
 *   it; this hides the *host's* transmissions on the interface. Frames the switch
 *   sends out of a packet socket never reach the host's own stack (no loopback), so
 *   forwarding the host's frames to VMs would carry only half of any conversation;
 *   a host that must talk to its VMs gets a port of its own (a TAP).
 * - No PACKET_QDISC_BYPASS: frames go through the interface's qdisc, so tcpdump on
 *   the interface shows what the switch sends and tc shaping applies; bypassing
 *   saves little next to the syscall itself.
 * The socket is created with protocol 0 and only bound with ETH_P_ALL, so it
 * never sees frames of other interfaces between socket() and bind().
 */
#include "netdev.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>

static int set_int(int fd, int level, int opt, int val) {
  return setsockopt(fd, level, opt, &val, sizeof val) < 0 ? -errno : 0;
}

int nd_packet_open(const char *ifname, int *ifindex, bool *vnet, const char **op) {
  int fd, e;
  *op = "if_nametoindex";
  if (strlen(ifname) >= IFNAMSIZ) return -EINVAL;
  int idx = (int)if_nametoindex(ifname);
  if (idx == 0) return errno == ENXIO || errno == 0 ? -ENODEV : -errno;

  /* Up before bind: binding to a down device sets sk_err = ENETDOWN at once. */
  *op = "SIOCSIFFLAGS";
  if ((e = nd_link_set_up(ifname, true)) < 0) return e;

  *op = "socket(AF_PACKET)";
  fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;

  *op = "PACKET_AUXDATA";
  if ((e = set_int(fd, SOL_PACKET, PACKET_AUXDATA, 1)) < 0) goto fail;
  *op = "PACKET_VNET_HDR";
  if ((e = set_int(fd, SOL_PACKET, PACKET_VNET_HDR, 1)) < 0) goto fail;
  /* No fallback (kernel >= 4.20): without it the host's egress would be switched. */
  *op = "PACKET_IGNORE_OUTGOING";
  if ((e = set_int(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)) < 0) goto fail;
  *op = "SO_RCVBUF";
  if (set_int(fd, SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20) < 0 &&
      (e = set_int(fd, SOL_SOCKET, SO_RCVBUF, 8 << 20)) < 0) goto fail;
  *op = "SO_SNDBUF";
  if (set_int(fd, SOL_SOCKET, SO_SNDBUFFORCE, 8 << 20) < 0 &&
      (e = set_int(fd, SOL_SOCKET, SO_SNDBUF, 8 << 20)) < 0) goto fail;

  struct sockaddr_ll sll;
  memset(&sll, 0, sizeof sll);
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ALL);
  sll.sll_ifindex = idx;
  *op = "bind(AF_PACKET)";
  if (bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0) { e = -errno; goto fail; }

  struct packet_mreq mr;
  memset(&mr, 0, sizeof mr);
  mr.mr_ifindex = idx;
  mr.mr_type = PACKET_MR_PROMISC;
  *op = "PACKET_ADD_MEMBERSHIP";
  if (setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) < 0) { e = -errno; goto fail; }

  *ifindex = idx;
  *vnet = true;
  return fd;

fail:
  close(fd);
  return e;
}

/*
 * Whether the socket is still bound to a device. On NETDEV_DOWN the kernel sets
 * sk_err = ENETDOWN but keeps the binding and re-hooks on NETDEV_UP; on
 * NETDEV_UNREGISTER (deleted, or moved to another netns) it also resets the
 * bound ifindex to -1, which getsockname reports. That is the only reliable way
 * to tell "link down, will come back" from "dead socket".
 */
bool nd_packet_bound(int fd) {
  struct sockaddr_ll sll;
  socklen_t sl = sizeof sll;
  memset(&sll, 0, sizeof sll);
  if (getsockname(fd, (struct sockaddr *)&sll, &sl) < 0) return false;
  return sll.sll_ifindex > 0;
}

static void parse_aux(struct msghdr *msg, nd_vlan *vlan) {
  vlan->present = false;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
    if (c->cmsg_level != SOL_PACKET || c->cmsg_type != PACKET_AUXDATA) continue;
    if (c->cmsg_len < CMSG_LEN(sizeof(struct tpacket_auxdata))) continue;
    struct tpacket_auxdata aux;
    memcpy(&aux, CMSG_DATA(c), sizeof aux);
    if ((aux.tp_status & TP_STATUS_VLAN_VALID) || aux.tp_vlan_tci) {
      vlan->present = true;
      vlan->tci = aux.tp_vlan_tci;
      vlan->tpid = (aux.tp_status & TP_STATUS_VLAN_TPID_VALID) ? aux.tp_vlan_tpid : 0x8100;
    }
  }
}

/* Little-endian u16 field of a virtio_net_hdr, moved by `delta` (a tag put in front of it). */
static void vnet_shift(uint8_t *p, int delta) {
  int v = (p[0] | p[1] << 8) + delta;
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}

/*
 * recvmsg per frame, straight into the arena after the headroom (room for the
 * frame's zeroed vnet header and a restored tag). A GSO
 * super-frame is copied to g->buf and segmented from there into the arena; if
 * its segments do not all fit, g stays active and we stop so the caller can hand
 * the batch to JS and continue with an empty ring (see addon.c on_poll).
 *
 * With keep_gso (a bridge port, whose egress can segment for the ports that need
 * it), GSO super-frames and checksum-partial frames are delivered whole instead,
 * with the kernel's header in front; a restored tag moves its offsets by 4.
 */
int nd_packet_drain(int fd, bool keep_gso, nd_out *o, nd_gso *g, nd_stats *s, int *fatal) {
  int n0 = o->n;
  /* Bounds the loop even when every recvmsg returns a skippable error. */
  int tries = 2 * ND_RING_MAX_FRAMES;
  *fatal = 0;
  o->more = true;
  while (o->n < o->max && o->budget > 0 && tries-- > 0) {
    size_t slot = ND_ALIGN_UP(o->pos);
    if (slot > o->cap || o->cap - slot < ND_RX_HEADROOM + ND_READ_MAX) break;
    uint8_t *f = o->base + slot + ND_RX_HEADROOM;
    uint8_t vh[ND_VNET_HDR_LEN];
    union {
      struct cmsghdr align;
      char buf[CMSG_SPACE(sizeof(struct tpacket_auxdata))];
    } cbuf;
    struct iovec iov[2] = { { vh, sizeof vh }, { f, ND_READ_MAX } };
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = iov;
    msg.msg_iovlen = 2;
    msg.msg_control = cbuf.buf;
    msg.msg_controllen = sizeof cbuf.buf;

    ssize_t r = recvmsg(fd, &msg, MSG_TRUNC | MSG_DONTWAIT);
    if (r < 0) {
      int e = errno;
      if (e == EINTR) continue;
      if (e == EAGAIN || e == EWOULDBLOCK) { o->more = false; break; }
      if (e == ENETDOWN && nd_packet_bound(fd)) { s->link_down++; continue; }
      /* The kernel could not express the skb in a vnet header; it dropped it. */
      if (e == EINVAL) { s->rx_dropped++; continue; }
      *fatal = e;
      o->more = false;
      break;
    }
    if ((size_t)r < ND_VNET_HDR_LEN) { s->rx_dropped++; continue; }
    size_t len = (size_t)r - ND_VNET_HDR_LEN;
    if ((msg.msg_flags & MSG_TRUNC) || len >= ND_READ_MAX) { s->rx_truncated++; continue; }
    if (len < 14) { s->rx_dropped++; continue; }

    nd_vlan vlan;
    nd_vnet v;
    parse_aux(&msg, &vlan);
    nd_vnet_decode(&v, vh);

    if (keep_gso && (v.gso_type != VNET_GSO_NONE || (v.flags & VNET_F_NEEDS_CSUM))) {
      if (!nd_out_commit(o, slot, len, &vlan, s)) { s->rx_dropped++; continue; }
      uint8_t *h = o->base + o->offs[o->n - 1] - ND_VNET_HDR_LEN;
      memcpy(h, vh, ND_VNET_HDR_LEN);
      if (vlan.present) {
        if (v.hdr_len) vnet_shift(h + 2, ND_VLAN_RESERVE);
        if (v.flags & VNET_F_NEEDS_CSUM) vnet_shift(h + 6, ND_VLAN_RESERVE);
      }
      s->rx_offloaded++;
      continue;
    }
    if (v.gso_type != VNET_GSO_NONE) {
      if (nd_gso_prepare(g, f, len, &v, &vlan) < 0) { s->gso_dropped++; continue; }
      s->gso_segmented++;
      nd_gso_emit(g, o, s);
      if (g->active) break;
      continue;
    }
    if (v.flags & VNET_F_NEEDS_CSUM) {
      if (nd_csum_complete(f, len, &v) < 0) { s->rx_dropped++; continue; }
      s->csum_filled++;
    }
    nd_out_commit(o, slot, len, &vlan, s);
  }
  return o->n - n0;
}
