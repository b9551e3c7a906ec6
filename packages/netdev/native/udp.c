/*
 * The VXLAN underlay: a UDP socket that receives the tunnel's datagrams, and a raw
 * IPv4 socket that sends them.
 *
 * Why two sockets: a VTEP must vary the outer UDP source port per inner flow
 * (RFC 7348 entropy) and set DF, which a UDP socket bound to 4789 cannot do per
 * datagram. So the sender builds the outer IPv4 + UDP + VXLAN header itself and
 * writes it through IPPROTO_RAW (IP_HDRINCL; the kernel routes it, fills the IPv4
 * checksum and, since DF is set, refuses with EMSGSIZE what exceeds the route's MTU
 * rather than fragmenting). The receiver is a plain UDP socket bound to the local
 * address and port: the kernel checks the outer headers and checksum, and a bound
 * port means it never answers tunnel traffic with ICMP port unreachable.
 *
 * Receive: recvmmsg in batches straight into the ring (addon.c), one datagram
 * (the VXLAN header and the inner frame, the UDP payload) per ring frame. The
 * sender's IPv4 address (4 bytes, network order) and UDP port (2 bytes, network
 * order) are written into the 10-byte header room in front of it, where other
 * kinds of handle carry a virtio_net_hdr; then the outer packet's TOS (IP_RECVTOS:
 * the ECN field the VTEP applies to the inner header, RFC 6040) and 3 zero bytes.
 * Datagrams over ND_UDP_MAX bytes (no underlay MTU is that large) are dropped as
 * truncated. Each read takes the handle's fair share of the round (fair.c), as a
 * TAP's does.
 */
#include "netdev.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>

#define ND_UDP_BATCH 64

static int set_int(int fd, int level, int opt, int val) {
  return setsockopt(fd, level, opt, &val, sizeof val) < 0 ? -errno : 0;
}

static int bind_dev(int fd, const char *ifname) {
  if (!ifname || !*ifname) return 0;
  return setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, ifname, (socklen_t)strlen(ifname)) < 0 ? -errno : 0;
}

static void bufs(int fd) {
  if (set_int(fd, SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20) < 0) set_int(fd, SOL_SOCKET, SO_RCVBUF, 8 << 20);
  if (set_int(fd, SOL_SOCKET, SO_SNDBUFFORCE, 8 << 20) < 0) set_int(fd, SOL_SOCKET, SO_SNDBUF, 8 << 20);
}

int nd_udp_open(uint32_t local_be, uint16_t port, const char *ifname, const char **op) {
  int e;
  *op = "socket(AF_INET, SOCK_DGRAM)";
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  bufs(fd);
  *op = "SO_REUSEADDR";
  if ((e = set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1)) < 0) goto fail;
  /* The outer TOS per datagram (IP_TOS cmsg): its ECN field goes onto the inner header (RFC 6040, vxlan.ts). */
  *op = "IP_RECVTOS";
  if ((e = set_int(fd, IPPROTO_IP, IP_RECVTOS, 1)) < 0) goto fail;
  *op = "SO_BINDTODEVICE";
  if ((e = bind_dev(fd, ifname)) < 0) goto fail;
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = local_be;
  *op = "bind(UDP)";
  if (bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0) { e = -errno; goto fail; }
  return fd;
fail:
  close(fd);
  return e;
}

int nd_raw_open(const char *ifname, const char **op) {
  int e;
  *op = "socket(AF_INET, SOCK_RAW, IPPROTO_RAW)";
  int fd = socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_RAW);
  if (fd < 0) return -errno;
  bufs(fd);
  *op = "SO_BINDTODEVICE";
  if ((e = bind_dev(fd, ifname)) < 0) { close(fd); return e; }
  return fd;
}

/*
 * Fair share (fair.c): the underlay socket is one handle like a port's, so a flood
 * from the underlay takes one quantum per round. recvmmsg reads a batch before the
 * datagrams' sizes are known, so a batch asks for no more than the remaining budget
 * could admit at the fixed per-frame cost alone: the overshoot stays within about
 * one quantum's worth of bytes over ND_FAIR_FRAME_COST, paid back next round. With
 * the frame share (each datagram costs 1) the cap is exact: no overshoot.
 */
/* The sender in front of a datagram's payload at `start`, where vxlan.ts reads it: udp6.c's
 * layout for IPv6, the vnet header's room for IPv4 (address, port, zeros). */
void nd_udp_put_sender(uint8_t *base, size_t start, bool v6, const struct sockaddr_in6 *from, int tos) {
  if (v6) {
    uint8_t *h = base + start - ND_UDP6_SENDER_BEFORE;
    memcpy(h, &from->sin6_addr, 16);
    memcpy(h + 16, &from->sin6_port, 2);
    memset(h + 18, 0, 4);
  } else {
    const struct sockaddr_in *f4 = (const struct sockaddr_in *)from;
    uint8_t *h = base + start - ND_VNET_HDR_LEN;
    memcpy(h, &f4->sin_addr.s_addr, 4);
    memcpy(h + 4, &f4->sin_port, 2);
    memset(h + 6, 0, 4);
  }
  /* Both layouts end in 4 zero bytes: the outer DS field goes into the first (vxlan.ts VXLAN_TOS_BEFORE). */
  base[start - 4] = (uint8_t)tos;
}

int nd_udp_tos_of(const struct msghdr *m) {
  for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR((struct msghdr *)m, c)) {
    /* IPv4 gives one byte, IPv6 an int. */
    if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TOS && c->cmsg_len >= CMSG_LEN(1)) return *(const uint8_t *)CMSG_DATA(c);
    if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_TCLASS && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
      int v;
      memcpy(&v, CMSG_DATA(c), sizeof v);
      return v & 0xff;
    }
  }
  return 0;
}

/* recvmmsg failed with `e`: 1 to try again, 0 to stop reading this round (nothing more
 * queued, or a fatal error left in *fatal). A queued ICMP error (ECONNREFUSED and
 * friends) is reported once; the socket lives on. */
int nd_udp_recv_retry(int e, nd_out *o, int *fatal) {
  if (e == EINTR) return 1;
  if (e == EAGAIN || e == EWOULDBLOCK) { o->more = false; return 0; }
  if (e == ECONNREFUSED || e == EHOSTUNREACH || e == ENETUNREACH || e == EMSGSIZE) return 1;
  *fatal = e;
  o->more = false;
  return 0;
}

static int nd_udp_fair_cap(const nd_out *o, int batch) {
  int64_t n = nd_fair_reads_left(o);
  return n < batch ? (int)n : batch;
}

/*
 * Both families share one loop: only the room before each payload (the sender's
 * address is 4 or 16 bytes) and where the sender goes differ (udp6.c says the IPv6
 * layout). from[] is sockaddr_in6-sized for both.
 */
int nd_udp_drain(int fd, bool v6, nd_out *o, nd_stats *s, int *fatal) {
  const size_t headroom = v6 ? ND_UDP6_HEADROOM : ND_RX_HEADROOM;
  int n0 = o->n;
  struct mmsghdr mm[ND_UDP_BATCH];
  struct iovec iov[ND_UDP_BATCH];
  struct sockaddr_in6 from[ND_UDP_BATCH];
  size_t slots[ND_UDP_BATCH];
  union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } ctl[ND_UDP_BATCH];
  *fatal = 0;
  o->more = true;
  for (;;) {
    int want = 0, cap = nd_udp_fair_cap(o, ND_UDP_BATCH);
    size_t pos = o->pos;
    while (want < cap && o->n + want < o->max) {
      size_t slot = ND_ALIGN_UP(pos);
      if (slot > o->cap || o->cap - slot < headroom + ND_UDP_MAX) break;
      slots[want] = slot;
      iov[want].iov_base = o->base + slot + headroom;
      iov[want].iov_len = ND_UDP_MAX;
      memset(&mm[want], 0, sizeof mm[want]);
      mm[want].msg_hdr.msg_iov = &iov[want];
      mm[want].msg_hdr.msg_iovlen = 1;
      mm[want].msg_hdr.msg_name = &from[want];
      mm[want].msg_hdr.msg_namelen = sizeof from[want];
      mm[want].msg_hdr.msg_control = ctl[want].buf;
      mm[want].msg_hdr.msg_controllen = sizeof ctl[want].buf;
      pos = slot + headroom + ND_UDP_MAX;
      want++;
    }
    if (want == 0) break;
    int got = recvmmsg(fd, mm, (unsigned)want, MSG_DONTWAIT, NULL);
    if (got < 0) {
      if (nd_udp_recv_retry(errno, o, fatal)) continue;
      break;
    }
    for (int i = 0; i < got; i++) {
      size_t len = mm[i].msg_len;
      if ((mm[i].msg_hdr.msg_flags & MSG_TRUNC) || len >= ND_UDP_MAX) { s->rx_truncated++; continue; }
      size_t start = slots[i] + headroom;
      /* Datagrams are committed in order; a dropped one leaves its slot unused. */
      nd_udp_put_sender(o->base, start, v6, &from[i], nd_udp_tos_of(&mm[i].msg_hdr));
      o->offs[o->n] = (int32_t)start;
      o->lens[o->n] = (int32_t)len;
      o->n++;
      o->pos = start + len;
      nd_fair_charge(o, len);
      s->rx_frames++;
      s->rx_bytes += len;
    }
    if (got < want) { o->more = false; break; }
  }
  return o->n - n0;
}
