"""train/bench/: every benchmarked path trains to the same parameters (timings are the
benchmark's business, not the tests')."""

import mindspore as ms
import numpy as np
import pytest

from train.bench import PARAM_TOL, reference, rows


@pytest.fixture(autouse=True, scope="module")
def cpu():
    try:
        ms.set_device("CPU")
    except RuntimeError:  # another test module ran MindSpore in this process first: on CPU
        pass


@pytest.mark.parametrize("batch", [256, 20000])
def test_pipeline_prepared_and_numpy_agree(batch):
    steps = 70  # more than one chunk at batch 256 (64 steps per chunk), one per step at 20000
    rate, pipe = rows.run_pipeline(batch, steps)
    assert rate > 0
    _, prepared = rows.run_prepared(batch, steps)
    _, ref = reference.run_numpy(batch, steps)
    assert pipe == prepared  # bitwise: the same step on the same tensors
    np.testing.assert_allclose(pipe, ref, rtol=0, atol=PARAM_TOL)  # float32 sums differ
    _, start = reference.run_numpy(batch, 1)
    assert abs(pipe[1] - start[1]) > 1e-3  # it trained


def test_model_train_row_is_the_same_sgd():
    _, got = rows.run_model_train(256, 20)
    _, ref = reference.run_numpy(256, 20)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)


def test_seed_article_loop_is_the_same_sgd():
    _, got = rows.run_seed_loop(50)
    _, ref = reference.run_numpy(1, 50)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)


def test_torch_row_agrees_or_is_left_out():
    """torch is the optional `bench` extra: with it the row trains the same SGD, without it
    the row cannot run (and main() leaves it out, vs_torch_eager = null)."""
    if reference.torch_available():
        _, got = reference.run_torch(256, 30)
        _, ref = reference.run_numpy(256, 30)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    else:
        with pytest.raises(ImportError):
            reference.run_torch(256, 3)
