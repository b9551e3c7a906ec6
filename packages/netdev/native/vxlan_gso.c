/*
 * UDP GSO for the VXLAN send of a super-frame (vxlan_tx.c): the encapsulated
 * segments of one TSO super-frame leave as one UDP datagram per up to 64 segments
 * with UDP_SEGMENT (gso_size = VXLAN header + one inner segment), so the kernel
 * routes, filters and queues one packet per ~64 KB and cuts it into the real
 * packets at the device (or hands the super-packet on: a veth does), instead of one
 * IP output per 1400 bytes through the raw socket's sendmmsg.
 *
 * Model:
 *  - UDP_SEGMENT is a UDP socket's option, and the raw socket (udp.c) is what lets the
 *    sender pick the outer source port per inner flow. So the flow's port selects one
 *    of ND_VXGSO_SOCKS UDP sockets bound to the local address with a kernel-chosen
 *    port, opened on first use (DF: IP_PMTUDISC_DO; bound to the raw socket's
 *    device, if any). The outer source port of a flow is then its bucket's port, and
 *    so that all of a flow's packets carry the same one, the packets that still go
 *    through the raw socket (complete frames, nd_vxtx_rewrite_sport) get that port
 *    written too once the bucket is open: the entropy of RFC 7348 is one of
 *    ND_VXGSO_SOCKS ports per flow, stable for the flow.
 *  - Per sendmsg: segments of equal size, the last of them possibly shorter (what
 *    UDP GSO allows), at most ND_VXGSO_SEGS and a UDP length within 16 bits; a
 *    super-frame's segments are all equal but its last, so it takes one or two.
 *    TTL and TOS come per message (cmsg) from the header the caller wrote (IPv6: the
 *    hop limit and traffic class of the destination, nd_vxdst), so every segment of
 *    a super-frame carries its inner header's DS field (wire/ecn.ts encapTos). The
 *    kernel writes the outer IPv4 header (ID, checksum) and a UDP checksum (UDP GSO
 *    refuses SO_NO_CHECK; RFC 7348 allows a correct one, and on a veth or a NIC
 *    with checksum offload it costs nothing).
 *  - IPv6 (the raw socket is udp6.c's, the caller's header UDP + VXLAN): the buckets are
 *    UDPv6 sockets bound to the raw socket's address (getsockname), IPV6_DONTFRAG and
 *    IPV6_PMTUDISC_DO, the hop limit per message; the UDP checksum is the kernel's for
 *    each segment, which IPv6 requires anyway (and a Linux vxlan device's default,
 *    noudp6zerocsumrx, drops a zero one). The kernel gives a bucket's packets its
 *    automatic flow label, hashed with the bucket's ports (packets through the raw
 *    socket get another, also stable per flow).
 *  - The kernel may refuse (EIO, EINVAL, ENOPROTOOPT, EOPNOTSUPP: no UDP GSO, or a
 *    route it cannot use with it), or a socket may not open: that is counted
 *    (vxlan_tx_gso_refused) and the frame, and every later one until the switch is
 *    set again (nd_vxgso_set, a reload), goes out by sendmmsg as before. Other
 *    errors (EMSGSIZE, EAGAIN) are the frame's, as with sendmmsg.
 * The sockets are closed when the switch is set or the raw socket closes.
 */
#include "netdev.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <net/if.h>
#include <netinet/in.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_NO_CHECK6_TX
#define UDP_NO_CHECK6_TX 101
#endif

#define ND_VXGSO_SEGS 64         /* UDP_MAX_SEGMENTS of older kernels */
#define ND_VXGSO_PAYLOAD 65507u  /* 65535 - the IPv4 and UDP headers */

static int set_int(int fd, int level, int opt, int val) {
  return setsockopt(fd, level, opt, &val, sizeof val) < 0 ? -errno : 0;
}

static void close_all(nd_vxgso *g) {
  for (int i = 0; i < ND_VXGSO_SOCKS; i++) {
    if (g->fd[i] >= 0) close(g->fd[i]);
    g->fd[i] = -1;
    g->port[i] = 0;
  }
  g->raw_fd = -1;
}

void nd_vxgso_init(nd_vxgso *g) {
  memset(g, 0, sizeof *g);
  for (int i = 0; i < ND_VXGSO_SOCKS; i++) g->fd[i] = -1;
  g->raw_fd = -1;
}

void nd_vxgso_set(nd_vxgso *g, bool on, bool nocheck_for_test) {
  close_all(g);
  g->on = on;
  g->nocheck = nocheck_for_test;
  g->refused = false;
}

void nd_vxgso_close_fd(nd_vxgso *g, int raw_fd) {
  if (g->raw_fd == raw_fd) close_all(g);
}

/* A bucket's socket: bound to the underlay's local address (IPv4: the header's source;
 * IPv6: the raw socket's bound address) with a port the kernel picks. */
static int open_bucket(nd_vxgso *g, int i, int raw_fd, uint32_t local_be) {
  struct sockaddr_in6 sa;
  socklen_t sl = sizeof sa;
  memset(&sa, 0, sizeof sa);
  if (g->v6) {
    if (getsockname(raw_fd, (struct sockaddr *)&sa, &sl) < 0) return -errno;
    sa.sin6_port = 0;
  } else {
    struct sockaddr_in *s4 = (struct sockaddr_in *)&sa;
    s4->sin_family = AF_INET;
    s4->sin_addr.s_addr = local_be;
    sl = sizeof *s4;
  }
  int fd = socket(g->v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int e = 0;
  char dev[IFNAMSIZ + 1];
  socklen_t dl = sizeof dev - 1;
  memset(dev, 0, sizeof dev);
  if (getsockopt(raw_fd, SOL_SOCKET, SO_BINDTODEVICE, dev, &dl) == 0 && dl > 0 && dev[0] &&
      setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, dev, (socklen_t)strlen(dev)) < 0) e = -errno;
  /* Never fragmented: IPv4 DF; IPv6 refuses locally what exceeds the path MTU, as the raw socket does. */
  if (!e && g->v6) e = set_int(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO);
  if (!e && g->v6) e = set_int(fd, IPPROTO_IPV6, IPV6_DONTFRAG, 1);
  if (!e && !g->v6) e = set_int(fd, IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO);
  if (!e && set_int(fd, SOL_SOCKET, SO_SNDBUFFORCE, 8 << 20) < 0) set_int(fd, SOL_SOCKET, SO_SNDBUF, 8 << 20);
  /* Nothing is read from it: a stray datagram to its port waits in a small queue, then is dropped. */
  if (!e) set_int(fd, SOL_SOCKET, SO_RCVBUF, 4096);
  if (!e && g->nocheck) e = g->v6 ? set_int(fd, IPPROTO_UDP, UDP_NO_CHECK6_TX, 1) : set_int(fd, SOL_SOCKET, SO_NO_CHECK, 1);
  if (!e && bind(fd, (struct sockaddr *)&sa, sl) < 0) e = -errno;
  sl = sizeof sa;
  if (!e && getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) e = -errno;
  if (e) { close(fd); return e; }
  g->fd[i] = fd;
  /* sin_port and sin6_port share their offset. */
  g->port[i] = sa.sin6_port;
  return 0;
}

/* The outer UDP header: after the IPv4 header, or first (IPv6: the kernel writes the IP header). */
static inline size_t udp_at(bool v6) { return v6 ? 0 : 20; }

static inline int bucket(const uint8_t *udp) { return ((udp[0] << 8) | udp[1]) % ND_VXGSO_SOCKS; }

void nd_vxgso_rewrite_sport(const nd_vxgso *g, int raw_fd, uint8_t *outer) {
  if (!g->on || g->refused || g->raw_fd != raw_fd) return;
  uint8_t *udp = outer + udp_at(g->v6);
  int b = bucket(udp);
  if (g->fd[b] >= 0) memcpy(udp, &g->port[b], 2);
}

static bool refusal(int e) { return e == EIO || e == EINVAL || e == ENOPROTOOPT || e == EOPNOTSUPP; }

int nd_vxgso_send(nd_vxgso *g, int raw_fd, const nd_vxdst *d, const uint8_t *outer, const uint8_t *const *hdr,
                  const int32_t *hlen, const uint8_t *const *pay, const int32_t *plen, int n, nd_stats *s) {
  if (!g->on || g->refused || n < 1) return ND_VXGSO_NO;
  const bool v6 = d->v6;
  const uint8_t *udp = outer + udp_at(v6);
  uint32_t local_be = 0;
  if (!v6) memcpy(&local_be, outer + 12, 4);
  if (g->raw_fd != raw_fd || g->v6 != v6 || g->local_be != local_be) {
    close_all(g);
    g->raw_fd = raw_fd;
    g->v6 = v6;
    g->local_be = local_be;
  }
  int b = bucket(udp);
  if (g->fd[b] < 0 && open_bucket(g, b, raw_fd, local_be) < 0) {
    s->vxlan_tx_gso_refused++;
    g->refused = true;
    return ND_VXGSO_NO;
  }
  struct sockaddr_in6 to = d->sa;
  /* sin_port and sin6_port share their offset. */
  memcpy(&to.sin6_port, udp + 2, 2);
  /* Per message: IPv4 TTL and TOS from the caller's header; IPv6 the hop limit and traffic class (the raw path's). */
  int v1 = v6 ? d->hops : outer[8], v2 = v6 ? d->tclass : outer[1];
  int sent = 0, err = 0;
  while (sent < n) {
    size_t gso = 8 + (size_t)hlen[sent] + (size_t)plen[sent], bytes = 0;
    int k = 0;
    while (sent + k < n && k < ND_VXGSO_SEGS) {
      int j = sent + k;
      size_t l = 8 + (size_t)hlen[j] + (size_t)plen[j];
      if (l > gso || bytes + l > ND_VXGSO_PAYLOAD) break;
      g->iov[3 * k] = (struct iovec){ (void *)(udp + 8), 8 };
      g->iov[3 * k + 1] = (struct iovec){ (void *)hdr[j], (size_t)hlen[j] };
      g->iov[3 * k + 2] = (struct iovec){ (void *)pay[j], (size_t)plen[j] };
      bytes += l;
      k++;
      if (l < gso) break; /* a shorter one ends the message */
    }
    union { char b[CMSG_SPACE(sizeof(uint16_t)) + 2 * CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_name = &to;
    msg.msg_namelen = d->salen;
    msg.msg_iov = g->iov;
    msg.msg_iovlen = (size_t)(3 * k);
    msg.msg_control = ctl.b;
    msg.msg_controllen = sizeof ctl.b;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = v6 ? IPPROTO_IPV6 : IPPROTO_IP; c->cmsg_type = v6 ? IPV6_HOPLIMIT : IP_TTL;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &v1, sizeof v1);
    size_t used = CMSG_SPACE(sizeof(int));
    c = CMSG_NXTHDR(&msg, c);
    c->cmsg_level = v6 ? IPPROTO_IPV6 : IPPROTO_IP; c->cmsg_type = v6 ? IPV6_TCLASS : IP_TOS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &v2, sizeof v2);
    used += CMSG_SPACE(sizeof(int));
    if (k > 1) {
      uint16_t gs = (uint16_t)gso;
      c = CMSG_NXTHDR(&msg, c);
      c->cmsg_level = SOL_UDP; c->cmsg_type = UDP_SEGMENT; c->cmsg_len = CMSG_LEN(sizeof gs);
      memcpy(CMSG_DATA(c), &gs, sizeof gs);
      used += CMSG_SPACE(sizeof gs);
    }
    msg.msg_controllen = used;
    ssize_t r;
    do r = sendmsg(g->fd[b], &msg, MSG_DONTWAIT); while (r < 0 && errno == EINTR);
    if (r < 0) {
      err = errno;
      if (refusal(err)) {
        s->vxlan_tx_gso_refused++;
        g->refused = true;
        if (sent == 0) return ND_VXGSO_NO;
      }
      break;
    }
    s->vxlan_tx_gso_sends++;
    s->vxlan_tx_gso_segments += (uint64_t)k;
    sent += k;
  }
  s->tx_frames += (uint64_t)sent;
  if (sent < n) s->tx_errors += (uint64_t)(n - sent);
  return sent > 0 ? sent : -err;
}
