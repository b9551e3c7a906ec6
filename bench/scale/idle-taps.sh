#!/usr/bin/env bash
# Idle cost of many ports: vswitch with N TAP ports (default 256, offloads on) in
# its own network namespace, nothing sending; after SETTLE s, CPU (utime+stime)
# over MEASURE s and RSS. Target (issue 5): < 1 % of a core, RSS < 150 MB.
# Usage: bash bench/scale/idle-taps.sh [N] [MEASURE_SECONDS]   (root)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
n=${1:-256} secs=${2:-10} settle=${SETTLE:-5}
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
id=$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
ns="bi${id}"
dir=$(mktemp -d "/tmp/vswitch-idle.XXXXXX")
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; ip netns del "$ns" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
{
  echo "bridges:"; echo "  br0:"; echo "    ports:"
  for i in $(seq 0 $((n - 1))); do echo "      bi${id}t$i: { type: tap, vlan: { mode: access, vid: $((i % 16 + 1)) } }"; done
} > "$dir/c.yaml"
ip netns exec "$ns" node "$repo/packages/cli/dist/main.js" daemon --config "$dir/c.yaml" --socket "$dir/s" \
  --metrics off --state-dir "$dir/state" --log-level warn >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ "$(ip -n "$ns" -o link show 2>/dev/null | grep -c "bi${id}t")" -ge "$n" ] && break; sleep 0.2; done
ports=$(ip -n "$ns" -o link show 2>/dev/null | grep -c "bi${id}t" || true)
sleep "$settle"
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
c0=$(ticks); t0=$(date +%s.%N)
sleep "$secs"
c1=$(ticks); t1=$(date +%s.%N)
rss=$(awk '/^VmRSS/{print $2}' "/proc/$pid/status")
awk -v p="$ports" -v c=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v a="$t0" -v b="$t1" -v r="$rss" 'BEGIN{
  printf "%d TAP ports, idle: CPU %.2f %% of a core over %.0f s, RSS %.1f MB (targets: < 1 %%, < 150 MB)\n", p, 100*c/hz/(b-a), b-a, r/1024 }'
