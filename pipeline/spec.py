"""The data layer's contract: `DataSpec` names everything pipeline/ reads of a run's options,
and nothing else. The plan builds it from the config (train/plan.py `data_spec`); pipeline/
never sees the config itself, so what the data depends on is this one list.

Two stages read it. Opening the data (`pipeline.source.open_data`) reads what the rows are:
the file and its columns, the held-out split, the seed, the synthetic parameters. The source
the trainer reads (`data.source(spec, world, automatic)`) also reads the values the plan
resolved: standardize, delta, the batch and the steps per epoch (None until then).

The defaults are the config's, so `DataSpec()` is the quick start's synthetic source and
`DataSpec(features=2)` a generator's spec (pipeline/synthetic.py takes the same class).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataSpec:
    """What the data layer needs to know of a run: the rows, their split and their units."""

    # The synthetic rows first, in the order of the generator's spec this one grew from, so
    # that a positional DataSpec(2) still means two features.
    features: int = 1  # synthetic: columns of x, each ~ U(-10, 10)
    true_w: float = 2.0  # synthetic: the same true weight for every feature
    true_b: float = 3.0  # synthetic: true bias
    noise_std: float = 1.0  # synthetic: std of the Gaussian noise added to y
    outlier_fraction: float = 0.0  # synthetic: share of rows that get a large error in y
    outlier_scale: float = 50.0  # synthetic: outlier error magnitude ~ U(0.5, 1.5) * scale
    data: str = ""  # a file of rows; "" = the synthetic generator
    target: str = ""  # a CSV's target column ("" = its last)
    columns: tuple[str, ...] = ()  # a CSV's feature columns by name (() = all but the target)
    categorical: tuple[str, ...] = ()  # a CSV's text columns to one-hot encode
    eval_data: str = ""  # a separate file of held-out rows ("" = hold out a share of `data`)
    eval_fraction: float = 0.1  # share of a file's rows held out, chosen by the seed
    drop_nonfinite: bool = False  # drop rows with a missing or non-finite cell instead of refusing
    seed: int = 0  # seeds the synthetic rows, or a file's split and epoch order
    standardize: bool | None = None  # train in standardized units (resolved by the plan)
    delta: float | None = None  # Huber threshold in the target's units (resolved by the plan)
    batch_size: int | None = None  # rows per rank per micro-batch (resolved by the plan)
    accum_steps: int = 1  # micro-batches per optimizer step
    steps_per_epoch: int = 200  # optimizer steps per epoch (a file's: resolved by the plan)

    @property
    def synthetic(self) -> bool:
        """True when the rows come from the built-in generator."""
        return not self.data

    def global_batch(self, world: int) -> int:
        """Rows per optimizer step across `world` ranks (once the batch is resolved)."""
        return self.batch_size * self.accum_steps * world
