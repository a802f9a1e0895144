"""`msdp predict RUN_DIR --data FILE [--out FILE] [--json] [--ckpt NAME] [--keep
COLS]`: a trained model's predictions, in the target's own units, for every row of FILE.

FILE is read as `--data` reads files (.csv, .npy, .npz, .mindrecord); for a run on a source of
yours (`--data MODULE:NAME`), a .npy of inputs shaped like the source's x (or an .npz's `x`),
with one prediction row per input row written to `--out p.npy`. A CSV's columns are
matched to the run's features by name (any order; other columns, text or dates, are not read);
a `--categorical` column is encoded with the levels the run learned (a level it did not see is
refused, naming it). The other formats hold the features by position (then, optionally, the
target). A feature that is missing (empty, NA, NaN) or not a finite number is refused naming
its line and column. With `--out`, the predictions go to a CSV with one column, `prediction`,
in FILE's row order (`--keep id,date`: those columns of FILE first, as they are); without it,
to stdout. When FILE holds the target, its metrics follow, over the rows that have one (a
missing target is a row without a label yet): the run's loss (Huber with its delta), MSE, MAE
and R², all in the target's units (`--json`: one JSON object on stdout instead, with the
predictions, and the kept columns, when there is no `--out`).
Exit codes: 0; 2 bad input (one line); 74 `--out` could not be written (train/exits.py).
`python -m train.predict ...` is the same command.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.fileio import finite_json, write_atomic
from pipeline.formats import csv_number, is_missing, not_a_number, validated_chunks
from pipeline.limits import F32_MAX, DataError
from train.config import LOSSES, is_import_path
from train.converge import loss_per_row
from train.exits import CommandParser, handled
from train.infer import RunModel, load_run
from train.output import OutputError

CHUNK = 1 << 16  # rows per network call


Chunk = tuple[np.ndarray, np.ndarray, list[list[str]]]  # features, target, kept cells


def _csv_chunks(model: RunModel, path: Path, keep: tuple[str, ...] = ()) -> Iterator[Chunk]:
    """A CSV's features (by name; a categorical column encoded with the run's levels),
    target (NaN where missing, all NaN if absent) and the cells of the `keep` columns, in
    chunks: the other columns are not read, whatever they hold."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.reader(f)
        try:
            yield from _csv_rows(model, path, reader, keep)
        except csv.Error as e:  # a cell over the csv module's size limit, an unclosed quote
            raise DataError(f"{path}: line {reader.line_num}: not readable as CSV ({e})"
                            ) from None


def _plan(model: RunModel, names: list[str], path: Path,
          keep: tuple[str, ...]) -> list[tuple[int, str | None]]:
    """For each feature of the model: its file column, and the level it is 1 for (a
    categorical column's `col=level`; None for a number)."""
    dummies = {f"{c}={v}": (c, v) for c, lv in (model.levels or {}).items() for v in lv[1:]}
    raw = [dummies[f][0] if f in dummies else f for f in model.features]
    missing = [c for c in raw if c not in names]
    if missing:
        raise DataError(f"{path} has no column {missing[0]!r}, a feature of this run "
                        f"(features: {', '.join(dict.fromkeys(raw))}; the file's columns: "
                        f"{', '.join(names) or 'none'})")
    absent = [k for k in keep if k not in names]
    if absent:
        raise DataError(f"{path} has no column {absent[0]!r} for --keep (the file's columns: "
                        f"{', '.join(names) or 'none'})")
    twice = [c for c in [*raw, model.target, *keep] if names.count(c) > 1]
    if twice:
        raise DataError(f"{path}: the header names column {twice[0]!r} twice; which one is "
                        "meant is not known")
    return [(names.index(r), dummies[f][1] if f in dummies else None)
            for f, r in zip(model.features, raw)]


def _csv_rows(model: RunModel, path: Path, reader: Any,
              keep: tuple[str, ...]) -> Iterator[Chunk]:
    names = [h.strip() for h in next(reader, [])]
    plan = _plan(model, names, path, keep)
    levels = {names.index(c): lv for c, lv in (model.levels or {}).items()}
    kept = [names.index(k) for k in keep]
    target = names.index(model.target) if model.target in names else None
    xs: list[list[float]] = []
    ys: list[float] = []
    ks: list[list[str]] = []
    for row in reader:
        if len(row) <= 1 and not "".join(row).strip():
            continue  # a blank line (a row of empty cells is a row: refused below)
        line = reader.line_num
        if len(row) != len(names):
            raise DataError(f"{path}: line {line} has {len(row)} cells, the header "
                            f"{len(names)}")
        xs.append([_cell(row, j, names, path, line, "a feature must be a finite number")
                   if level is None else
                   float(_level(row, j, names, path, line, levels[j]) == level)
                   for j, level in plan])
        ys.append(_label(row, target, names, path, line))
        ks.append([row[k] for k in kept])
        if len(xs) == CHUNK:
            yield np.array(xs), np.array(ys), ks
            xs, ys, ks = [], [], []
    if xs:
        yield np.array(xs), np.array(ys), ks


def _level(row: list[str], j: int, names: list[str], path: Path, line: int,
           levels: list[str]) -> str:
    """A categorical cell: one of the training file's levels, else DataError naming it."""
    v = row[j].strip()
    if is_missing(v):
        raise DataError(f"{path}: line {line}, column {j + 1} ({names[j]!r}) is missing "
                        f"({v!r}); a categorical feature must be one of its levels")
    if v not in levels:
        raise DataError(f"{path}: line {line}, column {j + 1} ({names[j]!r}): level {v!r} was "
                        f"not in the training file (its levels: {', '.join(levels[:20])}"
                        f"{', ...' if len(levels) > 20 else ''})")
    return v


def _label(row: list[str], target: int | None, names: list[str], path: Path,
           line: int) -> float:
    """The target of a row: NaN when absent or missing (a row without a label yet)."""
    if target is None or is_missing(row[target]):
        return float("nan")
    return _cell(row, target, names, path, line,
                 "a target must be a finite number, or missing for a row without one")


def _cell(row: list[str], j: int, names: list[str], path: Path, line: int, rule: str) -> float:
    """Cell j of a row as a finite number; DataError naming it and `rule` otherwise."""
    if is_missing(row[j]):
        raise DataError(f"{path}: line {line}, column {j + 1} ({names[j]!r}) is missing "
                        f"({row[j].strip()!r}); {rule}")
    try:
        v = csv_number(row[j])
    except ValueError:
        raise DataError(f"{path}: {not_a_number(line, j, names, row[j])}") from None
    if not abs(v) <= F32_MAX:  # the model computes in float32: 1e300 would predict inf
        what = f"{row[j].strip()!r}, beyond float32's range (±3.4e38)" if np.isfinite(v) \
            else f"{v}"
        raise DataError(f"{path}: line {line}, column {j + 1} ({names[j]!r}) is {what}; {rule}")
    return v


def _other_chunks(model: RunModel, path: Path, keep: tuple[str, ...] = ()) -> Iterator[Chunk]:
    """.npy, .npz, .mindrecord: the features by position, then optionally the target."""
    if keep:
        raise DataError(f"--keep names CSV columns; {path.name} is a {path.suffix} file")
    names, chunks = validated_chunks(path, "", False, "--data", min_columns=1)
    f = len(model.features)
    if len(names) not in (f, f + 1):
        raise DataError(f"{path} has {len(names)} columns; this run's model takes {f} "
                        f"feature(s) ({', '.join(model.features)}), optionally then the target")
    for chunk in chunks:
        yield chunk[:, :f], (chunk[:, f] if len(names) == f + 1 else
                             np.full(len(chunk), np.nan)), []


def predict_file(model: RunModel, path: Path, keep: tuple[str, ...] = ()
                 ) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
    """Predictions for every row of `path`, its target (NaN where it has none) and the cells
    of its `keep` columns (a CSV's), row by row."""
    from pipeline.formats import check_file

    check_file(path)
    chunks = _csv_chunks if path.suffix.lower() == ".csv" else _other_chunks
    net = model.model()
    preds, ys, kept = [], [], []
    for x, y, k in chunks(model, path, keep):
        preds.append(model.predict(x, net))
        ys.append(y)
        kept += k
    if not preds:
        raise DataError(f"{path} holds no rows")
    pred = np.concatenate(preds)
    if not np.isfinite(pred).all():  # float32 overflow: inputs far beyond the training rows'
        row = int(np.argmin(np.isfinite(pred).ravel()))
        raise DataError(f"{path}: row {row + 1} of the data gives a prediction beyond float32's "
                        "range (its features are far outside the training rows'); nothing "
                        "was written")
    return pred, np.concatenate(ys), kept


def _read_x(model: RunModel, path: Path) -> np.ndarray:
    """A source of yours: the rows of a .npy (or an .npz's `x`), shaped and typed like the
    source's x."""
    shape, dtype = model.x_spec
    if path.suffix.lower() not in (".npy", ".npz"):
        raise DataError(f"--data {path}: this run trained on a source of yours; give its inputs "
                        f"as a .npy of shape (rows, {', '.join(map(str, shape))}) {dtype}")
    try:
        with open(path, "rb") as f:
            got = np.load(f, allow_pickle=False)
            if isinstance(got, np.lib.npyio.NpzFile):
                if "x" not in got.files:
                    raise DataError(f"--data {path}: an .npz needs an array named x (it has "
                                    f"{', '.join(got.files) or 'none'})")
                got = got["x"]
            x = np.asarray(got)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"--data {path}: cannot read it as NumPy data ({str(e)[:100]})") from None
    if x.ndim == 0 or tuple(x.shape[1:]) != tuple(shape) or len(x) == 0:
        raise DataError(f"--data {path} holds {x.dtype}{list(x.shape)}; this run's inputs are "
                        f"(rows, {', '.join(map(str, shape))}) {dtype}, at least one row")
    if x.dtype != np.dtype(dtype) and not np.can_cast(x.dtype, dtype, "safe"):
        raise DataError(f"--data {path} holds {x.dtype} values; this run's inputs are {dtype} "
                        f"(convert them: x.astype('{dtype}'))")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError(f"--data {path}: row {int(np.argwhere(~np.isfinite(x))[0][0])} holds a "
                        "value that is not a finite number")
    return x.astype(dtype, copy=False)


def predict_rows(model: RunModel, x: np.ndarray) -> np.ndarray:
    """A source of yours: one output row per input row, through the network as trained."""
    net = model.model()
    step = max(1, (1 << 22) // max(1, int(np.prod(x.shape[1:]))))  # ~16 MB of input a call
    return np.concatenate([model.predict_raw(x[i:i + step], net)
                           for i in range(0, len(x), step)])


def _predict_source_run(model: RunModel, args: argparse.Namespace) -> int:
    """`--data x.npy --out p.npy` for a run on a source of yours (no metrics: its targets are
    yours to compare)."""
    if args.out is None or args.out.suffix.lower() != ".npy":
        raise DataError("--out: this run trained on a source of yours; its predictions go "
                        "to a .npy file (--out p.npy)")
    pred = predict_rows(model, _read_x(model, args.data))
    buf = io.BytesIO()
    np.save(buf, pred)
    try:
        write_atomic(args.out, buf.getvalue())
    except OSError as e:
        raise _not_written(args.out, e) from None
    found = {"predicted": len(pred), "out": str(args.out), "shape": list(pred.shape),
             "checkpoint": model.checkpoint.stem}
    print(json.dumps(found) if args.json else f"{args.data}: {len(pred)} rows predicted into "
          f"{args.out} ({pred.dtype}{list(pred.shape)}; checkpoint {model.checkpoint.stem})")
    return 0


def metrics(model: RunModel, pred: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """The run's loss, MSE, MAE and R² of predictions against targets (the target's units),
    over the rows that have one."""
    labelled = np.isfinite(y)
    pred, y = pred[labelled], y[labelled]
    e = pred - y
    d = model.cfg.delta
    sst = float(np.sum((y - y.mean()) ** 2))
    builtin = model.cfg.loss in LOSSES  # (a loss of yours: MSE, MAE and R² only)
    return {"rows": len(y), **({f"{model.cfg.loss}_loss": float(np.mean(
                loss_per_row(e, model.cfg.loss, d)))} if builtin else {}),
            "mse": float(np.mean(e * e)), "mae": float(np.mean(np.abs(e))),
            "r2": 1.0 - float(np.sum(e * e)) / sst if sst > 0 else None,
            "delta": d if model.cfg.loss == "huber" else None, "target": model.target,
            "units": "the target's own units", "checkpoint": model.checkpoint.stem}


def _same_file(a: Path, b: Path) -> bool:
    """True when writing `a` would replace `b` (the same file, by any name)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): compare where they would be
        try:
            return a.resolve() == b.resolve()
        except (OSError, RuntimeError):  # a symlink loop: no file to replace there
            return False


def _check_out(out: Path, run_dir: Path, model: RunModel, data: Path) -> None:
    """--out names a new file of the user's: never inside the run folder (its config,
    checkpoints, lock and logs are the run's; a later predict or --resume reads them), never
    the rows to predict, the run's training data or its held-out file."""
    try:
        where, run = out.resolve(), run_dir.resolve()
    except (OSError, RuntimeError):  # a symlink loop: refused as a path nothing can be written to
        raise DataError(f"--out {out}: cannot resolve it (a symlink loop?)") from None
    if where.exists() and not (where.is_file() or where.is_dir()):  # renamed over, it'd be gone
        raise DataError(f"--out {out} exists and is not a regular file (a device, pipe or "
                        "socket); name a file")
    if where == run or run in where.parents:
        raise DataError(f"--out {out} is inside the run folder {run_dir}, whose files are the "
                        "run's; write the predictions outside it")
    inputs = {"the file to predict": data, "the run's training data": model.cfg.data,
              "the run's held-out file": model.cfg.eval_data}
    for what, path in inputs.items():  # (a source of yours, MODULE:NAME, is no file)
        if path and not is_import_path(str(path)) and _same_file(out, Path(path)):
            raise DataError(f"--out {out} is {what}; choose another name")


def _line(path: Path, m: dict[str, Any], loss: str) -> str:
    r2 = "n/a" if m["r2"] is None else f"{m['r2']:.4f}"
    loss_part = f"{loss} loss {m[f'{loss}_loss']:.6g}, " if f"{loss}_loss" in m else ""
    return (f"{path}: {m['rows']} rows with a target; {loss_part}MSE "
            f"{m['mse']:.6g}, MAE {m['mae']:.6g}, R² {r2} (target {m['target']!r}, its own "
            f"units; checkpoint {m['checkpoint']})")


def _table_text(pred: np.ndarray, keep: tuple[str, ...], kept: list[list[str]]) -> str:
    """The predictions as CSV: the kept columns (as the input held them), then
    `prediction`."""
    if not keep:
        return "prediction\n" + "".join(f"{v:.9g}\n" for v in pred)  # one-column CSV
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*keep, "prediction"])
    w.writerows([*k, f"{v:.9g}"] for k, v in zip(kept, pred))
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    """The command line (`msdp predict`); see the module docstring."""
    return handled(_main, sys.argv[1:] if argv is None else argv)


def _not_written(out: Path, e: OSError) -> OutputError:
    return OutputError(f"cannot write {out} ({e.strerror or e}); nothing was replaced")


def _main(argv: list[str]) -> int:
    """`main`'s body: bad input raises (train/exits.py says the line and the code)."""
    p = CommandParser(prog="msdp predict",
                      description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("run_dir", type=Path, help="a run folder (msdp fit --out ...)")
    p.add_argument("--data", type=Path, required=True, help="rows to predict (.csv, .npy, "
                   ".npz, .mindrecord)")
    p.add_argument("--out", type=Path, help="write the predictions here (CSV); default stdout")
    p.add_argument("--json", action="store_true", help="one JSON object: the metrics, and "
                   "the predictions when there is no --out")
    p.add_argument("--ckpt", default="", help="a checkpoint step or name (default: the newest "
                   "good one)")
    p.add_argument("--keep", default="", help="CSV columns carried into the output before the "
                   "prediction, e.g. id or id,date")
    args = p.parse_args(argv)
    keep = tuple(k.strip() for k in args.keep.split(",")) if args.keep.strip() else ()
    if not all(keep) or len(set(keep)) != len(keep):
        raise DataError(f"--keep {args.keep}: comma-separated column names, each once")
    model = load_run(args.run_dir, args.ckpt)
    if args.out:
        _check_out(args.out, args.run_dir, model, args.data)
    if model.x_spec is not None:
        if keep:
            raise DataError("--keep names CSV columns; this run trained on a source of "
                            "yours (its predictions are a .npy in input order)")
        return _predict_source_run(model, args)
    pred, y, kept = predict_file(model, args.data, keep)
    try:
        if args.out or not args.json:  # (with --json alone they go into the JSON object)
            text = _table_text(pred, keep, kept)
            if args.out:
                write_atomic(args.out, text)
            else:
                sys.stdout.write(text)
    except OSError as e:
        raise _not_written(args.out, e) from None
    _print_found(model, args, pred, y, keep, kept)
    return 0


def _print_found(model: RunModel, args: argparse.Namespace, pred: np.ndarray, y: np.ndarray,
                 keep: tuple[str, ...], kept: list[list[str]]) -> None:
    """The metrics (rows with a target), or what was written; JSON with --json."""
    labelled = bool(np.isfinite(y).any())
    found = metrics(model, pred, y) if labelled else {"rows": len(pred)}
    found["predicted"] = len(pred)
    if args.out:
        found["out"] = str(args.out)
    elif args.json:
        found["predictions"] = [float(v) for v in pred]
        if keep:
            found["kept"] = {k: [r[i] for r in kept] for i, k in enumerate(keep)}
    if args.json:
        print(json.dumps(finite_json(found)))
    elif labelled:
        print(_line(args.data, found, model.cfg.loss), file=sys.stdout if args.out else sys.stderr)
    elif args.out:
        print(f"{args.data}: {len(pred)} rows predicted into {args.out} (no {model.target!r} "
              "values: no metrics)")

if __name__ == "__main__":
    sys.exit(main())
