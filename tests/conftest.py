"""Fixtures every test module gets: the mark on the processes a test starts (helpers.py's
`leftovers()` looks for it) and a free port; and the guard that a test starting a process is
marked `integration` (noprocess.py)."""

from __future__ import annotations

import subprocess
import sys
import uuid

import helpers
import noprocess
import pytest
from helpers import REPO, table, write_csv


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    """Run a test not marked `integration` with process starts refused (its setup, fixtures of
    any scope it sets up, call and teardown), so the marker cannot rot."""
    # A hook, not an autouse fixture: a session fixture the test sets up first (the wheel of
    # `installed`) runs before any function fixture, and must be guarded too.
    if item.get_closest_marker("integration"):
        return (yield)
    with noprocess.forbidden():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> object:
    """Import the test modules with process starts refused: a module that starts one at import
    would slow every run, the quick subset's too (its processes belong in marked tests)."""
    with noprocess.forbidden(noprocess.AT_IMPORT):
        return (yield)


@pytest.fixture(autouse=True)
def _process_mark(request: pytest.FixtureRequest) -> None:
    """A marker for the processes this test starts."""
    helpers.current["mark"] = f"{request.node.name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def port() -> int:
    """A port that is free right now."""
    from train.cluster.addresses import free_port

    return free_port()


@pytest.fixture
def sensors(tmp_path):
    """A 1,000-row CSV (temp, pressure, power; 10% outliers) and its rows."""
    rows = table()
    return write_csv(tmp_path / "sensors.csv", ["temp", "pressure", "power"],
                     [[f"{v:.6f}" for v in r] for r in rows]), rows


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    """The project's wheel, installed into a folder of its own (its dependencies are this
    environment's): that folder, for PYTHONPATH."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(root / "dist"), str(REPO)], check=True, capture_output=True)
    (wheel,) = (root / "dist").glob("*.whl")
    target = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    return target
