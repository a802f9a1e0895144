#!/usr/bin/env bash
# One process: CPU by default (debugging on a laptop), `--device Ascend` for one NPU.
#   launch/run_local.sh --epochs 2
#   DEVICE_ID=3 launch/run_local.sh --device Ascend
# Every argument goes to the trainer (python -m train --help), or to your script of
# train.main (SCRIPT=job.py). Exit code = the run's.
set -euo pipefail
# A stop signal (TERM, INT, HUP, USR1) before the trainer starts ends the script with 75; from
# the exec on, the trainer takes them itself.
stop=''
# (One that lands after the last check goes with the exec: train/stop.py's TRAIN_PENDING_STOP.)
for sig in TERM INT HUP USR1; do trap "stop=$sig; export TRAIN_PENDING_STOP=$sig" "$sig"; done
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=launch/_common.sh
. "$here/_common.sh"

export DEVICE_ID=${DEVICE_ID:-0}   # which NPU/GPU on this host (ignored on CPU)
need_int DEVICE_ID 0 1023
# Leftovers of a cluster job in this shell would make the trainer think it is a rank.
# shellcheck disable=SC2046
unset $("${pkg[@]}" -m train.cluster launch-vars)
if [[ -n "$stop" ]]; then
  stopped_before_start
  exit 75
fi
exec "${trainer[@]}" "$@"
