"""Did the run reach the optimum of its objective? Measured once, at the end, on the host.

The objective is what the run minimises: the mean loss over the training rows (a file's
training split; the synthetic source's first epoch), in the units the model trains in, at most
`MAX_ROWS` of them, evenly spread. Near an optimum a loss that is quadratic in the output
layer's parameters (MSE exactly; Huber piecewise, as long as no row changes side of delta) is
its own second-order model, so one Newton step says how far the objective still is above its
optimum: excess = g'H^-1g / 2, with g and H the gradient and Hessian over the objective rows
(H = X'X/n for MSE, X'diag(|e| <= delta)X/n for Huber; X = [features, 1] for the linear model,
[last hidden layer, 1] for an MLP). The run has converged when that excess is at most `TOL` of
the objective: within 0.1% of the optimum; or, for an exact fit (whose objective is float32
rounding, and so relative to it is any excess), at most `EXACT` of the targets' variance.
For an MLP this assesses the output layer given the hidden ones (a necessary condition, not a
sufficient one); README says so.

Everything here is NumPy in float64: no MindSpore, no collectives (rank 0 measures).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

TOL = 1e-3  # converged: the objective within 0.1% of its optimum
EXACT = 1e-9  # also converged: the excess at most this fraction of the targets' variance
CRITERION = ("a Newton step's estimate of how far the training objective is above its "
             "optimum, relative to the objective")


def _output_inputs(params: dict[str, np.ndarray], hidden: list[int], x: np.ndarray
                   ) -> np.ndarray:
    """What the output layer sees: x (the linear model) or the last hidden layer's ReLU."""
    h = x
    for i in range(len(hidden)):
        h = np.maximum(h @ params[f"{2 * i}.weight"].T.astype(np.float64)
                       + params[f"{2 * i}.bias"], 0.0)
    return h


def loss_per_row(e: np.ndarray, loss: str, delta: float) -> np.ndarray:
    """The training loss of each row with error `e` (Huber with `delta`, or MSE), as
    train/loss.py defines it."""
    if loss != "huber":
        return e * e
    c = np.clip(e, -delta, delta)
    return c * (e - 0.5 * c)


def _output_layer(params: dict[str, np.ndarray], hidden: list[int]) -> np.ndarray:
    """The output layer's parameters as one vector (weights, then the bias)."""
    name = "" if not hidden else f"{2 * len(hidden)}."
    return np.concatenate([params[f"{name}weight"].ravel(), params[f"{name}bias"].ravel()]
                          ).astype(np.float64)


def measure(params: dict[str, np.ndarray], hidden: list[int], loss: str, delta: float,
            rows: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """The convergence figures of a model (`params` by the names of train/model.py) on the
    objective rows (x, y in training units; `delta` in those units too)."""
    theta = _output_layer(params, hidden)
    p = len(theta)
    n, total, grad, hess = 0, 0.0, np.zeros(p), np.zeros((p, p))
    t_sum = t_square = 0.0
    for x, y in rows:
        h = _output_inputs(params, hidden, np.asarray(x, np.float64))
        xt = np.concatenate([h, np.ones((len(h), 1))], axis=1)
        t = np.asarray(y, np.float64).ravel()
        e = xt @ theta - t
        t_sum, t_square = t_sum + float(t.sum()), t_square + float(t @ t)
        total += float(loss_per_row(e, loss, delta).sum())
        if loss == "huber":
            c = np.clip(e, -delta, delta)
            grad += xt.T @ c
            inside = xt[np.abs(e) <= delta]  # the rows where Huber is quadratic
            hess += inside.T @ inside
        else:  # MindSpore's MSELoss: mean of e**2
            grad += 2.0 * xt.T @ e
            hess += 2.0 * xt.T @ xt
        n += len(e)
    if n == 0:
        return {"criterion": CRITERION, "rows": 0, "converged": False}
    objective, grad, hess = total / n, grad / n, hess / n
    step = np.linalg.lstsq(hess, grad, rcond=1e-12)[0]
    # A gradient outside the range of the Hessian (rows all beyond delta along it): the local
    # model is linear there, the objective can still fall without bound: not converged.
    outside = np.linalg.norm(hess @ step - grad) > 1e-6 * max(np.linalg.norm(grad), 1e-30)
    excess = float("inf") if outside else 0.5 * float(grad @ step)
    relative = excess / max(objective, 1e-300)
    # Centred: the scale of what a fit explains (targets far from zero must not widen it).
    variance = max(t_square / n - (t_sum / n) ** 2, 0.0)
    exact = excess <= EXACT * variance
    return {"criterion": CRITERION, "rows": n, "objective": objective, "excess": excess,
            "relative_excess": relative, "tol": TOL, "exact_fit": bool(exact and relative > TOL),
            "converged": bool(relative <= TOL or exact),
            "assessed": "all parameters" if not hidden else "the output layer"}
