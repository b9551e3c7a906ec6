/*
 * The VXLAN underlay over IPv6: a UDPv6 socket that receives the tunnel's
 * datagrams, and a raw IPv6 socket (IPPROTO_UDP) that sends them.
 *
 * Why a raw socket again (as udp.c for IPv4): the outer UDP source port varies
 * per inner flow (RFC 7348 entropy). Unlike IPv4, the sender writes only UDP +
 * VXLAN + the frame: the kernel builds the IPv6 header (source: the bound local
 * address; hop limit: per packet, IPV6_HOPLIMIT), and computes the UDP checksum
 * over the pseudo-header (IPV6_CHECKSUM at offset 6; it sends 0xffff for a sum of
 * 0), which IPv6 requires (RFC 8200; the zero-checksum mode of RFC 6935/6936 is a
 * receiver's option here, never sent). IPV6_DONTFRAG: a packet over the path MTU
 * is refused with EMSGSIZE, never fragmented. A super-frame's segments leave through
 * vxlan_tx.c (sendmmsg on this socket) or vxlan_gso.c (UDP GSO over UDPv6 sockets bound
 * to this socket's address), as over IPv4. A raw IPPROTO_UDP socket would also
 * get a copy of every UDPv6 packet the host receives: a filter that accepts
 * nothing keeps its queue empty.
 *
 * Receive: nd_udp_drain (udp.c) with v6, in batches into the ring, the UDP payload per frame.
 * The sender's port sits in the 2 bytes 6 before the payload and 4 bytes
 * follow (the IPv4 layout's tail: the outer traffic class, IPV6_RECVTCLASS, and 3 zeros), and its 16-byte address in the 16 bytes before
 * the port (ND_UDP6_SENDER_BEFORE = 22 bytes before the payload), which needs a
 * larger headroom than other frames: ND_UDP6_HEADROOM. With `zero_csum_rx` the
 * socket accepts datagrams with a zero UDP checksum (UDP_NO_CHECK6_RX, as Linux's
 * vxlan `udp6zerocsumrx`); without it the kernel drops them (Udp6InCsumErrors).
 */
#include "netdev.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/udp.h>
#include <net/if.h>
#include <netinet/in.h>

#ifndef UDP_NO_CHECK6_RX
#define UDP_NO_CHECK6_RX 102
#endif


static int set_int6(int fd, int level, int opt, int val) {
  return setsockopt(fd, level, opt, &val, sizeof val) < 0 ? -errno : 0;
}

static int bind_dev6(int fd, const char *ifname) {
  if (!ifname || !*ifname) return 0;
  return setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, ifname, (socklen_t)strlen(ifname)) < 0 ? -errno : 0;
}

static void bufs6(int fd, int rcv) {
  if (set_int6(fd, SOL_SOCKET, SO_RCVBUFFORCE, rcv) < 0) set_int6(fd, SOL_SOCKET, SO_RCVBUF, rcv);
  if (set_int6(fd, SOL_SOCKET, SO_SNDBUFFORCE, 8 << 20) < 0) set_int6(fd, SOL_SOCKET, SO_SNDBUF, 8 << 20);
}

static void sin6_of(struct sockaddr_in6 *s, const uint8_t addr[16], uint16_t port) {
  memset(s, 0, sizeof *s);
  s->sin6_family = AF_INET6;
  s->sin6_port = htons(port);
  memcpy(&s->sin6_addr, addr, 16);
}

int nd_udp6_open(const uint8_t local[16], uint16_t port, const char *ifname, bool zero_csum_rx, const char **op) {
  int e;
  *op = "socket(AF_INET6, SOCK_DGRAM)";
  int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  bufs6(fd, 8 << 20);
  *op = "IPV6_V6ONLY";
  if ((e = set_int6(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1)) < 0) goto fail;
  *op = "SO_REUSEADDR";
  if ((e = set_int6(fd, SOL_SOCKET, SO_REUSEADDR, 1)) < 0) goto fail;
  *op = "UDP_NO_CHECK6_RX";
  if (zero_csum_rx && (e = set_int6(fd, IPPROTO_UDP, UDP_NO_CHECK6_RX, 1)) < 0) goto fail;
  /* The outer traffic class per datagram (IPV6_TCLASS cmsg), as udp.c's IP_RECVTOS. */
  *op = "IPV6_RECVTCLASS";
  if ((e = set_int6(fd, IPPROTO_IPV6, IPV6_RECVTCLASS, 1)) < 0) goto fail;
  *op = "SO_BINDTODEVICE";
  if ((e = bind_dev6(fd, ifname)) < 0) goto fail;
  struct sockaddr_in6 sin;
  sin6_of(&sin, local, port);
  *op = "bind(UDPv6)";
  if (bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0) { e = -errno; goto fail; }
  return fd;
fail:
  close(fd);
  return e;
}

int nd_raw6_open(const uint8_t local[16], const char *ifname, const char **op) {
  int e;
  *op = "socket(AF_INET6, SOCK_RAW, IPPROTO_UDP)";
  int fd = socket(AF_INET6, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_UDP);
  if (fd < 0) return -errno;
  bufs6(fd, 4096);
  /* Receives nothing: "return 0" for every packet. */
  struct sock_filter none[] = { BPF_STMT(BPF_RET | BPF_K, 0) };
  struct sock_fprog prog = { 1, none };
  *op = "SO_ATTACH_FILTER";
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) < 0) { e = -errno; goto fail; }
  *op = "IPV6_CHECKSUM";
  if ((e = set_int6(fd, IPPROTO_IPV6, IPV6_CHECKSUM, 6)) < 0) goto fail;
  *op = "IPV6_DONTFRAG";
  if ((e = set_int6(fd, IPPROTO_IPV6, IPV6_DONTFRAG, 1)) < 0) goto fail;
  *op = "SO_BINDTODEVICE";
  if ((e = bind_dev6(fd, ifname)) < 0) goto fail;
  struct sockaddr_in6 sin;
  sin6_of(&sin, local, 0);
  *op = "bind(raw IPv6)";
  if (bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0) { e = -errno; goto fail; }
  return fd;
fail:
  close(fd);
  return e;
}

long nd_raw6_send(int fd, const uint8_t dst[16], int hops, int tclass, const struct iovec *iov, int n) {
  struct sockaddr_in6 sin;
  sin6_of(&sin, dst, 0);
  union {
    char buf[2 * CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } ctl;
  memset(&ctl, 0, sizeof ctl);
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_name = &sin;
  msg.msg_namelen = sizeof sin;
  msg.msg_iov = (struct iovec *)iov;
  msg.msg_iovlen = (size_t)n;
  msg.msg_control = ctl.buf;
  msg.msg_controllen = sizeof ctl.buf;
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = IPPROTO_IPV6;
  c->cmsg_type = IPV6_HOPLIMIT;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &hops, sizeof hops);
  c = CMSG_NXTHDR(&msg, c);
  c->cmsg_level = IPPROTO_IPV6;
  c->cmsg_type = IPV6_TCLASS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &tclass, sizeof tclass);
  ssize_t r;
  do r = sendmsg(fd, &msg, MSG_DONTWAIT); while (r < 0 && errno == EINTR);
  return r;
}
