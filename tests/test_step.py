"""train/step.py: accumulation equals the big batch; clipping bounds the update."""

import numpy as np
import pytest
from mindspore import Tensor, nn

from pipeline import DataSpec
from pipeline.synthetic import SyntheticRegression
from train.loss import make_loss
from train.model import make_model
from train.step import make_train_step


def train(batch, accum, steps=5, clip_norm=0.0, loss="huber", features=2):
    """Run `steps` optimizer steps on the stream's first rows; return the final parameters."""
    model = make_model(features, seed=0)
    opt = nn.SGD(model.trainable_params(), learning_rate=0.01, momentum=0.9)
    step = make_train_step(model, make_loss(loss, 1.0), opt, accum, clip_norm)
    gen = SyntheticRegression(DataSpec(features=features, outlier_fraction=0.2), seed=4)
    norms = []
    for t in range(steps):
        x, y = gen.rows(0, t * batch * accum, batch * accum)
        _, norm = step(Tensor(x.reshape(accum, batch, features)),
                       Tensor(y.reshape(accum, batch, 1)), Tensor(np.int32(0))).asnumpy()
        norms.append(float(norm))
    return np.concatenate([p.asnumpy().ravel() for p in opt.parameters]), norms


@pytest.mark.parametrize("loss", ["huber", "mse"])
@pytest.mark.parametrize("accum", [2, 4])
def test_accumulation_equals_one_big_batch(loss, accum):
    big, _ = train(batch=8 * accum, accum=1, loss=loss)
    small, _ = train(batch=8, accum=accum, loss=loss)
    np.testing.assert_allclose(small, big, rtol=0, atol=1e-5)
    start, _ = train(batch=8, accum=accum, loss=loss, steps=0)
    assert np.abs(big - start).max() > 1e-3  # the comparison is not between two no-ops


def test_clipping_bounds_the_first_update():
    start, _ = train(batch=64, accum=1, steps=0)
    clipped, norms = train(batch=64, accum=1, steps=1, clip_norm=0.5)
    free, _ = train(batch=64, accum=1, steps=1)
    assert norms[0] > 0.5  # the raw gradient is larger than the clip
    # First SGD step: update = lr * clipped gradient, so its norm is lr * clip_norm.
    np.testing.assert_allclose(np.linalg.norm(clipped - start), 0.01 * 0.5, rtol=1e-4)
    assert np.linalg.norm(free - start) > 0.01 * 0.5 * 1.5


def test_a_chunk_of_steps_indexed_in_the_graph_equals_one_step_per_call():
    """The pipeline hands the step K steps at once (pipeline/dataset.py); step i of a chunk must
    train exactly like the same rows fed alone."""
    gen = SyntheticRegression(DataSpec(features=2), seed=4)
    x, y = gen.rows(0, 0, 6 * 2 * 8)
    x, y = x.reshape(6 * 2, 8, 2), y.reshape(6 * 2, 8, 1)  # 6 steps of 2 micro-batches of 8
    results = []
    for chunked in (False, True):
        model = make_model(2, seed=0)
        opt = nn.SGD(model.trainable_params(), learning_rate=0.01, momentum=0.9)
        step = make_train_step(model, make_loss("huber", 1.0), opt, accum_steps=2)
        for t in range(6):
            if chunked:
                step(Tensor(x), Tensor(y), Tensor(np.int32(2 * t)))
            else:
                step(Tensor(x[2 * t:2 * t + 2]), Tensor(y[2 * t:2 * t + 2]), Tensor(np.int32(0)))
        results.append(np.concatenate([p.asnumpy().ravel() for p in opt.parameters]))
    np.testing.assert_array_equal(results[0], results[1])
