"""The data source of a run, as the trainer sees it: the row stream, the held-out rows, the
number of steps per epoch, and the units the results are reported in.

`open_source(cfg, world_size)` returns a `SyntheticSource` (no `--data`) or a `FileSource`
(pipeline/files.py). Neither imports MindSpore, so that a bad data file is refused before any
process group starts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.synthetic import DataSpec, SyntheticStream


class SyntheticSource:
    """y = x·w + b + noise (+ outliers), generated; results are in the data's own units."""

    loss_unit = 1.0  # losses are reported in the units the model trains in
    stats = None  # no standardization
    identity = None  # nothing on disk to fingerprint

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        spec = DataSpec(features=cfg.features, true_w=cfg.true_w, true_b=cfg.true_b,
                        noise_std=cfg.noise_std, outlier_fraction=cfg.outlier_fraction,
                        outlier_scale=cfg.outlier_scale)
        self.stream = SyntheticStream(spec, cfg.seed)
        self.features = cfg.features
        self.steps_per_epoch = cfg.steps_per_epoch

    def eval_rows(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The clean held-out set (its own stream, no outliers)."""
        return self.stream.eval_set(size)

    def sample_rows(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The first n training rows (epoch 0), in the data's units."""
        return self.stream.rows(0, 0, n)

    def curve_x(self) -> np.ndarray:
        """Where to draw the learned function (one feature): the range x is drawn from."""
        return np.linspace(-10.0, 10.0, 101)

    def to_model(self, x: np.ndarray) -> np.ndarray:
        """Features in the units the model trains in (here: as they are)."""
        return x.astype(np.float32)

    def from_model(self, y: np.ndarray) -> np.ndarray:
        """Model outputs in the target's units (here: as they are)."""
        return y

    def max_eval_rows(self) -> int:
        """Held-out rows available (the synthetic stream has as many as asked for)."""
        return 1 << 62

    def loss_delta(self, delta: float) -> float:
        """The Huber delta in the units the model trains in."""
        return delta

    def params_in_units(self, wb: tuple[list[float], float] | None
                        ) -> tuple[list[float], float] | None:
        """Learned (w, b) in the data's units (here: as trained)."""
        return wb

    def summary_extra(self, wb: Any) -> dict[str, Any]:
        """Source-specific summary fields."""
        return {"true_w": self.cfg.true_w, "true_b": self.cfg.true_b}

    def describe(self) -> str:
        """One line for --dry_run."""
        return (f"data: synthetic, {self.features} feature(s), {self.steps_per_epoch} steps "
                "per epoch of fresh rows")


def resolve_auto(cfg: Any) -> None:
    """Fill the synthetic source's automatic values in place: delta 1.0, no standardization."""
    if cfg.delta is None:
        cfg.delta = 1.0
    if cfg.standardize:
        from train.config import ConfigError

        raise ConfigError("--standardize true is for --data files; the synthetic rows are "
                          "generated in known units")
    cfg.standardize = False


def open_source(cfg: Any, world_size: int) -> Any:
    """The source a config names; resolves its automatic values (delta, standardize) in cfg."""
    if cfg.synthetic:
        resolve_auto(cfg)
        return SyntheticSource(cfg)
    from pipeline.files import FileSource

    return FileSource.open(cfg, world_size)
