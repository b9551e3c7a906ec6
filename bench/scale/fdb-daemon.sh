#!/usr/bin/env bash
# 100,000 MACs through the real daemon: vswitch with one bridge and two TAP ports
# (access VLAN 1, offloads on, as bench/ours.sh; the bridge's MAC limit raised to
# N + 1000 with `maxMacs`, ageing 3600 s), two namespaces as VMs on the TAPs. Each
# round, interleaved:
#   small: the table holds the two VMs' MACs (and nothing else);
#          64-byte rate VM1 -> VM2;
#   fill:  frames from N (100,000) distinct source MACs sent into VM1's port (raw
#          AF_PACKET socket, /usr/bin/python3, paced; resent until the table holds
#          them), checked with `vswitch stats` (and `showmacs` in round 1);
#   big:   the same 64-byte rate with N + 2 entries;
#   reset: ageing set to 1 s until the table is back to the VMs' MACs, then 3600.
# The 64-byte rate, as anchors.sh measures it: trafgen at full blast from VM1
# through its qdisc (-q), 106-byte UDP frames to VM2's discard port, counted by
# rx_packets on VM2's interface over SECONDS; also the daemon's CPU per frame
# received in that window and its scavenges (--trace-gc: what the forwarding path
# allocates), and iperf3 -u -l 64 -b 0 (received kpps). Medians of ROUNDS, and the
# ratios big / small (target: >= 0.9).
# Usage: bash bench/scale/fdb-daemon.sh [ROUNDS (5)] [SECONDS (4)] [N (100000)]
# Environment: QUIET_MAX (25) and QUIET_BUDGET (30): before each measurement and
# fill, wait up to QUIET_BUDGET s while the machine is more than QUIET_MAX % busy.
# VSWITCH_BENCH_NODE_ARGS: extra node options for the daemon (it always runs with
# --trace-gc).
# Root. Installs netsniff-ng (trafgen), iperf3, busybox (ping) and jq with apt-get
# if missing. All names carry a random id; everything is removed on exit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
rounds=${1:-5} secs=${2:-4} n=${3:-100000}
[ "$(id -u)" = 0 ] || { echo "fdb-daemon.sh: needs root" >&2; exit 1; }
need=()
command -v trafgen >/dev/null || need+=(netsniff-ng)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v busybox >/dev/null || need+=(busybox)
command -v jq >/dev/null || need+=(jq)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ -f "$repo/packages/cli/dist/main.js" ] || { echo "fdb-daemon.sh: build first (pnpm build)" >&2; exit 1; }
py=/usr/bin/python3

id=$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
nsw="fd${id}s" ns1="fd${id}a" ns2="fd${id}b" t1="fd${id}t1" t2="fd${id}t2"
ip1=10.78.1.1 ip2=10.78.1.2
dir=$(mktemp -d "/tmp/vswitch-fdbd.XXXXXX")
pid="" srv=""
cleanup() {
  set +e
  [ -n "$srv" ] && kill "$srv" 2>/dev/null && wait "$srv" 2>/dev/null
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  # what is left in our namespaces (an iperf3 server of an interrupted round) is ours
  for ns in "$ns1" "$ns2" "$nsw"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

vs() { node "$repo/packages/cli/dist/main.js" --socket "$dir/s" "$@"; }
fdb_size() { vs stats br0 --json | jq '(if type == "array" then .[0] else . end).fdb.size'; }
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
rx() { ip netns exec "$ns2" cat "/sys/class/net/$t2/statistics/rx_packets"; }

for ns in "$nsw" "$ns1" "$ns2"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
done
cat > "$dir/c.yaml" <<YAML
bridges:
  br0:
    ageing: 3600
    maxMacs: $((n + 1000))
    ports:
      $t1: { type: tap, offload: true, vlan: { mode: access, vid: 1 } }
      $t2: { type: tap, offload: true, vlan: { mode: access, vid: 1 } }
YAML
ip netns exec "$nsw" node --trace-gc ${VSWITCH_BENCH_NODE_ARGS:-} "$repo/packages/cli/dist/main.js" daemon --config "$dir/c.yaml" --socket "$dir/s" \
  --metrics off --state-dir "$dir/state" --log-level warn >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  ip -n "$nsw" link show "$t1" >/dev/null 2>&1 && ip -n "$nsw" link show "$t2" >/dev/null 2>&1 && [ -S "$dir/s" ] && break
  sleep 0.1
done
sleep 0.3
ip -n "$nsw" link set "$t1" netns "$ns1"
ip -n "$nsw" link set "$t2" netns "$ns2"
ip -n "$ns1" addr add "$ip1/24" dev "$t1"; ip -n "$ns1" link set "$t1" up
ip -n "$ns2" addr add "$ip2/24" dev "$t2"; ip -n "$ns2" link set "$t2" up
m1=$(ip netns exec "$ns1" cat "/sys/class/net/$t1/address")
m2=$(ip netns exec "$ns2" cat "/sys/class/net/$t2/address")
ip netns exec "$ns1" busybox ping -c 3 -i 0.2 -W 1 "$ip2" >/dev/null || { echo "fdb-daemon.sh: VM1 cannot reach VM2" >&2; cat "$dir/log" >&2; exit 1; }
printf '{ eth(da=%s, sa=%s), ipv4(daddr=%s, saddr=%s, ttl=64), udp(sp=4000, dp=9), fill(0x00, 64) }\n' "$m2" "$m1" "$ip2" "$ip1" > "$dir/tg.cfg"

# The fill: N frames from distinct source MACs 02:fd:00:00:00:00 + i (locally
# administered unicast), to VM2's MAC, EtherType 0x88b5 (local experimental: VM2's
# stack ignores them). Paced in bursts of 256 so the TAP's queue is not overrun;
# each further pass (frames are lost when the daemon gets no CPU for a while)
# sleeps longer between bursts.
cat > "$dir/fill.py" <<'PY'
import socket, sys, time
ifname, dst, n, pace = sys.argv[1], bytes.fromhex(sys.argv[2].replace(':', '')), int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
base = 0x02fd00000000
pad = b'\x00' * 46
for i in range(n):
    s.send(dst + (base + i).to_bytes(6, 'big') + b'\x88\xb5' + pad)
    if i % 256 == 255:
        time.sleep(pace)
PY

# The machine is shared: wait (1 s steps, at most QUIET_BUDGET s) while it is more
# than QUIET_MAX % busy (our daemon idles meanwhile), as anchors.sh does.
quiet() {
  local i a b
  for i in $(seq "${QUIET_BUDGET:-30}"); do
    a=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8; exit}' /proc/stat); sleep 1
    b=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8; exit}' /proc/stat)
    awk -v a="$a" -v b="$b" -v m="${QUIET_MAX:-25}" 'BEGIN{split(a, x, " "); split(b, y, " "); exit !(100 * (y[1] - x[1]) / (y[2] - x[2]) <= m)}' && return 0
  done
  echo "fdb-daemon.sh: machine still busy after ${QUIET_BUDGET:-30} s, measuring anyway" >&2
}

# One 64-byte measurement: prints "trafgen_kpps cpu_us_per_frame iperf3_kpps
# gc_bytes_per_frame scavenges": what the daemon's scavenges (--trace-gc lines
# "Scavenge A (.) -> B (.) MB") reclaimed during the trafgen window, per frame
# received, and how many there were: the young garbage the forwarding path makes
# (0 scavenges: less than one young generation's worth in the window).
measure() {
  local r0 r1 c0 c1 a b sent j g0 g1 gc
  quiet
  g0=$(wc -l < "$dir/log")
  r0=$(rx); c0=$(ticks); a=$(date +%s.%N)
  ip netns exec "$ns1" timeout -s INT "$secs" trafgen --dev "$t1" --conf "$dir/tg.cfg" --cpus 1 -q >"$dir/tg.log" 2>&1 || true
  b=$(date +%s.%N); c1=$(ticks); sleep 0.2; r1=$(rx)
  g1=$(wc -l < "$dir/log")
  gc=$(sed -n "$((g0 + 1)),${g1}p" "$dir/log" | awk '/Scavenge/{n++; for (i = 1; i <= NF; i++) if ($i == "Scavenge") s += $(i + 1) - $(i + 4)} END{printf "%.0f %d", s * 1048576, n}')
  sent=$(awk '/packets outgoing/{print $1; exit}' "$dir/tg.log")
  [ -n "$sent" ] && [ "$sent" != 0 ] || { echo "trafgen failed: $(tail -3 "$dir/tg.log")" >&2; exit 1; }
  ip netns exec "$ns2" iperf3 -s -1 >/dev/null 2>&1 &
  srv=$!
  sleep 0.3
  j=$(ip netns exec "$ns1" iperf3 -c "$ip2" -u -l 64 -b 0 -t "$secs" -J 2>/dev/null || true)
  wait "$srv" 2>/dev/null || true; srv=""
  awk -v r=$((r1 - r0)) -v c=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v a="$a" -v b="$b" -v g="${gc% *}" -v gn="${gc#* }" \
    -v ip="$(jq -r '.end.sum_received | (.packets - .lost_packets) / .seconds / 1000' <<<"$j" 2>/dev/null || echo nan)" \
    'BEGIN{ printf "%.1f %.2f %.1f %.1f %d\n", r/(b-a)/1e3, r ? 1e6*c/hz/r : 0, ip, r ? g/r : 0, gn }'
}

base_size=$(fdb_size)
echo "fdb-daemon.sh: daemon pid $pid, VMs $ns1 ($m1) -> $ns2 ($m2), table at start $base_size entries; $rounds rounds of ${secs} s, N = $n" >&2
: > "$dir/res"
for r in $(seq "$rounds"); do
  small=$(measure)
  t0=$(date +%s.%N)
  for try in 1 2 3 4 5 6 7 8; do
    quiet
    ip netns exec "$ns1" "$py" "$dir/fill.py" "$t1" "$m2" "$n" "$(awk -v t="$try" 'BEGIN{print 0.0005 * t}')"
    size=$(fdb_size)
    [ "$size" -ge $((n + base_size)) ] && break
  done
  t1f=$(date +%s.%N)
  [ "$size" -ge $((n + base_size)) ] || { echo "fdb-daemon.sh: table holds $size entries after 8 fills, want $((n + base_size))" >&2; exit 1; }
  if [ "$r" = 1 ]; then
    shown=$(vs showmacs br0 --json | jq 'length')
    rss=$(awk '/^VmRSS/{print $2}' "/proc/$pid/status")
    echo "round 1: filled in $(awk -v a="$t0" -v b="$t1f" 'BEGIN{printf "%.1f", b-a}') s ($try pass(es)); showmacs lists $shown entries; daemon RSS $((rss / 1024)) MB" >&2
  fi
  ip netns exec "$ns1" busybox ping -c 1 -W 1 "$ip2" >/dev/null # both VMs' MACs fresh
  big=$(measure)
  size_after=$(fdb_size)
  echo "$r $small $big $size_after" >> "$dir/res"
  echo "round $r: small (${base_size} entries) trafgen kpps, us/frame, iperf3 kpps, gc B/frame, scavenges = $small; big ($size_after entries) = $big" >&2
  # Reset: everything ages out within ~2 s at 1 s ageing; then the VMs' MACs come back.
  vs setageing br0 1 >/dev/null
  for _ in $(seq 50); do [ "$(fdb_size)" -le "$base_size" ] && break; sleep 0.2; done
  vs setageing br0 3600 >/dev/null
  ip netns exec "$ns1" busybox ping -c 2 -i 0.2 -W 1 "$ip2" >/dev/null
done

awk -v n="$n" '
  function med(a, k,   i, j, t) { for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t } return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }
  { k++; st[k] = $2; sc[k] = $3; si[k] = $4; sg[k] = $5; sn += $6; bt[k] = $7; bc[k] = $8; bi[k] = $9; bg[k] = $10; bn += $11; sz = $12 }
  END {
    mst = med(st, k); mbt = med(bt, k); msc = med(sc, k); mbc = med(bc, k); msi = med(si, k); mbi = med(bi, k)
    msg = med(sg, k); mbg = med(bg, k)
    printf "64-byte frames VM1 -> VM2 through the daemon, medians of %d rounds:\n", k
    printf "  trafgen received:  %7.1f kpps with the VMs'"'"' 2 MACs, %7.1f kpps with %d entries: ratio %.2fx (target >= 0.9x)\n", mst, mbt, sz, mbt / mst
    printf "  daemon CPU/frame:  %7.2f us,                   %7.2f us:                 ratio %.2fx\n", msc, mbc, mbc / msc
    printf "  iperf3 64 B UDP:   %7.1f kpps,                  %7.1f kpps:               ratio %.2fx\n", msi, mbi, mbi / msi
    printf "  daemon scavenges during trafgen, all rounds: %d and %d; young garbage reclaimed: %.1f and %.1f bytes per frame (median)\n", sn, bn, msg, mbg
  }' "$dir/res"
