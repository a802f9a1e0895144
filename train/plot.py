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

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.fileio import finite_numbers
from train.config import Config, ConfigError
from train.exits import CommandParser, handled
from train.options import load_yaml, parse_config, read_bounded
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


SUMMARY_MAX = 1 << 24  # bytes: a summary is kB (a few numbers per feature, a 200-point curve)
RECORD_MAX = 1 << 16  # bytes: a metrics record is a few hundred


def _json(path: Path) -> Any:
    text = read_bounded(str(path), SUMMARY_MAX, "the run's summary",
                        "a run writes a few kB there")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"{path}: not readable JSON ({str(e)[:60]})") from None


def _number(v: Any, none: bool = False) -> bool:
    """A finite JSON number (not true/false), or (none=True) null."""
    return (none and v is None) or finite_numbers([v])


def _numbers(v: Any, n: int | None = None) -> bool:
    """A list of finite numbers, of length n if given."""
    return isinstance(v, list) and finite_numbers(v) and (n is None or len(v) == n)


def check_summary(summary: Any, cfg: Config, path: Path) -> dict:
    """summary.json as train.plot reads it, its shapes and types checked: the features' names
    and `w`, `w_standardized` one number per feature, `curve` x and y of one length."""
    def bad(why: str) -> ConfigError:
        return ConfigError(f"{path}: not this run's summary ({why})")

    if not isinstance(summary, dict):
        raise bad("not a JSON object")
    names = summary.get("features")  # (absent in summaries of releases before names)
    if names is not None and not (isinstance(names, list) and names
                                  and all(isinstance(n, str) for n in names)):
        raise bad("'features' is not a list of names")
    n = len(names) if names is not None else cfg.features if cfg.synthetic else None
    if cfg.synthetic and n != cfg.features:
        raise bad(f"{n} features, its config {cfg.features}")
    for key in ("w", "w_standardized"):
        if summary.get(key) is not None and not _numbers(summary[key], n):
            raise bad(f"{key!r} is not {n} number(s), one per feature")
    if not _number(summary.get("b"), none=True):
        raise bad("'b' is not a number")
    curve = summary.get("curve")
    if curve is not None and not (isinstance(curve, dict) and _numbers(curve.get("x"))
                                  and _numbers(curve.get("y"), len(curve["x"])) and curve["x"]):
        raise bad("'curve' is not x and y, lists of numbers of one length")
    if not isinstance(summary.get("target", ""), str) or not isinstance(
            summary.get("global_batch_size", 0), int):
        raise bad("a malformed 'target' or 'global_batch_size'")
    return summary


def _lines(f: Any) -> Iterator[bytes]:
    """The lines of a binary file, none read further than RECORD_MAX bytes: a longer one is
    read past and yielded as b"" (not a record)."""
    while line := f.readline(RECORD_MAX):
        if len(line) == RECORD_MAX and not line.endswith(b"\n"):
            while (rest := f.readline(RECORD_MAX)) and not rest.endswith(b"\n"):
                pass
            line = b""
        yield line


def read_metrics(path: Path) -> list[tuple[int, float | None, float | None]]:
    """(step, loss, held-out loss) of each record of metrics.jsonl, streamed (a line longer
    than any record is skipped unread, as a torn last line is); a record whose losses are not
    numbers is a ConfigError naming its line."""
    found = []
    try:
        with open(path, "rb") as f:
            for line_no, line in enumerate(_lines(f), 1):
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError):  # a torn last line of a killed run
                    continue
                step = record.get("step") if isinstance(record, dict) else None
                if not isinstance(step, int) or isinstance(step, bool):
                    continue
                if not all(_number(record.get(k), none=True) for k in ("loss", "eval_loss")):
                    raise ConfigError(f"{path}: line {line_no}: 'loss' and 'eval_loss' must "
                                      "be numbers or null")
                found.append((step, record.get("loss"), record.get("eval_loss")))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror or e})") from None
    return found


def read_run(run_dir: Path) -> tuple[Config, list[tuple], dict | None]:
    """(config, metrics records as (step, loss, held-out loss), summary or None if the run
    did not finish); every file checked as data from outside."""
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "metrics.jsonl").is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no config.yaml and metrics.jsonl)")
    cfg, _ = parse_config([], base=load_yaml(str(run_dir / "config.yaml"), what="the run's config"))
    metrics = read_metrics(run_dir / "metrics.jsonl")
    path = run_dir / "summary.json"
    summary = check_summary(_json(path), cfg, path) if path.is_file() else None
    return cfg, metrics, summary


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
        raise ConfigError(f"train.plot takes run folders only, not {bad[0]}")
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
