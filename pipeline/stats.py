"""Statistics of a table's training rows, in one streaming pass: mean, standard deviation,
minimum and maximum of every column, and the automatic Huber delta.

The delta is 1.345 times the robust scale (1.4826 x the median absolute deviation) of the
residuals of a least-squares fit, the classical choice (95% efficiency at Gaussian noise,
Huber 1964).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.formats import CHUNK
from pipeline.split import Split

HUBER_TUNING = 1.345  # delta = 1.345 sigma: 95% efficiency under Gaussian noise (Huber, 1964)
DELTA_SAMPLE = 200_000  # residuals used for the robust scale of the first fit


def _combine(n: int, mean: np.ndarray, m2: np.ndarray, chunk: np.ndarray
             ) -> tuple[int, np.ndarray, np.ndarray]:
    """Chan's parallel update of (count, mean, sum of squared deviations) with a chunk."""
    k = len(chunk)
    if k == 0:
        return n, mean, m2
    cm = chunk.mean(axis=0)
    cm2 = ((chunk - cm) ** 2).sum(axis=0)
    total = n + k
    d = cm - mean
    return total, mean + d * k / total, m2 + cm2 + d * d * n * k / total


def statistics(table: np.ndarray, split: Split) -> dict[str, Any]:
    """One streaming pass over the training rows: mean, std, min and max of every column,
    and the automatic delta from the residuals of a least-squares fit."""
    cols = table.shape[1]
    n, mean, m2 = 0, np.zeros(cols), np.zeros(cols)
    lo, hi = np.full(cols, np.inf), np.full(cols, -np.inf)
    xtx, xty = np.zeros((cols, cols)), np.zeros(cols)
    for i in range(0, split.rows, CHUNK):
        idx = np.arange(i, min(i + CHUNK, split.rows))
        chunk = np.asarray(table[i:i + CHUNK], np.float64)[split.is_train(idx)]
        n, mean, m2 = _combine(n, mean, m2, chunk)
        if len(chunk):
            lo, hi = np.minimum(lo, chunk.min(axis=0)), np.maximum(hi, chunk.max(axis=0))
        x1 = np.concatenate([chunk[:, :-1], np.ones((len(chunk), 1))], axis=1)
        xtx += x1.T @ x1
        xty += x1.T @ chunk[:, -1]
    std = np.sqrt(m2 / max(n, 1))
    stats = {"rows": n, "mean": mean.tolist(), "std": std.tolist(), "min": lo.tolist(),
             "max": hi.tolist()}
    stats["delta"] = _robust_delta(table, split, np.linalg.lstsq(xtx, xty, rcond=None)[0])
    return stats


def _robust_delta(table: np.ndarray, split: Split, coef: np.ndarray) -> float:
    """1.345 times the residuals' robust scale (1.4826 x median absolute deviation) of the
    least-squares fit, on an evenly spread sample of training rows."""
    pos = np.linspace(0, split.train_rows - 1, min(DELTA_SAMPLE, split.train_rows)).astype(int)
    rows = np.asarray(table[np.sort(split.rows_at(split.train_blocks, pos))], np.float64)
    resid = rows[:, -1] - rows[:, :-1] @ coef[:-1] - coef[-1]
    mad = float(np.median(np.abs(resid - np.median(resid))))
    scale = 1.4826 * mad
    if not scale > 0:  # a perfect fit: any small delta will do
        scale = 1e-6 * max(float(np.std(rows[:, -1])), 1e-12)
    return HUBER_TUNING * scale
