"""train/loss.py: the hand-written Huber loss against MindSpore's and NumPy's, and its gradient."""

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from train.loss import HuberLoss, make_loss


def huber_np(pred, target, delta):
    e = np.abs(pred.astype(np.float64) - target)
    return np.where(e <= delta, 0.5 * e * e, delta * (e - 0.5 * delta))


def reduce_np(v, reduction):
    return {"mean": v.mean(), "sum": v.sum(), "none": v}[reduction]


CASES = [((7,), 1.0), ((16, 1), 0.5), ((4, 3, 5), 2.0), ((256, 1), 10.0), ((3, 2), 0.01)]


@pytest.mark.parametrize("shape,delta", CASES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_numpy_and_mindspore(shape, delta, reduction):
    rng = np.random.default_rng(hash((shape, delta)) % 2**32)
    pred = rng.normal(0, 3 * delta, shape).astype(np.float32)
    target = rng.normal(0, 3 * delta, shape).astype(np.float32)
    ours = HuberLoss(delta, reduction)(Tensor(pred), Tensor(target)).asnumpy()
    theirs = nn.HuberLoss(reduction, delta)(Tensor(pred), Tensor(target)).asnumpy()
    ref = reduce_np(huber_np(pred, target, delta), reduction)
    scale = max(1.0, float(np.max(np.abs(ref))))  # float32 has ~7 digits: compare relatively
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("delta", [0.3, 1.0, 4.0])
def test_gradient_is_the_clipped_error(reduction, delta):
    rng = np.random.default_rng(0)
    pred = rng.normal(0, 3, (50, 1)).astype(np.float32)
    target = rng.normal(0, 3, (50, 1)).astype(np.float32)
    loss = HuberLoss(delta, reduction)
    grad = ms.grad(lambda p, t: loss(p, t))(Tensor(pred), Tensor(target)).asnumpy()
    expected = np.clip(pred - target, -delta, delta) / (pred.size if reduction == "mean" else 1)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("delta", [0.0, -1.0])
def test_non_positive_delta_is_refused(delta):
    with pytest.raises(ValueError, match="delta must be > 0"):
        HuberLoss(delta)


def test_unknown_reduction_is_refused():
    with pytest.raises(ValueError, match="reduction must be one of mean, sum, none"):
        HuberLoss(1.0, "max")


def test_make_loss_choices():
    assert isinstance(make_loss("huber", 2.0), HuberLoss)
    assert isinstance(make_loss("mse"), nn.MSELoss)
    with pytest.raises(ValueError, match="huber, mse"):
        make_loss("l1")
