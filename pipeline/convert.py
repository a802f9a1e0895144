"""`python -m pipeline.convert IN OUT [--target NAME]`: convert a table of rows between the
formats the trainer reads (.csv, .npy, .npz, .mindrecord), streaming: a large CSV is parsed
once, and the result can be mapped (.npy) or fed to MindSpore's own tools (.mindrecord).

The rows keep their order; the output's columns are the features then the target (a CSV's
`--target` column, default its last). Every problem is one line and exit 2; OUT is written
under a temporary name and appears only when complete.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from pipeline.files import FORMATS, DataError, NpyWriter, read_chunks


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
        self.path, self.tmp = path, path.with_name(f".{path.name}.{os.getpid()}.npy")
        self.npy = NpyWriter(self.tmp, len(names))

    def write(self, rows: np.ndarray) -> None:
        self.npy.write(rows)

    def close(self) -> None:
        self.npy.close()
        table = np.load(self.tmp, mmap_mode="r")
        with open(self.path, "wb") as f:
            np.savez(f, x=table[:, :-1], y=table[:, -1])
        self.tmp.unlink()


def convert(src: Path, dst: Path, target: str = "") -> int:
    """Write src's rows to dst in dst's format; the number of rows."""
    if dst.suffix.lower() not in FORMATS:
        raise DataError(f"{dst}: unknown output format {dst.suffix or '(no extension)'}; "
                        f"accepted: {', '.join(FORMATS)}")
    if dst.resolve() == src.resolve():
        raise DataError(f"{dst} is the input file")
    names, chunks = read_chunks(src, target)
    kind = dst.suffix.lower()
    # MindRecord records its own file name inside: it is written in place (and removed if the
    # conversion fails); every other format appears under its name only when complete.
    tmp = dst if kind == ".mindrecord" else dst.with_name(f".{dst.stem}.{os.getpid()}.tmp"
                                                          f"{dst.suffix}")
    if kind == ".mindrecord":
        for part in (dst, Path(f"{dst}.db")):
            part.unlink(missing_ok=True)
    writer = (NpyWriter(tmp, len(names)) if kind == ".npy" else _CsvWriter(tmp, names)
              if kind == ".csv" else _NpzWriter(tmp, names) if kind == ".npz"
              else _MindRecordWriter(tmp, names))
    rows = 0
    try:
        for chunk in chunks:
            writer.write(chunk)
            rows += len(chunk)
        writer.close()
        if tmp != dst:
            tmp.replace(dst)
    except BaseException:
        for part in (tmp, Path(f"{tmp}.db")):
            part.unlink(missing_ok=True)
        raise
    return rows


def main(argv: list[str] | None = None) -> int:
    """The command line; exit 0, or 2 with one line."""
    p = argparse.ArgumentParser(prog="python -m pipeline.convert",
                                description=__doc__.split("\n")[0].split(": ", 1)[1])
    p.add_argument("src", type=Path, help="input: " + ", ".join(FORMATS))
    p.add_argument("dst", type=Path, help="output, by its extension")
    p.add_argument("--target", default="", help="the target column of a CSV input")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        rows = convert(args.src, args.dst, args.target)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {args.dst}: cannot write it ({e.strerror or e})", file=sys.stderr)
        return 2
    print(f"{args.dst}: {rows} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
