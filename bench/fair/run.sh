#!/usr/bin/env bash
# Fair share under contention (issue 17, item 2): four VMs on one switch. VM C
# runs TCP (iperf3, one stream) and then pings (busybox, 10 ms apart) toward VM D,
# first with nothing else on the switch (quiet), then while VM A floods VM B with
# 64-byte frames (flood.py: 60-byte frames + FCS at full blast through A's qdisc, a
# full queue skipped; trafgen exits on the first EAGAIN once a TAP's queue is full)
# and runs a TCP stream (iperf3) toward it (noisy). Reported per topology: C-D's
# TCP and ping p50/p99 in both phases and the ratios noisy/quiet, pings lost, and
# what the noisy pair got (A's flood sent and B's frames received, A-B TCP), with
# the switch's CPU (run time, and time runnable but waiting for a CPU, from
# schedstat: the part no read-loop policy can shorten) and the load average of
# each phase. Targets: C-D ping p99 <= 3x and TCP >= 40 % of
# quiet, and better than both peers.
#
# Topologies (round-robin over the rounds, each set up afresh per round):
#   ours        vswitch, one bridge with four TAP ports (the default read share: since s26
#               `readShare: frames`, 16 frames a round)
#   ours-off    the same with `readShare: bytes`, `readQuantum: off` (the read loop before the fair share:
#               every readable port drains up to 256 frames per turn)
#   ours-Q      the same with `readShare: bytes` and readQuantum Q (e.g. ours-64kb, ours-1mb)
#   ours-frames the same with `readShare: frames` (each port reads up to readFrames frames
#               per round whatever their size, the default readFrames)
#   ours-fN     the same with readFrames N (e.g. ours-f8, ours-f32), to choose the default
#   ours-bytes  the same with `readShare: bytes` (the byte quantum, whatever the default share)
#   ours-gc1    ours with node --single-threaded-gc (a collection does not wait for V8's
#               helper threads, which on a busy host wait for a CPU too)
#   ours-sparse ours with sparse-first service written out (`readSparse: true`, the default since s27; README "Fair share"): a port
#               whose queue had emptied is served, one share, ahead of the backlogged ones
#   ours-nosparse ours with `readSparse: false` (whatever the default)
#   ours-nofc   ours with the bridge's flow cache off (`flowCache: false`); every other ours*
#               runs the daemon's default, the cache on (README "Flow cache"): A->B's
#               known-unicast frames are replayed in C without entering JS
#   ours-fc     the cache written out on (`flowCache: true`; = ours since the default)
#   ours-uring  ours with `tapWriteBatch: true` (the cache's replays of one read batch written
#               through io_uring; the default since s29; bench/README.md "Batched TAP I/O")
#   ours-nouring ours with `tapWriteBatch: false` (one writev per replayed frame)
#   base        ours with another build's daemon (BASE_JS=<tree>/packages/cli/dist/main.js, as
#               bench/run.sh's base), for a same-run A/B of two builds; a T@N, T~US suffix as ours.
#               With FAIR_PROBE=1 it runs that tree's bench/fair/probe.cjs if it has one (the
#               instrument is part of what is compared: s30's probe made the GCs it reported)
#   ours-cUS    ours with `turnYieldUs: US` (the turn yield, README "The turn yield"; 500, the
#               default since s30): while more tasks are runnable machine-wide than there are
#               CPUs (/proc/loadavg's count), after a loop turn that wrote frames with more
#               already readable, at most once per US microseconds, a 1 us nanosleep (~55 us
#               with the default timer slack: the reader its write woke on this CPU runs)
#   ours-noty   ours with `turnYieldUs: 0` (the turn yield off)
#   ours-any    ours with VSWITCH_TURN_YIELD_AFTER=any: the yield after any busy turn that wrote
#               (the rule before s31), not only after a light flow's write (a drained port's)
#   ours-yUS    ours-cUS with VSWITCH_TURN_YIELD=yield (an experiment's mode): sched_yield()
#   ours-sUS    ours-cUS with VSWITCH_TURN_YIELD=sleep: the sleep whether or not the host is contended
#   ours-napUS  ours-sUS with VSWITCH_TURN_YIELD=nap: the loop thread's timer slack at 1 us, so
#               the sleep idles ~1 us where nothing else is runnable
#   kbridge     the Linux bridge, veth pairs
#   ovs-tso     Open vSwitch's userspace (netdev) datapath, TAP ports, userspace TSO on
#   ovs         the same without TSO
#   T@N         topology T with every thread of its switch process at nice N (e.g. ours@-10,
#               ovs-tso@-10: what the systemd unit and ovs-ctl give them), overriding FAIR_NICE;
#               vswitch's from its config (`nice: N`), which also gives its own session's
#               autogroup that nice (a nice acts only inside its autogroup); a peer's threads
#               are reniced as ovs-ctl does, its autogroup too with FAIR_GROUP_NICE=1
#   T~US        topology T with its switch's threads on an EEVDF slice of US microseconds
#               (sched_setattr's sched_runtime; the kernel's default is 0.75 ms x (1 + log2 CPUs));
#               combines with @N as T~US@N
#   T,ps        topology T with C's pinger (FAIR_PROBE's pinger.py) in a session of its own
#               (setsid): with the kernel's autogroups, a scheduling group of its own instead
#               of the bench's, which it otherwise shares with A's flooder and the iperf3s
#               (bench/README.md "Where a slow ping waits": the pinger woken on the switch's CPU)
# The peers are set up with the helpers of ../shared/bench/anchors.sh (sourced with
# zero rounds: its ovs_start, vsctl, vm_ns_add, tap_attached, its lock, its bA* names
# and its teardown), the same way its two-VM topologies are.
#
# Usage: bash bench/fair/run.sh [-r ROUNDS] [-s SECONDS] [TOPOLOGY ...]
#   default: 3 rounds, 5 s per measurement, topologies "ours ours-off kbridge ovs-tso"
# Environment: VSWITCH_SHARED (default ../shared beside the repository, as bench/run.sh);
#   FAIR_OURS_SESSION=inherit: vswitch's daemon stays in the bench's session. By default it
#   gets its own (setsid), as systemd, Docker and the peers' daemons (ovs-vswitchd --detach)
#   run: with the kernel's autogroups each session is one scheduling group, and a daemon
#   left in the bench's shares one group's CPU with the tenants' flooder, iperf3 and pinger
#   while OVS gets a group of its own (bench/README.md "The daemon's session", s30).
#   FAIR_OURS_NODE_ARGS: node's arguments for the daemon, by default --no-memory-reducer as
#   the installed `vswitch` runs (main.ts's interpreter line); empty for V8's memory reducer.
#   FAIR_NICE: niceness for every thread of the switch processes (e.g. -10, what ovs-ctl gives
#   ovs-vswitchd), default 0.
#   FAIR_PROBE=1: where the daemon's time goes (ours* and base only): the daemon runs with
#   `node -r probe.cjs` (GC entries, event-loop lags > 3 ms, the loop-delay histogram)
#   and C's pings come from pinger.py (a send time per ping); both logs are kept in
#   FAIR_PROBE_DIR (default a new /tmp/bAfair-probe.* directory) as
#   ROUND-TOPO-PHASE.{probe,ping}, and probe.py matches each slow ping to what the
#   daemon did meanwhile.
#   FAIR_TRACE=1 (with FAIR_PROBE=1): the noisy phase's pings under a tracefs instance
#   (scheduler and C's frames; FAIR_TRACE_QUIET=1: the quiet phase's too), as
#   ROUND-TOPO-PHASE.trace in FAIR_PROBE_DIR; wakeups.py DIR: where and behind whom the pinger waited.
#   FAIR_PERF=1: where the noisy phase's CPU goes (ours* and base only): the daemon runs with
#   `node --perf-basic-prof` and its metrics on, `perf record -g` samples it during the
#   noisy phase's C -> D TCP and during 2 s of A's flood alone before it, and the ports' counters (frames, bytes, full read rounds)
#   are scraped around it; kept in FAIR_PERF_DIR (default a new /tmp/bAfair-perf.*) as
#   ROUND-TOPO[-flood].{data,m0,m1,sched,load,vms0,vms1} (-flood: the flood alone, 2 s before
#   any TCP); perf.py DIR splits the cost per frame forwarded into
#   kernel (syscalls and the stacks they run), the addon (C) and node (JS, V8, libuv).
#   With FAIR_PERF=1 every topology (the peers too) also records its VMs' processes'
#   schedstat over each phase's C -> D TCP window (ROUND-TOPO-PHASE.vw: VM, PID, command,
#   run and runqueue-wait ns at both ends), and vms.py DIR RAW prints, per topology, C's
#   iperf3 sender's, D's receiver's and A's flooder's CPU quiet and noisy beside C -> D's
#   TCP ratio (run at the end of the bench).
# Needs root, iperf3, busybox, python3, node, ovs-vswitchd (ovs topologies).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
rounds=3 secs=5
while getopts "r:s:" o; do
  case $o in r) rounds=$OPTARG ;; s) secs=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
topos=${*:-ours ours-off kbridge ovs-tso}
shared=${VSWITCH_SHARED:-$repo/../shared}
anchors=$shared/bench/anchors.sh
[ -f "$anchors" ] || { echo "no anchors.sh (set VSWITCH_SHARED to the shared/ folder)" >&2; exit 1; }
main_js=$repo/packages/cli/dist/main.js
if [[ " ${*:-} " == *" base"* ]]; then
  [ -f "${BASE_JS:-}" ] || { echo "run.sh: topology base needs BASE_JS=<tree>/packages/cli/dist/main.js (got '${BASE_JS:-}')" >&2; exit 1; }
fi
setslice=""
if [[ " ${*:-} " == *"~"* ]]; then
  setslice=$(mktemp /tmp/bAfair-setslice.XXXXXX)
  gcc -O2 -o "$setslice" "$here/setslice.c" || { echo "run.sh: cannot build setslice (gcc)" >&2; exit 1; }
fi
[ -f "$main_js" ] || { echo "no $main_js (pnpm build)" >&2; exit 1; }
out_raw=$(mktemp /tmp/bAfair.XXXXXX.tsv)
probe_dir=""
if [ "${FAIR_PROBE:-0}" = 1 ]; then probe_dir=${FAIR_PROBE_DIR:-$(mktemp -d /tmp/bAfair-probe.XXXXXX)}; mkdir -p "$probe_dir"; fi
perf_dir=""
if [ "${FAIR_PERF:-0}" = 1 ]; then perf_dir=${FAIR_PERF_DIR:-$(mktemp -d /tmp/bAfair-perf.XXXXXX)}; mkdir -p "$perf_dir"; fi

# The harness's helpers and teardown, under the anchors lock held for the whole run
# (../lock.sh); its own measurement loop runs zero rounds.
. "$here/../lock.sh"
bench_lock bench/fair/run.sh
# shellcheck disable=SC1090
OPTIND=1
source "$anchors" -r 0 none >/dev/null
set +e
ALL_NS="$ALL_NS bAvm3 bAvm4"
IPS=(x 10.77.1.1 10.77.1.2 10.77.1.3 10.77.1.4) # A B C D
IFS4=()                                         # VM n's interface, in bAvmn

vms_add() { local i; for i in 1 2 3 4; do vm_ns_add bAvm$i || return 1; done; }
vms_conf() { local i; for i in 1 2 3 4; do vm_if_conf bAvm$i "${IFS4[$i]}" "${IPS[$i]}" || return 1; done; }
taps_move() {
  local i
  for i in 1 2 3 4; do
    wait_for 15 tap_attached bAt$i "${SW_PIDS[@]}" || { log "bAt$i never attached"; return 1; }
  done
  for i in 1 2 3 4; do ip -n $NSW link set bAt$i netns bAvm$i || return 1; done
  IFS4=(x bAt1 bAt2 bAt3 bAt4)
}

SPARSE=""   # readSparse for up_ours: "" (the default), true or false
OURS_JS=""  # the daemon's main.js for up_ours: "" (this tree's) or BASE_JS (topology base)
up_ours() {  # up_ours QUANTUM ("" = the default; frames, frames:N, bytes: the read share) FLOWCACHE(true|false|"" = the default) [NODE_FLAG ...]
  local q=$1 fc=$2
  shift 2
  vms_add && ip netns add $NSW || return 1
  ip -n $NSW link set lo up
  mkdir -p "$RUN/state"
  {
    [ -n "$TWB" ] && echo "tapWriteBatch: $TWB"
    [ -n "$TYU" ] && echo "turnYieldUs: $TYU"
    if [[ $CUR_NAME == *@* ]]; then local n=${CUR_NAME##*@}; echo "nice: ${n%,ps}"; fi  # the daemon sets its thread's and its own session's group's
    echo "bridges:"
    echo "  br0:"
    case $q in
      "") ;;
      frames) echo "    readShare: frames" ;;
      frames:*) echo "    readShare: frames"; echo "    readFrames: ${q#frames:}" ;;
      bytes) echo "    readShare: bytes" ;;
      *) echo "    readShare: bytes"; echo "    readQuantum: \"$q\"" ;; # a byte quantum whatever the default share
    esac
    [ -n "$fc" ] && echo "    flowCache: $fc"
    [ -n "$SPARSE" ] && echo "    readSparse: $SPARSE"
    echo "    ports:"
    for i in 1 2 3 4; do echo "      bAt$i: { type: tap, vlan: { mode: access, vid: 1 } }"; done
  } >"$RUN/c.yaml"
  rm -f "$RUN/s"
  local pre=() metrics=off
  local probe_js=$here/probe.cjs
  [ -n "$OURS_JS" ] && [ -f "$(dirname "$OURS_JS")/../../../bench/fair/probe.cjs" ] && probe_js=$(dirname "$OURS_JS")/../../../bench/fair/probe.cjs
  [ -n "$probe_dir" ] && pre=(-r "$probe_js")
  # --perf-basic-prof turns V8's logger on: its log goes to the perf directory, not the working one.
  [ -n "$perf_dir" ] && pre+=(--perf-basic-prof --no-logfile-per-isolate "--logfile=$perf_dir/$ROUND-$CUR_NAME.v8.log") metrics=127.0.0.1:9464
  local session=setsid
  [ "${FAIR_OURS_SESSION:-}" = inherit ] && session=""
  # shellcheck disable=SC2086 # FAIR_OURS_NODE_ARGS: words
  ip netns exec $NSW $session env FAIR_PROBE_OUT="$probe_dir/$ROUND-$CUR_NAME.probe" $TY node ${FAIR_OURS_NODE_ARGS---no-memory-reducer} "${pre[@]}" "$@" "${OURS_JS:-$main_js}" daemon --config "$RUN/c.yaml" --socket "$RUN/s" --metrics $metrics \
    --state-dir "$RUN/state" --log-level warn </dev/null >>"$RUN/switch.log" 2>&1 &
  SW_PIDS+=("$!")
  taps_move && vms_conf
}

up_kbridge() {
  vms_add && ip netns add $NSW || return 1
  ip -n $NSW link add bAbr0 type bridge stp_state 0 forward_delay 0 || return 1
  ip -n $NSW link set bAbr0 up
  local i
  for i in 1 2 3 4; do
    ip -n $NSW link add bAv${i}s type veth peer name bAv$i netns bAvm$i || return 1
    ip -n $NSW link set bAv${i}s master bAbr0 up || return 1
  done
  IFS4=(x bAv1 bAv2 bAv3 bAv4)
  vms_conf
}
down_kbridge() { local i; for i in 1 2 3 4; do ip -n $NSW link del bAv${i}s 2>/dev/null; done; }

up_ovs() {  # up_ovs TSO(true|false)
  vms_add || return 1
  ovs_start "$1" || return 1
  local i
  for i in 1 2 3 4; do vsctl add-port bAovs bAt$i -- set Interface bAt$i type=tap || return 1; done
  taps_move && vms_conf
}
# OVS makes its TAPs persistent; the harness's teardown deletes bAt1/bAt2 only.
down_ovs() { local i ns; for i in 3 4; do for ns in $NSW bAvm$i; do ip -n $ns link del bAt$i 2>/dev/null; done; done; }

topo_up() {
  SPARSE="" TWB="" OURS_JS="" TY="" TYU=""
  case $(topo_base "$1") in
    base) OURS_JS=$BASE_JS up_ours "" "" ;;
    ours-uring) TWB=true up_ours "" "" ;;
    ours-nouring) TWB=false up_ours "" "" ;;
    ours-sparse) SPARSE=true up_ours "" "" ;;
    ours-nosparse) SPARSE=false up_ours "" "" ;;
    ours) up_ours "" "" ;;
    ours-y[0-9]*) local t; t=$(topo_base "$1"); TYU=${t#ours-y} TY="VSWITCH_TURN_YIELD=yield" up_ours "" "" ;;
    ours-s[0-9]*) local t; t=$(topo_base "$1"); TYU=${t#ours-s} TY="VSWITCH_TURN_YIELD=sleep" up_ours "" "" ;;
    ours-nap[0-9]*) local t; t=$(topo_base "$1"); TYU=${t#ours-nap} TY="VSWITCH_TURN_YIELD=nap" up_ours "" "" ;;
    ours-c[0-9]*) local t; t=$(topo_base "$1"); TYU=${t#ours-c} up_ours "" "" ;;
    ours-any) TY="VSWITCH_TURN_YIELD_AFTER=any" up_ours "" "" ;;
    ours-noty) TYU=0 up_ours "" "" ;;
    ours-off) up_ours off "" ;;
    ours-gc1) up_ours "" "" --single-threaded-gc ;;
    ours-fc) up_ours "" true ;;
    ours-nofc) up_ours "" false ;;
    ours-frames) up_ours frames "" ;;
    ours-bytes) up_ours bytes "" ;;
    ours-f[0-9]*) local t; t=$(topo_base "$1"); up_ours "frames:${t#ours-f}" "" ;;
    ours-*) local t; t=$(topo_base "$1"); up_ours "${t#ours-}" "" ;; # without the ~US and @N suffixes
    kbridge) up_kbridge ;;
    ovs-tso) up_ovs true ;;
    ovs) up_ovs false ;;
    *) log "unknown topology $1"; return 1 ;;
  esac
}
topo_base() { local t=${1%,ps}; t=${t%@*}; echo "${t%~*}"; }  # T without its ~US, @N and ,ps suffixes
topo_down() {
  case $(topo_base "$1") in kbridge) down_kbridge ;; ovs|ovs-tso) down_ovs ;; esac
  teardown
}

mac_of() { ip netns exec "bAvm$1" cat "/sys/class/net/${IFS4[$1]}/address"; }
rx_of() { ip netns exec "bAvm$1" cat "/sys/class/net/${IFS4[$1]}/statistics/rx_packets"; }
gbps_of() { python3 -c 'import json,sys
try: print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9, 3))
except Exception: print(0)'; }

# Run and runqueue-wait nanoseconds summed over every thread of the switch processes
# (/proc/PID/task/TID/schedstat): how much CPU the switch got, and how long it was
# runnable but waiting for a CPU, which no read-loop policy can shorten.
sched_ns() {
  local p t run=0 wait=0 a b
  for p in "${SW_PIDS[@]}"; do
    for t in /proc/"$p"/task/*; do
      read -r a b _ 2>/dev/null <"$t/schedstat" || continue
      run=$((run + a)) wait=$((wait + b))
    done
  done
  echo "$run $wait"
}

# "VM PID COMM run wait" per process in the VMs' namespaces (A's flood and iperf3, C's iperf3
# sender, ...; run and runqueue wait in ns, all threads).
vm_procs() {
  local i p t run wait a b
  for i in 1 2 3 4; do
    for p in $(ip netns pids bAvm$i 2>/dev/null); do
      run=0 wait=0
      for t in /proc/"$p"/task/*; do
        read -r a b _ 2>/dev/null <"$t/schedstat" || continue
        run=$((run + a)) wait=$((wait + b))
      done
      echo "$i $p $(tr -d ' ' <"/proc/$p/comm" 2>/dev/null || echo -) $run $wait"
    done
  done
}

# "VM PID run wait": whether a VM's sender waited for a CPU (perf.py sums each process alive
# at both ends).
vm_sched() { vm_procs | awk '{ print $1, $2, $4, $5 }'; }

# vms_window NAME SECONDS (FAIR_PERF, every topology): each VM's processes' run and runqueue
# wait (ns, all threads) with their command, at both ends of SECONDS, as $perf_dir/$ROUND-NAME.vw.
vms_window() {
  local at
  for at in 0 1; do
    [ $at = 1 ] && sleep "$2"
    echo "t$at $(now)"
    vm_procs | sed "s/^/$at /"
  done >"$perf_dir/$ROUND-$1.vw"
}

# perf_window NAME SECONDS (FAIR_PERF): sample the daemon with perf for SECONDS, with its
# ports' counters and its schedstat run/wait before and after, as $perf_dir/$ROUND-NAME.*.
perf_window() {
  local f=$perf_dir/$ROUND-$1
  ip netns exec $NSW curl -sf --max-time 5 http://127.0.0.1:9464/metrics >"$f.m0"
  { sched_ns; now; } >"$f.sched"
  vm_sched >"$f.vms0"
  # The end's snapshot is taken on time, not after perf has written its file (a VM's
  # iperf3 may have exited by then).
  (sleep "$2"; vm_sched >"$f.vms1") &
  local vms=$!
  perf record -q -g -F 999 -p "${SW_PIDS[0]}" -o "$f.data" -- sleep "$2" >/dev/null 2>&1
  { sched_ns; now; } >>"$f.sched"
  wait "$vms"
  ip netns exec $NSW curl -sf --max-time 5 http://127.0.0.1:9464/metrics >"$f.m1"
  cut -d' ' -f1-3 /proc/loadavg >"$f.load"
}

# FAIR_TRACE=1 (with FAIR_PROBE=1; FAIR_TRACE_QUIET=1: the quiet phase's too): the noisy phase's pings run under a tracefs instance of
# our own (bAfair) recording every CPU's scheduler switches, wake-ups and migrations, the
# NET_RX softirqs and C's interface's frames entering the stack (netif_rx: queued on a CPU's
# backlog, netif_receive_skb: delivered); kept as ROUND-TOPO-noisy.trace with the pinger's
# PID (.pid), the switch's PIDs and the VMs' processes (.procs); wakeups.py DIR says, per
# slow ping, where and behind whom the pinger waited (ROUND-TOPO-quiet.* likewise).
trace_dir=/sys/kernel/tracing/instances/bAfair
trace_start() {
  rmdir "$trace_dir" 2>/dev/null
  mkdir "$trace_dir" || { log "no tracefs instance"; return 1; }
  echo 65536 >"$trace_dir/buffer_size_kb"
  echo mono >"$trace_dir/trace_clock"
  local e dev=${IFS4[3]}
  for e in sched/sched_switch sched/sched_waking sched/sched_wakeup sched/sched_migrate_task; do
    echo 1 >"$trace_dir/events/$e/enable"
  done
  echo 'vec == 3' >"$trace_dir/events/irq/softirq_entry/filter"
  echo 'vec == 3' >"$trace_dir/events/irq/softirq_exit/filter"
  echo 1 >"$trace_dir/events/irq/softirq_entry/enable"
  echo 1 >"$trace_dir/events/irq/softirq_exit/enable"
  for e in netif_rx netif_receive_skb net_dev_queue; do
    echo "name == \"$dev\"" >"$trace_dir/events/net/$e/filter"
    echo 1 >"$trace_dir/events/net/$e/enable"
  done
  echo 1 >"$trace_dir/tracing_on"
}
trace_stop() {  # trace_stop OUT_BASE PINGER_PID
  echo 0 >"$trace_dir/tracing_on"
  cat "$trace_dir/trace" >"$1.trace"
  cat "$trace_dir/per_cpu"/cpu*/stats | grep -i overrun | tr '\n' ' ' >"$1.overrun"
  echo "$2" >"$1.pid"
  { echo "switch ${SW_PIDS[*]}"; local p; for p in "${SW_PIDS[@]}"; do ls /proc/"$p"/task | tr '\n' ' '; echo; done; vm_procs; } >"$1.procs"
  rmdir "$trace_dir"
}

# One phase: C -> D TCP then ping; with "noisy", A floods B and runs TCP to it meanwhile.
phase() {
  local topo=$1 ph=$2 tg="" ab="" tcp times r0 r1 sent="" abg=0 t0 t1 load
  if [ "$ph" = noisy ]; then
    local fsecs=$((2 * secs + 4))
    flood_start() {
      r0=$(rx_of 2); t0=$(now)
      ip netns exec bAvm1 python3 "$here/flood.py" "${IFS4[1]}" "$(mac_of 1)" "$(mac_of 2)" "${IPS[1]}" "${IPS[2]}" "$1" \
        >"$RUN/flood.log" 2>&1 &
      tg=$!
      AUX_PIDS+=("$tg")
    }
    if [ -n "$perf_dir" ] && [[ $topo == ours* || $topo == base* ]]; then
      # The flood alone first (FAIR_PERF): its cost per frame without the TCP streams.
      flood_start $((fsecs + 3))
      sleep 1
      perf_window "$topo-flood" 2
    fi
    ip netns exec bAvm2 iperf3 -s -1 -B "${IPS[2]}" -p 5302 >/dev/null 2>&1 &
    AUX_PIDS+=("$!")
    wait_for 5 bash -c "ip netns exec bAvm2 ss -Hlnt 'sport = :5302' | grep -q ."
    ip netns exec bAvm1 iperf3 -c "${IPS[2]}" -p 5302 -t $fsecs -J >"$RUN/ab.json" 2>/dev/null &
    ab=$!
    AUX_PIDS+=("$ab")
    [ -n "$tg" ] || flood_start $fsecs
    sleep 1
  fi
  load=$(cut -d' ' -f1 /proc/loadavg)
  local s0 s1 w0 w1 ts0 ts1
  read -r s0 w0 <<<"$(sched_ns)"; ts0=$(now)
  ip netns exec bAvm4 iperf3 -s -1 -B "${IPS[4]}" -p 5301 >/dev/null 2>&1 &
  AUX_PIDS+=("$!")
  wait_for 5 bash -c "ip netns exec bAvm4 ss -Hlnt 'sport = :5301' | grep -q ."
  local perf="" vw=""
  if [ -n "$perf_dir" ] && [ "$ph" = noisy ] && [[ $topo == ours* || $topo == base* ]]; then
    (sleep 0.5; perf_window "$topo" $((secs - 1))) &
    perf=$!
  fi
  if [ -n "$perf_dir" ]; then
    (sleep 0.5; vms_window "$topo-$ph" $((secs - 1))) &
    vw=$!
  fi
  tcp=$(timeout $((secs + 20)) ip netns exec bAvm3 iperf3 -c "${IPS[4]}" -p 5301 -t "$secs" -J 2>/dev/null | gbps_of)
  [ -n "$perf" ] && wait "$perf"
  [ -n "$vw" ] && wait "$vw"
  if [ -n "$probe_dir" ]; then  # every topology pings with pinger.py then, for the same ping process
    [[ $topo == ours* || $topo == base* ]] && echo "phase $ph $(date +%s%3N)" >>"$probe_dir/$ROUND-$topo.probe"
    local tr=0
    [ "${FAIR_TRACE:-0}" = 1 ] && { [ "$ph" = noisy ] || [ "${FAIR_TRACE_QUIET:-0}" = 1 ]; } && tr=1
    [ $tr = 1 ] && trace_start
    local pses=""
    [[ $topo == *,ps ]] && pses=setsid
    ip netns exec bAvm3 $pses python3 "$here/pinger.py" "${IPS[4]}" $((secs * 100)) 0.01 >"$probe_dir/$ROUND-$topo-$ph.ping" &
    local pinger=$!
    wait "$pinger"
    [ $tr = 1 ] && trace_stop "$probe_dir/$ROUND-$topo-$ph" "$pinger"
    times=$(awk '$2 != "-" {print $2}' "$probe_dir/$ROUND-$topo-$ph.ping" | tr '\n' ' ')
  else
  times=$(ip netns exec bAvm3 busybox ping -c $((secs * 100)) -i 0.01 -W 2 "${IPS[4]}" 2>/dev/null | sed -n 's/.*time=\([0-9.]*\) ms/\1/p' | tr '\n' ' ')
  fi
  read -r s1 w1 <<<"$(sched_ns)"; ts1=$(now)
  local cpu="-"
  [ ${#SW_PIDS[@]} -gt 0 ] && cpu=$(awk -v r=$((s1 - s0)) -v w=$((w1 - w0)) -v a="$ts0" -v b="$ts1" 'BEGIN{printf "%.0f/%.0f", r/1e7/(b-a), w/1e7/(b-a)}')
  if [ -n "$tg" ]; then
    wait "$tg" 2>/dev/null; t1=$(now); sleep 0.2; r1=$(rx_of 2)
    wait "$ab" 2>/dev/null
    sent=$(awk '/^sent/{print $2}' "$RUN/flood.log")
    [ -n "$sent" ] || log "$topo: the flood sent nothing: $(tail -3 "$RUN/flood.log" | tr '\n' ' ')"
    abg=$(gbps_of <"$RUN/ab.json")
    sent=$(awk -v s="${sent:-0}" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", s/(b-a)/1e3}')
    r1=$(awk -v r=$((r1 - r0)) -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", r/(b-a)/1e3}')
  else
    sent=0 r1=0
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$ROUND" "$topo" "$ph" "$tcp" "$times" "$sent" "$r1" "$abg" "$load" "$cpu" >>"$out_raw"
}

log "fair bench: topologies $topos, $rounds rounds, $secs s; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for ROUND in $(seq "$rounds"); do
  for topo in $topos; do
    CUR_TOPO="" SW_PIDS=() AUX_PIDS=() CUR_NAME=$topo
    if ! topo_up "$topo"; then log "$topo: setup failed"; tail -5 "$RUN/switch.log" >&2; topo_down "$topo"; continue; fi
    if ! ip netns exec bAvm3 busybox ping -c 3 -i 0.2 -W 2 "${IPS[4]}" >/dev/null 2>&1 ||
       ! ip netns exec bAvm1 busybox ping -c 3 -i 0.2 -W 2 "${IPS[2]}" >/dev/null 2>&1; then
      log "$topo: no connectivity"; topo_down "$topo"; continue
    fi
    nice=${FAIR_NICE:-0}
    [[ $topo == *@* ]] && { nice=${topo##*@}; nice=${nice%,ps}; }
    if [ "$nice" != 0 ] && { [[ $topo != ours* ]] || [[ $topo != *@* ]]; }; then
      for p in "${SW_PIDS[@]}"; do
        for t in /proc/"$p"/task/*; do renice -n "$nice" -p "${t##*/}" >/dev/null; done
        # What an operator can add by hand for a peer: its session's group at the same nice.
        [ "${FAIR_GROUP_NICE:-0}" = 1 ] && [ -w /proc/"$p"/autogroup ] && echo "$nice" >/proc/"$p"/autogroup
      done
    fi
    if [[ $topo == *~* ]]; then
      slice=${topo##*~}; slice=${slice%,ps}; slice=${slice%@*}
      for p in "${SW_PIDS[@]}"; do "$setslice" $((slice * 1000)) $(ls /proc/"$p"/task) || log "$topo: setting the slice failed"; done
    fi
    phase "$topo" quiet
    phase "$topo" noisy
    # vswitch's turn yields over both phases (README "The turn yield"): count, time away.
    [[ $topo == ours* || $topo == base* ]] && yields=$(ip netns exec $NSW node "$main_js" --socket "$RUN/s" settings --json 2>/dev/null |
      python3 -c 'import json,sys; t=json.load(sys.stdin).get("turnYield") or {}; n=t.get("yields",0); a=t.get("awayMs",0); print(f"turn yields {n}, {a:.1f} ms away" + (f" ({a*1e3/n:.0f} us each)" if n else ""))' 2>/dev/null) &&
      log "$topo round $ROUND: $yields"
    topo_down "$topo"
    log "$topo round $ROUND done (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  done
done
log "load average at end: $(cut -d' ' -f1-3 /proc/loadavg); raw data: $out_raw${probe_dir:+; probe logs: $probe_dir}${perf_dir:+; perf: $perf_dir (python3 $here/perf.py $perf_dir)}"
python3 "$here/summary.py" "$out_raw" "$topos" "$secs"
[ -n "$setslice" ] && rm -f "$setslice"
[ -n "$perf_dir" ] && python3 "$here/vms.py" "$perf_dir" "$out_raw" "$topos"
