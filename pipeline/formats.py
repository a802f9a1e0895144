"""Reading the formats a table of rows comes in, as float64 chunks of (features..., target).

`.npy` (2-D numeric; the last column is the target), `.npz` (arrays `x`, 2-D, and `y`, 1-D or
(n, 1)), `.csv` (a header row, numeric cells; `--target` names the target column, default the
last) and MindSpore's `.mindrecord` (fields `x` and `y`, read with MindSpore's reader).
`validated_chunks` adds the checks every reader of a table needs (at least one feature, every
value a float32 number); `NpyWriter` writes the canonical form training maps: a float32 `.npy`.
Every problem is a `DataError`: one line, exit 2.
"""

from __future__ import annotations

import csv
import io
import math
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.limits import F32_MAX, DataError

FORMATS = (".npy", ".npz", ".csv", ".mindrecord")
CHUNK = 1 << 18  # rows per streaming step
MISSING = ("", "NA")  # a missing cell as pandas and R write one (NaN, nan: float() reads them)
MAX_LEVELS = 1000  # levels of a --categorical column (more: an id or free text, not a category)

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


def npy_header(f: Any, path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    """A .npy header: shape, Fortran order, dtype; DataError when it is not one."""
    try:
        version = np.lib.format.read_magic(f)
        # NumPy's public readers (its private one is gone in NumPy 2); version 3 (UTF-8 field
        # names) holds structured arrays, which are not tables of numbers anyway
        read = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f".npy format version {version[0]}.{version[1]}")
        return read(f)
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
        shape, fortran, dtype = npy_header(f, path)
    if len(shape) != 2 or shape[1] < 1:
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
    shape, fortran, dtype = npy_header(f, path)
    _numeric(dtype, path, f"array {name}")
    if fortran:
        raise DataError(f"{path}: array {name} is Fortran-ordered; save it C-ordered")
    return f, shape, dtype


def _npz_chunks(path: Path, target: str, y_optional: bool = False
                ) -> tuple[list[str], Iterator[np.ndarray]]:
    if target:
        raise DataError(f"--target names a CSV column; in {path.name} the target is array y")
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{path}: not a valid .npz file ({e})") from None
    fx, sx, dx = _npz_member(z, "x", path)
    has_y = not y_optional or "y.npy" in z.namelist()  # rows to predict: x alone will do
    fy, sy, dy = _npz_member(z, "y", path) if has_y else (None, sx[:1], dx)
    if len(sx) != 2 or sy not in ((sx[0],), (sx[0], 1)):
        raise DataError(f"{path}: x must be (rows, features) and y (rows,) or (rows, 1) with "
                        f"the same rows; got x {sx}, y {sy}")

    def gen() -> Iterator[np.ndarray]:
        for i in range(0, sx[0], CHUNK):
            k = min(CHUNK, sx[0] - i)
            x = np.frombuffer(fx.read(k * sx[1] * dx.itemsize), dx).reshape(k, sx[1])
            if fy is None:
                yield x.astype(np.float64)
                continue
            y = np.frombuffer(fy.read(k * dy.itemsize), dy).reshape(k, 1)
            yield np.concatenate([x.astype(np.float64), y.astype(np.float64)], axis=1)

    return [f"x{j}" for j in range(sx[1])] + ["y"] * has_y, gen()


def _csv_columns(path: Path, target: str) -> tuple[list[str], int]:
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        header = next(csv.reader(f), None)
    if not header:
        raise DataError(f"{path}: a CSV needs a header row naming its columns")
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


def csv_number(cell: str) -> float:
    """A CSV cell as the reader takes it (float() without `_` digit groups or non-ASCII
    digits; an empty cell and `NA` are NaN, a missing value); ValueError if it is not a
    number."""
    if "_" in cell or not cell.isascii():  # float() takes 1_000 and '٣' (3), NumPy's reader
        raise ValueError(cell)  # does not: one meaning per file, whichever reader reads it
    return math.nan if cell.strip() in MISSING else float(cell)


def not_a_number(line: int, j: int, names: list[str], cell: str) -> str:
    """Where a cell that is not a number is, and what it holds."""
    return f"line {line}, column {j + 1} ({names[j]!r}): {cell.strip()!r} is not a number"


def is_missing(cell: str) -> bool:
    """An empty cell, `NA`, or a NaN (pandas' and R's spellings of a missing value)."""
    s = cell.strip()
    return s in MISSING or s.lower() == "nan"


@dataclass
class TableSpec:
    """How a CSV's columns become a table's: the features picked by name (`columns`; empty =
    every column but the target, in file order), text columns one-hot encoded (`categorical`:
    drop-first, one 0/1 column `name=level` per level but the first, the reference level of
    the sorted levels), their `levels` (None: learned from this file's rows, and set here by
    the reader) and whether a missing cell reads as NaN (`missing_ok`, for --drop_nonfinite)
    or is refused naming its line and column."""

    columns: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    levels: dict[str, list[str]] | None = None
    missing_ok: bool = True

    def selects(self) -> bool:
        """True when it picks or encodes columns (only a CSV's columns have names to pick)."""
        return bool(self.columns or self.categorical)

    def key(self) -> dict[str, Any]:
        """What of it shapes the table (a cache key's part)."""
        return {"columns": list(self.columns), "categorical": list(self.categorical),
                "levels": self.levels if self.categorical else None}


def _csv_features(path: Path, names: list[str], t: int, spec: TableSpec) -> list[int]:
    """The features' file columns, as --columns and --categorical pick them."""
    unknown = [c for c in (*spec.columns, *spec.categorical) if c not in names]
    if unknown:
        raise DataError(f"{path}: no column {unknown[0]!r} (named by --columns or "
                        f"--categorical); columns: {', '.join(names)}")
    if names[t] in (*spec.columns, *spec.categorical):
        raise DataError(f"{path}: {names[t]!r} is the target; --columns and --categorical "
                        "name features")
    feats = [names.index(c) for c in spec.columns] if spec.columns else \
        [j for j in range(len(names)) if j != t]
    outside = [c for c in spec.categorical if names.index(c) not in feats]
    if outside:
        raise DataError(f"--categorical {outside[0]} is not among --columns "
                        f"{','.join(spec.columns)}; list it there too")
    return feats


def _csv_bodies(path: Path) -> Iterator[tuple[list[str], list[int]]]:
    """A CSV's data lines, CHUNK lines at a time: the non-blank ones and their line numbers
    (blank lines are skipped, and still counted)."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        f.readline()
        row = 2  # file line of the first data row (the header is line 1)
        while True:
            lines = [ln for ln in (f.readline() for _ in range(CHUNK)) if ln]
            if not lines:
                return
            body = [(ln, row + i) for i, ln in enumerate(lines) if ln.strip()]
            if body:
                yield [b[0] for b in body], [b[1] for b in body]
            row += len(lines)


def _csv_cells(path: Path, body: list[str], lines: list[int], width: int) -> list[list[str]]:
    """The chunk's rows as cells, every row as long as the header."""
    try:
        rows = list(csv.reader(body))
    except csv.Error as e:
        raise DataError(f"{path}: lines {lines[0]}-{lines[-1]}: not readable as CSV ({e})"
                        ) from None
    for i, r in enumerate(rows):
        if len(r) != width:
            raise DataError(f"{path}: line {lines[i]} has {len(r)} cells, the header {width}")
    return rows


def _learn_levels(path: Path, names: list[str], cats: list[int]) -> dict[str, list[str]]:
    """Every level of each categorical column in the file (missing cells aside), sorted."""
    seen: list[set[str]] = [set() for _ in cats]
    for body, lines in _csv_bodies(path):
        for r in _csv_cells(path, body, lines, len(names)):
            for s, j in zip(seen, cats):
                if not is_missing(r[j]):
                    s.add(r[j].strip())
    levels = {}
    for s, j in zip(seen, cats):
        if not 2 <= len(s) <= MAX_LEVELS:
            why = (f"more than {MAX_LEVELS} levels" if s else "no level") if len(s) != 1 else \
                f"one level only ({next(iter(s))!r}), nothing to learn from"
            raise DataError(f"{path}: --categorical column {names[j]!r} holds {why}")
        levels[names[j]] = sorted(s)
    return levels


def _numbers(path: Path, cells: list[str], j: int, names: list[str],
             lines: list[int]) -> np.ndarray:
    """A column's cells as float64, a missing one NaN; DataError naming a non-number."""
    s = np.char.strip(np.array(cells, dtype=str))
    s = np.where((s == "") | (s == "NA"), "nan", s)
    try:
        if (np.char.find(s, "_") >= 0).any():  # float() takes 1_000, the CSV reader does not
            raise ValueError("_")
        return s.astype(np.float64)
    except ValueError:
        for i, c in enumerate(cells):
            try:
                csv_number(c)
            except ValueError:
                raise DataError(f"{path}: {not_a_number(lines[i], j, names, c)}") from None
        raise


def _one_hot(path: Path, cells: list[str], j: int, names: list[str], lines: list[int],
             levels: list[str]) -> np.ndarray:
    """A text column as drop-first 0/1 columns (levels[1:]), a missing cell NaN in each;
    DataError naming a level the training file did not hold."""
    s = np.char.strip(np.array(cells, dtype=str))
    missing = (s == "") | (s == "NA") | (np.char.lower(s) == "nan")
    lv = np.array(levels, dtype=str)
    code = np.minimum(np.searchsorted(lv, s), len(lv) - 1)
    unseen = ~missing & (lv[code] != s)
    if unseen.any():
        i = int(np.argmax(unseen))
        raise DataError(f"{path}: line {lines[i]}, column {j + 1} ({names[j]!r}): level "
                        f"{str(s[i])!r} is not among the training file's levels "
                        f"({', '.join(levels[:20])}{', ...' if len(levels) > 20 else ''})")
    out = (code[:, None] == np.arange(1, len(lv))).astype(np.float64)
    out[missing] = np.nan
    return out


def _parsed(path: Path, body: list[str], lines: list[int], names: list[str],
            order: list[int], levels: dict[str, list[str]]) -> np.ndarray:
    """A chunk through the csv module: the chosen columns in `order`, categorical ones
    encoded, the others never converted (text and dates in them are no error)."""
    rows = _csv_cells(path, body, lines, len(names))
    parts = []
    for j in order:
        cells = [r[j] for r in rows]
        if names[j] in levels:
            parts.append(_one_hot(path, cells, j, names, lines, levels[names[j]]))
        else:
            parts.append(_numbers(path, cells, j, names, lines)[:, None])
    return np.concatenate(parts, axis=1)


def _refuse_missing(path: Path, a: np.ndarray, body: list[str], lines: list[int],
                    names: list[str], source: list[int]) -> None:
    """DataError naming the first missing cell (NaN) of a chunk, by line and column."""
    nan = np.isnan(a)
    if not nan.any():
        return
    i = int(np.argmax(nan.any(axis=1)))
    j = source[int(np.argmax(nan[i]))]
    cell = next(csv.reader([body[i]]))[j].strip()
    raise DataError(f"{path}: line {lines[i]}, column {j + 1} ({names[j]!r}): {cell!r} is a "
                    "missing value; fill it in, or pass --drop_nonfinite to drop the rows "
                    "with a missing cell (counted)")


def _csv_chunks(path: Path, target: str,
                spec: TableSpec | None = None) -> tuple[list[str], Iterator[np.ndarray]]:
    spec = spec or TableSpec()
    names, t = _csv_columns(path, target)
    order = [*_csv_features(path, names, t, spec), t]
    cats = [j for j in order if names[j] in spec.categorical]
    if cats and spec.levels is None:
        spec.levels = _learn_levels(path, names, cats)
    levels = {names[j]: spec.levels[names[j]] for j in cats} if cats else {}  # type: ignore
    # a categorical column becomes `name=level` for each level but the reference (the first)
    expanded = [(j, f"{names[j]}={v}" if names[j] in levels else names[j])
                for j in order for v in levels.get(names[j], ["", ""])[1:]]
    out, source = [n for _, n in expanded], [j for j, _ in expanded]

    def gen() -> Iterator[np.ndarray]:
        for body, lines in _csv_bodies(path):
            a = None
            if not spec.selects():  # every column a number: NumPy's parser, 10x faster
                try:
                    # comments=None: a `#` is not a comment in a table of numbers (NumPy
                    # would read `4#junk` as 4 and drop a line starting with `#`)
                    a = np.loadtxt(io.StringIO("".join(body)), delimiter=",", ndmin=2,
                                   dtype=np.float64, quotechar='"', comments=None)
                    a = a[:, order] if a.shape[1] == len(names) else None
                except ValueError:  # a missing cell, or a mistake the slow path names
                    a = None
            if a is None:
                a = _parsed(path, body, lines, names, order, levels)
            if not spec.missing_ok:
                _refuse_missing(path, a, body, lines, names, source)
            yield a

    return out, gen()


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


def read_chunks(path: Path, target: str = "", what: str = "--data",
                spec: TableSpec | None = None, y_optional: bool = False
                ) -> tuple[list[str], Iterator[np.ndarray]]:
    """Column names (features..., target) and the rows as float64 chunks; `spec` picks and
    encodes a CSV's columns (TableSpec); `y_optional`: an .npz may hold x alone."""
    check_file(path, what)
    if path.suffix.lower() == ".csv":
        return _guarded(path, lambda: _csv_chunks(path, target, spec))
    if spec is not None and spec.selects():
        raise DataError(f"--columns and --categorical pick and encode a CSV's columns by name; "
                        f"{path.name} is a {path.suffix} file, numbers by position (select "
                        "and encode its columns before saving it)")
    npz = path.suffix.lower() == ".npz"  # (rows to predict: an .npz may lack y)
    return _guarded(path, lambda: _npz_chunks(path, target, y_optional) if npz else
                    READERS[path.suffix.lower()](path, target))



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



def _bad_cells(chunk: np.ndarray) -> np.ndarray:
    """NaN, inf, or finite but beyond float32's range (inf in the table training reads)."""
    with np.errstate(invalid="ignore"):
        return ~(np.abs(chunk) <= F32_MAX)


def validated_chunks(path: Path, target: str, drop_nonfinite: bool, what: str = "--data",
                     counts: dict[str, Any] | None = None, min_columns: int = 2,
                     spec: TableSpec | None = None) -> tuple[list[str], Iterator[np.ndarray]]:
    """`read_chunks` with the checks every reader of a table needs: at least one feature, every
    value a float32 number (else refused naming the first row, or the row dropped and counted
    in `counts["dropped"]`), and a reader's own failure turned into one line. `counts` also
    gets the rows kept and the largest magnitude (`max_abs`). `min_columns`: 1 for a table of
    features alone (train.predict). `spec` picks a CSV's columns; a missing cell of a CSV is
    refused naming its line and column unless `drop_nonfinite` (then its row is dropped)."""
    spec = spec or TableSpec()
    spec.missing_ok = drop_nonfinite
    names, chunks = read_chunks(path, target, what, spec, min_columns < 2)
    if len(names) < min_columns:
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

