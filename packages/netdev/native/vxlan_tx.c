/*
 * VXLAN transmit of a frame that carries a virtio_net_hdr asking for work: a VM's
 * TSO/USO super-frame (up to 64 KB) or a checksum-partial frame, leaving through a
 * tunnel port. Without this, egress cut a super-frame into segments (gso.c, the
 * `segment` scratch) and sent each through JS (Vtep.encap) and one sendmsg: one JS
 * turn and one syscall per ~1400-byte segment. Here the whole super-frame is one
 * call: segmented in C, each segment encapsulated, all sent in one sendmmsg.
 *
 * Model:
 *  - The caller (Vtep.encapVnet, JS) writes the outer IPv4 + UDP + VXLAN header
 *    once, as for any frame (wire/vxlan.ts: addresses, the flow-hashed source port,
 *    DF, TTL, VNI; lengths for an empty inner frame). Every segment of a super-frame
 *    belongs to the same inner flow, so the same header serves all of them: only the
 *    outer IPv4 total length, its header checksum and the UDP length are per segment,
 *    and those are all this file writes. Over an IPv6 underlay (sendVxlan6) the caller
 *    writes only UDP + VXLAN (16 bytes: the kernel writes the IPv6 header and the UDP
 *    checksum, as for every IPv6 packet, udp6.c), so only the UDP length is per segment,
 *    an outer packet adds 56 bytes to its inner frame (the MTU check), the destination
 *    is a sockaddr_in6 and the hop limit goes per message (nd_vxdst). The rest below is
 *    the same for both families.
 *  - The inner frame arrives as egress hands tunnels a tagged frame: its 12 MAC bytes,
 *    then the rest after the 802.1Q tag (the tunnel carries frames untagged), with
 *    the virtio_net_hdr that describes the tagged frame right before the MACs. The
 *    header's offsets (csum_start, hdr_len) are therefore moved back by the 4 tag bytes.
 *  - Segmentation and checksum completion are gso.c's transmit-side completion
 *    (nd_tx_complete: inner IPv4 IDs, lengths and checksums, TCP sequence numbers and
 *    flags, inner L4 checksums complete), into this file's own scratch, so it never
 *    disturbs `segment`'s. All or nothing: a frame that does not parse, needs more
 *    than ND_VXTX_MAX segments, or has one segment whose outer packet would exceed
 *    the underlay MTU is refused whole (the VM MTU is the underlay MTU minus 50, so a
 *    VM with that MTU never sends one: its gso_size fits).
 *  - The segments go out as UDP GSO datagrams (vxlan_gso.c: one sendmsg with
 *    UDP_SEGMENT per up to 64 segments, through a UDP socket the flow's source port
 *    selects) when that is on and the kernel takes it; otherwise through the raw
 *    IPv4 socket (udp.c; IPv6: udp6.c's, with the hop limit in a cmsg all messages
 *    share) in one sendmmsg, each as three iovecs (its outer header, the inner segment's
 *    headers, its payload). Packets through the raw socket carry the source port of
 *    their flow's GSO socket once it is open (nd_vxgso_rewrite_sport), so one flow
 *    keeps one port whichever way its packets go.
 *  - Complete frames (Vtep.encap: one outer packet each) are queued here rather than
 *    sent one sendmsg each (nd_vxq_add, copying the outer header and the frame's
 *    pieces, which live in the receive ring and in scratch headers JS reuses), and
 *    sent in one sendmmsg when the queue is full, before anything else goes out
 *    through this file (so packets keep their order), or when JS flushes it at the end
 *    of the batch that queued them (NativeUnderlay: one microtask per batch). A
 *    packet the kernel refuses at the flush is counted (vxlan_tx_queue_errors), as it
 *    can no longer be reported to the caller.
 * Nothing allocates after the scratch is made (once per environment).
 */
#include "netdev.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>

static inline void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void wrle16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

typedef union { char b[2 * CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } nd_hops;

/* An IPv6 message's control: d's hop limit and traffic class; IPv4 (the header carries TTL and TOS): none. */
static void msg_hops(struct msghdr *m, nd_hops *h, const nd_vxdst *d) {
  if (!d->v6) return;
  m->msg_control = h->b;
  m->msg_controllen = sizeof h->b;
  struct cmsghdr *c = CMSG_FIRSTHDR(m);
  c->cmsg_level = IPPROTO_IPV6;
  c->cmsg_type = IPV6_HOPLIMIT;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &d->hops, sizeof d->hops);
  c = CMSG_NXTHDR(m, c);
  c->cmsg_level = IPPROTO_IPV6;
  c->cmsg_type = IPV6_TCLASS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &d->tclass, sizeof d->tclass);
}

struct nd_vxtx {
  nd_gso g;
  uint8_t *arena;
  int32_t offs[ND_VXTX_MAX], lens[ND_VXTX_MAX];
  /* Packet i's inner frame: hdr[i] (hlen[i] bytes: a segment's headers, or a whole
   * completed frame), then pay[i] (plen[i] bytes of payload left in the source). */
  const uint8_t *hdr[ND_VXTX_MAX], *pay[ND_VXTX_MAX];
  int32_t hlen[ND_VXTX_MAX], plen[ND_VXTX_MAX];
  uint8_t outer[ND_VXTX_MAX][ND_VXLAN_OUTER];
  size_t olen; /* of each outer[i]: ND_VXLAN_OUTER, or ND_VXLAN6_OUTER over IPv6 */
  struct iovec iov[ND_VXTX_MAX][3];
  struct mmsghdr mm[ND_VXTX_MAX];
  nd_vxdst to;
  /* The hop limit of every IPv6 packet of a sendmmsg (the kernel only reads it). */
  nd_hops hops;
  nd_vxgso gso;
  struct iovec gso_iov[3 * 64];
  /* The queue of complete packets (nd_vxq_*): n packets of qlen[i] bytes at qbuf + ND_VXQ_SLOT * i. */
  int qfd, qn;
  uint8_t *qbuf;
  struct iovec qiov[ND_VXQ_MAX];
  nd_vxdst qto[ND_VXQ_MAX];
  nd_hops qhops[ND_VXQ_MAX];
  struct mmsghdr qmm[ND_VXQ_MAX];
};

nd_vxtx *nd_vxtx_new(void) {
  nd_vxtx *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->g.buf = malloc(ND_READ_MAX);
  t->arena = malloc(ND_VXTX_BYTES);
  t->qbuf = malloc((size_t)ND_VXQ_SLOT * ND_VXQ_MAX);
  if (!t->g.buf || !t->arena || !t->qbuf) { nd_vxtx_free(t); return NULL; }
  t->qfd = -1;
  nd_vxgso_init(&t->gso);
  t->gso.iov = t->gso_iov;
  return t;
}

void nd_vxtx_free(nd_vxtx *t) {
  if (!t) return;
  nd_vxgso_set(&t->gso, false, false);
  free(t->g.buf);
  free(t->arena);
  free(t->qbuf);
  free(t);
}

void nd_vxdst4(nd_vxdst *d, uint32_t dst_be) {
  memset(d, 0, sizeof *d);
  struct sockaddr_in *s4 = (struct sockaddr_in *)&d->sa;
  s4->sin_family = AF_INET;
  s4->sin_addr.s_addr = dst_be;
  d->salen = sizeof *s4;
  d->hops = -1;
}

void nd_vxdst6(nd_vxdst *d, const uint8_t dst[16], int hops, int tclass) {
  memset(d, 0, sizeof *d);
  d->sa.sin6_family = AF_INET6;
  memcpy(&d->sa.sin6_addr, dst, 16);
  d->salen = sizeof d->sa;
  d->hops = hops;
  d->tclass = tclass;
  d->v6 = true;
}

int nd_vxtx_build(nd_vxtx *t, bool v6, const uint8_t *outer, size_t mtu, const uint8_t *hdr,
                  const uint8_t *macs, const uint8_t *rest, size_t rest_len, const uint8_t *whole, nd_stats *s,
                  uint64_t *inner_bytes) {
  size_t len = 12 + rest_len;
  if (len < 14 || len > ND_READ_MAX) { s->vxlan_tx_dropped++; return ND_VXTX_BAD; }
  /* The header described the tagged frame: its offsets lose the 4 tag bytes. */
  nd_vnet v;
  nd_vnet_decode(&v, hdr);
  if ((v.flags & VNET_F_NEEDS_CSUM) && v.csum_start < 16) { s->vxlan_tx_dropped++; return ND_VXTX_BAD; }
  uint8_t h[ND_VNET_HDR_LEN];
  memcpy(h, hdr, ND_VNET_HDR_LEN);
  if (v.flags & VNET_F_NEEDS_CSUM) wrle16(h + 6, (uint16_t)(v.csum_start - 4));
  wrle16(h + 2, (uint16_t)(v.hdr_len >= 4 ? v.hdr_len - 4 : 0));

  /* The untagged frame is segmented where it is when the caller has it in one piece
   * (`whole`: the VM's frame in the read ring, its tag only in egress's scratch
   * header); else assembled in gso.c's buffer first. */
  const uint8_t *f = whole;
  if (!f) {
    memcpy(t->g.buf, macs, 12);
    memcpy(t->g.buf + 12, rest, rest_len);
    f = t->g.buf;
  }
  nd_stats tmp;
  memset(&tmp, 0, sizeof tmp);
  int n;
  if (h[1] != VNET_GSO_NONE) {
    /* Segments as pieces: their headers here, their payloads where the frame is (sendmsg gathers them). */
    n = nd_gso_headers(&t->g, h, f, len, t->arena, ND_VXTX_HDR_SLOT, ND_VXTX_MAX, t->pay, t->plen);
    if (n <= 0) { s->vxlan_tx_dropped++; return ND_VXTX_BAD; }
    for (int i = 0; i < n; i++) {
      t->hdr[i] = t->arena + (size_t)i * ND_VXTX_HDR_SLOT;
      t->hlen[i] = (int32_t)t->g.hdrlen;
    }
    tmp.tx_gso_segmented = 1;
  } else {
    nd_out o = { t->arena, ND_VXTX_BYTES, 0, t->offs, t->lens, 0, ND_VXTX_MAX, INT64_MAX, false, false };
    n = nd_tx_complete(&t->g, h, f, len, &o, &tmp);
    if (n <= 0) { s->vxlan_tx_dropped++; return ND_VXTX_BAD; }
    for (int i = 0; i < n; i++) {
      t->hdr[i] = t->arena + t->offs[i];
      t->hlen[i] = t->lens[i];
      t->pay[i] = NULL;
      t->plen[i] = 0;
    }
  }

  /* Per packet only the lengths differ (and IPv4's header checksum); over IPv6 the
   * kernel writes the IPv6 header and the UDP checksum (raw: IPV6_CHECKSUM; GSO: per segment). */
  const size_t olen = v6 ? ND_VXLAN6_OUTER : ND_VXLAN_OUTER, wire = v6 ? ND_VXLAN6_WIRE : ND_VXLAN_OUTER;
  const size_t udp = olen - 16;
  t->olen = olen;
  uint64_t bytes = 0;
  for (int i = 0; i < n; i++) {
    size_t inner = (size_t)t->hlen[i] + (size_t)t->plen[i];
    if (inner + wire > mtu) { s->vxlan_tx_too_big++; return ND_VXTX_TOO_BIG; }
    uint8_t *p = t->outer[i];
    memcpy(p, outer, olen);
    if (!v6) {
      wr16(p + 2, (uint16_t)(ND_VXLAN_OUTER + inner));
      p[10] = p[11] = 0;
      uint16_t c = (uint16_t)~nd_csum_fold(nd_csum_add(0, p, 20));
      memcpy(p + 10, &c, 2);
    }
    wr16(p + udp + 4, (uint16_t)(16 + inner));
    if (v6) p[udp + 6] = p[udp + 7] = 0;
    bytes += inner;
  }
  if (tmp.tx_gso_segmented) {
    s->vxlan_tx_segmented++;
    s->vxlan_tx_segments += (uint64_t)n;
  }
  if (tmp.tx_csum_filled) s->vxlan_tx_csum_filled++;
  *inner_bytes = bytes;
  return n;
}

const uint8_t *nd_vxtx_packet(const nd_vxtx *t, int i, size_t *olen, const uint8_t **a, size_t *alen, const uint8_t **b, size_t *blen) {
  *olen = t->olen;
  *a = t->hdr[i];
  *alen = (size_t)t->hlen[i];
  *b = t->pay[i];
  *blen = (size_t)t->plen[i];
  return t->outer[i];
}

void nd_vxtx_set_gso(nd_vxtx *t, bool on, bool nocheck_for_test) { nd_vxgso_set(&t->gso, on, nocheck_for_test); }

void nd_vxtx_rewrite_sport(const nd_vxtx *t, int raw_fd, uint8_t *outer) { nd_vxgso_rewrite_sport(&t->gso, raw_fd, outer); }

int nd_vxtx_send(nd_vxtx *t, int fd, const nd_vxdst *d, int n, nd_stats *s) {
  nd_vxq_flush(t, s);
  int g = nd_vxgso_send(&t->gso, fd, d, t->outer[0], t->hdr, t->hlen, t->pay, t->plen, n, s);
  if (g != ND_VXGSO_NO) return g;
  for (int i = 0; i < n; i++) nd_vxgso_rewrite_sport(&t->gso, fd, t->outer[i]);
  t->to = *d;
  for (int i = 0; i < n; i++) {
    t->iov[i][0] = (struct iovec){ t->outer[i], t->olen };
    t->iov[i][1] = (struct iovec){ (void *)t->hdr[i], (size_t)t->hlen[i] };
    t->iov[i][2] = (struct iovec){ (void *)t->pay[i], (size_t)t->plen[i] };
    memset(&t->mm[i], 0, sizeof t->mm[i]);
    t->mm[i].msg_hdr.msg_name = &t->to.sa;
    t->mm[i].msg_hdr.msg_namelen = t->to.salen;
    msg_hops(&t->mm[i].msg_hdr, &t->hops, &t->to);
    t->mm[i].msg_hdr.msg_iov = t->iov[i];
    t->mm[i].msg_hdr.msg_iovlen = 3;
  }
  int sent = 0, err = 0;
  while (sent < n) {
    int r = sendmmsg(fd, t->mm + sent, (unsigned)(n - sent), MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    s->vxlan_tx_batches++;
    sent += r;
  }
  s->tx_frames += (uint64_t)sent;
  if (sent < n) s->tx_errors += (uint64_t)(n - sent);
  return sent > 0 ? sent : -err;
}

int nd_vxq_flush(nd_vxtx *t, nd_stats *s) {
  int n = t->qn, sent = 0;
  if (n == 0) return 0;
  for (int i = 0; i < n; i++) {
    memset(&t->qmm[i], 0, sizeof t->qmm[i]);
    t->qmm[i].msg_hdr.msg_name = &t->qto[i].sa;
    t->qmm[i].msg_hdr.msg_namelen = t->qto[i].salen;
    msg_hops(&t->qmm[i].msg_hdr, &t->qhops[i], &t->qto[i]);
    t->qmm[i].msg_hdr.msg_iov = &t->qiov[i];
    t->qmm[i].msg_hdr.msg_iovlen = 1;
  }
  while (sent < n) {
    int r = sendmmsg(t->qfd, t->qmm + sent, (unsigned)(n - sent), MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR) continue;
      /* The packet at `sent` is refused (EAGAIN: the socket buffer is full, EMSGSIZE:
       * the route's MTU is below the configured one): count it, go on with the rest. */
      s->vxlan_tx_queue_errors++;
      s->tx_errors++;
      sent++;
      continue;
    }
    s->vxlan_tx_batches++;
    s->tx_frames += (uint64_t)r;
    sent += r;
  }
  t->qn = 0;
  return n;
}

int nd_vxq_add(nd_vxtx *t, int fd, const nd_vxdst *to, const uint8_t *const p[3], const size_t len[3], nd_stats *s) {
  size_t total = len[0] + len[1] + len[2];
  if (total > ND_VXQ_SLOT) return -EMSGSIZE;
  if (t->qn > 0 && t->qfd != fd) nd_vxq_flush(t, s);
  if (t->qn == ND_VXQ_MAX) nd_vxq_flush(t, s);
  int i = t->qn++;
  uint8_t *d = t->qbuf + (size_t)ND_VXQ_SLOT * (size_t)i;
  memcpy(d, p[0], len[0]);
  memcpy(d + len[0], p[1], len[1]);
  memcpy(d + len[0] + len[1], p[2], len[2]);
  /* The outer UDP header's source port: at 20 behind IPv4, first over IPv6. */
  if (len[0] >= (to->v6 ? 2u : 22u)) nd_vxgso_rewrite_sport(&t->gso, fd, d);
  t->qfd = fd;
  t->qiov[i] = (struct iovec){ d, total };
  t->qto[i] = *to;
  s->vxlan_tx_queued++;
  return (int)total;
}

int nd_vxq_pending(const nd_vxtx *t) { return t->qn; }

void nd_vxq_close_fd(nd_vxtx *t, int fd, nd_stats *s) {
  if (t->qn > 0 && t->qfd == fd) nd_vxq_flush(t, s);
  nd_vxgso_close_fd(&t->gso, fd);
}
