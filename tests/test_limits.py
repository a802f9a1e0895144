"""pipeline/limits.py: the float32 bounds mean what they say, and the MLP's size bounds admit
exactly the documented shapes."""

import numpy as np
import pytest

from pipeline.limits import (
    F32_MAX,
    F32_TINY,
    MAX_LAYERS,
    MAX_STEPS,
    MAX_WIDTH,
    DataError,
    mlp_fits,
    synthetic_bound,
)


def test_the_float32_bounds_are_float32s_edges():
    assert np.isfinite(np.float32(F32_MAX))
    with np.errstate(over="ignore"):  # the overflow is the point
        assert np.isinf(np.float32(np.float64(F32_MAX) * 1.001))  # beyond it: inf in float32
    half = np.float32(F32_TINY) / np.float32(2)  # below the smallest normal: a denormal
    assert 0 < half < np.float32(F32_TINY)
    assert MAX_STEPS == np.iinfo(np.int32).max  # the step counter is an int32


@pytest.mark.parametrize("sizes, fits", [
    ([], True),  # no hidden layer: the linear model
    ([1], True),
    ([MAX_WIDTH], True),
    ([MAX_WIDTH + 1], False),
    ([0], False),
    ([8] * MAX_LAYERS, True),
    ([8] * (MAX_LAYERS + 1), False),
    ([1024, 1024, 1024], True),  # 2 x 1024^2 weights between them: exactly the limit
    ([1024] * 4, False),  # 3 x 1024^2
])
def test_the_mlp_bounds(sizes, fits):
    assert mlp_fits(sizes) is fits


def test_the_synthetic_bound_is_the_documented_worst_case():
    """The worst |y| of the synthetic recipe (x within 10 sigma, noise within 40 sigma), which
    grows with every term whatever the signs."""
    base = synthetic_bound(2.0, 3, 1.0, 0.5, 10.0)
    assert base == pytest.approx(10 * 2.0 * 3 + 1.0 + 40 * 0.5 + 1.5 * 10.0)
    assert synthetic_bound(-2.0, 3, -1.0, 0.5, 10.0) == base  # signs do not lower it
    for grown in [(4.0, 3, 1.0, 0.5, 10.0), (2.0, 6, 1.0, 0.5, 10.0),
                  (2.0, 3, 1.0, 1.0, 10.0), (2.0, 3, 1.0, 0.5, 20.0)]:
        assert synthetic_bound(*grown) > base


def test_a_data_error_is_a_value_error():
    """Callers that refuse bad input by ValueError (argparse types, the config) catch it."""
    assert issubclass(DataError, ValueError)
