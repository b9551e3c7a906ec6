#!/usr/bin/env bash
# Tenant isolation under control-plane load (issue 12): what two VMs see of each
# other (TCP with iperf3, one stream; ping p50/p99, busybox, 10 ms apart) while a
# third VM or a local user keeps the daemon's control paths busy. Phases, all in one
# run, interleaved over the rounds:
#   quiet   nothing else
#   renew   vm3 renews its own valid lease as fast as the server lets it: a client
#           keeping 64 RENEWING REQUESTs in flight, a new one for each ACK (renew.py closed)
#   flood   vm3 sends the same REQUEST flat out without waiting (renew.py flood): a packet
#           flood at the gateway, what a per-port DHCP rate limit is for
#   scrape  500 concurrent scrapes of /metrics, each restarted as it ends (scrape.mjs)
#   cpu     control: a local process spinning on one core for as long as the scrapers
#           run, no request to the daemon at all; what any busy local user costs the
#           two VMs on this machine, to tell the daemon's share of a phase from the
#           machine's
# Per phase also the daemon's CPU time and the load generator's (seconds, from
# /proc/PID/stat), so what the daemon itself spends on a phase is visible.
# Every VM takes its address by DHCP (udhcpc): the ports are guarded, as VM ports
# of a VLAN with a router DHCP server are by default. The lease file lives on the
# machine's disk (mktemp -d under /var/tmp), so its fsyncs are real.
# Prints per phase the medians over rounds and the ratios to the quiet phase.
# Targets: TCP >= 0.8x and ping p99 <= 2x of quiet.
#
# Usage: bash bench/isolation/run.sh [-r ROUNDS] [-s SECONDS] [-j MAIN_JS] [-p PHASES]
#   -j: the daemon to run (default this tree's packages/cli/dist/main.js), e.g. an older build to compare
#   -p: phases, default "quiet renew flood scrape cpu"
# Needs root, iperf3, busybox, python3, node.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
rounds=3 secs=5 main_js="$repo/packages/cli/dist/main.js" phases="quiet renew flood scrape cpu"
while getopts "r:s:j:p:" o; do
  case $o in r) rounds=$OPTARG ;; s) secs=$OPTARG ;; j) main_js=$OPTARG ;; p) phases=$OPTARG ;; *) exit 2 ;; esac
done
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
for t in iperf3 busybox python3 node; do command -v $t >/dev/null || { echo "missing $t" >&2; exit 1; }; done
[ -f "$main_js" ] || { echo "no $main_js (pnpm build)" >&2; exit 1; }

id=$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
P="bi${id}"
dir=$(mktemp -d "/var/tmp/vswitch-isolation.XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
metrics="http://127.0.0.1:$port/metrics"
daemon=""
bg=()
cleanup() {
  for p in "${bg[@]}"; do kill "$p" 2>/dev/null; done
  [ -n "$daemon" ] && { kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null; }
  for v in 1 2 3; do ip netns del "${P}v$v" 2>/dev/null; done
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
      net10: { bridge: br0, vlan: 10, address: 10.66.10.1/24, dhcp: { pool: ["10.66.10.100-10.66.10.199"], leaseTime: 3600 } }
YAML
node "$main_js" daemon --config "$dir/c.yaml" --socket "$dir/s" --log-level warn >>"$dir/log" 2>&1 &
daemon=$!

cat > "$dir/udhcpc.sh" <<'SH'
#!/bin/sh
case "$1" in
  deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew) ip -4 addr flush dev "$interface"; ip addr add "$ip/$mask" dev "$interface" ;;
esac
exit 0
SH
chmod +x "$dir/udhcpc.sh"
# VM n: the daemon's TAP moved into a namespace, its address by DHCP.
vm_up() {
  local ns="${P}v$1" tap="${P}t$1"
  ip netns add "$ns"; ip -n "$ns" link set lo up
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  for _ in $(seq 100); do ip link show "$tap" >/dev/null 2>&1 && break; sleep 0.1; done
  ip link set "$tap" netns "$ns"; ip -n "$ns" link set "$tap" up
  ip netns exec "$ns" busybox udhcpc -q -n -t 5 -T 1 -i "$tap" -s "$dir/udhcpc.sh" >/dev/null 2>&1 || return 1
  ip -n "$ns" -4 -o addr show dev "$tap" | awk '{split($4, a, "/"); print a[1]}'
}
ip1=$(vm_up 1) && ip2=$(vm_up 2) && ip3=$(vm_up 3) || { echo "VM setup failed; daemon log:" >&2; cat "$dir/log" >&2; exit 1; }
ip netns exec "${P}v3" busybox ping -c 1 -W 2 10.66.10.1 >/dev/null
gwmac=$(ip -n "${P}v3" neigh show 10.66.10.1 | awk '{print $5}')
[ -n "$gwmac" ] || { echo "no gateway MAC" >&2; exit 1; }
ip netns exec "${P}v2" iperf3 -s -B "$ip2" -p 5311 >/dev/null 2>&1 &
bg+=($!)
sleep 0.5
# utime + stime of a process, in seconds (0 once it is gone).
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15 + $16 + $17) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0; }
sample() { curl -s --max-time 20 "$metrics" | awk -v n="$1" '$1 ~ "^"n"\\{" && $1 ~ /type="ack"|vswitch_dhcp_lease_writes_total/ {s += $2} END {print s + 0}'; }

out=$dir/raw.tsv
: >"$dir/load"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); daemon $main_js" >&2
for r in $(seq "$rounds"); do
  for ph in $phases; do
    a0=$(sample vswitch_dhcp_messages_total) w0=$(sample vswitch_dhcp_lease_writes_total)
    load=""
    case $ph in
      renew) ip netns exec "${P}v3" python3 "$here/renew.py" "${P}t3" "$ip3" 10.66.10.1 "$gwmac" $((2 * secs + 4)) closed 64 >"$dir/load" 2>&1 & load=$! ;;
      flood) ip netns exec "${P}v3" python3 "$here/renew.py" "${P}t3" "$ip3" 10.66.10.1 "$gwmac" $((2 * secs + 4)) flood >"$dir/load" 2>&1 & load=$! ;;
      scrape) node "$here/scrape.mjs" "$metrics" 500 $((2 * secs + 4)) >"$dir/load" 2>&1 & load=$! ;;
      cpu) node -e 'const end = Date.now() + Number(process.argv[1]) * 1000; while (Date.now() < end);' $((2 * secs + 4)) >"$dir/load" 2>&1 & load=$! ;;
    esac
    [ -n "$load" ] && { bg+=("$load"); sleep 1; }
    d0=$(cpu_of "$daemon") l1=0
    j=$(timeout $((secs + 20)) ip netns exec "${P}v1" iperf3 -c "$ip2" -p 5311 -t "$secs" -J 2>/dev/null)
    gbps=$(python3 -c 'import json,sys
try: print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9)
except Exception: print(0)' <<<"$j")
    times=$(ip netns exec "${P}v1" busybox ping -c $((secs * 100)) -i 0.01 -W 2 "$ip2" 2>/dev/null | sed -n 's/.*time=\([0-9.]*\) ms/\1/p' | tr '\n' ' ')
    d1=$(cpu_of "$daemon")
    [ -n "$load" ] && { l1=$(cpu_of "$load"); wait "$load" 2>/dev/null; }
    a1=$(sample vswitch_dhcp_messages_total) w1=$(sample vswitch_dhcp_lease_writes_total)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$ph" "$gbps" "$((a1 - a0))" "$((w1 - w0))" "$(tr '\n' ' ' <"$dir/load" 2>/dev/null)" "$times" \
      "$(awk -v a="$d0" -v b="$d1" 'BEGIN {print b - a}')" "$l1" >>"$out"
    : >"$dir/load"
  done
  echo "round $r done (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
done
[ -n "${ISO_DEBUG:-}" ] && curl -s "$metrics" | grep -E "^vswitch_dhcp" | grep -v " 0$" >&2
kill -0 "$daemon" 2>/dev/null || echo "the daemon died; log: $(tail -5 "$dir/log")" >&2
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 - "$out" "$phases" "$secs" <<'PY'
import sys, statistics as st
rows = [l.rstrip('\n').split('\t') for l in open(sys.argv[1])]
phases, secs = sys.argv[2].split(), float(sys.argv[3])
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float('nan')
by = {}
for r, ph, g, acks, writes, load, times, dcpu, lcpu in rows:
    t = [float(x) for x in times.split()]
    by.setdefault(ph, []).append(dict(g=float(g), p50=pct(t, 50), p99=pct(t, 99), lost=secs * 100 - len(t),
                                      acks=int(acks), writes=int(writes), load=load.strip(), dcpu=float(dcpu), lcpu=float(lcpu)))
med = lambda ph, k: st.median(x[k] for x in by[ph]) if by.get(ph) else float('nan')
q = {k: med('quiet', k) for k in ('g', 'p50', 'p99')}
print('| phase | TCP Gbit/s | ÷quiet | ping p50 ms | ping p99 ms | p99 ÷quiet | pings lost | DHCP ACKs | lease writes | daemon CPU s | load CPU s | load |')
print('|---|---|---|---|---|---|---|---|---|---|---|---|')
for ph in phases:
    if ph not in by: continue
    g, p50, p99 = med(ph, 'g'), med(ph, 'p50'), med(ph, 'p99')
    print(f"| {ph} | {g:.2f} | {g / q['g']:.2f}x | {p50:.3f} | {p99:.3f} | {p99 / q['p99']:.2f}x | {med(ph, 'lost'):.0f} | "
          f"{med(ph, 'acks'):.0f} | {med(ph, 'writes'):.0f} | {med(ph, 'dcpu'):.2f} | {med(ph, 'lcpu'):.2f} | {by[ph][-1]['load']} |")
print(f'(medians over {len(by.get("quiet", []))} rounds; ACKs and lease writes during the phase, '
      f'about {2 * secs + 3:.0f} s; daemon CPU: during the TCP and ping runs ({2 * secs:.0f} s); load CPU: the '
      f'load generator\'s until then; load: the last round\'s load generator output)')
for ph in phases:
    if ph in ('quiet', 'cpu') or ph not in by: continue
    ok = med(ph, 'g') >= 0.8 * q['g'] and med(ph, 'p99') <= 2 * q['p99']
    print(f"target {ph}: TCP >= 0.8x and p99 <= 2x of quiet: {'met' if ok else 'missed'}")
PY
