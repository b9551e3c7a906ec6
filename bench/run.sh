#!/usr/bin/env bash
# bench/run.sh: vswitch beside its peers, in one run, interleaved.
#
#   bash bench/run.sh [-r ROUNDS] [-o RAW.tsv] [--busy one|half|one,half] [TOPOLOGY ...]
#
# Runs ../shared/bench/anchors.sh (the peers' harness: two namespaces as VMs on
# two ports of each switch; TCP with iperf3, 64-byte UDP with iperf3 and
# trafgen, ping and sockperf latency, the switch's CPU) with vswitch added as the
# topology `ours` (bench/ours.sh: one bridge, two TAPs, offloads on), then prints
# the medians and the ratios vswitch/peer, and the issue's targets.
# `ours` is the daemon as configured by default: the flow cache on (README "Flow
# cache", the default since s27). Topology `ours-nofc`: the same with the bridge's
# flow cache off (`flowCache: false`), the pipeline for every frame; `ours-fc`: the
# cache written out on (= `ours`, kept as an alias for older commands). Run beside
# `ours` in the same rounds, each gets its own table and targets.
# Topology `ours-insession`: `ours` left in the bench's session (ours.sh runs the
# daemon in its own, as the peers daemonize; bench/README.md "Busy host: the session").
# Topologies `ours-n` and `ours-fcn`: `ours` / `ours-fc` with node
# --no-memory-reducer (V8's memory reducer runs full collections a few seconds
# after a mark-compact when the daemon looks idle to V8, as it does when its
# frames do not enter JS: 10-30 ms stalls; bench/README.md "Flow cache and one
# JS entry per wakeup"). Since the installed daemon runs so (README "The daemon's
# heap"), ours.sh passes the flag by default and these equal `ours`/`ours-fc`;
# `ours-r`: `ours` with the memory reducer on (node without the flag).
# Topology `ours-guard`: `ours` with both ports guarded as DHCP-served VM ports are by
# default (IPv4 and IPv6 anti-spoofing guards), with configured bindings for the VMs'
# static addresses (ours.sh VSWITCH_BENCH_GUARD): the default deployment's replays
# (guarded IPv4 in the flow cache) measured beside `ours` in the same rounds.
# Topologies `base` and `base-fc`: `ours` / `ours-fc` with another build's daemon
# (BASE_JS=<tree>/packages/cli/dist/main.js), for a same-run A/B of two builds.
# Topologies ours-v1 .. ours-v4: `ours` with the environment in VSWITCH_BENCH_V1 ..
# VSWITCH_BENCH_V4 (VAR=value ...; ours.sh's knobs or the daemon's), experiments in
# the same rounds.
# Default topologies: ours kbridge vde ovs-tap ovs-tap-tso pasta; 3 rounds
# (about 6 minutes). Needs root. Installs missing Debian packages (apt-get).
# Environment: VSWITCH_SHARED (default: ../shared beside the repository), the
# BA_* knobs of anchors.sh (see its header), VSWITCH_BENCH_OFFLOAD=false to run
# vswitch without guest offloads.
# --busy MODE[,MODE] (or -b): every configuration (topology x round) runs once
# quiet and once per MODE with a CPU-bound load of normal priority beside it
# (bench/busy/lib.sh: `one` = one unpinned process spinning, `half` = both
# cores ~50 % busy), the load started before the switch is set up and stopped
# after its teardown, so each peer sees the same load; variants and topologies
# interleaved (anchors.sh's run_topo per configuration, sourced under one hold of
# its lock for the whole run; the variants' order alternating per round). The
# report prints each variant's table, then quiet and busy side by side with the
# ratios vswitch/peer of each.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
shared=${VSWITCH_SHARED:-$repo/../shared}
anchors=$shared/bench/anchors.sh

[ "$(id -u)" = 0 ] || { echo "bench/run.sh: needs root (namespaces, TAPs)" >&2; exit 1; }

rounds=3 raw="" busy=""
args=()
for a in "$@"; do [ "$a" = --busy ] && args+=(-b) || args+=("$a"); done
set -- "${args[@]}"
while getopts "r:o:b:h" opt; do
  case $opt in
    r) rounds=$OPTARG ;;
    o) raw=$OPTARG ;;
    b) busy=${OPTARG//,/ } ;;
    h) sed -n '2,/^set -eu/p' "$0" | sed 's/^# \{0,1\}//' | head -n -1; exit 0 ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ -f "$anchors" ] || { echo "bench/run.sh: no $anchors (set VSWITCH_SHARED to the shared/ folder)" >&2; exit 1; }
topos=${*:-ours kbridge vde ovs-tap ovs-tap-tso pasta}

# ---- tools (idempotent: only what is missing is installed) ----
need=()
declare -A pkg_of=([iperf3]=iperf3 [sockperf]=sockperf [trafgen]=netsniff-ng [busybox]=busybox [jq]=jq
  [ethtool]=ethtool [vde_switch]=vde2 [ovs-vswitchd]=openvswitch-switch [pasta]=passt [tc]=iproute2 [flock]=util-linux)
for t in "${!pkg_of[@]}"; do command -v "$t" >/dev/null 2>&1 || need+=("${pkg_of[$t]}"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "bench/run.sh: installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# ---- vswitch built? ----
if [ ! -f "$repo/packages/cli/dist/main.js" ] || [ ! -f "$repo/packages/netdev/build/Release/netdev.node" ]; then
  echo "bench/run.sh: building vswitch (pnpm build)" >&2
  (cd "$repo" && pnpm build >/dev/null)
fi

out=$(mktemp -d /tmp/vswitch-bench.XXXXXX)
trap 'rm -rf "$out"' EXIT
export BA_OURS_CMD="bash $here/ours.sh @DIR@ @TAP1@ @TAP2@"
# anchors.sh runs topology NAME as the function topo_NAME_up (dashes as
# underscores) and has only one `ours`: the flow-cache variant is a function it
# inherits through the environment (export -f), calling its own tapsw_up.
export BA_OURS_FC_CMD="env VSWITCH_BENCH_FLOWCACHE=true $BA_OURS_CMD"
topo_ours_fc_up() { tapsw_up "$BA_OURS_FC_CMD" "" 0; }
export BA_OURS_NOFC_CMD="env VSWITCH_BENCH_FLOWCACHE=false $BA_OURS_CMD"
topo_ours_nofc_up() { tapsw_up "$BA_OURS_NOFC_CMD" "" 0; }
export BA_OURS_INSESSION_CMD="env VSWITCH_BENCH_SESSION=inherit $BA_OURS_CMD"
topo_ours_insession_up() { tapsw_up "$BA_OURS_INSESSION_CMD" "" 0; }
# ours-n / ours-fcn: node --no-memory-reducer (see the header)
export BA_OURS_N_CMD="env VSWITCH_BENCH_NODE_ARGS=--no-memory-reducer $BA_OURS_CMD"
export BA_OURS_FCN_CMD="env VSWITCH_BENCH_NODE_ARGS=--no-memory-reducer VSWITCH_BENCH_FLOWCACHE=true $BA_OURS_CMD"
topo_ours_n_up() { tapsw_up "$BA_OURS_N_CMD" "" 0; }
topo_ours_fcn_up() { tapsw_up "$BA_OURS_FCN_CMD" "" 0; }
export BA_OURS_R_CMD="env VSWITCH_BENCH_NODE_ARGS= $BA_OURS_CMD"
topo_ours_r_up() { tapsw_up "$BA_OURS_R_CMD" "" 0; }
export BA_OURS_GUARD_CMD="env VSWITCH_BENCH_GUARD=true $BA_OURS_CMD"
topo_ours_guard_up() { tapsw_up "$BA_OURS_GUARD_CMD" "" 0; }
export -f topo_ours_guard_up
export -f topo_ours_fc_up topo_ours_nofc_up topo_ours_insession_up topo_ours_n_up topo_ours_fcn_up topo_ours_r_up
if [ -n "${BASE_JS:-}" ]; then
  [ -f "$BASE_JS" ] || { echo "bench/run.sh: BASE_JS=$BASE_JS: no such file" >&2; exit 1; }
  export BA_BASE_CMD="env VSWITCH_BENCH_JS=$BASE_JS $BA_OURS_CMD"
  export BA_BASE_FC_CMD="env VSWITCH_BENCH_JS=$BASE_JS VSWITCH_BENCH_FLOWCACHE=true $BA_OURS_CMD"
fi
# Topologies ours-v1 .. ours-v4: `ours` with the environment in VSWITCH_BENCH_V1 ..
# (space-separated VAR=value, e.g. "VSWITCH_BENCH_QUANTUM=off"), for experiments
# beside `ours` and `base` in the same rounds.
for i in 1 2 3 4; do
  v=VSWITCH_BENCH_V$i
  [ -n "${!v:-}" ] && export "BA_OURS_V${i}_CMD=env ${!v} $BA_OURS_CMD"
  eval "topo_ours_v${i}_up() { tapsw_up \"\${BA_OURS_V${i}_CMD:?topology ours-v${i} needs VSWITCH_BENCH_V${i}}\" \"\" 0; }"
  export -f "topo_ours_v${i}_up"
done
topo_base_up() { tapsw_up "${BA_BASE_CMD:?topology base needs BASE_JS}" "" 0; }
topo_base_fc_up() { tapsw_up "${BA_BASE_FC_CMD:?topology base-fc needs BASE_JS}" "" 0; }
export -f topo_base_up topo_base_fc_up
. "$here/lock.sh"
bench_lock bench/run.sh
if [ -z "$busy" ]; then
  echo "bench/run.sh: $anchors -r $rounds $topos" >&2
  bash "$anchors" -r "$rounds" -o "$out/raw.tsv" $topos | tee "$out/anchors.txt"
  [ -n "$raw" ] && cp "$out/raw.tsv" "$raw"
  python3 "$here/report.py" "$out/raw.tsv" $topos
  exit 0
fi

# ---- --busy: anchors.sh's run_topo per configuration, the load around it ----
. "$here/busy/lib.sh"
busy_build "$out"
for m in $busy; do case $m in one|half) ;; *) echo "bench/run.sh: --busy takes one, half or one,half" >&2; exit 2 ;; esac; done
# The lock (lock.sh) is held for the whole run: anchors.sh's helpers are sourced (zero
# rounds) and each configuration is its run_topo.
OPTIND=1
export BA_QUIET_BUDGET=0  # run.sh waits for quiet itself (quiet_wait), before the load starts
# shellcheck disable=SC1090
source "$anchors" -r 0 none >/dev/null
set +e
trap 'for p in "${BUSY_PIDS[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$out"; on_exit' EXIT
trap 'exit 130' INT TERM
printf 'round\ttopo\tmetric\tvalue\tvariant\n' > "$out/raw.tsv"
printf '0\tmeta\tloadavg_start\t%s\tall\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/raw.tsv"
t_start=$(date +%s)
variants="quiet $busy"
echo "bench/run.sh: $rounds round(s) of $topos, variants $variants; loadavg $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for r in $(seq "$rounds"); do
  order=$variants
  [ $((r % 2)) = 0 ] && order=$(tr ' ' '\n' <<<"$variants" | tac | tr '\n' ' ')
  for t in $topos; do
    for v in $order; do
      quiet_wait; bg=$QUIET_BG
      BUSY_CORES=""
      [ "$v" = quiet ] || busy_start "$v"
      la=$(cut -d' ' -f1 /proc/loadavg)
      printf 'round\ttopo\tmetric\tvalue\n' > "$out/part.tsv"
      RAW=$out/part.tsv ROUND=1
      run_topo "$t" >>"$out/anchors.txt" 2>&1
      [ "$v" = quiet ] || busy_stop
      { { tail -n +2 "$out/part.tsv" 2>/dev/null || true; } | awk -F'\t' -v OFS='\t' -v r="$r" -v v="$v" '$2 != "meta" {$1 = r; print $0, v}'
        printf '%s\t%s\t%s\t%s\t%s\n' "$r" "$t" pre_busy_pct "$bg" "$v" "$r" "$t" loadavg1 "$la" "$v"
        [ -n "$BUSY_CORES" ] && printf '%s\t%s\t%s\t%s\t%s\n' "$r" "$t" load_cores "$BUSY_CORES" "$v"
      } >> "$out/raw.tsv"
      rm -f "$out/part.tsv"
      [ -n "$raw" ] && cp "$out/raw.tsv" "$raw"  # what is done so far survives an interrupted run
      echo "bench/run.sh: round $r $t $v done (others ${bg} % busy before; loadavg $la${BUSY_CORES:+; load got $BUSY_CORES cores})" >&2
    done
  done
done
printf '0\tmeta\tloadavg_end\t%s\tall\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/raw.tsv"
printf '0\tmeta\twall_s\t%s\tall\n' "$(( $(date +%s) - t_start ))" >> "$out/raw.tsv"
[ -n "$raw" ] && cp "$out/raw.tsv" "$raw"
python3 "$here/report.py" "$out/raw.tsv" $topos
