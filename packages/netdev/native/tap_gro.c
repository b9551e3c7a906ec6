/*
 * Receive-side GRO toward a TAP: the TCP segments a batch from the VXLAN underlay
 * sends to one TAP are coalesced into one super-frame with a virtio_net_hdr
 * (gso_type TCPV4/TCPV6, checksum partial), so the VM's stack takes one 64 KB frame
 * instead of ~45 of 1400 bytes, and we make one write instead of ~45. Without it the
 * receiving host spent most of its time in those writes (bench/README.md "VXLAN":
 * the profile), each running the VM's TCP receive for one segment.
 *
 * Model:
 *  - Only what the pipeline already decided: the bridge forwards, learns and counts
 *    every inner frame as before (addon.c calls this from the TAP's send, after all
 *    of that); this file only changes how the frames it was given reach the device.
 *    Per TAP one run is held (nd_gro, made on the TAP's first held frame): frames
 *    are copied in as they are sent and written when a frame cannot join the run,
 *    when the buffer is full, or when the batch that sent them ends (addon.c,
 *    after the batch's JS callback returns), so nothing waits past its batch and
 *    frames to one TAP keep their order.
 *  - A frame may start a run (a candidate) when it is an untagged IPv4 (no options,
 *    DF set, not a fragment) or IPv6 (no extension headers) TCP segment with data,
 *    flags ACK or ACK|PSH only, lengths consistent, and valid IPv4 header and TCP
 *    checksums: the super-frame is handed over as checksum partial, which the VM's
 *    stack trusts, so a corrupt segment must never be merged (it is written as it
 *    came, and the VM drops it as before).
 *  - It joins the run as Linux's tcp_gro_receive would merge it: every header byte
 *    identical (MACs, addresses, TTL, TOS, ports, ACK, window, TCP options and
 *    timestamps) except lengths, IPv4 ID and checksums, the sequence number and PSH;
 *    its sequence number continues the run; its payload no larger than the run's
 *    first (the MSS, gso_size); and the run not closed: a segment shorter than the
 *    MSS or with PSH closes it (it is the last one merged).
 *  - Written as: one frame, unchanged behind a zero header (as send/send2 would);
 *    several, the first frame's headers with the total lengths, a new IPv4 header
 *    checksum, PSH if any had it, the TCP checksum field set to the pseudo-header sum
 *    (the checksum-partial convention) and a header saying TCPV4/TCPV6, gso_size =
 *    the MSS, csum_start/offset at the TCP checksum.
 *  - A write the device refuses at that point is counted (tap_gro_errors and
 *    tx_errors, per frame): the port counted the frames sent when they were handed
 *    over, as the VXLAN send queue does.
 * Copies: each frame once into the run's buffer (parsed there), its payload once
 * more when it joins; no allocation after the buffer is made.
 */
#include "netdev.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/* The held run (ND_GRO_MAX: IPv4's 16-bit total length plus the Ethernet header) and room behind it for one more frame. */
#define ND_GRO_MAX (14u + 65535u)
#define ND_GRO_STAGE ND_UDP_MAX
#define ND_GRO_CAP (ND_VNET_HDR_LEN + ND_GRO_MAX + ND_GRO_STAGE)

struct nd_gro {
  uint8_t *buf;   /* the virtio_net_hdr, then the run's frame */
  size_t len;     /* frame bytes held */
  int n;          /* segments held (0: nothing) */
  bool v6, closed;
  size_t l4, hdrlen, mss;
  uint32_t next_seq;
};

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static inline void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void wrle16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline uint64_t net16(uint16_t v) { uint8_t b[2]; uint16_t r; wr16(b, v); memcpy(&r, b, 2); return r; }

#define TCP_FIN 0x01
#define TCP_PSH 0x08
#define TCP_ACK 0x10

nd_gro *nd_gro_new(void) {
  nd_gro *g = calloc(1, sizeof *g);
  if (!g) return NULL;
  g->buf = malloc(ND_GRO_CAP);
  if (!g->buf) { free(g); return NULL; }
  return g;
}

void nd_gro_free(nd_gro *g) {
  if (!g) return;
  free(g->buf);
  free(g);
}

bool nd_gro_held(const nd_gro *g) { return g && g->n > 0; }

/* The pseudo-header sum (native order, unfolded) of the frame's IP header with L4 length l4len. */
static uint64_t pseudo(const uint8_t *f, bool v6, size_t l4len) {
  const uint8_t *ip = f + 14;
  uint64_t s = v6 ? nd_csum_add(0, ip + 8, 32) : nd_csum_add(0, ip + 12, 8);
  return s + net16(6) + net16((uint16_t)l4len);
}

/*
 * A candidate (see the model)? Its TCP offset, header length (up to the payload),
 * family and payload size; false if not.
 */
typedef struct { bool v6; size_t l4, hdrlen, payload; } nd_seg;

/*
 * A candidate by its headers (f: at least its first min(len, ND_GRO_HEAD) bytes):
 * everything but the TCP checksum, which the caller checks over the whole segment.
 */
static bool candidate_head(const uint8_t *f, size_t len, nd_seg *sg) {
  if (len < 14 + 40 + 20) return false;
  uint16_t et = rd16(f + 12);
  const uint8_t *ip = f + 14;
  size_t l4;
  if (et == 0x0800) {
    if (ip[0] != 0x45 || ip[9] != 6) return false;
    if (rd16(ip + 2) != len - 14) return false;
    if ((rd16(ip + 6) & 0xbfff) != 0 || !(ip[6] & 0x40)) return false; /* DF only: not a fragment, IDs free */
    if (nd_csum_fold(nd_csum_add(0, ip, 20)) != 0xffff) return false;
    sg->v6 = false;
    l4 = 14 + 20;
  } else if (et == 0x86dd) {
    if ((ip[0] >> 4) != 6 || ip[6] != 6) return false;
    if (rd16(ip + 4) != len - 54) return false;
    sg->v6 = true;
    l4 = 14 + 40;
  } else {
    return false;
  }
  const uint8_t *th = f + l4;
  size_t doff = (size_t)(th[12] >> 4) * 4;
  if (doff < 20 || l4 + doff >= len) return false; /* no data: nothing to merge */
  if ((th[13] & ~TCP_PSH) != TCP_ACK) return false;
  sg->l4 = l4;
  sg->hdrlen = l4 + doff;
  sg->payload = len - sg->hdrlen;
  return true;
}

/* Does segment t (parsed as sg) continue the held run r? */
static bool joins(const nd_gro *g, const uint8_t *r, const uint8_t *t, const nd_seg *sg) {
  if (g->closed || sg->v6 != g->v6 || sg->hdrlen != g->hdrlen || sg->payload > g->mss) return false;
  if (g->len + sg->payload > ND_GRO_MAX) return false;
  if (rd32(t + sg->l4 + 4) != g->next_seq) return false;
  size_t l3 = 14, l4 = sg->l4;
  /* MACs and ethertype; then the IP header but for its lengths, ID and checksum. */
  if (memcmp(r, t, 14)) return false;
  if (g->v6) {
    if (memcmp(r + l3, t + l3, 4) || memcmp(r + l3 + 6, t + l3 + 6, 34)) return false;
  } else {
    if (memcmp(r + l3, t + l3, 2) || memcmp(r + l3 + 6, t + l3 + 6, 4) || memcmp(r + l3 + 12, t + l3 + 12, 8)) return false;
  }
  /* TCP: ports, ACK, offset; flags but PSH; window; urgent pointer; options. */
  if (memcmp(r + l4, t + l4, 4) || memcmp(r + l4 + 8, t + l4 + 8, 5) || memcmp(r + l4 + 14, t + l4 + 14, 2)) return false;
  if ((r[l4 + 13] & ~TCP_PSH) != (t[l4 + 13] & ~TCP_PSH)) return false;
  if (memcmp(r + l4 + 18, t + l4 + 18, g->hdrlen - l4 - 18)) return false;
  return true;
}

void nd_gro_flush(nd_gro *g, int fd, nd_stats *s) {
  if (!g || g->n == 0) return;
  uint8_t *h = g->buf, *f = g->buf + ND_VNET_HDR_LEN;
  memset(h, 0, ND_VNET_HDR_LEN);
  if (g->n > 1) {
    uint8_t *ip = f + 14;
    if (g->v6) {
      wr16(ip + 4, (uint16_t)(g->len - 54));
    } else {
      wr16(ip + 2, (uint16_t)(g->len - 14));
      ip[10] = ip[11] = 0;
      uint16_t c = (uint16_t)~nd_csum_fold(nd_csum_add(0, ip, 20));
      memcpy(ip + 10, &c, 2);
    }
    uint16_t ps = nd_csum_fold(pseudo(f, g->v6, g->len - g->l4));
    memcpy(f + g->l4 + 16, &ps, 2);
    h[0] = VNET_F_NEEDS_CSUM;
    h[1] = g->v6 ? VNET_GSO_TCPV6 : VNET_GSO_TCPV4;
    wrle16(h + 2, (uint16_t)g->hdrlen);
    wrle16(h + 4, (uint16_t)g->mss);
    wrle16(h + 6, (uint16_t)g->l4);
    wrle16(h + 8, 16);
  }
  ssize_t r;
  do r = write(fd, g->buf, ND_VNET_HDR_LEN + g->len); while (r < 0 && errno == EINTR);
  if (r < 0) {
    s->tap_gro_errors += (uint64_t)g->n;
    s->tx_errors += (uint64_t)g->n;
  } else if (g->n > 1) {
    s->tap_gro_frames++;
    s->tap_gro_segments += (uint64_t)g->n;
  }
  g->n = 0;
  g->len = 0;
}

/* Copies bytes [from, from+n) of the frame in pieces iov[0..niov) to dst. */
static void gather(uint8_t *dst, const struct iovec *iov, int niov, size_t from, size_t n) {
  for (int i = 0; i < niov && n > 0; i++) {
    size_t l = iov[i].iov_len;
    if (from >= l) { from -= l; continue; }
    size_t c = l - from < n ? l - from : n;
    memcpy(dst, (const uint8_t *)iov[i].iov_base + from, c);
    dst += c;
    n -= c;
    from = 0;
  }
}

/*
 * The unfolded sum of bytes [from, len) of the frame in pieces, where every piece
 * boundary inside the range is at an even distance from `from` (else false: a sum
 * per piece would be byte-swapped; the frame is then written as it came. The bridge's
 * pieces split at byte 12, ahead of the TCP header).
 */
static bool sum_pieces(const struct iovec *iov, int niov, size_t from, uint64_t *sum) {
  size_t at = 0;
  for (int i = 0; i < niov; i++) {
    size_t l = iov[i].iov_len, a = at, b = at + l;
    at = b;
    if (b <= from) continue;
    if (a < from) a = from;
    if ((a - from) & 1) return false;
    *sum = nd_csum_add(*sum, (const uint8_t *)iov[i].iov_base + (a - (b - l)), b - a);
  }
  return true;
}

/*
 * Only the headers are copied behind the run (ND_GRO_HEAD bytes at most: Ethernet,
 * IPv6 and a TCP header with the most options take 114) to be parsed and compared;
 * the TCP checksum is checked on the pieces where they are (the read ring), and a
 * segment that joins has its payload copied once, from there to the run's end. A
 * frame that starts a run is copied once to the buffer's start. Before, every frame
 * was copied whole behind the run and its payload moved again when it joined.
 */
#define ND_GRO_HEAD 128u

int nd_gro_offer(nd_gro *g, int fd, const struct iovec *iov, int niov, nd_stats *s) {
  size_t flen = 0;
  for (int i = 0; i < niov; i++) flen += iov[i].iov_len;
  if (flen > ND_GRO_STAGE) { nd_gro_flush(g, fd, s); return 0; }
  uint8_t *f = g->buf + ND_VNET_HDR_LEN;
  uint8_t *t = f + g->len; /* staged behind the run: there is always room for one frame */
  size_t head = flen < ND_GRO_HEAD ? flen : ND_GRO_HEAD;
  gather(t, iov, niov, 0, head);
  nd_seg sg;
  uint64_t l4sum = 0;
  bool whole = head == flen;
  if (!candidate_head(t, flen, &sg) ||
      !(whole ? (l4sum = nd_csum_add(0, t + sg.l4, flen - sg.l4), true) : sum_pieces(iov, niov, sg.l4, &l4sum)) ||
      nd_csum_fold(l4sum + pseudo(t, sg.v6, flen - sg.l4)) != 0xffff) {
    nd_gro_flush(g, fd, s);
    return 0;
  }
  uint32_t seq = rd32(t + sg.l4 + 4);
  uint8_t flags = t[sg.l4 + 13];
  if (g->n > 0 && joins(g, f, t, &sg)) {
    gather(t, iov, niov, sg.hdrlen, sg.payload); /* over the staged headers, compared already */
    g->len += sg.payload;
    f[g->l4 + 13] |= flags & TCP_PSH;
  } else {
    nd_gro_flush(g, fd, s); /* writes f[0, len) */
    gather(f, iov, niov, 0, flen);
    g->len = flen;
    g->v6 = sg.v6;
    g->l4 = sg.l4;
    g->hdrlen = sg.hdrlen;
    g->mss = sg.payload;
  }
  g->n++;
  g->next_seq = seq + (uint32_t)sg.payload;
  g->closed = sg.payload < g->mss || (flags & (TCP_PSH | TCP_FIN));
  return 1;
}
