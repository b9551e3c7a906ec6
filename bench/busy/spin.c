/* spin: a CPU-bound load of normal priority, the stand-in for a hypervisor's
 * busy VMs in bench/run.sh --busy.
 *
 *   spin DUTY_PERCENT [PERIOD_US]
 *
 * DUTY 100 spins without pause (one busy vCPU). Below 100 it spins DUTY % of
 * each period and sleeps the rest (a vCPU that is half busy). Each period's
 * length is drawn in [PERIOD/2, 3*PERIOD/2) so the load cannot phase-lock with
 * a periodic measurement (ping every 10 ms): a fixed period would put every
 * ping in the same phase of the spinner and measure either always-busy or
 * always-idle. Spinning is a loop on clock_gettime (vDSO, no system call), so
 * the process stays runnable in user space like a guest's busy loop; it never
 * yields on its own.
 * On SIGTERM/SIGINT it prints "spin cpu_s=X wall_s=Y" to stdout: the CPU it
 * actually got, which tells how hard it competed with the switch.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static volatile sig_atomic_t stop;
static void on_signal(int s) { (void)s; stop = 1; }

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: spin DUTY_PERCENT [PERIOD_US]\n"); return 2; }
  double duty = atof(argv[1]) / 100.0;
  double period = (argc > 2 ? atof(argv[2]) : 10000) / 1e6;
  if (duty <= 0 || duty > 1 || period <= 0) { fprintf(stderr, "spin: DUTY in (0,100], PERIOD_US > 0\n"); return 2; }
  struct sigaction sa = { .sa_handler = on_signal };
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  srand48((long)(now() * 1e6));
  double t0 = now();
  while (!stop) {
    double p = period * (0.5 + drand48());
    double end = now() + (duty >= 1 ? 0.1 : p * duty);
    while (!stop && now() < end) { }
    if (duty < 1 && !stop) {
      double rest = p * (1 - duty);
      struct timespec ts = { (time_t)rest, (long)((rest - (time_t)rest) * 1e9) };
      nanosleep(&ts, NULL);
    }
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("spin cpu_s=%.2f wall_s=%.2f\n",
         ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6,
         now() - t0);
  return 0;
}
