"""train/loop.py: the lr schedule, and restoring optimizer state (the loop itself runs end to end
in test_main.py and test_checkpoint.py through the command line)."""

import numpy as np
import pytest
from mindspore import nn

from train.checkpoint import Checkpoint, CheckpointError
from train.config import Config
from train.loop import _restore, _state_tensors, learning_rate
from train.model import make_model


def test_cosine_schedule_decays_from_lr_towards_zero():
    lr = learning_rate(Config(lr=0.1), 100).asnumpy()
    assert lr.shape == (100,) and lr[0] == pytest.approx(0.1) and lr[-1] < 1e-4
    assert np.all(np.diff(lr) < 0)
    assert learning_rate(Config(lr=0.1, lr_schedule="constant"), 100) == 0.1


def test_state_is_everything_but_the_lr_table_and_restores_exactly(tmp_path):
    model = make_model(2, 0)
    opt = nn.SGD(model.trainable_params(), learning_rate=learning_rate(Config(), 10),
                 momentum=0.9)
    names = set(_state_tensors(opt))
    assert {"weight", "bias", "global_step", "accum.weight", "accum.bias"} <= names
    assert not any(n.startswith("learning_rate") for n in names)
    saved = {n: np.full(p.shape, 7, p.asnumpy().dtype) for n, p in _state_tensors(opt).items()}
    _restore(opt, Checkpoint(5, saved, {}, tmp_path / "x"))
    assert all(np.all(p.asnumpy() == 7) for p in _state_tensors(opt).values())
    del saved["accum.bias"]
    with pytest.raises(CheckpointError, match="lacks \\['accum.bias'\\]"):
        _restore(opt, Checkpoint(5, saved, {}, tmp_path / "x"))
