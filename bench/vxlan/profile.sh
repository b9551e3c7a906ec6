#!/usr/bin/env bash
# Where the VXLAN bench's TCP test spends its time (bench/README.md "Offloads on the
# underlay"): runs `run.sh -r 1 -s 16 -p 1 TOPOLOGY` (ours or base) and, 1.5 s into its
# TCP test, traces both vswitch daemons for 4 s, counting the bytes VM B received over
# the same window, so counts can be put per GB:
#   strace   syscall counts (strace -c -f; slows the daemons, the per-GB ratio holds)
#   perf     samples (perf record -F 999) per daemon, symbol and DSO
# Output in OUT: info (bytes received, load average, each daemon's pid), strace.txt or
# perf.data, bench.txt, and vxlan0.json / vxlan1.json: `vxlan show --json` of the sender
# (host 0) and the receiver (host 1) at the window's start (.a) and end (.b), whose
# counters give the run lengths (segments per UDP GSO send, per GRO burst, per TAP write).
# Usage: bash bench/vxlan/profile.sh OUT ours|base strace|perf   (BASE_JS, BASE_OFFLOAD as run.sh)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$1 topo=$2 how=$3
mkdir -p "$out"
bash "$here/run.sh" -r 1 -s 16 -p 1 "$topo" >"$out/bench.txt" 2>"$out/bench.err" &
b=$!
for _ in $(seq 300); do pgrep -f "iperf3 -c 10.78.1.2" >/dev/null && break; sleep 0.1; done
sleep 1.5
# run.sh names its namespaces bx<4 hex>*, VM B's TAP <prefix>t1, and runs daemons with a config under /tmp/bxvxlan.*.
vb=$(ip netns list | grep -o 'bx[0-9a-f]*vb' | head -1) p=${vb%vb}
pids=$(pgrep -f "main.js daemon --config /tmp/bxvxlan" | tr '\n' ' ')
# The daemons' sockets: run.sh's $RUN/ours<i>/s (host 0 sends, host 1 receives).
run=$(ls -dt /tmp/bxvxlan.* | head -1)
js=${OURS_JS:-$here/../../packages/cli/dist/main.js}
snap() { for i in 0 1; do node "$js" vxlan show --json --socket "$run/ours$i/s" >"$out/vxlan$i.$1.json" 2>/dev/null; done; }
snap a
r0=$(ip netns exec "$vb" cat "/sys/class/net/${p}t1/statistics/rx_bytes")
if [ "$how" = strace ]; then
  args=(); for x in $pids; do args+=(-p "$x"); done
  timeout -s INT 4 strace -c -f "${args[@]}" -o "$out/strace.txt" 2>/dev/null
else
  perf record -F 999 -o "$out/perf.data" -p "$(echo $pids | tr ' ' ',')" -- sleep 4 2>"$out/perf.err"
fi
r1=$(ip netns exec "$vb" cat "/sys/class/net/${p}t1/statistics/rx_bytes")
snap b
roles=""; for i in 0 1; do roles+=" host$i=$(pgrep -f "daemon --config $run/ours$i/c.yaml" | head -1)"; done
echo "daemons $pids (${roles# }: host0 sends, host1 receives); VM B received $((r1 - r0)) bytes in the window; load average $(cut -d' ' -f1-3 /proc/loadavg)" >"$out/info"
wait $b
cat "$out/info"
