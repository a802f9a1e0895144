"""`msdp compare [--out DIR] [training flags]`: Huber against MSE on contaminated data.

Trains the same rows twice - once with the Huber loss, once with MSE - on data where
`--outlier_fraction` of the rows (default 0.2) carry a large error of random sign
(`--outlier_scale`, default 100). Prints a table (learned w and b, their error against the
truth, MSE on clean held-out rows), writes `compare.json` (keys `huber` and `mse`, each with
`w`, `b`, `eval_loss` = MSE on the clean held-out set) and `compare.png` (both fitted lines
over the data) into `--out`, next to the two run folders.

With `--data FILE` the same two runs train on your rows: the table gives w and b in the data's
units and the held-out MSE (no truth to compare with). With `--hidden` (an MLP) there is no
w and b: the table gives the held-out MSE only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.fileio import write_atomic
from train.config import ConfigError, save_config
from train.exits import CommandParser, RunFailed, handled
from train.launch import TRAINER
from train.options import build_parser, parse_config
from train.output import out_folder
from train.plot import (
    curve_label,
    draw_data,
    draw_predictions,
    held_out_predictions,
    plot_run,
    pyplot,
    read_run,
)
from train.rundir import kind, logs_dir, read_summary, save_figure

DEFAULTS = {"outlier_fraction": 0.2, "outlier_scale": 100.0}
LOSSES = ("huber", "mse")
NOT_HERE = ("--loss", "--dry_run", "--resume")  # compare decides these itself


def _parse(argv: list[str]) -> tuple[argparse.Namespace, Any, Any, Path]:
    """compare's own --out, the training config, matplotlib (or None), the output folder."""
    p = CommandParser(prog="msdp compare", description=__doc__.split("\n")[0],
                      epilog="Other flags are training flags (msdp fit --help).")
    p.add_argument("--out", default="", help="output folder (default: runs/compare-<time>)")
    args, rest = p.parse_known_args(argv)
    bad = [f for f in NOT_HERE if f in rest]
    if bad:
        raise ConfigError(f"{bad[0]} is not a compare option: compare trains with huber, then "
                          "mse, into new folders")
    # Compare's defaults sit under the user's YAML and flags, not over them (synthetic only).
    base = DEFAULTS if "--data" not in rest else {}
    cfg, _ = parse_config(rest, parser=build_parser("msdp compare"), base=base)
    pyplot()  # refuse before training if matplotlib is missing
    plt = pyplot() if cfg.synthetic and cfg.features == 1 else None
    out = Path(args.out or f"runs/compare-{time.strftime('%Y%m%d-%H%M%S')}")
    if kind(out) not in ("absent", "empty"):
        raise ConfigError(f"--out {out} is not empty; choose a new folder")
    return args, cfg, plt, out


def main(argv: list[str] | None = None) -> int:
    """Train with each loss in a subprocess, then compare (`msdp compare`); exit 2 on bad
    input, 1 when a run fails (train/exits.py)."""
    return handled(_main, sys.argv[1:] if argv is None else argv)


def _main(argv: list[str]) -> int:
    """`main`'s body: bad input raises (train/exits.py says the line and the code)."""
    _, cfg, plt, out = _parse(argv)
    out_folder(out)
    cfg.quiet = True
    save_config(cfg, out / "base.yaml")
    results = {}
    for loss in LOSSES:
        print(f"training with {loss} ...", flush=True)
        run_dir = out / loss
        r = subprocess.run([*TRAINER, "--config", str(out / "base.yaml"),
                            "--loss", loss, "--out", str(run_dir)], capture_output=True, text=True)
        if r.returncode != 0:
            raise RunFailed(f"the {loss} run failed ({r.stderr.strip().splitlines()[-1:]}); "
                            f"see {logs_dir(run_dir)}")
        s = read_summary(run_dir)
        results[loss] = {"w": s["w"], "b": s["b"], "coefficients": s.get("coefficients"),
                         "eval_loss": s["eval_mse"], "curve": s.get("curve"),
                         "converged": s.get("converged")}
        plot_run(run_dir)  # loss.png, fit.png (one feature), predicted.png (a file)
    _table(cfg, results)
    write_atomic(out / "compare.json", json.dumps(
        {k: {n: v for n, v in r.items() if n != "curve"} for k, r in results.items()},
        indent=2) + "\n")
    wrote = [out / "compare.json"]
    if plt is not None:
        _figure(plt, cfg, results, out / "compare.png")
    elif not cfg.synthetic:
        _figure_file(pyplot(), out, out / "compare.png")
    if plt is not None or not cfg.synthetic:
        wrote.append(out / "compare.png")
    else:  # several synthetic features: no line to draw; the table says it all
        print("\n(no compare.png: the fitted lines are drawn for one feature only)")
    print(f"\nwrote {' and '.join(map(str, wrote))}")
    return 0


def _table(cfg: Any, results: dict[str, dict]) -> None:
    if cfg.synthetic:
        print(f"\n{cfg.outlier_fraction:.0%} of rows with outliers of scale "
              f"{cfg.outlier_scale:g}; true w = {cfg.true_w:g}, b = {cfg.true_b:g}")
    else:
        print(f"\n{cfg.data}: w and b and the held-out MSE in the data's own units")
        coefficients = {k: r["coefficients"] for k, r in results.items() if r["coefficients"]}
        if coefficients:
            names = list(next(iter(coefficients.values())))
            print(f"{'feature':<16} " + " ".join(f"{k:>12}" for k in coefficients))
            for n in names:
                print(f"{n[:16]:<16} " + " ".join(f"{c[n]:>12.6g}" for c in coefficients.values()))
            print(f"{'b':<16} " + " ".join(f"{results[k]['b']:>12.6g}" for k in coefficients))
    linear = cfg.synthetic and all(r["w"] is not None for r in results.values())
    print(f"{'loss':<6} " + (f"{'w':>18} {'b':>9} " if linear else "")
          + (f"{'|w - true|':>11} {'|b - true|':>11} " if linear else "")
          + f"{'held-out MSE' if not cfg.synthetic else 'clean MSE':>12}")
    for loss, r in results.items():
        cells = ""
        if linear:
            w = ", ".join(f"{v:.4f}" for v in r["w"])
            we = max(abs(v - cfg.true_w) for v in r["w"])
            cells += f"{w:>18} {r['b']:>9.4f} {we:>11.4f} {abs(r['b'] - cfg.true_b):>11.4f} "
        print(f"{loss:<6} {cells}{r['eval_loss']:>12.4f}")


def _figure_file(plt: Any, out: Path, path: Path) -> None:
    """A file: each loss's held-out predictions against the actual target, and residuals."""
    fig, (ax, ax_res) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    for loss in LOSSES:
        cfg, _, _ = read_run(out / loss)
        found = held_out_predictions(out / loss, cfg)
        if found is not None:
            draw_predictions(ax, ax_res, loss, *found)
    ax.set_title("held-out rows: predicted against actual (the data's units)")
    ax_res.set_title("residuals")
    ax.legend()
    save_figure(fig, path)
    plt.close(fig)


def _figure(plt: Any, cfg: Any, results: dict[str, dict], path: Path) -> None:
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    draw_data(ax, cfg, {f"{k} {curve_label(v)}": (v["curve"]["x"], v["curve"]["y"])
                        for k, v in results.items() if v.get("curve")})
    ax.set_title(f"{cfg.outlier_fraction:.0%} of rows with outliers (scale {cfg.outlier_scale:g})")
    for loss, r in results.items():  # at the data's scale the curves overlap: zoom in
        xs = np.asarray(r["curve"]["x"])
        ax2.plot(xs, np.asarray(r["curve"]["y"]) - (cfg.true_w * xs + cfg.true_b), label=loss)
    ax2.axhline(0, color="k", ls="--", lw=1, label="truth")
    ax2.set_xlabel("x")
    ax2.set_ylabel("fitted - true")
    ax2.set_title("error of the fitted function")
    ax2.legend()
    ax2.grid(alpha=0.3)
    save_figure(fig, path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
