/*
 * Shared declarations for the netdev addon. The split is by concern so each file
 * can be read (and reasoned about for memory safety) on its own:
 *   addon.c   N-API glue, per-environment state, handle table, ring, polling
 *   tap.c     TUN/TAP open and the TAP read loop
 *   packet.c  AF_PACKET open and the packet read loop (auxdata, vnet header)
 *   gso.c     software segmentation, checksum completion, VLAN re-insertion
 *   link.c    interface flags and indexes
 *   udp.c     the VXLAN underlay: UDP receive (recvmmsg) and raw IPv4 send
 *   fair.c    the read loop's fair share (deficit round robin over the handles)
 *   vxlan_tx.c a super-frame to a VXLAN tunnel: segmented, encapsulated, one sendmmsg
 *   vxlan_gso.c the segments of a super-frame to a tunnel as UDP GSO datagrams (UDP_SEGMENT)
 *   tap_gro.c  TCP segments from the underlay coalesced into super-frames toward a TAP
 *   tcpopt.c  SO_RCVBUF of Node's TCP sockets (by fd) for the host NAT
 *   uring.c   batched TAP writes through io_uring (the flow cache's replays, setTapWriteBatch)
 * Only addon.c talks to N-API; the rest are plain syscalls and byte work, which
 * is what lets gso.c be exercised from a test export without a device.
 */
#ifndef NETDEV_H
#define NETDEV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>

#define ND_RING_BYTES (4u * 1024u * 1024u)
#define ND_RING_MAX_FRAMES 256
#define ND_MAX_HANDLES 65536
#define ND_FOLLOW_MAX 4 /* follow-up reads per batch (addon.c, on_poll) */
#define ND_SPARSE_MAX 16 /* sparse handles served ahead of one backlogged handle's service (addon.c, sparse_first) */
#define ND_GRO_HELD 16  /* TAPs that may hold a coalescing run at once (addon.c, tap_gro.c) */

/* Frames start on cache-line boundaries in the arena (see nd_out). */
#define ND_ALIGN 64u
#define ND_ALIGN_UP(x) (((x) + (ND_ALIGN - 1)) & ~(size_t)(ND_ALIGN - 1))

/*
 * Largest frame one read may return. A TAP's MTU can be 65535 and the frame adds
 * the Ethernet header (and the 10-byte vnet header, ND_VNET_HDR_LEN, when TAP_VNET_HDR is used);
 * a packet socket's GSO super-frame is bounded by the 16-bit IP length plus L2
 * headers. Anything that fills the whole buffer is treated as truncated.
 */
#define ND_READ_MAX (65536u + 128u)

/* Bytes kept free in front of each packet-socket frame for a restored 802.1Q tag. */
#define ND_VLAN_RESERVE 4u

/*
 * struct virtio_net_hdr without num_buffers: the layout of PACKET_VNET_HDR, and
 * of a TAP after TUNSETVNETHDRSZ 10, so both kinds of device share one format.
 */
#define ND_VNET_HDR_LEN 10u

/*
 * Every frame in the ring is preceded by its virtio_net_hdr (all zero when the
 * frame is complete), so a frame can be written to an offload-capable device as
 * one contiguous piece. Packet-socket frames need the tag reserve on top.
 */
#define ND_RX_HEADROOM (ND_VNET_HDR_LEN + ND_VLAN_RESERVE)

/*
 * The transmit-side scratch area where `segment` leaves the frames it made from
 * a GSO super-frame or a checksum-partial frame, for a port that cannot take
 * them. A 64 KB super-frame at the smallest MSS Linux uses (48 bytes) makes
 * about 1400 segments of one 128-byte slot each; anything beyond is refused.
 */
#define ND_TX_SCRATCH_BYTES (1024u * 1024u)
#define ND_TX_SCRATCH_FRAMES 2048

/* virtio_net_hdr values, spelled out: older uapi headers lack GSO_UDP_L4. */
#define VNET_F_NEEDS_CSUM 1
#define VNET_GSO_NONE 0
#define VNET_GSO_TCPV4 1
#define VNET_GSO_UDP 3
#define VNET_GSO_TCPV6 4
#define VNET_GSO_UDP_L4 5
#define VNET_GSO_ECN 0x80

typedef struct nd_stats {
  uint64_t rx_batches;    /* JS callbacks with count > 0 */
  uint64_t rx_follow_ups; /* ... of them handed to a callback by followUp(), in its caller's JS entry */
  uint64_t rx_sparse_first; /* services of a sparse handle ahead of a backlogged one's (addon.c, sparse_first) */
  uint64_t rx_frames;     /* frames handed to JS (segments count individually) */
  uint64_t rx_bytes;
  uint64_t rx_truncated;  /* frames larger than ND_READ_MAX, dropped */
  uint64_t rx_dropped;    /* runts, bad checksum offsets, kernel-side vnet errors */
  uint64_t gso_segmented; /* super-frames segmented */
  uint64_t gso_segments;  /* segments produced from them */
  uint64_t gso_dropped;   /* super-frames we could not (or would not) segment */
  uint64_t csum_filled;   /* CHECKSUM_PARTIAL frames completed in software */
  uint64_t vlan_restored; /* frames whose stripped 802.1Q/802.1ad tag was put back */
  uint64_t link_down;     /* transient ENETDOWN on a packet socket (link down, not gone) */
  uint64_t rx_offloaded;  /* packet-socket GSO / checksum-partial frames delivered whole, with their header */
  uint64_t tx_frames;
  uint64_t tx_errors;
  uint64_t tx_gso_segmented; /* super-frames segmented for a port without offloads */
  uint64_t tx_gso_segments;
  uint64_t tx_gso_dropped;   /* ... refused: unparseable, UFO, or too many segments */
  uint64_t tx_csum_filled;   /* checksum-partial frames completed for such a port */
  uint64_t vxlan_tx_segmented;  /* vxlan_tx.c: super-frames segmented for a tunnel */
  uint64_t vxlan_tx_segments;   /* ... segments (outer packets) made from them */
  uint64_t vxlan_tx_csum_filled; /* ... checksum-partial frames completed */
  uint64_t vxlan_tx_batches;    /* ... sendmmsg calls */
  uint64_t vxlan_tx_dropped;    /* ... refused: unparseable, UFO, too many segments */
  uint64_t vxlan_tx_too_big;    /* ... refused: a segment over the underlay MTU */
  uint64_t vxlan_tx_queued;     /* complete packets queued for a batched send (nd_vxq_add) */
  uint64_t vxlan_tx_queue_errors; /* ... refused by the kernel when the queue was flushed */
  uint64_t vxlan_tx_gso_sends;    /* vxlan_gso.c: sendmsg calls with UDP_SEGMENT (or one segment) */
  uint64_t vxlan_tx_gso_segments; /* ... segments (outer packets) they carried */
  uint64_t vxlan_tx_gso_refused;  /* ... times the kernel refused UDP GSO: sendmmsg from then on */
  uint64_t tap_gro_frames;      /* tap_gro.c: super-frames written to a TAP from coalesced segments */
  uint64_t tap_gro_segments;    /* ... segments they carry */
  uint64_t tap_gro_errors;      /* ... frames held for coalescing whose write the TAP refused */
  uint64_t udp_gro_bursts;      /* udp_gro.c: datagrams of several segments read whole (UDP_GRO) */
  uint64_t udp_gro_segments;    /* ... packets split from them into the ring */
  uint64_t udp_gro_dropped;     /* ... segments beyond what the batch had room for, dropped */
  uint64_t uring_flushes;       /* uring.c: batches of replayed frames written through io_uring */
  uint64_t uring_writes;        /* ... frames in them */
  uint64_t uring_enters;        /* ... io_uring_enter calls they took */
  uint64_t uring_unsent;        /* ... frames io_uring did not take, written with writev instead */
  uint64_t turn_yields;         /* addon.c, turn_yield (setTurnYield): busy turns that gave up the CPU */
  uint64_t turn_yield_ns;       /* ... the loop's time away in them (from the sleep's start to its return) */
} nd_stats;

/* addon.c turn_yield's modes (VSWITCH_TURN_YIELD). */
enum { ND_YIELD_CONTENDED, ND_YIELD_SLEEP, ND_YIELD_NAP, ND_YIELD_YIELD };

/* uring.c: batched writes (a TAP has no batched write of its own). */
typedef struct nd_ur nd_ur;
#define ND_UR_UNSENT INT32_MIN /* nd_ur_flush: the kernel did not take this write */
nd_ur *nd_ur_new(unsigned entries, int *err);
void nd_ur_free(nd_ur *u);
unsigned nd_ur_room(const nd_ur *u);
#define ND_UR_FILES 1024 /* registered-file slots: handles with a lower id write through one */
unsigned nd_ur_files(const nd_ur *u);
int nd_ur_set_file(nd_ur *u, unsigned slot, int fd);
void nd_ur_write(nd_ur *u, int fd, int slot, const void *buf, size_t len, uint32_t tag);
int nd_ur_flush(nd_ur *u, int32_t *res, unsigned n);

/*
 * Where received frames go: a byte arena plus parallel offset/length arrays.
 * Offsets are relative to `base`, which is what JS indexes.
 */
typedef struct nd_out {
  uint8_t *base;
  size_t cap;
  size_t pos; /* first free byte */
  int32_t *offs;
  int32_t *lens;
  int n;
  int max;
  /* Fair share (fair.c): the drains stop once budget <= 0 (each frame charges its
   * length + ND_FAIR_FRAME_COST, or 1 when `frames`) and leave `more` true unless
   * they saw EAGAIN. */
  int64_t budget;
  bool frames;
  bool more;
} nd_out;

/* fair.c: deficit round robin of the read loop. */
#define ND_FAIR_FRAME_COST 16384
#define ND_FAIR_QUANTUM_DEFAULT (256 * 1024)
#define ND_FAIR_QUANTUM_MIN 16384
#define ND_FAIR_QUANTUM_MAX (64 * 1024 * 1024)
/* The frame share (`frames`): the quantum counts frames, each frame costs 1. */
#define ND_FAIR_FRAMES_MIN 1
#define ND_FAIR_FRAMES_MAX 4096

typedef struct nd_fair {
  int64_t quantum; /* per round, bytes (or frames when `frames`); 0: off (drain until EAGAIN) */
  int64_t deficit;
  bool backlogged; /* the last service stopped with frames left */
  bool frames;     /* charge per frame, whatever its size (fair.c "Cost unit") */
} nd_fair;

int64_t nd_fair_begin(nd_fair *f, bool primary);
void nd_fair_end(nd_fair *f, int64_t left, bool more);

static inline void nd_fair_charge(nd_out *o, size_t len) {
  o->budget -= o->frames ? 1 : (int64_t)len + ND_FAIR_FRAME_COST;
}

/* A UDP GRO burst of `segs` packets read at once (udp_gro.c): in bytes one frame's
 * cost (one syscall and wake-up), in frames its segments (each goes through the
 * pipeline as its own frame). */
static inline void nd_fair_charge_burst(nd_out *o, size_t len, size_t segs) {
  o->budget -= o->frames ? (int64_t)segs : (int64_t)len + ND_FAIR_FRAME_COST;
}

/* How many more reads the budget admits at the least a frame can cost: the cap on
 * a batch read (recvmmsg) whose frames' sizes are known only after it. */
static inline int64_t nd_fair_reads_left(const nd_out *o) {
  if (o->budget <= 0) return 0;
  if (o->frames) return o->budget;
  /* Rounded up without adding first: an unlimited budget is INT64_MAX (signed overflow is UB). */
  return o->budget / ND_FAIR_FRAME_COST + (o->budget % ND_FAIR_FRAME_COST != 0);
}

/* A tag the kernel moved out of the frame into packet metadata. */
typedef struct nd_vlan {
  bool present;
  uint16_t tpid;
  uint16_t tci;
} nd_vlan;

/* virtio_net_hdr, decoded to host order (it is little-endian on the wire). */
typedef struct nd_vnet {
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;
  uint16_t gso_size;
  uint16_t csum_start;
  uint16_t csum_offset;
} nd_vnet;

void nd_vnet_decode(nd_vnet *v, const uint8_t raw[ND_VNET_HDR_LEN]);

/*
 * A super-frame being cut into segments. It lives in its own buffer because the
 * segments are larger in total than the super-frame and so cannot be written
 * over it, and because one super-frame may need more than one ring batch.
 */
typedef struct nd_gso {
  uint8_t *buf; /* ND_READ_MAX bytes, allocated once */
  const uint8_t *src; /* the super-frame segments are cut from: buf, or the caller's (nd_tx_complete) */
  bool active;
  nd_vlan vlan;
  bool v6, udp;
  size_t l3, l4, hdrlen, paylen, gso_size;
  uint32_t nseg, idx;
  uint32_t seq;     /* TCP sequence number of the first payload byte */
  uint16_t ip_id;   /* IPv4 ID of the first segment */
  uint64_t pseudo;  /* pseudo-header sum without the L4 length */
} nd_gso;

/* gso.c */
int nd_gso_prepare(nd_gso *g, const uint8_t *frame, size_t len, const nd_vnet *v, const nd_vlan *vlan);
int nd_gso_emit(nd_gso *g, nd_out *o, nd_stats *s);
int nd_csum_complete(uint8_t *frame, size_t len, const nd_vnet *v);
bool nd_out_commit(nd_out *o, size_t slot, size_t len, const nd_vlan *vlan, nd_stats *s);
int nd_tx_complete(nd_gso *g, const uint8_t *hdr, const uint8_t *frame, size_t len, nd_out *o, nd_stats *s);
/*
 * A GSO super-frame's segments as pieces, nothing copied but headers: segment i's
 * headers (lengths, IDs, sequence, flags, checksums complete) at hdrs + i*stride,
 * each g->hdrlen long, its payload at pay[i] (inside `frame`, which must stay
 * unchanged until they are sent), paylen[i] bytes. The segment count, or -1 when the
 * header asks for no GSO, the frame does not parse, or it needs more than max.
 */
int nd_gso_headers(nd_gso *g, const uint8_t *hdr, const uint8_t *frame, size_t len, uint8_t *hdrs, size_t stride,
                   int max, const uint8_t **pay, int32_t *paylen);
uint64_t nd_csum_add(uint64_t sum, const uint8_t *p, size_t n);
uint16_t nd_csum_fold(uint64_t sum);

/*
 * Read loops. Each drains one fd into `o` until EAGAIN, the frame limit, the
 * fair-share budget (o->budget), or the arena can no longer take a maximal read. Return the number of frames added;
 * *fatal is set to an errno when the device is gone (0 otherwise).
 */
int nd_tap_drain(int fd, bool vnet, nd_out *o, nd_stats *s, int *fatal);
int nd_packet_drain(int fd, bool keep_gso, nd_out *o, nd_gso *g, nd_stats *s, int *fatal);
/* tap_gro.c: per TAP, the run of TCP segments being coalesced (see the file's comment). */
typedef struct nd_gro nd_gro;
struct iovec;
nd_gro *nd_gro_new(void);
void nd_gro_free(nd_gro *g);
/* Take a complete frame (1: held, to be written by nd_gro_flush) or not (0: the run is
 * written first; the caller writes the frame itself). */
int nd_gro_offer(nd_gro *g, int fd, const struct iovec *iov, int niov, nd_stats *s);
void nd_gro_flush(nd_gro *g, int fd, nd_stats *s);
bool nd_gro_held(const nd_gro *g);

/* udp.c: the VXLAN underlay (a bound UDP socket to receive, a raw IPv4 socket to send). */
#define ND_UDP_MAX 16384u /* largest datagram kept: above any underlay MTU */
/* v6: a UDPv6 socket (udp6.c's layout of the sender before each payload). */
int nd_udp_drain(int fd, bool v6, nd_out *o, nd_stats *s, int *fatal);
int nd_udp_open(uint32_t local_be, uint16_t port, const char *ifname, const char **op);
/* Shared by udp.c's and udp_gro.c's drains: the sender in front of a payload, and what a failed recvmmsg means. */
struct sockaddr_in6;
void nd_udp_put_sender(uint8_t *base, size_t start, bool v6, const struct sockaddr_in6 *from, int tos);
/* The outer DS field (IP_TOS / IPV6_TCLASS cmsg of a datagram received with IP_RECVTOS / IPV6_RECVTCLASS), 0 if absent. */
int nd_udp_tos_of(const struct msghdr *m);
int nd_udp_recv_retry(int e, nd_out *o, int *fatal);
int nd_raw_open(const char *ifname, const char **op);
/* udp_gro.c: the same drain on a socket with UDP_GRO on (see the file's comment). */
int nd_udp_set_gro(int fd, bool on);
int nd_udp_gro_drain(int fd, bool v6, nd_out *o, nd_stats *s, int *fatal);
/* udp6.c: the same over IPv6 (a bound UDPv6 socket, a raw IPv6 socket whose UDP checksum the kernel fills). */
#define ND_UDP6_HEADROOM 32u      /* in front of a UDPv6 payload in the ring: room for the sender */
#define ND_UDP6_SENDER_BEFORE 22u /* sender address (16), port (2), zeros (4), then the payload */
int nd_udp6_open(const uint8_t local[16], uint16_t port, const char *ifname, bool zero_csum_rx, const char **op);
int nd_raw6_open(const uint8_t local[16], const char *ifname, const char **op);
struct iovec;
long nd_raw6_send(int fd, const uint8_t dst[16], int hops, int tclass, const struct iovec *iov, int n);

/* vxlan_tx.c: a frame with a virtio_net_hdr asking for work, to a VXLAN tunnel. */
#define ND_VXLAN_OUTER 36u           /* outer IPv4 + UDP + VXLAN */
#define ND_VXLAN6_OUTER 16u          /* over IPv6: UDP + VXLAN (the kernel writes the IPv6 header) */
#define ND_VXLAN6_WIRE 56u           /* what an IPv6 packet adds to its inner frame: IPv6 + UDP + VXLAN */
#define ND_VXTX_MAX 512              /* segments per frame: 64 KB at a gso_size of 128 */
#define ND_VXTX_BYTES (512u * 1024u) /* their inner frames (64-byte aligned slots), or headers */
#define ND_VXTX_HDR_SLOT 256u        /* a segment's inner headers (at most 14 + 8 + 40 + 60) */
#define ND_VXTX_BAD (-1)             /* does not parse, UFO, or too many segments */
#define ND_VXTX_TOO_BIG (-2)         /* a segment's outer packet would exceed the MTU */
/* vxlan_gso.c: UDP GSO sockets for vxlan_tx.c (see the file's comment). */
#define ND_VXGSO_SOCKS 16
#define ND_VXGSO_NO (-100000) /* not sent that way: use sendmmsg */
/*
 * Where a tunnel's packets go: IPv4 (sa holds a sockaddr_in; the raw socket's packets
 * carry their own IPv4 header with its TTL) or IPv6 (sa a sockaddr_in6; the kernel
 * writes the IPv6 header, the hop limit comes per message).
 */
typedef struct nd_vxdst {
  struct sockaddr_in6 sa; /* sockaddr_in-sized use for IPv4 */
  unsigned salen;
  int hops;
  int tclass; /* IPv6: the traffic class (IPv4: the header's TOS) */
  bool v6;
} nd_vxdst;
void nd_vxdst4(nd_vxdst *d, uint32_t dst_be);
void nd_vxdst6(nd_vxdst *d, const uint8_t dst[16], int hops, int tclass);
typedef struct nd_vxgso {
  bool on, nocheck, refused, v6;
  int raw_fd;
  uint32_t local_be;
  int fd[ND_VXGSO_SOCKS];
  uint16_t port[ND_VXGSO_SOCKS]; /* network order */
  struct iovec *iov;             /* 3 per segment, vxlan_tx.c's */
} nd_vxgso;
void nd_vxgso_init(nd_vxgso *g);
void nd_vxgso_set(nd_vxgso *g, bool on, bool nocheck_for_test);
void nd_vxgso_close_fd(nd_vxgso *g, int raw_fd);
void nd_vxgso_rewrite_sport(const nd_vxgso *g, int raw_fd, uint8_t *outer);
/* Segment i: its inner headers hdr[i] (hlen[i] bytes), then pay[i] (plen[i] bytes, possibly 0). */
int nd_vxgso_send(nd_vxgso *g, int raw_fd, const nd_vxdst *d, const uint8_t *outer, const uint8_t *const *hdr,
                  const int32_t *hlen, const uint8_t *const *pay, const int32_t *plen, int n, nd_stats *s);

typedef struct nd_vxtx nd_vxtx;
nd_vxtx *nd_vxtx_new(void);
void nd_vxtx_free(nd_vxtx *t);
/*
 * Segment/complete and encapsulate (outer: the header for an empty inner frame); the
 * segment count or ND_VXTX_*. `whole`: NULL, or the untagged frame in one piece
 * (macs' 12 bytes, then rest), read in place. v6: outer is ND_VXLAN6_OUTER bytes
 * (UDP + VXLAN) for the IPv6 underlay, else the IPv4 header, UDP and VXLAN.
 */
int nd_vxtx_build(nd_vxtx *t, bool v6, const uint8_t *outer, size_t mtu, const uint8_t *hdr,
                  const uint8_t *macs, const uint8_t *rest, size_t rest_len, const uint8_t *whole, nd_stats *s,
                  uint64_t *inner_bytes);
/* Packet i of the last build: its outer header (*olen bytes), and its inner frame in two pieces (the second possibly empty). */
const uint8_t *nd_vxtx_packet(const nd_vxtx *t, int i, size_t *olen, const uint8_t **a, size_t *alen, const uint8_t **b, size_t *blen);
/* Send the last build's n packets to dst in one sendmmsg (more if it stops short); packets sent or -errno. Flushes the queue first. */
int nd_vxtx_send(nd_vxtx *t, int fd, const nd_vxdst *d, int n, nd_stats *s);
/* The queue of complete packets: up to ND_VXQ_MAX of at most ND_VXQ_SLOT bytes, sent in one sendmmsg. */
#define ND_VXQ_MAX 64
#define ND_VXQ_SLOT 16384u
/* Copy p[0..2] (outer header, then the frame) as one packet to dst through fd into the queue; bytes, or -EMSGSIZE. */
int nd_vxq_add(nd_vxtx *t, int fd, const nd_vxdst *to, const uint8_t *const p[3], const size_t len[3], nd_stats *s);
/* Send what is queued; returns how many packets were (refusals counted). */
int nd_vxq_flush(nd_vxtx *t, nd_stats *s);
int nd_vxq_pending(const nd_vxtx *t);
/* UDP GSO for sendVxlan (vxlan_gso.c): on/off (and, for tests, sockets the kernel refuses it on); the source port raw packets get. */
void nd_vxtx_set_gso(nd_vxtx *t, bool on, bool nocheck_for_test);
void nd_vxtx_rewrite_sport(const nd_vxtx *t, int raw_fd, uint8_t *outer);
/* fd is about to close: send what is queued for it. */
void nd_vxq_close_fd(nd_vxtx *t, int fd, nd_stats *s);

/* Open helpers return an fd, or -errno with *op naming the failed step. */
int nd_tap_open(const char *name, int flags, long owner, long group, char kname[16], const char **op);
int nd_tap_set_persist(int fd, bool on);

/* tcpopt.c: SO_RCVBUF of a socket opened elsewhere (Node's): bytes >= 0 sets (0 or -errno), -1 reads (value or -errno) */
int nd_sock_rcvbuf(int fd, int bytes);

/* notify.c: one datagram `text` to the AF_UNIX socket `path` ("/..." or "@abstract"), as sd_notify(3). 0 or -errno. */
int nd_notify(const char *path, const char *text, size_t len);
int nd_packet_open(const char *ifname, int *ifindex, bool *vnet, const char **op);
bool nd_packet_bound(int fd);

/* link.c */
int nd_link_set_up(const char *name, bool up);

#define ND_TAP_PERSIST 1
#define ND_TAP_VNET_HDR 2
#define ND_PACKET_KEEP_GSO 1

#endif
