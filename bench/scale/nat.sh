#!/usr/bin/env bash
# NAT throughput: a VM behind vswitch's router (TAP port, VLAN 10 network, NAPT to
# an uplink veth), the same router with a host uplink (sockets of the host, issue
# 8), and pasta (userspace NAT, as ../shared/bench/anchors.sh runs it), interleaved,
# iperf3 one stream each way. "up" = VM -> internet (pasta:
# namespace -> host), "down" = internet -> VM (pasta: host -> namespace).
# Target (issue 5): vswitch >= 1.0x pasta in each direction.
# IPv6 (issue 14): the host uplink over IPv6 (a network with ipv6, the VM on its
# prefix, flows leave as IPv6 sockets of HOST to its address fd77:9::1) against
# pasta -6 (the namespace at fd77:9::2), the same iperf3 runs.
# Usage: bash bench/scale/nat.sh [ROUNDS] [SECONDS]   (root; needs iperf3, jq, pasta)
#        FAMILIES="4 6" (default) runs both tables; FAMILIES=6 only the IPv6 one, FAMILIES=4 only the IPv4 one.
#        RCVBUF=auto|BYTES: the host uplink's `rcvbuf` (default auto: the kernel's autotuning alone).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
rounds=${1:-3} secs=${2:-5} families=${FAMILIES:-4 6}
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
for t in iperf3 jq pasta; do command -v $t >/dev/null || { echo "missing $t (bench/run.sh installs it)" >&2; exit 1; }; done
id=$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
VM="bn${id}vm" INET="bn${id}in" HOST="bn${id}h" UP="bn${id}up" TAP="bn${id}t"
dir=$(mktemp -d "/tmp/vswitch-nat.XXXXXX")
pids=()
down() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  pids=()
  ip link del "$UP" 2>/dev/null
  for n in "$VM" "$INET" "$HOST"; do ip netns del "$n" 2>/dev/null; done
}
trap 'down; rm -rf "$dir"' EXIT
ns_add() { ip netns add "$1"; ip -n "$1" link set lo up; ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1; }
ticks() { local s=0 p; for p in "$@"; do s=$((s + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $s; }

# iperf3 CLIENT_NS SERVER_NS SERVER_IP [-R] -> "gbps cpu_s"
measure() {
  local cns=$1 sns=$2 sip=$3 rev=${4:-} j c0 c1
  ip netns exec "$sns" iperf3 -s -1 -B "$sip" -p 5301 >/dev/null 2>&1 &
  local srv=$!
  for _ in $(seq 50); do ip netns exec "$sns" ss -Hltn 'sport = :5301' | grep -q . && break; sleep 0.1; done
  c0=$(ticks "${pids[@]}")
  j=$(timeout $((secs + 15)) ip netns exec "$cns" iperf3 -c "$sip" -p 5301 -t "$secs" $rev -J 2>/dev/null)
  c1=$(ticks "${pids[@]}")
  kill $srv 2>/dev/null; wait $srv 2>/dev/null
  printf '%s %s\n' "$(jq -r '(.end.sum_received.bits_per_second // 0) / 1e9' <<<"$j")" "$(awk -v c=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.2f", c/hz}')"
}

# The daemon's TAP (in namespace $1, "" = root) moved into the VM, addressed, default
# route via the router; waits until the VM pings $2.
vm_plug() {
  local from=${1:+-n $1}
  for _ in $(seq 100); do ip $from link show "$TAP" >/dev/null 2>&1 && break; sleep 0.1; done
  ip $from link set "$TAP" netns "$VM"
  ip -n "$VM" addr add 10.64.10.11/24 dev "$TAP"; ip -n "$VM" link set "$TAP" up; ip -n "$VM" route add default via 10.64.10.1
  for _ in $(seq 50); do ip netns exec "$VM" busybox ping -c 1 -W 1 "$2" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}
# pasta's "host" (and the host uplink's): HOST with 10.77.9.1/24 on a veth, and the VM namespace.
# With "6": IPv6 on in both, and fd77:9::1/64 on the veth too.
host_ns() {
  ns_add "$HOST"; ns_add "$VM"
  ip -n "$HOST" link add "${HOST}0" type veth peer name "${HOST}1"
  ip -n "$HOST" addr add 10.77.9.1/24 dev "${HOST}0"
  if [ "${1:-}" = 6 ]; then
    for n in "$HOST" "$VM"; do ip netns exec "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0; done
    ip netns exec "$HOST" sysctl -qw "net.ipv6.conf.${HOST}0.disable_ipv6=0"
    ip -n "$HOST" -6 addr add fd77:9::1/64 dev "${HOST}0" nodad
  fi
  ip -n "$HOST" link set "${HOST}0" up; ip -n "$HOST" link set "${HOST}1" up
}
# The VM's IPv6: the TAP moved in (from HOST), a static address in the network's
# prefix, default route via the gateway; waits until the VM pings HOST's address.
vm_plug6() {
  for _ in $(seq 100); do ip -n "$HOST" link show "$TAP" >/dev/null 2>&1 && break; sleep 0.1; done
  ip -n "$HOST" link set "$TAP" netns "$VM"
  ip netns exec "$VM" sysctl -qw "net.ipv6.conf.$TAP.disable_ipv6=0" "net.ipv6.conf.$TAP.accept_ra=0"
  ip -n "$VM" -6 addr add fd64:10::11/64 dev "$TAP" nodad; ip -n "$VM" link set "$TAP" up
  ip -n "$VM" -6 route add default via fd64:10::1
  for _ in $(seq 50); do ip netns exec "$VM" busybox ping -6 -c 1 -W 1 fd77:9::1 >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}

ours_up() {
  ns_add "$VM"; ns_add "$INET"
  ip link add "$UP" type veth peer name "${UP}i" netns "$INET"
  sysctl -qw "net.ipv6.conf.$UP.disable_ipv6=1"; ip link set "$UP" up
  ip -n "$INET" addr add 198.51.100.1/24 dev "${UP}i"; ip -n "$INET" link set "${UP}i" up
  cat > "$dir/c.yaml" <<YAML
stateDir: $dir/state
bridges:
  br0:
    ports:
      $TAP: { type: tap, vlan: { mode: access, vid: 10 } }
routers:
  r0:
    uplink: { interface: $UP, address: 198.51.100.2/24, gateway: 198.51.100.1 }
    networks:
      net10: { bridge: br0, vlan: 10, address: 10.64.10.1/24 }
YAML
  node "$repo/packages/cli/dist/main.js" daemon --config "$dir/c.yaml" --socket "$dir/s" --metrics off \
    --state-dir "$dir/state" --log-level warn >>"$dir/log" 2>&1 &
  pids+=($!)
  vm_plug "" 198.51.100.1
}
# vswitch's router with a host uplink (issue 8): the daemon runs in HOST, as pasta
# does, and the VM's flows leave as sockets of HOST to its own address 10.77.9.1.
host_up() {
  local f=${1:-}   # "6": the network has IPv6 too, and the VM is plugged in by it
  host_ns $f
  cat > "$dir/h$f.yaml" <<YAML
stateDir: $dir/state-h$f
bridges:
  br0:
    ports:
      $TAP: { type: tap, vlan: { mode: access, vid: 10 } }
routers:
  r0:
    uplink: { kind: host, dns: [10.77.9.1]${RCVBUF:+, rcvbuf: $RCVBUF} }
    networks:
      net10: { bridge: br0, vlan: 10, address: 10.64.10.1/24${f:+, ipv6: { address: 'fd64:10::1/64' \}} }
YAML
  ip netns exec "$HOST" node "$repo/packages/cli/dist/main.js" daemon --config "$dir/h$f.yaml" --socket "$dir/sh$f" --metrics off \
    --state-dir "$dir/state-h$f" --log-level warn >>"$dir/log" 2>&1 &
  pids+=($!)
  if [ "$f" = 6 ]; then vm_plug6; else vm_plug "$HOST" 10.77.9.1; fi
}
pasta6_up() {
  host_ns 6
  ip -n "$HOST" -6 route add default via fd77:9::254 dev "${HOST}0"
  # pasta relays ICMP echo through ping sockets, which a new namespace allows no group (1 0): the readiness ping needs them.
  ip netns exec "$HOST" sysctl -qw net.ipv4.ping_group_range="0 2147483647"
  ip netns exec "$HOST" pasta --config-net --netns "$VM" --runas 0 -I "${VM}p" -a fd77:9::2 -g fd77:9::254 \
    -6 -t none -u none -T none -U none -f -q -P "$dir/pasta.pid" -l "$dir/pasta.log" </dev/null >>"$dir/log" 2>&1 &
  pids+=($!)
  # Ready when the address is there and no longer tentative (DAD: iperf3 cannot use a tentative source),
  # and the VM reaches HOST through pasta: the old check (the address alone) let a run start before pasta's
  # path worked, and such a run measured a stall (0.34 Gbit/s with 0.02 CPU s, not pasta's speed).
  for _ in $(seq 100); do
    if ip -n "$VM" -6 addr show dev "${VM}p" 2>/dev/null | grep -q 'fd77:9::2' &&
      [ -z "$(ip -n "$VM" -6 addr show dev "${VM}p" tentative 2>/dev/null)" ] &&
      ip netns exec "$VM" busybox ping -6 -c 1 -W 1 fd77:9::1 >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  tail -5 "$dir/pasta.log" >&2 2>/dev/null
  return 1
}
pasta_up() {
  host_ns
  ip -n "$HOST" route add default via 10.77.9.254 dev "${HOST}0"
  ip netns exec "$HOST" pasta --config-net --netns "$VM" --runas 0 -I "${VM}p" -a 10.77.9.2 -n 24 -g 10.77.9.254 \
    -4 -t none -u none -T none -U none -f -q -P "$dir/pasta.pid" -l "$dir/pasta.log" </dev/null >>"$dir/log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do ip -n "$VM" -4 addr show dev "${VM}p" 2>/dev/null | grep -q 10.77.9.2 && return 0; sleep 0.1; done
  return 1
}

out=$dir/raw.tsv
for r in $(seq "$rounds"); do
  if [[ " $families " == *" 4 "* ]]; then
  if ours_up; then
    read -r g c <<<"$(measure "$VM" "$INET" 198.51.100.1)"; printf 'ours\tup\t%s\t%s\n' "$g" "$c" >>"$out"
    read -r g c <<<"$(measure "$VM" "$INET" 198.51.100.1 -R)"; printf 'ours\tdown\t%s\t%s\n' "$g" "$c" >>"$out"
  else echo "round $r: vswitch NAT setup failed (see $dir/log)" >&2; fi
  down
  if host_up; then
    read -r g c <<<"$(measure "$VM" "$HOST" 10.77.9.1)"; printf 'host\tup\t%s\t%s\n' "$g" "$c" >>"$out"
    read -r g c <<<"$(measure "$VM" "$HOST" 10.77.9.1 -R)"; printf 'host\tdown\t%s\t%s\n' "$g" "$c" >>"$out"
  else echo "round $r: vswitch host-NAT setup failed (see $dir/log)" >&2; fi
  down
  if pasta_up; then
    read -r g c <<<"$(measure "$VM" "$HOST" 10.77.9.1)"; printf 'pasta\tup\t%s\t%s\n' "$g" "$c" >>"$out"
    read -r g c <<<"$(measure "$VM" "$HOST" 10.77.9.1 -R)"; printf 'pasta\tdown\t%s\t%s\n' "$g" "$c" >>"$out"
  else echo "round $r: pasta setup failed" >&2; fi
  down
  fi
  if [[ " $families " == *" 6 "* ]]; then
  if host_up 6; then
    read -r g c <<<"$(measure "$VM" "$HOST" fd77:9::1)"; printf 'host6\tup\t%s\t%s\n' "$g" "$c" >>"$out"
    read -r g c <<<"$(measure "$VM" "$HOST" fd77:9::1 -R)"; printf 'host6\tdown\t%s\t%s\n' "$g" "$c" >>"$out"
  else echo "round $r: vswitch host-NAT IPv6 setup failed (see $dir/log)" >&2; fi
  down
  if pasta6_up; then
    read -r g c <<<"$(measure "$VM" "$HOST" fd77:9::1)"; printf 'pasta6\tup\t%s\t%s\n' "$g" "$c" >>"$out"
    read -r g c <<<"$(measure "$VM" "$HOST" fd77:9::1 -R)"; printf 'pasta6\tdown\t%s\t%s\n' "$g" "$c" >>"$out"
  else echo "round $r: pasta IPv6 setup failed (see $dir/pasta.log)" >&2; fi
  down
  fi
  echo "round $r done" >&2
done
echo "raw (variant direction Gbit/s CPU-s):" >&2; cat "$out" >&2
python3 - "$out" <<'PY'
import sys, statistics as st
v = {}
for line in open(sys.argv[1]):
    t, d, g, c = line.split()
    v.setdefault((t, d), []).append((float(g), float(c)))
med = lambda xs, i: st.median(x[i] for x in xs) if xs else 0
print('| direction | router NAT Gbit/s | CPU s | host NAT Gbit/s | CPU s | pasta Gbit/s | CPU s | router/pasta | host/pasta |')
print('|---|---|---|---|---|---|---|---|---|')
for d in ('up', 'down'):
    o = v.get(('ours', d), []); h = v.get(('host', d), []); p = v.get(('pasta', d), [])
    pg = med(p, 0)
    r = lambda x: f'{med(x, 0) / pg:.2f}x' if pg else '-'
    print(f'| {d} | {med(o, 0):.2f} | {med(o, 1):.2f} | {med(h, 0):.2f} | {med(h, 1):.2f} | {pg:.2f} | {med(p, 1):.2f} | {r(o)} | {r(h)} |')
print('(medians over rounds; up = VM -> internet, down = internet -> VM; router NAT: uplink interface, NAPT;'
      ' host NAT: uplink kind host, sockets of the host, as pasta)')
print()
print('| IPv6 direction | host NAT Gbit/s | CPU s | pasta -6 Gbit/s | CPU s | host/pasta |')
print('|---|---|---|---|---|---|')
for d in ('up', 'down'):
    h = v.get(('host6', d), []); p = v.get(('pasta6', d), [])
    pg = med(p, 0)
    print(f'| {d} | {med(h, 0):.2f} | {med(h, 1):.2f} | {pg:.2f} | {med(p, 1):.2f} | {(med(h, 0) / pg if pg else 0):.2f}x |')
PY
