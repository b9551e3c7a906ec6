/*
 * N-API glue: per-environment state, the handle table, the shared receive ring,
 * and the poll loop that turns "fd readable" into one JS call per batch.
 *
 * Why it is shaped this way:
 * - Handles are small integers indexing a table, so the per-frame JS -> C calls
 *   (send/send2) pass plain numbers and do no object unwrapping. Ids are handed
 *   out round-robin, so a stale id from a closed handle is very unlikely to name
 *   a new device by accident and usually fails loudly instead.
 * - State is per napi_env (instance data), not global: a worker thread loading
 *   the addon gets its own table and ring, and teardown closes exactly what that
 *   environment opened (async cleanup hook, because uv handles close async).
 * - One ring per environment: the JS callback consumes a batch synchronously
 *   before the next read, so one arena serves every handle and idle ports cost no
 *   receive memory.
 * - libuv polls level-triggered: we drain until EAGAIN, the ring is full or the
 *   handle's fair share of the round is spent (fair.c), and simply get called again
 *   next loop turn for whatever is left. The handles a
 *   batch wrote to are read right after it (follow-up reads, on_poll), because a
 *   write runs the receiving stack and its reply is usually queued already; the
 *   batch's callback reads them itself (followUp) so they reach JS in the same entry.
 * - JS is called with napi_call_function in a handle scope, not napi_make_callback:
 *   no async context (async_hooks) and no tick/microtask checkpoint per batch. Ticks
 *   and microtasks a batch queues run at the end of the loop turn's poll phase, when
 *   Node's check phase closes its own callback scope (before setImmediate callbacks).
 *   On a wakeup from idle, make_callback's extra work cost 4-18 us per ping (cold
 *   caches).
 *   A throwing callback is routed to napi_fatal_exception so it surfaces as
 *   'uncaughtException' instead of leaving an exception pending that makes every
 *   later N-API call fail.
 * - The batch's read time is left in the ring (ring().time), so JS gets it without a
 *   call: performance.now() is a native call and an allocation per batch.
 * No allocation happens on the read or write path.
 */
#include "netdev.h"
#include "flowcache.h"

#include <errno.h>
#include <sched.h>
#include <sys/prctl.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <net/if.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <node_api.h>
#include <uv.h>

#include "haltpoll.h"

enum { KIND_TAP = 1, KIND_PACKET = 2, KIND_UDP = 3, KIND_RAW = 4, KIND_UDP6 = 5 };

typedef struct nd_state nd_state;

typedef struct nd_handle {
  uv_poll_t poll; /* first, so the uv callbacks can cast back */
  nd_state *st;
  int id;
  int fd;
  int kind;
  bool vnet;        /* every read and write carries a virtio_net_hdr (PACKET_VNET_HDR, IFF_VNET_HDR) */
  bool keep_gso;    /* packet socket: deliver GSO / checksum-partial frames whole, with their header */
  bool poll_inited; /* uv_poll_init done: must be uv_close()d, freed in its callback */
  bool polling;
  uint32_t gen;     /* bumped by start/stop/close, so on_poll notices JS changing its mind */
  int deferred;     /* errno to report from the deferred-error timer (dead packet socket) */
  nd_fair fair;     /* its share of the read loop (fair.c) */
  bool fc_in;       /* the flow cache has had entries from this handle: probe its batches */
  uint8_t fc_mode;  /* how its frames are keyed (ND_FC_KEY_*): as its latest install said */
  double fair_full; /* services that left frames waiting (the share spent, or the ring full) */
  bool sparse;      /* sparse-first service (setSparse): in st->sparse_ep, served ahead of backlogged handles */
  uint32_t early_turn; /* the loop turn (st->turn) in which sparse_first served it; 0: never */
  nd_gro *gro;      /* TAP: the run of TCP segments held for coalescing (tap_gro.c), made on first use */
  bool gro_listed;  /* in nd_state.gro_held */
  bool udp_gro;     /* UDP: UDP_GRO on, read by udp_gro.c (setUdpGro) */
  bool ur_file;     /* registered in st->ur's file table at slot id (uring.c): emptied on close */
  napi_ref cb;
} nd_handle;

struct nd_state {
  napi_env env;
  uv_loop_t *loop;
  nd_handle **table;
  int next_id;
  /* The ring. */
  napi_ref ring_ref;
  uint8_t *arena;
  size_t arena_start; /* first 64-byte-aligned offset */
  int32_t *offs, *lens;
  double *time; /* ring().time[0]: when the current batch was read (CLOCK_MONOTONIC ms) */
  nd_gso gso;
  /* The transmit scratch area (`segment`), and its own segmentation state. */
  napi_ref tx_ref;
  uint8_t *tx_arena;
  int32_t *tx_offs, *tx_lens;
  nd_gso tx_gso;
  nd_vxtx *vxtx; /* sendVxlan's scratch (vxlan_tx.c), made on first use */
  nd_fc *fc;     /* the flow cache's table (flowcache.c), made by flowCacheGenerations() */
  nd_ur *ur;     /* setTapWriteBatch(true): the replays' writes through io_uring (uring.c); NULL: writev */
  napi_ref fc_gens_ref;
  nd_stats stats;
  /* Follow-up reads (see on_poll): the handles written during a batch's callback. */
  nd_handle *cur;   /* the handle whose batch callback is running, NULL outside one */
  int wrote[ND_FOLLOW_MAX];
  int nwrote;       /* -1: more than ND_FOLLOW_MAX handles written (a flood): no follow-ups */
  /* tap_gro.c: coalescing toward TAPs during a batch from the underlay (setTapGro). */
  bool gro_on;
  nd_handle *gro_held[ND_GRO_HELD]; /* TAPs holding a run, written when the batch's callback returns */
  int ngro;
  int fu_pos;       /* wrote[fu_pos..nwrote) not yet followed up */
  bool fu_ready;    /* the primary's last batch is in JS: followUp() may serve the rest */
  int fu_count;     /* a deferred follow-up batch's frame count (service with defer) */
  uv_timer_t deferred_timer;
  bool timer_inited;
  /* Sparse-first service (sparse_first): the sparse handles' own epoll set, and the
   * loop-turn counter a prepare handle bumps (one turn = one round of the read loop). */
  int sparse_ep;      /* -1 until the first setSparse(h, true) */
  uint32_t turn;
  uv_prepare_t turn_prep;
  bool prep_inited;
  /* Poll before sleep (hp_before_sleep): the adaptive window, and the sleep being
   * timed (hp_waiting: the loop went to sleep at hp_block_start, not yet woken). */
  nd_hp hp;
  uint64_t hp_block_start;
  bool hp_waiting;
  uv_check_t hp_check;
  bool check_inited;
  uv_idle_t hp_idle;  /* started after a poll served a batch to JS: the loop must not sleep before its check phase */
  bool hp_serve;      /* serve a port the poll found from inside the poll (hp_before_sleep) */
  int psi_fd;         /* /proc/pressure/cpu, opened with the first setting that polls; -1: none (no PSI) */
  uint64_t js_calls;  /* calls into JS (call_js): a served batch that reached JS */
  /* Giving up the CPU after busy turns (turn_yield; setTurnYield: off until set, the daemon's default 500 us). */
  uint64_t yield_ns;      /* at most one per this interval; 0: off */
  int yield_mode;         /* ND_YIELD_*: VSWITCH_TURN_YIELD, read at load; contended by default */
  uint64_t yield_last;    /* when the last one ended */
  uint64_t yield_tx;      /* stats.tx_frames at the last turn (VSWITCH_TURN_YIELD_AFTER=any) */
  bool yield_any;         /* VSWITCH_TURN_YIELD_AFTER=any, read at load: after any turn that wrote, not only a light write */
  uint64_t light_writes;  /* services that wrote frames and drained their handle (service) */
  uint64_t yield_light;   /* light_writes at the last yield */
  int yield_loadavg_fd;   /* VSWITCH_TURN_YIELD=contended: /proc/loadavg, read for the runnable count; -1: not used */
  long yield_cpus;        /* ... the online CPUs it is compared with */
  /* Handles by fd (fd_ids[fd] = id + 1), for the poll's events, which carry the fd (libuv's epoll data). */
  int32_t *fd_ids;
  int nfd_ids;
  /* Teardown. */
  napi_async_cleanup_hook_handle cleanup;
  int closing; /* uv handles still closing during teardown */
};

/* ---------- errors ---------- */

static const char *errno_code(int e) {
  const char *n = strerrorname_np(e);
  return n ? n : "EUNKNOWN";
}

/* Throw Error("<op> <what>: <strerror>") with code = errno name, errno = -e, syscall = op. */
static void throw_errno(napi_env env, const char *op, const char *what, int e) {
  char msg[256];
  napi_value m, c, err, num, sys;
  snprintf(msg, sizeof msg, "%s%s%s: %s", op, what && *what ? " " : "", what ? what : "", strerror(e));
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
  napi_create_string_utf8(env, errno_code(e), NAPI_AUTO_LENGTH, &c);
  napi_create_error(env, c, m, &err);
  napi_create_int32(env, -e, &num);
  napi_set_named_property(env, err, "errno", num);
  napi_create_string_utf8(env, op, NAPI_AUTO_LENGTH, &sys);
  napi_set_named_property(env, err, "syscall", sys);
  napi_throw(env, err);
}

#define CHECK(call)                                                         \
  do {                                                                      \
    if ((call) != napi_ok) {                                                \
      bool pending_ = false;                                                \
      napi_is_exception_pending(env, &pending_);                            \
      if (!pending_) napi_throw_error(env, NULL, "netdev: " #call " failed"); \
      return NULL;                                                          \
    }                                                                       \
  } while (0)

static nd_state *get_state(napi_env env) {
  void *p = NULL;
  napi_get_instance_data(env, &p);
  return p;
}

/* Integer argument in [lo, hi]; throws TypeError/RangeError (code ERR_*) on misuse. */
static bool arg_int(napi_env env, napi_value v, const char *name, double lo, double hi, int64_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) {
    char m[96];
    snprintf(m, sizeof m, "netdev: %s must be a number", name);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", m);
    return false;
  }
  if (!(d >= lo && d <= hi) || d != (double)(int64_t)d) {
    char m[128];
    snprintf(m, sizeof m, "netdev: %s must be an integer in [%.0f, %.0f], got %g", name, lo, hi, d);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", m);
    return false;
  }
  *out = (int64_t)d;
  return true;
}

static bool arg_string(napi_env env, napi_value v, const char *name, char *buf, size_t cap) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
    char m[96];
    snprintf(m, sizeof m, "netdev: %s must be a string", name);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", m);
    return false;
  }
  if (len >= cap) {
    char m[128];
    snprintf(m, sizeof m, "netdev: %s too long (%zu bytes, max %zu)", name, len, cap - 1);
    napi_value c, msg, err;
    napi_create_string_utf8(env, "EINVAL", NAPI_AUTO_LENGTH, &c);
    napi_create_string_utf8(env, m, NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, c, msg, &err);
    napi_throw(env, err);
    return false;
  }
  napi_get_value_string_utf8(env, v, buf, cap, &len);
  return true;
}

/* Byte view of a Uint8Array/Buffer (byteOffset already applied by N-API). */
static bool arg_bytes(napi_env env, napi_value v, const char *name, uint8_t **data, size_t *len) {
  bool is;
  napi_typedarray_type t;
  void *p;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, v, &t, len, &p, NULL, NULL) != napi_ok ||
      (t != napi_uint8_array && t != napi_uint8_clamped_array && t != napi_int8_array)) {
    char m[96];
    snprintf(m, sizeof m, "netdev: %s must be a Uint8Array or Buffer", name);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", m);
    return false;
  }
  *data = p;
  return true;
}

static nd_handle *arg_handle(napi_env env, nd_state *st, napi_value v) {
  int64_t id;
  if (!arg_int(env, v, "handle", -2147483648.0, 2147483647.0, &id)) return NULL;
  if (id >= 0 && id < ND_MAX_HANDLES && st->table[id]) return st->table[id];
  char m[96];
  snprintf(m, sizeof m, "netdev: handle %lld is not open", (long long)id);
  napi_throw_error(env, "EBADF", m);
  return NULL;
}

/* CLOCK_MONOTONIC in milliseconds (the clock of uv_hrtime, performance.now()). */
/* A call's arguments (up to *argc) and the open handle its first names; throws and returns NULL otherwise. */
static nd_handle *handle_call(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  CHECK(napi_get_cb_info(env, info, argc, argv, NULL, NULL));
  return arg_handle(env, get_state(env), *argc ? argv[0] : NULL);
}

/* handle_call for a call that takes the handle alone. */
static nd_handle *handle_of(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  return handle_call(env, info, &argc, argv);
}

static double monotonic_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---------- ring ---------- */

/*
 * {arena, offs, lens}: a Buffer and two Int32Arrays of `frames` entries, frozen and
 * held by a strong reference for the life of the environment, since the native side
 * keeps raw pointers into them (stored through the *_p arguments once it exists).
 * Used for the receive ring and the transmit scratch; made on first use, the same
 * object after. With time_p, also `time`: a Float64Array of one element (the
 * receive ring's batch time).
 */
static napi_value make_frame_area(napi_env env, size_t bytes, size_t frames, napi_ref *ref,
                                  uint8_t **arena_p, int32_t **offs_p, int32_t **lens_p, double **time_p) {
  napi_value obj, arena, ab_o, ab_l, offs, lens, ab_t, time;
  void *a, *po, *pl, *pt = NULL;
  if (*ref) {
    CHECK(napi_get_reference_value(env, *ref, &obj));
    return obj;
  }
  CHECK(napi_create_buffer(env, bytes, &a, &arena));
  CHECK(napi_create_arraybuffer(env, frames * sizeof(int32_t), &po, &ab_o));
  CHECK(napi_create_arraybuffer(env, frames * sizeof(int32_t), &pl, &ab_l));
  CHECK(napi_create_typedarray(env, napi_int32_array, frames, ab_o, 0, &offs));
  CHECK(napi_create_typedarray(env, napi_int32_array, frames, ab_l, 0, &lens));
  CHECK(napi_create_object(env, &obj));
  CHECK(napi_set_named_property(env, obj, "arena", arena));
  CHECK(napi_set_named_property(env, obj, "offs", offs));
  CHECK(napi_set_named_property(env, obj, "lens", lens));
  if (time_p) {
    CHECK(napi_create_arraybuffer(env, sizeof(double), &pt, &ab_t));
    CHECK(napi_create_typedarray(env, napi_float64_array, 1, ab_t, 0, &time));
    CHECK(napi_set_named_property(env, obj, "time", time));
  }
  CHECK(napi_object_freeze(env, obj));
  CHECK(napi_create_reference(env, obj, 1, ref));
  *arena_p = a;
  *offs_p = po;
  *lens_p = pl;
  if (time_p) *time_p = pt;
  return obj;
}

static napi_value make_ring(napi_env env, nd_state *st) {
  napi_value obj = make_frame_area(env, ND_RING_BYTES, ND_RING_MAX_FRAMES, &st->ring_ref, &st->arena, &st->offs,
                                   &st->lens, &st->time);
  if (obj) st->arena_start = (ND_ALIGN - ((uintptr_t)st->arena % ND_ALIGN)) % ND_ALIGN;
  return obj;
}

static napi_value js_ring(napi_env env, napi_callback_info info) {
  return make_ring(env, get_state(env));
}

static napi_value js_monotonic_ms(napi_env env, napi_callback_info info) {
  napi_value v;
  CHECK(napi_create_double(env, monotonic_ms(), &v));
  return v;
}

static void ring_out(nd_state *st, nd_out *o) {
  o->base = st->arena;
  o->cap = ND_RING_BYTES;
  o->pos = st->arena_start;
  o->offs = st->offs;
  o->lens = st->lens;
  o->n = 0;
  o->max = ND_RING_MAX_FRAMES;
  o->budget = INT64_MAX;
  o->frames = false;
  o->more = false;
}

/* ---------- handle table ---------- */

static nd_handle *handle_new(napi_env env, nd_state *st, int fd, int kind) {
  for (int i = 0; i < ND_MAX_HANDLES; i++) {
    int id = (st->next_id + i) % ND_MAX_HANDLES;
    if (st->table[id]) continue;
    nd_handle *h = calloc(1, sizeof *h);
    if (!h) break;
    h->st = st;
    h->id = id;
    h->fd = fd;
    h->kind = kind;
    h->fair.quantum = ND_FAIR_QUANTUM_DEFAULT;
    if (fd >= 0 && fd >= st->nfd_ids) {
      int n = fd < 1024 ? 1024 : 2 * fd;
      int32_t *m = realloc(st->fd_ids, (size_t)n * sizeof *m);
      if (!m) { free(h); break; }
      memset(m + st->nfd_ids, 0, (size_t)(n - st->nfd_ids) * sizeof *m);
      st->fd_ids = m;
      st->nfd_ids = n;
    }
    if (fd >= 0) st->fd_ids[fd] = id + 1;
    st->table[id] = h;
    st->next_id = (id + 1) % ND_MAX_HANDLES;
    return h;
  }
  throw_errno(env, "netdev: handle table", NULL, EMFILE);
  return NULL;
}

static void on_closed(uv_handle_t *p) { free(p); }

static void gro_forget(nd_state *st, nd_handle *h);

/* Stop polling, close the fd, drop the JS refs, and retire the id. */
static void handle_close(napi_env env, nd_handle *h) {
  nd_state *st = h->st;
  st->table[h->id] = NULL;
  h->gen++;
  h->deferred = 0;
  if (h->polling) uv_poll_stop(&h->poll);
  h->polling = false;
  if (st->vxtx && h->kind == KIND_RAW) nd_vxq_close_fd(st->vxtx, h->fd, &st->stats);
  if (h->gro) gro_forget(st, h);
  if (st->fc) nd_fc_forget_handle(st->fc, h->id); /* a recycled id must never hit */
  if (h->sparse) epoll_ctl(st->sparse_ep, EPOLL_CTL_DEL, h->fd, NULL);
  h->sparse = false;
  /* The ring's registered file holds the TAP open: let it go with the fd. */
  if (h->ur_file && st->ur) nd_ur_set_file(st->ur, (unsigned)h->id, -1);
  h->ur_file = false;
  if (h->fd >= 0 && h->fd < st->nfd_ids && st->fd_ids[h->fd] == h->id + 1) st->fd_ids[h->fd] = 0;
  /* uv_poll_stop already removed the fd from epoll, so closing it now is safe. */
  close(h->fd);
  h->fd = -1;
  if (h->cb) napi_delete_reference(env, h->cb);
  h->cb = NULL;
  if (h->poll_inited) uv_close((uv_handle_t *)&h->poll, on_closed);
  else free(h);
}

/* ---------- calling JS ---------- */

/* ---------- coalescing toward TAPs (tap_gro.c) ---------- */

/* Write every held run: the batch that sent its frames is over. */
static void gro_flush_all(nd_state *st) {
  for (int i = 0; i < st->ngro; i++) {
    nd_handle *h = st->gro_held[i];
    nd_gro_flush(h->gro, h->fd, &st->stats);
    h->gro_listed = false;
  }
  st->ngro = 0;
}

/* h closes: its run is written now (the fd is still open) and its buffer freed. */
static void gro_forget(nd_state *st, nd_handle *h) {
  nd_gro_flush(h->gro, h->fd, &st->stats);
  for (int i = 0; i < st->ngro; i++)
    if (st->gro_held[i] == h) { st->gro_held[i] = st->gro_held[--st->ngro]; break; }
  h->gro_listed = false;
  nd_gro_free(h->gro);
  h->gro = NULL;
}

/*
 * A complete frame (iov: the zero header, then its pieces) to h. During a batch from
 * the underlay, a TAP with the header holds it for coalescing if it can: true. Any
 * other write to a TAP with a held run writes the run first (order).
 */
static bool gro_take(nd_state *st, nd_handle *h, const struct iovec *iov, int n, bool complete) {
  if (h->kind != KIND_TAP) return false;
  bool batch = complete && st->gro_on && h->vnet && n > 1 && st->cur &&
               (st->cur->kind == KIND_UDP || st->cur->kind == KIND_UDP6);
  if (!batch) {
    if (h->gro) nd_gro_flush(h->gro, h->fd, &st->stats);
    return false;
  }
  if (!h->gro_listed && st->ngro == ND_GRO_HELD) return false;
  if (!h->gro && !(h->gro = nd_gro_new())) return false;
  if (!nd_gro_offer(h->gro, h->fd, iov + 1, n - 1, &st->stats)) return false;
  if (!h->gro_listed) {
    st->gro_held[st->ngro++] = h;
    h->gro_listed = true;
  }
  return true;
}

static void call_js(nd_handle *h, int32_t arg) {
  napi_env env = h->st->env;
  napi_handle_scope scope;
  napi_value cb, recv, argv, result;
  if (!h->cb) return;
  h->st->js_calls++;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_status s = napi_generic_failure;
  if (napi_get_reference_value(env, h->cb, &cb) == napi_ok && cb &&
      napi_get_undefined(env, &recv) == napi_ok && napi_create_int32(env, arg, &argv) == napi_ok) {
    s = napi_call_function(env, recv, cb, 1, &argv, &result);
  }
  bool pending = false;
  if (s != napi_ok) napi_is_exception_pending(env, &pending);
  if (pending) {
    napi_value exc;
    napi_get_and_clear_last_exception(env, &exc);
    napi_fatal_exception(env, exc);
  }
  napi_close_handle_scope(env, scope);
}

/* Polling stopped for good (until JS calls start again): tell JS why. */
static void fail_handle(nd_handle *h, int err) {
  if (h->polling) uv_poll_stop(&h->poll);
  h->polling = false;
  h->gen++;
  call_js(h, -err);
}

/* ---------- polling ---------- */

static void on_poll(uv_poll_t *p, int status, int events);
static int fc_replay(nd_state *st, nd_handle *h, int n, double now);

/*
 * Read what h has, up to its fair share of this round (fair.c), until EAGAIN or the
 * ring is full, and hand it to JS. `primary`: h's own poll (a new round for it), not
 * a follow-up read. `defer` (followUp(), single-pass kinds only): leave the batch in
 * the ring and its count in st->fu_count for the JS caller instead of calling JS.
 */
static void service(nd_handle *h, int status, bool primary, bool defer) {
  nd_state *st = h->st;
  uint32_t gen = h->gen;
  int fatal = 0;
  bool first = true;
  bool more = false;
  uint64_t tx0 = st->stats.tx_frames;
  int64_t budget = nd_fair_begin(&h->fair, primary);

  /* POLLERR: libuv has already stopped the watcher. The reads below surface
   * the real error (EBADFD for a deleted TAP, ENETDOWN on a packet socket). */
  if (status < 0) {
    h->polling = false;
    if (budget <= 0) budget = 1;
  } else if (budget <= 0) {
    /* Not served now: a follow-up of a backlogged handle, or one still in debt. */
    if (primary) {
      nd_fair_end(&h->fair, budget, true);
      h->fair_full++;
    }
    return;
  }

  for (;;) {
    nd_out o;
    ring_out(st, &o);
    o.budget = budget;
    o.frames = h->fair.frames;
    if (h->kind == KIND_TAP) {
      nd_tap_drain(h->fd, h->vnet, &o, &st->stats, &fatal);
    } else if (h->kind == KIND_UDP || h->kind == KIND_RAW || h->kind == KIND_UDP6) {
      if (first) (h->udp_gro ? nd_udp_gro_drain : nd_udp_drain)(h->fd, h->kind == KIND_UDP6, &o, &st->stats, &fatal);
    } else {
      /* Finish a super-frame that did not fit the previous batch before reading
       * more, so segments stay in order. Only the first pass reads the fd: the
       * loop exists to flush one super-frame, not to starve other handles. */
      if (st->gso.active) nd_gso_emit(&st->gso, &o, &st->stats);
      if (!st->gso.active && first) nd_packet_drain(h->fd, h->keep_gso, &o, &st->gso, &st->stats, &fatal);
    }
    if (first) more = o.more; /* later passes only flush a super-frame */
    budget = o.budget;
    first = false;
    if (o.n > 0) {
      st->time[0] = monotonic_ms();
      /* The flow cache replays the batch's leading frames it knows (flowcache.c). */
      if (h->fc_in && st->fc) o.n -= fc_replay(st, h, o.n, st->time[0]);
    }
    if (o.n > 0) {
      st->stats.rx_batches++;
      if (defer) {
        st->fu_count = o.n;
        break;
      }
      /* The primary's last batch: its callback may take the follow-ups itself. */
      if (primary && !st->gso.active) st->fu_ready = true;
      call_js(h, o.n);
      gro_flush_all(st);
      if (primary) st->fu_ready = false;
      if (h->gen != gen) break; /* JS stopped, restarted or closed this handle */
    }
    if (!st->gso.active || fatal) break;
  }
  nd_fair_end(&h->fair, budget, more && !fatal);
  if (more && !fatal) h->fair_full++;
  else if (st->stats.tx_frames != tx0) st->light_writes++;
  if (st->gso.active) {
    /* Handle stopped mid-super-frame: the rest cannot be delivered in order. */
    st->gso.active = false;
    st->stats.gso_dropped++;
  }
  if (h->gen != gen) return;

  if (fatal) {
    if (defer && st->fu_count > 0) {
      /* The frames before the error still go to JS first, as without defer. */
      int n = st->fu_count;
      st->fu_count = 0;
      call_js(h, n);
      if (h->gen != gen) return;
    }
    fail_handle(h, fatal);
    return;
  }
  if (status < 0) {
    int err = 0;
    socklen_t el = sizeof err;
    /* POLLERR without a read error: a packet socket whose error we consumed, or
     * a TAP that lost its device between poll and read. */
    if (h->kind == KIND_PACKET) {
      getsockopt(h->fd, SOL_SOCKET, SO_ERROR, &err, &el);
      if (!nd_packet_bound(h->fd)) { fail_handle(h, err ? err : ENETDOWN); return; }
      if (err == ENETDOWN) st->stats.link_down++;
    } else if (h->kind == KIND_UDP || h->kind == KIND_UDP6) {
      /* A queued ICMP error on the UDP socket: consumed here, the socket lives on. */
      getsockopt(h->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    } else {
      fail_handle(h, EBADFD);
      return;
    }
    /* Transient (link went down and the socket is still bound): keep polling. */
    int r = uv_poll_start(&h->poll, UV_READABLE, on_poll);
    if (r < 0) fail_handle(h, -r);
    else h->polling = true;
  }
}

/*
 * h's service and its follow-up reads: after h's batch, the handles that batch wrote
 * to are read at once, in the same loop turn: writing to a TAP or a veth runs the
 * receiving stack in our context, so a reply (an ICMP echo reply, a TCP ACK) is
 * usually already queued there when the write returns. Reading it now saves a loop
 * turn per round trip (epoll, Node's check and timer phases); if nothing is there the
 * cost is one read that returns EAGAIN. Only one level (a follow-up's own writes are
 * not followed), at most ND_FOLLOW_MAX handles, and none after a flood to more.
 */
static void serve_and_follow(nd_handle *h, int status, bool primary) {
  nd_state *st = h->st;
  st->cur = h;
  st->nwrote = 0;
  st->fu_pos = 0;
  service(h, status, primary, false);
  st->cur = NULL;
  /* What the batch's callback did not take through followUp(). */
  while (st->fu_pos < st->nwrote) {
    nd_handle *w = st->table[st->wrote[st->fu_pos++]];
    if (w && w->polling) service(w, 0, false, false);
  }
}

/*
 * Sparse-first service (DRR++, as fq_codel's new-flow list), before the service of a
 * backlogged handle b: the sparse handles (setSparse) that are readable now and were
 * not backlogged (their queue emptied in their last service: a ping, an ACK-clocked
 * sender) are served first, one quantum each, so their frames do not wait behind b's
 * share (16 frames of a flood: ~110 us) nor behind the rest of the turn.
 *
 * libuv's poll is level-triggered and calls on_poll for the handles its epoll_wait
 * returned at the start of the turn, in epoll's order; a frame that arrives at a quiet
 * port during a flooder's service waits for the next turn, and then possibly behind
 * the flooder again. Finding which sparse handles are readable costs one
 * epoll_wait(0) on their own epoll set (st->sparse_ep, level-triggered too), not a
 * syscall per port, and only when a backlogged handle is about to be served.
 * Bounded: at most ND_SPARSE_MAX handles, each at most once a turn (early_turn), and
 * only those not backlogged, so a sparse handle that had more than a quantum becomes
 * backlogged and is served in its turn like any other from then on. b still gets its
 * quantum in this same turn, right after: no starvation, only a delay of the sparse
 * handles' one quantum each. A handle served here and then polled in the same turn is
 * served as a follow-up (on_poll): only if it is not backlogged, so no handle gets two
 * quanta in one turn.
 */
static void sparse_first(nd_state *st, nd_handle *b) {
  struct epoll_event ev[ND_SPARSE_MAX];
  int n = epoll_wait(st->sparse_ep, ev, ND_SPARSE_MAX, 0);
  for (int i = 0; i < n; i++) {
    nd_handle *w = st->table[ev[i].data.u32];
    if (!w || w == b || !w->polling || !w->sparse || w->fair.backlogged || w->early_turn == st->turn) continue;
    w->early_turn = st->turn;
    st->stats.rx_sparse_first++;
    serve_and_follow(w, 0, true);
  }
}

/* A handle is readable: its service (after the sparse handles', if it is backlogged). */
static void hp_wake(nd_state *st, bool by_handle);

/* h is readable (libuv's poll, or poll before sleep's): its service, sparse handles first if it is backlogged. */
static void serve_ready(nd_handle *h, int status) {
  nd_state *st = h->st;
  if (h->sparse && h->fair.backlogged && h->fair.quantum > 0 && status >= 0 && st->sparse_ep >= 0) {
    uint32_t gen = h->gen;
    sparse_first(st, h);
    if (h->gen != gen || !h->polling) return; /* JS stopped or closed h meanwhile */
  }
  serve_and_follow(h, status, !(h->early_turn != 0 && h->early_turn == st->turn));
}

static void on_poll(uv_poll_t *p, int status, int events) {
  nd_handle *h = (nd_handle *)p;
  if (h->st->hp_waiting) hp_wake(h->st, true);
  serve_ready(h, status);
}

/*
 * followUp(): called by a batch callback once it has consumed its batch (index.ts
 * wraps every start() callback so), it reads the next handle that batch wrote to,
 * as on_poll would after the callback returns, but leaves the frames in the ring
 * and returns (handle << 9) | count for the caller to dispatch, or -1 when none is
 * left. This saves a C -> JS entry (libuv, N-API, V8's Invoke) per follow-up batch:
 * a ping's reply is then handled in the same JS entry as its request.
 * Packet sockets may need several passes for one super-frame (gso.c): they are
 * served as before, with their own JS call, from inside this one.
 */
static napi_value js_follow_up(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  napi_value v;
  int32_t r = -1;
  if (st->fu_ready) {
    st->cur = NULL; /* one level: the follow-ups' own writes are not followed */
    while (st->fu_pos < st->nwrote) {
      nd_handle *w = st->table[st->wrote[st->fu_pos++]];
      if (!w || !w->polling) continue;
      if (w->kind == KIND_PACKET) {
        service(w, 0, false, false);
        continue;
      }
      st->fu_count = 0;
      service(w, 0, false, true);
      if (st->fu_count > 0) {
        r = (int32_t)((w->id << 9) | st->fu_count);
        st->stats.rx_follow_ups++;
        st->fu_count = 0;
        break;
      }
    }
  }
  CHECK(napi_create_int32(env, r, &v));
  return v;
}

/* Errors that must reach JS asynchronously (start on a dead packet socket). */
static void on_deferred(uv_timer_t *t) {
  nd_state *st = t->data;
  for (int i = 0; i < ND_MAX_HANDLES; i++) {
    nd_handle *h = st->table[i];
    if (!h || !h->deferred) continue;
    int e = h->deferred;
    h->deferred = 0;
    call_js(h, -e);
  }
}

static napi_value js_start(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  size_t argc = 2;
  napi_value argv[2];
  napi_valuetype t;
  nd_handle *h = handle_call(env, info, &argc, argv);
  if (!h) return NULL;
  if (argc < 2 || napi_typeof(env, argv[1], &t) != napi_ok || t != napi_function) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "netdev: start callback must be a function");
    return NULL;
  }
  if (!make_ring(env, st)) return NULL;
  if (h->cb) napi_delete_reference(env, h->cb);
  h->cb = NULL;
  CHECK(napi_create_reference(env, argv[1], 1, &h->cb));
  h->gen++;

  if (h->kind == KIND_PACKET && !nd_packet_bound(h->fd)) {
    /* The device is gone; polling would wait forever. Report it like any
     * other loss, from the loop, never synchronously inside start(). */
    if (h->polling) uv_poll_stop(&h->poll);
    h->polling = false;
    h->deferred = ENODEV;
    if (!st->timer_inited) {
      uv_timer_init(st->loop, &st->deferred_timer);
      st->deferred_timer.data = st;
      st->timer_inited = true;
    }
    uv_timer_start(&st->deferred_timer, on_deferred, 0, 0);
    return NULL;
  }
  if (!h->poll_inited) {
    int r = uv_poll_init(st->loop, &h->poll, h->fd);
    if (r < 0) { throw_errno(env, "uv_poll_init", NULL, -r); return NULL; }
    h->poll_inited = true;
  }
  if (!h->polling) {
    int r = uv_poll_start(&h->poll, UV_READABLE, on_poll);
    if (r < 0) { throw_errno(env, "uv_poll_start", NULL, -r); return NULL; }
    h->polling = true;
  }
  return NULL;
}

static napi_value js_stop(napi_env env, napi_callback_info info) {
  nd_handle *h = handle_of(env, info);
  if (!h) return NULL;
  if (h->polling) uv_poll_stop(&h->poll);
  h->polling = false;
  h->deferred = 0;
  h->gen++;
  return NULL;
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  nd_handle *h = handle_of(env, info);
  if (!h) return NULL;
  handle_close(env, h);
  return NULL;
}

/* ---------- open ---------- */

static napi_value triple(napi_env env, int a, int b, napi_value c) {
  napi_value arr, va, vb;
  CHECK(napi_create_array_with_length(env, 3, &arr));
  CHECK(napi_create_int32(env, a, &va));
  CHECK(napi_create_int32(env, b, &vb));
  CHECK(napi_set_element(env, arr, 0, va));
  CHECK(napi_set_element(env, arr, 1, vb));
  CHECK(napi_set_element(env, arr, 2, c));
  return arr;
}

static napi_value js_open_tap(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  size_t argc = 4;
  napi_value argv[4];
  char name[IFNAMSIZ], kname[IFNAMSIZ];
  int64_t flags, owner, group;
  const char *op;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4) { napi_throw_type_error(env, "ERR_MISSING_ARGS", "netdev: openTap(name, flags, owner, group)"); return NULL; }
  if (!arg_string(env, argv[0], "interface name", name, sizeof name)) return NULL;
  if (!arg_int(env, argv[1], "flags", 0, ND_TAP_PERSIST | ND_TAP_VNET_HDR, &flags)) return NULL;
  if (!arg_int(env, argv[2], "owner", -1, 4294967294.0, &owner)) return NULL;
  if (!arg_int(env, argv[3], "group", -1, 4294967294.0, &group)) return NULL;
  int fd = nd_tap_open(name, (int)flags, (long)owner, (long)group, kname, &op);
  if (fd < 0) { throw_errno(env, op, name, -fd); return NULL; }
  nd_handle *h = handle_new(env, st, fd, KIND_TAP);
  if (!h) { close(fd); return NULL; }
  h->vnet = (flags & ND_TAP_VNET_HDR) != 0;
  napi_value vname;
  if (napi_create_string_utf8(env, kname, NAPI_AUTO_LENGTH, &vname) != napi_ok) { handle_close(env, h); return NULL; }
  return triple(env, h->id, fd, vname);
}

static napi_value js_set_persist(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  bool on;
  nd_handle *h = handle_call(env, info, &argc, argv);
  if (!h) return NULL;
  if (argc < 2 || napi_get_value_bool(env, argv[1], &on) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "netdev: setPersist(handle, on: boolean)");
    return NULL;
  }
  if (h->kind != KIND_TAP) { throw_errno(env, "TUNSETPERSIST", "(not a TAP handle)", EINVAL); return NULL; }
  int e = nd_tap_set_persist(h->fd, on);
  if (e < 0) throw_errno(env, "TUNSETPERSIST", NULL, -e);
  return NULL;
}

/*
 * socketRcvbuf(fd, bytes): SO_RCVBUF of a socket Node opened (tcpopt.c); bytes -1
 * only reads it. Returns 0 (set) or the size (read), or -errno: never throws for
 * the socket's sake.
 */
static napi_value js_socket_rcvbuf(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], v;
  int64_t fd, bytes;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2 || !arg_int(env, argv[0], "fd", 0, 2147483647.0, &fd) ||
      !arg_int(env, argv[1], "bytes", -1, 1073741824.0, &bytes)) return NULL;
  CHECK(napi_create_int32(env, nd_sock_rcvbuf((int)fd, (int)bytes), &v));
  return v;
}

/* setTapGro(on): coalesce TCP segments from the underlay toward TAPs (tap_gro.c); off writes each as it comes. */
static napi_value js_set_tap_gro(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  size_t argc = 1;
  napi_value argv[1];
  bool on = false;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || napi_get_value_bool(env, argv[0], &on) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "netdev: setTapGro(on: boolean)");
    return NULL;
  }
  st->gro_on = on;
  return NULL;
}

/* setUdpGso(on, refusedForTest = false): sendVxlan's segments as UDP GSO datagrams (vxlan_gso.c); refusedForTest opens sockets the kernel refuses UDP GSO on (SO_NO_CHECK), to exercise the fallback. */
static bool vxtx_ready(napi_env env, nd_state *st);
static napi_value js_set_udp_gso(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  size_t argc = 2;
  napi_value argv[2];
  bool on = false, nocheck = false;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || napi_get_value_bool(env, argv[0], &on) != napi_ok || (argc > 1 && napi_get_value_bool(env, argv[1], &nocheck) != napi_ok)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "netdev: setUdpGso(on: boolean, refusedForTest?: boolean)");
    return NULL;
  }
  if (!vxtx_ready(env, st)) return NULL;
  nd_vxtx_set_gso(st->vxtx, on, nocheck);
  return NULL;
}

/* The underlay socket handle and the boolean of a (udpHandle, on) call; NULL (thrown) if either is not. */
static nd_handle *udp_switch_call(napi_env env, napi_callback_info info, const char *usage, bool *on) {
  size_t argc = 2;
  napi_value argv[2];
  nd_handle *h = handle_call(env, info, &argc, argv);
  if (!h) return NULL;
  if (argc < 2 || napi_get_value_bool(env, argv[1], on) != napi_ok || (h->kind != KIND_UDP && h->kind != KIND_UDP6)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", usage);
    return NULL;
  }
  return h;
}

/* setUdpGro(handle, on): UDP_GRO on an underlay receive socket (udp_gro.c); false if the kernel refused it. */
static napi_value js_set_udp_gro(napi_env env, napi_callback_info info) {
  napi_value r;
  bool on = false;
  nd_handle *h = udp_switch_call(env, info, "netdev: setUdpGro(udpHandle, on: boolean)", &on);
  if (!h) return NULL;
  bool ok = nd_udp_set_gro(h->fd, on) == 0;
  if (ok) h->udp_gro = on; /* a refused change leaves the socket, and the drain that reads it, as they were */
  CHECK(napi_get_boolean(env, ok, &r));
  return r;
}

/*
 * setUdpRecvTos(handle, on): the outer DS field per datagram (IP_RECVTOS / IPV6_RECVTCLASS,
 * on from open) on an underlay receive socket; off, the kernel adds no control message and
 * the DS byte in front of each datagram reads 0 (vxlan.ecn off needs none). False if refused.
 */
static napi_value js_set_udp_recv_tos(napi_env env, napi_callback_info info) {
  napi_value r;
  bool on = false;
  nd_handle *h = udp_switch_call(env, info, "netdev: setUdpRecvTos(udpHandle, on: boolean)", &on);
  if (!h) return NULL;
  int v = on;
  bool ok = (h->kind == KIND_UDP6 ? setsockopt(h->fd, IPPROTO_IPV6, IPV6_RECVTCLASS, &v, sizeof v)
                                  : setsockopt(h->fd, IPPROTO_IP, IP_RECVTOS, &v, sizeof v)) == 0;
  CHECK(napi_get_boolean(env, ok, &r));
  return r;
}

/*
 * setQuantum(handle, quantum, frames = false): the handle's share of each read-loop
 * round (fair.c), in bytes, or in frames when `frames`; 0 turns the limit off. Takes
 * effect at the handle's next service.
 */
static napi_value js_set_quantum(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int64_t q;
  bool frames = false;
  nd_handle *h = handle_call(env, info, &argc, argv);
  if (!h) return NULL;
  if (argc > 2 && napi_get_value_bool(env, argv[2], &frames) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "netdev: setQuantum(handle, quantum, frames?: boolean)");
    return NULL;
  }
  if (argc < 2 || !arg_int(env, argv[1], "quantum", 0, frames ? ND_FAIR_FRAMES_MAX : ND_FAIR_QUANTUM_MAX, &q)) return NULL;
  if (!frames && q != 0 && q < ND_FAIR_QUANTUM_MIN) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "netdev: quantum must be 0 (off) or 16384-67108864 bytes");
    return NULL;
  }
  /* A change of unit leaves no carried debt in the old one behind. */
  if (h->fair.frames != frames) h->fair.deficit = 0;
  h->fair.quantum = q;
  h->fair.frames = frames;
  return NULL;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * Poll before sleep (as KVM's halt polling): libuv is about to block in epoll_wait.
 * A ping-pong through the switch pays, per message, the wake-up of a sleeping
 * daemon: the runqueue wait after the wake-up (~19 us median here) and the kernel's
 * return from epoll (~9 us) (bench/README "Latency: where a ping-pong goes"). If the
 * next frame comes within the window, probing libuv's own epoll set with a zero
 * timeout finds it without sleeping. One syscall per probe whatever the number of
 * ports; level-triggered, so a probe consumes nothing. Bounded by the window (nd_hp:
 * adaptive, capped, a CPU budget per second, held while the host is busy) and by the
 * loop's next timer: a timer or another handle waits at most the window. Only when
 * libuv would really sleep (uv_backend_timeout != 0).
 *
 * What the probe found is served here (hp_serve), through serve_ready as on_poll
 * would (the same fairness, sparse-first, generation and flow-cache paths), and the
 * poll goes on with a fresh allowance: returning to libuv would cost an epoll_wait
 * and the loop's check, timer and prepare phases per hit. Only an addon handle's
 * plain readability is served so (libuv's event carries the fd: fd_ids); an error
 * event, or another fd (a timer's, the control socket's), goes back to libuv, which
 * finds it at once. The watchers stay untouched: libuv's epoll is level-triggered
 * and its registrations are its own. A batch that reached JS ends the poll and keeps
 * the loop from sleeping (hp_idle) until its check phase has run the ticks and
 * microtasks the batch queued, as after on_poll; and libuv computes its timeout after
 * this prepare callback, so timers or immediates JS set meanwhile are seen.
 */
static void hp_sample(nd_state *st, uint64_t now) {
  if (st->psi_fd < 0 || !nd_hp_sample_due(&st->hp, now)) return;
  char buf[256];
  ssize_t n = pread(st->psi_fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return;
  buf[n] = 0;
  /* "some avg10=0.00 avg60=0.00 avg300=0.00 total=123\n..." */
  const char *t = strstr(buf, "total=");
  if (!t) return;
  nd_hp_pressure(&st->hp, now, strtoull(t + 6, NULL, 10));
}

static void hp_idle_done(uv_idle_t *i) { uv_idle_stop(i); }

static nd_handle *handle_by_fd(nd_state *st, int fd) {
  if (fd < 0 || fd >= st->nfd_ids || st->fd_ids[fd] == 0) return NULL;
  nd_handle *h = st->table[st->fd_ids[fd] - 1];
  return h && h->fd == fd && h->polling ? h : NULL;
}

static void hp_before_sleep(nd_state *st) {
  int timeout = uv_backend_timeout(st->loop);
  if (timeout == 0) return;
  uint64_t t0 = now_ns();
  uint64_t deadline = timeout > 0 ? t0 + (uint64_t)timeout * 1000000ull : UINT64_MAX;
  bool hit = false;
  int fd = uv_backend_fd(st->loop);
  for (;;) {
    if (st->hp.window_ns) hp_sample(st, t0);
    uint64_t w = nd_hp_allowance(&st->hp, t0);
    if (w > deadline - t0) w = deadline - t0;
    if (w == 0) break;
    struct epoll_event ev;
    struct rusage r0, r1;
    uint64_t t = t0;
    /* Involuntary context switches during the poll: a thread (a VM's) waited for this CPU. */
    getrusage(RUSAGE_THREAD, &r0);
    do {
      int n = epoll_wait(fd, &ev, 1, 0);
      t = now_ns();
      if (n > 0) { hit = true; break; }
    } while (t - t0 < w);
    getrusage(RUSAGE_THREAD, &r1);
    nd_hp_polled(&st->hp, t - t0, hit, r1.ru_nivcsw != r0.ru_nivcsw);
    if (!hit || !st->hp_serve) break;
    nd_handle *h = (ev.events & ~(uint32_t)EPOLLIN) == 0 ? handle_by_fd(st, ev.data.fd) : NULL;
    if (!h) break; /* libuv's to serve: it finds it at once */
    /* A new round of the read loop, as a loop turn (on_turn). */
    if (++st->turn == 0) st->turn = 1;
    st->hp.served++;
    uint64_t js = st->js_calls;
    serve_ready(h, 0);
    if (st->js_calls != js) {
      if (!uv_is_active((uv_handle_t *)&st->hp_idle)) uv_idle_start(&st->hp_idle, hp_idle_done);
      break; /* hit stays true: no sleep to time */
    }
    hit = false;
    t0 = now_ns();
    if (t0 >= deadline) break;
  }
  /* A hit: no sleep to time. Otherwise the block (poll + sleep) is timed until an
   * addon handle's poll (on_poll) or anything else (hp_on_check) wakes the loop. */
  st->hp_waiting = !hit;
  st->hp_block_start = t0;
}

static void hp_wake(nd_state *st, bool by_handle) {
  st->hp_waiting = false;
  nd_hp_woke(&st->hp, now_ns() - st->hp_block_start, by_handle);
}

/* After the loop's poll phase: woken by no addon handle (a timer, a signal, the control socket). */
static void hp_on_check(uv_check_t *c) {
  nd_state *st = c->data;
  if (st->hp_waiting) hp_wake(st, false);
}

/*
 * Issue 17's ping tail (bench/fair/wakeups.py): a frame we write to a TAP delivers
 * inside our write and wakes its reader with a sync wake-up, which places the reader on
 * our CPU when we are its only task; the wake-up does not preempt us (EEVDF: our
 * session's group entity keeps the CPU), so under a flood, when our loop never sleeps,
 * the reader waits for the next tick (3.4-3.9 ms at HZ=250). Once a light flow has
 * been written since the last yield (a service that drained its handle wrote frames: a
 * ping's reply, an ACK-clocked sender; not a flood, whose handle stays backlogged and
 * whose reader is after throughput, not a round trip), after a turn with more already
 * readable (the loop would not sleep), at most once per yield_ns, give the CPU up: a
 * 1 us nanosleep that takes this thread off the runqueue so whatever waits on this CPU
 * runs (or sched_yield). A flood alone makes no yields (s31: the sleep after any turn
 * that wrote handed a CPU hog its slices, 64-byte rate 0.77x with one core busy).
 * VSWITCH_TURN_YIELD_AFTER=any restores that for experiments. Off until setTurnYield
 * (the daemon: config turnYieldUs, README "The turn yield"; bench/README.md "Who the
 * pinger waits behind").
 */
/* More tasks runnable machine-wide than CPUs (/proc/loadavg's fourth field, this thread
 * included): someone waits for a CPU, here or on another CPU that an idle balance on
 * ours can take it from. A read that fails counts as contended. */
static bool host_contended(nd_state *st) {
  char b[128];
  ssize_t n = pread(st->yield_loadavg_fd, b, sizeof b - 1, 0);
  if (n <= 0) return true;
  b[n] = 0;
  const char *p = b;
  for (int i = 0; i < 3 && p; i++) { p = strchr(p, ' '); if (p) p++; }
  if (!p) return true;
  return strtol(p, NULL, 10) > st->yield_cpus;
}

static void turn_yield(nd_state *st) {
  if (st->yield_any) {
    uint64_t tx = st->stats.tx_frames;
    if (tx == st->yield_tx) return;
    st->yield_tx = tx;
  } else if (st->light_writes == st->yield_light) {
    return; /* no light flow written since the last yield */
  }
  uint64_t t = now_ns();
  if (t - st->yield_last < st->yield_ns) return;
  struct epoll_event ev;
  if (epoll_wait(uv_backend_fd(st->loop), &ev, 1, 0) <= 0) return; /* the loop sleeps anyway */
  if (st->yield_mode == ND_YIELD_CONTENDED && st->yield_loadavg_fd >= 0 && !host_contended(st)) return;
  t = now_ns();
  if (st->yield_mode != ND_YIELD_YIELD) {
    struct timespec ts = { 0, 1000 };
    nanosleep(&ts, NULL);
  } else {
    sched_yield();
  }
  uint64_t end = now_ns();
  /* Since the yield, not the turn: the light flows' next frames often come from readers
   * that wait on this CPU themselves (fair2, s31: counted per turn, the p99 as without). */
  st->yield_light = st->light_writes;
  st->stats.turn_yields++;
  st->stats.turn_yield_ns += end - t;
  st->yield_last = end;
}

/*
 * The turn yield's interval and mode: us 0 = off. The mode (VSWITCH_TURN_YIELD, read at
 * load; the daemon's setting uses the default) is one of: contended (the default: the
 * sleep only while more tasks are runnable than there are CPUs), sleep (always), nap (the
 * sleep with this thread's timer slack at 1 us), yield (sched_yield).
 */
static void ensure_prep(nd_state *st);

static void turn_yield_configure(nd_state *st, uint64_t us) {
  st->yield_ns = us * 1000;
  st->yield_last = 0;
  if (!us) return;
  if (st->yield_mode == ND_YIELD_CONTENDED && st->yield_loadavg_fd < 0) {
    st->yield_loadavg_fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    st->yield_cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (st->yield_cpus < 1) st->yield_cpus = 1;
  }
  ensure_prep(st);
}

/* setTurnYield(us): 0 off, else at most one yield per `us` microseconds (1 to 1,000,000). */
static napi_value js_set_turn_yield(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  size_t argc = 1;
  napi_value argv[1];
  int64_t us;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "netdev: setTurnYield(us)");
    return NULL;
  }
  if (!arg_int(env, argv[0], "us", 0, 1000000, &us)) return NULL;
  turn_yield_configure(st, (uint64_t)us);
  return NULL;
}

/* Each loop turn is one round: sparse_first serves a handle at most once per turn. */
static void on_turn(uv_prepare_t *p) {
  nd_state *st = p->data;
  if (++st->turn == 0) st->turn = 1; /* 0 is early_turn's "never" */
  if (st->yield_ns) turn_yield(st);
  if (st->hp.max_ns) hp_before_sleep(st);
}

/* The prepare hook (loop turns, poll before sleep), made on first use; it does not keep the loop alive. */
static void ensure_prep(nd_state *st) {
  if (st->prep_inited) return;
  uv_prepare_init(st->loop, &st->turn_prep);
  st->turn_prep.data = st;
  uv_prepare_start(&st->turn_prep, on_turn);
  uv_unref((uv_handle_t *)&st->turn_prep);
  st->prep_inited = true;
}

/*
 * setPollBeforeSleep(maxUs, budgetMs[, holdOnPreemptForTest = true]): poll before
 * sleep with windows up to maxUs (0: off, at most ND_HP_MAX_US) and at most budgetMs
 * of polling per second. The third argument, false, is for tests on a loaded machine:
 * a preempted poll is counted but stops nothing, and the CPU pressure is not read.
 */
static napi_value js_set_poll_before_sleep(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  size_t argc = 3;
  napi_value argv[3];
  int64_t max_us, budget_ms;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "netdev: setPollBeforeSleep(maxUs, budgetMs)");
    return NULL;
  }
  if (!arg_int(env, argv[0], "maxUs", 0, ND_HP_MAX_US, &max_us)) return NULL;
  if (!arg_int(env, argv[1], "budgetMs", 1, 1000, &budget_ms)) return NULL;
  if (max_us > 0) {
    ensure_prep(st);
    if (!st->check_inited) {
      uv_check_init(st->loop, &st->hp_check);
      st->hp_check.data = st;
      uv_check_start(&st->hp_check, hp_on_check);
      uv_unref((uv_handle_t *)&st->hp_check);
      uv_idle_init(st->loop, &st->hp_idle);
      st->hp_idle.data = st;
      uv_unref((uv_handle_t *)&st->hp_idle);
      st->check_inited = true;
    }
    if (st->psi_fd == -2) st->psi_fd = open("/proc/pressure/cpu", O_RDONLY | O_CLOEXEC);
    if (st->psi_fd < 0) st->psi_fd = -1;
  }
  bool hold = true;
  if (argc >= 3 && napi_get_value_bool(env, argv[2], &hold) != napi_ok) hold = true;
  st->hp.no_hold = !hold;
  /* Bench and tuning knobs (bench/haltpoll/cpu.sh): the pressure that holds polling
   * (0: none, a preempted poll holds it for its second, as before s29), and serving
   * from inside the poll (0: return to libuv). */
  const char *e = getenv("VSWITCH_POLL_BUSY_PERMILLE");
  uint32_t busy = e && *e ? (uint32_t)strtoul(e, NULL, 10) : ND_HP_BUSY_PERMILLE;
  if (st->psi_fd < 0 || !hold) busy = 0; /* a test's loaded machine: nothing the host does stops polling */
  e = getenv("VSWITCH_POLL_SERVE");
  st->hp_serve = !(e && strcmp(e, "0") == 0);
  nd_hp_configure(&st->hp, (uint32_t)max_us, (uint32_t)budget_ms * 1000, busy);
  if (max_us == 0) {
    st->hp.window_ns = 0;
    st->hp_waiting = false;
  }
  return NULL;
}

static napi_value hp_view(napi_env env, const nd_hp *hp) {
  napi_value o, v;
  struct { const char *k; double v; } f[] = {
    { "maxUs", hp->max_ns / 1e3 }, { "budgetMs", hp->budget_ns / 1e6 }, { "windowUs", hp->window_ns / 1e3 },
    { "spins", (double)hp->spins }, { "hits", (double)hp->hits }, { "misses", (double)hp->misses },
    { "spinMs", hp->spin_ns / 1e6 }, { "overBudget", (double)hp->over_budget }, { "hostBusy", (double)hp->host_busy },
    { "preempted", (double)hp->preempted }, { "served", (double)hp->served },
    { "busyPermille", (double)hp->busy_permille }, { "pressurePermille", (double)hp->pressure },
    { "samples", (double)hp->samples }, { "busySamples", (double)hp->busy_samples }, { "holds", (double)hp->holds },
    { "grows", (double)hp->grows }, { "shrinks", (double)hp->shrinks },
  };
  CHECK(napi_create_object(env, &o));
  for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
    CHECK(napi_create_double(env, f[i].v, &v));
    CHECK(napi_set_named_property(env, o, f[i].k, v));
  }
  return o;
}

/* pollBeforeSleepStats(): the settings, the current window and the counters. */
static napi_value js_poll_before_sleep_stats(napi_env env, napi_callback_info info) {
  return hp_view(env, &get_state(env)->hp);
}

/*
 * pollBeforeSleepForTest(maxUs, budgetMs, steps): a fresh window (haltpoll.c) fed
 * steps [kind, x, y] (Float64Array, three numbers each): 0 = the loop would sleep at
 * time x ns (the result: the allowance), 1 = a poll of x ns ended, y bit 0 a hit,
 * bit 1 preempted, 2 =
 * woken after a block of x ns, y != 0 by a handle (the result: the window after), 3 =
 * a pressure sample at x ns with y us of stall in all, if one is due (the result:
 * the interval's pressure per mille, -1 a baseline, -2 not due). busyPermille
 * (optional, 0): the pressure that holds polling.
 * Returns { out: number[] (one per step), stats }.
 */
static napi_value js_poll_before_sleep_for_test(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4], res, out, v;
  int64_t max_us, budget_ms;
  napi_typedarray_type tt;
  size_t len;
  void *data;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3 || !arg_int(env, argv[0], "maxUs", 0, ND_HP_MAX_US, &max_us) ||
      !arg_int(env, argv[1], "budgetMs", 1, 1000, &budget_ms)) {
    if (argc < 3) napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "netdev: pollBeforeSleepForTest(maxUs, budgetMs, steps)");
    return NULL;
  }
  if (napi_get_typedarray_info(env, argv[2], &tt, &len, &data, NULL, NULL) != napi_ok || tt != napi_float64_array || len % 3) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "netdev: steps must be a Float64Array of triples");
    return NULL;
  }
  const double *s = data;
  nd_hp hp = { 0 };
  int64_t busy = 0;
  if (argc >= 4 && !arg_int(env, argv[3], "busyPermille", 0, 1000, &busy)) return NULL;
  nd_hp_configure(&hp, (uint32_t)max_us, (uint32_t)budget_ms * 1000, (uint32_t)busy);
  CHECK(napi_create_array_with_length(env, len / 3, &out));
  for (size_t i = 0; i < len / 3; i++) {
    double kind = s[3 * i], x = s[3 * i + 1], y = s[3 * i + 2];
    double r;
    if (kind == 0) r = (double)nd_hp_allowance(&hp, (uint64_t)x);
    else if (kind == 1) { nd_hp_polled(&hp, (uint64_t)x, ((int)y & 1) != 0, ((int)y & 2) != 0); r = (double)hp.window_ns; }
    else if (kind == 2) { nd_hp_woke(&hp, (uint64_t)x, y != 0); r = (double)hp.window_ns; }
    else r = nd_hp_sample_due(&hp, (uint64_t)x) ? (double)nd_hp_pressure(&hp, (uint64_t)x, (uint64_t)y) : -2;
    CHECK(napi_create_double(env, r, &v));
    CHECK(napi_set_element(env, out, (uint32_t)i, v));
  }
  CHECK(napi_create_object(env, &res));
  CHECK(napi_set_named_property(env, res, "out", out));
  CHECK(napi_set_named_property(env, res, "stats", hp_view(env, &hp)));
  return res;
}

/*
 * setSparse(handle, on): sparse-first service for the handle (sparse_first): when it
 * becomes readable after its queue emptied, it is served ahead of backlogged sparse
 * handles, one quantum; a backlogged sparse handle serves those first. Returns false
 * (and nothing changes) if the kernel refused the epoll set.
 */
static napi_value js_set_sparse(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], r;
  bool on = false, ok = true;
  nd_handle *h = handle_call(env, info, &argc, argv);
  if (!h) return NULL;
  if (argc < 2 || napi_get_value_bool(env, argv[1], &on) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "netdev: setSparse(handle, on: boolean)");
    return NULL;
  }
  nd_state *st = h->st;
  if (on && !h->sparse) {
    if (st->sparse_ep < 0) st->sparse_ep = epoll_create1(EPOLL_CLOEXEC);
    if (st->sparse_ep >= 0) ensure_prep(st);
    struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)h->id };
    ok = st->sparse_ep >= 0 && epoll_ctl(st->sparse_ep, EPOLL_CTL_ADD, h->fd, &ev) == 0;
    if (ok) h->sparse = true;
  } else if (!on && h->sparse) {
    epoll_ctl(st->sparse_ep, EPOLL_CTL_DEL, h->fd, NULL);
    h->sparse = false;
  }
  CHECK(napi_get_boolean(env, ok, &r));
  return r;
}

/* fairFull(handle): how many services of the handle left frames waiting for a later round. */
static napi_value js_fair_full(napi_env env, napi_callback_info info) {
  nd_handle *h = handle_of(env, info);
  napi_value v;
  if (!h) return NULL;
  CHECK(napi_create_double(env, h->fair_full, &v));
  return v;
}

/* notify(path, text): sd_notify's datagram (notify.c). Not on any frame path: strings are copied freely. */
static napi_value js_notify(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  char path[110];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) { napi_throw_type_error(env, "ERR_MISSING_ARGS", "netdev: notify(path, text)"); return NULL; }
  if (!arg_string(env, argv[0], "notify socket path", path, sizeof path)) return NULL;
  size_t len;
  if (napi_get_value_string_utf8(env, argv[1], NULL, 0, &len) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "netdev: notify text must be a string");
    return NULL;
  }
  char *text = malloc(len + 1);
  if (!text) { throw_errno(env, "notify", path, ENOMEM); return NULL; }
  napi_get_value_string_utf8(env, argv[1], text, len + 1, &len);
  int e = nd_notify(path, text, len);
  free(text);
  if (e < 0) throw_errno(env, "sendto", path, -e);
  return NULL;
}

static napi_value js_open_packet(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  size_t argc = 2;
  napi_value argv[2];
  char name[IFNAMSIZ];
  const char *op;
  int ifindex = 0;
  int64_t flags = 0;
  bool vnet = false;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!arg_string(env, argc ? argv[0] : NULL, "interface name", name, sizeof name)) return NULL;
  if (argc > 1 && !arg_int(env, argv[1], "flags", 0, ND_PACKET_KEEP_GSO, &flags)) return NULL;
  if (!st->gso.buf) {
    st->gso.buf = malloc(ND_READ_MAX);
    if (!st->gso.buf) { throw_errno(env, "malloc", NULL, ENOMEM); return NULL; }
  }
  int fd = nd_packet_open(name, &ifindex, &vnet, &op);
  if (fd < 0) { throw_errno(env, op, name, -fd); return NULL; }
  nd_handle *h = handle_new(env, st, fd, KIND_PACKET);
  if (!h) { close(fd); return NULL; }
  h->vnet = vnet;
  h->keep_gso = (flags & ND_PACKET_KEEP_GSO) != 0;
  napi_value vidx;
  if (napi_create_int32(env, ifindex, &vidx) != napi_ok) { handle_close(env, h); return NULL; }
  return triple(env, h->id, fd, vidx);
}

/* ---------- write ---------- */

/* A batch's callback wrote to h: remember it for a follow-up read (on_poll). */
static void note_write(nd_state *st, nd_handle *h) {
  if (!st->cur || h == st->cur || st->nwrote < 0) return;
  for (int i = 0; i < st->nwrote; i++)
    if (st->wrote[i] == h->id) return;
  if (st->nwrote == ND_FOLLOW_MAX) st->nwrote = -1;
  else st->wrote[st->nwrote++] = h->id;
}

static napi_value send_result(napi_env env, nd_state *st, ssize_t r, size_t frame, bool vnet) {
  napi_value v;
  int32_t out;
  if (r < 0) {
    out = -errno;
    st->stats.tx_errors++;
  } else {
    /* Report frame bytes: packet_snd does not count the vnet header it consumed,
     * but do not depend on that. */
    out = (int32_t)(vnet && (size_t)r == frame + ND_VNET_HDR_LEN ? frame : (size_t)r);
    st->stats.tx_frames++;
  }
  napi_create_int32(env, out, &v);
  return v;
}

static bool arg_range(napi_env env, napi_value voff, napi_value vlen, size_t total, size_t *off, size_t *len) {
  int64_t o, l;
  if (!arg_int(env, voff, "offset", 0, 2147483647.0, &o) || !arg_int(env, vlen, "length", 0, 2147483647.0, &l))
    return false;
  if ((size_t)o > total || (size_t)l > total - (size_t)o) {
    char m[128];
    snprintf(m, sizeof m, "netdev: range [%lld, %lld) outside a %zu-byte array", (long long)o, (long long)(o + l), total);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", m);
    return false;
  }
  *off = (size_t)o;
  *len = (size_t)l;
  return true;
}

static const uint8_t zero_vnet[ND_VNET_HDR_LEN];

static ssize_t do_writev(int fd, struct iovec *iov, int n) {
  ssize_t r;
  do r = writev(fd, iov, n); while (r < 0 && errno == EINTR);
  return r;
}

/*
 * sendVnet(handle, buf, off, len): the frame is buf[off, off+len) and its
 * virtio_net_hdr sits right before it, at buf[off-10, off) (the ring's layout,
 * or a scratch header). A device that speaks the header gets both in one piece;
 * the kernel then passes GSO on or segments, and fills in checksums. A device
 * that does not can only take a header that asks for nothing: a frame that
 * still needs segmentation or a checksum is refused with -EINVAL (the caller
 * completes it first with `segment`). send and send2 take complete frames and
 * give a device that speaks the header a zeroed one.
 */
static bool vnet_needs_work(const uint8_t *hdr) { return (hdr[0] & VNET_F_NEEDS_CSUM) || hdr[1] != VNET_GSO_NONE; }

static bool arg_hdr_room(napi_env env, size_t off) {
  if (off >= ND_VNET_HDR_LEN) return true;
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "netdev: the virtio_net_hdr must fit before the frame (offset >= 10)");
  return false;
}

/*
 * One frame (iov: its header if the device takes one, then its pieces; `frame` bytes
 * without the header) to h, counted as send_result counts: the frame bytes written,
 * or -errno. `complete`: the header is the implied zero one, so a TAP may hold the
 * frame for coalescing (gro_take).
 */
static ssize_t write_frame(nd_state *st, nd_handle *h, struct iovec *iov, int n, size_t frame, bool complete) {
  if (gro_take(st, h, iov, n, complete)) {
    note_write(st, h);
    st->stats.tx_frames++;
    return (ssize_t)frame;
  }
  ssize_t r = do_writev(h->fd, iov, n);
  if (r < 0) {
    int e = errno;
    st->stats.tx_errors++;
    return -e;
  }
  note_write(st, h);
  st->stats.tx_frames++;
  return h->vnet && (size_t)r == frame + ND_VNET_HDR_LEN ? (ssize_t)frame : r;
}

/*
 * The four send functions in one: (handle, then `parts` (bytes, off, len) triples,
 * written as one frame), arguments checked in order so each call throws the first
 * misuse; `hdr_before`: the first part's virtio_net_hdr is in the caller's array
 * before it (sendVnet, send2Vnet) rather than implied zero (send, send2).
 */
static napi_value send_parts(napi_env env, napi_callback_info info, int parts, bool hdr_before, const char *usage) {
  static const char *const names[2][2] = { { "buf", NULL }, { "a", "b" } };
  nd_state *st = get_state(env);
  size_t argc = 7, total, off[2], len[2], frame = 0;
  napi_value argv[7];
  uint8_t *p[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < (size_t)(1 + 3 * parts)) { napi_throw_type_error(env, "ERR_MISSING_ARGS", usage); return NULL; }
  nd_handle *h = arg_handle(env, st, argv[0]);
  if (!h) return NULL;
  for (int i = 0; i < parts; i++) {
    napi_value *v = argv + 1 + 3 * i;
    if (!arg_bytes(env, v[0], names[parts - 1][i], &p[i], &total) || !arg_range(env, v[1], v[2], total, &off[i], &len[i]))
      return NULL;
    if (i == 0 && hdr_before && !arg_hdr_room(env, off[0])) return NULL;
    frame += len[i];
  }
  struct iovec iov[3];
  int n = 0;
  if (!hdr_before) {
    if (h->vnet) iov[n++] = (struct iovec){ (void *)zero_vnet, ND_VNET_HDR_LEN };
    iov[n++] = (struct iovec){ p[0] + off[0], len[0] };
  } else if (h->vnet) {
    iov[n++] = (struct iovec){ p[0] + off[0] - ND_VNET_HDR_LEN, ND_VNET_HDR_LEN + len[0] };
  } else {
    if (vnet_needs_work(p[0] + off[0] - ND_VNET_HDR_LEN)) { errno = EINVAL; return send_result(env, st, -1, frame, false); }
    iov[n++] = (struct iovec){ p[0] + off[0], len[0] };
  }
  if (parts == 2) iov[n++] = (struct iovec){ p[1] + off[1], len[1] };
  napi_value v;
  napi_create_int32(env, (int32_t)write_frame(st, h, iov, n, frame, !hdr_before), &v);
  return v;
}

static napi_value js_send(napi_env env, napi_callback_info info) {
  return send_parts(env, info, 1, false, "netdev: send(handle, buf, off, len)");
}

static napi_value js_send2(napi_env env, napi_callback_info info) {
  return send_parts(env, info, 2, false, "netdev: send2(handle, a, aoff, alen, b, boff, blen)");
}

static napi_value js_send_vnet(napi_env env, napi_callback_info info) {
  return send_parts(env, info, 1, true, "netdev: sendVnet(handle, buf, off, len)");
}

/* send2Vnet(handle, a, aoff, alen, b, boff, blen): as send2, with the header at a[aoff-10, aoff). */
static napi_value js_send2_vnet(napi_env env, napi_callback_info info) {
  return send_parts(env, info, 2, true, "netdev: send2Vnet(handle, a, aoff, alen, b, boff, blen)");
}

static bool arg_i32s(napi_env env, napi_value v, const char *name, int32_t **out, size_t *n) {
  napi_typedarray_type t;
  void *p;
  bool is;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is || napi_get_typedarray_info(env, v, &t, n, &p, NULL, NULL) != napi_ok ||
      t != napi_int32_array) {
    char m[96];
    snprintf(m, sizeof m, "netdev: %s must be an Int32Array", name);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", m);
    return false;
  }
  *out = p;
  return true;
}

/*
 * sendRun(handle, buf, offs, lens, from, to, ref, hlen, strip, res): the frames
 * buf[offs[i], offs[i]+lens[i]) for i in [from, to), each written as send (strip 0)
 * or send2 without bytes [12, 16) of it (strip 4: the VLAN tag an untagged egress
 * drops) would write it, in order, in one call: the bridge's egress of a run of one
 * inner flow (switch bridge.ts #receiveRuns) to a TAP, instead of one send2 and its
 * argument parsing per segment (17 % of a VXLAN receiver's CPU). It stops before a
 * frame shorter than `hlen` or whose first hlen bytes differ from buf[ref, ref+hlen)
 * (the run's head: that frame takes the bridge's whole pipeline), and after a frame whose
 * write failed. Returns the frames it took; res (Int32Array(3)) gets [their bytes as
 * given, the bytes written, -errno of the failed last one or 0]. Every range is
 * checked before anything is written (RangeError).
 */
static napi_value js_send_run(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  size_t argc = 10, total, no, nl, nr;
  napi_value argv[10], v;
  uint8_t *buf;
  int32_t *offs, *lens, *res;
  int64_t from, to, ref, hlen, strip;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 10) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "netdev: sendRun(handle, buf, offs, lens, from, to, ref, hlen, strip, res)");
    return NULL;
  }
  nd_handle *h = arg_handle(env, st, argv[0]);
  if (!h) return NULL;
  if (!arg_bytes(env, argv[1], "buf", &buf, &total) || !arg_i32s(env, argv[2], "offs", &offs, &no) ||
      !arg_i32s(env, argv[3], "lens", &lens, &nl) || !arg_i32s(env, argv[9], "res", &res, &nr))
    return NULL;
  if (!arg_int(env, argv[4], "from", 0, 2147483647.0, &from) || !arg_int(env, argv[5], "to", 0, 2147483647.0, &to) ||
      !arg_int(env, argv[6], "ref", 0, 2147483647.0, &ref) || !arg_int(env, argv[7], "hlen", 14, 64, &hlen) ||
      !arg_int(env, argv[8], "strip", 0, 4, &strip))
    return NULL;
  if ((strip != 0 && (strip != 4 || hlen < 16)) || nr < 3 || from > to || (size_t)to > no || (size_t)to > nl ||
      (size_t)ref > total || total - (size_t)ref < (size_t)hlen) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE",
      "netdev: sendRun: strip 0, or 4 with hlen >= 16; from <= to <= offs/lens length; ref + hlen within buf; res of 3");
    return NULL;
  }
  for (int64_t i = from; i < to; i++) {
    if (offs[i] < 0 || lens[i] < 0 || (size_t)offs[i] > total || (size_t)lens[i] > total - (size_t)offs[i]) {
      char m[128];
      snprintf(m, sizeof m, "netdev: sendRun: frame %lld [%d, +%d) outside a %zu-byte array", (long long)i, offs[i], lens[i], total);
      napi_throw_range_error(env, "ERR_OUT_OF_RANGE", m);
      return NULL;
    }
  }
  const uint8_t *head = buf + ref;
  int64_t in = 0, out = 0, k = from;
  int32_t err = 0;
  while (k < to) {
    uint8_t *f = buf + offs[k];
    size_t len = (size_t)lens[k];
    if (len < (size_t)hlen || memcmp(f, head, (size_t)hlen) != 0) break;
    if (in + (int64_t)len > INT32_MAX) break; /* res counts in int32: the caller calls again for the rest */
    struct iovec iov[3];
    int n = 0;
    if (h->vnet) iov[n++] = (struct iovec){ (void *)zero_vnet, ND_VNET_HDR_LEN };
    if (strip) {
      iov[n++] = (struct iovec){ f, 12 };
      iov[n++] = (struct iovec){ f + 16, len - 16 };
    } else {
      iov[n++] = (struct iovec){ f, len };
    }
    ssize_t r = write_frame(st, h, iov, n, len - (size_t)strip, true);
    in += (int64_t)len;
    k++;
    if (r < 0) {
      err = (int32_t)r;
      break;
    }
    out += r;
  }
  res[0] = (int32_t)in;
  res[1] = (int32_t)out;
  res[2] = err;
  CHECK(napi_create_int32(env, (int32_t)(k - from), &v));
  return v;
}

/* ---------- VXLAN underlay (udp.c) ---------- */

/*
 * What the socket openers return: [handle, fd] for a new socket fd of `kind`, or the
 * error (-fd from the opener, `op` the call that failed, `name` the interface if any).
 */
static napi_value opened(napi_env env, nd_state *st, int fd, int kind, const char *op, const char *name) {
  if (fd < 0) { throw_errno(env, op, name[0] ? name : NULL, -fd); return NULL; }
  nd_handle *h = handle_new(env, st, fd, kind);
  if (!h) { close(fd); return NULL; }
  napi_value vfd;
  if (napi_create_int32(env, fd, &vfd) != napi_ok) { handle_close(env, h); return NULL; }
  return triple(env, h->id, fd, vfd);
}

/* openUdp(localIp, port, ifname): [handle, fd]; localIp a host-order u32. */
static napi_value js_open_udp(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  size_t argc = 3;
  napi_value argv[3];
  char name[IFNAMSIZ] = "";
  int64_t ip, port;
  const char *op;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) { napi_throw_type_error(env, "ERR_MISSING_ARGS", "netdev: openUdp(localIp, port, ifname)"); return NULL; }
  if (!arg_int(env, argv[0], "local address", 0, 4294967295.0, &ip)) return NULL;
  if (!arg_int(env, argv[1], "port", 1, 65535, &port)) return NULL;
  if (!arg_string(env, argv[2], "interface name", name, sizeof name)) return NULL;
  int fd = nd_udp_open(htonl((uint32_t)ip), (uint16_t)port, name, &op);
  return opened(env, st, fd, KIND_UDP, op, name);
}

/* openRawIp(ifname): [handle, fd] of an IPPROTO_RAW socket (the caller writes the IPv4 header). */
static napi_value js_open_raw_ip(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  size_t argc = 1;
  napi_value argv[1];
  char name[IFNAMSIZ] = "";
  const char *op;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) { napi_throw_type_error(env, "ERR_MISSING_ARGS", "netdev: openRawIp(ifname)"); return NULL; }
  if (!arg_string(env, argv[0], "interface name", name, sizeof name)) return NULL;
  int fd = nd_raw_open(name, &op);
  return opened(env, st, fd, KIND_RAW, op, name);
}

/*
 * sendIp3(handle, dstIp, a, aoff, alen, b, boff, blen, c, coff, clen): one IPv4
 * packet (its header first, in a) to dstIp (host-order u32), gathered from three
 * pieces, through a raw socket. Bytes written or -errno (EMSGSIZE: over the MTU, DF).
 */
static bool vxtx_ready(napi_env env, nd_state *st);

static nd_handle *raw6_args(napi_env env, nd_state *st, napi_value *argv, const char *fn, nd_vxdst *d);

/*
 * The arguments sendIp3 and queueIp3 share, (handle, dstIp, a, aoff, alen, b, boff,
 * blen, c, coff, clen): the raw IP handle, dst (host order, into d) and the three
 * pieces as iovecs; v6 (sendIp6x3, queueIp6x3): (handle, dst, doff, hops, a, ...), see
 * raw6_args. NULL, with a JS exception pending, on bad arguments.
 */
static nd_handle *ip3_args(napi_env env, napi_callback_info info, nd_state *st, const char *fn, bool v6, nd_vxdst *d,
                           struct iovec iov[3]) {
  size_t argc = 13, want = v6 ? 13 : 11, total, off, len;
  napi_value argv[13];
  uint8_t *p;
  static const char *const names[3] = { "a", "b", "c" };
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < want) {
    char m[160];
    snprintf(m, sizeof m, v6 ? "netdev: %s(handle, dst, doff, hops, a, aoff, alen, b, boff, blen, c, coff, clen)"
                             : "netdev: %s(handle, dstIp, a, aoff, alen, b, boff, blen, c, coff, clen)", fn);
    napi_throw_type_error(env, "ERR_MISSING_ARGS", m);
    return NULL;
  }
  nd_handle *h;
  if (v6) {
    if (!(h = raw6_args(env, st, argv, fn, d))) return NULL;
  } else {
    int64_t dst;
    if (!(h = arg_handle(env, st, argv[0]))) return NULL;
    if (h->kind != KIND_RAW) { throw_errno(env, fn, "(not a raw IP handle)", EINVAL); return NULL; }
    if (!arg_int(env, argv[1], "destination", 0, 4294967295.0, &dst)) return NULL;
    nd_vxdst4(d, htonl((uint32_t)dst));
  }
  for (int i = 0; i < 3; i++) {
    napi_value *v = argv + (v6 ? 4 : 2) + 3 * i;
    if (!arg_bytes(env, v[0], names[i], &p, &total) || !arg_range(env, v[1], v[2], total, &off, &len)) return NULL;
    iov[i] = (struct iovec){ p + off, len };
  }
  return h;
}

/* sendIp3 and sendIp6x3 (v6): one packet through the raw socket now. */
static napi_value send_ip3(napi_env env, napi_callback_info info, bool v6) {
  nd_state *st = get_state(env);
  nd_vxdst d;
  struct iovec iov[3];
  nd_handle *h = ip3_args(env, info, st, v6 ? "sendIp6x3" : "sendIp3", v6, &d, iov);
  if (!h) return NULL;
  size_t frame = iov[0].iov_len + iov[1].iov_len + iov[2].iov_len;
  /* The flow's source port, as its UDP GSO socket has it (vxlan_gso.c), in a copy: the caller's header is its own. */
  const size_t olen = v6 ? ND_VXLAN6_OUTER : ND_VXLAN_OUTER;
  uint8_t outer[ND_VXLAN_OUTER];
  if (st->vxtx && iov[0].iov_len == olen) {
    memcpy(outer, iov[0].iov_base, olen);
    nd_vxtx_rewrite_sport(st->vxtx, h->fd, outer);
    iov[0].iov_base = outer;
  }
  ssize_t r;
  if (v6) return send_result(env, st, (ssize_t)nd_raw6_send(h->fd, d.sa.sin6_addr.s6_addr, d.hops, d.tclass, iov, 3), frame, false);
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_name = &d.sa;
  msg.msg_namelen = d.salen;
  msg.msg_iov = iov;
  msg.msg_iovlen = 3;
  do r = sendmsg(h->fd, &msg, MSG_DONTWAIT); while (r < 0 && errno == EINTR);
  return send_result(env, st, r, frame, false);
}

static napi_value js_send_ip3(napi_env env, napi_callback_info info) { return send_ip3(env, info, false); }


/*
 * queueIp3(...): sendIp3's arguments; the packet is copied into the VXLAN send queue
 * (vxlan_tx.c) and sent with the others queued in one sendmmsg when the queue is
 * full, before a sendVxlan, when the handle closes, or at flushIp(). Bytes queued,
 * or -EMSGSIZE (over 16 KiB). Errors at the flush are counted (vxlanTxQueueErrors).
 * queueIp6x3(...): the same with sendIp6x3's arguments (the IPv6 underlay).
 */
static napi_value queue_ip3(napi_env env, napi_callback_info info, bool v6) {
  nd_state *st = get_state(env);
  nd_vxdst d;
  struct iovec iov[3];
  nd_handle *h = ip3_args(env, info, st, v6 ? "queueIp6x3" : "queueIp3", v6, &d, iov);
  if (!h) return NULL;
  if (!vxtx_ready(env, st)) return NULL;
  const uint8_t *pp[3] = { iov[0].iov_base, iov[1].iov_base, iov[2].iov_base };
  const size_t pl[3] = { iov[0].iov_len, iov[1].iov_len, iov[2].iov_len };
  napi_value v;
  CHECK(napi_create_int32(env, nd_vxq_add(st->vxtx, h->fd, &d, pp, pl, &st->stats), &v));
  return v;
}

static napi_value js_queue_ip3(napi_env env, napi_callback_info info) { return queue_ip3(env, info, false); }

static napi_value js_queue_ip6x3(napi_env env, napi_callback_info info) { return queue_ip3(env, info, true); }

/* flushIp(): send the packets queueIp3 queued (one sendmmsg); returns how many (refusals counted). */
static napi_value js_flush_ip(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  napi_value v;
  CHECK(napi_create_int32(env, st->vxtx ? nd_vxq_flush(st->vxtx, &st->stats) : 0, &v));
  return v;
}

/* ---------- VXLAN transmit of super-frames (vxlan_tx.c) ---------- */

/* What sendVxlan returns for a frame with a segment over the MTU: vxlan.ts's E_TUNNEL_MTU. */
#define ND_E_TUNNEL_MTU (-10001)

static bool vxtx_ready(napi_env env, nd_state *st) {
  if (st->vxtx) return true;
  st->vxtx = nd_vxtx_new();
  if (!st->vxtx) throw_errno(env, "malloc", NULL, ENOMEM);
  return st->vxtx != NULL;
}

/*
 * The arguments sendVxlan, sendVxlan6 and vxlanBuildForTest share, from argv[0]: outer
 * (36 bytes: IPv4 + UDP + VXLAN; v6: 16, UDP + VXLAN), mtu, a, aoff (a[aoff-10, aoff):
 * the virtio_net_hdr of the tagged frame, a[aoff, aoff+12): its MACs), b, boff, blen
 * (the frame after its tag).
 */
static int vxtx_args(napi_env env, nd_state *st, napi_value *argv, bool v6, uint64_t *bytes) {
  uint8_t *outer, *a, *b;
  size_t ol, at, bt, aoff, boff, blen;
  int64_t mtu;
  if (!arg_bytes(env, argv[0], "outer", &outer, &ol)) return INT32_MIN;
  if (ol < (v6 ? ND_VXLAN6_OUTER : ND_VXLAN_OUTER)) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", v6 ? "netdev: outer must be 16 bytes" : "netdev: outer must be 36 bytes");
    return INT32_MIN;
  }
  if (!arg_int(env, argv[1], "mtu", 68, 65535, &mtu)) return INT32_MIN;
  int64_t ao;
  if (!arg_bytes(env, argv[2], "a", &a, &at) || !arg_int(env, argv[3], "aoff", 0, 2147483647.0, &ao)) return INT32_MIN;
  aoff = (size_t)ao;
  if (!arg_hdr_room(env, aoff)) return INT32_MIN;
  if (aoff > at || at - aoff < 12) { napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "netdev: a must hold 12 bytes from aoff"); return INT32_MIN; }
  if (!arg_bytes(env, argv[4], "b", &b, &bt) || !arg_range(env, argv[5], argv[6], bt, &boff, &blen)) return INT32_MIN;
  if (!vxtx_ready(env, st)) return INT32_MIN;
  /* Egress inserted the tag in a scratch header: the VM's untagged frame is usually whole in b, its MACs right before boff. */
  const uint8_t *whole = boff >= 12 && memcmp(b + boff - 12, a + aoff, 12) == 0 ? b + boff - 12 : NULL;
  int n = nd_vxtx_build(st->vxtx, v6, outer, (size_t)mtu, a + aoff - ND_VNET_HDR_LEN, a + aoff, b + boff, blen, whole,
                        &st->stats, bytes);
  return n == ND_VXTX_TOO_BIG ? ND_E_TUNNEL_MTU : n == ND_VXTX_BAD ? -EINVAL : n;
}

static bool arg_ip6(napi_env env, napi_value va, napi_value voff, const char *name, uint8_t **out);

/*
 * (handle, dst, doff, hops) of sendIp6x3 and sendVxlan6 from argv[0]: the raw IPv6
 * handle; d the destination, hop limit (hops' low byte, 1-255) and traffic class
 * (hops >> 8: the outer DS field, one number so the per-packet call takes no more arguments).
 */
static nd_handle *raw6_args(napi_env env, nd_state *st, napi_value *argv, const char *fn, nd_vxdst *d) {
  uint8_t *dst;
  int64_t hops;
  nd_handle *h = arg_handle(env, st, argv[0]);
  if (!h) return NULL;
  if (h->kind != KIND_RAW) { throw_errno(env, fn, "(not a raw IP handle)", EINVAL); return NULL; }
  if (!arg_ip6(env, argv[1], argv[2], "destination", &dst)) return NULL;
  if (!arg_int(env, argv[3], "hop limit | traffic class << 8", 1, 0xffff, &hops)) return NULL;
  if ((hops & 0xff) == 0) { napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "netdev: hop limit must be 1-255"); return NULL; }
  nd_vxdst6(d, dst, (int)(hops & 0xff), (int)(hops >> 8));
  return h;
}

/* res must be an Int32Array of 2 (sendVxlan's and sendVxlan6's last argument). */
static int32_t *arg_res(napi_env env, napi_value v) {
  size_t rl;
  void *rp;
  napi_typedarray_type rt;
  if (napi_get_typedarray_info(env, v, &rt, &rl, &rp, NULL, NULL) != napi_ok || rt != napi_int32_array || rl < 2) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "netdev: res must be an Int32Array of 2");
    return NULL;
  }
  return rp;
}

/* Builds from argv (vxtx_args) and sends to d through h: sendVxlan's and sendVxlan6's common part. */
static napi_value vxtx_send(napi_env env, nd_state *st, nd_handle *h, const nd_vxdst *d, napi_value *argv, int32_t *res) {
  napi_value v;
  uint64_t bytes = 0;
  int n = vxtx_args(env, st, argv, d->v6, &bytes);
  if (n == INT32_MIN) return NULL;
  res[0] = 0;
  res[1] = 0;
  if (n > 0) {
    int sent = nd_vxtx_send(st->vxtx, h->fd, d, n, &st->stats);
    if (sent > 0) {
      res[0] = sent;
      res[1] = (int32_t)(sent == n ? bytes : bytes * (uint64_t)sent / (uint64_t)n);
    }
    n = sent;
  }
  CHECK(napi_create_int32(env, n, &v));
  return v;
}

/*
 * sendVxlan(handle, dst, outer, mtu, a, aoff, b, boff, blen, res): a tagged frame
 * whose virtio_net_hdr asks for work (see vxtx_args for where its pieces are),
 * segmented or completed, each piece encapsulated behind `outer` and sent to dst
 * (host-order u32) through the raw socket `handle` as UDP GSO datagrams or in one
 * sendmmsg. Returns the packets sent, -EINVAL (cannot be completed), -10001 (a
 * segment over `mtu`) or -errno; res (Int32Array(2)) gets [packets sent, their inner bytes].
 *
 * sendVxlan6(handle, dst, doff, hops, outer, mtu, a, aoff, b, boff, blen, res): the
 * same over the IPv6 underlay: the raw IPv6 socket `handle` (openRawIp6), dst the 16
 * bytes at dst[doff], the hop limit `hops`, outer 16 bytes (UDP + VXLAN; the kernel
 * writes the IPv6 header and the UDP checksums).
 */
static napi_value send_vxlan(napi_env env, napi_callback_info info, bool v6) {
  nd_state *st = get_state(env);
  size_t argc = 12, want = v6 ? 12 : 10;
  napi_value argv[12];
  nd_vxdst d;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < want) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", v6 ? "netdev: sendVxlan6(handle, dst, doff, hops, outer, mtu, a, aoff, b, boff, blen, res)"
                                                      : "netdev: sendVxlan(handle, dst, outer, mtu, a, aoff, b, boff, blen, res)");
    return NULL;
  }
  nd_handle *h;
  if (v6) {
    h = raw6_args(env, st, argv, "sendVxlan6", &d);
  } else {
    int64_t dst;
    h = arg_handle(env, st, argv[0]);
    if (h && h->kind != KIND_RAW) { throw_errno(env, "sendVxlan", "(not a raw IP handle)", EINVAL); return NULL; }
    if (h && !arg_int(env, argv[1], "destination", 0, 4294967295.0, &dst)) return NULL;
    if (h) nd_vxdst4(&d, htonl((uint32_t)dst));
  }
  if (!h) return NULL;
  int32_t *res = arg_res(env, argv[want - 1]);
  if (!res) return NULL;
  return vxtx_send(env, st, h, &d, argv + (v6 ? 4 : 2), res);
}

static napi_value js_send_vxlan(napi_env env, napi_callback_info info) { return send_vxlan(env, info, false); }

static napi_value js_send_vxlan6(napi_env env, napi_callback_info info) { return send_vxlan(env, info, true); }

/*
 * vxlanBuildForTest(outer, mtu, a, aoff, b, boff, blen, v6 = false): what sendVxlan
 * (v6: sendVxlan6) would send, as Buffers (outer header and inner frame, one per
 * packet), or the negative code.
 */
static napi_value js_vxlan_build_for_test(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  size_t argc = 8;
  napi_value argv[8], arr, v;
  bool v6 = false;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 7) { napi_throw_type_error(env, "ERR_MISSING_ARGS", "netdev: vxlanBuildForTest(outer, mtu, a, aoff, b, boff, blen, v6?)"); return NULL; }
  if (argc > 7 && napi_get_value_bool(env, argv[7], &v6) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "netdev: v6 must be a boolean");
    return NULL;
  }
  uint64_t bytes = 0;
  int n = vxtx_args(env, st, argv, v6, &bytes);
  if (n == INT32_MIN) return NULL;
  if (n < 0) {
    CHECK(napi_create_int32(env, n, &v));
    return v;
  }
  CHECK(napi_create_array_with_length(env, (size_t)n, &arr));
  for (int i = 0; i < n; i++) {
    const uint8_t *pa, *pb;
    size_t ol, la, lb;
    const uint8_t *outer = nd_vxtx_packet(st->vxtx, i, &ol, &pa, &la, &pb, &lb);
    uint8_t *d;
    napi_value b;
    CHECK(napi_create_buffer(env, ol + la + lb, (void **)&d, &b));
    memcpy(d, outer, ol);
    memcpy(d + ol, pa, la);
    if (lb) memcpy(d + ol + la, pb, lb);
    CHECK(napi_set_element(env, arr, (uint32_t)i, b));
  }
  return arr;
}

/* ---------- VXLAN underlay over IPv6 (udp6.c) ---------- */

/* 16 bytes at a[aoff] (an IPv6 address). */
static bool arg_ip6(napi_env env, napi_value va, napi_value voff, const char *name, uint8_t **out) {
  uint8_t *p;
  size_t total, off, len;
  napi_value vlen;
  if (napi_create_int32(env, 16, &vlen) != napi_ok) return false;
  if (!arg_bytes(env, va, name, &p, &total) || !arg_range(env, voff, vlen, total, &off, &len)) return false;
  *out = p + off;
  return true;
}

/* openUdp6(local, loff, port, ifname, zeroCsumRx): [handle, fd]; local = 16 bytes at local[loff]. */
static napi_value js_open_udp6(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  size_t argc = 5;
  napi_value argv[5];
  char name[IFNAMSIZ] = "";
  int64_t port;
  uint8_t *local;
  bool zero = false;
  const char *op;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 5) { napi_throw_type_error(env, "ERR_MISSING_ARGS", "netdev: openUdp6(local, loff, port, ifname, zeroCsumRx)"); return NULL; }
  if (!arg_ip6(env, argv[0], argv[1], "local address", &local)) return NULL;
  if (!arg_int(env, argv[2], "port", 1, 65535, &port)) return NULL;
  if (!arg_string(env, argv[3], "interface name", name, sizeof name)) return NULL;
  CHECK(napi_get_value_bool(env, argv[4], &zero));
  int fd = nd_udp6_open(local, (uint16_t)port, name, zero, &op);
  return opened(env, st, fd, KIND_UDP6, op, name);
}

/* openRawIp6(local, loff, ifname): [handle, fd] of a raw IPv6 UDP socket bound to local (the kernel writes IPv6 and the UDP checksum). */
static napi_value js_open_raw_ip6(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  size_t argc = 3;
  napi_value argv[3];
  char name[IFNAMSIZ] = "";
  uint8_t *local;
  const char *op;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) { napi_throw_type_error(env, "ERR_MISSING_ARGS", "netdev: openRawIp6(local, loff, ifname)"); return NULL; }
  if (!arg_ip6(env, argv[0], argv[1], "local address", &local)) return NULL;
  if (!arg_string(env, argv[2], "interface name", name, sizeof name)) return NULL;
  int fd = nd_raw6_open(local, name, &op);
  return opened(env, st, fd, KIND_RAW, op, name);
}

/*
 * sendIp6x3(handle, dst, doff, hops, a, aoff, alen, b, boff, blen, c, coff, clen): one
 * UDP datagram (its UDP header first, in a) to the IPv6 address dst[doff, doff+16)
 * with hop limit `hops`, gathered from three pieces. Bytes or -errno (EMSGSIZE: over the MTU).
 */
static napi_value js_send_ip6x3(napi_env env, napi_callback_info info) { return send_ip3(env, info, true); }

/* ---------- transmit-side completion (segment) ---------- */

static napi_value make_tx_scratch(napi_env env, nd_state *st) {
  if (!st->tx_ref && !st->tx_gso.buf) {
    st->tx_gso.buf = malloc(ND_READ_MAX);
    if (!st->tx_gso.buf) { throw_errno(env, "malloc", NULL, ENOMEM); return NULL; }
  }
  return make_frame_area(env, ND_TX_SCRATCH_BYTES, ND_TX_SCRATCH_FRAMES, &st->tx_ref, &st->tx_arena, &st->tx_offs,
                         &st->tx_lens, NULL);
}

static napi_value js_tx_scratch(napi_env env, napi_callback_info info) {
  return make_tx_scratch(env, get_state(env));
}

/*
 * segment(buf, off, len): the frame at buf[off, off+len), with its
 * virtio_net_hdr at buf[off-10, off), made into complete frames in the transmit
 * scratch area (txScratch()): GSO segments with full checksums, or a copy with
 * its checksum filled in. Returns how many (from index 0), or -1 when it cannot
 * be completed. The source is not written. The next call overwrites the area.
 */
static napi_value js_segment(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  size_t argc = 3, total, off, len;
  napi_value argv[3], v;
  uint8_t *p;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) { napi_throw_type_error(env, "ERR_MISSING_ARGS", "netdev: segment(buf, off, len)"); return NULL; }
  if (!arg_bytes(env, argv[0], "buf", &p, &total) || !arg_range(env, argv[1], argv[2], total, &off, &len) ||
      !arg_hdr_room(env, off))
    return NULL;
  if (!st->tx_ref && !make_tx_scratch(env, st)) return NULL;
  nd_out o = { st->tx_arena, ND_TX_SCRATCH_BYTES, 0, st->tx_offs, st->tx_lens, 0, ND_TX_SCRATCH_FRAMES, INT64_MAX, false, false };
  int n = nd_tx_complete(&st->tx_gso, p + off - ND_VNET_HDR_LEN, p + off, len, &o, &st->stats);
  CHECK(napi_create_int32(env, n, &v));
  return v;
}

/* ---------- links ---------- */

static napi_value js_set_link_up(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  char name[IFNAMSIZ];
  bool up;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!arg_string(env, argc ? argv[0] : NULL, "interface name", name, sizeof name)) return NULL;
  if (argc < 2 || napi_get_value_bool(env, argv[1], &up) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "netdev: setLinkUp(name, up: boolean)");
    return NULL;
  }
  int e = nd_link_set_up(name, up);
  if (e < 0) throw_errno(env, "SIOCSIFFLAGS", name, -e);
  return NULL;
}

static napi_value js_if_index(napi_env env, napi_callback_info info) {
  size_t argc = 1, len;
  napi_value argv[1], v;
  char name[64];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], name, sizeof name, &len) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "netdev: ifIndex(name: string)");
    return NULL;
  }
  unsigned idx = len < IFNAMSIZ ? if_nametoindex(name) : 0;
  CHECK(napi_create_uint32(env, idx, &v));
  return v;
}

/*
 * setsid(): the daemon's own session, hence its own scheduling group when the kernel
 * groups by session (autogroups: CONFIG_SCHED_AUTOGROUP, tasks in the root cpu
 * cgroup). Node has no setsid; the daemon's `ownSession` (cli/daemon/session.ts) is
 * the caller. Returns the new session id; throws EPERM when the process leads a
 * process group (it cannot start a session without a fork, which Node cannot do).
 */
static napi_value js_setsid(napi_env env, napi_callback_info info) {
  napi_value v;
  (void)info;
  pid_t sid = setsid();
  if (sid < 0) {
    throw_errno(env, "setsid", NULL, errno);
    return NULL;
  }
  CHECK(napi_create_int32(env, (int32_t)sid, &v));
  return v;
}

/* ---------- stats ---------- */

static napi_value js_stats(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  napi_value o, v;
  const nd_stats *s = &st->stats;
  struct { const char *k; uint64_t v; } f[] = {
    { "rxBatches", s->rx_batches },     { "rxFollowUps", s->rx_follow_ups }, { "rxFrames", s->rx_frames },
    { "rxSparseFirst", s->rx_sparse_first },
    { "rxBytes", s->rx_bytes },         { "rxTruncated", s->rx_truncated },
    { "rxDropped", s->rx_dropped },     { "gsoSegmented", s->gso_segmented },
    { "gsoSegments", s->gso_segments }, { "gsoDropped", s->gso_dropped },
    { "csumFilled", s->csum_filled },   { "vlanRestored", s->vlan_restored },
    { "linkDown", s->link_down },       { "rxOffloaded", s->rx_offloaded },       { "txFrames", s->tx_frames },
    { "txErrors", s->tx_errors },         { "txGsoSegmented", s->tx_gso_segmented },
    { "txGsoSegments", s->tx_gso_segments }, { "txGsoDropped", s->tx_gso_dropped },
    { "txCsumFilled", s->tx_csum_filled },
    { "vxlanTxSegmented", s->vxlan_tx_segmented }, { "vxlanTxSegments", s->vxlan_tx_segments },
    { "vxlanTxCsumFilled", s->vxlan_tx_csum_filled }, { "vxlanTxBatches", s->vxlan_tx_batches },
    { "vxlanTxDropped", s->vxlan_tx_dropped }, { "vxlanTxTooBig", s->vxlan_tx_too_big },
    { "vxlanTxQueued", s->vxlan_tx_queued }, { "vxlanTxQueueErrors", s->vxlan_tx_queue_errors },
    { "vxlanTxGsoSends", s->vxlan_tx_gso_sends }, { "vxlanTxGsoSegments", s->vxlan_tx_gso_segments },
    { "vxlanTxGsoRefused", s->vxlan_tx_gso_refused },
    { "tapGroFrames", s->tap_gro_frames }, { "tapGroSegments", s->tap_gro_segments },
    { "tapGroErrors", s->tap_gro_errors },
    { "udpGroBursts", s->udp_gro_bursts }, { "udpGroSegments", s->udp_gro_segments },
    { "udpGroDropped", s->udp_gro_dropped },
    { "uringFlushes", s->uring_flushes }, { "uringWrites", s->uring_writes },
    { "uringEnters", s->uring_enters }, { "uringUnsent", s->uring_unsent }, { "turnYields", s->turn_yields }, { "turnYieldNs", s->turn_yield_ns },
  };
  CHECK(napi_create_object(env, &o));
  for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
    CHECK(napi_create_double(env, (double)f[i].v, &v));
    CHECK(napi_set_named_property(env, o, f[i].k, v));
  }
  return o;
}

/* ---------- flow cache (flowcache.c) ---------- */

/*
 * flowCacheGenerations(): the bridges' generations (Float64Array of 4096, one per
 * bridge id), memory the table reads on every probe and JS bumps on every change
 * that could alter a decision. Made with the table, on first use; the same after.
 */
static napi_value js_fc_generations(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  napi_value ab, arr;
  void *p;
  if (st->fc_gens_ref) {
    CHECK(napi_get_reference_value(env, st->fc_gens_ref, &arr));
    return arr;
  }
  CHECK(napi_create_arraybuffer(env, ND_FC_BRIDGES * sizeof(double), &p, &ab));
  CHECK(napi_create_typedarray(env, napi_float64_array, ND_FC_BRIDGES, ab, 0, &arr));
  if (!(st->fc = nd_fc_new(p))) { throw_errno(env, "flow cache", NULL, ENOMEM); return NULL; }
  CHECK(napi_create_reference(env, arr, 1, &st->fc_gens_ref));
  return arr;
}

static bool vnet_zero(const uint8_t *h) {
  for (unsigned i = 0; i < ND_VNET_HDR_LEN; i++)
    if (h[i]) return false;
  return true;
}

/* A replayed frame's write counted as writev's in fc_replay: the stats, the follow-up
 * read, the entry's counters. */
static void fc_account(nd_state *st, nd_fc_entry *e, nd_handle *w, size_t len, double now, long res) {
  if (res < 0) {
    st->stats.tx_errors++;
  } else {
    res = (long)len;
    st->stats.tx_frames++;
    note_write(st, w);
  }
  nd_fc_hit(st->fc, e, len, now, res);
}

static ssize_t fc_write(nd_handle *w, uint8_t *f, size_t len) {
  struct iovec iov = w->vnet ? (struct iovec){ f - ND_VNET_HDR_LEN, ND_VNET_HDR_LEN + len } : (struct iovec){ f, len };
  return do_writev(w->fd, &iov, 1);
}

/*
 * The read loop's hook: replays the leading frames of h's batch (ring[0, n)) that
 * hit, writing each as the pipeline did (a device with a virtio_net_hdr gets the
 * frame's own, as egress's sendVnet writes it: a TSO super-frame or a partial
 * checksum goes out as it came; JS installs those only toward such devices, and a
 * header that says anything never replays to one without), and remembers the
 * written handle for a follow-up read as a JS write does. Stops at the first miss
 * so a flow's frames keep their order; the rest move to the ring's front for JS.
 * With setTapWriteBatch on, the hits' writes are queued and sent in one
 * io_uring_enter after the probes (uring.c: issued in order, inline, in this
 * thread; the frames stay in the ring until every write has completed); a lone
 * hit is written with writev, which costs no more.
 * Returns how many it replayed.
 */
static int fc_replay(nd_state *st, nd_handle *h, int n, double now) {
  nd_fc_entry *ents[ND_RING_MAX_FRAMES];
  nd_handle *outs[ND_RING_MAX_FRAMES];
  nd_ur *ur = st->ur;
  int i = 0, lim = n;
  /* Never in practice (the ring has ND_RING_MAX_FRAMES entries); past it, frames go to JS in order. */
  if (ur && (unsigned)lim > nd_ur_room(ur)) lim = (int)nd_ur_room(ur);
  for (; i < lim; i++) {
    uint8_t *f = st->arena + st->offs[i];
    size_t len = (size_t)st->lens[i];
    nd_fc_key k;
    if (!nd_fc_key_of(&k, h->id, f, len, f - ND_VNET_HDR_LEN, h->fc_mode)) {
      nd_fc_miss(st->fc);
      break;
    }
    nd_fc_entry *e = nd_fc_probe(st->fc, &k);
    if (!e) break;
    nd_handle *w = st->table[e->act.out]; /* present: closing a handle drops its entries */
    if (!w || (!w->vnet && !vnet_zero(f - ND_VNET_HDR_LEN))) {
      nd_fc_miss(st->fc);
      break;
    }
    if (ur) {
      ents[i] = e;
      outs[i] = w;
      continue;
    }
    ssize_t r = fc_write(w, f, len);
    fc_account(st, e, w, len, now, r < 0 ? -errno : (long)r);
  }
  if (ur && i == 1) {
    /* One frame (a ping, an ACK): io_uring_enter would cost what writev does, or more. */
    ssize_t r = fc_write(outs[0], st->arena + st->offs[0], (size_t)st->lens[0]);
    fc_account(st, ents[0], outs[0], (size_t)st->lens[0], now, r < 0 ? -errno : (long)r);
  } else if (ur && i > 1) {
    int32_t res[ND_RING_MAX_FRAMES];
    for (int j = 0; j < i; j++) {
      uint8_t *f = st->arena + st->offs[j];
      size_t len = (size_t)st->lens[j];
      nd_handle *w = outs[j];
      /* A write target's first batch registers it (once; handle_close empties the slot). */
      if (!w->ur_file && (unsigned)w->id < nd_ur_files(ur) && nd_ur_set_file(ur, (unsigned)w->id, w->fd) == 0)
        w->ur_file = true;
      int slot = w->ur_file ? w->id : -1;
      if (w->vnet) nd_ur_write(ur, w->fd, slot, f - ND_VNET_HDR_LEN, ND_VNET_HDR_LEN + len, (uint32_t)j);
      else nd_ur_write(ur, w->fd, slot, f, len, (uint32_t)j);
    }
    st->stats.uring_enters += (uint64_t)nd_ur_flush(ur, res, (unsigned)i);
    st->stats.uring_flushes++;
    for (int j = 0; j < i; j++) {
      size_t len = (size_t)st->lens[j];
      long r = res[j];
      if (r == ND_UR_UNSENT) {
        /* io_uring did not take it (no memory for a request): write it here, after the
         * ones that went, so the order holds. */
        st->stats.uring_unsent++;
        ssize_t w = fc_write(outs[j], st->arena + st->offs[j], len);
        r = w < 0 ? -errno : (long)w;
      } else {
        st->stats.uring_writes++;
      }
      fc_account(st, ents[j], outs[j], len, now, r);
    }
  }
  if (i > 0 && i < n) {
    memmove(st->offs, st->offs + i, (size_t)(n - i) * sizeof *st->offs);
    memmove(st->lens, st->lens + i, (size_t)(n - i) * sizeof *st->lens);
  }
  return i;
}

/*
 * setTapWriteBatch(on): the flow cache's replays of one read batch written through
 * io_uring in one io_uring_enter (on) or one writev each (off, the default). Returns
 * { on, error }: on is what is in force; error the errno code when io_uring could not be
 * set up (disabled by sysctl, a seccomp filter, an old kernel), which leaves writev.
 */
static napi_value js_set_tap_write_batch(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  size_t argc = 1;
  napi_value argv[1], o, v;
  bool on = false;
  int err = 0;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || napi_get_value_bool(env, argv[0], &on) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "netdev: setTapWriteBatch(on: boolean)");
    return NULL;
  }
  if (on && !st->ur) st->ur = nd_ur_new(ND_RING_MAX_FRAMES, &err);
  if (!on && st->ur) {
    nd_ur_free(st->ur);
    st->ur = NULL;
    for (int i = 0; i < ND_UR_FILES; i++)
      if (st->table[i]) st->table[i]->ur_file = false;
  }
  CHECK(napi_create_object(env, &o));
  CHECK(napi_get_boolean(env, st->ur != NULL, &v));
  CHECK(napi_set_named_property(env, o, "on", v));
  if (err) CHECK(napi_create_string_utf8(env, errno_code(err), NAPI_AUTO_LENGTH, &v));
  else CHECK(napi_get_null(env, &v));
  CHECK(napi_set_named_property(env, o, "error", v));
  return o;
}

static bool fc_ready(napi_env env, nd_state *st) {
  if (st->fc) return true;
  napi_throw_error(env, "ERR_INVALID_STATE", "netdev: flowCacheGenerations() makes the flow cache first");
  return false;
}

/*
 * The key of buf[off, off+len) read from handle `in` in `mode`, its virtio_net_hdr at
 * buf[off-10, off): 1; 0 with an exception pending (bad arguments, or a frame shorter
 * than its Ethernet and tag header); -1 for a frame outside ND_FC_KEY_L3's classes.
 */
static int fc_key_arg(napi_env env, napi_value *v, int32_t in, int mode, nd_fc_key *k) {
  uint8_t *p;
  size_t total, off, len;
  if (!arg_bytes(env, v[0], "buf", &p, &total) || !arg_range(env, v[1], v[2], total, &off, &len) ||
      !arg_hdr_room(env, off))
    return 0;
  if (nd_fc_key_of(k, in, p + off, len, p + off - ND_VNET_HDR_LEN, mode)) return 1;
  if (mode != ND_FC_KEY_L2 && nd_fc_key_of(k, in, p + off, len, p + off - ND_VNET_HDR_LEN, ND_FC_KEY_L2)) return -1;
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "netdev: a frame shorter than its Ethernet (and tag) header has no key");
  return 0;
}

/*
 * flowCacheInstall(bridge, in, inCookie, buf, off, len, out, outCookie, l3?): the pipeline
 * sent the frame at buf[off, off+len) from handle `in` unchanged to handle `out`
 * alone; frames with the same key replay that until the bridge's generation moves.
 * `l3` true: the decision also depended on the frame's class (IPv4 or ARP) and its IPv4
 * source or ARP sender address (flowcache.h ND_FC_KEY_L3); `in`'s frames are keyed so from now on (false: back to
 * MACs and tag; each mode's entries never match the other's keys).
 * The cookies (JS's port ids) come back with the fold. The slot, -1 when refused,
 * -2 when `l3` and the frame is outside the classes (nothing installed).
 */
static napi_value js_fc_install(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  size_t argc = 9;
  napi_value argv[9], v;
  int64_t br, ic, oc;
  bool l3 = false;
  nd_fc_key k;
  nd_fc_action a;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 8) { napi_throw_type_error(env, "ERR_MISSING_ARGS", "netdev: flowCacheInstall(bridge, in, inCookie, buf, off, len, out, outCookie, l3?)"); return NULL; }
  if (argc > 8 && napi_get_value_bool(env, argv[8], &l3) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "netdev: flowCacheInstall: l3 must be a boolean");
    return NULL;
  }
  if (!fc_ready(env, st) || !arg_int(env, argv[0], "bridge", 0, ND_FC_BRIDGES - 1, &br)) return NULL;
  nd_handle *in = arg_handle(env, st, argv[1]);
  if (!in || !arg_int(env, argv[2], "inCookie", 0, 2147483647.0, &ic)) return NULL;
  int mode = l3 ? ND_FC_KEY_L3 : ND_FC_KEY_L2;
  int got = fc_key_arg(env, argv + 3, in->id, mode, &k);
  if (got == 0) return NULL;
  nd_handle *out = arg_handle(env, st, argv[6]);
  if (!out || !arg_int(env, argv[7], "outCookie", 0, 2147483647.0, &oc)) return NULL;
  in->fc_in = true;
  in->fc_mode = (uint8_t)mode;
  if (got < 0) {
    CHECK(napi_create_int32(env, -2, &v));
    return v;
  }
  a.out = out->id;
  a.in_cookie = (int32_t)ic;
  a.out_cookie = (int32_t)oc;
  CHECK(napi_create_int32(env, nd_fc_install(st->fc, (int)br, &k, &a), &v));
  return v;
}

/* flowCacheProbeForTest(in, buf, off, len, nowMs, written): the read loop's probe of one
 * frame (keyed as handle `in`'s frames are); a hit is counted with `written` as its write's result. The out handle, or -1. */
static napi_value js_fc_probe_for_test(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  size_t argc = 6;
  napi_value argv[6], v;
  int64_t in, len, written;
  double now;
  nd_fc_key k;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 6 || !fc_ready(env, st) || !arg_int(env, argv[0], "in", 0, ND_MAX_HANDLES - 1, &in)) return NULL;
  int mode = st->table[in] ? st->table[in]->fc_mode : ND_FC_KEY_L2;
  int got = fc_key_arg(env, argv + 1, (int32_t)in, mode, &k);
  if (got == 0 || !arg_int(env, argv[3], "length", 0, 2147483647.0, &len) ||
      napi_get_value_double(env, argv[4], &now) != napi_ok || !arg_int(env, argv[5], "written", -4095, 2147483647.0, &written))
    return NULL;
  nd_fc_entry *e = NULL;
  if (got > 0) e = nd_fc_probe(st->fc, &k);
  else nd_fc_miss(st->fc);
  if (e) nd_fc_hit(st->fc, e, (size_t)len, now, (long)written);
  CHECK(napi_create_int32(env, e ? e->act.out : -1, &v));
  return v;
}

/* flowCacheFold(out: Float64Array): the entries' unfolded counts (flowcache.h), zeroed; how many. */
static napi_value js_fc_fold(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  size_t argc = 1, len;
  napi_value argv[1], v;
  napi_typedarray_type t;
  void *p;
  bool is = false;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || napi_is_typedarray(env, argv[0], &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, argv[0], &t, &len, &p, NULL, NULL) != napi_ok || t != napi_float64_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "netdev: flowCacheFold(out: Float64Array)");
    return NULL;
  }
  int n = st->fc ? nd_fc_fold(st->fc, p, (int)(len / ND_FC_FOLD_FIELDS)) : 0;
  CHECK(napi_create_int32(env, n, &v));
  return v;
}

/* flowCacheFlush(bridge): its entries stale (-1: every bridge's); counts kept for the fold. */
static napi_value js_fc_flush(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  size_t argc = 1;
  napi_value argv[1];
  int64_t br;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || !arg_int(env, argv[0], "bridge", -1, ND_FC_BRIDGES - 1, &br)) return NULL;
  if (st->fc) nd_fc_flush(st->fc, (int)br);
  return NULL;
}

static napi_value js_fc_stats(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  napi_value o, v;
  nd_fc_stats z = { 0 };
  const nd_fc_stats *s = st->fc ? nd_fc_stats_of(st->fc) : &z;
  struct { const char *k; double v; } f[] = {
    { "hits", s->hits }, { "misses", s->misses }, { "installs", s->installs },
    { "installRefused", s->install_refused }, { "flushes", s->flushes },
    { "entries", st->fc ? nd_fc_count(st->fc) : 0 },
  };
  CHECK(napi_create_object(env, &o));
  for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
    CHECK(napi_create_double(env, f[i].v, &v));
    CHECK(napi_set_named_property(env, o, f[i].k, v));
  }
  return o;
}

/* ---------- test export ---------- */

/*
 * segmentForTest(vnetHdr, frame, vlanTci = -1, vlanTpid = 0x8100): run one frame
 * through exactly the receive-side fix-ups (segmentation, checksum completion,
 * tag re-insertion) and return the resulting frames as Buffers ([] = dropped).
 * Uses a private arena so it never disturbs the live ring.
 */
/*
 * groForTest(frames): offer each complete frame to a TAP's coalescing (tap_gro.c) as
 * one batch from the underlay would, writing the refused ones as send does, and
 * return what the device got, in order, each with its 10-byte virtio_net_hdr. The
 * "device" is a SOCK_SEQPACKET socketpair, which keeps write boundaries.
 */
static void gro_test_drain(napi_env env, int fd, uint8_t *buf, napi_value arr, uint32_t *count) {
  for (;;) {
    ssize_t r = recv(fd, buf, ND_READ_MAX + ND_VNET_HDR_LEN, MSG_DONTWAIT);
    if (r < 0) return;
    napi_value b;
    void *d;
    if (napi_create_buffer_copy(env, (size_t)r, buf, &d, &b) != napi_ok || napi_set_element(env, arr, (*count)++, b) != napi_ok) return;
  }
}

static napi_value js_gro_for_test(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  size_t argc = 2;
  napi_value argv[2], arr, result = NULL;
  bool isarr = false;
  uint32_t n = 0, count = 0;
  int64_t split = 0;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || napi_is_array(env, argv[0], &isarr) != napi_ok || !isarr) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "netdev: groForTest(frames: Uint8Array[], split?)");
    return NULL;
  }
  napi_valuetype vt = napi_undefined;
  if (argc > 1 && napi_typeof(env, argv[1], &vt) == napi_ok && vt != napi_undefined &&
      !arg_int(env, argv[1], "split", 0, 2147483647.0, &split))
    return NULL;
  CHECK(napi_get_array_length(env, argv[0], &n));
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) { throw_errno(env, "socketpair", "", errno); return NULL; }
  int big = 4 << 20;
  setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
  setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  nd_gro *g = nd_gro_new();
  uint8_t *rbuf = malloc(ND_READ_MAX + ND_VNET_HDR_LEN);
  if (!g || !rbuf) { napi_throw_error(env, "ENOMEM", "netdev: out of memory"); goto out; }
  if (napi_create_array(env, &arr) != napi_ok) goto out;
  for (uint32_t i = 0; i < n; i++) {
    napi_value e;
    uint8_t *f;
    size_t fl;
    if (napi_get_element(env, argv[0], i, &e) != napi_ok || !arg_bytes(env, e, "frame", &f, &fl)) goto out;
    /* In two pieces when split is inside the frame, as the bridge sends a frame whose tag it drops. */
    struct iovec iov[3] = { { (void *)zero_vnet, ND_VNET_HDR_LEN }, { f, fl }, { NULL, 0 } };
    int np = 1;
    if (split > 0 && (size_t)split < fl) {
      iov[1].iov_len = (size_t)split;
      iov[2] = (struct iovec){ f + split, fl - (size_t)split };
      np = 2;
    }
    if (!nd_gro_offer(g, sv[0], iov + 1, np, &st->stats)) do_writev(sv[0], iov, np + 1);
    gro_test_drain(env, sv[1], rbuf, arr, &count);
  }
  nd_gro_flush(g, sv[0], &st->stats);
  gro_test_drain(env, sv[1], rbuf, arr, &count);
  result = arr;
out:
  nd_gro_free(g);
  free(rbuf);
  close(sv[0]);
  close(sv[1]);
  return result;
}

static napi_value js_segment_for_test(napi_env env, napi_callback_info info) {
  nd_state *st = get_state(env);
  size_t argc = 4, hl, fl;
  napi_value argv[4], arr;
  uint8_t *hdr, *frame;
  int64_t tci = -1, tpid = 0x8100;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) { napi_throw_type_error(env, "ERR_MISSING_ARGS", "netdev: segmentForTest(vnetHdr, frame)"); return NULL; }
  if (!arg_bytes(env, argv[0], "vnetHdr", &hdr, &hl) || !arg_bytes(env, argv[1], "frame", &frame, &fl)) return NULL;
  if (argc > 2 && !arg_int(env, argv[2], "vlanTci", -1, 65535, &tci)) return NULL;
  if (argc > 3 && !arg_int(env, argv[3], "vlanTpid", 0, 65535, &tpid)) return NULL;
  if (hl != ND_VNET_HDR_LEN || fl > ND_READ_MAX) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "netdev: vnetHdr must be 10 bytes and frame at most 65664");
    return NULL;
  }
  nd_vnet v;
  nd_vlan vlan = { tci >= 0, (uint16_t)tpid, (uint16_t)(tci < 0 ? 0 : tci) };
  nd_vnet_decode(&v, hdr);

  const size_t cap = 1u << 20;
  uint8_t *arena = malloc(cap), *gbuf = malloc(ND_READ_MAX);
  int32_t *offs = malloc(ND_RING_MAX_FRAMES * sizeof(int32_t)), *lens = malloc(ND_RING_MAX_FRAMES * sizeof(int32_t));
  napi_value result = NULL;
  nd_gso g;
  memset(&g, 0, sizeof g);
  g.buf = gbuf;
  uint32_t count = 0;
  if (!arena || !gbuf || !offs || !lens) { napi_throw_error(env, "ENOMEM", "netdev: out of memory"); goto out; }
  if (napi_create_array(env, &arr) != napi_ok) goto out;

  nd_out o = { arena, cap, 0, offs, lens, 0, ND_RING_MAX_FRAMES, INT64_MAX, false, false };
  if (v.gso_type != VNET_GSO_NONE) {
    if (nd_gso_prepare(&g, frame, fl, &v, &vlan) < 0) { st->stats.gso_dropped++; result = arr; goto out; }
    st->stats.gso_segmented++;
  } else {
    if (fl < 14) { st->stats.rx_dropped++; result = arr; goto out; }
    memcpy(arena + ND_RX_HEADROOM, frame, fl);
    if (v.flags & VNET_F_NEEDS_CSUM) {
      if (nd_csum_complete(arena + ND_RX_HEADROOM, fl, &v) < 0) { st->stats.rx_dropped++; result = arr; goto out; }
      st->stats.csum_filled++;
    }
    nd_out_commit(&o, 0, fl, &vlan, &st->stats);
  }
  for (;;) {
    if (g.active) nd_gso_emit(&g, &o, &st->stats);
    for (int i = 0; i < o.n; i++) {
      napi_value b;
      void *d;
      if (napi_create_buffer_copy(env, (size_t)o.lens[i], arena + o.offs[i], &d, &b) != napi_ok ||
          napi_set_element(env, arr, count++, b) != napi_ok) goto out;
    }
    if (!g.active) break;
    o.n = 0;
    o.pos = 0;
  }
  result = arr;
out:
  free(arena); free(gbuf); free(offs); free(lens);
  return result;
}

/*
 * fairServeForTest(state, primary, lens, count): one service of a synthetic port by
 * the read loop's scheduler, as service() does it: `state` is a Float64Array
 * [quantum, deficit, backlogged] or [quantum, deficit, backlogged, frames] (frames:
 * 1 for the frame share) updated in place, lens[0..count) the lengths of the
 * frames waiting. Returns how many of them this service reads.
 */
static napi_value js_fair_serve_for_test(napi_env env, napi_callback_info info) {
  size_t argc = 4, bl, ll;
  napi_value argv[4], out;
  uint8_t *sb, *lb;
  bool primary = false;
  int64_t count;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4 || !arg_bytes(env, argv[0], "state", &sb, &bl) || napi_get_value_bool(env, argv[1], &primary) != napi_ok ||
      !arg_bytes(env, argv[2], "lens", &lb, &ll) || !arg_int(env, argv[3], "count", 0, 1 << 20, &count) ||
      (bl != 3 * sizeof(double) && bl != 4 * sizeof(double)) || (size_t)count * sizeof(int32_t) > ll) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "netdev: fairServeForTest(Float64Array(3|4), primary, Int32Array, count)");
    return NULL;
  }
  double st3[4] = { 0, 0, 0, 0 };
  memcpy(st3, sb, bl);
  nd_fair f = { (int64_t)st3[0], (int64_t)st3[1], st3[2] != 0, st3[3] != 0 };
  int32_t taken = 0;
  int64_t budget = nd_fair_begin(&f, primary);
  if (budget <= 0) {
    if (primary) nd_fair_end(&f, budget, true);
  } else {
    nd_out o;
    memset(&o, 0, sizeof o);
    o.budget = budget;
    o.frames = f.frames;
    while (taken < count && o.budget > 0) {
      int32_t len;
      memcpy(&len, lb + (size_t)taken * sizeof len, sizeof len);
      nd_fair_charge(&o, (size_t)len);
      taken++;
    }
    nd_fair_end(&f, o.budget, taken < count);
  }
  st3[0] = (double)f.quantum;
  st3[1] = (double)f.deficit;
  st3[2] = f.backlogged ? 1 : 0;
  memcpy(sb, st3, bl);
  CHECK(napi_create_int32(env, taken, &out));
  return out;
}

/* ---------- lifecycle ---------- */

static void teardown_step(nd_state *st) {
  if (--st->closing > 0) return;
  napi_remove_async_cleanup_hook(st->cleanup);
  free(st->gso.buf);
  free(st->tx_gso.buf);
  nd_vxtx_free(st->vxtx);
  nd_fc_free(st->fc);
  nd_ur_free(st->ur);
  free(st->fd_ids);
  free(st->table);
  free(st);
}

static void on_teardown_closed(uv_handle_t *p) {
  nd_state *st = ((nd_handle *)p)->st;
  free(p);
  teardown_step(st);
}

static void on_timer_closed(uv_handle_t *t) { teardown_step(t->data); }

/* Environment teardown (worker exit, process exit): close what this env opened. */
static void on_env_cleanup(napi_async_cleanup_hook_handle hh, void *arg) {
  nd_state *st = arg;
  st->closing = 1;
  for (int i = 0; i < ND_MAX_HANDLES; i++) {
    nd_handle *h = st->table[i];
    if (!h) continue;
    st->table[i] = NULL;
    if (h->polling) uv_poll_stop(&h->poll);
    close(h->fd);
    if (h->poll_inited) {
      st->closing++;
      uv_close((uv_handle_t *)&h->poll, on_teardown_closed);
    } else {
      free(h);
    }
  }
  if (st->timer_inited) {
    st->closing++;
    uv_close((uv_handle_t *)&st->deferred_timer, on_timer_closed);
  }
  if (st->prep_inited) {
    st->closing++;
    uv_close((uv_handle_t *)&st->turn_prep, on_timer_closed);
  }
  if (st->check_inited) {
    st->closing += 2;
    uv_close((uv_handle_t *)&st->hp_check, on_timer_closed);
    uv_close((uv_handle_t *)&st->hp_idle, on_timer_closed);
  }
  if (st->yield_loadavg_fd >= 0) close(st->yield_loadavg_fd);
  st->yield_loadavg_fd = -1;
  if (st->psi_fd >= 0) close(st->psi_fd);
  st->psi_fd = -1;
  if (st->sparse_ep >= 0) close(st->sparse_ep);
  st->sparse_ep = -1;
  teardown_step(st);
}

NAPI_MODULE_INIT() {
  nd_state *st = calloc(1, sizeof *st);
  if (!st || !(st->table = calloc(ND_MAX_HANDLES, sizeof *st->table))) {
    free(st);
    napi_throw_error(env, "ENOMEM", "netdev: out of memory");
    return NULL;
  }
  st->env = env;
  st->sparse_ep = -1;
  st->psi_fd = -2; /* not opened yet */
  st->yield_loadavg_fd = -1;
  nd_hp_configure(&st->hp, 0, 200 * 1000, 0); /* off; the daemon's default budget (config.ts) */
  if (napi_get_uv_event_loop(env, &st->loop) != napi_ok ||
      napi_set_instance_data(env, st, NULL, NULL) != napi_ok ||
      napi_add_async_cleanup_hook(env, on_env_cleanup, st, &st->cleanup) != napi_ok) {
    free(st->table);
    free(st);
    napi_throw_error(env, NULL, "netdev: environment setup failed");
    return NULL;
  }
  /* The turn yield (issue 17's ping tail): the daemon sets it (setTurnYield, config
   * turnYieldUs); VSWITCH_TURN_YIELD picks another mode for bench experiments and
   * VSWITCH_TURN_YIELD_US turns it on at load for the addon's own tests. */
  const char *m = getenv("VSWITCH_TURN_YIELD");
  st->yield_mode = !m || !*m || strcmp(m, "contended") == 0 ? ND_YIELD_CONTENDED
    : strcmp(m, "sleep") == 0 ? ND_YIELD_SLEEP : strcmp(m, "nap") == 0 ? ND_YIELD_NAP : ND_YIELD_YIELD;
  /* nap: the sleep with this (the loop's) thread's timer slack at 1 us instead of 50 us,
   * so a turn that finds nobody else to run idles ~1 us, not ~55 (every other timer of
   * the thread, the loop's poll timeouts, gets the same slack). */
  if (st->yield_mode == ND_YIELD_NAP) prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
  const char *ya = getenv("VSWITCH_TURN_YIELD_AFTER");
  st->yield_any = ya && strcmp(ya, "any") == 0;
  const char *ye = getenv("VSWITCH_TURN_YIELD_US");
  if (ye && *ye) {
    unsigned long us = strtoul(ye, NULL, 10);
    if (us > 0 && us <= 1000000) turn_yield_configure(st, us);
  }

  napi_property_descriptor props[] = {
#define FN(name, fn) { name, NULL, fn, NULL, NULL, NULL, napi_enumerable, NULL }
    FN("ring", js_ring),
    FN("monotonicMs", js_monotonic_ms),
    FN("openTap", js_open_tap),
    FN("setPersist", js_set_persist),
    FN("notify", js_notify),
    FN("openPacket", js_open_packet),
    FN("openUdp", js_open_udp),
    FN("openRawIp", js_open_raw_ip),
    FN("sendIp3", js_send_ip3),
    FN("sendVxlan", js_send_vxlan),
    FN("sendVxlan6", js_send_vxlan6),
    FN("queueIp3", js_queue_ip3),
    FN("flushIp", js_flush_ip),
    FN("vxlanBuildForTest", js_vxlan_build_for_test),
    FN("openUdp6", js_open_udp6),
    FN("openRawIp6", js_open_raw_ip6),
    FN("sendIp6x3", js_send_ip6x3),
    FN("queueIp6x3", js_queue_ip6x3),
    FN("start", js_start),
    FN("followUp", js_follow_up),
    FN("stop", js_stop),
    FN("send", js_send),
    FN("send2", js_send2),
    FN("sendRun", js_send_run),
    FN("sendVnet", js_send_vnet),
    FN("send2Vnet", js_send2_vnet),
    FN("txScratch", js_tx_scratch),
    FN("segment", js_segment),
    FN("close", js_close),
    FN("setLinkUp", js_set_link_up),
    FN("ifIndex", js_if_index),
    FN("setsid", js_setsid),
    FN("stats", js_stats),
    FN("segmentForTest", js_segment_for_test),
    FN("setQuantum", js_set_quantum),
    FN("fairFull", js_fair_full),
    FN("setSparse", js_set_sparse),
    FN("setTapGro", js_set_tap_gro),
    FN("setUdpGro", js_set_udp_gro),
    FN("setUdpRecvTos", js_set_udp_recv_tos),
    FN("setUdpGso", js_set_udp_gso),
    FN("groForTest", js_gro_for_test),
    FN("fairServeForTest", js_fair_serve_for_test),
    FN("flowCacheGenerations", js_fc_generations),
    FN("flowCacheInstall", js_fc_install),
    FN("flowCacheProbeForTest", js_fc_probe_for_test),
    FN("flowCacheFold", js_fc_fold),
    FN("flowCacheFlush", js_fc_flush),
    FN("flowCacheStats", js_fc_stats),
    FN("socketRcvbuf", js_socket_rcvbuf),
    FN("setPollBeforeSleep", js_set_poll_before_sleep),
    FN("pollBeforeSleepStats", js_poll_before_sleep_stats),
    FN("pollBeforeSleepForTest", js_poll_before_sleep_for_test),
    FN("setTapWriteBatch", js_set_tap_write_batch),
    FN("setTurnYield", js_set_turn_yield),
#undef FN
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
