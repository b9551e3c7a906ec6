/*
 * Poll before sleep (addon.c hp_before_sleep): the adaptive window, as KVM's halt
 * polling (Documentation/virt/kvm/halt-polling.rst). Pure: the caller measures the
 * durations and feeds them in, so the rules are tested without a clock.
 */
#ifndef ND_HALTPOLL_H
#define ND_HALTPOLL_H

#include <stdbool.h>
#include <stdint.h>

#define ND_HP_MAX_US 1000        /* the largest window a setting may ask for */
#define ND_HP_START_NS 10000     /* the first window after a grow from 0 (KVM's halt_poll_ns_grow_start) */
#define ND_HP_PERIOD_NS 1000000000ull /* the CPU budget's period */
#define ND_HP_PSI_INTERVAL_NS 4000000ull /* the host's CPU pressure is read at most this often (addon.c hp_sample) */
#define ND_HP_BUSY_PERMILLE 200  /* the default: polling is judged busy when some task waited for a CPU >= 20 % of an interval it polled in */
#define ND_HP_HOLD_MIN_NS 8000000ull /* the first hold after a busy sign; each further one doubles, up to the period */

typedef struct nd_hp {
  uint64_t max_ns;      /* the largest window; 0: off */
  uint64_t budget_ns;   /* spinning allowed per period */
  uint64_t window_ns;   /* the current window: 0 until a sleep a poll would have caught */
  uint64_t period_start;/* when the budget's period began (ns, the caller's clock) */
  uint64_t period_spent;/* spun in this period */
  bool held;            /* no poll: until the next period (no pressure signal), or until hold_until */
  bool no_hold;         /* tests only: a preempted poll changes nothing (a loaded test machine preempts often) */
  /* The host's CPU pressure (PSI "some": time in which some task waited for a CPU),
   * fed by the caller at most every ND_HP_PSI_INTERVAL_NS (nd_hp_pressure). */
  uint32_t busy_permille; /* busy at or above this share of an interval; 0: no pressure signal (preemption alone, held for the period) */
  uint64_t psi_t;       /* the last sample's time; 0: no baseline (none yet, or a hold since) */
  uint64_t psi_total_us;/* its cumulative stall time */
  uint32_t pressure;    /* the last interval's pressure, per mille */
  bool hold_pending;    /* a poll was preempted: a hold starts at the next allowance (which knows the time) */
  uint64_t hold_ns;     /* the next hold's length / 2 (backoff); 0: the next is ND_HP_HOLD_MIN_NS */
  uint64_t hold_until;  /* with the pressure signal: no poll before this */
  /* counters */
  uint64_t spins;       /* polls before a sleep */
  uint64_t hits;        /* ... that found work (the sleep was skipped) */
  uint64_t misses;      /* ... that found nothing: the loop slept after */
  uint64_t spin_ns;     /* time spent polling */
  uint64_t over_budget; /* sleeps not polled because the period's budget was spent */
  uint64_t host_busy;   /* sleeps not polled because the host was busy: a preempted poll's hold, or the pressure */
  uint64_t preempted;   /* polls the scheduler preempted: another thread wanted this CPU */
  uint64_t samples;     /* pressure intervals judged (nd_hp_pressure) */
  uint64_t busy_samples;/* ... that were busy */
  uint64_t holds;       /* holds started (a preempted poll, a busy interval) */
  uint64_t served;      /* hits served from inside the poll (addon.c), not by a return to libuv */
  uint64_t grows, shrinks;
} nd_hp;

/* Settings: max_us 0 turns it off (the window goes to 0); budget_us per second;
 * busy_permille: the pressure that holds polling (0: no pressure signal). */
void nd_hp_configure(nd_hp *hp, uint32_t max_us, uint32_t budget_us, uint32_t busy_permille);

/* Whether a pressure sample is due at `now` (the caller then reads it: nd_hp_pressure): not while held. */
bool nd_hp_sample_due(nd_hp *hp, uint64_t now);

/*
 * A pressure sample: `total_us`, the host's cumulative CPU stall time (PSI some
 * total) at `now`, taken while polling is allowed (the caller asks nd_hp_sample_due).
 * The interval since the previous sample is busy if its stall share is at least
 * busy_permille: polling made other tasks wait (or they waited anyway), so it holds
 * for a while (hold_ns, doubling with each busy sign in a row up to the period);
 * a calm interval halves the next hold. Only intervals in which polling was allowed
 * are judged: a ping-pong's own wake-ups count as stall (a woken task waits for its
 * CPU to leave idle), and polling is what removes them, so the pressure while held
 * says nothing about the pressure while polling. The first sample after a hold (or
 * ever) only sets the baseline. Returns the interval's pressure (per mille), -1 for
 * a baseline.
 */
int nd_hp_pressure(nd_hp *hp, uint64_t now, uint64_t total_us);

/* The loop is about to sleep at `now`: how long to poll first (0: do not). */
uint64_t nd_hp_allowance(nd_hp *hp, uint64_t now);

/*
 * A poll of `spun` ns ended, `hit`: it found work; `preempted`: the scheduler took
 * the CPU from it (an involuntary context switch): another thread (a VM's) wanted
 * this CPU, so polling costs it: the window goes to 0 and a hold starts, as after a
 * busy interval (without a pressure signal: no poll until the next period). On a
 * host with a CPU to spare, nothing preempts a poll.
 */
void nd_hp_polled(nd_hp *hp, uint64_t spun, bool hit, bool preempted);

/*
 * The loop slept (after a poll that found nothing, or none) and woke after `block`
 * ns in all (poll + sleep); `by_handle`: an addon handle was readable (a poll long
 * enough would have caught it), otherwise a timer or another fd woke it. KVM's rules:
 * a short sleep woken by a handle grows the window (doubles, from ND_HP_START_NS, up
 * to the max); a sleep longer than the max shrinks it (halves; below the start: 0).
 */
void nd_hp_woke(nd_hp *hp, uint64_t block, bool by_handle);

#endif
