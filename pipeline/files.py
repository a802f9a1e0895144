"""Rows from a file of yours, with the synthetic source's guarantees: sharded, the same stream
whatever the world size, exactly resumable, and never a silent wrong fit.

**Formats.** `.npy` (2-D numeric; the last column is the target), `.npz` (arrays `x`, 2-D, and
`y`, 1-D or (n, 1)), `.csv` (a header row, numeric cells; `--target` names the target column,
default the last) and MindSpore's `.mindrecord` (fields `x` and `y`, read with MindSpore's
reader). Training reads one canonical form: a float32 `.npy` of rows (features..., target),
memory-mapped, so that a file larger than RAM trains. A float32 `.npy` is that form already and
is mapped as it is; anything else is converted once, streaming, into the cache
(`TRAIN_CACHE_DIR`, default ~/.cache/ms-dp-regression): a CSV is parsed once, not per epoch.

**Validation, once per job.** Opening a file checks it in one streaming pass (non-numbers,
unequal rows, NaN/inf, a missing target column, a constant column) and computes the training
split's statistics; the result is cached under the file's identity (path, size, modification
time, a hash of its head and tail) and the options, so the launch scripts' pre-flight check does
the pass and the ranks find it done (with a cache folder they share; otherwise each host's ranks
repeat it). Every problem is a `DataError`: one line, exit 2, before any process group starts.

**Order.** The rows are cut into blocks of `b` consecutive rows (b = 1 up to 2**20 rows: a full
row shuffle; above, the fewest rows that give at most 2**20 blocks, so reads stay sequential).
A share `--eval_fraction` of the blocks, drawn from the seed, is held out. Epoch e visits the
training blocks in an order drawn from (seed, e); global step t takes the next G = N·B·A rows
of that order; shard r takes its micro-batches of them as pipeline/dataset.py lays out. The
rows of a step are not reordered: the step's gradient is their mean. So N ranks with batch B
see exactly the rows one process with batch N·B sees. The last partial global batch of an epoch
(n_train mod G rows) is dropped and reported.

**Units.** With `--standardize` (default for files) the model trains on features and target
standardized with the training split's mean and standard deviation; results are reported in
the data's own units: w, b converted back, losses multiplied by std(y)**2 (the Huber loss with
delta/std(y) in standardized units is exactly std(y)**2 times the loss with delta in the
target's units), and `--delta` is always in the target's units.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import socket
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import numpy as np

from train.config import F32_TINY, MAX_ABS_VALUE

FORMATS = (".npy", ".npz", ".csv", ".mindrecord")
CACHE_ENV = "TRAIN_CACHE_DIR"
# Part of every cache key: bumped when the checks or the conversion change, so that an entry a
# release with weaker checks made is made again, not trusted.
CACHE_VERSION = 2
CHUNK = 1 << 18  # rows per streaming step
MAX_BLOCKS = 1 << 20
HEAD_TAIL = 1 << 20  # bytes hashed at each end of a file for its identity
HUBER_TUNING = 1.345  # delta = 1.345 sigma: 95% efficiency under Gaussian noise (Huber, 1964)
DELTA_SAMPLE = 200_000  # residuals used for the robust scale of the first fit


class DataError(ValueError):
    """A data file or option that cannot work; one line for the console (exit 2)."""


# --- identity and cache ------------------------------------------------------------------------


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


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps([CACHE_VERSION, *parts], sort_keys=True).encode()
                          ).hexdigest()[:20]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None  # absent or damaged: recompute


def _tmp_name(path: Path) -> Path:
    """A temporary name no other writer (another host, another process) can share."""
    return path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}."
                          f"{os.urandom(4).hex()}.tmp")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically, so that ranks reading the cache never see half a file. The record is a
    shortcut: if the cache cannot be written, the next process does the pass again."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_name(path)
        tmp.write_text(json.dumps(data))
        tmp.replace(path)
    except OSError:
        pass


class _CacheLock:
    """An exclusive lock on one cache entry while it is made: ranks that open the same file
    at once wait for the first one's conversion instead of all converting it."""

    def __init__(self, key: str) -> None:
        self.path = cache_dir() / f"{key}.lock"

    def __enter__(self) -> _CacheLock:
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


# --- reading the formats, in chunks of float64 rows (features..., target) ----------------------


def check_file(path: Path, what: str = "--data") -> None:
    """Exists, is a regular readable file with a known extension."""
    if path.suffix.lower() not in FORMATS:
        raise DataError(f"{what} {path}: unknown format {path.suffix or '(no extension)'}; "
                        f"accepted: {', '.join(FORMATS)}")
    try:
        exists = path.exists()
    except OSError as e:  # a name longer than the file system allows, ...
        raise DataError(f"{what} {path}: {e.strerror or e}") from None
    if not exists:
        raise DataError(f"{what} {path}: no such file")
    if not path.is_file():
        raise DataError(f"{what} {path}: not a regular file")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise DataError(f"{what} {path}: cannot read it ({e.strerror or e})") from None


def _npy_header(f: Any, path: Path) -> tuple[tuple[int, ...], np.dtype, bool]:
    try:
        version = np.lib.format.read_magic(f)
        return np.lib.format._read_array_header(f, version)  # noqa: SLF001 - the reader
    except (ValueError, OSError, SyntaxError) as e:
        raise DataError(f"{path}: not a valid .npy file ({str(e)[:80]})") from None


def _numeric(dtype: np.dtype, path: Path, what: str) -> None:
    if dtype.kind not in "fiub" or dtype.hasobject:
        raise DataError(f"{path}: {what} must be numeric, not {dtype}")


def _npy_chunks(path: Path, target: str) -> tuple[list[str], Iterator[np.ndarray]]:
    if target:
        raise DataError(f"--target names a CSV column; in {path.name} (a .npy file) the target "
                        "is the last column")
    with open(path, "rb") as f:
        shape, fortran, dtype = _npy_header(f, path)
    if len(shape) != 2 or shape[1] < 2:
        raise DataError(f"{path}: expected a 2-D array (rows, features + target), got shape "
                        f"{shape}")
    _numeric(dtype, path, "its values")
    arr = np.load(path, mmap_mode="r")
    names = [f"x{j}" for j in range(shape[1] - 1)] + ["y"]
    return names, (np.asarray(arr[i:i + CHUNK], np.float64) for i in range(0, shape[0], CHUNK))


def _npz_member(z: zipfile.ZipFile, name: str, path: Path) -> tuple[Any, tuple, np.dtype]:
    if f"{name}.npy" not in z.namelist():
        raise DataError(f"{path}: no array {name!r} (it holds {sorted(z.namelist())}); a .npz "
                        "needs x (rows, features) and y (rows) or (rows, 1)")
    f = z.open(f"{name}.npy")
    shape, fortran, dtype = _npy_header(f, path)
    _numeric(dtype, path, f"array {name}")
    if fortran:
        raise DataError(f"{path}: array {name} is Fortran-ordered; save it C-ordered")
    return f, shape, dtype


def _npz_chunks(path: Path, target: str) -> tuple[list[str], Iterator[np.ndarray]]:
    if target:
        raise DataError(f"--target names a CSV column; in {path.name} the target is array y")
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{path}: not a valid .npz file ({e})") from None
    fx, sx, dx = _npz_member(z, "x", path)
    fy, sy, dy = _npz_member(z, "y", path)
    if len(sx) != 2 or sy not in ((sx[0],), (sx[0], 1)):
        raise DataError(f"{path}: x must be (rows, features) and y (rows,) or (rows, 1) with "
                        f"the same rows; got x {sx}, y {sy}")

    def gen() -> Iterator[np.ndarray]:
        for i in range(0, sx[0], CHUNK):
            k = min(CHUNK, sx[0] - i)
            x = np.frombuffer(fx.read(k * sx[1] * dx.itemsize), dx).reshape(k, sx[1])
            y = np.frombuffer(fy.read(k * dy.itemsize), dy).reshape(k, 1)
            yield np.concatenate([x.astype(np.float64), y.astype(np.float64)], axis=1)

    return [f"x{j}" for j in range(sx[1])] + ["y"], gen()


def _csv_columns(path: Path, target: str) -> tuple[list[str], int]:
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        header = next(csv.reader(f), None)
    if not header or len(header) < 2:
        raise DataError(f"{path}: a CSV needs a header row naming at least two columns")
    names = [h.strip() for h in header]
    if "" in names:
        raise DataError(f"{path}: column {names.index('') + 1} of the header has no name; every "
                        "column needs one")
    if dups := sorted({n for n in names if names.count(n) > 1}):
        raise DataError(f"{path}: the header names {', '.join(map(repr, dups))} more than once; "
                        "every column needs a name of its own")
    if target and target not in names:
        raise DataError(f"{path}: no column {target!r} for --target; columns: "
                        f"{', '.join(names)}")
    return names, names.index(target) if target else len(names) - 1


def _csv_locate(lines: list[str], first_row: int, names: list[str]) -> str:
    """The first cell that is not a number, or the first row of another length, by line."""
    for i, line in enumerate(lines):
        if not line.strip():
            continue  # blank lines are skipped, and still counted
        row = next(csv.reader([line]))
        if len(row) != len(names):
            return (f"line {first_row + i} has {len(row)} cells, the header "
                    f"{len(names)}")
        for j, cell in enumerate(row):
            try:
                if "_" in cell:  # float() takes 1_000, the CSV reader does not
                    raise ValueError(cell)
                float(cell)
            except ValueError:
                return (f"line {first_row + i}, column {j + 1} ({names[j]!r}): {cell.strip()!r} "
                        "is not a number")
    return f"lines {first_row}-{first_row + len(lines) - 1} cannot be read"


def _csv_chunks(path: Path, target: str) -> tuple[list[str], Iterator[np.ndarray]]:
    names, t = _csv_columns(path, target)
    order = [j for j in range(len(names)) if j != t] + [t]

    def gen() -> Iterator[np.ndarray]:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
            f.readline()
            row = 2  # file line of the first data row (the header is line 1)
            while True:
                lines = [ln for ln in (f.readline() for _ in range(CHUNK)) if ln]
                if not lines:
                    return
                body = [ln for ln in lines if ln.strip()]
                if body:
                    try:
                        a = np.loadtxt(io.StringIO("".join(body)), delimiter=",", ndmin=2,
                                       dtype=np.float64, quotechar='"')
                    except ValueError:
                        raise DataError(f"{path}: {_csv_locate(lines, row, names)}") from None
                    if a.shape[1] != len(names):
                        raise DataError(f"{path}: {_csv_locate(lines, row, names)}")
                    yield a[:, order]
                row += len(lines)

    return [names[j] for j in order], gen()


def _mindrecord_chunks(path: Path, target: str) -> tuple[list[str], Iterator[np.ndarray]]:
    if target:
        raise DataError(f"--target names a CSV column; in {path.name} the target is field y")
    try:
        from mindspore.mindrecord import FileReader

        reader = FileReader(str(path))
        first = next(reader.get_next(), None)
    except Exception as e:  # noqa: BLE001 - MindSpore's reader raises its own kinds
        why = next((ln.strip() for ln in str(e).splitlines() if ln.startswith("[ERROR]")),
                   str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        raise DataError(f"{path}: not a readable MindRecord file ({why[:120]})") from None
    if first is None or not {"x", "y"} <= first.keys():
        raise DataError(f"{path}: a MindRecord file needs fields x and y")
    for name in ("x", "y"):
        _numeric(np.asarray(first[name]).dtype, path, f"field {name}")
    features = int(np.asarray(first["x"]).size)

    def gen() -> Iterator[np.ndarray]:
        rows = []
        for rec in FileReader(str(path)).get_next():
            x, y = np.asarray(rec["x"], np.float64).ravel(), np.asarray(rec["y"]).ravel()
            if x.size != features or y.size != 1:
                raise DataError(f"{path}: record {len(rows)} has {x.size} features and "
                                f"{y.size} targets, expected {features} and 1")
            rows.append(np.append(x, y[0]))
            if len(rows) == CHUNK:
                yield np.array(rows)
                rows = []
        if rows:
            yield np.array(rows)

    return [f"x{j}" for j in range(features)] + ["y"], gen()


READERS: dict[str, Callable[[Path, str], tuple[list[str], Iterator[np.ndarray]]]] = {
    ".npy": _npy_chunks, ".npz": _npz_chunks, ".csv": _csv_chunks,
    ".mindrecord": _mindrecord_chunks}


def read_chunks(path: Path, target: str = "",
                what: str = "--data") -> tuple[list[str], Iterator[np.ndarray]]:
    """Column names (features..., target) and the rows, streamed as float64 chunks."""
    check_file(path, what)
    return _guarded(path, lambda: READERS[path.suffix.lower()](path, target))


# --- the canonical table ---------------------------------------------------------------------


class NpyWriter:
    """A float32 (rows, columns) .npy written row chunk by row chunk, the row count filled in
    at the end (the header is padded to a fixed size)."""

    HEADER = 128

    def __init__(self, path: Path, columns: int) -> None:
        self.path, self.columns, self.rows = path, columns, 0
        self.f = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.f.write(self._header(0))

    def _header(self, rows: int) -> bytes:
        d = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {self.columns}), }}"
        body = d.ljust(self.HEADER - 10 - 1) + "\n"
        return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body.encode()

    def write(self, rows: np.ndarray) -> None:
        self.f.write(np.ascontiguousarray(rows, dtype="<f4").tobytes())
        self.rows += len(rows)

    def close(self) -> None:
        self.f.seek(0)
        self.f.write(self._header(self.rows))
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()


F32_MAX = float(np.finfo(np.float32).max)


def _bad_cells(chunk: np.ndarray) -> np.ndarray:
    """NaN, inf, or finite but beyond float32's range (inf in the table training reads)."""
    with np.errstate(invalid="ignore"):
        return ~(np.abs(chunk) <= F32_MAX)


def validated_chunks(path: Path, target: str, drop_nonfinite: bool, what: str = "--data",
                     counts: dict[str, Any] | None = None
                     ) -> tuple[list[str], Iterator[np.ndarray]]:
    """`read_chunks` with the checks every reader of a table needs: at least one feature, every
    value a float32 number (else refused naming the first row, or the row dropped and counted
    in `counts["dropped"]`), and a reader's own failure turned into one line. `counts` also
    gets the rows kept and the largest magnitude (`max_abs`)."""
    names, chunks = read_chunks(path, target, what)
    if len(names) < 2:
        raise DataError(f"{path}: no feature columns (only the target); a table needs at "
                        "least one feature and the target")
    counts = counts if counts is not None else {}
    counts.setdefault("rows", 0)
    counts.setdefault("dropped", 0)
    counts.setdefault("max_abs", 0.0)

    def gen() -> Iterator[np.ndarray]:
        it = iter(chunks)
        while (chunk := _guarded(path, lambda: next(it, None))) is not None:
            bad = _bad_cells(chunk)
            if bad.any():
                row = int(np.argmax(bad.any(axis=1)))
                if not drop_nonfinite:
                    col = names[int(np.argmax(bad[row]))]
                    raise DataError(f"{path}: row {counts['rows'] + counts['dropped'] + row + 1}"
                                    f" of the data holds NaN, inf or a value beyond float32's "
                                    f"range (column {col!r}); clean the file or pass "
                                    "--drop_nonfinite")
                keep = ~bad.any(axis=1)
                counts["dropped"] += int((~keep).sum())
                chunk = chunk[keep]
            counts["rows"] += len(chunk)
            if len(chunk):
                counts["max_abs"] = max(counts["max_abs"], float(np.abs(chunk).max()))
            yield chunk

    return names, gen()


def _guarded(path: Path, read: Callable[[], Any]) -> Any:
    """`read()`, with whatever a malformed file makes a reader raise as one DataError."""
    try:
        return read()
    except DataError:
        raise
    except (ValueError, TypeError, OSError, EOFError, zipfile.BadZipFile) as e:
        why = str(e).strip().splitlines()[0][:100] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: cannot read it as {path.suffix} ({why})") from None


def canonical(path: Path, target: str, drop_nonfinite: bool,
              what: str = "--data") -> tuple[Path, dict[str, Any]]:
    """The float32 (rows, features + target) .npy training reads, and what is known of it:
    the file itself when it is one (after a validating pass), else a converted copy in the
    cache. Cached by identity and options: a second call (another rank) reads the record."""
    check_file(path, what)
    ident = identity(path)
    key = _key("table", ident, target, drop_nonfinite)
    meta_path = cache_dir() / f"{key}.json"
    meta = _read_json(meta_path)
    if _usable(meta, path):
        return Path(meta["table"]), meta  # type: ignore[index]
    if path.suffix.lower() == ".npy" and _is_float32_c(path):
        return _make_table(path, target, drop_nonfinite, key, ident)  # nothing to convert: no lock
    with _CacheLock(key):
        meta = _read_json(meta_path)  # another rank may have made it while we waited
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
    _write_json(cache_dir() / f"{key}.json", meta)
    return Path(table), meta


def _writer(out: Path, columns: int) -> NpyWriter:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return NpyWriter(_tmp_name(out), columns)
    except OSError as e:
        raise DataError(f"cannot write the data cache {out.parent} ({e.strerror or e}); set "
                        f"{CACHE_ENV} to a folder you can write") from None


def _is_float32_c(path: Path) -> bool:
    with open(path, "rb") as f:
        shape, fortran, dtype = _npy_header(f, path)
    return dtype == np.dtype("<f4") and not fortran and len(shape) == 2


# --- the split and the order -------------------------------------------------------------------


def block_size(rows: int) -> int:
    """Rows per block: 1 (a full row shuffle) up to 2**20 rows, then at most 2**20 blocks."""
    return max(1, -(-rows // MAX_BLOCKS))


def _rng(seed: int, *words: int) -> np.random.Generator:
    return np.random.default_rng([seed, 0xDA7A, *words])


class Split:
    """Which blocks of a table are held out, and the order of the training blocks per epoch."""

    def __init__(self, rows: int, seed: int, eval_fraction: float) -> None:
        self.rows, self.seed = rows, seed
        self.bs = block_size(rows)
        n_blocks = -(-rows // self.bs)
        held = round(eval_fraction * n_blocks) if eval_fraction > 0 else 0
        if eval_fraction > 0 and held == 0:
            held = 1
        if held >= n_blocks:
            raise DataError(f"{rows} rows leave nothing to train on with --eval_fraction "
                            f"{eval_fraction}; lower it or give --eval_data")
        order = _rng(seed, 0xE7A1).permutation(n_blocks)
        self.eval_blocks = np.sort(order[:held])
        self.train_blocks = np.sort(order[held:])
        self._train_mask = np.ones(n_blocks, bool)
        self._train_mask[self.eval_blocks] = False
        sizes = np.minimum(self.bs, rows - self.train_blocks * self.bs)
        self.train_rows = int(sizes.sum())
        self._epoch: tuple[int, np.ndarray, np.ndarray] | None = None

    def is_train(self, rows: np.ndarray) -> np.ndarray:
        """A mask over row indices: True for training rows."""
        return self._train_mask[rows // self.bs]

    def eval_rows(self, limit: int) -> np.ndarray:
        """The first `limit` held-out row indices, in file order."""
        return self._expand(self.eval_blocks, 0, limit)

    def _order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Epoch order: the training blocks permuted by (seed, epoch), and where each starts in
        the epoch's stream."""
        if self._epoch is None or self._epoch[0] != epoch:
            blocks = self.train_blocks[_rng(self.seed, epoch).permutation(len(self.train_blocks))]
            sizes = np.minimum(self.bs, self.rows - blocks * self.bs)
            self._epoch = (epoch, blocks, np.concatenate([[0], np.cumsum(sizes)]))
        return self._epoch[1], self._epoch[2]

    def positions(self, epoch: int, start: int, count: int) -> np.ndarray:
        """Row indices of stream positions start..start+count of an epoch."""
        blocks, starts = self._order(epoch)
        if self.bs == 1:
            return blocks[start:start + count]
        return self._expand(blocks, start, count, starts)

    def _expand(self, blocks: np.ndarray, start: int, count: int,
                starts: np.ndarray | None = None) -> np.ndarray:
        """Row indices of positions start..start+count of the blocks' concatenation."""
        if starts is None:
            sizes = np.minimum(self.bs, self.rows - blocks * self.bs)
            starts = np.concatenate([[0], np.cumsum(sizes)])
        count = max(0, min(count, int(starts[-1]) - start))
        return self.rows_at(blocks, np.arange(start, start + count), starts)

    def rows_at(self, blocks: np.ndarray, pos: np.ndarray,
                starts: np.ndarray | None = None) -> np.ndarray:
        """Row indices of positions `pos` of the blocks' concatenation."""
        if starts is None:
            sizes = np.minimum(self.bs, self.rows - blocks * self.bs)
            starts = np.concatenate([[0], np.cumsum(sizes)])
        b = np.searchsorted(starts, pos, side="right") - 1
        return blocks[b] * self.bs + (pos - starts[b])


# --- statistics of the training split --------------------------------------------------------


def _combine(n: int, mean: np.ndarray, m2: np.ndarray, chunk: np.ndarray
             ) -> tuple[int, np.ndarray, np.ndarray]:
    """Chan's parallel update of (count, mean, sum of squared deviations) with a chunk."""
    k = len(chunk)
    if k == 0:
        return n, mean, m2
    cm = chunk.mean(axis=0)
    cm2 = ((chunk - cm) ** 2).sum(axis=0)
    total = n + k
    d = cm - mean
    return total, mean + d * k / total, m2 + cm2 + d * d * n * k / total


def statistics(table: np.ndarray, split: Split) -> dict[str, Any]:
    """One streaming pass over the training rows: mean, std, min and max of every column,
    and the automatic delta from the residuals of a least-squares fit."""
    cols = table.shape[1]
    n, mean, m2 = 0, np.zeros(cols), np.zeros(cols)
    lo, hi = np.full(cols, np.inf), np.full(cols, -np.inf)
    xtx, xty = np.zeros((cols, cols)), np.zeros(cols)
    for i in range(0, split.rows, CHUNK):
        idx = np.arange(i, min(i + CHUNK, split.rows))
        chunk = np.asarray(table[i:i + CHUNK], np.float64)[split.is_train(idx)]
        n, mean, m2 = _combine(n, mean, m2, chunk)
        if len(chunk):
            lo, hi = np.minimum(lo, chunk.min(axis=0)), np.maximum(hi, chunk.max(axis=0))
        x1 = np.concatenate([chunk[:, :-1], np.ones((len(chunk), 1))], axis=1)
        xtx += x1.T @ x1
        xty += x1.T @ chunk[:, -1]
    std = np.sqrt(m2 / max(n, 1))
    stats = {"rows": n, "mean": mean.tolist(), "std": std.tolist(), "min": lo.tolist(),
             "max": hi.tolist()}
    stats["delta"] = _robust_delta(table, split, np.linalg.lstsq(xtx, xty, rcond=None)[0])
    return stats


def _robust_delta(table: np.ndarray, split: Split, coef: np.ndarray) -> float:
    """1.345 times the residuals' robust scale (1.4826 x median absolute deviation) of the
    least-squares fit, on an evenly spread sample of training rows."""
    pos = np.linspace(0, split.train_rows - 1, min(DELTA_SAMPLE, split.train_rows)).astype(int)
    rows = np.asarray(table[np.sort(split.rows_at(split.train_blocks, pos))], np.float64)
    resid = rows[:, -1] - rows[:, :-1] @ coef[:-1] - coef[-1]
    mad = float(np.median(np.abs(resid - np.median(resid))))
    scale = 1.4826 * mad
    if not scale > 0:  # a perfect fit: any small delta will do
        scale = 1e-6 * max(float(np.std(rows[:, -1])), 1e-12)
    return HUBER_TUNING * scale


# --- the source the trainer reads ------------------------------------------------------------


def _map(table: Path, source: Path) -> np.ndarray:
    """The canonical table, memory-mapped; DataError if it is not a readable .npy."""
    try:
        return np.load(table, mmap_mode="r")
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{source}: cannot read it as a table ({str(e)[:100]})") from None


class FileStream:
    """`pipeline.dataset.RowStream` over a mapped table: position i of epoch e is row
    `split.positions(e, i, 1)`, standardized if asked. A step's rows are whole blocks (plus
    the ends of two), so they are gathered block by block: at batch 65,536 one gather of
    ~10k blocks instead of 65k rows."""

    def __init__(self, table: np.ndarray, split: Split, shift: np.ndarray | None,
                 scale: np.ndarray | None) -> None:
        self.table, self.split, self.shift, self.scale = table, split, shift, scale
        self.features = table.shape[1] - 1
        self.flat = np.asarray(table)  # a plain view of the mapping (no memmap overhead)
        bs = split.bs
        self.full_blocks = len(self.flat) // bs
        self.blocks3 = self.flat[:self.full_blocks * bs].reshape(-1, bs, table.shape[1])

    def standardize(self, a: np.ndarray) -> np.ndarray:
        """Rows (features..., target) in the units the model trains in (float32)."""
        a = np.asarray(a, np.float32)
        return a if self.shift is None else (a - self.shift) * self.scale

    def _gather(self, epoch: int, start: int, count: int) -> np.ndarray:
        blocks, starts = self.split._order(epoch)  # noqa: SLF001
        bs = self.split.bs
        if bs == 1:
            return self.flat[blocks[start:start + count]]
        k0 = int(np.searchsorted(starts, start, side="right")) - 1
        k1 = int(np.searchsorted(starts, start + count, side="left"))
        ids = blocks[k0:k1]
        if ids.max(initial=-1) < self.full_blocks:
            a = np.take(self.blocks3, ids, axis=0).reshape(-1, self.flat.shape[1])
        else:  # the file's short last block is among them (once per epoch)
            a = np.concatenate([self.flat[b * bs:(b + 1) * bs] for b in ids])
        off = start - int(starts[k0])
        return a[off:off + count]

    def rows(self, epoch: int, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """x (count, features) and y (count, 1) of stream positions start..start+count."""
        a = self._gather(epoch, start, count)  # a fresh array (gathered): standardized in place
        if self.shift is not None:
            a -= self.shift
            a *= self.scale
        return np.ascontiguousarray(a[:, :-1]), np.ascontiguousarray(a[:, -1:])


class FileSource:
    """A data file as the trainer sees it (pipeline/source.py has the synthetic one)."""

    def __init__(self, cfg: Any, world: int, meta: dict[str, Any], table: np.ndarray,
                 split: Split, stats: dict[str, Any], eval_table: np.ndarray | None,
                 eval_id: dict[str, Any] | None, auto_delta: bool, eval_max: float) -> None:
        self.cfg, self.meta, self.split, self.auto_delta = cfg, meta, split, auto_delta
        self.eval_table = eval_table
        self.features = table.shape[1] - 1
        self.global_batch = cfg.global_batch_size(world)
        self.steps_per_epoch = split.train_rows // self.global_batch
        self.dropped_last = split.train_rows - self.steps_per_epoch * self.global_batch
        self.mean, self.std = np.array(stats["mean"]), np.array(stats["std"])
        self.lo, self.hi = stats["min"], stats["max"]
        self.max_abs = max(meta["max_abs"], eval_max)  # every row, held-out ones included
        std = bool(cfg.standardize)
        shift = self.mean.astype(np.float32) if std else None
        with np.errstate(divide="ignore"):  # a constant column is refused in _check()
            scale = (1.0 / self.std).astype(np.float32) if std else None
        self.stream = FileStream(table, split, shift, scale)
        self.loss_unit = float(self.std[-1]) ** 2 if std else 1.0
        self.stats = {"mean": stats["mean"], "std": stats["std"]} if std else None
        self.identity = {"file": meta["source"], "eval_data": eval_id}

    @classmethod
    def open(cls, cfg: Any, world: int) -> FileSource:
        """Validate the file(s) (cached), split, compute statistics (cached); resolves
        cfg.standardize and an automatic cfg.delta in place. DataError on bad data."""
        path = Path(cfg.data)
        table_path, meta = canonical(path, cfg.target, cfg.drop_nonfinite)
        table = _map(table_path, path)
        eval_table, eval_id, eval_max = None, None, 0.0
        if cfg.eval_data:
            eval_path, eval_meta = canonical(Path(cfg.eval_data), cfg.target,
                                             cfg.drop_nonfinite, "--eval_data")
            eval_table, eval_id = _map(eval_path, Path(cfg.eval_data)), eval_meta["source"]
            eval_max = eval_meta["max_abs"]
            if len(eval_table) == 0:
                raise DataError(f"--eval_data {cfg.eval_data} holds no rows")
            if eval_table.shape[1] != table.shape[1]:
                raise DataError(f"--eval_data {cfg.eval_data} has {eval_table.shape[1] - 1} "
                                f"feature(s), --data {cfg.data} {table.shape[1] - 1}")
        split = Split(len(table), cfg.seed, 0.0 if cfg.eval_data else cfg.eval_fraction)
        key = _key("stats", meta["source"], cfg.target, cfg.drop_nonfinite, cfg.seed,
                   cfg.eval_fraction, eval_id)
        stats = _read_json(cache_dir() / f"{key}.json")
        if stats is None:
            stats = statistics(table, split)
            _write_json(cache_dir() / f"{key}.json", stats)
        if cfg.standardize is None:
            cfg.standardize = True
        auto = cfg.delta is None
        if auto:
            cfg.delta = float(f"{stats['delta']:.6g}")
        source = cls(cfg, world, meta, table, split, stats, eval_table, eval_id, auto, eval_max)
        source._check(path)
        return source

    def _check(self, path: Path) -> None:
        cfg, names = self.cfg, self.meta["columns"]
        if not cfg.standardize:
            big = self.max_abs  # every row of the file(s), held-out ones included
            if big >= MAX_ABS_VALUE:
                raise DataError(f"{path}: values up to {big:.3g} are too large to train on as "
                                f"they are (float32); they must stay below {MAX_ABS_VALUE:.0e}, or "
                                "pass --standardize true")
        delta = self.loss_delta(cfg.delta)
        if not np.float32(delta) >= F32_TINY:
            raise DataError(f"--delta {cfg.delta} is {delta:.3g} in standardized units, which "
                            "float32 cannot hold; give a larger --delta")
        if cfg.standardize:
            flat = [names[j] for j, s in enumerate(self.std) if not s > 0]
            if flat:
                raise DataError(f"{path}: column {flat[0]!r} has the same value in every "
                                "training row, so it cannot be standardized; drop it or pass "
                                "--standardize false")
        if self.steps_per_epoch == 0:
            raise DataError(f"{path}: {self.split.train_rows} training rows are fewer than one "
                            f"global batch of {self.global_batch} (batch_size x accum_steps x "
                            "ranks); lower --batch_size")
        if cfg.sink_size > 1 and self.steps_per_epoch % cfg.sink_size:
            raise DataError(f"{path} gives {self.steps_per_epoch} steps per epoch, not a "
                            f"multiple of --sink_size {cfg.sink_size} (epoch ends must fall on "
                            "sink calls)")

    def eval_rows(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The held-out rows (at most `size`, in file order), in training units."""
        if self.eval_table is not None:
            a = self.eval_table[:min(size, len(self.eval_table))]
        else:
            a = self.stream.table[self.split.eval_rows(size)]
        a = self.stream.standardize(a)
        return np.ascontiguousarray(a[:, :-1]), np.ascontiguousarray(a[:, -1:])

    def max_eval_rows(self) -> int:
        """Held-out rows available."""
        if self.eval_table is not None:
            return len(self.eval_table)
        return self.split.rows - self.split.train_rows

    def loss_delta(self, delta: float) -> float:
        """--delta (the target's units) in the units the model trains in."""
        return delta / float(self.std[-1]) if self.cfg.standardize else delta

    def params_in_units(self, wb: tuple[list[float], float] | None
                        ) -> tuple[list[float], float] | None:
        """Learned (w, b) of the linear model in the data's own units."""
        if wb is None or not self.cfg.standardize:
            return wb
        w, b = np.array(wb[0]), wb[1]
        sx, sy, mx, my = self.std[:-1], self.std[-1], self.mean[:-1], self.mean[-1]
        w_orig = sy * w / sx
        return w_orig.tolist(), float(my + sy * b - (w_orig * mx).sum())

    def summary_extra(self, wb: tuple[list[float], float] | None) -> dict[str, Any]:
        """What the data was: rows used, dropped, split, units."""
        extra: dict[str, Any] = {"data": {
            "file": str(self.cfg.data), "rows": self.meta["rows"],
            "train_rows": self.split.train_rows, "eval_rows": self.max_eval_rows(),
            "dropped_nonfinite": self.meta["dropped_nonfinite"],
            "dropped_last_batch_rows": self.dropped_last, "columns": self.meta["columns"],
            "standardized": bool(self.cfg.standardize)}}
        if wb is not None and self.cfg.standardize:
            extra.update(w_standardized=wb[0], b_standardized=wb[1])
        return extra

    def sample_rows(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The first n training rows in file order, in the data's units."""
        idx = self.split._expand(self.split.train_blocks, 0, n)  # noqa: SLF001
        a = np.asarray(self.stream.table[idx], np.float32)
        return a[:, :-1], a[:, -1:]

    def curve_x(self) -> np.ndarray:
        """The training range of the (one) feature."""
        return np.linspace(self.lo[0], self.hi[0], 101)

    def to_model(self, x: np.ndarray) -> np.ndarray:
        """Features in training units."""
        if not self.cfg.standardize:
            return x.astype(np.float32)
        return ((x - self.mean[:-1]) / self.std[:-1]).astype(np.float32)

    def from_model(self, y: np.ndarray) -> np.ndarray:
        """Model outputs in the target's units."""
        return y * self.std[-1] + self.mean[-1] if self.cfg.standardize else y

    def describe(self) -> str:
        """One line for --dry_run and the run's log."""
        cfg, m = self.cfg, self.meta
        dropped = f", {m['dropped_nonfinite']} non-finite dropped" if m["dropped_nonfinite"] else ""
        delta = f"delta {cfg.delta:g} in {m['columns'][-1]}'s units"
        if self.auto_delta:
            delta += " (chosen from the data: 1.345 x the robust scale of a first fit)"
        if cfg.standardize:
            delta += f", {self.loss_delta(cfg.delta):.6g} standardized"
        return (f"data: {cfg.data} ({m['rows']} rows{dropped}: {self.split.train_rows} train, "
                f"{self.max_eval_rows()} held out; {self.features} feature(s), target "
                f"{m['columns'][-1]!r}); {self.steps_per_epoch} steps per epoch of global batch "
                f"{self.global_batch} ({self.dropped_last} rows of the last partial batch "
                f"dropped); standardized: {'yes' if cfg.standardize else 'no'}; {delta}")
