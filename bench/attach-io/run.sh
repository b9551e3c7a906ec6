#!/usr/bin/env bash
# bench/attach-io: cap (libpcap) vs @vswitch/netdev (AF_PACKET) for attach ports.
# Needs root. Usage: bash bench/attach-io/run.sh [ROUNDS] [SECONDS]   (defaults 5 and 3)
# Installs what it needs (libpcap-dev, cap via npm in this folder), builds the C
# generator in a temp dir, creates one veth pair + one netns with unique names,
# runs capture / inject rounds (interleaved, alternating order) and the functional
# checks, prints a table, and removes everything it created on exit.
set -euo pipefail
cd "$(dirname "$0")"
HERE=$PWD
ROUNDS=${1:-5}
SECS=${2:-3}
[ "$(id -u)" = 0 ] || { echo "run.sh needs root" >&2; exit 1; }

# ---- install (idempotent) ----
if ! dpkg -s libpcap-dev >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpcap-dev >/dev/null
fi
if [ ! -f node_modules/cap/build/Release/cap.node ]; then
  npm_config_nodedir=/usr npm install --no-audit --no-fund >/dev/null
fi
[ -f ../../packages/netdev/dist/index.js ] && [ -f ../../packages/netdev/build/Release/netdev.node ] \
  || { echo "build @vswitch/netdev first (pnpm build)" >&2; exit 1; }
/usr/bin/python3 -c 'import scapy' 2>/dev/null || { echo "needs Debian python3-scapy (/usr/bin/python3)" >&2; exit 1; }

# ---- topology ----
ID=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
NS="ba${ID}ns"; A="ba${ID}a"; B="ba${ID}b"
TMP=$(mktemp -d "/tmp/ba${ID}.XXXX")
HOLD=""
cleanup() {
  set +e
  [ -n "$HOLD" ] && kill "$HOLD" 2>/dev/null
  for p in $(jobs -p); do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  ip link del "$A" 2>/dev/null
  ip netns del "$NS" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cc -O2 -o "$TMP/gen" gen.c
ip netns add "$NS"
ip link add "$A" type veth peer name "$B" netns "$NS"
sysctl -qw "net.ipv6.conf.$A.disable_ipv6=1"
ip netns exec "$NS" sysctl -qw "net.ipv6.conf.$B.disable_ipv6=1"
ip link set "$A" up
ip -n "$NS" link set lo up
ip -n "$NS" link set "$B" up
ip -n "$NS" addr add 198.18.0.1/24 dev "$B"
ip -n "$NS" neigh add 198.18.0.2 lladdr 02:ba:00:00:00:04 nud permanent dev "$B"
ip netns exec "$NS" ethtool -K "$B" tx on tso on gso on tx-udp-segmentation on >/dev/null 2>&1 || true
ip netns exec "$NS" sleep 3600 & HOLD=$!
sleep 0.2
echo "topology: $A (root ns, reader/writer) <-> $B (netns $NS, generator/sink); reader on CPU 1, generator on CPU 0"

RES="$TMP/results.jsonl"
# libpcap warns on stderr that the root-side veth has no IPv4 address; that is expected.
nowarn() { grep -v 'may not actually work' >&2 || true; }
capture() { # method
  ip netns exec "$NS" taskset -c 0 "$TMP/gen" "$B" "$(awk "BEGIN{print $SECS + 1.5}")" >/dev/null &
  local g=$!
  sleep 0.2
  taskset -c 1 node bench.mjs capture "$1" "$A" "$SECS" "$HOLD" "$B" "$g" 2> >(nowarn) | tee -a "$RES"
  wait "$g"
}
inject() { taskset -c 1 node bench.mjs inject "$1" "$A" "$SECS" "$HOLD" "$B" 2> >(nowarn) | tee -a "$RES"; }

for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="cap netdev"; else order="netdev cap"; fi
  echo "== round $r ($order)"
  for m in $order; do capture "$m"; done
  for m in $order; do inject "$m"; done
done

echo "== functional checks (both readers open at once on $A)"
ip netns exec "$NS" ethtool -k "$B" | grep -E '^(tx-checksumming|tcp-segmentation-offload|generic-segmentation-offload|tx-udp-segmentation):'
node bench.mjs func "$A" "$NS" "$HOLD" "$B" 2> >(nowarn) | tee "$TMP/func.json"

node report.mjs "$RES" "$TMP/func.json"
