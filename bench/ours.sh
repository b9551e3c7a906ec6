#!/usr/bin/env bash
# The `ours` topology of anchors.sh: vswitch with one bridge and two TAP ports
# (access VLAN 1, offloads on unless VSWITCH_BENCH_OFFLOAD=false), run in the
# foreground in anchors.sh's switch namespace, as configured by default: the flow
# cache on (README "Flow cache"). VSWITCH_BENCH_FLOWCACHE=false: the bridge's flow
# cache off (`ours-nofc`), =true: written out on (`ours-fc`, the default spelled
# out, and the way to turn it on in an older `base` build). Usage (anchors.sh substitutes
# the placeholders): ours.sh @DIR@ @TAP1@ @TAP2@
# VSWITCH_BENCH_QUANTUM: the bridge's readQuantum; VSWITCH_BENCH_RPS=MASK: RPS on the
# TAPs' receive queues once they are in the VM namespaces (an experiment: bench/README
# "TCP through the switch").
# VSWITCH_BENCH_JS: another build's packages/cli/dist/main.js (latency/run.sh's
# `base`: before/after in one run); with VSWITCH_BENCH_FLOWCACHE unset, no build
# gets a flowCache key: each runs its own default (main before s27: off).
# `exec` keeps the PID anchors.sh recorded, so its CPU accounting sees node.
# VSWITCH_BENCH_NODE_ARGS: node's arguments, by default --no-memory-reducer as the
# installed `vswitch` runs (main.ts's interpreter line; README "The daemon's heap");
# set it empty for V8's memory reducer on (run.sh's `ours-r`).
# Its own session (setsid), as the peers run: vde_switch -d and ovs-vswitchd
# --detach daemonize (setsid), systemd and Docker start a service in its own
# session. With the kernel's autogroups (sched_autogroup_enabled, cgroup v1's
# root cpu group here) each session is one scheduling group: a daemon left in the
# bench's session shares one group's CPU with the bench's own load (trafgen,
# iperf3, the --busy spinner), while the peers get a group each (bench/README.md
# "Busy host: the session"). VSWITCH_BENCH_SESSION=inherit keeps the caller's
# session (run.sh's topology `ours-insession`). setsid(1) forks when its caller
# leads a process group, which would change the PID: then the session is kept.
# VSWITCH_BENCH_GUARD=true (run.sh's `ours-guard`): both ports guarded as a DHCP-served
# VM's are by default (DHCP guard, IP source guard, RA, DHCPv6 and IPv6 source guards),
# with configured bindings for the VMs' static addresses (anchors.sh's 10.77.1.1 and
# .2): the bindings need the VMs' MACs, so each TAP gets a fixed one (02:76:67:00:00:0N)
# as soon as the daemon has made it, before anchors.sh moves it into its VM namespace and
# brings it up (a watcher below; any neighbour entry made before is flushed). Frames from
# another MAC would be dropped (ip_source_guard) and the bench would fail, not pass quietly.
# VSWITCH_BENCH_FC_LOG=FILE: every 10 s, `stats --json`'s flowCache counters appended to
# FILE (a check by hand that the cache replays: a CLI run per 10 s, off by default).
set -eu
dir=$1 tap1=$2 tap2=$3
here=$(cd "$(dirname "$0")" && pwd)
off=${VSWITCH_BENCH_OFFLOAD:-true}
fc=${VSWITCH_BENCH_FLOWCACHE:-}
js=${VSWITCH_BENCH_JS:-$here/../packages/cli/dist/main.js}
fcline=""
case $fc in
  "") ;;
  true|false) fcline="    flowCache: $fc" ;;
  *) echo "ours.sh: VSWITCH_BENCH_FLOWCACHE must be true or false, got $fc" >&2; exit 2 ;;
esac
# VSWITCH_BENCH_QUANTUM: the bridge's readQuantum (e.g. off, 1mb); unset: the default.
qline=""
[ -n "${VSWITCH_BENCH_QUANTUM:-}" ] && qline="    readQuantum: $VSWITCH_BENCH_QUANTUM"
# VSWITCH_BENCH_SPARSE=true|false: the bridge's readSparse (README "Fair share"); unset: the default.
sline=""
case ${VSWITCH_BENCH_SPARSE:-} in
  "") ;;
  true|false) sline="    readSparse: $VSWITCH_BENCH_SPARSE" ;;
  *) echo "ours.sh: VSWITCH_BENCH_SPARSE must be true or false, got $VSWITCH_BENCH_SPARSE" >&2; exit 2 ;;
esac
# VSWITCH_BENCH_POLL_US=N: the daemon's pollBeforeSleepUs (README "Poll before sleep": the
# largest window it polls before sleeping, 0 = off), VSWITCH_BENCH_POLL_BUDGET=MS its
# pollBeforeSleepBudgetMs; unset: the defaults (an older `base` build without the keys refuses them).
pline=""
[ -n "${VSWITCH_BENCH_POLL_US:-}" ] && pline="pollBeforeSleepUs: $VSWITCH_BENCH_POLL_US"
[ -n "${VSWITCH_BENCH_POLL_BUDGET:-}" ] && pline="$pline
pollBeforeSleepBudgetMs: $VSWITCH_BENCH_POLL_BUDGET"
# VSWITCH_BENCH_TAP_WRITE_BATCH=true|false: the daemon's tapWriteBatch (README "Batched TAP
# writes"); unset: the default.
case ${VSWITCH_BENCH_TAP_WRITE_BATCH:-} in
  "") ;;
  true|false) pline="$pline
tapWriteBatch: $VSWITCH_BENCH_TAP_WRITE_BATCH" ;;
  *) echo "ours.sh: VSWITCH_BENCH_TAP_WRITE_BATCH must be true or false, got $VSWITCH_BENCH_TAP_WRITE_BATCH" >&2; exit 2 ;;
esac
# VSWITCH_BENCH_TURN_YIELD_US=N: the daemon's turnYieldUs (README "The turn yield"; 0 off);
# unset: the default.
[ -n "${VSWITCH_BENCH_TURN_YIELD_US:-}" ] && pline="$pline
turnYieldUs: $VSWITCH_BENCH_TURN_YIELD_US"
# The VMs' addresses: anchors.sh's IP1/IP2.
gline1="" gline2=""
case ${VSWITCH_BENCH_GUARD:-} in
  ""|false) ;;
  true)
    g="dhcp: true, ipSource: true, ra: true, dhcpv6: true, ipv6Source: true"
    gline1=", guard: { $g, bindings: [{ mac: '02:76:67:00:00:01', ip: 10.77.1.1 }] }"
    gline2=", guard: { $g, bindings: [{ mac: '02:76:67:00:00:02', ip: 10.77.1.2 }] }" ;;
  *) echo "ours.sh: VSWITCH_BENCH_GUARD must be true or false, got $VSWITCH_BENCH_GUARD" >&2; exit 2 ;;
esac
mkdir -p "$dir/state"
cat > "$dir/c.yaml" <<YAML
$pline
bridges:
  br0:
$fcline
$qline
$sline
    ports:
      $tap1: { type: tap, offload: $off, vlan: { mode: access, vid: 1 }$gline1 }
      $tap2: { type: tap, offload: $off, vlan: { mode: access, vid: 1 }$gline2 }
YAML
rm -f "$dir/s"
# VSWITCH_BENCH_RPS=MASK (experiment): once anchors.sh has moved the TAPs into the VM
# namespaces, their receive queues steer to the CPUs in MASK (RPS), so the receiving
# VM's stack runs there in softirq instead of inside the switch's TAP write.
if [ -n "${VSWITCH_BENCH_RPS:-}" ]; then
  ( for _ in $(seq 300); do
      sleep 0.1
      ip netns exec bAvm2 test -e "/sys/class/net/$tap2" 2>/dev/null || continue
      ip netns exec bAvm1 test -e "/sys/class/net/$tap1" 2>/dev/null || continue
      ip netns exec bAvm1 sh -c "echo $VSWITCH_BENCH_RPS > /sys/class/net/$tap1/queues/rx-0/rps_cpus"
      ip netns exec bAvm2 sh -c "echo $VSWITCH_BENCH_RPS > /sys/class/net/$tap2/queues/rx-0/rps_cpus"
      break
    done ) </dev/null >/dev/null 2>&1 &
fi
if [ -n "$gline1" ]; then
  # Wherever the TAP is now (here, or already in its VM namespace), it takes its MAC.
  ( for i in 1 2; do
      t=$tap1 ns=bAvm1; [ $i = 2 ] && t=$tap2 ns=bAvm2
      for _ in $(seq 1500); do
        ip link set dev "$t" address 02:76:67:00:00:0$i 2>/dev/null && break
        ip -n $ns link set dev "$t" address 02:76:67:00:00:0$i 2>/dev/null && break
        sleep 0.01
      done
    done
    for ns in bAvm1 bAvm2; do ip -n $ns neigh flush all 2>/dev/null; done ) </dev/null >/dev/null 2>&1 &
fi
if [ -n "${VSWITCH_BENCH_FC_LOG:-}" ]; then
  ( while sleep 10 && kill -0 $$ 2>/dev/null; do
      [ -S "$dir/s" ] || continue
      node "$js" stats --json --socket "$dir/s" 2>/dev/null \
        | python3 -c 'import json,sys; print(json.dumps([{"bridge": b["name"], "flowCache": b["flowCache"], "drops": [p.get("drops") for p in b["ports"]]} for b in json.load(sys.stdin)]))' \
        >> "$VSWITCH_BENCH_FC_LOG" 2>&1 || true
    done ) </dev/null >/dev/null 2>&1 &
fi
setsid=""
if [ "${VSWITCH_BENCH_SESSION:-own}" = own ]; then
  if [ "$(ps -o pgid= -p $$ | tr -d ' ')" != "$$" ]; then setsid=setsid
  else echo "ours.sh: leads its process group, setsid would fork: the daemon keeps the caller's session" >&2; fi
fi
exec $setsid node ${VSWITCH_BENCH_NODE_ARGS---no-memory-reducer} "$js" daemon --config "$dir/c.yaml" \
  --socket "$dir/s" --metrics off --state-dir "$dir/state" --log-level warn
