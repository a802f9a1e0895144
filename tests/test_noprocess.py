"""tests/noprocess.py and conftest.py: a test not marked `integration` that starts a process
fails at once, whichever way it starts it, and an exception handler in the code under test
cannot hide that; a marked test starts what it needs."""

import multiprocessing
import os
import subprocess

import pytest
from noprocess import MESSAGE, forbidden

# Every way the guard stops, each started from this (unmarked) test itself.
STARTS = {
    "subprocess.run": lambda: subprocess.run(["true"], check=True),
    "subprocess.Popen": lambda: subprocess.Popen(["true"]).wait(),
    "os.popen": lambda: os.popen("true").close(),
    "os.system": lambda: os.system("true"),
    "os.spawnlp": lambda: os.spawnlp(os.P_WAIT, "true", "true"),
    "os.posix_spawnp": lambda: os.waitpid(os.posix_spawnp("true", ["true"], os.environ), 0),
    "multiprocessing spawn": lambda: multiprocessing.get_context("spawn").Process(
        target=print).start(),
    "multiprocessing fork": lambda: multiprocessing.get_context("fork").Process(
        target=print).start(),
}


@pytest.mark.parametrize("start", STARTS.values(), ids=STARTS.keys())
def test_an_unmarked_test_cannot_start_a_process(start):
    with pytest.raises(pytest.fail.Exception, match=f"^{MESSAGE} "):
        try:
            start()
        except Exception:  # what code under test may do around its subprocess call
            pytest.fail("the guard was swallowed by an `except Exception`")


def test_the_guard_ends_with_its_block():
    """forbidden() nests (conftest's is active now) and restores what it replaced."""
    before = (subprocess.Popen._execute_child, os.fork, os.system)
    with forbidden():
        assert os.fork is not before[1] and os.system is not before[2]
    assert (subprocess.Popen._execute_child, os.fork, os.system) == before


@pytest.mark.integration
def test_a_marked_test_starts_processes():
    assert subprocess.run(["true"]).returncode == 0
    assert os.system("true") == 0
