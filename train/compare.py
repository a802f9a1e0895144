"""`python -m train.compare [--out DIR] [training flags]`: Huber against MSE on contaminated data.

Trains the same rows twice - once with the Huber loss, once with MSE - on data where
`--outlier_fraction` of the rows (default 0.2) carry a large error of random sign
(`--outlier_scale`, default 100). Prints a table (learned w and b, their error against the
truth, MSE on clean held-out rows), writes `compare.json` (keys `huber` and `mse`, each with
`w`, `b`, `eval_loss` = MSE on the clean held-out set) and `compare.png` (both fitted lines
over the data) into `--out`, next to the two run folders.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from train.config import ConfigError, build_parser, parse_config, save_config
from train.output import check_out_dir
from train.plot import _pyplot, draw_data, plot_run

DEFAULTS = {"outlier_fraction": 0.2, "outlier_scale": 100.0}
LOSSES = ("huber", "mse")


def main(argv: list[str] | None = None) -> int:
    """Train with each loss in a subprocess, then compare; exit 2 on bad input."""
    p = argparse.ArgumentParser(prog="python -m train.compare", description=__doc__.split("\n")[0],
                                epilog="Other flags are training flags (python -m train --help).")
    p.add_argument("--out", default="", help="output folder (default: runs/compare-<time>)")
    args, rest = p.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        if "--loss" in rest:
            raise ConfigError("--loss is chosen by compare itself (huber, then mse)")
        # Compare's defaults sit under the user's YAML and flags, not over them.
        cfg, _ = parse_config(rest, parser=build_parser("python -m train.compare"),
                              base=DEFAULTS)
        plt = _pyplot() if cfg.features == 1 else None  # no matplotlib: refuse before training
        out = Path(args.out or f"runs/compare-{time.strftime('%Y%m%d-%H%M%S')}")
        check_out_dir(str(out))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    cfg.quiet = True
    save_config(cfg, out / "base.yaml")
    results = {}
    for loss in LOSSES:
        print(f"training with {loss} ...", flush=True)
        run_dir = out / loss
        r = subprocess.run([sys.executable, "-m", "train", "--config", str(out / "base.yaml"),
                            "--loss", loss, "--out", str(run_dir)], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"error: the {loss} run failed ({r.stderr.strip().splitlines()[-1:]}); "
                  f"see {run_dir}/logs", file=sys.stderr)
            return 1
        s = json.loads((run_dir / "summary.json").read_text())
        results[loss] = {"w": s["w"], "b": s["b"], "eval_loss": s["eval_mse"]}
        if cfg.features == 1:
            plot_run(run_dir)  # loss.png and fit.png of each run

    def err(r: dict) -> tuple[float, float]:
        return max(abs(w - cfg.true_w) for w in r["w"]), abs(r["b"] - cfg.true_b)

    print(f"\n{cfg.outlier_fraction:.0%} of rows with outliers of scale {cfg.outlier_scale:g}; "
          f"true w = {cfg.true_w:g}, b = {cfg.true_b:g}")
    print(f"{'loss':<6} {'w':>18} {'b':>9} {'|w - true|':>11} {'|b - true|':>11} "
          f"{'clean MSE':>10}")
    for loss, r in results.items():
        we, be = err(r)
        w = ", ".join(f"{v:.4f}" for v in r["w"])
        print(f"{loss:<6} {w:>18} {r['b']:>9.4f} {we:>11.4f} {be:>11.4f} {r['eval_loss']:>10.4f}")
    (out / "compare.json").write_text(json.dumps(results, indent=2) + "\n")
    if plt is not None:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
        draw_data(ax, cfg, {k: (v["w"][0], v["b"]) for k, v in results.items()})
        ax.set_title(f"{cfg.outlier_fraction:.0%} of rows with outliers "
                     f"(scale {cfg.outlier_scale:g})")
        xs = np.linspace(-10, 10, 50)
        for loss, r in results.items():  # at the data's scale the lines overlap: zoom in
            ax2.plot(xs, (r["w"][0] - cfg.true_w) * xs + (r["b"] - cfg.true_b), label=loss)
        ax2.axhline(0, color="k", ls="--", lw=1, label="truth")
        ax2.set_xlabel("x")
        ax2.set_ylabel("fitted line - true line")
        ax2.set_title("error of the fitted line")
        ax2.legend()
        ax2.grid(alpha=0.3)
        fig.savefig(out / "compare.png", bbox_inches="tight")
        plt.close(fig)
    print(f"\nwrote {out / 'compare.json'}" + (f" and {out / 'compare.png'}"
                                                if cfg.features == 1 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
