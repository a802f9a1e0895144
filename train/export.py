"""`python -m train.export RUN_DIR --out model.mindir [--ckpt NAME]`: a trained model as a
MindIR for deployment (MindSpore Lite, or `mindspore.load` + `nn.GraphCell` on an NPU or CPU).

For a run on a source of yours (`--data MODULE:NAME`) the graph takes the source's x as given,
shape (rows, *x) for any number of rows, and returns what your network returns. Otherwise it
takes float32 features, shape (rows, features) for any number of rows, in the data's own
units, and returns the target (rows,) in its own units: the standardization is built in
(train/infer.py). Beside it, `<out>.json` (model.mindir.json) names the features in the order
the graph takes them, and the target; they are also printed. A `--categorical` column is
several of them, `col=level` (0/1) for each level but the reference: the json lists each such
column's levels and reference level (`categorical`), and how to encode it (`encoding`). A run
with a feature float32 cannot hold to its spread (1e7 + a small signal) is refused: raw float32
input would lose it.
The files appear only complete. Exit codes: 0; 2 bad input (one line); 74 the files could not
be written.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from train.infer import InferError, RunModel, load_run
from train.output import IO_EXIT, one_line


def export(model: RunModel, out: Path) -> Path:
    """Write `out` (.mindir) and its features file; return the features file's path."""
    import mindspore as ms

    ms.set_device("CPU")
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    features = len(model.features)
    if model.x_spec is None:  # features in the data's units, standardization built in
        net, shape, dtype = model.network(), [features], "float32"
        what = {"features": model.features, "target": model.target,
                "input": f"float32 (rows, {features}), the features in this order, in the "
                         "data's units",
                "output": "float32 (rows,), the target in its own units"}
        if model.levels:  # the deployer encodes these columns as training did
            what["categorical"] = {
                c: {"levels": lv, "reference": lv[0], "columns": [f"{c}={v}" for v in lv[1:]]}
                for c, lv in model.levels.items()}
            what["encoding"] = ("drop-first one-hot: feature `col=level` is 1 when column col "
                                "holds that level, else 0; the reference level (the first, "
                                "sorted) is all zeros")
    else:  # a source of yours: its x as given, a dynamic batch dimension
        (shape, dtype), net = model.x_spec, model.model()
        what = {"input": f"{dtype} (rows, {', '.join(map(str, shape))}), as your source's x",
                "output": "what your network returns, one row per input row"}
    meta = Path(f"{out}.json")  # model.mindir.json: never another file of that folder
    try:
        ms.export(net, ms.Tensor(shape=[None, *shape], dtype=getattr(ms, dtype)),
                  file_name=str(work / "model.mindir"), file_format="MINDIR")
        # ms.export makes the file read-only for its owner (0400): the user's umask instead
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(work / "model.mindir", 0o666 & ~umask)
        (work / "model.json").write_text(json.dumps({
            **what, "run": str(model.checkpoint.parent.parent),
            "checkpoint": model.checkpoint.stem}, indent=2) + "\n")
        # Both complete before either is in place; the features file first, so that a MindIR
        # never appears without the file that says what its inputs are.
        os.replace(work / "model.json", meta)
        os.replace(work / "model.mindir", out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return meta


def main(argv: list[str] | None = None) -> int:
    """The command line; see the module docstring."""
    p = argparse.ArgumentParser(prog="python -m train.export",
                                description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("run_dir", type=Path, help="a run folder (python -m train --out ...)")
    p.add_argument("--out", type=Path, required=True, help="the MindIR file (*.mindir)")
    p.add_argument("--ckpt", default="", help="a checkpoint step or name (default: the newest "
                   "good one)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.out.suffix != ".mindir":
            raise InferError(f"--out {args.out}: a MindIR file's name ends in .mindir")
        if not args.out.parent.is_dir():
            raise InferError(f"--out {args.out}: no folder {args.out.parent}")
        for path in (args.out, Path(f"{args.out}.json")):  # replaced only if a file
            if path.exists() and not path.is_file():
                raise InferError(f"--out: {path} exists and is not a file (the export writes "
                                 f"{args.out} and {args.out}.json); choose another name")
        model = load_run(args.run_dir, args.ckpt)
        lost = model.float32_features()
        if lost:  # the graph takes raw float32 features: these would be rounded away
            raise InferError(f"feature {lost[0]!r} holds values too large for their spread to "
                             "pass through float32 (its mean is beyond 256 standard "
                             "deviations): a MindIR of raw float32 features would predict "
                             "wrongly; centre that column in your data, or use "
                             "python -m train.predict (float64 on the host)")
    except InferError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    try:
        meta = export(model, args.out)
    except OSError as e:
        print(f"error: cannot write {args.out} and {args.out}.json ({e.strerror or e})",
              file=sys.stderr)
        return IO_EXIT
    if model.x_spec is not None:
        print(f"wrote {args.out} and {meta} (checkpoint {model.checkpoint.stem}): input "
              f"{model.x_spec[1]} (rows, {', '.join(map(str, model.x_spec[0]))}), as your "
              "source's x; output as your network returns it")
        return 0
    print(f"wrote {args.out} and {meta} (checkpoint {model.checkpoint.stem}): input float32 "
          f"(rows, {len(model.features)}) = {', '.join(model.features)}; output "
          f"{model.target} (rows,), the data's own units")
    return 0


if __name__ == "__main__":
    sys.exit(main())
