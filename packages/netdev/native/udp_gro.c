/*
 * UDP GRO on the VXLAN underlay's receive socket (vxlan.offload auto): the kernel
 * hands over a sender's UDP GSO datagram (vxlan_gso.c on the peer, or Linux GRO of
 * one flow's equal-size datagrams) whole, up to 64 KB, with its segment size in a
 * UDP_GRO cmsg, instead of splitting it into one queued datagram per segment
 * (skb_segment on the peer's side, one recvmmsg slot and one copy each).
 *
 * Model:
 *  - The read path above this file does not change: the burst is split here, in C,
 *    into the VXLAN packets it carries, each laid out in the ring exactly as
 *    nd_udp_drain (udp.c) lays out a datagram (the sender's address in the header
 *    room in front, 64-byte aligned), so JS decapsulates, checks, counts and
 *    bridges every packet as before: a bad packet inside a burst (truncated,
 *    unknown VNI, reserved flags) is dropped and counted on its own, as if it had
 *    come alone. rx_frames/rx_bytes count packets, as before.
 *  - Each recvmmsg slot is a region of ND_UDPGRO_REGION bytes of the ring: the
 *    datagram is received at its tail and its segments are moved toward its head,
 *    each behind its own header room; the move never overtakes the bytes it has
 *    still to read (the region has room for ND_UDPGRO_SEGS segments' header room
 *    and alignment), so one memmove per segment and no scratch buffer. A datagram
 *    that is one packet stays where it was received (no copy: the 64-byte flood).
 *  - A slot is posted only while the ring has ND_UDPGRO_SEGS frame entries left for
 *    each slot already posted. A burst with more segments than that (a local
 *    sender's GSO may carry 128) has the excess dropped and counted per segment
 *    (udp_gro_dropped): never a silent loss.
 *  - Fair share (fair.c): a burst is charged once, its length plus one frame cost,
 *    as a TSO super-frame from a TAP is: the per-frame cost is the syscall and
 *    wake-up the kernel spent once for it. So a round at the default quantum takes
 *    ~3 bursts (~130 packets) instead of ~14 datagrams, and the TCP runs tap_gro.c
 *    coalesces toward the VM grow from ~10 segments to ~45 (64 KB). With the frame
 *    share a burst costs its segments: each is a frame of its own from here on (the
 *    pipeline forwards it alone, as udp.c's datagrams, so GRO on or off gives the
 *    underlay the same share), where a TAP's TSO super-frame, one frame up to the
 *    write, costs one.
 *  - The outer DS field (TOS / traffic class, whose ECN field the VTEP applies to each
 *    inner packet, RFC 6040) comes once per datagram (IP_TOS / IPV6_TCLASS cmsg) and is
 *    written in front of every packet of a burst. That is exact: a burst has one outer
 *    header. A sender's UDP GSO datagram is one packet with one header until it is cut;
 *    the kernel's GRO merges separate packets only when their headers match but for
 *    length and checksum: inet_gro_receive (net/ipv4/af_inet.c; inet_gro_flush in
 *    newer kernels) flushes the held packet when `iph->tos ^ iph2->tos` is non-zero, and
 *    ipv6_gro_receive (net/ipv6/ip6_offload.c) when the traffic class differs
 *    ("flush if Traffic Class fields are different"). So a CE mark on one packet of a
 *    flow ends the burst before it and starts a new one; it is never averaged away.
 * Turned on per socket (nd_udp_set_gro, setUdpGro): off, udp.c's drain runs as before.
 */
#include "netdev.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define ND_UDPGRO_BATCH 16
#define ND_UDPGRO_SEGS 64              /* segments per burst the region and the entries are sized for */
#define ND_UDPGRO_DATA 65536u          /* the largest UDP payload, rounded up */
/* Header room (at most 32) plus alignment (at most 63) per segment, then the datagram. */
#define ND_UDPGRO_REGION (ND_UDPGRO_SEGS * (32u + ND_ALIGN) + ND_UDPGRO_DATA)

int nd_udp_set_gro(int fd, bool on) {
  int v = on ? 1 : 0;
  return setsockopt(fd, SOL_UDP, UDP_GRO, &v, sizeof v) < 0 ? -errno : 0;
}

static int gso_size_of(const struct msghdr *m) {
  for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR((struct msghdr *)m, c)) {
    if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
      int v;
      memcpy(&v, CMSG_DATA(c), sizeof v);
      return v;
    }
  }
  return 0;
}

/* One packet of `len` bytes now at `start` (its header room in front is free). */
static void commit(nd_out *o, nd_stats *s, bool v6, const struct sockaddr_in6 *from, int tos, size_t start, size_t len) {
  nd_udp_put_sender(o->base, start, v6, from, tos);
  o->offs[o->n] = (int32_t)start;
  o->lens[o->n] = (int32_t)len;
  o->n++;
  o->pos = start + len;
  s->rx_frames++;
  s->rx_bytes += len;
}

int nd_udp_gro_drain(int fd, bool v6, nd_out *o, nd_stats *s, int *fatal) {
  const size_t headroom = v6 ? ND_UDP6_HEADROOM : ND_RX_HEADROOM;
  int n0 = o->n;
  struct mmsghdr mm[ND_UDPGRO_BATCH];
  struct iovec iov[ND_UDPGRO_BATCH];
  struct sockaddr_in6 from[ND_UDPGRO_BATCH];
  size_t regions[ND_UDPGRO_BATCH];
  /* UDP_GRO's segment size and the outer DS field (udp.c nd_udp_tos_of). */
  union { char buf[2 * CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } ctl[ND_UDPGRO_BATCH];
  *fatal = 0;
  o->more = true;
  for (;;) {
    if (o->budget <= 0) break;
    /* As udp.c: no more slots than the budget admits at the per-frame cost alone. */
    int64_t byb = nd_fair_reads_left(o);
    int cap = byb < ND_UDPGRO_BATCH ? (int)byb : ND_UDPGRO_BATCH;
    int want = 0;
    size_t pos = o->pos;
    while (want < cap && o->n + (want + 1) * ND_UDPGRO_SEGS <= o->max) {
      size_t r = ND_ALIGN_UP(pos);
      if (r > o->cap || o->cap - r < ND_UDPGRO_REGION) break;
      regions[want] = r;
      iov[want].iov_base = o->base + r + ND_UDPGRO_REGION - ND_UDPGRO_DATA;
      iov[want].iov_len = ND_UDPGRO_DATA;
      memset(&mm[want], 0, sizeof mm[want]);
      mm[want].msg_hdr.msg_iov = &iov[want];
      mm[want].msg_hdr.msg_iovlen = 1;
      mm[want].msg_hdr.msg_name = &from[want];
      mm[want].msg_hdr.msg_namelen = sizeof from[want];
      mm[want].msg_hdr.msg_control = ctl[want].buf;
      mm[want].msg_hdr.msg_controllen = sizeof ctl[want].buf;
      pos = r + ND_UDPGRO_REGION;
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
      if (mm[i].msg_hdr.msg_flags & MSG_TRUNC) { s->rx_truncated++; continue; }
      size_t data = regions[i] + ND_UDPGRO_REGION - ND_UDPGRO_DATA;
      int gs = gso_size_of(&mm[i].msg_hdr), tos = nd_udp_tos_of(&mm[i].msg_hdr);
      nd_fair_charge_burst(o, len, gs > 0 && (size_t)gs < len ? (len + (size_t)gs - 1) / (size_t)gs : 1);
      if (gs <= 0 || (size_t)gs >= len) {
        /* One packet: it stays where it was received. */
        if (len >= ND_UDP_MAX) { s->rx_truncated++; continue; }
        commit(o, s, v6, &from[i], tos, data, len);
        continue;
      }
      size_t seg = (size_t)gs, nseg = (len + seg - 1) / seg;
      s->udp_gro_bursts++;
      size_t at = regions[i];
      for (size_t k = 0; k < nseg; k++) {
        size_t src = data + k * seg, sl = k + 1 < nseg ? seg : len - k * seg;
        size_t dst = ND_ALIGN_UP(at) + headroom;
        /* dst <= src holds for the first ND_UDPGRO_SEGS segments (the region's sizing). */
        if (k >= ND_UDPGRO_SEGS || o->n >= o->max || dst > src) { s->udp_gro_dropped += nseg - k; break; }
        if (sl >= ND_UDP_MAX) { s->rx_truncated++; continue; }
        if (dst != src) memmove(o->base + dst, o->base + src, sl);
        commit(o, s, v6, &from[i], tos, dst, sl);
        s->udp_gro_segments++;
        at = dst + sl;
      }
    }
    if (got < want) { o->more = false; break; }
  }
  return o->n - n0;
}
