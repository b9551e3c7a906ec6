#!/usr/bin/env bash
# bench/latency/trace.sh: one ping-pong's timeline inside the switch process,
# from the kernel's own tracepoints (issue 19, item 2).
#
#   bash bench/latency/trace.sh [-n PINGS] [-W SECONDS] [-N NICE] [-P] [--busy one|half] [IMPL ...]
#
# For each IMPL (ours cfwd jsfwd vde, as bench/latency/run.sh; jsfwd2: jsfwd
# with two JS entries per round trip, as before followUp; base: ours with
# BASE_JS=<another tree>/packages/cli/dist/main.js), in namespaces
# of its own (per-run names): two VMs, the forwarder between their TAPs, then
# busybox ping -c PINGS -i 0.01 while `perf record -a` takes, for the
# forwarder's main thread only (tracepoint filters): sched_wakeup,
# sched_switch, and every system call's entry and exit. timeline.py cuts the
# trace at each wakeup (one wakeup = one round trip: request and reply) and
# prints the medians of its stretches up to the reply's write: runqueue wait
# (woken -> on a CPU), the kernel's return from epoll/poll, user time (libuv,
# N-API, V8, the pipeline; a C switch's loop), the reads, the writes (they run
# the receiving VM's stack), and per frame the user time from a read's return
# to the next write. Tracing costs about a microsecond per system call and
# adds to every IMPL alike.
# -W SECONDS: before the pings, TCP (iperf3, 1 stream) then 64-byte UDP for
# SECONDS each, as the main bench does before its pings: V8 has then optimized
# the pipeline (TurboFan); without it the pings run the code V8 compiled for
# a few frames (baseline code, inline-cache stubs), as a quiet port does.
# -N NICE: run the forwarder at that niceness (e.g. -10, what ovs-ctl gives
# ovs-vswitchd): does priority shorten the runqueue wait on a busy host?
# -P: instead of the tracepoints, sample the forwarder's CPU (perf record -g,
# 20 kHz; node runs with --perf-basic-prof so JIT frames have names) and print
# where its user and kernel time goes (perf report, self time, top symbols),
# then the main thread's CPU per round trip by object (kernel, node, libc, addon);
# TRACE_CALLERS=sym,sym: also the call chains into those symbols.
# ours runs the flow cache as configured by default (on); ours-nofc: with flowCache: false.
# ours-n, ours-fcn: ours / ours-fc with node --no-memory-reducer (V8's memory reducer runs
# full collections ~8 s after a mark-compact when the heap looks idle, which a
# daemon whose frames never enter JS always does: 10-30 ms stalls; README
# "Flow cache and one JS entry per wakeup"); since the installed daemon runs with
# it (README "The daemon's heap"), ours, ours-fc and base do too. TRACE_NODE_ARGS: more node
# arguments for the vswitch daemons (e.g. --trace-gc: its last collections are
# printed after each IMPL's table).
# -S SECONDS: instead of the pings, sockperf's UDP ping-pong (64-byte messages,
# back to back, as bench/run.sh's sockperf) for SECONDS: a user-space server
# replies, so a request and its reply usually take two wakeups of the switch
# (timeline.py's episodes are then half round trips); -P's per-round-trip
# figures use sockperf's own count of replies.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "trace.sh: needs root" >&2; exit 1; }
command -v perf >/dev/null || { echo "trace.sh: needs perf (linux-perf)" >&2; exit 1; }
pings=300 busy="" prof=0 warm=0 nice=0 sp=0
args=()
for a in "$@"; do [ "$a" = --busy ] && args+=(-b) || args+=("$a"); done
set -- "${args[@]}"
while getopts "n:b:W:N:S:Ph" opt; do
  case $opt in
    N) nice=$OPTARG ;;
    W) warm=$OPTARG ;;
    P) prof=1 ;;
    S) sp=$OPTARG ;;
    n) pings=$OPTARG ;;
    b) busy=$OPTARG ;;
    h) sed -n '2,/^set -eu/p' "$0" | sed 's/^# \{0,1\}//' | head -n -1; exit 0 ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
impls=${*:-ours cfwd jsfwd vde}

p=vlt$$
out=$(mktemp -d /tmp/vswitch-trace.XXXXXX)
. "$repo/bench/busy/lib.sh"
busy_build "$out"
gcc -O2 -o "$out/cfwd.bin" "$here/cfwd.c"
sub=$((RANDOM % 200 + 20))
ip1=10.79.$sub.1 ip2=10.79.$sub.2
SW=""
cleanup() {
  for q in "${BUSY_PIDS[@]}"; do kill "$q" 2>/dev/null; done
  [ -n "$SW" ] && kill "$SW" 2>/dev/null
  for n in ${p}a ${p}b ${p}s; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The measured traffic: pings, or (-S) sockperf's ping-pong; prints the client's output.
load() {
  if [ "$sp" = 0 ]; then ip netns exec ${p}a busybox ping -c "$pings" -i 0.01 -W 2 $ip2; return; fi
  ip netns exec ${p}b sockperf sr -i $ip2 -p 11111 >/dev/null 2>&1 & local srv=$!
  for _ in $(seq 50); do ip netns exec ${p}b ss -Hlnu 'sport = :11111' | grep -q . && break; sleep 0.1; done
  timeout $((sp + 15)) ip netns exec ${p}a sockperf pp -i $ip2 -p 11111 -m 64 -t "$sp" --full-rtt 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | grep -E 'Summary|ReceivedMessages|avg-rtt|percentile (99|50).000'
  kill $srv 2>/dev/null; wait $srv 2>/dev/null || true
}
# Round trips the load made (for -P's per-round-trip figures).
trips() { if [ "$sp" = 0 ]; then echo "$pings"; else grep -o 'ReceivedMessages=[0-9]*' "$1" | head -1 | cut -d= -f2; fi; }

# node's arguments for the vswitch daemons (TRACE_NODE_ARGS, e.g. --trace-gc; -P adds --perf-basic-prof)
nargs="${TRACE_NODE_ARGS:-}"; [ $prof = 1 ] && nargs+=" --perf-basic-prof"

attached() { grep -qs -P "^iff:\t$1\$" /proc/"$2"/fdinfo/*; }

for i in $impls; do
  for n in ${p}a ${p}b ${p}s; do ip netns add "$n"; ip -n "$n" link set lo up; done
  d=$out/$i; mkdir -p "$d"
  case $i in
    # (in $d: with -P, node leaves its isolate-*-v8.log files in its cwd)
    ours) (cd "$d" && VSWITCH_BENCH_NODE_ARGS="--no-memory-reducer $nargs" exec ip netns exec ${p}s bash "$repo/bench/ours.sh" "$d" ${p}t1 ${p}t2 >"$d/log" 2>&1) & SW=$! ;;
    cfwd) ip netns exec ${p}s "$out/cfwd.bin" ${p}t1 ${p}t2 >"$d/log" 2>&1 & SW=$! ;;
    base) (cd "$d" && VSWITCH_BENCH_JS=${BASE_JS:?base needs BASE_JS} VSWITCH_BENCH_NODE_ARGS="--no-memory-reducer $nargs" exec ip netns exec ${p}s bash "$repo/bench/ours.sh" "$d" ${p}t1 ${p}t2 >"$d/log" 2>&1) & SW=$! ;;
    ours-n) (cd "$d" && VSWITCH_BENCH_NODE_ARGS="--no-memory-reducer $nargs" exec ip netns exec ${p}s bash "$repo/bench/ours.sh" "$d" ${p}t1 ${p}t2 >"$d/log" 2>&1) & SW=$! ;;
    ours-fcn) (cd "$d" && VSWITCH_BENCH_FLOWCACHE=true VSWITCH_BENCH_NODE_ARGS="--no-memory-reducer $nargs" exec ip netns exec ${p}s bash "$repo/bench/ours.sh" "$d" ${p}t1 ${p}t2 >"$d/log" 2>&1) & SW=$! ;;
    ours-nofc) (cd "$d" && VSWITCH_BENCH_FLOWCACHE=false VSWITCH_BENCH_NODE_ARGS="--no-memory-reducer $nargs" exec ip netns exec ${p}s bash "$repo/bench/ours.sh" "$d" ${p}t1 ${p}t2 >"$d/log" 2>&1) & SW=$! ;;
    ours-fc) (cd "$d" && VSWITCH_BENCH_FLOWCACHE=true VSWITCH_BENCH_NODE_ARGS="--no-memory-reducer $nargs" exec ip netns exec ${p}s bash "$repo/bench/ours.sh" "$d" ${p}t1 ${p}t2 >"$d/log" 2>&1) & SW=$! ;;
    jsfwd2) (cd "$d" && JSFWD_ENTRIES=2 exec ip netns exec ${p}s node $([ $prof = 1 ] && echo --perf-basic-prof) "$here/jsfwd.mjs" ${p}t1 ${p}t2 >"$d/log" 2>&1) & SW=$! ;;
    jsfwd) (cd "$d" && exec ip netns exec ${p}s node $([ $prof = 1 ] && echo --perf-basic-prof) "$here/jsfwd.mjs" ${p}t1 ${p}t2 >"$d/log" 2>&1) & SW=$! ;;
    vde) ip netns exec ${p}s vde_switch -d -s "$d/ctl" -M "$d/mgmt" -p "$d/pid" -t ${p}t1 -t ${p}t2 >"$d/log" 2>&1
         for _ in $(seq 50); do [ -s "$d/pid" ] && break; sleep 0.1; done; SW=$(cat "$d/pid") ;;
    *) echo "trace.sh: unknown IMPL $i" >&2; exit 2 ;;
  esac
  for t in 1 2; do
    for _ in $(seq 150); do attached ${p}t$t "$SW" && break; sleep 0.1; done
    attached ${p}t$t "$SW" || { echo "trace.sh: $i never opened ${p}t$t" >&2; cat "$d/log" >&2; exit 1; }
  done
  # every thread of the forwarder (node has several)
  [ "$nice" != 0 ] && for t in /proc/"$SW"/task/*; do renice -n "$nice" -p "${t##*/}" >/dev/null; done
  ip -n ${p}s link set ${p}t1 netns ${p}a; ip -n ${p}s link set ${p}t2 netns ${p}b
  ip -n ${p}a addr add $ip1/24 dev ${p}t1; ip -n ${p}a link set ${p}t1 up
  ip -n ${p}b addr add $ip2/24 dev ${p}t2; ip -n ${p}b link set ${p}t2 up
  ip netns exec ${p}a busybox ping -c 5 -i 0.2 -W 2 $ip2 >/dev/null  # ARP, learning, warm-up
  if [ "$warm" != 0 ]; then
    ip netns exec ${p}b iperf3 -s -1 -B $ip2 -p 5201 >/dev/null 2>&1 & srv=$!
    for _ in $(seq 50); do ip netns exec ${p}b ss -Hlnt 'sport = :5201' | grep -q . && break; sleep 0.1; done
    ip netns exec ${p}a iperf3 -c $ip2 -p 5201 -t "$warm" >/dev/null 2>&1 || true
    wait $srv 2>/dev/null || true
    ip netns exec ${p}b iperf3 -s -1 -B $ip2 -p 5201 >/dev/null 2>&1 & srv=$!
    for _ in $(seq 50); do ip netns exec ${p}b ss -Hlnt 'sport = :5201' | grep -q . && break; sleep 0.1; done
    ip netns exec ${p}a iperf3 -c $ip2 -p 5201 -u -l 64 -b 0 -t "$warm" >/dev/null 2>&1 || true
    wait $srv 2>/dev/null || true
  fi
  sleep 1
  [ -n "$busy" ] && busy_start "$busy"
  la=$(cut -d' ' -f1 /proc/loadavg)
  if [ $prof = 1 ]; then
    perf record -q -F 20000 -g -p "$SW" -o "$d/perf.data" -- bash -c "$(declare -f load); p=$p ip2=$ip2 sp=$sp pings=$pings load" >"$d/ping" 2>&1 || true
    n=$(trips "$d/ping"); n=${n:-$pings}
    BUSY_CORES=""
    [ -n "$busy" ] && busy_stop
    echo "## $i (profile)${busy:+ (busy $busy, the load got $BUSY_CORES cores)}, loadavg $la, $(tail -1 "$d/ping")"
    [ "$sp" = 0 ] || cat "$d/ping"
    perf report -i "$d/perf.data" --no-children --sort dso,sym --stdio -g none --percent-limit 0.7 2>/dev/null | grep -v '^#' | grep . | head -45
    # TRACE_CALLERS=sym1,sym2: who calls those symbols (call chains, main thread)
    [ -n "${TRACE_CALLERS:-}" ] && perf report -i "$d/perf.data" --tid "$SW" --no-children --stdio \
      -G --symbols "$TRACE_CALLERS" --percent-limit 0.2 2>/dev/null | grep -v '^#' | grep . | head -120
    # The main thread's CPU by object, in µs per round trip (a sample is 50 µs at
    # 20 kHz): what the loop around the forwarding costs, beside cfwd's and vde's.
    echo "main thread, µs of CPU per round trip by object ($n round trips):"
    perf report -i "$d/perf.data" --tid "$SW" --no-children --sort dso --stdio -g none -n 2>/dev/null |
      awk -v n="$n" '!/^#/ && NF >= 3 { s = $2; $1 = $2 = ""; t += s; printf "  %7.1f  %s\n", s * 50 / n, $0 } END { printf "  %7.1f   total\n", t * 50 / n }'
    kill "$SW" 2>/dev/null || true; wait "$SW" 2>/dev/null || true
    rm -f "/tmp/perf-$SW.map"  # node's --perf-basic-prof symbol map, by its pid
    SW=""
    for n in ${p}a ${p}b ${p}s; do ip netns del "$n" 2>/dev/null || true; done
    continue
  fi
  perf record -q -a -o "$d/perf.data" \
    -e sched:sched_wakeup --filter "pid == $SW" \
    -e sched:sched_switch --filter "prev_pid == $SW || next_pid == $SW" \
    -e raw_syscalls:sys_enter --filter "common_pid == $SW" \
    -e raw_syscalls:sys_exit --filter "common_pid == $SW" \
    -- bash -c "$(declare -f load); p=$p ip2=$ip2 sp=$sp pings=$pings load" >"$d/ping" 2>&1 || true
  BUSY_CORES=""
  [ -n "$busy" ] && busy_stop
  [ "$sp" = 0 ] || cat "$d/ping"
  perf script -i "$d/perf.data" --ns -F tid,time,event,trace 2>/dev/null > "$d/trace.txt"
  echo "## $i${busy:+ (busy $busy, the load got $BUSY_CORES cores)}$([ "$nice" != 0 ] && echo ", nice $nice"), loadavg $la, $(tail -1 "$d/ping")"
  python3 "$here/timeline.py" "$d/trace.txt" "$SW"
  # TRACE_NODE_ARGS=--trace-gc: the daemon's last collections (a "(reduce)" one is V8's memory reducer)
  grep -E "Mark-Compact|Scavenge" "$d/log" | tail -4 || true
  kill "$SW" 2>/dev/null || true; wait "$SW" 2>/dev/null || true; SW=""
  for n in ${p}a ${p}b ${p}s; do ip netns del "$n" 2>/dev/null || true; done
done
