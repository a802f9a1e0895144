"""A run folder: its names, its readers, and one owner at a time.

What a run folder holds is named here and nowhere else (CONFIG, RECORD, SUMMARY, METRICS, CKPT,
LOGS, RANK_LOG, LOCK): train/output.py writes through these names and every command reads
through `read_config` (with what an older release implied for options its config lacks),
`read_summary` (bounded, its shapes checked) and `read_metrics` (streamed).

The owner (rank 0 of a run) holds an exclusive `flock(2)` on `<out>/.lock` for as long as it
lives; a second process that asks for the same folder - a fresh run or a `--resume` - is refused
(exit 2) with the owner's pid and host, which the lock file records. The kernel drops the lock
when the owner dies, however it dies (SIGKILL included), so a dead run never keeps its folder.

On a shared file system: Linux's NFS client turns `flock` into an NFS byte-range lock, which the
server holds for the client. If the owner's node is lost, NFSv4 releases the lock when the
client's lease expires (90 s by default); NFSv3 relies on the lock manager (lockd/statd). Mounts
with `nolock` (and some FUSE file systems) keep locks local to one host: there, two hosts can
both take a folder, and this module cannot tell. A file system that refuses locks altogether
gets a warning and the run goes on unprotected.

Nothing is written through a symbolic link: a link planted in a run folder would carry the
run's writes to a file its owner never named. Whole files are written to a temporary name and
renamed over the old name (`pipeline.fileio.write_atomic`, `save_figure`: a link there is
replaced, not followed); files appended to are opened with O_NOFOLLOW (`open_append`),
sub-folders are used only if they are real folders (`subfolder`), and `claim` refuses a folder
whose lock, logs, checkpoints or metrics are links (exit 2), before anything is written.

Folder kinds: `absent`, `empty` (nothing, or only the lock file and logs), `run` (holds
config.yaml: a run was set up there, with or without checkpoints) and `other`. A fresh run
needs absent or empty; `--resume` needs a run, so that a typo never silently starts a new one.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

from pipeline.fileio import finite_numbers, write_atomic
from train.config import Config, ConfigError
from train.options import load_saved, parse_config, read_bounded

# The names of what a run folder holds: every module spells them through these
# (tests/test_rundir.py checks no other module of train/ writes them out).
LOCK = ".lock"
CONFIG = "config.yaml"  # the resolved config (`--config` reads it back)
RECORD = "run.json"  # what reproduces the run (output.run_record)
SUMMARY = "summary.json"  # the finished run's figures
METRICS = "metrics.jsonl"  # one record a line, appended as the run goes
CKPT = "ckpt"  # the checkpoints (train/checkpoint.py names the files inside)
LOGS = "logs"  # one log per rank, RANK_LOG
RANK_LOG = "rank_{rank}.log"
SUMMARY_MAX = 1 << 24  # bytes: a summary is kB (a few numbers per feature, a 200-point curve)
RECORD_MAX = 1 << 16  # bytes: a metrics record is a few hundred


def ckpt_dir(run_dir: Path) -> Path:
    """The run's checkpoint folder."""
    return run_dir / CKPT


def logs_dir(run_dir: Path) -> Path:
    """The run's folder of rank logs."""
    return run_dir / LOGS


def rank_log(run_dir: Path, rank: int) -> Path:
    """Rank `rank`'s log."""
    return logs_dir(run_dir) / RANK_LOG.format(rank=rank)


def kind(path: Path) -> str:
    """What `path` holds: absent, empty, run or other."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "absent"
    except OSError as e:  # a name too long, a loop of links, a folder we may not enter...
        if e.errno == errno.ENOTDIR:
            raise ConfigError(f"--out {path}: cannot write there (Not a directory)") from None
        raise ConfigError(f"--out {path}: cannot write there ({e.strerror or e})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"--out {path} exists and is not a folder")
    try:
        names = {p.name for p in path.iterdir()}
    except OSError as e:
        raise ConfigError(f"--out {path}: cannot read it ({e.strerror or e})") from None
    if CONFIG in names:
        return "run"
    # A process killed between taking the folder and writing config.yaml leaves these.
    return "empty" if names <= {LOCK, LOGS} else "other"


# What a run appends to or writes inside (whole files are replaced by rename: a link there goes).
_WRITTEN_INTO = (LOCK, LOGS, CKPT, METRICS)
NOT_FOLLOWED = "a symbolic link (a run never writes through one)"


def _link_error(path: Path, name: str) -> ConfigError:
    return ConfigError(f"--out {path}: {name} is {NOT_FOLLOWED}; remove it, or choose "
                       "another folder")


def refuse_links(path: Path) -> None:
    """ConfigError if anything a run writes into (its lock, logs/ and the rank logs in it,
    ckpt/, metrics.jsonl) is a symbolic link: writing would follow it elsewhere."""
    found = [path / n for n in _WRITTEN_INTO]
    if logs_dir(path).is_dir() and not logs_dir(path).is_symlink():
        found += sorted(logs_dir(path).glob(RANK_LOG.format(rank="*")))
    for p in found:
        if p.is_symlink():
            raise _link_error(path, str(p.relative_to(path)))


def open_append(path: Path) -> int:
    """A descriptor appending to the run file `path` (created if absent); OSError naming the
    problem if it is a symbolic link or not a regular file: never written through."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, NOT_FOLLOWED, str(path)) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return fd


def subfolder(path: Path) -> Path:
    """`path` as a folder of the run, created if absent; OSError if it is a symbolic link or
    not a folder (files written into it would land elsewhere)."""
    path.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        raise OSError(errno.ELOOP, NOT_FOLLOWED, str(path))
    if not path.is_dir():
        raise OSError(errno.ENOTDIR, "not a folder", str(path))
    return path


def save_figure(fig: object, path: Path) -> None:
    """A matplotlib figure as a PNG at `path`, through `write_atomic` (savefig would write
    through a link)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")  # type: ignore[attr-defined]
    write_atomic(path, buf.getvalue())


def _owner_text(fd: int) -> str:
    """`pid P on host H since T` from a lock file, or a generic phrase if unreadable."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {int(info['pid'])} on host {info['host']} (since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _check_kind(path: Path, resume: bool) -> None:
    k = kind(path)
    if resume and k != "run":
        raise ConfigError(f"--resume: {path} holds no run to continue (no {CONFIG}); check the "
                          "path, or start a new run without --resume")
    if not resume and k not in ("absent", "empty"):
        hint = "continue it with --resume, " if k == "run" else ""
        raise ConfigError(f"--out {path} is not empty (an earlier run?); {hint}choose a new "
                          "folder or remove it")


def _locked_error(path: Path, fd: int) -> ConfigError:
    return ConfigError(f"--out {path} is in use by {_owner_text(fd)}; wait for that run to end "
                       "or stop it (its lock is released when it exits)")


def _open_lock(path: Path, flags: int = 0) -> int:
    """The folder's lock file, opened without following a link or blocking (a FIFO would);
    ConfigError if it is not a regular file."""
    fd = os.open(path / LOCK, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | flags, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"--out {path}: its {LOCK} is not a regular file; remove it, or "
                          "choose another --out")
    return fd


def _probe_lock(path: Path) -> None:
    """Refuse if a live process holds the folder's lock (opens an existing lock file only)."""
    try:
        fd = _open_lock(path)
    except OSError:
        return  # no lock file yet (or not ours to open): claim() will tell
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _locked_error(path, fd) from None
    except OSError:
        pass
    finally:
        os.close(fd)  # closing drops the lock taken for the probe


def check(path: Path, resume: bool) -> None:
    """What `claim` would refuse, without creating or locking anything (for --dry_run)."""
    _probe_lock(path)
    _check_kind(path, resume)
    refuse_links(path)


class Owner:
    """This process's hold on a run folder; released by the kernel when the process exits."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    def release(self) -> None:
        """Give the folder up (tests; a process that exits needs no call)."""
        os.close(self.fd)


def claim(path: Path, resume: bool, warn: Callable[[str], None] = print) -> Owner:
    """Create (fresh run) and lock the run folder; ConfigError (exit 2) if it is not ours."""
    check(path, resume)  # before creating anything: a refused run leaves no trace
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = _open_lock(path, os.O_CREAT)
    except OSError as e:
        if e.errno == errno.ELOOP:  # a link put there since check()
            raise _link_error(path, LOCK) from None
        raise ConfigError(f"--out {path}: cannot write there ({e.strerror or e})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        err = _locked_error(path, fd)
        os.close(fd)
        raise err from None
    except OSError as e:  # ENOLCK, EOPNOTSUPP: a file system without locks
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        warn(f"--out {path}: the file system does not support locks ({e.strerror}); nothing "
             "stops a second run from using this folder")
    try:
        _check_kind(path, resume)  # again, now that nobody else can be setting it up
        refuse_links(path)
    except ConfigError:
        os.close(fd)
        raise
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    return Owner(path, fd)


# The readers every command uses: each file is data from outside, each problem one line.

class NotARun(ConfigError):
    """A folder without the files a run leaves (exit 2)."""


def require(run_dir: Path, *names: str) -> None:
    """NotARun unless `run_dir` holds each of `names` as a file."""
    if not all((run_dir / n).is_file() for n in names):
        raise NotARun(f"{run_dir} is not a run folder (no {' and '.join(names)})")


def read_config(run_dir: Path) -> Config:
    """The run's config.yaml as a validated Config, with what an older release implied for
    the options it lacks (options.load_saved); ConfigError (one line, naming the file) for
    a missing, unreadable, malformed or invalid one."""
    require(run_dir, CONFIG)
    path = run_dir / CONFIG
    base = load_saved(str(path))  # (its errors name the file)
    try:
        return parse_config([], base=base)[0]
    except ConfigError as e:  # a value edited to one the options refuse
        raise ConfigError(f"{path}: {e}") from None


def _number(v: Any, none: bool = False) -> bool:
    """A finite JSON number (not true/false), or (none=True) null."""
    return (none and v is None) or finite_numbers([v])


def _numbers(v: Any, n: int | None = None) -> bool:
    """A list of finite numbers, of length n if given."""
    return isinstance(v, list) and finite_numbers(v) and (n is None or len(v) == n)


def read_summary(run_dir: Path, cfg: Config | None = None) -> dict:
    """The run's summary.json, read no further than SUMMARY_MAX bytes, a JSON object; with
    `cfg`, its shapes checked too (`check_summary`). ConfigError (one line) otherwise."""
    path = run_dir / SUMMARY
    text = read_bounded(str(path), SUMMARY_MAX, "the run's summary",
                        "a run writes a few kB there")
    try:
        summary = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"{path}: not readable JSON ({str(e)[:60]})") from None
    if cfg is not None:
        return check_summary(summary, cfg, path)
    if not isinstance(summary, dict):
        raise ConfigError(f"{path}: not this run's summary (not a JSON object)")
    return summary


def check_summary(summary: Any, cfg: Config, path: Path) -> dict:
    """summary.json as train.plot reads it, its shapes and types checked: the features' names
    and `w`, `w_standardized` one number per feature, `curve` x and y of one length."""
    def bad(why: str) -> ConfigError:
        return ConfigError(f"{path}: not this run's summary ({why})")

    if not isinstance(summary, dict):
        raise bad("not a JSON object")
    names = summary.get("features")  # (absent in summaries of releases before names)
    if names is not None and not (isinstance(names, list) and names
                                  and all(isinstance(n, str) for n in names)):
        raise bad("'features' is not a list of names")
    n = len(names) if names is not None else cfg.features if cfg.synthetic else None
    if cfg.synthetic and n != cfg.features:
        raise bad(f"{n} features, its config {cfg.features}")
    for key in ("w", "w_standardized"):
        if summary.get(key) is not None and not _numbers(summary[key], n):
            raise bad(f"{key!r} is not {n} number(s), one per feature")
    if not _number(summary.get("b"), none=True):
        raise bad("'b' is not a number")
    curve = summary.get("curve")
    if curve is not None and not (isinstance(curve, dict) and _numbers(curve.get("x"))
                                  and _numbers(curve.get("y"), len(curve["x"])) and curve["x"]):
        raise bad("'curve' is not x and y, lists of numbers of one length")
    if not isinstance(summary.get("target", ""), str) or not isinstance(
            summary.get("global_batch_size", 0), int):
        raise bad("a malformed 'target' or 'global_batch_size'")
    return summary


def _lines(f: Any) -> Iterator[bytes]:
    """The lines of a binary file, none read further than RECORD_MAX bytes: a longer one is
    read past and yielded as b"" (not a record)."""
    while line := f.readline(RECORD_MAX):
        if len(line) == RECORD_MAX and not line.endswith(b"\n"):
            while (rest := f.readline(RECORD_MAX)) and not rest.endswith(b"\n"):
                pass
            line = b""
        yield line


def read_metrics(run_dir: Path) -> list[tuple[int, float | None, float | None]]:
    """(step, loss, held-out loss) of each record of the run's metrics.jsonl, streamed (a
    line longer than any record is skipped unread, as a torn last line is); a record whose
    losses are not numbers is a ConfigError naming its line."""
    path = run_dir / METRICS
    found = []
    try:
        with open(path, "rb") as f:
            for line_no, line in enumerate(_lines(f), 1):
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError):  # a torn last line of a killed run
                    continue
                step = record.get("step") if isinstance(record, dict) else None
                if not isinstance(step, int) or isinstance(step, bool):
                    continue
                if not all(_number(record.get(k), none=True) for k in ("loss", "eval_loss")):
                    raise ConfigError(f"{path}: line {line_no}: 'loss' and 'eval_loss' must "
                                      "be numbers or null")
                found.append((step, record.get("loss"), record.get("eval_loss")))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror or e})") from None
    return found
