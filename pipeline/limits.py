"""What data may hold, and the error for data that cannot be used.

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


class DataError(ValueError):
    """A data file or option that cannot work; one line for the console (exit 2)."""


def synthetic_bound(true_w: float, features: int, true_b: float, noise_std: float,
                    outlier_scale: float) -> float:
    """The largest |y| the synthetic source makes (x within 10 sigma, noise within 40 sigma),
    which float32 training must hold with room for the loss."""
    return (10 * abs(true_w) * features + abs(true_b) + 40 * noise_std + 1.5 * outlier_scale)
