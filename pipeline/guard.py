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
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class MappedFile:
    """A table file as it was when opened; `hold()` leases it (where possible) for training."""

    def __init__(self, path: Path) -> None:
        self.path, self.fd = path, None
        st = os.stat(path)
        self.seen = (st.st_size, st.st_mtime_ns, st.st_ino)
        self.why = "not held"

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
