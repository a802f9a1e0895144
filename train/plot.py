"""`python -m train.plot RUN_DIR`: pictures of a run, written into the run folder.

- `loss.png`: training loss (per logged interval) and held-out loss (per epoch) against step;
- `fit.png` (one feature only): a sample of the training rows with the true and learned line.

metrics.jsonl stays the source of truth; these are drawn from it and from the config.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from train.config import Config, ConfigError, load_yaml


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("plotting needs matplotlib: pip install -e '.[plot]'") from None
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def read_run(run_dir: Path) -> tuple[Config, list[dict], dict | None]:
    """(config, metrics records, summary or None if the run did not finish)."""
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "metrics.jsonl").is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no config.yaml and metrics.jsonl)")
    cfg = Config(**load_yaml(str(run_dir / "config.yaml")))
    metrics = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            metrics.append(json.loads(line))
        except ValueError:  # a torn last line of a killed run: not logged
            continue
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    return cfg, metrics, summary


def sample_rows(cfg: Config, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """The first n training rows of epoch 0, regenerated from the config (same seed, same rows)."""
    from pipeline.synthetic import SyntheticRegression
    from train.loop import data_spec

    return SyntheticRegression(data_spec(cfg), cfg.seed).rows(0, 0, n)


def draw_data(ax: Any, cfg: Config, lines: dict[str, tuple[float, float]]) -> None:
    """Scatter the data, then the true line and each named (w, b) line."""
    x, y = sample_rows(cfg)
    ax.scatter(x[:, 0], y[:, 0], s=4, alpha=0.3, color="grey", label="training rows")
    xs = np.array([-10.0, 10.0])
    ax.plot(xs, cfg.true_w * xs + cfg.true_b, "k--", lw=2,
            label=f"true: y = {cfg.true_w:g}x + {cfg.true_b:g}")
    for name, (w, b) in lines.items():
        ax.plot(xs, w * xs + b, lw=1.8, label=f"{name}: y = {w:.3f}x + {b:.3f}")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(loc="upper left", fontsize=8)


def plot_run(run_dir: Path) -> list[Path]:
    """Write loss.png (and fit.png for one feature) into run_dir; return the paths."""
    plt = _pyplot()
    cfg, metrics, summary = read_run(run_dir)
    train = [(m["step"], m["loss"]) for m in metrics if "loss" in m]
    evals = [(m["step"], m["eval_loss"]) for m in metrics if "eval_loss" in m]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss (interval mean, all ranks)")
    if evals:
        ax.plot(*zip(*evals), "o-", label="held-out loss (clean rows)")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"{cfg.loss} loss")
    ax.set_title(f"{run_dir.name} ({cfg.loss} loss, global batch "
                 f"{summary['global_batch_size'] if summary else '?'})")
    ax.grid(alpha=0.3)
    ax.legend()
    written = [run_dir / "loss.png"]
    fig.savefig(written[0], bbox_inches="tight")
    plt.close(fig)
    if cfg.features == 1 and summary is not None:
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
        draw_data(ax, cfg, {"learned": (summary["w"][0], summary["b"])})
        ax.set_title(f"{run_dir.name}: data and fitted line")
        written.append(run_dir / "fit.png")
        fig.savefig(written[1], bbox_inches="tight")
        plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> int:
    """Plot one or more run folders; exit 2 with one line on bad input."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[0].replace("`", ""))
        return 0 if argv else 2
    try:
        for d in argv:
            for p in plot_run(Path(d)):
                print(p)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
