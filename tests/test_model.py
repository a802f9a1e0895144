"""train/model.py: the linear model starts from the seed, identically everywhere."""

import numpy as np

from train.model import linear_params, make_model


def test_same_seed_same_start_and_different_seed_different_start():
    a, b, c = make_model(3, 0), make_model(3, 0), make_model(3, 1)
    np.testing.assert_array_equal(a.weight.asnumpy(), b.weight.asnumpy())
    assert not np.array_equal(a.weight.asnumpy(), c.weight.asnumpy())
    w, bias = linear_params(a)
    assert len(w) == 3 and bias == 0.0
