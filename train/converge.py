"""Is the model at the optimum of its objective, and (the built-in linear model) finishing it
there: float64 Newton passes over the objective rows. NumPy only, no collectives.

The objective is what the run minimises: the mean loss over the objective rows (a file's
training rows, all of them up to 2**21, evenly spread beyond; the synthetic source's first
2**18 rows), in the units the model trains in, plus the L2 term SGD's `--weight_decay` adds.
One pass over the rows gives its gradient g and Hessian H with respect to the output layer
(H = 2X'X/n for MSE, X'diag(|e| <= delta)X/n for Huber; X = [features, 1] for the linear
model, [last hidden layer, 1] for an MLP). The Newton step H^-1 g is then how far each
coefficient still is from the optimum: exact for MSE, and for Huber as long as no row changes
side of delta, which holds near the optimum. The run has converged when every coefficient's
step is at most `TOL` in standardized units (a weight's step times its column's std over the
target's std; the intercept's step taken at the columns' means, over the target's std): a
claim about the coefficients, which a flat objective (a small or collinear table) does not
weaken. The objective's excess, g'H^-1 g / 2, is reported beside it.

`finish` takes the linear model the rest of the way: Newton passes with a backtracking line
search (the objective is convex, so every accepted step lowers it) until the step is below
`FINISH_TOL`, the same iteration statsmodels' IRLS and distributed GLM solvers use. Every rank
runs it on the same rows in the same order: MindSpore's CPU collectives sum only float32, which
would lose the precision the finish exists for, and replicated arithmetic makes the result
bitwise the same on every rank and for any number of ranks. For an MLP `measure` assesses the
output layer given the hidden ones (a necessary condition, not a sufficient one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

TOL = 1e-4  # converged: every coefficient within this of the optimum, in standardized units
FINISH_TOL = 1e-10  # the finish stops when no coefficient moves more than this
MAX_PASSES = 60  # passes over the rows the finish makes at most (line-search trials included)
CRITERION = ("the largest Newton step over the coefficients, in standardized units (a "
             "weight's step x its column's std / the target's std; the intercept's at the "
             "columns' means)")

Rows = Iterable[tuple[np.ndarray, np.ndarray]]


def why_no_finish(cfg: Any) -> str | None:
    """Why a run of this config ends without the Newton finish; None when it has one."""
    if not cfg.builtin or cfg.user_data or cfg.hidden_sizes():
        return ("the Newton finish is for the built-in linear model with the built-in losses "
                "on a file or the synthetic rows")
    if why := no_objective(cfg):
        return why
    return "--finish none" if cfg.finish == "none" else None


def no_objective(cfg: Any) -> str | None:
    """Why a run of this config minimises no objective (so has no optimum to be at)."""
    if cfg.optimizer == "adamw" and cfg.weight_decay > 0:
        return "AdamW's decoupled weight decay minimises no objective: there is no optimum"
    return None


def l2_weight(cfg: Any) -> float:
    """The L2 term's weight in the objective: SGD adds weight_decay x p to the gradient of
    every parameter (train/optim.py); AdamW's decay is decoupled (no objective)."""
    return cfg.weight_decay if cfg.optimizer == "sgd" else 0.0


@dataclass
class Pass:
    """One pass over the rows at parameters theta: the objective and its derivatives, and the
    design's moments (for standardized units)."""
    n: int
    objective: float
    grad: np.ndarray
    hess: np.ndarray
    h_mean: np.ndarray
    h_std: np.ndarray
    t_std: float
    irls: np.ndarray  # X'WX/n (+ L2): IRLS's matrix, rows beyond delta weighted delta/|e|


def loss_per_row(e: np.ndarray, loss: str, delta: float) -> np.ndarray:
    """The training loss of each row with error `e` (Huber with `delta`, or MSE), as
    train/loss.py defines it."""
    if loss != "huber":
        return e * e
    c = np.clip(e, -delta, delta)
    return c * (e - 0.5 * c)


def _output_inputs(params: dict[str, np.ndarray], hidden: list[int], x: np.ndarray
                   ) -> np.ndarray:
    """What the output layer sees: x (the linear model) or the last hidden layer's ReLU."""
    h = x
    for i in range(len(hidden)):
        h = np.maximum(h @ params[f"{2 * i}.weight"].T.astype(np.float64)
                       + params[f"{2 * i}.bias"], 0.0)
    return h


def output_layer(params: dict[str, np.ndarray], hidden: list[int]) -> np.ndarray:
    """The output layer's parameters as one float64 vector (weights, then the bias)."""
    name = "" if not hidden else f"{2 * len(hidden)}."
    return np.concatenate([params[f"{name}weight"].ravel(), params[f"{name}bias"].ravel()]
                          ).astype(np.float64)


def one_pass(theta: np.ndarray, params: dict[str, np.ndarray], hidden: list[int], loss: str,
             delta: float, rows: Rows, l2: float = 0.0) -> Pass | None:
    """The objective, gradient and Hessian at output-layer parameters `theta` (the hidden
    layers from `params`), in float64; None without rows."""
    p = len(theta)
    n, total = 0, 0.0
    grad, hess, irls = np.zeros(p), np.zeros((p, p)), np.zeros((p, p))
    h_sum, h_sq, t_sum, t_sq = np.zeros(p - 1), np.zeros(p - 1), 0.0, 0.0
    for x, y in rows:
        h = _output_inputs(params, hidden, np.asarray(x, np.float64))
        t = np.asarray(y, np.float64).ravel()
        e = h @ theta[:-1] + theta[-1] - t
        h_sum, h_sq = h_sum + h.sum(axis=0), h_sq + (h * h).sum(axis=0)
        t_sum, t_sq = t_sum + float(t.sum()), t_sq + float(t @ t)
        total += float(loss_per_row(e, loss, delta).sum())
        xt = np.concatenate([h, np.ones((len(h), 1))], axis=1)
        if loss == "huber":
            grad += xt.T @ np.clip(e, -delta, delta)
            inside = np.abs(e) <= delta  # the rows where Huber is quadratic
            hess += xt[inside].T @ xt[inside]
            weight = np.minimum(1.0, delta / np.maximum(np.abs(e), 1e-300))
            irls += (xt * weight[:, None]).T @ xt
        else:  # MindSpore's MSELoss: mean of e**2
            grad += 2.0 * xt.T @ e
            hess += 2.0 * xt.T @ xt
            irls = hess
        n += len(e)
    if n == 0:
        return None
    h_mean, t_mean = h_sum / n, t_sum / n
    ridge = l2 * np.eye(p)
    return Pass(n, total / n + 0.5 * l2 * float(theta @ theta), grad / n + l2 * theta,
                hess / n + ridge, h_mean, np.sqrt(np.maximum(h_sq / n - h_mean ** 2, 0.0)),
                float(np.sqrt(max(t_sq / n - t_mean ** 2, 0.0))), irls / n + ridge)


def newton_step(at: Pass) -> np.ndarray | None:
    """H^-1 g (least squares for a singular H); None when g has a part outside H's range (rows
    all beyond delta along it: there the objective is linear, its fall unbounded by Newton)."""
    step = np.linalg.lstsq(at.hess, at.grad, rcond=1e-13)[0]
    outside = np.linalg.norm(at.hess @ step - at.grad) > 1e-6 * max(np.linalg.norm(at.grad),
                                                                    1e-30)
    return None if outside else step


def distance(step: np.ndarray | None, at: Pass) -> float:
    """The largest coefficient of `step` in standardized units (module docstring)."""
    if step is None:
        return float("inf")
    t_std = at.t_std if at.t_std > 0 else 1.0
    weights = np.abs(step[:-1]) * at.h_std / t_std
    intercept = abs(step[-1] + float(step[:-1] @ at.h_mean)) / t_std
    return float(max(weights.max(initial=0.0), intercept))


def measure(params: dict[str, np.ndarray], hidden: list[int], loss: str, delta: float,
            rows: Rows, l2: float = 0.0) -> dict[str, Any]:
    """The convergence figures of a model (`params` by the names of train/model.py) on the
    objective rows (x, y in training units; `delta` in those units too)."""
    at = one_pass(output_layer(params, hidden), params, hidden, loss, delta, rows, l2)
    if at is None:
        return {"criterion": CRITERION, "rows": 0, "converged": False}
    step = newton_step(at)
    excess = float("inf") if step is None else 0.5 * float(at.grad @ step)
    dist = distance(step, at)
    return {"criterion": CRITERION, "rows": at.n, "distance": dist, "tol": TOL,
            "converged": bool(dist <= TOL), "objective": at.objective, "excess": excess,
            "relative_excess": excess / max(at.objective, 1e-300),
            "assessed": "all parameters" if not hidden else "the output layer"}


def irls_step(at: Pass) -> np.ndarray:
    """The step of iteratively reweighted least squares (rows beyond delta weighted
    delta/|e|): X'WX majorizes Huber's curvature, so a full step never raises the objective
    (an MM step, slower than Newton's but safe where few rows are inside delta)."""
    return np.linalg.lstsq(at.irls, at.grad, rcond=1e-13)[0]


def finish(theta: np.ndarray, loss: str, delta: float, rows: Callable[[], Rows],
           l2: float = 0.0, on_pass: Callable[[dict[str, Any]], None] | None = None
           ) -> tuple[np.ndarray, dict[str, Any]]:
    """The linear model's parameters (`theta`: weights, then the bias) taken to the optimum:
    each pass tries the Newton step, and where it does not lower the objective enough
    (Armijo), the IRLS step, then halvings of it; returns the parameters and what was done."""
    def at_point(t: np.ndarray) -> Pass:
        got = one_pass(t, {}, [], loss, delta, rows(), l2)
        assert got is not None  # (rows were there a moment ago)
        return got

    first = one_pass(theta, {}, [], loss, delta, rows(), l2)
    if first is None:
        return theta, {"method": "newton", "passes": 0, "stopped": "no rows"}
    at, passes, stopped = first, 1, "the pass limit"
    while passes < MAX_PASSES:
        newton = newton_step(at)
        if newton is not None and distance(newton, at) <= FINISH_TOL:
            stopped = "converged"
            break
        moved = False
        for step in _candidates(newton, at):
            if passes >= MAX_PASSES:
                break
            trial = theta - step
            got = at_point(trial)
            passes += 1
            if got.objective <= at.objective - 1e-4 * float(at.grad @ step):  # Armijo
                theta, at, moved = trial, got, True
                break
        if on_pass is not None:
            on_pass({"finish_pass": passes, "objective": at.objective})
        if not moved:  # no step lowers the float64 objective: its floor, at the optimum
            stopped = "the float64 floor" if passes < MAX_PASSES else stopped
            break
    return theta, {"method": "newton", "passes": passes, "stopped": stopped,
                   "objective_before": first.objective, "objective_after": at.objective}


def _candidates(newton: np.ndarray | None, at: Pass) -> list[np.ndarray]:
    """The steps a pass tries, in order: Newton's, then IRLS's and its halvings."""
    irls = irls_step(at)
    return ([newton] if newton is not None else []) + [irls * 0.5 ** k for k in range(4)]
