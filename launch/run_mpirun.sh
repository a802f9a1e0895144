#!/usr/bin/env bash
# Data-parallel job started by an MPI launcher; mpi4py turns it into a MindSpore cluster
# (train/cluster/mpi.py: rank 0 starts the scheduler and broadcasts its address).
#   NPROC=4 launch/run_mpirun.sh --epochs 10
#   MPIRUN=mpiexec MPI_ARGS="--hostfile hosts" NPROC=16 launch/run_mpirun.sh ...
# Every argument goes to the trainer (python -m train --help), or to your script of train.main
# on every rank (SCRIPT=job.py). Exit code: the job's (0 done,
# non-zero failed), 75 when SIGTERM, SIGINT or SIGUSR1 stopped it with a checkpoint (continue
# with --resume), 2 for a refused configuration.
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
need_int NPROC 1 4096  # (more than one host runs: the loops below stay quick)
need_int CLUSTER_TIMEOUT 1
need_int NODE_TIMEOUT 1
need_dir LOG_DIR
if [[ -n "${MASTER_PORT:-}" ]]; then need_int MASTER_PORT 1024 65535; fi
export CLUSTER_TIMEOUT LOG_DIR MS_NODE_TIMEOUT=$NODE_TIMEOUT

# Signals: Open MPI's mpirun ends the job on SIGTERM or SIGINT (it kills the ranks: no
# checkpoint) and forwards only SIGUSR1 and SIGUSR2 to every rank on every host. So mpirun runs
# in a session of its own (a terminal's Ctrl-C reaches this script only; mpirun dies with it),
# and the script turns every stop signal into a SIGUSR1 to mpirun: each rank checkpoints and
# exits 75, and so does the script. A signal before mpirun starts ends the script with 75.
pid='' stop=''
forward() {
  stop=$1
  signal_preflight "$1"
  if [[ -n "$pid" ]]; then kill -USR1 "$pid" 2>/dev/null || true; fi
}
trap 'forward TERM' TERM
trap 'forward INT' INT
trap 'forward USR1' USR1

mpi_hint() {  # the installed package's form, and a source checkout's where this is one
  python -c 'from train.launch import pip_hint; print(pip_hint("mpi"))' 2>/dev/null \
    || echo "pip install 'ms-dp-regression[mpi]'"
}
if ! command -v "$MPIRUN" >/dev/null; then
  echo "error: MPI launcher '$MPIRUN' not found; $(mpi_hint), or load your site MPI" >&2
  exit 2
fi
if ! python -c 'import mpi4py' 2>/dev/null; then
  echo "error: mpi4py is not installed; $(mpi_hint)" >&2
  exit 2
fi
# The flags, data, run folder and world size as every rank will see them, checked once.
OMPI_COMM_WORLD_SIZE=$NPROC preflight "$@" || exit $?
if [[ -n "${MASTER_PORT:-}" ]]; then
  python -m train.cluster port-free "$MASTER_PORT"
fi
version=$("$MPIRUN" --version 2>/dev/null || true)  # not `| grep -q`: SIGPIPE under pipefail
if [[ "$version" == *"Open MPI"* ]]; then
  # Open MPI pins each rank to one core by default; MindSpore's runtime threads then share it.
  MPI_ARGS="--bind-to none $MPI_ARGS"
  # Ranks on other hosts get only what is forwarded: the knobs above, the import and library
  # paths, and the device's environment (CANN's ASCEND_*, HCCL_* timeouts, ...).
  for v in PATH PYTHONPATH LD_LIBRARY_PATH LOG_DIR CLUSTER_TIMEOUT MS_NODE_TIMEOUT MASTER_ADDR \
           MASTER_PORT MASTER_IFACE TRAIN_FAULT TRAIN_NO_DEVICE_PROBE TRAIN_CACHE_DIR DEVICE_ID \
           $(compgen -e | grep -E '^(ASCEND_|HCCL_|GLOG_)' || true); do
    if [[ -n "${!v+x}" ]]; then export "${v?}"; MPI_ARGS="$MPI_ARGS -x $v"; fi
  done
fi
if [[ $EUID -eq 0 ]]; then  # containers run as root; Open MPI refuses that unless told
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
if [[ -n "$stop" ]]; then
  stopped_before_start
  exit 75
fi
mark_job "$LOG_DIR/.job"  # (ranks on other hosts write their logs there only if it is shared)
for ((r = 0; r < NPROC; r++)); do  # the ranks append: a log of an earlier job starts afresh
  rm -f "$LOG_DIR/worker_$r.log"
done

# mpirun's "one or more processes exited with non-zero status" block, for ranks that stopped
# with 75 as asked, says nothing the ranks' own `stopped:` lines do not.
quiet_stops() {
  trap '' INT TERM  # a terminal's Ctrl-C or Slurm's TERM to the job must not end the filter
  awk '/^-+$/ && length($0) >= 20 {  # (mawk: no interval expressions)
         blk = blk $0 "\n"
         if (inblk) { if (blk !~ /Exit code: +75\n/) printf "%s", blk; fflush(); blk = ""; inblk = 0 }
         else inblk = 1
         next }
       inblk { blk = blk $0 "\n"; next }
       { print; fflush() }' >&2
}
# shellcheck disable=SC2086  # MPI_ARGS is a list of flags
python -m train.cluster exec-supervised "$MPIRUN" -n "$NPROC" $MPI_ARGS \
  "${trainer[@]}" "$@" 2> >(quiet_stops) &
pid=$!
wait_for "$pid"
job_lines
if [[ -n "$stop" && $rc -ne 0 && $rc -ne 75 && "$found" != *"error: "* ]]; then
  # Ranks ended by the signal before their handlers were installed (the others stopped as
  # asked), and none failed: a resume is safe (checkpoints are whole or absent).
  if [[ "$found" != *"stopped: "* ]]; then
    echo "stopped: SIG$stop while the job was starting; nothing was trained" >&2
  fi
  rc=75
fi
sleep 0.2  # let the stderr filter print the last lines
exit "$rc"
