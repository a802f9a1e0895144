"""Your network and loss in a run (`--model`, `--loss MODULE:NAME`): built through
train/user.py, checked once, then trained by the same step as the built-in model.

Built on every rank after the device, the ranks and the seed are set (`ms.set_seed(seed)`, which
also seeds NumPy's global generator and MindSpore's initializers), so every rank builds the same
parameters; the plan checks that they are bitwise the same and otherwise takes rank 0's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from train.config import Config
from train.user import UserCodeError, call, resolve


def build_model(cfg: Config) -> Any:
    """`--model`'s callable with `--model_args` (and `config=`), seeded; an `nn.Cell`."""
    import mindspore as ms
    from mindspore import nn

    fn = resolve(cfg.model, "model")
    ms.set_seed(cfg.seed)
    net = call(fn, f"--model {cfg.model}", cfg.model_args, cfg)
    if not isinstance(net, nn.Cell):
        raise UserCodeError(f"--model {cfg.model} returned a {type(net).__name__}, not an "
                            "mindspore.nn.Cell")
    if not net.trainable_params():
        raise UserCodeError(f"--model {cfg.model} returned a network without trainable "
                            "parameters")
    return net


def make_user_loss(cfg: Config) -> Any:
    """`--loss MODULE:NAME`'s callable (and `config=`): a Cell (prediction, target) -> scalar."""
    from mindspore import nn

    loss = call(resolve(cfg.loss, "loss"), f"--loss {cfg.loss}", {}, cfg)
    if not isinstance(loss, nn.Cell):
        raise UserCodeError(f"--loss {cfg.loss} returned a {type(loss).__name__}, not an "
                            "mindspore.nn.Cell (prediction, target) -> scalar")
    return loss


def check_outputs(model: Any, loss_fn: Any, source: Any, cfg: Config, low: bool) -> None:
    """One batch through the network and the loss, in one small graph: the loss must be one
    floating-point number, and a built-in loss needs predictions shaped like the targets
    (broadcasting (B, 1) against (B,) would silently compare every row with every other)."""
    import mindspore as ms

    x, y = source.stream.rows(0, 0, cfg.batch_size)  # an epoch has at least a global batch

    @ms.jit
    def probe(x: ms.Tensor, y: ms.Tensor) -> tuple[ms.Tensor, ms.Tensor]:
        pred = model(x)
        if low:
            pred = pred.astype(ms.float32)
        return pred, loss_fn(pred, y)

    got = probe(ms.Tensor(x), ms.Tensor(y))  # an error in your construct: exit 1, logged
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise UserCodeError("your network must return one tensor (the predictions)")
    pred, loss = got
    if not isinstance(pred, ms.Tensor):
        raise UserCodeError(f"--model {cfg.model or '(built-in)'} returned a "
                            f"{type(pred).__name__}, not a tensor of predictions")
    if not isinstance(loss, ms.Tensor) or int(np.prod(loss.shape)) != 1 \
            or not str(loss.dtype).lower().startswith(("float", "bfloat")):
        what = f"a {loss.dtype} tensor of shape {tuple(loss.shape)}" if isinstance(
            loss, ms.Tensor) else f"a {type(loss).__name__}"
        raise UserCodeError(f"--loss {cfg.loss} returned {what}, not a scalar (one "
                            "floating-point number: reduce over the batch, e.g. a mean)")
    if cfg.loss in ("huber", "mse") and tuple(pred.shape) != tuple(y.shape):
        raise UserCodeError(f"the built-in {cfg.loss} loss compares predictions with targets "
                            f"row by row: your network gives {tuple(pred.shape)} for targets "
                            f"{tuple(y.shape)}; return predictions shaped like y")

