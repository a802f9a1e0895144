"""train/converge.py: the Newton step's estimate of how far an objective is above its optimum,
checked against optima computed independently (least squares; SciPy's minimiser)."""

import numpy as np
import pytest
from helpers import huber
from scipy.optimize import minimize

from train.converge import EXACT, TOL, measure


def rows(n=2000, f=3, seed=0, outliers=0.1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f))
    y = x @ np.arange(1.0, f + 1) + 0.5 + rng.normal(0, 0.3, n)
    hit = rng.random(n) < outliers
    y[hit] += rng.choice([-1, 1], hit.sum()) * 20
    return x, y[:, None]


def linear(theta):
    return {"weight": np.array([theta[:-1]], np.float32), "bias": np.array([theta[-1]],
                                                                            np.float32)}


def test_mse_excess_is_exact():
    """For MSE the objective is quadratic: the estimate is the true gap to the optimum."""
    x, y = rows(outliers=0)
    best = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y[:, 0], rcond=None)[0]
    off = best + np.array([0.05, -0.02, 0.01, 0.03])
    got = measure(linear(off), [], "mse", 1.0, [(x, y)])
    theta = np.asarray(linear(off)["weight"][0].tolist() + linear(off)["bias"].tolist())
    gap = np.mean((np.c_[x, np.ones(len(x))] @ theta - y[:, 0]) ** 2) - np.mean(
        (np.c_[x, np.ones(len(x))] @ best - y[:, 0]) ** 2)
    assert got["excess"] == pytest.approx(gap, rel=1e-6)
    assert got["converged"] is (got["relative_excess"] <= TOL)


@pytest.mark.parametrize("scale,converged", [(0.0, True), (0.05, False)])
def test_huber_estimate_against_scipys_optimum(scale, converged):
    x, y = rows()
    d = 0.5
    best = minimize(huber, np.zeros(4), args=(x, y, d), jac=True, method="BFGS",
                    options={"gtol": 1e-12}).x
    theta = best + scale * np.array([1.0, -1.0, 0.5, 0.2])
    got = measure(linear(theta), [], "huber", d, [(x[:1000], y[:1000]), (x[1000:], y[1000:])])
    true_gap = huber(np.concatenate([linear(theta)["weight"][0], linear(theta)["bias"]]), x, y,
                     d)[0] - huber(best, x, y, d)[0]
    assert got["rows"] == 2000 and got["converged"] is converged
    assert got["excess"] == pytest.approx(true_gap, rel=0.3, abs=1e-6)  # an estimate


def test_an_mlp_is_assessed_by_its_output_layer():
    x, y = rows(outliers=0)
    rng = np.random.default_rng(1)
    w0, b0 = rng.normal(size=(8, 3)).astype(np.float32), np.zeros(8, np.float32)
    h = np.maximum(x @ w0.T + b0, 0)
    out = np.linalg.lstsq(np.c_[h, np.ones(len(h))], y[:, 0], rcond=None)[0]
    params = {"0.weight": w0, "0.bias": b0, "2.weight": np.array([out[:-1]], np.float32),
              "2.bias": np.array([out[-1]], np.float32)}
    got = measure(params, [8], "mse", 1.0, [(x, y)])
    assert got["converged"] and got["assessed"] == "the output layer"
    params["2.bias"] = params["2.bias"] + 1.0
    assert not measure(params, [8], "mse", 1.0, [(x, y)])["converged"]


def test_an_exact_fit_has_converged():
    """Targets without noise: the optimum's objective is 0 and the float32 parameters' is
    rounding, so any excess is large relative to it. Within `EXACT` of the targets' scale the
    run has converged; a visibly wrong parameter has not."""
    x, _ = rows(outliers=0)
    y = (x @ np.array([1.0, 2.0, 3.0]) + 0.5)[:, None]
    exact = np.array([1.0, 2.0, 3.0, 0.5]) + np.array([3e-8, -2e-8, 1e-8, 2e-8])
    got = measure(linear(exact), [], "mse", 1.0, [(x, y)])
    assert got["relative_excess"] > TOL and got["excess"] <= EXACT * np.var(y)
    assert got["converged"] and got["exact_fit"]
    off = measure(linear(exact + np.array([0, 0, 0, 1e-3])), [], "mse", 1.0, [(x, y)])
    assert not off["converged"] and not off["exact_fit"]


def test_targets_far_from_zero_are_no_exact_fit():
    """The exact-fit bound follows the targets' spread, not their distance from zero: an
    unstandardized y = 300 + 0.5 x + small noise, a quarter above its optimum, has not
    converged (a bound on the raw mean square, 9e-5, would have called it exact)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 1))
    y = 300 + 0.5 * x + rng.normal(0, 0.01, (2000, 1))
    best = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y[:, 0], rcond=None)[0]
    got = measure({"weight": np.array([best[:-1]]), "bias": np.array([best[-1] + 0.005])}, [],
                  "mse", 1.0, [(x, y)])
    assert got["excess"] < EXACT * np.mean(y ** 2) and got["relative_excess"] > 0.1
    assert not got["converged"] and not got["exact_fit"]
