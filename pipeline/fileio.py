"""Files written whole: atomically (a temporary name, fsync, rename) and, for JSON, strictly.

One writer for everything this package writes whole: run files, checkpoints, the data cache's
records. A kill or a full disk leaves the previous version of the file (or none), never half of
one. The temporary name carries host, pid and a random part, so that writers on several hosts
of a shared file system never share one; its leading dot and `.tmp` let cleaners recognise it.
"""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path
from typing import Any


def tmp_name(path: Path) -> Path:
    """A temporary name beside `path` that no other writer (host, process) can share."""
    return path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}."
                          f"{os.urandom(4).hex()}.tmp")


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a whole file atomically; on any error the temporary file is removed and the
    previous `path` is untouched (the OSError propagates). A symbolic link at `path` is
    replaced by the file, never written through; the temporary file is created new (O_EXCL,
    O_NOFOLLOW), so that nothing planted under its name is written through either."""
    tmp = tmp_name(path)
    raw = data.encode() if isinstance(data, str) else data
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o666)  # (fails before anything of ours exists to remove)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def finite_json(obj: Any) -> Any:
    """`obj` with every non-finite float replaced by None (strict JSON readers reject NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def json_text(obj: Any, indent: int | None = None) -> str:
    """Strict JSON of `obj` (non-finite numbers as null)."""
    return json.dumps(finite_json(obj), indent=indent, allow_nan=False)


def finite_numbers(values: list[Any]) -> bool:
    """All plain finite numbers (JSON's true is an int to Python: not a number here; an
    integer too large for a float is not one either)."""
    return all(not isinstance(v, bool) and (
        (isinstance(v, float) and math.isfinite(v)) or (isinstance(v, int) and abs(v) < 1e308))
        for v in values)
