/*
 * TAP I/O per frame: write(2)/read(2) one frame at a time against io_uring batches
 * (issue 19's 64-byte frames; bench/uring/run.sh drives it, bench/README.md "Batched TAP
 * I/O through io_uring" has the figures).
 *
 *   tapio write TAP SETUP KIND N ROUNDS MODE...
 *   tapio read  TAP SETUP FILL N ROUNDS MODE...
 *   tapio send  IP N                  (FILL's helper, run in the namespace)
 *
 * The process creates TAP (IFF_VNET_HDR, non-blocking, as the daemon opens its TAPs),
 * then runs SETUP with the TAP's name in $TAP (run.sh moves it into the run's namespace
 * and configures it there). Per round, each MODE in turn writes N minimum-size frames
 * (KIND drop: to a MAC the namespace's stack discards in ip_rcv; udp: to its address, a
 * closed UDP port, as the main bench's flood; the stack runs inside the write) or reads
 * N frames that FILL (a shell command) has queued on the TAP beforehand (the queue is
 * filled while nobody reads, so a read mode drains a backlog as the daemon under a flood
 * does, and the sender's CPU is not ours).
 *
 * Each round starts one MODE later than the previous one (no mode always runs first).
 * MODE: sys (one write(2)/read(2) per frame; reads until EAGAIN), uB (io_uring, B
 * IORING_OP_WRITE/READ per io_uring_enter that submits them and waits for all B),
 * uBf (the same with the TAP as a registered file and SINGLE_ISSUER|DEFER_TASKRUN).
 * Reads use RWF_NOWAIT so an empty queue completes with -EAGAIN (the drain's stop)
 * instead of arming a poll.
 *
 * CPU: CLOCK_PROCESS_CPUTIME_ID (every thread of the process, io_uring's io-wq workers
 * included: they are threads of it); the workers' own share from their schedstat
 * (/proc/self/task/<tid>, comm iou-wrk-*), and `inline`: the share of a batch's
 * completions already posted when io_uring_enter returned from a submit without
 * waiting (in uB modes, one probe batch per round before the timed ones).
 * Output: one TSV row per (round, mode).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/io_uring.h>
#include <net/if.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define VNET 10
#define FRAME 60
#define SLOT 2048
#define MAXB 256

static void die(const char *m) { perror(m); exit(1); }

static uint64_t cpu_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}
static uint64_t wall_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Run time of the io-wq workers (threads named iou-wrk-*), ns, and how many there are. */
static uint64_t wrk_ns(int *count) {
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  uint64_t sum = 0;
  *count = 0;
  if (!d) return 0;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char p[300], comm[64] = "";
    snprintf(p, sizeof p, "/proc/self/task/%s/comm", e->d_name);
    FILE *f = fopen(p, "r");
    if (!f) continue;
    if (!fgets(comm, sizeof comm, f)) comm[0] = 0;
    fclose(f);
    if (strncmp(comm, "iou-wrk", 7)) continue;
    snprintf(p, sizeof p, "/proc/self/task/%s/schedstat", e->d_name);
    unsigned long long run = 0;
    if ((f = fopen(p, "r"))) {
      if (fscanf(f, "%llu", &run) != 1) run = 0;
      fclose(f);
    }
    sum += run;
    (*count)++;
  }
  closedir(d);
  return sum;
}

/* Busy time of the whole machine (every CPU: user, system, irq, softirq), ns: work the
 * kernel moved off our threads (ksoftirqd, another CPU's backlog) shows here. */
static uint64_t machine_busy_ns(void) {
  FILE *f = fopen("/proc/stat", "r");
  unsigned long long u = 0, ni = 0, sy = 0, id = 0, io = 0, irq = 0, sirq = 0;
  if (!f) return 0;
  if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu", &u, &ni, &sy, &id, &io, &irq, &sirq) != 7) u = ni = sy = irq = sirq = 0;
  fclose(f);
  return (u + ni + sy + irq + sirq) * (1000000000ull / (unsigned long long)sysconf(_SC_CLK_TCK));
}

/* ---------- a minimal io_uring (raw syscalls, no liburing) ---------- */

struct ring {
  int fd;
  unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
  unsigned *cq_head, *cq_tail, *cq_mask;
  struct io_uring_sqe *sqes;
  struct io_uring_cqe *cqes;
  bool fixed;
};

static int ring_init(struct ring *r, unsigned entries, bool fixed, int tapfd) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  if (fixed) p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  r->fd = (int)syscall(__NR_io_uring_setup, entries, &p);
  if (r->fd < 0) return -errno;
  size_t sqsz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  size_t cqsz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  if (cqsz > sqsz) sqsz = cqsz;
  uint8_t *sq = mmap(NULL, sqsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
  if (sq == MAP_FAILED) return -errno;
  uint8_t *cq = sq; /* IORING_FEAT_SINGLE_MMAP: every kernel this runs on */
  r->sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                 r->fd, IORING_OFF_SQES);
  if (r->sqes == MAP_FAILED) return -errno;
  r->sq_head = (unsigned *)(sq + p.sq_off.head);
  r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
  r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
  r->sq_array = (unsigned *)(sq + p.sq_off.array);
  r->cq_head = (unsigned *)(cq + p.cq_off.head);
  r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
  r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
  r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
  r->fixed = fixed;
  if (fixed && syscall(__NR_io_uring_register, r->fd, IORING_REGISTER_FILES, &tapfd, 1) < 0) return -errno;
  return 0;
}

static void ring_free(struct ring *r) { close(r->fd); }

static void ring_prep(struct ring *r, int op, int tapfd, void *buf, unsigned len, uint64_t data, int rwflags) {
  unsigned tail = *r->sq_tail, i = tail & *r->sq_mask;
  struct io_uring_sqe *s = &r->sqes[i];
  memset(s, 0, sizeof *s);
  s->opcode = (uint8_t)op;
  s->fd = r->fixed ? 0 : tapfd;
  if (r->fixed) s->flags = IOSQE_FIXED_FILE;
  s->addr = (uint64_t)(uintptr_t)buf;
  s->len = len;
  s->off = (uint64_t)-1; /* the file's position: a TAP has none */
  s->rw_flags = rwflags;
  s->user_data = data;
  r->sq_array[i] = i;
  __atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
}

static int ring_enter(struct ring *r, unsigned submit, unsigned wait) {
  int rc;
  do rc = (int)syscall(__NR_io_uring_enter, r->fd, submit, wait, wait ? IORING_ENTER_GETEVENTS : 0, NULL, 0);
  while (rc < 0 && errno == EINTR);
  return rc;
}

static unsigned ring_ready(struct ring *r) {
  return __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE) - *r->cq_head;
}

/* Reap every posted completion; res of each into res[user_data]. */
static unsigned ring_reap(struct ring *r, int *res) {
  unsigned head = *r->cq_head, tail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE), n = 0;
  for (; head != tail; head++, n++) {
    struct io_uring_cqe *c = &r->cqes[head & *r->cq_mask];
    res[c->user_data] = c->res;
  }
  __atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
  return n;
}

/* ---------- frames ---------- */

static uint16_t csum(const uint8_t *p, size_t n) {
  uint32_t s = 0;
  for (size_t i = 0; i + 1 < n; i += 2) s += (uint32_t)(p[i] << 8 | p[i + 1]);
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return (uint16_t)~s;
}

/* A 60-byte frame after a zero virtio_net_hdr: 02:..:01 10.77.0.1 -> 02:..:02 10.77.0.2 UDP 9 -> 9999. */
static void make_frame(uint8_t *b, bool drop) {
  memset(b, 0, VNET + FRAME);
  uint8_t *e = b + VNET;
  static const uint8_t dst[6] = { 2, 0, 0, 0x77, 0, 2 }, other[6] = { 2, 0, 0, 0x77, 0, 0x99 },
                       src[6] = { 2, 0, 0, 0x77, 0, 1 };
  memcpy(e, drop ? other : dst, 6);
  memcpy(e + 6, src, 6);
  e[12] = 0x08;
  uint8_t *ip = e + 14;
  ip[0] = 0x45;
  ip[2] = 0;
  ip[3] = 46; /* 20 + 8 + 18 */
  ip[8] = 64;
  ip[9] = 17;
  uint8_t sa[4] = { 10, 77, 0, 1 }, da[4] = { 10, 77, 0, 2 };
  memcpy(ip + 12, sa, 4);
  memcpy(ip + 16, da, 4);
  uint16_t c = csum(ip, 20);
  ip[10] = (uint8_t)(c >> 8);
  ip[11] = (uint8_t)c;
  uint8_t *u = ip + 20;
  u[1] = 9;
  u[2] = 9999 >> 8;
  u[3] = 9999 & 0xff;
  u[5] = 26;
}

static int tap_open(const char *name) {
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) die("open /dev/net/tun");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) die("TUNSETIFF");
  int sz = VNET;
  if (ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0) die("TUNSETVNETHDRSZ");
  if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN)) < 0)
    die("TUNSETOFFLOAD");
  return fd;
}

static uint8_t *bufs; /* MAXB slots */
static long drained;

/* What the namespace queued on the TAP (ICMP errors, ARP, IPv6 noise): read and forget. */
static void drain(int fd) {
  static uint8_t junk[SLOT]; /* not bufs: its slots hold the frames the next mode writes */
  while (read(fd, junk, sizeof junk) > 0) drained++;
}

static int parse_mode(const char *m, unsigned *batch, bool *fixed) {
  *batch = 0;
  *fixed = false;
  if (!strcmp(m, "sys")) return 0;
  if (m[0] != 'u') return -1;
  char *end;
  unsigned long b = strtoul(m + 1, &end, 10);
  if (b == 0 || b > MAXB) return -1;
  if (*end == 'f') {
    *fixed = true;
    end++;
  }
  if (*end) return -1;
  *batch = (unsigned)b;
  return 0;
}

struct result {
  long frames, errors;
  uint64_t cpu, wall, wrk, machine;
  int workers;
  double inl;
};

/* Writes n frames (all slots hold the same frame). */
static void run_write(int fd, const char *mode, long n, struct result *out) {
  unsigned batch;
  bool fixed;
  struct ring r;
  int res[MAXB];
  if (parse_mode(mode, &batch, &fixed)) { fprintf(stderr, "bad mode %s\n", mode); exit(2); }
  memset(out, 0, sizeof *out);
  out->inl = -1;
  if (batch) {
    int e = ring_init(&r, MAXB, fixed, fd);
    if (e) { errno = -e; die("io_uring_setup"); }
    /* Probe: submit one batch without waiting; what is posted on return completed inline. */
    for (unsigned i = 0; i < batch; i++) ring_prep(&r, IORING_OP_WRITE, fd, bufs + (size_t)i * SLOT, VNET + FRAME, i, 0);
    ring_enter(&r, batch, 0);
    unsigned now = ring_ready(&r);
    out->inl = (double)now / batch;
    unsigned got = ring_reap(&r, res);
    while (got < batch) { ring_enter(&r, 0, 1); got += ring_reap(&r, res); }
  }
  int w0;
  uint64_t k0 = wrk_ns(&w0), m0 = machine_busy_ns(), c0 = cpu_ns(), t0 = wall_ns();
  long done = 0;
  if (!batch) {
    for (; done < n; done++)
      if (write(fd, bufs, VNET + FRAME) < 0) out->errors++;
  } else {
    while (done < n) {
      unsigned b = n - done < batch ? (unsigned)(n - done) : batch;
      for (unsigned i = 0; i < b; i++) ring_prep(&r, IORING_OP_WRITE, fd, bufs + (size_t)i * SLOT, VNET + FRAME, i, 0);
      ring_enter(&r, b, b);
      unsigned got = ring_reap(&r, res);
      while (got < b) { ring_enter(&r, 0, b - got); got += ring_reap(&r, res); }
      for (unsigned i = 0; i < b; i++) if (res[i] < 0) out->errors++;
      done += b;
    }
  }
  out->cpu = cpu_ns() - c0;
  out->wall = wall_ns() - t0;
  out->machine = machine_busy_ns() - m0;
  out->wrk = wrk_ns(&out->workers) - k0;
  out->frames = done;
  if (batch) ring_free(&r);
  drain(fd);
}

/* Reads until the queue is empty (or n frames). */
static void run_read(int fd, const char *mode, long n, struct result *out) {
  unsigned batch;
  bool fixed;
  struct ring r;
  int res[MAXB];
  if (parse_mode(mode, &batch, &fixed)) { fprintf(stderr, "bad mode %s\n", mode); exit(2); }
  memset(out, 0, sizeof *out);
  out->inl = -1;
  if (batch) {
    int e = ring_init(&r, MAXB, fixed, fd);
    if (e) { errno = -e; die("io_uring_setup"); }
  }
  int w0;
  uint64_t k0 = wrk_ns(&w0), m0 = machine_busy_ns(), c0 = cpu_ns(), t0 = wall_ns();
  long done = 0;
  if (!batch) {
    while (done < n) {
      ssize_t k = read(fd, bufs + (size_t)(done % MAXB) * SLOT, SLOT);
      if (k < 0) break;
      done++;
    }
  } else {
    unsigned posted_inline = 0, submitted = 0;
    for (;;) {
      for (unsigned i = 0; i < batch; i++) ring_prep(&r, IORING_OP_READ, fd, bufs + (size_t)i * SLOT, SLOT, i, RWF_NOWAIT);
      ring_enter(&r, batch, 0);
      posted_inline += ring_ready(&r);
      submitted += batch;
      unsigned got = ring_reap(&r, res);
      while (got < batch) { ring_enter(&r, 0, batch - got); got += ring_reap(&r, res); }
      bool empty = false;
      for (unsigned i = 0; i < batch; i++) {
        if (res[i] > 0) done++;
        else if (res[i] == -EAGAIN) empty = true;
        else out->errors++;
      }
      if (empty || done >= n) break;
    }
    out->inl = submitted ? (double)posted_inline / submitted : -1;
  }
  out->cpu = cpu_ns() - c0;
  out->wall = wall_ns() - t0;
  out->machine = machine_busy_ns() - m0;
  out->wrk = wrk_ns(&out->workers) - k0;
  out->frames = done;
  if (batch) ring_free(&r);
  drain(fd);
}

/* The namespace's side of a read round: n minimum-size UDP datagrams to ip, flat out. */
static int send_main(const char *ip, long n) {
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  if (s < 0) die("socket");
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(9999) };
  if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) { fprintf(stderr, "bad ip %s\n", ip); return 2; }
  char pl[18] = { 0 };
  struct mmsghdr m[64];
  struct iovec v = { pl, sizeof pl };
  for (int i = 0; i < 64; i++) m[i] = (struct mmsghdr){ .msg_hdr = { .msg_name = &a, .msg_namelen = sizeof a, .msg_iov = &v, .msg_iovlen = 1 } };
  long sent = 0;
  while (sent < n) {
    int b = n - sent < 64 ? (int)(n - sent) : 64;
    int k = sendmmsg(s, m, (unsigned)b, 0);
    if (k < 0) die("sendmmsg");
    sent += k;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 4 && !strcmp(argv[1], "send")) return send_main(argv[2], atol(argv[3]));
  if (argc < 8 || (strcmp(argv[1], "write") && strcmp(argv[1], "read"))) {
    fprintf(stderr, "usage: tapio write TAP SETUP drop|udp N ROUNDS MODE...\n"
                    "       tapio read TAP SETUP FILL N ROUNDS MODE...\n       tapio send IP N\n");
    return 2;
  }
  bool wr = !strcmp(argv[1], "write");
  const char *arg = argv[4];
  long n = atol(argv[5]);
  int rounds = atoi(argv[6]);
  if (posix_memalign((void **)&bufs, 4096, (size_t)MAXB * SLOT)) die("alloc");
  int fd = tap_open(argv[2]);
  if (setenv("TAP", argv[2], 1) || system(argv[3]) != 0) { fprintf(stderr, "setup failed\n"); return 1; }
  if (wr) for (int i = 0; i < MAXB; i++) make_frame(bufs + (size_t)i * SLOT, !strcmp(arg, "drop"));
  usleep(200000);
  drain(fd);
  printf("op\tkind\tround\tmode\tframes\terrors\tcpu_ns_per_frame\twall_ns_per_frame\tworkers\tworker_ns_per_frame\tinline\tmachine_ns_per_frame\n");
  for (int rd = 1; rd <= rounds; rd++) {
    int nm = argc - 7;
    for (int j = 0; j < nm; j++) {
      /* Each round starts one mode later, so no mode always runs first (cold) or last. */
      int m = 7 + (j + rd - 1) % nm;
      struct result res;
      if (wr) {
        run_write(fd, argv[m], n, &res);
      } else {
        if (system(arg) != 0) { fprintf(stderr, "fill failed\n"); return 1; }
        run_read(fd, argv[m], n, &res);
      }
      double f = res.frames ? (double)res.frames : 1;
      printf("%s\t%s\t%d\t%s\t%ld\t%ld\t%.0f\t%.0f\t%d\t%.0f\t%.2f\t%.0f\n", argv[1], wr ? arg : "udp", rd, argv[m], res.frames,
             res.errors, res.cpu / f, res.wall / f, res.workers, res.wrk / f, res.inl, res.machine / f);
      fflush(stdout);
      /* A debugging aid: a command after each mode (counters of the namespace, say). */
      if (getenv("TAPIO_AFTER") && system(getenv("TAPIO_AFTER")) != 0) fprintf(stderr, "TAPIO_AFTER failed\n");
    }
  }
  fprintf(stderr, "tapio: %ld stray frames drained\n", drained);
  return 0;
}
