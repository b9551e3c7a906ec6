/*
 * Fair share of the read loop: deficit round robin over the ports that have
 * frames waiting, so a port that floods gets its share of each round and no more,
 * and a quiet port's frame waits at most one round.
 *
 * Model: a round is one turn of the event loop. libuv's poll is level-triggered, so
 * in each turn every readable handle is serviced once (on_poll, in epoll's order);
 * a handle left with frames in its queue is readable again next turn. That is the
 * round robin; this file bounds how much one service may read. Each handle has a
 * quantum (bytes, per bridge: `readQuantum`) and a deficit:
 *  - a handle that drained its queue last time (idle, or new) starts the service
 *    with one quantum: an idle port banks no credit;
 *  - a handle still backlogged gets one more quantum per round (its own poll), on
 *    top of what it overspent last time (debt carries over; unspent credit does not);
 *  - the drain stops once the budget is spent; the frame that crosses it is read
 *    whole (a frame's size is known only once read), so a round's overshoot is at
 *    most one frame, paid back from the next round's quantum.
 * Follow-up reads (addon.c, on_poll: the handles a batch wrote to, read at once for
 * their reply) serve only handles that are not backlogged: a backlogged handle
 * waits for its own poll, so follow-ups cannot hand a flooding port extra rounds.
 *
 * Cost unit: bytes, with each frame charged ND_FAIR_FRAME_COST on top of its
 * length. Frames alone would let a TSO sender move 64 KB for the price of a
 * 64-byte frame; bytes alone would let a 64-byte flood take ~1000 frames for one
 * super-frame. The switch's cost is CPU, which is mostly per frame for small ones
 * (a TAP read and the write that runs the receiving stack, ~4.3 us) and per byte
 * for large ones (a 62 KB super-frame ~21 us: ~0.27 ns/byte), so one frame's fixed
 * cost is worth ~16 KB (research/node-dataplane.md, variant c-n).
 *
 * The frame share (nd_fair.frames, a bridge's `readShare: frames`) charges every
 * frame 1 and counts the quantum in frames, whatever their size, as OVS's userspace
 * datapath does (up to 32 packets per rx queue per pass): a TSO sender's 64 KB
 * super-frame then costs what a 64-byte frame does, which gives a TCP stream
 * competing with a flood of tiny frames 3-5x the CPU the byte charge gives it, and
 * a flood the same number of frames per round as any other port. A UDP GRO burst
 * costs its segments (udp_gro.c). bench/README.md "Fair share" has the runs.
 *
 * Quantum 0 turns the scheduler off for the handle: every service drains until
 * EAGAIN or the ring is full, as before it existed.
 *
 * Sparse first (addon.c sparse_first, a bridge's `readSparse`): the order within a
 * round. Without it the round serves handles in epoll's order, so a frame reaching an
 * idle port while a flooder is being served waits for the next turn and possibly
 * behind the flooder's share again; with it, a backlogged handle's service is preceded
 * by those of the sparse handles that are readable and were not backlogged (DRR++'s
 * new-flow list). The deficits here are unchanged by it: an early service is an
 * ordinary service of a non-backlogged handle, and the same turn's own poll of that
 * handle is then a follow-up (no second quantum).
 */
#include "netdev.h"

int64_t nd_fair_begin(nd_fair *f, bool primary) {
  if (f->quantum <= 0) return INT64_MAX;
  if (!f->backlogged) f->deficit = f->quantum;
  else if (primary) f->deficit = (f->deficit < 0 ? f->deficit : 0) + f->quantum;
  else return 0;
  return f->deficit;
}

void nd_fair_end(nd_fair *f, int64_t left, bool more) {
  if (f->quantum <= 0) {
    f->backlogged = false;
    f->deficit = 0;
    return;
  }
  f->backlogged = more;
  f->deficit = more ? left : 0;
}
