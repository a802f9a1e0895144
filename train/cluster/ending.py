"""How an MPI-launched rank (mpirun, srun) ends: in one fixed order, never through the
interpreter's teardown, where the exit code is known.

A finished rank that left its exit to Python died with SIGSEGV after its last line now and
then (Slurm: ExitCode 139, a correct run counted as failed). Core dumps showed two ways:
MindSpore's C++ exit hook (`FinalizeCluster` -> `TCPClient::Finalize`) joining its TCP event
thread while that thread crashed, and mpi4py's `MPI_Finalize`, a `Py_AtExit` hook that runs
after the interpreter is gone, crashing in Open MPI's component close - an order no code of
ours controls, racing threads no code of ours can join.

So `python -m train` and msrun's/the launchers' trainer end through `finish(code)`: output
flushed and log files closed; MPI finalized explicitly while the interpreter is whole (Open
MPI's finalize is a fence: after it no rank uses MindSpore's collectives again); rank 0 kills
its scheduler child (it would wait for the workers to unregister, which they no longer do);
then `os._exit(code)`. No MindSpore teardown runs at all: everything the run keeps
(checkpoints, summary, logs) is written and closed by then, and the operating system releases
the rest. docs/FINDINGS.md has what was measured.

A script of yours (`train.main`/`train.fit`) owns its exit: its code (`sys.exit(3)`), its exit
hooks and its open files are Python's to finish, so it ends through Python's own exit; the hook
`install` registers only finalizes MPI first, while the interpreter is whole (the second crash
above). msrun's workers and one-process runs keep Python's own exit (msrun's scheduler needs the
workers to unregister).
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any, NoReturn

_state: dict[str, Any] = {"comm": None, "scheduler": None}
_cleanups: list[tuple[Callable[..., Any], tuple]] = []


def at_exit(fn: Callable[..., Any], *args: Any) -> None:
    """`atexit.register(fn, *args)` that the ordered end runs too (a temporary folder's
    removal): it skips every other exit hook."""
    atexit.register(fn, *args)
    _cleanups.append((fn, args))


def scheduler(proc: subprocess.Popen) -> None:
    """Rank 0: the MindSpore scheduler child, to stop at the end."""
    _state["scheduler"] = proc


def install(comm: Any) -> None:
    """After `init()` on an MPI-launched rank: MPI is finalized by an exit hook that runs before
    MindSpore's and before mpi4py's, while the interpreter is whole."""
    _state["comm"] = comm
    atexit.register(_finalize_mpi)


def _finalize_mpi() -> bool:
    """MPI.Finalize if it is not done yet; False if it failed."""
    try:
        from mpi4py import MPI

        if not MPI.Is_finalized():
            MPI.Finalize()
        return True
    except Exception:  # noqa: BLE001 - an MPI error here: end all the same
        return False


def finish(code: int) -> NoReturn:
    """End the process with `code`: the ordered end on an MPI-launched rank (see the module's
    docstring), `sys.exit(code)` anywhere else."""
    if _state["comm"] is None:
        sys.exit(code)
    for fn, args in _cleanups:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001, S110 - a cleanup must not change the exit code
            pass
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    logging.shutdown()  # flushes and closes the run's log files
    if not _finalize_mpi():  # (also a barrier, a PMIx fence: every rank is done after it)
        code = code or 1
    proc = _state["scheduler"]
    if proc is not None and proc.poll() is None:
        proc.kill()  # no worker uses it any more, and none will unregister from it
        proc.wait()
    os._exit(code)
