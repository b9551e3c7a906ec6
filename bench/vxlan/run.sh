#!/usr/bin/env bash
# VXLAN across hosts (issue 15, item 5): two "hosts" as namespaces joined by a veth
# underlay (10.78.0.1 and 10.78.0.2, MTU 1500), one VM namespace behind each
# (10.78.1.1 and 10.78.1.2, MTU 1450 = underlay - 50), VNI 100 between them. Measured
# VM A -> VM B across the tunnel, in one run, round-robin over the topologies (each
# set up afresh per round):
#   - TCP: iperf3, one stream (-P 1), SECONDS long; Gbit/s received
#   - 64-byte frames: ../fair/flood.py (60-byte frames + FCS, IPv4/UDP to the discard
#     port, as fast as one core sends them through the VM's qdisc) for PPS_SECS;
#     kpps sent by A and received by B's interface (rx_packets)
# with the load average at the start of each measurement, and the switch processes'
# CPU (run time from schedstat, % of a core) during the TCP test.
#
# Topologies:
#   ours     vswitch daemons on both hosts, VM TAPs (offloads on: the VMs use TSO)
#   kernel   Linux bridge + `vxlan` device (dev = the underlay, so MTU 1450) on both, veth VMs
#   ovs      Open vSwitch's userspace datapath (ovs-vswitchd, datapath_type=netdev) on
#            both: br-int with the VM's TAP and a `vxlan` port (remote_ip, key 100), the
#            underlay veth in br-phy with the underlay address on br-phy (OVS's
#            userspace tunnelling: its own route and ARP tables); no userspace TSO (OVS
#            3.1 cannot send TSO frames into a tunnel), so the kernel segments for it.
# Targets (issue 15): TCP >= 1.0x ovs and >= 0.5x kernel; 64-byte frames >= 1.0x ovs.
#
# Usage: bash bench/vxlan/run.sh [-r ROUNDS] [-s SECONDS] [-p PPS_SECONDS] [TOPOLOGY ...]
#   default: 3 rounds, 10 s TCP, 5 s of 64-byte frames, topologies "ours kernel ovs"
#   base     the same with the daemon of BASE_JS (another build's main.js), to compare
#            two builds in the same run
#   ours6, base6, kernel6: ours, base and kernel over an IPv6 underlay (fd00:78::1 and
#            fd00:78::2; VM MTU 1430 = underlay - 70; the Linux vxlan device with its
#            default UDP checksums on send and receive)
# Environment: OURS_JS: the daemon's main.js (default: this checkout's build); BASE_JS
#   (topology base); PROFILE=1: a --cpu-prof of each vswitch
#   daemon during the ours rounds, kept in the printed run directory; VXLAN_OFFLOAD,
#   BASE_OFFLOAD (auto|off; unset: no key, the daemon's default, which builds before
#   vxlan.offload need): vxlan.offload of ours, of base (so BASE_JS=this build with
#   BASE_OFFLOAD=off compares the offloads on and off in one run); VXLAN_ECN, BASE_ECN
#   (rfc6040|off; unset: no key): vxlan.ecn of ours, of base (BASE_JS=this build with
#   BASE_ECN=off: what RFC 6040 and reading the outer DS field cost); VXLAN_READ_QUANTUM
#   (default 256kb): vxlan.readQuantum of both.
# Names are per run (bx<4 hex>*), so two runs do not collide; only processes this
# script started are stopped. Needs root, iperf3, busybox, python3, node, ethtool,
# ovs-vswitchd / ovsdb-server (ovs).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
rounds=3 secs=10 pps_secs=5
while getopts "r:s:p:" o; do
  case $o in r) rounds=$OPTARG ;; s) secs=$OPTARG ;; p) pps_secs=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
topos=${*:-ours kernel ovs}
main_js=${OURS_JS:-$repo/packages/cli/dist/main.js}
[ -f "$main_js" ] || { echo "no $main_js (pnpm build)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }

P=bx$(od -An -N2 -tx2 /dev/urandom | tr -d ' ')
HA=${P}ha HB=${P}hb VA=${P}va VB=${P}vb
UNDER=(10.78.0.1 10.78.0.2) UNDER6=(fd00:78::1 fd00:78::2) VMIP=(10.78.1.1 10.78.1.2)
FAM=4 # the topology being set up: 4, or 6 over the IPv6 underlay
under() { [ "$FAM" = 6 ] && echo "${UNDER6[$1]}" || echo "${UNDER[$1]}"; }
vm_mtu() { [ "$FAM" = 6 ] && echo 1430 || echo 1450; }
HOSTS=("$HA" "$HB") VMS=("$VA" "$VB")
RUN=$(mktemp -d /tmp/bxvxlan.XXXXXX)
RAW=$RUN/raw.tsv
SW_PIDS=() AUX_PIDS=()
VMIF=()

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
now() { date +%s.%N; }
wait_for() { # wait_for SECONDS cmd...
  local end=$((SECONDS + $1)); shift
  until "$@" 2>/dev/null; do [ $SECONDS -ge $end ] && return 1; sleep 0.1; done
}
stop_pid() { kill "$1" 2>/dev/null && for _ in $(seq 20); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done; kill -9 "$1" 2>/dev/null; }
teardown() {
  local p n
  for p in "${AUX_PIDS[@]}" "${SW_PIDS[@]}"; do stop_pid "$p"; done
  SW_PIDS=() AUX_PIDS=()
  for n in "$VA" "$VB" "$HA" "$HB"; do ip netns del "$n" 2>/dev/null; done
  # OVS and vswitch TAPs are persistent only while their owner lives; veths go with their namespace.
}
trap 'teardown; log "raw data and logs: $RUN"' EXIT

base_up() {
  local i
  for i in 0 1; do
    ip netns add "${HOSTS[$i]}" && ip netns add "${VMS[$i]}" || return 1
    ip -n "${HOSTS[$i]}" link set lo up; ip -n "${VMS[$i]}" link set lo up
    ip netns exec "${VMS[$i]}" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  done
  ip link add ${P}ua netns "$HA" type veth peer name ${P}ub netns "$HB" || return 1
  ip -n "$HA" link set ${P}ua up && ip -n "$HB" link set ${P}ub up
}
under_if() { [ "$1" = 0 ] && echo ${P}ua || echo ${P}ub; }
under_addr() {
  if [ "$FAM" = 6 ]; then ip -n "${HOSTS[$1]}" addr add "${UNDER6[$1]}/64" dev "$(under_if "$1")" nodad
  else ip -n "${HOSTS[$1]}" addr add "${UNDER[$1]}/24" dev "$(under_if "$1")"; fi
}
vm_conf() { # vm_conf I IFNAME: the VM's interface, MTU 1450 (IPv6 underlay: 1430), address
  VMIF[$1]=$2
  ip -n "${VMS[$1]}" link set "$2" mtu "$(vm_mtu)" up && ip -n "${VMS[$1]}" addr add "${VMIP[$1]}/24" dev "$2"
}
tap_to_vm() { # tap_to_vm I TAP: wait for the TAP in the host namespace, move it into the VM
  wait_for 20 ip -n "${HOSTS[$1]}" link show "$2" >/dev/null || { log "TAP $2 never appeared"; return 1; }
  ip -n "${HOSTS[$1]}" link set "$2" netns "${VMS[$1]}" && vm_conf "$1" "$2"
}

up_ours() { # up_ours MAIN_JS [OFFLOAD [ECN]]
  local js=$1 offload=${2:-} ecn=${3:-}
  [ -f "$js" ] || { log "no daemon at '$js'"; return 1; }
  base_up || return 1
  local i o
  for i in 0 1; do
    under_addr $i || return 1
    o=$((1 - i))
    mkdir -p "$RUN/ours$i"
    cat >"$RUN/ours$i/c.yaml" <<EOF
bridges:
  br0:
    ports:
      ${P}t$i: { type: tap, vlan: { mode: access, vid: 10 } }
vxlan:
  local: '$(under $i)'
  interface: $(under_if $i)
${offload:+  offload: $offload}
${ecn:+  ecn: $ecn}
  readQuantum: ${VXLAN_READ_QUANTUM:-256kb}
  bridges:
    br0:
      - { vni: 100, vlan: 10, flood: ['$(under $o)'] }
EOF
    local prof=()
    [ "${PROFILE:-0}" = 1 ] && prof=(--cpu-prof "--cpu-prof-dir=$RUN/ours$i/prof")
    ip netns exec "${HOSTS[$i]}" node "${prof[@]}" "$js" daemon --config "$RUN/ours$i/c.yaml" --socket "$RUN/ours$i/s" \
      --metrics off --state-dir "$RUN/ours$i" --log-level warn </dev/null >>"$RUN/ours$i/log" 2>&1 &
    SW_PIDS+=("$!")
  done
  tap_to_vm 0 ${P}t0 && tap_to_vm 1 ${P}t1
}

up_kernel() {
  base_up || return 1
  local i o h
  for i in 0 1; do
    under_addr $i || return 1
    o=$((1 - i)) h=${HOSTS[$i]}
    ip -n "$h" link add vx100 type vxlan id 100 local "$(under $i)" dstport 4789 dev "$(under_if $i)" || return 1
    ip -n "$h" link add br100 type bridge stp_state 0 forward_delay 0 || return 1
    ip -n "$h" link add ${P}h$i type veth peer name ${P}v$i netns "${VMS[$i]}" || return 1
    ip -n "$h" link set vx100 master br100 && ip -n "$h" link set ${P}h$i master br100 mtu "$(vm_mtu)" || return 1
    ip -n "$h" link set vx100 up && ip -n "$h" link set ${P}h$i up && ip -n "$h" link set br100 up
    bridge -n "$h" fdb append 00:00:00:00:00:00 dev vx100 dst "$(under $o)" || return 1
    vm_conf $i ${P}v$i || return 1
  done
}

vsctl() { ip netns exec "${HOSTS[$1]}" ovs-vsctl --db="unix:$RUN/ovs$1/db.sock" --timeout=20 "${@:2}"; }
up_ovs() {
  base_up || return 1
  local i o d h u
  for i in 0 1; do
    o=$((1 - i)) d=$RUN/ovs$i h=${HOSTS[$i]} u=$(under_if $i)
    mkdir -p "$d"; rm -f "$d"/conf.db "$d"/*.pid
    ovsdb-tool create "$d/conf.db" /usr/share/openvswitch/vswitch.ovsschema >/dev/null || return 1
    ip netns exec "$h" env OVS_RUNDIR="$d" OVS_DBDIR="$d" OVS_LOGDIR="$d" OVS_SYSCONFDIR="$d" \
      ovsdb-server "$d/conf.db" --remote="punix:$d/db.sock" --pidfile="$d/ovsdb-server.pid" \
      --unixctl="$d/ovsdb-server.ctl" --log-file="$d/ovsdb-server.log" --detach 2>>"$d/stderr" || return 1
    AUX_PIDS+=("$(cat "$d/ovsdb-server.pid")")
    vsctl $i --no-wait init || return 1
    ip netns exec "$h" env OVS_RUNDIR="$d" OVS_DBDIR="$d" OVS_LOGDIR="$d" OVS_SYSCONFDIR="$d" \
      ovs-vswitchd "unix:$d/db.sock" --pidfile="$d/ovs-vswitchd.pid" --unixctl="$d/ovs-vswitchd.ctl" \
      --log-file="$d/ovs-vswitchd.log" --detach 2>>"$d/stderr" || return 1
    SW_PIDS+=("$(cat "$d/ovs-vswitchd.pid")")
    # OVS 3.1 reads the veth through AF_PACKET without a vnet header: nothing partial or GSO on it.
    ip netns exec "$h" ethtool -K "$u" tx off tso off gso off >/dev/null 2>&1
    vsctl $i add-br br-phy -- set bridge br-phy datapath_type=netdev -- add-port br-phy "$u" || return 1
    ip -n "$h" addr add "${UNDER[$i]}/24" dev br-phy && ip -n "$h" link set br-phy up || return 1
    vsctl $i add-br br-int -- set bridge br-int datapath_type=netdev \
      -- add-port br-int ${P}t$i -- set Interface ${P}t$i type=tap \
      -- add-port br-int vx100 -- set Interface vx100 type=vxlan options:remote_ip="${UNDER[$o]}" options:key=100 || return 1
  done
  tap_to_vm 0 ${P}t0 && tap_to_vm 1 ${P}t1
}

topo_up() {
  FAM=4
  case $1 in *6) FAM=6 ;; esac
  case ${1%6} in ours) up_ours "$main_js" "${VXLAN_OFFLOAD:-}" "${VXLAN_ECN:-}" ;; base) up_ours "${BASE_JS:-}" "${BASE_OFFLOAD:-}" "${BASE_ECN:-}" ;; kernel) up_kernel ;;
    ovs) [ "$FAM" = 4 ] && up_ovs ;; *) log "unknown topology $1"; return 1 ;; esac
}

run_ns() { # CPU (run time, ns) over every thread of the switch processes
  local p t a run=0
  for p in "${SW_PIDS[@]}"; do
    for t in /proc/"$p"/task/*; do read -r a _ <"$t/schedstat" 2>/dev/null && run=$((run + a)); done
  done
  echo $run
}
rec() { printf '%s\t%s\t%s\t%s\n' "$ROUND" "$1" "$2" "$3" >>"$RAW"; }

measure() {
  local topo=$1 load g c0 c1 t0 t1 r0 r1 sent
  load=$(cut -d' ' -f1 /proc/loadavg)
  ip netns exec "$VB" iperf3 -s -1 -B "${VMIP[1]}" -p 5201 >/dev/null 2>&1 &
  AUX_PIDS+=("$!")
  wait_for 5 bash -c "ip netns exec $VB ss -Hlnt 'sport = :5201' | grep -q ." || log "$topo: iperf3 server not listening"
  c0=$(run_ns) t0=$(now)
  g=$(timeout $((secs + 20)) ip netns exec "$VA" iperf3 -c "${VMIP[1]}" -p 5201 -P 1 -t "$secs" -J 2>/dev/null | python3 -c 'import json,sys
try: print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9, 3))
except Exception: print(0)')
  c1=$(run_ns) t1=$(now)
  rec "$topo" tcp_gbps "$g"
  rec "$topo" tcp_load "$load"
  rec "$topo" tcp_cpu "$(awk -v r=$((c1 - c0)) -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", r/1e7/(b-a)}')"
  load=$(cut -d' ' -f1 /proc/loadavg)
  local ma mb
  ma=$(ip netns exec "$VA" cat "/sys/class/net/${VMIF[0]}/address") mb=$(ip netns exec "$VB" cat "/sys/class/net/${VMIF[1]}/address")
  r0=$(ip netns exec "$VB" cat "/sys/class/net/${VMIF[1]}/statistics/rx_packets") t0=$(now)
  ip netns exec "$VA" python3 "$here/../fair/flood.py" "${VMIF[0]}" "$ma" "$mb" "${VMIP[0]}" "${VMIP[1]}" "$pps_secs" >"$RUN/flood.log" 2>&1
  t1=$(now); sleep 0.3
  r1=$(ip netns exec "$VB" cat "/sys/class/net/${VMIF[1]}/statistics/rx_packets")
  sent=$(awk '/^sent/{print $2}' "$RUN/flood.log")
  rec "$topo" small_tx_kpps "$(awk -v s="${sent:-0}" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", s/(b-a)/1e3}')"
  rec "$topo" small_rx_kpps "$(awk -v r=$((r1 - r0)) -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", r/(b-a)/1e3}')"
  rec "$topo" small_load "$load"
}

log "vxlan bench: topologies $topos, $rounds rounds, TCP $secs s, 64-byte frames $pps_secs s; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for ROUND in $(seq "$rounds"); do
  for topo in $topos; do
    if ! topo_up "$topo"; then log "$topo: setup failed"; teardown; continue; fi
    # The first packets wait for ARP/learning (and OVS's tunnel ARP): poll until a ping passes.
    if ! wait_for 20 ip netns exec "$VA" busybox ping -c 1 -W 1 "${VMIP[1]}" >/dev/null; then
      log "$topo: no connectivity"; teardown; continue
    fi
    measure "$topo"
    if [[ $topo = ours* || $topo = base* ]] && [ "${PROFILE:-0}" = 1 ]; then  # a clean exit writes the profile
      for p in "${SW_PIDS[@]}"; do kill "$p" 2>/dev/null; done
      for p in "${SW_PIDS[@]}"; do wait_for 10 bash -c "! kill -0 $p"; done
    fi
    teardown
    log "$topo round $ROUND done (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  done
done
log "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$RAW" "$topos" <<'PY'
import sys, statistics as st
rows = [l.rstrip('\n').split('\t') for l in open(sys.argv[1])]
topos = sys.argv[2].split()
v = {}
for r, t, k, x in rows:
    v.setdefault((t, k), []).append(float(x))
def med(t, k): return st.median(v[(t, k)]) if (t, k) in v else float('nan')
def rng(t, k, f='{:.2f}'):
    xs = v.get((t, k), [])
    return f"{f.format(min(xs))}–{f.format(max(xs))}" if xs else ''
print('\nVM A -> VM B across VXLAN (two host namespaces, veth underlay), medians over rounds (min–max)\n')
print('| topology | TCP Gbit/s | switch CPU during TCP, % of a core | 64-byte frames rx kpps | sent kpps | load avg (TCP, 64 B) |')
print('|---|---|---|---|---|---|')
for t in topos:
    if (t, 'tcp_gbps') not in v: continue
    print(f"| {t} | {med(t, 'tcp_gbps'):.2f} ({rng(t, 'tcp_gbps')}) | {med(t, 'tcp_cpu'):.0f} | {med(t, 'small_rx_kpps'):.1f} ({rng(t, 'small_rx_kpps', '{:.1f}')}) | "
          f"{med(t, 'small_tx_kpps'):.1f} | {med(t, 'tcp_load'):.2f}, {med(t, 'small_load'):.2f} |")
def ratio(a, b, k):
    return med(a, k) / med(b, k) if med(b, k) else float('nan')
if ('ours6', 'tcp_gbps') in v:
    print()
    for peer in ('kernel6', 'base6'):
        if (peer, 'tcp_gbps') in v:
            print(f"IPv6 underlay: ours6/{peer}: TCP {ratio('ours6', peer, 'tcp_gbps'):.2f}x, 64-byte frames {ratio('ours6', peer, 'small_rx_kpps'):.2f}x")
if (('ours', 'tcp_gbps') in v):
    print()
    if ('base', 'tcp_gbps') in v:
        print(f"ours/base: TCP {ratio('ours', 'base', 'tcp_gbps'):.2f}x, 64-byte frames {ratio('ours', 'base', 'small_rx_kpps'):.2f}x")
    for peer, k, target in (('ovs', 'tcp_gbps', 1.0), ('kernel', 'tcp_gbps', 0.5), ('ovs', 'small_rx_kpps', 1.0)):
        if (peer, k) not in v: continue
        r = ratio('ours', peer, k)
        print(f"target ours/{peer} {'TCP' if k == 'tcp_gbps' else '64-byte frames'} >= {target}x: {r:.2f}x {'met' if r >= target else 'missed'}")
PY
