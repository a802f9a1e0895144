"""`msdp plot RUN_DIR [...]`: pictures of a run, written into the run folder.

- `loss.png`: training loss (per logged interval) and held-out loss (per epoch) against step;
- `fit.png` (one feature only, finished runs): a sample of the training rows with the learned
  curve (`summary.json`'s `curve`: the linear model's line or the MLP's function) and, for the
  synthetic source, the true line;
- a finished run on a file: `predicted.png` (the held-out rows' predicted against actual
  target, and the residuals, in the data's units) and, for the linear model,
  `coefficients.png` (the coefficients by feature name, in standardized units, comparable).

metrics.jsonl stays the source of truth; these are drawn from it, summary.json and the config.
A folder that is not a run, or whose files are malformed, is one line and exit 2; a figure
that cannot be written (read-only folder, disk full) one line and exit 74 (train/exits.py).
`python -m train.plot ...` is the same command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from train import rundir
from train.config import Config, ConfigError
from train.exits import CommandParser, handled
from train.rundir import save_figure


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only); ConfigError without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        from train.launch import pip_hint

        raise ConfigError(f"plotting needs matplotlib: {pip_hint('plot')}") from None
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def read_run(run_dir: Path) -> tuple[Config, list[tuple], dict | None]:
    """(config, metrics records as (step, loss, held-out loss), summary or None if the run
    did not finish); every file checked as data from outside."""
    rundir.require(run_dir, rundir.CONFIG, rundir.METRICS)
    cfg = rundir.read_config(run_dir)
    metrics = rundir.read_metrics(run_dir)
    finished = (run_dir / rundir.SUMMARY).is_file()
    return cfg, metrics, rundir.read_summary(run_dir, cfg) if finished else None


def sample_rows(cfg: Config, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """n training rows in the data's own units (synthetic: regenerated from the config)."""
    from pipeline.limits import DataError
    from train.plan import open_source

    try:
        return open_source(cfg).sample_rows(n)
    except DataError as e:  # the file moved, emptied, replaced since training
        raise data_error(e) from None


def data_error(e: Exception) -> ConfigError:
    """The run's data, unreadable now, as the one line train.plot prints."""
    return ConfigError(f"the run's data cannot be drawn ({e})")


def draw_data(ax: Any, cfg: Config, curves: dict[str, tuple[list, list]]) -> None:
    """Scatter the data, then the true line (synthetic) and each named (x, y) curve."""
    x, y = sample_rows(cfg)
    ax.scatter(x[:, 0], y[:, 0], s=4, alpha=0.3, color="grey", label="training rows")
    if cfg.synthetic:
        xs = np.array([-10.0, 10.0])
        ax.plot(xs, cfg.true_w * xs + cfg.true_b, "k--", lw=2,
                label=f"true: y = {cfg.true_w:g}x + {cfg.true_b:g}")
    for name, (cx, cy) in curves.items():
        ax.plot(cx, cy, lw=1.8, label=name)
    ax.set_xlabel("x" if cfg.synthetic else "feature")
    ax.set_ylabel("y" if cfg.synthetic else cfg.target or "target")
    ax.legend(loc="upper left", fontsize=8)


def curve_label(summary: dict) -> str:
    """`learned: y = 2.001x + 2.999` for the linear model, `learned (MLP)` otherwise."""
    if summary.get("w") and summary.get("b") is not None and len(summary["w"]) == 1:
        return f"learned: y = {summary['w'][0]:.3f}x + {summary['b']:.3f}"
    return "learned (MLP)"


def plot_run(run_dir: Path) -> list[Path]:
    """Write loss.png (and fit.png for one feature) into run_dir; return the paths."""
    plt = pyplot()
    cfg, metrics, summary = read_run(run_dir)
    train = [(step, loss) for step, loss, _ in metrics if loss is not None]
    evals = [(step, loss) for step, _, loss in metrics if loss is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss (interval mean, all ranks)")
    if evals:
        ax.plot(*zip(*evals), "o-", label="held-out loss")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"{cfg.loss} loss")
    ax.set_title(f"{run_dir.name} ({cfg.loss} loss, global batch "
                 f"{summary.get('global_batch_size', '?') if summary else '?'})")
    ax.grid(alpha=0.3)
    ax.legend()
    written = [run_dir / "loss.png"]
    save_figure(fig, written[0])
    plt.close(fig)
    curve = summary.get("curve") if summary else None
    if isinstance(curve, dict) and {"x", "y"} <= curve.keys():
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
        draw_data(ax, cfg, {curve_label(summary): (curve["x"], curve["y"])})
        ax.set_title(f"{run_dir.name}: data and fitted function")
        written.append(run_dir / "fit.png")
        save_figure(fig, written[1])
        plt.close(fig)
    if summary is not None and not cfg.synthetic and not cfg.user_data:  # (yours: no table)
        written += _held_out_figures(plt, run_dir, cfg, summary)
    return written


def held_out_predictions(run_dir: Path, cfg: Config, limit: int = 5000
                         ) -> tuple[np.ndarray, np.ndarray] | None:
    """(actual, predicted) target of a file run's held-out rows (at most `limit`), in the
    data's units, predicted by its newest good checkpoint (train/infer.py); None without
    held-out rows."""
    from pipeline.limits import DataError
    from train.infer import InferError, load_run
    from train.plan import open_source

    try:
        x, y = open_source(cfg).held_out(limit)
    except DataError as e:
        raise data_error(e) from None
    if len(y) == 0:
        return None
    try:
        model = load_run(run_dir)
    except InferError as e:
        raise ConfigError(str(e)) from None
    if x.ndim != 2 or x.shape[1] != len(model.features):
        raise data_error(ValueError(f"{cfg.data} has {x.shape[1:]} feature columns, the "
                                    f"model {len(model.features)}"))
    return y, model.predict(x).astype(np.float64)


def draw_predictions(ax: Any, ax_res: Any, label: str, actual: np.ndarray,
                     predicted: np.ndarray) -> None:
    """Predicted against actual (with the diagonal) and the residuals against predicted."""
    ax.scatter(actual, predicted, s=5, alpha=0.5, label=label)
    lo, hi = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    ax_res.scatter(predicted, actual - predicted, s=5, alpha=0.5, label=label)
    ax_res.axhline(0, color="k", ls="--", lw=1)
    ax_res.set_xlabel("predicted")
    ax_res.set_ylabel("actual - predicted")
    for a in (ax, ax_res):
        a.grid(alpha=0.3)


def _held_out_figures(plt: Any, run_dir: Path, cfg: Config, summary: dict) -> list[Path]:
    """predicted.png (held-out rows) and, for the linear model, coefficients.png."""
    written = []
    found = held_out_predictions(run_dir, cfg)
    if found is not None:
        fig, (ax, ax_res) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
        draw_predictions(ax, ax_res, "held-out rows", *found)
        target = summary.get("target", "target")
        ax.set_title(f"{run_dir.name}: {target}, held-out rows (the data's units)")
        ax_res.set_title("residuals")
        written.append(run_dir / "predicted.png")
        save_figure(fig, written[-1])
        plt.close(fig)
    std = summary.get("w_standardized")
    if isinstance(std, list) and summary.get("features"):
        fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(std) + 2), 4.5), dpi=100)
        ax.bar(summary["features"], std)
        ax.axhline(0, color="k", lw=1)
        ax.set_ylabel("coefficient, standardized units")
        ax.set_title(f"{run_dir.name}: target stds per feature std (comparable across "
                     "features)")
        ax.tick_params(axis="x", rotation=45)
        written.append(run_dir / "coefficients.png")
        save_figure(fig, written[-1])
        plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> int:
    """Plot one or more run folders (`msdp plot`); exit 2 with one line on bad input."""
    return handled(_main, sys.argv[1:] if argv is None else argv)


def _main(argv: list[str]) -> int:
    """`main`'s body: bad input raises (train/exits.py says the line and the code)."""
    from train.output import OutputError

    p = CommandParser(prog="msdp plot", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run folder (msdp fit "
                   "--out ...)")
    args, bad = p.parse_known_args(argv)
    if bad:
        raise ConfigError(f"msdp plot takes run folders only, not {bad[0]}")
    try:
        for d in args.run_dirs:
            for path in plot_run(Path(d)):
                print(path)
    except OSError as e:  # a figure that cannot be written (read-only folder, disk full)
        raise OutputError(f"cannot write into {e.filename or 'the run folder'}: "
                          f"{e.strerror or e}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
