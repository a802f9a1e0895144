"""The data of a run, in two stages: what it is before any option is resolved (`open_data`:
a `SyntheticData` or a validated `FileData`, each stating the facts the plan decides the options
left automatic from), and the source the trainer reads once the plan has resolved them
(`data.source(spec, world, automatic)`): the row stream, the held-out rows, and the units the
results are reported in. Both read a `DataSpec` (pipeline/spec.py), never the config.

Nothing here imports MindSpore, so that a bad data file is refused before any process group
starts; nothing here decides an option: the data states facts (its rows, its statistics) and
the plan decides (train/plan.py, train/auto.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.spec import DataSpec
from pipeline.synthetic import SyntheticStream

if TYPE_CHECKING:
    from pipeline.files import FileData

OBJECTIVE_ROWS = 1 << 18  # first-epoch rows the convergence check reads


class SyntheticSource:
    """y = x·w + b + noise (+ outliers), generated; results are in the data's own units."""

    loss_unit = 1.0  # losses are reported in the units the model trains in
    stats = None  # no standardization

    def __init__(self, spec: DataSpec) -> None:
        self.spec = spec
        self.stream = SyntheticStream(spec, spec.seed)
        self.features = spec.features
        self.steps_per_epoch = spec.steps_per_epoch

    def changed(self) -> bool:
        """Generated rows do not change under a run."""
        return False

    def failure(self) -> Exception | None:
        """Generated rows cannot fail to read."""
        return None

    def hold(self) -> str:
        """Nothing to hold."""
        return ""

    @property
    def columns(self) -> list[str]:
        """The features' names (x0, x1, ...), then the target's (y)."""
        return [f"x{j}" for j in range(self.features)] + ["y"]

    def objective_rows(self) -> Any:
        """The rows the objective is measured on: the first OBJECTIVE_ROWS of the first epoch
        (the population is infinite; a sample this size measures its objective to ~1e-3), as
        (x, y) chunks. The same whatever the batch or the number of ranks."""
        for i in range(0, OBJECTIVE_ROWS, 1 << 16):
            yield self.stream.rows(0, i, 1 << 16)

    def target_mean(self) -> float:
        """The mean target of the first epoch's rows (the model that predicts it)."""
        ys = [y for _, y in self.objective_rows()]
        return float(np.concatenate(ys).astype(np.float64).mean())

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
        return {"true_w": self.spec.true_w, "true_b": self.spec.true_b}

    def describe(self) -> str:
        """One line for --dry_run."""
        return (f"data: synthetic, {self.features} feature(s), {self.steps_per_epoch} steps "
                "per epoch of fresh rows")


class SyntheticData:
    """The synthetic source before the options are resolved: nothing to read or check."""

    kind = "synthetic"  # generated rows in known units (train/auto.py decides from the kind)
    identity = None  # nothing on disk to fingerprint
    train_rows = None  # an infinite population: every epoch draws fresh rows

    def __init__(self, spec: DataSpec) -> None:
        self.features = spec.features

    def source(self, spec: DataSpec, world: int, automatic: set[str]) -> SyntheticSource:
        """The source the trainer reads, for a resolved spec."""
        return SyntheticSource(spec)


def open_data(spec: DataSpec, stop: Callable[[], None] | None = None) -> SyntheticData | FileData:
    """The data a spec names: `SyntheticData`, or a `FileData` validated (once, cached);
    `stop()` is called during long work and raises to abandon it."""
    if spec.synthetic:
        return SyntheticData(spec)
    from pipeline.files import FileData

    return FileData(spec, stop)
