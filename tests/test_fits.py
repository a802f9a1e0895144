"""Fits on public tables the package has never seen (statsmodels' datasets, shipped with it),
with the defaults, against the statistician's tools: the optimum of the same fixed-delta Huber
objective (statsmodels' RLM with HuberT(t=delta) and the scale held at 1) and the automatic
delta (1.345 x the scale of statsmodels' default RLM: HuberT(1.345), MAD rescaling). Errors
in standardized units: a weight's error x its column's std / the target's std; the
intercept's at the columns' means."""

import json

import numpy as np
import pandas as pd
import pytest
from helpers import train_cli

pytestmark = pytest.mark.integration  # every test here starts a process

sm = pytest.importorskip("statsmodels.api", reason="statsmodels (pip install -e '.[test]')")
from train.bench.fits import _error, _public, _rlm, fit_one  # noqa: E402  (the bench's code)

# The six tables, one more, and one with a text column (`--categorical firm`).
TABLES = ["scotland", "stackloss", "star98", "ccard", "longley", "fair", "engel", "grunfeld"]


@pytest.mark.parametrize("name", TABLES)
def test_defaults_reach_statsmodels_optimum_on_public_tables(tmp_path, name):
    r = fit_one(tmp_path, name, *_public(name))
    assert r["error"] <= 1e-5, r  # the issue asks 1e-3
    assert r["delta_vs_rlm"] == pytest.approx(1.0, abs=1e-4)  # 1.345 x RLM's default scale
    assert r["converged"] is True and r["distance"] <= 1e-4 and r["passes"] >= 1
    s = json.loads((tmp_path / f"fit-{name}" / "summary.json").read_text())
    assert s["finish"]["stopped"] in ("converged", "the float64 floor")
    assert s["data"]["held_out"]["rows"] == 0 and s["data"]["train_rows"] == r["rows"]


def test_sklearns_huber_regressor_is_the_fit_at_epsilon_times_its_scale(tmp_path):
    """scikit-learn estimates a scale jointly: with alpha=0 its coefficients are the fixed
    delta fit at delta = epsilon x scale_ (docs/data.md: which numbers must agree)."""
    sklearn = pytest.importorskip("sklearn.linear_model", reason="scikit-learn (the test extra)")
    x, y, _ = _public("stackloss")
    h = sklearn.HuberRegressor(epsilon=1.345, alpha=0.0, max_iter=10_000, tol=1e-12).fit(
        x.to_numpy(), y.to_numpy())
    x.assign(target=y).to_csv(tmp_path / "t.csv", index=False)
    r = train_cli(["--data", "t.csv", "--eval_fraction", "0", "--delta",
                   repr(float(1.345 * h.scale_)), "--out", "run", "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    sx, sy = x.std(ddof=0).to_numpy(), y.std(ddof=0)
    assert np.abs((np.asarray(s["w"]) - h.coef_) * sx / sy).max() <= 1e-4
    ref_w, ref_b, _ = _rlm(x, y, s["delta"])  # and statsmodels' fixed-delta fit, closer
    assert np.abs((np.asarray(s["w"]) - ref_w) * sx / sy).max() <= 1e-6


def outliers_csv(path, rows, outlier_rows, size, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    y = 2 * x + 1 + rng.normal(size=rows)
    hit = np.zeros(rows, bool)
    hit[rng.choice(rows, outlier_rows, replace=False)] = True
    y[hit] += size
    np.savetxt(path, np.c_[x, y], delimiter=",", header="x,y", comments="", fmt="%.10g")
    return x, y


@pytest.mark.parametrize("rows,outliers,size", [(2001, 1, 3e7), (5000, 500, 1e5)])
def test_gross_outliers_do_not_switch_robustness_off(tmp_path, rows, outliers, size):
    """One row of 3e7 among 2,000 (the least-squares residuals' scale is ~1e4 there), or 10%
    of 1e5: the automatic delta stays near 1.345 sigma, and the fit is the robust one."""
    x, y = outliers_csv(tmp_path / "o.csv", rows, outliers, size)
    r = train_cli(["--data", "o.csv", "--out", "run", "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert 1.0 < s["delta"] < 2.0, s["delta"]
    train = np.setdiff1d(np.arange(rows), s["data"]["held_out"]["indices"])
    design, target = pd.DataFrame({"x": x[train]}), pd.Series(y[train])
    assert s["delta"] == pytest.approx(1.345 * _rlm(design, target, None)[2], rel=1e-4)
    assert abs(s["w"][0] - 2) < 0.05 and s["converged"]  # least squares: 1.28 (10%), -1.46
    # The intercept keeps Huber's own bias under one-sided outliers (10%: ~0.2): the fit is
    # the fixed-delta optimum, which statsmodels finds on the same training rows.
    assert _error(s, design, target, *_rlm(design, target, s["delta"])[:2]) <= 1e-5
    if outliers == 1:
        assert abs(s["b"] - 1) < 0.1


def test_tied_targets_keep_a_delta_float32_can_hold(tmp_path):
    """A rounded target with a categorical column: 90% of the rows lie exactly on the line, so
    the Huber fit's MAD is 0 (1e-15 in float64); delta falls back to the least-squares
    residuals' scale and the run converges instead of losing every row beyond delta."""
    rng = np.random.default_rng(0)
    d = rng.integers(0, 3, 5000)
    y = np.round(1 + d + 0.3 * rng.normal(size=5000))
    pd.DataFrame({"kind": np.array(["a", "b", "c"])[d], "noise": rng.normal(size=5000),
                  "y": y}).to_csv(tmp_path / "t.csv", index=False)
    r = train_cli(["--data", "t.csv", "--categorical", "kind", "--out", "run", "--quiet"],
                  tmp_path)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["delta"] > 1e-4 and s["converged"] is True
    assert abs(s["coefficients"]["kind=b"] - 1) < 0.01 and abs(s["b"] - 1) < 0.01
