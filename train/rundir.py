"""A run folder has one owner at a time.

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
from pathlib import Path
from typing import Callable

from pipeline.fileio import write_atomic
from train.config import ConfigError

LOCK = ".lock"
CONFIG = "config.yaml"


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
    return "empty" if names <= {LOCK, "logs"} else "other"


# What a run appends to or writes inside (whole files are replaced by rename: a link there goes).
_WRITTEN_INTO = (LOCK, "logs", "ckpt", "metrics.jsonl")
NOT_FOLLOWED = "a symbolic link (a run never writes through one)"


def _link_error(path: Path, name: str) -> ConfigError:
    return ConfigError(f"--out {path}: {name} is {NOT_FOLLOWED}; remove it, or choose "
                       "another folder")


def refuse_links(path: Path) -> None:
    """ConfigError if anything a run writes into (its lock, logs/ and the rank logs in it,
    ckpt/, metrics.jsonl) is a symbolic link: writing would follow it elsewhere."""
    found = [path / n for n in _WRITTEN_INTO]
    if (path / "logs").is_dir() and not (path / "logs").is_symlink():
        found += sorted((path / "logs").glob("rank_*.log"))
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
