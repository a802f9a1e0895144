"""`python -m train.export RUN_DIR --out model.mindir [--ckpt NAME]`: a trained model as a
MindIR for deployment (MindSpore Lite, or `mindspore.load` + `nn.GraphCell` on an NPU or CPU).

The graph takes float32 features, shape (rows, features) for any number of rows, in the data's
own units, and returns the target (rows,) in its own units: the standardization is built in
(train/infer.py). Beside it, `<out>.json` (model.mindir.json) names the features in the order
the graph takes them, and the target; they are also printed. A run with a feature float32
cannot hold to its spread (1e7 + a small signal) is refused: raw float32 input would lose it.
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

from pipeline.fileio import write_atomic
from train.infer import InferError, RunModel, load_run
from train.output import IO_EXIT, one_line


def export(model: RunModel, out: Path) -> Path:
    """Write `out` (.mindir) and its features file; return the features file's path."""
    import mindspore as ms

    ms.set_device("CPU")
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        features = len(model.features)
        ms.export(model.network(), ms.Tensor(shape=[None, features], dtype=ms.float32),
                  file_name=str(work / "model.mindir"), file_format="MINDIR")
        os.replace(work / "model.mindir", out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    meta = Path(f"{out}.json")  # model.mindir.json: never another file of that folder
    write_atomic(meta, json.dumps({
        "features": model.features, "target": model.target,
        "input": f"float32 (rows, {features}), the features in this order, in the data's units",
        "output": "float32 (rows,), the target in its own units",
        "run": str(model.checkpoint.parent.parent), "checkpoint": model.checkpoint.stem},
        indent=2) + "\n")
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
        print(f"error: cannot write {args.out} ({e.strerror or e})", file=sys.stderr)
        return IO_EXIT
    print(f"wrote {args.out} and {meta} (checkpoint {model.checkpoint.stem}): input float32 "
          f"(rows, {len(model.features)}) = {', '.join(model.features)}; output "
          f"{model.target} (rows,), the data's own units")
    return 0


if __name__ == "__main__":
    sys.exit(main())
