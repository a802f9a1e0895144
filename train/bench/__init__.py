"""`python -m train.bench [--quick] [--out DIR]`: where the time goes, side by side, in one run.

Rows (each the median of several repeats, each checking its trained parameters against the
reference run of the same data, so no optimisation can change the result unnoticed):
  seed       the seed article's loop: batch 1, a new Tensor per step, its jit step
  pipeline   this package in one process: GeneratorDataset into the jit step (batch 256..65536)
  prepared   the same step fed tensors made beforehand (pipeline efficiency = pipeline/prepared)
  torch      the same model, Huber loss and SGD in PyTorch eager on CPU (when torch is installed)
  numpy      the same SGD written by hand in NumPy: the practical ceiling on this machine
  Model.train  MindSpore's high-level Model.train on the same model, loss and data (no sink)
  dp2        2 ranks on CPU under msrun and under the mpirun bootstrap, against one process at
             the same global batch (the real trainer, through the real launch scripts)
  launch     seconds from starting the launch command to the end of the first optimizer step
Writes bench.json (rows + headline figures) and bench.png (samples/s against batch size).
`--memory_gib N` instead prints the trainer's own memory (RssAnon) on an N GiB .npy file against
a synthetic run (issue 12's memory claim).

Modules: `rows` (the MindSpore rows, in one process), `reference` (NumPy and PyTorch), `jobs`
(the real trainer through the launch scripts; the memory figure), `__main__` (the table,
bench.json and bench.png). This module holds what they share: the data and the constants.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np

LR, MOMENTUM, DELTA, SEED = 0.01, 0.9, 1.0, 0
# Parameters must agree to this (float32 sums in another order drift ~1e-5 at batch 65,536);
# tests/test_bench.py checks the MindSpore rows against each other bitwise.
PARAM_TOL = 1e-4
READ_EVERY = 50  # the loop reads the device's metrics once per log window (--log_every 50)
# The bench builds one jit step per row on purpose; MindSpore warns "compiled again" for each.
# Errors still print (GLOG_v=3); a user's own GLOG_v wins.
os.environ.setdefault("GLOG_v", "3")


def batches(batch: int, steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The stream's first `steps` batches, as the pipeline would deliver them."""
    from pipeline import DataSpec, SyntheticStream

    gen = SyntheticStream(DataSpec(), SEED)
    return [gen.rows(0, t * batch, batch) for t in range(steps)]


def timed(run: Callable[[], tuple[float, list[float]]], repeats: int) -> dict[str, Any]:
    """Median samples/s over repeats; every repeat's parameters must agree with the first."""
    rates, params = [], []
    for _ in range(repeats):
        rate, p = run()
        rates.append(rate)
        params.append(p)
    spread = max(abs(a - b) for p in params for a, b in zip(p, params[0]))
    return {"samples_per_s": statistics.median(rates), "repeats": repeats,
            "runs_s": rates, "params": params[0], "repeat_spread": spread}

