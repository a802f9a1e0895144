"""A network with dropout (a stochastic layer whose random stream MindSpore keeps in the op)."""

from mindspore import nn
from mynet import Net


class DropNet(Net):
    """mynet.Net with dropout before the head."""

    def __init__(self, features: int = 8, width: int = 16, p: float = 0.2) -> None:
        super().__init__(features, width)
        self.drop = nn.Dropout(p=p)

    def construct(self, x):
        return self.head(self.drop(self.body(x)))
