"""train/loop.py: the training state it saves and restores (the loop itself runs end to end
through the command line in test_main.py, test_checkpoint.py and test_adversarial.py)."""

import numpy as np
import pytest

from train.checkpoint import Checkpoint
from train.loop import restore, state_tensors
from train.model import make_model, state_layout
from train.step import GuardedSGD, make_loss_scaler


@pytest.mark.parametrize("hidden", [[], [4, 3]])
@pytest.mark.parametrize("loss_scale", ["none", "dynamic", "256"])
def test_the_state_is_what_checkpoints_expect_and_restores_exactly(tmp_path, hidden, loss_scale):
    """state_layout (MindSpore-free, used to validate checkpoints before loading) describes
    exactly the tensors the live optimizer and loss scaler hold."""
    opt = GuardedSGD(make_model(3, 0, hidden).trainable_params())
    tensors = state_tensors(opt, make_loss_scaler(loss_scale))
    layout = state_layout(3, hidden)
    if loss_scale != "none":
        layout["loss_scale.value"] = ((), "float32")
    if loss_scale == "dynamic":
        layout["loss_scale.counter"] = ((), "int32")
    assert {n: (tuple(p.shape), str(p.asnumpy().dtype)) for n, p in tensors.items()} == layout
    saved = {n: np.full(p.shape, 7, p.asnumpy().dtype) for n, p in tensors.items()}
    restore(tensors, Checkpoint(5, saved, {}, tmp_path / "x"))
    assert all(np.all(p.asnumpy() == 7) for p in tensors.values())
