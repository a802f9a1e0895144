"""How an MPI-launched rank (mpirun, srun) ends: in one fixed order, never through the
interpreter's teardown.

A finished rank that left its exit to Python died with SIGSEGV after its last line now and
then (Slurm: ExitCode 139, a correct run counted as failed). Core dumps showed two ways:
MindSpore's C++ exit hook (`FinalizeCluster` -> `TCPClient::Finalize`) joining its TCP event
thread while that thread crashed, and mpi4py's `MPI_Finalize`, a `Py_AtExit` hook that runs
after the interpreter is gone, crashing in Open MPI's component close - an order no code of
ours controls, racing threads no code of ours can join.

So once `init()` has succeeded, the rank ends here instead (an `atexit` hook moved to run
first): its output is flushed and its log files closed; MPI is finalized explicitly while the
interpreter is whole (Open MPI's finalize is a fence: after it no rank uses MindSpore's
collectives again); rank 0 then kills its scheduler child (it would wait for the workers to
unregister, which they no longer do); then `os._exit` with the run's exit code. No MindSpore
teardown runs at all: everything the run keeps (checkpoints, summary, logs) is written and
closed by then, and the operating system releases the rest. docs/FINDINGS.md has what was
measured.

The exit code is the last run's (`record`): `python -m train`, `train.main` and `train.fit`
return it; a script of yours that then raises ends with 1. msrun's workers and one-process
runs keep Python's own exit (msrun's scheduler needs the workers to unregister).
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

_state: dict[str, Any] = {"comm": None, "scheduler": None, "code": 0}
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
    """After `init()` on an MPI-launched rank: end through `end()` at exit."""
    _state["comm"] = comm
    atexit.register(end)


def record(code: int) -> None:
    """The exit code of the run that just ended; the hook moves to the front again, ahead of
    any exit hook registered meanwhile (MindSpore's dataset iterators register theirs)."""
    _state["code"] = code
    if _state["comm"] is not None:
        atexit.unregister(end)
        atexit.register(end)


def end() -> None:
    """The ordered end (see the module's docstring); never returns."""
    code = 1 if getattr(sys, "last_value", None) is not None else _state["code"]
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
    try:  # Open MPI's finalize is also a barrier (a PMIx fence): every rank is done after it
        from mpi4py import MPI

        if not MPI.Is_finalized():
            MPI.Finalize()
    except Exception:  # noqa: BLE001 - an MPI error here: end all the same
        code = code or 1
    proc = _state["scheduler"]
    if proc is not None and proc.poll() is None:
        proc.kill()  # no worker uses it any more, and none will unregister from it
        proc.wait()
    os._exit(code)
