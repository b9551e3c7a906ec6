#!/usr/bin/env bash
# bench/run.sh: vswitch beside its peers, in one run, interleaved.
#
#   bash bench/run.sh [-r ROUNDS] [-o RAW.tsv] [TOPOLOGY ...]
#
# Runs ../shared/bench/anchors.sh (the peers' harness: two namespaces as VMs on
# two ports of each switch; TCP with iperf3, 64-byte UDP with iperf3 and
# trafgen, ping and sockperf latency, the switch's CPU) with vswitch added as the
# topology `ours` (bench/ours.sh: one bridge, two TAPs, offloads on), then prints
# the medians and the ratios vswitch/peer, and the issue's targets.
# Default topologies: ours kbridge vde ovs-tap ovs-tap-tso pasta; 3 rounds
# (about 6 minutes). Needs root. Installs missing Debian packages (apt-get).
# Environment: VSWITCH_SHARED (default: ../shared beside the repository), the
# BA_* knobs of anchors.sh (see its header), VSWITCH_BENCH_OFFLOAD=false to run
# vswitch without guest offloads.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
shared=${VSWITCH_SHARED:-$repo/../shared}
anchors=$shared/bench/anchors.sh

[ "$(id -u)" = 0 ] || { echo "bench/run.sh: needs root (namespaces, TAPs)" >&2; exit 1; }
[ -f "$anchors" ] || { echo "bench/run.sh: no $anchors (set VSWITCH_SHARED to the shared/ folder)" >&2; exit 1; }

rounds=3 raw=""
while getopts "r:o:h" opt; do
  case $opt in
    r) rounds=$OPTARG ;;
    o) raw=$OPTARG ;;
    h) sed -n '2,/^set -eu/p' "$0" | sed 's/^# \{0,1\}//' | head -n -1; exit 0 ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
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
echo "bench/run.sh: $anchors -r $rounds $topos" >&2
bash "$anchors" -r "$rounds" -o "$out/raw.tsv" $topos | tee "$out/anchors.txt"
[ -n "$raw" ] && cp "$out/raw.tsv" "$raw"
python3 "$here/report.py" "$out/raw.tsv" $topos
