# bench/busy/lib.sh: the CPU load of `bench/run.sh --busy`, sourced by run.sh.
#
# Modes (what a hypervisor's VMs do to the switch's CPUs):
#   one   one process spinning without pause, NOT pinned: a busy vCPU of a VM.
#         A hypervisor does not pin its VMs away from the switch (the switch is
#         not pinned either, nor are the peers: OVS, vde, the kernel's softirqs
#         run where the scheduler puts them), so the scheduler places the
#         spinner and the switch as it would place a VM's vCPU thread and
#         ovs-vswitchd; pinning the spinner to "the other" core would be a
#         machine nobody runs and would only measure the scheduler's
#         affinity. On 2 cores it leaves one core's worth of CPU for the switch,
#         both VMs' stacks and the measuring tools.
#   half  two processes, each pinned to one core, each spinning ~50 % of a
#         jittered 10 ms period (bench/busy/spin.c says why jittered): both
#         cores about half busy, the other common shape of a loaded host. Pinned
#         so that "each core half busy" holds by construction; unpinned the
#         scheduler may stack both on one core for a while.
# Both run at normal priority (nice 0, SCHED_OTHER), like VMs' vCPU threads.
# busy_start MODE starts the load and returns at once; busy_stop stops it and
# sets BUSY_CORES to the cores' worth of CPU the load got while it ran (e.g.
# 0.93), which the report prints so that a load the switch starved is visible.
# (Call both in the main shell, not in $(...): busy_stop waits for its children.)

BUSY_PIDS=() BUSY_OUT=""

busy_build() {  # busy_build DIR: compile spin.c into DIR/spin (gcc is there: the addon needs it)
  gcc -O2 -o "$1/spin" "$(dirname "${BASH_SOURCE[0]}")/spin.c" || return 1
  BUSY_BIN=$1/spin BUSY_DIR=$1
}

busy_start() {  # busy_start MODE
  BUSY_PIDS=() BUSY_OUT=$BUSY_DIR/spin.$$.out
  : > "$BUSY_OUT"
  case $1 in
    one) "$BUSY_BIN" 100 >>"$BUSY_OUT" & BUSY_PIDS+=("$!") ;;
    half)
      local c
      for c in $(seq 0 $(( $(nproc) - 1 ))); do taskset -c "$c" "$BUSY_BIN" 50 10000 >>"$BUSY_OUT" & BUSY_PIDS+=("$!"); done ;;
    *) echo "bench/run.sh: unknown --busy mode '$1' (one, half)" >&2; return 2 ;;
  esac
}

busy_stop() {  # BUSY_CORES = the load's CPU in cores (sum over its processes of cpu_s / wall_s)
  local p
  for p in "${BUSY_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${BUSY_PIDS[@]}"; do wait "$p" 2>/dev/null; done
  BUSY_PIDS=()
  BUSY_CORES=$(awk -F'[= ]' '/^spin/{c+=$3/$5} END{printf "%.2f", c}' "$BUSY_OUT")
  rm -f "$BUSY_OUT"
}

busy_pct() {  # whole-machine busy % over 0.5 s (as anchors.sh measures it)
  local a b
  a=$(awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6; exit}' /proc/stat); sleep 0.5
  b=$(awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6; exit}' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN{split(a,x," ");split(b,y," ");t=y[1]-x[1];i=y[2]-x[2];printf "%.0f", t?100*(t-i)/t:0}'
}

QUIET_LEFT=${BA_QUIET_BUDGET:-60}
# anchors.sh's wait for other users' load (at most BA_QUIET_BUDGET s in the whole
# run), done here before the load starts; sets QUIET_BG to the last busy % seen.
# Call it in the main shell (not in $(...)): the budget must carry over.
quiet_wait() {
  while :; do
    QUIET_BG=$(busy_pct)
    { [ "$QUIET_BG" -le "${BA_QUIET_MAX:-25}" ] || [ "$QUIET_LEFT" -le 0 ]; } && break
    QUIET_LEFT=$((QUIET_LEFT - 1)); sleep 0.5
  done
}
