"""`msdp bench [--quick] [--out DIR] [--memory_gib N | --defaults | --fits | --user]`:
every row, the table, bench.json and bench.png (train/bench/__init__.py lists the rows)."""

from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import train.bench
from train.bench import PARAM_TOL, timed
from train.bench.jobs import run_defaults, run_job, run_memory
from train.bench.reference import run_numpy, run_torch, torch_available
from train.bench.rows import (
    npy_stream,
    run_model_train,
    run_pipeline,
    run_prepared,
    run_seed_loop,
)
from train.exits import CommandParser, handled
from train.output import OutputError, out_folder


def _check(row: dict[str, Any], ref: list[float], name: str) -> dict[str, Any]:
    diff = max(abs(a - b) for a, b in zip(row["params"], ref))
    row.update(name=name, param_diff=diff, params_ok=diff <= PARAM_TOL)
    return row


def main(argv: list[str] | None = None) -> int:
    """Run every row, print the table, write bench.json and bench.png (`msdp bench`)."""
    return handled(_main, sys.argv[1:] if argv is None else argv)


def _main(argv: list[str]) -> int:
    """`main`'s body: a refused flag raises (train/exits.py says the line and the code)."""
    p = CommandParser(prog="msdp bench", description=train.bench.__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="fewer steps and repeats (about a minute on 2 cores)")
    p.add_argument("--out", default="", help="folder for bench.json and bench.png "
                   "(default: runs/bench-<time>)")
    p.add_argument("--memory_gib", type=int, default=0, metavar="N",
                   help="instead: the trainer's own memory (RssAnon) on an N GiB .npy against "
                   "a synthetic run (needs 2N GiB of free disk in the temp folder)")
    p.add_argument("--user", action="store_true",
                   help="instead: a network of yours through the package against the same "
                   "network in plain MindSpore loops (ms per step; train/bench/user.py)")
    p.add_argument("--fits", action="store_true",
                   help="instead: the defaults on public tables and generated ones against "
                   "statsmodels' RLM (error in standardized units, time, what summary.json "
                   "says; needs the test extra)")
    p.add_argument("--defaults", action="store_true",
                   help="instead: `python -m train --data FILE` with every automatic value on "
                   "tables of 100 to 1,000,000 rows: wall time, steps, converged")
    args = p.parse_args(argv)
    # Data files and job folders (GBs with --memory_gib): removed however the bench ends.
    scratch = Path(tempfile.mkdtemp(prefix="bench-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    if args.defaults:
        return _defaults(scratch)
    if args.fits:
        return _fits(scratch, args.quick)
    if args.user:
        return _user(scratch)
    if args.memory_gib > 0:
        return _memory(args.memory_gib, scratch)
    return _every_row(args.out, args.quick, scratch)


def _defaults(scratch: Path) -> int:
    """--defaults: `python -m train --data FILE` with every automatic value, table by table."""
    print(f"{'rows':>9} {'features':>8} {'batch':>6} {'epochs':>6} {'steps':>6} "
          f"{'wall s':>7} {'converged':>9} {'distance':>9}")
    for r in run_defaults(scratch):
        print(f"{r['rows']:>9,} {r['features']:>8} {r['global_batch']:>6} {r['epochs']:>6} "
              f"{r['steps']:>6} {r['wall_s']:>7.1f} {str(r['converged']):>9} "
              f"{r['distance']:>9.2g}")
    return 0


def _fits(scratch: Path, quick: bool) -> int:
    """--fits: the defaults against statsmodels' RLM on public and generated tables."""
    from train.bench.fits import run_fits

    print(f"{'table':>22} {'rows x cols':>13} {'error':>8} {'wall s':>6} {'converged':>9} "
          f"{'distance':>8} {'passes':>6} {'delta/RLM':>9}")
    for r in run_fits(scratch, quick):
        print(f"{r['table']:>22} {r['rows']:>7,} x {r['columns']:<3} {r['error']:>8.1e} "
              f"{r['wall_s']:>6.1f} {str(r['converged']):>9} {r['distance']:>8.1e} "
              f"{r['passes']:>6} {r['delta_vs_rlm']:>9.6f}  {r['reference']}")
    return 0


def _user(scratch: Path) -> int:
    """--user: a network of yours through the package against plain MindSpore loops."""
    from train.bench.user import run_user

    print(f"{'batch':>6} {'package ms':>11} {'plain, numpy ms':>16} {'plain, dataset ms':>18}")
    for r in run_user(scratch):
        print(f"{r['batch']:>6} {r['package_ms']:>11.3f} {r['plain_numpy_ms']:>16.3f} "
              f"{r['plain_dataset_ms']:>18.3f}")
    return 0


def _memory(gib: int, scratch: Path) -> int:
    """--memory_gib N: the trainer's own memory on an N GiB .npy against a synthetic run."""
    found = run_memory(gib, scratch)
    print("\n".join(f"{k:<24} {v:,.0f}" for k, v in found.items()))
    return 0


def _every_row(out_arg: str, q: bool, scratch: Path) -> int:
    """The default mode: every row, the table, the headline, bench.json and bench.png."""
    out = out_folder(Path(out_arg or f"runs/bench-{time.strftime('%Y%m%d-%H%M%S')}"))
    import mindspore as ms

    ms.set_device("CPU")
    rows: list[dict[str, Any]] = []

    def add(row: dict[str, Any]) -> None:
        rows.append(row)
        print(f"{row['name']:<34} {row.get('batch', ''):>6} {row['samples_per_s']:>14,.0f} "
              f"{row['param_diff']:>9.1e} {'ok' if row['params_ok'] else 'DIFFERENT'}",
              flush=True)

    print(f"{'row':<34} {'batch':>6} {'samples/s':>14} {'|dparam|':>9}")
    _in_process_rows(add, q, scratch)
    _job_rows(add, q, scratch)
    headline = _headline(rows)
    print("\n" + "\n".join(f"{k:<24} {v:,.3f}" if isinstance(v, float) else f"{k:<24} {v}"
                           for k, v in headline.items()))
    report = {**headline, "quick": q, "rows": rows, "machine": {
        "cpus": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "mindspore": ms.__version__,
        "numpy": np.__version__}}
    try:
        (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
        _plot(rows, out / "bench.png")
    except OSError as e:  # the figures are printed above; the files are what failed
        raise OutputError(f"cannot write {e.filename or out} ({e.strerror or e})") from None
    print(f"\nwrote {out / 'bench.json'} and {out / 'bench.png'}")
    return 0 if headline["all_params_ok"] else 1


def _in_process_rows(add: Callable[[dict[str, Any]], None], q: bool, scratch: Path) -> None:
    """The rows run in this process: the seed loop, the pipeline against the same step on
    prepared tensors, NumPy and torch, the .npy file, and Model.train."""
    repeats = 3 if q else 5
    sizes = {256: 600 if q else 2000, 4096: 200 if q else 600, 65536: 30 if q else 100}
    seed_steps = 1000 if q else 3000
    numpy_seed = run_numpy(1, seed_steps)[1]
    add({**_check(timed(lambda: run_seed_loop(seed_steps), repeats), numpy_seed,
                  "seed article loop"), "batch": 1})
    for batch, steps in sizes.items():
        ref = timed(lambda: run_pipeline(batch, steps), repeats)  # noqa: B023
        add({**_check(ref, ref["params"], "pipeline (GeneratorDataset)"), "batch": batch})
        for name, fn in (("prepared tensors (no pipeline)", run_prepared),
                         ("numpy hand-written", run_numpy),
                         *((("torch eager", run_torch),) if torch_available() else ())):
            row = timed(lambda: fn(batch, steps), repeats)  # noqa: B023
            add({**_check(row, ref["params"], name), "batch": batch})
    # The same pipeline reading a .npy file (memory-mapped, shuffled by blocks) instead of
    # generating rows: efficiency = file pipeline / the same step on the file's tensors.
    files = scratch / "npy"
    files.mkdir()
    for batch, steps in ((256, sizes[256]), (65536, sizes[65536])):
        stream = npy_stream(batch, steps, files)
        ref = timed(lambda: run_prepared(batch, steps, stream), repeats)  # noqa: B023
        add({**_check(ref, ref["params"], "prepared tensors (.npy rows)"), "batch": batch})
        row = timed(lambda: run_pipeline(batch, steps, stream), repeats)  # noqa: B023
        add({**_check(row, ref["params"], "pipeline (.npy file)"), "batch": batch})
    # Model.train is slow at small batches: fewer steps, checked against NumPy on the same rows.
    for batch, steps in ((256, 150 if q else 400), (65536, 30 if q else 60)):
        row = timed(lambda: run_model_train(batch, steps), repeats)  # noqa: B023
        add({**_check(row, run_numpy(batch, steps)[1], "Model.train (no sink)"), "batch": batch})


def _job_rows(add: Callable[[dict[str, Any]], None], q: bool, scratch: Path) -> None:
    """The job rows: `python -m train` as one process and as two ranks (msrun, mpirun)."""
    root = scratch / "jobs"
    root.mkdir()
    job_steps, job_repeats = (300, 1) if q else (1000, 3)
    jobs: dict[str, list[dict[str, Any]]] = {}
    for kind, batch in (("single", 512), ("msrun", 256), ("mpirun", 256)):
        jobs[kind] = [run_job(kind, batch, job_steps, root) for _ in range(job_repeats)]
    ref = jobs["single"][0]["params"]
    for kind, label in (("single", "1 process, batch 512"), ("msrun", "2 ranks msrun, 256 each"),
                        ("mpirun", "2 ranks mpirun, 256 each")):
        runs = jobs[kind]
        row = {"samples_per_s": statistics.median(r["samples_per_s"] for r in runs),
               "launch_s": statistics.median(r["launch_s"] for r in runs),
               "repeats": len(runs), "params": runs[0]["params"], "batch": 512}
        add(_check(row, ref, f"job: {label}"))
        print(f"{'':<34} launch to first step: {row['launch_s']:.1f} s")


def _headline(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures bench.json leads with: ratios of rows' rates, launch times, all params ok."""
    def rate(name: str, batch: int) -> float | None:
        return next((r["samples_per_s"] for r in rows
                     if r["name"] == name and r.get("batch") == batch), None)

    single = rate("job: 1 process, batch 512", 512)
    torch_rate = rate("torch eager", 256)
    return {
        "pipeline_efficiency": rate("pipeline (GeneratorDataset)", 256)
        / rate("prepared tensors (no pipeline)", 256),
        "vs_torch_eager": rate("pipeline (GeneratorDataset)", 256) / torch_rate
        if torch_rate else None,
        "vs_model_train": rate("pipeline (GeneratorDataset)", 256)
        / rate("Model.train (no sink)", 256),
        "samples_per_s_b65536": rate("pipeline (GeneratorDataset)", 65536),
        "pipeline_efficiency_b65536": rate("pipeline (GeneratorDataset)", 65536)
        / rate("prepared tensors (no pipeline)", 65536),
        "npy_efficiency": rate("pipeline (.npy file)", 256)
        / rate("prepared tensors (.npy rows)", 256),
        "npy_efficiency_b65536": rate("pipeline (.npy file)", 65536)
        / rate("prepared tensors (.npy rows)", 65536),
        "dp2_scaling": rate("job: 2 ranks msrun, 256 each", 512) / single,
        "dp2_scaling_mpirun": rate("job: 2 ranks mpirun, 256 each", 512) / single,
        "launch_s_single": next(r["launch_s"] for r in rows if r["name"].startswith("job: 1 ")),
        "launch_s_msrun2": next(r["launch_s"] for r in rows if "msrun" in r["name"]),
        "launch_s_mpirun2": next(r["launch_s"] for r in rows if "mpirun" in r["name"]),
        "all_params_ok": all(r["params_ok"] for r in rows),
    }


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    from train.plot import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for name in ("pipeline (GeneratorDataset)", "prepared tensors (no pipeline)", "torch eager",
                 "numpy hand-written", "pipeline (.npy file)", "Model.train (no sink)"):
        pts = sorted((r["batch"], r["samples_per_s"]) for r in rows if r["name"] == name)
        if pts:
            ax.plot(*zip(*pts), "o--" if len(pts) == 2 else "o-", label=name)
    for r in rows:
        if r["name"] == "seed article loop" or r["name"].startswith("job: "):
            ax.plot([r["batch"]], [r["samples_per_s"]], "s", label=r["name"])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("global batch size")
    ax.set_ylabel("samples / s")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
