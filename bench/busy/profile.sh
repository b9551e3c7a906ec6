#!/usr/bin/env bash
# bench/busy/profile.sh: where a switch's time goes during the main bench's 64-byte
# trafgen flood, quiet and with `--busy one` (issue 19).
#
#   bash bench/busy/profile.sh [-r ROUNDS] [-s SECONDS] [-v VARIANTS] [-P] [TOPOLOGY ...]
#
# The two-VM setup of ../shared/bench/anchors.sh (its helpers, lock and teardown,
# sourced with zero rounds): VM1 floods VM2's discard port with 106-byte frames
# (trafgen -q, as anchors.sh's measure_trafgen), and over the flood this records
# for the switch's process:
#   kpps        frames VM2's interface received per second
#   run/wait    CPU time and runqueue wait of all its threads (schedstat), in ms,
#               and of its busiest thread alone (main); `slices`: times it got a CPU
#   vcs/ics     voluntary (slept) / involuntary (preempted) context switches
#   migr        migrations between CPUs (sched's se.nr_migrations)
#   thr         threads that ran at all during the flood / threads the process has
#   rd/wr/poll  read, write (write+writev+sendmsg+sendto) and poll (epoll_wait,
#               epoll_pwait, poll, ppoll) system calls per forwarded frame (perf stat)
#   fr/wake     frames per poll call (what one wakeup moves)
# -P: also `perf record -g` of the switch over the flood, summarised by DSO and top
# symbols (one extra flood per configuration; the figures above come from the first).
# Topologies: ours (in a session of its own, bench/ours.sh), ours-insession (in
# this script's session, with trafgen and the load), base (BASE_JS=<tree>/packages/cli/dist/main.js), ours2 (this
# build with OURS2_NODE_ARGS node flags, OURS2_ENV "VAR=value ..." in its
# environment and OURS2_WRAP (e.g. `setsid`, `nice -n -5`) before it, for A/B of a
# runtime setting), vde, ovs-tap-tso, ovs-tap.
# Variants: quiet, one, half (bench/busy/lib.sh), default "quiet one", alternated
# per round. Needs root; VSWITCH_SHARED as for bench/run.sh.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
rounds=2 secs=3 variants="quiet one" prof=0
while getopts "r:s:v:Ph" o; do
  case $o in
    r) rounds=$OPTARG ;; s) secs=$OPTARG ;; v) variants=${OPTARG//,/ } ;; P) prof=1 ;;
    h) sed -n '2,/^set -uo/p' "$0" | sed 's/^# \{0,1\}//' | head -n -1; exit 0 ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
topos=${*:-ours vde ovs-tap-tso}
shared=${VSWITCH_SHARED:-$repo/../shared}
anchors=$shared/bench/anchors.sh
[ -f "$anchors" ] || { echo "profile.sh: no $anchors (set VSWITCH_SHARED)" >&2; exit 1; }
command -v perf >/dev/null || { echo "profile.sh: needs perf" >&2; exit 1; }

export BA_OURS_CMD="bash $repo/bench/ours.sh @DIR@ @TAP1@ @TAP2@"
topo_ours_insession_up() { tapsw_up "env VSWITCH_BENCH_SESSION=inherit $BA_OURS_CMD" "" 0; }
topo_base_up() { tapsw_up "env VSWITCH_BENCH_JS=${BASE_JS:?topology base needs BASE_JS} $BA_OURS_CMD" "" 0; }
topo_ours2_up() { tapsw_up "${OURS2_WRAP:-} env ${OURS2_ENV:-} VSWITCH_BENCH_NODE_ARGS='${OURS2_NODE_ARGS:-}' $BA_OURS_CMD" "" 0; }

. "$here/../lock.sh"
bench_lock bench/busy/profile.sh
OPTIND=1
# shellcheck disable=SC1090
source "$anchors" -r 0 none >/dev/null
set +e
. "$here/lib.sh"
tmp=$(mktemp -d /tmp/bAbusyprof.XXXXXX)
busy_build "$tmp" || exit 1
# (replaces anchors.sh's EXIT trap: the load first, then its on_exit: teardown, its run dir)
trap 'for p in "${BUSY_PIDS[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$tmp"; on_exit' EXIT

# tid run_ns wait_ns slices vcs ics migr, one line per thread of the given PIDs
threads() {
  local p t
  for p in "$@"; do
    for t in /proc/"$p"/task/*; do
      [ -r "$t/schedstat" ] || continue
      printf '%s %s %s %s %s\n' "${t##*/}" "$(cat "$t/schedstat")" \
        "$(awk '/^voluntary_ctxt_switches/{v=$2} /^nonvoluntary_ctxt_switches/{n=$2} END{print v+0, n+0}' "$t/status")" \
        "$(awk '/se.nr_migrations/{print $3; exit}' "$t/sched" 2>/dev/null || echo 0)"
    done
  done
}

sw_pids() {  # the switch's processes: anchors.sh's SW_PIDS (vde, ours) or OVS's daemons
  local p out=()
  for p in "${SW_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && out+=("$p"); done
  for p in $(pgrep -x ovs-vswitchd); do
    [[ " ${out[*]} " == *" $p "* ]] || { ip netns identify "$p" 2>/dev/null | grep -qx "$NSW" && out+=("$p"); }
  done
  # (the autogroup: a process in its own session gets its own share of the CPU, README)
  for p in "${out[@]}"; do echo "profile.sh: $CUR_TOPO pid $p $(cat /proc/$p/comm) $(cat /proc/$p/autogroup 2>/dev/null)" >&2; done
  echo "${out[@]}"
}

flood() {  # flood SECONDS: trafgen as anchors.sh's measure_trafgen; prints rx frames
  local m1 m2 cfg=$RUN/tg.cfg r0 r1
  m1=$(ip netns exec "$CLI_NS" cat "/sys/class/net/$CLI_IF/address")
  m2=$(ip netns exec "$SRV_NS" cat "/sys/class/net/$SRV_IF/address")
  printf '{ eth(da=%s, sa=%s), ipv4(daddr=%s, saddr=%s, ttl=64), udp(sp=4000, dp=9), fill(0x00, 64) }\n' \
    "$m2" "$m1" "$SRV_IP" "$IP1" > "$cfg"
  r0=$(ifstat "$SRV_NS" "$SRV_IF" rx_packets)
  ip netns exec "$CLI_NS" timeout -s INT "$1" trafgen --dev "$CLI_IF" --conf "$cfg" --cpus 1 -q >/dev/null 2>&1
  sleep 0.2
  r1=$(ifstat "$SRV_NS" "$SRV_IF" rx_packets)
  echo $((r1 - r0))
}

EV=raw_syscalls:sys_enter,syscalls:sys_enter_read,syscalls:sys_enter_readv,syscalls:sys_enter_recvfrom,syscalls:sys_enter_recvmsg,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendmsg,syscalls:sys_enter_sendto,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_poll,syscalls:sys_enter_ppoll,syscalls:sys_enter_sched_yield,syscalls:sys_enter_futex
printf 'round\ttopo\tvariant\tkpps\trun_ms\twait_ms\tmain_run\tmain_wait\tslices\tvcs\tics\tmigr\tthr\trd/fr\twr/fr\tpoll/fr\tsys/fr\tfr/wake\tyield\tfutex\tspin\n' > "$tmp/out.tsv"
echo "profile.sh: loadavg $(cut -d' ' -f1-3 /proc/loadavg) at the start" >&2
for r in $(seq "$rounds"); do
  order=$variants
  [ $((r % 2)) = 0 ] && order=$(tr ' ' '\n' <<<"$variants" | tac | tr '\n' ' ')
  for t in $topos; do
    for v in $order; do
      CUR_TOPO=$t CUR_NAME=$t ROUND=$r
      [ "$v" = quiet ] || busy_start "$v"
      if ! "topo_${t//-/_}_up" >>"$RUN/switch.log" 2>&1; then
        echo "profile.sh: $t setup failed" >&2; tail -5 "$RUN/switch.log" >&2; teardown; [ "$v" = quiet ] || busy_stop; continue
      fi
      ip netns exec "$CLI_NS" busybox ping -c 3 -i 0.2 -W 2 "$SRV_IP" >/dev/null 2>&1 || echo "profile.sh: $t: no connectivity" >&2
      flood 1 >/dev/null  # warm-up: V8 optimizes the pipeline, as in the main bench (udp runs before trafgen)
      pids=$(sw_pids)
      threads $pids > "$tmp/a"
      # shellcheck disable=SC2086
      perf stat -x, -e "$EV" -p "$(tr ' ' , <<<"$pids")" -o "$tmp/stat" -- sleep "$secs" 2>/dev/null &
      sp=$!
      n=$(flood "$secs")
      wait $sp
      threads $pids > "$tmp/b"
      if [ "$prof" = 1 ]; then
        perf record -g -F 1999 -o "$tmp/perf.$r.$t.$v" -p "$(tr ' ' , <<<"$pids")" -- sleep "$secs" >/dev/null 2>&1 &
        pp=$!; flood "$secs" >/dev/null; wait $pp
      fi
      BUSY_CORES=""
      teardown
      [ "$v" = quiet ] || busy_stop
      python3 - "$tmp/a" "$tmp/b" "$tmp/stat" "$n" "$secs" "$r" "$t" "$v" "${BUSY_CORES:-}" >> "$tmp/out.tsv" <<'PY'
import sys
a, b, stat, n, secs, r, t, v, spin = sys.argv[1:]
n, secs = int(n), float(secs)
def load(p):
    d = {}
    for line in open(p):
        f = line.split()
        if len(f) == 7: d[f[0]] = list(map(int, f[1:]))
    return d
A, B = load(a), load(b)
delta = {k: [y - x for x, y in zip(A.get(k, [0] * 6), B[k])] for k in B}
ran = [d for d in delta.values() if d[0] > 0]
tot = [sum(d[i] for d in delta.values()) for i in range(6)]
main = max(delta.values(), key=lambda d: d[0]) if delta else [0] * 6
ev = {}
for line in open(stat):
    f = line.strip().split(',')
    if len(f) > 2 and f[0].replace('.', '').isdigit():
        ev[f[2].split(':')[-1].replace('sys_enter_', '')] = int(float(f[0]))
g = lambda *k: sum(ev.get(x, 0) for x in k)
rd = g('read', 'readv', 'recvfrom', 'recvmsg'); wr = g('write', 'writev', 'sendmsg', 'sendto')
po = g('epoll_wait', 'epoll_pwait', 'poll', 'ppoll'); sy = ev.get('sys_enter', 0)
per = lambda x: f'{x / n:.2f}' if n else '-'
print('\t'.join(map(str, [r, t, v, f'{n / secs / 1e3:.1f}', f'{tot[0] / 1e6:.0f}', f'{tot[1] / 1e6:.0f}',
      f'{main[0] / 1e6:.0f}', f'{main[1] / 1e6:.0f}', main[2], tot[3], tot[4], tot[5], f'{len(ran)}/{len(B)}',
      per(rd), per(wr), per(po), per(sy), f'{n / po:.1f}' if po else '-', g('sched_yield'), g('futex'), spin or '-'])))
PY
      tail -1 "$tmp/out.tsv" >&2
      if [ "$prof" = 1 ] && [ -f "$tmp/perf.$r.$t.$v" ]; then
        echo "== perf $r $t $v: by DSO" >> "$tmp/perf.txt"
        perf report -i "$tmp/perf.$r.$t.$v" --no-children --sort dso --stdio 2>/dev/null | grep -v '^#' | grep . | head -8 >> "$tmp/perf.txt"
        echo "== perf $r $t $v: top symbols" >> "$tmp/perf.txt"
        perf report -i "$tmp/perf.$r.$t.$v" --no-children --sort sym --stdio -g none 2>/dev/null | grep -v '^#' | grep . | head -25 >> "$tmp/perf.txt"
        rm -f "$tmp/perf.$r.$t.$v"
      fi
    done
  done
done
echo "profile.sh: loadavg $(cut -d' ' -f1-3 /proc/loadavg) at the end" >&2
column -t -s $'\t' "$tmp/out.tsv"
[ "$prof" = 1 ] && cat "$tmp/perf.txt"
[ -n "${PROF_OUT:-}" ] && cp "$tmp/out.tsv" "$PROF_OUT"
exit 0
