"""`msdp launch {local,msrun,mpirun} [trainer options]`: run an installed launch script (its
knobs are environment variables, as in the repository: docs/launching.md); `msdp launch
--path`: the folder that holds the installed scripts and the sbatch files
(`sbatch "$(msdp launch --path)/slurm.sbatch" ...`). `python -m train.launch ...` is the same
command.

The scripts are the repository's `launch/` folder, installed as the package `train._launch`
(setup.cfg), so that a cluster image built with `pip install` has them too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)  # the folder this package imports from


def package_python(code: str) -> list[str]:
    """`python -c CODE` importing this package, never a train.py (or train/) of the working
    folder, which `-c` and `-m` put first on the import path (`-P` would do it on Python 3.11+
    only); this package's folder first when it is not on the path (a checkout, not installed).
    (The launch scripts do the same with PYTHONSAFEPATH.)"""
    return [sys.executable, "-c", "import sys; sys.path[:] = [p for p in sys.path if p]; "
            f"{ROOT!r} in sys.path or sys.path.insert(0, {ROOT!r}); {code}"]


# `python -m train` as a child of a command (compare's, verify's and the bench's runs)
TRAINER = package_python("import runpy; runpy.run_module('train', run_name='__main__', "
                         "alter_sys=True)")
SCRIPTS = {"local": "run_local.sh", "msrun": "run_msrun.sh", "mpirun": "run_mpirun.sh"}


def scripts_dir() -> Path:
    """Where the launch scripts are: the installed package `train._launch` (an editable
    install maps it to the checkout's launch/)."""
    from importlib.resources import files

    return Path(str(files("train._launch")))


def pip_hint(extra: str) -> str:
    """How to install an extra (`plot`, `mpi`): the released package's form."""
    return f"pip install 'ms-dp-regression[{extra}]'"


USAGE = f"msdp launch {{{','.join(SCRIPTS)}}} [trainer options] | --path"


def main(argv: list[str] | None = None) -> int:
    """Print the scripts' folder, or become the chosen script (its exit code is the run's)."""
    from train.exits import handled

    return handled(_main, sys.argv[1:] if argv is None else argv)


def _main(argv: list[str]) -> int:
    """`main`'s body: a command line other than the two forms is one line, exit 2."""
    import argparse

    from train.exits import CommandParser, UsageError

    p = CommandParser(prog="msdp launch", usage=USAGE, description=__doc__.split("\n\n")[0]
                      .split(": ", 1)[1].split(";")[0])
    p.add_argument("--path", action="store_true", help="print the scripts' folder")
    p.add_argument("launcher", nargs="?", metavar="{" + ",".join(SCRIPTS) + "}",
                   help="the script to run")
    p.add_argument("options", nargs=argparse.REMAINDER, help="trainer options (msdp fit "
                   "--help) for every rank")
    args = p.parse_args(argv)
    wrong = ("--path takes nothing after it" if args.path and args.launcher is not None else
             "no launcher given" if not args.path and args.launcher is None else
             f"unknown launcher {args.launcher!r}" if not args.path
             and args.launcher not in SCRIPTS else "")
    if wrong:  # exactly one of the two forms
        raise UsageError(f"{wrong}; usage: {USAGE}")
    if args.path:
        print(scripts_dir())
        return 0
    script = scripts_dir() / SCRIPTS[args.launcher]
    os.execvp("bash", ["bash", str(script), *args.options])
    return 1  # not reached

if __name__ == "__main__":
    sys.exit(main())
