"""Where a run's output goes, decided once: rank 0 owns the console, metrics, summary and
config; every rank keeps its own log file under `<out>/logs/`.

The rest of the code calls these methods on every rank and never asks which rank it is.

Every whole file is written atomically (temporary file, fsync, rename): a kill or a full disk
leaves the previous version. Appended files (`metrics.jsonl`, logs) may end in a torn line after
a kill; `--resume` drops it and readers skip it. JSON is strict: a non-finite number is written
as null, never as `NaN`/`Infinity`. A write that fails mid-run raises `OutputError`, which the
entry point reports in one line with exit code 74 (`train.exits.IO`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.fileio import json_text, write_atomic
from train import rundir
from train.config import config_text
from train.exits import one_line  # noqa: F401 - used here and re-exported


class OutputError(OSError):
    """A run file could not be written; the message is one line and names the file."""


def out_folder(path: Path) -> Path:
    """A command's output folder (compare's, verify's, the bench's), made with its parents; one
    line and exit 74 when it cannot be (a read-only or missing mount, a file in the way)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create the folder {path} ({e.strerror or e})") from None
    return path


def _say(text: str, stream: Any) -> None:
    """Print a line; a closed pipe (`python -m train | head -1`) silences the console instead
    of killing the run."""
    try:
        print(text, file=stream, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())  # also keeps Python's exit-time flush quiet
        os.close(devnull)
    except (OSError, ValueError):
        pass  # the console is gone; the log files still have everything


def warn(msg: str) -> None:
    """A warning on stderr, for use before the run's output exists."""
    _say(f"warning: {msg}", sys.stderr)


def run_record(cfg: Any, cluster: Any, faults: Any) -> dict[str, Any]:
    """Resolved config, seed, ranks and hosts, launch method, device, library versions and any
    injected faults (TRAIN_FAULT)."""
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
        "config": cfg.saved_dict(),
        "seed": cfg.seed,
        "launch": cluster.launch,
        "device": cluster.device,
        "world_size": cluster.world_size,
        "global_batch_size": cfg.global_batch_size(cluster.world_size),
        "rank_hosts": dict(enumerate(cluster.hosts)),
        "hosts": sorted(set(cluster.hosts)),
        "train_fault": faults.text or None,
        "versions": {"python": platform.python_version(), "mindspore": mindspore.__version__,
                     "numpy": numpy.__version__, "mpi4py": mpi4py_version},
    }


def _step_of(line: str) -> float:
    """The step of a metrics line; a torn last line (killed mid-write) counts as never logged."""
    try:
        step = json.loads(line)["step"]
        return step if isinstance(step, int) else float("inf")
    except (ValueError, KeyError, TypeError):
        return float("inf")


def _finish_record(line: str) -> bool:
    """A metrics line of the Newton finish (a pass, or the finished model's figures)."""
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and ("finish_pass" in record or "finished" in record)


def default_out_dir(stamp: int) -> str:
    """runs/<YYYYmmdd-HHMMSS>-<xxxx> from `unix_time << 16 | pid`, a value every rank shares."""
    when = time.strftime("%Y%m%d-%H%M%S", time.localtime(stamp >> 16))
    return str(Path("runs") / f"{when}-{stamp & 0xFFFF:04x}")


class _QuietFileHandler(logging.FileHandler):
    """A log file that, when it cannot be written, says so once and stops trying (instead of a
    traceback per record)."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        err = sys.exc_info()[1]
        warn(f"cannot write the log file {self.baseFilename} ({getattr(err, 'strerror', err)}); "
             "continuing without it")
        self.setLevel(logging.CRITICAL + 1)

    def _open(self) -> Any:
        """The log opened for appending without following a symbolic link (train/rundir.py)."""
        return os.fdopen(rundir.open_append(Path(self.baseFilename)), "a",
                         encoding=self.encoding, errors=self.errors)


class RunOutput:
    """The run folder plus the console; silent except for the rank log where `main` is False."""

    def __init__(self, out_dir: Path, rank: int, main: bool, quiet: bool = False) -> None:
        self.dir = out_dir
        self.main = main
        self.quiet = quiet
        try:
            rundir.subfolder(rundir.logs_dir(out_dir))
            handler = _QuietFileHandler(rundir.rank_log(out_dir, rank))
        except OSError as e:
            raise OutputError(f"cannot write {e.filename or f'the log folder in {out_dir}'} "
                              f"({e.strerror or e})") from None
        self.log = logging.getLogger(f"train.rank{rank}")
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        for h in list(self.log.handlers):
            self.log.removeHandler(h)
        handler.setFormatter(logging.Formatter(f"%(asctime)s rank{rank} %(levelname)s "
                                               "%(message)s"))
        self.log.addHandler(handler)
        self._bar: Any = None

    def _write(self, name: str, text: str) -> None:
        """A whole run file, atomically; OutputError names it on failure."""
        try:
            write_atomic(self.dir / name, text)
        except OSError as e:
            raise OutputError(f"cannot write {self.dir / name} ({e.strerror or e}); the files "
                              "written before are intact") from None

    def save_config(self, cfg: Any) -> None:
        """config.yaml: the resolved config, readable back with --config."""
        if self.main:
            self._write(rundir.CONFIG, config_text(cfg))

    def save_record(self, record: dict[str, Any]) -> None:
        """run.json: what is needed to reproduce the run (see `run_record`)."""
        self.log.info("run %s", json_text(record))
        if self.main:
            self._write(rundir.RECORD, json_text(record, indent=2) + "\n")

    def info(self, msg: str) -> None:
        """A line for this rank's log and, on rank 0, the console."""
        self.log.info(msg)
        if self.main:
            if self._bar is not None:
                self._bar.write(msg)
            else:
                _say(msg, sys.stdout)

    def error(self, msg: str) -> None:
        """A failure: every rank's log and stderr (a failed worker must say who it is)."""
        self.log.error(msg)
        _say(f"error: {one_line(msg)}", sys.stderr)

    def stopped(self, msg: str) -> None:
        """A stop at a safe point: every rank's log and stderr (`stopped: ...`, which the
        launch scripts read to exit 75)."""
        self.log.warning(msg)
        _say(f"stopped: {msg}", sys.stderr)

    def warn(self, msg: str) -> None:
        """Something the user should see that does not stop the run."""
        self.log.warning(msg)
        if self.main:
            warn(msg)

    def truncate_metrics(self, step: int, finished: bool = True) -> None:
        """On resume: drop records past the checkpoint's step (the killed process may have
        logged steps it never checkpointed), a torn last line, and (`finished` False) the
        records of a Newton finish the checkpoint does not hold, so that the resumed run
        appends without duplicates."""
        path = self.dir / rundir.METRICS
        if not self.main or not path.exists():
            return
        try:
            lines = path.read_bytes().decode("utf-8", "replace").splitlines()
        except OSError as e:
            raise OutputError(f"cannot read {path} ({e.strerror or e})") from None
        def kept(ln: str) -> bool:
            at = _step_of(ln)
            return at < step or at == step and (finished or not _finish_record(ln))

        self._write(rundir.METRICS, "".join(ln + "\n" for ln in lines if kept(ln)))

    def metrics(self, record: dict[str, Any]) -> None:
        """One line of metrics.jsonl (rank 0); also this rank's log."""
        line = json_text(record)
        self.log.info(line)
        if self.main:
            try:
                with os.fdopen(rundir.open_append(self.dir / rundir.METRICS), "a") as f:
                    f.write(line + "\n")
            except OSError as e:
                raise OutputError(f"cannot write {self.dir / rundir.METRICS} "
                                  f"({e.strerror or e}); the files written before are intact"
                                  ) from None

    def progress(self, total: int, initial: int = 0) -> None:
        """Open the progress bar: rank 0, a terminal, and not --quiet."""
        from tqdm import tqdm

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
        """Close the progress bar (before the final lines)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def summary(self, summary: dict[str, Any]) -> None:
        """summary.json (rank 0)."""
        self.log.info("summary %s", json_text(summary))
        if self.main:
            self._write(rundir.SUMMARY, json_text(summary, indent=2) + "\n")
