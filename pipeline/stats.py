"""Statistics of a table's training rows, in one streaming pass and in float64: mean, standard
deviation, minimum and maximum of every column, the least-squares fit, the curvature the
automatic learning rate needs, and the automatic Huber delta.

The pass accumulates the centred co-moment matrix (Chan's parallel update, chunk by chunk), so
that nothing is computed from raw sums of large numbers: a column like 1e7 + a small signal
keeps its signal. From it: the standard deviations (its diagonal), the correlation matrix of the
features, the least-squares fit in standardized units (the same fit the automatic delta and the
`least_squares` start use), and the largest eigenvalue of the second-moment matrix of
[features, 1] in standardized and in raw units (the curvature that bounds a stable step).

The delta is 1.345 times the robust scale (1.4826 x the median absolute deviation) of the
residuals of a Huber fit whose scale is re-estimated at every pass (statsmodels' RLM defaults),
the classical choice (95% efficiency at Gaussian noise, Huber 1964): taken from a fit that
itself resists outliers, so that one gross outlier cannot widen delta until Huber is least
squares.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.fileio import finite_numbers
from pipeline.formats import CHUNK
from pipeline.split import Split

HUBER_TUNING = 1.345  # delta = 1.345 sigma: 95% efficiency under Gaussian noise (Huber, 1964)
DELTA_SAMPLE = 200_000  # rows the robust fit behind the automatic delta uses


class _Moments:
    """Count, mean and centred co-moment matrix of rows, updated chunk by chunk (Chan et al.).
    The diagonal (`m2`) is kept apart, computed as earlier releases did, so that the means and
    standard deviations - stored with every checkpoint - stay bitwise theirs."""

    def __init__(self, cols: int) -> None:
        self.n, self.mean = 0, np.zeros(cols)
        self.m2, self.c = np.zeros(cols), np.zeros((cols, cols))

    def add(self, chunk: np.ndarray) -> None:
        k = len(chunk)
        if k == 0:
            return
        cm = chunk.mean(axis=0)
        d0 = chunk - cm
        total = self.n + k
        d = cm - self.mean
        self.m2 = self.m2 + (d0 ** 2).sum(axis=0) + d * d * self.n * k / total
        self.c += d0.T @ d0 + np.outer(d, d) * (self.n * k / total)
        self.mean = self.mean + d * k / total
        self.n = total

    def covariance(self) -> np.ndarray:
        """The covariance matrix, with the diagonal from `m2`."""
        cov = self.c / max(self.n, 1)
        np.fill_diagonal(cov, self.m2 / max(self.n, 1))
        return cov


def statistics(table: np.ndarray, split: Split, offset: np.ndarray) -> dict[str, Any]:
    """One streaming pass over the training rows (`table` values plus `offset`, the per-column
    shift a converted table was stored with); see the module docstring."""
    cols = table.shape[1]
    offset = np.asarray(offset, np.float64)
    mom = _Moments(cols)
    lo, hi = np.full(cols, np.inf), np.full(cols, -np.inf)
    for i in range(0, split.rows, CHUNK):
        idx = np.arange(i, min(i + CHUNK, split.rows))
        chunk = np.asarray(table[i:i + CHUNK], np.float64)[split.is_train(idx)]
        mom.add(chunk)  # centred: the offset changes only the mean
        if len(chunk):
            lo, hi = np.minimum(lo, chunk.min(axis=0)), np.maximum(hi, chunk.max(axis=0))
    n = max(mom.n, 1)
    mean, std = mom.mean + offset, np.sqrt(mom.m2 / n)
    stats = {"rows": mom.n, "mean": mean.tolist(), "std": std.tolist(),
             "min": (lo + offset).tolist(), "max": (hi + offset).tolist()}
    stats.update(_fit(mom.covariance(), mean, std))
    stats["delta"] = _robust_delta(table, split, offset, mean, stats["ls_w"])
    return stats


def _fit(cov: np.ndarray, mean: np.ndarray, std: np.ndarray) -> dict[str, Any]:
    """The least-squares fit (raw units) and the curvatures, from the covariance matrix."""
    sx = np.where(std[:-1] > 0, std[:-1], 1.0)  # a constant column is refused later
    corr = cov[:-1, :-1] / np.outer(sx, sx)
    xy = cov[:-1, -1] / sx
    w_std_x = np.linalg.lstsq(corr, xy, rcond=1e-10)[0]  # per unit of x's std, y's units
    w = w_std_x / sx
    b = float(mean[-1] - w @ mean[:-1])
    # Second moment of [x, 1]: standardized it is corr (x is centred) beside 1; raw it is
    # cov + mean mean' bordered by the mean.
    f = len(sx)
    raw = np.empty((f + 1, f + 1))
    raw[:f, :f] = cov[:-1, :-1] + np.outer(mean[:-1], mean[:-1])
    raw[:f, f] = raw[f, :f] = mean[:-1]
    raw[f, f] = 1.0
    return {"ls_w": w.tolist(), "ls_b": b,
            "curvature_std": max(float(np.linalg.eigvalsh(corr)[-1]), 1.0) if f else 1.0,
            "curvature_raw": float(np.linalg.eigvalsh(raw)[-1])}


def _robust_delta(table: np.ndarray, split: Split, offset: np.ndarray, mean: np.ndarray,
                  w: list[float]) -> float:
    """1.345 times the residuals' robust scale of a Huber fit with MAD rescaling (statsmodels'
    RLM defaults: HuberT(1.345), scale 1.4826 x the median absolute deviation, started at
    least squares), on an evenly spread sample of training rows, centred in float64."""
    rows = np.asarray(table[split.spread_rows(DELTA_SAMPLE)], np.float64)
    centred = rows + (offset - mean)
    x, y = centred[:, :-1], centred[:, -1]
    scale = huber_scale(x, y, np.asarray(w, np.float64))
    ls = y - x @ np.asarray(w, np.float64)
    ls_scale = _mad(ls - float(np.mean(ls)))  # the least-squares residuals' (with intercept)
    if not scale > 1e-6 * ls_scale:  # more than half the rows fit exactly (tied targets:
        scale = ls_scale  # counts, ratings): the robust scale is 0, delta would be rounding
    # A perfect fit (or nearly): any small delta will do, but one float32 can hold.
    return HUBER_TUNING * max(scale, 1e-6 * max(float(np.std(rows[:, -1])), 1e-12))


def _mad(r: np.ndarray) -> float:
    """1.4826 x the median absolute residual (about 0, as statsmodels' RLM takes it: the fit's
    intercept is what centres the residuals)."""
    return 1.4826 * float(np.median(np.abs(r)))


def huber_scale(x: np.ndarray, y: np.ndarray, w: np.ndarray, iterations: int = 100) -> float:
    """The robust scale of y - f(x) at the Huber M-estimate (iteratively reweighted least
    squares, the scale re-estimated by MAD at every pass, from the least-squares fit `w` with
    an intercept). A scale taken from the least-squares residuals would inherit the pull of a
    single gross outlier on the fit (1e7 in 2,000 rows makes it ~1e4); the Huber fit's weights
    give such a row ~1.345 x scale / |residual| of a say, so its residuals keep their scale."""
    sx = x.std(axis=0)
    sx[~(sx > 0)] = 1.0
    a = np.concatenate([x / sx, np.ones((len(x), 1))], axis=1)  # scaled: a well-posed solve
    beta = np.append(w * sx, float(np.mean(y - x @ w)))
    scale = _mad(y - a @ beta)
    for _ in range(iterations):
        r = y - a @ beta
        scale = _mad(r)
        if not scale > 0:
            return scale
        root = np.sqrt(np.minimum(1.0, HUBER_TUNING * scale / np.maximum(np.abs(r), 1e-300)))
        new = np.linalg.lstsq(a * root[:, None], y * root, rcond=1e-12)[0]
        moved = float(np.max(np.abs(new - beta)))
        beta = new
        if moved <= 1e-9 * scale:
            break
    return _mad(y - a @ beta)


_STATS_LISTS = ("mean", "std", "min", "max")


def usable(stats: dict[str, Any] | None, columns: int) -> bool:
    """A cached statistics record with every field, of the right types, lengths and signs
    (a record claiming a constant column or a zero delta is computed again, not trusted)."""
    if not isinstance(stats, dict):
        return False
    try:
        ok = all(len(stats[k]) == columns for k in _STATS_LISTS) and \
            len(stats["ls_w"]) == columns - 1
        positive = [*stats["std"], stats["delta"], stats["curvature_std"]]
        numbers = [*(v for k in _STATS_LISTS for v in stats[k]), *stats["ls_w"], stats["ls_b"],
                   stats["delta"], stats["curvature_std"], stats["curvature_raw"]]
        return (ok and finite_numbers(numbers) and all(v > 0 for v in positive)
                and stats["curvature_raw"] >= 0)
    except (KeyError, TypeError):
        return False
