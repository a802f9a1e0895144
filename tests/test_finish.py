"""train/finish.py: rank 0's Newton finish lands in the live network exactly, a stop during it
changes nothing, and the other ranks take rank 0's float32 result through the all-sum."""

from types import SimpleNamespace

import numpy as np
import pytest

from train.finish import FinishStopped, finish_line, finish_linear
from train.model import linear_params, make_model

CFG = SimpleNamespace(loss="mse", delta=1.0, optimizer="sgd", weight_decay=0.0)


def _source(unit=4.0):
    """Rows y = 2 x0 - 3 x1 + 0.5 + noise, in chunks, with the data's loss unit."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 2))
    y = (x @ [2.0, -3.0] + 0.5 + rng.normal(0, 0.1, 500))[:, None]
    return SimpleNamespace(loss_unit=unit, loss_delta=lambda d: d,
                           objective_rows=lambda: iter([(x[:300], y[:300]), (x[300:], y[300:])]),
                           x=x, y=y)


class _Rank0:
    is_main = True

    @staticmethod
    def all_sum(message):
        return message  # one process: the sum is its own message


def test_rank_0_finishes_at_least_squares_in_the_network():
    source, net, passes = _source(), make_model(2, 0), []
    done = finish_linear(net, CFG, source, _Rank0(), passes.append)
    best = np.linalg.lstsq(np.c_[source.x, np.ones(500)], source.y[:, 0], rcond=None)[0]
    w, b = linear_params(net)
    np.testing.assert_allclose([*w, b], best.astype(np.float32), rtol=0, atol=1e-6)
    assert done["method"] == "newton" and done["objective_after"] < done["objective_before"]
    assert passes and all(p["objective"] > 0 for p in passes)
    raw = float(np.mean((source.x @ best[:2] + best[2] - source.y[:, 0]) ** 2))
    assert done["objective_after"] == pytest.approx(4.0 * raw, rel=1e-9)  # the data's units
    assert finish_line(done).startswith(f"finish: {done['passes']} Newton passes")


def test_a_stop_during_the_finish_leaves_the_parameters():
    net = make_model(2, 0)
    before = linear_params(net)

    def stop(record):
        raise FinishStopped

    assert finish_linear(net, CFG, _source(), _Rank0(), stop) is None
    assert linear_params(net) == before


def test_another_rank_takes_rank_0s_result():
    net = make_model(2, 1)
    rank1 = SimpleNamespace(is_main=False,
                            all_sum=lambda m: m + np.array([0, 1.5, -2.5, 0.25], np.float32))
    done = finish_linear(net, CFG, _source(), rank1, lambda record: None)
    assert linear_params(net) == ([1.5, -2.5], 0.25) and done == {"method": "newton"}
    assert finish_line(done) == "finish: rank 0's Newton finish taken"
    stopped = SimpleNamespace(is_main=False, all_sum=lambda m: np.array([1, 9, 9, 9], np.float32))
    assert finish_linear(net, CFG, _source(), stopped, lambda record: None) is None
    assert linear_params(net) == ([1.5, -2.5], 0.25)  # rank 0 stopped: nothing assigned
