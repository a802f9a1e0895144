"""`python -m train.predict RUN_DIR --data FILE [--out FILE] [--json] [--ckpt NAME]`: a trained
model's predictions, in the target's own units, for every row of FILE.

FILE is read as `--data` reads files (.csv, .npy, .npz, .mindrecord), with the same checks. A
CSV's columns are matched to the run's features by name (any order; other columns ignored); the
other formats hold the features by position (then, optionally, the target). With `--out`, the
predictions go to a CSV with one column, `prediction`, in FILE's row order; without it, to
stdout. When FILE holds the target, its metrics follow: the run's loss (Huber with its delta),
MSE, MAE and R², all in the target's units (`--json`: one JSON object on stdout instead of the
line). Exit codes: 0; 2 bad input (one line); 74 `--out` could not be written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.fileio import tmp_name
from pipeline.formats import validated_chunks
from pipeline.limits import DataError
from train.infer import InferError, RunModel, load_run
from train.output import IO_EXIT, one_line


def _columns(model: RunModel, names: list[str], path: Path) -> tuple[list[int], int | None]:
    """Where FILE holds each feature, and the target (None: absent)."""
    if path.suffix.lower() == ".csv":
        missing = [f for f in model.features if f not in names]
        if missing:
            raise DataError(f"{path} has no column {missing[0]!r}, a feature of this run "
                            f"(features: {', '.join(model.features)}; the file's columns: "
                            f"{', '.join(names)})")
        target = names.index(model.target) if model.target in names else None
        return [names.index(f) for f in model.features], target
    f = len(model.features)
    if len(names) not in (f, f + 1):
        raise DataError(f"{path} has {len(names)} columns; this run's model takes {f} "
                        f"feature(s) ({', '.join(model.features)}), optionally then the target")
    return list(range(f)), f if len(names) == f + 1 else None


def predict_file(model: RunModel, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Predictions for every row of `path`, and its target if it holds one."""
    names, chunks = validated_chunks(path, "", False, "--data", min_columns=1)
    cols, target = _columns(model, names, path)
    net = model.network()
    preds, ys = [], []
    for chunk in chunks:
        preds.append(model.predict(chunk[:, cols], net).astype(np.float64))
        if target is not None:
            ys.append(chunk[:, target])
    if not preds:
        raise DataError(f"{path} holds no rows")
    return np.concatenate(preds), (np.concatenate(ys) if target is not None else None)


def metrics(model: RunModel, pred: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """The run's loss, MSE, MAE and R² of predictions against targets (the target's units)."""
    e = pred - y
    d = model.cfg.delta
    c = np.clip(e, -d, d)
    sst = float(np.sum((y - y.mean()) ** 2))
    return {"rows": len(y), f"{model.cfg.loss}_loss": float(np.mean(
                c * (e - 0.5 * c) if model.cfg.loss == "huber" else e * e)),
            "mse": float(np.mean(e * e)), "mae": float(np.mean(np.abs(e))),
            "r2": 1.0 - float(np.sum(e * e)) / sst if sst > 0 else None,
            "delta": d if model.cfg.loss == "huber" else None, "target": model.target,
            "units": "the target's own units", "checkpoint": model.checkpoint.stem}


def _write_csv(path: Path, pred: np.ndarray) -> None:
    """The predictions as a one-column CSV, atomically."""
    tmp = tmp_name(path)
    try:
        with open(tmp, "w") as f:
            f.write("prediction\n")
            np.savetxt(f, pred, fmt="%.9g")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _line(path: Path, m: dict[str, Any], loss: str) -> str:
    r2 = "n/a" if m["r2"] is None else f"{m['r2']:.4f}"
    return (f"{path}: {m['rows']} rows; {loss} loss {m[f'{loss}_loss']:.6g}, MSE "
            f"{m['mse']:.6g}, MAE {m['mae']:.6g}, R² {r2} (target {m['target']!r}, its own "
            f"units; checkpoint {m['checkpoint']})")


def main(argv: list[str] | None = None) -> int:
    """The command line; see the module docstring."""
    p = argparse.ArgumentParser(prog="python -m train.predict",
                                description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("run_dir", type=Path, help="a run folder (python -m train --out ...)")
    p.add_argument("--data", type=Path, required=True, help="rows to predict (.csv, .npy, "
                   ".npz, .mindrecord)")
    p.add_argument("--out", type=Path, help="write the predictions here (CSV); default stdout")
    p.add_argument("--json", action="store_true", help="metrics as one JSON object")
    p.add_argument("--ckpt", default="", help="a checkpoint step or name (default: the newest "
                   "good one)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        model = load_run(args.run_dir, args.ckpt)
        pred, y = predict_file(model, args.data)
    except (InferError, DataError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    try:
        if args.out:
            _write_csv(args.out, pred)
        elif not args.json:
            sys.stdout.write("prediction\n" + "".join(f"{v:.9g}\n" for v in pred))
    except OSError as e:
        print(f"error: cannot write {args.out} ({e.strerror or e}); nothing was replaced",
              file=sys.stderr)
        return IO_EXIT
    found = metrics(model, pred, y) if y is not None else {"rows": len(pred)}
    if args.out:
        found["out"] = str(args.out)
    if args.json:
        print(json.dumps(found))
    elif y is not None:
        print(_line(args.data, found, model.cfg.loss), file=sys.stdout if args.out else sys.stderr)
    elif args.out:
        print(f"{args.data}: {len(pred)} rows predicted into {args.out} (no {model.target!r} "
              "column: no metrics)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
