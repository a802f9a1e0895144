"""The `integration` marker kept honest: while a test without it runs, every way Python has of
starting a program or a worker process fails the test at once (conftest.py applies this).

So `python -m pytest -m "not integration"` stays the quick, in-process subset: a test that
starts a process (tests/helpers.py's train_cli/run/start, a launcher, pip, multiprocessing) and
forgets the marker fails here, instead of slowing the quick subset down unnoticed.
"""

from __future__ import annotations

import _posixsubprocess
import contextlib
import os
import subprocess
from collections.abc import Iterator

import pytest

MESSAGE = "unmarked test started a process: mark it integration"


def _refuse(what: object) -> None:
    """Fail the running test, naming what it tried to start."""
    # pytest.fail raises a BaseException: code under test that catches OSError or Exception
    # around its subprocess call cannot swallow the guard and pass by accident.
    pytest.fail(f"{MESSAGE} ({what})", pytrace=True)


def _blocked(name: str):
    """A stand-in for a process-starting function that fails the test."""
    def refuse(*args, **kw):
        _refuse(f"{name}{tuple(args)[:2]!r}")
    return refuse


def _popen_child(self, args, *rest, **kw) -> None:
    """Popen._execute_child refusing, naming the command line."""
    _refuse(f"subprocess.Popen({args!r})")


@contextlib.contextmanager
def forbidden() -> Iterator[None]:
    """Within this block, starting a process fails the running test."""
    with pytest.MonkeyPatch.context() as mp:
        # subprocess.run/call/check_output/Popen, os.popen and asyncio's subprocesses
        mp.setattr(subprocess.Popen, "_execute_child", _popen_child)
        # multiprocessing's spawn and forkserver start methods exec through fork_exec
        mp.setattr(_posixsubprocess, "fork_exec", _blocked("_posixsubprocess.fork_exec"))
        # the fork start method, os.spawn*, pty.fork, and the direct calls
        for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
            if hasattr(os, name):
                mp.setattr(os, name, _blocked(f"os.{name}"))
        yield
