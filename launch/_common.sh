# Shared by the launch scripts (sourced): validated knobs, so that a bad value is one line and
# exit 2 instead of a traceback, a usage text or an "unbound variable" later.

# need_int NAME MIN [MAX]: $NAME must be a whole number in [MIN, MAX].
need_int() {
  local name=$1 min=$2 max=${3:-} value=${!1-} ok=1
  if ! [[ "$value" =~ ^[0-9]{1,9}$ ]]; then
    ok=0
  elif (( 10#$value < min )); then
    ok=0
  elif [[ -n "$max" ]] && (( 10#$value > max )); then
    ok=0
  fi
  if (( ! ok )); then
    local range=">= $min"
    [[ -n "$max" ]] && range="in $min-$max"
    echo "error: $name must be a whole number $range, got '$value'" >&2
    exit 2
  fi
  # Decimal from here on, whatever its zeros: bash reads 010 as octal and 08 as an error,
  # msrun and the trainer read them as decimal.
  printf -v "$name" '%d' "$((10#$value))"
}

# From a checkout: the checkout these scripts belong to comes first on the import path, whatever
# other `train` is installed (an editable install of another checkout would otherwise run
# silently). Installed (train/_launch/ in site-packages, `python -m train.launch --path`): the
# package imports as installed.
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -f "$_root/train/__init__.py" ]]; then
  export PYTHONPATH="$_root${PYTHONPATH:+:$PYTHONPATH}"
fi

# pkg ARGS...: python for this package's own modules. `python -m` and `-c` put the working folder
# first on sys.path, where a train.py (or train/) of yours would run instead of the package, or
# break `-m train.cluster`; PYTHONSAFEPATH leaves it out (Python 3.11+: older ones ignore the
# variable, and the working folder still comes first there). Given per command, never
# exported: your SCRIPT keeps its own folder first on sys.path (its `import mynet`), and your
# processes do not inherit it.
pkg=(env PYTHONSAFEPATH=1 python)
# yours CMD...: CMD (msrun, mpirun: what `pkg -m train.cluster exec-supervised` becomes) with your
# own PYTHONSAFEPATH, or none, as this script got it: their workers may run your SCRIPT.
if [[ -n "${PYTHONSAFEPATH+x}" ]]; then
  yours=(env "PYTHONSAFEPATH=$PYTHONSAFEPATH")
else
  yours=(env -u PYTHONSAFEPATH)
fi

# SCRIPT: a Python file of yours that calls train.main (docs/network.md), run on
# every rank instead of the trainer, with the same arguments, signals, exit codes and logs. Made
# absolute here: a rank may resolve it from another folder, and a path is never read as an option.
trainer=("${pkg[@]}" -m train)
if [[ -n "${SCRIPT:-}" ]]; then
  if [[ ! -f "$SCRIPT" || ! -r "$SCRIPT" ]]; then
    echo "error: SCRIPT must be a readable Python file (your job.py), got '$SCRIPT'" >&2
    exit 2
  fi
  SCRIPT=$(cd -- "$(dirname -- "$SCRIPT")" && pwd)/$(basename -- "$SCRIPT")
  export SCRIPT
  trainer=(python "$SCRIPT")
fi

# need_choice NAME CHOICE...: $NAME must be one of the choices.
need_choice() {
  local name=$1 value=${!1-} c
  shift
  for c in "$@"; do [[ "$value" == "$c" ]] && return 0; done
  echo "error: $name must be one of $*, got '$value'" >&2
  exit 2
}

# wait_for PID: wait until PID has ended, through trapped signals (a trap ends `wait` early);
# its exit status into $rc.
wait_for() {
  local again
  while :; do
    rc=0; wait "$1" || rc=$?
    if (( rc > 128 )) && kill -0 "$1" 2>/dev/null; then continue; fi
    break
  done
  if (( rc > 128 )); then  # the signal and the end at once: its own status, if unreaped
    again=0; wait "$1" 2>/dev/null || again=$?
    (( again == 127 )) || rc=$again
  fi
}

# The trainer's own pre-flight check (config, data, run folder, checkpoint) as every rank will
# see it: once, before anything starts. The plan it prints goes into $plan; returns the
# trainer's code. It runs in the background, its PID in $pre while it runs, so that a script's
# trap can pass a stop signal on at once (bash runs a trap only when a foreground command has
# ended, and a dry run may convert a large table first): the dry run then stops with 75.
pre='' plan=''
preflight() {
  local out
  if ! out=$(mktemp 2>/dev/null); then
    echo "error: cannot create a temporary file in ${TMPDIR:-/tmp}; set TMPDIR to a folder" \
      "this job can write" >&2
    return 2
  fi
  "${trainer[@]}" "$@" --dry_run > "$out" &
  pre=$!
  if [[ -n "${stop:-}" ]]; then kill -"$stop" "$pre" 2>/dev/null || true; fi  # one already here
  wait_for "$pre"
  pre=''
  plan=$(cat "$out"); rm -f "$out"
  if [[ -n "${stop:-}" ]] && (( rc > 128 )); then  # ended by it before its handlers existed
    stopped_before_start
    rc=75
  fi
  return "$rc"
}

# stopped_before_start: the line for a stop signal that came before anything ran (exit 75).
stopped_before_start() {
  echo "stopped: SIG$stop before the job started; nothing ran" >&2
}

# mark_job FILE [MORE...]: FILE, in LOG_DIR, marks this job's start; fresh_logs then lists the
# worker logs written since (a shared LOG_DIR holds earlier jobs' and other nodes' logs too).
# The marker, and MORE (the script's other files in LOG_DIR), go when the script ends:
# afterwards LOG_DIR holds the logs only.
mark_job() {
  marker=$1
  mkdir -p "$LOG_DIR"
  touch "$marker"
  local files
  printf -v files '%q ' "$@"
  trap "rm -f -- $files" EXIT
}

# fresh_logs: this job's worker logs, into the array $logs. A scheduler's SIGTERM reaches
# every process of the job (Slurm signals the whole step), a find of ours among them: one
# killed mid-read is run again, never taken for "no logs".
fresh_logs() {
  local out rc newer=(-newer "$marker")
  [[ -e "$marker" ]] || newer=()  # removed under us (a cleaned LOG_DIR): every worker log
  while :; do
    rc=0
    out=$(find "$LOG_DIR" -maxdepth 1 -name 'worker_*.log' "${newer[@]}" 2>/dev/null) || rc=$?
    (( rc > 128 )) || break
  done
  logs=()
  if [[ -n "$out" ]]; then mapfile -t logs <<< "$out"; fi
}

# job_lines: this job's workers' `error:` and `stopped:` lines, into $found (killed greps are
# run again, as above).
job_lines() {
  local rc
  found=''
  while :; do
    fresh_logs
    (( ${#logs[@]} )) || return 0
    rc=0
    found=$(grep -hs -e "^error: " -e "^stopped: " "${logs[@]}") || rc=$?
    (( rc > 128 )) || return 0  # 1: no such line (yet)
  done
}

# job_started: true once a worker log of this job holds the run's header (rank 0's "msrun: rank
# 0 of N on CPU; ..."): its stop handlers were in place, so a stop would have said `stopped:`.
job_started() {
  fresh_logs
  (( ${#logs[@]} )) && grep -qs -E "^[a-z]+: rank [0-9]+ of [0-9]+ on " "${logs[@]}"
}

# need_dir NAME: $NAME must be a folder this job can write, or one it can create there (checked
# without creating it: a refused job writes nothing).
need_dir() {
  local name=$1 value=${!1-} p
  if [[ "$value" == -* ]]; then  # a path, never an option: mkdir, find and msrun would
    value="./$value"  # read `-logs` as a flag
    printf -v "$name" '%s' "$value"
  fi
  p=$value
  while [[ "$p" == */ && "$p" != / ]]; do p=${p%/}; done  # `afile/` names the file afile
  while [[ -n "$p" && ! -e "$p" && ! -L "$p" ]]; do p=$(dirname -- "$p"); done
  if [[ -z "$value" || ! -d "$p" || ! -w "$p" ]]; then
    echo "error: $name must be a folder this job can create and write, got '$value'" >&2
    exit 2
  fi
}
