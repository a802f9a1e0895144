"""`python -m train.launch {local,msrun,mpirun} [trainer options]`: run an installed launch
script (its knobs are environment variables, as in the repository: docs/launching.md);
`python -m train.launch --path`: the folder that holds the installed scripts and the sbatch
files (`sbatch "$(python -m train.launch --path)/slurm.sbatch" ...`).

The scripts are the repository's `launch/` folder, installed as the package `train._launch`
(setup.cfg), so that a cluster image built with `pip install` has them too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SCRIPTS = {"local": "run_local.sh", "msrun": "run_msrun.sh", "mpirun": "run_mpirun.sh"}


def scripts_dir() -> Path:
    """Where the launch scripts are: the installed package `train._launch` (an editable
    install maps it to the checkout's launch/)."""
    from importlib.resources import files

    return Path(str(files("train._launch")))


def pip_hint(extra: str) -> str:
    """How to install an extra (`plot`, `mpi`): the released package's form, and where this
    code runs from a source checkout (an editable install, tests), that checkout's form too."""
    hint = f"pip install 'ms-dp-regression[{extra}]'"
    root = Path(__file__).resolve().parent.parent
    try:
        checkout = "name = ms-dp-regression" in (root / "setup.cfg").read_text(errors="replace")
    except OSError:
        checkout = False
    return hint + (f" (from this source checkout: pip install -e '{root}[{extra}]')"
                   if checkout else "")


def main(argv: list[str] | None = None) -> int:
    """Print the scripts' folder, or become the chosen script (its exit code is the run's)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--path"]:
        print(scripts_dir())
        return 0
    if not argv or argv[0] not in SCRIPTS:
        print(f"usage: python -m train.launch {{{','.join(SCRIPTS)}}} [trainer options] | "
              "--path", file=sys.stderr)
        return 2
    script = scripts_dir() / SCRIPTS[argv[0]]
    os.execvp("bash", ["bash", str(script), *argv[1:]])
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
