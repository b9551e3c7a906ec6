/*
 * Traffic generator for bench/attach-io: blasts one fixed 64-byte-payload UDP
 * frame (106 bytes on the wire) out of an interface with AF_PACKET + sendmmsg,
 * 64 frames per call, for a number of seconds. Runs inside the generator netns.
 * Usage: gen IFNAME SECONDS
 * The destination MAC is not the receiver's, so the receiving stack drops the
 * frame at once (PACKET_OTHERHOST); only promiscuous readers see it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 64

static uint16_t csum(const uint8_t *p, size_t n, uint32_t s) {
  for (; n > 1; n -= 2, p += 2) s += (uint32_t)(p[0] << 8 | p[1]);
  if (n) s += (uint32_t)p[0] << 8;
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return (uint16_t)~s;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: gen IFNAME SECONDS\n"); return 2; }
  double secs = atof(argv[2]);
  int idx = (int)if_nametoindex(argv[1]);
  if (!idx) { perror("if_nametoindex"); return 1; }
  int fd = socket(AF_PACKET, SOCK_RAW, 0);
  if (fd < 0) { perror("socket"); return 1; }
  int one = 1;
  setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one);
  struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_ifindex = idx, .sll_halen = 6 };

  uint8_t f[14 + 20 + 8 + 64];
  memset(f, 0, sizeof f);
  memcpy(f, "\x02\xba\x00\x00\x00\x02\x02\xba\x00\x00\x00\x01\x08\x00", 14);
  uint8_t *ip = f + 14, *udp = ip + 20;
  ip[0] = 0x45; ip[2] = 0; ip[3] = 20 + 8 + 64; ip[8] = 64; ip[9] = 17;
  memcpy(ip + 12, "\xc6\x12\x00\x01\xc6\x12\x00\x02", 8); /* 198.18.0.1 -> 198.18.0.2 */
  uint16_t c = csum(ip, 20, 0); ip[10] = c >> 8; ip[11] = c & 0xff;
  udp[0] = 0x23; udp[1] = 0x28; udp[2] = 0x23; udp[3] = 0x28; /* 9000 -> 9000 */
  udp[5] = 8 + 64;
  memcpy(udp + 8, "BAGEN", 5);
  uint32_t ps = 0xc612 + 0x0001 + 0xc612 + 0x0002 + 17 + 8 + 64;
  c = csum(udp, 8 + 64, ps); if (!c) c = 0xffff; udp[6] = c >> 8; udp[7] = c & 0xff;

  struct iovec iov[BATCH];
  struct mmsghdr m[BATCH];
  memset(m, 0, sizeof m);
  for (int i = 0; i < BATCH; i++) {
    iov[i] = (struct iovec){ f, sizeof f };
    m[i].msg_hdr.msg_iov = &iov[i];
    m[i].msg_hdr.msg_iovlen = 1;
    m[i].msg_hdr.msg_name = &sll;
    m[i].msg_hdr.msg_namelen = sizeof sll;
  }
  unsigned long long sent = 0, errs = 0;
  double t0 = now(), end = t0 + secs;
  while (now() < end) {
    for (int k = 0; k < 16; k++) {
      int r = sendmmsg(fd, m, BATCH, 0);
      if (r > 0) sent += (unsigned)r;
      else errs++;
    }
  }
  double dt = now() - t0;
  printf("{\"sent\":%llu,\"errors\":%llu,\"seconds\":%.3f}\n", sent, errs, dt);
  return 0;
}
