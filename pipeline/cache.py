"""The data cache: a file validated once, and converted once into the canonical table.

Training reads one form, a float32 `.npy` of rows (features..., target), memory-mapped. A
float32 `.npy` is that form already and is mapped as it is (after one validating pass);
anything else is converted once, streaming, into the cache (`TRAIN_CACHE_DIR`, default
~/.cache/ms-dp-regression). Each entry is keyed by the file's identity (path, size,
modification time, a hash of its head and tail) and the options that shape the table, so the
launch scripts' pre-flight check does the pass and the ranks find it done (given a cache folder
they all see; otherwise each host's ranks repeat it). An entry is a shortcut: when it cannot be
written, the next process does the pass again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.fileio import tmp_name, write_atomic
from pipeline.formats import NpyWriter, check_file, npy_header, validated_chunks
from pipeline.limits import DataError

CACHE_ENV = "TRAIN_CACHE_DIR"
# Part of every cache key: bumped when the checks or the conversion change, so that an entry a
# release with weaker checks made is made again, not trusted.
CACHE_VERSION = 3
HEAD_TAIL = 1 << 20  # bytes hashed at each end of a file for its identity


def identity(path: Path) -> dict[str, Any]:
    """What makes a file the same file: path, size, modification time, head and tail hash."""
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(HEAD_TAIL))
        if st.st_size > HEAD_TAIL:
            f.seek(max(HEAD_TAIL, st.st_size - HEAD_TAIL))
            h.update(f.read(HEAD_TAIL))
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "head_tail_sha256": h.hexdigest()}


def cache_dir() -> Path:
    """Where converted tables and statistics are kept."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ms-dp-regression")


def entry_key(*parts: Any) -> str:
    """A cache entry's name: a hash of the cache version and what the entry depends on."""
    return hashlib.sha256(json.dumps([CACHE_VERSION, *parts], sort_keys=True).encode()
                          ).hexdigest()[:20]


def read_json(path: Path) -> dict[str, Any] | None:
    """A cache record, or None when it is absent or damaged (then it is made again)."""
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None  # absent or damaged: recompute


def write_json(path: Path, data: dict[str, Any]) -> None:
    """A cache record, atomically (ranks reading the cache never see half a file); a record
    that cannot be written is left out: the next process does the pass again."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(data))
    except OSError:
        pass


class CacheLock:
    """An exclusive lock on one cache entry while it is made: ranks that open the same file
    at once wait for the first one's conversion instead of all converting it."""

    def __init__(self, key: str) -> None:
        self.path = cache_dir() / f"{key}.lock"

    def __enter__(self) -> CacheLock:
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError as e:
            raise DataError(f"cannot use the data cache {cache_dir()} ({e.strerror or e}); "
                            f"set {CACHE_ENV} to a folder you can write") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)


def canonical(path: Path, target: str, drop_nonfinite: bool,
              what: str = "--data") -> tuple[Path, dict[str, Any]]:
    """The float32 (rows, features + target) .npy training reads, and what is known of it:
    the file itself when it is one (after a validating pass), else a converted copy in the
    cache. Cached by identity and options: a second call (another rank) reads the record."""
    check_file(path, what)
    ident = identity(path)
    key = entry_key("table", ident, target, drop_nonfinite)
    meta_path = cache_dir() / f"{key}.json"
    meta = read_json(meta_path)
    if _usable(meta, path):
        return Path(meta["table"]), meta  # type: ignore[index]
    if path.suffix.lower() == ".npy" and _is_float32_c(path):
        return _make_table(path, target, drop_nonfinite, key, ident)  # nothing to convert: no lock
    with CacheLock(key):
        meta = read_json(meta_path)  # another rank may have made it while we waited
        if _usable(meta, path):
            return Path(meta["table"]), meta  # type: ignore[index]
        return _make_table(path, target, drop_nonfinite, key, ident)


def _usable(meta: dict[str, Any] | None, path: Path) -> bool:
    return meta is not None and (meta.get("table") == str(path.resolve())
                                 or Path(str(meta.get("table", ""))).is_file())


def _make_table(path: Path, target: str, drop_nonfinite: bool, key: str, ident: dict[str, Any]
                ) -> tuple[Path, dict[str, Any]]:
    """The validating pass, and the conversion when one is needed (a float32 .npy is mapped
    as it is, unless rows must be dropped)."""
    direct = path.suffix.lower() == ".npy" and _is_float32_c(path)
    if direct:
        counts: dict[str, Any] = {}
        names, chunks = validated_chunks(path, target, drop_nonfinite, counts=counts)
        for _ in chunks:
            pass
        if not counts["dropped"]:
            return _record(key, ident, str(path.resolve()), names, counts)
        # rows to drop: the file cannot be mapped as it is, a cleaned copy after all
    out = cache_dir() / f"{key}.npy"
    counts = {}
    names, chunks = validated_chunks(path, target, drop_nonfinite, counts=counts)
    writer = _writer(out, len(names))
    try:
        for chunk in chunks:
            writer.write(chunk)
        writer.close()
        writer.path.replace(out)  # under the entry's lock: no reader has it mapped yet
    except BaseException:
        writer.f.close()
        writer.path.unlink(missing_ok=True)
        raise
    return _record(key, ident, str(out), names, counts)


def _record(key: str, ident: dict[str, Any], table: str, names: list[str],
            counts: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    meta = {"table": table, "rows": counts["rows"], "columns": names,
            "dropped_nonfinite": counts["dropped"], "max_abs": counts["max_abs"],
            "source": ident}
    write_json(cache_dir() / f"{key}.json", meta)
    return Path(table), meta


def _writer(out: Path, columns: int) -> NpyWriter:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return NpyWriter(tmp_name(out), columns)
    except OSError as e:
        raise DataError(f"cannot write the data cache {out.parent} ({e.strerror or e}); set "
                        f"{CACHE_ENV} to a folder you can write") from None


def _is_float32_c(path: Path) -> bool:
    with open(path, "rb") as f:
        shape, fortran, dtype = npy_header(f, path)
    return dtype == np.dtype("<f4") and not fortran and len(shape) == 2

