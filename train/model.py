"""The model: one linear layer, y_hat = x·w + b, initialised from the seed."""

from __future__ import annotations

import numpy as np
from mindspore import Tensor, nn


def make_model(features: int, seed: int) -> nn.Dense:
    """`nn.Dense(features, 1)` with weights drawn from `seed`, so every rank starts identical.

    Drawing the initial values with NumPy (not MindSpore's global RNG) makes them independent of
    device, launch order and any other use of `ms.set_seed`, with no broadcast needed.
    """
    rng = np.random.default_rng([seed, 0x5EED])
    w = rng.normal(0.0, 0.1, size=(1, features)).astype(np.float32)
    return nn.Dense(features, 1, weight_init=Tensor(w), bias_init="zeros")


def linear_params(model: nn.Dense) -> tuple[list[float], float]:
    """The learned (w, b) as plain floats."""
    return model.weight.asnumpy().ravel().tolist(), float(model.bias.asnumpy()[0])


def format_params(w: list[float], b: float) -> str:
    """`w [2.0001]  b 2.9999` for console lines."""
    return "w [" + ", ".join(f"{v:.4f}" for v in w) + f"]  b {b:.4f}"
