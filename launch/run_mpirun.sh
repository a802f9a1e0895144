#!/usr/bin/env bash
# Data-parallel job started by an MPI launcher; mpi4py turns it into a MindSpore cluster
# (train/cluster.py: rank 0 starts the scheduler and broadcasts its address).
#   NPROC=4 launch/run_mpirun.sh --epochs 10
#   MPIRUN="mpiexec" MPI_ARGS="--hostfile hosts" NPROC=16 launch/run_mpirun.sh ...
# Every argument goes to the trainer (python -m train --help). Exit code = the job's.
set -euo pipefail

NPROC=${NPROC:-2}                      # processes (ranks) in total
MPIRUN=${MPIRUN:-mpirun}               # any MPI launcher that takes -n
MPI_ARGS=${MPI_ARGS:-}                 # extra launcher flags (hostfile, binding, ...)
LOG_DIR=${LOG_DIR:-logs/mpirun}        # worker_<rank>.log and scheduler.log
export CLUSTER_TIMEOUT=${CLUSTER_TIMEOUT:-120}  # seconds for all ranks to join the cluster
NODE_TIMEOUT=${NODE_TIMEOUT:-30}       # seconds without a heartbeat before a rank counts as lost
export MS_NODE_TIMEOUT=$NODE_TIMEOUT LOG_DIR
# MASTER_ADDR / MASTER_PORT: the scheduler's address; by default rank 0 picks its own and a free port.

if ! command -v "$MPIRUN" >/dev/null; then
  echo "error: MPI launcher '$MPIRUN' not found; pip install '.[mpi]' or load your site MPI" >&2
  exit 2
fi
if ! python -c 'import mpi4py' 2>/dev/null; then
  echo "error: mpi4py is not installed; pip install '.[mpi]'" >&2
  exit 2
fi
# The flags and world size as every rank will see them, checked once before anything starts.
OMPI_COMM_WORLD_SIZE=$NPROC python -m train "$@" --dry_run >/dev/null
if [[ -n "${MASTER_PORT:-}" ]]; then
  python -m train.cluster port-free "$MASTER_PORT"
fi
version=$("$MPIRUN" --version 2>/dev/null || true)  # not `| grep -q`: SIGPIPE under pipefail
if [[ "$version" == *"Open MPI"* ]]; then
  # Open MPI pins each rank to one core by default; MindSpore's runtime threads then share it.
  MPI_ARGS="--bind-to none $MPI_ARGS"
fi
if [[ $EUID -eq 0 ]]; then  # containers run as root; Open MPI refuses that unless told
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

# shellcheck disable=SC2086  # MPI_ARGS is a list of flags
exec "$MPIRUN" -n "$NPROC" $MPI_ARGS python -m train "$@"
