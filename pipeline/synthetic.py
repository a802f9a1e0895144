"""Counter-based synthetic rows: row i of (seed, stream, epoch) is a pure function of those four.

Why counter-based instead of a stateful RNG: a row's values depend only on its key and its
index, so any shard can compute exactly its own rows (O(rows) work) and the global stream is the
same whatever the number of shards, batch size or accumulation, which is what lets N ranks
reproduce one process. Every epoch draws fresh rows (the epoch is part of the key): the source is
an infinite population, so re-permuting a fixed set would only add memorisation, not realism.

The generator is NumPy's Philox (a counter-based cipher whose bit stream NumPy keeps stable
across versions), one key per (seed, stream, epoch, column): column j of row i comes from
output i % 4 of counter block i // 4, so a slice of rows is one call per column, and columns a
run does not use (the outlier draws, when there are no outliers) are never computed. The
uniforms are (bits >> 11) * 2**-53, computed by `Generator.random` (its conversion is not
covered by NumPy's stream-stability policy; tests/test_synthetic.py pins it).

Determinism: the uniforms are integer arithmetic and bit-identical everywhere. x and the noise
are computed in float64 and rounded to float32; only the Gaussian noise uses transcendental
functions (log, sin), whose float64 results may differ between NumPy builds and CPU feature
sets in the last bit, which changes the float32 value only when it falls within ~1e-16 of a
rounding boundary.
"""

from __future__ import annotations

import numpy as np

from pipeline.dataset import TableRows
from pipeline.spec import DataSpec  # (its synthetic fields: what the rows look like)

TRAIN_STREAM = 0  # training rows
EVAL_STREAM = 1  # held-out rows: a separate key, so never equal to any training row
_MASK = (1 << 64) - 1


def _mix(z: int) -> int:
    """splitmix64 finaliser on a Python int (key derivation only, not per row)."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


class SyntheticRegression:
    """Row generator keyed by (seed, stream, epoch, row index); of the spec it reads the
    synthetic fields: y = x·w + b + noise (+ an outlier error for some rows)."""

    def __init__(self, spec: DataSpec, seed: int) -> None:
        self.spec = spec
        self.seed = seed
        self._w = np.full(spec.features, spec.true_w, dtype=np.float64)

    def _uniform(self, stream: int, epoch: int, column: int, start: int,
                 count: int) -> np.ndarray:
        """U[0, 1) float64 for rows start..start+count of one column: (raw >> 11) * 2**-53 of
        the Philox outputs, which is what `Generator.random` computes (in C, ~2x faster than
        the same two NumPy operations; a test pins the equality)."""
        key = np.array([_mix(_mix(self.seed) ^ stream), _mix(_mix(epoch) ^ column)],
                       dtype=np.uint64)
        block, skip = divmod(start, 4)
        bits = np.random.Philox(key=key, counter=np.array([block, 0, 0, 0], dtype=np.uint64))
        return np.random.Generator(bits).random(skip + count)[skip:]

    def rows(
        self, epoch: int, start: int, count: int, stream: int = TRAIN_STREAM, clean: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows start..start+count of an epoch: x (count, features) and y (count, 1), float32.

        `clean=True` leaves out the outlier errors (the held-out set measures the true line).
        Columns: 0..F-1 x, F and F+1 the noise (Box-Muller), F+2..F+4 the outlier draw.
        """
        s = self.spec
        f = s.features

        def u(col: int) -> np.ndarray:
            return self._uniform(stream, epoch, col, start, count)

        x = np.stack([u(j) for j in range(f)], axis=1) * 20.0 - 10.0
        # Box-Muller, one output: sqrt(-2 ln u1) * cos(theta) with theta uniform; cos of a
        # uniform angle on [0, 2pi) is distributed as sin on [-pi/2, pi/2), which NumPy computes
        # ~2.4x faster. u1 = 1 - u lies in (0, 1], so the log is finite; np.log is ~8x faster
        # than np.log1p here (both measured at 65,536 rows).
        angle = np.pi * (u(f + 1) - 0.5)
        noise = np.sqrt(-2.0 * np.log(1.0 - u(f))) * np.sin(angle)
        # Not `x @ w`: a BLAS dot may sum in a machine-dependent order.
        y = (x * self._w).sum(axis=1) + s.true_b + s.noise_std * noise
        if s.outlier_fraction > 0 and not clean:
            hit = u(f + 2) < s.outlier_fraction
            sign = np.where(u(f + 3) < 0.5, -1.0, 1.0)
            y = y + hit * sign * s.outlier_scale * (0.5 + u(f + 4))
        return x.astype(np.float32), y.astype(np.float32)[:, None]


class SyntheticStream(TableRows):
    """The synthetic source as the pipeline reads it (`pipeline.dataset.RowStream`): position
    i of epoch e is training row i of (seed, TRAIN_STREAM, e)."""

    def __init__(self, spec: DataSpec, seed: int) -> None:
        self.gen = SyntheticRegression(spec, seed)
        self.features = spec.features

    def rows(self, epoch: int, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """x (count, features), y (count, 1) float32."""
        return self.gen.rows(epoch, start, count, TRAIN_STREAM)

    def eval_set(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The held-out set: `size` clean rows (no outliers) from the evaluation stream."""
        return self.gen.rows(0, 0, size, EVAL_STREAM, clean=True)
