"""`msdp convert IN OUT [--target NAME]`: convert a table of rows between the
formats the trainer reads (.csv, .npy, .npz, .mindrecord), streaming: a large CSV is parsed
once, and the result can be mapped (.npy) or fed to MindSpore's own tools (.mindrecord).

The rows keep their order; the output's columns are the features then the target (a CSV's
`--target` column, default its last). Every problem is one line and exit 2; OUT is written
under a temporary name and appears only when complete.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.formats import FORMATS, NpyWriter, validated_chunks
from pipeline.limits import DataError


class _CsvWriter:
    def __init__(self, path: Path, names: list[str]) -> None:
        self.f = open(path, "w")  # noqa: SIM115 - closed by close()
        self.f.write(",".join(names) + "\n")

    def write(self, rows: np.ndarray) -> None:
        np.savetxt(self.f, rows, delimiter=",", fmt="%.9g")

    def close(self) -> None:
        self.f.close()


class _MindRecordWriter:
    def __init__(self, path: Path, names: list[str]) -> None:
        from mindspore.mindrecord import FileWriter

        self.w = FileWriter(str(path), shard_num=1, overwrite=True)
        self.w.set_page_size(1 << 20)  # the default 32 MB pages make small tables huge
        self.w.add_schema({"x": {"type": "float32", "shape": [len(names) - 1]},
                           "y": {"type": "float32", "shape": [1]}}, "rows")

    def write(self, rows: np.ndarray) -> None:
        rows = rows.astype(np.float32)
        self.w.write_raw_data([{"x": r[:-1], "y": r[-1:]} for r in rows])

    def close(self) -> None:
        self.w.commit()


class _NpzWriter:
    """x and y through a temporary .npy (np.savez needs whole arrays: it maps the table)."""

    def __init__(self, path: Path, names: list[str]) -> None:
        self.path, self.tmp = path, path.with_name(f".{path.name}.table.npy")
        self.npy = NpyWriter(self.tmp, len(names))

    def write(self, rows: np.ndarray) -> None:
        self.npy.write(rows)

    def close(self) -> None:
        self.npy.close()
        table = np.load(self.tmp, mmap_mode="r")
        with open(self.path, "wb") as f:
            np.savez(f, x=table[:, :-1], y=table[:, -1])
        self.tmp.unlink()


def convert(src: Path, dst: Path, target: str = "", drop_nonfinite: bool = False,
            counts: dict[str, Any] | None = None) -> int:
    """Write src's rows to dst in dst's format; the number of rows (`counts` gets the rows
    dropped). The rows pass the checks training makes (`validated_chunks`); dst appears only
    complete, and an existing dst is untouched until then."""
    kind = dst.suffix.lower()
    if kind not in FORMATS:
        raise DataError(f"{dst}: unknown output format {dst.suffix or '(no extension)'}; "
                        f"accepted: {', '.join(FORMATS)}")
    names, chunks = validated_chunks(src, target, drop_nonfinite, "input", counts)
    if dst.exists() and dst.resolve() == src.resolve():
        raise DataError(f"{dst} is the input file")
    # Everything is written into a private folder next to dst, then moved into place: a
    # MindRecord file records its own name (it must keep it) and has a companion .db.
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    except OSError as e:
        raise DataError(f"{dst}: cannot write it ({e.strerror or e})") from None
    try:
        tmp = work / dst.name
        writer = WRITERS[kind](tmp, names)
        rows = 0
        for chunk in chunks:
            writer.write(chunk)
            rows += len(chunk)
        writer.close()
        if kind == ".mindrecord":
            os.replace(f"{tmp}.db", f"{dst}.db")
        os.replace(tmp, dst)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


WRITERS: dict[str, Any] = {".npy": lambda p, n: NpyWriter(p, len(n)), ".csv": _CsvWriter,
                           ".npz": _NpzWriter, ".mindrecord": _MindRecordWriter}


if __name__ == "__main__":
    # `python -m pipeline.convert`: the `msdp convert` command, which lives in train/cli.py with
    # every other command's parser and exit codes; pipeline/ never imports train/, so this
    # form hands over to it as a program.
    # -P: not the working folder first on the import path, where a train.py of yours would be
    # imported in the package's place. Python 3.11+ only (train.launch.package_python covers
    # every version, but pipeline/ cannot import it; the alias is for 3.11, as the quick start).
    safe = ["-P"] if sys.version_info >= (3, 11) else []
    os.execv(sys.executable, [sys.executable, *safe, "-m", "train.cli", "convert", *sys.argv[1:]])
