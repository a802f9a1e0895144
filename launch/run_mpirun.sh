#!/usr/bin/env bash
# Data-parallel job started by an MPI launcher; mpi4py turns it into a MindSpore cluster
# (train/cluster.py: rank 0 starts the scheduler and broadcasts its address).
#   NPROC=4 launch/run_mpirun.sh --epochs 10
#   MPIRUN=mpiexec MPI_ARGS="--hostfile hosts" NPROC=16 launch/run_mpirun.sh ...
# Every argument goes to the trainer (python -m train --help). Exit code = the job's.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=launch/_common.sh
. "$here/_common.sh"

NPROC=${NPROC:-2}                      # processes (ranks) in total
MPIRUN=${MPIRUN:-mpirun}               # any MPI launcher that takes -n
MPI_ARGS=${MPI_ARGS:-}                 # extra launcher flags (hostfile, binding, agent, ...)
LOG_DIR=${LOG_DIR:-logs/mpirun}        # worker_<rank>.log and scheduler.log
CLUSTER_TIMEOUT=${CLUSTER_TIMEOUT:-600}  # seconds for all ranks to join the cluster
NODE_TIMEOUT=${NODE_TIMEOUT:-30}       # seconds without a heartbeat before a rank counts as lost
# MASTER_ADDR / MASTER_PORT: the scheduler's host name or address and port; by default rank 0
# picks 127.0.0.1 (one host) or its interface that reaches the other hosts (MASTER_IFACE to
# choose one), and a free port.
need_int NPROC 1 1000000
need_int CLUSTER_TIMEOUT 1
need_int NODE_TIMEOUT 1
need_dir LOG_DIR
if [[ -n "${MASTER_PORT:-}" ]]; then need_int MASTER_PORT 1024 65535; fi
export CLUSTER_TIMEOUT LOG_DIR MS_NODE_TIMEOUT=$NODE_TIMEOUT

if ! command -v "$MPIRUN" >/dev/null; then
  echo "error: MPI launcher '$MPIRUN' not found; pip install '.[mpi]' or load your site MPI" >&2
  exit 2
fi
if ! python -c 'import mpi4py' 2>/dev/null; then
  echo "error: mpi4py is not installed; pip install '.[mpi]'" >&2
  exit 2
fi
# The flags, data, run folder and world size as every rank will see them, checked once.
OMPI_COMM_WORLD_SIZE=$NPROC preflight "$@" >/dev/null
if [[ -n "${MASTER_PORT:-}" ]]; then
  python -m train.cluster port-free "$MASTER_PORT"
fi
version=$("$MPIRUN" --version 2>/dev/null || true)  # not `| grep -q`: SIGPIPE under pipefail
if [[ "$version" == *"Open MPI"* ]]; then
  # Open MPI pins each rank to one core by default; MindSpore's runtime threads then share it.
  MPI_ARGS="--bind-to none $MPI_ARGS"
  # Ranks on other hosts get only what is forwarded: the knobs above and the import path.
  for v in PATH PYTHONPATH LOG_DIR CLUSTER_TIMEOUT MS_NODE_TIMEOUT MASTER_ADDR MASTER_PORT \
           MASTER_IFACE TRAIN_FAULT TRAIN_NO_DEVICE_PROBE DEVICE_ID; do
    if [[ -n "${!v+x}" ]]; then export "${v?}"; MPI_ARGS="$MPI_ARGS -x $v"; fi
  done
fi
if [[ $EUID -eq 0 ]]; then  # containers run as root; Open MPI refuses that unless told
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

# shellcheck disable=SC2086  # MPI_ARGS is a list of flags
exec "$MPIRUN" -n "$NPROC" $MPI_ARGS python -m train "$@"
