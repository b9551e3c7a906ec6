#!/usr/bin/env bash
# bench/flowcache/run.sh: the flow cache's key + probe per frame (probe.c), this tree's
# native/flowcache.c and, with BASE=<other tree>, that tree's too, alternated ROUNDS times
# in one run (a same-run ratio; the machine is shared: load average before and after).
#   bash bench/flowcache/run.sh [ROUNDS] [FRAMES]     BASE=<tree>: the A/B
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
rounds=${1:-5} frames=${2:-20000000}
out=$(mktemp -d /tmp/vswitch-fcprobe.XXXXXX)
trap 'rm -rf "$out"' EXIT
build() { cc -O2 -std=c11 -D_GNU_SOURCE -I "$1/packages/netdev/native" -o "$2" "$here/probe.c" "$1/packages/netdev/native/flowcache.c"; }
build "$repo" "$out/this"
[ -n "${BASE:-}" ] && build "$BASE" "$out/base"
echo "loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$rounds"); do
  "$out/this" "$frames" | sed "s/^/round $r this: /"
  [ -n "${BASE:-}" ] && "$out/base" "$frames" | sed "s/^/round $r base: /"
done
echo "loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)"
