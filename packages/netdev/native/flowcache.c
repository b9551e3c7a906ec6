/*
 * The exact-match flow cache's table (bench/DESIGN-flow-cache.md, issue 19).
 *
 * Model: Open vSwitch's split. The TypeScript pipeline decides; this table only
 * remembers decisions JS installed ("a frame with key K from handle I went to
 * handle O, written as header H + the frame from byte S on"), so that a later
 * frame with exactly the same key can be replayed without entering JS. It never
 * decides anything: a frame it cannot key, or whose key is absent or stale, is a
 * miss and goes to JS as before.
 *
 * The key is everything a cacheable decision depends on in the frame and its
 * ingress: the ingress handle, both MACs (the source decides learning), the
 * 802.1Q/802.1ad tag as it arrived (TPID kind and the whole TCI), and the
 * virtio_net_hdr's flags and gso_type (partial and GSO frames take another egress
 * path); for a handle JS keys in the IPv4 and ARP classes (ND_FC_KEY_L3: a guarded
 * port, or one in a VLAN with ARP/ND suppression), also the IPv4 source (ARP: sender)
 * address, and frames outside those classes have no key (a miss), so a frame the guard or the suppressor
 * would judge by something else never hits. What it cannot see (port config, MAC table, VLAN membership, guards) is
 * covered by the generation: each entry carries its bridge's generation at
 * install time, JS bumps the bridge's generation on every change that could alter
 * any decision, and an entry of an older generation is a miss. Handles closing
 * drop their entries (nd_fc_forget_handle), so a recycled handle id never hits.
 * The generations live in memory JS writes (a Float64Array: doubles, so they never
 * wrap): a bump is one store in JS, no call.
 *
 * Counters stay exact by folding, not by C owning them: each entry counts its
 * hits, bytes and last hit time; nd_fc_fold hands the non-zero ones to JS, which
 * adds them to the port/bridge counters and refreshes the source MAC's age, and
 * zeroes them. An entry with unfolded counts is never overwritten (an install
 * that would have to is refused), so no hit is lost, stale or not.
 *
 * Layout: open addressing over ND_FC_SIZE entries, a probe window of
 * ND_FC_WINDOW slots from the hash; lookups scan the whole window (no tombstones
 * needed: any slot may be empty). No allocation after nd_fc_new.
 */
#include "flowcache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct nd_fc {
  nd_fc_entry e[ND_FC_SIZE];
  const double *gen; /* per bridge, written by JS */
  nd_fc_stats stats;
};

nd_fc *nd_fc_new(const double *gens) {
  nd_fc *fc = calloc(1, sizeof(nd_fc));
  if (fc) fc->gen = gens;
  return fc;
}
void nd_fc_free(nd_fc *fc) { free(fc); }
const nd_fc_stats *nd_fc_stats_of(const nd_fc *fc) { return &fc->stats; }

/* The IPv4 class of ND_FC_KEY_L3 (flowcache.h), the IP header at frame[l3]: as guard.ts guardCheck reads it. */
static bool ip4_class(const uint8_t *frame, size_t len, size_t l3) {
  if (l3 + 20 > len || frame[l3] >> 4 != 4) return false;
  size_t ihl = (size_t)(frame[l3] & 0x0f) * 4;
  if (ihl < 20) return false;
  /* A UDP datagram's first fragment: the guard reads its ports (DHCP is judged by them). */
  if (frame[l3 + 9] == 17 && ((frame[l3 + 6] << 8 | frame[l3 + 7]) & 0x1fff) == 0) {
    size_t l4 = l3 + ihl;
    if (l4 + 4 > len) return false;
    unsigned sport = (unsigned)(frame[l4] << 8 | frame[l4 + 1]), dport = (unsigned)(frame[l4 + 2] << 8 | frame[l4 + 3]);
    if (sport == 67 || sport == 68 || dport == 67 || dport == 68) return false;
  }
  return true;
}

/* The ARP class of ND_FC_KEY_L3 (flowcache.h), the ARP body at frame[l3]: as guard.ts guardCheck
 * reads it (checkArpIpv4, then the sender hardware address against the frame's source). */
static bool arp_class(const uint8_t *frame, size_t len, size_t l3) {
  return l3 + 28 <= len && frame[l3 + 2] == 0x08 && frame[l3 + 3] == 0x00 && frame[l3 + 4] == 6 && frame[l3 + 5] == 4 &&
         memcmp(frame + l3 + 8, frame + 6, 6) == 0;
}

/* The IPv6 class of ND_FC_KEY_L3 (flowcache.h), the IPv6 header at frame[l3]: what guard6.ts
 * guard6Check reads before the source's claim, with no extension header to walk. */
static bool ip6_class(const uint8_t *frame, size_t len, size_t l3) {
  if (l3 + 40 > len || frame[l3] >> 4 != 6) return false;
  size_t plen = (size_t)(frame[l3 + 4] << 8 | frame[l3 + 5]);
  size_t u = l3 + 40;
  if (u + plen > len) return false;
  const uint8_t *sa = frame + l3 + 8;
  if (sa[0] == 0xff) return false; /* multicast */
  uint8_t any = 0;
  for (int i = 0; i < 16; i++) any |= sa[i];
  if (!any) return false; /* :: */
  switch (frame[l3 + 6]) {
    case 6: return true;
    case 17: return plen >= 4 && (frame[u] << 8 | frame[u + 1]) != 547;
    case 58: return plen >= 4 && (frame[u] == 128 || frame[u] == 129);
    default: return false;
  }
}

bool nd_fc_key_of(nd_fc_key *k, int32_t in, const uint8_t *frame, size_t len, const uint8_t *vnet, int mode) {
  if (len < 14) return false;
  /* ip6_src is read only for l3 = 3 (same_key, the fold), which fills it: the rest is all a probe zeroes. */
  memset(k, 0, ND_FC_KEY_HASHED);
  memcpy(k->dst, frame, 6);
  memcpy(k->src, frame + 6, 6);
  uint16_t type = (uint16_t)(frame[12] << 8 | frame[13]);
  size_t l3 = 14;
  if (type == 0x8100 || type == 0x88a8) {
    if (len < 18) return false;
    k->tag = type == 0x8100 ? 1 : 2;
    k->tci = (uint16_t)(frame[14] << 8 | frame[15]);
    type = (uint16_t)(frame[16] << 8 | frame[17]);
    l3 = 18;
  }
  if (mode == ND_FC_KEY_L3) {
    /* An S-tag is payload to the bridge (the guard reads 0x88a8 as the type): not in the class. */
    if (k->tag == 2) return false;
    if (type == 0x0800 && ip4_class(frame, len, l3)) {
      k->l3 = 1;
      memcpy(k->ip4_src, frame + l3 + 12, 4);
    } else if (type == 0x0806 && arp_class(frame, len, l3)) {
      k->l3 = 2;
      memcpy(k->ip4_src, frame + l3 + 14, 4);
    } else if (type == 0x86dd && ip6_class(frame, len, l3)) {
      k->l3 = 3;
      memcpy(k->ip6_src, frame + l3 + 8, 16);
      for (int i = 0; i < 16; i++) k->ip4_src[i & 3] ^= k->ip6_src[i];
    } else {
      return false;
    }
  }
  k->vnet_flags = vnet ? vnet[0] : 0;
  k->gso_type = vnet ? vnet[1] : 0;
  k->in = in;
  return true;
}

static uint32_t hash_key(const nd_fc_key *k) {
  /* FNV-1a over the key's hashed bytes (padding zeroed by nd_fc_key_of; an IPv6 source folded into ip4_src). */
  const uint8_t *p = (const uint8_t *)k;
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < ND_FC_KEY_HASHED; i++) h = (h ^ p[i]) * 16777619u;
  return h ^ (h >> 15);
}

static bool same_key(const nd_fc_key *a, const nd_fc_key *b) {
  return memcmp(a, b, ND_FC_KEY_HASHED) == 0 && (a->l3 != 3 || memcmp(a->ip6_src, b->ip6_src, 16) == 0);
}

static bool pending(const nd_fc_entry *e) { return e->hits != 0; }

static bool live(const nd_fc *fc, const nd_fc_entry *e) { return e->used && !e->dead && e->gen == fc->gen[e->bridge]; }

int nd_fc_install(nd_fc *fc, int bridge, const nd_fc_key *k, const nd_fc_action *a) {
  if (bridge < 0 || bridge >= ND_FC_BRIDGES) return -1;
  uint32_t h = hash_key(k);
  nd_fc_entry *free_slot = NULL, *same = NULL;
  for (int i = 0; i < ND_FC_WINDOW; i++) {
    nd_fc_entry *e = &fc->e[(h + (uint32_t)i) & (ND_FC_SIZE - 1)];
    if (e->used && same_key(&e->key, k)) { same = e; break; }
    if (!free_slot && !pending(e) && !live(fc, e)) free_slot = e;
  }
  nd_fc_entry *e = same ? same : free_slot;
  /* A key already present keeps its unfolded counts under the new decision only
   * when the decision is the same; otherwise they must be folded first. */
  if (same && pending(same) && (same->dead || same->bridge != bridge || same->act.out != a->out)) e = NULL;
  if (!e) {
    fc->stats.install_refused++;
    return -1;
  }
  if (!e->used || !same || !pending(e)) {
    e->hits = e->bytes = e->last_ms = e->tx_bytes = e->err_down = e->err_other = 0;
  }
  e->key = *k;
  e->act = *a;
  e->bridge = (uint16_t)bridge;
  e->gen = fc->gen[bridge];
  e->used = true;
  e->dead = false;
  fc->stats.installs++;
  return (int)(e - fc->e);
}

nd_fc_entry *nd_fc_probe(nd_fc *fc, const nd_fc_key *k) {
  uint32_t h = hash_key(k);
  for (int i = 0; i < ND_FC_WINDOW; i++) {
    nd_fc_entry *e = &fc->e[(h + (uint32_t)i) & (ND_FC_SIZE - 1)];
    if (e->used && same_key(&e->key, k)) {
      if (!live(fc, e)) break;
      return e;
    }
  }
  fc->stats.misses++;
  return NULL;
}

void nd_fc_miss(nd_fc *fc) { fc->stats.misses++; }

void nd_fc_hit(nd_fc *fc, nd_fc_entry *e, size_t len, double now_ms, long written) {
  e->hits++;
  e->bytes += (double)len;
  e->last_ms = now_ms;
  if (written >= 0) e->tx_bytes += (double)written;
  else if (written == -ENETDOWN || written == -EIO) e->err_down++;
  else e->err_other++;
  fc->stats.hits++;
}

int nd_fc_fold(nd_fc *fc, double *out, int max) {
  int n = 0;
  for (int i = 0; i < ND_FC_SIZE && n < max; i++) {
    nd_fc_entry *e = &fc->e[i];
    if (!pending(e)) continue;
    double *o = out + (size_t)n * ND_FC_FOLD_FIELDS;
    o[0] = e->bridge;
    o[1] = e->act.in_cookie;
    o[2] = e->act.out_cookie;
    o[3] = (double)((uint32_t)e->key.src[0] << 8 | e->key.src[1]);
    o[4] = (double)((uint32_t)e->key.src[2] << 24 | (uint32_t)e->key.src[3] << 16 | (uint32_t)e->key.src[4] << 8 | e->key.src[5]);
    o[5] = e->key.tag ? (double)((uint32_t)e->key.tag << 16 | e->key.tci) : -1;
    o[6] = e->hits;
    o[7] = e->bytes;
    o[8] = e->last_ms;
    o[9] = e->tx_bytes;
    o[10] = e->err_down;
    o[11] = e->err_other;
    o[12] = e->key.l3;
    for (int w = 0; w < 4; w++) {
      const uint8_t *a = e->key.ip6_src + 4 * w;
      o[13 + w] = e->key.l3 == 3 ? (double)((uint32_t)a[0] << 24 | (uint32_t)a[1] << 16 | (uint32_t)a[2] << 8 | a[3]) : 0;
    }
    e->hits = e->bytes = e->tx_bytes = e->err_down = e->err_other = 0;
    n++;
  }
  return n;
}

int nd_fc_count(const nd_fc *fc) {
  int n = 0;
  for (int i = 0; i < ND_FC_SIZE; i++) n += live(fc, &fc->e[i]);
  return n;
}

static void drop(nd_fc_entry *e) {
  /* Unfolded counts stay (the slot is not reused until folded); only hits end. */
  e->dead = true;
  if (!pending(e)) e->used = false;
}

void nd_fc_forget_handle(nd_fc *fc, int32_t handle) {
  for (int i = 0; i < ND_FC_SIZE; i++) {
    nd_fc_entry *e = &fc->e[i];
    if (e->used && (e->key.in == handle || e->act.out == handle)) drop(e);
  }
}

void nd_fc_flush(nd_fc *fc, int bridge) {
  for (int i = 0; i < ND_FC_SIZE; i++)
    if (fc->e[i].used && (bridge < 0 || fc->e[i].bridge == bridge)) drop(&fc->e[i]);
  fc->stats.flushes++;
}
