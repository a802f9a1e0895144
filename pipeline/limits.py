"""What data may hold (and how large a run may be), and the error for data that cannot be used.

The model trains in float32: a value beyond float32's range is inf there, a positive value
below its smallest normal number rounds to 0 (or a denormal), and squares of values near 1e19
overflow. These bounds are the pipeline's (it validates data files against them); the config
imports them for the synthetic source's options.
"""

from __future__ import annotations

import numpy as np

F32_MAX = float(np.finfo(np.float32).max)
F32_TINY = float(np.finfo(np.float32).tiny)  # 1.1754944e-38: smaller rounds to 0 or a denormal
# float32 training with room for the loss and its gradients: synthetic targets and
# unstandardized file values stay below this.
MAX_ABS_VALUE = 1e15
# The built-in MLP (`--hidden`), bounded by what compiles and measures in reasonable memory and
# time here (docs/FINDINGS.md, issue 23): 64 layers compiled in ~1 GB; 128 failed after 96 s
# at MindSpore's call depth limit, and 1,100 grew 250 MB/s while compiling. Widths and the
# weights between hidden layers bound the float64 pass over ~2M rows after training (the last
# width's square, the weights' count): a 1024-wide layer ran ~80 s longer than an 8-wide one.
MAX_LAYERS, MAX_WIDTH, MAX_HIDDEN_WEIGHTS = 64, 1024, 2**21
MLP_ACCEPTED = (f"up to {MAX_LAYERS} layer widths in 1-{MAX_WIDTH} such as 64,64, with at most "
                f"{MAX_HIDDEN_WEIGHTS:,} weights between them (e.g. 1024,1024,1024), or empty")
# The step counter is an int32 (train/step.py, checkpoints): epochs x steps per epoch below it.
MAX_STEPS = 2**31 - 1


class DataError(ValueError):
    """A data file or option that cannot work; one line for the console (exit 2)."""


def synthetic_bound(true_w: float, features: int, true_b: float, noise_std: float,
                    outlier_scale: float) -> float:
    """The largest |y| the synthetic source makes (x within 10 sigma, noise within 40 sigma),
    which float32 training must hold with room for the loss."""
    return (10 * abs(true_w) * features + abs(true_b) + 40 * noise_std + 1.5 * outlier_scale)


def mlp_fits(sizes: list[int]) -> bool:
    """True for hidden layer widths within the MLP's bounds above."""
    return (len(sizes) <= MAX_LAYERS and all(1 <= w <= MAX_WIDTH for w in sizes)
            and sum(a * b for a, b in zip(sizes, sizes[1:])) <= MAX_HIDDEN_WEIGHTS)
