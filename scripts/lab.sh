#!/usr/bin/env bash
# The demo lab, on its own config scripts/lab.yaml (NAT mode):
#
#   vm1 ─┐ VLAN 10 (DHCP 10.0.10.0/24) ─┐
#   vm2 ─┘  + SLAAC fd00:10::/64         ├─ router r0 ── uplink vswup0 ══ veth ══ "internet" ns
#   vm3 ── VLAN 20 (DHCP 10.0.20.0/24) ─┘  (NAT, NPTv6)  172.31.255.2          172.31.255.1, web server
#                                                        2001:db8:ff::2        2001:db8:ff::1
#
# The VMs are network namespaces on TAP ports of bridge br0 and get their
# addresses by DHCP (busybox udhcpc), VLAN 10's also IPv6 by SLAAC. Then: same-VLAN VMs reach each other,
# other-VLAN ones do not, a VM fetches the web page through NAT, and the switch's
# views are printed. Runs until Ctrl-C, or for --duration SECONDS (0: exit after
# the checks), and removes everything it created. Exit status 0 iff all checks passed.
# Expects a built tree (scripts/demo.sh runs setup first).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=-1
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --duration=*) duration="${1#*=}"; shift ;;
    *) echo "usage: lab.sh [--duration SECONDS]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "lab: must run as root (it creates TAP devices and network namespaces)" >&2; exit 1; }
if ip link show vswup0 >/dev/null 2>&1; then
  echo "lab: an interface vswup0 exists already (another lab running?); the lab config's uplink is vswup0" >&2
  exit 1
fi

run=$(head -c2 /dev/urandom | od -An -tx1 | tr -d ' \n')
dir=$(mktemp -d "/tmp/vswitch-lab.$run.XXXX")
export VSWITCH_SOCKET="$dir/vswitch.sock"
vswitch() { node packages/cli/dist/main.js "$@"; }
metrics=127.0.0.1:9464
if ss -Hltn "sport = :9464" | grep -q .; then metrics=127.0.0.1:$((20000 + 0x$run % 20000)); fi
inet="l$run-inet"
daemon_pid=""; web_pid=""

cleanup() {
  set +e
  [ -n "$web_pid" ] && kill "$web_pid" 2>/dev/null
  [ -n "$daemon_pid" ] && kill -TERM "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  for ns in "l$run-vm1" "l$run-vm2" "l$run-vm3" "$inet"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
    ip netns del "$ns" 2>/dev/null
  done
  ip link del vswup0 2>/dev/null
  rm -rf "$dir"
  echo "lab: cleaned up"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== the \"internet\": namespace $inet, 172.31.255.1/24, web server on port 80"
ip netns add "$inet"
ip link add vswup0 type veth peer name up1 netns "$inet"
ip link set vswup0 up
ip -n "$inet" link set lo up
ip -n "$inet" link set up1 up
ip -n "$inet" addr add 172.31.255.1/24 dev up1
ip -n "$inet" addr add 2001:db8:ff::1/64 dev up1 nodad
ip -n "$inet" -6 route add 2001:db8:10::/64 via 2001:db8:ff::2  # VLAN 10's NPTv6 prefix, as an upstream routes it
mkdir -p "$dir/www" && echo "hello from the internet namespace" > "$dir/www/index.html"
ip netns exec "$inet" busybox httpd -f -p 172.31.255.1:80 -h "$dir/www" &
web_pid=$!

echo "== vswitch daemon --config scripts/lab.yaml (metrics on http://$metrics/metrics)"
node --no-memory-reducer packages/cli/dist/main.js daemon --config scripts/lab.yaml --state-dir "$dir/state" --metrics "$metrics" 2>"$dir/daemon.log" &
daemon_pid=$!
for _ in $(seq 100); do vswitch show >/dev/null 2>&1 && break; sleep 0.1; done
vswitch show >/dev/null || { cat "$dir/daemon.log"; exit 1; }

# udhcpc has no default script here: this one applies the lease and records it.
cat > "$dir/udhcpc.sh" <<'SCRIPT'
#!/bin/sh
case "$1" in
  bound|renew)
    ip -4 addr flush dev "$interface"  # not -6: that would take the link-local address (and SLAAC) with it
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    echo "$ip" > "$LEASE_FILE" ;;
esac
SCRIPT
chmod +x "$dir/udhcpc.sh"

vm() { # vm N VLAN
  local ns="l$run-vm$1" tap="l$run-t$1" v6=1
  [ "$2" = 10 ] && v6=0  # VLAN 10 has IPv6 (SLAAC from the gateway's RAs)
  vswitch addif br0 "$tap" --vlan "$2"
  ip netns add "$ns"
  ip link set "$tap" netns "$ns"
  # The TAP keeps the IPv6 settings it had in the host's namespace: set its own too.
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=$v6 net.ipv6.conf.default.disable_ipv6=$v6 \
    "net.ipv6.conf.$tap.disable_ipv6=$v6" "net.ipv6.conf.$tap.addr_gen_mode=0" "net.ipv6.conf.$tap.accept_ra=1"
  ip -n "$ns" link set lo up
  ip -n "$ns" link set "$tap" up
  LEASE_FILE="$dir/vm$1.ip" ip netns exec "$ns" busybox udhcpc -i "$tap" -n -q -t 5 -T 1 -s "$dir/udhcpc.sh" >/dev/null 2>&1 || true
  printf '   vm%s (VLAN %s): %s\n' "$1" "$2" "$(cat "$dir/vm$1.ip" 2>/dev/null || echo 'no DHCP lease')"
}
echo "== three VMs get addresses by DHCP"
vm 1 10
vm 2 10
vm 3 20
ip_of() { cat "$dir/vm$1.ip" 2>/dev/null || echo 0.0.0.0; }
ip6_of() { ip -n "l$run-vm$1" -6 -o addr show scope global -tentative 2>/dev/null | awk '{ sub("/.*", "", $4); print $4; exit }'; }
for _ in $(seq 50); do [ -n "$(ip6_of 1)" ] && [ -n "$(ip6_of 2)" ] && break; sleep 0.2; done
printf '   vm1 (VLAN 10) IPv6: %s\n   vm2 (VLAN 10) IPv6: %s\n' "$(ip6_of 1)" "$(ip6_of 2)"

ok=0
check() { # check DESCRIPTION EXPECTED COMMAND...
  local what="$1" want="$2"; shift 2
  if "$@" >/dev/null 2>&1; then got=yes; else got=no; fi
  printf '   %-52s %-3s (expected %s)\n' "$what" "$got" "$want"
  [ "$got" = "$want" ] || ok=1
}
echo "== checks"
check "vm1 has a VLAN 10 address" yes grep -q '^10\.0\.10\.' "$dir/vm1.ip"
check "vm3 has a VLAN 20 address" yes grep -q '^10\.0\.20\.' "$dir/vm3.ip"
check "vm1 -> vm2 (same VLAN)" yes ip netns exec "l$run-vm1" busybox ping -c 2 -W 1 "$(ip_of 2)"
check "vm1 -> vm3 (other VLAN)" no ip netns exec "l$run-vm1" busybox ping -c 2 -W 1 "$(ip_of 3)"
check "vm1 -> its gateway 10.0.10.1" yes ip netns exec "l$run-vm1" busybox ping -c 2 -W 1 10.0.10.1
check "vm3 -> internet host 172.31.255.1 (through NAT)" yes ip netns exec "l$run-vm3" busybox ping -c 2 -W 1 172.31.255.1
check "vm1 has an IPv6 address in fd00:10::/64 (SLAAC)" yes test -n "$(ip6_of 1 | grep '^fd00:10::')"
check "vm1 -> vm2 over IPv6 (same VLAN)" yes ip netns exec "l$run-vm1" busybox ping -6 -c 2 -W 1 "$(ip6_of 2)"
check "vm1 -> internet 2001:db8:ff::1 over IPv6 (NPTv6)" yes ip netns exec "l$run-vm1" busybox ping -6 -c 2 -W 1 2001:db8:ff::1
page=$(ip netns exec "l$run-vm1" timeout 5 busybox wget -q -O - http://172.31.255.1/ 2>/dev/null || true)  # (busybox 1.35 wget -T segfaults)
check "vm1 fetches http://172.31.255.1/ through NAT" yes test "$page" = "hello from the internet namespace"
echo "   page: $page"

echo "== vswitch show";           vswitch show
echo "== vswitch dhcp leases";    vswitch dhcp leases
echo "== vswitch nat sessions";   vswitch nat sessions
echo "== vswitch router show";    vswitch router show
echo "== metrics (excerpt of http://$metrics/metrics)"
busybox wget -q -O - "http://$metrics/metrics" 2>/dev/null \
  | grep -E '^vswitch_(dhcp_active_leases|dhcp_messages_total\{[^}]*type="ack"|nat_sessions|router_uplink_up|router_ipv6_packets_total\{[^}]*path="(to|from)_uplink"|port_rx_frames_total\{[^}]*port="net|flow_cache_hits_total)' || true
echo "== metrics: curl http://$metrics/metrics   (control socket: VSWITCH_SOCKET=$VSWITCH_SOCKET)"
if [ $ok = 0 ]; then echo "lab: all checks passed"; else echo "lab: SOME CHECKS FAILED"; fi

if [ "$duration" -gt 0 ]; then
  echo "== running for $duration s"; sleep "$duration"
elif [ "$duration" -lt 0 ]; then
  echo "== running; Ctrl-C to stop"; while :; do sleep 3600; done
fi
exit $ok
