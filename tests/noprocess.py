"""The `integration` marker kept honest: while a test without it runs, every way Python has of
starting a program or a worker process fails the test at once (conftest.py applies this).

So `python -m pytest -m "not integration"` stays the quick, in-process subset: a test that
starts a process (tests/helpers.py's train_cli/run/start, a launcher, pip, multiprocessing) and
forgets the marker fails here, instead of slowing the quick subset down unnoticed. Nothing the
unmarked tests run needs an exception: MindSpore, matplotlib and psutil start no process from
Python in them (a run of the whole suite under this guard failed only tests that start
python, bash, mpirun, munged, ip, mount, unshare or setpriv themselves).
"""

from __future__ import annotations

import _posixsubprocess
import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator

import pytest

MESSAGE = "unmarked test started a process: mark it integration"
AT_IMPORT = "a test module started a process at import: start it in a test marked integration"
# The fork start method, os.spawn*, pty.fork, and the direct calls.
OS_STARTS = ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system")


def _refuser(message: str, name: str) -> Callable[..., None]:
    """A stand-in for a process-starting function that fails the running test."""
    def refuse(*args: object, **kw: object) -> None:
        what = f"subprocess.Popen({args[1]!r})" if name == "Popen" else f"{name}{args[:2]!r}"
        # pytest.fail raises a BaseException: code under test that catches OSError or
        # Exception around its subprocess call cannot swallow the guard and pass by accident.
        pytest.fail(f"{message} ({what})", pytrace=True)
    return refuse


@contextlib.contextmanager
def forbidden(message: str = MESSAGE) -> Iterator[None]:
    """Within this block, starting a process fails the running test with `message`."""
    with pytest.MonkeyPatch.context() as mp:
        # subprocess.run/call/check_output/Popen, os.popen and asyncio's subprocesses (args[1]
        # of _execute_child is the command line)
        mp.setattr(subprocess.Popen, "_execute_child", _refuser(message, "Popen"))
        # multiprocessing's spawn and forkserver start methods exec through fork_exec
        mp.setattr(_posixsubprocess, "fork_exec",
                   _refuser(message, "_posixsubprocess.fork_exec"))
        for name in OS_STARTS:
            if hasattr(os, name):
                mp.setattr(os, name, _refuser(message, f"os.{name}"))
        yield
