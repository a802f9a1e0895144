"""Training losses: a hand-written Huber loss (the point of the seed article) and MSE to compare.

Huber is written in the clamp form `c = clamp(e, -delta, delta); loss = c * (e - c / 2)`, which
equals the textbook piecewise definition exactly (|e| <= delta: e²/2; else delta·(|e| - delta/2))
and whose gradient is clamp(e, -delta, delta) with no branch at all. The article's `select` form
computes both branches and a mask; the clamp form was measured ~5x cheaper for value-and-grad at
batch 65536 on CPU (docs/FINDINGS.md).
"""

from __future__ import annotations

from mindspore import Tensor, nn, ops

REDUCTIONS = ("mean", "sum", "none")


class HuberLoss(nn.LossBase):
    """Huber loss between predictions and targets, reduced by `mean`, `sum` or `none`."""

    def __init__(self, delta: float = 1.0, reduction: str = "mean") -> None:
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
        if not delta > 0:
            raise ValueError(f"delta must be > 0, got {delta!r}")
        super().__init__(reduction)
        self.delta = float(delta)

    def construct(self, logits: Tensor, labels: Tensor) -> Tensor:
        err = logits - labels
        clipped = ops.clamp(err, -self.delta, self.delta)
        return self.get_loss(clipped * (err - 0.5 * clipped))


def make_loss(name: str, delta: float = 1.0, reduction: str = "mean") -> nn.Cell:
    """The loss a config names: `huber` (ours) or `mse` (MindSpore's, for comparison)."""
    if name == "huber":
        return HuberLoss(delta, reduction)
    if name == "mse":
        return nn.MSELoss(reduction)
    raise ValueError(f"loss must be one of huber, mse, got {name!r}")
