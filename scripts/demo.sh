#!/usr/bin/env bash
# The demo lab (npm run demo): the daemon on its built-in default config (one
# bridge, br0), three namespaces as VMs on TAP ports in two VLANs, and a show of
# what the switch does. Tears everything down on exit (Ctrl-C, or --duration N).
#
#   vm1 10.0.10.11  VLAN 10 ─┐
#   vm2 10.0.10.12  VLAN 10 ─┼─ vswitch br0
#   vm3 10.0.10.13  VLAN 20 ─┘   (same IP subnet on purpose: only the VLAN separates it)
set -euo pipefail
cd "$(dirname "$0")/.."

duration=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --duration=*) duration="${1#*=}"; shift ;;
    *) echo "usage: npm run demo [-- --duration SECONDS]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "demo: must run as root (it creates TAP devices and network namespaces)" >&2; exit 1; }

bash scripts/setup.sh

run=$(head -c2 /dev/urandom | od -An -tx1 | tr -d ' \n')
dir=$(mktemp -d "/tmp/vswitch-demo.$run.XXXX")
export VSWITCH_SOCKET="$dir/vswitch.sock"
vswitch() { node packages/cli/dist/main.js "$@"; }
daemon_pid=""

cleanup() {
  set +e
  [ -n "$daemon_pid" ] && kill -TERM "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  for i in 1 2 3; do ip netns del "d$run-vm$i" 2>/dev/null; done
  rm -rf "$dir"
  echo "demo: cleaned up"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== starting vswitch daemon (built-in default config), log in $dir/daemon.log"
node packages/cli/dist/main.js daemon 2>"$dir/daemon.log" &
daemon_pid=$!
for _ in $(seq 50); do vswitch show >/dev/null 2>&1 && break; sleep 0.1; done
vswitch show >/dev/null || { cat "$dir/daemon.log"; exit 1; }

vm() { # vm N VLAN IP
  local ns="d$run-vm$1" tap="d$run-t$1"
  vswitch addif br0 "$tap" --vlan "$2"
  ip netns add "$ns"
  ip link set "$tap" netns "$ns"
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  ip -n "$ns" link set lo up
  ip -n "$ns" link set "$tap" up
  ip -n "$ns" addr add "$3/24" dev "$tap"
}
vm 1 10 10.0.10.11
vm 2 10 10.0.10.12
vm 3 20 10.0.10.13

check() { # check FROM_VM TO_IP EXPECT
  if ip netns exec "d$run-vm$1" busybox ping -c 2 -W 1 "$2" >/dev/null 2>&1; then got=reachable; else got=unreachable; fi
  printf '   vm%s -> %-11s %-11s (expected %s)\n' "$1" "$2" "$got" "$3"
  [ "$got" = "$3" ]
}
echo "== reachability"
ok=0
check 1 10.0.10.12 reachable || ok=1
check 2 10.0.10.11 reachable || ok=1
check 1 10.0.10.13 unreachable || ok=1
check 3 10.0.10.12 unreachable || ok=1

echo "== vswitch show"; vswitch show
echo "== vswitch showmacs br0"; vswitch showmacs br0
echo "== vswitch stats"; vswitch stats
[ $ok = 0 ] && echo "demo: all checks passed" || echo "demo: SOME CHECKS FAILED"

if [ "$duration" -gt 0 ]; then
  echo "== running for $duration s (try: VSWITCH_SOCKET=$VSWITCH_SOCKET node packages/cli/dist/main.js show)"
  sleep "$duration"
else
  echo "== running; Ctrl-C to stop (try: VSWITCH_SOCKET=$VSWITCH_SOCKET node packages/cli/dist/main.js show)"
  while :; do sleep 3600; done
fi
exit $ok
