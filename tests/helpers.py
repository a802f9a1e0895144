"""What the tests share: run the real command lines in a subprocess, pick free ports, find this
test's leftover processes, make data files.

Every process a test starts carries `TRAIN_TEST_MARK=<test id>` in its environment (inherited by
msrun's workers, mpirun's ranks and Slurm's tasks), so that `leftovers()` finds exactly this
test's processes and never an unrelated job on the same machine. conftest.py sets the mark for
each test; test modules import what they need from here (never from conftest or from each other).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from train.config import Config
from train.plan import open_resolved

REPO = Path(__file__).resolve().parent.parent
LAUNCH = REPO / "launch"
DIABETES = REPO / "tests" / "data" / "diabetes.csv"
# Small, fast jobs: tests assert behaviour, they do not benchmark.
TINY = ["--epochs", "1", "--steps_per_epoch", "20", "--log_every", "10", "--eval_size", "256"]
MARK = "TRAIN_TEST_MARK"
_CACHE = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"ms-dp-test-cache-{os.getpid()}")
os.environ.setdefault("TRAIN_CACHE_DIR", _CACHE)  # in-process uses too
# A config's automatic values as a run resolves them (train/plan.py), for tests that build a
# fingerprint or a source without the plan.
RESOLVED = {"delta": 1.0, "standardize": False, "batch_size": 256, "epochs": 5, "lr": 0.01,
            "init": "random"}
RESOLVED_FILE = {**RESOLVED, "standardize": True, "init": "least_squares"}
current = {"mark": "outside-a-test"}  # set for each test by conftest.py


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without launcher leftovers (a test must not inherit a cluster), with
    this test's process marker."""
    drop = ("MS_", "RANK_", "OMPI_", "PMIX_", "PMI_", "SLURM_", "MASTER_", "DEVICE_ID", "LOG_DIR",
            "TRAIN_FAULT", "TRAIN_PENDING_STOP", "CLUSTER_TIMEOUT", "NODE_TIMEOUT", "NPROC",
            "NNODES", "NODE_RANK")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env[MARK] = current["mark"]
    env.setdefault("TRAIN_CACHE_DIR", _CACHE)  # converted data files: never the user's cache
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    """Run a command line, capture its output, fail the test if it hangs."""
    return subprocess.run(cmd, cwd=cwd, env=clean_env(**env), capture_output=True, text=True,
                          timeout=timeout)


def train_cli(args: list[str], cwd: Path, timeout: float = 240,
              **env: str) -> subprocess.CompletedProcess:
    """`python -m train ARGS` in a fresh process."""
    return run([sys.executable, "-m", "train", *args], cwd, timeout=timeout, **env)


# Launcher timeouts for tests: a lost rank is noticed in seconds, not minutes.
FAST_FAIL = {"NODE_TIMEOUT": "8", "CLUSTER_TIMEOUT": "60"}


def finished_run(cwd: Path, args: list[str], name: str = "run", **env: str) -> Path:
    """`python -m train ARGS --out NAME` in cwd, run to the end (the test fails otherwise);
    the run folder."""
    r = train_cli([*args, "--out", name], cwd, **env)
    assert r.returncode == 0, r.stderr
    return cwd / name


def start(args: list[str], cwd: Path, cmd: list[str] | None = None,
          **env: str) -> subprocess.Popen:
    """Start a command (default `python -m train`) in a session of its own, for tests that
    signal or kill it."""
    cmd = cmd or [sys.executable, "-m", "train"]
    return subprocess.Popen([*cmd, *args], cwd=cwd, env=clean_env(**env), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def final_params(out: Path) -> tuple[list[float], dict]:
    """A finished run's learned [w..., b] and its whole summary."""
    s = json.loads((out / "summary.json").read_text())
    return [*s["w"], s["b"]], s


def metrics(out: Path) -> list[tuple]:
    """(step, loss, grad_norm, eval_loss) of every metrics line."""
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [(m["step"], m.get("loss"), m.get("grad_norm"), m.get("eval_loss")) for m in rows]


def wait_for(cond, proc: subprocess.Popen | None = None, timeout: float = 180,
             what: str = "condition") -> None:
    """Poll until `cond()`; fail if `proc` ends first or the time runs out."""
    t0 = time.monotonic()
    while not cond():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process ended ({proc.returncode}) before {what}: "
                        f"{proc.stderr.read()[-2000:] if proc.stderr else ''}")
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def descendants(pid: int) -> list[tuple[psutil.Process, list[str]]]:
    """The live processes under `pid`, with their command lines (a launch script's short-lived
    children, `sleep` and the like, may end or be a zombie while they are read: skipped)."""
    found = []
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:  # it has ended itself
        return found
    for p in children:
        try:
            found.append((p, p.cmdline()))
        except (psutil.NoSuchProcess, psutil.AccessDenied):  # (ZombieProcess is one)
            continue
    return found


def leftovers(mark: str | None = None, settle: float = 15) -> list[str]:
    """This test's processes that are still alive, after giving them `settle` seconds to end
    (processes killed with their launcher take a moment to go)."""
    mark = mark or current["mark"]
    deadline = time.monotonic() + settle
    while True:
        found = []
        for p in psutil.process_iter(["pid", "cmdline", "status"]):
            try:
                if p.pid == os.getpid() or p.info["status"] == psutil.STATUS_ZOMBIE:
                    continue
                if p.environ().get(MARK) == mark:
                    found.append(f"{p.pid}: {' '.join(p.info['cmdline'] or [])[:120]}")
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def newest_ckpt(out: Path) -> int:
    """Step of the newest checkpoint manifest in a run folder, -1 if none."""
    steps = [int(p.stem.split("-")[1]) for p in (out / "ckpt").glob("ckpt-*.json")] \
        if (out / "ckpt").is_dir() else []
    return max(steps, default=-1)


def require(reason: str | None) -> None:
    """Skip with `reason` when something the test needs is missing, except under CI=true,
    where the project installs what it needs and a skip would hide a failure."""
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (under CI=true a skip is a failure)")
    pytest.skip(reason)


def table(n: int = 1000, features: int = 2, seed: int = 0, outliers: float = 0.1) -> np.ndarray:
    """A sensor-like table: y = x·w + b + noise, some rows with large errors."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 100, (n, features))
    y = x @ np.linspace(1.5, -2, features) + 10 + rng.normal(0, 3, n)
    hit = rng.random(n) < outliers
    y[hit] += rng.choice([-1, 1], hit.sum()) * rng.uniform(50, 150, hit.sum())
    return np.concatenate([x, y[:, None]], axis=1)


def write_csv(path: Path, header: list[str], rows) -> Path:
    """A CSV file with a header row; its path."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def put(path: Path, data: str | bytes) -> Path:
    """Write a file (text or bytes); its path."""
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def bad_csv(tmp_path: Path, body: str) -> Path:
    """`body` written to tmp_path/bad.csv; its path."""
    return put(tmp_path / "bad.csv", body)


def truncated_npy(t: Path) -> Path:
    """A .npy file (t/t.npy) cut short by 40 bytes; its path."""
    np.save(t / "t.npy", np.ones((100, 3), np.float32))
    (t / "t.npy").write_bytes((t / "t.npy").read_bytes()[:-40])
    return t / "t.npy"


def open_(path: Path | str, world: int = 1, **kw) -> tuple:
    """The source a run on this file would train on (through the plan's resolution)."""
    cfg, source = open_resolved(Config(data=str(path), **{"batch_size": 16, **kw}), world)
    return source, cfg


def huber(theta: np.ndarray, x: np.ndarray, y: np.ndarray, d: float) -> tuple[float, np.ndarray]:
    """Mean Huber loss (delta d) of the linear model [w..., b] on x, y (n×1), and its gradient."""
    e = x @ theta[:-1] + theta[-1] - y[:, 0]
    c = np.clip(e, -d, d)
    return np.mean(c * (e - c / 2)), np.concatenate([x.T @ c, [c.sum()]]) / len(e)


def handles_signals(pid: int) -> bool:
    """True once the trainer `pid` takes stop signals itself (train/stop.py blocks SIGTERM in
    its threads and waits for it): signalling it before would only kill it."""
    try:
        with open(f"/proc/{pid}/status") as f:
            blocked = next(int(ln.split()[1], 16) for ln in f if ln.startswith("SigBlk:"))
    except (OSError, StopIteration, ValueError):
        return False
    return bool(blocked & (1 << (15 - 1)))  # SIGTERM is signal 15


def shadowing_train_py(folder: Path) -> None:
    """A train.py of the user's in `folder`, a job's working folder, that fails loudly if it
    runs instead of the package (`python -m train` from there would run it)."""
    (folder / "train.py").write_text("raise SystemExit('a train.py of yours ran')\n")
