"""The automatic values: what the plan (train/plan.py `resolve`) gives the options left out,
decided from the facts the data states (its kind, training rows, curvature, robust delta;
pipeline/source.py, pipeline/files.py, pipeline/user.py). The data layer states facts only;
the policy is here, in one place (docs/data.md, "Automatic values").

For a file: the global batch is the largest power of two <= train rows / ROWS_PER_BATCH, at
most MAX_BATCH (above 2**20 rows, train rows / MAX_EPOCH_STEPS, up to 65,536, so that an epoch
stays below ~8k steps); the epochs give about TARGET_STEPS optimizer steps (twice as many for
an MLP); the learning rate is 1 over the curvature of the data (the largest eigenvalue of the
second moment of [features, 1] in the units the model trains in).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.limits import DataError

if TYPE_CHECKING:
    from pipeline.files import FileData, FileSource
    from pipeline.source import SyntheticData
    from pipeline.user import UserData
    from train.config import Config

ROWS_PER_BATCH, MAX_BATCH, MAX_EPOCH_STEPS = 8, 256, 4096
TARGET_STEPS, MIN_EPOCHS, MAX_EPOCHS = 2000, 2, 1000
# A source of yours: a global batch of 64 (fewer for a small source), 5 epochs.
USER_GLOBAL_BATCH, USER_EPOCHS = 64, 5
# The synthetic source: the quick start's values (its rows are in known units).
SYNTHETIC = {"standardize": False, "delta": 1.0, "batch_size": 256, "epochs": 5, "lr": 0.01,
             "init": "random"}


def _pow2_floor(v: float) -> int:
    return 1 << max(0, int(v).bit_length() - 1)


def auto_global_batch(train_rows: int) -> int:
    """The automatic global batch for a file of `train_rows` training rows."""
    if train_rows > 1 << 20:
        return min(65536, max(MAX_BATCH, _pow2_floor(train_rows / MAX_EPOCH_STEPS)))
    return min(MAX_BATCH, _pow2_floor(max(train_rows / ROWS_PER_BATCH, 1)))


def auto_epochs(steps_per_epoch: int, target: int = TARGET_STEPS) -> int:
    """Epochs for about `target` optimizer steps (MIN_EPOCHS..MAX_EPOCHS)."""
    return min(MAX_EPOCHS, max(MIN_EPOCHS, -(-target // max(steps_per_epoch, 1))))


def suggested(cfg: Config, data: SyntheticData | FileData | UserData,
              world: int) -> dict[str, Any]:
    """What the data's facts suggest for every automatic option, given the options the user
    set (a given batch size sets the steps per epoch the epochs follow from, ...)."""
    if data.kind == "synthetic":
        return dict(SYNTHETIC)
    if data.kind == "user":  # rows taken as given; the lr is set for the optimizer in `choose`
        batch = cfg.batch_size or max(1, min(USER_GLOBAL_BATCH, data.train_rows // 8 or 1)
                                      // (world * cfg.accum_steps))
        return {"standardize": False, "delta": 1.0, "batch_size": batch,
                "epochs": USER_EPOCHS, "lr": 0.01, "init": "random"}
    return _file_suggested(cfg, data, world)


def _file_suggested(cfg: Config, data: FileData, world: int) -> dict[str, Any]:
    """A file's: standardized, delta and lr from its statistics, batch and epochs from its rows."""
    std = True if cfg.standardize is None else bool(cfg.standardize)
    linear = not cfg.hidden_sizes()
    batch = cfg.batch_size or max(
        1, auto_global_batch(data.train_rows) // (world * cfg.accum_steps))
    steps = data.train_rows // (batch * cfg.accum_steps * world)
    lr = 1.0 / data.curvature(std)
    return {"standardize": True, "delta": float(f"{data.robust_delta:.6g}"),
            "batch_size": batch, "lr": float(f"{lr:.4g}"),
            "epochs": auto_epochs(steps, TARGET_STEPS if linear else 2 * TARGET_STEPS),
            "init": "least_squares" if linear else "random"}


def choose(cfg: Config, data: SyntheticData | FileData | UserData,
           world: int) -> dict[str, Any]:
    """The values of the options left automatic (None, or `auto`), by name: the data's
    suggestion, except what your optimizer or network decides instead."""
    auto = {k: v for k, v in suggested(cfg, data, world).items()
            if getattr(cfg, k) in (None, "auto")}
    if "lr" in auto and (cfg.optimizer == "adamw" or cfg.model):
        auto["lr"] = 0.001 if cfg.optimizer == "adamw" else 0.01  # (the curvature's is SGD's)
    if "init" in auto and cfg.model:
        auto["init"] = "random"  # your network starts as it builds itself (seeded)
    return auto


def check_sink(cfg: Config, data: SyntheticData | FileData | UserData,
               source: FileSource | Any) -> None:
    """A file's steps per epoch must be a multiple of --sink_size: epoch ends must fall on sink
    calls (a DataError, exit 2; the synthetic steps per epoch are checked with the options)."""
    if data.kind == "file" and cfg.sink_size > 1 and source.steps_per_epoch % cfg.sink_size:
        raise DataError(f"{source.path} gives {source.steps_per_epoch} steps per epoch, not a "
                        f"multiple of --sink_size {cfg.sink_size} (epoch ends must fall on "
                        "sink calls)")
