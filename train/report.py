"""What a finished run tells its user: convergence, the baseline of predicting the mean, the
named coefficients (all for summary.json), and the final line with its warnings.

Decided on rank 0 (the console and summary.json are rank 0's); NumPy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from train import converge


def convergence(params: dict[str, np.ndarray], cfg: Any, source: Any, l2: float = 0.0
                ) -> dict[str, Any]:
    """train/converge.py's figures for this run, with the objective in the data's units."""
    found = converge.measure(params, cfg.hidden_sizes(), cfg.loss, source.loss_delta(cfg.delta),
                             source.objective_rows(), l2)
    for key in ("objective", "excess"):
        if key in found:
            found[key] *= source.loss_unit
    return found


def assess(params: dict[str, np.ndarray] | None, cfg: Any, source: Any
           ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The convergence figures and the mean baseline; `params` None (ranks other than 0, which
    do not report): empty figures."""
    if not cfg.builtin or cfg.user_data:
        return {"reason": "the Newton-step check is made for the built-in linear model or MLP "
                          "with the built-in losses on a file or the synthetic rows"}, {}
    if why := converge.no_objective(cfg):
        return ({"reason": why},
                {} if params is None else mean_baseline(cfg, source))
    if params is None:
        return {}, {}
    return (convergence(params, cfg, source, converge.l2_weight(cfg)),
            mean_baseline(cfg, source))


def mean_baseline(cfg: Any, source: Any) -> dict[str, float | None]:
    """The held-out loss and MSE, in the data's units, of predicting every row the training
    rows' mean target: the model to beat. None without held-out rows."""
    if source.max_eval_rows() == 0:
        return {"eval_loss_predicting_mean": None, "eval_mse_predicting_mean": None}
    _, y = source.eval_rows(cfg.eval_size)
    e = source.from_model(np.asarray(y, np.float64)) - source.target_mean()
    loss = np.mean(converge.loss_per_row(e, cfg.loss, cfg.delta))
    return {"eval_loss_predicting_mean": float(loss), "eval_mse_predicting_mean":
            float(np.mean(e * e))}


def named(source: Any, w: list[float] | None) -> dict[str, float] | None:
    """Coefficients by feature name."""
    return None if w is None else dict(zip(source.columns[:-1], w))


def final_lines(cfg: Any, summary: dict[str, Any], out_dir: Any) -> tuple[str, list[str]]:
    """The run's last console line, and the warnings that go before it."""
    target = summary["target"]
    if cfg.model:
        what = f"trained {cfg.model}"
    elif summary["w"] is None:
        what = f"trained an MLP ({cfg.hidden})"
    elif cfg.synthetic:
        w = ", ".join(f"{v:.4f}" for v in summary["w"])
        what = f"learned w = [{w}] (true {cfg.true_w}), b = {summary['b']:.4f} (true {cfg.true_b})"
    else:
        terms = " ".join(f"{'-' if v < 0 else '+'} {abs(v):.4g}·{n}"
                         for n, v in summary["coefficients"].items())
        what = f"learned {target} = {summary['b']:.4g} {terms} (the data's units)"
    conv = summary["convergence"]
    state = "converged" if summary["converged"] else "NOT converged"
    if summary["converged"] is None:
        state = "convergence not checked (docs/network.md)"
    elif "distance" in conv:  # (the objective's excess is in summary.json: relative to an
        # exact fit's objective, float32 rounding, any excess is large)
        state += f" (coefficients within {conv['distance']:.2g} of the optimum, standardized)"
    if summary["eval_loss"] is None:
        line = f"{what}; no held-out rows; {state}; {out_dir}"
    else:
        mse = "" if summary["eval_mse"] is None else f", eval MSE {summary['eval_mse']:.4f}"
        line = f"{what}; eval {cfg.loss} loss {summary['eval_loss']:.4f}{mse}; {state}; {out_dir}"
    return line, _warnings(cfg, summary, out_dir)


def _not_converged(cfg: Any, summary: dict[str, Any], out_dir: Any) -> str:
    """What a run that did not converge says, and the one thing to do about it."""
    conv, finish = summary["convergence"], summary.get("finish") or {}
    what = (f"not converged: a coefficient is still {conv.get('distance', float('inf')):.2g} "
            f"from the optimum in standardized units (criterion {converge.TOL:g})")
    if finish.get("reason") == "--finish none":
        return f"{what}; finish it there: --resume --out {out_dir} --finish newton"
    if finish.get("method") == "newton":
        return f"{what}; the Newton finish stopped at {finish.get('stopped')}"
    more = max(2 * summary["epochs"], summary["epochs"] + 1)
    return (f"{what}, assessing {conv.get('assessed', 'the model')}; train longer (--resume "
            f"--out {out_dir} --epochs {more}) or lower --lr; an MLP has no exact finish")


def _warnings(cfg: Any, summary: dict[str, Any], out_dir: Any) -> list[str]:
    found = []
    if summary["converged"] is False:
        found.append(_not_converged(cfg, summary, out_dir))
    # Compared in the loss the run minimises: with outliers among the held-out rows, the MSE
    # of a good robust fit is theirs, and no better than the mean's.
    base = summary["baseline"].get("eval_loss_predicting_mean")
    if base is not None and summary["eval_loss"] is not None and summary["eval_loss"] > base:
        found.append(f"the held-out {cfg.loss} loss {summary['eval_loss']:.6g} is worse than "
                     f"predicting the training mean ({base:.6g}): this "
                     f"{'linear fit' if summary['w'] is not None else 'model'} does not help "
                     "on these rows")
    return found
