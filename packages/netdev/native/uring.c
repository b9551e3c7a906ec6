/*
 * Batched writes through io_uring (setTapWriteBatch): the flow cache's replays of one read
 * batch go to their TAPs in one io_uring_enter instead of one writev(2) each.
 *
 * Why: a TAP has no batched write, and a 64-byte frame's write costs more in syscall
 * entry and exit (retpolines, a VM's mitigations) than in tun itself;
 * bench/uring/tapio.c measured a batch of 16 IORING_OP_WRITEs at ~0.75-0.87x the CPU of
 * 16 write(2)s per frame, the receiving namespace's stack included. tun completes the
 * writes inline, in io_uring_enter, in our thread (no io-wq worker), so a write still
 * runs the receiving stack in our context, in the same order.
 *
 * Semantics kept from writev on a non-blocking fd: RWF_NOWAIT, so a write that would
 * block completes with -EAGAIN (counted as a write error) instead of being parked on a
 * poll or punted to a worker, which could reorder it; the SQEs of one flush are issued in
 * submission order. No liburing: the raw syscalls and <linux/io_uring.h>.
 */
#include "netdev.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/fs.h>
#include <linux/io_uring.h>

struct nd_ur {
  int fd;
  unsigned entries;
  unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
  unsigned *cq_head, *cq_tail, *cq_mask;
  struct io_uring_sqe *sqes;
  struct io_uring_cqe *cqes;
  void *sq_map, *sqe_map;
  size_t sq_len, sqe_len;
  unsigned queued; /* prepared since the last flush */
  unsigned files;  /* slots of the registered-file table (0: none, plain fds only) */
};

static int ur_setup(unsigned entries, unsigned flags, struct io_uring_params *p) {
  memset(p, 0, sizeof *p);
  p->flags = flags;
  return (int)syscall(__NR_io_uring_setup, entries, p);
}

nd_ur *nd_ur_new(unsigned entries, int *err) {
  struct io_uring_params p;
  /* One thread submits and always waits for its completions: SINGLE_ISSUER and
   * DEFER_TASKRUN (6.1) spare the kernel the cross-thread work; older kernels get 0. */
  int fd = ur_setup(entries, IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, &p);
  if (fd < 0 && errno == EINVAL) fd = ur_setup(entries, 0, &p);
  if (fd < 0) { *err = errno; return NULL; }
  if (!(p.features & IORING_FEAT_SINGLE_MMAP)) { close(fd); *err = ENOSYS; return NULL; }
  nd_ur *u = calloc(1, sizeof *u);
  if (!u) { close(fd); *err = ENOMEM; return NULL; }
  u->fd = fd;
  u->entries = p.sq_entries;
  u->sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  if (cq_len > u->sq_len) u->sq_len = cq_len;
  u->sq_map = mmap(NULL, u->sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
  u->sqe_len = p.sq_entries * sizeof(struct io_uring_sqe);
  u->sqe_map = u->sq_map == MAP_FAILED ? MAP_FAILED
               : mmap(NULL, u->sqe_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
  if (u->sq_map == MAP_FAILED || u->sqe_map == MAP_FAILED) {
    *err = errno;
    if (u->sq_map != MAP_FAILED) munmap(u->sq_map, u->sq_len);
    close(fd);
    free(u);
    return NULL;
  }
  uint8_t *sq = u->sq_map;
  u->sq_head = (unsigned *)(sq + p.sq_off.head);
  u->sq_tail = (unsigned *)(sq + p.sq_off.tail);
  u->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
  u->sq_array = (unsigned *)(sq + p.sq_off.array);
  u->cq_head = (unsigned *)(sq + p.cq_off.head);
  u->cq_tail = (unsigned *)(sq + p.cq_off.tail);
  u->cq_mask = (unsigned *)(sq + p.cq_off.ring_mask);
  u->cqes = (struct io_uring_cqe *)(sq + p.cq_off.cqes);
  u->sqes = u->sqe_map;
  /* A sparse table of registered files, filled as handles become write targets
   * (nd_ur_set_file): a fixed file spares each write the fd lookup and its reference
   * count. Without it (older kernels) the writes name plain fds. */
  struct io_uring_rsrc_register rr = { .nr = ND_UR_FILES, .flags = IORING_RSRC_REGISTER_SPARSE };
  if (syscall(__NR_io_uring_register, fd, IORING_REGISTER_FILES2, &rr, sizeof rr) == 0) u->files = ND_UR_FILES;
  return u;
}

unsigned nd_ur_files(const nd_ur *u) { return u->files; }

/* Puts fd in slot (fd -1: empties it, dropping the ring's reference to the file). */
int nd_ur_set_file(nd_ur *u, unsigned slot, int fd) {
  if (slot >= u->files) return -EINVAL;
  int32_t v = fd;
  struct io_uring_files_update up = { .offset = slot, .fds = (uint64_t)(uintptr_t)&v };
  int rc;
  do rc = (int)syscall(__NR_io_uring_register, u->fd, IORING_REGISTER_FILES_UPDATE, &up, 1);
  while (rc < 0 && errno == EINTR);
  return rc == 1 ? 0 : (rc < 0 ? -errno : -EIO);
}

void nd_ur_free(nd_ur *u) {
  if (!u) return;
  munmap(u->sqe_map, u->sqe_len);
  munmap(u->sq_map, u->sq_len);
  close(u->fd);
  free(u);
}

unsigned nd_ur_room(const nd_ur *u) { return u->entries - u->queued; }

void nd_ur_write(nd_ur *u, int fd, int slot, const void *buf, size_t len, uint32_t tag) {
  unsigned tail = *u->sq_tail, i = tail & *u->sq_mask;
  struct io_uring_sqe *s = &u->sqes[i];
  memset(s, 0, sizeof *s);
  s->opcode = IORING_OP_WRITE;
  if (slot >= 0) {
    s->fd = slot;
    s->flags = IOSQE_FIXED_FILE;
  } else {
    s->fd = fd;
  }
  s->addr = (uint64_t)(uintptr_t)buf;
  s->len = (uint32_t)len;
  s->off = (uint64_t)-1; /* the file's position: a TAP has none */
  s->rw_flags = RWF_NOWAIT;
  s->user_data = tag;
  u->sq_array[i] = i;
  __atomic_store_n(u->sq_tail, tail + 1, __ATOMIC_RELEASE);
  u->queued++;
}

static void reap(nd_ur *u, int32_t *res, unsigned n, unsigned *got) {
  unsigned head = *u->cq_head, tail = __atomic_load_n(u->cq_tail, __ATOMIC_ACQUIRE);
  for (; head != tail; head++) {
    const struct io_uring_cqe *c = &u->cqes[head & *u->cq_mask];
    if (c->user_data < n) res[c->user_data] = c->res;
    (*got)++;
  }
  __atomic_store_n(u->cq_head, head, __ATOMIC_RELEASE);
}

/*
 * Submits what nd_ur_write prepared (tags 0..n-1) and waits for every completion:
 * res[tag] = bytes written or -errno, or ND_UR_UNSENT for the writes the kernel did not
 * take (io_uring_enter failed: no memory, say), which the caller writes itself, in order
 * after the ones that went. Returns how many io_uring_enter calls it made.
 */
int nd_ur_flush(nd_ur *u, int32_t *res, unsigned n) {
  unsigned want = u->queued, submitted = 0, got = 0;
  int calls = 0, stuck = 0;
  for (unsigned i = 0; i < n; i++) res[i] = ND_UR_UNSENT;
  u->queued = 0;
  while (got < want) {
    unsigned to_submit = want - submitted;
    /* The kernel skips the wait when it takes fewer SQEs than asked, so waiting for
     * want - got never waits for a write that was not submitted. */
    int rc = (int)syscall(__NR_io_uring_enter, u->fd, to_submit, want - got, IORING_ENTER_GETEVENTS, NULL, 0);
    calls++;
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) {
      /* No room or no memory for more requests: send no more, collect what went. */
      want = submitted;
      reap(u, res, n, &got);
      if (++stuck > 3) break; /* the kernel refuses even to wait: give up, it is broken */
      continue;
    }
    submitted += (unsigned)rc;
    if ((unsigned)rc < to_submit) want = submitted;
    reap(u, res, n, &got);
  }
  if (__atomic_load_n(u->sq_head, __ATOMIC_ACQUIRE) != *u->sq_tail) {
    /* SQEs the kernel did not consume: withdraw them, so a later flush does not send
     * them a second time (the caller writes them itself). */
    __atomic_store_n(u->sq_tail, *u->sq_head, __ATOMIC_RELEASE);
  }
  return calls;
}
