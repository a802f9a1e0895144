"""A table mapped for training must not change under the run: a file truncated while mapped
ends the process with SIGBUS at the next read of a page past its new end.

`MappedFile` holds a read lease on the table (Linux `F_SETLEASE`): a process that opens the
file for writing or truncates it is held back by the kernel (up to
/proc/sys/fs/lease-break-time, 45 s by default) and this process receives SIGIO, on which the
trainer stops at its next step with a checkpoint (train/stop.py), long before the writer may go
on. Where a lease cannot be taken (another owner without CAP_LEASE, NFS, a file already open for
writing), `changed()` compares the file's size, modification time and inode with those it was
mapped with; the trainer asks before every read of rows and stops with one line, which catches
a rewrite that is not racing that very read.

Without a lease, every read but the training steps' own goes through `CheckedTable`: `pread` of
the file, not the mapping (also once a writer waits for the lease to break), so that a
truncate racing it gives a short read (one line, exit 2), never SIGBUS (exit 135 and no
summary: seen in a final convergence pass after "no lease"). The training steps' reads stay on
the mapping (a pread per block would cost the step loop), checked before each.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.limits import DataError


class MappedFile:
    """A table file as it was when opened; `hold()` leases it (where possible) for training."""

    def __init__(self, path: Path) -> None:
        self.path, self.fd = path, None
        st = os.stat(path)
        self.seen = (st.st_size, st.st_mtime_ns, st.st_ino)
        self.why = "not held"

    @property
    def held(self) -> bool:
        """True while this process holds the lease and no writer waits for it (a breaking
        lease ends within lease-break-time, then the writer goes on)."""
        if self.fd is None or self.why:
            return False
        try:
            return fcntl.fcntl(self.fd, fcntl.F_GETLEASE) == fcntl.F_RDLCK
        except OSError:
            return False

    def hold(self) -> bool:
        """Take a read lease (the training process only: the holder must answer the kernel's
        SIGIO, train/stop.py). False, with the reason in `why`, where none can be taken."""
        try:
            self.fd = os.open(self.path, os.O_RDONLY)
            st = os.fstat(self.fd)
            if (st.st_size, st.st_mtime_ns, st.st_ino) != self.seen:
                self.why = "it changed since it was validated"
                return False
            fcntl.fcntl(self.fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
            self.why = ""
            return True
        except OSError as e:  # EAGAIN: open for writing now; EACCES: not ours; EINVAL: NFS
            self.why = e.strerror or str(e)
        return False

    def changed(self) -> bool:
        """True when the file is no longer the one mapped (rewritten, truncated, replaced)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        return (st.st_size, st.st_mtime_ns, st.st_ino) != self.seen


def changed_error(name: Any) -> DataError:
    """The one line for a table file that changed under the run."""
    return DataError(f"{name} changed while training (rewritten or truncated); the checkpoints "
                     "written before are intact; --resume once the file is back as it was, or "
                     "start a new run")


class CheckedTable:
    """A memory-mapped .npy table whose every read is checked: `table[rows]` (a slice or row
    indices) is a copy, read through the mapping while the lease is held and with
    `pread` otherwise, the file compared with the one mapped before and after."""

    def __init__(self, table: np.ndarray, mapped: MappedFile, name: Any) -> None:
        self.table, self.mapped, self.name = table, mapped, name
        self.shape, self.dtype = table.shape, table.dtype

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, rows: Any) -> np.ndarray:
        if self.mapped.changed():
            raise changed_error(self.name)
        a = np.array(self.table[rows]) if self.mapped.held else self._pread(rows)
        if self.mapped.changed():  # a rewrite in place during the read: not these rows
            raise changed_error(self.name)
        return a

    def _pread(self, rows: Any) -> np.ndarray:
        """One read of the rows' span where that is not much more than the rows, else one per
        run of consecutive rows; a short read (the file is shorter now) is a changed file."""
        t = self.table
        rows = np.arange(*rows.indices(len(t))) if isinstance(rows, slice) else \
            np.asarray(rows, np.int64).reshape(-1)
        out = np.empty((len(rows), *t.shape[1:]), t.dtype)
        if not len(rows):
            return out
        lo, hi = int(rows.min()), int(rows.max())
        cuts = [0, len(rows)] if hi - lo < 4 * len(rows) + 1024 else \
            [0, *(np.flatnonzero(np.diff(rows) != 1) + 1).tolist(), len(rows)]
        with open(self.mapped.path, "rb", buffering=0) as f:
            for i, j in zip(cuts, cuts[1:]):
                first = lo if len(cuts) == 2 else int(rows[i])
                block = self._read(f.fileno(), first, (hi if len(cuts) == 2 else
                                                       int(rows[j - 1])) - first + 1)
                out[i:j] = block[rows[i:j] - first]
        return out

    def _read(self, fd: int, first: int, count: int) -> np.ndarray:
        t = self.table
        width = t.itemsize * int(np.prod(t.shape[1:]))
        data = os.pread(fd, count * width, t.offset + first * width)
        if len(data) != count * width:
            raise changed_error(self.name)
        return np.frombuffer(data, t.dtype).reshape(count, *t.shape[1:])
