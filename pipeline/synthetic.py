"""Counter-based synthetic rows: row i of (seed, stream, epoch) is a pure function of those four.

Why counter-based instead of a stateful RNG: a row's values depend only on its key and its
index, so any shard can compute exactly its own rows (O(rows) work) and the global stream is the
same whatever the number of shards, batch size or accumulation, which is what lets N ranks
reproduce one process. Every epoch draws fresh rows (the epoch is part of the key): the source is
an infinite population, so re-permuting a fixed set would only add memorisation, not realism.

Determinism: the uniforms are integer arithmetic (splitmix64) and are bit-identical everywhere.
x and the noise are computed in float64 and rounded to float32; only the Gaussian noise uses
transcendental functions (log, cos), whose float64 results may differ between libm builds in the
last bit, which changes the float32 value only when it falls within ~1e-16 of a rounding boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# splitmix64 constants (Steele, Lea & Flood 2014); uint64 arithmetic wraps, which is the intent.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK = (1 << 64) - 1

TRAIN_STREAM = 0  # training rows
EVAL_STREAM = 1  # held-out rows: a separate key, so never equal to any training row


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised over a uint64 array."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _key(seed: int, stream: int, epoch: int) -> np.uint64:
    """Fold (seed, stream, epoch) into one 64-bit key."""
    z = np.array([seed & _MASK], dtype=np.uint64)
    for part in (stream, epoch):
        z = _mix(z + _GOLDEN) ^ np.uint64(part & _MASK)
    return _mix(z)[0]


@dataclass(frozen=True)
class DataSpec:
    """What the rows look like: y = x·w + b + noise (+ an outlier error for some rows)."""

    features: int = 1  # columns of x, each ~ U(-10, 10)
    true_w: float = 2.0  # the same true weight for every feature
    true_b: float = 3.0  # true bias
    noise_std: float = 1.0  # std of the Gaussian noise added to y
    outlier_fraction: float = 0.0  # share of rows that get a large error in y
    outlier_scale: float = 50.0  # outlier error magnitude ~ U(0.5, 1.5) * scale, random sign


class SyntheticRegression:
    """Row generator keyed by (seed, stream, epoch, row index)."""

    def __init__(self, spec: DataSpec, seed: int) -> None:
        self.spec = spec
        self.seed = seed
        # Uniforms per row: features for x, two for Box-Muller, three for the outlier draw.
        self._ncols = spec.features + 5
        self._w = np.full(spec.features, spec.true_w, dtype=np.float64)

    def _uniforms(self, stream: int, epoch: int, start: int, count: int) -> np.ndarray:
        """A (count, ncols) float64 array of U[0, 1) for rows start..start+count."""
        key = _key(self.seed, stream, epoch)
        rows = np.arange(start, start + count, dtype=np.uint64)
        ctr = rows[:, None] * np.uint64(self._ncols) + np.arange(self._ncols, dtype=np.uint64)
        bits = _mix(key + (ctr + np.uint64(1)) * _GOLDEN)
        return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))

    def rows(
        self, epoch: int, start: int, count: int, stream: int = TRAIN_STREAM, clean: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows start..start+count of an epoch: x (count, features) and y (count, 1), float32.

        `clean=True` leaves out the outlier errors (the held-out set measures the true line).
        """
        s = self.spec
        u = self._uniforms(stream, epoch, start, count)
        f = s.features
        x = -10.0 + 20.0 * u[:, :f]
        # Box-Muller on (0, 1]: 1 - u is never 0, so the log is finite.
        noise = np.sqrt(-2.0 * np.log1p(-u[:, f])) * np.cos(2.0 * np.pi * u[:, f + 1])
        y = (x * self._w).sum(axis=1) + s.true_b + s.noise_std * noise
        if s.outlier_fraction > 0 and not clean:
            hit = u[:, f + 2] < s.outlier_fraction
            sign = np.where(u[:, f + 3] < 0.5, -1.0, 1.0)
            y = y + hit * sign * s.outlier_scale * (0.5 + u[:, f + 4])
        return x.astype(np.float32), y.astype(np.float32)[:, None]
