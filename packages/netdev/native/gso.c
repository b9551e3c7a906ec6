/*
 * Software segmentation, checksum completion and VLAN re-insertion for frames a
 * packet socket hands us with a virtio_net_hdr.
 *
 * Why this exists: veths and GRO-capable NICs deliver TCP/UDP GSO super-frames
 * (up to 64 KB) and CHECKSUM_PARTIAL frames whose L4 checksum holds only the
 * pseudo-header sum. Forwarded as-is to a TAP without offloads, a NIC, or a
 * capture, they are oversized or have wrong checksums. The kernel tells us what
 * it left undone in the vnet header; we finish it so JS only sees wire-format
 * frames.
 *
 * Everything here treats the frame bytes as untrusted: hdr_len from the kernel
 * is a linear-length hint (skb_headlen), not the header length, so the headers
 * are parsed and every offset is bounds-checked before use.
 */
#include "netdev.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <string.h>

#define ETH_HLEN_ 14u
#define TCP_FIN 0x01
#define TCP_PSH 0x08
#define TCP_CWR 0x80

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void wr32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

void nd_vnet_decode(nd_vnet *v, const uint8_t raw[ND_VNET_HDR_LEN]) {
  v->flags = raw[0];
  v->gso_type = raw[1];
  v->hdr_len = le16(raw + 2);
  v->gso_size = le16(raw + 4);
  v->csum_start = le16(raw + 6);
  v->csum_offset = le16(raw + 8);
}

/*
 * One's-complement sum in native byte order. Summing 32-bit words into a 64-bit
 * accumulator gives the same folded result as 16-bit words (2^16 = 1 mod 0xffff),
 * and native order is fine as long as values added separately (pseudo-header
 * proto/length) are in network order too.
 */
uint64_t nd_csum_add(uint64_t sum, const uint8_t *p, size_t n) {
#if defined(__SSE2__)
  /* The same sum of 32-bit words, four 64-bit lanes of SSE2 (x86-64's baseline) at a
   * time: twice the scalar loop's speed, and this is the largest item of a VXLAN
   * receiver's own CPU (tap_gro.c checks every TCP segment) and a sender's (gso.c). */
  if (n >= 64) {
    const __m128i z = _mm_setzero_si128();
    __m128i a0 = z, a1 = z, a2 = z, a3 = z;
    do {
      __m128i w = _mm_loadu_si128((const __m128i *)p), x = _mm_loadu_si128((const __m128i *)(p + 16));
      __m128i y = _mm_loadu_si128((const __m128i *)(p + 32)), v = _mm_loadu_si128((const __m128i *)(p + 48));
      a0 = _mm_add_epi64(a0, _mm_unpacklo_epi32(w, z));
      a1 = _mm_add_epi64(a1, _mm_unpackhi_epi32(w, z));
      a2 = _mm_add_epi64(a2, _mm_unpacklo_epi32(x, z));
      a3 = _mm_add_epi64(a3, _mm_unpackhi_epi32(x, z));
      a0 = _mm_add_epi64(a0, _mm_unpacklo_epi32(y, z));
      a1 = _mm_add_epi64(a1, _mm_unpackhi_epi32(y, z));
      a2 = _mm_add_epi64(a2, _mm_unpacklo_epi32(v, z));
      a3 = _mm_add_epi64(a3, _mm_unpackhi_epi32(v, z));
      p += 64;
      n -= 64;
    } while (n >= 64);
    uint64_t t[2];
    _mm_storeu_si128((__m128i *)t, _mm_add_epi64(_mm_add_epi64(a0, a1), _mm_add_epi64(a2, a3)));
    sum += t[0] + t[1];
  }
#endif
  while (n >= 16) {
    uint32_t a, b, c, d;
    memcpy(&a, p, 4); memcpy(&b, p + 4, 4); memcpy(&c, p + 8, 4); memcpy(&d, p + 12, 4);
    sum += (uint64_t)a + b + c + d;
    p += 16; n -= 16;
  }
  while (n >= 4) { uint32_t a; memcpy(&a, p, 4); sum += a; p += 4; n -= 4; }
  if (n >= 2) { uint16_t a; memcpy(&a, p, 2); sum += a; p += 2; n -= 2; }
  if (n) { uint16_t a = 0; memcpy(&a, p, 1); sum += a; }
  return sum;
}

uint16_t nd_csum_fold(uint64_t s) {
  s = (s & 0xffffffffu) + (s >> 32);
  s = (s & 0xffffffffu) + (s >> 32);
  s = (s & 0xffffu) + (s >> 16);
  s = (s & 0xffffu) + (s >> 16);
  s = (s & 0xffffu) + (s >> 16);
  return (uint16_t)s;
}

static inline uint64_t net16(uint16_t v) { uint8_t b[2]; uint16_t r; wr16(b, v); memcpy(&r, b, 2); return r; }

/*
 * CHECKSUM_PARTIAL: the field at csum_start+csum_offset holds the folded
 * pseudo-header sum; the kernel's skb_checksum_help sums from csum_start to the
 * end and stores the complement, mapping 0 to 0xffff (valid for TCP, required
 * for UDP). We do the same.
 */
int nd_csum_complete(uint8_t *frame, size_t len, const nd_vnet *v) {
  size_t start = v->csum_start, off = v->csum_offset;
  if (start >= len || off + 2 > len - start) return -1;
  uint16_t c = (uint16_t)~nd_csum_fold(nd_csum_add(0, frame + start, len - start));
  if (c == 0) c = 0xffff;
  memcpy(frame + start + off, &c, 2);
  return 0;
}

/*
 * Place a frame that was written at slot+ND_RX_HEADROOM: if the kernel stripped
 * a tag into metadata, slide the 12 MAC bytes back into the tag reserve and write
 * the tag after them; otherwise the frame starts where it was written. The tag
 * goes in last because csum_start and the GSO offsets are relative to the
 * untagged frame. The ND_VNET_HDR_LEN bytes in front of the frame are zeroed:
 * what we deliver is complete (see "every frame has a header" in netdev.h).
 */
bool nd_out_commit(nd_out *o, size_t slot, size_t len, const nd_vlan *vlan, nd_stats *s) {
  size_t start = slot + ND_RX_HEADROOM;
  if (len < ETH_HLEN_) return false;
  if (vlan && vlan->present) {
    uint8_t *f = o->base + start - ND_VLAN_RESERVE;
    memmove(f, f + ND_VLAN_RESERVE, 12);
    wr16(f + 12, vlan->tpid);
    wr16(f + 14, vlan->tci);
    start -= ND_VLAN_RESERVE;
    len += ND_VLAN_RESERVE;
    s->vlan_restored++;
  }
  memset(o->base + start - ND_VNET_HDR_LEN, 0, ND_VNET_HDR_LEN);
  o->offs[o->n] = (int32_t)start;
  o->lens[o->n] = (int32_t)len;
  o->n++;
  o->pos = start + len;
  nd_fair_charge(o, len);
  s->rx_frames++;
  s->rx_bytes += len;
  return true;
}

/*
 * Parse and validate a super-frame, then copy it into g->buf (or, `in_place`, segment
 * it from where it is: the caller keeps it unchanged until the last segment is out,
 * as nd_tx_complete does within one call). Supported:
 * TCPv4, TCPv6 and UDP_L4 (USO) over IPv4 or IPv6 without extension headers,
 * behind at most two in-band VLAN tags. UFO (VIRTIO_NET_HDR_GSO_UDP) would need
 * IP fragmentation and is refused, as is anything that does not parse.
 */
static int prepare(nd_gso *g, const uint8_t *f, size_t len, const nd_vnet *v, const nd_vlan *vlan, bool in_place) {
  uint8_t type = v->gso_type & (uint8_t)~VNET_GSO_ECN;
  bool want_v6, udp;
  switch (type) {
    case VNET_GSO_TCPV4: want_v6 = false; udp = false; break;
    case VNET_GSO_TCPV6: want_v6 = true; udp = false; break;
    case VNET_GSO_UDP_L4: want_v6 = false; udp = true; break; /* either family */
    default: return -1;
  }
  if (v->gso_size == 0 || len > ND_READ_MAX || len < ETH_HLEN_) return -1;

  size_t l3 = 12;
  uint16_t et = rd16(f + 12);
  for (int tags = 0; (et == 0x8100 || et == 0x88a8) && tags < 2; tags++) {
    l3 += 4;
    if (l3 + 2 > len) return -1;
    et = rd16(f + l3);
  }
  l3 += 2;

  bool v6;
  size_t l4, end;
  uint8_t proto;
  uint64_t pseudo;
  if (et == 0x0800) {
    if (l3 + 20 > len) return -1;
    const uint8_t *ip = f + l3;
    size_t ihl = (size_t)(ip[0] & 0x0f) * 4;
    size_t tot = rd16(ip + 2);
    if ((ip[0] >> 4) != 4 || ihl < 20 || tot < ihl || l3 + tot > len) return -1;
    if (rd16(ip + 6) & 0x3fff) return -1; /* a fragment cannot be a GSO frame */
    v6 = false;
    proto = ip[9];
    l4 = l3 + ihl;
    end = l3 + tot;
    pseudo = nd_csum_add(0, ip + 12, 8);
  } else if (et == 0x86dd) {
    if (l3 + 40 > len) return -1;
    const uint8_t *ip = f + l3;
    size_t plen = rd16(ip + 4);
    /* plen 0 is a jumbogram (BIG TCP, hop-by-hop option): not supported. */
    if ((ip[0] >> 4) != 6 || plen == 0 || l3 + 40 + plen > len) return -1;
    v6 = true;
    proto = ip[6];
    l4 = l3 + 40;
    end = l3 + 40 + plen;
    pseudo = nd_csum_add(0, ip + 8, 32);
  } else {
    return -1;
  }
  if (!udp && v6 != want_v6) return -1;

  size_t l4hdr;
  if (!udp) {
    if (proto != 6 || l4 + 20 > end) return -1;
    l4hdr = (size_t)(f[l4 + 12] >> 4) * 4;
    if (l4hdr < 20 || l4 + l4hdr > end) return -1;
  } else {
    if (proto != 17 || l4 + 8 > end) return -1;
    l4hdr = 8;
  }

  g->v6 = v6;
  g->udp = udp;
  g->l3 = l3;
  g->l4 = l4;
  g->hdrlen = l4 + l4hdr;
  g->paylen = end - g->hdrlen;
  g->gso_size = v->gso_size;
  g->nseg = g->paylen ? (uint32_t)((g->paylen + g->gso_size - 1) / g->gso_size) : 1;
  g->idx = 0;
  g->seq = udp ? 0 : rd32(f + l4 + 4);
  g->ip_id = v6 ? 0 : rd16(f + l3 + 4);
  g->pseudo = pseudo + net16(proto);
  g->vlan = vlan ? *vlan : (nd_vlan){0};
  /* Bytes past `end` (padding) are not part of any segment. */
  if (in_place || f == g->buf) {
    g->src = f;
  } else {
    memcpy(g->buf, f, end);
    g->src = g->buf;
  }
  g->active = true;
  return 0;
}

int nd_gso_prepare(nd_gso *g, const uint8_t *f, size_t len, const nd_vnet *v, const nd_vlan *vlan) {
  return prepare(g, f, len, v, vlan, false);
}

/*
 * Build segment g->idx at f: its headers, then (`copy`) its payload; without `copy`
 * f gets the headers only (room for hdrlen) and the payload stays in g->src, where
 * *pay points (the checksum is summed there: the L4 header's length is even).
 */
static size_t build_at(const nd_gso *g, uint8_t *f, bool copy, const uint8_t **pay, size_t *paylen) {
  size_t off = (size_t)g->idx * g->gso_size;
  size_t seglen = g->paylen - off < g->gso_size ? g->paylen - off : g->gso_size;
  bool first = g->idx == 0, last = g->idx + 1 == g->nseg;
  const uint8_t *p = g->src + g->hdrlen + off;
  memcpy(f, g->src, g->hdrlen);
  if (copy) memcpy(f + g->hdrlen, p, seglen);
  *pay = p;
  *paylen = seglen;

  uint8_t *ip = f + g->l3;
  size_t l4len = g->hdrlen - g->l4 + seglen;
  if (!g->v6) {
    size_t ihl = g->l4 - g->l3;
    wr16(ip + 2, (uint16_t)(ihl + l4len));
    wr16(ip + 4, (uint16_t)(g->ip_id + g->idx));
    ip[10] = ip[11] = 0;
    uint16_t c = (uint16_t)~nd_csum_fold(nd_csum_add(0, ip, ihl));
    memcpy(ip + 10, &c, 2);
  } else {
    wr16(ip + 4, (uint16_t)l4len);
  }

  uint8_t *l4 = f + g->l4;
  size_t csum_at;
  if (!g->udp) {
    wr32(l4 + 4, g->seq + (uint32_t)off);
    uint8_t fl = l4[13];
    if (!last) fl &= (uint8_t)~(TCP_FIN | TCP_PSH);
    if (!first) fl &= (uint8_t)~TCP_CWR;
    l4[13] = fl;
    csum_at = 16;
  } else {
    wr16(l4 + 4, (uint16_t)l4len);
    csum_at = 6;
  }
  l4[csum_at] = l4[csum_at + 1] = 0;
  uint64_t sum = nd_csum_add(g->pseudo + net16((uint16_t)l4len), l4, g->hdrlen - g->l4);
  uint16_t c = (uint16_t)~nd_csum_fold(nd_csum_add(sum, p, seglen));
  if (c == 0 && g->udp) c = 0xffff; /* 0 means "no checksum" in UDP */
  memcpy(l4 + csum_at, &c, 2);
  return copy ? g->hdrlen + seglen : g->hdrlen;
}

/* Build segment g->idx at f (which has room for hdrlen + gso_size bytes). */
static size_t build_segment(const nd_gso *g, uint8_t *f) {
  const uint8_t *p;
  size_t l;
  return build_at(g, f, true, &p, &l);
}

int nd_gso_headers(nd_gso *g, const uint8_t *hdr, const uint8_t *f, size_t len, uint8_t *hdrs, size_t stride,
                   int max, const uint8_t **pay, int32_t *paylen) {
  nd_vnet v;
  nd_vnet_decode(&v, hdr);
  if (v.gso_type == VNET_GSO_NONE || len < ETH_HLEN_ || len > ND_READ_MAX) return -1;
  if (prepare(g, f, len, &v, NULL, true) < 0 || g->nseg > (uint32_t)max || g->hdrlen > stride) {
    g->active = false;
    return -1;
  }
  int n = 0;
  for (; g->idx < g->nseg; g->idx++, n++) {
    size_t pl;
    build_at(g, hdrs + (size_t)n * stride, false, &pay[n], &pl);
    paylen[n] = (int32_t)pl;
  }
  g->active = false;
  return n;
}

/*
 * Emit as many segments as the ring has frames and arena bytes for. Returns the
 * number emitted; g->active stays set if some remain (the caller delivers the
 * batch and calls again with an empty ring).
 */
int nd_gso_emit(nd_gso *g, nd_out *o, nd_stats *s) {
  int n = 0;
  while (g->active && o->n < o->max) {
    size_t off = (size_t)g->idx * g->gso_size;
    size_t seglen = g->paylen - off < g->gso_size ? g->paylen - off : g->gso_size;
    size_t slot = ND_ALIGN_UP(o->pos);
    if (slot > o->cap || o->cap - slot < ND_RX_HEADROOM + g->hdrlen + seglen) break;
    size_t flen = build_segment(g, o->base + slot + ND_RX_HEADROOM);
    nd_out_commit(o, slot, flen, &g->vlan, s);
    s->gso_segments++;
    n++;
    if (++g->idx >= g->nseg) g->active = false;
  }
  return n;
}

/*
 * Transmit side: a frame that carries a virtio_net_hdr asking for work (a GSO
 * super-frame, or a checksum-partial frame) must leave through a port that
 * cannot take the header. Make the complete frames it stands for in `o` (the
 * transmit scratch area, emptied by the caller): segments with full checksums,
 * or a copy with its checksum filled in. The source bytes are never written:
 * they are the shared receive ring, and a flood may still send them elsewhere
 * with their header. All or nothing: returns the frame count, or -1 (counted)
 * when the frame cannot be completed or its segments do not all fit.
 */
int nd_tx_complete(nd_gso *g, const uint8_t *hdr, const uint8_t *f, size_t len, nd_out *o, nd_stats *s) {
  nd_vnet v;
  nd_stats tmp;
  memset(&tmp, 0, sizeof tmp);
  nd_vnet_decode(&v, hdr);
  if (len < ETH_HLEN_ || len > ND_READ_MAX) { s->tx_gso_dropped++; return -1; }
  if (v.gso_type != VNET_GSO_NONE) {
    /* In place: every segment is emitted below, before f can change, and f is only read. */
    if (prepare(g, f, len, &v, NULL, true) < 0 || g->nseg > (uint32_t)(o->max - o->n)) {
      g->active = false;
      s->tx_gso_dropped++;
      return -1;
    }
    nd_gso_emit(g, o, &tmp);
    if (g->active) { /* out of bytes: a pathological gso_size */
      g->active = false;
      s->tx_gso_dropped++;
      return -1;
    }
    s->tx_gso_segmented++;
    s->tx_gso_segments += tmp.gso_segments;
    return o->n;
  }
  size_t slot = ND_ALIGN_UP(o->pos);
  if (o->n >= o->max || slot > o->cap || o->cap - slot < ND_RX_HEADROOM + len) { s->tx_gso_dropped++; return -1; }
  uint8_t *dst = o->base + slot + ND_RX_HEADROOM;
  memcpy(dst, f, len);
  if (v.flags & VNET_F_NEEDS_CSUM) {
    if (nd_csum_complete(dst, len, &v) < 0) { s->tx_gso_dropped++; return -1; }
    s->tx_csum_filled++;
  }
  nd_out_commit(o, slot, len, NULL, &tmp);
  return o->n;
}
