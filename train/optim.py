"""The guarded optimizers: MindSpore's SGD and AdamW kernels whose update a non-finite step
skips bitwise, decided inside the graph (train/step.py says why the guard is arithmetic).

Their state has MindSpore's own optimizers' names, so checkpoints read the same either way.
"""

from __future__ import annotations

import numpy as np
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops


def decays(params: list[Parameter]) -> tuple[bool, ...]:
    """Which parameters weight decay applies to: MindSpore's optimizers' default filter
    (`nn/optim/optimizer.py`: not a LayerNorm/BatchNorm `beta` or `gamma`)."""
    return tuple("beta" not in p.name and "gamma" not in p.name for p in params)


class _Guarded(nn.Cell):
    """What both guarded optimizers share: the parameters, the step counter (counted whether
    the update is applied or skipped), and the 1.0 a skipped step puts in place of a decay
    rate (momentum, betas) so that the state stays as it is."""

    def __init__(self, params: list[Parameter]) -> None:
        super().__init__(auto_prefix=False)
        self.parameters = ParameterTuple(params)
        self.global_step = Parameter(Tensor(np.zeros(1, np.int32)), name="global_step")
        # The primitives, as MindSpore's own optimizers hold them (nn/optim/optimizer.py): the
        # functional ops.assign_add is deprecated (to be removed after 2.9.0).
        self.assign_add = ops.AssignAdd()
        self.one, self.hold = Tensor(np.ones(1, np.int32)), Tensor(np.float32(1.0))
        self.decay = decays(list(params))


class GuardedSGD(_Guarded):
    """SGD with momentum whose update is skipped, bitwise, for a non-finite step. Its state
    has `nn.SGD`'s names (`accum.*` momentum buffers, `stat.*` first-step flags,
    `global_step`), so checkpoints read the same either way. `weight_decay` adds
    `weight_decay * p` to the gradient first, as `nn.SGD` does (`Optimizer.decay_weight`)."""

    def __init__(self, params: list[Parameter], momentum: float,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params)
        self.accum = self.parameters.clone(prefix="accum", init="zeros")
        self.stat = self.parameters.clone(prefix="stat", init="ones")
        self.sgd = ops.SGD(0.0, 0.0, False)
        self.momentum, self.weight_decay = Tensor(np.float32(momentum)), weight_decay

    def construct(self, grads: tuple[Tensor, ...], lr: Tensor, ok: Tensor) -> Tensor:
        """Apply one update (lr a scalar tensor), or with `ok` false leave every parameter and
        buffer bitwise as it is (gradient 0, lr 0, momentum 1); count the step either way."""
        done = True
        lr = ops.where(ok, lr, 0.0)
        momentum = ops.where(ok, self.momentum, self.hold)
        for i in range(len(self.parameters)):
            g = grads[i]
            if self.weight_decay > 0 and self.decay[i]:  # a Python constant: compiled away at 0
                g = g + self.weight_decay * self.parameters[i]
            done = ops.depend(done, self.sgd(self.parameters[i], ops.where(ok, g, 0.0), lr,
                                             self.accum[i], momentum, self.stat[i]))
        self.assign_add(self.global_step, self.one)
        return done


class GuardedAdamW(_Guarded):
    """MindSpore's `nn.AdamWeightDecay` (its fused kernel `ops.AdamWeightDecay`, its defaults
    beta1 0.9, beta2 0.999, eps 1e-6 and its state names `adam_m.*`, `adam_v.*`,
    `global_step`) with the same bitwise skip as GuardedSGD: with `ok` false the gradient is 0,
    the lr 0 and both betas 1, so `m = 1·m + 0·g`, `v = 1·v + 0·g²` and `p = p - 0·update`
    leave everything as it was."""

    def __init__(self, params: list[Parameter], weight_decay: float = 0.0,
                 beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-6) -> None:
        super().__init__(params)
        self.moments1 = self.parameters.clone(prefix="adam_m", init="zeros")
        self.moments2 = self.parameters.clone(prefix="adam_v", init="zeros")
        self.adamw = ops.AdamWeightDecay()
        self.beta1, self.beta2 = Tensor(np.float32(beta1)), Tensor(np.float32(beta2))
        self.eps = Tensor(np.float32(eps))
        self.rates = tuple(Tensor(np.float32(weight_decay if d else 0.0)) for d in self.decay)

    def construct(self, grads: tuple[Tensor, ...], lr: Tensor, ok: Tensor) -> Tensor:
        """Apply one update, or skip it bitwise (above); count the step either way."""
        done = True
        lr = ops.where(ok, lr, 0.0)
        beta1, beta2 = ops.where(ok, self.beta1, self.hold), ops.where(ok, self.beta2, self.hold)
        for i in range(len(self.parameters)):
            done = ops.depend(done, self.adamw(self.parameters[i], self.moments1[i],
                                               self.moments2[i], lr, beta1, beta2, self.eps,
                                               self.rates[i], ops.where(ok, grads[i], 0.0)))
        self.assign_add(self.global_step, self.one)
        return done


def make_optimizer(name: str, params: list[Parameter], momentum: float,
                   weight_decay: float) -> nn.Cell:
    """The guarded optimizer the config names (`sgd` or `adamw`)."""
    if name == "adamw":
        return GuardedAdamW(params, weight_decay)
    return GuardedSGD(params, momentum, weight_decay)
