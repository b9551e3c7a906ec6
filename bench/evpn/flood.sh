#!/usr/bin/env bash
# A flood of N EVPN type-2 routes against the real daemon (issue 16, "a flood of
# 100,000 type-2 routes ... bounded and counted"). Host A: the vswitch daemon with its
# managed gobgpd, VNI 100 on VLAN 10 of br0, two VM namespaces on TAPs of br0 pinging
# each other (every 100 ms) all along through the switch. A speaker namespace on a veth
# underlay runs test/scripts/bgp-evpn-inject.py (the evpn test's hand-written iBGP
# speaker, a hundred NLRIs per UPDATE) and sends N type-2 routes for distinct MACs.
# Reports, each figure with the load average:
#   - time from the speaker's first UPDATE until all N are judged (installed +
#     refused = N, from `vswitch evpn show --json`), and the speaker's own send time
#   - RSS (VmRSS from /proc) of the daemon and of gobgpd: before, peak, after
#   - the VMs' ping loss and max RTT during the flood
#   - `vswitch show --json` response time (the CLI, node start included) before and
#     during the flood: the control socket must stay responsive
#   - after the speaker's session drops (it is killed: gobgpd withdraws its paths),
#     the time until installed counts are 0, and RSS after that
#   With a route limit on the speaker's neighbour (evpn.neighbors[].maxPrefixes, default
#   20,000) gobgpd closes the session once the speaker passes it: the flood is then "cut"
#   (the time until `evpn show` counts the hit and has none of the speaker's routes left).
# Usage: bash bench/evpn/flood.sh [N]     (default 100000)
# Environment: TIMEOUT (s, default 1800) for the flood to be judged, and again for the
#   withdrawal; MAX (evpn.maxRemoteMacs, default 4096, the daemon's default); MAXPFX
#   (the neighbour's maxPrefixes; default: the daemon's; 0 = none, the old behaviour); MAIN_JS
#   (default: this checkout's build); PROFILE=1: the daemon runs with --cpu-prof, the
#   profile kept in the printed run directory; KEEP=1 keeps the run directory.
# Names are per run (bf<4 hex>*); a trap removes namespaces and stops what this
# script started, on exit or failure. Needs root, gobgpd, python3, jq, node.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
N=${1:-100000}
MAX=${MAX:-4096}
MAIN_JS=${MAIN_JS:-$repo/packages/cli/dist/main.js}
p=bf$(printf %04x $RANDOM)
A=${p}a S=${p}s V1=${p}v1 V2=${p}v2
UA=${p}ua US=${p}us T1=${p}t1 T2=${p}t2
NET=10.234
dir=$(mktemp -d "/tmp/bfevpn.XXXXXX")
sock=$dir/vswitch.sock
pids=()

load() { cut -d' ' -f1-3 /proc/loadavg; }
now() { date +%s.%N; }
cleanup() {
  for x in "${pids[@]}"; do kill -INT "$x" 2>/dev/null; done
  if [ -n "${dpid:-}" ]; then
    kill -TERM "$dpid" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$dpid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$dpid" 2>/dev/null
  fi
  for x in "${pids[@]}"; do kill -KILL "$x" 2>/dev/null; wait "$x" 2>/dev/null; done
  for ns in "$V1" "$V2" "$S" "$A"; do ip netns del "$ns" 2>/dev/null; done
  if [ "${KEEP:-}" = 1 ] || [ "${PROFILE:-}" = 1 ]; then echo "run directory: $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM
die() { echo "flood.sh: $*" >&2; exit 1; }
cli() { node "$MAIN_JS" "$@" --socket "$sock"; }
evpn() { cli evpn show --json; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

for ns in "$A" "$S" "$V1" "$V2"; do ip netns add "$ns" || die "netns $ns"; ip -n "$ns" link set lo up; done
ip link add "$UA" netns "$A" type veth peer name "$US" netns "$S" || die veth
ip -n "$A" addr add $NET.0.1/24 dev "$UA" && ip -n "$A" link set "$UA" up
ip -n "$S" addr add $NET.0.3/24 dev "$US" && ip -n "$S" link set "$US" up

cat >"$dir/vswitch.yaml" <<EOF
metrics: { listen: 'off' }
stateDir: $dir/state
bridges:
  br0:
    ports:
      $T1: { type: tap, vlan: { mode: access, vid: 10 } }
      $T2: { type: tap, vlan: { mode: access, vid: 10 } }
vxlan: { local: $NET.0.1, interface: $UA, bridges: { br0: [ { vni: 100, vlan: 10, flood: [] } ] } }
evpn: { asn: 65000, neighbors: [ { address: $NET.0.3, remoteAs: 65000${MAXPFX:+, maxPrefixes: $MAXPFX} } ], maxRemoteMacs: $MAX }
EOF
prof=()
[ "${PROFILE:-}" = 1 ] && prof=(--cpu-prof --cpu-prof-dir="$dir/prof")
ip netns exec "$A" node "${prof[@]}" "$MAIN_JS" daemon --config "$dir/vswitch.yaml" --socket "$sock" 2>"$dir/daemon.log" >/dev/null &
dpid=$!
for _ in $(seq 150); do cli show --json >/dev/null 2>&1 && break; kill -0 $dpid 2>/dev/null || die "daemon exited: $(tail -5 "$dir/daemon.log")"; sleep 0.2; done
i=0
for t in "$T1" "$T2"; do
  i=$((i + 1)); v=${p}v$i
  ip -n "$A" link set "$t" netns "$v" || die "tap $t"
  ip -n "$v" addr add $NET.1.$i/24 dev "$t" && ip -n "$v" link set "$t" up
done
gpid=0
for _ in $(seq 150); do
  gpid=$(evpn 2>/dev/null | jq -r '.gobgpd.pid // 0')
  [ "$gpid" -gt 0 ] 2>/dev/null && evpn | jq -e '.connected' >/dev/null && break
  sleep 0.2
done
[ "$gpid" -gt 0 ] 2>/dev/null || die "gobgpd not up"

# Phase 1 opens the session with no routes; phase 2 (the flood) waits for $dir/go.
python3 - "$N" "$NET.0.3" "$dir/go" >"$dir/phases.json" <<'PY'
import json, sys
n, x, go = int(sys.argv[1]), sys.argv[2], sys.argv[3]
mk = lambda i: '02:ee:%02x:%02x:%02x:01' % ((i >> 16) & 255, (i >> 8) & 255, i & 255)
json.dump([{'wait': None, 'routes': []}, {'wait': go, 'routes': [
  {'mac': mk(i), 'vni': 100, 'rt': '65000:100', 'rd': x + ':100', 'seq': None} for i in range(n)]}], sys.stdout)
PY
ip netns exec "$S" python3 "$repo/test/scripts/bgp-evpn-inject.py" $NET.0.3 $NET.0.1 65000 "$dir/phases.json" >"$dir/speaker.out" 2>"$dir/speaker.err" &
spid=$!
pids+=("$spid")
for _ in $(seq 300); do grep -q 'sent 0' "$dir/speaker.out" && break; kill -0 $spid 2>/dev/null || die "speaker: $(cat "$dir/speaker.err")"; sleep 0.2; done
for _ in $(seq 150); do [ "$(evpn | jq -r '.neighbors[0].state')" = established ] && break; sleep 0.2; done

# Baseline: pings, show latency, RSS.
ip netns exec "$V1" busybox ping -i 0.1 $NET.1.2 >"$dir/ping.out" 2>&1 &
ppid=$!
pids+=("$ppid")
( while :; do echo "$(now) $(rss $dpid) $(rss $gpid)"; sleep 0.5; done ) >"$dir/rss.tsv" &
pids+=("$!")
sleep 3
ip netns exec "$V1" busybox ping -c 5 -i 0.2 -q $NET.1.2 >/dev/null || die "the VMs do not ping each other before the flood"
showms() { local t0; t0=$(now); cli show --json >/dev/null; awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%d", (b - a) * 1000 }'; }
base_show=$(for _ in 1 2 3; do showms; echo; done | sort -n | sed -n 2p)
rss_d0=$(rss $dpid) rss_g0=$(rss $gpid)
echo "flood.sh: N=$N maxRemoteMacs=$MAX daemon pid $dpid, gobgpd pid $gpid; before: RSS daemon ${rss_d0} kB gobgpd ${rss_g0} kB, show ${base_show} ms (load $(load))"

# The flood.
kill -INT "$ppid"; wait "$ppid" 2>/dev/null
ip netns exec "$V1" busybox ping -i 0.1 $NET.1.2 >"$dir/ping.out" 2>&1 &
ppid=$!
pids+=("$ppid")
( while :; do showms; echo; sleep 1; done ) >"$dir/show.ms" &
shpid=$!
pids+=("$shpid")
c_d0=$(cpu $dpid) c_g0=$(cpu $gpid)
t0=$(now)
touch "$dir/go"
sent=''
judged=''
cut=''
deadline=$(( $(date +%s) + ${TIMEOUT:-1800} ))
while :; do
  [ -z "$sent" ] && grep -q "sent $N" "$dir/speaker.out" && sent=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
  j=$(evpn) || j='{}'
  got=$(jq '([.rejected[]] | add) + .vnis[0].installed.type2' <<<"$j" 2>/dev/null || echo 0)
  [ "${got:-0}" -ge "$N" ] && { judged=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'); break; }
  # Cut by the route limit: the hit counted and the speaker's routes gone.
  [ "$(jq '(.neighbors[0].prefixLimit.exceeded // 0) > 0 and .vnis[0].installed.type2 == 0' <<<"$j" 2>/dev/null)" = true ] && { cut=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'); break; }
  # Progress every 30 s: how the rate falls as gobgpd's RIB grows (bench/README.md).
  [ $(( $(date +%s) % 30 )) = 0 ] && echo "flood.sh: $(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }') s: $got judged, gobgpd CPU $(( ($(cpu $gpid) - c_g0) / $(getconf CLK_TCK) )) s (load $(load))"
  [ "$(date +%s)" -gt "$deadline" ] && break
  kill -0 $dpid 2>/dev/null || die "daemon died: $(tail -5 "$dir/daemon.log")"
  sleep 1
done
kill -INT "$ppid"; wait "$ppid" 2>/dev/null
kill "$shpid"; wait "$shpid" 2>/dev/null
tflood=$(now)
hz=$(getconf CLK_TCK)
cpus="CPU daemon $(( ($(cpu $dpid) - c_d0) / hz )) s gobgpd $(( ($(cpu $gpid) - c_g0) / hz )) s"
loss=$(grep -o '[0-9]* packets received, [0-9.]*% packet loss' "$dir/ping.out" | awk '{print $1 " received, " $4 " lost"}')
sent_n=$(grep -o '^[0-9]* packets transmitted' "$dir/ping.out" | cut -d' ' -f1)
maxrtt=$(grep -o 'time=[0-9.]*' "$dir/ping.out" | cut -d= -f2 | sort -n | tail -1)
show_max=$(sort -n "$dir/show.ms" | tail -1)
show_med=$(sort -n "$dir/show.ms" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
peak() { awk -v a="$1" -v b="$2" -v c="$3" '$1 >= a && $1 <= b && $c > m {m = $c} END {print m + 0}' "$dir/rss.tsv"; }
if [ -n "$cut" ]; then how="cut by the route limit in $cut s"; else how="all judged in ${judged:-NOT (timeout)} s"; fi
echo "flood.sh: speaker sent $(grep -o 'sent [0-9]*' "$dir/speaker.out" | tail -1 | cut -d' ' -f2) of $N in ${sent:-?} s; $how: $(jq -c '{installed: .vnis[0].installed.type2, routedMacs: .vnis[0].routedMacs, remoteMacs: .vnis[0].remoteMacs, rejected: .rejected, received: .neighbors[0].received, state: .neighbors[0].state, prefixLimit: .neighbors[0].prefixLimit}' <<<"$j") (load $(load)); speaker: $(grep -o 'notification [0-9/]*' "$dir/speaker.out" | head -1)"
echo "flood.sh: during the flood: pings every 100 ms: $loss of $sent_n sent, max RTT ${maxrtt} ms; show median ${show_med} ms max ${show_max} ms over $(wc -l <"$dir/show.ms") calls; peak RSS daemon $(peak "$t0" "$tflood" 2) kB gobgpd $(peak "$t0" "$tflood" 3) kB; $cpus (load $(load))"

# The session drops: every route is withdrawn.
kill -KILL "$spid"; wait "$spid" 2>/dev/null
c_d0=$(cpu $dpid) c_g0=$(cpu $gpid)
t1=$(now)
deadline=$(( $(date +%s) + ${TIMEOUT:-1800} ))
gone=''
while :; do
  j=$(evpn) || j='{}'
  [ "$(jq '.vnis[0].installed.type2 + .vnis[0].routedMacs' <<<"$j")" = 0 ] && { gone=$(awk -v a="$t1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'); break; }
  [ "$(date +%s)" -gt "$deadline" ] && break
  sleep 1
done
sleep 5
echo "flood.sh: session dropped: installed back to 0 in ${gone:-NOT (timeout)} s; $(jq -c '{installed: .vnis[0].installed.type2, routedMacs: .vnis[0].routedMacs, mobilitySeqs: .mobilitySeqs}' <<<"$j"); peak RSS daemon $(peak "$t1" "$(now)" 2) kB gobgpd $(peak "$t1" "$(now)" 3) kB; after: RSS daemon $(rss $dpid) kB gobgpd $(rss $gpid) kB; CPU daemon $(( ($(cpu $dpid) - c_d0) / hz )) s gobgpd $(( ($(cpu $gpid) - c_g0) / hz )) s (load $(load))"
ip netns exec "$V1" busybox ping -c 5 -i 0.2 -q $NET.1.2 | grep -o '[0-9]* packets received' | sed 's/^/flood.sh: after: VM pings /'
