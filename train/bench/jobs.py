"""The real trainer through the real launch scripts: job throughput and launch latency, and
the trainer's own memory on a large `.npy` file."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from train.launch import TRAINER
from train.rundir import METRICS, read_summary


def run_job(kind: str, batch: int, steps: int, root: Path) -> dict[str, Any]:
    """One training job (`single`, `msrun` or `mpirun`); returns its summary + launch latency."""
    from train.cluster.addresses import free_port
    from train.launch import scripts_dir

    out = root / f"{kind}-{batch}-{time.monotonic_ns()}"
    args = ["--batch_size", str(batch), "--epochs", "1", "--steps_per_epoch", str(steps),
            "--log_every", str(steps), "--ckpt_every", "0", "--lr_schedule", "constant",
            "--eval_size", "256", "--quiet", "--out", str(out)]
    env = dict(os.environ, NPROC="2", MASTER_PORT=str(free_port()), LOG_DIR=str(out) + "-logs")
    cmd = {"single": TRAINER,
           "msrun": ["bash", str(scripts_dir() / "run_msrun.sh")],
           "mpirun": ["bash", str(scripts_dir() / "run_mpirun.sh")]}[kind]
    t0 = time.time()
    proc = subprocess.Popen([*cmd, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the launcher and everything it started
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} job failed ({proc.returncode}): {err.strip()[-500:]}")
    s = read_summary(out)
    s["launch_s"] = s["first_step_at"] - t0
    s["params"] = [*s["w"], s["b"]]
    return s


def big_npy(path: Path, gib: float) -> Path:
    """A float32 .npy of `gib` GiB, rows (x, 2x + 3) with x cycling 0..999, written in
    slices (the writer's memory stays small)."""
    rows = int(gib * (1 << 30)) // 8
    big = np.lib.format.open_memmap(path, "w+", np.float32, (rows, 2))
    pattern = np.arange(1 << 22, dtype=np.float32) % 1000
    for i in range(0, rows, 1 << 22):
        k = min(1 << 22, rows - i)
        big[i:i + k, 0], big[i:i + k, 1] = pattern[:k], 2 * pattern[:k] + 3
    big.flush()
    del big
    return path


def run_memory(gib: int, root: Path) -> dict[str, Any]:
    """The trainer's own memory (RssAnon, MB) on a `gib` GiB float32 .npy against a synthetic
    run, each read a few steps after training started (mapped file pages are page cache:
    RssFile, not the process's)."""
    big_npy(root / "big.npy", gib)
    env = dict(os.environ, TRAIN_FAULT="step_pause=0.05", TRAIN_CACHE_DIR=str(root / "cache"))
    found: dict[str, Any] = {"file_gib": gib}
    for name, args in (("synthetic", ["--steps_per_epoch", "100000"]),
                       ("npy", ["--data", str(root / "big.npy")])):
        out = root / name
        proc = subprocess.Popen([*TRAINER, *args, "--epochs", "1",
                                 "--log_every", "5", "--quiet", "--out", str(out)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not (out / METRICS).exists() and proc.poll() is None:
            time.sleep(0.5)
        time.sleep(3)  # a few windows in
        status = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
        proc.terminate()
        proc.wait()
        for key in ("RssAnon", "RssFile"):
            found[f"{name}_{key}_mb"] = next(int(ln.split()[1]) for ln in status
                                             if ln.startswith(key + ":")) / 1024
    return found



def defaults_table(rows: int, features: int, seed: int, path: Path) -> Path:
    """A sensor-like table of correlated features at different scales, y = x·w + 3 + noise,
    5% of the targets corrupted by 10-100 standard deviations: what automatic values meet."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(features, features)) * 0.5 + np.eye(features)
    x = rng.normal(size=(rows, features)) @ mix * rng.uniform(1, 100, features) \
        + rng.uniform(-50, 50, features)
    y = x @ rng.normal(size=features) + 3 + rng.normal(0, 5, rows)
    hit = rng.random(rows) < 0.05
    y[hit] += rng.choice([-1, 1], hit.sum()) * rng.uniform(10, 100, hit.sum()) * y.std()
    np.save(path, np.concatenate([x, y[:, None]], axis=1).astype(np.float32))
    return path


def run_defaults(root: Path) -> list[dict[str, Any]]:
    """`python -m train --data FILE` with every automatic value, on tables from a hundred rows
    to a million: wall time (the whole command), steps, and whether it converged."""
    found = []
    env = dict(os.environ, TRAIN_CACHE_DIR=str(root / "cache"))
    for rows, features in ((100, 3), (20_000, 9), (200_000, 5), (1_000_000, 5)):
        data = defaults_table(rows, features, rows, root / f"t{rows}.npy")
        out = root / f"defaults-{rows}"
        t0 = time.perf_counter()
        subprocess.run([*TRAINER, "--data", str(data), "--quiet",
                        "--out", str(out)], env=env, check=True, capture_output=True)
        s = read_summary(out)
        found.append({"rows": rows, "features": features, "wall_s": time.perf_counter() - t0,
                      "steps": s["steps"], "epochs": s["epochs"],
                      "global_batch": s["global_batch_size"], "converged": s["converged"],
                      "distance": s["convergence"].get("distance")})
    return found
