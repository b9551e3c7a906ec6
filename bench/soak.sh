#!/usr/bin/env bash
# Soak (issue 6 item 5): the daemon with 50 TAP ports (namespaces as VMs) in three
# VLANs on router networks with DHCP (leaseTime 60 s: renewals every 30 s), two of
# them interconnected. Traffic: every VM pings its gateway and a peer (one in
# another VLAN, routed) five times a second; UDP bursts (iperf3 -u) between VMs;
# port churn (delif/addif of a few ports every --churn-every seconds, their VM
# restarted on the new TAP with a fresh DHCP client). Every 10 s it samples the
# daemon's RSS (/proc/PID/status VmRSS) and its heap (metrics endpoint:
# nodejs_heap_size_used_bytes, process_resident_memory_bytes) into a CSV.
#
# Fails (exit 1) when memory grows without bound. The first --warmup seconds (60)
# are left out (V8 and the FDB/lease tables grow to their working set); over the
# rest, the RSS trend (least squares) of its second half exceeds --max-slope
# MiB/min, or the median RSS or heap of its last quarter exceeds 1.5x that of its
# second quarter. Also fails if the daemon dies. Use at least 300 s to judge.
#
# Usage: bash bench/soak.sh [--duration 600] [--ports 50] [--churn-every 15]
#                           [--max-slope 1.0] [--warmup 60] [--csv FILE]      (root; busybox, iperf3, curl, python3)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
duration=600 nports=50 churn_every=15 max_slope=1.0 warmup=60 csv=""
while [ $# -gt 0 ]; do
  case $1 in
    --duration) duration=$2; shift 2 ;;
    --ports) nports=$2; shift 2 ;;
    --churn-every) churn_every=$2; shift 2 ;;
    --max-slope) max_slope=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --csv) csv=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
for t in busybox iperf3 curl python3; do command -v $t >/dev/null || { echo "missing $t" >&2; exit 1; }; done
[ -f "$repo/packages/cli/dist/main.js" ] || { echo "build first: pnpm build" >&2; exit 1; }

id=$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
P="sk${id}"
dir=$(mktemp -d "/tmp/vswitch-soak.XXXXXX")
[ -n "$csv" ] || csv="$dir/soak.csv"
mport=$((20000 + 0x$id % 20000))
VLANS=(10 20 30)
dpid=""
cleanup() {
  [ -n "$dpid" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
  for i in $(seq 0 $((nports - 1))); do
    local ns="${P}v$i"
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
    ip netns del "$ns" 2>/dev/null
  done
  for i in $(seq 0 $((nports - 1))); do ip link del "${P}t$i" 2>/dev/null; done
}
trap 'cleanup' EXIT
trap 'exit 130' INT TERM

vlan_of() { echo "${VLANS[$(($1 % 3))]}"; }
tap() { echo "${P}t$1"; }
nsof() { echo "${P}v$1"; }

cat > "$dir/udhcpc.sh" <<'SH'
#!/bin/sh
case "$1" in
  deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    cur=$(ip -4 -o addr show dev "$interface" | awk '{print $4}')
    [ "$cur" = "$ip/$mask" ] || { ip -4 addr flush dev "$interface"; ip addr add "$ip/$mask" dev "$interface"; }
    for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
    echo "$1 $ip" >> /tmp/udhcpc-$interface.log ;;
esac
exit 0
SH
chmod +x "$dir/udhcpc.sh"

{
  echo "stateDir: $dir/state"
  echo "metrics: { listen: '127.0.0.1:$mport' }"
  echo "bridges:"
  echo "  br0:"
  echo "    ports:"
  for i in $(seq 0 $((nports - 1))); do echo "      $(tap $i): { type: tap, vlan: { mode: access, vid: $(vlan_of $i) } }"; done
  echo "routers:"
  echo "  r0:"
  echo "    interconnect: [[net10, net20]]"
  echo "    networks:"
  for v in "${VLANS[@]}"; do
    echo "      net$v: { bridge: br0, vlan: $v, address: 10.77.$v.1/24, dhcp: { pool: ['10.77.$v.100-10.77.$v.250'], leaseTime: 60 } }"
  done
} > "$dir/c.yaml"

node "$repo/packages/cli/dist/main.js" daemon --config "$dir/c.yaml" --socket "$dir/s" --log-level warn >>"$dir/log" 2>&1 &
dpid=$!
cli() { node "$repo/packages/cli/dist/main.js" --socket "$dir/s" "$@"; }
for _ in $(seq 100); do cli show >/dev/null 2>&1 && break; sleep 0.1; done
cli show >/dev/null 2>&1 || { echo "daemon did not start:"; tail -20 "$dir/log"; exit 1; }

# The VM in namespace i: its TAP moved in, a DHCP client, pings to the gateway and
# to a peer (i+3: same VLAN; i+1: the next VLAN, routed when interconnected).
start_vm() {
  local i=$1 ns t v
  ns=$(nsof $i) t=$(tap $i) v=$(vlan_of $i)
  for _ in $(seq 50); do ip link show "$t" >/dev/null 2>&1 && break; sleep 0.1; done
  ip link set "$t" netns "$ns" || return 1
  ip netns exec "$ns" ip link set "$t" up
  ip netns exec "$ns" busybox udhcpc -f -i "$t" -s "$dir/udhcpc.sh" -t 20 -T 1 -A 1 >/dev/null 2>&1 &
  ip netns exec "$ns" busybox ping -q -i 0.2 "10.77.$v.1" >/dev/null 2>&1 &
  # Peers get addresses from the pool in start order; aim at the pool range by name.
  ip netns exec "$ns" sh -c "while sleep 1; do for a in \$(seq 100 110); do busybox ping -q -c 1 -W 1 10.77.$(vlan_of $((i + 1))).\$a; done; done" >/dev/null 2>&1 &
  if [ $((i % 10)) = 0 ]; then ip netns exec "$ns" iperf3 -s -D -p 5201 >/dev/null 2>&1; fi
}
stop_vm() { ip netns pids "$(nsof $1)" 2>/dev/null | xargs -r kill 2>/dev/null; }

echo "soak: $nports ports, ${duration}s, churn every ${churn_every}s; dir $dir"
for i in $(seq 0 $((nports - 1))); do
  ip netns add "$(nsof $i)"; ip -n "$(nsof $i)" link set lo up
  ip netns exec "$(nsof $i)" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  start_vm $i
done
sleep 5
echo "leases after start: $(cli dhcp leases --json 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo '?')"

echo "t,rss_kb,heap_used_bytes,resident_bytes,ports_up,churns,bursts" > "$csv"
metric() { awk -v m="$1" '$1 == m { print $2; exit }' <<<"$2"; }
t0=$(date +%s) next_sample=0 next_churn=$churn_every next_burst=5 churns=0 bursts=0
while :; do
  now=$(( $(date +%s) - t0 ))
  kill -0 "$dpid" 2>/dev/null || { echo "FAIL: the daemon died"; tail -20 "$dir/log"; exit 1; }
  if [ "$now" -ge "$next_sample" ]; then
    rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$dpid/status")
    m=$(curl -s --max-time 2 "http://127.0.0.1:$mport/metrics")
    up=$(cli show br0 --json 2>/dev/null | python3 -c 'import json,sys; v=json.load(sys.stdin); b=v[0] if isinstance(v,list) else v; print(sum(1 for p in b["ports"] if p.get("state")=="up"))' 2>/dev/null || echo '')
    echo "$now,$rss,$(metric nodejs_heap_size_used_bytes "$m"),$(metric process_resident_memory_bytes "$m"),$up,$churns,$bursts" >> "$csv"
    next_sample=$((next_sample + 10))
  fi
  [ "$now" -ge "$duration" ] && break
  if [ "$now" -ge "$next_churn" ]; then
    # Three ports (never the iperf3 servers, i % 10 == 0) leave and come back.
    for k in 1 2 3; do
      i=$(( (RANDOM % nports) )); [ $((i % 10)) = 0 ] && i=$((i + 1))
      [ "$i" -ge "$nports" ] && continue
      stop_vm $i
      cli delif br0 "$(tap $i)" >/dev/null 2>&1
      cli addif br0 "$(tap $i)" --vlan "$(vlan_of $i)" >/dev/null 2>&1 && start_vm $i
      churns=$((churns + 1))
    done
    next_churn=$((next_churn + churn_every))
  fi
  if [ "$now" -ge "$next_burst" ]; then
    # A 3 s UDP burst (20 Mbit/s) from a random VM to its VLAN's server VM.
    s=$(( (RANDOM % ((nports + 9) / 10)) * 10 )); c=$((s + 3))
    if [ "$c" -lt "$nports" ]; then
      sip=$(ip -n "$(nsof $s)" -4 -o addr show dev "$(tap $s)" 2>/dev/null | awk '{print $4}' | cut -d/ -f1)
      [ -n "$sip" ] && { ip netns exec "$(nsof $c)" timeout 10 iperf3 -u -b 20M -t 3 -c "$sip" >/dev/null 2>&1 & bursts=$((bursts + 1)); }
    fi
    next_burst=$((next_burst + 7))
  fi
  sleep 1
done

echo "leases at the end: $(cli dhcp leases --json 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo '?')"
renews=$(cat /tmp/udhcpc-${P}t*.log 2>/dev/null | grep -c '^renew'); rm -f /tmp/udhcpc-${P}t*.log
echo "DHCP renewals applied by clients: $renews"
cp "$dir/log" "$dir/daemon.log" 2>/dev/null
python3 - "$csv" "$max_slope" "$warmup" <<'PY'
import csv, statistics, sys
allrows = [r for r in csv.DictReader(open(sys.argv[1])) if r['rss_kb']]
max_slope, warmup = float(sys.argv[2]), float(sys.argv[3])
rows = [r for r in allrows if float(r['t']) >= warmup]
print(f'all {len(allrows)} samples: RSS MiB {float(allrows[0]["rss_kb"]) / 1024:.1f} -> {float(allrows[-1]["rss_kb"]) / 1024:.1f}; judged from t >= {warmup:g} s')
t = [float(r['t']) for r in rows]
rss = [float(r['rss_kb']) / 1024 for r in rows]                      # MiB
heap = [float(r['heap_used_bytes'] or 0) / 2**20 for r in rows]     # MiB
n = len(rows)
if n < 6:
    print(f'only {n} samples after the warm-up: too short to judge'); sys.exit(1)
def slope(xs, ys):
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    d = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / d * 60 if d else 0.0
h = n // 2
q = n // 4
rs = slope(t[h:], rss[h:]); hs = slope(t[h:], heap[h:])
q2r, q4r = statistics.median(rss[q:2 * q]), statistics.median(rss[n - q:])
q2h, q4h = statistics.median(heap[q:2 * q]), statistics.median(heap[n - q:])
print(f'samples {n}; RSS MiB: start {rss[0]:.1f} min {min(rss):.1f} max {max(rss):.1f} end {rss[-1]:.1f}; '
      f'heap MiB: start {heap[0]:.1f} max {max(heap):.1f} end {heap[-1]:.1f}')
print(f'second half trend: RSS {rs:+.3f} MiB/min, heap {hs:+.3f} MiB/min (limit RSS {max_slope} MiB/min)')
print(f'median Q2 -> Q4: RSS {q2r:.1f} -> {q4r:.1f} MiB ({q4r / q2r:.2f}x), heap {q2h:.1f} -> {q4h:.1f} MiB ({q4h / q2h if q2h else 0:.2f}x)')
bad = []
if rs > max_slope: bad.append(f'RSS grows {rs:.2f} MiB/min over the second half')
if q4r > 1.5 * q2r: bad.append('RSS last-quarter median > 1.5x second-quarter median')
if q2h and q4h > 1.5 * q2h: bad.append('heap last-quarter median > 1.5x second-quarter median')
print('FAIL: ' + '; '.join(bad) if bad else 'PASS: memory bounded')
sys.exit(1 if bad else 0)
PY
rc=$?
echo "csv: $csv"
exit $rc
