# Sourced by every bench script that runs ../shared/bench/anchors.sh's harness (as a child
# or sourced with zero rounds): anchors.sh runs one at a time machine-wide (its names are
# fixed) and fails at once if another run holds /tmp/bA.anchors.lock. bench_lock waits for
# that lock instead and holds it on fd 8 until the script exits, so a bench queued behind
# another starts when it ends, and no other waiter takes the lock between two of our
# configurations (waiting, then letting anchors.sh take the lock itself, lost that race to
# the other waiters nearly every time).
#
# anchors.sh takes the lock with `flock -n 9` on its own open of the file, which conflicts
# with our hold (flock(2) locks belong to an open file description). The exported function
# answers exactly that call, in this shell and in the anchors.sh children it starts; every
# other flock call goes to the command.
#
# Usage: . bench/lock.sh; bench_lock NAME   (NAME: the script, for the messages)
# BENCH_LOCK_WAIT_S: how long to wait (default 7200 s).
bench_lock() {
  local wait=${BENCH_LOCK_WAIT_S:-7200}
  exec 8>/tmp/bA.anchors.lock
  if ! command flock -n 8; then
    echo "$1: waiting up to $wait s for the anchors lock (another bench holds /tmp/bA.anchors.lock)" >&2
    command flock -w "$wait" 8 || { echo "$1: the anchors lock stayed held for $wait s" >&2; exit 1; }
    echo "$1: got the anchors lock" >&2
  fi
  flock() { if [ "$*" = "-n 9" ]; then return 0; fi; command flock "$@"; }
  export -f flock
}
