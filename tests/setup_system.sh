#!/usr/bin/env bash
# What the launch tests need from the system, installed from Debian's packages (run as root;
# .ci/run calls it before the tests): a throwaway Slurm (slurm-wlm, munge, and libpmix-dev,
# whose libpmix.so Debian's srun --mpi=pmix plugin opens), iproute2 for the simulated hosts,
# util-linux for setpriv/unshare. Safe to run again; nothing is started or configured here
# (the tests start their own daemons with private configs).
set -euo pipefail
packages=(slurm-wlm munge libpmix-dev iproute2 util-linux procps)
missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
if (( ${#missing[@]} == 0 )); then
  echo "setup_system: ${packages[*]} already installed"
  exit 0
fi
if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "setup_system: need root and apt-get to install ${missing[*]}; the Slurm and" \
       "several-host tests will skip (and fail under CI=true)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Debian's packages may try to start the services; policy may forbid it, and the tests start
# their own daemons anyway.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup_system: installed ${missing[*]}"
