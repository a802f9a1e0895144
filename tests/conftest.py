"""Shared helpers: run the real command lines in a subprocess, pick free ports, find leftovers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
LAUNCH = REPO / "launch"
# Small, fast jobs: tests assert behaviour, they do not benchmark.
TINY = ["--epochs", "1", "--steps_per_epoch", "20", "--log_every", "10", "--eval_size", "256"]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without launcher leftovers (a test must not inherit a cluster)."""
    drop = ("MS_", "RANK_", "OMPI_", "PMIX_", "PMI_", "SLURM_", "MASTER_", "DEVICE_ID", "LOG_DIR")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    """Run a command line, capture its output, fail the test if it hangs."""
    return subprocess.run(cmd, cwd=cwd, env=clean_env(**env), capture_output=True, text=True,
                          timeout=timeout)


def train_cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """`python -m train ARGS` in a fresh process."""
    return run([sys.executable, "-m", "train", *args], cwd, **env)


def final_params(out: Path) -> tuple[list[float], dict]:
    """A finished run's learned [w..., b] and its whole summary."""
    s = json.loads((out / "summary.json").read_text())
    return [*s["w"], s["b"]], s


def leftovers(marker: str) -> list[str]:
    """Processes whose command line or environment mentions `marker` (a port or a path)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.pid == os.getpid():
                continue
            text = " ".join(p.info["cmdline"] or [])
            env = p.environ() if marker.isdigit() else {}
            if marker in text or env.get("MS_SCHED_PORT") == marker:
                found.append(f"{p.pid}: {text[:120]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.fixture
def port() -> int:
    from train.cluster import free_port

    return free_port()
