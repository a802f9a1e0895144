#!/usr/bin/env bash
# Data-parallel job under MindSpore's msrun: NPROC workers on this node, on NNODES nodes.
#   One 8-NPU node:  launch/run_msrun.sh --device Ascend --epochs 10
#   CPU workers:     NPROC=2 launch/run_msrun.sh
#   Two nodes:       on each, NNODES=2 NODE_RANK=<0|1> MASTER_ADDR=<node 0's IP> launch/run_msrun.sh ...
# Every argument goes to the trainer (python -m train --help). Exit code = the job's (75 when
# SIGTERM stopped it with a checkpoint).
set -euo pipefail

NPROC=${NPROC:-8}                       # workers on this node (8 per Ascend node)
NNODES=${NNODES:-1}                     # nodes in the job
NODE_RANK=${NODE_RANK:-0}               # this node's index; ranks are NODE_RANK*NPROC + i
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}   # node 0's address (the scheduler runs there)
MASTER_PORT=${MASTER_PORT:-8118}        # scheduler port on node 0
LOG_DIR=${LOG_DIR:-logs/msrun}          # worker_<rank>.log and scheduler.log
CLUSTER_TIMEOUT=${CLUSTER_TIMEOUT:-120} # seconds for all workers to join the cluster
NODE_TIMEOUT=${NODE_TIMEOUT:-30}        # seconds without a heartbeat before a rank counts as lost
TAIL_WORKER_LOG=${TAIL_WORKER_LOG:-0}   # local worker whose log is echoed here (-1: none)
export MS_NODE_TIMEOUT=$NODE_TIMEOUT    # MindSpore's heartbeat timeout (scheduler and workers)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Refuse what cannot work before msrun starts anything: the flags and world size as every
# worker will see them (once, not once per worker), and a busy scheduler port.
MS_ROLE=MS_WORKER MS_WORKER_NUM=$((NPROC * NNODES)) python -m train "$@" --dry_run >/dev/null
if [[ "$NODE_RANK" == 0 ]]; then
  python -m train.cluster port-free "$MASTER_PORT"
fi

# A scheduler's SIGTERM (preemption) must reach the workers, which checkpoint and exit 75;
# msrun itself does not forward it, and runs in a session of its own (setsid) so that a
# signal to this script's process group does not kill it before the workers are done.
pid= interrupted=
trap '[[ -n "$pid" ]] && python -m train.cluster term-workers "$pid" || true' TERM
# Ctrl-C: msrun kills its workers itself (no checkpoint) - and then exits 0, hence the flag.
trap 'interrupted=1; [[ -n "$pid" ]] && kill -INT "$pid" 2>/dev/null || true' INT
setsid msrun --worker_num $((NPROC * NNODES)) --local_worker_num "$NPROC" \
  --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" --node_rank "$NODE_RANK" \
  --log_dir "$LOG_DIR" --join True --cluster_time_out "$CLUSTER_TIMEOUT" \
  --tail_worker_log "$TAIL_WORKER_LOG" \
  "$here/trainer.py" "$@" &
pid=$!
rc=0
while kill -0 "$pid" 2>/dev/null; do
  wait "$pid" && rc=0 || rc=$?            # returns early when the trap runs; msrun goes on
done
wait "$pid" && rc=0 || rc=$?              # msrun's own exit status (bash keeps it)
if [[ -n "$interrupted" ]]; then
  echo "error: interrupted (Ctrl-C); workers stopped without a checkpoint of this step" >&2
  exit 130
fi
if [[ $rc -ne 0 ]]; then
  if grep -qs "SIGTERM: stopped at step" "$LOG_DIR"/worker_*.log; then
    exit 75                               # preempted with a checkpoint: resume with --resume
  fi
  grep -h "^error: " "$LOG_DIR"/worker_*.log >&2 || true  # msrun names PIDs, this the rank
fi
exit "$rc"
