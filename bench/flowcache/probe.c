/*
 * The flow cache's per-frame cost in the read loop (native/flowcache.c): nd_fc_key_of
 * and nd_fc_probe for a hit, as fc_replay does per frame, in a tight loop, for keys by
 * MACs and tag (an unguarded port: ND_FC_KEY_L2) and by class and address (a guarded
 * port's IPv4, ARP and IPv6: ND_FC_KEY_L3). Built by run.sh against one tree's native/
 * (two trees: the same loop over both tables, A/B in one run). No N-API, no I/O.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flowcache.h"

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* A 64-byte frame after a 10-byte virtio_net_hdr: `kind` 0 IPv4 TCP, 1 ARP reply, 2 IPv6 TCP; flow `i` varies the source MAC. */
static void frame(uint8_t *b, int kind, int i) {
  memset(b, 0, 10 + 64);
  uint8_t *f = b + 10;
  uint8_t dst[6] = { 2, 0, 0, 0, 0, 0x22 }, src[6] = { 2, 0, 0, 0, (uint8_t)(i >> 8), (uint8_t)i };
  memcpy(f, dst, 6);
  memcpy(f + 6, src, 6);
  if (kind == 0) {
    f[12] = 0x08; f[14] = 0x45; f[23] = 6; f[26] = 10; f[29] = (uint8_t)i;
  } else if (kind == 1) {
    f[12] = 0x08; f[13] = 0x06; f[15] = 1; f[16] = 0x08; f[18] = 6; f[19] = 4; f[21] = 2;
    memcpy(f + 22, src, 6); f[28] = 10; f[31] = (uint8_t)i;
  } else {
    f[12] = 0x86; f[13] = 0xdd; f[14] = 0x60; f[19] = 8; f[20] = 6; f[22] = 0x20; f[23] = 0x01; f[37] = (uint8_t)i;
  }
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 20000000;
  static double gens[ND_FC_BRIDGES];
  nd_fc *fc = nd_fc_new(gens);
  enum { FLOWS = 64 };
  static uint8_t frames[3][FLOWS][74];
  const char *names[] = { "IPv4", "ARP", "IPv6" };
  for (int kind = 0; kind < 3; kind++) {
    for (int mode = ND_FC_KEY_L2; mode <= ND_FC_KEY_L3; mode++) {
      nd_fc_flush(fc, -1);
      gens[0]++;
      int in = 1 + kind * 2 + mode;
      int ok = 0;
      for (int i = 0; i < FLOWS; i++) {
        frame(frames[kind][i], kind, i);
        nd_fc_key k;
        nd_fc_action a = { 9, 1, 2 };
        if (!nd_fc_key_of(&k, in, frames[kind][i] + 10, 64, frames[kind][i], mode)) continue;
        ok += nd_fc_install(fc, 0, &k, &a) >= 0;
      }
      if (ok != FLOWS) { printf("%s %s: outside the class here (%d/%d keyed)\n", names[kind], mode ? "l3" : "l2", ok, FLOWS); continue; }
      long hits = 0;
      double t0 = now_ns();
      for (long j = 0; j < n; j++) {
        const uint8_t *b = frames[kind][j & (FLOWS - 1)];
        nd_fc_key k;
        if (nd_fc_key_of(&k, in, b + 10, 64, b, mode) && nd_fc_probe(fc, &k)) hits++;
      }
      double dt = now_ns() - t0;
      printf("%s %s: %.2f ns per frame (key + probe, %ld hits of %ld)\n", names[kind], mode ? "l3" : "l2", dt / (double)n, hits, n);
      double z[ND_FC_FOLD_FIELDS * 128];
      while (nd_fc_fold(fc, z, 128) == 128) {}
    }
  }
  nd_fc_free(fc);
  return 0;
}
