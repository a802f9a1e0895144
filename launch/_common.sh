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
}

# From a checkout: the checkout these scripts belong to comes first on the import path, whatever
# other `train` is installed (an editable install of another checkout would otherwise run
# silently). Installed (train/_launch/ in site-packages, `python -m train.launch --path`): the
# package imports as installed.
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -f "$_root/train/__init__.py" ]]; then
  export PYTHONPATH="$_root${PYTHONPATH:+:$PYTHONPATH}"
fi

# need_choice NAME CHOICE...: $NAME must be one of the choices.
need_choice() {
  local name=$1 value=${!1-} c
  shift
  for c in "$@"; do [[ "$value" == "$c" ]] && return 0; done
  echo "error: $name must be one of $*, got '$value'" >&2
  exit 2
}

# The trainer's own pre-flight check (config, data, run folder, checkpoint) as every rank will
# see it: once, before anything starts. Prints the plan; exits with the trainer's code.
preflight() {
  python -m train "$@" --dry_run
}

# need_dir NAME: $NAME must be a folder this job can write, or one it can create there (checked
# without creating it: a refused job writes nothing).
need_dir() {
  local name=$1 value=${!1-} p
  p=$value
  while [[ "$p" == */ && "$p" != / ]]; do p=${p%/}; done  # `afile/` names the file afile
  while [[ -n "$p" && ! -e "$p" && ! -L "$p" ]]; do p=$(dirname -- "$p"); done
  if [[ -z "$value" || ! -d "$p" || ! -w "$p" ]]; then
    echo "error: $name must be a folder this job can create and write, got '$value'" >&2
    exit 2
  fi
}
