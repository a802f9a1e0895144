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

sm = pytest.importorskip("statsmodels.api", reason="statsmodels (pip install -e '.[test]')")
from statsmodels.robust.norms import HuberT  # noqa: E402

# (dataset, target column or None for its endog, feature columns or None for all)
TABLES = {
    "scotland": None, "stackloss": None, "ccard": None, "longley": None, "fair": None,
    "star98": 11,  # NABOVE on the first 11 of its 20 columns (the 303 x 12)
    "engel": None,  # not named in the issue: food expenditure on income
}


def public_table(name):
    d = getattr(sm.datasets, name).load_pandas()
    x = d.exog.iloc[:, :TABLES[name]] if TABLES[name] else d.exog
    y = d.endog if d.endog.ndim == 1 else d.endog.iloc[:, 0]
    return x.astype(float), y.astype(float).rename("target")


def rlm_fixed_delta(x, y, delta):
    """The exact optimum of mean Huber(delta) in the target's units: RLM with the scale 1."""
    a = sm.add_constant(x.to_numpy(), has_constant="add")
    r = sm.RLM(y.to_numpy(), a, M=HuberT(t=delta)).fit(
        scale_est=lambda *_: 1.0, update_scale=False, conv="coefs", tol=1e-14, maxiter=1000)
    return r.params[1:], r.params[0]


def error(w, b, ref_w, ref_b, x, y):
    sx, sy, mx = x.std(ddof=0).to_numpy(), y.std(ddof=0), x.mean().to_numpy()
    dw = np.asarray(w) - ref_w
    return max(float((np.abs(dw) * sx / sy).max()), abs(b - ref_b + dw @ mx) / sy)


@pytest.mark.parametrize("name", list(TABLES))
def test_defaults_reach_statsmodels_optimum_on_public_tables(tmp_path, name):
    x, y = public_table(name)
    x.assign(target=y).to_csv(tmp_path / "t.csv", index=False)
    r = train_cli(["--data", "t.csv", "--eval_fraction", "0", "--out", "run", "--quiet"],
                  tmp_path)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    default = sm.RLM(y.to_numpy(), sm.add_constant(x.to_numpy()), M=HuberT()).fit(
        tol=1e-12, maxiter=500)
    assert s["delta"] == pytest.approx(1.345 * default.scale, rel=1e-4)  # the robust scale
    ref_w, ref_b = rlm_fixed_delta(x, y, s["delta"])
    assert error(s["w"], s["b"], ref_w, ref_b, x, y) <= 1e-5  # the issue asks 1e-3
    assert s["converged"] is True and s["convergence"]["distance"] <= 1e-4
    assert s["finish"]["method"] == "newton" and s["finish"]["stopped"] in (
        "converged", "the float64 floor")


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
    default = sm.RLM(y, sm.add_constant(x), M=HuberT()).fit(tol=1e-12, maxiter=500)
    assert s["delta"] == pytest.approx(1.345 * default.scale, rel=0.05)  # its own training rows
    assert abs(s["w"][0] - 2) < 0.05 and s["converged"]  # least squares: 1.28 (10%), -1.46
    # The intercept keeps Huber's own bias under one-sided outliers (10%: ~0.2): the fit is
    # the fixed-delta optimum, which statsmodels finds on the same training rows.
    train = np.setdiff1d(np.arange(rows), s["data"]["held_out"]["indices"])
    ref_w, ref_b = rlm_fixed_delta(pd.DataFrame({"x": x[train]}), pd.Series(y[train]), s["delta"])
    assert error(s["w"], s["b"], ref_w, ref_b, pd.DataFrame({"x": x[train]}),
                 pd.Series(y[train])) <= 1e-5
    if outliers == 1:
        assert abs(s["b"] - 1) < 0.1
