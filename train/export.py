"""`msdp export RUN_DIR --out model.mindir [--ckpt NAME]`: a trained model as a
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

MindSpore Lite on Ascend needs more than the MindIR: `<out>.lite.ini` (model.mindir.lite.ini)
holds the converter settings (`converter_lite --configFile`, or `config_path` of Lite's
`Model.build_from_file`): float32 arithmetic (its default, enforce_fp16, would compute the
built-in (x - mean) / std of raw-unit features in float16), the input's name and shape, and the
batch sizes Lite on Ascend compiles (`--lite_batches`; it takes no other row counts). The
files appear only complete, with the user's umask. Exit codes: 0; 2 bad input (one line); 74
the files could not be written (train/exits.py). `python -m train.export ...` is the same
command.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from train.exits import CommandParser, handled
from train.infer import InferError, RunModel, load_run
from train.output import OutputError

# Preset batch sizes for Lite on Ascend (dynamic_dims): factors of 8 from 1 to 4096, so a batch
# padded up to the next preset costs at most 8x its rows (small next to a call's fixed cost for
# this model), and larger batches go in chunks of 4096. CANN takes 2-100 presets (3-4
# recommended): each one is a graph compiled at conversion.
LITE_BATCHES = (1, 8, 64, 512, 4096)
LITE_MAX_ROWS = 1 << 20


def lite_batches(text: str) -> tuple[int, ...]:
    """--lite_batches: comma-separated row counts, 2-100 distinct, each 1-1048576; sorted."""
    sizes = sorted({int(v) for v in text.split(",")}) if re.fullmatch(
        r"[0-9]{1,8}(,[0-9]{1,8})*", text) else []  # (bounded: int() of 5000 digits raises)
    if not 2 <= len(sizes) <= 100 or sizes[0] < 1 or sizes[-1] > LITE_MAX_ROWS:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise InferError(f"--lite_batches {shown}: 2 to 100 distinct batch sizes 1-{LITE_MAX_ROWS}"
                         f", comma-separated, such as {','.join(map(str, LITE_BATCHES))} (Lite "
                         "on Ascend compiles one graph per size)")
    return tuple(sizes)


def lite_config(name: str, mindir: str, shape: list[int], batches: tuple[int, ...]) -> str:
    """The converter's config file (MindSpore Lite's [ascend_context]; lines starting with #
    are skipped, one `=` per setting: lite/tools/common/parse_config_utils.cc)."""
    stem = mindir[:-len(".mindir")]
    return (f"# MindSpore Lite on Ascend, for {mindir} (msdp export).\n"
            f"#   converter_lite --fmk=MINDIR --modelFile={mindir} --outputFile={stem}_ascend "
            f"--saveType=MINDIR --optimize=ascend_oriented --configFile={mindir}.lite.ini\n"
            "# or mindspore_lite.Model().build_from_file(..., config_path=this file).\n"
            "# precision_mode: Lite's default on Ascend (enforce_fp16) would compute the\n"
            "# standardization of raw-unit features in float16; this keeps float32.\n"
            "# dynamic_dims: the only row counts Lite takes; pad or split batches to them.\n"
            "[ascend_context]\ninput_format=ND\n"
            f"input_shape={name}:[{','.join(map(str, [-1, *shape]))}]\n"
            f"dynamic_dims={','.join(f'[{b}]' for b in batches)}\n"
            "precision_mode=enforce_fp32\n")


def input_name(path: Path) -> str:
    """The MindIR's input as Lite names it: MindSpore writes `<graph>:<argument>` (`..:x`),
    Lite takes the argument's name (`x`)."""
    from mindspore.train import mind_ir_pb2

    model = mind_ir_pb2.ModelProto()
    model.ParseFromString(path.read_bytes())
    return model.graph.input[0].name.rsplit(":", 1)[-1]


def beside(out: Path) -> tuple[Path, Path]:
    """The files an export writes beside the MindIR: what it takes (.json), and Lite's settings."""
    return Path(f"{out}.json"), Path(f"{out}.lite.ini")


def export(model: RunModel, out: Path, batches: tuple[int, ...] = LITE_BATCHES) -> Path:
    """Write `out` (.mindir), its features file and Lite's config; return the features
    file's path."""
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
    meta, lite = beside(out)  # never another file there
    try:
        ms.export(net, ms.Tensor(shape=[None, *shape], dtype=getattr(ms, dtype)),
                  file_name=str(work / "model.mindir"), file_format="MINDIR")
        # ms.export makes the file read-only for its owner (0400): the user's umask instead
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(work / "model.mindir", 0o666 & ~umask)
        name = input_name(work / "model.mindir")
        (work / "model.lite.ini").write_text(lite_config(name, out.name, shape, batches))
        (work / "model.json").write_text(json.dumps({
            **what, "rows": {"mindspore": "any", "lite_ascend": list(batches)},
            "lite": {"config": lite.name, "input_name": name, "precision_mode": "enforce_fp32",
                     "batch_sizes": list(batches)},
            "run": str(model.checkpoint.parent.parent),
            "checkpoint": model.checkpoint.stem}, indent=2) + "\n")
        # All complete before any is in place; the MindIR last, so that it never appears
        # without the files that say what its inputs are.
        os.replace(work / "model.json", meta)
        os.replace(work / "model.lite.ini", lite)
        os.replace(work / "model.mindir", out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return meta


def main(argv: list[str] | None = None) -> int:
    """The command line (`msdp export`); see the module docstring."""
    return handled(_main, sys.argv[1:] if argv is None else argv)


def _main(argv: list[str]) -> int:
    """`main`'s body: bad input raises (train/exits.py says the line and the code)."""
    p = CommandParser(prog="msdp export",
                      description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("run_dir", type=Path, help="a run folder (msdp fit --out ...)")
    p.add_argument("--out", type=Path, required=True, help="the MindIR file (*.mindir)")
    p.add_argument("--ckpt", default="", help="a checkpoint step or name (default: the newest "
                   "good one)")
    p.add_argument("--lite_batches", default=",".join(map(str, LITE_BATCHES)),
                   help="the batch sizes MindSpore Lite on Ascend compiles (<out>.lite.ini); "
                        "it takes no other row counts (default %(default)s)")
    args = p.parse_args(argv)
    batches = lite_batches(args.lite_batches)
    if args.out.suffix != ".mindir":
        raise InferError(f"--out {args.out}: a MindIR file's name ends in .mindir")
    if not args.out.parent.is_dir():
        raise InferError(f"--out {args.out}: no folder {args.out.parent}")
    for path in (args.out, *beside(args.out)):
        if path.exists() and not path.is_file():  # replaced only if a file
            raise InferError(f"--out: {path} exists and is not a file (the export writes "
                             f"{args.out}, {args.out}.json and {args.out}.lite.ini); "
                             "choose another name")
    model = load_run(args.run_dir, args.ckpt)
    lost = model.float32_features()
    if lost:  # the graph takes raw float32 features: these would be rounded away
        raise InferError(f"feature {lost[0]!r} holds values too large for their spread to "
                         "pass through float32 (its mean is beyond 256 standard "
                         "deviations): a MindIR of raw float32 features would predict "
                         "wrongly; centre that column in your data, or use "
                         "msdp predict (float64 on the host)")
    try:
        meta = export(model, args.out, batches)
    except OSError as e:
        raise OutputError(f"cannot write {args.out} and the files beside it "
                          f"({e.strerror or e})") from None
    lite = (f"; for MindSpore Lite on Ascend: {args.out}.lite.ini (batches of "
            f"{', '.join(map(str, batches))} rows)")
    if model.x_spec is not None:
        print(f"wrote {args.out} and {meta} (checkpoint {model.checkpoint.stem}): input "
              f"{model.x_spec[1]} (rows, {', '.join(map(str, model.x_spec[0]))}), as your "
              f"source's x; output as your network returns it{lite}")
        return 0
    print(f"wrote {args.out} and {meta} (checkpoint {model.checkpoint.stem}): input float32 "
          f"(rows, {len(model.features)}) = {', '.join(model.features)}; output "
          f"{model.target} (rows,), the data's own units{lite}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
