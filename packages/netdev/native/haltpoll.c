/*
 * The adaptive window of poll before sleep (haltpoll.h): KVM's halt-polling rules
 * (virt/kvm/kvm_main.c grow_halt_poll_ns / shrink_halt_poll_ns, halt_poll_ns_shrink
 * 2), plus a CPU budget per second KVM does not have: a daemon beside its VMs must
 * not take a core from them because a peer pings it every few microseconds; and a
 * sign of a busy host KVM does not need either (a vCPU's halt poll runs on a CPU the
 * VM owns; the daemon's shares two with the VMs): a preempted poll, and the host's
 * CPU pressure, which says when other tasks wait for a CPU and when they stop.
 */
#include "haltpoll.h"

void nd_hp_configure(nd_hp *hp, uint32_t max_us, uint32_t budget_us, uint32_t busy_permille) {
  if (max_us > ND_HP_MAX_US) max_us = ND_HP_MAX_US;
  if (busy_permille > 1000) busy_permille = 1000;
  hp->max_ns = (uint64_t)max_us * 1000;
  hp->budget_ns = (uint64_t)budget_us * 1000;
  if (hp->window_ns > hp->max_ns) hp->window_ns = hp->max_ns;
  if (hp->busy_permille != busy_permille) {
    hp->busy_permille = busy_permille;
    hp->psi_t = 0;
    hp->held = false;
    hp->hold_pending = false;
    hp->hold_ns = 0;
  }
}

static void start_hold(nd_hp *hp, uint64_t now) {
  hp->hold_ns = hp->hold_ns ? hp->hold_ns * 2 : ND_HP_HOLD_MIN_NS;
  if (hp->hold_ns > ND_HP_PERIOD_NS) hp->hold_ns = ND_HP_PERIOD_NS;
  hp->held = true;
  hp->hold_until = now + hp->hold_ns;
  hp->holds++;
}

/* With the pressure signal: a preempted poll's hold starts, an ended hold ends. */
static void hold_tick(nd_hp *hp, uint64_t now) {
  if (hp->busy_permille == 0) return;
  if (hp->hold_pending) {
    hp->hold_pending = false;
    start_hold(hp, now);
  }
  if (hp->held && now >= hp->hold_until) {
    hp->held = false;
    hp->psi_t = 0; /* judge the next interval polled in, not the hold */
  }
}

bool nd_hp_sample_due(nd_hp *hp, uint64_t now) {
  if (hp->busy_permille == 0) return false;
  hold_tick(hp, now);
  return !hp->held && (hp->psi_t == 0 || now - hp->psi_t >= ND_HP_PSI_INTERVAL_NS);
}

int nd_hp_pressure(nd_hp *hp, uint64_t now, uint64_t total_us) {
  if (hp->psi_t == 0 || now <= hp->psi_t || total_us < hp->psi_total_us) {
    hp->psi_t = now ? now : 1;
    hp->psi_total_us = total_us;
    return -1;
  }
  uint64_t p = (total_us - hp->psi_total_us) * 1000000ull / (now - hp->psi_t); /* us * 1000 / ns * 1000 */
  if (p > 1000) p = 1000;
  hp->psi_t = now;
  hp->psi_total_us = total_us;
  hp->pressure = (uint32_t)p;
  hp->samples++;
  if (p >= hp->busy_permille) {
    hp->busy_samples++;
    start_hold(hp, now);
  } else {
    hp->hold_ns /= 2;
    if (hp->hold_ns < ND_HP_HOLD_MIN_NS) hp->hold_ns = 0;
  }
  return (int)p;
}

uint64_t nd_hp_allowance(nd_hp *hp, uint64_t now) {
  if (hp->max_ns == 0 || hp->window_ns == 0) return 0;
  if (now - hp->period_start >= ND_HP_PERIOD_NS) {
    hp->period_start = now;
    hp->period_spent = 0;
    if (hp->busy_permille == 0) hp->held = false;
  }
  hold_tick(hp, now);
  if (hp->held) {
    hp->host_busy++;
    return 0;
  }
  if (hp->period_spent >= hp->budget_ns) {
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
    if (hp->busy_permille) hp->hold_pending = true;
    else hp->held = true;
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
