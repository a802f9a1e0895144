"""Where a run's output goes, decided once: rank 0 owns the console, metrics, summary and
config; every rank keeps its own log file under `<out>/logs/`.

The rest of the code calls these methods on every rank and never asks which rank it is.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from train.cluster import Cluster
from train.config import Config, ConfigError, save_config


def run_record(cfg: Config, cluster: Cluster) -> dict[str, Any]:
    """Resolved config, seed, ranks and hosts, launch method, device and library versions."""
    import platform

    import mindspore
    import numpy

    try:
        import mpi4py

        mpi4py_version: str | None = mpi4py.__version__
    except ImportError:
        mpi4py_version = None
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "config": cfg.to_dict(),
        "seed": cfg.seed,
        "launch": cluster.launch,
        "device": cluster.device,
        "world_size": cluster.world_size,
        "global_batch_size": cfg.global_batch_size(cluster.world_size),
        "rank_hosts": dict(enumerate(cluster.hosts)),
        "hosts": sorted(set(cluster.hosts)),
        "versions": {"python": platform.python_version(), "mindspore": mindspore.__version__,
                     "numpy": numpy.__version__, "mpi4py": mpi4py_version},
    }


def check_out_dir(path: str) -> None:
    """Refuse a folder that already holds a run's files (never overwrite silently)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"--out {path} exists and is not a folder")
    if p.is_dir() and any(p.iterdir()):
        raise ConfigError(f"--out {path} is not empty (an earlier run?); choose a new folder "
                          "or remove it")


def _step_of(line: str) -> float:
    """The step of a metrics line; a torn last line (killed mid-write) counts as never logged."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


def default_out_dir(stamp: int) -> str:
    """runs/<YYYYmmdd-HHMMSS>-<xxxx> from `unix_time << 16 | pid`, a value every rank shares."""
    when = time.strftime("%Y%m%d-%H%M%S", time.localtime(stamp >> 16))
    return str(Path("runs") / f"{when}-{stamp & 0xFFFF:04x}")


class RunOutput:
    """The run folder plus the console; silent except for the rank log where `main` is False."""

    def __init__(self, out_dir: Path, rank: int, main: bool, quiet: bool = False) -> None:
        self.dir = out_dir
        self.main = main
        self.quiet = quiet
        (out_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.log = logging.getLogger(f"train.rank{rank}")
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        fh = logging.FileHandler(out_dir / "logs" / f"rank_{rank}.log")
        fh.setFormatter(logging.Formatter(f"%(asctime)s rank{rank} %(levelname)s %(message)s"))
        self.log.addHandler(fh)
        self._bar: tqdm | None = None

    def save_config(self, cfg: Config) -> None:
        """config.yaml: the resolved config, readable back with --config."""
        if self.main:
            save_config(cfg, self.dir / "config.yaml")

    def save_record(self, record: dict[str, Any]) -> None:
        """run.json: what is needed to reproduce the run (see `run_record`)."""
        self.log.info("run %s", json.dumps(record))
        if self.main:
            (self.dir / "run.json").write_text(json.dumps(record, indent=2) + "\n")

    def info(self, msg: str) -> None:
        """A line for this rank's log and, on rank 0, the console."""
        self.log.info(msg)
        if self.main:
            (self._bar.write if self._bar is not None else print)(msg)

    def error(self, msg: str) -> None:
        """A failure: every rank's log and stderr (a failed worker must say who it is)."""
        self.log.error(msg)
        print(f"error: {msg}", file=sys.stderr, flush=True)

    def warn(self, msg: str) -> None:
        """Something the user should see that does not stop the run."""
        self.log.warning(msg)
        if self.main:
            print(f"warning: {msg}", file=sys.stderr, flush=True)

    def truncate_metrics(self, step: int) -> None:
        """On resume: drop records past the checkpoint's step (the killed process may have
        logged steps it never checkpointed), so the resumed run appends without duplicates."""
        path = self.dir / "metrics.jsonl"
        if not self.main or not path.exists():
            return
        keep = [ln for ln in path.read_text().splitlines() if _step_of(ln) <= step]
        tmp = path.with_name(".metrics.jsonl.tmp")
        tmp.write_text("".join(ln + "\n" for ln in keep))
        tmp.replace(path)

    def metrics(self, record: dict[str, Any]) -> None:
        """One line of metrics.jsonl (rank 0); also this rank's log."""
        self.log.info(json.dumps(record))
        if self.main:
            with open(self.dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def progress(self, total: int, initial: int = 0) -> None:
        """Open the progress bar: rank 0, a terminal, and not --quiet."""
        show = self.main and not self.quiet and sys.stderr.isatty()
        self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                         disable=not show)

    def advance(self, step: int, **postfix: Any) -> None:
        """Move the progress bar to `step`, with the loss beside it (tqdm adds the rate)."""
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(step - self._bar.n)

    def close_progress(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def summary(self, summary: dict[str, Any]) -> None:
        """summary.json (rank 0)."""
        self.log.info("summary %s", json.dumps(summary))
        if self.main:
            (self.dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
