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

import fcntl
import hashlib
import json
import os
import re
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.fileio import finite_numbers, tmp_name, write_atomic
from pipeline.formats import NpyWriter, TableSpec, check_file, npy_header, validated_chunks
from pipeline.limits import DataError

CACHE_ENV = "TRAIN_CACHE_DIR"
# Part of every cache key: bumped when the checks, the conversion or the statistics change,
# so that an entry a release with weaker checks (or another delta) made is made again.
CACHE_VERSION = 7  # 6: missing CSV cells, --columns, --categorical (levels); 7: robust delta
HEAD_TAIL = 1 << 20  # bytes hashed at each end of a file for its identity
# A column whose mean is this many of its standard deviations is stored centred: float32's
# rounding then costs it less than ~1.5e-5 of its spread instead of ~6e-8 x mean / std.
OFFSET_RATIO = 256


def identity(path: Path) -> dict[str, Any]:
    """What makes a file the same file: path, size, modification time, head and tail hash
    (and, for a MindRecord file, its index's)."""
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(HEAD_TAIL))
        if st.st_size > HEAD_TAIL:
            f.seek(max(HEAD_TAIL, st.st_size - HEAD_TAIL))
            h.update(f.read(HEAD_TAIL))
    found = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
             "head_tail_sha256": h.hexdigest()}
    if path.suffix.lower() == ".mindrecord":
        found["index"] = identity(Path(f"{path}.db"))
    return found


def cache_dir() -> Path:
    """Where converted tables and statistics are kept."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ms-dp-regression")


def entry_key(*parts: Any) -> str:
    """A cache entry's name: a hash of the cache version and what the entry depends on."""
    return _digest([CACHE_VERSION, *parts])[:20]


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def read_json(path: Path) -> dict[str, Any] | None:
    """A cache record, or None when it is absent, damaged or edited (then it is made again):
    its content must match the checksum it was written with (unkeyed: it catches damage and
    hand edits, not a writer who re-signs; `_usable` then checks what the record claims)."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not (isinstance(found, dict) and isinstance(found.get("record"), dict)
            and found.get("sha256") == _digest(found["record"])):
        return None
    return found["record"]


def write_json(path: Path, data: dict[str, Any]) -> None:
    """A cache record with its checksum, atomically (ranks reading the cache never see half a
    file); a record that cannot be written is left out: the next process does the pass again."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps({"record": data, "sha256": _digest(data)}))
    except OSError:
        pass


class CacheLock:
    """An exclusive lock on one cache entry while it is made: ranks that open the same file
    at once wait for the first one's conversion instead of all converting it. The wait polls,
    calling `stop()` between tries, so that a stop signal is acted on while waiting."""

    def __init__(self, key: str, stop: Callable[[], None] | None = None) -> None:
        self.path, self.stop, self.fd = cache_dir() / f"{key}.lock", stop, None

    def __enter__(self) -> CacheLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise DataError(f"cannot use the data cache {cache_dir()} ({e.strerror or e}); "
                            f"set {CACHE_ENV} to a folder you can write") from None
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if self.stop:
                    try:
                        self.stop()
                    except BaseException:
                        os.close(self.fd)
                        raise
                time.sleep(0.1)
            except OSError as e:
                os.close(self.fd)
                raise DataError(f"cannot lock the data cache {cache_dir()} "
                                f"({e.strerror or e})") from None

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)


def canonical(path: Path, target: str, drop_nonfinite: bool, what: str = "--data",
              stop: Callable[[], None] | None = None,
              spec: TableSpec | None = None) -> tuple[Path, dict[str, Any]]:
    """The float32 (rows, features + target) .npy training reads, and what is known of it:
    the file itself when it is one (after a validating pass), else a converted copy in the
    cache. Cached by identity and options: a second call (another rank) reads the record.
    `stop()` is called while waiting and between chunks: it raises to abandon the work (a
    stop signal), which leaves nothing behind. `spec` picks and encodes a CSV's columns: it is
    part of the key, and the levels it learns are in the record (`levels`)."""
    spec = spec or TableSpec()
    check_file(path, what)
    check_index(path)
    ident = identity(path)
    key = entry_key("table", ident, target, drop_nonfinite, spec.key())
    meta_path = cache_dir() / f"{key}.json"
    meta = read_json(meta_path)
    if _usable(meta, path):
        return Path(meta["table"]), meta  # type: ignore[index]
    sweep_temporaries()
    if path.suffix.lower() == ".npy" and _is_float32_c(path):
        # nothing to convert: no lock
        return _make_table(path, target, drop_nonfinite, key, ident, stop, direct=True, spec=spec)
    with CacheLock(key, stop):
        meta = read_json(meta_path)  # another rank may have made it while we waited
        if _usable(meta, path):
            return Path(meta["table"]), meta  # type: ignore[index]
        return _make_table(path, target, drop_nonfinite, key, ident, stop, direct=False, spec=spec)


def check_index(path: Path) -> None:
    """A MindRecord file's index (`<file>.db`) must name this file: MindSpore's reader reads
    the file its index names, so a copied pair would read (and train on) the original."""
    if path.suffix.lower() != ".mindrecord":
        return
    db = Path(f"{path}.db")
    if not db.is_file():
        raise DataError(f"{path}: no index {db.name} beside it (a MindRecord file comes with "
                        "its .db)")
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            names = [r[0] for r in con.execute("SELECT NAME FROM SHARD_NAME")]
    except sqlite3.Error as e:
        raise DataError(f"{path}: its index {db.name} is not readable ({e})") from None
    if names != [path.name]:
        raise DataError(f"{path}: its index {db.name} names {', '.join(map(repr, names))}, not "
                        f"{path.name!r} (a copied or renamed MindRecord reads the file its index "
                        "names); convert the original, or rename the pair back")


_META_TYPES = {"table": str, "rows": int, "columns": list, "dropped_nonfinite": int,
               "max_abs": (int, float), "source": dict, "levels": dict}


def _usable(meta: dict[str, Any] | None, path: Path) -> bool:
    """A record to trust: the expected fields and types, and a table that is what the record
    says (the user's own file, whose identity is in the key; or a table of the cache's, whose
    size and sampled hash were recorded when it was written)."""
    if meta is None or not all(isinstance(meta.get(k), t) for k, t in _META_TYPES.items()):
        return False
    columns, offset = meta["columns"], meta.get("offset")
    if not (columns and all(isinstance(c, str) for c in columns) and meta["rows"] >= 0
            and finite_numbers([meta["max_abs"]])):
        return False
    if not all(isinstance(v, list) and all(isinstance(x, str) for x in v)
               for v in meta["levels"].values()):
        return False
    if offset is not None and not (isinstance(offset, list) and len(offset) == len(columns)
                                   and finite_numbers(offset)):
        return False
    table = Path(meta["table"])
    try:
        if meta["table"] != str(path.resolve()) and not (
                table.parent == cache_dir() and table.stat().st_size == meta.get("table_bytes")
                and sampled_hash(table) == meta.get("table_hash")):
            return False
        with open(table, "rb") as f:
            shape, fortran, dtype = npy_header(f, table)
    except (OSError, DataError):
        return False
    # the record's shape is the table's (a record of other columns would misread it)
    return shape == (meta["rows"], len(columns)) and dtype == np.float32 and not fortran


def sampled_hash(path: Path, block: int = 1 << 16, blocks: int = 64) -> str:
    """SHA-256 of a file's size and of `blocks` evenly spread blocks of it (all of a small
    file): a truncated, damaged or replaced table shows, for a few MB of reading."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= block * blocks:
            h.update(f.read())
        else:
            for i in range(blocks):
                f.seek((size - block) * i // (blocks - 1))
                h.update(f.read(block))
    return h.hexdigest()


_TMP = re.compile(r"\.(\d+)\.[0-9a-f]{8}\.tmp$")
STALE_SECONDS = 24 * 3600  # a temporary of another host: left alone until this old


def sweep_temporaries() -> None:
    """Remove what killed writers left in the cache: their temporary files (named by host and
    pid, pipeline/fileio.py). This host's: when that pid no longer runs; another host's: when
    older than a day (its liveness cannot be seen from here)."""
    me = socket.gethostname()
    try:
        entries = list(cache_dir().glob(".*.tmp"))
    except OSError:
        return
    for p in entries:
        m = _TMP.search(p.name)
        if not m:
            continue
        try:
            if p.name[:m.start()].endswith(f".{me}"):
                os.kill(int(m[1]), 0)  # ProcessLookupError: its writer is gone
                continue
            if time.time() - p.stat().st_mtime < STALE_SECONDS:
                continue
        except ProcessLookupError:
            pass
        except OSError:  # alive but not ours (EPERM), or the file went meanwhile
            continue
        p.unlink(missing_ok=True)


def _make_table(path: Path, target: str, drop_nonfinite: bool, key: str, ident: dict[str, Any],
                stop: Callable[[], None] | None, direct: bool,
                spec: TableSpec) -> tuple[Path, dict[str, Any]]:
    """The validating pass, and the conversion when one is needed (a `direct` file, a float32
    .npy, is mapped as it is, unless rows must be dropped)."""
    if direct:
        counts: dict[str, Any] = {}
        names, chunks = validated_chunks(path, target, drop_nonfinite, counts=counts, spec=spec)
        for _ in chunks:
            if stop:
                stop()
        if not counts["dropped"]:
            return _record(key, ident, path.resolve(), names, counts, None, spec)
        # rows to drop: the file cannot be mapped as it is, a cleaned copy after all
    out = cache_dir() / f"{key}.npy"
    counts = {}
    names, chunks = validated_chunks(path, target, drop_nonfinite, counts=counts, spec=spec)
    writer = _writer(out, len(names))
    offset, first = None, True
    try:
        for chunk in chunks:
            if stop:
                stop()
            if first and len(chunk):
                offset, first = _offset(chunk), False
            writer.write(chunk if offset is None else chunk - offset)
        writer.close()
        writer.path.replace(out)  # a job that maps an older table keeps its own (inode)
    except OSError as e:
        raise DataError(f"cannot write the data cache {out.parent} ({e.strerror or e}); free "
                        f"space there or set {CACHE_ENV} to another folder") from None
    finally:
        writer.f.close()
        writer.path.unlink(missing_ok=True)
    return _record(key, ident, out, names, counts, offset, spec)


def _offset(chunk: np.ndarray) -> np.ndarray | None:
    """What to store a column relative to: the first rows' mean for a column whose values
    are large against their spread (float32 keeps 1e7 + a small signal only centred; the
    statistics add the offset back), else nothing (the table then holds the file's values,
    rounded to float32 as they always were). None when no column needs one."""
    mean, std = chunk.mean(axis=0), chunk.std(axis=0)
    offset = np.where(np.abs(mean) > OFFSET_RATIO * std, mean, 0.0)
    return offset if offset.any() else None


def _record(key: str, ident: dict[str, Any], table: Path, names: list[str],
            counts: dict[str, Any], offset: np.ndarray | None,
            spec: TableSpec) -> tuple[Path, dict[str, Any]]:
    meta = {"table": str(table), "rows": counts["rows"], "columns": names,
            "dropped_nonfinite": counts["dropped"], "max_abs": counts["max_abs"],
            "source": ident, "offset": None if offset is None else offset.tolist(),
            "levels": spec.levels if spec.categorical else {}}
    if table.parent == cache_dir():  # ours: what it is, to verify before each use
        meta.update(table_bytes=table.stat().st_size, table_hash=sampled_hash(table))
    write_json(cache_dir() / f"{key}.json", meta)
    return table, meta


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
