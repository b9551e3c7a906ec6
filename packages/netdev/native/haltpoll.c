/*
 * The adaptive window of poll before sleep (haltpoll.h): KVM's halt-polling rules
 * (virt/kvm/kvm_main.c grow_halt_poll_ns / shrink_halt_poll_ns, halt_poll_ns_shrink
 * 2), plus a CPU budget per second KVM does not have: a daemon beside its VMs must
 * not take a core from them because a peer pings it every few microseconds.
 */
#include "haltpoll.h"

void nd_hp_configure(nd_hp *hp, uint32_t max_us, uint32_t budget_us) {
  if (max_us > ND_HP_MAX_US) max_us = ND_HP_MAX_US;
  hp->max_ns = (uint64_t)max_us * 1000;
  hp->budget_ns = (uint64_t)budget_us * 1000;
  if (hp->window_ns > hp->max_ns) hp->window_ns = hp->max_ns;
}

uint64_t nd_hp_allowance(nd_hp *hp, uint64_t now) {
  if (hp->max_ns == 0 || hp->window_ns == 0) return 0;
  if (now - hp->period_start >= ND_HP_PERIOD_NS) {
    hp->period_start = now;
    hp->period_spent = 0;
    hp->held = false;
  }
  if (hp->held || hp->period_spent >= hp->budget_ns) {
    hp->over_budget++;
    return 0;
  }
  uint64_t left = hp->budget_ns - hp->period_spent;
  return hp->window_ns < left ? hp->window_ns : left;
}

void nd_hp_polled(nd_hp *hp, uint64_t spun, bool hit, bool preempted) {
  hp->spins++;
  hp->spin_ns += spun;
  hp->period_spent += spun;
  if (hit) hp->hits++;
  else hp->misses++;
  if (preempted) {
    hp->preempted++;
    if (hp->no_hold) return;
    hp->window_ns = 0;
    hp->held = true;
  }
}

static void grow(nd_hp *hp) {
  uint64_t w = hp->window_ns * 2;
  if (w < ND_HP_START_NS) w = ND_HP_START_NS;
  if (w > hp->max_ns) w = hp->max_ns;
  if (w != hp->window_ns) hp->grows++;
  hp->window_ns = w;
}

static void shrink(nd_hp *hp) {
  uint64_t w = hp->window_ns / 2;
  if (w < ND_HP_START_NS) w = 0; /* as KVM since 2021: no windows too short to catch anything */
  hp->window_ns = w;
  hp->shrinks++;
}

void nd_hp_woke(nd_hp *hp, uint64_t block, bool by_handle) {
  if (hp->max_ns == 0) {
    hp->window_ns = 0;
    return;
  }
  if (block > hp->max_ns) {
    if (hp->window_ns > 0) shrink(hp); /* polled for nothing, then slept long anyway */
  } else if (by_handle && hp->window_ns < hp->max_ns) {
    grow(hp); /* a longer poll would have caught it */
  }
}
