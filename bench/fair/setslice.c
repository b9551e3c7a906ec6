/* setslice NS TID...: give each thread an EEVDF slice of NS nanoseconds (sched_attr's
 * sched_runtime for a SCHED_OTHER task, Linux >= 6.12), keeping its policy and nice.
 * run.sh's T~US topologies; util-linux's chrt here cannot set it. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct attr {
  uint32_t size, policy;
  uint64_t flags;
  int32_t nice;
  uint32_t priority;
  uint64_t runtime, deadline, period;
  uint32_t util_min, util_max;
};

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: setslice NS TID...\n"); return 2; }
  uint64_t ns = strtoull(argv[1], NULL, 10);
  int rc = 0;
  for (int i = 2; i < argc; i++) {
    int tid = atoi(argv[i]);
    struct attr a;
    memset(&a, 0, sizeof a);
    if (syscall(SYS_sched_getattr, tid, &a, sizeof a, 0)) { fprintf(stderr, "setslice: %d: %s\n", tid, strerror(errno)); rc = 1; continue; }
    a.size = sizeof a;
    a.runtime = ns;
    a.flags = 0;
    if (syscall(SYS_sched_setattr, tid, &a, 0)) { fprintf(stderr, "setslice: %d: %s\n", tid, strerror(errno)); rc = 1; }
  }
  return rc;
}
