"""train/network.py: your network and loss are built seeded (every rank the same parameters)
and checked once, in one small graph, before any step: a wrong type, a loss that is no scalar
or predictions shaped unlike the targets is one UserCodeError. (Trained end to end through
`python -m train --model`: tests/test_user.py.)"""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from train.network import build_model, check_outputs, make_user_loss
from train.user import UserCodeError

USER = Path(__file__).parent / "user"


@pytest.fixture(autouse=True)
def user_code(monkeypatch):
    """tests/user/ importable, as a team's own folder would be."""
    monkeypatch.syspath_prepend(str(USER))


def _cfg(**kw):
    return SimpleNamespace(**{"model": "mynet:Net", "model_args": {"features": 3, "width": 4},
                              "seed": 0, "loss": "mse", "batch_size": 5, **kw})


def _params(net):
    return [p.asnumpy() for p in net.trainable_params()]


def test_the_network_is_built_from_the_seed():
    a, b = build_model(_cfg()), build_model(_cfg())
    assert all(np.array_equal(p, q) for p, q in zip(_params(a), _params(b)))
    c = build_model(_cfg(seed=1))
    assert not all(np.array_equal(p, q) for p, q in zip(_params(a), _params(c)))


@pytest.mark.parametrize("model, message", [
    ("broken:not_a_cell", "^--model broken:not_a_cell returned a dict, not an mindspore.nn.Cell$"),
    ("mynet:Rows", "returned a Rows, not an mindspore.nn.Cell"),
])
def test_a_model_that_is_no_cell_is_refused(model, message):
    with pytest.raises(UserCodeError, match=message):
        build_model(_cfg(model=model, model_args={}))


def test_a_user_loss_must_be_a_cell():
    assert type(make_user_loss(_cfg(loss="mynet:Pinball"))).__name__ == "Pinball"
    with pytest.raises(UserCodeError, match="^--loss broken:not_a_cell returned a dict, not an "
                                            r"mindspore.nn.Cell \(prediction, target\)"):
        make_user_loss(_cfg(loss="broken:not_a_cell"))


def _source(y_shape):
    x = np.ones((5, 3), np.float32)
    y = np.zeros(y_shape, np.float32)
    return SimpleNamespace(stream=SimpleNamespace(rows=lambda epoch, start, count: (x, y)))


def test_one_batch_checks_the_loss_and_the_shapes():
    from train.loss import make_loss

    net = build_model(_cfg())
    check_outputs(net, make_loss("mse", 1.0), _source((5, 1)), _cfg(), low=False)  # fine
    with pytest.raises(UserCodeError, match=r"your network gives \(5, 1\) for targets \(5,\)"):
        check_outputs(net, make_loss("mse", 1.0), _source((5,)), _cfg(), low=False)
    vector = make_user_loss(_cfg(loss="broken:VectorLoss"))
    with pytest.raises(UserCodeError, match=r"returned a Float32 tensor of shape \(5, 1\), not "
                                            "a scalar"):
        check_outputs(net, vector, _source((5, 1)), _cfg(loss="broken:VectorLoss"), low=False)
