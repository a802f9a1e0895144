"""`python -m train.bench --fits`: the defaults on public tables (statsmodels' datasets) and on
large generated ones, against statsmodels' RLM: the optimum of the same fixed-delta Huber
objective (HuberT(t=delta), the scale held at 1; above 100,000 rows SciPy's BFGS, since RLM
runs out of memory there) and the automatic delta (1.345 x the scale of RLM's default fit).
Errors in standardized units: a weight's error x its column's std / the target's std; the
intercept's at the columns' means. Needs statsmodels (the `test` extra)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from train.launch import TRAINER
from train.rundir import read_summary

RLM_ROWS = 100_000  # statsmodels' RLM up to this many rows; SciPy's BFGS beyond
# dataset -> (feature columns: None = all, or how many of the first; categorical columns).
# Left out: modechoice, whose 0/1 target is 0 in 75% of rows: every robust scale is 0 there
# (RLM's 4e-20), and a Huber regression of a binary target means nothing.
PUBLIC = {"scotland": (None, ()), "stackloss": (None, ()), "star98": (11, ()),
          "ccard": (None, ()), "longley": (None, ()), "fair": (None, ()),
          "engel": (None, ()), "cpunish": (None, ()), "copper": (None, ()),
          "randhie": (None, ()), "statecrime": (None, ()),
          "grunfeld": (None, ("firm",))}


def _public(name: str) -> tuple[Any, Any, tuple[str, ...]]:
    import statsmodels.api as sm

    d = getattr(sm.datasets, name).load_pandas()
    first, categorical = PUBLIC[name]
    x = d.exog.iloc[:, :first] if first else d.exog
    y = d.endog if d.endog.ndim == 1 else d.endog.iloc[:, 0]
    return x, y.astype(float).rename("target"), categorical


def _generated(rows: int, features: int, outliers: float, seed: int) -> tuple[Any, Any]:
    """Columns at offsets up to 1e4 and scales 0.01-100, y = x w + 7 + N(0, 1), a share of
    one-sided outliers of 20-100."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(-2, 2, features)
    x = rng.normal(size=(rows, features)) * scale + rng.uniform(-1e4, 1e4, features)
    w = rng.normal(size=features) / scale
    y = (x - x.mean(axis=0)) @ w + 7 + rng.normal(size=rows)
    hit = rng.random(rows) < outliers
    y[hit] += rng.uniform(20, 100, hit.sum())
    return (pd.DataFrame(x, columns=[f"x{j}" for j in range(features)]),
            pd.Series(y, name="target"))


def _design(x: Any, categorical: tuple[str, ...]) -> Any:
    """The numeric design as the package builds it: drop-first dummies, levels sorted."""
    import pandas as pd

    cols = {}
    for c in x.columns:
        if c not in categorical:
            cols[c] = x[c].astype(float)
            continue
        text = x[c].astype(str)
        for level in sorted(set(text))[1:]:  # the first sorted level is the reference
            cols[f"{c}={level}"] = (text == level).astype(float)
    return pd.DataFrame(cols)


def _rlm(design: Any, y: Any, delta: float | None) -> tuple[np.ndarray, float, float]:
    """(weights, intercept, scale): the fixed-delta optimum, or (delta None) RLM's default."""
    import statsmodels.api as sm
    from statsmodels.robust.norms import HuberT

    a = sm.add_constant(design.to_numpy(), has_constant="add")
    if delta is None:
        r = sm.RLM(y.to_numpy(), a, M=HuberT()).fit(tol=1e-12, maxiter=500)
    else:
        r = sm.RLM(y.to_numpy(), a, M=HuberT(t=delta)).fit(
            scale_est=lambda *_: 1.0, update_scale=False, conv="coefs", tol=1e-14, maxiter=1000)
    return r.params[1:], float(r.params[0]), float(r.scale)


def _scipy(design: Any, y: Any, delta: float) -> tuple[np.ndarray, float]:
    """The fixed-delta optimum by SciPy's BFGS, in standardized columns (statsmodels' RLM
    takes an SVD of the whole design, n x n: out of memory at 200,000 rows)."""
    from scipy.optimize import minimize

    x = design.to_numpy(float)
    mx, sx, t = x.mean(axis=0), x.std(axis=0), y.to_numpy(float)
    z = np.concatenate([(x - mx) / sx, np.ones((len(x), 1))], axis=1)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        e = z @ theta - t
        c = np.clip(e, -delta, delta)
        return float(np.mean(c * (e - c / 2))), z.T @ c / len(e)

    start = np.linalg.lstsq(z, t, rcond=None)[0]
    theta = minimize(objective, start, jac=True, method="BFGS", options={"gtol": 1e-13}).x
    w = theta[:-1] / sx
    return w, float(theta[-1] - w @ mx)


def _error(s: dict[str, Any], design: Any, y: Any, ref_w: np.ndarray, ref_b: float) -> float:
    order = [s["features"].index(c) for c in design.columns]
    dw = np.asarray(s["w"])[order] - ref_w
    sx, sy, mx = design.std(ddof=0).to_numpy(), y.std(ddof=0), design.mean().to_numpy()
    return max(float((np.abs(dw) * sx / sy).max()), abs(s["b"] - ref_b + dw @ mx) / sy)


def fit_one(root: Path, name: str, x: Any, y: Any, categorical: tuple[str, ...] = ()
            ) -> dict[str, Any]:
    """One table through `python -m train` (defaults, no held-out rows) and statsmodels."""
    path = root / f"{name}.csv"
    x.assign(target=y).to_csv(path, index=False)
    out = root / f"fit-{name}"
    t0 = time.perf_counter()
    cmd = [*TRAINER, "--data", str(path), "--eval_fraction", "0",
           "--out", str(out), "--quiet"]
    if categorical:
        cmd += ["--categorical", ",".join(categorical)]
    env = dict(os.environ, TRAIN_CACHE_DIR=str(root / "cache"))
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    s = read_summary(out)
    design = _design(x, categorical)
    small = len(y) <= RLM_ROWS
    ref_w, ref_b = _rlm(design, y, s["delta"])[:2] if small else _scipy(design, y, s["delta"])
    ratio = s["delta"] / (1.345 * _rlm(design, y, None)[2]) if small else float("nan")
    return {"table": name, "rows": len(y), "columns": design.shape[1] + 1,
            "error": _error(s, design, y, ref_w, ref_b), "wall_s": wall,
            "converged": s["converged"], "distance": s["convergence"]["distance"],
            "passes": s["finish"].get("passes"), "delta_vs_rlm": ratio,
            "reference": "statsmodels RLM" if small else "SciPy BFGS"}


def run_fits(root: Path, quick: bool = False) -> list[dict[str, Any]]:
    """Every public table, then the generated ones (200k x 20; 1M x 3, 5% outliers)."""
    found = [fit_one(root, n, *_public(n)) for n in PUBLIC]
    sizes = [(20_000, 20, 0.05)] if quick else [(200_000, 20, 0.05), (1_000_000, 3, 0.05)]
    for rows, features, share in sizes:
        found.append(fit_one(root, f"generated-{rows}x{features}",
                             *_generated(rows, features, share, seed=rows)))
    return found
