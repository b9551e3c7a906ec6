#!/usr/bin/env bash
# Removes what integration-test runs left behind when they were killed hard
# (SIGKILL leaves no chance for the in-process cleanup). Each run mirrors its
# registry to /tmp/vswitch-test-<prefix>.json; runs whose process is gone are
# cleaned: processes killed, namespaces and links deleted, temp dirs removed.
# Usage: test/scripts/cleanup.sh [--force]   (--force: also runs still alive)
set -u
force=${1:-}
shopt -s nullglob
for f in /tmp/vswitch-test-*.json; do
  pid=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")).pid)' "$f")
  if [[ "$force" != "--force" ]] && kill -0 "$pid" 2>/dev/null; then
    echo "skip $f: run $pid still alive"; continue
  fi
  echo "cleaning $f"
  node -e '
    const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    for (const p of s.pids) console.log("pid " + p);
    for (const n of s.namespaces) console.log("ns " + n);
    for (const l of s.links) console.log("link " + l);
    for (const d of s.dirs) console.log("dir " + d);
  ' "$f" | while read -r kind what; do
    case "$kind" in
      pid) grep -qaE "main\.js|tcpdump|busybox|iperf3|socat|python" "/proc/$what/cmdline" 2>/dev/null && kill -9 "$what" ;;
      ns) ip netns pids "$what" 2>/dev/null | xargs -r kill -9; ip netns del "$what" 2>/dev/null ;;
      link) ip link del "$what" 2>/dev/null ;;
      dir) [[ "$what" == /tmp/vswitch-* ]] && rm -rf -- "$what" ;;
    esac
  done
  rm -f -- "$f"
done
