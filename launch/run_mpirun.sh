#!/usr/bin/env bash
# Data-parallel job started by an MPI launcher; mpi4py turns it into a MindSpore cluster
# (train/cluster/mpi.py: rank 0 starts the scheduler and broadcasts its address).
#   NPROC=4 launch/run_mpirun.sh --epochs 10
#   MPIRUN=mpiexec MPI_ARGS="--hostfile hosts" NPROC=16 launch/run_mpirun.sh ...
# Every argument goes to the trainer (python -m train --help), or to your script of train.main
# on every rank (SCRIPT=job.py). Exit code: the job's (0 done,
# non-zero failed), 75 when SIGTERM, SIGINT, SIGHUP or SIGUSR1 stopped it with a checkpoint
# (continue with --resume), 2 for a refused configuration.
set -euo pipefail
# Signals: Open MPI's mpirun ends the job on SIGTERM or SIGINT (it kills the ranks: no
# checkpoint) and forwards only SIGUSR1 and SIGUSR2 to every rank on every host. So mpirun runs
# in a session of its own (a terminal's Ctrl-C reaches this script only; mpirun dies with it),
# and the script turns every stop signal into a SIGUSR1 to mpirun, again each half second
# until a rank says it stopped (mpirun and the ranks ignore it until their handlers exist):
# each rank checkpoints and exits 75, and so does the script. The signal's name goes into a
# file the ranks read (TRAIN_STOP_SIGNAL_FILE), so that they name the signal that was sent. A
# signal before mpirun starts ends the script with 75. The traps come first: a signal at any
# moment of the script is a stop.
pid='' stop='' pre='' stop_file=''
forward() {
  stop=$1
  if [[ -n "$pre" ]]; then kill -"$1" "$pre" 2>/dev/null || true; fi  # the pre-flight dry run
  if [[ -n "$pid" ]]; then tell_ranks; fi
  true
}
tell_ranks() {
  # Written beside and renamed over the name: a link planted there is replaced, not followed.
  if [[ -n "$stop_file" ]]; then
    { tmp=$(mktemp "$stop_file.XXXXXX") && printf '%s\n' "$stop" > "$tmp" &&
      mv -f "$tmp" "$stop_file"; } 2>/dev/null || true
  fi
  kill -USR1 "$pid" 2>/dev/null || true
}
trap 'forward TERM' TERM
trap 'forward INT' INT
trap 'forward HUP' HUP
trap 'forward USR1' USR1
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
need_int NPROC 1 4096  # (MindSpore's cluster size msrun accepts too; the job's loops are O(1))
need_int CLUSTER_TIMEOUT 1
need_int NODE_TIMEOUT 1
need_dir LOG_DIR
if [[ -n "${MASTER_PORT:-}" ]]; then need_int MASTER_PORT 1024 65535; fi
export CLUSTER_TIMEOUT LOG_DIR MS_NODE_TIMEOUT=$NODE_TIMEOUT
stop_file=$LOG_DIR/.job.signal  # (absolute: a rank on another host may start elsewhere)
[[ "$stop_file" == /* ]] || stop_file=$PWD/$stop_file
export TRAIN_STOP_SIGNAL_FILE=$stop_file

# The device's and MindSpore's environment, for ranks on other hosts: CANN's ASCEND_*, HCCL_*,
# GLOG_*, MS_*; not what is each host's own (HCCL_IF_IP: an address of the host; CANN's
# HCCL_SOCKET_IFNAME names interfaces instead) nor what the bootstrap sets per rank.
forwarded_vars() {
  compgen -e | grep -E '^(ASCEND_|HCCL_|GLOG_|MS_)' | grep -v -x -E \
    'HCCL_IF_IP|MS_(ROLE|NODE_ID|WORKER_NUM|SCHED_HOST|SCHED_PORT|TOPO_TIMEOUT|NODE_TIMEOUT)' \
    || true
}

mpi_hint() {  # the installed package's form, and a source checkout's where this is one
  "${pkg[@]}" -c 'from train.launch import pip_hint; print(pip_hint("mpi"))' 2>/dev/null \
    || echo "pip install 'ms-dp-regression[mpi]'"
}
if ! command -v "$MPIRUN" >/dev/null; then
  echo "error: MPI launcher '$MPIRUN' not found; $(mpi_hint), or load your site MPI" >&2
  exit 2
fi
if ! "${pkg[@]}" -c 'import mpi4py' 2>/dev/null; then
  echo "error: mpi4py is not installed; $(mpi_hint)" >&2
  exit 2
fi
version=$("$MPIRUN" --version 2>/dev/null || true)  # not `| grep -q`: SIGPIPE under pipefail
# Without a host list, a resource manager or oversubscription, Open MPI places every rank on
# this host, one a core, and refuses more in a page of text: one line instead. (nproc counts
# the CPUs this job may use, hardware threads included: never fewer than Open MPI's slots.)
local_only() {
  [[ "$version" == *"Open MPI"* && " $MPI_ARGS " != *" --host"* && " $MPI_ARGS " != *" -H "* \
     && "$MPI_ARGS" != *hostfile* && "$MPI_ARGS" != *machinefile* \
     && "${MPI_ARGS^^}" != *OVERSUBSCRIBE* && -z "${SLURM_JOB_ID:-}${PBS_JOBID:-}${LSB_JOBID:-}" ]] \
    && ! compgen -e | grep -i -E '_MCA_.*(hostfile|oversubscribe)' >/dev/null
}
if local_only && (( NPROC > $(nproc) )); then
  echo "error: NPROC must be at most $(nproc), the CPUs of this host, where Open MPI puts every" \
    "rank without a host list (MPI_ARGS=\"--hostfile FILE\" or --host, or" \
    "--map-by :OVERSUBSCRIBE); got '$NPROC'" >&2
  exit 2
fi
# The flags, data, run folder and world size as every rank will see them, checked once.
OMPI_COMM_WORLD_SIZE=$NPROC preflight "$@" || exit $?
if [[ -n "${MASTER_PORT:-}" ]]; then
  "${pkg[@]}" -m train.cluster port-free "$MASTER_PORT"
fi
if [[ "$version" == *"Open MPI"* ]]; then
  # Open MPI pins each rank to one core by default; MindSpore's runtime threads then share it.
  MPI_ARGS="--bind-to none $MPI_ARGS"
  # Ranks on other hosts get only what is forwarded: the knobs above, the import and library
  # paths, and the device's environment (CANN's ASCEND_*, HCCL_* timeouts, MindSpore's MS_*).
  for v in PATH PYTHONPATH LD_LIBRARY_PATH LOG_DIR CLUSTER_TIMEOUT MS_NODE_TIMEOUT MASTER_ADDR \
           MASTER_PORT MASTER_IFACE TRAIN_FAULT TRAIN_NO_DEVICE_PROBE TRAIN_CACHE_DIR DEVICE_ID \
           TRAIN_STOP_SIGNAL_FILE TOOLCHAIN_HOME $(forwarded_vars); do
    if [[ -n "${!v+x}" ]]; then export "${v?}"; MPI_ARGS="$MPI_ARGS -x $v"; fi
  done
fi
if [[ $EUID -eq 0 ]]; then  # containers run as root; Open MPI refuses that unless told
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
mark_job "$LOG_DIR/.job" "$stop_file"  # (ranks on other hosts write their logs there only if it is shared)
old_logs=()  # the ranks append: a log of an earlier job starts afresh (one rm, not NPROC)
for ((r = 0; r < NPROC; r++)); do old_logs+=("$LOG_DIR/worker_$r.log"); done
rm -f -- "${old_logs[@]}" "$stop_file"
if [[ -n "$stop" ]]; then
  stopped_before_start
  exit 75
fi

# mpirun's "one or more processes exited with non-zero status" block, for ranks that stopped
# with 75 as asked, says nothing the ranks' own `stopped:` lines do not. A rank that stops
# while joining the cluster exits at once, and mpirun, ending the job then, drops the output it
# has not read yet: those lines are printed from the logs at the end instead, once.
quiet_stops() {
  trap '' INT TERM HUP  # a terminal's Ctrl-C or hang-up, Slurm's TERM: not the filter's end
  awk '/^stopped: .* while joining the cluster; nothing was trained$/ { next }
       /^-+$/ && length($0) >= 20 {  # (mawk: no interval expressions)
         blk = blk $0 "\n"
         if (inblk) { if (blk !~ /Exit code: +75\n/) printf "%s", blk; fflush(); blk = ""; inblk = 0 }
         else inblk = 1
         next }
       inblk { blk = blk $0 "\n"; next }
       { print; fflush() }' >&2
}
# shellcheck disable=SC2086  # MPI_ARGS is a list of flags
"${pkg[@]}" -m train.cluster exec-supervised "${yours[@]}" "$MPIRUN" -n "$NPROC" $MPI_ARGS \
  "${trainer[@]}" "$@" 2> >(quiet_stops) &
pid=$!
if [[ -n "$stop" ]]; then tell_ranks; fi  # one that came while mpirun was being started
while kill -0 "$pid" 2>/dev/null; do
  if [[ -n "$stop" ]]; then
    job_lines
    [[ -n "$found" ]] || tell_ranks  # until a rank says it stopped (or failed)
  fi
  { sleep 0.5 & wait $!; } 2>/dev/null || true  # returns early for a trap
done
wait_for "$pid"
job_lines
if [[ -n "$stop" && $rc -ne 0 && "$found" != *"error: "* ]] &&
   { [[ "$found" == *"stopped: "* ]] || ! job_started; }; then
  # Ranks that stopped (while joining: mpirun ends the others), or ended by the signal before
  # their handlers were installed, and none failed: a resume is safe. (A rank that crashed
  # after the run started, with no stop line, is a failure, whatever was sent meanwhile.)
  joining=$(grep " while joining the cluster; " <<< "$found" | sort -u || true)
  if [[ -n "$joining" ]]; then
    echo "$joining" >&2
  elif [[ "$found" != *"stopped: "* ]]; then
    echo "stopped: SIG$stop while the job was starting; nothing was trained" >&2
  fi
  rc=75
fi
sleep 0.2  # let the stderr filter print the last lines
exit "$rc"
