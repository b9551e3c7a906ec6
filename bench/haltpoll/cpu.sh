#!/usr/bin/env bash
# bench/haltpoll/cpu.sh: what poll before sleep (README "Poll before sleep") costs
# and buys, per setting, in one run: vswitch (bench/ours.sh: one bridge, two TAPs)
# between two namespaces as VMs, for each pollBeforeSleepUs in the list (0 = off,
# the control) and each round, interleaved:
#   sockperf ping-pong for SECS, then ping -i 0.01 for SECS, then SECS idle,
# recording the daemon's CPU seconds (utime+stime of its /proc/PID/stat) over each
# phase, sockperf's average RTT, ping's average, the host's CPU pressure during
# sockperf (/proc/pressure/cpu "some": share of the time some task waited for a CPU)
# and the poll's counters (`vswitch settings --json`: hits, misses, ms polled,
# preempted, sleeps not polled for the budget and for a busy host, hits served
# inside the poll, holds, busy / judged pressure intervals; "-" where the build has
# no such counter).
#
#   bash bench/haltpoll/cpu.sh [-r ROUNDS] [-s SECS] [--busy one|half] [SETTING ...]   (default: 0 50 200)
#
# A SETTING is US[,VAR=VALUE...]: pollBeforeSleepUs, then variables for the daemon's
# environment, e.g. 50,VSWITCH_POLL_SERVE=0 (return hits to libuv instead of serving
# them in the poll) or 50,VSWITCH_POLL_BUSY_PERMILLE=0 (no CPU pressure signal: a
# preempted poll holds polling for its second, s28's rule); js=MAIN_JS runs another
# build's daemon (e.g. 50,js=../old/packages/cli/dist/main.js).
#
# --busy: bench/busy/lib.sh's load beside every configuration (as bench/run.sh).
# Holds anchors.sh's lock (/tmp/bA.anchors.lock) for the whole run. Needs root,
# sockperf, busybox; VSWITCH_SHARED is not needed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
js=${VSWITCH_BENCH_JS:-$repo/packages/cli/dist/main.js}
rounds=3 secs=5 busy=""
args=()
for a in "$@"; do [ "$a" = --busy ] && args+=(-b) || args+=("$a"); done
set -- "${args[@]+"${args[@]}"}"
while getopts "r:s:b:" o; do case $o in r) rounds=$OPTARG ;; s) secs=$OPTARG ;; b) busy=$OPTARG ;; *) exit 2 ;; esac; done
shift $((OPTIND - 1))
list=${*:-0 50 200}
[ "$(id -u)" = 0 ] || { echo "cpu.sh: needs root" >&2; exit 1; }
. "$here/../lock.sh"
bench_lock bench/haltpoll/cpu.sh
# shellcheck source=../busy/lib.sh
[ -n "$busy" ] && . "$repo/bench/busy/lib.sh"
tck=$(getconf CLK_TCK)
dir=$(mktemp -d /tmp/hpcpu.XXXXXX)
[ -n "$busy" ] && busy_build "$dir"
ns1=hpc1$$ ns2=hpc2$$ t1=hpct1$$ t2=hpct2$$
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  ip netns del $ns1 2>/dev/null || true; ip netns del $ns2 2>/dev/null || true
  [ -n "$busy" ] && type busy_stop >/dev/null 2>&1 && busy_stop 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo "loadavg start $(cut -d' ' -f1-3 /proc/loadavg)"
psi() { sed -n 's/^some .*total=\([0-9]*\).*/\1/p' /proc/pressure/cpu 2>/dev/null || echo 0; }
now_us() { echo $(( $(date +%s%N) / 1000 )); }
printf 'round\tsetting\tsockperf_us\tcpu_sockperf_s\tpsi_sockperf_pct\tping_avg_us\tcpu_ping_s\tcpu_idle_s\thits\tmisses\tpolled_ms\tpreempted\tover_budget\thost_busy\tserved\tholds\tbusy_samples\n'
for r in $(seq "$rounds"); do
  for setting in $list; do
    us=${setting%%,*}
    envs=() djs=$js
    if [ "$setting" != "$us" ]; then
      IFS=, read -r -a kv <<< "${setting#*,}"
      for x in "${kv[@]}"; do case $x in js=*) djs=${x#js=} ;; *=*) envs+=("$x") ;; *) echo "cpu.sh: bad setting $setting" >&2; exit 2 ;; esac; done
    fi
    [ -n "$busy" ] && busy_start "$busy"
    ip netns add $ns1; ip netns add $ns2
    cat > "$dir/c.yaml" <<YAML
pollBeforeSleepUs: $us
bridges:
  br0:
    ports:
      $t1: { type: tap, offload: true, vlan: { mode: access, vid: 1 } }
      $t2: { type: tap, offload: true, vlan: { mode: access, vid: 1 } }
YAML
    rm -rf "$dir/state" "$dir/s"
    env "${envs[@]+"${envs[@]}"}" setsid node --no-memory-reducer "$djs" daemon --config "$dir/c.yaml" --socket "$dir/s" --metrics off \
      --state-dir "$dir/state" --log-level warn > "$dir/log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do [ -S "$dir/s" ] && ip link show $t2 >/dev/null 2>&1 && break; sleep 0.1; done
    ip link set $t1 netns $ns1; ip link set $t2 netns $ns2
    ip -n $ns1 link set lo up; ip -n $ns2 link set lo up
    ip -n $ns1 addr add 10.77.0.1/24 dev $t1; ip -n $ns1 link set $t1 up
    ip -n $ns2 addr add 10.77.0.2/24 dev $t2; ip -n $ns2 link set $t2 up
    ip netns exec $ns1 busybox ping -c 3 -i 0.2 -W 2 10.77.0.2 >/dev/null 2>&1 || true
    ip netns exec $ns2 sockperf server -i 10.77.0.2 -p 11111 >/dev/null 2>&1 &
    srv=$!
    sleep 0.5
    c0=$(ticks $pid) p0=$(psi) w0=$(now_us)
    sp=$(ip netns exec $ns1 sockperf ping-pong -i 10.77.0.2 -p 11111 -t "$secs" 2>&1 | sed -n 's/.*avg-latency=\([0-9.]*\).*/\1/p' | head -1)
    c1=$(ticks $pid) p1=$(psi) w1=$(now_us)
    pg=$(ip netns exec $ns1 busybox ping -c $((secs * 100)) -i 0.01 -W 2 10.77.0.2 2>&1 | sed -n 's#.*min/avg/max = [0-9.]*/\([0-9.]*\)/.*#\1#p')
    c2=$(ticks $pid)
    sleep "$secs"
    c3=$(ticks $pid)
    st=$(node "$djs" --socket "$dir/s" settings --json)
    kill $srv 2>/dev/null || true; wait $srv 2>/dev/null || true
    kill $pid; wait $pid 2>/dev/null || true; pid=""
    ip netns del $ns1; ip netns del $ns2
    [ -n "$busy" ] && busy_stop
    f() { echo "$st" | python3 -c "import json,sys; print(json.load(sys.stdin)['pollBeforeSleep'].get('$1', '-'))"; }
    printf '%s\t%s\t%s\t%.2f\t%.1f\t%.0f\t%.2f\t%.2f\t%s\t%s\t%.1f\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$setting" "${sp:-nan}" \
      "$(echo "($c1 - $c0) / $tck" | bc -l)" "$(echo "($p1 - $p0) * 100 / ($w1 - $w0)" | bc -l)" \
      "$(echo "${pg:-0} * 1000" | bc -l)" "$(echo "($c2 - $c1) / $tck" | bc -l)" \
      "$(echo "($c3 - $c2) / $tck" | bc -l)" "$(f hits)" "$(f misses)" "$(f spinMs)" "$(f preempted)" "$(f overBudget)" "$(f hostBusy)" "$(f served)" "$(f holds)" "$(f busySamples)/$(f samples)"
  done
done
echo "loadavg end $(cut -d' ' -f1-3 /proc/loadavg)"
