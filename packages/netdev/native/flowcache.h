/*
 * flowcache.c: the exact-match flow cache's table (see there for the model).
 * Plain byte work, no N-API: addon.c exposes it, and the read loop will probe it.
 */
#ifndef ND_FLOWCACHE_H
#define ND_FLOWCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ND_FC_SIZE 4096    /* entries, a power of two */
#define ND_FC_WINDOW 8     /* slots probed from the hash */
#define ND_FC_BRIDGES 4096 /* bridge ids (generations) */
#define ND_FC_FOLD_FIELDS 17

/* Zeroed (padding included) up to ND_FC_KEY_HASHED by nd_fc_key_of: hashed and compared as bytes; ip6_src
 * is filled, compared and folded only for l3 = 3. */
typedef struct nd_fc_key {
  int32_t in;         /* ingress handle */
  uint8_t dst[6];
  uint8_t src[6];
  uint16_t tci;       /* the tag's whole TCI as it arrived (0 untagged) */
  uint8_t tag;        /* 0 untagged, 1 802.1Q (0x8100), 2 802.1ad (0x88a8) */
  uint8_t vnet_flags; /* virtio_net_hdr flags (NEEDS_CSUM) */
  uint8_t gso_type;
  uint8_t l3;         /* ND_FC_KEY_L3's class: 1 IPv4 (ip4_src: the source address), 2 ARP (ip4_src: the sender's), 3 IPv6 */
  uint8_t pad[2];
  uint8_t ip4_src[4]; /* the IPv4 source or ARP sender protocol address as it arrived; IPv6: its source's four words xor'ed (for the hash) */
  /* The bytes above are hashed and compared (ND_FC_KEY_HASHED); these only compared, and only for
   * l3 = 3, so that a key without them costs a probe nothing more. */
  uint8_t ip6_src[16]; /* the IPv6 source address as it arrived (l3 = 3 only; anything otherwise) */
} nd_fc_key;
#define ND_FC_KEY_HASHED offsetof(nd_fc_key, ip6_src)

/*
 * Key modes (nd_fc_key_of `mode`). ND_FC_KEY_L3 is for a handle whose decisions also
 * depend on the IPv4 source (an anti-spoofing guard) or on the frame not being ARP or
 * IPv6 (ARP/ND suppression): only frames of two classes get a key, untagged or with one
 * 802.1Q tag (an 802.1ad one is payload to the bridge: outside both):
 * - IPv4 (l3 = 1): EtherType IPv4, version 4, IHL >= 5 and the 20-byte header within
 *   the frame; for the first fragment of a UDP datagram, its ports within the frame and
 *   neither of them 67 or 68 (DHCP, which the guard judges by port). The key holds the
 *   source address.
 * - ARP (l3 = 2): EtherType ARP, the 28-byte body within the frame, protocol type IPv4
 *   with 6-byte hardware and 4-byte protocol addresses (any hardware type and opcode:
 *   the guard reads neither), and the sender hardware address equal to the frame's
 *   source MAC. The key holds the sender protocol address (0.0.0.0 included: a probe,
 *   which the guard admits, as it is the only address such a key can have).
 * - IPv6 (l3 = 3): EtherType IPv6, version 6, the 40-byte header and the payload its
 *   length says within the frame, no extension header: the next header TCP, UDP with its
 *   source port within the payload and not 547 (DHCPv6 servers and relays), or ICMPv6
 *   echo request or reply (128, 129; ND, RA, Redirect and MLD are outside); the source
 *   neither :: nor multicast. The key holds the source address. Within it the IPv6
 *   guards (guard6.ts guard6Check) read nothing but the source address's claim, which
 *   every admitted frame refreshes: the fold hands the address back so that JS refreshes
 *   it for the replayed frames (fold field 12 the class, 13..16 the address's words).
 * Within any of them, a guard's verdict depends only on the source MAC and that address
 * (both in the key, the class apart) and on its bindings and options (the generation).
 * The ARP class is for guarded ports alone: the bridge installs no ARP frame in a VLAN
 * where ARP/ND suppression answers (its verdict reads the opcode, the target and its
 * table), and the tag in the key fixes a frame's VLAN for its handle.
 */
#define ND_FC_KEY_L2 0
#define ND_FC_KEY_L3 1

/*
 * What a hit replays: the frame as it arrived (its own virtio_net_hdr in front for a
 * device that takes one: a TSO super-frame stays one), to handle `out`. Tag edits (a prebuilt header, then
 * the frame from `skip` on) are not installed yet. The cookies are JS's port ids,
 * handed back by the fold.
 */
typedef struct nd_fc_action {
  int32_t out;
  int32_t in_cookie, out_cookie;
} nd_fc_action;

typedef struct nd_fc_entry {
  nd_fc_key key;
  nd_fc_action act;
  double gen;      /* the bridge's generation at install */
  uint16_t bridge;
  bool used;
  bool dead;       /* its handle closed, or flushed: a miss; the slot is reused once its counts are folded */
  /* Since the last fold: frames replayed, their bytes, the last one's time (ring clock),
   * bytes written, and failed writes by class (ENETDOWN/EIO: link_down; others: tx_error). */
  double hits, bytes, last_ms, tx_bytes, err_down, err_other;
} nd_fc_entry;

typedef struct nd_fc_stats {
  double hits, misses, installs, install_refused, flushes;
} nd_fc_stats;

typedef struct nd_fc nd_fc;

/* gens: ND_FC_BRIDGES generations, owned by the caller (JS writes them: a Float64Array). */
nd_fc *nd_fc_new(const double *gens);
void nd_fc_free(nd_fc *fc);
const nd_fc_stats *nd_fc_stats_of(const nd_fc *fc);
/* The key of frame[0..len) read from handle `in` (vnet: its virtio_net_hdr, or NULL) in `mode`
 * (ND_FC_KEY_*); false: too short to key, or (ND_FC_KEY_L3) outside the IPv4 class. */
bool nd_fc_key_of(nd_fc_key *k, int32_t in, const uint8_t *frame, size_t len, const uint8_t *vnet, int mode);
/* The slot index, or -1 when refused (no free slot in the window without unfolded counts). */
int nd_fc_install(nd_fc *fc, int bridge, const nd_fc_key *k, const nd_fc_action *a);
/* The live entry for k, or NULL (a miss, counted). */
nd_fc_entry *nd_fc_probe(nd_fc *fc, const nd_fc_key *k);
/* Count a miss of a frame that could not be probed (no key, or a header that asks for something). */
void nd_fc_miss(nd_fc *fc);
/* Count a replayed frame of len bytes (the ring's batch time) and its write's result (bytes or -errno). */
void nd_fc_hit(nd_fc *fc, nd_fc_entry *e, size_t len, double now_ms, long written);
/* Up to max entries' unfolded counts into out (ND_FC_FOLD_FIELDS doubles each: bridge, in cookie,
 * out cookie, src MAC high 16 bits, low 32 bits, tag<<16|tci or -1, hits, bytes, last hit ms,
 * tx bytes, link_down errors, tx_error errors, the key's l3 class (0: none), and for an IPv6
 * key its source address as four 32-bit words (else 0): the order of FOLD in flow-cache.ts);
 * zeroes them. */
int nd_fc_fold(nd_fc *fc, double *out, int max);
int nd_fc_count(const nd_fc *fc);
/* A handle closed: its entries (in or out) never hit again. */
void nd_fc_forget_handle(nd_fc *fc, int32_t handle);
/* Every entry of the bridge (all: -1) stale, counts kept for the fold (the cache turned off). */
void nd_fc_flush(nd_fc *fc, int bridge);

#endif
