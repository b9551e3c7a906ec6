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
# Per phase also the daemon's CPU time (all its threads, and its main thread alone:
# the data plane's loop) and the load generator's (seconds, from /proc/PID/stat and
# /proc/PID/task/PID/stat), so what the daemon itself spends on a phase is visible.
# ISO_NODE_ARGS: extra node options for the daemon, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
# (one profile per thread, written when the daemon stops at the end).
# Every VM takes its address by DHCP (udhcpc): the ports are guarded, as VM ports
# of a VLAN with a router DHCP server are by default. The lease file lives on the
# machine's disk (mktemp -d under /var/tmp), so its fsyncs are real.
# Prints per phase the medians over rounds and the ratios to the quiet phase.
# Targets: TCP >= 0.8x and ping p99 <= 2x of quiet.
#
# ISO_FLOWCACHE="true false ...": each build's `flowCache` (in -j order; the same build
# given twice with "true false" is the flow cache on vs off in one run); unset: no key,
# each build's default.
# ISO_SMALL=1: after ping, 64-byte frames too (iperf3 -u -l 18 -b 0 for SECONDS, one
# stream): the frames per second v2 received, a column of its own.
#
# Usage: bash bench/isolation/run.sh [-r ROUNDS] [-s SECONDS] [-j MAIN_JS]... [-p PHASES]
#   -j: the daemon to run (default this tree's packages/cli/dist/main.js), e.g. an older build to compare;
#       given more than once, each build gets its own daemon and three VMs, set up at the start, and every
#       phase of every round runs on each build in turn (A, B, ...), so that the machine's noise spreads
#       over the builds alike; one table per build, then the builds side by side
#   -p: phases, default "quiet renew flood scrape cpu"
# Needs root, iperf3, busybox, python3, node.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
rounds=3 secs=5 phases="quiet renew flood scrape cpu"
builds=()
while getopts "r:s:j:p:" o; do
  case $o in r) rounds=$OPTARG ;; s) secs=$OPTARG ;; j) builds+=("$OPTARG") ;; p) phases=$OPTARG ;; *) exit 2 ;; esac
done
[ ${#builds[@]} -gt 0 ] || builds=("$repo/packages/cli/dist/main.js")
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
for t in iperf3 busybox python3 node; do command -v $t >/dev/null || { echo "missing $t" >&2; exit 1; }; done
for main_js in "${builds[@]}"; do [ -f "$main_js" ] || { echo "no $main_js (pnpm build)" >&2; exit 1; }; done
names=(A B C D E F)
[ ${#builds[@]} -le ${#names[@]} ] || { echo "at most ${#names[@]} builds" >&2; exit 2; }

id=$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
dir=$(mktemp -d "/var/tmp/vswitch-isolation.XXXXXX")
# Per build b: prefix P[b] (TAPs ${P}t1..3, namespaces ${P}v1..3), daemon pid, metrics URL, VM addresses, gateway MAC.
P=() daemons=() metrics=() ip1=() ip2=() ip3=() gw=() gwmac=()
bg=()
cleanup() {
  for p in "${bg[@]}"; do kill "$p" 2>/dev/null; done
  for d in "${daemons[@]}"; do kill "$d" 2>/dev/null; wait "$d" 2>/dev/null; done
  for p in "${P[@]}"; do for v in 1 2 3; do ip netns del "${p}v$v" 2>/dev/null; done; done
  rm -rf "$dir"
}
trap cleanup EXIT

cat > "$dir/udhcpc.sh" <<'SH'
#!/bin/sh
case "$1" in
  deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew) ip -4 addr flush dev "$interface"; ip addr add "$ip/$mask" dev "$interface" ;;
esac
exit 0
SH
chmod +x "$dir/udhcpc.sh"
# VM n of prefix p: the daemon's TAP moved into a namespace, its address by DHCP.
vm_up() {
  local ns="$1v$2" tap="$1t$2"
  ip netns add "$ns"; ip -n "$ns" link set lo up
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  for _ in $(seq 100); do ip link show "$tap" >/dev/null 2>&1 && break; sleep 0.1; done
  ip link set "$tap" netns "$ns"; ip -n "$ns" link set "$tap" up
  ip netns exec "$ns" busybox udhcpc -q -n -t 5 -T 1 -i "$tap" -s "$dir/udhcpc.sh" >/dev/null 2>&1 || return 1
  ip -n "$ns" -4 -o addr show dev "$tap" | awk '{split($4, a, "/"); print a[1]}'
}
read -r -a fcs <<<"${ISO_FLOWCACHE:-}"
for b in "${!builds[@]}"; do
  p="bi${id}${b}" d="$dir/$b" net="10.66.$((10 + b))"
  mkdir -p "$d"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  fcline=""
  case ${fcs[b]:-} in
    "") ;;
    true|false) fcline="    flowCache: ${fcs[b]}" ;;
    *) echo "ISO_FLOWCACHE: true or false per build, got ${fcs[b]}" >&2; exit 2 ;;
  esac
  cat > "$d/c.yaml" <<YAML
stateDir: $d/state
metrics: { listen: "127.0.0.1:$port" }
bridges:
  br0:
$fcline
    ports:
      ${p}t1: { type: tap, vlan: { mode: access, vid: 10 } }
      ${p}t2: { type: tap, vlan: { mode: access, vid: 10 } }
      ${p}t3: { type: tap, vlan: { mode: access, vid: 10 } }
routers:
  r0:
    networks:
      net10: { bridge: br0, vlan: 10, address: $net.1/24, dhcp: { pool: ["$net.100-$net.199"], leaseTime: 3600 } }
YAML
  # shellcheck disable=SC2086 # ISO_NODE_ARGS: several options, split on purpose
  node ${ISO_NODE_ARGS:-} "${builds[$b]}" daemon --config "$d/c.yaml" --socket "$d/s" --log-level warn >>"$d/log" 2>&1 &
  P[b]=$p daemons[b]=$! metrics[b]="http://127.0.0.1:$port/metrics" gw[b]=$net.1
  ip1[b]=$(vm_up "$p" 1) && ip2[b]=$(vm_up "$p" 2) && ip3[b]=$(vm_up "$p" 3) || { echo "VM setup failed; daemon log:" >&2; cat "$d/log" >&2; exit 1; }
  ip netns exec "${p}v3" busybox ping -c 1 -W 2 "${gw[b]}" >/dev/null
  gwmac[b]=$(ip -n "${p}v3" neigh show "${gw[b]}" | awk '{print $5}')
  [ -n "${gwmac[b]}" ] || { echo "no gateway MAC" >&2; exit 1; }
  ip netns exec "${p}v2" iperf3 -s -B "${ip2[b]}" -p 5311 >/dev/null 2>&1 &
  bg+=($!)
done
sleep 0.5
# utime + stime of a process, in seconds (0 once it is gone).
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15 + $16 + $17) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# utime + stime of a process's main thread.
main_cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/task/$1/stat" 2>/dev/null || echo 0; }
# sample BUILD NAME: a DHCP counter of that build's daemon.
sample() { curl -s --max-time 20 "${metrics[$1]}" | awk -v n="$2" '$1 ~ "^"n"\\{" && $1 ~ /type="ack"|vswitch_dhcp_lease_writes_total/ {s += $2} END {print s + 0}'; }

out=$dir/raw.tsv
: >"$dir/load"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for b in "${!builds[@]}"; do echo "build ${names[$b]}: ${builds[$b]}" >&2; done
for r in $(seq "$rounds"); do
  for ph in $phases; do
    for b in "${!builds[@]}"; do
      p=${P[b]} daemon=${daemons[b]}
      a0=$(sample "$b" vswitch_dhcp_messages_total) w0=$(sample "$b" vswitch_dhcp_lease_writes_total)
      load=""
      case $ph in
        renew) ip netns exec "${p}v3" python3 "$here/renew.py" "${p}t3" "${ip3[b]}" "${gw[b]}" "${gwmac[b]}" $((2 * secs + 4)) closed 64 >"$dir/load" 2>&1 & load=$! ;;
        flood) ip netns exec "${p}v3" python3 "$here/renew.py" "${p}t3" "${ip3[b]}" "${gw[b]}" "${gwmac[b]}" $((2 * secs + 4)) flood >"$dir/load" 2>&1 & load=$! ;;
        scrape) node "$here/scrape.mjs" "${metrics[b]}" 500 $((2 * secs + 4)) >"$dir/load" 2>&1 & load=$! ;;
        cpu) node -e 'const end = Date.now() + Number(process.argv[1]) * 1000; while (Date.now() < end);' $((2 * secs + 4)) >"$dir/load" 2>&1 & load=$! ;;
      esac
      [ -n "$load" ] && { bg+=("$load"); sleep 1; }
      d0=$(cpu_of "$daemon") m0=$(main_cpu_of "$daemon") l1=0
      j=$(timeout $((secs + 20)) ip netns exec "${p}v1" iperf3 -c "${ip2[b]}" -p 5311 -t "$secs" -J 2>/dev/null)
      gbps=$(python3 -c 'import json,sys
try: print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9)
except Exception: print(0)' <<<"$j")
      times=$(ip netns exec "${p}v1" busybox ping -c $((secs * 100)) -i 0.01 -W 2 "${ip2[b]}" 2>/dev/null | sed -n 's/.*time=\([0-9.]*\) ms/\1/p' | tr '\n' ' ')
      d1=$(cpu_of "$daemon") m1=$(main_cpu_of "$daemon")
      small=""
      if [ -n "${ISO_SMALL:-}" ]; then
        j=$(timeout $((secs + 20)) ip netns exec "${p}v1" iperf3 -c "${ip2[b]}" -p 5311 -u -l 18 -b 0 -t "$secs" -J 2>/dev/null)
        small=$(python3 -c 'import json,sys
try:
    s = json.load(sys.stdin)["end"]["sum"]; print((s["packets"] - s["lost_packets"]) / s["seconds"])
except Exception: print(0)' <<<"$j")
      fi
      [ -n "$load" ] && { l1=$(cpu_of "$load"); wait "$load" 2>/dev/null; }
      a1=$(sample "$b" vswitch_dhcp_messages_total) w1=$(sample "$b" vswitch_dhcp_lease_writes_total)
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$ph" "$gbps" "$((a1 - a0))" "$((w1 - w0))" "$(tr '\n' ' ' <"$dir/load" 2>/dev/null)" "$times" \
        "$(awk -v a="$d0" -v b="$d1" 'BEGIN {print b - a}')" "$l1" "$(awk -v a="$m0" -v b="$m1" 'BEGIN {print b - a}')" "${names[$b]}" "$small" >>"$out"
      : >"$dir/load"
    done
  done
  echo "round $r done (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
done
for b in "${!builds[@]}"; do
  [ -n "${ISO_DEBUG:-}" ] && curl -s "${metrics[b]}" | grep -E "^vswitch_(dhcp|flow_cache_(hits|installs|invalidations))" | grep -v " 0$" >&2
  kill -0 "${daemons[b]}" 2>/dev/null || echo "build ${names[$b]}: the daemon died; log: $(tail -5 "$dir/$b/log")" >&2
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 - "$out" "$phases" "$secs" "${builds[@]}" <<'PY'
import sys, statistics as st
rows = [l.rstrip('\n').split('\t') for l in open(sys.argv[1])]
phases, secs, builds = sys.argv[2].split(), float(sys.argv[3]), sys.argv[4:]
names = 'ABCDEF'[:len(builds)]
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float('nan')
by = {}
small = any(r[11] for r in rows)
for r, ph, g, acks, writes, load, times, dcpu, lcpu, mcpu, b, sm in rows:
    t = [float(x) for x in times.split()]
    by.setdefault((b, ph), []).append(dict(g=float(g), p50=pct(t, 50), p99=pct(t, 99), lost=secs * 100 - len(t),
                                           acks=int(acks), writes=int(writes), load=load.strip(), dcpu=float(dcpu), lcpu=float(lcpu), mcpu=float(mcpu),
                                           sm=float(sm or 'nan')))
med = lambda b, ph, k: st.median(x[k] for x in by[(b, ph)]) if by.get((b, ph)) else float('nan')
for b, path in zip(names, builds):
    if len(builds) > 1: print(f'\nbuild {b}: {path}\n')
    q = {k: med(b, 'quiet', k) for k in ('g', 'p50', 'p99')}
    print('| phase | TCP Gbit/s | ÷quiet | ping p50 ms | ping p99 ms | p99 ÷quiet | pings lost | DHCP ACKs | lease writes | daemon CPU s | main thread CPU s | load CPU s | load |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for ph in phases:
        if (b, ph) not in by: continue
        g, p50, p99 = med(b, ph, 'g'), med(b, ph, 'p50'), med(b, ph, 'p99')
        print(f"| {ph} | {g:.2f} | {g / q['g']:.2f}x | {p50:.3f} | {p99:.3f} | {p99 / q['p99']:.2f}x | {med(b, ph, 'lost'):.0f} | "
              f"{med(b, ph, 'acks'):.0f} | {med(b, ph, 'writes'):.0f} | {med(b, ph, 'dcpu'):.2f} | {med(b, ph, 'mcpu'):.2f} | {med(b, ph, 'lcpu'):.2f} | {by[(b, ph)][-1]['load']} |")
    for ph in phases:
        if ph in ('quiet', 'cpu') or (b, ph) not in by: continue
        ok = med(b, ph, 'g') >= 0.8 * q['g'] and med(b, ph, 'p99') <= 2 * q['p99']
        print(f"target {ph}: TCP >= 0.8x and p99 <= 2x of quiet: {'met' if ok else 'missed'}")
if len(builds) > 1:
    print('\nside by side (medians; per round the builds ran one after the other):\n')
    print('| phase | ' + ' | '.join(f'{b} TCP Gbit/s' for b in names) + ' | ' + ' | '.join(f'{b} ping p50 ms' for b in names) + ' | '
          + ' | '.join(f'{b} ping p99 ms' for b in names) + ' | ' + (' | '.join(f'{b} 64 B kfps' for b in names) + ' | ' if small else '')
          + ' | '.join(f'{b} main thread CPU s' for b in names) + ' |')
    print('|---|' + '---|' * ((5 if small else 4) * len(names)))
    for ph in phases:
        print(f'| {ph} | ' + ' | '.join(f'{med(b, ph, "g"):.2f}' for b in names) + ' | ' + ' | '.join(f'{med(b, ph, "p50"):.3f}' for b in names) + ' | '
              + ' | '.join(f'{med(b, ph, "p99"):.3f}' for b in names) + ' | '
              + (' | '.join(f'{med(b, ph, "sm") / 1e3:.1f}' for b in names) + ' | ' if small else '')
              + ' | '.join(f'{med(b, ph, "mcpu"):.2f}' for b in names) + ' |')
    if len(names) == 2:
        print(f'\nB/A per phase (medians of the per-round ratios: above 1, B moved more TCP or 64 B frames, or took longer to ping):\n')
        print('| phase | TCP B/A | ping p50 B/A | ping p99 B/A |' + (' 64 B B/A |' if small else ''))
        print('|---|---|---|---|' + ('---|' if small else ''))
        for ph in phases:
            rs = lambda k: st.median(y[k] / x[k] for x, y in zip(by.get(('A', ph), []), by.get(('B', ph), [])) if x[k]) if by.get(('A', ph)) else float('nan')
            print(f'| {ph} | {rs("g"):.2f} | {rs("p50"):.2f} | {rs("p99"):.2f} |' + (f' {rs("sm"):.2f} |' if small else ''))
n = len(by.get((names[0], phases[0]), []))
print(f'(medians over {n} rounds; ACKs and lease writes during the phase, '
      f'about {2 * secs + 3:.0f} s; daemon CPU: during the TCP and ping runs ({2 * secs:.0f} s), all threads and the main thread '
      f'(the data plane\'s loop); load CPU: the load generator\'s until then; load: the last round\'s load generator output)')
PY
