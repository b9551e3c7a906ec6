#!/usr/bin/env bash
# bench/uring/run.sh: what a TAP write and a TAP read cost per 64-byte frame, one
# syscall per frame against io_uring batches (bench/uring/tapio.c says how), in one run:
# a TAP in a namespace of its own (per-run names, removed on exit), ROUNDS rounds, each
# mode in turn per round; writes to a MAC the namespace drops (`drop`) and to its
# address's closed UDP port (`udp`, as the main bench's flood), reads of a backlog the
# namespace queued on the TAP beforehand.
#
#   bash bench/uring/run.sh [-n FRAMES] [-r ROUNDS] [-o OUT.tsv] [-p PHASES] [MODE ...]
#     default: -n 200000 (writes; reads: 16384 a round), -r 3, PHASES "drop udp read",
#     MODEs "sys u1 u16 u64 u1f u16f u64f"
#
# Prints each row (CPU ns per frame of every thread of the process, io-wq workers'
# share, the share completed inline), then medians per mode and their ratio to `sys`
# (the control) in the same run, with the load average before and after. Holds the
# anchors lock (bench/lock.sh) so no other bench shares the CPU. Needs root and gcc.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
n=200000 rn=16384 rounds=3 out="" phases="drop udp read"
while getopts "n:r:o:p:" o; do case $o in n) n=$OPTARG ;; r) rounds=$OPTARG ;; o) out=$OPTARG ;; p) phases=$OPTARG ;; *) exit 2 ;; esac; done
shift $((OPTIND - 1))
modes=${*:-sys u1 u16 u64 u1f u16f u64f}
[ "$(id -u)" = 0 ] || { echo "uring/run.sh: needs root" >&2; exit 1; }
. "$here/../lock.sh"
bench_lock bench/uring/run.sh
dir=$(mktemp -d /tmp/uring.XXXXXX)
ns=urb$$ tap=urt$$
cleanup() { ip netns del "$ns" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
gcc -O2 -Wall -o "$dir/tapio" "$here/tapio.c"
ip netns add "$ns"
setup="ip link set \$TAP netns $ns && ip netns exec $ns sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
 && ip -n $ns link set lo up && ip -n $ns link set \$TAP address 02:00:00:77:00:02 txqueuelen $((rn + 4096)) up \
 && ip -n $ns addr add 10.77.0.2/24 dev \$TAP && ip -n $ns neigh add 10.77.0.1 lladdr 02:00:00:77:00:01 dev \$TAP nud permanent"
echo "# uptime before: $(uptime)"
echo "# $(uname -r), io_uring_disabled=$(cat /proc/sys/kernel/io_uring_disabled), frames $n (reads $rn), rounds $rounds, modes $modes"
: > "$dir/all.tsv"
for p in $phases; do
  if [ "$p" = read ]; then
    # shellcheck disable=SC2086
    "$dir/tapio" read "$tap" "$setup" "ip netns exec $ns $dir/tapio send 10.77.0.1 $rn" "$rn" "$rounds" $modes | tee -a "$dir/all.tsv"
  else
    # shellcheck disable=SC2086
    "$dir/tapio" write "$tap" "$setup" "$p" "$n" "$rounds" $modes | tee -a "$dir/all.tsv"
  fi
  ip netns del "$ns"; ip netns add "$ns"
done
echo "# uptime after: $(uptime)"
[ -n "$out" ] && cp "$dir/all.tsv" "$out"
python3 "$here/summary.py" "$dir/all.tsv"
