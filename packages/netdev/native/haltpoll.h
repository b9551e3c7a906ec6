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

typedef struct nd_hp {
  uint64_t max_ns;      /* the largest window; 0: off */
  uint64_t budget_ns;   /* spinning allowed per period */
  uint64_t window_ns;   /* the current window: 0 until a sleep a poll would have caught */
  uint64_t period_start;/* when the budget's period began (ns, the caller's clock) */
  uint64_t period_spent;/* spun in this period */
  bool held;            /* a poll was preempted: none until the next period */
  bool no_hold;         /* tests only: a preempted poll changes nothing (a loaded test machine preempts often) */
  /* counters */
  uint64_t spins;       /* polls before a sleep */
  uint64_t hits;        /* ... that found work (the sleep was skipped) */
  uint64_t misses;      /* ... that found nothing: the loop slept after */
  uint64_t spin_ns;     /* time spent polling */
  uint64_t over_budget; /* sleeps not polled because the period's budget was spent (or held) */
  uint64_t preempted;   /* polls the scheduler preempted: another thread wanted this CPU */
  uint64_t grows, shrinks;
} nd_hp;

/* Settings: max_us 0 turns it off (the window goes to 0); budget_us per second. */
void nd_hp_configure(nd_hp *hp, uint32_t max_us, uint32_t budget_us);

/* The loop is about to sleep at `now`: how long to poll first (0: do not). */
uint64_t nd_hp_allowance(nd_hp *hp, uint64_t now);

/*
 * A poll of `spun` ns ended, `hit`: it found work; `preempted`: the scheduler took
 * the CPU from it (an involuntary context switch): another thread (a VM's) wanted
 * this CPU, so polling costs it: the window goes to 0 and no poll happens until the
 * next period. On a host with a CPU to spare, nothing preempts a poll.
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
