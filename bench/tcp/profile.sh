#!/usr/bin/env bash
# Where one TCP stream between two VMs spends its CPU, per switch (bench/README.md
# "TCP through the switch: where the time goes"). Runs the main bench's TCP test alone
# (`BA_MEASURE=tcp BA_TCP_SECS=W+11 bench/run.sh -r 1 TOPOLOGY ...`, one anchors.sh run,
# so one wait for its machine-wide lock) and, 2 s into each topology's test, takes a
# window of W seconds (default 5) in which it counts, per GB VM2 received:
#   - CPU (utime, stime) and runqueue wait (schedstat) of the switch's processes (those
#     in anchors.sh's switch namespace; none for the Linux bridge), the iperf3 sender
#     and the iperf3 receiver, their context switches, and the machine's user / system /
#     softirq time (/proc/stat);
#   - the frames each VM interface sent and received (super-frames, ACKs);
# and, by MODE:
#   perf     `perf record -a -g` over the window (all CPUs: the VMs' stacks, the switch,
#            softirqs), kept as perf.data
#   strace   `strace -c -f` on the switch (syscall counts; slows the switch, so read
#            the counts per GB, not the rate)
#   none     counters only
# Output in OUT/N-TOPOLOGY (N: its place in the list): info.json (the counters and per-GB figures), perf.data or
# strace.txt; OUT/bench.txt. TOPOLOGY: any of run.sh's (ours, base, ours-fc, ours-v1,
# kbridge, ovs-tap-tso, ...; base needs BASE_JS). Extra env goes through to run.sh and
# anchors.sh (VSWITCH_SHARED, VSWITCH_BENCH_V1, BA_CC ...).
# Usage: bash bench/tcp/profile.sh OUT perf|strace|none W TOPOLOGY...
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$1 how=$2 win=$3
shift 3
topos=("$@")
mkdir -p "$out"

# The iperf3 processes themselves (`ip netns exec` execs them), not `timeout` around them.
iperf() { local p; for p in $(pgrep -x iperf3); do tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$1" && echo "$p"; done | head -1; }

# One line per snapshot: name=value pairs summed over each group's threads.
snap() {
  local g pids p t u s r w v nv rr ww
  for g in sw cli srv; do
    case $g in sw) pids=$sw ;; cli) pids=$cli ;; srv) pids=$srv ;; esac
    u=0 s=0 r=0 w=0 v=0 nv=0
    for p in $pids; do
      for t in /proc/$p/task/*; do
        # Fields after the command name (which may hold spaces): utime and stime are 12th and 13th.
        read -r -a st < <(sed 's/.*) //' "$t/stat" 2>/dev/null) || continue
        u=$((u + st[11])) s=$((s + st[12]))
        read -r rr ww _ <"$t/schedstat" 2>/dev/null && { r=$((r + rr)); w=$((w + ww)); }
        v=$((v + $(awk '/^voluntary_ctxt_switches/{print $2}' "$t/status" 2>/dev/null || echo 0)))
        nv=$((nv + $(awk '/^nonvoluntary_ctxt_switches/{print $2}' "$t/status" 2>/dev/null || echo 0)))
      done
    done
    printf '%s_utime=%s %s_stime=%s %s_run_ns=%s %s_wait_ns=%s %s_vcsw=%s %s_nvcsw=%s ' "$g" "$u" "$g" "$s" "$g" "$r" "$g" "$w" "$g" "$v" "$g" "$nv"
  done
  awk '/^cpu /{printf "m_user=%s m_nice=%s m_sys=%s m_idle=%s m_iowait=%s m_irq=%s m_softirq=%s ", $2, $3, $4, $5, $6, $7, $8}' /proc/stat
  local d k
  for d in "1 $if1" "2 $if2"; do
    set -- $d
    for k in tx_bytes tx_packets rx_bytes rx_packets; do
      printf 'vm%s_%s=%s ' "$1" "$k" "$(ip netns exec bAvm$1 cat /sys/class/net/$2/statistics/$k)"
    done
  done
  printf 't_ns=%s\n' "$(date +%s%N)"
}

summarize() {  # summarize OUTFILE TOPO SNAP_A SNAP_B
python3 - "$1" "$2" "$how" "$(cut -d' ' -f1-3 /proc/loadavg)" "$sw" "$cli" "$srv" "$3" "$4" <<'PY'
import json, os, sys
path, topo, how, load, sw, cli, srv, a, z = sys.argv[1:10]
kv = lambda s: {k: int(v) for k, v in (x.split('=') for x in s.split())}
a, z = kv(a), kv(z)
d = {k: z[k] - a[k] for k in a}
hz = os.sysconf('SC_CLK_TCK')
secs = d['t_ns'] / 1e9
gb = d['vm2_rx_bytes'] / 1e9 or 1e-9
r = {'topology': topo, 'mode': how, 'loadavg_end': load, 'window_s': round(secs, 2),
     'pids': {'switch': sw.split(), 'sender': cli, 'receiver': srv},
     'gbit_s': round(d['vm2_rx_bytes'] * 8 / secs / 1e9, 2), 'gb': round(gb, 3)}
per = {}
for g, name in (('sw', 'switch'), ('cli', 'sender'), ('srv', 'receiver')):
    per[name] = {
        'cpu_s_per_gb': round((d[g + '_utime'] + d[g + '_stime']) / hz / gb, 3),
        'user_s_per_gb': round(d[g + '_utime'] / hz / gb, 3),
        'sys_s_per_gb': round(d[g + '_stime'] / hz / gb, 3),
        'run_share': round(d[g + '_run_ns'] / 1e9 / secs, 3),
        'runq_wait_share': round(d[g + '_wait_ns'] / 1e9 / secs, 3),
        'vcsw_per_gb': round(d[g + '_vcsw'] / gb),
        'nvcsw_per_gb': round(d[g + '_nvcsw'] / gb),
    }
r['processes'] = per
m = {k: d['m_' + k] / hz for k in ('user', 'nice', 'sys', 'idle', 'iowait', 'irq', 'softirq')}
busy = sum(v for k, v in m.items() if k != 'idle')
r['machine'] = {'busy_cores': round(busy / secs, 2), 'busy_s_per_gb': round(busy / gb, 3),
                'user_s_per_gb': round((m['user'] + m['nice']) / gb, 3),
                'sys_s_per_gb': round(m['sys'] / gb, 3),
                'softirq_s_per_gb': round(m['softirq'] / gb, 3)}
r['frames'] = {'vm1_tx_per_gb': round(d['vm1_tx_packets'] / gb),
               'vm1_tx_bytes_per_frame': round(d['vm1_tx_bytes'] / max(1, d['vm1_tx_packets'])),
               'vm2_rx_per_gb': round(d['vm2_rx_packets'] / gb),
               'vm2_tx_per_gb': round(d['vm2_tx_packets'] / gb)}
json.dump(r, open(path, 'w'), indent=1)
p = r['processes']
print(f"{topo}: {r['gbit_s']} Gbit/s; CPU s/GB switch {p['switch']['cpu_s_per_gb']} sender {p['sender']['cpu_s_per_gb']} "
      f"receiver {p['receiver']['cpu_s_per_gb']} machine {r['machine']['busy_s_per_gb']} (softirq {r['machine']['softirq_s_per_gb']}); "
      f"run/wait share switch {p['switch']['run_share']}/{p['switch']['runq_wait_share']} sender {p['sender']['run_share']}/{p['sender']['runq_wait_share']} "
      f"receiver {p['receiver']['run_share']}/{p['receiver']['runq_wait_share']}; frames/GB VM1 tx {r['frames']['vm1_tx_per_gb']} VM2 tx {r['frames']['vm2_tx_per_gb']}; load {load}")
PY
}

# anchors.sh takes a machine-wide lock and gives up if another bench holds it: wait, retry.
for try in 1 2 3 4 5; do
  flock -w 3600 /tmp/bA.anchors.lock true
  BA_MEASURE=tcp BA_TCP_SECS=$((win + 11)) bash "$here/../run.sh" -r 1 "${topos[@]}" >"$out/bench.txt" 2>"$out/bench.err" &
  b=$!
  sleep 2
  grep -q 'another anchors.sh run holds' "$out/bench.err" 2>/dev/null || break
  wait $b
done
echo "profile.sh: $how, ${win} s windows, ${topos[*]}; load average $(cut -d' ' -f1-3 /proc/loadavg)"
last="" n=0
for t in "${topos[@]}"; do
  n=$((n + 1)) d=$out/$n-$t
  cli="" srv=""
  while kill -0 $b 2>/dev/null; do
    cli=$(iperf "-c 10.77.1.2 -p 5201")
    [ -n "$cli" ] && [ "$cli" != "$last" ] && break
    cli=""
    sleep 0.1
  done
  [ -n "$cli" ] || { echo "profile.sh: no TCP test for $t (bench.err)" >&2; break; }
  last=$cli
  sleep 2
  srv=$(iperf "-s -1 -B 10.77.1.2 -p 5201")
  sw=$(ip netns pids bAsw 2>/dev/null | tr '\n' ' ')
  if1=$(ip -n bAvm1 -o link | awk -F': ' '$2 ~ /^bA[tv]1/ {sub(/@.*/, "", $2); print $2}')
  if2=$(ip -n bAvm2 -o link | awk -F': ' '$2 ~ /^bA[tv]2/ {sub(/@.*/, "", $2); print $2}')
  mkdir -p "$d"
  a=$(snap)
  case $how in
    perf) perf record -a -g -F 999 -o "$d/perf.data" -- sleep "$win" 2>"$d/perf.err" >/dev/null ;;
    strace)
      args=(); for p in $sw; do args+=(-p "$p"); done
      if [ ${#args[@]} -gt 0 ]; then timeout -s INT "$win" strace -c -f "${args[@]}" -o "$d/strace.txt" 2>/dev/null; else sleep "$win"; fi ;;
    *) sleep "$win" ;;
  esac
  z=$(snap)
  summarize "$d/info.json" "$t" "$a" "$z"
done
wait $b
echo "profile.sh: done; load average $(cut -d' ' -f1-3 /proc/loadavg)"
