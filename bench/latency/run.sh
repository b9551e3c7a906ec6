#!/usr/bin/env bash
# bench/latency/run.sh: where a ping-pong's time goes (issue 19, item 2).
#
#   bash bench/latency/run.sh [-r ROUNDS] [-o RAW.tsv] [-W] [--busy one|half] [IMPL ...]
#
# The same two-VM setup as the main bench (anchors.sh, ping 200 x 10 ms and
# sockperf ping-pong only), with four forwarders between the two TAPs.
# Without -W the pings meet a cold pipeline (V8's baseline code: the JS
# entered for a few ARP and ping frames only); -W (warm) runs 64-byte UDP
# (iperf3, BA_UDP_SECS, default 3 s) first, as the main bench's TCP, UDP and
# trafgen do before its pings, so V8 has optimized the pipeline. The main
# bench's ping figures are warm ones: compare them with -W. Forwarders:
#   cfwd   bench/latency/cfwd.c: read -> write in C, one epoll loop (the floor:
#          what an exact-match cache in the addon could reach at best)
#   jsfwd  bench/latency/jsfwd.mjs: Node + the addon, one JS call per batch,
#          sendVnet per frame, no switching logic (the cost of entering JS)
#   ours   vswitch (bench/ours.sh: bridge, two access ports, offloads on, the flow
#          cache on as by default: README "Flow cache")
#   ours-nofc  the same with the bridge's flow cache off (flowCache: false)
#   ours-fc  the flow cache written out on (= ours since the default; an alias)
#   ours-n, ours-fcn  ours / ours-fc with node --no-memory-reducer (V8's memory
#          reducer's full collections stall the daemon 10-30 ms a few seconds
#          after traffic stops; README "Flow cache and one JS entry per wakeup")
#   jsfwd2 jsfwd entering JS twice per round trip (no followUp: the control)
#   base   `ours` with another build's daemon: BASE_JS=<tree>/packages/cli/dist/main.js
#          (before/after in one run; base-fc: with its flow cache on)
#   vde    vde_switch (the peer of issue 19's latency targets)
# interleaved per round (and per variant with --busy, as bench/run.sh --busy).
# Prints the medians, ratios vswitch/other, and the differences in µs:
# ours - jsfwd (the bridge pipeline's JS), jsfwd - cfwd (libuv + N-API + V8
# entry + the send call), ours - cfwd (the most a cache that never enters JS
# could save). Needs root and a built tree; VSWITCH_SHARED as bench/run.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
shared=${VSWITCH_SHARED:-$repo/../shared}
anchors=$shared/bench/anchors.sh
[ "$(id -u)" = 0 ] || { echo "latency/run.sh: needs root" >&2; exit 1; }

rounds=3 raw="" busy="" measure="ping sockperf"
args=()
for a in "$@"; do [ "$a" = --busy ] && args+=(-b) || args+=("$a"); done
set -- "${args[@]}"
while getopts "r:o:b:Wh" opt; do
  case $opt in
    W) measure="udp ping sockperf" ;;
    r) rounds=$OPTARG ;;
    o) raw=$OPTARG ;;
    b) busy=${OPTARG//,/ } ;;
    h) sed -n '2,/^set -eu/p' "$0" | sed 's/^# \{0,1\}//' | head -n -1; exit 0 ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ -f "$anchors" ] || { echo "latency/run.sh: no $anchors (set VSWITCH_SHARED)" >&2; exit 1; }
impls=${*:-ours cfwd jsfwd vde}

out=$(mktemp -d /tmp/vswitch-latency.XXXXXX)
. "$repo/bench/busy/lib.sh"
busy_build "$out"
gcc -O2 -o "$out/cfwd" "$here/cfwd.c"
trap 'for p in "${BUSY_PIDS[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$out"' EXIT
trap 'exit 130' INT TERM

cmd_of() {
  case $1 in
    ours) echo "bash $repo/bench/ours.sh @DIR@ @TAP1@ @TAP2@" ;;
    cfwd) echo "$out/cfwd @TAP1@ @TAP2@" ;;
    jsfwd) echo "node $here/jsfwd.mjs @TAP1@ @TAP2@" ;;
    ours-fc) echo "env VSWITCH_BENCH_FLOWCACHE=true bash $repo/bench/ours.sh @DIR@ @TAP1@ @TAP2@" ;;
    ours-nofc) echo "env VSWITCH_BENCH_FLOWCACHE=false bash $repo/bench/ours.sh @DIR@ @TAP1@ @TAP2@" ;;
    ours-fcn) echo "env VSWITCH_BENCH_FLOWCACHE=true VSWITCH_BENCH_NODE_ARGS=--no-memory-reducer bash $repo/bench/ours.sh @DIR@ @TAP1@ @TAP2@" ;;
    ours-n) echo "env VSWITCH_BENCH_NODE_ARGS=--no-memory-reducer bash $repo/bench/ours.sh @DIR@ @TAP1@ @TAP2@" ;;
    jsfwd2) echo "env JSFWD_ENTRIES=2 node $here/jsfwd.mjs @TAP1@ @TAP2@" ;;
    base) echo "env VSWITCH_BENCH_JS=${BASE_JS:?base needs BASE_JS} bash $repo/bench/ours.sh @DIR@ @TAP1@ @TAP2@" ;;
    base-fc) echo "env VSWITCH_BENCH_JS=${BASE_JS:?base-fc needs BASE_JS} VSWITCH_BENCH_FLOWCACHE=true bash $repo/bench/ours.sh @DIR@ @TAP1@ @TAP2@" ;;
    *) echo "" ;;
  esac
}

# One anchors.sh at a time machine-wide: the lock held for the whole run (../lock.sh).
. "$here/../lock.sh"
bench_lock bench/latency/run.sh
printf 'round\ttopo\tmetric\tvalue\tvariant\n' > "$out/raw.tsv"
printf '0\tmeta\tloadavg_start\t%s\tall\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/raw.tsv"
variants="quiet $busy"
for r in $(seq "$rounds"); do
  order=$variants
  [ $((r % 2)) = 0 ] && order=$(tr ' ' '\n' <<<"$variants" | tac | tr '\n' ' ')
  for i in $impls; do
    for v in $order; do
      quiet_wait; bg=$QUIET_BG
      [ "$v" = quiet ] || busy_start "$v"
      la=$(cut -d' ' -f1 /proc/loadavg)
      c=$(cmd_of "$i"); t=$i; [ -n "$c" ] && t=ours
      BA_OURS_CMD=$c BA_MEASURE=$measure BA_QUIET_BUDGET=0 \
        bash "$anchors" -r 1 -o "$out/part.tsv" "$t" >>"$out/anchors.txt" || true
      BUSY_CORES=""
      [ "$v" = quiet ] || busy_stop
      { [ -f "$out/part.tsv" ] && tail -n +2 "$out/part.tsv" | awk -F'\t' -v OFS='\t' -v r="$r" -v v="$v" -v i="$i" '$2 != "meta" {$1 = r; $2 = i; print $0, v}'
        printf '%s\t%s\t%s\t%s\t%s\n' "$r" "$i" pre_busy_pct "$bg" "$v" "$r" "$i" loadavg1 "$la" "$v"
        [ -n "$BUSY_CORES" ] && printf '%s\t%s\t%s\t%s\t%s\n' "$r" "$i" load_cores "$BUSY_CORES" "$v"
      } >> "$out/raw.tsv"
      rm -f "$out/part.tsv"
      echo "latency/run.sh: round $r $i $v done (loadavg $la)" >&2
    done
  done
done
printf '0\tmeta\tloadavg_end\t%s\tall\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/raw.tsv"
[ -n "$raw" ] && cp "$out/raw.tsv" "$raw"
python3 "$repo/bench/report.py" "$out/raw.tsv" $impls
python3 - "$out/raw.tsv" <<'PY'
import csv, statistics as st, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter='\t'))
vals = {}
for r in rows:
    try: vals.setdefault((r['variant'], r['topo'], r['metric']), []).append(float(r['value']))
    except ValueError: pass
def med(v, t, m):
    x = vals.get((v, t, m)); return st.median(x) if x else None
print('\n## Differences of medians, µs (where the round trip goes)\n')
print('| variant | metric | ours | jsfwd | cfwd | vde | ours − jsfwd (pipeline JS) | jsfwd − cfwd (entering JS) | ours − cfwd (most a cache saves) |')
print('|---|---|---|---|---|---|---|---|---|')
f = lambda x: '-' if x is None else f'{x:.1f}'
d = lambda a, b: None if a is None or b is None else a - b
for v in sorted({k[0] for k in vals if k[0] != 'all'}, key=lambda s: s != 'quiet'):
    for m in ('ping_avg_us', 'sp_avg_us', 'sp_p99_us'):
        o, j, c, w = (med(v, t, m) for t in ('ours', 'jsfwd', 'cfwd', 'vde'))
        print(f'| {v} | {m} | {f(o)} | {f(j)} | {f(c)} | {f(w)} | {f(d(o, j))} | {f(d(j, c))} | {f(d(o, c))} |')
PY
