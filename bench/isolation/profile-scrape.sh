#!/usr/bin/env bash
# The daemon's threads under scrape load, from V8 CPU profiles: a daemon with the
# isolation bench's config (a bridge with three TAPs, a router with a DHCP network;
# no VMs and no traffic, so that every busy stretch of the main thread is the
# scrapes' doing), N concurrent scrapers for SECONDS (scrape.mjs), then per thread
# the longest stretches without an idle sample (busy.mjs). The main thread is the
# data plane's event loop: its longest busy stretch is how long a frame arriving on
# a TAP could wait for its read. A busy stretch can hold several turns of the loop
# when no turn blocks (setImmediate chains: a sliced render), so -m polls measures
# the turns themselves instead: strace on the main thread's epoll calls for 5 s in
# the middle of the window, the work between two polls (polls.py; inflated by
# strace, compare builds measured alike).
# Usage: bash bench/isolation/profile-scrape.sh [-j MAIN_JS] [-s SECONDS] [-c SCRAPERS] [-o DIR] [-m prof|polls]
#   -o: keep the profiles in DIR (default: a temp dir, removed)
# Needs root (TAPs), node; strace for -m polls.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
main_js="$repo/packages/cli/dist/main.js" secs=10 conc=500 keep="" mode=prof
while getopts "j:s:c:o:m:" o; do
  case $o in j) main_js=$OPTARG ;; s) secs=$OPTARG ;; c) conc=$OPTARG ;; o) keep=$OPTARG ;; m) mode=$OPTARG ;; *) exit 2 ;; esac
done
[ "$mode" = prof ] || [ "$mode" = polls ] || { echo "-m prof or polls" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
[ -f "$main_js" ] || { echo "no $main_js (pnpm build)" >&2; exit 1; }
id=$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
P="bp${id}"
dir=$(mktemp -d "/var/tmp/vswitch-profile.XXXXXX")
prof=${keep:-$dir/prof}
mkdir -p "$prof"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
daemon=""
cleanup() {
  [ -n "$daemon" ] && { kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null; }
  rm -rf "$dir"
}
trap cleanup EXIT
cat > "$dir/c.yaml" <<YAML
stateDir: $dir/state
metrics: { listen: "127.0.0.1:$port" }
bridges:
  br0:
    ports:
      ${P}t1: { type: tap, vlan: { mode: access, vid: 10 } }
      ${P}t2: { type: tap, vlan: { mode: access, vid: 10 } }
      ${P}t3: { type: tap, vlan: { mode: access, vid: 10 } }
routers:
  r0:
    networks:
      net10: { bridge: br0, vlan: 10, address: 10.67.10.1/24, dhcp: { pool: ["10.67.10.100-10.67.10.199"], leaseTime: 3600 } }
YAML
t0=$(date +%s.%N)
prof_args=()
[ "$mode" = prof ] && prof_args=(--cpu-prof --cpu-prof-dir="$prof")
node "${prof_args[@]}" "$main_js" daemon --config "$dir/c.yaml" --socket "$dir/s" --log-level warn >>"$dir/log" 2>&1 &
daemon=$!
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/metrics" && break; sleep 0.1; done
size=$(curl -s "http://127.0.0.1:$port/metrics" | wc -c)
echo "daemon $main_js; exposition $size bytes; load average $(cut -d' ' -f1-3 /proc/loadavg)"
sleep 1
t1=$(date +%s.%N)
node "$here/scrape.mjs" "http://127.0.0.1:$port/metrics" "$conc" "$secs" &
scraper=$!
if [ "$mode" = polls ]; then
  sleep "$(awk -v s="$secs" 'BEGIN {print (s - 5) / 2}')"
  # -p PID: the main thread only (its TID is the PID).
  timeout -s INT 5 strace -p "$daemon" -tt -T -e trace=epoll_pwait,epoll_wait -o "$prof/polls.strace" 2>/dev/null
fi
wait "$scraper"
t2=$(date +%s.%N)
sleep 1
kill "$daemon"; wait "$daemon"; daemon=""
if [ "$mode" = polls ]; then
  python3 "$here/polls.py" "$prof/polls.strace"
  exit 0
fi
# CPU.<date>.<time>.<pid>.<thread id>.<seq>.cpuprofile: thread id 0 is the main thread.
for f in "$prof"/*.cpuprofile; do
  case $(basename "$f" | cut -d. -f5) in 0) echo "main thread:" ;; *) echo "other thread (metrics server):" ;; esac
  # The scrape window only: start-up (module loading) and shutdown (TAPs closed) are not the scrapes' doing.
  node "$here/busy.mjs" "$f" 5 "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" "$(awk -v a="$t0" -v b="$t2" 'BEGIN {print b - a}')"
done
