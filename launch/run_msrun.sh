#!/usr/bin/env bash
# Data-parallel job under MindSpore's msrun: NPROC workers on this node, on NNODES nodes.
#   One 8-NPU node:  launch/run_msrun.sh --device Ascend --epochs 10
#   CPU workers:     NPROC=2 launch/run_msrun.sh
#   Two nodes:       on each, NNODES=2 NODE_RANK=<0|1> MASTER_ADDR=<node 0> launch/run_msrun.sh ...
# Every argument goes to the trainer (python -m train --help), or to your script of train.main
# on every worker (SCRIPT=job.py). Exit code: msrun's (0 done,
# non-zero failed: the trainer's `error:` lines are printed), 75 when SIGTERM, SIGINT, SIGHUP or
# SIGUSR1 stopped the job with a checkpoint (continue with --resume), 2 for a refused
# configuration.
set -euo pipefail
# Signals: msrun neither forwards SIGTERM/SIGUSR1 nor survives them, and answers SIGINT by
# killing its workers without a checkpoint. So msrun runs supervised (its own session, those
# signals ignored, killed if this script dies) and the script forwards every stop signal
# (TERM, INT, HUP, USR1) to the workers, which checkpoint and exit 75 - again each half second
# until they say so, since a worker that has not installed its handlers yet ignores them. A
# signal before msrun starts ends the script with 75 at once. The script also ends msrun's
# leftovers once the workers are done, since msrun then still waits for its scheduler's
# heartbeat timeout. The traps come first: a signal at any moment of the script is a stop.
pid='' stop='' pre=''
forward() {
  stop=$1
  if [[ -n "$pre" ]]; then kill -"$1" "$pre" 2>/dev/null || true; fi  # the pre-flight dry run
  if [[ -n "$pid" ]]; then "${pkg[@]}" -m train.cluster term-workers "$pid" "$1" || true; fi
  true
}
trap 'forward TERM' TERM
trap 'forward INT' INT
trap 'forward HUP' HUP
trap 'forward USR1' USR1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=launch/_common.sh
. "$here/_common.sh"

NPROC=${NPROC:-8}                       # workers on this node (8 per Ascend node)
NNODES=${NNODES:-1}                     # nodes in the job
NODE_RANK=${NODE_RANK:-0}               # this node's index; ranks are NODE_RANK*NPROC + i
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}   # node 0's host name or address (the scheduler runs there)
MASTER_PORT=${MASTER_PORT:-8118}        # scheduler port on node 0
LOG_DIR=${LOG_DIR:-logs/msrun}          # worker_<rank>.log and scheduler.log
CLUSTER_TIMEOUT=${CLUSTER_TIMEOUT:-600} # seconds for all workers to join (msrun's default)
NODE_TIMEOUT=${NODE_TIMEOUT:-30}        # seconds without a heartbeat before a rank counts as lost
TAIL_WORKER_LOG=${TAIL_WORKER_LOG:-first}  # worker log echoed here: first (this node's first
                                        # worker), a rank, -1 (every local worker) or none
BIND_CORE=${BIND_CORE:-auto}            # msrun --bind_core: true, false, auto (true on Ascend)
need_int NPROC 1 4096
need_int NNODES 1 65536
need_int NODE_RANK 0 $((NNODES - 1))
need_int MASTER_PORT 1024 65535
need_int CLUSTER_TIMEOUT 1
need_int NODE_TIMEOUT 1
need_choice BIND_CORE auto true false
need_dir LOG_DIR
case "$TAIL_WORKER_LOG" in
  first) tail_ranks=$((NODE_RANK * NPROC)) ;;
  -1) tail_ranks=$(seq $((NODE_RANK * NPROC)) $((NODE_RANK * NPROC + NPROC - 1))) ;;
  none) tail_ranks='' ;;
  *) if ! [[ "$TAIL_WORKER_LOG" =~ ^[0-9]{1,9}$ ]]; then
       echo "error: TAIL_WORKER_LOG must be first, a rank (a whole number >= 0), -1 or none," \
         "got '$TAIL_WORKER_LOG'" >&2
       exit 2
     fi
     tail_ranks=$TAIL_WORKER_LOG ;;
esac
if ! MASTER_ADDR=$("${pkg[@]}" -m train.cluster resolve "$MASTER_ADDR"); then exit 2; fi
export MS_NODE_TIMEOUT=$NODE_TIMEOUT    # MindSpore's heartbeat timeout (scheduler and workers)

# Refuse what cannot work before msrun starts anything: the flags, data, run folder and world
# size as every worker will see them (once, not once per worker), and a busy scheduler port.
MS_ROLE=MS_WORKER MS_WORKER_NUM=$((NPROC * NNODES)) preflight "$@" || exit $?
if [[ "$BIND_CORE" == auto ]]; then
  BIND_CORE=false
  [[ "$plan" == *"# device: Ascend"* ]] && BIND_CORE=true
fi
cpuset=/sys/fs/cgroup/cpuset/cpuset.cpus  # the only file msrun's --bind_core reads
if [[ "$BIND_CORE" == true ]] && ! { [[ -r $cpuset ]] && [[ -n "$(cat "$cpuset" 2>/dev/null)" ]]; }; then
  echo "warning: BIND_CORE: msrun --bind_core reads only cgroup v1's $cpuset, which this host" \
    "lacks (cgroup v2?): it turns itself off and the workers are not bound to cores" >&2
fi
if [[ "$NODE_RANK" == 0 ]]; then
  "${pkg[@]}" -m train.cluster port-free "$MASTER_PORT"
fi
# msrun rewrites this node's logs; one left from an earlier job must not be read as this job's
# outcome. (Only this node's: LOG_DIR is often shared with the other nodes, whose logs count
# once they are newer than this node's marker.)
mark_job "$LOG_DIR/.job_node$NODE_RANK"
old_logs=("$LOG_DIR/msrun_node$NODE_RANK.log")  # (one rm, not NPROC)
for ((r = NODE_RANK * NPROC; r < (NODE_RANK + 1) * NPROC; r++)); do
  old_logs+=("$LOG_DIR/worker_$r.log")
done
if [[ "$NODE_RANK" == 0 ]]; then old_logs+=("$LOG_DIR/scheduler.log"); fi
rm -f -- "${old_logs[@]}"
if [[ -n "$stop" ]]; then
  stopped_before_start
  exit 75
fi
# msrun's own `tail -f` would outlive a killed msrun: the script tails instead (tail --pid
# ends with the script), and msrun is given a rank to tail that no worker has. The console
# shows the trainer's lines; msrun's own and MindSpore's (`[WARNING] ...`, the start-up's
# "Failed to connect to the meta server" retries) stay in the logs (msrun_node<K>.log).
"${pkg[@]}" -m train.cluster exec-supervised "${yours[@]}" msrun --worker_num $((NPROC * NNODES)) \
  --local_worker_num "$NPROC" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
  --node_rank "$NODE_RANK" --log_dir "$LOG_DIR" --join True \
  --cluster_time_out "$CLUSTER_TIMEOUT" --tail_worker_log -2 \
  --bind_core "$BIND_CORE" "${SCRIPT:-$here/trainer.py}" "$@" \
  > "$LOG_DIR/msrun_node$NODE_RANK.log" 2>&1 &
pid=$!
ours() { grep --line-buffered -v -E '^\[(WARNING|INFO|ERROR|DEBUG|CRITICAL|EXCEPTION)\] '; }
tails=()
for r in $tail_ranks; do
  # (not `| ours`: $! must be tail, which the end below kills; a filter ends with its input)
  tail --pid=$$ -n +1 -F "$LOG_DIR/worker_$r.log" 2>/dev/null > >(ours) &
  tails+=($!)
done
while kill -0 "$pid" 2>/dev/null; do
  job_lines; seen=$found
  if [[ -n "$stop" && -z "$seen" ]]; then forward "$stop"; fi  # until a worker hears it
  if [[ -n "$seen" ]]; then  # a worker failed or stopped: give msrun a moment, then end it
    for _ in 1 2 3 4 5 6; do
      kill -0 "$pid" 2>/dev/null || break
      { sleep 0.5 & wait $!; } 2>/dev/null || true
    done
    break
  fi
  { sleep 0.5 & wait $!; } 2>/dev/null || true  # returns early for a trap; msrun goes on
done
kill -KILL -- "-$pid" 2>/dev/null || true   # msrun's session: scheduler, tail -f, msrun itself
rc=0
{ wait "$pid"; } 2>/dev/null || rc=$?  # (quiet: bash would report the kill above)
sleep 0.3  # let the tails print the last lines
kill "${tails[@]}" 2>/dev/null || true
if [[ -z "$tail_ranks" ]]; then  # nothing echoed: the run's result still reaches the console
  grep -hs -E "^(warning: |learned |trained )" "$LOG_DIR/worker_$((NODE_RANK * NPROC)).log" \
    || true
fi
job_lines; lines=$found
if [[ "$lines" == *"stopped: "* && "$lines" != *"error: "* ]]; then
  shown=''  # the echoed workers' lines said it; else (a stop while joining: only some said it)
  for r in $tail_ranks; do shown+=$(grep -hs "^stopped: " "$LOG_DIR/worker_$r.log" || true); done
  [[ -n "$shown" ]] || { grep "^stopped: " <<< "$lines" | sort -u >&2 || true; }
  exit 75                                   # stopped with a checkpoint: continue with --resume
fi
if [[ -n "$stop" && $rc -ne 0 && -z "$lines" ]] && ! job_started; then
  # Workers ended by the signal before their handlers existed (Python's first milliseconds):
  # nothing was trained, a resume is safe. (A worker that crashed after the run started is a
  # failure, whatever was sent meanwhile.)
  echo "stopped: SIG$stop while the job was starting; nothing was trained" >&2
  exit 75
fi
if [[ -n "$lines" ]]; then
  grep "^error: " <<< "$lines" >&2 || true  # msrun names PIDs; the trainer names the rank
  rc=1                                      # (msrun's own code, or the kill that ended it)
fi
exit "$rc"  # a stop signal after the last step changes nothing: the run finished
